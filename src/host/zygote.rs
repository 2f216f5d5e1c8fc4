//! The zygote's side of a warm start: the C entry points that the fork
//! server's zygote (`python/shim/zygote.py`, a Python process that has
//! imported the common standard library) calls through ctypes, from this
//! crate built as `libnodus_extension.so`.
//!
//! Nothing here confines anything by itself: [`nodus_zygote_prepare`] runs
//! the cold path's own preparation (`Prepared::new`, then `worker::plan`,
//! then `launch::prepare`: the same policy, scratch folder, Landlock ruleset,
//! seccomp filters, namespaces and limits), and [`nodus_zygote_enter`], in
//! the zygote's fork, runs `child::enter_forked`: std's fork-exec glue
//! (pipes onto 0–2, the working folder) and then `child::enter`, the very
//! steps a cold worker's process takes between fork and exec.
//!
//! `unsafe` here is the C interface alone (raw pointers and descriptors
//! handed over by ctypes); the code between fork and the worker stays in
//! `child.rs`.
#![allow(unsafe_code)]

use std::ffi::{c_int, CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, Result, SandboxKind};
use crate::host::worker::{self, Entry};
use crate::host::{HostOptions, Prepared};
use crate::sandbox::child::{self, Failure};
use crate::sandbox::launch::{self, EgressChannel, LaunchPlan, ScratchDir};
use crate::sandbox::policy::OperatorPolicy;

/// What the server asks the zygote to start: the same inputs as a cold
/// `ExtensionHost::load` (the extension folder, the workspace, the
/// interpreter and the server's own operator policy), never a policy.
#[derive(Deserialize)]
struct Request {
    dir: PathBuf,
    workspace: Option<PathBuf>,
    python: PathBuf,
    operator: OperatorPolicy,
    verbose: bool,
}

/// One worker between its preparation and its end.
pub struct Warm {
    plan: LaunchPlan,
    /// The worker's stdin, stdout and stderr (pipes the server made).
    stdio: Option<[OwnedFd; 3]>,
    cwd: CString,
    /// The cold worker's command line and environment, NUL-separated.
    title: Vec<u8>,
    environ: Vec<u8>,
    report_in: OwnedFd,
    report_out: Option<OwnedFd>,
    /// With a pid namespace, the zygote waits for the worker's reaper
    /// itself (`child::ZygoteWaits`): the reaper's pid and the worker's
    /// status come up these; their write ends are held until the fork.
    waits: Option<Waits>,
    context: launch::StepContext,
    egress: Option<EgressChannel>,
    /// Held until the worker is reaped.
    _scratch: ScratchDir,
    held: launch::Held,
}

/// The zygote's ends of the pipes of `child::ZygoteWaits`.
struct Waits {
    status_in: OwnedFd,
    reaper_in: Option<OwnedFd>,
    /// The write ends, the fork's: closed here once it has forked.
    outs: Option<[OwnedFd; 2]>,
    /// The reaper's pid, once the fork said it (also when the worker's
    /// confinement failed after the reaper was made: it is waited for all
    /// the same, so the release comes after the worker's end).
    reaper: Option<libc::pid_t>,
}

fn prepare(raw: &[u8], fds: Vec<OwnedFd>) -> Result<(Box<Warm>, serde_json::Value)> {
    let bad = |what: String| Error::sandbox(SandboxKind::Server, what);
    let stdio: [OwnedFd; 3] = fds
        .try_into()
        .map_err(|f: Vec<OwnedFd>| bad(format!("{} descriptors, not 3", f.len())))?;
    let req: Request =
        serde_json::from_slice(raw).map_err(|e| bad(format!("a bad start request: {e}")))?;
    let options = HostOptions {
        python: req.python.into_os_string(),
        workspace: req.workspace,
        operator: req.operator,
        verbose: req.verbose,
        forked_by_zygote: true,
        ..HostOptions::default()
    };
    let ext = Prepared::new(&req.dir, &options)?;
    if !matches!(ext.entry, Entry::Python { .. }) {
        return Err(bad("the zygote starts extension.py workers only".into()));
    }
    if crate::sandbox::supervisor::supervises(&ext.policy) {
        return Err(bad(
            "a policy with supervised system calls: a zygote cannot serve a seccomp listener (the server derives its workers' policy without one)"
                .into(),
        ));
    }
    let scratch = ScratchDir::create()?;
    let (mut plan, cgroup, egress) =
        worker::plan(&ext.dir, &ext.entry, &ext.policy, &scratch, req.verbose)?;
    // The zygote is the interpreter the plan would exec, started with the same flags.
    let me = std::env::current_exe().ok();
    let program = std::fs::canonicalize(&plan.program).ok();
    if me.is_none() || me != program || plan.args.len() < 4 || plan.args[..2] != ["-s", "-B"] {
        return Err(bad(format!(
            "the plan runs {} {:?}, not this zygote's interpreter",
            plan.program.display(),
            plan.args
        )));
    }
    let pipe = |what: &str| {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::sandbox_io(SandboxKind::Spawn, what, e.into()))
    };
    let (report_in, report_out) = pipe("report pipe")?;
    plan.confinement.report_fd = Some(report_out.as_raw_fd());
    let waits = match plan.confinement.pid_namespace {
        true => {
            let (status_in, status_out) = pipe("status pipe")?;
            // Read once the reaper was reaped: never to wait on a writer.
            nix::fcntl::fcntl(
                status_in.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .map_err(|e| Error::sandbox_io(SandboxKind::Spawn, "status pipe", e.into()))?;
            let (reaper_in, reaper_out) = pipe("reaper pipe")?;
            plan.confinement.zygote_waits = Some(child::ZygoteWaits {
                status_out: status_out.as_raw_fd(),
                reaper_pid_out: reaper_out.as_raw_fd(),
            });
            Some(Waits {
                status_in,
                reaper_in: Some(reaper_in),
                outs: Some([status_out, reaper_out]),
                reaper: None,
            })
        }
        false => None,
    };
    let context = launch::StepContext::of(&plan.confinement);
    let cwd = CString::new(plan.cwd.as_os_str().as_encoded_bytes())
        .map_err(|_| bad("a working folder with a NUL byte".into()))?;
    let mut title = plan.program.as_os_str().as_encoded_bytes().to_vec();
    for a in &plan.args {
        title.push(0);
        title.extend_from_slice(a.as_encoded_bytes());
    }
    let mut environ = Vec::new();
    for (k, v) in &plan.env {
        environ.extend_from_slice(k.as_encoded_bytes());
        environ.push(b'=');
        environ.extend_from_slice(v.as_encoded_bytes());
        environ.push(0);
    }
    let text = |s: &OsString| s.to_string_lossy().into_owned();
    let answer = serde_json::json!({
        "argv": plan.args[2..].iter().map(text).collect::<Vec<_>>(),
        "env": plan.env.iter().map(|(k, v)| (text(k), serde_json::Value::String(text(v)))).collect::<serde_json::Map<_, _>>(),
    });
    Ok((
        Box::new(Warm {
            plan,
            stdio: Some(stdio),
            cwd,
            title,
            environ,
            report_in,
            report_out: Some(report_out),
            waits,
            context,
            egress,
            _scratch: scratch,
            held: cgroup,
        }),
        answer,
    ))
}

/// In the zygote after the fork: drops the worker's ends, waits for the
/// worker's report pipe to close (at its "exec") and says how it went.
fn forked(w: &mut Warm) -> Result<serde_json::Value> {
    w.stdio = None;
    w.report_out = None;
    if let Some(waits) = &mut w.waits {
        waits.outs = None;
    }
    drop(std::mem::take(&mut w.plan.confinement));
    // First, so that no early return below loses the reaper (it must be
    // waited for and killed as the worker): written by the fork right after
    // the reaper's clone; nothing when it failed before (then it has
    // exited: end of file). Closed once read.
    if let Some(waits) = &mut w.waits {
        let Some(reaper_in) = waits.reaper_in.take() else {
            return Err(Error::sandbox(SandboxKind::Spawn, "forked twice"));
        };
        let mut pid = [0u8; 4];
        let read = loop {
            match nix::unistd::read(reaper_in.as_raw_fd(), &mut pid) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other,
            }
        };
        let pid = libc::pid_t::from_ne_bytes(pid);
        waits.reaper = (read == Ok(4) && pid > 0).then_some(pid);
    }
    let mut report = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match nix::unistd::read(w.report_in.as_raw_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => report.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(Error::sandbox_io(
                    SandboxKind::Spawn,
                    "report pipe",
                    e.into(),
                ))
            }
        }
    }
    if !report.is_empty() {
        let program = w.plan.program.display().to_string();
        return Err(match Failure::decode(&report) {
            Some(f) => launch::failure_error(&program, &w.context, &f, libc::EPERM),
            None => Error::sandbox(
                SandboxKind::Spawn,
                format!("failed to start worker {program}: a garbled report from the child"),
            ),
        });
    }
    let mut answer = serde_json::json!({});
    if let Some(waits) = &w.waits {
        let Some(pid) = waits.reaper else {
            return Err(Error::sandbox(
                SandboxKind::Spawn,
                "the worker's fork did not say its reaper's pid",
            ));
        };
        answer["reaper"] = pid.into();
    }
    if let Some(channel) = w.egress.take() {
        answer["egress_fd"] = channel.receive()?.into_raw_fd().into();
    }
    Ok(answer)
}

/// The worker's wait status once its reaper (`reaper_status`, the zygote's
/// child) was reaped: what the reaper wrote up the status pipe, else (it
/// was killed before it could) the reaper's own, as a monitor does.
fn exit_status(w: &Warm, reaper_status: c_int) -> c_int {
    let Some(waits) = &w.waits else {
        return reaper_status;
    };
    // Every write end is closed by now (the fork exited, the reaper was
    // reaped, the worker died with its pid namespace): never blocks.
    let mut status = [0u8; 4];
    match nix::unistd::read(waits.status_in.as_raw_fd(), &mut status) {
        Ok(4) => c_int::from_ne_bytes(status),
        _ => reaper_status,
    }
}

/// Where this process's argv and initial environment strings are
/// (`arg_start`, `arg_end`, `env_start`, `env_end` of /proc/self/stat), read
/// before the confinement.
fn argv_area() -> Option<[usize; 4]> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(45);
    let mut next = || -> Option<usize> { fields.next()?.parse().ok() };
    Some([next()?, next()?, next()?, next()?])
}

/// Writes `v` as a NUL-terminated JSON text into the caller's buffer.
///
/// # Safety
/// `out` points at `len` writable bytes.
unsafe fn answer(out: *mut u8, len: usize, v: &serde_json::Value) {
    let text = serde_json::to_vec(v).unwrap_or_default();
    if out.is_null() || len == 0 {
        return;
    }
    let n = text.len().min(len - 1);
    // SAFETY: the caller's buffer holds `len` bytes, and n + 1 <= len.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), out, n);
        *out.add(n) = 0;
    }
}

fn panicked() -> Error {
    Error::sandbox(SandboxKind::Server, "the zygote's preparation panicked")
}

/// The worker shim's sources as `worker::plan` writes them into every
/// scratch folder (0: `boot.py`, 1: `nodus_extension/__init__.py`, 2:
/// `nodus_extension/worker.py`): the zygote compiles and executes them once
/// (zygote.py, `_shim`), from this library rather than from its command
/// line (a worker's is written over the zygote's, and tools find workers
/// by it). Null for another number.
///
/// # Safety
/// `len` points at a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn nodus_zygote_shim_source(which: c_int, len: *mut usize) -> *const u8 {
    let text = match which {
        0 => worker::SHIM_BOOT,
        1 => worker::SHIM_INIT,
        2 => worker::SHIM_WORKER,
        _ => return std::ptr::null(),
    };
    if !len.is_null() {
        // SAFETY: as the caller promises.
        unsafe { *len = text.len() };
    }
    text.as_ptr()
}

/// Sets the zygote's parent-death signal (it dies with its server). 0 on success.
#[no_mangle]
pub extern "C" fn nodus_zygote_init() -> c_int {
    // SAFETY: PR_SET_PDEATHSIG takes an integer signal number.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    }
}

/// Prepares one worker from the server's request (JSON) and its three pipe
/// ends (taken over, closed on failure). Returns the handle, with the argv
/// and environment the worker runs with in `out`; or null, with the error.
///
/// # Safety
/// `req` points at `len` bytes, `fds` at `nfds` descriptors the caller gives
/// up, `out` at `out_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn nodus_zygote_prepare(
    req: *const u8,
    len: usize,
    fds: *const c_int,
    nfds: usize,
    out: *mut u8,
    out_len: usize,
) -> *mut Warm {
    // SAFETY: as the caller promises.
    let (raw, fds) = unsafe {
        (
            std::slice::from_raw_parts(req, len),
            std::slice::from_raw_parts(fds, nfds)
                .iter()
                .map(|&fd| OwnedFd::from_raw_fd(fd))
                .collect::<Vec<_>>(),
        )
    };
    let made =
        std::panic::catch_unwind(move || prepare(raw, fds)).unwrap_or_else(|_| Err(panicked()));
    match made {
        Ok((warm, v)) => {
            // SAFETY: as the caller promises.
            unsafe { answer(out, out_len, &v) };
            Box::into_raw(warm)
        }
        Err(e) => {
            // SAFETY: as the caller promises.
            unsafe { answer(out, out_len, &crate::host::server::error_json(&e)) };
            std::ptr::null_mut()
        }
    }
}

/// In the zygote's fork: becomes the confined worker (see
/// `child::enter_forked`). 0 on success; otherwise the failure went to the
/// report pipe and the fork must exit.
///
/// # Safety
/// `h` is a handle from `nodus_zygote_prepare`, in the fork that inherited it.
#[no_mangle]
pub unsafe extern "C" fn nodus_zygote_enter(h: *mut Warm) -> c_int {
    // SAFETY: as the caller promises; the fork has this copy to itself.
    let w = unsafe { &mut *h };
    let Some(stdio) = &w.stdio else { return 1 };
    let fds = [
        stdio[0].as_raw_fd(),
        stdio[1].as_raw_fd(),
        stdio[2].as_raw_fd(),
    ];
    let area = argv_area();
    match child::enter_forked(fds, &w.cwd, &mut w.plan.confinement) {
        Ok(()) => {
            if let Some([arg_start, arg_end, env_start, env_end]) = area {
                // SAFETY: the argv and environment areas of this process, from
                // the kernel; CPython copied its arguments at start-up and
                // keeps its environment elsewhere (os.environ, putenv).
                unsafe {
                    child::retitle(arg_start, arg_end, &w.title);
                    child::retitle(env_start, env_end, &w.environ);
                }
            }
            0
        }
        Err(_) => 1,
    }
}

/// In the zygote after the fork: 0 when the worker is confined and running
/// (`out`: `{"egress_fd": N}` with an egress proxy socket for the server),
/// else -1 with the error in `out`.
///
/// # Safety
/// `h` is a live handle; `out` points at `out_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn nodus_zygote_forked(h: *mut Warm, out: *mut u8, out_len: usize) -> c_int {
    // SAFETY: as the caller promises.
    let w = unsafe { &mut *h };
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| forked(w)))
        .unwrap_or_else(|_| Err(panicked()));
    let (code, v) = match done {
        Ok(v) => (0, v),
        Err(e) => (-1, crate::host::server::error_json(&e)),
    };
    // SAFETY: as the caller promises.
    unsafe { answer(out, out_len, &v) };
    code
}

/// After the worker was reaped, before its release: 1 when its memory
/// cgroup's OOM killer acted (it went over `limits.memory_bytes`), else 0.
/// The server passes this to its client with the exit status, as a cold
/// host reads it from the cgroup it holds (`Resources::oom_hint`).
///
/// # Safety
/// `h` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn nodus_zygote_oom_killed(h: *const Warm) -> c_int {
    // SAFETY: as the caller promises.
    let w = unsafe { &*h };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.held.oom_killed())).unwrap_or(false)
        as c_int
}

/// After `nodus_zygote_forked`, whatever it returned: the pid of the
/// worker's reaper, the zygote's child to wait for instead of the fork
/// (which exits once it has made it); 0 when there is none (no pid
/// namespace, or the fork failed before).
///
/// # Safety
/// `h` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn nodus_zygote_reaper(h: *const Warm) -> libc::pid_t {
    // SAFETY: as the caller promises.
    let w = unsafe { &*h };
    w.waits.as_ref().and_then(|x| x.reaper).unwrap_or(0)
}

/// After the worker's reaper (or, without a pid namespace, the worker) was
/// reaped with wait status `status`: the worker's wait status.
///
/// # Safety
/// `h` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn nodus_zygote_exit_status(h: *const Warm, status: c_int) -> c_int {
    // SAFETY: as the caller promises.
    let w = unsafe { &*h };
    exit_status(w, status)
}

/// After the worker was reaped: removes its pids cgroup and scratch folder.
///
/// # Safety
/// `h` is a live handle, released once.
#[no_mangle]
pub unsafe extern "C" fn nodus_zygote_release(h: *mut Warm) {
    if !h.is_null() {
        // SAFETY: made by Box::into_raw in nodus_zygote_prepare, released once.
        drop(unsafe { Box::from_raw(h) });
    }
}
