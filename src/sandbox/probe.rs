//! Facts about this kernel and this user that the policy depends on.
//! `ext-runner probe` prints them. Probing asks the kernel for its Landlock
//! ABI and forks one short-lived child that does what a launch does with the
//! namespaces (more when that fails, to find what works: see
//! `Probe::current`).

use serde::Serialize;

/// What this kernel offers to this user.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Probe {
    pub kernel: String,
    pub uid: u32,
    pub root: bool,
    /// The Landlock ABI this kernel reports (0: none).
    pub landlock_abi: u8,
    /// What the policy's Landlock rules use that this ABI lacks (empty at 6 and later).
    pub landlock_missing: Vec<String>,
    pub seccomp_filter: bool,
    /// A seccomp listener can be given to a worker (its metadata calls are
    /// then supervised without a mount namespace: `supervisor.rs`).
    pub seccomp_listener: bool,
    /// Why not, when not (EBUSY: another supervisor's filter is above the runner).
    pub seccomp_listener_missing: Option<String>,
    /// A user namespace with our own ids mapped (root needs none).
    pub user_namespaces: bool,
    /// A mount namespace whose mounts can be made private and read-only.
    pub mount_namespaces: bool,
    pub network_namespaces: bool,
    pub pid_namespaces: bool,
    pub ipc_namespaces: bool,
    pub uts_namespaces: bool,
    /// Why the full namespace set could not be made (the first failing step,
    /// its errno and what usually causes it), when it could not.
    pub namespace_failure: Option<String>,
    /// A folder where per-worker pids cgroups can be made (the runner's own
    /// v1 `pids` cgroup, or its writable v2 subtree); root only, as only root
    /// needs one (RLIMIT_NPROC binds every other uid). See `cgroup.rs`.
    pub pids_cgroup: Option<String>,
    /// A folder where per-worker memory cgroups can be made (the runner's own
    /// v1 `memory` cgroup, or its writable v2 subtree), for any runner: with
    /// one, RLIMIT_AS (address space, not memory) is not the memory bound.
    pub memory_cgroup: Option<String>,
    /// Why no pids cgroup can be made (when none can).
    pub pids_cgroup_missing: Option<String>,
    /// Why no memory cgroup can be made (when none can).
    pub memory_cgroup_missing: Option<String>,
    /// The cgroups above are in a writable (delegated) cgroup v2 subtree.
    pub cgroup_v2_delegation: bool,
}

impl Probe {
    /// The probe of this process, made once.
    pub fn cached() -> &'static Probe {
        static PROBE: std::sync::OnceLock<Probe> = std::sync::OnceLock::new();
        PROBE.get_or_init(Probe::current)
    }

    /// Probes the running kernel.
    pub fn current() -> Probe {
        use crate::sandbox::child::try_namespaces;
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let root = uid == 0;
        let (uid_map, gid_map) = (format!("{uid} {uid} 1"), format!("{gid} {gid} 1"));
        let attempt = |flags| try_namespaces(flags, root, uid_map.as_bytes(), gid_map.as_bytes());
        // One fork tries what a launch does (the namespaces, the id maps, the
        // mount steps); only a failure is broken down, one namespace at a
        // time, and what works alone is tried together (the ladder: full set,
        // without what fails, none). Not the network namespace on the happy
        // path: making and tearing one down costs half a millisecond on every
        // CLI start, and where the others can be made its one common blocker
        // is the `user.max_net_namespaces` limit (should something else refuse
        // it, the launch fails with the reason).
        let full = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        let mut ns = NsSet::default();
        let mut failure = None;
        // A pid namespace whose procfs cannot be mounted (a container's
        // masked /proc) is left out and the rest tried again: the flags made.
        // The private root then binds the runner's /proc.
        let mut proc_refused = None;
        let mut made = |flags: libc::c_int| match attempt(flags) {
            Err((step @ crate::sandbox::child::ProbeStep::MountProc, errno)) => {
                proc_refused = Some(describe_failure(flags, root, step, errno));
                let rest = flags & !libc::CLONE_NEWPID;
                attempt(rest).map(|()| rest)
            }
            r => r.map(|()| flags),
        };
        match made(full) {
            Ok(flags) => {
                ns = NsSet {
                    user: true,
                    mount: true,
                    pid: flags & libc::CLONE_NEWPID != 0,
                    ipc: true,
                    uts: true,
                    net: sysctl_positive("/proc/sys/user/max_net_namespaces"),
                };
            }
            Err((step, errno)) => {
                failure = Some(describe_failure(full, root, step, errno));
                let alone = |flag| attempt(flag).is_ok();
                let user = root || alone(0);
                if user {
                    ns = NsSet {
                        user,
                        mount: alone(libc::CLONE_NEWNS),
                        pid: alone(libc::CLONE_NEWPID),
                        ipc: alone(libc::CLONE_NEWIPC),
                        uts: alone(libc::CLONE_NEWUTS),
                        net: alone(libc::CLONE_NEWNET),
                    };
                    match ns.flags() {
                        0 => ns = NsSet::default(),
                        together => match made(together) {
                            Ok(flags) => ns.pid = flags & libc::CLONE_NEWPID != 0,
                            Err(_) => ns = NsSet::default(),
                        },
                    }
                    ns.user = user && ns.flags() != 0;
                }
            }
        }
        let failure = failure.or(proc_refused);
        let landlock_abi = crate::sandbox::child::landlock_version();
        let cgroups = crate::sandbox::cgroup::discover_here();
        let v2 = [&cgroups.pids, &cgroups.memory]
            .iter()
            .any(|p| p.as_ref().is_ok_and(|p| p.version == 2));
        // Root only for pids: RLIMIT_NPROC binds every other uid.
        let pids = if root {
            cgroups.pids
        } else {
            Err("not needed: RLIMIT_NPROC binds a runner that is not root".into())
        };
        let listener = if seccomp_filter() {
            crate::sandbox::child::try_listener().map_err(|e| match e {
                libc::EBUSY => "the runner runs under another seccomp supervisor (a container runtime's, LXD, sysbox, a wrapper): the kernel allows one listener in a filter chain (EBUSY)".to_string(),
                e => format!("seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER) failed: {}", nix::errno::Errno::from_raw(e)),
            })
        } else {
            Err("this kernel has no seccomp filters".to_string())
        };
        Probe {
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            uid,
            root,
            landlock_abi,
            landlock_missing: landlock_missing(landlock_abi)
                .iter()
                .map(|s| s.to_string())
                .collect(),
            seccomp_filter: seccomp_filter(),
            seccomp_listener: listener.is_ok(),
            seccomp_listener_missing: listener.err(),
            user_namespaces: root || ns.user,
            mount_namespaces: ns.mount,
            network_namespaces: ns.net,
            pid_namespaces: ns.pid,
            ipc_namespaces: ns.ipc,
            uts_namespaces: ns.uts,
            namespace_failure: failure,
            pids_cgroup: pids.as_ref().ok().map(|p| p.path.clone()),
            pids_cgroup_missing: pids.err(),
            memory_cgroup: cgroups.memory.as_ref().ok().map(|p| p.path.clone()),
            memory_cgroup_missing: cgroups.memory.err(),
            cgroup_v2_delegation: v2,
        }
    }
}

/// The namespaces one attempt covers.
#[derive(Debug, Clone, Copy, Default)]
struct NsSet {
    user: bool,
    mount: bool,
    pid: bool,
    ipc: bool,
    uts: bool,
    net: bool,
}

impl NsSet {
    /// The CLONE_NEW* flags besides the user namespace.
    fn flags(&self) -> libc::c_int {
        [
            (self.mount, libc::CLONE_NEWNS),
            (self.pid, libc::CLONE_NEWPID),
            (self.ipc, libc::CLONE_NEWIPC),
            (self.uts, libc::CLONE_NEWUTS),
            (self.net, libc::CLONE_NEWNET),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .fold(0, |acc, (_, f)| acc | f)
    }
}

/// What the Landlock rules of a policy use that ABI `abi` lacks, by the ABI that added it.
pub fn landlock_missing(abi: u8) -> Vec<&'static str> {
    if abi == 0 {
        return vec!["Landlock itself (the kernel has none, or it is not enabled: add `landlock` to the lsm= boot parameter)"];
    }
    [
        (2, "REFER (ABI 2: links and renames across folders are refused outright)"),
        (3, "TRUNCATE (ABI 3: truncate(2) of a writable host file is not checked)"),
        (4, "TCP bind and connect (ABI 4: network.outbound's port list cannot be enforced)"),
        (5, "IOCTL_DEV (ABI 5: ioctl on granted device files is not checked)"),
        (6, "scopes (ABI 6: abstract unix sockets and signals to processes outside the sandbox are not checked)"),
    ]
    .into_iter()
    .filter(|(since, _)| abi < *since)
    .map(|(_, what)| what)
    .collect()
}

/// `unshare(CLONE_NEWUSER|CLONE_NEWNS): EPERM (hint)` for a failed attempt.
fn describe_failure(
    flags: libc::c_int,
    root: bool,
    step: crate::sandbox::child::ProbeStep,
    errno: i32,
) -> String {
    use crate::sandbox::child::ProbeStep as S;
    let names: Vec<&str> = [
        (!root, "CLONE_NEWUSER"),
        (flags & libc::CLONE_NEWNS != 0, "CLONE_NEWNS"),
        (flags & libc::CLONE_NEWPID != 0, "CLONE_NEWPID"),
        (flags & libc::CLONE_NEWIPC != 0, "CLONE_NEWIPC"),
        (flags & libc::CLONE_NEWUTS != 0, "CLONE_NEWUTS"),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| n)
    .collect();
    let call = match step {
        S::Unshare => format!("unshare({})", names.join("|")),
        S::Setgroups => "writing /proc/self/setgroups".into(),
        S::UidMap => "writing /proc/self/uid_map".into(),
        S::GidMap => "writing /proc/self/gid_map".into(),
        S::MountPrivate => "mount(\"/\", MS_REC|MS_PRIVATE)".into(),
        S::MountReadOnly => "mount_setattr(\"/\", MOUNT_ATTR_RDONLY)".into(),
        S::MountProc => "mount(\"proc\", \"/proc\", \"proc\") in the new pid namespace".into(),
    };
    let name = nix::errno::Errno::from_raw(errno);
    format!("{call}: {name}: {}", namespace_hint(step, errno, root))
}

/// What usually causes a namespace step to fail with `errno`, and what to do.
pub fn namespace_hint(
    step: crate::sandbox::child::ProbeStep,
    errno: i32,
    root: bool,
) -> &'static str {
    use crate::sandbox::child::ProbeStep as S;
    match (step, errno) {
        (S::Unshare, libc::ENOSPC) => "a user.max_*_namespaces limit is reached here or in an enclosing user namespace; raise it",
        (S::Unshare, libc::EINVAL) => "this kernel lacks one of these namespace types",
        (S::Unshare, libc::EPERM) if root => "a container runtime's seccomp profile refuses unshare without CAP_SYS_ADMIN (Docker's default, Kubernetes' RuntimeDefault); the worker runs without namespaces (see docs/deploy.md)",
        (S::Unshare, libc::EPERM | libc::EACCES) => "unprivileged user namespaces are refused here: a container's seccomp profile, kernel.unprivileged_userns_clone=0, or, for namespaces inside a user namespace, Ubuntu's AppArmor restriction (kernel.apparmor_restrict_unprivileged_userns=1; see docs/deploy.md)",
        (S::Setgroups | S::UidMap | S::GidMap, libc::EPERM | libc::EACCES) => "the new user namespace grants no capability: Ubuntu 23.10+'s AppArmor restriction of unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1); an AppArmor profile allowing `userns` for ext-runner lifts it (see docs/deploy.md)",
        (S::MountPrivate | S::MountReadOnly, libc::EPERM | libc::EACCES) => "mounts are refused in the new mount namespace (an AppArmor or SELinux policy, or a container without CAP_SYS_ADMIN)",
        (S::MountReadOnly, libc::ENOSYS) => "this kernel has no mount_setattr (Linux 5.12)",
        (S::MountProc, libc::EPERM | libc::EACCES) => "a procfs may not be mounted here: the runner's /proc has masked paths (a container runtime hides parts of /proc under other mounts, as rootless Podman does), and the kernel refuses a new procfs that would reveal them; the worker runs without a pid namespace of its own and its private root binds the runner's /proc read-only (Podman: --security-opt unmask=/proc/*; Kubernetes: procMount: Unmasked; see docs/deploy.md)",
        _ => "see docs/deploy.md",
    }
}

/// Whether a numeric sysctl file reads above zero (unreadable: assumed so).
fn sysctl_positive(path: &str) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_none_or(|v| v > 0)
}

fn seccomp_filter() -> bool {
    // Seccomp: 2 in /proc/self/status means a filter is already active, which is fine too;
    // the "Seccomp_filters" field exists only on kernels built with filter support.
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.contains("Seccomp_filters:"))
}

/// What decides whether a root runner's worker can run as a uid of its own
/// (`policy::IdentityFacts`): which paths other users cannot reach (their
/// "other" permission bits, the only ones that apply to an id no file names),
/// which uids the runner's user namespace maps, and whether the workspace
/// can be idmapped (tried on a detached copy of its mount: nothing is
/// attached).
pub fn identity_facts(
    program: &crate::sandbox::policy::ProgramFacts,
    extension_dir: &std::path::Path,
    workspace: Option<&std::path::Path>,
) -> crate::sandbox::policy::IdentityFacts {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    let mut facts = crate::sandbox::policy::IdentityFacts::default();
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode()).ok();
    // (path, the "other" bits it needs itself: r-x for folders, --x for the
    // programs, r-- for the script)
    let mut paths: Vec<(&Path, u32)> = vec![(&program.program, 0o001)];
    if let Some(l) = &program.loader {
        paths.push((l, 0o001));
    }
    paths.extend(program.runtime_dirs.iter().map(|d| (d.as_path(), 0o005)));
    let runtime = paths.len();
    paths.push((extension_dir, 0o005));
    let script = extension_dir.join("extension.py");
    if script.exists() {
        paths.push((&script, 0o004));
    }
    for (i, (p, need)) in paths.iter().enumerate() {
        if mode(p).is_some_and(|m| m & need != *need) {
            if i >= runtime {
                facts.extension_closed = true;
            } else if facts.closed_itself.is_none() {
                facts.closed_itself = Some(p.to_path_buf());
            }
        }
        if facts.closed_on_the_way.is_none() {
            facts.closed_on_the_way = p
                .ancestors()
                .skip(1)
                .find(|a| mode(a).is_some_and(|m| m & 0o001 == 0))
                .map(Path::to_path_buf);
        }
    }
    id_map_facts(&mut facts);
    // The idmapped mounts are tried with the first id the worker would take.
    let id = facts
        .derived_worker_ids()
        .filter(|_| !facts.maps(&crate::sandbox::policy::WorkerIds::DEFAULT))
        .unwrap_or(crate::sandbox::policy::WorkerIds::DEFAULT)
        .first;
    if facts.extension_closed {
        facts.extension_idmap = Some(idmap_works(extension_dir, id));
    }
    if let Some(ws) = workspace {
        facts.workspace_idmap = Some(idmap_works(ws, id));
        facts.workspace_acl = Some(crate::sandbox::acl::usable(ws));
    }
    facts
}

/// The id facts of `policy::IdentityFacts`: the uids and gids this user
/// namespace maps, and the ids a range derived from them avoids (the
/// kernel's overflow ids, this process's uids, gids and groups, and the ids
/// of the accounts in /etc/passwd and /etc/group: `account_ids`).
pub fn id_map_facts(facts: &mut crate::sandbox::policy::IdentityFacts) {
    facts.mapped_uids = mapped_ids("/proc/self/uid_map");
    facts.mapped_gids = mapped_ids("/proc/self/gid_map");
    let mut reserved: Vec<u32> = ["overflowuid", "overflowgid"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(format!("/proc/sys/kernel/{f}")).ok())
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let (u, g) = (nix::unistd::getresuid(), nix::unistd::getresgid());
    if let (Ok(u), Ok(g)) = (u, g) {
        reserved.extend([u.real, u.effective, u.saved].map(|i| i.as_raw()));
        reserved.extend([g.real, g.effective, g.saved].map(|i| i.as_raw()));
    }
    if let Ok(groups) = nix::unistd::getgroups() {
        reserved.extend(groups.iter().map(|g| g.as_raw()));
    }
    reserved.sort_unstable();
    reserved.dedup();
    facts.reserved_ids = reserved;
    facts.accounts = account_ids();
}

/// The ids the account files name, as this process sees them (inside a
/// container, the container's files): `/etc/passwd`'s uids and primary
/// gids, `/etc/group`'s gids (`policy::AccountId::parse`). A file that
/// cannot be read names none. Only the files: an account that NSS alone
/// knows (LDAP, SSSD, NIS maps, systemd's dynamic users) is not seen, so an
/// operator with such accounts gives `worker_ids` a range none of them uses
/// (docs/deploy.md).
pub fn account_ids() -> Vec<crate::sandbox::policy::AccountId> {
    account_ids_where(|_| true)
}

/// [`account_ids`], only the ids `keep` takes (those of one range).
pub fn account_ids_where(keep: impl Fn(u32) -> bool) -> Vec<crate::sandbox::policy::AccountId> {
    // Bytes, not text: a GECOS field in Latin-1 does not hide the line.
    let read =
        |f: &str| String::from_utf8_lossy(&std::fs::read(f).unwrap_or_default()).into_owned();
    crate::sandbox::policy::AccountId::parse_where(&read("/etc/passwd"), &read("/etc/group"), keep)
}

/// Whether an idmapped mount of `ws` (the workspace, or the extension
/// folder) can be made here: a user namespace mapping its owner to a worker
/// id, and a detached idmapped copy of its mount, both dropped at once.
fn idmap_works(ws: &std::path::Path, id: u32) -> Result<(), String> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(ws).map_err(|e| e.to_string())?;
    let userns = crate::sandbox::child::mapping_namespace(
        &format!("{} {id} 1", m.uid()),
        &format!("{} {id} 1", m.gid()),
    )
    .map_err(|e| format!("a user namespace for its idmapping: {e}"))?;
    let path = std::ffi::CString::new(ws.as_os_str().as_encoded_bytes())
        .map_err(|_| "a NUL byte in its path".to_string())?;
    crate::sandbox::child::idmapped_tree(&path, userns.as_fd())
        .map(drop)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => format!("its file system does not support idmapped mounts: {e}"),
            _ => format!("mount_setattr(MOUNT_ATTR_IDMAP): {e}"),
        })
}

/// The ids this process's user namespace maps, as (first, count) ranges of
/// an id map (`/proc/self/uid_map`, `gid_map`: "inside outside count", the
/// inside ids are what setresuid and setresgid may take); empty when it
/// cannot be read.
fn mapped_ids(file: &str) -> Vec<(u32, u32)> {
    let Ok(map) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    map.lines()
        .filter_map(|l| {
            let f: Vec<u32> = l
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            match f[..] {
                [inside, _, count] => Some((inside, count)),
                _ => None,
            }
        })
        .collect()
}
