#!/usr/bin/env python3
"""Record what the reference `nodus_extension.manifest.load_manifest` does.

Usage (with the reference venv's interpreter, Python >= 3.11):

    .venv-ref/bin/python tests/support/ref_manifest.py tests/manifest_corpus

For every case file `NNN-*.json` in CORPUS_DIR (sorted by file name), the file
is copied byte-for-byte into a fresh temporary directory as
`nodus-extension.json` and `load_manifest(tmpdir)` is called.  One JSON line is
printed per case:

    {"case": "<file name>", "verdict": "ok"|"ManifestError"|"AbiError"|"<other exception class>",
     "value": <manifest.as_dict() or null>, "abi_version": <AbiError.abi_version or null>}

A final pseudo-case `"<missing>"` loads a directory that has no manifest file.

Output is pure ASCII.  Values that cannot be represented in strict JSON /
Rust strings are sanitized, and such lines carry an extra `"sanitized": true`:
  * non-finite floats -> the strings "NaN", "Infinity", "-Infinity"
  * lone UTF-16 surrogates inside strings (or keys) -> U+FFFD per surrogate
Only stdlib + the reference package are used.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import tempfile

from nodus_extension.errors import AbiError
from nodus_extension.manifest import load_manifest

CASE_RE = re.compile(r"^[0-9]{3}-.*\.json$")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class _Sanitizer:
    """Iterative (no recursion: schemas may be nested hundreds of levels deep)."""

    def __init__(self) -> None:
        self.changed = False

    def _str(self, s: str) -> str:
        if _SURROGATE_RE.search(s):
            self.changed = True
            return _SURROGATE_RE.sub("\ufffd", s)
        return s

    def __call__(self, root):
        holder = [root]
        stack = [(holder, 0)]
        while stack:
            container, key = stack.pop()
            v = container[key]
            if isinstance(v, bool) or v is None or isinstance(v, int):
                continue
            if isinstance(v, float):
                if math.isnan(v):
                    self.changed = True
                    container[key] = "NaN"
                elif math.isinf(v):
                    self.changed = True
                    container[key] = "Infinity" if v > 0 else "-Infinity"
            elif isinstance(v, str):
                container[key] = self._str(v)
            elif isinstance(v, list):
                stack.extend((v, i) for i in range(len(v)))
            elif isinstance(v, dict):
                if any(_SURROGATE_RE.search(k) for k in v):
                    v = {self._str(k): x for k, x in v.items()}
                    container[key] = v
                stack.extend((v, k) for k in v)
            else:
                raise TypeError(f"unexpected value type in as_dict(): {type(v).__name__}")
        return holder[0]


def run_case(case: str, src: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="nodus-ref-") as tmp:
        if src is not None:
            shutil.copyfile(src, os.path.join(tmp, "nodus-extension.json"))
        verdict, value, abi = "ok", None, None
        try:
            value = load_manifest(tmp).as_dict()
        except AbiError as exc:
            verdict, abi = "AbiError", exc.abi_version
        except Exception as exc:  # noqa: BLE001 - record whatever escapes
            verdict = type(exc).__name__
    san = _Sanitizer()
    row = {
        "case": case,
        "verdict": verdict,
        "value": san(value),
        "abi_version": san(abi),
    }
    if san.changed:
        row["sanitized"] = True
    return row


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} CORPUS_DIR", file=sys.stderr)
        return 2
    corpus = argv[1]
    names = sorted(n for n in os.listdir(corpus) if CASE_RE.match(n))
    out = sys.stdout
    for name in names:
        row = run_case(name, os.path.join(corpus, name))
        out.write(json.dumps(row, ensure_ascii=True, allow_nan=False) + "\n")
    row = run_case("<missing>", None)
    out.write(json.dumps(row, ensure_ascii=True, allow_nan=False) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
