//! The layer matrix: a representative set of attacks, each run with every
//! layer on and then with one layer switched off at a time through the
//! operator policy (`layers.X = false`, best-effort mode), as root and as
//! uid 65534. Prints a markdown table (stopped / NOT stopped) and writes it to
//! target/layer-matrix.md. Slow-ish and informative rather than pass/fail:
//!
//!     cargo test --test layer_matrix -- --ignored --nocapture
//!
//! Every attack is bounded (a fork bomb stops at 100 processes, a memory bomb
//! at eight times its limit, twice the RLIMIT_AS of the fallback, a busy loop
//! after 4 s of CPU) so that it stays harmless when the layer that should
//! stop it is off.

mod common;

use std::time::Duration;

use common::sandbox::*;
use serde_json::{json, Value};

/// One configuration of the matrix.
#[derive(Clone, Copy)]
struct Config {
    name: &'static str,
    off: Option<&'static str>,
}

const CONFIGS: [Config; 5] = [
    Config {
        name: "all layers",
        off: None,
    },
    Config {
        name: "no landlock",
        off: Some("landlock"),
    },
    Config {
        name: "no seccomp",
        off: Some("seccomp"),
    },
    Config {
        name: "no namespaces",
        off: Some("namespaces"),
    },
    Config {
        name: "no limits",
        off: Some("limits"),
    },
];

struct Ctx {
    who: Who,
    cfg: Config,
}

impl Ctx {
    /// A launch with this configuration's layers and `extra` operator settings.
    fn launch(&self, caps: &[&str], extra: Value) -> Launch {
        let mut layers =
            json!({"landlock": true, "seccomp": true, "namespaces": true, "limits": true});
        if let Some(off) = self.cfg.off {
            layers[off] = json!(false);
        }
        let mut policy = json!({"mode": "best-effort", "layers": layers});
        for (k, v) in extra.as_object().into_iter().flatten() {
            policy[k] = v.clone();
        }
        Launch::new(self.who, caps).policy(policy)
    }
}

/// true: the attack was stopped (judged from outside).
type Attack = fn(&Ctx) -> bool;

fn read_host_file(c: &Ctx) -> bool {
    let host = world_dir("host");
    let secret = token("SECRET");
    owned_file(c.who, &host.join("s"), &secret, 0o644);
    let code = snippet("result = open(@P@).read()", &[("P", lit(host.join("s")))]);
    let (_, t) = run_once(c.launch(&[], json!({})), &code);
    !t.contains(&secret)
}

fn write_outside(c: &Ctx) -> bool {
    let d = open_dir("out");
    let code = snippet(
        r#"open(@P@, "w").write("x"); result = 1"#,
        &[("P", lit(d.join("canary")))],
    );
    run_once(c.launch(&[], json!({})), &code);
    !d.join("canary").exists()
}

fn hardlink_into_workspace(c: &Ctx) -> bool {
    let host = open_dir("host");
    owned_file(c.who, &host.join("s"), "secret", 0o600);
    let ws = owned_dir(c.who, "ws");
    let code = snippet(
        "os.link(@S@, @D@); result = 1",
        &[("S", lit(host.join("s"))), ("D", lit(ws.join("stolen")))],
    );
    run_once(
        c.launch(&["filesystem.write"], json!({}))
            .workspace(ws.path()),
        &code,
    );
    !ws.join("stolen").exists()
}

fn runner_environ(c: &Ctx) -> bool {
    let secret = token("ENV");
    let mut s = c
        .launch(&[], json!({}))
        .env("NODUS_SEC_ENV", &secret)
        .start();
    s.exec("result = 1");
    let code = snippet(
        r#"result = open("/proc/@R@/environ", "rb").read().decode(errors="replace")"#,
        &[("R", s.runner_pid().to_string())],
    );
    s.exec(&code);
    !s.finish().contains(&secret)
}

fn ptrace_victim(c: &Ctx) -> bool {
    let v = Victim::sleep(c.who);
    let mut s = c.launch(&[], json!({})).start();
    s.exec(&format!(
        "result = ename(sys_call(101, 0x4206, {}, 0, 0))",
        v.pid
    ));
    let traced = status_field(v.pid, "TracerPid").as_deref() != Some("0");
    s.finish();
    !traced && v.alive()
}

fn kill_victim(c: &Ctx) -> bool {
    let v = Victim::sleep(c.who);
    run_once(
        c.launch(&[], json!({})),
        &format!(
            "import signal; os.kill({}, signal.SIGKILL); result = 1",
            v.pid
        ),
    );
    std::thread::sleep(Duration::from_millis(100));
    v.alive()
}

fn fork_without_subprocess(c: &Ctx) -> bool {
    let ws = owned_dir(c.who, "ws");
    let code = snippet(
        r#"
p = raw_fork()   # around the shim's audit hook: the kernel decides
if p == 0:
    open(@C@, "w").write("x"); os._exit(0)
if p > 0:
    os.waitpid(p, 0)
result = 1
"#,
        &[("C", lit(ws.join("canary")))],
    );
    run_once(
        c.launch(&["filesystem.write"], json!({}))
            .workspace(ws.path()),
        &code,
    );
    !ws.join("canary").exists()
}

fn exec_without_subprocess(c: &Ctx) -> bool {
    let ws = owned_dir(c.who, "ws");
    let code = snippet(
        r#"result = raw_exec("/bin/sh", ["sh", "-c", "echo x > " + @C@])"#,
        &[("C", lit(ws.join("canary")))],
    );
    run_once(
        c.launch(&["filesystem.write"], json!({}))
            .workspace(ws.path()),
        &code,
    );
    !ws.join("canary").exists()
}

fn tcp_without_capability(c: &Ctx) -> bool {
    let trap = Trap::tcp();
    let code = format!("result = raw_connect(2, 1, ('127.0.0.1', {}))", trap.port);
    run_once(c.launch(&[], json!({})), &code);
    std::thread::sleep(Duration::from_millis(100));
    trap.hits() == 0
}

fn tcp_port_not_allowed(c: &Ctx) -> bool {
    let allowed = Trap::tcp();
    let other = Trap::tcp();
    let code = format!("import socket\nsocket.create_connection(('127.0.0.1', {}), timeout=2).sendall(b'x')\nresult = 1", other.port);
    run_once(
        c.launch(&["network.outbound"], json!({"tcp_ports": [allowed.port]})),
        &code,
    );
    std::thread::sleep(Duration::from_millis(100));
    other.hits() == 0
}

fn unix_socket_by_path(c: &Ctx) -> bool {
    let d = world_dir("sock");
    let trap = Trap::unix_stream(&d.join("docker.sock"));
    let code = snippet("result = raw_connect(1, 1, @S@)", &[("S", lit(&trap.name))]);
    run_once(c.launch(&["network.outbound"], json!({})), &code);
    std::thread::sleep(Duration::from_millis(100));
    trap.hits() == 0
}

fn unix_dgram_via_socketpair(c: &Ctx) -> bool {
    let d = world_dir("sock");
    let trap = Trap::unix_dgram(&d.join("log.sock"));
    let code = snippet("import socket\na, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\na.sendto(b'x', @S@)\nresult = 1", &[("S", lit(&trap.name))]);
    run_once(c.launch(&[], json!({})), &code);
    std::thread::sleep(Duration::from_millis(100));
    trap.hits() == 0
}

fn abstract_socket(c: &Ctx) -> bool {
    let name = token("nodus-matrix-abs");
    let trap = Trap::abstract_dgram(&name);
    let code = snippet("import socket\na, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\na.sendto(b'x', '\\0' + @N@)\nresult = 1", &[("N", lit(&name))]);
    run_once(c.launch(&["network.outbound"], json!({})), &code);
    std::thread::sleep(Duration::from_millis(100));
    trap.hits() == 0
}

fn unshare_namespaces(c: &Ctx) -> bool {
    let mut s = c.launch(&[], json!({})).start();
    s.exec("result = 1");
    let Some(w) = s.worker_pid() else { return true };
    let before = (ns(w, "user"), ns(w, "mnt"));
    s.exec("result = ename(sys_call(272, 0x10000000 | 0x20000))");
    let after = (ns(w, "user"), ns(w, "mnt"));
    s.finish();
    before == after
}

fn tiocsti(c: &Ctx) -> bool {
    let mut pty = Pty::open();
    let code = snippet(
        r#"
import fcntl, termios
try:
    os.setsid()   # a session leader opening a tty makes it its controlling terminal
except OSError:
    pass
try:
    fd = os.open(@T@, os.O_RDWR)
except OSError:
    fd = os.open(@T@, os.O_RDONLY)
fcntl.ioctl(fd, termios.TIOCSTI, b"Z")
result = 1
"#,
        &[("T", lit(&pty.slave_path))],
    );
    run_once(
        c.launch(&[], json!({"read_only_paths": [pty.slave_path.clone()]})),
        &code,
    );
    !pty.drain(Duration::from_millis(200)).contains('Z')
}

fn io_uring(c: &Ctx) -> bool {
    let code = "import ctypes\np = (ctypes.c_uint8 * 120)()\nresult = ename(sys_call(425, 4, ctypes.addressof(p)))";
    let (r, _) = run_once(c.launch(&[], json!({})), code);
    !matches!(r, Reply::Value(Value::Number(_)))
}

fn inherited_descriptor(c: &Ctx) -> bool {
    let d = world_dir("fd");
    let secret = token("FD");
    owned_file(Who::Root, &d.join("s"), &secret, 0o644);
    let l = c
        .launch(&[], json!({}))
        .shell_prefix(&format!("exec 7<{}", d.join("s").display()));
    let (_, t) = run_once(l, "result = os.read(7, 100)");
    !t.contains(&secret)
}

fn chmod_host_file(c: &Ctx) -> bool {
    let d = world_dir("host");
    owned_file(c.who, &d.join("f"), "x", 0o600);
    run_once(
        c.launch(&[], json!({})),
        &snippet(
            "os.chmod(@F@, 0o666); result = 1",
            &[("F", lit(d.join("f")))],
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(d.join("f")).unwrap().permissions().mode() & 0o777 == 0o600
}

fn fork_bomb(c: &Ctx) -> bool {
    let (r, _) = run_once(
        c.launch(&["subprocess.run"], json!({"limits": {"processes": 16}})),
        r#"
import time
n = 0
try:
    while n < 100:
        if os.fork() == 0:
            time.sleep(5); os._exit(0)
        n += 1
except OSError:
    pass
result = n
"#,
    );
    r.value().as_u64().unwrap_or(100) < 100
}

fn memory_bomb(c: &Ctx) -> bool {
    let (r, t) = run_once(
        c.launch(&[], json!({"limits": {"memory_bytes": 134217728u64}})),
        r#"
x = []
try:
    while len(x) < 64: x.append(bytearray(16 << 20))
except MemoryError:
    pass
result = len(x)
del x
"#,
    );
    // Stopped: MemoryError before 1 GiB (RLIMIT_AS, 4 × 128 MiB of address
    // space without a memory cgroup), or killed by the kernel at the memory
    // cgroup's limit (the worker is gone, the runner says why).
    match &r {
        Reply::Gone | Reply::Failed(_) => {
            t.contains("limits.memory_bytes") || format!("{r:?}").contains("limits.memory_bytes")
        }
        _ => r.value().as_u64().unwrap_or(64) < 64,
    }
}

fn busy_loop(c: &Ctx) -> bool {
    let (r, _) = run_once(
        c.launch(&[], json!({"limits": {"cpu_seconds": 1}})).timeout(30.0),
        "import time\nend = time.process_time() + 4\nwhile time.process_time() < end: pass\nresult = 'finished'",
    );
    matches!(r, Reply::Gone)
}

fn daemon_outlives_unload(c: &Ctx) -> bool {
    let marker = unique_sleep();
    let code = snippet(
        r#"
p = os.fork()
if p == 0:
    if os.fork() == 0:
        try: os.setsid()
        except OSError: pass
        os.execv("/bin/sleep", ["sleep", @M@])
    os._exit(0)
os.waitpid(p, 0)
result = 1
"#,
        &[("M", lit(&marker))],
    );
    run_once(c.launch(&["subprocess.run"], json!({})), &code);
    let left = wait_no_procs(&marker, Duration::from_secs(3));
    for p in &left {
        signal(*p, nix::sys::signal::Signal::SIGKILL);
    }
    left.is_empty()
}

fn survive_runner_sigkill(c: &Ctx) -> bool {
    let marker = unique_sleep();
    let mut s = c.launch(&["subprocess.run"], json!({})).start();
    s.exec(&snippet(
        "import subprocess, threading, time\nsubprocess.Popen(['sleep', @M@])\nthreading.Thread(target=time.sleep, args=(20,)).start()\nresult = 1",
        &[("M", lit(&marker))],
    ));
    let procs = s.processes();
    let scratch = s.scratch();
    let cgroups = s.cgroups();
    s.kill_runner();
    let mut survivors: Vec<i32> = wait_no_procs(&marker, Duration::from_secs(3));
    survivors.extend(
        procs
            .iter()
            .copied()
            .filter(|p| !common::wait_gone(*p, Duration::from_secs(2))),
    );
    for p in &survivors {
        signal(*p, nix::sys::signal::Signal::SIGKILL);
    }
    // A SIGKILLed runner leaves them (see docs/security.md).
    if let Some(d) = scratch {
        let _ = std::fs::remove_dir_all(d);
    }
    for c in cgroups {
        let _ = std::fs::remove_dir(c);
    }
    survivors.is_empty()
}

fn tcp_fast_open(c: &Ctx) -> bool {
    let (allowed, other) = (Trap::tcp(), Trap::tcp());
    let code = snippet(
        "import socket\ns = socket.socket()\ntry: s.sendto(b'x', 0x20000000, ('127.0.0.1', @O@))\nexcept OSError: pass\nresult = 1",
        &[("O", other.port.to_string())],
    );
    run_once(
        c.launch(&["network.outbound"], json!({"tcp_ports": [allowed.port]})),
        &code,
    );
    other.hits_after(Duration::from_millis(300)) == 0
}

/// A raw bind (the worker shim explains a Python-level one first).
const RAW_BIND: &str = "def raw_bind(s, family, addr):\n    sa = ctypes.create_string_buffer(_sockaddr(family, addr))\n    return sys_call(49, s.fileno(), ctypes.addressof(sa), len(sa.raw) - 1)\n";

fn udp_bind(c: &Ctx) -> bool {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap()
        .port();
    let code = format!("import socket, sys\n{RAW_BIND}s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); sys.keep = s\nresult = raw_bind(s, 2, ('127.0.0.1', {port}))");
    let mut s = c.launch(&["network.outbound"], json!({})).start();
    s.exec(&code);
    let free = std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
    s.finish();
    free
}

fn abstract_bind(c: &Ctx) -> bool {
    use std::os::linux::net::SocketAddrExt;
    let name = token("nodus-matrix-squat");
    let code = format!(
        "import socket, sys\n{RAW_BIND}a, b = socket.socketpair(); sys.keep = (a, b)\nresult = raw_bind(a, 1, '\\0' + {})",
        lit(&name)
    );
    let mut s = c.launch(&["network.outbound"], json!({})).start();
    s.exec(&code);
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let free = std::os::unix::net::UnixListener::bind_addr(&addr).is_ok();
    s.finish();
    free
}

fn setuid_in_workspace(c: &Ctx) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let ws = world_dir("ws");
    chown(ws.path(), c.who.uid());
    let code = snippet(
        "p = os.path.join(@W@, 'f'); open(p, 'w').close()\nresult = sys_call(90, p.encode(), 0o4755)",
        &[("W", lit(ws.path()))],
    );
    run_once(
        c.launch(&["filesystem.write"], json!({}))
            .workspace(ws.path()),
        &code,
    );
    std::fs::metadata(ws.join("f")).is_ok_and(|m| m.permissions().mode() & 0o6000 == 0)
}

fn lease_on_workspace_file(c: &Ctx) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let ws = world_dir("ws");
    std::fs::write(ws.join("f"), "x").unwrap();
    chmod(&ws.join("f"), 0o644);
    chown(&ws.join("f"), c.who.uid());
    let code = snippet(
        "import sys\nfd = os.open(os.path.join(@W@, 'f'), os.O_RDONLY); sys.keep = fd\nresult = sys_call(72, fd, 1024, 0)",
        &[("W", lit(ws.path()))],
    );
    let mut s = c
        .launch(&["filesystem.read"], json!({}))
        .workspace(ws.path())
        .start();
    s.exec(&code);
    let open = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(ws.join("f"))
        .is_ok();
    s.finish();
    open
}

fn sync_flag_on_workspace_file(c: &Ctx) -> bool {
    let ws = owned_dir(c.who, "ws");
    owned_file(c.who, &ws.join("f"), "x", 0o644);
    let code = snippet(
        "fd = os.open(os.path.join(@W@, 'f'), os.O_RDONLY)\nflags = ctypes.c_long(0); sys_call(16, fd, 0x80086601, ctypes.addressof(flags))\nflags.value |= 0x8\nresult = sys_call(16, fd, 0x40086602, ctypes.addressof(flags))",
        &[("W", lit(ws.path()))],
    );
    run_once(
        c.launch(&["filesystem.write"], json!({}))
            .workspace(ws.path()),
        &code,
    );
    let out = std::process::Command::new("lsattr")
        .arg(ws.join("f"))
        .output()
        .expect("lsattr");
    let flags = String::from_utf8_lossy(&out.stdout);
    !flags.split_whitespace().next().unwrap_or("").contains('S')
}

fn whiteout_in_workspace(c: &Ctx) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let ws = owned_dir(c.who, "ws");
    let code = snippet(
        "p = os.path.join(@W@, 'f'); open(p, 'w').close()\nresult = sys_call(316, -100, p.encode(), -100, (p + '2').encode(), 4)",
        &[("W", lit(ws.path()))],
    );
    run_once(
        c.launch(&["filesystem.write"], json!({}))
            .workspace(ws.path()),
        &code,
    );
    !ws.join("f")
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_char_device())
}

const ATTACKS: &[(&str, Attack)] = &[
    ("read a host file outside the grants", read_host_file),
    ("write a file outside the scratch folder", write_outside),
    (
        "hard-link a host file into the workspace",
        hardlink_into_workspace,
    ),
    ("read the runner's /proc/PID/environ", runner_environ),
    ("ptrace (PTRACE_SEIZE) a host process", ptrace_victim),
    ("SIGKILL a host process", kill_victim),
    ("fork without subprocess.run", fork_without_subprocess),
    (
        "exec /bin/sh without subprocess.run",
        exec_without_subprocess,
    ),
    (
        "TCP to loopback without network.outbound",
        tcp_without_capability,
    ),
    ("TCP to a port outside tcp_ports", tcp_port_not_allowed),
    ("TCP Fast Open to a port outside tcp_ports", tcp_fast_open),
    ("bind a UDP port (with network.outbound)", udp_bind),
    (
        "bind an abstract name on a socketpair socket (with network.outbound)",
        abstract_bind,
    ),
    (
        "unix stream socket by path (docker.sock)",
        unix_socket_by_path,
    ),
    (
        "unix datagram socket by path via socketpair",
        unix_dgram_via_socketpair,
    ),
    (
        "abstract unix socket (with network.outbound)",
        abstract_socket,
    ),
    ("unshare user+mount namespaces", unshare_namespaces),
    ("TIOCSTI on a granted pty", tiocsti),
    ("io_uring_setup", io_uring),
    (
        "read a descriptor inherited without O_CLOEXEC",
        inherited_descriptor,
    ),
    ("chmod a host file", chmod_host_file),
    ("setuid bit on a workspace file", setuid_in_workspace),
    (
        "lease on a workspace file holds the host's open",
        lease_on_workspace_file,
    ),
    (
        "sync flag (chattr +S) on a workspace file",
        sync_flag_on_workspace_file,
    ),
    (
        "whiteout device in the workspace (renameat2)",
        whiteout_in_workspace,
    ),
    ("fork bomb (limit 16, bounded at 100)", fork_bomb),
    ("memory bomb (limit 128 MiB, bounded at 1 GiB)", memory_bomb),
    ("busy loop (cpu_seconds 1, bounded at 4 s)", busy_loop),
    ("setsid'd daemon outlives unload", daemon_outlives_unload),
    (
        "processes outlive a SIGKILLed runner",
        survive_runner_sigkill,
    ),
];

fn matrix_for(who: Who) -> String {
    let mut rows = Vec::new();
    for (name, attack) in ATTACKS {
        let mut cells = Vec::new();
        for cfg in CONFIGS {
            let stopped = attack(&Ctx { who, cfg });
            cells.push(if stopped {
                "stopped"
            } else {
                "**NOT stopped**"
            });
        }
        rows.push(format!("| {name} | {} |", cells.join(" | ")));
    }
    let header = format!(
        "| attack ({}) | {} |\n|---|{}",
        who.label(),
        CONFIGS
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(CONFIGS.len())
    );
    format!("{header}\n{}\n", rows.join("\n"))
}

#[test]
#[ignore = "slow, informative: cargo test --test layer_matrix -- --ignored --nocapture"]
fn layer_matrix() {
    let whos: Vec<Who> = Who::BOTH
        .into_iter()
        .filter(|w| w.available() && require(*w, FULL))
        .collect();
    if whos.is_empty() {
        return;
    }
    let tables: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = whos
            .iter()
            .map(|w| s.spawn(move || matrix_for(*w)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("matrix thread"))
            .collect()
    });
    let probe = probe(Who::Root);
    let text = format!(
        "# Layer matrix\n\nKernel {}, Landlock ABI {}. Each cell: the attack run with every layer on, then with one layer switched off through the operator policy (best-effort mode), judged from outside the worker.\n\n{}",
        probe["kernel"].as_str().unwrap_or("?"),
        probe["landlock_abi"],
        tables.join("\n")
    );
    println!("{text}");
    let out = common::root().join("target/layer-matrix.md");
    std::fs::write(&out, &text).expect("write target/layer-matrix.md");
    // Sanity: with all layers on, only the known gaps get through.
    for t in &tables {
        for line in t.lines().skip(2) {
            let first = line.split('|').nth(2).unwrap_or("");
            if first.contains("NOT") {
                assert!(
                    line.contains("socketpair") || line.contains("chmod"),
                    "an attack gets through with every layer on: {line}"
                );
            }
        }
    }
}
