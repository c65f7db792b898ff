//! `ferrofab_attachment`: one Attachment of a volume to a workstation.
//! Every attribute forces replacement; apply waits until the workstation
//! has exposed the volume, and destroy until it has detached.

use std::time::Duration;

use ferrofab_proto::v1::{
    self, AccessMode, AttachmentPhase, CreateAttachmentRequest, DeleteAttachmentRequest,
    GetAttachmentRequest, GetNodeRequest, NodeRole,
};

use crate::common::{self, Poll};
use crate::diag::{Diag, Diags};
use crate::resources::Ctx;
use crate::schema::{attr, timeouts_block, Block, Mode};
use crate::value::{Type, Value};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
const REPLACE: &[&str] = &["name", "volume", "volume_uuid", "node", "mode"];
const COMPUTED: &[&str] = &["status", "device_path"];

/// The uuid of the volume an attachment names (empty if it is gone).
async fn volume_uuid(ctx: &Ctx, volume: &str) -> Value {
    match ctx
        .admin()
        .get_volume(v1::GetVolumeRequest {
            name: volume.into(),
        })
        .await
    {
        Ok(v) => Value::str(v.into_inner().status.unwrap_or_default().uuid),
        Err(_) => Value::str(""),
    }
}

pub fn block() -> Block {
    use Mode::*;
    Block {
        attrs: vec![
            attr("id", Type::String, Computed, "The attachment name."),
            attr("name", Type::String, OptionalComputed, "Attachment name; defaults to `<volume>-<node>`."),
            attr("volume", Type::String, Required, "The volume to attach."),
            attr("volume_uuid", Type::String, OptionalComputed, "Set it to the volume's `uuid` so that replacing the volume also replaces the attachment (the attachment is checked against it)."),
            attr("node", Type::String, Required, "The workstation node (it must be allowed by the volume's tenant)."),
            attr("mode", Type::String, OptionalComputed, "`read-write` (default) or `read-only`."),
            attr("status", Type::String, Computed, "Phase: Pending, Connecting, Attached or Detaching."),
            attr("device_path", Type::String, Computed, "Where the workstation exposes the volume."),
        ],
        blocks: vec![("timeouts", timeouts_block(&["create", "delete"]))],
        description: "Attaches a volume to a workstation node. Any change detaches and re-attaches.",
    }
}

fn mode_name(m: i32) -> &'static str {
    match AccessMode::try_from(m).unwrap_or(AccessMode::Unspecified) {
        AccessMode::ReadOnly => "read-only",
        _ => "read-write",
    }
}

fn phase_name(p: i32) -> &'static str {
    match AttachmentPhase::try_from(p).unwrap_or(AttachmentPhase::Unspecified) {
        AttachmentPhase::Pending => "Pending",
        AttachmentPhase::Connecting => "Connecting",
        AttachmentPhase::Attached => "Attached",
        AttachmentPhase::Detaching => "Detaching",
        AttachmentPhase::Unspecified => "Unknown",
    }
}

pub fn validate(cfg: &Value, diags: &mut Diags) {
    common::validate_name_attr(cfg, "name", diags);
    common::validate_name_attr(cfg, "volume", diags);
    common::validate_name_attr(cfg, "node", diags);
    if let Some(m) = cfg.get("mode").as_str() {
        if m != "read-write" && m != "read-only" {
            diags.attr_error(
                &["mode"],
                "invalid mode",
                format!("{m:?}: use read-write or read-only"),
            );
        }
    }
    common::validate_timeouts(cfg, diags);
}

pub fn to_state(a: &v1::Attachment, prior: &Value, volume_uuid: Value) -> Value {
    let meta = a.metadata.clone().unwrap_or_default();
    let spec = a.spec.clone().unwrap_or_default();
    let st = a.status.clone().unwrap_or_default();
    let mut s = Value::object();
    s.set("id", Value::str(&meta.name));
    s.set("name", Value::str(&meta.name));
    s.set("volume", Value::str(&spec.volume));
    s.set("node", Value::str(&spec.node));
    s.set("volume_uuid", volume_uuid);
    s.set("mode", Value::str(mode_name(spec.mode)));
    s.set("status", Value::str(phase_name(st.phase)));
    s.set("device_path", Value::str(&st.device_path));
    s.set("timeouts", prior.get("timeouts").clone());
    s
}

pub async fn read(ctx: &Ctx, name: &str, prior: &Value) -> Result<Option<Value>, Diag> {
    match common::reading(&format!("reading attachment {name:?}"), || async {
        ctx.admin()
            .get_attachment(GetAttachmentRequest { name: name.into() })
            .await
    })
    .await
    {
        Ok(r) => {
            let a = r.into_inner();
            if a.metadata
                .as_ref()
                .is_some_and(|m| m.deletion_timestamp.is_some())
            {
                return Ok(None);
            }
            let uuid = volume_uuid(ctx, &a.spec.clone().unwrap_or_default().volume).await;
            Ok(Some(to_state(&a, prior, uuid)))
        }
        Err(s) if common::is_not_found(&s) => Ok(None),
        Err(s) => Err(Diag::api(&format!("reading attachment {name:?}"), &s)),
    }
}

pub async fn plan(
    ctx: &Ctx,
    prior: &Value,
    planned: &mut Value,
    diags: &mut Diags,
) -> Vec<&'static str> {
    if planned.get("mode").is_null() {
        planned.set("mode", Value::str("read-write"));
    }
    if planned.get("name").is_null() {
        let default = match (planned.get("volume").as_str(), planned.get("node").as_str()) {
            (Some(v), Some(n)) => Value::str(format!("{v}-{n}")),
            _ => Value::Unknown,
        };
        // Keep the name chosen at creation while nothing else changes.
        let keep = !prior.is_null()
            && prior.get("volume") == planned.get("volume")
            && prior.get("node") == planned.get("node");
        planned.set(
            "name",
            if keep {
                prior.get("name").clone()
            } else {
                default
            },
        );
    }
    let creating = prior.is_null();
    let replace = if creating {
        vec![]
    } else {
        common::changed(prior, planned, REPLACE)
    };
    if creating || !replace.is_empty() {
        common::unknown_computed(planned, COMPUTED);
        planned.set("id", planned.get("name").clone());
        if planned.get("volume_uuid").is_null() {
            planned.set("volume_uuid", Value::Unknown);
        }
        if let Some(node) = planned.get("node").as_str() {
            check_node(ctx, node, diags).await;
        }
    }
    replace
}

/// Nodes enroll themselves and are not managed by Terraform, so a node
/// that does not exist at plan time is a configuration error.
async fn check_node(ctx: &Ctx, node: &str, diags: &mut Diags) {
    match common::reading(&format!("reading node {node:?}"), || async {
        ctx.admin().get_node(GetNodeRequest { name: node.into() }).await
    })
    .await
    {
        Ok(n) => {
            let roles = n.into_inner().spec.unwrap_or_default().roles;
            if !roles.contains(&(NodeRole::Workstation as i32)) {
                diags.attr_error(&["node"], "not a workstation", format!("node {node:?} does not have the workstation role, so it cannot attach volumes"));
            }
        }
        Err(s) if common::is_not_found(&s) => diags.attr_error(
            &["node"],
            "unknown node",
            format!("node {node:?} does not exist; nodes appear when their agent enrolls (see data source ferrofab_nodes)"),
        ),
        Err(s) => diags.push(Diag::api(&format!("node {node:?}"), &s).on("node")),
    }
}

pub async fn create(ctx: &Ctx, planned: &Value) -> (Option<Value>, Option<Diag>) {
    let name = planned.get("name").as_str().unwrap_or_default().to_owned();
    let mode = match planned.get("mode").as_str() {
        Some("read-only") => AccessMode::ReadOnly,
        _ => AccessMode::ReadWrite,
    };
    let att = v1::Attachment {
        metadata: Some(v1::ObjectMeta {
            name: name.clone(),
            ..Default::default()
        }),
        spec: Some(v1::AttachmentSpec {
            volume: planned
                .get("volume")
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            node: planned.get("node").as_str().unwrap_or_default().to_owned(),
            mode: mode as i32,
        }),
        status: None,
    };
    if let Some(want) = planned.get("volume_uuid").as_str() {
        let vol = planned
            .get("volume")
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match common::reading(&format!("reading volume {vol:?}"), || async {
            ctx.admin()
                .get_volume(v1::GetVolumeRequest { name: vol.clone() })
                .await
        })
        .await
        {
            Ok(v) => {
                let uuid = v.into_inner().status.unwrap_or_default().uuid;
                if uuid != want {
                    let d = Diag::new(
                        "volume_uuid does not match",
                        format!("volume {vol:?} has uuid {uuid}, not {want}"),
                    )
                    .on("volume_uuid");
                    return (None, Some(d));
                }
            }
            Err(s) => {
                return (
                    None,
                    Some(Diag::api(&format!("volume {vol:?}"), &s).on("volume")),
                )
            }
        }
    }
    let limit = common::timeout(planned, "create", DEFAULT_TIMEOUT);
    let created = common::create_with_retry(
        "ferrofab_attachment",
        &name,
        limit,
        || {
            let req = CreateAttachmentRequest {
                attachment: Some(att.clone()),
            };
            async move { ctx.admin().create_attachment(req).await }
        },
        || async {
            let have = ctx
                .admin()
                .get_attachment(GetAttachmentRequest { name: name.clone() })
                .await
                .ok()?
                .into_inner();
            Some(have.spec == att.spec)
        },
    )
    .await;
    if let Err(d) = created {
        return (None, Some(d));
    }
    let waited = common::wait_until(
        &format!("attachment {name:?} to be exposed on its workstation"),
        limit,
        || async {
            let a = ctx
                .admin()
                .get_attachment(GetAttachmentRequest { name: name.clone() })
                .await?
                .into_inner();
            let st = a.status.clone().unwrap_or_default();
            Ok(if st.phase == AttachmentPhase::Attached as i32 {
                Poll::Done(a)
            } else {
                Poll::Pending(format!(
                    "{}; {}",
                    phase_name(st.phase),
                    common::pending_reason(&st.conditions)
                ))
            })
        },
    )
    .await;
    match waited {
        Ok(a) => {
            let uuid = volume_uuid(ctx, planned.get("volume").as_str().unwrap_or_default()).await;
            (Some(to_state(&a, planned, uuid)), None)
        }
        Err(d) => (read(ctx, &name, planned).await.ok().flatten(), Some(d)),
    }
}

pub async fn delete(ctx: &Ctx, prior: &Value) -> Result<(), Diag> {
    let name = prior.get("name").as_str().unwrap_or_default().to_owned();
    let limit = common::timeout(prior, "delete", DEFAULT_TIMEOUT);
    let req = DeleteAttachmentRequest {
        name: name.clone(),
        resource_version: 0,
    };
    common::delete_and_wait(
        &format!("attachment {name:?}"),
        limit,
        || {
            let req = req.clone();
            async move { ctx.admin().delete_attachment(req).await }
        },
        || async {
            let a = ctx
                .admin()
                .get_attachment(GetAttachmentRequest { name: name.clone() })
                .await?;
            let st = a.into_inner().status.unwrap_or_default();
            Ok(format!(
                "{}; waiting for the workstation to disconnect",
                phase_name(st.phase)
            ))
        },
    )
    .await
}
