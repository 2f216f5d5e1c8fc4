//! The private root: what a worker with a mount namespace can see of the
//! host (its own /proc, no host file, a /dev/shm of its own).

use super::*;

/// The private /proc is of the worker's own pid namespace: no host process
/// appears there, by listing or by pid, and process 1 (the reaper, the
/// exec'd `ext-reaper`) shows neither the runner's command line nor its
/// environment.
#[test]
fn attack_root_proc_shows_no_host_process() {
    confined(FULL, |who| {
        let secret = token("HOSTPROC");
        let v = Victim::python(
            who,
            &format!("import time; print('up', flush=True); time.sleep(60)  # {secret}"),
        );
        let code = snippet(
            r#"
procs = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        procs[p] = attempt(lambda p=p: open("/proc/%s/cmdline" % p, "rb").read().replace(b"\0", b" ").decode())
result = {"procs": procs, "victim": attempt(lambda: open("/proc/@V@/cmdline", "rb").read()),
          "reaper_environ": attempt(lambda: open("/proc/1/environ", "rb").read()),
          "self": os.getpid()}
"#,
            &[("V", v.pid.to_string())],
        );
        assert_control(&plain(who, &code), &secret, "plain listing of /proc");
        let runner_secret = token("RUNNERENV");
        let mut s = Launch::new(who, &[])
            .env("NODUS_RUNNER_SECRET", &runner_secret)
            .start();
        let r = s.exec(&code);
        let t = s.finish();
        assert_hidden(&t, &secret, "a host process in the private /proc");
        assert_hidden(
            &t,
            &runner_secret,
            "the runner's environment through /proc/1",
        );
        let procs = r.value()["procs"].as_object().expect("procs").clone();
        // The reaper (1), the worker (2), nothing else that runs.
        assert!(procs.len() <= 3, "{r:?}");
        assert!(procs.contains_key("1") && procs.contains_key("2"), "{r:?}");
        assert_eq!(r.value()["self"], json!(2));
        assert_eq!(r.field("victim"), "ENOENT", "{r:?}");
        // The reaper is the exec'd ext-reaper: no runner's arguments in its
        // command line, its environment unreadable.
        let reaper = procs["1"].as_str().unwrap_or_default().to_string();
        assert!(!reaper.contains("run"), "the runner's command line: {r:?}");
        assert!(reaper.starts_with("ok: 'ext-reaper init "), "{r:?}");
        assert_ne!(r.field("reaper_environ"), "ok: b''", "{r:?}");
        assert!(r.field("reaper_environ").starts_with('E'), "{r:?}");
    });
}

/// The pid namespace's two waiters exec the small `ext-reaper` instead of
/// staying copies of the runner (issue 16), and keep what the forks
/// guaranteed: seen from outside, the worker's monitor and reaper run
/// `ext-reaper` (not the runner's command line); from inside, process 1's
/// memory, maps and environment stay closed (it makes itself non-dumpable
/// before the worker goes on) while the worker's own are open (control).
/// The other way, with `NODUS_EXTENSION_REAPER` naming no file, the waiters
/// stay forks of the runner (the check's control: it tells the two apart),
/// and the reaper's copy of the runner's argv and environment is zeroed.
/// Through a fork server (`NODUS_TEST_SERVER=1`) a worker has the reaper
/// alone: the zygote waits for it, no monitor stays.
#[test]
fn root_waiters_exec_ext_reaper_or_stay_wiped_forks() {
    confined(FULL, |who| {
        let code = r#"
result = {"cmdline": attempt(lambda: open("/proc/1/cmdline", "rb").read().replace(b"\0", b" ").decode()),
          "environ": attempt(lambda: open("/proc/1/environ", "rb").read()),
          "maps": attempt(lambda: open("/proc/1/maps").read()[:40]),
          "mem": attempt(lambda: open("/proc/1/mem", "rb").read(1)),
          "own_environ": attempt(lambda: len(open("/proc/self/environ", "rb").read()) > 0),
          "own_maps": attempt(lambda: len(open("/proc/self/maps").read()) > 0)}
"#;
        let runner_secret = token("REAPERARGV");
        for exec in [true, false] {
            let mut l = Launch::new(who, &[]).env("NODUS_RUNNER_SECRET", &runner_secret);
            if !exec {
                // Cold (the runner's own interpreter option), without ext-reaper.
                l = l
                    .python(&who.python())
                    .env("NODUS_EXTENSION_REAPER", "/nonexistent/ext-reaper");
            }
            let mut s = l.start();
            let r = s.exec(code);
            let waiters: Vec<String> = s
                .processes()
                .into_iter()
                .map(cmdline)
                .filter(|c| !c.contains("boot.py"))
                .collect();
            let t = s.finish();
            assert_hidden(
                &t,
                &runner_secret,
                "the runner's environment through /proc/1",
            );
            assert_eq!(r.field("own_environ"), "ok: True", "control: {r:?}");
            assert_eq!(r.field("own_maps"), "ok: True", "control: {r:?}");
            for k in ["environ", "maps", "mem"] {
                assert!(
                    r.field(k).starts_with('E'),
                    "/proc/1/{k} (exec {exec}): {r:?}"
                );
            }
            let reaper = r.field("cmdline");
            assert!(!reaper.contains("run"), "the runner's command line: {r:?}");
            let execd = waiters
                .iter()
                .filter(|c| c.starts_with("ext-reaper "))
                .count();
            if exec && warm() {
                assert!(reaper.starts_with("ok: 'ext-reaper init "), "{r:?}");
                assert_eq!(
                    (execd, waiters.len()),
                    (1, 1),
                    "the reaper alone, the zygote's child: {waiters:?}"
                );
            } else if exec {
                assert!(reaper.starts_with("ok: 'ext-reaper init "), "{r:?}");
                assert_eq!(
                    (execd, waiters.len()),
                    (2, 2),
                    "monitor and reaper: {waiters:?}"
                );
            } else {
                assert_eq!(execd, 0, "forked waiters: {waiters:?}");
                assert_eq!(waiters.len(), 2, "monitor and reaper: {waiters:?}");
            }
        }
    });
}

/// The private root holds only what the policy grants: a host file beside
/// the grants (in the host's /tmp, /var/tmp, /etc, a home) is in no folder
/// the worker can list, and not there by its path.
#[test]
fn attack_root_exposes_no_host_file() {
    confined(FULL, |who| {
        let secret = token("HOSTFILE");
        let host = world_dir("host-root");
        let f = host.join(&format!("{secret}.txt"));
        owned_file(who, &f, &secret, 0o644);
        let var_tmp = std::path::PathBuf::from(format!("/var/tmp/{secret}.txt"));
        owned_file(who, &var_tmp, &secret, 0o644);
        let code = snippet(
            r#"
names = []
for top in ["/", "/tmp", "/var", "/var/tmp", "/etc", "/dev", "/root", "/home"]:
    for d, subdirs, files in os.walk(top):
        if d.startswith(("/proc", "/usr", "/root/.pyenv")):
            subdirs[:] = []
            continue
        names.extend(os.path.join(d, n) for n in subdirs + files)
result = {"names": sorted(set(n for n in names if @TOKEN@ in n)),
          "host": attempt(lambda: open(@F@).read()),
          "var_tmp": attempt(lambda: open(@VT@).read()),
          "count": len(names)}
"#,
            &[
                ("TOKEN", lit(secret.split('-').nth(1).unwrap())),
                ("F", lit(&f)),
                ("VT", lit(&var_tmp)),
            ],
        );
        let control = snippet(
            r#"result = [open(@F@).read(), open(@VT@).read()]"#,
            &[("F", lit(&f)), ("VT", lit(&var_tmp))],
        );
        assert_control(
            &plain(who, &control),
            &secret,
            "plain read of the host files",
        );
        let (r, t) = run_once(Launch::new(who, &[]), &code);
        let _ = std::fs::remove_file(&var_tmp);
        assert_hidden(&t, &secret, "a host file in the private root");
        assert_eq!(r.value()["names"], json!([]), "{r:?}");
        assert_eq!(r.field("host"), "ENOENT", "{r:?}");
        assert_eq!(r.field("var_tmp"), "ENOENT", "{r:?}");
    });
}

/// /dev/shm is a tmpfs of each worker's own: what one worker puts there
/// reaches neither the host's /dev/shm nor another worker, and the host's
/// segments are not in view.
#[test]
fn attack_root_dev_shm_shared_with_nobody() {
    confined(FULL, |who| {
        let secret = token("SHMSECRET");
        let host_seg = std::path::PathBuf::from(format!("/dev/shm/{secret}-host"));
        owned_file(who, &host_seg, &secret, 0o644);
        let mine = format!("/dev/shm/{secret}-worker");
        let write = snippet(
            r#"open(@P@, "w").write("from the worker"); result = sorted(os.listdir("/dev/shm"))"#,
            &[("P", lit(&mine))],
        );
        let look = snippet(
            r#"result = {"list": sorted(os.listdir("/dev/shm")), "host": attempt(lambda: open(@H@).read()), "other": attempt(lambda: open(@P@).read())}"#,
            &[("H", lit(&host_seg)), ("P", lit(&mine))],
        );
        // Control: outside, /dev/shm is shared.
        let c = plain(who, &write);
        assert_control(&c, &secret, "plain /dev/shm is the host's");
        assert!(
            Path::new(&mine).exists(),
            "control: plain write reaches the host"
        );
        std::fs::remove_file(&mine).unwrap();

        let mut a = Launch::new(who, &[]).start();
        let ra = a.exec(&write);
        let mut b = Launch::new(who, &[]).start();
        let rb = b.exec(&look);
        let rb_text = rb.text();
        let (ta, tb) = (a.finish(), b.finish());
        let _ = std::fs::remove_file(&host_seg);
        assert!(
            ra.value().to_string().contains(&format!("{secret}-worker")),
            "the worker's own segment: {ra:?}"
        );
        assert!(
            !ra.value().to_string().contains(&format!("{secret}-host")),
            "the host's segment in view: {ra:?}"
        );
        assert!(
            !Path::new(&mine).exists(),
            "the worker's segment reached the host"
        );
        assert!(
            !rb_text.contains("-worker"),
            "worker b sees worker a's: {rb:?}"
        );
        assert_eq!(rb.field("other"), "ENOENT", "{rb:?}");
        assert_eq!(rb.field("host"), "ENOENT", "{rb:?}");
        assert_hidden(&tb, &secret, "the host's segment");
        let _ = ta;
    });
}

/// The fault injection of debug builds (`src/sandbox/root.rs`).
const FAULT_ROOT_BIND: &str = "NODUS_FAULT_ROOT_BIND";

/// A folder outside the host's /tmp (under /var/lib), readable by every
/// user: a bind of it lands in the skeleton, not inside the scratch folder
/// that /tmp is in the private root.
fn outside_tmp_dir(label: &str) -> common::TempDir {
    let d = common::TempDir::new_in(Path::new("/var/lib"), label);
    chmod(d.path(), 0o755);
    d
}

/// Best effort with `off` layers switched off.
fn layers_off(off: &[&str]) -> serde_json::Value {
    let mut layers = json!({});
    for l in off {
        layers[*l] = json!(false);
    }
    json!({"mode": "best-effort", "layers": layers})
}

/// Landlock alone stops a read that a mistake in the private root lets
/// through. The fault (`NODUS_FAULT_ROOT_BIND`, honoured by debug builds
/// only) binds a secret folder into every private root, at its own path,
/// with no Landlock rule. Controls: outside the sandbox the secret is read,
/// and so it is with the same fault and Landlock switched off (the bind is
/// real, and the outside check sees a leak when there is one).
#[test]
fn attack_root_fault_extra_bind_stopped_by_landlock() {
    if warm() {
        eprintln!("SKIP: the fault is injected into a cold runner's plan (NODUS_TEST_SERVER=1 starts workers from a server)");
        return;
    }
    confined(FULL, |who| {
        let secret = token("FAULTBIND");
        let dir = outside_tmp_dir("fault-bind");
        let file = dir.join("secret.txt");
        owned_file(who, &file, &secret, 0o644);
        let fault = dir.path().to_string_lossy().into_owned();
        let code = snippet(
            "result = {'read': attempt(lambda: open(@F@).read()), 'list': attempt(lambda: os.listdir(@D@))}",
            &[("F", lit(&file)), ("D", lit(dir.path()))],
        );
        assert_control(&plain(who, &code), &secret, "plain read of the secret");

        let (r, t) = run_once(
            Launch::new(who, &[])
                .env(FAULT_ROOT_BIND, &fault)
                .policy(layers_off(&["landlock"])),
            &code,
        );
        assert!(
            t.contains(&secret),
            "control failed: with the fault and Landlock off the secret should be read, got {r:?}\n{}",
            t.all()
        );
        assert!(
            t.contains("fault injection"),
            "the runner says the fault is on: {}",
            t.all()
        );

        let (r, t) = run_once(Launch::new(who, &[]).env(FAULT_ROOT_BIND, &fault), &code);
        assert_hidden(
            &t,
            &secret,
            "a folder bound into the private root by mistake",
        );
        assert_eq!(r.field("read"), "EACCES", "Landlock refuses it: {r:?}");
        assert_eq!(r.field("list"), "EACCES", "{r:?}");
    });
}

/// The private root alone stops reading host files when Landlock is
/// switched off: a secret in the host's /tmp and one outside it are not in
/// the root (`ENOENT`). Control: with the namespaces off too (no private
/// root, no Landlock) both are read.
#[test]
fn attack_root_without_landlock_exposes_no_host_file() {
    confined(FULL, |who| {
        let secret = token("NOLANDLOCK");
        let in_tmp = world_dir("no-landlock");
        let outside = outside_tmp_dir("no-landlock");
        let (a, b) = (in_tmp.join("s.txt"), outside.join("s.txt"));
        owned_file(who, &a, &secret, 0o644);
        owned_file(who, &b, &secret, 0o644);
        let code = snippet(
            "result = {'tmp': attempt(lambda: open(@A@).read()), 'outside': attempt(lambda: open(@B@).read())}",
            &[("A", lit(&a)), ("B", lit(&b))],
        );
        let (r, t) = run_once(
            Launch::new(who, &[]).policy(layers_off(&["landlock", "namespaces"])),
            &code,
        );
        assert!(
            r.field("tmp").contains(&secret) && r.field("outside").contains(&secret),
            "control failed: without Landlock and namespaces both secrets should be read, got {r:?}\n{}",
            t.all()
        );

        let (r, t) = run_once(
            Launch::new(who, &[]).policy(layers_off(&["landlock"])),
            &code,
        );
        assert_hidden(&t, &secret, "a host file with Landlock off");
        assert_eq!(r.field("tmp"), "ENOENT", "{r:?}");
        assert_eq!(r.field("outside"), "ENOENT", "{r:?}");
    });
}

/// Names in the folder above `/proc/PID/cwd`, read from outside (the test
/// runs as root): what `/proc/1/cwd/..` would show a worker whose process 1
/// is PID.
fn names_above_cwd(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/cwd/.."))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The pid namespace's waiters leave no way back into the host's tree. They
/// are forks of the launch, whose working directory is the extension folder
/// on the host, and the worker's `pivot_root` moves only working
/// directories that are the old root: before this test, monitor and reaper
/// stayed in the host's folder, so `/proc/1/cwd/..` inside the private root
/// was the host's tree (measured from outside: the extension folder's host
/// siblings, a secret among them), kept from the worker only by the
/// reaper's ptrace access check (non-dumpable, outside the Landlock
/// domain), the private root no layer there. Judged from outside: no
/// process of the worker has a working directory whose parent holds the
/// secret, with ext-reaper exec'd and as forks; control: a host process
/// started in the same extension folder does show it. From inside, with
/// every layer and with Landlock off, the secret is not read.
#[test]
fn attack_root_reaper_cwd_leads_to_no_host_file() {
    confined(FULL, |who| {
        let secret = token("REAPERCWD");
        let outer = world_dir("reaper-cwd");
        let ext = outer.join("ext");
        std::fs::create_dir(&ext).unwrap();
        chmod(&ext, 0o755);
        std::fs::write(
            ext.join("nodus-extension.json"),
            common::manifest_json("sec.attack", &["tool.invoke"], &["sec.run"]),
        )
        .unwrap();
        std::fs::write(ext.join("extension.py"), worker_source()).unwrap();
        for f in ["nodus-extension.json", "extension.py"] {
            chmod(&ext.join(f), 0o644);
        }
        let file = format!("{secret}.txt");
        owned_file(who, &outer.join(&file), &secret, 0o644);

        // Control: the outside check sees the secret beside a process
        // started in the extension folder.
        let mut host = who
            .command("sleep")
            .arg("60")
            .current_dir(&ext)
            .spawn()
            .expect("sleep");
        std::thread::sleep(ms(200));
        let seen = names_above_cwd(host.id() as i32);
        let _ = host.kill();
        let _ = host.wait();
        assert!(
            seen.contains(&file),
            "control failed: a host process in the extension folder: {seen:?}"
        );

        let code = snippet(
            r#"
result = {"read": attempt(lambda: open("/proc/1/cwd/../" + @F@).read()),
          "list": attempt(lambda: os.listdir("/proc/1/cwd/..")),
          "root": attempt(lambda: os.listdir("/proc/1/root/" + @D@)),
          "own": attempt(lambda: sorted(os.listdir("/proc/self/cwd")))}
"#,
            &[("F", lit(&file)), ("D", lit(outer.path()))],
        );
        for (exec, landlock) in [(true, true), (false, true), (true, false)] {
            let mut l = Launch::new(who, &[]);
            l.ext_dir = Some(ext.clone());
            if !exec {
                l = l
                    .python(&who.python())
                    .env("NODUS_EXTENSION_REAPER", "/nonexistent/ext-reaper");
            }
            if !landlock {
                l = l.policy(layers_off(&["landlock"]));
            }
            let mut s = l.start();
            let r = s.exec(&code);
            // Monitor, reaper and worker (under load a listing can miss one:
            // retried); a fork server's worker has no monitor (the zygote
            // waits for its reaper).
            let want = if exec && warm() { 2 } else { 3 };
            let mut procs = s.processes();
            for _ in 0..40 {
                if procs.len() >= want {
                    break;
                }
                std::thread::sleep(ms(50));
                procs = s.processes();
            }
            let outside: Vec<(i32, Vec<String>)> =
                procs.iter().map(|p| (*p, names_above_cwd(*p))).collect();
            let t = s.finish();
            let what = format!("exec {exec}, landlock {landlock}");
            assert!(
                procs.len() >= want,
                "(monitor,) reaper, worker ({what}): {procs:?}"
            );
            for (p, names) in &outside {
                assert!(
                    !names.contains(&file),
                    "process {p} ({}) keeps the host's folder as its working directory ({what}): {names:?}",
                    cmdline(*p)
                );
            }
            assert_hidden(
                &t,
                &secret,
                &format!("the host's tree through /proc/1/cwd ({what})"),
            );
            assert!(
                r.field("own").contains("extension.py"),
                "control: the worker's own cwd ({what}): {r:?}"
            );
            assert!(r.field("read").starts_with('E'), "({what}) {r:?}");
        }
    });
}
