//! Stage 6: hosting workers. A host loads an extension, starts its confined
//! worker (through `sandbox::launch`), speaks the protocol with it, answers
//! its host calls (`memory.*`, `tool.invoke`) and records what happened.
//!
//! - `extension_host`: `ExtensionHost`, one loaded extension and its worker;
//! - `registry`: `ExtensionRegistry`, the extensions of one host by name;
//! - `blocking`: the same without a tokio runtime;
//! - `proxy`: `ext-runner run`, the protocol relayed on stdin/stdout;
//! - `worker`: one worker process, its stderr tail and how it ended;
//! - `server`, `zygote`: warm starts, the fork server and its zygote's C entry points;
//! - `services`, `memory`, `audit`: host calls, the memory store, the audit trail.
//!
//! May touch: worker processes, the memory store and the audit file.

pub mod audit;
pub mod blocking;
pub(crate) mod egress;
mod extension_host;
pub mod memory;
mod options;
mod prepared;
pub mod proxy;
pub mod registry;
pub mod server;
pub mod services;
pub mod worker;
mod zygote;

pub use extension_host::{describe, ExtensionHost};
pub use options::{HostOptions, RestartPolicy, DEFAULT_TIMEOUT};
pub use prepared::Prepared;
