//! What the security suite judges a worker by from outside: `/proc`,
//! victims whose state the test reads, traps that count what reaches them,
//! ptys, scratch folders and snippet templates.

use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::procfs;

// ---------------------------------------------------------------- /proc

/// Live descendants of `pid`.
pub fn descendants(pid: i32) -> Vec<i32> {
    procfs::descendants(pid)
        .into_iter()
        .map(|p| p.pid)
        .collect()
}

pub use crate::common::procfs::cmdline;

/// Live processes whose command line contains `marker`.
pub fn procs_with(marker: &str) -> Vec<i32> {
    procfs::all()
        .into_iter()
        .filter(|p| p.live())
        .map(|p| p.pid)
        .filter(|p| cmdline(*p).contains(marker))
        .collect()
}

/// Polls until no live process has `marker` in its command line.
pub fn wait_no_procs(marker: &str, within: Duration) -> Vec<i32> {
    let end = Instant::now() + within;
    loop {
        let left = procs_with(marker);
        if left.is_empty() || Instant::now() >= end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A field of `/proc/PID/status` ("NoNewPrivs" → "1").
pub fn status_field(pid: i32, field: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// The state letter of `/proc/PID/stat` ("S", "t", "Z"...).
pub fn state(pid: i32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string))
}

/// The namespace `kind` ("net", "mnt"...) of `pid`, as "net:[4026531840]".
pub fn ns(pid: i32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- victims

/// A host process the worker must not touch; killed on drop.
pub struct Victim {
    child: Child,
    pub pid: i32,
    /// The first line it printed (python victims announce things).
    pub line: String,
}

impl Victim {
    /// `sleep 600` as `who`.
    pub fn sleep(who: Who) -> Victim {
        let child = who
            .command("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn victim");
        let pid = child.id() as i32;
        // setpriv execs sleep in the same process; wait until it has.
        let end = Instant::now() + Duration::from_secs(5);
        while !cmdline(pid).starts_with("sleep") && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        Victim {
            child,
            pid,
            line: String::new(),
        }
    }

    /// A Python program as `who`; returns once it printed its first line.
    pub fn python(who: Who, code: &str) -> Victim {
        let mut child = who
            .command(who.python())
            .args(["-c", code])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python victim");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("victim's first line");
        let pid = child.id() as i32;
        Victim {
            child,
            pid,
            line: line.trim().to_string(),
        }
    }

    pub fn alive(&self) -> bool {
        crate::common::pid_alive(self.pid)
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- traps

/// What reached a trap.
#[derive(Default)]
pub struct Catch {
    pub hits: AtomicUsize,
    pub data: Mutex<Vec<u8>>,
}

impl Catch {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn data(&self) -> String {
        String::from_utf8_lossy(&self.data.lock().unwrap()).into_owned()
    }
}

/// A listener opened by the test; counts what reaches it until dropped.
pub struct Trap {
    pub catch: Arc<Catch>,
    stop: Arc<AtomicBool>,
    /// TCP/UDP port, when it has one.
    pub port: u16,
    /// Socket path, or abstract name (without the leading NUL).
    pub name: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trap {
    fn spawn(
        port: u16,
        name: String,
        mut poll: impl FnMut(&Catch) -> bool + Send + 'static,
    ) -> Trap {
        let catch = Arc::new(Catch::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (catch.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if !poll(&c) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Trap {
            catch,
            stop,
            port,
            name,
            thread: Some(thread),
        }
    }

    pub fn hits(&self) -> usize {
        self.catch.hits()
    }

    /// Waits up to `within` for a first hit; returns the count.
    pub fn hits_after(&self, within: Duration) -> usize {
        let end = Instant::now() + within;
        while self.hits() == 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.hits()
    }

    /// A TCP listener on 127.0.0.1 that answers each connection's first
    /// bytes with `ECHO:` + those bytes.
    pub fn tcp() -> Trap {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        Trap::spawn(port, String::new(), move |c| match l.accept() {
            Ok((mut s, _)) => {
                c.hits.fetch_add(1, Ordering::SeqCst);
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 256];
                if let Ok(n) = s.read(&mut buf) {
                    c.data.lock().unwrap().extend_from_slice(&buf[..n]);
                    let _ = s.write_all(&[b"ECHO:", &buf[..n]].concat());
                }
                true
            }
            Err(_) => false,
        })
    }

    /// A UDP socket on 127.0.0.1.
    pub fn udp() -> Trap {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        u.set_nonblocking(true).unwrap();
        let port = u.local_addr().unwrap().port();
        Trap::spawn(port, String::new(), move |c| {
            let mut buf = [0u8; 512];
            match u.recv_from(&mut buf) {
                Ok((n, _)) => {
                    c.hits.fetch_add(1, Ordering::SeqCst);
                    c.data.lock().unwrap().extend_from_slice(&buf[..n]);
                    true
                }
                Err(_) => false,
            }
        })
    }

    /// A unix stream listener at `path` (mode 0777: any user could connect).
    pub fn unix_stream(path: &Path) -> Trap {
        let l = std::os::unix::net::UnixListener::bind(path).expect("bind unix");
        chmod(path, 0o777);
        Self::unix_listener(l, path.display().to_string())
    }

    /// A unix stream listener on the abstract address `\0name`.
    pub fn abstract_stream(name: &str) -> Trap {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
        let l = std::os::unix::net::UnixListener::bind_addr(&addr).expect("bind abstract");
        Self::unix_listener(l, name.to_string())
    }

    fn unix_listener(l: std::os::unix::net::UnixListener, name: String) -> Trap {
        l.set_nonblocking(true).unwrap();
        Trap::spawn(0, name, move |c| match l.accept() {
            Ok((mut s, _)) => {
                c.hits.fetch_add(1, Ordering::SeqCst);
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 256];
                if let Ok(n) = s.read(&mut buf) {
                    c.data.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                true
            }
            Err(_) => false,
        })
    }

    /// A unix datagram socket at `path` (mode 0777).
    pub fn unix_dgram(path: &Path) -> Trap {
        let u = std::os::unix::net::UnixDatagram::bind(path).expect("bind unix dgram");
        chmod(path, 0o777);
        Self::unix_datagram(u, path.display().to_string())
    }

    /// A unix datagram socket on the abstract address `\0name`.
    pub fn abstract_dgram(name: &str) -> Trap {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
        let u = std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind abstract dgram");
        Self::unix_datagram(u, name.to_string())
    }

    fn unix_datagram(u: std::os::unix::net::UnixDatagram, name: String) -> Trap {
        u.set_nonblocking(true).unwrap();
        Trap::spawn(0, name, move |c| {
            let mut buf = [0u8; 512];
            match u.recv(&mut buf) {
                Ok(n) => {
                    c.hits.fetch_add(1, Ordering::SeqCst);
                    c.data.lock().unwrap().extend_from_slice(&buf[..n]);
                    true
                }
                Err(_) => false,
            }
        })
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.name.starts_with('/') {
            let _ = std::fs::remove_file(&self.name);
        }
    }
}

/// A free TCP port on 127.0.0.1, below the ephemeral range (bound, then
/// released).
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range: a port asked for as 0 (every
    // trap's and listener's of the tests running beside) is never this one,
    // so nobody takes it between this check and its use (seen once in CI
    // with a port from bind(0), which the next bind(0) was given).
    let low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let span = low.saturating_sub(1024).clamp(1, 10_000);
    let mut seed = std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        std::time::Instant::now(),
    );
    for _ in 0..1000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = (low - span + (seed >> 33) as u32 % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range ({low})")
}

/// A pseudo-terminal owned by the test: the master side and the slave's path
/// (made accessible to every user, so that only the sandbox protects it).
pub struct Pty {
    pub master: std::fs::File,
    pub slave_path: PathBuf,
    _slave: std::fs::File,
}

impl Pty {
    pub fn open() -> Pty {
        use std::os::fd::AsRawFd;
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let (master, slave) = (
            std::fs::File::from(pty.master),
            std::fs::File::from(pty.slave),
        );
        let slave_path =
            std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd())).expect("pty name");
        chmod(&slave_path, 0o666);
        nix::fcntl::fcntl(
            master.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .expect("O_NONBLOCK");
        Pty {
            master,
            slave_path,
            _slave: slave,
        }
    }

    /// Everything readable on the master side within `within` (input injected
    /// with TIOCSTI is echoed there).
    pub fn drain(&mut self, within: Duration) -> String {
        let end = Instant::now() + within;
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while Instant::now() < end {
            match self.master.read(&mut buf) {
                Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The scratch folders (`nodus-ext-*`) in the host's temporary folder.
pub fn scratch_dirs() -> Vec<PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("nodus-ext-"))
        })
        .collect()
}

/// Polls until `path` no longer exists.
pub fn wait_removed(path: &Path, within: Duration) -> bool {
    let end = Instant::now() + within;
    while path.exists() {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Fills `@NAME@` placeholders of a Python snippet (values are inserted as
/// they are: use `lit` for strings).
pub fn snippet(template: &str, vars: &[(&str, String)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("@{k}@"), v);
    }
    assert!(
        !s.contains("@")
            || !s
                .split('@')
                .nth(1)
                .is_some_and(
                    |w| w.chars().all(|c| c.is_ascii_uppercase() || c == '_') && !w.is_empty()
                ),
        "unfilled placeholder in snippet:\n{s}"
    );
    s
}

/// A Python string literal.
pub fn lit(s: impl AsRef<std::ffi::OsStr>) -> String {
    crate::common::py_str(s)
}

/// A unique `sleep` argument ("1234.567890" seconds), to find a process by
/// its command line.
pub fn unique_sleep() -> String {
    let t = token("s");
    let hex = t.split('-').nth(1).unwrap_or("0");
    let n = u64::from_str_radix(hex, 16).unwrap_or(0);
    format!("{}.{:06}", 1000 + n % 1000, (n / 1000) % 1_000_000)
}
