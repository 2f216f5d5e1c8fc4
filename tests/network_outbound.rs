//! `network.outbound` with an operator port list, judged by a loopback
//! listener the test owns: the allowed port connects, and neither a plain TCP
//! socket nor MPTCP (which falls back to TCP) reaches another port; a worker
//! cannot open a listening port; netlink is routing only.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{ext, options, TempDir};
use nodus_extension::policy::OperatorPolicy;
use nodus_extension::ExtensionHost;
use serde_json::json;

const SRC: &str = "from nodus_extension.worker import register_tool, run_loop\n\
def run(args):\n    ns = {}\n    try:\n        exec(args['code'], ns)\n        return ns.get('result')\n    except Exception as e:\n        return 'raised: %s' % e\n\
register_tool('t.net.run', run)\nrun_loop()\n";

/// Whether a connection reached `l` within a short wait.
fn got_connection(l: &TcpListener) -> bool {
    l.set_nonblocking(true).unwrap();
    for _ in 0..20 {
        if l.accept().is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_operators_ports_are_reachable_mptcp_included() {
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let (ap, op) = (
        allowed.local_addr().unwrap().port(),
        other.local_addr().unwrap().port(),
    );
    let d: TempDir = ext(
        "t.net",
        &["tool.invoke", "network.outbound"],
        &["t.net.run"],
        SRC,
    );
    let opts = options().with_operator({
        let mut op = OperatorPolicy::default();
        op.tcp_ports = vec![ap];
        op
    });
    let host = ExtensionHost::load(d.path(), opts).await.unwrap();
    let connect = |port: u16, proto: &str| {
        json!({"code": format!("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM, {proto})\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\nresult = 'connected'")}).to_string()
    };
    // The control: the allowed port connects.
    assert_eq!(
        host.invoke("t.net.run", &connect(ap, "0")).await.unwrap(),
        json!("connected")
    );
    assert!(got_connection(&allowed));
    // The attacks: another port, plainly and through MPTCP (IPPROTO_MPTCP = 262).
    for proto in ["0", "262"] {
        let v = host.invoke("t.net.run", &connect(op, proto)).await.unwrap();
        assert!(
            v.as_str().unwrap().starts_with("raised"),
            "proto {proto}: {v}"
        );
        assert!(
            !got_connection(&other),
            "the listener on port {op} got a connection (proto {proto})"
        );
    }
    // No listening port, even by autobind.
    let v = host.invoke("t.net.run", r#"{"code": "import socket\ns = socket.socket()\ns.listen()\nresult = s.getsockname()"}"#).await.unwrap();
    assert!(v.as_str().unwrap().starts_with("raised"), "{v}");
    // Netlink: routing (getaddrinfo's need) yes, sock_diag (lists host sockets) no.
    let v = host
        .invoke("t.net.run", r#"{"code": "import socket\nr = socket.socket(16, 3, 0)\ntry:\n    socket.socket(16, 3, 4)\n    result = 'sock_diag open'\nexcept PermissionError:\n    result = 'route only'"}"#)
        .await
        .unwrap();
    assert_eq!(v, json!("route only"));
}
