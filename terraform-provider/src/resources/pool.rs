//! `ferrofab_pool`: one Pool on a storage node. Capacity, overcommit,
//! namespace limit, reclaim policy and labels change in place; the node,
//! the backing and the name force a new pool.

use std::time::Duration;

use ferrofab_proto::v1::{
    self, BackingKind, CreatePoolRequest, DeletePoolRequest, GetPoolRequest, ReclaimPolicy,
    UpdatePoolRequest,
};

use crate::common;
use crate::diag::{Diag, Diags};
use crate::resources::Ctx;
use crate::schema::{attr, timeouts_block, Block, Mode};
use crate::value::{Type, Value};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
const REPLACE: &[&str] = &["name", "node", "backing", "path"];

pub fn block() -> Block {
    use Mode::*;
    Block {
        attrs: vec![
            attr("id", Type::String, Computed, "The pool name."),
            attr("name", Type::String, Required, "Pool name. Changing it creates a new pool."),
            attr("node", Type::String, Required, "The storage node holding the pool. Changing it creates a new pool."),
            attr("backing", Type::String, OptionalComputed, "`directory` (default: each volume is a sparse file) or `block_device`. Changing it creates a new pool."),
            attr("path", Type::String, Required, "Absolute path of the directory or block device on the node. Changing it creates a new pool."),
            attr("capacity", Type::String, Required, "Physical capacity, bytes or with a unit (`4TiB`)."),
            attr("overcommit_ratio", Type::Number, OptionalComputed, "Thin provisioning: volumes may add up to capacity × ratio (default 1)."),
            attr("namespace_limit", Type::Number, OptionalComputed, "Maximum number of volumes (default 256)."),
            attr("reclaim_policy", Type::String, OptionalComputed, "`delete` (default) or `retain` the data of deleted volumes."),
            attr("labels", Type::map(Type::String), Optional, "Labels, matched by volumes' `pool_selector`."),
            attr("capacity_bytes", Type::Number, Computed, "The capacity in bytes."),
        ],
        blocks: vec![("timeouts", timeouts_block(&["delete"]))],
        description: "A pool of capacity on a storage node from which volumes are carved.",
    }
}

pub fn validate(cfg: &Value, diags: &mut Diags) {
    common::validate_name_attr(cfg, "name", diags);
    common::validate_name_attr(cfg, "node", diags);
    common::validate_size_attr(cfg, "capacity", diags);
    if let Some(b) = cfg.get("backing").as_str() {
        if b != "directory" && b != "block_device" {
            diags.attr_error(
                &["backing"],
                "invalid backing",
                format!("{b:?}: use directory or block_device"),
            );
        }
    }
    if let Some(p) = cfg.get("path").as_str() {
        if !p.starts_with('/') {
            diags.attr_error(
                &["path"],
                "invalid path",
                format!("{p:?} is not an absolute path"),
            );
        }
    }
    if let Some(r) = cfg.get("reclaim_policy").as_str() {
        if r != "delete" && r != "retain" {
            diags.attr_error(
                &["reclaim_policy"],
                "invalid reclaim_policy",
                format!("{r:?}: use delete or retain"),
            );
        }
    }
    if let Some(r) = cfg.get("overcommit_ratio").as_f64() {
        if r < 1.0 {
            diags.attr_error(
                &["overcommit_ratio"],
                "invalid overcommit_ratio",
                "must be at least 1",
            );
        }
    }
    if let Some(n) = cfg.get("namespace_limit").as_f64() {
        if !(1.0..=65535.0).contains(&n) || n.fract() != 0.0 {
            diags.attr_error(
                &["namespace_limit"],
                "invalid namespace_limit",
                "must be a whole number from 1 to 65535",
            );
        }
    }
    common::validate_timeouts(cfg, diags);
}

pub fn to_state(p: &v1::Pool, prior: &Value) -> Value {
    let meta = p.metadata.clone().unwrap_or_default();
    let spec = p.spec.clone().unwrap_or_default();
    let backing = spec.backing.unwrap_or_default();
    let mut s = Value::object();
    s.set("id", Value::str(&meta.name));
    s.set("name", Value::str(&meta.name));
    s.set("node", Value::str(&spec.node));
    let kind = match BackingKind::try_from(backing.kind).unwrap_or(BackingKind::Unspecified) {
        BackingKind::BlockDevice => "block_device",
        _ => "directory",
    };
    s.set("backing", Value::str(kind));
    s.set("path", Value::str(&backing.path));
    s.set("capacity", Value::str(&spec.capacity));
    let ratio = if spec.overcommit_ratio == 0.0 {
        1.0
    } else {
        spec.overcommit_ratio
    };
    s.set("overcommit_ratio", Value::Number(ratio));
    let limit = if spec.namespace_limit == 0 {
        256
    } else {
        spec.namespace_limit
    };
    s.set("namespace_limit", Value::Number(f64::from(limit)));
    let reclaim =
        match ReclaimPolicy::try_from(spec.reclaim_policy).unwrap_or(ReclaimPolicy::Unspecified) {
            ReclaimPolicy::Retain => "retain",
            _ => "delete",
        };
    s.set("reclaim_policy", Value::str(reclaim));
    s.set("labels", common::labels_state(&meta.labels, prior));
    let bytes = ferrofab_types::size::parse_size(&spec.capacity).unwrap_or(0);
    s.set("capacity_bytes", Value::Number(bytes as f64));
    s.set("timeouts", prior.get("timeouts").clone());
    s
}

fn to_api(p: &Value) -> v1::Pool {
    let kind = match p.get("backing").as_str() {
        Some("block_device") => BackingKind::BlockDevice,
        _ => BackingKind::Directory,
    };
    let reclaim = match p.get("reclaim_policy").as_str() {
        Some("retain") => ReclaimPolicy::Retain,
        _ => ReclaimPolicy::Delete,
    };
    v1::Pool {
        metadata: Some(v1::ObjectMeta {
            name: p.get("name").as_str().unwrap_or_default().to_owned(),
            labels: p.get("labels").string_map().into_iter().collect(),
            ..Default::default()
        }),
        spec: Some(v1::PoolSpec {
            node: p.get("node").as_str().unwrap_or_default().to_owned(),
            backing: Some(v1::PoolBacking {
                kind: kind as i32,
                path: p.get("path").as_str().unwrap_or_default().to_owned(),
            }),
            capacity: p.get("capacity").as_str().unwrap_or_default().to_owned(),
            overcommit_ratio: p.get("overcommit_ratio").as_f64().unwrap_or(1.0),
            namespace_limit: p.get("namespace_limit").as_f64().unwrap_or(256.0) as u32,
            reclaim_policy: reclaim as i32,
        }),
        status: None,
    }
}

pub async fn read(ctx: &Ctx, name: &str, prior: &Value) -> Result<Option<Value>, Diag> {
    match common::reading(&format!("reading pool {name:?}"), || async {
        ctx.admin()
            .get_pool(GetPoolRequest { name: name.into() })
            .await
    })
    .await
    {
        Ok(r) => {
            let p = r.into_inner();
            if p.metadata
                .as_ref()
                .is_some_and(|m| m.deletion_timestamp.is_some())
            {
                return Ok(None);
            }
            Ok(Some(to_state(&p, prior)))
        }
        Err(s) if common::is_not_found(&s) => Ok(None),
        Err(s) => Err(Diag::api(&format!("reading pool {name:?}"), &s)),
    }
}

pub fn plan(prior: &Value, planned: &mut Value) -> Vec<&'static str> {
    for (a, default) in [
        ("backing", Value::str("directory")),
        ("overcommit_ratio", Value::Number(1.0)),
        ("namespace_limit", Value::Number(256.0)),
        ("reclaim_policy", Value::str("delete")),
    ] {
        if planned.get(a).is_null() {
            planned.set(a, default);
        }
    }
    planned.set("id", planned.get("name").clone());
    let bytes = planned
        .get("capacity")
        .as_str()
        .and_then(|s| ferrofab_types::size::parse_size(s).ok());
    planned.set(
        "capacity_bytes",
        bytes.map_or(Value::Unknown, |b| Value::Number(b as f64)),
    );
    if prior.is_null() {
        vec![]
    } else {
        common::changed(prior, planned, REPLACE)
    }
}

pub async fn create(ctx: &Ctx, planned: &Value) -> (Option<Value>, Option<Diag>) {
    let name = planned.get("name").as_str().unwrap_or_default().to_owned();
    let want = to_api(planned);
    let limit = common::timeout(planned, "create", DEFAULT_TIMEOUT);
    let get = || async {
        ctx.admin()
            .get_pool(GetPoolRequest { name: name.clone() })
            .await
            .map(tonic::Response::into_inner)
    };
    let created = common::create_with_retry(
        "ferrofab_pool",
        &name,
        limit,
        || {
            let req = CreatePoolRequest {
                pool: Some(want.clone()),
            };
            async move { ctx.admin().create_pool(req).await }
        },
        || async { Some(get().await.ok()?.spec == want.spec) },
    )
    .await;
    match created {
        Ok(common::Created::New(p)) => (Some(to_state(&p.into_inner(), planned)), None),
        Ok(common::Created::Ours) => match get().await {
            Ok(p) => (Some(to_state(&p, planned)), None),
            Err(s) => (None, Some(Diag::api(&format!("reading pool {name:?}"), &s))),
        },
        Err(d) => (None, Some(d)),
    }
}

pub async fn update(ctx: &Ctx, prior: &Value, planned: &Value) -> (Option<Value>, Option<Diag>) {
    let name = planned.get("name").as_str().unwrap_or_default().to_owned();
    let want = to_api(planned);
    let limit = common::timeout(planned, "update", DEFAULT_TIMEOUT);
    let r = common::retry(&format!("updating pool {name:?}"), limit, || {
        let req = UpdatePoolRequest {
            pool: Some(want.clone()),
        };
        async move { ctx.admin().update_pool(req).await }
    })
    .await;
    match r.result {
        Ok(p) => (Some(to_state(&p.into_inner(), planned)), None),
        Err(s) => (
            Some(prior.clone()),
            Some(Diag::api(&format!("updating pool {name:?}"), &s)),
        ),
    }
}

pub async fn delete(ctx: &Ctx, prior: &Value) -> Result<(), Diag> {
    let name = prior.get("name").as_str().unwrap_or_default().to_owned();
    let limit = common::timeout(prior, "delete", DEFAULT_TIMEOUT);
    let req = DeletePoolRequest {
        name: name.clone(),
        resource_version: 0,
    };
    common::delete_and_wait(
        &format!("pool {name:?}"),
        limit,
        || {
            let req = req.clone();
            async move { ctx.admin().delete_pool(req).await }
        },
        || async {
            ctx.admin()
                .get_pool(GetPoolRequest { name: name.clone() })
                .await?;
            Ok("finalizers pending".to_owned())
        },
    )
    .await
}
