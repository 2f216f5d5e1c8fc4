//! How a host starts and talks to workers: the options every host, the
//! registry and the `run` proxy share.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::extension::validation::SchemaMode;
use crate::host::audit::Audit;
use crate::host::memory::Quotas;
use crate::host::services::{LazyStore, Services, StandaloneServices};
use crate::protocol;
use crate::sandbox::policy::OperatorPolicy;

/// Default per-invoke timeout, as in the reference.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How a host starts and talks to workers.
///
/// New fields may be added, so build it from [`Default`] and the `with_*`
/// methods (or set its public fields on a `let mut`):
///
/// ```
/// use std::time::Duration;
/// use nodus_extension::{HostOptions, RestartPolicy};
///
/// let options = HostOptions::default()
///     .with_timeout(Duration::from_secs(5))
///     .with_workspace("/srv/agent/workspace")
///     .with_restart(RestartPolicy::default().with_max_failures(3));
/// assert_eq!(options.timeout, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HostOptions {
    /// Interpreter for `extension.py` workers: a name looked up on PATH, or a path.
    pub python: OsString,
    /// Per-invoke deadline; the worker is killed when it passes.
    pub timeout: Duration,
    /// Longest line accepted from a worker.
    pub max_line: usize,
    /// The host folder `filesystem.read`/`filesystem.write` grant.
    pub workspace: Option<PathBuf>,
    /// The operator's policy (limits, ports, trust classes, mode, layers).
    pub operator: OperatorPolicy,
    /// Memory store and tool registry for host calls; default: the embedded
    /// store at `memory_path` and no tools (a registry supplies its own).
    pub services: Option<Services>,
    /// Where the embedded memory store lives (default: `memory::default_path()`).
    pub memory_path: Option<PathBuf>,
    /// Quotas of the embedded memory store.
    pub memory_quotas: Quotas,
    /// The audit trail (off unless a file or callback is set).
    pub audit: Audit,
    /// Checking invoke arguments against the tool's schema.
    pub schema_validation: SchemaMode,
    /// When a worker that died is started again.
    pub restart: RestartPolicy,
    /// Debugging: copy each worker's stderr to this process's stderr as it
    /// comes, and have Python workers print the traceback of a tool that
    /// raised (`ext-runner invoke --verbose`). Off by default.
    pub verbose: bool,
    /// A fork server's socket (`ext-runner serve --socket PATH`): Python
    /// workers are forked by it, warm, instead of started here. The server
    /// derives their policy from the manifest and its own operator policy,
    /// and nothing is derived here (`ExtensionHost::policy` is None). An
    /// `operator` policy set beside a server is refused at load; `python`
    /// is not used (the server's interpreter runs the workers; a library
    /// cannot tell a `python` set from the default, where `ext-runner`
    /// refuses `--python` beside `--server`). A server that is gone is a
    /// `SandboxError`. Default: none, every worker starts cold.
    pub server: Option<PathBuf>,
    /// Set by a fork server and its zygote for the policy of the workers
    /// they fork: a zygote stays single-threaded to fork and so cannot
    /// serve a seccomp listener (see `Prepared::new`).
    pub(crate) forked_by_zygote: bool,
}

/// When a worker that ended on its own (crash, timeout kill, bad output) is
/// started again: on the next invoke, after a backoff that doubles with each
/// failure, and not at all once `max_failures` happened within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestartPolicy {
    /// Failures within `window` after which the worker is not started again.
    pub max_failures: u32,
    /// The span `max_failures` is counted over.
    pub window: Duration,
    /// The first backoff; each further failure doubles it.
    pub backoff_base: Duration,
    /// The longest backoff.
    pub backoff_max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_failures: 5,
            window: Duration::from_secs(60),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

crate::support::with_fields!(HostOptions {
    /// Sets [`python`](Self::python).
    with_python => python: impl Into<OsString> as into,
    /// Sets [`timeout`](Self::timeout).
    with_timeout => timeout: Duration,
    /// Sets [`max_line`](Self::max_line).
    with_max_line => max_line: usize,
    /// Sets [`workspace`](Self::workspace).
    with_workspace => workspace: impl Into<PathBuf> as some,
    /// Sets [`operator`](Self::operator).
    with_operator => operator: OperatorPolicy,
    /// Sets [`services`](Self::services).
    with_services => services: Services as some,
    /// Sets [`memory_path`](Self::memory_path).
    with_memory_path => memory_path: impl Into<PathBuf> as some,
    /// Sets [`memory_quotas`](Self::memory_quotas).
    with_memory_quotas => memory_quotas: Quotas,
    /// Sets [`audit`](Self::audit).
    with_audit => audit: Audit,
    /// Sets [`schema_validation`](Self::schema_validation).
    with_schema_validation => schema_validation: SchemaMode,
    /// Sets [`restart`](Self::restart).
    with_restart => restart: RestartPolicy,
    /// Sets [`verbose`](Self::verbose).
    with_verbose => verbose: bool,
    /// Sets [`server`](Self::server).
    with_server => server: impl Into<PathBuf> as some,
});

crate::support::with_fields!(RestartPolicy {
    /// Sets [`max_failures`](Self::max_failures).
    with_max_failures => max_failures: u32,
    /// Sets [`window`](Self::window).
    with_window => window: Duration,
    /// Sets [`backoff_base`](Self::backoff_base).
    with_backoff_base => backoff_base: Duration,
    /// Sets [`backoff_max`](Self::backoff_max).
    with_backoff_max => backoff_max: Duration,
});

impl HostOptions {
    /// The fork server to get workers from, if any.
    pub fn warm(&self) -> Option<crate::host::worker::Warm<'_>> {
        self.server
            .as_deref()
            .map(|socket| crate::host::worker::Warm {
                socket,
                workspace: self.workspace.as_deref(),
                requested: None,
            })
    }

    /// The services host calls go to.
    pub fn services(&self) -> Services {
        self.services.clone().unwrap_or_else(|| {
            let path = self
                .memory_path
                .clone()
                .unwrap_or_else(crate::host::memory::default_path);
            Services(Arc::new(StandaloneServices {
                memory: LazyStore::new(path, self.memory_quotas),
            }))
        })
    }
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            python: "python3".into(),
            timeout: DEFAULT_TIMEOUT,
            max_line: protocol::DEFAULT_MAX_LINE,
            workspace: None,
            operator: OperatorPolicy::default(),
            services: None,
            memory_path: None,
            memory_quotas: Quotas::default(),
            audit: Audit::default(),
            schema_validation: SchemaMode::Enforce,
            restart: RestartPolicy::default(),
            verbose: false,
            server: None,
            forked_by_zygote: false,
        }
    }
}
