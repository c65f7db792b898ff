//! `ferrofab_attachment`: one Attachment of a volume to a workstation.
//! A changed `node` is a move (an in-place update: the controller detaches
//! from the old node, waits until the storage node revoked its host, then
//! attaches on the new one); a replacement would be refused, since the
//! new read-write attachment would conflict with the old one still there.
//! Every other attribute forces replacement; apply waits until the
//! workstation has exposed the volume, and destroy until it has detached.

use std::time::Duration;

use ferrofab_proto::v1::{
    self, AccessMode, AttachmentPhase, CreateAttachmentRequest, DeleteAttachmentRequest,
    GetAttachmentRequest, GetNodeRequest, NodeRole, UpdateAttachmentRequest,
};

use crate::common::{self, Poll};
use crate::diag::{Diag, Diags};
use crate::resources::Ctx;
use crate::schema::{attr, timeouts_block, Block, Mode};
use crate::value::{Type, Value};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// `mode` and `access_mode` are planned equal, so `mode` alone decides (a
/// state written before `access_mode` existed must not force a replace).
const REPLACE: &[&str] = &["name", "volume", "volume_uuid", "mode"];
/// The accepted access-mode words (also the layout file's and the CLI's).
const MODES: &[&str] = &["read-write", "read-only", "read-write-many"];
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
            attr("node", Type::String, Required, "The workstation node (it must be allowed by the volume's tenant). Changing it moves the attachment in place: detached from the old node, its host revoked on the storage node, then attached on the new one."),
            attr("access_mode", Type::String, OptionalComputed, "`read-write` (default: read-write by this node only; any attachment of the volume on another node is refused), `read-only` (any number of nodes) or `read-write-many` (several writers: only for clustered filesystems). Changing it replaces the attachment."),
            attr("mode", Type::String, OptionalComputed, "Deprecated spelling of `access_mode`."),
            attr("status", Type::String, Computed, "Phase: Pending, Connecting, Attached or Detaching."),
            attr("device_path", Type::String, Computed, "Where the workstation exposes the volume."),
        ],
        blocks: vec![("timeouts", timeouts_block(&["create", "update", "delete"]))],
        description: "Attaches a volume to a workstation node. Changing `node` moves it; any other change detaches and re-attaches.",
    }
}

fn mode_name(m: i32) -> &'static str {
    match AccessMode::try_from(m).unwrap_or(AccessMode::Unspecified) {
        AccessMode::ReadOnly => "read-only",
        AccessMode::ReadWriteMany => "read-write-many",
        _ => "read-write",
    }
}

fn mode_of(word: Option<&str>) -> AccessMode {
    match word {
        Some("read-only") => AccessMode::ReadOnly,
        Some("read-write-many") => AccessMode::ReadWriteMany,
        _ => AccessMode::ReadWrite,
    }
}

/// The access mode a configuration asks for: `access_mode`, else the
/// deprecated `mode`, else read-write.
fn wanted_mode(v: &Value) -> Option<String> {
    v.get("access_mode")
        .as_str()
        .or_else(|| v.get("mode").as_str())
        .map(str::to_owned)
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
    for a in ["access_mode", "mode"] {
        if let Some(m) = cfg.get(a).as_str() {
            if !MODES.contains(&m) {
                diags.attr_error(
                    &[a],
                    "invalid access mode",
                    format!("{m:?}: use read-write, read-only or read-write-many"),
                );
            }
        }
    }
    if let (Some(a), Some(m)) = (cfg.get("access_mode").as_str(), cfg.get("mode").as_str()) {
        if a != m {
            diags.attr_error(
                &["mode"],
                "conflicting access modes",
                format!("access_mode = {a:?} but mode = {m:?}; set only access_mode"),
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
    s.set("access_mode", Value::str(mode_name(spec.mode)));
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
    let mode = wanted_mode(planned).unwrap_or_else(|| "read-write".into());
    planned.set("mode", Value::str(&mode));
    planned.set("access_mode", Value::str(&mode));
    if planned.get("name").is_null() {
        let default = match (planned.get("volume").as_str(), planned.get("node").as_str()) {
            (Some(v), Some(n)) => Value::str(format!("{v}-{n}")),
            _ => Value::Unknown,
        };
        // Keep the name chosen at creation while the volume stays (a move
        // to another node keeps its name: it is the same attachment).
        let keep = !prior.is_null() && prior.get("volume") == planned.get("volume");
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
    let moving = !creating && replace.is_empty() && prior.get("node") != planned.get("node");
    if moving {
        common::unknown_computed(planned, COMPUTED);
        if let Some(node) = planned.get("node").as_str() {
            check_node(ctx, node, diags).await;
        }
    }
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
    let mode = mode_of(wanted_mode(planned).as_deref());
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
    let waited = wait_attached(ctx, &name, limit).await;
    match waited {
        Ok(a) => {
            let uuid = volume_uuid(ctx, planned.get("volume").as_str().unwrap_or_default()).await;
            (Some(to_state(&a, planned, uuid)), None)
        }
        Err(d) => (read(ctx, &name, planned).await.ok().flatten(), Some(d)),
    }
}

/// Until the attachment is Attached on its (current) node, with no move
/// still fenced.
async fn wait_attached(ctx: &Ctx, name: &str, limit: Duration) -> Result<v1::Attachment, Diag> {
    common::wait_until(
        &format!("attachment {name:?} to be exposed on its workstation"),
        limit,
        || async {
            let a = ctx
                .admin()
                .get_attachment(GetAttachmentRequest { name: name.into() })
                .await?
                .into_inner();
            let st = a.status.clone().unwrap_or_default();
            Ok(
                if st.phase == AttachmentPhase::Attached as i32 && st.moved_from_node.is_empty() {
                    Poll::Done(a)
                } else {
                    Poll::Pending(format!(
                        "{}; {}",
                        phase_name(st.phase),
                        common::pending_reason(&st.conditions)
                    ))
                },
            )
        },
    )
    .await
}

/// A move (the only in-place change besides `timeouts`): the controller
/// fences it; this waits until the volume is exposed on the new node. A
/// node that is down never reports its disconnect, so the wait times out
/// naming it; `ferrofab volume move --force` fences such a node.
pub async fn update(ctx: &Ctx, prior: &Value, planned: &Value) -> (Option<Value>, Option<Diag>) {
    let name = prior.get("name").as_str().unwrap_or_default().to_owned();
    if prior.get("node") == planned.get("node") {
        return (Some(planned.clone()), None);
    }
    let to = planned.get("node").as_str().unwrap_or_default().to_owned();
    let limit = common::timeout(planned, "update", DEFAULT_TIMEOUT);
    let what = format!("moving attachment {name:?} to {to:?}");
    let cur = match ctx
        .admin()
        .get_attachment(GetAttachmentRequest { name: name.clone() })
        .await
    {
        Ok(a) => a.into_inner(),
        Err(s) => return (None, Some(Diag::api(&what, &s))),
    };
    let mut moved = cur.clone();
    if let Some(spec) = moved.spec.as_mut() {
        spec.node = to.clone();
    }
    if let Err(s) = ctx
        .admin()
        .update_attachment(UpdateAttachmentRequest {
            attachment: Some(moved),
            force: false,
        })
        .await
    {
        return (None, Some(Diag::api(&what, &s).on("node")));
    }
    match wait_attached(ctx, &name, limit).await {
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
