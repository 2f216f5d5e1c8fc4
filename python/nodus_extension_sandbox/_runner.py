"""``ExtRunnerRunner``: the reference's ``SubprocessRunner`` with the worker
started as ``ext-runner run DIR`` instead of ``python extension.py``.

The pipes are the reference's (stdin/stdout/stderr piped, text mode, line
buffered), so the reference's ``invoke``, ``is_alive`` and its timeout loop
run unchanged on top. What is added:

- a preflight (``ext-runner policy DIR --json``, a few ms) so that a load the
  runner refuses fails in ``start()`` with its own class (ManifestError,
  AbiError, CapabilityError, SandboxError), as the Rust host does;
- stderr is drained (the reference never reads it), its tail kept for
  messages, so neither ext-runner nor the worker can block on a full pipe;
- when the worker's stdout closes, ext-runner's exit code and ``error:`` line
  become the reference's exception (a per-invoke timeout is a TimeoutError,
  not "closed stdout unexpectedly");
- after a timeout (ext-runner killed the worker) the next invoke starts a
  fresh worker, so a host keeps working as it did when the hung worker was
  left running;
- a tool that failed because ext-runner refused one of its host calls for a
  missing capability raises CapabilityError (not InvokeError): ext-runner
  marks such a response with ``"error_class": "CapabilityError"`` (it removes
  any such field a worker writes itself, so the worker cannot choose it).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterable

from nodus_extension.errors import (
    CapabilityError,
    InvokeError,
    SandboxError,
    TimeoutError as ExtTimeoutError,
)
from nodus_extension.manifest import ExtensionManifest
from nodus_extension.runner.subprocess import SubprocessRunner as _ReferenceSubprocessRunner

from . import _stats
from ._errors import EXIT_TIMEOUT, ExtRunnerNotFound, describe_exit, runner_error

log = logging.getLogger("nodus_extension_sandbox")

ENV_BINARY = "NODUS_EXT_RUNNER"
#: ext-runner gives a worker 2 s to leave after shutdown; we wait a bit longer
#: for ext-runner itself before killing it.
_SHUTDOWN_WAIT_S = 2.0 + 1.5
_EXIT_WAIT_S = 5.0
_STDERR_TAIL = 64 * 1024

#: Options accepted by ``install()`` and by ``ExtRunnerRunner(...)``.
OPTION_DEFAULTS: dict[str, Any] = {
    "ext_runner": None,  # path to the binary; default: $NODUS_EXT_RUNNER, then PATH
    "python": None,  # worker interpreter; default: the host's sys.executable
    "policy": None,  # operator policy file (--policy)
    "workspace": None,  # folder filesystem.read/write grant (--workspace)
    "extra_args": (),  # more `ext-runner run` options, e.g. ("--max-line", "1048576")
    "preflight": True,  # check with `ext-runner policy` before starting
    "restart_after_timeout": True,  # next invoke after a timeout starts a fresh worker
    "timeout_grace_s": 1.0,  # extra wait for ext-runner's own timeout report
    "forward_stderr": False,  # copy worker/ext-runner stderr to sys.stderr
    # fork server socket (`ext-runner serve --socket PATH`): workers start warm,
    # confined by the server's own --python and --policy; default: $NODUS_EXT_SERVER
    "server": None,
}

_defaults: dict[str, Any] = {}  # set by install()


def set_defaults(options: dict[str, Any]) -> None:
    _defaults.clear()
    _defaults.update(options)


def check_options(options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(OPTION_DEFAULTS))
    if unknown:
        raise TypeError(
            f"unknown option(s) {', '.join(unknown)}; known: {', '.join(OPTION_DEFAULTS)}"
        )


def find_ext_runner(path: str | os.PathLike | None = None) -> str:
    """The ext-runner binary: *path*, else $NODUS_EXT_RUNNER, else `ext-runner` on PATH.

    Raises ExtRunnerNotFound (a SandboxError) with what to do.
    """
    if path is not None:
        where = f"ext_runner={os.fspath(path)!r}"
        candidate = os.fspath(path)
    elif os.environ.get(ENV_BINARY):
        candidate = os.environ[ENV_BINARY]
        where = f"${ENV_BINARY}={candidate!r}"
    else:
        found = shutil.which("ext-runner")
        if found is None:
            raise ExtRunnerNotFound(
                "ext-runner not found: set NODUS_EXT_RUNNER=/path/to/ext-runner or put "
                "ext-runner on PATH (build it with `cargo build --release`: "
                "target/release/ext-runner)"
            )
        return os.path.abspath(found)
    if os.sep not in candidate:
        resolved = shutil.which(candidate)
        if resolved:
            return os.path.abspath(resolved)
    if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
        raise ExtRunnerNotFound(
            f"ext-runner not found: {where} is not an executable file "
            f"(build it with `cargo build --release`: target/release/ext-runner)"
        )
    return os.path.abspath(candidate)


class _StderrDrain:
    """Reads a process's stderr until EOF, keeping the last bytes."""

    def __init__(self, proc: subprocess.Popen, forward: bool) -> None:
        self._stream = proc.stderr
        self._forward = forward
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"ext-runner-stderr-{proc.pid}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        raw = self._stream.buffer if hasattr(self._stream, "buffer") else self._stream
        try:
            while True:
                chunk = raw.read1(65536)
                if not chunk:
                    break
                with self._lock:
                    self._buf += chunk
                    if len(self._buf) > _STDERR_TAIL:
                        del self._buf[: len(self._buf) - _STDERR_TAIL]
                if self._forward:
                    try:
                        sys.stderr.write(chunk.decode("utf-8", "replace"))
                        sys.stderr.flush()
                    except Exception:
                        pass
                if b"warning: sandbox degraded" in chunk:
                    for line in chunk.decode("utf-8", "replace").splitlines():
                        if line.startswith("warning: sandbox degraded"):
                            log.warning("%s", line)
        except (OSError, ValueError):
            pass
        finally:
            try:
                self._stream.close()
            except Exception:
                pass

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        with self._lock:
            return self._buf.decode("utf-8", "replace")


class ExtRunnerRunner(_ReferenceSubprocessRunner):
    """Sandbox runner: the reference SubprocessRunner, started through ext-runner.

    Same constructor as the reference (``extension_dir, manifest, timeout_s,
    python_executable``) plus keyword options (see ``OPTION_DEFAULTS``);
    options not given fall back to those passed to ``install()``.
    """

    def __init__(
        self,
        extension_dir: str,
        manifest: ExtensionManifest,
        timeout_s: float = 30.0,
        python_executable: str | None = None,
        **options: Any,
    ) -> None:
        check_options(options)
        opts = {**OPTION_DEFAULTS, **_defaults, **options}
        python = python_executable or opts["python"] or sys.executable
        super().__init__(extension_dir, manifest, timeout_s=timeout_s, python_executable=python)
        self._opts = opts
        self.timeout_s = float(timeout_s)
        # The reference's wait gets a grace period: ext-runner kills the worker
        # at timeout_s and reports it; the Python-side wait only fires when
        # ext-runner itself failed to report.
        self._timeout_s = self.timeout_s + float(opts["timeout_grace_s"])
        self.policy: dict | None = None  # `ext-runner policy --json` of the last start
        self._binary: str | None = None
        self._drain: _StderrDrain | None = None
        self._ended: dict[int, tuple[int, str]] = {}  # pid -> (returncode, stderr)
        self._timed_out: set[int] = set()  # pids of runners that ended by a timeout
        self._life = threading.RLock()
        # The last response ext-runner marked with an error class (see _readline_with_timeout).
        self._marked: dict | None = None

    # -- command line -------------------------------------------------------

    @property
    def binary(self) -> str:
        if self._binary is None:
            self._binary = find_ext_runner(self._opts["ext_runner"])
        return self._binary

    def _runner_timeout(self) -> str:
        t = self.timeout_s
        if math.isnan(t) or t <= 0:
            t = 0.001  # the reference times out at once; so does the worker
        elif not math.isfinite(t) or t > 10 * 365 * 86400:
            t = 10 * 365 * 86400.0  # "never", in what ext-runner accepts
        return repr(float(t))

    def _server(self) -> str | None:
        return self._opts["server"] or os.environ.get("NODUS_EXT_SERVER") or None

    def _options_argv(self, subcommand: str) -> list[str]:
        # `policy` takes only what decides the confinement; `run` also how the
        # worker is driven, and the extra (run) options.
        server = self._server()
        if server is not None and subcommand == "run":
            # The server's interpreter and operator policy apply, not ours.
            argv = ["--server", os.path.abspath(os.fspath(server))]
        else:
            argv = ["--python", str(self._python)]
            if self._opts["policy"] is not None:
                argv += ["--policy", os.path.abspath(os.fspath(self._opts["policy"]))]
        if self._opts["workspace"] is not None:
            argv += ["--workspace", os.path.abspath(os.fspath(self._opts["workspace"]))]
        if subcommand == "run":
            argv += ["--timeout", self._runner_timeout()]
            extra: Iterable[str] = self._opts["extra_args"] or ()
            argv += [str(a) for a in extra]
        return argv

    def command(self, subcommand: str = "run") -> list[str]:
        """The ext-runner command line this runner starts (``run``) or checks with (``policy``)."""
        argv = [self.binary, subcommand, os.path.abspath(self._dir)]
        if subcommand == "policy":
            argv.append("--json")
        return argv + self._options_argv(subcommand)

    def _error(self, returncode: int, stderr: str, **kw: Any) -> Exception:
        return runner_error(
            returncode,
            stderr,
            manifest_path=str(Path(self._dir) / "nodus-extension.json"),
            abi_version=getattr(self._manifest, "abi_version", None),
            **kw,
        )

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        with self._life:
            if self._server() is not None:
                # The server derives the worker's policy from its own operator
                # policy: a policy of ours would not be the worker's (refused,
                # as ext-runner refuses --policy beside --server), and a
                # preflight here would derive one it never runs under. A
                # refusal of the server's is the first call's error.
                if self._opts["policy"] is not None:
                    raise SandboxError(
                        "the policy option belongs to the fork server (`ext-runner serve --policy FILE`), "
                        "which derives every worker's policy from its own: leave policy unset with server"
                    )
                self.policy = None
            elif self._opts["preflight"]:
                self._preflight()
            argv = self.command("run")
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=str(self._dir),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    bufsize=1,
                )
            except OSError as exc:
                raise SandboxError(f"failed to start ext-runner {self.binary}: {exc}") from exc
            self._proc = proc
            self._drain = _StderrDrain(proc, bool(self._opts["forward_stderr"]))
            _stats.bump("workers_started")

    def _preflight(self) -> None:
        argv = self.command("policy")
        try:
            done = subprocess.run(
                argv, cwd=str(self._dir), stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxError(f"ext-runner preflight failed ({argv[0]}): {exc}") from exc
        _stats.bump("preflights")
        if done.returncode != 0:
            _stats.bump("load_refusals")
            raise self._error(done.returncode, done.stderr)
        try:
            self.policy = json.loads(done.stdout)
        except ValueError:
            self.policy = None

    def stop(self) -> None:
        with self._life:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                try:
                    proc.stdin.write(json.dumps({"op": "shutdown"}) + "\n")
                    proc.stdin.flush()
                except (OSError, ValueError):
                    pass
                try:
                    proc.wait(timeout=_SHUTDOWN_WAIT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()  # the worker dies with it (parent-death signal, pid namespace)
                    proc.wait()
            self._close(proc)
            self._proc = None

    def _close(self, proc: subprocess.Popen) -> None:
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except Exception:
                pass
        if self._drain is not None:
            self._drain.join(1.0)

    def _ended_with(self, proc: subprocess.Popen) -> tuple[int, str]:
        """Waits for ext-runner to exit; its return code and stderr (cached per process)."""
        with self._life:
            if proc.pid in self._ended:
                return self._ended[proc.pid]
            try:
                rc = proc.wait(timeout=_EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
                log.warning("ext-runner (pid %d) did not exit after its worker's stdout closed; killed", proc.pid)
            if self._drain is not None:
                self._drain.join(2.0)
            stderr = self._drain.text() if self._drain is not None else ""
            self._ended[proc.pid] = (rc, stderr)
            if rc == EXIT_TIMEOUT:
                self._timed_out.add(proc.pid)
            return rc, stderr

    # -- invoke -------------------------------------------------------------

    def invoke(self, tool_name: str, args: dict[str, Any]) -> Any:
        with self._life:
            proc = self._proc
            if proc is not None and proc.poll() is not None:
                rc, stderr = self._ended_with(proc)
                if proc.pid in self._timed_out and self._opts["restart_after_timeout"]:
                    self._close(proc)
                    self._proc = None
                    self.start()
                    _stats.bump("restarts")
                else:
                    raise self._error(
                        rc, stderr, context="extension subprocess is not running",
                        tool_name=tool_name, timeout_s=self.timeout_s,
                    )
        proc = self._proc
        self._marked = None
        try:
            result = super().invoke(tool_name, args)
        except InvokeError as exc:
            marked, self._marked = self._marked, None
            if marked is not None and marked.get("error") == str(exc) and marked.get(
                "error_class"
            ) == "CapabilityError":
                cap = CapabilityError(marked.get("capability") or "?", marked.get("extension"))
                cap.args = (str(exc),)  # the worker's message, which names the capability
                cap.tool_name = tool_name  # type: ignore[attr-defined]
                raise cap from None
            raise
        except ExtTimeoutError:
            # ext-runner did not report within timeout + grace: it is wedged.
            # Kill it (its worker goes with it) and report the timeout.
            if proc is not None:
                proc.kill()
                self._ended_with(proc)
                self._timed_out.add(proc.pid)
            _stats.bump("timeouts")
            raise ExtTimeoutError(tool_name=tool_name, timeout_s=self.timeout_s) from None
        except SandboxError as exc:
            if proc is None or proc is not self._proc:
                raise
            rc, stderr = self._ended_with(proc)
            _stats.bump("timeouts" if rc == EXIT_TIMEOUT else "runner_failures")
            raise self._error(
                rc, stderr, context=str(exc), tool_name=tool_name, timeout_s=self.timeout_s,
            ) from exc
        _stats.bump("invokes_answered")
        return result

    def _readline_with_timeout(self, proc: subprocess.Popen, timeout_s: float) -> str | None:
        # The reference's invoke() reads each response line through here; a line
        # ext-runner marked with an error class is kept for invoke() above (the
        # reference reads only "ok", "result" and "error", and ignores the rest).
        line = super()._readline_with_timeout(proc, timeout_s)
        if line is not None and '"error_class"' in line:
            try:
                msg = json.loads(line)
            except ValueError:
                msg = None
            if isinstance(msg, dict) and not msg.get("ok") and "error_class" in msg:
                self._marked = msg
        return line

    # -- introspection --------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The ext-runner process id (the worker runs below it), or None."""
        return self._proc.pid if self._proc is not None else None

    def stderr_tail(self) -> str:
        """The last bytes ext-runner and the worker wrote to stderr."""
        return self._drain.text() if self._drain is not None else ""

    def __repr__(self) -> str:
        state = "running" if self.is_alive() else "stopped"
        return f"<ExtRunnerRunner {self._dir} {state}>"


__all__ = ["ExtRunnerRunner", "find_ext_runner", "ExtRunnerNotFound", "describe_exit"]
