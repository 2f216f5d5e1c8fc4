#!/usr/bin/env python3
"""Per-invoke cost of the reference Python host with and without ext-runner.

The reference host (nodus-extension 0.1.2, `ExtensionRegistry.invoke`) drives
examples/hello two ways, both live at the same time:

  reference   the reference's SubprocessRunner: `python extension.py`
  ext-runner  nodus_extension_sandbox.install(): `ext-runner run DIR`

Invokes alternate one by one between the two (the order flips every round),
so both see the same machine noise. Also measured, interleaved the same way:
a cold load (registry.load + first invoke + unload). Prints a markdown table
with medians and p99.

Run with the interpreter that has nodus-extension (and this repository's
python/ package, installed or not):

  .venv-ref/bin/python bench/python_host.py [--invokes 5000] [--cold 20]
      [--ext-runner target/release/ext-runner]
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELLO = os.path.join(ROOT, "examples", "hello")
NAME, TOOL, ARGS = "example.hello", "example.greet", {"name": "Ada"}

try:
    import nodus_extension_sandbox as sandbox
except ImportError:  # not pip-installed: use the repository's copy
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import nodus_extension_sandbox as sandbox

from nodus_extension import ExtensionRegistry, __version__ as reference_version


def p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(0.99 * len(s)) - 1)]


def load(sandboxed: bool, ext_runner: str) -> ExtensionRegistry:
    if sandboxed:
        sandbox.install(ext_runner=ext_runner)
    else:
        sandbox.uninstall()
    try:
        reg = ExtensionRegistry()
        reg.load(HELLO)
        return reg
    finally:
        sandbox.uninstall()


def kinds(reg: ExtensionRegistry) -> str:
    return type(reg.lookup(NAME)._runner).__name__


def bench_invokes(n: int, ext_runner: str) -> dict[str, list[float]]:
    regs = {"reference": load(False, ext_runner), "ext-runner": load(True, ext_runner)}
    assert kinds(regs["reference"]) == "SubprocessRunner", kinds(regs["reference"])
    assert kinds(regs["ext-runner"]) == "ExtRunnerRunner", kinds(regs["ext-runner"])
    times: dict[str, list[float]] = {k: [] for k in regs}
    try:
        for reg in regs.values():  # warm up: first invoke imports, caches
            for _ in range(50):
                assert reg.invoke(NAME, TOOL, ARGS) == "Hello, Ada!"
        order = list(regs)
        for i in range(n):
            for key in order if i % 2 == 0 else reversed(order):
                reg = regs[key]
                t = time.perf_counter()
                result = reg.invoke(NAME, TOOL, ARGS)
                times[key].append(time.perf_counter() - t)
                assert result == "Hello, Ada!", result
    finally:
        for reg in regs.values():
            reg.unload(NAME)
    return times


def bench_cold(n: int, ext_runner: str) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"reference": [], "ext-runner": []}
    for i in range(n):
        order = ["reference", "ext-runner"] if i % 2 == 0 else ["ext-runner", "reference"]
        for key in order:
            t = time.perf_counter()
            reg = load(key == "ext-runner", ext_runner)
            assert reg.invoke(NAME, TOOL, ARGS) == "Hello, Ada!"
            times[key].append(time.perf_counter() - t)
            reg.unload(NAME)
    return times


def row(label: str, xs: list[float], base: list[float] | None, unit: float, fmt: str) -> str:
    med, tail = statistics.median(xs), p99(xs)
    ratio = f"{med / statistics.median(base):.2f}x" if base else "1.00x"
    return f"| {label} | {len(xs)} | {med * unit:{fmt}} | {tail * unit:{fmt}} | {ratio} |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--invokes", type=int, default=5000, help="invokes per path")
    ap.add_argument("--cold", type=int, default=20, help="cold loads per path (0: skip)")
    ap.add_argument("--ext-runner", default=os.environ.get("NODUS_EXT_RUNNER")
                    or os.path.join(ROOT, "target", "release", "ext-runner"))
    args = ap.parse_args()
    ext_runner = sandbox.find_ext_runner(args.ext_runner)

    sandbox.reset_stats()
    hot = bench_invokes(args.invokes, ext_runner)
    cold = bench_cold(args.cold, ext_runner) if args.cold > 0 else None
    counts = sandbox.stats()

    print(f"Reference host nodus-extension {reference_version}, `ExtensionRegistry.invoke` on "
          f"examples/hello (`example.greet`), Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs; interleaved.\n")
    print("| per invoke (live worker) | n | median µs | p99 µs | median vs reference |")
    print("|---|---|---|---|---|")
    print(row("reference: `python extension.py`", hot["reference"], None, 1e6, ".0f"))
    print(row("ext-runner: `ext-runner run DIR`", hot["ext-runner"], hot["reference"], 1e6, ".0f"))
    if cold:
        print()
        print("| cold: load + first invoke + unload | n | median ms | p99 ms | median vs reference |")
        print("|---|---|---|---|---|")
        print(row("reference: `python extension.py`", cold["reference"], None, 1e3, ".1f"))
        print(row("ext-runner: `ext-runner run DIR`", cold["ext-runner"], cold["reference"], 1e3, ".1f"))
    print(f"\nWorkers started through ext-runner: {counts['workers_started']}; "
          f"invokes they answered: {counts['invokes_answered']}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
