#!/bin/sh
# Two CPythons built alike for bench/warm.py's comparison of interpreter
# versions (docs/warm.md, "On CPython 3.12 and 3.13"): the upstream source
# Debian ships (bookworm's 3.11, trixie's 3.13: Debian's archive is the one
# package registry this project reaches that carries CPython's source),
# checked against the sha256 of Debian's Sources index, configured the same
# way (static, no PGO, nothing in site-packages) into PREFIX (default
# /opt/pyVER). About 6 minutes each on 2 cores. As root it installs the
# build's packages first.
#
#     sh bench/cpython.sh 3.11|3.13 [PREFIX]
#     nice python3 bench/warm.py --python /opt/py313/bin/python3.13 --out FILE
set -eu
case "${1:-}" in
3.11) suite=bookworm version=3.11.2 ext=gz
      sha256=2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849 ;;
3.13) suite=trixie version=3.13.5 ext=xz
      sha256=93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640 ;;
*) echo "usage: sh bench/cpython.sh 3.11|3.13 [PREFIX]" >&2; exit 2 ;;
esac
short=$1
prefix=${2:-/opt/py$(echo "$short" | tr -d .)}
python=$prefix/bin/python$short
# What the zygote and the bench import, compiled extension modules included.
check='import sys, ctypes, ssl, zlib, json, hashlib, sqlite3; print(sys.version)'
if [ -x "$python" ] && "$python" -c "$check"; then
    echo "$python is there already"
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        curl ca-certificates xz-utils build-essential pkg-config libssl-dev \
        libffi-dev zlib1g-dev libsqlite3-dev libbz2-dev liblzma-dev >/dev/null
fi
url=http://deb.debian.org/debian/pool/main/p/python$short/python${short}_$version.orig.tar.$ext
work=$(mktemp -d)
echo "building CPython $version ($suite's source) in $work"
curl -fsS -o "$work/src.tar.$ext" "$url"
echo "$sha256  $work/src.tar.$ext" | sha256sum -c -
tar -C "$work" -xf "$work/src.tar.$ext"
cd "$work/Python-$version"
./configure --prefix="$prefix" --without-ensurepip > configure.log 2>&1 || { tail -30 configure.log; exit 1; }
make -j"$(nproc)" > make.log 2>&1 || { tail -30 make.log; exit 1; }
./python -c "$check" || { echo "the build lacks a module the bench needs (logs in $work)" >&2; exit 1; }
make install > install.log 2>&1
rm -rf "$work"
"$python" -c "$check"
