//! Compiling a [`SeccompPolicy`] into the BPF programs the child installs.
//!
//! Two backends compile the same rules (docs/benchmarks.md, "Seccomp filter
//! size" has the figures that chose between them):
//!
//! - [`Backend::Seccompiler`]: a linear chain (Firecracker's seccompiler):
//!   five instructions per allowed call, compared one after the other in
//!   system call number order, one filter more per errno other than the
//!   default.
//! - [`Backend::Libseccomp`]: libseccomp with its binary-tree optimization
//!   (`SCMP_FLTATR_CTL_OPTIMIZE` = 2), exported with `seccomp_export_bpf`.
//!   libseccomp compares whole 64-bit arguments and has no "masked not
//!   equal", so a 32-bit check becomes a masked equality on the low half,
//!   and a condition made of `ne` checks (allowed unless the argument is one
//!   of some values) becomes an unconditional allow in the main filter and
//!   a second filter that answers the default errno for exactly the refused
//!   values (libseccomp refuses a rule whose action is the default).
//!
//! Either way the result is plain `sock_filter` programs compiled before the
//! fork: the child installs them with one `seccomp()` call each and nothing
//! else (no library call, no allocation). The two are checked to give the
//! same verdicts by `tests/seccomp_backends.rs`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op,
    SeccompCondition as Cond, SeccompFilter, SeccompRule,
};

use crate::error::{Error, Result, SandboxKind};
/// What the filters compare signal targets with; the child fills in the pid.
pub use crate::sandbox::child::{NEG_PID_PLACEHOLDER, PID_PLACEHOLDER};
use crate::sandbox::policy::{
    ArgCheck, ArgOp, ArgWidth, Condition, Errno, SeccompPolicy, SyscallAction,
};

/// Which compiler turns the rules into BPF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// seccompiler 0.5: a linear filter.
    Seccompiler,
    /// libseccomp 2.5 with a binary tree over the system call numbers.
    Libseccomp,
}

impl Backend {
    /// The one launches use: libseccomp, by the figures in
    /// docs/benchmarks.md (a third of the instructions, installed in a
    /// fifth of the time, refused and late argument-checked calls far
    /// cheaper; compiling costs more, once per process and policy).
    pub const CHOSEN: Backend = Backend::Libseccomp;

    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Seccompiler => "seccompiler",
            Backend::Libseccomp => "libseccomp",
        }
    }
}

fn prepare_error(what: impl std::fmt::Display) -> Error {
    Error::sandbox(SandboxKind::Prepare, format!("seccomp: {what}"))
}

/// Compiles `policy` with `backend`: the filters in the order they are to be
/// installed.
pub fn compile(policy: &SeccompPolicy, backend: Backend) -> Result<Vec<BpfProgram>> {
    match backend {
        Backend::Seccompiler => seccompiler_filters(policy),
        Backend::Libseccomp => libseccomp_filters(policy),
    }
}

/// The action of each system call the policy names (a later rule for a
/// number replaces an earlier one; `steps::seccomp` names each call once).
fn actions(policy: &SeccompPolicy) -> BTreeMap<i64, &SyscallAction> {
    policy.rules.iter().map(|r| (r.number, &r.action)).collect()
}

/// The filter of the supervised calls (`SyscallAction::Supervised`):
/// SECCOMP_RET_USER_NOTIF for each, allow for every other call (the main
/// filters, which allow the supervised ones, decide those; the kernel takes
/// the most severe answer of all filters, so their refusals still win), a
/// foreign architecture and x32 numbers included (the main filter kills
/// them). Installed first, with the listener the runner's supervisor
/// answers on (`child::install_listener`: the raw seccomp() call with
/// SECCOMP_FILTER_FLAG_NEW_LISTENER, not libseccomp's `seccomp_load` and
/// `seccomp_notify_fd`, which compile and allocate in the child). None when
/// the policy supervises nothing.
///
/// Compiled by libseccomp (`ScmpAction::Notify`, API level 5): it replaced
/// 13 instructions written by hand, by the figures in docs/security.md
/// ("The metadata supervisor"): the same verdict on every input the
/// harness tries, alone and stacked (`tests/seccomp_backends.rs`), 17
/// instructions, install and per-call cost within noise; the hand-written
/// one stays as the harness's reference (`examples/seccomp-bench/cases.rs`).
pub fn supervised_filter(policy: &SeccompPolicy) -> Result<Option<BpfProgram>> {
    use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};
    let fail = |e: libseccomp::error::SeccompError| prepare_error(format!("libseccomp: {e}"));
    let numbers: Vec<i64> = actions(policy)
        .into_iter()
        .filter(|(_, a)| **a == SyscallAction::Supervised)
        .map(|(n, _)| n)
        .collect();
    if numbers.is_empty() {
        return Ok(None);
    }
    api_level()?;
    let mut ctx = ScmpFilterContext::new(ScmpAction::Allow).map_err(fail)?;
    // Another architecture: allowed here, the main filter kills it.
    ctx.set_act_badarch(ScmpAction::Allow).map_err(fail)?;
    ctx.set_ctl_optimize(2).map_err(fail)?;
    for n in numbers {
        let nr = ScmpSyscall::from(i32::try_from(n).map_err(prepare_error)?);
        ctx.add_rule_exact(ScmpAction::Notify, nr).map_err(fail)?;
    }
    export(&ctx).map(Some)
}

/// libseccomp's API level, set once for the process (`seccomp_api_set` is
/// global). Before its first filter libseccomp asks the kernel what it
/// supports (seccomp() calls), and where that is refused it refuses
/// SECCOMP_RET_KILL_PROCESS. It only compiles here (the child installs), so
/// it is told the level instead: 5, user notification (Linux 5.0), which the
/// supervised calls' filter needs; level 3 (KILL_PROCESS, what the main
/// filters need) compiles them to the same instructions
/// (tests/seccomp_backends.rs, `the_api_level_does_not_change_the_filters`).
fn api_level() -> Result<()> {
    static API: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    API.get_or_init(|| libseccomp::set_api(API_LEVEL).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| prepare_error(format!("libseccomp: setting its API level: {e}")))
}

/// The level `api_level()` sets.
pub const API_LEVEL: u32 = 5;

// ---------------------------------------------------------------- seccompiler

/// seccompiler's form of one argument check.
fn arg_condition(c: &ArgCheck) -> Result<Cond> {
    let len = match c.width {
        ArgWidth::Dword => Len::Dword,
        ArgWidth::Qword => Len::Qword,
    };
    let op = match c.op {
        ArgOp::Eq => Op::Eq,
        ArgOp::Ne => Op::Ne,
        ArgOp::Lt => Op::Lt,
        ArgOp::Le => Op::Le,
        ArgOp::Gt => Op::Gt,
        ArgOp::Ge => Op::Ge,
        ArgOp::MaskedEq(mask) => Op::MaskedEq(mask),
    };
    Cond::new(c.index, len, op, c.value).map_err(prepare_error)
}

/// One seccompiler rule per group: the call passes when any group's checks all hold.
fn conditions(c: &Condition) -> Result<Vec<SeccompRule>> {
    c.any_of
        .iter()
        .map(|group| {
            let conds = group.iter().map(arg_condition).collect::<Result<_>>()?;
            SeccompRule::new(conds).map_err(prepare_error)
        })
        .collect()
}

fn seccompiler_filters(policy: &SeccompPolicy) -> Result<Vec<BpfProgram>> {
    let arch: seccompiler::TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| prepare_error(format!("unsupported architecture: {e:?}")))?;
    let mut allow: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    // Errors other than the default, each answered by a filter of its own
    // installed after the main one (among equal actions the last wins).
    let mut other_errors: BTreeMap<Errno, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
    for r in &policy.rules {
        match &r.action {
            // The supervisor's filter decides it (`supervised_filter`).
            SyscallAction::Allow | SyscallAction::Supervised => {
                allow.insert(r.number, vec![]);
            }
            SyscallAction::AllowIf(c) => {
                allow.insert(r.number, conditions(c)?);
            }
            SyscallAction::Errno(e) if *e == policy.default => {}
            SyscallAction::Errno(e) => {
                other_errors.entry(*e).or_default().insert(r.number, vec![]);
            }
        }
    }
    let main = SeccompFilter::new(
        allow,
        SeccompAction::Errno(policy.default.raw() as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(prepare_error)?;
    let mut filters = vec![main.try_into().map_err(prepare_error)?];
    for (n, rules) in other_errors {
        let f = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(n.raw() as u32),
            arch,
        )
        .map_err(prepare_error)?;
        filters.push(f.try_into().map_err(prepare_error)?);
    }
    Ok(filters)
}

// ----------------------------------------------------------------- libseccomp

/// One argument check as libseccomp can say it: `arg & mask == value`, or
/// (`negated`) its opposite, which libseccomp cannot say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Literal {
    arg: u8,
    mask: u64,
    value: u64,
    negated: bool,
}

impl Literal {
    fn of(c: &ArgCheck, condition: &str) -> Result<Literal> {
        let width = match c.width {
            ArgWidth::Dword => u64::from(u32::MAX),
            ArgWidth::Qword => u64::MAX,
        };
        let (mask, negated) = match c.op {
            ArgOp::Eq => (width, false),
            ArgOp::Ne => (width, true),
            ArgOp::MaskedEq(m) => (m & width, false),
            ArgOp::Lt | ArgOp::Le | ArgOp::Gt | ArgOp::Ge => {
                return Err(prepare_error(format!(
                    "condition {condition}: an order comparison, which the libseccomp backend does not translate"
                )))
            }
        };
        Ok(Literal {
            arg: c.index,
            mask,
            value: c.value & mask,
            negated,
        })
    }

    fn not(self) -> Literal {
        Literal {
            negated: !self.negated,
            ..self
        }
    }
}

/// A conjunction of literals, simplified: at most one positive literal per
/// argument (masked equalities merge), negated ones only where no positive
/// literal decides them. `None`: it can never hold.
fn simplify(lits: &[Literal]) -> Option<Vec<Literal>> {
    let mut positive: BTreeMap<u8, (u64, u64)> = BTreeMap::new();
    for l in lits.iter().filter(|l| !l.negated) {
        let (mask, value) = positive.entry(l.arg).or_insert((0, 0));
        // Both must agree where their masks overlap.
        if (*value ^ l.value) & *mask & l.mask != 0 {
            return None;
        }
        *mask |= l.mask;
        *value |= l.value;
    }
    let mut out: Vec<Literal> = positive
        .iter()
        .map(|(&arg, &(mask, value))| Literal {
            arg,
            mask,
            value,
            negated: false,
        })
        .collect();
    for l in lits.iter().filter(|l| l.negated) {
        match positive.get(&l.arg) {
            // Decided by the positive literal: false (contradiction) or true (drop).
            Some(&(mask, value)) if mask & l.mask == l.mask => {
                if value & l.mask == l.value {
                    return None;
                }
            }
            _ if out.contains(l) => {}
            _ => out.push(*l),
        }
    }
    Some(out)
}

/// At most this many conjunctions when a condition is turned around.
const MAX_CONJUNCTIONS: usize = 256;

/// A condition as libseccomp rules: `(allow, deny)` where the call passes
/// when one conjunction of `allow` holds (an empty one always holds) and no
/// conjunction of `deny` does; every literal positive.
type Rules = (Vec<Vec<Literal>>, Vec<Vec<Literal>>);

fn translate(c: &Condition) -> Result<Rules> {
    let groups: Vec<Vec<Literal>> = c
        .any_of
        .iter()
        .map(|g| g.iter().map(|a| Literal::of(a, &c.name)).collect())
        .collect::<Result<_>>()?;
    let groups: Vec<Vec<Literal>> = groups.iter().filter_map(|g| simplify(g)).collect();
    if groups.iter().all(|g| g.iter().all(|l| !l.negated)) {
        return Ok((groups, vec![]));
    }
    // not (g1 or g2 ...) = (not g1) and (not g2) ...: distribute.
    let mut deny: Vec<Vec<Literal>> = vec![vec![]];
    for g in &groups {
        let mut next = Vec::new();
        for conj in &deny {
            for l in g {
                let mut c2 = conj.clone();
                c2.push(l.not());
                if let Some(s) = simplify(&c2) {
                    next.push(s);
                }
            }
        }
        if next.len() > MAX_CONJUNCTIONS {
            return Err(prepare_error(format!(
                "condition {}: more than {MAX_CONJUNCTIONS} conjunctions for libseccomp",
                c.name
            )));
        }
        deny = next;
    }
    if deny.iter().any(|g| g.iter().any(|l| l.negated)) {
        // One group of equalities and not-equals: allowed when the
        // equalities hold, refused when any not-equal does not.
        if let [g] = groups.as_slice() {
            let (neg, pos): (Vec<Literal>, Vec<Literal>) = g.iter().partition(|l| l.negated);
            return Ok((vec![pos], neg.iter().map(|l| vec![l.not()]).collect()));
        }
        return Err(prepare_error(format!(
            "condition {}: mixes checks that libseccomp cannot say either way (a not-equal next to an equality on another argument)",
            c.name
        )));
    }
    Ok((vec![vec![]], deny))
}

fn compare(l: &Literal) -> libseccomp::ScmpArgCompare {
    use libseccomp::{ScmpArgCompare, ScmpCompareOp};
    if l.mask == u64::MAX {
        ScmpArgCompare::new(u32::from(l.arg), ScmpCompareOp::Equal, l.value)
    } else {
        ScmpArgCompare::new(
            u32::from(l.arg),
            ScmpCompareOp::MaskedEqual(l.mask),
            l.value,
        )
    }
}

fn libseccomp_filters(policy: &SeccompPolicy) -> Result<Vec<BpfProgram>> {
    use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};
    let fail = |e: libseccomp::error::SeccompError| prepare_error(format!("libseccomp: {e}"));
    api_level()?;
    let context = |default: ScmpAction| -> Result<ScmpFilterContext> {
        let mut ctx = ScmpFilterContext::new(default).map_err(fail)?;
        // What seccompiler does on a foreign architecture.
        ctx.set_act_badarch(ScmpAction::KillProcess).map_err(fail)?;
        ctx.set_ctl_optimize(2).map_err(fail)?;
        Ok(ctx)
    };
    let default = ScmpAction::Errno(policy.default.raw());
    let mut main = context(default)?;
    let mut deny: Option<ScmpFilterContext> = None;
    for (number, action) in actions(policy) {
        let nr = ScmpSyscall::from(i32::try_from(number).map_err(prepare_error)?);
        match action {
            // The supervisor's filter decides it (`supervised_filter`).
            SyscallAction::Allow | SyscallAction::Supervised => {
                main.add_rule_exact(ScmpAction::Allow, nr).map_err(fail)?;
            }
            // The default already answers it (libseccomp refuses such a rule).
            SyscallAction::Errno(e) if *e == policy.default => {}
            SyscallAction::Errno(e) => {
                main.add_rule_exact(ScmpAction::Errno(e.raw()), nr)
                    .map_err(fail)?;
            }
            SyscallAction::AllowIf(c) => {
                let (allow, refuse) = translate(c)?;
                if allow.iter().any(Vec::is_empty) {
                    main.add_rule_exact(ScmpAction::Allow, nr).map_err(fail)?;
                } else {
                    for conj in &allow {
                        let cmps: Vec<_> = conj.iter().map(compare).collect();
                        main.add_rule_conditional_exact(ScmpAction::Allow, nr, &cmps)
                            .map_err(fail)?;
                    }
                }
                if !refuse.is_empty() {
                    let d = match &mut deny {
                        Some(d) => d,
                        None => deny.insert(context(ScmpAction::Allow)?),
                    };
                    for conj in &refuse {
                        let cmps: Vec<_> = conj.iter().map(compare).collect();
                        d.add_rule_conditional_exact(default, nr, &cmps)
                            .map_err(fail)?;
                    }
                }
            }
        }
    }
    let mut filters = vec![export(&main)?];
    if let Some(d) = &deny {
        filters.push(export(d)?);
    }
    Ok(filters)
}

/// The filter's BPF, through a memfd (libseccomp 2.5 exports to a file
/// descriptor only).
fn export(ctx: &libseccomp::ScmpFilterContext) -> Result<BpfProgram> {
    use std::io::{Read, Seek};
    let fd = nix::sys::memfd::memfd_create(
        c"seccomp-bpf",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(|e| prepare_error(format!("memfd_create: {e}")))?;
    let mut file = std::fs::File::from(fd);
    ctx.export_bpf(&file)
        .map_err(|e| prepare_error(format!("libseccomp export: {e}")))?;
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| prepare_error(format!("reading the exported filter: {e}")))?;
    if bytes.is_empty() || bytes.len() % 8 != 0 {
        return Err(prepare_error(format!(
            "libseccomp exported {} bytes, not whole instructions",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|i| seccompiler::sock_filter {
            code: u16::from_ne_bytes([i[0], i[1]]),
            jt: i[2],
            jf: i[3],
            k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(arg: u8, mask: u64, value: u64, negated: bool) -> Literal {
        Literal {
            arg,
            mask,
            value,
            negated,
        }
    }

    #[test]
    fn conjunctions_merge_and_contradictions_go() {
        let m32 = u64::from(u32::MAX);
        // Two masked equalities on one argument merge.
        assert_eq!(
            simplify(&[lit(0, 0x10000, 0x10000, false), lit(0, 0xff00, 0, false)]),
            Some(vec![lit(0, 0x1ff00, 0x10000, false)])
        );
        // eq 1 and eq 2 on one argument never hold; eq 1 and ne 1 neither.
        assert_eq!(
            simplify(&[lit(1, m32, 1, false), lit(1, m32, 2, false)]),
            None
        );
        assert_eq!(
            simplify(&[lit(1, m32, 1, false), lit(1, m32, 1, true)]),
            None
        );
        // eq 1 decides ne 2.
        assert_eq!(
            simplify(&[lit(1, m32, 1, false), lit(1, m32, 2, true)]),
            Some(vec![lit(1, m32, 1, false)])
        );
        // A not-equal on another argument stays.
        assert_eq!(
            simplify(&[lit(1, m32, 1, false), lit(2, m32, 2, true)]),
            Some(vec![lit(1, m32, 1, false), lit(2, m32, 2, true)])
        );
    }

    #[test]
    fn not_equal_conditions_turn_into_refusals() {
        let check = |index, op, value| ArgCheck {
            index,
            width: ArgWidth::Dword,
            op,
            value,
        };
        // setsockopt_no_autobind: level != SOL_SOCKET, or SOL_SOCKET and
        // neither option: refused exactly for (SOL_SOCKET, either option).
        let c = Condition {
            name: "t".into(),
            says: "t".into(),
            any_of: vec![
                vec![check(1, ArgOp::Ne, 1)],
                vec![
                    check(1, ArgOp::Eq, 1),
                    check(2, ArgOp::Ne, 16),
                    check(2, ArgOp::Ne, 76),
                ],
            ],
        };
        let m32 = u64::from(u32::MAX);
        let (allow, deny) = translate(&c).unwrap();
        assert_eq!(allow, vec![vec![]]);
        assert_eq!(
            deny,
            vec![
                vec![lit(1, m32, 1, false), lit(2, m32, 16, false)],
                vec![lit(1, m32, 1, false), lit(2, m32, 76, false)],
            ]
        );
        // An order comparison is refused, not dropped.
        let c = Condition {
            any_of: vec![vec![check(0, ArgOp::Lt, 3)]],
            ..c
        };
        assert!(translate(&c).is_err());
    }
}
