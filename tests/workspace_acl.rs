//! A root runner without a mount namespace (Docker's default profile as
//! root: `Env::DockerLike`) lends the writable workspace to its worker's own
//! uid with ACL entries, and gives it back at unload (src/sandbox/acl.rs).
//! Judged from outside: during the run the worker is not uid 0 and the
//! workspace's files carry its entry (the control: the checks below see an
//! ACL when there is one); after the unload no ACL is left, the modes are
//! as they were, what the worker made belongs to the workspace's owner, a
//! host file behind a symbolic link is untouched, and a ledger left by a
//! runner killed mid-run is swept at the next lease of that uid.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::envs::Env;
use common::sandbox::*;
use serde_json::json;

/// The workspace's owner: an ordinary user's uid and gid, not root's.
const OWNER: u32 = 1000;
/// One uid for each test's workers (an operator range of one), so a second
/// runner leases the same uid as the first.
const LENT: u32 = 3_400_000_000;
const KILLED: u32 = 3_400_000_001;

fn ledger(id: u32) -> PathBuf {
    std::env::temp_dir()
        .join("nodus-ext-worker-ids")
        .join(format!("{id}.acl"))
}

/// Whether `p` (not followed) carries an access ACL.
fn has_acl(p: &Path) -> bool {
    xattr::get_deref(p, "system.posix_acl_access")
        .ok()
        .flatten()
        .is_some()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn owner(p: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

/// Every path beneath `dir` (not through links).
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(tree(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A workspace of the owner's: a file only its owner may read and write,
/// a folder, two names of one file, and a link to a host file of root's.
fn workspace(label: &str) -> (common::TempDir, PathBuf) {
    let ws = world_dir(label);
    let w = ws.path();
    std::fs::write(w.join("src"), "x\n").unwrap();
    chmod(&w.join("src"), 0o640);
    std::fs::create_dir(w.join("sub")).unwrap();
    std::fs::write(w.join("sub/f"), "f\n").unwrap();
    std::fs::hard_link(w.join("sub/f"), w.join("hard")).unwrap();
    let host = world_dir(&format!("{label}-host"));
    let canary = host.path().join("canary");
    std::fs::write(&canary, "host\n").unwrap();
    chmod(&canary, 0o600);
    std::os::unix::fs::symlink(&canary, w.join("link")).unwrap();
    for p in tree(w) {
        std::os::unix::fs::lchown(&p, Some(OWNER), Some(OWNER)).unwrap();
    }
    std::mem::forget(host); // removed with the machine's /tmp; the canary is checked below
    (ws, canary)
}

/// A root runner's worker with uid `id`, writing the workspace `ws` (or
/// with no workspace: then it only leases the uid).
fn launch(ws: Option<&Path>, id: u32) -> Option<Session> {
    if !is_root() {
        println!("SKIP: lending a workspace with ACL entries is a root runner's (run as root)");
        return None;
    }
    if !Env::DockerLike.available() {
        println!("SKIP: the Docker-like environment (envwrap) is not available here");
        return None;
    }
    let caps: &[&str] = if ws.is_some() {
        &["filesystem.write"]
    } else {
        &[]
    };
    let mut l = Launch::new(Who::Root, caps)
        .policy(json!({"mode": "strict", "worker_ids": {"first": id, "count": 1}}))
        .python(Path::new(SYSTEM_PYTHON))
        .in_env(Env::DockerLike);
    if let Some(ws) = ws {
        l = l.workspace(ws);
    }
    Some(l.start())
}

const WORK: &str = r#"import shutil
w = @W@
out = {'uid': os.getuid()}
open(w + '/new', 'w').write('n')
os.makedirs(w + '/d/e')
open(w + '/d/e/f', 'w').write('y')
os.symlink(@C@, w + '/mine')
with open(w + '/src', 'a') as f:
    f.write('appended\n')
shutil.copy2(w + '/src', w + '/copy')
for name, f in [('hard', lambda: open(w + '/hard', 'a')),
                ('chmod src', lambda: os.chmod(w + '/src', 0o666)),
                ('through link', lambda: open(w + '/link', 'a')),
                ('chmod through mine', lambda: os.chmod(w + '/mine', 0o666))]:
    try:
        f(); out[name] = 'done'
    except OSError as e:
        out[name] = type(e).__name__
result = out"#;

#[test]
fn a_workspace_is_lent_to_the_workers_uid_and_given_back_at_unload() {
    let (ws, canary) = workspace("acl-ws");
    let w = ws.path();
    let _ = std::fs::remove_file(ledger(LENT));
    let Some(mut s) = launch(Some(w), LENT) else {
        return;
    };
    let code = snippet(WORK, &[("W", lit(w)), ("C", lit(&canary))]);
    let r = s.exec(&code);
    // From outside, while the worker runs: its uid, its files, the entries.
    let during = (
        s.worker_pid()
            .and_then(|p| status_field(p, "Uid"))
            .and_then(|v| {
                v.split_whitespace()
                    .next()
                    .and_then(|u| u.parse::<u32>().ok())
            }),
        owner(&w.join("new")),
        has_acl(&w.join("src")),
        has_acl(w),
        ledger(LENT).exists(),
    );
    let t = s.finish();
    let Reply::Value(out) = r else {
        panic!("no answer: {r:?}: {}", t.stderr);
    };
    assert_eq!(out["uid"], json!(LENT), "{out}: {}", t.stderr);
    assert_eq!(
        during.0,
        Some(LENT),
        "the worker's uid from /proc: {during:?}"
    );
    // The control: during the run the checks below see the lending.
    assert_eq!(
        during.1,
        (LENT, LENT),
        "the worker's file is its own during the run"
    );
    assert!(
        during.2 && during.3,
        "the workspace carries the worker's entry: {during:?}"
    );
    assert!(during.4, "the ledger is written before the worker starts");
    // What it may do: write the owner's 0640 file, copy it keeping its times.
    assert_eq!(
        std::fs::read_to_string(w.join("src")).unwrap(),
        "x\nappended\n"
    );
    assert_eq!(
        std::fs::metadata(w.join("copy")).unwrap().mtime(),
        std::fs::metadata(w.join("src")).unwrap().mtime(),
        "copy2 keeps the times: {out}"
    );
    // What it may not: a file with a second name (not lent), the owner's
    // mode bits, a host file behind a link.
    assert_eq!(out["hard"], "PermissionError", "{out}");
    assert_eq!(out["chmod src"], "PermissionError", "{out}");
    assert_eq!(out["through link"], "PermissionError", "{out}");
    assert_ne!(out["chmod through mine"], "done", "{out}");
    assert!(
        t.stderr.contains("not lent to the worker's uid") && t.stderr.contains("hard link"),
        "the skipped file is reported: {}",
        t.stderr
    );
    // After the unload: no ACL anywhere, the owner's again, modes as they were.
    for p in tree(w) {
        assert!(!has_acl(&p), "an ACL is left on {}", p.display());
        assert_eq!(
            owner(&p),
            (OWNER, OWNER),
            "{} is not the owner's",
            p.display()
        );
    }
    assert_eq!(mode(&w.join("src")), 0o640);
    assert_eq!(std::fs::read_to_string(w.join("hard")).unwrap(), "f\n");
    assert_eq!((owner(&canary), mode(&canary)), ((0, 0), 0o600));
    assert!(!has_acl(&canary));
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "host\n");
    assert!(!ledger(LENT).exists(), "the ledger is removed at unload");
    println!("lent and given back: {out}");
}

#[test]
fn a_ledger_left_by_a_killed_runner_is_swept_at_the_next_lease() {
    let (ws, canary) = workspace("acl-killed");
    let w = ws.path();
    let Some(mut s) = launch(Some(w), KILLED) else {
        return;
    };
    let r = s.exec(&snippet(
        "open(@W@ + '/made', 'w').write('m')\nresult = os.getuid()",
        &[("W", lit(w))],
    ));
    assert_eq!(r.value(), &json!(KILLED), "{r:?}");
    let t = s.kill_runner();
    // The control: a runner killed mid-run leaves the lending in place.
    assert!(ledger(KILLED).exists(), "no ledger left: {}", t.stderr);
    assert!(
        has_acl(&w.join("src")),
        "no entry left by the killed runner"
    );
    assert_eq!(owner(&w.join("made")).0, KILLED);
    // The next lease of that uid, by a worker without a workspace, gives
    // it back first.
    let Some(mut s) = launch(None, KILLED) else {
        return;
    };
    let r = s.exec("result = os.getuid()");
    let t = s.finish();
    assert_eq!(r.value(), &json!(KILLED), "{r:?}: {}", t.stderr);
    for p in tree(w) {
        assert!(!has_acl(&p), "an ACL is left on {}", p.display());
        assert_eq!(
            owner(&p),
            (OWNER, OWNER),
            "{} is not the owner's",
            p.display()
        );
    }
    assert!(!ledger(KILLED).exists());
    assert_eq!((owner(&canary), mode(&canary)), ((0, 0), 0o600));
}

/// How deep the worker's tree goes: past the walk's 128 folders.
const DEEP: usize = 140;
const DEEP_ID: u32 = 3_400_000_002;
const BIND_ID: u32 = 3_400_000_003;

/// A worker makes a chain of folders deeper than the walk's limit: at
/// unload, nothing beneath it may stay the worker's uid's (the next worker
/// that leases that uid would own it).
#[test]
fn a_tree_deeper_than_the_walk_is_given_back_too() {
    let (ws, _) = workspace("acl-deep");
    let w = ws.path();
    let Some(mut s) = launch(Some(w), DEEP_ID) else {
        return;
    };
    let code = snippet(
        "import os\nos.chdir(@W@)\nfor i in range(@N@):\n    os.mkdir('d')\n    os.chdir('d')\nopen('bottom', 'w').write('b')\nresult = os.getuid()",
        &[("W", lit(w)), ("N", DEEP.to_string())],
    );
    let r = s.exec(&code);
    let deepest: PathBuf = std::iter::once(w.to_path_buf())
        .chain(std::iter::repeat_n(PathBuf::from("d"), DEEP))
        .chain(std::iter::once(PathBuf::from("bottom")))
        .collect();
    // The control: during the run the bottom is the worker's.
    let during = owner(&deepest);
    let t = s.finish();
    assert_eq!(r.value(), &json!(DEEP_ID), "{r:?}: {}", t.stderr);
    assert_eq!(during, (DEEP_ID, DEEP_ID));
    let left: Vec<_> = tree(w)
        .into_iter()
        .filter(|p| owner(p) != (OWNER, OWNER))
        .collect();
    assert!(
        left.is_empty(),
        "{} paths are still not the owner's, from {}",
        left.len(),
        left[0].display()
    );
    assert!(!ledger(DEEP_ID).exists(), "{}", t.stderr);
}

/// A host folder bound (by the operator, on the same file system) inside
/// the workspace is another mount: not lent, as the module promises, even
/// though its device number is the workspace's.
#[test]
fn a_bind_mount_of_the_same_file_system_is_not_lent() {
    if !is_root() {
        println!("SKIP: needs root");
        return;
    }
    let (ws, _) = workspace("acl-bind");
    let w = ws.path();
    let host = world_dir("acl-bind-host");
    let secret = host.path().join("secret");
    std::fs::write(&secret, "secret\n").unwrap();
    chmod(&secret, 0o600);
    std::fs::create_dir(w.join("mnt")).unwrap();
    let mnt = w.join("mnt");
    let ok = std::process::Command::new("mount")
        .arg("--bind")
        .arg(host.path())
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("SKIP: cannot bind-mount here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    // The control: the bind is of the same file system (the device check
    // alone cannot tell it), and the secret is reachable through it.
    assert_eq!(
        std::fs::metadata(&mnt).unwrap().dev(),
        std::fs::metadata(w).unwrap().dev()
    );
    assert!(mnt.join("secret").exists());
    let Some(mut s) = launch(Some(w), BIND_ID) else {
        return;
    };
    let during = has_acl(&secret);
    let r = s.exec(&snippet(
        "try:\n    result = open(@S@).read()\nexcept OSError as e:\n    result = type(e).__name__",
        &[("S", lit(mnt.join("secret")))],
    ));
    let t = s.finish();
    assert_ne!(r.value(), &json!("secret\n"), "{}", t.stderr);
    assert!(!during, "the bound host file got the worker's entry");
    assert!(!has_acl(&secret));
    assert_eq!((owner(&secret), mode(&secret)), ((0, 0), 0o600));
}

const MOVED_ID: u32 = 3_400_000_004;

/// The workspace's folder moved away during the run, another put at its
/// path (by whoever may write its parent): the giving back at unload is of
/// the folder that was lent, wherever it is now, not of the path.
#[test]
fn a_workspace_moved_during_the_run_is_still_given_back() {
    let base = world_dir("acl-moved");
    let real = base.path().join("real");
    std::fs::create_dir(&real).unwrap();
    chmod(&real, 0o755);
    let (ws, _) = workspace("acl-moved-ws");
    let w = real.join("ws");
    std::fs::rename(ws.path(), &w).unwrap();
    std::mem::forget(ws);
    let Some(mut s) = launch(Some(&w), MOVED_ID) else {
        return;
    };
    let r = s.exec("result = os.getuid()");
    let moved = base.path().join("moved");
    std::fs::rename(&real, &moved).unwrap();
    std::fs::create_dir_all(&w).unwrap();
    chmod(&w, 0o755);
    // The control: the lent folder, at its new path, carries the entry.
    let during = has_acl(&moved.join("ws/src"));
    let t = s.finish();
    assert_eq!(r.value(), &json!(MOVED_ID), "{r:?}: {}", t.stderr);
    assert!(during);
    for p in tree(&moved.join("ws")) {
        assert!(
            !has_acl(&p),
            "an ACL is left on {}: {}",
            p.display(),
            t.stderr
        );
    }
    assert!(!ledger(MOVED_ID).exists());
}

const ODD_ID: u32 = 3_400_000_005;

/// What a worker may leave that could trip the giving back: a folder and a
/// file it made unreadable (mode 0), a name that is not UTF-8 and holds a
/// terminal escape, a second name of its own file, a symbolic link loop, a
/// hard link from its scratch folder; and what it may not make at all: a
/// FIFO, an ACL of its own (naming another uid, which the giving back would
/// leave). After the unload everything is the owner's, without an ACL.
#[test]
fn odd_entries_the_worker_leaves_are_given_back() {
    let (ws, _) = workspace("acl-odd");
    let w = ws.path();
    let Some(mut s) = launch(Some(w), ODD_ID) else {
        return;
    };
    let code = snippet(
        r#"import os, tempfile
w = @W@
out = {}
def tryit(name, f):
    try:
        f(); out[name] = 'done'
    except OSError as e:
        out[name] = type(e).__name__
os.makedirs(w + '/locked/in')
open(w + '/locked/in/f', 'w').write('l')
tryit('chmod 0', lambda: [os.chmod(w + p, 0) for p in ('/locked/in/f', '/locked/in', '/locked')])
odd = os.fsencode(w) + b'/\xff\n\x1b[31m'
open(odd, 'w').write('o')
open(w + '/own', 'w').write('o')
tryit('link own', lambda: os.link(w + '/own', w + '/own2'))
tryit('loop', lambda: (os.symlink('loop2', w + '/loop1'), os.symlink('loop1', w + '/loop2')))
t = tempfile.mkstemp()[1]
tryit('link from scratch', lambda: os.link(t, w + '/fromtmp'))
tryit('mkfifo', lambda: os.mkfifo(w + '/fifo'))
acl = bytes([2,0,0,0, 1,0,6,0,255,255,255,255, 2,0,7,0,0x40,0x42,0x0f,0, 4,0,4,0,255,255,255,255, 0x10,0,7,0,255,255,255,255, 0x20,0,4,0,255,255,255,255])
tryit('setxattr acl', lambda: os.setxattr(w + '/own', 'system.posix_acl_access', acl))
result = out"#,
        &[("W", lit(w))],
    );
    let r = s.exec(&code);
    // The control: during the run the unreadable folder is the worker's.
    let during = owner(&w.join("locked"));
    let t = s.finish();
    let Reply::Value(out) = r else {
        panic!("no answer: {r:?}: {}", t.stderr);
    };
    assert_eq!(during, (ODD_ID, ODD_ID), "{out}");
    assert_eq!(out["link own"], "done", "{out}");
    assert_ne!(out["mkfifo"], "done", "{out}");
    assert_ne!(out["setxattr acl"], "done", "{out}");
    for p in tree(w) {
        assert!(!has_acl(&p), "an ACL is left on {}: {out}", p.display());
        assert_eq!(owner(&p), (OWNER, OWNER), "{}: {out}", p.display());
    }
    assert!(!t.stderr.contains('\x1b'), "{}", t.stderr);
    assert!(!ledger(ODD_ID).exists(), "{}", t.stderr);
    println!("odd entries: {out}");
}

const SURVIVOR_ID: u32 = 3_400_000_006;

/// A process of the worker's that outlives its killed runner (no pid
/// namespace here) and keeps making folders in the lent workspace: the next
/// runner kills what is left in the dead runner's cgroup before it leases
/// the uid, so the sweep of the ledger does not race it, and nothing stays
/// the uid's.
#[test]
fn a_process_that_outlives_a_killed_runner_is_gone_before_the_sweep() {
    let (ws, _) = workspace("acl-survivor");
    let w = ws.path();
    if launch(None, SURVIVOR_ID).is_none() {
        return;
    }
    let start = |ws: Option<&Path>| {
        let caps: &[&str] = if ws.is_some() {
            &["filesystem.write", "subprocess.run"]
        } else {
            &[]
        };
        let mut l = Launch::new(Who::Root, caps)
            .policy(json!({"mode": "strict", "worker_ids": {"first": SURVIVOR_ID, "count": 1}}))
            .python(Path::new(SYSTEM_PYTHON))
            .in_env(Env::DockerLike);
        if let Some(ws) = ws {
            l = l.workspace(ws);
        }
        l.start()
    };
    let marker = unique_sleep();
    let mut s = start(Some(w));
    let r = s.exec(&snippet(
        r#"import sys
loop = "import os, sys, time\ni = 0\nwhile True:\n    os.mkdir(sys.argv[1] + '/s%d' % i); i += 1; time.sleep(0.005)"
p = os.fork()
if p == 0:
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, '-c', loop, @W@, @M@])
    os._exit(0)
os.waitpid(p, 0)
import time
for _ in range(1000):
    if os.path.exists(@W@ + '/s1'):
        break
    time.sleep(0.01)
result = os.getuid()"#,
        &[("W", lit(w)), ("M", lit(&marker))],
    ));
    assert_eq!(r.value(), &json!(SURVIVOR_ID), "{r:?}");
    s.kill_runner();
    let survivors = || {
        let out = std::process::Command::new("pgrep")
            .arg("-f")
            .arg(&marker)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .collect::<Vec<_>>()
    };
    // The control: it survives the runner, making folders of the uid's.
    let alive = survivors();
    let made = tree(w)
        .into_iter()
        .filter(|p| owner(p).0 == SURVIVOR_ID)
        .count();
    assert!(made > 0, "the worker made nothing");
    if alive.is_empty() {
        // Another runner started meanwhile (a test beside this one) killed
        // what the dead runner's cgroup held: nothing left to race.
        println!("SKIP: the survivor was already killed by another runner");
        return;
    }
    let mut s = start(None);
    let r = s.exec("result = os.getuid()");
    let t = s.finish();
    // Killed, it may take a moment to be gone.
    let after = wait_no_procs(&marker, std::time::Duration::from_secs(3));
    for p in alive.iter().chain(&after) {
        signal(*p, nix::sys::signal::Signal::SIGKILL);
    }
    assert_eq!(r.value(), &json!(SURVIVOR_ID), "{r:?}: {}", t.stderr);
    assert!(after.is_empty(), "still running: {after:?}");
    for p in tree(w) {
        assert!(!has_acl(&p), "an ACL is left on {}", p.display());
        assert_eq!(owner(&p), (OWNER, OWNER), "{}", p.display());
    }
    assert!(!ledger(SURVIVOR_ID).exists(), "{}", t.stderr);
}

const SWAPPED_ID: u32 = 3_400_000_007;

/// After a runner was killed, the workspace's path is made a symbolic link
/// (by whoever may write its parent): the next lease of the uid must not be
/// refused for good (a uid of the range out of use at every lease), the
/// ledger's folder is just not there any more.
#[test]
fn a_ledger_whose_path_is_now_a_link_does_not_keep_its_uid_out_of_use() {
    let base = world_dir("acl-swapped");
    let (ws, _) = workspace("acl-swapped-ws");
    let w = base.path().join("ws");
    std::fs::rename(ws.path(), &w).unwrap();
    std::mem::forget(ws);
    let Some(mut s) = launch(Some(&w), SWAPPED_ID) else {
        return;
    };
    let r = s.exec("result = os.getuid()");
    assert_eq!(r.value(), &json!(SWAPPED_ID), "{r:?}");
    let t = s.kill_runner();
    // The control: the killed runner left its ledger.
    assert!(ledger(SWAPPED_ID).exists(), "{}", t.stderr);
    let moved = base.path().join("moved");
    std::fs::rename(&w, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &w).unwrap();
    let Some(mut s) = launch(None, SWAPPED_ID) else {
        return;
    };
    let r = s.exec("result = os.getuid()");
    let t = s.finish();
    assert_eq!(r.value(), &json!(SWAPPED_ID), "{r:?}: {}", t.stderr);
    assert!(!ledger(SWAPPED_ID).exists(), "{}", t.stderr);
}

const HALFWAY_ID: u32 = 3_400_000_008;

/// A lending that fails midway (an immutable file among many: its ACL cannot
/// be written) fails the launch and gives back what it had lent already
/// (the workspace folder itself at least: it is lent before what it holds).
#[test]
fn a_lending_that_fails_midway_gives_back_what_it_lent() {
    let (ws, _) = workspace("acl-halfway");
    let w = ws.path();
    for i in 0..20 {
        std::fs::write(w.join(format!("f{i:02}")), "f\n").unwrap();
    }
    let stuck = w.join("sub/stuck");
    std::fs::write(&stuck, "s\n").unwrap();
    let immutable = |on: bool| {
        std::process::Command::new("chattr")
            .arg(if on { "+i" } else { "-i" })
            .arg(&stuck)
            .status()
            .is_ok_and(|s| s.success())
    };
    if launch(None, HALFWAY_ID).is_none() {
        return;
    }
    if !immutable(true) {
        println!("SKIP: chattr +i does not work here");
        return;
    }
    let mut s = launch(Some(w), HALFWAY_ID).unwrap();
    let r = s.exec("result = os.getuid()");
    let t = s.finish();
    immutable(false);
    // The control: the lending was tried, and failed on that file, which
    // the message names.
    assert!(
        !matches!(r, Reply::Value(_))
            && t.stderr.contains("cannot lend the workspace")
            && t.stderr.contains("sub/stuck: "),
        "{r:?}: {}",
        t.stderr
    );
    for p in tree(w) {
        assert!(
            !has_acl(&p),
            "an ACL is left on {}: {}",
            p.display(),
            t.stderr
        );
    }
    assert!(!ledger(HALFWAY_ID).exists(), "{}", t.stderr);
}

const DAMAGED_ID: u32 = 3_400_000_009;

/// A ledger that does not parse (another version's, a damaged file: this
/// runner writes its ledgers whole and renames them into place) is not
/// discarded: its lending may still be out there, so its uid stays out of
/// use, and the launch names the ledger and what to do. The control: with
/// the ledger removed, the same launch starts as that uid; a temporary
/// ledger a crash left before its rename is removed by the sweep.
#[test]
fn a_ledger_that_does_not_parse_keeps_its_uid_out_of_use_and_says_so() {
    if launch(None, DAMAGED_ID).is_none() {
        return;
    }
    let damaged = ledger(DAMAGED_ID);
    std::fs::write(&damaged, "{\"workspace\": [47, 116").unwrap();
    let tmp = damaged.with_extension("acl.tmp");
    std::fs::write(&tmp, "{").unwrap();
    let mut s = launch(None, DAMAGED_ID).unwrap();
    let r = s.exec("result = os.getuid()");
    let t = s.finish();
    assert!(!matches!(r, Reply::Value(_)), "{r:?}: {}", t.stderr);
    assert!(
        t.stderr.contains("the ledger cannot be read") && t.stderr.contains("setfacl -R -x"),
        "{}",
        t.stderr
    );
    assert!(
        damaged.exists(),
        "the damaged ledger is kept for the operator"
    );
    assert!(!tmp.exists(), "the temporary ledger is removed");
    std::fs::remove_file(&damaged).unwrap();
    let mut s = launch(None, DAMAGED_ID).unwrap();
    let r = s.exec("result = os.getuid()");
    let t = s.finish();
    assert_eq!(r.value(), &json!(DAMAGED_ID), "{r:?}: {}", t.stderr);
}
