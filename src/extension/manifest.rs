//! `nodus-extension.json`: parsing and validation with the reference's exact
//! accept/reject decisions (pydantic v2 models in `manifest.py` of
//! nodus-extension 0.1.2), and its normalized form (`as_dict`).
//!
//! Type rules follow pydantic's lax mode on JSON input, which for these field
//! types is strict: a string field takes only a JSON string, a list field only
//! an array of strings, a dict field only an object, a `null` is never a value.
//! Unknown fields are ignored. `abi_version` is checked before anything else.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::extension::capabilities::Capability;
use crate::extension::provenance::{Origin, OwnerClass, Provenance, TrustClass};
use crate::support::{py_isspace, pyrepr};

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
    pub capabilities: Vec<Capability>,
    pub provenance: Provenance,
    pub tools: Vec<ToolSurface>,
    /// Our extension: the worker's command line, relative to the extension folder,
    /// instead of `python extension.py`. The reference ignores unknown fields.
    pub entry: Option<Vec<String>>,
    /// Our extension: the hosts the extension asks to reach (`"egress":
    /// ["api.example.com:443"]`), as written; checked when the policy is
    /// derived (`sandbox/egress.rs`). The reference ignores unknown fields.
    pub egress: Option<Value>,
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

/// The largest manifest read: an extension's folder is its author's, and a
/// manifest that is a link to `/dev/zero`, or a FIFO, would otherwise grow
/// or stall whoever reads it (a library host, the fork server and its
/// zygote, which read it for every client).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The manifest's bytes: a regular file (links followed, as the reference
/// follows them) of at most [`MAX_MANIFEST_BYTES`]. Its type is checked
/// before it is opened for reading, on an `O_PATH` handle (which neither
/// waits for a FIFO's writer nor runs a device's open), and the file then
/// read is that very inode (reopened through `/proc/self/fd`, so that a
/// regular file opens as usual, a lease holder's break included).
fn read_manifest(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)?;
    let seen = handle.metadata()?;
    let kind = seen.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a folder"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "a socket"
        };
        return Err(std::io::Error::other(format!(
            "it is {what}, not a regular file"
        )));
    }
    let file = match std::fs::File::open(format!("/proc/self/fd/{}", handle.as_raw_fd())) {
        Ok(file) => file,
        // No /proc here: the path again, without waiting, and only if it is
        // still the file checked.
        Err(_) => {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(path)?;
            let now = file.metadata()?;
            if (now.dev(), now.ino()) != (seen.dev(), seen.ino()) {
                return Err(std::io::Error::other("it was replaced while it was read"));
            }
            file
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(std::io::Error::other(format!(
            "it is larger than {} KiB",
            MAX_MANIFEST_BYTES >> 10
        )));
    }
    Ok(bytes)
}

impl Manifest {
    /// Reads and validates `DIR/nodus-extension.json`, as `load_manifest(DIR)` does.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let shown = path.display().to_string();
        let bytes = match read_manifest(&path) {
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
        let raw = parse_json(text).map_err(|e| {
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
        // Our extension field. Only a non-empty list of non-empty strings is an
        // entry: any other value is an unknown field to the reference, which
        // ignores it, so we do too (e.g. `"entry": "main.py"` as metadata), and
        // the extension runs `extension.py` as it would under the reference.
        let entry = raw
            .get("entry")
            .and_then(Value::as_array)
            .filter(|items| {
                !items.is_empty()
                    && items
                        .iter()
                        .all(|i| i.as_str().is_some_and(|s| !s.is_empty()))
            })
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect::<Vec<String>>()
            });
        if !v.errors.is_empty() {
            return Err(v.errors);
        }
        // Everything typed; now the model validator: unknown capabilities.
        let capabilities = capabilities
            .unwrap_or_default()
            .iter()
            .map(|c| c.parse::<Capability>())
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(|e| vec![e])?;
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
            egress: raw.get("egress").cloned(),
        })
    }

    /// The declared capabilities as a set.
    pub fn capability_set(&self) -> BTreeSet<Capability> {
        self.capabilities.iter().copied().collect()
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

/// Deepest nesting of arrays and objects we accept. Python's `json.loads`
/// raises RecursionError somewhere past 990 levels (the exact point depends on
/// its stack); we refuse more than this many, before parsing, so that a deep
/// document can never overflow our stack either.
pub const MAX_DEPTH: usize = 900;

/// Python's limit on the digits of an int literal (`sys.get_int_max_str_digits()`).
const MAX_INT_DIGITS: usize = 4300;

/// `json.loads(text)` as far as strict JSON allows, as a `Value` whose numbers
/// are written as Python writes the objects it made of them (`-0` is `0`,
/// `1e2` is `100.0`, `0.10` is `0.1`), so that `to_json()` is what the
/// reference's `json.dumps(as_dict())` would print.
///
/// Where Python's parser is laxer than JSON we deliberately refuse the whole
/// document: `NaN`/`Infinity` literals, lone surrogate escapes (a Rust string
/// cannot hold them), numbers that overflow to infinity, int literals of more
/// than 4300 digits (Python raises ValueError) and nesting deeper than
/// `MAX_DEPTH` (Python raises RecursionError).
fn parse_json(text: &str) -> std::result::Result<Value, String> {
    let depth = check_depth(text.as_bytes())?;
    let parse = || -> std::result::Result<Value, String> {
        let mut de = serde_json::Deserializer::from_str(text);
        // Bounded by check_depth above instead of serde_json's 128 levels.
        de.disable_recursion_limit();
        let value = serde::Deserialize::deserialize(&mut de).map_err(|e| e.to_string())?;
        de.end().map_err(|e| e.to_string())?;
        Ok(value)
    };
    let mut value = if depth <= SHALLOW {
        parse()?
    } else {
        // The parser recurses once per level (over 2 KiB a level in a debug
        // build): deep documents get a thread whose stack surely holds them,
        // whatever the caller's stack is. Only the touched pages are committed.
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("manifest-parse".into())
                .stack_size(PARSE_STACK)
                .spawn_scoped(s, parse)
                .map_err(|e| format!("cannot start the parser thread: {e}"))?
                .join()
                .map_err(|_| "the JSON parser panicked".to_string())?
        })?
    };
    normalize_numbers(&mut value)?;
    Ok(value)
}

/// Documents up to this depth are parsed on the caller's stack.
const SHALLOW: usize = 64;
/// The stack for parsing deeper documents (`MAX_DEPTH` levels need about 2 MiB in a debug build).
const PARSE_STACK: usize = 32 << 20;

/// Refuses documents nested deeper than `MAX_DEPTH`. Counts brackets outside
/// strings, as far as the text goes: up to the first syntax error this is
/// exactly the depth the parser will reach, so it bounds the parser's recursion.
fn check_depth(bytes: &[u8]) -> std::result::Result<usize, String> {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "nesting deeper than {MAX_DEPTH} levels at byte {i}"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(max)
}

/// Rewrites every number as Python's `json.dumps` would write the int or float
/// `json.loads` made of it. Iterative: values may be `MAX_DEPTH` deep.
fn normalize_numbers(root: &mut Value) -> std::result::Result<(), String> {
    let mut stack = vec![root];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) => {
                if let Some(py) = python_number(n)? {
                    *n = py;
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(map) => stack.extend(map.values_mut()),
            _ => {}
        }
    }
    Ok(())
}

/// The Python form of one JSON number, when it differs from its text.
fn python_number(
    n: &serde_json::Number,
) -> std::result::Result<Option<serde_json::Number>, String> {
    let text = n.to_string();
    let py = if !text.contains(['.', 'e', 'E']) {
        let digits = text.trim_start_matches('-');
        if digits.len() > MAX_INT_DIGITS {
            return Err(format!(
                "integer literal of {} digits exceeds Python's limit of {MAX_INT_DIGITS}",
                digits.len()
            ));
        }
        if digits == "0" {
            "0".to_string()
        } else {
            return Ok(None);
        }
    } else {
        let f: f64 = text.parse().map_err(|e| format!("number {text}: {e}"))?;
        if !f.is_finite() {
            return Err(format!(
                "number {} is out of range (it would be {} in Python)",
                if text.len() > 40 {
                    format!("{}...", &text[..40])
                } else {
                    text.clone()
                },
                pyrepr::float(f)
            ));
        }
        pyrepr::float(f)
    };
    if py == text {
        return Ok(None);
    }
    serde_json::from_str(&py)
        .map(Some)
        .map_err(|e| format!("number {py}: {e}"))
}

/// `type(x).__name__` of what `json.loads` returns.
pub(crate) fn python_type_name(v: &Value) -> &'static str {
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
    fn entry_is_ours_only_when_it_is_a_command_line() {
        let m = |entry: &str| {
            Manifest::parse(
                format!(r#"{{"name": "x", "version": "1", "description": "d", "entry": {entry}}}"#)
                    .as_bytes(),
                "m",
            )
            .map(|m| m.entry)
        };
        assert_eq!(
            m(r#"["bin/w", "-v"]"#).unwrap(),
            Some(vec!["bin/w".to_string(), "-v".to_string()])
        );
        // Anything else is an unknown field, ignored as the reference ignores it.
        for other in [r#""main.py""#, "[]", r#"[""]"#, "[1]", "null", "{}"] {
            assert_eq!(m(other).unwrap(), None, "{other}");
        }
    }

    #[test]
    fn numbers_read_as_python_writes_them() {
        let m = Manifest::parse(
            br#"{"name": "x", "version": "1", "description": "d", "surfaces": {"tools": [
                {"name": "a.b", "description": "d", "schema": {"a": -0, "b": 1E2, "c": 0.10, "d": 1e16, "e": 12345678901234567890123}}]}}"#,
            "m",
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&m.tools[0].schema).unwrap(),
            r#"{"a":0,"b":100.0,"c":0.1,"d":1e+16,"e":12345678901234567890123}"#
        );
        for bad in ["1e400", "-1e999", "NaN", "Infinity", &"9".repeat(4301)] {
            let doc = format!(r#"{{"name": "x", "version": "1", "description": "d", "z": {bad}}}"#);
            let err = Manifest::parse(doc.as_bytes(), "m").unwrap_err();
            assert_eq!(err.class(), "ManifestError", "{bad}");
        }
        let doc = format!(
            r#"{{"name": "x", "version": "1", "description": "d", "z": {}}}"#,
            "9".repeat(4300)
        );
        Manifest::parse(doc.as_bytes(), "m").unwrap();
    }

    #[test]
    fn depth_limit() {
        let doc = |n: usize| {
            format!(
                r#"{{"name": "x", "version": "1", "description": "d", "z": {}{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(Manifest::parse(doc(MAX_DEPTH - 1).as_bytes(), "m").is_ok());
        let err = Manifest::parse(doc(MAX_DEPTH).as_bytes(), "m").unwrap_err();
        assert_eq!(err.class(), "ManifestError");
        // Brackets in strings (after escaped backslashes and quotes) do not count.
        let text = br#"{"a": "[[[{{{\\", "b": "\"[[", "c": [[]]}"#;
        assert!(serde_json::from_slice::<Value>(text).is_ok());
        assert_eq!(check_depth(text), Ok(3));
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
