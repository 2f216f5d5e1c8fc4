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
//!
//! Option structs and public enums are `#[non_exhaustive]`, so that a new
//! field or variant is not a breaking change: build options from `default()`
//! and their `with_*` methods (`HostOptions::default().with_timeout(…)`), or
//! set public fields on a `let mut`, and give a `match` on a policy enum a
//! wildcard arm.

//!
//! # Quick start
//!
//! Async, on tokio: load an extension folder into a registry, invoke a tool.
//!
//! ```
//! use nodus_extension::{ExtensionRegistry, HostOptions};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> nodus_extension::Result<()> {
//! let registry = ExtensionRegistry::new(HostOptions::default());
//! let host = registry.load("examples/hello").await?;   // starts its confined worker
//! assert_eq!(host.name(), "example.hello");
//!
//! let greeting = registry
//!     .invoke_value("example.hello", "example.greet", json!({"name": "Ada"}))
//!     .await?;
//! assert_eq!(greeting, "Hello, Ada!");
//!
//! // The reference's API takes the arguments as a JSON string.
//! let words = registry
//!     .invoke("example.hello", "example.count_words", r#"{"text": "one two three"}"#)
//!     .await?;
//! assert_eq!(words, 3);
//! registry.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Blocking, for a host without a runtime ([`blocking`] owns one):
//!
//! ```
//! use nodus_extension::{blocking, Error, HostOptions};
//!
//! let registry = blocking::ExtensionRegistry::new(HostOptions::default())?;
//! registry.load("examples/hello")?;
//! let greeting = registry.invoke("example.hello", "example.greet", r#"{"name": "Ada"}"#)?;
//! assert_eq!(greeting, "Hello, Ada!");
//!
//! // Failures are typed, with the reference's classes.
//! let err = registry.invoke("example.hello", "example.nope", "{}").unwrap_err();
//! assert!(matches!(err, Error::Invoke { .. }));
//! assert_eq!(err.class(), "InvokeError");
//! # Ok::<(), Error>(())
//! ```
//!
//! Dropping an invoke's future (a `select!`, a timeout of your own, an
//! aborted task) cancels that request: the worker cannot be told to stop a
//! running tool, so it is replaced, and the next invoke does not wait behind
//! the abandoned one.

#![deny(unsafe_code)] // `sandbox/child.rs` alone may use it (the code between fork and exec), and `host/zygote.rs` its C interface.

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
    pub use crate::sandbox::guarantees::{Guarantee, GuaranteeStatus, Mechanism, Missing};
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
    /// `ext-relay`'s body: the relay of a fork server's worker for `run --server`.
    pub use crate::cli::relay::relay_main;
    /// `ext-reaper`'s body: a worker's exec'd monitor or reaper.
    pub use crate::sandbox::child::waiter_main as reaper_main;
}
