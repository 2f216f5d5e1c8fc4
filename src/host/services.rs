//! Host-mediated capabilities: what a worker may ask its host for
//! (`memory.*`, `tool.invoke`), and the runner's gate in front of them.
//!
//! A host call whose capability the manifest does not declare is answered with
//! an error naming the capability and never reaches the backend. Calls are
//! bounded in size (the protocol's line limit, the store's quotas), rate
//! (per worker) and nesting (a tool that calls a tool that calls the first is
//! refused instead of deadlocking).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::extension::capabilities::{Capability, CapabilityGate};
use crate::host::audit::Audit;
use crate::host::memory::{MemoryBackend, Quotas, SqliteStore};
pub use crate::protocol::HostCall;
use crate::support::LockExt;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who makes a host call.
///
/// A manifest name is only a claim: two extensions installed in different
/// folders can both call themselves `x.y`. The memory namespace is therefore
/// the name *and* the folder the extension is installed in (symlinks
/// resolved), so an impostor of the same name, loaded by another host sharing
/// the per-user store, starts from an empty namespace of its own. Updating an
/// extension in place keeps its memory; moving it starts afresh (the old keys
/// stay in the store under the old folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The manifest name (audit, tool routing, the wait graph).
    pub name: String,
    /// The key of its memory namespace: `<length of name>:<name>@<canonical
    /// folder>` (the length keeps `a@/x` in `/y` apart from `a` in `/x@/y`; a
    /// folder that is not UTF-8 is written `hex:<bytes>`, which no absolute
    /// path can be).
    pub memory_namespace: String,
}

impl Caller {
    /// The extension `name` installed in `dir`.
    pub fn new(name: &str, dir: &Path) -> Caller {
        use std::os::unix::ffi::OsStrExt;
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let folder = match dir.to_str() {
            Some(text) => text.to_string(),
            None => format!(
                "hex:{}",
                dir.as_os_str()
                    .as_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ),
        };
        Caller {
            name: name.to_string(),
            memory_namespace: format!("{}:{name}@{folder}", name.len()),
        }
    }
}

/// What an embedding runtime supplies: its memory store and tool registry.
pub trait HostServices: Send + Sync {
    /// The memory backend, or an error saying why there is none. The gate
    /// passes it the caller's `memory_namespace`.
    fn memory(&self) -> Result<&dyn MemoryBackend>;
    /// Invokes `tool` on behalf of extension `caller`; `provider` is the
    /// extension the caller asked for by name, if it did.
    fn invoke_tool<'a>(
        &'a self,
        caller: &'a str,
        provider: Option<&'a str>,
        tool: &'a str,
        args: Value,
    ) -> BoxFuture<'a, Result<Value>>;
}

/// Shared handle to host services.
#[derive(Clone)]
pub struct Services(pub Arc<dyn HostServices>);

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Services(..)")
    }
}

/// The embedded SQLite store, opened on first use (most workers never call it).
pub struct LazyStore {
    path: PathBuf,
    quotas: Quotas,
    store: OnceLock<SqliteStore>,
}

impl LazyStore {
    pub fn new(path: PathBuf, quotas: Quotas) -> LazyStore {
        LazyStore {
            path,
            quotas,
            store: OnceLock::new(),
        }
    }

    /// The store, opened now if it is not yet. A failure is not kept: the
    /// next call tries again (the folder may have been made meanwhile).
    pub fn get(&self) -> Result<&dyn MemoryBackend> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        let opened = SqliteStore::open(&self.path, self.quotas)?;
        // Two first calls may race: one store is kept, the other closed.
        Ok(self.store.get_or_init(|| opened))
    }
}

/// Services without a registry: the embedded memory store, no tools.
pub struct StandaloneServices {
    pub memory: LazyStore,
}

impl HostServices for StandaloneServices {
    fn memory(&self) -> Result<&dyn MemoryBackend> {
        self.memory.get()
    }
    fn invoke_tool<'a>(
        &'a self,
        _caller: &'a str,
        _provider: Option<&'a str>,
        tool: &'a str,
        _args: Value,
    ) -> BoxFuture<'a, Result<Value>> {
        Box::pin(async move {
            Err(Error::Invoke {
                msg: format!("no tool registry here to invoke '{tool}': tool calls need a host registry (load the extensions into one ExtensionRegistry)"),
                tool_name: Some(tool.to_string()),
            })
        })
    }
}

/// Host calls allowed per worker per second.
pub const RATE_PER_SECOND: u32 = 10_000;
/// Longest chain of tool calls between extensions (A calls B calls C …).
pub const MAX_NESTING: usize = 4;

/// A fixed-window counter of host calls per worker.
#[derive(Debug)]
pub struct RateLimiter {
    window: Mutex<(Instant, u32)>,
    per_second: u32,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::per_second(RATE_PER_SECOND)
    }
}

impl RateLimiter {
    pub fn per_second(per_second: u32) -> RateLimiter {
        RateLimiter {
            window: Mutex::new((Instant::now(), 0)),
            per_second,
        }
    }

    pub(crate) fn admit(&self) -> bool {
        let mut w = self.window.locked();
        if w.0.elapsed() >= Duration::from_secs(1) {
            *w = (Instant::now(), 0);
        }
        w.1 += 1;
        w.1 <= self.per_second
    }
}

/// Denial notices audited per extension per second: a worker that floods
/// them must not fill the disk through the audit trail (or the host's stderr).
pub const DENIALS_PER_SECOND: u32 = 100;

/// Audits the denial notices an extension's workers send, at most
/// `DENIALS_PER_SECOND`; the ones over the rate are counted and the count goes
/// with the next entry.
#[derive(Debug)]
pub struct DenialLog {
    rate: RateLimiter,
    dropped: std::sync::atomic::AtomicU64,
}

impl Default for DenialLog {
    fn default() -> Self {
        DenialLog {
            rate: RateLimiter::per_second(DENIALS_PER_SECOND),
            dropped: Default::default(),
        }
    }
}

impl DenialLog {
    /// The explanation of one denial ("denied …: … not declared"), and
    /// whether it was audited (false: over the rate, only counted).
    pub fn record(
        &self,
        audit: &Audit,
        ext: &str,
        capability: &str,
        detail: &str,
        reason: Option<&str>,
    ) -> (String, bool) {
        use std::sync::atomic::Ordering;
        let text = match reason {
            Some(why) => format!("denied {detail}: {why}"),
            None => format!("denied {detail}: {capability} not declared"),
        };
        if !self.rate.admit() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return (text, false);
        }
        let mut fields = json!({"what": detail, "capability": capability, "layer": "worker"});
        if let Some(why) = reason {
            fields["reason"] = why.into();
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            fields["dropped_before"] = dropped.into();
        }
        audit.record("denial", ext, fields);
        (text, true)
    }
}

/// The error of an invoke whose tool failed with `msg` after the host refused
/// one of its host calls for lacking `capability`: a CapabilityError, whose
/// message is the worker's when that already says it.
pub fn refused_capability(capability: &str, extension: &str, msg: &str) -> Error {
    let plain = Error::capability(capability, Some(extension), None);
    if msg == plain.to_string() {
        plain
    } else {
        Error::capability(
            capability,
            Some(extension),
            Some(format!(
                "a host call was refused; the tool failed with: {msg}"
            )),
        )
    }
}

/// The capability a host call needs.
pub fn required_capability(call: &str) -> Option<Capability> {
    match call {
        "memory.get" | "memory.keys" => Some(Capability::MemoryRead),
        "memory.put" | "memory.delete" => Some(Capability::MemoryWrite),
        "tool.invoke" => Some(Capability::ToolInvoke),
        _ => None,
    }
}

fn string_param(call: &HostCall, name: &str) -> Result<String> {
    match call.params.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) if name == "prefix" => Ok(String::new()),
        _ => Err(Error::Invoke {
            msg: format!(
                "host call {}: parameter '{name}' must be a string",
                call.call
            ),
            tool_name: None,
        }),
    }
}

/// Serves one host call of extension `caller` through the gate, and audits it.
pub async fn serve(
    call: &HostCall,
    caller: &Caller,
    gate: &CapabilityGate,
    services: &dyn HostServices,
    limiter: &RateLimiter,
    audit: &Audit,
) -> Result<Value> {
    let started = Instant::now();
    let ext = caller.name.as_str();
    let outcome = gatekeep(call, caller, gate, services, limiter).await;
    let mut fields = json!({"call": call.call, "ms": crate::host::audit::millis(started)});
    if call.call.starts_with("memory.") {
        fields["key"] = call
            .params
            .get("key")
            .or_else(|| call.params.get("prefix"))
            .cloned()
            .unwrap_or(Value::Null);
    } else if call.call == "tool.invoke" {
        fields["tool"] = call.params.get("name").cloned().unwrap_or(Value::Null);
    }
    match &outcome {
        Ok(_) => fields["outcome"] = "ok".into(),
        Err(Error::Capability { capability, .. }) => {
            fields["outcome"] = "denied".into();
            fields["capability"] = capability.clone().into();
            audit.record("denial", ext, json!({"what": format!("host call {}", call.call), "capability": capability, "layer": "protocol"}));
        }
        Err(e) => {
            fields["outcome"] = e.class().into();
            fields["error"] = e.to_string().into();
        }
    }
    audit.record("host_call", ext, fields);
    outcome
}

async fn gatekeep(
    call: &HostCall,
    caller: &Caller,
    gate: &CapabilityGate,
    services: &dyn HostServices,
    limiter: &RateLimiter,
) -> Result<Value> {
    let cap = required_capability(&call.call).ok_or_else(|| Error::Invoke {
        msg: format!("unknown host call '{}' (known: memory.get, memory.put, memory.delete, memory.keys, tool.invoke)", call.call),
        tool_name: None,
    })?;
    gate.require(cap)?;
    if !limiter.admit() {
        return Err(Error::Invoke {
            msg: format!("host call rate limit: more than {RATE_PER_SECOND} calls per second"),
            tool_name: None,
        });
    }
    let ns = caller.memory_namespace.as_str();
    match call.call.as_str() {
        "memory.get" => Ok(services
            .memory()?
            .get(ns, &string_param(call, "key")?)?
            .unwrap_or(Value::Null)),
        "memory.keys" => Ok(json!(services
            .memory()?
            .keys(ns, &string_param(call, "prefix")?)?)),
        "memory.put" => {
            let value = call.params.get("value").cloned().unwrap_or(Value::Null);
            services
                .memory()?
                .put(ns, &string_param(call, "key")?, &value)?;
            Ok(Value::Null)
        }
        "memory.delete" => Ok(json!(services
            .memory()?
            .delete(ns, &string_param(call, "key")?)?)),
        "tool.invoke" => {
            let name = string_param(call, "name")?;
            let args = call
                .params
                .get("args")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let provider = match call.params.get("extension") {
                None | Some(Value::Null) => None,
                Some(_) => Some(string_param(call, "extension")?),
            };
            services
                .invoke_tool(&caller.name, provider.as_deref(), &name, args)
                .await
        }
        _ => unreachable!("required_capability covers every call"),
    }
}
