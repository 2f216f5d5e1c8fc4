//! Guarantees decide, not layers: what a worker is promised, and which of the
//! mechanisms applied to it (Landlock at this ABI, seccomp rules, each
//! namespace, rlimits, pids and memory cgroups) carry each promise. Built from the
//! derived policy and the probe, in the spirit of rust-landlock's
//! compatibility levels: facts → mechanisms applied → guarantees kept, and by
//! how many independent layers.
//!
//! Strict mode starts a worker only when every guarantee its manifest needs is
//! kept by at least one mechanism; otherwise it refuses, naming the guarantee,
//! the missing mechanisms and what to change. Best-effort mode starts and
//! reports exactly the guarantees lost. Every degraded message is written
//! from this model.

use serde::Serialize;

/// What a worker is promised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Guarantee {
    /// File reads limited to the grants.
    FileReads,
    /// File writes limited to the scratch folder and a writable workspace.
    FileWrites,
    /// Host files' metadata (mode, owner, times) untouched.
    HostMetadata,
    /// No network without `network.outbound`.
    Network,
    /// With `network.outbound` and `tcp_ports`: TCP only to those ports.
    TcpPorts,
    /// No host unix sockets by path.
    UnixSockets,
    /// No abstract unix sockets outside the sandbox.
    AbstractUnixSockets,
    /// No signals or ptrace to processes outside the sandbox.
    Signals,
    /// No new processes without `subprocess.run`.
    ProcessCreation,
    /// No exec of other programs without `subprocess.run`.
    Exec,
    /// A bounded number of tasks (processes and threads).
    Tasks,
    /// Bounded memory.
    Memory,
    /// Bounded CPU time.
    CpuTime,
    /// Nothing the worker started outlives its unload.
    Lifetime,
    /// No privilege gain: no capabilities, no_new_privs, no setuid or setgid bit set.
    NoPrivilegeGain,
    /// No root identity: the worker runs as a uid that is not 0 (a root
    /// runner's worker as a uid of its own).
    UnprivilegedIdentity,
}

impl Guarantee {
    pub fn describe(self) -> &'static str {
        match self {
            Guarantee::FileReads => "file reads limited to the grants",
            Guarantee::FileWrites => {
                "file writes limited to the scratch folder and a writable workspace"
            }
            Guarantee::HostMetadata => "host files' mode, owner and times untouched",
            Guarantee::Network => "no network without network.outbound",
            Guarantee::TcpPorts => "TCP only to the operator's tcp_ports",
            Guarantee::UnixSockets => "no host unix sockets by path",
            Guarantee::AbstractUnixSockets => "no abstract unix sockets outside the sandbox",
            Guarantee::Signals => "no signals or ptrace to processes outside the sandbox",
            Guarantee::ProcessCreation => "no new processes without subprocess.run",
            Guarantee::Exec => "no exec of other programs without subprocess.run",
            Guarantee::Tasks => "a bounded number of tasks (processes and threads)",
            Guarantee::Memory => "bounded memory",
            Guarantee::CpuTime => "bounded CPU time",
            Guarantee::Lifetime => "nothing the worker started outlives its unload",
            Guarantee::NoPrivilegeGain => "no privilege gain (capabilities, setuid or setgid bits)",
            Guarantee::UnprivilegedIdentity => {
                "no root identity: the worker runs as an unprivileged uid (no root ownership of files, RLIMIT_NPROC binds it)"
            }
        }
    }

    /// Its name in messages (`file_reads`).
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// A kernel mechanism that can carry a guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Mechanism {
    /// Landlock filesystem rules (ABI 1).
    Landlock,
    /// Landlock's TRUNCATE right (ABI 3).
    LandlockTruncate,
    /// Landlock TCP bind/connect rules (ABI 4).
    LandlockTcp,
    /// Landlock scopes: abstract unix sockets, signals (ABI 6).
    LandlockScopes,
    /// The seccomp allowlist.
    Seccomp,
    /// Seccomp: no chown at all, chmod and utime refused or supervised (done
    /// by the runner beneath the writable grants only; applied without a
    /// mount namespace).
    SeccompNoMetadata,
    /// Seccomp: signals only to the worker's own process group (applied
    /// without a pid namespace and Landlock scopes).
    SeccompOwnSignals,
    /// Seccomp: no mode with a setuid or setgid bit (chmod family, open, creat).
    SeccompNoSetid,
    /// Seccomp: no `socket(AF_UNIX)` at all (applied where unix sockets are
    /// not allowed: without a private root, or with abstract names in reach).
    SeccompNoUnix,
    /// The mount namespace with every host mount read-only.
    MountNamespace,
    /// The private root of the mount namespace (`root.rs`): only what is
    /// granted exists in the worker's file system; Landlock's rules name the
    /// same grants, independently.
    PrivateRoot,
    PidNamespace,
    NetNamespace,
    /// Resource limits (CPU time, open files, file size, core dumps).
    Rlimits,
    /// RLIMIT_NPROC (binds every uid but 0).
    RlimitNproc,
    /// RLIMIT_AS: address space, reservations included (the fallback
    /// memory bound where no memory cgroup can be made, at
    /// `ADDRESS_SPACE_PER_MEMORY` × `memory_bytes` by default): it bounds
    /// resident memory only at that, looser, figure.
    RlimitAs,
    /// A pids cgroup with the process limit (`pids.max`).
    PidsCgroup,
    /// A memory cgroup with the memory limit (`memory.max`, v1
    /// `memory.limit_in_bytes`).
    MemoryCgroup,
    /// A session of its own, setsid/setpgid denied (seccomp, applied without
    /// a pid namespace), the group killed at unload.
    ProcessGroup,
    /// Capabilities dropped and no_new_privs.
    NoNewPrivileges,
    /// An unprivileged uid: the runner's own, or for a root runner one of
    /// its own from `worker_ids`.
    OwnUid,
}

impl Mechanism {
    pub fn describe(self) -> &'static str {
        match self {
            Mechanism::Landlock => "Landlock",
            Mechanism::LandlockTruncate => "Landlock TRUNCATE (ABI 3)",
            Mechanism::LandlockTcp => "Landlock TCP rules (ABI 4)",
            Mechanism::LandlockScopes => "Landlock scopes (ABI 6)",
            Mechanism::Seccomp => "the seccomp allowlist",
            Mechanism::SeccompNoMetadata => "seccomp's metadata rules",
            Mechanism::SeccompOwnSignals => "seccomp's own-process-group signal rule",
            Mechanism::SeccompNoSetid => "seccomp's setuid/setgid mode denial",
            Mechanism::SeccompNoUnix => "seccomp's unix socket denial",
            Mechanism::MountNamespace => "a read-only mount namespace",
            Mechanism::PrivateRoot => "the private root (only the grants exist)",
            Mechanism::PidNamespace => "a pid namespace",
            Mechanism::NetNamespace => "a network namespace",
            Mechanism::Rlimits => "rlimits",
            Mechanism::RlimitNproc => "RLIMIT_NPROC",
            Mechanism::RlimitAs => "RLIMIT_AS (address space, not resident memory)",
            Mechanism::PidsCgroup => "a pids cgroup",
            Mechanism::MemoryCgroup => "a memory cgroup",
            Mechanism::ProcessGroup => "the worker's own process group",
            Mechanism::NoNewPrivileges => "dropped capabilities and no_new_privs",
            Mechanism::OwnUid => "a uid of its own (worker_ids)",
        }
    }
}

/// One mechanism that could carry a guarantee and is not applied, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    pub mechanism: Mechanism,
    pub why: String,
    /// Missing only because the operator policy switched a layer off.
    pub by_operator: bool,
}

/// One guarantee: kept by which mechanisms, and which others are missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuaranteeStatus {
    pub guarantee: Guarantee,
    pub kept_by: Vec<Mechanism>,
    pub missing: Vec<Missing>,
}

impl GuaranteeStatus {
    pub fn kept(&self) -> bool {
        !self.kept_by.is_empty()
    }

    /// `signals: lost (a pid namespace: …; Landlock scopes (ABI 6): …)`.
    pub fn loss(&self) -> String {
        let why: Vec<String> = self
            .missing
            .iter()
            .map(|m| format!("{}: {}", m.mechanism.describe(), m.why))
            .collect();
        format!(
            "{}: lost, {} ({})",
            self.guarantee.name(),
            self.guarantee.describe(),
            why.join("; ")
        )
    }
}

/// Why a mechanism is not applied, and whether the operator policy chose that.
pub type Absence = (String, bool);

/// Whether each mechanism is applied, and why not where it is not.
pub struct Applied {
    entries: Vec<(Mechanism, Option<Absence>)>,
}

impl Applied {
    pub fn new() -> Applied {
        Applied {
            entries: Vec::new(),
        }
    }

    /// Records `m` as applied when `why_not` is None.
    pub fn set(&mut self, m: Mechanism, why_not: Option<Absence>) {
        self.entries.push((m, why_not));
    }

    fn get(&self, m: Mechanism) -> Result<(), Absence> {
        match self.entries.iter().find(|(k, _)| *k == m) {
            Some((_, None)) => Ok(()),
            Some((_, Some(why))) => Err(why.clone()),
            None => Err(("not applied".into(), false)),
        }
    }

    /// The status of `g`, carried by any of `carriers`.
    pub fn status(&self, g: Guarantee, carriers: &[Mechanism]) -> GuaranteeStatus {
        let mut s = GuaranteeStatus {
            guarantee: g,
            kept_by: Vec::new(),
            missing: Vec::new(),
        };
        for m in carriers {
            match self.get(*m) {
                Ok(()) => s.kept_by.push(*m),
                Err((why, by_operator)) => s.missing.push(Missing {
                    mechanism: *m,
                    why,
                    by_operator,
                }),
            }
        }
        s
    }
}

impl Default for Applied {
    fn default() -> Self {
        Applied::new()
    }
}

/// What a worker with these capabilities needs, and what carries each.
pub struct Needs {
    pub network_outbound: bool,
    pub tcp_ports: bool,
    pub subprocess_run: bool,
}

/// The guarantees `needs` asks for, each with its carriers.
pub fn carriers(needs: &Needs) -> Vec<(Guarantee, Vec<Mechanism>)> {
    use Guarantee as G;
    use Mechanism as M;
    let mut v = vec![
        (G::FileReads, vec![M::Landlock, M::PrivateRoot]),
        (G::FileWrites, vec![M::Landlock, M::MountNamespace]),
        (
            G::HostMetadata,
            vec![M::MountNamespace, M::SeccompNoMetadata],
        ),
    ];
    if !needs.network_outbound {
        v.push((
            G::Network,
            vec![M::Seccomp, M::NetNamespace, M::LandlockTcp],
        ));
    } else if needs.tcp_ports {
        v.push((G::TcpPorts, vec![M::LandlockTcp]));
    }
    v.push((G::UnixSockets, vec![M::SeccompNoUnix, M::PrivateRoot]));
    v.push((
        G::AbstractUnixSockets,
        vec![M::SeccompNoUnix, M::NetNamespace, M::LandlockScopes],
    ));
    v.push((
        G::Signals,
        vec![M::LandlockScopes, M::PidNamespace, M::SeccompOwnSignals],
    ));
    if !needs.subprocess_run {
        v.push((G::ProcessCreation, vec![M::Seccomp]));
        v.push((G::Exec, vec![M::Landlock]));
    }
    v.push((G::Tasks, vec![M::RlimitNproc, M::PidsCgroup]));
    v.push((G::Memory, vec![M::MemoryCgroup, M::RlimitAs]));
    v.push((G::CpuTime, vec![M::Rlimits]));
    v.push((
        G::Lifetime,
        vec![
            M::ProcessGroup,
            M::PidNamespace,
            M::PidsCgroup,
            M::MemoryCgroup,
        ],
    ));
    v.push((
        G::NoPrivilegeGain,
        vec![M::NoNewPrivileges, M::SeccompNoSetid],
    ));
    v.push((G::UnprivilegedIdentity, vec![M::OwnUid]));
    v
}

/// Every guarantee `needs` asks for, as `applied` carries it. A guarantee
/// needing several mechanisms at once (no privilege gain: capabilities *and*
/// the setuid-bit rule) is listed with all of them and kept only with all.
pub fn assess(needs: &Needs, applied: &Applied) -> Vec<GuaranteeStatus> {
    carriers(needs)
        .into_iter()
        .map(|(g, ms)| {
            let mut s = applied.status(g, &ms);
            if g == Guarantee::NoPrivilegeGain && !s.missing.is_empty() {
                s.kept_by.clear();
            }
            s
        })
        .collect()
}

/// Strict mode's answer: the first guarantee lost, as an error message; None
/// when all are kept. A guarantee the operator gave up (one of its carriers
/// switched off by the operator policy) is reported, not refused; one kept
/// only with all its carriers (no privilege gain) is refused when any of
/// them is missing for another reason.
pub fn strict_refusal(statuses: &[GuaranteeStatus]) -> Option<String> {
    let lost = statuses.iter().find(|s| {
        !s.kept()
            && if s.guarantee == Guarantee::NoPrivilegeGain {
                // Kept only with all its carriers: lost by the operator's
                // choice only if every missing one was switched off.
                s.missing.iter().any(|m| !m.by_operator)
            } else {
                s.missing.iter().all(|m| !m.by_operator)
            }
    })?;
    Some(format!(
        "strict mode: {}; run where one of these is available, or set \"mode\": \"best-effort\" in the policy file (see docs/deploy.md)",
        lost.loss()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_privilege_gain_is_refused_when_a_carrier_is_missing_not_by_the_operator() {
        let both = [Mechanism::NoNewPrivileges, Mechanism::SeccompNoSetid];
        let lost = |seccomp_by_operator: bool| {
            let mut a = Applied::new();
            a.set(
                Mechanism::NoNewPrivileges,
                Some(("Landlock off".into(), true)),
            );
            a.set(
                Mechanism::SeccompNoSetid,
                Some(("no seccomp".into(), seccomp_by_operator)),
            );
            a.status(Guarantee::NoPrivilegeGain, &both)
        };
        let s = lost(false);
        assert!(!s.kept(), "{s:?}");
        assert!(strict_refusal(&[s]).is_some());
        // Both switched off by the operator: reported, not refused.
        assert!(strict_refusal(&[lost(true)]).is_none());
    }

    #[test]
    fn a_guarantee_is_kept_by_any_carrier_and_lost_without_one() {
        let mut a = Applied::new();
        a.set(Mechanism::Landlock, None);
        a.set(Mechanism::MountNamespace, Some(("refused".into(), false)));
        let s = a.status(
            Guarantee::FileWrites,
            &[Mechanism::Landlock, Mechanism::MountNamespace],
        );
        assert!(s.kept());
        assert_eq!(s.kept_by, vec![Mechanism::Landlock]);
        let s = a.status(Guarantee::HostMetadata, &[Mechanism::MountNamespace]);
        assert!(!s.kept());
        assert!(s.loss().contains("host_metadata: lost"), "{}", s.loss());
        assert!(s.loss().contains("refused"), "{}", s.loss());
        assert!(strict_refusal(&[s]).is_some());
    }

    #[test]
    fn a_loss_the_operator_chose_is_reported_but_not_refused() {
        let mut a = Applied::new();
        a.set(Mechanism::Landlock, Some(("switched off".into(), true)));
        let s = a.status(Guarantee::FileReads, &[Mechanism::Landlock]);
        assert!(!s.kept());
        assert!(strict_refusal(&[s]).is_none());
    }

    #[test]
    fn needs_follow_the_capabilities() {
        let g = |n: &Needs| -> Vec<Guarantee> { carriers(n).into_iter().map(|(g, _)| g).collect() };
        let none = Needs {
            network_outbound: false,
            tcp_ports: false,
            subprocess_run: false,
        };
        assert!(g(&none).contains(&Guarantee::Network));
        assert!(g(&none).contains(&Guarantee::Exec));
        let net = Needs {
            network_outbound: true,
            tcp_ports: true,
            subprocess_run: true,
        };
        assert!(!g(&net).contains(&Guarantee::Network));
        assert!(g(&net).contains(&Guarantee::TcpPorts));
        assert!(!g(&net).contains(&Guarantee::Exec));
    }
}
