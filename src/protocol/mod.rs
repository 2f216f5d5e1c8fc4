//! The worker protocol: the reference's D7 NDJSON messages over stdin/stdout.
//!
//! Host → worker: `{"id": ID, "op": "invoke", "name": TOOL, "args": {...}}` and
//! `{"op": "shutdown"}`. Worker → host: `{"id": ID, "ok": true, "result": ...}`
//! or `{"id": ID, "ok": false, "error": MSG}`. One JSON object per line.
//!
//! Lines we write are byte-for-byte what the reference's `json.dumps` writes
//! (`", "`/`": "` separators, non-ASCII escaped), so a worker cannot tell us
//! from the reference host. Lines we read are bounded by a size limit.

use std::io;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Default limit on one line from a worker: 16 MiB.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024 * 1024;

/// A request id shaped as the reference makes them (`str(uuid.uuid4())`).
pub fn new_request_id() -> String {
    crate::support::unique_id()
}

/// The invoke request line (without the newline).
pub fn invoke_line(id: &str, tool: &str, args: &Value) -> Vec<u8> {
    #[derive(Serialize)]
    struct Invoke<'a> {
        id: &'a str,
        op: &'static str,
        name: &'a str,
        args: &'a Value,
    }
    dumps(&Invoke {
        id,
        op: "invoke",
        name: tool,
        args,
    })
}

/// The shutdown line (without the newline).
pub fn shutdown_line() -> Vec<u8> {
    b"{\"op\": \"shutdown\"}".to_vec()
}

/// A worker's answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Ok(Value),
    Err(String),
}

/// A host call from a worker, as decoded from its line.
#[derive(Debug, Clone, PartialEq)]
pub struct HostCall {
    pub id: String,
    pub call: String,
    pub params: Value,
}

/// What a line from the worker says.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerMessage {
    /// A response to the request with this id.
    Response { id: String, response: Response },
    /// A request to the host: `{"op": "host_call", "id": ID, "call": NAME, "params": {...}}`.
    HostCall(HostCall),
    /// A notice that the worker was refused something: `{"op": "denial",
    /// "capability": C, "detail": D}`, with `"reason": R` when the reason is
    /// not "C not declared" (a path outside the grants, a port outside the
    /// operator's `tcp_ports`).
    Denial {
        capability: String,
        detail: String,
        reason: Option<String>,
    },
    /// Anything else: blank, not JSON, not an object, no id. The reference ignores these.
    Ignored,
}

/// Decodes one line from a worker. Responses are read as the reference's host
/// reads them: `ok` truthy → `result` (missing means `null`), else `error`
/// (missing means "unknown error").
pub fn decode_worker_line(line: &[u8]) -> WorkerMessage {
    let Some(Value::Object(mut msg)) = loads(py_strip(line)) else {
        return WorkerMessage::Ignored;
    };
    let text = |k: &str| msg.get(k).and_then(Value::as_str).map(str::to_string);
    match msg.get("op").and_then(Value::as_str) {
        Some("host_call") => {
            return match (text("id"), text("call")) {
                (Some(id), Some(call)) => WorkerMessage::HostCall(HostCall {
                    id,
                    call,
                    params: msg
                        .swap_remove("params")
                        .unwrap_or_else(|| Value::Object(Map::new())),
                }),
                _ => WorkerMessage::Ignored,
            }
        }
        Some("denial") => {
            return WorkerMessage::Denial {
                capability: text("capability").unwrap_or_default(),
                detail: text("detail").unwrap_or_default(),
                reason: text("reason"),
            }
        }
        _ => {}
    }
    // Moved out of the parsed line, not copied: a result can be megabytes.
    let id = match msg.swap_remove("id") {
        Some(Value::String(s)) => s,
        _ => return WorkerMessage::Ignored,
    };
    let response = if msg.get("ok").is_some_and(truthy) {
        Response::Ok(msg.swap_remove("result").unwrap_or(Value::Null))
    } else {
        Response::Err(match msg.swap_remove("error") {
            None => "unknown error".to_string(),
            Some(Value::String(s)) => s,
            Some(other) => crate::support::pyrepr::display(&other),
        })
    };
    WorkerMessage::Response { id, response }
}

/// Where a line from a worker goes: decided here once, for the library host
/// and for the `run` proxy alike.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed {
    /// A request to the host, which the runner serves (never the host program).
    HostCall(HostCall),
    /// A denial notice, which the runner records.
    Denial {
        capability: String,
        detail: String,
        reason: Option<String>,
    },
    /// For whoever sent request `id`: an invoke of the library (decode it
    /// with `decode_response`), the host program under `run` (relayed as it is).
    Response {
        id: String,
        /// Whether it has a top-level `error_class` key (see `relayed_response`).
        error_class: bool,
    },
    /// Anything else: blank, not JSON, not an object, no string id, a host
    /// call without its id or name. The library ignores it, as the reference
    /// does; `run` relays it, since the host program may read it.
    Other,
}

/// Routes one line from a worker. Only its top-level `id` and `op` are read,
/// unless it is a host call or denial: a response (which can be megabytes) is
/// decoded only by whoever wants it.
pub fn route(line: &[u8]) -> Routed {
    let head = line_head(line);
    match head.op.as_deref() {
        Some("host_call" | "denial") => match decode_worker_line(line) {
            WorkerMessage::HostCall(call) => Routed::HostCall(call),
            WorkerMessage::Denial {
                capability,
                detail,
                reason,
            } => Routed::Denial {
                capability,
                detail,
                reason,
            },
            WorkerMessage::Response { .. } | WorkerMessage::Ignored => Routed::Other,
        },
        _ => match head.id {
            Some(id) => Routed::Response {
                id,
                error_class: head.error_class,
            },
            None => Routed::Other,
        },
    }
}

/// The response a line routed as `Routed::Response` carries.
pub fn decode_response(line: &[u8]) -> Option<Response> {
    match decode_worker_line(line) {
        WorkerMessage::Response { response, .. } => Some(response),
        _ => None,
    }
}

/// `json.loads` of a worker's line: strict JSON, plus the `NaN`, `Infinity`
/// and `-Infinity` that Python's `json.dumps` writes for non-finite floats
/// (`allow_nan=True` is its default). Those become numbers whose text is that
/// literal, so `dumps` (and serde_json) write them back as Python does
/// (`Number::as_str().parse::<f64>()` gives the float; serde_json's
/// `as_f64()` gives only finite ones). `None` when the line is not JSON.
pub fn loads(text: &[u8]) -> Option<Value> {
    match serde_json::from_slice(text) {
        Ok(v) => Some(v),
        Err(_) => {
            let (rewritten, found) = non_finite_as_sentinels(text)?;
            let mut v = serde_json::from_slice(&rewritten).ok()?;
            if found {
                restore_non_finite(&mut v);
            }
            Some(v)
        }
    }
}

/// The sentinels standing for the literals while serde_json parses the line:
/// numbers no float can be written as, checked to be absent from the line.
const NON_FINITE: [(&str, &str); 3] = [
    ("NaN", "1e-77777777771"),
    ("-Infinity", "-1e-77777777772"),
    ("Infinity", "1e-77777777772"),
];

/// The line with every `NaN`/`Infinity`/`-Infinity` outside strings replaced
/// by its sentinel; `None` if there is none (the line is just not JSON) or a
/// sentinel's digits already occur in it.
fn non_finite_as_sentinels(text: &[u8]) -> Option<(Vec<u8>, bool)> {
    // std's substring search (optimized even in a debug build): junk lines
    // by the million must stay cheap to refuse.
    let str_text = std::str::from_utf8(text).ok()?;
    if !str_text.contains("NaN") && !str_text.contains("Infinity")
        || str_text.contains("7777777777")
    {
        return None;
    }
    let (mut out, mut found) = (Vec::with_capacity(text.len() + 16), false);
    let (mut i, mut in_string, mut escaped) = (0, false, false);
    'scan: while i < text.len() {
        let b = text[i];
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else {
            for (literal, sentinel) in NON_FINITE {
                if text[i..].starts_with(literal.as_bytes()) {
                    out.extend_from_slice(sentinel.as_bytes());
                    i += literal.len();
                    found = true;
                    continue 'scan;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    found.then_some((out, true))
}

/// Turns the sentinels back into numbers written `NaN`, `Infinity`, `-Infinity`.
fn restore_non_finite(root: &mut Value) {
    let mut stack = vec![root];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) => {
                if let Some((literal, _)) = NON_FINITE.iter().find(|(_, s)| n.as_str() == *s) {
                    // serde_json has no other way to hold a number outside JSON;
                    // with arbitrary_precision a Number is its text.
                    *n = serde_json::Number::from_string_unchecked(literal.to_string());
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(map) => stack.extend(map.values_mut()),
            _ => {}
        }
    }
}

/// A response line as `ext-runner run` relays it: without the `error_class`,
/// `capability` and `extension` keys the worker may have written, and, when
/// `refused` names a capability the runner refused a host call for and the
/// response is a failure, with them set to say it was a CapabilityError.
/// `None` when the line needs no change.
pub fn relayed_response(
    line: &[u8],
    has_error_class: bool,
    refused: Option<(&str, &str)>,
) -> Option<Vec<u8>> {
    if !has_error_class && refused.is_none() {
        return None;
    }
    let Some(Value::Object(mut msg)) = loads(py_strip(line)) else {
        return None;
    };
    let failed = !msg.get("ok").is_some_and(truthy);
    if !has_error_class && !failed {
        return None;
    }
    for key in ["error_class", "capability", "extension"] {
        msg.shift_remove(key);
    }
    if let (true, Some((capability, extension))) = (failed, refused) {
        msg.insert("error_class".into(), "CapabilityError".into());
        msg.insert("capability".into(), capability.into());
        msg.insert("extension".into(), extension.into());
    }
    Some(dumps(&msg))
}

/// The host's answer to a host call (without the newline). An error names the
/// capability it lacked, when that was the reason.
pub fn host_call_response(id: &str, outcome: &crate::Result<Value>) -> Vec<u8> {
    let msg = match outcome {
        Ok(v) => serde_json::json!({"id": id, "ok": true, "result": v}),
        Err(e) => {
            let mut m = serde_json::json!({"id": id, "ok": false, "error": e.to_string(), "error_class": e.class()});
            if let crate::Error::Capability { capability, .. } = e {
                m["capability"] = capability.clone().into();
            }
            m
        }
    };
    dumps(&msg)
}

/// Python truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        // Beyond f64 (1e400, 10**400) is not zero: Python's inf and big ints are true.
        Value::Number(n) => n.as_f64().is_none_or(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// What the reference host's `line.strip()` (on text) leaves of a line:
/// Unicode whitespace as Python counts it is stripped at both ends.
pub fn py_strip(line: &[u8]) -> &[u8] {
    match std::str::from_utf8(line) {
        Ok(text) => text.trim_matches(crate::support::py_isspace).as_bytes(),
        Err(_) => line.trim_ascii(),
    }
}

/// The top-level `id` and `op` of a line, when they are strings: what the
/// `run` proxy needs of most lines.
#[derive(Debug, Default, PartialEq)]
pub struct LineHead {
    pub id: Option<String>,
    pub op: Option<String>,
    /// Whether the line has a top-level `error_class` key (which only the
    /// runner may put on a response it relays).
    pub error_class: bool,
}

/// Reads only the top-level `id` and `op` of a line, in one pass that skips
/// every other value without building it (the proxy does this per line, and
/// a result can be megabytes). As `json.loads` reads it: the line must be one
/// JSON object, and of a repeated key the last counts.
pub fn line_head(line: &[u8]) -> LineHead {
    struct Head(LineHead);
    impl<'de> serde::Deserialize<'de> for Head {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Head, D::Error> {
            d.deserialize_map(HeadVisitor)
        }
    }
    struct HeadVisitor;
    impl<'de> serde::de::Visitor<'de> for HeadVisitor {
        type Value = Head;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Head, A::Error> {
            let mut head = LineHead::default();
            let text = |v: Value| match v {
                Value::String(s) => Some(s),
                _ => None,
            };
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                match &*key {
                    "id" => head.id = text(map.next_value()?),
                    "op" => head.op = text(map.next_value()?),
                    "error_class" => {
                        head.error_class = true;
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                    _ => {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
            }
            Ok(Head(head))
        }
    }
    let line = py_strip(line);
    match serde_json::from_slice::<Head>(line) {
        Ok(h) => h.0,
        // A response with NaN or Infinity in it (the rewrite keeps strings as they are).
        Err(_) => non_finite_as_sentinels(line)
            .and_then(|(rewritten, _)| serde_json::from_slice::<Head>(&rewritten).ok())
            .map(|h| h.0)
            .unwrap_or_default(),
    }
}

/// The request id of a host→worker line, if it has one.
pub fn request_id(line: &[u8]) -> Option<String> {
    line_head(line).id
}

/// Outcome of reading one bounded line.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// A full line, newline stripped.
    Complete(Vec<u8>),
    /// The stream ended; any unterminated tail is returned.
    Eof(Vec<u8>),
    /// The line grew past the limit; reading stopped there.
    TooLong,
}

/// Reads one newline-terminated line, holding at most `max` bytes of it.
pub async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, max: usize) -> io::Result<Line> {
    read_line_into(reader, &mut Vec::new(), max).await
}

/// `read_line` that keeps the part of a line read so far in `partial`, so it
/// is cancel-safe: a `select!` that drops the future loses no byte, and the
/// next call goes on where this one stopped.
pub async fn read_line_into<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    partial: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::Eof(std::mem::take(partial)));
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        // The newline itself does not count against the limit.
        if partial.len() + take - usize::from(done) > max {
            partial.clear();
            return Ok(Line::TooLong);
        }
        // No await between taking bytes from the reader and keeping them.
        partial.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if done {
            partial.pop();
            return Ok(Line::Complete(std::mem::take(partial)));
        }
    }
}

/// `json.dumps(value)` with Python's defaults, as bytes.
pub fn dumps<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    // Serializing JSON values into a Vec cannot fail.
    value
        .serialize(&mut ser)
        .expect("JSON serialization into memory");
    out
}

/// `json.dumps(value, indent=2)`, as text: what the reference's CLI prints.
/// Only ASCII comes out (controls, DEL and everything beyond ASCII as
/// `\uXXXX`), so nothing in a manifest can reach a terminal raw.
pub fn dumps_pretty<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        PyPretty(serde_json::ser::PrettyFormatter::with_indent(b"  ")),
    );
    value
        .serialize(&mut ser)
        .expect("JSON serialization into memory");
    String::from_utf8(out).expect("ensure_ascii writes ASCII")
}

/// `PyFormatter` with `indent=2`: serde_json's pretty layout is Python's.
struct PyPretty<'a>(serde_json::ser::PrettyFormatter<'a>);

impl serde_json::ser::Formatter for PyPretty<'_> {
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
    fn write_number_str<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        value: &str,
    ) -> io::Result<()> {
        PyFormatter.write_number_str(w, value)
    }
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        PyFormatter.write_string_fragment(w, fragment)
    }
}

/// serde_json formatter reproducing `json.dumps` defaults: `", "` and `": "`
/// separators, `ensure_ascii=True`.
struct PyFormatter;

/// `", "` before every item but the first.
fn separator<W: ?Sized + io::Write>(w: &mut W, first: bool) -> io::Result<()> {
    if first {
        Ok(())
    } else {
        w.write_all(b", ")
    }
}

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        separator(w, first)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        separator(w, first)
    }
    fn write_number_str<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        value: &str,
    ) -> io::Result<()> {
        // As Python writes the int or float it parsed: `1e2` is `100.0`, `-0` is `0`.
        let text = match crate::support::pyrepr::number_text(value).as_str() {
            "inf" => "Infinity".to_string(),
            "-inf" => "-Infinity".to_string(),
            "nan" => "NaN".to_string(),
            other => other.to_string(),
        };
        w.write_all(text.as_bytes())
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // ensure_ascii escapes everything outside ' '..='~', DEL included;
        // the plain runs between escapes are written whole.
        let mut rest = fragment;
        while let Some(at) = rest.find(|c: char| !c.is_ascii() || c == '\x7f') {
            w.write_all(&rest.as_bytes()[..at])?;
            let c = rest[at..].chars().next().expect("found at a char boundary");
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                write!(w, "\\u{u:04x}")?;
            }
            rest = &rest[at + c.len_utf8()..];
        }
        w.write_all(rest.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dumps_like_python() {
        let line = invoke_line("i", "a.b", &json!({"name": "Zoë", "n": [1, 2.5]}));
        assert_eq!(
            String::from_utf8(line).unwrap(),
            r#"{"id": "i", "op": "invoke", "name": "a.b", "args": {"name": "Zo\u00eb", "n": [1, 2.5]}}"#
        );
    }

    #[test]
    fn escapes_like_python_in_runs() {
        // DEL, an astral character (a surrogate pair), Latin-1, and the
        // escapes serde_json writes itself, between plain runs.
        let line = dumps(&json!({"s": "a\u{7f}b\u{1F600}c\u{e9}dd\n\""}));
        assert_eq!(
            String::from_utf8(line).unwrap(),
            r#"{"s": "a\u007fb\ud83d\ude00c\u00e9dd\n\""}"#
        );
    }

    #[test]
    fn dumps_pretty_like_python_indent_2() {
        // json.dumps({"a": [1, {}], "b": "Zo\u00eb\x1b\x7f\u009b", "c": []}, indent=2)
        let v = serde_json::json!({"a": [1, {}], "b": "Zo\u{eb}\u{1b}\u{7f}\u{9b}", "c": []});
        assert_eq!(
            dumps_pretty(&v),
            "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": \"Zo\\u00eb\\u001b\\u007f\\u009b\",\n  \"c\": []\n}"
        );
    }

    #[test]
    fn line_head_reads_as_json_loads() {
        let head = |l: &str| line_head(l.as_bytes());
        let h = head(r#"{"op": "invoke", "id": "a", "args": {"id": "inner"}, "id": "b"}"#);
        assert_eq!(
            (h.id.as_deref(), h.op.as_deref()),
            (Some("b"), Some("invoke")),
            "last key wins, nested ids ignored"
        );
        assert_eq!(
            head(r#"{"id": 7, "op": null}"#),
            LineHead::default(),
            "non-string id/op"
        );
        assert_eq!(head(r#"["id", "x"]"#), LineHead::default(), "not an object");
        assert_eq!(
            head(r#"{"id": "x"} trailing"#),
            LineHead::default(),
            "one value per line"
        );
        assert_eq!(
            head("  {\"id\": \"x\"}\u{2003}").id.as_deref(),
            Some("x"),
            "Python's strip()"
        );
        assert_eq!(
            head(r#"{"op": "shutdown"}"#).op.as_deref(),
            Some("shutdown")
        );
    }

    #[test]
    fn decodes_like_reference() {
        assert_eq!(
            decode_worker_line(br#"{"id": "x", "ok": true}"#),
            WorkerMessage::Response {
                id: "x".into(),
                response: Response::Ok(Value::Null)
            }
        );
        assert_eq!(
            decode_worker_line(br#"{"id": "x", "ok": 0}"#),
            WorkerMessage::Response {
                id: "x".into(),
                response: Response::Err("unknown error".into())
            }
        );
        assert_eq!(decode_worker_line(b"garbage"), WorkerMessage::Ignored);
        assert_eq!(decode_worker_line(b"[1]"), WorkerMessage::Ignored);
    }

    #[test]
    fn routes_as_both_hosts_did() {
        let r = |l: &str| route(l.as_bytes());
        assert_eq!(
            r(r#"{"op": "host_call", "id": "h", "call": "memory.get", "params": {"key": "k"}}"#),
            Routed::HostCall(HostCall {
                id: "h".into(),
                call: "memory.get".into(),
                params: serde_json::json!({"key": "k"})
            })
        );
        assert_eq!(
            r(r#"{"op": "denial", "capability": "network.outbound"}"#),
            Routed::Denial {
                capability: "network.outbound".into(),
                detail: String::new(),
                reason: None
            }
        );
        assert_eq!(
            r(r#"{"id": "x", "ok": true, "result": {"id": "inner"}}"#),
            Routed::Response {
                id: "x".into(),
                error_class: false
            }
        );
        assert_eq!(
            r(r#"{"id": "x", "op": "other"}"#),
            Routed::Response {
                id: "x".into(),
                error_class: false
            },
            "an unknown op with an id is a response, as the reference reads it"
        );
        for other in [
            r#"{"op": "host_call", "id": "h"}"#,
            r#"{"id": 5, "ok": true}"#,
            "not json",
            "",
            "[1]",
        ] {
            assert_eq!(r(other), Routed::Other, "{other}");
        }
        assert_eq!(
            decode_response(br#"{"id": "x", "ok": false}"#),
            Some(Response::Err("unknown error".into()))
        );
    }

    #[tokio::test]
    async fn bounded_lines() {
        let mut r = tokio::io::BufReader::with_capacity(4, &b"abc\nabcdefgh\nxy"[..]);
        assert_eq!(
            read_line(&mut r, 5).await.unwrap(),
            Line::Complete(b"abc".to_vec())
        );
        assert_eq!(read_line(&mut r, 5).await.unwrap(), Line::TooLong);
        let mut r = tokio::io::BufReader::new(&b"xy"[..]);
        assert_eq!(
            read_line(&mut r, 5).await.unwrap(),
            Line::Eof(b"xy".to_vec())
        );
    }
}
