//! Deciding, separate from doing: the confinement of one worker as a pure
//! function of (manifest, operator policy, facts about the entry program and
//! the kernel). Nothing here touches the system; `ext-runner policy` prints the
//! result, and `launch.rs` turns it into kernel objects.
//!
//! The capability → rule mapping itself is data: `policies/base.json` and
//! `policies/capabilities.json`, built into the binary and parsed once
//! (`data.rs`). `derive` is a short sequence of steps (`steps.rs`), each a
//! small pure function with its own table tests; `render.rs` prints a policy.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, SandboxKind};
use crate::extension::capabilities::Capability;
use crate::extension::manifest::Manifest;
use crate::extension::provenance::TrustClass;
use crate::sandbox::egress::{self, EgressPlan, EgressSection};
use crate::sandbox::guarantees::{self, GuaranteeStatus, Needs};
use crate::sandbox::probe::Probe;

mod data;
mod guarantee_steps;
mod render;
mod steps;

pub use guarantee_steps::strict_verdict;

pub use data::{BASE_JSON, CAPABILITIES_JSON};

/// Landlock ABI needed for every rule we derive: 6 adds the abstract-socket and signal scopes.
pub const LANDLOCK_ABI_REQUIRED: u8 = 6;

/// How missing kernel features are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Mode {
    /// A worker does not start when a layer its policy needs is missing.
    #[default]
    Strict,
    /// Start with what the kernel has; say what is degraded.
    BestEffort,
}

/// The four independent confinement layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Layer {
    /// Filesystem, TCP port and scope rules.
    Landlock,
    /// The system call allowlist.
    Seccomp,
    /// User, mount, pid, net, ipc and uts namespaces.
    Namespaces,
    /// rlimits and the pids cgroup.
    Limits,
}

impl Layer {
    pub const ALL: [Layer; 4] = [
        Layer::Landlock,
        Layer::Seccomp,
        Layer::Namespaces,
        Layer::Limits,
    ];

    /// The name used in policy files and reports, e.g. `"seccomp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
            Layer::Namespaces => "namespaces",
            Layer::Limits => "limits",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// How much one layer is needed, in the spirit of rust-landlock's
/// `CompatLevel`: what happens when this kernel cannot enforce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Requirement {
    /// Use what the kernel offers (possibly part of the layer, possibly
    /// nothing) and report what is lost.
    BestEffort,
    /// Wanted, but what it keeps is also kept by other layers: start
    /// without it and report the loss.
    Soft,
    /// The worker does not start without it.
    Hard,
}

impl Requirement {
    pub const ALL: [Requirement; 3] = [
        Requirement::BestEffort,
        Requirement::Soft,
        Requirement::Hard,
    ];

    /// What `mode` asks of `layer`. Strict mode needs every layer but the
    /// namespaces, whose guarantees the others cover (see their note).
    pub fn of(mode: Mode, layer: Layer) -> Requirement {
        match (mode, layer) {
            (Mode::BestEffort, _) => Requirement::BestEffort,
            (Mode::Strict, Layer::Namespaces) => Requirement::Soft,
            (Mode::Strict, _) => Requirement::Hard,
        }
    }
}

/// Resource limits (rlimits; the process limit also through a pids cgroup
/// when root; memory through a memory cgroup where one can be made, else
/// RLIMIT_AS, see [`AddressSpace`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Limits {
    pub memory_bytes: u64,
    /// RLIMIT_AS as the operator sets it; None (the default): not set where
    /// a memory cgroup holds the worker, else [`ADDRESS_SPACE_PER_MEMORY`]
    /// × `memory_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_space_bytes: Option<u64>,
    pub cpu_seconds: u64,
    pub processes: u64,
    pub open_files: u64,
    pub file_size_bytes: u64,
    pub core_bytes: u64,
    /// Size of the worker's private /dev/shm (a tmpfs in its private root).
    pub shm_bytes: u64,
}

/// The operator's overrides of the default [`Limits`], each optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct LimitOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_space_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_bytes: Option<u64>,
}

impl LimitOverrides {
    /// These overrides with `other`'s on top, name by name.
    pub fn then(self, other: &LimitOverrides) -> LimitOverrides {
        LimitOverrides {
            memory_bytes: other.memory_bytes.or(self.memory_bytes),
            address_space_bytes: other.address_space_bytes.or(self.address_space_bytes),
            cpu_seconds: other.cpu_seconds.or(self.cpu_seconds),
            processes: other.processes.or(self.processes),
            open_files: other.open_files.or(self.open_files),
            file_size_bytes: other.file_size_bytes.or(self.file_size_bytes),
            core_bytes: other.core_bytes.or(self.core_bytes),
            shm_bytes: other.shm_bytes.or(self.shm_bytes),
        }
    }
}

impl Limits {
    /// These limits with the operator's overrides.
    pub fn overridden_by(self, o: &LimitOverrides) -> Limits {
        Limits {
            memory_bytes: o.memory_bytes.unwrap_or(self.memory_bytes),
            address_space_bytes: o.address_space_bytes.or(self.address_space_bytes),
            cpu_seconds: o.cpu_seconds.unwrap_or(self.cpu_seconds),
            processes: o.processes.unwrap_or(self.processes),
            open_files: o.open_files.unwrap_or(self.open_files),
            file_size_bytes: o.file_size_bytes.unwrap_or(self.file_size_bytes),
            core_bytes: o.core_bytes.unwrap_or(self.core_bytes),
            shm_bytes: o.shm_bytes.unwrap_or(self.shm_bytes),
        }
    }
}

/// RLIMIT_AS where it is the memory bound (no memory cgroup holds the
/// worker) and the operator set no `address_space_bytes`: this many times
/// `memory_bytes`. Address space is not memory: each thread reserves a stack
/// (8 MiB), OpenBLAS a 32 MiB buffer per thread that calls it, glibc 64 MiB
/// per malloc arena (`MALLOC_ARENA_MAX=2` in the worker's environment), all
/// mostly never touched. Measured (docs/deploy.md): 64 threads calling numpy
/// reserve 2.7 GiB for 75 MiB resident, 64 stdlib threads 607 MiB; 4 GiB
/// under the default 1 GiB starts them with room to spare, and still bounds
/// what a worker can make resident (at 4 × `memory_bytes`, not at
/// `memory_bytes`: the report says so).
pub const ADDRESS_SPACE_PER_MEMORY: u64 = 4;

/// The worker's RLIMIT_AS, and why that value or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AddressSpace {
    /// The limit (soft and hard); None: not set, the worker keeps the runner's own.
    pub bytes: Option<u64>,
    pub why: String,
}

/// Layers an operator may switch off (for the layer matrix, or a kernel without them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Layers {
    pub landlock: bool,
    pub seccomp: bool,
    pub namespaces: bool,
    pub limits: bool,
}

impl Default for Layers {
    fn default() -> Self {
        Layers {
            landlock: true,
            seccomp: true,
            namespaces: true,
            limits: true,
        }
    }
}

impl Layers {
    /// Whether the operator leaves `layer` on.
    pub fn on(&self, layer: Layer) -> bool {
        match layer {
            Layer::Landlock => self.landlock,
            Layer::Seccomp => self.seccomp,
            Layer::Namespaces => self.namespaces,
            Layer::Limits => self.limits,
        }
    }
}

/// The operator's policy file (`--policy FILE`). Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct OperatorPolicy {
    /// Folders a `--workspace` must lie in (when set, any other workspace is refused).
    pub workspace_roots: Vec<PathBuf>,
    /// Extra host folders every worker may read.
    pub read_only_paths: Vec<PathBuf>,
    /// TCP ports `network.outbound` may connect to; empty means any.
    pub tcp_ports: Vec<u16>,
    /// Overrides of the default limits.
    pub limits: LimitOverrides,
    pub mode: Mode,
    /// Capabilities each trust class may be granted; a missing class may have all.
    pub trust_classes: BTreeMap<TrustClass, Vec<Capability>>,
    pub layers: Layers,
    /// Egress by host name for `network.outbound` (`src/sandbox/egress.rs`):
    /// with it, the worker's only way out is the runner's proxy.
    pub egress: Option<EgressSection>,
    /// Variables every worker gets besides the built-in ones.
    pub environment: EnvironmentSection,
    /// Sections by manifest name, for one extension: its `read_only_paths`
    /// and `environment` add to the global ones, its `limits` override them
    /// name by name, its `tcp_ports` and `egress` replace them.
    pub extensions: BTreeMap<String, ExtensionSection>,
    /// Host ids for a root runner's workers: each worker runs as a uid and
    /// gid of its own from this range (absent or `true`: [`WorkerIds::DEFAULT`];
    /// `false`: as uid 0 without capabilities, reported).
    pub worker_ids: Option<WorkerIdsSetting>,
}

/// The operator's `worker_ids`: a range, or `true` (the default range) or
/// `false` (root's workers run as uid 0 without capabilities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WorkerIdsSetting {
    Range(WorkerIds),
    Switch(bool),
}

impl WorkerIdsSetting {
    /// The range root's workers take their ids from; None when switched off.
    pub fn range(setting: Option<&WorkerIdsSetting>) -> Option<WorkerIds> {
        match setting {
            None | Some(WorkerIdsSetting::Switch(true)) => Some(WorkerIds::DEFAULT),
            Some(WorkerIdsSetting::Range(r)) => Some(*r),
            Some(WorkerIdsSetting::Switch(false)) => None,
        }
    }
}

/// A range of host uids (and the same gids) that no account uses: a root
/// runner gives each worker one of them, as Android gives each app its own
/// uid, so no worker has root's power and RLIMIT_NPROC bounds each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WorkerIds {
    /// The first uid (and gid) of the range; at least 1000.
    pub first: u32,
    /// How many ids, at most one worker each at a time.
    pub count: u32,
}

impl WorkerIds {
    /// The `count` ids from `first` on (see [`check`](Self::check)).
    pub fn new(first: u32, count: u32) -> WorkerIds {
        WorkerIds { first, count }
    }

    /// The default range: 65536 ids from 1879048192 (0x70000000), above
    /// systemd's dynamic (61184–65519) and container (524288–1879048191)
    /// ranges and below 2^31 (tools that read a uid as signed).
    pub const DEFAULT: WorkerIds = WorkerIds {
        first: 1_879_048_192,
        count: 65_536,
    };

    /// How many ids a range derived from the runner's id maps takes at most
    /// ([`IdentityFacts::derived_worker_ids`]): as many workers at a time.
    pub const DERIVED_COUNT: u32 = 1024;

    /// The last id of the range.
    pub fn last(&self) -> u64 {
        u64::from(self.first) + u64::from(self.count) - 1
    }

    /// Whether `id` is in the range.
    pub fn contains(&self, id: u32) -> bool {
        (u64::from(self.first)..u64::from(self.first) + u64::from(self.count))
            .contains(&u64::from(id))
    }

    /// Whether the range is usable: not root's or a system account's, no
    /// wrap-around, not the overflow id 65534 nor -1.
    pub fn check(&self) -> std::result::Result<(), String> {
        let end = u64::from(self.first) + u64::from(self.count);
        if self.first < 1000 || self.count == 0 || end > u64::from(u32::MAX) {
            return Err(format!(
                "worker_ids {{\"first\": {}, \"count\": {}}} must be a non-empty range of ids from 1000 up, below 4294967295",
                self.first, self.count
            ));
        }
        if (u64::from(self.first)..end).contains(&65534) {
            return Err("worker_ids must not contain 65534 (nobody, the overflow id)".into());
        }
        Ok(())
    }
}

/// The operator's `environment`: variables passed on from the runner's own
/// environment (when set there), and variables set to a value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct EnvironmentSection {
    pub pass: Vec<String>,
    pub set: BTreeMap<String, String>,
}

/// What the operator's policy says for one extension (`"extensions": {"name": {…}}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ExtensionSection {
    pub read_only_paths: Vec<PathBuf>,
    pub limits: LimitOverrides,
    pub tcp_ports: Option<Vec<u16>>,
    pub environment: EnvironmentSection,
    pub egress: Option<EgressSection>,
}

/// Variables the runner itself decides: an operator may neither pass nor set them.
const RUNNER_VARIABLES: &[&str] = &["HOME", "TMPDIR", "NODUS_EXTENSION_CAPABILITIES"];

impl OperatorPolicy {
    /// The egress section that applies to extension `name`.
    pub fn egress_for(&self, name: &str) -> Option<&EgressSection> {
        match self.extensions.get(name).and_then(|e| e.egress.as_ref()) {
            Some(e) => Some(e),
            None => self.egress.as_ref(),
        }
    }

    /// The policy for extension `name`: the global one with its section
    /// (if any) applied, and no sections left.
    pub fn for_extension(&self, name: &str) -> OperatorPolicy {
        let mut p = self.clone();
        p.extensions.clear();
        if let Some(e) = self.extensions.get(name) {
            p.read_only_paths.extend(e.read_only_paths.iter().cloned());
            p.limits = p.limits.then(&e.limits);
            if let Some(ports) = &e.tcp_ports {
                p.tcp_ports = ports.clone();
            }
            p.environment
                .pass
                .extend(e.environment.pass.iter().cloned());
            p.environment.set.extend(
                e.environment
                    .set
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            if e.egress.is_some() {
                p.egress = e.egress.clone();
            }
        }
        p
    }

    /// What is wrong with one section's paths and variables.
    fn check_parts(
        read_only_paths: &[PathBuf],
        env: &EnvironmentSection,
    ) -> std::result::Result<(), String> {
        for p in read_only_paths {
            let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            if [p, &real].iter().any(|q| q.starts_with("/proc")) {
                return Err(format!(
                    "read_only_paths: {} is the host's /proc (for /proc/self, the runner's own entry): it is never granted; every worker with a mount namespace has a /proc of its own pid namespace in its private root",
                    p.display()
                ));
            }
        }
        for name in env.pass.iter().chain(env.set.keys()) {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(format!("environment: '{name}' is not a variable name"));
            }
            if RUNNER_VARIABLES.contains(&name.as_str()) {
                return Err(format!(
                    "environment: {name} is set by the runner itself (known: {})",
                    RUNNER_VARIABLES.join(", ")
                ));
            }
        }
        if let Some(v) = env.set.values().find(|v| v.contains('\0')) {
            return Err(format!("environment: a value holds a NUL byte: {v:?}"));
        }
        Ok(())
    }

    /// Reads and checks a policy file: an unknown field, limit, trust class
    /// or capability is refused, and so is a malformed egress section.
    pub fn load(path: &Path) -> Result<OperatorPolicy> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::sandbox_io(
                SandboxKind::OperatorPolicy,
                format!("cannot read policy file {}: {e}", path.display()),
                e,
            )
        })?;
        let policy: OperatorPolicy = serde_json::from_str(&text).map_err(|e| {
            Error::sandbox(
                SandboxKind::OperatorPolicy,
                format!("policy file {} is invalid: {e}", path.display()),
            )
        })?;
        if let Some(WorkerIdsSetting::Range(ids)) = &policy.worker_ids {
            ids.check().map_err(|e| {
                Error::sandbox(
                    SandboxKind::OperatorPolicy,
                    format!("policy file {}: {e}", path.display()),
                )
            })?;
        }
        if let Some(e) = &policy.egress {
            egress::check_section(e).map_err(|e| {
                Error::sandbox(
                    SandboxKind::OperatorPolicy,
                    format!("policy file {}: {e}", path.display()),
                )
            })?;
        }
        let bad = |what: String| {
            Error::sandbox(
                SandboxKind::OperatorPolicy,
                format!("policy file {}: {what}", path.display()),
            )
        };
        Self::check_parts(&policy.read_only_paths, &policy.environment).map_err(bad)?;
        for (name, e) in &policy.extensions {
            Self::check_parts(&e.read_only_paths, &e.environment)
                .map_err(|w| bad(format!("extensions.{name}: {w}")))?;
            if let Some(eg) = &e.egress {
                egress::check_section(eg).map_err(|w| bad(format!("extensions.{name}: {w}")))?;
            }
        }
        Ok(policy)
    }
}

/// Facts the derivation needs about the worker's program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramFacts {
    /// The file exec'd (interpreter or native entry), canonical.
    pub program: PathBuf,
    /// Its ELF interpreter (dynamic loader), if any.
    pub loader: Option<PathBuf>,
    /// Folders the program reads its runtime from (interpreter prefix, venv).
    pub runtime_dirs: Vec<PathBuf>,
}

/// An id that an account of the system's account files names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[non_exhaustive]
pub struct AccountId {
    pub id: u32,
    /// Who names it, in words: `user alice's uid`, `user alice's primary
    /// gid`, `group staff's gid`.
    pub account: String,
}

impl AccountId {
    pub fn new(id: u32, account: impl Into<String>) -> AccountId {
        AccountId {
            id,
            account: account.into(),
        }
    }

    /// The ids named by the lines of an `/etc/passwd` (each user's uid and
    /// primary gid) and an `/etc/group` (each group's gid), sorted by id.
    /// Lines that are empty, comments (`#`), NIS compat entries (`+`, `-`)
    /// or malformed (too few fields, an id that is not a number) are passed
    /// over: each well-formed line's ids count, whatever the rest says.
    pub fn parse(passwd: &str, group: &str) -> Vec<AccountId> {
        Self::parse_where(passwd, group, |_| true)
    }

    /// [`parse`](Self::parse), keeping only the ids `keep` takes (only those
    /// are named in words: a large file costs little).
    pub fn parse_where(passwd: &str, group: &str, keep: impl Fn(u32) -> bool) -> Vec<AccountId> {
        let mut out = Vec::new();
        // The first `N` fields of a line that is an entry.
        fn fields<const N: usize>(line: &str) -> Option<[&str; N]> {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with(['#', '+', '-']) {
                return None;
            }
            let mut f = line.splitn(N + 1, ':');
            let mut out = [""; N];
            for slot in &mut out {
                *slot = f.next()?;
            }
            Some(out)
        }
        let id = |f: &str| -> Option<u32> {
            (!f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
                .then(|| f.parse().ok())
                .flatten()
                .filter(|&i| keep(i))
        };
        for [name, _, uid, gid] in passwd.lines().filter_map(fields::<4>) {
            if let Some(uid) = id(uid) {
                out.push(AccountId::new(uid, format!("user {name}'s uid")));
            }
            if let Some(gid) = id(gid) {
                out.push(AccountId::new(gid, format!("user {name}'s primary gid")));
            }
        }
        for [name, _, gid] in group.lines().filter_map(fields::<3>) {
            if let Some(gid) = id(gid) {
                out.push(AccountId::new(gid, format!("group {name}'s gid")));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Those of `accounts` whose id is in `range`.
    pub fn within(accounts: &[AccountId], range: &WorkerIds) -> Vec<AccountId> {
        accounts
            .iter()
            .filter(|a| range.contains(a.id))
            .cloned()
            .collect()
    }

    /// How many distinct ids `accounts` name.
    pub fn distinct_ids(accounts: &[AccountId]) -> usize {
        let mut ids: Vec<u32> = accounts.iter().map(|a| a.id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// `accounts` (sorted) in words, at most `most` ids: `1000 (user
    /// alice's uid, group alice's gid), 1001 (group staff's gid), 3 more ids`.
    pub fn words(accounts: &[AccountId], most: usize) -> String {
        let mut ids: Vec<(u32, Vec<&str>)> = Vec::new();
        for a in accounts {
            match ids.last_mut() {
                Some((id, names)) if *id == a.id => names.push(&a.account),
                _ => ids.push((a.id, vec![&a.account])),
            }
        }
        let mut w: Vec<String> = ids
            .iter()
            .take(most)
            .map(|(id, names)| format!("{id} ({})", names.join(", ")))
            .collect();
        match ids.len().saturating_sub(most) {
            0 => {}
            1 => w.push("1 more id".into()),
            n => w.push(format!("{n} more ids")),
        }
        w.join(", ")
    }
}

/// Facts that decide whether a root runner's worker can run as a uid of its
/// own (`probe::identity_facts`); all empty for a runner that is not root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityFacts {
    /// A folder on the way to the program, its runtime or the extension
    /// folder that other users cannot enter (a 0700 `/root`): only the
    /// private root's binds, made while still root, get past it.
    pub closed_on_the_way: Option<PathBuf>,
    /// The program or its runtime that other users cannot read (or run)
    /// itself, bound or not.
    pub closed_itself: Option<PathBuf>,
    /// The extension folder (or its `extension.py`) other users cannot
    /// read: shown to the worker through an idmapped mount where one can be
    /// made (`extension_idmap`).
    pub extension_closed: bool,
    /// Whether the extension folder can be idmapped (asked only when closed).
    pub extension_idmap: Option<std::result::Result<(), String>>,
    /// The uids the runner's user namespace maps, as (first, count) ranges
    /// of `/proc/self/uid_map`; empty: not read (every uid counts as mapped).
    pub mapped_uids: Vec<(u32, u32)>,
    /// The gids it maps (`/proc/self/gid_map`), likewise; empty: not read
    /// (every gid counts as mapped).
    pub mapped_gids: Vec<(u32, u32)>,
    /// Ids a range derived from the maps avoids besides 0, 65534, 65535 and
    /// those below 1000: the kernel's overflow ids
    /// (`/proc/sys/kernel/overflowuid`, `overflowgid`) and the runner's own
    /// uids, gids and supplementary groups.
    pub reserved_ids: Vec<u32>,
    /// The ids the system's account files name (`/etc/passwd`: each user's
    /// uid and primary gid; `/etc/group`: each group's gid), as the runner
    /// sees them (inside a container, the container's): a derived range
    /// avoids them, and no worker is given one (`launch::IdLease`), so no
    /// worker shares an account's files or processes. Only the files are
    /// read: accounts that NSS alone knows (LDAP, SSSD, systemd's dynamic
    /// users) are not seen (docs/deploy.md).
    pub accounts: Vec<AccountId>,
    /// Whether the workspace can be shown to another uid through an
    /// idmapped mount: None when not asked (no workspace, not root), else
    /// why not.
    pub workspace_idmap: Option<std::result::Result<(), String>>,
    /// Whether the workspace can be lent to another uid with ACL entries
    /// (`acl::usable`), where it cannot be idmapped: None when not asked,
    /// else why not.
    pub workspace_acl: Option<std::result::Result<(), String>>,
}

impl IdentityFacts {
    /// Whether every id of `r` is mapped in the runner's user namespace, as
    /// a uid and as a gid (the worker takes both).
    pub fn maps(&self, r: &WorkerIds) -> bool {
        let within = |map: &[(u32, u32)]| {
            map.is_empty()
                || map.iter().any(|&(first, count)| {
                    u64::from(first) <= u64::from(r.first)
                        && u64::from(r.first) + u64::from(r.count)
                            <= u64::from(first) + u64::from(count)
                })
        };
        within(&self.mapped_uids) && within(&self.mapped_gids)
    }

    /// A range for root's workers taken from the ids the runner's user
    /// namespace maps, for when the default range is not mapped (rootless
    /// Podman, a Kubernetes pod with `hostUsers: false`): ids mapped both as
    /// uids and as gids, none below 1000 (root and system accounts), not
    /// 65534 (nobody, the overflow id every unmapped owner appears as) nor
    /// 65535 (the 16-bit -1), nor one of [`reserved_ids`](Self::reserved_ids)
    /// or of [`accounts`](Self::accounts).
    /// Of the runs of such ids, the highest one that holds
    /// [`WorkerIds::DERIVED_COUNT`] ids gives its top `DERIVED_COUNT`; when
    /// none does, the longest run (the higher of equals) entire. The top,
    /// because a container's own accounts are handed out from the bottom
    /// (system accounts below 1000, `useradd` from 1000 up): in a 0..65535
    /// mapping, 64510..65533. None when the maps were not read or no such
    /// id is mapped (only 0 and 65534).
    pub fn derived_worker_ids(&self) -> Option<WorkerIds> {
        if self.mapped_uids.is_empty() {
            return None;
        }
        let spans = |map: &[(u32, u32)]| -> Vec<(u64, u64)> {
            map.iter()
                .map(|&(f, c)| (u64::from(f), u64::from(f) + u64::from(c)))
                .collect()
        };
        let uids = spans(&self.mapped_uids);
        let gids = if self.mapped_gids.is_empty() {
            vec![(0, u64::from(u32::MAX))]
        } else {
            spans(&self.mapped_gids)
        };
        // Mapped both ways, from 1000 up and below (uid_t)-1.
        let mut both: Vec<(u64, u64)> = Vec::new();
        for &(a, b) in &uids {
            for &(c, d) in &gids {
                let (lo, hi) = (a.max(c).max(1000), b.min(d).min(u64::from(u32::MAX)));
                if lo < hi {
                    both.push((lo, hi));
                }
            }
        }
        let mut avoid: Vec<u64> = [65534u64, 65535]
            .into_iter()
            .chain(self.reserved_ids.iter().map(|&i| u64::from(i)))
            .chain(self.accounts.iter().map(|a| u64::from(a.id)))
            .collect();
        avoid.sort_unstable();
        avoid.dedup();
        // Runs of usable ids: each mapped span cut at every avoided id.
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (lo, hi) in both {
            let mut start = lo;
            for &x in avoid.iter().filter(|&&x| lo <= x && x < hi) {
                if start < x {
                    runs.push((start, x));
                }
                start = start.max(x + 1);
            }
            if start < hi {
                runs.push((start, hi));
            }
        }
        let want = u64::from(WorkerIds::DERIVED_COUNT);
        let (lo, hi) = match runs
            .iter()
            .filter(|(lo, hi)| hi - lo >= want)
            .max_by_key(|r| r.1)
        {
            Some(&(_, hi)) => (hi - want, hi),
            None => *runs.iter().max_by_key(|(lo, hi)| (hi - lo, *hi))?,
        };
        Some(WorkerIds::new(
            u32::try_from(lo).ok()?,
            u32::try_from(hi - lo).ok()?,
        ))
    }
}

/// One filesystem grant (a Landlock path rule; a writable bind in the mount namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FsRule {
    pub path: PathBuf,
    pub access: Access,
    pub why: String,
}

/// Access classes, each a fixed set of Landlock rights (see `launch.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Access {
    /// Read files and list folders.
    Read,
    /// Read, and execute files (only where exec is granted).
    ReadExec,
    /// Execute this one file (and read it).
    ExecFile,
    /// Read and write one device file.
    ReadWriteFile,
    /// Everything inside the folder: create, write, remove, rename within.
    Write,
}

/// A seccomp decision about one system call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SyscallRule {
    pub name: String,
    /// Its number on this architecture (resolved when the data is loaded).
    #[serde(skip)]
    pub number: i64,
    pub action: SyscallAction,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyscallAction {
    Allow,
    /// Allowed when its arguments pass the condition.
    AllowIf(Condition),
    /// Fails with this errno.
    Errno(Errno),
    /// Sent to the runner's supervisor (SECCOMP_RET_USER_NOTIF), which does
    /// the call itself when it is allowed (`supervisor.rs`) and answers.
    Supervised,
}

/// The errnos a seccomp rule may answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Errno {
    /// Denied (the default for any call not allowed).
    #[serde(rename = "EPERM")]
    Perm,
    /// "No such call": makes a library fall back to an older call.
    #[serde(rename = "ENOSYS")]
    NoSys,
    /// "Not supported": what callers treat as a feature the file system lacks.
    #[serde(rename = "EOPNOTSUPP")]
    OpNotSupp,
}

impl Errno {
    /// The C name, e.g. `"EPERM"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Errno::Perm => "EPERM",
            Errno::NoSys => "ENOSYS",
            Errno::OpNotSupp => "EOPNOTSUPP",
        }
    }

    /// The number on this system.
    pub fn raw(self) -> i32 {
        match self {
            Errno::Perm => libc::EPERM,
            Errno::NoSys => libc::ENOSYS,
            Errno::OpNotSupp => libc::EOPNOTSUPP,
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Argument checks on which a system call is allowed: it passes when every
/// check of any one group holds. Defined in `policies/base.json`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub struct Condition {
    /// Its name in the data, e.g. `clone_thread_only`.
    pub name: String,
    /// What it lets through, in words: `for threads only`.
    pub says: String,
    pub any_of: Vec<Vec<ArgCheck>>,
}

impl Condition {
    /// Whether every call this condition allows is allowed by `other` too
    /// (a sufficient check: each of our groups contains all the checks of
    /// one of `other`'s).
    pub fn implies(&self, other: &Condition) -> bool {
        self.any_of
            .iter()
            .all(|g| other.any_of.iter().any(|h| h.iter().all(|c| g.contains(c))))
    }
}

/// One check of one system call argument, as seccompiler compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub struct ArgCheck {
    /// The argument, 0 to 5.
    pub index: u8,
    pub width: ArgWidth,
    pub op: ArgOp,
    pub value: u64,
}

/// How much of an argument is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ArgWidth {
    /// The low 32 bits (what the kernel reads of an `int` or `unsigned int`).
    Dword,
    /// All 64 bits.
    Qword,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ArgOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `arg & mask == value`.
    MaskedEq(u64),
}

/// Landlock scopes: IPC the worker may not reach outside its own domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Scope {
    /// Abstract unix sockets of processes outside the domain.
    AbstractUnixSocket,
    /// Signals to processes outside the domain.
    Signal,
}

impl Scope {
    /// The name in `policies/base.json`, e.g. `"signal"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::AbstractUnixSocket => "abstract_unix_socket",
            Scope::Signal => "signal",
        }
    }
}

/// One layer: how much it is needed, whether the operator wants it, and what
/// this kernel can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LayerReport {
    pub layer: Layer,
    pub requirement: Requirement,
    pub wanted: bool,
    pub enforceable: bool,
    /// What is lost when it is missing, and which other layer covers it.
    pub note: String,
}

/// The namespaces the worker is put in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[non_exhaustive]
pub struct Namespaces {
    pub user: bool,
    /// A mount namespace in which every mount is read-only but the scratch
    /// folder and a writable workspace: chmod, chown and utime of host files
    /// (which Landlock does not govern) fail with EROFS.
    pub mount: bool,
    pub pid: bool,
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
}

impl Policy {
    /// A private root without a procfs of its own (no pid namespace whose
    /// procfs may be mounted) binds the runner's /proc read-only, but only
    /// under Landlock: its ptrace restriction keeps the runner's
    /// `/proc/PID/mem`, `environ` and `maps` closed to a same-uid worker.
    pub fn binds_runner_proc(&self) -> bool {
        self.private_root.is_some_and(|r| !r.proc)
            && self.landlock.as_ref().is_some_and(|l| l.abi >= 1)
    }
}

/// The worker's private root (`root.rs`): read-only binds of what is
/// granted, the scratch folder at /tmp and /var/tmp, a minimal /dev, its own
/// /proc and passwd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PrivateRootPolicy {
    /// A procfs of the worker's own pid namespace at /proc (needs the pid
    /// namespace); without it the runner's /proc is bound read-only.
    pub proc: bool,
    /// A private devpts at /dev/pts with /dev/ptmx (subprocess.run).
    pub devpts: bool,
    /// Size of the private tmpfs at /dev/shm.
    pub shm_bytes: u64,
}

/// Everything decided about one worker. Printable; applied by `launch.rs`.
/// A layer that is `None` is not applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Policy {
    pub extension: String,
    pub mode: Mode,
    /// The declared capabilities, each once, sorted.
    pub capabilities: Vec<Capability>,
    /// What the worker may reach in the host's file system: Landlock's path
    /// rules, and the writable binds of the mount namespace.
    pub filesystem: Vec<FsRule>,
    pub landlock: Option<LandlockPolicy>,
    pub seccomp: Option<SeccompPolicy>,
    pub namespaces: Namespaces,
    /// The fresh root the worker sees in its mount namespace (`root.rs`);
    /// None without a mount namespace, where Landlock alone confines files.
    pub private_root: Option<PrivateRootPolicy>,
    pub limits: Option<Limits>,
    /// A pids cgroup to put the worker in (root: RLIMIT_NPROC does not bind uid 0).
    pub pids_cgroup: Option<String>,
    /// Where the worker's memory cgroup is made (`memory.max`, v1
    /// `memory.limit_in_bytes`): then the memory bound, and RLIMIT_AS is not
    /// set (address space is not memory: 64 MiB of reservation per malloc
    /// arena, a stack per thread). None: RLIMIT_AS is the bound.
    pub memory_cgroup: Option<String>,
    /// The worker's RLIMIT_AS and why; None where the limits layer is off.
    pub address_space: Option<AddressSpace>,
    /// The worker's environment; `$SCRATCH` stands for its private scratch folder.
    pub environment: BTreeMap<String, String>,
    /// Variables passed on from the runner's environment at launch, when set
    /// there (they win over `environment`).
    pub environment_pass: Vec<String>,
    pub layers: Vec<LayerReport>,
    /// Each guarantee the worker needs, and the mechanisms that keep it.
    pub guarantees: Vec<GuaranteeStatus>,
    /// A root runner's worker runs as a uid and gid of its own from this
    /// range (the operator's `worker_ids`, by default [`WorkerIds::DEFAULT`]);
    /// None: as the runner's uid.
    pub worker_ids: Option<WorkerIds>,
    /// Why `worker_ids` is a range derived from the runner's id maps (the
    /// default range is not mapped there), and how it was chosen; None: the
    /// default or the operator's range.
    pub worker_ids_derived: Option<String>,
    /// The accounts of the runner's `/etc/passwd` and `/etc/group` whose ids
    /// are in `worker_ids`: no worker is given those ids
    /// (`launch::IdLease::take`, which also reads the files again).
    pub worker_ids_accounts: Vec<AccountId>,
    /// Why a root runner's worker runs as uid 0 (without capabilities)
    /// nonetheless; None otherwise.
    pub root_identity: Option<String>,
    /// The workspace, shown to the worker's uid through an idmapped mount
    /// (its owner's uid and gid appear as the worker's).
    pub idmapped_workspace: Option<PathBuf>,
    /// The workspace, lent to the worker's uid with ACL entries for its run
    /// where it cannot be idmapped (`sandbox::acl`): removed at unload, what
    /// the worker made given to the workspace's owner.
    pub lent_workspace: Option<PathBuf>,
    /// The extension folder, shown so when other users cannot read it.
    pub idmapped_extension: Option<PathBuf>,
    /// What best-effort mode gave up, in words (from `guarantees`).
    pub degraded: Vec<String>,
    /// Egress by host name through the runner's proxy (`network.outbound`
    /// with an operator `egress` section); `None`: as the other fields say.
    pub egress: Option<EgressPlan>,
}

/// Landlock beyond the path rules (`Policy::filesystem`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LandlockPolicy {
    /// Hard: the ruleset must be fully enforced; otherwise what the kernel has.
    pub requirement: Requirement,
    pub abi_required: u8,
    /// The ABI the ruleset is built for: this kernel's, at most 6 (0: none).
    pub abi: u8,
    /// TCP ports connect() may reach; None means any (network.outbound without a port list).
    pub tcp_connect: Option<Vec<u16>>,
    /// Whether TCP is handled at all (false: any TCP connect is allowed by Landlock).
    pub tcp_handled: bool,
    pub scopes: Vec<Scope>,
}

/// The system call filter: one rule per named call, `default` for the rest.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SeccompPolicy {
    pub default: Errno,
    pub rules: Vec<SyscallRule>,
}

impl SyscallAction {
    /// The condition of an `AllowIf`.
    pub fn condition(&self) -> Option<&Condition> {
        match self {
            SyscallAction::AllowIf(c) => Some(c),
            _ => None,
        }
    }
}

impl SeccompPolicy {
    /// The rule for system call `name`, if the policy names it.
    pub fn rule(&self, name: &str) -> Option<&SyscallRule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// Everything `derive` reads.
pub struct Inputs<'a> {
    pub manifest: &'a Manifest,
    pub extension_dir: &'a Path,
    pub workspace: Option<&'a Path>,
    pub operator: &'a OperatorPolicy,
    pub program: &'a ProgramFacts,
    /// What decides whether a root runner's worker can run as a uid of its own.
    pub identity: &'a IdentityFacts,
    pub probe: &'a Probe,
}

/// The default limits of `policies/base.json`.
pub fn default_limits() -> Limits {
    data::DATA.limits
}

/// Derives the worker's policy. Refuses (CapabilityError) a manifest that asks
/// for more than its trust class allows, and (SandboxError) a policy this
/// kernel cannot enforce where a layer is a hard requirement.
pub fn derive(inp: &Inputs) -> Result<Policy> {
    let m = inp.manifest;
    // The operator's global policy with this extension's section applied.
    let merged = inp.operator.for_extension(&m.name);
    let op = &merged;
    let inp = &Inputs {
        operator: op,
        ..*inp
    };
    let declared = m.capability_set();
    steps::check_trust_class(m, &declared, op)?;
    let filesystem = steps::fs_rules(inp, &declared)?;
    let egress = steps::egress_plan(inp, &declared)?;
    if egress.is_some() {
        steps::egress_enforceable(&m.name, op.layers.namespaces, inp.probe)?;
    }
    let probe = inp.probe;
    let (namespaces, _) =
        steps::namespaces(probe, &declared, op.layers.namespaces, egress.is_some());
    // A root runner's worker: a uid of its own where it can run as one.
    let identity = steps::identity(
        op,
        probe,
        inp.identity,
        namespaces.mount,
        inp.workspace,
        inp.extension_dir,
        &declared,
    );
    let layers = steps::layer_reports(op, probe, &declared, identity.ids.is_some());
    let report = |l: Layer| steps::report(&layers, l);
    let (limits, pids_cgroup) = steps::limits(op, probe, &declared);
    let memory_cgroup = limits.and(probe.memory_cgroup.clone());
    let address_space = limits
        .as_ref()
        .map(|l| steps::address_space(l, memory_cgroup.is_some()));
    // A private root (root.rs) wherever a mount namespace is made: host
    // sockets, /proc and devices are then out of the worker's view.
    let private_root = namespaces.mount.then(|| PrivateRootPolicy {
        proc: namespaces.pid,
        devpts: declared.contains(&Capability::SubprocessRun),
        shm_bytes: data::DATA.limits.overridden_by(&op.limits).shm_bytes,
    });
    // Landlock in best effort: whatever part of the ruleset this kernel has.
    let landlock = report(Layer::Landlock).wanted.then(|| {
        let requirement = report(Layer::Landlock).requirement;
        steps::landlock(
            op,
            &declared,
            requirement,
            egress.as_ref(),
            probe.landlock_abi,
        )
    });
    // Seccomp is all or nothing: a kernel without filters gets none.
    let scopes = landlock.as_ref().is_some_and(|l| l.abi >= 6);
    // What else the worker gets decides some rules (base.json's `network`,
    // `with`, `without`): seccomp takes over what a missing mechanism carried.
    let situation = data::Situation {
        own_net: namespaces.net,
        mount_namespace: namespaces.mount,
        pid_namespace: namespaces.pid,
        landlock_scopes: scopes,
        // Unix sockets: by path only in a private root (no host socket in
        // view), and only where abstract names are out of reach too (a network
        // namespace of its own, or Landlock's abstract_unix_socket scope).
        unix_sockets: private_root.is_some() && (namespaces.net || scopes),
        metadata_supervisor: probe.seccomp_listener,
    };
    let seccomp = (report(Layer::Seccomp).wanted && report(Layer::Seccomp).enforceable)
        .then(|| steps::seccomp(&declared, &situation));
    let worker_ids = identity.ids;
    // Guarantees decide: strict mode starts only when each is kept.
    let applied = guarantee_steps::applied_mechanisms(
        probe,
        op,
        landlock.as_ref(),
        &namespaces,
        &guarantee_steps::Decided {
            seccomp_on: seccomp.is_some(),
            pids_cgroup: pids_cgroup.is_some(),
            memory_cgroup: memory_cgroup.is_some(),
            rlimit_as: address_space
                .as_ref()
                .and_then(|a| a.bytes.is_none().then(|| a.why.clone())),
            own_ids: worker_ids.is_some(),
            private_root: private_root.is_some(),
            unix_sockets: situation.unix_sockets,
            as_root: identity.root.clone(),
        },
    );
    let tcp_ports = landlock.as_ref().and_then(|l| l.tcp_connect.as_ref());
    let net = declared.contains(&Capability::NetworkOutbound);
    let needs = Needs {
        network_outbound: net,
        tcp_ports: net && (tcp_ports.is_some_and(|p| !p.is_empty()) || !op.tcp_ports.is_empty()),
        subprocess_run: declared.contains(&Capability::SubprocessRun),
    };
    let guarantees = guarantees::assess(&needs, &applied);
    if op.mode == Mode::Strict {
        if let Some(why) = guarantees::strict_refusal(&guarantees) {
            return Err(Error::sandbox(SandboxKind::KernelLacks, why));
        }
    }
    let mut degraded: Vec<String> = guarantees
        .iter()
        .filter(|g| !g.kept())
        .map(|g| g.loss())
        .collect();
    for l in layers.iter().filter(|l| !l.wanted) {
        degraded.push(format!("{}: switched off by the operator policy", l.layer));
    }
    // Not a guarantee lost but what the worker can do: without a mount
    // namespace and without the supervisor, chmod and utime fail in the
    // workspace too (base.json's rule that refuses them everywhere).
    if let (Some(sc), Some(why)) = (&seccomp, &probe.seccomp_listener_missing) {
        if sc
            .rule("utimensat")
            .is_some_and(|r| r.action == SyscallAction::Errno(Errno::Perm))
        {
            degraded.push(format!(
                "workspace_metadata: chmod and utime are refused in the workspace and the scratch folder too, not only on host files (shutil.copy2 fails with PermissionError; shutil.copyfile works): no mount namespace, and no seccomp supervisor for them: {why}"
            ));
        }
    }
    Ok(Policy {
        extension: m.name.clone(),
        mode: op.mode,
        capabilities: declared.iter().copied().collect(),
        filesystem,
        landlock,
        seccomp,
        namespaces,
        private_root,
        limits,
        pids_cgroup,
        memory_cgroup,
        address_space,
        environment: steps::environment(
            &declared,
            egress.as_ref(),
            inp.workspace,
            namespaces.net,
            op,
        ),
        environment_pass: {
            let mut pass = op.environment.pass.clone();
            pass.sort();
            pass.dedup();
            pass
        },
        layers,
        guarantees,
        worker_ids,
        worker_ids_derived: identity.derived,
        worker_ids_accounts: worker_ids
            .map(|r| AccountId::within(&inp.identity.accounts, &r))
            .unwrap_or_default(),
        root_identity: identity.root.map(|(why, _)| why),
        idmapped_workspace: identity.idmapped,
        lent_workspace: identity.lent,
        idmapped_extension: identity.idmapped_extension,
        degraded,
        egress,
    })
}

/// The declared capabilities as the derivation sees them.
pub(crate) type Declared = BTreeSet<Capability>;

/// The number of a system call named in a policy, on this architecture.
pub fn syscall_number(name: &str) -> Option<i64> {
    crate::sandbox::syscalls::number(name)
}
