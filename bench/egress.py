#!/usr/bin/env python3
"""What the egress proxy adds: the same worker measures the same transfers
once with `network.outbound` alone (direct TCP on the host's network) and once
with an operator egress allowlist (its own network namespace, everything
through the runner's proxy).

Measured inside the worker, against servers this script runs on loopback:
- round trip of 64 bytes on an open connection (a CONNECT tunnel vs a direct
  socket): the relay's per-message cost;
- a fresh HTTP GET of a small body per request (urllib; through the proxy:
  plain-HTTP forwarding, which includes the proxy's connect upstream);
- a fresh CONNECT tunnel per request (connect + tunnel set-up + one round trip);
- bulk throughput: 256 MiB read from a stream server (tunnel vs direct).

    python3 bench/egress.py [--runner target/release/ext-runner] [--python python3] [--quick]

Prints a markdown table and writes bench/out/egress.json.
"""
from __future__ import annotations

import argparse
import http.server
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

ROOT = pathlib.Path(__file__).resolve().parents[1]

WORKER = r'''
from nodus_extension.worker import register_tool, run_loop
import os, socket, statistics, time, urllib.request

PROXY = os.environ.get("HTTPS_PROXY")

def tunnel(host, port):
    """A connected socket to host:port: through a CONNECT tunnel when the proxy is set."""
    if not PROXY:
        return socket.create_connection(("127.0.0.1", port), 5)
    h, p = PROXY[len("http://"):].rsplit(":", 1)
    s = socket.create_connection((h, int(p)), 5)
    s.sendall(b"CONNECT %s:%d HTTP/1.1\r\n\r\n" % (host.encode(), port))
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    return s

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]

def run(a):
    n = a["n"]
    out = {}
    s = tunnel("echo.test", a["echo"])
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"x" * 64
    times = []
    for _ in range(n["rtt"]):
        t = time.perf_counter()
        s.sendall(msg)
        got = 0
        while got < 64:
            got += len(s.recv(64 - got))
        times.append(time.perf_counter() - t)
    s.close()
    out["rtt_us"] = {"median": statistics.median(times) * 1e6, "p99": pct(times, 0.99) * 1e6}
    opener = urllib.request.build_opener() if PROXY else urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = "http://web.test:%d/small" % a["web"] if PROXY else "http://127.0.0.1:%d/small" % a["web"]
    times = []
    for _ in range(n["get"]):
        t = time.perf_counter()
        assert opener.open(url, timeout=5).read() == b"ok"
        times.append(time.perf_counter() - t)
    out["get_ms"] = {"median": statistics.median(times) * 1e3, "p99": pct(times, 0.99) * 1e3}
    times = []
    for _ in range(n["tunnel"]):
        t = time.perf_counter()
        c = tunnel("echo.test", a["echo"])
        c.sendall(msg)
        got = 0
        while got < 64:
            got += len(c.recv(64 - got))
        c.close()
        times.append(time.perf_counter() - t)
    out["connect_ms"] = {"median": statistics.median(times) * 1e3, "p99": pct(times, 0.99) * 1e3}
    s = tunnel("bulk.test", a["bulk"])
    total, want = 0, a["bulk_bytes"]
    buf = bytearray(256 * 1024)
    t = time.perf_counter()
    while total < want:
        k = s.recv_into(buf)
        if not k:
            break
        total += k
    dt = time.perf_counter() - t
    s.close()
    out["bulk_mib_s"] = total / dt / (1 << 20)
    out["bulk_bytes"] = total
    return out

register_tool("bench.egress", run)
run_loop()
'''

MANIFEST = {
    "name": "bench.egress",
    "version": "1",
    "description": "egress proxy benchmark",
    "capabilities": ["network.outbound", "tool.invoke"],
    "surfaces": {"tools": [{"name": "bench.egress", "description": "measure"}]},
}


def serve_echo() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)

    def one(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while data := c.recv(65536):
                c.sendall(data)
        except OSError:
            pass
        c.close()

    def loop():
        while True:
            c, _ = s.accept()
            threading.Thread(target=one, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return s.getsockname()[1]


def serve_bulk(nbytes: int) -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    chunk = b"\0" * (256 * 1024)

    def one(c):
        sent = 0
        try:
            while sent < nbytes:
                c.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        c.close()

    def loop():
        while True:
            c, _ = s.accept()
            threading.Thread(target=one, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return s.getsockname()[1]


def serve_web() -> int:
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runner", default=str(ROOT / "target/release/ext-runner"))
    ap.add_argument("--python", default=shutil.which("python3"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each mode; the best median is kept")
    args = ap.parse_args()
    bulk_bytes = (32 if args.quick else 256) << 20
    n = {"rtt": 500, "get": 50, "tunnel": 50} if args.quick else {"rtt": 5000, "get": 300, "tunnel": 300}
    echo, web, bulk = serve_echo(), serve_web(), serve_bulk(bulk_bytes)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="egress-bench-"))
    ext = tmp / "ext"
    ext.mkdir()
    (ext / "nodus-extension.json").write_text(json.dumps(MANIFEST))
    (ext / "extension.py").write_text(WORKER)
    policy = tmp / "policy.json"
    names = {"echo.test": echo, "web.test": web, "bulk.test": bulk}
    policy.write_text(json.dumps({"egress": {
        "allow": [f"{h}:{p}" for h, p in names.items()],
        "resolve": {h: "127.0.0.1" for h in names},
        "limits": {"bytes_per_connection": 1 << 40}}}))
    call = json.dumps({"echo": echo, "web": web, "bulk": bulk, "n": n, "bulk_bytes": bulk_bytes})
    results: dict[str, list[dict]] = {"direct": [], "proxy": []}
    for _ in range(args.rounds):
        for mode in ("direct", "proxy"):
            argv = [args.runner, "invoke", str(ext), "bench.egress", call, "--python", args.python,
                    "--timeout", "300"]
            if mode == "proxy":
                argv += ["--policy", str(policy)]
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{mode}: {done.stderr.strip()}")
            results[mode].append(json.loads(done.stdout))
    shutil.rmtree(tmp, ignore_errors=True)

    def best(mode, key, field=None, high=False):
        vals = [r[key][field] if field else r[key] for r in results[mode]]
        return max(vals) if high else min(vals)

    rows = [
        ("round trip, 64 B on an open connection (µs, median)", "rtt_us", "median", False),
        ("round trip, 64 B (µs, p99)", "rtt_us", "p99", False),
        ("fresh connection + 64 B round trip (ms, median)", "connect_ms", "median", False),
        ("HTTP GET on a fresh connection, urllib (ms, median)", "get_ms", "median", False),
        ("HTTP GET (ms, p99)", "get_ms", "p99", False),
        ("bulk download (MiB/s)", "bulk_mib_s", None, True),
    ]
    lines = ["| measure | direct | through the proxy | added |", "|---|---|---|---|"]
    table = {}
    for label, key, field, high in rows:
        d, p = best("direct", key, field, high), best("proxy", key, field, high)
        added = f"{(p / d - 1) * 100:+.0f}%" if high else f"{p - d:+.2f}"
        lines.append(f"| {label} | {d:.2f} | {p:.2f} | {added} |")
        table[label] = {"direct": d, "proxy": p}
    print("\n".join(lines))
    out = ROOT / "bench/out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "egress.json").write_text(json.dumps({"n": n, "bulk_bytes": bulk_bytes, "table": table,
                                                 "raw": results}, indent=1))


if __name__ == "__main__":
    main()
