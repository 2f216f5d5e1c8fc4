//! Processes: fork and exec without `subprocess.run`, signals and ptrace to host processes, escaping the pid namespace, what outlives unload.

use super::*;

/// ptrace of a victim `sleep` the test started: it must stay alive and untraced.
#[test]
fn attack_proc_ptrace_victim() {
    confined(FULL, |who| {
        let v = Victim::sleep(who);
        // Control: a plain tracer as the same user does attach (TracerPid shows it).
        let tracer = Victim::python(
            who,
            &format!("import ctypes,time; l=ctypes.CDLL(None); print(l.ptrace(0x4206, {}, 0, 0), flush=True); time.sleep(5)", v.pid),
        );
        assert_eq!(tracer.line, "0", "control: plain PTRACE_SEIZE failed");
        let traced = status_field(v.pid, "TracerPid").unwrap();
        assert_ne!(traced, "0", "control: TracerPid does not show a tracer");
        drop(tracer);
        std::thread::sleep(ms(50));
        let code = snippet(
            r#"
pid = @V@
result = {"attach": ename(sys_call(101, 16, pid, 0, 0)), "seize": ename(sys_call(101, 0x4206, pid, 0, 0)),
          "kill_via_ptrace": ename(sys_call(101, 8, pid, 0, 0))}
"#,
            &[("V", v.pid.to_string())],
        );
        let (r, _) = run_once(Launch::new(who, &[]), &code);
        std::thread::sleep(ms(100));
        assert!(v.alive(), "victim died: {r:?}");
        assert_eq!(
            status_field(v.pid, "TracerPid").as_deref(),
            Some("0"),
            "victim traced: {r:?}"
        );
        assert!(
            matches!(state(v.pid).as_deref(), Some("S")),
            "victim state {:?}: {r:?}",
            state(v.pid)
        );
        assert_eq!(r.field("attach"), "EPERM", "{r:?}");
    });
}

/// process_vm_readv of a victim holding a secret at a known address.
#[test]
fn attack_proc_process_vm_readv_victim() {
    confined(FULL, |who| {
        let secret = token("VMSECRET");
        let v = Victim::python(
            who,
            &format!("import time; s = b'{secret}'; print(id(s) + 32, len(s), flush=True); time.sleep(60)"),
        );
        let (addr, len) = v.line.split_once(' ').unwrap();
        let code = snippet(
            r#"
import ctypes
n = @N@
buf = ctypes.create_string_buffer(n)
local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), n)
remote = (ctypes.c_void_p * 2)(@A@, n)
r = sys_call(310, @V@, ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)
result = {"r": ename(r), "data": buf.raw.decode(errors="replace") if r > 0 else ""}
"#,
            &[
                ("N", len.to_string()),
                ("A", addr.to_string()),
                ("V", v.pid.to_string()),
            ],
        );
        assert_control(&plain(who, &code), &secret, "plain process_vm_readv");
        let (r, t) = run_once(Launch::new(who, &[]), &code);
        assert_hidden(&t, &secret, "process_vm_readv");
        assert_eq!(r.field("r"), "EPERM", "{r:?}");
    });
}

/// Signals to host processes: SIGKILL to a victim, SIGURG to one that records
/// it, to the runner, and kill(-1) (every process the worker may signal).
#[test]
fn attack_proc_signal_host_processes() {
    confined(FULL, |who| {
        let dir = open_dir("sig");
        let canary = dir.join("got-signal");
        let sleeper = Victim::sleep(who);
        let recorder = Victim::python(
            who,
            &format!(
                "import signal,time\ndef h(*a): open({}, 'a').write('urg\\n')\nsignal.signal(signal.SIGURG, h)\nprint('up', flush=True)\nwhile True: time.sleep(1)",
                lit(&canary)
            ),
        );
        let mut s = Launch::new(who, &[]).start();
        let code = snippet(
            r#"
import signal
result = {"kill9": attempt(lambda: os.kill(@S@, signal.SIGKILL)),
          "urg": attempt(lambda: os.kill(@R@, signal.SIGURG)),
          "runner": attempt(lambda: os.kill(@RUN@, signal.SIGKILL)),
          "all": attempt(lambda: os.kill(-1, signal.SIGURG)),
          "sigqueue": ename(sys_call(129, @S@, 9, 0)),
          "tgkill": ename(sys_call(234, @S@, @S@, 9))}
"#,
            &[
                ("S", sleeper.pid.to_string()),
                ("R", recorder.pid.to_string()),
                ("RUN", s.runner_pid().to_string()),
            ],
        );
        let r = s.exec(&code);
        std::thread::sleep(ms(300));
        assert!(sleeper.alive(), "victim killed: {r:?}");
        assert!(!canary.exists(), "a signal reached the recorder: {r:?}");
        assert!(
            matches!(s.exec("result = 'still here'"), Reply::Value(_)),
            "runner or worker hurt"
        );
        s.finish();
        // Control: a SIGURG does reach the recorder and is seen.
        signal(recorder.pid, nix::sys::signal::Signal::SIGURG);
        let end = std::time::Instant::now() + Duration::from_secs(3);
        while !canary.exists() && std::time::Instant::now() < end {
            std::thread::sleep(ms(20));
        }
        assert!(
            canary.exists(),
            "control: the recorder does not record SIGURG"
        );
    });
}

/// Without subprocess.run: fork, raw clone, posix_spawn (clone with CLONE_VM|CLONE_VFORK).
#[test]
fn attack_proc_fork_without_subprocess() {
    confined(FULL, |who| {
        let ws = owned_dir(who, "ws");
        let code = snippet(
            r#"
w = @W@
def fork():
    p = raw_fork()
    if p == 0:
        open(os.path.join(w, "fork-canary"), "w").write("x"); os._exit(0)
    if p > 0:
        os.waitpid(p, 0)
    return ename(p)
def fork_syscall():
    p = sys_call(57)
    if p == 0:
        open(os.path.join(w, "forksys-canary"), "w").write("x"); os._exit(0)
    return ename(p)
def raw_clone():
    p = sys_call(56, 17, 0, 0, 0, 0)
    if p == 0:
        open(os.path.join(w, "clone-canary"), "w").write("x"); os._exit(0)
    return ename(p)
result = {"fork": fork(), "fork_syscall": fork_syscall(), "clone": raw_clone(), "vfork": ename(sys_call(58)) if False else "not tried",
          "os.fork": attempt(os.fork)}
"#,
            &[("W", lit(ws.path()))],
        );
        let (r, _) = run_once(
            Launch::new(who, &["filesystem.write"]).workspace(ws.path()),
            &code,
        );
        for c in ["fork-canary", "forksys-canary", "clone-canary"] {
            assert!(!ws.join(c).exists(), "{c}: {r:?}");
        }
        assert_eq!(r.field("fork"), "EPERM", "{r:?}");
        assert_eq!(r.field("fork_syscall"), "EPERM", "{r:?}");
        assert_eq!(r.field("clone"), "EPERM", "{r:?}");
        // Control: with subprocess.run, fork works and leaves its canary.
        let (r2, _) = run_once(
            Launch::new(who, &["filesystem.write", "subprocess.run"]).workspace(ws.path()),
            &code,
        );
        assert!(
            ws.join("fork-canary").exists(),
            "control: fork with subprocess.run failed: {r2:?}"
        );
    });
}

/// Without subprocess.run: exec of a system binary (the worker would be replaced by sh).
#[test]
fn attack_proc_exec_without_subprocess() {
    confined(FULL, |who| {
        let ws = owned_dir(who, "ws");
        let c = ws.join("exec-canary");
        let code = snippet(
            r#"result = {"execv": raw_exec("/bin/sh", ["sh", "-c", "echo pwned > " + @C@]),
          "execv_env": raw_exec("/usr/bin/env", ["env"]), "os.execv": attempt(lambda: os.execv("/bin/true", ["true"]))}"#,
            &[("C", lit(&c))],
        );
        let (r, _) = run_once(
            Launch::new(who, &["filesystem.write"]).workspace(ws.path()),
            &code,
        );
        assert!(!c.exists(), "exec ran: {r:?}");
        assert_eq!(r.field("execv"), "EACCES", "{r:?}");
        let (_, _) = run_once(
            Launch::new(who, &["filesystem.write", "subprocess.run"]).workspace(ws.path()),
            &code,
        );
        assert!(c.exists(), "control: exec with subprocess.run failed");
    });
}

/// GAP: exec of any program through a memfd (execveat AT_EMPTY_PATH): Landlock
/// does not check files of internal mounts such as memfd.
#[test]
fn proc_exec_memfd_without_subprocess() {
    confined(FULL, |who| {
        let ws = owned_dir(who, "ws");
        let c = ws.join("memfd-canary");
        let code = snippet(
            r#"
fd = os.memfd_create("x")
os.write(fd, open("/bin/sh", "rb").read())
result = raw_fexec(fd, ["sh", "-c", "echo pwned > " + @C@])
"#,
            &[("C", lit(&c))],
        );
        let (r, _) = run_once(
            Launch::new(who, &["filesystem.write"]).workspace(ws.path()),
            &code,
        );
        assert!(!c.exists(), "a program was executed from a memfd: {r:?}");
    });
}

/// GAP: exec of any readable program through the dynamic loader, which every
/// worker may execute (it is the interpreter's ELF interpreter).
#[test]
#[ignore = "KNOWN LIMITATION (docs/security.md): the dynamic loader every dynamically linked worker needs can run another readable ELF in place of the worker (ld.so /bin/sh); the result keeps the whole confinement: no fork, same Landlock and seccomp"]
fn gap_proc_exec_via_dynamic_loader() {
    confined(FULL, |who| {
        let ws = owned_dir(who, "ws");
        let c = ws.join("ldso-canary");
        let code = snippet(
            r#"
import glob
ld = sorted(glob.glob("/lib64/ld-linux*.so*") + glob.glob("/lib/ld-linux*.so*"))[0]
result = raw_exec(ld, [ld, "/bin/sh", "-c", "echo pwned > " + @C@])
"#,
            &[("C", lit(&c))],
        );
        let (r, _) = run_once(
            Launch::new(who, &["filesystem.write"]).workspace(ws.path()),
            &code,
        );
        assert!(
            !c.exists(),
            "a program was executed via the dynamic loader: {r:?}"
        );
    });
}

/// setsid/setpgid and a new session for a child: a worker's processes stay in
/// its process group, and nothing of it remains after unload.
#[test]
fn attack_proc_escape_session_and_outlive_unload() {
    confined(FULL, |who| {
        let marker = unique_sleep();
        let code = snippet(
            r#"
import subprocess
m = @M@
def daemon():
    # double fork: the grandchild is reparented inside the worker's pid namespace
    p = os.fork()
    if p == 0:
        if os.fork() == 0:
            try: os.setsid()
            except OSError: pass
            os.execv("/bin/sleep", ["sleep", m]); 
        os._exit(0)
    os.waitpid(p, 0)
    return "daemonized"
result = {"setsid": attempt(os.setsid), "setpgid": attempt(lambda: os.setpgid(0, 0)),
          "new_session": attempt(lambda: subprocess.Popen(["sleep", m], start_new_session=True).pid),
          "daemon": attempt(daemon)}
"#,
            &[("M", lit(&marker))],
        );
        let mut s = Launch::new(who, &["subprocess.run"]).start();
        let r = s.exec(&code);
        // setsid and setpgid are allowed in the worker's own pid namespace
        // (denied without one): what counts is that nothing outlives unload.
        assert!(
            r.field("setsid") == "EPERM" || r.field("setsid") == "ok: None",
            "{r:?}"
        );
        // Control: the daemonized grandchild is running now.
        let end = std::time::Instant::now() + Duration::from_secs(3);
        while procs_with(&marker).is_empty() && std::time::Instant::now() < end {
            std::thread::sleep(ms(20));
        }
        let running = procs_with(&marker);
        assert!(
            !running.is_empty(),
            "control: the grandchild did not start: {r:?}"
        );
        s.finish();
        let left = wait_no_procs(&marker, Duration::from_secs(5));
        for p in &left {
            signal(*p, nix::sys::signal::Signal::SIGKILL);
        }
        assert!(
            left.is_empty(),
            "processes of the worker outlived unload: {left:?}"
        );
    });
}

/// The runner is SIGKILLed: the worker and everything it started die with it.
#[test]
fn attack_proc_survive_runner_death() {
    confined(FULL, |who| {
        let marker = unique_sleep();
        let mut s = Launch::new(who, &["subprocess.run"]).start();
        let r = s.exec(&snippet(
            r#"
import subprocess, threading, time
subprocess.Popen(["sleep", @M@])
threading.Thread(target=time.sleep, args=(60,)).start()   # the worker would outlive its stdin
result = "started"
"#,
            &[("M", lit(&marker))],
        ));
        assert_eq!(r.text(), "\"started\"");
        let before = s.processes();
        assert!(
            before.len() >= 2 && !procs_with(&marker).is_empty(),
            "control: nothing started"
        );
        let scratch = s.scratch();
        let cgroups = s.cgroups();
        s.kill_runner();
        let left = wait_no_procs(&marker, Duration::from_secs(5));
        let alive: Vec<i32> = before
            .iter()
            .copied()
            .filter(|p| !common::wait_gone(*p, Duration::from_secs(5)))
            .collect();
        for p in left.iter().chain(&alive) {
            signal(*p, nix::sys::signal::Signal::SIGKILL);
        }
        // The runner died before it could remove them (see gap_lifetime_scratch_left_after_runner_sigkill).
        if let Some(d) = scratch {
            let _ = std::fs::remove_dir_all(d);
        }
        for c in &cgroups {
            let _ = std::fs::remove_dir(c);
        }
        assert!(
            left.is_empty() && alive.is_empty(),
            "outlived the runner: {left:?} {alive:?}"
        );
    });
}

/// GAP: a SIGKILLed runner leaves the worker's scratch folder (and, as root,
/// its pids cgroup) behind: nothing removes them when the runner cannot.
#[test]
fn lifetime_scratch_of_a_killed_runner_is_swept_by_the_next() {
    confined(FULL, |who| {
        let mut s = Launch::new(who, &["subprocess.run"]).start();
        s.exec(r#"open(os.path.join(os.environ["TMPDIR"], "work"), "w").write("x"); result = 1"#);
        let scratch = s.scratch().expect("scratch");
        let cgroups = s.cgroups();
        s.kill_runner();
        // A killed runner cannot clean up; the next runner of this user sweeps
        // what runners that are gone left behind.
        let mut next = Launch::new(who, &["subprocess.run"]).start();
        next.exec("result = 1");
        drop(next);
        let removed = wait_removed(&scratch, Duration::from_secs(3));
        let cg_removed = cgroups
            .iter()
            .all(|c| wait_removed(c, Duration::from_secs(1)));
        let _ = std::fs::remove_dir_all(&scratch);
        for c in &cgroups {
            let _ = std::fs::remove_dir(c);
        }
        assert!(
            removed,
            "scratch {} left after the runner was killed",
            scratch.display()
        );
        assert!(
            cg_removed,
            "cgroups {cgroups:?} left after the runner was killed"
        );
    });
}

/// GAP: the worker clears its parent-death signal (prctl is allowed whole),
/// then outlives a SIGKILLed runner. With a pid namespace whose process 1 is
/// the worker, nothing else kills it; without namespaces (no user namespaces
/// for the user, or `layers.namespaces: false`) the worker's own
/// PDEATHSIG is all there is, with any layout of the pid namespace.
#[test]
fn proc_clear_pdeathsig_survives_runner() {
    confined(FULL, |who| {
        for policy in [
            json!({}),
            json!({"mode": "best-effort", "layers": {"namespaces": false}}),
        ] {
            let mut s = Launch::new(who, &[]).policy(policy.clone()).start();
            let r = s.exec(
                r#"
import threading, time
result = ename(_libc.prctl(1, 0, 0, 0, 0))
threading.Thread(target=time.sleep, args=(30,)).start()
"#,
            );
            let worker = s.worker_pid().expect("worker pid");
            let scratch = s.scratch();
            s.kill_runner();
            let gone = common::wait_gone(worker, Duration::from_secs(3));
            if !gone {
                signal(worker, nix::sys::signal::Signal::SIGKILL);
            }
            if let Some(d) = scratch {
                let _ = std::fs::remove_dir_all(d);
            }
            assert!(
                gone,
                "policy {policy}: the worker outlived the SIGKILLed runner after clearing PDEATHSIG: {r:?}"
            );
        }
    });
}

/// setpriority is allowed in the worker's own pid namespace: it must reach
/// the worker's own processes only. A host process of the same user keeps
/// its niceness, by pid, by process group and (unprivileged) by user. The
/// niceness aimed at is above the one the suite runs at (the victims and
/// the worker start at it, and an unprivileged process may only raise
/// niceness), so that the control holds under `nice -n 10` too.
#[test]
fn attack_proc_renice_host_process() {
    let nice = |pid: i32| -> String {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(16).map(str::to_string))
            .unwrap_or_default()
    };
    let current: i32 = nice(std::process::id() as i32)
        .parse()
        .expect("this process's niceness");
    if current >= 19 {
        eprintln!(
            "SKIP: the suite runs at niceness {current}: no higher niceness to renice a victim to"
        );
        return;
    }
    let target = (current + 3).min(19);
    confined(FULL, |who| {
        let v = Victim::sleep(who);
        let before = nice(v.pid);
        let by_user = if who == Who::Nobody {
            format!("ename(sys_call(141, 2, 0, {target}))")
        } else {
            "'skipped'".to_string()
        };
        let code = snippet(
            r#"result = {"pid": ename(sys_call(141, 0, @V@, @N@)), "pgrp": ename(sys_call(141, 1, @V@, @N@)), "user": @U@, "own": ename(sys_call(141, 0, 0, @N@))}"#,
            &[
                ("V", v.pid.to_string()),
                ("U", by_user),
                ("N", target.to_string()),
            ],
        );
        let (r, _) = run_once(Launch::new(who, &[]), &code);
        assert_eq!(nice(v.pid), before, "the host process was reniced: {r:?}");
        assert_eq!(r.field("own"), "0", "renicing itself works: {r:?}");
        // Control: outside the sandbox the same call by pid reaches the victim.
        let control = Victim::sleep(who);
        plain(
            who,
            &snippet(
                r#"result = ename(sys_call(141, 0, @V@, @N@))"#,
                &[("V", control.pid.to_string()), ("N", target.to_string())],
            ),
        );
        assert_eq!(
            nice(control.pid),
            target.to_string(),
            "control: renice by pid works outside (from niceness {current})"
        );
    });
}
