//! The fork server (`ext-runner serve`, `--server`, `HostOptions::server`):
//! workers through it answer as cold ones, the socket is its owner's alone,
//! a client's policy never applies, and a server that is gone is a prompt
//! SandboxError. (The security suite runs through it with
//! `NODUS_TEST_SERVER=1`.)

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ext_runner, failcall, python, TempDir};

struct Server {
    child: Child,
    socket: PathBuf,
    dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(extra: &[&str]) -> Server {
    serve_via(Command::new(ext_runner()), extra, false)
}

/// `cmd serve --socket … --python … extra…`, where `cmd` is ext-runner or a
/// wrapper ending in it; its stderr in `serve.log` of its folder when
/// `logged` (read with `Server::log`), inherited otherwise.
fn serve_via(mut cmd: Command, extra: &[&str], logged: bool) -> Server {
    let dir = TempDir::new("server");
    let socket = dir.join("fork/s.sock");
    if logged {
        cmd.stderr(std::fs::File::create(dir.join("serve.log")).unwrap());
    }
    let child = cmd
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--python")
        .arg(python())
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .expect("ext-runner serve");
    let server = Server { child, socket, dir };
    let end = Instant::now() + Duration::from_secs(20);
    while !server.socket.exists() {
        assert!(Instant::now() < end, "the server did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    server
}

impl Server {
    /// What a `serve_via(…, true)` server wrote on its stderr so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }
}

/// `ext-runner run DIR --server SOCKET` by `cmd` (the runner, maybe as
/// another user), its stdin and stdout piped, its stderr dropped.
fn warm_run(mut cmd: Command, dir: &Path, socket: &Path) -> Child {
    cmd.arg("run")
        .arg(dir)
        .arg("--server")
        .arg(socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ext-runner run --server")
}

fn invoke(socket: &Path, dir: &Path, tool: &str, args: &str) -> std::process::Output {
    Command::new(ext_runner())
        .arg("invoke")
        .arg(dir)
        .arg(tool)
        .arg(args)
        .arg("--server")
        .arg(socket)
        .output()
        .expect("ext-runner invoke")
}

#[test]
fn a_warm_worker_answers_as_a_cold_one() {
    let s = serve(&[]);
    let hello = common::root().join("examples/hello");
    for _ in 0..2 {
        let out = invoke(&s.socket, &hello, "example.greet", r#"{"name": "Ada"}"#);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "\"Hello, Ada!\"\n");
    }
    // The socket is its owner's alone.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.socket), 0o600);
    assert_eq!(mode(s.socket.parent().unwrap()), 0o700);
}

#[test]
fn the_worker_is_confined_and_its_secrets_are_its_own() {
    let s = serve(&[]);
    let ext = common::ext(
        "warm",
        &["tool.invoke"],
        &["warm.run"],
        r#"import os, random, sys
from nodus_extension.worker import register_tool, run_loop
def run(args):
    import ctypes, threading
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    try:
        open("/etc/passwd").read(1); passwd = "read"
    except OSError as e:
        passwd = type(e).__name__
    return {"seccomp": str(prctl(21, 0, 0, 0, 0)), "nnp": str(prctl(39, 0, 0, 0, 0)),
            "threads": str(threading.active_count()), "random": random.random(),
            "argv": sys.argv, "passwd": passwd, "pid": os.getpid()}
register_tool("warm.run", run)
run_loop()
"#,
    );
    let get = || -> serde_json::Value {
        let out = invoke(&s.socket, ext.path(), "warm.run", "{}");
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (a, b) = (get(), get());
    assert_eq!(a["seccomp"], "2", "{a}");
    assert_eq!(a["nnp"], "1", "{a}");
    assert_eq!(a["threads"], "1", "{a}");
    assert_ne!(
        a["random"], b["random"],
        "two workers drew the same random numbers"
    );
    assert!(
        a["argv"][0].as_str().unwrap().ends_with("extension.py"),
        "{a}"
    );
    // Control: /etc/passwd exists and is readable outside the sandbox.
    assert!(std::fs::read_to_string("/etc/passwd").is_ok());
}

#[test]
fn a_client_policy_is_refused_and_a_gone_server_is_a_prompt_sandbox_error() {
    let hello = common::root().join("examples/hello");
    let dir = TempDir::new("noserver");
    std::fs::write(dir.join("policy.json"), r#"{"tcp_ports": [443]}"#).unwrap();
    let out = Command::new(ext_runner())
        .args(["invoke"])
        .arg(&hello)
        .args([
            "example.greet",
            "{}",
            "--server",
            "/nonexistent/s.sock",
            "--policy",
        ])
        .arg(dir.join("policy.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let t = Instant::now();
    let out = invoke(&dir.join("s.sock"), &hello, "example.greet", "{}");
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no fork server at"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10));
    // A server killed under a running worker: the client hears at once.
    let mut s = serve(&[]);
    let ext = common::ext(
        "sleep",
        &["tool.invoke"],
        &["sleep.run"],
        "import time\nfrom nodus_extension.worker import register_tool, run_loop\nregister_tool('sleep.run', lambda a: time.sleep(60))\nrun_loop()\n",
    );
    let client = Command::new(ext_runner())
        .arg("invoke")
        .arg(ext.path())
        .args(["sleep.run", "{}", "--server"])
        .arg(&s.socket)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let _ = s.child.kill();
    let out = client.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(15), "the client waited");
    assert_eq!(out.status.code(), Some(6), "{out:?}");
}

#[test]
fn only_the_owner_may_connect() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("SKIP: root missing (to connect as another uid)");
        return;
    }
    let s = serve(&[]);
    // Control: the owner gets an answer.
    let hello = common::root().join("examples/hello");
    assert!(
        invoke(&s.socket, &hello, "example.greet", r#"{"name": "Ada"}"#)
            .status
            .success()
    );
    // The client run as uid 65534.
    let invoke_as_nobody = || {
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(common::sandbox::runner(common::sandbox::Who::Nobody))
            .arg("invoke")
            .arg(&hello)
            .args(["example.greet", r#"{"name": "Ada"}"#, "--server"])
            .arg(&s.socket)
            .output()
    };
    // Another uid cannot even reach the socket (0700 folder)...
    let out = invoke_as_nobody();
    let Ok(out) = out else {
        eprintln!("SKIP: setpriv missing");
        return;
    };
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    // ...and one that could is refused by its credentials.
    std::fs::set_permissions(
        s.socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&s.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = invoke_as_nobody().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("may not use this fork server"), "{out:?}");
}

/// A fork server without a mount namespace for its workers (Docker's
/// default profile, or the operator's choice): its zygote cannot serve a
/// seccomp listener, so its workers' policy keeps chmod refused everywhere
/// (as before the metadata supervisor) instead of the server refusing the
/// worker. Judged from outside: the host file's mode.
#[test]
fn without_a_mount_namespace_a_warm_worker_starts_and_host_metadata_stays() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: needs root (a uid-0 worker owns the root-owned host file)");
        return;
    }
    let ext = common::ext(
        "meta",
        &["tool.invoke"],
        &["meta.chmod"],
        r#"import os
from nodus_extension.worker import register_tool, run_loop
def chmod(args):
    try:
        os.chmod(args["path"], 0o600); return "changed"
    except OSError as e:
        return type(e).__name__
register_tool("meta.chmod", chmod)
run_loop()
"#,
    );
    let host = TempDir::new("server-host");
    let file = host.join("victim");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // uid 0 without capabilities owns the root-owned file: only seccomp
    // stands between it and chmod.
    let run = |layers: serde_json::Value| {
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let policy = host.join("policy.json");
        let p = serde_json::json!({"mode": "best-effort", "worker_ids": false, "layers": layers});
        std::fs::write(&policy, p.to_string()).unwrap();
        let s = serve(&["--policy", policy.to_str().unwrap()]);
        let args = serde_json::json!({"path": file}).to_string();
        let out = invoke(&s.socket, ext.path(), "meta.chmod", &args);
        assert!(
            out.status.success(),
            "the server started no worker: {out:?}"
        );
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            mode(&file),
        )
    };
    // Control: with seccomp off as well, the check sees the change.
    let (said, after) = run(serde_json::json!({"namespaces": false, "seccomp": false}));
    assert_eq!((said.as_str(), after), ("\"changed\"", 0o600));
    let (said, after) = run(serde_json::json!({"namespaces": false}));
    assert_eq!((said.as_str(), after), ("\"PermissionError\"", 0o644));
}

/// The zygote executes the worker shim's package once and a fork uses it
/// only where its own import would find the shim: the module a warm worker
/// gets is the one a cold worker imports (its file, and boot.py's wrapping
/// of `register_tool`), and a package of the extension's own named
/// `nodus_extension` still wins, warm as cold (the control: where the
/// extension has none, the shim's is used).
#[test]
fn a_warm_worker_imports_the_worker_module_a_cold_one_would() {
    let s = serve(&[]);
    let source = r#"import sys
pre = "nodus_extension.worker" in sys.modules
from nodus_extension.worker import register_tool, run_loop
import nodus_extension.worker as w
def run(args):
    return {"file": w.__file__, "wrapped": getattr(register_tool, "_nodus_wrapped", False),
            "own": getattr(w, "OWN", False)}
register_tool("shim.run", run)
run_loop()
"#;
    let plain = common::ext("shim", &["tool.invoke"], &["shim.run"], source);
    let own = common::ext("shim", &["tool.invoke"], &["shim.run"], source);
    let pkg = own.path().join("nodus_extension");
    std::fs::create_dir(&pkg).unwrap();
    std::fs::write(pkg.join("__init__.py"), "").unwrap();
    let shim = common::root().join("python/shim/nodus_extension/worker.py");
    let text = std::fs::read_to_string(shim).unwrap() + "\nOWN = True\n";
    std::fs::write(pkg.join("worker.py"), text).unwrap();
    let get = |dir: &Path, warm: bool| -> serde_json::Value {
        let mut cmd = Command::new(ext_runner());
        cmd.arg("invoke").arg(dir).arg("shim.run").arg("{}");
        if warm {
            cmd.arg("--server").arg(&s.socket);
        } else {
            cmd.arg("--python").arg(python());
        }
        let out = cmd.output().expect("ext-runner invoke");
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    for warm in [false, true] {
        let a = get(plain.path(), warm);
        assert_eq!(a["own"], false, "warm {warm}: {a}");
        assert_eq!(a["wrapped"], true, "warm {warm}: {a}");
        assert!(
            a["file"]
                .as_str()
                .unwrap()
                .ends_with(".nodus/nodus_extension/worker.py"),
            "warm {warm}: {a}"
        );
        let b = get(own.path(), warm);
        assert_eq!(b["own"], true, "warm {warm}: {b}");
        assert_eq!(b["wrapped"], true, "warm {warm}: {b}");
    }
    assert_eq!(
        get(plain.path(), true)["file"],
        get(plain.path(), false)["file"]
    );
}

/// One question to a `sec.run` worker driven by `ext-runner run`: its
/// answer, or null once the runner's stdout ends (the worker gone).
fn ask(
    stdin: &mut std::process::ChildStdin,
    stdout: &mut impl std::io::BufRead,
    id: &str,
    code: &str,
) -> serde_json::Value {
    use std::io::Write;
    let line =
        serde_json::json!({"id": id, "op": "invoke", "name": "sec.run", "args": {"code": code}});
    if writeln!(stdin, "{line}")
        .and_then(|_| stdin.flush())
        .is_err()
    {
        return serde_json::Value::Null;
    }
    let mut buf = String::new();
    loop {
        buf.clear();
        match stdout.read_line(&mut buf) {
            Ok(0) | Err(_) => return serde_json::Value::Null,
            Ok(_) => {}
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&buf) {
            if v["id"] == id {
                return v;
            }
        }
    }
}

/// The soft RLIMIT_NPROC of `pid`, as /proc/PID/limits shows it.
fn nproc_soft(pid: i32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max processes"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_default()
        .to_string()
}

/// A zygote outlives a start it cannot make. The fork really fails: the
/// zygote, a non-root user's (uid 65534, which RLIMIT_NPROC binds), gets a
/// soft RLIMIT_NPROC of 1 from outside (`prlimit --pid`, as its own user),
/// so its os.fork() meets EAGAIN, as at a user's task limit. Judged from
/// outside: that client gets a SandboxError naming EAGAIN and the task
/// limit (not "the zygote ended", not a hang), the zygote is the same
/// process, a worker it had already started still answers, and once the
/// limit is back a new start succeeds. Controls: a plain interpreter under
/// the same limit cannot fork; and a zygote that dies (what an uncaught
/// EAGAIN did) takes that running worker with it, which the same check sees.
#[test]
fn a_fork_the_zygote_cannot_make_fails_that_start_alone() {
    use common::procfs;
    use common::sandbox::{chmod, runner, sec_ext, world_dir, Who};
    use std::io::BufReader;
    if !nix::unistd::getuid().is_root() {
        eprintln!("SKIP: root missing (to run the server as uid 65534, which RLIMIT_NPROC binds)");
        return;
    }
    if !Who::Nobody.available() {
        return;
    }
    let nobody = Who::Nobody;
    let base = world_dir("zygote-fork");
    chmod(base.path(), 0o1777); // the server makes its own 0700 folder in it
    let socket = base.join("fork/s.sock");
    let log = base.join("server.log");
    let child = nobody
        .command(runner(nobody))
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--python")
        .arg(nobody.python())
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("ext-runner serve");
    let server_pid = child.id() as i32; // setpriv execs the runner
    let end = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < end, "the server did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = Server {
        child,
        socket,
        dir: base,
    };
    let server_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let ext = sec_ext(&[]);
    let invoke = |code: &str| {
        nobody
            .command(runner(nobody))
            .arg("invoke")
            .arg(ext.path())
            .arg("sec.run")
            .arg(serde_json::json!({ "code": code }).to_string())
            .arg("--server")
            .arg(&s.socket)
            .stdin(Stdio::null())
            .output()
            .expect("ext-runner invoke")
    };
    // Worker A, warm, kept running.
    let mut a = warm_run(nobody.command(runner(nobody)), ext.path(), &s.socket);
    let mut a_in = a.stdin.take().unwrap();
    let mut a_out = BufReader::new(a.stdout.take().unwrap());
    let first = ask(&mut a_in, &mut a_out, "a1", "result = os.getpid()");
    assert_eq!(first["ok"], true, "worker A: {first} {}", server_log());
    let a_pid = first["result"]["result"].clone();
    let zygotes = || -> Vec<i32> {
        procfs::all()
            .into_iter()
            .filter(|p| p.ppid == server_pid && p.live())
            .map(|p| p.pid)
            .collect()
    };
    let found = zygotes();
    assert_eq!(found.len(), 1, "one zygote: {found:?}");
    let z = found[0];
    let a_procs: Vec<i32> = procfs::descendants(z).iter().map(|p| p.pid).collect();
    assert!(!a_procs.is_empty(), "worker A is the zygote's");
    let soft = nproc_soft(z);
    let set_limit = |to: &str| {
        let st = nobody
            .command("prlimit")
            .arg("--pid")
            .arg(z.to_string())
            .arg(format!("--nproc={to}:"))
            .status();
        match st {
            Ok(st) => assert!(st.success(), "prlimit {to}: {st}"),
            Err(e) => panic!("prlimit (util-linux) missing: {e}"),
        }
        assert_eq!(nproc_soft(z), to, "the zygote's limit");
    };
    set_limit("1");
    // Control: under that limit a plain interpreter of that user cannot fork.
    let plain = nobody
        .command("prlimit")
        .arg("--nproc=1:")
        .arg(nobody.python())
        .args([
            "-c",
            "import errno, os\ntry:\n    pid = os.fork()\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\nelse:\n    os._exit(0) if pid == 0 else print('forked')",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout).trim(),
        "EAGAIN",
        "control: {plain:?}"
    );
    // The start the zygote cannot fork: a clear error for that client.
    let out = invoke("result = 1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{out:?} {}", server_log());
    assert!(
        err.contains("EAGAIN") && err.contains("task limit") && err.contains("SandboxError"),
        "{err}"
    );
    assert!(!err.contains("zygote ended"), "{err}");
    // The zygote served on: the same process, and worker A answers.
    assert_eq!(zygotes(), vec![z], "{}", server_log());
    let again = ask(&mut a_in, &mut a_out, "a2", "result = os.getpid()");
    assert_eq!(
        again["ok"], true,
        "worker A after the failed start: {again}"
    );
    assert_eq!(again["result"]["result"], a_pid, "the same worker A");
    // The limit back: the same zygote starts the next worker.
    set_limit(&soft);
    let out = invoke("result = 41 + 1");
    assert!(out.status.success(), "{out:?} {}", server_log());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("42"),
        "{out:?}"
    );
    assert_eq!(zygotes(), vec![z]);
    // Control: a zygote that dies takes worker A with it (its reaper's
    // parent-death signal), and the same check sees it.
    common::sandbox::signal(z, nix::sys::signal::Signal::SIGKILL);
    for p in a_procs {
        assert!(
            common::wait_gone(p, Duration::from_secs(30)),
            "worker A's process {p} outlived its zygote"
        );
    }
    let gone = ask(&mut a_in, &mut a_out, "a3", "result = 1");
    assert!(gone.is_null(), "worker A outlived its zygote: {gone}");
    let _ = a.kill();
    let _ = a.wait();
}

/// The zygote's loop survives what it cannot use: a message that is not
/// JSON, one that is not an object, an unknown op, a start whose request
/// is not an object or is incomplete, a kill without an id. Each start is
/// answered `failed` with a SandboxError, every descriptor that came with
/// a message is closed (the pipe's reader sees its end once the zygote has
/// answered a later message; control: a pipe whose writer is still open
/// reads as open), and the zygote still runs until the socket closes
/// (control: then it has ended, exit 0).
#[test]
fn the_zygote_survives_garbled_messages_and_closes_their_descriptors() {
    let lib = common::ext_runner().with_file_name("libnodus_extension.so");
    if !lib.is_file() {
        panic!(
            "{} missing: `cargo build` builds the cdylib the zygote loads",
            lib.display()
        );
    }
    let driver = r#"
import json, os, socket, subprocess, sys
src, lib = sys.argv[1], sys.argv[2]
ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
z = subprocess.Popen([sys.executable, "-s", "-B", "-c", open(src).read(), lib,
                      json.dumps({"preload": [], "env": {}})],
                     stdin=subprocess.PIPE, stdout=theirs.fileno())
theirs.close()
readers = []
def sent(msg, nfds):
    ws = []
    for _ in range(nfds):
        r, w = os.pipe()
        os.set_blocking(r, False)
        readers.append(r)
        ws.append(w)
    data = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
    if ws:
        socket.send_fds(ours, [data], ws)
    else:
        ours.send(data)
    for w in ws:
        os.close(w)
sent(b"not json {", 1)
sent(b"[1, 2]", 1)
sent({"op": "frobnicate", "id": 3}, 1)
sent({"op": "start", "id": 4, "request": 5}, 3)
sent({"op": "start", "id": 5, "request": {"dir": "/nonexistent"}}, 3)
sent({"op": "kill"}, 1)
sent({"op": "start", "id": 7, "request": {}}, 0)
answers = []
while not answers or answers[-1].get("id") != 7:
    data = ours.recv(1 << 16)
    if not data:
        break
    answers.append(json.loads(data))
def state(r):
    try:
        return "closed" if os.read(r, 1) == b"" else "data"
    except BlockingIOError:
        return "open"
cr, cw = os.pipe()
os.set_blocking(cr, False)
result = {"answers": answers, "pipes": [state(r) for r in readers], "control_pipe": state(cr),
          "alive": z.poll() is None}
ours.close()
result["exit"] = z.wait()
print(json.dumps(result))
"#;
    let out = Command::new(python())
        .args(["-c", driver])
        .arg(common::root().join("python/shim/zygote.py"))
        .arg(&lib)
        .stdin(Stdio::null())
        .output()
        .expect("python driver");
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let shown = format!("{v} {}", String::from_utf8_lossy(&out.stderr));
    let answers = v["answers"].as_array().expect("answers");
    let ids: Vec<_> = answers.iter().map(|a| a["id"].clone()).collect();
    assert_eq!(ids, [4, 5, 7], "{shown}");
    for a in answers {
        assert_eq!(a["op"], "failed", "{shown}");
        assert_eq!(a["error"]["class"], "SandboxError", "{shown}");
        assert!(
            !a["error"]["msg"].as_str().unwrap_or("").is_empty(),
            "{shown}"
        );
    }
    assert!(
        answers[1]["error"]["msg"]
            .as_str()
            .unwrap()
            .contains("bad start request"),
        "{shown}"
    );
    assert_eq!(v["pipes"].as_array().unwrap().len(), 10, "{shown}");
    assert!(
        v["pipes"].as_array().unwrap().iter().all(|p| p == "closed"),
        "a descriptor the zygote kept: {shown}"
    );
    assert_eq!(v["control_pipe"], "open", "control: {shown}");
    assert_eq!(v["alive"], true, "{shown}");
    assert_eq!(v["exit"], 0, "control: {shown}");
}

/// Under `-P` / `PYTHONSAFEPATH` (here from the operator policy's
/// environment, which reaches a cold worker's interpreter and the server's
/// zygote alike) a worker's `sys.path` is what `python -P extension.py`
/// would have plus the shim appended: the standard library's entries all
/// kept, the extension's folder not searched, and the shim still found.
/// Warm and cold alike: the zygote used to write the boot shim's folder
/// over `sys.path[0]` (the standard library's zip entry when nothing was
/// put first), and a cold `boot.py` took that entry for its own folder
/// (the shim not found, the zip moved to the end). Control: without the
/// variable the extension's folder comes first, warm and cold.
#[test]
fn under_safe_path_a_worker_keeps_the_standard_library_path_warm_and_cold() {
    let new_enough = Command::new(python())
        .args(["-c", "import sys; print(sys.version_info >= (3, 11))"])
        .output()
        .expect("python");
    if String::from_utf8_lossy(&new_enough.stdout).trim() != "True" {
        eprintln!("SKIP: Python 3.11 missing (PYTHONSAFEPATH is 3.11's)");
        return;
    }
    let ext = common::ext(
        "paths",
        &["tool.invoke"],
        &["paths.get"],
        r#"import sys
from nodus_extension.worker import register_tool, run_loop
import nodus_extension.worker as w
def get(args):
    return {"path": sys.path, "worker": w.__file__, "safe": bool(sys.flags.safe_path)}
register_tool("paths.get", get)
run_loop()
"#,
    );
    let dir = TempDir::new("safe-path");
    // What the interpreter itself puts on sys.path under -P, outside any sandbox.
    let bare = Command::new(python())
        .args([
            "-P",
            "-s",
            "-B",
            "-c",
            "import json, sys; print(json.dumps(sys.path))",
        ])
        .output()
        .expect("python -P");
    let bare: Vec<String> = serde_json::from_slice(&bare.stdout).expect("sys.path");
    for safe in [false, true] {
        let policy = dir.join(&format!("policy-{safe}.json"));
        let env = if safe {
            serde_json::json!({"set": {"PYTHONSAFEPATH": "1"}})
        } else {
            serde_json::json!({})
        };
        std::fs::write(
            &policy,
            serde_json::json!({ "environment": env }).to_string(),
        )
        .unwrap();
        let s = serve(&["--policy", policy.to_str().unwrap()]);
        let get = |warm: bool| -> serde_json::Value {
            let mut cmd = Command::new(ext_runner());
            cmd.arg("invoke").arg(ext.path()).arg("paths.get").arg("{}");
            if warm {
                cmd.arg("--server").arg(&s.socket);
            } else {
                cmd.arg("--python")
                    .arg(python())
                    .arg("--policy")
                    .arg(&policy);
            }
            let out = cmd.output().expect("ext-runner invoke");
            assert!(out.status.success(), "safe {safe}, warm {warm}: {out:?}");
            serde_json::from_slice(&out.stdout).unwrap()
        };
        let (cold, warm) = (get(false), get(true));
        assert_eq!(cold, warm, "safe {safe}: the same sys.path warm and cold");
        assert_eq!(cold["safe"], safe, "{cold}");
        let path: Vec<String> = serde_json::from_value(cold["path"].clone()).unwrap();
        let shim = path.last().expect("the shim appended").clone();
        assert!(shim.ends_with("/.nodus"), "{cold}");
        assert_eq!(
            cold["worker"].as_str().unwrap(),
            format!("{shim}/nodus_extension/worker.py"),
            "the shim's module: {cold}"
        );
        let folder = ext.path().to_str().unwrap().to_string();
        if safe {
            assert_eq!(
                path[..path.len() - 1],
                bare[..],
                "python -P's own sys.path, then the shim"
            );
            assert!(!path.contains(&folder), "{cold}");
        } else {
            // Control: the extension's folder first, as `python extension.py` has it.
            assert_eq!(path[0], folder, "{cold}");
            assert_eq!(path[1..path.len() - 1], bare[..], "{cold}");
        }
    }
}

/// The live workers of the extension in `dir` (by the command line a worker
/// shows, the cold one: `python … boot.py DIR/extension.py`), seen from outside.
fn workers_of(dir: &Path) -> Vec<i32> {
    let script = format!("{} ", dir.join("extension.py").display());
    common::procfs::all()
        .into_iter()
        .filter(|p| p.live() && format!("{} ", common::procfs::cmdline(p.pid)).contains(&script))
        .map(|p| p.pid)
        .collect()
}

/// Waits (at most 20 s) until a worker of the extension in `dir` waits on
/// its stdin: a spare that has started, booted and imported its module,
/// seen from outside (its `/proc/PID/wchan`, `pipe_read` or
/// `anon_pipe_read`), instead of a fixed sleep a loaded machine outlasts.
fn wait_for_spare(dir: &Path) -> bool {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        let waiting = workers_of(dir).iter().any(|p| {
            std::fs::read_to_string(format!("/proc/{p}/wchan"))
                .is_ok_and(|w| w.contains("pipe_read"))
        });
        if waiting {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn ext_with_schema(name: &str, schema: serde_json::Value) -> TempDir {
    let manifest = serde_json::json!({
        "name": name, "version": "0.1.0", "description": "integration test extension",
        "abi_version": "1", "capabilities": ["tool.invoke"],
        "surfaces": {"tools": [{"name": format!("{name}.run"), "description": "a test tool", "schema": schema}]},
    });
    common::write_ext(
        Some(&manifest.to_string()),
        Some(&format!(
            "from nodus_extension.worker import register_tool, run_loop\nregister_tool('{name}.run', lambda a: 'ran')\nrun_loop()\n"
        )),
    )
}

#[test]
fn a_client_whose_own_preparation_fails_after_asking_leaves_no_worker() {
    // A library host asks the server for its worker first and prepares its
    // side (the checks of folder, entry and workspace, the tool schemas)
    // meanwhile. A tool schema that is not
    // JSON Schema fails only on the client's side (the server does not
    // compile schemas): the load is still a ManifestError, and the worker the
    // server may have started for it does not stay.
    let s = serve(&[]);
    let bad = ext_with_schema("bad", serde_json::json!({"type": 12}));
    let out = invoke(&s.socket, bad.path(), "bad.run", "{}");
    assert_eq!(out.status.code(), Some(3), "{out:?}"); // ManifestError
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid JSON Schema"),
        "{out:?}"
    );
    let end = Instant::now() + Duration::from_secs(20);
    while !workers_of(bad.path()).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(workers_of(bad.path()), Vec::<i32>::new(), "a worker stayed");

    // Control: the same check sees a warm worker of such an extension while
    // its host holds it (a valid schema, `run --server` with stdin open).
    let good = ext_with_schema("good", serde_json::json!({"type": "object"}));
    let mut run = warm_run(Command::new(ext_runner()), good.path(), &s.socket);
    let line = answer_once(&mut run, "good.run", serde_json::json!({}));
    assert!(line.contains("ran"), "{line}");
    assert_eq!(workers_of(good.path()).len(), 1, "the check sees no worker");
    drop(run.stdin.take());
    assert!(run.wait().unwrap().success());
}

/// `serve --spares N`: after a request for an extension, a worker for the
/// next one is started ahead, confined as any (seccomp, no_new_privs,
/// Landlock: a secret outside the grants stays unread, judged by the
/// answer's bytes), and handed to that next request; a change to the
/// extension's files since it started is never run on the old code (the
/// spare is dropped and the request starts its own). The control of "ahead":
/// the first worker, which had no spare, imported its module after the
/// request was sent, and a server without spares does the same every time.
#[test]
fn a_spare_worker_is_started_ahead_confined_and_never_runs_old_code() {
    let secret_dir = common::TempDir::new("spare-secret");
    let secret = secret_dir.join("secret");
    let token = format!("spare-secret-{}", std::process::id());
    std::fs::write(&secret, &token).unwrap();
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        token,
        "the control: the secret reads from outside"
    );
    let source = |version: &str| {
        format!(
            r#"import os, random, time
IMPORTED = time.time()
VERSION = "{version}"
from nodus_extension.worker import register_tool, run_loop
def run(args):
    import ctypes
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    try:
        secret = open({secret:?}).read()
    except OSError as e:
        secret = type(e).__name__
    return {{"imported": IMPORTED, "version": VERSION, "seccomp": prctl(21, 0, 0, 0, 0),
            "nnp": prctl(39, 0, 0, 0, 0), "secret": secret, "random": random.random()}}
register_tool("spare.run", run)
run_loop()
"#,
            secret = secret.to_str().unwrap()
        )
    };
    let ext = common::ext("spare", &["tool.invoke"], &["spare.run"], &source("one"));
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let ask = |s: &Server| -> (f64, serde_json::Value, String) {
        let asked = now();
        let out = invoke(&s.socket, ext.path(), "spare.run", "{}");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (asked, serde_json::from_str(&text).unwrap(), text)
    };
    let ahead =
        |(asked, v, _): &(f64, serde_json::Value, String)| v["imported"].as_f64().unwrap() < *asked;
    // Without spares: every worker imports its module after the request.
    let plain = serve(&[]);
    for _ in 0..2 {
        let r = ask(&plain);
        assert!(!ahead(&r), "a server without spares: {}", r.2);
    }
    drop(plain);
    let s = serve(&["--spares", "2"]);
    let first = ask(&s);
    assert!(
        !ahead(&first),
        "the first request has no spare: {}",
        first.2
    );
    assert!(
        wait_for_spare(ext.path()),
        "no spare started behind the first"
    );
    let second = ask(&s);
    assert!(
        ahead(&second),
        "the second request gets the spare: {}",
        second.2
    );
    for (_, v, text) in [&first, &second] {
        assert_eq!(
            (v["seccomp"].as_i64(), v["nnp"].as_i64()),
            (Some(2), Some(1)),
            "{text}"
        );
        assert!(
            !text.contains(&token),
            "the secret reached the worker: {text}"
        );
        // Refused by Landlock, or not there at all in a private root.
        assert!(
            matches!(
                v["secret"].as_str(),
                Some("PermissionError" | "FileNotFoundError")
            ),
            "{text}"
        );
    }
    assert_ne!(first.1["random"], second.1["random"], "per-worker secrets");
    // The extension changes behind the spare: the request runs the new code.
    assert!(wait_for_spare(ext.path()));
    std::fs::write(ext.join("extension.py"), source("two")).unwrap();
    let third = ask(&s);
    assert_eq!(third.1["version"], "two", "old code ran: {}", third.2);
    assert!(
        !ahead(&third),
        "the stale spare was handed out: {}",
        third.2
    );
    assert!(wait_for_spare(ext.path()));
    let fourth = ask(&s);
    assert_eq!(fourth.1["version"], "two", "{}", fourth.2);
    assert!(ahead(&fourth), "a spare of the new code: {}", fourth.2);
}

/// `serve --spares`: a spare is handed out only for the folders it was
/// started on. A workspace renamed away and replaced by a new folder at the
/// same path (the same canonical path, the same policy) is not the folder
/// the spare's grants were opened on: the request starts its own worker,
/// which reads the new folder's file. And an `extension.py` rewritten in
/// place to the same length, its modification time put back (as `cp -p`
/// or `touch -r` do), is seen by its status-change time: the old code is
/// not run. The control of each: the request before the change got a spare
/// (imported before it was asked) that read the old folder and ran the old
/// code.
#[test]
fn a_spare_is_not_handed_out_for_a_replaced_workspace_or_a_file_with_its_mtime_put_back() {
    use std::os::unix::fs::MetadataExt;
    let root = common::TempDir::new("spare-ws");
    let ws = root.join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::write(ws.join("marker"), "old").unwrap();
    let source = |version: &str| {
        format!(
            r#"import time
IMPORTED = time.time()
VERSION = "{version}"
from nodus_extension.worker import register_tool, run_loop
def run(args):
    try:
        marker = open(args["path"]).read()
    except OSError as e:
        marker = type(e).__name__
    return {{"imported": IMPORTED, "version": VERSION, "marker": marker}}
register_tool("spare.ws", run)
run_loop()
"#
        )
    };
    let ext = common::ext(
        "sparews",
        &["tool.invoke", "filesystem.read"],
        &["spare.ws"],
        &source("one"),
    );
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let s = serve(&["--spares", "1"]);
    let args = serde_json::json!({"path": ws.join("marker")}).to_string();
    let ask = || -> (bool, serde_json::Value, String) {
        let asked = now();
        let out = Command::new(ext_runner())
            .arg("invoke")
            .arg(ext.path())
            .arg("spare.ws")
            .arg(&args)
            .arg("--workspace")
            .arg(&ws)
            .arg("--server")
            .arg(&s.socket)
            .output()
            .expect("ext-runner invoke");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        (v["imported"].as_f64().unwrap() < asked, v, text)
    };
    let first = ask();
    assert_eq!(first.1["marker"], "old", "{}", first.2);
    assert!(
        wait_for_spare(ext.path()),
        "no spare started behind the first"
    );
    let second = ask();
    assert!(
        second.0,
        "the control: a spare for this workspace: {}",
        second.2
    );
    assert_eq!(second.1["marker"], "old", "{}", second.2);
    // The workspace replaced at its path.
    assert!(wait_for_spare(ext.path()));
    std::fs::rename(&ws, root.join("ws.old")).unwrap();
    std::fs::create_dir(&ws).unwrap();
    std::fs::write(ws.join("marker"), "new").unwrap();
    let third = ask();
    assert_eq!(
        third.1["marker"], "new",
        "a spare opened on the old workspace was handed out: {}",
        third.2
    );
    assert!(!third.0, "{}", third.2);
    // extension.py rewritten in place, same length, its mtime put back.
    assert!(wait_for_spare(ext.path()));
    let fourth = ask();
    assert!(fourth.0, "the control: a spare again: {}", fourth.2);
    assert_eq!(fourth.1["version"], "one", "{}", fourth.2);
    assert!(wait_for_spare(ext.path()));
    let script = ext.join("extension.py");
    let before = std::fs::metadata(&script).unwrap();
    std::fs::write(&script, source("two")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&script)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    let after = std::fs::metadata(&script).unwrap();
    assert_eq!(
        (after.len(), after.modified().unwrap(), after.ino()),
        (before.len(), before.modified().unwrap(), before.ino()),
        "the change is invisible to length, mtime and inode"
    );
    let fifth = ask();
    assert_eq!(fifth.1["version"], "two", "old code ran: {}", fifth.2);
}

/// Of a live process's private writable mappings, how many the kernel may
/// merge (KSM's `mg` in /proc/PID/smaps VmFlags), and how many there are,
/// read from outside.
fn mergeable_mappings(pid: i32) -> (usize, usize) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut mergeable, mut writable, mut private_rw) = (0, 0, false);
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("VmFlags:") if private_rw && words.any(|f| f == "mg") => mergeable += 1,
            Some(first) if first.contains('-') && !first.ends_with(':') => {
                private_rw = words
                    .next()
                    .is_some_and(|p| p.starts_with("rw") && p.ends_with('p'));
                writable += private_rw as usize;
            }
            _ => {}
        }
    }
    (mergeable, writable)
}

/// A warm worker of `dir` started through `socket` with `run --server` and
/// answered once; its pid, seen from outside, and the proxy holding it.
fn idle_warm_worker(dir: &Path, socket: &Path) -> (i32, Child) {
    let mut run = warm_run(Command::new(ext_runner()), dir, socket);
    let line = answer_once(
        &mut run,
        "example.greet",
        serde_json::json!({"name": "Ada"}),
    );
    assert!(line.contains("Hello, Ada!"), "{line}");
    let pids = workers_of(dir);
    assert_eq!(pids.len(), 1, "one worker of {}: {pids:?}", dir.display());
    (pids[0], run)
}

/// One invoke of `tool` sent to a `warm_run`, and the first line it
/// answers; its stdin stays open in `run` (the worker idles on it) and its
/// stdout is read no further.
fn answer_once(run: &mut Child, tool: &str, args: serde_json::Value) -> String {
    use std::io::{BufRead, Write};
    let stdin = run.stdin.as_mut().unwrap();
    let request = serde_json::json!({"id": "1", "op": "invoke", "name": tool, "args": args});
    writeln!(stdin, "{request}").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(run.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

/// The value after `key` on its line of /proc/PID/FILE (`status`,
/// `ksm_stat`), trimmed; empty if there is none.
fn proc_field(pid: i32, file: &str, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

fn status_field(pid: i32, field: &str) -> String {
    proc_field(pid, "status", field)
}

/// Whether the running kernel is at least MAJOR.MINOR (its release, as
/// /proc/sys/kernel/osrelease says: `6.18.0-…`).
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

fn hello_copy(label: &str) -> TempDir {
    let d = TempDir::new(label);
    for f in ["extension.py", "nodus-extension.json"] {
        std::fs::copy(common::root().join("examples/hello").join(f), d.join(f)).unwrap();
    }
    d
}

#[test]
fn merge_pages_marks_warm_workers_mergeable_and_keeps_them_confined() {
    if !kernel_at_least(6, 4) {
        // The madvise fallback leaves later mappings unmarked: tested below.
        eprintln!("SKIP: a kernel before 6.4 (no PR_SET_MEMORY_MERGE)");
        return;
    }
    let plain = serve(&[]);
    let merging = serve(&["--merge-pages"]);
    let (a, b) = (hello_copy("merge-plain"), hello_copy("merge-on"));
    let (plain_pid, mut plain_run) = idle_warm_worker(a.path(), &plain.socket);
    let (merged_pid, mut merged_run) = idle_warm_worker(b.path(), &merging.socket);
    // Control: a worker of a server without --merge-pages has no mapping
    // KSM would merge (the check can fail).
    let (none, rw) = mergeable_mappings(plain_pid);
    assert!(rw > 0, "no writable mappings read for {plain_pid}");
    assert_eq!(
        none, 0,
        "a worker without --merge-pages has mergeable mappings"
    );
    // With it, every private writable mapping inherited from the zygote.
    let (mg, rw) = mergeable_mappings(merged_pid);
    assert!(
        mg * 10 >= rw * 9,
        "{mg} of {rw} private writable mappings mergeable"
    );
    // And the worker is as confined as ever.
    for pid in [plain_pid, merged_pid] {
        assert_eq!(status_field(pid, "Seccomp:"), "2", "worker {pid}");
        assert_eq!(status_field(pid, "NoNewPrivs:"), "1", "worker {pid}");
    }
    for r in [&mut plain_run, &mut merged_run] {
        let _ = r.kill();
        let _ = r.wait();
    }
}

#[test]
fn merge_pages_falls_back_to_madvise_before_linux_6_4() {
    // prctl(PR_SET_MEMORY_MERGE) refused with EINVAL, as a kernel before
    // 6.4 does (every other prctl still works): the zygote marks its
    // mappings with madvise(MADV_MERGEABLE) and says so.
    let mut wrapped = Command::new(failcall());
    wrapped.args(["prctl:67", "EINVAL", "--"]).arg(ext_runner());
    let server = serve_via(wrapped, &["--merge-pages"], true);
    let ext = hello_copy("merge-old-ext");
    let (pid, mut run) = idle_warm_worker(ext.path(), &server.socket);
    let (mg, rw) = mergeable_mappings(pid);
    let said = server.log();
    let _ = run.kill();
    let _ = run.wait();
    assert!(
        said.contains("--merge-pages: the warm workers' memory is mergeable"),
        "{said}"
    );
    assert!(
        said.contains("prctl(PR_SET_MEMORY_MERGE) failed (Invalid argument; a kernel before 6.4)")
            && said.contains("madvise(MADV_MERGEABLE) instead"),
        "{said}"
    );
    assert!(
        mg > 0 && mg * 2 >= rw,
        "{mg} of {rw} private writable mappings mergeable: {said}"
    );
}

/// KSM's settings, put back on drop.
struct KsmSettings(Vec<(&'static str, String)>);

impl KsmSettings {
    fn path(name: &str) -> String {
        format!("/sys/kernel/mm/ksm/{name}")
    }
    fn read(name: &str) -> u64 {
        std::fs::read_to_string(Self::path(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
    /// KSM turned on and scanning fast, or why it cannot be here.
    fn fast() -> Result<KsmSettings, String> {
        let names = ["run", "pages_to_scan", "sleep_millisecs"];
        let mut old = Vec::new();
        for n in names {
            match std::fs::read_to_string(Self::path(n)) {
                Ok(v) => old.push((n, v.trim().to_string())),
                Err(e) => return Err(format!("{}: {e}", Self::path(n))),
            }
        }
        let saved = KsmSettings(old);
        for (n, v) in [
            ("pages_to_scan", "20000"),
            ("sleep_millisecs", "10"),
            ("run", "1"),
        ] {
            std::fs::write(Self::path(n), v).map_err(|e| format!("{}: {e}", Self::path(n)))?;
        }
        Ok(saved)
    }
}

impl Drop for KsmSettings {
    fn drop(&mut self) {
        if self.0.iter().any(|(n, v)| *n == "run" && v == "0") {
            let _ = std::fs::write(Self::path("run"), "2"); // unmerge ours
        }
        for (n, v) in self.0.iter().rev() {
            let _ = std::fs::write(Self::path(n), v);
        }
    }
}

#[test]
fn merged_workers_share_their_pages_once_ksm_runs() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: root missing (to turn KSM on)");
        return;
    }
    let ksm = match KsmSettings::fast() {
        Ok(k) => k,
        Err(why) => {
            eprintln!("SKIP: no KSM to turn on here ({why})");
            return;
        }
    };
    let plain = serve(&[]);
    let merging = serve(&["--merge-pages"]);
    let dirs: Vec<TempDir> = (0..3).map(|i| hello_copy(&format!("ksm{i}"))).collect();
    let mut held = Vec::new();
    let (plain_pid, run) = idle_warm_worker(dirs[0].path(), &plain.socket);
    held.push(run);
    let mut merged = Vec::new();
    for d in &dirs[1..] {
        let (pid, run) = idle_warm_worker(d.path(), &merging.socket);
        merged.push(pid);
        held.push(run);
    }
    let merging_pages = |pid: i32| -> u64 {
        proc_field(pid, "ksm_stat", "ksm_merging_pages ")
            .parse()
            .unwrap_or(0)
    };
    // Two full scans after the workers are idle: a page is merged on the
    // second scan that finds it unchanged.
    let scans = KsmSettings::read("full_scans");
    let end = Instant::now() + Duration::from_secs(60);
    while KsmSettings::read("full_scans") < scans + 3 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let got: Vec<u64> = merged.iter().map(|&p| merging_pages(p)).collect();
    let control = merging_pages(plain_pid);
    let (status, nnp) = (
        status_field(merged[0], "Seccomp:"),
        status_field(merged[0], "NoNewPrivs:"),
    );
    for mut r in held {
        let _ = r.kill();
        let _ = r.wait();
    }
    drop(ksm);
    assert_eq!(
        control, 0,
        "a worker of a server without --merge-pages had pages merged"
    );
    // Each merged worker shares at least 1 MiB of pages it had copied, or
    // 512 KiB on 3.12 and later, where the zygote's objects are immortal
    // and fewer are copied (240 pages measured on 3.13).
    let floor = if python_at_least_3_12() { 128 } else { 256 };
    assert!(
        got.iter().all(|&n| n >= floor),
        "merged pages per worker: {got:?}"
    );
    assert_eq!((status.as_str(), nnp.as_str()), ("2", "1"));
}

#[test]
fn on_cpython_3_12_and_later_the_zygotes_objects_are_immortal_in_a_warm_worker_alone() {
    // A function the zygote imported (json.dumps): its reference count as
    // the worker sees it, warm and cold. Immortal (PEP 683) means a count of
    // at least 2**31 that reads no longer write (docs/warm.md, "Immortal
    // objects"); a cold worker's is a few, the control.
    let manifest = serde_json::json!({
        "name": "imm", "version": "0.1.0", "description": "integration test extension",
        "abi_version": "1", "capabilities": ["tool.invoke"],
        "surfaces": {"tools": [{"name": "imm.run", "description": "a test tool", "schema": {"type": "object"}}]},
    });
    let dir = common::write_ext(
        Some(&manifest.to_string()),
        Some(concat!(
            "import json, sys\nfrom nodus_extension.worker import register_tool, run_loop\n",
            "register_tool('imm.run', lambda a: '%d.%d %d' % (sys.version_info[:2] + (sys.getrefcount(json.dumps),)))\n",
            "run_loop()\n"
        )),
    );
    let s = serve(&[]);
    let read = |out: std::process::Output| -> ((u32, u32), u64) {
        assert!(out.status.success(), "{out:?}");
        let text: String = serde_json::from_slice(&out.stdout).expect("a JSON string");
        let (ver, count) = text.split_once(' ').unwrap();
        let (major, minor) = ver.split_once('.').unwrap();
        (
            (major.parse().unwrap(), minor.parse().unwrap()),
            count.parse().unwrap(),
        )
    };
    let (version, warm) = read(invoke(&s.socket, dir.path(), "imm.run", "{}"));
    let (_, cold) = read(
        Command::new(ext_runner())
            .args([
                "invoke".as_ref(),
                dir.path().as_os_str(),
                "imm.run".as_ref(),
                "{}".as_ref(),
            ])
            .output()
            .unwrap(),
    );
    assert!(
        cold < 1 << 31,
        "a cold worker's json.dumps is immortal: {cold}"
    );
    if version < (3, 12) {
        assert!(
            warm < 1 << 31,
            "CPython {version:?} has no immortal objects, yet {warm}"
        );
        eprintln!("SKIP: CPython {version:?} has no immortal objects (PEP 683, 3.12): the zygote leaves its objects mortal");
        return;
    }
    assert!(
        warm >= 1 << 31,
        "a warm worker's json.dumps is mortal on CPython {version:?}: {warm}"
    );
}

/// Whether the tests' interpreter is CPython 3.12 or later.
fn python_at_least_3_12() -> bool {
    let out = Command::new(python())
        .args(["-c", "import sys; print(sys.version_info >= (3, 12))"])
        .output()
        .expect("the tests' python");
    String::from_utf8_lossy(&out.stdout).trim() == "True"
}

/// An extension whose tool runs the code it is sent, with the host calls at
/// hand (as tests/host_calls.rs's).
fn code_runner(name: &str, caps: &[&str]) -> TempDir {
    let tool = format!("{name}.run");
    let src = format!(
        "from nodus_extension.worker import register_tool, run_loop\nimport nodus_extension_host as host\n\n\
         def run(args):\n    ns = {{'memory': host.memory}}\n    exec(args['code'], ns)\n    return ns.get('result')\n\n\
         register_tool('{tool}', run)\nrun_loop()\n"
    );
    common::ext(name, caps, &[&tool], &src)
}

/// The ways `run --server` relays, as `NODUS_EXTENSION_RELAY` picks them:
/// `ext-relay` beside the runner (unset); none found (`/nonexistent`); one
/// found that cannot be exec'd (a copy without its execute bit, in the
/// folder returned with them: the exec fails after the worker is started).
fn relays() -> (TempDir, [Option<String>; 3]) {
    let dir = TempDir::new("relay");
    let copy = dir.join("ext-relay");
    std::fs::copy(ext_runner().with_file_name("ext-relay"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    let copy = copy.to_str().unwrap().to_string();
    (dir, [None, Some("/nonexistent".into()), Some(copy)])
}

/// `ext-runner run DIR --server SOCKET` with `NODUS_EXTENSION_RELAY` as
/// `relay` says (removed for none).
fn relayed_run(relay: &Option<String>, dir: &Path, socket: &Path) -> Command {
    let mut cmd = Command::new(ext_runner());
    match relay {
        Some(r) => cmd.env("NODUS_EXTENSION_RELAY", r),
        None => cmd.env_remove("NODUS_EXTENSION_RELAY"),
    };
    cmd.arg("run").arg(dir).arg("--server").arg(socket);
    cmd
}

/// `run --server` execs `ext-relay` in its own place once the server has
/// started the worker (the process a host holds for an idle worker is that
/// small program), and the handover keeps what the relay is for: the
/// manifest's capabilities gate the host calls (a declared one is served,
/// an undeclared one refused), the memory store and audit trail are the
/// ones named on the command line, and `--timeout` stops a hung tool. The
/// same with `NODUS_EXTENSION_RELAY` naming no file, where ext-runner relays
/// itself (the control: the exe tells them apart).
#[test]
fn run_with_a_server_execs_ext_relay_which_keeps_the_gate_the_store_and_the_deadline() {
    use std::io::{BufRead, BufReader, Write};
    let s = serve(&[]);
    let e = code_runner("t.relay", &["tool.invoke", "memory.write"]);
    let (_copy, relays) = relays();
    for (relay, program) in relays.iter().zip(["ext-relay", "ext-runner", "ext-runner"]) {
        let state = TempDir::new("state");
        let audit = state.join("audit.jsonl");
        let mut c = relayed_run(relay, e.path(), &s.socket)
            .arg("--memory-db")
            .arg(state.join("m.db"))
            .arg("--audit")
            .arg(&audit)
            .arg("--timeout")
            .arg("8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = c.stdin.take().unwrap();
        let mut stdout = BufReader::new(c.stdout.take().unwrap());
        let mut ask = |id: &str, code: &str| {
            let req = serde_json::json!({"id": id, "op": "invoke", "name": "t.relay.run", "args": {"code": code}});
            writeln!(stdin, "{req}").unwrap();
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            line
        };
        let put = ask("1", "memory.put('a', 5); result = 'stored'");
        assert_eq!(
            put.trim(),
            r#"{"id": "1", "ok": true, "result": "stored"}"#,
            "{program}"
        );
        let exe = std::fs::read_link(format!("/proc/{}/exe", c.id())).unwrap();
        assert_eq!(
            exe.file_name().unwrap(),
            program,
            "the process the host holds: {exe:?}"
        );
        // Its own descriptors beyond stdio are close-on-exec, the
        // handed-over ones again included (O_CLOEXEC in fdinfo's octal
        // flags); what it inherited from this test process, as any program
        // it starts would, is left as it came.
        for fd in std::fs::read_dir(format!("/proc/{}/fd", c.id())).unwrap() {
            let fd = fd.unwrap().file_name().into_string().unwrap();
            let target = std::fs::read_link(format!("/proc/{}/fd/{fd}", c.id())).ok();
            let ours = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
            if fd.parse::<u32>().unwrap() < 3 || (target.is_some() && target == ours) {
                continue;
            }
            let info = std::fs::read_to_string(format!("/proc/{}/fdinfo/{fd}", c.id()))
                .unwrap_or_default();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
                .unwrap_or(0o2000000);
            assert!(
                flags & 0o2000000 != 0,
                "{program}: descriptor {fd} ({:?}) is not close-on-exec: {info}",
                std::fs::read_link(format!("/proc/{}/fd/{fd}", c.id()))
            );
        }
        let get = ask("2", "result = memory.get('a')");
        assert!(
            get.contains(r#""ok": false"#) && get.contains("memory.read"),
            "an undeclared capability's host call is refused ({program}): {get}"
        );
        let started = Instant::now();
        let hung = ask("3", "import time; time.sleep(60)");
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            started.elapsed() < Duration::from_secs(25) && err.contains("(TimeoutError)"),
            "--timeout 8 stops the hung tool ({program}): {hung:?} {err}"
        );
        assert_eq!(
            err.contains("note: cannot exec"),
            relay == &relays[2],
            "a failed exec, and only that, is noted ({program}): {err}"
        );
        assert!(!out.status.success(), "{program}");
        assert!(
            state.join("m.db").exists(),
            "the store named by --memory-db ({program})"
        );
        let log = std::fs::read_to_string(&audit).unwrap_or_default();
        assert!(
            log.lines().filter(|l| l.contains("\"host_call\"")).count() >= 2,
            "the audit trail named by --audit ({program}): {log}"
        );
    }
}

/// A warm worker's policy is the server's to derive, so what its
/// confinement gave up is the server's word: `run --server` shows the
/// degradation of the server's own policy (here, seccomp switched off by
/// it), which the client has no policy to know of; so does `invoke
/// --server`, whose host's own view knows nothing of it either.
#[test]
fn run_with_a_server_warns_of_what_the_servers_policy_gave_up() {
    let policy = TempDir::new("policy");
    let file = policy.join("p.json");
    std::fs::write(
        &file,
        r#"{"mode": "best-effort", "layers": {"seccomp": false}}"#,
    )
    .unwrap();
    let warning = |s: &Server| {
        let mut run = Command::new(ext_runner())
            .arg("run")
            .arg(common::root().join("examples/hello"))
            .arg("--server")
            .arg(&s.socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let line = answer_once(
            &mut run,
            "example.greet",
            serde_json::json!({"name": "Ada"}),
        );
        assert!(line.contains("Hello, Ada!"), "{line}");
        drop(run.stdin.take());
        let out = run.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .find_map(|l| l.strip_prefix("warning: sandbox degraded: "))
            .map(str::to_string)
    };
    let plain = serve(&[]);
    let control = warning(&plain);
    assert!(
        !control
            .as_deref()
            .unwrap_or_default()
            .contains("seccomp: switched off by the operator policy"),
        "control: a server of the default policy keeps seccomp: {control:?}"
    );
    let lax = serve(&["--policy", file.to_str().unwrap()]);
    let said = warning(&lax);
    assert!(
        said.as_deref()
            .is_some_and(|w| w.contains("seccomp: switched off by the operator policy")),
        "the server's degradation reaches its client: {said:?}"
    );
    // `invoke --server` (a library host) says the same.
    let hello = common::root().join("examples/hello");
    for (s, says) in [(&plain, false), (&lax, true)] {
        let out = invoke(&s.socket, &hello, "example.greet", r#"{"name": "Ada"}"#);
        assert!(out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.contains("seccomp: switched off by the operator policy"),
            says,
            "invoke --server: {err}"
        );
    }
}

/// A worker that dies while its host's next request is on its way is
/// reported by the relay, `ext-relay` or ext-runner after a failed exec of
/// it, as an error with an exit code: a write to the dead worker's stdin is
/// an EPIPE, never the relay's death by SIGPIPE (which a relay left with
/// SIGPIPE's default action after a failed exec would die of).
#[test]
fn a_relay_reports_a_worker_that_died_under_a_request_with_an_exit_code() {
    use std::io::Write;
    let s = serve(&[]);
    let e = code_runner("t.died", &["tool.invoke"]);
    let (_copy, relays) = relays();
    for relay in [&relays[0], &relays[2]] {
        let mut c = relayed_run(relay, e.path(), &s.socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = c.stdin.take().unwrap();
        let die = serde_json::json!({"id": "1", "op": "invoke", "name": "t.died.run", "args": {"code": "import os; os._exit(3)"}});
        writeln!(stdin, "{die}").unwrap();
        // Lines for the dead worker's stdin, for as long as the relay reads.
        let filler = serde_json::json!({"id": "2", "op": "invoke", "name": "t.died.run", "args": {"code": "x" }});
        for _ in 0..200 {
            if writeln!(stdin, "{filler}").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(stdin);
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code().is_some_and(|code| code != 0),
            "{relay:?}: the relay ended with {:?}, not an error's exit code: {err}",
            out.status
        );
        assert!(err.contains("error: "), "{relay:?}: {err}");
    }
}

/// A library host with a fork server derives no policy of its own, as `run
/// --server` derives none: the server derives the worker's from its
/// operator policy, and its refusal stays the load's error, with its class
/// (as it was when the host derived a view of its own too); an operator
/// policy set beside a server is refused before anything is asked.
#[test]
fn a_library_host_with_a_server_derives_nothing_and_the_servers_refusal_fails_its_load() {
    use nodus_extension::{blocking::ExtensionRegistry, HostOptions};
    let hello = common::root().join("examples/hello");
    let plain = serve(&[]);
    let warm = ExtensionRegistry::new(HostOptions::default().with_server(&plain.socket)).unwrap();
    let host = warm.load(&hello).unwrap();
    assert!(
        host.policy().is_none(),
        "nothing is derived beside a server"
    );
    let answer = warm
        .invoke("example.hello", "example.greet", r#"{"name": "Ada"}"#)
        .unwrap();
    assert_eq!(answer, "Hello, Ada!");
    // Control: a host without a server derives the worker's policy itself.
    let cold = ExtensionRegistry::new(common::options()).unwrap();
    assert!(cold.load(&hello).unwrap().policy().is_some());

    // The server's operator policy grants the trust class 'dev' nothing:
    // loading example.hello (tool.invoke) fails as a cold load would.
    let policy = TempDir::new("policy");
    let file = policy.join("p.json");
    std::fs::write(&file, r#"{"trust_classes": {"dev": []}}"#).unwrap();
    let strict = serve(&["--policy", file.to_str().unwrap()]);
    let refused = ExtensionRegistry::new(HostOptions::default().with_server(&strict.socket))
        .unwrap()
        .load(&hello)
        .err()
        .expect("the server's operator policy refuses tool.invoke");
    assert_eq!(refused.class(), "CapabilityError", "{refused}");
    assert!(refused.to_string().contains("tool.invoke"), "{refused}");
    let control = ExtensionRegistry::new(HostOptions::default().with_server(&plain.socket))
        .unwrap()
        .load(&hello);
    assert!(control.is_ok(), "control: {:?}", control.err());

    // An operator policy of the host's own beside a server would not be the
    // worker's: refused at load, and nothing asked of the server (a listener
    // of the test's own in its place is never connected to; control: a load
    // without that policy connects to it, and fails when it hangs up).
    let fake = TempDir::new("fake-server");
    let folder = fake.join("fork");
    std::fs::create_dir(&folder).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)).unwrap();
    let socket = folder.join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let load = |operator: &str| {
        let mut options = HostOptions::default().with_server(&socket);
        options.operator = serde_json::from_str(operator).unwrap();
        ExtensionRegistry::new(options)
            .unwrap()
            .load(&hello)
            .err()
            .expect("no server answers here")
    };
    // A connection made, even one closed since, waits in the backlog.
    let asked = || listener.accept().map(drop).is_ok();
    let err = load(r#"{"tcp_ports": [80]}"#);
    assert_eq!(err.class(), "SandboxError", "{err}");
    assert!(
        err.to_string().contains("belongs to the fork server"),
        "{err}"
    );
    assert!(
        !asked(),
        "an operator policy beside a server: nothing asked of it"
    );
    let hangs_up = std::thread::scope(|scope| {
        let answer = scope.spawn(|| {
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end {
                if asked() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        });
        let err = load("{}");
        (answer.join().unwrap(), err)
    });
    assert!(
        hangs_up.0,
        "control: a load beside a server asks it ({})",
        hangs_up.1
    );
}

/// A warm worker has one waiter: its pid namespace's reaper, which is the
/// zygote's own child (the fork that made it exits at once instead of
/// staying as the monitor a cold worker has), and the zygote reads the
/// worker's end from it. Seen from outside: the worker's parent runs
/// `ext-reaper init`, whose parent is the zygote, and no `ext-reaper
/// monitor` runs below the server (control: a cold `run` has one). The
/// worker's end still reaches the client as it was: its exit code, and a
/// death by signal.
#[test]
fn a_warm_worker_waits_under_its_reaper_alone_and_its_end_still_reaches_the_client() {
    use common::procfs::{cmdline, descendants};
    let s = serve(&[]);
    let hello = common::root().join("examples/hello");
    let mut run = warm_run(Command::new(ext_runner()), &hello, &s.socket);
    let line = answer_once(
        &mut run,
        "example.greet",
        serde_json::json!({"name": "Ada"}),
    );
    assert!(line.contains("Hello, Ada!"), "{line}");
    // (pid, parent, the command line's start: the zygote's own is its
    // source, which names boot.py too)
    let below: Vec<(i32, i32, String)> = descendants(s.child.id() as i32)
        .into_iter()
        .map(|p| (p.pid, p.ppid, cmdline(p.pid).chars().take(80).collect()))
        .collect();
    let zygote = below
        .iter()
        .find(|(_, ppid, _)| *ppid == s.child.id() as i32)
        .map(|p| p.0)
        .expect("the zygote");
    let find = |what: &str| {
        below
            .iter()
            .find(|(pid, _, c)| *pid != zygote && c.contains(what))
            .cloned()
    };
    let (reaper, reaper_parent, _) = find("ext-reaper init").expect("the reaper");
    let (_, worker_parent, _) = find("boot.py").expect("the worker");
    assert_eq!(
        reaper_parent, zygote,
        "the reaper is the zygote's child: {below:?}"
    );
    assert_eq!(
        worker_parent, reaper,
        "the worker is the reaper's: {below:?}"
    );
    assert!(
        find("ext-reaper monitor").is_none(),
        "no monitor: {below:?}"
    );
    drop(run.stdin.take());
    let _ = run.wait();
    // Control: a cold worker has its monitor, and the same check sees it.
    let mut cold = Command::new(ext_runner())
        .arg("run")
        .arg(&hello)
        .arg("--python")
        .arg(python())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    answer_once(
        &mut cold,
        "example.greet",
        serde_json::json!({"name": "Ada"}),
    );
    let monitors = descendants(cold.id() as i32)
        .into_iter()
        .filter(|p| cmdline(p.pid).contains("ext-reaper monitor"))
        .count();
    assert_eq!(monitors, 1, "control: a cold worker's monitor");
    drop(cold.stdin.take());
    let _ = cold.wait();

    // The worker's end, through the zygote's reading of the reaper.
    let e = code_runner("t.ends", &["tool.invoke"]);
    for (code, says) in [
        ("import os; os._exit(3)", "exited with status 3"),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
            "was killed by signal 9 (SIGKILL)",
        ),
    ] {
        let args = serde_json::json!({"code": code}).to_string();
        let out = invoke(&s.socket, e.path(), "t.ends.run", &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{out:?}");
        assert!(err.contains(says), "{code}: {err}");
    }
}

/// A worker started by a client of the test's own (the server's protocol:
/// the request line, then the answer line with the worker's stdin, stdout
/// and stderr), its pipes and connection held by the test.
struct RawStart {
    pid: i32,
    stdin: std::fs::File,
    stdout: std::io::BufReader<std::fs::File>,
    _stderr: std::fs::File,
    conn: std::os::unix::net::UnixStream,
}

fn raw_start(socket: &Path, dir: &Path) -> RawStart {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let conn = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let request = serde_json::json!({"dir": dir, "workspace": null, "verbose": false});
    std::io::Write::write_all(&mut &conn, format!("{request}\n").as_bytes()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (mut line, mut fds) = (Vec::new(), Vec::new());
    while !line.contains(&b'\n') {
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 8]);
        let msg = recvmsg::<()>(
            std::os::fd::AsRawFd::as_raw_fd(&conn),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .unwrap();
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(got) = c {
                // SAFETY: each was just installed in this process by the
                // kernel (SCM_RIGHTS); nothing else refers to it.
                fds.extend(
                    got.into_iter()
                        .map(|f| unsafe { std::fs::File::from_raw_fd(f) }),
                );
            }
        }
        let n = msg.bytes;
        assert!(
            n > 0,
            "the server closed without an answer: {}",
            String::from_utf8_lossy(&line)
        );
        line.extend_from_slice(&buf[..n]);
    }
    let answer: serde_json::Value = serde_json::from_slice(&line).unwrap();
    let pid = answer["started"]["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("{answer}")) as i32;
    let [stdin, stdout, stderr]: [std::fs::File; 3] = fds.try_into().unwrap();
    conn.set_read_timeout(None).unwrap();
    RawStart {
        pid,
        stdin,
        stdout: std::io::BufReader::new(stdout),
        _stderr: stderr,
        conn,
    }
}

impl RawStart {
    /// One invoke and the line it answers; None at its stdout's end.
    fn answer(&mut self) -> Option<String> {
        use std::io::{BufRead, Write};
        let request = serde_json::json!({"id": "1", "op": "invoke", "name": "example.greet", "args": {"name": "Ada"}});
        writeln!(self.stdin, "{request}").ok()?;
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line),
            _ => None,
        }
    }
}

/// The server's threads, once they have settled (a connection's thread
/// ends right after it hands its worker over).
fn settled_threads(pid: i32) -> usize {
    let count = || status_field(pid, "Threads:").parse::<usize>().unwrap();
    let mut last = count();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        let now = count();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[test]
fn idle_warm_workers_cost_the_server_no_thread_and_only_a_kill_line_or_a_hang_up_ends_them() {
    let s = serve(&[]);
    let hello = common::root().join("examples/hello");
    let server = s.child.id() as i32;
    let hello_from = |w: &mut RawStart| w.answer().is_some_and(|l| l.contains("Hello, Ada!"));
    // One worker first: the zygote and the thread that reads it exist from here on.
    let mut first = raw_start(&s.socket, &hello);
    assert!(hello_from(&mut first));
    let before = settled_threads(server);
    let mut held: Vec<RawStart> = (0..6).map(|_| raw_start(&s.socket, &hello)).collect();
    assert!(held.iter_mut().all(hello_from));
    let after = settled_threads(server);
    // Before, each idle worker held two threads of the server (its
    // connection's and a watcher's): 12 more here.
    assert!(
        after < before + held.len(),
        "the server went from {before} to {after} threads for {} more idle workers",
        held.len()
    );
    // Lines that are not `kill` kill nothing: the worker still answers.
    let long = format!("{}kill\nkilljoy\n", "x".repeat(40));
    std::io::Write::write_all(&mut &first.conn, long.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        hello_from(&mut first),
        "a worker lives through lines that are not `kill`"
    );
    // `kill` ends it, and the connection says how.
    let end = killed(&first);
    assert_eq!(
        end["exited"],
        serde_json::json!(9),
        "killed by SIGKILL: {end}"
    );
    assert_eq!(first.answer(), None, "its stdout ended");
    // A client that hangs up (its side of the connection closed, the pipes
    // still held) ends its worker, and the server still says how, then
    // closes the connection.
    let mut last = held.pop().unwrap();
    let gone = format!("/proc/{}", last.pid);
    assert!(Path::new(&gone).exists());
    last.conn.shutdown(std::net::Shutdown::Write).unwrap();
    last.conn
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut &last.conn, &mut rest).unwrap();
    let end: serde_json::Value = serde_json::from_str(rest.trim()).unwrap_or_default();
    assert_eq!(
        end["exited"],
        serde_json::json!(9),
        "killed on hang-up: {rest:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while Path::new(&gone).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !Path::new(&gone).exists(),
        "the worker of a client that hung up is gone"
    );
    assert_eq!(last.answer(), None, "its stdout ended");
    // The others still answer.
    assert!(held.iter_mut().all(hello_from));
}

/// One request line for `dir` by a client of the test's own, and the
/// server's answer line (an error, or a start whose descriptors are
/// dropped here).
fn request_answer(socket: &Path, dir: &Path) -> serde_json::Value {
    let conn = std::os::unix::net::UnixStream::connect(socket).unwrap();
    let request = serde_json::json!({"dir": dir, "workspace": null, "verbose": false});
    std::io::Write::write_all(&mut &conn, format!("{request}\n").as_bytes()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&conn), &mut line);
    serde_json::from_str(&line).unwrap_or_default()
}

/// A worker's end as its connection says it, after a `kill` line.
fn killed(w: &RawStart) -> serde_json::Value {
    std::io::Write::write_all(&mut &w.conn, b"kill\n").unwrap();
    w.conn
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut end = String::new();
    let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&w.conn), &mut end);
    serde_json::from_str(&end).unwrap_or_default()
}

/// An extension's folder is its author's: a manifest that is a FIFO (which
/// blocked the server's and then the zygote's read, and with it every
/// client's start and kill) or a link to /dev/zero (read to the end of
/// memory) is refused at once, and the server goes on serving.
#[test]
fn a_manifest_that_is_not_a_regular_file_is_refused_at_once_and_the_server_goes_on() {
    let s = serve(&[]);
    let hello = common::root().join("examples/hello");
    let mut held = raw_start(&s.socket, &hello);
    assert!(held.answer().is_some_and(|l| l.contains("Hello, Ada!")));
    let fifo = TempDir::new("fifo-manifest");
    std::fs::copy(hello.join("extension.py"), fifo.join("extension.py")).unwrap();
    nix::unistd::mkfifo(
        &fifo.join("nodus-extension.json"),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();
    let zero = TempDir::new("zero-manifest");
    std::os::unix::fs::symlink("/dev/zero", zero.join("nodus-extension.json")).unwrap();
    for (dir, what) in [(&fifo, "a FIFO"), (&zero, "a device")] {
        let t0 = Instant::now();
        let answer = request_answer(&s.socket, dir.path());
        assert_eq!(answer["error"]["class"], "ManifestError", "{answer}");
        let msg = answer["error"]["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains(&format!("{what}, not a regular file")),
            "{answer}"
        );
        assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    }
    assert!(
        status_field(s.child.id() as i32, "VmRSS:")
            .trim_end_matches(" kB")
            .parse::<u64>()
            .unwrap()
            < 256 << 10,
        "the server read nothing of /dev/zero"
    );
    // The held worker still answers, and a kill still reaches it.
    assert!(held.answer().is_some_and(|l| l.contains("Hello, Ada!")));
    assert_eq!(killed(&held)["exited"], serde_json::json!(9));
    let mut fresh = raw_start(&s.socket, &hello);
    assert!(fresh.answer().is_some_and(|l| l.contains("Hello, Ada!")));
}

/// The request line has REQUEST_TIMEOUT (10 s) in all: a client that
/// trickles a byte every half second (each read well within any per-read
/// timeout) is cut off with an error, and meanwhile others are served.
#[test]
fn a_client_that_trickles_its_request_is_cut_off_and_others_are_served_meanwhile() {
    let s = serve(&[]);
    let hello = common::root().join("examples/hello");
    let slow = std::os::unix::net::UnixStream::connect(&s.socket).unwrap();
    let t0 = Instant::now();
    let trickler = {
        let slow = slow.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut w = &slow;
            let _ = std::io::Write::write_all(&mut w, b"{");
            while t0.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(500));
                if std::io::Write::write_all(&mut w, b" ").is_err() {
                    break;
                }
            }
        })
    };
    let mut other = raw_start(&s.socket, &hello);
    assert!(other.answer().is_some_and(|l| l.contains("Hello, Ada!")));
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut line = String::new();
    let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(&slow), &mut line);
    let took = t0.elapsed();
    let _ = slow.shutdown(std::net::Shutdown::Both);
    let _ = trickler.join();
    let answer: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
    assert!(
        answer["error"]["msg"]
            .as_str()
            .is_some_and(|m| m.contains("did not arrive within 10 s")),
        "{line:?} after {took:?}"
    );
    assert!(took < Duration::from_secs(25), "{took:?}");
}

/// After an error answer the server reads what the client still sends
/// (so that the client reads the answer, not a reset) for 2 s in all: a
/// client that trickles bytes after it no longer holds its thread (each
/// read had 2 s, and 64 such clients held every connection thread).
#[test]
fn a_client_that_trickles_after_an_error_answer_is_closed_within_seconds() {
    let s = serve(&[]);
    let conn = std::os::unix::net::UnixStream::connect(&s.socket).unwrap();
    std::io::Write::write_all(&mut &conn, b"not json\n").unwrap();
    let t0 = Instant::now();
    // The server's side is closed when a write to it fails (EPIPE): its
    // answer and its shutdown of writing come at once, the close after the
    // drain.
    let trickler = {
        let conn = conn.try_clone().unwrap();
        std::thread::spawn(move || {
            while t0.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(300));
                if std::io::Write::write_all(&mut &conn, b" ").is_err() {
                    return Some(t0.elapsed());
                }
            }
            None
        })
    };
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut said = String::new();
    let _ = std::io::Read::read_to_string(&mut &conn, &mut said);
    assert!(said.contains("a bad request"), "{said:?}");
    let closed = trickler.join().unwrap();
    assert!(
        closed.is_some_and(|t| t < Duration::from_secs(12)),
        "the server's side closed after {closed:?}"
    );
}

/// CPU seconds a process has used, all its threads (/proc/PID/stat).
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // utime and stime: fields 14 and 15, 12 and 13 after the name.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64
        / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap() as f64
}

/// Out of descriptors, the accept loop waits instead of retrying at once
/// (an accept that fails with EMFILE leaves the connection pending, and an
/// immediate retry spun a core): the server uses next to no CPU while
/// clients hold every descriptor it may open, and serves again once they go.
#[test]
fn a_server_out_of_descriptors_waits_for_them_and_serves_again() {
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=40:4096").arg(ext_runner());
    let s = serve_via(cmd, &[], false);
    let server = s.child.id() as i32;
    let hello = common::root().join("examples/hello");
    let mut held = raw_start(&s.socket, &hello);
    assert!(held.answer().is_some_and(|l| l.contains("Hello, Ada!")));
    let idle: Vec<_> = (0..60)
        .map(|_| std::os::unix::net::UnixStream::connect(&s.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let fds = std::fs::read_dir(format!("/proc/{server}/fd"))
        .unwrap()
        .count();
    assert!(
        fds >= 38,
        "the server holds {fds} descriptors: not at its limit"
    );
    let before = cpu_seconds(server);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(server) - before;
    assert!(
        used < 0.5,
        "the server used {used:.2} s of CPU in 2 s at its descriptor limit"
    );
    drop(idle);
    // The idle connections' reads end (their clients are gone), and so do
    // the pending ones; then a new client is served.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(format!("/proc/{server}/fd"))
        .unwrap()
        .count()
        > 24
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut fresh = raw_start(&s.socket, &hello);
    assert!(fresh.answer().is_some_and(|l| l.contains("Hello, Ada!")));
    assert!(held.answer().is_some_and(|l| l.contains("Hello, Ada!")));
}

/// Under a task limit (systemd's TasksMax, a pids cgroup), a connection
/// thread that cannot be made closes that connection alone: the accept
/// loop panicked, the server exited, and every client's worker went with it.
#[test]
fn a_server_that_cannot_make_a_thread_drops_that_connection_and_goes_on() {
    let pids = Path::new("/sys/fs/cgroup/pids");
    if !pids.join("cgroup.procs").exists() || !nix::unistd::geteuid().is_root() {
        eprintln!(
            "SKIP: needs root and the cgroup v1 pids controller at {}",
            pids.display()
        );
        return;
    }
    let group = pids.join(format!("nodus-test-threads-{}", std::process::id()));
    std::fs::create_dir(&group).unwrap();
    let _group = Group(group.clone());
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
            group.display()
        ))
        .arg(ext_runner());
    let mut s = serve_via(cmd, &[], false);
    let hello = common::root().join("examples/hello");
    let mut held = raw_start(&s.socket, &hello);
    assert!(held.answer().is_some_and(|l| l.contains("Hello, Ada!")));
    let current: u64 = std::fs::read_to_string(group.join("pids.current"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::write(group.join("pids.max"), (current + 4).to_string()).unwrap();
    let idle: Vec<_> = (0..30)
        .map(|_| std::os::unix::net::UnixStream::connect(&s.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let events = std::fs::read_to_string(group.join("pids.events")).unwrap_or_default();
    let alive = s.child.try_wait().unwrap().is_none();
    let answers = held.answer().is_some_and(|l| l.contains("Hello, Ada!"));
    drop(idle);
    std::fs::write(group.join("pids.max"), "max").unwrap();
    let fresh = alive.then(|| raw_start(&s.socket, &hello));
    drop(fresh);
    drop(held);
    drop(s);
    assert!(
        events.contains("max") && !events.contains("max 0"),
        "the limit was reached: {events:?}"
    );
    assert!(alive, "the server lived through threads it could not make");
    assert!(answers, "the held worker still answered");
}

/// A pids cgroup of a test's: its limit lifted and the tree under it
/// removed (the workers' own cgroups, once their tasks are gone) however
/// the test ends.
struct Group(PathBuf);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("pids.max"), "max");
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.0.exists() && Instant::now() < deadline {
            let mut dirs = vec![self.0.clone()];
            let mut i = 0;
            while i < dirs.len() {
                if let Ok(rd) = std::fs::read_dir(&dirs[i]) {
                    dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
                }
                i += 1;
            }
            for d in dirs.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.0.exists() && !std::thread::panicking() {
            panic!("{} is left", self.0.display());
        }
    }
}
