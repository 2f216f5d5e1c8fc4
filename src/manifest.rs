//! `nodus-extension.json`: parsing and validation with the reference's exact
//! accept/reject decisions (pydantic v2 models in `manifest.py` of
//! nodus-extension 0.1.2), and its normalized form (`as_dict`).
//!
//! Type rules follow pydantic's lax mode on JSON input, which for these field
//! types is strict: a string field takes only a JSON string, a list field only
//! an array of strings, a dict field only an object, a `null` is never a value.
//! Unknown fields are ignored. `abi_version` is checked before anything else.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::capabilities::Capability;
use crate::error::{Error, Result};
use crate::provenance::{Origin, OwnerClass, Provenance, TrustClass};
use crate::pyrepr;

pub const MANIFEST_FILE: &str = "nodus-extension.json";
pub const SUPPORTED_ABI_VERSIONS: &[&str] = &["1"];
pub const TOOL_SURFACE_VERSION: &str = "v1alpha1";
pub const VALID_EFFECTS: &[&str] = &[
    "filesystem",
    "network",
    "pure",
    "reads_state",
    "spawns_task",
    "writes_state",
];

/// A validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub description: String,
    pub abi_version: String,
    pub min_nodus_version: String,
    /// As declared (order and duplicates kept, as the reference keeps them).
    pub capabilities: Vec<String>,
    pub provenance: Provenance,
    pub tools: Vec<ToolSurface>,
    /// Our extension: the worker's command line, relative to the extension folder,
    /// instead of `python extension.py`. The reference ignores unknown fields.
    pub entry: Option<Vec<String>>,
}

/// One `surfaces.tools[]` entry (`tool/v1alpha1`).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSurface {
    pub name: String,
    pub description: String,
    pub schema: Map<String, Value>,
    pub version: String,
    pub returns_schema: Map<String, Value>,
    pub effects: Vec<String>,
}

impl Manifest {
    /// Reads and validates `DIR/nodus-extension.json`, as `load_manifest(DIR)` does.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let shown = path.display().to_string();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::manifest(
                    format!(
                        "{MANIFEST_FILE} not found in {}",
                        pyrepr::str(&dir.display().to_string())
                    ),
                    shown,
                ))
            }
            Err(e) => return Err(Error::manifest(format!("cannot read {shown}: {e}"), shown)),
        };
        Manifest::parse(&bytes, &shown)
    }

    /// Validates manifest bytes; `path` only labels the errors.
    pub fn parse(bytes: &[u8], path: &str) -> Result<Manifest> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            Error::manifest(format!("{path} is not valid UTF-8: {e}"), path.to_string())
        })?;
        let raw: Value = serde_json::from_str(text).map_err(|e| {
            Error::manifest(format!("invalid JSON in {path}: {e}"), path.to_string())
        })?;
        let Value::Object(raw) = raw else {
            return Err(Error::manifest(
                format!(
                    "manifest must be a JSON object, got {}",
                    python_type_name(&raw)
                ),
                path.to_string(),
            ));
        };
        // The reference checks abi_version first, on str() of whatever value is there.
        let abi = raw
            .get("abi_version")
            .cloned()
            .unwrap_or_else(|| json!("1"));
        let abi_str = pyrepr::display(&abi);
        if !SUPPORTED_ABI_VERSIONS.contains(&abi_str.as_str()) {
            return Err(Error::Abi {
                msg: format!(
                    "unsupported abi_version {}; supported: {}",
                    pyrepr::repr(&abi),
                    pyrepr::str_list(SUPPORTED_ABI_VERSIONS)
                ),
                abi_version: Some(abi_str),
            });
        }
        Manifest::from_object(&raw).map_err(|errs| {
            Error::manifest(
                format!("manifest validation failed: {}", errs.join("; ")),
                path.to_string(),
            )
        })
    }

    fn from_object(raw: &Map<String, Value>) -> std::result::Result<Manifest, Vec<String>> {
        let mut v = Validator::default();
        let name = v
            .required_str(raw, "name", "")
            .map(|s| v.non_blank(s, "name", "extension name must not be empty"));
        let version = v.required_str(raw, "version", "");
        let description = v
            .required_str(raw, "description", "")
            .map(|s| v.non_blank(s, "description", "extension description must not be empty"));
        let abi_version = v.optional_str(raw, "abi_version", "", "1");
        if let Some(abi) = &abi_version {
            if !SUPPORTED_ABI_VERSIONS.contains(&abi.as_str()) {
                v.fail(
                    "abi_version",
                    format!("unsupported abi_version: {}", pyrepr::str(abi)),
                );
            }
        }
        let min_nodus_version = v.optional_str(raw, "min_nodus_version", "", "4.0.0");
        let capabilities = v.optional_str_list(raw, "capabilities", "");
        let provenance = v
            .optional_object(raw, "provenance", "")
            .map(|p| v.provenance(p));
        let tools = v.optional_object(raw, "surfaces", "").map(|s| v.tools(s));
        let entry = match raw.get("entry") {
            None => None,
            Some(e) => {
                match e.as_array().filter(|a| !a.is_empty()) {
                    Some(items)
                        if items
                            .iter()
                            .all(|i| i.as_str().is_some_and(|s| !s.is_empty())) =>
                    {
                        Some(
                            items
                                .iter()
                                .map(|i| i.as_str().unwrap_or_default().to_string())
                                .collect(),
                        )
                    }
                    _ => {
                        v.fail("entry", "must be a non-empty list of non-empty strings (the worker's command line)".into());
                        None
                    }
                }
            }
        };
        if !v.errors.is_empty() {
            return Err(v.errors);
        }
        // Everything typed; now the model validator: unknown capabilities.
        let capabilities = capabilities.unwrap_or_default();
        if let Some(bad) = capabilities
            .iter()
            .find(|c| c.parse::<Capability>().is_err())
        {
            return Err(vec![bad.parse::<Capability>().unwrap_err()]);
        }
        Ok(Manifest {
            name: name.flatten().unwrap_or_default(),
            version: version.unwrap_or_default(),
            description: description.flatten().unwrap_or_default(),
            abi_version: abi_version.unwrap_or_default(),
            min_nodus_version: min_nodus_version.unwrap_or_default(),
            capabilities,
            provenance: provenance.flatten().unwrap_or_default(),
            tools: tools.flatten().unwrap_or_default(),
            entry,
        })
    }

    /// The declared capabilities as a set.
    pub fn capability_set(&self) -> BTreeSet<Capability> {
        self.capabilities
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect()
    }

    /// The reference's `ExtensionManifest.as_dict()`, field for field, in its order.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "abi_version": self.abi_version,
            "min_nodus_version": self.min_nodus_version,
            "capabilities": self.capabilities,
            "provenance": provenance_json(&self.provenance),
            "surfaces": {"tools": self.tools.iter().map(ToolSurface::to_json).collect::<Vec<_>>()},
        })
    }

    /// The worker's command line relative to `dir`, when the manifest names one.
    pub fn entry_path(&self, dir: &Path) -> Option<PathBuf> {
        self.entry.as_ref().map(|e| dir.join(&e[0]))
    }

    pub fn tool(&self, name: &str) -> Option<&ToolSurface> {
        self.tools.iter().find(|t| t.name == name)
    }
}

impl ToolSurface {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "description": self.description,
            "schema": self.schema,
            "version": self.version,
            "returns_schema": self.returns_schema,
            "effects": self.effects,
        })
    }
}

pub(crate) fn provenance_json(p: &Provenance) -> Value {
    json!({"origin": p.origin.as_str(), "trust_class": p.trust_class.as_str(), "owner_class": p.owner_class.as_str()})
}

/// `type(x).__name__` of what `json.loads` returns.
fn python_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n)
            if n.is_i64() || n.is_u64() || !n.to_string().contains(['.', 'e', 'E']) =>
        {
            "int"
        }
        Value::Number(_) => "float",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Python's `str.isspace()` for one character.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The reference's `^[a-z0-9_]+(\.[a-z0-9_]+)+$` under `re.match`; Python's `$`
/// also matches before one final newline.
fn is_dotted(name: &str) -> bool {
    let name = name.strip_suffix('\n').unwrap_or(name);
    let segments: Vec<&str> = name.split('.').collect();
    segments.len() >= 2
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// Collects every field error, as pydantic reports them all at once.
#[derive(Default)]
struct Validator {
    errors: Vec<String>,
}

impl Validator {
    fn fail(&mut self, loc: &str, msg: String) {
        self.errors.push(format!("{loc}: {msg}"));
    }

    fn loc(prefix: &str, key: &str) -> String {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    }

    fn required_str(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Option<String> {
        match obj.get(key) {
            None => {
                self.fail(&Self::loc(prefix, key), "field required".into());
                None
            }
            Some(v) => self.string(v, &Self::loc(prefix, key)),
        }
    }

    fn optional_str(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        prefix: &str,
        default: &str,
    ) -> Option<String> {
        match obj.get(key) {
            None => Some(default.to_string()),
            Some(v) => self.string(v, &Self::loc(prefix, key)),
        }
    }

    fn string(&mut self, v: &Value, loc: &str) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            other => {
                self.fail(
                    loc,
                    format!(
                        "input should be a valid string, got {}",
                        python_type_name(other)
                    ),
                );
                None
            }
        }
    }

    fn non_blank(&mut self, s: String, loc: &str, msg: &str) -> Option<String> {
        if s.chars().all(py_isspace) {
            self.fail(loc, msg.to_string());
            None
        } else {
            Some(s)
        }
    }

    fn optional_str_list(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Option<Vec<String>> {
        let loc = Self::loc(prefix, key);
        match obj.get(key) {
            None => Some(Vec::new()),
            Some(Value::Array(items)) => {
                let before = self.errors.len();
                let out: Vec<String> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| self.string(item, &format!("{loc}.{i}")))
                    .collect();
                (self.errors.len() == before).then_some(out)
            }
            Some(other) => {
                self.fail(
                    &loc,
                    format!(
                        "input should be a valid list, got {}",
                        python_type_name(other)
                    ),
                );
                None
            }
        }
    }

    fn optional_object<'a>(
        &mut self,
        obj: &'a Map<String, Value>,
        key: &str,
        prefix: &str,
    ) -> Option<Option<&'a Map<String, Value>>> {
        match obj.get(key) {
            None => Some(None),
            Some(Value::Object(m)) => Some(Some(m)),
            Some(other) => {
                self.fail(
                    &Self::loc(prefix, key),
                    format!("input should be an object, got {}", python_type_name(other)),
                );
                None
            }
        }
    }

    fn provenance(&mut self, p: Option<&Map<String, Value>>) -> Option<Provenance> {
        let Some(p) = p else {
            return Some(Provenance::default());
        };
        let origin = self.enum_field(
            p,
            "origin",
            Origin::Local,
            Origin::parse,
            Origin::ALL.iter().map(|o| o.as_str()),
        );
        let trust = self.enum_field(
            p,
            "trust_class",
            TrustClass::Dev,
            TrustClass::parse,
            TrustClass::ALL.iter().map(|o| o.as_str()),
        );
        let owner = self.enum_field(
            p,
            "owner_class",
            OwnerClass::Personal,
            OwnerClass::parse,
            OwnerClass::ALL.iter().map(|o| o.as_str()),
        );
        Some(Provenance {
            origin: origin?,
            trust_class: trust?,
            owner_class: owner?,
        })
    }

    fn enum_field<T>(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        default: T,
        parse: fn(&str) -> Option<T>,
        allowed: impl Iterator<Item = &'static str>,
    ) -> Option<T> {
        let s = match obj.get(key) {
            None => return Some(default),
            Some(v) => self.string(v, &format!("provenance.{key}"))?,
        };
        let parsed = parse(&s);
        if parsed.is_none() {
            let allowed: Vec<&str> = allowed.collect();
            self.fail(
                &format!("provenance.{key}"),
                format!(
                    "unknown {key}: {}; must be one of {}",
                    pyrepr::str(&s),
                    pyrepr::str_list(&allowed)
                ),
            );
        }
        parsed
    }

    fn tools(&mut self, surfaces: Option<&Map<String, Value>>) -> Option<Vec<ToolSurface>> {
        let Some(surfaces) = surfaces else {
            return Some(Vec::new());
        };
        let items = match surfaces.get("tools") {
            None => return Some(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.fail(
                    "surfaces.tools",
                    format!(
                        "input should be a valid list, got {}",
                        python_type_name(other)
                    ),
                );
                return None;
            }
        };
        let before = self.errors.len();
        let tools: Vec<ToolSurface> = items
            .iter()
            .enumerate()
            .filter_map(|(i, t)| self.tool(t, i))
            .collect();
        (self.errors.len() == before).then_some(tools)
    }

    fn tool(&mut self, t: &Value, i: usize) -> Option<ToolSurface> {
        let prefix = format!("surfaces.tools.{i}");
        let Value::Object(t) = t else {
            self.fail(
                &prefix,
                format!("input should be an object, got {}", python_type_name(t)),
            );
            return None;
        };
        let before = self.errors.len();
        let name = self.required_str(t, "name", &prefix).and_then(|n| {
            if is_dotted(&n) {
                Some(n)
            } else {
                self.fail(
                    &format!("{prefix}.name"),
                    format!(
                        "tool surface name must use dotted namespacing (e.g. 'myapp.tool'): {}",
                        pyrepr::str(&n)
                    ),
                );
                None
            }
        });
        let description = self.required_str(t, "description", &prefix).and_then(|d| {
            self.non_blank(
                d,
                &format!("{prefix}.description"),
                "tool surface description must not be empty",
            )
        });
        // pydantic's alias `schema` wins over the field name `schema_` (populate_by_name).
        let schema = match t.get("schema").or_else(|| t.get("schema_")) {
            None => Some(Map::new()),
            Some(Value::Object(m)) => Some(m.clone()),
            Some(other) => {
                self.fail(
                    &format!("{prefix}.schema"),
                    format!("input should be an object, got {}", python_type_name(other)),
                );
                None
            }
        };
        let version = self
            .optional_str(t, "version", &prefix, TOOL_SURFACE_VERSION)
            .and_then(|v| {
                if v == TOOL_SURFACE_VERSION {
                    Some(v)
                } else {
                    self.fail(
                        &format!("{prefix}.version"),
                        format!(
                            "only 'v1alpha1' is supported for tool surfaces: {}",
                            pyrepr::str(&v)
                        ),
                    );
                    None
                }
            });
        let returns_schema = match t.get("returns_schema") {
            None => Some(Map::new()),
            Some(Value::Object(m)) => Some(m.clone()),
            Some(other) => {
                self.fail(
                    &format!("{prefix}.returns_schema"),
                    format!("input should be an object, got {}", python_type_name(other)),
                );
                None
            }
        };
        let effects = self.optional_str_list(t, "effects", &prefix).map(|e| {
            if t.contains_key("effects") {
                e
            } else {
                vec!["pure".into()]
            }
        });
        let effects = effects.and_then(|e| self.effects(e, &format!("{prefix}.effects")));
        if self.errors.len() != before {
            return None;
        }
        Some(ToolSurface {
            name: name?,
            description: description?,
            schema: schema?,
            version: version?,
            returns_schema: returns_schema?,
            effects: effects?,
        })
    }

    fn effects(&mut self, effects: Vec<String>, loc: &str) -> Option<Vec<String>> {
        if effects.is_empty() {
            return Some(vec!["pure".into()]);
        }
        if let Some(bad) = effects
            .iter()
            .find(|e| !VALID_EFFECTS.contains(&e.as_str()))
        {
            self.fail(
                loc,
                format!(
                    "unknown effect {} (allowed: {})",
                    pyrepr::str(bad),
                    VALID_EFFECTS.join(", ")
                ),
            );
            return None;
        }
        if effects.iter().any(|e| e == "pure") && effects.len() > 1 {
            self.fail(loc, "'pure' cannot be combined with other effects".into());
            return None;
        }
        Some(effects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_names() {
        assert!(is_dotted("myapp.tool"));
        assert!(is_dotted("a_1.b.c"));
        assert!(is_dotted("myapp.tool\n"));
        assert!(!is_dotted("tool"));
        assert!(!is_dotted("MyApp.tool"));
        assert!(!is_dotted("a..b"));
        assert!(!is_dotted("a.b\n\n"));
        assert!(!is_dotted("my-app.tool"));
    }

    #[test]
    fn abi_checked_first() {
        let err = Manifest::parse(br#"{"abi_version": true}"#, "m").unwrap_err();
        assert!(
            matches!(err, Error::Abi { abi_version: Some(ref v), .. } if v == "True"),
            "{err:?}"
        );
        let err = Manifest::parse(
            br#"{"name": "x", "version": "1", "description": "d", "abi_version": 1}"#,
            "m",
        )
        .unwrap_err();
        assert_eq!(err.class(), "ManifestError");
    }
}
