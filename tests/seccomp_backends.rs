//! The seccomp backends (src/sandbox/seccomp.rs) compile the same policy to
//! filters with the same verdicts.
//!
//! What is compared: for every distinct seccomp policy a worker can get
//! (capabilities x root x namespaces x Landlock ABI, `cases::policies`),
//! the verdict (allow, errno N, kill) of seccompiler's filter stack and of
//! libseccomp's, run by a classic-BPF interpreter (`cases::run`, combined
//! across stacked filters as the kernel does), on: every system call number
//! 0-511 with three argument vectors, a foreign architecture, x32 numbers,
//! and for every call with argument checks the boundary values of each
//! checked argument (the value, its neighbours, each mask bit flipped, the
//! upper half set, 0 and all ones) in combination (all combinations up to
//! `PER_CALL` vectors, else each argument in turn around each group of
//! checks plus `PER_CALL` random ones), before and after the pid is filled
//! in. A control (`the_inputs_tell_each_check_apart`) shows these inputs
//! tell apart a filter with any one check changed. The interpreter itself is checked against the kernel:
//! a child process installs each backend's filters and makes real, harmless
//! system calls (bad descriptors, missing paths, signal 0), after a control
//! run of the same calls with no filter that proves each one can tell an
//! allow from a refusal.

#[path = "../examples/seccomp-bench/cases.rs"]
mod cases;

use std::collections::{BTreeMap, BTreeSet};

use cases::{Data, Program, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64};
use nodus_extension::internals::sandbox::seccomp::{compile, Backend, PID_PLACEHOLDER};
use nodus_extension::policy::{ArgCheck, ArgOp, ArgWidth, SeccompPolicy, SyscallAction};

fn both(p: &SeccompPolicy) -> (Vec<Program>, Vec<Program>) {
    (
        compile(p, Backend::Seccompiler).expect("seccompiler"),
        compile(p, Backend::Libseccomp).expect("libseccomp"),
    )
}

#[test]
fn every_policy_names_each_call_once() {
    for (label, p) in cases::policies() {
        let mut seen = BTreeSet::new();
        for r in &p.rules {
            assert!(seen.insert(r.number), "{label}: {} twice", r.name);
        }
    }
}

/// Boundary values of the arguments each call's conditions check:
/// (number, argument) -> values.
fn boundary_values(
    policies: &[(String, SeccompPolicy)],
) -> BTreeMap<i64, BTreeMap<u8, BTreeSet<u64>>> {
    let mut out: BTreeMap<i64, BTreeMap<u8, BTreeSet<u64>>> = BTreeMap::new();
    for (_, p) in policies {
        for r in &p.rules {
            let SyscallAction::AllowIf(c) = &r.action else {
                continue;
            };
            for check in c.any_of.iter().flatten() {
                let set = out
                    .entry(r.number)
                    .or_default()
                    .entry(check.index)
                    .or_default();
                let width = match check.width {
                    ArgWidth::Dword => u64::from(u32::MAX),
                    ArgWidth::Qword => u64::MAX,
                    w => panic!("a width this test does not know: {w:?}"),
                };
                let mask = match check.op {
                    ArgOp::MaskedEq(m) => m & width,
                    _ => width,
                };
                let v = check.value;
                for x in [
                    v,
                    v.wrapping_add(1),
                    v.wrapping_sub(1),
                    v | 0xffff_ffff_0000_0000,
                    v | 1 << 32,
                    v | !mask,
                    0,
                    u64::from(u32::MAX),
                    u64::MAX,
                ] {
                    set.insert(x);
                }
                for bit in (0..64).filter(|b| mask >> b & 1 == 1) {
                    set.insert(v ^ 1 << bit);
                }
            }
        }
    }
    out
}

/// Every group of checks any policy has for call `nr`.
fn groups(policies: &[(String, SeccompPolicy)], nr: i64) -> Vec<Vec<ArgCheck>> {
    let mut out: Vec<Vec<ArgCheck>> = Vec::new();
    for (_, p) in policies {
        for r in p.rules.iter().filter(|r| r.number == nr) {
            if let SyscallAction::AllowIf(c) = &r.action {
                for g in &c.any_of {
                    if !out.contains(g) {
                        out.push(g.clone());
                    }
                }
            }
        }
    }
    out
}

/// A small deterministic generator (no dependency, same cases every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 17
    }
}

/// At most this many argument vectors per system call.
const PER_CALL: usize = 6000;

fn inputs(policies: &[(String, SeccompPolicy)], pid: u32) -> Vec<Data> {
    let mut out = Vec::new();
    let plain = [[0u64; 6], [u64::MAX; 6], [1, 2, 3, 4, 5, 6]];
    for nr in 0..512 {
        for args in plain {
            out.push(Data {
                nr,
                arch: AUDIT_ARCH_X86_64,
                args,
            });
        }
    }
    for (nr, arch) in [
        (0, AUDIT_ARCH_I386),
        (39, AUDIT_ARCH_I386),
        (59, 0),
        (-1, AUDIT_ARCH_X86_64),
    ] {
        out.push(Data {
            nr,
            arch,
            args: [0; 6],
        });
    }
    let mut rng = Lcg(16);
    for (nr, per_arg) in boundary_values(policies) {
        let mut columns: Vec<(u8, Vec<u64>)> = per_arg
            .into_iter()
            .map(|(a, set)| {
                let mut v: Vec<u64> = set.into_iter().collect();
                v.extend([u64::from(pid), u64::from(pid.wrapping_neg())]);
                (a, v)
            })
            .collect();
        for (_, v) in &mut columns {
            v.sort_unstable();
            v.dedup();
        }
        let total: usize = columns.iter().map(|(_, v)| v.len()).product();
        let vector = |pick: &dyn Fn(usize, usize) -> usize| {
            let mut args = [0u64; 6];
            for (i, (a, v)) in columns.iter().enumerate() {
                args[usize::from(*a)] = v[pick(i, v.len())];
            }
            Data {
                nr: nr as i32,
                arch: AUDIT_ARCH_X86_64,
                args,
            }
        };
        if total <= PER_CALL {
            for n in 0..total {
                out.push(vector(&|i, len| {
                    let stride: usize = columns[..i].iter().map(|(_, v)| v.len()).product();
                    n / stride % len
                }));
            }
        } else {
            // Around each group of each condition: the group's own values
            // (one past the value for a not-equal), each argument in turn
            // at each of its values; then random picks.
            for group in groups(policies, nr) {
                let mut base = [0u64; 6];
                for c in &group {
                    base[usize::from(c.index)] = match c.op {
                        ArgOp::Ne => c.value.wrapping_add(1),
                        _ => c.value,
                    };
                }
                for (a, values) in &columns {
                    for &x in values {
                        let mut args = base;
                        args[usize::from(*a)] = x;
                        out.push(Data {
                            nr: nr as i32,
                            arch: AUDIT_ARCH_X86_64,
                            args,
                        });
                    }
                }
            }
            for _ in 0..PER_CALL {
                let picks: Vec<usize> = columns
                    .iter()
                    .map(|(_, v)| rng.next() as usize % v.len())
                    .collect();
                out.push(vector(&|k, _| picks[k]));
            }
        }
    }
    out
}

/// The x32 ABI's numbers (bit 30 set on x86_64): seccompiler answers the
/// default errno (they match no rule), libseccomp kills the process (its
/// check for a foreign ABI). Both refuse; this is the one difference.
fn x32(d: &Data) -> bool {
    d.arch == AUDIT_ARCH_X86_64 && d.nr as u32 & 0x4000_0000 != 0 && d.nr >= 0
}

#[test]
fn both_backends_give_the_same_verdicts() {
    let policies = cases::policies();
    assert!(policies.len() >= 8, "{} distinct policies", policies.len());
    let pid = 4242;
    let data = inputs(&policies, pid);
    let mut x32_inputs: Vec<Data> = (0..512)
        .map(|nr| Data {
            nr: 0x4000_0000 | nr,
            arch: AUDIT_ARCH_X86_64,
            args: [0; 6],
        })
        .collect();
    x32_inputs.push(Data {
        nr: 0x4000_0000 | 59,
        arch: AUDIT_ARCH_X86_64,
        args: [1; 6],
    });
    let mut compared = 0usize;
    for (label, p) in &policies {
        let (a, b) = both(p);
        let size = |f: &[Program]| f.iter().map(Vec::len).collect::<Vec<_>>();
        eprintln!(
            "{label}: seccompiler {:?} instructions, libseccomp {:?}",
            size(&a),
            size(&b)
        );
        let has_pid = a.iter().flatten().any(|i| i.k == PID_PLACEHOLDER);
        assert_eq!(
            has_pid,
            b.iter().flatten().any(|i| i.k == PID_PLACEHOLDER),
            "{label}: the pid placeholder is in one backend's filter only"
        );
        let mut stacks = vec![(a.clone(), b.clone())];
        if has_pid {
            let (mut fa, mut fb) = (a, b);
            cases::fill_in_pid(&mut fa, pid);
            cases::fill_in_pid(&mut fb, pid);
            stacks.push((fa, fb));
        }
        for (fa, fb) in &stacks {
            for d in &data {
                let (va, vb) = (cases::verdict(fa, d), cases::verdict(fb, d));
                assert_eq!(
                    va,
                    vb,
                    "{label}: {d:?}: seccompiler {}, libseccomp {}",
                    cases::describe(va),
                    cases::describe(vb)
                );
                compared += 1;
            }
            for d in &x32_inputs {
                assert!(x32(d));
                let (va, vb) = (cases::verdict(fa, d), cases::verdict(fb, d));
                assert_eq!(
                    (va, vb),
                    (
                        libc::SECCOMP_RET_ERRNO | p.default.raw() as u32,
                        libc::SECCOMP_RET_KILL_PROCESS
                    ),
                    "{label}: x32 {d:?}"
                );
            }
        }
    }
    eprintln!("{compared} verdicts compared");
}

/// The control: the inputs tell apart a filter that differs in any one
/// argument check. For each call with a condition, in every policy, a
/// mutant policy loses one check (or one group, where the condition has
/// several) ...  filter must answer some input of that
/// call differently from the original's seccompiler filter.
#[test]
fn the_inputs_tell_each_check_apart() {
    let policies = cases::policies();
    let data = inputs(&policies, 4242);
    let (mut mutants, mut refused) = (0, 0);
    for (label, p) in &policies {
        let original = compile(p, Backend::Seccompiler).unwrap();
        for (i, r) in p.rules.iter().enumerate() {
            let SyscallAction::AllowIf(c) = &r.action else {
                continue;
            };
            let calls: Vec<&Data> = data
                .iter()
                .filter(|d| i64::from(d.nr) == r.number)
                .collect();
            for g in 0..c.any_of.len() {
                for k in 0..c.any_of[g].len() {
                    let mut m = c.clone();
                    let check = &mut m.any_of[g][k];
                    let mask = match check.op {
                        ArgOp::MaskedEq(mask) => mask,
                        _ => u64::MAX,
                    };
                    check.value ^= 1 << mask.trailing_zeros();
                    let mut q = p.clone();
                    q.rules[i].action = SyscallAction::AllowIf(m);
                    // A condition libseccomp cannot say is refused, never
                    // compiled into something else.
                    let Ok(mutant) = compile(&q, Backend::Libseccomp) else {
                        refused += 1;
                        continue;
                    };
                    assert!(
                        calls
                            .iter()
                            .any(|d| cases::verdict(&original, d) != cases::verdict(&mutant, d)),
                        "{label}: {} with check {k} of group {g} changed: no input tells it apart",
                        r.name
                    );
                    mutants += 1;
                }
            }
        }
    }
    eprintln!("{mutants} mutants told apart, {refused} refused by the libseccomp backend");
    assert!(mutants > 50);
}

// ------------------------------------------------- the interpreter vs the kernel

/// Harmless system calls (a bad descriptor, a path that does not exist,
/// signal 0, a setting of the child's own), each with what a filter sees of
/// it (pointer arguments as 0: no filter reads them). `pid`: the child's.
#[allow(clippy::type_complexity)]
fn probes(pid: u32) -> Vec<(&'static str, Data, Box<dyn Fn() -> nix::Result<()>>)> {
    use nix::fcntl::{fcntl, open, renameat2, FcntlArg, OFlag, PosixFadviseAdvice, RenameFlags};
    use nix::sys::socket::{
        send, setsockopt, socket, socketpair, sockopt, AddressFamily, MsgFlags, SockFlag,
        SockProtocol, SockType,
    };
    use nix::sys::stat::{fchmodat, FchmodatFlags, Mode};
    let data = |nr: i32, args: [u64; 6]| Data {
        nr,
        arch: AUDIT_ARCH_X86_64,
        args,
    };
    let at = (libc::AT_FDCWD as i64) as u64;
    let sock = |f: AddressFamily, t: SockType, p: Option<SockProtocol>| {
        move || socket(f, t, SockFlag::empty(), p).map(drop)
    };
    let pair =
        |t: SockType| move || socketpair(AddressFamily::Unix, t, None, SockFlag::empty()).map(drop);
    let missing = "/nonexistent-seccomp-probe/x";
    let suid = Mode::from_bits_truncate(0o4755);
    let plain = Mode::from_bits_truncate(0o644);
    let passcred = || {
        let (a, _b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::empty(),
        )?;
        setsockopt(&a, sockopt::PassCred, &true)
    };
    vec![
        (
            "getppid",
            data(110, [0; 6]),
            Box::new(|| {
                nix::unistd::getppid();
                Ok(())
            }),
        ),
        (
            "fcntl(-1, F_GETFD)",
            data(72, [u64::MAX, 1, 0, 0, 0, 0]),
            Box::new(|| fcntl(-1, FcntlArg::F_GETFD).map(drop)),
        ),
        (
            "getrlimit",
            data(302, [0, 7, 0, 0, 0, 0]),
            Box::new(|| {
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map(drop)
            }),
        ),
        // Not setuid: glibc makes every thread of the process change its ids
        // and aborts when only the filtered one fails.
        (
            "chroot(missing)",
            data(161, [0; 6]),
            Box::new(move || nix::unistd::chroot(missing)),
        ),
        (
            "unshare(0)",
            data(272, [0; 6]),
            Box::new(|| nix::sched::unshare(nix::sched::CloneFlags::empty())),
        ),
        (
            "socket(AF_INET, STREAM, 0)",
            data(41, [2, 1, 0, 0, 0, 0]),
            Box::new(sock(AddressFamily::Inet, SockType::Stream, None)),
        ),
        (
            "socket(AF_INET6, DGRAM, UDP)",
            data(41, [10, 2, 17, 0, 0, 0]),
            Box::new(sock(
                AddressFamily::Inet6,
                SockType::Datagram,
                Some(SockProtocol::Udp),
            )),
        ),
        (
            "socket(AF_INET, SEQPACKET, 0)",
            data(41, [2, 5, 0, 0, 0, 0]),
            Box::new(sock(AddressFamily::Inet, SockType::SeqPacket, None)),
        ),
        (
            "socket(AF_INET, RAW, 0)",
            data(41, [2, 3, 0, 0, 0, 0]),
            Box::new(sock(AddressFamily::Inet, SockType::Raw, None)),
        ),
        (
            "socket(AF_UNIX, STREAM, 0)",
            data(41, [1, 1, 0, 0, 0, 0]),
            Box::new(sock(AddressFamily::Unix, SockType::Stream, None)),
        ),
        (
            "socket(AF_NETLINK, DGRAM, ROUTE)",
            data(41, [16, 2, 0, 0, 0, 0]),
            Box::new(sock(
                AddressFamily::Netlink,
                SockType::Datagram,
                Some(SockProtocol::NetlinkRoute),
            )),
        ),
        (
            "socket(AF_NETLINK, DGRAM, SOCK_DIAG)",
            data(41, [16, 2, 4, 0, 0, 0]),
            Box::new(sock(
                AddressFamily::Netlink,
                SockType::Datagram,
                Some(SockProtocol::NetlinkSockDiag),
            )),
        ),
        (
            "socketpair(AF_UNIX, STREAM)",
            data(53, [1, 1, 0, 0, 0, 0]),
            Box::new(pair(SockType::Stream)),
        ),
        (
            "socketpair(AF_UNIX, DGRAM)",
            data(53, [1, 2, 0, 0, 0, 0]),
            Box::new(pair(SockType::Datagram)),
        ),
        (
            "open(missing, O_CREAT, 0644)",
            data(257, [at, 0, 0o101, 0o644, 0, 0]),
            Box::new(move || open(missing, OFlag::O_CREAT | OFlag::O_WRONLY, plain).map(drop)),
        ),
        (
            "open(missing, O_CREAT, 04755)",
            data(257, [at, 0, 0o101, 0o4755, 0, 0]),
            Box::new(move || open(missing, OFlag::O_CREAT | OFlag::O_WRONLY, suid).map(drop)),
        ),
        (
            "fchmodat(missing, 0644)",
            data(268, [at, 0, 0o644, 0, 0, 0]),
            Box::new(move || fchmodat(None, missing, plain, FchmodatFlags::FollowSymlink)),
        ),
        (
            "fchmodat(missing, 04755)",
            data(268, [at, 0, 0o4755, 0, 0, 0]),
            Box::new(move || fchmodat(None, missing, suid, FchmodatFlags::FollowSymlink)),
        ),
        (
            "renameat2(missing, NOREPLACE)",
            data(316, [at, 0, at, 0, 1, 0]),
            Box::new(move || {
                renameat2(None, missing, None, missing, RenameFlags::RENAME_NOREPLACE)
            }),
        ),
        (
            "renameat2(missing, WHITEOUT)",
            data(316, [at, 0, at, 0, 4, 0]),
            Box::new(move || renameat2(None, missing, None, missing, RenameFlags::RENAME_WHITEOUT)),
        ),
        (
            "posix_fadvise(-1, NORMAL)",
            data(221, [u64::MAX, 0, 0, 0, 0, 0]),
            Box::new(|| nix::fcntl::posix_fadvise(-1, 0, 0, PosixFadviseAdvice::POSIX_FADV_NORMAL)),
        ),
        (
            "posix_fadvise(-1, DONTNEED)",
            data(221, [u64::MAX, 0, 0, 4, 0, 0]),
            Box::new(|| {
                nix::fcntl::posix_fadvise(-1, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)
            }),
        ),
        (
            "send(-1, 0)",
            data(44, [u64::MAX, 0, 1, 0, 0, 0]),
            Box::new(|| send(-1, b"x", MsgFlags::empty()).map(drop)),
        ),
        (
            "send(-1, MSG_FASTOPEN)",
            data(44, [u64::MAX, 0, 1, 0x2000_0000, 0, 0]),
            Box::new(|| send(-1, b"x", MsgFlags::from_bits_retain(0x2000_0000)).map(drop)),
        ),
        (
            "setsockopt(SOL_SOCKET, SO_PASSCRED)",
            data(54, [0, 1, 16, 0, 4, 0]),
            Box::new(passcred),
        ),
        (
            "prctl(PR_GET_NAME)",
            data(157, [16, 0, 0, 0, 0, 0]),
            Box::new(|| nix::sys::prctl::get_name().map(drop)),
        ),
        (
            "prctl(PR_SET_PDEATHSIG)",
            data(157, [1, 15, 0, 0, 0, 0]),
            Box::new(|| nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)),
        ),
        (
            "kill(self, 0)",
            data(62, [u64::from(pid), 0, 0, 0, 0, 0]),
            Box::new(move || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None)),
        ),
        (
            "kill(1, 0)",
            data(62, [1, 0, 0, 0, 0, 0]),
            Box::new(|| nix::sys::signal::kill(nix::unistd::Pid::from_raw(1), None)),
        ),
    ]
}

const CHILD: &str = "SECCOMP_BACKENDS_CHILD";

/// The child's side of `the_interpreter_agrees_with_the_kernel`: installs the
/// filters `$SECCOMP_BACKENDS_CHILD` names ("BACKEND POLICY"), makes each
/// probe and prints `name<TAB>0` or `name<TAB>errno`.
#[test]
#[ignore = "a helper: the_interpreter_agrees_with_the_kernel runs it in a process of its own"]
fn kernel_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        panic!("run by the_interpreter_agrees_with_the_kernel with {CHILD} set");
    };
    let (backend, policy) = spec.split_once(' ').unwrap();
    let pid = std::process::id();
    let mut filters = match backend {
        "none" => vec![],
        "seccompiler" => compile(
            &cases::policies()[policy.parse::<usize>().unwrap()].1,
            Backend::Seccompiler,
        )
        .unwrap(),
        _ => compile(
            &cases::policies()[policy.parse::<usize>().unwrap()].1,
            Backend::Libseccomp,
        )
        .unwrap(),
    };
    cases::fill_in_pid(&mut filters, pid);
    let probes = probes(pid);
    let mut out = format!("pid\t{pid}\n");
    for f in &filters {
        seccompiler::apply_filter(f).unwrap();
    }
    let results: Vec<i32> = probes
        .iter()
        .map(|(_, _, call)| match call() {
            Ok(()) => 0,
            Err(e) => e as i32,
        })
        .collect();
    for ((name, _, _), r) in probes.iter().zip(results) {
        out += &format!("{name}\t{r}\n");
    }
    print!("{out}");
}

fn run_child(backend: &str, policy: usize) -> (u32, BTreeMap<String, i32>) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "kernel_child",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD, format!("{backend} {policy}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{backend} {policy}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: BTreeMap<String, i32> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, r)| (n.to_string(), r.parse().unwrap()))
        .collect();
    (results["pid"] as u32, results)
}

/// The interpreter's verdicts are the kernel's: for each policy and backend,
/// a child installs the filters and makes the probes; each probe the filter
/// refuses with errno E fails with E, each one it allows gives what it gives
/// with no filter. Control: the run with no filter, in which a probe counts
/// for a refusal only when its own result is not E.
#[test]
fn the_interpreter_agrees_with_the_kernel() {
    let policies = cases::policies();
    let (_, unfiltered) = run_child("none", 0);
    let names: Vec<&str> = probes(0).iter().map(|(n, _, _)| *n).collect();
    assert_eq!(
        unfiltered.len(),
        names.len() + 1,
        "every probe ran: {unfiltered:?}"
    );
    let (mut allowed, mut refused) = (0, 0);
    for (i, (label, p)) in policies.iter().enumerate() {
        for backend in [Backend::Seccompiler, Backend::Libseccomp] {
            let (pid, seen) = run_child(backend.as_str(), i);
            let mut filters = compile(p, backend).unwrap();
            cases::fill_in_pid(&mut filters, pid);
            for (name, d, _) in probes(pid) {
                let v = cases::verdict(&filters, &d);
                let got = seen[name];
                let without = unfiltered[name];
                if v & libc::SECCOMP_RET_ACTION_FULL == libc::SECCOMP_RET_ERRNO {
                    let e = (v & libc::SECCOMP_RET_DATA) as i32;
                    assert_eq!(
                        got,
                        e,
                        "{label} {}: {name} refused with {e} by the interpreter",
                        backend.as_str()
                    );
                    if without != e {
                        refused += 1;
                    }
                } else {
                    assert_eq!(v, libc::SECCOMP_RET_ALLOW, "{label}: {name}");
                    assert_eq!(
                        got,
                        without,
                        "{label} {}: {name} allowed by the interpreter",
                        backend.as_str()
                    );
                    allowed += 1;
                }
            }
        }
    }
    eprintln!("{allowed} allowed and {refused} refused probes agree with the kernel");
    assert!(
        refused > 100 && allowed > 100,
        "{allowed} allowed, {refused} refused"
    );
}

/// The supervised calls' filter (`supervised_filter`, compiled by libseccomp
/// and installed first, with the listener) answers SECCOMP_RET_USER_NOTIF for
/// exactly the calls the policy marks supervised and allows everything else
/// (a foreign architecture, x32 numbers too: the main filters decide those);
/// stacked with the main filters (which allow the supervised calls) the
/// kernel's verdict for a supervised call is the notification, for any
/// other the main filters' own. Control: a policy without supervised calls
/// (a mount namespace) gets no such filter, and one without a mount
/// namespace does.
#[test]
fn the_supervised_filter_notifies_exactly_the_supervised_calls() {
    use nodus_extension::internals::sandbox::seccomp::supervised_filter;
    let (mut with, mut without) = (0, 0);
    for (label, p) in cases::policies() {
        let supervised: BTreeSet<i64> = p
            .rules
            .iter()
            .filter(|r| r.action == SyscallAction::Supervised)
            .map(|r| r.number)
            .collect();
        let Some(f) = supervised_filter(&p).expect("libseccomp") else {
            assert!(
                supervised.is_empty(),
                "{label}: no filter for {supervised:?}"
            );
            without += 1;
            continue;
        };
        with += 1;
        assert!(supervised.contains(&libc::SYS_utimensat), "{label}");
        let main = compile(&p, Backend::CHOSEN).unwrap();
        let mut stack = vec![f.clone()];
        stack.extend(main.iter().cloned());
        for nr in 0..512 {
            for (arch, nr) in [
                (AUDIT_ARCH_X86_64, nr),
                (AUDIT_ARCH_I386, nr),
                (AUDIT_ARCH_X86_64, nr | 0x4000_0000),
            ] {
                let d = Data {
                    nr: nr as i32,
                    arch,
                    args: [0o644, 0o644, 0o644, 0, 0, 0],
                };
                let notify = arch == AUDIT_ARCH_X86_64 && supervised.contains(&nr);
                let own = cases::run(&f, &d);
                assert_eq!(
                    own,
                    if notify {
                        libc::SECCOMP_RET_USER_NOTIF
                    } else {
                        libc::SECCOMP_RET_ALLOW
                    },
                    "{label}: {nr} arch {arch:#x}"
                );
                let alone = cases::verdict(&main, &d);
                let stacked = cases::verdict(&stack, &d);
                if notify {
                    assert_eq!(
                        alone,
                        libc::SECCOMP_RET_ALLOW,
                        "{label}: {nr} in the main filter"
                    );
                    assert_eq!(stacked, libc::SECCOMP_RET_USER_NOTIF, "{label}: {nr}");
                } else {
                    assert_eq!(stacked, alone, "{label}: {nr} arch {arch:#x}");
                }
            }
        }
    }
    assert!(
        with > 0 && without > 0,
        "{with} policies supervise, {without} do not"
    );
}

/// The supervised calls' filter written by hand (before libseccomp compiled
/// it; `cases::hand_written_supervised_filter`) and the one libseccomp
/// compiles (`ScmpAction::Notify`, `supervised_filter`) give the same verdict on every input of
/// `both_backends_give_the_same_verdicts` (every number 0-511 with three
/// argument vectors, foreign architectures, the boundary values), on x32
/// numbers 0-511 and i386 numbers 0-511, alone and stacked on the main
/// filters. Control: the hand-written filter with one supervised number
/// dropped answers some input differently.
#[test]
fn both_supervised_filters_give_the_same_verdicts() {
    use cases::hand_written_supervised_filter;
    use nodus_extension::internals::sandbox::seccomp::supervised_filter;
    let policies = cases::policies();
    let mut data = inputs(&policies, 4242);
    for nr in 0..512 {
        for (arch, nr) in [(AUDIT_ARCH_I386, nr), (AUDIT_ARCH_X86_64, nr | 0x4000_0000)] {
            data.push(Data {
                nr,
                arch,
                args: [0o644; 6],
            });
        }
    }
    let (mut with, mut compared) = (0, 0usize);
    for (label, p) in &policies {
        let hand = hand_written_supervised_filter(p);
        let lib = supervised_filter(p).expect("libseccomp");
        let (Some(hand), Some(lib)) = (hand.clone(), lib.clone()) else {
            assert_eq!(hand.is_none(), lib.is_none(), "{label}");
            continue;
        };
        with += 1;
        eprintln!(
            "{label}: supervised filter: by hand {} instructions, libseccomp {}",
            hand.len(),
            lib.len()
        );
        let main = compile(p, Backend::CHOSEN).unwrap();
        let stack = |f: &Program| {
            let mut s = vec![f.clone()];
            s.extend(main.iter().cloned());
            s
        };
        let (sh, sl) = (stack(&hand), stack(&lib));
        // The control: one supervised number less.
        let mut mutant = hand.clone();
        let i = mutant
            .iter()
            .position(|i| i.k == libc::SYS_utimensat as u32)
            .unwrap();
        mutant[i].k = 511;
        let mut told_apart = false;
        for d in &data {
            assert_eq!(
                cases::run(&hand, d),
                cases::run(&lib, d),
                "{label}: {d:?} alone"
            );
            assert_eq!(
                cases::verdict(&sh, d),
                cases::verdict(&sl, d),
                "{label}: {d:?} stacked"
            );
            told_apart |= cases::run(&mutant, d) != cases::run(&hand, d);
            compared += 2;
        }
        assert!(
            told_apart,
            "{label}: the inputs do not tell a changed filter apart"
        );
    }
    assert!(with > 0);
    eprintln!("{compared} verdicts compared over {with} policies");
}

const API_CHILD: &str = "SECCOMP_BACKENDS_API_CHILD";

/// A helper of `the_api_level_does_not_change_the_filters`: compiles every
/// policy's filters at libseccomp API level `$SECCOMP_BACKENDS_API_CHILD`
/// (after the crate has set its own, which it sets once) and prints them.
#[test]
#[ignore = "a helper: the_api_level_does_not_change_the_filters runs it in a process of its own"]
fn api_child() {
    let level: u32 = std::env::var(API_CHILD).unwrap().parse().unwrap();
    let policies = cases::policies();
    compile(&policies[0].1, Backend::Libseccomp).unwrap();
    libseccomp::set_api(level).unwrap();
    assert_eq!(libseccomp::get_api(), level);
    let mut out = String::new();
    for (label, p) in &policies {
        let f = compile(p, Backend::Libseccomp).unwrap();
        let words: Vec<String> = f
            .iter()
            .map(|f| {
                f.iter()
                    .map(|i| format!("{:x}.{:x}.{:x}.{:x}", i.code, i.jt, i.jf, i.k))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        let sizes: Vec<usize> = f.iter().map(Vec::len).collect();
        out += &format!("{label}\t{sizes:?}\t{}\n", words.join(" | "));
    }
    print!("{out}");
}

/// Raising libseccomp's API level from 3 (what the main filters need:
/// KILL_PROCESS) to 5 (user notification, for the supervised calls' filter)
/// changes no instruction of any policy's filters: each policy compiled in a
/// process at level 3 and in one at level 5 gives the same programs.
/// Control: level 2 (no KILL_PROCESS) refuses to compile them, so the
/// level is in effect in the child.
#[test]
fn the_api_level_does_not_change_the_filters() {
    let run = |level: u32| {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "api_child",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(API_CHILD, level.to_string())
            .output()
            .unwrap()
    };
    let filters = |level: u32| {
        let out = run(level);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .filter(|l| l.starts_with('['))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let (three, five) = (filters(3), filters(5));
    assert_eq!(three.len(), cases::policies().len());
    for (a, b) in three.iter().zip(&five) {
        assert_eq!(a, b, "API level 3 and 5 differ");
    }
    assert!(
        !run(2).status.success(),
        "level 2 compiled KILL_PROCESS filters"
    );
}
