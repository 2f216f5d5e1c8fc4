//! The code that runs in the worker's process between `fork` and `exec`.
//!
//! This is the only module with `unsafe`. Everything here was prepared by the
//! parent before the fork (`launch.rs`): no allocation, no lock, only
//! async-signal-safe system calls, in one linear sequence that reads top to
//! bottom in the order the kernel sees it:
//!
//! 1. new session; join the worker's cgroups; die with the runner
//! 2. namespaces (user first, mapping our own ids), then two forks: a monitor
//!    outside the pid namespace, a reaper as its process 1, the worker under
//!    it (monitor and reaper exec the small `ext-reaper` when the runner
//!    found it); the private root built, made read-only, then pivoted into
//!    (in that order: see `build_root`), and Landlock rules added on the
//!    file systems it mounted (their inodes exist only now)
//! 3. resource limits
//! 4. drop every capability
//! 5. mark all inherited descriptors close-on-exec
//! 6. Landlock (sets no_new_privs) and its status checked, then seccomp,
//!    last: the supervised calls' filter first where there is one (its
//!    listener sent to the runner, `supervisor.rs`), then the main filters;
//!    exec follows
//!
//! Each system call is a [`Step`]. When one fails, the child writes a
//! [`Failure`] (step, errno, one number of detail: 12 bytes from the stack)
//! to a close-on-exec pipe the parent opened before the fork, so the error
//! names the step instead of an errno alone. The calls go through the [`Sys`]
//! trait, statically dispatched: [`Kernel`] makes them, and the unit tests
//! record them to check the order without a kernel.
//!
//! Beside that sequence, two things on the far side of an exec of this
//! crate's own programs: `waiter_main`, the body of the exec'd monitor and
//! reaper (`ext-reaper`), and `inherited`, which claims the descriptors
//! `ext-relay` is handed across its exec.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;

/// Declares [`Step`]: one line per step, `Variant = "what the kernel was asked"`.
macro_rules! steps {
    ($($(#[$doc:meta])* $step:ident = $call:literal,)*) => {
        /// A confinement step of the worker's process between fork and exec,
        /// in the order `enter` takes them. The one that failed travels to
        /// the parent as a byte (the same binary writes and reads it, so a new
        /// step can go anywhere in the list).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum Step {
            $($(#[$doc])* $step,)*
        }

        impl Step {
            const ALL: &'static [Step] = &[$(Step::$step),*];

            /// The step a report byte names.
            fn from_u8(b: u8) -> Option<Step> {
                Step::ALL.get(b as usize).copied()
            }

            /// The system call (or check) the step is, e.g. `"unshare"`.
            pub fn call(self) -> &'static str {
                match self {
                    $(Step::$step => $call,)*
                }
            }
        }
    };
}

steps! {
    /// A session of its own.
    Setsid = "setsid",
    /// Joining one of the worker's cgroups (writing `cgroup.procs`; detail: which).
    JoinCgroup = "join the worker's cgroup",
    /// `PR_SET_PDEATHSIG`.
    ParentDeathSignal = "prctl(PR_SET_PDEATHSIG)",
    /// Making the namespaces.
    Unshare = "unshare",
    /// `/proc/self/setgroups`.
    Setgroups = "write /proc/self/setgroups",
    /// `/proc/self/uid_map`.
    UidMap = "write /proc/self/uid_map",
    /// `/proc/self/gid_map`.
    GidMap = "write /proc/self/gid_map",
    /// Making every mount private (nothing propagates back to the host).
    MountPrivate = "mount(/, MS_REC|MS_PRIVATE)",
    /// Bind-mounting a writable folder onto itself.
    BindWritable = "mount(MS_BIND|MS_REC)",
    /// Turning every mount read-only.
    ReadOnly = "mount_setattr(/, MOUNT_ATTR_RDONLY)",
    /// Making a writable folder's bind mount writable again.
    Writable = "mount_setattr(clear MOUNT_ATTR_RDONLY)",
    /// A mount of the private root (the skeleton onto itself, then a bind
    /// of a grant, proc, tmpfs or devpts: the detail is its index + 1).
    RootMount = "mount (private root)",
    /// The private root's mounts turned read-only and nosuid, or a writable
    /// one made writable again (detail: its index + 1), before the pivot.
    RootAttributes = "mount_setattr (private root)",
    /// Pivoting into the private root and detaching the host's tree.
    PivotRoot = "pivot_root",
    /// The working directory inside the private root.
    RootChdir = "chdir (private root)",
    /// A Landlock rule on a file system the private root mounted (/proc,
    /// /dev/shm, /dev/pts: detail is its index), added once it exists.
    RootLandlockRule = "landlock_add_rule (private root mount)",
    /// Bringing up loopback in the worker's network namespace, binding the
    /// egress proxy's socket there and handing it to the runner.
    EgressSocket = "make the egress proxy's socket in the network namespace",
    /// The pipe and forks that put the worker in its pid namespace.
    PidNamespace = "fork into the pid namespace",
    /// A resource limit.
    Rlimit = "setrlimit",
    /// Reading the effective capabilities (can the bounding set be changed?).
    Capget = "capget",
    /// Dropping a capability from the bounding set.
    DropBounding = "prctl(PR_CAPBSET_DROP)",
    /// Clearing the ambient capabilities.
    ClearAmbient = "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
    /// A root runner's worker taking its own uid and gid (setgroups,
    /// setresgid, setresuid).
    Identity = "setresuid/setresgid to the worker's own ids",
    /// Clearing the permitted, effective and inheritable capabilities.
    Capset = "capset",
    /// Marking inherited descriptors close-on-exec.
    CloseOnExec = "close_range(CLOSE_RANGE_CLOEXEC)",
    /// Landlock's `restrict_self`.
    Landlock = "landlock_restrict_self",
    /// Landlock enforced less than the policy expects.
    LandlockStatus = "Landlock status check",
    /// Installing the supervised calls' filter with a listener (the
    /// runner's supervisor answers them, `supervisor.rs`).
    SeccompListener = "seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER)",
    /// Handing the listener to the runner (SCM_RIGHTS).
    SendListener = "sendmsg(SCM_RIGHTS) of the seccomp listener to the runner",
    /// Installing a seccomp filter.
    Seccomp = "seccomp(SECCOMP_SET_MODE_FILTER)",
    /// Warm start: the worker's pipes onto its stdin, stdout and stderr
    /// (std does this for a cold one before `enter`).
    WarmStdio = "dup2 onto the worker's stdin/stdout/stderr (warm start)",
    /// Warm start: changing to the worker's folder (std's `current_dir`).
    WarmChdir = "chdir to the worker's folder (warm start)",
    /// Warm start: closing the descriptors exec would have closed.
    WarmClose = "close_range(3, ~0) (warm start)",
    /// Warm start: dumpable again, as exec would have made it.
    WarmDumpable = "prctl(PR_SET_DUMPABLE, 1) (warm start)",
}

/// What the child applies to itself, fully prepared before the fork.
#[derive(Default)]
pub struct Confinement {
    /// The write end of the failure report pipe (close-on-exec).
    pub report_fd: Option<libc::c_int>,
    pub parent_death_signal: Option<i32>,
    /// `cgroup.procs` of each of the worker's cgroups (v2: one; v1: pids
    /// and memory), to join.
    pub cgroup_procs: Vec<CString>,
    /// `unshare` flags (CLONE_NEW*), user namespace included when needed.
    pub unshare_flags: libc::c_int,
    /// `"<uid> <uid> 1"` and `"<gid> <gid> 1"`, written when a user namespace is made.
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
    /// Fork into the new pid namespace (under a reaper).
    pub pid_namespace: bool,
    /// In a new mount namespace: the only mounts left writable (bind mounts of these folders).
    pub writable_mounts: Vec<CString>,
    /// A fresh root to pivot into (`root.rs`), built in the worker once it is
    /// in its pid namespace (its /proc must be of that namespace); replaces
    /// `writable_mounts`.
    pub private_root: Option<crate::sandbox::root::PrivateRoot>,
    /// The runner's argv and environment strings (start, length), from its
    /// /proc/self/stat: the reaper, a fork of the runner that the worker sees
    /// as process 1 of its /proc, zeroes its copy, so that its command line
    /// does not show the runner's arguments.
    pub runner_strings: Vec<(usize, usize)>,
    /// The `ext-reaper` program (opened read-only, close-on-exec), which the
    /// monitor and the reaper exec to shed their copy of the runner; without
    /// it they stay forks of the runner.
    pub waiter: Option<std::os::fd::OwnedFd>,
    /// A fork server's zygote waits for the reaper itself: no monitor (see
    /// `enter_pid_namespace`).
    pub zygote_waits: Option<ZygoteWaits>,
    /// (resource, soft, hard).
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlim_t, libc::rlim_t)>,
    pub landlock: Option<landlock::RulesetCreated>,
    /// The policy expects Landlock fully enforced (this kernel has the ABI it
    /// needs): anything less is a failed step, not a silent degradation.
    pub landlock_full: bool,
    /// Installed in order; the last one wins among equal actions (clone3's ENOSYS).
    pub seccomp: Vec<seccompiler::BpfProgram>,
    /// The supervised calls' filter, installed before `seccomp` with a
    /// listener that goes to the runner over the channel.
    pub listener: Option<Listener>,
    /// The filters compare signal targets with `PID_PLACEHOLDER`: fill in the worker's pid.
    pub fill_in_pid: bool,
    /// A root runner's worker: the uid and gid it runs as (its own, from
    /// the operator's `worker_ids`), taken after the bounding set is dropped.
    pub identity: Option<(libc::uid_t, libc::gid_t)>,
    /// With an egress allowlist: the proxy's socket is made in the new network namespace.
    pub egress: Option<EgressSocket>,
}

/// The pipes through which a zygote waits for its worker's reaper itself
/// (`host::zygote`): it holds their read ends; both write ends stay its own
/// too (it closes its copies once it has forked), so they outlive the fork.
#[derive(Debug, Clone, Copy)]
pub struct ZygoteWaits {
    /// Where the reaper writes the worker's wait status (as it does to a
    /// monitor).
    pub status_out: libc::c_int,
    /// Where the forked process writes the reaper's pid before it exits.
    pub reaper_pid_out: libc::c_int,
}

/// The filter that sends the supervised calls to the runner
/// (SECCOMP_RET_USER_NOTIF for them, allow for the rest, which the main
/// filters decide), and the child's end of the socketpair on which its
/// listener goes to the runner.
pub struct Listener {
    pub filter: seccompiler::BpfProgram,
    pub channel: std::os::fd::OwnedFd,
}

/// The egress proxy's listening socket, made by the child in its fresh
/// network namespace (so that it is bound there) and sent to the runner,
/// which serves it from outside: the worker's only way out.
pub struct EgressSocket {
    /// The child's end of a socketpair whose other end the runner keeps.
    pub channel: std::os::fd::OwnedFd,
    /// The port on 127.0.0.1 inside the namespace.
    pub port: u16,
}

/// The step that failed, its errno (0 for a check that is no system call)
/// and one number saying which instance (the flags, the resource, the index
/// of the folder or filter, the capability; see [`Step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub step: Step,
    pub errno: i32,
    pub detail: u32,
}

/// `Failure::detail` of `Step::LandlockStatus`: how much was enforced.
pub const LANDLOCK_NOT_ENFORCED: u32 = 0;
pub const LANDLOCK_PARTIALLY_ENFORCED: u32 = 1;

impl Failure {
    /// Bytes on the report pipe: step, three zero bytes, errno, detail.
    pub const LEN: usize = 12;

    fn encode(&self) -> [u8; Failure::LEN] {
        let mut b = [0u8; Failure::LEN];
        b[0] = self.step as u8;
        b[4..8].copy_from_slice(&self.errno.to_ne_bytes());
        b[8..12].copy_from_slice(&self.detail.to_ne_bytes());
        b
    }

    /// The failure a report names, if it is a whole, valid one.
    pub fn decode(b: &[u8]) -> Option<Failure> {
        if b.len() != Failure::LEN {
            return None;
        }
        let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        Some(Failure {
            step: Step::from_u8(b[0])?,
            errno: i32::from_ne_bytes(word(4)),
            detail: u32::from_ne_bytes(word(8)),
        })
    }
}

/// A system call's errno.
type SysResult<T = ()> = Result<T, i32>;

/// The system calls the child makes, so that a test can record them. Each
/// returns the errno on failure; [`Kernel`] makes the real calls.
pub trait Sys {
    fn setsid(&self) -> SysResult;
    /// Open, write all of `data`, close.
    fn write_file(&self, path: &CStr, data: &[u8]) -> SysResult;
    fn set_parent_death_signal(&self, sig: i32) -> SysResult;
    fn unshare(&self, flags: libc::c_int) -> SysResult;
    /// mount(2) with no file system type and no data.
    fn mount(&self, source: Option<&CStr>, target: &CStr, flags: libc::c_ulong) -> SysResult;
    /// mount_setattr(2) on `path` and everything under it.
    fn mount_setattr(&self, path: &CStr, set: u64, clear: u64) -> SysResult;
    /// Makes the egress proxy's socket in the network namespace and sends it
    /// to the runner (see `egress_socket`).
    fn egress_socket(&self, e: &EgressSocket) -> Result<(), Failure>;
    /// Continues as the worker in a new pid namespace (see `enter_pid_namespace`).
    /// `wipe`: memory ranges the reaper zeroes in its copy of the runner;
    /// `waiter`: a descriptor of the `ext-reaper` program to exec as monitor
    /// and reaper; `zygote`: the zygote waits for the reaper, no monitor.
    fn enter_pid_namespace(
        &self,
        parent_death_signal: Option<i32>,
        wipe: &[(usize, usize)],
        waiter: Option<libc::c_int>,
        zygote: Option<ZygoteWaits>,
    ) -> Result<(), Failure>;
    /// One mount of the private root: its detached idmapped tree moved to
    /// its target (move_mount(2)), else mount(2) with its type and data.
    fn root_mount(&self, m: &crate::sandbox::root::Mount) -> SysResult;
    /// mount_setattr(2) on the mount at `path` alone.
    fn mount_setattr_one(&self, path: &CStr, set: u64, clear: u64) -> SysResult;
    fn chdir(&self, path: &CStr) -> SysResult;
    /// pivot_root(".", "."): the working directory becomes the root, the
    /// old root is stacked on it.
    fn pivot_root_here(&self) -> SysResult;
    /// umount2(path, MNT_DETACH).
    fn detach(&self, path: &CStr) -> SysResult;
    /// Adds to `ruleset` a rule for what `path` names now (opened `O_PATH`):
    /// a file system mounted after the ruleset was made.
    fn landlock_add_rule(
        &self,
        ruleset: landlock::RulesetCreated,
        path: &CStr,
        access: landlock::BitFlags<landlock::AccessFs>,
    ) -> SysResult<landlock::RulesetCreated>;
    fn setrlimit(
        &self,
        resource: libc::__rlimit_resource_t,
        soft: libc::rlim_t,
        hard: libc::rlim_t,
    ) -> SysResult;
    /// The effective capability set, as a bit mask.
    fn effective_capabilities(&self) -> SysResult<u64>;
    /// prctl(PR_CAPBSET_DROP, cap).
    fn drop_bounding(&self, cap: u32) -> SysResult;
    /// prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL).
    fn clear_ambient(&self) -> SysResult;
    /// setgroups(2) to `[gid]`, setresgid(2) and setresuid(2) to `gid` and `uid`.
    fn set_identity(&self, uid: libc::uid_t, gid: libc::gid_t) -> SysResult;
    /// capset(2) with every set empty.
    fn clear_capabilities(&self) -> SysResult;
    /// close_range(first, ~0, CLOSE_RANGE_CLOEXEC).
    fn cloexec_from(&self, first: u32) -> SysResult;
    /// Landlock's restrict_self: the status the ruleset was enforced with.
    fn landlock_restrict_self(
        &self,
        ruleset: landlock::RulesetCreated,
    ) -> SysResult<landlock::RulesetStatus>;
    fn seccomp(&self, filter: &seccompiler::BpfProgram) -> SysResult;
    /// Installs `l.filter` with a new listener, sends the listener over
    /// `l.channel` and closes it.
    fn seccomp_listener(&self, l: &Listener) -> Result<(), Failure>;
}

/// The real system calls.
pub struct Kernel;

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EPERM)
}

fn check(ret: libc::c_int) -> SysResult {
    if ret == -1 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Brings up loopback in the (new, empty) network namespace, binds and
/// listens on 127.0.0.1:`port` there, and sends that socket to the runner over
/// `channel`; keeps no descriptor of it. Stack buffers only. A failure's
/// detail is the index of the call in [`EGRESS_CALLS`].
fn egress_socket(e: &EgressSocket) -> Result<(), Failure> {
    use std::os::fd::AsRawFd;
    let fail = |call: u32| at(Step::EgressSocket, call);
    // SAFETY: integer arguments.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(s).map_err(fail(0))?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name[0] = b'l' as libc::c_char;
    ifr.ifr_name[1] = b'o' as libc::c_char;
    ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads a live ifreq on the stack.
    let up = unsafe { libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr as *const libc::ifreq) };
    let err = errno();
    // SAFETY: closes the socket made above, once.
    unsafe { libc::close(s) };
    if up == -1 {
        return Err(fail(1)(err));
    }
    // SAFETY: integer arguments.
    let l = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    check(l).map_err(fail(2))?;
    let sent = bind_listen_send(l, e.port, e.channel.as_raw_fd())
        .map_err(|(call, errno)| fail(call)(errno));
    // SAFETY: `l` is ours; the runner holds its own copy once it is sent.
    unsafe { libc::close(l) };
    sent
}

/// The calls of `egress_socket`, in order (a failure's detail).
pub const EGRESS_CALLS: [&str; 6] = [
    "socket(AF_INET, SOCK_DGRAM)",
    "ioctl(lo, SIOCSIFFLAGS, IFF_UP)",
    "socket(AF_INET, SOCK_STREAM)",
    "bind(127.0.0.1)",
    "listen",
    "sendmsg(SCM_RIGHTS) to the runner",
];

/// Errors: (index in `EGRESS_CALLS`, errno).
fn bind_listen_send(l: libc::c_int, port: u16, channel: libc::c_int) -> Result<(), (u32, i32)> {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `addr` is a live sockaddr_in of the length passed.
    check(unsafe {
        libc::bind(
            l,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })
    .map_err(|e| (3, e))?;
    // SAFETY: integer arguments.
    check(unsafe { libc::listen(l, 128) }).map_err(|e| (4, e))?;
    send_fd(channel, l).map_err(|e| (5, e))
}

/// The runner's side of `egress_socket` (after the spawn, not in the child):
/// takes the listening socket the child sent over `channel`, non-blocking.
pub fn receive_egress_socket(channel: &std::os::fd::OwnedFd) -> io::Result<std::net::TcpListener> {
    let fd = receive_fd(channel, false)?;
    let listener = std::net::TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// mount_setattr(2) with the given `AT_*` flags (`AT_RECURSIVE` or none).
fn mount_setattr_at(path: &CStr, set: u64, clear: u64, flags: libc::c_uint) -> SysResult {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is NUL-terminated and `attr` a live struct of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(r as libc::c_int)
}

/// The pointer of an optional C string, null when absent.
fn ptr_or_null(s: &Option<CString>) -> *const libc::c_char {
    s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr())
}

/// Mounts the private root prepared by `root.rs` and pivots into it: every
/// mount of it turns read-only and nosuid, then the writable ones (scratch,
/// /dev/shm, devpts, a writable workspace) are made writable again, each
/// alone; then the skeleton becomes `/` and the host's tree is detached.
fn build_root<S: Sys>(s: &S, r: &crate::sandbox::root::PrivateRoot) -> Result<(), Failure> {
    s.mount(None, c"/", libc::MS_REC | libc::MS_PRIVATE)
        .map_err(at(Step::MountPrivate, 0))?;
    // pivot_root needs the new root to be a mount of its own.
    s.mount(Some(&r.skeleton), &r.skeleton, libc::MS_BIND)
        .map_err(at(Step::RootMount, 0))?;
    for (i, m) in r.mounts.iter().enumerate() {
        s.root_mount(m).map_err(at(Step::RootMount, i as u32 + 1))?;
    }
    // Read-only and nosuid before pivot_root, while the new tree is
    // reachable by this process alone (by its skeleton path, which nobody
    // else walks). Turning a mount read-only fails with EBUSY while anyone
    // holds write access to it, even for an instant (mnt_hold_writers), and
    // pivot_root moves the root of every process whose root is the old one
    // (chroot_fs_refs): the monitor, which shares this mount namespace and
    // is not waited for, may still be loading the exec'd `ext-reaper`'s
    // libraries, and following the skeleton's fresh `/lib` or `/lib64`
    // symlink updates its atime (relatime: atime not after mtime), a write
    // hold on the new root's mount. After pivot_root nothing turns
    // read-only (clearing RDONLY holds no writers).
    s.mount_setattr(&r.skeleton, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0)
        .map_err(at(Step::RootAttributes, 0))?;
    for (i, path) in r.writable.iter().enumerate() {
        s.mount_setattr_one(path, 0, MOUNT_ATTR_RDONLY)
            .map_err(at(Step::RootAttributes, i as u32 + 1))?;
    }
    // pivot_root(".", ".") stacks the old root on the new one, and the
    // detach removes it.
    s.chdir(&r.skeleton).map_err(at(Step::PivotRoot, 0))?;
    s.pivot_root_here().map_err(at(Step::PivotRoot, 1))?;
    s.detach(c".").map_err(at(Step::PivotRoot, 2))?;
    s.chdir(c"/").map_err(at(Step::PivotRoot, 3))?;
    s.chdir(&r.cwd).map_err(at(Step::RootChdir, 0))
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

impl Sys for Kernel {
    fn setsid(&self) -> SysResult {
        // SAFETY: setsid takes no arguments.
        check(unsafe { libc::setsid() })
    }

    fn write_file(&self, path: &CStr, data: &[u8]) -> SysResult {
        // SAFETY: `path` is a valid NUL-terminated string; flags are constants.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        check(fd)?;
        // SAFETY: `data` is a live slice for the duration of the call; `fd` is ours.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        let err = errno();
        // SAFETY: `fd` was opened above and is closed once.
        unsafe { libc::close(fd) };
        if n == data.len() as isize {
            Ok(())
        } else if n >= 0 {
            Err(libc::EIO) // a short write: the kernel took part of the map
        } else {
            Err(err)
        }
    }

    fn set_parent_death_signal(&self, sig: i32) -> SysResult {
        // SAFETY: PR_SET_PDEATHSIG takes an integer signal number.
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) })
    }

    fn unshare(&self, flags: libc::c_int) -> SysResult {
        // SAFETY: unshare takes integer flags.
        check(unsafe { libc::unshare(flags) })
    }

    fn mount(&self, source: Option<&CStr>, target: &CStr, flags: libc::c_ulong) -> SysResult {
        let none = std::ptr::null::<libc::c_char>();
        let source = source.map_or(none, CStr::as_ptr);
        // SAFETY: NUL-terminated strings and null pointers where mount(2) allows them.
        check(unsafe { libc::mount(source, target.as_ptr(), none, flags, std::ptr::null()) })
    }

    fn mount_setattr(&self, path: &CStr, set: u64, clear: u64) -> SysResult {
        mount_setattr_at(path, set, clear, libc::AT_RECURSIVE as libc::c_uint)
    }

    fn egress_socket(&self, e: &EgressSocket) -> Result<(), Failure> {
        egress_socket(e)
    }

    fn enter_pid_namespace(
        &self,
        parent_death_signal: Option<i32>,
        wipe: &[(usize, usize)],
        waiter: Option<libc::c_int>,
        zygote: Option<ZygoteWaits>,
    ) -> Result<(), Failure> {
        enter_pid_namespace(self, parent_death_signal, wipe, waiter, zygote)
    }

    fn root_mount(&self, m: &crate::sandbox::root::Mount) -> SysResult {
        let mounted = match m.tree {
            // An idmapped copy of the workspace the runner detached before
            // the fork (`idmapped_tree`): attached here.
            // SAFETY: `tree` is a live descriptor inherited from the runner,
            // the paths NUL-terminated.
            Some(tree) => unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    tree,
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    m.target.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                ) as libc::c_int
            },
            // SAFETY: NUL-terminated strings prepared before the fork, or
            // null pointers where mount(2) allows them; `data` is an option
            // string or null.
            None => unsafe {
                libc::mount(
                    ptr_or_null(&m.source),
                    m.target.as_ptr(),
                    ptr_or_null(&m.fstype),
                    m.flags,
                    ptr_or_null(&m.data).cast(),
                )
            },
        };
        check(mounted)
    }

    fn mount_setattr_one(&self, path: &CStr, set: u64, clear: u64) -> SysResult {
        mount_setattr_at(path, set, clear, 0)
    }

    fn chdir(&self, path: &CStr) -> SysResult {
        // SAFETY: a NUL-terminated path.
        check(unsafe { libc::chdir(path.as_ptr()) })
    }

    fn pivot_root_here(&self) -> SysResult {
        // SAFETY: static NUL-terminated paths.
        check(
            unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) }
                as libc::c_int,
        )
    }

    fn detach(&self, path: &CStr) -> SysResult {
        // SAFETY: a NUL-terminated path.
        check(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) })
    }

    fn landlock_add_rule(
        &self,
        ruleset: landlock::RulesetCreated,
        path: &CStr,
        access: landlock::BitFlags<landlock::AccessFs>,
    ) -> SysResult<landlock::RulesetCreated> {
        use landlock::{
            AddRuleError, AddRulesError, PathBeneath, RulesetCreatedAttr, RulesetError,
        };
        use std::os::fd::{FromRawFd, OwnedFd};
        // SAFETY: a NUL-terminated path prepared before the fork; O_PATH
        // opens the inode for naming only.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        check(fd)?;
        // SAFETY: `fd` was opened above and is owned by nothing else; the
        // rule closes it when dropped.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // The crate's checks are fstat and bit masks; its error paths carry an
        // io::Error from errno: no allocation.
        match ruleset.add_rule(PathBeneath::new(fd, access)) {
            Ok(ruleset) => Ok(ruleset),
            Err(RulesetError::AddRules(AddRulesError::Fs(AddRuleError::AddRuleCall {
                source,
                ..
            }))) => Err(source.raw_os_error().unwrap_or(libc::EPERM)),
            Err(_) => Err(libc::EINVAL),
        }
    }

    fn setrlimit(
        &self,
        resource: libc::__rlimit_resource_t,
        soft: libc::rlim_t,
        hard: libc::rlim_t,
    ) -> SysResult {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: `lim` is a valid rlimit on the stack.
        check(unsafe { libc::setrlimit(resource, &lim) })
    }

    fn effective_capabilities(&self) -> SysResult<u64> {
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        // SAFETY: a v3 header and the two data structs v3 fills, both live on the stack.
        let r = unsafe {
            libc::syscall(
                libc::SYS_capget,
                &mut header as *mut CapHeader,
                data.as_mut_ptr(),
            )
        };
        check(r as libc::c_int)?;
        Ok(u64::from(data[1].effective) << 32 | u64::from(data[0].effective))
    }

    fn drop_bounding(&self, cap: u32) -> SysResult {
        // SAFETY: integer arguments only.
        check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) })
    }

    fn clear_ambient(&self) -> SysResult {
        // SAFETY: integer arguments only.
        check(unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        })
    }

    fn set_identity(&self, uid: libc::uid_t, gid: libc::gid_t) -> SysResult {
        // Raw system calls: glibc's wrappers would broadcast to other threads
        // under a lock (there are none after fork, but the wrapper may not know).
        let groups = [gid];
        // SAFETY: a one-element array of gid_t, live on the stack.
        check(
            unsafe { libc::syscall(libc::SYS_setgroups, 1usize, groups.as_ptr()) } as libc::c_int,
        )?;
        // SAFETY: integer arguments only.
        check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) } as libc::c_int)?;
        // SAFETY: integer arguments only.
        check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) } as libc::c_int)
    }

    fn clear_capabilities(&self) -> SysResult {
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData::default(); 2];
        // SAFETY: a v3 header and two zeroed data structs, live on the stack.
        let r = unsafe {
            libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapHeader,
                data.as_ptr(),
            )
        };
        check(r as libc::c_int)
    }

    fn cloexec_from(&self, first: u32) -> SysResult {
        // SAFETY: close_range takes integers; CLOSE_RANGE_CLOEXEC only sets flags.
        check(unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        } as libc::c_int)
    }

    fn landlock_restrict_self(
        &self,
        ruleset: landlock::RulesetCreated,
    ) -> SysResult<landlock::RulesetStatus> {
        use landlock::{RestrictSelfError, RulesetError};
        // The crate's error paths carry an io::Error from errno: no allocation.
        match ruleset.restrict_self() {
            Ok(status) => Ok(status.ruleset),
            Err(RulesetError::RestrictSelf(
                RestrictSelfError::SetNoNewPrivsCall { source, .. }
                | RestrictSelfError::RestrictSelfCall { source, .. },
            )) => Err(source.raw_os_error().unwrap_or(libc::EPERM)),
            Err(_) => Err(libc::EPERM),
        }
    }

    fn seccomp(&self, filter: &seccompiler::BpfProgram) -> SysResult {
        match seccompiler::apply_filter(filter) {
            Ok(()) => Ok(()),
            Err(seccompiler::Error::Prctl(e) | seccompiler::Error::Seccomp(e)) => {
                Err(e.raw_os_error().unwrap_or(libc::EPERM))
            }
            Err(seccompiler::Error::EmptyFilter) => Err(libc::EINVAL),
            Err(_) => Err(libc::EPERM),
        }
    }

    fn seccomp_listener(&self, l: &Listener) -> Result<(), Failure> {
        use std::os::fd::AsRawFd;
        let fd = install_listener(&l.filter).map_err(at(Step::SeccompListener, 0))?;
        let sent = send_fd(l.channel.as_raw_fd(), fd).map_err(at(Step::SendListener, 0));
        // SAFETY: `fd` is the listener made above; the runner has its copy.
        unsafe { libc::close(fd) };
        sent
    }
}

/// no_new_privs (Landlock sets it; without Landlock the first filter needs
/// it), then the filter with SECCOMP_FILTER_FLAG_NEW_LISTENER: the
/// listener's descriptor (close-on-exec).
fn install_listener(filter: &seccompiler::BpfProgram) -> SysResult<libc::c_int> {
    // SAFETY: integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })?;
    let prog = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        // seccompiler's sock_filter has libc's layout (code, jt, jf, k).
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at the live instructions of `filter` for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd as libc::c_int)
    }
}

/// Sends descriptor `fd` over the unix socket `channel` with one data byte
/// (SCM_RIGHTS). Stack buffers only.
fn send_fd(channel: libc::c_int, fd: libc::c_int) -> SysResult {
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    let mut control = Control([0; 64]);
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic on a constant.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as usize;
    // SAFETY: `msg` points at `control`, 8-aligned and larger than
    // CMSG_SPACE(4), so the first header and its 4 data bytes lie inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd);
    }
    // SAFETY: `msg` and everything it points at are live for the call.
    let n = unsafe { libc::sendmsg(channel, &msg, libc::MSG_NOSIGNAL) };
    if n == 1 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// `map_err` for a step: the errno becomes that step's failure.
fn at(step: Step, detail: u32) -> impl Fn(i32) -> Failure {
    move |errno| Failure {
        step,
        errno,
        detail,
    }
}

const CAP_SETPCAP: u32 = 8;
/// Capabilities are numbered below 64 (two 32-bit words in capset); the
/// bounding set refuses a number this kernel does not know with EINVAL.
const CAP_LIMIT: u32 = 64;

/// Applies `c` to the calling, freshly forked process. Runs between fork and exec.
pub fn enter<S: Sys>(s: &S, c: &mut Confinement) -> Result<(), Failure> {
    // 1. A session of its own: off the host's terminal, one process group to kill.
    s.setsid().map_err(at(Step::Setsid, 0))?;
    for (i, procs) in c.cgroup_procs.iter().enumerate() {
        s.write_file(procs, b"0")
            .map_err(at(Step::JoinCgroup, i as u32))?;
    }
    if let Some(sig) = c.parent_death_signal {
        s.set_parent_death_signal(sig)
            .map_err(at(Step::ParentDeathSignal, 0))?;
    }

    // 2. Namespaces.
    let flags = c.unshare_flags;
    if flags != 0 {
        s.unshare(flags).map_err(at(Step::Unshare, flags as u32))?;
        if flags & libc::CLONE_NEWUSER != 0 {
            s.write_file(c"/proc/self/setgroups", b"deny")
                .map_err(at(Step::Setgroups, 0))?;
            s.write_file(c"/proc/self/uid_map", &c.uid_map)
                .map_err(at(Step::UidMap, 0))?;
            s.write_file(c"/proc/self/gid_map", &c.gid_map)
                .map_err(at(Step::GidMap, 0))?;
        }
    }
    if flags & libc::CLONE_NEWNS != 0 && c.private_root.is_none() {
        read_only_mounts(s, &c.writable_mounts)?;
    }
    // Still with the capabilities of the new user namespace (or root's):
    // bringing up loopback needs CAP_NET_ADMIN over the network namespace.
    if let Some(e) = &c.egress {
        s.egress_socket(e)?;
    }
    if c.pid_namespace {
        use std::os::fd::AsRawFd;
        let waiter = c.waiter.as_ref().map(|f| f.as_raw_fd());
        s.enter_pid_namespace(
            c.parent_death_signal,
            &c.runner_strings,
            waiter,
            c.zygote_waits,
        )?;
    }
    if let Some(root) = &c.private_root {
        build_root(s, root)?;
        // Landlock on what the root mounted (procfs, tmpfs, devpts): a rule
        // names an inode, and theirs exist only now.
        for (i, (path, access)) in root.mount_rules.iter().enumerate() {
            if let Some(ruleset) = c.landlock.take() {
                c.landlock = Some(
                    s.landlock_add_rule(ruleset, path, *access)
                        .map_err(at(Step::RootLandlockRule, i as u32))?,
                );
            }
        }
    }

    // 3. Resource limits, hard ones the worker cannot raise.
    for &(resource, soft, hard) in &c.rlimits {
        s.setrlimit(resource, soft, hard)
            .map_err(at(Step::Rlimit, resource))?;
    }

    // 4. Capabilities: none in any set, none to regain. Without CAP_SETPCAP
    // (an unprivileged runner given no user namespace) the bounding set
    // cannot change; it only limits what executing a set-uid or file-capability
    // program could gain, which no_new_privs (set by Landlock and seccomp) stops.
    let effective = s.effective_capabilities().map_err(at(Step::Capget, 0))?;
    if effective & (1 << CAP_SETPCAP) != 0 {
        for cap in 0..CAP_LIMIT {
            match s.drop_bounding(cap) {
                Ok(()) | Err(libc::EINVAL) => {} // EINVAL: a number this kernel does not know
                Err(e) => return Err(at(Step::DropBounding, cap)(e)),
            }
        }
    }
    match s.clear_ambient() {
        Ok(()) | Err(libc::EINVAL) => {} // EINVAL: a kernel without ambient capabilities (< 4.3)
        Err(e) => return Err(at(Step::ClearAmbient, 0)(e)),
    }
    // A root runner's worker becomes its own uid and gid: no root power over
    // files or processes, and RLIMIT_NPROC binds it (threads included).
    if let Some((uid, gid)) = c.identity {
        s.set_identity(uid, gid).map_err(at(Step::Identity, uid))?;
    }
    s.clear_capabilities().map_err(at(Step::Capset, 0))?;

    // 5. Descriptors above stderr close at exec, whoever opened them.
    s.cloexec_from(3).map_err(at(Step::CloseOnExec, 0))?;

    // 6. Landlock, then seccomp: the last things before exec.
    if let Some(ruleset) = c.landlock.take() {
        let status = s
            .landlock_restrict_self(ruleset)
            .map_err(at(Step::Landlock, 0))?;
        check_landlock(status, c.landlock_full)?;
    }
    if c.fill_in_pid {
        fill_in_pid(&mut c.seccomp);
    }
    // The supervised calls' filter first: sending its listener takes a
    // sendmsg the main filters may refuse. Among the filters' answers the
    // kernel takes the most severe, so a refusal of the main filters (a
    // setuid mode) still wins over the supervisor.
    if let Some(l) = &c.listener {
        s.seccomp_listener(l)?;
    }
    for (i, filter) in c.seccomp.iter().enumerate() {
        s.seccomp(filter).map_err(at(Step::Seccomp, i as u32))?;
    }
    Ok(())
}

/// Stands for the worker's pid in a seccomp filter built before the fork.
pub const PID_PLACEHOLDER: u32 = 0x7ffe_f00d;
/// Stands for minus the worker's pid (its process group, to kill()).
pub const NEG_PID_PLACEHOLDER: u32 = PID_PLACEHOLDER.wrapping_neg();

/// Replaces the placeholders in the compiled filters' comparisons with this
/// process's pid (the worker's: no pid namespace when the rule is used, and
/// exec keeps the pid), in place: no allocation.
fn fill_in_pid(filters: &mut [seccompiler::BpfProgram]) {
    // SAFETY: getpid takes no arguments.
    let pid = unsafe { libc::getpid() } as u32;
    for insn in filters.iter_mut().flat_map(|f| f.iter_mut()) {
        if insn.k == PID_PLACEHOLDER {
            insn.k = pid;
        } else if insn.k == NEG_PID_PLACEHOLDER {
            insn.k = pid.wrapping_neg();
        }
    }
}

/// Landlock enforced as much as the policy expects: fully when the kernel
/// has the ABI the policy needs (best effort on an older kernel takes what
/// there is; the policy already says what it lost).
fn check_landlock(status: landlock::RulesetStatus, full_expected: bool) -> Result<(), Failure> {
    use landlock::RulesetStatus;
    let detail = match status {
        RulesetStatus::FullyEnforced => return Ok(()),
        _ if !full_expected => return Ok(()),
        RulesetStatus::PartiallyEnforced => LANDLOCK_PARTIALLY_ENFORCED,
        _ => LANDLOCK_NOT_ENFORCED,
    };
    Err(Failure {
        step: Step::LandlockStatus,
        errno: 0,
        detail,
    })
}

/// In the fresh mount namespace: nothing propagates back to the host, every
/// mount turns read-only, then bind mounts of `writable` are made writable again.
fn read_only_mounts<S: Sys>(s: &S, writable: &[CString]) -> Result<(), Failure> {
    s.mount(None, c"/", libc::MS_REC | libc::MS_PRIVATE)
        .map_err(at(Step::MountPrivate, 0))?;
    for (i, path) in writable.iter().enumerate() {
        // A bind mount of a folder onto itself.
        s.mount(Some(path), path, libc::MS_BIND | libc::MS_REC)
            .map_err(at(Step::BindWritable, i as u32))?;
    }
    s.mount_setattr(c"/", MOUNT_ATTR_RDONLY, 0)
        .map_err(at(Step::ReadOnly, 0))?;
    for (i, path) in writable.iter().enumerate() {
        s.mount_setattr(path, 0, MOUNT_ATTR_RDONLY)
            .map_err(at(Step::Writable, i as u32))?;
    }
    Ok(())
}

/// Puts the worker in the new pid namespace under a reaper. Forks twice:
///
/// - this process (the monitor) stays outside, waits, and exits as the worker did;
/// - its child is process 1 of the namespace (the reaper): it reaps orphans and,
///   when the worker ends, passes the worker's wait status up a pipe and exits,
///   which kills whatever is left in the namespace;
/// - the reaper's child returns to exec as the worker (process 2), so signals
///   it sends itself act as usual (the kernel drops those process 1 sends itself).
///
/// With `waiter` (the `ext-reaper` program, opened by the runner), monitor
/// and reaper exec it ([`waiter_main`]) instead of staying copies of the
/// runner's memory: a few pages each rather than page tables and a share of
/// every page the runner writes afterwards (copy-on-write keeps the old one).
/// The worker waits until the exec'd reaper has made itself non-dumpable
/// (EOF on a pipe): exec makes a process dumpable again, and a dumpable
/// process 1 would open its `/proc/1/mem` and `environ` to the worker. When
/// an exec fails, that process goes on as the fork it is (the same waiting,
/// the runner's argv and environment zeroed in the reaper).
///
/// Monitor and reaper close every other descriptor: the host sees EOF when the
/// worker closes (and the report pipe is the worker's alone).
///
/// With `zygote` (a fork server's worker, forked from its zygote), there is
/// no monitor: the reaper is made the zygote's own child (`CLONE_PARENT`),
/// so its parent-death signal follows the zygote, and this process writes
/// the reaper's pid to the zygote and exits. The zygote then does what the
/// monitor would: it waits for the reaper and reads the worker's status
/// from the status pipe, whose read end it holds (one waiting process per
/// worker instead of two).
fn enter_pid_namespace(
    k: &Kernel,
    parent_death_signal: Option<i32>,
    wipe: &[(usize, usize)],
    waiter: Option<libc::c_int>,
    zygote: Option<ZygoteWaits>,
) -> Result<(), Failure> {
    let die_with_parent = || match parent_death_signal {
        Some(sig) => k
            .set_parent_death_signal(sig)
            .map_err(at(Step::ParentDeathSignal, 0)),
        None => Ok(()),
    };
    // The worker's status: to the monitor here, or to the zygote.
    let mut fds = [-1 as libc::c_int; 2];
    match zygote {
        Some(z) => fds[1] = z.status_out,
        // SAFETY: `fds` is a valid array of two ints.
        None => check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })
            .map_err(at(Step::PidNamespace, 0))?,
    }
    let [status_in, status_out] = fds;
    // The worker's go-ahead from an exec'd reaper: EOF once it is not dumpable.
    let mut go = [-1 as libc::c_int; 2];
    if waiter.is_some() {
        // SAFETY: `go` is a valid array of two ints.
        check(unsafe { libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) })
            .map_err(at(Step::PidNamespace, 3))?;
    }
    let [go_in, go_out] = go;
    let reaper = match zygote {
        // SAFETY: a fork-like clone (no new stack: the child runs on a
        // copy-on-write copy of this one, as after fork) in a single-threaded
        // process (a fresh child); both sides go on with async-signal-safe
        // calls only. glibc's record of the thread id is not updated in the
        // child: it never uses it (it forks through glibc, which sets the
        // grandchild's, then execs or `_exit`s).
        Some(_) => unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            ) as libc::pid_t
        },
        // SAFETY: fork in a single-threaded process (a fresh child); both
        // sides go on with async-signal-safe calls only.
        None => unsafe { libc::fork() },
    };
    check(reaper).map_err(at(Step::PidNamespace, 1))?;
    if reaper == 0 {
        die_with_parent()?;
        // SAFETY: as above.
        let worker = unsafe { libc::fork() };
        check(worker).map_err(at(Step::PidNamespace, 2))?;
        if worker == 0 {
            die_with_parent()?;
            if go_in >= 0 {
                wait_for_eof(go_in, go_out);
            }
            return Ok(()); // on to exec; the pipe ends are close-on-exec
        }
        // Monitor and reaper are copies of the host's memory: never dumped.
        // SAFETY: integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        leave_host_cwd();
        if let Some(exe) = waiter {
            close_all_but(&mut [status_out, go_out, exe]);
            let (w, s, g) = (
                Digits::of(worker),
                Digits::of(status_out),
                Digits::of(go_out),
            );
            exec_waiter(
                exe,
                c"init",
                &[s.keep(status_out), g.keep(go_out), w.text()],
            );
        }
        for &(start, len) in wipe {
            // SAFETY: [start, start + len) is this process's own argv or
            // environment area (read from /proc/self/stat by the process it
            // was forked from): mapped, writable, and used by nothing here.
            unsafe { std::ptr::write_bytes(start as *mut u8, 0, len) };
        }
        close_all_but(&mut [status_out]); // the go-ahead's end too: the worker goes on
        let status = wait_for(worker, true);
        report_status(status_out, status)
    }
    if let Some(z) = zygote {
        // The zygote waits for the reaper from here on.
        // SAFETY: writes one int from a live int to the zygote's pipe, then
        // exits (closing this process's copies of every descriptor).
        unsafe {
            libc::write(
                z.reaper_pid_out,
                (&reaper as *const libc::pid_t).cast(),
                std::mem::size_of::<libc::pid_t>(),
            );
            libc::_exit(0)
        }
    }
    // SAFETY: integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    leave_host_cwd();
    if let Some(exe) = waiter {
        close_all_but(&mut [status_in, exe]);
        let (r, s) = (Digits::of(reaper), Digits::of(status_in));
        exec_waiter(exe, c"monitor", &[s.keep(status_in), r.text()]);
    }
    close_all_but(&mut [status_in]);
    monitor(reaper, status_in)
}

/// Moves a waiter's working directory to its root. The fork left it in
/// the host folder the worker was started in, and the worker's
/// `pivot_root` moves only a working directory that *is* the old root: a
/// reaper left there would keep the host's whole tree reachable as
/// `/proc/1/cwd/..` inside the private root (closed then only by the
/// reaper being non-dumpable and outside the worker's Landlock domain).
/// Whether this runs before the worker's `pivot_root` (then the old root,
/// which `pivot_root` moves to the new one) or after it (the new root
/// already), the directory ends up the private root.
fn leave_host_cwd() {
    // SAFETY: a static NUL-terminated path; chdir is async-signal-safe.
    unsafe { libc::chdir(c"/".as_ptr()) };
}

/// The reaper's end: the worker's wait status up the pipe, then exit (the
/// kernel kills what is left of the pid namespace).
fn report_status(status_out: libc::c_int, status: libc::c_int) -> ! {
    // SAFETY: writes one int from a live int to our own pipe, then exits.
    unsafe {
        libc::write(
            status_out,
            (&status as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>(),
        );
        libc::_exit(0)
    }
}

/// The monitor's end: waits for the reaper, then exits as the worker did
/// (the status the reaper sent, else the reaper's own).
fn monitor(reaper: libc::pid_t, status_in: libc::c_int) -> ! {
    const STATUS_LEN: usize = std::mem::size_of::<libc::c_int>();
    let reaper_status = wait_for(reaper, false);
    let mut status: libc::c_int = 0;
    // SAFETY: reads at most one int into a live int.
    let n = unsafe {
        libc::read(
            status_in,
            (&mut status as *mut libc::c_int).cast(),
            STATUS_LEN,
        )
    };
    exit_as(if n == STATUS_LEN as isize {
        status
    } else {
        reaper_status
    })
}

/// The worker, before it goes on: closes its copy of the go-ahead's write
/// end and reads until EOF (the reaper closed its own, or ended).
fn wait_for_eof(go_in: libc::c_int, go_out: libc::c_int) {
    let mut byte = 0u8;
    // SAFETY: closes our copy of a pipe end, once; reads into a live byte.
    unsafe {
        libc::close(go_out);
        while libc::read(go_in, (&mut byte as *mut u8).cast(), 1) == -1 && errno() == libc::EINTR {}
        libc::close(go_in);
    }
}

/// A number as decimal text, NUL-terminated, on the stack (argv of the
/// exec'd waiter, built after the fork without allocating).
struct Digits([u8; 16]);

impl Digits {
    fn of(n: libc::c_int) -> Digits {
        let mut b = [0u8; 16];
        let mut digits = [0u8; 12];
        let (mut v, mut len) = (n.unsigned_abs(), 0);
        loop {
            digits[len] = b'0' + (v % 10) as u8;
            len += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for (slot, d) in b.iter_mut().zip(digits[..len].iter().rev()) {
            *slot = *d;
        }
        Digits(b)
    }

    fn text(&self) -> *const libc::c_char {
        self.0.as_ptr().cast()
    }

    /// The text of a descriptor that must survive the exec (its
    /// close-on-exec flag cleared).
    fn keep(&self, fd: libc::c_int) -> *const libc::c_char {
        // SAFETY: integer arguments only.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        self.text()
    }
}

/// Execs the waiter program `exe` (a descriptor of it) as `ext-reaper ROLE
/// ARGS...` with an empty environment. Returns only when exec failed.
fn exec_waiter(exe: libc::c_int, role: &CStr, args: &[*const libc::c_char]) {
    let mut argv = [std::ptr::null::<libc::c_char>(); 8];
    argv[0] = c"ext-reaper".as_ptr();
    argv[1] = role.as_ptr();
    for (slot, a) in argv[2..7].iter_mut().zip(args.iter()) {
        *slot = *a;
    }
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: NULL-terminated arrays of NUL-terminated strings that live on
    // this stack frame or are static; `exe` is a descriptor of ours.
    unsafe { libc::fexecve(exe, argv.as_ptr(), envp.as_ptr()) };
}

/// The exec'd monitor and reaper (`ext-reaper`, see `enter_pid_namespace`):
/// `ext-reaper init STATUS_FD GO_FD WORKER_PID` is process 1 of the worker's
/// pid namespace, `ext-reaper monitor STATUS_FD REAPER_PID` waits outside it.
/// Both keep the parent-death signal of their fork (exec of a plain program
/// keeps it), make themselves non-dumpable first, and then do what the
/// forked ones do. Anything else on the command line exits with 2.
pub fn waiter_main() -> ! {
    let args: Vec<libc::c_int> = std::env::args()
        .skip(2)
        .map(|a| a.parse().unwrap_or(-1))
        .collect();
    let role = std::env::args().nth(1).unwrap_or_default();
    // SAFETY: integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    match (role.as_str(), &args[..]) {
        ("init", &[status_out, go_out, worker]) if status_out >= 0 && go_out >= 0 && worker > 0 => {
            // SAFETY: closes the go-ahead's write end, ours: the worker goes on.
            unsafe { libc::close(go_out) };
            let status = wait_for(worker, true);
            report_status(status_out, status)
        }
        ("monitor", &[status_in, reaper]) if status_in >= 0 && reaper > 0 => {
            monitor(reaper, status_in)
        }
        _ => {
            eprintln!(
                "ext-reaper: the pid-namespace waiter of ext-runner's workers; not for use by hand"
            );
            std::process::exit(2)
        }
    }
}

/// The descriptors a program of this crate was handed across its exec and
/// told of on its command line (`ext-relay`: a fork server's worker, whose
/// pipes `ext-runner run --server` left open for it), claimed once at its
/// start. Each must be open, at least 3 and named once; each is made
/// close-on-exec again.
pub fn inherited(fds: &[libc::c_int]) -> io::Result<Vec<std::os::fd::OwnedFd>> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use std::os::fd::FromRawFd;
    static CLAIMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if CLAIMED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Err(io::Error::other(
            "the handed-over descriptors were claimed already",
        ));
    }
    for (i, &fd) in fds.iter().enumerate() {
        let open = fd >= 3 && fcntl(fd, FcntlArg::F_GETFD).is_ok();
        if !open || fds[..i].contains(&fd) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor {fd} was not handed over"),
            ));
        }
    }
    Ok(fds
        .iter()
        .map(|&fd| {
            let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
            // SAFETY: open (checked above), not 0-2, named once, and owned by
            // nothing else in this process: it came across the exec, which
            // left no Rust object behind, and this runs once per process
            // (`CLAIMED`), at the start of `ext-relay`, before it opens
            // anything.
            unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
        })
        .collect())
}

/// Closes every descriptor except those in `keep` (sorted in place).
fn close_all_but(keep: &mut [libc::c_int]) {
    keep.sort_unstable();
    let mut first = 0u32;
    for &k in keep.iter() {
        let k = k as u32;
        if k > first {
            // SAFETY: integer arguments only.
            unsafe { libc::syscall(libc::SYS_close_range, first, k - 1, 0u32) };
        }
        first = k + 1;
    }
    // SAFETY: integer arguments only.
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
}

/// Waits for `pid` and returns its wait status; when `reap_others`, also reaps
/// any other child that ends meanwhile (process 1 inherits orphans).
fn wait_for(pid: libc::pid_t, reap_others: bool) -> libc::c_int {
    let target = if reap_others { -1 } else { pid };
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(target, &mut status, 0) };
        if r == pid {
            return status;
        }
        if r == -1 && errno() != libc::EINTR {
            return 127 << 8; // nothing left to wait for: report a failure
        }
    }
}

/// Ends this process the way `status` says the worker ended.
fn exit_as(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // Die of the same signal, so the host sees what killed the worker.
        // SAFETY: resetting a disposition and signalling ourselves take integers.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::kill(libc::getpid(), sig);
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128
    };
    // SAFETY: _exit never returns and runs no destructors.
    unsafe { libc::_exit(code) }
}

/// Writes `f` to the report pipe: one write of 12 bytes from the stack (a
/// pipe takes up to PIPE_BUF bytes at once), errors ignored (the errno still
/// reaches the parent through `pre_exec`).
fn report(fd: Option<libc::c_int>, f: &Failure) {
    if let Some(fd) = fd {
        let bytes = f.encode();
        // SAFETY: a live array of the length passed, to our own descriptor.
        unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    }
}

/// The warm path's stand-in for a cold worker's fork-exec: in a fresh fork
/// of the fork server's single-threaded zygote (`host/zygote.rs`), what std
/// does before `pre_exec` (the worker's pipes onto 0–2, its working folder),
/// then the same [`enter`] as a cold worker, then what exec would do: the
/// process made dumpable again (taking its own uid made it non-dumpable),
/// and the descriptors: every one above 2 is close-on-exec by step 5, so
/// all of them are closed. The zygote's Python runs the worker afterwards, never before.
/// A failure is reported on the report pipe, as from `install`.
pub fn enter_forked(
    stdio: [libc::c_int; 3],
    cwd: &CStr,
    c: &mut Confinement,
) -> Result<(), Failure> {
    let report_fd = c.report_fd;
    let mut steps = || -> Result<(), Failure> {
        for (target, fd) in stdio.into_iter().enumerate() {
            // SAFETY: integer arguments; `fd` is a live descriptor of ours.
            check(unsafe { libc::dup2(fd, target as libc::c_int) })
                .map_err(at(Step::WarmStdio, target as u32))?;
        }
        // SAFETY: `cwd` is a valid NUL-terminated string.
        check(unsafe { libc::chdir(cwd.as_ptr()) }).map_err(at(Step::WarmChdir, 0))?;
        enter(&Kernel, c)?;
        // (Before the close below, which closes the report pipe too.)
        // What exec does for a cold worker: a credential change (a root
        // runner's worker takes its own uid in `enter`) made the process
        // non-dumpable (the kernel's commit_creds sets suid_dumpable), and
        // exec makes it dumpable again when its ids match (as they do:
        // real = effective = saved). A warm worker never execs, so without
        // this its /proc/self/{maps,environ,fd,mem,...} stay root's and
        // closed to it (psutil, listing /proc/self/fd). Safe for the same
        // reason it is after a cold exec: the memory is the worker's own,
        // already readable to it; its uid is its own (no other process of
        // that uid may ptrace it), its capabilities are gone, and seccomp
        // already holds (it allows prctl but PR_SET_PDEATHSIG). The
        // reaper (process 1 of its /proc) made itself non-dumpable and
        // stays so: this changes the worker only.
        // SAFETY: integer arguments.
        check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) })
            .map_err(at(Step::WarmDumpable, 0))?;
        // SAFETY: integer arguments; nothing above 2 is in use from here on
        // (the zygote's Python dropped its own objects before the call).
        check(unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } as libc::c_int)
            .map_err(at(Step::WarmClose, 0))
    };
    steps().inspect_err(|f| report(report_fd, f))
}

/// Rewrites the process's command line (or initial environment) in place:
/// the strings at `start..end`, as `/proc/self/stat` gives them, become
/// `title`, NUL-padded, so that a warm worker shows the command line and
/// environment a cold one would have (the zygote's are its own). Memory
/// writes only: no system call.
///
/// # Safety
/// `start..end` is this process's argv area, which nothing else uses (the
/// interpreter copied its arguments at start-up).
pub unsafe fn retitle(start: usize, end: usize, title: &[u8]) {
    let len = end.saturating_sub(start);
    if start == 0 || len == 0 {
        return;
    }
    let n = title.len().min(len - 1);
    // SAFETY: the caller promises `start..end` is ours and unused; n < len.
    unsafe {
        std::ptr::write_bytes(start as *mut u8, 0, len);
        std::ptr::copy_nonoverlapping(title.as_ptr(), start as *mut u8, n);
    }
}

/// Arranges for `enter(confinement)` to run in the child of `cmd`.
pub fn install(cmd: &mut tokio::process::Command, mut confinement: Confinement) {
    // SAFETY: `enter` only makes async-signal-safe system calls on data prepared
    // before the fork, and neither allocates nor locks, as `pre_exec` requires;
    // so does the failure path (a stack array, one write, an io::Error from an errno).
    unsafe {
        cmd.pre_exec(move || {
            enter(&Kernel, &mut confinement).map_err(|f| {
                report(confinement.report_fd, &f);
                io::Error::from_raw_os_error(if f.errno != 0 { f.errno } else { libc::EPERM })
            })
        });
    }
}

/// A step of the probe's namespace attempt (`try_namespaces`), in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeStep {
    Unshare,
    Setgroups,
    UidMap,
    GidMap,
    /// `mount("/", MS_REC|MS_PRIVATE)`
    MountPrivate,
    /// `mount_setattr("/", AT_RECURSIVE, MOUNT_ATTR_RDONLY)`
    MountReadOnly,
    /// `mount("proc", "/proc", "proc")` by the first process of the new pid
    /// namespace, as the private root mounts its procfs (a container whose
    /// `/proc` has masked paths refuses it: the kernel's `mnt_too_revealing`).
    MountProc,
}

/// Tries in a forked child what a launch with `flags` would do: unshare them
/// (with a user namespace unless `root`), write the id maps (`uid_map`,
/// `gid_map`: `"<id> <id> 1"`), and with a mount namespace take the launch's
/// mount steps (with a pid namespace too, a child of it mounts a procfs, as
/// the private root does). The child exits at once; a failure comes back as
/// its step and errno through a pipe. Used by the probe.
pub fn try_namespaces(
    flags: libc::c_int,
    root: bool,
    uid_map: &[u8],
    gid_map: &[u8],
) -> Result<(), (ProbeStep, i32)> {
    let flags = if root {
        flags
    } else {
        flags | libc::CLONE_NEWUSER
    };
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err((ProbeStep::Unshare, errno()));
    }
    let [rd, wr] = fds;
    // SAFETY: the child only makes async-signal-safe calls on data prepared
    // before the fork, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let k = Kernel;
        let steps = || -> Result<(), (ProbeStep, i32)> {
            let at = |step| move |e| (step, e);
            k.unshare(flags).map_err(at(ProbeStep::Unshare))?;
            if flags & libc::CLONE_NEWUSER != 0 {
                k.write_file(c"/proc/self/setgroups", b"deny")
                    .map_err(at(ProbeStep::Setgroups))?;
                k.write_file(c"/proc/self/uid_map", uid_map)
                    .map_err(at(ProbeStep::UidMap))?;
                k.write_file(c"/proc/self/gid_map", gid_map)
                    .map_err(at(ProbeStep::GidMap))?;
            }
            if flags & libc::CLONE_NEWNS != 0 {
                k.mount(None, c"/", libc::MS_REC | libc::MS_PRIVATE)
                    .map_err(at(ProbeStep::MountPrivate))?;
                k.mount_setattr(c"/", MOUNT_ATTR_RDONLY, 0)
                    .map_err(at(ProbeStep::MountReadOnly))?;
                if flags & libc::CLONE_NEWPID != 0 {
                    proc_in_new_pid_namespace().map_err(at(ProbeStep::MountProc))?;
                }
            }
            Ok(())
        };
        let code = match steps() {
            Ok(()) => 0,
            Err((step, e)) => {
                let mut msg = [0u8; 5];
                msg[0] = step as u8;
                msg[1..].copy_from_slice(&e.to_ne_bytes());
                // SAFETY: writes 5 bytes of a live array to our own pipe.
                unsafe { libc::write(wr, msg.as_ptr().cast(), msg.len()) };
                1
            }
        };
        // SAFETY: _exit does not return and runs no destructors.
        unsafe { libc::_exit(code) }
    }
    let fork_err = errno();
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(wr) };
    let mut msg = [0u8; 5];
    let n = if pid > 0 {
        // SAFETY: reads at most 5 bytes into a live array.
        unsafe { libc::read(rd, msg.as_mut_ptr().cast(), msg.len()) }
    } else {
        -1
    };
    // SAFETY: closing the read end we opened.
    unsafe { libc::close(rd) };
    if pid < 0 {
        return Err((ProbeStep::Unshare, fork_err));
    }
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    if n == 5 {
        let step = [
            ProbeStep::Unshare,
            ProbeStep::Setgroups,
            ProbeStep::UidMap,
            ProbeStep::GidMap,
            ProbeStep::MountPrivate,
            ProbeStep::MountReadOnly,
            ProbeStep::MountProc,
        ]
        .get(msg[0] as usize)
        .copied()
        .unwrap_or(ProbeStep::Unshare);
        return Err((step, i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]])));
    }
    if r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err((ProbeStep::Unshare, 0))
    }
}

/// In the probe's child, after it unshared a pid and a mount namespace:
/// forks the namespace's first process, which mounts a procfs over `/proc`
/// (in the child's private mount namespace) and exits; its errno, if any.
fn proc_in_new_pid_namespace() -> Result<(), i32> {
    // SAFETY: called in a single-threaded forked child; the grandchild makes
    // one mount(2) call on static strings and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        // SAFETY: NUL-terminated static strings; no data.
        let r = unsafe {
            libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                flags,
                std::ptr::null(),
            )
        };
        let code = if r == 0 { 0 } else { errno().clamp(1, 255) };
        // SAFETY: _exit does not return and runs no destructors.
        unsafe { libc::_exit(code) }
    }
    if pid < 0 {
        return Err(errno());
    }
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid || !libc::WIFEXITED(status) {
        return Err(libc::ECHILD);
    }
    match libc::WEXITSTATUS(status) {
        0 => Ok(()),
        e => Err(e),
    }
}

/// A user namespace whose id maps are `uid_map` and `gid_map` (`"<inside>
/// <outside> <count>"`), held by the returned descriptor: the idmapping of
/// an idmapped mount (`idmapped_tree`). Made by a child forked for it, which
/// unshares a user namespace and waits; this process (root: any mapping)
/// writes the child's maps, opens its namespace and kills it. In the child
/// only async-signal-safe calls, as between fork and exec.
pub fn mapping_namespace(uid_map: &str, gid_map: &str) -> io::Result<std::os::fd::OwnedFd> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })
        .map_err(io::Error::from_raw_os_error)?;
    let [rd, wr] = fds;
    // SAFETY: the child only makes async-signal-safe calls, then waits to be
    // killed (or _exits if it cannot report).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: integer arguments and a live 4-byte array; pause and
        // _exit never touch memory.
        unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            let e: i32 = if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                0
            } else {
                errno()
            };
            let b = e.to_ne_bytes();
            if libc::write(wr, b.as_ptr().cast(), b.len()) != 4 || e != 0 {
                libc::_exit(1);
            }
            loop {
                libc::pause();
            }
        }
    }
    let fork_err = io::Error::last_os_error();
    // SAFETY: closing our copy of the write end, once.
    unsafe { libc::close(wr) };
    // SAFETY: `rd` is ours; wrapped once.
    let rd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(rd) };
    if pid < 0 {
        return Err(fork_err);
    }
    let mut b = [0u8; 4];
    // Retried on EINTR: a host's signal handler without SA_RESTART (a
    // SIGCHLD of another worker) must not fail the start.
    let n = loop {
        match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&rd), &mut b) {
            Err(nix::errno::Errno::EINTR) => continue,
            got => break got.map_err(io::Error::from)?,
        }
    };
    let result = if n != 4 {
        Err(io::Error::other(
            "the namespace's child ended without a word",
        ))
    } else if i32::from_ne_bytes(b) != 0 {
        Err(io::Error::from_raw_os_error(i32::from_ne_bytes(b)))
    } else {
        std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)
            .and_then(|()| std::fs::write(format!("/proc/{pid}/gid_map"), gid_map))
            .and_then(|()| std::fs::File::open(format!("/proc/{pid}/ns/user")))
            .map(std::os::fd::OwnedFd::from)
    };
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    while let Err(nix::errno::Errno::EINTR) =
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None)
    {}
    result
}

/// A detached copy of the mount tree at `path` (`open_tree(OPEN_TREE_CLONE
/// | AT_RECURSIVE)`) that shows its files' ids through the user namespace
/// `userns` (`mount_setattr(MOUNT_ATTR_IDMAP)`): nothing is attached
/// anywhere until the worker's private root moves it in (`move_mount`, a
/// `Mount` with a `tree`). Fails where the file system does not support
/// idmapped mounts (EINVAL) or the caller may not make one (EPERM).
pub fn idmapped_tree(
    path: &CStr,
    userns: std::os::fd::BorrowedFd,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: a NUL-terminated path and integer flags.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor of ours, wrapped once.
    let tree = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: live descriptors, an empty NUL-terminated path and a live
    // struct of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tree)
}

/// The Landlock ABI version this kernel reports (0: no Landlock, whether not
/// built in (ENOSYS) or not enabled (EOPNOTSUPP)). The landlock crate keeps
/// its version query private (it wants callers to ask for rights and let it
/// degrade); the probe needs the number to say which rights are kept.
pub fn landlock_version() -> u8 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query passes no pointer (NULL attributes, size 0)
    // and creates nothing.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.clamp(0, 255) as u8
}

// ------------------------------------------------- the metadata supervisor's
// system calls, in the runner (`supervisor.rs` holds the logic; these are
// the calls the crate has no safe wrapper for).

/// Whether this process can give a worker a seccomp listener: a forked child
/// installs an allow-everything filter with SECCOMP_FILTER_FLAG_NEW_LISTENER
/// and exits. EBUSY: a filter above this process has a listener already
/// (the runner runs under another supervisor: a container runtime's, LXD,
/// sysbox); the kernel allows one per filter chain. Used by the probe.
pub fn try_listener() -> Result<(), i32> {
    let allow: seccompiler::BpfProgram = vec![seccompiler::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    // SAFETY: the child only makes async-signal-safe calls on data prepared
    // before the fork, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = match install_listener(&allow) {
            Ok(_) => 0,
            Err(e) => e.clamp(1, 255),
        };
        // SAFETY: _exit does not return and runs no destructors.
        unsafe { libc::_exit(code) }
    }
    if pid < 0 {
        return Err(errno());
    }
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    match (
        r == pid && libc::WIFEXITED(status),
        libc::WEXITSTATUS(status),
    ) {
        (true, 0) => Ok(()),
        (true, e) => Err(e),
        _ => Err(libc::ECHILD),
    }
}

/// One descriptor sent over `channel` (SCM_RIGHTS, see `send_fd`), waiting
/// for it when `wait`.
pub fn receive_fd(channel: &std::os::fd::OwnedFd, wait: bool) -> io::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(libc::c_int);
    let flags = if wait {
        MsgFlags::MSG_CMSG_CLOEXEC
    } else {
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC
    };
    let msg = recvmsg::<()>(channel.as_raw_fd(), &mut iov, Some(&mut space), flags)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(f) = c {
            fds.extend(f);
        }
    }
    // SAFETY: each descriptor was just installed in this process by the
    // kernel (SCM_RIGHTS) and nothing else refers to it; each is owned once.
    let mut owned = fds
        .into_iter()
        .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    let fd = owned.next().ok_or_else(|| {
        io::Error::new(io::ErrorKind::UnexpectedEof, "no descriptor in the message")
    })?;
    drop(owned.collect::<Vec<_>>()); // any extra is closed
    Ok(fd)
}

/// One seccomp notification: which call, by which process, with what.
#[derive(Debug, Clone, Copy)]
pub struct Notification {
    pub id: u64,
    pub pid: u32,
    pub nr: i32,
    pub args: [u64; 6],
}

/// SECCOMP_IOCTL_NOTIF_RECV: waits for the next notification on `listener`.
pub fn notif_recv(listener: libc::c_int) -> io::Result<Notification> {
    // SAFETY: seccomp_notif is plain data; the kernel wants it zeroed.
    let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes one seccomp_notif into `n`, live for the call.
    let r = unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n as *mut _) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Notification {
        id: n.id,
        pid: n.pid,
        nr: n.data.nr,
        args: n.data.args,
    })
}

/// SECCOMP_IOCTL_NOTIF_ID_VALID: the notifying call is still waiting (its
/// process has not died and been replaced by another with the same pid).
pub fn notif_id_valid(listener: libc::c_int, id: u64) -> bool {
    // SAFETY: the ioctl reads one u64, live for the call.
    unsafe {
        libc::ioctl(
            listener,
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &id as *const u64,
        ) == 0
    }
}

/// SECCOMP_IOCTL_NOTIF_SEND: the call returns `val`, or fails with `errno`
/// (never SECCOMP_USER_NOTIF_FLAG_CONTINUE: the supervisor did it or refused it).
pub fn notif_send(listener: libc::c_int, id: u64, val: i64, errno: i32) -> io::Result<()> {
    let mut resp = libc::seccomp_notif_resp {
        id,
        val,
        error: -errno,
        flags: 0,
    };
    // SAFETY: the ioctl reads one seccomp_notif_resp, live for the call.
    let r = unsafe {
        libc::ioctl(
            listener,
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut resp as *mut _,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Gives the calling thread alone (raw system calls: glibc's wrappers would
/// change every thread of the runner) the worker's identity: `gid`, no
/// supplementary groups when `drop_groups`, `uid` as real, effective, saved
/// and file-system ids, and no capabilities. For good: what it does next is
/// checked as the worker's own calls are (owner, permissions; ptrace access
/// by the real uid).
pub fn thread_become(uid: libc::uid_t, gid: libc::gid_t, drop_groups: bool) -> io::Result<()> {
    let ok = |r: libc::c_long| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    if drop_groups {
        // SAFETY: no groups: a null list of length 0.
        ok(unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) })?;
    }
    // SAFETY: integer arguments.
    ok(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
    // SAFETY: integer arguments.
    ok(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })?;
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: a live header and two data words, as capset wants for version 3.
    ok(unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) })
}

/// nix's openat2, the descriptor owned.
pub fn openat2(
    dirfd: libc::c_int,
    path: &std::path::Path,
    how: nix::fcntl::OpenHow,
) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = nix::fcntl::openat2(dirfd, path, how)?;
    // SAFETY: openat2 just returned `fd`; nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// utimensat(2) with the times as given (`None`: now), for `AT_EMPTY_PATH`
/// and `AT_SYMLINK_NOFOLLOW`, which nix's wrapper cannot say.
pub fn utimensat_raw(
    dirfd: libc::c_int,
    path: &CStr,
    times: Option<[libc::timespec; 2]>,
    flags: libc::c_int,
) -> io::Result<()> {
    let ptr = times.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
    // SAFETY: `path` is a live C string, `ptr` null or two live timespecs.
    if unsafe { libc::utimensat(dirfd, path.as_ptr(), ptr, flags) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The order of the steps, checked by recording the calls instead of
    //! making them (youki's `TestHelperSyscall`): no kernel, no root.
    use super::*;
    use landlock::RulesetStatus;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<String>>,
        /// The first call whose name starts with this fails with that errno.
        fail: Option<(&'static str, i32)>,
        effective: u64,
        /// What restrict_self answers: 0 not, 1 partially, 2 fully enforced.
        landlock: u8,
    }

    fn status(n: u8) -> RulesetStatus {
        match n {
            0 => RulesetStatus::NotEnforced,
            1 => RulesetStatus::PartiallyEnforced,
            _ => RulesetStatus::FullyEnforced,
        }
    }

    impl Recorder {
        fn new() -> Recorder {
            Recorder {
                effective: u64::MAX,
                landlock: 2,
                ..Default::default()
            }
        }
        fn failing(call: &'static str, errno: i32) -> Recorder {
            Recorder {
                fail: Some((call, errno)),
                ..Recorder::new()
            }
        }
        fn call(&self, name: String) -> SysResult {
            let fails = self.fail.is_some_and(|(f, _)| name.starts_with(f));
            self.calls.borrow_mut().push(name);
            match self.fail {
                Some((_, errno)) if fails => Err(errno),
                _ => Ok(()),
            }
        }
        fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
        /// Where `name` (a prefix) first appears in the calls.
        fn at(&self, name: &str) -> usize {
            self.calls
                .borrow()
                .iter()
                .position(|c| c.starts_with(name))
                .unwrap_or_else(|| panic!("{name} was not called: {:?}", self.calls()))
        }

        /// Each of `names` was called, in this order (others may come between).
        fn assert_in_order(&self, names: &[&str]) {
            let at: Vec<usize> = names.iter().map(|c| self.at(c)).collect();
            assert!(
                at.windows(2).all(|w| w[0] < w[1]),
                "out of order: {:?}",
                self.calls()
            );
        }
    }

    impl Sys for Recorder {
        fn setsid(&self) -> SysResult {
            self.call("setsid".into())
        }
        fn write_file(&self, path: &CStr, data: &[u8]) -> SysResult {
            let data = String::from_utf8_lossy(data);
            self.call(format!("write {} {data}", path.to_string_lossy()))
        }
        fn set_parent_death_signal(&self, sig: i32) -> SysResult {
            self.call(format!("pdeathsig {sig}"))
        }
        fn unshare(&self, flags: libc::c_int) -> SysResult {
            self.call(format!("unshare {flags:#x}"))
        }
        fn mount(&self, source: Option<&CStr>, target: &CStr, flags: libc::c_ulong) -> SysResult {
            let source = source.map(|s| s.to_string_lossy().into_owned());
            self.call(format!(
                "mount {source:?} {} {flags:#x}",
                target.to_string_lossy()
            ))
        }
        fn mount_setattr(&self, path: &CStr, set: u64, clear: u64) -> SysResult {
            self.call(format!(
                "mount_setattr {} +{set} -{clear}",
                path.to_string_lossy()
            ))
        }
        fn egress_socket(&self, e: &EgressSocket) -> Result<(), Failure> {
            self.call(format!("egress socket {}", e.port))
                .map_err(at(Step::EgressSocket, 0))
        }
        fn enter_pid_namespace(
            &self,
            _: Option<i32>,
            _: &[(usize, usize)],
            _: Option<libc::c_int>,
            _: Option<ZygoteWaits>,
        ) -> Result<(), Failure> {
            self.call("pid namespace".into())
                .map_err(at(Step::PidNamespace, 0))
        }
        fn root_mount(&self, m: &crate::sandbox::root::Mount) -> SysResult {
            self.call(format!("root mount {}", m.target.to_string_lossy()))
        }
        fn mount_setattr_one(&self, path: &CStr, set: u64, clear: u64) -> SysResult {
            self.call(format!(
                "mount_setattr(one) {} +{set} -{clear}",
                path.to_string_lossy()
            ))
        }
        fn chdir(&self, path: &CStr) -> SysResult {
            self.call(format!("chdir {}", path.to_string_lossy()))
        }
        fn pivot_root_here(&self) -> SysResult {
            self.call("pivot_root . .".into())
        }
        fn detach(&self, path: &CStr) -> SysResult {
            self.call(format!("umount2 {} MNT_DETACH", path.to_string_lossy()))
        }
        fn landlock_add_rule(
            &self,
            ruleset: landlock::RulesetCreated,
            path: &CStr,
            _access: landlock::BitFlags<landlock::AccessFs>,
        ) -> SysResult<landlock::RulesetCreated> {
            self.call(format!("landlock rule {}", path.to_string_lossy()))
                .map(|()| ruleset)
        }
        fn setrlimit(
            &self,
            resource: libc::__rlimit_resource_t,
            soft: libc::rlim_t,
            hard: libc::rlim_t,
        ) -> SysResult {
            self.call(format!("setrlimit {resource} {soft} {hard}"))
        }
        fn effective_capabilities(&self) -> SysResult<u64> {
            self.call("capget".into()).map(|()| self.effective)
        }
        fn drop_bounding(&self, cap: u32) -> SysResult {
            // Like a kernel with 41 capabilities.
            self.call(format!("capbset_drop {cap}"))?;
            if cap > 40 {
                Err(libc::EINVAL)
            } else {
                Ok(())
            }
        }
        fn clear_ambient(&self) -> SysResult {
            self.call("ambient_clear_all".into())
        }
        fn set_identity(&self, uid: libc::uid_t, gid: libc::gid_t) -> SysResult {
            self.call(format!("set_identity {uid} {gid}"))
        }
        fn clear_capabilities(&self) -> SysResult {
            self.call("capset 0".into())
        }
        fn cloexec_from(&self, first: u32) -> SysResult {
            self.call(format!("cloexec_from {first}"))
        }
        fn landlock_restrict_self(
            &self,
            ruleset: landlock::RulesetCreated,
        ) -> SysResult<RulesetStatus> {
            drop(ruleset); // not applied: this is the test process
            self.call("landlock_restrict_self".into())
                .map(|()| status(self.landlock))
        }
        fn seccomp(&self, filter: &seccompiler::BpfProgram) -> SysResult {
            self.call(format!("seccomp {}", filter.len()))
        }
        fn seccomp_listener(&self, l: &Listener) -> Result<(), Failure> {
            self.call(format!("seccomp listener {}", l.filter.len()))
                .map_err(at(Step::SeccompListener, 0))
        }
    }

    fn ruleset() -> landlock::RulesetCreated {
        use landlock::{Access, AccessFs, Ruleset, RulesetAttr, ABI};
        // Best effort (the default): made on any kernel, never applied here.
        Ruleset::default()
            .handle_access(AccessFs::from_all(ABI::V1))
            .unwrap()
            .create()
            .unwrap()
    }

    /// Everything on: cgroup, every namespace, two writable folders, limits,
    /// Landlock and two seccomp filters.
    fn full() -> Confinement {
        let nop = || seccompiler::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        };
        Confinement {
            report_fd: Some(9),
            parent_death_signal: Some(libc::SIGKILL),
            cgroup_procs: vec![
                c"/sys/fs/cgroup/w/cgroup.procs".into(),
                c"/sys/fs/cgroup/m/cgroup.procs".into(),
            ],
            unshare_flags: libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID,
            uid_map: b"1000 1000 1".to_vec(),
            gid_map: b"1000 1000 1".to_vec(),
            pid_namespace: true,
            writable_mounts: vec![c"/scratch".into(), c"/work".into()],
            private_root: None,
            runner_strings: Vec::new(),
            waiter: None,
            zygote_waits: None,
            rlimits: vec![(libc::RLIMIT_AS, 1, 1), (libc::RLIMIT_NOFILE, 64, 64)],
            landlock: Some(ruleset()),
            landlock_full: true,
            seccomp: vec![vec![nop(), nop(), nop()], vec![nop()]],
            listener: Some(Listener {
                filter: vec![nop(), nop()],
                channel: std::os::unix::net::UnixStream::pair().unwrap().0.into(),
            }),
            fill_in_pid: false,
            identity: Some((1_879_048_192, 1_879_048_193)),
            egress: Some(EgressSocket {
                channel: std::os::unix::net::UnixStream::pair().unwrap().0.into(),
                port: 3128,
            }),
        }
    }

    #[test]
    fn steps_run_in_the_documented_order() {
        let r = Recorder::new();
        let mut c = full();
        enter(&r, &mut c).unwrap();
        let order = [
            "setsid",
            "write /sys/fs/cgroup/w/cgroup.procs 0",
            "write /sys/fs/cgroup/m/cgroup.procs 0",
            "pdeathsig 9",
            "unshare",
            "write /proc/self/setgroups deny",
            "write /proc/self/uid_map 1000 1000 1",
            "write /proc/self/gid_map 1000 1000 1",
            "mount None / ",
            "mount Some(\"/scratch\") /scratch",
            "mount Some(\"/work\") /work",
            "mount_setattr / +1 -0",
            "mount_setattr /scratch +0 -1",
            "mount_setattr /work +0 -1",
            "egress socket 3128",
            "pid namespace",
            "setrlimit 9 1 1",
            "setrlimit 7 64 64",
            "capget",
            "capbset_drop 0",
            "capbset_drop 63",
            "ambient_clear_all",
            "set_identity 1879048192 1879048193",
            "capset 0",
            "cloexec_from 3",
            "landlock_restrict_self",
            "seccomp listener 2",
            "seccomp 3",
            "seccomp 1",
        ];
        r.assert_in_order(&order);
        assert_eq!(r.calls().len(), order.len() + 62, "{:?}", r.calls());
        assert!(c.landlock.is_none(), "the ruleset was handed over");
    }

    /// A private root: built in the pid namespace, then its own mounts get
    /// their Landlock rules, before the limits and long before restrict_self;
    /// a failing rule names its mount. No ruleset, no rules.
    #[test]
    fn private_root_mounts_get_landlock_rules_once_mounted() {
        let root = || crate::sandbox::root::PrivateRoot {
            skeleton: c"/s-root".into(),
            mounts: Vec::new(),
            writable: Vec::new(),
            cwd: c"/".into(),
            mount_rules: vec![
                (c"/proc".into(), landlock::AccessFs::ReadFile.into()),
                (c"/dev/shm".into(), landlock::AccessFs::WriteFile.into()),
            ],
        };
        let r = Recorder::new();
        let mut c = Confinement {
            private_root: Some(root()),
            ..full()
        };
        enter(&r, &mut c).unwrap();
        let order = [
            "pid namespace",
            "pivot_root . .",
            "landlock rule /proc",
            "landlock rule /dev/shm",
            "setrlimit 9 1 1",
            "landlock_restrict_self",
        ];
        r.assert_in_order(&order);

        let r = Recorder::failing("landlock rule /dev/shm", libc::EBADFD);
        let mut c = Confinement {
            private_root: Some(root()),
            ..full()
        };
        assert_eq!(
            enter(&r, &mut c).unwrap_err(),
            Failure {
                step: Step::RootLandlockRule,
                errno: libc::EBADFD,
                detail: 1
            }
        );
        assert!(!r.calls().iter().any(|c| c == "landlock_restrict_self"));

        let r = Recorder::new();
        let mut c = Confinement {
            private_root: Some(root()),
            landlock: None,
            ..full()
        };
        enter(&r, &mut c).unwrap();
        assert!(
            !r.calls().iter().any(|c| c.starts_with("landlock")),
            "{:?}",
            r.calls()
        );
    }

    /// The private root: its mounts, then every attribute (read-only and
    /// nosuid, the writable ones writable again) while the tree is the
    /// worker's alone, then the pivot. Nothing turns read-only after
    /// pivot_root: it moves the monitor's root too (same mount namespace),
    /// and a mount turning read-only while anyone walks it with an atime
    /// update fails with EBUSY. A failing attribute stops before the pivot.
    #[test]
    fn private_root_turns_read_only_before_the_pivot() {
        use crate::sandbox::root::{Mount, PrivateRoot};
        let mount = |target: &CStr| Mount {
            source: Some(c"/host".into()),
            target: target.into(),
            fstype: None,
            flags: libc::MS_BIND | libc::MS_REC,
            data: None,
            tree: None,
        };
        let root = || PrivateRoot {
            skeleton: c"/s-root".into(),
            mounts: vec![mount(c"/s-root/tmp"), mount(c"/s-root/usr")],
            writable: vec![c"/s-root/tmp".into()],
            cwd: c"/work".into(),
            mount_rules: Vec::new(),
        };
        let r = Recorder::new();
        let mut c = Confinement {
            private_root: Some(root()),
            ..full()
        };
        enter(&r, &mut c).unwrap();
        let order = [
            "pid namespace",
            "mount None / 0x44000",
            "mount Some(\"/s-root\") /s-root 0x1000",
            "root mount /s-root/tmp",
            "root mount /s-root/usr",
            "mount_setattr /s-root +3 -0",
            "mount_setattr(one) /s-root/tmp +0 -1",
            "chdir /s-root",
            "pivot_root . .",
            "umount2 . MNT_DETACH",
            "chdir /",
            "chdir /work",
        ];
        let calls = r.calls();
        let first = r.at(order[0]);
        assert_eq!(calls[first..first + order.len()], order, "{calls:?}");
        assert!(
            !calls[r.at("pivot_root")..]
                .iter()
                .any(|c| c.starts_with("mount")),
            "{calls:?}"
        );

        let r = Recorder::failing("mount_setattr /s-root", libc::EBUSY);
        let mut c = Confinement {
            private_root: Some(root()),
            ..full()
        };
        assert_eq!(
            enter(&r, &mut c).unwrap_err(),
            Failure {
                step: Step::RootAttributes,
                errno: libc::EBUSY,
                detail: 0
            }
        );
        assert!(!r.calls().iter().any(|c| c.starts_with("pivot_root")));
    }

    #[test]
    fn a_failing_step_stops_the_sequence_and_names_itself() {
        let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID;
        for (call, errno, step, detail) in [
            ("setsid", libc::EPERM, Step::Setsid, 0),
            ("write /sys/fs/cgroup/w", libc::EACCES, Step::JoinCgroup, 0),
            ("write /sys/fs/cgroup/m", libc::EROFS, Step::JoinCgroup, 1),
            ("unshare", libc::ENOSPC, Step::Unshare, flags as u32),
            (
                "write /proc/self/setgroups",
                libc::EACCES,
                Step::Setgroups,
                0,
            ),
            ("write /proc/self/gid_map", libc::EPERM, Step::GidMap, 0),
            ("mount None", libc::EPERM, Step::MountPrivate, 0),
            ("mount Some(\"/work\")", libc::ENOENT, Step::BindWritable, 1),
            ("mount_setattr / ", libc::EPERM, Step::ReadOnly, 0),
            ("mount_setattr /work", libc::EPERM, Step::Writable, 1),
            ("egress socket", libc::EPERM, Step::EgressSocket, 0),
            ("pid namespace", libc::EAGAIN, Step::PidNamespace, 0),
            (
                "setrlimit 7",
                libc::EPERM,
                Step::Rlimit,
                libc::RLIMIT_NOFILE,
            ),
            ("capget", libc::EFAULT, Step::Capget, 0),
            ("capbset_drop 12", libc::EPERM, Step::DropBounding, 12),
            ("ambient", libc::EPERM, Step::ClearAmbient, 0),
            ("set_identity", libc::EPERM, Step::Identity, 1_879_048_192),
            ("capset", libc::EPERM, Step::Capset, 0),
            ("cloexec", libc::ENOSYS, Step::CloseOnExec, 0),
            ("landlock", libc::EPERM, Step::Landlock, 0),
            ("seccomp 1", libc::EACCES, Step::Seccomp, 1),
        ] {
            let r = Recorder::failing(call, errno);
            let failure = enter(&r, &mut full()).unwrap_err();
            assert_eq!(
                failure,
                Failure {
                    step,
                    errno,
                    detail
                },
                "{call}"
            );
            let calls = r.calls();
            assert!(
                calls.last().unwrap().starts_with(call),
                "{call}: calls went on after the failure: {calls:?}"
            );
        }
    }

    #[test]
    fn capabilities_unknown_to_the_kernel_and_missing_ambient_support_are_not_failures() {
        // drop_bounding answers EINVAL above 40; ambient EINVAL (kernel < 4.3).
        let r = Recorder::failing("ambient", libc::EINVAL);
        enter(&r, &mut full()).unwrap();
        assert!(r.at("capset 0") > r.at("capbset_drop 63"));
    }

    #[test]
    fn without_cap_setpcap_the_bounding_set_is_left_but_the_sets_are_cleared() {
        let r = Recorder {
            effective: 0,
            ..Recorder::new()
        };
        enter(&r, &mut full()).unwrap();
        assert!(!r.calls().iter().any(|c| c.starts_with("capbset_drop")));
        r.at("capset 0");
    }

    #[test]
    fn landlock_enforced_less_than_expected_is_a_failed_step_before_seccomp() {
        for (got_status, full_expected, outcome) in [
            (2, true, None),
            (1, true, Some(LANDLOCK_PARTIALLY_ENFORCED)),
            (0, true, Some(LANDLOCK_NOT_ENFORCED)),
            // Best effort on a kernel without the ABI: the policy said so already.
            (1, false, None),
            (0, false, None),
        ] {
            let r = Recorder {
                landlock: got_status,
                ..Recorder::new()
            };
            let mut c = Confinement {
                landlock_full: full_expected,
                ..full()
            };
            let got = enter(&r, &mut c);
            match outcome {
                None => assert!(got.is_ok(), "{got_status} {full_expected}: {got:?}"),
                Some(detail) => {
                    assert_eq!(
                        got,
                        Err(Failure {
                            step: Step::LandlockStatus,
                            errno: 0,
                            detail
                        })
                    );
                    assert!(
                        !r.calls().iter().any(|c| c.starts_with("seccomp")),
                        "seccomp after a failed Landlock check: {:?}",
                        r.calls()
                    );
                }
            }
        }
    }

    #[test]
    fn nothing_asked_nothing_done_but_the_basics() {
        let r = Recorder::new();
        enter(&r, &mut Confinement::default()).unwrap();
        let calls = r.calls();
        assert_eq!(calls[0], "setsid");
        assert!(!calls.iter().any(|c| c.starts_with("unshare")
            || c.starts_with("mount")
            || c.starts_with("seccomp")));
        r.at("capset 0");
        r.at("cloexec_from 3");
    }

    #[test]
    fn a_report_decodes_to_what_was_encoded_and_nothing_else_decodes() {
        for &step in Step::ALL {
            let f = Failure {
                step,
                errno: libc::ENOSPC,
                detail: 0xdead_beef,
            };
            assert_eq!(Failure::decode(&f.encode()), Some(f));
        }
        let bytes = Failure {
            step: Step::Seccomp,
            errno: 1,
            detail: 2,
        }
        .encode();
        assert_eq!(Failure::decode(&bytes[..11]), None, "a short read");
        assert_eq!(Failure::decode(&[]), None, "no report");
        let mut unknown = bytes;
        unknown[0] = Step::ALL.len() as u8;
        assert_eq!(Failure::decode(&unknown), None, "an unknown step");
    }
}
