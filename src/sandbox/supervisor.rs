//! The metadata supervisor: chmod and the utime family of a worker that has
//! no mount namespace, done by the runner beneath the writable grants only.
//!
//! Without a mount namespace nothing keeps host files read-only for
//! metadata (Landlock does not govern chmod or utime), so base.json refuses
//! those calls everywhere, and `shutil.copy2` into the workspace fails (it
//! sets the copy's times and mode by path). Where the runner can take a
//! seccomp listener (the probe's `seccomp_listener`), base.json marks them
//! `supervised` instead: the worker's first filter answers them with
//! SECCOMP_RET_USER_NOTIF, the listener comes to the runner over a
//! socketpair before exec (`child.rs`, `Step::SendListener`), and a thread
//! of the runner, one per worker, answers each call:
//!
//! 1. It reads the path (and the times) from the worker's memory into its own
//!    buffers (`process_vm_readv`): what it acts on can no longer change.
//! 2. It takes the base: the worker's working folder or the folder of its
//!    `dirfd` (`/proc/PID/cwd`, `/proc/PID/fd/N`, as links, read once), or
//!    for a call on a descriptor that descriptor's path.
//! 3. It checks the notification is still the one waiting
//!    (SECCOMP_IOCTL_NOTIF_ID_VALID: the pid was not reused).
//! 4. The absolute path must lie beneath one of the writable grants (the
//!    scratch folder, a writable workspace; compared by whole components):
//!    otherwise EPERM, as before. The rest of it is opened from the grant's
//!    own descriptor (opened when the worker was prepared) with `openat2`
//!    and RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV, O_PATH,
//!    O_NOFOLLOW for AT_SYMLINK_NOFOLLOW: whatever the worker renames or
//!    swaps meanwhile (a folder for a symlink out), the file opened is
//!    beneath the grant, on its mount.
//! 5. A mode with S_ISUID or S_ISGID is refused (EPERM), as everywhere, and
//!    so is a file with more than one name (a hard link to a host file,
//!    where Landlock does not refuse making one, shares its metadata).
//! 6. The call is made on that descriptor, by this thread, which took the
//!    worker's identity for good when it started (its uid as real,
//!    effective, saved and file-system uid, its gid, no supplementary groups
//!    for a root runner's worker, no capabilities; raw system calls: the
//!    runner's other threads keep theirs): the kernel checks owner and
//!    permissions as for the worker's own call (chmod and explicit times:
//!    the owner; times set to now: the owner or write access).
//! 7. The answer is the call's result; never SECCOMP_USER_NOTIF_FLAG_CONTINUE
//!    (letting the worker's own call go on would resolve its path again,
//!    after the checks: time of check to time of use).
//!
//! chown stays refused (base.json): `shutil.copy2` does not need it.
//! `/proc/self/fd/N` paths (glibc's fchmodat with AT_SYMLINK_NOFOLLOW before
//! fchmodat2) are not beneath a grant and get EPERM.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use crate::sandbox::child::{self, Notification};
use crate::sandbox::policy::{Policy, SyscallAction};

/// Whether the policy sends any call to the supervisor.
pub fn supervises(policy: &Policy) -> bool {
    policy.seccomp.as_ref().is_some_and(|s| {
        s.rules
            .iter()
            .any(|r| r.action == SyscallAction::Supervised)
    })
}

/// Ends a supervisor thread when dropped (within a second).
#[derive(Debug)]
pub struct Stop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A writable grant: its path (as given and canonical) and a descriptor of it.
struct Grant {
    paths: Vec<PathBuf>,
    fd: OwnedFd,
}

/// What one worker's supervisor needs: the grants and the worker's identity.
pub struct Supervisor {
    grants: Vec<Grant>,
    uid: libc::uid_t,
    gid: libc::gid_t,
    /// A root runner's worker has no supplementary groups: neither has the thread.
    drop_groups: bool,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field(
                "grants",
                &self.grants.iter().map(|g| &g.paths[0]).collect::<Vec<_>>(),
            )
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .finish()
    }
}

impl Supervisor {
    /// The supervisor of a worker of `policy` with this scratch folder,
    /// running as `identity` (None: the runner's own uid and gid).
    pub fn new(
        policy: &Policy,
        scratch: &Path,
        identity: Option<(libc::uid_t, libc::gid_t)>,
    ) -> io::Result<Supervisor> {
        let writable = crate::sandbox::launch::writable_grants(policy, scratch);
        let mut grants = Vec::new();
        for p in writable {
            use std::os::unix::fs::OpenOptionsExt;
            let fd = OwnedFd::from(
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                    .open(&p)?,
            );
            let mut paths = vec![p.clone()];
            if let Ok(real) = std::fs::canonicalize(&p) {
                if real != p {
                    paths.push(real);
                }
            }
            grants.push(Grant { paths, fd });
        }
        let (uid, gid) = identity.unwrap_or_else(|| {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        });
        Ok(Supervisor {
            grants,
            uid,
            gid,
            drop_groups: identity.is_some(),
        })
    }

    /// Serves `listener` on a thread of its own until the worker and every
    /// process it started are gone (the listener hangs up), or the returned
    /// [`Stop`] is dropped (the worker was reaped: an older kernel never
    /// hangs up).
    pub fn serve(self, listener: OwnedFd) -> io::Result<Stop> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("nodus-supervisor".into())
            .spawn(move || self.run(listener, &flag))
            .map(|_| Stop(stop))
    }

    fn run(self, listener: OwnedFd, stop: &std::sync::atomic::AtomicBool) {
        // Fails closed: a thread that could not become the worker answers
        // every call with EPERM.
        let became = child::thread_become(self.uid, self.gid, self.drop_groups).is_ok();
        let fd = listener.as_raw_fd();
        loop {
            let mut pfd = [nix::poll::PollFd::new(
                listener_borrow(&listener),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(1000u16)) {
                Ok(0) if stop.load(std::sync::atomic::Ordering::Relaxed) => return,
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
            let revents = pfd[0].revents().unwrap_or(nix::poll::PollFlags::POLLHUP);
            if !revents.contains(nix::poll::PollFlags::POLLIN) {
                if revents.intersects(nix::poll::PollFlags::POLLHUP | nix::poll::PollFlags::POLLERR)
                {
                    return; // no process uses the filter any more
                }
                continue;
            }
            let n = match child::notif_recv(fd) {
                Ok(n) => n,
                // The calling process died in between, or a signal.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINTR)) => continue,
                Err(_) => return,
            };
            let errno = if became {
                match self.answer(fd, &n) {
                    Ok(()) => 0,
                    Err(e) => e,
                }
            } else {
                libc::EPERM
            };
            // ENOENT: the call was interrupted (its process killed) meanwhile.
            let _ = child::notif_send(fd, n.id, 0, errno);
        }
    }

    /// Does the call `n` asks for, or says why not (an errno).
    fn answer(&self, listener: RawFd, n: &Notification) -> Result<(), i32> {
        let call = Call::decode(n)?;
        let pid = n.pid;
        let path = match call.path {
            Some(ptr) => Some(read_path(pid, ptr)?),
            None => None,
        };
        let times = match call.op {
            Op::Chmod(_) => None,
            Op::Utime { times, layout } => read_times(pid, times, layout)?,
        };
        // The file the worker names, as an absolute path in its view (no
        // mount namespace: the host's), from what it passed and its links.
        let link = |what: String| -> Result<PathBuf, i32> {
            let target = std::fs::read_link(format!("/proc/{pid}/{what}"))
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EPERM))?;
            Ok(target)
        };
        let absolute = match &path {
            Some(p) if p.as_bytes().is_empty() && !call.empty_path => return Err(libc::ENOENT),
            Some(p) if p.as_bytes().starts_with(b"/") => PathBuf::from(p),
            Some(p) if !p.as_bytes().is_empty() => {
                let base = if call.dirfd == libc::AT_FDCWD {
                    link("cwd".into())?
                } else {
                    link(format!("fd/{}", call.dirfd))?
                };
                base.join(p)
            }
            // A descriptor's own file (fchmod, futimens): AT_FDCWD is none.
            None if call.dirfd == libc::AT_FDCWD => return Err(libc::EBADF),
            // AT_EMPTY_PATH: the working folder or the descriptor's file.
            _ if call.dirfd == libc::AT_FDCWD => link("cwd".into())?,
            _ => link(format!("fd/{}", call.dirfd))?,
        };
        // All read: is this still the call that waits (its pid not reused)?
        if !child::notif_id_valid(listener, n.id) {
            return Err(libc::ENOENT);
        }
        if let Op::Chmod(mode) = call.op {
            if mode & (libc::S_ISUID | libc::S_ISGID) != 0 {
                return Err(libc::EPERM);
            }
        }
        let (grant, rel) = self.beneath(&absolute).ok_or(libc::EPERM)?;
        let file = open_beneath(grant, &rel, call.nofollow)?;
        let stat = nix::sys::stat::fstat(file.as_raw_fd()).map_err(|e| e as i32)?;
        let symlink = stat.st_mode & libc::S_IFMT == libc::S_IFLNK;
        // A second name elsewhere may be a host file's (a hard link made
        // where Landlock does not refuse it: no Landlock, or linking within
        // the grants): its metadata is the host file's.
        if stat.st_mode & libc::S_IFMT != libc::S_IFDIR && stat.st_nlink > 1 {
            return Err(libc::EPERM);
        }
        let proc_path = CString::new(format!("/proc/thread-self/fd/{}", file.as_raw_fd()))
            .map_err(|_| libc::EINVAL)?;
        match call.op {
            Op::Chmod(mode) => {
                if symlink {
                    return Err(libc::EOPNOTSUPP); // Linux has no symlink modes
                }
                nix::sys::stat::fchmodat(
                    None,
                    proc_path.as_c_str(),
                    nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )
                .map_err(|e| e as i32)
            }
            Op::Utime { .. } if symlink => child::utimensat_raw(
                file.as_raw_fd(),
                c"",
                times,
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(errno_of),
            Op::Utime { .. } => {
                child::utimensat_raw(libc::AT_FDCWD, &proc_path, times, 0).map_err(errno_of)
            }
        }
    }

    /// The grant `path` lies beneath, and the rest of it (relative, plain
    /// components; `..` is left in for RESOLVE_BENEATH to refuse).
    fn beneath(&self, path: &Path) -> Option<(&Grant, PathBuf)> {
        self.grants.iter().find_map(|g| {
            g.paths
                .iter()
                .find_map(|p| rest_beneath(p, path))
                .map(|rest| (g, rest))
        })
    }
}

/// `path` without the leading components of `grant` (whole components,
/// `.` and repeated slashes ignored), when it starts with them.
fn rest_beneath(grant: &Path, path: &Path) -> Option<PathBuf> {
    let mut p = path.components().filter(|c| *c != Component::CurDir);
    for g in grant.components().filter(|c| *c != Component::CurDir) {
        if p.next()? != g {
            return None;
        }
    }
    Some(p.collect())
}

/// `rel` opened from the grant's descriptor, never leaving it.
fn open_beneath(grant: &Grant, rel: &Path, nofollow: bool) -> Result<OwnedFd, i32> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
    if nofollow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let how = OpenHow::new().flags(flags).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_MAGICLINKS
            | ResolveFlag::RESOLVE_NO_XDEV,
    );
    match child::openat2(grant.fd.as_raw_fd(), rel, how) {
        Ok(fd) => Ok(fd),
        // Out of the grant (`..`, an absolute symlink, another mount): as
        // for any host file.
        Err(nix::errno::Errno::EXDEV) => Err(libc::EPERM),
        Err(e) => Err(e as i32),
    }
}

fn listener_borrow(l: &OwnedFd) -> std::os::fd::BorrowedFd<'_> {
    use std::os::fd::AsFd;
    l.as_fd()
}

fn errno_of(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EPERM)
}

/// How a utime call passes its times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `struct utimbuf`: two `time_t` seconds.
    Utimbuf,
    /// Two `struct timeval`.
    Timeval,
    /// Two `struct timespec` (UTIME_NOW, UTIME_OMIT).
    Timespec,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Chmod(libc::mode_t),
    /// `times`: the pointer (0: now).
    Utime {
        times: u64,
        layout: Layout,
    },
}

/// One supervised call, decoded from its arguments.
#[derive(Debug, Clone, Copy)]
struct Call {
    op: Op,
    /// AT_FDCWD, or the descriptor the path is relative to (or acted on).
    dirfd: i32,
    /// The path's address in the worker (None: the call names a descriptor).
    path: Option<u64>,
    nofollow: bool,
    /// AT_EMPTY_PATH: an empty path names `dirfd` itself.
    empty_path: bool,
}

impl Call {
    fn decode(n: &Notification) -> Result<Call, i32> {
        let a = n.args;
        let nr = i64::from(n.nr);
        let fd = |v: u64| v as u32 as i32;
        let ptr = |v: u64| (v != 0).then_some(v);
        let mode = |v: u64| v as u32 as libc::mode_t;
        let at = |flags: u64, allowed: i32| -> Result<(bool, bool), i32> {
            let flags = flags as u32 as i32;
            if flags & !allowed != 0 {
                return Err(libc::EINVAL);
            }
            Ok((
                flags & libc::AT_SYMLINK_NOFOLLOW != 0,
                flags & libc::AT_EMPTY_PATH != 0,
            ))
        };
        let plain = |op, dirfd, path| Call {
            op,
            dirfd,
            path,
            nofollow: false,
            empty_path: false,
        };
        let utime = |times, layout| Op::Utime { times, layout };
        Ok(match nr {
            libc::SYS_chmod => plain(Op::Chmod(mode(a[1])), libc::AT_FDCWD, Some(a[0])),
            libc::SYS_fchmod => plain(Op::Chmod(mode(a[1])), fd(a[0]), None),
            libc::SYS_fchmodat => plain(Op::Chmod(mode(a[2])), fd(a[0]), Some(a[1])),
            libc::SYS_fchmodat2 => {
                let (nofollow, empty_path) =
                    at(a[3], libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH)?;
                Call {
                    op: Op::Chmod(mode(a[2])),
                    dirfd: fd(a[0]),
                    path: Some(a[1]),
                    nofollow,
                    empty_path,
                }
            }
            libc::SYS_utime => plain(utime(a[1], Layout::Utimbuf), libc::AT_FDCWD, Some(a[0])),
            libc::SYS_utimes => plain(utime(a[1], Layout::Timeval), libc::AT_FDCWD, Some(a[0])),
            // A null path: the descriptor itself (what glibc's futimes used).
            libc::SYS_futimesat => plain(utime(a[2], Layout::Timeval), fd(a[0]), ptr(a[1])),
            libc::SYS_utimensat => {
                let (nofollow, empty_path) =
                    at(a[3], libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH)?;
                Call {
                    op: utime(a[2], Layout::Timespec),
                    dirfd: fd(a[0]),
                    // A null path: futimens, the descriptor itself.
                    path: ptr(a[1]),
                    nofollow,
                    empty_path,
                }
            }
            _ => return Err(libc::EPERM),
        })
    }
}

/// Reads `len` bytes at `addr` of process `pid` into `buf`; how many came.
fn read_memory(pid: u32, addr: u64, buf: &mut [u8]) -> Result<usize, i32> {
    use nix::sys::uio::{process_vm_readv, RemoteIoVec};
    let remote = [RemoteIoVec {
        base: addr as usize,
        len: buf.len(),
    }];
    let mut local = [io::IoSliceMut::new(buf)];
    match process_vm_readv(nix::unistd::Pid::from_raw(pid as i32), &mut local, &remote) {
        Ok(n) => Ok(n),
        // A seccomp profile above the runner may refuse process_vm_readv
        // (Docker's does): /proc/PID/mem, under the same ptrace check.
        Err(nix::errno::Errno::EPERM | nix::errno::Errno::ENOSYS) => {
            use std::os::unix::fs::FileExt;
            let mem = std::fs::File::open(format!("/proc/{pid}/mem")).map_err(errno_of)?;
            mem.read_at(buf, addr).map_err(errno_of)
        }
        Err(e) => Err(e as i32),
    }
}

/// The NUL-terminated path at `addr` in the worker, at most PATH_MAX bytes,
/// read page by page (a path may end just before an unmapped page).
fn read_path(pid: u32, addr: u64) -> Result<OsString, i32> {
    const PATH_MAX: usize = libc::PATH_MAX as usize;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < PATH_MAX {
        let to_page = 4096 - (at % 4096) as usize;
        let mut chunk = vec![0u8; to_page.min(PATH_MAX - out.len())];
        let n = read_memory(pid, at, &mut chunk)?;
        if n == 0 {
            return Err(libc::EFAULT);
        }
        if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Ok(OsString::from_vec(out));
        }
        out.extend_from_slice(&chunk[..n]);
        at += n as u64;
    }
    Err(libc::ENAMETOOLONG)
}

/// The times at `addr` in the worker in `layout` (None: now), as timespecs.
fn read_times(pid: u32, addr: u64, layout: Layout) -> Result<Option<[libc::timespec; 2]>, i32> {
    if addr == 0 {
        return Ok(None);
    }
    let len = match layout {
        Layout::Utimbuf => 16,
        Layout::Timeval | Layout::Timespec => 32,
    };
    let mut buf = [0u8; 32];
    if read_memory(pid, addr, &mut buf[..len])? != len {
        return Err(libc::EFAULT);
    }
    let word = |i: usize| i64::from_ne_bytes(buf[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let ts = |sec: i64, nsec: i64| libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    Ok(Some(match layout {
        Layout::Utimbuf => [ts(word(0), 0), ts(word(1), 0)],
        Layout::Timeval => {
            for usec in [word(1), word(3)] {
                if !(0..1_000_000).contains(&usec) {
                    return Err(libc::EINVAL);
                }
            }
            [ts(word(0), word(1) * 1000), ts(word(2), word(3) * 1000)]
        }
        Layout::Timespec => [ts(word(0), word(1)), ts(word(2), word(3))],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_components_beneath_a_grant_count() {
        let g = Path::new("/work/ws");
        assert_eq!(
            rest_beneath(g, Path::new("/work/ws/a/b")),
            Some("a/b".into())
        );
        assert_eq!(rest_beneath(g, Path::new("/work/ws")), Some("".into()));
        assert_eq!(
            rest_beneath(g, Path::new("//work/./ws/a")),
            Some("a".into())
        );
        assert_eq!(rest_beneath(g, Path::new("/work/wsx/a")), None);
        assert_eq!(rest_beneath(g, Path::new("/work")), None);
        assert_eq!(rest_beneath(g, Path::new("/etc/passwd")), None);
        // `..` stays for RESOLVE_BENEATH to refuse.
        assert_eq!(
            rest_beneath(g, Path::new("/work/ws/../../etc/passwd")),
            Some("../../etc/passwd".into())
        );
    }
}
