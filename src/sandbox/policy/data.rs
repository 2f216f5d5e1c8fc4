//! `policies/base.json` and `policies/capabilities.json`, built into the
//! binary and parsed once per process. Every struct refuses fields it does not
//! know, so a field in the data is a field something reads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::LazyLock;

use serde::Deserialize;

use crate::extension::capabilities::Capability;
use crate::sandbox::policy::Limits;

pub const BASE_JSON: &str = include_str!("../../../policies/base.json");
pub const CAPABILITIES_JSON: &str = include_str!("../../../policies/capabilities.json");

/// Both files, parsed. A file that does not parse is a build defect, caught
/// by the test suite (`tests/policy.rs`) before it can ship.
pub(crate) struct PolicyData {
    pub base: BaseData,
    pub capabilities: BTreeMap<Capability, CapData>,
}

pub(crate) static DATA: LazyLock<PolicyData> = LazyLock::new(|| {
    let base: BaseData =
        serde_json::from_str(BASE_JSON).expect("policies/base.json is checked by the test suite");
    let file: CapabilitiesFile = serde_json::from_str(CAPABILITIES_JSON)
        .expect("policies/capabilities.json is checked by the test suite");
    let capabilities = file.capabilities;
    if let Some(c) = Capability::ALL
        .iter()
        .find(|c| !capabilities.contains_key(c))
    {
        panic!("policies/capabilities.json says nothing about {c}");
    }
    PolicyData { base, capabilities }
});

impl PolicyData {
    /// What `policies/capabilities.json` says about one capability.
    pub fn cap(&self, c: Capability) -> &CapData {
        self.capabilities
            .get(&c)
            .expect("policies/capabilities.json has every capability")
    }
}

/// `policies/capabilities.json`: a `_doc` and one entry per capability (an
/// unknown name is an error).
#[derive(Deserialize)]
struct CapabilitiesFile {
    #[serde(rename = "_doc")]
    _doc: String,
    #[serde(flatten)]
    capabilities: BTreeMap<Capability, CapData>,
}

#[derive(Deserialize)]
pub(crate) struct BaseData {
    pub landlock: BaseLandlock,
    pub seccomp: BaseSeccomp,
    pub limits: Limits,
    pub environment: BTreeMap<String, String>,
}
#[derive(Deserialize)]
pub(crate) struct BaseLandlock {
    pub read_exec: PathGroup,
    pub read: PathGroup,
    pub devices: Devices,
    pub scopes: Vec<String>,
}
#[derive(Deserialize)]
pub(crate) struct PathGroup {
    pub paths: Vec<PathBuf>,
    pub why: String,
}
#[derive(Deserialize)]
pub(crate) struct Devices {
    pub read_write: Vec<PathBuf>,
    pub read: Vec<PathBuf>,
    pub why: String,
}
#[derive(Deserialize)]
pub(crate) struct BaseSeccomp {
    pub allow: Vec<String>,
    pub allow_why: String,
    pub conditional: BTreeMap<String, String>,
    pub deny: Vec<DenyGroup>,
}
#[derive(Deserialize)]
pub(crate) struct DenyGroup {
    pub names: Vec<String>,
    pub why: String,
}
#[derive(Deserialize)]
pub(crate) struct CapData {
    pub why: String,
    #[serde(default)]
    pub read: Vec<PathBuf>,
    #[serde(default)]
    pub exec: Vec<PathBuf>,
    #[serde(default)]
    pub syscalls: Vec<String>,
}
