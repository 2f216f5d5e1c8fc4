"""The examples of docs/extensions.md and docs/python.md run as written and
print what the docs say they print (each in a fresh interpreter, so install()
in an example cannot leak into other tests)."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[2]


def blocks(doc: str, lang: str) -> list[str]:
    text = (ROOT / "docs" / doc).read_text()
    return [textwrap.dedent(b) for b in re.findall(rf"```{lang}\n(.*?)```", text, re.S)]


def first_extension(parent: pathlib.Path) -> pathlib.Path:
    """The greeter of docs/extensions.md's five-minute example, from the doc's own blocks."""
    d = parent / "greeter"
    d.mkdir()
    (d / "nodus-extension.json").write_text(blocks("extensions.md", "json")[0])
    (d / "extension.py").write_text(blocks("extensions.md", "python")[0])
    return d


def run_python(code: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_first_extension_with_ext_runner(tmp_path):
    d = first_extension(tmp_path)
    runner = os.environ["NODUS_EXT_RUNNER"]
    out = subprocess.run([runner, "invoke", str(d), "myapp.greet", '{"name": "Ada"}'],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, '"Hello, Ada!"\n'), out.stderr
    out = subprocess.run([runner, "invoke", str(d), "myapp.greet"],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, '"Hello, world!"\n'), out.stderr


def test_python_md_examples_print_their_results(tmp_path):
    d = first_extension(tmp_path)
    install_example, runner_example = blocks("python.md", "python")[:2]
    done = run_python(install_example.replace("/srv/extensions/greeter", str(d)), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == 'Hello, Ada!\n"Hello, Ada!"\n', done.stdout
    # The runner example uses ext_dir and a workspace/policy the operator has.
    ws = tmp_path / "ws"
    ws.mkdir()
    (tmp_path / "policy.json").write_text("{}")
    code = (f"ext_dir = {str(d)!r}\n" + runner_example
            .replace('"/srv/data/greeter"', repr(str(ws)))
            .replace('"/etc/nodus/policy.json"', repr(str(tmp_path / "policy.json"))))
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Hello, Ada!\n", done.stdout
