//! `policies/base.json` and `policies/capabilities.json`, built into the
//! binary and parsed once per process. Every struct refuses fields it does not
//! know (a field in the data is a field something reads), and every system
//! call name and symbolic constant is resolved when the data is loaded: an
//! unknown one is an error, never a rule silently left out.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::LazyLock;

use serde::Deserialize;

use crate::extension::capabilities::Capability;
use crate::sandbox::policy::{
    Access, ArgCheck, ArgOp, ArgWidth, Condition, Errno, Limits, Scope, SyscallAction,
};

pub const BASE_JSON: &str = include_str!("../../../policies/base.json");
pub const CAPABILITIES_JSON: &str = include_str!("../../../policies/capabilities.json");

/// Both files, parsed and checked.
#[derive(Debug)]
pub(crate) struct PolicyData {
    pub landlock: BaseLandlock,
    pub seccomp: Seccomp,
    pub limits: Limits,
    pub environment: BTreeMap<String, String>,
    pub capabilities: BTreeMap<Capability, CapData>,
}

/// The built-in data. It is checked by the test suite (`tests/policy.rs`), so
/// a build whose data does not load cannot ship.
pub(crate) static DATA: LazyLock<PolicyData> = LazyLock::new(|| {
    PolicyData::parse(BASE_JSON, CAPABILITIES_JSON).unwrap_or_else(|e| panic!("{e}"))
});

impl PolicyData {
    /// Parses and checks the two files.
    pub fn parse(base: &str, capabilities: &str) -> Result<PolicyData, String> {
        let base: BaseFile =
            serde_json::from_str(base).map_err(|e| format!("policies/base.json: {e}"))?;
        let caps: CapabilitiesFile = serde_json::from_str(capabilities)
            .map_err(|e| format!("policies/capabilities.json: {e}"))?;
        if let Some(c) = Capability::ALL
            .iter()
            .find(|c| !caps.capabilities.contains_key(c))
        {
            return Err(format!("policies/capabilities.json says nothing about {c}"));
        }
        for (c, d) in &caps.capabilities {
            if d.workspace
                .is_some_and(|a| a != Access::Read && a != Access::Write)
            {
                return Err(format!(
                    "policies/capabilities.json: {c}: workspace is read or write"
                ));
            }
        }
        Ok(PolicyData {
            landlock: base.landlock,
            seccomp: Seccomp::resolve(base.seccomp)
                .map_err(|e| format!("policies/base.json: seccomp: {e}"))?,
            limits: base.limits,
            environment: base.environment,
            capabilities: caps.capabilities,
        })
    }

    /// What `policies/capabilities.json` says about one capability.
    pub fn cap(&self, c: Capability) -> &CapData {
        self.capabilities
            .get(&c)
            .expect("PolicyData::parse checks every capability is there")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BaseFile {
    #[serde(rename = "_doc")]
    _doc: String,
    landlock: BaseLandlock,
    seccomp: SeccompFile,
    limits: Limits,
    environment: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BaseLandlock {
    pub read_exec: PathGroup,
    pub read: PathGroup,
    pub devices: Devices,
    pub scopes: Vec<Scope>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PathGroup {
    pub paths: Vec<PathBuf>,
    pub why: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Devices {
    pub read_write: Vec<PathBuf>,
    pub read: Vec<PathBuf>,
    pub why: String,
}

/// `policies/capabilities.json`: a `_doc` and one entry per capability (an
/// unknown name is an error).
#[derive(Deserialize)]
struct CapabilitiesFile {
    #[serde(rename = "_doc")]
    _doc: String,
    #[serde(flatten)]
    capabilities: BTreeMap<Capability, CapData>,
}

/// What one capability adds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CapData {
    pub why: String,
    /// The access it gives to the workspace (read or write).
    #[serde(default)]
    pub workspace: Option<Access>,
    /// `false`: a worker with it keeps the host's network (no net namespace).
    #[serde(default = "yes")]
    pub network_namespace: bool,
    /// Host paths it makes readable.
    #[serde(default)]
    pub read: Vec<PathBuf>,
    /// Host folders it makes readable and executable.
    #[serde(default)]
    pub exec: Vec<PathBuf>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeccompFile {
    #[serde(rename = "_doc", default)]
    _doc: Option<String>,
    default: Errno,
    allow: Vec<String>,
    allow_why: String,
    rules: Vec<RuleFile>,
    #[serde(default)]
    overrides: Vec<RuleFile>,
    deny: Vec<DenyFile>,
}

/// One entry of `seccomp.rules`, in Firecracker seccompiler's spirit: the
/// argument checks are data.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    syscalls: Vec<String>,
    #[serde(default)]
    when: Option<Capability>,
    #[serde(default)]
    unless: Option<Capability>,
    #[serde(default)]
    network: Option<NetworkNamespace>,
    #[serde(default)]
    with: Vec<Carrier>,
    #[serde(default)]
    without: Vec<Carrier>,
    #[serde(default)]
    condition: Option<String>,
    /// What the condition lets through, in words (`ext-runner policy`).
    #[serde(default)]
    says: Option<String>,
    #[serde(default)]
    args: Option<Vec<Vec<ArgFile>>>,
    #[serde(default)]
    errno: Option<Errno>,
    /// The call goes to the runner's supervisor (`supervisor.rs`).
    #[serde(default)]
    supervised: bool,
    why: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArgFile {
    index: u8,
    #[serde(rename = "type")]
    width: ArgWidth,
    op: OpFile,
    val: Value,
    #[serde(default)]
    #[allow(dead_code)] // documentation for the reviewer of the data
    why: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum OpFile {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    MaskedEq(Value),
}

/// A number, or the name of a constant of [`constant`].
#[derive(Deserialize)]
#[serde(untagged)]
enum Value {
    Number(u64),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyFile {
    syscalls: Vec<String>,
    why: String,
}

/// The seccomp part of base.json, with every name resolved.
#[derive(Debug)]
pub(crate) struct Seccomp {
    pub default: Errno,
    pub allow: Vec<Syscall>,
    pub allow_why: String,
    pub rules: Vec<Rule>,
    /// After the denials, each replacing the rule of its calls.
    pub overrides: Vec<Rule>,
    pub deny: Vec<(Vec<Syscall>, String)>,
}

/// A system call name with its number on this architecture.
#[derive(Debug, Clone)]
pub(crate) struct Syscall {
    pub name: String,
    pub number: i64,
}

/// Which network namespace a rule is for: the worker's own (`own`), or the
/// host's, which a worker with `network.outbound` and no egress shares (`host`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum NetworkNamespace {
    Own,
    Host,
}

/// A mechanism a rule depends on (`with`: applied, `without`: not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Carrier {
    /// Unix sockets contained: a private root (no host socket in view by
    /// path) and abstract names out of reach (its own network namespace or
    /// Landlock's scope).
    UnixSockets,
    /// The mount namespace that keeps the host's mounts read-only.
    MountNamespace,
    /// The pid namespace that keeps the host's processes out of reach.
    PidNamespace,
    /// Landlock's scopes (signals, abstract unix sockets; ABI 6).
    LandlockScopes,
    /// The runner can supervise calls (a seccomp listener: no other
    /// supervisor above it, see `supervisor.rs`).
    MetadataSupervisor,
}

/// One resolved entry of `seccomp.rules`.
#[derive(Debug)]
pub(crate) struct Rule {
    pub syscalls: Vec<Syscall>,
    pub when: Option<Capability>,
    pub unless: Option<Capability>,
    pub network: Option<NetworkNamespace>,
    /// Applies only when all of `with` and none of `without` are applied.
    pub with: Vec<Carrier>,
    pub without: Vec<Carrier>,
    pub action: SyscallAction,
    pub why: String,
}

/// What else a worker gets, which rules may depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Situation {
    /// A network namespace of its own (nothing it binds is the host's).
    pub own_net: bool,
    pub mount_namespace: bool,
    pub pid_namespace: bool,
    pub landlock_scopes: bool,
    pub unix_sockets: bool,
    /// The runner can take a seccomp listener for the worker.
    pub metadata_supervisor: bool,
}

impl Situation {
    fn has(&self, c: Carrier) -> bool {
        match c {
            Carrier::UnixSockets => self.unix_sockets,
            Carrier::MountNamespace => self.mount_namespace,
            Carrier::PidNamespace => self.pid_namespace,
            Carrier::LandlockScopes => self.landlock_scopes,
            Carrier::MetadataSupervisor => self.metadata_supervisor,
        }
    }
}

impl Rule {
    /// Whether the rule applies to a worker that declared `declared`, in `at`.
    pub fn applies(&self, declared: &crate::sandbox::policy::Declared, at: &Situation) -> bool {
        let net = if at.own_net {
            NetworkNamespace::Own
        } else {
            NetworkNamespace::Host
        };
        self.when.is_none_or(|c| declared.contains(&c))
            && self.unless.is_none_or(|c| !declared.contains(&c))
            && self.network.is_none_or(|n| n == net)
            && self.with.iter().all(|&c| at.has(c))
            && !self.without.iter().any(|&c| at.has(c))
    }
}

fn syscalls(names: Vec<String>) -> Result<Vec<Syscall>, String> {
    names
        .into_iter()
        .map(|name| match crate::sandbox::syscalls::number(&name) {
            Some(number) => Ok(Syscall { name, number }),
            None => Err(format!(
                "unknown system call '{name}' (not in src/sandbox/syscalls.rs for this architecture)"
            )),
        })
        .collect()
}

impl Seccomp {
    fn resolve(f: SeccompFile) -> Result<Seccomp, String> {
        let rules = f
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| Rule::resolve(r).map_err(|e| format!("rules[{i}]: {e}")))
            .collect::<Result<_, _>>()?;
        let overrides = f
            .overrides
            .into_iter()
            .enumerate()
            .map(|(i, r)| Rule::resolve(r).map_err(|e| format!("overrides[{i}]: {e}")))
            .collect::<Result<_, _>>()?;
        let deny = f
            .deny
            .into_iter()
            .map(|d| Ok((syscalls(d.syscalls)?, d.why)))
            .collect::<Result<_, String>>()?;
        Ok(Seccomp {
            default: f.default,
            allow: syscalls(f.allow).map_err(|e| format!("allow: {e}"))?,
            allow_why: f.allow_why,
            rules,
            overrides,
            deny,
        })
    }
}

impl Rule {
    fn resolve(r: RuleFile) -> Result<Rule, String> {
        if r.says.is_some() && r.condition.is_none() {
            return Err("says without a condition".into());
        }
        if r.supervised && (r.args.is_some() || r.errno.is_some() || r.condition.is_some()) {
            return Err("a supervised rule has no args, condition or errno".into());
        }
        let action = match (r.args, r.errno, r.condition) {
            _ if r.supervised => SyscallAction::Supervised,
            (None, None, None) => SyscallAction::Allow,
            (None, Some(e), None) => SyscallAction::Errno(e),
            (Some(groups), None, Some(name)) => {
                let Some(says) = r.says else {
                    return Err(format!("{name}: a condition says in words what it allows"));
                };
                if groups.is_empty() || groups.iter().any(Vec::is_empty) {
                    return Err(format!(
                        "{name}: args needs at least one check in each group"
                    ));
                }
                let any_of = groups
                    .into_iter()
                    .map(|g| g.into_iter().map(ArgFile::resolve).collect())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("{name}: {e}"))?;
                SyscallAction::AllowIf(Condition { name, says, any_of })
            }
            (Some(_), None, None) => return Err("args need a condition name".into()),
            (Some(_), Some(_), _) | (None, Some(_), Some(_)) => {
                return Err("a rule allows (args) or fails (errno), not both".into())
            }
            (None, None, Some(name)) => return Err(format!("condition {name} without args")),
        };
        Ok(Rule {
            syscalls: syscalls(r.syscalls)?,
            when: r.when,
            unless: r.unless,
            network: r.network,
            with: r.with,
            without: r.without,
            action,
            why: r.why,
        })
    }
}

impl ArgFile {
    fn resolve(self) -> Result<ArgCheck, String> {
        if self.index > 5 {
            return Err(format!(
                "argument index {} (system calls have 0-5)",
                self.index
            ));
        }
        let value = self.val.resolve()?;
        let op = match self.op {
            OpFile::Eq => ArgOp::Eq,
            OpFile::Ne => ArgOp::Ne,
            OpFile::Lt => ArgOp::Lt,
            OpFile::Le => ArgOp::Le,
            OpFile::Gt => ArgOp::Gt,
            OpFile::Ge => ArgOp::Ge,
            OpFile::MaskedEq(m) => ArgOp::MaskedEq(m.resolve()?),
        };
        let wide = |v: u64| v > u64::from(u32::MAX);
        if self.width == ArgWidth::Dword
            && (wide(value) || matches!(op, ArgOp::MaskedEq(m) if wide(m)))
        {
            return Err(format!(
                "argument {}: a dword check of a value above 32 bits",
                self.index
            ));
        }
        Ok(ArgCheck {
            index: self.index,
            width: self.width,
            op,
            value,
        })
    }
}

impl Value {
    fn resolve(self) -> Result<u64, String> {
        match self {
            Value::Number(n) => Ok(n),
            Value::Name(name) => constant(&name).ok_or_else(|| {
                format!("unknown constant '{name}' (see constant() in src/sandbox/policy/data.rs)")
            }),
        }
    }
}

/// All namespace flags of clone(2) and unshare(2).
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWTIME) as u64;

/// The placeholder the filter compares signal targets with (`WORKER_PID`).
const WORKER_PID: u64 = 0x7ffe_f00d;

/// The symbolic constants the data may name in `val` or a mask.
fn constant(name: &str) -> Option<u64> {
    Some(match name {
        "AF_INET" => libc::AF_INET as u64,
        "AF_INET6" => libc::AF_INET6 as u64,
        "AF_NETLINK" => libc::AF_NETLINK as u64,
        "AF_UNIX" => libc::AF_UNIX as u64,
        "IPPROTO_MPTCP" => libc::IPPROTO_MPTCP as u64,
        "IPPROTO_TCP" => libc::IPPROTO_TCP as u64,
        "IPPROTO_UDP" => libc::IPPROTO_UDP as u64,
        "SOL_SOCKET" => libc::SOL_SOCKET as u64,
        "SO_PASSCRED" => libc::SO_PASSCRED as u64,
        // Linux 6.5; not in every libc. Like SO_PASSCRED it makes a unix socket autobind.
        "SO_PASSPIDFD" => 76,
        "MSG_FASTOPEN" => libc::MSG_FASTOPEN as u64,
        // The set-id bits of a mode.
        "S_ISUID_S_ISGID" => u64::from(libc::S_ISUID | libc::S_ISGID),
        "POSIX_FADV_DONTNEED" => libc::POSIX_FADV_DONTNEED as u64,
        "MADV_COLD" => libc::MADV_COLD as u64,
        "MADV_PAGEOUT" => libc::MADV_PAGEOUT as u64,
        // fcntl commands (some newer than the libc crate).
        "F_DUPFD" => libc::F_DUPFD as u64,
        "F_GETFD" => libc::F_GETFD as u64,
        "F_SETFD" => libc::F_SETFD as u64,
        "F_GETFL" => libc::F_GETFL as u64,
        "F_SETFL" => libc::F_SETFL as u64,
        "F_GETLK" => libc::F_GETLK as u64,
        "F_SETLK" => libc::F_SETLK as u64,
        "F_SETLKW" => libc::F_SETLKW as u64,
        "F_SETOWN" => libc::F_SETOWN as u64,
        "F_GETOWN" => libc::F_GETOWN as u64,
        "F_SETSIG" => 10,
        "F_GETSIG" => 11,
        "F_SETOWN_EX" => 15,
        "F_GETOWN_EX" => 16,
        "F_OFD_GETLK" => libc::F_OFD_GETLK as u64,
        "F_OFD_SETLK" => libc::F_OFD_SETLK as u64,
        "F_OFD_SETLKW" => libc::F_OFD_SETLKW as u64,
        "F_SETLEASE" => libc::F_SETLEASE as u64,
        "F_GETLEASE" => libc::F_GETLEASE as u64,
        "F_NOTIFY" => libc::F_NOTIFY as u64,
        "F_DUPFD_QUERY" => 1027,
        "F_CREATED_QUERY" => 1028,
        "F_DUPFD_CLOEXEC" => libc::F_DUPFD_CLOEXEC as u64,
        "F_SETPIPE_SZ" => libc::F_SETPIPE_SZ as u64,
        "F_GETPIPE_SZ" => libc::F_GETPIPE_SZ as u64,
        "F_ADD_SEALS" => libc::F_ADD_SEALS as u64,
        "F_GET_SEALS" => libc::F_GET_SEALS as u64,
        "F_GET_RW_HINT" => 1035,
        "F_GET_FILE_RW_HINT" => 1037,
        "NETLINK_ROUTE" => libc::NETLINK_ROUTE as u64,
        "SOCK_STREAM" => libc::SOCK_STREAM as u64,
        "SOCK_DGRAM" => libc::SOCK_DGRAM as u64,
        "SOCK_SEQPACKET" => libc::SOCK_SEQPACKET as u64,
        // The socket type without SOCK_NONBLOCK and SOCK_CLOEXEC.
        "SOCK_TYPE_MASK" => 0xf,
        // The worker's pid and its negation (its process group for kill),
        // filled into the compiled filter between fork and exec
        // (`child::fill_in_pid`; the values are child::PID_PLACEHOLDER's).
        "WORKER_PID" => WORKER_PID,
        "MINUS_WORKER_PID" => u64::from((WORKER_PID as u32).wrapping_neg()),
        "TIOCSTI" => libc::TIOCSTI,
        "TIOCLINUX" => libc::TIOCLINUX,
        // ioctl requests that change a file's attributes (both argument
        // sizes): chattr flags, the inode generation, fs-verity, encryption.
        "FS_IOC_SETFLAGS" => 0x4008_6602,
        "FS_IOC32_SETFLAGS" => 0x4004_6602,
        "FS_IOC_FSSETXATTR" => 0x401c_5820,
        "FS_IOC_SETVERSION" => 0x4008_7602,
        "FS_IOC32_SETVERSION" => 0x4004_7602,
        "EXT4_IOC_SETVERSION" => 0x4008_6604,
        "EXT4_IOC32_SETVERSION" => 0x4004_6604,
        "FS_IOC_ENABLE_VERITY" => 0x4080_6685,
        "FS_IOC_SET_ENCRYPTION_POLICY" => 0x800c_6613,
        // btrfs: subvolume creation, snapshots, read-only flags.
        "BTRFS_IOC_SUBVOL_CREATE" => 0x5000_940e,
        "BTRFS_IOC_SUBVOL_CREATE_V2" => 0x5000_9418,
        "BTRFS_IOC_SNAP_CREATE" => 0x5000_9401,
        "BTRFS_IOC_SNAP_CREATE_V2" => 0x5000_9417,
        "BTRFS_IOC_SUBVOL_SETFLAGS" => 0x4008_941a,
        "RENAME_WHITEOUT" => u64::from(libc::RENAME_WHITEOUT),
        "PR_SET_PDEATHSIG" => libc::PR_SET_PDEATHSIG as u64,
        "CLONE_THREAD" => libc::CLONE_THREAD as u64,
        "NAMESPACE_FLAGS" => NAMESPACE_FLAGS,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_rule(rule: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(BASE_JSON).unwrap();
        v["seccomp"]["rules"] = serde_json::from_str(&format!("[{rule}]")).unwrap();
        v.to_string()
    }

    #[test]
    fn the_built_in_data_loads() {
        let d = PolicyData::parse(BASE_JSON, CAPABILITIES_JSON).unwrap();
        assert!(d.seccomp.allow.len() > 150);
        assert_eq!(d.seccomp.default, Errno::Perm);
    }

    #[test]
    fn bad_data_is_refused_when_loaded() {
        // (rule, what the error says)
        for (rule, says) in [
            (
                r#"{"syscalls": ["no_such_call"], "why": "w"}"#,
                "unknown system call 'no_such_call'",
            ),
            (
                r#"{"syscalls": ["ioctl"], "condition": "c", "says": "s", "why": "w", "args": [[{"index": 1, "type": "dword", "op": "eq", "val": "NO_SUCH"}]]}"#,
                "unknown constant 'NO_SUCH'",
            ),
            (
                r#"{"syscalls": ["ioctl"], "condition": "c", "says": "s", "why": "w", "args": [[{"index": 1, "type": "dword", "op": {"masked_eq": "NOPE"}, "val": 0}]]}"#,
                "unknown constant 'NOPE'",
            ),
            (
                r#"{"syscalls": ["ioctl"], "condition": "c", "says": "s", "why": "w", "args": [[{"index": 6, "type": "dword", "op": "eq", "val": 0}]]}"#,
                "argument index 6",
            ),
            (
                r#"{"syscalls": ["ioctl"], "condition": "c", "says": "s", "why": "w", "args": [[{"index": 0, "type": "dword", "op": "eq", "val": 4294967296}]]}"#,
                "above 32 bits",
            ),
            (
                r#"{"syscalls": ["ioctl"], "condition": "c", "says": "s", "why": "w", "args": [[{"index": 0, "type": "word", "op": "eq", "val": 0}]]}"#,
                "unknown variant `word`",
            ),
            (
                r#"{"syscalls": ["ioctl"], "condition": "c", "says": "s", "why": "w", "args": [[]]}"#,
                "at least one check",
            ),
            (
                r#"{"syscalls": ["ioctl"], "why": "w", "args": [[{"index": 0, "type": "dword", "op": "eq", "val": 0}]]}"#,
                "need a condition name",
            ),
            (
                r#"{"syscalls": ["ioctl"], "condition": "c", "says": "s", "errno": "EPERM", "why": "w", "args": [[{"index": 0, "type": "dword", "op": "eq", "val": 0}]]}"#,
                "not both",
            ),
            (
                r#"{"syscalls": ["ioctl"], "condition": "c", "why": "w", "args": [[{"index": 0, "type": "dword", "op": "eq", "val": 0}]]}"#,
                "says in words",
            ),
            (
                r#"{"syscalls": ["bind"], "network": "shared", "why": "w"}"#,
                "unknown variant `shared`",
            ),
            (
                r#"{"syscalls": ["ioctl"], "errno": "EWHAT", "why": "w"}"#,
                "unknown variant `EWHAT`",
            ),
            (
                r#"{"syscalls": ["ioctl"], "when": "network.inbound", "why": "w"}"#,
                "unknown capability",
            ),
            (
                r#"{"syscalls": ["ioctl"], "why": "w", "families": []}"#,
                "unknown field `families`",
            ),
        ] {
            let err = PolicyData::parse(&with_rule(rule), CAPABILITIES_JSON).unwrap_err();
            assert!(err.contains(says), "{rule}: {err}");
        }
    }

    #[test]
    fn unread_fields_are_refused() {
        let mut caps: serde_json::Value = serde_json::from_str(CAPABILITIES_JSON).unwrap();
        caps["network.outbound"]["socket_families"] = serde_json::json!(["AF_INET"]);
        let err = PolicyData::parse(BASE_JSON, &caps.to_string()).unwrap_err();
        assert!(err.contains("unknown field `socket_families`"), "{err}");
        let mut caps: serde_json::Value = serde_json::from_str(CAPABILITIES_JSON).unwrap();
        caps["filesystem.read"]["workspace"] = serde_json::json!("read_exec");
        let err = PolicyData::parse(BASE_JSON, &caps.to_string()).unwrap_err();
        assert!(err.contains("workspace is read or write"), "{err}");
        let mut base: serde_json::Value = serde_json::from_str(BASE_JSON).unwrap();
        base["namespaces"] = serde_json::json!({"pid": "prose"});
        let err = PolicyData::parse(&base.to_string(), CAPABILITIES_JSON).unwrap_err();
        assert!(err.contains("unknown field `namespaces`"), "{err}");
        let mut base: serde_json::Value = serde_json::from_str(BASE_JSON).unwrap();
        base["seccomp"]["deny"][0]["syscalls"][0] = serde_json::json!("ptrac");
        let err = PolicyData::parse(&base.to_string(), CAPABILITIES_JSON).unwrap_err();
        assert!(err.contains("unknown system call 'ptrac'"), "{err}");
    }

    #[test]
    fn constants_resolve_to_the_kernel_values() {
        for (name, value) in [
            ("AF_INET", 2),
            ("AF_INET6", 10),
            ("AF_NETLINK", 16),
            ("IPPROTO_MPTCP", 262),
            ("NETLINK_ROUTE", 0),
            ("SOCK_STREAM", 1),
            ("SOCK_SEQPACKET", 5),
            ("TIOCSTI", 0x5412),
            ("TIOCLINUX", 0x541c),
            ("PR_SET_PDEATHSIG", 1),
            ("CLONE_THREAD", 0x10000),
            ("RENAME_WHITEOUT", 4),
            ("FS_IOC_SETFLAGS", libc::FS_IOC_SETFLAGS),
            ("FS_IOC32_SETFLAGS", libc::FS_IOC32_SETFLAGS),
            ("FS_IOC_SETVERSION", libc::FS_IOC_SETVERSION),
            ("FS_IOC32_SETVERSION", libc::FS_IOC32_SETVERSION),
            ("S_ISUID_S_ISGID", 0o6000),
            ("MSG_FASTOPEN", 0x2000_0000),
            ("SO_PASSCRED", 16),
            ("POSIX_FADV_DONTNEED", 4),
            ("MADV_COLD", 20),
            ("MADV_PAGEOUT", 21),
            ("F_SETLEASE", 1024),
            ("F_GETLEASE", 1025),
            ("F_NOTIFY", 1026),
            ("F_DUPFD_CLOEXEC", 1030),
            ("F_ADD_SEALS", 1033),
        ] {
            assert_eq!(constant(name), Some(value), "{name}");
        }
        assert_eq!(NAMESPACE_FLAGS & libc::CLONE_THREAD as u64, 0);
        assert_eq!(
            constant("WORKER_PID"),
            Some(u64::from(crate::sandbox::child::PID_PLACEHOLDER))
        );
        assert_eq!(
            constant("MINUS_WORKER_PID"),
            Some(u64::from(crate::sandbox::child::NEG_PID_PLACEHOLDER))
        );
        assert_eq!(constant("EPERM"), None);
    }
}
