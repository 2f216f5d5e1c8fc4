//! The steps of `derive`, each a small pure function of its inputs, with
//! table tests below.

use std::collections::BTreeMap;

use crate::error::{Error, Result, SandboxKind};
use crate::extension::capabilities::Capability;
use crate::extension::manifest::Manifest;
use crate::sandbox::egress::{self, EgressPlan};
use crate::sandbox::policy::data::{Situation, Syscall, DATA};
#[cfg(test)]
use crate::sandbox::policy::Mode;
use crate::sandbox::policy::{
    Access, AddressSpace, Declared, Errno, FsRule, IdentityFacts, Inputs, LandlockPolicy, Layer,
    LayerReport, Limits, Namespaces, OperatorPolicy, Requirement, SeccompPolicy, SyscallAction,
    SyscallRule, WorkerIds, WorkerIdsSetting, ADDRESS_SPACE_PER_MEMORY, LANDLOCK_ABI_REQUIRED,
};
use crate::sandbox::probe::Probe;

/// Who a root runner's worker runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Identity {
    /// A uid and gid of its own from this range.
    pub ids: Option<WorkerIds>,
    /// Why `ids` were derived from the runner's id maps, and how.
    pub derived: Option<String>,
    /// The workspace, idmapped to the worker's uid.
    pub idmapped: Option<std::path::PathBuf>,
    /// The workspace, lent to the worker's uid with ACL entries.
    pub lent: Option<std::path::PathBuf>,
    /// The extension folder, idmapped (other users cannot read it).
    pub idmapped_extension: Option<std::path::PathBuf>,
    /// Why it runs as uid 0 nonetheless, and whether the operator chose that.
    pub root: Option<(String, bool)>,
}

/// A root runner's worker runs as a uid of its own from the operator's range
/// (by default `WorkerIds::DEFAULT`, or where that is not mapped one derived
/// from the runner's id maps: `IdentityFacts::derived_worker_ids`) wherever
/// it can reach its program and write its workspace as that uid: with a
/// private root, whose binds are made while still root, past folders only
/// root may enter, and with an idmapped workspace, or else one lent to it
/// with ACL entries for its run (`sandbox::acl`). Otherwise as uid 0
/// without capabilities, and why.
pub(super) fn identity(
    op: &OperatorPolicy,
    probe: &Probe,
    facts: &IdentityFacts,
    private_root: bool,
    workspace: Option<&std::path::Path>,
    extension_dir: &std::path::Path,
    declared: &Declared,
) -> Identity {
    if !probe.root {
        return Identity::default();
    }
    // A loss the operator chose says so, in the words every such line uses.
    let as_root = |why: String, by_operator: bool| Identity {
        root: Some(if by_operator {
            (format!("{why}: switched off by the operator policy"), true)
        } else {
            (why, false)
        }),
        ..Identity::default()
    };
    let Some(range) = WorkerIdsSetting::range(op.worker_ids.as_ref()) else {
        return as_root("\"worker_ids\": false".into(), true);
    };
    let last = range.last();
    let default = matches!(op.worker_ids, None | Some(WorkerIdsSetting::Switch(true)));
    let mut derived = None;
    let range = match (facts.maps(&range), default, facts.derived_worker_ids()) {
        (true, _, _) => range,
        // The operator's own range: theirs to fix.
        (false, false, _) => {
            return as_root(
                format!("the runner's user namespace does not map the uids {}..{last} of worker_ids (/proc/self/uid_map): map them, or give \"worker_ids\" a range it maps", range.first),
                false,
            )
        }
        (false, true, Some(ids)) => {
            derived = Some(derived_why(facts, &ids));
            ids
        }
        // Nothing but 0 and the overflow id (or ids below 1000) mapped: the
        // worker does not share nobody's uid (see docs/deploy.md).
        (false, true, None) => {
            return as_root(
                format!("the runner's user namespace does not map the default worker_ids {}..{last}, nor any id a worker could take of its own (/proc/self/uid_map {}, gid_map {}; not 0, below 1000, 65534 nobody, 65535 or the runner's own): map a range of ids into it (a Podman or Kubernetes user namespace maps 65536), or give \"worker_ids\" a range it maps; one shared overflow uid for every worker is not used", range.first, map_words(&facts.mapped_uids), map_words(&facts.mapped_gids)),
                false,
            )
        }
    };
    if let Some(p) = &facts.closed_itself {
        return as_root(
            format!("other users cannot read {} (a uid of worker_ids could not run the worker): make it readable by others (chmod o+rX), or install the interpreter and the extension where they are", p.display()),
            false,
        );
    }
    // Without a mount namespace because the operator switched namespaces off:
    // the operator's choice.
    let no_mount_by_operator = !private_root && !op.layers.namespaces;
    if let (false, Some(p)) = (private_root, &facts.closed_on_the_way) {
        return as_root(
            format!("no mount namespace for a private root, and other users cannot enter {} on the way to the interpreter or the extension: install them where other users can read them (/usr/bin/python3, a venv under /opt), or allow a mount namespace", p.display()),
            no_mount_by_operator,
        );
    }
    // An extension folder only its owner may read (a 0700 folder, pytest's
    // tmp_path): idmapped, as the workspace is, or uid 0.
    let mut idmapped_extension = None;
    if facts.extension_closed {
        match idmap_refused(private_root, &facts.extension_idmap) {
            None => idmapped_extension = Some(extension_dir.to_path_buf()),
            Some(why) => {
                return as_root(
                    format!("other users cannot read the extension folder {}, and it cannot be shown to the worker's uid through an idmapped mount ({why}): make it readable by others (chmod o+rX)", extension_dir.display()),
                    no_mount_by_operator,
                )
            }
        }
    }
    let granted = declared.contains(&Capability::FilesystemRead)
        || declared.contains(&Capability::FilesystemWrite);
    let writes = declared.contains(&Capability::FilesystemWrite);
    let mut idmapped = None;
    let mut lent = None;
    if let (Some(ws), true) = (workspace, granted) {
        match idmap_refused(private_root, &facts.workspace_idmap) {
            None => idmapped = Some(ws.to_path_buf()),
            Some(why) if writes => match &facts.workspace_acl {
                Some(Ok(())) => lent = Some(ws.to_path_buf()),
                acl => {
                    let acl = match acl {
                        Some(Err(e)) => e.as_str(),
                        _ => "not tried",
                    };
                    return as_root(
                        format!("the writable workspace {} can neither be shown to the worker's uid through an idmapped mount ({why}) nor lent to it with ACL entries ({acl})", ws.display()),
                        no_mount_by_operator,
                    );
                }
            },
            // A read-only workspace: read as the worker's uid, which other users' rights apply to.
            Some(_) => {}
        }
    }
    Identity {
        ids: Some(range),
        derived,
        idmapped,
        lent,
        idmapped_extension,
        root: None,
    }
}

/// A user namespace's id map in words: `0..65535`, `0, 65534`.
fn map_words(map: &[(u32, u32)]) -> String {
    if map.is_empty() {
        return "not read".into();
    }
    let spans: Vec<String> = map
        .iter()
        .map(|&(first, count)| match count {
            1 => first.to_string(),
            _ => format!("{first}..{}", u64::from(first) + u64::from(count) - 1),
        })
        .collect();
    spans.join(", ")
}

/// The reason of a range derived from the runner's id maps.
fn derived_why(facts: &IdentityFacts, ids: &WorkerIds) -> String {
    let d = WorkerIds::DEFAULT;
    format!(
        "derived: the runner's user namespace does not map the default range {}..{} (uids {}, gids {}), so root's workers take the top {} ids it maps both as uids and gids, {}..{}, each a uid of its own; the top because a container's own accounts are handed out from the bottom (system accounts below 1000, users from 1000 up); avoided: 0 (root), ids below 1000, 65534 (nobody, the overflow id unmapped owners appear as), 65535 (the 16-bit -1), the kernel's overflow ids, the runner's own uid, gids and groups, and every id an account of the runner's /etc/passwd or /etc/group names ({}; accounts that only NSS knows, LDAP or SSSD, are not seen); give \"worker_ids\" a range to choose otherwise",
        d.first,
        d.last(),
        map_words(&facts.mapped_uids),
        map_words(&facts.mapped_gids),
        ids.count,
        ids.first,
        ids.last(),
        account_words(&facts.accounts),
    )
}

/// The accounts' ids a derived range avoided, in words.
fn account_words(accounts: &[crate::sandbox::policy::AccountId]) -> String {
    let from_1000: Vec<_> = accounts.iter().filter(|a| a.id >= 1000).cloned().collect();
    match crate::sandbox::policy::AccountId::distinct_ids(accounts) {
        0 => "none read".into(),
        n => format!(
            "{n} distinct ids read, {} of them from 1000 up{}",
            crate::sandbox::policy::AccountId::distinct_ids(&from_1000),
            if from_1000.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    crate::sandbox::policy::AccountId::words(&from_1000, 4)
                )
            }
        ),
    }
}

/// Why a folder cannot be shown to the worker's uid through an idmapped
/// mount (`tried`: the probe's attempt, if any), or None when it can.
fn idmap_refused(
    private_root: bool,
    tried: &Option<std::result::Result<(), String>>,
) -> Option<String> {
    if !private_root {
        return Some("no mount namespace for an idmapped mount".into());
    }
    match tried {
        Some(Ok(())) => None,
        Some(Err(why)) => Some(why.clone()),
        None => Some("not tried".into()),
    }
}

/// A manifest may declare only what the operator grants its trust class.
pub(super) fn check_trust_class(
    m: &Manifest,
    declared: &Declared,
    op: &OperatorPolicy,
) -> Result<()> {
    let class = m.provenance.trust_class;
    let Some(allowed) = op.trust_classes.get(&class) else {
        return Ok(());
    };
    if let Some(c) = declared.iter().find(|c| !allowed.contains(c)) {
        return Err(Error::capability(
            c.as_str(),
            Some(&m.name),
            Some(format!(
                "the operator policy does not grant it to trust class '{}'",
                class.as_str()
            )),
        ));
    }
    Ok(())
}

/// The filesystem grants: base.json's system folders and devices, the
/// program and its runtime, the extension folder, the operator's read-only
/// paths, the workspace, and what the declared capabilities add. The scratch
/// folder is added at launch (its path is only known then).
pub(super) fn fs_rules(inp: &Inputs, declared: &Declared) -> Result<Vec<FsRule>> {
    let base = &DATA.landlock;
    let exec = declared.contains(&Capability::SubprocessRun);
    let runtime = if exec { Access::ReadExec } else { Access::Read };
    let rule = |path: &std::path::Path, access, why: &str| FsRule {
        path: path.to_path_buf(),
        access,
        why: why.to_string(),
    };
    let mut rules = Vec::new();
    rules.extend(
        base.read_exec
            .paths
            .iter()
            .map(|p| rule(p, runtime, &base.read_exec.why)),
    );
    rules.extend(
        base.read
            .paths
            .iter()
            .map(|p| rule(p, Access::Read, &base.read.why)),
    );
    let devices = &base.devices;
    rules.extend(
        devices
            .read_write
            .iter()
            .map(|p| rule(p, Access::ReadWriteFile, &devices.why)),
    );
    rules.extend(
        devices
            .read
            .iter()
            .map(|p| rule(p, Access::Read, &devices.why)),
    );
    let prefix = "the interpreter's own prefix (standard library, packages)";
    rules.extend(
        inp.program
            .runtime_dirs
            .iter()
            .map(|d| rule(d, runtime, prefix)),
    );
    rules.push(rule(
        &inp.program.program,
        Access::ExecFile,
        "the worker's program",
    ));
    if let Some(l) = &inp.program.loader {
        rules.push(rule(l, Access::ExecFile, "the program's dynamic loader"));
    }
    rules.push(rule(
        inp.extension_dir,
        Access::Read,
        "the extension's own folder",
    ));
    let ro = "operator policy: read_only_paths";
    rules.extend(
        inp.operator
            .read_only_paths
            .iter()
            .map(|p| rule(p, Access::Read, ro)),
    );
    rules.extend(workspace_rule(inp, declared)?);
    if declared.contains(&Capability::NetworkOutbound) {
        let why = "name resolution (network.outbound)";
        let paths = &DATA.cap(Capability::NetworkOutbound).read;
        rules.extend(paths.iter().map(|p| rule(p, Access::Read, why)));
    }
    if exec {
        let why = "programs subprocess.run may execute";
        let paths = &DATA.cap(Capability::SubprocessRun).exec;
        rules.extend(paths.iter().map(|p| rule(p, Access::ReadExec, why)));
    }
    Ok(rules)
}

/// The workspace, read with `filesystem.read`, written with
/// `filesystem.write`: it must be given, and lie in the operator's roots.
fn workspace_rule(inp: &Inputs, declared: &Declared) -> Result<Option<FsRule>> {
    // The widest access a declared capability gives (capabilities.json's `workspace`).
    let Some((access, c)) = declared
        .iter()
        .filter_map(|&c| DATA.cap(c).workspace.map(|a| (a, c)))
        .max()
    else {
        return Ok(None);
    };
    let name = &inp.manifest.name;
    let ws = inp.workspace.ok_or_else(|| Error::sandbox(SandboxKind::Workspace, format!(
        "'{name}' declares {c} but no workspace was given: set HostOptions::workspace (the host folder it may {})",
        if access == Access::Write { "read and write" } else { "read" }
    )))?;
    let roots = &inp.operator.workspace_roots;
    if !roots.is_empty() && !roots.iter().any(|r| ws.starts_with(r)) {
        return Err(Error::capability(
            c.as_str(),
            Some(name),
            Some(format!(
                "workspace {} is outside the operator's workspace_roots",
                ws.display()
            )),
        ));
    }
    Ok(Some(FsRule {
        path: ws.to_path_buf(),
        access,
        why: DATA.cap(c).why.clone(),
    }))
}

/// Landlock's TCP rules and scopes: TCP denied without `network.outbound`,
/// the operator's ports with it (any port when it lists none).
pub(super) fn landlock(
    op: &OperatorPolicy,
    declared: &Declared,
    requirement: Requirement,
    egress: Option<&EgressPlan>,
    kernel_abi: u8,
) -> LandlockPolicy {
    let net = declared.contains(&Capability::NetworkOutbound);
    // With egress, the proxy's port in the worker's namespace is the one TCP
    // port it may connect to (tcp_ports is for the proxy's rules to say).
    let ports = match egress {
        Some(e) => vec![e.proxy.port()],
        None => op.tcp_ports.clone(),
    };
    LandlockPolicy {
        requirement,
        abi_required: LANDLOCK_ABI_REQUIRED,
        abi: kernel_abi.min(LANDLOCK_ABI_REQUIRED),
        tcp_handled: !net || !ports.is_empty(),
        tcp_connect: net.then_some(ports).filter(|p| !p.is_empty()),
        scopes: DATA.landlock.scopes.clone(),
    }
}

/// The system call rules, all from base.json: the allowlist, the rules that
/// apply to what was declared (`when`/`unless`) and to what else the worker
/// gets (`network`, `with`, `without`: its own network namespace, where
/// nothing it binds is the host's, a private root, pid namespace, Landlock
/// scopes), the denials, and the overrides, each replacing the rule of its
/// calls (relaxations the namespaces make harmless, and what seccomp takes
/// over where a mechanism is missing).
pub(super) fn seccomp(declared: &Declared, at: &Situation) -> SeccompPolicy {
    let data = &DATA.seccomp;
    let rule = |s: &Syscall, action: &SyscallAction, why: &str| SyscallRule {
        name: s.name.clone(),
        number: s.number,
        action: action.clone(),
        why: why.to_string(),
    };
    let mut rules: Vec<SyscallRule> = data
        .allow
        .iter()
        .map(|s| rule(s, &SyscallAction::Allow, &data.allow_why))
        .collect();
    for r in data.rules.iter().filter(|r| r.applies(declared, at)) {
        rules.extend(r.syscalls.iter().map(|s| rule(s, &r.action, &r.why)));
    }
    let deny = SyscallAction::Errno(Errno::Perm);
    for (names, why) in &data.deny {
        rules.extend(names.iter().map(|s| rule(s, &deny, why)));
    }
    for r in data.overrides.iter().filter(|r| r.applies(declared, at)) {
        for s in &r.syscalls {
            rules.retain(|x| x.name != s.name);
            rules.push(rule(s, &r.action, &r.why));
        }
    }
    SeccompPolicy {
        default: data.default,
        rules,
    }
}

/// The egress plan of a worker: `network.outbound` and an operator `egress`
/// section (the manifest's request narrows it; a malformed one is refused).
pub(super) fn egress_plan(inp: &Inputs, declared: &Declared) -> Result<Option<EgressPlan>> {
    let m = inp.manifest;
    let Some(section) = inp.operator.egress_for(&m.name) else {
        return Ok(None);
    };
    if !declared.contains(&Capability::NetworkOutbound) {
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
pub(super) fn egress_enforceable(name: &str, ns_on: bool, probe: &Probe) -> Result<()> {
    let why = if !ns_on {
        "the operator policy switches the namespaces layer off"
    } else if !userns_ok(probe) {
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

/// The namespaces the worker gets (a user namespace where one is needed to
/// create the others), and those this kernel or user cannot make (for
/// instance under `user.max_net_namespaces = 0`) though the others can be.
pub(super) fn namespaces(
    probe: &Probe,
    declared: &Declared,
    on: bool,
    egress: bool,
) -> (Namespaces, Vec<&'static str>) {
    // A network namespace of its own unless a declared capability keeps the
    // host network (capabilities.json's `network_namespace`: network.outbound),
    // and with egress (only the proxy to reach).
    let own_net = declared.iter().all(|&c| DATA.cap(c).network_namespace) || egress;
    if !on || !userns_ok(probe) {
        return (Namespaces::default(), Vec::new());
    }
    // Of the others, those the probe could make (with their mount steps);
    // none when none of them can be made (a user namespace alone gives nothing).
    let mut ns = Namespaces {
        user: !probe.root,
        mount: probe.mount_namespaces,
        pid: probe.pid_namespaces,
        net: own_net && probe.network_namespaces,
        ipc: probe.ipc_namespaces,
        uts: probe.uts_namespaces,
    };
    if !(ns.mount || ns.pid || ns.net || ns.ipc || ns.uts) {
        ns = Namespaces::default();
    }
    let missing = [
        ("net", own_net && !probe.network_namespaces),
        ("pid", !probe.pid_namespaces),
        ("ipc", !probe.ipc_namespaces),
    ]
    .into_iter()
    .filter(|&(_, missing)| missing)
    .map(|(name, _)| name)
    .collect();
    (ns, missing)
}

/// Whether the namespaces can be made at all: root makes them directly,
/// anyone else from a user namespace.
fn userns_ok(probe: &Probe) -> bool {
    probe.user_namespaces || probe.root
}

/// The limits (base.json's, with the operator's overrides), and the pids
/// cgroup of every root worker: RLIMIT_NPROC does not bind uid 0, and
/// threads count too (joining costs an RCU grace period, ~10 ms, on cgroup v1).
pub(super) fn limits(
    op: &OperatorPolicy,
    probe: &Probe,
    declared: &Declared,
) -> (Option<Limits>, Option<String>) {
    if !op.layers.limits {
        return (None, None);
    }
    let limits = DATA.limits.overridden_by(&op.limits);
    // Every root worker: RLIMIT_NPROC does not bind uid 0, and threads count too.
    let _ = declared;
    let cgroup = probe.root.then(|| probe.pids_cgroup.clone()).flatten();
    (Some(limits), cgroup)
}

/// The worker's RLIMIT_AS. Where a memory cgroup holds the worker it is the
/// memory bound and RLIMIT_AS is not set; else RLIMIT_AS is the bound, at
/// [`ADDRESS_SPACE_PER_MEMORY`] × `memory_bytes` unless the operator set
/// `address_space_bytes` (which wins in both cases).
pub(super) fn address_space(l: &Limits, memory_cgroup: bool) -> AddressSpace {
    let (bytes, why) = match (l.address_space_bytes, memory_cgroup) {
        (Some(b), true) => (
            Some(b),
            "limits.address_space_bytes, the operator's: address space (reservations included) on top of the memory cgroup, which bounds memory".to_string(),
        ),
        (Some(b), false) => (
            Some(b),
            "limits.address_space_bytes, the operator's: no memory cgroup, so this is the memory bound, on address space (reservations included), not on resident memory".to_string(),
        ),
        (None, true) => (
            None,
            "not set: the memory cgroup bounds memory (what is resident), and address space is not memory (a stack per thread, OpenBLAS's buffer per calling thread, reserved and mostly never touched): a limit on it would only stop threads".to_string(),
        ),
        (None, false) => (
            Some(l.memory_bytes.saturating_mul(ADDRESS_SPACE_PER_MEMORY)),
            format!(
                "{ADDRESS_SPACE_PER_MEMORY} × limits.memory_bytes: no memory cgroup, so this is the memory bound, on address space, not on resident memory: threads reserve far more of it than they use (64 threads calling numpy: 2.7 GiB for 75 MiB resident, docs/deploy.md), so resident memory is bounded at {ADDRESS_SPACE_PER_MEMORY} × limits.memory_bytes (a memory cgroup, or limits.address_space_bytes, bounds it tighter)"
            ),
        ),
    };
    AddressSpace { bytes, why }
}

/// The worker's whole environment: base.json's, HOME and TMPDIR in the
/// scratch folder, the granted workspace's path (NODUS_WORKSPACE, the same
/// inside the sandbox), and the declared capabilities for the worker's own
/// module (which explains denials; enforcement is the kernel's).
pub(super) fn environment(
    declared: &Declared,
    egress: Option<&EgressPlan>,
    workspace: Option<&std::path::Path>,
    own_net: bool,
    op: &OperatorPolicy,
) -> BTreeMap<String, String> {
    let mut env = DATA.environment.clone();
    // The operator's variables (its section's included); the runner's own below win.
    env.extend(
        op.environment
            .set
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    env.insert("HOME".into(), "$SCRATCH".into());
    env.insert("TMPDIR".into(), "$SCRATCH".into());
    let granted = declared.contains(&Capability::FilesystemRead)
        || declared.contains(&Capability::FilesystemWrite);
    if let (Some(ws), true) = (workspace, granted) {
        env.insert("NODUS_WORKSPACE".into(), ws.display().to_string());
    }
    let names: Vec<&str> = declared.iter().map(|c| c.as_str()).collect();
    env.insert("NODUS_EXTENSION_CAPABILITIES".into(), names.join(","));
    if let Some(e) = egress {
        env.extend(e.environment());
    }
    // For the same module: binds are refused in the host's network namespace.
    if !own_net {
        env.insert("NODUS_EXTENSION_HOST_NETWORK".into(), "1".into());
    }
    env
}

/// Each layer in `Layer::ALL` order: how much it is needed, whether the
/// operator wants it, whether this kernel can enforce it, and what is lost
/// without it. `own_ids`: a root runner's worker runs as a uid of its own.
pub(super) fn layer_reports(
    op: &OperatorPolicy,
    probe: &Probe,
    declared: &Declared,
    own_ids: bool,
) -> Vec<LayerReport> {
    let exec = declared.contains(&Capability::SubprocessRun);
    Layer::ALL
        .into_iter()
        .map(|layer| {
            let (enforceable, note) = match layer {
                Layer::Landlock => (
                    probe.landlock_abi >= 1,
                    if probe.landlock_missing.is_empty() {
                        format!(
                            "filesystem, TCP and scope rules (Landlock ABI {})",
                            probe.landlock_abi
                        )
                    } else {
                        format!(
                            "Landlock ABI {}; it lacks: {}",
                            probe.landlock_abi,
                            probe.landlock_missing.join("; ")
                        )
                    },
                ),
                Layer::Seccomp => (probe.seccomp_filter, "system call allowlist".into()),
                Layer::Namespaces => (userns_ok(probe), namespaces_note(probe)),
                // Root is not bound by RLIMIT_NPROC: a root worker that may fork
                // needs the pids cgroup for any process limit at all.
                Layer::Limits => (
                    !(probe.root && probe.pids_cgroup.is_none() && !own_ids),
                    limits_note(probe, exec, own_ids),
                ),
            };
            LayerReport {
                layer,
                requirement: Requirement::of(op.mode, layer),
                wanted: op.layers.on(layer),
                enforceable,
                note,
            }
        })
        .collect()
}

fn namespaces_note(probe: &Probe) -> String {
    if userns_ok(probe) {
        "pid, ipc, uts and (without network.outbound) net namespaces".into()
    } else {
        "user namespaces are not available to this user: no pid/net/ipc namespace. Covered: network by seccomp (socket) and Landlock (TCP); signals and abstract sockets by Landlock scopes; process lifetime by setsid and the setsid/setpgid denial. Lost: a worker's orphaned children outlive a SIGKILLed runner".into()
    }
}

fn limits_note(probe: &Probe, exec: bool, own_ids: bool) -> String {
    let tasks = if !probe.root {
        "tasks by RLIMIT_NPROC (counted in the worker's user namespace)".to_string()
    } else if probe.pids_cgroup.is_some() {
        "tasks (threads included) by a pids cgroup, as RLIMIT_NPROC does not bind uid 0".to_string()
    } else if own_ids {
        "tasks by RLIMIT_NPROC: root's worker runs as a uid of its own (worker_ids)".to_string()
    } else {
        format!(
            "no task bound: root, which RLIMIT_NPROC does not bind, {} and no pids cgroup ({})",
            if exec {
                "may fork (subprocess.run)"
            } else {
                "may start threads"
            },
            probe.pids_cgroup_missing.as_deref().unwrap_or("none found")
        )
    };
    let memory = if probe.memory_cgroup.is_some() {
        "memory by a memory cgroup (no RLIMIT_AS unless the operator sets limits.address_space_bytes)"
    } else {
        "memory by RLIMIT_AS (address space, not resident memory: no memory cgroup)"
    };
    format!("rlimits (CPU time, files); {tasks}; {memory}")
}

/// The report of `layer`.
pub(super) fn report(layers: &[LayerReport], layer: Layer) -> &LayerReport {
    layers
        .iter()
        .find(|l| l.layer == layer)
        .expect("layer_reports reports every layer")
}

#[cfg(test)]
mod tests;
