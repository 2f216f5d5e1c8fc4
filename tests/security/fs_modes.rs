//! Files: the modes and times of host files (chmod, utime), and set-id
//! files left where the worker may write.

use super::*;
use serde_json::Value;

/// GAP: chmod(2) of a host file by path. Landlock (ABI <= 7) cannot restrict
/// chmod/chown/utime, and seccomp allows them; a root worker runs as uid 0 and
/// owns every root file.
#[test]
fn fs_chmod_host_file() {
    confined(FULL, |who| {
        let host = world_dir("host");
        let f = host.join("secret");
        owned_file(who, &f, "secret", 0o600);
        let code = snippet(
            // A raw chmod: the worker shim's audit hook would refuse the set-id bits first.
            r#"result = ename(sys_call(90, @F@.encode(), 0o4777))"#,
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
    confined(FULL, |who| {
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

/// Every way a worker could leave a setuid or setgid file where it may
/// write (the workspace and its scratch folder): chmod, fchmod, fchmodat,
/// fchmodat2, creating with the bits (open, creat, openat2), mkdir with
/// S_ISGID, and shutil.copy2 of a setuid-root binary (root's copy would be a
/// setuid-root program anyone can run). Judged from outside: the mode of each
/// file as the test sees it. Controls: outside the sandbox, and in it with
/// the seccomp layer off, the bits are set.
#[test]
fn attack_fs_setuid_setgid_files() {
    confined(FULL, |who| {
        // Raw system calls where the worker shim's audit hook would explain
        // (and so refuse) the call first: what is judged is the kernel.
        let code = r#"
import shutil
def made(name, mode=0o644):
    p = os.path.join(d, name); open(p, "w").close(); os.chmod(p, mode); return p
def closed(fd):
    if fd >= 0: os.close(fd)
    return ename(fd)
def openat2(p):
    how = ctypes.create_string_buffer(_struct.pack("=QQQ", os.O_CREAT | os.O_WRONLY, 0o4755, 0))
    return closed(sys_call(437, -100, p.encode(), ctypes.addressof(how), 24))
def fchmod(p):
    fd = os.open(p, os.O_RDONLY)
    try: return ename(sys_call(91, fd, 0o4755))
    finally: os.close(fd)
def explained():
    try: os.chmod(made("explained"), 0o4755)
    except PermissionError as e: return str(e)
def run(base):
    global d
    d = base
    p = lambda n: os.path.join(d, n).encode()
    return {
        "chmod": ename(sys_call(90, made("chmod").encode(), 0o4755)),
        "chmod_gid": ename(sys_call(90, made("chmod_gid").encode(), 0o2755)),
        "fchmod": fchmod(made("fchmod")),
        "fchmodat": ename(sys_call(268, -100, made("fchmodat").encode(), 0o6755)),
        "fchmodat2": ename(sys_call(452, -100, made("fchmodat2").encode(), 0o4755, 0)),
        "open": attempt(lambda: os.close(os.open(os.path.join(d, "open"), os.O_CREAT | os.O_WRONLY, 0o4755))),
        "open_raw": closed(sys_call(2, p("open_raw"), os.O_CREAT | os.O_WRONLY, 0o4755)),
        "creat": closed(sys_call(85, p("creat"), 0o4755)),
        "openat2": openat2(os.path.join(d, "openat2")),
        "mkdir": attempt(lambda: os.mkdir(os.path.join(d, "mkdir"), 0o2755)),
        "copy2": attempt(lambda: shutil.copy2("/usr/bin/passwd", os.path.join(d, "copy2"))),
        "explained": explained(),
        # File capabilities are set-id by other means: v2, effective, cap_net_raw permitted.
        "fcaps": attempt(lambda: os.setxattr(made("fcaps"), "security.capability",
                                             _struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0))),
    }
result = {"workspace": run(@W@), "scratch": run(os.environ["TMPDIR"])}
"#;
        const NAMES: &[&str] = &[
            "chmod",
            "chmod_gid",
            "fchmod",
            "fchmodat",
            "fchmodat2",
            "open",
            "open_raw",
            "creat",
            "openat2",
            "mkdir",
            "copy2",
        ];
        // The files that carry a set-id bit, as the test sees them.
        let set_id = |d: &Path| -> Vec<String> {
            NAMES
                .iter()
                .filter(|n| {
                    std::fs::symlink_metadata(d.join(n))
                        .is_ok_and(|m| m.permissions().mode() & 0o6000 != 0)
                })
                .map(|n| n.to_string())
                .collect()
        };
        let scratch_of = |s: &Session| s.scratch().expect("scratch");
        let fcaps = |d: &Path| {
            std::process::Command::new(common::python())
                .args([
                    "-c",
                    "import os, sys; os.getxattr(sys.argv[1], 'security.capability')",
                ])
                .arg(d.join("fcaps"))
                .output()
                .is_ok_and(|o| o.status.success())
        };
        // Control 1: outside the sandbox every way works (openat2 and
        // fchmodat2 where this kernel has them).
        let outside = owned_dir(who, "suid-plain");
        let v = plain(
            who,
            &code.replace("@W@", &lit(outside.path())).replace(
                "\"scratch\": run(os.environ[\"TMPDIR\"])",
                "\"scratch\": {}",
            ),
        );
        let got = set_id(outside.path());
        // (mkdir drops S_ISGID itself.)
        assert!(
            got.len() >= 10,
            "control: outside the sandbox the bits are set: {got:?} {v}"
        );
        // Only root may set file capabilities outside (CAP_SETFCAP).
        assert!(
            who != Who::Root || fcaps(outside.path()),
            "control: root sets file capabilities outside the sandbox: {v}"
        );
        let attack = |policy: Value| {
            let ws = owned_dir(who, "suid-ws");
            let mut s = Launch::new(who, &["filesystem.write"])
                .workspace(ws.path())
                .policy(policy)
                .start();
            let r = s.exec(&code.replace("@W@", &lit(ws.path())));
            let scratch = scratch_of(&s);
            let mut found = (set_id(ws.path()), set_id(&scratch));
            for (list, d) in [(&mut found.0, ws.path()), (&mut found.1, scratch.as_path())] {
                if fcaps(d) {
                    list.push("fcaps".into());
                }
            }
            s.finish();
            (r, found)
        };
        // Control 2: the sandbox without its seccomp layer lets the system
        // calls through (shutil.copy2 is explained, so refused, by the
        // worker's audit hook even then).
        let (r, (ws, scratch)) =
            attack(json!({"mode": "best-effort", "layers": {"seccomp": false}}));
        assert!(
            ws.len() >= 9 && scratch.len() >= 9,
            "control: without seccomp: {ws:?} {scratch:?} {r:?}"
        );
        let (r, (ws, scratch)) = attack(json!({}));
        assert!(
            ws.is_empty() && scratch.is_empty(),
            "set-id files left by the worker: workspace {ws:?}, scratch {scratch:?}: {r:?}"
        );
        // Ordinary modes still work (shutil.copy2 of a plain file is a control
        // elsewhere), and the worker is told why.
        assert_eq!(r.value()["workspace"]["mkdir"], json!("ok: None"), "{r:?}");
        assert_eq!(r.value()["workspace"]["chmod"], json!("EPERM"), "{r:?}");
        assert!(
            r.value()["workspace"]["explained"]
                .as_str()
                .is_some_and(|e| e.contains("no worker may make a setuid or setgid file")),
            "{r:?}"
        );
    });
}

/// A file the worker may write that already is setuid: a write through
/// write(2) or ftruncate clears the bits (the kernel's file_remove_privs: no
/// worker has CAP_FSETID). Judged from outside: the mode after the worker's
/// writes. (A write through a shared mapping keeps them: see docs/security.md.)
#[test]
fn attack_fs_write_existing_setuid_file() {
    confined(FULL, |who| {
        let ws = owned_dir(who, "suid-old");
        for n in ["w", "t"] {
            owned_file(who, &ws.join(n), "#!/bin/sh\n", 0o644);
            chmod(&ws.join(n), 0o6755);
        }
        let code = snippet(
            r#"
fd = os.open(os.path.join(@W@, "w"), os.O_WRONLY); os.write(fd, b"exit 0\n"); os.close(fd)
fd = os.open(os.path.join(@W@, "t"), os.O_WRONLY); os.ftruncate(fd, 0); os.close(fd)
result = "written"
"#,
            &[("W", lit(ws.path()))],
        );
        let (r, _) = run_once(
            Launch::new(who, &["filesystem.write"]).workspace(ws.path()),
            &code,
        );
        assert_eq!(r.text(), "\"written\"", "{r:?}");
        for n in ["w", "t"] {
            let mode = std::fs::metadata(ws.join(n)).unwrap().permissions().mode() & 0o7777;
            assert_eq!(
                mode & 0o4000,
                0,
                "{n}: still setuid after the worker's write ({mode:o})"
            );
        }
    });
}
