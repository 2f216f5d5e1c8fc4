//! Egress by host name through the library (`ExtensionHost`) and `ext-runner
//! invoke`: the allowed host through urllib, requests and httpx (plain HTTP
//! and HTTPS over CONNECT, with a real TLS server), the audit trail of allowed
//! and refused connections, the proxy's bounds, the manifest's request, and
//! `network.outbound` without an egress section as before. The bypass attacks
//! (as root and uid 65534, through `ext-runner run`) are in
//! `tests/security/egress.rs`.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::egress::{echo_server, self_signed, Sink, TlsServer, Web};
use common::{ext, options, TempDir};
use nodus_extension::policy::{OperatorPolicy, Probe};
use nodus_extension::{Audit, ExtensionHost};
use serde_json::{json, Value};

const SRC: &str = "from nodus_extension.worker import register_tool, run_loop\n\
def run(args):\n    ns = {}\n    try:\n        exec(args['code'], ns)\n        return ns.get('result')\n    except Exception as e:\n        return 'raised: %s: %s' % (type(e).__name__, e)\n\
register_tool('t.eg.run', run)\nrun_loop()\n";

/// Whether this machine can run the egress tests (a network namespace); prints SKIP otherwise.
fn can_run() -> bool {
    let p = Probe::current();
    let ok = p.network_namespaces && (p.root || p.user_namespaces);
    if !ok {
        eprintln!("SKIP: network namespaces missing: egress cannot be enforced here");
    }
    ok
}

fn operator(v: Value) -> OperatorPolicy {
    serde_json::from_value(v).expect("operator policy")
}

type Events = Arc<Mutex<Vec<Value>>>;

fn audited() -> (Audit, Events) {
    let events: Events = Arc::default();
    let e = events.clone();
    (
        Audit::default().with_callback(move |v| e.lock().unwrap().push(v.clone())),
        events,
    )
}

fn code(c: &str) -> String {
    json!({ "code": c }).to_string()
}

/// The compatibility suite's venv, with requests and httpx, if scripts/test made it.
fn libs_python() -> Option<PathBuf> {
    let py = common::root().join(".venv-compat/bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", "import requests, httpx"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIP: {} with requests and httpx missing (scripts/test installs it): only urllib is checked",
            py.display()
        );
    }
    ok.then_some(py)
}

async fn load(
    d: &TempDir,
    op: OperatorPolicy,
    audit: Audit,
    python: Option<&PathBuf>,
) -> ExtensionHost {
    let mut opts = options().with_operator(op).with_audit(audit);
    if let Some(py) = python {
        opts.python = py.clone().into_os_string();
    }
    ExtensionHost::load(d.path(), opts).await.expect("load")
}

#[tokio::test(flavor = "multi_thread")]
async fn allowed_host_through_urllib_requests_httpx_plain_and_tls_audited() {
    if !can_run() {
        return;
    }
    let web = Web::new(b"hello".to_vec());
    let d = ext(
        "t.eg",
        &["tool.invoke", "network.outbound"],
        &["t.eg.run"],
        SRC,
    );
    let tls = self_signed(d.path(), "api.test").map(|(cert, key)| {
        let server = TlsServer::start(common::python(), &cert, &key);
        (server, cert)
    });
    let mut allow = vec![format!("api.test:{}", web.port)];
    if let Some((s, _)) = &tls {
        allow.push(format!("api.test:{}", s.port));
    }
    let op = operator(json!({"egress": {"allow": allow, "resolve": {"api.test": "127.0.0.1"}}}));
    let (audit, events) = audited();
    let libs = libs_python();
    let host = load(&d, op, audit, libs.as_ref()).await;
    let url = format!("http://api.test:{}/", web.port);
    let mut checks = vec![(
        "urllib http",
        format!("import urllib.request\nresult = urllib.request.urlopen('{url}u', timeout=5).read().decode()"),
        "hello",
    )];
    if libs.is_some() {
        checks.push((
            "requests http",
            format!("import requests\nresult = requests.get('{url}r', timeout=5).text"),
            "hello",
        ));
        checks.push((
            "httpx http",
            format!("import httpx\nresult = httpx.get('{url}x', timeout=5).text"),
            "hello",
        ));
    }
    if let Some((s, cert)) = &tls {
        let (tls_url, ca) = (format!("https://api.test:{}/", s.port), cert.display());
        checks.push((
            "urllib https (CONNECT)",
            format!("import ssl, urllib.request\nctx = ssl.create_default_context(cafile='{ca}')\nresult = urllib.request.urlopen('{tls_url}', timeout=5, context=ctx).read().decode()"),
            "tls ok",
        ));
        if libs.is_some() {
            checks.push(("requests https (CONNECT)", format!("import requests\nresult = requests.get('{tls_url}', timeout=5, verify='{ca}').text"), "tls ok"));
            checks.push(("httpx https (CONNECT)", format!("import httpx, ssl\nresult = httpx.get('{tls_url}', timeout=5, verify=ssl.create_default_context(cafile='{ca}')).text"), "tls ok"));
        }
    }
    for (what, c, want) in &checks {
        let v = host.invoke("t.eg.run", &code(c)).await.unwrap();
        assert_eq!(v, json!(want), "{what}");
    }
    let plain = checks.iter().filter(|c| c.2 == "hello").count();
    assert_eq!(web.hits(), plain, "{:?}", web.lines());
    // A refusal: its reason reaches the worker, and the audit trail.
    let v = host
        .invoke("t.eg.run", &code("import urllib.request\nresult = urllib.request.urlopen('http://evil.test/', timeout=5).read()"))
        .await
        .unwrap();
    assert!(
        v.as_str()
            .unwrap()
            .contains("403: egress denied: evil.test:80 is not in the egress allowlist"),
        "{v}"
    );
    host.unload().await;
    let events = events.lock().unwrap().clone();
    let egress: Vec<&Value> = events.iter().filter(|e| e["event"] == "egress").collect();
    assert_eq!(egress.len(), checks.len(), "{events:#?}");
    for e in &egress {
        assert_eq!(e["host"], "api.test");
        assert_eq!(e["address"], "127.0.0.1");
        assert!(
            e["bytes_up"].as_u64().unwrap() > 0 && e["bytes_down"].as_u64().unwrap() > 0,
            "{e}"
        );
        assert!(e["ms"].as_f64().is_some() && e["end"] == "closed", "{e}");
    }
    let denial = events
        .iter()
        .find(|e| e["event"] == "denial" && e["layer"] == "egress")
        .expect("an egress denial in the audit trail");
    assert_eq!(denial["what"], "egress GET evil.test:80");
    assert!(denial["reason"]
        .as_str()
        .unwrap()
        .contains("not in the egress allowlist"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bounds_cut_big_transfers_and_refuse_over_the_connection_limit() {
    if !can_run() {
        return;
    }
    let big = Web::new(vec![b'x'; 4 << 20]);
    let d = ext(
        "t.eg",
        &["tool.invoke", "network.outbound"],
        &["t.eg.run"],
        SRC,
    );
    let op = operator(json!({"egress": {
        "allow": [format!("api.test:{}", big.port)], "resolve": {"api.test": "127.0.0.1"},
        "limits": {"bytes_per_connection": 65536, "connections": 1, "idle_seconds": 1}}}));
    let (audit, events) = audited();
    let host = load(&d, op, audit, None).await;
    // 4 MiB through a 64 KiB limit: cut short.
    let v = host
        .invoke("t.eg.run", &code(&format!("import urllib.request\ntry:\n    result = len(urllib.request.urlopen('http://api.test:{}/', timeout=5).read())\nexcept Exception as e:\n    result = 'cut: %s' % type(e).__name__", big.port)))
        .await
        .unwrap();
    assert!(
        v.as_str().is_some_and(|s| s.starts_with("cut")) || v.as_u64().is_some_and(|n| n < 65536),
        "{v}"
    );
    // One connection at once: a second, while an idle tunnel is open, is refused (503);
    // the idle one is closed after idle_seconds.
    let v = host
        .invoke("t.eg.run", &code(&format!(r#"
import socket, os, time
proxy = ("127.0.0.1", 3128)
a = socket.create_connection(proxy, 5)
a.sendall(b"CONNECT api.test:{p} HTTP/1.1\r\n\r\n")
first = a.recv(100)
b = socket.create_connection(proxy, 5)
b.sendall(b"CONNECT api.test:{p} HTTP/1.1\r\n\r\n")
second = b.recv(200)
a.settimeout(5)
t = time.time()
idle = a.recv(100)
result = [first.decode().split("\r\n")[0], second.decode().split("\r\n")[0], idle.decode(), round(time.time() - t)]
"#, p = big.port)))
        .await
        .unwrap();
    assert_eq!(v[0], "HTTP/1.1 200 Connection established", "{v}");
    assert!(
        v[1].as_str()
            .unwrap()
            .starts_with("HTTP/1.1 503 egress denied: 1 connections at once"),
        "{v}"
    );
    assert_eq!(v[2], "", "the idle tunnel closes: {v}");
    assert!(v[3].as_u64().unwrap() <= 3, "{v}");
    host.unload().await;
    let events = events.lock().unwrap().clone();
    let ends: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "egress")
        .filter_map(|e| e["end"].as_str())
        .collect();
    assert!(
        ends.contains(&"byte limit") && ends.contains(&"idle"),
        "{events:#?}"
    );
}

/// Both directions of a tunnel at full speed at once (a sender and a reader
/// thread against an echo server): neither direction waits for the other.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_duplex_tunnel_does_not_stall() {
    if !can_run() {
        return;
    }
    let echo = echo_server();
    let d = ext(
        "t.eg",
        &["tool.invoke", "network.outbound"],
        &["t.eg.run"],
        SRC,
    );
    let op = operator(
        json!({"egress": {"allow": [format!("echo.test:{echo}")], "resolve": {"echo.test": "127.0.0.1"}}}),
    );
    let host = load(&d, op, Audit::default(), None).await;
    let v = host
        .invoke(
            "t.eg.run",
            &code(&format!(
                r#"
import socket, threading
s = socket.create_connection(("127.0.0.1", 3128), 5)
s.sendall(b"CONNECT echo.test:{echo} HTTP/1.1\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
s.settimeout(10)
N = 16 << 20
threading.Thread(target=lambda: s.sendall(b"x" * N), daemon=True).start()
got = 0
while got < N:
    k = len(s.recv(1 << 16))
    if not k:
        break
    got += k
result = got
"#
            )),
        )
        .await
        .unwrap();
    assert_eq!(v, json!(16 << 20));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manifest_request_narrows_what_the_operator_allows() {
    if !can_run() {
        return;
    }
    let (a, b) = (Web::new(b"a".to_vec()), Web::new(b"b".to_vec()));
    let d = ext(
        "t.eg",
        &["tool.invoke", "network.outbound"],
        &["t.eg.run"],
        SRC,
    );
    let mut m: Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("nodus-extension.json")).unwrap(),
    )
    .unwrap();
    m["egress"] = json!([format!("a.test:{}", a.port)]);
    std::fs::write(d.path().join("nodus-extension.json"), m.to_string()).unwrap();
    let op = operator(json!({"egress": {
        "allow": [format!("a.test:{}", a.port), format!("b.test:{}", b.port)],
        "resolve": {"a.test": "127.0.0.1", "b.test": "127.0.0.1"}}}));
    let host = load(&d, op, Audit::default(), None).await;
    let get = |h: &str, p: u16| {
        code(&format!("import urllib.request\nresult = urllib.request.urlopen('http://{h}:{p}/', timeout=5).read().decode()"))
    };
    assert_eq!(
        host.invoke("t.eg.run", &get("a.test", a.port))
            .await
            .unwrap(),
        json!("a")
    );
    let v = host
        .invoke("t.eg.run", &get("b.test", b.port))
        .await
        .unwrap();
    assert!(v.as_str().unwrap().contains("403"), "{v}");
    assert_eq!((a.hits(), b.hits()), (1, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_egress_section_network_outbound_is_as_before() {
    let sink = Sink::new();
    let d = ext(
        "t.eg",
        &["tool.invoke", "network.outbound"],
        &["t.eg.run"],
        SRC,
    );
    let host = load(&d, OperatorPolicy::default(), Audit::default(), None).await;
    let v = host
        .invoke("t.eg.run", &code(&format!("import socket, os\ns = socket.create_connection(('127.0.0.1', {}), 2)\nresult = [s.getpeername()[1], os.environ.get('HTTP_PROXY')]", sink.tcp_port)))
        .await
        .unwrap();
    assert_eq!(v, json!([sink.tcp_port, null]));
    assert_eq!(sink.hits_after(Duration::from_secs(1)).0, 1);
}

#[test]
fn ext_runner_invoke_and_policy_show_and_enforce_it() {
    if !can_run() {
        return;
    }
    let web = Web::new(b"hello".to_vec());
    let d = ext(
        "t.eg",
        &["tool.invoke", "network.outbound"],
        &["t.eg.run"],
        SRC,
    );
    let pf = d.path().join("policy.json");
    std::fs::write(&pf, json!({"egress": {"allow": [format!("api.test:{}", web.port)], "resolve": {"api.test": "127.0.0.1"}}}).to_string()).unwrap();
    let out = std::process::Command::new(common::ext_runner())
        .arg("policy")
        .arg(d.path())
        .arg("--policy")
        .arg(&pf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("granted: api.test:{}", web.port)),
        "{text}"
    );
    assert!(text.contains("resolve: api.test -> 127.0.0.1"), "{text}");
    for (host, want) in [
        ("api.test", "\"hello\""),
        ("evil.test", "not in the egress allowlist"),
    ] {
        let c = code(&format!("import urllib.request\nresult = urllib.request.urlopen('http://{host}:{}/', timeout=5).read().decode()", web.port));
        let out = std::process::Command::new(common::ext_runner())
            .arg("invoke")
            .arg(d.path())
            .args(["t.eg.run", &c, "--python"])
            .arg(common::python())
            .arg("--policy")
            .arg(&pf)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(want),
            "{host}: {out:?}"
        );
    }
    assert_eq!(web.hits(), 1);
}

/// The operator guide's example policy is a valid policy file, and its
/// manifest example a valid request.
#[test]
fn the_guides_examples_load() {
    let doc = std::fs::read_to_string(common::root().join("docs/egress.md")).unwrap();
    let blocks: Vec<&str> = doc
        .split("```json\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .collect();
    let d = TempDir::new("egress-doc");
    let f = d.path().join("policy.json");
    std::fs::write(&f, blocks[0]).unwrap();
    let op = OperatorPolicy::load(&f).expect("docs/egress.md's policy loads");
    assert_eq!(op.egress.unwrap().allow.len(), 4);
    let m: Value = serde_json::from_str(blocks[1]).unwrap();
    assert_eq!(m["egress"], json!(["api.weather.example:443"]));
}
