//! Terraform values (cty) and their two wire encodings in `DynamicValue`:
//! msgpack (which can carry unknown values) and JSON (which cannot).
//!
//! Decoding is driven by the schema's type, as in Terraform itself: the same
//! msgpack map is an object or a map depending on the type. Unknown values
//! are msgpack extension values; Terraform 1.0 sends type 0 and newer
//! versions send refined unknowns as type 12, so every extension type is
//! read as unknown. We always write unknowns as `d4 00 00`.

use std::collections::BTreeMap;

use rmpv::Value as Mp;

/// A cty type, the subset our schemas use.
#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    String,
    Number,
    Bool,
    List(Box<Type>),
    Set(Box<Type>),
    Map(Box<Type>),
    Object(BTreeMap<String, Type>),
}

/// A value of a [`Type`]. Sets keep Terraform's order; we never rely on it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Unknown,
    Bool(bool),
    Number(f64),
    String(String),
    List(Vec<Value>),
    Set(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Object(BTreeMap<String, Value>),
}

/// A value that does not match its type, or bytes that are not msgpack/JSON.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("malformed msgpack: {0}")]
    Msgpack(String),
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("at {path}: expected {expected}, found {found}")]
    Mismatch {
        path: String,
        expected: String,
        found: String,
    },
}

fn mismatch(path: &str, expected: &Type, found: impl std::fmt::Debug) -> CodecError {
    CodecError::Mismatch {
        path: if path.is_empty() {
            ".".into()
        } else {
            path.into()
        },
        expected: expected.json().to_string(),
        found: format!("{found:?}").chars().take(60).collect(),
    }
}

impl Type {
    /// The JSON type notation used in schemas: `"string"`, `["map","string"]`,
    /// `["object",{"a":"number"}]`.
    pub fn json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Type::String => json!("string"),
            Type::Number => json!("number"),
            Type::Bool => json!("bool"),
            Type::List(t) => json!(["list", t.json()]),
            Type::Set(t) => json!(["set", t.json()]),
            Type::Map(t) => json!(["map", t.json()]),
            Type::Object(attrs) => {
                let m: serde_json::Map<String, serde_json::Value> =
                    attrs.iter().map(|(k, t)| (k.clone(), t.json())).collect();
                json!(["object", m])
            }
        }
    }

    pub fn list(t: Type) -> Type {
        Type::List(Box::new(t))
    }
    pub fn set(t: Type) -> Type {
        Type::Set(Box::new(t))
    }
    pub fn map(t: Type) -> Type {
        Type::Map(Box::new(t))
    }
}

// ------------------------------------------------------------------ msgpack

/// Decodes msgpack bytes as a value of type `ty`.
pub fn from_msgpack(bytes: &[u8], ty: &Type) -> Result<Value, CodecError> {
    let mut cur = bytes;
    let mp = rmpv::decode::read_value(&mut cur).map_err(|e| CodecError::Msgpack(e.to_string()))?;
    from_mp(&mp, ty, "")
}

fn from_mp(mp: &Mp, ty: &Type, path: &str) -> Result<Value, CodecError> {
    match mp {
        Mp::Nil => return Ok(Value::Null),
        Mp::Ext(_, _) => return Ok(Value::Unknown),
        _ => {}
    }
    Ok(match (ty, mp) {
        (Type::String, Mp::String(s)) => Value::String(
            s.as_str()
                .ok_or_else(|| mismatch(path, ty, "invalid UTF-8"))?
                .to_owned(),
        ),
        (Type::Bool, Mp::Boolean(b)) => Value::Bool(*b),
        (Type::Number, Mp::Integer(i)) => Value::Number(
            i.as_i64()
                .map(|v| v as f64)
                .or_else(|| i.as_u64().map(|v| v as f64))
                .ok_or_else(|| mismatch(path, ty, i))?,
        ),
        (Type::Number, Mp::F64(f)) => Value::Number(*f),
        (Type::Number, Mp::F32(f)) => Value::Number(f64::from(*f)),
        // Numbers too large for float64 travel as decimal strings.
        (Type::Number, Mp::String(s)) => Value::Number(
            s.as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or_else(|| mismatch(path, ty, s))?,
        ),
        (Type::List(t), Mp::Array(items)) => Value::List(elements(items, t, path)?),
        (Type::Set(t), Mp::Array(items)) => Value::Set(elements(items, t, path)?),
        (Type::Map(t), Mp::Map(pairs)) => {
            let mut out = BTreeMap::new();
            for (k, v) in pairs {
                let key = mp_key(k, ty, path)?;
                let sub = format!("{path}[{key:?}]");
                out.insert(key, from_mp(v, t, &sub)?);
            }
            Value::Map(out)
        }
        (Type::Object(attrs), Mp::Map(pairs)) => {
            let mut given = BTreeMap::new();
            for (k, v) in pairs {
                given.insert(mp_key(k, ty, path)?, v);
            }
            let mut out = BTreeMap::new();
            for (name, t) in attrs {
                let v = match given.get(name) {
                    Some(v) => from_mp(v, t, &format!("{path}.{name}"))?,
                    None => Value::Null,
                };
                out.insert(name.clone(), v);
            }
            Value::Object(out)
        }
        (_, other) => return Err(mismatch(path, ty, other)),
    })
}

fn mp_key(k: &Mp, ty: &Type, path: &str) -> Result<String, CodecError> {
    k.as_str()
        .map(str::to_owned)
        .ok_or_else(|| mismatch(path, ty, k))
}

fn elements(items: &[Mp], t: &Type, path: &str) -> Result<Vec<Value>, CodecError> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| from_mp(v, t, &format!("{path}[{i}]")))
        .collect()
}

/// Encodes a value of type `ty` as msgpack. Object attributes missing from
/// the value are written as null, so the result always has the type's shape.
pub fn to_msgpack(v: &Value, ty: &Type) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &to_mp(v, ty));
    out
}

fn to_mp(v: &Value, ty: &Type) -> Mp {
    match (v, ty) {
        (Value::Null, _) => Mp::Nil,
        (Value::Unknown, _) => Mp::Ext(0, vec![0]),
        (Value::Bool(b), _) => Mp::Boolean(*b),
        (Value::Number(n), _) => number_mp(*n),
        (Value::String(s), _) => Mp::String(s.clone().into()),
        (Value::List(items) | Value::Set(items), Type::List(t) | Type::Set(t)) => {
            Mp::Array(items.iter().map(|i| to_mp(i, t)).collect())
        }
        (Value::Map(m) | Value::Object(m), Type::Map(t)) => Mp::Map(
            m.iter()
                .map(|(k, v)| (Mp::String(k.clone().into()), to_mp(v, t)))
                .collect(),
        ),
        (Value::Map(m) | Value::Object(m), Type::Object(attrs)) => Mp::Map(
            attrs
                .iter()
                .map(|(k, t)| {
                    let v = m.get(k).unwrap_or(&Value::Null);
                    (Mp::String(k.clone().into()), to_mp(v, t))
                })
                .collect(),
        ),
        // A shape that does not fit the type is a provider bug; null keeps
        // Terraform's decoder on its feet and its consistency check reports it.
        _ => Mp::Nil,
    }
}

/// Whole numbers go as integers (what Terraform itself writes), others as
/// float64.
fn number_mp(n: f64) -> Mp {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Mp::Integer((n as i64).into())
    } else {
        Mp::F64(n)
    }
}

// ------------------------------------------------------------------ JSON

/// Decodes JSON bytes (no unknowns possible) as a value of type `ty`.
pub fn from_json(bytes: &[u8], ty: &Type) -> Result<Value, CodecError> {
    let j: serde_json::Value = serde_json::from_slice(bytes)?;
    from_json_value(&j, ty, "")
}

fn from_json_value(j: &serde_json::Value, ty: &Type, path: &str) -> Result<Value, CodecError> {
    use serde_json::Value as J;
    Ok(match (ty, j) {
        (_, J::Null) => Value::Null,
        (Type::String, J::String(s)) => Value::String(s.clone()),
        (Type::Bool, J::Bool(b)) => Value::Bool(*b),
        (Type::Number, J::Number(n)) => {
            Value::Number(n.as_f64().ok_or_else(|| mismatch(path, ty, n))?)
        }
        (Type::Number, J::String(s)) => {
            Value::Number(s.parse().map_err(|_| mismatch(path, ty, s))?)
        }
        (Type::List(t), J::Array(items)) => Value::List(json_elements(items, t, path)?),
        (Type::Set(t), J::Array(items)) => Value::Set(json_elements(items, t, path)?),
        (Type::Map(t), J::Object(m)) => Value::Map(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), from_json_value(v, t, &format!("{path}[{k:?}]"))?)))
                .collect::<Result<_, CodecError>>()?,
        ),
        (Type::Object(attrs), J::Object(m)) => Value::Object(
            attrs
                .iter()
                .map(|(k, t)| {
                    let v = match m.get(k) {
                        Some(v) => from_json_value(v, t, &format!("{path}.{k}"))?,
                        None => Value::Null,
                    };
                    Ok((k.clone(), v))
                })
                .collect::<Result<_, CodecError>>()?,
        ),
        (_, other) => return Err(mismatch(path, ty, other)),
    })
}

fn json_elements(
    items: &[serde_json::Value],
    t: &Type,
    path: &str,
) -> Result<Vec<Value>, CodecError> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| from_json_value(v, t, &format!("{path}[{i}]")))
        .collect()
}

// ------------------------------------------------------------------ access

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
    /// True when the value and everything inside it is known.
    pub fn is_wholly_known(&self) -> bool {
        match self {
            Value::Unknown => false,
            Value::List(v) | Value::Set(v) => v.iter().all(Value::is_wholly_known),
            Value::Map(m) | Value::Object(m) => m.values().all(Value::is_wholly_known),
            _ => true,
        }
    }
    /// True when every attribute except `skip` is wholly known (the
    /// computed ones are unknown during a create plan).
    pub fn is_wholly_known_except(&self, skip: &[&str]) -> bool {
        match self {
            Value::Object(m) => m
                .iter()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .all(|(_, v)| v.is_wholly_known()),
            other => other.is_wholly_known(),
        }
    }
    /// An object attribute (null for anything else or a missing attribute).
    pub fn get(&self, name: &str) -> &Value {
        match self {
            Value::Object(m) => m.get(name).unwrap_or(&Value::Null),
            _ => &Value::Null,
        }
    }
    /// Sets an object attribute; no-op on other values.
    pub fn set(&mut self, name: &str, v: Value) {
        if let Value::Object(m) = self {
            m.insert(name.to_owned(), v);
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }
    /// A map of strings (labels); null and unknown entries are skipped.
    pub fn string_map(&self) -> BTreeMap<String, String> {
        match self {
            Value::Map(m) | Value::Object(m) => m
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect(),
            _ => BTreeMap::new(),
        }
    }
    /// Strings of a list or set.
    pub fn strings(&self) -> Vec<String> {
        match self {
            Value::List(v) | Value::Set(v) => v
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }
    pub fn str(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }
    /// A string map value; empty maps become null so that an unset optional
    /// `labels` stays equal to what the API returns.
    pub fn labels(m: &std::collections::HashMap<String, String>) -> Value {
        if m.is_empty() {
            Value::Null
        } else {
            Value::Map(m.iter().map(|(k, v)| (k.clone(), Value::str(v))).collect())
        }
    }
    pub fn object() -> Value {
        Value::Object(BTreeMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj_type() -> Type {
        Type::Object(BTreeMap::from([
            ("name".into(), Type::String),
            ("size".into(), Type::Number),
            ("on".into(), Type::Bool),
            ("tags".into(), Type::set(Type::String)),
            ("labels".into(), Type::map(Type::String)),
            (
                "inner".into(),
                Type::Object(BTreeMap::from([("x".into(), Type::list(Type::Number))])),
            ),
        ]))
    }

    fn sample() -> Value {
        let mut v = Value::object();
        v.set("name", Value::str("vol-1"));
        v.set("size", Value::Number(4096.0));
        v.set("on", Value::Bool(true));
        v.set("tags", Value::Set(vec![Value::str("a"), Value::str("b")]));
        v.set("labels", Value::Null);
        let mut inner = Value::object();
        inner.set("x", Value::List(vec![Value::Number(1.5), Value::Unknown]));
        v.set("inner", inner);
        v
    }

    #[test]
    fn msgpack_round_trips_nested_objects_sets_nulls_and_unknowns() {
        let ty = obj_type();
        let bytes = to_msgpack(&sample(), &ty);
        assert_eq!(from_msgpack(&bytes, &ty).unwrap(), sample());
    }

    #[test]
    fn unknown_is_written_as_fixext1_type_0() {
        assert_eq!(to_msgpack(&Value::Unknown, &Type::String), vec![0xd4, 0, 0]);
    }

    #[test]
    fn any_extension_type_reads_as_unknown() {
        // Terraform >= 1.6 sends refined unknowns as extension type 12
        // with a payload.
        let refined = [0xc7, 0x03, 0x0c, 0x81, 0x01, 0xc3];
        assert_eq!(
            from_msgpack(&refined, &Type::String).unwrap(),
            Value::Unknown
        );
        assert_eq!(
            from_msgpack(&[0xd4, 0, 0], &Type::Number).unwrap(),
            Value::Unknown
        );
    }

    #[test]
    fn missing_object_attributes_decode_as_null() {
        let bytes = [0x81, 0xa4, b'n', b'a', b'm', b'e', 0xa1, b'x'];
        let v = from_msgpack(&bytes, &obj_type()).unwrap();
        assert_eq!(v.get("name").as_str(), Some("x"));
        assert!(v.get("size").is_null());
        assert!(v.get("inner").is_null());
    }

    #[test]
    fn numbers_accept_ints_floats_and_decimal_strings() {
        let int = to_msgpack(&Value::Number(7.0), &Type::Number);
        assert_eq!(int, vec![0x07]);
        let float = to_msgpack(&Value::Number(0.5), &Type::Number);
        assert_eq!(
            from_msgpack(&float, &Type::Number).unwrap(),
            Value::Number(0.5)
        );
        let s = [0xa2, b'4', b'2'];
        assert_eq!(
            from_msgpack(&s, &Type::Number).unwrap(),
            Value::Number(42.0)
        );
    }

    #[test]
    fn json_decodes_with_the_same_shape() {
        let j = br#"{"name":"vol-1","size":4096,"on":true,"tags":["a","b"],"labels":null,
                     "inner":{"x":[1.5,null]}}"#;
        let v = from_json(j, &obj_type()).unwrap();
        let mut want = sample();
        let mut inner = Value::object();
        inner.set("x", Value::List(vec![Value::Number(1.5), Value::Null]));
        want.set("inner", inner);
        assert_eq!(v, want);
    }

    #[test]
    fn type_mismatch_names_the_path() {
        let j = br#"{"inner":{"x":["no"]}}"#;
        let e = from_json(j, &obj_type()).unwrap_err().to_string();
        assert!(e.contains(".inner.x[0]"), "{e}");
        let bad = to_msgpack(&Value::str("s"), &Type::String);
        let e = from_msgpack(&bad, &Type::Bool).unwrap_err().to_string();
        assert!(e.contains("expected \"bool\""), "{e}");
    }

    #[test]
    fn truncated_msgpack_is_an_error_not_a_panic() {
        assert!(from_msgpack(&[0x82, 0xa1], &obj_type()).is_err());
        assert!(from_msgpack(&[], &Type::String).is_err());
    }

    #[test]
    fn type_json_notation() {
        let t = Type::Object(BTreeMap::from([("a".into(), Type::map(Type::String))]));
        assert_eq!(t.json().to_string(), r#"["object",{"a":["map","string"]}]"#);
    }

    #[test]
    fn wholly_known_looks_inside_collections() {
        assert!(!sample().is_wholly_known());
        assert!(Value::List(vec![Value::str("a")]).is_wholly_known());
    }
}
