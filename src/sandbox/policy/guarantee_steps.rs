//! What the guarantee model (`crate::sandbox::guarantees`) needs from the
//! derivation: which mechanisms a policy applies (and why not the others), and
//! the probe's verdict line.

use std::path::Path;

use crate::extension::manifest::Manifest;
use crate::sandbox::guarantees::{Applied, Mechanism};
use crate::sandbox::policy::{
    derive, Inputs, LandlockPolicy, Namespaces, OperatorPolicy, ProgramFacts,
    ADDRESS_SPACE_PER_MEMORY,
};
use crate::sandbox::probe::Probe;

/// What else decides which mechanisms are applied.
pub(super) struct Decided {
    pub seccomp_on: bool,
    pub pids_cgroup: bool,
    /// The worker gets a memory cgroup.
    pub memory_cgroup: bool,
    /// Why RLIMIT_AS is not set (None: it is; see `steps::address_space`).
    pub rlimit_as: Option<String>,
    pub own_ids: bool,
    /// The worker gets a private root (`root.rs`).
    pub private_root: bool,
    /// Seccomp allows `socket(AF_UNIX)` (a private root, abstract names out of reach).
    pub unix_sockets: bool,
    /// Why a root runner's worker runs as uid 0, and whether the operator chose it.
    pub as_root: Option<(String, bool)>,
}

/// Which mechanisms this policy applies, and why each other one is not.
pub(super) fn applied_mechanisms(
    probe: &Probe,
    op: &OperatorPolicy,
    landlock: Option<&LandlockPolicy>,
    ns: &Namespaces,
    d: &Decided,
) -> Applied {
    let Decided {
        seccomp_on,
        pids_cgroup,
        memory_cgroup,
        ref rlimit_as,
        own_ids,
        private_root,
        unix_sockets,
        ref as_root,
    } = *d;
    use Mechanism as M;
    let off = || Some(("switched off by the operator policy".to_string(), true));
    let mut a = Applied::new();
    let ll = |min: u8, what: &str| {
        if !op.layers.landlock {
            off()
        } else if probe.landlock_abi == 0 {
            Some((
                "this kernel has no Landlock (or it is not enabled)".to_string(),
                false,
            ))
        } else if probe.landlock_abi < min {
            Some((
                format!(
                    "this kernel has Landlock ABI {}; {what} came with ABI {min}",
                    probe.landlock_abi
                ),
                false,
            ))
        } else {
            None
        }
    };
    a.set(M::Landlock, ll(1, "Landlock"));
    a.set(M::LandlockTruncate, ll(3, "TRUNCATE"));
    a.set(M::LandlockTcp, ll(4, "TCP rules"));
    a.set(M::LandlockScopes, ll(6, "scopes"));
    let sec = if !op.layers.seccomp {
        off()
    } else if !probe.seccomp_filter {
        Some(("this kernel has no seccomp filters".to_string(), false))
    } else {
        None
    };
    a.set(M::Seccomp, sec.clone());
    // With a pid namespace seccomp allows setsid and setpgid (its process 1
    // ends everything in it): the process group then holds nothing.
    a.set(
        M::ProcessGroup,
        sec.clone().or_else(|| {
            ns.pid.then(|| {
                ("not applied: with the pid namespace setsid and setpgid are allowed, so the worker's processes can leave its group".into(), false)
            })
        }),
    );
    a.set(M::SeccompNoSetid, sec.clone());
    // In a private root with abstract names out of reach seccomp allows
    // AF_UNIX (multiprocessing's forkserver and Manager).
    a.set(
        M::SeccompNoUnix,
        sec.clone().or_else(|| {
            unix_sockets.then(|| {
                ("not applied: unix sockets are allowed in the private root, where no host socket is bound".into(), false)
            })
        }),
    );
    let ns_missing = |present: bool| {
        if present {
            None
        } else if !op.layers.namespaces {
            off()
        } else {
            Some((
                probe.namespace_failure.clone().unwrap_or_else(|| {
                    "this kernel or user cannot create it (see `ext-runner probe`)".into()
                }),
                false,
            ))
        }
    };
    a.set(M::MountNamespace, ns_missing(ns.mount));
    a.set(M::PrivateRoot, ns_missing(ns.mount && private_root));
    a.set(M::PidNamespace, ns_missing(ns.pid));
    a.set(M::NetNamespace, ns_missing(ns.net));
    a.set(
        M::SeccompNoMetadata,
        if ns.mount {
            Some((
                "not needed: the mount namespace keeps host files read-only".into(),
                false,
            ))
        } else {
            sec.clone()
        },
    );
    let scopes = landlock.is_some_and(|l| l.abi >= 6);
    a.set(
        M::SeccompOwnSignals,
        if ns.pid || scopes {
            Some((
                "not needed: a pid namespace or Landlock scopes keep signals in".into(),
                false,
            ))
        } else {
            sec.clone()
        },
    );
    let limits = if op.layers.limits { None } else { off() };
    a.set(M::Rlimits, limits.clone());
    a.set(
        M::RlimitNproc,
        limits.clone().or_else(|| {
            (probe.root && !own_ids).then(|| {
                ("no process limit from it: the worker runs as uid 0, which RLIMIT_NPROC does not bind (see unprivileged_identity)".to_string(), false)
            })
        }),
    );
    let no_cgroup = |why: &Option<String>| {
        why.clone()
            .unwrap_or_else(|| "no writable cgroup (see `ext-runner probe`)".into())
    };
    a.set(
        M::PidsCgroup,
        if pids_cgroup {
            None
        } else if !op.layers.limits {
            off()
        } else if !probe.root || own_ids {
            Some(("not used: RLIMIT_NPROC binds a worker that is not root".into(), false))
        } else {
            Some((format!("{}; run the runner as a non-root user, give it a writable pids cgroup (docs/deploy.md), or give root's workers uids of their own (\"worker_ids\" in the policy file)", no_cgroup(&probe.pids_cgroup_missing)), false))
        },
    );
    a.set(
        M::MemoryCgroup,
        if memory_cgroup {
            None
        } else if !op.layers.limits {
            off()
        } else {
            Some((format!("{}; RLIMIT_AS bounds address space instead, reservations included (a stack per thread, OpenBLAS's buffer per calling thread), at {ADDRESS_SPACE_PER_MEMORY} × limits.memory_bytes unless limits.address_space_bytes says otherwise: resident memory is bounded only as loosely (docs/deploy.md)", no_cgroup(&probe.memory_cgroup_missing)), false))
        },
    );
    a.set(
        M::RlimitAs,
        if !op.layers.limits {
            off()
        } else {
            rlimit_as.clone().map(|why| (why, false))
        },
    );
    // Not root: the runner's own uid; root: a uid of worker_ids, unless why not.
    a.set(M::OwnUid, as_root.clone());
    a.set(
        M::NoNewPrivileges,
        if landlock.is_some_and(|l| l.abi > 0) || seccomp_on {
            None
        } else {
            Some((
                "neither Landlock nor seccomp is applied, so no_new_privs is not set".into(),
                !op.layers.landlock || !op.layers.seccomp,
            ))
        },
    );
    a
}

/// What strict mode does on a host with these facts, in one line: for a
/// worker with no capabilities and one with `subprocess.run` (`ext-runner
/// probe` ends with it).
pub fn strict_verdict(probe: &Probe) -> String {
    let program = ProgramFacts {
        program: "/usr/bin/python3".into(),
        loader: None,
        runtime_dirs: vec!["/usr".into()],
    };
    // A root runner's workers: a uid of its own where this user namespace
    // maps the default range, or one derived from its maps (the program
    // above is one others can reach).
    let mut identity = crate::sandbox::policy::IdentityFacts::default();
    if probe.root {
        crate::sandbox::probe::id_map_facts(&mut identity);
    }
    let judge = |caps: &str| {
        let m = format!(
            r#"{{"name": "probe.verdict", "version": "1", "description": "d", "capabilities": [{caps}]}}"#
        );
        let manifest =
            Manifest::parse(m.as_bytes(), "verdict").expect("the verdict's manifest parses");
        derive(&Inputs {
            manifest: &manifest,
            extension_dir: Path::new("/"),
            workspace: None,
            operator: &OperatorPolicy::default(),
            program: &program,
            identity: &identity,
            probe,
        })
    };
    match (judge(""), judge(r#""subprocess.run""#)) {
        (Ok(p), Ok(_)) => {
            let single: Vec<String> = p
                .guarantees
                .iter()
                .filter(|g| g.kept_by.len() == 1)
                .map(|g| g.guarantee.name())
                .collect();
            format!(
                "verdict: strict mode starts workers here; every guarantee is kept{}",
                if single.is_empty() {
                    " by two or more layers".to_string()
                } else {
                    format!(" (by one layer only: {})", single.join(", "))
                }
            )
        }
        (Ok(_), Err(e)) => {
            format!("verdict: strict mode starts workers here, but refuses subprocess.run: {e}")
        }
        (Err(e), _) => format!("verdict: strict mode refuses workers here: {e}"),
    }
}
