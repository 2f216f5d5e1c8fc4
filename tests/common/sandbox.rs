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
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::TempDir;

// This file: who runs, kernel facts and files; `session`: the worker and its
// launches; `judges`: /proc, victims, traps and the other outside checks.
// Not every test binary uses both halves.
mod judges;
mod session;
#[allow(unused_imports)]
pub use judges::*;
#[allow(unused_imports)]
pub use session::*;

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
        // The fork server's zygote loads the crate's confinement code from
        // beside it; a worker's monitor and reaper exec ext-reaper from there,
        // and `run --server` execs ext-relay.
        for name in ["libnodus_extension.so", "ext-reaper", "ext-relay"] {
            let from = built.with_file_name(name);
            if from.exists() {
                let to = dir.join(name);
                std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {name}: {e}"));
                chmod(&to, 0o755);
            }
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
