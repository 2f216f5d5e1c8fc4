//! Facts about this kernel and this user that the policy depends on.
//! `ext-runner probe` prints them. Probing creates (and drops) a Landlock
//! ruleset and forks one short-lived child to try the namespaces (the network
//! namespace is judged from its sysctl limit: see `Probe::current`).

use serde::Serialize;

/// What this kernel offers to this user.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Probe {
    pub kernel: String,
    pub uid: u32,
    pub root: bool,
    /// Highest Landlock ABI this kernel enforces (0: none).
    pub landlock_abi: u8,
    pub seccomp_filter: bool,
    pub user_namespaces: bool,
    pub network_namespaces: bool,
    pub pid_namespaces: bool,
    pub ipc_namespaces: bool,
    /// A pids cgroup we can create children in (cgroup v1 `pids` or v2 delegation).
    pub pids_cgroup: Option<String>,
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
        let uid = nix::unistd::getuid().as_raw();
        let root = uid == 0;
        let ns = |flags| crate::sandbox::child::try_unshare(flags, root);
        // One fork tries the namespaces at once; only a failure is broken
        // down. Not the network namespace: making and tearing one down costs
        // half a millisecond on every CLI start, and where the others can be
        // made its one common blocker is the `user.max_net_namespaces` limit.
        // (Should something else refuse it, the launch fails with the reason.)
        let all = ns(libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS);
        let net = if all {
            sysctl_positive("/proc/sys/user/max_net_namespaces")
        } else {
            ns(libc::CLONE_NEWNET)
        };
        let ns = |flags| all || ns(flags);
        let user = root || ns(libc::CLONE_NEWUSER);
        Probe {
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            uid,
            root,
            landlock_abi: landlock_abi(),
            seccomp_filter: seccomp_filter(),
            user_namespaces: user,
            network_namespaces: net,
            pid_namespaces: ns(libc::CLONE_NEWPID),
            ipc_namespaces: ns(libc::CLONE_NEWIPC),
            pids_cgroup: pids_cgroup(root),
            cgroup_v2_delegation: cgroup_v2_delegation(),
        }
    }
}

/// Whether a numeric sysctl file reads above zero (unreadable: assumed so).
fn sysctl_positive(path: &str) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_none_or(|v| v > 0)
}

/// The highest ABI for which a ruleset handling all its rights (filesystem,
/// network, scopes) can be created. ABI 7 adds only audit flags, so a 6
/// kernel may read as 7; the policy needs 6.
fn landlock_abi() -> u8 {
    use landlock::{
        Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, Scope, ABI,
    };
    const ABIS: [(ABI, u8); 7] = [
        (ABI::V7, 7),
        (ABI::V6, 6),
        (ABI::V5, 5),
        (ABI::V4, 4),
        (ABI::V3, 3),
        (ABI::V2, 2),
        (ABI::V1, 1),
    ];
    ABIS.iter()
        .find(|(abi, _)| {
            // Filesystem rights alone are the same from ABI 5 on: the network
            // rights (4) and scopes (6) tell those apart.
            Ruleset::default()
                .set_compatibility(CompatLevel::HardRequirement)
                .handle_access(AccessFs::from_all(*abi))
                .and_then(|r| r.handle_access(AccessNet::from_all(*abi)))
                .and_then(|r| r.scope(Scope::from_all(*abi)))
                .and_then(|r| r.create())
                .is_ok()
        })
        .map_or(0, |(_, n)| *n)
}

fn seccomp_filter() -> bool {
    // Seccomp: 2 in /proc/self/status means a filter is already active, which is fine too;
    // the "Seccomp_filters" field exists only on kernels built with filter support.
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.contains("Seccomp_filters:"))
}

/// A pids cgroup folder this process may create children in (the cgroup v1
/// `pids` controller; root only, since only root may make cgroups there).
fn pids_cgroup(root: bool) -> Option<String> {
    let v1 = "/sys/fs/cgroup/pids";
    (root && std::path::Path::new(v1).join("cgroup.procs").exists()).then(|| v1.to_string())
}

fn cgroup_v2_delegation() -> bool {
    // Delegated when our own v2 cgroup's folder is writable by us.
    let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
        return false;
    };
    let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
        return false;
    };
    for mount in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let dir = format!("{mount}{path}");
        if std::path::Path::new(&dir)
            .join("cgroup.subtree_control")
            .exists()
        {
            return nix::unistd::access(dir.as_str(), nix::unistd::AccessFlags::W_OK).is_ok();
        }
    }
    false
}
