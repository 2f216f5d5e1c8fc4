//! An extension with everything decided and nothing started: the stage the
//! host and the `run` proxy both begin from.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result, SandboxKind};
use crate::extension::manifest::Manifest;
use crate::host::options::HostOptions;
use crate::host::worker::Entry;
use crate::sandbox::interpreter::Interpreter;
use crate::sandbox::policy::{self, OperatorPolicy, Policy};
use crate::sandbox::probe::Probe;

/// An extension with everything decided and nothing started: its folder,
/// manifest, entry program and derived policy.
///
/// (A host whose workers come from a fork server holds a `Hosted::Served`
/// instead: the server derives each worker's policy.)
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
        // here (a launcher script costs a start of its own), and nothing is
        // derived here: the server derives the worker's policy.
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

/// An extension as a library host holds it while it is loaded.
// One per loaded extension: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Hosted {
    /// Its workers are started and confined here, under the policy derived
    /// here.
    Here(Prepared),
    /// A fork server starts and confines its workers (`HostOptions::server`):
    /// the server derives each worker's policy from the manifest and its own
    /// operator policy and sends what the confinement gave up with the start,
    /// so nothing is derived here (as for `ext-runner run --server`): only
    /// the folder and the manifest, checked, and the server's socket.
    Served {
        dir: PathBuf,
        manifest: Manifest,
        socket: PathBuf,
    },
}

impl Hosted {
    pub(crate) fn new(dir: &Path, manifest: Manifest, options: &HostOptions) -> Result<Hosted> {
        match &options.server {
            Some(socket) => {
                let (dir, _entry, _workspace) = Prepared::checked(dir, &manifest, options)?;
                Ok(Hosted::Served {
                    dir,
                    manifest,
                    socket: socket.clone(),
                })
            }
            None => Prepared::with_manifest(dir, manifest, options).map(Hosted::Here),
        }
    }

    /// Refuses what a host may not set beside a fork server: the server's
    /// operator policy is the one its workers get, so one set here would be
    /// a guarantee silently not kept. (Called before the server is asked.)
    pub(crate) fn served_options(options: &HostOptions) -> Result<()> {
        if options.server.is_some() && options.operator != OperatorPolicy::default() {
            return Err(Error::sandbox(
                SandboxKind::OperatorPolicy,
                "an operator policy belongs to the fork server (`ext-runner serve --policy FILE`), which derives every worker's policy from its own: leave HostOptions::operator unset when HostOptions::server is set",
            ));
        }
        Ok(())
    }

    pub(crate) fn dir(&self) -> &Path {
        match self {
            Hosted::Here(p) => &p.dir,
            Hosted::Served { dir, .. } => dir,
        }
    }

    pub(crate) fn manifest(&self) -> &Manifest {
        match self {
            Hosted::Here(p) => &p.manifest,
            Hosted::Served { manifest, .. } => manifest,
        }
    }

    /// The policy its workers are confined by, where it is derived here.
    pub(crate) fn policy(&self) -> Option<&Policy> {
        match self {
            Hosted::Here(p) => Some(&p.policy),
            Hosted::Served { .. } => None,
        }
    }
}
