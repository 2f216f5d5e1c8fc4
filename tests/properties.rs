//! Property-based tests: the fuzz targets' properties (`fuzz/properties.rs`,
//! shared with `fuzz/fuzz_targets/`), run for a few hundred cases each in the
//! normal test suite. `PROPTEST_CASES=N` runs N cases of each instead.
//!
//! Bugs the properties found are kept below as minimized `#[ignore]`d cases.

use std::cell::Cell;

use nodus_extension::internals::extension::manifest::{Manifest, MAX_DEPTH, VALID_EFFECTS};
use nodus_extension::internals::protocol::{self, Line, Response, WorkerMessage};
use nodus_extension::policy::Probe;
use nodus_extension::policy::{Layers, Mode, OperatorPolicy, ProgramFacts};
use nodus_extension::Capability;
use nodus_extension::TrustClass;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};

#[path = "../fuzz/properties.rs"]
mod properties;
use properties::PolicyCase;

/// `cases` cases, unless PROPTEST_CASES says otherwise; failures are not
/// written to proptest-regressions/ (minimized cases are kept in this file).
fn config(cases: u32) -> Config {
    let mut c = Config {
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

// ------------------------------------------------------------ strategies

fn int_text() -> BoxedStrategy<String> {
    prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<u64>().prop_map(|i| i.to_string()),
        "-?[1-9][0-9]{19,40}",
        Just("0".to_string()),
        Just("-0".to_string()),
    ]
    .boxed()
}

/// Float literals whose value is finite (and may underflow to 0).
fn finite_float_text() -> BoxedStrategy<String> {
    prop_oneof![
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(|n| n.to_string())),
        "-?(0|[1-9][0-9]{0,6})\\.[0-9]{1,7}",
        "-?(0|[1-9][0-9]{0,3})(\\.[0-9]{1,4})?[eE][+-]?[0-9]{1,2}",
        "-?[1-9](\\.[0-9]{1,3})?[eE]-[3-9][0-9]{2}",
        Just("-0.0".to_string()),
        Just("1E2".to_string()),
        Just("1e16".to_string()),
    ]
    .boxed()
}

/// Float literals that overflow binary64: `inf` to Python.
fn overflowing_float_text() -> BoxedStrategy<String> {
    "-?[1-9](\\.[0-9]{1,3})?[eE]\\+?[4-9][0-9]{2}".boxed()
}

fn number(text: BoxedStrategy<String>) -> BoxedStrategy<Value> {
    text.prop_map(|t| {
        Value::Number(serde_json::from_str(&t).unwrap_or_else(|e| panic!("{t}: {e}")))
    })
    .boxed()
}

fn finite_number() -> BoxedStrategy<Value> {
    prop_oneof![number(int_text()), number(finite_float_text())].boxed()
}

fn any_number() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => number(int_text()),
        4 => number(finite_float_text()),
        1 => number(overflowing_float_text()),
    ]
    .boxed()
}

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        any::<String>(),
        "[a-z._ \\n\\t\"\\\\/\u{7f}\u{e9}\u{1F600}]{0,12}",
        select(vec![
            "", " ", "\u{a0}", "\u{1c}", "id", "ok", "1", "pure", "a.b"
        ])
        .prop_map(String::from),
    ]
    .boxed()
}

/// Any JSON value, small; numbers from `numbers`.
fn json_value_with(numbers: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        numbers,
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            vec((text(), inner), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

fn json_value() -> BoxedStrategy<Value> {
    json_value_with(any_number())
}

fn finite_json_value() -> BoxedStrategy<Value> {
    json_value_with(finite_number())
}

fn json_object() -> BoxedStrategy<Value> {
    vec(("[a-z$_]{0,6}", finite_json_value()), 0..4)
        .prop_map(|kv| Value::Object(kv.into_iter().collect()))
        .boxed()
}

/// A field: mostly `good`, sometimes any value, sometimes missing.
fn field(good: BoxedStrategy<Value>) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        30 => good.prop_map(Some),
        1 => finite_json_value().prop_map(Some),
        1 => Just(None),
    ]
    .boxed()
}

fn string_field(re: &'static str) -> BoxedStrategy<Value> {
    prop_oneof![
        30 => re.prop_map(Value::String),
        1 => text().prop_map(Value::String),
        1 => select(vec!["", "  ", "\u{1c}", "\u{2028}"]).prop_map(|s| json!(s)),
    ]
    .boxed()
}

fn capabilities_field() -> BoxedStrategy<Value> {
    let names: Vec<&str> = Capability::ALL.iter().map(|c| c.as_str()).collect();
    vec(
        prop_oneof![
            30 => select(names).prop_map(|s| json!(s)),
            1 => text().prop_map(Value::String),
            1 => finite_json_value(),
        ],
        0..4,
    )
    .prop_map(Value::Array)
    .boxed()
}

fn provenance_field() -> BoxedStrategy<Value> {
    let one = |good: Vec<&'static str>| {
        field(
            prop_oneof![30 => select(good).prop_map(|s| json!(s)), 1 => Just(json!("bogus"))]
                .boxed(),
        )
    };
    (
        one(vec!["local", "registry", "git"]),
        one(vec!["dev", "verified", "trusted"]),
        one(vec!["personal", "team", "org"]),
    )
        .prop_map(|(o, t, w)| object([("origin", o), ("trust_class", t), ("owner_class", w)]))
        .boxed()
}

fn tool() -> BoxedStrategy<Value> {
    let mut effects = VALID_EFFECTS.to_vec();
    effects.push("bogus");
    (
        field(string_field("[a-z0-9_]{1,4}(\\.[a-z0-9_]{1,4}){1,2}\n?")),
        field(string_field("[A-Za-z ]{1,10}")),
        (field(json_object()), field(json_object())),
        field(prop_oneof![30 => Just(json!("v1alpha1")), 1 => Just(json!("v2"))].boxed()),
        field(json_object()),
        field(vec(select(effects), 0..3).prop_map(|e| json!(e)).boxed()),
    )
        .prop_map(
            |(name, description, (schema, schema_), version, returns, effects)| {
                object([
                    ("name", name),
                    ("description", description),
                    ("schema", schema),
                    ("schema_", schema_),
                    ("version", version),
                    ("returns_schema", returns),
                    ("effects", effects),
                ])
            },
        )
        .boxed()
}

fn surfaces_field() -> BoxedStrategy<Value> {
    field(vec(tool(), 0..3).prop_map(Value::Array).boxed())
        .prop_map(|tools| object([("tools", tools)]))
        .boxed()
}

fn object<const N: usize>(fields: [(&str, Option<Value>); N]) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect(),
    )
}

/// An object shaped like a manifest: every field mostly right, each now and
/// then of another type or missing, plus unknown fields.
fn manifest_object() -> BoxedStrategy<Value> {
    let abi = prop_oneof![
        20 => Just(json!("1")),
        1 => Just(json!(1)),
        1 => Just(json!("2")),
        1 => Just(json!(true)),
        1 => Just(json!("1.0")),
    ];
    let entry = prop_oneof![
        vec("[a-z/.-]{0,6}", 0..3).prop_map(|e| json!(e)),
        finite_json_value(),
    ];
    (
        field(string_field("[a-z][a-z0-9_.-]{0,12}")),
        field(string_field("[0-9]\\.[0-9]\\.[0-9]")),
        field(string_field("[A-Za-z][A-Za-z .]{0,12}")),
        field(abi.boxed()),
        field(string_field("[0-9]\\.[0-9]\\.[0-9]")),
        field(capabilities_field()),
        field(provenance_field()),
        field(surfaces_field()),
        field(entry.boxed()),
        vec(("[a-z_]{1,8}", finite_json_value()), 0..2),
    )
        .prop_map(|(n, v, d, abi, min, caps, prov, surf, entry, extra)| {
            let mut m = object([
                ("name", n),
                ("version", v),
                ("description", d),
                ("abi_version", abi),
                ("min_nodus_version", min),
                ("capabilities", caps),
                ("provenance", prov),
                ("surfaces", surf),
                ("entry", entry),
            ]);
            for (k, v) in extra {
                m.as_object_mut().unwrap().entry(k).or_insert(v);
            }
            m
        })
        .boxed()
}

fn policy_case() -> BoxedStrategy<PolicyCase> {
    let operator = (
        (vec(any::<u8>(), 0..3), vec(any::<u8>(), 0..3)),
        vec(any::<u16>(), 0..3),
        vec((any::<u8>(), any::<u64>()), 0..4),
        proptest::bool::weighted(0.3),
        vec((any::<u8>(), vec(any::<u8>(), 0..9)), 0..3),
        [proptest::bool::weighted(0.85); 4],
    )
        .prop_map(|((roots, ro), ports, limits, best_effort, trust, layers)| {
            let mut op = OperatorPolicy::default();
            op.workspace_roots = roots.into_iter().map(properties::path).collect();
            op.read_only_paths = ro.into_iter().map(properties::path).collect();
            op.tcp_ports = ports;
            op.limits = properties::limits(&limits);
            op.mode = if best_effort {
                Mode::BestEffort
            } else {
                Mode::Strict
            };
            op.trust_classes = properties::trust_classes(&trust);
            op.worker_ids = None;
            op.layers = {
                let mut v = Layers::default();
                v.landlock = layers[0];
                v.seccomp = layers[1];
                v.namespaces = layers[2];
                v.limits = layers[3];
                v
            };
            op.egress = None;
            op.environment = Default::default();
            op.extensions = Default::default();
            op
        });
    let probe = (
        any::<bool>(),
        prop_oneof![3 => Just(7u8), 1 => 0u8..9],
        proptest::bool::weighted(0.9),
        any::<bool>(),
        proptest::option::of(select(vec!["/sys/fs/cgroup/pids", "", "/x"])),
        any::<bool>(),
    )
        .prop_map(|(root, abi, seccomp, userns, pids, listener)| Probe {
            kernel: "proptest".into(),
            uid: if root { 0 } else { 1000 },
            root,
            landlock_abi: abi,
            landlock_missing: vec![],
            seccomp_filter: seccomp,
            seccomp_listener: seccomp && listener,
            seccomp_listener_missing: (!(seccomp && listener)).then(|| "EBUSY".into()),
            user_namespaces: userns,
            mount_namespaces: userns,
            network_namespaces: userns,
            pid_namespaces: userns,
            ipc_namespaces: userns,
            uts_namespaces: userns,
            namespace_failure: None,
            pids_cgroup: pids.map(String::from),
            memory_cgroup: pids.map(|p| format!("{p}/memory")),
            pids_cgroup_missing: None,
            memory_cgroup_missing: None,
            cgroup_v2_delegation: false,
        });
    let program = (
        any::<u8>(),
        proptest::option::of(any::<u8>()),
        vec(any::<u8>(), 0..3),
    )
        .prop_map(|(p, l, r)| ProgramFacts {
            program: properties::path(p),
            loader: l.map(properties::path),
            runtime_dirs: r.into_iter().map(properties::path).collect(),
        });
    (
        vec(select(Capability::ALL.to_vec()), 0..6),
        select(TrustClass::ALL.to_vec()),
        operator,
        probe,
        proptest::option::of(any::<u8>()),
        any::<u8>(),
        program,
    )
        .prop_map(
            |(capabilities, trust_class, operator, probe, ws, ext, program)| PolicyCase {
                capabilities,
                trust_class,
                operator,
                probe,
                workspace: ws.map(properties::path),
                extension_dir: properties::path(ext),
                program,
            },
        )
        .boxed()
}

// ------------------------------------------------------------ manifest

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn manifest_parse_takes_any_bytes(bytes in vec(any::<u8>(), 0..256)) {
        properties::check_manifest_bytes(&bytes);
    }

    #[test]
    fn manifest_parse_takes_json_like_text(
        text in "[\\[\\]{}\":,. 0-9eE+\\-a-z_\\\\\n]{0,120}",
    ) {
        properties::check_manifest_bytes(text.as_bytes());
    }

    #[test]
    fn manifest_parse_takes_any_json_value(v in json_value()) {
        properties::check_manifest_bytes(v.to_string().as_bytes());
    }
}

/// Manifest-shaped objects with fields of random types: when accepted, the
/// manifest keeps its promises and round-trips through `to_json()`; and
/// enough of them are accepted for that to be exercised.
#[test]
fn manifest_shaped_objects() {
    let (shaped, accepted) = (Cell::new(0usize), Cell::new(0usize));
    proptest::test_runner::TestRunner::new(config(500))
        .run(&manifest_object(), |v| {
            shaped.set(shaped.get() + 1);
            if let Ok(m) = Manifest::parse(v.to_string().as_bytes(), "shaped.json") {
                accepted.set(accepted.get() + 1);
                properties::check_accepted_manifest(&m);
            }
            Ok(())
        })
        .unwrap();
    let (shaped, accepted) = (shaped.get(), accepted.get());
    eprintln!("{accepted} of {shaped} manifest-shaped objects accepted");
    assert!(
        accepted * 10 >= shaped,
        "only {accepted} of {shaped} manifest-shaped objects were accepted"
    );
}

proptest! {
    #![proptest_config(config(24))]

    /// Nesting around MAX_DEPTH inside a tool schema: refused past the limit,
    /// accepted (and round-tripped, deep values and all) below it.
    #[test]
    fn manifest_nesting_depth(depth in prop_oneof![1usize..70, 880usize..910], kinds in vec(any::<bool>(), 910)) {
        let mut nested = String::new();
        for k in &kinds[..depth] {
            nested.push_str(if *k { "[" } else { "{\"k\": " });
        }
        nested.push_str("1.50");
        for k in kinds[..depth].iter().rev() {
            nested.push(if *k { ']' } else { '}' });
        }
        let doc = format!(
            r#"{{"name": "x", "version": "1", "description": "d", "surfaces": {{"tools": [{{"name": "a.b", "description": "d", "schema": {{"d": {nested}}}}}]}}}}"#
        );
        // root, surfaces, tools, the tool, its schema: 5 levels before `nested`.
        let result = Manifest::parse(doc.as_bytes(), "deep.json");
        prop_assert_eq!(result.is_ok(), 5 + depth <= MAX_DEPTH, "depth {}", depth);
        if let Ok(m) = result {
            properties::check_accepted_manifest(&m);
        }
    }
}

// ------------------------------------------------------------ protocol

/// Python's `bool()` of what `json.loads` makes of `v`.
fn py_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => {
            let t = n.to_string();
            if t.contains(['.', 'e', 'E']) {
                t.parse::<f64>().unwrap() != 0.0
            } else {
                t.trim_start_matches('-').bytes().any(|b| b != b'0')
            }
        }
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// What the reference host (`runner/subprocess.py`) makes of a response line
/// while waiting for `id`: `None` if it skips the line.
fn reference_reading(msg: &Map<String, Value>, id: &str) -> Option<Response> {
    if msg.get("id") != Some(&json!(id)) {
        return None;
    }
    Some(if msg.get("ok").is_some_and(py_truthy) {
        Response::Ok(msg.get("result").cloned().unwrap_or(Value::Null))
    } else {
        Response::Err(match msg.get("error") {
            None => "unknown error".into(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(), // str() of it; compared only for strings below
        })
    })
}

fn response_object(ok: BoxedStrategy<Value>) -> BoxedStrategy<Map<String, Value>> {
    (
        field(prop_oneof![4 => Just(json!("req-1")), 1 => text().prop_map(Value::String)].boxed()),
        field(ok),
        field(finite_json_value()),
        field(prop_oneof![text().prop_map(Value::String), finite_json_value()].boxed()),
        proptest::option::of(select(vec!["invoke", "shutdown", "", "result"])),
    )
        .prop_map(|(id, ok, result, error, op)| {
            let mut m = object([("id", id), ("ok", ok), ("result", result), ("error", error)]);
            if let Some(op) = op {
                m["op"] = json!(op);
            }
            match m {
                Value::Object(m) => m,
                _ => unreachable!(),
            }
        })
        .boxed()
}

fn check_against_reference(msg: &Map<String, Value>, line: &[u8]) -> Result<(), TestCaseError> {
    let ours = protocol::decode_worker_line(line);
    let reference = reference_reading(msg, "req-1");
    match (&ours, &reference) {
        (WorkerMessage::Response { id, response }, Some(r)) => {
            prop_assert_eq!(id, "req-1");
            match (response, r) {
                (Response::Ok(a), Response::Ok(b)) => prop_assert_eq!(a, b),
                (Response::Err(a), Response::Err(b)) => {
                    if matches!(msg.get("error"), None | Some(Value::String(_))) {
                        prop_assert_eq!(a, b);
                    }
                }
                _ => prop_assert!(false, "ours {:?}, reference {:?}", response, r),
            }
        }
        // A response to another id: the reference skips it, and so does our host.
        (WorkerMessage::Response { id, .. }, None) => prop_assert_ne!(id, "req-1"),
        (WorkerMessage::Ignored, None) => {}
        _ => prop_assert!(false, "ours {:?}, reference {:?}", ours, reference),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn worker_line_takes_any_bytes(bytes in vec(any::<u8>(), 0..200)) {
        properties::check_worker_line(&bytes);
    }

    #[test]
    fn worker_line_takes_any_json(v in json_value()) {
        properties::check_worker_line(v.to_string().as_bytes());
        properties::check_worker_line(&protocol::dumps(&v));
    }

    /// Response lines are read as the reference host reads them (numbers that
    /// stay finite in Python; see the ignored cases for the others).
    #[test]
    fn worker_responses_read_as_the_reference_reads_them(
        msg in response_object(prop_oneof![any::<bool>().prop_map(Value::Bool), finite_json_value()].boxed()),
        pad in select(vec!["", " ", "\t", "\r", "  \t"]),
    ) {
        let line = format!("{pad}{}{pad}", Value::Object(msg.clone()));
        check_against_reference(&msg, line.as_bytes())?;
        properties::check_worker_line(line.as_bytes());
    }

    #[test]
    fn dumps_writes_what_json_dumps_would_and_parses_back(v in json_value()) {
        properties::check_dumps(&v);
    }
}

proptest! {
    #![proptest_config(config(400))]

    /// read_line: never a line over the limit; the lines are the input split
    /// on '\n' up to the first piece over the limit, whatever the buffer size.
    #[test]
    fn read_line_is_bounded_and_splits_on_newlines(
        data in vec(prop_oneof![6 => Just(b'a'), 2 => Just(b'\n'), 1 => any::<u8>()], 0..160),
        max in prop_oneof![3 => 0usize..24, 1 => 24usize..200],
        capacity in 1usize..20,
    ) {
        thread_local!(static RT: tokio::runtime::Runtime = properties::runtime());
        RT.with(|rt| properties::check_read_line(rt, &data, max, capacity));
    }
}

// ------------------------------------------------------------ policy

proptest! {
    #![proptest_config(config(300))]

    /// derive refuses exactly what it must; what it returns keeps the
    /// invariants (Write only on the workspace, socket never plainly allowed,
    /// clone3 ENOSYS, one rule a system call, nothing from an undeclared
    /// capability), and declaring less never grants more.
    #[test]
    fn policy_derivation_invariants(case in policy_case()) {
        properties::check_policy(&case);
        properties::check_capability_monotonicity(&case);
    }
}

// ------------------------------------------------------------ tool schemas

fn schema_args() -> BoxedStrategy<Value> {
    let shaped = (
        field(prop_oneof![string_field("[a-z]{0,7}"), finite_json_value()].boxed()),
        field(finite_number()),
        field(
            vec(text().prop_map(Value::String), 0..4)
                .prop_map(Value::Array)
                .boxed(),
        ),
        field(finite_json_value()),
        vec(("(x-)?[a-z]{0,9}", finite_json_value()), 0..3),
    )
        .prop_map(|(name, n, tags, kind, extra)| {
            let mut m = object([("name", name), ("n", n), ("tags", tags), ("kind", kind)]);
            for (k, v) in extra {
                m[k] = v;
            }
            m
        });
    let strings = prop_oneof![
        text(),
        "(a{1,30}!?|x{0,30}y?)",
        "[0-9]{1,4}-[0-9]{2}-[0-9]{2}(T[0-9:]{8}(Z|[+-][0-9]{2}:[0-9]{2}))?",
        "[a-z]{1,5}@[a-z.]{1,8}",
        "[0-9.]{7,15}|[0-9a-f:]{2,39}",
        "(/|#)?[a-z~0-9/]{0,10}",
        "[\\[\\](){}*+?|^$\\\\a-z0-9]{0,10}",
    ]
    .prop_map(Value::String);
    prop_oneof![json_value(), shaped, strings].boxed()
}

#[test]
fn tool_schema_check_takes_any_arguments() {
    let schemas = properties::schemas();
    proptest::test_runner::TestRunner::new(config(400))
        .run(&schema_args(), |args| {
            properties::check_tool_args(&schemas, &args);
            Ok(())
        })
        .unwrap();
}

// ------------------------------------------------------------ regressions

/// `read_line(reader, usize::MAX)`: `max + 1` overflows. In a debug build it
/// panics ("attempt to add with overflow"); in release it wraps to 0 and
/// every line is TooLong. `--max-line 18446744073709551615` reaches it.
#[test]
fn read_line_with_the_largest_limit() {
    properties::check_read_line(&properties::runtime(), b"a\n", usize::MAX, 8);
}

/// `"ok": 1e400` is `inf` to Python, and `1` followed by 400 zeros an int:
/// both truthy, so the reference returns the result. `truthy` uses
/// `Number::as_f64`, which is None for a number beyond f64 under
/// arbitrary_precision, so we report "unknown error" instead.
#[test]
fn ok_beyond_f64_is_truthy() {
    for ok in ["1e400".to_string(), format!("1{}", "0".repeat(400))] {
        let line = format!(r#"{{"id": "req-1", "ok": {ok}, "result": 5}}"#);
        assert_eq!(
            protocol::decode_worker_line(line.as_bytes()),
            WorkerMessage::Response {
                id: "req-1".into(),
                response: Response::Ok(json!(5))
            },
            "{line}"
        );
    }
}

/// The reference reads worker lines as text and `line.strip()`s them, which
/// removes any Unicode whitespace (`\x0b`, `\x1c`..`\x1f`, U+0085, U+00A0,
/// U+2028, ...); `protocol::py_strip` must do the same, or such a line would
/// be ignored and the invoke time out.
#[test]
fn lines_padded_with_other_whitespace() {
    for pad in ["\x0b", "\x1c", "\u{85}", "\u{a0}", "\u{2028}"] {
        let line = format!(r#"{pad}{{"id": "req-1", "ok": true, "result": 1}}{pad}"#);
        assert_eq!(
            protocol::decode_worker_line(line.as_bytes()),
            WorkerMessage::Response {
                id: "req-1".into(),
                response: Response::Ok(json!(1))
            },
            "{pad:?}"
        );
    }
}

/// A Python worker returning `float("nan")` or `float("inf")` writes
/// `NaN`/`Infinity` (json.dumps allows them by default) and the reference
/// host's json.loads reads them back. They were once refused by serde_json,
/// so the line was ignored and the invoke timed out; now they are read, and
/// written back as json.dumps writes them.
#[test]
fn responses_with_non_finite_floats() {
    for lit in ["NaN", "Infinity", "-Infinity"] {
        let line = format!(
            r#"{{"id": "req-1", "ok": true, "result": [{lit}, "{lit}", {{"{lit}": {lit}}}]}}"#
        );
        let WorkerMessage::Response {
            id,
            response: Response::Ok(v),
        } = protocol::decode_worker_line(line.as_bytes())
        else {
            panic!("not read: {line}");
        };
        assert_eq!(id, "req-1");
        assert_eq!(
            String::from_utf8(protocol::dumps(&v)).unwrap(),
            format!(r#"[{lit}, "{lit}", {{"{lit}": {lit}}}]"#)
        );
        // serde_json's as_f64() gives only finite floats; the text parses as Rust's f64.
        let f: f64 = match &v[0] {
            serde_json::Value::Number(n) => n.as_str().parse().unwrap(),
            other => panic!("{other}"),
        };
        assert!(if lit == "NaN" {
            f.is_nan()
        } else {
            f.is_infinite() && (f > 0.0) != lit.starts_with('-')
        });
        assert_eq!(
            protocol::line_head(line.as_bytes()).id.as_deref(),
            Some("req-1")
        );
    }
    // Not JSON for other reasons: still ignored; a line that already holds a
    // sentinel's digits is not rewritten (so a worker cannot forge a NaN).
    for line in [
        r#"{"id": "req-1", "ok": true, "result": nan}"#,
        r#"{"id": "req-1", "ok": true, "result": [NaN, 1e-77777777771]}"#,
    ] {
        assert_eq!(
            protocol::decode_worker_line(line.as_bytes()),
            WorkerMessage::Ignored,
            "{line}"
        );
    }
    let v =
        match protocol::decode_worker_line(br#"{"id": "r", "ok": true, "result": 1e-77777777771}"#)
        {
            WorkerMessage::Response {
                response: Response::Ok(v),
                ..
            } => v,
            other => panic!("{other:?}"),
        };
    assert_eq!(
        v.to_string(),
        "1e-77777777771",
        "a plain number stays a number"
    );
}

#[test]
fn read_line_limits_at_the_edges() {
    let rt = properties::runtime();
    for max in [0, 1, 2, 3, 1 << 20, usize::MAX - 1] {
        for data in [&b""[..], b"\n", b"ab", b"ab\n", b"\n\nabc\nd"] {
            properties::check_read_line(&rt, data, max, 1);
            properties::check_read_line(&rt, data, max, 3);
        }
    }
    // The limit is on the line without its newline.
    let mut r = tokio::io::BufReader::with_capacity(1, &b"abc\n"[..]);
    assert_eq!(
        rt.block_on(protocol::read_line(&mut r, 3)).unwrap(),
        Line::Complete(b"abc".to_vec())
    );
}
