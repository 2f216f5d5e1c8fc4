#!/usr/bin/env python3
"""Comparative benchmark for ext-runner. Standard library only.

Everything is measured side by side in the same run, in interleaved rounds,
and reported as medians and ratios against a baseline (machines are noisy):

  cold     one-shot load + first invoke of examples/hello:
             direct     the same stdlib-only worker started by this script
             runner     `ext-runner invoke` with the full policy
             no-layers  `ext-runner invoke` with every layer switched off
             bwrap      the worker under bubblewrap (--unshare-net --unshare-pid)
  steady   per-invoke latency over one live worker:
             direct     a pipe to the worker
             run-proxy  through `ext-runner run`

Usage: bench/bench.py [--rounds N] [--invokes N] [--out docs/benchmarks.md]
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(ROOT, "target", "release", "ext-runner")
EXAMPLE = os.path.join(ROOT, "examples", "hello")
SHIM = os.path.join(ROOT, "python", "shim")
REQUEST = {"id": "b", "op": "invoke", "name": "example.greet", "args": {"name": "Ada"}}


def real_python():
    return os.path.realpath(sys.executable)


def direct_argv(py):
    return [py, "-s", "-B", os.path.join(EXAMPLE, "extension.py")]


def direct_env():
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": SHIM, "LANG": "C.UTF-8"}


def one_shot(argv, env=None, cwd=EXAMPLE):
    """Start a worker, send one invoke, read the answer, shut it down."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=cwd)
    p.stdin.write((json.dumps(REQUEST) + "\n").encode())
    p.stdin.flush()
    line = p.stdout.readline()
    p.stdin.write(b'{"op": "shutdown"}\n')
    p.stdin.close()
    p.wait()
    dt = time.perf_counter() - t
    assert b'"ok": true' in line, line
    return dt


def cli_invoke(py, policy=None):
    argv = [RUNNER, "invoke", EXAMPLE, "example.greet", '{"name": "Ada"}', "--python", py]
    if policy:
        argv += ["--policy", policy]
    t = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, check=True)
    dt = time.perf_counter() - t
    assert out.stdout.strip() == b'"Hello, Ada!"', out
    return dt


def bwrap_argv(py):
    prefix = os.path.dirname(os.path.dirname(py))
    argv = ["bwrap", "--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc", "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp"]
    for d in ("/lib", "/lib64", "/bin"):
        if os.path.exists(d):
            argv += ["--ro-bind", d, d]
    argv += ["--ro-bind", prefix, prefix, "--ro-bind", EXAMPLE, EXAMPLE, "--ro-bind", SHIM, SHIM,
             "--chdir", EXAMPLE, "--clearenv", "--setenv", "PYTHONPATH", SHIM]
    return argv + direct_argv(py)


def steady(argv, n, env=None):
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=EXAMPLE)
    line = (json.dumps(REQUEST) + "\n").encode()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        p.stdin.write(line)
        p.stdin.flush()
        answer = p.stdout.readline()
        samples.append(time.perf_counter() - t)
        assert b'"ok": true' in answer, answer
    p.stdin.write(b'{"op": "shutdown"}\n')
    p.stdin.close()
    p.wait()
    return samples


def hostcall_rtt(n_invokes, db):
    """p50 of an invoke making 10 memory.get host calls vs a no-op invoke, through `ext-runner run`."""
    ext = os.path.join(ROOT, "bench", "hostcall")
    p = subprocess.Popen([RUNNER, "run", ext, "--python", real_python(), "--memory-db", db],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ext)
    out = {"bench.noop": [], "bench.get": []}
    for i in range(n_invokes):
        for tool in out:
            line = (json.dumps({"id": str(i), "op": "invoke", "name": tool, "args": {"n": 10}}) + "\n").encode()
            t = time.perf_counter()
            p.stdin.write(line)
            p.stdin.flush()
            answer = p.stdout.readline()
            out[tool].append(time.perf_counter() - t)
            assert b'"ok": true' in answer, answer
    p.stdin.close()
    p.wait()
    return out


def pct(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--invokes", type=int, default=3000)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if not os.path.exists(RUNNER):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    py = real_python()
    tmp = tempfile.mkdtemp()
    off = os.path.join(tmp, "off.json")
    with open(off, "w") as f:
        json.dump({"mode": "best-effort", "layers": {"landlock": False, "seccomp": False, "namespaces": False, "limits": False}}, f)
    have_bwrap = shutil.which("bwrap") is not None

    cold = {"direct": [], "runner": [], "no-layers": [], "bwrap": []}
    for _ in range(3):  # warm the page cache
        one_shot(direct_argv(py), direct_env())
        cli_invoke(py)
    for _ in range(a.rounds):
        cold["direct"].append(one_shot(direct_argv(py), direct_env()))
        cold["runner"].append(cli_invoke(py))
        cold["no-layers"].append(cli_invoke(py, off))
        if have_bwrap:
            cold["bwrap"].append(one_shot(bwrap_argv(py), direct_env()))

    st = {"direct": [], "run-proxy": []}
    for _ in range(3):  # interleaved blocks
        st["direct"] += steady(direct_argv(py), a.invokes // 3, direct_env())
        st["run-proxy"] += steady([RUNNER, "run", EXAMPLE, "--python", py], a.invokes // 3)

    hc = hostcall_rtt(max(200, a.invokes // 5), os.path.join(tmp, "m.db"))

    ms = lambda v: f"{v * 1000:.2f}"
    us = lambda v: f"{v * 1e6:.0f}"
    base = statistics.median(cold["direct"])
    lines = [
        "| cold start (load + first invoke) | median ms | ratio vs direct |",
        "|---|---:|---:|",
    ]
    for k, v in cold.items():
        if v:
            lines.append(f"| {k} | {ms(statistics.median(v))} | {statistics.median(v) / base:.2f}x |")
    setup = statistics.median(cold["runner"]) - statistics.median(cold["no-layers"])
    lines.append("")
    lines.append(f"Sandbox setup (runner − no-layers): {setup * 1000:.2f} ms")
    lines.append("")
    lines.append("| steady invoke | p50 µs | p99 µs | p50 ratio vs direct |")
    lines.append("|---|---:|---:|---:|")
    b50 = pct(st["direct"], 0.5)
    for k, v in st.items():
        lines.append(f"| {k} | {us(pct(v, 0.5))} | {us(pct(v, 0.99))} | {pct(v, 0.5) / b50:.2f}x |")
    noop, get = pct(hc["bench.noop"], 0.5), pct(hc["bench.get"], 0.5)
    lines.append("")
    lines.append("| host calls (through `ext-runner run`) | p50 µs |")
    lines.append("|---|---:|")
    lines.append(f"| invoke, no host call | {us(noop)} |")
    lines.append(f"| invoke making 10 `memory.get` host calls | {us(get)} |")
    lines.append(f"| one host call round trip (worker → runner → SQLite → worker) | {us((get - noop) / 10)} |")
    report = "\n".join(lines)
    head = (f"Machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}, "
            f"Python {platform.python_version()}; {a.rounds} cold rounds, {a.invokes} steady invokes, "
            f"{time.strftime('%Y-%m-%d')}\n\n")
    print(head + report)
    if a.out:
        with open(a.out, "w") as f:
            f.write("# Benchmarks\n\nGenerated by `bench/bench.py`; numbers are medians of interleaved rounds.\n\n" + head + report + "\n")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
