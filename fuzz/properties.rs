//! The properties, written once: the cargo-fuzz targets in `fuzz_targets/` and
//! the proptest run in `tests/properties.rs` both include this file
//! (`#[path]`), so the fuzzers and CI check the same thing.
//!
//! Every `check_*` function panics when its property fails; a panic inside
//! the crate under test fails it the same way.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nodus_extension::internals::extension::manifest::{
    Manifest, TOOL_SURFACE_VERSION, VALID_EFFECTS,
};
use nodus_extension::internals::extension::validation::{SchemaMode, ToolSchemas};
use nodus_extension::internals::protocol::{self, Line, Response, WorkerMessage};
use nodus_extension::policy::Probe;
use nodus_extension::policy::{
    self, Access, ArgOp, ArgWidth, Errno, Guarantee, Inputs, Layer, LimitOverrides, Mode,
    Namespaces, OperatorPolicy, Policy, ProgramFacts, Requirement, SeccompPolicy, SyscallAction,
};
use nodus_extension::Capability;
use nodus_extension::{Provenance, TrustClass};
use serde_json::{json, Value};

// ---------------------------------------------------------------- manifest

/// Any bytes: `Manifest::parse` returns, and what it accepts is a manifest.
pub fn check_manifest_bytes(bytes: &[u8]) {
    if let Ok(m) = Manifest::parse(bytes, "fuzz/nodus-extension.json") {
        check_accepted_manifest(&m);
    }
}

/// An accepted manifest keeps the model's promises, and its normalized form
/// (`to_json()`, the reference's `as_dict()`) is accepted again as the same
/// manifest, whether written by serde_json or by our `json.dumps`.
pub fn check_accepted_manifest(m: &Manifest) {
    assert_eq!(m.abi_version, "1");
    assert!(!m.name.trim().is_empty(), "blank name accepted: {m:?}");
    assert!(!m.description.trim().is_empty(), "blank description: {m:?}");
    assert_eq!(
        m.capability_set().len(),
        m.capabilities.iter().collect::<BTreeSet<_>>().len()
    );
    for t in &m.tools {
        assert!(dotted(&t.name), "tool name not dotted: {:?}", t.name);
        assert!(!t.description.trim().is_empty(), "blank tool description");
        assert_eq!(t.version, TOOL_SURFACE_VERSION);
        assert!(!t.effects.is_empty());
        assert!(t
            .effects
            .iter()
            .all(|e| VALID_EFFECTS.contains(&e.as_str())));
        assert!(t.effects.len() == 1 || !t.effects.iter().any(|e| e == "pure"));
    }
    if let Some(entry) = &m.entry {
        assert!(!entry.is_empty() && entry.iter().all(|a| !a.is_empty()));
    }

    let dict = m.to_json();
    // `as_dict()` has no `entry` (our own field).
    let expected = Manifest {
        entry: None,
        egress: None,
        ..m.clone()
    };
    let writers: [(&str, Vec<u8>); 2] = [
        (
            "serde_json",
            serde_json::to_vec(&dict).expect("a Value serializes"),
        ),
        ("json.dumps", protocol::dumps(&dict)),
    ];
    for (how, text) in writers {
        let again = Manifest::parse(&text, "again.json").unwrap_or_else(|e| {
            panic!(
                "to_json() of an accepted manifest is refused ({how}): {e}\n{}",
                String::from_utf8_lossy(&text)
            )
        });
        assert_eq!(again, expected, "to_json() re-parses differently ({how})");
        assert_eq!(
            again.to_json(),
            dict,
            "to_json() is not a fixed point ({how})"
        );
    }
}

/// `^[a-z0-9_]+(\.[a-z0-9_]+)+$` under Python's `re.match` (`$` also before a final newline).
fn dotted(name: &str) -> bool {
    let name = name.strip_suffix('\n').unwrap_or(name);
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

// ---------------------------------------------------------------- protocol

/// Any bytes as a worker's line: decoding returns, agrees with `request_id`,
/// ignores surrounding whitespace, and what it decodes survives `dumps`.
pub fn check_worker_line(line: &[u8]) {
    let msg = protocol::decode_worker_line(line);
    let id = protocol::request_id(line);
    match &msg {
        WorkerMessage::Response { id: rid, response } => {
            assert_eq!(id.as_deref(), Some(rid.as_str()), "request_id disagrees");
            if let Response::Err(e) = response {
                // Read as the decoder reads it: `dumps` writes Infinity and NaN as Python does.
                let v: Value = protocol::loads(line.trim_ascii()).expect("it decoded");
                match v.get("error") {
                    None => assert_eq!(e, "unknown error"),
                    Some(Value::String(s)) => assert_eq!(e, s),
                    Some(_) => {}
                }
            }
        }
        WorkerMessage::HostCall(c) => {
            assert_eq!(id.as_deref(), Some(c.id.as_str()), "request_id disagrees");
        }
        WorkerMessage::Denial { .. } | WorkerMessage::Ignored => {}
    }
    // Surrounding ASCII whitespace and the line's framing do not change a message.
    let mut padded = b" \t".to_vec();
    padded.extend_from_slice(line);
    padded.extend_from_slice(b" \r\n");
    assert_eq!(
        protocol::decode_worker_line(&padded),
        msg,
        "padding changed it"
    );
    assert_eq!(protocol::request_id(&padded), id);
    // Whatever the decoder took out of the line can be written back exactly.
    match msg {
        WorkerMessage::Response {
            response: Response::Ok(v),
            ..
        } => check_dumps(&v),
        WorkerMessage::HostCall(c) => check_dumps(&c.params),
        _ => {}
    }
}

/// `dumps(v)` writes what Python's `json.dumps` writes of the object
/// `json.loads` makes of `v`: ASCII only (DEL escaped too), numbers as Python
/// prints the int or float (so `1e2` is `100.0`, an overflowing float is
/// `Infinity`), and otherwise `v` itself: it parses back to the same Python
/// value, and writing that again gives the same bytes. The request and
/// host-call lines built with it carry `v` the same way.
pub fn check_dumps(v: &Value) {
    let text = protocol::dumps(v);
    assert!(
        text.iter().all(|b| b.is_ascii() && *b != 0x7f),
        "dumps wrote non-ASCII or DEL"
    );
    let shown = || String::from_utf8_lossy(&text).into_owned();
    if !all_finite(v) {
        // Python writes Infinity / -Infinity / NaN, which are not JSON.
        assert!(
            ["Infinity", "NaN"].iter().any(|w| shown().contains(w)),
            "an overflowing float written as {}",
            shown()
        );
        return;
    }
    let back: Value = serde_json::from_slice(&text)
        .unwrap_or_else(|e| panic!("dumps wrote what does not parse: {e}\n{}", shown()));
    assert!(
        same_python_value(&back, v),
        "dumps changed the value: {}",
        shown()
    );
    assert_eq!(protocol::dumps(&back), text, "dumps is not a fixed point");

    let line = protocol::invoke_line("0-id", "a.b", v);
    assert!(!line.contains(&b'\n'));
    let back: Value = serde_json::from_slice(&line).expect("invoke line parses");
    let keys: Vec<&str> = back
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys, ["id", "op", "name", "args"]);
    assert!(same_python_value(&back["args"], v));
    assert_eq!(protocol::request_id(&line).as_deref(), Some("0-id"));

    let resp = protocol::host_call_response("0-id", &Ok(v.clone()));
    let back: Value = serde_json::from_slice(&resp).expect("host call response parses");
    assert_eq!(back["id"], "0-id");
    assert_eq!(back["ok"], true);
    assert!(same_python_value(&back["result"], v));
}

/// Whether every number in `v` is an int or a finite float to Python.
pub fn all_finite(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            let t = n.to_string();
            !is_float_literal(&t) || t.parse::<f64>().is_ok_and(f64::is_finite)
        }
        Value::Array(a) => a.iter().all(all_finite),
        Value::Object(o) => o.values().all(all_finite),
        _ => true,
    }
}

fn is_float_literal(t: &str) -> bool {
    t.contains(['.', 'e', 'E'])
}

/// Equality of the Python objects `json.loads` makes of `a` and `b`: ints
/// exactly (`-0` is `0`), floats by their bits, never an int equal to a float,
/// keys in the same order.
pub fn same_python_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.to_string(), y.to_string());
            match (is_float_literal(&x), is_float_literal(&y)) {
                (false, false) => {
                    let int = |t: &str| {
                        if t == "-0" {
                            "0".to_string()
                        } else {
                            t.to_string()
                        }
                    };
                    int(&x) == int(&y)
                }
                (true, true) => match (x.parse::<f64>(), y.parse::<f64>()) {
                    (Ok(x), Ok(y)) => x.to_bits() == y.to_bits(),
                    _ => false,
                },
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_python_value(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same_python_value(vx, vy))
        }
        _ => a == b,
    }
}

/// Reads `data` line by line with `read_line(max)` through a buffer of
/// `capacity` bytes: no line is longer than `max`, and the lines are exactly
/// `data` split on `\n`, up to the first piece longer than `max`, which is
/// `TooLong` (the last piece, after the last newline, comes as `Eof`).
pub fn check_read_line(rt: &tokio::runtime::Runtime, data: &[u8], max: usize, capacity: usize) {
    let lines = rt.block_on(async {
        let mut reader = tokio::io::BufReader::with_capacity(capacity.max(1), data);
        let mut out = Vec::new();
        loop {
            let line = protocol::read_line(&mut reader, max)
                .await
                .expect("reading memory cannot fail");
            let last = !matches!(line, Line::Complete(_));
            out.push(line);
            assert!(out.len() <= data.len() + 1, "read_line does not advance");
            if last {
                return out;
            }
        }
    });
    for l in &lines {
        if let Line::Complete(b) | Line::Eof(b) = l {
            assert!(
                b.len() <= max,
                "a line of {} bytes passed max {max}",
                b.len()
            );
        }
    }
    let pieces: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let expected: Vec<Line> = match pieces.iter().position(|p| p.len() > max) {
        Some(k) => pieces[..k]
            .iter()
            .map(|p| Line::Complete(p.to_vec()))
            .chain([Line::TooLong])
            .collect(),
        None => {
            let (last, whole) = pieces
                .split_last()
                .expect("split yields at least one piece");
            whole
                .iter()
                .map(|p| Line::Complete(p.to_vec()))
                .chain([Line::Eof(last.to_vec())])
                .collect()
        }
    };
    assert_eq!(lines, expected, "max {max}, buffer {capacity}");
}

/// A current-thread runtime for `check_read_line`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

// ---------------------------------------------------------------- policy

/// Paths the policy cases are made of: nested, overlapping, relative, empty,
/// and some that base.json and capabilities.json name themselves.
pub const PATHS: &[&str] = &[
    "/ws",
    "/ws/sub",
    "/ws/../etc",
    "/w",
    "/",
    "/ext",
    "/opt/py",
    "/opt/py/bin/python3",
    "/lib64/ld-linux-x86-64.so.2",
    "/usr",
    "/usr/bin",
    "/etc/resolv.conf",
    "/dev/null",
    "/tmp",
    "ws",
    "",
];

/// Which limit each (key index, value) pair of a fuzz case overrides; the
/// last index overrides nothing.
pub const LIMIT_KEYS: usize = 8;

/// Capabilities an operator may list for a trust class.
pub const CAPABILITIES: &[Capability] = &Capability::ALL;

/// One input of `policy::derive`.
#[derive(Debug, Clone)]
pub struct PolicyCase {
    /// As declared: order and duplicates kept.
    pub capabilities: Vec<Capability>,
    pub trust_class: TrustClass,
    pub operator: OperatorPolicy,
    pub probe: Probe,
    pub workspace: Option<PathBuf>,
    pub extension_dir: PathBuf,
    pub program: ProgramFacts,
}

impl PolicyCase {
    pub fn manifest(&self) -> Manifest {
        Manifest {
            name: "fuzz.ext".into(),
            version: "1".into(),
            description: "d".into(),
            abi_version: "1".into(),
            min_nodus_version: "4.0.0".into(),
            capabilities: self.capabilities.clone(),
            provenance: Provenance {
                trust_class: self.trust_class,
                ..Provenance::default()
            },
            tools: Vec::new(),
            entry: None,
            egress: None,
        }
    }

    pub fn derive(&self) -> nodus_extension::Result<Policy> {
        policy::derive(&Inputs {
            manifest: &self.manifest(),
            extension_dir: &self.extension_dir,
            workspace: self.workspace.as_deref(),
            operator: &self.operator,
            program: &self.program,
            identity: &Default::default(),
            probe: &self.probe,
        })
    }

    fn declared(&self) -> BTreeSet<Capability> {
        self.capabilities.iter().copied().collect()
    }

    fn without(&self, c: Capability) -> PolicyCase {
        PolicyCase {
            capabilities: self
                .capabilities
                .iter()
                .copied()
                .filter(|d| *d != c)
                .collect(),
            ..self.clone()
        }
    }
}

/// `derive` refuses exactly what it must (and with the right error), and
/// every policy it returns keeps the invariants below.
pub fn check_policy(case: &PolicyCase) {
    let declared = case.declared();
    let has = |c| declared.contains(&c);
    let op = &case.operator;

    let trust_refused = op
        .trust_classes
        .get(&case.trust_class)
        .is_some_and(|ok| declared.iter().any(|c| !ok.contains(c)));
    let fs = has(Capability::FilesystemRead) || has(Capability::FilesystemWrite);
    let ws_missing = fs && case.workspace.is_none();
    let ws_outside = fs
        && case.workspace.as_ref().is_some_and(|w| {
            !op.workspace_roots.is_empty() && !op.workspace_roots.iter().any(|r| w.starts_with(r))
        });
    // Whether a root runner's worker runs as uid 0 (the identity step decides;
    // its own table test is tests/policy.rs
    // `root_workers_take_a_uid_of_their_own_unless_they_cannot`), and whether
    // the guarantee model reports a guarantee lost with none of its carriers
    // switched off by the operator: read from the best-effort policy of the
    // same case, so that strict and best-effort must agree on what is lost.
    let best_effort = {
        let mut c = case.clone();
        c.operator.mode = Mode::BestEffort;
        c.derive().ok()
    };
    let runs_as_root =
        case.probe.root && best_effort.as_ref().is_some_and(|p| p.worker_ids.is_none());
    let lost_not_by_operator = op.mode == Mode::Strict
        && best_effort.as_ref().is_some_and(|p| {
            p.guarantees.iter().any(|g| {
                // No privilege gain needs all its carriers: any one missing
                // for a reason of the host's loses it.
                let host_caused = if g.guarantee == Guarantee::NoPrivilegeGain {
                    g.missing.iter().any(|m| !m.by_operator)
                } else {
                    g.missing.iter().all(|m| !m.by_operator)
                };
                !g.kept() && host_caused
            })
        });
    // A guarantee with no carrier left, none of them switched off by the
    // operator: exec (Landlock alone), no privilege gain (seccomp's
    // setuid/setgid rule), process creation (seccomp alone),
    // tcp_ports (Landlock ABI 4 alone), a root worker's tasks (a pids cgroup
    // alone), and whatever else the guarantee model reports lost that way.
    let strict_unenforceable = op.mode == Mode::Strict
        && ((op.layers.landlock
            && case.probe.landlock_abi == 0
            && !has(Capability::SubprocessRun))
            || (op.layers.seccomp && !case.probe.seccomp_filter)
            || (op.layers.landlock
                && case.probe.landlock_abi < 4
                && has(Capability::NetworkOutbound)
                && !op.tcp_ports.is_empty())
            || (op.layers.limits && runs_as_root && case.probe.pids_cgroup.is_none())
            || lost_not_by_operator);
    let why = format!(
        "trust_refused={trust_refused} ws_missing={ws_missing} ws_outside={ws_outside} strict_unenforceable={strict_unenforceable}"
    );

    let p = match case.derive() {
        Err(e) => {
            // The checks run in this order in `derive`.
            let expected = if trust_refused {
                "CapabilityError"
            } else if ws_missing {
                "SandboxError"
            } else if ws_outside {
                "CapabilityError"
            } else if strict_unenforceable {
                "SandboxError"
            } else {
                panic!("derive refused with no reason to ({why}): {e}\n{case:#?}")
            };
            assert_eq!(e.class(), expected, "{e} ({why})");
            return;
        }
        Ok(p) => {
            assert!(
                !(trust_refused || ws_missing || ws_outside || strict_unenforceable),
                "derive accepted what it must refuse ({why})\n{case:#?}"
            );
            p
        }
    };
    check_policy_invariants(case, &declared, &p);
}

fn check_policy_invariants(case: &PolicyCase, declared: &BTreeSet<Capability>, p: &Policy) {
    let has = |c| declared.contains(&c);
    let op = &case.operator;
    let probe = &case.probe;
    let exec = has(Capability::SubprocessRun);
    let net = has(Capability::NetworkOutbound);
    let ctx = || format!("{case:#?}");

    // Filesystem: what each access class may be granted on.
    let devices_rw = json_paths(base_data(), "/landlock/devices/read_write");
    for r in &p.filesystem {
        match r.access {
            Access::Write => {
                assert!(
                    has(Capability::FilesystemWrite),
                    "Write without filesystem.write: {r:?}\n{}",
                    ctx()
                );
                assert_eq!(
                    Some(&r.path),
                    case.workspace.as_ref(),
                    "Write outside the workspace: {r:?}\n{}",
                    ctx()
                );
            }
            Access::ReadWriteFile => {
                assert!(
                    devices_rw.contains(&r.path),
                    "read-write on a non-device: {r:?}"
                )
            }
            Access::ReadExec => assert!(exec, "ReadExec without subprocess.run: {r:?}\n{}", ctx()),
            Access::ExecFile => assert!(
                r.path == case.program.program || Some(&r.path) == case.program.loader.as_ref(),
                "ExecFile on something other than the program or its loader: {r:?}"
            ),
            Access::Read => {}
            other => panic!("an access class this check does not know: {other:?}"),
        }
    }
    // The workspace: read with filesystem.read, written only with filesystem.write.
    let fs = has(Capability::FilesystemRead) || has(Capability::FilesystemWrite);
    if let (true, Some(ws)) = (fs, &case.workspace) {
        let best = p
            .filesystem
            .iter()
            .filter(|r| &r.path == ws)
            .map(|r| r.access)
            .max();
        assert!(best >= Some(Access::Read));
        if has(Capability::FilesystemWrite) {
            assert_eq!(best, Some(Access::Write));
        }
    }
    // Paths only network.outbound adds appear without it only when another input names them.
    if !net {
        let mut named: BTreeSet<PathBuf> = BTreeSet::new();
        for ptr in [
            "/landlock/read_exec/paths",
            "/landlock/read/paths",
            "/landlock/devices/read_write",
            "/landlock/devices/read",
        ] {
            named.extend(json_paths(base_data(), ptr));
        }
        named.insert(case.program.program.clone());
        named.extend(case.program.loader.clone());
        named.extend(case.program.runtime_dirs.iter().cloned());
        named.insert(case.extension_dir.clone());
        named.extend(op.read_only_paths.iter().cloned());
        named.extend(case.workspace.clone());
        for path in json_paths(capability_data(), "/network.outbound/read") {
            for r in p.filesystem.iter().filter(|r| r.path == path) {
                assert!(
                    named.contains(&r.path),
                    "network.outbound's rule without it: {r:?}"
                );
            }
        }
    }
    for path in &op.read_only_paths {
        assert!(p
            .filesystem
            .iter()
            .any(|r| &r.path == path && r.access == Access::Read));
    }

    // Landlock: on as the operator says; TCP denied without network.outbound,
    // the operator's ports with it, never more.
    assert_eq!(p.landlock.is_some(), op.layers.landlock);
    if let Some(ll) = &p.landlock {
        if net {
            let ports = (!op.tcp_ports.is_empty()).then(|| op.tcp_ports.clone());
            assert_eq!(ll.tcp_connect, ports);
            assert_eq!(ll.tcp_handled, !op.tcp_ports.is_empty());
        } else {
            assert!(
                ll.tcp_handled && ll.tcp_connect.is_none(),
                "TCP open without network.outbound"
            );
        }
        assert!(ll.abi_required >= policy::LANDLOCK_ABI_REQUIRED);
        for scope in ["abstract_unix_socket", "signal"] {
            assert!(
                ll.scopes.iter().any(|s| s.as_str() == scope),
                "scope {scope} missing"
            );
        }
        assert_eq!(ll.requirement, Requirement::of(op.mode, Layer::Landlock));
    }

    // Seccomp: on only when wanted and the kernel filters; one rule a name
    // (launch lets an Allow win over an Errno), every name known.
    assert_eq!(
        p.seccomp.is_some(),
        op.layers.seccomp && probe.seccomp_filter,
        "seccomp on/off"
    );
    if let Some(sc) = &p.seccomp {
        check_seccomp(sc, exec, net, p);
    }

    // Namespaces: none when off or impossible; a user namespace exactly when
    // not root; a net namespace with network.outbound only behind the egress
    // proxy; none the probe says cannot be made.
    let ns = p.namespaces;
    let any = ns.user || ns.mount || ns.pid || ns.net || ns.ipc || ns.uts;
    if !op.layers.namespaces || !(probe.user_namespaces || probe.root) {
        assert_eq!(
            ns,
            Namespaces::default(),
            "namespaces when off or impossible"
        );
    } else if any {
        // What the probe could make (mount and uts included); nothing when
        // none of them can be made.
        assert_eq!(ns.mount, probe.mount_namespaces, "mount as probed");
        assert_eq!(ns.uts, probe.uts_namespaces, "uts as probed");
        assert_eq!(
            ns.user, !probe.root,
            "a user namespace exactly when not root"
        );
        assert_eq!(ns.pid, probe.pid_namespaces);
        assert_eq!(ns.ipc, probe.ipc_namespaces);
        assert_eq!(
            ns.net,
            (!net || p.egress.is_some()) && probe.network_namespaces
        );
    } else {
        let own_net = (!net || p.egress.is_some()) && probe.network_namespaces;
        assert!(
            !(probe.mount_namespaces
                || probe.uts_namespaces
                || probe.pid_namespaces
                || probe.ipc_namespaces
                || own_net),
            "no namespace though the probe can make some"
        );
    }
    // Seccomp takes over what a missing namespace carried: metadata changes
    // without a mount namespace, signals outside the worker's own group
    // without a pid namespace or Landlock scopes.
    if let Some(sc) = &p.seccomp {
        let action = |n: &str| sc.rule(n).map(|r| r.action.clone());
        // Without a mount namespace chown is refused, and chmod and utime
        // are refused or, where the runner can take a listener, supervised
        // (done beneath the writable grants only); with one nothing is
        // supervised (the read-only mounts keep host metadata).
        if !ns.mount {
            let metadata = if probe.seccomp_listener {
                SyscallAction::Supervised
            } else {
                SyscallAction::Errno(Errno::Perm)
            };
            for call in [
                "chmod",
                "fchmod",
                "fchmodat",
                "fchmodat2",
                "utime",
                "utimes",
                "futimesat",
                "utimensat",
            ] {
                assert_eq!(action(call), Some(metadata.clone()), "{call}");
            }
            for call in ["chown", "fchown", "lchown", "fchownat"] {
                assert_eq!(
                    action(call),
                    Some(SyscallAction::Errno(Errno::Perm)),
                    "{call}"
                );
            }
        } else {
            assert!(
                sc.rules
                    .iter()
                    .all(|r| r.action != SyscallAction::Supervised),
                "supervised calls with a mount namespace"
            );
        }
        let scopes = p.landlock.as_ref().is_some_and(|l| l.abi >= 6);
        if !ns.pid && !scopes {
            // kill only of the worker (its pid), its group (-pid) or 0.
            let groups = sc
                .rule("kill")
                .and_then(|r| r.action.condition())
                .map(|c| c.any_of.clone())
                .expect("kill is conditional");
            let targets: Vec<u64> = groups
                .iter()
                .map(|g| match g.as_slice() {
                    [c] if c.index == 0 && c.op == ArgOp::Eq => c.value,
                    _ => panic!("a kill group that does not pin the target: {g:?}"),
                })
                .collect();
            // The pid (a placeholder filled in between fork and exec), its
            // negation (the process group) and 0.
            assert!(
                matches!(targets.as_slice(), [pid, neg, 0]
                    if (*pid as u32).wrapping_neg() == *neg as u32 && *pid != 0),
                "kill targets {targets:?}"
            );
        }
    }
    assert!(
        !(ns.net && net) || p.egress.is_some(),
        "a net namespace with network.outbound (and no egress proxy)"
    );
    assert!(!any || op.layers.namespaces);

    // Limits: each the operator's override where it gives one, else the default.
    assert_eq!(p.limits.is_some(), op.layers.limits);
    if let Some(l) = p.limits {
        let d = policy::default_limits();
        let o = op.limits;
        for (name, got, over, default) in [
            (
                "memory_bytes",
                l.memory_bytes,
                o.memory_bytes,
                d.memory_bytes,
            ),
            ("cpu_seconds", l.cpu_seconds, o.cpu_seconds, d.cpu_seconds),
            ("processes", l.processes, o.processes, d.processes),
            ("open_files", l.open_files, o.open_files, d.open_files),
            (
                "file_size_bytes",
                l.file_size_bytes,
                o.file_size_bytes,
                d.file_size_bytes,
            ),
            ("core_bytes", l.core_bytes, o.core_bytes, d.core_bytes),
        ] {
            assert_eq!(got, over.unwrap_or(default), "limit {name}");
        }
    }
    // A pids cgroup for every root worker (RLIMIT_NPROC does not bind uid 0;
    // threads count too), and then the probe's.
    if let Some(c) = &p.pids_cgroup {
        assert!(probe.root && op.layers.limits, "pids cgroup {c}");
        assert_eq!(Some(c), probe.pids_cgroup.as_ref());
    } else {
        assert!(
            !(probe.root && op.layers.limits && probe.pids_cgroup.is_some()),
            "no pids cgroup for a root worker"
        );
    }
    // A memory cgroup wherever the probe found one and limits are on (any
    // uid); then the memory guarantee is the cgroup's, RLIMIT_AS not set.
    assert_eq!(
        p.memory_cgroup,
        probe.memory_cgroup.clone().filter(|_| op.layers.limits),
        "memory cgroup"
    );
    // RLIMIT_AS: the operator's address_space_bytes wherever it is given;
    // else not set under a memory cgroup (address space is not memory) and
    // ADDRESS_SPACE_PER_MEMORY × memory_bytes without one, the memory bound.
    // The memory guarantee names RLIMIT_AS exactly when it is set, and the
    // decision always says why.
    assert_eq!(p.address_space.is_some(), op.layers.limits);
    if let (Some(a), Some(l)) = (&p.address_space, p.limits) {
        let formula = l
            .memory_bytes
            .saturating_mul(policy::ADDRESS_SPACE_PER_MEMORY);
        let want = op
            .limits
            .address_space_bytes
            .or(p.memory_cgroup.is_none().then_some(formula));
        assert_eq!(a.bytes, want, "RLIMIT_AS");
        assert!(!a.why.is_empty(), "RLIMIT_AS without a reason");
        let memory = p
            .guarantees
            .iter()
            .find(|g| g.guarantee == Guarantee::Memory)
            .expect("the memory guarantee");
        assert_eq!(
            memory.kept_by.contains(&policy::Mechanism::RlimitAs),
            a.bytes.is_some(),
            "RLIMIT_AS carries bounded memory exactly when set: {memory:?}"
        );
        assert!(
            memory.kept(),
            "bounded memory lost with limits on: {memory:?}"
        );
    }

    // What the worker is told.
    let names: Vec<&str> = declared.iter().map(|c| c.as_str()).collect();
    assert_eq!(p.capabilities, declared.iter().copied().collect::<Vec<_>>());
    assert_eq!(
        p.environment.get("NODUS_EXTENSION_CAPABILITIES"),
        Some(&names.join(","))
    );
    assert_eq!(
        p.environment.get("HOME").map(String::as_str),
        Some("$SCRATCH")
    );
    assert_eq!(
        p.environment.get("TMPDIR").map(String::as_str),
        Some("$SCRATCH")
    );

    // Every layer reported once, in order, with the requirement its mode gives it.
    assert_eq!(
        p.layers.iter().map(|l| l.layer).collect::<Vec<_>>(),
        Layer::ALL
    );
    for l in &p.layers {
        assert_eq!(l.requirement, Requirement::of(op.mode, l.layer));
        assert_eq!(l.wanted, op.layers.on(l.layer));
        // A hard layer that cannot be applied no longer refuses by itself:
        // guarantees decide (strict refuses a guarantee lost with none of its
        // carriers switched off by the operator, checked in check_policy).
    }
    // What the worker cannot do that it could with a mount namespace: chmod
    // and utime in the workspace, said exactly when seccomp refuses them
    // there (no mount namespace, no listener for the supervisor).
    let workspace_metadata = p
        .degraded
        .iter()
        .filter(|d| d.starts_with("workspace_metadata: "))
        .count();
    let refused_in_workspace =
        p.seccomp.is_some() && !p.namespaces.mount && !probe.seccomp_listener;
    assert_eq!(
        workspace_metadata,
        usize::from(refused_in_workspace),
        "{:?}",
        p.degraded
    );
    // Strict mode gives up only what the operator switched off.
    if op.mode == Mode::Strict {
        for d in p
            .degraded
            .iter()
            .filter(|d| !d.starts_with("workspace_metadata: "))
        {
            assert!(
                d.contains("switched off by the operator policy"),
                "strict mode degraded: {d}"
            );
        }
    }
    // Every other degraded line but the operator's switches is a lost guarantee.
    let lost = p.guarantees.iter().filter(|g| !g.kept()).count();
    let switched = p
        .degraded
        .iter()
        .filter(|d| d.ends_with(": switched off by the operator policy"))
        .count();
    assert_eq!(
        p.degraded.len(),
        lost + switched + workspace_metadata,
        "{:?}",
        p.degraded
    );
    let _ = p.render();
    serde_json::to_string(p).expect("a policy serializes");
}

/// The system call rules keep their promises whatever else was declared.
fn check_seccomp(sc: &SeccompPolicy, exec: bool, net: bool, p: &Policy) {
    let mut seen = BTreeSet::new();
    for r in &sc.rules {
        assert!(
            seen.insert(r.name.as_str()),
            "two seccomp rules for {}",
            r.name
        );
        assert!(
            policy::syscall_number(&r.name).is_some(),
            "unknown system call {}",
            r.name
        );
    }
    // `allow`, `if CONDITION` or the errno.
    let action = |name: &str| {
        sc.rule(name).map(|r| match &r.action {
            SyscallAction::Allow => "allow".to_string(),
            SyscallAction::AllowIf(c) => format!("if {}", c.name),
            SyscallAction::Errno(e) => e.as_str().to_string(),
            other => panic!("an action this check does not know: {other:?}"),
        })
    };
    let label = |s: &str| Some(s.to_string());
    assert_eq!(action("clone3"), label("ENOSYS"), "clone3");
    // AF_UNIX only with a private root (no host socket in view) and abstract
    // names out of reach (own network namespace, or Landlock scopes).
    let scopes = p.landlock.as_ref().is_some_and(|l| l.abi >= 6);
    let unix = p.private_root.is_some() && (p.namespaces.net || scopes);
    assert_eq!(
        p.private_root.is_some(),
        p.namespaces.mount,
        "a private root with every mount namespace"
    );
    assert_eq!(
        action("socket"),
        label(match (net, unix) {
            (true, false) => "if socket_network_families",
            (true, true) => "if socket_network_families_and_unix",
            (false, true) => "if socket_unix",
            (false, false) => "EPERM",
        }),
        "socket is never plainly allowed"
    );
    assert_eq!(
        action("clone"),
        label(if exec {
            "if clone_no_namespaces"
        } else {
            "if clone_thread_only"
        }),
    );
    for n in ["fork", "vfork"] {
        assert_eq!(
            action(n),
            label(if exec { "allow" } else { "EPERM" }),
            "{n}"
        );
    }
    // What the data lets subprocess.run add is allowed only with it.
    for r in base_data()["seccomp"]["rules"].as_array().unwrap() {
        if r["when"] != "subprocess.run" || r.get("args").is_some() {
            continue;
        }
        for n in r["syscalls"].as_array().unwrap() {
            let n = n.as_str().unwrap();
            if exec {
                assert_eq!(action(n), label("allow"), "{n} with subprocess.run");
            } else {
                assert!(
                    sc.rule(n).map_or(0, |r| rank(&r.action)) == 0,
                    "{n} allowed without subprocess.run"
                );
            }
        }
    }
    assert_eq!(action("ioctl"), label("if ioctl_not_refused"));
    assert_eq!(action("prlimit64"), label("if prlimit_self"));
    // Relaxed only where the namespaces make them harmless.
    let relaxed = |n: &str| match n {
        "setsid" | "setpgid" | "setpriority" => p.namespaces.pid,
        "listen" => unix && !net,
        _ => false,
    };
    for group in base_data()["seccomp"]["deny"].as_array().unwrap() {
        for n in group["syscalls"].as_array().unwrap() {
            let n = n.as_str().unwrap();
            let want = label(if relaxed(n) { "allow" } else { "EPERM" });
            assert_eq!(action(n), want, "{n} is denied by base.json unless relaxed");
        }
    }
    assert_eq!(sc.default, Errno::Perm);

    // What the conditions check, whatever they are called: clone never with
    // a namespace flag, socket never of a family but IPv4, IPv6 and netlink.
    let groups = |name: &str| {
        sc.rule(name)
            .and_then(|r| r.action.condition())
            .map(|c| c.any_of.clone())
            .unwrap_or_default()
    };
    let ns_flags = (libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS) as u64;
    for g in groups("clone") {
        assert!(
            g.iter().any(|c| c.index == 0
                && c.width == ArgWidth::Qword
                && matches!(c.op, ArgOp::MaskedEq(m) if m & ns_flags == ns_flags)
                && c.value == 0),
            "a clone group without the namespace check: {g:?}"
        );
    }
    // AF_UNIX only with a private root (checked above by name).
    let mut families = vec![libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK];
    if unix {
        families.push(libc::AF_UNIX);
    }
    let families: Vec<u64> = families.into_iter().map(|f| f as u64).collect();
    for g in groups("socket") {
        assert!(
            g.iter()
                .any(|c| c.index == 0 && c.op == ArgOp::Eq && families.contains(&c.value)),
            "a socket group that does not pin the family: {g:?}"
        );
        // An IP socket is TCP or UDP by its type and its protocol both
        // (protocol 0 of SOCK_SEQPACKET is SCTP where its module is loaded).
        let ip = g.iter().any(|c| {
            c.index == 0
                && c.op == ArgOp::Eq
                && (c.value == libc::AF_INET as u64 || c.value == libc::AF_INET6 as u64)
        });
        if ip {
            let kinds = [libc::SOCK_STREAM, libc::SOCK_DGRAM].map(|t| t as u64);
            let protocols = [0, libc::IPPROTO_TCP, libc::IPPROTO_UDP].map(|p| p as u64);
            assert!(
                g.iter().any(|c| c.index == 1
                    && c.op == ArgOp::MaskedEq(0xf)
                    && kinds.contains(&c.value)),
                "an IP socket group that does not pin the type: {g:?}"
            );
            assert!(
                g.iter()
                    .any(|c| c.index == 2 && c.op == ArgOp::Eq && protocols.contains(&c.value)),
                "an IP socket group that does not pin the protocol: {g:?}"
            );
        }
    }
}

/// policies/base.json, parsed once.
fn base_data() -> &'static Value {
    static V: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    V.get_or_init(|| serde_json::from_str(policy::BASE_JSON).expect("base.json parses"))
}

/// policies/capabilities.json, parsed once.
fn capability_data() -> &'static Value {
    static V: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        serde_json::from_str(policy::CAPABILITIES_JSON).expect("capabilities.json parses")
    })
}

fn json_paths(doc: &Value, pointer: &str) -> BTreeSet<PathBuf> {
    doc.pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{pointer} in policy data"))
        .iter()
        .map(|p| PathBuf::from(p.as_str().expect("a path string")))
        .collect()
}

/// Declaring less never grants more: for every declared capability, the
/// policy without it is accepted too (but where strict mode refuses the
/// guarantees a worker without `subprocess.run` needs), and is nowhere more permissive
/// (filesystem, TCP, seccomp, namespaces). The capabilities with no kernel
/// meaning (`tool.invoke`, `memory.*`) change nothing at the kernel level.
pub fn check_capability_monotonicity(case: &PolicyCase) {
    let Ok(with) = case.derive() else {
        return;
    };
    for c in case.declared() {
        let less = case.without(c);
        let without = match less.derive() {
            Ok(p) => p,
            // Declaring less asks for more guarantees (exec and process
            // creation without subprocess.run): strict may refuse one
            // that no mechanism here can keep. Anything else is a failure.
            Err(e)
                if c == Capability::SubprocessRun && e.to_string().starts_with("strict mode: ") =>
            {
                continue
            }
            Err(e) => panic!("dropping {c} made derive refuse: {e}\n{case:#?}"),
        };
        for r in &without.filesystem {
            assert!(
                with.filesystem
                    .iter()
                    .any(|w| w.path == r.path && grants(w.access, r.access)),
                "without {c}, {r:?} is granted that is not granted with it"
            );
        }
        let tcp_rank = |p: &Policy| match &p.landlock {
            None => 3,
            Some(ll) => match (ll.tcp_handled, &ll.tcp_connect) {
                (false, _) => 2,
                (true, Some(_)) => 1,
                (true, None) => 0,
            },
        };
        assert!(
            tcp_rank(&without) <= tcp_rank(&with),
            "without {c}, more TCP"
        );
        assert_eq!(without.seccomp.is_some(), with.seccomp.is_some());
        if let (Some(w), Some(wo)) = (&with.seccomp, &without.seccomp) {
            let deny = SyscallAction::Errno(w.default);
            // In a network namespace of its own (which dropping network.outbound
            // gives), bind and setsockopt are free: nothing bound there is the host's.
            let own_net = without.namespaces.net && !with.namespaces.net;
            for r in &wo.rules {
                // Unix sockets too (socket of AF_UNIX): abstract names are out
                // of reach there, so the private root contains them.
                if own_net && matches!(r.name.as_str(), "bind" | "setsockopt" | "socket") {
                    continue;
                }
                // listen() serves unix sockets without network.outbound, and
                // would open an inbound port (autobind) with it, so the
                // capability takes it away.
                if r.name == "listen" && c.as_str() == "network.outbound" {
                    continue;
                }
                let more = w.rule(&r.name).map_or(&deny, |m| &m.action);
                assert!(
                    at_most(&r.action, more),
                    "without {c}, {} is {:?}",
                    r.name,
                    r.action
                );
            }
        }
        let n = (with.namespaces, without.namespaces);
        assert!(
            (n.1.net >= n.0.net)
                && n.1.mount == n.0.mount
                && n.1.pid == n.0.pid
                && n.1.ipc == n.0.ipc
                && n.1.user == n.0.user
                && n.1.uts == n.0.uts,
            "without {c}, other namespaces"
        );
        if matches!(
            c,
            Capability::ToolInvoke | Capability::MemoryRead | Capability::MemoryWrite
        ) {
            assert_eq!(without.filesystem, with.filesystem, "{c} changed files");
            assert_eq!(without.landlock, with.landlock, "{c} changed Landlock");
            assert_eq!(without.seccomp, with.seccomp, "{c} changed seccomp");
            assert_eq!(without.namespaces, with.namespaces);
            assert_eq!(without.limits, with.limits);
            assert_eq!(without.pids_cgroup, with.pids_cgroup);
            assert_eq!(without.layers, with.layers);
        }
    }
}

/// Whether access `have` covers access `want` on the same path.
fn grants(have: Access, want: Access) -> bool {
    have == want || want == Access::Read
}

/// How much a seccomp action lets through (an absent rule is the default EPERM).
fn rank(a: &SyscallAction) -> u8 {
    match a {
        SyscallAction::Errno(_) => 0,
        // Done by the supervisor only beneath the writable grants.
        SyscallAction::Supervised => 1,
        SyscallAction::AllowIf(_) => 1,
        SyscallAction::Allow => 2,
        other => panic!("an action this check does not rank: {other:?}"),
    }
}

/// Whether action `less` lets through no more than action `more`.
fn at_most(less: &SyscallAction, more: &SyscallAction) -> bool {
    match (less, more) {
        (SyscallAction::AllowIf(l), SyscallAction::AllowIf(m)) => l.implies(m),
        (SyscallAction::Supervised, SyscallAction::AllowIf(_))
        | (SyscallAction::AllowIf(_), SyscallAction::Supervised) => false,
        _ => rank(less) <= rank(more),
    }
}

// ---------------------------------------------------------------- tool schemas

/// Names of the tools in `schema_manifest()`.
pub const SCHEMA_TOOLS: &[&str] = &[
    "s.object",
    "s.formats",
    "s.numbers",
    "s.recursive",
    "s.strings",
];

/// A manifest whose tools declare schemas with most keywords, including
/// formats, patterns, big and tiny numbers and recursion.
pub fn schema_manifest() -> Manifest {
    let schemas = [
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
                "n": {"type": "integer", "minimum": 0, "maximum": 10, "multipleOf": 2},
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true, "maxItems": 3},
                "kind": {"enum": ["a", 1, 1.5, null, [1], {"a": 1}]},
            },
            "required": ["name"],
            "additionalProperties": false,
            "dependentRequired": {"n": ["tags"]},
        }),
        json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "allOf": [
                {"format": "email"}, {"format": "date-time"}, {"format": "date"}, {"format": "time"},
                {"format": "ipv4"}, {"format": "ipv6"}, {"format": "hostname"}, {"format": "uri"},
                {"format": "uri-reference"}, {"format": "iri"}, {"format": "regex"},
                {"format": "json-pointer"}, {"format": "relative-json-pointer"}, {"format": "uuid"},
                {"format": "idn-email"}, {"format": "idn-hostname"}, {"format": "uri-template"},
            ],
            "additionalProperties": {"format": "date-time"},
            "items": {"format": "ipv4"},
        }),
        serde_json::from_str(
            r#"{"anyOf": [{"multipleOf": 0.01}, {"multipleOf": 1e-300}, {"multipleOf": 123456789012345678901234567890},
                          {"multipleOf": 7}, {"minimum": 1.5e300}, {"exclusiveMaximum": -12345678901234567890123}],
                "not": {"const": 98765432109876543210987654321},
                "oneOf": [{"type": "integer"}, {"type": "number", "maximum": 0.1}, {"type": ["string", "array", "object", "null", "boolean"]}],
                "items": {"minimum": -1e308, "maximum": 1e308, "exclusiveMinimum": 5e-324}}"#,
        )
        .unwrap(),
        json!({
            "$defs": {"node": {
                "type": ["object", "array", "string", "number", "boolean", "null"],
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                "patternProperties": {"^x-": {"type": "string"}},
                "propertyNames": {"maxLength": 8},
                "if": {"required": ["a"]}, "then": {"required": ["b"]}, "else": {"maxProperties": 3},
                "contains": {"type": "integer"}, "minContains": 0, "maxContains": 2,
                "unevaluatedProperties": {"type": ["string", "object", "array"]},
                "unevaluatedItems": false,
                "prefixItems": [{"type": "string"}],
            }},
            "$ref": "#/$defs/node",
        }),
        json!({
            "type": ["string", "object"],
            "pattern": "^(a+)+$|\\p{L}{2,}|[\\u0000-\\u001f]",
            "minLength": 2,
            "maxLength": 40,
            "contentEncoding": "base64",
            "contentMediaType": "application/json",
            "properties": {"s": {"pattern": "(x|xx)*y$"}},
        }),
    ];
    let tools: Vec<Value> = SCHEMA_TOOLS
        .iter()
        .zip(schemas)
        .map(|(name, schema)| json!({"name": name, "description": "d", "schema": schema}))
        .collect();
    let doc =
        json!({"name": "s", "version": "1", "description": "d", "surfaces": {"tools": tools}});
    Manifest::parse(doc.to_string().as_bytes(), "schemas.json").expect("the schema manifest parses")
}

pub fn schemas() -> ToolSchemas {
    ToolSchemas::compile(&schema_manifest(), SchemaMode::Enforce).expect("the schemas compile")
}

/// `check` returns for any arguments, for every tool (and none for a tool without a schema).
pub fn check_tool_args(schemas: &ToolSchemas, args: &Value) {
    for tool in SCHEMA_TOOLS {
        if let Some(why) = schemas.check(tool, args) {
            assert!(why.contains(tool));
        }
    }
    assert_eq!(schemas.check("no.such_tool", args), None);
}

/// `PATHS[i % len]`.
pub fn path(i: u8) -> PathBuf {
    PathBuf::from(PATHS[i as usize % PATHS.len()])
}

/// Builds limit overrides from (key index, value) pairs; an index past the
/// seven limits overrides nothing.
pub fn limits(pairs: &[(u8, u64)]) -> LimitOverrides {
    let mut o = LimitOverrides::default();
    for (k, v) in pairs {
        let slot = match *k as usize % LIMIT_KEYS {
            0 => &mut o.memory_bytes,
            1 => &mut o.cpu_seconds,
            2 => &mut o.processes,
            3 => &mut o.open_files,
            4 => &mut o.file_size_bytes,
            5 => &mut o.core_bytes,
            6 => &mut o.address_space_bytes,
            _ => continue,
        };
        *slot = Some(*v);
    }
    o
}

/// Builds a trust_classes map from (class index, capability indexes) pairs.
pub fn trust_classes(pairs: &[(u8, Vec<u8>)]) -> BTreeMap<TrustClass, Vec<Capability>> {
    pairs
        .iter()
        .map(|(k, caps)| {
            (
                TrustClass::ALL[*k as usize % TrustClass::ALL.len()],
                caps.iter()
                    .map(|c| CAPABILITIES[*c as usize % CAPABILITIES.len()])
                    .collect(),
            )
        })
        .collect()
}

pub fn is_path(p: &Path) -> bool {
    PATHS.iter().any(|q| Path::new(q) == p)
}
