//! The worker of the security suite and its launches: the `sec.run` tool,
//! `Launch` (how `ext-runner` is started), `Session` (a running worker and its
//! transcript), and the same snippets run outside the sandbox (`plain`).

use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{procfs, TempDir};

// ---------------------------------------------------------------- the worker

/// Python shared by the worker and by the same snippets run outside the sandbox.
pub const PRELUDE: &str = r#"
import ctypes, errno, json, os, sys
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

def sys_call(nr, *args):
    """A raw system call: its result, or -errno."""
    conv = []
    for a in args:
        if isinstance(a, int):
            conv.append(ctypes.c_ulong(a & 0xFFFFFFFFFFFFFFFF))
        elif isinstance(a, bytes):
            conv.append(ctypes.c_char_p(a))
        else:
            conv.append(a)
    ctypes.set_errno(0)
    r = _libc.syscall(ctypes.c_long(nr), *conv)
    return -ctypes.get_errno() if r == -1 else r

def ename(r):
    """'EPERM' for -1, the value itself otherwise."""
    if isinstance(r, int) and r < 0:
        return errno.errorcode.get(-r, str(r))
    return r

def attempt(fn):
    """fn's value as text, or the errno name of the OSError it raised."""
    try:
        return "ok: " + repr(fn())
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else repr(e)
    except Exception as e:
        return f"{type(e).__name__}: {e}"

# The worker shim's audit hook turns os.fork/os.exec*/socket()/connect(unix)
# of an undeclared capability into a PermissionError before the kernel sees
# them: an explanation, not a boundary. Attacks go around it with ctypes, so
# that what is judged is the kernel's enforcement.
import struct as _struct, socket as _socket

def _sockaddr(family, addr):
    if family in (2,):
        return _struct.pack("=H", 2) + _struct.pack(">H", addr[1]) + _socket.inet_aton(addr[0]) + bytes(8)
    p = addr.encode() if isinstance(addr, str) else addr
    return _struct.pack("=H", 1) + p + (b"" if p.startswith(b"\0") else b"\0")

def raw_connect(family, type_, addr, data=b"hi"):
    """socket() + connect() + send() as bare system calls: 'connected', or where and why it failed."""
    fd = sys_call(41, family, type_, 0)
    if fd < 0:
        return "socket:" + ename(fd)
    sa = ctypes.create_string_buffer(_sockaddr(family, addr))
    r = sys_call(42, fd, ctypes.addressof(sa), len(sa.raw) - 1)
    if r < 0:
        os.close(fd)
        return "connect:" + ename(r)
    d = ctypes.create_string_buffer(data)
    sys_call(44, fd, ctypes.addressof(d), len(data), 0, 0, 0)
    os.close(fd)
    return "connected"

def raw_sendto(fd, family, addr, data=b"hi"):
    """sendto() with a destination address, as a bare system call."""
    sa = ctypes.create_string_buffer(_sockaddr(family, addr))
    d = ctypes.create_string_buffer(data)
    return ename(sys_call(44, fd, ctypes.addressof(d), len(data), 0, ctypes.addressof(sa), len(sa.raw) - 1))

def raw_fork():
    """glibc fork() through ctypes: the child gets 0, the parent a pid or -errno."""
    ctypes.set_errno(0)
    r = _libc.fork()
    return -ctypes.get_errno() if r == -1 else r

def _argv(argv):
    return (ctypes.c_char_p * (len(argv) + 1))(*[a.encode() for a in argv], None)

def raw_exec(path, argv):
    """execv() through ctypes; returns the errno name when it fails."""
    ctypes.set_errno(0)
    _libc.execv(path.encode(), _argv(argv))
    return ename(-ctypes.get_errno())

def raw_fexec(fd, argv):
    """fexecve() (execveat AT_EMPTY_PATH) through ctypes."""
    ctypes.set_errno(0)
    _libc.fexecve(fd, _argv(argv), _argv([]))
    return ename(-ctypes.get_errno())

def _run(code):
    g = {k: v for k, v in globals().items() if not k.startswith("__")}
    g["__name__"] = "attack"
    g["__builtins__"] = __builtins__
    try:
        exec(code, g)
        return {"ok": True, "result": json.loads(json.dumps(g.get("result"), default=repr))}
    except BaseException as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
"#;

/// The generic worker: tool `sec.run` runs `args.code`.
pub fn worker_source() -> String {
    format!(
        "{PRELUDE}\nfrom nodus_extension.worker import register_tool, run_loop\n\
         register_tool('sec.run', lambda args: _run(args['code']))\nrun_loop()\n"
    )
}

/// An extension folder (world-readable) declaring `tool.invoke` plus `caps`.
pub fn sec_ext(caps: &[&str]) -> TempDir {
    let mut all = vec!["tool.invoke"];
    all.extend(caps.iter().filter(|c| **c != "tool.invoke"));
    let dir = world_dir("sec-ext");
    std::fs::write(
        dir.join("nodus-extension.json"),
        crate::common::manifest_json("sec.attack", &all, &["sec.run"]),
    )
    .expect("manifest");
    std::fs::write(dir.join("extension.py"), worker_source()).expect("extension.py");
    for f in ["nodus-extension.json", "extension.py"] {
        chmod(&dir.join(f), 0o644);
    }
    dir
}

/// Runs `code` with the prelude in a plain interpreter as `who`, outside any
/// sandbox: the baseline that shows what the check sees when nothing stops it.
pub fn plain(who: Who, code: &str) -> Value {
    plain_with(who, code, &[])
}

/// `plain` with extra environment variables.
pub fn plain_with(who: Who, code: &str, env: &[(&str, &str)]) -> Value {
    let script = format!("{PRELUDE}\nprint(json.dumps(_run(sys.argv[1])))\n");
    let out = who
        .command(who.python())
        .args(["-c", &script, code])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("plain python");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap_or_else(|_| {
        json!({"ok": false, "error": format!("plain run failed: {text} {}", String::from_utf8_lossy(&out.stderr))})
    })
}

/// How a worker is started.
#[derive(Clone)]
pub struct Launch {
    pub who: Who,
    pub caps: Vec<String>,
    pub workspace: Option<PathBuf>,
    pub policy: Option<Value>,
    pub env: Vec<(String, String)>,
    /// Shell commands run by a bash wrapper before it execs the runner
    /// (e.g. `exec 7</secret` to leave a descriptor open).
    pub shell_prefix: Option<String>,
    pub timeout_secs: f64,
    /// Another extension folder than the generic one.
    pub ext_dir: Option<PathBuf>,
    /// A deployment environment the runner is started in (tests/common/envs.rs).
    pub environment: Option<crate::common::envs::Env>,
    /// Another interpreter than `who`'s.
    pub python: Option<PathBuf>,
}

impl Launch {
    pub fn new(who: Who, caps: &[&str]) -> Launch {
        Launch {
            who,
            caps: caps.iter().map(|s| s.to_string()).collect(),
            workspace: None,
            policy: None,
            env: Vec::new(),
            shell_prefix: None,
            timeout_secs: 20.0,
            ext_dir: None,
            environment: None,
            python: None,
        }
    }
    pub fn python(mut self, p: &Path) -> Self {
        self.python = Some(p.to_path_buf());
        self
    }
    pub fn in_env(mut self, env: crate::common::envs::Env) -> Self {
        self.environment = Some(env);
        self
    }
    pub fn workspace(mut self, p: &Path) -> Self {
        self.workspace = Some(p.to_path_buf());
        self
    }
    pub fn policy(mut self, v: Value) -> Self {
        self.policy = Some(v);
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn shell_prefix(mut self, s: &str) -> Self {
        self.shell_prefix = Some(s.into());
        self
    }
    pub fn timeout(mut self, secs: f64) -> Self {
        self.timeout_secs = secs;
        self
    }
    pub fn start(self) -> Session {
        Session::start(self)
    }
}

/// One worker's answer to a snippet.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The snippet ran; its `result`.
    Value(Value),
    /// The snippet raised; the exception text.
    Raised(String),
    /// The protocol answered with an error (e.g. the tool failed).
    Failed(String),
    /// No answer: the worker or runner is gone, or the deadline passed.
    Gone,
}

impl Reply {
    pub fn value(&self) -> &Value {
        match self {
            Reply::Value(v) => v,
            other => panic!("the snippet did not return a value: {other:?}"),
        }
    }
    /// The value, or the exception text, as one string (for "contains" checks).
    pub fn text(&self) -> String {
        match self {
            Reply::Value(v) => v.to_string(),
            Reply::Raised(s) | Reply::Failed(s) => s.clone(),
            Reply::Gone => "<gone>".into(),
        }
    }
    pub fn field(&self, k: &str) -> String {
        match &self.value()[k] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }
}

/// Everything the runner wrote, and how it ended.
#[derive(Debug, Clone)]
pub struct Transcript {
    pub stdout: String,
    pub stderr: String,
    pub status: Option<ExitStatus>,
}

impl Transcript {
    pub fn contains(&self, needle: &str) -> bool {
        self.stdout.contains(needle) || self.stderr.contains(needle)
    }
    pub fn all(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// A running `ext-runner run` driven over its stdin/stdout.
pub struct Session {
    pub launch: Launch,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    next_id: u64,
    _files: Vec<TempDir>,
}

impl Session {
    pub fn start(launch: Launch) -> Session {
        let who = launch.who;
        let caps: Vec<&str> = launch.caps.iter().map(|s| s.as_str()).collect();
        let mut files = Vec::new();
        let ext = match &launch.ext_dir {
            Some(d) => d.clone(),
            None => {
                let d = sec_ext(&caps);
                let p = d.path().to_path_buf();
                files.push(d);
                p
            }
        };
        let mut args: Vec<std::ffi::OsString> = vec!["run".into(), ext.into_os_string()];
        let policy_file = launch.policy.as_ref().map(|p| {
            let d = world_dir("sec-policy");
            let f = d.join("policy.json");
            std::fs::write(&f, p.to_string()).expect("policy file");
            chmod(&f, 0o644);
            files.push(d);
            f
        });
        let warm_socket = match launch.python {
            Some(_) => None, // another interpreter than the server's: cold
            None => warm_server(who, policy_file.as_deref()),
        };
        match warm_socket {
            // The same verdicts through a fork server: the server holds the
            // interpreter and the operator policy.
            Some(socket) => {
                args.push("--server".into());
                args.push(socket.into_os_string());
            }
            None => {
                args.push("--python".into());
                args.push(
                    launch
                        .python
                        .clone()
                        .unwrap_or_else(|| who.python())
                        .into_os_string(),
                );
                if let Some(f) = &policy_file {
                    args.push("--policy".into());
                    args.push(f.clone().into_os_string());
                }
            }
        }
        args.push("--timeout".into());
        args.push(launch.timeout_secs.to_string().into());
        if let Some(w) = &launch.workspace {
            args.push("--workspace".into());
            args.push(w.clone().into_os_string());
        }
        let mut cmd = match &launch.shell_prefix {
            Some(prefix) => {
                let mut c = who.command("bash");
                c.arg("-c")
                    .arg(format!("{prefix}\nexec \"$0\" \"$@\""))
                    .arg(runner(who))
                    .args(&args);
                c
            }
            None => {
                let mut c = match launch.environment {
                    Some(env) => env.command(who, runner(who)),
                    None => who.command(runner(who)),
                };
                c.args(&args);
                c
            }
        };
        cmd.envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ext-runner");
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut err = child.stderr.take().expect("stderr");
        let (so, se) = (stdout.clone(), stderr.clone());
        let readers = vec![
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match out.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf).into_owned();
                            so.lock().unwrap().push_str(&line);
                            let _ = tx.send(line);
                        }
                    }
                }
            }),
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match err.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => se
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
            }),
        ];
        Session {
            stdin: child.stdin.take(),
            launch,
            child,
            lines,
            stdout,
            stderr,
            readers,
            next_id: 0,
            _files: files,
        }
    }

    /// The runner's process id.
    pub fn runner_pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `code` to `sec.run` and waits for the answer.
    pub fn exec(&mut self, code: &str) -> Reply {
        let wait = Duration::from_secs_f64(self.launch.timeout_secs + 10.0);
        self.exec_within(code, wait)
    }

    pub fn exec_within(&mut self, code: &str, wait: Duration) -> Reply {
        self.next_id += 1;
        let id = format!("sec-{}", self.next_id);
        let line = json!({"id": id, "op": "invoke", "name": "sec.run", "args": {"code": code}});
        let Some(stdin) = self.stdin.as_mut() else {
            return Reply::Gone;
        };
        if writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .is_err()
        {
            return Reply::Gone;
        }
        let end = Instant::now() + wait;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let Ok(l) = self.lines.recv_timeout(left) else {
                // Shown with a failing test's output: why there was no answer.
                eprintln!(
                    "no answer to {id}; the runner's stderr so far: {}",
                    self.stderr.lock().unwrap()
                );
                return Reply::Gone;
            };
            let Ok(v) = serde_json::from_str::<Value>(&l) else {
                continue;
            };
            if v["id"] != json!(id) {
                continue;
            }
            if v["ok"] != json!(true) {
                return Reply::Failed(v["error"].as_str().unwrap_or_default().to_string());
            }
            let r = &v["result"];
            return if r["ok"] == json!(true) {
                Reply::Value(r["result"].clone())
            } else {
                Reply::Raised(r["error"].as_str().unwrap_or_default().to_string())
            };
        }
    }

    /// Every live process started by the runner (the runner excluded).
    /// Through a fork server (`warm()`) the worker is the server's, not the
    /// runner's: it is found as the process holding the other ends of the
    /// runner's pipes to it, and with it everything in its session.
    pub fn processes(&self) -> Vec<i32> {
        if !warm() {
            return descendants(self.runner_pid());
        }
        let runner = self.runner_pid();
        let pipes = |pid: i32, from: i32| -> Vec<String> {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| {
                    e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) >= Some(from)
                })
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|l| l.to_string_lossy().into_owned())
                .filter(|l| l.starts_with("pipe:"))
                .collect()
        };
        let ours = pipes(runner, 3);
        let me = std::process::id() as i32;
        let session = session_of;
        // Never this process's or the runner's session (the server and its
        // zygote are in ours): only the session the worker leads.
        let (own, runners) = (session(me), session(runner));
        let all = procfs::all();
        let sessions: Vec<i32> = all
            .iter()
            .filter(|p| p.live() && p.pid != runner && p.pid != me)
            .filter(|p| cmdline(p.pid).contains("boot.py"))
            .filter(|p| pipes(p.pid, 0).iter().any(|l| ours.contains(l)))
            .filter_map(|p| session(p.pid))
            .filter(|s| Some(*s) != own && Some(*s) != runners)
            .collect();
        let mut found: Vec<i32> = all
            .iter()
            .filter(|p| p.live() && session(p.pid).is_some_and(|s| sessions.contains(&s)))
            .map(|p| p.pid)
            .collect();
        for p in found.clone() {
            for d in descendants(p) {
                if !found.contains(&d) {
                    found.push(d);
                }
            }
        }
        found.sort();
        found
    }

    /// The worker: the process running the worker shim (`boot.py`).
    pub fn worker_pid(&self) -> Option<i32> {
        self.processes()
            .into_iter()
            .find(|p| cmdline(*p).contains("boot.py"))
    }

    /// The worker's scratch folder, found from outside: TMPDIR in its
    /// /proc/PID/environ, or, where that is `/tmp` inside its private root,
    /// the runner's one `nodus-ext-<runner pid>-…` folder in the host's
    /// temporary folder.
    pub fn scratch(&self) -> Option<PathBuf> {
        let pid = self.worker_pid()?;
        let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let tmpdir = env
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"TMPDIR="))
            .map(|v| PathBuf::from(String::from_utf8_lossy(v).into_owned()))?;
        if tmpdir != Path::new("/tmp") {
            // Tests remove it: only ever a worker's own scratch folder.
            return tmpdir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("nodus-ext-"))
                .then_some(tmpdir);
        }
        // Named after the process that made it: the runner, or through a
        // fork server its zygote (the first of the worker's ancestors
        // outside its session: the parent of its reaper).
        let maker = if warm() {
            let session = session_of;
            let sid = session(pid)?;
            let mut p = procfs::stat(pid)?.ppid;
            while session(p)? == sid {
                p = procfs::stat(p)?.ppid;
            }
            p
        } else {
            self.runner_pid()
        };
        let prefix = format!("nodus-ext-{maker}-");
        let mut found: Vec<PathBuf> = scratch_dirs()
            .into_iter()
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with(&prefix) && !n.ends_with("-root")
                })
            })
            .collect();
        if found.len() > 1 && warm() {
            // Workers of one zygote: the one whose /tmp (inside) it is.
            use std::os::unix::fs::MetadataExt;
            let inside = std::fs::metadata(format!("/proc/{pid}/root/tmp")).ok()?;
            found.retain(|d| {
                std::fs::metadata(d)
                    .is_ok_and(|m| m.ino() == inside.ino() && m.dev() == inside.dev())
            });
        }
        (found.len() == 1).then(|| found.remove(0))
    }

    /// The worker's pids cgroup folder (root, subprocess.run), if it is in one.
    pub fn pids_cgroup(&self) -> Option<PathBuf> {
        let pid = self.worker_pid()?;
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let rel = text.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            ctrl.split(',')
                .any(|c| c == "pids")
                .then(|| path.to_string())
        })?;
        (rel.contains("nodus-ext-")).then(|| PathBuf::from(format!("/sys/fs/cgroup/pids{rel}")))
    }

    /// The worker's memory cgroup folder (where the runner made one), if it is in one.
    pub fn memory_cgroup(&self) -> Option<PathBuf> {
        let pid = self.worker_pid()?;
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        text.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            let dir = if ctrl.split(',').any(|c| c == "memory") {
                PathBuf::from(format!("/sys/fs/cgroup/memory{path}"))
            } else if ctrl.is_empty() {
                ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
                    .iter()
                    .map(|m| PathBuf::from(format!("{m}{path}")))
                    .find(|d| d.join("memory.max").exists())?
            } else {
                return None;
            };
            (path.contains("nodus-ext-")).then_some(dir)
        })
    }

    /// Every cgroup the runner made for the worker (pids, memory; one on cgroup v2).
    pub fn cgroups(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .pids_cgroup()
            .into_iter()
            .chain(self.memory_cgroup())
            .collect();
        v.dedup();
        v
    }

    /// Text seen so far on the runner's stdout and stderr.
    pub fn seen(&self) -> String {
        format!(
            "{}{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// Closes the runner's stdin (the worker is asked to stop) and waits for it.
    pub fn finish(mut self) -> Transcript {
        self.stdin.take();
        let end = Instant::now() + Duration::from_secs(20);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
            }
        };
        for r in std::mem::take(&mut self.readers) {
            let _ = r.join();
        }
        Transcript {
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
            status,
        }
    }

    /// SIGKILLs the runner (not the worker) and reaps it.
    pub fn kill_runner(mut self) -> Transcript {
        signal(self.runner_pid(), nix::sys::signal::Signal::SIGKILL);
        let status = self.child.wait().ok();
        self.stdin.take();
        Transcript {
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
            status,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stdin.take();
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `launch`, runs one snippet, finishes: the reply and the transcript.
pub fn run_once(launch: Launch, code: &str) -> (Reply, Transcript) {
    let mut s = launch.start();
    let r = s.exec(code);
    (r, s.finish())
}

/// The signal that ended a process, by name ("SIGXCPU"), if any.
pub fn signal_name(status: &ExitStatus) -> Option<String> {
    status.signal().map(|s| {
        nix::sys::signal::Signal::try_from(s)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| s.to_string())
    })
}

/// The session id of `pid`, from its /proc stat.
fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}
