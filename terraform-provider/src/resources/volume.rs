//! `ferrofab_volume`: one Volume. Size grows in place (a shrink is refused
//! at plan time); tenant, pool, pool_selector and block_size force a new
//! volume; placement and NVMe identity are computed.

use std::time::Duration;

use ferrofab_proto::v1::{
    self, AttachmentPhase, CreateVolumeRequest, DeleteVolumeRequest, GetVolumeRequest,
    ListAttachmentsRequest, UpdateVolumeRequest, VolumePhase,
};

use crate::common::{self, Poll};
use crate::demand::{self, Limit, Planned};
use crate::diag::{Diag, Diags};
use crate::resources::Ctx;
use crate::schema::{attr, timeouts_block, Block, Mode};
use crate::value::{Type, Value};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
const REPLACE: &[&str] = &["name", "tenant", "pool", "pool_selector", "block_size"];
const COMPUTED: &[&str] = &[
    "uuid",
    "nguid",
    "subsystem_nqn",
    "status",
    "placement_pool",
    "placement_node",
];

pub fn block() -> Block {
    use Mode::*;
    Block {
        attrs: vec![
            attr("id", Type::String, Computed, "The volume name."),
            attr("name", Type::String, Required, "Volume name (DNS-label-like). Changing it creates a new volume."),
            attr("tenant", Type::String, Required, "Owning tenant. Changing it creates a new volume."),
            attr("size", Type::String, Required, "Size in bytes or with a unit (`100GiB`, `1.5TiB`). Grows in place; a smaller size is refused at plan time."),
            attr("block_size", Type::Number, OptionalComputed, "512 or 4096 (default). Changing it creates a new volume."),
            attr("pool", Type::String, Optional, "Explicit pool. Changing it creates a new volume."),
            attr("pool_selector", Type::map(Type::String), Optional, "Labels a pool must carry; the matching pool with the most free capacity is chosen. Changing it creates a new volume."),
            attr("expires_at", Type::String, Optional, "RFC 3339 time at which the burst volume expires; `expiry_action` says what happens then."),
            attr("expiry_action", Type::String, OptionalComputed, "`retain` (default): at expiry the volume is detached and its data kept for the controller's `expiry.retain_grace_seconds` (7 days), during which an administrator can extend it, then deleted. `delete`: detached and deleted after the controller's `expiry.grace_seconds`."),
            attr("labels", Type::map(Type::String), Optional, "Labels of the volume."),
            attr("size_bytes", Type::Number, Computed, "The size in bytes."),
            attr("uuid", Type::String, Computed, "NVMe namespace UUID (stable for the volume's life)."),
            attr("nguid", Type::String, Computed, "NVMe namespace NGUID."),
            attr("subsystem_nqn", Type::String, Computed, "NQN of the subsystem exporting the volume."),
            attr("status", Type::String, Computed, "Phase: Pending, Placed, Ready, Deleting or Failed."),
            attr("placement_pool", Type::String, Computed, "The pool the volume was placed on."),
            attr("placement_node", Type::String, Computed, "The storage node of that pool."),
        ],
        blocks: vec![("timeouts", timeouts_block(&["create", "update", "delete"]))],
        description: "A volume: an NVMe namespace carved from a pool and exported over NVMe/TCP.",
    }
}

pub fn validate(cfg: &Value, diags: &mut Diags) {
    common::validate_name_attr(cfg, "name", diags);
    common::validate_name_attr(cfg, "tenant", diags);
    common::validate_name_attr(cfg, "pool", diags);
    let bytes = common::validate_size_attr(cfg, "size", diags);
    let bs = cfg.get("block_size").as_f64();
    if let Some(b) = bs {
        if b != 512.0 && b != 4096.0 {
            diags.attr_error(&["block_size"], "invalid block_size", "must be 512 or 4096");
        }
    }
    if let Some(bytes) = bytes {
        let b = bs.unwrap_or(4096.0) as u64;
        if b > 0 && bytes % b != 0 {
            diags.attr_error(
                &["size"],
                "invalid size",
                format!("{bytes} bytes is not a multiple of the block size {b}"),
            );
        }
    }
    if !cfg.get("pool").is_null() && !cfg.get("pool_selector").is_null() {
        diags.attr_error(
            &["pool_selector"],
            "conflicting placement",
            "give either pool or pool_selector, not both",
        );
    }
    if let Some(t) = cfg.get("expires_at").as_str() {
        if let Err(e) = parse_time(t) {
            diags.attr_error(&["expires_at"], "invalid expires_at", e);
        }
    }
    if let Some(a) = cfg.get("expiry_action").as_str() {
        if parse_action(a).is_none() {
            diags.attr_error(
                &["expiry_action"],
                "invalid expiry_action",
                format!("{a:?} is not an expiry action: use \"retain\" or \"delete\""),
            );
        }
    }
    common::validate_timeouts(cfg, diags);
}

fn parse_time(s: &str) -> Result<prost_types::Timestamp, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2027-01-31T18:00:00Z: {e}"))?;
    Ok(prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
    })
}

fn format_time(ts: &prost_types::Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts.seconds)
        .ok()
        .and_then(|t| t.replace_nanosecond(ts.nanos.max(0) as u32).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// `retain` / `delete` as the API's enum.
fn parse_action(s: &str) -> Option<v1::ExpiryAction> {
    match s {
        "retain" => Some(v1::ExpiryAction::Retain),
        "delete" => Some(v1::ExpiryAction::Delete),
        _ => None,
    }
}

/// The word for a stored action; unspecified reads as the default, retain.
fn action_name(a: i32) -> &'static str {
    if a == v1::ExpiryAction::Delete as i32 {
        "delete"
    } else {
        "retain"
    }
}

fn phase_name(p: i32) -> &'static str {
    match VolumePhase::try_from(p).unwrap_or(VolumePhase::Unspecified) {
        VolumePhase::Pending => "Pending",
        VolumePhase::Placed => "Placed",
        VolumePhase::Ready => "Ready",
        VolumePhase::Deleting => "Deleting",
        VolumePhase::Failed => "Failed",
        VolumePhase::Unspecified => "Unknown",
    }
}

/// The state for an API volume; `prior` supplies what the API does not
/// keep verbatim (timeouts, the spelling of expires_at, empty labels).
pub fn to_state(v: &v1::Volume, prior: &Value) -> Value {
    let meta = v.metadata.clone().unwrap_or_default();
    let spec = v.spec.clone().unwrap_or_default();
    let st = v.status.clone().unwrap_or_default();
    let mut s = Value::object();
    s.set("id", Value::str(&meta.name));
    s.set("name", Value::str(&meta.name));
    s.set("tenant", Value::str(&spec.tenant));
    s.set("size", Value::str(&spec.size));
    let bs = if spec.block_size == 0 {
        4096
    } else {
        spec.block_size
    };
    s.set("block_size", Value::Number(f64::from(bs)));
    s.set("pool", common::opt_str(&spec.pool));
    let sel = spec
        .pool_selector
        .map(|p| p.match_labels)
        .unwrap_or_default();
    s.set("pool_selector", Value::labels(&sel));
    let expires = match &spec.expires_at {
        None => Value::Null,
        Some(ts) => {
            let same = prior
                .get("expires_at")
                .as_str()
                .and_then(|p| parse_time(p).ok())
                .is_some_and(|p| p == *ts);
            if same {
                prior.get("expires_at").clone()
            } else {
                Value::str(format_time(ts))
            }
        }
    };
    s.set("expires_at", expires);
    s.set("expiry_action", Value::str(action_name(spec.expiry_action)));
    s.set("labels", common::labels_state(&meta.labels, prior));
    s.set("size_bytes", Value::Number(st.size_bytes as f64));
    s.set("uuid", Value::str(&st.uuid));
    s.set("nguid", Value::str(&st.nguid));
    s.set("subsystem_nqn", Value::str(&st.subsystem_nqn));
    s.set("status", Value::str(phase_name(st.phase)));
    s.set("placement_pool", Value::str(&st.pool));
    s.set("placement_node", Value::str(&st.node));
    s.set("timeouts", prior.get("timeouts").clone());
    s
}

/// The API object for a planned state (spec and labels only).
fn to_api(p: &Value) -> v1::Volume {
    let labels = p.get("labels").string_map().into_iter().collect();
    let sel = p.get("pool_selector").string_map();
    v1::Volume {
        metadata: Some(v1::ObjectMeta {
            name: p.get("name").as_str().unwrap_or_default().to_owned(),
            labels,
            ..Default::default()
        }),
        spec: Some(v1::VolumeSpec {
            tenant: p.get("tenant").as_str().unwrap_or_default().to_owned(),
            size: p.get("size").as_str().unwrap_or_default().to_owned(),
            block_size: p.get("block_size").as_f64().unwrap_or(4096.0) as u32,
            pool: p.get("pool").as_str().unwrap_or_default().to_owned(),
            pool_selector: (!sel.is_empty()).then(|| v1::LabelSelector {
                match_labels: sel.into_iter().collect(),
            }),
            expires_at: p
                .get("expires_at")
                .as_str()
                .and_then(|t| parse_time(t).ok()),
            expiry_action: p
                .get("expiry_action")
                .as_str()
                .and_then(parse_action)
                .map_or(0, |a| a as i32),
        }),
        status: None,
    }
}

pub async fn read(ctx: &Ctx, name: &str, prior: &Value) -> Result<Option<Value>, Diag> {
    let get = || ctx.admin_get_volume(name);
    match common::reading(&format!("reading volume {name:?}"), get).await {
        Ok(v) => {
            // A volume being deleted is gone as far as the layout goes.
            if v.metadata
                .as_ref()
                .is_some_and(|m| m.deletion_timestamp.is_some())
            {
                return Ok(None);
            }
            Ok(Some(to_state(&v, prior)))
        }
        Err(s) if common::is_not_found(&s) => Ok(None),
        Err(s) => Err(Diag::api(&format!("reading volume {name:?}"), &s)),
    }
}

/// Plans a create or update; returns the replacement paths.
pub async fn plan(
    ctx: &Ctx,
    prior: &Value,
    planned: &mut Value,
    diags: &mut Diags,
) -> Vec<&'static str> {
    if planned.get("block_size").is_null() {
        planned.set("block_size", Value::Number(4096.0));
    }
    if planned.get("expiry_action").is_null() {
        planned.set("expiry_action", Value::str("retain"));
    }
    let new_bytes = planned
        .get("size")
        .as_str()
        .and_then(|s| ferrofab_types::size::parse_size(s).ok());
    let creating = prior.is_null();
    let replace = if creating {
        vec![]
    } else {
        common::changed(prior, planned, REPLACE)
    };
    if creating || !replace.is_empty() {
        common::unknown_computed(planned, COMPUTED);
        planned.set("id", planned.get("name").clone());
    }
    planned.set(
        "size_bytes",
        new_bytes.map_or(Value::Unknown, |b| Value::Number(b as f64)),
    );
    if !creating && replace.is_empty() {
        let old = prior.get("size_bytes").as_f64().unwrap_or(0.0) as u64;
        if let Some(new) = new_bytes {
            if new < old {
                diags.attr_error(
                    &["size"],
                    "volumes cannot shrink",
                    format!(
                        "volume {:?} is {} ({old} bytes); the new size {} ({new} bytes) is smaller. \
                         Shrinking would destroy the data past the new end; give a size of at least {}, \
                         or replace the volume explicitly (terraform apply -replace=...).",
                        prior.get("name").as_str().unwrap_or_default(),
                        ferrofab_types::size::format_size(old),
                        planned.get("size").as_str().unwrap_or_default(),
                        ferrofab_types::size::format_size(old),
                    ),
                );
                return replace;
            }
            if new > old {
                if dry_run(ctx, planned, false, diags).await {
                    whole_plan(ctx, planned, new, diags).await;
                }
            } else {
                forget(ctx, planned);
            }
        }
    } else if planned.is_wholly_known_except(COMPUTED) && dry_run(ctx, planned, true, diags).await {
        if let Some(b) = new_bytes {
            whole_plan(ctx, planned, b, diags).await;
        }
    }
    replace
}

fn forget(ctx: &Ctx, planned: &Value) {
    if let Some(n) = planned.get("name").as_str() {
        ctx.demand.forget(n);
    }
}

/// Records this planned create or grow and checks it together with every
/// other one planned by this process (see [`crate::demand`]). Failures to
/// read usage skip the check: the per-volume dry run has passed, and the
/// controller still enforces every limit at apply.
async fn whole_plan(ctx: &Ctx, planned: &Value, bytes: u64, diags: &mut Diags) {
    let name = planned.get("name").as_str().unwrap_or_default().to_owned();
    let tenant = planned
        .get("tenant")
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let pool = planned.get("pool").as_str().map(str::to_owned);
    let all = ctx.demand.record(
        &name,
        Planned {
            tenant: tenant.clone(),
            pool: pool.clone(),
            bytes,
        },
    );
    if all.len() < 2 {
        return;
    }
    // Usage first, then the volumes: see the module docs of `demand`.
    let t = common::reading("reading the tenant's usage", || async {
        ctx.admin()
            .get_tenant(v1::GetTenantRequest {
                name: tenant.clone(),
            })
            .await
    })
    .await;
    let p = match &pool {
        Some(p) => common::reading("reading the pool's usage", || async {
            ctx.admin()
                .get_pool(v1::GetPoolRequest { name: p.clone() })
                .await
        })
        .await
        .ok()
        .map(|r| r.into_inner()),
        None => None,
    };
    let Ok(list) = common::reading("listing volumes", || async {
        ctx.admin()
            .list_volumes(v1::ListVolumesRequest::default())
            .await
    })
    .await
    else {
        return;
    };
    let existing: std::collections::HashMap<String, u64> = list
        .into_inner()
        .items
        .iter()
        .filter_map(|v| {
            let n = v.metadata.as_ref()?.name.clone();
            Some((n, v.status.as_ref().map_or(0, |s| s.size_bytes)))
        })
        .collect();
    let mut why = vec![];
    if let Ok(t) = t {
        let t = t.into_inner();
        let spec = t.spec.unwrap_or_default();
        let st = t.status.unwrap_or_default();
        let limit = Limit {
            bytes: ferrofab_types::size::parse_size(&spec.capacity_quota).ok(),
            volumes: (spec.volume_quota > 0).then_some(spec.volume_quota),
            used_bytes: st.used_bytes,
            used_volumes: st.volume_count,
        };
        let pend = demand::pending(&all, &existing, |p| p.tenant == tenant);
        why.extend(demand::overrun(
            &format!("tenant {tenant:?} quota"),
            &limit,
            &pend,
        ));
    }
    if let (Some(pool), Some(p)) = (&pool, p) {
        let st = p.status.unwrap_or_default();
        let limit = Limit {
            bytes: Some(st.allocated_bytes.saturating_add(st.free_bytes)),
            volumes: None,
            used_bytes: st.allocated_bytes,
            used_volumes: st.volume_count,
        };
        let pend = demand::pending(&all, &existing, |p| p.pool.as_deref() == Some(pool));
        why.extend(demand::overrun(
            &format!("the free capacity of pool {pool:?}"),
            &limit,
            &pend,
        ));
    }
    if !why.is_empty() {
        diags.push(
            Diag::new(
                format!("volume {name:?} does not fit with the rest of the plan"),
                format!(
                    "{} Each volume fits on its own; lower sizes, raise the quota, or apply in smaller steps (-target).",
                    why.join(" ")
                ),
            )
            .on("size"),
        );
    }
}

/// Asks the controller whether the create or grow would be accepted
/// (quota, capacity, placement) and turns a refusal into a diagnostic on
/// `size`. A tenant or pool that does not exist yet may be created by the
/// same apply, so NotFound is left for apply to report.
async fn dry_run(ctx: &Ctx, planned: &Value, create: bool, diags: &mut Diags) -> bool {
    if create && !references_exist(ctx, planned).await {
        return false;
    }
    // No look for an existing volume of this name here: Terraform plans
    // the create half of a replacement with a null prior state too, so an
    // existing name does not mean an object outside the state. Apply's
    // create reports a real one, with the import command.
    let vol = to_api(planned);
    let name = vol
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let res = common::reading(&format!("dry-running volume {name:?}"), || async {
        if create {
            ctx.admin()
                .create_volume(CreateVolumeRequest {
                    volume: Some(vol.clone()),
                    dry_run: true,
                })
                .await
        } else {
            ctx.admin()
                .update_volume(UpdateVolumeRequest {
                    volume: Some(vol.clone()),
                    dry_run: true,
                })
                .await
        }
    })
    .await;
    match res {
        Ok(_) => return true,
        Err(s) if common::is_not_found(&s) || s.code() == tonic::Code::Unimplemented => {
            tracing::debug!(volume = %name, error = %s.message(), "dry-run skipped");
        }
        Err(s) if create && s.code() == tonic::Code::AlreadyExists => {
            diags.push(
                Diag::already_exists(
                    "ferrofab_volume",
                    &name,
                    &s,
                    "It is not in this Terraform state.",
                )
                .on("name"),
            );
        }
        Err(s) => diags.push(Diag::api(&format!("volume {name:?}"), &s).on("size")),
    }
    false
}

/// Whether the tenant and the explicit pool exist already. When one does
/// not, it is (or should be) created by the same apply; the dry-run cannot
/// say anything yet, and apply reports a reference that is still missing.
async fn references_exist(ctx: &Ctx, planned: &Value) -> bool {
    let tenant = planned
        .get("tenant")
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let tenant_ok = common::reading("reading the volume's tenant", || async {
        ctx.admin()
            .get_tenant(v1::GetTenantRequest {
                name: tenant.clone(),
            })
            .await
    })
    .await
    .is_ok();
    let pool_ok = match planned.get("pool").as_str() {
        None => true,
        Some(p) => common::reading("reading the volume's pool", || async {
            ctx.admin()
                .get_pool(v1::GetPoolRequest { name: p.to_owned() })
                .await
        })
        .await
        .is_ok(),
    };
    tenant_ok && pool_ok
}

/// Waits until the volume is exported (Ready) or failed.
async fn wait_ready(ctx: &Ctx, name: &str, limit: Duration) -> Result<v1::Volume, Diag> {
    common::wait_until(
        &format!("volume {name:?} to become Ready"),
        limit,
        || async {
            let v = ctx
                .admin()
                .get_volume(GetVolumeRequest { name: name.into() })
                .await?
                .into_inner();
            let st = v.status.clone().unwrap_or_default();
            Ok(
                match VolumePhase::try_from(st.phase).unwrap_or(VolumePhase::Unspecified) {
                    VolumePhase::Ready if st.export_ready => Poll::Done(v),
                    VolumePhase::Failed => Poll::Failed(common::pending_reason(&st.conditions)),
                    _ => Poll::Pending(common::pending_reason(&st.conditions)),
                },
            )
        },
    )
    .await
}

pub async fn create(ctx: &Ctx, planned: &Value) -> (Option<Value>, Option<Diag>) {
    let name = planned.get("name").as_str().unwrap_or_default().to_owned();
    let limit = common::timeout(planned, "create", DEFAULT_TIMEOUT);
    let start = std::time::Instant::now();
    let want = to_api(planned);
    let created = common::create_with_retry(
        "ferrofab_volume",
        &name,
        limit,
        || {
            let req = CreateVolumeRequest {
                volume: Some(want.clone()),
                dry_run: false,
            };
            async move { ctx.admin().create_volume(req).await }
        },
        || async {
            let have = ctx.admin_get_volume(&name).await.ok()?;
            Some(same_spec(&want, &have))
        },
    )
    .await;
    if let Err(d) = created {
        return (None, Some(d));
    }
    ctx.demand.forget(&name);
    match wait_ready(ctx, &name, limit.saturating_sub(start.elapsed())).await {
        Ok(v) => (Some(to_state(&v, planned)), None),
        // The volume exists: hand it back so Terraform keeps it (tainted).
        Err(d) => (read(ctx, &name, planned).await.ok().flatten(), Some(d)),
    }
}

/// Whether the stored volume has every spec field the configuration sets
/// (sizes compared in bytes, so `1GiB` and `1073741824` are the same).
fn same_spec(want: &v1::Volume, have: &v1::Volume) -> bool {
    let (w, h) = (
        want.spec.clone().unwrap_or_default(),
        have.spec.clone().unwrap_or_default(),
    );
    let bytes = |s: &str| ferrofab_types::size::parse_size(s).ok();
    let labels = |v: &v1::Volume| {
        v.metadata
            .as_ref()
            .map(|m| m.labels.clone())
            .unwrap_or_default()
    };
    w.tenant == h.tenant
        && bytes(&w.size).is_some()
        && bytes(&w.size) == bytes(&h.size)
        && w.block_size == h.block_size
        && w.pool == h.pool
        && w.pool_selector.unwrap_or_default() == h.pool_selector.unwrap_or_default()
        && w.expires_at == h.expires_at
        && action_name(w.expiry_action) == action_name(h.expiry_action)
        && labels(want) == labels(have)
}

pub async fn update(ctx: &Ctx, prior: &Value, planned: &Value) -> (Option<Value>, Option<Diag>) {
    let name = planned.get("name").as_str().unwrap_or_default().to_owned();
    let limit = common::timeout(planned, "update", DEFAULT_TIMEOUT);
    let start = std::time::Instant::now();
    let want = to_api(planned);
    // An update sends the whole spec: repeating it after a lost reply finds
    // the volume already at the desired spec, which the controller accepts.
    let r = common::retry(&format!("updating volume {name:?}"), limit, || {
        let req = UpdateVolumeRequest {
            volume: Some(want.clone()),
            dry_run: false,
        };
        async move { ctx.admin().update_volume(req).await }
    })
    .await;
    if let Err(s) = r.result {
        return (
            Some(prior.clone()),
            Some(Diag::api(&format!("updating volume {name:?}"), &s)),
        );
    }
    ctx.demand.forget(&name);
    let ready = match wait_ready(ctx, &name, limit.saturating_sub(start.elapsed())).await {
        Ok(v) => v,
        Err(d) => return (read(ctx, &name, planned).await.ok().flatten(), Some(d)),
    };
    let size = ready.status.as_ref().map_or(0, |s| s.size_bytes);
    match wait_exposed(ctx, &name, size, limit.saturating_sub(start.elapsed())).await {
        Ok(()) => (Some(to_state(&ready, planned)), None),
        Err(d) => (Some(to_state(&ready, planned)), Some(d)),
    }
}

/// Waits until every workstation the volume is attached to exposes it at
/// `size` bytes or more. The storage node serves a grow before the
/// workstations learn of it (an asynchronous event, then their next
/// report), so "Ready" alone would let `apply` return while a researcher's
/// file still has the old size. Attachments not connected, and
/// workstations that do not report a size (0: the kernel driver), are not
/// waited for.
async fn wait_exposed(ctx: &Ctx, volume: &str, size: u64, limit: Duration) -> Result<(), Diag> {
    common::wait_until(
        &format!("volume {volume:?} to be exposed at its new size on its workstations"),
        limit,
        || async {
            let lagging: Vec<String> = attachments_of(ctx, volume)
                .await?
                .into_iter()
                .filter_map(|a| {
                    let st = a.status.as_ref()?;
                    let attached = st.phase == AttachmentPhase::Attached as i32;
                    (attached && st.size_bytes != 0 && st.size_bytes < size).then(|| {
                        let node = a.spec.as_ref().map_or("", |s| s.node.as_str());
                        format!("{node} exposes {} bytes", st.size_bytes)
                    })
                })
                .collect();
            Ok(if lagging.is_empty() {
                Poll::Done(())
            } else {
                Poll::Pending(lagging.join(", "))
            })
        },
    )
    .await
}

/// Every attachment of `volume` (all pages).
async fn attachments_of(ctx: &Ctx, volume: &str) -> Result<Vec<v1::Attachment>, tonic::Status> {
    let mut items = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ctx
            .admin()
            .list_attachments(ListAttachmentsRequest {
                label_selector: String::new(),
                page_size: 500,
                page_token,
            })
            .await?
            .into_inner();
        items.extend(
            page.items
                .into_iter()
                .filter(|a| a.spec.as_ref().is_some_and(|s| s.volume == volume)),
        );
        if page.next_page_token.is_empty() {
            return Ok(items);
        }
        page_token = page.next_page_token;
    }
}

pub async fn delete(ctx: &Ctx, prior: &Value) -> Result<(), Diag> {
    let name = prior.get("name").as_str().unwrap_or_default().to_owned();
    let limit = common::timeout(prior, "delete", DEFAULT_TIMEOUT);
    let req = DeleteVolumeRequest {
        name: name.clone(),
        resource_version: 0,
    };
    common::delete_and_wait(
        &format!("volume {name:?}"),
        limit,
        || {
            let req = req.clone();
            async move { ctx.admin().delete_volume(req).await }
        },
        || async {
            let v = ctx
                .admin()
                .get_volume(GetVolumeRequest { name: name.clone() })
                .await?;
            let st = v.into_inner().status.unwrap_or_default();
            Ok(format!(
                "finalizers pending: {}",
                common::pending_reason(&st.conditions)
            ))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned() -> Value {
        let mut p = Value::object();
        p.set("name", Value::str("v"));
        p.set("tenant", Value::str("lab"));
        p.set("size", Value::str("1GiB"));
        p
    }

    #[test]
    fn a_lost_create_is_recognised_by_its_spec() {
        let want = to_api(&planned());
        let mut have = want.clone();
        if let Some(s) = have.spec.as_mut() {
            s.size = "1073741824".into();
        }
        assert!(same_spec(&want, &have), "same bytes, other spelling");
        if let Some(s) = have.spec.as_mut() {
            s.size = "2GiB".into();
        }
        assert!(!same_spec(&want, &have));
        let mut other_tenant = want.clone();
        if let Some(s) = other_tenant.spec.as_mut() {
            s.tenant = "ops".into();
        }
        assert!(!same_spec(&want, &other_tenant));
    }

    #[test]
    fn expiry_action_is_validated_sent_and_read_back() {
        let mut cfg = planned();
        cfg.set("expiry_action", Value::str("archive"));
        let mut diags = Diags::default();
        validate(&cfg, &mut diags);
        let text = format!("{diags:?}");
        assert!(text.contains("invalid expiry_action"), "{text}");
        assert!(text.contains("retain") && text.contains("delete"), "{text}");
        cfg.set("expiry_action", Value::str("delete"));
        let v = to_api(&cfg);
        assert_eq!(
            v.spec.as_ref().map(|s| s.expiry_action),
            Some(v1::ExpiryAction::Delete as i32)
        );
        let st = to_state(&v, &Value::Null);
        assert_eq!(st.get("expiry_action").as_str(), Some("delete"));
        // Unset: the controller's default, retain, in state and compare.
        let plain = to_api(&planned());
        assert_eq!(
            to_state(&plain, &Value::Null).get("expiry_action").as_str(),
            Some("retain")
        );
        let mut explicit = plain.clone();
        if let Some(s) = explicit.spec.as_mut() {
            s.expiry_action = v1::ExpiryAction::Retain as i32;
        }
        assert!(same_spec(&plain, &explicit));
        assert!(!same_spec(&v, &plain));
    }
}
