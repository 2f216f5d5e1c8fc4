//! A blocking facade over the async registry, for hosts without a tokio runtime.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result, SandboxKind};
use crate::host::{ExtensionHost, HostOptions};

/// `ExtensionRegistry` with blocking methods; owns its own runtime.
pub struct ExtensionRegistry {
    runtime: tokio::runtime::Runtime,
    inner: Arc<crate::host::registry::ExtensionRegistry>,
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
            runtime,
            inner: Arc::new(crate::host::registry::ExtensionRegistry::new(options)),
        })
    }

    fn run<F: std::future::Future + Send + 'static>(&self, f: F) -> F::Output
    where
        F::Output: Send,
    {
        let task = self.runtime.spawn(f);
        self.runtime.block_on(task).expect("host task panicked")
    }

    pub fn load(&self, dir: impl AsRef<Path>) -> Result<Arc<ExtensionHost>> {
        let dir = dir.as_ref().to_path_buf();
        let reg = self.inner.clone();
        self.run(async move { reg.load(dir).await })
    }

    pub fn get(&self, name: &str) -> Option<Arc<ExtensionHost>> {
        self.runtime.block_on(self.inner.get(name))
    }

    pub fn list_all(&self) -> Vec<Arc<ExtensionHost>> {
        self.runtime.block_on(self.inner.list_all())
    }

    pub fn unload(&self, name: &str) -> Result<()> {
        self.runtime.block_on(self.inner.unload(name))
    }

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

    /// The async registry behind this facade.
    pub fn registry(&self) -> &crate::host::registry::ExtensionRegistry {
        &self.inner
    }
}

impl Drop for ExtensionRegistry {
    fn drop(&mut self) {
        self.runtime.block_on(self.inner.shutdown());
    }
}
