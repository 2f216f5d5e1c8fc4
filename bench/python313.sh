#!/bin/sh
# CPython 3.13 for bench/warm.py's second interpreter (docs/warm.md, "On
# CPython 3.13"): Debian trixie's upstream source (the one package registry
# this project reaches that carries a CPython newer than 3.11), checked
# against the sha256 in trixie's Sources index, built without PGO into
# PREFIX (default /opt/py313). About 6 minutes on 2 cores.
#
#     sh bench/python313.sh [PREFIX]
#     nice python3 bench/warm.py --python /opt/py313/bin/python3.13 --out FILE
set -eu
prefix=${1:-/opt/py313}
version=3.13.5
sha256=93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640
url=http://deb.debian.org/debian/pool/main/p/python3.13/python3.13_$version.orig.tar.xz
if [ -x "$prefix/bin/python3.13" ]; then
    echo "$prefix/bin/python3.13 is there already"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curl -fsS -o "$work/src.tar.xz" "$url"
echo "$sha256  $work/src.tar.xz" | sha256sum -c -
tar -C "$work" -xf "$work/src.tar.xz"
cd "$work/Python-$version"
./configure --prefix="$prefix" --without-ensurepip > "$work/configure.log"
make -j"$(nproc)" > "$work/make.log" 2>&1 || { tail -30 "$work/make.log"; exit 1; }
make install > "$work/install.log" 2>&1
"$prefix/bin/python3.13" -c 'import sys, ctypes, ssl; print(sys.version)'
