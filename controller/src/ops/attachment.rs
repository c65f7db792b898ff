//! Attachment writes: create (the volume must be visible, the tenant must
//! allow the node, access modes must agree), update (a changed node is a
//! move, fenced, see [`crate::access`]) and delete (the workstation
//! confirms the disconnect before the host is revoked).

use ferrofab_proto::v1::{Attachment, AttachmentPhase, AttachmentStatus, Volume};
use tracing::info;

use super::common::{delete_or_mark, expected_rv, retry_unconditional};
use super::{get_checked, merge_update, new_meta, Delete, Shared};
use crate::access;
use crate::action::Action;
use crate::authz::{self, Verb};
use crate::cache::Objects;
use crate::conditions::{condition, set_condition};
use crate::error::ApiError;
use crate::identity::Identity;
use crate::resource::Object;
use crate::resource::FINALIZER_DETACH;

/// Creates an attachment; with `dry_run`, every check and no write.
pub async fn create(
    s: &Shared,
    id: &Identity,
    a: Attachment,
    dry_run: bool,
) -> Result<Attachment, ApiError> {
    let _capacity = s.capacity_gate.read().await;
    let meta = new_meta(a.metadata.as_ref(), s.clock.now_ts())?;
    let spec = a.spec.clone().unwrap_or_default();
    let mut att = Attachment {
        metadata: Some(meta),
        spec: Some(spec.clone()),
        status: None,
    };
    {
        let objs = s.cache.read();
        // A volume the caller may not use is answered exactly as a
        // missing one (no owner, no existence).
        let vol = objs
            .volumes
            .get(&spec.volume)
            .filter(|v| volume_visible(id, v, &objs))
            .ok_or_else(|| missing_volume(id, &spec.volume))?;
        authz::check_new(id, Action::CreateAttachment, &att, &objs)?;
        let tenant = vol.spec.as_ref().map_or("", |s| s.tenant.as_str());
        // Checked before the node's existence, so that a tenant learns
        // nothing about nodes it was not granted.
        if !tenant_allows(&objs, tenant, &spec.node) {
            return Err(authz::deny(
                id,
                &format!("CreateAttachment {:?}", att.name()),
                &format!(
                    "tenant {tenant} does not allow node {} (spec.allowed_nodes)",
                    spec.node
                ),
            ));
        }
        if !objs.nodes.contains_key(&spec.node) {
            return Err(ApiError::invalid(
                "spec.node",
                format!("node {:?} does not exist", spec.node),
            ));
        }
        if vol
            .metadata
            .as_ref()
            .is_some_and(|m| m.deletion_timestamp.is_some())
        {
            return Err(ApiError::FailedPrecondition(format!(
                "volume {:?} is being deleted",
                spec.volume
            )));
        }
        crate::expiry::check_attachable(vol, s.clock.now())?;
        check_access(id, &objs, &att, &spec.node)?;
    }
    let mut st = AttachmentStatus {
        observed_generation: 1,
        phase: AttachmentPhase::Pending as i32,
        ..Default::default()
    };
    // Accepted anyway (the workstation picks it up when its agent is
    // back), but the reason it will not connect soon is visible at once.
    let not_ready = s
        .cache
        .read()
        .nodes
        .get(&spec.node)
        .and_then(crate::heartbeat::not_ready);
    if let Some(why) = not_ready {
        st.conditions.push(condition(
            "Connected",
            false,
            "WorkstationNotReady",
            format!("node {} is NotReady ({why})", spec.node),
            s.clock.now_ts(),
            1,
        ));
    }
    att.status = Some(st);
    if dry_run {
        return Ok(att);
    }
    s.put(att, 0).await
}

/// Updates an attachment's labels and annotations, or moves it: a
/// changed `spec.node` is a move, checked like a creation on the new
/// node (tenant's allowed nodes, access modes) and fenced (see
/// [`crate::access`] and the planner). The volume and the mode are
/// immutable. `force` releases the previous node's host at once.
pub async fn update(
    s: &Shared,
    id: &Identity,
    a: Attachment,
    dry_run: bool,
    force: bool,
) -> Result<Attachment, ApiError> {
    let _capacity = s.capacity_gate.read().await;
    let cur: Attachment = get_checked(s, id, Action::UpdateAttachment, a.name())?;
    authz::check(
        id,
        Action::UpdateAttachment,
        Verb::Write,
        &cur,
        &s.cache.read(),
    )?;
    let old = cur.spec.clone().unwrap_or_default();
    let new = a.spec.clone().unwrap_or_default();
    for (field, same) in [
        ("spec.volume", old.volume == new.volume),
        ("spec.mode", access::mode_of(&cur) == access::mode_of(&a)),
    ] {
        if !same {
            return Err(ApiError::invalid(
                field,
                "is immutable; delete the attachment and create it again",
            ));
        }
    }
    let moving = old.node != new.node;
    if moving {
        check_move(s, id, &cur, &new.node)?;
    }
    let (mut merged, rv) = merge_update(&cur, a)?;
    if moving || force {
        let fence = access::fenced_mode(&merged);
        mark_move(&mut merged, &old.node, force, fence, s.clock.now_ts());
    }
    if dry_run {
        return Ok(merged);
    }
    if moving {
        info!(attachment = %merged.name(), from = %old.node, to = %new.node, force, "attachment moved");
    }
    let stored = s.put(merged, rv).await?;
    // The revision of the move itself (and, when forced, of the
    // release): what the nodes' desired states reach. The stamps below
    // are status-only writes that change no node's desired state, so
    // their revisions must not be what a report is compared with.
    let move_rv = stored.metadata.as_ref().map_or(0, |m| m.resource_version);
    let unstamped = stored
        .status
        .as_ref()
        .is_some_and(|st| !st.moved_from_node.is_empty() && st.move_revision == 0);
    let stored = if unstamped {
        stamp_move(s, stored.name(), move_rv).await?;
        get_checked(s, id, Action::UpdateAttachment, stored.name())?
    } else {
        stored
    };
    let forced = stored
        .status
        .as_ref()
        .is_some_and(|st| st.moved_from_released && st.fence_revision == 0);
    if forced {
        stamp_fence(s, stored.name(), move_rv).await?;
        return get_checked(s, id, Action::UpdateAttachment, stored.name());
    }
    Ok(stored)
}

/// The checks of a creation, for the node an attachment moves to.
fn check_move(s: &Shared, id: &Identity, cur: &Attachment, to: &str) -> Result<(), ApiError> {
    let objs = s.cache.read();
    if cur
        .metadata
        .as_ref()
        .is_some_and(|m| m.deletion_timestamp.is_some())
    {
        return Err(ApiError::FailedPrecondition(format!(
            "attachment {:?} is being detached; it cannot move",
            cur.name()
        )));
    }
    // The moved object must pass the create-time rule too: a node may
    // hold attachments only for itself, so it cannot hand one over.
    let mut moved = cur.clone();
    if let Some(spec) = moved.spec.as_mut() {
        spec.node = to.to_string();
    }
    authz::check_new(id, Action::UpdateAttachment, &moved, &objs)?;
    let volume = cur.spec.as_ref().map_or("", |s| s.volume.as_str());
    let vol = objs.volumes.get(volume);
    let tenant = vol
        .and_then(|v| v.spec.as_ref())
        .map_or("", |s| s.tenant.as_str());
    if !tenant_allows(&objs, tenant, to) {
        return Err(authz::deny(
            id,
            &format!("UpdateAttachment {:?}", cur.name()),
            &format!("tenant {tenant} does not allow node {to} (spec.allowed_nodes)"),
        ));
    }
    if !objs.nodes.contains_key(to) {
        return Err(ApiError::invalid(
            "spec.node",
            format!("node {to:?} does not exist"),
        ));
    }
    if let Some(vol) = vol {
        if vol
            .metadata
            .as_ref()
            .is_some_and(|m| m.deletion_timestamp.is_some())
        {
            return Err(ApiError::FailedPrecondition(format!(
                "volume {volume:?} is being deleted; its attachment cannot move"
            )));
        }
        crate::expiry::check_attachable(vol, s.clock.now())?;
    }
    check_access(id, &objs, cur, to)
}

/// Deletes an attachment, retrying a conflict when the caller gave no
/// resource_version.
pub async fn delete(s: &Shared, id: &Identity, d: &Delete) -> Result<Attachment, ApiError> {
    retry_unconditional(d.resource_version, || delete_once(s, id, d, false)).await
}

/// One attempt; with `dry_run`, every check and no write.
pub async fn delete_once(
    s: &Shared,
    id: &Identity,
    r: &Delete,
    dry_run: bool,
) -> Result<Attachment, ApiError> {
    let _capacity = s.capacity_gate.read().await;
    let mut cur: Attachment = get_checked(s, id, Action::DeleteAttachment, &r.name)?;
    {
        let objs = s.cache.read();
        authz::check(id, Action::DeleteAttachment, Verb::Write, &cur, &objs)?;
    }
    let rv = expected_rv(&cur, r.resource_version);
    let phase = cur.status.as_ref().map_or(0, |s| s.phase);
    // The planner hands the workstation its connection as soon as the
    // volume's export is ready, whatever the phase says (a Pending
    // attachment to an exported volume may already be connected).
    let export_ready = cur.spec.as_ref().is_some_and(|spec| {
        s.cache
            .read()
            .volumes
            .get(&spec.volume)
            .and_then(|v| v.status.as_ref())
            .is_some_and(|st| st.export_ready)
    });
    // Once the workstation was told to connect, it must confirm the
    // disconnect before the host is revoked on the export (revoking
    // first cuts a live connection: the workstation's disconnect then
    // waits for a controller that is gone).
    if phase == AttachmentPhase::Connecting as i32
        || phase == AttachmentPhase::Attached as i32
        || export_ready
    {
        if !cur
            .meta()
            .is_some_and(|m| m.finalizers.iter().any(|f| f == FINALIZER_DETACH))
        {
            cur.meta_mut().finalizers.push(FINALIZER_DETACH.into());
        }
        if let Some(st) = cur.status.as_mut() {
            st.phase = AttachmentPhase::Detaching as i32;
        }
    } else {
        cur.meta_mut().finalizers.retain(|f| f != FINALIZER_DETACH);
    }
    if dry_run {
        return Ok(cur);
    }
    delete_or_mark(s, cur, rv).await
}

/// Records the revision `rv` of the write that released the previous
/// holder of attachment `name`, which the storage node's desired state
/// must reach before its report can prove the fence. A separate write: a
/// write cannot know its own revision. When that node has no host NQN,
/// nothing can be revoked and the fence ends here.
pub async fn stamp_fence(s: &Shared, name: &str, rv: u64) -> Result<(), ApiError> {
    s.modify::<Attachment>(name, |a, objs| {
        let Some(st) = a.status.as_mut() else {
            return false;
        };
        if st.moved_from_node.is_empty() || !st.moved_from_released || st.fence_revision != 0 {
            return false;
        }
        if access::host_of(objs, &st.moved_from_node).is_none() {
            st.moved_from_node.clear();
            st.moved_from_released = false;
            st.move_revision = 0;
        } else {
            st.fence_revision = rv;
        }
        true
    })
    .await
    .map(drop)
}

/// Records `rv`, the revision of the write that moved attachment `name`,
/// so that only a report of the old node made against a desired state at
/// least that new (one that no longer lists the attachment) releases it.
pub async fn stamp_move(s: &Shared, name: &str, rv: u64) -> Result<(), ApiError> {
    s.modify::<Attachment>(name, |a, _| {
        let Some(st) = a.status.as_mut() else {
            return false;
        };
        if st.moved_from_node.is_empty() || st.move_revision != 0 {
            return false;
        }
        st.move_revision = rv;
        true
    })
    .await
    .map(drop)
}

/// Refuses attachment `a` on `node` when another node holds its volume in
/// an incompatible access mode (see [`crate::access`]).
fn check_access(id: &Identity, objs: &Objects, a: &Attachment, node: &str) -> Result<(), ApiError> {
    let volume = a.spec.as_ref().map_or("", |s| s.volume.as_str());
    match access::conflict(objs, volume, node, access::mode_of(a), a.name()) {
        Some(holder) => Err(ApiError::FailedPrecondition(access::conflict_message(
            id, volume, node, holder,
        ))),
        None => Ok(()),
    }
}

/// Starts (or forces) the fence of a move away from `from`: the new node
/// waits for the storage node to prove `from`'s host revoked. A second
/// move before the fence completed keeps the first holder (the node in
/// between never connected); a move back to it cancels the fence. Without
/// `fence` (readers, clustered writers) the move only resets the phase:
/// the status must not keep saying "attached" about the old node.
fn mark_move(
    a: &mut Attachment,
    from: &str,
    force: bool,
    fence: bool,
    now: prost_types::Timestamp,
) {
    let to = a.spec.as_ref().map_or(String::new(), |s| s.node.clone());
    let generation = a.metadata.as_ref().map_or(0, |m| m.generation);
    let st = a.status.get_or_insert_with(Default::default);
    if from != to {
        st.phase = AttachmentPhase::Pending as i32;
        st.device_path.clear();
    }
    if !fence {
        return;
    }
    if st.moved_from_node.is_empty() && from != to {
        st.moved_from_node = from.to_string();
        st.moved_from_released = false;
        st.fence_revision = 0;
        st.move_revision = 0;
    }
    if st.moved_from_node == to {
        st.moved_from_node.clear();
        st.moved_from_released = false;
        st.fence_revision = 0;
        st.move_revision = 0;
    }
    if force && !st.moved_from_node.is_empty() {
        st.moved_from_released = true;
    }
    if st.moved_from_node.is_empty() {
        return;
    }
    st.phase = AttachmentPhase::Pending as i32;
    st.device_path.clear();
    let how = if st.moved_from_released {
        "revoking its host on the storage node"
    } else {
        "waiting for it to disconnect"
    };
    let msg = format!("moving from {}: {how}", st.moved_from_node);
    set_condition(
        &mut st.conditions,
        condition("Connected", false, "Moving", msg, now, generation),
    );
}

/// Whether tenant `tenant` lets `node` attach its volumes.
fn tenant_allows(objs: &Objects, tenant: &str, node: &str) -> bool {
    objs.tenants
        .get(tenant)
        .and_then(|t| t.spec.as_ref())
        .is_some_and(|t| t.allowed_nodes.iter().any(|n| n == node))
}

/// Whether `id` may name volume `v` in an attachment: an admin, the
/// volume's tenant, or a node that tenant allows (nodes attach volumes
/// granted to them without being able to read them).
fn volume_visible(id: &Identity, v: &Volume, objs: &Objects) -> bool {
    let tenant = v.spec.as_ref().map_or("", |s| s.tenant.as_str());
    match id {
        Identity::Admin => true,
        Identity::Tenant(t) => t == tenant,
        Identity::Node(n) => tenant_allows(objs, tenant, n),
    }
}

/// The refusal for a volume that does not exist or that the caller may not
/// use: one message for both, so it reveals neither existence nor owner.
fn missing_volume(id: &Identity, name: &str) -> ApiError {
    let why = match id {
        Identity::Node(n) => {
            format!("volume {name:?} does not exist or is not granted to node {n}")
        }
        _ => format!("volume {name:?} does not exist"),
    };
    ApiError::invalid("spec.volume", why)
}
