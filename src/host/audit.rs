//! The audit trail: one JSON object per event (load, invoke, host call,
//! denial), appended to a file and/or handed to a callback.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::error::{Error, Result, SandboxKind};
use crate::support::LockExt;

type Callback = Arc<dyn Fn(&Value) + Send + Sync>;

/// Where audit events go. Cloning shares the destination.
#[derive(Clone, Default)]
pub struct Audit {
    file: Option<Arc<Mutex<std::fs::File>>>,
    callback: Option<Callback>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("file", &self.file.is_some())
            .field("callback", &self.callback.is_some())
            .finish()
    }
}

impl Audit {
    /// Appends JSON lines to `path` (created with mode 0600 if missing).
    pub fn to_file(path: &Path) -> Result<Audit> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                Error::sandbox_io(
                    SandboxKind::Audit,
                    format!("audit log {}: {e}", path.display()),
                    e,
                )
            })?;
        Ok(Audit {
            file: Some(Arc::new(Mutex::new(file))),
            callback: None,
        })
    }

    /// Also (or only) hands every event to `f`.
    pub fn with_callback(mut self, f: impl Fn(&Value) + Send + Sync + 'static) -> Audit {
        self.callback = Some(Arc::new(f));
        self
    }

    pub fn is_on(&self) -> bool {
        self.file.is_some() || self.callback.is_some()
    }

    /// Records `event` (an object) with a timestamp `ts` (seconds since the epoch).
    pub fn record(&self, kind: &str, extension: &str, fields: Value) {
        if !self.is_on() {
            return;
        }
        let mut event = Map::new();
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        event.insert("ts".into(), Value::from((ts * 1000.0).round() / 1000.0));
        event.insert("event".into(), kind.into());
        event.insert("extension".into(), extension.into());
        if let Value::Object(f) = fields {
            event.extend(f);
        }
        let event = Value::Object(event);
        if let Some(file) = &self.file {
            let mut line = event.to_string();
            line.push('\n');
            // One write per line on an O_APPEND file: lines never interleave.
            let _ = file.locked().write_all(line.as_bytes());
        }
        if let Some(cb) = &self.callback {
            cb(&event);
        }
    }
}

/// Milliseconds since `start`, to the microsecond, for audit entries.
pub fn millis(start: std::time::Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 1e6).round() / 1e3
}
