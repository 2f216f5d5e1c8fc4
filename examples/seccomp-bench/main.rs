//! The seccomp backends side by side (`bench/seccomp.py` drives it):
//!
//!     seccomp-bench sizes                      instruction counts, JSON
//!     seccomp-bench run BACKEND POLICY CALLS   one measurement, JSON
//!
//! `run` compiles POLICY's filters (an index into `cases::policies()`) with
//! BACKEND (`none`, `seccompiler`, `libseccomp`), then in this process times
//! installing them (`seccomp(SECCOMP_SET_MODE_FILTER)`, the child's call)
//! and CALLS iterations of four system calls: `getppid` (allowed without a
//! condition: the kernel's action cache answers it without running the
//! filter), `fcntl(F_GETFD)` (number 72) and `getrlimit` (`prlimit64`, 302),
//! allowed after an argument check, and `unshare(0)` (refused; without a filter it does nothing). It checks the
//! verdicts too: with a filter `unshare` fails with EPERM, the others work;
//! without one all four work.

#[path = "cases.rs"]
mod cases;

use std::time::Instant;

use cases::hand_written_supervised_filter;
use nodus_extension::internals::sandbox::seccomp::{compile, supervised_filter, Backend};
use nodus_extension::policy::SyscallAction;

fn backend(name: &str) -> Option<Backend> {
    match name {
        "none" => None,
        // The supervised calls' filter (by hand or by libseccomp), installed
        // first as the child does, then libseccomp's main filters.
        "notify-hand" | "notify-libseccomp" => Some(Backend::Libseccomp),
        "seccompiler" => Some(Backend::Seccompiler),
        "libseccomp" => Some(Backend::Libseccomp),
        _ => panic!("unknown backend {name}"),
    }
}

fn sizes() {
    let mut out = Vec::new();
    for (i, (label, p)) in cases::policies().iter().enumerate() {
        // The best of 10 compilations in this process (the first one of a
        // process is in `run`'s figures).
        let count = |b| {
            let mut best = u128::MAX;
            let mut f = vec![];
            for _ in 0..10 {
                let t = Instant::now();
                f = compile(p, b).unwrap();
                best = best.min(t.elapsed().as_nanos());
            }
            (f.iter().map(Vec::len).collect::<Vec<_>>(), best)
        };
        let (a, a_ns) = count(Backend::Seccompiler);
        let (b, b_ns) = count(Backend::Libseccomp);
        let unconditional = p
            .rules
            .iter()
            .filter(|r| r.action == SyscallAction::Allow)
            .count();
        let conditional = p
            .rules
            .iter()
            .filter(|r| matches!(r.action, SyscallAction::AllowIf(_)))
            .count();
        let notify = |f: &dyn Fn() -> Option<Vec<seccompiler::sock_filter>>| {
            let mut best = u128::MAX;
            let mut len = 0;
            for _ in 0..10 {
                let t = Instant::now();
                len = f().map_or(0, |f| f.len());
                best = best.min(t.elapsed().as_nanos());
            }
            (len, best)
        };
        let (nh, nh_ns) = notify(&|| hand_written_supervised_filter(p));
        let (nl, nl_ns) = notify(&|| supervised_filter(p).unwrap());
        out.push(serde_json::json!({
            "notify_hand": nh, "notify_libseccomp": nl,
            "notify_hand_compile_ns": nh_ns, "notify_libseccomp_compile_ns": nl_ns,
            "index": i, "label": label,
            "seccompiler": a, "libseccomp": b,
            "seccompiler_compile_ns": a_ns, "libseccomp_compile_ns": b_ns,
            "unconditional": unconditional, "conditional": conditional,
        }));
    }
    println!("{}", serde_json::Value::Array(out));
}

fn per_call(n: u64, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn run(which: &str, policy: usize, n: u64) {
    use nix::errno::Errno;
    use nix::fcntl::{fcntl, FcntlArg};
    use nix::sched::{unshare, CloneFlags};
    use nix::sys::resource::{getrlimit, Resource};
    use nix::unistd::getppid;
    use std::os::fd::AsRawFd;

    let policies = cases::policies();
    let (label, p) = &policies[policy];
    // The first compilation in this process: what a one-shot `ext-runner
    // invoke` pays (a library host or the fork server compiles once per
    // distinct policy and keeps it).
    let t = Instant::now();
    let mut filters = match backend(which) {
        Some(b) => compile(p, b).unwrap(),
        None => vec![],
    };
    let compile_ns = t.elapsed().as_nanos() as u64;
    // The supervised calls' filter: compiled after the main ones (the
    // launch builds it per worker; the main ones are cached).
    let t = Instant::now();
    let notify = match which {
        "notify-hand" => hand_written_supervised_filter(p),
        "notify-libseccomp" => supervised_filter(p).unwrap(),
        _ => None,
    };
    let notify_compile_ns = t.elapsed().as_nanos() as u64;
    let supervised = notify.is_some();
    assert_eq!(
        supervised,
        which.starts_with("notify-"),
        "{label} supervises nothing"
    );
    if let Some(f) = notify {
        filters.insert(0, f);
    }
    let file = std::fs::File::open("/dev/null").unwrap();
    let fd = file.as_raw_fd();
    let mut install_ns = Vec::new();
    for f in &filters {
        let t = Instant::now();
        seccompiler::apply_filter(f).unwrap();
        install_ns.push(t.elapsed().as_nanos() as u64);
    }
    let filtered = !filters.is_empty();
    // The verdicts, before timing them.
    assert!(fcntl(fd, FcntlArg::F_GETFD).is_ok());
    assert!(getrlimit(Resource::RLIMIT_NOFILE).is_ok());
    let denied = unshare(CloneFlags::empty());
    // A supervised call on a missing path: ENOSYS where the supervised
    // calls' filter notifies (installed without a listener here), ENOENT
    // where the main filter allows it.
    let missing = c"/nonexistent-seccomp-bench";
    let utimensat = || {
        // SAFETY: a valid C string; no times (NULL).
        let r = unsafe { libc::utimensat(libc::AT_FDCWD, missing.as_ptr(), std::ptr::null(), 0) };
        assert_eq!(r, -1);
        Errno::last()
    };
    assert_eq!(
        utimensat(),
        if supervised {
            Errno::ENOSYS
        } else {
            Errno::ENOENT
        }
    );
    assert_eq!(denied, if filtered { Err(Errno::EPERM) } else { Ok(()) });
    let getppid_ns = per_call(n, || {
        std::hint::black_box(getppid());
    });
    let fcntl_ns = per_call(n, || {
        std::hint::black_box(fcntl(fd, FcntlArg::F_GETFD).unwrap());
    });
    let prlimit_ns = per_call(n, || {
        std::hint::black_box(getrlimit(Resource::RLIMIT_NOFILE).unwrap());
    });
    let denied_ns = per_call(n, || {
        let _ = std::hint::black_box(unshare(CloneFlags::empty()));
    });
    let supervised_ns = per_call(n, || {
        std::hint::black_box(utimensat());
    });
    println!(
        "{}",
        serde_json::json!({
            "notify_compile_ns": notify_compile_ns, "supervised_ns": supervised_ns,
            "backend": which, "policy": label,
            "instructions": filters.iter().map(Vec::len).collect::<Vec<_>>(),
            "install_ns": install_ns, "compile_ns": compile_ns,
            "getppid_ns": getppid_ns, "fcntl_ns": fcntl_ns,
            "prlimit_ns": prlimit_ns, "denied_ns": denied_ns,
        })
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["sizes"] => sizes(),
        ["run", b, p, n] => run(b, p.parse().unwrap(), n.parse().unwrap()),
        _ => {
            eprintln!("usage: seccomp-bench sizes | run none|seccompiler|libseccomp|notify-hand|notify-libseccomp POLICY CALLS");
            std::process::exit(2);
        }
    }
}
