//! The Rust side of `bench/bench.py`: drives workers through the library (or
//! through a plain pipe, for the floor) and prints one JSON object on stdout.
//!
//!   bench-host steady DIR [--tool T] [--args JSON] [--n N] [--warmup W]
//!       load DIR with `ExtensionRegistry`, time one cold load + first invoke,
//!       then N sequential invokes (per-invoke nanoseconds).
//!   bench-host cold DIR [--rounds K]
//!       K times: load + first invoke + unload, timed inside this process.
//!   bench-host pipe --line JSON [--n N] [--warmup W] [--cwd D] [--env K=V]... -- ARGV...
//!       start ARGV with piped stdio (no library), time N line round trips;
//!       reports the memory of ARGV's process tree too.
//!   bench-host concurrent DIR... [--callers C] [--n N]
//!       load every DIR, then C tasks share N invokes round-robin over them.
//!   bench-host scale DIR... [--counts 1,16,64,256]
//!       load DIRs one by one; at each count: this process's RSS, load time,
//!       time until every worker answered once, the workers' own memory.
//!   bench-host idle DIR...
//!       load every DIR, invoke each once, print `{"ready": N, "pids": [...]}`
//!       and stay idle until stdin closes (bench/warm.py measures the PSS
//!       of this process and its workers from outside meanwhile).
//!
//! Common options: --python PATH, --policy FILE (operator policy),
//! --server SOCKET (warm workers from `ext-runner serve`, whose interpreter
//! and policy they get: not with --policy),
//! --memory-db FILE, --schema enforce|off, --args JSON, --tool NAME; and before
//! the subcommand, --runtime multi:N|current (the host's tokio runtime; default
//! multi:2, as `blocking::ExtensionRegistry` builds it).
//!
//! Build: cargo build --release --example bench-host

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use nodus_extension::policy::OperatorPolicy;
use nodus_extension::SchemaMode;
use nodus_extension::{ExtensionRegistry, HostOptions, Manifest};
use serde_json::{json, Value};

#[derive(Parser)]
struct Cli {
    /// The host's tokio runtime: `multi:N` (N worker threads, as
    /// `blocking::ExtensionRegistry` uses with N = 2) or `current` (one thread).
    #[arg(long, global = true, default_value = "multi:2")]
    runtime: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct HostArgs {
    #[arg(long, default_value = "python3")]
    python: String,
    /// The operator policy (refused with --server: it is the server's).
    #[arg(long, conflicts_with = "server")]
    policy: Option<PathBuf>,
    #[arg(long)]
    memory_db: Option<PathBuf>,
    #[arg(long, default_value = "enforce", value_parser = ["enforce", "off"])]
    schema: String,
    /// Arguments of every invoke (a JSON object).
    #[arg(long, default_value = "{}")]
    args: String,
    /// Tool to invoke (default: the manifest's first tool).
    #[arg(long)]
    tool: Option<String>,
    /// A fork server's socket (`HostOptions::server`): warm workers.
    #[arg(long)]
    server: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    Steady {
        dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        n: usize,
        #[arg(long, default_value_t = 100)]
        warmup: usize,
        #[command(flatten)]
        host: HostArgs,
    },
    Cold {
        dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        #[command(flatten)]
        host: HostArgs,
    },
    Pipe {
        #[arg(long)]
        line: String,
        #[arg(long, default_value_t = 1000)]
        n: usize,
        #[arg(long, default_value_t = 100)]
        warmup: usize,
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// K=V, repeatable; the environment is cleared when any is given.
        #[arg(long = "env")]
        env: Vec<String>,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    Concurrent {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        #[arg(long, default_value_t = 4)]
        callers: usize,
        #[arg(long, default_value_t = 4000)]
        n: usize,
        #[command(flatten)]
        host: HostArgs,
    },
    Scale {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        #[arg(long, default_value = "1,16,64,256")]
        counts: String,
        #[command(flatten)]
        host: HostArgs,
    },
    Idle {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        #[command(flatten)]
        host: HostArgs,
    },
}

fn options(h: &HostArgs) -> HostOptions {
    let operator = match &h.policy {
        Some(p) => OperatorPolicy::load(p).unwrap_or_else(|e| fail(&e.to_string())),
        None => OperatorPolicy::default(),
    };
    let o = HostOptions::default()
        .with_python(h.python.clone())
        .with_operator(operator)
        .with_memory_path(h.memory_db.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("bench-host-{}.sqlite3", std::process::id()))
        }))
        .with_schema_validation(if h.schema == "off" {
            SchemaMode::Off
        } else {
            SchemaMode::Enforce
        });
    match &h.server {
        Some(s) => o.with_server(s.clone()),
        None => o,
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("bench-host: {msg}");
    std::process::exit(1)
}

/// (extension name, tool) of the extension in `dir`.
fn target(dir: &Path, tool: &Option<String>) -> (String, String) {
    let m = Manifest::load(dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
    let tool = tool.clone().unwrap_or_else(|| {
        m.tools
            .first()
            .map(|t| t.name.clone())
            .unwrap_or_else(|| fail("the manifest declares no tool"))
    });
    (m.name, tool)
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((q * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

/// Fields of /proc/PID/status and /proc/PID/smaps_rollup, in KiB.
fn mem_kib(pid: u32) -> Value {
    let field = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let name = status
        .lines()
        .find_map(|l| l.strip_prefix("Name:"))
        .unwrap_or("")
        .trim()
        .to_string();
    json!({
        "pid": pid,
        "name": name,
        "rss": field(&status, "VmRSS:"),
        "rss_anon": field(&status, "RssAnon:"),
        "pss": field(&rollup, "Pss:"),
        "private": field(&rollup, "Private_Clean:") + field(&rollup, "Private_Dirty:"),
        "threads": field(&status, "Threads:"),
    })
}

/// PID and its descendants, parents first.
fn tree(pid: u32) -> Vec<u32> {
    tree_in(&parents(), pid)
}

/// (pid, parent pid) of every process.
fn parents() -> Vec<(u32, u32)> {
    let mut parent_of = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if let Some(pp) = ppid {
                parent_of.push((p, pp));
            }
        }
    }
    parent_of
}

fn tree_in(parent_of: &[(u32, u32)], pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == cur)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

fn self_rss() -> Value {
    mem_kib(std::process::id())
}

fn main() {
    let cli = Cli::parse();
    let out = match cli.cmd {
        Cmd::Pipe {
            line,
            n,
            warmup,
            cwd,
            env,
            argv,
        } => pipe(&line, n, warmup, cwd, &env, &argv),
        cmd => {
            let rt = match cli.runtime.as_str() {
                "current" => tokio::runtime::Builder::new_current_thread(),
                m => {
                    let n = m
                        .strip_prefix("multi:")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| fail("--runtime is current or multi:N"));
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(n);
                    b
                }
            }
            .enable_all()
            .build()
            .unwrap();
            // Workers are started from the runtime's threads (their parent-death
            // signal follows the thread that forked them), as blocking.rs does.
            rt.block_on(async move { tokio::spawn(run(cmd)).await.unwrap() })
        }
    };
    println!("{out}");
}

async fn run(cmd: Cmd) -> Value {
    match cmd {
        Cmd::Steady {
            dir,
            n,
            warmup,
            host,
        } => steady(&dir, n, warmup, &host).await,
        Cmd::Cold { dir, rounds, host } => cold(&dir, rounds, &host).await,
        Cmd::Concurrent {
            dirs,
            callers,
            n,
            host,
        } => concurrent(&dirs, callers, n, &host).await,
        Cmd::Scale { dirs, counts, host } => scale(&dirs, &counts, &host).await,
        Cmd::Idle { dirs, host } => idle(&dirs, &host).await,
        Cmd::Pipe { .. } => unreachable!(),
    }
}

async fn steady(dir: &Path, n: usize, warmup: usize, h: &HostArgs) -> Value {
    let (name, tool) = target(dir, &h.tool);
    let reg = ExtensionRegistry::new(options(h));
    let t = Instant::now();
    reg.load(dir).await.unwrap_or_else(|e| fail(&e.to_string()));
    let load = t.elapsed();
    reg.invoke(&name, &tool, &h.args)
        .await
        .unwrap_or_else(|e| fail(&e.to_string()));
    let first = t.elapsed() - load;
    for _ in 0..warmup {
        reg.invoke(&name, &tool, &h.args).await.unwrap();
    }
    let mut samples = Vec::with_capacity(n);
    let all = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        reg.invoke(&name, &tool, &h.args).await.unwrap();
        samples.push(ns(t.elapsed()));
    }
    let total = all.elapsed();
    let rss = self_rss();
    reg.shutdown().await;
    json!({
        "load_ns": ns(load), "first_ns": ns(first), "samples_ns": samples,
        "total_ns": ns(total), "host": rss,
    })
}

async fn cold(dir: &Path, rounds: usize, h: &HostArgs) -> Value {
    let (name, tool) = target(dir, &h.tool);
    let reg = ExtensionRegistry::new(options(h));
    let mut load_first = Vec::new();
    let mut unload = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        reg.load(dir).await.unwrap_or_else(|e| fail(&e.to_string()));
        reg.invoke(&name, &tool, &h.args)
            .await
            .unwrap_or_else(|e| fail(&e.to_string()));
        load_first.push(ns(t.elapsed()));
        let t = Instant::now();
        reg.unload(&name).await.unwrap();
        unload.push(ns(t.elapsed()));
    }
    json!({"samples_ns": load_first, "unload_ns": unload})
}

fn pipe(
    line: &str,
    n: usize,
    warmup: usize,
    cwd: Option<PathBuf>,
    env: &[String],
    argv: &[String],
) -> Value {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(c) = cwd {
        cmd.current_dir(c);
    }
    if !env.is_empty() {
        cmd.env_clear();
        for kv in env {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            cmd.env(k, v);
        }
    }
    let t = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| fail(&format!("{}: {e}", argv[0])));
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut req = line.as_bytes().to_vec();
    req.push(b'\n');
    let mut answer = String::new();
    let mut round_trip = |answer: &mut String| {
        answer.clear();
        stdin.write_all(&req).unwrap();
        stdin.flush().unwrap();
        stdout.read_line(answer).unwrap();
        if !answer.contains("\"ok\": true") && !answer.contains("\"ok\":true") {
            fail(&format!("bad answer: {answer:?}"));
        }
    };
    round_trip(&mut answer);
    let first = t.elapsed();
    for _ in 0..warmup {
        round_trip(&mut answer);
    }
    let mut samples = Vec::with_capacity(n);
    let all = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        round_trip(&mut answer);
        samples.push(ns(t.elapsed()));
    }
    let total = all.elapsed();
    let procs: Vec<Value> = tree(child.id()).into_iter().map(mem_kib).collect();
    let _ = stdin.write_all(b"{\"op\": \"shutdown\"}\n");
    drop(stdin);
    let _ = child.wait();
    json!({"first_ns": ns(first), "samples_ns": samples, "total_ns": ns(total), "procs": procs})
}

async fn concurrent(dirs: &[PathBuf], callers: usize, n: usize, h: &HostArgs) -> Value {
    let reg = Arc::new(ExtensionRegistry::new(options(h)));
    let mut targets = Vec::new();
    for d in dirs {
        let (name, tool) = target(d, &h.tool);
        reg.load(d).await.unwrap_or_else(|e| fail(&e.to_string()));
        reg.invoke(&name, &tool, &h.args)
            .await
            .unwrap_or_else(|e| fail(&e.to_string()));
        targets.push((name, tool));
    }
    let targets = Arc::new(targets);
    let args = Arc::new(h.args.clone());
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let (reg, targets, args) = (reg.clone(), targets.clone(), args.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                for i in (c..n).step_by(callers) {
                    let (name, tool) = &targets[i % targets.len()];
                    let t = Instant::now();
                    reg.invoke(name, tool, &args).await.unwrap();
                    lat.push(ns(t.elapsed()));
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(n);
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    reg.shutdown().await;
    lat.sort_unstable();
    json!({
        "callers": callers, "extensions": dirs.len(), "invokes": n,
        "elapsed_ns": ns(elapsed), "per_s": n as f64 / elapsed.as_secs_f64(),
        "p50_ns": pct(&lat, 0.5), "p99_ns": pct(&lat, 0.99),
    })
}

async fn idle(dirs: &[PathBuf], h: &HostArgs) -> Value {
    let reg = ExtensionRegistry::new(options(h));
    let mut pids = Vec::new();
    for d in dirs {
        let (name, tool) = target(d, &h.tool);
        let host = reg.load(d).await.unwrap_or_else(|e| fail(&e.to_string()));
        pids.extend(host.worker_pid().await);
        reg.invoke(&name, &tool, &h.args)
            .await
            .unwrap_or_else(|e| fail(&e.to_string()));
    }
    println!("{}", json!({"ready": dirs.len(), "pids": pids}));
    let _ = std::io::stdout().flush();
    // Idle until stdin closes.
    let _ =
        tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
            .await;
    let t = Instant::now();
    reg.shutdown().await;
    json!({"shutdown_ns": ns(t.elapsed())})
}

async fn scale(dirs: &[PathBuf], counts: &str, h: &HostArgs) -> Value {
    let counts: Vec<usize> = counts
        .split(',')
        .map(|c| c.trim().parse().unwrap_or_else(|_| fail("bad --counts")))
        .collect();
    if counts.iter().any(|&c| c > dirs.len()) {
        fail("more counts than extension folders");
    }
    let reg = ExtensionRegistry::new(options(h));
    let targets: Vec<_> = dirs.iter().map(|d| target(d, &h.tool)).collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let base = self_rss();
    let mut points = Vec::new();
    let mut loaded = 0;
    let mut pids = Vec::new();
    for &count in &counts {
        let t = Instant::now();
        let mut load_ns = Vec::new();
        for d in &dirs[loaded..count] {
            let t1 = Instant::now();
            let host = reg.load(d).await.unwrap_or_else(|e| fail(&e.to_string()));
            load_ns.push(ns(t1.elapsed()));
            if let Some(p) = host.worker_pid().await {
                pids.push(p as u32);
            }
        }
        let load = t.elapsed();
        // Ready: every new worker has answered once.
        let ready: Vec<_> = targets[loaded..count]
            .iter()
            .map(|(name, tool)| reg.invoke(name, tool, &h.args))
            .collect();
        for r in ready {
            r.await.unwrap_or_else(|e| fail(&e.to_string()));
        }
        let ready = t.elapsed();
        loaded = count;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let me = self_rss();
        // The workers' side: each supervised pid (the pid-namespace waiter when
        // there is one, else the worker) and what runs under it.
        let mut sup = (0u64, 0u64, 0u64);
        let mut work = (0u64, 0u64, 0u64);
        let all = parents();
        for &p in &pids {
            let t = tree_in(&all, p);
            let m: Vec<Value> = t.iter().map(|&q| mem_kib(q)).collect();
            let (first, rest) = if t.len() > 1 {
                (Some(&m[0]), &m[1..])
            } else {
                (None, &m[..])
            };
            if let Some(f) = first {
                sup.0 += f["rss"].as_u64().unwrap_or(0);
                sup.1 += f["pss"].as_u64().unwrap_or(0);
                sup.2 += f["private"].as_u64().unwrap_or(0);
            }
            for r in rest {
                work.0 += r["rss"].as_u64().unwrap_or(0);
                work.1 += r["pss"].as_u64().unwrap_or(0);
                work.2 += r["private"].as_u64().unwrap_or(0);
            }
        }
        let mut sorted = load_ns.clone();
        sorted.sort_unstable();
        points.push(json!({
            "count": count, "batch": load_ns.len(),
            "load_ns": ns(load), "ready_ns": ns(ready),
            "load_p50_ns": pct(&sorted, 0.5), "load_max_ns": sorted.last().copied().unwrap_or(0),
            "host": me,
            "fds": std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0),
            "waiters_kib": {"rss": sup.0, "pss": sup.1, "private": sup.2},
            "workers_kib": {"rss": work.0, "pss": work.1, "private": work.2},
        }));
    }
    let t = Instant::now();
    reg.shutdown().await;
    json!({"base": base, "points": points, "shutdown_ns": ns(t.elapsed())})
}
