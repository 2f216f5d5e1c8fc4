//! The code that runs in the worker's process between `fork` and `exec`.
//!
//! This is the only module with `unsafe`. Everything here was prepared by the
//! parent before the fork (see `launch.rs`): no allocation, no lock, only
//! async-signal-safe system calls, in one linear sequence that reads top to
//! bottom as the order the kernel sees it.

use std::io;

/// What the child applies to itself, fully prepared before the fork.
#[derive(Debug, Default)]
pub struct Confinement {
    /// Signal sent to the worker when the thread that started it exits.
    pub parent_death_signal: Option<i32>,
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Applies `c` to the calling (freshly forked) process. Runs between fork and exec.
pub fn enter(c: &Confinement) -> io::Result<()> {
    // A session of its own: off the host's terminal, and one process group to kill.
    // SAFETY: setsid takes no pointers; it is async-signal-safe.
    check(unsafe { libc::setsid() })?;
    if let Some(sig) = c.parent_death_signal {
        // SAFETY: PR_SET_PDEATHSIG takes an integer signal number; no memory is touched.
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) })?;
    }
    // Every descriptor above stderr closes at exec, whoever opened it without O_CLOEXEC.
    // SAFETY: close_range takes integers only; CLOSE_RANGE_CLOEXEC only sets flags.
    check(unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } as libc::c_int)?;
    Ok(())
}

/// Arranges for `enter(&confinement)` to run in the child of `cmd`.
pub fn install(cmd: &mut tokio::process::Command, confinement: Confinement) {
    // SAFETY: `enter` only makes async-signal-safe system calls on data prepared
    // before the fork, and neither allocates nor locks, as `pre_exec` requires.
    unsafe {
        cmd.pre_exec(move || enter(&confinement));
    }
}
