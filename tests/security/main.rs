//! The security suite, one file per area (`fs`, `fs_modes`, `root`,
//! `processes`, `network`, `egress`, `kernel`, `resources`, `environment`,
//! `controls`): real workers started through the real `ext-runner`,
//! attacked from inside with short Python snippets and judged from outside
//! (files on the host, listeners the test opened, victims' /proc entries, the
//! runner's whole transcript). Every attack and control runs as root and as
//! uid 65534 (`setpriv`, system python).
//!
//! Each attack first proves that its check can fail: the same snippet run
//! outside the sandbox (`plain`), or the same worker with the capability
//! granted, must trip it. Tests named `gap_*` document a real gap: they are
//! `#[ignore]`d with the reason, and pass once the gap is closed.
//!
//! Needs root (for both identities), x86_64, Landlock ABI >= 6; a missing
//! kernel feature prints `SKIP: <feature> missing`.

#[path = "../common/mod.rs"]
mod common;

mod controls;
mod egress;
mod environment;
mod fs;
mod fs_modes;
mod kernel;
mod network;
mod processes;
mod resources;
mod root;

pub(crate) use std::os::unix::fs::PermissionsExt;
pub(crate) use std::path::Path;
pub(crate) use std::time::Duration;

pub(crate) use common::sandbox::*;
pub(crate) use serde_json::json;

/// Asserts that a secret appears nowhere in what the runner wrote.
#[track_caller]
pub(crate) fn assert_hidden(t: &Transcript, secret: &str, what: &str) {
    assert!(
        !t.contains(secret),
        "{what}: the secret reached the runner's output\n{}",
        t.all()
    );
}

/// Asserts a plain (unsandboxed) run saw `needle`: the check can fail.
#[track_caller]
pub(crate) fn assert_control(v: &serde_json::Value, needle: &str, what: &str) {
    assert!(
        v.to_string().contains(needle),
        "control failed ({what}): outside the sandbox the attack should work, got {v}"
    );
}

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Checks, after a bomb: another extension answers, and nothing of the bomb's worker remains.
pub(crate) fn assert_host_healthy(who: Who, leftovers: &[i32]) {
    for p in leftovers {
        assert!(
            common::wait_gone(*p, Duration::from_secs(5)),
            "process {p} of the worker remains"
        );
    }
    let hello = hello_copy();
    let out = who
        .command(runner(who))
        .args(["invoke"])
        .arg(hello.path())
        .args(["example.greet", r#"{"name": "after"}"#, "--python"])
        .arg(who.python())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "\"Hello, after!\"",
        "host unhealthy: {out:?}"
    );
}

/// The hello example, copied where every user can read it.
pub(crate) fn hello_copy() -> common::TempDir {
    let d = world_dir("hello");
    for f in ["nodus-extension.json", "extension.py"] {
        std::fs::copy(common::root().join("examples/hello").join(f), d.join(f)).unwrap();
        chmod(&d.join(f), 0o644);
    }
    d
}
