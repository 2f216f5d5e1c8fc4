//! An extension with everything decided and nothing started: the stage the
//! host and the `run` proxy both begin from.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result, SandboxKind};
use crate::extension::manifest::Manifest;
use crate::host::options::HostOptions;
use crate::host::worker::Entry;
use crate::sandbox::interpreter::Interpreter;
use crate::sandbox::policy::{self, Policy};
use crate::sandbox::probe::Probe;

/// An extension with everything decided and nothing started: its folder,
/// manifest, entry program and derived policy.
pub struct Prepared {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub entry: Entry,
    pub policy: Policy,
}

impl Prepared {
    /// Reads the manifest in `dir`, resolves the entry and derives the policy.
    pub fn new(dir: &Path, options: &HostOptions) -> Result<Prepared> {
        Self::with_manifest(dir, Manifest::load(dir)?, options)
    }

    pub fn with_manifest(
        dir: &Path,
        manifest: Manifest,
        options: &HostOptions,
    ) -> Result<Prepared> {
        let (dir, entry, workspace) = Self::checked(dir, &manifest, options)?;
        let program = entry.program_facts(&dir);
        let probe = Probe::cached();
        // A zygote forks its workers single-threaded and cannot serve a
        // seccomp listener, so their policy is derived as on a kernel
        // without one: where there is no mount namespace, chmod and utime
        // stay refused in the workspace too, and the report says why.
        let without_listener;
        let probe = if options.forked_by_zygote && probe.seccomp_listener {
            without_listener = Probe {
                seccomp_listener: false,
                seccomp_listener_missing: Some(
                    "a fork server's workers: its zygote stays single-threaded to fork them and cannot serve a seccomp listener (start the worker without --server to have them supervised)".into(),
                ),
                ..probe.clone()
            };
            &without_listener
        } else {
            probe
        };
        // A root runner's worker runs as a uid of its own where it can.
        let identity = if probe.root {
            crate::sandbox::probe::identity_facts(&program, &dir, workspace.as_deref())
        } else {
            Default::default()
        };
        let policy = policy::derive(&policy::Inputs {
            manifest: &manifest,
            extension_dir: &dir,
            workspace: workspace.as_deref(),
            operator: &options.operator,
            program: &program,
            identity: &identity,
            probe,
        })?;
        Ok(Prepared {
            dir,
            manifest,
            entry,
            policy,
        })
    }

    /// The extension's folder made absolute, its entry program resolved and the
    /// workspace canonicalized: what deriving a policy starts from, and all a
    /// fork server's client checks before it asks (the server derives the
    /// policy, from its own operator policy).
    pub fn checked(
        dir: &Path,
        manifest: &Manifest,
        options: &HostOptions,
    ) -> Result<(PathBuf, Entry, Option<PathBuf>)> {
        let dir = std::path::absolute(dir)
            .map_err(|e| Error::manifest(format!("{}: {e}", dir.display()), None))?;
        // With a fork server the interpreter is the server's: not resolved
        // here (a launcher script costs a start of its own); a policy derived
        // here is the host's view only, the server derives the worker's.
        let entry = Entry::for_extension(&dir, manifest, || match options.server {
            Some(_) => Ok(Interpreter::native(std::path::Path::new(&options.python))),
            None => Interpreter::resolve(&options.python),
        })?;
        let workspace = match &options.workspace {
            Some(w) => Some(std::fs::canonicalize(w).map_err(|e| {
                Error::sandbox_io(
                    SandboxKind::Workspace,
                    format!("workspace {}: {e}", w.display()),
                    e,
                )
            })?),
            None => None,
        };
        Ok((dir, entry, workspace))
    }
}
