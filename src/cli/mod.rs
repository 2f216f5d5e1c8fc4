//! The `ext-runner` command line. Exit codes: 0 success, 2 usage, then one per
//! error class (see `Error::exit_code`). Errors are one `error:` line on stderr.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::error::Result;
use crate::extension::manifest::Manifest;
use crate::extension::validation::SchemaMode;
use crate::host::audit::Audit;
use crate::host::{self, ExtensionHost, HostOptions, Prepared};
use crate::protocol;
use crate::sandbox::policy::OperatorPolicy;
use crate::sandbox::probe::Probe;

#[derive(Parser, Debug)]
#[command(
    name = "ext-runner",
    version,
    about = "Run Nodus extensions confined to their declared capabilities"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate DIR/nodus-extension.json and print the normalized manifest.
    Validate { dir: PathBuf },
    /// Print the host's describe() view of the extension in DIR.
    Describe { dir: PathBuf },
    /// Load DIR, invoke TOOL once with ARGS_JSON, print the JSON result.
    Invoke {
        dir: PathBuf,
        tool: String,
        #[arg(default_value = "{}")]
        args_json: String,
        #[command(flatten)]
        opts: RunOpts,
    },
    /// Serve the worker protocol on stdin/stdout (a drop-in for `python extension.py`).
    Run {
        dir: PathBuf,
        #[command(flatten)]
        opts: RunOpts,
    },
    /// Print the confinement DIR's worker would get, without starting anything.
    Policy {
        dir: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        opts: RunOpts,
    },
    /// Print what this kernel offers: Landlock ABI, seccomp, namespaces, cgroups.
    Probe {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct RunOpts {
    /// Interpreter for extension.py (default: python3 on PATH, resolved to the real binary).
    #[arg(long, value_name = "PATH", default_value = "python3")]
    pub python: OsString,
    /// Per-invoke timeout in seconds; the worker is killed when it passes.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = positive_seconds)]
    pub timeout: f64,
    /// Host folder that filesystem.read / filesystem.write grant.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// The operator's policy file.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Append an audit trail (JSON lines) to FILE.
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,
    /// The embedded memory store (default: $XDG_STATE_HOME/nodus-extension/memory.sqlite3).
    #[arg(long, value_name = "FILE")]
    pub memory_db: Option<PathBuf>,
    /// Check invoke arguments against the tool's schema: enforce, warn or off
    /// (`run` always passes lines through unchecked, as the reference does).
    #[arg(long, value_name = "MODE", default_value = "enforce", value_parser = ["enforce", "warn", "off"])]
    pub schema: String,
    /// Longest protocol line accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = protocol::DEFAULT_MAX_LINE)]
    pub max_line: usize,
}

impl RunOpts {
    fn host_options(&self) -> Result<HostOptions> {
        let operator = match &self.policy {
            Some(p) => OperatorPolicy::load(p)?,
            None => OperatorPolicy::default(),
        };
        let audit = match &self.audit {
            Some(p) => Audit::to_file(p)?,
            None => Audit::default(),
        };
        Ok(HostOptions {
            operator,
            audit,
            memory_path: self.memory_db.clone(),
            memory_quotas: Default::default(),
            services: None,
            restart: Default::default(),
            schema_validation: match self.schema.as_str() {
                "warn" => SchemaMode::Warn,
                "off" => SchemaMode::Off,
                _ => SchemaMode::Enforce,
            },
            python: self.python.clone(),
            timeout: Duration::from_secs_f64(self.timeout),
            max_line: self.max_line,
            workspace: self.workspace.clone(),
        })
    }
}

/// A usage error (exit 2) unless the value is a positive, finite number of seconds.
fn positive_seconds(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(v),
        _ => Err(format!("must be a positive number of seconds, got '{s}'")),
    }
}

/// Runs one command; returns the process exit code.
pub async fn main(cli: Cli) -> i32 {
    match run(cli).await {
        Ok(()) => 0,
        Err(e) => {
            // It may quote the worker (a tool's error, its stderr): escaped.
            let msg = crate::support::terminal::escape(&e.to_string().replace('\n', " "));
            say(&format!("error: {} ({})", msg, e.class()));
            e.exit_code()
        }
    }
}

/// One line on stderr, best effort: a full or closed stderr must not hang or
/// panic the runner (the reference host never reads it).
fn say(line: &str) {
    crate::host::proxy::write_stderr(
        format!("{line}\n").as_bytes(),
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
    for d in &policy.degraded {
        say(&format!("warning: sandbox degraded: {d}"));
    }
}

/// As the reference's CLI prints JSON (`json.dumps(v, indent=2)`): ASCII
/// only, so a manifest's text cannot reach the terminal raw.
fn print_json(v: &serde_json::Value) {
    out(&format!("{}\n", protocol::dumps_pretty(v)));
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Validate { dir } => print_json(&Manifest::load(&dir)?.to_json()),
        Command::Describe { dir } => print_json(&host::describe(&Manifest::load(&dir)?, false)),
        Command::Invoke {
            dir,
            tool,
            args_json,
            opts,
        } => {
            let host = ExtensionHost::load(&dir, opts.host_options()?).await?;
            warn_degraded(host.policy());
            let result = host.invoke(&tool, &args_json).await;
            host.unload().await;
            out(&format!(
                "{}\n",
                String::from_utf8(protocol::dumps(&result?)).expect("dumps writes ASCII")
            ));
        }
        Command::Run { dir, opts } => {
            let options = opts.host_options()?;
            let ext = Prepared::new(&dir, &options)?;
            warn_degraded(&ext.policy);
            crate::host::proxy::run(&ext, &options).await?;
        }
        Command::Policy { dir, json, opts } => {
            let ext = Prepared::new(&dir, &opts.host_options()?)?;
            if json {
                print_json(&serde_json::to_value(&ext.policy).expect("policies serialize"));
            } else {
                out(&ext.policy.render());
            }
        }
        Command::Probe { json } => {
            let probe = serde_json::to_value(Probe::current()).expect("probes serialize");
            if json {
                print_json(&probe);
            } else {
                for (k, v) in probe.as_object().into_iter().flatten() {
                    out(&format!("{k:<22} {v}\n"));
                }
            }
        }
    }
    Ok(())
}
