//! A blocking facade over the async registry, for hosts without a tokio runtime.
//!
//! It owns a small runtime of its own. Called from inside a tokio runtime
//! (an `async fn`, a task), where blocking would stall that runtime and
//! tokio forbids starting another, each call that can fail returns a
//! SandboxError saying to use the async [`crate::ExtensionRegistry`]
//! instead; nothing panics. Dropping the facade there is safe too.
//!
//! ```no_run
//! use nodus_extension::{blocking, HostOptions};
//!
//! let registry = blocking::ExtensionRegistry::new(HostOptions::default())?;
//! registry.load("examples/hello")?;
//! let greeting = registry.invoke("example.hello", "example.greet", r#"{"name": "Ada"}"#)?;
//! assert_eq!(greeting, "Hello, Ada!");
//! # Ok::<(), nodus_extension::Error>(())
//! ```

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result, SandboxKind};
use crate::host::{ExtensionHost, HostOptions};

/// `ExtensionRegistry` with blocking methods; owns its own runtime.
pub struct ExtensionRegistry {
    /// `None` only while being dropped.
    runtime: Option<tokio::runtime::Runtime>,
    inner: Arc<crate::host::registry::ExtensionRegistry>,
}

/// Whether this thread runs inside a tokio runtime, where blocking on ours
/// would panic (or stall the caller's runtime).
fn in_async_context() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

fn refused() -> Error {
    Error::sandbox(
        SandboxKind::Runtime,
        "the blocking registry was called inside a tokio runtime, where it would block that \
         runtime's thread; use the async nodus_extension::ExtensionRegistry there \
         (or call from a thread outside the runtime)",
    )
}

impl ExtensionRegistry {
    pub fn new(options: HostOptions) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| {
                Error::sandbox_io(
                    SandboxKind::Runtime,
                    format!("cannot start the host runtime: {e}"),
                    e,
                )
            })?;
        Ok(ExtensionRegistry {
            runtime: Some(runtime),
            inner: Arc::new(crate::host::registry::ExtensionRegistry::new(options)),
        })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    /// Runs `f` on the registry's runtime and waits for it; an error inside
    /// a tokio runtime.
    fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        if in_async_context() {
            return Err(refused());
        }
        let task = self.runtime().spawn(f);
        self.runtime().block_on(task).unwrap_or_else(|e| {
            Err(Error::sandbox(
                SandboxKind::Runtime,
                format!("a host task failed: {e}"),
            ))
        })
    }

    /// Runs `f` where blocking is allowed: on this thread, or (inside a
    /// tokio runtime) on a helper thread. For the calls that cannot fail.
    fn run_infallible<T: Send>(&self, f: impl std::future::Future<Output = T> + Send) -> T {
        if in_async_context() {
            std::thread::scope(|s| {
                s.spawn(|| self.runtime().block_on(f))
                    .join()
                    .expect("a registry lookup does not panic")
            })
        } else {
            self.runtime().block_on(f)
        }
    }

    pub fn load(&self, dir: impl AsRef<Path>) -> Result<Arc<ExtensionHost>> {
        let dir = dir.as_ref().to_path_buf();
        let reg = self.inner.clone();
        self.run(async move { reg.load(dir).await })
    }

    pub fn get(&self, name: &str) -> Option<Arc<ExtensionHost>> {
        self.run_infallible(self.inner.get(name))
    }

    pub fn list_all(&self) -> Vec<Arc<ExtensionHost>> {
        self.run_infallible(self.inner.list_all())
    }

    pub fn unload(&self, name: &str) -> Result<()> {
        let (reg, name) = (self.inner.clone(), name.to_string());
        self.run(async move { reg.unload(&name).await })
    }

    /// Invokes `tool` of extension `name` with `args_json` (a JSON string).
    pub fn invoke(&self, name: &str, tool: &str, args_json: &str) -> Result<Value> {
        let (reg, name, tool, args) = (
            self.inner.clone(),
            name.to_string(),
            tool.to_string(),
            args_json.to_string(),
        );
        // On the runtime's threads: an invoke may restart the worker.
        self.run(async move { reg.invoke(&name, &tool, &args).await })
    }

    /// Invokes `tool` of extension `name` with already-decoded arguments.
    pub fn invoke_value(&self, name: &str, tool: &str, args: Value) -> Result<Value> {
        let (reg, name, tool) = (self.inner.clone(), name.to_string(), tool.to_string());
        self.run(async move { reg.invoke_value(&name, &tool, args).await })
    }

    /// The async registry behind this facade.
    pub fn registry(&self) -> &crate::host::registry::ExtensionRegistry {
        &self.inner
    }
}

impl Drop for ExtensionRegistry {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let inner = self.inner.clone();
        let stop = move || {
            runtime.block_on(inner.shutdown());
            drop(runtime);
        };
        if in_async_context() {
            // Neither blocking on nor dropping a runtime is allowed here.
            let _ = std::thread::spawn(stop).join();
        } else {
            stop();
        }
    }
}
