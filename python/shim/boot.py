"""Starts a worker script as `python SCRIPT` would, with one difference: the
standard-library `nodus_extension.worker` shim beside this file is importable,
placed *after* site-packages so that an installed reference package always wins.

Run as: python -s -B boot.py SCRIPT [ARGS...]   (embedded in ext-runner)

Besides, it explains refusals (see _explain_denials), leaves its own frames out
of tracebacks, and with NODUS_EXTENSION_VERBOSE=1 prints the traceback of a
tool that raised to stderr.
"""
import sys

# Under -P or PYTHONSAFEPATH (Python 3.11+) the interpreter put nothing before
# the standard library on sys.path: sys.path[0] is not this file's folder but
# a standard-library entry, and `python -P SCRIPT` would not search the
# script's folder either. Then the shim's folder comes from this file's name,
# and sys.path keeps its entries (the shim is appended, as always).
_SAFE_PATH = bool(getattr(sys.flags, "safe_path", False))


def _here():
    """This file's folder: the shim's, where grants.json is."""
    if _SAFE_PATH:
        return __file__.rpartition("/")[0] or "."
    return sys.path[0]


def _boot():
    shim = _here()
    script = sys.argv[1]
    del sys.argv[0]
    if not _SAFE_PATH:
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
    """Explain what the sandbox refuses, and tell the host (audit trail).

    The kernel enforces every rule; this only makes its EPERM/EACCES readable.
    Sockets and new processes of an undeclared capability are refused here, up
    front, with a PermissionError naming it (the kernel would refuse them
    anyway). Files and TCP ports are left to the kernel: when a tool fails with
    the kernel's PermissionError or read-only error for a path outside the
    grants (or a port outside the operator's tcp_ports), the error is reworded
    to say why (`denied open('/x'): filesystem.read not declared`). The grants
    come from `grants.json` beside this file, written by ext-runner from the
    worker's policy."""
    import os
    boot_dir = _here()
    caps = frozenset(os.environ.get("NODUS_EXTENSION_CAPABILITIES", "").split(","))
    watched = frozenset(("socket.__new__", "socket.connect", "socket.bind", "os.chmod", "fcntl.fcntl", "fcntl.ioctl",
                         "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "subprocess.Popen",
                         "os.system",
                         "open", "os.listdir", "os.scandir", "os.mkdir", "os.remove", "os.rmdir",
                         "os.rename", "os.truncate", "shutil.rmtree"))
    fcntl_refused = {1024: "F_SETLEASE", 1026: "F_NOTIFY", 1036: "F_SET_RW_HINT", 1038: "F_SET_FILE_RW_HINT"}
    ioctl_refused = {0x40086602: "FS_IOC_SETFLAGS", 0x40046602: "FS_IOC_SETFLAGS", 0x401c5820: "FS_IOC_FSSETXATTR",
                     0x40087602: "FS_IOC_SETVERSION", 0x40047602: "FS_IOC_SETVERSION", 0x40086604: "EXT4_IOC_SETVERSION",
                     0x40046604: "EXT4_IOC_SETVERSION", 0x40806685: "FS_IOC_ENABLE_VERITY",
                     0x800c6613: "FS_IOC_SET_ENCRYPTION_POLICY", 0x5000940e: "BTRFS_IOC_SUBVOL_CREATE",
                     0x50009418: "BTRFS_IOC_SUBVOL_CREATE_V2", 0x50009401: "BTRFS_IOC_SNAP_CREATE",
                     0x50009417: "BTRFS_IOC_SNAP_CREATE_V2", 0x4008941a: "BTRFS_IOC_SUBVOL_SETFLAGS"}
    network = "network.outbound" in caps
    host_network = os.environ.get("NODUS_EXTENSION_HOST_NETWORK") == "1"
    spawn = "subprocess.run" in caps
    out = sys.stdout
    try:
        import json
        with open(os.path.join(boot_dir, "grants.json"), encoding="utf-8") as f:
            grants = json.load(f)
    except (OSError, ValueError):
        grants = {}
    read_roots = tuple(grants.get("read") or ())
    write_roots = tuple(grants.get("write") or ())
    tcp_ports = grants.get("tcp_ports")  # None: any port (or not enforced)
    files_enforced = bool(grants.get("landlock"))
    private_root = bool(grants.get("private_root"))
    unix_ok = bool(grants.get("unix_sockets", True))  # False: seccomp refuses socket(AF_UNIX)
    tried = {"path": None, "write": False, "connect": None, "unix": False}
    # Unix sockets by path are for the worker's own processes (multiprocessing's
    # forkserver and Manager): inside its scratch folder (TMPDIR) only. The
    # kernel allows them only in a private root, where no host socket is in view.
    scratch = os.path.realpath(os.environ.get("TMPDIR") or "/nonexistent")

    def in_scratch(path):
        if isinstance(path, bytes):
            if path[:1] in (b"", b"\0"):
                return False
            path = os.fsdecode(path)
        if path[:1] in ("", "\0"):
            return False  # abstract: never granted
        real = os.path.realpath(path)
        return real == scratch or real.startswith(scratch.rstrip("/") + "/")

    def notify(capability, detail, reason=None):
        msg = {"op": "denial", "capability": capability, "detail": detail}
        if reason:
            msg["reason"] = reason
        try:
            out.write(json.dumps(msg) + "\n")
            out.flush()
        except Exception:
            pass

    def deny(detail, capability, why=None):
        notify(capability, detail.replace('"', "'"), why)
        raise PermissionError(1, f"denied {detail}: {why or capability + ' not declared'}")

    def hook(event, args):
        if event not in watched:
            return
        if event == "open" or event in ("os.listdir", "os.scandir"):
            # Remembered for the explanation, never refused here.
            path = args[0]
            if isinstance(path, (str, bytes)):
                write = False
                if event == "open":
                    mode, flags = args[1], args[2]
                    write = bool((isinstance(mode, str) and any(c in mode for c in "wax+"))
                                 or (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND)))
                tried["path"], tried["write"] = path, write
        elif event == "os.chmod" and isinstance(args[1], int) and args[1] & 0o6000:
            deny(f"chmod({args[0]!r}, {args[1]:#o})", "setuid/setgid bits (never granted)",
                 "no worker may make a setuid or setgid file")
        elif event.startswith(("os.", "shutil.")) and event not in ("os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.system"):
            path = args[0]
            if isinstance(path, (str, bytes)):
                tried["path"], tried["write"] = path, True
        elif event == "socket.__new__":
            if args[1] in (2, 10) and not network:  # AF_INET, AF_INET6
                deny(f"socket({'AF_INET' if args[1] == 2 else 'AF_INET6'})", "network.outbound")
            elif args[1] == 1 and not unix_ok:
                # Also raised for socketpair's sockets (allowed): remembered,
                # explained only if the kernel refuses.
                tried["unix"] = True
        elif event == "socket.connect":
            address = args[1]
            if isinstance(address, (str, bytes)) and not in_scratch(address):
                deny(f"connect(unix:{address!r})", "local IPC outside the worker's own TMPDIR (never granted)")
            sock = args[0]
            if (tcp_ports is not None and isinstance(address, tuple) and len(address) >= 2
                    and getattr(sock, "family", None) in (2, 10) and getattr(sock, "type", None) == 1):
                tried["connect"] = (address[0], address[1]) if address[1] not in tcp_ports else None
        elif event == "socket.bind":
            # Sharing the host's network namespace (network.outbound without
            # an egress allowlist), a bound port or abstract name is the host's.
            if host_network:
                address = args[1]
                if isinstance(address, (str, bytes)) and address[:1] not in ("", "\0", b"", b"\0"):
                    why = ("sharing the host's network namespace (network.outbound) nothing is bound: "
                           "seccomp cannot tell a socket file from an abstract name, which would be the host's; "
                           "multiprocessing's forkserver and Manager need one (use the fork or spawn start method)")
                else:
                    why = "network access is outbound only: a bound port or abstract name would be the host's"
                deny(f"bind({address!r})", "inbound endpoint (never granted)", why)
        elif event == "fcntl.fcntl":
            if args[1] in fcntl_refused:
                deny(f"fcntl({fcntl_refused[args[1]]})", "other processes' file access (never granted)",
                     "a worker may not act on other processes' access to a file")
        elif event == "fcntl.ioctl":
            if isinstance(args[1], int) and args[1] & 0xFFFFFFFF in ioctl_refused:
                deny(f"ioctl({ioctl_refused[args[1] & 0xFFFFFFFF]})", "file attributes (never granted)",
                     "a worker may not change a file's attributes for whoever uses it next")
        elif not spawn:
            deny(event.replace("subprocess.", "").replace("os.", "") + "()", "subprocess.run")

    def within(path, roots):
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)

    def why_file(path, write):
        """Why the kernel refused `path`, if it was the sandbox (None: something else)."""
        if not files_enforced or not isinstance(path, str) or not path.startswith("/"):
            return None
        if path.startswith(("/proc/", "/dev/", "/sys/")):
            return None
        real = os.path.realpath(path)
        # The most specific grant decides (a read-only workspace under /tmp,
        # which the private root's scratch folder covers).
        best = max((r for r in read_roots + write_roots if within(real, (r,))), key=len, default=None)
        if best is not None and (not write or best in write_roots):
            return None  # granted: refused for another reason (file modes)
        capability = "filesystem.write" if write else "filesystem.read"
        if capability not in caps:
            return capability, f"{capability} not declared"
        return capability, "outside the granted paths"

    def explain(exc):
        """The kernel's refusal `exc` reworded to say why, or None."""
        import errno
        if not isinstance(exc, OSError):
            return None
        if exc.errno == errno.EACCES and exc.filename is None and tried["connect"]:
            host, port = tried["connect"]
            tried["connect"] = None
            detail = f"connect({host!r}, {port})"
            reason = f"port {port} is not in the operator's tcp_ports {sorted(tcp_ports)}"
            notify("network.outbound", detail, reason)
            return PermissionError(exc.errno, f"denied {detail}: {reason}")
        if exc.errno == errno.EPERM and exc.filename is None and tried["unix"]:
            tried["unix"] = False
            detail = "socket(AF_UNIX)"
            reason = ("unix sockets need the worker's private root (a mount namespace) with abstract names "
                      "out of reach (a network namespace of its own, or Landlock ABI 6); see ext-runner policy")
            notify("local IPC (never granted)", detail, reason)
            return PermissionError(exc.errno, f"denied {detail}: {reason}")
        # In a private root a path outside the grants does not exist (ENOENT),
        # whether or not the host has it: that is a refusal too.
        refused = (errno.EACCES, errno.EPERM, errno.EROFS) + ((errno.ENOENT,) if private_root else ())
        if exc.errno not in refused or exc.filename is None:
            return None
        path = exc.filename
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        write = exc.errno == errno.EROFS or (tried["write"] and os.fsdecode(tried["path"] or "") == path)
        if exc.errno == errno.ENOENT:
            # Missing inside a grant is just missing; outside every grant the
            # private root cannot say whether the host has it.
            if within(os.path.realpath(path), read_roots + write_roots):
                return None
        found = why_file(path, write)
        if found is None:
            return None
        capability, reason = found
        if exc.errno == errno.ENOENT:
            reason += " (the private root holds only what is granted)"
        detail = f"open({path!r}{', write' if write else ''})"
        notify(capability, detail, reason)
        return type(exc)(exc.errno, f"denied {detail}: {reason}")

    sys.addaudithook(hook)
    return explain


def _wrap_tools(explain):
    """Wraps every handler registered with nodus_extension.worker.register_tool
    (the reference's module or ours, whichever the script imports): a refusal
    the kernel made is reworded by `explain`, and with NODUS_EXTENSION_VERBOSE=1
    the traceback of a handler that raised goes to stderr."""
    import os
    verbose = os.environ.get("NODUS_EXTENSION_VERBOSE") == "1"

    def wrapped(handler):
        def tool(args):
            try:
                return handler(args)
            except Exception as exc:
                better = explain(exc)
                if verbose:
                    import traceback
                    traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next, file=sys.stderr)
                    sys.stderr.flush()
                if better is not None:
                    raise better from None
                raise
        return tool

    def patch(module):
        register = getattr(module, "register_tool", None)
        if register is None or getattr(register, "_nodus_wrapped", False):
            return
        def register_tool(name, handler):
            return register(name, wrapped(handler))
        register_tool.__doc__ = register.__doc__
        register_tool._nodus_wrapped = True
        module.register_tool = register_tool

    class Finder:
        """Patches nodus_extension.worker right after it is first imported."""
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name != "nodus_extension.worker":
                return None
            import importlib.machinery
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return spec
            loader_exec = spec.loader.exec_module
            def exec_module(module):
                loader_exec(module)
                patch(module)
            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, Finder)
    # A fork server's zygote puts the shim's module in place before this
    # runs where the worker's import would find that very file (zygote.py,
    # _install_shim); in a cold start it is not imported yet.
    already = sys.modules.get("nodus_extension.worker")
    if already is not None:
        patch(already)


def _own_frames_hidden():
    """Tracebacks of the script start at the script, not at this file."""
    here = sys._getframe().f_code.co_filename  # this file, as Python names it
    default = sys.excepthook

    def excepthook(kind, value, tb):
        while tb is not None and tb.tb_frame.f_code.co_filename == here:
            tb = tb.tb_next
        if isinstance(value, BaseException):
            value = value.with_traceback(tb)  # the default hook prints value's own traceback
        default(kind, value, tb)

    sys.excepthook = excepthook


_own_frames_hidden()
_wrap_tools(_explain_denials())
del _explain_denials, _wrap_tools, _own_frames_hidden
exec(*_boot())  # _boot() empties this module's namespace; exec was looked up before
