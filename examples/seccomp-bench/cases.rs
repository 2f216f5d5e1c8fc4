//! Shared by `examples/seccomp-bench` and `tests/seccomp_backends.rs`: the
//! seccomp policies a worker can get (capabilities x namespaces x Landlock
//! ABI x root), and a classic-BPF interpreter that runs a compiled filter
//! stack on one `seccomp_data` as the kernel does.

#![allow(dead_code)]

use std::path::PathBuf;

use nodus_extension::policy::{
    self, Inputs, Mode, OperatorPolicy, Probe, ProgramFacts, SeccompPolicy,
};
use nodus_extension::{Capability, Manifest, Provenance, TrustClass};

pub type Program = Vec<seccompiler::sock_filter>;

fn probe(root: bool, userns: bool, mount: bool, pid: bool, abi: u8) -> Probe {
    Probe {
        kernel: "test".into(),
        uid: if root { 0 } else { 1000 },
        root,
        landlock_abi: abi,
        landlock_missing: vec![],
        seccomp_filter: true,
        seccomp_listener: true,
        seccomp_listener_missing: None,
        user_namespaces: userns,
        mount_namespaces: mount,
        network_namespaces: userns || root,
        pid_namespaces: pid,
        ipc_namespaces: userns || root,
        uts_namespaces: userns || root,
        namespace_failure: None,
        pids_cgroup: root.then(|| "/sys/fs/cgroup/pids".into()),
        memory_cgroup: None,
        pids_cgroup_missing: None,
        memory_cgroup_missing: None,
        cgroup_v2_delegation: false,
    }
}

/// Every combination of `network.outbound`, `subprocess.run`, root or not,
/// the namespaces (all, mount without pid, none) and Landlock ABI 3/5/6:
/// (label, seccomp policy), the distinct policies once each.
pub fn policies() -> Vec<(String, SeccompPolicy)> {
    let mut out: Vec<(String, SeccompPolicy)> = Vec::new();
    let caps: [&[Capability]; 4] = [
        &[],
        &[Capability::NetworkOutbound],
        &[Capability::SubprocessRun],
        &[Capability::NetworkOutbound, Capability::SubprocessRun],
    ];
    for c in caps {
        for root in [false, true] {
            for (ns, userns, mount, pid) in [
                ("all namespaces", true, true, true),
                ("mount, no pid namespace", true, true, false),
                ("no namespaces", false, false, false),
            ] {
                for abi in [3u8, 5, 6] {
                    let label = format!(
                        "[{}] {} {ns} ABI {abi}",
                        c.iter()
                            .map(|c| c.to_string())
                            .collect::<Vec<_>>()
                            .join(" "),
                        if root { "root" } else { "user" }
                    );
                    let p = derive(c, probe(root, userns || root, mount, pid, abi));
                    if !out.iter().any(|(_, q)| *q == p) {
                        out.push((label, p));
                    }
                }
            }
        }
    }
    out
}

/// The policy of the example worker with `caps`, the full policy in
/// best-effort mode on this probe.
pub fn derive(caps: &[Capability], probe: Probe) -> SeccompPolicy {
    let manifest = Manifest {
        name: "bench.ext".into(),
        version: "1".into(),
        description: "d".into(),
        abi_version: "1".into(),
        min_nodus_version: "4.0.0".into(),
        capabilities: caps.to_vec(),
        provenance: Provenance {
            trust_class: TrustClass::Dev,
            ..Provenance::default()
        },
        tools: Vec::new(),
        entry: None,
        egress: None,
    };
    let mut operator = OperatorPolicy::default();
    operator.mode = Mode::BestEffort;
    let program = ProgramFacts {
        program: PathBuf::from("/usr/bin/python3"),
        loader: Some(PathBuf::from("/lib64/ld-linux-x86-64.so.2")),
        runtime_dirs: vec![PathBuf::from("/usr/lib/python3")],
    };
    policy::derive(&Inputs {
        manifest: &manifest,
        extension_dir: &PathBuf::from("/srv/ext"),
        workspace: None,
        operator: &operator,
        program: &program,
        identity: &Default::default(),
        probe: &probe,
    })
    .expect("derive")
    .seccomp
    .expect("a seccomp layer")
}

/// One system call as a filter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data {
    pub nr: i32,
    pub arch: u32,
    pub args: [u64; 6],
}

pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;

impl Data {
    fn word(&self, k: u32) -> u32 {
        match k {
            0 => self.nr as u32,
            4 => self.arch,
            // The instruction pointer: neither compiler reads it.
            8 | 12 => 0,
            16..=63 if k % 4 == 0 => {
                let a = self.args[(k as usize - 16) / 8];
                // Little-endian: the low half first.
                if k % 8 == 0 {
                    a as u32
                } else {
                    (a >> 32) as u32
                }
            }
            _ => panic!("load out of seccomp_data at {k}"),
        }
    }
}

/// Runs one classic-BPF program (the subset seccomp accepts) on `d`.
/// Panics on an instruction it does not know: nothing passes by default.
pub fn run(prog: &[seccompiler::sock_filter], d: &Data) -> u32 {
    // Classes and fields of linux/bpf_common.h and linux/filter.h.
    const LD: u16 = 0x00;
    const LDX: u16 = 0x01;
    const ST: u16 = 0x02;
    const STX: u16 = 0x03;
    const ALU: u16 = 0x04;
    const JMP: u16 = 0x05;
    const RET: u16 = 0x06;
    const MISC: u16 = 0x07;
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; 16];
    let mut pc = 0usize;
    loop {
        let i = prog.get(pc).expect("ran off the end of the program");
        let src_x = i.code & 0x08 != 0;
        let operand = if src_x { x } else { i.k };
        pc += 1;
        match i.code & 0x07 {
            LD => match i.code & 0xe0 {
                0x20 if i.code & 0x18 == 0 => a = d.word(i.k),
                0x00 => a = i.k,
                0x60 => a = mem[i.k as usize],
                0x80 => a = 64, // BPF_LEN: sizeof(struct seccomp_data)
                m => panic!("ld mode {m:#x}"),
            },
            LDX => match i.code & 0xe0 {
                0x00 => x = i.k,
                0x60 => x = mem[i.k as usize],
                0x80 => x = 64,
                m => panic!("ldx mode {m:#x}"),
            },
            ST => mem[i.k as usize] = a,
            STX => mem[i.k as usize] = x,
            ALU => {
                a = match i.code & 0xf0 {
                    0x00 => a.wrapping_add(operand),
                    0x10 => a.wrapping_sub(operand),
                    0x20 => a.wrapping_mul(operand),
                    0x30 => a.checked_div(operand).expect("division by zero"),
                    0x40 => a | operand,
                    0x50 => a & operand,
                    0x60 => a.checked_shl(operand).unwrap_or(0),
                    0x70 => a.checked_shr(operand).unwrap_or(0),
                    0x80 => a.wrapping_neg(),
                    0x90 => a.checked_rem(operand).expect("modulo by zero"),
                    0xa0 => a ^ operand,
                    op => panic!("alu op {op:#x}"),
                }
            }
            JMP => {
                let op = i.code & 0xf0;
                if op == 0x00 {
                    pc += i.k as usize;
                    continue;
                }
                let taken = match op {
                    0x10 => a == operand,
                    0x20 => a > operand,
                    0x30 => a >= operand,
                    0x40 => a & operand != 0,
                    _ => panic!("jmp op {op:#x}"),
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            RET => {
                return match i.code & 0x18 {
                    0x00 => i.k,
                    0x10 => a,
                    r => panic!("ret source {r:#x}"),
                }
            }
            MISC => match i.code & 0xf8 {
                0x00 => x = a, // TAX
                0x80 => a = x, // TXA
                m => panic!("misc {m:#x}"),
            },
            _ => unreachable!(),
        }
    }
}

/// What a stack of filters (installed in this order) answers, as the
/// kernel decides it (kernel/seccomp.c `seccomp_run_filters`): each filter
/// runs from the newest to the oldest, and the action that comes first in
/// precedence wins (kill, trap, errno, ..., allow), the newest among equals.
pub fn verdict(filters: &[Program], d: &Data) -> u32 {
    let mut ret = libc::SECCOMP_RET_ALLOW;
    let action = |r: u32| (r & libc::SECCOMP_RET_ACTION_FULL) as i32;
    for f in filters.iter().rev() {
        let cur = run(f, d);
        if action(cur) < action(ret) {
            ret = cur;
        }
    }
    ret
}

/// A verdict in words: `allow`, `errno EPERM`, `kill process`.
pub fn describe(v: u32) -> String {
    match v & libc::SECCOMP_RET_ACTION_FULL {
        libc::SECCOMP_RET_ALLOW => "allow".into(),
        libc::SECCOMP_RET_ERRNO => format!("errno {}", v & libc::SECCOMP_RET_DATA),
        libc::SECCOMP_RET_KILL_PROCESS => "kill process".into(),
        a => format!("action {a:#x}"),
    }
}

/// Replaces the pid placeholders as the child does (`child::fill_in_pid`).
pub fn fill_in_pid(filters: &mut [Program], pid: u32) {
    use nodus_extension::internals::sandbox::seccomp::{NEG_PID_PLACEHOLDER, PID_PLACEHOLDER};
    for insn in filters.iter_mut().flat_map(|f| f.iter_mut()) {
        if insn.k == PID_PLACEHOLDER {
            insn.k = pid;
        } else if insn.k == NEG_PID_PLACEHOLDER {
            insn.k = pid.wrapping_neg();
        }
    }
}

/// The supervised calls' filter as it was written by hand before libseccomp
/// compiled it (`seccomp::supervised_filter`, docs/security.md "The
/// metadata supervisor"): kept as the reference `bench/seccomp.py --notify`
/// and `both_supervised_filters_give_the_same_verdicts` compare with, not
/// used by launches. 13 instructions: the architecture, then each number.
pub fn hand_written_supervised_filter(policy: &SeccompPolicy) -> Option<Program> {
    use seccompiler::sock_filter;
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xc000_00b7;
    let numbers: Vec<u32> = policy
        .rules
        .iter()
        .filter(|r| r.action == nodus_extension::policy::SyscallAction::Supervised)
        .map(|r| r.number as u32)
        .collect();
    if numbers.is_empty() {
        return None;
    }
    let n = numbers.len();
    assert!(n < 200, "a jump spans at most 255 instructions");
    let insn = |code: u32, jt: usize, jf: usize, k: u32| sock_filter {
        code: code as u16,
        jt: jt as u8,
        jf: jf as u8,
        k,
    };
    let (ld, jeq, ret) = (
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        libc::BPF_RET | libc::BPF_K,
    );
    // seccomp_data: nr at offset 0, arch at 4.
    let mut f = vec![
        insn(ld, 0, 0, 4),
        // Another architecture: allowed here, the main filter kills it.
        insn(jeq, 0, n + 1, AUDIT_ARCH),
        insn(ld, 0, 0, 0),
    ];
    for (i, nr) in numbers.iter().enumerate() {
        f.push(insn(jeq, n - i, 0, *nr));
    }
    f.push(insn(ret, 0, 0, libc::SECCOMP_RET_ALLOW));
    f.push(insn(ret, 0, 0, libc::SECCOMP_RET_USER_NOTIF));
    Some(f)
}
