//! `ext-runner run DIR --server PATH`: the worker comes from a fork server,
//! which derives its policy (from the manifest and the server's own operator
//! policy) and confines it. This side only checks the extension, asks for
//! the worker, shows what its confinement gave up, and relays.
//!
//! The relay is `ext-relay`, exec'd in place of `ext-runner` (same process,
//! same pid, the host's stdin, stdout and stderr) once the worker's pipes and
//! the server connection are ours: a program of a fraction of the runner's
//! size, which starts with a fresh heap. `ext-runner`'s relocated data and
//! what its start leaves on the heap would otherwise stay for as long as the
//! worker idles (docs/warm.md, "Memory per worker: the proxy"). Where
//! `ext-relay` is not found or does not exec, the same relay runs here, from
//! the same handover: the two ways differ only in the process.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{report, say_degraded, Failure, WorkerOpts};
use crate::error::{Error, SandboxKind};
use crate::extension::capabilities::Capability;
use crate::extension::manifest::Manifest;
use crate::host::audit::Audit;
use crate::host::proxy::{self, Relayed};
use crate::host::server::WarmStart;
use crate::host::{server, worker, HostOptions, Prepared};
use crate::support::terminal;

/// What `ext-relay` is told on its command line (one JSON argument), and
/// all the relay is given in either process.
#[derive(Debug, Serialize, Deserialize)]
struct Handover {
    /// The build that wrote it: `ext-relay` refuses another's.
    version: String,
    /// The worker's stdin, stdout and stderr pipes and the server
    /// connection, left open across the exec.
    fds: [RawFd; 4],
    pid: i32,
    name: String,
    capabilities: Vec<String>,
    /// The extension's folder, absolute (its memory namespace's key).
    dir: PathBuf,
    timeout: f64,
    max_line: usize,
    memory_db: Option<PathBuf>,
    audit: Option<PathBuf>,
}

pub(super) async fn run_warm(
    dir: &Path,
    socket: &Path,
    opts: &WorkerOpts,
    options: &HostOptions,
) -> Result<(), Failure> {
    let manifest = Manifest::load(dir)?;
    let (dir, _entry, _workspace) = Prepared::checked(dir, &manifest, options)?;
    let started = server::start(socket, &dir, options.workspace.as_deref(), options.verbose)?;
    say_degraded(&started.degraded);
    let handover = Handover {
        version: env!("CARGO_PKG_VERSION").into(),
        fds: [
            started.stdin.as_raw_fd(),
            started.stdout.as_raw_fd(),
            started.stderr.as_raw_fd(),
            started.conn.as_raw_fd(),
        ],
        pid: started.pid,
        name: manifest.name.clone(),
        capabilities: manifest
            .capabilities
            .iter()
            .map(|c| c.as_str().to_string())
            .collect(),
        dir,
        timeout: opts.timeout,
        max_line: opts.max_line,
        memory_db: opts.memory_db.clone(),
        audit: opts.audit.clone(),
    };
    if let Some(program) = crate::sandbox::launch::companion("ext-relay", "NODUS_EXTENSION_RELAY") {
        // Returns only when the exec failed: the relay runs here then.
        let e = exec(&program, &handover);
        super::say(&format!(
            "note: cannot exec {} ({e}): relaying in ext-runner, which holds more memory per idle worker",
            terminal::escape_line(&program.display().to_string())
        ));
    }
    let fds = vec![
        started.stdin,
        started.stdout,
        started.stderr,
        started.conn.into(),
    ];
    relay(handover, fds).await
}

/// Execs `ext-relay` with the handover's descriptors left open; returns
/// only if that failed (they are close-on-exec again then). `execv` itself,
/// not `Command::exec`, which resets this process's signal dispositions
/// first and would leave them so after a failed exec.
fn exec(program: &Path, handover: &Handover) -> std::io::Error {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let set = |flags: FdFlag| {
        for fd in handover.fds {
            let _ = fcntl(fd, FcntlArg::F_SETFD(flags));
        }
    };
    let (path, arg) = match (
        CString::new(program.as_os_str().as_bytes()),
        serde_json::to_string(handover).map(CString::new),
    ) {
        (Ok(path), Ok(Ok(arg))) => (path, arg),
        _ => return std::io::Error::other("the handover cannot be put on a command line"),
    };
    set(FdFlag::empty());
    let e = match nix::unistd::execv(&path, &[path.as_c_str(), arg.as_c_str()]) {
        Err(errno) => std::io::Error::from(errno),
        Ok(never) => match never {},
    };
    set(FdFlag::FD_CLOEXEC);
    e
}

/// `ext-relay`'s body; returns its exit code (`ext-runner run`'s codes).
pub fn relay_main() -> i32 {
    let Some(arg) = std::env::args_os().nth(1) else {
        eprintln!(
            "ext-relay: the relay `ext-runner run --server` execs once its worker is started; not for use by hand"
        );
        return 2;
    };
    let server_error =
        |msg: String| report(Failure::Error(Error::sandbox(SandboxKind::Server, msg)));
    let handover = match serde_json::from_slice::<Handover>(arg.as_encoded_bytes()) {
        Ok(h) if h.version == env!("CARGO_PKG_VERSION") => h,
        Ok(h) => {
            return server_error(format!(
                "ext-relay {} was handed a worker by ext-runner {}: install both from one build",
                env!("CARGO_PKG_VERSION"),
                terminal::escape_line(&h.version)
            ))
        }
        Err(e) => {
            return server_error(format!(
                "ext-relay {} cannot read its handover ({e}): install ext-runner and ext-relay from one build",
                env!("CARGO_PKG_VERSION")
            ))
        }
    };
    let fds = match crate::sandbox::child::inherited(&handover.fds) {
        Ok(fds) => fds,
        Err(e) => return server_error(format!("ext-relay: the warm worker's pipes: {e}")),
    };
    let runtime = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let code = runtime.block_on(async move {
        match relay(handover, fds).await {
            Ok(()) => 0,
            Err(failure) => report(failure),
        }
    });
    runtime.shutdown_background();
    code
}

/// The relay of a handed-over worker, in `ext-relay` or (where it cannot be
/// exec'd) in `ext-runner`: `fds` are the handover's, in its order.
async fn relay(handover: Handover, fds: Vec<OwnedFd>) -> Result<(), Failure> {
    let bad = |msg: String| Error::sandbox(SandboxKind::Server, format!("ext-relay: {msg}"));
    let [stdin, stdout, stderr, conn]: [OwnedFd; 4] = fds
        .try_into()
        .map_err(|_| bad("not four descriptors".into()))?;
    let capabilities = handover
        .capabilities
        .iter()
        .map(|c| c.parse::<Capability>())
        .collect::<Result<_, String>>()
        .map_err(bad)?;
    let timeout = Duration::try_from_secs_f64(handover.timeout).map_err(|e| bad(e.to_string()))?;
    let mut options = HostOptions {
        timeout,
        max_line: handover.max_line,
        memory_path: handover.memory_db.clone(),
        ..HostOptions::default()
    };
    if let Some(p) = &handover.audit {
        options.audit = Audit::to_file(p)?;
    }
    let started = WarmStart {
        pid: handover.pid,
        degraded: Vec::new(),
        stdin,
        stdout,
        stderr,
        conn: std::os::unix::net::UnixStream::from(conn),
    };
    let relayed = Relayed {
        name: &handover.name,
        capabilities,
        dir: &handover.dir,
    };
    proxy::relay(&relayed, &options, |forward| {
        worker::from_warm(started, forward)
    })
    .await?;
    Ok(())
}
