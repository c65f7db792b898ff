//! Presentation shared by every kind: the JSON/YAML document of an object
//! (metadata and conditions) and the small table-cell formatters.

use ferrofab_proto::v1::{self, Condition, ObjectMeta};
use serde_json::{json, Map, Value};

use super::{status_word, Resource};
use crate::output::{enum_word, human_size, timestamp};

/// The full JSON/YAML document of an object.
pub(crate) fn document<R: Resource>(obj: &R) -> Value {
    let (spec, status) = obj.spec_status();
    let mut doc = Map::new();
    doc.insert("kind".into(), Value::String(R::TITLE.into()));
    doc.insert("metadata".into(), meta_view(obj.meta()));
    doc.insert("spec".into(), spec);
    doc.insert("status".into(), status);
    Value::Object(doc)
}

pub(super) fn meta_view(meta: Option<&ObjectMeta>) -> Value {
    let Some(m) = meta else {
        return Value::Null;
    };
    let mut v = Map::new();
    v.insert("name".into(), json!(m.name));
    if !m.uid.is_empty() {
        v.insert("uid".into(), json!(m.uid));
    }
    v.insert("generation".into(), json!(m.generation));
    v.insert("resource_version".into(), json!(m.resource_version));
    if !m.labels.is_empty() {
        v.insert("labels".into(), json!(m.labels));
    }
    if !m.annotations.is_empty() {
        v.insert("annotations".into(), json!(m.annotations));
    }
    if !m.finalizers.is_empty() {
        v.insert("finalizers".into(), json!(m.finalizers));
    }
    if let Some(t) = &m.creation_timestamp {
        v.insert("creation_timestamp".into(), json!(timestamp(t)));
    }
    if let Some(t) = &m.deletion_timestamp {
        v.insert("deletion_timestamp".into(), json!(timestamp(t)));
    }
    Value::Object(v)
}

pub(super) fn conditions_view(conds: &[Condition]) -> Value {
    Value::Array(
        conds
            .iter()
            .map(|c| {
                let mut v = Map::new();
                v.insert("type".into(), json!(c.r#type));
                v.insert("status".into(), json!(status_word(c)));
                if !c.reason.is_empty() {
                    v.insert("reason".into(), json!(c.reason));
                }
                if !c.message.is_empty() {
                    v.insert("message".into(), json!(c.message));
                }
                v.insert(
                    "severity".into(),
                    json!(enum_word(c.severity().as_str_name(), "SEVERITY_")),
                );
                if let Some(t) = &c.last_transition_time {
                    v.insert("last_transition_time".into(), json!(timestamp(t)));
                }
                Value::Object(v)
            })
            .collect(),
    )
}

/// `host:port` (the port only when set).
pub(crate) fn address_text(a: &v1::DataAddress) -> String {
    let host = if a.address.contains(':') {
        format!("[{}]", a.address)
    } else {
        a.address.clone()
    };
    if a.port == 0 {
        host
    } else {
        format!("{host}:{}", a.port)
    }
}

pub(super) fn list_cell(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

pub(super) fn bytes_cell(b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        human_size(b)
    }
}
