"""ext-runner's failures, as the reference's exception classes.

ext-runner reports a failure as an exit code (one per class) and one
``error: MESSAGE (Class)`` line on stderr. The exit code decides the class
(the worker's own stderr is forwarded on the same stream, so a worker could
print a look-alike line, but it cannot choose ext-runner's exit code); the
message is taken from the last ``error:`` line of that class.
"""
from __future__ import annotations

import re
import signal

from nodus_extension.errors import (
    AbiError,
    CapabilityError,
    InvokeError,
    ManifestError,
    RegistryError,
    SandboxError,
    TimeoutError as ExtTimeoutError,
)

#: ext-runner exit code -> reference class name.
EXIT_CLASSES = {
    3: "ManifestError",
    4: "AbiError",
    5: "CapabilityError",
    6: "SandboxError",
    7: "InvokeError",
    8: "TimeoutError",
    9: "RegistryError",
}
EXIT_TIMEOUT = 8

_ERROR_LINE = re.compile(r"^error: (?P<msg>.*) \((?P<cls>[A-Za-z]+Error)\)\s*$")
_CAPABILITY = re.compile(
    r"^(?:'(?P<ext>[^']*)' )?extension lacks capability: '(?P<cap>[^']*)'"
)


class ExtRunnerNotFound(SandboxError):
    """The ext-runner binary could not be found or is not executable."""


def error_line(stderr: str, cls: str | None) -> str | None:
    """The message of the last ``error: ... (cls)`` line (any class if cls is
    None), with the lines ext-runner indented below it (a worker's stderr
    tail, a multi-line tool error) joined back on, their indent removed.
    Only ext-runner's own lines count: they start at the line's start,
    where what it quotes of a worker is indented (a worker that writes an
    ``error: ... (SandboxError)`` line does not write the host's error)."""
    found = None
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        m = None if line[:1].isspace() else _ERROR_LINE.match(line.rstrip())
        if m and (cls is None or m.group("cls") == cls):
            more = []
            for follow in lines[i + 1:]:
                if not follow.startswith("  "):
                    break
                more.append(follow[2:])
            found = "\n".join([m.group("msg"), *more])
    return found


def _tail(stderr: str, limit: int = 2000) -> str:
    text = stderr.strip()
    if len(text) > limit:
        text = "..." + text[-limit:]
    return text


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "?"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with status {returncode}"


def runner_error(
    returncode: int,
    stderr: str,
    *,
    context: str | None = None,
    tool_name: str | None = None,
    timeout_s: float | None = None,
    manifest_path: str | None = None,
    abi_version: str | None = None,
) -> Exception:
    """The reference exception for an ext-runner that ended with *returncode*.

    *context* prefixes SandboxError messages (e.g. the reference's own
    "extension subprocess closed stdout unexpectedly"), so that code matching
    the reference's wording keeps matching.
    """
    cls = EXIT_CLASSES.get(returncode)
    msg = error_line(stderr, cls) if cls else None
    if cls is None or msg is None:
        # Not one of ext-runner's own failures: a usage error (2, an ext-runner
        # too old for these options), a signal, a crash, or a clean exit while an
        # answer was expected.
        detail = f"ext-runner {describe_exit(returncode)}"
        if returncode == 2:
            detail += " (usage error: is the binary an ext-runner that has `run`?)"
        tail = _tail(stderr)
        if tail:
            detail += f"; stderr: {tail}"
        exc: Exception = SandboxError(f"{context} ({detail})" if context else detail)
    elif cls == "ManifestError":
        exc = ManifestError(msg, path=manifest_path)
    elif cls == "AbiError":
        exc = AbiError(msg, abi_version=abi_version)
    elif cls == "CapabilityError":
        m = _CAPABILITY.match(msg)
        exc = CapabilityError(m.group("cap") if m else msg, m.group("ext") if m else None)
        exc.args = (msg,)  # keep ext-runner's reason (operator policy, trust class)
    elif cls == "InvokeError":
        exc = InvokeError(msg, tool_name=tool_name)
    elif cls == "TimeoutError":
        exc = ExtTimeoutError(tool_name=tool_name, timeout_s=timeout_s)
    elif cls == "RegistryError":
        exc = RegistryError(msg)
    else:
        exc = SandboxError(f"{context} (ext-runner: {msg})" if context else msg)
    exc.runner_returncode = returncode  # type: ignore[attr-defined]
    exc.runner_stderr = _tail(stderr, 8192)  # type: ignore[attr-defined]
    return exc
