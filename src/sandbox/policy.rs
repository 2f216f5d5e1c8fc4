//! Deciding, separate from doing: the confinement of one worker as a pure
//! function of (manifest, operator policy, facts about the entry program and
//! the kernel). Nothing here touches the system; `ext-runner policy` prints the
//! result, and `launch.rs` turns it into kernel objects.
//!
//! The capability → rule mapping itself is data: `policies/base.json` and
//! `policies/capabilities.json`, built into the binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result, SandboxKind};
use crate::extension::capabilities::Capability;
use crate::extension::manifest::Manifest;
use crate::extension::provenance::TrustClass;
use crate::sandbox::egress::{self, EgressPlan, EgressSection};
use crate::sandbox::probe::Probe;

pub const BASE_JSON: &str = include_str!("../../policies/base.json");
pub const CAPABILITIES_JSON: &str = include_str!("../../policies/capabilities.json");

/// Landlock ABI needed for every rule we derive: 6 adds the abstract-socket and signal scopes.
pub const LANDLOCK_ABI_REQUIRED: u8 = 6;

/// How missing kernel features are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// A worker does not start when a layer its policy needs is missing.
    #[default]
    Strict,
    /// Start with what the kernel has; say what is degraded.
    BestEffort,
}

/// Resource limits (rlimits; the process limit also through a pids cgroup when root).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub memory_bytes: u64,
    pub cpu_seconds: u64,
    pub processes: u64,
    pub open_files: u64,
    pub file_size_bytes: u64,
    pub core_bytes: u64,
}

impl Limits {
    /// These limits with the operator's (already checked) named overrides.
    pub fn overridden_by(mut self, overrides: &BTreeMap<String, u64>) -> Limits {
        for (k, v) in overrides {
            let slot = match k.as_str() {
                "memory_bytes" => &mut self.memory_bytes,
                "cpu_seconds" => &mut self.cpu_seconds,
                "processes" => &mut self.processes,
                "open_files" => &mut self.open_files,
                "file_size_bytes" => &mut self.file_size_bytes,
                "core_bytes" => &mut self.core_bytes,
                _ => continue, // OperatorPolicy::load refuses unknown names
            };
            *slot = *v;
        }
        self
    }
}

/// Layers an operator may switch off (for the layer matrix, or a kernel without them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
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

/// The operator's policy file (`--policy FILE`). Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorPolicy {
    /// Folders a `--workspace` must lie in (when set, any other workspace is refused).
    pub workspace_roots: Vec<PathBuf>,
    /// Extra host folders every worker may read.
    pub read_only_paths: Vec<PathBuf>,
    /// TCP ports `network.outbound` may connect to; empty means any.
    pub tcp_ports: Vec<u16>,
    /// Overrides of the default limits.
    pub limits: BTreeMap<String, u64>,
    pub mode: Mode,
    /// Capabilities each trust class may be granted; a missing class may have all.
    pub trust_classes: BTreeMap<String, Vec<String>>,
    pub layers: Layers,
    /// Egress by host name for `network.outbound` (`src/sandbox/egress.rs`):
    /// with it, the worker's only way out is the runner's proxy.
    pub egress: Option<EgressSection>,
}

impl OperatorPolicy {
    /// The egress section that applies to extension `name`.
    pub fn egress_for(&self, _name: &str) -> Option<&EgressSection> {
        self.egress.as_ref()
    }

    /// Reads and checks a policy file.
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
        for key in policy.limits.keys() {
            if !LIMIT_NAMES.contains(&key.as_str()) {
                return Err(Error::sandbox(
                    SandboxKind::OperatorPolicy,
                    format!(
                        "policy file {}: unknown limit '{key}' (known: {})",
                        path.display(),
                        LIMIT_NAMES.join(", ")
                    ),
                ));
            }
        }
        for (class, caps) in &policy.trust_classes {
            if TrustClass::parse(class).is_none() {
                return Err(Error::sandbox(
                    SandboxKind::OperatorPolicy,
                    format!(
                    "policy file {}: unknown trust class '{class}' (known: dev, verified, trusted)",
                    path.display()
                ),
                ));
            }
            if let Some(bad) = caps.iter().find(|c| c.parse::<Capability>().is_err()) {
                return Err(Error::sandbox(
                    SandboxKind::OperatorPolicy,
                    format!(
                        "policy file {}: unknown capability '{bad}' for trust class '{class}'",
                        path.display()
                    ),
                ));
            }
        }
        if let Some(e) = &policy.egress {
            egress::check_section(e).map_err(|e| {
                Error::sandbox(
                    SandboxKind::OperatorPolicy,
                    format!("policy file {}: {e}", path.display()),
                )
            })?;
        }
        Ok(policy)
    }
}

const LIMIT_NAMES: &[&str] = &[
    "memory_bytes",
    "cpu_seconds",
    "processes",
    "open_files",
    "file_size_bytes",
    "core_bytes",
];

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

/// One Landlock path rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsRule {
    pub path: PathBuf,
    pub access: Access,
    pub why: String,
}

/// Access classes, each a fixed set of Landlock rights (see `launch.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
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
pub struct SyscallRule {
    pub name: String,
    pub action: SyscallAction,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyscallAction {
    Allow,
    /// Allowed when its arguments pass the named condition.
    AllowIf(Condition),
    /// Fails with this errno.
    Errno(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// ioctl request (low 32 bits) is neither TIOCSTI nor TIOCLINUX.
    IoctlNotTerminalInjection,
    /// prlimit64 on pid 0 (the caller).
    PrlimitSelf,
    /// clone with CLONE_THREAD and no namespace flags.
    CloneThreadOnly,
    /// clone without namespace flags.
    CloneNoNamespaces,
    /// socket() of AF_INET, AF_INET6 or AF_NETLINK.
    SocketNetworkFamilies,
    /// socketpair() of SOCK_STREAM or SOCK_SEQPACKET.
    SocketpairStream,
    /// prctl() of anything but PR_SET_PDEATHSIG.
    PrctlNotParentDeathSignal,
}

/// Whether one layer is asked for and what this kernel can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerStatus {
    pub layer: String,
    pub wanted: bool,
    pub enforceable: bool,
    /// What is lost when it is missing, and which other layer covers it.
    pub note: String,
}

/// The namespaces the worker is put in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
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

/// Everything decided about one worker. Printable; applied by `launch.rs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub extension: String,
    pub mode: Mode,
    pub capabilities: Vec<String>,
    pub landlock: LandlockPolicy,
    pub seccomp: Vec<SyscallRule>,
    pub seccomp_default: String,
    pub namespaces: Namespaces,
    pub limits: Option<Limits>,
    /// A pids cgroup to put the worker in (root: RLIMIT_NPROC does not bind uid 0).
    pub pids_cgroup: Option<String>,
    /// The worker's environment; `$SCRATCH` stands for its private scratch folder.
    pub environment: BTreeMap<String, String>,
    pub layers: Vec<LayerStatus>,
    /// What best-effort mode gave up, in words.
    pub degraded: Vec<String>,
    /// Egress by host name through the runner's proxy (`network.outbound`
    /// with an operator `egress` section); `None`: as the other fields say.
    pub egress: Option<EgressPlan>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LandlockPolicy {
    pub enabled: bool,
    pub abi_required: u8,
    pub rules: Vec<FsRule>,
    /// TCP ports connect() may reach; None means any (network.outbound without a port list).
    pub tcp_connect: Option<Vec<u16>>,
    /// Whether TCP is handled at all (false: any TCP connect is allowed by Landlock).
    pub tcp_handled: bool,
    pub scopes: Vec<String>,
}

/// Everything `derive` reads.
pub struct Inputs<'a> {
    pub manifest: &'a Manifest,
    pub extension_dir: &'a Path,
    pub workspace: Option<&'a Path>,
    pub operator: &'a OperatorPolicy,
    pub program: &'a ProgramFacts,
    pub probe: &'a Probe,
}

#[derive(Deserialize)]
struct BaseData {
    landlock: BaseLandlock,
    seccomp: BaseSeccomp,
    limits: Limits,
    environment: BTreeMap<String, String>,
}
#[derive(Deserialize)]
struct BaseLandlock {
    read_exec: PathGroup,
    read: PathGroup,
    devices: Devices,
    scopes: Vec<String>,
}
#[derive(Deserialize)]
struct PathGroup {
    paths: Vec<PathBuf>,
    why: String,
}
#[derive(Deserialize)]
struct Devices {
    read_write: Vec<PathBuf>,
    read: Vec<PathBuf>,
    why: String,
}
#[derive(Deserialize)]
struct BaseSeccomp {
    allow: Vec<String>,
    allow_why: String,
    conditional: BTreeMap<String, String>,
    deny: Vec<DenyGroup>,
}
#[derive(Deserialize)]
struct DenyGroup {
    names: Vec<String>,
    why: String,
}
#[derive(Deserialize)]
struct CapData {
    why: String,
    #[serde(default)]
    read: Vec<PathBuf>,
    #[serde(default)]
    exec: Vec<PathBuf>,
    #[serde(default)]
    syscalls: Vec<String>,
}

fn base() -> BaseData {
    serde_json::from_str(BASE_JSON).expect("policies/base.json is checked by the test suite")
}

fn cap_data() -> BTreeMap<String, Value> {
    serde_json::from_str(CAPABILITIES_JSON)
        .expect("policies/capabilities.json is checked by the test suite")
}

fn cap(name: Capability) -> CapData {
    let all = cap_data();
    serde_json::from_value(all[name.as_str()].clone())
        .expect("policies/capabilities.json has every capability")
}

/// The default limits of `policies/base.json`.
pub fn default_limits() -> Limits {
    base().limits
}

/// Derives the worker's policy. Refuses (CapabilityError) a manifest that asks
/// for more than its trust class allows, and (SandboxError) a strict policy
/// this kernel cannot enforce.
pub fn derive(inp: &Inputs) -> Result<Policy> {
    let m = inp.manifest;
    let declared = m.capability_set();
    check_trust_class(m, &declared, inp.operator)?;
    let has = |c| declared.contains(&c);
    let base = base();
    let op = inp.operator;
    let probe = inp.probe;

    // Filesystem.
    let mut rules = Vec::new();
    let exec_granted = has(Capability::SubprocessRun);
    for p in &base.landlock.read_exec.paths {
        rules.push(FsRule {
            path: p.clone(),
            access: if exec_granted {
                Access::ReadExec
            } else {
                Access::Read
            },
            why: base.landlock.read_exec.why.clone(),
        });
    }
    for p in &base.landlock.read.paths {
        rules.push(FsRule {
            path: p.clone(),
            access: Access::Read,
            why: base.landlock.read.why.clone(),
        });
    }
    for p in &base.landlock.devices.read_write {
        rules.push(FsRule {
            path: p.clone(),
            access: Access::ReadWriteFile,
            why: base.landlock.devices.why.clone(),
        });
    }
    for p in &base.landlock.devices.read {
        rules.push(FsRule {
            path: p.clone(),
            access: Access::Read,
            why: base.landlock.devices.why.clone(),
        });
    }
    for d in &inp.program.runtime_dirs {
        rules.push(FsRule {
            path: d.clone(),
            access: if exec_granted {
                Access::ReadExec
            } else {
                Access::Read
            },
            why: "the interpreter's own prefix (standard library, packages)".into(),
        });
    }
    rules.push(FsRule {
        path: inp.program.program.clone(),
        access: Access::ExecFile,
        why: "the worker's program".into(),
    });
    if let Some(l) = &inp.program.loader {
        rules.push(FsRule {
            path: l.clone(),
            access: Access::ExecFile,
            why: "the program's dynamic loader".into(),
        });
    }
    rules.push(FsRule {
        path: inp.extension_dir.to_path_buf(),
        access: Access::Read,
        why: "the extension's own folder".into(),
    });
    for p in &op.read_only_paths {
        rules.push(FsRule {
            path: p.clone(),
            access: Access::Read,
            why: "operator policy: read_only_paths".into(),
        });
    }
    let workspace_access = if has(Capability::FilesystemWrite) {
        Some((Access::Write, Capability::FilesystemWrite))
    } else if has(Capability::FilesystemRead) {
        Some((Access::Read, Capability::FilesystemRead))
    } else {
        None
    };
    if let Some((access, c)) = workspace_access {
        let ws = inp.workspace.ok_or_else(|| Error::sandbox(SandboxKind::Workspace, format!(
            "'{}' declares {c} but no workspace was given: pass --workspace DIR (the host folder it may {})",
            m.name,
            if access == Access::Write { "read and write" } else { "read" }
        )))?;
        if !op.workspace_roots.is_empty() && !op.workspace_roots.iter().any(|r| ws.starts_with(r)) {
            return Err(Error::capability(
                c.as_str(),
                Some(&m.name),
                Some(format!(
                    "workspace {} is outside the operator's workspace_roots",
                    ws.display()
                )),
            ));
        }
        rules.push(FsRule {
            path: ws.to_path_buf(),
            access,
            why: cap(c).why,
        });
    }
    if has(Capability::NetworkOutbound) {
        let d = cap(Capability::NetworkOutbound);
        for p in d.read {
            rules.push(FsRule {
                path: p,
                access: Access::Read,
                why: "name resolution (network.outbound)".into(),
            });
        }
    }
    if exec_granted {
        for p in cap(Capability::SubprocessRun).exec {
            rules.push(FsRule {
                path: p,
                access: Access::ReadExec,
                why: "programs subprocess.run may execute".into(),
            });
        }
    }
    // The scratch folder is added at launch (its path is only known then).
    let net = has(Capability::NetworkOutbound);
    let egress = egress_plan(inp, net)?;
    // With egress, the proxy's port in the worker's namespace is the one TCP
    // port it may connect to (tcp_ports is for the proxy's rules to say).
    let tcp_ports = match &egress {
        Some(e) => vec![e.proxy.port()],
        None => op.tcp_ports.clone(),
    };
    let landlock = LandlockPolicy {
        enabled: op.layers.landlock,
        abi_required: LANDLOCK_ABI_REQUIRED,
        rules,
        tcp_connect: net.then(|| tcp_ports.clone()).filter(|p| !p.is_empty()),
        tcp_handled: !net || !tcp_ports.is_empty(),
        scopes: base.landlock.scopes.clone(),
    };

    // Seccomp.
    let mut seccomp: Vec<SyscallRule> = base
        .seccomp
        .allow
        .iter()
        .map(|n| SyscallRule {
            name: n.clone(),
            action: SyscallAction::Allow,
            why: base.seccomp.allow_why.clone(),
        })
        .collect();
    let why = |k: &str| base.seccomp.conditional.get(k).cloned().unwrap_or_default();
    seccomp.push(SyscallRule {
        name: "ioctl".into(),
        action: SyscallAction::AllowIf(Condition::IoctlNotTerminalInjection),
        why: why("ioctl"),
    });
    seccomp.push(SyscallRule {
        name: "prlimit64".into(),
        action: SyscallAction::AllowIf(Condition::PrlimitSelf),
        why: why("prlimit64"),
    });
    seccomp.push(SyscallRule {
        name: "socketpair".into(),
        action: SyscallAction::AllowIf(Condition::SocketpairStream),
        why: why("socketpair"),
    });
    seccomp.push(SyscallRule {
        name: "prctl".into(),
        action: SyscallAction::AllowIf(Condition::PrctlNotParentDeathSignal),
        why: why("prctl"),
    });
    seccomp.push(SyscallRule {
        name: "clone3".into(),
        action: SyscallAction::Errno("ENOSYS".into()),
        why: why("clone3"),
    });
    for n in ["getxattr", "lgetxattr", "listxattr", "llistxattr"] {
        seccomp.push(SyscallRule {
            name: n.into(),
            action: SyscallAction::Errno("EOPNOTSUPP".into()),
            why: why(n),
        });
    }
    if exec_granted {
        seccomp.push(SyscallRule {
            name: "clone".into(),
            action: SyscallAction::AllowIf(Condition::CloneNoNamespaces),
            why: why("clone"),
        });
        for n in cap(Capability::SubprocessRun)
            .syscalls
            .iter()
            .filter(|n| *n != "clone")
        {
            seccomp.push(SyscallRule {
                name: n.clone(),
                action: SyscallAction::Allow,
                why: cap(Capability::SubprocessRun).why,
            });
        }
    } else {
        seccomp.push(SyscallRule {
            name: "clone".into(),
            action: SyscallAction::AllowIf(Condition::CloneThreadOnly),
            why: why("clone"),
        });
        for n in ["fork", "vfork"] {
            seccomp.push(SyscallRule {
                name: n.into(),
                action: SyscallAction::Errno("EPERM".into()),
                why: "subprocess.run not declared".into(),
            });
        }
    }
    seccomp.push(if net {
        SyscallRule {
            name: "socket".into(),
            action: SyscallAction::AllowIf(Condition::SocketNetworkFamilies),
            why: why("socket"),
        }
    } else {
        SyscallRule {
            name: "socket".into(),
            action: SyscallAction::Errno("EPERM".into()),
            why: "network.outbound not declared; unix sockets by path are never allowed".into(),
        }
    });
    for g in &base.seccomp.deny {
        for n in &g.names {
            seccomp.push(SyscallRule {
                name: n.clone(),
                action: SyscallAction::Errno("EPERM".into()),
                why: g.why.clone(),
            });
        }
    }

    // Namespaces: a user namespace where one is needed to create the others.
    let ns_on = op.layers.namespaces;
    let need_userns = !probe.root;
    let userns_ok = probe.user_namespaces || probe.root;
    // A network namespace of its own: without network.outbound (nothing to
    // reach), and with egress (only the proxy to reach).
    let own_net = !net || egress.is_some();
    if let Some(e) = &egress {
        egress_enforceable(&m.name, e, ns_on, userns_ok, probe)?;
    }
    let namespaces = if ns_on && userns_ok {
        Namespaces {
            user: need_userns,
            mount: true,
            pid: probe.pid_namespaces,
            net: own_net && probe.network_namespaces,
            ipc: probe.ipc_namespaces,
            uts: true,
        }
    } else {
        Namespaces::default()
    };
    // Namespaces this kernel or user cannot make (for instance under
    // `user.max_net_namespaces = 0`), though the others can be.
    let missing_namespaces: Vec<&str> = [
        ("net", own_net && !probe.network_namespaces),
        ("pid", !probe.pid_namespaces),
        ("ipc", !probe.ipc_namespaces),
    ]
    .into_iter()
    .filter(|&(_, missing)| ns_on && userns_ok && missing)
    .map(|(name, _)| name)
    .collect();

    let limits = op
        .layers
        .limits
        .then(|| base.limits.overridden_by(&op.limits));
    // RLIMIT_NPROC does not bind uid 0. Only a worker that may fork needs the
    // pids cgroup (joining one costs an RCU grace period, ~10 ms, on cgroup v1);
    // without subprocess.run, seccomp allows threads only and RLIMIT_AS bounds them.
    let pids_cgroup = if op.layers.limits && probe.root && exec_granted {
        probe.pids_cgroup.clone()
    } else {
        None
    };

    let mut environment = base.environment.clone();
    environment.insert("HOME".into(), "$SCRATCH".into());
    environment.insert("TMPDIR".into(), "$SCRATCH".into());
    // Information for the worker's own module, which explains denials; enforcement is the kernel's.
    environment.insert(
        "NODUS_EXTENSION_CAPABILITIES".into(),
        declared
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    if let Some(e) = &egress {
        environment.extend(e.environment());
    }

    // What this kernel can enforce, and what strict mode requires.
    let layers = vec![
        LayerStatus {
            layer: "landlock".into(),
            wanted: op.layers.landlock,
            enforceable: probe.landlock_abi >= LANDLOCK_ABI_REQUIRED,
            note: format!("filesystem, TCP and scope rules need Landlock ABI {LANDLOCK_ABI_REQUIRED}; this kernel has {}", probe.landlock_abi),
        },
        LayerStatus {
            layer: "seccomp".into(),
            wanted: op.layers.seccomp,
            enforceable: probe.seccomp_filter,
            note: "system call allowlist".into(),
        },
        LayerStatus {
            layer: "namespaces".into(),
            wanted: ns_on,
            enforceable: userns_ok,
            note: if userns_ok {
                "pid, ipc, uts and (without network.outbound) net namespaces".into()
            } else {
                "user namespaces are not available to this user: no pid/net/ipc namespace. Covered: network by seccomp (socket) and Landlock (TCP); signals and abstract sockets by Landlock scopes; process lifetime by setsid and the setsid/setpgid denial. Lost: a worker's orphaned children outlive a SIGKILLed runner".into()
            },
        },
        LayerStatus {
            layer: "limits".into(),
            wanted: op.layers.limits,
            // Root is not bound by RLIMIT_NPROC: a root worker that may fork
            // needs the pids cgroup for any process limit at all.
            enforceable: !(probe.root && exec_granted && probe.pids_cgroup.is_none()),
            note: if probe.root && probe.pids_cgroup.is_none() {
                if exec_granted {
                    "no process limit: the worker runs as root, which RLIMIT_NPROC does not bind, may fork (subprocess.run), and no pids cgroup is available (cgroup v1 `pids` is not mounted); run the host as a non-root user, mount the pids controller, or set \"mode\": \"best-effort\"".into()
                } else {
                    "rlimits; root: RLIMIT_NPROC does not bind uid 0 and no pids cgroup is available (without subprocess.run seccomp allows threads only)".into()
                }
            } else if probe.root {
                "rlimits; root: process count through a pids cgroup when subprocess.run is declared (RLIMIT_NPROC does not bind uid 0; without subprocess.run seccomp allows threads only)".into()
            } else {
                "rlimits (RLIMIT_NPROC counted in the worker's user namespace)".into()
            },
        },
    ];
    let mut degraded = Vec::new();
    for l in layers.iter().filter(|l| l.wanted && !l.enforceable) {
        // Namespaces are covered by the other layers (see the note), so strict mode does not need them.
        if op.mode == Mode::Strict && l.layer != "namespaces" {
            return Err(Error::sandbox(SandboxKind::KernelLacks, format!(
                "strict mode: this kernel cannot enforce the {} layer ({}); run on a kernel with it, or set \"mode\": \"best-effort\" in the policy file",
                l.layer, l.note
            )));
        }
        degraded.push(format!("{}: {}", l.layer, l.note));
    }
    for l in layers.iter().filter(|l| !l.wanted) {
        degraded.push(format!("{}: switched off by the operator policy", l.layer));
    }
    if !missing_namespaces.is_empty() {
        degraded.push(format!(
            "namespaces: this kernel or user cannot create a {} namespace (see `ext-runner probe`); network stays denied by seccomp and Landlock, signals by the Landlock scope",
            missing_namespaces.join(", ")
        ));
    }

    Ok(Policy {
        extension: m.name.clone(),
        mode: op.mode,
        capabilities: declared.iter().map(|c| c.as_str().to_string()).collect(),
        landlock,
        seccomp,
        seccomp_default: "EPERM".into(),
        namespaces,
        limits,
        pids_cgroup,
        environment,
        layers,
        degraded,
        egress,
    })
}

/// The egress plan of a worker: `network.outbound` and an operator `egress`
/// section (the manifest's request narrows it; a malformed one is refused).
fn egress_plan(inp: &Inputs, net: bool) -> Result<Option<EgressPlan>> {
    let m = inp.manifest;
    let Some(section) = inp.operator.egress_for(&m.name) else {
        return Ok(None);
    };
    if !net {
        return Ok(None);
    }
    // The operator's section was checked when it was loaded; a library
    // caller's is checked here, before the request is looked at.
    let operator = egress::plan(section, None).map_err(|e| {
        Error::sandbox(SandboxKind::OperatorPolicy, format!("operator policy: {e}"))
    })?;
    let Some(request) = &m.egress else {
        return Ok(Some(operator));
    };
    egress::plan(section, Some(request)).map(Some).map_err(|e| {
        let path = inp
            .extension_dir
            .join(crate::extension::manifest::MANIFEST_FILE);
        Error::manifest(
            format!("'{}': {e}", m.name),
            Some(path.display().to_string()),
        )
    })
}

/// An allowlist is enforced by a network namespace whose only way out is the
/// proxy; where none can be made it cannot be enforced, and no mode starts
/// the worker (falling back to the host's network would be failing open).
fn egress_enforceable(
    name: &str,
    _plan: &EgressPlan,
    ns_on: bool,
    userns_ok: bool,
    probe: &Probe,
) -> Result<()> {
    let why = if !ns_on {
        "the operator policy switches the namespaces layer off"
    } else if !userns_ok {
        "user namespaces are not available to this user"
    } else if !probe.network_namespaces {
        "this kernel or user cannot create a network namespace (see `ext-runner probe`; user.max_net_namespaces)"
    } else {
        return Ok(());
    };
    Err(Error::sandbox(SandboxKind::KernelLacks, format!(
        "'{name}' declares network.outbound and the operator policy has an egress allowlist, which needs a network namespace whose only way out is the runner's proxy: {why}. This is refused in every mode; remove the egress section to give the worker the host's network, or run where network namespaces can be made"
    )))
}

fn check_trust_class(
    m: &Manifest,
    declared: &BTreeSet<Capability>,
    op: &OperatorPolicy,
) -> Result<()> {
    let class = m.provenance.trust_class.as_str();
    let Some(allowed) = op.trust_classes.get(class) else {
        return Ok(());
    };
    if let Some(c) = declared
        .iter()
        .find(|c| !allowed.iter().any(|a| a == c.as_str()))
    {
        return Err(Error::capability(
            c.as_str(),
            Some(&m.name),
            Some(format!(
                "the operator policy does not grant it to trust class '{class}'"
            )),
        ));
    }
    Ok(())
}

impl Policy {
    /// A human-readable rendering for `ext-runner policy`.
    pub fn render(&self) -> String {
        let mut s = format!(
            "extension {} ({:?} mode)\ncapabilities: {}\n",
            self.extension,
            self.mode,
            self.capabilities.join(", ")
        );
        s += "\nlayers:\n";
        for l in &self.layers {
            s += &format!(
                "  {:<11} wanted={:<5} enforceable={:<5} {}\n",
                l.layer, l.wanted, l.enforceable, l.note
            );
        }
        s += &format!(
            "\nlandlock (ABI >= {}, {}):\n",
            self.landlock.abi_required,
            if self.landlock.enabled { "on" } else { "off" }
        );
        for r in &self.landlock.rules {
            s += &format!(
                "  {:<14} {}  # {}\n",
                format!("{:?}", r.access),
                r.path.display(),
                r.why
            );
        }
        s += "  write          $SCRATCH  # private scratch folder (TMPDIR, HOME), removed when the worker exits\n";
        s += &format!(
            "  tcp connect: {}\n  tcp bind: denied\n  scopes: {}\n",
            match (&self.landlock.tcp_handled, &self.landlock.tcp_connect) {
                (false, _) => "any port".to_string(),
                (true, Some(p)) => format!("ports {p:?}"),
                (true, None) => "denied".to_string(),
            },
            self.landlock.scopes.join(", ")
        );
        s += &format!("\nseccomp (default: {}):\n", self.seccomp_default);
        let allowed: Vec<&str> = self
            .seccomp
            .iter()
            .filter(|r| r.action == SyscallAction::Allow)
            .map(|r| r.name.as_str())
            .collect();
        s += &format!("  allow: {}\n", allowed.join(" "));
        for r in self
            .seccomp
            .iter()
            .filter(|r| r.action != SyscallAction::Allow)
        {
            s += &format!("  {:<18} {:?}  # {}\n", r.name, r.action, r.why);
        }
        s += &format!("\nnamespaces: {:?}\n", self.namespaces);
        match &self.limits {
            Some(l) => s += &format!("limits: {l:?}\n"),
            None => s += "limits: off\n",
        }
        if let Some(c) = &self.pids_cgroup {
            s += &format!("pids cgroup: under {c}\n");
        }
        s += &format!("environment: {:?}\n", self.environment);
        if let Some(e) = &self.egress {
            s += &e.render();
        }
        for d in &self.degraded {
            s += &format!("DEGRADED: {d}\n");
        }
        s
    }
}

/// The number of a system call named in a policy, on this architecture.
pub fn syscall_number(name: &str) -> Option<i64> {
    crate::sandbox::syscalls::number(name)
}
