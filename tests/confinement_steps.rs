//! A confinement step that fails in the worker's process (between fork and
//! exec) is named in the error, with its errno: each test makes one step
//! fail for real (a system call refused by a seccomp filter around the
//! runner, `examples/failcall`, or a hard limit below the policy's) and runs
//! the same invoke without that first (the control: the launch works).

mod common;

use std::ffi::OsString;
use std::process::{Command, Output, Stdio};

use common::failcall;
use common::sandbox::{runner, sec_ext, Who, SYSTEM_PYTHON};

/// `prefix… ext-runner invoke EXT sec.run {"code": "1"}` as `who`.
fn invoke(who: Who, prefix: &[OsString]) -> Output {
    invoke_with(who, prefix, &who.python(), "result = 6 * 7")
}

/// `invoke` with another interpreter and snippet.
fn invoke_with(who: Who, prefix: &[OsString], python: &std::path::Path, code: &str) -> Output {
    let ext = sec_ext(&[]);
    let mut argv: Vec<OsString> = prefix.to_vec();
    if who == Who::Nobody {
        argv.extend(common::envs::setpriv_prefix());
    }
    argv.push(runner(who).into());
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..])
        .arg("invoke")
        .arg(ext.path())
        .args([
            "sec.run",
            &serde_json::json!({ "code": code }).to_string(),
            "--python",
        ])
        .arg(python)
        .stdin(Stdio::null());
    c.output().expect("run ext-runner")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

/// The control works, and with `call` refused the launch fails naming `step`.
fn fails_at(who: Who, call: &str, errno: &str, step: &str) {
    let control = invoke(who, &[]);
    assert!(
        control.status.success() && text(&control).contains("42"),
        "control: {}",
        text(&control)
    );
    let prefix: Vec<OsString> = vec![failcall().into(), call.into(), errno.into(), "--".into()];
    let out = invoke(who, &prefix);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(6), "{call}: {t}");
    let want = format!("confinement step {step} failed: {errno} (");
    assert!(t.contains(&want), "{call}: expected {want:?} in: {t}");
    assert!(t.trim_end().ends_with("(SandboxError)"), "{t}");
    eprintln!("{call} refused: {}", t.trim());
}

#[test]
fn a_refused_landlock_restrict_self_is_named() {
    if !Who::Root.available() {
        return;
    }
    fails_at(
        Who::Root,
        "landlock_restrict_self",
        "EPERM",
        "landlock_restrict_self",
    );
}

#[test]
fn a_refused_read_only_remount_is_seen_by_the_probe() {
    // The probe takes the launch's mount steps (issue 12 item 2): a refused
    // mount_setattr is found before any worker starts, named with its errno,
    // and the worker starts without a mount namespace (seccomp then refuses
    // metadata changes, tests/env_matrix.rs) instead of failing at launch.
    if !Who::Root.available() {
        return;
    }
    let control = invoke(Who::Root, &[]);
    assert!(control.status.success(), "control: {}", text(&control));
    let prefix: Vec<OsString> = vec![
        failcall().into(),
        "mount_setattr".into(),
        "EPERM".into(),
        "--".into(),
    ];
    let probe = Command::new(&prefix[0])
        .args(&prefix[1..])
        .arg(runner(Who::Root))
        .arg("probe")
        .output()
        .expect("run ext-runner probe");
    let p = text(&probe);
    assert!(probe.status.success(), "{p}");
    assert!(p.contains("mount_namespaces       false"), "{p}");
    assert!(
        p.contains(r#"mount_setattr(\"/\", MOUNT_ATTR_RDONLY): EPERM"#),
        "{p}"
    );
    // Without a mount namespace root's worker takes a uid of its own only
    // with an interpreter other users can reach (root's pyenv is under its
    // 0700 home: strict refuses that, `unprivileged_identity: lost`).
    let out = invoke_with(
        Who::Root,
        &prefix,
        std::path::Path::new(SYSTEM_PYTHON),
        "result = 6 * 7 + os.getuid() * 0 if os.getuid() else 0",
    );
    let t = text(&out);
    assert!(out.status.success() && t.contains("42"), "{t}");
}

#[test]
fn a_refused_capset_is_named() {
    // Root only: the filter goes around the runner, and setpriv (the way to
    // the unprivileged identity) needs capset itself.
    if !Who::Root.available() {
        return;
    }
    fails_at(Who::Root, "capset", "EPERM", "capset");
}

#[test]
fn a_refused_seccomp_filter_is_named() {
    if !Who::Root.available() {
        return;
    }
    fails_at(
        Who::Root,
        "seccomp",
        "EACCES",
        "seccomp(SECCOMP_SET_MODE_FILTER) (filter 1)",
    );
}

#[test]
fn a_hard_limit_below_the_policys_is_named_with_what_to_do() {
    // An unprivileged runner cannot raise its own hard limit (a container's
    // --ulimit nofile=32:32): the policy's open-file limit cannot be set.
    let who = Who::Nobody;
    if !who.available() {
        return;
    }
    let prlimit: Vec<OsString> = ["prlimit", "--nofile=32:32"].map(OsString::from).to_vec();
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("SKIP: prlimit (util-linux) missing");
        return;
    }
    let control = invoke(who, &[]);
    assert!(control.status.success(), "control: {}", text(&control));
    let out = invoke(who, &prlimit);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(6), "{t}");
    assert!(
        t.contains("confinement step setrlimit(RLIMIT_NOFILE) failed: EPERM (")
            && t.contains("\"open_files\""),
        "{t}"
    );
}
