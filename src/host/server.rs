//! Warm starts: the fork server (`ext-runner serve`) and its client
//! (`--server PATH`, `HostOptions::server`).
//!
//! The server listens on a unix socket only its owner can reach (0600 in a
//! 0700 folder, the peer's uid checked). A client names an extension folder
//! and a workspace, nothing else: the server loads the manifest itself and
//! derives the policy from it and its own operator policy (`serve
//! --policy`), as a cold host would. For an `extension.py` worker it asks a
//! zygote (`python/shim/zygote.py`: the interpreter with the common standard
//! library imported, one per interpreter and start-up environment, started
//! when first needed) to fork one; the fork applies the cold path's
//! confinement (`child::enter`, through `host/zygote.rs`) before any
//! extension code runs. The client gets the worker's stdin, stdout and
//! stderr over the socket and speaks the protocol with it directly; the
//! connection stays open for the worker's life: the server writes how the
//! worker ended, the client writes `kill` (or hangs up, which kills it too).
//! A server that is gone is a `SandboxError` (kind `Server`), never a wait.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Error, Result, SandboxKind};
use crate::host::audit::Audit;
use crate::host::worker::Entry;
use crate::host::{HostOptions, Prepared};
use crate::sandbox::child::Failure;
use crate::sandbox::interpreter::Interpreter;
use crate::sandbox::policy::OperatorPolicy;
use crate::support::LockExt;

const ZYGOTE: &str = include_str!("../../python/shim/zygote.py");

/// What the zygote imports before it forks: the worker shim's own imports
/// and the standard library extensions commonly use (shared by every fork).
const PRELOAD: &[&str] = &[
    "json",
    "itertools",
    "io",
    "re",
    "os",
    "traceback",
    "importlib.machinery",
    "importlib.util",
    "types",
    "functools",
    "collections",
    "typing",
    "dataclasses",
    "enum",
    "pathlib",
    "datetime",
    "decimal",
    "math",
    "random",
    "string",
    "textwrap",
    "base64",
    "hashlib",
    "hmac",
    "uuid",
    "struct",
    "copy",
    "weakref",
    "contextlib",
    "time",
    "errno",
    "threading",
    "logging",
    "subprocess",
    "shutil",
    "tempfile",
    "urllib.parse",
    "socket",
    "select",
    "selectors",
    "signal",
    "asyncio",
    "inspect",
    "csv",
    "fnmatch",
    "glob",
    "heapq",
    "bisect",
    "operator",
    "zlib",
    "unicodedata",
    "locale",
    "codecs",
    "encodings.idna",
    "argparse",
    "pprint",
];

/// How long a client waits for the server's answer to a start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a client has to send its whole request line, however it
/// trickles in.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections read and started at once, each on a thread of its own; the
/// next are accepted as these end (until then they wait in the listener's
/// backlog, their `connect` done or waiting). A started worker's
/// connection is a task (`watch`) and holds none.
const CONNECTION_THREADS: usize = 64;

fn server_error(msg: impl Into<String>) -> Error {
    Error::sandbox(SandboxKind::Server, msg)
}

fn io_error(msg: impl Into<String>, e: std::io::Error) -> Error {
    let msg = format!("{}: {e}", msg.into());
    Error::sandbox_io(SandboxKind::Server, msg, e)
}

// --- errors over the wire -------------------------------------------------

/// An error as JSON, for the zygote's and the server's answers.
pub(crate) fn error_json(e: &Error) -> Value {
    let mut v = json!({"class": e.class(), "msg": e.to_string()});
    match e {
        Error::Sandbox { kind, source, .. } => {
            v["kind"] = json!(format!("{kind:?}"));
            if let SandboxKind::Confinement(step) = kind {
                v["step"] = json!(*step as u8);
            }
            if let Some(errno) = source.as_ref().and_then(|s| s.raw_os_error()) {
                v["errno"] = json!(errno);
            }
        }
        Error::Manifest { path, .. } => v["path"] = json!(path),
        Error::Capability {
            capability,
            extension,
            detail,
        } => {
            v["capability"] = json!(capability);
            v["extension"] = json!(extension);
            v["detail"] = json!(detail);
        }
        Error::Abi { abi_version, .. } => v["abi_version"] = json!(abi_version),
        _ => {}
    }
    v
}

/// The error `error_json` wrote.
pub(crate) fn error_from_json(v: &Value) -> Error {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let msg = s("msg").unwrap_or_else(|| "the fork server failed".into());
    match v.get("class").and_then(Value::as_str) {
        Some("ManifestError") => Error::Manifest {
            msg,
            path: s("path"),
        },
        Some("CapabilityError") => Error::Capability {
            capability: s("capability").unwrap_or_default(),
            extension: s("extension"),
            detail: s("detail"),
        },
        Some("AbiError") => Error::Abi {
            msg,
            abi_version: s("abi_version"),
        },
        _ => {
            let kind = match (s("kind").as_deref(), v.get("step").and_then(Value::as_u64)) {
                (_, Some(step)) => {
                    let mut b = [0u8; Failure::LEN];
                    b[0] = step as u8;
                    Failure::decode(&b)
                        .map(|f| SandboxKind::Confinement(f.step))
                        .unwrap_or(SandboxKind::Spawn)
                }
                (Some(k), None) => sandbox_kind(k),
                (None, None) => SandboxKind::Server,
            };
            let source = v
                .get("errno")
                .and_then(Value::as_i64)
                .map(|e| std::io::Error::from_raw_os_error(e as i32));
            Error::Sandbox { kind, msg, source }
        }
    }
}

fn sandbox_kind(name: &str) -> SandboxKind {
    use SandboxKind::*;
    [
        OperatorPolicy,
        KernelLacks,
        Workspace,
        Interpreter,
        EntryPoint,
        Prepare,
        Scratch,
        Cgroup,
        Spawn,
        WorkerDied,
        WorkerIo,
        Runtime,
        Server,
    ]
    .into_iter()
    .find(|k| format!("{k:?}") == name)
    .unwrap_or(Server)
}

// --- descriptors over unix sockets ----------------------------------------

fn send_with_fds(fd: RawFd, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [std::io::IoSlice::new(data)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let n = sendmsg::<()>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    if n != data.len() {
        return Err(std::io::Error::other("a short send"));
    }
    Ok(())
}

/// One message (a datagram on SOCK_SEQPACKET; on a stream, what one read
/// brings) and the descriptors that came with it, close-on-exec.
fn recv_with_fds(fd: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 8]);
    let msg = loop {
        match recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = c {
            // SAFETY: each descriptor was just installed in this process by
            // the kernel (SCM_RIGHTS) and nothing else refers to it.
            #[allow(unsafe_code)]
            fds.extend(
                received
                    .into_iter()
                    .map(|f| unsafe { OwnedFd::from_raw_fd(f) }),
            );
        }
    }
    Ok((msg.bytes, fds))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io_error("cannot make the worker's pipes", e.into()))
}

// --- the server -------------------------------------------------------------

/// `ext-runner serve`'s settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub socket: PathBuf,
    pub python: OsString,
    pub operator: OperatorPolicy,
    /// Where the egress proxies of warm workers record their events.
    pub audit: Audit,
    /// How many spare workers it keeps started ahead (`serve --spares`).
    pub spares: usize,
    /// Whether its zygotes mark their memory, and so their workers',
    /// mergeable by KSM (`serve --merge-pages`; docs/warm.md, "Merged pages").
    pub merge_pages: bool,
}

/// The start-up environment a zygote was started with (see `startup_env`).
type StartupEnv = Vec<(String, String)>;

struct Server {
    options: ServeOptions,
    interpreter: Interpreter,
    lib: PathBuf,
    runtime: tokio::runtime::Handle,
    zygotes: Mutex<HashMap<StartupEnv, Arc<Zygote>>>,
    next_id: AtomicU64,
    spares: Mutex<HashMap<SpareKey, Spare>>,
    /// Spares being started now: at most `spares` of them, so that a burst
    /// of requests for distinct extensions or workspaces does not start as
    /// many spares behind them (each with its leases) only to keep N.
    making: std::sync::atomic::AtomicUsize,
}

enum Event {
    Started {
        pid: i32,
        egress: Option<OwnedFd>,
    },
    Failed(Error),
    /// The wait status, and whether the memory cgroup's OOM killer acted.
    Exited(i32, bool),
    Gone,
}

/// Who is told of a worker's events: the thread starting it, until it has
/// started; then its connection's task (`watch`), told of its end alone.
enum Waiter {
    Start(mpsc::Sender<Event>),
    End(tokio::sync::oneshot::Sender<Event>),
}

impl Waiter {
    fn tell(self, event: Event) {
        let _ = match self {
            Waiter::Start(tx) => tx.send(event).map_err(drop),
            Waiter::End(tx) => tx.send(event).map_err(drop),
        };
    }
}

struct Zygote {
    ctl: OwnedFd,
    send_lock: Mutex<()>,
    waiters: Mutex<HashMap<u64, Waiter>>,
    alive: AtomicBool,
    /// The write end of its stdin, kept open (an empty pipe, like a worker's
    /// before the host writes).
    _stdin: OwnedFd,
}

impl Zygote {
    fn send(&self, msg: &Value, fds: &[RawFd]) -> std::io::Result<()> {
        let _held = self.send_lock.locked();
        send_with_fds(self.ctl.as_raw_fd(), msg.to_string().as_bytes(), fds)
    }

    fn kill(&self, id: u64) {
        let _ = self.send(&json!({"op": "kill", "id": id}), &[]);
    }
}

/// Where the zygote's confinement code is: this crate as a shared library,
/// beside the running binary (cargo builds it with the binary), or
/// `NODUS_EXTENSION_LIB`.
fn find_lib() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("NODUS_EXTENSION_LIB") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| io_error("cannot find ext-runner itself", e))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [
        dir.join("libnodus_extension.so"),
        dir.join("deps/libnodus_extension.so"),
        dir.join("../libnodus_extension.so"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
        .ok_or_else(|| {
            server_error(format!(
                "the fork server needs libnodus_extension.so (this crate's confinement code, which cargo builds beside ext-runner) in {} or NODUS_EXTENSION_LIB",
                dir.display()
            ))
        })
}

/// Makes the socket's folder (0700) or checks it is the owner's alone, and binds.
fn bind(socket: &Path) -> Result<UnixListener> {
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)
            .map_err(|e| {
                io_error(
                    format!("cannot make the socket's folder {}", dir.display()),
                    e,
                )
            })?;
    }
    let meta = std::fs::symlink_metadata(&dir)
        .map_err(|e| io_error(format!("socket folder {}", dir.display()), e))?;
    let me = nix::unistd::getuid().as_raw();
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        return Err(server_error(format!(
            "the socket's folder {} must be a folder of yours that nobody else can enter (mode 0700); it is {:o}, owned by uid {}: use a fresh folder, or chmod 700 it",
            dir.display(),
            meta.mode() & 0o7777,
            meta.uid()
        )));
    }
    if std::fs::symlink_metadata(socket).is_ok() {
        if UnixStream::connect(socket).is_ok() {
            return Err(server_error(format!(
                "a fork server already listens on {}",
                socket.display()
            )));
        }
        std::fs::remove_file(socket).map_err(|e| {
            io_error(
                format!("cannot remove the stale socket {}", socket.display()),
                e,
            )
        })?;
    }
    let listener = UnixListener::bind(socket)
        .map_err(|e| io_error(format!("cannot listen on {}", socket.display()), e))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io_error(format!("cannot chmod {}", socket.display()), e))?;
    Ok(listener)
}

/// Serves until killed. Call from a blocking thread of a tokio runtime
/// (the egress proxies of warm workers run on it).
pub fn serve(options: ServeOptions, runtime: tokio::runtime::Handle) -> Result<()> {
    let interpreter = Interpreter::resolve(&options.python)?;
    let lib = find_lib()?;
    let listener = bind(&options.socket)?;
    if options.merge_pages {
        eprintln!(
            "ext-runner serve: {}",
            merge_pages_notice(ksm_run().as_deref())
        );
    }
    let server = Arc::new(Server {
        options,
        interpreter,
        lib,
        runtime,
        zygotes: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        spares: Mutex::new(HashMap::new()),
        making: std::sync::atomic::AtomicUsize::new(0),
    });
    let slots = Arc::new(Slots::default());
    for conn in listener.incoming() {
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors (EMFILE, ENFILE) or memory: the
                // pending connection stays pending, so an immediate retry
                // fails the same way and spins. Wait for some to close.
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
                ) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
        };
        let slot = slots.take(CONNECTION_THREADS);
        let server = server.clone();
        let spawned = std::thread::Builder::new()
            .name("connection".into())
            .spawn(move || {
                let _slot = slot;
                server.connection(conn)
            });
        if spawned.is_err() {
            // Out of threads (a task limit): this client's connection is
            // closed unanswered (the closure is dropped), the others go on.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// One read of `conn` that ends by `deadline` (a `TimedOut` error once it
/// has passed): a client that trickles bytes holds a thread until then and
/// no longer, where a timeout of each read would let it hold one forever.
fn read_by(conn: &UnixStream, deadline: Instant, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        conn.set_read_timeout(Some(left))?;
        match std::io::Read::read(&mut &*conn, buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(std::io::ErrorKind::TimedOut.into())
            }
            got => return got,
        }
    }
}

/// The connection threads running (at most `CONNECTION_THREADS`).
#[derive(Default)]
struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
}

/// One connection thread's place, given back when it ends.
struct Slot(Arc<Slots>);

impl Slots {
    /// Waits until fewer than `max` are in use, then takes one.
    fn take(self: &Arc<Self>, max: usize) -> Slot {
        let mut used = self.used.locked();
        while *used >= max {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *used += 1;
        Slot(self.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.used.locked() -= 1;
        self.0.freed.notify_one();
    }
}

/// `/sys/kernel/mm/ksm/run` as read now: `Some("1")` while KSM merges,
/// `None` without KSM (a kernel built without it, or no /sys).
fn ksm_run() -> Option<String> {
    std::fs::read_to_string("/sys/kernel/mm/ksm/run")
        .ok()
        .map(|v| v.trim().to_string())
}

/// What `serve --merge-pages` tells its operator at start: the trade-off it
/// makes, and whether anything will be merged on this host.
fn merge_pages_notice(run: Option<&str>) -> String {
    let state = match run {
        Some("1") => "KSM is running (/sys/kernel/mm/ksm/run is 1)".to_string(),
        Some(v) => format!(
            "KSM is not running (/sys/kernel/mm/ksm/run is {v}): nothing is merged until root runs \
             `echo 1 > /sys/kernel/mm/ksm/run`"
        ),
        None => "this kernel has no KSM (no /sys/kernel/mm/ksm/run): nothing is merged".to_string(),
    };
    format!(
        "--merge-pages: the warm workers' memory is mergeable by KSM; {state}. Merged pages are \
         a timing side channel between the processes that share them (a worker can tell whether \
         a page it guesses exists in another mergeable process), and on DRAM prone to bit flips \
         they widen Rowhammer's reach: use it where that is acceptable (docs/security.md, \
         \"Merged pages\")"
    )
}

/// What a client asks for.
#[derive(Deserialize)]
struct ClientRequest {
    dir: PathBuf,
    workspace: Option<PathBuf>,
    #[serde(default)]
    verbose: bool,
}

/// The variables a Python process reads when it starts (and the C library
/// when it loads): a zygote started with other values cannot stand in for
/// the interpreter's start, so zygotes are kept per set of them.
fn startup_env(policy: &crate::sandbox::policy::Policy) -> Vec<(String, String)> {
    policy
        .environment
        .iter()
        .filter(|(k, v)| {
            v.as_str() != "$SCRATCH"
                && (k.starts_with("PYTHON")
                    || k.starts_with("LC_")
                    || k.starts_with("MALLOC_")
                    || k.starts_with("LD_")
                    || k.as_str() == "LANG"
                    || k.as_str() == "GLIBC_TUNABLES")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Server {
    /// One client's connection: its worker started on this thread, then
    /// watched by a task on the server's runtime until it ends (a thread
    /// per idle worker cost the server about 40 KiB each: docs/warm.md,
    /// "Memory per worker: the server").
    fn connection(self: &Arc<Self>, conn: UnixStream) {
        match self.start(&conn) {
            Ok(started) => {
                drop(self.runtime.spawn(watch(conn, started)));
            }
            Err(e) => {
                let line = format!("{}\n", json!({"error": error_json(&e)}));
                let _ = (&conn).write_all(line.as_bytes());
                // Whatever the client still sends is read (up to 64 KiB, for
                // 2 s in all), so that it gets to read this answer rather
                // than a reset connection.
                let _ = conn.shutdown(std::net::Shutdown::Write);
                let deadline = Instant::now() + Duration::from_secs(2);
                let (mut buf, mut drained) = ([0u8; 4096], 0);
                while drained < 1 << 16 {
                    match read_by(&conn, deadline, &mut buf) {
                        Ok(n) if n > 0 => drained += n,
                        _ => break,
                    }
                }
            }
        }
    }

    fn zygote(&self, key: Vec<(String, String)>) -> Result<Arc<Zygote>> {
        let mut zygotes = self.zygotes.locked();
        if let Some(z) = zygotes.get(&key) {
            if z.alive.load(Ordering::SeqCst) {
                return Ok(z.clone());
            }
        }
        let z = self.start_zygote(&key)?;
        zygotes.insert(key, z.clone());
        Ok(z)
    }

    fn start_zygote(&self, key: &[(String, String)]) -> Result<Arc<Zygote>> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| io_error("cannot make the zygote's socket", e.into()))?;
        // A zygote that stops reading fails the sends to it (a start's, a
        // kill's) in START_TIMEOUT rather than holding their threads.
        nix::sys::socket::setsockopt(
            &ours,
            nix::sys::socket::sockopt::SendTimeout,
            &nix::sys::time::TimeVal::new(START_TIMEOUT.as_secs() as _, 0),
        )
        .map_err(|e| io_error("cannot set the zygote's socket send timeout", e.into()))?;
        let (stdin_r, stdin_w) = pipe()?;
        let mut env: Vec<(String, String)> = key.to_vec();
        // Room in the zygote's initial environment block, which a worker's
        // /proc/PID/environ shows: each worker's environment is written over
        // it (as its argv is over the command line), so that what outsiders
        // read is the worker's own, not the zygote's. No TMPDIR: the zygote's
        // scratch folders go to the default temporary folder.
        env.push(("NODUS_ZYGOTE_ROOM".into(), "-".repeat(8192)));
        // The zygote's own binary is the interpreter: it finds `ext-reaper`
        // (which its workers' monitor and reaper exec) through the server.
        if let Some(p) = crate::sandbox::launch::waiter_path() {
            env.push((
                "NODUS_EXTENSION_REAPER".into(),
                p.to_string_lossy().into_owned(),
            ));
        }
        let init = json!({"preload": PRELOAD, "merge_pages": self.options.merge_pages, "env": env.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<String, Value>>()});
        let mut cmd = std::process::Command::new(&self.interpreter.exec_path);
        cmd.args(["-s", "-B", "-c", ZYGOTE])
            .arg(&self.lib)
            .arg(init.to_string())
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(std::process::Stdio::from(stdin_r))
            .stdout(std::process::Stdio::from(theirs))
            .stderr(std::process::Stdio::inherit());
        // Forked from the launcher thread, which lives as long as the
        // server: the zygote's parent-death signal fires when the thread
        // that forked it ends.
        let (tx, rx) = mpsc::sync_channel(1);
        crate::sandbox::launch::launcher_run(Box::new(move || {
            let _ = tx.send(cmd.spawn());
        }))?;
        let spawned = rx
            .recv()
            .map_err(|_| server_error("the launcher thread ended before answering"))?;
        let mut child = spawned.map_err(|e| {
            io_error(
                format!(
                    "cannot start the zygote {}",
                    self.interpreter.exec_path.display()
                ),
                e,
            )
        })?;
        let zygote = Arc::new(Zygote {
            ctl: ours,
            send_lock: Mutex::new(()),
            waiters: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
            _stdin: stdin_w,
        });
        let z = zygote.clone();
        // Under a task limit the thread may not be made: then this start
        // fails, and the zygote is killed and reaped.
        let zygote_pid = child.id();
        let reader = std::thread::Builder::new().name("zygote-reader".into());
        reader
            .spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let (n, mut fds) = match recv_with_fds(z.ctl.as_raw_fd(), &mut buf) {
                        Ok((0, _)) | Err(_) => break,
                        Ok(got) => got,
                    };
                    let Ok(msg) = serde_json::from_slice::<Value>(&buf[..n]) else {
                        continue;
                    };
                    let id = msg["id"].as_u64().unwrap_or(0);
                    let event = match msg["op"].as_str() {
                        Some("started") => Event::Started {
                            pid: msg["pid"].as_i64().unwrap_or(0) as i32,
                            egress: fds.pop(),
                        },
                        Some("failed") => Event::Failed(error_from_json(&msg["error"])),
                        Some("exited") => Event::Exited(
                            msg["status"].as_i64().unwrap_or(0) as i32,
                            msg["oom_killed"].as_bool().unwrap_or(false),
                        ),
                        _ => continue,
                    };
                    let mut waiters = z.waiters.locked();
                    match waiters.get(&id) {
                        Some(Waiter::Start(tx)) => {
                            let _ = tx.send(event);
                        }
                        Some(Waiter::End(_)) => {
                            if let Some(w) = waiters.remove(&id) {
                                w.tell(event);
                            }
                        }
                        None => {}
                    }
                }
                z.alive.store(false, Ordering::SeqCst);
                for (_, w) in z.waiters.locked().drain() {
                    w.tell(Event::Gone);
                }
                let _ = child.wait();
            })
            .map_err(|e| {
                // Reaped here, not left a zombie that a task limit counts.
                let pid = nix::unistd::Pid::from_raw(zygote_pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
                io_error("cannot make the thread that reads the zygote", e)
            })?;
        Ok(zygote)
    }

    fn start(self: &Arc<Self>, conn: &UnixStream) -> Result<Started> {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let peer = getsockopt(conn, PeerCredentials)
            .map_err(|e| io_error("cannot read the client's credentials", e.into()))?;
        if peer.uid() != nix::unistd::getuid().as_raw() {
            return Err(server_error(format!(
                "uid {} may not use this fork server (only its owner may)",
                peer.uid()
            )));
        }
        // Byte by byte up to the newline: what follows (`kill`) is the
        // watcher's. The whole line within REQUEST_TIMEOUT, not each read.
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let late = || {
            server_error(format!(
                "the request line did not arrive within {} s",
                REQUEST_TIMEOUT.as_secs()
            ))
        };
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.len() < 1 << 16 && !line.ends_with(b"\n") {
            match read_by(conn, deadline, &mut byte) {
                Ok(0) => break,
                Ok(_) => line.push(byte[0]),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(late()),
                Err(e) => return Err(io_error("reading the request", e)),
            }
        }
        let line = String::from_utf8_lossy(&line);
        let req: ClientRequest =
            serde_json::from_str(&line).map_err(|e| server_error(format!("a bad request: {e}")))?;
        if !req.dir.is_absolute() || req.workspace.as_ref().is_some_and(|w| !w.is_absolute()) {
            return Err(server_error(
                "the extension folder and workspace must be absolute paths",
            ));
        }
        let key = SpareKey {
            dir: req.dir,
            workspace: req.workspace,
            verbose: req.verbose,
        };
        let mut ext = self.prepare(&key)?;
        let mut started = match self.take_spare(&key, &ext) {
            Some(spare) => spare,
            None => self.start_worker(&ext, &key)?,
        };
        // Not held while the worker runs: the derivation (policy, manifest,
        // compiled filters) was about 110 KiB of this process per idle
        // worker (docs/warm.md, "Memory per worker: the server").
        // What this worker's confinement gave up, for the client to show:
        // the policy is derived here, from the server's operator policy,
        // and a client derives none of its own.
        let degraded = std::mem::take(&mut ext.policy.degraded);
        drop(ext);
        let line = format!(
            "{}\n",
            json!({"started": {"pid": started.pid, "degraded": degraded}})
        );
        let ours = started.ours.take().expect("a worker not handed over yet");
        send_with_fds(
            conn.as_raw_fd(),
            line.as_bytes(),
            &[
                ours[0].as_raw_fd(),
                ours[1].as_raw_fd(),
                ours[2].as_raw_fd(),
            ],
        )
        .map_err(|e| io_error("answering the client", e))?;
        drop(ours);
        if self.options.spares > 0 {
            let me = self.clone();
            // No thread (a task limit): no spare this time, as when N
            // spares are being made already.
            let _ = std::thread::Builder::new()
                .name("spare".into())
                .spawn(move || me.make_spare(key));
        }
        Ok(started)
    }

    /// The server's own derivation, from the manifest and its operator
    /// policy: what the zygote will derive again, with the same inputs.
    fn prepare(&self, key: &SpareKey) -> Result<Prepared> {
        let options = HostOptions {
            python: self.interpreter.exec_path.clone().into_os_string(),
            workspace: key.workspace.clone(),
            operator: self.options.operator.clone(),
            forked_by_zygote: true,
            ..HostOptions::default()
        };
        let ext = Prepared::new(&key.dir, &options)?;
        if !matches!(ext.entry, Entry::Python { .. }) {
            return Err(server_error(
                "the fork server starts extension.py workers; this extension has a native \"entry\": start it without --server",
            ));
        }
        Ok(ext)
    }

    /// A worker for `ext` from its zygote, started and confined: its pipes'
    /// other ends and, with egress by host name, its proxy.
    fn start_worker(&self, ext: &Prepared, key: &SpareKey) -> Result<Started> {
        let zygote = self.zygote(startup_env(&ext.policy))?;
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        zygote.waiters.locked().insert(id, Waiter::Start(tx));
        let mut started = Started {
            zygote,
            id,
            rx,
            pid: 0,
            ours: Some([in_w, out_r, err_r]),
            _proxy: None,
            ended: false,
        };
        let request = json!({"op": "start", "id": id, "request": {
            "dir": ext.dir,
            "workspace": key.workspace,
            "python": self.interpreter.exec_path,
            "operator": self.options.operator,
            "verbose": key.verbose,
        }});
        let gone = || server_error("the fork server's zygote ended (see the server's stderr)");
        started
            .zygote
            .send(
                &request,
                &[in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
            )
            .map_err(|_| gone())?;
        drop((in_r, out_w, err_w));
        let (pid, egress) = match started.rx.recv_timeout(START_TIMEOUT) {
            Ok(Event::Started { pid, egress }) => (pid, egress),
            Ok(Event::Failed(e)) => return Err(e),
            _ => return Err(gone()),
        };
        started.pid = pid;
        if let (Some(fd), Some(plan)) = (egress, &ext.policy.egress) {
            let _rt = self.runtime.enter();
            let listener = std::net::TcpListener::from(fd);
            listener
                .set_nonblocking(true)
                .map_err(|e| io_error("egress socket", e))?;
            started._proxy = Some(crate::host::egress::serve(
                listener,
                plan.clone(),
                self.options.audit.clone(),
                &ext.policy.extension,
            )?);
        }
        Ok(started)
    }

    /// Starts a spare worker for `key` (after a request for it), kept
    /// until the next request for it, at most `spares` of them (the oldest
    /// goes). Nothing when the extension's folder is too large to be
    /// fingerprinted or the start fails (the next request starts its own).
    fn make_spare(&self, key: SpareKey) {
        struct Making<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Making<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _making = Making(&self.making);
        if self.making.fetch_add(1, Ordering::SeqCst) >= self.options.spares {
            return; // N starts of spares under way already
        }
        // Taken before the fingerprint: of two spares for one key, the one
        // whose fingerprint is the later is kept (a start that ends last may
        // have begun first, on files since changed).
        let made = std::time::Instant::now();
        let Some(files) = fingerprint(&key.dir, key.workspace.as_deref()) else {
            return;
        };
        let Ok(ext) = self.prepare(&key) else {
            return;
        };
        let Ok(started) = self.start_worker(&ext, &key) else {
            return;
        };
        let spare = Spare {
            policy: ext.policy,
            files,
            started,
            made,
        };
        // Killed after the lock is let go (a kill is a send to the zygote).
        let _gone: Option<Spare> = {
            let mut spares = self.spares.locked();
            match spares.get(&key) {
                Some(other) if other.made > spare.made => Some(spare),
                Some(_) => spares.insert(key, spare),
                None => {
                    let oldest = (spares.len() >= self.options.spares)
                        .then(|| {
                            spares
                                .iter()
                                .min_by_key(|(_, s)| s.made)
                                .map(|(k, _)| k.clone())
                        })
                        .flatten();
                    spares.insert(key, spare);
                    oldest.and_then(|k| spares.remove(&k))
                }
            }
        };
    }

    /// The spare for `key`, if it was started for what `ext` is now: the
    /// same policy, the extension's files unchanged since (else it would
    /// run code the folder no longer holds), and still running.
    fn take_spare(&self, key: &SpareKey, ext: &Prepared) -> Option<Started> {
        let spare = self.spares.locked().remove(key)?;
        if spare.policy != ext.policy
            || fingerprint(&key.dir, key.workspace.as_deref()).as_ref() != Some(&spare.files)
        {
            return None; // dropped: killed
        }
        match spare.started.rx.try_recv() {
            Err(mpsc::TryRecvError::Empty) => Some(spare.started),
            _ => None, // it has ended (its import failed, say): a start of its own says why
        }
    }
}

/// What a spare worker is started for; a request asking the same gets it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SpareKey {
    dir: PathBuf,
    workspace: Option<PathBuf>,
    verbose: bool,
}

/// A worker started ahead of its request (`serve --spares`).
struct Spare {
    /// The server's derivation when it started: a request is given it only
    /// if its own derivation is the same.
    policy: crate::sandbox::policy::Policy,
    files: Fingerprint,
    started: Started,
    made: std::time::Instant,
}

/// What a spare was started on, compared when it is handed out: the
/// extension folder's entries, (path, device, inode, length, modification
/// and status-change times in nanoseconds), sorted, and the device and
/// inode of the folder itself and of the workspace (as its canonical path
/// names it). The status-change time is the kernel's own (no `utime`
/// sets it): a file rewritten in place to the same length with its
/// modification time put back (`cp -p`, `touch -r`) still differs. The
/// workspace's inode: a workspace renamed away and replaced by a new folder
/// at the same path is not the one the spare's Landlock rules and mounts
/// were opened on.
type Fingerprint = Vec<(PathBuf, u64, u64, u64, i128, i128)>;

/// `dir`'s and `workspace`'s [`Fingerprint`], or None beyond 512 entries
/// or if either cannot be read (no spare then).
fn fingerprint(dir: &Path, workspace: Option<&Path>) -> Option<Fingerprint> {
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    let entry = |p: PathBuf, m: &std::fs::Metadata| {
        (
            p,
            m.dev(),
            m.ino(),
            m.len(),
            ns(m.mtime(), m.mtime_nsec()),
            ns(m.ctime(), m.ctime_nsec()),
        )
    };
    let mut out = Vec::new();
    // The folder and the workspace themselves, followed as the start
    // follows them; a workspace by its canonical path, as the policy has it.
    out.push(entry(dir.to_path_buf(), &std::fs::metadata(dir).ok()?));
    if let Some(w) = workspace {
        let w = std::fs::canonicalize(w).ok()?;
        let m = std::fs::metadata(&w).ok()?;
        // Only which folder it is: its contents are the extension's to change.
        out.push((w, m.dev(), m.ino(), 0, 0, 0));
    }
    let own = out.len();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).ok()? {
            let p = e.ok()?.path();
            let m = std::fs::symlink_metadata(&p).ok()?;
            if m.is_dir() {
                todo.push(p.clone());
            }
            out.push(entry(p, &m));
            if out.len() - own > 512 {
                return None;
            }
        }
    }
    out.sort();
    Some(out)
}

/// A worker the zygote started for a request, until its connection is
/// done: killed (if still running) and its waiter forgotten on drop.
struct Started {
    zygote: Arc<Zygote>,
    id: u64,
    rx: mpsc::Receiver<Event>,
    pid: i32,
    /// The ends of its stdin, stdout and stderr pipes the client gets.
    ours: Option<[OwnedFd; 3]>,
    _proxy: Option<crate::host::egress::EgressProxy>,
    /// Its end was told (or it was killed already): nothing left to kill.
    ended: bool,
}

impl Started {
    /// From here on its end goes to a task: the receiver of its `Exited`
    /// (or `Gone`), which may have come already.
    fn end(&mut self) -> impl std::future::Future<Output = Option<Event>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Under the lock the zygote's reader tells under: what it told
        // before is in `rx` of the start, what it tells after goes to `tx`.
        self.zygote
            .waiters
            .locked()
            .insert(self.id, Waiter::End(tx));
        let early = self.rx.try_recv().ok();
        async move {
            match early {
                Some(event) => Some(event),
                None => rx.await.ok(),
            }
        }
    }
}

/// A started worker's connection until the worker ends: the client's
/// `kill` line, or its hang-up, kills it; its end is written back, then the
/// connection is closed. A task, not a thread: idle workers cost the
/// server no stack each, and a line is read 64 bytes at a time, at most
/// 16 kept (anything longer is not `kill`). The kill is one message to the
/// zygote, sent once (however many `kill` lines come) and on a blocking
/// thread: a zygote busy with a start fills its socket, and the send would
/// stall the runtime every other connection and proxy runs on.
async fn watch(conn: UnixStream, mut started: Started) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let end = started.end();
    let conn = conn
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(conn));
    let Ok(mut conn) = conn else {
        return; // not watchable: as a hang-up (Started's drop kills it)
    };
    let (z, id) = (started.zygote.clone(), started.id);
    let kill = move || {
        let z = z.clone();
        drop(tokio::task::spawn_blocking(move || z.kill(id)));
    };
    tokio::pin!(end);
    let (mut buf, mut line, mut long, mut reading) = ([0u8; 64], Vec::new(), false, true);
    let event = loop {
        tokio::select! {
            event = &mut end => break event,
            got = conn.read(&mut buf), if reading => match got {
                Ok(n) if n > 0 => {
                    for &b in &buf[..n] {
                        if b == b'\n' {
                            if !long && line.trim_ascii() == b"kill" && !started.ended {
                                started.ended = true;
                                kill();
                            }
                            (line, long) = (Vec::new(), false);
                        } else if line.len() < 16 {
                            line.push(b);
                        } else {
                            long = true;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                _ => {
                    reading = false;
                    if !std::mem::replace(&mut started.ended, true) {
                        kill();
                    }
                }
            },
        }
    };
    started.ended = true;
    let end = match event {
        Some(Event::Exited(status, oom_killed)) => {
            json!({"exited": status, "oom_killed": oom_killed})
        }
        _ => json!({"gone": "the fork server's zygote ended"}),
    };
    let _ = conn.write_all(format!("{end}\n").as_bytes()).await;
    let _ = conn.shutdown().await;
}

impl Drop for Started {
    fn drop(&mut self) {
        if !self.ended {
            self.zygote.kill(self.id);
        }
        self.zygote.waiters.locked().remove(&self.id);
    }
}

// --- the client -------------------------------------------------------------

/// A worker the server started for us: its pipes, and the connection that
/// says how it ends and takes our `kill`.
pub struct WarmStart {
    pub pid: i32,
    /// What the worker's confinement gave up (its policy's `degraded`).
    pub degraded: Vec<String>,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub conn: UnixStream,
}

/// Asks the server at `socket` for a worker of the extension in `dir`.
pub fn start(
    socket: &Path,
    dir: &Path,
    workspace: Option<&Path>,
    verbose: bool,
) -> Result<WarmStart> {
    request(socket, dir, workspace, verbose)?.answer()
}

/// A start asked of the server, its answer not read yet: the server derives
/// the policy, prepares and confines the worker meanwhile, so a host does
/// its own preparation in between (`ExtensionHost::load`) instead of
/// before asking.
#[derive(Debug)]
pub struct Requested {
    conn: UnixStream,
    sent: std::io::Result<()>,
    shown: String,
}

/// Sends the start request for the extension in `dir` (the first half of
/// [`start`]); [`Requested::answer`] reads the answer.
pub fn request(
    socket: &Path,
    dir: &Path,
    workspace: Option<&Path>,
    verbose: bool,
) -> Result<Requested> {
    let shown = socket.display();
    let conn = UnixStream::connect(socket).map_err(|e| {
        io_error(
            format!(
                "no fork server at {shown} (start one with `ext-runner serve --socket {shown}`)"
            ),
            e,
        )
    })?;
    let absolute =
        |p: &Path| std::path::absolute(p).map_err(|e| io_error(format!("{}", p.display()), e));
    let workspace = workspace.map(absolute).transpose()?;
    let request = json!({"dir": absolute(dir)?, "workspace": workspace, "verbose": verbose});
    // A refusal may come before the request is read: the answer says why.
    let sent = (&conn).write_all(format!("{request}\n").as_bytes());
    Ok(Requested {
        conn,
        sent,
        shown: shown.to_string(),
    })
}

impl Requested {
    /// Waits for the server's answer: the worker's pipes, or its error.
    pub fn answer(self) -> Result<WarmStart> {
        let Requested { conn, sent, shown } = self;
        answer(conn, sent, &shown)
    }
}

fn answer(conn: UnixStream, sent: std::io::Result<()>, shown: &str) -> Result<WarmStart> {
    conn.set_read_timeout(Some(START_TIMEOUT))
        .map_err(|e| io_error("socket", e))?;
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut buf = [0u8; 4096];
    while !line.contains(&b'\n') {
        let (n, got) = recv_with_fds(conn.as_raw_fd(), &mut buf)
            .map_err(|e| io_error(format!("the fork server at {shown} did not answer"), e))?;
        if n == 0 {
            if let Err(e) = sent {
                return Err(io_error(format!("the fork server at {shown} is gone"), e));
            }
            return Err(server_error(format!(
                "the fork server at {shown} closed the connection without starting the worker"
            )));
        }
        line.extend_from_slice(&buf[..n]);
        fds.extend(got);
    }
    let answer: Value = serde_json::from_slice(&line)
        .map_err(|e| server_error(format!("the fork server at {shown} answered garbage: {e}")))?;
    if let Some(e) = answer.get("error") {
        return Err(error_from_json(e));
    }
    let pid = answer["started"]["pid"].as_i64().unwrap_or(0) as i32;
    // A server of an older build says nothing of it: not "nothing given up".
    let degraded = match answer["started"]["degraded"].as_array() {
        Some(d) => d.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
        None => vec![format!(
            "the fork server at {shown} did not say what this worker's confinement gave up (a server of an older build: restart it)"
        )],
    };
    let [stdin, stdout, stderr]: [OwnedFd; 3] = fds
        .try_into()
        .map_err(|_| server_error(format!("the fork server at {shown} sent no pipes")))?;
    conn.set_read_timeout(None)
        .map_err(|e| io_error("socket", e))?;
    Ok(WarmStart {
        pid,
        degraded,
        stdin,
        stdout,
        stderr,
        conn,
    })
}

/// The worker's end as the connection tells it, and our `kill`.
pub struct WarmChild {
    pub pid: i32,
    writer: Arc<UnixStream>,
    reader: tokio::io::BufReader<tokio::net::UnixStream>,
    status: Option<std::io::Result<std::process::ExitStatus>>,
    /// The server's word that the worker's memory cgroup's OOM killer
    /// killed it (the cgroup is the server's: we cannot read it).
    oom_killed: bool,
}

impl WarmChild {
    /// From a started worker's connection; in a tokio runtime.
    pub fn new(pid: i32, conn: UnixStream) -> std::io::Result<WarmChild> {
        let writer = Arc::new(conn.try_clone()?);
        conn.set_nonblocking(true)?;
        let reader = tokio::io::BufReader::new(tokio::net::UnixStream::from_std(conn)?);
        Ok(WarmChild {
            pid,
            writer,
            reader,
            status: None,
            oom_killed: false,
        })
    }

    /// Something that kills the worker (through the server, which holds it).
    pub fn killer(&self) -> Arc<UnixStream> {
        self.writer.clone()
    }

    /// Whether the server said the worker went over its memory cgroup's
    /// limit (known once [`WarmChild::wait`] returned).
    pub fn oom_killed(&self) -> bool {
        self.oom_killed
    }

    /// Waits for the worker's end; an error when the server went away.
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        use tokio::io::AsyncBufReadExt;
        if self.status.is_none() {
            let mut line = String::new();
            let got = self.reader.read_line(&mut line).await;
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            self.oom_killed = v["oom_killed"].as_bool().unwrap_or(false);
            self.status = Some(match (got, v["exited"].as_i64()) {
                (Ok(_), Some(status)) => Ok(std::process::ExitStatus::from_raw(status as i32)),
                _ => Err(std::io::Error::other("the fork server is gone")),
            });
        }
        match self.status.as_ref().expect("set above") {
            Ok(s) => Ok(*s),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }
}

/// Writes `kill` to a warm worker's connection (best effort: a server that
/// is gone took the worker with it).
pub fn kill(conn: &UnixStream) {
    let mut w = conn;
    let _ = w.write_all(b"kill\n");
}
