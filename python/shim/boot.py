"""Starts a worker script as `python SCRIPT` would, with one difference: the
standard-library `nodus_extension.worker` shim beside this file is importable,
placed *after* site-packages so that an installed reference package always wins.

Run as: python -s -B boot.py SCRIPT [ARGS...]   (embedded in ext-runner)
"""
import sys


def _boot():
    shim = sys.path[0]
    script = sys.argv[1]
    del sys.argv[0]
    sys.path[0] = script.rpartition("/")[0] or "."
    sys.path.append(shim)
    with open(script, "rb") as f:
        code = compile(f.read(), script, "exec")
    g = sys.modules["__main__"].__dict__
    builtins = g["__builtins__"]
    g.clear()
    g.update(__name__="__main__", __file__=script, __doc__=None, __builtins__=builtins,
             __loader__=None, __package__=None, __spec__=None, __cached__=None)
    return code, g


exec(*_boot())  # _boot() empties this module's namespace; exec was looked up before
