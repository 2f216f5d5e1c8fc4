#!/usr/bin/env python3
"""What lending a workspace to a root runner's worker uid with ACL entries
costs (src/sandbox/acl.rs; docs/deploy.md, "Root runners"), side by side in
one run. As root; standard library only:

    python3 bench/lend.py --out docs/benchmarks.md    (about a minute)

Each round runs, in a shuffled order, `ext-runner invoke` of a one-line tool
of a `filesystem.write` extension with `{"layers": {"namespaces": false}}`
(no mount namespace, so no idmapped mount: the workspace is lent), on an
empty workspace and on workspaces of N files in folders of 100; and the
same N-file workspace with namespaces on (an idmapped mount: its cost does
not grow with the files), the reference. Medians; the cost per file is
(median at N - median empty) / N and covers both walks (the lending before
the start and the giving back at unload).
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import docsection  # noqa: E402

BEGIN, END = "<!-- lend:begin -->", "<!-- lend:end -->"
RUNNER = os.path.join(ROOT, "target", "debug", "ext-runner")
PYTHON = "/usr/bin/python3"


def workspace(parent, n):
    ws = os.path.join(parent, f"ws{n}")
    os.makedirs(ws)
    for i in range(n):
        d = os.path.join(ws, f"d{i // 100}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i % 100}"), "w") as f:
            f.write("x")
    return ws


def extension(parent):
    d = os.path.join(parent, "ext")
    os.makedirs(d)
    with open(os.path.join(d, "nodus-extension.json"), "w") as f:
        json.dump({"name": "lend", "version": "1", "description": "d", "abi_version": "1",
                   "capabilities": ["tool.invoke", "filesystem.write"],
                   "surfaces": {"tools": [{"name": "lend.one", "description": "d",
                                           "schema": {"type": "object"}}]}}, f)
    with open(os.path.join(d, "extension.py"), "w") as f:
        f.write("from nodus_extension.worker import register_tool, run_loop\n"
                "register_tool('lend.one', lambda a: 1)\nrun_loop()\n")
    return d


def timed(ext, ws, policy):
    t = time.perf_counter()
    subprocess.run([RUNNER, "invoke", ext, "lend.one", "--workspace", ws, "--policy", policy,
                    "--python", PYTHON], check=True, capture_output=True)
    return (time.perf_counter() - t) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--files", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--out")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/lend.py: a root runner lends workspaces: run as root")
    tmp = tempfile.mkdtemp(prefix="nodus-lend-")
    os.chmod(tmp, 0o755)
    try:
        ext = extension(tmp)
        lent, ns = os.path.join(tmp, "lent.json"), os.path.join(tmp, "ns.json")
        with open(lent, "w") as f:
            json.dump({"layers": {"namespaces": False}}, f)
        with open(ns, "w") as f:
            json.dump({}, f)
        cases = [("lent, empty", workspace(tmp, 0), lent)]
        cases += [(f"lent, {n} files", workspace(tmp, n), lent) for n in a.files]
        cases.append((f"idmapped, {a.files[-1]} files", cases[-1][1], ns))
        for _, ws, policy in cases:
            timed(ext, ws, policy)  # warm the page cache
        runs = {c[0]: [] for c in cases}
        rng = random.Random(16)
        load = [open("/proc/loadavg").read().split()[0]]
        for _ in range(a.rounds):
            order = list(cases)
            rng.shuffle(order)
            for name, ws, policy in order:
                runs[name].append(timed(ext, ws, policy))
        load.append(open("/proc/loadavg").read().split()[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    empty = med["lent, empty"]
    rows = ["| `invoke`, workspace | median ms | over the empty lent one | per file |",
            "|---|---|---|---|"]
    for name, m in med.items():
        n = next((f for f in a.files if name == f"lent, {f} files"), None)
        per = f"{(m - empty) * 1000 / n:.0f} µs" if n else "–"
        rows.append(f"| {name} | {m:.0f} | {m - empty:+.0f} ms | {per} |")
    md = ("### Lending a workspace with ACL entries (bench/lend.py)\n\n"
          f"{a.rounds} interleaved rounds, load average {load[0]} → {load[1]}; "
          "each `invoke` lends the workspace before the start and gives it back at unload.\n\n"
          + "\n".join(rows) + "\n")
    print(md)
    if a.out:
        docsection.replace_section(a.out, BEGIN, END, md)


if __name__ == "__main__":
    main()
