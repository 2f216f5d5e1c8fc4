//! The NDJSON worker protocol against the reference, with real processes:
//! our host driving the reference's worker module and our shim, the
//! reference's host driving a worker through `ext-runner run`, byte-exact
//! request lines, and shutdown.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use nodus_extension::{Error, ExtensionHost, HostOptions};
use serde_json::{json, Value};

use common::{ext, py_str, TempDir};

/// A worker on `nodus_extension.worker` that reports where that module came from.
const WHERE_WORKER: &str = r#"
import os, sys
import nodus_extension
import nodus_extension.worker
from nodus_extension.worker import register_tool, run_loop

EXPECT_UNDER = os.path.realpath(__EXPECT__)
here = os.path.realpath(nodus_extension.__file__)
assert here.startswith(EXPECT_UNDER + os.sep), f"nodus_extension imported from {here}, expected under {EXPECT_UNDER}"

def where(args):
    return {
        "package": os.path.realpath(nodus_extension.__file__),
        "worker": os.path.realpath(nodus_extension.worker.__file__),
        "tmpdir": os.environ.get("TMPDIR", ""),
        "echo": args,
    }

def fail(args):
    raise ValueError("boom: " + args.get("why", ""))

register_tool("proto.where", where)
register_tool("proto.fail", fail)
run_loop()
"#;

/// `expect_under`: a Python expression for the folder `nodus_extension` must come from.
fn where_ext(expect_under: &str) -> TempDir {
    ext(
        "proto.where",
        &["tool.invoke"],
        // proto.nope is declared but not registered: the worker answers it.
        &["proto.where", "proto.fail", "proto.nope"],
        &WHERE_WORKER.replace("__EXPECT__", expect_under),
    )
}

fn opts_with(python: PathBuf) -> HostOptions {
    HostOptions::default()
        .with_python(python.into_os_string())
        .with_timeout(Duration::from_secs(20))
}

#[tokio::test(flavor = "multi_thread")]
async fn our_host_drives_the_reference_worker_module() {
    let Some(py) = common::require_ref_venv() else {
        return;
    };
    let venv = std::fs::canonicalize(common::root().join(".venv-ref")).unwrap();
    let site = venv.join("lib");
    let dir = where_ext(&py_str(&site));
    let host = ExtensionHost::load(dir.path(), opts_with(py))
        .await
        .expect("load");
    let r = host
        .invoke("proto.where", r#"{"name": "Zoë", "n": [1, 2.5, null]}"#)
        .await
        .expect("invoke through the reference worker");
    let package = r["package"].as_str().unwrap();
    assert!(
        package.starts_with(site.to_str().unwrap())
            && package.ends_with("nodus_extension/__init__.py"),
        "the reference package must win over our shim: {package}"
    );
    assert!(
        r["worker"]
            .as_str()
            .unwrap()
            .starts_with(site.to_str().unwrap()),
        "{r}"
    );
    assert_eq!(r["echo"], json!({"name": "Zoë", "n": [1, 2.5, null]}));

    let err = host
        .invoke("proto.fail", r#"{"why": "x"}"#)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invoke { msg, tool_name: Some(t) } if msg == "boom: x" && t == "proto.fail"),
        "{err:?}"
    );
    let err = host.invoke("proto.nope", "{}").await.unwrap_err();
    assert_eq!(err.to_string(), "tool not found: 'proto.nope'");
    host.unload().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn our_host_drives_a_worker_on_our_shim() {
    let py = common::python().to_path_buf();
    assert!(
        !common::has_nodus_extension(&py),
        "{} has nodus_extension installed; point NODUS_TEST_PYTHON at an interpreter without it",
        py.display()
    );
    let dir = where_ext(r#"os.path.join(os.environ["TMPDIR"], ".nodus")"#);
    let host = ExtensionHost::load(dir.path(), opts_with(py))
        .await
        .expect("load");
    let r = host
        .invoke("proto.where", r#"{"k": "v"}"#)
        .await
        .expect("invoke through the shim");
    let tmp = r["tmpdir"].as_str().unwrap();
    let tmp = std::fs::canonicalize(tmp)
        .map(|p| p.display().to_string())
        .unwrap_or(tmp.to_string());
    assert!(!tmp.is_empty());
    assert_eq!(
        r["package"].as_str().unwrap(),
        format!("{tmp}/.nodus/nodus_extension/__init__.py"),
        "the shim lives in the worker's scratch folder: {r}"
    );
    assert_eq!(
        r["worker"].as_str().unwrap(),
        format!("{tmp}/.nodus/nodus_extension/worker.py")
    );
    assert_eq!(r["echo"], json!({"k": "v"}));

    let err = host.invoke("proto.fail", "{}").await.unwrap_err();
    assert!(
        matches!(&err, Error::Invoke { msg, .. } if msg == "boom: "),
        "{err:?}"
    );
    let err = host.invoke("proto.nope", "{}").await.unwrap_err();
    assert_eq!(err.to_string(), "tool not found: 'proto.nope'");
    host.unload().await;
}

/// The reference's `SubprocessRunner`, started as `ext-runner run DIR --python PY`.
const REFERENCE_HOST: &str = r#"
import json, os, subprocess, sys, time
from nodus_extension.errors import InvokeError
from nodus_extension.manifest import load_manifest
from nodus_extension.runner.subprocess import SubprocessRunner

EXT_RUNNER, DIR, PY = sys.argv[1:4]

class ViaExtRunner(SubprocessRunner):
    def start(self):
        self._proc = subprocess.Popen(
            [EXT_RUNNER, "run", DIR, "--python", PY],
            cwd=str(self._dir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

def descendants(root):
    kids = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open(f"/proc/{p}/stat").read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            kids.setdefault(ppid, []).append(int(p))
    out, todo = [], [root]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out

def alive(pid):
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")

out = {}
runner = ViaExtRunner(DIR, load_manifest(DIR), timeout_s=20)
runner.start()
proc = runner._proc
out["greet"] = runner.invoke("proto.greet", {"name": "Zoë"})
out["many"] = [runner.invoke("proto.greet", {"name": str(i)}) for i in range(20)]
try:
    runner.invoke("proto.fail", {"why": "on purpose"})
    out["fail"] = None
except InvokeError as exc:
    out["fail"] = [str(exc), exc.tool_name]
try:
    runner.invoke("proto.nope", {})
    out["missing"] = None
except InvokeError as exc:
    out["missing"] = str(exc)
tree = [proc.pid] + descendants(proc.pid)
out["tree_size"] = len(tree)
t0 = time.monotonic()
runner.stop()
out["stop_seconds"] = time.monotonic() - t0
out["proc_cleared"] = runner._proc is None
out["returncode"] = proc.returncode
deadline = time.monotonic() + 3
while any(alive(p) for p in tree) and time.monotonic() < deadline:
    time.sleep(0.02)
out["leftover"] = [p for p in tree if alive(p)]
out["stderr"] = proc.stderr.read()
print(json.dumps(out))
"#;

const GREETER: &str = r#"
import sys
from nodus_extension.worker import register_tool, run_loop

def greet(args):
    return f"Hello, {args['name']}!"

def fail(args):
    raise RuntimeError(args["why"])

sys.stderr.write("greeter ready\n")
register_tool("proto.greet", greet)
register_tool("proto.fail", fail)
run_loop()
"#;

#[test]
fn reference_host_drives_a_worker_through_ext_runner_run() {
    let Some(ref_py) = common::require_ref_venv() else {
        return;
    };
    let dir = ext(
        "proto.greeter",
        &["tool.invoke"],
        &["proto.greet", "proto.fail"],
        GREETER,
    );
    let out = Command::new(&ref_py)
        .args(["-c", REFERENCE_HOST])
        .arg(common::ext_runner())
        .arg(dir.path())
        .arg(common::python())
        .output()
        .expect("run the reference host");
    assert!(
        out.status.success(),
        "reference host failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(r["greet"], "Hello, Zoë!");
    let many: Vec<String> = (0..20).map(|i| format!("Hello, {i}!")).collect();
    assert_eq!(r["many"], json!(many));
    assert_eq!(r["fail"], json!(["on purpose", "proto.fail"]));
    assert_eq!(r["missing"], "tool not found: 'proto.nope'");
    assert!(
        r["tree_size"].as_u64().unwrap() >= 2,
        "ext-runner and its worker: {r}"
    );
    assert_eq!(r["proc_cleared"], true);
    // The worker left run_loop on shutdown and ext-runner exited cleanly, within the grace period.
    assert_eq!(r["returncode"], 0, "{r}");
    assert!(r["stop_seconds"].as_f64().unwrap() < 1.9, "{r}");
    assert_eq!(r["leftover"], json!([]), "processes left after stop(): {r}");
    // `run` forwards the worker's stderr.
    assert!(
        r["stderr"].as_str().unwrap().contains("greeter ready"),
        "{r}"
    );
}

/// Echoes each request line, as received, back as its result.
const ECHO_RAW: &str = r#"
import json, sys
for raw in sys.stdin.buffer:
    line = raw.decode("ascii")  # ensure_ascii: a non-ASCII byte is a failure
    msg = json.loads(line)
    if msg.get("op") == "shutdown":
        break
    result = {"raw": line, "redumped": json.dumps(msg) + "\n"}
    sys.stdout.write(json.dumps({"id": msg["id"], "ok": True, "result": result}) + "\n")
    sys.stdout.flush()
"#;

async fn echo_raw(host: &ExtensionHost, args_json: &str) -> (String, String) {
    let r = host.invoke("proto.echo", args_json).await.expect("echo");
    (
        r["raw"].as_str().unwrap().to_string(),
        r["redumped"].as_str().unwrap().to_string(),
    )
}

fn request_id(raw: &str) -> String {
    let v: Value = serde_json::from_str(raw).unwrap();
    v["id"].as_str().expect("string id").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn invoke_line_is_byte_for_byte_json_dumps() {
    let dir = ext("proto.echo", &["tool.invoke"], &["proto.echo"], ECHO_RAW);
    let host = ExtensionHost::load(dir.path(), common::options())
        .await
        .expect("load");
    let args = r#"{"name": "Zoë", "cjk": "中文", "emoji": "😀", "quote": "\"'\\/", "ctl": "\u0007\n\t\r\u001f\b\f", "nested": {"list": [1, -2, 2.5, 0.1, 123456789012345678901234567890, true, false, null], "empty": {}, "el": []}, "": "empty key"}"#;
    let (raw, redumped) = echo_raw(&host, args).await;
    assert_eq!(raw, redumped, "our line differs from json.dumps of itself");
    let id = request_id(&raw);
    // uuid4 shape, as str(uuid.uuid4()).
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12],
        "{id}"
    );
    assert!(
        parts[2].starts_with('4') && "89ab".contains(&parts[3][..1]),
        "{id}"
    );
    let expected = format!(
        r#"{{"id": "{id}", "op": "invoke", "name": "proto.echo", "args": {{"name": "Zo\u00eb", "cjk": "\u4e2d\u6587", "emoji": "\ud83d\ude00", "quote": "\"'\\/", "ctl": "\u0007\n\t\r\u001f\b\f", "nested": {{"list": [1, -2, 2.5, 0.1, 123456789012345678901234567890, true, false, null], "empty": {{}}, "el": []}}, "": "empty key"}}}}
"#
    );
    assert_eq!(raw, expected);
    // Ids never repeat.
    let (raw2, _) = echo_raw(&host, "{}").await;
    assert_ne!(request_id(&raw2), id);
    assert!(
        raw2.ends_with("\"op\": \"invoke\", \"name\": \"proto.echo\", \"args\": {}}\n"),
        "{raw2:?}"
    );
    host.unload().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invoke_line_escapes_del_as_json_dumps_does() {
    let dir = ext("proto.echo", &["tool.invoke"], &["proto.echo"], ECHO_RAW);
    let host = ExtensionHost::load(dir.path(), common::options())
        .await
        .expect("load");
    let (raw, redumped) = echo_raw(&host, r#"{"del": "a\u007fb"}"#).await;
    assert!(raw.contains(r#""del": "a\u007fb""#), "{raw:?}");
    assert_eq!(raw, redumped);
    host.unload().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invoke_line_writes_numbers_as_json_dumps_does() {
    let dir = ext("proto.echo", &["tool.invoke"], &["proto.echo"], ECHO_RAW);
    let host = ExtensionHost::load(dir.path(), common::options())
        .await
        .expect("load");
    let (raw, redumped) = echo_raw(&host, r#"{"n": [1E2, -0, 1e16, 0.00001, 1.50]}"#).await;
    assert!(
        raw.contains(r#""n": [100.0, 0, 1e+16, 1e-05, 1.5]"#),
        "{raw:?}"
    );
    assert_eq!(raw, redumped);
    // The same for values built in Rust (f64 through serde_json's own formatter).
    let r = host
        .invoke_value("proto.echo", json!({"f": [1e16, 0.00001, 1e100]}))
        .await
        .unwrap();
    let raw = r["raw"].as_str().unwrap();
    assert!(raw.contains(r#""f": [1e+16, 1e-05, 1e+100]"#), "{raw:?}");
    host.unload().await;
}

/// A worker that notes its graceful exit (after run_loop returns) in the workspace.
const NOTES_EXIT: &str = r#"
import os
from nodus_extension.worker import register_tool, run_loop
register_tool("proto.ping", lambda args: "pong")
run_loop()
with open(os.path.join(__WS__, "exited"), "w") as f:
    f.write("left run_loop\n")
"#;

#[tokio::test(flavor = "multi_thread")]
async fn unload_shuts_the_worker_down() {
    let ws = TempDir::new("ws");
    let ws_real = std::fs::canonicalize(ws.path()).unwrap();
    let dir = ext(
        "proto.exit",
        &["tool.invoke", "filesystem.write"],
        &["proto.ping"],
        &NOTES_EXIT.replace("__WS__", &py_str(&ws_real)),
    );
    let options = common::options().with_workspace(ws_real.clone());
    let host = ExtensionHost::load(dir.path(), options)
        .await
        .expect("load");
    assert_eq!(host.invoke("proto.ping", "{}").await.unwrap(), "pong");
    let pid = host.worker_pid().await.expect("a running worker");
    let tree: Vec<i32> = std::iter::once(pid)
        .chain(common::procfs::descendants(pid).into_iter().map(|d| d.pid))
        .collect();
    assert!(tree.iter().all(|&p| common::pid_alive(p)));
    let t0 = Instant::now();
    host.unload().await;
    let took = t0.elapsed();
    for p in &tree {
        assert!(
            common::wait_gone(*p, Duration::from_secs(2)),
            "process {p} survived unload"
        );
    }
    assert!(!host.is_loaded());
    assert_eq!(host.worker_pid().await, None);
    // It left on {"op": "shutdown"}, not by the kill after the 2 s grace period.
    assert_eq!(
        std::fs::read_to_string(ws_real.join("exited")).unwrap_or_default(),
        "left run_loop\n"
    );
    assert!(took < Duration::from_millis(1900), "unload took {took:?}");
    // An unloaded host refuses invokes.
    let err = host.invoke("proto.ping", "{}").await.unwrap_err();
    assert_eq!(err.class(), "SandboxError");
    assert_eq!(
        err.sandbox_kind(),
        Some(nodus_extension::error::SandboxKind::NotLoaded)
    );
}
