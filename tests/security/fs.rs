//! Files: reads and writes outside the grants, by every path form; metadata of host files; links, renames and mounts.

use super::*;

/// A host file outside every granted folder, by every path form we know:
/// direct, relative from the workspace, /proc/self/root, /proc/self/cwd, /dev/fd.
#[test]
fn attack_fs_read_host_secret_file() {
    confined(FULL, |who| {
        let host = world_dir("host");
        let secret = token("SECRET");
        let f = host.join("secret.txt");
        owned_file(who, &f, &secret, 0o644);
        let ws = owned_dir(who, "ws");
        let rel = format!(
            "../{}/secret.txt",
            host.path().file_name().unwrap().to_string_lossy()
        );
        let code = snippet(
            r#"
p = @P@
result = {
  "open": attempt(lambda: open(p).read()),
  "os.open": attempt(lambda: os.read(os.open(p, os.O_RDONLY), 100)),
  "relative": attempt(lambda: open(os.path.join(@WS@, @REL@)).read()),
  "proc_root": attempt(lambda: open("/proc/self/root" + p).read()),
  "proc_cwd": attempt(lambda: open("/proc/self/cwd/../../../../../.." + p).read()),
  "openat2": attempt(lambda: os.read(os.open(p, os.O_RDONLY | os.O_PATH), 1)),
}
"#,
            &[("P", lit(&f)), ("WS", lit(ws.path())), ("REL", lit(&rel))],
        );
        assert_control(&plain(who, &code), &secret, "plain read of the host file");
        let (r, t) = run_once(
            Launch::new(who, &["filesystem.read"]).workspace(ws.path()),
            &code,
        );
        assert_hidden(&t, &secret, "host file");
        // EACCES from Landlock; ENOENT where the private root has no such path.
        assert!(
            ["EACCES", "ENOENT"].contains(&r.field("open").as_str()),
            "{r:?}"
        );
    });
}

/// /etc/shadow: root's first line must not come out (nobody: DAC stops it too).
#[test]
fn attack_fs_read_etc_shadow() {
    confined(FULL, |who| {
        let Ok(shadow) = std::fs::read_to_string("/etc/shadow") else {
            eprintln!("SKIP: /etc/shadow missing");
            return;
        };
        let first = shadow.lines().next().unwrap_or_default().to_string();
        let code = r#"result = {"shadow": attempt(lambda: open("/etc/shadow").read()), "passwd": attempt(lambda: open("/etc/passwd").read())}"#;
        if who == Who::Root {
            assert_control(&plain(who, code), &first, "root reads /etc/shadow");
        }
        let (r, t) = run_once(Launch::new(who, &[]), code);
        assert_hidden(&t, &first, "/etc/shadow");
        // /etc/passwd is the host's nowhere: in the private root it holds the
        // worker's own entry only, else it is not readable.
        let host_users: Vec<String> = std::fs::read_to_string("/etc/passwd")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(':').next().map(|n| format!("{n}:x:")))
            .filter(|n| {
                !n.starts_with(&format!(
                    "{}:",
                    if who == Who::Root { "root" } else { "nobody" }
                ))
            })
            .collect();
        for u in &host_users {
            assert!(
                !r.field("passwd").contains(u.as_str()),
                "host /etc/passwd read ({u}): {r:?}"
            );
        }
        assert!(
            ["EACCES", "ENOENT"].contains(&r.field("shadow").as_str()),
            "{r:?}"
        );
    });
}

/// /root: a canary file the test puts there, by name and content.
#[test]
fn attack_fs_read_root_home() {
    confined(FULL, |who| {
        let name = token("nodus-sec-canary");
        let content = token("ROOTHOME");
        let f = Path::new("/root").join(format!(".{name}"));
        std::fs::write(&f, &content).expect("write /root canary");
        let _cleanup = RemoveOnDrop(f.clone());
        let code = snippet(
            r#"result = {"list": attempt(lambda: os.listdir("/root")), "read": attempt(lambda: open(@F@).read()), "stat": attempt(lambda: os.stat(@F@).st_size)}"#,
            &[("F", lit(&f))],
        );
        if who == Who::Root {
            let base = plain(who, &code);
            assert_control(&base, &content, "root reads its home");
            assert_control(&base, &name, "root lists its home");
        }
        let (r, t) = run_once(Launch::new(who, &[]), &code);
        assert_hidden(&t, &content, "/root file content");
        let listing = r.field("list");
        assert!(!listing.contains(&name), "/root listed: {listing}");
    });
}

struct RemoveOnDrop(std::path::PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// /proc/1/environ, /proc/self/environ and the runner's /proc entries: the
/// runner's environment holds a secret that must not come out.
#[test]
fn attack_fs_proc_environ_of_runner_and_init() {
    confined(FULL, |who| {
        let secret = token("ENVSECRET");
        let mut s = Launch::new(who, &[]).env("NODUS_SEC_ENV", &secret).start();
        let runner = s.runner_pid();
        let code = snippet(
            r#"
result = {k: attempt(lambda k=k: open(k, "rb").read()[:4000]) for k in
  ["/proc/1/environ", "/proc/self/environ", "/proc/@R@/environ", "/proc/@R@/cmdline", "/proc/@R@/status", "/proc/1/root/etc/hostname"]}
result["env"] = dict(os.environ)
"#,
            &[("R", runner.to_string())],
        );
        // Control: the runner's environ, read from outside as the same user, holds the secret.
        assert_control(
            &plain(
                who,
                &snippet(
                    r#"result = open("/proc/@R@/environ","rb").read().decode(errors="replace")"#,
                    &[("R", runner.to_string())],
                ),
            ),
            &secret,
            "plain read of the runner's environ",
        );
        let r = s.exec(&code);
        let t = s.finish();
        assert_hidden(&t, &secret, "environment via /proc");
        assert_eq!(r.field("/proc/1/environ"), "EACCES", "{r:?}");
    });
}

/// The runner's memory: /proc/RUNNER/mem at its stack (where its environment
/// strings, with the secret, live), and process_vm_readv of the same range.
#[test]
fn attack_fs_read_runner_memory() {
    confined(FULL, |who| {
        let secret = token("MEMSECRET");
        let mut s = Launch::new(who, &[]).env("NODUS_SEC_MEM", &secret).start();
        s.exec("result = 1"); // the runner is running (setpriv has exec'd it)
        let runner = s.runner_pid();
        let maps = std::fs::read_to_string(format!("/proc/{runner}/maps")).unwrap();
        let stack = maps
            .lines()
            .find(|l| l.ends_with("[stack]"))
            .expect("stack");
        let (lo, hi) = stack
            .split_whitespace()
            .next()
            .unwrap()
            .split_once('-')
            .unwrap();
        let (lo, hi) = (
            u64::from_str_radix(lo, 16).unwrap(),
            u64::from_str_radix(hi, 16).unwrap(),
        );
        let start = hi.saturating_sub(128 * 1024).max(lo);
        let code = snippet(
            r#"
import ctypes
pid, start, n = @PID@, @START@, @N@
def find(data):
    i = data.find(b"NODUS_SEC_MEM=")
    return data[i:i+80].decode(errors="replace") if i >= 0 else "read, not found"
def mem():
    with open(f"/proc/{pid}/mem", "rb") as f:
        f.seek(start)
        return find(f.read(n))
def vm():
    buf = ctypes.create_string_buffer(n)
    local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), n)
    remote = (ctypes.c_void_p * 2)(start, n)
    r = sys_call(310, pid, ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)
    return find(buf.raw[:r]) if r > 0 else ename(r)
result = {"maps": attempt(lambda: open(f"/proc/{pid}/maps").read()[:200]), "mem": attempt(mem), "process_vm_readv": attempt(vm)}
"#,
            &[
                ("PID", runner.to_string()),
                ("START", start.to_string()),
                ("N", (hi - start).to_string()),
            ],
        );
        assert_control(
            &plain(who, &code),
            &secret,
            "plain read of the runner's memory",
        );
        let r = s.exec(&code);
        let t = s.finish();
        assert_hidden(&t, &secret, "runner memory");
        assert_eq!(r.field("process_vm_readv"), "ok: 'EPERM'", "{r:?}");
    });
}

/// Writing outside the scratch folder: /tmp itself, a 0777 folder, /dev/shm, /var/tmp.
#[test]
fn attack_fs_write_tmp_outside_scratch() {
    confined(FULL, |who| {
        let open = open_dir("open");
        let name = token("nodus-sec-canary");
        let targets = [
            std::env::temp_dir().join(&name),
            open.join(&name),
            Path::new("/dev/shm").join(&name),
            Path::new("/var/tmp").join(&name),
        ];
        let _c: Vec<_> = targets.iter().map(|p| RemoveOnDrop(p.clone())).collect();
        let list = format!(
            "[{}]",
            targets.iter().map(lit).collect::<Vec<_>>().join(",")
        );
        let code = snippet(
            r#"
result = {}
for p in @L@:
    result[p] = attempt(lambda p=p: open(p, "w").write("canary"))
    result[p + "/mkdir"] = attempt(lambda p=p: os.mkdir(p + ".d"))
result["scratch"] = attempt(lambda: open(os.path.join(os.environ["TMPDIR"], "ok"), "w").write("fine"))
"#,
            &[("L", list)],
        );
        // Control: outside, the same user can create them.
        let base = plain(who, &code);
        assert!(targets[1].exists(), "control: plain write failed: {base}");
        for p in &targets {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_dir(p.with_extension("d"));
            let _ = std::fs::remove_dir(format!("{}.d", p.display()));
        }
        let (r, _t) = run_once(Launch::new(who, &[]), &code);
        for p in &targets {
            assert!(!p.exists(), "canary {} written: {r:?}", p.display());
            assert!(
                !Path::new(&format!("{}.d", p.display())).exists(),
                "dir created next to {}",
                p.display()
            );
        }
        assert_eq!(
            r.field("scratch"),
            "ok: 4",
            "the scratch folder must stay writable: {r:?}"
        );
    });
}

/// The extension's own folder is read-only to it (even when its mode is 0777).
#[test]
fn attack_fs_write_extension_folder() {
    confined(FULL, |who| {
        let ext = sec_ext(&[]);
        chmod(ext.path(), 0o777);
        chmod(&ext.join("extension.py"), 0o666);
        let before = std::fs::read_to_string(ext.join("extension.py")).unwrap();
        let canary = ext.join("canary.py");
        let code = snippet(
            r#"
d = @D@
result = {
  "append": attempt(lambda: open(os.path.join(d, "extension.py"), "a").write("\n" + "pwned")),
  "create": attempt(lambda: open(os.path.join(d, "canary.py"), "w").write("x")),
  "unlink": attempt(lambda: os.unlink(os.path.join(d, "nodus-extension.json"))),
  "rename": attempt(lambda: os.rename(os.path.join(d, "nodus-extension.json"), os.path.join(d, "m.json"))),
}
"#,
            &[("D", lit(ext.path()))],
        );
        let probe = snippet(
            r#"result = attempt(lambda: open(os.path.join(@D@, "canary.py"), "w").write("x"))"#,
            &[("D", lit(ext.path()))],
        );
        plain(who, &probe);
        assert!(
            canary.exists(),
            "control: plain create in the extension folder failed"
        );
        std::fs::remove_file(&canary).unwrap();
        let mut l = Launch::new(who, &[]);
        l.ext_dir = Some(ext.path().to_path_buf());
        let (r, _t) = run_once(l, &code);
        assert!(!canary.exists(), "canary created: {r:?}");
        assert_eq!(
            std::fs::read_to_string(ext.join("extension.py")).unwrap(),
            before,
            "extension.py changed: {r:?}"
        );
        assert!(
            ext.join("nodus-extension.json").exists(),
            "manifest removed: {r:?}"
        );
    });
}

/// filesystem.read only: the workspace (mode 0777) cannot be written.
#[test]
fn attack_fs_write_readonly_workspace() {
    confined(FULL, |who| {
        let ws = open_dir("ws");
        std::fs::write(ws.join("data.txt"), "original").unwrap();
        chmod(&ws.join("data.txt"), 0o666);
        let code = snippet(
            r#"
w = @W@
result = {
  "read": attempt(lambda: open(os.path.join(w, "data.txt")).read()),
  "create": attempt(lambda: open(os.path.join(w, "canary"), "w").write("x")),
  "modify": attempt(lambda: open(os.path.join(w, "data.txt"), "w").write("changed")),
  "truncate": attempt(lambda: os.truncate(os.path.join(w, "data.txt"), 0)),
  "unlink": attempt(lambda: os.unlink(os.path.join(w, "data.txt"))),
  "mkdir": attempt(lambda: os.mkdir(os.path.join(w, "sub"))),
  "symlink": attempt(lambda: os.symlink("/etc", os.path.join(w, "link"))),
}
"#,
            &[("W", lit(ws.path()))],
        );
        let (r, _t) = run_once(
            Launch::new(who, &["filesystem.read"]).workspace(ws.path()),
            &code,
        );
        assert_eq!(
            r.field("read"),
            "ok: 'original'",
            "the workspace must be readable: {r:?}"
        );
        assert_eq!(
            std::fs::read_to_string(ws.join("data.txt")).unwrap(),
            "original",
            "{r:?}"
        );
        for n in ["canary", "sub", "link"] {
            assert!(
                !ws.join(n).exists() && ws.join(n).symlink_metadata().is_err(),
                "{n} created: {r:?}"
            );
        }
        // Control: the same worker with filesystem.write does create the canary.
        let (r2, _) = run_once(
            Launch::new(who, &["filesystem.write"]).workspace(ws.path()),
            &code,
        );
        assert!(
            ws.join("canary").exists(),
            "control: filesystem.write could not create: {r2:?}"
        );
    });
}

/// A symlink planted in the workspace to a host file: following it is still
/// checked against the real path, for reading and for writing.
#[test]
fn attack_fs_symlink_out_of_workspace() {
    confined(FULL, |who| {
        let host = world_dir("host");
        let secret = token("LINKSECRET");
        let f = host.join("secret.txt");
        owned_file(who, &f, &secret, 0o644);
        let ws = owned_dir(who, "ws");
        let code = snippet(
            r#"
w, p = @W@, @P@
l = os.path.join(w, "link")
result = {
  "symlink": attempt(lambda: os.symlink(p, l)),
  "read": attempt(lambda: open(l).read()),
  "write": attempt(lambda: open(l, "w").write("overwritten")),
  "dirlink": attempt(lambda: os.symlink(os.path.dirname(p), os.path.join(w, "dirlink"))),
  "read_via_dir": attempt(lambda: open(os.path.join(w, "dirlink", "secret.txt")).read()),
}
"#,
            &[("W", lit(ws.path())), ("P", lit(&f))],
        );
        let (r, t) = run_once(
            Launch::new(who, &["filesystem.write"]).workspace(ws.path()),
            &code,
        );
        assert_hidden(&t, &secret, "symlink read");
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            secret,
            "host file written through a symlink: {r:?}"
        );
        // Control: the link is really there, and outside the sandbox it leads to the secret.
        assert!(
            ws.join("link").symlink_metadata().is_ok(),
            "the link was not even created: {r:?}"
        );
        let base = plain(
            who,
            &snippet("result = open(@L@).read()", &[("L", lit(ws.join("link")))]),
        );
        assert_control(&base, &secret, "the planted link leads to the secret");
    });
}

/// link(2) of a host file into the workspace: the file would then be readable there.
#[test]
fn attack_fs_hardlink_into_workspace() {
    confined(FULL, |who| {
        let host = open_dir("host");
        let secret = token("HLSECRET");
        let f = host.join("secret.txt");
        owned_file(who, &f, &secret, 0o600);
        let ws = owned_dir(who, "ws");
        let code = snippet(
            r#"
result = {"link": attempt(lambda: os.link(@P@, @D@)), "read": attempt(lambda: open(@D@).read())}
"#,
            &[("P", lit(&f)), ("D", lit(ws.join("stolen")))],
        );
        let base_ws = owned_dir(who, "ws-base");
        let base = plain(
            who,
            &snippet(
                r#"os.link(@P@, @D@); result = open(@D@).read()"#,
                &[("P", lit(&f)), ("D", lit(base_ws.join("stolen")))],
            ),
        );
        assert_control(&base, &secret, "plain hard link into a folder");
        let (r, t) = run_once(
            Launch::new(who, &["filesystem.write"]).workspace(ws.path()),
            &code,
        );
        assert!(
            !ws.join("stolen").exists(),
            "host file linked into the workspace: {r:?}"
        );
        assert_hidden(&t, &secret, "hard link");
        assert!(
            ["EXDEV", "EACCES", "ENOENT"].contains(&r.field("link").as_str()),
            "{r:?}"
        );
    });
}

/// link(2) of a workspace file out to a host folder (0777).
#[test]
fn attack_fs_hardlink_out_of_workspace() {
    confined(FULL, |who| {
        let out = open_dir("out");
        let ws = owned_dir(who, "ws");
        owned_file(who, &ws.join("f"), "payload", 0o644);
        let code = snippet(
            r#"result = attempt(lambda: os.link(@S@, @D@))"#,
            &[("S", lit(ws.join("f"))), ("D", lit(out.join("f")))],
        );
        plain(who, &code);
        assert!(out.join("f").exists(), "control: plain link out failed");
        std::fs::remove_file(out.join("f")).unwrap();
        let (r, _) = run_once(
            Launch::new(who, &["filesystem.write"]).workspace(ws.path()),
            &code,
        );
        assert!(!out.join("f").exists(), "workspace file linked out: {r:?}");
    });
}

/// rename(2)/renameat2 across the border, both ways, and RENAME_EXCHANGE.
#[test]
fn attack_fs_rename_across_workspace_border() {
    confined(FULL, |who| {
        let out = open_dir("out");
        let ws = owned_dir(who, "ws");
        let secret = token("RENSECRET");
        owned_file(who, &ws.join("inside"), "inside", 0o644);
        owned_file(who, &out.join("outside"), &secret, 0o644);
        let code = snippet(
            r#"
import ctypes
w, o = @W@, @O@
def exchange():
    r = sys_call(316, -100, os.path.join(w, "inside").encode(), -100, os.path.join(o, "outside").encode(), 2)
    return ename(r)
result = {
  "out": attempt(lambda: os.rename(os.path.join(w, "inside"), os.path.join(o, "moved_out"))),
  "in": attempt(lambda: os.rename(os.path.join(o, "outside"), os.path.join(w, "moved_in"))),
  "exchange": exchange(),
  "read_in": attempt(lambda: open(os.path.join(w, "moved_in")).read()),
}
"#,
            &[("W", lit(ws.path())), ("O", lit(out.path()))],
        );
        let (r, t) = run_once(
            Launch::new(who, &["filesystem.write"]).workspace(ws.path()),
            &code,
        );
        assert_eq!(
            std::fs::read_to_string(ws.join("inside")).ok().as_deref(),
            Some("inside"),
            "{r:?}"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("outside")).ok().as_deref(),
            Some(secret.as_str()),
            "{r:?}"
        );
        assert!(
            !out.join("moved_out").exists() && !ws.join("moved_in").exists(),
            "{r:?}"
        );
        assert_hidden(&t, &secret, "rename in");
        // Control: outside the sandbox the same renames happen.
        plain(who, &code);
        assert!(
            out.join("moved_out").exists() && ws.join("moved_in").exists(),
            "control: plain renames failed"
        );
    });
}

/// Another worker's scratch folder: its files, by the path that worker reports.
#[test]
fn attack_fs_other_workers_scratch() {
    confined(FULL, |who| {
        let secret = token("SCRATCHSECRET");
        let mut a = Launch::new(who, &[]).start();
        let ra = a.exec(&snippet(
            r#"p = os.path.join(os.environ["TMPDIR"], "s.txt"); open(p, "w").write(@S@); result = p"#,
            &[("S", lit(&secret))],
        ));
        let inside = ra.value().as_str().unwrap().to_string();
        // Its host path (in a private root, TMPDIR is /tmp inside).
        let scratch = a.scratch().expect("scratch of worker a");
        let path = scratch
            .join(Path::new(&inside).file_name().unwrap())
            .display()
            .to_string();
        // Control: the file really is there, on the host, with the secret.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), secret);
        let code = snippet(
            r#"
p = @P@
d = os.path.dirname(p)
result = {"read": attempt(lambda: open(p).read()), "list": attempt(lambda: os.listdir(d)),
          "write": attempt(lambda: open(os.path.join(d, "canary"), "w").write("x")),
          "tmp": attempt(lambda: os.listdir(os.path.dirname(d)))}
"#,
            &[("P", lit(&path))],
        );
        let (r, t) = run_once(Launch::new(who, &[]), &code);
        assert_hidden(&t, &secret, "other worker's scratch");
        let dir = Path::new(&path).parent().unwrap().to_path_buf();
        assert!(!dir.join("canary").exists(), "{r:?}");
        let _ = a.finish();
        assert!(
            wait_removed(&dir, Duration::from_secs(5)),
            "scratch {} not removed",
            dir.display()
        );
    });
}

/// A worker takes its own scratch subfolders away from its owner (mode 000,
/// a link to a host folder beside them, a chain of folders too deep for any
/// path): the data must still go when the worker does, and the cleanup must
/// not touch what the link points to.
#[test]
fn attack_fs_scratch_made_unremovable() {
    confined(FULL, |who| {
        let host = world_dir("target");
        let outside = host.join("keep");
        owned_file(who, &outside, "host file", 0o600);
        let code = snippet(
            r#"
d = os.environ["TMPDIR"]
os.makedirs(os.path.join(d, "x", "y", "z"))
open(os.path.join(d, "x", "y", "z", "data"), "w").write("left behind")
os.symlink(@H@, os.path.join(d, "x", "link"))
os.chmod(os.path.join(d, "x", "y"), 0)
os.chmod(os.path.join(d, "x"), 0)
# A chain deeper than any path can name, its last folder closed as well.
os.chdir(d)
for _ in range(2100):
    os.mkdir("q"); os.chdir("q")
open("data", "w").write("deep")
os.chdir(".."); os.chmod("q", 0)
os.chdir(d)
result = d
"#,
            &[("H", lit(host.path()))],
        );
        let mut s = Launch::new(who, &[]).start();
        let r = s.exec(&code);
        let dir = s.scratch().expect("scratch");
        let t = s.finish();
        assert!(r.value().as_str().is_some(), "{r:?} {}", t.all());
        assert!(
            wait_removed(&dir, Duration::from_secs(5)),
            "scratch {} left behind",
            dir.display()
        );
        let mode = std::fs::metadata(host.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o755,
            "the cleanup changed a host folder through the link"
        );
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "host file");
    });
}

/// /proc/PID of a host process: its command line holds a secret.
#[test]
fn attack_fs_proc_of_host_process() {
    confined(FULL, |who| {
        let secret = token("ARGVSECRET");
        let v = Victim::python(
            who,
            &format!("import time; print('up', flush=True); time.sleep(60)  # {secret}"),
        );
        let code = snippet(
            r#"result = {k: attempt(lambda k=k: open("/proc/@V@/" + k, "rb").read()[:2000]) for k in ["cmdline", "environ", "status", "maps"]}"#,
            &[("V", v.pid.to_string())],
        );
        assert_control(
            &plain(who, &code),
            &secret,
            "plain read of /proc/PID/cmdline",
        );
        let (r, t) = run_once(Launch::new(who, &[]), &code);
        assert_hidden(&t, &secret, "/proc of a host process");
        // ENOENT in the private /proc (host processes do not exist there).
        assert!(
            ["EACCES", "ENOENT"].contains(&r.field("cmdline").as_str()),
            "{r:?}"
        );
    });
}

/// truncate(2) of a host file by path (Landlock TRUNCATE).
#[test]
fn attack_fs_truncate_host_file() {
    confined(FULL, |who| {
        let host = world_dir("host");
        let f = host.join("data");
        owned_file(who, &f, "0123456789", 0o666);
        let code = snippet(
            r#"result = attempt(lambda: os.truncate(@F@, 0))"#,
            &[("F", lit(&f))],
        );
        let (r, _) = run_once(Launch::new(who, &[]), &code);
        assert_eq!(std::fs::metadata(&f).unwrap().len(), 10, "truncated: {r:?}");
        plain(who, &code);
        assert_eq!(
            std::fs::metadata(&f).unwrap().len(),
            0,
            "control: plain truncate failed"
        );
    });
}

/// mknod/mkfifo anywhere (seccomp), here in the worker's own workspace and
/// outside; and the device node that needs no mknod: `renameat2` with
/// `RENAME_WHITEOUT` leaves a 0:0 character device where the file was
/// (unprivileged since Linux 5.8, and Landlock's rename hook does not ask for
/// `MAKE_CHAR`). Control: outside the sandbox both kinds are made.
#[test]
fn attack_fs_mknod_and_fifo() {
    confined(FULL, |who| {
        let ws = owned_dir(who, "ws");
        let code = snippet(
            r#"
w = @W@
def whiteout():
    open(os.path.join(w, "moved"), "w").write("x")
    return ename(sys_call(316, -100, os.path.join(w, "moved").encode(), -100,
                          os.path.join(w, "moved-to").encode(), 4))   # RENAME_WHITEOUT
result = {"fifo": attempt(lambda: os.mkfifo(os.path.join(w, "fifo"))),
          "chr": attempt(lambda: os.mknod(os.path.join(w, "null"), 0o20666, os.makedev(1, 3))),
          "sock": attempt(lambda: os.mknod(os.path.join(w, "s"), 0o140666)),
          "whiteout": whiteout()}
"#,
            &[("W", lit(ws.path()))],
        );
        let device = |p: &Path| {
            use std::os::unix::fs::FileTypeExt;
            p.symlink_metadata()
                .is_ok_and(|m| m.file_type().is_char_device())
        };
        let (r, _) = run_once(
            Launch::new(who, &["filesystem.write"]).workspace(ws.path()),
            &code,
        );
        for n in ["fifo", "null", "s"] {
            assert!(ws.join(n).symlink_metadata().is_err(), "{n} created: {r:?}");
        }
        assert_eq!(r.field("fifo"), "EPERM", "{r:?}");
        assert!(
            !device(&ws.join("moved")),
            "a whiteout device was left in the workspace: {r:?}"
        );
        assert_eq!(r.field("whiteout"), "EPERM", "{r:?}");
        std::fs::remove_file(ws.join("moved")).unwrap();
        let base = plain(who, &code);
        assert!(ws.join("fifo").exists(), "control: plain mkfifo failed");
        assert!(
            device(&ws.join("moved")),
            "control: plain RENAME_WHITEOUT left no device: {base}"
        );
    });
}

/// inotify on a host folder: the names of files created there leak.
#[test]
fn attack_fs_inotify_host_folder() {
    confined(FULL, |who| {
        let watched = world_dir("watched");
        let name = token("INOTIFYNAME");
        let code = snippet(
            r#"
import select, time
fd = _libc.inotify_init1(0)
wd = _libc.inotify_add_watch(fd, @D@.encode(), 0x100 | 0x8 | 0x2) if fd >= 0 else -1
result = {"init": ename(fd if fd >= 0 else -ctypes.get_errno()), "watch": ename(wd if wd >= 0 else -ctypes.get_errno()), "names": ""}
print("WATCHING", file=sys.stderr, flush=True)
if wd >= 0:
    end = time.time() + 3
    while time.time() < end:
        if select.select([fd], [], [], 0.1)[0]:
            result["names"] += os.read(fd, 4096).decode(errors="replace")
            break
"#,
            &[("D", lit(watched.path()))],
        );
        let run = |launch: Option<Launch>| {
            let dir = watched.path().to_path_buf();
            let n = name.clone();
            // Created and removed again and again while the snippet watches
            // (however long its interpreter takes to start).
            let toucher = std::thread::spawn(move || {
                let end = std::time::Instant::now() + Duration::from_millis(3500);
                while std::time::Instant::now() < end {
                    std::thread::sleep(ms(150));
                    let _ = std::fs::write(dir.join(&n), "x");
                    std::thread::sleep(ms(50));
                    let _ = std::fs::remove_file(dir.join(&n));
                }
            });
            let out = match launch {
                Some(l) => {
                    let (r, t) = run_once(l, &code);
                    format!("{r:?}{}", t.all())
                }
                None => plain(who, &code).to_string(),
            };
            toucher.join().unwrap();
            let _ = std::fs::remove_file(watched.join(&name));
            out
        };
        assert!(
            run(None).contains(&name),
            "control: plain inotify saw nothing"
        );
        let seen = run(Some(Launch::new(who, &[])));
        assert!(
            !seen.contains(&name),
            "a file name in a host folder leaked via inotify: {seen}"
        );
    });
}

/// Extended attributes of a host file, by path: Landlock does not check
/// them, and their values are contents (an API key in `user.*`).
#[test]
fn attack_fs_xattr_values_of_host_file() {
    confined(FULL, |who| {
        let host = world_dir("xattr");
        let secret = token("XATTR");
        let f = host.join("f");
        owned_file(who, &f, "not the secret", 0o644);
        if let Err(e) = xattr_set(&f, "user.apikey", &secret) {
            eprintln!("SKIP: this filesystem takes no user xattrs ({e})");
            return;
        }
        // Control: a file the worker may open keeps its xattrs readable by fd.
        let ws = owned_dir(who, "ws");
        let mine = ws.join("mine");
        owned_file(who, &mine, "data", 0o644);
        xattr_set(&mine, "user.tag", "fine").unwrap();
        let code = snippet(
            r#"
p = @P@
fd = os.open(@MINE@, os.O_RDONLY)
result = {
  "by_fd": attempt(lambda: os.getxattr(fd, "user.tag").decode()),
  "get": attempt(lambda: os.getxattr(p, "user.apikey").decode()),
  "lget": attempt(lambda: os.getxattr(p, "user.apikey", follow_symlinks=False).decode()),
  "list": attempt(lambda: os.listxattr(p)),
  "llist": attempt(lambda: os.listxattr(p, follow_symlinks=False)),
}
"#,
            &[("P", lit(&f)), ("MINE", lit(&mine))],
        );
        assert_control(
            &plain(who, &code),
            &secret,
            "plain getxattr of the host file",
        );
        let (r, t) = run_once(
            Launch::new(who, &["filesystem.read"]).workspace(ws.path()),
            &code,
        );
        assert_eq!(r.field("by_fd"), "ok: 'fine'", "{r:?}");
        assert_hidden(&t, &secret, "xattr value of a host file");
        assert!(
            !t.contains("user.apikey"),
            "xattr names listed: {}",
            t.all()
        );
        // EOPNOTSUPP, which Python names ENOTSUP (the same number on Linux).
        for k in ["get", "lget", "list", "llist"] {
            assert_eq!(r.field(k), "ENOTSUP", "{k}: {r:?}");
        }
    });
}

/// Sets an extended attribute as the test (root).
fn xattr_set(path: &Path, name: &str, value: &str) -> std::io::Result<()> {
    let out = std::process::Command::new(common::python())
        .args([
            "-c",
            "import os, sys; os.setxattr(sys.argv[1], sys.argv[2], sys.argv[3].encode())",
        ])
        .arg(path)
        .args([name, value])
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}
