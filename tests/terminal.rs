//! Worker text never reaches the operator's terminal raw: a tool's error, a
//! stderr tail, a denial's detail and the stderr `run` forwards are escaped
//! (issue 17 item 7). Judged on the runner's stderr bytes: no control
//! character but line feeds, no C1 control, no bidi override, and no line
//! the worker wrote that starts like the runner's own (`error:`, `warning:`,
//! `ext-runner:`). The control run shows the same check catching the worker's
//! text when nothing escapes it.

mod common;

use std::io::{BufRead, Write};
use std::process::{Command, Output, Stdio};

use common::ext;

const T: &[&str] = &["tool.invoke"];

/// Python source of a string that clears the screen, homes the cursor, sets
/// the clipboard (OSC 52) and the window title (OSC 0), colours through a C1
/// CSI, returns the carriage, reverses the text, deletes, and then prints a
/// line of the runner's own shape.
const NASTY: &str = r#""\x1b[2J\x1b[H\x1b]52;c;cHduZWQ=\x07\x1b]0;owned\x07\x9b31mred\r\u202eevil\x7f\x08\nerror: fake failure (SandboxError)\nwarning: sandbox disabled\n""#;

/// What on `stderr` a worker could have used against a terminal, or a line
/// that reads as the runner's and is not one of `ours`.
fn findings(stderr: &[u8], ours: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(b) = stderr
        .iter()
        .find(|&&b| (b < 0x20 && b != b'\n') || b == 0x7f)
    {
        found.push(format!("control byte 0x{b:02x}"));
    }
    let text = String::from_utf8_lossy(stderr);
    if let Some(c) = text
        .chars()
        .find(|c| ('\u{80}'..='\u{9f}').contains(c) || ('\u{202a}'..='\u{202e}').contains(c))
    {
        found.push(format!("control character U+{:04X}", c as u32));
    }
    for line in text.lines() {
        let runner_like = ["error:", "warning:", "ext-runner:"]
            .iter()
            .any(|p| line.starts_with(p));
        if runner_like && !ours.iter().any(|o| line.starts_with(o)) {
            found.push(format!("a line of the runner's shape: {line:?}"));
        }
    }
    found
}

fn tool(body: &str) -> String {
    format!(
        "import json, os, sys, time\nfrom nodus_extension.worker import register_tool, run_loop\nNASTY = {NASTY}\n\ndef run(args):\n{}\n\nregister_tool('t.x.run', run)\nrun_loop()\n",
        body.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
    )
}

fn invoke(dir: &common::TempDir) -> Output {
    Command::new(common::ext_runner())
        .arg("invoke")
        .arg(dir.path())
        .arg("t.x.run")
        .arg("--python")
        .arg(common::python())
        .output()
        .unwrap()
}

#[test]
fn control_the_check_catches_the_workers_text_printed_raw() {
    let out = Command::new(common::python())
        .arg("-c")
        .arg(format!("import sys\nsys.stderr.write({NASTY})"))
        .output()
        .unwrap();
    let found = findings(&out.stderr, &[]);
    for kind in ["control byte", "control character", "runner's shape"] {
        assert!(
            found.iter().any(|f| f.contains(kind)),
            "the check misses {kind}: {found:?}"
        );
    }
}

#[test]
fn a_tools_error_string_is_escaped() {
    let d = ext("t.x", T, &["t.x.run"], &tool("raise RuntimeError(NASTY)"));
    let out = invoke(&d);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        findings(&out.stderr, &["error: "]),
        Vec::<String>::new(),
        "{err}"
    );
    // One error line; the message's other lines (issue 14: line breaks kept)
    // indented under it, so none can start like the runner's.
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: ") && first.ends_with("(InvokeError)"),
        "{err}"
    );
    assert!(err.lines().skip(1).all(|l| l.starts_with("  ")), "{err}");
    assert!(
        err.contains(r"\x1b]52;c;cHduZWQ=\x07") && err.contains(r"\u009b31m"),
        "escaped, still readable: {err}"
    );
}

#[test]
fn a_stderr_tail_is_escaped() {
    let d = ext(
        "t.x",
        T,
        &["t.x.run"],
        &tool("sys.stderr.write(NASTY)\nsys.stderr.flush()\nos._exit(3)"),
    );
    let out = invoke(&d);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        findings(&out.stderr, &["error: "]),
        Vec::<String>::new(),
        "{err}"
    );
    assert!(err.lines().skip(1).all(|l| l.starts_with("  ")), "{err}");
    assert!(
        err.contains("exited with status 3") && err.contains(r"\x1b[2J"),
        "{err}"
    );
}

#[test]
fn run_forwards_the_workers_stderr_and_denials_escaped() {
    // Straight on stderr; a runner prefix split over two writes; a line
    // left open when a denial notice comes, then a runner-shaped line; and
    // a denial whose detail is the same text.
    let body = r#"sys.stderr.write(NASTY)
sys.stderr.flush()
sys.stderr.write('err')
sys.stderr.flush()
time.sleep(0.2)
sys.stderr.write('or: split over two writes\n')
sys.stderr.write('left open ')
sys.stderr.flush()
time.sleep(0.2)
sys.stdout.write(json.dumps({'op': 'denial', 'capability': 'network.outbound', 'detail': NASTY}) + '\n')
sys.stdout.flush()
time.sleep(0.2)
sys.stderr.write('error: after the notice\n')
sys.stderr.flush()
time.sleep(0.2)
return 'done'"#;
    let d = ext("t.x", T, &["t.x.run"], &tool(body));
    let mut child = Command::new(common::ext_runner())
        .arg("run")
        .arg(d.path())
        .arg("--python")
        .arg(common::python())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(
        stdin,
        r#"{{"id": "1", "op": "invoke", "name": "t.x.run", "args": {{}}}}"#
    )
    .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("done"), "{line}");
    writeln!(stdin, r#"{{"op": "shutdown"}}"#).unwrap();
    drop(stdin);
    let mut stderr = Vec::new();
    std::io::Read::read_to_end(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let err = String::from_utf8_lossy(&stderr);
    assert_eq!(
        findings(&stderr, &["ext-runner: denied "]),
        Vec::<String>::new(),
        "{err}"
    );
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("ext-runner: denied "))
            .count(),
        1,
        "the notice is one line of its own: {err}"
    );
    for shown in [
        r"\x1b]52;c;cHduZWQ=\x07",
        "(worker) error: fake failure",
        "(worker) error: split over two writes",
        "(worker) error: after the notice",
    ] {
        assert!(err.contains(shown), "{shown:?} missing: {err}");
    }
}

#[test]
fn a_manifests_text_is_printed_as_ascii_json() {
    // The manifest is the extension author's too: validate and describe
    // print it as the reference does (json.dumps, ensure_ascii).
    let nasty = "\u{1b}]52;c;cHduZWQ=\u{7}\u{9b}2J\u{202e}\u{7f}";
    let m = serde_json::json!({"name": "t.x", "version": "1", "description": nasty,
        "capabilities": T, "surfaces": {"tools": [{"name": "t.x.run", "description": nasty}]}});
    let d = common::write_ext(Some(&m.to_string()), Some("pass\n"));
    for sub in ["validate", "describe"] {
        let out = Command::new(common::ext_runner())
            .arg(sub)
            .arg(d.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{sub}: {out:?}");
        assert!(out.stdout.is_ascii(), "{sub}");
        assert_eq!(findings(&out.stdout, &[]), Vec::<String>::new(), "{sub}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["description"], nasty, "{sub}: the text itself is kept");
    }
}
