//! The security suite: real workers started through the real `ext-runner`,
//! attacked from inside with short Python snippets and judged from outside
//! (files on the host, listeners the test opened, victims' /proc entries, the
//! runner's whole transcript). Every attack and control runs as root and as
//! uid 65534 (`setpriv`, system python).
//!
//! Each attack first proves that its check can fail: the same snippet run
//! outside the sandbox (`plain`), or the same worker with the capability
//! granted, must trip it. Tests named `gap_*` document a real gap: they are
//! `#[ignore]`d with the reason, and pass once the gap is closed.
//!
//! Needs root (for both identities), x86_64, Landlock ABI >= 6; a missing
//! kernel feature prints `SKIP: <feature> missing`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::sandbox::*;
use serde_json::json;

/// Asserts that a secret appears nowhere in what the runner wrote.
#[track_caller]
fn assert_hidden(t: &Transcript, secret: &str, what: &str) {
    assert!(
        !t.contains(secret),
        "{what}: the secret reached the runner's output\n{}",
        t.all()
    );
}

/// Asserts a plain (unsandboxed) run saw `needle`: the check can fail.
#[track_caller]
fn assert_control(v: &serde_json::Value, needle: &str, what: &str) {
    assert!(
        v.to_string().contains(needle),
        "control failed ({what}): outside the sandbox the attack should work, got {v}"
    );
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ====================================================================== filesystem

/// A host file outside every granted folder, by every path form we know:
/// direct, relative from the workspace, /proc/self/root, /proc/self/cwd, /dev/fd.
#[test]
fn attack_fs_read_host_secret_file() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
        assert_eq!(r.field("open"), "EACCES", "{r:?}");
    });
}

/// /etc/shadow: root's first line must not come out (nobody: DAC stops it too).
#[test]
fn attack_fs_read_etc_shadow() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
        assert!(!t.contains("root:x:0:0"), "/etc/passwd read: {}", t.all());
        assert_eq!(r.field("shadow"), "EACCES");
    });
}

/// /root: a canary file the test puts there, by name and content.
#[test]
fn attack_fs_read_root_home() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
            ["EXDEV", "EACCES"].contains(&r.field("link").as_str()),
            "{r:?}"
        );
    });
}

/// link(2) of a workspace file out to a host folder (0777).
#[test]
fn attack_fs_hardlink_out_of_workspace() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let secret = token("SCRATCHSECRET");
        let mut a = Launch::new(who, &[]).start();
        let ra = a.exec(&snippet(
            r#"p = os.path.join(os.environ["TMPDIR"], "s.txt"); open(p, "w").write(@S@); result = p"#,
            &[("S", lit(&secret))],
        ));
        let path = ra.value().as_str().unwrap().to_string();
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
        let (r, t) = run_once(Launch::new(who, &[]), &code);
        let dir = std::path::PathBuf::from(
            r.value()
                .as_str()
                .unwrap_or_else(|| panic!("{r:?} {}", t.all())),
        );
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
        assert_eq!(r.field("cmdline"), "EACCES", "{r:?}");
    });
}

/// truncate(2) of a host file by path (Landlock TRUNCATE).
#[test]
fn attack_fs_truncate_host_file() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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

/// mknod/mkfifo anywhere (seccomp), here in the worker's own workspace and outside.
#[test]
fn attack_fs_mknod_and_fifo() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let ws = owned_dir(who, "ws");
        let code = snippet(
            r#"
w = @W@
result = {"fifo": attempt(lambda: os.mkfifo(os.path.join(w, "fifo"))),
          "chr": attempt(lambda: os.mknod(os.path.join(w, "null"), 0o20666, os.makedev(1, 3))),
          "sock": attempt(lambda: os.mknod(os.path.join(w, "s"), 0o140666))}
"#,
            &[("W", lit(ws.path()))],
        );
        let (r, _) = run_once(
            Launch::new(who, &["filesystem.write"]).workspace(ws.path()),
            &code,
        );
        for n in ["fifo", "null", "s"] {
            assert!(ws.join(n).symlink_metadata().is_err(), "{n} created: {r:?}");
        }
        assert_eq!(r.field("fifo"), "EPERM", "{r:?}");
        plain(who, &code);
        assert!(ws.join("fifo").exists(), "control: plain mkfifo failed");
    });
}

/// inotify on a host folder: the names of files created there leak.
#[test]
fn attack_fs_inotify_host_folder() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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

/// GAP: chmod(2) of a host file by path. Landlock (ABI <= 7) cannot restrict
/// chmod/chown/utime, and seccomp allows them; a root worker runs as uid 0 and
/// owns every root file.
#[test]
fn fs_chmod_host_file() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let host = world_dir("host");
        let f = host.join("secret");
        owned_file(who, &f, "secret", 0o600);
        let code = snippet(
            r#"result = attempt(lambda: os.chmod(@F@, 0o4777))"#,
            &[("F", lit(&f))],
        );
        let (r, _) = run_once(Launch::new(who, &[]), &code);
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            mode, 0o600,
            "host file mode changed to {mode:o} by the worker: {r:?}"
        );
    });
}

/// GAP: utime(2) of a host file by path (same reason as chmod).
#[test]
fn fs_utime_host_file() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let host = world_dir("host");
        let f = host.join("data");
        owned_file(who, &f, "x", 0o644);
        let before = std::fs::metadata(&f).unwrap().modified().unwrap();
        let code = snippet(
            r#"result = attempt(lambda: os.utime(@F@, (0, 0)))"#,
            &[("F", lit(&f))],
        );
        let (r, _) = run_once(Launch::new(who, &[]), &code);
        assert_eq!(
            std::fs::metadata(&f).unwrap().modified().unwrap(),
            before,
            "mtime changed: {r:?}"
        );
    });
}

// ====================================================================== processes

/// ptrace of a victim `sleep` the test started: it must stay alive and untraced.
#[test]
fn attack_proc_ptrace_victim() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
        assert_eq!(r.field("setsid"), "EPERM", "{r:?}");
        assert_eq!(r.field("setpgid"), "EPERM", "{r:?}");
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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
        let scratch = scratch_of(&s);
        let cgroup = s.pids_cgroup();
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
        if let Some(c) = cgroup {
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
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let mut s = Launch::new(who, &["subprocess.run"]).start();
        s.exec(r#"open(os.path.join(os.environ["TMPDIR"], "work"), "w").write("x"); result = 1"#);
        let scratch = scratch_of(&s).expect("scratch");
        let cgroup = s.pids_cgroup();
        s.kill_runner();
        // A killed runner cannot clean up; the next runner of this user sweeps
        // what runners that are gone left behind.
        let mut next = Launch::new(who, &["subprocess.run"]).start();
        next.exec("result = 1");
        drop(next);
        let removed = wait_removed(&scratch, Duration::from_secs(3));
        let cg_removed = cgroup
            .as_ref()
            .is_none_or(|c| wait_removed(c, Duration::from_secs(1)));
        let _ = std::fs::remove_dir_all(&scratch);
        if let Some(c) = &cgroup {
            let _ = std::fs::remove_dir(c);
        }
        assert!(
            removed,
            "scratch {} left after the runner was killed",
            scratch.display()
        );
        assert!(
            cg_removed,
            "pids cgroup {cgroup:?} left after the runner was killed"
        );
    });
}

/// The worker's scratch folder, found from outside.
fn scratch_of(s: &Session) -> Option<std::path::PathBuf> {
    s.scratch()
}

/// GAP: the worker clears its parent-death signal (prctl is allowed whole),
/// then outlives a SIGKILLed runner. With a pid namespace whose process 1 is
/// the worker, nothing else kills it; without namespaces (no user namespaces
/// for the user, or `layers.namespaces: false`) the worker's own
/// PDEATHSIG is all there is, with any layout of the pid namespace.
#[test]
fn proc_clear_pdeathsig_survives_runner() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
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

// ====================================================================== network and local IPC

/// TCP to a loopback listener without network.outbound (empty net namespace,
/// socket() denied); control: with network.outbound it connects.
#[test]
fn attack_net_tcp_without_capability() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let trap = Trap::tcp();
        let code = snippet(
            r#"
result = {"tcp": raw_connect(2, 1, ("127.0.0.1", @P@)), "inet6": ename(sys_call(41, 10, 1, 0)),
          "packet": ename(sys_call(41, 17, 3, 0))}
"#,
            &[("P", trap.port.to_string())],
        );
        let (r, _) = run_once(Launch::new(who, &[]), &code);
        std::thread::sleep(ms(200));
        assert_eq!(trap.hits(), 0, "connection reached the listener: {r:?}");
        assert_eq!(r.field("tcp"), "socket:EPERM", "{r:?}");
        assert_eq!(r.field("inet6"), "EPERM", "{r:?}");
        let (r2, _) = run_once(Launch::new(who, &["network.outbound"]), &code);
        assert!(
            trap.hits_after(ms(1000)) >= 1,
            "control: network.outbound could not connect: {r2:?}"
        );
    });
}

/// UDP to a loopback socket without network.outbound; control: with it, it arrives.
#[test]
fn attack_net_udp_without_capability() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let trap = Trap::udp();
        let code = snippet(
            r#"
fd = sys_call(41, 2, 2, 0)
result = {"udp": raw_sendto(fd, 2, ("127.0.0.1", @P@)) if fd >= 0 else "socket:" + ename(fd)}
"#,
            &[("P", trap.port.to_string())],
        );
        let (r, _) = run_once(Launch::new(who, &[]), &code);
        std::thread::sleep(ms(200));
        assert_eq!(trap.hits(), 0, "datagram arrived: {r:?}");
        let (r2, _) = run_once(Launch::new(who, &["network.outbound"]), &code);
        assert!(
            trap.hits_after(ms(1000)) >= 1,
            "control: UDP with network.outbound: {r2:?}"
        );
    });
}

/// A unix stream socket by path (think docker.sock), with and without network.outbound.
#[test]
fn attack_net_unix_socket_by_path() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let d = world_dir("sock");
        let trap = Trap::unix_stream(&d.join("docker.sock"));
        let code = snippet(
            r#"
result = {"connect": raw_connect(1, 1, @S@, b"GET /")}
"#,
            &[("S", lit(&trap.name))],
        );
        assert_control(
            &plain(who, &code),
            "connected",
            "plain connect to the socket",
        );
        assert!(trap.hits_after(ms(1000)) >= 1);
        let before = trap.hits();
        for caps in [&[][..], &["network.outbound"][..]] {
            let (r, _) = run_once(Launch::new(who, caps), &code);
            std::thread::sleep(ms(150));
            assert_eq!(
                trap.hits(),
                before,
                "{caps:?}: connected to the unix socket: {r:?}"
            );
            assert_eq!(r.field("connect"), "socket:EPERM", "{r:?}");
        }
    });
}

/// GAP: a unix *datagram* socket by path is reachable through socketpair():
/// seccomp only filters socket(), and a datagram socket from socketpair may
/// sendto() any path (syslog's /dev/log, journald, notify sockets...).
#[test]
fn net_unix_dgram_by_path_via_socketpair() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let d = world_dir("sock");
        let trap = Trap::unix_dgram(&d.join("log.sock"));
        let code = snippet(
            r#"
import socket
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
result = attempt(lambda: a.sendto(b"injected", @S@))
"#,
            &[("S", lit(&trap.name))],
        );
        for caps in [&[][..], &["network.outbound"][..]] {
            let (r, _) = run_once(Launch::new(who, caps), &code);
            std::thread::sleep(ms(200));
            assert_eq!(
                trap.hits(),
                0,
                "{caps:?}: a datagram reached the host socket: {r:?}"
            );
        }
    });
}

/// Abstract unix sockets (stream and datagram), with and without network.outbound:
/// the net namespace hides them, and Landlock's abstract-socket scope stops
/// them when there is no net namespace.
#[test]
fn attack_net_abstract_unix_socket() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let sname = token("nodus-sec-abs");
        let dname = token("nodus-sec-absd");
        let st = Trap::abstract_stream(&sname);
        let dt = Trap::abstract_dgram(&dname);
        let code = snippet(
            r#"
import socket
def stream():
    return raw_connect(1, 1, "\0" + @S@)
def pair_dgram():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM); return a.sendto(b"x", "\0" + @D@)
result = {"stream": attempt(stream), "dgram": attempt(pair_dgram)}
"#,
            &[("S", lit(&sname)), ("D", lit(&dname))],
        );
        let base = plain(who, &code);
        assert!(
            st.hits_after(ms(1000)) >= 1 && dt.hits_after(ms(1000)) >= 1,
            "control: plain abstract connect: {base}"
        );
        let (s0, d0) = (st.hits(), dt.hits());
        for caps in [&[][..], &["network.outbound"][..]] {
            let (r, _) = run_once(Launch::new(who, caps), &code);
            std::thread::sleep(ms(150));
            assert_eq!(
                (st.hits(), dt.hits()),
                (s0, d0),
                "{caps:?}: abstract socket reached: {r:?}"
            );
        }
    });
}

/// netlink: without network.outbound socket() is denied; with it, NETLINK_ROUTE
/// may read but not change the host's addresses (no CAP_NET_ADMIN).
#[test]
fn attack_net_netlink_route_change() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        // One address per identity: both run at once.
        let last = if who == Who::Root { 99 } else { 98 };
        let code = &snippet(
            r#"
import socket, struct
def add_addr():
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    s.bind((0, 0))
    ifa = struct.pack("=BBBBI", 2, 8, 0, 254, 1)   # AF_INET /8, scope host, lo
    ip = bytes([127, 0, 0, @LAST@])
    attrs = struct.pack("=HH", 8, 2) + ip + struct.pack("=HH", 8, 1) + ip
    body = ifa + attrs
    hdr = struct.pack("=IHHII", 16 + len(body), 20, 1 | 4 | 0x400 | 0x200, 1, 0)
    s.send(hdr + body)
    ack = s.recv(4096)
    return ename(struct.unpack("=i", ack[16:20])[0])
result = {"newaddr": attempt(add_addr)}
"#,
            &[("LAST", last.to_string())],
        );
        let addr = format!("127.0.0.{last}");
        let has_addr = || {
            std::process::Command::new("ip")
                .args(["-4", "addr", "show", "dev", "lo"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{addr}/")))
                .unwrap_or(false)
        };
        assert!(!has_addr(), "{addr} already on lo");
        let (r, _) = run_once(Launch::new(who, &[]), code);
        assert_eq!(r.field("newaddr"), "EPERM", "{r:?}");
        let (r2, _) = run_once(Launch::new(who, &["network.outbound"]), code);
        assert!(
            !has_addr(),
            "the worker added an address to the host's lo: {r2:?}"
        );
        assert!(r2.field("newaddr").contains("EPERM"), "{r2:?}");
        if who == Who::Root {
            // Control: outside the sandbox root can add it (then it is removed).
            let base = plain(who, code);
            let added = has_addr();
            let _ = std::process::Command::new("ip")
                .args(["addr", "del", &format!("{addr}/8"), "dev", "lo"])
                .status();
            assert!(added, "control: plain netlink add failed: {base}");
        }
    });
}

/// The operator's tcp_ports: the allowed port connects, another gets nothing;
/// bind/listen is denied either way.
#[test]
fn attack_net_tcp_ports_allowlist_and_bind() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let allowed = Trap::tcp();
        let other = Trap::tcp();
        let free = free_port();
        let code = snippet(
            r#"
import socket
def conn(p):
    s = socket.create_connection(("127.0.0.1", p), timeout=2); s.sendall(b"hi"); return s.recv(100)
def listen():
    s = socket.socket(); s.bind(("127.0.0.1", @F@)); s.listen(); return "listening"
result = {"allowed": attempt(lambda: conn(@A@)), "other": attempt(lambda: conn(@O@)), "listen": attempt(listen)}
"#,
            &[
                ("A", allowed.port.to_string()),
                ("O", other.port.to_string()),
                ("F", free.to_string()),
            ],
        );
        let mut s = Launch::new(who, &["network.outbound"])
            .policy(json!({"tcp_ports": [allowed.port]}))
            .start();
        let r = s.exec(&code);
        let reached = std::net::TcpStream::connect(("127.0.0.1", free)).is_ok();
        s.finish();
        assert!(
            allowed.hits_after(ms(1000)) >= 1,
            "control: the allowed port got nothing: {r:?}"
        );
        assert!(r.field("allowed").contains("ECHO:hi"), "{r:?}");
        assert_eq!(other.hits(), 0, "the other port was reached: {r:?}");
        assert!(!reached, "the worker listens on 127.0.0.1:{free}: {r:?}");
        assert_eq!(r.field("listen"), "EACCES", "{r:?}");
    });
}

// ====================================================================== kernel surface

/// Runs `real` (attacks with their outside checks) and `probe` (the same calls
/// with arguments the kernel rejects with something else than EPERM) in the
/// worker, and `probe` outside: every probed call must fail with `expect` in
/// the sandbox, and root's plain run proves the probe reaches the kernel.
fn syscall_attack(who: Who, caps: &[&str], probe_code: &str, expect: &[(&str, &str)]) -> Reply {
    let (r, _) = run_once(Launch::new(who, caps), probe_code);
    let base = plain(who, probe_code);
    for (k, want) in expect {
        assert_eq!(&r.field(k), want, "{k} in the sandbox: {r:?}");
        if who == Who::Root {
            assert_ne!(base["result"][k].as_str(), Some(*want), "control: {k} gives {want} outside the sandbox too ({base}); the probe proves nothing");
        }
    }
    r
}

#[test]
fn attack_kernel_mount_family() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let probe = r#"
n = b"/nonexistent-nodus-sec"
result = {"mount": ename(sys_call(165, b"none", n, b"tmpfs", 0, 0)), "umount2": ename(sys_call(166, n, 0)),
          "chroot": ename(sys_call(161, n)), "pivot_root": ename(sys_call(155, n, n)),
          "fsopen": ename(sys_call(430, b"nodus-no-such-fs", 0)), "open_tree": ename(sys_call(428, -100, n, 0)),
          "move_mount": ename(sys_call(429, -1, b"", -1, b"", 0)), "mount_setattr": ename(sys_call(442, -1, b"", 0, 0, 0))}
"#;
        let e = "EPERM";
        syscall_attack(
            who,
            &[],
            probe,
            &[
                ("mount", e),
                ("umount2", e),
                ("chroot", e),
                ("pivot_root", e),
                ("fsopen", e),
                ("open_tree", e),
                ("move_mount", e),
                ("mount_setattr", e),
            ],
        );
        // The real thing: a tmpfs over the worker's scratch, seen (or not) in the host's mount table.
        let (r, _) = run_once(
            Launch::new(who, &[]),
            r#"t = os.environ["TMPDIR"].encode(); result = {"mount": ename(sys_call(165, b"none", t, b"tmpfs", 0, 0)), "tmpdir": t.decode()}"#,
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&r.field("tmpdir")),
            "a mount appeared on the host: {r:?}"
        );
    });
}

#[test]
fn attack_kernel_unshare_and_setns() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let probe = r#"result = {"unshare": ename(sys_call(272, 0)), "setns": ename(sys_call(308, -1, 0))}"#;
        syscall_attack(
            who,
            &["subprocess.run"],
            probe,
            &[("unshare", "EPERM"), ("setns", "EPERM")],
        );
        // The real thing: new namespaces, judged by the worker's /proc/PID/ns from outside.
        let mut s = Launch::new(who, &["subprocess.run"]).start();
        s.exec("result = 1");
        let w = s.worker_pid().expect("worker");
        let before: Vec<String> = ["user", "mnt", "net", "pid", "uts", "ipc", "cgroup"]
            .iter()
            .map(|k| ns(w, k))
            .collect();
        let r = s.exec(r#"result = {"unshare": ename(sys_call(272, 0x10000000 | 0x20000 | 0x40000000)), "clone": ename(sys_call(56, 0x10000000 | 0x20000 | 17, 0, 0, 0, 0))}"#);
        let after: Vec<String> = ["user", "mnt", "net", "pid", "uts", "ipc", "cgroup"]
            .iter()
            .map(|k| ns(w, k))
            .collect();
        s.finish();
        assert_eq!(before, after, "the worker changed namespaces: {r:?}");
        assert_eq!(r.field("unshare"), "EPERM", "{r:?}");
        assert_eq!(r.field("clone"), "EPERM", "{r:?}");
    });
}

#[test]
fn attack_kernel_keyrings() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let desc = token("nodus-sec-key");
        let probe = snippet(
            r#"result = {"keyctl": ename(sys_call(250, 9999, 0, 0, 0, 0)), "add_key": ename(sys_call(248, 0, 0, 0, 0, 0)), "request_key": ename(sys_call(249, 0, 0, 0, 0))}"#,
            &[],
        );
        syscall_attack(
            who,
            &[],
            &probe,
            &[
                ("keyctl", "EPERM"),
                ("add_key", "EPERM"),
                ("request_key", "EPERM"),
            ],
        );
        let (r, _) = run_once(
            Launch::new(who, &[]),
            &snippet(
                r#"result = ename(sys_call(248, b"user", @D@.encode(), b"x", 1, (1 << 64) - 4))"#,
                &[("D", lit(&desc))],
            ),
        );
        let keys = std::fs::read_to_string("/proc/keys").unwrap_or_default();
        assert!(!keys.contains(&desc), "a key was added: {r:?}");
        assert_eq!(r.text(), "\"EPERM\"");
    });
}

#[test]
fn attack_kernel_bpf() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let probe = r#"
import ctypes
attr = (ctypes.c_uint32 * 32)(2, 4, 4, 1)
result = {"bpf": ename(sys_call(321, 9999, 0, 0)), "map_create": ename(sys_call(321, 0, ctypes.addressof(attr), 72))}
"#;
        syscall_attack(
            who,
            &[],
            probe,
            &[("bpf", "EPERM"), ("map_create", "EPERM")],
        );
    });
}

#[test]
fn attack_kernel_perf_event_open() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let probe = r#"
import ctypes
attr = (ctypes.c_uint8 * 128)()
ctypes.memmove(attr, (ctypes.c_uint32 * 2)(1, 128), 8)   # PERF_TYPE_SOFTWARE, size
result = {"null": ename(sys_call(298, 0, 0, -1, -1, 0)), "cpu_clock": ename(sys_call(298, ctypes.addressof(attr), 0, -1, -1, 0))}
"#;
        syscall_attack(
            who,
            &[],
            probe,
            &[("null", "EPERM"), ("cpu_clock", "EPERM")],
        );
    });
}

#[test]
fn attack_kernel_userfaultfd() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let probe = r#"result = {"bad_flags": ename(sys_call(323, 0xffff)), "user_mode": ename(sys_call(323, 1 | 0x80000))}"#;
        syscall_attack(
            who,
            &[],
            probe,
            &[("bad_flags", "EPERM"), ("user_mode", "EPERM")],
        );
    });
}

#[test]
fn attack_kernel_io_uring() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let probe = r#"
import ctypes
params = (ctypes.c_uint8 * 120)()
result = {"setup_null": ename(sys_call(425, 4, 0)), "setup": ename(sys_call(425, 4, ctypes.addressof(params))),
          "enter": ename(sys_call(426, -1, 0, 0, 0, 0, 0)), "register": ename(sys_call(427, -1, 0, 0, 0))}
"#;
        let r = syscall_attack(
            who,
            &["network.outbound"],
            probe,
            &[
                ("setup_null", "EPERM"),
                ("setup", "EPERM"),
                ("enter", "EPERM"),
                ("register", "EPERM"),
            ],
        );
        let _ = r;
    });
}

/// clone3 must fail with ENOSYS (not EPERM), so that glibc falls back to clone,
/// whose flags seccomp can inspect; threads and subprocess still work.
#[test]
fn attack_kernel_clone3_is_enosys() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let probe = r#"
import threading, subprocess
t = []; th = threading.Thread(target=lambda: t.append(1)); th.start(); th.join()
result = {"clone3": ename(sys_call(435, 0, 0)), "thread": len(t),
          "subprocess": attempt(lambda: subprocess.run(["/bin/echo", "via-clone"], capture_output=True).stdout)}
"#;
        for caps in [&[][..], &["subprocess.run"][..]] {
            let r = syscall_attack(who, caps, probe, &[("clone3", "ENOSYS")]);
            assert_eq!(r.field("thread"), "1", "{r:?}");
            if !caps.is_empty() {
                assert!(r.field("subprocess").contains("via-clone"), "{r:?}");
            }
        }
    });
}

#[test]
fn attack_kernel_personality() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let probe = r#"result = {"query": ename(sys_call(135, 0xffffffff)), "no_aslr": ename(sys_call(135, 0x0040000))}"#;
        let mut s = Launch::new(who, &[]).start();
        let r = s.exec(probe);
        let w = s.worker_pid().expect("worker");
        let persona = std::fs::read_to_string(format!("/proc/{w}/personality")).unwrap_or_default();
        s.finish();
        assert_eq!(r.field("no_aslr"), "EPERM", "{r:?}");
        assert_eq!(persona.trim(), "00000000", "personality changed: {r:?}");
        syscall_attack(who, &[], probe, &[("query", "EPERM")]);
    });
}

#[test]
fn attack_kernel_module_and_kexec() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let probe = r#"
result = {"init_module": ename(sys_call(175, 0, 0, b"")), "finit_module": ename(sys_call(313, -1, b"", 0)),
          "delete_module": ename(sys_call(176, b"nodus_sec_no_such_module", 0x800)),
          "kexec_load": ename(sys_call(246, 0, 0, 0, 0xdead0000)), "kexec_file_load": ename(sys_call(320, -1, -1, 0, 0, 0xdead0000))}
"#;
        let e = "EPERM";
        syscall_attack(
            who,
            &[],
            probe,
            &[
                ("init_module", e),
                ("finit_module", e),
                ("delete_module", e),
                ("kexec_load", e),
                ("kexec_file_load", e),
            ],
        );
    });
}

/// open_by_handle_at / name_to_handle_at (the "shocker" escape), pidfd_getfd, kcmp.
#[test]
fn attack_kernel_handles_and_pidfd() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let probe = r#"
result = {"name_to_handle_at": ename(sys_call(303, -100, b"/nonexistent-nodus-sec", 0, 0, 0)),
          "open_by_handle_at": ename(sys_call(304, -1, 0, 0)), "pidfd_getfd": ename(sys_call(438, -1, 0, 0)),
          "pidfd_open": ename(sys_call(434, 1, 0)), "kcmp": ename(sys_call(312, os.getpid(), os.getpid(), 0, 0, 0))}
"#;
        let e = "EPERM";
        syscall_attack(
            who,
            &[],
            probe,
            &[
                ("name_to_handle_at", e),
                ("open_by_handle_at", e),
                ("pidfd_getfd", e),
                ("pidfd_open", e),
            ],
        );
    });
}

/// Identity, clock, host name, kernel log, I/O ports, swap.
#[test]
fn attack_kernel_identity_clock_host() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let probe = r#"
result = {"setuid": ename(sys_call(105, os.getuid())), "setgroups": ename(sys_call(116, 0, 0)), "capset": ename(sys_call(126, 0, 0)),
          "sethostname": ename(sys_call(170, 0, 100)), "syslog": ename(sys_call(103, 10, 0, 0)), "iopl": ename(sys_call(172, 0)),
          "ioperm": ename(sys_call(173, 0, 0, 0)), "swapon": ename(sys_call(167, 0, 0)), "clock_settime": ename(sys_call(227, 0, 0)),
          "settimeofday": ename(sys_call(164, 0, 0)), "acct": ename(sys_call(163, b"/nonexistent-nodus-sec")), "setpriority": ename(sys_call(141, 0, 0, 0))}
"#;
        let e = "EPERM";
        syscall_attack(
            who,
            &[],
            probe,
            &[
                ("setuid", e),
                ("capset", e),
                ("sethostname", e),
                ("syslog", e),
                ("iopl", e),
                ("ioperm", e),
                ("swapon", e),
                ("clock_settime", e),
                ("settimeofday", e),
                ("acct", e),
                ("setpriority", e),
            ],
        );
        let (r, _) = run_once(
            Launch::new(who, &[]),
            r#"result = ename(sys_call(170, b"pwned", 5))"#,
        );
        assert_eq!(
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
            host_name,
            "{r:?}"
        );
    });
}

/// TIOCSTI / TIOCLINUX on a pty the test owns (reachable through the
/// operator's read_only_paths), with and without the high bits of
/// CVE-2019-10063: the injected characters must not appear.
#[test]
fn attack_kernel_tiocsti_on_test_pty() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let mut pty = Pty::open();
        let slave = pty.slave_path.clone();
        let code = snippet(
            r#"
import fcntl, termios, ctypes
try:
    fd = os.open(@T@, os.O_RDONLY)
except OSError as e:
    raise SystemExit(f"the operator-granted pty cannot be opened: {e}")
c = ctypes.c_char(b"Q")
d = ctypes.c_char(b"W")
result = {"open": fd,
          "tiocsti": attempt(lambda: fcntl.ioctl(fd, termios.TIOCSTI, b"Z")),
          "raw": ename(sys_call(16, fd, 0x5412, ctypes.addressof(c))),
          "high_bits": ename(sys_call(16, fd, (1 << 32) | 0x5412, ctypes.addressof(d))),
          "tioclinux": ename(sys_call(16, fd, 0x541C, ctypes.addressof(c)))}
"#,
            &[("T", lit(&slave))],
        );
        // Control: a plain process with the pty as controlling terminal injects.
        let control = snippet(
            r#"
import fcntl, termios
os.setsid()
fd = os.open(@T@, os.O_RDWR)
fcntl.ioctl(fd, termios.TIOCSTI, b"K")
result = "injected"
"#,
            &[("T", lit(&slave))],
        );
        let base = plain(who, &control);
        let echoed = pty.drain(ms(300));
        assert!(
            echoed.contains('K'),
            "control: plain TIOCSTI did not show on the master ({base}): {echoed:?}"
        );
        let (r, _) = run_once(
            Launch::new(who, &[]).policy(json!({"read_only_paths": [slave]})),
            &code,
        );
        let echoed = pty.drain(ms(300));
        assert!(
            !echoed.contains('Z') && !echoed.contains('Q') && !echoed.contains('W'),
            "injected: {echoed:?} {r:?}"
        );
        assert_eq!(r.field("high_bits"), "EPERM", "{r:?}");
        assert_eq!(r.field("raw"), "EPERM", "{r:?}");
    });
}

// ====================================================================== resources and lifetime

/// Checks, after a bomb: another extension answers, and nothing of the bomb's worker remains.
fn assert_host_healthy(who: Who, leftovers: &[i32]) {
    for p in leftovers {
        assert!(
            common::wait_gone(*p, Duration::from_secs(5)),
            "process {p} of the worker remains"
        );
    }
    let hello = hello_copy();
    let out = who
        .command(runner(who))
        .args(["invoke"])
        .arg(hello.path())
        .args(["example.greet", r#"{"name": "after"}"#, "--python"])
        .arg(who.python())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "\"Hello, after!\"",
        "host unhealthy: {out:?}"
    );
}

/// The hello example, copied where every user can read it.
fn hello_copy() -> common::TempDir {
    let d = world_dir("hello");
    for f in ["nodus-extension.json", "extension.py"] {
        std::fs::copy(common::root().join("examples/hello").join(f), d.join(f)).unwrap();
        chmod(&d.join(f), 0o644);
    }
    d
}

#[test]
fn attack_limits_fork_bomb() {
    both(|who| {
        if !require(who, &[FULL, &[Feature::PidsCgroup]].concat()) {
            return;
        }
        let mut s = Launch::new(who, &["subprocess.run"])
            .policy(json!({"limits": {"processes": 16}}))
            .start();
        let r = s.exec(
            r#"
import time
n, err = 0, None
try:
    while n < 200:
        p = os.fork()
        if p == 0:
            try:
                while True:
                    if os.fork() == 0:
                        time.sleep(20); os._exit(0)
            except OSError:
                pass
            time.sleep(20); os._exit(0)
        n += 1
except OSError as e:
    err = errno.errorcode.get(e.errno)
result = {"forked": n, "error": err}
"#,
        );
        let procs = s.processes();
        assert_eq!(r.field("error"), "EAGAIN", "{r:?}");
        assert!(
            procs.len() <= 16 + 2,
            "{} processes under the runner",
            procs.len()
        );
        assert!(
            matches!(s.exec("result = 2"), Reply::Value(_)),
            "the worker stopped answering"
        );
        s.finish();
        assert_host_healthy(who, &procs);
    });
}

#[test]
fn attack_limits_thread_bomb() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let mut s = Launch::new(who, &[])
            .policy(json!({"limits": {"processes": 16}}))
            .start();
        let r = s.exec(
            r#"
import threading, time
ev = threading.Event()
n, err = 0, None
try:
    while n < 300:
        threading.Thread(target=ev.wait, daemon=True).start(); n += 1
except RuntimeError as e:
    err = str(e)
ev.set()
result = {"threads": n, "error": err}
"#,
        );
        // As root, threads are counted by the pids cgroup only for workers that may fork.
        let n: usize = r.field("threads").parse().unwrap_or(999);
        // Nobody: RLIMIT_NPROC counts threads. Root without subprocess.run has
        // no pids cgroup and RLIMIT_NPROC does not bind uid 0: the address-space
        // limit (thread stacks) is what bounds it.
        let bound = if who == Who::Root { 299 } else { 16 };
        assert!(n <= bound, "{n} threads: {r:?}");
        s.finish();
        assert_host_healthy(who, &[]);
    });
}

#[test]
fn attack_limits_memory_bomb() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let limit = 256u64 << 20;
        let mut s = Launch::new(who, &[])
            .policy(json!({"limits": {"memory_bytes": limit}}))
            .start();
        let r = s.exec(
            r#"
chunks, err = [], None
try:
    while len(chunks) < 64:
        chunks.append(bytearray(16 << 20))
except MemoryError as e:
    err = "MemoryError"
result = {"mib": 16 * len(chunks), "error": err}
del chunks
"#,
        );
        let w = s.worker_pid();
        assert_eq!(r.field("error"), "MemoryError", "{r:?}");
        assert!(
            r.value()["mib"].as_u64().unwrap() * (1 << 20) <= limit,
            "{r:?}"
        );
        if let Some(w) = w {
            let peak = status_field(w, "VmPeak").unwrap_or_default();
            let kb: u64 = peak
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            assert!(kb * 1024 <= limit, "VmPeak {peak}");
        }
        assert!(
            matches!(s.exec("result = 'ok'"), Reply::Value(_)),
            "the worker did not recover"
        );
        s.finish();
        assert_host_healthy(who, &[]);
    });
}

#[test]
fn attack_limits_busy_loop_cpu_seconds() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let mut s = Launch::new(who, &[])
            .policy(json!({"limits": {"cpu_seconds": 1}}))
            .timeout(60.0)
            .start();
        let worker = {
            s.exec("result = 0");
            s.worker_pid().expect("worker")
        };
        let scratch = scratch_of(&s).expect("scratch");
        let start = std::time::Instant::now();
        let r = s.exec("while True: pass");
        let t = s.finish();
        assert!(matches!(r, Reply::Gone), "{r:?}");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the loop was not stopped by the CPU limit"
        );
        assert!(
            t.stderr.contains("killed by signal"),
            "no error: {}",
            t.all()
        );
        assert!(common::wait_gone(worker, Duration::from_secs(5)));
        assert!(
            wait_removed(&scratch, Duration::from_secs(5)),
            "scratch left behind"
        );
        assert_host_healthy(who, &[]);
    });
}

/// GAP: the CPU limit ends a busy loop with "killed by signal 9 (SIGKILL)",
/// which does not say that the CPU limit was the cause: RLIMIT_CPU is set with
/// soft = hard, and the kernel sends SIGKILL (not SIGXCPU) when the hard limit
/// is reached.
#[test]
fn limits_cpu_limit_error_is_not_clear() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let mut s = Launch::new(who, &[])
            .policy(json!({"limits": {"cpu_seconds": 1}}))
            .timeout(60.0)
            .start();
        let _ = s.exec("while True: pass");
        let t = s.finish();
        let e = t.stderr.to_lowercase();
        assert!(
            e.contains("sigxcpu") || e.contains("cpu"),
            "the error does not name the CPU limit: {}",
            t.stderr
        );
    });
}

#[test]
fn attack_limits_file_size() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let mut s = Launch::new(who, &[])
            .policy(json!({"limits": {"file_size_bytes": 1 << 20}}))
            .start();
        let r = s.exec(
            r#"
p = os.path.join(os.environ["TMPDIR"], "big")
f = open(p, "wb", buffering=0)
written, err = 0, None
try:
    for _ in range(8):
        written += f.write(b"x" * (1 << 19))
except OSError as e:
    err = errno.errorcode.get(e.errno)
result = {"written": written, "error": err, "path": p}
"#,
        );
        let size = std::fs::metadata(r.field("path"))
            .map(|m| m.len())
            .unwrap_or(0);
        s.finish();
        assert_eq!(r.field("error"), "EFBIG", "{r:?}");
        assert!(size <= 1 << 20, "file grew to {size}");
        assert_host_healthy(who, &[]);
    });
}

#[test]
fn attack_limits_fd_exhaustion() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let mut s = Launch::new(who, &[])
            .policy(json!({"limits": {"open_files": 64}}))
            .start();
        let r = s.exec(
            r#"
fds, err = [], None
try:
    while len(fds) < 5000:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    err = errno.errorcode.get(e.errno)
n = len(fds)
for fd in fds: os.close(fd)
result = {"opened": n, "error": err}
"#,
        );
        assert_eq!(r.field("error"), "EMFILE", "{r:?}");
        assert!(r.value()["opened"].as_u64().unwrap() < 64, "{r:?}");
        assert!(
            matches!(s.exec("result = 'ok'"), Reply::Value(_)),
            "the worker did not recover"
        );
        s.finish();
        assert_host_healthy(who, &[]);
    });
}

/// A line longer than the protocol's limit on stdout: the runner stops the
/// worker with a clear error instead of buffering without end.
#[test]
fn attack_limits_stdout_flood() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let mut s = Launch::new(who, &[]).start();
        let r =
            s.exec(r#"sys.stdout.write("x" * (17 << 20)); sys.stdout.flush(); result = "flooded""#);
        let t = s.finish();
        assert!(matches!(r, Reply::Gone), "{:?}", r.text().len());
        assert!(
            t.stderr.contains("longer than"),
            "no clear error: {}",
            &t.stderr[..t.stderr.len().min(500)]
        );
        assert_host_healthy(who, &[]);
    });
}

/// Root only: one in-process registry runs bombs in one extension and the
/// hello example keeps answering; afterwards no worker process remains.
#[test]
fn attack_limits_same_registry_stays_healthy() {
    if !Who::Root.available() || !require(Who::Root, FULL) {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut opts = common::options();
        opts.operator = serde_json::from_value(json!({"limits": {"processes": 16, "memory_bytes": 268435456u64, "open_files": 64}})).unwrap();
        let reg = nodus_extension::ExtensionRegistry::new(opts);
        let bomb = sec_ext(&["subprocess.run"]);
        let hello = hello_copy();
        let b = reg.load(bomb.path()).await.unwrap();
        reg.load(hello.path()).await.unwrap();
        let bomb_pid = b.worker_pid().await.unwrap();
        for code in [
            "import time\nn=0\ntry:\n    while n < 200:\n        if os.fork() == 0:\n            time.sleep(10); os._exit(0)\n        n += 1\nexcept OSError: pass\nresult = n",
            "x=[]\ntry:\n    while len(x) < 64: x.append(bytearray(16<<20))\nexcept MemoryError: pass\nresult=len(x)\ndel x",
            "f=[]\ntry:\n    while len(f) < 5000: f.append(os.open('/dev/null', 0))\nexcept OSError: pass\nresult=len(f)\n[os.close(i) for i in f]",
        ] {
            let v = reg.invoke("sec.attack", "sec.run", &json!({"code": code}).to_string()).await.unwrap();
            assert_eq!(v["ok"], json!(true), "{v}");
            let hi = reg.invoke("example.hello", "example.greet", r#"{"name": "still"}"#).await.unwrap();
            assert_eq!(hi, json!("Hello, still!"));
        }
        let all = descendants(bomb_pid);
        reg.shutdown().await;
        for p in all.iter().chain([&bomb_pid]) {
            assert!(common::wait_gone(*p, Duration::from_secs(5)), "process {p} remains after shutdown");
        }
    });
}

// ====================================================================== environment

/// A secret in the runner's environment does not reach the worker.
#[test]
fn attack_env_host_secret_variable() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let secret = token("ENVVAR");
        let code = r#"result = {"environ": dict(os.environ), "proc": attempt(lambda: open("/proc/self/environ").read())}"#;
        assert_control(
            &plain_with(who, code, &[("NODUS_HOST_SECRET", &secret)]),
            &secret,
            "plain child inherits the variable",
        );
        let mut s = Launch::new(who, &[])
            .env("NODUS_HOST_SECRET", &secret)
            .start();
        let r = s.exec(code);
        let w = s.worker_pid().expect("worker");
        let env = std::fs::read(format!("/proc/{w}/environ")).unwrap_or_default();
        let t = s.finish();
        assert_hidden(&t, &secret, "environment variable");
        assert!(
            !String::from_utf8_lossy(&env).contains(&secret),
            "in /proc/PID/environ"
        );
        let keys: Vec<String> = r.value()["environ"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        for k in &keys {
            assert!(
                [
                    "HOME",
                    "LANG",
                    "PATH",
                    "PYTHONDONTWRITEBYTECODE",
                    "TMPDIR",
                    "LC_CTYPE"
                ]
                .contains(&k.as_str())
                    || k.starts_with("NODUS_EXTENSION_"),
                "unexpected variable {k}"
            );
        }
    });
}

/// Descriptors the runner inherited without O_CLOEXEC (fd 7 and 4 on a secret
/// file) are not open in the worker.
#[test]
fn attack_env_inherited_descriptor() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let d = world_dir("fd");
        let secret = token("FDSECRET");
        let f = d.join("secret");
        owned_file(Who::Root, &f, &secret, 0o644);
        let prefix = format!("exec 7<{0}; exec 4<{0}", f.display());
        let code = r#"
found = {}
for fd in range(3, 1024):
    try:
        os.lseek(fd, 0, 0)
        found[fd] = os.read(fd, 200).decode(errors="replace")
    except OSError:
        pass
result = {"found": found, "fd7": attempt(lambda: os.read(7, 100))}
"#;
        // Control: the same wrapper around a plain interpreter leaks it.
        let out = who
            .command("bash")
            .arg("-c")
            .arg(format!(
                "{prefix}\nexec \"$0\" -c 'import os; print(os.read(7, 100))'"
            ))
            .arg(who.python())
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&secret),
            "control: the wrapper does not leave fd 7 open: {out:?}"
        );
        let mut s = Launch::new(who, &[]).shell_prefix(&prefix).start();
        let r = s.exec(code);
        let w = s.worker_pid().expect("worker");
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{w}/fd"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let t = s.finish();
        assert_hidden(&t, &secret, "inherited descriptor");
        assert_eq!(r.field("fd7"), "EBADF", "{r:?}");
        let mut fds: Vec<i32> = fds.iter().filter_map(|f| f.parse().ok()).collect();
        fds.sort();
        assert_eq!(fds, vec![0, 1, 2], "the worker holds other descriptors");
    });
}

// ====================================================================== controls

/// What every worker is, read from outside: no_new_privs, seccomp, no
/// capabilities, its own pid namespace, its own net namespace
/// without network.outbound, a scratch TMPDIR that is removed after it.
#[test]
fn control_worker_confinement_seen_from_outside() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let mut s = Launch::new(who, &[]).start();
        let r = s.exec(r#"result = {"pid": os.getpid(), "tmpdir": os.environ["TMPDIR"], "home": os.environ["HOME"]}"#);
        let w = s.worker_pid().expect("worker");
        // Process 1 of its own pid namespace, or 2 under a reaper that is.
        let inner = r.value()["pid"].as_i64().unwrap_or(0);
        assert!(
            (1..=2).contains(&inner),
            "the worker is pid {inner} of its namespace"
        );
        let nspid = status_field(w, "NSpid").unwrap_or_default();
        assert_eq!(
            nspid.split_whitespace().count(),
            2,
            "not in a nested pid namespace: NSpid {nspid}"
        );
        assert_eq!(status_field(w, "NoNewPrivs").as_deref(), Some("1"));
        assert_eq!(status_field(w, "Seccomp").as_deref(), Some("2"));
        for c in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(
                status_field(w, c).as_deref(),
                Some("0000000000000000"),
                "{c}"
            );
        }
        assert_eq!(
            status_field(w, "Uid").unwrap().split_whitespace().next(),
            Some(who.uid().to_string().as_str())
        );
        assert_ne!(
            ns(w, "net"),
            ns(std::process::id() as i32, "net"),
            "shares the host's net namespace"
        );
        assert_ne!(ns(w, "pid"), ns(std::process::id() as i32, "pid"));
        let tmp = std::path::PathBuf::from(r.field("tmpdir"));
        assert_eq!(r.field("home"), r.field("tmpdir"));
        assert!(tmp
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("nodus-ext-"));
        let meta = std::fs::metadata(&tmp).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        s.finish();
        assert!(
            wait_removed(&tmp, Duration::from_secs(5)),
            "scratch not removed"
        );
        // With network.outbound, the host's net namespace (that is the point of it).
        let mut s = Launch::new(who, &["network.outbound"]).start();
        s.exec("result = 1");
        let w = s.worker_pid().expect("worker");
        assert_eq!(ns(w, "net"), ns(std::process::id() as i32, "net"));
        s.finish();
    });
}

#[test]
fn control_stdlib_imports_threads_asyncio_tempfile() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let code = r#"
import ssl, sqlite3, hashlib, json, asyncio, threading, tempfile, socket, zlib, decimal, uuid, concurrent.futures
ctx = ssl.create_default_context()
db = sqlite3.connect(os.path.join(tempfile.gettempdir(), "t.db")); db.execute("create table t(x)"); db.execute("insert into t values (42)"); db.commit()
async def main():
    a, b = socket.socketpair()
    r, w = await asyncio.open_connection(sock=a)
    r2, w2 = await asyncio.open_connection(sock=b)
    w.write(b"ping\n"); await w.drain()
    line = await r2.readline()
    w.close(); w2.close()
    return line.decode().strip()
with concurrent.futures.ThreadPoolExecutor(4) as ex:
    squares = list(ex.map(lambda x: x * x, range(8)))
with tempfile.TemporaryDirectory() as d:
    fd, p = tempfile.mkstemp(dir=d); os.write(fd, b"t"); os.close(fd)
    tmp_ok = open(p).read()
    import shutil
    shutil.copy2(p, p + ".copy"); shutil.copytree(d, d + "-tree")
    copied = open(os.path.join(d + "-tree", os.path.basename(p) + ".copy")).read()
result = {"shutil": copied, "ssl_certs": ctx.cert_store_stats()["x509_ca"] > 0, "sqlite": db.execute("select x from t").fetchone()[0],
          "sha256": hashlib.sha256(b"x").hexdigest()[:8], "asyncio": asyncio.run(main()), "threads": squares[-1],
          "tempfile": tmp_ok, "uuid": len(str(uuid.uuid4())), "zlib": len(zlib.compress(b"a" * 100)) < 100}
"#;
        let (r, t) = run_once(Launch::new(who, &[]), code);
        let v = match &r {
            Reply::Value(v) => v.clone(),
            other => panic!("{other:?}\n{}", t.all()),
        };
        assert_eq!(v["sqlite"], json!(42), "{v}");
        assert_eq!(v["sha256"], json!("2d711642"), "{v}");
        assert_eq!(v["asyncio"], json!("ping"), "{v}");
        assert_eq!(v["threads"], json!(49), "{v}");
        assert_eq!(v["tempfile"], json!("t"), "{v}");
        assert_eq!(v["shutil"], json!("t"), "shutil.copy2/copytree: {v}");
        assert_eq!(v["zlib"], json!(true), "{v}");
        assert_eq!(
            v["ssl_certs"],
            json!(true),
            "the TLS trust store is not readable: {v}"
        );
    });
}

#[test]
fn control_filesystem_read_workspace() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let ws = world_dir("ws");
        std::fs::create_dir(ws.join("sub")).unwrap();
        std::fs::write(ws.join("sub/a.txt"), "alpha").unwrap();
        chmod(&ws.join("sub"), 0o755);
        chmod(&ws.join("sub/a.txt"), 0o644);
        let code = snippet(
            r#"result = {"list": sorted(os.listdir(@W@)), "read": open(os.path.join(@W@, "sub/a.txt")).read()}"#,
            &[("W", lit(ws.path()))],
        );
        let (r, _) = run_once(
            Launch::new(who, &["filesystem.read"]).workspace(ws.path()),
            &code,
        );
        assert_eq!(r.value()["read"], json!("alpha"), "{r:?}");
        assert_eq!(r.value()["list"], json!(["sub"]));
        // And without the capability the same read fails.
        let (r2, _) = run_once(Launch::new(who, &[]), &code);
        assert!(r2.text().contains("Permission denied"), "{r2:?}");
    });
}

#[test]
fn control_filesystem_write_workspace() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let ws = owned_dir(who, "ws");
        owned_file(who, &ws.join("old.txt"), "old", 0o644);
        let code = snippet(
            r#"
w = @W@
os.makedirs(os.path.join(w, "d/e"))
open(os.path.join(w, "d/e/new.txt"), "w").write("new")
os.rename(os.path.join(w, "d/e/new.txt"), os.path.join(w, "renamed.txt"))
os.rename(os.path.join(w, "renamed.txt"), os.path.join(w, "d/renamed.txt"))
os.unlink(os.path.join(w, "old.txt"))
os.symlink("renamed.txt", os.path.join(w, "d/link"))
import shutil
shutil.copyfile(os.path.join(w, "d/renamed.txt"), os.path.join(w, "copy.txt"))
result = sorted(os.listdir(w))
"#,
            &[("W", lit(ws.path()))],
        );
        let (r, t) = run_once(
            Launch::new(who, &["filesystem.write"]).workspace(ws.path()),
            &code,
        );
        assert_eq!(r.value(), &json!(["copy.txt", "d"]), "{}", t.all());
        assert_eq!(
            std::fs::read_to_string(ws.join("d/renamed.txt")).unwrap(),
            "new"
        );
        assert_eq!(std::fs::read_to_string(ws.join("d/link")).unwrap(), "new");
        assert!(!ws.join("old.txt").exists());
    });
}

#[test]
fn control_network_outbound_tcp_exchange() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let trap = Trap::tcp();
        let udp = Trap::udp();
        let code = snippet(
            r#"
import socket
s = socket.create_connection(("127.0.0.1", @P@), timeout=5); s.sendall(b"hello")
reply = s.recv(100).decode()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"udp", ("127.0.0.1", @U@))
result = {"reply": reply, "resolv": socket.getaddrinfo("localhost", 80)[0][4][0]}
"#,
            &[("P", trap.port.to_string()), ("U", udp.port.to_string())],
        );
        let (r, t) = run_once(Launch::new(who, &["network.outbound"]), &code);
        assert_eq!(r.value()["reply"], json!("ECHO:hello"), "{}", t.all());
        assert_eq!(trap.catch.data(), "hello");
        assert!(udp.hits_after(ms(1000)) >= 1);
    });
}

#[test]
fn control_subprocess_run_system_binaries() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let ws = world_dir("ws");
        std::fs::write(ws.join("listed.txt"), "x").unwrap();
        chmod(&ws.join("listed.txt"), 0o644);
        let code = snippet(
            r#"
import subprocess
result = {"echo": subprocess.run(["/bin/echo", "hi"], capture_output=True, text=True).stdout,
          "ls": subprocess.run(["ls", @W@], capture_output=True, text=True).stdout,
          "sh": subprocess.run("echo $((6*7))", shell=True, capture_output=True, text=True).stdout}
"#,
            &[("W", lit(ws.path()))],
        );
        let (r, t) = run_once(
            Launch::new(who, &["subprocess.run", "filesystem.read"]).workspace(ws.path()),
            &code,
        );
        assert_eq!(r.value()["echo"], json!("hi\n"), "{}", t.all());
        assert_eq!(r.value()["ls"], json!("listed.txt\n"));
        assert_eq!(r.value()["sh"], json!("42\n"));
    });
}

#[test]
fn control_hello_example() {
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        assert_host_healthy(who, &[]);
    });
}
