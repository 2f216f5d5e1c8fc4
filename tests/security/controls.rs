//! Controls: what a well-behaved worker must still be able to do under the same confinement.

use super::*;

/// What every worker is, read from outside: no_new_privs, seccomp, no
/// capabilities, its own pid namespace, its own net namespace
/// without network.outbound, a scratch TMPDIR that is removed after it.
#[test]
fn control_worker_confinement_seen_from_outside() {
    confined(FULL, |who| {
        let mut s = Launch::new(who, &[]).start();
        let r = s.exec(r#"result = {"pid": os.getpid(), "tmpdir": os.environ["TMPDIR"], "home": os.environ["HOME"]}"#);
        let w = s.worker_pid().expect("worker");
        // Process 1 of its own pid namespace, or 2 under a reaper that is.
        let inner = r.value()["pid"].as_i64().unwrap_or(0);
        assert!(
            (1..=2).contains(&inner),
            "the worker is pid {inner} of its namespace"
        );
        let nspid = status_field(w, "NSpid").unwrap_or_default();
        assert_eq!(
            nspid.split_whitespace().count(),
            2,
            "not in a nested pid namespace: NSpid {nspid}"
        );
        assert_eq!(status_field(w, "NoNewPrivs").as_deref(), Some("1"));
        assert_eq!(status_field(w, "Seccomp").as_deref(), Some("2"));
        for c in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(
                status_field(w, c).as_deref(),
                Some("0000000000000000"),
                "{c}"
            );
        }
        // The runner's uid, or for root a uid of its own from the default
        // range (issue 12 item 3): never 0.
        let uid: u32 = status_field(w, "Uid")
            .unwrap()
            .split_whitespace()
            .next()
            .and_then(|u| u.parse().ok())
            .unwrap();
        match who {
            Who::Nobody => assert_eq!(uid, NOBODY),
            Who::Root => assert!(
                (1_879_048_192..1_879_048_192 + 65_536).contains(&uid),
                "root's worker runs as uid {uid}"
            ),
        }
        assert_ne!(
            ns(w, "net"),
            ns(std::process::id() as i32, "net"),
            "shares the host's net namespace"
        );
        assert_ne!(ns(w, "pid"), ns(std::process::id() as i32, "pid"));
        assert_eq!(r.field("home"), r.field("tmpdir"));
        // In its private root the worker sees its scratch folder at /tmp.
        assert_eq!(r.field("tmpdir"), "/tmp");
        let tmp = s.scratch().expect("scratch folder");
        assert!(tmp
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("nodus-ext-"));
        let meta = std::fs::metadata(&tmp).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        s.finish();
        assert!(
            wait_removed(&tmp, Duration::from_secs(5)),
            "scratch not removed"
        );
        // With network.outbound, the host's net namespace (that is the point of it).
        let mut s = Launch::new(who, &["network.outbound"]).start();
        s.exec("result = 1");
        let w = s.worker_pid().expect("worker");
        assert_eq!(ns(w, "net"), ns(std::process::id() as i32, "net"));
        s.finish();
    });
}

#[test]
fn control_stdlib_imports_threads_asyncio_tempfile() {
    confined(FULL, |who| {
        let code = r#"
import ssl, sqlite3, hashlib, json, asyncio, threading, tempfile, socket, zlib, decimal, uuid, concurrent.futures
ctx = ssl.create_default_context()
db = sqlite3.connect(os.path.join(tempfile.gettempdir(), "t.db")); db.execute("create table t(x)"); db.execute("insert into t values (42)"); db.commit()
async def main():
    a, b = socket.socketpair()
    r, w = await asyncio.open_connection(sock=a)
    r2, w2 = await asyncio.open_connection(sock=b)
    w.write(b"ping\n"); await w.drain()
    line = await r2.readline()
    w.close(); w2.close()
    return line.decode().strip()
with concurrent.futures.ThreadPoolExecutor(4) as ex:
    squares = list(ex.map(lambda x: x * x, range(8)))
with tempfile.TemporaryDirectory() as d:
    fd, p = tempfile.mkstemp(dir=d); os.write(fd, b"t"); os.close(fd)
    tmp_ok = open(p).read()
    import shutil
    shutil.copy2(p, p + ".copy"); shutil.copytree(d, d + "-tree")
    copied = open(os.path.join(d + "-tree", os.path.basename(p) + ".copy")).read()
result = {"shutil": copied, "ssl_certs": ctx.cert_store_stats()["x509_ca"] > 0, "sqlite": db.execute("select x from t").fetchone()[0],
          "sha256": hashlib.sha256(b"x").hexdigest()[:8], "asyncio": asyncio.run(main()), "threads": squares[-1],
          "tempfile": tmp_ok, "uuid": len(str(uuid.uuid4())), "zlib": len(zlib.compress(b"a" * 100)) < 100}
"#;
        let (r, t) = run_once(Launch::new(who, &[]), code);
        let v = match &r {
            Reply::Value(v) => v.clone(),
            other => panic!("{other:?}\n{}", t.all()),
        };
        assert_eq!(v["sqlite"], json!(42), "{v}");
        assert_eq!(v["sha256"], json!("2d711642"), "{v}");
        assert_eq!(v["asyncio"], json!("ping"), "{v}");
        assert_eq!(v["threads"], json!(49), "{v}");
        assert_eq!(v["tempfile"], json!("t"), "{v}");
        assert_eq!(v["shutil"], json!("t"), "shutil.copy2/copytree: {v}");
        assert_eq!(v["zlib"], json!(true), "{v}");
        assert_eq!(
            v["ssl_certs"],
            json!(true),
            "the TLS trust store is not readable: {v}"
        );
    });
}

#[test]
fn control_filesystem_read_workspace() {
    confined(FULL, |who| {
        let ws = world_dir("ws");
        std::fs::create_dir(ws.join("sub")).unwrap();
        std::fs::write(ws.join("sub/a.txt"), "alpha").unwrap();
        chmod(&ws.join("sub"), 0o755);
        chmod(&ws.join("sub/a.txt"), 0o644);
        let code = snippet(
            r#"result = {"list": sorted(os.listdir(@W@)), "read": open(os.path.join(@W@, "sub/a.txt")).read()}"#,
            &[("W", lit(ws.path()))],
        );
        let (r, _) = run_once(
            Launch::new(who, &["filesystem.read"]).workspace(ws.path()),
            &code,
        );
        assert_eq!(r.value()["read"], json!("alpha"), "{r:?}");
        assert_eq!(r.value()["list"], json!(["sub"]));
        // And without the capability the same read fails.
        let (r2, _) = run_once(Launch::new(who, &[]), &code);
        assert!(
            r2.text().contains("Permission denied") || r2.text().contains("No such file"),
            "{r2:?}"
        );
    });
}

#[test]
fn control_filesystem_write_workspace() {
    confined(FULL, |who| {
        let ws = owned_dir(who, "ws");
        owned_file(who, &ws.join("old.txt"), "old", 0o644);
        let code = snippet(
            r#"
w = @W@
os.makedirs(os.path.join(w, "d/e"))
open(os.path.join(w, "d/e/new.txt"), "w").write("new")
os.rename(os.path.join(w, "d/e/new.txt"), os.path.join(w, "renamed.txt"))
os.rename(os.path.join(w, "renamed.txt"), os.path.join(w, "d/renamed.txt"))
os.unlink(os.path.join(w, "old.txt"))
os.symlink("renamed.txt", os.path.join(w, "d/link"))
import shutil
shutil.copyfile(os.path.join(w, "d/renamed.txt"), os.path.join(w, "copy.txt"))
result = sorted(os.listdir(w))
"#,
            &[("W", lit(ws.path()))],
        );
        let (r, t) = run_once(
            Launch::new(who, &["filesystem.write"]).workspace(ws.path()),
            &code,
        );
        assert_eq!(r.value(), &json!(["copy.txt", "d"]), "{}", t.all());
        assert_eq!(
            std::fs::read_to_string(ws.join("d/renamed.txt")).unwrap(),
            "new"
        );
        assert_eq!(std::fs::read_to_string(ws.join("d/link")).unwrap(), "new");
        assert!(!ws.join("old.txt").exists());
    });
}

#[test]
fn control_network_outbound_tcp_exchange() {
    confined(FULL, |who| {
        let trap = Trap::tcp();
        let udp = Trap::udp();
        let code = snippet(
            r#"
import socket
s = socket.create_connection(("127.0.0.1", @P@), timeout=5); s.sendall(b"hello")
reply = s.recv(100).decode()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"udp", ("127.0.0.1", @U@))
result = {"reply": reply, "resolv": socket.getaddrinfo("localhost", 80)[0][4][0]}
"#,
            &[("P", trap.port.to_string()), ("U", udp.port.to_string())],
        );
        let (r, t) = run_once(Launch::new(who, &["network.outbound"]), &code);
        assert_eq!(r.value()["reply"], json!("ECHO:hello"), "{}", t.all());
        assert_eq!(trap.catch.data(), "hello");
        assert!(udp.hits_after(ms(1000)) >= 1);
    });
}

#[test]
fn control_subprocess_run_system_binaries() {
    confined(FULL, |who| {
        let ws = world_dir("ws");
        std::fs::write(ws.join("listed.txt"), "x").unwrap();
        chmod(&ws.join("listed.txt"), 0o644);
        let code = snippet(
            r#"
import subprocess
result = {"echo": subprocess.run(["/bin/echo", "hi"], capture_output=True, text=True).stdout,
          "ls": subprocess.run(["ls", @W@], capture_output=True, text=True).stdout,
          "sh": subprocess.run("echo $((6*7))", shell=True, capture_output=True, text=True).stdout}
"#,
            &[("W", lit(ws.path()))],
        );
        let (r, t) = run_once(
            Launch::new(who, &["subprocess.run", "filesystem.read"]).workspace(ws.path()),
            &code,
        );
        assert_eq!(r.value()["echo"], json!("hi\n"), "{}", t.all());
        assert_eq!(r.value()["ls"], json!("listed.txt\n"));
        assert_eq!(r.value()["sh"], json!("42\n"));
    });
}

#[test]
fn control_hello_example() {
    confined(FULL, |who| {
        assert_host_healthy(who, &[]);
    });
}

/// Client sockets keep working where the worker shares the host's network
/// namespace and may bind nothing: a DNS-style UDP exchange (connected and
/// unconnected, and through asyncio), a TLS client verifying a loopback
/// server's certificate, name resolution. Their local ports come from the
/// kernel's implicit bind on connect and sendto.
#[test]
fn control_network_outbound_clients_bind_implicitly() {
    confined(FULL, |who| {
        let ws = world_dir("tls");
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
            ])
            .arg("-keyout")
            .arg(ws.join("key.pem"))
            .arg("-out")
            .arg(ws.join("cert.pem"))
            .output();
        if !made.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("SKIP: openssl missing: {made:?}");
            return;
        }
        chmod(&ws.join("cert.pem"), 0o644);
        let tls = Victim::python(
            Who::Root,
            &format!(
                r#"
import socket, ssl
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain({cert}, {key})
l = socket.create_server(("127.0.0.1", 0)); print(l.getsockname()[1], flush=True)
c, _ = l.accept()
with ctx.wrap_socket(c, server_side=True) as t:
    t.sendall(b"tls-ok:" + t.recv(10))
"#,
                cert = lit(ws.join("cert.pem")),
                key = lit(ws.join("key.pem")),
            ),
        );
        let dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dns_port = dns.local_addr().unwrap().port();
        let responder = std::thread::spawn(move || {
            dns.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut buf = [0u8; 512];
            for _ in 0..3 {
                let Ok((n, from)) = dns.recv_from(&mut buf) else {
                    return;
                };
                let _ = dns.send_to(&[b"answer:", &buf[..n]].concat(), from);
            }
        });
        let code = snippet(
            r#"
import asyncio, socket, ssl
def connected():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
    u.connect(("127.0.0.1", @D@)); u.send(b"q1"); return u.recv(100).decode()
def unconnected():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
    u.sendto(b"q2", ("127.0.0.1", @D@)); return u.recvfrom(100)[0].decode()
async def datagram():
    loop = asyncio.get_running_loop(); got = loop.create_future()
    class P(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr): got.set_result(data.decode())
    t, _ = await loop.create_datagram_endpoint(P, remote_addr=("127.0.0.1", @D@))
    t.sendto(b"q3"); r = await asyncio.wait_for(got, 5); t.close(); return r
def tls():
    ctx = ssl.create_default_context(cafile=@C@)
    with socket.create_connection(("127.0.0.1", @T@), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            t.sendall(b"hi"); return t.recv(100).decode()
result = {"connected": attempt(connected), "unconnected": attempt(unconnected),
          "asyncio": attempt(lambda: asyncio.run(datagram())), "tls": attempt(tls),
          "resolve": attempt(lambda: socket.getaddrinfo("localhost", 443, type=socket.SOCK_STREAM)[0][4][0])}
"#,
            &[
                ("D", dns_port.to_string()),
                ("T", tls.line.clone()),
                ("C", lit(ws.join("cert.pem"))),
            ],
        );
        let (r, t) = run_once(
            Launch::new(who, &["network.outbound", "filesystem.read"]).workspace(ws.path()),
            &code,
        );
        let _ = responder.join();
        let v = match &r {
            Reply::Value(v) => v.clone(),
            other => panic!("{other:?}\n{}", t.all()),
        };
        assert_eq!(v["connected"], json!("ok: 'answer:q1'"), "{v}");
        assert_eq!(v["unconnected"], json!("ok: 'answer:q2'"), "{v}");
        assert_eq!(v["asyncio"], json!("ok: 'answer:q3'"), "{v}");
        assert_eq!(v["tls"], json!("ok: 'tls-ok:hi'"), "{v}");
        assert!(
            v["resolve"]
                .as_str()
                .is_some_and(|a| a.contains("127.0.0.1") || a.contains("::1")),
            "{v}"
        );
    });
}
