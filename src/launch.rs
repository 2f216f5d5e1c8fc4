//! Starting a worker process: everything decided (argv, environment, folders,
//! the prepared confinement) goes in; a running child comes out. The part that
//! runs inside the child between fork and exec is `child.rs`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::child::{self, Confinement};
use crate::error::{Error, Result};

/// A worker's private scratch folder (its TMPDIR and HOME); removed on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates a fresh 0700 folder under the host's temporary folder.
    pub fn create() -> Result<ScratchDir> {
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let name = format!("nodus-ext-{}", &crate::protocol::new_request_id()[..8]);
            let path = base.join(name);
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(ScratchDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(Error::sandbox(format!(
                        "cannot create a scratch folder in {}: {e}",
                        base.display()
                    )))
                }
            }
        }
        Err(Error::sandbox(format!(
            "cannot create a unique scratch folder in {}",
            base.display()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

use std::os::unix::fs::DirBuilderExt;

/// Everything needed to start one worker.
#[derive(Debug)]
pub struct LaunchPlan {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// The worker's whole environment: nothing of the host's leaks in.
    pub env: Vec<(OsString, OsString)>,
    pub confinement: Confinement,
}

/// Forks and execs the worker with piped stdio; the confinement is applied in the child.
pub fn spawn(plan: LaunchPlan) -> Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(&plan.program);
    cmd.args(&plan.args)
        .current_dir(&plan.cwd)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    child::install(&mut cmd, plan.confinement);
    cmd.spawn().map_err(|e| {
        Error::sandbox(format!(
            "failed to start worker {}: {e}",
            plan.program.display()
        ))
    })
}
