//! Shared helpers for the integration tests: interpreters, the `ext-runner`
//! binary, throwaway extension folders, and process checks.
//!
//! Every test binary includes this file (`mod common;`) and uses a different
//! part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nodus_extension::HostOptions;

/// The Python interpreter for workers: `$NODUS_TEST_PYTHON`, else what
/// `python3` on PATH reports as `sys.executable` (asked once: PATH's python3
/// may be a slow version-manager shim).
pub fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        if let Some(p) = std::env::var_os("NODUS_TEST_PYTHON").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let out = Command::new("python3")
            .args(["-c", "import sys;print(sys.executable)"])
            .stdin(Stdio::null())
            .output()
            .expect("tests need python3 on PATH (or NODUS_TEST_PYTHON=/path/to/python3)");
        assert!(out.status.success(), "python3 -c failed: {out:?}");
        let exe = String::from_utf8(out.stdout).expect("utf-8 path");
        let exe = exe.trim();
        assert!(!exe.is_empty(), "python3 did not report sys.executable");
        PathBuf::from(exe)
    })
}

/// The `ext-runner` binary built for these tests.
pub fn ext_runner() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ext-runner"))
}

/// The crate root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The reference package's venv interpreter, if the venv exists.
pub fn ref_venv() -> Option<PathBuf> {
    let py = root().join(".venv-ref/bin/python");
    py.exists().then_some(py)
}

/// The reference venv's interpreter. When it is missing: under CI a panic,
/// elsewhere a "SKIP:" note on stderr and `None` (the test returns early).
pub fn require_ref_venv() -> Option<PathBuf> {
    if let Some(py) = ref_venv() {
        return Some(py);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "the reference venv {} is missing; CI must install the reference: see .ci/run",
            root().join(".venv-ref").display()
        );
    }
    eprintln!(
        "SKIP: reference venv {} not found; create it with `python3 -m venv .venv-ref && .venv-ref/bin/pip install nodus-extension==0.1.2`",
        root().join(".venv-ref").display()
    );
    None
}

/// A folder under the system temporary folder, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        TempDir::new_in(&std::env::temp_dir(), label)
    }

    /// A folder under `parent` (which must exist), removed on drop.
    pub fn new_in(parent: &Path, label: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for _ in 0..100 {
            let path = parent.join(format!(
                "nodus-test-{label}-{}-{}-{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => return TempDir(path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", path.display()),
            }
        }
        panic!("cannot create a unique temporary folder");
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `self/name`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes an extension folder: `nodus-extension.json` (the given text, or
/// nothing when `None`) and `extension.py` (nothing when `None`).
pub fn write_ext(manifest: Option<&str>, source: Option<&str>) -> TempDir {
    let dir = TempDir::new("ext");
    if let Some(m) = manifest {
        std::fs::write(dir.join("nodus-extension.json"), m).expect("write manifest");
    }
    if let Some(s) = source {
        std::fs::write(dir.join("extension.py"), s).expect("write extension.py");
    }
    dir
}

/// A manifest named `name` declaring `caps`, with one tool per entry of `tools`.
pub fn manifest_json(name: &str, caps: &[&str], tools: &[&str]) -> String {
    serde_json::json!({
        "name": name,
        "version": "0.1.0",
        "description": "integration test extension",
        "abi_version": "1",
        "capabilities": caps,
        "surfaces": {"tools": tools.iter().map(|t| serde_json::json!({
            "name": t, "description": "a test tool"
        })).collect::<Vec<_>>()},
    })
    .to_string()
}

/// An extension folder with a generated manifest and the given source.
pub fn ext(name: &str, caps: &[&str], tools: &[&str], source: &str) -> TempDir {
    write_ext(Some(&manifest_json(name, caps, tools)), Some(source))
}

/// Host options with the test interpreter and a short default timeout.
pub fn options() -> HostOptions {
    HostOptions::default()
        .with_python(python().as_os_str().to_os_string())
        .with_timeout(Duration::from_secs(20))
}

/// Whether `pid` is a live process. A zombie (exited, not yet reaped) counts
/// as gone: it runs no code and holds nothing but its exit status.
pub fn pid_alive(pid: i32) -> bool {
    procfs::alive(pid)
}

/// Polls until `pid` is gone or `within` passes; returns whether it is gone.
pub fn wait_gone(pid: i32, within: Duration) -> bool {
    let end = Instant::now() + within;
    loop {
        if !pid_alive(pid) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls until `path` holds at least `lines` lines or `within` passes; returns its text.
pub fn wait_lines(path: &Path, lines: usize, within: Duration) -> String {
    let end = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= lines || Instant::now() >= end {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Python string literal of `s` (for pasting paths into worker sources).
pub fn py_str(s: impl AsRef<std::ffi::OsStr>) -> String {
    let s = s.as_ref().to_str().expect("utf-8 path");
    serde_json::to_string(s).expect("string serializes")
}

/// Polls until a descendant of `pid` named `comm` appears; returns all descendants then.
pub fn wait_descendant(pid: i32, comm: &str, within: Duration) -> Option<Vec<(i32, String)>> {
    let end = Instant::now() + within;
    loop {
        let d: Vec<(i32, String)> = procfs::descendants(pid)
            .into_iter()
            .map(|p| (p.pid, p.comm))
            .collect();
        if d.iter().any(|(_, c)| c == comm) {
            return Some(d);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// This process's peak resident memory, in KiB (`VmHWM`).
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Whether `py` can import the reference package (then it is not a shim test interpreter).
pub fn has_nodus_extension(py: &Path) -> bool {
    Command::new(py)
        .args(["-c", "import nodus_extension"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
pub mod egress;
pub mod envs;
pub mod procfs;
pub mod sandbox;

/// A bundled example's binary, `target/<profile>/examples/NAME`, beside the
/// test binary's folder (cargo test builds examples; `cargo test --test X`
/// alone does not, hence the message).
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        p.is_file(),
        "build the example first: cargo build --example {name} ({})",
        p.display()
    );
    p
}

/// The failcall example, which makes named system calls fail.
pub fn failcall() -> PathBuf {
    example_bin("failcall")
}
