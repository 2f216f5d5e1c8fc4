//! `ExtensionRegistry`: the loaded extensions of one host, by name.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::host::{ExtensionHost, HostOptions};
use crate::manifest::Manifest;

/// Loaded extensions by name. Safe to share between tasks.
pub struct ExtensionRegistry {
    options: HostOptions,
    hosts: tokio::sync::RwLock<BTreeMap<String, Arc<ExtensionHost>>>,
    /// Serializes loads so that two loads of one name cannot both start.
    loading: tokio::sync::Mutex<()>,
}

impl Default for ExtensionRegistry {
    fn default() -> Self {
        Self::new(HostOptions::default())
    }
}

impl ExtensionRegistry {
    pub fn new(options: HostOptions) -> Self {
        ExtensionRegistry {
            options,
            hosts: Default::default(),
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
