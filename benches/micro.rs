//! Micro benchmarks of the runner's pure stages (`cargo bench --bench micro`):
//! manifest parsing, policy derivation, launch preparation (Landlock ruleset +
//! seccomp BPF), argument validation and the protocol's encode/decode.
//! `bench/bench.py --micro` runs these and copies the estimates into
//! docs/benchmarks.md.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use nodus_extension::internals::extension::manifest::Manifest;
use nodus_extension::internals::extension::validation::{SchemaMode, ToolSchemas};
use nodus_extension::internals::protocol;
use nodus_extension::internals::sandbox::launch;
use nodus_extension::policy::Probe;
use nodus_extension::policy::{self, Inputs, OperatorPolicy};
use nodus_extension::{internals::host::Prepared, HostOptions};
use serde_json::json;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello")
}

fn python() -> std::ffi::OsString {
    std::env::var_os("BENCH_PYTHON").unwrap_or_else(|| "python3".into())
}

fn manifest_and_policy(c: &mut Criterion) {
    let dir = example();
    let bytes = std::fs::read(dir.join("nodus-extension.json")).unwrap();
    c.bench_function("manifest/parse", |b| {
        b.iter(|| Manifest::parse(black_box(&bytes), "nodus-extension.json").unwrap())
    });

    let options = HostOptions::default().with_python(python());
    // Interpreter resolution, ELF loader lookup and policy derivation: what
    // `load` does before it starts anything.
    c.bench_function("load/prepare (manifest + interpreter + policy)", |b| {
        b.iter(|| Prepared::new(black_box(&dir), &options).unwrap())
    });

    let prepared = Prepared::new(&dir, &options).unwrap();
    let program = prepared.entry.program_facts(&prepared.dir);
    let operator = OperatorPolicy::default();
    let probe = Probe::cached();
    c.bench_function("policy/derive", |b| {
        b.iter(|| {
            policy::derive(&Inputs {
                manifest: black_box(&prepared.manifest),
                extension_dir: &prepared.dir,
                workspace: None,
                operator: &operator,
                program: &program,
                identity: &Default::default(),
                probe,
            })
            .unwrap()
        })
    });

    let scratch = std::env::temp_dir();
    c.bench_function("launch/prepare (Landlock ruleset + seccomp BPF)", |b| {
        b.iter(|| launch::prepare(black_box(&prepared.policy), &scratch).unwrap())
    });

    c.bench_function("validation/compile tool schemas", |b| {
        b.iter(|| ToolSchemas::compile(black_box(&prepared.manifest), SchemaMode::Enforce).unwrap())
    });
    let schemas = ToolSchemas::compile(&prepared.manifest, SchemaMode::Enforce).unwrap();
    let args = json!({"name": "Ada"});
    c.bench_function("validation/check args", |b| {
        b.iter(|| schemas.check(black_box("example.greet"), black_box(&args)))
    });
}

fn protocol_codec(c: &mut Criterion) {
    let args = json!({"name": "Ada", "text": "the quick brown fox", "n": [1, 2, 3]});
    c.bench_function("protocol/new_request_id", |b| {
        b.iter(protocol::new_request_id)
    });
    let id = protocol::new_request_id();
    c.bench_function("protocol/encode invoke line", |b| {
        b.iter(|| protocol::invoke_line(black_box(&id), "example.greet", black_box(&args)))
    });
    let response = format!(r#"{{"id": "{id}", "ok": true, "result": "Hello, Ada!"}}"#).into_bytes();
    c.bench_function("protocol/decode response line", |b| {
        b.iter(|| protocol::decode_worker_line(black_box(&response)))
    });
    let request = protocol::invoke_line(&id, "example.greet", &args);
    c.bench_function("protocol/request_id (run proxy, per line)", |b| {
        b.iter(|| protocol::request_id(black_box(&request)))
    });
}

criterion_group!(benches, manifest_and_policy, protocol_codec);
criterion_main!(benches);
