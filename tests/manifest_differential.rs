//! Differential tests of manifest loading against the reference
//! (`nodus_extension.manifest.load_manifest` of nodus-extension 0.1.2).
//!
//! Every `tests/manifest_corpus/NNN-*.json` is loaded by us and by the
//! reference; the verdict class, the normalized manifest (`as_dict()` vs our
//! `to_json()`, key order included) and an AbiError's `abi_version` must match,
//! except for the deliberate deviations listed in `DEVIATIONS`.
//!
//! The reference's answers come live from the venv when it exists
//! (`tests/support/ref_manifest.py`), else from the snapshot `EXPECTED.jsonl`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use nodus_extension::{Error, Manifest};
use serde_json::Value;

use common::TempDir;

/// Cases where we knowingly differ from the reference. In every one the
/// reference either raises something that is not a ManifestError/AbiError
/// (a crash class, not a verdict), or accepts input that strict JSON (RFC 8259)
/// and Rust strings cannot represent; we return a ManifestError instead.
/// The test fails if a case is missing from this list, listed but not
/// deviating, or deviating differently from what is written here.
///
/// (case, reference verdict, why)
const DEVIATIONS: &[(&str, &str, &str)] = &[
    // `abi_version: NaN` / `-Infinity`: Python's json accepts these literals and
    // the reference reports AbiError("nan"/"-inf"); they are not JSON, so we
    // reject the document as malformed.
    ("058-abi-nan.json", "AbiError", "NaN literal"),
    ("059-abi-neg-infinity.json", "AbiError", "-Infinity literal"),
    // Not UTF-8: the reference lets UnicodeDecodeError escape load_manifest.
    ("229-utf16-le-bom.json", "UnicodeDecodeError", "not UTF-8"),
    (
        "230-invalid-utf8-in-string.json",
        "UnicodeDecodeError",
        "not UTF-8",
    ),
    (
        "231-latin1-encoded-name.json",
        "UnicodeDecodeError",
        "not UTF-8",
    ),
    ("232-overlong-utf8.json", "UnicodeDecodeError", "not UTF-8"),
    (
        "233-utf8-encoded-surrogate.json",
        "UnicodeDecodeError",
        "not UTF-8",
    ),
    // A lone surrogate escape ("\ud800"): Python strings hold it, Rust strings
    // cannot. The reference accepts it in `name` (sanitized line) and in an
    // ignored field (whose value is dropped).
    (
        "236-lone-surrogate-escape-in-name.json",
        "ok",
        "lone surrogate",
    ),
    (
        "237-lone-surrogate-escape-in-unknown-field.json",
        "ok",
        "lone surrogate",
    ),
    // 1e400 overflows to inf in Python; inf has no JSON form (sanitized line).
    (
        "251-number-overflow-to-infinity.json",
        "ok",
        "float overflow",
    ),
    // NaN/Infinity literals in a schema (sanitized line) and in an ignored field.
    (
        "252-nan-infinity-literals.json",
        "ok",
        "NaN/Infinity literals",
    ),
    ("253-nan-in-ignored-field.json", "ok", "NaN literal"),
    // An integer of more than 4300 digits: Python's int() raises ValueError.
    (
        "254-huge-int-5000-digits.json",
        "ValueError",
        "int digit limit",
    ),
    // Nesting 5000 deep: json.loads raises RecursionError; we refuse > 900 levels.
    (
        "259-deep-nesting-5000.json",
        "RecursionError",
        "nesting limit",
    ),
];

/// One line of the reference's answers.
#[derive(Debug, Clone)]
struct Expected {
    case: String,
    verdict: String,
    value: Option<Value>,
    abi_version: Option<String>,
    sanitized: bool,
}

fn corpus() -> PathBuf {
    common::root().join("tests/manifest_corpus")
}

fn case_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(corpus())
        .expect("corpus folder")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("utf-8")
        })
        .filter(|n| {
            let b = n.as_bytes();
            b.len() > 9
                && b[..3].iter().all(u8::is_ascii_digit)
                && b[3] == b'-'
                && n.ends_with(".json")
        })
        .collect();
    names.sort();
    names
}

fn parse_expected(text: &str) -> Vec<Expected> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v = parse_deep(l).unwrap_or_else(|e| panic!("bad line {l}: {e}"));
            Expected {
                case: v["case"].as_str().expect("case").to_string(),
                verdict: v["verdict"].as_str().expect("verdict").to_string(),
                value: Some(v["value"].clone()).filter(|v| !v.is_null()),
                abi_version: v["abi_version"].as_str().map(str::to_string),
                sanitized: v.get("sanitized") == Some(&Value::Bool(true)),
            }
        })
        .collect()
}

/// serde_json without its 128-level limit (expected values nest 500 deep).
fn parse_deep(text: &str) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let v = serde::Deserialize::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

fn snapshot() -> Vec<Expected> {
    parse_expected(
        &std::fs::read_to_string(corpus().join("EXPECTED.jsonl")).expect("EXPECTED.jsonl"),
    )
}

fn live(py: &Path) -> Vec<Expected> {
    let out = Command::new(py)
        .arg(common::root().join("tests/support/ref_manifest.py"))
        .arg(corpus())
        .output()
        .expect("run ref_manifest.py");
    assert!(
        out.status.success(),
        "ref_manifest.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_expected(&String::from_utf8(out.stdout).expect("ASCII output"))
}

/// The reference's answers: live when the venv exists, else the snapshot.
fn expectations() -> Vec<Expected> {
    match common::ref_venv() {
        Some(py) => live(&py),
        None => {
            eprintln!(
                "note: reference venv missing; comparing against the EXPECTED.jsonl snapshot"
            );
            snapshot()
        }
    }
}

/// What we make of one case: class (or "ok"), value, abi_version.
#[derive(Debug, PartialEq)]
struct Ours {
    verdict: String,
    value: Option<Value>,
    abi_version: Option<String>,
}

fn ours_of(r: Result<Manifest, Error>) -> Ours {
    match r {
        Ok(m) => Ours {
            verdict: "ok".into(),
            value: Some(m.to_json()),
            abi_version: None,
        },
        Err(e) => Ours {
            verdict: e.class().into(),
            value: None,
            abi_version: match &e {
                Error::Abi { abi_version, .. } => abi_version.clone(),
                _ => None,
            },
        },
    }
}

/// Runs both `parse` (on the bytes) and `load` (on a folder holding them), checks they agree.
fn run_ours(case: &str) -> Ours {
    let dir = TempDir::new("manifest");
    if case != "<missing>" {
        let bytes = std::fs::read(corpus().join(case)).expect("case file");
        std::fs::write(dir.join("nodus-extension.json"), &bytes).expect("copy case");
        let parsed = ours_of(Manifest::parse(&bytes, case));
        let loaded = ours_of(Manifest::load(dir.path()));
        assert_eq!(parsed, loaded, "{case}: parse and load disagree");
        loaded
    } else {
        ours_of(Manifest::load(dir.path()))
    }
}

/// Key order matters too (`as_dict()` has a fixed order): compare serializations.
fn same_json(a: &Value, b: &Value) -> bool {
    a == b && serde_json::to_string(a).unwrap() == serde_json::to_string(b).unwrap()
}

fn matches(exp: &Expected, ours: &Ours) -> bool {
    exp.verdict == ours.verdict
        && match (&exp.value, &ours.value) {
            (None, None) => true,
            (Some(a), Some(b)) => same_json(a, b),
            _ => false,
        }
        && exp.abi_version == ours.abi_version
}

#[test]
fn corpus_matches_reference_except_listed_deviations() {
    let expected = expectations();
    let files = case_files();
    assert!(
        files.len() >= 250,
        "corpus looks truncated: {} cases",
        files.len()
    );
    let names: Vec<&str> = expected.iter().map(|e| e.case.as_str()).collect();
    let mut want: Vec<&str> = files.iter().map(String::as_str).collect();
    want.push("<missing>");
    assert_eq!(
        names, want,
        "the expectations do not cover exactly the corpus"
    );

    let deviations: BTreeMap<&str, (&str, &str)> = DEVIATIONS
        .iter()
        .map(|&(c, v, why)| (c, (v, why)))
        .collect();
    let mut failures = Vec::new();
    let mut deviated = Vec::new();
    for exp in &expected {
        let ours = run_ours(&exp.case);
        let ok = matches(exp, &ours);
        match deviations.get(exp.case.as_str()) {
            None if !ok => failures.push(format!(
                "{}: reference {} {:?} abi={:?}\n      ours {} {:?} abi={:?}",
                exp.case,
                exp.verdict,
                exp.value,
                exp.abi_version,
                ours.verdict,
                ours.value,
                ours.abi_version
            )),
            None => {
                // A sanitized line can never match; it must be listed.
                assert!(!exp.sanitized, "{}: sanitized yet matched?", exp.case);
            }
            Some((ref_verdict, why)) => {
                deviated.push(exp.case.clone());
                if ok {
                    failures.push(format!("{}: listed as a deviation ({why}) but now matches the reference: update DEVIATIONS", exp.case));
                }
                if exp.verdict != *ref_verdict {
                    failures.push(format!(
                        "{}: DEVIATIONS says the reference gives {ref_verdict}, it gives {}",
                        exp.case, exp.verdict
                    ));
                }
                if ours.verdict != "ManifestError" {
                    failures.push(format!(
                        "{}: deviation ({why}) must be a ManifestError, we give {}",
                        exp.case, ours.verdict
                    ));
                }
            }
        }
    }
    for case in deviations.keys() {
        assert!(
            deviated.iter().any(|c| c == case),
            "DEVIATIONS lists {case}, which is not in the corpus"
        );
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// Every reference answer that is not a ManifestError/AbiError verdict, and every
/// sanitized line, is a listed deviation (so the list is complete by rule, not by luck).
#[test]
fn deviation_list_covers_every_crash_and_sanitized_case() {
    for exp in expectations() {
        let crash = !["ok", "ManifestError", "AbiError"].contains(&exp.verdict.as_str());
        if crash || exp.sanitized {
            assert!(
                DEVIATIONS.iter().any(|d| d.0 == exp.case),
                "{} ({}{}) is not in DEVIATIONS",
                exp.case,
                exp.verdict,
                if exp.sanitized { ", sanitized" } else { "" }
            );
        }
    }
}

/// The checked-in snapshot is what the reference does today.
#[test]
fn snapshot_is_current() {
    let Some(py) = common::require_ref_venv() else {
        return;
    };
    let live = live(&py);
    let snap = snapshot();
    assert_eq!(
        live.len(),
        snap.len(),
        "EXPECTED.jsonl has a different number of cases: regenerate it (see README.md)"
    );
    for (l, s) in live.iter().zip(&snap) {
        assert!(
            l.case == s.case
                && l.verdict == s.verdict
                && l.abi_version == s.abi_version
                && l.sanitized == s.sanitized
                && match (&l.value, &s.value) {
                    (None, None) => true,
                    (Some(a), Some(b)) => same_json(a, b),
                    _ => false,
                },
            "EXPECTED.jsonl is stale at {}: regenerate it (see README.md)",
            l.case
        );
    }
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    // Far beyond any stack: must come back as a ManifestError, not a crash.
    for depth in [901usize, 5_000, 200_000] {
        let doc = format!(
            r#"{{"name": "n", "version": "1", "description": "d", "x": {}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let err = Manifest::parse(doc.as_bytes(), "deep").unwrap_err();
        assert_eq!(err.class(), "ManifestError", "depth {depth}: {err}");
    }
    // 900 levels (899 arrays inside the top-level object) is still fine.
    let doc = format!(
        r#"{{"name": "n", "version": "1", "description": "d", "x": {}{}}}"#,
        "[".repeat(899),
        "]".repeat(899)
    );
    Manifest::parse(doc.as_bytes(), "deep").expect("900 levels parse");
    // Brackets inside strings do not count.
    let doc = format!(
        r#"{{"name": "n", "version": "1", "description": "{}\"{}"}}"#,
        "[".repeat(5000),
        "{".repeat(5000)
    );
    Manifest::parse(doc.as_bytes(), "strings").expect("brackets in strings are text");
}

// ---- `ext-runner validate` against `python -m nodus_extension validate` ----

/// Valid cases whose normalized output is compared between the two CLIs.
const CLI_CASES: &[&str] = &[
    "001-minimal-valid.json",
    "002-full-valid.json",
    "024-name-padded-whitespace.json",
    "244-duplicate-key-name.json",
    "250-number-edge-cases-in-schema.json",
    "257-deep-nesting-500-in-schema.json",
];

fn case_dir(case: &str) -> TempDir {
    let dir = TempDir::new("validate");
    std::fs::copy(corpus().join(case), dir.join("nodus-extension.json")).expect("copy case");
    dir
}

#[test]
fn validate_output_equals_reference_cli() {
    let Some(py) = common::require_ref_venv() else {
        return;
    };
    for case in CLI_CASES {
        let dir = case_dir(case);
        let ours = Command::new(common::ext_runner())
            .arg("validate")
            .arg(dir.path())
            .output()
            .expect("run ext-runner");
        assert_eq!(
            ours.status.code(),
            Some(0),
            "{case}: {}",
            String::from_utf8_lossy(&ours.stderr)
        );
        let theirs = Command::new(&py)
            .args(["-m", "nodus_extension", "validate"])
            .arg(dir.path())
            .output()
            .expect("run reference CLI");
        assert_eq!(
            theirs.status.code(),
            Some(0),
            "{case}: {}",
            String::from_utf8_lossy(&theirs.stderr)
        );
        let a = parse_deep(std::str::from_utf8(&ours.stdout).unwrap())
            .expect("our validate prints JSON");
        let b = parse_deep(std::str::from_utf8(&theirs.stdout).unwrap())
            .expect("reference prints JSON");
        assert!(same_json(&a, &b), "{case}:\n ours {a}\n ref  {b}");
    }
}

#[test]
fn validate_exit_codes_by_class() {
    // (case, our exit code): 3 for ManifestError, 4 for AbiError. The reference exits 1 for both.
    let cases = [
        ("004-missing-name.json", 3),
        ("203-top-level-array.json", 3),
        ("212-invalid-json-truncated.json", 3),
        ("231-latin1-encoded-name.json", 3),
        ("259-deep-nesting-5000.json", 3),
        ("040-abi-string-2.json", 4),
        ("043-abi-null.json", 4),
        ("064-abi-bad-and-missing-name.json", 4),
        ("001-minimal-valid.json", 0),
    ];
    for (case, code) in cases {
        let dir = case_dir(case);
        let out = Command::new(common::ext_runner())
            .arg("validate")
            .arg(dir.path())
            .output()
            .expect("run ext-runner");
        assert_eq!(
            out.status.code(),
            Some(code),
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if code != 0 {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.starts_with("error: ") && err.lines().count() == 1,
                "{case}: {err:?}"
            );
            assert!(out.stdout.is_empty(), "{case}: nothing on stdout on error");
        }
    }
    // A folder without a manifest.
    let dir = TempDir::new("validate-missing");
    let out = Command::new(common::ext_runner())
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}
