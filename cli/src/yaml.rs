//! A small YAML emitter for `serde_json::Value`.
//!
//! Output only: ferrofab never reads YAML, and the maintained serde YAML
//! crates come and go, so emitting the block style ourselves (strings
//! quoted JSON-style whenever plain style could be misread) is less risk
//! than a dependency.

use serde_json::Value;

/// Renders `v` as a YAML document.
pub fn to_string(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0),
        scalar => {
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
    out
}

fn write_map(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    for (k, v) in m {
        out.push_str(&" ".repeat(indent));
        out.push_str(&string_text(k));
        out.push(':');
        write_child(out, v, indent);
    }
}

fn write_seq(out: &mut String, a: &[Value], indent: usize) {
    for v in a {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match v {
            Value::Object(m) if !m.is_empty() => {
                // First key on the dash line, the rest aligned under it.
                let mut inner = String::new();
                write_map(&mut inner, m, indent + 2);
                out.push(' ');
                out.push_str(inner.get(indent + 2..).unwrap_or(""));
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(out, inner, indent + 2);
            }
            scalar => {
                out.push(' ');
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

/// Writes the value after `key:`, nested maps and sequences on new lines.
fn write_child(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(out, a, indent + 2);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string_text(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// Plain style when unambiguous, else a JSON string (valid YAML
/// double-quoted style).
fn string_text(s: &str) -> String {
    if needs_quotes(s) {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
    } else {
        s.to_owned()
    }
}

fn needs_quotes(s: &str) -> bool {
    const RESERVED: [&str; 12] = [
        "null", "~", "true", "false", "yes", "no", "on", "off", "y", "n", ".nan", ".inf",
    ];
    let Some(first) = s.chars().next() else {
        return true;
    };
    RESERVED.contains(&s.to_ascii_lowercase().as_str())
        || looks_numeric(s)
        || "-?:,[]{}#&*!|>'\"%@`= ".contains(first)
        || s.ends_with(' ')
        || s.ends_with(':')
        || s.contains(": ")
        || s.contains(" #")
        || s.chars().any(|c| c.is_control())
}

fn looks_numeric(s: &str) -> bool {
    s.parse::<f64>().is_ok() || s.starts_with("0x") || s.starts_with("0o")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_documents() {
        let v = json!({
            "a": 1,
            "b": {"c": "x", "d": []},
            "e": [{"f": 1, "g": 2}, "h"],
        });
        assert_eq!(
            to_string(&v),
            "a: 1\nb:\n  c: x\n  d: []\ne:\n  - f: 1\n    g: 2\n  - h\n"
        );
    }

    #[test]
    fn quotes_ambiguous_strings() {
        for s in [
            "", "true", "No", "123", "1.5", "-x", "a: b", "#c", "x\ny", " lead",
        ] {
            assert!(string_text(s).starts_with('"'), "{s:?} unquoted");
        }
        for s in [
            "4TiB",
            "scratch-1",
            "node:n1",
            "/dev/nvme0n1",
            "2023-11-14T22:13:20Z",
        ] {
            assert_eq!(string_text(s), s);
        }
    }

    #[test]
    fn scalars_and_empty() {
        assert_eq!(to_string(&json!(null)), "null\n");
        assert_eq!(to_string(&json!([])), "[]\n");
        assert_eq!(to_string(&json!({})), "{}\n");
    }
}
