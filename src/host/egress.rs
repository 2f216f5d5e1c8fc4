//! The egress proxy: serves the listening socket a worker's process made in
//! its own network namespace (`sandbox/child.rs`), from outside it, on the
//! runner's tokio runtime. It is the worker's only way out.
//!
//! - `CONNECT host:port` (HTTPS and any other TCP) and plain-HTTP requests in
//!   absolute form (`GET http://host/path`); request and response heads are
//!   parsed by `httparse`, targets by the `http` crate.
//! - Each request is decided by the worker's `EgressPlan` (names, ports, IP
//!   literals) before anything is resolved; names are resolved here, never by
//!   the worker, through `resolve` pins or the host's resolver, and a name
//!   whose addresses are not public is refused unless pinned or listed.
//! - A refusal is an HTTP 403 whose status line and body say host, port and
//!   why (urllib and requests show the status line), and an audit `denial`;
//!   every allowed connection is an audit `egress` event with the host, port,
//!   address, bytes each way and duration.
//! - Bounds: connections at once, bytes per connection, idle time, time to
//!   send the request head and to connect.
//!
//! One request per connection: a plain-HTTP request goes upstream with
//! `Connection: close` and the response comes back with it, so a client's next
//! request (perhaps for another host) comes on a new connection and is decided
//! on its own. Whatever a client sends after its first head goes to the same
//! upstream; the destination is what is enforced, not the bytes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result, SandboxKind};
use crate::host::audit::Audit;
use crate::host::services::RateLimiter;
use crate::sandbox::egress::{EgressPlan, Target};

/// Longest request or response head the proxy reads.
pub const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 100;
/// Denials audited per worker per second (the rest are counted into the next).
const DENIALS_PER_SECOND: u32 = 100;
const BUFFER: usize = 64 * 1024;

/// A running proxy for one worker; stops (with every connection) when dropped.
#[derive(Debug)]
pub struct EgressProxy {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    plan: EgressPlan,
    audit: Audit,
    extension: String,
    connections: Arc<tokio::sync::Semaphore>,
    denials: RateLimiter,
    dropped: std::sync::atomic::AtomicU64,
}

/// Serves `listener` (the socket in the worker's namespace) on the current
/// tokio runtime until the returned handle is dropped.
pub fn serve(
    listener: std::net::TcpListener,
    plan: EgressPlan,
    audit: Audit,
    extension: &str,
) -> Result<EgressProxy> {
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| {
        Error::sandbox_io(
            SandboxKind::Runtime,
            "cannot serve the worker's egress proxy socket",
            e,
        )
    })?;
    let shared = Arc::new(Shared {
        connections: Arc::new(tokio::sync::Semaphore::new(
            plan.limits.connections as usize,
        )),
        plan,
        audit,
        extension: extension.to_string(),
        denials: RateLimiter::per_second(DENIALS_PER_SECOND),
        dropped: Default::default(),
    });
    let task = tokio::spawn(accept_loop(listener, shared));
    Ok(EgressProxy { task })
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    // Connection tasks live in the set: aborting this task drops them all.
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    // EMFILE and the like: wait instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = client.set_nodelay(true);
                match shared.connections.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let shared = shared.clone();
                        tasks.spawn(async move {
                            handle(client, &shared).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        // No task for a refusal over the limit: one try to say why, then close.
                        let n = shared.plan.limits.connections;
                        let why = format!("{n} connections at once are open (egress.limits.connections)");
                        shared.deny("connection", &why);
                        let _ = client.try_write(&refusal(503, &why));
                    }
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

impl Shared {
    fn deny(&self, what: &str, reason: &str) {
        use std::sync::atomic::Ordering;
        if !self.denials.admit() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut fields = json!({
            "what": format!("egress {what}"),
            "capability": "network.outbound",
            "layer": "egress",
            "reason": reason,
        });
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            fields["dropped_before"] = dropped.into();
        }
        self.audit.record("denial", &self.extension, fields);
    }
}

/// An HTTP response that refuses, with the reason in the status line and body.
fn refusal(code: u16, reason: &str) -> Vec<u8> {
    // The reason quotes what the worker sent: printable ASCII only.
    let line: String = reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    // 502 and 504: the request was allowed and failed upstream.
    let label = if code == 502 || code == 504 {
        "egress failed"
    } else {
        "egress denied"
    };
    let body = format!("{label}: {line}\n");
    format!(
        "HTTP/1.1 {code} {label}: {line}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nX-Nodus-Egress: denied\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends a refusal (within a second) and closes.
async fn answer(client: &mut TcpStream, code: u16, why: &str) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        client.write_all(&refusal(code, why)),
    )
    .await;
    let _ = client.shutdown().await;
}

/// What the worker asked for.
struct Request {
    connect: bool,
    method: String,
    host: String,
    port: u16,
    /// For plain HTTP: the head to send upstream.
    upstream_head: Vec<u8>,
}

/// Reads one request head (bounded in size and time). Returns the request
/// and the bytes read past the head, or the status and reason of a refusal.
async fn read_request(
    client: &mut TcpStream,
    within: Duration,
) -> std::result::Result<(Request, Vec<u8>), (u16, String)> {
    let mut buf = Vec::with_capacity(4096);
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout_at(deadline, client.read(&mut chunk)).await {
            Err(_) => {
                return Err((
                    408,
                    format!("no complete request head within {}s", within.as_secs()),
                ))
            }
            Ok(Err(e)) => return Err((400, format!("reading the request: {e}"))),
            Ok(Ok(0)) => return Err((400, "the connection closed before a request head".into())),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let request = interpret(&req)?;
                return Ok((request, buf[len..].to_vec()));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Err((431, format!("request head longer than {MAX_HEAD} bytes")))
            }
            Err(e) => return Err((400, format!("not an HTTP request ({e})"))),
        }
    }
}

fn interpret(req: &httparse::Request) -> std::result::Result<Request, (u16, String)> {
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    if method.eq_ignore_ascii_case("CONNECT") {
        let auth: http::uri::Authority = target
            .parse()
            .map_err(|_| (400, format!("CONNECT target '{target}' is not host:port")))?;
        let port = auth
            .port_u16()
            .ok_or_else(|| (400, format!("CONNECT target '{target}' has no port")))?;
        return Ok(Request {
            connect: true,
            method,
            host: auth.host().to_string(),
            port,
            upstream_head: Vec::new(),
        });
    }
    let uri: http::Uri = target
        .parse()
        .map_err(|_| (400, format!("request target '{target}' is not a URL")))?;
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => {}
        Some(s) => {
            return Err((
                400,
                format!("'{s}://' through this proxy takes CONNECT (set HTTPS_PROXY)"),
            ))
        }
        None => {
            return Err((
                400,
                "this is a proxy: the request needs an absolute http:// URL".into(),
            ))
        }
    }
    let auth = uri
        .authority()
        .ok_or_else(|| (400, format!("request target '{target}' has no host")))?;
    if auth.as_str().contains('@') {
        return Err((
            400,
            "credentials in the URL's authority are not forwarded".into(),
        ));
    }
    let host = auth.host().to_string();
    let port = auth.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut head = format!("{method} {path} HTTP/1.{}\r\n", req.version.unwrap_or(1)).into_bytes();
    let mut has_host = false;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if matches!(
            name.as_str(),
            "proxy-connection" | "proxy-authorization" | "connection" | "keep-alive"
        ) {
            continue;
        }
        has_host |= name == "host";
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(h.value);
        head.extend_from_slice(b"\r\n");
    }
    if !has_host {
        head.extend_from_slice(format!("Host: {auth}\r\n").as_bytes());
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Request {
        connect: false,
        method,
        host,
        port,
        upstream_head: head,
    })
}

/// The addresses an allowed target may be connected to, or why none.
async fn addresses(
    plan: &EgressPlan,
    target: &Target,
    host: &str,
    port: u16,
    within: Duration,
) -> std::result::Result<Vec<IpAddr>, (u16, String)> {
    match target {
        Target::Pinned { addr, .. } => Ok(vec![*addr]),
        Target::Literal(ip) => Ok(vec![*ip]),
        Target::Lookup { name } => {
            let found =
                tokio::time::timeout(within, tokio::net::lookup_host((name.as_str(), port)))
                    .await
                    .map_err(|_| {
                        (
                            504,
                            format!("{host}:{port}: resolving took over {}s", within.as_secs()),
                        )
                    })?
                    .map_err(|e| (502, format!("{host}:{port}: cannot resolve: {e}")))?;
            let all: Vec<IpAddr> = found.map(|a| a.ip()).collect();
            let usable: Vec<IpAddr> = all
                .iter()
                .copied()
                .filter(|a| plan.address_allowed(*a, port))
                .collect();
            if usable.is_empty() {
                let shown: Vec<String> = all.iter().map(|a| a.to_string()).collect();
                return Err((
                    403,
                    format!(
                        "{host}:{port} resolves only to addresses that are not public ({}); pin it with egress.resolve or allow the address as a literal",
                        shown.join(", ")
                    ),
                ));
            }
            Ok(usable)
        }
    }
}

async fn connect(
    addrs: &[IpAddr],
    port: u16,
    within: Duration,
) -> std::result::Result<(TcpStream, SocketAddr), String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = String::from("no address");
    for ip in addrs {
        let addr = SocketAddr::new(*ip, port);
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok((s, addr));
            }
            Ok(Err(e)) => last = format!("{addr}: {e}"),
            Err(_) => {
                return Err(format!(
                    "{addr}: no connection within {}s",
                    within.as_secs()
                ))
            }
        }
    }
    Err(last)
}

async fn handle(mut client: TcpStream, shared: &Shared) {
    let plan = &shared.plan;
    let started = Instant::now();
    let within = Duration::from_secs(plan.limits.connect_seconds);
    async fn refuse(shared: &Shared, client: &mut TcpStream, code: u16, what: &str, why: &str) {
        shared.deny(what, why);
        answer(client, code, why).await;
    }
    let (req, early) = match read_request(&mut client, within).await {
        Ok(r) => r,
        Err((code, why)) => return refuse(shared, &mut client, code, "request", &why).await,
    };
    let what = format!("{} {}:{}", req.method, req.host, req.port);
    let target = match plan.check(&req.host, req.port) {
        Ok(t) => t,
        Err(why) => return refuse(shared, &mut client, 403, &what, &why).await,
    };
    let addrs = match addresses(plan, &target, &req.host, req.port, within).await {
        Ok(a) => a,
        Err((403, why)) => return refuse(shared, &mut client, 403, &what, &why).await,
        Err((code, why)) => {
            // Not a policy decision: the answer says so, no denial is recorded.
            return answer(&mut client, code, &why).await;
        }
    };
    let (mut upstream, addr) = match connect(&addrs, req.port, within).await {
        Ok(c) => c,
        Err(why) => {
            let why = format!("{}:{}: cannot connect: {why}", req.host, req.port);
            return answer(&mut client, 502, &why).await;
        }
    };
    let mut counts = Counts::default();
    let first = if req.connect {
        const OK: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
        counts.down += OK.len() as u64;
        client.write_all(OK).await.is_ok()
    } else {
        counts.up += req.upstream_head.len() as u64;
        upstream.write_all(&req.upstream_head).await.is_ok()
    };
    if first && !early.is_empty() {
        counts.up += early.len() as u64;
        let _ = upstream.write_all(&early).await;
    }
    let end = if first {
        relay(&mut client, &mut upstream, !req.connect, &mut counts, plan).await
    } else {
        "closed"
    };
    shared.audit.record(
        "egress",
        &shared.extension,
        json!({
            "method": req.method,
            "host": req.host,
            "port": req.port,
            "address": addr.ip().to_string(),
            "bytes_up": counts.up,
            "bytes_down": counts.down,
            "ms": crate::host::audit::millis(started),
            "end": end,
        }),
    );
}

#[derive(Default)]
struct Counts {
    up: u64,
    down: u64,
}

/// Relays both ways until both sides are done, the connection is idle for
/// too long or it has carried its byte limit. The two directions run
/// independently (a side that stops reading never stalls the other one).
/// For plain HTTP (`rewrite_response`), the response head is given
/// `Connection: close`, and the end of the response ends the connection.
/// Returns how it ended.
async fn relay(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    rewrite_response: bool,
    counts: &mut Counts,
    plan: &EgressPlan,
) -> &'static str {
    use std::sync::atomic::{AtomicU64, Ordering};
    let idle = Duration::from_secs(plan.limits.idle_seconds);
    let cap = plan.limits.bytes_per_connection;
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let start = tokio::time::Instant::now();
    // Bytes so far (both ways), and the time of the last byte, in ms since `start`.
    let total = AtomicU64::new(counts.up + counts.down);
    let last = AtomicU64::new(0);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let take = |n: usize, dir: &AtomicU64| -> std::result::Result<(), &'static str> {
        if total.fetch_add(n as u64, Ordering::Relaxed) + n as u64 > cap {
            return Err("byte limit");
        }
        dir.fetch_add(n as u64, Ordering::Relaxed);
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        Ok(())
    };
    let upward = async {
        let mut buf = vec![0u8; BUFFER];
        loop {
            match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    take(n, &up)?;
                    uw.write_all(&buf[..n]).await.map_err(|_| "closed")?;
                }
            }
        }
        let _ = uw.shutdown().await;
        Ok::<(), &'static str>(())
    };
    let downward = async {
        let mut buf = vec![0u8; BUFFER];
        // The response head, collected until complete (plain HTTP only).
        let mut head: Option<Vec<u8>> = rewrite_response.then(Vec::new);
        loop {
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let out: std::borrow::Cow<[u8]> = match head.as_mut() {
                None => (&buf[..n]).into(),
                Some(h) => {
                    h.extend_from_slice(&buf[..n]);
                    match close_response(h) {
                        Some(rewritten) => {
                            head = None;
                            rewritten.into()
                        }
                        None if h.len() < MAX_HEAD => continue,
                        None => head.take().unwrap_or_default().into(),
                    }
                }
            };
            take(out.len(), &down)?;
            cw.write_all(&out).await.map_err(|_| "closed")?;
        }
        if let Some(h) = head.take() {
            let _ = cw.write_all(&h).await; // a truncated head, as it came
        }
        let _ = cw.shutdown().await;
        // Plain HTTP: one response per connection, whatever the client still sends.
        if rewrite_response {
            Err("closed")
        } else {
            Ok(())
        }
    };
    let watchdog = async {
        loop {
            let due = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            if tokio::time::Instant::now() >= due {
                return "idle";
            }
            tokio::time::sleep_until(due).await;
        }
    };
    let end = tokio::select! {
        r = async { tokio::try_join!(upward, downward) } => match r {
            Ok(_) => "closed",
            Err(e) => e,
        },
        e = watchdog => e,
    };
    counts.up += up.load(Ordering::Relaxed);
    counts.down += down.load(Ordering::Relaxed);
    end
}

/// When `buf` holds a complete response head: the head with `Connection:
/// close` (other connection headers dropped), followed by the rest of `buf`.
fn close_response(buf: &[u8]) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            if resp.code.is_some_and(|c| (100..200).contains(&c)) {
                return Some(buf.to_vec()); // an interim response: as it came
            }
            let status_end = buf.windows(2).position(|w| w == b"\r\n").unwrap_or(0);
            let mut out = buf[..status_end + 2].to_vec();
            for h in resp.headers.iter() {
                let name = h.name.to_ascii_lowercase();
                if matches!(
                    name.as_str(),
                    "connection" | "keep-alive" | "proxy-connection"
                ) {
                    continue;
                }
                out.extend_from_slice(h.name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(h.value);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"Connection: close\r\n\r\n");
            out.extend_from_slice(&buf[len..]);
            Some(out)
        }
        Ok(httparse::Status::Partial) => None,
        Err(_) => Some(buf.to_vec()), // not ours to fix: relayed as it came
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_head_gets_connection_close_and_keeps_its_body() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nhi";
        let out = close_response(r).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        );
        assert!(close_response(b"HTTP/1.1 200 OK\r\nContent-Le").is_none());
    }

    #[test]
    fn requests_are_read_as_the_proxy_needs_them() {
        let parse = |raw: &[u8]| {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            assert!(req.parse(raw).unwrap().is_complete());
            interpret(&req)
        };
        let r = parse(b"CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n").unwrap();
        assert!(r.connect && r.host == "api.test" && r.port == 443);
        let r = parse(b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("[::1]", 8443));
        let r = parse(b"GET http://api.test:8080/a?b=c HTTP/1.1\r\nHost: api.test:8080\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive\r\nX: y\r\n\r\n").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("api.test", 8080));
        assert_eq!(
            String::from_utf8(r.upstream_head).unwrap(),
            "GET /a?b=c HTTP/1.1\r\nHost: api.test:8080\r\nX: y\r\nConnection: close\r\n\r\n"
        );
        let r = parse(b"GET http://api.test/ HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.port, 80);
        assert!(String::from_utf8(r.upstream_head)
            .unwrap()
            .contains("Host: api.test\r\n"));
        for (raw, code) in [
            (&b"CONNECT api.test HTTP/1.1\r\n\r\n"[..], 400),
            (b"GET /relative HTTP/1.1\r\n\r\n", 400),
            (b"GET https://api.test/ HTTP/1.1\r\n\r\n", 400),
            (b"GET http://user:pw@api.test/ HTTP/1.1\r\n\r\n", 400),
        ] {
            let e = parse(raw).err().unwrap();
            assert_eq!(e.0, code, "{e:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_reason_in_one_printable_line() {
        let r = String::from_utf8(refusal(403, "evil.test:443 is not\r\nin the list")).unwrap();
        let status = r.lines().next().unwrap();
        assert_eq!(
            status,
            "HTTP/1.1 403 egress denied: evil.test:443 is not??in the list"
        );
        assert!(r.ends_with("egress denied: evil.test:443 is not??in the list\n"));
    }
}
