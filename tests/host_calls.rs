//! Host-mediated capabilities with real workers: memory and tool calls gated
//! by the manifest, isolation between extensions, quotas, nesting, durability
//! under SIGKILL, the audit trail and explained denials.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{ext, options, TempDir};
use nodus_extension::memory::Quotas;
use nodus_extension::Audit;
use nodus_extension::ExtensionRegistry;
use serde_json::{json, Value};

fn worker_src(tool: &str) -> String {
    format!(
        "from nodus_extension.worker import register_tool, run_loop\nimport nodus_extension_host as host\n\n\
         def run(args):\n    ns = {{'host': host, 'memory': host.memory, 'invoke_tool': host.invoke_tool}}\n    exec(args['code'], ns)\n    return ns.get('result')\n\n\
         register_tool('{tool}', run)\nrun_loop()\n"
    )
}

struct Setup {
    _dirs: Vec<TempDir>,
    _state: TempDir,
    registry: ExtensionRegistry,
    events: Arc<Mutex<Vec<Value>>>,
}

/// A registry with its own store and an audit callback; one extension per (name, caps).
async fn setup(exts: &[(&str, &[&str])], quotas: Quotas) -> Setup {
    let state = TempDir::new("state");
    let db = state.join("memory.sqlite3");
    let events: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = events.clone();
    let opts = options()
        .with_memory_path(db.clone())
        .with_memory_quotas(quotas)
        .with_audit(Audit::default().with_callback(move |e| sink.lock().unwrap().push(e.clone())));
    let registry = ExtensionRegistry::new(opts);
    let mut dirs = Vec::new();
    for (name, caps) in exts {
        let tool = format!("{name}.run");
        let d = ext(name, caps, &[&tool], &worker_src(&tool));
        registry.load(d.path()).await.unwrap();
        dirs.push(d);
    }
    Setup {
        _dirs: dirs,
        _state: state,
        registry,
        events,
    }
}

async fn run(s: &Setup, ext: &str, code: &str) -> nodus_extension::Result<Value> {
    s.registry
        .invoke(
            ext,
            &format!("{ext}.run"),
            &json!({ "code": code }).to_string(),
        )
        .await
}

const ALL: &[&str] = &["tool.invoke", "memory.read", "memory.write"];

#[tokio::test(flavor = "multi_thread")]
async fn each_memory_call_is_allowed_with_its_capability_and_refused_without() {
    let s = setup(
        &[
            ("t.rw", ALL),
            ("t.ro", &["tool.invoke", "memory.read"]),
            ("t.wo", &["tool.invoke", "memory.write"]),
            ("t.none", &["tool.invoke"]),
        ],
        Quotas::default(),
    )
    .await;
    let v = run(&s, "t.rw", "memory.put('k', {'n': 1}); result = [memory.get('k'), memory.keys(), memory.delete('k'), memory.get('k')]").await.unwrap();
    assert_eq!(v, json!([{"n": 1}, ["k"], true, null]));

    // Refusals name the capability, raise in the worker, and never reach the store.
    let probe = "try:\n    {call}\n    result = 'allowed'\nexcept host.HostCallError as e:\n    result = [e.capability, str(e)]";
    for (ext, call, cap) in [
        ("t.ro", "memory.put('x', 1)", "memory.write"),
        ("t.ro", "memory.delete('x')", "memory.write"),
        ("t.wo", "memory.get('x')", "memory.read"),
        ("t.wo", "memory.keys()", "memory.read"),
        ("t.none", "memory.get('x')", "memory.read"),
        ("t.none", "memory.put('x', 1)", "memory.write"),
    ] {
        let v = run(&s, ext, &probe.replace("{call}", call)).await.unwrap();
        assert_eq!(v[0], json!(cap), "{ext} {call}: {v}");
        assert!(v[1].as_str().unwrap().contains(cap), "{v}");
    }
    assert_eq!(
        run(&s, "t.ro", "result = memory.keys()").await.unwrap(),
        json!([]),
        "refused puts stored nothing"
    );
    assert_eq!(
        run(&s, "t.wo", "memory.put('w', 2); result = 1")
            .await
            .unwrap(),
        json!(1)
    );
    assert_eq!(
        run(&s, "t.ro", "result = memory.get('w')").await.unwrap(),
        Value::Null,
        "namespaces are per extension"
    );

    let events = s.events.lock().unwrap().clone();
    let denials: Vec<_> = events.iter().filter(|e| e["event"] == "denial").collect();
    assert_eq!(denials.len(), 6, "{denials:?}");
    assert!(denials
        .iter()
        .all(|d| d["layer"] == "protocol"
            && d["capability"].as_str().unwrap().starts_with("memory.")));
    for kind in ["load", "invoke", "host_call"] {
        assert!(
            events.iter().any(|e| e["event"] == kind),
            "no {kind} event in {events:?}"
        );
    }
    let invoke = events.iter().find(|e| e["event"] == "invoke").unwrap();
    assert!(
        invoke["ms"].as_f64().unwrap() > 0.0
            && invoke["tool"] == "t.rw.run"
            && invoke["outcome"] == "ok",
        "{invoke}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn extensions_cannot_read_or_overwrite_each_others_keys() {
    let s = setup(&[("t.alice", ALL), ("t.mallory", ALL)], Quotas::default()).await;
    run(
        &s,
        "t.alice",
        "memory.put('secret', 'alice-only-7731'); result = 1",
    )
    .await
    .unwrap();
    let v = run(&s, "t.mallory", "memory.put('secret', 'pwned'); result = [memory.get('secret'), memory.keys(), memory.delete('secret')]").await.unwrap();
    assert_eq!(
        v,
        json!(["pwned", ["secret"], true]),
        "mallory only sees its own namespace"
    );
    assert_eq!(
        run(&s, "t.alice", "result = memory.get('secret')")
            .await
            .unwrap(),
        json!("alice-only-7731")
    );
    // Keys that look like paths or SQL stay keys of the caller's namespace.
    let v = run(
        &s,
        "t.mallory",
        "memory.put(\"x' OR '1'='1\", 1); result = memory.keys()",
    )
    .await
    .unwrap();
    assert_eq!(v, json!(["x' OR '1'='1"]));
    assert_eq!(
        run(&s, "t.alice", "result = memory.keys()").await.unwrap(),
        json!(["secret"])
    );
}

/// A registry of its own (another host) on the memory store at `db`.
fn host_on(db: &std::path::Path) -> ExtensionRegistry {
    ExtensionRegistry::new(options().with_memory_path(db.to_path_buf()))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_impostor_of_the_same_name_in_another_folder_cannot_reach_its_memory() {
    // Two hosts of one user share the per-user store. The impostor takes the
    // victim's manifest name but is installed in another folder.
    let state = TempDir::new("state");
    let db = state.join("memory.sqlite3");
    let tool = "t.alice.run";
    let victim = ext("t.alice", ALL, &[tool], &worker_src(tool));
    let impostor = ext("t.alice", ALL, &[tool], &worker_src(tool));
    async fn call(r: &ExtensionRegistry, code: &str) -> nodus_extension::Result<Value> {
        let args = json!({ "code": code }).to_string();
        r.invoke("t.alice", "t.alice.run", &args).await
    }

    let first = host_on(&db);
    first.load(victim.path()).await.unwrap();
    call(
        &first,
        "memory.put('secret', 'alice-only-4417'); result = 1",
    )
    .await
    .unwrap();

    let other = host_on(&db);
    other.load(impostor.path()).await.unwrap();
    let seen = call(
        &other,
        "result = [memory.get('secret'), memory.keys(), memory.delete('secret')]; memory.put('secret', 'pwned')",
    )
    .await
    .unwrap();
    assert!(!seen.to_string().contains("alice-only"), "{seen}");
    assert_eq!(seen, json!([null, [], false]));
    other.shutdown().await;

    // The victim's key is intact, and the same extension loaded by a new
    // host (through a symlink to its folder, too) still has it.
    assert_eq!(
        call(&first, "result = memory.get('secret')").await.unwrap(),
        json!("alice-only-4417")
    );
    first.shutdown().await;
    let link = state.join("alice-link");
    std::os::unix::fs::symlink(victim.path(), &link).unwrap();
    let again = host_on(&db);
    again.load(&link).await.unwrap();
    assert_eq!(
        call(&again, "result = [memory.get('secret'), memory.keys()]")
            .await
            .unwrap(),
        json!(["alice-only-4417", ["secret"]])
    );
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_provided_twice_is_not_routed_to_whichever_loaded_first() {
    let provider = |me: &str| {
        format!(
            "from nodus_extension.worker import register_tool, run_loop\n\
             register_tool('{me}.run', lambda a: 1)\nregister_tool('dup.tool', lambda a: '{me}')\nrun_loop()\n"
        )
    };
    let state = TempDir::new("state");
    let invoked: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = invoked.clone();
    let registry =
        ExtensionRegistry::new(options().with_memory_path(state.join("m.db")).with_audit(
            Audit::default().with_callback(move |e| {
                if e["event"] == "invoke" && e["tool"] == "dup.tool" {
                    sink.lock()
                        .unwrap()
                        .push(e["extension"].as_str().unwrap().into());
                }
            }),
        ));
    let caller = ext("t.a", ALL, &["t.a.run"], &worker_src("t.a.run"));
    let b = ext("t.b", ALL, &["t.b.run", "dup.tool"], &provider("t.b"));
    let c = ext("t.c", ALL, &["t.c.run", "dup.tool"], &provider("t.c"));
    for d in [&caller, &b, &c] {
        registry.load(d.path()).await.unwrap();
    }
    let run_a = |code: &str| {
        let args = json!({ "code": code }).to_string();
        let registry = &registry;
        async move { registry.invoke("t.a", "t.a.run", &args).await }
    };
    let v = run_a("try:\n    result = invoke_tool('dup.tool')\nexcept host.HostCallError as e:\n    result = str(e)")
        .await
        .unwrap();
    let msg = v.as_str().unwrap();
    assert!(
        msg.contains("several") && msg.contains("t.b") && msg.contains("t.c"),
        "{v}"
    );
    assert!(invoked.lock().unwrap().is_empty(), "neither provider ran");
    // Naming the provider picks it; naming one that lacks the tool is refused.
    assert_eq!(
        run_a("result = invoke_tool('dup.tool', {}, extension='t.c')")
            .await
            .unwrap(),
        json!("t.c")
    );
    assert_eq!(*invoked.lock().unwrap(), vec!["t.c".to_string()]);
    let v = run_a("try:\n    result = invoke_tool('dup.tool', {}, extension='t.a')\nexcept host.HostCallError as e:\n    result = str(e)")
        .await
        .unwrap();
    assert!(
        v.as_str()
            .unwrap()
            .contains("does not provide tool 'dup.tool'"),
        "{v}"
    );
    // Once one provider is unloaded, the tool is unambiguous again.
    registry.unload("t.b").await.unwrap();
    assert_eq!(
        run_a("result = invoke_tool('dup.tool')").await.unwrap(),
        json!("t.c")
    );
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_give_clear_errors() {
    let q = Quotas::default()
        .with_max_key_bytes(16)
        .with_max_value_bytes(100)
        .with_max_total_bytes(300);
    let s = setup(&[("t.q", ALL)], q).await;
    let probe = "try:\n    {call}\n    result = 'stored'\nexcept host.HostCallError as e:\n    result = str(e)";
    let big = run(
        &s,
        "t.q",
        &probe.replace("{call}", "memory.put('k', 'x' * 200)"),
    )
    .await
    .unwrap();
    assert!(big.as_str().unwrap().contains("quota per value"), "{big}");
    let key = run(
        &s,
        "t.q",
        &probe.replace("{call}", "memory.put('k' * 40, 1)"),
    )
    .await
    .unwrap();
    assert!(
        key.as_str().unwrap().contains("memory key must be"),
        "{key}"
    );
    let fill = "for i in range(10):\n    memory.put('k%d' % i, 'y' * 50)";
    let total = run(
        &s,
        "t.q",
        &probe
            .replace("{call}", fill)
            .replace("\n    memory", "\n        memory"),
    )
    .await
    .unwrap();
    assert!(
        total.as_str().unwrap().contains("memory quota exceeded"),
        "{total}"
    );
    let kept = run(&s, "t.q", "result = len(memory.keys())").await.unwrap();
    assert!(
        kept.as_u64().unwrap() < 10,
        "the store stopped at the quota: {kept}"
    );
    // Overwriting a key within quota still works once full.
    assert_eq!(
        run(&s, "t.q", &probe.replace("{call}", "memory.put('k0', 'z')"))
            .await
            .unwrap(),
        json!("stored")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_calls_between_extensions_nest_and_cycles_are_refused() {
    let s = setup(
        &[
            ("t.a", ALL),
            ("t.b", ALL),
            ("t.c", ALL),
            ("t.nocall", &["memory.read"]),
        ],
        Quotas::default(),
    )
    .await;
    // A → B → C, each answering with its own name.
    let v = run(&s, "t.a", "result = ['a', invoke_tool('t.b.run', {'code': \"result = ['b', invoke_tool('t.c.run', {'code': \\\"result = 'c'\\\"})]\"})]").await.unwrap();
    assert_eq!(v, json!(["a", ["b", "c"]]));
    // A → B → A would deadlock (A is busy waiting): refused quickly with an error, not a timeout.
    let started = std::time::Instant::now();
    let v = run(&s, "t.a", "try:\n    invoke_tool('t.b.run', {'code': \"result = invoke_tool('t.a.run', {'code': 'result = 1'})\"})\n    result = 'no error'\nexcept host.HostCallError as e:\n    result = str(e)").await.unwrap();
    assert!(v.as_str().unwrap().contains("deadlock"), "{v}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // Calling itself is the shortest cycle.
    let v = run(&s, "t.a", "try:\n    invoke_tool('t.a.run', {'code': 'result = 1'})\nexcept host.HostCallError as e:\n    result = str(e)").await.unwrap();
    assert!(v.as_str().unwrap().contains("deadlock"), "{v}");
    // Unknown tools and a caller without tool.invoke.
    let v = run(
        &s,
        "t.a",
        "try:\n    invoke_tool('t.zzz.run')\nexcept host.HostCallError as e:\n    result = str(e)",
    )
    .await
    .unwrap();
    assert!(
        v.as_str()
            .unwrap()
            .contains("no loaded extension provides tool"),
        "{v}"
    );
    // The extensions still serve after all this.
    assert_eq!(
        run(&s, "t.c", "result = 'still here'").await.unwrap(),
        json!("still here")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_without_tool_invoke_cannot_reach_other_tools() {
    // tool.invoke gates both being invoked and invoking: a worker reached through
    // another route (here: its own module at start-up) is refused.
    let state = TempDir::new("state");
    let src = "from nodus_extension.worker import register_tool, run_loop\nimport nodus_extension_host as host\n\
               try:\n    host.invoke_tool('t.b.run', {'code': 'result = 1'})\n    open(__import__('os').environ['TMPDIR'] + '/x', 'w')\nexcept host.HostCallError as e:\n    import sys; sys.stderr.write('REFUSED:' + str(e.capability) + '\\n'); sys.stderr.flush()\n\
               register_tool('t.q.run', lambda a: 1)\nrun_loop()\n";
    let q = ext("t.q", &["memory.read"], &["t.q.run"], src);
    let b = ext("t.b", ALL, &["t.b.run"], &worker_src("t.b.run"));
    let calls = Arc::new(Mutex::new(0usize));
    let seen = calls.clone();
    let opts =
        options()
            .with_memory_path(state.join("m.db"))
            .with_audit(Audit::default().with_callback(move |e| {
                if e["event"] == "invoke" && e["extension"] == "t.b" {
                    *seen.lock().unwrap() += 1;
                }
            }));
    let registry = ExtensionRegistry::new(opts);
    registry.load(b.path()).await.unwrap();
    let host = registry.load(q.path()).await.unwrap();
    // Its invoke is refused by the gate (no tool.invoke); its start-up call was refused too.
    let err = registry.invoke("t.q", "t.q.run", "{}").await.unwrap_err();
    assert_eq!(err.class(), "CapabilityError");
    drop(host);
    assert_eq!(*calls.lock().unwrap(), 0, "t.b was never invoked");
}

#[test]
fn an_acknowledged_put_survives_sigkill_of_the_runner() {
    let state = TempDir::new("state");
    let db = state.join("memory.sqlite3");
    let e = ext(
        "t.durable",
        ALL,
        &["t.durable.run"],
        &worker_src("t.durable.run"),
    );
    let mut child = Command::new(common::ext_runner())
        .arg("run")
        .arg(e.path())
        .arg("--python")
        .arg(common::python())
        .arg("--memory-db")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for i in 0..20 {
        let req = json!({"id": format!("r{i}"), "op": "invoke", "name": "t.durable.run", "args": {"code": format!("memory.put('k{i}', {i}); result = {i}")}});
        writeln!(stdin, "{req}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains("\"ok\": true"), "{line}");
    }
    // Killed right after the last acknowledgement: no shutdown, no flush.
    child.kill().unwrap();
    child.wait().unwrap();
    let store = nodus_extension::memory::SqliteStore::open(&db, Quotas::default()).unwrap();
    use nodus_extension::memory::MemoryBackend;
    let ns = nodus_extension::internals::host::services::Caller::new("t.durable", e.path())
        .memory_namespace;
    for i in 0..20 {
        assert_eq!(
            store.get(&ns, &format!("k{i}")).unwrap(),
            Some(json!(i)),
            "key k{i} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn denials_of_network_and_process_creation_explain_themselves() {
    let s = setup(&[("t.plain", &["tool.invoke"])], Quotas::default()).await;
    // The worker's error names the capability...
    for (code, detail, cap) in [
        (
            "import socket; socket.create_connection(('127.0.0.1', 9), timeout=1)",
            "socket(AF_INET)",
            "network.outbound",
        ),
        (
            "import subprocess; subprocess.run(['/bin/true'])",
            "Popen()",
            "subprocess.run",
        ),
        ("import os; os.fork()", "fork()", "subprocess.run"),
    ] {
        let err = run(&s, "t.plain", code).await.unwrap_err();
        assert_eq!(err.class(), "InvokeError");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("denied {detail}: {cap} not declared")),
            "{msg}"
        );
    }
    // ...and so does the audit trail.
    let events = s.events.lock().unwrap().clone();
    let denials: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "denial" && e["layer"] == "worker")
        .collect();
    assert_eq!(denials.len(), 3, "{denials:?}");
    assert_eq!(denials[0]["capability"], "network.outbound");
    assert_eq!(denials[1]["capability"], "subprocess.run");
    assert!(denials[0].get("reason").is_none(), "{denials:?}");

    // What no capability grants is explained with its reason, in the error
    // and in the audit trail alike.
    let err = run(
        &s,
        "t.plain",
        "import os; p = os.path.join(os.environ['TMPDIR'], 'f'); open(p, 'w').close(); os.chmod(p, 0o4755)",
    )
    .await
    .unwrap_err();
    let why = "no worker may make a setuid or setgid file";
    assert!(err.to_string().contains(why), "{err}");
    let events = s.events.lock().unwrap().clone();
    let chmod = events
        .iter()
        .rfind(|e| e["event"] == "denial" && e["layer"] == "worker")
        .expect("a denial for chmod");
    assert_eq!(chmod["reason"], why, "{chmod}");
    assert!(
        chmod["what"].as_str().unwrap().starts_with("chmod("),
        "{chmod}"
    );

    // The kernel still enforces when the explanation is bypassed: a raw syscall
    // through ctypes gets EPERM without any help from the audit hook.
    let v = run(&s, "t.plain", "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); r = libc.socket(2, 1, 0); result = [r, ctypes.get_errno()]").await.unwrap();
    assert_eq!(
        v,
        json!([-1, 1]),
        "socket(AF_INET) through libc must fail with EPERM"
    );
}

#[test]
fn the_run_proxy_serves_memory_and_keeps_host_calls_from_the_host() {
    let state = TempDir::new("state");
    let e = ext("t.proxy", ALL, &["t.proxy.run"], &worker_src("t.proxy.run"));
    let audit = state.join("audit.jsonl");
    let out = Command::new(common::ext_runner())
        .arg("run")
        .arg(e.path())
        .arg("--python")
        .arg(common::python())
        .arg("--memory-db")
        .arg(state.join("m.db"))
        .arg("--audit")
        .arg(&audit)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            let mut stdin = c.stdin.take().unwrap();
            let req = json!({"id": "1", "op": "invoke", "name": "t.proxy.run", "args": {"code": "memory.put('a', 5); result = memory.get('a')"}});
            writeln!(stdin, "{req}\n{{\"op\": \"shutdown\"}}").unwrap();
            drop(stdin);
            c.wait_with_output()
        })
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        r#"{"id": "1", "ok": true, "result": 5}"#,
        "host calls never reach the host: {stdout}"
    );
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(
        log.lines().filter(|l| l.contains("\"host_call\"")).count() == 2,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_is_private_and_a_failed_open_is_retried() {
    use std::os::unix::fs::PermissionsExt;
    let state = TempDir::new("state");
    // The store's folder is a file at first: opening fails...
    let parent = state.join("not-yet");
    std::fs::write(&parent, "in the way").unwrap();
    let db = parent.join("deeper").join("memory.sqlite3");
    let registry = ExtensionRegistry::new(options().with_memory_path(db.clone()));
    let tool = "t.priv.run";
    let d = ext("t.priv", ALL, &[tool], &worker_src(tool));
    registry.load(d.path()).await.unwrap();
    let put = json!({"code": "memory.put('k', 'v'); result = memory.get('k')"}).to_string();
    let err = registry.invoke("t.priv", tool, &put).await.unwrap_err();
    assert!(err.to_string().contains("memory store"), "{err}");
    // ...and works once the obstacle is gone: the failure was not kept.
    std::fs::remove_file(&parent).unwrap();
    assert_eq!(
        registry.invoke("t.priv", tool, &put).await.unwrap(),
        json!("v")
    );
    registry.shutdown().await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&db), 0o600, "database file");
    assert_eq!(mode(db.parent().unwrap()), 0o700, "store folder");
    assert_eq!(mode(&parent), 0o700, "created parent folder");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_denial_notices_is_bounded_in_the_audit_trail() {
    let s = setup(&[("t.flood", &["tool.invoke"])], Quotas::default()).await;
    let flood = "import sys\nfor i in range(5000):\n    sys.stdout.write('{\"op\": \"denial\", \"capability\": \"network.outbound\", \"detail\": \"socket(AF_INET)\"}\\n')\nsys.stdout.flush()\nresult = 'still answering'";
    assert_eq!(
        run(&s, "t.flood", flood).await.unwrap(),
        json!("still answering")
    );
    let denials = s
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "denial")
        .count();
    let cap = 2 * nodus_extension::internals::host::services::DENIALS_PER_SECOND as usize;
    assert!(
        (1..=cap).contains(&denials),
        "{denials} denial entries for 5000 notices"
    );
}

#[test]
fn quota_usage_is_kept_per_write_and_made_for_an_older_store() {
    use nodus_extension::memory::{MemoryBackend, SqliteStore};
    let state = TempDir::new("state");
    let db = state.join("m.sqlite3");
    // A store as the first version wrote it: rows, no usage table.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE memory (namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (namespace, key)) WITHOUT ROWID;
             INSERT INTO memory VALUES ('ns', 'old', '\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"');",
        )
        .unwrap();
    }
    let q = Quotas::default()
        .with_max_key_bytes(16)
        .with_max_value_bytes(100)
        .with_max_total_bytes(100);
    std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let store = SqliteStore::open(&db, q).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&db).unwrap().permissions());
    assert_eq!(
        mode & 0o777,
        0o600,
        "an older world-readable store is made private"
    );
    // 'old' holds 3 + 48 bytes: 51 more do not fit, 49 do.
    let v = |n: usize| json!("y".repeat(n - 2)); // the JSON text has two quotes
    let err = store.put("ns", "k", &v(50)).unwrap_err();
    assert!(err.to_string().contains("memory quota exceeded"), "{err}");
    store.put("ns", "k", &v(48)).unwrap();
    // Replacing a value counts the difference; deleting frees its bytes.
    store.put("ns", "k", &v(40)).unwrap();
    store.put("ns", "k2", &v(6)).unwrap();
    assert!(store.put("ns", "k3", &v(10)).is_err());
    assert!(store.delete("ns", "old").unwrap());
    store.put("ns", "k3", &v(10)).unwrap();
    // Other namespaces are counted apart.
    store.put("other", "k", &v(90)).unwrap();
    drop(store);
    // Reopened: the usage is what the rows hold (k 41 + k2 8 + k3 12 = 61
    // bytes), so a 2 + 37 byte entry fills the quota exactly and one more
    // byte does not fit.
    let store = SqliteStore::open(&db, q).unwrap();
    assert!(store.put("ns", "k4", &v(38)).is_err());
    store.put("ns", "k4", &v(37)).unwrap();
    // An operator moves the keys to another namespace by hand: the usage
    // moves with them (triggers), never going negative or stale.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE memory SET namespace = 'moved' WHERE namespace = 'ns'",
            [],
        )
        .unwrap();
    assert!(store.put("moved", "k5", &v(2)).is_err(), "'moved' is full");
    assert!(store.delete("moved", "k").unwrap());
    store.put("moved", "k5", &v(30)).unwrap();
    store.put("ns", "big", &v(97)).unwrap(); // 'ns' is empty now
}

/// A value with the NaN and Infinity Python's `json.dumps` writes (the
/// worker's line is read as `json.loads` reads it) comes back as it went
/// in: it was stored and counted, and then every `get` of it failed as a
/// corrupt value.
#[test]
fn a_stored_value_with_non_finite_numbers_reads_back() {
    use nodus_extension::memory::{MemoryBackend, SqliteStore};
    let state = TempDir::new("state");
    let store = SqliteStore::open(&state.join("m.sqlite3"), Quotas::default()).unwrap();
    // As the runner holds them (serde_json's arbitrary precision: a number
    // is its text).
    let n =
        |t: &str| serde_json::Value::Number(serde_json::Number::from_string_unchecked(t.into()));
    let mut value = serde_json::Map::new();
    value.insert("x".into(), n("Infinity"));
    value.insert(
        "y".into(),
        serde_json::Value::Array(vec![n("NaN"), n("-Infinity"), n("1.5")]),
    );
    let value = serde_json::Value::Object(value);
    store.put("ns", "k", &value).unwrap();
    let back = store.get("ns", "k").unwrap().expect("stored");
    assert_eq!(back.to_string(), value.to_string());
    assert_eq!(
        back.to_string(),
        r#"{"x":Infinity,"y":[NaN,-Infinity,1.5]}"#
    );
}
