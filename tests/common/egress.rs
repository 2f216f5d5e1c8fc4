//! Host-side endpoints for the egress tests (`tests/egress.rs`,
//! `tests/security/egress.rs`): a small HTTP server, a TLS one, and sinks
//! that count whatever reaches them over TCP or UDP on every local address.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An HTTP server on 127.0.0.1: answers every request with 200 and `body`
/// (after a head with `Content-Length`), records each request line.
pub struct Web {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Web {
    pub fn new(body: Vec<u8>) -> Web {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind web");
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        let body = Arc::new(body);
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let (r, body) = (r.clone(), body.clone());
                        std::thread::spawn(move || {
                            let _ = c.set_nonblocking(false);
                            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                            let mut head = Vec::new();
                            let mut buf = [0u8; 4096];
                            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                                match c.read(&mut buf) {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => head.extend_from_slice(&buf[..n]),
                                }
                            }
                            let text = String::from_utf8_lossy(&head).to_string();
                            r.lock().unwrap().push(text);
                            let _ = c.write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                                    body.len()
                                )
                                .as_bytes(),
                            );
                            let _ = c.write_all(&body);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Web {
            port,
            requests,
            stop,
        }
    }

    pub fn hits(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// The request lines seen ("GET /x HTTP/1.1").
    pub fn lines(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|h| h.lines().next().unwrap_or_default().to_string())
            .collect()
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A TCP listener and a UDP socket on the same port of every local address
/// (dual-stack `[::]`, so 127.0.0.1, ::1, ::ffff:127.0.0.1 and the host's
/// interface addresses all arrive here), counting what reaches them.
pub struct Sink {
    pub tcp_port: u16,
    pub udp_port: u16,
    tcp_hits: Arc<AtomicUsize>,
    udp_hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    pub fn new() -> Sink {
        let l = TcpListener::bind("[::]:0")
            .or_else(|_| TcpListener::bind("0.0.0.0:0"))
            .expect("bind sink");
        let u = UdpSocket::bind("[::]:0")
            .or_else(|_| UdpSocket::bind("0.0.0.0:0"))
            .expect("bind udp sink");
        l.set_nonblocking(true).unwrap();
        u.set_nonblocking(true).unwrap();
        let (tcp_port, udp_port) = (
            l.local_addr().unwrap().port(),
            u.local_addr().unwrap().port(),
        );
        let tcp_hits: Arc<AtomicUsize> = Arc::default();
        let udp_hits: Arc<AtomicUsize> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (t, d, s) = (tcp_hits.clone(), udp_hits.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::SeqCst) {
                let mut any = false;
                if l.accept().is_ok() {
                    t.fetch_add(1, Ordering::SeqCst);
                    any = true;
                }
                if u.recv_from(&mut buf).is_ok() {
                    d.fetch_add(1, Ordering::SeqCst);
                    any = true;
                }
                if !any {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Sink {
            tcp_port,
            udp_port,
            tcp_hits,
            udp_hits,
            stop,
        }
    }

    /// (TCP connections, UDP datagrams) after waiting up to `within` for a first one.
    pub fn hits_after(&self, within: Duration) -> (usize, usize) {
        let end = Instant::now() + within;
        let get = || {
            (
                self.tcp_hits.load(Ordering::SeqCst),
                self.udp_hits.load(Ordering::SeqCst),
            )
        };
        while get() == (0, 0) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        get()
    }
}

impl Default for Sink {
    fn default() -> Self {
        Sink::new()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The host's first non-loopback IPv4 address, if any (`ip -4 -o addr`).
pub fn host_ipv4() -> Option<String> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|a| a.split('/').next())
        .find(|a| !a.starts_with("127."))
        .map(str::to_string)
}

/// A self-signed certificate for `name` (`cert.pem`, `key.pem` in `dir`),
/// made with the openssl command; `None` (and a SKIP note) without it.
pub fn self_signed(dir: &Path, name: &str) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        ])
        .arg(format!("/CN={name}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP: openssl missing: no TLS server for the HTTPS checks");
        return None;
    }
    Some((cert, key))
}

/// An HTTPS server on 127.0.0.1 (a host-side Python with `ssl`): every
/// request gets 200 and the body `tls ok`. Killed on drop.
pub struct TlsServer {
    pub port: u16,
    child: Child,
}

impl TlsServer {
    pub fn start(python: &Path, cert: &Path, key: &Path) -> TlsServer {
        let script = r#"
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
def serve(c):
    try:
        t = ctx.wrap_socket(c, server_side=True)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = t.recv(4096)
            if not chunk:
                break
            data += chunk
        t.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ntls ok")
        t.close()
    except Exception:
        pass
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
        let mut child = Command::new(python)
            .args(["-c", script])
            .arg(cert)
            .arg(key)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the TLS server");
        let mut line = String::new();
        let mut out = child.stdout.take().unwrap();
        let mut b = [0u8; 1];
        while out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
            line.push(b[0] as char);
        }
        let port = line.trim().parse().expect("TLS server port");
        TlsServer { port, child }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP echo server on 127.0.0.1 (each connection echoes until EOF). Its
/// port; it lives as long as the test process.
pub fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind echo");
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}
