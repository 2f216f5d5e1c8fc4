"""pytest plugin: run the reference nodus-extension test suite with every
worker started through ext-runner, and prove it.

Load it with ``-p nodus_sandbox_refsuite`` (this folder on PYTHONPATH); see
``python/run_reference_suite.sh``. It

- calls ``nodus_extension_sandbox.install()`` in ``pytest_configure``: after the
  suite's own ``pythonpath`` ini option is applied, before any test module is
  collected or imported;
- counts every start of a reference ``SubprocessRunner`` that is *not* ours
  (an unsandboxed ``python extension.py``) and fails the run if there is one;
- fails the run when fewer than ``--ext-runner-min-workers`` (default 1) workers
  were started through ext-runner, and prints the counts in the summary;
- deselects, by node id, the tests listed in ``DESELECT`` with the reason
  (an intended hardening that makes the reference's expectation untrue).
"""
from __future__ import annotations

import os

import pytest

#: node id (relative to the suite's rootdir) -> why the sandbox makes it differ.
#: Empty: all 126 reference tests pass under ext-runner as they are.
DESELECT: dict[str, str] = {}

_unsandboxed: list[str] = []


def pytest_addoption(parser):
    group = parser.getgroup("nodus-extension-sandbox")
    group.addoption(
        "--ext-runner-min-workers",
        type=int,
        default=1,
        help="fail unless at least this many workers were started through ext-runner",
    )


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    import nodus_extension
    import nodus_extension.runner.subprocess as ref_subprocess

    import nodus_extension_sandbox as sandbox

    sandbox.install()
    sandbox.reset_stats()
    original = ref_subprocess.SubprocessRunner  # ours now (install patched it)
    reference = original.__mro__[1]
    assert reference.__module__ == "nodus_extension.runner.subprocess", reference
    reference_start = reference.start

    def counting_start(self):
        if not isinstance(self, sandbox.ExtRunnerRunner):
            _unsandboxed.append(f"{type(self).__name__}({self._dir})")
        return reference_start(self)

    reference.start = counting_start
    config._nodus_sandbox = {
        "reference": os.path.dirname(nodus_extension.__file__),
        "binary": sandbox.find_ext_runner(),
        "restore": (reference, reference_start),
    }


def pytest_collection_modifyitems(session, config, items):
    if not DESELECT:
        return
    keep, dropped = [], []
    for item in items:
        (dropped if item.nodeid in DESELECT else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_sessionfinish(session, exitstatus):
    import nodus_extension_sandbox as sandbox

    config = session.config
    if not hasattr(config, "_nodus_sandbox"):
        return
    counts = sandbox.stats()
    minimum = config.getoption("--ext-runner-min-workers")
    problems = []
    if counts["workers_started"] < minimum:
        problems.append(
            f"only {counts['workers_started']} worker(s) started through ext-runner (need {minimum})"
        )
    if _unsandboxed:
        problems.append(f"{len(_unsandboxed)} worker(s) started without ext-runner: {_unsandboxed[:5]}")
    config._nodus_sandbox["counts"] = counts
    config._nodus_sandbox["problems"] = problems
    if problems and session.exitstatus in (0, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    info = getattr(config, "_nodus_sandbox", None)
    if not info or "counts" not in info:
        return
    c = info["counts"]
    tr = terminalreporter
    tr.section("nodus-extension-sandbox")
    tr.line(f"reference package: {info['reference']}")
    tr.line(f"ext-runner:        {info['binary']}")
    tr.line(
        f"workers started through ext-runner: {c['workers_started']} "
        f"(invokes answered {c['invokes_answered']}, preflights {c['preflights']}, "
        f"refused loads {c['load_refusals']}, timeouts {c['timeouts']}, "
        f"restarts {c['restarts']}, other runner failures {c['runner_failures']})"
    )
    tr.line(f"workers started without ext-runner: {len(_unsandboxed)}")
    for nodeid, why in DESELECT.items():
        tr.line(f"deselected {nodeid}: {why}")
    for problem in info["problems"]:
        tr.line(f"FAIL: {problem}", red=True)
