//! `ExtensionRegistry`: the loaded extensions of one host, by name.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::extension::manifest::Manifest;
use crate::host::memory::MemoryBackend;
use crate::host::services::{BoxFuture, HostServices, LazyStore, Services, WaitGraph};
use crate::host::{ExtensionHost, HostOptions};

type Hosts = tokio::sync::RwLock<BTreeMap<String, Arc<ExtensionHost>>>;

/// Loaded extensions by name. Safe to share between tasks.
pub struct ExtensionRegistry {
    options: HostOptions,
    hosts: Arc<Hosts>,
    /// Serializes loads so that two loads of one name cannot both start.
    loading: tokio::sync::Mutex<()>,
}

impl Default for ExtensionRegistry {
    fn default() -> Self {
        Self::new(HostOptions::default())
    }
}

impl ExtensionRegistry {
    /// A registry; unless `options.services` is set, its extensions' host
    /// calls reach the embedded memory store and each other's tools.
    pub fn new(mut options: HostOptions) -> Self {
        let hosts: Arc<Hosts> = Arc::default();
        if options.services.is_none() {
            let path = options
                .memory_path
                .clone()
                .unwrap_or_else(crate::host::memory::default_path);
            options.services = Some(Services(Arc::new(RegistryServices {
                hosts: Arc::downgrade(&hosts),
                memory: LazyStore::new(path, options.memory_quotas),
                waits: WaitGraph::default(),
            })));
        }
        ExtensionRegistry {
            options,
            hosts,
            loading: Default::default(),
        }
    }

    pub fn options(&self) -> &HostOptions {
        &self.options
    }

    /// Loads the extension in `dir`. A duplicate name is refused before any worker starts.
    pub async fn load(&self, dir: impl AsRef<Path>) -> Result<Arc<ExtensionHost>> {
        let dir = dir.as_ref();
        let _serial = self.loading.lock().await;
        let manifest = Manifest::load(dir)?;
        if self.hosts.read().await.contains_key(&manifest.name) {
            return Err(Error::registry(
                format!("extension '{}' is already loaded", manifest.name),
                &manifest.name,
            ));
        }
        let name = manifest.name.clone();
        let host =
            Arc::new(ExtensionHost::load_manifest(dir, manifest, self.options.clone()).await?);
        self.hosts.write().await.insert(name, host.clone());
        Ok(host)
    }

    /// The extension named `name`, if loaded.
    pub async fn get(&self, name: &str) -> Option<Arc<ExtensionHost>> {
        self.hosts.read().await.get(name).cloned()
    }

    /// Every loaded extension, by name.
    pub async fn list_all(&self) -> Vec<Arc<ExtensionHost>> {
        self.hosts.read().await.values().cloned().collect()
    }

    /// `describe()` of every loaded extension (the reference's `list()`).
    pub async fn list(&self) -> Vec<Value> {
        self.hosts
            .read()
            .await
            .values()
            .map(|h| h.describe())
            .collect()
    }

    /// Unloads `name`, stopping its worker.
    pub async fn unload(&self, name: &str) -> Result<()> {
        let host = self.hosts.write().await.remove(name);
        match host {
            Some(h) => {
                h.unload().await;
                Ok(())
            }
            None => Err(Error::registry(
                format!("extension '{name}' is not loaded"),
                name,
            )),
        }
    }

    /// Invokes `tool` of extension `name` with `args_json`.
    pub async fn invoke(&self, name: &str, tool: &str, args_json: &str) -> Result<Value> {
        let host = self
            .get(name)
            .await
            .ok_or_else(|| Error::registry(format!("extension '{name}' is not loaded"), name))?;
        host.invoke(tool, args_json).await
    }

    /// Unloads everything.
    pub async fn shutdown(&self) {
        let hosts: Vec<_> = std::mem::take(&mut *self.hosts.write().await)
            .into_values()
            .collect();
        for h in hosts {
            h.unload().await;
        }
    }
}

/// The default services of a registry: the embedded store, and the tools of
/// the other extensions loaded in it.
struct RegistryServices {
    hosts: std::sync::Weak<Hosts>,
    memory: LazyStore,
    waits: WaitGraph,
}

impl HostServices for RegistryServices {
    fn memory(&self) -> Result<&dyn MemoryBackend> {
        self.memory.get()
    }

    fn invoke_tool<'a>(
        &'a self,
        caller: &'a str,
        provider: Option<&'a str>,
        tool: &'a str,
        args: Value,
    ) -> BoxFuture<'a, Result<Value>> {
        Box::pin(async move {
            let refuse = |msg: String| Error::Invoke {
                msg,
                tool_name: Some(tool.to_string()),
            };
            let hosts = self
                .hosts
                .upgrade()
                .ok_or_else(|| refuse("the registry is gone".into()))?;
            let target = {
                let hosts = hosts.read().await;
                let providers: Vec<&Arc<ExtensionHost>> = hosts
                    .values()
                    .filter(|h| provider.is_none_or(|p| h.name() == p))
                    .filter(|h| h.manifest().tool(tool).is_some())
                    .collect();
                match providers.as_slice() {
                    [one] => Arc::clone(one),
                    [] => {
                        return Err(refuse(match provider {
                            Some(p) => format!(
                                "extension '{p}' is not loaded or does not provide tool '{tool}'"
                            ),
                            None => format!("no loaded extension provides tool '{tool}'"),
                        }))
                    }
                    // Never the first that happens to match: an extension loaded
                    // later must not capture calls meant for another.
                    many => {
                        let names: Vec<&str> = many.iter().map(|h| h.name()).collect();
                        return Err(refuse(format!(
                            "tool '{tool}' is provided by several loaded extensions ({}): name the one to call (Python: invoke_tool(name, args, extension=...))",
                            names.join(", ")
                        )));
                    }
                }
            };
            let _waiting = self.waits.enter(caller, target.name())?;
            target.invoke_value(tool, args).await
        })
    }
}
