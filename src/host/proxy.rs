//! `ext-runner run DIR`: serve the worker protocol on our own stdin/stdout, as
//! a drop-in for `python extension.py`. Lines pass through unchanged in both
//! directions; the runner adds the sandbox, a per-request deadline that kills
//! the worker (the reference host never kills a hung worker), bounded lines,
//! and a worker stderr that can never fill up and block.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use std::os::fd::{AsFd, AsRawFd};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::ChildStdin;
use tokio::time::Instant;

use crate::error::{Error, Result, SandboxKind};
use crate::extension::capabilities::CapabilityGate;
use crate::host::services::{self, RateLimiter};
use crate::host::worker;
use crate::host::{HostOptions, Prepared};
use crate::protocol::{self, Line, Routed};
use crate::support::terminal;

/// Relays until the host closes stdin or sends shutdown and the worker exits.
/// Returns Ok when the worker ended as asked.
pub async fn run(ext: &Prepared, options: &HostOptions) -> Result<()> {
    let extension = Relayed {
        name: &ext.manifest.name,
        capabilities: ext.manifest.capability_set(),
        dir: &ext.dir,
    };
    relay(&extension, options, |forward| match options.warm() {
        Some(w) => worker::start_warm(&ext.dir, w, forward, options.verbose),
        None => worker::start(
            &ext.dir,
            &ext.entry,
            &ext.policy,
            &options.audit,
            forward,
            options.verbose,
        ),
    })
    .await
}

/// What the relay needs of the extension: the name its host calls are made
/// under, the capabilities they are gated by, its folder (the memory
/// namespace's key).
pub struct Relayed<'a> {
    pub name: &'a str,
    pub capabilities: std::collections::BTreeSet<crate::Capability>,
    pub dir: &'a std::path::Path,
}

/// [`run`] with the worker `start` gives (`worker::start`, or a fork
/// server's worker as `worker::from_warm` makes it), which it is handed the
/// forwarding of the worker's stderr for.
pub async fn relay(
    ext: &Relayed<'_>,
    options: &HostOptions,
    start: impl FnOnce(Option<worker::Forward>) -> Result<worker::Spawned>,
) -> Result<()> {
    let (err_tx, err_rx) = tokio::sync::mpsc::channel::<ErrOut>(256);
    let spawned = start(Some(forward(err_tx.clone())))?;
    let group = spawned.group();
    let (mut child, group, tail, resources) =
        (spawned.child, group, spawned.stderr, spawned.resources);
    let mut worker_out = BufReader::with_capacity(64 * 1024, spawned.stdout);
    let mut host_in = BufReader::with_capacity(64 * 1024, host_stdin());
    let mut host_out = host_stdout();

    // The worker's stderr goes to ours without ever blocking: a host that
    // never reads our stderr (the reference host doesn't) loses the overflow,
    // not its worker. A pipe on fd 2 is made non-blocking for that.
    nonblocking_stderr();
    let stderr_done = spawn_stderr_writer(err_rx);

    let name = ext.name;
    let gate = CapabilityGate::new(ext.capabilities.iter().copied(), Some(name));
    let caller = services::Caller::new(name, ext.dir);
    let host_services = options.services();
    let limiter = RateLimiter::default();
    let denials = services::DenialLog::default();
    let mut deadlines: HashMap<String, Instant> = HashMap::new();
    // The capability of a host call refused since the worker's last response
    // (its next failed response is marked as a CapabilityError for the host).
    let mut refused: Option<String> = None;
    let mut reaped = false;
    // Partial lines survive select! dropping a read (protocol::read_line_into).
    let (mut host_partial, mut worker_partial) = (Vec::new(), Vec::new());
    let mut stopping: Option<Instant> = None; // set once the host said shutdown or closed stdin
    let far = Duration::from_secs(86400 * 365);
    let max = options.max_line;
    let mut to_worker = Outbox::new(spawned.stdin);

    // One timer for the whole relay, moved only to an earlier time: a wake-up
    // with nothing due is harmless (checked below), while registering a
    // timer per line costs a good part of the relay's own time.
    let alarm = tokio::time::sleep(far);
    tokio::pin!(alarm);
    let failure: Option<Error> = loop {
        let next_deadline = deadlines.values().min().copied();
        let stalled = to_worker.stalled_since.map(|t| t + options.timeout);
        if let Some(wake) = [next_deadline, stopping, stalled]
            .into_iter()
            .flatten()
            .min()
        {
            if wake < alarm.deadline() {
                alarm.as_mut().reset(wake);
            }
        }
        tokio::select! {
            // The host's lines, unless too much waits for the worker already
            // (then the host waits, as it would on a plain pipe).
            line = protocol::read_line_into(&mut host_in, &mut host_partial, max),
                if to_worker.is_open() && stopping.is_none() && to_worker.bytes < 2 * OUTBOX_LIMIT => {
                let (line, eof) = match line {
                    Ok(Line::Complete(l)) => (Some(l), false),
                    Ok(Line::Eof(tail)) => ((!tail.is_empty()).then_some(tail), true),
                    Ok(Line::TooLong) => break Some(Error::sandbox(SandboxKind::WorkerIo, format!("host sent a line longer than the {max} byte limit"))),
                    Err(e) => break Some(Error::sandbox_io(SandboxKind::WorkerIo, format!("reading stdin failed: {e}"), e)),
                };
                if let Some(line) = line {
                    let head = protocol::line_head(&line);
                    if let Some(id) = head.id {
                        deadlines.insert(id, Instant::now() + options.timeout);
                    }
                    let shutdown = head.op.as_deref() == Some("shutdown");
                    // A failed write means the worker is gone; its exit is reported below.
                    to_worker.push(line).await;
                    if shutdown {
                        stopping = Some(Instant::now() + worker::SHUTDOWN_GRACE);
                    }
                }
                if eof {
                    // The worker sees EOF on its stdin, as under a plain pipe,
                    // once it has what was sent before.
                    to_worker.close();
                    stopping = Some(Instant::now() + worker::SHUTDOWN_GRACE);
                }
            }
            // What waits for the worker, as its stdin takes it.
            written = to_worker.write_some(), if to_worker.is_waiting() => to_worker.wrote(written),
            // The worker's lines, unless the answers to its host calls pile
            // up unread (then it waits for its stdout, and its deadlines run).
            line = protocol::read_line_into(&mut worker_out, &mut worker_partial, max), if to_worker.bytes < OUTBOX_LIMIT => {
                match line {
                    Ok(Line::Complete(mut l)) => {
                        match protocol::route(&l) {
                            // Host calls are served here (the host may not speak them); the
                            // host's next lines wait until the worker has its answer.
                            Routed::HostCall(call) => {
                                let outcome = services::serve(&call, &caller, &gate, &*host_services.0, &limiter, &options.audit).await;
                                // Only while a request waits for its response.
                                if let (Err(Error::Capability { capability, .. }), false) = (&outcome, deadlines.is_empty()) {
                                    refused = Some(capability.clone());
                                }
                                to_worker.push(protocol::host_call_response(&call.id, &outcome)).await;
                                continue;
                            }
                            Routed::Denial { capability, detail, reason } => {
                                if let (text, true) = denials.record(&options.audit, name, &capability, &detail, reason.as_deref()) {
                                    // In line with the worker's stderr, on a line of its own; dropped if that lags.
                                    let _ = err_tx.try_send(ErrOut::Runner(format!("ext-runner: {}\n", terminal::escape_line(&text))));
                                }
                                continue;
                            }
                            // Relayed as they are: only a response's id is read (and,
                            // after a refused host call or when the worker wrote
                            // an error class of its own, the line is rewritten).
                            Routed::Response { id, error_class } => {
                                deadlines.remove(&id);
                                let why = refused.take();
                                if let Some(marked) = protocol::relayed_response(&l, error_class, why.as_deref().map(|c| (c, name))) {
                                    l = marked;
                                }
                            }
                            Routed::Other => {}
                        }
                        l.push(b'\n');
                        if host_out.write_all(&l).await.is_err() || host_out.flush().await.is_err() {
                            break Some(Error::sandbox(SandboxKind::WorkerIo, "the host closed our stdout"));
                        }
                    }
                    Ok(Line::Eof(_)) => {
                        // Stdout closed: let it exit on its own, to report how.
                        let status = worker::reap(&mut child, &group, worker::EXIT_GRACE).await;
                        reaped = true;
                        if stopping.is_some() && deadlines.is_empty() {
                            break None;
                        }
                        let what = format!("extension worker closed stdout unexpectedly{}", resources.oom_hint(&child));
                        break Some(worker::died(&what, status, &tail));
                    }
                    Ok(Line::TooLong) => break Some(Error::sandbox(SandboxKind::WorkerIo, format!("worker wrote a line longer than the {max} byte limit"))),
                    Err(e) => break Some(Error::sandbox_io(SandboxKind::WorkerIo, format!("reading worker stdout failed: {e}"), e)),
                }
            }
            _ = &mut alarm => {
                let now = Instant::now();
                if stopping.is_some_and(|s| now >= s) {
                    break None; // grace period over: killed below
                }
                if deadlines.values().any(|d| now >= *d) {
                    break Some(Error::Timeout { tool_name: None, timeout: Some(options.timeout) });
                }
                if to_worker.stalled_since.is_some_and(|t| now >= t + options.timeout) {
                    break Some(Error::sandbox(SandboxKind::WorkerIo, format!(
                        "the worker read none of its stdin for {}s (killed)",
                        options.timeout.as_secs_f64()
                    )));
                }
                alarm.as_mut().reset(now + far); // set again from the table above
            }
        }
    };
    if !reaped {
        worker::reap(&mut child, &group, Duration::ZERO).await;
    }
    let _ = host_out.flush().await;
    // What the worker wrote to stderr is out before our own last words (a
    // descendant that escaped the kill could hold its stderr open: bounded).
    drop(err_tx);
    let _ = tokio::time::timeout(worker::EXIT_GRACE, stderr_done).await;
    failure.map_or(Ok(()), Err)
}

/// Bytes waiting for the worker's stdin above which the worker's stdout is no
/// longer read (no more host-call answers pile up); at twice this, the host's
/// stdin is not read either.
const OUTBOX_LIMIT: usize = 1 << 20;

/// Lines on their way to the worker's stdin, written as the pipe takes them
/// and never waited on: a worker that stops reading cannot stall the relay
/// (its deadlines and the host's shutdown still run), it is stopped once it
/// has read nothing for `--timeout`, and what waits is bounded
/// (`OUTBOX_LIMIT`).
struct Outbox {
    stdin: Option<ChildStdin>,
    /// Each with its newline; the first is written up to `written`.
    lines: VecDeque<Vec<u8>>,
    written: usize,
    /// Bytes waiting, in all lines.
    bytes: usize,
    /// Since when the worker has taken nothing of what waits.
    stalled_since: Option<Instant>,
    /// Close stdin once everything waiting is written (the host closed ours).
    close_when_sent: bool,
}

impl Outbox {
    fn new(stdin: ChildStdin) -> Outbox {
        Outbox {
            stdin: Some(stdin),
            lines: VecDeque::new(),
            written: 0,
            bytes: 0,
            stalled_since: None,
            close_when_sent: false,
        }
    }

    /// Whether the worker's stdin is still open to us.
    fn is_open(&self) -> bool {
        self.stdin.is_some()
    }

    /// Whether something waits to be written.
    fn is_waiting(&self) -> bool {
        self.stdin.is_some() && !self.lines.is_empty()
    }

    /// Queues `line` and writes what the pipe takes now (most often all of it,
    /// with no extra turn of the relay). Dropped if the worker's stdin is closed.
    async fn push(&mut self, mut line: Vec<u8>) {
        if self.stdin.is_none() || self.close_when_sent {
            return;
        }
        line.push(b'\n');
        if self.lines.is_empty() {
            self.stalled_since = Some(Instant::now());
        }
        self.bytes += line.len();
        self.lines.push_back(line);
        self.write_now().await;
    }

    /// Writes what the pipe takes without waiting (each write polled once).
    async fn write_now(&mut self) {
        while let (Some(stdin), Some(line)) = (self.stdin.as_mut(), self.lines.front()) {
            let mut stdin = std::pin::Pin::new(stdin);
            let once = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(stdin.as_mut().poll_write(cx, &line[self.written..]))
            })
            .await;
            match once {
                std::task::Poll::Ready(r) => self.wrote(r),
                std::task::Poll::Pending => break,
            }
        }
    }

    /// Writes some of the first line, when the pipe takes it (for `select!`:
    /// dropped before it completes, it has written nothing).
    async fn write_some(&mut self) -> std::io::Result<usize> {
        match (self.stdin.as_mut(), self.lines.front()) {
            (Some(stdin), Some(line)) => stdin.write(&line[self.written..]).await,
            _ => std::future::pending().await,
        }
    }

    /// Accounts for a write; a failed one means the worker is gone.
    fn wrote(&mut self, result: std::io::Result<usize>) {
        match result {
            Ok(n) if n > 0 => {
                self.written += n;
                self.bytes -= n;
                if self.written == self.lines[0].len() {
                    self.lines.pop_front();
                    self.written = 0;
                }
                self.stalled_since = (!self.lines.is_empty()).then(Instant::now);
                if self.lines.is_empty() && self.close_when_sent {
                    self.stdin = None;
                }
            }
            _ => self.gone(),
        }
    }

    /// Closes the worker's stdin once what waits is written.
    fn close(&mut self) {
        self.close_when_sent = true;
        if self.lines.is_empty() {
            self.stdin = None;
        }
    }

    fn gone(&mut self) {
        self.stdin = None;
        self.lines.clear();
        self.written = 0;
        self.bytes = 0;
        self.stalled_since = None;
    }
}

/// What the stderr writer prints: the worker's bytes (escaped on the way),
/// a note that some of them were dropped, or a line of the runner's own.
enum ErrOut {
    Worker(Vec<u8>),
    Lost,
    Runner(String),
}

/// Hands the worker's stderr chunks to the writer; never waits (a chunk the
/// writer has no room for is dropped, and the writer told so).
fn forward(tx: tokio::sync::mpsc::Sender<ErrOut>) -> worker::Forward {
    let mut lost = false;
    Box::new(move |chunk: &[u8]| {
        if lost {
            lost = tx.try_send(ErrOut::Lost).is_err();
        }
        if !lost {
            lost = tx.try_send(ErrOut::Worker(chunk.to_vec())).is_err();
        }
    })
}

/// Writes the worker's stderr, escaped for a terminal, and the runner's
/// notes to our stderr, in order, on a thread of its own: waiting for a slow
/// reader never stalls the relay, and once the host has stopped reading, the
/// rest is dropped at once. The receiver is told when all is written.
fn spawn_stderr_writer(
    mut rx: tokio::sync::mpsc::Receiver<ErrOut>,
) -> tokio::sync::oneshot::Receiver<()> {
    let (done_tx, done) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut escaper = terminal::Escaper::new();
        let mut patience = Duration::from_millis(200);
        let mut write = |text: &str, escaper: &mut terminal::Escaper| {
            if text.is_empty() {
                return;
            }
            patience = if write_stderr(text.as_bytes(), patience) {
                Duration::from_millis(200)
            } else {
                // Part of it may be lost, a line break included.
                escaper.at_line_start();
                Duration::ZERO
            };
        };
        while let Some(out) = rx.blocking_recv() {
            let text = match out {
                ErrOut::Worker(bytes) => escaper.push(&bytes),
                ErrOut::Lost => {
                    escaper.at_line_start();
                    continue;
                }
                ErrOut::Runner(line) => escaper.break_line() + &line,
            };
            write(&text, &mut escaper);
        }
        let rest = escaper.break_line();
        write(&rest, &mut escaper);
        let _ = done_tx.send(());
    });
    done
}

/// Our stdin, read directly when it is a pipe (tokio's `stdin()` hands every
/// read to a blocking thread, which costs a thread hop per line).
fn host_stdin() -> Box<dyn AsyncRead + Unpin + Send> {
    let pipe = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| tokio::net::unix::pipe::Receiver::from_file(std::fs::File::from(fd)).ok());
    match pipe {
        Some(p) => Box::new(p),
        None => Box::new(tokio::io::stdin()),
    }
}

/// Our stdout, written directly when it is a pipe.
fn host_stdout() -> Box<dyn AsyncWrite + Unpin + Send> {
    let pipe = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| tokio::net::unix::pipe::Sender::from_file(std::fs::File::from(fd)).ok());
    match pipe {
        Some(p) => Box::new(p),
        None => Box::new(tokio::io::stdout()),
    }
}

/// Writes `bytes` to our stderr, waiting at most `patience` for a full pipe to
/// drain (stderr may be non-blocking); what does not fit by then is dropped.
/// Returns whether everything was written.
pub(crate) fn write_stderr(mut bytes: &[u8], patience: Duration) -> bool {
    use std::io::Write;
    let deadline = std::time::Instant::now() + patience;
    let mut err = std::io::stderr().lock();
    while !bytes.is_empty() {
        match err.write(bytes) {
            Ok(0) => return false,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return false;
                }
                let mut fds = [nix::poll::PollFd::new(
                    err.as_fd(),
                    nix::poll::PollFlags::POLLOUT,
                )];
                let ms = u16::try_from(left.as_millis().min(100)).unwrap_or(100);
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
            }
            Err(_) => return false,
        }
    }
    true
}

/// Makes our stderr non-blocking when it is a pipe (its other end is the
/// host's). The pipe is reopened (`/proc/self/fd/2`: a new open file
/// description of the same pipe) onto fd 2 and only that is made
/// non-blocking: O_NONBLOCK on the description we inherited would be the
/// host's too, whose own writes to a full stderr then fail with EAGAIN
/// after we are gone. Where the reopen fails (no /proc; a pipe another
/// user made, which its owner alone may open) the inherited one is made
/// non-blocking, as before (docs/protocol.md, "`ext-runner run DIR`").
fn nonblocking_stderr() {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::unix::fs::OpenOptionsExt;
    let fd = std::io::stderr().as_fd().as_raw_fd();
    let is_pipe =
        nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO);
    if !is_pipe {
        return;
    }
    let own = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/proc/self/fd/2");
    if let Ok(own) = own {
        if nix::unistd::dup2(own.as_raw_fd(), fd).is_ok() {
            return;
        }
    }
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}
