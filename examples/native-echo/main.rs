//! A native (non-Python) worker speaking the extension protocol: each tool
//! returns its arguments. Used by the load and leak tests and the benchmark as
//! the runner's floor. Its extension folder holds this binary and a manifest
//! with `"entry": ["native-echo"]`.
//!
//! Tools: anything echoes `args`; a tool named `*.crash` exits with status 3 mid-invoke.

use std::io::{BufRead, Write};

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        match msg["op"].as_str() {
            Some("shutdown") => break,
            Some("invoke") if msg["name"].as_str().is_some_and(|n| n.ends_with(".crash")) => {
                std::process::exit(3)
            }
            Some("invoke") => {
                let reply = serde_json::json!({"id": msg["id"], "ok": true, "result": msg["args"]});
                let _ = writeln!(out, "{reply}");
                let _ = out.flush();
            }
            _ => {}
        }
    }
}
