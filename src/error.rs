//! The one error type. Its variants are the reference's exception classes
//! (`ManifestError`, `CapabilityError`, `SandboxError`, `AbiError`,
//! `RegistryError`, `InvokeError`, `TimeoutError`) with the same data, and each
//! maps to a fixed `ext-runner` exit code that scripts rely on.

use std::time::Duration;

/// Every failure of the framework, classified as the reference classifies it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifest is missing, malformed, or fails validation.
    #[error("{msg}")]
    Manifest { msg: String, path: Option<String> },

    /// An operation needs a capability the extension lacks (or the operator refuses).
    #[error("{}extension lacks capability: '{capability}'{}", extension.as_ref().map(|e| format!("'{e}' ")).unwrap_or_default(), detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Capability {
        capability: String,
        extension: Option<String>,
        /// Why, when the reason is more than "not declared" (operator policy, trust class).
        detail: Option<String>,
    },

    /// The worker could not start, died, or the sandbox could not be set up.
    #[error("{0}")]
    Sandbox(String),

    /// The manifest declares an unsupported ABI version.
    #[error("{msg}")]
    Abi {
        msg: String,
        abi_version: Option<String>,
    },

    /// Duplicate or unknown extension name.
    #[error("{msg}")]
    Registry { msg: String, name: Option<String> },

    /// The worker answered the invoke with an error.
    #[error("{msg}")]
    Invoke {
        msg: String,
        tool_name: Option<String>,
    },

    /// The invoke exceeded its deadline; the worker was killed.
    #[error("extension invoke timed out{}{}", tool_name.as_ref().map(|t| format!(", tool='{t}'")).unwrap_or_default(), timeout.map(|t| format!(", after {}s", t.as_secs_f64())).unwrap_or_default())]
    Timeout {
        tool_name: Option<String>,
        timeout: Option<Duration>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The reference's class name, e.g. `"ManifestError"`.
    pub fn class(&self) -> &'static str {
        match self {
            Error::Manifest { .. } => "ManifestError",
            Error::Capability { .. } => "CapabilityError",
            Error::Sandbox(_) => "SandboxError",
            Error::Abi { .. } => "AbiError",
            Error::Registry { .. } => "RegistryError",
            Error::Invoke { .. } => "InvokeError",
            Error::Timeout { .. } => "TimeoutError",
        }
    }

    /// The `ext-runner` exit code for this class (0 success and 2 usage are the CLI's own).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Manifest { .. } => 3,
            Error::Abi { .. } => 4,
            Error::Capability { .. } => 5,
            Error::Sandbox(_) => 6,
            Error::Invoke { .. } => 7,
            Error::Timeout { .. } => 8,
            Error::Registry { .. } => 9,
        }
    }

    pub(crate) fn manifest(msg: impl Into<String>, path: impl Into<Option<String>>) -> Self {
        Error::Manifest {
            msg: msg.into(),
            path: path.into(),
        }
    }

    pub(crate) fn sandbox(msg: impl Into<String>) -> Self {
        Error::Sandbox(msg.into())
    }

    pub(crate) fn registry(msg: impl Into<String>, name: &str) -> Self {
        Error::Registry {
            msg: msg.into(),
            name: Some(name.to_string()),
        }
    }

    pub(crate) fn capability(
        capability: &str,
        extension: Option<&str>,
        detail: Option<String>,
    ) -> Self {
        Error::Capability {
            capability: capability.to_string(),
            extension: extension.map(str::to_string),
            detail,
        }
    }
}
