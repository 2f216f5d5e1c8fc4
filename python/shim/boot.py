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


def _explain_denials():
    """Fail operations the manifest does not grant with a PermissionError that
    says which capability is missing, and tell the host (audit trail). The
    kernel enforces the same rules; this only makes its EPERM readable."""
    import os
    caps = frozenset(os.environ.get("NODUS_EXTENSION_CAPABILITIES", "").split(","))
    watched = frozenset(("socket.__new__", "socket.connect", "os.fork", "os.forkpty", "os.exec",
                         "os.posix_spawn", "subprocess.Popen", "os.system"))
    network = "network.outbound" in caps
    spawn = "subprocess.run" in caps
    out = sys.stdout

    def deny(detail, capability):
        try:
            out.write('{"op": "denial", "capability": "%s", "detail": "%s"}\n' % (capability, detail.replace('"', "'")))
            out.flush()
        except Exception:
            pass
        raise PermissionError(1, f"denied {detail}: {capability} not declared")

    def hook(event, args):
        if event not in watched:
            return
        if event == "socket.__new__":
            if args[1] in (2, 10) and not network:  # AF_INET, AF_INET6
                deny(f"socket({'AF_INET' if args[1] == 2 else 'AF_INET6'})", "network.outbound")
        elif event == "socket.connect":
            if isinstance(args[1], (str, bytes)):
                deny(f"connect(unix:{args[1]!r})", "local IPC (never granted)")
        elif not spawn:
            deny(event.replace("subprocess.", "").replace("os.", "") + "()", "subprocess.run")

    sys.addaudithook(hook)


_explain_denials()
del _explain_denials
exec(*_boot())  # _boot() empties this module's namespace; exec was looked up before
