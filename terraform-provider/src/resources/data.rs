//! Data sources: `ferrofab_nodes` (filtered by role and labels),
//! `ferrofab_pool` and `ferrofab_volume` (by name).

use std::collections::BTreeMap;

use ferrofab_proto::v1::{GetPoolRequest, GetVolumeRequest, ListNodesRequest, NodeRole};

use crate::common;
use crate::diag::{Diag, Diags};
use crate::resources::{pool, volume, Ctx};
use crate::schema::{attr, Block, Mode};
use crate::value::{Type, Value};

fn node_type() -> Type {
    Type::Object(BTreeMap::from([
        ("name".into(), Type::String),
        ("roles".into(), Type::list(Type::String)),
        ("host_nqn".into(), Type::String),
        ("labels".into(), Type::map(Type::String)),
        ("ready".into(), Type::Bool),
    ]))
}

pub fn nodes_block() -> Block {
    use Mode::*;
    Block {
        attrs: vec![
            attr("id", Type::String, Computed, "A digest of the filter."),
            attr(
                "role",
                Type::String,
                Optional,
                "Only nodes with this role: `storage` or `workstation`.",
            ),
            attr(
                "labels",
                Type::map(Type::String),
                Optional,
                "Only nodes carrying all these labels.",
            ),
            attr(
                "host_nqn",
                Type::String,
                Optional,
                "Only the node with this NVMe host NQN (e.g. one seen in a storage node's log).",
            ),
            attr(
                "names",
                Type::list(Type::String),
                Computed,
                "Names of the matching nodes, sorted.",
            ),
            attr(
                "nodes",
                Type::list(node_type()),
                Computed,
                "The matching nodes.",
            ),
        ],
        blocks: vec![],
        description: "Lists enrolled nodes, filtered by role and labels.",
    }
}

/// The data-source view of a pool: the resource's attributes plus usage.
pub fn pool_block() -> Block {
    let mut b = pool::block();
    for a in &mut b.attrs {
        a.mode = if a.name == "name" {
            Mode::Required
        } else {
            Mode::Computed
        };
    }
    b.attrs.push(attr(
        "allocated_bytes",
        Type::Number,
        Mode::Computed,
        "Sum of the sizes of the volumes placed on the pool.",
    ));
    b.attrs.push(attr(
        "free_bytes",
        Type::Number,
        Mode::Computed,
        "capacity × overcommit − allocated.",
    ));
    b.attrs.push(attr(
        "volume_count",
        Type::Number,
        Mode::Computed,
        "Number of volumes on the pool.",
    ));
    b.blocks.clear();
    b.description = "Reads a pool and its usage.";
    b
}

pub fn volume_block() -> Block {
    let mut b = volume::block();
    for a in &mut b.attrs {
        a.mode = if a.name == "name" {
            Mode::Required
        } else {
            Mode::Computed
        };
    }
    b.blocks.clear();
    b.description = "Reads a volume, e.g. one created outside Terraform.";
    b
}

pub fn validate(type_name: &str, cfg: &Value, diags: &mut Diags) {
    match type_name {
        "ferrofab_nodes" => {
            if let Some(nqn) = cfg.get("host_nqn").as_str() {
                if let Err(e) = ferrofab_types::nqn::validate_nqn(nqn) {
                    diags.attr_error(&["host_nqn"], "invalid host_nqn", e.to_string());
                }
            }
            if let Some(r) = cfg.get("role").as_str() {
                if r != "storage" && r != "workstation" {
                    diags.attr_error(
                        &["role"],
                        "invalid role",
                        format!("{r:?}: use storage or workstation"),
                    );
                }
            }
        }
        _ => common::validate_name_attr(cfg, "name", diags),
    }
}

fn selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn read(ctx: &Ctx, type_name: &str, cfg: &Value) -> Result<Value, Diag> {
    match type_name {
        "ferrofab_nodes" => read_nodes(ctx, cfg).await,
        "ferrofab_pool" => {
            let name = cfg.get("name").as_str().unwrap_or_default().to_owned();
            let p = ctx
                .admin()
                .get_pool(GetPoolRequest { name: name.clone() })
                .await
                .map_err(|s| Diag::api(&format!("pool {name:?}"), &s).on("name"))?
                .into_inner();
            let mut s = pool::to_state(&p, &Value::Null);
            let st = p.status.unwrap_or_default();
            s.set("allocated_bytes", Value::Number(st.allocated_bytes as f64));
            s.set("free_bytes", Value::Number(st.free_bytes as f64));
            s.set("volume_count", Value::Number(f64::from(st.volume_count)));
            if let Value::Object(m) = &mut s {
                m.remove("timeouts");
            }
            Ok(s)
        }
        "ferrofab_volume" => {
            let name = cfg.get("name").as_str().unwrap_or_default().to_owned();
            let v = ctx
                .admin()
                .get_volume(GetVolumeRequest { name: name.clone() })
                .await
                .map_err(|s| Diag::api(&format!("volume {name:?}"), &s).on("name"))?
                .into_inner();
            let mut s = volume::to_state(&v, &Value::Null);
            if let Value::Object(m) = &mut s {
                m.remove("timeouts");
            }
            Ok(s)
        }
        other => Err(Diag::new("unknown data source", other.to_owned())),
    }
}

async fn read_nodes(ctx: &Ctx, cfg: &Value) -> Result<Value, Diag> {
    let labels = cfg.get("labels").string_map();
    let role = match cfg.get("role").as_str() {
        Some("storage") => Some(NodeRole::Storage as i32),
        Some("workstation") => Some(NodeRole::Workstation as i32),
        _ => None,
    };
    let nqn = cfg.get("host_nqn").as_str();
    let mut items = Vec::new();
    let mut page_token = String::new();
    loop {
        // Pages, since the controller bounds each response by size.
        let page = ctx
            .admin()
            .list_nodes(ListNodesRequest {
                label_selector: selector(&labels),
                page_size: 500,
                page_token,
            })
            .await
            .map_err(|s| Diag::api("listing nodes", &s))?
            .into_inner();
        items.extend(page.items);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let mut nodes: Vec<_> = items
        .into_iter()
        .filter(|n| role.is_none_or(|r| n.spec.as_ref().is_some_and(|s| s.roles.contains(&r))))
        .filter(|n| nqn.is_none_or(|q| n.spec.as_ref().is_some_and(|s| s.host_nqn == q)))
        .collect();
    nodes.sort_by(|a, b| {
        a.metadata
            .as_ref()
            .map(|m| &m.name)
            .cmp(&b.metadata.as_ref().map(|m| &m.name))
    });
    let mut names = Vec::new();
    let mut out = Vec::new();
    for n in nodes {
        let meta = n.metadata.unwrap_or_default();
        let spec = n.spec.unwrap_or_default();
        let st = n.status.unwrap_or_default();
        let roles = spec
            .roles
            .iter()
            .map(
                |r| match NodeRole::try_from(*r).unwrap_or(NodeRole::Unspecified) {
                    NodeRole::Storage => Value::str("storage"),
                    NodeRole::Workstation => Value::str("workstation"),
                    NodeRole::Unspecified => Value::str("unspecified"),
                },
            )
            .collect();
        let ready = st.conditions.iter().any(|c| {
            c.r#type == "Ready" && c.status == ferrofab_proto::v1::ConditionStatus::True as i32
        });
        let mut o = Value::object();
        o.set("name", Value::str(&meta.name));
        o.set("roles", Value::List(roles));
        o.set("host_nqn", Value::str(&spec.host_nqn));
        o.set(
            "labels",
            Value::Map(
                meta.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::str(v)))
                    .collect(),
            ),
        );
        o.set("ready", Value::Bool(ready));
        names.push(Value::str(&meta.name));
        out.push(o);
    }
    let mut s = cfg.clone();
    s.set(
        "id",
        Value::str(format!(
            "role={};labels={}",
            cfg.get("role").as_str().unwrap_or("*"),
            selector(&labels)
        )),
    );
    s.set("names", Value::List(names));
    s.set("nodes", Value::List(out));
    Ok(s)
}
