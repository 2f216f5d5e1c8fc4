//! The kernel surface: system calls the seccomp allowlist refuses, their arguments, and the kernel interfaces reachable through them.

use super::*;
use serde_json::Value;
use std::os::unix::fs::OpenOptionsExt;

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
    confined(FULL, |who| {
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
    confined(FULL, |who| {
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
    confined(FULL, |who| {
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
    confined(FULL, |who| {
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
    confined(FULL, |who| {
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
    confined(FULL, |who| {
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
    confined(FULL, |who| {
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
    confined(FULL, |who| {
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
    confined(FULL, |who| {
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
    confined(FULL, |who| {
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
    confined(FULL, |who| {
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
    confined(FULL, |who| {
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let probe = r#"
result = {"setuid": ename(sys_call(105, os.getuid())), "setgroups": ename(sys_call(116, 0, 0)), "capset": ename(sys_call(126, 0, 0)),
          "sethostname": ename(sys_call(170, 0, 100)), "syslog": ename(sys_call(103, 10, 0, 0)), "iopl": ename(sys_call(172, 0)),
          "ioperm": ename(sys_call(173, 0, 0, 0)), "swapon": ename(sys_call(167, 0, 0)), "clock_settime": ename(sys_call(227, 0, 0)),
          "settimeofday": ename(sys_call(164, 0, 0)), "acct": ename(sys_call(163, b"/nonexistent-nodus-sec"))}
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
    confined(FULL, |who| {
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

/// Nothing a worker does blocks or slows the host's own access to a file it
/// may read: a lease (F_SETLEASE) would make the host's open for writing
/// wait up to `lease-break-time` (45 s) and a non-blocking one fail with
/// EWOULDBLOCK; a directory notification (F_NOTIFY) reports the host's
/// activity in a folder, as inotify would. Advisory locks (flock, POSIX and
/// OFD locks) stay allowed: they bind only processes that ask for the same
/// lock, never the host's open, read or write (mandatory locking is gone
/// from Linux since 5.15). Judged from outside: the host's non-blocking open
/// for writing and its read, while the worker holds what it got. Control: with
/// the seccomp layer off the lease is taken and the host's open fails.
#[test]
fn attack_kernel_block_host_file_access() {
    confined(FULL, |who| {
        let attack = |policy: Value| {
            let ws = owned_dir(who, "lease-ws");
            owned_file(who, &ws.join("data"), "host data", 0o644);
            let code = snippet(
                r#"
import fcntl, signal, sys
keep = sys.__dict__.setdefault("nodus_keep", [])
seen = sys.__dict__.setdefault("nodus_seen", [])
# fcntl as a raw system call: the worker shim's audit hook explains (refuses) these first.
def lease():
    fd = os.open(os.path.join(@W@, "data"), os.O_RDONLY); keep.append(fd)
    return ename(sys_call(72, fd, 1024, fcntl.F_RDLCK))   # F_SETLEASE
def notify():
    signal.signal(signal.SIGUSR1, lambda *a: seen.append(1))
    fd = os.open(@W@, os.O_RDONLY); keep.append(fd)
    fcntl.fcntl(fd, 10, signal.SIGUSR1)   # F_SETSIG: not SIGIO, which a lease break sends
    return ename(sys_call(72, fd, 1026, fcntl.DN_CREATE | fcntl.DN_MULTISHOT))   # F_NOTIFY
def explained():
    try: fcntl.fcntl(os.open(os.path.join(@W@, "data"), os.O_RDONLY), fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except PermissionError as e: return str(e)
def locks():
    fd = os.open(os.path.join(@W@, "data"), os.O_RDONLY); keep.append(fd)
    fcntl.flock(fd, fcntl.LOCK_EX)
    fd2 = os.open(os.path.join(@W@, "data"), os.O_RDONLY); keep.append(fd2)
    fcntl.lockf(fd2, fcntl.LOCK_SH)
    return "locked"
result = {"lease": attempt(lease), "notify": attempt(notify), "locks": attempt(locks), "explained": explained()}
"#,
                &[("W", lit(ws.path()))],
            );
            let mut s = Launch::new(who, &["filesystem.read"])
                .workspace(ws.path())
                .policy(policy)
                .start();
            let r = s.exec(&code);
            // The host's own access, while the worker holds its descriptors.
            let open_for_write = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(ws.join("data"))
                .map(|_| ())
                .map_err(|e| e.to_string());
            let read = std::fs::read_to_string(ws.join("data")).unwrap_or_default();
            std::fs::write(ws.join("created-by-host"), "x").unwrap();
            std::thread::sleep(ms(200));
            let seen = s.exec("result = len(sys.nodus_seen)");
            s.finish();
            (r, open_for_write, read, seen.text())
        };
        let (r, open, _, seen) =
            attack(json!({"mode": "best-effort", "layers": {"seccomp": false}}));
        assert!(
            open.is_err(),
            "control: without seccomp the worker's lease holds the host's open: {r:?}"
        );
        assert_ne!(
            seen, "0",
            "control: without seccomp F_NOTIFY reports the host's file: {r:?}"
        );
        let (r, open, read, seen) = attack(json!({}));
        assert_eq!(
            open,
            Ok(()),
            "the host's open for writing was held by the worker: {r:?}"
        );
        assert_eq!(read, "host data", "{r:?}");
        assert_eq!(
            seen, "0",
            "the worker was told of the host's new file: {r:?}"
        );
        assert_eq!(r.field("lease"), "ok: 'EPERM'", "{r:?}");
        assert_eq!(r.field("notify"), "ok: 'EPERM'", "{r:?}");
        assert!(
            r.field("explained").contains("other processes' access"),
            "{r:?}"
        );
        assert_eq!(
            r.field("locks"),
            "ok: 'locked'",
            "advisory locks are allowed: {r:?}"
        );
    });
}

/// The page cache is the host's too: POSIX_FADV_DONTNEED and MADV_PAGEOUT on
/// a file the worker may only read would push it out, and every host read of
/// it would go to the disk again. Judged from outside: `fincore` (the pages
/// of the file in memory) after the worker's advice. Control: with the
/// seccomp layer off, the file leaves the cache.
#[test]
fn attack_kernel_evict_host_page_cache() {
    confined(FULL, |who| {
        if std::process::Command::new("fincore")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIP: fincore (util-linux) missing");
            return;
        }
        let resident = |p: &Path| -> u64 {
            let out = std::process::Command::new("fincore")
                .args(["--raw", "--noheadings", "--output", "PAGES"])
                .arg(p)
                .output()
                .expect("fincore");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0)
        };
        let attack = |policy: Value| {
            let ws = world_dir("cache-ws");
            let mut pages = Vec::new();
            for n in ["fadvise", "pageout"] {
                let f = ws.join(n);
                let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
                std::fs::write(&f, &data).unwrap();
                std::fs::File::open(&f).unwrap().sync_all().unwrap();
                let _ = std::fs::read(&f).unwrap();
                chmod(&f, 0o644);
                pages.push(resident(&f));
            }
            assert!(
                pages.iter().all(|p| *p > 900),
                "the test's files are not cached: {pages:?}"
            );
            let code = snippet(
                r#"
import mmap
def fadvise():
    fd = os.open(os.path.join(@W@, "fadvise"), os.O_RDONLY)
    try: return os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally: os.close(fd)
def pageout():
    with open(os.path.join(@W@, "pageout"), "rb") as f:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        sum(m[i] for i in range(0, len(m), 4096))
        return m.madvise(21)   # MADV_PAGEOUT
result = {"fadvise": attempt(fadvise), "pageout": attempt(pageout)}
"#,
                &[("W", lit(ws.path()))],
            );
            let (r, _) = run_once(
                Launch::new(who, &["filesystem.read"])
                    .workspace(ws.path())
                    .policy(policy),
                &code,
            );
            let after: Vec<u64> = ["fadvise", "pageout"]
                .iter()
                .map(|n| resident(&ws.join(n)))
                .collect();
            (r, after)
        };
        let (r, after) = attack(json!({"mode": "best-effort", "layers": {"seccomp": false}}));
        assert!(
            after[0] < 100,
            "control: without seccomp POSIX_FADV_DONTNEED empties the cache: {after:?} {r:?}"
        );
        if who == Who::Root {
            // MADV_PAGEOUT of a file needs its owner (or write access): root's worker owns it.
            assert!(
                after[1] < 100,
                "control: without seccomp MADV_PAGEOUT: {after:?} {r:?}"
            );
        }
        let (r, after) = attack(json!({}));
        assert!(
            after.iter().all(|p| *p > 900),
            "the worker pushed the host's file out of the page cache: {after:?} pages left: {r:?}"
        );
        assert_eq!(r.field("fadvise"), "EPERM", "{r:?}");
    });
}

/// A file's attribute flags (chattr) are the host's too, and Landlock does not
/// see ioctl on regular files: a worker that owns a workspace file (a root
/// worker owns every root file) could make every host write to it
/// synchronous (`FS_SYNC_FL`), every change in the folder synchronous
/// (`FS_DIRSYNC_FL` on the workspace itself), or keep it out of `dump`
/// backups (`FS_NODUMP_FL`), through a read-only descriptor, with
/// `filesystem.read` alone. Judged from outside with `lsattr`. Controls: the
/// same snippet outside the sandbox, and in it with the seccomp layer off,
/// sets the flags.
#[test]
fn attack_kernel_file_attribute_flags() {
    const CODE: &str = r#"
import ctypes
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS = 0x80086601, 0x40086602
FS_SYNC_FL, FS_DIRSYNC_FL, FS_NODUMP_FL = 0x8, 0x10000, 0x40
def setflags(path, add, directory=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        flags = ctypes.c_long(0)
        r = sys_call(16, fd, FS_IOC_GETFLAGS, ctypes.addressof(flags))
        if r < 0:
            return "get:" + ename(r)
        flags.value |= add
        return ename(sys_call(16, fd, FS_IOC_SETFLAGS, ctypes.addressof(flags)))
    finally:
        os.close(fd)
def fsxattr(path):
    # struct fsxattr: the same flags as FS_XFLAG_SYNC (0x20) through FS_IOC_FSSETXATTR.
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = ctypes.create_string_buffer(28)
        r = sys_call(16, fd, 0x801c581f, ctypes.addressof(buf))
        if r < 0:
            return "get:" + ename(r)
        x = int.from_bytes(buf.raw[:4], "little") | 0x20
        buf[:4] = x.to_bytes(4, "little")
        return ename(sys_call(16, fd, 0x401c5820, ctypes.addressof(buf)))
    finally:
        os.close(fd)
def explained():
    # The worker shim's audit hook (only under the runner) names the refusal.
    if "NODUS_EXTENSION_CAPABILITIES" not in os.environ:
        return None
    import fcntl
    try:
        fcntl.ioctl(os.open(@W@, os.O_RDONLY), FS_IOC_SETFLAGS, bytes(8))
    except PermissionError as e:
        return str(e)
result = {"sync": setflags(os.path.join(@W@, "data"), FS_SYNC_FL | FS_NODUMP_FL),
          "dirsync": setflags(@W@, FS_DIRSYNC_FL, True),
          "fsxattr": fsxattr(os.path.join(@W@, "other")), "explained": explained()}
"#;
    if std::process::Command::new("lsattr")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("SKIP: lsattr (e2fsprogs) missing");
        return;
    }
    // The flag letters lsattr shows for a path.
    let flags = |p: &Path| -> String {
        let out = std::process::Command::new("lsattr")
            .arg("-d")
            .arg(p)
            .output()
            .expect("lsattr");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    confined(FULL, |who| {
        let attack = |caps: &[&str], policy: Option<Value>| {
            let ws = owned_dir(who, "attr-ws");
            owned_file(who, &ws.join("data"), "host data", 0o644);
            owned_file(who, &ws.join("other"), "host data", 0o644);
            let before = [flags(&ws.join("data")), flags(ws.path())];
            let code = snippet(CODE, &[("W", lit(ws.path()))]);
            let r = match policy {
                None => Reply::Value(plain(who, &code)),
                Some(p) => run_once(Launch::new(who, caps).workspace(ws.path()).policy(p), &code).0,
            };
            let after = [
                flags(&ws.join("data")),
                flags(ws.path()),
                flags(&ws.join("other")),
            ];
            (r, before, after)
        };
        let (r, before, after) = attack(&[], None);
        if r.field("sync").starts_with("get:") || r.field("sync") == "ENOTTY" {
            eprintln!("SKIP: this file system has no attribute flags: {r:?}");
            return;
        }
        assert!(
            !before[0].contains('S') && !before[1].contains('D'),
            "{before:?}"
        );
        assert!(
            after[0].contains('S') && after[0].contains('d') && after[1].contains('D'),
            "control: outside the sandbox the flags are set: {after:?} {r:?}"
        );
        // With filesystem.read the workspace is also a read-only mount
        // (EROFS): the control switches the namespaces off as well, and the
        // attack runs with every layer on and with seccomp alone. Without a
        // mount namespace nothing idmaps the workspace, so a root launch's
        // worker uid (taken when the interpreter is readable by others, as
        // /usr/bin/python3 is) would not own the files and be refused for
        // that (EPERM) in the control and in the seccomp-alone arm alike:
        // that arm runs as uid 0 (`worker_ids: false`), whatever the
        // interpreter's place.
        for (caps, layers_off, layers_on, ids) in [
            (
                &["filesystem.write"][..],
                json!({"seccomp": false}),
                json!({}),
                json!(true),
            ),
            (
                &["filesystem.read"][..],
                json!({"seccomp": false, "namespaces": false}),
                json!({"namespaces": false}),
                json!(false),
            ),
        ] {
            let off = json!({"mode": "best-effort", "layers": layers_off, "worker_ids": ids});
            let (r, _, after) = attack(caps, Some(off));
            assert!(
                after[0].contains('S') && after[1].contains('D'),
                "control ({caps:?}): with the seccomp layer off the flags are set: {after:?} {r:?}"
            );
            let on = json!({"mode": "best-effort", "layers": layers_on, "worker_ids": ids});
            let (r, _, after) = attack(caps, Some(on));
            assert!(
                !after[0].contains('S') && !after[1].contains('D'),
                "{caps:?}: seccomp alone does not stop the attribute flags: {after:?} {r:?}"
            );
            // Refused, not unrun: a worker that never started changes no flag either.
            assert_eq!(r.field("sync"), "EPERM", "{caps:?}: {after:?} {r:?}");
            let (r, before, after) = attack(caps, Some(json!({})));
            assert_eq!(
                [&after[0], &after[1]],
                [&before[0], &before[1]],
                "{caps:?}: the worker changed the attribute flags of the host's files: {r:?}"
            );
            assert!(
                !after[2].contains('S'),
                "{caps:?}: FS_IOC_FSSETXATTR set the sync flag: {after:?} {r:?}"
            );
            assert_eq!(
                (r.field("sync"), r.field("dirsync"), r.field("fsxattr")),
                ("EPERM".into(), "EPERM".into(), "EPERM".into()),
                "{caps:?}: {r:?}"
            );
            assert!(
                r.field("explained").contains("a file's attributes"),
                "{caps:?}: {r:?}"
            );
        }
    });
}
