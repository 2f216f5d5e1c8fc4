//! nodus-extension: the Nodus extension framework with its sandbox made real.
//!
//! The pipeline reads in one direction, one file per stage:
//! `manifest` → `capabilities` → `policy` (decide, pure) → `launch`/`child`
//! (apply in the child) → `protocol` → `host` and `registry`.

#![deny(unsafe_code)] // `child.rs` alone may use it: the code between fork and exec.

pub mod audit;
pub mod blocking;
pub mod capabilities;
mod child;
pub mod cli;
pub mod error;
pub mod host;
pub mod interpreter;
pub mod launch;
pub mod manifest;
pub mod memory;
pub mod policy;
pub mod probe;
pub mod protocol;
pub mod provenance;
pub mod proxy;
mod pyrepr;
pub mod registry;
pub mod services;
mod syscalls;
pub mod validation;
pub mod worker;

pub use capabilities::{Capability, CapabilityGate};
pub use error::{Error, Result};
pub use host::{ExtensionHost, HostOptions};
pub use manifest::{Manifest, ToolSurface};
pub use provenance::{Origin, OwnerClass, Provenance, TrustClass};
pub use registry::ExtensionRegistry;
