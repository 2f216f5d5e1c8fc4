//! The human rendering of a policy (`ext-runner policy`), in one place.
//! `--json` is the `Serialize` form instead.

use std::fmt::{self, Write as _};

use crate::sandbox::policy::{Condition, Policy, SyscallAction, LANDLOCK_ABI_REQUIRED};

impl Policy {
    /// A human-readable rendering for `ext-runner policy` (the `Display` form).
    pub fn render(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.capabilities.iter().map(|c| c.as_str()).collect();
        writeln!(f, "extension {} ({:?} mode)", self.extension, self.mode)?;
        writeln!(f, "capabilities: {}", names.join(", "))?;
        writeln!(f, "\nlayers:")?;
        for l in &self.layers {
            writeln!(
                f,
                "  {:<11} wanted={:<5} enforceable={:<5} {}",
                l.layer, l.wanted, l.enforceable, l.note
            )?;
        }
        let (abi, on) = match &self.landlock {
            Some(ll) => (ll.abi_required, "on"),
            None => (LANDLOCK_ABI_REQUIRED, "off"),
        };
        writeln!(f, "\nlandlock (ABI >= {abi}, {on}):")?;
        for r in &self.filesystem {
            let access = format!("{:?}", r.access);
            writeln!(f, "  {access:<14} {}  # {}", r.path.display(), r.why)?;
        }
        writeln!(f, "  write          $SCRATCH  # private scratch folder (TMPDIR, HOME), removed when the worker exits")?;
        if let Some(ll) = &self.landlock {
            let tcp = match (ll.tcp_handled, &ll.tcp_connect) {
                (false, _) => "any port".to_string(),
                (true, Some(p)) => format!("ports {p:?}"),
                (true, None) => "denied".to_string(),
            };
            writeln!(f, "  tcp connect: {tcp}\n  tcp bind: denied")?;
            writeln!(f, "  scopes: {}", ll.scopes.join(", "))?;
        }
        match &self.seccomp {
            Some(sc) => {
                writeln!(f, "\nseccomp (default: {}):", sc.default)?;
                let allowed: Vec<&str> = sc
                    .rules
                    .iter()
                    .filter(|r| r.action == SyscallAction::Allow)
                    .map(|r| r.name.as_str())
                    .collect();
                writeln!(f, "  allow: {}", allowed.join(" "))?;
                for r in sc.rules.iter().filter(|r| r.action != SyscallAction::Allow) {
                    writeln!(f, "  {:<18} {}  # {}", r.name, action(&r.action), r.why)?;
                }
            }
            None => writeln!(f, "\nseccomp: off")?,
        }
        writeln!(f, "\nnamespaces: {:?}", self.namespaces)?;
        match &self.limits {
            Some(l) => writeln!(f, "limits: {l:?}")?,
            None => writeln!(f, "limits: off")?,
        }
        if let Some(c) = &self.pids_cgroup {
            writeln!(f, "pids cgroup: under {c}")?;
        }
        writeln!(f, "environment: {:?}", self.environment)?;
        if let Some(e) = &self.egress {
            f.write_str(&e.render())?;
        }
        for d in &self.degraded {
            writeln!(f, "DEGRADED: {d}")?;
        }
        Ok(())
    }
}

/// `AllowIf(CloneThreadOnly)`, `Errno("EPERM")`.
fn action(a: &SyscallAction) -> String {
    let mut s = String::new();
    let _ = match a {
        SyscallAction::Allow => write!(s, "Allow"),
        SyscallAction::AllowIf(c) => write!(s, "AllowIf({})", condition(*c)),
        SyscallAction::Errno(e) => write!(s, "Errno({:?})", e.as_str()),
    };
    s
}

fn condition(c: Condition) -> String {
    format!("{c:?}")
}
