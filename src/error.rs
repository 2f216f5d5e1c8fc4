//! The one error type. Its variants are the reference's exception classes
//! (`ManifestError`, `CapabilityError`, `SandboxError`, `AbiError`,
//! `RegistryError`, `InvokeError`, `TimeoutError`) with the same data, and each
//! maps to a fixed `ext-runner` exit code that scripts rely on.
//!
//! Under the `SandboxError` class, a [`SandboxKind`] says which part failed
//! (a caller can `match` on it instead of reading the message), and the
//! underlying `io::Error`, when there is one, is kept as the source.

use std::time::Duration;

pub use crate::sandbox::child::Step;

/// Every failure of the framework, classified as the reference classifies it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    ///
    /// `msg` is the whole text users see (it already includes the source's
    /// text); `source` keeps the `io::Error` for callers that look at its kind.
    #[error("{msg}")]
    Sandbox {
        kind: SandboxKind,
        msg: String,
        #[source]
        source: Option<std::io::Error>,
    },

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

/// What part of running a worker a `SandboxError` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SandboxKind {
    /// The operator's policy file cannot be read or is invalid.
    OperatorPolicy,
    /// Strict mode: the policy needs a layer this kernel cannot enforce.
    KernelLacks,
    /// The extension needs a workspace that was not given or cannot be used.
    Workspace,
    /// The interpreter cannot be found or does not say which binary it is.
    Interpreter,
    /// The extension's entry point is missing.
    EntryPoint,
    /// Turning the policy into kernel objects before the fork failed
    /// (Landlock ruleset, seccomp filter, a path with a NUL byte).
    Prepare,
    /// The worker's private scratch folder cannot be made or filled.
    Scratch,
    /// The worker's pids cgroup cannot be set up.
    Cgroup,
    /// Forking or executing the worker failed outside the confinement steps
    /// (the program cannot be executed, no process can be made).
    Spawn,
    /// A confinement step failed in the worker's process between fork and
    /// exec; the source holds its errno.
    Confinement(Step),
    /// The worker ended (or ended without answering).
    WorkerDied,
    /// Talking to the worker (or, for `ext-runner run`, to the host) failed:
    /// a pipe closed, a write failed, a line over the limit.
    WorkerIo,
    /// The extension is not loaded.
    NotLoaded,
    /// The restart policy refuses to start the worker again.
    RestartRefused,
    /// The memory store cannot be opened, read or written.
    Memory,
    /// The audit log cannot be opened.
    Audit,
    /// The host's own machinery: its runtime, the launcher thread.
    Runtime,
    /// The fork server (`--server`, `HostOptions::server`) cannot be
    /// reached, refused the start, or went away.
    Server,
}

impl Error {
    /// The reference's class name, e.g. `"ManifestError"`.
    pub fn class(&self) -> &'static str {
        match self {
            Error::Manifest { .. } => "ManifestError",
            Error::Capability { .. } => "CapabilityError",
            Error::Sandbox { .. } => "SandboxError",
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
            Error::Sandbox { .. } => 6,
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

    /// The sandbox kind, for a `SandboxError`.
    pub fn sandbox_kind(&self) -> Option<SandboxKind> {
        match self {
            Error::Sandbox { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    pub(crate) fn sandbox(kind: SandboxKind, msg: impl Into<String>) -> Self {
        Error::Sandbox {
            kind,
            msg: msg.into(),
            source: None,
        }
    }

    /// A `SandboxError` caused by `source`; `msg` includes its text.
    pub(crate) fn sandbox_io(
        kind: SandboxKind,
        msg: impl Into<String>,
        source: std::io::Error,
    ) -> Self {
        Error::Sandbox {
            kind,
            msg: msg.into(),
            source: Some(source),
        }
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
