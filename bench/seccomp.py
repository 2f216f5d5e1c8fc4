#!/usr/bin/env python3
"""The seccomp filter backends side by side in one run (issue 16, "a smaller
seccomp filter"). Standard library only:

    python3 bench/seccomp.py --out docs/benchmarks.md     (about a minute)
    python3 bench/seccomp.py --quick                      (a smoke run)
    python3 bench/seccomp.py --notify --out docs/benchmarks.md
        (the supervised calls' filter: written by hand against libseccomp's)

With --notify it compares instead the two forms of the supervised calls'
filter (SECCOMP_RET_USER_NOTIF for chmod and the utime family, docs/security.md
"The metadata supervisor"): `libseccomp` (the main filters alone),
`notify-hand` (the filter written by hand, then the main filters: what the
child installs) and `notify-libseccomp` (the same with libseccomp's
ScmpAction::Notify filter), on two policies that supervise (the plain worker
without namespaces, and the largest), the same calls plus `utimensat` of a
missing path (supervised: ENOSYS, the bench installs no listener). Its
section is `seccomp-notify`.

It builds `examples/seccomp-bench` (release) and runs, for two policies (the
plain worker's, and the largest: network.outbound and subprocess.run without
namespaces) and three variants (`none`: no filter, `seccompiler`: the linear
filter launches used before, `libseccomp`: the binary tree), interleaved
rounds in shuffled order, each a fresh process that compiles the filters,
times installing them, then times CALLS iterations of getppid (allowed, no
condition), fcntl(F_GETFD) (number 72) and getrlimit (prlimit64, 302),
allowed after an argument check, and unshare(0) (refused; without a filter
it does nothing). Medians; ratios
against seccompiler, deltas against no filter.

With --out, the results replace the section between the `seccomp:begin` and
`seccomp:end` markers of that file (appended when missing; bench/bench.py
keeps it, and the `seccomp-decision` section after it, written by hand from
these figures, when it rewrites the file). Raw figures: bench/out/seccomp.json.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import docsection  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, "target", "release", "examples", "seccomp-bench")
BEGIN, END = "<!-- seccomp:begin -->", "<!-- seccomp:end -->"
BACKENDS = ["none", "seccompiler", "libseccomp"]
CALLS = ["getppid_ns", "fcntl_ns", "prlimit_ns", "denied_ns"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--notify", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.calls = 3, 20_000
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "seccomp-bench"],
                       cwd=ROOT, check=True)
    sizes = json.loads(subprocess.run([BIN, "sizes"], check=True, capture_output=True, text=True).stdout)
    if a.notify:
        return notify(a, sizes)
    plain = sizes[0]
    largest = max(sizes, key=lambda s: sum(s["seccompiler"]))
    policies = [plain] if plain is largest else [plain, largest]
    load_before = loadavg()
    runs = interleaved(a, BACKENDS, policies, seed=16)
    load_after = loadavg()

    def med(b, p, key):
        return statistics.median(key(x) for x in runs[(b, p)])

    total_install = lambda x: sum(x["install_ns"]) / 1000.0  # µs
    result = {"rounds": a.rounds, "calls": a.calls, "load_before": load_before,
              "load_after": load_after, "sizes": sizes,
              "runs": {f"{b} {p}": v for (b, p), v in runs.items()}}
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "seccomp.json"), "w") as f:
        json.dump(result, f, indent=1)

    lines = ["## Seccomp filter size: seccompiler against libseccomp", "",
             f"`python3 bench/seccomp.py --out docs/benchmarks.md`: {a.rounds} interleaved rounds in shuffled "
             f"order, each a fresh process (`examples/seccomp-bench run`) that installs the filters "
             f"(`seccomp(SECCOMP_SET_MODE_FILTER)` each, timed) and then makes {a.calls:,} calls of each kind; "
             f"medians. Load average {load_before} before, {load_after} after (2 vCPUs). "
             "*getppid*: allowed with no condition (the kernel's action cache answers it without running "
             "the filter); *fcntl* (`F_GETFD`, number 72) and *getrlimit* (`prlimit64`, number 302): allowed "
             "after an argument check; *unshare(0)*: refused (`EPERM`; without a filter it does nothing). Ratios against seccompiler, the "
             "backend launches used before; +ns against no filter.", ""]
    lines += ["| policy | backend | instructions (filters) | install µs | install vs seccompiler | first compile in a process µs | compile + install vs seccompiler | getppid ns | fcntl ns | getrlimit ns | unshare(0) (refused) ns |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in policies:
        i = p["index"]
        base = {k: med("none", i, lambda x: x[k]) for k in CALLS}
        ref_install = med("seccompiler", i, total_install)
        both = lambda x: total_install(x) + x["compile_ns"] / 1000.0
        ref_both = med("seccompiler", i, both)
        for b in BACKENDS:
            if b == "none":
                ins, inst, ratio, comp, ratio2 = "0", "0", "", "", ""
            else:
                ins = " + ".join(str(n) for n in p[b]) + f" = {sum(p[b]):,}"
                m = med(b, i, total_install)
                inst, ratio = f"{m:.1f}", f"{m / ref_install:.2f}x"
                comp = f"{med(b, i, lambda x: x['compile_ns'] / 1000.0):.0f}"
                ratio2 = f"{med(b, i, both) / ref_both:.2f}x"
            cells = []
            for k in CALLS:
                v = med(b, i, lambda x: x[k])
                cells.append(f"{v:.0f}" if b == "none" else f"{v:.0f} (+{v - base[k]:.0f})")
            lines.append(f"| {p['label']} | {b} | {ins} | {inst} | {ratio} | {comp} | {ratio2} | " + " | ".join(cells) + " |")
    lines += ["", "Per-call cost against seccompiler (the filter's own part: ns over no filter, libseccomp / seccompiler):", ""]
    for p in policies:
        i = p["index"]
        parts = []
        for k, name in zip(CALLS[1:], ["fcntl", "getrlimit", "unshare"]):
            none = med("none", i, lambda x: x[k])
            s = med("seccompiler", i, lambda x: x[k]) - none
            l = med("libseccomp", i, lambda x: x[k]) - none
            parts.append(f"{name} +{l:.0f} vs +{s:.0f} ns ({l / s:.2f}x)" if s > 0 else f"{name} +{l:.0f} vs +{s:.0f} ns")
        lines.append(f"- {p['label']}: " + "; ".join(parts))
    lines += ["", "Instruction counts of every distinct policy (main filter + the others), and the time to "
              "compile them (best of 10 in one process; launches cache the result per distinct policy):", "",
              "| policy | seccompiler | libseccomp | ratio | compile µs seccompiler / libseccomp |",
              "|---|---:|---:|---:|---:|"]
    for s in sizes:
        a_, b_ = sum(s["seccompiler"]), sum(s["libseccomp"])
        lines.append(f"| {s['label']} | {' + '.join(map(str, s['seccompiler']))} = {a_:,} | "
                     f"{' + '.join(map(str, s['libseccomp']))} = {b_:,} | {b_ / a_:.2f}x | "
                     f"{s['seccompiler_compile_ns'] / 1000:.0f} / {s['libseccomp_compile_ns'] / 1000:.0f} |")
    md = "\n".join(lines)
    print(md)
    if a.out:
        docsection.replace_section(a.out, BEGIN, END, md)


def interleaved(a, backends, policies, seed):
    """Every (backend, policy) once per round, in a shuffled order: the raw
    runs of each, keyed by (backend, policy index)."""
    runs = {}
    rng = random.Random(seed)
    for r in range(a.rounds):
        jobs = [(b, p["index"]) for b in backends for p in policies]
        rng.shuffle(jobs)
        for b, p in jobs:
            out = subprocess.run([BIN, "run", b, str(p), str(a.calls)], check=True,
                                 capture_output=True, text=True).stdout
            runs.setdefault((b, p), []).append(json.loads(out))
        log(f"round {r + 1}/{a.rounds}")
    return runs


NOTIFY = ["libseccomp", "notify-hand", "notify-libseccomp"]
NOTIFY_CALLS = CALLS + ["supervised_ns"]


def notify(a, sizes):
    sup = [s for s in sizes if s["notify_hand"]]
    plain = sup[0]
    largest = max(sup, key=lambda s: sum(s["libseccomp"]))
    policies = [plain] if plain is largest else [plain, largest]
    load_before = loadavg()
    runs = interleaved(a, NOTIFY, policies, seed=17)
    load_after = loadavg()
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    with open(os.path.join(HERE, "out", "seccomp-notify.json"), "w") as f:
        json.dump({"rounds": a.rounds, "calls": a.calls, "sizes": sizes,
                   "runs": {f"{b} {p}": v for (b, p), v in runs.items()}}, f, indent=1)

    def med(b, p, key):
        return statistics.median(key(x) for x in runs[(b, p)])

    lines = ["## The supervised calls' filter: written by hand against libseccomp", "",
             f"`python3 bench/seccomp.py --notify --out docs/benchmarks.md`: {a.rounds} interleaved rounds in "
             f"shuffled order, each a fresh process (`examples/seccomp-bench run`) that compiles the filters, "
             f"installs them (the supervised calls' filter first, as the child does; timed each) and makes "
             f"{a.calls:,} calls of each kind; medians. Load average {load_before} before, {load_after} after "
             "(2 vCPUs). *utimensat*: of a missing path, a supervised call (`ENOSYS`: no listener here; "
             "`ENOENT` with the main filters alone). Ratios: libseccomp's filter against the one written by hand; "
             "+ns against the main filters alone.", "",
             "| policy | supervised filter | instructions | compile µs (first in a process) | install µs | "
             "getppid ns | fcntl ns | getrlimit ns | unshare(0) ns | utimensat ns |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in policies:
        i = p["index"]
        base = {k: med("libseccomp", i, lambda x: x[k]) for k in NOTIFY_CALLS}
        for b in NOTIFY:
            if b == "libseccomp":
                ins, comp, inst = "none (main filters alone)", "", ""
            else:
                ins = str(runs[(b, i)][0]["instructions"][0])
                comp = f"{med(b, i, lambda x: x['notify_compile_ns'] / 1000.0):.1f}"
                inst = f"{med(b, i, lambda x: x['install_ns'][0] / 1000.0):.1f}"
            cells = []
            for k in NOTIFY_CALLS:
                v = med(b, i, lambda x: x[k])
                cells.append(f"{v:.0f}" if b == "libseccomp" else f"{v:.0f} (+{v - base[k]:.0f})")
            lines.append(f"| {p['label']} | {b} | {ins} | {comp} | {inst} | " + " | ".join(cells) + " |")
    lines += ["", "libseccomp's supervised filter against the one written by hand (medians):", ""]
    for p in policies:
        i = p["index"]
        h = lambda k: med("notify-hand", i, k)
        l = lambda k: med("notify-libseccomp", i, k)
        inst = lambda x: x["install_ns"][0]
        parts = [f"install {l(inst) / h(inst):.2f}x",
                 f"compile {l(lambda x: x['notify_compile_ns']) / h(lambda x: x['notify_compile_ns']):.2f}x"]
        for k, name in zip(NOTIFY_CALLS, ["getppid", "fcntl", "getrlimit", "unshare", "utimensat"]):
            parts.append(f"{name} {l(lambda x: x[k]) / h(lambda x: x[k]):.3f}x")
        lines.append(f"- {p['label']}: " + "; ".join(parts))
    lines += ["", "Every policy that supervises (instructions by hand / libseccomp; compile best of 10 in one "
              "process, µs):", "", "| policy | by hand | libseccomp | compile µs by hand / libseccomp |",
              "|---|---:|---:|---:|"]
    for s in sup:
        lines.append(f"| {s['label']} | {s['notify_hand']} | {s['notify_libseccomp']} | "
                     f"{s['notify_hand_compile_ns'] / 1000:.1f} / {s['notify_libseccomp_compile_ns'] / 1000:.1f} |")
    md = "\n".join(lines)
    print(md)
    if a.out:
        docsection.replace_section(a.out, "<!-- seccomp-notify:begin -->", "<!-- seccomp-notify:end -->", md)


if __name__ == "__main__":
    main()
