#!/usr/bin/env python3
"""Comparative benchmark for ext-runner. Standard library only; one command:

    python3 bench/bench.py --out docs/benchmarks.md      (about 6 minutes)
    python3 bench/bench.py --quick                       (a smoke run, about 1 minute)
    python3 bench/bench.py --only cold,steady            (just those sections, medians to stdout)
    python3 bench/bench.py --only cold,steady --out docs/benchmarks.md
                                                         (those sections replace theirs in the report)

Everything is measured side by side in the same run, in interleaved rounds
(the order shuffled each round), and reported as medians and ratios against a
baseline measured in the same rounds (machines are noisy):

  cold         one-shot load + first invoke of a small worker: the worker run
               directly; `ext-runner invoke` with the full policy, with every
               layer off, and with one layer at a time; under bubblewrap
               (--unshare-net --unshare-pid); under the reference Python
               package; the library in-process; the native echo worker
  steady       per-invoke latency (p50, p99) and sequential throughput over one
               live worker: a direct pipe; `ext-runner run` as a proxy; a minimal
               relay (bench/relay.c, the floor of any proxy process); the Rust
               library (examples/bench-host.rs); the reference Python host; the
               native echo worker through each (the runner's floor); 64 KiB
               payloads
  concurrency  invokes/s with several callers on one extension and across many
               (library), and the reference host with threads
  seccomp      a syscall loop timed inside the worker, in and out of the sandbox
  memory       the host's own RSS per supervised worker, and load time, as the
               number of loaded extensions grows (1, 16, 64, 256)
  host calls   worker -> runner -> SQLite -> worker round trip
  hyperfine    a sequential cross-check of the cold starts
  micro        `cargo bench --bench micro` (criterion; --no-micro skips it)
  profile      timestamps of one cold start (strace) and where `ext-runner run`
               spends its CPU (perf), when the tools are there

It writes docs/benchmarks.md (--out) and, beside it, benchmarks.svg: a chart of
the latency figures. Setup (first thing it does): installs bubblewrap and
hyperfine with apt-get when missing and root (otherwise skips their columns
with a note), creates .venv-ref with the reference package when missing
(as scripts/test does), builds ext-runner, the native echo worker and the
bench host in release mode.
"""
import argparse
import json
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RELEASE = os.path.join(ROOT, "target", "release")
RUNNER = os.path.join(RELEASE, "ext-runner")
BENCH_HOST = os.path.join(RELEASE, "examples", "bench-host")
NATIVE_ECHO = os.path.join(RELEASE, "examples", "native-echo")
RELAY = os.path.join(HERE, "out", "relay")  # bench/relay.c: the floor of any relay process
EXAMPLE = os.path.join(ROOT, "examples", "hello")
SHIM = os.path.join(ROOT, "python", "shim")
REF_VENV = os.path.join(ROOT, ".venv-ref")
REF_PY = os.path.join(REF_VENV, "bin", "python")
SYSCALL_EXT = os.path.join(HERE, "syscall")
HOSTCALL_EXT = os.path.join(HERE, "hostcall")
LAYERS = ("landlock", "seccomp", "namespaces", "limits")

GREET_ARGS = {"name": "Ada"}
GREET = {"id": "b", "op": "invoke", "name": "example.greet", "args": GREET_ARGS}
ECHO = {"id": "b", "op": "invoke", "name": "bench.native.echo", "args": GREET_ARGS}
BIG_ARGS = {"data": "x" * 65536}
ECHO_BIG = {"id": "b", "op": "invoke", "name": "bench.native.echo", "args": BIG_ARGS}

NOTES = []  # what the run could not do, said in the report


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def dumps(v):
    return json.dumps(v)


# --------------------------------------------------------------------------- setup

def setup(a):
    missing = [pkg for tool, pkg in (("bwrap", "bubblewrap"), ("hyperfine", "hyperfine")) if not shutil.which(tool)]
    if missing:
        if os.geteuid() == 0 and shutil.which("apt-get") and not a.no_install:
            log(f"== setup: apt-get install -y {' '.join(missing)}")
            cmd = ["apt-get", "install", "-y", "-qq", *missing]
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            if subprocess.run(cmd, capture_output=True, env=env).returncode != 0:
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
                subprocess.run(cmd, capture_output=True, env=env)
        for tool, pkg in (("bwrap", "bubblewrap"), ("hyperfine", "hyperfine")):
            if not shutil.which(tool):
                NOTES.append(f"`{tool}` is not installed (not root, or apt-get failed): its figures are skipped; "
                             f"`apt-get install {pkg}` adds them.")
    if not a.no_reference and not ref_ok():
        log("== setup: installing the reference nodus-extension 0.1.2 into .venv-ref")
        subprocess.run([sys.executable, "-m", "venv", REF_VENV], capture_output=True)
        subprocess.run([REF_PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "nodus-extension==0.1.2"], capture_output=True)
        if not ref_ok():
            NOTES.append("the reference package could not be installed into .venv-ref: its figures are skipped.")
    if not a.no_build:
        log("== setup: cargo build --release (ext-runner, native-echo, bench-host)")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "ext-runner",
                        "--example", "native-echo", "--example", "bench-host"], cwd=ROOT, check=True)
    for p in (RUNNER, BENCH_HOST, NATIVE_ECHO):
        if not os.path.exists(p):
            sys.exit(f"missing {p}: run without --no-build")
    os.makedirs(os.path.dirname(RELAY), exist_ok=True)
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc or subprocess.run([cc, "-O2", "-pthread", "-o", RELAY, os.path.join(HERE, "relay.c")],
                                capture_output=True).returncode != 0:
        NOTES.append("no C compiler: the minimal-relay rows (the floor of any proxy process) are skipped.")


def ref_ok():
    return os.path.exists(REF_PY) and subprocess.run(
        [REF_PY, "-c", "import nodus_extension.registry"], capture_output=True).returncode == 0


def have(tool):
    return shutil.which(tool) is not None


def version(argv, pattern=None):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        text = (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "not installed"
    if pattern:
        m = re.search(pattern, text)
        return m.group(0) if m else text
    return text


def machine(py):
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
            mem = f"{kb / 1048576:.0f} GiB"
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), {mem}",
        "kernel": f"Linux {platform.release()}",
        "python": f"{version([py, '--version'])} ({py})",
        "rustc": version(["rustc", "--version"]),
        "bwrap": version(["bwrap", "--version"]) if have("bwrap") else "not installed",
        "hyperfine": version(["hyperfine", "--version"]) if have("hyperfine") else "not installed",
        "reference": "nodus-extension " + (subprocess.run(
            [REF_PY, "-c", "import nodus_extension as n; print(n.__version__)"], capture_output=True, text=True
        ).stdout.strip() if ref_ok() else "not installed"),
        "ext-runner": version([RUNNER, "--version"]) + f" (commit {commit}{', with uncommitted changes' if dirty else ''})",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError):
        return 0.0


def cpu_snapshot():
    """(machine busy seconds, steal seconds, this process and its reaped children's CPU seconds, wall)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    busy = (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / hz
    t = os.times()
    return busy, v[7] / hz, t.user + t.system + t.children_user + t.children_system, time.time()


def other_load(a, b):
    """Share of the machine's CPU that other processes used between two snapshots, and the steal share."""
    wall = (b[3] - a[3]) * (os.cpu_count() or 1)
    if wall <= 0:
        return 0.0, 0.0
    return max(0.0, ((b[0] - a[0]) - (b[2] - a[2])) / wall), (b[1] - a[1]) / wall


def busy_processes():
    """Other processes using CPU right now (name, %CPU), from two /proc samples."""
    def sample():
        out = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    s = f.read()
                name = s[s.index("(") + 1:s.rindex(")")]
                rest = s[s.rindex(")") + 2:].split()
                out[pid] = (name, int(rest[11]) + int(rest[12]))
            except (OSError, ValueError, IndexError):
                pass
        return out
    a = sample()
    time.sleep(1.0)
    b = sample()
    hz = os.sysconf("SC_CLK_TCK")
    busy = {}
    for pid, (name, t) in b.items():
        if pid in a and pid != str(os.getpid()):
            pct = (t - a[pid][1]) * 100 / hz
            if pct >= 5:
                busy[name] = busy.get(name, 0) + pct
    return sorted(busy.items(), key=lambda kv: -kv[1])


# --------------------------------------------------------------------------- fixtures

class Fixtures:
    """Temporary extension folders and policy files."""

    def __init__(self, py, n_native, n_hello):
        self.py = py
        self.tmp = tempfile.mkdtemp(prefix="ext-bench-")
        self.policies = {}
        for name, layers in [("off", {l: False for l in LAYERS})] + [
                (f"only-{on}", {l: l == on for l in LAYERS}) for on in LAYERS]:
            path = os.path.join(self.tmp, f"{name}.json")
            with open(path, "w") as f:
                json.dump({"mode": "best-effort", "layers": layers}, f)
            self.policies[name] = path
        self.native = self.native_ext("bench.native", os.path.join(self.tmp, "native"))
        self.natives = [self.native_ext(f"bench.n{i}", os.path.join(self.tmp, "natives", f"n{i}"))
                        for i in range(n_native)]
        self.hellos = []
        for i in range(n_hello):
            d = os.path.join(self.tmp, "hellos", f"h{i}")
            os.makedirs(d)
            shutil.copy(os.path.join(EXAMPLE, "extension.py"), d)
            with open(os.path.join(EXAMPLE, "nodus-extension.json")) as f:
                m = json.load(f)
            m["name"] = f"example.hello{i}"
            with open(os.path.join(d, "nodus-extension.json"), "w") as f:
                json.dump(m, f)
            self.hellos.append(d)
        self.memory_db = os.path.join(self.tmp, "memory.sqlite3")

    def native_ext(self, name, d):
        os.makedirs(d)
        exe = os.path.join(d, "native-echo")
        try:
            os.link(NATIVE_ECHO, exe)
        except OSError:
            shutil.copy2(NATIVE_ECHO, exe)
        m = {"name": name, "version": "1", "description": "native echo", "capabilities": ["tool.invoke"],
             "entry": ["native-echo"], "surfaces": {"tools": [{"name": f"{name}.echo", "description": "echo"}]}}
        with open(os.path.join(d, "nodus-extension.json"), "w") as f:
            json.dump(m, f)
        return d

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- helpers

def pct(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def med(v):
    return statistics.median(v) if v else float("nan")


def py_env():
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": SHIM, "LANG": "C.UTF-8"}


def direct_argv(py, ext=EXAMPLE):
    return [py, "-s", "-B", os.path.join(ext, "extension.py")]


def ok_line(line):
    return b'"ok": true' in line or b'"ok":true' in line


def one_shot(argv, request, env=None, cwd=EXAMPLE):
    """Start a worker, send one invoke, read the answer, shut it down; seconds."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=cwd)
    p.stdin.write((dumps(request) + "\n").encode())
    p.stdin.flush()
    line = p.stdout.readline()
    p.stdin.write(b'{"op": "shutdown"}\n')
    p.stdin.close()
    p.wait()
    dt = time.perf_counter() - t
    assert ok_line(line), (argv, line)
    return dt


def timed(argv, expect=None):
    t = time.perf_counter()
    out = subprocess.run(argv, capture_output=True)
    dt = time.perf_counter() - t
    if out.returncode != 0 or (expect is not None and expect not in out.stdout):
        raise RuntimeError(f"{argv[:4]} failed ({out.returncode}): {out.stdout[-300:]!r} {out.stderr[-500:]!r}")
    return dt


def runner_invoke(py, ext, tool, args, policy=None):
    argv = [RUNNER, "invoke", ext, tool, dumps(args), "--python", py]
    if policy:
        argv += ["--policy", policy]
    return argv


def bwrap_argv(py):
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(py)))
    argv = ["bwrap", "--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc", "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp"]
    for d in ("/lib", "/lib64", "/bin"):
        if os.path.exists(d):
            argv += ["--ro-bind", d, d]
    argv += ["--ro-bind", prefix, prefix, "--ro-bind", EXAMPLE, EXAMPLE, "--ro-bind", SHIM, SHIM,
             "--chdir", EXAMPLE, "--clearenv", "--setenv", "PYTHONPATH", SHIM]
    return argv + direct_argv(py)


PIN = []  # `taskset -c 0` for the steady section (see --no-pin)


def bench_host(*args, pin=False):
    out = subprocess.run([*(PIN if pin else []), BENCH_HOST, *[str(x) for x in args]], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"bench-host {args[:2]} failed: {out.stderr[-800:]}")
    return json.loads(out.stdout)


def ref_host(*args, pin=False):
    out = subprocess.run([*(PIN if pin else []), REF_PY, os.path.join(HERE, "ref_host.py"), *[str(x) for x in args]],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"ref_host {args[:2]} failed: {out.stderr[-800:]}")
    return json.loads(out.stdout)


def interleave(rounds, methods, seed):
    """Runs every method once per round, in a shuffled order; returns name -> results."""
    rng = random.Random(seed)
    res = {name: [] for name, _ in methods}
    for r in range(rounds):
        order = list(methods)
        rng.shuffle(order)
        for name, fn in order:
            res[name].append(fn())
    return res


# --------------------------------------------------------------------------- sections

def cold_section(a, fx):
    py = fx.py
    nat = fx.native
    methods = [
        ("py direct", lambda: one_shot(direct_argv(py), GREET, py_env())),
        ("py runner full", lambda: timed(runner_invoke(py, EXAMPLE, "example.greet", GREET_ARGS), b"Hello")),
        ("py runner no-layers", lambda: timed(runner_invoke(py, EXAMPLE, "example.greet", GREET_ARGS, fx.policies["off"]), b"Hello")),
        ("runner policy only (no worker)", lambda: timed([RUNNER, "policy", EXAMPLE, "--python", py])),
        ("py library (in-process)", lambda: lib_cold(bench_host("cold", EXAMPLE, "--python", py, "--args",
                                                                 dumps(GREET_ARGS), "--memory-db", fx.memory_db))),
        ("native direct", lambda: one_shot([os.path.join(nat, "native-echo")], ECHO, {}, nat)),
        ("native runner full", lambda: timed(runner_invoke(py, nat, "bench.native.echo", GREET_ARGS), b"Ada")),
        ("native runner no-layers", lambda: timed(runner_invoke(py, nat, "bench.native.echo", GREET_ARGS, fx.policies["off"]), b"Ada")),
    ]
    if a.layers:
        for l in LAYERS:
            methods.append((f"py runner {l} only",
                            lambda l=l: timed(runner_invoke(py, EXAMPLE, "example.greet", GREET_ARGS, fx.policies[f"only-{l}"]), b"Hello")))
    if have("bwrap"):
        methods.append(("py bubblewrap", lambda: one_shot(bwrap_argv(py), GREET, py_env())))
    if ref_ok():
        methods.append(("py reference package", lambda: timed(
            [REF_PY, "-m", "nodus_extension", "invoke", EXAMPLE, "example.greet", dumps(GREET_ARGS)], b"Hello")))
    for name, fn in methods:  # warm the page cache and check each works
        fn()
    log(f"== cold: {a.rounds} rounds x {len(methods)} methods")
    return interleave(a.rounds, methods, 1)


def lib_cold(r):
    """load + first invoke + unload, as the one-shot rows count start to exit."""
    return (r["samples_ns"][0] + r["unload_ns"][0]) / 1e9


def steady_section(a, fx):
    py = fx.py
    n = max(1, a.invokes // a.blocks)
    nb = max(1, n // 4)
    w = a.warmup
    nat = fx.native
    greet, echo, big = dumps(GREET), dumps(ECHO), dumps(ECHO_BIG)
    host = ["--python", py, "--memory-db", fx.memory_db]

    def pipe(line, argv, n=n, cwd=None, env=()):
        extra = ["--cwd", cwd] if cwd else []
        for e in env:
            extra += ["--env", e]
        return bench_host("pipe", "--line", line, "--n", n, "--warmup", w, *extra, "--", *argv, pin=True)

    env = [f"{k}={v}" for k, v in py_env().items()]
    methods = [
        ("py direct pipe", lambda: pipe(greet, direct_argv(py), cwd=EXAMPLE, env=env)),
        ("py ext-runner run", lambda: pipe(greet, [RUNNER, "run", EXAMPLE, "--python", py])),
        ("py minimal relay", lambda: pipe(greet, [RELAY, *direct_argv(py)], cwd=EXAMPLE, env=env)),
        ("py library", lambda: bench_host("steady", EXAMPLE, "--n", n, "--warmup", w, "--args", dumps(GREET_ARGS), *host, pin=True)),
        ("py library, schema check off", lambda: bench_host("steady", EXAMPLE, "--n", n, "--warmup", w, "--args",
                                                            dumps(GREET_ARGS), "--schema", "off", *host, pin=True)),
        ("py library, current-thread runtime", lambda: bench_host("--runtime", "current", "steady", EXAMPLE, "--n", n,
                                                                  "--warmup", w, "--args", dumps(GREET_ARGS), *host, pin=True)),
        ("native direct pipe", lambda: pipe(echo, [os.path.join(nat, "native-echo")], cwd=nat)),
        ("native ext-runner run", lambda: pipe(echo, [RUNNER, "run", nat])),
        ("native minimal relay", lambda: pipe(echo, [RELAY, os.path.join(nat, "native-echo")], cwd=nat)),
        ("native library", lambda: bench_host("steady", nat, "--n", n, "--warmup", w, "--args", dumps(GREET_ARGS), *host, pin=True)),
        ("native library, current-thread runtime", lambda: bench_host("--runtime", "current", "steady", nat, "--n", n,
                                                                      "--warmup", w, "--args", dumps(GREET_ARGS), *host, pin=True)),
        ("native 64 KiB direct pipe", lambda: pipe(big, [os.path.join(nat, "native-echo")], n=nb, cwd=nat)),
        ("native 64 KiB ext-runner run", lambda: pipe(big, [RUNNER, "run", nat], n=nb)),
        ("native 64 KiB minimal relay", lambda: pipe(big, [RELAY, os.path.join(nat, "native-echo")], n=nb, cwd=nat)),
        ("native 64 KiB library", lambda: bench_host("steady", nat, "--n", nb, "--warmup", w, "--args", dumps(BIG_ARGS), *host, pin=True)),
    ]
    if not os.path.exists(RELAY):
        methods = [m for m in methods if "minimal relay" not in m[0]]
    if ref_ok():
        methods.append(("py reference host", lambda: ref_host("steady", EXAMPLE, "example.greet", dumps(GREET_ARGS), n, w, pin=True)))
    log(f"== steady: {a.blocks} blocks x {len(methods)} methods, {n} invokes each")
    return interleave(a.blocks, methods, 2)


def concurrency_section(a, fx):
    py = fx.py
    host = ["--python", py, "--memory-db", fx.memory_db]
    ga, ea = dumps(GREET_ARGS), dumps(GREET_ARGS)
    npy, nnat = a.conc_invokes, a.conc_invokes * 4
    configs = [
        ("python worker, 1 extension", 1, lambda: bench_host("concurrent", EXAMPLE, "--callers", 1, "--n", npy, "--args", ga, *host)),
        ("python worker, 1 extension", 4, lambda: bench_host("concurrent", EXAMPLE, "--callers", 4, "--n", npy, "--args", ga, *host)),
        ("python worker, 1 extension", 16, lambda: bench_host("concurrent", EXAMPLE, "--callers", 16, "--n", npy, "--args", ga, *host)),
        ("python workers, 8 extensions", 16, lambda: bench_host(
            "concurrent", *fx.hellos[:8], "--callers", 16, "--n", npy, "--args", ga, *host)),
        ("native worker, 1 extension", 1, lambda: bench_host("concurrent", fx.native, "--callers", 1, "--n", nnat, "--args", ea, *host)),
        ("native worker, 1 extension", 16, lambda: bench_host("concurrent", fx.native, "--callers", 16, "--n", nnat, "--args", ea, *host)),
        ("native workers, 16 extensions", 16, lambda: bench_host(
            "concurrent", *fx.natives[:16], "--callers", 16, "--n", nnat, "--args", ea, *host)),
        ("native workers, 64 extensions", 64, lambda: bench_host(
            "concurrent", *fx.natives[:64], "--callers", 64, "--n", nnat, "--args", ea, *host)),
    ]
    if ref_ok():
        for t in (1, 4):
            configs.append((f"reference host (threads), python worker, 1 extension", t,
                            lambda t=t: ref_host("concurrent", EXAMPLE, "example.greet", ga, npy // 2, t)))
    methods = [(f"{label}|{callers}", fn) for label, callers, fn in configs]
    log(f"== concurrency: {a.conc_rounds} rounds x {len(methods)} configurations")
    return interleave(a.conc_rounds, methods, 3)


def seccomp_section(a, fx):
    py = fx.py
    calls = ("none", "getppid", "stat", "open")
    variants = {
        "direct (no runner)": (direct_argv(py, SYSCALL_EXT), py_env()),
        "runner, layers off": ([RUNNER, "run", SYSCALL_EXT, "--python", py, "--policy", fx.policies["off"]], None),
        "runner, seccomp only": ([RUNNER, "run", SYSCALL_EXT, "--python", py, "--policy", fx.policies["only-seccomp"]], None),
        "runner, Landlock only": ([RUNNER, "run", SYSCALL_EXT, "--python", py, "--policy", fx.policies["only-landlock"]], None),
        "runner, full policy": ([RUNNER, "run", SYSCALL_EXT, "--python", py], None),
    }

    def measure(argv, env):
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             env=env, cwd=SYSCALL_EXT)
        out = {}
        for i, call in enumerate(calls * 2):  # the first pass warms up
            n = a.syscalls if i >= len(calls) else a.syscalls // 10
            p.stdin.write((dumps({"id": str(i), "op": "invoke", "name": "bench.loop", "args": {"call": call, "n": n}}) + "\n").encode())
            p.stdin.flush()
            r = json.loads(p.stdout.readline())
            assert r.get("ok"), r
            if i >= len(calls):
                out[call] = r["result"] / n
        p.stdin.close()
        p.wait()
        return out

    methods = [(k, lambda v=v: measure(*v)) for k, v in variants.items()]
    log(f"== seccomp: {a.seccomp_rounds} rounds x {len(methods)} variants, {a.syscalls} calls per loop")
    raw = interleave(a.seccomp_rounds, methods, 4)
    # Best of the rounds: the loop is pure CPU, and other load can only add time to it.
    return {k: {c: min(r[c] for r in v) for c in calls} for k, v in raw.items()}


def memory_section(a, fx):
    py = fx.py
    host = ["--python", py, "--memory-db", fx.memory_db, "--args", dumps(GREET_ARGS)]
    counts = [c for c in a.counts if c <= len(fx.natives)]
    pycounts = [c for c in a.py_counts if c <= len(fx.hellos)]
    cs = ",".join(map(str, counts))
    runs = [
        ("native workers, full policy", lambda: bench_host("scale", *fx.natives[:max(counts)], "--counts", cs, *host)),
        ("native workers, layers off", lambda: bench_host("scale", *fx.natives[:max(counts)], "--counts", cs,
                                                          "--policy", fx.policies["off"], *host)),
    ]
    if pycounts:
        runs.append(("python workers, full policy", lambda: bench_host(
            "scale", *fx.hellos[:max(pycounts)], "--counts", ",".join(map(str, pycounts)), *host)))
    log(f"== memory: {a.mem_rounds} rounds, counts {cs} (python {pycounts})")
    raw = interleave(a.mem_rounds, runs, 5)
    return raw


def hostcall_section(a, fx):
    """p50 of an invoke making 10 memory.get host calls vs a no-op invoke, through `ext-runner run`."""
    p = subprocess.Popen([RUNNER, "run", HOSTCALL_EXT, "--python", fx.py, "--memory-db", fx.memory_db],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=HOSTCALL_EXT)
    out = {"bench.noop": [], "bench.get": []}
    for i in range(a.hostcalls):
        for tool in out:
            line = (dumps({"id": str(i), "op": "invoke", "name": tool, "args": {"n": 10}}) + "\n").encode()
            t = time.perf_counter()
            p.stdin.write(line)
            p.stdin.flush()
            answer = p.stdout.readline()
            out[tool].append(time.perf_counter() - t)
            assert ok_line(answer), answer
    p.stdin.close()
    p.wait()
    return out


def hyperfine_section(a, fx):
    if not have("hyperfine"):
        return None
    py = fx.py
    q = lambda argv: " ".join(shlex.quote(x) for x in argv)
    cmds = {
        "ext-runner invoke, full policy": q(runner_invoke(py, EXAMPLE, "example.greet", GREET_ARGS)),
        "ext-runner invoke, layers off": q(runner_invoke(py, EXAMPLE, "example.greet", GREET_ARGS, fx.policies["off"])),
        "python worker started with stdin closed (startup only)": q(["env", "-i", f"PYTHONPATH={SHIM}", *direct_argv(py)]),
        "ext-runner invoke, native echo": q(runner_invoke(py, fx.native, "bench.native.echo", GREET_ARGS)),
    }
    if ref_ok():
        cmds["reference: python -m nodus_extension invoke"] = q(
            [REF_PY, "-m", "nodus_extension", "invoke", EXAMPLE, "example.greet", dumps(GREET_ARGS)])
    out = os.path.join(fx.tmp, "hyperfine.json")
    log(f"== hyperfine: {len(cmds)} commands x {a.hyperfine_runs} runs")
    r = subprocess.run(["hyperfine", "-N", "--warmup", "3", "--runs", str(a.hyperfine_runs), "--export-json", out,
                        *cmds.values()], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        NOTES.append(f"hyperfine failed: {r.stderr.strip()[-300:]}")
        return None
    with open(out) as f:
        res = json.load(f)["results"]
    return [(label, x) for label, x in zip(cmds, res)]


def micro_section(a):
    log("== micro: cargo bench --bench micro (criterion)")
    env = dict(os.environ, BENCH_PYTHON=os.path.realpath(sys.executable))
    r = subprocess.run(["cargo", "bench", "--quiet", "--bench", "micro", "--", "--warm-up-time", "1",
                        "--measurement-time", "2", "--noplot"], cwd=ROOT, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        NOTES.append(f"`cargo bench --bench micro` failed: {r.stderr.strip()[-300:]}")
        return None
    rows, name = [], None
    for line in r.stdout.splitlines():
        m = re.match(r"^(\S.*?)\s+time:\s+\[(.*?)\]", line)
        if m:
            rows.append((m.group(1).strip(), m.group(2).split()))
            continue
        m = re.match(r"^\s+time:\s+\[(.*?)\]", line)
        if m and name:
            rows.append((name, m.group(1).split()))
            continue
        if line and not line[0].isspace() and "time:" not in line and not line.startswith(("Benchmarking", "Found", "Warning")):
            name = line.strip()
    return rows


def profile_section(a, fx):
    """Timestamps of one full-policy cold start (strace), and perf's view of `ext-runner run`."""
    py = fx.py
    out = {}
    if have("strace"):
        trace = os.path.join(fx.tmp, "cold.strace")
        argv = runner_invoke(py, EXAMPLE, "example.greet", GREET_ARGS)
        r = subprocess.run(["strace", "-f", "-ttt", "--seccomp-bpf", "-s", "256", "-o", trace, "-e",
                            "trace=execve,clone,clone3,fork,vfork,unshare,landlock_add_rule,landlock_restrict_self,"
                            "seccomp,write,exit_group", *argv], capture_output=True)
        if r.returncode == 0:
            out["timeline"] = timeline(trace)
        cnt = os.path.join(fx.tmp, "cold.count")
        subprocess.run(["strace", "-f", "-c", "-o", cnt, *argv], capture_output=True)
        with open(cnt) as f:
            out["syscalls"] = f.read().strip().splitlines()[-1]
    if have("perf") and not a.no_perf:
        data = os.path.join(fx.tmp, "run.perf")
        try:
            bench_host("pipe", "--line", dumps(ECHO), "--n", 20000, "--warmup", 100, "--",
                       "perf", "record", "-q", "-F", "2999", "-o", data, RUNNER, "run", fx.native)
            rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--comms", "ext-runner",
                                  "--sort", "dso", "--stdio", "-q", "-g", "none"], capture_output=True, text=True)
            out["perf_dso"] = [l.strip() for l in rep.stdout.splitlines() if l.strip()][:6]
            rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--comms", "ext-runner",
                                  "--sort", "sym", "--stdio", "-q", "-g", "none"], capture_output=True, text=True)
            out["perf_sym"] = [l.strip() for l in rep.stdout.splitlines() if l.strip()][:14]
        except RuntimeError as e:
            NOTES.append(f"perf profile skipped: {e}")
    return out


def timeline(path):
    """Phases of one `ext-runner invoke` from an strace -f -ttt log."""
    events = []
    with open(path) as f:
        for line in f:
            parts = line.split(None, 2)
            if len(parts) == 3:
                try:
                    events.append((int(parts[0]), float(parts[1]), parts[2]))
                except ValueError:
                    pass
    if not events:
        return []
    t0 = events[0][1]
    runner_pid = events[0][0]
    marks = []

    def mark(label, pred, after=0.0):
        for pid, t, call in events:
            if t >= after and pred(pid, call):
                marks.append((label, (t - t0) * 1000))
                return t
        return after

    t = mark("ext-runner exec'd", lambda p, c: c.startswith("execve("))
    t = mark("probe: namespaces tried (fork + unshare)", lambda p, c: p != runner_pid and c.startswith("unshare("), t)
    t = mark("policy derived, Landlock rules added", lambda p, c: p == runner_pid and c.startswith("landlock_add_rule("), t)
    t = mark("worker forked", lambda p, c: p == runner_pid and c.startswith("clone"), t)
    t = mark("confinement applied (Landlock + seccomp)", lambda p, c: c.startswith("seccomp("), t)
    t = mark("worker exec'd (python starts)", lambda p, c: p != runner_pid and c.startswith("execve("), t)
    t = mark("request written to the worker", lambda p, c: p == runner_pid and c.startswith("write(") and "invoke" in c, t)
    t = mark("worker answered", lambda p, c: p != runner_pid and c.startswith("write(1,"), t)
    t = mark("shutdown sent", lambda p, c: p == runner_pid and "shutdown" in c, t)
    t = mark("worker exited", lambda p, c: p != runner_pid and c.startswith("exit_group("), t)
    t = mark("result printed", lambda p, c: p == runner_pid and c.startswith("write(1,"), t)
    mark("ext-runner exited", lambda p, c: p == runner_pid and c.startswith("exit_group("), t)
    return marks


# --------------------------------------------------------------------------- report

def fmt_ms(s):
    return f"{s * 1000:.1f}"


def fmt_us(ns):
    return f"{ns / 1000:.1f}" if ns < 100_000 else f"{ns / 1000:.0f}"


def verdict(ok):
    return "**met**" if ok else "**missed**"


def steady_stats(blocks):
    samples = [s for b in blocks for s in b["samples_ns"]]
    total = sum(b["total_ns"] for b in blocks)
    bp50 = [pct(b["samples_ns"], 0.5) for b in blocks]
    return {
        "p50": pct(samples, 0.5), "p99": pct(samples, 0.99), "mean": statistics.fmean(samples),
        "per_s": len(samples) / (total / 1e9), "n": len(samples),
        "block_p50_min": min(bp50), "block_p50_max": max(bp50),
    }


def paired(runs, base, value):
    """Median over rounds of value(run) / value(baseline run of the same round)."""
    return med([value(r) / value(b) for r, b in zip(runs, base)])


def linear_fit(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return float("nan"), float("nan"), float("nan")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    icpt = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (icpt + slope * x)) ** 2 for x, y in zip(xs, ys))
    return slope, icpt, (1 - ss_res / ss_tot) if ss_tot else 1.0


def report_targets(R):
    """The targets' verdicts, from the sections R holds (--only runs a few)."""
    targets = []
    if "cold" in R:
        cold = R["cold"]
        cm = {k: med(v) for k, v in cold.items()}
        ident = lambda x: x
        r_cold = paired(cold["py runner full"], cold["py direct"], ident)
        bw = cm.get("py bubblewrap")
        targets.append(("cold start, full policy ≤ 1.1x the worker run directly", r_cold <= 1.1,
                        f"{r_cold:.2f}x paired ({fmt_ms(cm['py runner full'])} vs {fmt_ms(cm['py direct'])} ms medians)"))
        if bw:
            r_bw = paired(cold["py runner full"], cold["py bubblewrap"], ident)
            targets.append(("cold start, full policy below bubblewrap", r_bw < 1.0,
                            f"{r_bw:.2f}x bubblewrap paired ({fmt_ms(bw)} ms median)"))
    if "steady" in R:
        st = {k: steady_stats(v) for k, v in R["steady"].items()}
        p50 = lambda b: pct(b["samples_ns"], 0.5)
        sd = R["steady"]
        r_run = paired(sd["py ext-runner run"], sd["py direct pipe"], p50)
        floor = ""
        if "py minimal relay" in sd:
            r_relay = paired(sd["py minimal relay"], sd["py direct pipe"], p50)
            floor = (f"; the floor of any relay process (`bench/relay.c`: two threads, blocking read/write, "
                     f"no parsing) measures {r_relay:.2f}x, so the runner is at {r_run / r_relay:.2f}x of the floor")
        targets.append(("`ext-runner run` p50 ≤ 1.3x a direct pipe (python worker)", r_run <= 1.3,
                        f"{r_run:.2f}x paired; pooled p50 {fmt_us(st['py ext-runner run']['p50'])} vs "
                        f"{fmt_us(st['py direct pipe']['p50'])} µs ({st['py ext-runner run']['p50'] / st['py direct pipe']['p50']:.2f}x)"
                        + floor))
        r_lib = paired(sd["py library"], sd["py direct pipe"], p50)
        targets.append(("library p50 ≤ 1.1x a direct pipe (python worker)", r_lib <= 1.1,
                        f"{r_lib:.2f}x paired; pooled p50 {fmt_us(st['py library']['p50'])} vs "
                        f"{fmt_us(st['py direct pipe']['p50'])} µs ({st['py library']['p50'] / st['py direct pipe']['p50']:.2f}x)"))
    if "memory" in R:
        mem = memory_summary(R["memory"])
        full = mem.get("native workers, full policy")
        if full:
            own = full["per_worker_kib"]
            targets.append(("runner's own memory a few MiB per worker (≤ 4 MiB), linear (R² ≥ 0.98)",
                            own <= 4096 and full["r2"] >= 0.98,
                            f"{own / 1024:.2f} MiB per worker (host RSS slope {full['slope_kib']:.0f} KiB + "
                            f"pid-namespace waiter {full['waiter_kib']:.0f} KiB private), R² = {full['r2']:.4f}"))
    if "seccomp" in R:
        sc = R["seccomp"]
        sc_off, only = sc["runner, layers off"], sc["runner, seccomp only"]
        worst = max(((only[c] - sc_off[c]) / sc_off[c], c) for c in ("getppid", "stat", "open"))
        targets.append(("seccomp overhead < 10% on a syscall loop", worst[0] < 0.10,
                        f"worst {worst[0] * 100:+.1f}% ({worst[1]}: {only[worst[1]]:.0f} vs {sc_off[worst[1]]:.0f} ns per call)"))
    return targets


def cold_report(a, R):
    """The cold-start section's lines."""
    L = []
    add = L.append
    cold = R["cold"]
    cm = {k: med(v) for k, v in cold.items()}
    add("## Cold start: load + first invoke")
    add("")
    add("One process start, one `example.greet` invoke, shutdown; wall time seen by the caller "
        f"(median of {a.rounds} interleaved rounds). Python rows run `examples/hello` with the same interpreter; "
        "native rows run the native echo worker.")
    add("")
    add("| method | median ms | min ms | p90 ms | vs py direct | vs py runner no-layers |")
    add("|---|---:|---:|---:|---:|---:|")
    base, off = cm["py direct"], cm["py runner no-layers"]
    for k, v in sorted(cold.items(), key=lambda kv: (not kv[0].startswith("py"), med(kv[1]))):
        if k.startswith("native"):
            continue
        add(f"| {k} | {fmt_ms(med(v))} | {fmt_ms(min(v))} | {fmt_ms(pct(v, 0.9))} | {med(v) / base:.2f}x | {med(v) / off:.2f}x |")
    add("")
    add("| native echo worker | median ms | min ms | vs native direct |")
    add("|---|---:|---:|---:|")
    nb = cm["native direct"]
    for k in ("native direct", "native runner no-layers", "native runner full"):
        add(f"| {k} | {fmt_ms(cm[k])} | {fmt_ms(min(cold[k]))} | {cm[k] / nb:.2f}x |")
    add("")
    add("Decomposition (differences of medians above):")
    add("")
    add(f"- runner process itself (`ext-runner policy`: exec, probe, manifest, interpreter, policy; no worker): "
        f"{fmt_ms(cm['runner policy only (no worker)'])} ms")
    add(f"- everything the runner adds around a native worker (native runner full − native direct): "
        f"{fmt_ms(cm['native runner full'] - nb)} ms, of which the sandbox layers (full − no-layers) "
        f"{fmt_ms(cm['native runner full'] - cm['native runner no-layers'])} ms")
    add(f"- the same for the python worker: runner full − direct = {fmt_ms(cm['py runner full'] - base)} ms; "
        f"layers (full − no-layers) = {fmt_ms(cm['py runner full'] - off)} ms")
    for l in LAYERS:
        k = f"py runner {l} only"
        if k in cm:
            add(f"  - {l} alone: {fmt_ms(cm[k] - off)} ms over no-layers")
    if "py library (in-process)" in cm:
        add(f"- the library in a host that is already running (no runner exec): "
            f"{fmt_ms(cm['py library (in-process)'])} ms, {cm['py library (in-process)'] / base:.2f}x the direct start")
    add("")

    return L


def steady_report(a, R):
    """The steady-state section's lines."""
    L = []
    add = L.append
    st = {k: steady_stats(v) for k, v in R["steady"].items()}
    add("## Steady state: one invoke at a time over a live worker")
    add("")
    add("Round-trip latency per invoke seen by the caller, all samples of all blocks pooled "
        "(the block-p50 range shows the spread between blocks; the paired ratio is the median over rounds of "
        "the method's block p50 divided by the baseline's block p50 in the same round); throughput = invokes / "
        "wall time, sequential. "
        "Pipes and `ext-runner run` are driven by the same Rust client (`bench-host pipe`), the library by "
        "`bench-host steady`, the reference host by `bench/ref_host.py` in `.venv-ref`."
        + (" Every process of this section (client, runner, worker, library threads) runs on CPU 0 "
           "(`taskset -c 0`): each hop is then a context switch on one CPU rather than a wake-up of the other "
           "CPU, whose cost on a virtual machine varies tenfold with whether that CPU is asleep; `--no-pin` "
           "measures unpinned." if getattr(a, "pin", False) else " Unpinned (`--no-pin`)."))
    add("")
    add("| method | p50 µs | p99 µs | mean µs | invokes/s | block p50 range µs | p50 vs direct pipe | paired ratio |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|")
    groups = [("py", "py direct pipe"), ("native 64 KiB", "native 64 KiB direct pipe"), ("native", "native direct pipe")]
    order = ["py direct pipe", "py ext-runner run", "py minimal relay", "py library", "py library, schema check off",
             "py library, current-thread runtime", "py reference host",
             "native direct pipe", "native ext-runner run", "native minimal relay", "native library", "native library, current-thread runtime",
             "native 64 KiB direct pipe", "native 64 KiB ext-runner run", "native 64 KiB minimal relay",
             "native 64 KiB library"]
    for k in order:
        if k not in st:
            continue
        s = st[k]
        bk = next(bk for g, bk in groups if k.startswith(g))
        b = st[bk]
        pr = paired(R["steady"][k], R["steady"][bk], lambda x: pct(x["samples_ns"], 0.5))
        add(f"| {k} | {fmt_us(s['p50'])} | {fmt_us(s['p99'])} | {fmt_us(s['mean'])} | {s['per_s']:,.0f} | "
            f"{fmt_us(s['block_p50_min'])}–{fmt_us(s['block_p50_max'])} | {s['p50'] / b['p50']:.2f}x | {pr:.2f}x |")
    add("")
    add(f"Added per invoke at p50: `ext-runner run` {fmt_us(st['py ext-runner run']['p50'] - st['py direct pipe']['p50'])} µs "
        f"(python) / {fmt_us(st['native ext-runner run']['p50'] - st['native direct pipe']['p50'])} µs (native); "
        f"library {fmt_us(st['py library']['p50'] - st['py direct pipe']['p50'])} µs (python) / "
        f"{fmt_us(st['native library']['p50'] - st['native direct pipe']['p50'])} µs (native); with 64 KiB arguments "
        f"and results: run {fmt_us(st['native 64 KiB ext-runner run']['p50'] - st['native 64 KiB direct pipe']['p50'])} µs, "
        f"library {fmt_us(st['native 64 KiB library']['p50'] - st['native 64 KiB direct pipe']['p50'])} µs.")
    add("")

    return L


SECTION_HEADS = {"cold": "## Cold start: load + first invoke",
                 "steady": "## Steady state: one invoke at a time over a live worker"}


def splice(a, R, path, info, ctx):
    """--only with --out: the sections that ran replace theirs in the report
    at `path` (their target rows too) and a marked note says when and where
    they were measured; every other section stays as it was."""
    try:
        text = open(path).read()
    except FileNotFoundError:
        sys.exit(f"--only with --out updates an existing report, and {path} does not exist: run without --only")
    for name, render in (("cold", cold_report), ("steady", steady_report)):
        if name not in R:
            continue
        head = SECTION_HEADS[name]
        if head not in text:
            sys.exit(f"{path} has no '{head}' section to replace: run without --only")
        i = text.index(head)
        j = text.find("\n## ", i)
        j = len(text) if j < 0 else j + 1
        text = text[:i] + "\n".join(render(a, R)) + "\n" + text[j:]
    for t, ok, m in report_targets(R):
        row = re.compile(r"^\| " + re.escape(t) + r" \|.*$", re.M)
        text = row.sub(lambda _m, t=t, ok=ok, m=m: f"| {t} | {verdict(ok)} | {m} |", text)
    ran = [n for n in ("cold", "steady") if n in R]
    other = ctx.get("other_cpu", 0.0)
    note = (f"<!-- only:begin -->\n> The {' and '.join(ran)} sections (and their rows of the targets) were "
            f"re-measured on their own by `python3 bench/bench.py --only {','.join(ran)} --out {os.path.relpath(path, ROOT)}`: "
            f"{info['ext-runner']}, {info['date']}; {a.rounds} cold rounds, {a.blocks} steady blocks of "
            f"{max(1, a.invokes // a.blocks)} invokes; load average {ctx['load_before']:.2f} at the start, "
            f"{ctx['load_after']:.2f} at the end, other processes used {other * 100:.0f}% of the machine's CPU. "
            f"Every other section (and the chart) is from the run described above.\n<!-- only:end -->")
    b, e = "<!-- only:begin -->", "<!-- only:end -->"
    if b in text and e in text:
        text = text[:text.index(b)] + note + text[text.index(e) + len(e):]
    else:
        k = text.index("![latency chart]")
        text = text[:k] + note + "\n\n" + text[k:]
    with open(path, "w") as f:
        f.write(text)
    log(f"updated the {', '.join(ran)} sections of {path}")


def report(a, info, ctx, R, svg_name):
    busy_before, busy_after = ctx["busy_before"], ctx["busy_after"]
    load_before, load_after = ctx["load_before"], ctx["load_after"]
    other, steal = ctx.get("other_cpu", 0.0), ctx.get("steal", 0.0)
    L = []
    add = L.append
    add("# Benchmarks")
    add("")
    add("Generated by `python3 bench/bench.py --out docs/benchmarks.md` (see the header of `bench/bench.py` for "
        "what each section measures). Every figure in a table was measured in the same run as the figures it is "
        "compared with, in interleaved rounds whose order is shuffled each round; times are medians (cold "
        "starts) or percentiles of all samples pooled across rounds (steady invokes), and ratios are taken "
        "against the baseline of the same table.")
    add("")
    add("| | |")
    add("|---|---|")
    for k, v in info.items():
        add(f"| {k} | {v} |")
    add(f"| sizes | {a.rounds} cold rounds; {a.blocks} blocks of {max(1, a.invokes // a.blocks)} steady invokes per method; "
        f"{a.conc_rounds} concurrency rounds; {a.syscalls} calls per syscall loop; counts {', '.join(map(str, a.counts))} |")
    add("")
    quiet = other < 0.05 and steal < 0.02 and not busy_before and "other_cpu" in ctx
    load_line = (f"other processes used {other * 100:.0f}% of the machine's CPU during the run"
                 f"{f', the hypervisor stole {steal * 100:.0f}%' if steal >= 0.005 else ''}; load average "
                 f"{load_before:.2f} at the start (this run's own build included), {load_after:.2f} at the end")
    if not quiet:
        others = ", ".join(f"{n} ({p:.0f}% CPU)" for n, p in (busy_before or [])[:6]) or "none seen at the start"
        add(f"> **The machine was not quiet**: {load_line}; busy processes at the start: {others}; at the end: "
            f"{', '.join(f'{n} ({p:.0f}%)' for n, p in (busy_after or [])[:6]) or 'none'}. "
            "Absolute figures are inflated and the tails (p99) especially; the ratios within one table are "
            "more trustworthy than the absolute figures, but re-run on a quiet machine before quoting them.")
    else:
        add(f"> Machine load during the run: {load_line}.")
    add("")
    # The run's own stability check: the same direct pipe, block after block.
    spreads = []
    for k in ("py direct pipe", "native direct pipe"):
        blocks = R["steady"].get(k) or []
        p50s = [pct(b["samples_ns"], 0.5) for b in blocks]
        if p50s:
            spreads.append((k, min(p50s), med(p50s), max(p50s)))
    unstable = [x for x in spreads if x[3] > 2.5 * x[1]]
    if unstable:
        add("> **The machine's speed changed during the run**: " + "; ".join(
            f"the {k} measured {fmt_us(lo)} µs at best and {fmt_us(hi)} µs at worst per block (median block "
            f"{fmt_us(mid)} µs)" for k, lo, mid, hi in unstable) +
            ". When no other process shows in the line above, that came from outside this virtual machine "
            "(on it, a round trip between two processes is fast while both virtual CPUs are awake and slow when "
            "one must be woken). The pooled percentiles of the steady state are blurred by it; the targets use "
            "paired ratios (each round's figure divided by the baseline's figure of the same round, median over "
            "rounds), which cancel most of it.")
        add("")
    if a.note:
        add(f"> {a.note}")
        add("")
    for n in NOTES:
        add(f"> Note: {n}")
        add("")
    add(f"![latency chart]({svg_name})")
    add("")

    targets = report_targets(R)
    add("## Targets")
    add("")
    add("| target | verdict | measured |")
    add("|---|---|---|")
    for t, ok, m in targets:
        add(f"| {t} | {verdict(ok)} | {m} |")
    add("")
    add("Why the missed ones miss is in [Where the time goes](#where-the-time-goes).")
    add("")

    L.extend(cold_report(a, R))
    L.extend(steady_report(a, R))

    # ---- concurrency
    add("## Concurrency (library)")
    add("")
    add(f"Invokes per second with C callers sharing the invokes round-robin over the loaded extensions; "
        f"median of {a.conc_rounds} rounds; latency percentiles of the median round.")
    add("")
    add("| workload | callers | invokes/s | p50 µs | p99 µs |")
    add("|---|---:|---:|---:|---:|")
    for key, runs in R["concurrency"].items():
        label, callers = key.split("|")
        runs = sorted(runs, key=lambda r: r["per_s"])
        m = runs[len(runs) // 2]
        add(f"| {label} | {callers} | {m['per_s']:,.0f} | {fmt_us(m['p50_ns'])} | {fmt_us(m['p99_ns'])} |")
    add("")

    # ---- seccomp
    add("## Seccomp and Landlock: a system-call loop inside the worker")
    add("")
    add(f"`bench/syscall`: {a.syscalls:,} calls in a Python loop, timed inside the worker (process start and "
        f"the protocol excluded); ns per iteration, best of {a.seccomp_rounds} interleaved rounds (the loop is pure "
        "CPU: other load only adds to it). `none` is the loop with a builtin call and no system call.")
    add("")
    calls = ("none", "getppid", "stat", "open")
    add("| variant | " + " | ".join(calls) + " | getppid vs layers off | stat vs layers off | open vs layers off |")
    add("|---|" + "---:|" * (len(calls) + 3))
    for k, v in sc.items():
        rel = " | ".join(f"{(v[c] - sc_off[c]) / sc_off[c] * 100:+.1f}%" for c in ("getppid", "stat", "open"))
        add(f"| {k} | " + " | ".join(f"{v[c]:.0f}" for c in calls) + f" | {rel} |")
    add("")

    # ---- memory
    add("## Memory and load time as extensions grow (library)")
    add("")
    add("One `ExtensionRegistry` loads N extensions one after the other (the native echo worker; python rows: "
        "`examples/hello` copies). *Host Δ* is the host process's RSS minus its RSS before the first load; the "
        "workers' own memory is not in it. With the full policy each worker also has a *pid-namespace waiter*: "
        "a forked copy of the host that waits for the worker (process 1 of its namespace is the worker, its "
        "parent stays outside); its private memory counts as the runner's. *Ready* = until every worker "
        "answered one invoke.")
    add("")
    add("| workers | N | host RSS MiB | host Δ MiB | Δ / N KiB | waiter private KiB / worker | load ms / ext (p50) | load all ms | ready all ms | workers' own RSS MiB / worker |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, runs in R["memory"].items():
        for p in median_points(runs):
            n = p["count"]
            add(f"| {label} | {n} | {p['host_rss'] / 1024:.1f} | {p['delta'] / 1024:.2f} | {p['delta'] / n:.0f} | "
                f"{p['waiter_private'] / n:.0f} | {p['load_p50'] / 1e6:.2f} | {p['load'] / 1e6:.0f} | {p['ready'] / 1e6:.0f} | "
                f"{p['workers_rss'] / n / 1024:.1f} |")
    add("")
    for label, m in mem.items():
        add(f"- {label}: host RSS grows {m['slope_kib']:.0f} KiB per worker (least squares over N, R² = {m['r2']:.4f}), "
            f"plus {m['waiter_kib']:.0f} KiB private per pid-namespace waiter.")
    procs = [b.get("procs") for b in R["steady"].get("py ext-runner run", []) if b.get("procs")]
    if procs:
        p = procs[-1]
        add(f"- `ext-runner run` (one runner process per worker): runner RSS {p[0]['rss'] / 1024:.1f} MiB, "
            f"of which private {p[0]['private'] / 1024:.1f} MiB; its waiter(s): "
            + ", ".join(f"{q['private']} KiB private" for q in p[1:-1]) +
            f"; the python worker: {p[-1]['rss'] / 1024:.1f} MiB RSS.")
    add("")

    # ---- host calls
    hc = R["hostcall"]
    noop, get = pct(hc["bench.noop"], 0.5), pct(hc["bench.get"], 0.5)
    add("## Host calls (through `ext-runner run`)")
    add("")
    add("| | p50 µs |")
    add("|---|---:|")
    add(f"| invoke, no host call | {noop * 1e6:.0f} |")
    add(f"| invoke making 10 `memory.get` host calls | {get * 1e6:.0f} |")
    add(f"| one host call round trip (worker → runner → SQLite → worker) | {(get - noop) / 10 * 1e6:.0f} |")
    add("")

    # ---- hyperfine
    if R.get("hyperfine"):
        add("## Cross-check with hyperfine (sequential, not interleaved)")
        add("")
        add(f"`hyperfine -N --warmup 3 --runs {a.hyperfine_runs}`; each command runs all its runs in a row, so "
            "drift between commands is not cancelled as above.")
        add("")
        add("| command | mean ms | ± σ | median ms | min ms |")
        add("|---|---:|---:|---:|---:|")
        for label, x in R["hyperfine"]:
            add(f"| {label} | {x['mean'] * 1000:.1f} | {x['stddev'] * 1000:.1f} | {x['median'] * 1000:.1f} | {x['min'] * 1000:.1f} |")
        add("")

    # ---- micro
    if R.get("micro"):
        add("## Micro benchmarks (`cargo bench --bench micro`, criterion)")
        add("")
        add("| benchmark | time (low, estimate, high) |")
        add("|---|---|")
        for name, v in R["micro"]:
            add(f"| {name} | {' '.join(v)} |")
        add("")
    else:
        add("Micro benchmarks: `cargo bench --bench micro` (criterion; manifest parsing, policy derivation, "
            "launch preparation, argument validation, protocol encode/decode); skipped in this run (`--no-micro`).")
        add("")

    # ---- profile
    prof = R.get("profile") or {}
    add("## Where the time goes")
    add("")
    if prof.get("timeline"):
        add("One full-policy `ext-runner invoke` of `examples/hello` under `strace -f -ttt` (traced calls only; "
            "strace slows each traced call, so read the gaps, not the total):")
        add("")
        add("| ms since exec | event |")
        add("|---:|---|")
        for label, t in prof["timeline"]:
            add(f"| {t:.1f} | {label} |")
        add("")
    if prof.get("syscalls"):
        add(f"System calls of that cold start, runner and worker together (`strace -f -c`): `{prof['syscalls'].strip()}`")
        add("")
    if prof.get("perf_dso"):
        add("`perf record` of `ext-runner run` relaying 20,000 native-echo invokes (samples of the runner process):")
        add("")
        add("```")
        add("\n".join(prof["perf_dso"]))
        add("...")
        add("\n".join(prof["perf_sym"]))
        add("```")
        add("")
    analysis = os.path.join(HERE, "analysis.md")
    if os.path.exists(analysis):
        with open(analysis) as f:
            add(f.read().strip())
        add("")
    return "\n".join(L) + "\n", targets


def median_points(runs):
    """Per count, the median over rounds of each figure."""
    out = []
    for i, p0 in enumerate(runs[0]["points"]):
        ps = [r["points"][i] for r in runs]
        base = [r["base"]["rss"] for r in runs]
        out.append({
            "count": p0["count"],
            "host_rss": med([p["host"]["rss"] for p in ps]),
            "delta": med([p["host"]["rss"] - b for p, b in zip(ps, base)]),
            "waiter_private": med([p["waiters_kib"]["private"] for p in ps]),
            "load_p50": med([p["load_p50_ns"] for p in ps]),
            "load": med([p["load_ns"] for p in ps]),
            "ready": med([p["ready_ns"] for p in ps]),
            "workers_rss": med([p["workers_kib"]["rss"] for p in ps]),
        })
    return out


def memory_summary(mem):
    out = {}
    for label, runs in mem.items():
        pts = median_points(runs)
        xs = [p["count"] for p in pts]
        slope, icpt, r2 = linear_fit(xs, [p["host_rss"] for p in pts])
        last = pts[-1]
        waiter = last["waiter_private"] / last["count"]
        out[label] = {"slope_kib": slope, "r2": r2, "waiter_kib": waiter, "per_worker_kib": slope + waiter}
    return out


def svg_chart(R):
    """Two panels of horizontal bars: cold start medians (ms) and steady p50 (µs, p99 as a tick)."""
    cold = {k: med(v) * 1000 for k, v in R["cold"].items() if not k.startswith("runner policy")}
    st = {k: steady_stats(v) for k, v in R["steady"].items()}
    steady = {k: (s["p50"] / 1000, s["p99"] / 1000) for k, s in st.items() if "64 KiB" not in k}

    def colour(k):
        if "reference" in k:
            return "#e08a2c"
        if "bubblewrap" in k:
            return "#5aa05a"
        if "direct" in k:
            return "#8c8c8c"
        if "library" in k:
            return "#7b5fc0"
        return "#3b78c4"

    W, label_w, bar_w, row, pad = 900, 270, 470, 20, 10
    parts = []
    y = 10

    def panel(title, rows, unit):
        nonlocal y
        parts.append(f'<text x="{pad}" y="{y + 14}" font-size="14" font-weight="bold">{esc(title)}</text>')
        y += 26
        # The reference package is an order of magnitude slower: its bar is cut at the axis end.
        scaled = [v for k, (v, t) in rows.items() if "reference" not in k] + \
                 [t for k, (v, t) in rows.items() if t and "reference" not in k]
        vmax = (max(scaled) if scaled else 1) * 1.02 or 1
        for k, (v, t) in rows.items():
            clipped = v > vmax
            w = max(1, min(v, vmax) / vmax * bar_w)
            parts.append(f'<text x="{label_w - 6}" y="{y + 14}" font-size="12" text-anchor="end">{esc(k)}</text>')
            parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{colour(k)}"/>')
            end = w
            if clipped:
                parts.append(f'<text x="{label_w + w - 4:.1f}" y="{y + 14}" font-size="12" fill="white" '
                             f'text-anchor="end">//</text>')
            if t and t <= vmax:
                tx = label_w + t / vmax * bar_w
                end = max(end, tx - label_w)
                parts.append(f'<line x1="{tx:.1f}" y1="{y + 2}" x2="{tx:.1f}" y2="{y + row - 2}" stroke="#222" stroke-width="1.5"/>')
            label = f"{v:.1f} {unit}" + (f" (p99 {t:.0f})" if t else "") + (" — off scale" if clipped else "")
            tx = label_w + end + 6
            if tx + len(label) * 6.4 > W:  # no room on the right: write it inside the bar
                parts.append(f'<text x="{label_w + 6}" y="{y + 14}" font-size="11" fill="white">{esc(label)}</text>')
            else:
                parts.append(f'<text x="{tx:.1f}" y="{y + 14}" font-size="11">{esc(label)}</text>')
            y += row
        y += 14

    panel("Cold start: load + first invoke (median ms, lower is better)",
          {k: (v, None) for k, v in sorted(cold.items(), key=lambda kv: kv[1])}, "ms")
    panel("Steady invoke round trip (p50 µs as bar, p99 as tick; lower is better)",
          dict(sorted(steady.items(), key=lambda kv: kv[1][0])), "µs")
    parts.append(f'<text x="{pad}" y="{y + 4}" font-size="11" fill="#555">grey: no runner · blue: ext-runner · '
                 f'purple: library · green: bubblewrap · orange: reference package. Generated by bench/bench.py.</text>')
    y += 14
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{y}" viewBox="0 0 {W} {y}" '
            f'font-family="DejaVu Sans, Helvetica, Arial, sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n'
            + "\n".join(parts) + "\n</svg>\n")


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --------------------------------------------------------------------------- main

def print_medians(R):
    """--only: per method, the median (cold: seconds) or p50 (steady: ns) and its ratio to the direct row."""
    for section, res in R.items():
        if not isinstance(res, dict):
            continue
        rows = {}
        for k, v in res.items():
            if isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v):
                rows[k] = med(v)
            elif isinstance(v, list) and v and isinstance(v[0], dict) and "samples_ns" in v[0]:
                rows[k] = steady_stats(v)["p50"]
        print(f"[{section}]")
        for k, m in rows.items():
            kind = k.split(" ")[0]
            base = next((rows[b] for b in rows if "direct" in b and b.split(" ")[0] == kind and
                         ("64 KiB" in b) == ("64 KiB" in k)), None)
            ratio = f"  {m / base:5.2f}x" if base else ""
            print(f"  {k:40s} {m:12.6g}{ratio}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="write the report here (Markdown); the SVG goes beside it")
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every section")
    ap.add_argument("--rounds", type=int, default=30, help="cold-start rounds")
    ap.add_argument("--invokes", type=int, default=5000, help="steady invokes per method (split over --blocks)")
    ap.add_argument("--blocks", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--conc-invokes", type=int, default=4000)
    ap.add_argument("--conc-rounds", type=int, default=3)
    ap.add_argument("--syscalls", type=int, default=200000)
    ap.add_argument("--seccomp-rounds", type=int, default=7)
    ap.add_argument("--counts", default="1,16,64,256", help="extension counts for the memory section (native)")
    ap.add_argument("--py-counts", default="1,16,64", help="the same with python workers")
    ap.add_argument("--mem-rounds", type=int, default=2)
    ap.add_argument("--hostcalls", type=int, default=1000)
    ap.add_argument("--hyperfine-runs", type=int, default=15)
    ap.add_argument("--no-layers", dest="layers", action="store_false", help="skip the one-layer-at-a-time cold rows")
    ap.add_argument("--no-micro", dest="micro", action="store_false",
                    help="skip `cargo bench --bench micro` (criterion; about 1 minute, more when it must compile)")
    ap.add_argument("--no-perf", action="store_true", help="skip the perf/strace profile")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install bubblewrap/hyperfine")
    ap.add_argument("--no-reference", action="store_true", help="do not create .venv-ref")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="run the steady section unpinned (default: all of it on CPU 0, see the report)")
    ap.add_argument("--note", help="a line to put at the top of the report")
    ap.add_argument("--only", help="comma-separated sections to run (cold, steady, ...); prints their medians; "
                                   "with --out, the cold and steady sections replace theirs in that existing "
                                   "report and nothing else in it changes")
    ap.add_argument("--from-json", help="re-render the report from a saved bench/out/results.json")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.invokes, a.blocks, a.conc_invokes, a.conc_rounds = 4, 1000, 4, 1000, 1
        a.syscalls, a.seccomp_rounds, a.mem_rounds, a.hostcalls, a.hyperfine_runs = 50000, 1, 1, 200, 3
        a.counts, a.py_counts, a.micro = "1,16,64", "1,8", False
    a.counts = [int(c) for c in a.counts.split(",") if c]
    a.py_counts = [int(c) for c in a.py_counts.split(",") if c]

    started = time.time()
    if a.from_json:  # re-render a saved run
        with open(a.from_json) as f:
            saved = json.load(f)
        R, info, ctx = saved["results"], saved["info"], saved["context"]
        for k, v in saved["args"].items():
            if k not in ("out", "from_json", "note"):
                setattr(a, k, v)
        NOTES.extend(saved.get("notes", []))
    else:
        setup(a)
        if a.pin and have("taskset"):
            PIN.extend(["taskset", "-c", "0"])
        py = os.path.realpath(sys.executable)
        ctx = {"load_before": loadavg(), "busy_before": busy_processes()}
        snap = cpu_snapshot()
        info = machine(py)
        fx = Fixtures(py, max(a.counts + [64]), max(a.py_counts + [8]))
        R = {}
        sections = [
            ("cold", lambda: cold_section(a, fx)),
            ("steady", lambda: steady_section(a, fx)),
            ("concurrency", lambda: concurrency_section(a, fx)),
            ("seccomp", lambda: seccomp_section(a, fx)),
            ("memory", lambda: memory_section(a, fx)),
            ("hostcall", lambda: hostcall_section(a, fx)),
            ("hyperfine", lambda: hyperfine_section(a, fx)),
        ]
        if a.micro:
            sections.append(("micro", lambda: micro_section(a)))
        if not a.no_perf:
            sections.append(("profile", lambda: profile_section(a, fx)))
        if a.only:
            wanted = a.only.split(",")
            sections = [(n, fn) for n, fn in sections if n in wanted]
        try:
            for name, fn in sections:
                t = time.time()
                R[name] = fn()
                log(f"   {name}: {time.time() - t:.0f} s")
        finally:
            fx.close()
        if a.only:
            print_medians(R)
            if a.out:
                other, steal = other_load(snap, cpu_snapshot())
                ctx.update(load_after=loadavg(), other_cpu=other, steal=steal)
                splice(a, R, a.out, info, ctx)
            return
        other, steal = other_load(snap, cpu_snapshot())
        ctx.update(busy_after=busy_processes(), load_after=loadavg(), seconds=time.time() - started,
                   other_cpu=other, steal=steal)
        os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
        saved = os.path.join(HERE, "out", "results.json")
        with open(saved, "w") as f:
            json.dump({"results": R, "info": info, "context": ctx, "notes": NOTES, "args": vars(a)}, f)
        log(f"raw results: {saved} (re-render with --from-json)")
    svg_name = "benchmarks.svg"
    if a.out:
        svg_name = os.path.splitext(os.path.basename(a.out))[0] + ".svg"
    text, targets = report(a, info, ctx, R, svg_name)
    text += f"\nWhole run: {ctx['seconds']:.0f} s (setup and build included).\n"
    if a.out:
        # The sections of bench/warm.py (warm starts) and bench/seccomp.py
        # (the seccomp backends, and the decision written from its figures) and
        # bench/lend.py (lending a workspace with ACL entries)
        # are kept as they were, and so is the hand-written comparison of
        # builds (marked builds).
        try:
            old = open(a.out).read()
            for name in ("warm", "seccomp", "seccomp-decision", "seccomp-notify", "lend", "builds"):
                b, e = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
                if b in old and e in old:
                    text = text.rstrip("\n") + "\n\n" + old[old.index(b):old.index(e) + len(e)] + "\n"
        except FileNotFoundError:
            pass
        with open(a.out, "w") as f:
            f.write(text)
        with open(os.path.join(os.path.dirname(os.path.abspath(a.out)), svg_name), "w") as f:
            f.write(svg_chart(R))
        log(f"wrote {a.out} and {svg_name}")
    else:
        print(text)
    for t, ok, m in targets:
        log(f"{'met   ' if ok else 'MISSED'} {t}: {m}")


if __name__ == "__main__":
    main()
