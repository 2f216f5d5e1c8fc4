//! Python's `repr()`/`str()` of JSON values, so that our messages and the
//! `abi_version` an `AbiError` carries read exactly as the reference's do.

use serde_json::Value;

/// `repr(s)` of a Python `str`.
pub fn str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c)
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `repr(list_of_str)`.
pub fn str_list(items: &[&str]) -> String {
    format!(
        "[{}]",
        items.iter().map(|s| str(s)).collect::<Vec<_>>().join(", ")
    )
}

/// `repr(value)` of the Python object `json.loads` makes of `value`.
pub fn repr(value: &Value) -> String {
    match value {
        Value::String(s) => str(s),
        other => display(other),
    }
}

/// `str(value)` of the Python object `json.loads` makes of `value`.
pub fn display(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => number(n),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", str(k), repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn number(n: &serde_json::Number) -> String {
    number_text(&n.to_string())
}

/// How Python prints the number `json.loads` makes of the JSON literal `text`:
/// integers keep their digits (`-0` is `0`), anything with a fraction or an
/// exponent is a float (`1e2` is `100.0`, `0.10` is `0.1`).
pub(crate) fn number_text(text: &str) -> String {
    if !text.contains(['.', 'e', 'E']) {
        return if text.trim_start_matches('-') == "0" {
            "0".into()
        } else {
            text.to_string()
        };
    }
    float(text.parse().unwrap_or(f64::NAN))
}

/// Python's `repr(float)`: the shortest digits that round-trip, positional
/// when the decimal exponent is in -4..16, else `d.ddde±XX`.
pub(crate) fn float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    // Rust's `{:e}` and `{}` both print the shortest round-trip digits.
    let sci = format!("{f:e}"); // e.g. "1e16", "-1.5e-7"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let s = format!("{f}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        format!(
            "{mantissa}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python() {
        assert_eq!(str("a'b"), "\"a'b\"");
        assert_eq!(str("ab"), "'ab'");
        assert_eq!(display(&json!(null)), "None");
        assert_eq!(display(&json!(true)), "True");
        assert_eq!(display(&json!(1)), "1");
        assert_eq!(display(&json!(1.0)), "1.0");
        assert_eq!(display(&json!(1e16)), "1e+16");
        assert_eq!(display(&json!(0.00001)), "1e-05");
        assert_eq!(display(&json!(["1", 2])), "['1', 2]");
        assert_eq!(display(&json!({"a": "b"})), "{'a': 'b'}");
        let num = |t: &str| display(&serde_json::from_str::<serde_json::Value>(t).unwrap());
        assert_eq!(num("-0"), "0");
        assert_eq!(num("-0.0"), "-0.0");
        assert_eq!(num("1e2"), "100.0");
        assert_eq!(num("1E-2"), "0.01");
        assert_eq!(num("0.0001"), "0.0001");
        assert_eq!(num("0.00001"), "1e-05");
        assert_eq!(num("9999999999999998.0"), "9999999999999998.0");
        assert_eq!(num("1e16"), "1e+16");
        assert_eq!(num("1.5e300"), "1.5e+300");
        assert_eq!(num("5e-324"), "5e-324");
        assert_eq!(num("1e400"), "inf");
        assert_eq!(
            num("123456789012345678901234567890"),
            "123456789012345678901234567890"
        );
        assert_eq!(float(f64::NAN), "nan");
    }
}
