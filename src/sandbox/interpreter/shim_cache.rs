//! Remembers which interpreter a launcher script (a pyenv or asdf shim)
//! starts, so that the question — a run of the shim, hundreds of
//! milliseconds — is asked once and not on every start.
//!
//! The answer is keyed by what the shim's answer depends on: the shim itself
//! (path, size, modification time, inode), the current folder, the version
//! managers' environment variables (`PYENV_*`, `ASDF_*`) and the version files
//! they read (`.python-version` and `.tool-versions` from the current folder
//! up, `PYENV_ROOT/version`, `~/.tool-versions`: path and modification time,
//! or their absence). A change of any of them asks the shim again. A cached
//! answer is used only while it is still an executable binary.
//!
//! The cache is a file of the runner's own user: `interpreters.json` in
//! `$NODUS_EXTENSION_CACHE_DIR`, else `$XDG_CACHE_HOME/nodus-extension`, else
//! `~/.cache/nodus-extension`. It is read only when that user owns it and
//! nobody else can write it (the folder is made 0700), and written by
//! rename, so a reader never sees half a file. Any failure to read or write
//! it only means the shim is asked.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Entries kept; the oldest go first.
const MAX_ENTRIES: usize = 32;
const FILE_NAME: &str = "interpreters.json";

#[derive(Serialize, Deserialize, Default)]
struct CacheFile {
    entries: Vec<CacheEntry>,
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    key: String,
    executable: String,
}

/// The answer for `launcher` if one is cached for the same inputs; otherwise
/// `ask` is run and its answer stored.
pub fn executable_for<E>(
    launcher: &Path,
    ask: impl FnOnce() -> Result<PathBuf, E>,
) -> Result<PathBuf, E> {
    let (Some(dir), Some(key)) = (cache_dir(), key(launcher)) else {
        return ask();
    };
    let file = dir.join(FILE_NAME);
    let mut cache = read(&file).unwrap_or_default();
    if let Some(hit) = cache.entries.iter().find(|e| e.key == key) {
        let hit = PathBuf::from(&hit.executable);
        if super::is_elf(&hit) {
            return Ok(hit);
        }
    }
    let answer = ask()?;
    if let Some(executable) = answer.to_str() {
        cache.entries.retain(|e| e.key != key);
        cache.entries.push(CacheEntry {
            key,
            executable: executable.to_owned(),
        });
        let excess = cache.entries.len().saturating_sub(MAX_ENTRIES);
        cache.entries.drain(..excess);
        let _ = write(&dir, &file, &cache);
    }
    Ok(answer)
}

fn cache_dir() -> Option<PathBuf> {
    let from = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from("NODUS_EXTENSION_CACHE_DIR")
        .or_else(|| from("XDG_CACHE_HOME").map(|d| d.join("nodus-extension")))
        .or_else(|| from("HOME").map(|h| h.join(".cache/nodus-extension")))
        .filter(|d| d.is_absolute())
}

/// Everything the shim's answer depends on, as one string; `None` when a
/// part cannot be put in words (a path that is not UTF-8): not cached then.
fn key(launcher: &Path) -> Option<String> {
    let meta = launcher.metadata().ok()?;
    let mut parts = vec![
        format!("launcher={}", launcher.to_str()?),
        format!(
            "stamp={}:{}:{}.{}",
            meta.ino(),
            meta.len(),
            meta.mtime(),
            meta.mtime_nsec()
        ),
    ];
    let cwd = std::env::current_dir().ok()?;
    parts.push(format!("cwd={}", cwd.to_str()?));
    let mut vars: Vec<String> = std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.as_bytes();
            k.starts_with(b"PYENV_") || k.starts_with(b"ASDF_")
        })
        .map(|(k, v)| Some(format!("env {}={}", k.to_str()?, v.to_str()?)))
        .collect::<Option<_>>()?;
    vars.sort();
    parts.extend(vars);
    for file in version_files(launcher, &cwd) {
        let stamp = match file.metadata() {
            Ok(m) => format!("{}.{}", m.mtime(), m.mtime_nsec()),
            Err(_) => "absent".to_owned(),
        };
        parts.push(format!("file {}={stamp}", file.to_str()?));
    }
    Some(parts.join("\n"))
}

/// The files pyenv and asdf read to choose a version.
fn version_files(launcher: &Path, cwd: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in cwd.ancestors() {
        files.push(dir.join(".python-version"));
        files.push(dir.join(".tool-versions"));
    }
    let pyenv_root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| {
            // A pyenv shim lives in PYENV_ROOT/shims.
            let shims = launcher.parent()?;
            (shims.file_name() == Some(OsStr::new("shims")))
                .then(|| shims.parent())?
                .map(Path::to_path_buf)
        });
    if let Some(root) = pyenv_root {
        files.push(root.join("version"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        files.push(Path::new(&home).join(".tool-versions"));
    }
    files
}

fn read(file: &Path) -> Option<CacheFile> {
    let meta = file.symlink_metadata().ok()?;
    let ours = meta.file_type().is_file()
        && meta.uid() == nix::unistd::geteuid().as_raw()
        && meta.mode() & 0o022 == 0;
    if !ours {
        return None;
    }
    serde_json::from_slice(&std::fs::read(file).ok()?).ok()
}

fn write(dir: &Path, file: &Path, cache: &CacheFile) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(".{FILE_NAME}.{}", std::process::id()));
    let body = serde_json::to_vec_pretty(cache).map_err(std::io::Error::other)?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(&mut out, &body)?;
    drop(out);
    std::fs::rename(&tmp, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
