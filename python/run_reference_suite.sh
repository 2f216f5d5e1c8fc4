#!/usr/bin/env bash
# Runs the reference nodus-extension 0.1.2 test suite (126 tests, from its
# sdist on PyPI) with every worker started through ext-runner, via the pytest
# plugin in python/tests/reference_suite/. Fails when a test fails, when no
# test ran, when no worker went through ext-runner, or when any worker started
# without it.
#
#   python/run_reference_suite.sh [PYTEST ARGS...]
#
# Environment:
#   PYTHON            interpreter with nodus-extension 0.1.2 + pytest (default .venv-ref/bin/python)
#   NODUS_EXT_RUNNER  the binary (default target/release/ext-runner, then target/debug/ext-runner, then PATH)
#   REF_SDIST_DIR     an unpacked sdist to use instead of downloading one
#   SKIP_INSTALL=1    do not pip-install ./python first (scripts/test already did)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv-ref/bin/python}"

if [ -z "${NODUS_EXT_RUNNER:-}" ]; then
  for candidate in "$ROOT/target/release/ext-runner" "$ROOT/target/debug/ext-runner"; do
    if [ -x "$candidate" ]; then export NODUS_EXT_RUNNER="$candidate"; break; fi
  done
fi

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  "$PY" -m pip install --quiet --disable-pip-version-check "$ROOT/python"
fi
"$PY" -c 'import pytest' 2>/dev/null || "$PY" -m pip install --quiet --disable-pip-version-check 'pytest>=8'

if [ -n "${REF_SDIST_DIR:-}" ]; then
  SUITE="$REF_SDIST_DIR"
else
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    nodus-extension==0.1.2 -d "$TMP"
  tar -xzf "$TMP/nodus_extension-0.1.2.tar.gz" -C "$TMP"
  SUITE="$TMP/nodus_extension-0.1.2"
fi

cd "$SUITE"
status=0
PYTHONPATH="$ROOT/python/tests/reference_suite${PYTHONPATH:+:$PYTHONPATH}" \
  "$PY" -m pytest -p nodus_sandbox_refsuite -p no:cacheprovider tests "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "reference suite: no tests ran (pytest exit 5): treated as a failure" >&2
  exit 1
fi
exit "$status"
