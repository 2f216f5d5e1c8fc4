//! What extension authors and operators meet first (issue 14): the scaffold,
//! debugging output, the workspace in the environment, denials that explain
//! files and ports, error classes of refused host calls and bad ARGS_JSON,
//! non-finite floats in results, and the command line's conventions.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ext, TempDir};

fn runner() -> Command {
    Command::new(common::ext_runner())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ext-runner invoke DIR TOOL ARGS --python PY EXTRA…`.
fn invoke(dir: &std::path::Path, tool: &str, args: &str, extra: &[&str]) -> Output {
    runner()
        .arg("invoke")
        .arg(dir)
        .arg(tool)
        .arg(args)
        .arg("--python")
        .arg(common::python())
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run ext-runner")
}

fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn new_scaffolds_an_extension_that_works_with_empty_args() {
    let parent = TempDir::new("scaffold");
    let dir = parent.join("My-Tools");
    let out = runner().arg("new").arg(&dir).output().unwrap();
    assert_code(&out, 0);
    let said = text(&out.stdout);
    // It prints the next commands, with the tool's name.
    assert!(said.contains("ext-runner invoke"), "{said}");
    assert!(said.contains("my_tools.hello"), "{said}");
    let out = runner().arg("validate").arg(&dir).output().unwrap();
    assert_code(&out, 0);
    let out = invoke(&dir, "my_tools.hello", "{}", &[]);
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout), "\"Hello, world!\"\n");
    // Without ARGS_JSON too, and with arguments.
    let out = runner()
        .arg("invoke")
        .arg(&dir)
        .arg("my_tools.hello")
        .arg("--python")
        .arg(common::python())
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "\"Hello, world!\"\n");
    let out = invoke(&dir, "my_tools.hello", r#"{"name": "Ada"}"#, &[]);
    assert_eq!(text(&out.stdout), "\"Hello, Ada!\"\n");
    // A folder that has files is not overwritten: a usage error.
    let again = runner().arg("new").arg(&dir).output().unwrap();
    assert_code(&again, 2);
    assert!(text(&again.stderr).contains("not empty"));
    // A name that cannot make a dotted tool name is refused before writing.
    let bad = parent.join("bad");
    let out = runner()
        .arg("new")
        .arg(&bad)
        .args(["--name", "Bad Name"])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(!bad.exists());
}

const DEBUG_TOOLS: &str = r#"
import os, sys
from nodus_extension.worker import register_tool, run_loop
def inner():
    raise ValueError("deep problem")
def fails(args):
    sys.stderr.write("worker says hi\n")
    sys.stderr.flush()
    inner()
register_tool("dbg.fails", fails)
register_tool("dbg.workspace", lambda args: os.environ.get("NODUS_WORKSPACE"))
register_tool("dbg.listdir", lambda args: sorted(os.listdir(os.environ["NODUS_WORKSPACE"])))
run_loop()
"#;

#[test]
fn verbose_forwards_stderr_and_shows_the_traceback() {
    let dir = ext(
        "dbg.ext",
        &["tool.invoke"],
        &["dbg.fails", "dbg.workspace"],
        DEBUG_TOOLS,
    );
    // Control: without -v, neither the worker's stderr nor a traceback.
    let out = invoke(dir.path(), "dbg.fails", "{}", &[]);
    assert_code(&out, 7);
    let err = text(&out.stderr);
    assert_eq!(err, "error: deep problem (InvokeError)\n");
    for flag in ["-v", "--verbose"] {
        let out = invoke(dir.path(), "dbg.fails", "{}", &[flag]);
        assert_code(&out, 7);
        let err = text(&out.stderr);
        assert!(err.contains("worker says hi"), "{err}");
        assert!(err.contains("Traceback (most recent call last)"), "{err}");
        assert!(err.contains("in inner"), "the full traceback: {err}");
        assert!(err.contains("ValueError: deep problem"), "{err}");
        assert!(!err.contains("boot.py"), "no runner frames: {err}");
        assert!(
            err.ends_with("error: deep problem (InvokeError)\n"),
            "{err}"
        );
    }
}

#[test]
fn a_startup_crash_keeps_its_traceback_lines_without_boot_frames() {
    let dir = ext(
        "dbg.crash",
        &["tool.invoke"],
        &["dbg.x"],
        "import os\nimport no_such_module_here\n",
    );
    let out = invoke(dir.path(), "dbg.x", "{}", &[]);
    assert_code(&out, 6);
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("error: extension worker closed stdout unexpectedly")
            && lines[0].ends_with("(SandboxError)"),
        "{err}"
    );
    // The traceback keeps its line breaks, indented under the error.
    assert!(
        lines.contains(&"    Traceback (most recent call last):"),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim() == "ModuleNotFoundError: No module named 'no_such_module_here'"),
        "{err}"
    );
    assert!(lines[1..].iter().all(|l| l.starts_with("  ")), "{err}");
    assert!(!err.contains("boot.py"), "no runner frames: {err}");
    assert!(!err.contains("_boot()"), "no runner frames: {err}");
}

#[test]
fn the_worker_is_told_its_workspace() {
    let dir = ext(
        "dbg.ws",
        &["tool.invoke", "filesystem.read"],
        &["dbg.workspace", "dbg.listdir"],
        DEBUG_TOOLS,
    );
    let ws = TempDir::new("workspace");
    std::fs::write(ws.join("a.txt"), "x").unwrap();
    let real = std::fs::canonicalize(ws.path()).unwrap();
    let ws_arg = ws.path().to_str().unwrap();
    let out = invoke(dir.path(), "dbg.workspace", "{}", &["--workspace", ws_arg]);
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout), format!("\"{}\"\n", real.display()));
    let out = invoke(dir.path(), "dbg.listdir", "{}", &["--workspace", ws_arg]);
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout), "[\"a.txt\"]\n");
    // Control: an extension without filesystem.* gets no workspace, and no variable.
    let plain = ext(
        "dbg.plain",
        &["tool.invoke"],
        &["dbg.workspace"],
        DEBUG_TOOLS,
    );
    let out = invoke(
        plain.path(),
        "dbg.workspace",
        "{}",
        &["--workspace", ws_arg],
    );
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout), "null\n");
}

const FILE_TOOLS: &str = r#"
import os, socket
from nodus_extension.worker import register_tool, run_loop
def read(args):
    with open(args["path"]) as f:
        return f.read()
def write(args):
    with open(args["path"], "w") as f:
        return f.write("x")
def caught(args):
    try:
        open(args["path"]).read()
    except OSError as e:
        return str(e)
def connect(args):
    s = socket.create_connection(("127.0.0.1", args["port"]), timeout=5)
    s.close()
    return "connected"
register_tool("fs.read", read)
register_tool("fs.write", write)
register_tool("fs.caught", caught)
register_tool("fs.connect", connect)
run_loop()
"#;

#[test]
fn file_denials_explain_themselves() {
    // Not under /tmp nor /var/tmp: in the private root both are the
    // worker's own scratch folder, where a missing name is just missing.
    // The project's target/ folder, unless the project itself lives under
    // /tmp (a CI clone): then /run.
    let target = common::root().join("target");
    let base = if target.starts_with(std::env::temp_dir()) {
        std::path::PathBuf::from("/run")
    } else {
        target
    };
    let outside = TempDir::new_in(&base, "outside");
    let secret = outside.join("secret.txt");
    std::fs::write(&secret, "SECRET-CONTENT").unwrap();
    let secret_s = secret.to_str().unwrap();
    let ws = TempDir::new("ws");
    std::fs::write(ws.join("ok.txt"), "fine").unwrap();
    let ws_arg = ws.path().to_str().unwrap();
    let audit = TempDir::new("audit");
    let audit_file = audit.join("audit.jsonl");
    let audit_arg = audit_file.to_str().unwrap();

    // Without filesystem.read: the capability is named.
    let dir = ext(
        "fs.none",
        &["tool.invoke"],
        &["fs.read", "fs.caught"],
        FILE_TOOLS,
    );
    let args = format!(r#"{{"path": "{secret_s}"}}"#);
    let out = invoke(dir.path(), "fs.read", &args, &["--audit", audit_arg]);
    assert_code(&out, 7);
    let err = text(&out.stderr);
    assert!(!text(&out.stdout).contains("SECRET-CONTENT"));
    // EACCES from Landlock, or ENOENT where the private root does not hold it.
    assert!(
        ["[Errno 13]", "[Errno 2]"]
            .iter()
            .any(|e| err.contains(&format!(
                "{e} denied open('{secret_s}'): filesystem.read not declared"
            ))),
        "{err}"
    );
    let trail = std::fs::read_to_string(&audit_file).unwrap();
    assert!(
        trail.lines().any(|l| l.contains("\"denial\"")
            && l.contains("filesystem.read")
            && l.contains(secret_s)),
        "{trail}"
    );

    // With it, a path outside the workspace: outside the granted paths.
    let dir = ext(
        "fs.ro",
        &["tool.invoke", "filesystem.read"],
        &["fs.read", "fs.write", "fs.caught"],
        FILE_TOOLS,
    );
    let out = invoke(dir.path(), "fs.read", &args, &["--workspace", ws_arg]);
    assert_code(&out, 7);
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "denied open('{secret_s}'): outside the granted paths"
        )),
        "{err}"
    );
    // Control: inside the workspace it reads.
    let ok = format!(r#"{{"path": "{}"}}"#, ws.join("ok.txt").display());
    let out = invoke(dir.path(), "fs.read", &ok, &["--workspace", ws_arg]);
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout), "\"fine\"\n");
    // A write into the read-only workspace names filesystem.write; the file stays as it was.
    let target = ws.join("ok.txt");
    let w = format!(r#"{{"path": "{}"}}"#, target.display());
    let out = invoke(dir.path(), "fs.write", &w, &["--workspace", ws_arg]);
    assert_code(&out, 7);
    let err = text(&out.stderr);
    assert!(err.contains("filesystem.write not declared"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "fine");
    // A tool that catches the error itself sees the kernel's error as before
    // (a PermissionError, or FileNotFoundError in the private root): only the
    // wording of an error that escapes the tool is the explanation.
    let out = invoke(dir.path(), "fs.caught", &args, &["--workspace", ws_arg]);
    assert_code(&out, 0);
    let caught = text(&out.stdout);
    assert!(
        caught.contains("[Errno 13] Permission denied")
            || caught.contains("[Errno 2] No such file or directory"),
        "{caught}"
    );
    // A missing file in a granted folder is still FileNotFoundError, not a denial.
    let missing = format!(r#"{{"path": "{}"}}"#, ws.join("nope").display());
    let out = invoke(dir.path(), "fs.read", &missing, &["--workspace", ws_arg]);
    assert_code(&out, 7);
    assert!(text(&out.stderr).contains("No such file or directory"));
}

const UNIX_TOOLS: &str = r#"
import socket
from nodus_extension.worker import register_tool, run_loop
def unix(args):
    a, b = socket.socketpair()  # always allowed (stream pairs)
    a.close(); b.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.close()
    return "made"
register_tool("ipc.unix", unix)
run_loop()
"#;

/// socket(AF_UNIX) works in the private root; where seccomp refuses it (no
/// mount namespace here) the error says what it needs, and socketpair still works.
#[test]
fn a_refused_unix_socket_says_what_it_needs() {
    let dir = ext("ipc.unix", &["tool.invoke"], &["ipc.unix"], UNIX_TOOLS);
    let shown = runner().arg("policy").arg(dir.path()).output().unwrap();
    if text(&shown.stdout).contains("private root: none") {
        eprintln!("SKIP: no mount namespace here, so no private root and no unix sockets");
        return;
    }
    let out = invoke(dir.path(), "ipc.unix", "{}", &[]);
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout), "\"made\"\n");
    let policy = TempDir::new("policy");
    let f = policy.join("policy.json");
    std::fs::write(
        &f,
        r#"{"mode": "best-effort", "layers": {"namespaces": false}}"#,
    )
    .unwrap();
    let out = invoke(
        dir.path(),
        "ipc.unix",
        "{}",
        &["--policy", f.to_str().unwrap()],
    );
    assert_code(&out, 7);
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "[Errno 1] denied socket(AF_UNIX): unix sockets need the worker's private root"
        ),
        "{err}"
    );
}

#[test]
fn a_port_outside_tcp_ports_names_the_rule() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let allowed = if port == 1 { 2 } else { 1 };
    let policy = TempDir::new("policy");
    let policy_file = policy.join("policy.json");
    std::fs::write(&policy_file, format!(r#"{{"tcp_ports": [{allowed}]}}"#)).unwrap();
    let dir = ext(
        "net.ports",
        &["tool.invoke", "network.outbound"],
        &["fs.connect"],
        FILE_TOOLS,
    );
    let args = format!(r#"{{"port": {port}}}"#);
    let out = invoke(
        dir.path(),
        "fs.connect",
        &args,
        &["--policy", policy_file.to_str().unwrap()],
    );
    let err = text(&out.stderr);
    if err.contains("landlock") && err.contains("degraded") {
        eprintln!("SKIP: Landlock TCP rules not enforced here: {err}");
        return;
    }
    assert_code(&out, 7);
    assert!(
        err.contains(&format!(
            "denied connect('127.0.0.1', {port}): port {port} is not in the operator's tcp_ports [{allowed}]"
        )),
        "{err}"
    );
    // Outside check: the listener got nothing.
    assert!(listener.accept().is_err(), "the listener was reached");
    // Control: with the port allowed, it connects.
    std::fs::write(&policy_file, format!(r#"{{"tcp_ports": [{port}]}}"#)).unwrap();
    let out = invoke(
        dir.path(),
        "fs.connect",
        &args,
        &["--policy", policy_file.to_str().unwrap()],
    );
    assert_code(&out, 0);
}

const MEMORY_TOOL: &str = r#"
from nodus_extension.worker import register_tool, run_loop
from nodus_extension_host import memory
register_tool("mem.put", lambda args: memory.put("k", 1))
register_tool("mem.fail", lambda args: 1 / 0)
run_loop()
"#;

#[test]
fn a_host_call_refused_for_a_capability_is_a_capability_error() {
    let db = TempDir::new("memdb");
    let db_file = db.join("m.sqlite3");
    let db_arg = db_file.to_str().unwrap();
    let dir = ext(
        "mem.ro",
        &["tool.invoke"],
        &["mem.put", "mem.fail"],
        MEMORY_TOOL,
    );
    let out = invoke(dir.path(), "mem.put", "{}", &["--memory-db", db_arg]);
    assert_code(&out, 5);
    assert_eq!(
        text(&out.stderr),
        "error: 'mem.ro' extension lacks capability: 'memory.write' (CapabilityError)\n"
    );
    // Control: a tool that fails for another reason stays an InvokeError.
    let out = invoke(dir.path(), "mem.fail", "{}", &["--memory-db", db_arg]);
    assert_code(&out, 7);
    // And with the capability, the call works.
    let dir = ext(
        "mem.rw",
        &["tool.invoke", "memory.write"],
        &["mem.put"],
        MEMORY_TOOL,
    );
    let out = invoke(dir.path(), "mem.put", "{}", &["--memory-db", db_arg]);
    assert_code(&out, 0);
}

#[test]
fn args_json_errors_are_usage_errors_and_dash_reads_stdin() {
    let dir = ext(
        "args.ext",
        &["tool.invoke"],
        &["args.echo"],
        "from nodus_extension.worker import register_tool, run_loop\nregister_tool('args.echo', lambda a: a)\nrun_loop()\n",
    );
    for bad in ["{nope", "{\"a\": }", "'single'"] {
        let out = invoke(dir.path(), "args.echo", bad, &[]);
        assert_code(&out, 2);
        let err = text(&out.stderr);
        assert!(
            err.starts_with("error: ARGS_JSON is not valid JSON"),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
    // `-` reads the arguments from stdin.
    let mut child = runner()
        .arg("invoke")
        .arg(dir.path())
        .arg("args.echo")
        .arg("-")
        .arg("--python")
        .arg(common::python())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"from": "stdin", "n": [1, 2]}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout), "{\"from\": \"stdin\", \"n\": [1, 2]}\n");
}

#[test]
fn non_finite_floats_come_back_at_once() {
    let dir = ext(
        "nan.ext",
        &["tool.invoke"],
        &["nan.values"],
        "from nodus_extension.worker import register_tool, run_loop\nregister_tool('nan.values', lambda a: [float('nan'), float('inf'), -float('inf'), 'NaN', 1.5])\nrun_loop()\n",
    );
    let t0 = Instant::now();
    let out = invoke(dir.path(), "nan.values", "{}", &["--timeout", "20"]);
    assert_code(&out, 0);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // As json.dumps prints them; the string "NaN" stays a string.
    assert_eq!(
        text(&out.stdout),
        "[NaN, Infinity, -Infinity, \"NaN\", 1.5]\n"
    );
}

#[test]
fn policy_accepts_only_the_flags_it_uses() {
    let dir = ext("flags.ext", &["tool.invoke"], &["flags.x"], "");
    for flag in [
        &["--audit", "/tmp/x"][..],
        &["--timeout", "3"],
        &["--memory-db", "/tmp/x"],
        &["--max-line", "10"],
        &["--schema", "off"],
    ] {
        let out = runner()
            .arg("policy")
            .arg(dir.path())
            .args(flag)
            .output()
            .unwrap();
        assert_code(&out, 2);
    }
    // `run` never checks schemas, so it has no --schema.
    let out = runner()
        .arg("run")
        .arg(dir.path())
        .args(["--schema", "off"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_code(&out, 2);
    // Control: the flags policy uses.
    let out = runner()
        .arg("policy")
        .arg(dir.path())
        .arg("--python")
        .arg(common::python())
        .arg("--json")
        .output()
        .unwrap();
    assert_code(&out, 0);
}

#[test]
fn completions_man_page_and_help_on_every_argument() {
    for shell in ["bash", "zsh", "fish"] {
        let out = runner().args(["completions", shell]).output().unwrap();
        assert_code(&out, 0);
        let script = text(&out.stdout);
        assert!(script.contains("ext-runner"), "{shell}");
        assert!(
            script.contains("invoke") && script.contains("workspace"),
            "{shell}"
        );
    }
    let out = runner().args(["completions", "tcsh"]).output().unwrap();
    assert_code(&out, 2);
    let out = runner().arg("man").output().unwrap();
    assert_code(&out, 0);
    let page = text(&out.stdout);
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(page.contains("ext\\-runner"), "{page}");
    // Every argument of every subcommand has help text.
    for sub in [
        "new",
        "validate",
        "describe",
        "invoke",
        "run",
        "policy",
        "probe",
        "completions",
    ] {
        let out = runner().args([sub, "--help"]).output().unwrap();
        assert_code(&out, 0);
        let help = text(&out.stdout);
        let lines: Vec<&str> = help.lines().collect();
        let mut section = "";
        for (i, line) in lines.iter().enumerate() {
            if line.ends_with(':') && !line.starts_with(' ') {
                section = line;
                continue;
            }
            let item = line.trim_start();
            let indent = line.len() - item.len();
            let is_item = (2..10).contains(&indent) && item.starts_with(['-', '<', '[']);
            if (section == "Arguments:" || section == "Options:") && is_item {
                // "<DIR>  The folder..." on one line, or (long help) the text on the next.
                let same_line = item.contains("  ");
                let next_line = lines
                    .get(i + 1)
                    .is_some_and(|n| n.starts_with("          ") && !n.trim().is_empty());
                assert!(
                    same_line || next_line,
                    "{sub}: no help for {item:?}\n{help}"
                );
            }
        }
    }
}

#[test]
fn policy_is_written_for_people_and_json_stays_the_machine_form() {
    let dir = ext(
        "pol.ext",
        &["tool.invoke", "filesystem.read", "subprocess.run"],
        &["pol.x"],
        "",
    );
    let ws = TempDir::new("ws");
    let real = std::fs::canonicalize(ws.path()).unwrap();
    let out = runner()
        .arg("policy")
        .arg(dir.path())
        .arg("--python")
        .arg(common::python())
        .arg("--workspace")
        .arg(ws.path())
        .output()
        .unwrap();
    assert_code(&out, 0);
    let text = text(&out.stdout);
    // No Rust Debug output.
    for debug in [
        "AllowIf(",
        "Errno(",
        "Namespaces {",
        "Limits {",
        "Some(",
        "wanted=",
        "{\"",
        "ReadWriteFile",
        "ExecFile",
        "Strict",
    ] {
        assert!(!text.contains(debug), "{debug:?} in:\n{text}");
    }
    // Grouped by capability: what each declared one grants, and what is not declared.
    assert!(
        text.contains(&format!(
            "  filesystem.read   reads the workspace {}",
            real.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("  subprocess.run    starts processes"),
        "{text}"
    );
    assert!(
        text.contains("not declared: filesystem.write, network.outbound"),
        "{text}"
    );
    // Each reason once.
    let reasons: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('(') && l.ends_with(')'))
        .collect();
    for r in &reasons {
        assert_eq!(
            reasons.iter().filter(|x| *x == r).count(),
            1,
            "{r} twice in:\n{text}"
        );
    }
    assert!(reasons.len() > 10, "{text}");
    assert!(text.contains("1 GiB of memory"), "{text}");
    // --json is the machine form, as before.
    let out = runner()
        .arg("policy")
        .arg(dir.path())
        .arg("--python")
        .arg(common::python())
        .arg("--workspace")
        .arg(ws.path())
        .arg("--json")
        .output()
        .unwrap();
    assert_code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["extension"], "pol.ext");
    assert!(v["seccomp"]["rules"].is_array(), "{v}");
    assert!(v["filesystem"].is_array(), "{v}");
}

const SLOW_TOOLS: &str = r#"
import time
from nodus_extension.worker import register_tool, run_loop
def slow(args):
    time.sleep(60)
    return "slow"
register_tool("lib.slow", slow)
register_tool("lib.fast", lambda args: "fast")
run_loop()
"#;

#[tokio::test(flavor = "multi_thread")]
async fn dropping_an_invoke_future_cancels_it() {
    use nodus_extension::ExtensionHost;
    let dir = ext(
        "lib.ext",
        &["tool.invoke"],
        &["lib.slow", "lib.fast"],
        SLOW_TOOLS,
    );
    let host = ExtensionHost::load(dir.path(), common::options())
        .await
        .unwrap();
    let first = host.worker_pid().await.unwrap();
    // The caller gives up on the slow call after 300 ms (its future is dropped).
    let gave_up =
        tokio::time::timeout(Duration::from_millis(300), host.invoke("lib.slow", "{}")).await;
    assert!(gave_up.is_err());
    // The next invoke does not wait behind it (the options' timeout is 20 s,
    // the slow tool 60 s): a fresh worker answers.
    let t0 = Instant::now();
    assert_eq!(host.invoke("lib.fast", "{}").await.unwrap(), "fast");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(host.worker_starts(), 2);
    // Outside check: the worker that ran the cancelled call is gone.
    assert!(
        common::wait_gone(first, Duration::from_secs(5)),
        "worker {first} still runs"
    );
    // Control: an invoke that is not dropped is not cancelled.
    assert_eq!(host.invoke("lib.fast", "{}").await.unwrap(), "fast");
    assert_eq!(host.worker_starts(), 2);
    host.unload().await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_blocking_facade_inside_a_runtime_is_an_error_not_a_panic() {
    use nodus_extension::blocking;
    let dir = ext("lib.blk", &["tool.invoke"], &["lib.fast"], SLOW_TOOLS);
    let registry = blocking::ExtensionRegistry::new(common::options()).unwrap();
    let err = registry.load(dir.path()).err().expect("refused");
    assert_eq!(err.class(), "SandboxError");
    assert!(err.to_string().contains("async"), "{err}");
    let err = registry.invoke("lib.blk", "lib.fast", "{}").unwrap_err();
    assert_eq!(err.class(), "SandboxError");
    // Lookups work, and dropping it here does not panic either.
    assert!(registry.get("lib.blk").is_none());
    assert!(registry.list_all().is_empty());
    drop(registry);
    // Control: the same facade outside a runtime loads and invokes.
    let path = dir.path().to_path_buf();
    let answer = std::thread::spawn(move || {
        let registry = blocking::ExtensionRegistry::new(common::options()).unwrap();
        registry.load(&path).unwrap();
        registry.invoke_value("lib.blk", "lib.fast", serde_json::json!({}))
    })
    .join()
    .unwrap()
    .unwrap();
    assert_eq!(answer, "fast");
}

/// A version manager's shim is asked once which interpreter it starts: the
/// answer is cached until the shim or a version file it reads changes.
#[test]
fn a_shims_answer_is_cached_until_its_inputs_change() {
    use std::os::unix::fs::PermissionsExt;
    let root = TempDir::new("shim-cache");
    let shim = root.join("python3");
    let asked = root.join("asked");
    let python = std::fs::canonicalize(common::python()).unwrap();
    let write_shim = |extra: &str| {
        std::fs::write(
            &shim,
            format!(
                "#!/bin/sh\n# {extra}\necho asked >> '{}'\nexec '{}' \"$@\"\n",
                asked.display(),
                python.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    write_shim("first");
    let project = root.join("project");
    std::fs::create_dir(&project).unwrap();
    let cache = root.join("cache");
    let times_asked = || {
        std::fs::read_to_string(&asked)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let policy = || {
        let out = runner()
            .arg("policy")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello"))
            .arg("--python")
            .arg(&shim)
            .arg("--json")
            .env("NODUS_EXTENSION_CACHE_DIR", &cache)
            .current_dir(&project)
            .output()
            .unwrap();
        assert_code(&out, 0);
        let said = text(&out.stdout);
        assert!(said.contains(python.to_str().unwrap()), "{said}");
    };
    policy();
    assert_eq!(times_asked(), 1, "the first start asks the shim");
    policy();
    policy();
    assert_eq!(times_asked(), 1, "later starts use the cached answer");

    // The shim changes: asked again.
    std::thread::sleep(Duration::from_millis(20));
    write_shim("second, longer than the first");
    policy();
    assert_eq!(times_asked(), 2, "a changed shim is asked again");

    // A version file appears in the current folder: asked again.
    std::fs::write(project.join(".python-version"), "3.11\n").unwrap();
    policy();
    assert_eq!(times_asked(), 3, "a new .python-version is asked again");
    policy();
    assert_eq!(times_asked(), 3);

    // A cache file others can write is not believed.
    let file = cache.join("interpreters.json");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    policy();
    assert_eq!(
        times_asked(),
        4,
        "a group- or world-writable cache is ignored"
    );
}
