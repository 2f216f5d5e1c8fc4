//! The environment matrix (issue 12): in each deployment environment built
//! on this machine (tests/common/envs.rs), what strict and best-effort mode
//! do with the bundled example and with a `subprocess.run` worker, and the
//! attacks of the security suite judged from outside the worker (canary
//! files, a loopback listener, a unix socket trap, a victim process of the
//! same user). In a cell where strict mode starts, every attack must be
//! stopped; best-effort must start everywhere. The table goes to stdout and
//! `target/env-matrix.md`; docs/security.md quotes it.
//!
//! The real containers (Docker, rootless Podman) run this same binary
//! inside (`inside_container`, through scripts/docker-env and
//! scripts/podman-env), where the container is the host.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::envs::Env;
use common::sandbox::*;
use serde_json::json;

/// One cell: an environment and who runs the runner in it.
#[derive(Clone, Copy)]
struct Cell {
    env: Env,
    who: Who,
    /// A root runner's workers: the default identity, or a range of the
    /// operator's (`worker_ids`).
    ids: Ids,
    /// Another interpreter than `who`'s (root's is under its 0700 home).
    python: Option<&'static str>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ids {
    Default,
    Operator,
    /// The default `worker_ids`, in a user namespace that maps 0..65535 but
    /// not the default range: the range derived from the map.
    Derived,
}

/// The range derived from a 0..65535 map (`IdentityFacts::derived_worker_ids`).
const DERIVED_IDS: (u32, u32) = (64_510, 1_024);

/// The operator range of the `Ids::Operator` cell (above the default one).
const OPERATOR_IDS: (u32, u32) = (1_879_113_728, 64);

impl Cell {
    const fn new(env: Env, who: Who) -> Cell {
        Cell {
            env,
            who,
            ids: Ids::Default,
            python: None,
        }
    }

    fn label(&self) -> String {
        let mut l = self.who.label().to_string();
        if self.ids == Ids::Operator {
            l.push_str(" (worker_ids set)");
        }
        if let Some(p) = self.python {
            l.push_str(&format!(", {p}"));
        }
        l
    }

    fn python(&self) -> std::path::PathBuf {
        self.python
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| self.who.python())
    }

    /// The operator policy of this cell in `mode`.
    fn policy(&self, mode: &str) -> serde_json::Value {
        let mut p = json!({"mode": mode});
        if self.ids == Ids::Operator {
            p["worker_ids"] = json!({"first": OPERATOR_IDS.0, "count": OPERATOR_IDS.1});
        }
        p
    }
}

const CELLS: &[Cell] = &[
    Cell::new(Env::Host, Who::Root),
    Cell {
        ids: Ids::Operator,
        ..Cell::new(Env::Host, Who::Root)
    },
    Cell::new(Env::Host, Who::Nobody),
    Cell::new(Env::DockerLike, Who::Root),
    // As a Docker image has it: an interpreter other users can reach.
    Cell {
        python: Some(SYSTEM_PYTHON),
        ..Cell::new(Env::DockerLike, Who::Root)
    },
    Cell::new(Env::DockerLike, Who::Nobody),
    Cell::new(Env::AppArmorUserns, Who::Nobody),
    Cell::new(Env::Ubuntu2404, Who::Nobody),
    Cell::new(Env::LandlockAbi(5), Who::Nobody),
    Cell::new(Env::LandlockAbi(1), Who::Nobody),
    Cell::new(Env::NoLandlock, Who::Root),
    Cell::new(Env::UsernsLimits, Who::Root),
    Cell::new(Env::UsernsLimits, Who::Nobody),
    // As in a Kubernetes pod (hostUsers: false) or rootless Podman: the
    // default range unmapped, 0..65535 mapped, no namespaces to make.
    Cell {
        ids: Ids::Derived,
        python: Some(SYSTEM_PYTHON),
        ..Cell::new(Env::UsernsLimitsMapped, Who::Root)
    },
    Cell::new(Env::UsernsLimitsMapped, Who::Nobody),
    Cell::new(Env::CgroupV2, Who::Root),
    Cell::new(Env::CgroupRo, Who::Root),
];

/// What a mode did with a worker: started, or refused with the first words of why.
fn outcome(r: &Reply, t: &Transcript) -> String {
    match r {
        Reply::Value(_) | Reply::Raised(_) => "starts".into(),
        _ => {
            let err = t
                .stderr
                .lines()
                .find(|l| l.starts_with("error:"))
                .unwrap_or("no answer")
                .to_string();
            let short: String = err
                .trim_start_matches("error: ")
                .trim_start_matches("strict mode: ")
                .chars()
                .take(60)
                .collect();
            format!("refuses ({short}…)")
        }
    }
}

struct Ctx {
    cell: Cell,
    mode: &'static str,
}

impl Ctx {
    fn launch(&self, caps: &[&str]) -> Launch {
        let mut l = Launch::new(self.cell.who, caps).policy(self.cell.policy(self.mode));
        if let Some(p) = self.cell.python {
            l = l.python(std::path::Path::new(p));
        }
        if self.cell.env == Env::Host {
            l
        } else {
            l.in_env(self.cell.env)
        }
    }
}

/// true: stopped, judged from outside.
type Attack = fn(&Ctx) -> bool;

fn secret_file(c: &Ctx) -> bool {
    let host = world_dir("host");
    let secret = token("SECRET");
    owned_file(c.cell.who, &host.join("s"), &secret, 0o644);
    let code = snippet("result = open(@P@).read()", &[("P", lit(host.join("s")))]);
    let (_, t) = run_once(c.launch(&[]), &code);
    !t.contains(&secret)
}

fn write_outside(c: &Ctx) -> bool {
    let d = open_dir("out");
    let code = snippet(
        r#"open(@P@, "w").write("x"); result = 1"#,
        &[("P", lit(d.join("canary")))],
    );
    run_once(c.launch(&[]), &code);
    !d.join("canary").exists()
}

fn chmod_host_file(c: &Ctx) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let d = world_dir("host");
    owned_file(c.cell.who, &d.join("f"), "x", 0o600);
    let code = snippet(
        "os.chmod(@F@, 0o666); result = 1",
        &[("F", lit(d.join("f")))],
    );
    run_once(c.launch(&[]), &code);
    std::fs::metadata(d.join("f")).unwrap().permissions().mode() & 0o777 == 0o600
}

fn tcp_loopback(c: &Ctx) -> bool {
    let trap = Trap::tcp();
    let code = format!("result = raw_connect(2, 1, ('127.0.0.1', {}))", trap.port);
    run_once(c.launch(&[]), &code);
    std::thread::sleep(Duration::from_millis(100));
    trap.hits() == 0
}

fn unix_socket_by_path(c: &Ctx) -> bool {
    let d = world_dir("sock");
    let trap = Trap::unix_stream(&d.join("docker.sock"));
    let code = snippet("result = raw_connect(1, 1, @S@)", &[("S", lit(&trap.name))]);
    run_once(c.launch(&["network.outbound"]), &code);
    std::thread::sleep(Duration::from_millis(100));
    trap.hits() == 0
}

fn dgram_via_socketpair(c: &Ctx) -> bool {
    let d = world_dir("sock");
    let trap = Trap::unix_dgram(&d.join("log.sock"));
    let code = snippet("import socket\na, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\na.sendto(b'x', @S@)\nresult = 1", &[("S", lit(&trap.name))]);
    run_once(c.launch(&[]), &code);
    std::thread::sleep(Duration::from_millis(100));
    trap.hits() == 0
}

fn signal_host_process(c: &Ctx) -> bool {
    let v = Victim::sleep(c.cell.who);
    let code = format!(
        "import signal; os.kill({}, signal.SIGKILL); result = 1",
        v.pid
    );
    run_once(c.launch(&[]), &code);
    std::thread::sleep(Duration::from_millis(100));
    v.alive()
}

fn fork_without_subprocess(c: &Ctx) -> bool {
    let ws = owned_dir(c.cell.who, "ws");
    let code = snippet(
        "p = raw_fork()\nif p == 0:\n    open(@C@, 'w').write('x'); os._exit(0)\nif p > 0:\n    os.waitpid(p, 0)\nresult = 1",
        &[("C", lit(ws.join("canary")))],
    );
    run_once(c.launch(&["filesystem.write"]).workspace(ws.path()), &code);
    !ws.join("canary").exists()
}

fn exec_without_subprocess(c: &Ctx) -> bool {
    let ws = owned_dir(c.cell.who, "ws");
    let code = snippet(
        r#"result = raw_exec("/bin/sh", ["sh", "-c", "echo x > " + @C@])"#,
        &[("C", lit(ws.join("canary")))],
    );
    run_once(c.launch(&["filesystem.write"]).workspace(ws.path()), &code);
    !ws.join("canary").exists()
}

fn setuid_bit_in_workspace(c: &Ctx) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let ws = owned_dir(c.cell.who, "ws");
    let code = snippet(
        "import shutil\np = @D@\nfd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o4755); os.close(fd)\ntry:\n    os.chmod(p, 0o6755)\nexcept OSError:\n    pass\nresult = 1",
        &[("D", lit(ws.join("suid")))],
    );
    run_once(c.launch(&["filesystem.write"]).workspace(ws.path()), &code);
    std::fs::metadata(ws.join("suid"))
        .map(|m| m.permissions().mode() & 0o6000 == 0)
        .unwrap_or(true)
}

const ATTACKS: &[(&str, Attack)] = &[
    ("read a secret file", secret_file),
    ("write outside the grants", write_outside),
    ("chmod a host file", chmod_host_file),
    ("TCP to a loopback listener", tcp_loopback),
    ("unix socket by path", unix_socket_by_path),
    ("datagram through socketpair", dgram_via_socketpair),
    ("signal a host process", signal_host_process),
    ("fork without subprocess.run", fork_without_subprocess),
    ("exec without subprocess.run", exec_without_subprocess),
    ("setuid bit in the workspace", setuid_bit_in_workspace),
];

/// Who the worker runs as, judged from outside (the real uid in
/// /proc/PID/status), the name its /etc/passwd gives it
/// (`getpass.getuser()`), and the control that gives the workspace attacks
/// (fork, exec, setuid bit) their meaning: a file written into the workspace
/// appears there, and its owner on disk. Then `shutil.copy2` of a file of
/// the workspace's owner into the workspace, judged by the copy's times
/// (copy2 sets them: without a mount namespace the runner's supervisor does
/// it, issue 12 item 4; under another seccomp supervisor it cannot, and the
/// report must say so). Wrong: a root runner's worker running as uid 0
/// without saying why, a worker of the wrong uid, a worker that starts and
/// cannot write its workspace, or copy2 failing without the report's word.
fn identity(c: &Ctx) -> (String, bool) {
    use std::os::unix::fs::MetadataExt;
    let ws = owned_dir(c.cell.who, "ws");
    owned_file(c.cell.who, &ws.join("src"), "x", 0o640);
    let old = nix::sys::time::TimeSpec::new(1_000_000_000, 0);
    nix::sys::stat::utimensat(
        None,
        &ws.join("src"),
        &old,
        &old,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let mut s = c.launch(&["filesystem.write"]).workspace(ws.path()).start();
    let code = snippet(
        "import getpass, shutil\ntry:\n    name = getpass.getuser()\nexcept Exception:\n    name = '?'\nopen(@W@, 'w').write('x')\ntry:\n    shutil.copy2(@S@, @D@)\nexcept OSError as e:\n    name += ' ' + type(e).__name__\nresult = name",
        &[
            ("W", lit(ws.join("written"))),
            ("S", lit(ws.join("src"))),
            ("D", lit(ws.join("dst"))),
        ],
    );
    let r = s.exec(&code);
    let uid = uid_from_outside(&s);
    let t = s.finish();
    let own_range = match c.cell.ids {
        Ids::Default => (1_879_048_192u64, 65_536u64),
        Ids::Operator => (u64::from(OPERATOR_IDS.0), u64::from(OPERATOR_IDS.1)),
        Ids::Derived => (u64::from(DERIVED_IDS.0), u64::from(DERIVED_IDS.1)),
    };
    let own = |uid: u32| (own_range.0..own_range.0 + own_range.1).contains(&u64::from(uid));
    let Reply::Value(name) = &r else {
        // Strict mode may refuse (it says why); best effort must start. A
        // root runner's worker without a workspace shows its uid instead.
        let refused = outcome(&r, &t);
        if c.mode != "strict" || c.cell.who != Who::Root {
            return (refused, c.mode == "strict");
        }
        let mut s = c.launch(&[]).start();
        let r = s.exec("result = 1");
        let uid = uid_from_outside(&s).unwrap_or(u32::MAX);
        let t = s.finish();
        return match r {
            Reply::Value(_) => (
                format!(
                    "uid {uid}{} (a worker without a workspace); the filesystem.write worker {refused}",
                    if own(uid) { ", its own" } else { "" }
                ),
                own(uid),
            ),
            _ => (format!("{refused}; without a workspace too: {}", outcome(&r, &t)), true),
        };
    };
    let uid = uid.unwrap_or(u32::MAX);
    let owner = std::fs::metadata(ws.join("written")).map(|m| m.uid()).ok();
    let copied = std::fs::metadata(ws.join("dst")).is_ok_and(|m| m.mtime() == 1_000_000_000);
    let said = t
        .stderr
        .contains("workspace_metadata: chmod and utime are refused");
    let own = own(uid);
    let text = format!(
        "uid {uid}{} ({}); its file in the workspace {}; copy2 {}",
        if own { ", its own" } else { "" },
        name.as_str().unwrap_or("?"),
        match owner {
            Some(o) => format!("owned by uid {o}"),
            None => "**not written**".into(),
        },
        if copied {
            "keeps the times"
        } else if said {
            "fails (reported: no supervisor)"
        } else {
            "**fails**"
        },
    );
    let ok = owner.is_some()
        && (copied || said)
        && match c.cell.who {
            Who::Nobody => uid == NOBODY,
            // uid 0 only where best effort's report says why.
            Who::Root => {
                own || (uid == 0
                    && c.mode == "best-effort"
                    && t.stderr.contains("unprivileged_identity: lost"))
            }
        };
    (text, ok)
}

/// The worker's real uid, read from outside (/proc/PID/status; the suite
/// runs in the initial user namespace, where the id maps of the matrix's
/// nested namespaces are the identity).
fn uid_from_outside(s: &Session) -> Option<u32> {
    s.worker_pid()
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .and_then(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().and_then(|u| u.parse().ok()))
        })
}

/// What a mode does with the bundled example (`ext-runner invoke`) and with
/// a subprocess.run worker, and the best-effort report on stderr.
fn starts(c: &Ctx) -> (String, String, Option<String>) {
    let hello = copied_example();
    let pol = world_dir("env-policy");
    let file = pol.join("policy.json");
    std::fs::write(&file, c.cell.policy(c.mode).to_string()).unwrap();
    chmod(&file, 0o644);
    let out = c
        .cell
        .env
        .command(c.cell.who, runner(c.cell.who))
        .arg("invoke")
        .arg(hello.path())
        .args(["example.greet", r#"{"name": "Ada"}"#, "--python"])
        .arg(c.cell.python())
        .arg("--policy")
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .expect("ext-runner invoke");
    let t = Transcript {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: Some(out.status),
    };
    let example = if t.stdout.contains("Hello, Ada!") {
        "starts".to_string()
    } else {
        outcome(&Reply::Gone, &t)
    };
    let (r, t) = run_once(
        c.launch(&["subprocess.run"]),
        "import subprocess\nresult = subprocess.run(['/bin/true']).returncode",
    );
    let degraded = t
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("warning: sandbox degraded: "))
        .map(str::to_string);
    (example, outcome(&r, &t), degraded)
}

/// The bundled example in a folder every user can read.
fn copied_example() -> common::TempDir {
    let d = world_dir("hello");
    for f in ["nodus-extension.json", "extension.py"] {
        std::fs::copy(common::root().join("examples/hello").join(f), d.join(f)).unwrap();
        chmod(&d.join(f), 0o644);
    }
    d
}

fn row(cell: Cell) -> (String, bool) {
    let strict = Ctx {
        cell,
        mode: "strict",
    };
    let best = Ctx {
        cell,
        mode: "best-effort",
    };
    let (s_example, s_sub, _) = starts(&strict);
    let (b_example, b_sub, degraded) = starts(&best);
    let strict_starts = s_example == "starts" && s_sub == "starts";
    let judge = if strict_starts { &strict } else { &best };
    let mut cells = vec![
        s_example,
        s_sub.clone(),
        b_example.clone(),
        b_sub.clone(),
        judge.mode.to_string(),
    ];
    let mut ok = b_example == "starts" && b_sub == "starts";
    let (who_runs, identity_ok) = identity(judge);
    cells.push(who_runs);
    ok &= identity_ok;
    let mut got_through = Vec::new();
    for (name, attack) in ATTACKS {
        let stopped = attack(judge);
        if !stopped {
            got_through.push(*name);
        }
        cells.push(if stopped {
            "stopped".into()
        } else {
            "**NOT stopped**".into()
        });
    }
    if strict_starts && !got_through.is_empty() {
        ok = false;
    }
    cells.push(degraded.unwrap_or_else(|| "–".into()));
    (
        format!(
            "| {} | {} | {} |",
            cell.env.label(),
            cell.label(),
            cells.join(" | ")
        ),
        ok,
    )
}

fn header() -> String {
    let mut cols = vec![
        "environment",
        "runner as",
        "strict: example",
        "strict: subprocess.run",
        "best-effort: example",
        "best-effort: subprocess.run",
        "attacks run in",
        "worker runs as (from outside); shutil.copy2 into the workspace",
    ];
    cols.extend(ATTACKS.iter().map(|(n, _)| *n));
    cols.push("best-effort reports");
    format!("| {} |\n|{}", cols.join(" | "), "---|".repeat(cols.len()))
}

#[test]
fn environment_matrix() {
    if !is_root() || !Who::Nobody.available() {
        eprintln!("SKIP: the environment matrix builds its environments as root and runs as root and uid {NOBODY}");
        return;
    }
    if !require(Who::Root, &[Feature::Seccomp]) {
        return;
    }
    let cells: Vec<Cell> = CELLS
        .iter()
        .copied()
        .filter(|c| c.env.available())
        .collect();
    // Two at a time (the machine has two cores; each row starts ~24 workers).
    let mut rows: Vec<(usize, (String, bool))> = Vec::new();
    for chunk in cells.chunks(2).enumerate() {
        let (i, pair) = chunk;
        let done: Vec<(String, bool)> = std::thread::scope(|s| {
            let hs: Vec<_> = pair.iter().map(|c| s.spawn(move || row(*c))).collect();
            hs.into_iter()
                .map(|h| h.join().expect("matrix row"))
                .collect()
        });
        for (j, r) in done.into_iter().enumerate() {
            rows.push((i * 2 + j, r));
        }
    }
    for env in Env::CONTAINERS {
        if env.available() {
            for who in Who::BOTH {
                rows.push((rows.len(), container_row(env, who)));
            }
        }
    }
    let failed: Vec<&String> = rows
        .iter()
        .filter(|(_, (_, ok))| !ok)
        .map(|(_, (r, _))| r)
        .collect();
    let text = format!(
        "# Environment matrix\n\nEach row: one deployment environment built on this machine, the runner started in it as root or uid {NOBODY}. Strict and best-effort mode with the bundled example and a `subprocess.run` worker; then each attack, in strict mode where it starts (else best-effort), judged from outside the worker.\n\n{}\n{}\n",
        header(),
        rows.iter().map(|(_, (r, _))| r.clone()).collect::<Vec<_>>().join("\n")
    );
    println!("{text}");
    let _ = std::fs::write(common::root().join("target/env-matrix.md"), &text);
    assert!(
        failed.is_empty(),
        "strict mode let an attack through, or best-effort did not start:\n{}",
        failed
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The hardest case is in the matrix and passes strict.
    let ubuntu = rows
        .iter()
        .map(|(_, (r, _))| r)
        .find(|r| r.starts_with(&format!("| {} |", Env::Ubuntu2404.label())))
        .expect("the Ubuntu 24.04 row");
    assert!(
        ubuntu.contains("| nobody | starts | starts |"),
        "Ubuntu 24.04 as an unprivileged user does not pass strict: {ubuntu}"
    );
}

/// What this binary's `inside_container` printed (stdout, stderr), run in
/// the real container `env`.
fn inside_container_output(env: Env, who: Who) -> (String, String) {
    let exe = std::env::current_exe().unwrap();
    let out = env
        .command(Who::Root, &exe)
        .args(["--exact", "inside_container", "--ignored", "--nocapture"])
        .env("NODUS_MATRIX_WHO", who.label())
        .stdin(Stdio::null())
        .output()
        .expect("run the matrix in the container");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&out.stdout), text(&out.stderr))
}

/// The row for a real container: this binary, run inside it.
fn container_row(env: Env, who: Who) -> (String, bool) {
    let (text, stderr) = inside_container_output(env, who);
    let line = text
        .lines()
        .find(|l| l.starts_with("| host |"))
        .map(|l| l.replacen("| host |", &format!("| {} |", env.label()), 1));
    match line {
        Some(l) => {
            let ok = !l.contains("OK=false");
            (l.replace(" OK=false", "").replace(" OK=true", ""), ok)
        }
        None => (
            format!(
                "| {} | {} | the matrix did not run inside: {} {} |",
                env.label(),
                who.label(),
                text.trim(),
                stderr.trim()
            ),
            false,
        ),
    }
}

/// One row of the matrix with this container as the host (run by
/// `container_row`).
#[test]
#[ignore = "runs inside a real container, started by environment_matrix"]
fn inside_container() {
    if std::env::var_os("NODUS_IN_CONTAINER").is_none() {
        eprintln!("SKIP: inside_container runs only in a container (scripts/docker-env, scripts/podman-env)");
        return;
    }
    let who = if std::env::var("NODUS_MATRIX_WHO").as_deref() == Ok("nobody") {
        Who::Nobody
    } else {
        Who::Root
    };
    let probe_line = probe(who)["namespace_failure"].to_string();
    eprintln!("container probe ({}): {probe_line}", who.label());
    // Rootless Podman maps the container's ids 0..65536 onto the service
    // user's subordinate ids, not the default range: root's workers take the
    // range derived from that map.
    let ids = match std::env::var("NODUS_IN_CONTAINER").as_deref() {
        Ok("podman") => Ids::Derived,
        _ => Ids::Default,
    };
    let (r, ok) = row(Cell {
        ids,
        ..Cell::new(Env::Host, who)
    });
    println!("{r} OK={ok}");
    // No mount namespace in the container: the supervisor's row.
    match supervised_cell(Env::Host, who, true) {
        Ok(r) => println!("SUPERVISED{r}"),
        Err(e) => println!("SUPERVISED FAILED {e}"),
    }
}

/// The supervisor's row from inside a real container (`inside_container`).
fn container_supervised(env: Env, who: Who) -> Result<String, String> {
    let (text, _) = inside_container_output(env, who);
    match text.lines().find_map(|l| l.strip_prefix("SUPERVISED")) {
        Some(l) if l.starts_with("| host |") => {
            Ok(l.replacen("| host |", &format!("| {} |", env.label()), 1))
        }
        Some(l) => Err(format!("{}: {l}", env.label())),
        None => Err(format!(
            "{}: no supervisor row: {}",
            env.label(),
            text.trim()
        )),
    }
}

/// The environments without a mount namespace (issue 12 item 4), and where
/// the runner can take a seccomp listener there: chmod and the utime family
/// go to the runner's supervisor (src/sandbox/supervisor.rs), which does them
/// beneath the writable grants only; under another supervisor (the Landlock
/// ABI faker is one) they are refused everywhere, and the report says so.
/// envwrap's AppArmor restriction is itself a seccomp supervisor (it
/// follows which processes entered a user namespace), as is its Landlock
/// ABI faker: there the runner cannot take a listener (a real Ubuntu host
/// has no such supervisor above the runner).
const NO_MOUNT_NAMESPACE: &[(Env, Who, bool)] = &[
    (Env::DockerLike, Who::Nobody, true),
    (Env::DockerLike, Who::Root, true),
    (Env::UsernsLimits, Who::Nobody, true),
    (Env::UsernsLimits, Who::Root, true),
    (Env::UsernsLimitsMapped, Who::Root, true),
    (Env::AppArmorUserns, Who::Nobody, false),
    (Env::Ubuntu2404, Who::Nobody, false),
];

/// What the worker's uid can do to its own files, judged from outside: in
/// the workspace (the control, which also shows each outside check sees a
/// change) and on host files, by path, through a symlink, while a folder is
/// swapped for a symlink out, and with a setuid mode.
fn supervised_cell(env: Env, who: Who, supervised: bool) -> Result<String, String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let ws = owned_dir(who, "ws");
    let host = world_dir("host");
    let mut l = Launch::new(who, &["filesystem.write"])
        .policy(json!({"mode": "best-effort"}))
        .workspace(ws.path());
    if env != Env::Host {
        l = l.in_env(env);
    }
    let mut s = l.start();
    let Reply::Value(uid) = s.exec("result = os.getuid()") else {
        return Err(format!("no worker: {}", s.finish().stderr));
    };
    let uid = uid.as_u64().unwrap() as u32;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let mtime = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().mtime();
    let old = nix::sys::time::TimeSpec::new(1_000_000_000, 0);
    let set_old = |p: &std::path::Path| {
        nix::sys::stat::utimensat(
            None,
            p,
            &old,
            &old,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap()
    };
    // Files of the worker's uid: in the workspace, and on the host (mode
    // 0666 there: writable, so that only the sandbox refuses utime(NULL)).
    let file = |p: &std::path::Path, m: u32| {
        std::fs::write(p, "x").unwrap();
        chmod(p, m);
        std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
        set_old(p);
    };
    file(&ws.join("src"), 0o640);
    file(&ws.join("f"), 0o644);
    file(&ws.join("suid"), 0o755);
    file(&ws.join("two"), 0o644);
    file(&ws.join("g"), 0o644);
    std::fs::create_dir(ws.join("d")).unwrap();
    std::os::unix::fs::lchown(ws.join("d"), Some(uid), Some(uid)).unwrap();
    file(&ws.join("d/f"), 0o644);
    file(&host.join("f"), 0o666);
    let code = snippet(
        r#"import shutil, threading
out = {}
def attempt(name, f):
    try:
        f()
        out[name] = 'done'
    except OSError as e:
        out[name] = type(e).__name__
ws, host = @W@, @H@
attempt('copy2', lambda: shutil.copy2(ws + '/src', ws + '/dst'))
attempt('chmod ws', lambda: os.chmod(ws + '/f', 0o600))
attempt('utime ws', lambda: os.utime(ws + '/f', (7, 7)))
fd = os.open(ws + '/g', os.O_RDONLY)
attempt('fchmod ws', lambda: os.chmod(fd, 0o600))
attempt('futimens ws', lambda: os.utime(fd, (8, 8)))
os.close(fd)
attempt('chmod host', lambda: os.chmod(host + '/f', 0o600))
attempt('utime host', lambda: os.utime(host + '/f', (7, 7)))
attempt('utime now host', lambda: os.utime(host + '/f'))
os.symlink(host + '/f', ws + '/abs')
os.symlink(os.path.relpath(host + '/f', ws), ws + '/rel')
for l in ['abs', 'rel']:
    attempt('chmod ' + l, lambda: os.chmod(ws + '/' + l, 0o600))
    attempt('utime ' + l, lambda: os.utime(ws + '/' + l, (7, 7)))
    attempt('utime nofollow ' + l, lambda: os.utime(ws + '/' + l, (9, 9), follow_symlinks=False))
try:
    os.link(host + '/f', ws + '/hard')
    out['link'] = 'done'
    attempt('chmod hard', lambda: os.chmod(ws + '/hard', 0o600))
    attempt('utime hard', lambda: os.utime(ws + '/hard', (7, 7)))
except OSError as e:
    out['link'] = type(e).__name__
# Two names in the workspace (Landlock allows this link): refused as a
# link to a host file would be where nothing refuses making one.
os.link(ws + '/two', ws + '/two.b')
attempt('chmod two names', lambda: os.chmod(ws + '/two', 0o600))
attempt('setuid', lambda: os.chmod(ws + '/suid', 0o4755))
attempt('setgid', lambda: os.chmod(ws + '/suid', 0o2755))
# The race: ws/d swapped for a symlink to the host folder while calls on ws/d/f go on.
stop = False
def swap():
    while not stop:
        os.rename(ws + '/d', ws + '/d.real'); os.symlink(host, ws + '/d')
        os.unlink(ws + '/d'); os.rename(ws + '/d.real', ws + '/d')
t = threading.Thread(target=swap); t.start()
counts = {'done': 0, 'refused': 0}
for i in range(3000):
    for f in (lambda: os.chmod(ws + '/d/f', 0o600 if i % 2 else 0o640), lambda: os.utime(ws + '/d/f', (i + 10, i + 10))):
        try:
            f(); counts['done'] += 1
        except OSError:
            counts['refused'] += 1
stop = True; t.join()
out['race'] = counts
result = out"#,
        &[("W", lit(ws.path())), ("H", lit(host.path()))],
    );
    let r = s.exec(&code);
    let t = s.finish();
    let Reply::Value(out) = r else {
        return Err(format!("{r:?}: {}", t.stderr));
    };
    let said = |k: &str| out[k].as_str().unwrap_or("?").to_string();
    let mut wrong = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            wrong.push(what);
        }
    };
    // The control: in the workspace each call works (supervised) or is
    // refused (no supervisor), and the outside checks see it either way.
    let copied = std::fs::metadata(ws.join("dst")).is_ok_and(|m| m.mtime() == 1_000_000_000)
        && mode(&ws.join("dst")) == 0o640;
    if supervised {
        check(
            copied && said("copy2") == "done",
            format!("copy2 {} (times and mode kept: {copied})", said("copy2")),
        );
        check(
            mode(&ws.join("f")) == 0o600,
            format!("chmod in the workspace {}", said("chmod ws")),
        );
        check(
            mtime(&ws.join("f")) == 7,
            format!("utime in the workspace {}", said("utime ws")),
        );
        check(
            mode(&ws.join("g")) == 0o600 && mtime(&ws.join("g")) == 8,
            format!(
                "fchmod {} and futimens {} in the workspace",
                said("fchmod ws"),
                said("futimens ws")
            ),
        );
    } else {
        check(
            said("copy2") == "PermissionError" && !copied,
            format!("copy2 {} without a supervisor", said("copy2")),
        );
        check(
            mode(&ws.join("f")) == 0o644,
            "chmod in the workspace without a supervisor".into(),
        );
        check(
            t.stderr
                .contains("workspace_metadata: chmod and utime are refused in the workspace"),
            format!(
                "the report does not say the workspace refuses metadata: {}",
                t.stderr
            ),
        );
    }
    // The attacks: the host file's mode and times unchanged.
    check(
        mode(&host.join("f")) == 0o666,
        format!("host file mode {:o}: {out}", mode(&host.join("f"))),
    );
    check(
        mtime(&host.join("f")) == 1_000_000_000,
        format!("host file mtime {}: {out}", mtime(&host.join("f"))),
    );
    for k in [
        "chmod host",
        "utime host",
        "utime now host",
        "chmod abs",
        "utime abs",
        "chmod rel",
        "utime rel",
    ] {
        check(said(k) == "PermissionError", format!("{k}: {}", said(k)));
    }
    check(
        said("chmod two names") == "PermissionError" && mode(&ws.join("two")) == 0o644,
        format!(
            "chmod of a file with two names: {}",
            said("chmod two names")
        ),
    );
    // A hard link to the host file (where it can be made) changes nothing either.
    if said("link") == "done" {
        for k in ["chmod hard", "utime hard"] {
            check(said(k) == "PermissionError", format!("{k}: {}", said(k)));
        }
    }
    check(
        mode(&ws.join("suid")) & 0o6000 == 0,
        format!("setuid mode {:o}", mode(&ws.join("suid"))),
    );
    for k in ["setuid", "setgid"] {
        check(said(k) == "PermissionError", format!("{k}: {}", said(k)));
    }
    let race = &out["race"];
    let (done, refused) = (
        race["done"].as_u64().unwrap_or(0),
        race["refused"].as_u64().unwrap_or(0),
    );
    // The race ran both ways (some calls met the folder, some the symlink).
    if supervised {
        check(
            done > 0 && refused > 0,
            format!("the race did not race: {race}"),
        );
    }
    if wrong.is_empty() {
        Ok(format!(
            "| {} | {} (worker uid {uid}) | {} | copy2 {}; host file unchanged (hard link: {}); race: {done} done in the workspace, {refused} refused |",
            env.label(),
            who.label(),
            if supervised { "supervised" } else { "refused everywhere (said)" },
            if copied { "keeps times and mode" } else { "fails (PermissionError)" },
            if said("link") == "done" { "made, its chmod and utime refused".to_string() } else { format!("refused, {}", said("link")) },
        ))
    } else {
        Err(format!(
            "{} as {}: {}",
            env.label(),
            who.label(),
            wrong.join("; ")
        ))
    }
}

#[test]
fn supervised_metadata_without_a_mount_namespace() {
    if !is_root() || !Who::Nobody.available() {
        eprintln!("SKIP: the environments are built as root and run as root and uid {NOBODY}");
        return;
    }
    if !require(Who::Root, &[Feature::Seccomp]) {
        return;
    }
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for &(env, who, supervised) in NO_MOUNT_NAMESPACE {
        if !env.available() {
            continue;
        }
        match supervised_cell(env, who, supervised) {
            Ok(r) => rows.push(r),
            Err(e) => failed.push(e),
        }
    }
    for env in Env::CONTAINERS {
        if env.available() {
            for who in Who::BOTH {
                // A non-root runner in rootless Podman makes a mount
                // namespace (only its pid namespace is refused): not a cell
                // of this test.
                if env == Env::Podman && who == Who::Nobody {
                    continue;
                }
                match container_supervised(env, who) {
                    Ok(r) => rows.push(r),
                    Err(e) => failed.push(e),
                }
            }
        }
    }
    println!(
        "| environment | runner as | chmod, utime | outcome |\n|---|---|---|---|\n{}",
        rows.join("\n")
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// A root runner's worker of a uid of its own (Docker-like, an interpreter
/// other users can reach, no `filesystem.write`): the supervisor thread
/// takes that uid, not root's. In the scratch folder (the worker's, owned by
/// its uid) copy2, chmod and utime work, judged from outside; on a file of
/// that folder given to root (0666) they are refused: the kernel checks the
/// owner as for the worker, the supervisor's root adds nothing.
#[test]
fn supervised_metadata_as_a_root_runners_own_uid() {
    if !is_root() || !std::path::Path::new(SYSTEM_PYTHON).exists() {
        eprintln!("SKIP: needs root and {SYSTEM_PYTHON}");
        return;
    }
    // Docker-like: the default range; the nested user namespace mapping
    // 0..65535: a range derived from its map.
    for env in [Env::DockerLike, Env::UsernsLimitsMapped] {
        if env.available() {
            own_uid_cell(env);
        }
    }
}

fn own_uid_cell(env: Env) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut s = Launch::new(Who::Root, &[])
        .policy(json!({"mode": "strict"}))
        .python(std::path::Path::new(SYSTEM_PYTHON))
        .in_env(env)
        .start();
    let Reply::Value(setup) = s.exec(
        "import tempfile\nd = tempfile.gettempdir()\nfor n in ('src', 'f', 'roots'):\n    open(d + '/' + n, 'w').write('x')\nos.chmod(d + '/src', 0o640)\nos.utime(d + '/src', (1000000000, 1000000000))\nresult = [os.getuid(), d]",
    ) else {
        panic!("no worker: {}", s.finish().stderr);
    };
    let uid = setup[0].as_u64().unwrap() as u32;
    let scratch = s.scratch().expect("the scratch folder, from outside");
    assert!(uid != 0, "the worker runs as root here: {setup}");
    // A file of root's in the worker's scratch folder, writable by all.
    let roots = scratch.join("roots");
    std::os::unix::fs::lchown(&roots, Some(0), Some(0)).unwrap();
    chmod(&roots, 0o666);
    let old = nix::sys::time::TimeSpec::new(1_000_000_000, 0);
    nix::sys::stat::utimensat(
        None,
        &roots,
        &old,
        &old,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let r = s.exec(
        r#"import shutil, tempfile
d = tempfile.gettempdir()
out = {}
for name, f in [('copy2', lambda: shutil.copy2(d + '/src', d + '/dst')),
                ('chmod', lambda: os.chmod(d + '/f', 0o600)),
                ('utime', lambda: os.utime(d + '/f', (7, 7))),
                ('chmod root', lambda: os.chmod(d + '/roots', 0o600)),
                ('utime root', lambda: os.utime(d + '/roots', (7, 7))),
                ('utime now root', lambda: os.utime(d + '/roots'))]:
    try:
        f(); out[name] = 'done'
    except OSError as e:
        out[name] = type(e).__name__
result = out"#,
    );
    let mode = |p: &str| {
        std::fs::metadata(scratch.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    let mtime = |p: &str| std::fs::metadata(scratch.join(p)).unwrap().mtime();
    let (dst_mode, dst_mtime, f_mode, f_mtime) = (mode("dst"), mtime("dst"), mode("f"), mtime("f"));
    let (root_mode, root_mtime) = (mode("roots"), mtime("roots"));
    let t = s.finish();
    let Reply::Value(out) = r else {
        panic!("{r:?}: {}", t.stderr);
    };
    // The control: the worker's own files change, and the checks see it.
    assert_eq!(
        (dst_mode, dst_mtime),
        (0o640, 1_000_000_000),
        "copy2: {out}"
    );
    assert_eq!(
        (f_mode, f_mtime),
        (0o600, 7),
        "chmod and utime of its own file: {out}"
    );
    // Root's file: "now" needs write access (it has it: 0666), explicit
    // times and chmod need the owner (it is not).
    assert_eq!(root_mode, 0o666, "{out}");
    assert_eq!(out["chmod root"], "PermissionError", "{out}");
    assert_eq!(out["utime root"], "PermissionError", "{out}");
    assert_eq!(out["utime now root"], "done", "{out}");
    assert!(
        root_mtime != 1_000_000_000,
        "utime(NULL) with write access sets now: {out}"
    );
    println!("{}: worker uid {uid}: {out}", env.label());
}

/// Rootless Podman masks parts of `/proc` under other mounts, so the kernel
/// refuses the private root a procfs of its own (`mnt_too_revealing`): the
/// probe sees that, the worker runs without a pid namespace, and its private
/// root binds the runner's `/proc` read-only. Judged inside the container
/// (`inside_container_proc`, as the service's unprivileged user): the
/// control, that `/proc/self` works and its pids agree with `os.getpid()`,
/// and that a secret in the runner's environment is readable from outside
/// (`/proc/RUNNER/environ`, same uid); the attack, the worker reading the
/// runner's environment and memory maps through that `/proc`, gets nothing.
#[test]
fn a_masked_proc_is_bound_and_the_runner_stays_out_of_reach() {
    let env = Env::Podman;
    if !env.available() {
        return;
    }
    let (text, stderr) = {
        let exe = std::env::current_exe().unwrap();
        let out = env
            .command(Who::Root, &exe)
            .args([
                "--exact",
                "inside_container_proc",
                "--ignored",
                "--nocapture",
            ])
            .env("NODUS_MATRIX_WHO", Who::Nobody.label())
            .stdin(Stdio::null())
            .output()
            .expect("run inside the container");
        let t = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (t(&out.stdout), t(&out.stderr))
    };
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("PROC "))
        .unwrap_or_else(|| panic!("no result from inside: {text}\n{stderr}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    println!("rootless Podman, bound /proc: {v}");
    assert!(
        v["probe"].as_str().unwrap_or("").contains("masked paths"),
        "the probe names the cause: {v}"
    );
    assert_eq!(v["self_ok"], true, "control: /proc/self works: {v}");
    assert_eq!(v["pids_agree"], true, "control: pids agree: {v}");
    assert_eq!(
        v["secret_outside"], true,
        "control: the runner's secret is in its /proc environ: {v}"
    );
    assert_eq!(
        v["secret_inside"], false,
        "the worker read the runner's secret: {v}"
    );
    assert_eq!(
        v["maps_inside"], false,
        "the worker read the runner's maps: {v}"
    );
}

/// The inside of `a_masked_proc_is_bound_and_the_runner_stays_out_of_reach`.
#[test]
#[ignore = "runs inside a real container, started by a_masked_proc_is_bound_and_the_runner_stays_out_of_reach"]
fn inside_container_proc() {
    if std::env::var_os("NODUS_IN_CONTAINER").is_none() {
        eprintln!("SKIP: inside_container_proc runs only in a container (scripts/podman-env)");
        return;
    }
    let secret = token("runner-secret");
    let probe_line = probe(Who::Nobody)["namespace_failure"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut s = Launch::new(Who::Nobody, &[])
        .env("NODUS_TEST_SECRET", &secret)
        .start();
    let code = "import os\n\
        st = open('/proc/self/stat').read().split()[0]\n\
        got, maps = '', False\n\
        for p in os.listdir('/proc'):\n\
        \x20   if p.isdigit() and int(p) != os.getpid():\n\
        \x20       try:\n\
        \x20           got += open('/proc/%s/environ' % p).read()\n\
        \x20       except OSError:\n\
        \x20           pass\n\
        \x20       try:\n\
        \x20           open('/proc/%s/maps' % p).read(1)\n\
        \x20           maps = True\n\
        \x20       except OSError:\n\
        \x20           pass\n\
        result = [open('/proc/self/status').read().startswith('Name:'), int(st) == os.getpid(), got, maps]";
    let r = s.exec(code);
    let runner = s.runner_pid();
    // From outside as the runner's own uid (the container's root has no
    // CAP_SYS_PTRACE for another uid's environ).
    let outside = Who::Nobody
        .command("cat")
        .arg(format!("/proc/{runner}/environ"))
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&secret));
    let t = s.finish();
    let Reply::Value(v) = r else {
        println!("PROC {}", json!({"probe": probe_line, "error": t.stderr}));
        return;
    };
    println!(
        "PROC {}",
        json!({
            "probe": probe_line,
            "self_ok": v[0],
            "pids_agree": v[1],
            "secret_inside": v[2].as_str().unwrap_or("").contains(&secret),
            "maps_inside": v[3],
            "secret_outside": outside,
        })
    );
}
