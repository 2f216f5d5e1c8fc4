"""Merged pages with a mix of extensions (docs/warm.md, "Merged pages"): N
library extensions of 4 kinds (different imports and state), spread evenly,
at N = 32 and 128; bare `python3 extension.py` against one library host
through a server and through a server with --merge-pages (KSM on and fast
for the run, put back after: root only). Prints the PSS per worker and the
marginal cost per extension. Needs the release build bench/warm.py uses.

    nice python3 bench/warm_mix.py [PYTHON]
"""
import os, sys, json, time, shutil, subprocess, tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import warm
PY = sys.argv[1] if len(sys.argv) > 1 else (shutil.which("python3", path="/usr/bin:/bin") or "python3")
KINDS = {
 "hello": None,
 "sql": "import csv, io, sqlite3\ndb = sqlite3.connect(':memory:')\ndb.execute('create table t(x)')\ndb.executemany('insert into t values (?)', [(i,) for i in range(500)])\ndef greet(a):\n    return db.execute('select sum(x) from t').fetchone()[0]\n",
 "hash": "import hashlib, base64, urllib.parse, uuid\ndef greet(a):\n    return base64.b64encode(hashlib.sha256(urllib.parse.quote(a['name']).encode()).digest()).decode() + str(uuid.uuid4())\n",
 "stats": "import statistics, fractions, decimal, heapq, bisect\ndata = [fractions.Fraction(i, 7) for i in range(300)]\ndef greet(a):\n    return str(statistics.mean(data)) + str(decimal.Decimal(1) / 7)\n",
}
TAIL = "from nodus_extension.worker import register_tool, run_loop\nregister_tool('example.greet', greet)\nregister_tool('example.count_words', lambda a: 0)\nrun_loop()\n"
def make(tmp, n):
    dirs = []
    for i in range(n):
        kind = list(KINDS)[i % 4]
        d = os.path.join(tmp, f"x{n}", f"e{i}"); os.makedirs(d)
        if KINDS[kind] is None:
            shutil.copy(os.path.join(warm.HELLO, "extension.py"), d)
        else:
            open(os.path.join(d, "extension.py"), "w").write(KINDS[kind] + TAIL)
        m = json.load(open(os.path.join(warm.HELLO, "nodus-extension.json"))); m["name"] = f"example.{kind}{i}"
        json.dump(m, open(os.path.join(d, "nodus-extension.json"), "w"))
        dirs.append(d)
    return dirs
tmp = tempfile.mkdtemp(); os.chmod(tmp, 0o700)
socks = {}
servers = []
for way, extra in (("warm", []), ("merged", ["--merge-pages"])):
    s = tmp + f"/{way}/s.sock"
    servers.append(subprocess.Popen([warm.RUNNER, "serve", "--socket", s, "--python", PY, "--until-stdin-closes"] + extra, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL))
    socks[way] = (s, servers[-1])
while not all(os.path.exists(s) for s, _ in socks.values()): time.sleep(0.01)
ksm = warm.Ksm.fast()
if ksm.why_not:
    sys.exit(f"warm_mix: {ksm.why_not}")
env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": warm.SHIM, "PYTHONDONTWRITEBYTECODE": "1", "HOME": tmp, "TMPDIR": tmp}
res = {}
try:
    for n in (32, 128):
        dirs = make(tmp, n)
        row = {}
        procs = [warm.start_idle([PY, "-s", "-B", os.path.join(d, "extension.py")], env) for d in dirs]
        time.sleep(1)
        row["bare"] = sum(warm.pss_kib(p) for p in warm.tree([q.pid for q in procs])) / n
        warm.stop_all(procs)
        for way in ("warm", "merged"):
            s, srv = socks[way]
            procs = [warm.start_library(dirs, PY, s)]
            time.sleep(1)
            if way == "merged":
                print(ksm.settle())
            row[way] = sum(warm.pss_kib(p) for p in warm.tree([procs[0].pid]) | warm.tree([srv.pid])) / n
            warm.stop_all(procs)
        res[n] = row
        print(n, {k: round(v) for k, v in row.items()})
finally:
    ksm.restore()
lo, hi = 32, 128
for way in ("bare", "warm", "merged"):
    m = (res[hi][way] * hi - res[lo][way] * lo) / (hi - lo)
    res.setdefault("marginal", {})[way] = m
b = res["marginal"]["bare"]
print("marginal", {k: f"{v:.0f} ({v / b:.2f}x)" for k, v in res["marginal"].items()})
for s in servers: s.stdin.close(); s.wait()
