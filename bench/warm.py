#!/usr/bin/env python3
"""Warm starts (issue 16): the fork server against a bare interpreter start,
side by side in one run. Standard library only:

    python3 bench/warm.py --out docs/benchmarks.md     (a few minutes)
    python3 bench/warm.py --quick                      (a smoke run)

first answer   spawn -> the first invoke's answer on stdout, interleaved
               rounds in shuffled order, medians:
                 bare     `python3 -s -B extension.py` (the worker shim on
                          PYTHONPATH), the baseline;
                 warm     `ext-runner invoke DIR TOOL ARGS --server S`: its own
                          exec, the request, the zygote's fork and the
                          confinement, the answer;
                 spare    the same through a second server started with
                          `--spares 4`, which keeps a worker for the example
                          started ahead (the request takes it, a new one is
                          started behind it);
                 cold     `ext-runner invoke DIR TOOL ARGS` (for reference).
library load   `bench-host cold DIR --rounds R [--server S]`: load + first
               answer + unload in one library host, timed inside it (no
               exec of the host), medians, warm and cold.
idle memory    N workers started and answered once, then idle; the PSS
               (/proc/PID/smaps_rollup) of every process each way costs,
               divided by N, at N = 1, 64, 256:
                 bare     N `python3 -s -B extension.py`;
                 warm     N `ext-runner run DIR --server S` (the proxy
                          processes included) plus the server, its zygote and
                          everything under it;
                 cold     N `ext-runner run DIR` and everything under them;
                 lib-warm one library host (`bench-host idle`) holding N
                          extensions (copies of the example with their own
                          names) through the server, plus the server's tree;
                 lib-cold the same host with N cold workers;
                 warm-merged, lib-merged  warm and lib-warm through a third
                          server started with `--merge-pages`, measured once
                          KSM has merged (root only: KSM is turned on for the
                          run, scanning fast, and put back after; the time it
                          took and ksmd's CPU time are recorded).
The load average (/proc/loadavg) is recorded at the start and the end.

With --out, the results replace the section between the `warm:begin` and
`warm:end` markers of that file (appended when missing; bench/bench.py keeps
the section when it rewrites the file). Raw figures: bench/out/warm.json.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import docsection  # noqa: E402
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RUNNER = os.path.join(ROOT, "target", "release", "ext-runner")
BENCH_HOST = os.path.join(ROOT, "target", "release", "examples", "bench-host")
HELLO = os.path.join(ROOT, "examples", "hello")
SHIM = os.path.join(ROOT, "python", "shim")
TOOL = "example.greet"
ARGS = '{"name": "Ada"}'
LINE = json.dumps({"id": "1", "op": "invoke", "name": TOOL, "args": json.loads(ARGS)}) + "\n"
BEGIN, END = "<!-- warm:begin -->", "<!-- warm:end -->"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def first_line(argv, env=None, send=None):
    """Seconds from spawn to the first line on stdout."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=env)
    if send:
        p.stdin.write(send.encode())
        p.stdin.flush()
    line = p.stdout.readline()
    t = time.perf_counter() - t0
    try:
        p.stdin.close()
    except OSError:
        pass
    p.wait()
    if not line:
        raise RuntimeError(f"no answer from {argv}")
    return t


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children():
    """pid -> [child pids], for every process."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if rest[0] in "ZX":
            continue
        kids.setdefault(int(rest[1]), []).append(int(d))
    return kids


def tree(pids):
    kids = children()
    seen, todo = set(), list(pids)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(kids.get(p, ()))
    return seen


def start_idle(argv, env=None):
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=env)
    p.stdin.write(LINE.encode())
    p.stdin.flush()
    if not p.stdout.readline():
        raise RuntimeError(f"no answer from {argv}")
    return p


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def hello_copies(tmp, n):
    """n copies of the example, each with a name of its own (a library host
    holds one extension per name)."""
    dirs = []
    for i in range(n):
        d = os.path.join(tmp, "hellos", f"h{i}")
        os.makedirs(d)
        shutil.copy(os.path.join(HELLO, "extension.py"), d)
        with open(os.path.join(HELLO, "nodus-extension.json")) as f:
            m = json.load(f)
        m["name"] = f"example.hello{i}"
        with open(os.path.join(d, "nodus-extension.json"), "w") as f:
            json.dump(m, f)
        dirs.append(d)
    return dirs


def start_library(dirs, py, sock):
    argv = [BENCH_HOST, "idle", *dirs, "--python", py, "--tool", TOOL, "--args", ARGS,
            "--memory-db", os.path.join(os.path.dirname(dirs[0]), "memory.sqlite3")]
    if sock:
        argv += ["--server", sock]
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = p.stdout.readline()
    if not line:
        raise RuntimeError(f"no answer from {argv[:2]}")
    return p


def library_load(py, sock, rounds):
    argv = [BENCH_HOST, "cold", HELLO, "--rounds", str(rounds), "--python", py, "--tool", TOOL, "--args", ARGS]
    if sock:
        argv += ["--server", sock]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return [ns / 1e9 for ns in json.loads(out)["samples_ns"]]


def stop_all(procs):
    for p in procs:
        try:
            p.stdin.close()
        except OSError:
            pass
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Ksm:
    """KSM for the merged ways: on and scanning fast while they are measured
    (root only), put back as it was after."""
    SYS = "/sys/kernel/mm/ksm"
    FAST = {"pages_to_scan": "20000", "sleep_millisecs": "10", "run": "1"}

    def __init__(self):
        self.old, self.why_not, self.settings = {}, None, dict(self.FAST)

    @classmethod
    def fast(cls):
        k = cls()
        try:
            for name in ("run", "pages_to_scan", "sleep_millisecs"):
                with open(f"{cls.SYS}/{name}") as f:
                    k.old[name] = f.read().strip()
            for name, v in cls.FAST.items():
                with open(f"{cls.SYS}/{name}", "w") as f:
                    f.write(v)
        except OSError as e:
            k.why_not = f"KSM cannot be turned on here ({e})"
            k.restore()
        return k

    def read(self, name):
        with open(f"{self.SYS}/{name}") as f:
            return int(f.read())

    def settle(self):
        """Waits until ksmd has scanned everything three times more (a page
        merges on the second scan that finds it unchanged): the seconds it
        took and ksmd's CPU seconds meanwhile."""
        def cpu():
            for d in os.listdir("/proc"):
                try:
                    if d.isdigit() and open(f"/proc/{d}/comm").read().strip() == "ksmd":
                        f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
                        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
                except OSError:
                    pass
            return 0.0
        t0, c0, scans = time.monotonic(), cpu(), self.read("full_scans")
        while self.read("full_scans") < scans + 3 and time.monotonic() - t0 < 300:
            time.sleep(0.1)
        return {"seconds": time.monotonic() - t0, "ksmd_cpu_s": cpu() - c0,
                "timed_out": self.read("full_scans") < scans + 3,
                "pages_sharing": self.read("pages_sharing"), "pages_shared": self.read("pages_shared")}

    def restore(self):
        try:
            if self.old.get("run") == "0":
                with open(f"{self.SYS}/run", "w") as f:
                    f.write("2")  # unmerge what was merged for the bench
            for name, v in reversed(list(self.old.items())):
                with open(f"{self.SYS}/{name}", "w") as f:
                    f.write(v)
        except OSError:
            pass
        self.old = {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=shutil.which("python3", path="/usr/bin:/bin") or "python3",
                    help="the interpreter (the real binary, not a pyenv shim)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--counts", default="1,64,256")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--runner", help="an ext-runner other than target/release's (say, a debug build)")
    ap.add_argument("--bench-host", help="a bench-host other than target/release/examples'")
    ap.add_argument("--raw", default=os.path.join(HERE, "out", "warm.json"), help="where the raw figures go")
    a = ap.parse_args()
    global RUNNER, BENCH_HOST
    if a.runner:
        RUNNER = os.path.abspath(a.runner)
    if a.bench_host:
        BENCH_HOST = os.path.abspath(a.bench_host)
    if a.quick:
        a.rounds, a.counts = 3, "1,8"
    counts = [int(c) for c in a.counts.split(",")]
    if not os.path.exists(RUNNER) or not os.path.exists(BENCH_HOST):
        subprocess.run(["cargo", "build", "--release", "--bins", "--lib", "--example", "bench-host"],
                       cwd=ROOT, check=True)
    load_start = loadavg()
    py = os.path.realpath(a.python)
    tmp = tempfile.mkdtemp(prefix="nodus-warm-bench-")
    os.chmod(tmp, 0o700)
    sock = os.path.join(tmp, "srv", "s.sock")
    server = subprocess.Popen([RUNNER, "serve", "--socket", sock, "--python", py, "--until-stdin-closes"],
                              stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    # A second server that keeps spare workers started ahead (`--spares`):
    # its first answers are timed beside the others.
    spare_sock = os.path.join(tmp, "srv-spares", "s.sock")
    spare_server = subprocess.Popen([RUNNER, "serve", "--socket", spare_sock, "--python", py,
                                     "--until-stdin-closes", "--spares", "4"],
                                    stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    merged_sock = os.path.join(tmp, "srv-merged", "s.sock")
    merged_server = subprocess.Popen([RUNNER, "serve", "--socket", merged_sock, "--python", py,
                                      "--until-stdin-closes", "--merge-pages"],
                                     stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    while not all(os.path.exists(s_) for s_ in (sock, spare_sock, merged_sock)):
        time.sleep(0.01)
    bare_env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": SHIM,
                "PYTHONDONTWRITEBYTECODE": "1", "HOME": tmp, "TMPDIR": tmp}
    ways = {
        "bare": lambda: first_line([py, "-s", "-B", os.path.join(HELLO, "extension.py")], bare_env, LINE),
        "warm": lambda: first_line([RUNNER, "invoke", HELLO, TOOL, ARGS, "--server", sock]),
        "spare": lambda: first_line([RUNNER, "invoke", HELLO, TOOL, ARGS, "--server", spare_sock]),
        "cold": lambda: first_line([RUNNER, "invoke", HELLO, TOOL, ARGS, "--python", py]),
    }
    for f in ways.values():  # warm-up: the zygote starts here, caches fill
        f()
    times = {k: [] for k in ways}
    log(f"== first answer: {a.rounds} rounds")
    for _ in range(a.rounds):
        order = list(ways)
        random.shuffle(order)
        for k in order:
            times[k].append(ways[k]())
    first = {k: statistics.median(v) for k, v in times.items()}
    log("== library load + first answer")
    library = {}
    for k, s_ in (("lib-warm", sock), ("lib-spare", spare_sock), ("lib-cold", None)):
        library_load(py, s_, 2)  # warm-up
        samples = library_load(py, s_, a.rounds)
        library[k] = {"median_s": statistics.median(samples), "samples_s": samples}
    hellos = hello_copies(tmp, max(counts))

    memory = {}
    servers = {"warm": server, "lib-warm": server, "warm-merged": merged_server, "lib-merged": merged_server}
    ksm = Ksm.fast()
    memory_ways = ["bare", "warm", "cold", "lib-warm", "lib-cold"]
    if ksm.why_not:
        log(f"== no merged ways: {ksm.why_not}")
    else:
        memory_ways += ["warm-merged", "lib-merged"]
    merging = {}
    try:
        for n in counts:
            log(f"== idle memory: N = {n}")
            row = {}
            for way in memory_ways:
                if way == "bare":
                    argv, env = [py, "-s", "-B", os.path.join(HELLO, "extension.py")], bare_env
                elif way in ("warm", "warm-merged"):
                    argv, env = [RUNNER, "run", HELLO, "--server", sock if way == "warm" else merged_sock], None
                elif way == "cold":
                    argv, env = [RUNNER, "run", HELLO, "--python", py], None
                if way.startswith("lib"):
                    at = {"lib-warm": sock, "lib-merged": merged_sock}.get(way)
                    procs = [start_library(hellos[:n], py, at)]
                else:
                    procs = [start_idle(argv, env) for _ in range(n)]
                time.sleep(1.0)
                if way.endswith("-merged"):
                    merging[f"{way} {n}"] = ksm.settle()
                pids = tree([p.pid for p in procs])
                if way in servers:
                    pids |= tree([servers[way].pid])
                total = sum(pss_kib(p) for p in pids)
                # The pid-namespace waiters (monitor, reaper): neither the worker
                # (boot.py) nor a runner, server or zygote.
                def role(pid):
                    try:
                        cmd = open(f"/proc/{pid}/cmdline", "rb").read()
                    except OSError:
                        return "gone"
                    if pid in zygotes:  # first: the zygote's source names boot.py too
                        return "zygote"
                    if b"boot.py" in cmd or b"extension.py" in cmd:
                        return "worker"
                    if pid in {p.pid for p in procs}:
                        return "runner"
                    return "waiter"
                zygotes = {s_.pid for s_ in (server, merged_server)}
                zygotes |= {z for s_ in (server, merged_server) for z in children().get(s_.pid, ())}
                roles = {}
                for p in pids:
                    roles.setdefault(role(p), 0)
                    roles[role(p)] += pss_kib(p)
                row[way] = {"kib_per_worker": total / n, "processes": len(pids),
                            "by_role_kib_per_worker": {k: v / n for k, v in roles.items()}}
                stop_all(procs)
            memory[n] = row
    finally:
        ksm.restore()
    for s_ in (server, spare_server, merged_server):
        s_.stdin.close()
        s_.wait()
    shutil.rmtree(tmp, ignore_errors=True)

    results = {"python": py, "rounds": a.rounds, "runner": RUNNER,
               "build": "release" if "/release/" in RUNNER else "debug", "first_answer_s": first,
               "first_answer_all_s": times, "library_load": library, "memory": memory,
               "loadavg": {"start": load_start, "end": loadavg()},
               "ksm": {"settings": ksm.settings, "settled": merging, "why_not": ksm.why_not},
               "waiters": "forks of the host (NODUS_EXTENSION_REAPER names no file)"
               if os.environ.get("NODUS_EXTENSION_REAPER") and not os.path.isfile(os.environ["NODUS_EXTENSION_REAPER"])
               else "exec'd ext-reaper"}
    os.makedirs(os.path.dirname(os.path.abspath(a.raw)), exist_ok=True)
    with open(a.raw, "w") as f:
        json.dump(results, f, indent=2)
    md = render(results)
    print(md)
    if a.out:
        docsection.replace_section(a.out, BEGIN, END, md)


def render(r):
    f = r["first_answer_s"]
    ms = lambda s: f"{s * 1000:.1f}"
    load = r.get("loadavg", {})
    out = ["## Warm starts: the fork server (issue 16)", "",
           f"`nice python3 bench/warm.py --out docs/benchmarks.md`; {r['rounds']} interleaved rounds, "
           f"medians, {r.get('build', 'release')} build, interpreter {r['python']}, this 2-core machine under the "
           f"load of its other users (load average {load.get('start', '?')} at the start, {load.get('end', '?')} "
           f"at the end; ratios are what to read); pid-namespace waiters: {r.get('waiters', '?')}. *bare* is `python3 -s -B extension.py` with the "
           "worker shim on PYTHONPATH: the interpreter start a warm worker saves.", "",
           "| first answer (spawn → answer on stdout) | ms | × bare |", "|---|---:|---:|"]
    for k, label in (("bare", "bare interpreter (`python3 extension.py`)"),
                     ("warm", "`ext-runner invoke --server` (its own exec included)"),
                     ("spare", "`ext-runner invoke --server`, a server with `--spares 4`"),
                     ("cold", "`ext-runner invoke` (cold)")):
        if k in f:
            out.append(f"| {label} | {ms(f[k])} | {f[k] / f['bare']:.2f} |")
    lib = r.get("library_load", {})
    for k, label in (("lib-warm", "library: load + first answer through the server (in the host, no exec)"),
                     ("lib-spare", "library: load + first answer through a server with `--spares 4`"),
                     ("lib-cold", "library: load + first answer, cold (in the host, no exec)")):
        if k in lib:
            v = lib[k]["median_s"]
            out.append(f"| {label} | {ms(v)} | {v / f['bare']:.2f} |")
    target = f["warm"] / f["bare"]
    spare = f.get("spare", f["warm"]) / f["bare"]
    out += ["", f"Target: warm ≤ 0.5× bare — **{'met' if target <= 0.5 else 'missed'}** ({target:.2f}×) by a "
            f"server without spares; **{'met' if spare <= 0.5 else 'missed'}** ({spare:.2f}×) by one that keeps a "
            "spare worker per extension started ahead (`serve --spares`: one idle worker more per extension "
            "asked for, docs/warm.md \"Spare workers\").", "",
            "| idle PSS per worker (KiB) | N | bare | warm `run --server` | × bare | cold `run` | × bare "
            "| library, warm | × bare | library, cold | × bare |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    worst = {"warm": 0.0, "lib-warm": 0.0}
    for n, row in r["memory"].items():
        b = row["bare"]["kib_per_worker"]
        cells = []
        for k in ("warm", "cold", "lib-warm", "lib-cold"):
            if k in row:
                v = row[k]["kib_per_worker"]
                if k in worst:
                    worst[k] = max(worst[k], v / b)
                cells.append(f"{v:.0f} | {v / b:.2f}")
            else:
                cells.append("– | –")
        out.append(f"| | {n} | {b:.0f} | " + " | ".join(cells) + " |")
    merged_ns = [n for n, row in r["memory"].items() if "warm-merged" in row]
    if merged_ns:
        out += ["", "Through a server started with `--merge-pages`, once KSM has merged (KSM on for the run, "
                "`pages_to_scan` 20000, `sleep_millisecs` 10; docs/warm.md \"Merged pages\"):", "",
                "| idle PSS per worker (KiB) | N | bare | warm `run --server`, merged | × bare "
                "| library, merged | × bare | KSM settled in (s) | ksmd CPU (s) |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n in merged_ns:
            row = r["memory"][n]
            b = row["bare"]["kib_per_worker"]
            cells = [f"{row[k]['kib_per_worker']:.0f} | {row[k]['kib_per_worker'] / b:.2f}" for k in ("warm-merged", "lib-merged")]
            settled = [r.get("ksm", {}).get("settled", {}).get(f"{k} {n}", {}) for k in ("warm-merged", "lib-merged")]
            secs = " / ".join(f"{x.get('seconds', 0):.1f}" for x in settled)
            cpu = " / ".join(f"{x.get('ksmd_cpu_s', 0):.1f}" for x in settled)
            out.append(f"| | {n} | {b:.0f} | " + " | ".join(cells) + f" | {secs} | {cpu} |")
        # ksmd scans only memory marked mergeable: no full scan in 300 s, or
        # nothing shared, means the server marked nothing (a broken
        # --merge-pages), not that merging saves nothing.
        unmerged = [k for k, x in r.get("ksm", {}).get("settled", {}).items()
                    if x.get("timed_out") or not x.get("pages_sharing")]
        if unmerged:
            out += ["", f"**KSM merged nothing** for {', '.join(unmerged)} (no full scan within 300 s, "
                    "or no page shared): the merged figures above are not merging's."]
    elif r.get("ksm", {}).get("why_not"):
        out += ["", f"No merged ways: {r['ksm']['why_not']}."]
    # The marginal cost of one more extension (between the two largest N) and
    # the fixed cost it leaves (the server, its zygote, a library host's own
    # size): "idle cost per extension" is read as the marginal one.
    ns = sorted(int(n) for n in r["memory"])
    marginal = {}
    if len(ns) >= 2:
        lo, hi = ns[-2], ns[-1]
        rows = r["memory"]
        row = lambda n: rows[n] if n in rows else rows[str(n)]
        out += ["", f"Marginal cost of one more extension (N = {lo} → {hi}: the difference of the totals, "
                f"divided by {hi - lo}) and the fixed cost left (total at N = {hi} minus N × marginal), KiB:", "",
                "| way | marginal per extension | × bare marginal | fixed |", "|---|---:|---:|---:|"]
        bare_m = (row(hi)["bare"]["kib_per_worker"] * hi - row(lo)["bare"]["kib_per_worker"] * lo) / (hi - lo)
        for k in ("bare", "warm", "cold", "lib-warm", "lib-cold", "warm-merged", "lib-merged"):
            if k not in row(hi) or k not in row(lo):
                continue
            t_hi, t_lo = row(hi)[k]["kib_per_worker"] * hi, row(lo)[k]["kib_per_worker"] * lo
            m = (t_hi - t_lo) / (hi - lo)
            marginal[k] = m / bare_m
            out.append(f"| {k} | {m:.0f} | {m / bare_m:.2f} | {t_hi - m * hi:.0f} |")
    out += ["", f"Targets (judged on the marginal cost per extension; the worst per-worker average over N, "
            f"fixed costs included, beside it): warm through `run` ≤ 0.75× bare — "
            f"**{'met' if marginal.get('warm', 9) <= 0.75 else 'missed'}** ({marginal.get('warm', 0):.2f}×; "
            f"worst average {worst['warm']:.2f}×); warm through the library ≤ 0.5× bare — "
            f"**{'met' if marginal.get('lib-warm', 9) <= 0.5 else 'missed'}** ({marginal.get('lib-warm', 0):.2f}×; "
            f"worst average {worst['lib-warm']:.2f}×)."]
    if "warm-merged" in marginal:
        out[-1] += (f" With `--merge-pages` and KSM running: through `run` "
                    f"**{'met' if marginal['warm-merged'] <= 0.75 else 'missed'}** ({marginal['warm-merged']:.2f}×), "
                    f"through the library **{'met' if marginal.get('lib-merged', 9) <= 0.5 else 'missed'}** "
                    f"({marginal.get('lib-merged', 0):.2f}×): an operator's choice with a side channel "
                    f"(docs/security.md, \"Merged pages\").")
    out += ["",
            "Where it goes, KiB per worker (PSS by role: the worker, the proxy `ext-runner run` or the "
            "library host, the pid-namespace monitor and reaper, the server and zygote):", "",
            "| N | way | worker | runner / host | monitor + reaper | server + zygote |",
            "|---:|---|---:|---:|---:|---:|"]
    for n, row in r["memory"].items():
        for way in ("warm", "cold", "lib-warm", "lib-cold", "warm-merged", "lib-merged"):
            if way not in row:
                continue
            b = row[way]["by_role_kib_per_worker"]
            out.append(f"| {n} | {way} | {b.get('worker', 0):.0f} | {b.get('runner', 0):.0f} | "
                       f"{b.get('waiter', 0):.0f} | {b.get('zygote', 0):.0f} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
