//! Which program runs a worker, and which host folders it needs to run.
//!
//! `python3` on PATH is often not the interpreter itself: version managers
//! (pyenv, asdf) put a shell script there. We resolve to the real ELF binary
//! once, so that what we sandbox is the interpreter and not a shell, and we
//! derive the interpreter's own prefix (and its venv, if any) precisely, so the
//! policy can open exactly those folders and nothing else of, say, a home.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result, SandboxKind};

mod shim_cache;

/// A resolved worker interpreter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreter {
    /// The path we exec: kept as given when it is a symlink into a venv, since
    /// Python finds its venv from the path it was started by.
    pub exec_path: PathBuf,
    /// The canonical ELF file behind it.
    pub real_path: PathBuf,
    /// Folders the interpreter reads its standard library and packages from.
    pub prefixes: Vec<PathBuf>,
}

impl Interpreter {
    /// Resolves `name_or_path` (a bare name is looked up on PATH).
    pub fn resolve(name_or_path: &OsStr) -> Result<Interpreter> {
        let given = Path::new(name_or_path);
        let found = if given.components().count() == 1 && !given.is_absolute() {
            which(given).ok_or_else(|| {
                Error::sandbox(
                    SandboxKind::Interpreter,
                    format!(
                        "interpreter {} not found on PATH; set HostOptions::python to the path of a python3",
                        given.display()
                    ),
                )
            })?
        } else {
            std::path::absolute(given).map_err(|e| {
                Error::sandbox_io(
                    SandboxKind::Interpreter,
                    format!("interpreter {}: {e}", given.display()),
                    e,
                )
            })?
        };
        let real = std::fs::canonicalize(&found).map_err(|e| {
            Error::sandbox_io(
                SandboxKind::Interpreter,
                format!("interpreter {}: {e}", found.display()),
                e,
            )
        })?;
        let (exec_path, real_path) = if is_elf(&real) {
            (found, real)
        } else {
            // A launcher script: ask it which interpreter it starts (once:
            // the answer is cached while the shim and its inputs stay).
            let asked = shim_cache::executable_for(&found, || ask_executable(&found))?;
            let real = std::fs::canonicalize(&asked).map_err(|e| {
                Error::sandbox_io(
                    SandboxKind::Interpreter,
                    format!("interpreter {}: {e}", asked.display()),
                    e,
                )
            })?;
            if !is_elf(&real) {
                return Err(Error::sandbox(SandboxKind::Interpreter, format!(
                    "{} is a script that starts {}, which is not an executable binary either; set HostOptions::python to the real interpreter",
                    found.display(),
                    real.display()
                )));
            }
            (asked, real)
        };
        let prefixes = prefixes(&exec_path, &real_path);
        Ok(Interpreter {
            exec_path,
            real_path,
            prefixes,
        })
    }

    /// A native worker: the program itself, no prefix beyond its own folder.
    pub fn native(path: &Path) -> Interpreter {
        Interpreter {
            exec_path: path.to_path_buf(),
            real_path: path.to_path_buf(),
            prefixes: Vec::new(),
        }
    }
}

fn which(name: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

fn ask_executable(launcher: &Path) -> Result<PathBuf> {
    let out = Command::new(launcher)
        .args(["-c", "import sys; sys.stdout.write(sys.executable)"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| {
            Error::sandbox_io(
                SandboxKind::Interpreter,
                format!("cannot run interpreter {}: {e}", launcher.display()),
                e,
            )
        })?;
    let exe = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || exe.is_empty() {
        return Err(Error::sandbox(
            SandboxKind::Interpreter,
            format!(
                "interpreter {} did not report sys.executable ({}): {}",
                launcher.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(PathBuf::from(exe))
}

/// The interpreter's installation prefix (`PREFIX/bin/pythonX.Y` with
/// `PREFIX/lib/pythonX.Y/`), and the venv root when started from a venv.
fn prefixes(exec_path: &Path, real_path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let grandparent = |p: &Path| p.parent().and_then(Path::parent).map(Path::to_path_buf);
    if let Some(prefix) = grandparent(real_path) {
        let has_stdlib = std::fs::read_dir(prefix.join("lib"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("python"))
            })
            .unwrap_or(false);
        if has_stdlib {
            out.push(prefix);
        }
    }
    if let Some(venv) = grandparent(exec_path) {
        if venv.join("pyvenv.cfg").is_file() && !out.contains(&venv) {
            out.push(venv);
        }
    }
    out
}

/// Folders a dynamic loader must live in to be granted execute.
const SYSTEM_LIB_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/lib32",
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib32",
];

/// The ELF interpreter (dynamic loader) named in `program`'s PT_INTERP header.
pub fn elf_loader(program: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::FileExt;
    // Three small reads (header, program headers, PT_INTERP), not the whole
    // binary: an interpreter is megabytes and this runs on every start.
    let file = std::fs::File::open(program).ok()?;
    let read_at = |off: usize, len: usize| -> Option<Vec<u8>> {
        let mut buf = vec![0; len.min(1 << 16)];
        file.read_exact_at(&mut buf, off as u64).ok()?;
        Some(buf)
    };
    let header = read_at(0, 64)?;
    let u16_at = |d: &[u8], o: usize| Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?));
    let u64_at = |d: &[u8], o: usize| Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?));
    // 64-bit little-endian ELF only (what this runner supports).
    if header.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (phoff, phentsize, phnum) = (
        u64_at(&header, 0x20)? as usize,
        u16_at(&header, 0x36)? as usize,
        u16_at(&header, 0x38)? as usize,
    );
    let phdrs = read_at(phoff, phentsize.checked_mul(phnum)?)?;
    (0..phnum).find_map(|i| {
        let ph = i * phentsize;
        if u32::from_le_bytes(phdrs.get(ph..ph + 4)?.try_into().ok()?) != 3 {
            return None; // not PT_INTERP
        }
        let (off, size) = (
            u64_at(&phdrs, ph + 8)? as usize,
            u64_at(&phdrs, ph + 32)? as usize,
        );
        let raw = read_at(off, size.min(4096))?;
        let path = std::str::from_utf8(raw.split(|&b| b == 0).next()?).ok()?;
        // The program is the extension's: its loader is trusted only where the
        // system keeps loaders, or it could name any host file to be granted.
        let loader = std::fs::canonicalize(path).ok()?;
        SYSTEM_LIB_DIRS
            .iter()
            .any(|d| loader.starts_with(d))
            .then_some(loader)
    })
}
