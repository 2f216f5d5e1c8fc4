//! `failcall`: runs a command in which the named system calls fail with an
//! errno (a libseccomp filter, inherited by everything the command starts).
//! Test infrastructure for `tests/confinement_steps.rs`: it makes one of the
//! worker's confinement steps fail for real, to check that the runner's error
//! names the step.
//!
//! ```text
//! failcall SYSCALL[,SYSCALL...] ERRNO -- COMMAND [ARGS...]
//! ```
//!
//! A SYSCALL written `NAME:VALUE` fails only when its first argument is
//! VALUE (`prctl:67`: PR_SET_MEMORY_MERGE alone, as on a kernel before 6.4).
//! ERRNO is a name (`EPERM`, `EACCES`, ...). As root the filter is loaded
//! without `no_new_privs`, as Docker does; otherwise libseccomp sets it.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: failcall SYSCALL[:ARG0][,SYSCALL[:ARG0]...] ERRNO -- COMMAND [ARGS...]");
        std::process::exit(2)
    };
    let (Some(calls), Some(errno), Some(dashes)) = (
        args.first().and_then(|a| a.to_str()),
        args.get(1).and_then(|a| a.to_str()),
        args.get(2),
    ) else {
        usage()
    };
    if dashes != "--" || args.len() < 4 {
        usage();
    }
    let errno = match errno {
        "EPERM" => libc::EPERM,
        "EACCES" => libc::EACCES,
        "EINVAL" => libc::EINVAL,
        "ENOSYS" => libc::ENOSYS,
        "ENOSPC" => libc::ENOSPC,
        "EAGAIN" => libc::EAGAIN,
        other => {
            eprintln!("failcall: unknown errno {other}");
            std::process::exit(2)
        }
    };
    let load = || -> Result<(), Box<dyn std::error::Error>> {
        let mut f = ScmpFilterContext::new(ScmpAction::Allow)?;
        f.set_ctl_nnp(!nix::unistd::geteuid().is_root())?;
        for call in calls.split(',') {
            match call.split_once(':') {
                Some((name, first)) => f.add_rule_conditional(
                    ScmpAction::Errno(errno),
                    ScmpSyscall::from_name(name)?,
                    &[ScmpArgCompare::new(0, ScmpCompareOp::Equal, first.parse()?)],
                )?,
                None => f.add_rule(ScmpAction::Errno(errno), ScmpSyscall::from_name(call)?)?,
            };
        }
        f.load()?;
        Ok(())
    };
    if let Err(e) = load() {
        eprintln!("failcall: {e}");
        std::process::exit(125);
    }
    let e = std::process::Command::new(&args[3]).args(&args[4..]).exec();
    eprintln!("failcall: cannot run {}: {e}", args[3].to_string_lossy());
    std::process::exit(127)
}
