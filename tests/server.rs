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

use common::{ext_runner, python, TempDir};

struct Server {
    child: Child,
    socket: PathBuf,
    _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(extra: &[&str]) -> Server {
    let dir = TempDir::new("server");
    let socket = dir.join("fork/s.sock");
    let child = Command::new(ext_runner())
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--python")
        .arg(python())
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .expect("ext-runner serve");
    let end = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < end, "the server did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    Server {
        child,
        socket,
        _dir: dir,
    }
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
    // side (policy view, tool schemas) meanwhile. A tool schema that is not
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
    let mut run = Command::new(ext_runner())
        .arg("run")
        .arg(good.path())
        .arg("--server")
        .arg(&s.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ext-runner run --server");
    use std::io::{BufRead, Write};
    let mut stdin = run.stdin.take().unwrap();
    writeln!(
        stdin,
        r#"{{"id": "1", "op": "invoke", "name": "good.run", "args": {{}}}}"#
    )
    .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(run.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("ran"), "{line}");
    assert_eq!(workers_of(good.path()).len(), 1, "the check sees no worker");
    drop(stdin);
    assert!(run.wait().unwrap().success());
}
