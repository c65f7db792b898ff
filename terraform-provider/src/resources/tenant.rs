//! `ferrofab_tenant`: one Tenant with its quotas and allowed workstations.
//! Everything but the name changes in place.

use ferrofab_proto::v1::{
    self, CreateTenantRequest, DeleteTenantRequest, GetTenantRequest, UpdateTenantRequest,
};

use crate::common;
use crate::diag::{Diag, Diags};
use crate::resources::Ctx;
use crate::schema::{attr, Block, Mode};
use crate::value::{Type, Value};

pub fn block() -> Block {
    use Mode::*;
    Block {
        attrs: vec![
            attr("id", Type::String, Computed, "The tenant name."),
            attr(
                "name",
                Type::String,
                Required,
                "Tenant name. Changing it creates a new tenant.",
            ),
            attr(
                "capacity_quota",
                Type::String,
                Optional,
                "Total size of the tenant's volumes, bytes or with a unit; unset means unlimited.",
            ),
            attr(
                "volume_quota",
                Type::Number,
                Optional,
                "Maximum number of volumes; unset means unlimited.",
            ),
            attr(
                "allowed_nodes",
                Type::set(Type::String),
                Optional,
                "Workstation nodes the tenant's volumes may be attached to.",
            ),
            attr(
                "labels",
                Type::map(Type::String),
                Optional,
                "Labels of the tenant.",
            ),
        ],
        blocks: vec![],
        description: "A tenant: the owner of volumes, with quotas.",
    }
}

pub fn validate(cfg: &Value, diags: &mut Diags) {
    common::validate_name_attr(cfg, "name", diags);
    common::validate_size_attr(cfg, "capacity_quota", diags);
    if let Some(n) = cfg.get("volume_quota").as_f64() {
        if n < 1.0 || n.fract() != 0.0 || n > f64::from(u32::MAX) {
            diags.attr_error(
                &["volume_quota"],
                "invalid volume_quota",
                "must be a whole number of at least 1 (leave it unset for unlimited)",
            );
        }
    }
    for n in cfg.get("allowed_nodes").strings() {
        if let Err(e) = ferrofab_pki::validate_name(&n) {
            diags.attr_error(
                &["allowed_nodes"],
                "invalid node name",
                format!("{n:?}: {e}"),
            );
        }
    }
}

pub fn to_state(t: &v1::Tenant, prior: &Value) -> Value {
    let meta = t.metadata.clone().unwrap_or_default();
    let spec = t.spec.clone().unwrap_or_default();
    let mut s = Value::object();
    s.set("id", Value::str(&meta.name));
    s.set("name", Value::str(&meta.name));
    s.set("capacity_quota", common::opt_str(&spec.capacity_quota));
    s.set(
        "volume_quota",
        if spec.volume_quota == 0 {
            Value::Null
        } else {
            Value::Number(f64::from(spec.volume_quota))
        },
    );
    let nodes = if spec.allowed_nodes.is_empty()
        && !matches!(prior.get("allowed_nodes"), Value::Set(v) if v.is_empty())
    {
        Value::Null
    } else {
        let mut n = spec.allowed_nodes.clone();
        n.sort();
        Value::Set(n.into_iter().map(Value::String).collect())
    };
    s.set("allowed_nodes", nodes);
    s.set("labels", common::labels_state(&meta.labels, prior));
    s
}

fn to_api(p: &Value) -> v1::Tenant {
    v1::Tenant {
        metadata: Some(v1::ObjectMeta {
            name: p.get("name").as_str().unwrap_or_default().to_owned(),
            labels: p.get("labels").string_map().into_iter().collect(),
            ..Default::default()
        }),
        spec: Some(v1::TenantSpec {
            capacity_quota: p
                .get("capacity_quota")
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            volume_quota: p.get("volume_quota").as_f64().unwrap_or(0.0) as u32,
            allowed_nodes: p.get("allowed_nodes").strings(),
        }),
        status: None,
    }
}

pub async fn read(ctx: &Ctx, name: &str, prior: &Value) -> Result<Option<Value>, Diag> {
    match common::reading(&format!("reading tenant {name:?}"), || async {
        ctx.admin()
            .get_tenant(GetTenantRequest { name: name.into() })
            .await
    })
    .await
    {
        Ok(r) => {
            let t = r.into_inner();
            if t.metadata
                .as_ref()
                .is_some_and(|m| m.deletion_timestamp.is_some())
            {
                return Ok(None);
            }
            Ok(Some(to_state(&t, prior)))
        }
        Err(s) if common::is_not_found(&s) => Ok(None),
        Err(s) => Err(Diag::api(&format!("reading tenant {name:?}"), &s)),
    }
}

pub fn plan(prior: &Value, planned: &mut Value) -> Vec<&'static str> {
    planned.set("id", planned.get("name").clone());
    if prior.is_null() {
        vec![]
    } else {
        common::changed(prior, planned, &["name"])
    }
}

pub async fn create(ctx: &Ctx, planned: &Value) -> (Option<Value>, Option<Diag>) {
    let name = planned.get("name").as_str().unwrap_or_default().to_owned();
    let want = to_api(planned);
    let limit = common::timeout(planned, "create", common::DEFAULT_CREATE_TIMEOUT);
    let created = common::create_with_retry(
        "ferrofab_tenant",
        &name,
        limit,
        || {
            let req = CreateTenantRequest {
                tenant: Some(want.clone()),
            };
            async move { ctx.admin().create_tenant(req).await }
        },
        || async {
            let have = get(ctx, &name).await.ok()?;
            Some(have.spec == want.spec)
        },
    )
    .await;
    match created {
        Ok(common::Created::New(t)) => (Some(to_state(&t.into_inner(), planned)), None),
        Ok(common::Created::Ours) => match get(ctx, &name).await {
            Ok(t) => (Some(to_state(&t, planned)), None),
            Err(s) => (
                None,
                Some(Diag::api(&format!("reading tenant {name:?}"), &s)),
            ),
        },
        Err(d) => (None, Some(d)),
    }
}

async fn get(ctx: &Ctx, name: &str) -> Result<v1::Tenant, tonic::Status> {
    ctx.admin()
        .get_tenant(GetTenantRequest { name: name.into() })
        .await
        .map(tonic::Response::into_inner)
}

pub async fn update(ctx: &Ctx, prior: &Value, planned: &Value) -> (Option<Value>, Option<Diag>) {
    let name = planned.get("name").as_str().unwrap_or_default().to_owned();
    let want = to_api(planned);
    let limit = common::timeout(planned, "update", common::DEFAULT_CREATE_TIMEOUT);
    let r = common::retry(&format!("updating tenant {name:?}"), limit, || {
        let req = UpdateTenantRequest {
            tenant: Some(want.clone()),
        };
        async move { ctx.admin().update_tenant(req).await }
    })
    .await;
    match r.result {
        Ok(t) => (Some(to_state(&t.into_inner(), planned)), None),
        Err(s) => (
            Some(prior.clone()),
            Some(Diag::api(&format!("updating tenant {name:?}"), &s)),
        ),
    }
}

pub async fn delete(ctx: &Ctx, prior: &Value) -> Result<(), Diag> {
    let name = prior.get("name").as_str().unwrap_or_default().to_owned();
    let limit = common::timeout(prior, "delete", common::DEFAULT_CREATE_TIMEOUT);
    let r = common::retry(&format!("deleting tenant {name:?}"), limit, || {
        let req = DeleteTenantRequest {
            name: name.clone(),
            resource_version: 0,
        };
        async move { ctx.admin().delete_tenant(req).await }
    })
    .await;
    // NotFound after a lost reply: the earlier attempt deleted it.
    match r.result {
        Ok(_) => Ok(()),
        Err(s) if common::is_not_found(&s) => Ok(()),
        Err(s) => Err(Diag::api(&format!("deleting tenant {name:?}"), &s)),
    }
}
