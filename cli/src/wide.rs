//! `-o wide` and `-o name`.
//!
//! The wide columns are read from the object's JSON document (the same one
//! `-o json` prints) by path, so each kind's extra columns are one table
//! here rather than a second `row` in every kind's implementation.

use serde_json::Value;

use crate::output::{now_seconds, relative};
use crate::resource::{document, name_of, Resource};

/// Extra columns per kind: header and JSON pointer into the document.
fn extras(kind: &str) -> &'static [(&'static str, &'static str)] {
    match kind {
        "node" => &[
            ("AGENT", "/status/agent_version"),
            ("HOST NQN", "/spec/host_nqn"),
        ],
        "pool" => &[
            ("OVERCOMMIT", "/spec/overcommit_ratio"),
            ("NS LIMIT", "/spec/namespace_limit"),
            ("RECLAIM", "/spec/reclaim_policy"),
        ],
        "volume" => &[
            ("BLOCK", "/spec/block_size"),
            ("SUBSYSTEM NQN", "/status/subsystem_nqn"),
            ("BACKING PATH", "/status/backing_path"),
        ],
        "attachment" => &[("REASON", "")],
        "tenant" => &[("CAPACITY", "/spec/capacity_quota")],
        _ => &[],
    }
}

/// The normal header, the kind's extras, then AGE and LABELS.
pub(crate) fn columns<R: Resource>() -> Vec<&'static str> {
    let mut c: Vec<&'static str> = R::columns().to_vec();
    c.extend(extras(R::NOUN).iter().map(|(h, _)| *h));
    c.extend(["AGE", "LABELS"]);
    c
}

/// Cells matching [`columns`].
pub(crate) fn row<R: Resource>(obj: &R) -> Vec<String> {
    let doc = document(obj);
    let mut cells = obj.row();
    for (_, pointer) in extras(R::NOUN) {
        let cell = if pointer.is_empty() {
            unmet_reason(obj)
        } else {
            doc.pointer(pointer).map_or_else(|| "-".into(), cell_text)
        };
        cells.push(cell);
    }
    cells.push(age(obj));
    cells.push(labels(obj));
    cells
}

/// `volume/scratch-1`.
pub(crate) fn kind_name<R: Resource>(obj: &R) -> String {
    format!("{}/{}\n", R::NOUN, name_of(obj))
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The reason of the first condition that is not True, else `-`.
fn unmet_reason<R: Resource>(obj: &R) -> String {
    obj.conditions()
        .iter()
        .find(|c| c.status() != ferrofab_proto::v1::ConditionStatus::True && !c.reason.is_empty())
        .map_or_else(|| "-".into(), |c| c.reason.clone())
}

/// Time since creation, e.g. `3d`.
fn age<R: Resource>(obj: &R) -> String {
    obj.meta()
        .and_then(|m| m.creation_timestamp.as_ref())
        .map_or_else(
            || "-".into(),
            |t| {
                let r = relative(t.seconds - now_seconds());
                r.trim_end_matches(" ago")
                    .trim_start_matches("in ")
                    .to_owned()
            },
        )
}

fn labels<R: Resource>(obj: &R) -> String {
    let Some(m) = obj.meta().filter(|m| !m.labels.is_empty()) else {
        return "-".into();
    };
    m.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
