"""Finds the ext-runner binary for python/tests: $NODUS_EXT_RUNNER, else the
repository's target/release or target/debug build. A missing binary is an
error, not a skip: a run that proves nothing must not pass."""
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def pytest_configure(config):
    if os.environ.get("NODUS_EXT_RUNNER"):
        return
    for build in ("release", "debug"):
        candidate = ROOT / "target" / build / "ext-runner"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            os.environ["NODUS_EXT_RUNNER"] = str(candidate)
            return
    raise pytest.UsageError(
        "ext-runner not found: build it (cargo build --release) or set NODUS_EXT_RUNNER"
    )
