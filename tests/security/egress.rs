//! Egress by host name (`network.outbound` with an operator `egress`
//! section), through `ext-runner run`, as root and as uid 65534: the allowed
//! host works through the runner's proxy (plain HTTP and CONNECT); every
//! other way out is judged by what reached listeners the test owns.

use super::*;
use crate::common::egress::{host_ipv4, Sink, Web};

fn policy(web: &Web, extra: &[String]) -> serde_json::Value {
    let mut allow = vec![
        format!("api.test:{}", web.port),
        format!("localhost:{}", web.port),
    ];
    allow.extend(extra.iter().cloned());
    json!({"egress": {"allow": allow, "resolve": {"api.test": "127.0.0.1"}}})
}

/// The control for everything below: through the proxy, the allowed host
/// answers over plain HTTP (urllib, proxy variables) and over CONNECT
/// (http.client's tunnel); what the allowlist does not name is refused with
/// its reason and never reaches the server.
#[test]
fn egress_allowed_host_works_and_nothing_else_reaches_it() {
    confined(FULL, |who| {
        let web = Web::new(b"hello".to_vec());
        let p = web.port;
        let code = snippet(
            r#"
import urllib.request, urllib.error, http.client, os
def get(url):
    try:
        return urllib.request.urlopen(url, timeout=5).read().decode()
    except urllib.error.HTTPError as e:
        return "HTTP %d %s" % (e.code, e.reason)
    except Exception as e:
        return "%s: %s" % (type(e).__name__, e)
def tunnel(host, port):
    try:
        proxy = os.environ["HTTPS_PROXY"].rsplit(":", 1)
        c = http.client.HTTPConnection(proxy[0][len("http://"):], int(proxy[1]), timeout=5)
        c.set_tunnel(host, port)
        c.request("GET", "/tunnel")
        return c.getresponse().read().decode()
    except Exception as e:
        return "%s: %s" % (type(e).__name__, e)
result = {
    "http": get("http://api.test:@P@/plain"),
    "connect": tunnel("api.test", @P@),
    "other_host": get("http://evil.test:@P@/x"),
    "ip_literal": get("http://127.0.0.1:@P@/x"),
    "mapped_literal": tunnel("[::ffff:127.0.0.1]", @P@),
    "rebinding": get("http://localhost:@P@/x"),
    "other_port": tunnel("api.test", @Q@),
    "no_proxy_env": os.environ.get("NO_PROXY"),
}
"#,
            &[("P", p.to_string()), ("Q", (p ^ 1).to_string())],
        );
        let (r, t) = run_once(
            Launch::new(who, &["network.outbound"]).policy(policy(&web, &[])),
            &code,
        );
        assert_eq!(r.field("http"), "hello", "{r:?}\n{}", t.all());
        assert_eq!(r.field("connect"), "hello", "{r:?}");
        for (k, why) in [
            ("other_host", "403 egress denied: evil.test"),
            (
                "ip_literal",
                "IP address the egress allowlist does not list",
            ),
            (
                "mapped_literal",
                "IP address the egress allowlist does not list",
            ),
            ("rebinding", "not public (127.0.0.1)"),
            ("other_port", "is not allowed for this host"),
        ] {
            assert!(r.field(k).contains(why), "{k}: {r:?}");
        }
        assert_eq!(r.field("no_proxy_env"), "");
        assert_eq!(
            web.lines(),
            ["GET /plain HTTP/1.1", "GET /tunnel HTTP/1.1"],
            "{r:?}"
        );
    });
}

/// Every way around the proxy, judged by a TCP listener and a UDP socket on
/// every local address of the host (127.0.0.1, ::1, ::ffff:127.0.0.1, the
/// host's interface address): plain TCP, TCP Fast Open, UDP, raw socket calls
/// through ctypes, packet and unix sockets. Control: the same snippet with
/// `network.outbound` and no egress section reaches both.
#[test]
fn attack_egress_bypass_finds_no_route() {
    confined(FULL, |who| {
        let web = Web::new(b"hello".to_vec());
        // Control: without an egress section, network.outbound reaches the sink.
        let sink = Sink::new();
        let (open, _) = run_once(Launch::new(who, &["network.outbound"]), &bypass(&sink));
        let (tcp, udp) = sink.hits_after(ms(1000));
        assert!(
            tcp >= 1 && udp >= 1,
            "control: tcp {tcp}, udp {udp}: {open:?}"
        );
        let sink = Sink::new();
        let launch = Launch::new(who, &["network.outbound"]).policy(policy(&web, &[]));
        let (r, t) = run_once(launch, &bypass(&sink));
        let (tcp, udp) = sink.hits_after(ms(800));
        assert_eq!(
            (tcp, udp),
            (0, 0),
            "something reached the sink: {r:?}\n{}",
            t.all()
        );
        assert_eq!(r.field("packet"), "EPERM", "packet: {r:?}");
        // A unix socket is allowed in the private root, which holds no host
        // socket to relay through (the sink above is the outside check);
        // without a private root seccomp denies it.
        let unix = r.field("unix");
        assert!(
            unix == "EPERM" || unix.parse::<i64>().is_ok_and(|fd| fd >= 0),
            "unix: {r:?}"
        );
        assert!(
            r.field("udp_mapped").len() > 1,
            "the snippet did not run to the end: {r:?}"
        );
        assert_eq!(web.hits(), 0);
    });
}

/// Tries every way around the proxy towards `sink`.
fn bypass(sink: &Sink) -> String {
    let host = host_ipv4().unwrap_or_else(|| "127.0.0.1".into());
    snippet(
        r#"
import socket
def err(e):
    return errno.errorcode.get(e.errno, str(e)) if getattr(e, "errno", None) else repr(e)
def tcp(fam, addr, tfo=False):
    try:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(2)
        if tfo:
            s.sendto(b"leak", socket.MSG_FASTOPEN, addr)
        else:
            s.connect(addr)
            s.sendall(b"leak")
        s.close()
        return "connected"
    except OSError as e:
        return err(e)
def udp(fam, addr):
    try:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.sendto(b"leak", addr)
        s.close()
        return "sent"
    except OSError as e:
        return err(e)
T, U, H = @T@, @U@, "@H@"
result = {
    "tcp4": tcp(socket.AF_INET, ("127.0.0.1", T)),
    "tcp_host": tcp(socket.AF_INET, (H, T)),
    "tcp6": tcp(socket.AF_INET6, ("::1", T)),
    "tcp_mapped": tcp(socket.AF_INET6, ("::ffff:127.0.0.1", T)),
    "tcp_mapped_host": tcp(socket.AF_INET6, ("::ffff:" + H, T)),
    "tfo4": tcp(socket.AF_INET, ("127.0.0.1", T), tfo=True),
    "tfo_host": tcp(socket.AF_INET, (H, T), tfo=True),
    "tfo6": tcp(socket.AF_INET6, ("::1", T), tfo=True),
    "tfo_mapped": tcp(socket.AF_INET6, ("::ffff:127.0.0.1", T), tfo=True),
    "raw_tcp": raw_connect(2, 1, ("127.0.0.1", T)),
    "raw_tcp_host": raw_connect(2, 1, (H, T)),
    "udp4": udp(socket.AF_INET, ("127.0.0.1", U)),
    "udp_host": udp(socket.AF_INET, (H, U)),
    "udp6": udp(socket.AF_INET6, ("::1", U)),
    "udp_mapped": udp(socket.AF_INET6, ("::ffff:127.0.0.1", U)),
    "packet": ename(sys_call(41, 17, 3, 0)),
    "unix": ename(sys_call(41, 1, 1, 0)),
    "dns": attempt(lambda: socket.getaddrinfo("api.test", 80)),
}
"#,
        &[
            ("T", sink.tcp_port.to_string()),
            ("U", sink.udp_port.to_string()),
            ("H", host),
        ],
    )
}

/// Where no network namespace can be made, an allowlist cannot be enforced:
/// the worker does not start, in strict and in best-effort mode (here: the
/// namespaces layer switched off, the closest this kernel comes).
#[test]
fn egress_never_fails_open() {
    confined(FULL, |who| {
        let web = Web::new(b"hello".to_vec());
        for mode in ["strict", "best-effort"] {
            let mut p = policy(&web, &[]);
            p["mode"] = json!(mode);
            p["layers"] = json!({"namespaces": false});
            let (r, t) = run_once(
                Launch::new(who, &["network.outbound"]).policy(p),
                "result = 1",
            );
            assert!(
                matches!(r, Reply::Gone | Reply::Failed(_)),
                "{mode}: it started: {r:?}"
            );
            assert!(t.contains("refused in every mode"), "{mode}: {}", t.all());
        }
    });
}
