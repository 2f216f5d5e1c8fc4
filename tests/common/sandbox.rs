//! Helpers for the security suite (`tests/security.rs`, `tests/layer_matrix.rs`):
//! real workers started through the real `ext-runner`, as root and as an
//! unprivileged user, and the means to judge them from outside: traps that
//! count what reaches them, victims whose state the test reads in `/proc`,
//! canary files, and the runner's whole transcript.
//!
//! The worker is one generic `extension.py` whose tool `sec.run` exec()s a
//! Python snippet and returns its `result` (or the exception text), so each
//! attack is a short snippet plus a check made by the test. The same prelude
//! runs outside the sandbox (`plain`), which is how a test proves its check
//! can fail.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{procfs, TempDir};

/// The unprivileged identity of the suite (`nobody` on Debian).
pub const NOBODY: u32 = 65534;
/// The interpreter the unprivileged runs use (root's pyenv is under 0700 /root).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// Who runs `ext-runner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Who {
    Root,
    Nobody,
}

impl Who {
    pub const BOTH: [Who; 2] = [Who::Root, Who::Nobody];

    pub fn label(self) -> &'static str {
        match self {
            Who::Root => "root",
            Who::Nobody => "nobody",
        }
    }

    pub fn uid(self) -> u32 {
        match self {
            Who::Root => 0,
            Who::Nobody => NOBODY,
        }
    }

    /// The worker interpreter for this identity.
    pub fn python(self) -> PathBuf {
        match self {
            Who::Root => crate::common::python().to_path_buf(),
            Who::Nobody => PathBuf::from(SYSTEM_PYTHON),
        }
    }

    /// A command that runs `program` as this identity.
    pub fn command(self, program: impl AsRef<OsStr>) -> Command {
        match self {
            Who::Root => Command::new(program),
            Who::Nobody => {
                let mut c = Command::new("setpriv");
                c.args([
                    "--reuid",
                    &NOBODY.to_string(),
                    "--regid",
                    &NOBODY.to_string(),
                    "--clear-groups",
                ])
                .arg(program);
                c
            }
        }
    }

    /// Whether this identity can run the suite here; prints a SKIP line when not.
    /// Under CI a missing unprivileged setup is an error, not a skip.
    pub fn available(self) -> bool {
        static NOBODY_OK: OnceLock<Result<(), String>> = OnceLock::new();
        if !is_root() && self == Who::Root {
            eprintln!("SKIP: root missing (the suite runs as root to test both identities)");
            return false;
        }
        if self == Who::Root {
            return true;
        }
        let ok = NOBODY_OK.get_or_init(|| {
            if !Path::new(SYSTEM_PYTHON).exists() {
                return Err(format!("{SYSTEM_PYTHON} missing"));
            }
            let out = Who::Nobody
                .command(SYSTEM_PYTHON)
                .args(["-c", "import ssl, sqlite3, ctypes"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("setpriv missing: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "{SYSTEM_PYTHON} unusable by uid {NOBODY}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(())
        });
        match ok {
            Ok(()) => true,
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("unprivileged runs impossible under CI: {e} (scripts/test installs them)")
            }
            Err(e) => {
                eprintln!("SKIP: unprivileged identity missing: {e}");
                false
            }
        }
    }
}

pub fn is_root() -> bool {
    nix::unistd::getuid().is_root()
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Runs `f` for root and for nobody, concurrently; a failure names its identity.
pub fn both(f: impl Fn(Who) + Sync) {
    let f = &f;
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = Who::BOTH
            .into_iter()
            .filter(|w| w.available())
            .map(|w| (w, s.spawn(move || f(w))))
            .collect();
        handles
            .into_iter()
            .filter_map(|(w, h)| {
                h.join().err().map(|e| {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    format!("[{}] {msg}", w.label())
                })
            })
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------- kernel facts

/// `ext-runner probe --json` as `who`.
pub fn probe(who: Who) -> &'static Value {
    static CACHE: OnceLock<Mutex<HashMap<Who, &'static Value>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap().get(&who) {
        return v;
    }
    let out = who
        .command(runner(who))
        .args(["probe", "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("ext-runner probe");
    assert!(out.status.success(), "probe failed: {out:?}");
    let v: &'static Value = Box::leak(Box::new(
        serde_json::from_slice(&out.stdout).expect("probe JSON"),
    ));
    cache.lock().unwrap().insert(who, v);
    v
}

/// A kernel feature a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Landlock ABI 6 (filesystem, TCP, scopes).
    Landlock,
    Seccomp,
    /// A pid namespace (through a user namespace when unprivileged).
    PidNamespace,
    NetNamespace,
    /// A pids cgroup (root only; unprivileged runs count processes with RLIMIT_NPROC).
    PidsCgroup,
}

/// Runs `f` for root and for nobody (as `both`), each only where it has every
/// one of `features` (a missing one prints `SKIP: <feature> missing`).
pub fn confined(features: &[Feature], f: impl Fn(Who) + Sync) {
    both(|who| {
        if require(who, features) {
            f(who)
        }
    });
}

/// Whether `who` has every feature; prints `SKIP: <feature> missing` when not.
pub fn require(who: Who, features: &[Feature]) -> bool {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("SKIP: x86_64 system call numbers missing on this architecture");
        return false;
    }
    let p = probe(who);
    let userns = who == Who::Root || p["user_namespaces"] == json!(true);
    for f in features {
        let ok = match f {
            Feature::Landlock => p["landlock_abi"].as_u64().unwrap_or(0) >= 6,
            Feature::Seccomp => p["seccomp_filter"] == json!(true),
            Feature::PidNamespace => userns && p["pid_namespaces"] == json!(true),
            Feature::NetNamespace => userns && p["network_namespaces"] == json!(true),
            Feature::PidsCgroup => who != Who::Root || !p["pids_cgroup"].is_null(),
        };
        if !ok {
            eprintln!("SKIP: {f:?} missing ({})", who.label());
            return false;
        }
    }
    true
}

/// All the features the fully confined worker uses.
pub const FULL: &[Feature] = &[
    Feature::Landlock,
    Feature::Seccomp,
    Feature::PidNamespace,
    Feature::NetNamespace,
];

/// Whether workers are started through a fork server (`NODUS_TEST_SERVER=1`):
/// then every `Session` gets its worker from `ext-runner serve`, one server
/// per identity and operator policy, started on first use and stopped when
/// this test process ends (it holds the server's stdin).
pub fn warm() -> bool {
    std::env::var_os("NODUS_TEST_SERVER").is_some_and(|v| v == "1")
}

/// The fork server for `who` and `policy` (a policy file's path), when `warm()`.
pub fn warm_server(who: Who, policy: Option<&Path>) -> Option<PathBuf> {
    if !warm() {
        return None;
    }
    type Servers = Mutex<HashMap<(Who, String), (PathBuf, ChildStdin)>>;
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    // The policy's text, not its (per-session) file, names the server.
    let text = policy
        .map(|p| std::fs::read_to_string(p).expect("policy file"))
        .unwrap_or_default();
    let mut servers = SERVERS.get_or_init(Servers::default).lock().unwrap();
    if let Some((socket, _)) = servers.get(&(who, text.clone())) {
        return Some(socket.clone());
    }
    static N: AtomicUsize = AtomicUsize::new(0);
    let base = std::env::temp_dir().join(format!("nodus-test-servers-{}", std::process::id()));
    std::fs::create_dir_all(&base).expect("servers folder");
    chmod(&base, 0o1777); // as /tmp: each server makes its own 0700 folder in it, as `who`
    let socket = base
        .join(format!(
            "{}-{}",
            who.label(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
        .join("s.sock");
    let keep = base.join(format!("policy-{}.json", N.fetch_add(1, Ordering::Relaxed)));
    let mut cmd = who.command(runner(who));
    cmd.arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--python")
        .arg(who.python())
        .arg("--until-stdin-closes");
    if policy.is_some() {
        std::fs::write(&keep, &text).expect("server policy");
        chmod(&keep, 0o644);
        cmd.arg("--policy").arg(&keep);
    }
    let log = base.join(format!("server-{}.log", N.fetch_add(1, Ordering::Relaxed)));
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("server log"))
        .spawn()
        .expect("spawn ext-runner serve");
    let stdin = child.stdin.take().expect("server stdin");
    let end = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("ext-runner serve ended: {status}: {text}");
        }
        assert!(
            Instant::now() < end,
            "ext-runner serve did not listen on {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::mem::forget(child); // reaped by nobody: it ends with this process
    servers.insert((who, text), (socket.clone(), stdin));
    Some(socket)
}

/// The `ext-runner` binary, at a path `who` can execute (copied to a
/// world-readable folder when the build folder is out of nobody's reach).
pub fn runner(who: Who) -> PathBuf {
    let built = crate::common::ext_runner();
    if who == Who::Root {
        return built;
    }
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        let reachable = Who::Nobody
            .command("test")
            .arg("-x")
            .arg(&built)
            .status()
            .is_ok_and(|s| s.success());
        if reachable {
            return built.clone();
        }
        let dir = std::env::temp_dir().join(format!("nodus-sec-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("runner copy folder");
        chmod(&dir, 0o755);
        let copy = dir.join("ext-runner");
        std::fs::copy(&built, &copy).expect("copy ext-runner");
        chmod(&copy, 0o755);
        // The fork server's zygote loads the crate's confinement code from beside it.
        let lib = built.with_file_name("libnodus_extension.so");
        if lib.exists() {
            let to = dir.join("libnodus_extension.so");
            std::fs::copy(&lib, &to).expect("copy libnodus_extension.so");
            chmod(&to, 0o755);
        }
        copy
    })
    .clone()
}

// ---------------------------------------------------------------- files

pub fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

pub fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
}

/// A temporary folder every user can enter and read (0755).
pub fn world_dir(label: &str) -> TempDir {
    let d = TempDir::new(label);
    chmod(d.path(), 0o755);
    d
}

/// A temporary folder every user may also write (0777, no sticky bit), so
/// that only the sandbox stands between a worker and a write into it.
pub fn open_dir(label: &str) -> TempDir {
    let d = TempDir::new(label);
    chmod(d.path(), 0o777);
    d
}

/// A folder owned by `who` (0755): its workspace, writable by it alone.
pub fn owned_dir(who: Who, label: &str) -> TempDir {
    let d = world_dir(label);
    chown(d.path(), who.uid());
    d
}

/// Writes `text` to `path`, owned by `who`, with `mode`: nothing but the
/// sandbox keeps `who` from reading, changing or linking it.
pub fn owned_file(who: Who, path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).expect("write file");
    chmod(path, mode);
    chown(path, who.uid());
}

/// A fresh random token, to recognize a secret or a canary anywhere.
pub fn token(label: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut buf = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    format!(
        "{label}-{:016x}-{}",
        u64::from_le_bytes(buf),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------- the worker

/// Python shared by the worker and by the same snippets run outside the sandbox.
pub const PRELUDE: &str = r#"
import ctypes, errno, json, os, sys
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

def sys_call(nr, *args):
    """A raw system call: its result, or -errno."""
    conv = []
    for a in args:
        if isinstance(a, int):
            conv.append(ctypes.c_ulong(a & 0xFFFFFFFFFFFFFFFF))
        elif isinstance(a, bytes):
            conv.append(ctypes.c_char_p(a))
        else:
            conv.append(a)
    ctypes.set_errno(0)
    r = _libc.syscall(ctypes.c_long(nr), *conv)
    return -ctypes.get_errno() if r == -1 else r

def ename(r):
    """'EPERM' for -1, the value itself otherwise."""
    if isinstance(r, int) and r < 0:
        return errno.errorcode.get(-r, str(r))
    return r

def attempt(fn):
    """fn's value as text, or the errno name of the OSError it raised."""
    try:
        return "ok: " + repr(fn())
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else repr(e)
    except Exception as e:
        return f"{type(e).__name__}: {e}"

# The worker shim's audit hook turns os.fork/os.exec*/socket()/connect(unix)
# of an undeclared capability into a PermissionError before the kernel sees
# them: an explanation, not a boundary. Attacks go around it with ctypes, so
# that what is judged is the kernel's enforcement.
import struct as _struct, socket as _socket

def _sockaddr(family, addr):
    if family in (2,):
        return _struct.pack("=H", 2) + _struct.pack(">H", addr[1]) + _socket.inet_aton(addr[0]) + bytes(8)
    p = addr.encode() if isinstance(addr, str) else addr
    return _struct.pack("=H", 1) + p + (b"" if p.startswith(b"\0") else b"\0")

def raw_connect(family, type_, addr, data=b"hi"):
    """socket() + connect() + send() as bare system calls: 'connected', or where and why it failed."""
    fd = sys_call(41, family, type_, 0)
    if fd < 0:
        return "socket:" + ename(fd)
    sa = ctypes.create_string_buffer(_sockaddr(family, addr))
    r = sys_call(42, fd, ctypes.addressof(sa), len(sa.raw) - 1)
    if r < 0:
        os.close(fd)
        return "connect:" + ename(r)
    d = ctypes.create_string_buffer(data)
    sys_call(44, fd, ctypes.addressof(d), len(data), 0, 0, 0)
    os.close(fd)
    return "connected"

def raw_sendto(fd, family, addr, data=b"hi"):
    """sendto() with a destination address, as a bare system call."""
    sa = ctypes.create_string_buffer(_sockaddr(family, addr))
    d = ctypes.create_string_buffer(data)
    return ename(sys_call(44, fd, ctypes.addressof(d), len(data), 0, ctypes.addressof(sa), len(sa.raw) - 1))

def raw_fork():
    """glibc fork() through ctypes: the child gets 0, the parent a pid or -errno."""
    ctypes.set_errno(0)
    r = _libc.fork()
    return -ctypes.get_errno() if r == -1 else r

def _argv(argv):
    return (ctypes.c_char_p * (len(argv) + 1))(*[a.encode() for a in argv], None)

def raw_exec(path, argv):
    """execv() through ctypes; returns the errno name when it fails."""
    ctypes.set_errno(0)
    _libc.execv(path.encode(), _argv(argv))
    return ename(-ctypes.get_errno())

def raw_fexec(fd, argv):
    """fexecve() (execveat AT_EMPTY_PATH) through ctypes."""
    ctypes.set_errno(0)
    _libc.fexecve(fd, _argv(argv), _argv([]))
    return ename(-ctypes.get_errno())

def _run(code):
    g = {k: v for k, v in globals().items() if not k.startswith("__")}
    g["__name__"] = "attack"
    g["__builtins__"] = __builtins__
    try:
        exec(code, g)
        return {"ok": True, "result": json.loads(json.dumps(g.get("result"), default=repr))}
    except BaseException as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
"#;

/// The generic worker: tool `sec.run` runs `args.code`.
pub fn worker_source() -> String {
    format!(
        "{PRELUDE}\nfrom nodus_extension.worker import register_tool, run_loop\n\
         register_tool('sec.run', lambda args: _run(args['code']))\nrun_loop()\n"
    )
}

/// An extension folder (world-readable) declaring `tool.invoke` plus `caps`.
pub fn sec_ext(caps: &[&str]) -> TempDir {
    let mut all = vec!["tool.invoke"];
    all.extend(caps.iter().filter(|c| **c != "tool.invoke"));
    let dir = world_dir("sec-ext");
    std::fs::write(
        dir.join("nodus-extension.json"),
        crate::common::manifest_json("sec.attack", &all, &["sec.run"]),
    )
    .expect("manifest");
    std::fs::write(dir.join("extension.py"), worker_source()).expect("extension.py");
    for f in ["nodus-extension.json", "extension.py"] {
        chmod(&dir.join(f), 0o644);
    }
    dir
}

/// Runs `code` with the prelude in a plain interpreter as `who`, outside any
/// sandbox: the baseline that shows what the check sees when nothing stops it.
pub fn plain(who: Who, code: &str) -> Value {
    plain_with(who, code, &[])
}

/// `plain` with extra environment variables.
pub fn plain_with(who: Who, code: &str, env: &[(&str, &str)]) -> Value {
    let script = format!("{PRELUDE}\nprint(json.dumps(_run(sys.argv[1])))\n");
    let out = who
        .command(who.python())
        .args(["-c", &script, code])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("plain python");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap_or_else(|_| {
        json!({"ok": false, "error": format!("plain run failed: {text} {}", String::from_utf8_lossy(&out.stderr))})
    })
}

/// How a worker is started.
#[derive(Clone)]
pub struct Launch {
    pub who: Who,
    pub caps: Vec<String>,
    pub workspace: Option<PathBuf>,
    pub policy: Option<Value>,
    pub env: Vec<(String, String)>,
    /// Shell commands run by a bash wrapper before it execs the runner
    /// (e.g. `exec 7</secret` to leave a descriptor open).
    pub shell_prefix: Option<String>,
    pub timeout_secs: f64,
    /// Another extension folder than the generic one.
    pub ext_dir: Option<PathBuf>,
    /// A deployment environment the runner is started in (tests/common/envs.rs).
    pub environment: Option<crate::common::envs::Env>,
    /// Another interpreter than `who`'s.
    pub python: Option<PathBuf>,
}

impl Launch {
    pub fn new(who: Who, caps: &[&str]) -> Launch {
        Launch {
            who,
            caps: caps.iter().map(|s| s.to_string()).collect(),
            workspace: None,
            policy: None,
            env: Vec::new(),
            shell_prefix: None,
            timeout_secs: 20.0,
            ext_dir: None,
            environment: None,
            python: None,
        }
    }
    pub fn python(mut self, p: &Path) -> Self {
        self.python = Some(p.to_path_buf());
        self
    }
    pub fn in_env(mut self, env: crate::common::envs::Env) -> Self {
        self.environment = Some(env);
        self
    }
    pub fn workspace(mut self, p: &Path) -> Self {
        self.workspace = Some(p.to_path_buf());
        self
    }
    pub fn policy(mut self, v: Value) -> Self {
        self.policy = Some(v);
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn shell_prefix(mut self, s: &str) -> Self {
        self.shell_prefix = Some(s.into());
        self
    }
    pub fn timeout(mut self, secs: f64) -> Self {
        self.timeout_secs = secs;
        self
    }
    pub fn start(self) -> Session {
        Session::start(self)
    }
}

/// One worker's answer to a snippet.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The snippet ran; its `result`.
    Value(Value),
    /// The snippet raised; the exception text.
    Raised(String),
    /// The protocol answered with an error (e.g. the tool failed).
    Failed(String),
    /// No answer: the worker or runner is gone, or the deadline passed.
    Gone,
}

impl Reply {
    pub fn value(&self) -> &Value {
        match self {
            Reply::Value(v) => v,
            other => panic!("the snippet did not return a value: {other:?}"),
        }
    }
    /// The value, or the exception text, as one string (for "contains" checks).
    pub fn text(&self) -> String {
        match self {
            Reply::Value(v) => v.to_string(),
            Reply::Raised(s) | Reply::Failed(s) => s.clone(),
            Reply::Gone => "<gone>".into(),
        }
    }
    pub fn field(&self, k: &str) -> String {
        match &self.value()[k] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }
}

/// Everything the runner wrote, and how it ended.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub stdout: String,
    pub stderr: String,
    pub status: Option<ExitStatus>,
}

impl Transcript {
    pub fn contains(&self, needle: &str) -> bool {
        self.stdout.contains(needle) || self.stderr.contains(needle)
    }
    pub fn all(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// A running `ext-runner run` driven over its stdin/stdout.
pub struct Session {
    pub launch: Launch,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    next_id: u64,
    _files: Vec<TempDir>,
}

impl Session {
    pub fn start(launch: Launch) -> Session {
        let who = launch.who;
        let caps: Vec<&str> = launch.caps.iter().map(|s| s.as_str()).collect();
        let mut files = Vec::new();
        let ext = match &launch.ext_dir {
            Some(d) => d.clone(),
            None => {
                let d = sec_ext(&caps);
                let p = d.path().to_path_buf();
                files.push(d);
                p
            }
        };
        let mut args: Vec<std::ffi::OsString> = vec!["run".into(), ext.into_os_string()];
        let policy_file = launch.policy.as_ref().map(|p| {
            let d = world_dir("sec-policy");
            let f = d.join("policy.json");
            std::fs::write(&f, p.to_string()).expect("policy file");
            chmod(&f, 0o644);
            files.push(d);
            f
        });
        let warm_socket = match launch.python {
            Some(_) => None, // another interpreter than the server's: cold
            None => warm_server(who, policy_file.as_deref()),
        };
        match warm_socket {
            // The same verdicts through a fork server: the server holds the
            // interpreter and the operator policy.
            Some(socket) => {
                args.push("--server".into());
                args.push(socket.into_os_string());
            }
            None => {
                args.push("--python".into());
                args.push(
                    launch
                        .python
                        .clone()
                        .unwrap_or_else(|| who.python())
                        .into_os_string(),
                );
                if let Some(f) = &policy_file {
                    args.push("--policy".into());
                    args.push(f.clone().into_os_string());
                }
            }
        }
        args.push("--timeout".into());
        args.push(launch.timeout_secs.to_string().into());
        if let Some(w) = &launch.workspace {
            args.push("--workspace".into());
            args.push(w.clone().into_os_string());
        }
        let mut cmd = match &launch.shell_prefix {
            Some(prefix) => {
                let mut c = who.command("bash");
                c.arg("-c")
                    .arg(format!("{prefix}\nexec \"$0\" \"$@\""))
                    .arg(runner(who))
                    .args(&args);
                c
            }
            None => {
                let mut c = match launch.environment {
                    Some(env) => env.command(who, runner(who)),
                    None => who.command(runner(who)),
                };
                c.args(&args);
                c
            }
        };
        cmd.envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ext-runner");
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut err = child.stderr.take().expect("stderr");
        let (so, se) = (stdout.clone(), stderr.clone());
        let readers = vec![
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match out.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf).into_owned();
                            so.lock().unwrap().push_str(&line);
                            let _ = tx.send(line);
                        }
                    }
                }
            }),
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match err.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => se
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
            }),
        ];
        Session {
            stdin: child.stdin.take(),
            launch,
            child,
            lines,
            stdout,
            stderr,
            readers,
            next_id: 0,
            _files: files,
        }
    }

    /// The runner's process id.
    pub fn runner_pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `code` to `sec.run` and waits for the answer.
    pub fn exec(&mut self, code: &str) -> Reply {
        let wait = Duration::from_secs_f64(self.launch.timeout_secs + 10.0);
        self.exec_within(code, wait)
    }

    pub fn exec_within(&mut self, code: &str, wait: Duration) -> Reply {
        self.next_id += 1;
        let id = format!("sec-{}", self.next_id);
        let line = json!({"id": id, "op": "invoke", "name": "sec.run", "args": {"code": code}});
        let Some(stdin) = self.stdin.as_mut() else {
            return Reply::Gone;
        };
        if writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .is_err()
        {
            return Reply::Gone;
        }
        let end = Instant::now() + wait;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let Ok(l) = self.lines.recv_timeout(left) else {
                return Reply::Gone;
            };
            let Ok(v) = serde_json::from_str::<Value>(&l) else {
                continue;
            };
            if v["id"] != json!(id) {
                continue;
            }
            if v["ok"] != json!(true) {
                return Reply::Failed(v["error"].as_str().unwrap_or_default().to_string());
            }
            let r = &v["result"];
            return if r["ok"] == json!(true) {
                Reply::Value(r["result"].clone())
            } else {
                Reply::Raised(r["error"].as_str().unwrap_or_default().to_string())
            };
        }
    }

    /// Every live process started by the runner (the runner excluded).
    /// Through a fork server (`warm()`) the worker is the server's, not the
    /// runner's: it is found as the process holding the other ends of the
    /// runner's pipes to it, and with it everything in its session.
    pub fn processes(&self) -> Vec<i32> {
        if !warm() {
            return descendants(self.runner_pid());
        }
        let runner = self.runner_pid();
        let pipes = |pid: i32, from: i32| -> Vec<String> {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| {
                    e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) >= Some(from)
                })
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|l| l.to_string_lossy().into_owned())
                .filter(|l| l.starts_with("pipe:"))
                .collect()
        };
        let ours = pipes(runner, 3);
        let me = std::process::id() as i32;
        let session = |pid: i32| -> Option<i32> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(3)?
                .parse()
                .ok()
        };
        // Never this process's or the runner's session (the server and its
        // zygote are in ours): only the session the worker leads.
        let (own, runners) = (session(me), session(runner));
        let all = procfs::all();
        let sessions: Vec<i32> = all
            .iter()
            .filter(|p| p.live() && p.pid != runner && p.pid != me)
            .filter(|p| cmdline(p.pid).contains("boot.py"))
            .filter(|p| pipes(p.pid, 0).iter().any(|l| ours.contains(l)))
            .filter_map(|p| session(p.pid))
            .filter(|s| Some(*s) != own && Some(*s) != runners)
            .collect();
        let mut found: Vec<i32> = all
            .iter()
            .filter(|p| p.live() && session(p.pid).is_some_and(|s| sessions.contains(&s)))
            .map(|p| p.pid)
            .collect();
        for p in found.clone() {
            for d in descendants(p) {
                if !found.contains(&d) {
                    found.push(d);
                }
            }
        }
        found.sort();
        found
    }

    /// The worker: the process running the worker shim (`boot.py`).
    pub fn worker_pid(&self) -> Option<i32> {
        self.processes()
            .into_iter()
            .find(|p| cmdline(*p).contains("boot.py"))
    }

    /// The worker's scratch folder, found from outside: TMPDIR in its
    /// /proc/PID/environ, or, where that is `/tmp` inside its private root,
    /// the runner's one `nodus-ext-<runner pid>-…` folder in the host's
    /// temporary folder.
    pub fn scratch(&self) -> Option<PathBuf> {
        let pid = self.worker_pid()?;
        let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let tmpdir = env
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"TMPDIR="))
            .map(|v| PathBuf::from(String::from_utf8_lossy(v).into_owned()))?;
        if tmpdir != Path::new("/tmp") {
            // Tests remove it: only ever a worker's own scratch folder.
            return tmpdir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("nodus-ext-"))
                .then_some(tmpdir);
        }
        // Named after the process that made it: the runner, or through a
        // fork server its zygote (the parent of the worker's session leader).
        let maker = if warm() {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let sid: i32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(3)?
                .parse()
                .ok()?;
            procfs::stat(sid)?.ppid
        } else {
            self.runner_pid()
        };
        let prefix = format!("nodus-ext-{maker}-");
        let mut found: Vec<PathBuf> = scratch_dirs()
            .into_iter()
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(&prefix) && !n.ends_with("-root")
                })
            })
            .collect();
        if found.len() > 1 && warm() {
            // Workers of one zygote: the one whose /tmp (inside) it is.
            use std::os::unix::fs::MetadataExt;
            let inside = std::fs::metadata(format!("/proc/{pid}/root/tmp")).ok()?;
            found.retain(|d| {
                std::fs::metadata(d)
                    .is_ok_and(|m| m.ino() == inside.ino() && m.dev() == inside.dev())
            });
        }
        (found.len() == 1).then(|| found.remove(0))
    }

    /// The worker's pids cgroup folder (root, subprocess.run), if it is in one.
    pub fn pids_cgroup(&self) -> Option<PathBuf> {
        let pid = self.worker_pid()?;
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let rel = text.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            ctrl.split(',')
                .any(|c| c == "pids")
                .then(|| path.to_string())
        })?;
        (rel.contains("nodus-ext-")).then(|| PathBuf::from(format!("/sys/fs/cgroup/pids{rel}")))
    }

    /// Text seen so far on the runner's stdout and stderr.
    pub fn seen(&self) -> String {
        format!(
            "{}{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// Closes the runner's stdin (the worker is asked to stop) and waits for it.
    pub fn finish(mut self) -> Transcript {
        self.stdin.take();
        let end = Instant::now() + Duration::from_secs(20);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
            }
        };
        for r in std::mem::take(&mut self.readers) {
            let _ = r.join();
        }
        Transcript {
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
            status,
        }
    }

    /// SIGKILLs the runner (not the worker) and reaps it.
    pub fn kill_runner(mut self) -> Transcript {
        signal(self.runner_pid(), nix::sys::signal::Signal::SIGKILL);
        let status = self.child.wait().ok();
        self.stdin.take();
        Transcript {
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
            status,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stdin.take();
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `launch`, runs one snippet, finishes: the reply and the transcript.
pub fn run_once(launch: Launch, code: &str) -> (Reply, Transcript) {
    let mut s = launch.start();
    let r = s.exec(code);
    (r, s.finish())
}

/// The signal that ended a process, by name ("SIGXCPU"), if any.
pub fn signal_name(status: &ExitStatus) -> Option<String> {
    status.signal().map(|s| {
        nix::sys::signal::Signal::try_from(s)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| s.to_string())
    })
}

// ---------------------------------------------------------------- /proc

/// Live descendants of `pid`.
pub fn descendants(pid: i32) -> Vec<i32> {
    procfs::descendants(pid)
        .into_iter()
        .map(|p| p.pid)
        .collect()
}

pub use crate::common::procfs::cmdline;

/// Live processes whose command line contains `marker`.
pub fn procs_with(marker: &str) -> Vec<i32> {
    procfs::all()
        .into_iter()
        .filter(|p| p.live())
        .map(|p| p.pid)
        .filter(|p| cmdline(*p).contains(marker))
        .collect()
}

/// Polls until no live process has `marker` in its command line.
pub fn wait_no_procs(marker: &str, within: Duration) -> Vec<i32> {
    let end = Instant::now() + within;
    loop {
        let left = procs_with(marker);
        if left.is_empty() || Instant::now() >= end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A field of `/proc/PID/status` ("NoNewPrivs" → "1").
pub fn status_field(pid: i32, field: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// The state letter of `/proc/PID/stat` ("S", "t", "Z"...).
pub fn state(pid: i32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string))
}

/// The namespace `kind` ("net", "mnt"...) of `pid`, as "net:[4026531840]".
pub fn ns(pid: i32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- victims

/// A host process the worker must not touch; killed on drop.
pub struct Victim {
    child: Child,
    pub pid: i32,
    /// The first line it printed (python victims announce things).
    pub line: String,
}

impl Victim {
    /// `sleep 600` as `who`.
    pub fn sleep(who: Who) -> Victim {
        let child = who
            .command("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn victim");
        let pid = child.id() as i32;
        // setpriv execs sleep in the same process; wait until it has.
        let end = Instant::now() + Duration::from_secs(5);
        while !cmdline(pid).starts_with("sleep") && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        Victim {
            child,
            pid,
            line: String::new(),
        }
    }

    /// A Python program as `who`; returns once it printed its first line.
    pub fn python(who: Who, code: &str) -> Victim {
        let mut child = who
            .command(who.python())
            .args(["-c", code])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python victim");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("victim's first line");
        let pid = child.id() as i32;
        Victim {
            child,
            pid,
            line: line.trim().to_string(),
        }
    }

    pub fn alive(&self) -> bool {
        crate::common::pid_alive(self.pid)
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- traps

/// What reached a trap.
#[derive(Default)]
pub struct Catch {
    pub hits: AtomicUsize,
    pub data: Mutex<Vec<u8>>,
}

impl Catch {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn data(&self) -> String {
        String::from_utf8_lossy(&self.data.lock().unwrap()).into_owned()
    }
}

/// A listener opened by the test; counts what reaches it until dropped.
pub struct Trap {
    pub catch: Arc<Catch>,
    stop: Arc<AtomicBool>,
    /// TCP/UDP port, when it has one.
    pub port: u16,
    /// Socket path, or abstract name (without the leading NUL).
    pub name: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trap {
    fn spawn(
        port: u16,
        name: String,
        mut poll: impl FnMut(&Catch) -> bool + Send + 'static,
    ) -> Trap {
        let catch = Arc::new(Catch::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (catch.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if !poll(&c) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Trap {
            catch,
            stop,
            port,
            name,
            thread: Some(thread),
        }
    }

    pub fn hits(&self) -> usize {
        self.catch.hits()
    }

    /// Waits up to `within` for a first hit; returns the count.
    pub fn hits_after(&self, within: Duration) -> usize {
        let end = Instant::now() + within;
        while self.hits() == 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.hits()
    }

    /// A TCP listener on 127.0.0.1 that answers each connection's first
    /// bytes with `ECHO:` + those bytes.
    pub fn tcp() -> Trap {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        Trap::spawn(port, String::new(), move |c| match l.accept() {
            Ok((mut s, _)) => {
                c.hits.fetch_add(1, Ordering::SeqCst);
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 256];
                if let Ok(n) = s.read(&mut buf) {
                    c.data.lock().unwrap().extend_from_slice(&buf[..n]);
                    let _ = s.write_all(&[b"ECHO:", &buf[..n]].concat());
                }
                true
            }
            Err(_) => false,
        })
    }

    /// A UDP socket on 127.0.0.1.
    pub fn udp() -> Trap {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        u.set_nonblocking(true).unwrap();
        let port = u.local_addr().unwrap().port();
        Trap::spawn(port, String::new(), move |c| {
            let mut buf = [0u8; 512];
            match u.recv_from(&mut buf) {
                Ok((n, _)) => {
                    c.hits.fetch_add(1, Ordering::SeqCst);
                    c.data.lock().unwrap().extend_from_slice(&buf[..n]);
                    true
                }
                Err(_) => false,
            }
        })
    }

    /// A unix stream listener at `path` (mode 0777: any user could connect).
    pub fn unix_stream(path: &Path) -> Trap {
        let l = std::os::unix::net::UnixListener::bind(path).expect("bind unix");
        chmod(path, 0o777);
        Self::unix_listener(l, path.display().to_string())
    }

    /// A unix stream listener on the abstract address `\0name`.
    pub fn abstract_stream(name: &str) -> Trap {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
        let l = std::os::unix::net::UnixListener::bind_addr(&addr).expect("bind abstract");
        Self::unix_listener(l, name.to_string())
    }

    fn unix_listener(l: std::os::unix::net::UnixListener, name: String) -> Trap {
        l.set_nonblocking(true).unwrap();
        Trap::spawn(0, name, move |c| match l.accept() {
            Ok((mut s, _)) => {
                c.hits.fetch_add(1, Ordering::SeqCst);
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 256];
                if let Ok(n) = s.read(&mut buf) {
                    c.data.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                true
            }
            Err(_) => false,
        })
    }

    /// A unix datagram socket at `path` (mode 0777).
    pub fn unix_dgram(path: &Path) -> Trap {
        let u = std::os::unix::net::UnixDatagram::bind(path).expect("bind unix dgram");
        chmod(path, 0o777);
        Self::unix_datagram(u, path.display().to_string())
    }

    /// A unix datagram socket on the abstract address `\0name`.
    pub fn abstract_dgram(name: &str) -> Trap {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
        let u = std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind abstract dgram");
        Self::unix_datagram(u, name.to_string())
    }

    fn unix_datagram(u: std::os::unix::net::UnixDatagram, name: String) -> Trap {
        u.set_nonblocking(true).unwrap();
        Trap::spawn(0, name, move |c| {
            let mut buf = [0u8; 512];
            match u.recv(&mut buf) {
                Ok(n) => {
                    c.hits.fetch_add(1, Ordering::SeqCst);
                    c.data.lock().unwrap().extend_from_slice(&buf[..n]);
                    true
                }
                Err(_) => false,
            }
        })
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.name.starts_with('/') {
            let _ = std::fs::remove_file(&self.name);
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A pseudo-terminal owned by the test: the master side and the slave's path
/// (made accessible to every user, so that only the sandbox protects it).
pub struct Pty {
    pub master: std::fs::File,
    pub slave_path: PathBuf,
    _slave: std::fs::File,
}

impl Pty {
    pub fn open() -> Pty {
        use std::os::fd::AsRawFd;
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let (master, slave) = (
            std::fs::File::from(pty.master),
            std::fs::File::from(pty.slave),
        );
        let slave_path =
            std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd())).expect("pty name");
        chmod(&slave_path, 0o666);
        nix::fcntl::fcntl(
            master.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .expect("O_NONBLOCK");
        Pty {
            master,
            slave_path,
            _slave: slave,
        }
    }

    /// Everything readable on the master side within `within` (input injected
    /// with TIOCSTI is echoed there).
    pub fn drain(&mut self, within: Duration) -> String {
        let end = Instant::now() + within;
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while Instant::now() < end {
            match self.master.read(&mut buf) {
                Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The scratch folders (`nodus-ext-*`) in the host's temporary folder.
pub fn scratch_dirs() -> Vec<PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("nodus-ext-"))
        })
        .collect()
}

/// Polls until `path` no longer exists.
pub fn wait_removed(path: &Path, within: Duration) -> bool {
    let end = Instant::now() + within;
    while path.exists() {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Fills `@NAME@` placeholders of a Python snippet (values are inserted as
/// they are: use `lit` for strings).
pub fn snippet(template: &str, vars: &[(&str, String)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("@{k}@"), v);
    }
    assert!(
        !s.contains("@")
            || !s
                .split('@')
                .nth(1)
                .is_some_and(
                    |w| w.chars().all(|c| c.is_ascii_uppercase() || c == '_') && !w.is_empty()
                ),
        "unfilled placeholder in snippet:\n{s}"
    );
    s
}

/// A Python string literal.
pub fn lit(s: impl AsRef<std::ffi::OsStr>) -> String {
    crate::common::py_str(s)
}

/// A unique `sleep` argument ("1234.567890" seconds), to find a process by
/// its command line.
pub fn unique_sleep() -> String {
    let t = token("s");
    let hex = t.split('-').nth(1).unwrap_or("0");
    let n = u64::from_str_radix(hex, 16).unwrap_or(0);
    format!("{}.{:06}", 1000 + n % 1000, (n / 1000) % 1_000_000)
}
