//! `ExtensionRegistry`: the loaded extensions of one host, by name.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::extension::manifest::Manifest;
use crate::host::memory::MemoryBackend;
use crate::host::services::{BoxFuture, HostServices, LazyStore, Services, MAX_NESTING};
use crate::host::{ExtensionHost, HostOptions};
use crate::support::LockExt;

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

    /// Invokes `tool` in the extension `name` with already-decoded arguments.
    pub async fn invoke_value(&self, name: &str, tool: &str, args: Value) -> Result<Value> {
        let host = self
            .get(name)
            .await
            .ok_or_else(|| Error::registry(format!("extension '{name}' is not loaded"), name))?;
        host.invoke_value(tool, args).await
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

/// Who is waiting on whom through tool calls, to refuse cycles and deep chains.
#[derive(Debug, Default)]
struct WaitGraph {
    edges: Mutex<HashMap<String, Vec<String>>>,
}

impl WaitGraph {
    /// Records that `from` waits on `to`, unless that closes a cycle or makes
    /// a chain longer than `MAX_NESTING`. The edge goes when the guard drops.
    fn enter<'a>(&'a self, from: &str, to: &str) -> Result<WaitGuard<'a>> {
        let mut edges = self.edges.locked();
        if from == to || reaches(&edges, to, from) {
            return Err(Error::Invoke {
                msg: format!("tool call from '{from}' to '{to}' refused: '{to}' is already waiting on '{from}' (the call would deadlock)"),
                tool_name: None,
            });
        }
        let depth = depth_into(&edges, from) + 1 + depth_from(&edges, to);
        if depth > MAX_NESTING {
            return Err(Error::Invoke {
                msg: format!(
                    "tool call from '{from}' to '{to}' refused: nesting deeper than {MAX_NESTING}"
                ),
                tool_name: None,
            });
        }
        edges
            .entry(from.to_string())
            .or_default()
            .push(to.to_string());
        Ok(WaitGuard {
            graph: self,
            from: from.to_string(),
            to: to.to_string(),
        })
    }
}

fn reaches(edges: &HashMap<String, Vec<String>>, start: &str, goal: &str) -> bool {
    let mut stack = vec![start];
    let mut seen = std::collections::HashSet::new();
    while let Some(n) = stack.pop() {
        if n == goal {
            return true;
        }
        if seen.insert(n) {
            stack.extend(edges.get(n).into_iter().flatten().map(String::as_str));
        }
    }
    false
}

/// Longest chain of waits ending at `node`.
fn depth_into(edges: &HashMap<String, Vec<String>>, node: &str) -> usize {
    edges
        .iter()
        .filter(|(_, tos)| tos.iter().any(|t| t == node))
        .map(|(from, _)| 1 + depth_into(edges, from))
        .max()
        .unwrap_or(0)
}

/// Longest chain of waits starting at `node`.
fn depth_from(edges: &HashMap<String, Vec<String>>, node: &str) -> usize {
    edges
        .get(node)
        .into_iter()
        .flatten()
        .map(|to| 1 + depth_from(edges, to))
        .max()
        .unwrap_or(0)
}

struct WaitGuard<'a> {
    graph: &'a WaitGraph,
    from: String,
    to: String,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut edges = self.graph.edges.locked();
        if let Some(tos) = edges.get_mut(&self.from) {
            if let Some(i) = tos.iter().position(|t| *t == self.to) {
                tos.swap_remove(i);
            }
            if tos.is_empty() {
                edges.remove(&self.from);
            }
        }
    }
}
