//! The human rendering of a policy (`ext-runner policy`), in one place.
//! `--json` is the `Serialize` form instead.
//!
//! Written for people: what each declared capability grants, then what the
//! worker may touch (files, network, system calls, processes), each reason
//! said once, in words; no Rust `Debug` output.

use std::fmt::{self, Write as _};

use crate::extension::capabilities::Capability;
use crate::sandbox::guarantees::Guarantee;
use crate::sandbox::policy::{
    Access, AddressSpace, Errno, Limits, Mode, Namespaces, Policy, Requirement, Scope,
    SyscallAction,
};

impl Policy {
    /// A human-readable rendering for `ext-runner policy` (the `Display` form).
    pub fn render(&self) -> String {
        self.to_string()
    }
}

/// What a capability grants, in words (the details follow in the sections).
fn grants(c: Capability, p: &Policy) -> String {
    let ws = p.environment.get("NODUS_WORKSPACE");
    match c {
        Capability::ToolInvoke => {
            "may be invoked, and may call other extensions' tools through the host".into()
        }
        Capability::FilesystemRead => match ws {
            Some(w) => format!("reads the workspace {w}"),
            None => "reads the workspace".into(),
        },
        Capability::FilesystemWrite => match ws {
            Some(w) => format!("reads and writes the workspace {w}"),
            None => "reads and writes the workspace".into(),
        },
        Capability::NetworkOutbound => match &p.egress {
            Some(_) => "connects out through the runner's egress proxy only (see egress)".into(),
            None => match p.landlock.as_ref().and_then(|l| l.tcp_connect.as_ref()) {
                Some(ports) => format!(
                    "connects out over TCP to ports {} (the operator's tcp_ports) and UDP; never listens",
                    join(ports)
                ),
                None => "connects out over TCP (any port) and UDP; never listens".into(),
            },
        },
        Capability::SubprocessRun => {
            "starts processes: fork and exec of the system's programs, under the same confinement"
                .into()
        }
        Capability::MemoryRead => "reads its namespace of the host's memory store".into(),
        Capability::MemoryWrite => "writes its namespace of the host's memory store".into(),
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Paths under one reason, by access.
type PathsByAccess = Vec<(Access, Vec<String>)>;

fn access_words(a: Access) -> &'static str {
    match a {
        Access::Read => "read",
        Access::ReadExec => "read, run",
        Access::ExecFile => "run",
        Access::ReadWriteFile => "read, write",
        Access::Write => "read, write",
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size && n % size == 0 {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}

fn limits_words(l: &Limits) -> String {
    let core = if l.core_bytes == 0 {
        "no core dumps".to_string()
    } else {
        format!("core dumps up to {}", bytes(l.core_bytes))
    };
    format!(
        "{} of memory, {} s of CPU time, {} processes, {} open files, files up to {}, {core}",
        bytes(l.memory_bytes),
        l.cpu_seconds,
        l.processes,
        l.open_files,
        bytes(l.file_size_bytes)
    )
}

fn namespaces_words(n: &Namespaces) -> String {
    let mut v = Vec::new();
    if n.user {
        v.push("user");
    }
    if n.mount {
        v.push("mount (every mount read-only but the scratch folder and a writable workspace)");
    }
    if n.pid {
        v.push("pid (everything it starts dies with it)");
    }
    if n.net {
        v.push("network (no network at all)");
    }
    if n.ipc {
        v.push("ipc");
    }
    if n.uts {
        v.push("uts");
    }
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            Mode::Strict => "strict mode: the worker does not start without the layers it needs",
            Mode::BestEffort => "best-effort mode: the worker starts with what this kernel has",
        };
        writeln!(f, "extension {} ({mode})", self.extension)?;

        writeln!(f, "\ncapabilities")?;
        for c in &self.capabilities {
            writeln!(f, "  {:<17} {}", c.as_str(), grants(*c, self))?;
        }
        if self.capabilities.is_empty() {
            writeln!(
                f,
                "  (none declared: the worker can compute, but cannot even be invoked)"
            )?;
        }
        let missing: Vec<&str> = Capability::ALL
            .iter()
            .filter(|c| !self.capabilities.contains(c))
            .map(|c| c.as_str())
            .collect();
        if !missing.is_empty() {
            writeln!(f, "  not declared: {}", missing.join(", "))?;
        }

        // Files: grouped by reason (each said once), then by access.
        let mut groups: Vec<(&str, PathsByAccess)> = Vec::new();
        for r in &self.filesystem {
            let path = r.path.display().to_string();
            let at = match groups.iter().position(|(why, _)| *why == r.why) {
                Some(i) => i,
                None => {
                    groups.push((&r.why, Vec::new()));
                    groups.len() - 1
                }
            };
            let by_access = &mut groups[at].1;
            match by_access.iter_mut().find(|(a, _)| *a == r.access) {
                Some((_, paths)) => paths.push(path),
                None => by_access.push((r.access, vec![path])),
            }
        }
        let how = if self.landlock.is_some() {
            "Landlock; anything else is refused"
        } else {
            "Landlock is off: not enforced"
        };
        writeln!(f, "\nfiles ({how})")?;
        for (why, by_access) in &groups {
            for (access, paths) in by_access {
                writeln!(f, "  {:<12} {}", access_words(*access), paths.join(" "))?;
            }
            writeln!(f, "  {:<12} ({why})", "")?;
        }
        writeln!(
            f,
            "  {:<12} its private scratch folder ($TMPDIR = $HOME)",
            "read, write"
        )?;
        writeln!(f, "  {:<12} (removed when the worker exits)", "")?;

        writeln!(f, "\nnetwork")?;
        match (&self.egress, &self.landlock) {
            (Some(_), _) => writeln!(f, "  only through the egress proxy (below)")?,
            (None, Some(ll)) => {
                let connect = match (ll.tcp_handled, &ll.tcp_connect) {
                    (false, _) => "any port".to_string(),
                    (true, Some(p)) => format!("ports {} only", join(p)),
                    (true, None) => "refused".to_string(),
                };
                writeln!(f, "  TCP connect: {connect}; TCP listen and bind: refused")?;
                if !ll.scopes.is_empty() {
                    let scopes: Vec<&str> = ll
                        .scopes
                        .iter()
                        .map(|s| match s {
                            Scope::AbstractUnixSocket => {
                                "abstract unix sockets outside the sandbox"
                            }
                            Scope::Signal => "signals to processes outside the sandbox",
                        })
                        .collect();
                    writeln!(f, "  out of reach: {}", scopes.join("; "))?;
                }
            }
            (None, None) => writeln!(f, "  not limited by Landlock (the layer is off)")?,
        }
        if self.namespaces.net {
            writeln!(
                f,
                "  no network namespace of the host: nothing is reachable, loopback included"
            )?;
        }

        match &self.seccomp {
            Some(sc) => {
                writeln!(
                    f,
                    "\nsystem calls (seccomp; any call not listed fails with {})",
                    sc.default
                )?;
                let allowed: Vec<&str> = sc
                    .rules
                    .iter()
                    .filter(|r| r.action == SyscallAction::Allow)
                    .map(|r| r.name.as_str())
                    .collect();
                writeln!(
                    f,
                    "  allowed: {} calls (file I/O, memory, time, signals, polling, threads; `--json` lists them)",
                    allowed.len()
                )?;
                // Conditional and refused calls, grouped by what happens, each reason once.
                let mut seen: Vec<(String, Vec<&str>, &str)> = Vec::new();
                for r in sc.rules.iter().filter(|r| r.action != SyscallAction::Allow) {
                    let what = match &r.action {
                        SyscallAction::AllowIf(c) => format!("allowed {}", c.says),
                        SyscallAction::Errno(Errno::Perm) => "refused".to_string(),
                        SyscallAction::Errno(e) => format!("fail with {e}"),
                        SyscallAction::Supervised => {
                            "supervised (the runner does it or refuses it)".to_string()
                        }
                        SyscallAction::Allow => unreachable!("filtered"),
                    };
                    // "as getxattr" repeats the reason of the call it names.
                    let same_as = r.why.strip_prefix("as ");
                    match seen.iter_mut().find(|(w, names, why)| {
                        *w == what && (*why == r.why || same_as.is_some_and(|n| names.contains(&n)))
                    }) {
                        Some((_, names, _)) => names.push(&r.name),
                        None => seen.push((what, vec![&r.name], &r.why)),
                    }
                }
                for (what, names, why) in &seen {
                    writeln!(f, "  {what}: {}", names.join(", "))?;
                    writeln!(f, "    ({why})")?;
                }
            }
            None => writeln!(f, "\nsystem calls: not filtered (seccomp is off)")?,
        }

        writeln!(f, "\nprocess")?;
        writeln!(f, "  namespaces: {}", namespaces_words(&self.namespaces))?;
        match &self.private_root {
            Some(r) => writeln!(
                f,
                "  private root: read-only binds of the files granted above, the workspace, the scratch folder at /tmp and /var/tmp, a minimal /dev (null zero full random urandom; /dev/shm a private tmpfs of {}{}){}, /etc/passwd and /etc/group naming the worker only",
                bytes(r.shm_bytes),
                if r.devpts { "; /dev/pts and /dev/ptmx" } else { "" },
                if r.proc { ", /proc of its own pid namespace" } else if !self.binds_runner_proc() { ", no /proc (no pid namespace whose procfs may be mounted, and no Landlock to keep the runner's /proc/PID/mem closed)" } else { ", the runner's /proc bound read-only (no pid namespace whose procfs may be mounted: the worker sees the runner's processes, not what Landlock's ptrace restriction keeps: their environment, memory and maps)" },
            )?,
            None => writeln!(f, "  private root: none (no mount namespace): Landlock alone confines files; no /proc, /dev/shm or private /tmp")?,
        }
        // Grants the private root mounts inside its scratch folder (/tmp).
        let under_tmp: Vec<String> = self
            .filesystem
            .iter()
            .filter(|r| {
                self.private_root.is_some()
                    && ["/tmp", "/var/tmp"].iter().any(|t| r.path.starts_with(t))
            })
            .map(|r| r.path.display().to_string())
            .collect();
        if !under_tmp.is_empty() {
            writeln!(
                f,
                "  under /tmp: {}: mounted inside the scratch folder, which is /tmp here, so Landlock grants the scratch folder's rights there and read-only mounts alone keep them read-only; keep them outside /tmp and /var/tmp for two layers (docs/security.md)",
                under_tmp.join(" ")
            )?;
        }
        match &self.limits {
            Some(l) => writeln!(f, "  limits: {}", limits_words(l))?,
            None => writeln!(f, "  limits: none (the layer is off)")?,
        }
        if let Some(c) = &self.pids_cgroup {
            writeln!(f, "  process count also held by a pids cgroup under {c}")?;
        }
        if let (Some(c), Some(l)) = (&self.memory_cgroup, &self.limits) {
            writeln!(
                f,
                "  memory held by a memory cgroup under {c} ({} resident)",
                bytes(l.memory_bytes)
            )?;
        }
        match &self.address_space {
            Some(AddressSpace {
                bytes: Some(b),
                why,
            }) => writeln!(f, "  RLIMIT_AS {} of address space: {why}", bytes(*b))?,
            Some(AddressSpace { bytes: None, why }) => writeln!(f, "  RLIMIT_AS {why}")?,
            None => {}
        }
        if let Some(ids) = &self.worker_ids {
            writeln!(
                f,
                "  identity: a uid and gid of its own from {}..{} (worker_ids), not root",
                ids.first,
                ids.last()
            )?;
            if let Some(why) = &self.worker_ids_derived {
                writeln!(f, "    {why}")?;
            }
            let named = &self.worker_ids_accounts;
            let skipped = super::AccountId::distinct_ids(named);
            if skipped > 0 {
                writeln!(
                    f,
                    "    {skipped} of its {} ids skipped: accounts of the runner's /etc/passwd or /etc/group name them ({}), and a worker given one would share that account's files and processes{}",
                    ids.count,
                    super::AccountId::words(named, 4),
                    if u64::from(ids.count) <= skipped as u64 {
                        "; that leaves none, so no worker can start: give \"worker_ids\" a range no account names"
                    } else {
                        ""
                    }
                )?;
            }
        }
        if let Some(why) = &self.root_identity {
            writeln!(f, "  identity: uid 0 without capabilities: {why}")?;
        }
        if let Some(ext) = &self.idmapped_extension {
            writeln!(
                f,
                "  extension folder {}: an idmapped mount (other users cannot read it; its owner shown as the worker)",
                ext.display()
            )?;
        }
        if let Some(ws) = &self.idmapped_workspace {
            writeln!(
                f,
                "  workspace {}: an idmapped mount, its owner's uid and gid shown as the worker's (what the worker writes is owned by the workspace's owner)",
                ws.display()
            )?;
        }
        if let Some(ws) = &self.lent_workspace {
            writeln!(
                f,
                "  workspace {}: lent to the worker's uid with ACL entries (its owner's rights) on its folders and files for the run; at unload the entries are removed and what the worker made is given to the workspace's owner (no idmapped mount can be made here)",
                ws.display()
            )?;
        }
        let env: Vec<String> = self
            .environment
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(f, "  environment: {}", env.join(" "))?;
        if !self.environment_pass.is_empty() {
            writeln!(
                f,
                "  passed from the runner's environment: {}",
                self.environment_pass.join(" ")
            )?;
        }

        if let Some(e) = &self.egress {
            f.write_str(&e.render())?;
        }

        writeln!(f, "\nlayers")?;
        for l in &self.layers {
            let state = match (l.wanted, l.enforceable) {
                (false, _) => "off (operator policy)",
                (true, true) => "on",
                (true, false) if l.requirement == Requirement::Hard => "missing (refused)",
                (true, false) => "missing (degraded)",
            };
            let mut line = String::new();
            let _ = write!(line, "  {:<11} {state:<19} {}", l.layer, l.note);
            writeln!(f, "{}", line.trim_end())?;
        }
        for d in &self.degraded {
            writeln!(f, "DEGRADED: {d}")?;
        }
        writeln!(f, "\nguarantees (kept by):")?;
        for g in &self.guarantees {
            let by: Vec<&str> = g.kept_by.iter().map(|m| m.describe()).collect();
            writeln!(
                f,
                "  {:<22} {}",
                g.guarantee.name(),
                if by.is_empty() {
                    "LOST".to_string()
                } else {
                    by.join(", ")
                }
            )?;
            // Tasks and memory: which bound it is, and why not the other.
            if matches!(g.guarantee, Guarantee::Tasks | Guarantee::Memory) && g.kept() {
                for m in &g.missing {
                    writeln!(
                        f,
                        "  {:<22}   not {}: {}",
                        "",
                        m.mechanism.describe(),
                        m.why
                    )?;
                }
            }
        }
        Ok(())
    }
}
