//! One running worker process: started from a launch plan, its stderr drained
//! into a bounded tail, its end described in words a user can act on. The host
//! (`extension_host.rs`) and the `run` proxy (`proxy.rs`) both drive workers through this.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::error::{Error, Result, SandboxKind};
use crate::extension::manifest::Manifest;
use crate::host::audit::Audit;
use crate::host::egress::EgressProxy;
use crate::sandbox::interpreter::Interpreter;
use crate::sandbox::launch::{self, EgressChannel, LaunchPlan, ScratchDir};
use crate::sandbox::policy::{Policy, ProgramFacts};
use crate::support::LockExt;

/// How much of a worker's stderr is kept for error messages.
pub const STDERR_TAIL: usize = 4 * 1024;
/// How long a worker has to exit after `{"op": "shutdown"}` before it is killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub(crate) const SHIM_BOOT: &str = include_str!("../../python/shim/boot.py");
pub(crate) const SHIM_INIT: &str = include_str!("../../python/shim/nodus_extension/__init__.py");
pub(crate) const SHIM_WORKER: &str = include_str!("../../python/shim/nodus_extension/worker.py");
const SHIM_HOST: &str = include_str!("../../python/shim/nodus_extension_host.py");

/// Where the worker's program comes from.
#[derive(Debug, Clone)]
pub enum Entry {
    /// `extension.py` under this interpreter, with our stdlib worker shim importable.
    Python {
        interpreter: Interpreter,
        script: PathBuf,
    },
    /// The manifest's `entry` command line (a native binary or any language).
    Command { argv: Vec<String> },
}

impl Entry {
    /// The entry of the extension in `dir`.
    pub fn for_extension(
        dir: &Path,
        manifest: &Manifest,
        interpreter: impl FnOnce() -> Result<Interpreter>,
    ) -> Result<Entry> {
        if let Some(argv) = &manifest.entry {
            let rel = Path::new(&argv[0]);
            if rel.is_absolute()
                || rel.components().any(|c| {
                    !matches!(
                        c,
                        std::path::Component::Normal(_) | std::path::Component::CurDir
                    )
                })
            {
                return Err(Error::manifest(
                    format!("manifest \"entry\" must name a program inside the extension folder, got {:?}", argv[0]),
                    dir.join(crate::extension::manifest::MANIFEST_FILE).display().to_string(),
                ));
            }
            let program = dir.join(rel);
            if !program.is_file() {
                return Err(Error::sandbox(
                    SandboxKind::EntryPoint,
                    format!(
                        "extension entry point not found: {} (manifest \"entry\")",
                        program.display()
                    ),
                ));
            }
            return Ok(Entry::Command { argv: argv.clone() });
        }
        let script = dir.join("extension.py");
        if !script.is_file() {
            return Err(Error::sandbox(
                SandboxKind::EntryPoint,
                format!(
                "extension entry point not found: {}. Extension must have an extension.py file.",
                script.display()
            ),
            ));
        }
        Ok(Entry::Python {
            interpreter: interpreter()?,
            script,
        })
    }
}

impl Entry {
    /// What the policy needs to know about the program we exec.
    pub fn program_facts(&self, dir: &Path) -> ProgramFacts {
        let (program, runtime_dirs) = match self {
            Entry::Python { interpreter, .. } => {
                (interpreter.real_path.clone(), interpreter.prefixes.clone())
            }
            Entry::Command { argv } => {
                let p = dir.join(&argv[0]);
                (std::fs::canonicalize(&p).unwrap_or(p), Vec::new())
            }
        };
        let loader = crate::sandbox::interpreter::elf_loader(&program);
        ProgramFacts {
            program,
            loader,
            runtime_dirs,
        }
    }
}

/// Builds the launch plan: argv, the policy's environment, the confinement.
/// (The fork server's zygote builds its workers' plans here too.)
pub(crate) fn plan(
    dir: &Path,
    entry: &Entry,
    policy: &Policy,
    scratch: &ScratchDir,
    verbose: bool,
) -> Result<(LaunchPlan, launch::Held, Option<EgressChannel>)> {
    let (program, args) = match entry {
        Entry::Python {
            interpreter,
            script,
        } => {
            write_shim(scratch.path(), policy)?;
            let boot = launch::scratch_inside(policy, scratch.path()).join(".nodus/boot.py");
            (
                interpreter.exec_path.clone(),
                vec![
                    "-s".into(),
                    "-B".into(),
                    boot.into_os_string(),
                    script.clone().into_os_string(),
                ],
            )
        }
        Entry::Command { argv } => (
            dir.join(&argv[0]),
            argv[1..].iter().map(OsString::from).collect(),
        ),
    };
    let (mut confinement, held) = launch::prepare_at(policy, scratch.path(), dir)?;
    let egress = launch::egress_channel(policy, &mut confinement)?;
    let mut env = launch::environment(policy, scratch.path());
    if verbose {
        env.push(("NODUS_EXTENSION_VERBOSE".into(), "1".into()));
    }
    Ok((
        LaunchPlan {
            program,
            args,
            cwd: dir.to_path_buf(),
            env,
            confinement,
        },
        held,
        egress,
    ))
}

fn write_shim(scratch: &Path, policy: &Policy) -> Result<()> {
    let dir = scratch.join(".nodus/nodus_extension");
    let io = |e: std::io::Error| {
        Error::sandbox_io(
            SandboxKind::Scratch,
            format!("cannot write the worker shim to {}: {e}", scratch.display()),
            e,
        )
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    std::fs::write(scratch.join(".nodus/boot.py"), SHIM_BOOT).map_err(io)?;
    std::fs::write(dir.join("__init__.py"), SHIM_INIT).map_err(io)?;
    std::fs::write(dir.join("worker.py"), SHIM_WORKER).map_err(io)?;
    std::fs::write(scratch.join(".nodus/nodus_extension_host.py"), SHIM_HOST).map_err(io)?;
    std::fs::write(scratch.join(".nodus/grants.json"), grants(policy, scratch)).map_err(io)?;
    Ok(())
}

/// What the worker shim needs to explain a refusal of the kernel (boot.py's
/// `_explain_denials`): the folders Landlock lets it read and write, and the
/// TCP ports it may connect to. Only an explanation: the kernel enforces.
fn grants(policy: &Policy, scratch: &Path) -> Vec<u8> {
    use crate::sandbox::policy::Access;
    let paths = |pick: fn(Access) -> bool| -> Vec<String> {
        policy
            .filesystem
            .iter()
            .filter(|r| pick(r.access))
            .map(|r| r.path.display().to_string())
            .collect()
    };
    let mut write = paths(|a| matches!(a, Access::Write | Access::ReadWriteFile));
    write.push(scratch.display().to_string());
    let private_root = policy.private_root.is_some();
    if private_root {
        // Where the scratch folder appears inside the private root.
        let inside = launch::scratch_inside(policy, scratch);
        write.extend([inside.display().to_string(), "/var/tmp".to_string()]);
    }
    let ll = policy.landlock.as_ref();
    let grants = serde_json::json!({
        "landlock": ll.is_some(),
        // Outside the grants a path does not exist (ENOENT) rather than being refused.
        "private_root": private_root,
        // Whether seccomp lets it make AF_UNIX sockets (socketpair aside).
        "unix_sockets": unix_sockets(policy),
        "read": paths(|_| true),
        "write": write,
        // Under egress the only port is the proxy's, which explains its own refusals.
        "tcp_ports": ll
            .filter(|l| l.tcp_handled && policy.egress.is_none())
            .and_then(|l| l.tcp_connect.clone()),
    });
    serde_json::to_vec(&grants).expect("JSON values serialize")
}

/// Whether the worker may make `socket(AF_UNIX)`: seccomp off, or its
/// `socket` rule lets unix sockets through.
fn unix_sockets(policy: &Policy) -> bool {
    use crate::sandbox::policy::{ArgOp, SyscallAction};
    let Some(sc) = &policy.seccomp else {
        return true;
    };
    // A condition lets them through when one of its groups asks for AF_UNIX.
    let unix = libc::AF_UNIX as u64;
    sc.rules
        .iter()
        .filter(|r| r.name == "socket")
        .all(|r| match &r.action {
            SyscallAction::Allow => true,
            SyscallAction::AllowIf(c) => c.any_of.iter().any(|g| {
                g.iter()
                    .any(|ch| ch.index == 0 && ch.op == ArgOp::Eq && ch.value == unix)
            }),
            SyscallAction::Errno(_) | SyscallAction::Supervised => false,
        })
}

/// The last bytes a worker wrote to stderr, and whether its stderr has closed.
#[derive(Debug, Default, Clone)]
pub struct StderrTail(Arc<TailState>);

#[derive(Debug, Default)]
struct TailState {
    bytes: Mutex<VecDeque<u8>>,
    closed: std::sync::atomic::AtomicBool,
    changed: tokio::sync::Notify,
}

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let mut tail = self.0.bytes.locked();
        tail.extend(bytes);
        let excess = tail.len().saturating_sub(STDERR_TAIL);
        tail.drain(..excess);
    }

    fn close(&self) {
        self.0
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }

    /// Waits (at most `within`) until everything the worker wrote to stderr
    /// has been read, so that an error quotes its last words.
    pub async fn settled(&self, within: Duration) {
        let closed = || self.0.closed.load(std::sync::atomic::Ordering::SeqCst);
        let _ = tokio::time::timeout(within, async {
            while !closed() {
                let changed = self.0.changed.notified();
                if closed() {
                    break;
                }
                changed.await;
            }
        })
        .await;
    }

    /// The tail as text safe to print (`support::terminal::escape`: no
    /// control reaches a terminal, line breaks kept), trimmed.
    pub fn text(&self) -> String {
        let tail = self.0.bytes.locked();
        let (a, b) = tail.as_slices();
        crate::support::terminal::escape_bytes(&[a, b].concat())
            .trim()
            .to_string()
    }
}

/// A worker's process: our child (a cold start), or the fork server's (a
/// warm start: its end comes over the server's connection).
pub enum Process {
    Cold(Child),
    Warm(crate::host::server::WarmChild),
}

impl Process {
    /// Waits for the process to end (a warm one: the server's word on it).
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Process::Cold(child) => child.wait().await,
            Process::Warm(w) => w.wait().await,
        }
    }
}

/// A started worker: its process, pipes, and the scratch folder it lives in.
pub struct Spawned {
    pub child: Process,
    pub pid: i32,
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: StderrTail,
    /// Kept until the worker is reaped: its scratch folder, cgroups and uid lease.
    pub resources: Resources,
    /// A fork server's word on what this worker's confinement gave up (its
    /// policy is the server's); none for a worker started here.
    pub degraded: Option<Vec<String>>,
}

impl Spawned {
    /// The worker's process group, to kill it with.
    pub fn group(&self) -> Group {
        match &self.child {
            Process::Cold(_) => Group::new(self.pid),
            Process::Warm(w) => Group {
                killer: Some(w.killer()),
                ..Group::new(self.pid)
            },
        }
    }
}

/// What a worker holds on the host; dropped after the worker is reaped.
/// (A warm worker's are the fork server's.)
pub struct Resources {
    pub scratch: Option<ScratchDir>,
    pub held: Option<launch::Held>,
    /// The worker's egress proxy (with an allowlist); stops when dropped.
    pub egress: Option<EgressProxy>,
}

impl Resources {
    /// Whether the worker was killed for going over its memory cgroup's
    /// limit: read from the cgroup we hold (cold), or as the fork server,
    /// which holds it, said with the exit status (warm).
    pub fn oom_killed(&self, child: &Process) -> bool {
        self.held.as_ref().is_some_and(launch::Held::oom_killed)
            || matches!(child, Process::Warm(w) if w.oom_killed())
    }

    /// What to add to the message of a worker that ended (`child`, reaped):
    /// that its memory cgroup's limit was hit, when it was.
    pub fn oom_hint(&self, child: &Process) -> &'static str {
        if self.oom_killed(child) {
            " (its memory cgroup's limit was hit: the kernel killed it for going over limits.memory_bytes)"
        } else {
            ""
        }
    }
}

/// Receives each chunk a worker writes to its stderr, raw (escape it with
/// `support::terminal` before printing it). It must not block: the drain
/// waits for it.
pub type Forward = Box<dyn FnMut(&[u8]) + Send>;

/// Where a host gets its workers from: a fork server's socket, and what it
/// is told about the extension (`HostOptions::server`, `--server`).
#[derive(Debug)]
pub struct Warm<'a> {
    pub socket: &'a Path,
    pub workspace: Option<&'a Path>,
    /// A start already asked of the server (`server::request`), whose
    /// answer is this worker.
    pub requested: Option<crate::host::server::Requested>,
}

/// Starts a worker here, confined by `policy`. Its stderr is drained for as
/// long as it runs (so it can never block on a full pipe); `forward` also
/// receives each chunk. (A fork server's worker: [`start_warm`].)
pub fn start(
    dir: &Path,
    entry: &Entry,
    policy: &Policy,
    audit: &Audit,
    forward: Option<Forward>,
    verbose: bool,
) -> Result<Spawned> {
    let scratch = ScratchDir::create()?;
    let (plan, mut held, egress) = plan(dir, entry, policy, &scratch, verbose)?;
    let mut child = launch::spawn(plan)?;
    // Its process sent the seccomp listener before it exec'd.
    held.supervise()?;
    // The worker's process made the proxy's socket in its network namespace
    // before it exec'd; from here on it is served from outside.
    let egress = match (egress, &policy.egress) {
        (Some(channel), Some(plan)) => Some(crate::host::egress::serve(
            channel.receive()?,
            plan.clone(),
            audit.clone(),
            &policy.extension,
        )?),
        _ => None,
    };
    let pid = child.id().map(|p| p as i32).ok_or_else(|| {
        Error::sandbox(
            SandboxKind::WorkerDied,
            "worker exited before it could be supervised",
        )
    })?;
    let (Some(stdin), Some(stdout), Some(err)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(Error::sandbox(
            SandboxKind::Spawn,
            "worker pipes were not set up",
        ));
    };
    Ok(Spawned {
        child: Process::Cold(child),
        pid,
        stdin,
        stdout,
        stderr: drain(err, forward),
        resources: Resources {
            scratch: Some(scratch),
            held: Some(held),
            egress,
        },
        degraded: None,
    })
}

/// Gets a worker from the fork server `warm` names (the start it was asked
/// for already, if any): the server derives its policy and confines it.
pub fn start_warm(
    dir: &Path,
    warm: Warm<'_>,
    forward: Option<Forward>,
    verbose: bool,
) -> Result<Spawned> {
    let started = match warm.requested {
        Some(r) => r.answer()?,
        None => crate::host::server::start(warm.socket, dir, warm.workspace, verbose)?,
    };
    from_warm(started, forward)
}

/// The worker a fork server started (`server::start`), as a [`Spawned`]
/// (in a tokio runtime); its stderr is drained as [`start`]'s is.
pub fn from_warm(
    started: crate::host::server::WarmStart,
    forward: Option<Forward>,
) -> Result<Spawned> {
    let io = |e: std::io::Error| {
        Error::sandbox_io(
            SandboxKind::Server,
            format!("the warm worker's pipes: {e}"),
            e,
        )
    };
    let stdin = ChildStdin::from_std(std::process::ChildStdin::from(started.stdin)).map_err(io)?;
    let stdout =
        ChildStdout::from_std(std::process::ChildStdout::from(started.stdout)).map_err(io)?;
    let err =
        tokio::process::ChildStderr::from_std(std::process::ChildStderr::from(started.stderr))
            .map_err(io)?;
    let child = crate::host::server::WarmChild::new(started.pid, started.conn).map_err(io)?;
    Ok(Spawned {
        child: Process::Warm(child),
        pid: started.pid,
        stdin,
        stdout,
        stderr: drain(err, forward),
        resources: Resources {
            scratch: None,
            held: None,
            egress: None,
        },
        degraded: Some(started.degraded),
    })
}

/// Drains a worker's stderr into a tail for as long as it runs.
fn drain(mut err: tokio::process::ChildStderr, mut forward: Option<Forward>) -> StderrTail {
    let stderr = StderrTail::default();
    let tail = stderr.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = err.read(&mut buf).await {
            if n == 0 {
                break;
            }
            tail.push(&buf[..n]);
            if let Some(forward) = forward.as_mut() {
                forward(&buf[..n]);
            }
        }
        tail.close();
    });
    stderr
}

/// How long a worker that closed its stdout has to exit on its own before it
/// is killed (its exit status is what the error reports).
pub const EXIT_GRACE: Duration = Duration::from_millis(500);

/// Waits up to `grace` for the worker to exit, kills its process group (while
/// the leader's pid is still held, exited or not, so the id cannot have been
/// reused), then reaps it.
pub async fn reap(
    child: &mut Process,
    group: &Group,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    match child {
        Process::Cold(child) => {
            exited(group.pid, grace).await;
            group.kill_and_retire();
            child.wait().await.ok()
        }
        // The server holds the process and kills only what it has not reaped.
        Process::Warm(w) => {
            if let Ok(status) = tokio::time::timeout(grace, w.wait()).await {
                return status.ok();
            }
            group.kill_and_retire();
            w.wait().await.ok()
        }
    }
}

/// The worker's process group, which is signalled only while its leader is
/// not yet reaped: after that its id may be someone else's.
#[derive(Debug)]
pub struct Group {
    pid: i32,
    retired: Mutex<bool>,
    /// A warm worker's connection to the fork server, which kills it.
    killer: Option<Arc<std::os::unix::net::UnixStream>>,
}

impl Group {
    pub fn new(pid: i32) -> Group {
        Group {
            pid,
            retired: Mutex::new(false),
            killer: None,
        }
    }

    fn kill_now(&self) {
        match &self.killer {
            Some(conn) => crate::host::server::kill(conn),
            None => kill_all(self.pid),
        }
    }

    /// Kills the worker and everything in its session, unless already reaped.
    pub fn kill(&self) {
        let retired = self.retired.locked();
        if !*retired {
            self.kill_now();
        }
    }

    /// A last kill, after which no other is sent (the leader is about to be
    /// reaped); under the same lock, so no `kill` can fall in between.
    fn kill_and_retire(&self) {
        let mut retired = self.retired.locked();
        if !*retired {
            self.kill_now();
            *retired = true;
        }
    }
}

/// Waits up to `grace` for `pid` (our unreaped child) to exit, without reaping
/// it: woken by each SIGCHLD (of any child; the check tells which), polled
/// where no SIGCHLD stream can be had.
async fn exited(pid: i32, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    // Listening before the first check: an exit in between still wakes us.
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
    while !is_zombie(pid) {
        let woke = match sigchld.as_mut() {
            Some(s) => match tokio::time::timeout_at(deadline, s.recv()).await {
                Ok(Some(())) => true,
                Ok(None) => {
                    sigchld = None; // the signal driver is gone: poll instead
                    true
                }
                Err(_) => false,
            },
            None => {
                tokio::time::sleep(Duration::from_millis(2)).await;
                tokio::time::Instant::now() < deadline
            }
        };
        if !woke {
            return;
        }
    }
}

/// Whether `pid` (our unreaped child) has exited: a zombie, or gone.
fn is_zombie(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Kills the worker and everything in its session (see `Group`).
fn kill_all(pid: i32) {
    // The worker leads its own session and process group (setsid in child.rs).
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// "exited with status 1" / "was killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else if let Some(sig) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str())
            .unwrap_or("?");
        let hint = match sig {
            libc::SIGXCPU => ": it used up its CPU time limit (limits.cpu_seconds)",
            libc::SIGXFSZ => ": it wrote a file over its size limit (limits.file_size_bytes)",
            _ => "",
        };
        format!("was killed by signal {sig} ({name}){hint}")
    } else {
        format!("ended ({status})")
    }
}

/// A SandboxError for a worker that ended, with its exit and stderr tail.
pub fn died(what: &str, status: Option<std::process::ExitStatus>, stderr: &StderrTail) -> Error {
    let how = status
        .map(describe_exit)
        .unwrap_or_else(|| "is gone".into());
    let tail = stderr.text();
    let tail = tail.trim_end();
    if tail.is_empty() {
        Error::sandbox(SandboxKind::WorkerDied, format!("{what}: worker {how}"))
    } else {
        // Its lines kept, indented under the message (a traceback stays readable).
        let lines: Vec<String> = tail.lines().map(|l| format!("  {l}")).collect();
        Error::sandbox(
            SandboxKind::WorkerDied,
            format!("{what}: worker {how}\nstderr:\n{}", lines.join("\n")),
        )
    }
}
