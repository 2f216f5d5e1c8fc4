//! The seven capabilities a manifest may declare, and the gate that checks them.
//! What each one grants at the kernel level is decided in `sandbox/policy/`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A capability string of the manifest's `capabilities` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Capability {
    FilesystemRead,
    FilesystemWrite,
    NetworkOutbound,
    SubprocessRun,
    ToolInvoke,
    MemoryRead,
    MemoryWrite,
}

impl Capability {
    pub const ALL: [Capability; 7] = [
        Capability::FilesystemRead,
        Capability::FilesystemWrite,
        Capability::NetworkOutbound,
        Capability::SubprocessRun,
        Capability::ToolInvoke,
        Capability::MemoryRead,
        Capability::MemoryWrite,
    ];

    /// The wire name, e.g. `"filesystem.read"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::FilesystemRead => "filesystem.read",
            Capability::FilesystemWrite => "filesystem.write",
            Capability::NetworkOutbound => "network.outbound",
            Capability::SubprocessRun => "subprocess.run",
            Capability::ToolInvoke => "tool.invoke",
            Capability::MemoryRead => "memory.read",
            Capability::MemoryWrite => "memory.write",
        }
    }

    /// The names the reference lists as supported, sorted as Python's `sorted()` does.
    pub fn supported_names() -> Vec<&'static str> {
        let mut v: Vec<_> = Self::ALL.iter().map(|c| c.as_str()).collect();
        v.sort_unstable();
        v
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Capability {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Capability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Capability {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Capability::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown capability: {}; supported: {}",
                    crate::support::pyrepr::str(s),
                    crate::support::pyrepr::str_list(&Capability::supported_names())
                )
            })
    }
}

/// The allowlist of capabilities of one extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilityGate {
    allowed: BTreeSet<Capability>,
    extension: Option<String>,
}

impl CapabilityGate {
    pub fn new(allowed: impl IntoIterator<Item = Capability>, extension: Option<&str>) -> Self {
        CapabilityGate {
            allowed: allowed.into_iter().collect(),
            extension: extension.map(str::to_string),
        }
    }

    pub fn has(&self, cap: Capability) -> bool {
        self.allowed.contains(&cap)
    }

    /// `Err(CapabilityError)` unless `cap` is allowed.
    pub fn require(&self, cap: Capability) -> Result<()> {
        if self.has(cap) {
            Ok(())
        } else {
            Err(Error::capability(
                cap.as_str(),
                self.extension.as_deref(),
                None,
            ))
        }
    }

    pub fn allowed(&self) -> &BTreeSet<Capability> {
        &self.allowed
    }
}
