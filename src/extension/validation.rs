//! Tool arguments checked against the tool's declared JSON Schema before they
//! reach the worker (the reference never checks them).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::extension::manifest::Manifest;

/// What to do with arguments that do not match a tool's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SchemaMode {
    /// Refuse the invoke with an InvokeError naming the field.
    #[default]
    Enforce,
    /// Let it through, but warn (stderr and the audit trail).
    Warn,
    /// Do not look.
    Off,
}

/// The compiled schemas of one extension's tools.
pub struct ToolSchemas {
    validators: HashMap<String, jsonschema::Validator>,
}

impl std::fmt::Debug for ToolSchemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolSchemas")
            .field("tools", &self.validators.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ToolSchemas {
    /// Compiles every non-empty tool schema; a schema that is not valid JSON
    /// Schema is a ManifestError (unless validation is off).
    pub fn compile(manifest: &Manifest, mode: SchemaMode) -> Result<ToolSchemas> {
        let mut validators = HashMap::new();
        if mode != SchemaMode::Off {
            for tool in manifest.tools.iter().filter(|t| !t.schema.is_empty()) {
                let schema = Value::Object(tool.schema.clone());
                let v = jsonschema::validator_for(&schema).map_err(|e| {
                    Error::manifest(
                        format!("tool '{}' declares an invalid JSON Schema: {e}", tool.name),
                        None,
                    )
                })?;
                validators.insert(tool.name.clone(), v);
            }
        }
        Ok(ToolSchemas { validators })
    }

    /// Why `args` do not fit `tool`'s schema, if they do not: the first error,
    /// with the path of the field it is about.
    pub fn check(&self, tool: &str, args: &Value) -> Option<String> {
        let v = self.validators.get(tool)?;
        let errors: Vec<String> = v
            .iter_errors(args)
            .take(3)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    format!("{e}")
                } else {
                    format!("at {at}: {e}")
                }
            })
            .collect();
        (!errors.is_empty()).then(|| {
            format!(
                "arguments do not match the schema of tool '{tool}': {}",
                errors.join("; ")
            )
        })
    }
}
