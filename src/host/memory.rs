//! The embedded default memory store: SQLite, one namespace per extension
//! (`services::Caller::memory_namespace`: its name and install folder), with
//! quotas. Used when the host brings no memory backend of its own.
//!
//! Durability: every put is its own transaction in WAL mode with
//! `synchronous=FULL`; once a put is acknowledged it survives the runner being
//! killed (and the machine losing power, as far as the disk keeps its word).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::error::{Error, Result, SandboxKind};
use crate::support::LockExt;

/// Storage of the `memory.*` host calls. Implement it to bring your own.
pub trait MemoryBackend: Send + Sync {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Value>>;
    fn put(&self, namespace: &str, key: &str, value: &Value) -> Result<()>;
    /// Whether the key existed.
    fn delete(&self, namespace: &str, key: &str) -> Result<bool>;
    fn keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>>;
}

/// Size limits of the default store. Build it from [`Default`] and the
/// `with_*` methods: new limits may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quotas {
    /// Longest key, in bytes of UTF-8.
    pub max_key_bytes: usize,
    /// Largest value, in bytes of its JSON text.
    pub max_value_bytes: usize,
    /// One extension's keys and values together, in bytes.
    pub max_total_bytes: u64,
}

crate::support::with_fields!(Quotas {
    /// Sets [`max_key_bytes`](Self::max_key_bytes).
    with_max_key_bytes => max_key_bytes: usize,
    /// Sets [`max_value_bytes`](Self::max_value_bytes).
    with_max_value_bytes => max_value_bytes: usize,
    /// Sets [`max_total_bytes`](Self::max_total_bytes).
    with_max_total_bytes => max_total_bytes: u64,
});

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
            max_total_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The default store's location: `$XDG_STATE_HOME/nodus-extension/memory.sqlite3`,
/// else `~/.local/state/nodus-extension/memory.sqlite3`.
pub fn default_path() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join(".local/state")
        });
    state.join("nodus-extension").join("memory.sqlite3")
}

/// SQLite-backed memory.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    quotas: Quotas,
    path: PathBuf,
}

/// Bytes stored in `namespace` (keys and values).
fn usage(tx: &rusqlite::Transaction, namespace: &str) -> rusqlite::Result<i64> {
    tx.query_row(
        "SELECT bytes FROM usage WHERE namespace = ?1",
        params![namespace],
        |r| r.get(0),
    )
    .optional()
    .map(|b| b.unwrap_or(0))
}

/// Schema version 1: the per-namespace `usage` table, kept by triggers on
/// every write of any writer (an operator's `UPDATE` included), so a put
/// checks its quota without summing the namespace. Counted from the rows once,
/// when a store is first opened by this version.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= 1 {
        return Ok(());
    }
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE IF NOT EXISTS usage (
             namespace TEXT PRIMARY KEY,
             bytes INTEGER NOT NULL
         ) WITHOUT ROWID;
         DELETE FROM usage;
         INSERT INTO usage
             SELECT namespace, SUM(LENGTH(CAST(key AS BLOB)) + LENGTH(CAST(value AS BLOB)))
             FROM memory GROUP BY namespace;
         CREATE TRIGGER IF NOT EXISTS memory_added AFTER INSERT ON memory BEGIN
             INSERT INTO usage (namespace, bytes) VALUES (NEW.namespace, 0)
                 ON CONFLICT (namespace) DO NOTHING;
             UPDATE usage SET bytes = bytes + LENGTH(CAST(NEW.key AS BLOB)) + LENGTH(CAST(NEW.value AS BLOB))
                 WHERE namespace = NEW.namespace;
         END;
         CREATE TRIGGER IF NOT EXISTS memory_removed AFTER DELETE ON memory BEGIN
             UPDATE usage SET bytes = bytes - LENGTH(CAST(OLD.key AS BLOB)) - LENGTH(CAST(OLD.value AS BLOB))
                 WHERE namespace = OLD.namespace;
         END;
         CREATE TRIGGER IF NOT EXISTS memory_changed AFTER UPDATE ON memory BEGIN
             UPDATE usage SET bytes = bytes - LENGTH(CAST(OLD.key AS BLOB)) - LENGTH(CAST(OLD.value AS BLOB))
                 WHERE namespace = OLD.namespace;
             INSERT INTO usage (namespace, bytes) VALUES (NEW.namespace, 0)
                 ON CONFLICT (namespace) DO NOTHING;
             UPDATE usage SET bytes = bytes + LENGTH(CAST(NEW.key AS BLOB)) + LENGTH(CAST(NEW.value AS BLOB))
                 WHERE namespace = NEW.namespace;
         END;
         PRAGMA user_version = 1;
         COMMIT;",
    )
}

/// Bytes of one entry (0 if absent).
fn entry_bytes(tx: &rusqlite::Transaction, namespace: &str, key: &str) -> rusqlite::Result<i64> {
    tx.query_row(
        "SELECT LENGTH(CAST(key AS BLOB)) + LENGTH(CAST(value AS BLOB)) FROM memory WHERE namespace = ?1 AND key = ?2",
        params![namespace, key],
        |r| r.get(0),
    )
    .optional()
    .map(|b| b.unwrap_or(0))
}

/// Takes group and other access away from a file of ours.
fn private(file: &std::fs::File) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let Ok(m) = file.metadata() {
        if m.uid() == nix::unistd::getuid().as_raw() && m.mode() & 0o077 != 0 {
            let _ = file.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o700));
        }
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::sandbox_io(
        SandboxKind::Memory,
        format!("memory store {}: {e}", path.display()),
        e,
    )
}

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| {
        Error::sandbox(
            SandboxKind::Memory,
            format!("memory store {}: {e}", path.display()),
        )
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`.
    /// Folders it creates are 0700 and a new database file 0600 (SQLite gives
    /// its `-wal`/`-shm` files the same mode): the values are the extensions'
    /// private data, not for other users of the machine.
    pub fn open(path: &Path, quotas: Quotas) -> Result<SqliteStore> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_err(dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        // A store made before it was private (or by hand) is made so, with
        // its WAL files, when it is ours.
        private(&file);
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            if let Ok(f) = std::fs::File::open(&side) {
                private(&f);
            }
        }
        let conn = Connection::open(path).map_err(db_err(path))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS memory (
                 namespace TEXT NOT NULL,
                 key TEXT NOT NULL,
                 value TEXT NOT NULL,
                 PRIMARY KEY (namespace, key)
             ) WITHOUT ROWID;
             PRAGMA recursive_triggers=ON;",
        )
        .map_err(db_err(path))?;
        migrate(&conn).map_err(db_err(path))?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            quotas,
            path: path.to_path_buf(),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.locked()
    }
}

impl MemoryBackend for SqliteStore {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Value>> {
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT value FROM memory WHERE namespace = ?1 AND key = ?2",
                params![namespace, key],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err(&self.path))?;
        // Read back as the worker's line was read (`protocol::loads`): a
        // value may hold the NaN and Infinity Python's json writes, which
        // serde_json alone refuses.
        text.map(|t| {
            crate::protocol::loads(t.as_bytes()).ok_or_else(|| {
                Error::sandbox(
                    SandboxKind::Memory,
                    format!("memory store: corrupt value for '{key}': not JSON"),
                )
            })
        })
        .transpose()
    }

    fn put(&self, namespace: &str, key: &str, value: &Value) -> Result<()> {
        let q = self.quotas;
        if key.is_empty() || key.len() > q.max_key_bytes {
            return Err(Error::Invoke {
                msg: format!(
                    "memory key must be 1 to {} bytes, got {}",
                    q.max_key_bytes,
                    key.len()
                ),
                tool_name: None,
            });
        }
        let text = value.to_string();
        if text.len() > q.max_value_bytes {
            return Err(Error::Invoke {
                msg: format!(
                    "memory value of {} bytes is over the {} byte quota per value",
                    text.len(),
                    q.max_value_bytes
                ),
                tool_name: None,
            });
        }
        let mut conn = self.conn();
        // IMMEDIATE: the write lock from the start, so two hosts sharing the
        // store cannot both pass the quota check on the same usage.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err(&self.path))?;
        let used = usage(&tx, namespace).map_err(db_err(&self.path))?;
        let old = entry_bytes(&tx, namespace, key).map_err(db_err(&self.path))?;
        let total = used.max(old) - old + (key.len() + text.len()) as i64;
        if total > i64::try_from(q.max_total_bytes).unwrap_or(i64::MAX) {
            return Err(Error::Invoke {
                msg: format!("memory quota exceeded: {total} bytes would be stored, the quota per extension is {}", q.max_total_bytes),
                tool_name: None,
            });
        }
        // An upsert, not INSERT OR REPLACE: the usage triggers see an update.
        tx.execute(
            "INSERT INTO memory (namespace, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
            params![namespace, key, text],
        )
        .map_err(db_err(&self.path))?;
        tx.commit().map_err(db_err(&self.path))
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM memory WHERE namespace = ?1 AND key = ?2",
                params![namespace, key],
            )
            .map_err(db_err(&self.path))?;
        Ok(n > 0)
    }

    fn keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT key FROM memory WHERE namespace = ?1 AND substr(key, 1, length(?2)) = ?2 ORDER BY key")
            .map_err(db_err(&self.path))?;
        let rows = stmt
            .query_map(params![namespace, prefix], |r| r.get(0))
            .map_err(db_err(&self.path))?;
        rows.collect::<std::result::Result<Vec<String>, _>>()
            .map_err(db_err(&self.path))
    }
}
