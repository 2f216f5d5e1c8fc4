"""The fork server's zygote (embedded in ext-runner; see docs/security.md,
"Warm starts").

Started by `ext-runner serve` as `python -s -B -c SOURCE LIB INIT_JSON`, with
stdin an empty pipe, stdout the server's control socket (SOCK_SEQPACKET) and
stderr the server's. It imports the standard library a worker commonly uses,
loads the runner's own confinement code (libnodus_extension.so, the same
`child.rs` the cold path runs between fork and exec) with ctypes, freezes its
objects out of the garbage collector, and then waits for the server.

Per start request it asks the library to prepare the worker exactly as the
cold path does (manifest, policy derived from it and the server's operator
policy, scratch folder, Landlock ruleset, seccomp filters, namespaces,
limits), forks (single-threaded, checked), and the child applies that
confinement before it runs a line of the extension: the boot shim, then
the extension's script, in a fresh `__main__`. The zygote itself runs no extension code.
"""
import os
import sys


def _main():
    import ctypes
    import gc
    import json
    import selectors
    import signal
    import socket
    import time

    lib_path, init = sys.argv[1], json.loads(sys.argv[2])
    # What a worker commonly imports, imported once here and shared by every
    # fork (copy-on-write). No site package; the worker shim is executed
    # apart (_shim) and used by a fork only where its import would find it.
    for name in init.get("preload", ()):
        try:
            __import__(name)
        except Exception:
            pass
    lib = ctypes.CDLL(lib_path)
    # The worker shim's sources, as the library writes them into every
    # scratch folder: the boot shim compiled here per path it has in the
    # workers (one path for every worker with a private root; _boot_code),
    # the worker shim's package executed here per folder (_shim).
    lib.nodus_zygote_shim_source.restype = ctypes.c_void_p
    lib.nodus_zygote_shim_source.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_size_t)]

    def source(which):
        n = ctypes.c_size_t(0)
        at = lib.nodus_zygote_shim_source(which, ctypes.byref(n))
        return ctypes.string_at(at, n.value) if at else b""
    boot_src = source(0)
    boot_codes = {}
    shim_src = {"__init__.py": source(1), "worker.py": source(2)}
    shims = {}
    lib.nodus_zygote_init.restype = ctypes.c_int
    lib.nodus_zygote_prepare.restype = ctypes.c_void_p
    lib.nodus_zygote_prepare.argtypes = [ctypes.c_char_p, ctypes.c_size_t,
                                         ctypes.POINTER(ctypes.c_int), ctypes.c_size_t,
                                         ctypes.c_char_p, ctypes.c_size_t]
    lib.nodus_zygote_enter.restype = ctypes.c_int
    lib.nodus_zygote_enter.argtypes = [ctypes.c_void_p]
    lib.nodus_zygote_forked.restype = ctypes.c_int
    lib.nodus_zygote_forked.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.nodus_zygote_oom_killed.restype = ctypes.c_int
    lib.nodus_zygote_oom_killed.argtypes = [ctypes.c_void_p]
    lib.nodus_zygote_reaper.restype = ctypes.c_int
    lib.nodus_zygote_reaper.argtypes = [ctypes.c_void_p]
    lib.nodus_zygote_exit_status.restype = ctypes.c_int
    lib.nodus_zygote_exit_status.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.nodus_zygote_release.restype = None
    lib.nodus_zygote_release.argtypes = [ctypes.c_void_p]
    if lib.nodus_zygote_init() != 0:
        sys.exit("zygote: cannot set its parent-death signal")

    ctl = socket.socket(fileno=1)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # With SA_RESTART: a worker ending (SIGCHLD) while the crate prepares
    # another must not cut its blocking calls short with EINTR (its reads,
    # waitpid, recvmsg do not expect a handler without SA_RESTART; in a cold
    # runner there is none). Seen as "cannot make an idmapped mount ...:
    # Interrupted system call" under concurrent starts. The wakeup fd still
    # wakes the loop: select is never restarted, and Python retries it.
    signal.siginterrupt(signal.SIGCHLD, False)
    sel = selectors.DefaultSelector()
    sel.register(ctl, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    # Python adds LC_CTYPE when it coerces the C locale (PEP 538): a worker
    # started cold would have it too.
    given = init.get("env", {})
    added = {k: v for k, v in os.environ.items() if k not in given}
    # pid -> (request id, handle, process group): the pid the zygote waits
    # for is the worker's reaper (its child, once the fork that made it has
    # exited: child.rs, ZygoteWaits), or without a pid namespace the fork
    # itself, the worker; the group is the fork's (it made the session).
    workers = {}
    forks = set()  # forks that made a reaper and exit: reaped, nothing told
    buf = ctypes.create_string_buffer(1 << 16)
    me = os.getpid()

    def log(text):
        try:
            sys.stderr.write(f"ext-runner serve: zygote {me}: {text}\n")
            sys.stderr.flush()
        except Exception:
            pass

    def send(msg, fds=()):
        data = json.dumps(msg).encode()
        if fds:
            socket.send_fds(ctl, [data], list(fds))
        else:
            ctl.send(data)

    def tell(msg):
        """send() for an answer whose loss must not end the zygote: a server
        that is gone is seen as the end of ctl by the loop."""
        try:
            send(msg)
        except Exception as e:
            log(f"cannot tell the server {msg.get('op')} for request {msg.get('id')}: {e!r}")

    def reap():
        while workers or forks:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in forks:
                forks.discard(pid)
                continue
            found = workers.pop(pid, None)
            if found is not None:
                rid, handle, _ = found
                # The worker's own status (a reaper passes it up a pipe).
                status = lib.nodus_zygote_exit_status(handle, status)
                # Read before the release removes its memory cgroup.
                oom = lib.nodus_zygote_oom_killed(handle) == 1
                lib.nodus_zygote_release(handle)
                tell({"op": "exited", "id": rid, "status": status, "oom_killed": oom})

    def start(rid, request, fds):
        """One start request, answered `started` or `failed`, never raising:
        whatever goes wrong with one request (os.fork() refused with EAGAIN
        at the user's task limit, a malformed request, a send that fails)
        is that request's error, and the zygote goes on serving its other
        workers and the next requests. The descriptors that came with the
        request are closed (by the library once prepare has them), the
        handle released unless a fork holds it (then the reaper does)."""
        handle = None
        try:
            if not isinstance(request, dict):
                raise _Refused("Server", f"a start request without a request object: {request!r:.200}")
            arr = (ctypes.c_int * len(fds))(*fds)
            raw = json.dumps(request).encode()
            taken, fds = fds, []  # the library's from here: closed on its failure, or by the release
            handle = lib.nodus_zygote_prepare(raw, len(raw), arr, len(taken), buf, len(buf))
            if not handle:
                tell({"op": "failed", "id": rid, "error": json.loads(buf.value)})
                return
            plan = json.loads(buf.value)
            tasks = os.listdir("/proc/self/task")
            if len(tasks) != 1:
                raise _Refused("Spawn", f"the zygote has {len(tasks)} threads; it forks single-threaded only")
            if boot_src and plan["argv"][0] not in boot_codes:
                if len(boot_codes) >= 4:
                    boot_codes.pop(next(iter(boot_codes)))
                boot_codes[plan["argv"][0]] = compile(boot_src, plan["argv"][0], "exec")
                shim_dir = os.path.join(os.path.dirname(plan["argv"][0]), "nodus_extension")
                if shim_dir not in shims:
                    if len(shims) >= 4:
                        shims.pop(next(iter(shims)))
                    shims[shim_dir] = _shim(shim_src, shim_dir)
                gc.freeze()  # their objects too: never scanned, so never written, in the forks
            sys.stderr.flush()
            try:
                pid = os.fork()
            except OSError as e:
                raise _Refused("Spawn", _fork_refused(e), e.errno) from e
            if pid == 0:
                _worker(lib, handle, plan, added, (sel, ctl, wake_r, wake_w), (boot_src, boot_codes), (shim_src, shims))
            # The fork holds the handle now: released when it is reaped.
            workers[pid] = (rid, handle, pid)
            handle = None
            try:
                ok = lib.nodus_zygote_forked(workers[pid][1], buf, len(buf))
                reaper = lib.nodus_zygote_reaper(workers[pid][1])
                if reaper > 0:
                    # The worker's reaper is our child, and the fork that
                    # made it exits: the reaper is what we wait for (so
                    # the release follows the worker's end, failed or not).
                    workers[reaper] = workers.pop(pid)
                    forks.add(pid)
                if ok != 0:
                    # A failed start runs on nowhere: its group (the fork's
                    # id, a member still unreaped) is killed.
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except OSError:
                        pass
                    tell({"op": "failed", "id": rid, "error": json.loads(buf.value)})
                    return
                answer = json.loads(buf.value)
                egress = answer.get("egress_fd")
                try:
                    send({"op": "started", "id": rid, "pid": reaper if reaper > 0 else pid},
                         [egress] if egress is not None else ())
                finally:
                    if egress is not None:
                        os.close(egress)
            except BaseException:
                # A worker nobody was told of: it must not run on.
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                raise
        except Exception as e:
            if os.getpid() != me:
                os._exit(127)  # never a second zygote (a fork's failures end in _worker)
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            if handle:
                lib.nodus_zygote_release(handle)
            if isinstance(e, _Refused):
                kind, msg, errno = e.args
                log(f"request {rid}: {msg}")
            else:
                import traceback
                kind, msg, errno = "Server", f"the fork server's zygote failed to start the worker: {e!r}", None
                log(f"request {rid} failed:\n{traceback.format_exc()}")
            error = {"class": "SandboxError", "kind": kind, "msg": msg}
            if errno is not None:
                error["errno"] = errno
            tell({"op": "failed", "id": rid, "error": error})

    def dispatch(msg, fds):
        """One message from the server; a garbled or unknown one is logged
        and its descriptors closed."""
        try:
            req = json.loads(msg)
            op = req.get("op") if isinstance(req, dict) else None
            if op == "start" and "id" in req:
                got, fds = fds, []
                start(req["id"], req.get("request"), got)
            elif op == "kill":
                for rid, _, group in workers.values():
                    if rid == req.get("id"):
                        try:
                            # Not yet reaped: the group is still the worker's
                            # (a group's id is not reused while a member,
                            # zombie or not, is left).
                            os.killpg(group, signal.SIGKILL)
                        except OSError:
                            pass
            else:
                log(f"an unknown message from the server (ignored): {msg[:200]!r}")
        except Exception as e:
            log(f"a garbled message from the server (ignored): {msg[:200]!r}: {e!r}")
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass

    if init.get("merge_pages"):
        _merge_pages(log)
    gc.collect()
    _immortalize(log)
    gc.freeze()  # the zygote's objects: never scanned, so never written, in its forks
    failed_reads = 0
    while True:
        for key, _ in sel.select():
            if key.fileobj is ctl:
                try:
                    msg, fds, _, _ = socket.recv_fds(ctl, 1 << 16, 8)
                    failed_reads = 0
                except OSError as e:
                    # Not the end of the socket (that is an empty message):
                    # a transient failure (ENOMEM, ENOBUFS), tried again a
                    # little later; one that persists (100 in a row, about
                    # a second) ends the zygote as a closed socket would.
                    failed_reads += 1
                    log(f"cannot read from the server: {e!r}")
                    if failed_reads < 100:
                        time.sleep(0.01)
                        continue
                    msg = b""
                if not msg:
                    for _, _, group in list(workers.values()):
                        try:
                            os.killpg(group, signal.SIGKILL)
                        except OSError:
                            pass
                    os._exit(0)
                dispatch(msg, fds)
            else:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            reap()


def _worker(lib, handle, plan, added, held, booted, shim):
    """In the fork: confine, then become the worker as a cold start of the
    plan's argv would be. Raises _Become in the worker."""
    import random
    import signal
    sel, ctl, wake_r, wake_w = held
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sel.close()
        ctl.close()
        os.close(wake_r)
        os.close(wake_w)
        # dup2 of the worker's pipes onto 0-2, chdir, then child.rs's
        # confinement steps; every descriptor above 2 is closed, as exec
        # would close them (all are close-on-exec by then).
        if lib.nodus_zygote_enter(handle) != 0:
            os._exit(127)
        # As a fresh interpreter would be, from here on.
        os.environ.clear()
        os.environ.update(plan["env"])
        for k, v in added.items():
            os.environ.setdefault(k, v)
        # Per-worker secrets: nothing a sibling could predict.
        random.seed()
        mp = sys.modules.get("multiprocessing.process")
        if mp is not None:
            mp.current_process().authkey = os.urandom(32)
        ts = sys.modules.get("tempfile")
        if ts is not None:
            ts.tempdir = None
            ts._name_sequence = None
        # The zygote's objects stay frozen (gc.freeze): a collection never
        # writes to their pages, which stay shared with the zygote.
        boot = plan["argv"][0]
        sys.argv[:] = plan["argv"]
        # As `python boot.py` puts boot.py's folder first, where `python -c`
        # put '' first; under -P / PYTHONSAFEPATH neither puts anything
        # there (sys.path[0] is the standard library's), and boot.py finds
        # its folder from its file name.
        if not sys.flags.safe_path:
            sys.path[0] = os.path.dirname(boot)
        try:
            _install_shim(*shim, plan["argv"][1], os.path.dirname(boot))
        except Exception:
            # Whatever went wrong, the worker imports as a cold one does.
            sys.modules.pop("nodus_extension", None)
            sys.modules.pop("nodus_extension.worker", None)
        import types
        main = types.ModuleType("__main__")
        main.__dict__.update(__file__=boot, __builtins__=__builtins__, __cached__=None)
        sys.modules["__main__"] = main
        with open(boot, "rb") as f:
            code = _boot_code(f.read(), boot, *booted)
    except BaseException:
        import traceback
        traceback.print_exc()
        os._exit(127)
    raise _Become(code, main.__dict__)


# (No file name of the worker's in this source: it is the zygote's command
# line, and tools tell workers from it by the boot shim's name in theirs.)


def _shim(sources, pkg_dir):
    """The worker shim's package (nodus_extension and its worker module) as
    a worker would import it from `pkg_dir`, executed here once from the
    sources ext-runner writes there, and kept out of sys.modules: a fork
    puts them there only where its own import would have found those very
    files (_install_shim). Importing it in every fork (the path search and
    the compile) cost each worker about 0.6 MiB of pages of its own."""
    import importlib.util
    made = {}
    for file, name in (("__init__.py", "nodus_extension"), ("worker.py", "nodus_extension.worker")):
        where = os.path.join(pkg_dir, file)
        spec = importlib.util.spec_from_file_location(
            name, where, submodule_search_locations=[pkg_dir] if file == "__init__.py" else None)
        module = importlib.util.module_from_spec(spec)
        if file == "worker.py":
            made["__init__.py"][1].worker = module
        exec(compile(sources[file], where, "exec"), module.__dict__)
        made[file] = (sources[file], module)
    return made


def _install_shim(sources, shims, script, shim_dir):
    """In a fork: the zygote's shim modules (_shim) in sys.modules, when the
    worker's own import of nodus_extension would find nothing before the
    shim (the extension's folder and the interpreter's paths searched as
    they will be: an installed reference package, or one beside the
    extension, still wins) and the shim's files hold the zygote's bytes.
    the boot shim patches an already imported worker module as it patches one on
    import. Otherwise nothing changes and the worker imports as a cold one
    does."""
    pkg_dir = os.path.join(shim_dir, "nodus_extension")
    made = shims.get(pkg_dir)
    if made is None:
        return
    import importlib.machinery
    if sys.flags.safe_path:
        path = list(sys.path)  # boot.py adds no script folder
    else:
        path = [script.rpartition("/")[0] or "."] + sys.path[1:]
    if importlib.machinery.PathFinder.find_spec("nodus_extension", path) is not None:
        return
    for file, src in sources.items():
        try:
            with open(os.path.join(pkg_dir, file), "rb") as f:
                if f.read() != src:
                    return
        except OSError:
            return
    sys.modules["nodus_extension"] = made["__init__.py"][1]
    sys.modules["nodus_extension.worker"] = made["worker.py"][1]


def _merge_pages(log):
    """serve --merge-pages: the zygote's memory, and so every fork's, made
    mergeable by KSM (docs/warm.md, "Merged pages"). Linux 6.4 and later:
    prctl(PR_SET_MEMORY_MERGE), which covers every mapping of the process,
    those mapped later included, and which a fork inherits. Before 6.4
    (EINVAL): madvise(MADV_MERGEABLE) over each private writable mapping as
    it is now, which forks inherit too; memory mapped later is not marked.
    Called once, before the last collection and freeze, with no thread."""
    import ctypes
    import errno
    libc = ctypes.CDLL(None, use_errno=True)
    # prctl is variadic in C; its five longs as unsigned longs, as the
    # x86-64 and aarch64 ABIs pass them (registers either way).
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    PR_SET_MEMORY_MERGE, MADV_MERGEABLE = 67, 12
    if libc.prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) == 0:
        return
    err = ctypes.get_errno()
    why = os.strerror(err) + ("; a kernel before 6.4" if err == errno.EINVAL else "")
    with open("/proc/self/maps") as f:
        maps = f.read().splitlines()
    marked = refused = 0
    first_refusal = None
    for line in maps:
        fields = line.split()
        perms, name = fields[1], fields[5] if len(fields) > 5 else ""
        # Private writable memory only, and none of the kernel's special
        # mappings (none of them is both today; named in case one becomes so).
        if perms[1] != "w" or perms[3] != "p" or name in ("[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]", "[uprobes]"):
            continue
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if libc.madvise(lo, hi - lo, MADV_MERGEABLE) == 0:
            marked += 1
        else:
            refused += 1
            first_refusal = first_refusal or os.strerror(ctypes.get_errno())
    if marked == 0:
        log(f"--merge-pages: prctl(PR_SET_MEMORY_MERGE) failed ({why}) and madvise(MADV_MERGEABLE) "
            f"refused all {refused} private writable mappings ({first_refusal}; a kernel without KSM?): "
            f"nothing is mergeable, the workers are served unmerged")
        return
    log(f"--merge-pages: prctl(PR_SET_MEMORY_MERGE) failed ({why}): "
        f"{marked} private writable mappings marked with madvise(MADV_MERGEABLE) instead"
        f"{f' ({refused} refused: {first_refusal})' if refused else ''}; memory a worker maps later is not merged")


def _immortalize(log):
    """CPython 3.12 and later (PEP 683): every object the zygote holds now
    made immortal, so that a worker's reads of them (Py_INCREF, Py_DECREF)
    no longer write their reference counts, and their pages stay shared
    with the zygote (docs/warm.md, "Immortal objects"). The value is the
    interpreter's own (None's low word), checked first on a probe object.
    Not on 3.11 (its counts have no immortal value: a count set so would
    reach zero) nor on a free-threaded build (another object layout).
    Called once, after the preload and the last collection, before the
    freeze: the zygote's later objects (per request) stay mortal."""
    if sys.version_info < (3, 12) or "t" in getattr(sys, "abiflags", ""):  # 't': free-threaded
        return
    import ctypes
    import gc
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        return  # a 32-bit build: another count layout, not measured
    off = 4 if sys.byteorder == "big" else 0  # the count's low 32 bits
    value = ctypes.c_uint32.from_address(id(None) + off).value
    probe = object()
    count = ctypes.c_uint32.from_address(id(probe) + off)
    before = count.value
    count.value = value
    held = [probe] * 8
    kept = value >= 0x80000000 and count.value == value
    if not kept:
        count.value = before + 8  # restored while `held` still holds it
    del held
    if not kept:
        log("the interpreter does not keep an immortal count (PEP 683) as expected: "
            "the zygote's objects stay mortal, and a worker writes more of its pages")
        return
    seen = set()
    stack = gc.get_objects()
    seen.update((id(seen), id(stack), id(probe), id(count)))  # the walk's own, freed after it
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        w = ctypes.c_uint32.from_address(id(o) + off)
        if w.value < 0x80000000:  # not immortal already (a static object, say)
            w.value = value
        stack.extend(gc.get_referents(o))
        if type(o) is type(_immortalize.__code__):  # not tracked: no referents of its own
            stack.extend((o.co_consts, o.co_names, o.co_filename, o.co_name, o.co_qualname))  # stored fields only


def _boot_code(source, path, boot_src, boot_codes):
    """The code of the worker's boot shim: the zygote's compile of the same
    bytes under the same file name, or a compile of its own if the file
    differs. Compiling in every fork wrote about 1.8 MiB of pages of its
    own into each worker (the compiler's allocations land in the zygote's
    heap and pools), and renaming a compiled code object about 0.5 MiB (the
    reference counts of every constant it holds)."""
    code = boot_codes.get(path)
    if code is None or source != boot_src:
        return compile(source, path, "exec")
    return code


class _Refused(Exception):
    """A start refused: (kind, message, errno or None), as the crate's
    SandboxError has them (error_from_json reads them back)."""

    def __init__(self, kind, msg, errno=None):
        super().__init__(kind, msg, errno)


def _fork_refused(e):
    """What a user can do about os.fork() failing in the zygote."""
    import errno
    if e.errno == errno.EAGAIN:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NPROC)[0]
        limit = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
        return (f"the fork server's zygote cannot fork a worker: fork() failed with EAGAIN "
                f"(the server's user, uid {os.getuid()}, is at its task limit: RLIMIT_NPROC {limit}, "
                f"which counts every process and thread of that uid, the server's warm workers "
                f"and their waiters included; or a pids cgroup's pids.max, or kernel.threads-max, "
                f"is reached); end some workers, raise the limit (ulimit -u) for the server, "
                f"or run the server as a user of its own")
    if e.errno == errno.ENOMEM:
        return ("the fork server's zygote cannot fork a worker: fork() failed with ENOMEM "
                "(out of memory, or the server's memory cgroup is full); free memory or end some workers")
    return f"the fork server's zygote cannot fork a worker: fork() failed: {e}"


class _Become(BaseException):
    """Unwinds the zygote's frames in a fork that is now the worker."""


try:
    _main()
except _Become as become:
    _code, _globals = become.args
    del become
    try:
        exec(_code, _globals)
    except SystemExit:
        raise
    except BaseException:
        # As an uncaught exception in a cold worker ends: the traceback
        # (without this frame) and status 1, then the interpreter's usual
        # shutdown (threads joined, atexit, streams flushed).
        _t, _v, _tb = sys.exc_info()
        sys.excepthook(_t, _v, _tb.tb_next)
        del _t, _v, _tb
        sys.exit(1)
