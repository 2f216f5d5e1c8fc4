"""Process-wide counters: how many workers went through ext-runner."""
from __future__ import annotations

import threading

_lock = threading.Lock()
_KEYS = (
    "workers_started",  # ext-runner processes started (one worker each)
    "invokes_answered",  # invokes answered by a worker under ext-runner
    "preflights",  # `ext-runner policy` checks run before a start
    "load_refusals",  # starts refused by ext-runner (manifest, capability, sandbox)
    "timeouts",  # invokes that timed out; ext-runner killed the worker
    "restarts",  # fresh workers started after a timeout kill
    "runner_failures",  # other ends of ext-runner reported as errors
)
_counts = dict.fromkeys(_KEYS, 0)


def bump(key: str, n: int = 1) -> None:
    with _lock:
        _counts[key] += n


def snapshot() -> dict:
    with _lock:
        return dict(_counts)


def reset() -> None:
    with _lock:
        for k in _KEYS:
            _counts[k] = 0
