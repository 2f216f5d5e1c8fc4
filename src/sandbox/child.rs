//! The code that runs in the worker's process between `fork` and `exec`.
//!
//! This is the only module with `unsafe`. Everything here was prepared by the
//! parent before the fork (`launch.rs`): no allocation, no lock, only
//! async-signal-safe system calls, in one linear sequence that reads top to
//! bottom in the order the kernel sees it:
//!
//! 1. new session; join the pids cgroup; die with the runner
//! 2. namespaces (user first, mapping our own ids), then two forks: a monitor
//!    outside the pid namespace, a reaper as its process 1, the worker under it
//! 3. resource limits
//! 4. drop every capability
//! 5. mark all inherited descriptors close-on-exec
//! 6. Landlock (sets no_new_privs), then seccomp, last: exec follows
#![allow(unsafe_code)]

use std::ffi::CStr;
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
    /// Joining the worker's pids cgroup (writing `cgroup.procs`).
    JoinCgroup = "join the pids cgroup",
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
    /// Bringing up loopback in the worker's network namespace, binding the
    /// egress proxy's socket there and handing it to the runner.
    EgressSocket = "make the egress proxy's socket in the network namespace",
    /// The pipe and forks that put the worker in its pid namespace.
    PidNamespace = "fork into the pid namespace",
    /// A resource limit.
    Rlimit = "setrlimit",
    /// Dropping a capability from the bounding set.
    DropBounding = "prctl(PR_CAPBSET_DROP)",
    /// Clearing the ambient capabilities.
    ClearAmbient = "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
    /// Clearing the permitted, effective and inheritable capabilities.
    Capset = "capset",
    /// Marking inherited descriptors close-on-exec.
    CloseOnExec = "close_range(CLOSE_RANGE_CLOEXEC)",
    /// Landlock's `restrict_self`.
    Landlock = "landlock_restrict_self",
    /// Landlock enforced less than the policy expects.
    LandlockStatus = "Landlock status check",
    /// Installing a seccomp filter.
    Seccomp = "seccomp(SECCOMP_SET_MODE_FILTER)",
}

/// What the child applies to itself, fully prepared before the fork.
#[derive(Default)]
pub struct Confinement {
    pub parent_death_signal: Option<i32>,
    /// `cgroup.procs` of the worker's pids cgroup, to join.
    pub cgroup_procs: Option<std::ffi::CString>,
    /// `unshare` flags (CLONE_NEW*), user namespace included when needed.
    pub unshare_flags: libc::c_int,
    /// `"<uid> <uid> 1"` and `"<gid> <gid> 1"`, written when a user namespace is made.
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
    /// Fork into the new pid namespace (under a reaper).
    pub pid_namespace: bool,
    /// In a new mount namespace: the only mounts left writable (bind mounts of these folders).
    pub writable_mounts: Vec<std::ffi::CString>,
    /// (resource, soft, hard).
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlim_t, libc::rlim_t)>,
    /// Every capability to drop from the bounding set.
    pub bounding: Vec<caps::Capability>,
    pub landlock: Option<landlock::RulesetCreated>,
    /// Installed in order; the last one wins among equal actions (clone3's ENOSYS).
    pub seccomp: Vec<seccompiler::BpfProgram>,
    /// With an egress allowlist: the proxy's socket is made in the new network namespace.
    pub egress: Option<EgressSocket>,
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

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Writes `data` to the file at `path` (open, write, close).
fn write_file(path: &CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string; flags are constants.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    check(fd)?;
    // SAFETY: `data` is a live slice for the duration of the call; `fd` is ours.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let err = io::Error::last_os_error();
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
    if n == data.len() as isize {
        Ok(())
    } else {
        Err(err)
    }
}

/// Applies `c` to the calling, freshly forked process. Runs between fork and exec.
pub fn enter(c: &mut Confinement) -> io::Result<()> {
    // 1. A session of its own: off the host's terminal, one process group to kill.
    // SAFETY: setsid takes no arguments.
    check(unsafe { libc::setsid() })?;
    if let Some(procs) = &c.cgroup_procs {
        write_file(procs, b"0")?;
    }
    die_with_parent(c)?;

    // 2. Namespaces.
    if c.unshare_flags != 0 {
        // SAFETY: unshare takes integer flags.
        check(unsafe { libc::unshare(c.unshare_flags) })?;
        if c.unshare_flags & libc::CLONE_NEWUSER != 0 {
            write_file(c"/proc/self/setgroups", b"deny")?;
            write_file(c"/proc/self/uid_map", &c.uid_map)?;
            write_file(c"/proc/self/gid_map", &c.gid_map)?;
        }
    }
    if c.unshare_flags & libc::CLONE_NEWNS != 0 {
        read_only_mounts(&c.writable_mounts)?;
    }
    // Still with the capabilities of the new user namespace (or root's):
    // bringing up loopback needs CAP_NET_ADMIN over the network namespace.
    if let Some(e) = &c.egress {
        egress_socket(e)?;
    }
    if c.pid_namespace {
        enter_pid_namespace(c)?;
    }

    // 3. Resource limits, hard ones the worker cannot raise.
    for &(resource, soft, hard) in &c.rlimits {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: `lim` is a valid rlimit on the stack.
        check(unsafe { libc::setrlimit(resource, &lim) })?;
    }

    // 4. Capabilities: none in any set, none to regain.
    for cap in &c.bounding {
        // EINVAL: a capability this kernel does not know; nothing to drop.
        if let Err(e) = caps::drop(None, caps::CapSet::Bounding, *cap) {
            let _ = e;
        }
    }
    for set in [
        caps::CapSet::Ambient,
        caps::CapSet::Inheritable,
        caps::CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|_| io::Error::from_raw_os_error(libc::EPERM))?;
    }

    // 5. Descriptors above stderr close at exec, whoever opened them.
    // SAFETY: close_range takes integers; CLOSE_RANGE_CLOEXEC only sets flags.
    check(unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } as libc::c_int)?;

    // 6. Landlock, then seccomp: the last things before exec.
    if let Some(ruleset) = c.landlock.take() {
        ruleset
            .restrict_self()
            .map_err(|_| io::Error::from_raw_os_error(libc::EPERM))?;
    }
    for filter in &c.seccomp {
        seccompiler::apply_filter(filter).map_err(|_| io::Error::from_raw_os_error(libc::EPERM))?;
    }
    Ok(())
}

/// Brings up loopback in the (new, empty) network namespace, binds and
/// listens on 127.0.0.1:`port` there, and sends that socket to the runner over
/// `channel`; keeps no descriptor of it. Stack buffers only.
fn egress_socket(e: &EgressSocket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: integer arguments.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(s)?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name[0] = b'l' as libc::c_char;
    ifr.ifr_name[1] = b'o' as libc::c_char;
    ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads a live ifreq on the stack.
    let up = unsafe { libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr as *const libc::ifreq) };
    let err = io::Error::last_os_error();
    // SAFETY: closes the socket made above, once.
    unsafe { libc::close(s) };
    if up == -1 {
        return Err(err);
    }
    // SAFETY: integer arguments.
    let l = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    check(l)?;
    let sent = bind_listen_send(l, e.port, e.channel.as_raw_fd());
    // SAFETY: `l` is ours; the runner holds its own copy once it is sent.
    unsafe { libc::close(l) };
    sent
}

fn bind_listen_send(l: libc::c_int, port: u16, channel: libc::c_int) -> io::Result<()> {
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
    })?;
    // SAFETY: integer arguments.
    check(unsafe { libc::listen(l, 128) })?;
    // One data byte carrying the descriptor (SCM_RIGHTS).
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
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), l);
    }
    // SAFETY: `msg` and everything it points at are live for the call.
    let n = unsafe { libc::sendmsg(channel, &msg, libc::MSG_NOSIGNAL) };
    if n == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The runner's side of `egress_socket` (after the spawn, not in the child):
/// takes the listening socket the child sent over `channel`, non-blocking.
pub fn receive_egress_socket(channel: &std::os::fd::OwnedFd) -> io::Result<std::net::TcpListener> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(libc::c_int);
    let msg = recvmsg::<()>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
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

fn mount_setattr(path: &CStr, set: u64, clear: u64) -> io::Result<()> {
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
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(r as libc::c_int)
}

/// In the fresh mount namespace: nothing propagates back to the host, every
/// mount turns read-only, then bind mounts of `writable` are made writable again.
fn read_only_mounts(writable: &[std::ffi::CString]) -> io::Result<()> {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: NUL-terminated strings and null pointers where mount(2) allows them.
    check(unsafe {
        libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })?;
    for path in writable {
        // SAFETY: as above; a bind mount of a folder onto itself.
        check(unsafe {
            libc::mount(
                path.as_ptr(),
                path.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        })?;
    }
    mount_setattr(c"/", MOUNT_ATTR_RDONLY, 0)?;
    for path in writable {
        mount_setattr(path, 0, MOUNT_ATTR_RDONLY)?;
    }
    Ok(())
}

fn die_with_parent(c: &Confinement) -> io::Result<()> {
    if let Some(sig) = c.parent_death_signal {
        // SAFETY: PR_SET_PDEATHSIG takes an integer signal number.
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) })?;
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
/// Monitor and reaper close every other descriptor: the host sees EOF when the worker closes.
fn enter_pid_namespace(c: &Confinement) -> io::Result<()> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two ints.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let [status_in, status_out] = fds;
    // SAFETY: fork in a single-threaded process (a fresh child); both sides go
    // on with async-signal-safe calls only.
    let reaper = unsafe { libc::fork() };
    check(reaper)?;
    if reaper == 0 {
        die_with_parent(c)?;
        // SAFETY: as above.
        let worker = unsafe { libc::fork() };
        check(worker)?;
        if worker == 0 {
            return die_with_parent(c); // on to exec; the pipe ends are close-on-exec
        }
        // Monitor and reaper are copies of the host's memory: never dumped.
        // SAFETY: integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        close_all_but(status_out);
        let status = wait_for(worker, true);
        // SAFETY: writes 4 bytes from a live int to our own pipe, then exits.
        unsafe {
            libc::write(status_out, (&status as *const libc::c_int).cast(), 4);
            libc::_exit(0)
        }
    }
    // SAFETY: integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    close_all_but(status_in);
    let reaper_status = wait_for(reaper, false);
    let mut status: libc::c_int = 0;
    // SAFETY: reads at most 4 bytes into a live int.
    let n = unsafe { libc::read(status_in, (&mut status as *mut libc::c_int).cast(), 4) };
    exit_as(if n == 4 { status } else { reaper_status })
}

/// Closes every descriptor except `keep`.
fn close_all_but(keep: libc::c_int) {
    let keep = keep as u32;
    // SAFETY: integer arguments only.
    unsafe {
        if keep > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, keep - 1, 0u32);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
    }
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
        if r == -1 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
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

/// Arranges for `enter(confinement)` to run in the child of `cmd`.
pub fn install(cmd: &mut tokio::process::Command, mut confinement: Confinement) {
    // SAFETY: `enter` only makes async-signal-safe system calls on data prepared
    // before the fork, and neither allocates nor locks, as `pre_exec` requires.
    unsafe {
        cmd.pre_exec(move || enter(&mut confinement));
    }
}

/// Whether a child can `unshare(flags)` (with a user namespace unless `root`).
/// Used by the probe; the child exits at once.
pub fn try_unshare(flags: libc::c_int, root: bool) -> bool {
    let flags = if root {
        flags
    } else {
        flags | libc::CLONE_NEWUSER
    };
    // SAFETY: the child only calls unshare and _exit, both async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: integer arguments; _exit does not return.
        unsafe { libc::_exit(if libc::unshare(flags) == 0 { 0 } else { 1 }) }
    }
    if pid < 0 {
        return false;
    }
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}
