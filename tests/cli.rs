//! `ext-runner` exit codes, one per error class, and its output conventions:
//! results as JSON on stdout, errors as one `error: … (Class)` line on stderr.
//!
//! 0 success · 2 usage · 3 ManifestError · 4 AbiError · 5 CapabilityError ·
//! 6 SandboxError · 7 InvokeError · 8 TimeoutError · 9 RegistryError.
//!
//! No command produces 9: every command loads at most one extension into a
//! fresh host, so a duplicate or unknown extension name (RegistryError) can
//! only happen through the library's `ExtensionRegistry` (tests/host.rs).

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{ext, write_ext, TempDir};

const TOOLS: &str = r#"
import os, sys, time
from nodus_extension.worker import register_tool, run_loop
register_tool("cli.greet", lambda args: f"Hello, {args['name']}!")
register_tool("cli.data", lambda args: {"name": "Zoë", "list": [1, 2.5, None, True], "nested": {"k": "v"}})
def boom(args):
    raise RuntimeError("boom\nsecond line")
def hang(args):
    time.sleep(1000)
def die(args):
    sys.stderr.write("one\ntwo\n")
    sys.stderr.flush()
    time.sleep(0.2)
    os._exit(5)
register_tool("cli.boom", boom)
register_tool("cli.hang", hang)
register_tool("cli.die", die)
run_loop()
"#;

/// `cli.nope` is declared but not registered: the worker answers "tool not found".
const ALL_TOOLS: &[&str] = &[
    "cli.greet",
    "cli.data",
    "cli.boom",
    "cli.hang",
    "cli.die",
    "cli.nope",
];

fn tools_ext(caps: &[&str]) -> TempDir {
    ext("cli.ext", caps, ALL_TOOLS, TOOLS)
}

fn runner(args: &[&str], dir: Option<&TempDir>) -> Output {
    let mut cmd = Command::new(common::ext_runner());
    let mut args = args.iter();
    if let Some(sub) = args.next() {
        cmd.arg(sub);
    }
    if let Some(d) = dir {
        cmd.arg(d.path());
    }
    cmd.args(args);
    cmd.output().expect("run ext-runner")
}

/// `ext-runner invoke DIR TOOL ARGS --python PY [extra]`.
fn invoke(dir: &TempDir, tool: &str, args: &str, extra: &[&str]) -> Output {
    let mut cmd = Command::new(common::ext_runner());
    cmd.arg("invoke")
        .arg(dir.path())
        .arg(tool)
        .arg(args)
        .arg("--python")
        .arg(common::python())
        .args(extra);
    cmd.output().expect("run ext-runner")
}

/// Asserts exit `code` and an `error: … (class)` line on stderr, any further
/// lines of the message indented below it; returns the whole text.
fn assert_error(out: &Output, code: i32, class: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: ") && first.ends_with(&format!(" ({class})")),
        "{err:?}"
    );
    assert!(
        err.lines().skip(1).all(|l| l.starts_with("  ")),
        "later lines indented: {err:?}"
    );
    assert!(err.ends_with('\n'), "{err:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {:?}", out.stdout);
    err
}

#[test]
fn exit_0_prints_the_result_as_json() {
    let dir = tools_ext(&["tool.invoke"]);
    let out = invoke(&dir, "cli.greet", r#"{"name": "Ada"}"#, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "\"Hello, Ada!\"\n");
    // Structured results are printed as json.dumps would print them.
    let out = invoke(&dir, "cli.data", "{}", &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"name\": \"Zo\\u00eb\", \"list\": [1, 2.5, null, true], \"nested\": {\"k\": \"v\"}}\n"
    );
    // ARGS_JSON defaults to {}.
    let out = Command::new(common::ext_runner())
        .arg("invoke")
        .arg(dir.path())
        .arg("cli.data")
        .arg("--python")
        .arg(common::python())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    // validate and describe print JSON.
    let out = runner(&["validate"], Some(&dir));
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "cli.ext");
    let out = runner(&["describe"], Some(&dir));
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["loaded"], false);
    assert_eq!(v["tools"].as_array().map(Vec::len), Some(ALL_TOOLS.len()));
}

#[test]
fn exit_2_for_usage_errors() {
    let dir = tools_ext(&["tool.invoke"]);
    let no_command = runner(&[], None);
    assert_eq!(no_command.status.code(), Some(2));
    for args in [
        &["frobnicate"][..],
        &["invoke"][..],
        &["validate", "a", "b"][..],
    ] {
        let out = runner(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("error: "),
            "{args:?}"
        );
    }
    let out = invoke(&dir, "cli.greet", "{}", &["--timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
    assert!(out.stdout.is_empty());
}

#[test]
fn exit_3_for_manifest_errors() {
    let bad = write_ext(
        Some(r#"{"name": "", "version": "1", "description": "d"}"#),
        Some(TOOLS),
    );
    let err = assert_error(&invoke(&bad, "cli.greet", "{}", &[]), 3, "ManifestError");
    assert!(err.contains("extension name must not be empty"), "{err}");
    assert_error(&runner(&["validate"], Some(&bad)), 3, "ManifestError");
    assert_error(&runner(&["describe"], Some(&bad)), 3, "ManifestError");
    let not_json = write_ext(Some("{\"name\": \n"), Some(TOOLS));
    assert_error(&runner(&["validate"], Some(&not_json)), 3, "ManifestError");
    let missing = write_ext(None, Some(TOOLS));
    let err = assert_error(
        &invoke(&missing, "cli.greet", "{}", &[]),
        3,
        "ManifestError",
    );
    assert!(err.contains("nodus-extension.json not found"), "{err}");
}

#[test]
fn exit_4_for_abi_errors() {
    let abi = write_ext(
        Some(r#"{"name": "x", "version": "1", "description": "d", "abi_version": "2"}"#),
        Some(TOOLS),
    );
    let err = assert_error(&invoke(&abi, "cli.greet", "{}", &[]), 4, "AbiError");
    assert!(err.contains("unsupported abi_version '2'"), "{err}");
    assert_error(&runner(&["validate"], Some(&abi)), 4, "AbiError");
}

#[test]
fn exit_5_without_tool_invoke() {
    let dir = tools_ext(&[]);
    let err = assert_error(
        &invoke(&dir, "cli.greet", r#"{"name": "x"}"#, &[]),
        5,
        "CapabilityError",
    );
    assert!(err.contains("'tool.invoke'"), "{err}");
}

#[test]
fn exit_6_for_sandbox_errors() {
    // No extension.py.
    let dir = write_ext(
        Some(&common::manifest_json("cli.noentry", &["tool.invoke"], &[])),
        None,
    );
    let err = assert_error(&invoke(&dir, "cli.greet", "{}", &[]), 6, "SandboxError");
    assert!(err.contains("extension.py"), "{err}");
    // A worker that dies: its multi-line stderr keeps its lines, indented.
    // (It pauses before exiting: see tests/host.rs,
    // `death_message_has_the_last_stderr_line_right_away`.)
    let dir = tools_ext(&["tool.invoke"]);
    let err = assert_error(&invoke(&dir, "cli.die", "{}", &[]), 6, "SandboxError");
    assert!(
        err.contains("worker exited with status 5 (SandboxError)\n  stderr:\n    one\n    two\n"),
        "{err}"
    );
    // An interpreter that does not exist.
    let err = assert_error(
        &Command::new(common::ext_runner())
            .arg("invoke")
            .arg(dir.path())
            .arg("cli.greet")
            .args(["{}", "--python", "/nonexistent/python3"])
            .output()
            .unwrap(),
        6,
        "SandboxError",
    );
    assert!(err.contains("/nonexistent/python3"), "{err}");
}

#[test]
fn exit_7_when_the_tool_raises() {
    let dir = tools_ext(&["tool.invoke"]);
    let err = assert_error(&invoke(&dir, "cli.boom", "{}", &[]), 7, "InvokeError");
    assert_eq!(err, "error: boom (InvokeError)\n  second line\n");
    let err = assert_error(&invoke(&dir, "cli.nope", "{}", &[]), 7, "InvokeError");
    assert_eq!(err, "error: tool not found: 'cli.nope' (InvokeError)\n");
    // A tool the manifest does not declare is refused before it reaches the worker.
    let err = assert_error(&invoke(&dir, "cli.undeclared", "{}", &[]), 7, "InvokeError");
    assert!(err.contains("'cli.undeclared'"), "{err}");
    // Arguments that are not JSON are a usage error (tests/authoring.rs).
    assert_eq!(
        invoke(&dir, "cli.greet", "{nope", &[]).status.code(),
        Some(2)
    );
}

#[test]
fn exit_8_on_timeout() {
    let dir = tools_ext(&["tool.invoke"]);
    let t0 = Instant::now();
    let err = assert_error(
        &invoke(&dir, "cli.hang", "{}", &["--timeout", "0.5"]),
        8,
        "TimeoutError",
    );
    let took = t0.elapsed();
    assert!(
        err.contains("tool='cli.hang'") && err.contains("after 0.5s"),
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// Runs `script` (sh) in a user namespace of our own, where the
/// `user.max_net_namespaces` limit can be lowered without touching the host;
/// returns its stdout and stderr.
fn in_own_userns(script: &str, args: &[&std::ffi::OsStr]) -> Option<String> {
    let probe = Command::new("unshare").args(["-U", "-r", "true"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIP: cannot create a user namespace here (`unshare -U -r`); the namespace-limit test needs one");
        return None;
    }
    let out = Command::new("unshare")
        .args(["-U", "-r", "sh", "-c", script, "sh"])
        .args(args)
        .output()
        .expect("run unshare");
    Some(String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_kernel_that_refuses_network_namespaces_still_runs_workers_without_network() {
    // The probe judges the network namespace from `user.max_net_namespaces`
    // (making one costs half a millisecond per start); at 0 it must say so,
    // and the launch must neither fail on it nor open the network.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let src = "import socket, sys\nfrom nodus_extension.worker import register_tool, run_loop\n\
               def dial(args):\n    s = socket.socket()\n    s.settimeout(2)\n    s.connect(('127.0.0.1', args['port']))\n    return 'connected'\n\
               register_tool('t.dial', dial)\nrun_loop()\n";
    let d = ext("t.nonet", &["tool.invoke"], &["t.dial"], src);
    let runner = common::ext_runner();
    let args = format!("{{\"port\": {port}}}");
    // Root in a user namespace that maps only uid 0 (`unshare -r`): no uid of
    // its own for the worker (none is mapped), which strict mode would refuse
    // (`unprivileged_identity: lost`): the operator accepts uid 0 here.
    let policy = d.path().join("policy.json");
    std::fs::write(&policy, r#"{"worker_ids": false}"#).unwrap();
    let script = "limit=/proc/sys/user/max_net_namespaces; \
                  [ \"$1\" = low ] && echo 0 > $limit; echo limit=$(cat $limit); \
                  \"$2\" probe | grep network_namespaces; \
                  \"$2\" invoke \"$3\" t.dial \"$4\" --python \"$5\" --policy \"$6\"; echo rc=$?";
    for (mode, net) in [("low", "false"), ("default", "true")] {
        let Some(text) = in_own_userns(
            script,
            &[
                mode.as_ref(),
                runner.as_os_str(),
                d.path().as_os_str(),
                args.as_ref(),
                common::python().as_os_str(),
                policy.as_os_str(),
            ],
        ) else {
            return;
        };
        assert!(
            text.contains(&format!("network_namespaces     {net}")),
            "{mode}: {text}"
        );
        // The worker started (its invoke failed inside it, not at launch) and
        // was refused the socket: exit 7 (InvokeError), not 6 (SandboxError).
        assert!(text.contains("rc=7"), "{mode}: {text}");
        assert!(
            text.contains("network.outbound not declared"),
            "{mode}: {text}"
        );
        // Without the net namespace the network stays closed by seccomp and
        // Landlock: no guarantee is lost, so nothing is reported degraded
        // but the identity the operator chose.
        assert_eq!(
            text.matches(": lost,").count(),
            text.matches("unprivileged_identity: lost,").count(),
            "{mode}: {text}"
        );
    }
    assert!(
        listener.accept().is_err(),
        "the loopback listener got a connection"
    );

    // In a nested user namespace the limit of the enclosing one binds, but
    // this one's sysctl reads as unlimited: the launch fails, and says why.
    let nested = "echo 0 > /proc/sys/user/max_net_namespaces; \
                  unshare -U -r \"$1\" invoke \"$2\" t.dial \"$3\" --python \"$4\" --policy \"$5\"; echo rc=$?";
    let Some(text) = in_own_userns(
        nested,
        &[
            runner.as_os_str(),
            d.path().as_os_str(),
            args.as_ref(),
            common::python().as_os_str(),
            policy.as_os_str(),
        ],
    ) else {
        return;
    };
    assert!(text.contains("rc=6"), "{text}");
    assert!(
        text.contains("user.max_*_namespaces limit") && text.contains("\"namespaces\": false"),
        "the error does not say what to do: {text}"
    );
    // It names the step and the errno, not "No space left on device" alone.
    assert!(
        text.contains("confinement step unshare(CLONE_NEW")
            && text.contains("CLONE_NEWNET")
            && text.contains("failed: ENOSPC (No space left on device)"),
        "the error does not name the failed step: {text}"
    );
}

/// `ext-runner validate DIR`, killed if it has not ended in 20 s (a read
/// that blocks on a FIFO would otherwise hang the test).
fn validate_within(dir: &TempDir) -> (Output, Duration) {
    let t0 = Instant::now();
    let child = Command::new(common::ext_runner())
        .arg("validate")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ext-runner");
    let pid = child.id() as i32;
    let killer = std::thread::spawn(move || {
        while t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
            if !common::pid_alive(pid) {
                return;
            }
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    });
    let out = child.wait_with_output().expect("wait for ext-runner");
    let _ = killer.join();
    (out, t0.elapsed())
}

#[test]
fn a_manifest_that_is_a_fifo_a_device_or_huge_is_refused_at_once_and_a_linked_one_still_loads() {
    let good = common::manifest_json("cli.ext", &["tool.invoke"], &["cli.greet"]);
    // Control: a manifest that is a link to a regular file loads.
    let linked = write_ext(None, Some(TOOLS));
    let real = linked.join("real.json");
    std::fs::write(&real, &good).unwrap();
    std::os::unix::fs::symlink(&real, linked.join("nodus-extension.json")).unwrap();
    let (out, _) = validate_within(&linked);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A FIFO nobody writes: refused, not waited on.
    let fifo = write_ext(None, Some(TOOLS));
    nix::unistd::mkfifo(
        &fifo.join("nodus-extension.json"),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();
    let (out, took) = validate_within(&fifo);
    let err = assert_error(&out, 3, "ManifestError");
    assert!(err.contains("a FIFO, not a regular file"), "{err}");
    assert!(took < Duration::from_secs(15), "not waited on: {took:?}");
    // A link to /dev/zero: refused, nothing read (ext-runner's memory is
    // not asked for; an endless read would be killed above, or run out).
    let zero = write_ext(None, Some(TOOLS));
    std::os::unix::fs::symlink("/dev/zero", zero.join("nodus-extension.json")).unwrap();
    let (out, _) = validate_within(&zero);
    let err = assert_error(&out, 3, "ManifestError");
    assert!(err.contains("a device, not a regular file"), "{err}");
    // A regular file over the limit: refused, read no further than it.
    let huge = write_ext(None, Some(TOOLS));
    let padded = format!("{}{}", good, " ".repeat(1 << 20));
    std::fs::write(huge.join("nodus-extension.json"), padded).unwrap();
    let (out, _) = validate_within(&huge);
    let err = assert_error(&out, 3, "ManifestError");
    assert!(err.contains("larger than 1024 KiB"), "{err}");
}

/// A regular manifest opens as any file does: one under a write lease (a
/// Samba oplock, an NFS delegation) is read once its holder lets go, where
/// a non-blocking open failed with EAGAIN. The holder here is a Python
/// process that releases on the kernel's SIGIO.
#[test]
fn a_manifest_under_a_write_lease_is_read_once_the_holder_lets_go() {
    let dir = tools_ext(&["tool.invoke"]);
    let holder = r#"
import fcntl, os, signal, subprocess, sys
m, runner = sys.argv[1], sys.argv[2]
fd = os.open(m, os.O_WRONLY)
broken = []
def let_go(sig, frame):
    broken.append(sig)
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
signal.signal(signal.SIGIO, let_go)
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
p = subprocess.run([runner, "validate", os.path.dirname(m)], capture_output=True, text=True, timeout=60)
print(p.returncode, len(broken), p.stderr.strip())
"#;
    let out = Command::new(common::python())
        .arg("-c")
        .arg(holder)
        .arg(dir.join("nodus-extension.json"))
        .arg(common::ext_runner())
        .output()
        .expect("python");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.starts_with("0 1"),
        "validate's exit, the lease breaks: {said}"
    );
}

/// `run` makes its stderr non-blocking (a host that never reads it loses
/// the overflow, not its worker), but on a description of its own: the
/// pipe it inherited is the host's too, and O_NONBLOCK left on it made the
/// host's own writes to a full stderr fail after the runner had exited.
#[test]
fn run_leaves_the_hosts_stderr_blocking() {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let dir = tools_ext(&["tool.invoke"]);
    let (err_r, err_w) = nix::unistd::pipe().unwrap();
    let flags = |fd: &std::os::fd::OwnedFd| {
        OFlag::from_bits_truncate(
            fcntl(std::os::fd::AsRawFd::as_raw_fd(fd), FcntlArg::F_GETFL).unwrap(),
        )
    };
    assert!(!flags(&err_w).contains(OFlag::O_NONBLOCK));
    let mut child = Command::new(common::ext_runner())
        .arg("run")
        .arg(dir.path())
        .arg("--python")
        .arg(common::python())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(err_w.try_clone().unwrap()))
        .spawn()
        .unwrap();
    // Its stderr is in use while it runs (the worker's goes there).
    std::thread::sleep(Duration::from_millis(500));
    let during = flags(&err_w).contains(OFlag::O_NONBLOCK);
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"{\"op\": \"shutdown\"}\n").unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    drop(err_r);
    assert!(
        !during,
        "O_NONBLOCK on the host's stderr while the runner ran"
    );
    assert!(
        !flags(&err_w).contains(OFlag::O_NONBLOCK),
        "O_NONBLOCK on the host's stderr after the runner exited"
    );
}

/// A worker with no capability nests its scratch folder 3000 deep (by
/// renames: each level costs it O(1)); the runner still removes it after the
/// worker ends, at an open-file limit of 512 (std's `remove_dir_all` holds
/// a descriptor per level, ran out and left the folder).
#[test]
fn a_scratch_folder_nested_deeper_than_the_descriptor_limit_is_still_removed() {
    let source = r#"
import os, sys, tempfile
from nodus_extension.worker import register_tool, run_loop
def nest(args):
    os.chdir(tempfile.gettempdir())
    os.mkdir("t")
    for _ in range(3000):
        os.mkdir("n"); os.rename("t", "n/t"); os.rename("n", "t")
    return "nested"
register_tool("cli.greet", nest)
run_loop()
"#;
    let dir = ext("cli.ext", &["tool.invoke"], &["cli.greet"], source);
    let tmp = TempDir::new("deep-tmp");
    let out = Command::new("prlimit")
        .arg("--nofile=512:512")
        .arg(common::ext_runner())
        .arg("invoke")
        .arg(dir.path())
        .arg("cli.greet")
        .arg("{}")
        .arg("--python")
        .arg(common::python())
        .env("TMPDIR", tmp.path())
        .output()
        .expect("prlimit ext-runner");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "\"nested\"\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // The worker uids' lease folder stays, by design (docs/deploy.md).
        .filter(|n| n != "nodus-ext-worker-ids")
        .collect();
    assert!(left.is_empty(), "left in the runner's TMPDIR: {left:?}");
}
