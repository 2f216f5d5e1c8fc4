//! The supervised host with real worker processes: capability gate, registry,
//! timeouts, worker death, concurrency, hostile output. Async API and the
//! blocking facade.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodus_extension::RestartPolicy;
use nodus_extension::{blocking, Error, ExtensionHost, ExtensionRegistry, HostOptions};
use serde_json::{json, Value};

use common::{ext, py_str, TempDir};

/// Waits (up to 5 s) until `host` has reaped its killed worker.
async fn no_live_worker(host: &ExtensionHost) {
    let end = Instant::now() + Duration::from_secs(5);
    while host.worker_pid().await.is_some() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A workspace folder the worker may write to (`filesystem.write`), canonical.
fn workspace() -> (TempDir, PathBuf) {
    let ws = TempDir::new("ws");
    let real = std::fs::canonicalize(ws.path()).unwrap();
    (ws, real)
}

fn with_workspace(ws: &Path) -> HostOptions {
    common::options().with_workspace(ws.to_path_buf())
}

/// Notes its start in WS/started and each invoke in WS/invoked.
const LOGGING_WORKER: &str = r#"
import os
from nodus_extension.worker import register_tool, run_loop
WS = __WS__
def note(name, text):
    with open(os.path.join(WS, name), "a") as f:
        f.write(text + "\n")
note("started", __DIR__)
def ping(args):
    note("invoked", "ping")
    return "pong"
register_tool("cap.ping", ping)
run_loop()
"#;

fn logging_ext(name: &str, caps: &[&str], ws: &Path) -> TempDir {
    let dir = TempDir::new("ext");
    let src = LOGGING_WORKER
        .replace("__WS__", &py_str(ws))
        .replace("__DIR__", &py_str(dir.path()));
    std::fs::write(dir.join("extension.py"), src).unwrap();
    std::fs::write(
        dir.join("nodus-extension.json"),
        common::manifest_json(name, caps, &["cap.ping"]),
    )
    .unwrap();
    dir
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn invoke_requires_tool_invoke_and_sends_nothing_without_it() {
    let (_ws, ws) = workspace();
    let dir = logging_ext("cap.without", &["filesystem.write"], &ws);
    let host = ExtensionHost::load(dir.path(), with_workspace(&ws))
        .await
        .expect("load");
    // The worker is up and able to log: a request, had one been sent, would show.
    assert_eq!(
        common::wait_lines(&ws.join("started"), 1, Duration::from_secs(10))
            .lines()
            .count(),
        1
    );
    assert!(host.worker_pid().await.is_some());
    for _ in 0..3 {
        let err = host.invoke("cap.ping", "{}").await.unwrap_err();
        assert!(
            matches!(&err, Error::Capability { capability, .. } if capability == "tool.invoke"),
            "{err:?}"
        );
        assert_eq!(err.class(), "CapabilityError");
        assert_eq!(
            err.to_string(),
            "'cap.without' extension lacks capability: 'tool.invoke'"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lines(&ws.join("invoked")), Vec::<String>::new());
    host.unload().await;

    // Control: the same worker with the capability does log each invoke.
    let dir = logging_ext("cap.with", &["tool.invoke", "filesystem.write"], &ws);
    let host = ExtensionHost::load(dir.path(), with_workspace(&ws))
        .await
        .expect("load");
    assert_eq!(host.invoke("cap.ping", "{}").await.unwrap(), "pong");
    assert_eq!(lines(&ws.join("invoked")), ["ping"]);
    host.unload().await;
}

#[test]
fn blocking_invoke_requires_tool_invoke() {
    let (_ws, ws) = workspace();
    let dir = logging_ext("cap.blocking", &["filesystem.write"], &ws);
    let reg = blocking::ExtensionRegistry::new(with_workspace(&ws)).unwrap();
    let host = reg.load(dir.path()).expect("load");
    assert_eq!(host.name(), "cap.blocking");
    common::wait_lines(&ws.join("started"), 1, Duration::from_secs(10));
    let err = reg.invoke("cap.blocking", "cap.ping", "{}").unwrap_err();
    assert_eq!(err.class(), "CapabilityError", "{err}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(lines(&ws.join("invoked")), Vec::<String>::new());
    // Unknown extension: RegistryError.
    let err = reg.invoke("cap.nope", "cap.ping", "{}").unwrap_err();
    assert_eq!(err.class(), "RegistryError");
    reg.unload("cap.blocking").unwrap();
    assert_eq!(
        reg.unload("cap.blocking").unwrap_err().class(),
        "RegistryError"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_name_is_refused_before_a_second_worker_starts() {
    let (_ws, ws) = workspace();
    let caps = ["tool.invoke", "filesystem.write"];
    let first = logging_ext("dup.same", &caps, &ws);
    let second = logging_ext("dup.same", &caps, &ws);
    let reg = ExtensionRegistry::new(with_workspace(&ws));
    reg.load(first.path()).await.expect("first load");
    let started = common::wait_lines(&ws.join("started"), 1, Duration::from_secs(10));
    assert_eq!(started.lines().count(), 1);

    let err = match reg.load(second.path()).await {
        Ok(_) => panic!("a second extension named dup.same was loaded"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, Error::Registry { name: Some(n), .. } if n == "dup.same"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "extension 'dup.same' is already loaded");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Only the first folder's worker ever started.
    assert_eq!(lines(&ws.join("started")), [first.path().to_str().unwrap()]);
    // The first is untouched.
    assert_eq!(
        reg.invoke("dup.same", "cap.ping", "{}").await.unwrap(),
        "pong"
    );
    assert_eq!(reg.list().await.len(), 1);
    reg.shutdown().await;
}

#[test]
fn blocking_duplicate_name_is_refused() {
    let (_ws, ws) = workspace();
    let caps = ["tool.invoke", "filesystem.write"];
    let first = logging_ext("dup.blocking", &caps, &ws);
    let second = logging_ext("dup.blocking", &caps, &ws);
    let reg = blocking::ExtensionRegistry::new(with_workspace(&ws)).unwrap();
    reg.load(first.path()).expect("first load");
    common::wait_lines(&ws.join("started"), 1, Duration::from_secs(10));
    let err = reg.load(second.path()).err().expect("duplicate refused");
    assert_eq!(err.class(), "RegistryError");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(&ws.join("started")).len(), 1);
    assert_eq!(
        reg.invoke("dup.blocking", "cap.ping", "{}").unwrap(),
        "pong"
    );
}

/// `hang` starts a grandchild (`sleep 1000`) and never answers.
const HANGING_WORKER: &str = r#"
import os, subprocess, time
from nodus_extension.worker import register_tool, run_loop
def ping(args):
    return "pong"
def hang(args):
    subprocess.Popen(["sleep", "1000"])
    time.sleep(1000)
register_tool("slow.ping", ping)
register_tool("slow.hang", hang)
run_loop()
"#;

fn hanging_ext() -> TempDir {
    ext(
        "slow.hang",
        &["tool.invoke", "subprocess.run"],
        &["slow.ping", "slow.hang"],
        HANGING_WORKER,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_kills_the_worker_and_its_grandchild_then_restarts() {
    let dir = hanging_ext();
    let options = common::options().with_timeout(Duration::from_millis(1500));
    let host = Arc::new(
        ExtensionHost::load(dir.path(), options)
            .await
            .expect("load"),
    );
    assert_eq!(host.invoke("slow.ping", "{}").await.unwrap(), "pong");
    let pid = host.worker_pid().await.expect("worker running");
    assert_eq!(host.worker_starts(), 1);

    let t0 = Instant::now();
    let hung = tokio::spawn({
        let host = host.clone();
        async move { host.invoke("slow.hang", "{}").await }
    });
    let tree = tokio::task::spawn_blocking(move || {
        common::wait_descendant(pid, "sleep", Duration::from_secs(5))
    })
    .await
    .unwrap()
    .expect("the worker started `sleep 1000`");
    let err = hung.await.unwrap().unwrap_err();
    let took = t0.elapsed();
    assert!(
        matches!(&err, Error::Timeout { tool_name: Some(t), timeout: Some(d) } if t == "slow.hang" && *d == Duration::from_millis(1500)),
        "{err:?}"
    );
    assert_eq!(err.class(), "TimeoutError");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let mut all: Vec<i32> = tree.iter().map(|t| t.0).collect();
    all.push(pid);
    assert!(tree.iter().any(|(_, c)| c == "sleep"));
    for p in all {
        assert!(
            common::wait_gone(p, Duration::from_secs(2)),
            "process {p} survived the timeout ({tree:?})"
        );
    }
    // The next invoke gets a fresh worker (once the host has seen the old one
    // die: see `invoke_right_after_a_timeout_gets_a_fresh_worker` for without).
    no_live_worker(&host).await;
    assert_eq!(host.invoke("slow.ping", "{}").await.unwrap(), "pong");
    assert_eq!(host.worker_starts(), 2);
    let fresh = host.worker_pid().await.expect("a new worker");
    assert_ne!(fresh, pid);
    host.unload().await;
}

/// No pause between the timeout and the next invoke, which must not be handed
/// the dying worker (regression: it was, until 0f9dcd2).
#[tokio::test(flavor = "multi_thread")]
async fn invoke_right_after_a_timeout_gets_a_fresh_worker() {
    let dir = hanging_ext();
    let options = common::options().with_timeout(Duration::from_millis(700));
    let host = ExtensionHost::load(dir.path(), options)
        .await
        .expect("load");
    for round in 0..3 {
        let err = host.invoke("slow.hang", "{}").await.unwrap_err();
        assert_eq!(err.class(), "TimeoutError", "round {round}: {err}");
        // No pause: the killed worker may not be reaped yet.
        let r = host.invoke("slow.ping", "{}").await;
        assert_eq!(
            r.as_ref().ok(),
            Some(&json!("pong")),
            "round {round}: {r:?}"
        );
    }
    host.unload().await;
}

#[test]
fn blocking_timeout_then_fresh_worker() {
    let dir = hanging_ext();
    let reg = blocking::ExtensionRegistry::new(
        common::options().with_timeout(Duration::from_millis(800)),
    )
    .unwrap();
    let host = reg.load(dir.path()).expect("load");
    let err = reg.invoke("slow.hang", "slow.hang", "{}").unwrap_err();
    assert_eq!(err.class(), "TimeoutError");
    // See `invoke_right_after_a_timeout_gets_a_fresh_worker`.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(no_live_worker(&host));
    assert_eq!(reg.invoke("slow.hang", "slow.ping", "{}").unwrap(), "pong");
    assert_eq!(host.worker_starts(), 2);
}

/// Tools that end the worker in the middle of an invoke, after `pause`
/// seconds (time for the host to drain stderr: see
/// `death_message_has_the_last_stderr_line_right_away`).
const DYING_WORKER: &str = r#"
import os, signal, sys, time
from nodus_extension.worker import register_tool, run_loop
def exit3(args):
    sys.stderr.write("first line\nlast words: exiting with 3\n")
    sys.stderr.flush()
    time.sleep(args.get("pause", 0))
    os._exit(3)
def sigkill(args):
    sys.stderr.write("last words: SIGKILL myself\n")
    sys.stderr.flush()
    time.sleep(args.get("pause", 0))
    os.kill(os.getpid(), signal.SIGKILL)
    return "still alive after SIGKILL"
register_tool("die.exit3", exit3)
register_tool("die.sigkill", sigkill)
register_tool("die.ping", lambda args: "pong")
run_loop()
"#;

/// Restarts at once and without limit: for tests that kill workers on purpose.
fn tolerant() -> HostOptions {
    common::options().with_restart(
        RestartPolicy::default()
            .with_max_failures(1000)
            .with_backoff_base(Duration::ZERO),
    )
}

fn dying_ext() -> TempDir {
    ext(
        "die.ext",
        &["tool.invoke"],
        &["die.exit3", "die.sigkill", "die.ping"],
        DYING_WORKER,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_death_is_a_sandbox_error_with_the_last_stderr_line() {
    let dir = dying_ext();
    let host = ExtensionHost::load(dir.path(), tolerant())
        .await
        .expect("load");
    for _ in 0..3 {
        let err = host
            .invoke("die.exit3", r#"{"pause": 0.2}"#)
            .await
            .unwrap_err();
        assert_eq!(err.class(), "SandboxError", "{err}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "extension worker closed stdout unexpectedly: worker exited with status 3"
            ) && msg.ends_with("\nstderr:\n  first line\n  last words: exiting with 3"),
            "the stderr tail ends the message, its lines indented: {msg}"
        );
        // And the host recovers at once.
        assert_eq!(host.invoke("die.ping", "{}").await.unwrap(), "pong");
    }
    host.unload().await;
}

/// No pause between the death and the next invoke (the dead worker's folders
/// may still exist; regression for the naming collision fixed in 11182cd).
#[tokio::test(flavor = "multi_thread")]
async fn invoke_right_after_a_worker_death_gets_a_fresh_worker() {
    let dir = dying_ext();
    let host = ExtensionHost::load(dir.path(), tolerant())
        .await
        .expect("load");
    for round in 0..5 {
        let err = host.invoke("die.exit3", "{}").await.unwrap_err();
        assert_eq!(err.class(), "SandboxError", "round {round}: {err}");
        let r = host.invoke("die.ping", "{}").await;
        assert_eq!(
            r.as_ref().ok(),
            Some(&json!("pong")),
            "round {round}: {r:?}"
        );
    }
    host.unload().await;
}

/// Regression (fixed in 8b61374): the reader killed the pid-namespace parent
/// before it passed the worker's exit status on, so every exit read as SIGKILL.
#[tokio::test(flavor = "multi_thread")]
async fn worker_exit_status_is_reported() {
    let dir = dying_ext();
    let host = ExtensionHost::load(dir.path(), tolerant())
        .await
        .expect("load");
    for round in 0..8 {
        let err = host.invoke("die.exit3", "{}").await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("exited with status 3"), "round {round}: {msg}");
    }
    host.unload().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_killing_itself_is_reported_with_its_signal() {
    let dir = dying_ext();
    let host = ExtensionHost::load(dir.path(), tolerant())
        .await
        .expect("load");
    let r = host.invoke("die.sigkill", r#"{"pause": 0.2}"#).await;
    let err = r.expect_err("the worker SIGKILLed itself; it cannot answer");
    assert_eq!(err.class(), "SandboxError");
    let msg = err.to_string();
    assert!(msg.contains("signal 9 (SIGKILL)"), "{msg}");
    assert!(msg.ends_with("last words: SIGKILL myself"), "{msg}");
    host.unload().await;
}

/// Answers each invoke from its own thread after a random pause, so answers
/// leave in a different order than requests came in. Reports both orders.
const CONCURRENT_WORKER: &str = r#"
import json, random, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
pool = ThreadPoolExecutor(max_workers=8)  # the worker may have at most 64 tasks
out_lock = threading.Lock()
counters = {"in": 0, "out": 0}
def answer(msg, seq_in):
    time.sleep(random.random() * 0.01)
    with out_lock:
        seq_out = counters["out"]
        counters["out"] += 1
        result = {"n": msg["args"]["n"], "in": seq_in, "out": seq_out}
        sys.stdout.write(json.dumps({"id": msg["id"], "ok": True, "result": result}) + "\n")
        sys.stdout.flush()
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("op") == "shutdown":
        break
    seq_in = counters["in"]
    counters["in"] += 1
    pool.submit(answer, msg, seq_in)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_invokes_each_get_their_own_answer() {
    let dir = ext(
        "conc.ext",
        &["tool.invoke"],
        &["conc.echo"],
        CONCURRENT_WORKER,
    );
    let host = Arc::new(
        ExtensionHost::load(dir.path(), common::options())
            .await
            .expect("load"),
    );
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            let calls = (0..25u64).map(|i| {
                let host = host.clone();
                async move {
                    let n = t * 1000 + i;
                    let r = host
                        .invoke_value("conc.echo", json!({ "n": n }))
                        .await
                        .expect("invoke");
                    (n, r)
                }
            });
            futures_join_all(calls.collect()).await
        }));
    }
    let mut results: Vec<(u64, Value)> = Vec::new();
    for t in tasks {
        results.extend(t.await.unwrap());
    }
    assert_eq!(results.len(), 200);
    let mut reordered = 0;
    for (n, r) in &results {
        assert_eq!(r["n"].as_u64(), Some(*n), "answer for {n}: {r}");
        if r["in"] != r["out"] {
            reordered += 1;
        }
    }
    assert!(
        reordered > 0,
        "answers never came out of order; the test proves nothing"
    );
    let mut seen: Vec<u64> = results.iter().map(|(n, _)| *n).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 200);
    assert_eq!(host.worker_starts(), 1);
    host.unload().await;
}

/// Runs futures concurrently on the current task (no extra crate).
async fn futures_join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

/// Before the real answer: noise the host must ignore.
const NOISY_WORKER: &str = r#"
import json, sys
def w(b):
    sys.stdout.buffer.write(b + b"\n")
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("op") == "shutdown":
        break
    w(b"")
    w(b"   ")
    w(b"garbage")
    w(b"\xff\xfe not utf-8")
    w(b"[1, 2, 3]")
    w(b'"a string"')
    w(b"{}")
    w(b'{"ok": true, "result": "no id"}')
    w(b'{"id": 42, "ok": true, "result": "numeric id"}')
    w(b'{"id": null, "ok": true, "result": "null id"}')
    w(json.dumps({"id": "not-a-request", "ok": True, "result": "unsolicited"}).encode())
    w(json.dumps({"id": msg["id"] + "x", "ok": True, "result": "near miss"}).encode())
    w(b'{"id": "' + msg["id"].encode() + b'", "ok": tru')
    w(json.dumps({"id": msg["id"], "ok": True, "result": {"real": msg["args"]}}).encode())
    w(json.dumps({"id": msg["id"], "ok": True, "result": "duplicate"}).encode())
    sys.stdout.flush()
"#;

#[tokio::test(flavor = "multi_thread")]
async fn unsolicited_and_garbage_lines_are_ignored() {
    let dir = ext("noise.ext", &["tool.invoke"], &["noise.echo"], NOISY_WORKER);
    let host = ExtensionHost::load(dir.path(), common::options())
        .await
        .expect("load");
    let pid = host.worker_pid().await;
    for i in 0..3 {
        let r = host
            .invoke_value("noise.echo", json!({ "i": i }))
            .await
            .expect("the real answer");
        assert_eq!(r, json!({"real": {"i": i}}));
    }
    assert_eq!(host.worker_pid().await, pid, "the worker was not restarted");
    assert_eq!(host.worker_starts(), 1);
    host.unload().await;
}

/// `big` writes one 64 MiB line; `small` answers with about `size` bytes.
const BIG_LINE_WORKER: &str = r#"
import json, sys
from nodus_extension.worker import register_tool, run_loop
def big(args):
    chunk = "x" * (1 << 20)
    for _ in range(64):
        sys.stdout.write(chunk)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "unreachable"
register_tool("big.line", big)
register_tool("big.small", lambda args: "y" * args["size"])
run_loop()
"#;

#[tokio::test(flavor = "multi_thread")]
async fn overlong_line_is_a_sandbox_error_and_memory_stays_bounded() {
    let dir = ext(
        "big.ext",
        &["tool.invoke"],
        &["big.line", "big.small"],
        BIG_LINE_WORKER,
    );
    let options = common::options().with_max_line(1024);
    let host = ExtensionHost::load(dir.path(), options)
        .await
        .expect("load");
    // Just under the limit: fine.
    let r = host
        .invoke_value("big.small", json!({"size": 900}))
        .await
        .unwrap();
    assert_eq!(r.as_str().map(str::len), Some(900));
    let before = common::peak_rss_kib();
    let pid = host.worker_pid().await.unwrap();
    let err = host.invoke_value("big.line", json!({})).await.unwrap_err();
    assert_eq!(err.class(), "SandboxError", "{err}");
    assert!(
        err.to_string().contains("longer than the 1024 byte limit"),
        "{err}"
    );
    let grown_mib = (common::peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(
        grown_mib < 24,
        "peak memory grew by {grown_mib} MiB reading a 64 MiB line"
    );
    assert!(
        common::wait_gone(pid, Duration::from_secs(2)),
        "the worker was not killed"
    );
    // Over the limit by a little: also refused.
    let err = host
        .invoke_value("big.small", json!({"size": 1100}))
        .await
        .unwrap_err();
    assert_eq!(err.class(), "SandboxError", "{err}");
    // And a fresh worker answers.
    let r = host
        .invoke_value("big.small", json!({"size": 10}))
        .await
        .unwrap();
    assert_eq!(r, "yyyyyyyyyy");
    host.unload().await;
}

/// Floods stderr (`mib` MiB, 64 times a pipe's buffer) and then answers;
/// `flood_die` floods and exits.
const STDERR_FLOOD_WORKER: &str = r#"
import os, sys
from nodus_extension.worker import register_tool, run_loop
def flood(args):
    chunk = "e" * 1023 + "\n"
    for _ in range(int(args.get("mib", 4) * 1024)):
        sys.stderr.write(chunk)
    sys.stderr.flush()
    return "done"
def flood_die(args):
    if args.get("big_pipe"):
        import fcntl
        fcntl.fcntl(2, 1031, 1 << 20)  # F_SETPIPE_SZ: 1 MiB of stderr may be in flight
    flood(args)
    sys.stderr.write("the very last line\n")
    sys.stderr.flush()
    os._exit(1)
register_tool("flood.ok", flood)
register_tool("flood.die", flood_die)
run_loop()
"#;

#[tokio::test(flavor = "multi_thread")]
async fn stderr_flood_does_not_block_the_worker() {
    let dir = ext(
        "flood.ext",
        &["tool.invoke"],
        &["flood.ok", "flood.die"],
        STDERR_FLOOD_WORKER,
    );
    let options = common::options().with_timeout(Duration::from_secs(10));
    let host = ExtensionHost::load(dir.path(), options)
        .await
        .expect("load");
    let t0 = Instant::now();
    assert_eq!(
        host.invoke("flood.ok", r#"{"mib": 8}"#).await.unwrap(),
        "done"
    );
    assert_eq!(
        host.invoke("flood.ok", r#"{"mib": 1}"#).await.unwrap(),
        "done"
    );
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    // When it dies, only a bounded tail of what it wrote is quoted. (A small
    // flood here: after a big one the tail may be cut short, see
    // `death_message_has_the_last_stderr_line_even_after_a_flood`.)
    let err = host
        .invoke("flood.die", r#"{"mib": 0.01}"#)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.class(), "SandboxError");
    assert!(
        msg.ends_with("the very last line"),
        "{}",
        &msg[msg.len().saturating_sub(200)..]
    );
    assert!(msg.len() < 16 * 1024, "message of {} bytes", msg.len());
    host.unload().await;
}

/// The worker writes to stderr and exits at once: the host must read stderr
/// to its end before it quotes the tail.
#[tokio::test(flavor = "multi_thread")]
async fn death_message_has_the_last_stderr_line_right_away() {
    let dir = dying_ext();
    let host = ExtensionHost::load(dir.path(), tolerant())
        .await
        .expect("load");
    for round in 0..20 {
        let msg = host
            .invoke("die.exit3", "{}")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.ends_with("last words: exiting with 3"),
            "round {round}: {msg}"
        );
    }
    host.unload().await;
}

/// The worker enlarges its stderr pipe to 1 MiB, fills it and dies: the host
/// must read stderr to its end before it quotes the tail.
#[tokio::test(flavor = "multi_thread")]
async fn death_message_has_the_last_stderr_line_even_after_a_flood() {
    let dir = ext(
        "flood.ext",
        &["tool.invoke"],
        &["flood.ok", "flood.die"],
        STDERR_FLOOD_WORKER,
    );
    let host = ExtensionHost::load(dir.path(), tolerant())
        .await
        .expect("load");
    for round in 0..6 {
        let err = host
            .invoke("flood.die", r#"{"mib": 2, "big_pipe": true}"#)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.ends_with("the very last line"),
            "round {round}: ...{}",
            &msg[msg.len().saturating_sub(120)..]
        );
    }
    host.unload().await;
}

/// Regression (fixed in 11182cd): scratch folder and pids cgroup names were
/// constant per process, so a second live worker could not start.
#[tokio::test(flavor = "multi_thread")]
async fn two_workers_at_once_in_one_process() {
    let a = ext("two.a", &["tool.invoke"], &["die.ping"], DYING_WORKER);
    let b = ext("two.b", &["tool.invoke"], &["die.ping"], DYING_WORKER);
    let reg = ExtensionRegistry::new(common::options());
    reg.load(a.path()).await.expect("first worker");
    reg.load(b.path())
        .await
        .expect("second worker, while the first runs");
    assert_eq!(reg.invoke("two.a", "die.ping", "{}").await.unwrap(), "pong");
    assert_eq!(reg.invoke("two.b", "die.ping", "{}").await.unwrap(), "pong");
    reg.shutdown().await;
}

#[test]
fn a_worker_outlives_the_thread_that_started_it() {
    // The parent-death signal of a worker fires when the *thread* that forked
    // it ends; workers are forked on the launcher thread, not the caller's.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let d = ext(
        "t.thread",
        &["tool.invoke"],
        &["t.pid"],
        "import os\nfrom nodus_extension.worker import register_tool, run_loop\nregister_tool('t.pid', lambda a: os.getpid())\nrun_loop()\n",
    );
    let handle = runtime.handle().clone();
    let dir = d.path().to_path_buf();
    // Loaded (and its worker forked) on a thread that then ends.
    let host = std::thread::spawn(move || {
        handle.block_on(async { ExtensionHost::load(&dir, common::options()).await.unwrap() })
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = runtime.block_on(host.worker_pid()).expect("a worker");
    assert!(
        common::pid_alive(pid),
        "the worker died with the thread that started it"
    );
    runtime.block_on(async {
        host.invoke("t.pid", "{}").await.unwrap();
        assert_eq!(host.worker_starts(), 1, "the worker was restarted");
        host.unload().await;
    });
}

#[test]
fn a_runtime_without_io_gets_an_error_and_the_launcher_lives_on() {
    let d = ext(
        "t.noio",
        &["tool.invoke"],
        &["t.one"],
        "from nodus_extension.worker import register_tool, run_loop\nregister_tool('t.one', lambda a: 1)\nrun_loop()\n",
    );
    let bare = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let err = match bare.block_on(ExtensionHost::load(d.path(), common::options())) {
        Ok(_) => panic!("a worker started on a runtime without I/O"),
        Err(e) => e,
    };
    assert_eq!(err.class(), "SandboxError", "{err}");
    // The launcher thread survived the panic inside it.
    let full = tokio::runtime::Runtime::new().unwrap();
    full.block_on(async {
        let host = ExtensionHost::load(d.path(), common::options())
            .await
            .unwrap();
        assert_eq!(host.invoke("t.one", "{}").await.unwrap(), json!(1));
        host.unload().await;
    });
}
