//! nodus-extension: the Nodus extension framework with its sandbox made real.
//!
//! An extension is a folder with a `nodus-extension.json` manifest and an
//! `extension.py` worker. The capabilities the manifest declares are enforced
//! by the kernel (Landlock, seccomp, namespaces, an unprivileged identity and
//! resource limits), derived from them by a pure, printable policy function.
//!
//! The pipeline reads in one direction, one folder per stage:
//!
//! | stage | module | may touch |
//! |---|---|---|
//! | manifest, capabilities | `extension` | the manifest file |
//! | facts, policy, launch | `sandbox` | reads the kernel; `child` alone applies the confinement |
//! | protocol | `protocol` | bytes only |
//! | host, registry, `run` proxy | `host` | worker processes, the memory store, the audit file |
//! | command line | `cli` | |
//!
//! The supported API is what this page lists: the registry and host
//! ([`ExtensionRegistry`], [`ExtensionHost`], [`HostOptions`]), the
//! [`blocking`] facade, the [`policy`] dry-run, [`memory`] backends, the
//! [`Audit`] trail and the [`Error`] type.

#![deny(unsafe_code)] // `sandbox/child.rs` alone may use it: the code between fork and exec.

mod cli;
mod extension;
mod host;
mod protocol;
mod sandbox;
mod support;

pub mod error;

/// The confinement of one worker as a pure function you can print:
/// [`derive`](policy::derive) over the manifest, the operator's policy and the
/// facts of this kernel ([`Probe`](policy::Probe)).
pub mod policy {
    pub use crate::sandbox::egress::{
        EgressLimitOverrides, EgressLimits, EgressPlan, EgressSection,
    };
    pub use crate::sandbox::policy::*;
    pub use crate::sandbox::probe::Probe;
}

pub use host::blocking;
pub use host::memory;

pub use error::{Error, Result};
pub use extension::capabilities::{Capability, CapabilityGate};
pub use extension::manifest::{Manifest, ToolSurface};
pub use extension::provenance::{Origin, OwnerClass, Provenance, TrustClass};
pub use extension::validation::SchemaMode;
pub use host::audit::Audit;
pub use host::registry::ExtensionRegistry;
pub use host::services::{Caller, HostServices, Services};
pub use host::{describe, ExtensionHost, HostOptions, RestartPolicy, DEFAULT_TIMEOUT};

/// The stages' own modules, for this crate's binary, benchmarks and fuzz
/// targets. Not a supported API: it changes without notice.
#[doc(hidden)]
pub mod internals {
    #![allow(missing_docs)]
    pub mod cli {
        pub use crate::cli::*;
    }
    pub mod extension {
        pub use crate::extension::*;
    }
    pub mod host {
        pub use crate::host::*;
    }
    pub mod protocol {
        pub use crate::protocol::*;
    }
    pub mod sandbox {
        pub use crate::sandbox::*;
    }
}
