//! `envwrap`: runs a command in one of the deployment environments the
//! runner must cope with, built on this machine (test infrastructure for
//! `tests/environments.rs` and the environment matrix; see docs/deploy.md).
//!
//! ```text
//! envwrap [--docker] [--apparmor-userns] [--landlock-abi N] [--userns-limits]
//!         [--userns-ids N] [--cgroups v2|none|ro] -- COMMAND [ARGS...]
//! ```
//!
//! - `--docker`: Docker's default seccomp profile as a process without
//!   `CAP_SYS_ADMIN` sees it (unshare, setns, mounts: EPERM; clone with a
//!   namespace flag: EPERM; clone3: ENOSYS) and Docker's default capability
//!   set (bounding, inheritable and ambient sets cut to it). Like Docker,
//!   no `no_new_privs` (when started as root).
//! - `--apparmor-userns`: Ubuntu 23.10+'s restriction of unprivileged user
//!   namespaces (`kernel.apparmor_restrict_unprivileged_userns=1`) as an
//!   unprivileged process sees it: a bare `unshare(CLONE_NEWUSER)` works,
//!   every other namespace and every mount is refused (EPERM), and the new
//!   namespace's own uid/gid map and setgroups cannot be written (EPERM: the
//!   process has no capability in it).
//! - `--landlock-abi N`: the kernel appears to have Landlock ABI N. 0: the
//!   Landlock system calls fail with ENOSYS (a kernel built without it).
//!   1..=6: a seccomp user-notification supervisor answers the version query
//!   with N and refuses rulesets an ABI-N kernel would refuse (unknown
//!   rights: EINVAL; fields the ABI-N struct lacks, set non-zero: E2BIG; a
//!   `landlock_restrict_self` flag below ABI 7 or a port rule below ABI 4:
//!   EINVAL); everything else reaches the real kernel.
//! - `--userns-limits`: (root) a new user namespace mapping root and 65534,
//!   whose `user.max_*_namespaces` are all 0: no namespace can be made in it,
//!   while `/proc/sys/user` of the enclosing namespace reads as usual.
//!   With `--userns-ids N`, the namespace maps ids 0..N-1 to the same ids
//!   instead (`0 0 N`), as a Kubernetes pod with `hostUsers: false` or
//!   rootless Podman maps 65536 ids from 0.
//! - `--cgroups VIEW`: (root) a private mount namespace where
//!   `/sys/fs/cgroup` is only the cgroup2 hierarchy (`v2`), nothing (`none`)
//!   or the host's mounts made read-only (`ro`, as in a container).
//!   `v2-delegated`: a cgroup v2 subtree delegated as systemd's
//!   `Delegate=pids memory` with `DelegateSubgroup=runner` makes it, for a
//!   machine whose v2 hierarchy has no `pids` or `memory` controller: the
//!   command really runs in a leaf `nodus-envwrap-<pid>/runner` of the host's
//!   cgroup2 hierarchy (so `/proc/self/cgroup` names it), and
//!   `/sys/fs/cgroup` is a tmpfs whose files say that this leaf and its
//!   parent have `pids` and `memory`, with the parent writable; a helper
//!   gives each new folder the files the kernel gives a new cgroup. Files,
//!   not controllers: the runner's decisions and what it writes can be
//!   checked (from outside, through `/proc/PID/root`), nothing is enforced.
//!   envwrap waits for the command and removes the real cgroups afterwards.
//!
//! Options combine; the filter and the supervisor are one. Seccomp rules are
//! libseccomp's (no hand-written BPF).

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;

use clap::{Parser, ValueEnum};
use libseccomp::{
    ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpNotifReq, ScmpNotifResp,
    ScmpNotifRespFlags, ScmpSyscall,
};

#[derive(Parser)]
#[command(about = "Runs COMMAND in a deployment environment built on this machine")]
struct Args {
    /// Docker's default seccomp profile and capabilities (no CAP_SYS_ADMIN).
    #[arg(long)]
    docker: bool,
    /// Ubuntu 23.10+ AppArmor restriction of unprivileged user namespaces.
    #[arg(long)]
    apparmor_userns: bool,
    /// The Landlock ABI the kernel appears to have (0: no Landlock).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=6))]
    landlock_abi: Option<u8>,
    /// A user namespace (root and 65534 mapped) with every user.max_*_namespaces at 0.
    #[arg(long)]
    userns_limits: bool,
    /// With --userns-limits: map ids 0..N-1 (as Kubernetes and Podman map 65536) instead of root and 65534.
    #[arg(long, requires = "userns_limits", value_parser = clap::value_parser!(u32).range(1..))]
    userns_ids: Option<u32>,
    /// What /sys/fs/cgroup shows, in a private mount namespace.
    #[arg(long, value_enum)]
    cgroups: Option<CgroupView>,
    /// (internal) The helper that writes the id maps of `--userns-limits`.
    #[arg(long, hide = true)]
    write_maps_for: Option<u32>,
    /// (internal) `--cgroups v2-delegated` inside: the real leaf's `cgroup.procs` to join.
    #[arg(long, hide = true)]
    delegated_leaf: Option<std::path::PathBuf>,
    /// (internal) `--cgroups v2-delegated` inside: the subtree's name.
    #[arg(long, hide = true)]
    delegated_name: Option<String>,
    /// (internal) Fills new folders under this root with a cgroup's files.
    #[arg(long, hide = true)]
    cgroupfs_files: Option<std::path::PathBuf>,
    /// (internal) The pid `--cgroupfs-files` dies with.
    #[arg(long, hide = true)]
    cgroupfs_parent: Option<i32>,
    #[arg(trailing_var_arg = true, required = true)]
    command: Vec<OsString>,
}

#[derive(Clone, Copy, ValueEnum)]
enum CgroupView {
    V2,
    None,
    Ro,
    V2Delegated,
}

const NS_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// Mount-family calls (all refused without CAP_SYS_ADMIN).
const MOUNT_CALLS: &[&str] = &[
    "mount",
    "umount2",
    "pivot_root",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
];

/// What Docker's default profile refuses to a process without CAP_SYS_ADMIN
/// (and the other capability-gated groups of moby's `default.json` whose
/// capability the default set lacks), besides the namespace and mount calls.
const DOCKER_DENIED: &[&str] = &[
    "setns",
    "sethostname",
    "setdomainname",
    "bpf",
    "perf_event_open",
    "fanotify_init",
    "lookup_dcookie",
    "quotactl",
    "syslog",
    "keyctl",
    "add_key",
    "request_key",
    "acct",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "init_module",
    "finit_module",
    "delete_module",
    "iopl",
    "ioperm",
    "settimeofday",
    "clock_settime",
    "stime",
    "open_by_handle_at",
    "name_to_handle_at",
    "userfaultfd",
    "nfsservctl",
    "vhangup",
];

/// Docker's default capability set.
const DOCKER_CAPS: &[caps::Capability] = &[
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_DAC_OVERRIDE,
    caps::Capability::CAP_FSETID,
    caps::Capability::CAP_FOWNER,
    caps::Capability::CAP_MKNOD,
    caps::Capability::CAP_NET_RAW,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETFCAP,
    caps::Capability::CAP_SETPCAP,
    caps::Capability::CAP_NET_BIND_SERVICE,
    caps::Capability::CAP_SYS_CHROOT,
    caps::Capability::CAP_KILL,
    caps::Capability::CAP_AUDIT_WRITE,
];

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("envwrap: {e}");
        std::process::exit(125);
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn run(args: Args) -> Res<()> {
    if let Some(pid) = args.write_maps_for {
        return write_maps(pid, args.userns_ids);
    }
    if let Some(root) = &args.cgroupfs_files {
        return cgroupfs_files(root, args.cgroupfs_parent);
    }
    if let (Some(leaf), Some(name)) = (&args.delegated_leaf, &args.delegated_name) {
        delegated_inner(leaf, name)?;
    }
    if args.userns_limits {
        enter_limited_userns(args.userns_ids)?;
    }
    if let Some(view) = args.cgroups {
        cgroup_view(view)?;
    }
    let mut cmd = std::process::Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    let Some(filter) = build_filter(&args)? else {
        return Err(cmd.exec().into());
    };
    // This process is under the filter too: it only answers notifications
    // and waits, and neither calls what goes to the supervisor.
    filter.load()?;
    if args.docker {
        docker_caps()?;
    }
    if !(args.apparmor_userns || args.landlock_abi.is_some_and(|n| n > 0)) {
        return Err(cmd.exec().into());
    }
    let notify = filter.get_notify_fd()?; // close-on-exec
    let sup = Supervisor {
        landlock_abi: args.landlock_abi.filter(|n| *n > 0),
        apparmor_userns: args.apparmor_userns,
    };
    std::thread::spawn(move || sup.serve(notify));
    let status = cmd.status()?;
    use std::os::unix::process::ExitStatusExt;
    std::process::exit(
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
    );
}

fn syscall(name: &str) -> Res<ScmpSyscall> {
    Ok(ScmpSyscall::from_name(name)?)
}

/// Adds `action` for `call` when any of the namespace `flags` is set in `arg`.
fn deny_flags(
    f: &mut ScmpFilterContext,
    call: &str,
    arg: u32,
    flags: impl Iterator<Item = u64>,
) -> Res<()> {
    for flag in flags {
        f.add_rule_conditional(
            ScmpAction::Errno(libc::EPERM),
            syscall(call)?,
            &[ScmpArgCompare::new(
                arg,
                ScmpCompareOp::MaskedEqual(flag),
                flag,
            )],
        )?;
    }
    Ok(())
}

fn deny(f: &mut ScmpFilterContext, names: &[&str], errno: i32) -> Res<()> {
    for n in names {
        // A name this libseccomp does not know on this architecture: skip.
        if let Ok(s) = ScmpSyscall::from_name(n) {
            f.add_rule(ScmpAction::Errno(errno), s)?;
        }
    }
    Ok(())
}

fn build_filter(a: &Args) -> Res<Option<ScmpFilterContext>> {
    if !a.docker && !a.apparmor_userns && a.landlock_abi.is_none() {
        return Ok(None);
    }
    let mut f = ScmpFilterContext::new(ScmpAction::Allow)?;
    // As root (Docker's case) without no_new_privs; CAP_SYS_ADMIN allows it.
    f.set_ctl_nnp(!nix::unistd::geteuid().is_root())?;
    if a.docker {
        deny(&mut f, &["unshare"], libc::EPERM)?;
        deny_flags(&mut f, "clone", 0, NS_FLAGS.into_iter())?;
        deny(&mut f, &["clone3"], libc::ENOSYS)?;
        deny(&mut f, MOUNT_CALLS, libc::EPERM)?;
        deny(&mut f, DOCKER_DENIED, libc::EPERM)?;
    }
    if a.apparmor_userns {
        let others = || {
            NS_FLAGS
                .into_iter()
                .filter(|f| *f != libc::CLONE_NEWUSER as u64)
        };
        if !a.docker {
            deny_flags(&mut f, "unshare", 0, others())?;
            deny_flags(&mut f, "clone", 0, others())?;
            deny(&mut f, &["clone3"], libc::ENOSYS)?;
            deny(&mut f, MOUNT_CALLS, libc::EPERM)?;
            deny(&mut f, &["setns"], libc::EPERM)?;
        }
        // Opens for writing go to the supervisor, which refuses the id maps.
        for (call, arg) in [("open", 1), ("openat", 2)] {
            for mode in [libc::O_WRONLY, libc::O_RDWR] {
                f.add_rule_conditional(
                    ScmpAction::Notify,
                    syscall(call)?,
                    &[ScmpArgCompare::new(
                        arg,
                        ScmpCompareOp::MaskedEqual(libc::O_ACCMODE as u64),
                        mode as u64,
                    )],
                )?;
            }
        }
        f.add_rule(ScmpAction::Notify, syscall("openat2")?)?;
    }
    match a.landlock_abi {
        Some(0) => deny(
            &mut f,
            &[
                "landlock_create_ruleset",
                "landlock_add_rule",
                "landlock_restrict_self",
            ],
            libc::ENOSYS,
        )?,
        Some(n) => {
            f.add_rule(ScmpAction::Notify, syscall("landlock_create_ruleset")?)?;
            if n < 7 {
                f.add_rule_conditional(
                    ScmpAction::Errno(libc::EINVAL),
                    syscall("landlock_restrict_self")?,
                    &[ScmpArgCompare::new(1, ScmpCompareOp::NotEqual, 0)],
                )?;
            }
            if n < 4 {
                // LANDLOCK_RULE_NET_PORT
                f.add_rule_conditional(
                    ScmpAction::Errno(libc::EINVAL),
                    syscall("landlock_add_rule")?,
                    &[ScmpArgCompare::new(1, ScmpCompareOp::Equal, 2)],
                )?;
            }
        }
        None => {}
    }
    Ok(Some(f))
}

/// Cuts the bounding, inheritable and ambient sets to Docker's default set.
fn docker_caps() -> Res<()> {
    use caps::{CapSet, CapsHashSet};
    let keep: CapsHashSet = DOCKER_CAPS.iter().copied().collect();
    for c in caps::all() {
        if !keep.contains(&c) {
            // EINVAL: a capability this kernel does not know.
            let _ = caps::drop(None, CapSet::Bounding, c);
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    let inh = caps::read(None, CapSet::Inheritable)?;
    caps::set(
        None,
        CapSet::Inheritable,
        &inh.intersection(&keep).copied().collect(),
    )?;
    Ok(())
}

struct Supervisor {
    landlock_abi: Option<u8>,
    apparmor_userns: bool,
}

/// Landlock's `struct landlock_ruleset_attr` size an ABI-N kernel knows.
fn attr_size(abi: u8) -> usize {
    match abi {
        1..=3 => 8,
        4 | 5 => 16,
        _ => 24,
    }
}

/// The filesystem, network and scope rights an ABI-N kernel knows.
fn known_rights(abi: u8) -> (u64, u64, u64) {
    let fs = match abi {
        1 => (1 << 13) - 1,
        2 => (1 << 14) - 1,
        3 | 4 => (1 << 15) - 1,
        _ => (1 << 16) - 1,
    };
    let net = if abi >= 4 { 0b11 } else { 0 };
    let scoped = if abi >= 6 { 0b11 } else { 0 };
    (fs, net, scoped)
}

enum Answer {
    Continue,
    Value(i64),
    Error(i32),
}

impl Supervisor {
    fn serve(self, raw: RawFd) {
        loop {
            let Ok(req) = ScmpNotifReq::receive(raw) else {
                return; // no task uses the filter any more
            };
            let name = req.data.syscall.get_name().unwrap_or_default();
            let answer = match name.as_str() {
                "landlock_create_ruleset" => self.landlock_create(&req),
                "open" | "openat" | "openat2" => self.open(&req, &name),
                _ => Answer::Continue,
            };
            let resp = match answer {
                Answer::Continue => {
                    ScmpNotifResp::new_continue(req.id, ScmpNotifRespFlags::CONTINUE)
                }
                Answer::Value(v) => ScmpNotifResp::new_val(req.id, v, ScmpNotifRespFlags::empty()),
                Answer::Error(e) => {
                    ScmpNotifResp::new_error(req.id, -e, ScmpNotifRespFlags::empty())
                }
            };
            // ENOENT: the task was interrupted or is gone; nothing to answer.
            let _ = resp.respond(raw);
        }
    }

    fn landlock_create(&self, req: &ScmpNotifReq) -> Answer {
        let Some(abi) = self.landlock_abi else {
            return Answer::Continue;
        };
        let [attr, size, flags, ..] = req.data.args;
        const VERSION: u64 = 1;
        if flags == VERSION {
            return if attr == 0 && size == 0 {
                Answer::Value(abi as i64)
            } else {
                Answer::Error(libc::EINVAL)
            };
        }
        if flags != 0 {
            return Answer::Error(libc::EINVAL); // the errata query and later flags: ABI 7
        }
        let size = size as usize;
        if size < 8 {
            return Answer::Error(libc::EINVAL);
        }
        if size > 4096 {
            return Answer::Error(libc::E2BIG);
        }
        let Some(bytes) = read_mem(req.pid, attr, size) else {
            return Answer::Error(libc::EFAULT);
        };
        let known = attr_size(abi);
        if bytes.len() > known && bytes[known..].iter().any(|b| *b != 0) {
            return Answer::Error(libc::E2BIG);
        }
        let field = |i: usize| {
            bytes
                .get(i * 8..i * 8 + 8)
                .map_or(0, |b| u64::from_ne_bytes(b.try_into().unwrap()))
        };
        let (fs, net, scoped) = (field(0), field(1), field(2));
        let (kfs, knet, kscoped) = known_rights(abi);
        if fs & !kfs != 0 || net & !knet != 0 || scoped & !kscoped != 0 {
            return Answer::Error(libc::EINVAL);
        }
        if fs == 0 && net == 0 && scoped == 0 {
            return Answer::Error(libc::ENOMSG);
        }
        Answer::Continue
    }

    /// Refuses a process's writes of its own uid_map, gid_map and setgroups.
    fn open(&self, req: &ScmpNotifReq, name: &str) -> Answer {
        if !self.apparmor_userns {
            return Answer::Continue;
        }
        let ptr = if name == "open" {
            req.data.args[0]
        } else {
            req.data.args[1]
        };
        let Some(path) = read_cstr(req.pid, ptr) else {
            return Answer::Continue;
        };
        if own_id_map(&path, req.pid) {
            Answer::Error(libc::EPERM)
        } else {
            Answer::Continue
        }
    }
}

/// Whether `path` is `/proc/{self,thread-self,PID}[/task/TID]/{uid_map,gid_map,setgroups}`
/// of the process `tid` belongs to.
fn own_id_map(path: &str, tid: u32) -> bool {
    let Some(rest) = path.strip_prefix("/proc/") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let (who, file) = match parts.as_slice() {
        [who, file] => (*who, *file),
        [who, "task", _, file] => (*who, *file),
        _ => return false,
    };
    if !matches!(file, "uid_map" | "gid_map" | "setgroups") {
        return false;
    }
    if who == "self" || who == "thread-self" {
        return true;
    }
    let tgid = std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .map(|v| v.trim().to_string())
        });
    who == tid.to_string() || tgid.as_deref() == Some(who)
}

fn read_mem(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, addr).ok()?;
    Some(buf)
}

fn read_cstr(pid: u32, addr: u64) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 256];
    while out.len() < 4096 {
        let n = f.read_at(&mut chunk, addr + out.len() as u64).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = chunk[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    None
}

/// Forks into a new user namespace mapping root and 65534, or ids 0..ids-1
/// (written by a helper process left in the enclosing namespace: a
/// multi-line map, or one of other ids than the writer's, needs CAP_SETUID
/// there) and sets every namespace limit in it to 0.
fn enter_limited_userns(ids: Option<u32>) -> Res<()> {
    use std::io::Write;
    let mut helper = std::process::Command::new(std::env::current_exe()?);
    helper
        .arg("--write-maps-for")
        .arg(std::process::id().to_string());
    if let Some(n) = ids {
        helper
            .arg("--userns-limits")
            .arg("--userns-ids")
            .arg(n.to_string());
    }
    let mut helper = helper
        .arg("--")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)?;
    helper
        .stdin
        .take()
        .ok_or("helper stdin")?
        .write_all(b"go")?;
    if !helper.wait()?.success() {
        return Err("writing the id maps of the new user namespace failed".into());
    }
    nix::unistd::setresgid(0.into(), 0.into(), 0.into())?;
    nix::unistd::setresuid(0.into(), 0.into(), 0.into())?;
    for entry in std::fs::read_dir("/proc/sys/user")? {
        let entry = entry?;
        let name = entry.file_name();
        if name.as_bytes().starts_with(b"max_") && name.as_bytes().ends_with(b"_namespaces") {
            std::fs::write(entry.path(), "0")?;
        }
    }
    Ok(())
}

/// The helper of `enter_limited_userns`: waits for "go", writes the maps of `pid`.
fn write_maps(pid: u32, ids: Option<u32>) -> Res<()> {
    let mut go = [0u8; 2];
    std::io::stdin().read_exact(&mut go)?;
    let map = match ids {
        Some(n) => format!("0 0 {n}\n"),
        None => "0 0 1\n65534 65534 1\n".to_string(),
    };
    for file in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{file}"), &map)?;
    }
    Ok(())
}

/// A mount namespace of this process's own, whose mounts do not propagate.
fn private_mount_namespace() -> Res<()> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    Ok(())
}

/// A private mount namespace with `view` at /sys/fs/cgroup.
fn cgroup_view(view: CgroupView) -> Res<()> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    if matches!(view, CgroupView::V2Delegated) {
        return delegated_view();
    }
    private_mount_namespace()?;
    let root = "/sys/fs/cgroup";
    match view {
        CgroupView::None | CgroupView::V2 => {
            // Detach whatever is mounted there (a tmpfs of v1 hierarchies, or cgroup2).
            while umount2(root, MntFlags::MNT_DETACH).is_ok() {}
            if matches!(view, CgroupView::V2) {
                mount(
                    Some("cgroup2"),
                    root,
                    Some("cgroup2"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    None::<&str>,
                )?;
            }
        }
        CgroupView::V2Delegated => unreachable!("delegated_view made it"),
        CgroupView::Ro => {
            let info = std::fs::read_to_string("/proc/self/mountinfo")?;
            let mut points: Vec<&str> = info
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| *p == root || p.starts_with("/sys/fs/cgroup/"))
                .collect();
            points.sort();
            points.dedup();
            for p in points {
                mount(
                    None::<&str>,
                    p,
                    None::<&str>,
                    MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
                    None::<&str>,
                )?;
            }
        }
    }
    Ok(())
}

/// `--cgroups v2-delegated`, outside: makes the real leaf
/// `nodus-envwrap-<pid>/runner` in the host's cgroup2 hierarchy, runs this
/// envwrap again inside the view (`--delegated-leaf`), waits, removes the
/// real cgroups and exits with the command's status.
fn delegated_view() -> Res<()> {
    let unified = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|m| std::path::Path::new(m).join("cgroup.controllers").is_file())
        .ok_or("no cgroup2 hierarchy on this host")?;
    let name = format!("nodus-envwrap-{}", std::process::id());
    let subtree = std::path::Path::new(unified).join(&name);
    let leaf = subtree.join("runner");
    std::fs::create_dir_all(&leaf)?;
    // The same arguments, the view's option replaced by the inner one.
    let mut argv: Vec<OsString> = Vec::new();
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        if a == "--cgroups" {
            it.next();
        } else if a != "--cgroups=v2-delegated" {
            argv.push(a);
        }
    }
    let status = std::process::Command::new(std::env::current_exe()?)
        .arg("--delegated-leaf")
        .arg(leaf.join("cgroup.procs"))
        .arg("--delegated-name")
        .arg(&name)
        .args(argv)
        .status();
    for d in [&leaf, &subtree] {
        for _ in 0..200 {
            if std::fs::remove_dir(d).is_ok() || !d.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    std::process::exit(status.ok().and_then(|s| s.code()).unwrap_or(125));
}

/// `--cgroups v2-delegated`, inside: joins the real leaf, then a private
/// mount namespace whose `/sys/fs/cgroup` is a tmpfs saying the leaf's
/// parent is a delegated subtree with `pids` and `memory`, kept filled in as
/// cgroupfs would be by `--cgroupfs-files` (each new folder gets the files
/// the kernel makes in a new cgroup).
fn delegated_inner(procs: &std::path::Path, name: &str) -> Res<()> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    std::fs::write(procs, "0")?;
    private_mount_namespace()?;
    let root = "/sys/fs/cgroup";
    while umount2(root, MntFlags::MNT_DETACH).is_ok() {}
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=1m"),
    )?;
    let me = std::process::id().to_string();
    let files: [(String, &str); 9] = [
        (
            "cgroup.controllers".into(),
            "cpuset cpu io memory hugetlb pids\n",
        ),
        ("cgroup.subtree_control".into(), "memory pids\n"),
        ("cgroup.procs".into(), ""),
        (format!("{name}/cgroup.controllers"), "memory pids\n"),
        (format!("{name}/cgroup.subtree_control"), "memory pids\n"),
        (format!("{name}/cgroup.procs"), ""),
        (format!("{name}/runner/cgroup.controllers"), "memory pids\n"),
        (format!("{name}/runner/cgroup.subtree_control"), ""),
        (format!("{name}/runner/cgroup.procs"), &me),
    ];
    for (path, text) in files {
        let f = std::path::Path::new(root).join(path);
        std::fs::create_dir_all(f.parent().unwrap_or(std::path::Path::new(root)))?;
        std::fs::write(f, text)?;
    }
    // Dies with this process's thread (which becomes the command).
    std::process::Command::new(std::env::current_exe()?)
        .args([
            "--cgroupfs-files",
            root,
            "--cgroupfs-parent",
            me.as_str(),
            "--",
        ])
        .arg("-")
        .stdin(std::process::Stdio::null())
        .spawn()?;
    Ok(())
}

/// `--cgroupfs-files ROOT`: gives every folder under ROOT that lacks them
/// the files a new cgroup v2 has (`cgroup.procs`, `pids.max`, `memory.max`,
/// `memory.swap.max`, `memory.oom.group`, `memory.events`), every 200 µs,
/// until its parent ends.
fn cgroupfs_files(root: &std::path::Path, parent: Option<i32>) -> Res<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
    // A parent that ended before the line above sends no signal: then this
    // helper would loop for ever, holding the test's output pipes open (a
    // CI run hung on it).
    if parent.is_some_and(|p| nix::unistd::getppid().as_raw() != p) {
        return Ok(());
    }
    let made: [(&str, &str); 8] = [
        ("cgroup.controllers", "memory pids\n"),
        ("cgroup.subtree_control", ""),
        ("cgroup.events", "populated 0\nfrozen 0\n"),
        ("pids.max", "max\n"),
        ("memory.max", "max\n"),
        ("memory.swap.max", "max\n"),
        ("memory.oom.group", "0\n"),
        ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"),
    ];
    loop {
        let mut pending = vec![root.to_path_buf()];
        while let Some(d) = pending.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let p = e.path();
                    if !p.join("cgroup.procs").exists() {
                        // Never over what the runner wrote meanwhile; cgroup.procs
                        // last (the runner's child writes it).
                        for (f, text) in made.iter().chain(&[("cgroup.procs", "")]) {
                            if let Ok(mut file) = std::fs::OpenOptions::new()
                                .write(true)
                                .create_new(true)
                                .open(p.join(f))
                            {
                                let _ = std::io::Write::write_all(&mut file, text.as_bytes());
                            }
                        }
                    }
                    pending.push(p);
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}
