//! The `ext-runner` command line. Exit codes: 0 success, 2 usage, then one per
//! error class (see `Error::exit_code`). Errors are an `error: … (Class)` line
//! on stderr, any further lines of the message indented below it.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::error::Error;
use crate::extension::manifest::Manifest;
use crate::extension::validation::SchemaMode;
use crate::host::audit::Audit;
use crate::host::{self, ExtensionHost, HostOptions, Prepared};
use crate::protocol;
use crate::sandbox::policy::OperatorPolicy;
use crate::sandbox::probe::Probe;

pub(crate) mod relay;
mod scaffold;

#[derive(Parser, Debug)]
#[command(
    name = "ext-runner",
    version,
    about = "Run Nodus extensions confined to their declared capabilities",
    long_about = "Run Nodus extensions confined to their declared capabilities.\n\n\
        An extension is a folder with a nodus-extension.json manifest and an extension.py \
        worker; the capabilities the manifest declares are enforced by the kernel \
        (Landlock, seccomp, namespaces, resource limits). Start with `ext-runner new DIR`; \
        the manifest is described in docs/extensions.md.",
    after_help = "Exit codes: 0 success, 2 usage, 3 ManifestError, 4 AbiError, 5 CapabilityError, \
        6 SandboxError, 7 InvokeError, 8 TimeoutError, 9 RegistryError."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a working extension in DIR (a manifest and an extension.py with one tool).
    New {
        /// The folder to create (it must not exist, or be empty).
        dir: PathBuf,
        /// The extension's name (default: derived from DIR's name); its tool is NAME.hello.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Validate DIR/nodus-extension.json and print the normalized manifest.
    Validate {
        /// The extension folder (the one holding nodus-extension.json).
        dir: PathBuf,
    },
    /// Print the host's describe() view of the extension in DIR.
    Describe {
        /// The extension folder (the one holding nodus-extension.json).
        dir: PathBuf,
    },
    /// Load DIR, invoke TOOL once with ARGS_JSON, print the JSON result.
    Invoke {
        /// The extension folder (the one holding nodus-extension.json).
        dir: PathBuf,
        /// The tool to invoke, as declared in the manifest (e.g. myapp.greet).
        tool: String,
        /// The tool's arguments: a JSON object, or `-` to read it from stdin.
        #[arg(default_value = "{}")]
        args_json: String,
        /// Show the worker's stderr as it comes, and the traceback of a tool that raised.
        #[arg(short, long)]
        verbose: bool,
        /// Check ARGS_JSON against the tool's schema: enforce (refuse), warn, or off.
        #[arg(long, value_name = "MODE", default_value = "enforce", value_parser = ["enforce", "warn", "off"])]
        schema: String,
        #[command(flatten)]
        worker: WorkerOpts,
        #[command(flatten)]
        sandbox: SandboxOpts,
    },
    /// Serve the worker protocol on stdin/stdout (a drop-in for `python extension.py`).
    ///
    /// Lines pass through unchecked, as under the reference host; the worker's
    /// stderr is forwarded to ours.
    Run {
        /// The extension folder (the one holding nodus-extension.json).
        dir: PathBuf,
        #[command(flatten)]
        worker: WorkerOpts,
        #[command(flatten)]
        sandbox: SandboxOpts,
    },
    /// Print the confinement DIR's worker would get, without starting anything.
    Policy {
        /// The extension folder (the one holding nodus-extension.json).
        dir: PathBuf,
        /// Print the policy as JSON (the machine-readable form).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sandbox: SandboxOpts,
    },
    /// Start a fork server: Python workers forked warm, confined as cold ones.
    ///
    /// `invoke --server PATH`, `run --server PATH` and the library's
    /// `HostOptions::server` get their workers from it. It derives each
    /// worker's policy from the extension's manifest and its own --policy
    /// (a client's policy never applies). Serves until killed.
    Serve {
        /// The unix socket to listen on; its folder is made 0700 (or must be
        /// yours alone), the socket 0600.
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
        /// Interpreter for extension.py (default: python3 on PATH, resolved to the real binary).
        #[arg(long, value_name = "PATH", default_value = "python3")]
        python: OsString,
        /// The operator's policy file, for every worker this server starts.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Append the egress proxies' audit trail (JSON lines) to FILE.
        #[arg(long, value_name = "FILE")]
        audit: Option<PathBuf>,
        /// Stop when stdin closes (for a supervisor that holds a pipe to it),
        /// killing every worker it started.
        #[arg(long)]
        until_stdin_closes: bool,
        /// Keep up to N workers started ahead, one per extension (and
        /// workspace) already asked for: the next request for it gets one
        /// that is confined and booted, and a new one is started behind it
        /// (docs/warm.md, "Spare workers"). 0: none.
        #[arg(long, value_name = "N", default_value_t = 0)]
        spares: usize,
        /// Let the kernel merge identical memory pages of the warm workers
        /// (KSM, which an operator turns on with `echo 1 >
        /// /sys/kernel/mm/ksm/run`): about 2.3 MiB less per idle worker, at the
        /// cost of a timing side channel between processes whose pages are
        /// merged (docs/security.md, "Merged pages"). Off by default.
        #[arg(long)]
        merge_pages: bool,
    },
    /// Print what this kernel offers: Landlock ABI, seccomp, namespaces, cgroups.
    Probe {
        /// Print the probe as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (e.g. `ext-runner completions bash > /etc/bash_completion.d/ext-runner`).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the manual page, in roff (e.g. `ext-runner man | man -l -`).
    Man,
}

/// What decides the confinement: `invoke`, `run` and `policy` take these.
#[derive(Args, Debug, Clone)]
pub struct SandboxOpts {
    /// Interpreter for extension.py (default: python3 on PATH, resolved to the real binary).
    #[arg(long, value_name = "PATH", default_value = "python3")]
    pub python: OsString,
    /// Host folder that filesystem.read / filesystem.write grant.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// The operator's policy file (trust classes, TCP ports, limits, mode).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

/// How a started worker is driven: `invoke` and `run` take these.
#[derive(Args, Debug, Clone)]
pub struct WorkerOpts {
    /// Per-invoke timeout in seconds; the worker is killed when it passes.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = positive_seconds)]
    pub timeout: f64,
    /// Append an audit trail (JSON lines) to FILE.
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,
    /// The embedded memory store (default: $XDG_STATE_HOME/nodus-extension/memory.sqlite3).
    #[arg(long, value_name = "FILE")]
    pub memory_db: Option<PathBuf>,
    /// Longest protocol line accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = protocol::DEFAULT_MAX_LINE)]
    pub max_line: usize,
    /// Get the worker from the fork server at PATH (`ext-runner serve`): a
    /// warm start, confined by the server's policy (--python and --policy
    /// are the server's, so they are refused here).
    #[arg(long, value_name = "PATH")]
    pub server: Option<PathBuf>,
}

impl SandboxOpts {
    fn host_options(&self) -> Result<HostOptions, Failure> {
        let operator = match &self.policy {
            Some(p) => OperatorPolicy::load(p)?,
            None => OperatorPolicy::default(),
        };
        Ok(HostOptions {
            operator,
            python: self.python.clone(),
            workspace: self.workspace.clone(),
            ..HostOptions::default()
        })
    }
}

impl WorkerOpts {
    fn apply(&self, options: &mut HostOptions) -> Result<(), Failure> {
        if let Some(p) = &self.audit {
            options.audit = Audit::to_file(p)?;
        }
        options.memory_path = self.memory_db.clone();
        options.timeout = Duration::from_secs_f64(self.timeout);
        options.max_line = self.max_line;
        if let Some(socket) = &self.server {
            if options.operator != OperatorPolicy::default() || options.python != "python3" {
                return Err(Failure::Usage(
                    "--policy and --python belong to the fork server (`ext-runner serve`), not to --server's clients".into(),
                ));
            }
            options.server = Some(socket.clone());
        }
        Ok(())
    }
}

/// A usage error (exit 2) unless the value is a positive, finite number of seconds.
fn positive_seconds(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(v),
        _ => Err(format!("must be a positive number of seconds, got '{s}'")),
    }
}

/// Why a command failed: the library's error (its class's exit code), or a
/// usage error of ours (exit 2, as clap's own).
#[derive(Debug)]
enum Failure {
    Usage(String),
    Error(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Error(e)
    }
}

/// Runs one command; returns the process exit code.
pub async fn main(cli: Cli) -> i32 {
    match run(cli).await {
        Ok(()) => 0,
        Err(failure) => report(failure),
    }
}

/// The runtime `ext-runner` and `ext-relay` run on: one thread for the
/// protocol (workers are forked on the launcher thread, `launch::spawn`,
/// which lives as long as the process). Its failure is said, with the exit
/// code to end with.
pub fn runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the runtime: {e} (SandboxError)");
            6
        })
}

/// Prints why a command failed; returns its exit code.
fn report(failure: Failure) -> i32 {
    match failure {
        Failure::Usage(msg) => {
            say(&format!(
                "error: {msg}\n\nFor more information, try '--help'."
            ));
            2
        }
        Failure::Error(e) => {
            let e = in_cli_terms(e);
            // It may quote the worker (a tool's error, its stderr): escaped,
            // line breaks kept.
            say(&error_text(
                &crate::support::terminal::escape(&e.to_string()),
                e.class(),
            ));
            e.exit_code()
        }
    }
}

/// `error: FIRST LINE (Class)`, the message's other lines indented below it
/// (a worker's stderr tail keeps its line breaks).
fn error_text(msg: &str, class: &str) -> String {
    let mut lines = msg.lines();
    let mut text = format!(
        "error: {} ({class})",
        lines.next().unwrap_or_default().trim_end()
    );
    for l in lines {
        text.push_str("\n  ");
        text.push_str(l.trim_end());
    }
    text
}

/// The library names the option to set; here that is a flag.
fn in_cli_terms(e: Error) -> Error {
    const FLAGS: [(&str, &str); 2] = [
        ("set HostOptions::workspace", "pass --workspace DIR"),
        ("set HostOptions::python to", "pass --python with"),
    ];
    match e {
        Error::Sandbox {
            kind,
            mut msg,
            source,
        } => {
            for (library, cli) in FLAGS {
                msg = msg.replace(library, cli);
            }
            Error::Sandbox { kind, msg, source }
        }
        other => other,
    }
}

/// Lines on stderr, best effort: a full or closed stderr must not hang or
/// panic the runner (the reference host never reads it).
fn say(text: &str) {
    crate::host::proxy::write_stderr(
        format!("{text}\n").as_bytes(),
        std::time::Duration::from_secs(2),
    );
}

/// One result on stdout; a reader that went away (`| head`) is not a crash.
fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush());
}

/// Best-effort mode says what it gave up, once per launch.
fn warn_degraded(policy: &crate::sandbox::policy::Policy) {
    say_degraded(&policy.degraded);
}

fn say_degraded(degraded: &[String]) {
    if !degraded.is_empty() {
        say(&format!(
            "warning: sandbox degraded: {}",
            degraded.join("; ")
        ));
    }
}

/// As the reference's CLI prints JSON (`json.dumps(v, indent=2)`): ASCII
/// only, so a manifest's text cannot reach the terminal raw.
fn print_json(v: &serde_json::Value) {
    out(&format!("{}\n", protocol::dumps_pretty(v)));
}

/// ARGS_JSON as the tool gets it: `-` reads stdin; anything that is not
/// JSON is a usage error, before an extension is loaded.
fn tool_args(args_json: &str) -> Result<serde_json::Value, Failure> {
    let text = if args_json == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::Usage(format!("cannot read ARGS_JSON from stdin: {e}")))?;
        text
    } else {
        args_json.to_string()
    };
    if text.trim().is_empty() {
        return Ok(serde_json::json!({}));
    }
    protocol::loads(text.trim().as_bytes()).ok_or_else(|| {
        let why = serde_json::from_str::<serde_json::Value>(text.trim())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        Failure::Usage(format!(
            "ARGS_JSON is not valid JSON ({why}): {}; quote it for the shell, e.g. '{{\"name\": \"Ada\"}}'",
            short(text.trim())
        ))
    })
}

fn short(text: &str) -> String {
    let mut s: String = text.chars().take(60).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    format!("{s:?}")
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::New { dir, name } => {
            let made = scaffold::create(&dir, name.as_deref()).map_err(Failure::Usage)?;
            out(&made);
        }
        Command::Validate { dir } => print_json(&Manifest::load(&dir)?.to_json()),
        Command::Describe { dir } => print_json(&host::describe(&Manifest::load(&dir)?, false)),
        Command::Invoke {
            dir,
            tool,
            args_json,
            verbose,
            schema,
            worker,
            sandbox,
        } => {
            let args = tool_args(&args_json)?;
            let mut options = sandbox.host_options()?;
            worker.apply(&mut options)?;
            options.verbose = verbose;
            options.schema_validation = match schema.as_str() {
                "warn" => SchemaMode::Warn,
                "off" => SchemaMode::Off,
                _ => SchemaMode::Enforce,
            };
            let host = ExtensionHost::load(&dir, options).await?;
            say_degraded(&host.degraded());
            let result = host.invoke_value(&tool, args).await;
            // The answer is printed as soon as it is there, then the worker
            // is stopped (its exit, the cgroup's and scratch folder's
            // removal): a caller reading stdout need not wait for that, and
            // the process still exits only once the worker is gone.
            if let Ok(value) = &result {
                out(&format!(
                    "{}\n",
                    String::from_utf8(protocol::dumps(value)).expect("dumps writes ASCII")
                ));
            }
            host.unload().await;
            result?;
        }
        Command::Run {
            dir,
            worker,
            sandbox,
        } => {
            let mut options = sandbox.host_options()?;
            worker.apply(&mut options)?;
            if let Some(socket) = options.server.clone() {
                // The server derives and confines: nothing is derived here.
                relay::run_warm(&dir, &socket, &worker, &options).await?;
                return Ok(());
            }
            let ext = Prepared::new(&dir, &options)?;
            crate::sandbox::launch::precompile(&ext.policy);
            warn_degraded(&ext.policy);
            crate::host::proxy::run(&ext, &options).await?;
        }
        Command::Policy { dir, json, sandbox } => {
            let ext = Prepared::new(&dir, &sandbox.host_options()?)?;
            if json {
                print_json(&serde_json::to_value(&ext.policy).expect("policies serialize"));
            } else {
                out(&ext.policy.render());
            }
        }
        Command::Serve {
            socket,
            python,
            policy,
            audit,
            until_stdin_closes,
            spares,
            merge_pages,
        } => {
            if until_stdin_closes {
                std::thread::spawn(|| {
                    let mut sink = Vec::new();
                    let _ = std::io::stdin().read_to_end(&mut sink);
                    std::process::exit(0);
                });
            }
            let operator = match &policy {
                Some(p) => OperatorPolicy::load(p)?,
                None => OperatorPolicy::default(),
            };
            let audit = match &audit {
                Some(p) => Audit::to_file(p)?,
                None => Audit::default(),
            };
            let options = crate::host::server::ServeOptions {
                socket,
                python,
                operator,
                audit,
                spares,
                merge_pages,
            };
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || crate::host::server::serve(options, runtime))
                .await
                .map_err(|e| Failure::Usage(format!("the server stopped: {e}")))??;
        }
        Command::Probe { json } => {
            let facts = Probe::current();
            let verdict = crate::sandbox::policy::strict_verdict(&facts);
            let mut probe = serde_json::to_value(&facts).expect("probes serialize");
            if json {
                probe["verdict"] = serde_json::Value::String(verdict);
                print_json(&probe);
            } else {
                for (k, v) in probe.as_object().into_iter().flatten() {
                    out(&format!("{k:<22} {v}\n"));
                }
                out(&format!("{verdict}\n"));
            }
        }
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ext-runner", &mut buf);
            out(&String::from_utf8_lossy(&buf));
        }
        Command::Man => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut buf)
                .map_err(|e| Failure::Usage(format!("cannot render the manual page: {e}")))?;
            out(&String::from_utf8_lossy(&buf));
        }
    }
    Ok(())
}
