"""nodus-extension-sandbox against the real reference host and nodus-lang runtime.

Every confinement test has an unsandboxed control: the same script with the
reference's own `python extension.py` runner does leak (reads the secret,
reaches the listener), so a pass here means ext-runner stopped it, not that the
extension failed for another reason.
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import textwrap
import threading
import time

import pytest

import nodus_extension_sandbox as sandbox
from nodus import NodusRuntime
from nodus_extension import (
    CapabilityError,
    ExtensionRegistry,
    SandboxError,
    TimeoutError as ExtTimeoutError,
    attach_to_runtime,
)
from nodus_extension.runner.subprocess import SubprocessRunner as _AtImport

ROOT = pathlib.Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello"
REFERENCE_RUNNER = _AtImport  # imported before any install(): the reference's class


def make_extension(parent: pathlib.Path, name: str, capabilities: list[str], tools: dict[str, str],
                   prelude: str = "") -> pathlib.Path:
    """An extension folder: tools maps tool name -> body of `def handler(args)`."""
    d = parent / name
    d.mkdir()
    manifest = {
        "name": f"t.{name}",
        "version": "1.0.0",
        "description": f"test extension {name}",
        "capabilities": capabilities,
        "surfaces": {"tools": [{"name": f"t.{name}.{t}", "description": t} for t in tools]},
    }
    (d / "nodus-extension.json").write_text(json.dumps(manifest))
    src = ["import json, os, socket, sys, time", prelude,
           "from nodus_extension.worker import register_tool, run_loop"]
    for tool, body in tools.items():
        src.append(f"def _{tool}(args):\n" + textwrap.indent(textwrap.dedent(body), "    "))
        src.append(f"register_tool('t.{name}.{tool}', _{tool})")
    src.append("run_loop()")
    (d / "extension.py").write_text("\n".join(src) + "\n")
    return d


def nodus_str(s: str) -> str:
    """A Nodus string literal (JSON escapes are accepted)."""
    return json.dumps(s)


def run_script(registry: ExtensionRegistry, body: str) -> dict:
    runtime = NodusRuntime(timeout_ms=None)
    attach_to_runtime(runtime, registry)
    return runtime.run_source('import "nodus-extension"\n' + body)


@pytest.fixture
def installed():
    """install() with the given options for one test; uninstall() after."""
    def _install(**options):
        sandbox.install(**options)
    sandbox.reset_stats()
    yield _install
    sandbox.uninstall()


@pytest.fixture
def registry():
    reg = ExtensionRegistry()
    yield reg
    for info in reg.list():
        try:
            reg.unload(info["name"])
        except Exception:
            pass


def descendants(pid: int) -> dict[int, str]:
    """{pid: cmdline} of every process below *pid*."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        try:
            out[p] = pathlib.Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        todo.extend(children.get(p, []))
    return out


def alive(pid: int) -> bool:
    """In /proc and not a zombie."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --- a Nodus script reaches a sandboxed extension ----------------------------


def test_nodus_script_invokes_sandboxed_extension(installed, registry):
    installed()
    registry.load(str(HELLO))
    runner = registry.lookup("example.hello")._runner
    assert isinstance(runner, sandbox.ExtRunnerRunner)
    # The process the host talks to is ext-runner, and the worker runs below it.
    assert os.path.realpath(f"/proc/{runner.pid}/exe") == os.path.realpath(os.environ["NODUS_EXT_RUNNER"])
    result = run_script(registry, f'''
let r = ext_invoke("example.hello", "example.greet", {nodus_str(json.dumps({"name": "Ada"}))})
print(r)
let n = ext_invoke("example.hello", "example.count_words", {nodus_str(json.dumps({"text": "one two three"}))})
print(n)
''')
    assert result["ok"], result["errors"]
    assert result["stdout"].splitlines() == ['"Hello, Ada!"', "3"]
    assert any("extension.py" in c for c in descendants(runner.pid).values())
    counts = sandbox.stats()
    assert counts["workers_started"] == 1 and counts["invokes_answered"] == 2


def test_ext_load_from_a_script_is_sandboxed(installed, registry):
    installed()
    result = run_script(registry, f'''
let name = ext_load({nodus_str(str(HELLO))})
print(ext_invoke(name, "example.greet", {nodus_str(json.dumps({"name": "Grace"}))}))
''')
    assert result["ok"], result["errors"]
    assert '"Hello, Grace!"' in result["stdout"]
    assert isinstance(registry.lookup("example.hello")._runner, sandbox.ExtRunnerRunner)
    assert sandbox.stats()["workers_started"] == 1


# --- what a capability does not grant stays out of reach ---------------------


READ_TOOL = """
try:
    with open(args["path"]) as f:
        return "READ: " + f.read()
except OSError as exc:
    return "DENIED: " + repr(exc)
"""
ENV_TOOL = """return "ENV: " + repr(os.environ.get("NODUS_SANDBOX_TEST_SECRET"))"""


@pytest.fixture
def secret(tmp_path, monkeypatch):
    token = f"s3cr3t-{os.getpid()}-{time.monotonic_ns()}"
    secret_dir = tmp_path / "host-secrets"
    secret_dir.mkdir()
    path = secret_dir / "api-key.txt"
    path.write_text(token)
    monkeypatch.setenv("NODUS_SANDBOX_TEST_SECRET", token)
    return token, path


def _thief_script(secret_path, allowed_path) -> str:
    return f'''
print(ext_invoke("t.thief", "t.thief.read", {nodus_str(json.dumps({"path": str(secret_path)}))}))
print(ext_invoke("t.thief", "t.thief.read", {nodus_str(json.dumps({"path": str(allowed_path)}))}))
print(ext_invoke("t.thief", "t.thief.env", "{{}}"))
'''


def test_sandboxed_extension_cannot_read_host_secret(installed, registry, tmp_path, secret):
    token, secret_path = secret
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    allowed = workspace / "notes.txt"
    allowed.write_text("workspace notes")
    ext = make_extension(tmp_path, "thief", ["tool.invoke", "filesystem.read"],
                         {"read": READ_TOOL, "env": ENV_TOOL})
    body = f'let name = ext_load({nodus_str(str(ext))})\n' + _thief_script(secret_path, allowed)

    # Control: the reference's own runner (python extension.py) leaks both.
    control = run_script(registry, body)
    assert control["ok"], control["errors"]
    assert token in control["stdout"], "control run should read the secret"
    assert isinstance(registry.lookup("t.thief")._runner, REFERENCE_RUNNER)
    registry.unload("t.thief")

    installed(workspace=str(workspace))
    result = run_script(registry, body)
    assert result["ok"], result["errors"]
    out = result["stdout"]
    assert token not in out and token not in json.dumps(result)
    lines = out.splitlines()
    # Not in the worker's private root (ENOENT), or refused by Landlock where it has none.
    assert "DENIED" in lines[0] and any(
        e in lines[0] for e in ("PermissionError", "Errno 13", "FileNotFoundError")), lines[0]
    assert "READ: workspace notes" in lines[1]  # filesystem.read grants the workspace, and only it
    assert "ENV: None" in lines[2]  # the host's environment does not leak in
    assert isinstance(registry.lookup("t.thief")._runner, sandbox.ExtRunnerRunner)


CONNECT_TOOL = """
try:
    s = socket.create_connection(("127.0.0.1", args["port"]), timeout=3)
    s.sendall(b"LEAKED " + args["msg"].encode())
    s.close()
    return "CONNECTED"
except OSError as exc:
    return "DENIED: " + repr(exc)
"""


class Listener:
    """A loopback TCP listener that records every connection and its bytes."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            conn.settimeout(2)
            data = b""
            try:
                while chunk := conn.recv(4096):
                    data += chunk
            except OSError:
                pass
            conn.close()
            self.received.append(data)

    def close(self, settle: float = 0.5):
        time.sleep(settle)
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _connect_script(port: int, msg: str, ext: pathlib.Path) -> str:
    return f'''
let name = ext_load({nodus_str(str(ext))})
print(ext_invoke(name, "t.{ext.name}.connect", {nodus_str(json.dumps({"port": port, "msg": msg}))}))
'''


def test_sandboxed_extension_cannot_reach_loopback_listener(installed, registry, tmp_path):
    ext = make_extension(tmp_path, "caller", ["tool.invoke"], {"connect": CONNECT_TOOL})

    control_listener = Listener()
    control = run_script(registry, _connect_script(control_listener.port, "control", ext))
    registry.unload("t.caller")
    control_listener.close()
    assert control["ok"], control["errors"]
    assert "CONNECTED" in control["stdout"]
    assert control_listener.received == [b"LEAKED control"], "control run should reach the listener"

    installed()
    listener = Listener()
    try:
        result = run_script(registry, _connect_script(listener.port, "sandboxed", ext))
    finally:
        listener.close()
    assert result["ok"], result["errors"]
    assert "DENIED" in result["stdout"], result["stdout"]
    assert listener.received == []  # no connection, no byte


def test_network_outbound_does_reach_the_listener(installed, registry, tmp_path):
    """The denial above comes from the capability: declaring it opens TCP."""
    ext = make_extension(tmp_path, "netok", ["tool.invoke", "network.outbound"], {"connect": CONNECT_TOOL})
    installed()
    listener = Listener()
    try:
        result = run_script(registry, _connect_script(listener.port, "granted", ext))
    finally:
        listener.close()
    assert result["ok"], result["errors"]
    assert "CONNECTED" in result["stdout"], result["stdout"]
    assert listener.received == [b"LEAKED granted"]


FETCH_TOOL = """
import urllib.request, urllib.error
try:
    return "GOT " + urllib.request.urlopen(args["url"], timeout=5).read().decode()
except urllib.error.HTTPError as exc:
    return "REFUSED %d %s" % (exc.code, exc.reason)
"""


class WebServer:
    """A loopback HTTP server that answers 'hello' and records request paths."""

    def __init__(self):
        import http.server

        paths = self.paths = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "5")
                self.end_headers()
                self.wfile.write(b"hello")

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_egress_allowlist_through_the_adapter(installed, registry, tmp_path):
    """An operator egress section, through install(policy=...): the allowed
    host answers through the runner's proxy, another host is refused with its
    reason, and a raw connection to a loopback listener (which, without the
    egress section, network.outbound reaches: see the test above) gets nothing."""
    web, listener = WebServer(), Listener()
    ext = make_extension(tmp_path, "egress", ["tool.invoke", "network.outbound"],
                         {"fetch": FETCH_TOOL, "connect": CONNECT_TOOL})
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"egress": {"allow": [f"api.test:{web.port}"],
                                             "resolve": {"api.test": "127.0.0.1"}}}))
    installed(policy=str(policy))
    try:
        registry.load(str(ext))
        ok = registry.invoke("t.egress", "t.egress.fetch", {"url": f"http://api.test:{web.port}/allowed"})
        other = registry.invoke("t.egress", "t.egress.fetch", {"url": f"http://other.test:{web.port}/x"})
        raw = registry.invoke("t.egress", "t.egress.connect", {"port": listener.port, "msg": "egress"})
    finally:
        listener.close()
        web.close()
    assert ok == "GOT hello"
    assert other.startswith("REFUSED 403 egress denied: other.test:") and "not in the egress allowlist" in other
    assert raw.startswith("DENIED"), raw
    assert web.paths == ["/allowed"]
    assert listener.received == []


# --- a timeout kills the worker ---------------------------------------------


def test_timeout_in_nodus_call_kills_worker(installed, registry, tmp_path):
    ext = make_extension(tmp_path, "sleeper", ["tool.invoke"], {
        "ready": 'return "ready"',
        "hang": "time.sleep(120)\nreturn 'woke'",
    })
    installed()
    # The timeout covers the worker's start too: 3 s leaves a loaded CI machine
    # room to start it (about 1.5 s at load 11), and the hang still times out.
    registry.load(str(ext), timeout_s=3.0)
    runner = registry.lookup("t.sleeper")._runner
    runtime = NodusRuntime(timeout_ms=None)
    attach_to_runtime(runtime, registry)

    first = runtime.run_source('import "nodus-extension"\nprint(ext_invoke("t.sleeper", "t.sleeper.ready", "{}"))\n')
    assert first["ok"] and '"ready"' in first["stdout"], first
    below = descendants(runner.pid)
    workers = [p for p, cmd in below.items() if "extension.py" in cmd]
    assert workers, below
    runner_pid = runner.pid

    started = time.monotonic()
    result = runtime.run_source('import "nodus-extension"\nprint(ext_invoke("t.sleeper", "t.sleeper.hang", "{}"))\n')
    elapsed = time.monotonic() - started
    assert not result["ok"]
    # Nodus reports host-function exceptions as runtime errors with their message.
    assert "extension invoke timed out, tool='t.sleeper.hang', after 3.0s" in result["errors"][0]["message"], result["errors"]
    assert elapsed < 10, elapsed

    deadline = time.monotonic() + 5
    while any(alive(p) for p in [runner_pid, *below]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in below), {p: below[p] for p in below if alive(p)}
    for p in workers:
        assert not os.path.exists(f"/proc/{p}"), f"worker {p} still in /proc"
    assert not alive(runner_pid)
    assert sandbox.stats()["timeouts"] == 1

    # The host keeps working: the next call starts a fresh worker.
    again = runtime.run_source('import "nodus-extension"\nprint(ext_invoke("t.sleeper", "t.sleeper.ready", "{}"))\n')
    assert again["ok"] and '"ready"' in again["stdout"], again
    assert sandbox.stats()["restarts"] == 1 and runner.pid != runner_pid


# --- failures keep the reference's classes, with reasons --------------------


def test_capability_refused_by_operator_policy_is_capability_error_at_load(installed, registry, tmp_path):
    ext = make_extension(tmp_path, "wants_net", ["tool.invoke", "network.outbound"], {"x": "return 1"})
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"trust_classes": {"dev": ["tool.invoke"]}}))
    installed(policy=str(policy))
    with pytest.raises(CapabilityError) as info:
        registry.load(str(ext))
    assert info.value.capability == "network.outbound"
    assert info.value.extension == "t.wants_net"
    assert "trust class 'dev'" in str(info.value)
    assert len(registry) == 0
    assert sandbox.stats()["workers_started"] == 0


def test_worker_crash_is_sandbox_error_with_exit_and_stderr(installed, registry, tmp_path):
    ext = make_extension(tmp_path, "crasher", ["tool.invoke"], {
        "die": 'sys.stderr.write("about to die: " + "x" * 200000 + " END\\n"); sys.stderr.flush(); os._exit(3)',
    })
    installed()
    registry.load(str(ext))
    started = time.monotonic()
    with pytest.raises(SandboxError) as info:
        registry.invoke("t.crasher", "t.crasher.die", {})
    assert time.monotonic() - started < 5
    msg = str(info.value)
    assert msg.startswith("extension subprocess closed stdout unexpectedly")
    assert "exited with status 3" in msg and "END" in msg
    assert info.value.runner_returncode == 6
    # Later invokes say why the worker is gone.
    with pytest.raises(SandboxError, match="not running.*exited with status 3"):
        registry.invoke("t.crasher", "t.crasher.die", {})


def test_missing_binary_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("NODUS_EXT_RUNNER", str(tmp_path / "no-such-ext-runner"))
    with pytest.raises(sandbox.ExtRunnerNotFound, match="NODUS_EXT_RUNNER"):
        sandbox.install()
    assert not sandbox.is_installed()
    monkeypatch.delenv("NODUS_EXT_RUNNER")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxError, match="ext-runner not found.*PATH"):
        sandbox.find_ext_runner()


def test_explicit_runner_without_install(registry, tmp_path):
    from nodus_extension.manifest import load_manifest

    assert not sandbox.is_installed()
    runner = sandbox.ExtRunnerRunner(str(HELLO), load_manifest(str(HELLO)), timeout_s=5)
    runner.start()
    try:
        assert runner.is_alive()
        assert runner.invoke("example.greet", {"name": "Lin"}) == "Hello, Lin!"
        assert runner.policy["extension"] == "example.hello"  # `ext-runner policy --json` of the start
    finally:
        runner.stop()
    assert not runner.is_alive()


def test_uninstall_restores_the_reference(installed, registry):
    import nodus_extension.host as host_mod
    import nodus_extension.runner.subprocess as sub_mod

    installed()
    assert host_mod.SubprocessRunner is sandbox.ExtRunnerRunner
    assert sub_mod.SubprocessRunner is sandbox.ExtRunnerRunner
    sandbox.uninstall()
    assert host_mod.SubprocessRunner is REFERENCE_RUNNER
    assert sub_mod.SubprocessRunner is REFERENCE_RUNNER
    registry.load(str(HELLO))
    assert type(registry.lookup("example.hello")._runner) is REFERENCE_RUNNER
    assert sandbox.stats()["workers_started"] == 0


# --- through a fork server (`install(server=...)`) ---------------------------


@pytest.fixture
def fork_server():
    """`ext-runner serve` on a socket of its own (a short path: AF_UNIX),
    with this interpreter; stopped after the test."""
    import subprocess
    import sys
    import tempfile

    folder = tempfile.mkdtemp(prefix="nx-srv-")
    sock = os.path.join(folder, "fork", "s.sock")
    proc = subprocess.Popen([os.environ["NODUS_EXT_RUNNER"], "serve", "--socket", sock,
                             "--python", os.path.realpath(sys.executable)],
                            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not os.path.exists(sock):
        assert proc.poll() is None and time.monotonic() < deadline, "the fork server did not listen"
        time.sleep(0.02)
    yield proc, sock
    proc.kill()
    proc.wait()


def test_through_a_fork_server_the_worker_is_warm_and_the_host_holds_ext_relay(installed, registry,
                                                                               fork_server, tmp_path):
    server, sock = fork_server
    installed(server=sock)
    registry.load(str(HELLO))
    runner = registry.lookup("example.hello")._runner
    assert registry.invoke("example.hello", "example.greet", {"name": "Ada"}) == "Hello, Ada!"
    # The process the host talks to is ext-relay (ext-runner exec'd it once
    # the server's worker was started); the worker is the server's, below it.
    exe = os.path.realpath(f"/proc/{runner.pid}/exe")
    assert os.path.basename(exe) == "ext-relay", exe
    assert not any("extension.py" in c or "boot.py" in c for c in descendants(runner.pid).values())
    assert any("python" in c for c in descendants(server.pid).values())
    # A worker that dies is the reference's SandboxError, with ext-runner's exit code.
    ext = make_extension(tmp_path, "crasher", ["tool.invoke"], {"die": "os._exit(3)"})
    registry.load(str(ext))
    with pytest.raises(SandboxError) as info:
        registry.invoke("t.crasher", "t.crasher.die", {})
    assert "exited with status 3" in str(info.value)
    assert info.value.runner_returncode == 6


def test_through_a_fork_server_its_policy_decides_and_a_policy_of_ours_is_refused(installed, registry,
                                                                                  fork_server, tmp_path):
    """With a server the worker's policy is the server's: no preflight derives
    one of ours (runner.policy is None), and a policy option beside the server
    is refused at load instead of silently not being the worker's."""
    _, sock = fork_server
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"trust_classes": {"dev": []}}))  # example.hello is 'dev'
    # Control: cold, that policy refuses example.hello (tool.invoke) at load.
    installed(policy=str(strict))
    with pytest.raises(CapabilityError):
        registry.load(str(HELLO))
    sandbox.uninstall()
    # Beside a server: refused, nothing started.
    sandbox.install(server=sock, policy=str(strict))
    sandbox.reset_stats()
    with pytest.raises(SandboxError) as info:
        registry.load(str(HELLO))
    assert "belongs to the fork server" in str(info.value)
    assert sandbox.stats()["workers_started"] == 0
    sandbox.uninstall()
    # The server's policy alone: loaded, answered, no preflight of ours.
    sandbox.install(server=sock)
    sandbox.reset_stats()
    registry.load(str(HELLO))
    assert registry.invoke("example.hello", "example.greet", {"name": "Ada"}) == "Hello, Ada!"
    assert registry.lookup("example.hello")._runner.policy is None
    assert sandbox.stats()["preflights"] == 0
