//! `ExtensionHost`: one loaded extension and its supervised worker.
//!
//! Requests are multiplexed over the worker's stdin/stdout and matched by id,
//! so concurrent callers are safe. A timed-out invoke kills the worker and all
//! it started; a dead worker fails every pending invoke with a SandboxError
//! naming its exit and stderr tail; the next invoke starts a fresh worker.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::{oneshot, watch};

use crate::error::{Error, Result, SandboxKind};
use crate::extension::capabilities::{Capability, CapabilityGate};
use crate::extension::manifest::{provenance_json, Manifest};
use crate::extension::provenance::Provenance;
use crate::extension::validation::{SchemaMode, ToolSchemas};
use crate::host::audit::Audit;
use crate::host::options::HostOptions;
use crate::host::prepared::Hosted;
use crate::host::services::{self, RateLimiter, Services};
use crate::host::worker::{self, StderrTail};
use crate::protocol::{self, Line, Response, Routed};
use crate::sandbox::policy::Policy;
use crate::support::LockExt;

type Pending = Mutex<HashMap<String, oneshot::Sender<Result<Response>>>>;

/// Where a worker is in its life: one value that only moves forward
/// (`Running` → `Doomed` → `Ended`, or `Running` → `Ended`), watched by the
/// invokes, the reader and `shutdown`.
#[derive(Debug, Clone, PartialEq)]
enum WorkerState {
    /// Serving requests.
    Running,
    /// Being stopped (an invoke timed out, a write failed, bad output,
    /// unload): no new request may be sent to it, even before the reader has
    /// seen it end. The first reason is what its pending invokes are told.
    Doomed { reason: String },
    /// Reaped, its scratch folder and cgroup released; the requests still
    /// pending are failed right after this is set (never before, so a request
    /// registered while it was not yet set is always answered).
    Ended {
        status: Option<std::process::ExitStatus>,
    },
}

/// A worker's state and its process group: what may stop it.
struct Control {
    state: watch::Sender<WorkerState>,
    /// Signalled only until the reader reaps the worker.
    group: worker::Group,
}

impl Control {
    /// Marks the worker doomed for `reason`, unless it already is (or ended).
    fn doom(&self, reason: String) {
        self.state.send_if_modified(|s| match s {
            WorkerState::Running => {
                *s = WorkerState::Doomed { reason };
                true
            }
            _ => false,
        });
    }

    /// Dooms the worker and kills it and everything in its session.
    fn kill(&self, reason: String) {
        self.doom(reason);
        self.group.kill();
    }

    fn is_running(&self) -> bool {
        *self.state.borrow() == WorkerState::Running
    }

    fn has_ended(&self) -> bool {
        matches!(*self.state.borrow(), WorkerState::Ended { .. })
    }

    /// Waits until the reader has reaped the worker and released its resources.
    async fn ended(&self) {
        let mut state = self.state.subscribe();
        let _ = state
            .wait_for(|s| matches!(s, WorkerState::Ended { .. }))
            .await;
    }

    /// Sets `Ended`; returns the reason the worker was doomed for, if it was.
    fn end(&self, status: Option<std::process::ExitStatus>) -> Option<String> {
        let mut reason = None;
        self.state.send_modify(|s| {
            if let WorkerState::Doomed { reason: r } =
                std::mem::replace(s, WorkerState::Ended { status })
            {
                reason = Some(r);
            }
        });
        reason
    }
}

/// A live worker process and its in-flight requests.
struct Worker {
    pid: i32,
    control: Arc<Control>,
    /// Held by a host call from the moment it is read until it is answered, so
    /// no invoke reaches a worker that is waiting for its host's answer.
    stdin: Arc<tokio::sync::Mutex<tokio::process::ChildStdin>>,
    /// Denials the worker reported (newest last, bounded).
    denials: Arc<Mutex<Vec<String>>>,
    pending: Arc<Pending>,
    /// The fork server's word on what its confinement gave up (warm only).
    degraded: Option<Vec<String>>,
}

impl Worker {
    fn start(
        ext: &Hosted,
        options: &HostOptions,
        calls: Arc<CallContext>,
        requested: Option<crate::host::server::Requested>,
    ) -> Result<Worker> {
        // Verbose: the worker's stderr goes to ours too, escaped (it is the
        // worker's text), on a thread of its own so a slow terminal never
        // stalls the host, and dropped when that lags.
        let forward = options.verbose.then(|| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
            std::thread::spawn(move || {
                let mut escaper = crate::support::terminal::Escaper::new();
                while let Some(chunk) = rx.blocking_recv() {
                    let text = escaper.push(&chunk);
                    crate::host::proxy::write_stderr(text.as_bytes(), Duration::from_millis(200));
                }
                let rest = escaper.finish();
                crate::host::proxy::write_stderr(rest.as_bytes(), Duration::from_millis(200));
            });
            Box::new(move |chunk: &[u8]| {
                let _ = tx.try_send(chunk.to_vec());
            }) as worker::Forward
        });
        let spawned = match ext {
            Hosted::Served { dir, socket, .. } => worker::start_warm(
                dir,
                worker::Warm {
                    socket,
                    workspace: options.workspace.as_deref(),
                    requested,
                },
                forward,
                options.verbose,
            )?,
            Hosted::Here(here) => worker::start(
                &here.dir,
                &here.entry,
                &here.policy,
                &calls.audit,
                forward,
                options.verbose,
            )?,
        };
        let group = spawned.group();
        let stdin = Arc::new(tokio::sync::Mutex::new(spawned.stdin));
        let denials: Arc<Mutex<Vec<String>>> = Arc::default();
        let pending: Arc<Pending> = Arc::default();
        let control = Arc::new(Control {
            state: watch::Sender::new(WorkerState::Running),
            group,
        });
        let reader = Reader {
            control: control.clone(),
            pending: pending.clone(),
            stderr: spawned.stderr,
            max_line: options.max_line,
            write_deadline: options.timeout,
            host_calls: Arc::default(),
            stdin: stdin.clone(),
            denials: denials.clone(),
            calls,
            refused: Arc::default(),
        };
        let (child, stdout, resources) = (spawned.child, spawned.stdout, spawned.resources);
        tokio::spawn(reader.run(child, stdout, resources));
        Ok(Worker {
            pid: spawned.pid,
            control,
            stdin,
            denials,
            pending,
            degraded: spawned.degraded,
        })
    }

    fn kill(&self, reason: String) {
        self.control.kill(reason);
    }

    /// Writes one line, giving up after `within`: a worker that stops reading
    /// its stdin must not hang the caller (or, holding the lock, everyone).
    async fn send(&self, line: Vec<u8>, within: Duration) -> std::io::Result<()> {
        write_within(&mut *self.stdin.lock().await, line, within).await
    }

    /// Asks the worker to stop, then kills it after the grace period.
    async fn shutdown(&self) {
        if !self.control.has_ended() {
            let _ = self
                .send(protocol::shutdown_line(), worker::SHUTDOWN_GRACE)
                .await;
            if tokio::time::timeout(worker::SHUTDOWN_GRACE, self.control.ended())
                .await
                .is_err()
            {
                self.kill("extension was unloaded".into());
            }
        }
        // The reader kills what the worker left in its session, then reaps it.
        self.control.ended().await;
    }
}

/// Writes `line` and its newline in one write, giving up after `within`.
async fn write_within(
    stdin: &mut tokio::process::ChildStdin,
    mut line: Vec<u8>,
    within: Duration,
) -> std::io::Result<()> {
    line.push(b'\n');
    tokio::time::timeout(within, async {
        stdin.write_all(&line).await?;
        stdin.flush().await
    })
    .await
    .unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the worker read none of its stdin for {}s",
                within.as_secs_f64()
            ),
        ))
    })
}

/// What serving a worker's host calls needs; shared by its successive workers.
struct CallContext {
    caller: services::Caller,
    gate: CapabilityGate,
    services: Services,
    limiter: RateLimiter,
    denial_log: services::DenialLog,
    audit: Audit,
}

/// Host calls a worker may have in flight at once.
const MAX_HOST_CALLS_IN_FLIGHT: usize = 16;

/// Counts one host call in flight until dropped.
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How many denials a worker's record keeps.
const DENIALS_KEPT: usize = 16;

/// Reads the worker's stdout, routes responses, and reports its end.
struct Reader {
    control: Arc<Control>,
    host_calls: Arc<std::sync::atomic::AtomicUsize>,
    stdin: Arc<tokio::sync::Mutex<tokio::process::ChildStdin>>,
    denials: Arc<Mutex<Vec<String>>>,
    calls: Arc<CallContext>,
    pending: Arc<Pending>,
    stderr: StderrTail,
    max_line: usize,
    /// How long the answer to a host call may wait for the worker to read it.
    write_deadline: Duration,
    /// The capability of the last host call refused for lacking one while a
    /// request waited, since the worker's last response: its next failed
    /// response is that CapabilityError (a single-threaded worker answers in
    /// order).
    refused: Arc<Mutex<Option<String>>>,
}

impl Reader {
    async fn run(
        self,
        mut child: worker::Process,
        stdout: tokio::process::ChildStdout,
        resources: worker::Resources,
    ) {
        let mut out = BufReader::with_capacity(64 * 1024, stdout);
        let problem = loop {
            match protocol::read_line(&mut out, self.max_line).await {
                Ok(Line::Complete(line)) => {
                    if let Some(p) = self.route(&line) {
                        break Some(p);
                    }
                }
                Ok(Line::Eof(_)) => break None,
                Ok(Line::TooLong) => {
                    break Some(format!(
                        "worker wrote a line longer than the {} byte limit",
                        self.max_line
                    ))
                }
                Err(e) => break Some(format!("reading worker stdout failed: {e}")),
            }
        };
        if let Some(p) = &problem {
            self.control.doom(p.clone());
        }
        // Stdout is closed or unusable: the worker is done for. It may exit on its
        // own (and say how) if it just closed stdout; otherwise it is killed.
        let grace = if problem.is_none() {
            worker::EXIT_GRACE
        } else {
            Duration::ZERO
        };
        let status = worker::reap(&mut child, &self.control.group, grace).await;
        self.stderr.settled(worker::EXIT_GRACE).await;
        let oom = resources.oom_hint(&child);
        // Off the runtime's thread: giving a lent workspace back walks all
        // the worker made (`sandbox::acl`), which the worker sizes.
        let _ = tokio::task::spawn_blocking(move || drop(resources)).await;
        let reason = self.control.end(status);
        let what =
            reason.unwrap_or_else(|| "extension worker closed stdout unexpectedly".into()) + oom;
        let pending: Vec<_> = self.pending.locked().drain().collect();
        for (_, tx) in pending {
            let _ = tx.send(Err(worker::died(&what, status, &self.stderr)));
        }
    }

    /// Routes one line; returns why the worker must be stopped, if it must.
    fn route(&self, line: &[u8]) -> Option<String> {
        match protocol::route(line) {
            Routed::Response { id, .. } => {
                // Lines matching no request (unsolicited, late, duplicate) are
                // ignored, as in the reference, and not even decoded.
                if !self.pending.locked().contains_key(&id) {
                    return None;
                }
                let response = protocol::decode_response(line)?;
                let tx = self.pending.locked().remove(&id);
                let refused = self.refused.locked().take();
                if let Some(tx) = tx {
                    let _ = tx.send(match (response, refused) {
                        (Response::Err(msg), Some(capability)) => {
                            Err(services::refused_capability(
                                &capability,
                                &self.calls.caller.name,
                                &msg,
                            ))
                        }
                        (response, _) => Ok(response),
                    });
                }
            }
            Routed::HostCall(call) => {
                // Each call in flight holds its parameters: a worker that floods
                // calls without waiting for answers is stopped, not buffered.
                if self.host_calls.load(Ordering::SeqCst) >= MAX_HOST_CALLS_IN_FLIGHT {
                    return Some(format!(
                        "worker sent more than {MAX_HOST_CALLS_IN_FLIGHT} host calls without waiting for answers"
                    ));
                }
                self.host_calls.fetch_add(1, Ordering::SeqCst);
                let counter = InFlight(self.host_calls.clone());
                let (stdin, calls) = (self.stdin.clone(), self.calls.clone());
                let (control, within) = (self.control.clone(), self.write_deadline);
                // A refusal counts against a response only while a request
                // waits for one (not, say, a call the worker made at start-up).
                let refused = (!self.pending.locked().is_empty()).then(|| self.refused.clone());
                let refused_too = refused.clone();
                // Take stdin now, before anything else can be sent to the waiting worker.
                let Ok(mut held) = stdin.clone().try_lock_owned() else {
                    tokio::spawn(async move {
                        let mut held = stdin.lock_owned().await;
                        answer(&calls, &call, &mut held, &control, within, &refused).await;
                        drop(counter);
                    });
                    return None;
                };
                tokio::spawn(async move {
                    answer(&calls, &call, &mut held, &control, within, &refused_too).await;
                    drop(counter);
                });
            }
            Routed::Denial {
                capability,
                detail,
                reason,
            } => {
                let c = &self.calls;
                // Kept for the invoke's error even when over the audit rate.
                let (text, _audited) = c.denial_log.record(
                    &c.audit,
                    &c.caller.name,
                    &capability,
                    &detail,
                    reason.as_deref(),
                );
                let mut d = self.denials.locked();
                d.push(text);
                let excess = d.len().saturating_sub(DENIALS_KEPT);
                d.drain(..excess);
            }
            Routed::Other => {}
        }
        None
    }
}

/// Serves one host call and writes the answer to the worker; a worker that
/// has not read it within `within` is stopped (it would hold its stdin, and
/// every invoke, forever).
async fn answer(
    calls: &CallContext,
    call: &services::HostCall,
    stdin: &mut tokio::process::ChildStdin,
    control: &Control,
    within: Duration,
    refused: &Option<Arc<Mutex<Option<String>>>>,
) {
    let outcome = services::serve(
        call,
        &calls.caller,
        &calls.gate,
        &*calls.services.0,
        &calls.limiter,
        &calls.audit,
    )
    .await;
    // Before the answer is written: the worker's response comes after it.
    if let (Err(Error::Capability { capability, .. }), Some(refused)) = (&outcome, refused) {
        *refused.locked() = Some(capability.clone());
    }
    let line = protocol::host_call_response(&call.id, &outcome);
    // Any other failed write means the worker is gone; the reader reports that.
    if let Err(e) = write_within(stdin, line, within).await {
        if e.kind() == std::io::ErrorKind::TimedOut {
            control.kill(format!(
                "worker did not read the answer to its host call: {e}"
            ));
        }
    }
}

/// The reference's `ExtensionHost.describe()` of a manifest.
pub fn describe(manifest: &Manifest, loaded: bool) -> Value {
    json!({
        "name": manifest.name,
        "version": manifest.version,
        "description": manifest.description,
        "abi_version": manifest.abi_version,
        "capabilities": manifest.capabilities,
        "provenance": provenance_json(&manifest.provenance),
        "tools": manifest.tools.iter().map(|t| t.to_json()).collect::<Vec<_>>(),
        "loaded": loaded,
    })
}

/// Adds the denials the worker reported during a failed invoke to its error,
/// unless the message already says so.
fn explain(msg: String, denials: &[String]) -> String {
    match denials.last() {
        Some(d) if !msg.contains(d.as_str()) => format!("{msg} [{d}]"),
        _ => msg,
    }
}

/// A request sent (or being sent) to a worker, until its invoke future ends.
/// Dropped with the request still pending, i.e. the future was dropped before
/// the answer came: the worker module cannot be told to stop a tool (the
/// protocol has no cancel), and a single-threaded worker would run it to the
/// end before reading the next request. So the worker is killed and the next
/// invoke starts a fresh one, instead of waiting behind the cancelled call.
/// Other requests in flight on that worker fail with a SandboxError saying so.
struct Cancel<'a> {
    worker: &'a Worker,
    id: &'a str,
}

impl Drop for Cancel<'_> {
    fn drop(&mut self) {
        if self.worker.pending.locked().remove(self.id).is_some() {
            self.worker.kill(
                "an invoke was cancelled (its future was dropped) before the worker answered; the worker is replaced"
                    .into(),
            );
        }
    }
}

/// One loaded extension.
pub struct ExtensionHost {
    ext: Hosted,
    calls: Arc<CallContext>,
    gate: CapabilityGate,
    options: HostOptions,
    worker: tokio::sync::Mutex<Option<Arc<Worker>>>,
    /// When workers ended on their own, oldest first (for the restart policy).
    failures: Mutex<std::collections::VecDeque<std::time::Instant>>,
    schemas: ToolSchemas,
    loaded: AtomicBool,
    starts: AtomicU64,
    /// The first start, asked of the fork server before `prepare` (load).
    requested: Mutex<Option<crate::host::server::Requested>>,
    /// The fork server's word on what its last worker's confinement gave up.
    served_degraded: Mutex<Option<Vec<String>>>,
}

impl ExtensionHost {
    /// Loads the manifest in `dir` and starts its worker.
    pub async fn load(dir: impl AsRef<Path>, options: HostOptions) -> Result<ExtensionHost> {
        Self::load_manifest(dir.as_ref(), Manifest::load(dir.as_ref())?, options).await
    }

    /// Starts the extension in `dir` whose manifest was already read.
    pub async fn load_manifest(
        dir: &Path,
        manifest: Manifest,
        options: HostOptions,
    ) -> Result<ExtensionHost> {
        // With a fork server the start is asked for first: the server
        // derives the worker's policy and confines it while this host does
        // its own preparation (the checks of the folder, the entry and the
        // workspace, the tool schemas), instead of after it.
        Hosted::served_options(&options)?;
        let requested = match options.warm() {
            Some(w) => Some(crate::host::server::request(
                w.socket,
                dir,
                w.workspace,
                options.verbose,
            )?),
            None => None,
        };
        let host = Self::prepare(dir, manifest, options)?;
        *host.requested.locked() = requested;
        host.start_worker().await?;
        Ok(host)
    }

    /// Validates everything about an extension without starting its worker.
    fn prepare(dir: &Path, manifest: Manifest, options: HostOptions) -> Result<ExtensionHost> {
        let ext = Hosted::new(dir, manifest, &options)?;
        // The filters compile while the rest of the start goes on (a warm
        // worker's are the zygote's, and its policy the server's).
        if let Some(policy) = ext.policy() {
            crate::sandbox::launch::precompile(policy);
        }
        let manifest = ext.manifest();
        let schemas = ToolSchemas::compile(manifest, options.schema_validation)?;
        let gate = CapabilityGate::new(manifest.capability_set(), Some(&manifest.name));
        let calls = Arc::new(CallContext {
            caller: services::Caller::new(&manifest.name, ext.dir()),
            gate: gate.clone(),
            services: options.services(),
            limiter: RateLimiter::default(),
            denial_log: Default::default(),
            audit: options.audit.clone(),
        });
        // With a fork server the worker's policy is the server's, not known
        // at load (null; `ExtensionHost::degraded()` has the server's word).
        let degraded = match ext.policy() {
            Some(policy) => json!(policy.degraded),
            None => serde_json::Value::Null,
        };
        options.audit.record(
            "load",
            &manifest.name,
            json!({"dir": ext.dir(), "capabilities": manifest.capabilities, "degraded": degraded}),
        );
        Ok(ExtensionHost {
            ext,
            calls,
            gate,
            options,
            worker: tokio::sync::Mutex::new(None),
            failures: Mutex::default(),
            schemas,
            loaded: AtomicBool::new(true),
            starts: AtomicU64::new(0),
            requested: Mutex::default(),
            served_degraded: Mutex::default(),
        })
    }

    async fn start_worker(&self) -> Result<Arc<Worker>> {
        let mut slot = self.worker.lock().await;
        // Checked again under the slot lock: an invoke racing `unload()` must
        // not start a worker that nobody will stop.
        if !self.is_loaded() {
            return Err(Error::sandbox(
                SandboxKind::NotLoaded,
                "extension is not loaded; call load() first",
            ));
        }
        if let Some(w) = slot.as_ref() {
            if w.control.is_running() {
                return Ok(w.clone());
            }
            // It ended without being asked to: a failure, counted once.
            *slot = None;
            self.failures.locked().push_back(std::time::Instant::now());
        }
        let delay = self.restart_delay()?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let requested = self.requested.locked().take();
        let w = Arc::new(Worker::start(
            &self.ext,
            &self.options,
            self.calls.clone(),
            requested,
        )?);
        self.starts.fetch_add(1, Ordering::Relaxed);
        if let Some(d) = &w.degraded {
            *self.served_degraded.locked() = Some(d.clone());
        }
        *slot = Some(w.clone());
        Ok(w)
    }

    /// The backoff before the next start, or the restart policy's refusal.
    fn restart_delay(&self) -> Result<Duration> {
        let p = self.options.restart;
        let mut failures = self.failures.locked();
        while failures.front().is_some_and(|t| t.elapsed() > p.window) {
            failures.pop_front();
        }
        let n = failures.len() as u32;
        if n == 0 {
            return Ok(Duration::ZERO);
        }
        if n >= p.max_failures {
            return Err(Error::sandbox(SandboxKind::RestartRefused, format!(
                "not restarting the worker of '{}': it failed {n} times in the last {}s (restart policy); fix the extension, then unload and load it again",
                self.name(),
                p.window.as_secs()
            )));
        }
        Ok(p.backoff_base
            .saturating_mul(1 << (n - 1).min(16))
            .min(p.backoff_max))
    }

    pub fn name(&self) -> &str {
        &self.ext.manifest().name
    }
    pub fn manifest(&self) -> &Manifest {
        self.ext.manifest()
    }
    pub fn gate(&self) -> &CapabilityGate {
        &self.gate
    }
    pub fn provenance(&self) -> Provenance {
        self.ext.manifest().provenance
    }
    /// The policy its workers run under, derived at load; None with a fork
    /// server (`HostOptions::server`), which derives each worker's from the
    /// manifest and its own operator policy: nothing is derived here (see
    /// [`ExtensionHost::degraded`] for the server's word; `ext-runner policy`
    /// prints a policy without starting anything).
    pub fn policy(&self) -> Option<&Policy> {
        self.ext.policy()
    }
    /// What the worker's confinement gave up: with a fork server the
    /// server's word for the worker it started last (empty before the first
    /// start; kept after unload), else `policy().degraded`.
    pub fn degraded(&self) -> Vec<String> {
        match (self.served_degraded.locked().clone(), self.ext.policy()) {
            (Some(served), _) => served,
            (None, Some(policy)) => policy.degraded.clone(),
            (None, None) => Vec::new(),
        }
    }
    pub fn dir(&self) -> &Path {
        self.ext.dir()
    }
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }
    /// How many worker processes this host has started (restarts included).
    pub fn worker_starts(&self) -> u64 {
        self.starts.load(Ordering::Relaxed)
    }
    /// The current worker's pid, if one is running.
    pub async fn worker_pid(&self) -> Option<i32> {
        self.worker
            .lock()
            .await
            .as_ref()
            .filter(|w| !w.control.has_ended())
            .map(|w| w.pid)
    }

    /// The reference's `describe()` view.
    pub fn describe(&self) -> Value {
        describe(self.ext.manifest(), self.is_loaded())
    }

    /// Invokes `tool` with `args_json` (a JSON string, as the reference's API takes it).
    pub async fn invoke(&self, tool: &str, args_json: &str) -> Result<Value> {
        let args: Value = if args_json.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(args_json).map_err(|e| Error::Invoke {
                msg: format!("args is not valid JSON: {e}"),
                tool_name: Some(tool.to_string()),
            })?
        };
        self.invoke_value(tool, args).await
    }

    /// Checks arguments before they reach the worker: an object, for a declared
    /// tool, matching its schema (per `HostOptions::schema_validation`).
    fn check_args(&self, tool: &str, args: &Value) -> Result<()> {
        let mode = self.options.schema_validation;
        if mode == SchemaMode::Off {
            return Ok(());
        }
        let problem = if !args.is_object() {
            Some(format!(
                "args must be a JSON object, got {}",
                crate::extension::manifest::python_type_name(args)
            ))
        } else if self.ext.manifest().tool(tool).is_none() {
            let declared: Vec<&str> = self
                .ext
                .manifest()
                .tools
                .iter()
                .map(|t| t.name.as_str())
                .collect();
            Some(format!(
                "tool '{tool}' is not declared by extension '{}' (declared: {})",
                self.name(),
                declared.join(", ")
            ))
        } else {
            self.schemas.check(tool, args)
        };
        match (problem, mode) {
            (None, _) => Ok(()),
            (Some(p), SchemaMode::Warn) => {
                eprintln!("warning: {p}");
                self.calls.audit.record(
                    "schema_warning",
                    self.name(),
                    json!({"tool": tool, "problem": p}),
                );
                Ok(())
            }
            (Some(p), _) => Err(Error::Invoke {
                msg: p,
                tool_name: Some(tool.to_string()),
            }),
        }
    }

    /// Invokes `tool` with already-decoded arguments; returns the decoded result.
    pub async fn invoke_value(&self, tool: &str, args: Value) -> Result<Value> {
        let started = std::time::Instant::now();
        let outcome = self.invoke_once(tool, args).await;
        if !self.calls.audit.is_on() {
            return outcome;
        }
        let mut fields = json!({"tool": tool, "ms": crate::host::audit::millis(started)});
        match &outcome {
            Ok(_) => fields["outcome"] = "ok".into(),
            Err(e) => {
                fields["outcome"] = e.class().into();
                fields["error"] = e.to_string().into();
            }
        }
        self.calls.audit.record("invoke", self.name(), fields);
        outcome
    }

    async fn invoke_once(&self, tool: &str, args: Value) -> Result<Value> {
        if !self.is_loaded() {
            return Err(Error::sandbox(
                SandboxKind::NotLoaded,
                "extension is not loaded; call load() first",
            ));
        }
        self.gate.require(Capability::ToolInvoke)?;
        self.check_args(tool, &args)?;
        let worker = self.start_worker().await?;
        let id = protocol::new_request_id();
        let (tx, rx) = oneshot::channel();
        worker.pending.locked().insert(id.clone(), tx);
        // From here, dropping this future (a caller's select!, timeout or
        // abort) cancels the request: the worker is replaced (see Cancel).
        let _cancel = Cancel {
            worker: &worker,
            id: &id,
        };
        if worker.control.has_ended() {
            // The reader may have finished between start_worker and insert: it will not drain us.
            worker.pending.locked().remove(&id);
            return Err(Error::sandbox(
                SandboxKind::WorkerDied,
                "extension worker ended before the request could be sent",
            ));
        }
        if let Err(e) = worker
            .send(
                protocol::invoke_line(&id, tool, &args),
                self.options.timeout,
            )
            .await
        {
            worker.pending.locked().remove(&id);
            worker.kill(format!("failed to send invoke request: {e}"));
            return Err(Error::sandbox_io(
                SandboxKind::WorkerIo,
                format!("failed to send invoke request to the worker: {e}"),
                e,
            ));
        }
        let timeout = self.options.timeout;
        let denials_before = worker.denials.locked().len();
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(Response::Ok(v)))) => Ok(v),
            Ok(Ok(Ok(Response::Err(msg)))) => Err(Error::Invoke {
                msg: explain(
                    msg,
                    &worker.denials.locked()[denials_before.min(DENIALS_KEPT)..],
                ),
                tool_name: Some(tool.to_string()),
            }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::sandbox(
                SandboxKind::WorkerDied,
                "extension worker ended without answering",
            )),
            Err(_) => {
                worker.pending.locked().remove(&id);
                worker.kill(format!(
                    "worker killed after tool '{tool}' timed out after {}s",
                    timeout.as_secs_f64()
                ));
                Err(Error::Timeout {
                    tool_name: Some(tool.to_string()),
                    timeout: Some(timeout),
                })
            }
        }
    }

    /// Stops the worker: `{"op": "shutdown"}`, then a kill after 2 s.
    pub async fn unload(&self) {
        self.loaded.store(false, Ordering::SeqCst);
        let worker = self.worker.lock().await.take();
        if let Some(w) = worker {
            w.shutdown().await;
        }
    }
}

impl Drop for ExtensionHost {
    fn drop(&mut self) {
        if let Some(w) = self.worker.get_mut().take() {
            w.kill("extension host dropped".into());
        }
    }
}
