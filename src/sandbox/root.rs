//! The worker's private root, planned before the fork.
//!
//! In its mount namespace the worker gets a fresh root, as bubblewrap and
//! flatpak build one, holding only:
//!
//! - read-only bind mounts of what the policy's Landlock rules grant (system
//!   folders, the interpreter's prefix and venv, the extension folder, the
//!   operator's `read_only_paths`), each at its own path; a symlink on the
//!   way (`/lib64 -> usr/lib64`, `/etc/localtime`) is recreated as a symlink
//!   and its target bound;
//! - the workspace, read-only or read-write;
//! - the scratch folder at `/tmp` and `/var/tmp`;
//! - a procfs of the worker's own pid namespace at `/proc`;
//! - a minimal `/dev`: `null zero full random urandom` (bound from the host),
//!   a private size-capped tmpfs at `/dev/shm`, and with `subprocess.run` a
//!   private devpts at `/dev/pts` with `/dev/ptmx`;
//! - `/etc/passwd` and `/etc/group` holding only the worker's own identity.
//!
//! The mount points live in a skeleton folder on the host (on `/dev/shm`
//! where that is a tmpfs, else beside the scratch folder; removed with it).
//! Everything here runs in the parent; the child (`child::build_root`) only
//! mounts and pivots, with the strings prepared here.
//!
//! Landlock stays an independent layer under this root: it grants the paths
//! the policy grants, never the root itself. Its path walk goes from a file
//! up to the root of the file's mount, then on from the *parent* of the
//! folder that mount sits on (the mount point itself is skipped), and ends at
//! the top of the worker's mount tree, the skeleton. A rule on the skeleton
//! would therefore grant everything mounted in it, a bind the plan should not
//! have made included; so there is none. The binds of host folders are
//! granted by their host inodes (the policy's rules, which are the roots of
//! those bind mounts); `/etc/passwd` and `/etc/group` by their files in the
//! skeleton; and the file systems made in the child (`/proc`, `/dev/shm`,
//! `/dev/pts`), whose root inodes exist only once they are mounted, by rules
//! the child adds on them after mounting, before `landlock_restrict_self`
//! ([`PrivateRoot::mount_rules`]).

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use landlock::{Access as _, AccessFs, BitFlags};

use crate::error::{Error, Result, SandboxKind};
use crate::sandbox::policy::{Access, Policy};

/// One mount the child makes, target inside the skeleton.
#[derive(Debug)]
pub struct Mount {
    pub source: Option<CString>,
    pub target: CString,
    pub fstype: Option<CString>,
    pub flags: libc::c_ulong,
    pub data: Option<CString>,
    /// A detached, idmapped mount tree (`child::idmapped_tree`) moved in
    /// instead of a bind of `source`; the runner holds the descriptor.
    pub tree: Option<libc::c_int>,
}

/// What `child::build_root` applies, every string prepared.
#[derive(Debug)]
pub struct PrivateRoot {
    /// The skeleton folder that becomes `/`.
    pub skeleton: CString,
    /// In order: parents before what is mounted inside them.
    pub mounts: Vec<Mount>,
    /// The mounts made writable again after everything turned read-only
    /// (not recursive: a read-only bind inside a writable one stays
    /// read-only), by their paths in the skeleton: the child sets the
    /// attributes before `pivot_root` (see `child::build_root`).
    pub writable: Vec<CString>,
    /// The working directory inside the new root.
    pub cwd: CString,
    /// Landlock rules the child adds once the root is built: the file
    /// systems it mounts (procfs, tmpfs, devpts) by their paths inside the
    /// new root, so that a rule names their own root inode. Rights as far as
    /// the ruleset handles them (launch.rs masks them); empty without Landlock.
    pub mount_rules: Vec<(CString, BitFlags<AccessFs>)>,
}

/// The private root, and the Landlock rules for the files it adds.
pub struct Planned {
    pub root: PrivateRoot,
    /// (file in the skeleton, rights): the synthesized `/etc/passwd` and
    /// `/etc/group`, the only files of the root that are not a grant's.
    pub landlock: Vec<(PathBuf, BitFlags<AccessFs>)>,
}

/// Test-only fault injection (debug builds only): `NODUS_FAULT_ROOT_BIND=PATH`
/// makes every private root also bind PATH, read-only at its own path, with
/// no Landlock rule: a mistake in the plan, with which the security suite
/// shows that Landlock alone still stops reads there
/// (`attack_root_fault_extra_bind_stopped_by_landlock`). Release builds
/// ignore the variable.
#[cfg(debug_assertions)]
pub const FAULT_ROOT_BIND: &str = "NODUS_FAULT_ROOT_BIND";

#[cfg(debug_assertions)]
fn injected_bind() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os(FAULT_ROOT_BIND)?);
    eprintln!(
        "ext-runner: fault injection (debug build): {FAULT_ROOT_BIND} binds {} into the private root with no Landlock rule",
        crate::support::terminal::escape(&p.to_string_lossy())
    );
    Some(p)
}

#[cfg(not(debug_assertions))]
fn injected_bind() -> Option<PathBuf> {
    None
}

/// Where the scratch folder appears inside the private root.
pub const SCRATCH_INSIDE: &str = "/tmp";

/// The skeleton folder of a scratch folder: `<scratch's name>-root`, in
/// [`skeleton_base`] (beside the scratch folder where that is no tmpfs).
pub fn skeleton_of(scratch: &Path) -> PathBuf {
    let mut name = scratch.file_name().unwrap_or_default().to_owned();
    name.push("-root");
    match skeleton_base() {
        Some(base) => base.join(name),
        None => scratch.with_file_name(name),
    }
}

/// Where skeletons are made: `/dev/shm` when it is a tmpfs, else beside the
/// scratch folder (None). The skeleton is about 40 folders, symlinks and two
/// small files made and removed at every start: on a tmpfs that is memory
/// only, while on the host's temporary folder every `mkdir` and `rmdir` is
/// journaled file-system metadata (measured on this machine's ext4, mounted
/// with `discard`, while other processes wrote: removing 16 empty folders
/// took 11–24 ms, up to 130 ms, against 0.09 ms on `/dev/shm`; see
/// docs/benchmarks.md). Like `/tmp` it is a sticky folder anyone may write
/// in, and the skeleton is made the same way: a fresh name that must not
/// exist, owned by the runner, 0755. Nothing of the worker's is in it (its
/// data lives in the scratch folder, which stays where it was), and the
/// worker never sees `/dev/shm` of the host (it gets a tmpfs of its own).
pub fn skeleton_base() -> Option<&'static Path> {
    static BASE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BASE.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let tmpfs = nix::sys::statfs::statfs(shm)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
        let usable = nix::unistd::access(shm, nix::unistd::AccessFlags::W_OK).is_ok();
        (tmpfs && usable).then(|| shm.to_path_buf())
    })
    .as_deref()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A bind mount of a host folder or file.
    Bind,
    Proc,
    /// The runner's `/proc`, bound (recursively: a container's masks stay).
    ProcBind,
    Shm,
    Devpts,
    /// A regular file written into the skeleton (passwd, group): no mount.
    Synthesized,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Path inside the new root.
    dst: PathBuf,
    /// Host path (Bind) or content (Synthesized).
    src: PathBuf,
    content: String,
    kind: Kind,
    writable: bool,
}

fn cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| {
        Error::sandbox(
            SandboxKind::Prepare,
            format!("path {} contains a NUL byte", p.display()),
        )
    })
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in a constant")
}

/// `p` without `.`/`..`/duplicate separators (the policy's paths are absolute).
fn normal(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Resolves `p` on the host: the symlinks met on the way (path, link text),
/// and the canonical path behind it (None when it does not exist).
fn resolve(p: &Path) -> (Vec<(PathBuf, PathBuf)>, Option<PathBuf>) {
    let p = normal(p);
    let mut prefix = PathBuf::from("/");
    for c in p.components().skip(1) {
        prefix.push(c);
        match std::fs::symlink_metadata(&prefix) {
            Err(_) => return (Vec::new(), None),
            Ok(m) if m.file_type().is_symlink() => {
                let Ok(text) = std::fs::read_link(&prefix) else {
                    return (Vec::new(), None);
                };
                let mut links = vec![(prefix.clone(), text)];
                let Ok(real) = std::fs::canonicalize(&p) else {
                    return (links, None);
                };
                // The target may itself sit behind other links (a chain).
                let (more, _) = resolve(&std::fs::canonicalize(&prefix).unwrap_or_default());
                links.extend(more);
                return (links, Some(real));
            }
            Ok(_) => {}
        }
    }
    (Vec::new(), Some(p))
}

/// The name a root runner's worker of its own uid has in its `/etc/passwd`.
pub const OWN_UID_USER: &str = "nodus-worker";

/// The worker's entries in `/etc/passwd` and `/etc/group`: its own ids only
/// (`own`: a root runner's worker's uid and gid, named `nodus-worker`).
fn identity(own: Option<(u32, u32)>) -> (String, String) {
    if let Some((uid, gid)) = own {
        return (
            format!(
                "{OWN_UID_USER}:x:{uid}:{gid}:{OWN_UID_USER}:{SCRATCH_INSIDE}:/usr/sbin/nologin\n"
            ),
            format!("{OWN_UID_USER}:x:{gid}:\n"),
        );
    }
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .filter(|n| !n.contains([':', '\n']))
        .unwrap_or_else(|| "nodus-worker".into());
    let group = nix::unistd::Group::from_gid(gid)
        .ok()
        .flatten()
        .map(|g| g.name)
        .filter(|n| !n.contains([':', '\n']))
        .unwrap_or_else(|| user.clone());
    (
        format!(
            "{user}:x:{}:{}:{user}:{SCRATCH_INSIDE}:/usr/sbin/nologin\n",
            uid.as_raw(),
            gid.as_raw()
        ),
        format!("{group}:x:{}:\n", gid.as_raw()),
    )
}

/// Plans the private root of a worker whose policy asks for one, and lays
/// out its skeleton (mount points, symlinks, passwd and group) at
/// `skeleton`, which must not exist yet. `own`: the uid and gid a root
/// runner's worker runs as; `idmapped`: folders (the workspace, the
/// extension folder) and the detached idmapped trees to mount there
/// instead of binds.
pub fn plan(
    policy: &Policy,
    scratch: &Path,
    skeleton: &Path,
    cwd: &Path,
    own: Option<(u32, u32)>,
    idmapped: &[(&Path, libc::c_int)],
) -> Result<Planned> {
    let Some(pr) = &policy.private_root else {
        return Err(Error::sandbox(
            SandboxKind::Prepare,
            "the policy asks for no private root",
        ));
    };
    let mut entries: Vec<Entry> = Vec::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let bind = |dst: PathBuf, src: PathBuf, writable: bool| Entry {
        dst,
        src,
        content: String::new(),
        kind: Kind::Bind,
        writable,
    };
    // First, so that the scratch folder wins where a grant names /tmp itself.
    for d in [SCRATCH_INSIDE, "/var/tmp"] {
        entries.push(bind(d.into(), scratch.to_path_buf(), true));
    }
    for r in &policy.filesystem {
        let (l, real) = resolve(&r.path);
        links.extend(l);
        if let Some(real) = real {
            entries.push(bind(real.clone(), real, r.access == Access::Write));
        }
    }
    for dev in [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
    ] {
        if Path::new(dev).exists() {
            entries.push(bind(dev.into(), dev.into(), false));
        }
    }
    let special = |dst: &str, kind| Entry {
        dst: dst.into(),
        src: PathBuf::new(),
        content: String::new(),
        kind,
        writable: !matches!(kind, Kind::Proc | Kind::ProcBind),
    };
    if pr.proc {
        entries.push(special("/proc", Kind::Proc));
    } else if policy.binds_runner_proc() {
        // No pid namespace of its own (or none whose procfs may be mounted):
        // the runner's /proc, read-only (`Policy::binds_runner_proc`): the
        // worker sees the runner's processes; /proc/self and its pids agree.
        entries.push(Entry {
            src: "/proc".into(),
            ..special("/proc", Kind::ProcBind)
        });
    }
    entries.push(special("/dev/shm", Kind::Shm));
    if pr.devpts {
        entries.push(special("/dev/pts", Kind::Devpts));
        links.push(("/dev/ptmx".into(), "pts/ptmx".into()));
    }
    for (name, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        links.push((name.into(), target.into()));
    }
    if let Some(p) = injected_bind().filter(|p| p.is_absolute()) {
        entries.push(bind(normal(&p), normal(&p), false));
    }
    let (passwd, group) = identity(own);
    for (dst, content) in [("/etc/passwd", passwd), ("/etc/group", group)] {
        entries.push(Entry {
            dst: dst.into(),
            src: PathBuf::new(),
            content,
            kind: Kind::Synthesized,
            writable: false,
        });
    }

    // Parents first; of two entries for one path the first wins.
    entries.sort_by(|a, b| a.dst.cmp(&b.dst));
    entries.dedup_by(|b, a| a.dst == b.dst);

    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::sandbox_io(
            SandboxKind::Scratch,
            format!("private root: cannot {what} {}: {e}", p.display()),
            e,
        )
    };
    let in_skel = |p: &Path| skeleton.join(p.strip_prefix("/").unwrap_or(p));
    std::fs::create_dir(skeleton).map_err(|e| io("create", skeleton, e))?;
    let _ = std::fs::set_permissions(skeleton, std::fs::Permissions::from_mode(0o755));
    // Every folder of the skeleton 0755, whatever the runner's umask: a
    // worker of another uid than the runner's walks through them to the
    // binds (the interpreter under a 0700 /root is reached this way).
    let mkdirs = |p: &Path| -> Result<()> {
        std::fs::create_dir_all(p).map_err(|e| io("create", p, e))?;
        for q in p
            .ancestors()
            .take_while(|q| q.starts_with(skeleton) && *q != skeleton)
        {
            let _ = std::fs::set_permissions(q, std::fs::Permissions::from_mode(0o755));
        }
        Ok(())
    };

    let mut mounts = Vec::new();
    let mut writable = Vec::new();
    // Landlock rules for what is not a host grant (see the module's notes).
    let rw = AccessFs::from_all(landlock::ABI::V6) & !AccessFs::Execute;
    let mut landlock = Vec::new();
    let mut mount_rules = Vec::new();
    // Folders mounted so far: (path inside, host source, writable, ours).
    let mut covering: Vec<(PathBuf, PathBuf, bool, bool)> = Vec::new();
    for e in &entries {
        let under = covering
            .iter()
            .rev()
            .find(|(dst, ..)| e.dst.starts_with(dst) && e.dst != *dst)
            .cloned();
        let target = in_skel(&e.dst);
        match &under {
            Some((dst, src, w, ours)) => {
                let rel = e.dst.strip_prefix(dst).unwrap_or(Path::new(""));
                let host = src.join(rel);
                // Already visible as it is through the folder bound above it.
                if e.kind == Kind::Bind && host == e.src && *w == e.writable {
                    continue;
                }
                // An operator who grants the host's /etc shows its passwd.
                if e.kind == Kind::Synthesized {
                    continue;
                }
                let is_dir = e.kind != Kind::Bind || e.src.is_dir();
                if std::fs::symlink_metadata(&host).is_err() {
                    // No mount point inside a host folder granted above it
                    // (say /var/tmp where the operator granted a /var
                    // without one): the mount is left out.
                    if !*ours {
                        continue;
                    }
                    // Inside the scratch folder (the extension or the
                    // workspace under the host's temporary folder).
                    if is_dir {
                        mkdirs(&host)?;
                    } else {
                        if let Some(parent) = host.parent() {
                            mkdirs(parent)?;
                        }
                        std::fs::write(&host, b"").map_err(|err| io("create", &host, err))?;
                    }
                }
            }
            None => {
                if let Some(parent) = target.parent() {
                    mkdirs(parent)?;
                }
                match e.kind {
                    Kind::Synthesized => {
                        std::fs::write(&target, &e.content)
                            .map_err(|err| io("write", &target, err))?;
                        let _ = std::fs::set_permissions(
                            &target,
                            std::fs::Permissions::from_mode(0o644),
                        );
                        landlock.push((target, AccessFs::ReadFile.into()));
                        continue;
                    }
                    Kind::Bind if !e.src.is_dir() => {
                        std::fs::write(&target, b"").map_err(|err| io("create", &target, err))?
                    }
                    _ => mkdirs(&target)?,
                }
            }
        }
        let (source, fstype, flags, data) = match e.kind {
            Kind::Bind => (
                Some(cstring(&e.src)?),
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            ),
            Kind::ProcBind => (
                Some(cstring(&e.src)?),
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            ),
            Kind::Proc => (
                Some(cstr("proc")),
                Some(cstr("proc")),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                None,
            ),
            Kind::Shm => (
                Some(cstr("tmpfs")),
                Some(cstr("tmpfs")),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some(cstr(&format!("size={},mode=1777", pr.shm_bytes.max(4096)))),
            ),
            Kind::Devpts => (
                Some(cstr("devpts")),
                Some(cstr("devpts")),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                Some(cstr("newinstance,ptmxmode=0666,mode=0620")),
            ),
            Kind::Synthesized => unreachable!("written above"),
        };
        let tree = idmapped
            .iter()
            .find(|(p, _)| e.kind == Kind::Bind && e.src == *p)
            .map(|&(_, fd)| fd);
        mounts.push(Mount {
            source,
            target: cstring(&target)?,
            fstype,
            flags,
            data,
            tree,
        });
        if e.writable {
            writable.push(cstring(&target)?);
        }
        match e.kind {
            Kind::Proc | Kind::ProcBind => {
                mount_rules.push((cstring(&e.dst)?, AccessFs::ReadFile | AccessFs::ReadDir))
            }
            Kind::Shm | Kind::Devpts => mount_rules.push((cstring(&e.dst)?, rw)),
            Kind::Bind | Kind::Synthesized => {}
        }
        let ours = e.kind != Kind::Bind || e.src == scratch;
        if e.kind != Kind::Bind || e.src.is_dir() {
            covering.push((e.dst.clone(), e.src.clone(), e.writable, ours));
        }
    }

    // Symlinks the grants pass through, unless a bound folder already shows them.
    links.sort();
    links.dedup();
    for (path, text) in links {
        let under = covering
            .iter()
            .rev()
            .find(|(dst, ..)| path.starts_with(dst))
            .cloned();
        let target = match under {
            // Inside the scratch folder (a link under the host's /tmp, say
            // an extension loaded through one): made there.
            Some((dst, src, _, true)) if dst != src && !src.as_os_str().is_empty() => {
                src.join(path.strip_prefix(&dst).unwrap_or(Path::new("")))
            }
            // Shown as it is by the host folder bound above it.
            Some(_) => continue,
            None => in_skel(&path),
        };
        if std::fs::symlink_metadata(&target).is_ok() {
            continue;
        }
        if let Some(parent) = target.parent() {
            mkdirs(parent)?;
        }
        std::os::unix::fs::symlink(&text, &target).map_err(|e| io("link", &target, e))?;
    }

    let cwd = if entries
        .iter()
        .any(|e| e.kind == Kind::Bind && cwd.starts_with(&e.dst))
    {
        cstring(cwd)?
    } else {
        cstr("/")
    };
    Ok(Planned {
        root: PrivateRoot {
            skeleton: cstring(skeleton)?,
            mounts,
            writable,
            cwd,
            mount_rules,
        },
        landlock,
    })
}
