//! The compatibility suite: real extensions, declaring the capabilities they
//! honestly need, must work under `ext-runner` as they work unsandboxed.
//!
//! Each scenario is an extension folder of its own (`extension.py` with
//! module-level functions, so that multiprocessing's spawn and forkserver
//! children can import it, and `run_loop()` under `if __name__ ==
//! "__main__"`), whose tool `sec.run` calls `scenario()`; the scenario asserts
//! what it needs itself and returns a small summary. Every scenario runs:
//!
//! 1. unsandboxed (`python extension.py`, speaking the protocol on stdin and
//!    stdout as a plain host would start it): it must pass, or the scenario
//!    itself is broken and the test fails, whatever the sandbox does;
//! 2. under `ext-runner run`, as root and as uid 65534.
//!
//! A scenario that fails only under the sandbox is a failure of the sandbox:
//! the test fails, unless the scenario is listed in its `known` field with the
//! reason; then it prints `KNOWN FAILURE <scenario> [<who>]: <reason>` with
//! what it got (on the real stderr, which the test harness does not capture),
//! and the test passes. A known failure that passes fails the test, so the
//! list never hides a fix.
//!
//! 3. for comparison only, under a plain bubblewrap profile (read-only `/`,
//!    private `/proc`, `/dev` and `/tmp`, pid, ipc and uts namespaces, and a
//!    network namespace unless the scenario declares `network.outbound`), as
//!    the issue that asked for this suite measured it: a bubblewrap failure
//!    fails nothing, it is printed (`COMPARE <scenario> [<who>]: …`) and
//!    written to `target/compat-comparison/`; without `bwrap` on PATH the
//!    column says `SKIP` (scripts/test installs bubblewrap as root).
//!
//! Real libraries (numpy, requests, psutil) come from `.venv-compat`, a venv
//! of `/usr/bin/python3` that `scripts/test` installs from PyPI; it is used
//! by both identities. Without it those scenarios print `SKIP:` (and fail
//! under CI).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::sandbox::*;
use common::TempDir;
use serde_json::{json, Value};

/// Where a scenario is expected to fail under the sandbox, and why.
#[derive(Clone, Copy)]
#[allow(dead_code)] // one identity only: not needed by the current list
enum Known {
    /// Expected to pass for both identities.
    No,
    Both(&'static str),
    Root(&'static str),
    Nobody(&'static str),
    /// Expected to fail where the runner, as this identity, has no memory
    /// cgroup (RLIMIT_AS is then the memory bound); to pass where it has one.
    WithoutMemoryCgroup(&'static str),
}

impl Known {
    fn reason(self, who: Who) -> Option<&'static str> {
        match (self, who) {
            (Known::Both(r), _) | (Known::Root(r), Who::Root) | (Known::Nobody(r), Who::Nobody) => {
                Some(r)
            }
            (Known::WithoutMemoryCgroup(r), _) if probe(who)["memory_cgroup"].is_null() => Some(r),
            _ => None,
        }
    }
}

/// Which interpreter a scenario needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Python {
    /// The suite's interpreter for the identity (`Who::python`).
    Stdlib,
    /// `.venv-compat`, with the real libraries.
    Venv,
}

struct Scenario {
    name: &'static str,
    /// The capabilities it declares (what it honestly needs).
    caps: &'static [&'static str],
    python: Python,
    /// Module-level Python defining `scenario()`. `@HTTP_PORT@` is replaced
    /// by the port of an HTTP responder on 127.0.0.1 that the test runs.
    code: &'static str,
    /// An operator policy for the sandboxed run.
    policy: Option<&'static str>,
    /// Environment of the runner (sandboxed) and of the interpreter (unsandboxed).
    env: &'static [(&'static str, &'static str)],
    /// Extra environment of the unsandboxed run only (what the policy sets).
    plain_env: &'static [(&'static str, &'static str)],
    known: Known,
}

const BASE: Scenario = Scenario {
    name: "",
    caps: &[],
    python: Python::Stdlib,
    code: "",
    policy: None,
    env: &[],
    plain_env: &[],
    known: Known::No,
};

/// What one run gave: the scenario's summary, or why it failed.
type Outcome = Result<Value, String>;

// ---------------------------------------------------------------- runs

/// The worker shim, copied where every user can read it (the unsandboxed
/// runs import `nodus_extension.worker` from it, as ext-runner's workers do).
fn shim_dir() -> &'static Path {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = world_dir("compat-shim");
        let pkg = d.join("nodus_extension");
        std::fs::create_dir(&pkg).expect("shim folder");
        chmod(&pkg, 0o755);
        let src = common::root().join("python/shim");
        for f in ["nodus_extension/__init__.py", "nodus_extension/worker.py"] {
            std::fs::copy(src.join(f), d.join(f)).expect("copy shim");
            chmod(&d.join(f), 0o644);
        }
        std::fs::copy(
            src.join("nodus_extension_host.py"),
            d.join("nodus_extension_host.py"),
        )
        .expect("copy shim");
        chmod(&d.join("nodus_extension_host.py"), 0o644);
        d
    })
    .path()
}

/// `.venv-compat/bin/python` when it has the libraries and both identities
/// can use it; otherwise why not.
fn venv() -> Result<PathBuf, String> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| {
        let py = common::root().join(".venv-compat/bin/python");
        if !py.exists() {
            return Err(format!(
                "{} missing: scripts/test installs it (python3 -m venv .venv-compat && .venv-compat/bin/pip install -r tests/compat-requirements.txt)",
                py.display()
            ));
        }
        for who in Who::BOTH.into_iter().filter(|w| w.available()) {
            let out = who
                .command(&py)
                .args(["-c", "import numpy, requests, psutil"])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("{}: {e}", py.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} cannot import the libraries as {}: {}",
                    py.display(),
                    who.label(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(py)
    })
    .clone()
}

/// A line on the real stderr: the test harness captures `eprintln!` of
/// passing tests, and a known failure must be seen.
fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// The extension folder of a scenario (world-readable).
fn write_extension(s: &Scenario, code: &str) -> TempDir {
    let dir = world_dir("compat-ext");
    let name = format!("compat.{}", s.name.replace('_', "-"));
    let mut caps = s.caps.to_vec();
    caps.push("tool.invoke");
    std::fs::write(
        dir.join("nodus-extension.json"),
        common::manifest_json(&name, &caps, &["sec.run"]),
    )
    .expect("manifest");
    let source = format!(
        "import json, os, sys\n{code}\n\n\
         if __name__ == \"__main__\":\n    \
         from nodus_extension.worker import register_tool, run_loop\n    \
         register_tool(\"sec.run\", lambda args: scenario())\n    \
         run_loop()\n"
    );
    std::fs::write(dir.join("extension.py"), source).expect("extension.py");
    for f in ["nodus-extension.json", "extension.py"] {
        chmod(&dir.join(f), 0o644);
    }
    dir
}

/// Runs the extension unsandboxed: `python extension.py` as `who`, as a
/// plain host starts it.
fn run_plain(who: Who, python: &Path, ext: &Path, env: &[(&str, &str)]) -> Outcome {
    let mut cmd = who.command(python);
    cmd.arg(ext.join("extension.py"))
        .current_dir(ext)
        .env("PYTHONPATH", shim_dir())
        .envs(env.iter().copied());
    drive(cmd)
}

/// Runs the extension under `ext-runner run` as `who`.
fn run_sandboxed(who: Who, python: &Path, ext: &Path, s: &Scenario) -> Outcome {
    let keep = world_dir("compat-policy");
    let mut cmd = who.command(runner(who));
    cmd.arg("run")
        .arg(ext)
        .arg("--python")
        .arg(python)
        .args(["--timeout", "40"]);
    if let Some(p) = s.policy {
        let f = keep.join("policy.json");
        std::fs::write(&f, p).expect("policy file");
        chmod(&f, 0o644);
        cmd.arg("--policy").arg(&f);
    }
    cmd.envs(s.env.iter().copied());
    drive(cmd)
}

/// `bwrap` on PATH, once: the comparison column needs it.
fn bwrap() -> Option<PathBuf> {
    static BWRAP: OnceLock<Option<PathBuf>> = OnceLock::new();
    BWRAP
        .get_or_init(|| {
            let found = std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("bwrap"))
                    .find(|f| f.is_file())
            });
            if found.is_none() {
                say("SKIP: the bubblewrap comparison column: no bwrap on PATH (apt-get install bubblewrap; scripts/test installs it as root)");
            }
            found
        })
        .clone()
}

/// Runs the extension under a plain bubblewrap profile as `who`: `/`
/// read-only, a private `/proc`, `/dev` and `/tmp` (the extension and the
/// shim, which live in the host's /tmp, bound back read-only), pid, ipc and
/// uts namespaces, and a network namespace unless `network.outbound` is
/// declared. None without bwrap.
fn run_bwrap(
    who: Who,
    python: &Path,
    ext: &Path,
    s: &Scenario,
    env: &[(&str, &str)],
) -> Option<Outcome> {
    let bwrap = bwrap()?;
    let mut cmd = who.command(bwrap);
    cmd.args([
        "--ro-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
    ]);
    for d in [shim_dir(), ext] {
        cmd.arg("--ro-bind").arg(d).arg(d);
    }
    cmd.args([
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
    ]);
    if !s.caps.contains(&"network.outbound") {
        cmd.arg("--unshare-net");
    }
    cmd.arg("--chdir")
        .arg(ext)
        .arg("--")
        .arg(python)
        .arg(ext.join("extension.py"))
        .current_dir(ext)
        .env("PYTHONPATH", shim_dir())
        .envs(env.iter().copied());
    Some(drive(cmd))
}

/// One line of the comparison: printed, and kept in
/// `target/compat-comparison/<scenario>-<who>.txt`.
fn compare(s: &Scenario, who: Who, boxed: &Outcome, bwrap: Option<&Outcome>) {
    let word = |o: &Outcome| match o {
        Ok(_) => "ok".to_string(),
        Err(e) => format!(
            "FAILED ({})",
            e.lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(160)
                .collect::<String>()
        ),
    };
    let line = format!(
        "COMPARE {} [{}]: unsandboxed ok | ext-runner {}{} | bubblewrap {}",
        s.name,
        who.label(),
        word(boxed),
        if boxed.is_err() && s.known.reason(who).is_some() {
            " (known)"
        } else {
            ""
        },
        bwrap.map_or_else(|| "SKIP (no bwrap)".to_string(), word)
    );
    say(&line);
    let dir = common::root().join("target/compat-comparison");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join(format!("{}-{}.txt", s.name, who.label())),
        line + "\n",
    );
}

/// Starts `cmd` (a worker, or a runner serving one), invokes `sec.run` once,
/// then closes its stdin and waits for it: the tool's result, or the error
/// with the last of what the process wrote.
fn drive(mut cmd: std::process::Command) -> Outcome {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = writeln!(
        stdin,
        "{}",
        json!({"id": "compat-1", "op": "invoke", "name": "sec.run", "args": {}})
    );
    let _ = stdin.flush();
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            let _ = tx.send(line);
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + Duration::from_secs(60);
    let mut answer = None;
    let mut seen = String::new();
    while answer.is_none() {
        let left = end.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        seen.push_str(&line);
        seen.push('\n');
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v["id"] == json!("compat-1") {
                answer = Some(v);
            }
        }
    }
    let _ = writeln!(stdin, "{}", json!({"op": "shutdown"}));
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(20);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    let err = err_reader.join().unwrap_or_default();
    match answer {
        Some(v) if v["ok"] == json!(true) => Ok(v["result"].clone()),
        Some(v) => Err(format!(
            "{}\n--- stdout\n{}--- stderr\n{}",
            v["error"].as_str().unwrap_or_default(),
            tail(&seen),
            tail(&err)
        )),
        None => Err(format!(
            "no answer: {}\n--- stdout\n{}--- stderr\n{}",
            err.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or(""),
            tail(&seen),
            tail(&err)
        )),
    }
}

/// The last 40 lines of `s`.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let from = lines.len().saturating_sub(40);
    lines[from..].join("\n") + "\n"
}

/// A minimal HTTP/1.1 responder on 127.0.0.1: answers every request with
/// `200 OK` and the body `compat-ok <path>`; stops when dropped.
struct HttpResponder {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HttpResponder {
    fn start() -> HttpResponder {
        use std::sync::atomic::{AtomicBool, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind http");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                std::thread::spawn(move || {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let body = format!("compat-ok {path}");
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        HttpResponder { port, stop }
    }
}

impl Drop for HttpResponder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs one scenario: unsandboxed, then sandboxed, for both identities.
fn check(s: &Scenario) {
    let python_for = |who: Who| -> Option<PathBuf> {
        match s.python {
            Python::Stdlib => Some(who.python()),
            Python::Venv => match venv() {
                Ok(p) => Some(p),
                Err(e) if std::env::var_os("CI").is_some() => {
                    panic!("{}: the compat venv is unusable under CI: {e}", s.name)
                }
                Err(e) => {
                    say(&format!("SKIP: {} [{}]: {e}", s.name, who.label()));
                    None
                }
            },
        }
    };
    both(|who| {
        if !require(who, FULL) {
            return;
        }
        let Some(python) = python_for(who) else {
            return;
        };
        let http = s.code.contains("@HTTP_PORT@").then(HttpResponder::start);
        let code = match &http {
            Some(h) => s.code.replace("@HTTP_PORT@", &h.port.to_string()),
            None => s.code.to_string(),
        };
        let ext = write_extension(s, &code);
        let mut plain_env: Vec<(&str, &str)> = s.env.to_vec();
        plain_env.extend(s.plain_env.iter().copied());
        let plain = run_plain(who, &python, ext.path(), &plain_env);
        if let Err(e) = &plain {
            panic!(
                "{} [{}]: the scenario fails unsandboxed, so it cannot judge the sandbox:\n{e}",
                s.name,
                who.label()
            );
        }
        let boxed = run_sandboxed(who, &python, ext.path(), s);
        let bwrapped = run_bwrap(who, &python, ext.path(), s, &plain_env);
        compare(s, who, &boxed, bwrapped.as_ref());
        match (boxed, s.known.reason(who)) {
            (Ok(v), None) => {
                let _ = v;
            }
            (Ok(v), Some(reason)) => panic!(
                "{} [{}] now passes under the sandbox ({v}): remove it from the known failures (was: {reason})",
                s.name,
                who.label()
            ),
            (Err(e), Some(reason)) => {
                // The error's first line, or else the last line the worker wrote.
                let first = e
                    .lines()
                    .next()
                    .filter(|l| !l.trim().is_empty())
                    .or_else(|| e.lines().rev().find(|l| !l.trim().is_empty()))
                    .unwrap_or("");
                say(&format!(
                    "KNOWN FAILURE {} [{}]: {reason} (got: {})",
                    s.name,
                    who.label(),
                    first.chars().take(300).collect::<String>()
                ));
            }
            (Err(e), None) => panic!(
                "{} [{}] works unsandboxed ({}) but fails under ext-runner:\n{e}",
                s.name,
                who.label(),
                plain.unwrap_or_default()
            ),
        }
    });
}

macro_rules! scenarios {
    ($($name:ident: $s:expr;)*) => {
        $(
            #[test]
            fn $name() {
                let s: Scenario = $s;
                assert_eq!(s.name, stringify!($name), "scenario name matches its test");
                check(&s);
            }
        )*
    };
}

// ---------------------------------------------------------------- the scenarios

scenarios! {
    mp_pool: Scenario {
        name: "mp_pool",
        caps: &["subprocess.run"],
        code: r#"
import multiprocessing as mp

def square(x):
    return x * x

def scenario():
    with mp.Pool(2) as p:
        r = p.map(square, range(20))
    assert r == [x * x for x in range(20)], r
    return {"start_method": mp.get_start_method(), "sum": sum(r)}
"#,
        ..BASE
    };

    mp_spawn_pool: Scenario {
        name: "mp_spawn_pool",
        caps: &["subprocess.run"],
        code: r#"
import multiprocessing as mp

def square(x):
    return x * x

def scenario():
    with mp.get_context("spawn").Pool(2) as p:
        r = p.map(square, range(20))
    assert r == [x * x for x in range(20)], r
    return {"sum": sum(r)}
"#,
        ..BASE
    };

    process_pool_executor: Scenario {
        name: "process_pool_executor",
        caps: &["subprocess.run"],
        code: r#"
from concurrent.futures import ProcessPoolExecutor

def cube(x):
    return x ** 3

def scenario():
    with ProcessPoolExecutor(max_workers=2) as ex:
        r = list(ex.map(cube, range(10)))
    assert r == [x ** 3 for x in range(10)], r
    return {"sum": sum(r)}
"#,
        ..BASE
    };

    shared_memory: Scenario {
        name: "shared_memory",
        caps: &["subprocess.run"],
        code: r#"
import multiprocessing as mp
from multiprocessing import shared_memory

def fill(name):
    shm = shared_memory.SharedMemory(name=name)
    shm.buf[:5] = b"hello"
    shm.close()

def scenario():
    shm = shared_memory.SharedMemory(create=True, size=1 << 20)
    try:
        p = mp.get_context("fork").Process(target=fill, args=(shm.name,))
        p.start()
        p.join(20)
        assert p.exitcode == 0, p.exitcode
        assert bytes(shm.buf[:5]) == b"hello", bytes(shm.buf[:5])
        return {"name": shm.name, "size": shm.size}
    finally:
        shm.close()
        shm.unlink()
"#,
        ..BASE
    };

    forkserver_pool: Scenario {
        name: "forkserver_pool",
        caps: &["subprocess.run"],
        code: r#"
import multiprocessing as mp

def square(x):
    return x * x

def scenario():
    ctx = mp.get_context("forkserver")
    with ctx.Pool(2) as p:
        r = p.map(square, range(20))
    assert r == [x * x for x in range(20)], r
    return {"sum": sum(r)}
"#,
        ..BASE
    };

    mp_manager: Scenario {
        name: "mp_manager",
        caps: &["subprocess.run"],
        code: r#"
import multiprocessing as mp

def scenario():
    with mp.Manager() as m:
        d = m.dict()
        d["a"] = 1
        l = m.list(range(5))
        l.append(5)
        return {"dict": dict(d), "list": list(l)}
"#,
        ..BASE
    };

    thread_pool: Scenario {
        name: "thread_pool",
        code: r#"
from multiprocessing.pool import ThreadPool

def square(x):
    return x * x

def scenario():
    with ThreadPool(4) as p:
        r = p.map(square, range(50))
    assert r == [x * x for x in range(50)]
    return {"sum": sum(r)}
"#,
        ..BASE
    };

    threads_64: Scenario {
        name: "threads_64",
        code: r#"
import threading

def scenario():
    n = 64
    barrier = threading.Barrier(n + 1, timeout=30)
    errors = []
    def work(i):
        try:
            # Each thread allocates through malloc (objects above 512 bytes),
            # as a thread pool of real work does: glibc gives it an arena.
            blocks = [bytearray(64 * 1024) for _ in range(8)]
            barrier.wait()
            del blocks
        except BaseException as e:
            errors.append(repr(e))
    threads = []
    for i in range(n):
        t = threading.Thread(target=work, args=(i,))
        t.start()
        threads.append(t)
    barrier.wait()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    return {"threads": len(threads)}
"#,
                ..BASE
    };

    proc_self: Scenario {
        name: "proc_self",
        code: r#"
def scenario():
    status = open("/proc/self/status").read()
    fields = dict(l.split(":", 1) for l in status.splitlines() if ":" in l)
    # The /proc of the worker's own pid namespace: its pid as the worker sees it.
    assert int(fields["Pid"]) == os.getpid(), (fields["Pid"], os.getpid())
    fds = os.listdir("/proc/self/fd")
    assert "0" in fds and "1" in fds, fds
    statm = open("/proc/self/statm").read().split()
    assert int(statm[1]) > 0, statm
    meminfo = open("/proc/meminfo").read()
    assert "MemTotal:" in meminfo
    return {"pid": os.getpid(), "fds": len(fds), "rss_pages": int(statm[1]), "vmrss": fields["VmRSS"].strip()}
"#,
        ..BASE
    };

    pty: Scenario {
        name: "pty",
        caps: &["subprocess.run"],
        code: r#"
import pty, subprocess

def scenario():
    master, slave = pty.openpty()
    p = subprocess.run(["/bin/sh", "-c", "test -t 1 && echo on-a-tty"], stdout=slave, stderr=slave, timeout=20)
    os.close(slave)
    out = os.read(master, 100)
    os.close(master)
    assert p.returncode == 0 and b"on-a-tty" in out, (p.returncode, out)
    return {"out": out.decode().strip()}
"#,
        ..BASE
    };

    setsid: Scenario {
        name: "setsid",
        caps: &["subprocess.run"],
        code: r#"
import subprocess, sys

def scenario():
    check = "import os; print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())"
    a = subprocess.run([sys.executable, "-c", check], start_new_session=True, capture_output=True, text=True, timeout=20)
    b = subprocess.run([sys.executable, "-c", check], process_group=0, capture_output=True, text=True, timeout=20)
    assert a.returncode == 0 and a.stdout.split() == ["True", "True"], (a.returncode, a.stdout, a.stderr)
    assert b.returncode == 0 and b.stdout.split() == ["False", "True"], (b.returncode, b.stdout, b.stderr)
    return {"new_session": a.stdout.strip(), "process_group": b.stdout.strip()}
"#,
        ..BASE
    };

    nice: Scenario {
        name: "nice",
        code: r#"
def scenario():
    before = os.getpriority(os.PRIO_PROCESS, 0)
    after = os.nice(2)
    os.setpriority(os.PRIO_PROCESS, 0, after + 1)
    now = os.getpriority(os.PRIO_PROCESS, 0)
    assert now == after + 1 and after >= before, (before, after, now)
    return {"before": before, "after": now}
"#,
        ..BASE
    };

    getpass_user: Scenario {
        name: "getpass_user",
        code: r#"
import getpass, pwd, grp

def scenario():
    # As under the sandbox, no login variables: getuser() asks the passwd database.
    for k in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        os.environ.pop(k, None)
    name = getpass.getuser()
    entry = pwd.getpwuid(os.getuid())
    group = grp.getgrgid(os.getgid())
    assert entry.pw_name == name
    return {"user": name, "uid": entry.pw_uid, "group": group.gr_name}
"#,
        ..BASE
    };

    tmp_write: Scenario {
        name: "tmp_write",
        code: r#"
def scenario():
    out = {}
    for d in ("/tmp", "/var/tmp"):
        p = os.path.join(d, "compat-%d.txt" % os.getpid())
        with open(p, "w") as f:
            f.write("data")
        with open(p) as f:
            assert f.read() == "data"
        os.unlink(p)
        out[d] = "ok"
    return out
"#,
        ..BASE
    };

    tempfile_use: Scenario {
        name: "tempfile_use",
        code: r#"
import tempfile

def scenario():
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x")
        open(p, "w").write("x" * 1000)
        assert os.path.getsize(p) == 1000
    with tempfile.NamedTemporaryFile() as f:
        f.write(b"abc"); f.flush()
    fd, p = tempfile.mkstemp()
    os.close(fd); os.unlink(p)
    with tempfile.SpooledTemporaryFile(max_size=10) as f:
        f.write(b"z" * 100); f.seek(0)
        assert f.read() == b"z" * 100
    return {"gettempdir": "set" if tempfile.gettempdir() else "unset"}
"#,
        ..BASE
    };

    asyncio_subprocess: Scenario {
        name: "asyncio_subprocess",
        caps: &["subprocess.run"],
        code: r#"
import asyncio, sys

async def main():
    p = await asyncio.create_subprocess_exec(sys.executable, "-c", "print(6 * 7)", stdout=asyncio.subprocess.PIPE)
    out, _ = await p.communicate()
    q = await asyncio.create_subprocess_shell("echo shell-ok", stdout=asyncio.subprocess.PIPE)
    out2, _ = await q.communicate()
    return out.decode().strip(), out2.decode().strip(), p.returncode, q.returncode

def scenario():
    a, b, rc1, rc2 = asyncio.run(main())
    assert (a, b, rc1, rc2) == ("42", "shell-ok", 0, 0), (a, b, rc1, rc2)
    return {"exec": a, "shell": b}
"#,
        ..BASE
    };

    find_library: Scenario {
        name: "find_library",
        // ctypes.util.find_library runs `ldconfig -p` (and gcc, ld) on Linux.
        caps: &["subprocess.run"],
        code: r#"
import ctypes, ctypes.util

def scenario():
    name = ctypes.util.find_library("c")
    assert name and name.startswith("libc.so"), name
    ctypes.CDLL(name).getpid()
    m = ctypes.util.find_library("m")
    assert m, m
    return {"c": name, "m": m}
"#,
        ..BASE
    };

    operator_environment: Scenario {
        name: "operator_environment",
        code: r#"
import time

def scenario():
    assert os.environ.get("HTTPS_PROXY") == "http://proxy.invalid:3128", os.environ.get("HTTPS_PROXY")
    assert os.environ.get("TZ") == "Europe/Paris", os.environ.get("TZ")
    assert os.environ.get("COMPAT_SET") == "from-policy", os.environ.get("COMPAT_SET")
    assert "COMPAT_NOT_PASSED" not in os.environ
    time.tzset()
    return {"tzname": list(time.tzname)}
"#,
        policy: Some(
            r#"{"environment": {"pass": ["HTTPS_PROXY", "TZ"], "set": {"COMPAT_SET": "from-policy"}}}"#,
        ),
        env: &[
            ("HTTPS_PROXY", "http://proxy.invalid:3128"),
            ("TZ", "Europe/Paris"),
        ],
        plain_env: &[("COMPAT_SET", "from-policy")],
        ..BASE
    };

    // ------------------------------------------------------------ real libraries

    numpy_compute: Scenario {
        name: "numpy_compute",
        python: Python::Venv,
        code: r#"
import numpy as np

def scenario():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((400, 400))
    b = a @ a.T
    w = np.linalg.eigvalsh(b)
    u, s, vt = np.linalg.svd(a)
    assert w.min() > -1e-6 and abs(s[0] ** 2 - w.max()) < 1e-6 * w.max()
    return {"numpy": np.__version__, "max_eig": round(float(w.max()), 3)}
"#,
        ..BASE
    };

    numpy_threads: Scenario {
        name: "numpy_threads",
        python: Python::Venv,
        code: r#"
import threading
import numpy as np

def scenario():
    n = 64
    results = [None] * n
    errors = []
    def work(i):
        try:
            a = np.full((200, 200), float(i))
            results[i] = float((a @ a).sum())
        except BaseException as e:
            errors.append(repr(e))
    ts = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[:3]
    assert results[3] == 3.0 * 3.0 * 200 * 200 * 200
    return {"threads": n}
"#,
        ..BASE
    };

    requests_http: Scenario {
        name: "requests_http",
        caps: &["network.outbound"],
        python: Python::Venv,
        code: r#"
import requests

def scenario():
    s = requests.Session()
    r = s.get("http://127.0.0.1:@HTTP_PORT@/compat?x=1", timeout=10)
    assert r.status_code == 200 and r.text == "compat-ok /compat?x=1", (r.status_code, r.text)
    import certifi, ssl
    ctx = ssl.create_default_context(cafile=certifi.where())
    return {"requests": requests.__version__, "status": r.status_code, "ca_certs": len(ctx.get_ca_certs()) >= 0}
"#,
        ..BASE
    };

    psutil_self: Scenario {
        name: "psutil_self",
        python: Python::Venv,
        code: r#"
import psutil

def scenario():
    p = psutil.Process()
    assert p.pid == os.getpid()
    mem = p.memory_info()
    assert mem.rss > 0
    threads = p.num_threads()
    fds = p.num_fds()
    cpu = p.cpu_times()
    vm = psutil.virtual_memory()
    assert vm.total > 0
    assert os.getpid() in psutil.pids()
    # The worker's own processes only: nothing of the host.
    names = sorted({q.name() for q in psutil.process_iter()})
    return {"rss": mem.rss, "threads": threads, "fds": fds, "user": cpu.user >= 0, "procs": len(names)}
"#,
        ..BASE
    };
}
