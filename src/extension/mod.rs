//! Stage 1 and 2 of the pipeline: what an extension *is*. Its manifest
//! (`nodus-extension.json`, validated with the reference's exact decisions),
//! the capabilities it declares, where it came from (provenance, trust class)
//! and the JSON Schemas of its tools' arguments.
//!
//! May touch: the manifest file, nothing else. Everything downstream
//! (sandbox, protocol, host) reads these types; nothing here depends on them.

pub mod capabilities;
pub mod manifest;
pub mod provenance;
pub mod validation;
