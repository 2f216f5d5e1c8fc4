//! Faults and bad input: every misbehaviour of a worker and every wrong input
//! from the host side ends in a documented error class with a message a user
//! can act on, with no hang, and the host keeps serving (docs/errors.md).

mod common;

use std::time::{Duration, Instant};

use common::{ext, options, write_ext, TempDir};
use nodus_extension::error::SandboxKind;
use nodus_extension::RestartPolicy;
use nodus_extension::SchemaMode;
use nodus_extension::{Error, ExtensionHost, ExtensionRegistry, HostOptions};
use serde_json::json;

const T: &[&str] = &["tool.invoke"];

/// A worker whose tool `t.x.run` executes `body` (Python, indented by 4) with `args`.
fn worker(body: &str) -> String {
    format!(
        "import json, os, sys, time\nfrom nodus_extension.worker import register_tool, run_loop\n\ndef run(args):\n{}\n\nregister_tool('t.x.run', run)\nrun_loop()\n",
        body.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
    )
}

async fn load(source: &str, opts: HostOptions) -> (TempDir, ExtensionHost) {
    let dir = ext("t.x", T, &["t.x.run"], source);
    let host = ExtensionHost::load(dir.path(), opts).await.unwrap();
    (dir, host)
}

fn short(timeout_ms: u64) -> HostOptions {
    options().with_timeout(Duration::from_millis(timeout_ms))
}

fn assert_class(
    r: &nodus_extension::Result<serde_json::Value>,
    class: &str,
    needle: &str,
) -> String {
    let e = r.as_ref().expect_err("expected an error");
    assert_eq!(e.class(), class, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(needle), "message lacks {needle:?}: {msg}");
    msg
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_fails_at_start_up_says_why() {
    let src = "import json\nimport no_such_module_xyz\n";
    let (_d, host) = load(src, options()).await;
    let r = host.invoke("t.x.run", "{}").await;
    let msg = assert_class(&r, "SandboxError", "exited with status 1");
    assert!(
        msg.contains("No module named 'no_such_module_xyz'"),
        "the stderr tail explains it: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_interpreter_or_entry_is_refused_at_load() {
    let dir = ext("t.x", T, &["t.x.run"], &worker("return 1"));
    let opts = options().with_python("/nonexistent/python3");
    let err = ExtensionHost::load(dir.path(), opts)
        .await
        .err()
        .expect("load must fail");
    assert_eq!(err.class(), "SandboxError");
    assert!(err.to_string().contains("/nonexistent/python3"), "{err}");
    assert_eq!(err.sandbox_kind(), Some(SandboxKind::Interpreter));
    let source = std::error::Error::source(&err).expect("the io::Error is kept");
    assert_eq!(
        source.downcast_ref::<std::io::Error>().map(|e| e.kind()),
        Some(std::io::ErrorKind::NotFound)
    );

    let no_entry = write_ext(Some(&common::manifest_json("t.x", T, &["t.x.run"])), None);
    let err = ExtensionHost::load(no_entry.path(), options())
        .await
        .err()
        .unwrap();
    assert_eq!(err.class(), "SandboxError");
    assert!(err.to_string().contains("extension.py"), "{err}");
    assert_eq!(err.sandbox_kind(), Some(SandboxKind::EntryPoint));

    // An entry outside the extension folder is refused; one that is not a
    // command line is ignored, as the reference ignores it, and the missing
    // extension.py is what the error is about.
    for (entry, class) in [
        (json!(["/bin/sh"]), "ManifestError"),
        (json!(["../outside"]), "ManifestError"),
        (json!([]), "SandboxError"),
        (json!("worker"), "SandboxError"),
    ] {
        let m = json!({"name": "t.x", "version": "1", "description": "d", "capabilities": T, "entry": entry});
        let d = write_ext(Some(&m.to_string()), None);
        let err = ExtensionHost::load(d.path(), options())
            .await
            .err()
            .unwrap();
        assert_eq!(err.class(), class, "entry {entry}: {err}");
        if class == "SandboxError" {
            assert!(
                err.to_string().contains("extension.py"),
                "entry {entry}: {err}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_segfault_mid_invoke_is_reported_with_its_signal() {
    let (_d, host) = load(&worker("import ctypes\nctypes.string_at(0)"), options()).await;
    let r = host.invoke("t.x.run", "{}").await;
    assert_class(&r, "SandboxError", "signal 11 (SIGSEGV)");
}

#[tokio::test(flavor = "multi_thread")]
async fn closing_stdout_but_running_on_is_caught_without_waiting_for_the_timeout() {
    let body = "os.close(1)\ntime.sleep(1000)";
    let (_d, host) = load(
        &worker(body),
        options().with_timeout(Duration::from_secs(20)),
    )
    .await;
    let pid = host.worker_pid().await.unwrap();
    let started = Instant::now();
    let r = host.invoke("t.x.run", "{}").await;
    assert_class(&r, "SandboxError", "closed stdout");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        common::wait_gone(pid, Duration::from_secs(5)),
        "the silent worker was killed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn half_a_line_then_nothing_times_out_and_the_worker_is_killed() {
    let body =
        "sys.stdout.write('{\"id\": \"x\", \"ok\": tr')\nsys.stdout.flush()\ntime.sleep(1000)";
    let (_d, host) = load(&worker(body), short(700)).await;
    let pid = host.worker_pid().await.unwrap();
    let r = host.invoke("t.x.run", "{}").await;
    assert_class(&r, "TimeoutError", "after 0.7s");
    assert!(common::wait_gone(pid, Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_and_duplicate_ids_are_ignored() {
    // Answers twice (duplicate) and once with a wrong id before the real answer.
    let src = "import json, sys\nfor line in sys.stdin:\n    m = json.loads(line)\n    if m.get('op') == 'shutdown': break\n    \
               for i in (m['id'] + '-wrong', m['id'], m['id']):\n        sys.stdout.write(json.dumps({'id': i, 'ok': True, 'result': i}) + '\\n')\n    sys.stdout.flush()\n";
    let (_d, host) = load(src, options()).await;
    for _ in 0..5 {
        let v = host.invoke("t.x.run", "{}").await.unwrap();
        assert!(!v.as_str().unwrap().ends_with("-wrong"), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stdout_flood_is_ignored_in_bounded_memory() {
    // 64 MiB of non-JSON lines before each answer.
    let body = "chunk = ('x' * 1023 + '\\n') * 1024\nfor _ in range(64):\n    sys.stdout.write(chunk)\nreturn 'after flood'";
    let opts = options().with_max_line(4096);
    let (_d, host) = load(&worker(body), opts).await;
    let before = common::peak_rss_kib();
    assert_eq!(
        host.invoke("t.x.run", "{}").await.unwrap(),
        json!("after flood")
    );
    let grew = common::peak_rss_kib().saturating_sub(before);
    assert!(
        grew < 32 * 1024,
        "host peak RSS grew {grew} KiB reading a 64 MiB flood"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_answer_after_the_timeout_is_ignored_and_the_next_invoke_is_fresh() {
    let body = "if args.get('slow'):\n    time.sleep(1.5)\nreturn os.getpid()";
    let (_d, host) = load(&worker(body), short(500)).await;
    let r = host.invoke("t.x.run", r#"{"slow": true}"#).await;
    assert_class(&r, "TimeoutError", "timed out");
    let fresh = host.invoke("t.x.run", "{}").await.unwrap();
    assert!(fresh.is_number(), "{fresh}");
    assert_eq!(host.worker_starts(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flapping_worker_is_restarted_with_backoff_then_given_up() {
    let body = "os._exit(7)";
    let opts = options().with_restart(
        RestartPolicy::default()
            .with_max_failures(3)
            .with_window(Duration::from_secs(60))
            .with_backoff_base(Duration::from_millis(50))
            .with_backoff_max(Duration::from_millis(200)),
    );
    let (_d, host) = load(&worker(body), opts).await;
    let started = Instant::now();
    for _ in 0..3 {
        assert_class(
            &host.invoke("t.x.run", "{}").await,
            "SandboxError",
            "exited with status 7",
        );
    }
    // Failures 1 and 2 were each followed by a backoff (50 ms, 100 ms).
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    let r = host.invoke("t.x.run", "{}").await;
    assert_class(
        &r,
        "SandboxError",
        "failed 3 times in the last 60s (restart policy)",
    );
    assert_eq!(host.worker_starts(), 3, "no fourth worker was started");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_misbehaving_extension_does_not_stall_the_others() {
    let registry = ExtensionRegistry::new(short(3000));
    let bad = ext(
        "t.bad",
        T,
        &["t.bad.run"],
        "import time\ntime.sleep(1000)\n",
    );
    let good = ext("t.good", T, &["t.good.run"], "from nodus_extension.worker import register_tool, run_loop\nregister_tool('t.good.run', lambda a: 'fine')\nrun_loop()\n");
    registry.load(bad.path()).await.unwrap();
    registry.load(good.path()).await.unwrap();
    let stuck = registry.invoke("t.bad", "t.bad.run", "{}");
    let quick = async {
        let started = Instant::now();
        for _ in 0..20 {
            assert_eq!(
                registry.invoke("t.good", "t.good.run", "{}").await.unwrap(),
                json!("fine")
            );
        }
        started.elapsed()
    };
    let (stuck, took) = tokio::join!(stuck, quick);
    assert_eq!(stuck.unwrap_err().class(), "TimeoutError");
    assert!(
        took < Duration::from_secs(2),
        "the good extension waited on the bad one: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_are_refused_before_the_worker_sees_them() {
    let m = json!({
        "name": "t.x", "version": "1", "description": "d", "capabilities": ["tool.invoke", "filesystem.write"],
        "surfaces": {"tools": [{"name": "t.x.run", "description": "d", "schema": {
            "type": "object", "required": ["n"],
            "properties": {"n": {"type": "integer", "minimum": 0}, "tag": {"type": "string"}}
        }}]},
    });
    let marker = TempDir::new("marker");
    let body = format!(
        "open({:?}, 'a').write('x')\nreturn args",
        marker.join("calls").display().to_string()
    );
    let dir = write_ext(Some(&m.to_string()), Some(&worker(&body)));
    let opts = || options().with_workspace(marker.path().to_path_buf());
    let host = ExtensionHost::load(dir.path(), opts()).await.unwrap();
    assert_class(
        &host.invoke("t.x.run", "{not json").await,
        "InvokeError",
        "args is not valid JSON",
    );
    assert_class(
        &host.invoke("t.x.run", "[1, 2]").await,
        "InvokeError",
        "args must be a JSON object, got list",
    );
    assert_class(
        &host.invoke("t.x.run", r#"{"n": -1}"#).await,
        "InvokeError",
        "at /n",
    );
    assert_class(
        &host.invoke("t.x.run", r#"{"n": 1, "tag": 5}"#).await,
        "InvokeError",
        "at /tag",
    );
    assert_class(
        &host.invoke("t.x.run", r#"{}"#).await,
        "InvokeError",
        "\"n\" is a required property",
    );
    assert_class(
        &host.invoke("t.x.undeclared", "{}").await,
        "InvokeError",
        "is not declared by extension 't.x'",
    );
    assert!(
        !marker.join("calls").exists(),
        "no bad argument reached the worker"
    );
    assert_eq!(
        host.invoke("t.x.run", r#"{"n": 2}"#).await.unwrap(),
        json!({"n": 2})
    );
    assert!(marker.join("calls").exists());

    // Warn lets it through; off does not look.
    for mode in [SchemaMode::Warn, SchemaMode::Off] {
        let host = ExtensionHost::load(dir.path(), opts().with_schema_validation(mode))
            .await
            .unwrap();
        assert_eq!(
            host.invoke("t.x.run", r#"{"n": -1}"#).await.unwrap(),
            json!({"n": -1}),
            "{mode:?}"
        );
    }
    // An invalid schema is a ManifestError at load (unless validation is off).
    let bad = json!({"name": "t.y", "version": "1", "description": "d", "capabilities": T,
        "surfaces": {"tools": [{"name": "t.y.run", "description": "d", "schema": {"type": "no-such-type"}}]}});
    let d = write_ext(Some(&bad.to_string()), Some(&worker("return 1")));
    let err = ExtensionHost::load(d.path(), options())
        .await
        .err()
        .unwrap();
    assert_eq!(err.class(), "ManifestError", "{err}");
    assert!(err.to_string().contains("t.y.run"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_misuse_gets_registry_errors() {
    let registry = ExtensionRegistry::new(options());
    let d = ext("t.x", T, &["t.x.run"], &worker("return 1"));
    let unknown = registry.invoke("t.nope", "t.nope.run", "{}").await;
    assert_class(&unknown, "RegistryError", "'t.nope' is not loaded");
    registry.load(d.path()).await.unwrap();
    let again = registry.load(d.path()).await.err().unwrap();
    assert_eq!(again.class(), "RegistryError");
    registry.unload("t.x").await.unwrap();
    assert!(matches!(
        registry.unload("t.x").await,
        Err(Error::Registry { .. })
    ));
    assert_class(
        &registry.invoke("t.x", "t.x.run", "{}").await,
        "RegistryError",
        "is not loaded",
    );

    let host = ExtensionHost::load(d.path(), options()).await.unwrap();
    host.unload().await;
    assert_class(
        &host.invoke("t.x.run", "{}").await,
        "SandboxError",
        "not loaded",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_workspace_and_policy_files_are_clear_errors() {
    let d = ext(
        "t.ws",
        &["tool.invoke", "filesystem.read"],
        &["t.ws.run"],
        &worker("return 1"),
    );
    let opts = options().with_workspace("/nonexistent/workspace");
    let err = ExtensionHost::load(d.path(), opts).await.err().unwrap();
    assert_eq!(err.class(), "SandboxError");
    assert!(err.to_string().contains("/nonexistent/workspace"), "{err}");
    let err = ExtensionHost::load(d.path(), options())
        .await
        .err()
        .unwrap();
    // The library names its own option, not a command-line flag.
    assert!(
        err.to_string().contains("set HostOptions::workspace")
            && !err.to_string().contains("--workspace"),
        "filesystem.read without a workspace: {err}"
    );

    let policy = TempDir::new("policy");
    std::fs::write(policy.join("p.json"), r#"{"limits": {"memory": 1}}"#).unwrap();
    for (file, needle) in [
        (policy.join("p.json"), "unknown field `memory`"),
        (policy.join("missing.json"), "cannot read policy file"),
    ] {
        let out = std::process::Command::new(common::ext_runner())
            .args(["invoke", "--policy"])
            .arg(&file)
            .arg(d.path())
            .arg("t.ws.run")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(6));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("error:") && stderr.contains(needle),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_edited_after_load_grants_nothing_new() {
    // Loaded without network; the manifest is then edited to declare it, and
    // the worker restarted: it still runs under the policy decided at load.
    let body = "if args.get('die'):\n    os._exit(1)\nimport socket\ntry:\n    socket.socket()\n    return 'network'\nexcept PermissionError as e:\n    return str(e)";
    let (d, host) = load(&worker(body), options()).await;
    let widened = common::manifest_json(
        "t.x",
        &["tool.invoke", "network.outbound", "subprocess.run"],
        &["t.x.run"],
    );
    std::fs::write(d.join("nodus-extension.json"), widened).unwrap();
    assert!(host.invoke("t.x.run", r#"{"die": true}"#).await.is_err());
    let v = host.invoke("t.x.run", "{}").await.unwrap();
    assert!(
        v.as_str()
            .unwrap()
            .contains("network.outbound not declared"),
        "{v}"
    );
    assert_eq!(
        host.manifest().capabilities,
        vec![nodus_extension::Capability::ToolInvoke]
    );
}

/// `ext-runner run DIR` with the test interpreter and `extra` arguments, all stdio piped.
fn spawn_run(dir: &std::path::Path, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(common::ext_runner())
        .arg("run")
        .arg(dir)
        .arg("--python")
        .arg(common::python())
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit, failing with `why` if it takes longer than `limit`.
fn exit_within(
    child: &mut std::process::Child,
    limit: Duration,
    why: &str,
) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(started.elapsed() < limit, "{why}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_never_blocks_on_a_host_that_does_not_read_its_stderr() {
    // The reference host pipes the worker's stderr and never reads it.
    let body = "sys.stderr.write('x' * 300000)\nsys.stderr.flush()\nif args.get('die'):\n    os._exit(3)\nreturn 1";
    let d = ext("t.x", T, &["t.x.run"], &worker(body));
    for (die, code) in [(false, 0), (true, 6)] {
        use std::io::{BufRead, Write};
        let mut child = spawn_run(d.path(), &[]);
        let mut stdin = child.stdin.take().unwrap();
        writeln!(
            stdin,
            r#"{{"id": "1", "op": "invoke", "name": "t.x.run", "args": {{"die": {die}}}}}"#
        )
        .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.contains("\"ok\": true"), !die, "{line}");
        if !die {
            writeln!(stdin, r#"{{"op": "shutdown"}}"#).unwrap();
        }
        let status = exit_within(
            &mut child,
            Duration::from_secs(5),
            "ext-runner hung on a full stderr",
        );
        assert_eq!(status.code(), Some(code));
    }
}

#[test]
fn run_times_out_each_request_on_its_own_deadline() {
    // A quick invoke, then one that hangs, half a timeout later: the hang is
    // killed once *its* deadline passes (not the first one's), with exit 8.
    use std::io::{BufRead, Write};
    let body = "if args.get('hang'):\n    time.sleep(60)\nreturn 'quick'";
    let d = ext("t.x", T, &["t.x.run"], &worker(body));
    let mut child = spawn_run(d.path(), &["--timeout", "2"]);
    let mut stdin = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    writeln!(
        stdin,
        r#"{{"id": "1", "op": "invoke", "name": "t.x.run", "args": {{}}}}"#
    )
    .unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("quick"), "{line}");
    std::thread::sleep(Duration::from_millis(1000));
    let sent = Instant::now();
    writeln!(
        stdin,
        r#"{{"id": "2", "op": "invoke", "name": "t.x.run", "args": {{"hang": true}}}}"#
    )
    .unwrap();
    let status = exit_within(
        &mut child,
        Duration::from_secs(20),
        "the hung request was never timed out",
    );
    assert_eq!(status.code(), Some(8), "TimeoutError");
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "killed {:?} after the request, before its 2 s timeout",
        sent.elapsed()
    );
}

/// Kills the runner if a test fails while it still runs (its worker dies with
/// it: parent-death signal).
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tool that sends host calls as fast as it can, never reads their
/// answers, and then sleeps: the answers fill its stdin pipe.
const HOST_CALL_FLOOD: &str = "for i in range(20000):\n    sys.stdout.write(json.dumps({'op': 'host_call', 'id': f'hc-{i}', 'call': 'memory.get', 'params': {'key': 'k'}}) + '\\n')\nsys.stdout.flush()\ntime.sleep(120)\nreturn 1";

/// Starts `run` on the flooding tool and sends the invoke; returns the runner
/// and the worker's processes (as the kernel lists them from outside).
fn start_flood(timeout: &str) -> (TempDir, Reap, Vec<i32>) {
    use std::io::Write;
    let d = ext("t.x", T, &["t.x.run"], &worker(HOST_CALL_FLOOD));
    let mut child = Reap(spawn_run(d.path(), &["--timeout", timeout]));
    let stdin = child.0.stdin.as_mut().unwrap();
    writeln!(
        stdin,
        r#"{{"id": "1", "op": "invoke", "name": "t.x.run", "args": {{}}}}"#
    )
    .unwrap();
    stdin.flush().unwrap();
    // Time to flood (the control: the worker is there and stays).
    std::thread::sleep(Duration::from_millis(1500));
    let workers: Vec<i32> = common::procfs::descendants(child.0.id() as i32)
        .iter()
        .map(|p| p.pid)
        .collect();
    assert!(!workers.is_empty(), "the worker runs");
    assert!(child.0.try_wait().unwrap().is_none(), "the runner serves");
    (d, child, workers)
}

#[test]
fn run_times_out_a_request_while_its_worker_floods_host_calls_and_reads_nothing() {
    let (_d, mut child, workers) = start_flood("3");
    let status = exit_within(
        &mut child.0,
        Duration::from_secs(15),
        "the proxy froze writing host-call answers: the request's 3 s timeout never fired",
    );
    assert_eq!(status.code(), Some(8), "TimeoutError");
    for pid in workers {
        assert!(
            common::wait_gone(pid, Duration::from_secs(5)),
            "worker {pid} lives"
        );
    }
}

#[test]
fn run_shuts_down_on_host_eof_while_its_worker_floods_host_calls_and_reads_nothing() {
    let (_d, mut child, workers) = start_flood("60");
    drop(child.0.stdin.take()); // the host closes our stdin
    exit_within(
        &mut child.0,
        Duration::from_secs(10),
        "the proxy froze writing host-call answers: it never saw the host close stdin",
    );
    for pid in workers {
        assert!(
            common::wait_gone(pid, Duration::from_secs(5)),
            "worker {pid} lives"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_never_reads_the_answers_to_its_host_calls_is_stopped() {
    // At start-up, before it serves anything: ten host calls whose answers
    // (errors quoting the 100 KB call name) overflow its stdin pipe; no
    // invoke follows, so only a deadline on the answers can end it.
    let src = "import json, sys, time\nfor i in range(10):\n    sys.stdout.write(json.dumps({'op': 'host_call', 'id': str(i), 'call': 'x' * 100000, 'params': {}}) + '\\n')\nsys.stdout.flush()\ntime.sleep(120)\n";
    let (_d, host) = load(src, short(2000)).await;
    let pid = host.worker_pid().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(common::pid_alive(pid), "control: the worker is there");
    let started = Instant::now();
    let gone = tokio::task::spawn_blocking(move || common::wait_gone(pid, Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(
        gone,
        "a worker that reads none of its answers still runs {:?} later",
        started.elapsed()
    );
    let end = Instant::now() + Duration::from_secs(5);
    while host.worker_pid().await.is_some() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(host.worker_pid().await.is_none(), "the host knows");
}
