//! The environment a worker sees: variables, identity, descriptors and what the runner leaks into them.

use super::*;

/// A secret in the runner's environment does not reach the worker.
#[test]
fn attack_env_host_secret_variable() {
    confined(FULL, |who| {
        let secret = token("ENVVAR");
        let code = r#"result = {"environ": dict(os.environ), "proc": attempt(lambda: open("/proc/self/environ").read())}"#;
        assert_control(
            &plain_with(who, code, &[("NODUS_HOST_SECRET", &secret)]),
            &secret,
            "plain child inherits the variable",
        );
        let mut s = Launch::new(who, &[])
            .env("NODUS_HOST_SECRET", &secret)
            .start();
        let r = s.exec(code);
        let w = s.worker_pid().expect("worker");
        let env = std::fs::read(format!("/proc/{w}/environ")).unwrap_or_default();
        let t = s.finish();
        assert_hidden(&t, &secret, "environment variable");
        assert!(
            !String::from_utf8_lossy(&env).contains(&secret),
            "in /proc/PID/environ"
        );
        let keys: Vec<String> = r.value()["environ"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        for k in &keys {
            assert!(
                [
                    "HOME",
                    "LANG",
                    "PATH",
                    "PYTHONDONTWRITEBYTECODE",
                    "MALLOC_ARENA_MAX",
                    "TMPDIR",
                    "LC_CTYPE"
                ]
                .contains(&k.as_str())
                    || k.starts_with("NODUS_EXTENSION_"),
                "unexpected variable {k}"
            );
        }
    });
}

/// Descriptors the runner inherited without O_CLOEXEC (fd 7 and 4 on a secret
/// file) are not open in the worker.
#[test]
fn attack_env_inherited_descriptor() {
    confined(FULL, |who| {
        let d = world_dir("fd");
        let secret = token("FDSECRET");
        let f = d.join("secret");
        owned_file(Who::Root, &f, &secret, 0o644);
        let prefix = format!("exec 7<{0}; exec 4<{0}", f.display());
        let code = r#"
found = {}
for fd in range(3, 1024):
    try:
        os.lseek(fd, 0, 0)
        found[fd] = os.read(fd, 200).decode(errors="replace")
    except OSError:
        pass
result = {"found": found, "fd7": attempt(lambda: os.read(7, 100))}
"#;
        // Control: the same wrapper around a plain interpreter leaks it.
        let out = who
            .command("bash")
            .arg("-c")
            .arg(format!(
                "{prefix}\nexec \"$0\" -c 'import os; print(os.read(7, 100))'"
            ))
            .arg(who.python())
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&secret),
            "control: the wrapper does not leave fd 7 open: {out:?}"
        );
        let mut s = Launch::new(who, &[]).shell_prefix(&prefix).start();
        let r = s.exec(code);
        let w = s.worker_pid().expect("worker");
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{w}/fd"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let t = s.finish();
        assert_hidden(&t, &secret, "inherited descriptor");
        assert_eq!(r.field("fd7"), "EBADF", "{r:?}");
        let mut fds: Vec<i32> = fds.iter().filter_map(|f| f.parse().ok()).collect();
        fds.sort();
        assert_eq!(fds, vec![0, 1, 2], "the worker holds other descriptors");
    });
}
