//! Doing what the policy decided: turn a `Policy` into kernel objects before
//! the fork (Landlock ruleset, compiled BPF, id maps, limits), then fork and
//! exec the worker, whose child side is `child.rs`.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use landlock::{
    Access as _, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, ABI,
};
use nix::fcntl::OFlag;

use crate::error::{Error, Result, SandboxKind};
use crate::sandbox::acl;
use crate::sandbox::cgroup::{Bounds, Parent, WorkerCgroup};
use crate::sandbox::child::{self, Confinement, Failure, Step};
use crate::sandbox::policy::{
    Access, Errno, LandlockPolicy, Layer, Limits, Policy, Requirement, Scope as PolicyScope,
    SeccompPolicy, SyscallAction,
};
use crate::sandbox::root;
use crate::sandbox::supervisor::Supervisor;
use crate::support::LockExt;

/// `nodus-ext-<pid>-<n>-<random>`: unique among this host's workers, and hard
/// to guess for anyone else's.
fn unique_name() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = crate::support::unique_id();
    format!(
        "nodus-ext-{}-{n}-{}",
        std::process::id(),
        &id[id.len() - 6..]
    )
}

/// Removes what runners that were killed before they could clean up left in
/// `dir`: `nodus-ext-<pid>-…` entries of ours whose runner pid is gone. Runs
/// once per folder per process.
fn sweep_orphans(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut swept = SWEPT.locked();
    if swept.iter().any(|d| d == dir) {
        return;
    }
    swept.push(dir.to_path_buf());
    let me = nix::unistd::getuid().as_raw();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("nodus-ext-"))
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        // Ours: made by this uid, or by root for a worker of its own uid (an
        // id no account has) to which the scratch folder was given.
        let ours = entry.metadata().is_ok_and(|m| {
            m.uid() == me
                || (me == 0
                    && nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(m.uid()))
                        .is_ok_and(|u| u.is_none()))
        });
        if ours && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let path = entry.path();
            if path.join("cgroup.procs").exists() {
                // The dead runner's cgroup: what is left in it is dying or
                // orphaned; dropping it kills that and removes the folder.
                drop(WorkerCgroup::adopt(path));
            } else {
                remove_tree(&path);
            }
        }
    }
}

/// A worker's private scratch folder (its TMPDIR and HOME); removed on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates a fresh 0700 folder under the host's temporary folder.
    pub fn create() -> Result<ScratchDir> {
        let base = std::env::temp_dir();
        sweep_orphans(&base);
        // Skeletons of private roots left by runners that are gone.
        if let Some(skeletons) = root::skeleton_base() {
            sweep_orphans(skeletons);
        }
        for _ in 0..16 {
            let path = base.join(unique_name());
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(ScratchDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(Error::sandbox_io(
                        SandboxKind::Scratch,
                        format!("cannot create a scratch folder in {}: {e}", base.display()),
                        e,
                    ))
                }
            }
        }
        Err(Error::sandbox(
            SandboxKind::Scratch,
            format!(
                "cannot create a unique scratch folder in {}",
                base.display()
            ),
        ))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        remove_tree(&self.0);
        // The private root's skeleton beside it (root.rs), if one was made.
        let skeleton = root::skeleton_of(&self.0);
        if skeleton.exists() {
            remove_tree(&skeleton);
        }
    }
}

/// Removes a folder the worker had to itself, even where the worker took the
/// permissions away from its own subfolders (`chmod 000 x`): then every
/// folder is given back to its owner (opened without following links, so a
/// link cannot turn this into a chmod of a host path) and removal is retried.
fn remove_tree(path: &Path) {
    if remove_deep(path) || !path.exists() {
        return;
    }
    open_up(path);
    let _ = remove_deep(path);
}

/// Removes `root` and everything under it, by descriptor and without
/// recursion: at most `DEPTH` folders are open at once, and a folder deeper
/// than that is moved up to `root` under a new name (cutting the chain), to
/// be removed from there. std's `remove_dir_all` holds a descriptor and a
/// stack frame per level, and a worker can nest its scratch folder tens of
/// thousands deep (by renames, at O(1) a level): it ran out of descriptors
/// (or stack) and the folder stayed. Links are removed, not followed.
/// Returns whether `root` is gone; gives up at the first entry it cannot
/// remove (a folder closed to its owner: see `open_up`).
fn remove_deep(root: &Path) -> bool {
    use nix::dir::{Dir, Type};
    use nix::fcntl::{renameat, AtFlags, OFlag};
    use nix::sys::stat::{fstatat, Mode, SFlag};
    use nix::unistd::{unlinkat, UnlinkatFlags};
    use std::ffi::CString;
    const DEPTH: usize = 64;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Ok(top) = Dir::open(root, flags, Mode::empty()) else {
        return false;
    };
    let top_fd = top.as_raw_fd();
    let mut stack: Vec<(Dir, CString)> = vec![(top, CString::default())];
    // Unique in this process across calls (a second pass after `open_up`
    // finds the first one's cuts), and between processes (another
    // runner's sweep of an orphan).
    static CUTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    while let Some((dir, _)) = stack.last_mut() {
        let fd = dir.as_raw_fd();
        let mut sub = None;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let Ok(entry) = entry else { return false };
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let is_dir = match entry.file_type() {
                Some(kind) => kind == Type::Directory,
                None => fstatat(Some(fd), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits()),
            };
            names.push((name.to_owned(), is_dir));
        }
        for (name, is_dir) in names {
            if !is_dir {
                if unlinkat(Some(fd), name.as_c_str(), UnlinkatFlags::NoRemoveDir).is_err() {
                    return false;
                }
            } else if sub.is_none() {
                sub = Some(name);
            }
        }
        match sub {
            // Empty now: removed from its parent (the top, by the caller).
            None => {
                let (dir, name) = stack.pop().expect("a folder on the stack");
                drop(dir);
                if let Some((parent, _)) = stack.last() {
                    let removed = unlinkat(
                        Some(parent.as_raw_fd()),
                        name.as_c_str(),
                        UnlinkatFlags::RemoveDir,
                    );
                    if removed.is_err() {
                        return false;
                    }
                }
            }
            Some(name) if stack.len() < DEPTH => {
                match Dir::openat(Some(fd), name.as_c_str(), flags, Mode::empty()) {
                    Ok(child) => stack.push((child, name)),
                    Err(_) => return false,
                }
            }
            Some(name) => {
                let n = CUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let cut = format!(".nodus-cut-{}-{n}", std::process::id());
                let cut = CString::new(cut).expect("no NUL");
                if renameat(Some(fd), name.as_c_str(), Some(top_fd), cut.as_c_str()).is_err() {
                    return false;
                }
            }
        }
    }
    std::fs::remove_dir(root).is_ok()
}

/// Gives every folder from `root` down back to its owner (u+rwx). Walks by
/// descriptor, one `openat(parent, name, O_NOFOLLOW)` per folder: a folder
/// swapped for a link meanwhile is not followed, and depth is not bounded by
/// the length of a path. Holds a descriptor per folder found but not yet
/// listed: one or two for a chain, one per sibling for a wide folder (a
/// known limit: a very wide tree can run into the descriptor limit).
fn open_up(root: &Path) {
    use nix::dir::{Dir, Type};
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    use std::os::unix::fs::PermissionsExt;
    let folder = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // chmod through /proc/self/fd reaches exactly the inode the O_PATH
    // descriptor holds, whatever the folder's own mode.
    let give_back = |fd: i32| {
        let _ = std::fs::set_permissions(
            format!("/proc/self/fd/{fd}"),
            std::fs::Permissions::from_mode(0o700),
        );
    };
    let Ok(top) = openat(None, root, folder, Mode::empty()) else {
        return;
    };
    give_back(top);
    let mut pending = vec![top];
    while let Some(fd) = pending.pop() {
        if let Ok(mut dir) = Dir::openat(
            Some(fd),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            for entry in dir.iter().flatten() {
                let name = entry.file_name();
                if name == c"." || name == c".." {
                    continue;
                }
                if !matches!(entry.file_type(), Some(Type::Directory) | None) {
                    continue;
                }
                // O_NOFOLLOW|O_DIRECTORY: a link or a non-folder is refused here.
                if let Ok(child) = openat(Some(fd), name, folder, Mode::empty()) {
                    give_back(child);
                    pending.push(child);
                }
            }
        }
        let _ = nix::unistd::close(fd);
    }
}

/// Everything needed to start one worker.
pub struct LaunchPlan {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// The worker's whole environment: nothing of the host's leaks in.
    pub env: Vec<(OsString, OsString)>,
    pub confinement: Confinement,
}

/// Forks and execs the worker with piped stdio; the confinement is applied in
/// the child. The fork happens on one long-lived launcher thread: a worker's
/// parent-death signal fires when the *thread* that forked it ends, and the
/// thread that asks for a worker (a caller's short-lived thread, a blocking
/// pool thread) may end long before the worker should.
pub fn spawn(plan: LaunchPlan) -> Result<tokio::process::Child> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
        Error::sandbox(
            SandboxKind::Runtime,
            format!("workers are started from a tokio runtime: {e}"),
        )
    })?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    launcher_run(Box::new(move || {
        // A panic (say, a runtime built without I/O) is the caller's error,
        // and the launcher lives on.
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _runtime = runtime.enter(); // the child is registered with the caller's runtime
            spawn_here(plan)
        }))
        .unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::sandbox(
                SandboxKind::Spawn,
                format!("starting the worker failed: {why}"),
            ))
        });
        let _ = tx.send(started);
    }))?;
    rx.recv().map_err(|_| {
        Error::sandbox(
            SandboxKind::Runtime,
            "the launcher thread ended before answering",
        )
    })?
}

pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Runs `job` on the launcher thread, (re)starting it when there is none in
/// this process (first use, or a `fork` of the host left it behind).
pub(crate) fn launcher_run(job: Job) -> Result<()> {
    struct Launcher {
        pid: u32,
        jobs: std::sync::mpsc::Sender<Job>,
    }
    static LAUNCHER: std::sync::Mutex<Option<Launcher>> = std::sync::Mutex::new(None);
    let start = || -> Result<Launcher> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("nodus-launcher".into())
            .spawn(move || rx.into_iter().for_each(|job| job()))
            .map_err(|e| {
                Error::sandbox_io(
                    SandboxKind::Runtime,
                    format!("cannot start the launcher thread: {e}"),
                    e,
                )
            })?;
        Ok(Launcher {
            pid: std::process::id(),
            jobs,
        })
    };
    let mut launcher = LAUNCHER.locked();
    let current = match launcher.take() {
        Some(l) if l.pid == std::process::id() => l,
        _ => start()?,
    };
    let sent = current.jobs.send(job);
    *launcher = Some(current);
    match sent {
        Ok(()) => Ok(()),
        Err(std::sync::mpsc::SendError(job)) => {
            let fresh = start()?;
            let sent = fresh.jobs.send(job);
            *launcher = Some(fresh);
            sent.map_err(|_| Error::sandbox(SandboxKind::Runtime, "the launcher thread is gone"))
        }
    }
}

fn spawn_here(mut plan: LaunchPlan) -> Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(&plan.program);
    cmd.args(&plan.args)
        .current_dir(&plan.cwd)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // The child reports the step that failed here. Non-blocking: the report,
    // if any, is written before the errno std's own pipe carries, so it is
    // there when spawn returns; a copy of the write end that some other fork
    // of this process holds for a moment cannot make the read wait.
    let (report_in, report_out) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .map_err(|e| {
            Error::sandbox_io(
                SandboxKind::Spawn,
                format!("cannot make the worker's report pipe: {e}"),
                e.into(),
            )
        })?;
    plan.confinement.report_fd = Some(report_out.as_raw_fd());
    let context = StepContext::of(&plan.confinement);
    let identity = plan.confinement.identity;
    child::install(&mut cmd, plan.confinement);
    let spawned = cmd.spawn();
    drop(report_out);
    spawned.map_err(|e| {
        let mut buf = [0u8; Failure::LEN];
        let failure = match nix::unistd::read(report_in.as_raw_fd(), &mut buf) {
            Ok(n) => Failure::decode(&buf[..n]),
            Err(_) => None,
        };
        let program = plan.program.display();
        match failure {
            Some(f) => failure_error(
                &program.to_string(),
                &context,
                &f,
                e.raw_os_error().unwrap_or(libc::EPERM),
            ),
            None => {
                // exec as the worker's own uid: a program under a folder
                // only root may enter (/root/.pyenv, a 0700 home).
                let hint = match (identity, e.raw_os_error()) {
                    (Some((uid, _)), Some(libc::EACCES | libc::EPERM)) => format!(
                        ": the worker runs as uid {uid} (worker_ids), which cannot reach the program or a folder on its way (e.g. a home folder only root may enter); install the interpreter and the extension where other users can read them, or set \"worker_ids\": false in the policy file"
                    ),
                    _ => String::new(),
                };
                let msg = format!("failed to start worker {program}: {e}{hint}");
                Error::sandbox_io(SandboxKind::Spawn, msg, e)
            }
        }
    })
}

/// The error for a confinement step that failed (`f`, from the report pipe):
/// the step named, its errno (`errno` when the step has none) and what to do.
pub(crate) fn failure_error(
    program: &str,
    context: &StepContext,
    f: &Failure,
    errno: i32,
) -> Error {
    let msg = format!("failed to start worker {program}: {}", context.describe(f));
    let source = std::io::Error::from_raw_os_error(if f.errno != 0 { f.errno } else { errno });
    Error::sandbox_io(SandboxKind::Confinement(f.step), msg, source)
}

/// What the parent knows of a confinement to put a failed step in words.
pub(crate) struct StepContext {
    writable_mounts: Vec<CString>,
    cgroup_procs: Vec<CString>,
    /// The private root's mounts, in words, in the child's order.
    root_mounts: Vec<String>,
    /// The private root's writable mounts (their paths in the skeleton).
    root_writable: Vec<CString>,
    /// The private root's mounts that get a Landlock rule in the child.
    root_rules: Vec<CString>,
}

impl StepContext {
    pub(crate) fn of(c: &Confinement) -> StepContext {
        let text = |s: &Option<CString>| {
            s.as_ref()
                .map_or("none".into(), |s| s.to_string_lossy().into_owned())
        };
        StepContext {
            writable_mounts: c.writable_mounts.clone(),
            cgroup_procs: c.cgroup_procs.clone(),
            root_mounts: c
                .private_root
                .as_ref()
                .map(|r| {
                    r.mounts
                        .iter()
                        .map(|m| {
                            format!(
                                "mount({}, {}, {})",
                                text(&m.source),
                                m.target.to_string_lossy(),
                                text(&m.fstype)
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            root_writable: c
                .private_root
                .as_ref()
                .map(|r| r.writable.clone())
                .unwrap_or_default(),
            root_rules: c
                .private_root
                .as_ref()
                .map(|r| r.mount_rules.iter().map(|(p, _)| p.clone()).collect())
                .unwrap_or_default(),
        }
    }

    /// `confinement step unshare(CLONE_NEWUSER|CLONE_NEWNS) failed: ENOSPC (No space left on device)`,
    /// and what to do where that is known.
    fn describe(&self, f: &Failure) -> String {
        let path = |p: Option<&CString>| {
            p.map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|| "?".into())
        };
        let call = match f.step {
            Step::Unshare => format!("unshare({})", clone_flags(f.detail as libc::c_int)),
            Step::JoinCgroup => format!(
                "write 0 to {}",
                path(self.cgroup_procs.get(f.detail as usize))
            ),
            Step::BindWritable => format!(
                "mount({0}, {0}, MS_BIND|MS_REC)",
                path(self.writable_mounts.get(f.detail as usize))
            ),
            Step::Writable => format!(
                "mount_setattr({}, clear MOUNT_ATTR_RDONLY)",
                path(self.writable_mounts.get(f.detail as usize))
            ),
            Step::Rlimit => format!("setrlimit({})", rlimit_name(f.detail)),
            Step::DropBounding => format!("prctl(PR_CAPBSET_DROP, {})", f.detail),
            Step::Identity => format!("setgroups/setresgid/setresuid to uid and gid {}", f.detail),
            Step::Seccomp => format!("{} (filter {})", f.step.call(), f.detail + 1),
            Step::EgressSocket => child::EGRESS_CALLS.get(f.detail as usize).map_or_else(
                || f.step.call().to_string(),
                |c| format!("{c} for the egress proxy"),
            ),
            Step::PidNamespace => ["pipe2", "fork (reaper)", "fork (worker)", "pipe2 (the exec'd reaper's go-ahead)"]
                .get(f.detail as usize)
                .map_or_else(
                    || f.step.call().to_string(),
                    |c| format!("{c} for the pid namespace"),
                ),
            Step::RootMount => match f.detail {
                0 => "mount(skeleton, skeleton, MS_BIND) (private root)".into(),
                i => self.root_mounts.get(i as usize - 1).map_or_else(
                    || f.step.call().to_string(),
                    |m| format!("{m} (private root)"),
                ),
            },
            Step::PivotRoot => ["chdir(skeleton)", "pivot_root(., .)", "umount2(., MNT_DETACH)", "chdir(/)"]
                .get(f.detail as usize)
                .map_or_else(|| f.step.call().to_string(), |c| format!("{c} (private root)")),
            Step::RootAttributes => match f.detail {
                0 => "mount_setattr(skeleton, MOUNT_ATTR_RDONLY|MOUNT_ATTR_NOSUID, AT_RECURSIVE) (private root)".into(),
                i => format!(
                    "mount_setattr({}, clear MOUNT_ATTR_RDONLY) (private root)",
                    path(self.root_writable.get(i as usize - 1))
                ),
            },
            Step::RootLandlockRule => format!(
                "landlock_add_rule({}) (private root mount)",
                path(self.root_rules.get(f.detail as usize))
            ),
            step => step.call().to_string(),
        };
        if f.step == Step::LandlockStatus {
            let got = if f.detail == child::LANDLOCK_PARTIALLY_ENFORCED {
                "partially enforced"
            } else {
                "not enforced"
            };
            return format!(
                "confinement step {call} failed: Landlock was {got} although this kernel has the ABI the policy needs (fully enforced expected)"
            );
        }
        let errno = nix::errno::Errno::from_raw(f.errno);
        let mut msg = format!(
            "confinement step {call} failed: {errno:?} ({})",
            errno.desc()
        );
        // unshare(2) says ENOSPC when a namespace count limit is reached, in
        // this user namespace or any enclosing one (which the probe, reading
        // this one's sysctls, cannot see from inside a container).
        if f.step == Step::Rlimit && f.errno == libc::EPERM {
            let key = match f.detail {
                libc::RLIMIT_AS => "address_space_bytes",
                libc::RLIMIT_CPU => "cpu_seconds",
                libc::RLIMIT_NPROC => "processes",
                libc::RLIMIT_NOFILE => "open_files",
                libc::RLIMIT_FSIZE => "file_size_bytes",
                _ => "core_bytes",
            };
            msg += &format!(": the runner's own hard limit is lower than the policy's, and only a privileged process may raise one (a container's --ulimit, a service's Limit* setting); raise it for the runner, or lower \"limits\": {{\"{key}\": ...}} in the operator policy");
        }
        if matches!(f.errno, libc::EPERM | libc::EACCES)
            && matches!(
                f.step,
                Step::Unshare
                    | Step::UidMap
                    | Step::GidMap
                    | Step::Setgroups
                    | Step::MountPrivate
                    | Step::ReadOnly
                    | Step::BindWritable
                    | Step::Writable
            )
        {
            msg += ": the kernel refused the worker's namespaces or their mounts, though the probe could make them (a seccomp profile, an AppArmor or SELinux policy that changed, or one that refuses only some mounts); `ext-runner probe` says what works here, and \"layers\": {\"namespaces\": false} in the operator policy starts workers without them (see docs/deploy.md)";
        }
        if f.step == Step::SeccompListener && f.errno == libc::EBUSY {
            msg += ": another seccomp supervisor's filter is above the runner now, though the probe could take a listener (the kernel allows one per filter chain); without a listener chmod and utime cannot be supervised, and a new probe (a restarted runner) refuses them everywhere instead (see docs/deploy.md)";
        }
        if f.step == Step::Unshare && f.errno == libc::ENOSPC {
            msg += ": the kernel refused to create the worker's namespaces (a user.max_*_namespaces limit is reached here or in an enclosing user namespace); raise the limit, or set \"layers\": {\"namespaces\": false} in the operator policy (the other layers still apply)";
        }
        msg
    }
}

/// `CLONE_NEWUSER|CLONE_NEWNS|...`
fn clone_flags(flags: libc::c_int) -> String {
    let names = [
        (libc::CLONE_NEWUSER, "CLONE_NEWUSER"),
        (libc::CLONE_NEWNS, "CLONE_NEWNS"),
        (libc::CLONE_NEWPID, "CLONE_NEWPID"),
        (libc::CLONE_NEWNET, "CLONE_NEWNET"),
        (libc::CLONE_NEWIPC, "CLONE_NEWIPC"),
        (libc::CLONE_NEWUTS, "CLONE_NEWUTS"),
        (libc::CLONE_NEWCGROUP, "CLONE_NEWCGROUP"),
        (libc::CLONE_NEWTIME, "CLONE_NEWTIME"),
    ];
    let mut shown: Vec<String> = names
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let known = names.iter().fold(0, |a, (f, _)| a | f);
    if flags & !known != 0 {
        shown.push(format!("{:#x}", flags & !known));
    }
    shown.join("|")
}

fn rlimit_name(resource: u32) -> String {
    let name = match resource {
        libc::RLIMIT_AS => "RLIMIT_AS",
        libc::RLIMIT_CPU => "RLIMIT_CPU",
        libc::RLIMIT_NPROC => "RLIMIT_NPROC",
        libc::RLIMIT_NOFILE => "RLIMIT_NOFILE",
        libc::RLIMIT_FSIZE => "RLIMIT_FSIZE",
        libc::RLIMIT_CORE => "RLIMIT_CORE",
        libc::RLIMIT_STACK => "RLIMIT_STACK",
        libc::RLIMIT_DATA => "RLIMIT_DATA",
        libc::RLIMIT_MEMLOCK => "RLIMIT_MEMLOCK",
        other => return format!("resource {other}"),
    };
    name.to_string()
}

/// The environment of the policy with `$SCRATCH` filled in.
pub fn environment(policy: &Policy, scratch: &Path) -> Vec<(OsString, OsString)> {
    let scratch = scratch_inside(policy, scratch);
    let mut env: BTreeMap<OsString, OsString> = policy
        .environment
        .iter()
        .map(|(k, v)| {
            (
                k.into(),
                if v == "$SCRATCH" {
                    scratch.as_os_str().to_owned()
                } else {
                    v.into()
                },
            )
        })
        .collect();
    // The operator's `environment.pass`: the runner's own values, when set.
    for name in &policy.environment_pass {
        if let Some(v) = std::env::var_os(name) {
            env.insert(name.into(), v);
        }
    }
    env.into_iter().collect()
}

/// Where the worker sees its scratch folder: `/tmp` in its private root,
/// else the host path.
pub fn scratch_inside(policy: &Policy, scratch: &Path) -> PathBuf {
    match policy.private_root {
        Some(_) => PathBuf::from(root::SCRATCH_INSIDE),
        None => scratch.to_path_buf(),
    }
}

/// The worker's cgroups, made before the fork: one on cgroup v2 (pids and
/// memory together when both parents are that subtree), else one per v1
/// hierarchy. Each parent folder is swept of cgroups of runners that are gone.
fn worker_cgroups(policy: &Policy) -> Result<Vec<WorkerCgroup>> {
    let Some(l) = &policy.limits else {
        return Ok(Vec::new());
    };
    let name = unique_name();
    let mut made = Vec::new();
    let pids = policy.pids_cgroup.as_deref();
    let memory = policy.memory_cgroup.as_deref();
    let parents: Vec<(&str, Bounds)> = if pids.is_some() && pids == memory {
        vec![(
            pids.unwrap_or_default(),
            Bounds {
                tasks: Some(l.processes),
                memory_bytes: Some(l.memory_bytes),
            },
        )]
    } else {
        let p = pids.map(|p| {
            (
                p,
                Bounds {
                    tasks: Some(l.processes),
                    memory_bytes: None,
                },
            )
        });
        let m = memory.map(|m| {
            (
                m,
                Bounds {
                    tasks: None,
                    memory_bytes: Some(l.memory_bytes),
                },
            )
        });
        p.into_iter().chain(m).collect()
    };
    for (parent, bounds) in parents {
        sweep_orphans(Path::new(parent));
        made.push(WorkerCgroup::create(&Parent::at(parent), &name, bounds)?);
    }
    Ok(made)
}

/// Kernel objects built from a policy, ready for the child; plus what the
/// parent must keep alive for the worker's lifetime.
pub fn prepare(policy: &Policy, scratch: &Path) -> Result<(Confinement, Held)> {
    prepare_at(policy, scratch, Path::new("/"))
}

/// `prepare` for a worker whose working directory is `cwd` (in its private
/// root, the same path: the extension folder is bound at its own path).
pub fn prepare_at(policy: &Policy, scratch: &Path, cwd: &Path) -> Result<(Confinement, Held)> {
    let mut c = Confinement {
        parent_death_signal: Some(libc::SIGKILL),
        ..Default::default()
    };
    let cgroup = worker_cgroups(policy)?;
    c.cgroup_procs = cgroup
        .iter()
        .map(|cg| cstring(&cg.join_file()))
        .collect::<Result<_>>()?;
    // A root runner's worker runs as its own uid and gid: the scratch folder
    // becomes theirs (still 0700); the runner, root, removes it afterwards.
    let ids = match &policy.worker_ids {
        Some(range) => {
            let lease = IdLease::take(
                range,
                policy.worker_ids_derived.is_some(),
                &policy.worker_ids_accounts,
            )?;
            std::os::unix::fs::lchown(scratch, Some(lease.id), Some(lease.id)).map_err(|e| {
                Error::sandbox_io(
                    SandboxKind::Scratch,
                    format!(
                        "cannot give the scratch folder {} to the worker's uid {}: {e}",
                        scratch.display(),
                        lease.id
                    ),
                    e,
                )
            })?;
            c.identity = Some((lease.id, lease.id));
            Some(lease)
        }
        None => None,
    };
    // A workspace no idmapped mount can show to the worker's uid: lent to
    // it with ACL entries until the worker is reaped (`acl`).
    let lent = match (&policy.lent_workspace, &ids) {
        (Some(ws), Some(lease)) => {
            let lent = acl::lend(ws, lease.id, &IdLease::dir()).map_err(|e| {
                Error::sandbox_io(
                    SandboxKind::Workspace,
                    format!(
                        "cannot lend the workspace {} to the worker's uid {} with ACL entries: {e}",
                        ws.display(),
                        lease.id
                    ),
                    e,
                )
            })?;
            if let Some(skipped) = lent.report.skipped() {
                eprintln!(
                    "ext-runner: workspace {}: not lent to the worker's uid, so it cannot write them: {skipped}",
                    crate::support::terminal::escape(&ws.to_string_lossy())
                );
            }
            Some(lent)
        }
        _ => None,
    };
    let ns = policy.namespaces;
    for (on, flag) in [
        (ns.user, libc::CLONE_NEWUSER),
        (ns.mount, libc::CLONE_NEWNS),
        (ns.pid, libc::CLONE_NEWPID),
        (ns.net, libc::CLONE_NEWNET),
        (ns.ipc, libc::CLONE_NEWIPC),
        (ns.uts, libc::CLONE_NEWUTS),
    ] {
        if on {
            c.unshare_flags |= flag;
        }
    }
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    c.uid_map = format!("{uid} {uid} 1").into_bytes();
    c.gid_map = format!("{gid} {gid} 1").into_bytes();
    c.pid_namespace = ns.pid;
    if ns.pid {
        c.waiter = open_waiter();
    }
    if ns.pid && policy.private_root.is_some() {
        // For a reaper that stays a fork of the runner (no `ext-reaper`, or its exec failed).
        c.runner_strings = runner_strings();
    }
    let mut root_rules = None;
    let mut idmapped: Vec<(PathBuf, std::os::fd::OwnedFd)> = Vec::new();
    if let (true, Some(_)) = (ns.mount, &policy.private_root) {
        let skeleton = root::skeleton_of(scratch);
        if skeleton.exists() {
            remove_tree(&skeleton); // a second launch from one scratch folder (benches)
        }
        // The workspace shown to the worker's uid: an idmapped copy of its
        // mount, detached here and moved into the private root by the child.
        // The extension folder too, when other users cannot read it.
        if let Some((uid, gid)) = c.identity {
            for p in [&policy.idmapped_workspace, &policy.idmapped_extension]
                .into_iter()
                .flatten()
            {
                let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
                if !idmapped.iter().any(|(q, _)| *q == real) {
                    let tree = idmapped_tree_of(&real, uid, gid)?;
                    idmapped.push((real, tree));
                }
            }
        }
        let trees: Vec<(&Path, libc::c_int)> = idmapped
            .iter()
            .map(|(p, fd)| (p.as_path(), fd.as_raw_fd()))
            .collect();
        let planned = root::plan(policy, scratch, &skeleton, cwd, c.identity, &trees)?;
        root_rules = Some(planned.landlock);
        c.private_root = Some(planned.root);
    } else if ns.mount {
        c.writable_mounts = writable_grants(policy, scratch)
            .map(|p| cstring(&p))
            .collect::<Result<_>>()?;
    }
    if let Some(l) = &policy.limits {
        c.rlimits = rlimits(l, policy.address_space.as_ref().and_then(|a| a.bytes));
    }
    // ABI 0: no Landlock here (strict mode has refused already; best effort
    // runs without it and says so).
    if let Some(ll) = policy.landlock.as_ref().filter(|ll| ll.abi > 0) {
        c.landlock = Some(landlock(
            policy,
            ll,
            scratch,
            root_rules.as_deref(),
            lent.as_ref(),
        )?);
        // The rules the child adds on the file systems it mounts: the rights
        // this ruleset handles, no socket, FIFO or device node.
        let handled = AccessFs::from_all(ABI::from(i32::from(ll.abi))) & !special_files();
        if let Some(root) = c.private_root.as_mut() {
            for (_, access) in &mut root.mount_rules {
                *access &= handled;
            }
        }
        // On a kernel with the ABI the policy needs, anything less than full
        // enforcement is a failure of the launch, whatever the requirement.
        c.landlock_full = policy
            .layers
            .iter()
            .any(|l| l.layer == Layer::Landlock && l.wanted && l.enforceable);
    } else if let Some(root) = c.private_root.as_mut() {
        root.mount_rules.clear(); // no ruleset to add them to
    }
    let mut supervisor = None;
    if let Some(sc) = &policy.seccomp {
        let filters = seccomp(sc)?;
        c.seccomp = filters.main;
        if let Some(filter) = filters.supervised {
            let (ours, theirs) = channel("the seccomp listener's channel")?;
            let s = Supervisor::new(policy, scratch, c.identity).map_err(|e| {
                Error::sandbox_io(
                    SandboxKind::Prepare,
                    format!("cannot open the writable grants for the metadata supervisor: {e}"),
                    e,
                )
            })?;
            c.listener = Some(child::Listener {
                filter,
                channel: theirs,
            });
            supervisor = Some((s, ours));
        }
        c.fill_in_pid = sc
            .rules
            .iter()
            .filter_map(|r| r.action.condition())
            .flat_map(|c| c.any_of.iter().flatten())
            .any(|check| {
                check.value == u64::from(child::PID_PLACEHOLDER)
                    || check.value == u64::from(child::NEG_PID_PLACEHOLDER)
            });
    }
    Ok((
        c,
        Held {
            cgroup,
            _lent: lent,
            ids,
            _idmapped: idmapped.into_iter().map(|(_, fd)| fd).collect(),
            supervisor,
            _supervising: None,
        },
    ))
}

/// A detached copy of the mount of `ws` (the workspace, or the extension
/// folder) that shows its owner's uid and gid as the worker's `uid` and
/// `gid` (and so writes the worker's files as the owner's): a user
/// namespace mapping owner → worker is its idmapping.
fn idmapped_tree_of(ws: &Path, uid: u32, gid: u32) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fail = |e: std::io::Error| {
        Error::sandbox_io(
            SandboxKind::Workspace,
            format!(
                "cannot make an idmapped mount of {} for the worker's uid {uid}: {e}",
                ws.display()
            ),
            e,
        )
    };
    let m = std::fs::metadata(ws).map_err(fail)?;
    let userns = child::mapping_namespace(
        &format!("{} {uid} 1", m.uid()),
        &format!("{} {gid} 1", m.gid()),
    )
    .map_err(fail)?;
    child::idmapped_tree(&cstring(ws)?, userns.as_fd()).map_err(fail)
}

/// What the runner keeps for a worker until it is reaped: its cgroups
/// (killed and removed on drop), the lease on its uid and the idmapped
/// workspace tree given to its child.
#[derive(Debug)]
pub struct Held {
    pub cgroup: Vec<WorkerCgroup>,
    /// The workspace lent to the worker's uid, given back once the cgroups
    /// above are gone (fields drop in order) and before the uid is free.
    _lent: Option<acl::Lent>,
    pub ids: Option<IdLease>,
    _idmapped: Vec<std::os::fd::OwnedFd>,
    /// The supervisor of the worker's supervised calls and the runner's end
    /// of the channel its listener comes on, until `supervise`.
    supervisor: Option<(Supervisor, std::os::fd::OwnedFd)>,
    /// Ends the supervisor thread when the worker has been reaped.
    _supervising: Option<crate::sandbox::supervisor::Stop>,
}

impl Held {
    /// Once the worker has been spawned: takes the seccomp listener its
    /// process sent before exec and serves it on a thread of its own
    /// (`supervisor.rs`). Nothing to do for a policy that supervises nothing.
    pub fn supervise(&mut self) -> Result<()> {
        let Some((supervisor, channel)) = self.supervisor.take() else {
            return Ok(());
        };
        let io = |what: &str, e: std::io::Error| {
            Error::sandbox_io(
                SandboxKind::Confinement(child::Step::SendListener),
                format!("{what}: {e}"),
                e,
            )
        };
        let listener = child::receive_fd(&channel, false)
            .map_err(|e| io("the worker's seccomp listener did not arrive", e))?;
        self._supervising = Some(
            supervisor
                .serve(listener)
                .map_err(|e| io("cannot start the worker's metadata supervisor thread", e))?,
        );
        Ok(())
    }

    /// Whether the worker hit its memory cgroup's limit (the OOM killer acted).
    pub fn oom_killed(&self) -> bool {
        self.cgroup.iter().any(WorkerCgroup::oom_killed)
    }
}

/// One uid (and the same gid) of the operator's `worker_ids` range, held by
/// one worker of this runner. Runners on one host share the range: each
/// uid is also locked (flock) in a root-only folder, so two runners never
/// give one uid to two workers at once. An id that an account of the
/// runner's `/etc/passwd` or `/etc/group` names is never given (the worker
/// would share that account's files, processes and group). Released on drop.
#[derive(Debug)]
pub struct IdLease {
    pub id: u32,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

static IDS_TAKEN: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
static IDS_NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl IdLease {
    /// The root-only folder of the leases' locks (and of `acl`'s ledgers).
    pub fn dir() -> PathBuf {
        std::env::temp_dir().join("nodus-ext-worker-ids")
    }

    /// A free id of `range` (`derived`: taken from the runner's id maps, so
    /// the advice is to map more ids) that no account names (`accounts`,
    /// the policy's, and those the account files name now:
    /// `probe::account_ids`), or an error naming the range when every id is
    /// held or an account's.
    pub fn take(
        range: &crate::sandbox::policy::WorkerIds,
        derived: bool,
        accounts: &[crate::sandbox::policy::AccountId],
    ) -> Result<IdLease> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
        let dir = IdLease::dir();
        let fail = |what: String, e: std::io::Error| {
            Error::sandbox_io(
                SandboxKind::Scratch,
                format!("worker_ids: {what} {}: {e}", dir.display()),
                e,
            )
        };
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail("cannot create".into(), e)),
        }
        // Only a folder of root's that nobody else can write is believed.
        let m = std::fs::symlink_metadata(&dir).map_err(|e| fail("cannot read".into(), e))?;
        if !m.is_dir() || m.uid() != 0 || m.mode() & 0o022 != 0 {
            return Err(Error::sandbox(
                SandboxKind::Scratch,
                format!(
                    "worker_ids: {} is not a folder of root's that only root can write; remove it",
                    dir.display()
                ),
            ));
        }
        // The accounts' ids in the range: the policy's, and the files'
        // as they are now (an account added since the policy was derived).
        let mut named: Vec<crate::sandbox::policy::AccountId> = accounts
            .iter()
            .cloned()
            .chain(crate::sandbox::probe::account_ids_where(|id| {
                range.contains(id)
            }))
            .filter(|a| range.contains(a.id))
            .collect();
        named.sort();
        named.dedup();
        let named_ids: std::collections::BTreeSet<u32> = named.iter().map(|a| a.id).collect();
        if u64::try_from(named_ids.len()).unwrap_or(u64::MAX) >= u64::from(range.count) {
            return Err(Error::sandbox(
                SandboxKind::Scratch,
                format!(
                    "worker_ids: every one of the {} ids from {} is named by an account of /etc/passwd or /etc/group ({}), and a worker given one would share that account's files and processes; {}",
                    range.count,
                    range.first,
                    crate::sandbox::policy::AccountId::words(&named, 6),
                    if derived {
                        "the range was derived from the runner's user namespace (docs/deploy.md): give \"worker_ids\" a range it maps that no account names"
                    } else {
                        "give \"worker_ids\" a range that no account names (docs/deploy.md)"
                    }
                ),
            ));
        }
        let start = IDS_NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut taken = IDS_TAKEN.locked();
        for i in 0..range.count {
            let id = range.first + (start.wrapping_add(i) % range.count);
            if taken.contains(&id) || named_ids.contains(&id) {
                continue;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(dir.join(id.to_string()))
                .map_err(|e| fail(format!("cannot open the lock of uid {id} in"), e))?;
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(lock) => {
                    // A workspace a runner that is gone lent to this uid is
                    // given back first; one that cannot be stays lent, and
                    // the uid is not used.
                    if let Err(e) = acl::sweep(&dir, id) {
                        eprintln!(
                            "ext-runner: worker_ids: uid {id} is skipped: a workspace an earlier runner lent to it cannot be given back ({e}; ledger {})",
                            crate::support::terminal::escape(
                                &acl::ledger_of(&dir, id).to_string_lossy()
                            )
                        );
                        continue;
                    }
                    taken.push(id);
                    return Ok(IdLease { id, _lock: lock });
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => continue,
                Err((_, e)) => return Err(fail(format!("cannot lock uid {id} in"), e.into())),
            }
        }
        Err(Error::sandbox(
            SandboxKind::Scratch,
            format!(
                "worker_ids: all {} uids from {} are in use by running workers{}; {}",
                range.count,
                range.first,
                match named_ids.len() {
                    0 => String::new(),
                    n => format!(
                        " or named by accounts of /etc/passwd or /etc/group ({n}: {})",
                        crate::sandbox::policy::AccountId::words(&named, 6)
                    ),
                },
                if derived {
                    "the range was derived from the runner's user namespace (docs/deploy.md): map more ids into it, or give \"worker_ids\" a larger range it maps"
                } else {
                    "give the range more ids"
                }
            ),
        ))
    }
}

impl Drop for IdLease {
    fn drop(&mut self) {
        IDS_TAKEN.locked().retain(|&i| i != self.id);
    }
}

/// The `ext-reaper` program that a worker's monitor and reaper exec (see
/// `child::waiter_main`).
pub fn waiter_path() -> Option<PathBuf> {
    companion("ext-reaper", "NODUS_EXTENSION_REAPER")
}

/// A program of this crate installed beside `ext-runner` (`ext-reaper`,
/// `ext-relay`): the path in the environment variable `env`, else `name`
/// beside the running binary or one folder up (cargo's `examples/` and
/// `deps/`); none when it is not a file.
pub fn companion(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p))
            .filter(|p| p.is_file())
            .and_then(|p| std::fs::canonicalize(p).ok());
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join(name), dir.join("..").join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
}

/// `waiter_path`, opened read-only and close-on-exec for `fexecve`; none
/// (the waiters stay forks of the runner) when it is missing or unreadable.
fn open_waiter() -> Option<std::os::fd::OwnedFd> {
    let path = waiter_path()?;
    std::fs::File::open(path).ok().map(Into::into)
}

/// This process's argv and environment areas, (start, length), from fields
/// 48 to 51 of /proc/self/stat; none when they cannot be read.
fn runner_strings() -> Vec<(usize, usize)> {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Vec::new();
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Vec::new();
    };
    // `rest` starts at field 3 (the state).
    let f: Vec<usize> = rest
        .split_whitespace()
        .skip(45)
        .take(4)
        .filter_map(|v| v.parse().ok())
        .collect();
    match f[..] {
        [arg_start, arg_end, env_start, env_end]
            if arg_start <= arg_end && env_start <= env_end && arg_end > 0 =>
        {
            vec![
                (arg_start, arg_end - arg_start),
                (env_start, env_end - env_start),
            ]
        }
        _ => Vec::new(),
    }
}

/// What a worker may write: the scratch folder, and the workspace when the
/// policy lets it be written (the writable mounts, the supervisor's grants).
pub(crate) fn writable_grants<'a>(
    policy: &'a Policy,
    scratch: &Path,
) -> impl Iterator<Item = PathBuf> + 'a {
    std::iter::once(scratch.to_path_buf()).chain(
        policy
            .filesystem
            .iter()
            .filter(|r| r.access == Access::Write)
            .map(|r| r.path.clone()),
    )
}

/// A close-on-exec unix stream socketpair between the runner and the child
/// (`what` names it in the error): the runner keeps the first end.
fn channel(what: &str) -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| {
        Error::sandbox_io(
            SandboxKind::Prepare,
            format!("cannot make {what}"),
            e.into(),
        )
    })
}

fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| {
        Error::sandbox(
            SandboxKind::Prepare,
            format!("path {} contains a NUL byte", p.display()),
        )
    })
}

/// (resource, soft, hard). The CPU soft limit sends SIGXCPU a second before
/// the hard one's SIGKILL, so the worker's end names the limit it hit.
/// RLIMIT_AS as the policy decided it (`Policy::address_space`: not set where
/// a memory cgroup holds the worker, else a multiple of the memory limit;
/// docs/deploy.md has the figures); None leaves the runner's own.
fn rlimits(
    l: &Limits,
    address_space: Option<u64>,
) -> Vec<(libc::__rlimit_resource_t, libc::rlim_t, libc::rlim_t)> {
    let address_space = address_space.map(|b| (libc::RLIMIT_AS, b, b));
    address_space
        .into_iter()
        .chain([
            (
                libc::RLIMIT_CPU,
                l.cpu_seconds,
                l.cpu_seconds.saturating_add(1),
            ),
            (libc::RLIMIT_NPROC, l.processes, l.processes),
            (libc::RLIMIT_NOFILE, l.open_files, l.open_files),
            (libc::RLIMIT_FSIZE, l.file_size_bytes, l.file_size_bytes),
            (libc::RLIMIT_CORE, l.core_bytes, l.core_bytes),
        ])
        .collect()
}

fn scopes(scopes: &[PolicyScope]) -> BitFlags<Scope> {
    scopes
        .iter()
        .map(|s| match s {
            PolicyScope::AbstractUnixSocket => Scope::AbstractUnixSocket,
            PolicyScope::Signal => Scope::Signal,
        })
        .collect()
}

/// The rights of an access class, as far as Landlock ABI `abi` has them.
fn rights(access: Access, abi: ABI) -> BitFlags<AccessFs> {
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let all = AccessFs::from_all(abi);
    all & match access {
        Access::Read => read,
        Access::ReadExec => read | AccessFs::Execute,
        Access::ExecFile => AccessFs::ReadFile | AccessFs::Execute,
        Access::ReadWriteFile => AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate,
        Access::Write => all & !AccessFs::Execute,
    }
}

/// What Landlock may never grant outside the scratch folder: making sockets,
/// FIFOs and device nodes.
fn special_files() -> BitFlags<AccessFs> {
    AccessFs::MakeSock | AccessFs::MakeFifo | AccessFs::MakeChar | AccessFs::MakeBlock
}

/// The ruleset: the policy's rules, the scratch folder, and with a private
/// root (`root_files`: Some) the files it adds (its passwd and group).
fn landlock(
    policy: &Policy,
    ll: &LandlockPolicy,
    scratch: &Path,
    root_files: Option<&[(PathBuf, BitFlags<AccessFs>)]>,
    lent: Option<&acl::Lent>,
) -> Result<landlock::RulesetCreated> {
    let compat = match ll.requirement {
        Requirement::Hard => CompatLevel::HardRequirement,
        Requirement::Soft => CompatLevel::SoftRequirement,
        _ => CompatLevel::BestEffort,
    };
    let fail =
        |e: landlock::RulesetError| Error::sandbox(SandboxKind::Prepare, format!("Landlock: {e}"));
    // The rights of this kernel's ABI (the probe asked it), no more: an older
    // kernel keeps what it has, and the policy's guarantees say what is lost.
    let abi = ABI::from(i32::from(ll.abi));
    let net = if ll.tcp_handled {
        AccessNet::BindTcp | AccessNet::ConnectTcp
    } else {
        AccessNet::BindTcp.into()
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(compat)
        .handle_access(AccessFs::from_all(abi))
        .map_err(fail)?;
    if ll.abi >= 4 {
        ruleset = ruleset.handle_access(net).map_err(fail)?;
    }
    if ll.abi >= 6 {
        ruleset = ruleset.scope(scopes(&ll.scopes)).map_err(fail)?;
    }
    let mut ruleset = ruleset.create().map_err(fail)?;
    // Rights on one path add up; a file takes only file rights.
    let mut by_path: BTreeMap<PathBuf, BitFlags<AccessFs>> = BTreeMap::new();
    // Unix sockets are made in the scratch folder only: one in a folder the
    // host shares (the workspace) would be an endpoint others can reach. No
    // FIFO or device node there either (a FIFO blocks the host's open of it;
    // seccomp refuses mknod as well).
    let special = special_files();
    for r in &policy.filesystem {
        *by_path.entry(r.path.clone()).or_default() |= rights(r.access, abi) & !special;
    }
    // In the private root the scratch folder is /tmp and /var/tmp, and a
    // grant under the host's /tmp or /var/tmp is mounted inside it: Landlock's
    // walk goes from that mount up into the scratch folder and adds its
    // rights. The read-only mounts keep a read-only grant read-only; a
    // writable one would get the right to make sockets, so then the scratch
    // folder has none either (multiprocessing's forkserver and Manager fail).
    let nested_writable = root_files.is_some()
        && policy.filesystem.iter().any(|r| {
            let real = std::fs::canonicalize(&r.path).unwrap_or_else(|_| r.path.clone());
            r.access == Access::Write
                && [root::SCRATCH_INSIDE, "/var/tmp"]
                    .iter()
                    .any(|t| real.starts_with(t))
        });
    let scratch_rights = if nested_writable {
        rights(Access::Write, abi) & !special
    } else {
        rights(Access::Write, abi)
    };
    *by_path.entry(scratch.to_path_buf()).or_default() |= scratch_rights;
    // The private root's own files (passwd, group). Its /proc, /dev/shm and
    // devpts get theirs in the child, once mounted (`PrivateRoot::mount_rules`).
    for (path, access) in root_files.into_iter().flatten() {
        // As far as this kernel's ABI has them (ABI 1 has no REFER or TRUNCATE).
        *by_path.entry(path.clone()).or_default() |= *access & AccessFs::from_all(abi) & !special;
    }
    for (path, access) in by_path {
        let fd = match PathFd::new(&path) {
            Ok(fd) => fd,
            Err(_) if !path.exists() => continue, // e.g. /lib32 on this distribution
            Err(e) => {
                return Err(Error::sandbox(
                    SandboxKind::Prepare,
                    format!("Landlock rule for {}: {e}", path.display()),
                ))
            }
        };
        // The lent workspace's rule is for the folder that was lent: were its
        // path to lead elsewhere since (a folder on the way swapped), the
        // worker would write one folder with the other's entries.
        if let (Some(l), Some(ws)) = (lent, &policy.lent_workspace) {
            if *ws == path
                && rustix::fs::fstat(&fd).map(|st| (st.st_dev, st.st_ino)).ok() != Some(l.folder())
            {
                return Err(Error::sandbox(
                    SandboxKind::Workspace,
                    format!(
                        "the workspace {} changed while the worker was prepared: its path leads to another folder than the one lent to the worker's uid",
                        path.display()
                    ),
                ));
            }
        }
        let access = if path.is_dir() {
            access
        } else {
            access & AccessFs::from_file(abi)
        };
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(fail)?;
    }
    for port in ll.tcp_connect.iter().flatten().filter(|_| ll.abi >= 4) {
        ruleset = ruleset
            .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
            .map_err(fail)?;
    }
    Ok(ruleset)
}

/// The compiled filters of each distinct seccomp policy this process has
/// launched with: there are few (one per combination of the capabilities
/// that change a rule), and compiling one costs far more than comparing.
/// Keyed by what the filters are made of: the default and each rule's
/// number and action (not the reasons). A slot is filled once: a launch
/// that finds it being filled (by [`precompile`]) waits for that compile
/// instead of doing it again.
type FilterKey = (Errno, Vec<(i64, SyscallAction)>);
type FilterSlot = std::sync::Arc<std::sync::OnceLock<std::result::Result<Filters, String>>>;
/// The main filters and the supervised calls' filter (its listener's),
/// both compiled by libseccomp and cached together.
#[derive(Debug, Clone, PartialEq)]
struct Filters {
    main: Vec<seccompiler::BpfProgram>,
    supervised: Option<seccompiler::BpfProgram>,
}
static FILTERS: std::sync::Mutex<Vec<(FilterKey, FilterSlot)>> = std::sync::Mutex::new(Vec::new());

/// The cache key of `policy`'s filters.
fn filter_key(policy: &SeccompPolicy) -> FilterKey {
    (
        policy.default,
        policy
            .rules
            .iter()
            .map(|r| (r.number, r.action.clone()))
            .collect(),
    )
}

fn filter_slot(policy: &SeccompPolicy) -> FilterSlot {
    let key = filter_key(policy);
    let mut cache = FILTERS.locked();
    if let Some((_, slot)) = cache.iter().find(|(k, _)| *k == key) {
        return slot.clone();
    }
    let slot = FilterSlot::default();
    cache.push((key, slot.clone()));
    slot
}

fn fill(slot: &FilterSlot, policy: &SeccompPolicy) -> std::result::Result<Filters, String> {
    slot.get_or_init(|| compile(policy).map_err(|e| e.to_string()))
        .clone()
}

fn seccomp(policy: &SeccompPolicy) -> Result<Filters> {
    fill(&filter_slot(policy), policy).map_err(|e| Error::sandbox(SandboxKind::Prepare, e))
}

/// Starts compiling the policy's seccomp filters on a thread of their own,
/// unless this process has them already: called once the policy is derived,
/// so that the compile (about 1.5 ms with libseccomp, several ms as the
/// first thing a loaded process does) runs while the rest of the start goes
/// on (the schemas, the scratch folder, the cgroups, the private root's
/// plan, the Landlock ruleset) instead of before the fork. The launch takes
/// the filters from the same slot, waiting for this compile if it has not
/// finished; nothing about the filters changes. Where no thread can be
/// made the launch compiles them itself, as before.
pub fn precompile(policy: &Policy) {
    if let Some(sc) = &policy.seccomp {
        precompile_filters(sc);
    }
}

fn precompile_filters(sc: &SeccompPolicy) {
    let slot = filter_slot(sc);
    if slot.get().is_some() {
        return;
    }
    let sc = sc.clone();
    let _ = std::thread::Builder::new()
        .name("seccomp-compile".into())
        .spawn(move || {
            let _ = fill(&slot, &sc);
        });
}

fn compile(policy: &SeccompPolicy) -> Result<Filters> {
    use crate::sandbox::seccomp;
    Ok(Filters {
        main: seccomp::compile(policy, seccomp::Backend::CHOSEN)?,
        supervised: seccomp::supervised_filter(policy)?,
    })
}

/// The runner's end of the channel on which the worker's process sends the
/// egress proxy's listening socket, made in its own network namespace.
#[derive(Debug)]
pub struct EgressChannel(std::os::fd::OwnedFd);

/// With an egress plan: a socketpair whose one end goes into the confinement
/// (the child binds the proxy's socket in its network namespace and sends it),
/// the other is returned. Refuses a plan without a network namespace: egress
/// is never enforced on the host's network.
pub fn egress_channel(policy: &Policy, c: &mut Confinement) -> Result<Option<EgressChannel>> {
    let Some(plan) = &policy.egress else {
        return Ok(None);
    };
    if c.unshare_flags & libc::CLONE_NEWNET == 0 {
        return Err(Error::sandbox(
            SandboxKind::KernelLacks,
            "an egress allowlist needs the worker's own network namespace, and the policy has none",
        ));
    }
    let (ours, theirs) = channel("the egress proxy's channel")?;
    c.egress = Some(crate::sandbox::child::EgressSocket {
        channel: theirs,
        port: plan.proxy.port(),
    });
    Ok(Some(EgressChannel(ours)))
}

impl EgressChannel {
    /// The listening socket the worker's process sent before it exec'd (it
    /// is already there once the spawn has returned).
    pub fn receive(self) -> Result<std::net::TcpListener> {
        crate::sandbox::child::receive_egress_socket(&self.0).map_err(|e| {
            Error::sandbox_io(
                SandboxKind::Confinement(crate::sandbox::child::Step::EgressSocket),
                "the worker's egress proxy socket did not arrive",
                e,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::policy::{SeccompPolicy, SyscallRule};

    fn said(step: Step, errno: i32, detail: u32) -> String {
        let context = StepContext {
            writable_mounts: vec![c"/scratch".into(), c"/work".into()],
            cgroup_procs: vec![c"/sys/fs/cgroup/x/cgroup.procs".into()],
            root_mounts: vec!["mount(proc, /s-root/proc, proc)".into()],
            root_writable: vec![c"/s-root/tmp".into()],
            root_rules: vec![c"/proc".into()],
        };
        context.describe(&Failure {
            step,
            errno,
            detail,
        })
    }

    #[test]
    fn a_failed_step_is_put_in_words_with_its_errno_and_what_to_do() {
        let flags = (libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWNET) as u32;
        let m = said(Step::Unshare, libc::ENOSPC, flags);
        assert!(
            m.starts_with("confinement step unshare(CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWNET) failed: ENOSPC (No space left on device): ")
                && m.contains("user.max_*_namespaces"),
            "{m}"
        );
        let m = said(Step::Unshare, libc::EPERM, flags);
        assert!(
            m.starts_with("confinement step unshare(CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWNET) failed: EPERM (Operation not permitted): ")
                && m.contains("ext-runner probe")
                && m.contains("AppArmor"),
            "{m}"
        );
        assert_eq!(
            said(Step::BindWritable, libc::ENOENT, 1),
            "confinement step mount(/work, /work, MS_BIND|MS_REC) failed: ENOENT (No such file or directory)"
        );
        assert_eq!(
            said(Step::JoinCgroup, libc::EACCES, 0),
            "confinement step write 0 to /sys/fs/cgroup/x/cgroup.procs failed: EACCES (Permission denied)"
        );
        let m = said(Step::Rlimit, libc::EPERM, libc::RLIMIT_NOFILE);
        assert!(
            m.starts_with("confinement step setrlimit(RLIMIT_NOFILE) failed: EPERM (Operation not permitted): the runner's own hard limit")
                && m.contains("\"open_files\""),
            "{m}"
        );
        assert_eq!(
            said(Step::RootMount, libc::EPERM, 1),
            "confinement step mount(proc, /s-root/proc, proc) (private root) failed: EPERM (Operation not permitted)"
        );
        assert_eq!(
            said(Step::RootAttributes, libc::EPERM, 1),
            "confinement step mount_setattr(/s-root/tmp, clear MOUNT_ATTR_RDONLY) (private root) failed: EPERM (Operation not permitted)"
        );
        assert_eq!(
            said(Step::RootLandlockRule, libc::EBADFD, 0),
            "confinement step landlock_add_rule(/proc) (private root mount) failed: EBADFD (File descriptor in bad state)"
        );
        assert_eq!(
            said(Step::Seccomp, libc::EACCES, 1),
            "confinement step seccomp(SECCOMP_SET_MODE_FILTER) (filter 2) failed: EACCES (Permission denied)"
        );
        assert_eq!(
            said(Step::LandlockStatus, 0, child::LANDLOCK_PARTIALLY_ENFORCED),
            "confinement step Landlock status check failed: Landlock was partially enforced although this kernel has the ABI the policy needs (fully enforced expected)"
        );
        assert_eq!(
            said(Step::EgressSocket, libc::EPERM, 1),
            "confinement step ioctl(lo, SIOCSIFFLAGS, IFF_UP) for the egress proxy failed: EPERM (Operation not permitted)"
        );
        // A detail out of range still names the step.
        assert_eq!(
            said(Step::BindWritable, libc::ENOENT, 9),
            "confinement step mount(?, ?, MS_BIND|MS_REC) failed: ENOENT (No such file or directory)"
        );
        assert_eq!(clone_flags(libc::CLONE_NEWPID | 0x2), "CLONE_NEWPID|0x2");
    }

    fn policy(ioctl: SyscallAction) -> SeccompPolicy {
        let rule = |name: &str, action| SyscallRule {
            name: name.into(),
            number: crate::sandbox::syscalls::number(name).unwrap(),
            action,
            why: "test".into(),
        };
        SeccompPolicy {
            default: Errno::Perm,
            rules: vec![
                rule("read", SyscallAction::Allow),
                rule("ioctl", ioctl),
                rule("clone3", SyscallAction::Errno(Errno::NoSys)),
            ],
        }
    }

    #[test]
    fn each_distinct_filter_is_compiled_once() {
        let a = policy(SyscallAction::Allow);
        let b = policy(SyscallAction::Errno(Errno::OpNotSupp));
        let first = seccomp(&a).unwrap();
        assert_eq!(
            seccomp(&a).unwrap(),
            first,
            "the cached filter is the compiled one"
        );
        assert_eq!(first, compile(&a).unwrap());
        // A different reason is the same filter; a different action is not.
        let mut reworded = a.clone();
        reworded.rules[0].why = "other".into();
        assert_eq!(seccomp(&reworded).unwrap(), first);
        assert_ne!(seccomp(&b).unwrap(), first);
        let cached = |p: &SeccompPolicy| {
            let key = filter_key(p);
            FILTERS.locked().iter().filter(|(k, _)| *k == key).count()
        };
        assert_eq!((cached(&a), cached(&b)), (1, 1));
        // libseccomp: one filter with every action (a second one only for
        // conditions made of not-equal checks).
        assert_eq!(first.main.len(), 1);
        assert_eq!(seccomp(&b).unwrap().main.len(), 1);
    }

    #[test]
    fn a_precompiled_filter_is_the_one_launches_use() {
        // A policy of its own (no other test compiles it): ENOSYS by default.
        let mut p = policy(SyscallAction::Allow);
        p.default = Errno::NoSys;
        let slot = filter_slot(&p);
        assert!(slot.get().is_none(), "not compiled before");
        precompile_filters(&p);
        // The launch waits for the compile in flight, or makes it itself.
        assert_eq!(seccomp(&p).unwrap(), compile(&p).unwrap());
        assert!(slot.get().is_some_and(|r| r.is_ok()));
        let key = filter_key(&p);
        assert_eq!(
            FILTERS.locked().iter().filter(|(k, _)| *k == key).count(),
            1,
            "one slot per distinct filter, precompiled or not"
        );
        // Once there, nothing more is started.
        precompile_filters(&p);
    }
}
