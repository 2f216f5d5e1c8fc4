"""Run the reference nodus-extension host's workers under ext-runner.

Two ways in:

- ``install(**options)``: one call, before extensions are loaded. The
  reference's ``ExtensionHost.load`` (and so ``ExtensionRegistry.load``,
  ``attach_to_runtime``'s ``ext_load``, the tool bridge) then starts every
  worker as ``ext-runner run DIR`` instead of ``python extension.py``.
  ``uninstall()`` undoes it.
- ``ExtRunnerRunner(extension_dir, manifest, timeout_s=..., **options)``: the
  runner itself, for hosts that construct runners explicitly.

``stats()`` counts workers started through ext-runner in this process.
"""
from __future__ import annotations

import threading
from typing import Any

from . import _stats
from ._errors import ExtRunnerNotFound, runner_error
from ._runner import OPTION_DEFAULTS, ExtRunnerRunner, check_options, find_ext_runner, set_defaults

__version__ = "0.1.0"

__all__ = [
    "ExtRunnerRunner",
    "ExtRunnerNotFound",
    "install",
    "uninstall",
    "is_installed",
    "stats",
    "reset_stats",
    "find_ext_runner",
    "runner_error",
    "OPTION_DEFAULTS",
]

_lock = threading.Lock()
_saved: list[tuple[Any, str, Any]] = []  # (module, attribute, original value)
_installed_options: dict[str, Any] | None = None


def install(*, patch_direct: bool = True, **options: Any) -> None:
    """Make the reference host start its workers through ext-runner.

    Patches ``nodus_extension.host.SubprocessRunner`` (what ``ExtensionHost.load``
    constructs) and, unless ``patch_direct=False``, also
    ``nodus_extension.runner.subprocess.SubprocessRunner`` for code that builds
    runners itself after this call. *options* become the defaults of every
    ``ExtRunnerRunner``: ``ext_runner``, ``python``, ``policy``, ``workspace``,
    ``extra_args``, ``preflight``, ``restart_after_timeout``,
    ``timeout_grace_s``, ``forward_stderr``, ``server`` (a fork server's
    socket, ``ext-runner serve --socket PATH``: workers start warm, confined by
    the server's own interpreter and policy; default ``$NODUS_EXT_SERVER``)
    (see ``OPTION_DEFAULTS``).

    The binary is looked up now (``ext_runner=``, ``$NODUS_EXT_RUNNER``, PATH),
    so a missing one fails here with ExtRunnerNotFound, not at the first load.
    Calling it again replaces the options.
    """
    global _installed_options
    check_options(options)
    find_ext_runner(options.get("ext_runner"))
    import nodus_extension.host as host_mod
    import nodus_extension.runner as runner_pkg
    import nodus_extension.runner.subprocess as subprocess_mod

    with _lock:
        _restore()
        targets = [(host_mod, "SubprocessRunner")]
        if patch_direct:
            targets.append((subprocess_mod, "SubprocessRunner"))
            if hasattr(runner_pkg, "SubprocessRunner"):
                targets.append((runner_pkg, "SubprocessRunner"))
        for module, attr in targets:
            _saved.append((module, attr, getattr(module, attr)))
            setattr(module, attr, ExtRunnerRunner)
        set_defaults(options)
        _installed_options = dict(options, patch_direct=patch_direct)


def uninstall() -> None:
    """Undo ``install()``: new workers start as ``python extension.py`` again.

    Workers already running stay under ext-runner until they are unloaded.
    """
    global _installed_options
    with _lock:
        _restore()
        set_defaults({})
        _installed_options = None


def _restore() -> None:
    while _saved:
        module, attr, original = _saved.pop()
        setattr(module, attr, original)


def is_installed() -> bool:
    return _installed_options is not None


def stats() -> dict:
    """Counters since import (or ``reset_stats()``): ``workers_started`` (ext-runner
    processes started, one worker each), ``invokes_answered``, ``preflights``,
    ``load_refusals``, ``timeouts``, ``restarts``, ``runner_failures``, and
    ``installed`` (the options of ``install()``, or None)."""
    out = _stats.snapshot()
    out["installed"] = dict(_installed_options) if _installed_options is not None else None
    return out


def reset_stats() -> None:
    _stats.reset()
