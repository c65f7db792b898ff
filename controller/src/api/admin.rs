//! AdminService: typed CRUD and watch per kind, Apply, bootstrap tokens and
//! desired-state inspection.

use std::sync::Arc;

use ferrofab_proto::v1::{self as pb, admin_service_server::AdminService, *};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use super::{identity, merge_update, new_meta, Shared};
use crate::access;
use crate::apply;
use crate::authz::{self, Owned, Verb};
use crate::cache::{decode, Objects, Stored};
use crate::error::ApiError;
use crate::identity::Identity;
use crate::placement::{Request as Placement, Settles};
use crate::resource::{
    kind_name, parse_size, prefix, validate_name, validate_nqn, Resource, Selector,
    FINALIZER_DETACH, FINALIZER_EXPORT,
};
use crate::store::{Event, EventKind};
use crate::{enroll, planner};
use ferrofab_nvmeof_wire::units::format_size;

/// NQN prefix of every volume's subsystem; the rest is the volume uid, so
/// the NQN never changes for the life of the volume.
pub const VOLUME_NQN_PREFIX: &str = "nqn.2024-01.io.ferrofab:volume:";

pub struct Admin {
    pub s: Arc<Shared>,
}

type WatchStream = ReceiverStream<Result<WatchEvent, Status>>;

// ------------------------------------------------------------ generic ops

/// Reads an object the caller may read. A missing object and one the
/// caller may not read give the same NOT_FOUND ([`authz::hidden`]), so no
/// RPC that starts here tells a tenant what other tenants have.
fn get_checked<R: Stored + Owned>(
    s: &Shared,
    id: &Identity,
    action: &str,
    name: &str,
) -> Result<R, ApiError> {
    let objs = s.cache.read();
    let obj = R::map(&objs).get(name).cloned();
    match obj {
        Some(o) => {
            authz::check(id, action, Verb::Read, &o, &objs)?;
            Ok(o)
        }
        None => Err(authz::hidden(R::KIND, name)),
    }
}

fn list_checked<R: Stored + Owned>(
    s: &Shared,
    id: &Identity,
    selector: &str,
) -> Result<(Vec<R>, u64), ApiError> {
    let sel = Selector::parse(selector)?;
    let objs = s.cache.read();
    let items = R::map(&objs)
        .values()
        .filter(|o| sel.matches_meta(o.meta()))
        .filter(|o| authz::allowed(id, Verb::Read, &o.owners(&objs)))
        .cloned()
        .collect();
    Ok((items, objs.revision))
}

fn event_type(ev: &Event) -> EventType {
    match ev.kind {
        EventKind::Delete => EventType::Deleted,
        EventKind::Put if ev.kv.create_revision == ev.kv.mod_revision => EventType::Added,
        EventKind::Put => EventType::Modified,
    }
}

/// Streams events of kind R: a snapshot first when from_revision is 0,
/// then every committed change in revision order.
fn watch<R: Stored + Owned>(
    s: &Arc<Shared>,
    id: Identity,
    req: WatchRequest,
) -> Result<WatchStream, ApiError> {
    let sel = Selector::parse(&req.label_selector)?;
    let (tx, rx) = mpsc::channel(256);
    let mut snapshot = Vec::new();
    let from = if req.from_revision == 0 {
        let objs = s.cache.read();
        for o in R::map(&objs).values() {
            if sel.matches_meta(o.meta()) && authz::allowed(&id, Verb::Read, &o.owners(&objs)) {
                snapshot.push(WatchEvent {
                    r#type: EventType::Added as i32,
                    revision: o.meta().map_or(0, |m| m.resource_version),
                    object: Some(o.clone().into_event_object()),
                });
            }
        }
        snapshot.push(WatchEvent {
            r#type: EventType::Synced as i32,
            revision: objs.revision,
            object: None,
        });
        objs.revision
    } else {
        req.from_revision
    };
    let permit = s.watches.acquire(&id.to_string()).map_err(|e| {
        s.metrics.watches_refused.inc();
        ApiError::Exhausted(e.to_string())
    })?;
    let mut stream = s.store.watch(prefix(R::KIND), from)?;
    let shared = s.clone();
    shared.metrics.watchers.inc();
    tokio::spawn(async move {
        let _guard = shared.metrics.watch_guard();
        let _permit = permit;
        for ev in snapshot {
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
        let backlog = std::mem::take(&mut stream.backlog);
        for ev in backlog {
            if !forward::<R>(&shared, &id, &sel, &ev, &tx).await {
                return;
            }
        }
        // The last revision delivered whole: a watcher cut off in the
        // middle of a multi-key transaction must resume before it.
        let mut last = from;
        let mut stopping = shared.stopping.clone();
        while let Some(ev) = crate::watch::next_live(&mut stream.live, &tx, &mut stopping).await {
            last = if ev.batch_end {
                ev.revision
            } else {
                ev.revision.saturating_sub(1)
            };
            if !forward::<R>(&shared, &id, &sel, &ev, &tx).await {
                return;
            }
        }
        if stream.lagged.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = tx
                .send(Err(Status::resource_exhausted(format!(
                    "watch fell behind; resume with from_revision={last}"
                ))))
                .await;
        }
    });
    Ok(ReceiverStream::new(rx))
}

async fn forward<R: Stored + Owned>(
    s: &Shared,
    id: &Identity,
    sel: &Selector,
    ev: &Event,
    tx: &mpsc::Sender<Result<WatchEvent, Status>>,
) -> bool {
    let Some(obj) = decode::<R>(&ev.kv) else {
        return true;
    };
    let visible = sel.matches_meta(obj.meta())
        && authz::allowed(id, Verb::Read, &obj.owners(&s.cache.read()));
    if !visible {
        return true;
    }
    s.metrics.observe_watch_lag(ev.revision, s.store.revision());
    let out = WatchEvent {
        r#type: event_type(ev) as i32,
        revision: ev.revision,
        object: Some(obj.into_event_object()),
    };
    tx.send(Ok(out)).await.is_ok()
}

/// Deletes now if no finalizer holds the object, else marks it deleting.
async fn delete_or_mark<R: Stored>(s: &Shared, mut obj: R, rv: u64) -> Result<R, ApiError> {
    let name = obj.name().to_string();
    if obj.meta().is_none_or(|m| m.finalizers.is_empty()) {
        s.remove::<R>(&name, rv).await?;
        return Ok(obj);
    }
    if obj.meta().is_some_and(|m| m.deletion_timestamp.is_some()) {
        return Ok(obj);
    }
    obj.meta_mut().deletion_timestamp = Some(s.clock.now_ts());
    s.put(obj, rv).await
}

/// How often a request without a resource_version is retried when a
/// status write (an agent's report) lands between its read and its write.
const UNCONDITIONAL_RETRIES: usize = 16;

/// Runs `attempt` again on a conflict when the caller gave no
/// resource_version: the caller asked for "delete whatever is current", so
/// a concurrent status update is no reason to fail. With a version the
/// conflict is the answer the caller asked for.
async fn retry_unconditional<T, F, Fut>(given: u64, mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(ApiError::Conflict { .. }) if given == 0 && tries < UNCONDITIONAL_RETRIES => {
                tries += 1;
            }
            other => return other,
        }
    }
}

fn expected_rv<R: Resource>(obj: &R, given: u64) -> u64 {
    if given == 0 {
        obj.meta().map_or(0, |m| m.resource_version)
    } else {
        given
    }
}

// ------------------------------------------------------------ validation

fn validate_node(s: &Shared, n: &Node) -> Result<(), ApiError> {
    let spec = n.spec.clone().unwrap_or_default();
    if !spec.host_nqn.is_empty() {
        validate_nqn("spec.host_nqn", &spec.host_nqn)?;
    }
    for (i, a) in spec.data_addresses.iter().enumerate() {
        if a.address.is_empty() || a.port > 65535 {
            return Err(ApiError::invalid(
                &format!("spec.data_addresses[{i}]"),
                "needs an address and a port below 65536",
            ));
        }
    }
    crate::validate::check_node_unique(&s.cache.read(), n.name(), &spec)
        .inspect_err(|_| s.metrics.refused("node_identity"))
}

fn validate_pool(s: &Shared, p: &Pool) -> Result<(), ApiError> {
    let spec = p.spec.clone().unwrap_or_default();
    validate_name("spec.node", &spec.node)?;
    if !s.cache.read().nodes.contains_key(&spec.node) {
        return Err(ApiError::invalid(
            "spec.node",
            format!("node {:?} does not exist", spec.node),
        ));
    }
    let b = spec.backing.unwrap_or_default();
    if b.kind == BackingKind::Unspecified as i32 || BackingKind::try_from(b.kind).is_err() {
        return Err(ApiError::invalid(
            "spec.backing.kind",
            "must be DIRECTORY or BLOCK_DEVICE",
        ));
    }
    crate::validate::validate_pool_path("spec.backing.path", &b.path)
        .inspect_err(|_| s.metrics.refused("pool_path"))?;
    parse_size("spec.capacity", &spec.capacity)?;
    if !(spec.overcommit_ratio == 0.0 || (1.0..=100.0).contains(&spec.overcommit_ratio)) {
        return Err(ApiError::invalid(
            "spec.overcommit_ratio",
            "must be between 1.0 and 100 (0 means 1.0)",
        ));
    }
    Ok(())
}

fn validate_tenant(t: &Tenant) -> Result<(), ApiError> {
    let spec = t.spec.clone().unwrap_or_default();
    if !spec.capacity_quota.is_empty() {
        parse_size("spec.capacity_quota", &spec.capacity_quota)?;
    }
    for (i, n) in spec.allowed_nodes.iter().enumerate() {
        validate_name(&format!("spec.allowed_nodes[{i}]"), n)?;
    }
    Ok(())
}

fn validate_volume_spec(spec: &VolumeSpec) -> Result<u64, ApiError> {
    validate_name("spec.tenant", &spec.tenant)?;
    let bytes = parse_size("spec.size", &spec.size)?;
    if ferrofab_proto::v1::ExpiryAction::try_from(spec.expiry_action).is_err() {
        return Err(ApiError::invalid(
            "spec.expiry_action",
            format!("unknown value {} (retain or delete)", spec.expiry_action),
        ));
    }
    if ![0, 512, 4096].contains(&spec.block_size) {
        return Err(ApiError::invalid("spec.block_size", "must be 512 or 4096"));
    }
    let bs = if spec.block_size == 0 {
        4096
    } else {
        spec.block_size
    };
    if bytes % u64::from(bs) != 0 {
        return Err(ApiError::invalid(
            "spec.size",
            format!(
                "{} is not a multiple of the block size {bs}",
                format_size(bytes)
            ),
        ));
    }
    let has_sel = spec
        .pool_selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty());
    if !spec.pool.is_empty() && has_sel {
        return Err(ApiError::invalid(
            "spec.pool",
            "give either pool or pool_selector, not both",
        ));
    }
    if !spec.pool.is_empty() {
        validate_name("spec.pool", &spec.pool)?;
    }
    Ok(bytes)
}

/// Stable NVMe identity derived from the volume uid.
fn identity_status(uid: &str) -> VolumeStatus {
    let u = uuid::Uuid::parse_str(uid).unwrap_or_else(|_| uuid::Uuid::new_v4());
    let simple = u.simple().to_string();
    VolumeStatus {
        uuid: u.to_string(),
        nguid: simple.clone(),
        serial: simple[..20].to_string(),
        subsystem_nqn: format!("{VOLUME_NQN_PREFIX}{u}"),
        ..Default::default()
    }
}

fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: prost_types::Timestamp,
    generation: u64,
) -> Condition {
    Condition {
        r#type: kind.into(),
        status: if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        } as i32,
        reason: reason.into(),
        message,
        last_transition_time: Some(now),
        severity: Severity::Info as i32,
        observed_generation: generation,
    }
}

/// Sets a condition, keeping last_transition_time when the status holds.
pub fn set_condition(conds: &mut Vec<Condition>, mut c: Condition) {
    if let Some(old) = conds.iter_mut().find(|o| o.r#type == c.r#type) {
        if old.status == c.status {
            c.last_transition_time = old.last_transition_time;
        }
        *old = c;
    } else {
        conds.push(c);
    }
}

// ------------------------------------------------------------ per-kind writes

impl Admin {
    /// Creates a volume. With `dry_run`, runs every check (validation,
    /// authorization, placement, quotas) and returns the volume as it would
    /// be stored, without storing it (its uid and identity are not final).
    pub(crate) async fn create_volume_inner(
        &self,
        id: &Identity,
        v: Volume,
        dry_run: bool,
    ) -> Result<Volume, ApiError> {
        let _capacity = self.s.capacity_gate.read().await;
        let s = &self.s;
        let spec = v.spec.clone().unwrap_or_default();
        let meta = new_meta(v.metadata.as_ref(), s.clock.now_ts())?;
        let bytes = validate_volume_spec(&spec)?;
        let mut vol = Volume {
            metadata: Some(meta),
            spec: Some(spec.clone()),
            status: None,
        };
        let reserved = {
            let objs = s.cache.read();
            authz::check_new(id, "CreateVolume", &vol, &objs)?;
            let req = Placement {
                tenant: spec.tenant.clone(),
                bytes,
                pool: (!spec.pool.is_empty()).then(|| spec.pool.clone()),
                selector: spec
                    .pool_selector
                    .as_ref()
                    .map(|s| Selector::from_match_labels(&s.match_labels))
                    .unwrap_or_default(),
                new_volume: true,
                detail: *id == Identity::Admin,
                settles: Some(Settles {
                    volume: vol.name().to_string(),
                    uid: vol
                        .metadata
                        .as_ref()
                        .map_or(String::new(), |m| m.uid.clone()),
                    size_bytes: bytes,
                }),
            };
            s.allocator.reserve(&objs, &req)?
        };
        let (node, base) = {
            let objs = s.cache.read();
            let p = objs
                .pools
                .get(&reserved.pool)
                .and_then(|p| p.spec.clone())
                .unwrap_or_default();
            (p.node, p.backing.unwrap_or_default().path)
        };
        let now = s.clock.now_ts();
        let m = vol.meta_mut();
        m.finalizers.push(FINALIZER_EXPORT.into());
        let uid = m.uid.clone();
        let mut st = identity_status(&uid);
        st.pool = reserved.pool.clone();
        st.node = node.clone();
        st.size_bytes = bytes;
        st.backing_path = format!("{}/{}", base.trim_end_matches('/'), uid);
        st.phase = VolumePhase::Placed as i32;
        st.observed_generation = 1;
        st.conditions.push(condition(
            "Placed",
            true,
            "PlacedOnPool",
            format!("placed on pool {} of node {node}", reserved.pool),
            now,
            1,
        ));
        st.conditions.push(condition(
            "Exported",
            false,
            "WaitingForStorageNode",
            format!("waiting for node {node} to report the export ready"),
            now,
            1,
        ));
        vol.status = Some(st);
        if dry_run {
            return Ok(vol);
        }
        let out = s.put(vol, 0).await;
        drop(reserved);
        let out = out?;
        info!(volume = %out.name(), pool = %out.status.as_ref().map_or("", |s| s.pool.as_str()), "volume created");
        Ok(out)
    }

    /// Updates a volume; `dry_run` as for [`Self::create_volume_inner`].
    pub(crate) async fn update_volume_inner(
        &self,
        id: &Identity,
        v: Volume,
        dry_run: bool,
    ) -> Result<Volume, ApiError> {
        let _capacity = self.s.capacity_gate.read().await;
        let s = &self.s;
        let name = v.name().to_string();
        let cur: Volume = get_checked(s, id, "UpdateVolume", &name)?;
        {
            let objs = s.cache.read();
            authz::check(id, "UpdateVolume", Verb::Write, &cur, &objs)?;
        }
        let old = cur.spec.clone().unwrap_or_default();
        let new = v.spec.clone().unwrap_or_default();
        let new_bytes = validate_volume_spec(&new)?;
        for (field, same) in [
            ("spec.tenant", old.tenant == new.tenant),
            ("spec.block_size", old.block_size == new.block_size),
            ("spec.pool", old.pool == new.pool),
            (
                "spec.pool_selector",
                old.pool_selector.unwrap_or_default()
                    == new.pool_selector.clone().unwrap_or_default(),
            ),
        ] {
            if !same {
                return Err(ApiError::invalid(field, "is immutable after creation"));
            }
        }
        check_expiry_change(id, &name, old.expires_at.as_ref(), new.expires_at.as_ref())?;
        let old_bytes = cur.status.as_ref().map_or(0, |s| s.size_bytes);
        if new_bytes < old_bytes {
            return Err(ApiError::FailedPrecondition(format!(
                "volume {name:?} cannot shrink from {} to {}: volumes only grow (shrinking would destroy data past the new end)",
                format_size(old_bytes),
                format_size(new_bytes)
            )));
        }
        let (mut merged, rv) = merge_update(&cur, v)?;
        let _reserved = if new_bytes > old_bytes {
            let objs = s.cache.read();
            let req = Placement {
                tenant: old.tenant.clone(),
                bytes: new_bytes - old_bytes,
                pool: cur.status.as_ref().map(|s| s.pool.clone()),
                selector: Selector::default(),
                new_volume: false,
                detail: *id == Identity::Admin,
                settles: Some(Settles {
                    volume: name.clone(),
                    uid: cur
                        .metadata
                        .as_ref()
                        .map_or(String::new(), |m| m.uid.clone()),
                    size_bytes: new_bytes,
                }),
            };
            Some(s.allocator.reserve(&objs, &req)?)
        } else {
            None
        };
        if let Some(st) = merged.status.as_mut() {
            st.size_bytes = new_bytes;
        }
        // An extension shows at once (the Expired condition goes), not
        // only at the expiry reconciler's next pass.
        let now = s.clock.now();
        let expiry = crate::expiry::state(&merged, now, (&s.expiry).into());
        crate::expiry::apply_state(&mut merged, &expiry, now);
        if dry_run {
            return Ok(merged);
        }
        s.put(merged, rv).await
    }

    pub(crate) async fn delete_volume_inner(
        &self,
        id: &Identity,
        r: DeleteVolumeRequest,
    ) -> Result<Volume, ApiError> {
        retry_unconditional(r.resource_version, || {
            self.delete_volume_once(id, &r, false)
        })
        .await
    }

    /// One attempt; with `dry_run`, every check and no write.
    pub(crate) async fn delete_volume_once(
        &self,
        id: &Identity,
        r: &DeleteVolumeRequest,
        dry_run: bool,
    ) -> Result<Volume, ApiError> {
        let _capacity = self.s.capacity_gate.read().await;
        let s = &self.s;
        let cur: Volume = get_checked(s, id, "DeleteVolume", &r.name)?;
        let attached: Vec<String> = {
            let objs = s.cache.read();
            authz::check(id, "DeleteVolume", Verb::Write, &cur, &objs)?;
            objs.attachments_of(&r.name)
                .map(|a| a.name().to_string())
                .collect()
        };
        if !attached.is_empty() {
            return Err(ApiError::FailedPrecondition(format!(
                "volume {:?} is attached (attachments: {}); delete those attachments first",
                r.name,
                attached.join(", ")
            )));
        }
        let mut cur = cur;
        let rv = expected_rv(&cur, r.resource_version);
        // Never exported: there is nothing on the storage node to tear down.
        if !cur.status.as_ref().is_some_and(|s| s.export_ready) {
            cur.meta_mut().finalizers.retain(|f| f != FINALIZER_EXPORT);
        }
        if let Some(st) = cur.status.as_mut() {
            st.phase = VolumePhase::Deleting as i32;
        }
        if dry_run {
            return Ok(cur);
        }
        delete_or_mark(s, cur, rv).await
    }

    /// Creates an attachment; with `dry_run`, every check and no write.
    pub(crate) async fn create_attachment_inner(
        &self,
        id: &Identity,
        a: Attachment,
        dry_run: bool,
    ) -> Result<Attachment, ApiError> {
        let _capacity = self.s.capacity_gate.read().await;
        let s = &self.s;
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
            authz::check_new(id, "CreateAttachment", &att, &objs)?;
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
    pub(crate) async fn update_attachment_inner(
        &self,
        id: &Identity,
        a: Attachment,
        dry_run: bool,
        force: bool,
    ) -> Result<Attachment, ApiError> {
        let _capacity = self.s.capacity_gate.read().await;
        let s = &self.s;
        let cur: Attachment = get_checked(s, id, "UpdateAttachment", a.name())?;
        authz::check(id, "UpdateAttachment", Verb::Write, &cur, &s.cache.read())?;
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
            self.check_move(id, &cur, &new.node)?;
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
            access::stamp_move(s, stored.name(), move_rv).await?;
            get_checked(s, id, "UpdateAttachment", stored.name())?
        } else {
            stored
        };
        let forced = stored
            .status
            .as_ref()
            .is_some_and(|st| st.moved_from_released && st.fence_revision == 0);
        if forced {
            access::stamp_fence(s, stored.name(), move_rv).await?;
            return get_checked(s, id, "UpdateAttachment", stored.name());
        }
        Ok(stored)
    }

    /// The checks of a creation, for the node an attachment moves to.
    fn check_move(&self, id: &Identity, cur: &Attachment, to: &str) -> Result<(), ApiError> {
        let objs = self.s.cache.read();
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
        authz::check_new(id, "UpdateAttachment", &moved, &objs)?;
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
            crate::expiry::check_attachable(vol, self.s.clock.now())?;
        }
        check_access(id, &objs, cur, to)
    }

    pub(crate) async fn delete_attachment_inner(
        &self,
        id: &Identity,
        r: DeleteAttachmentRequest,
    ) -> Result<Attachment, ApiError> {
        retry_unconditional(r.resource_version, || {
            self.delete_attachment_once(id, &r, false)
        })
        .await
    }

    /// One attempt; with `dry_run`, every check and no write.
    pub(crate) async fn delete_attachment_once(
        &self,
        id: &Identity,
        r: &DeleteAttachmentRequest,
        dry_run: bool,
    ) -> Result<Attachment, ApiError> {
        let _capacity = self.s.capacity_gate.read().await;
        let s = &self.s;
        let mut cur: Attachment = get_checked(s, id, "DeleteAttachment", &r.name)?;
        {
            let objs = s.cache.read();
            authz::check(id, "DeleteAttachment", Verb::Write, &cur, &objs)?;
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

    // ---------------- nodes, pools, tenants (administrators only)

    /// Creates a node; with `dry_run`, every check and no write.
    pub(crate) async fn create_node_inner(
        &self,
        id: &Identity,
        n: Node,
        dry_run: bool,
    ) -> Result<Node, ApiError> {
        let _capacity = self.s.capacity_gate.read().await;
        authz::admin_only(id, "CreateNode")?;
        validate_node(&self.s, &n)?;
        self.create_simple(n, dry_run).await
    }

    pub(crate) async fn update_node_inner(
        &self,
        id: &Identity,
        n: Node,
        dry_run: bool,
    ) -> Result<Node, ApiError> {
        let _capacity = self.s.capacity_gate.read().await;
        authz::admin_only(id, "UpdateNode")?;
        validate_node(&self.s, &n)?;
        self.update_simple(n, dry_run).await
    }

    pub(crate) async fn create_pool_inner(
        &self,
        id: &Identity,
        p: Pool,
        dry_run: bool,
    ) -> Result<Pool, ApiError> {
        let _capacity = self.s.capacity_gate.read().await;
        authz::admin_only(id, "CreatePool")?;
        validate_pool(&self.s, &p)?;
        let p = self.create_simple(p, dry_run).await?;
        Ok(self.with_pool_status(p))
    }

    /// Updates a pool. Its node and backing are immutable: moving them
    /// would leave every volume's data behind (and Apply once moved a pool
    /// to another node and a path under /etc this way).
    pub(crate) async fn update_pool_inner(
        &self,
        id: &Identity,
        p: Pool,
        dry_run: bool,
    ) -> Result<Pool, ApiError> {
        let _capacity = self.s.capacity_gate.read().await;
        authz::admin_only(id, "UpdatePool")?;
        validate_pool(&self.s, &p)?;
        let cur: Pool = self.s.get(p.name())?;
        let old = cur.spec.clone().unwrap_or_default();
        let new = p.spec.clone().unwrap_or_default();
        for (field, same) in [
            ("spec.node", old.node == new.node),
            ("spec.backing", old.backing == new.backing),
        ] {
            if !same {
                return Err(ApiError::invalid(
                    field,
                    "a pool's node and backing are immutable",
                ));
            }
        }
        let p = self.update_simple(p, dry_run).await?;
        Ok(self.with_pool_status(p))
    }

    pub(crate) async fn create_tenant_inner(
        &self,
        id: &Identity,
        t: Tenant,
        dry_run: bool,
    ) -> Result<Tenant, ApiError> {
        let _capacity = self.s.capacity_gate.read().await;
        authz::admin_only(id, "CreateTenant")?;
        validate_tenant(&t)?;
        let t = self.create_simple(t, dry_run).await?;
        Ok(self.with_tenant_status(t))
    }

    pub(crate) async fn update_tenant_inner(
        &self,
        id: &Identity,
        t: Tenant,
        dry_run: bool,
    ) -> Result<Tenant, ApiError> {
        let _capacity = self.s.capacity_gate.read().await;
        authz::admin_only(id, "UpdateTenant")?;
        validate_tenant(&t)?;
        let t = self.update_simple(t, dry_run).await?;
        Ok(self.with_tenant_status(t))
    }

    /// Deletes a node, pool or tenant unless other objects still use it;
    /// with `dry_run`, every check and no write.
    pub(crate) async fn delete_admin_kind<R: Stored + Owned>(
        &self,
        id: &Identity,
        name: &str,
        rv: u64,
        dry_run: bool,
    ) -> Result<R, ApiError> {
        let _capacity = self.s.capacity_gate.read().await;
        authz::admin_only(id, delete_action(R::KIND))?;
        let cur: R = self.s.get(name)?;
        let users = self.users_of(R::KIND, name);
        if !users.is_empty() {
            return Err(ApiError::FailedPrecondition(format!(
                "{} {name:?} is still in use by {}",
                kind_name(R::KIND),
                users.join(", ")
            )));
        }
        if dry_run {
            return Ok(cur);
        }
        let rv = expected_rv(&cur, rv);
        delete_or_mark(&self.s, cur, rv).await
    }

    /// Stores a new object of an admin-only kind (the caller has been
    /// authorized and the object validated).
    async fn create_simple<R: Stored + Owned>(&self, obj: R, dry_run: bool) -> Result<R, ApiError> {
        let s = &self.s;
        let meta = new_meta(obj.meta(), s.clock.now_ts())?;
        let mut obj = obj;
        obj.clear_status();
        *obj.meta_mut() = meta;
        if dry_run {
            return Ok(obj);
        }
        s.put(obj, 0).await
    }

    /// Merges an update into an object of an admin-only kind (the caller
    /// has been authorized and the object validated).
    async fn update_simple<R: Stored + Owned>(&self, obj: R, dry_run: bool) -> Result<R, ApiError> {
        let cur: R = self.s.get(obj.name())?;
        let (merged, rv) = merge_update(&cur, obj)?;
        if dry_run {
            return Ok(merged);
        }
        self.s.put(merged, rv).await
    }

    /// One page of a List within the message limit (see [`crate::validate::page`]).
    fn page<R: Resource>(
        &self,
        items: Vec<R>,
        page_size: u32,
        token: &str,
    ) -> Result<(Vec<R>, String), ApiError> {
        crate::validate::page(items, page_size, token, self.s.limits.page_budget())
            .inspect_err(|_| self.s.metrics.refused("list_size"))
    }

    fn users_of(&self, kind: Kind, name: &str) -> Vec<String> {
        let objs = self.s.cache.read();
        let mut out = Vec::new();
        match kind {
            Kind::Node => {
                out.extend(
                    objs.pools
                        .values()
                        .filter(|p| p.spec.as_ref().is_some_and(|s| s.node == name))
                        .map(|p| format!("pool {}", p.name())),
                );
                out.extend(
                    objs.attachments
                        .values()
                        .filter(|a| a.spec.as_ref().is_some_and(|s| s.node == name))
                        .map(|a| format!("attachment {}", a.name())),
                );
            }
            Kind::Pool => out.extend(
                objs.volumes
                    .values()
                    .filter(|v| v.status.as_ref().is_some_and(|s| s.pool == name))
                    .map(|v| format!("volume {}", v.name())),
            ),
            Kind::Tenant => out.extend(
                objs.volumes
                    .values()
                    .filter(|v| v.spec.as_ref().is_some_and(|s| s.tenant == name))
                    .map(|v| format!("volume {}", v.name())),
            ),
            _ => {}
        }
        out
    }

    /// Fills in computed status for pools and tenants (usage lives in the
    /// cache's aggregates, not in the stored object).
    fn with_pool_status(&self, mut p: Pool) -> Pool {
        let objs = self.s.cache.read();
        let u = objs.pool_usage(p.name());
        let limit = crate::placement::pool_limit(&p).unwrap_or(0);
        let cap = p
            .spec
            .as_ref()
            .and_then(|s| parse_size("", &s.capacity).ok())
            .unwrap_or(0);
        let st = p.status.get_or_insert_with(Default::default);
        st.capacity_bytes = cap;
        st.allocated_bytes = u.bytes;
        st.free_bytes = limit.saturating_sub(u.bytes);
        st.volume_count = u.volumes;
        st.observed_generation = p.metadata.as_ref().map_or(0, |m| m.generation);
        p
    }

    fn with_tenant_status(&self, mut t: Tenant) -> Tenant {
        let u = self.s.cache.read().tenant_usage(t.name());
        let st = t.status.get_or_insert_with(Default::default);
        st.used_bytes = u.bytes;
        st.volume_count = u.volumes;
        st.observed_generation = t.metadata.as_ref().map_or(0, |m| m.generation);
        t
    }
}

/// The RPC name of deleting an object of `kind`, for refusals.
fn delete_action(kind: Kind) -> &'static str {
    match kind {
        Kind::Node => "DeleteNode",
        Kind::Pool => "DeletePool",
        Kind::Tenant => "DeleteTenant",
        Kind::Volume => "DeleteVolume",
        Kind::Attachment => "DeleteAttachment",
        Kind::Unspecified => "Delete",
    }
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

/// Who may change a volume's `spec.expires_at`. An expiry is how an
/// administrator grants burst capacity for a limited time, so a tenant
/// must not escape it: only an admin may remove or postpone it. A tenant
/// may bring it forward, or put one on a volume that had none, which
/// restricts nobody but itself.
fn check_expiry_change(
    id: &Identity,
    volume: &str,
    old: Option<&prost_types::Timestamp>,
    new: Option<&prost_types::Timestamp>,
) -> Result<(), ApiError> {
    if *id == Identity::Admin {
        return Ok(());
    }
    let at = |t: &prost_types::Timestamp| (t.seconds, t.nanos);
    let reason = match (old, new) {
        (Some(_), None) => "only an administrator may remove spec.expires_at",
        (Some(o), Some(n)) if at(n) > at(o) => {
            "only an administrator may postpone spec.expires_at; a tenant may only bring it forward"
        }
        _ => return Ok(()),
    };
    Err(authz::deny(
        id,
        &format!("UpdateVolume volume {volume:?}"),
        reason,
    ))
}

fn req_obj<T>(o: Option<T>, field: &str) -> Result<T, ApiError> {
    o.ok_or_else(|| ApiError::invalid(field, "is required"))
}

macro_rules! timed {
    ($self:ident, $name:literal, $req:ident, |$id:ident, $body:ident| $e:expr) => {{
        let _t = $self.s.metrics.api_timer($name);
        let $id = identity(&$req)?;
        let $body = $req.into_inner();
        let r: Result<_, ApiError> = async { $e }.await;
        if let Err(e) = &r {
            tracing::debug!(rpc = $name, identity = %$id, error = %e, "request refused");
        }
        Ok(Response::new(r?))
    }};
}

#[tonic::async_trait]
impl AdminService for Admin {
    // ---------------- nodes
    #[instrument(skip_all, fields(rpc = "CreateNode"))]
    async fn create_node(&self, req: Request<CreateNodeRequest>) -> Result<Response<Node>, Status> {
        timed!(self, "CreateNode", req, |id, b| {
            let n = req_obj(b.node, "node")?;
            self.create_node_inner(&id, n, false).await
        })
    }
    async fn get_node(&self, req: Request<GetNodeRequest>) -> Result<Response<Node>, Status> {
        timed!(self, "GetNode", req, |id, b| get_checked(
            &self.s, &id, "GetNode", &b.name
        ))
    }
    async fn list_nodes(
        &self,
        req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        timed!(self, "ListNodes", req, |id, b| {
            let (items, revision) = list_checked(&self.s, &id, &b.label_selector)?;
            let (items, next_page_token) = self.page(items, b.page_size, &b.page_token)?;
            Ok(ListNodesResponse {
                items,
                revision,
                next_page_token,
            })
        })
    }
    async fn update_node(&self, req: Request<UpdateNodeRequest>) -> Result<Response<Node>, Status> {
        timed!(self, "UpdateNode", req, |id, b| {
            let n = req_obj(b.node, "node")?;
            self.update_node_inner(&id, n, false).await
        })
    }
    async fn delete_node(&self, req: Request<DeleteNodeRequest>) -> Result<Response<Node>, Status> {
        timed!(self, "DeleteNode", req, |id, b| self
            .delete_admin_kind(&id, &b.name, b.resource_version, false)
            .await)
    }
    type WatchNodesStream = WatchStream;
    async fn watch_nodes(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        timed!(self, "WatchNodes", req, |id, b| watch::<Node>(
            &self.s,
            id.clone(),
            b
        ))
    }

    // ---------------- pools
    async fn create_pool(&self, req: Request<CreatePoolRequest>) -> Result<Response<Pool>, Status> {
        timed!(self, "CreatePool", req, |id, b| {
            let p = req_obj(b.pool, "pool")?;
            self.create_pool_inner(&id, p, false).await
        })
    }
    async fn get_pool(&self, req: Request<GetPoolRequest>) -> Result<Response<Pool>, Status> {
        timed!(self, "GetPool", req, |id, b| {
            authz::admin_only(&id, "GetPool")?;
            Ok(self.with_pool_status(self.s.get(&b.name)?))
        })
    }
    async fn list_pools(
        &self,
        req: Request<ListPoolsRequest>,
    ) -> Result<Response<ListPoolsResponse>, Status> {
        timed!(self, "ListPools", req, |id, b| {
            authz::admin_only(&id, "ListPools")?;
            let (items, revision) = list_checked::<Pool>(&self.s, &id, &b.label_selector)?;
            let (items, next_page_token) = self.page(items, b.page_size, &b.page_token)?;
            let items = items
                .into_iter()
                .map(|p| self.with_pool_status(p))
                .collect();
            Ok(ListPoolsResponse {
                items,
                revision,
                next_page_token,
            })
        })
    }
    async fn update_pool(&self, req: Request<UpdatePoolRequest>) -> Result<Response<Pool>, Status> {
        timed!(self, "UpdatePool", req, |id, b| {
            let p = req_obj(b.pool, "pool")?;
            self.update_pool_inner(&id, p, false).await
        })
    }
    async fn delete_pool(&self, req: Request<DeletePoolRequest>) -> Result<Response<Pool>, Status> {
        timed!(self, "DeletePool", req, |id, b| self
            .delete_admin_kind(&id, &b.name, b.resource_version, false)
            .await)
    }
    type WatchPoolsStream = WatchStream;
    async fn watch_pools(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        timed!(self, "WatchPools", req, |id, b| {
            authz::admin_only(&id, "WatchPools")?;
            watch::<Pool>(&self.s, id.clone(), b)
        })
    }

    // ---------------- volumes
    #[instrument(skip_all, fields(rpc = "CreateVolume"))]
    async fn create_volume(
        &self,
        req: Request<CreateVolumeRequest>,
    ) -> Result<Response<Volume>, Status> {
        timed!(self, "CreateVolume", req, |id, b| {
            let v = req_obj(b.volume, "volume")?;
            self.create_volume_inner(&id, v, b.dry_run).await
        })
    }
    async fn get_volume(&self, req: Request<GetVolumeRequest>) -> Result<Response<Volume>, Status> {
        timed!(self, "GetVolume", req, |id, b| get_checked(
            &self.s,
            &id,
            "GetVolume",
            &b.name
        ))
    }
    async fn list_volumes(
        &self,
        req: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        timed!(self, "ListVolumes", req, |id, b| {
            let (items, revision) = list_checked(&self.s, &id, &b.label_selector)?;
            let (items, next_page_token) = self.page(items, b.page_size, &b.page_token)?;
            Ok(ListVolumesResponse {
                items,
                revision,
                next_page_token,
            })
        })
    }
    async fn update_volume(
        &self,
        req: Request<UpdateVolumeRequest>,
    ) -> Result<Response<Volume>, Status> {
        timed!(self, "UpdateVolume", req, |id, b| {
            let v = req_obj(b.volume, "volume")?;
            self.update_volume_inner(&id, v, b.dry_run).await
        })
    }
    async fn delete_volume(
        &self,
        req: Request<DeleteVolumeRequest>,
    ) -> Result<Response<Volume>, Status> {
        timed!(self, "DeleteVolume", req, |id, b| self
            .delete_volume_inner(&id, b)
            .await)
    }
    type WatchVolumesStream = WatchStream;
    async fn watch_volumes(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        timed!(self, "WatchVolumes", req, |id, b| watch::<Volume>(
            &self.s,
            id.clone(),
            b
        ))
    }

    // ---------------- attachments
    async fn create_attachment(
        &self,
        req: Request<CreateAttachmentRequest>,
    ) -> Result<Response<Attachment>, Status> {
        timed!(self, "CreateAttachment", req, |id, b| {
            let a = req_obj(b.attachment, "attachment")?;
            self.create_attachment_inner(&id, a, false).await
        })
    }
    async fn get_attachment(
        &self,
        req: Request<GetAttachmentRequest>,
    ) -> Result<Response<Attachment>, Status> {
        timed!(self, "GetAttachment", req, |id, b| get_checked(
            &self.s,
            &id,
            "GetAttachment",
            &b.name
        ))
    }
    async fn list_attachments(
        &self,
        req: Request<ListAttachmentsRequest>,
    ) -> Result<Response<ListAttachmentsResponse>, Status> {
        timed!(self, "ListAttachments", req, |id, b| {
            let (items, revision) = list_checked(&self.s, &id, &b.label_selector)?;
            let (items, next_page_token) = self.page(items, b.page_size, &b.page_token)?;
            Ok(ListAttachmentsResponse {
                items,
                revision,
                next_page_token,
            })
        })
    }
    async fn update_attachment(
        &self,
        req: Request<UpdateAttachmentRequest>,
    ) -> Result<Response<Attachment>, Status> {
        timed!(self, "UpdateAttachment", req, |id, b| {
            let a = req_obj(b.attachment, "attachment")?;
            self.update_attachment_inner(&id, a, false, b.force).await
        })
    }
    async fn delete_attachment(
        &self,
        req: Request<DeleteAttachmentRequest>,
    ) -> Result<Response<Attachment>, Status> {
        timed!(self, "DeleteAttachment", req, |id, b| self
            .delete_attachment_inner(&id, b)
            .await)
    }
    type WatchAttachmentsStream = WatchStream;
    async fn watch_attachments(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        timed!(self, "WatchAttachments", req, |id, b| watch::<Attachment>(
            &self.s,
            id.clone(),
            b
        ))
    }

    // ---------------- tenants
    async fn create_tenant(
        &self,
        req: Request<CreateTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        timed!(self, "CreateTenant", req, |id, b| {
            let t = req_obj(b.tenant, "tenant")?;
            self.create_tenant_inner(&id, t, false).await
        })
    }
    async fn get_tenant(&self, req: Request<GetTenantRequest>) -> Result<Response<Tenant>, Status> {
        timed!(self, "GetTenant", req, |id, b| {
            let t = get_checked(&self.s, &id, "GetTenant", &b.name)?;
            Ok(self.with_tenant_status(t))
        })
    }
    async fn list_tenants(
        &self,
        req: Request<ListTenantsRequest>,
    ) -> Result<Response<ListTenantsResponse>, Status> {
        timed!(self, "ListTenants", req, |id, b| {
            let (items, revision) = list_checked::<Tenant>(&self.s, &id, &b.label_selector)?;
            let (items, next_page_token) = self.page(items, b.page_size, &b.page_token)?;
            let items = items
                .into_iter()
                .map(|t| self.with_tenant_status(t))
                .collect();
            Ok(ListTenantsResponse {
                items,
                revision,
                next_page_token,
            })
        })
    }
    async fn update_tenant(
        &self,
        req: Request<UpdateTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        timed!(self, "UpdateTenant", req, |id, b| {
            let t = req_obj(b.tenant, "tenant")?;
            self.update_tenant_inner(&id, t, false).await
        })
    }
    async fn delete_tenant(
        &self,
        req: Request<DeleteTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        timed!(self, "DeleteTenant", req, |id, b| self
            .delete_admin_kind::<Tenant>(&id, &b.name, b.resource_version, false)
            .await)
    }
    type WatchTenantsStream = WatchStream;
    async fn watch_tenants(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        timed!(self, "WatchTenants", req, |id, b| watch::<Tenant>(
            &self.s,
            id.clone(),
            b
        ))
    }

    // ---------------- the rest
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        timed!(self, "Apply", req, |id, b| {
            authz::admin_only(&id, "Apply")?;
            apply::apply(self, &id, b).await
        })
    }
    async fn create_bootstrap_token(
        &self,
        req: Request<CreateBootstrapTokenRequest>,
    ) -> Result<Response<CreateBootstrapTokenResponse>, Status> {
        timed!(self, "CreateBootstrapToken", req, |id, b| {
            authz::admin_only(&id, "CreateBootstrapToken")?;
            validate_name("node", &b.node)?;
            enroll::create_token(&self.s, &b.node, b.ttl_seconds).await
        })
    }
    async fn get_desired_state(
        &self,
        req: Request<GetDesiredStateRequest>,
    ) -> Result<Response<DesiredState>, Status> {
        timed!(self, "GetDesiredState", req, |id, b| {
            if id != Identity::Admin && id != Identity::Node(b.node.clone()) {
                return Err(authz::deny(
                    &id,
                    &format!("GetDesiredState of node {:?}", b.node),
                    "a node may read only its own desired state",
                ));
            }
            Ok(planner::desired_state(
                &self.s.cache.read(),
                &b.node,
                &self.s.defaults,
            ))
        })
    }
    async fn rotate_node_key(
        &self,
        req: Request<RotateNodeKeyRequest>,
    ) -> Result<Response<RotateNodeKeyResponse>, Status> {
        timed!(self, "RotateNodeKey", req, |id, b| {
            authz::admin_only(&id, "RotateNodeKey")?;
            crate::keys::rotate_node_key(&self.s, &b.node).await
        })
    }
    async fn get_server_info(
        &self,
        req: Request<GetServerInfoRequest>,
    ) -> Result<Response<ServerInfo>, Status> {
        timed!(self, "GetServerInfo", req, |_id, _b| Ok(server_info(
            self.s.cache.read().revision,
            self.s.store_backend,
        )))
    }
}

/// Build facts of this binary and the store revision: nothing a tenant
/// could not learn from its own list responses (they carry the revision).
fn server_info(revision: u64, backend: crate::store::Backend) -> ServerInfo {
    ServerInfo {
        version: ferrofab_buildinfo::VERSION.into(),
        commit: ferrofab_buildinfo::COMMIT.into(),
        build_date: ferrofab_buildinfo::BUILD_DATE.into(),
        store: backend.name().into(),
        revision,
    }
}

/// Apply's entry points: each step goes to the very per-kind operation
/// the typed RPC uses, so validation, immutability and authorization are
/// one code path.
impl Admin {
    pub async fn apply_create(
        &self,
        id: &Identity,
        obj: pb::watch_event::Object,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        use pb::watch_event::Object as O;
        match obj {
            O::Tenant(t) => self.create_tenant_inner(id, t, dry_run).await.map(drop),
            O::Node(n) => self.create_node_inner(id, n, dry_run).await.map(drop),
            O::Pool(p) => self.create_pool_inner(id, p, dry_run).await.map(drop),
            O::Volume(v) => self.create_volume_inner(id, v, dry_run).await.map(drop),
            O::Attachment(a) => self.create_attachment_inner(id, a, dry_run).await.map(drop),
        }
    }

    pub async fn apply_update(
        &self,
        id: &Identity,
        obj: pb::watch_event::Object,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        use pb::watch_event::Object as O;
        match obj {
            O::Tenant(t) => self.update_tenant_inner(id, t, dry_run).await.map(drop),
            O::Node(n) => self.update_node_inner(id, n, dry_run).await.map(drop),
            O::Pool(p) => self.update_pool_inner(id, p, dry_run).await.map(drop),
            O::Volume(v) => self.update_volume_inner(id, v, dry_run).await.map(drop),
            O::Attachment(a) => self
                .update_attachment_inner(id, a, dry_run, false)
                .await
                .map(drop),
        }
    }

    pub async fn apply_delete(
        &self,
        id: &Identity,
        kind: Kind,
        name: &str,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        match kind {
            Kind::Tenant => self
                .delete_admin_kind::<Tenant>(id, name, 0, dry_run)
                .await
                .map(drop),
            Kind::Node => self
                .delete_admin_kind::<Node>(id, name, 0, dry_run)
                .await
                .map(drop),
            Kind::Pool => self
                .delete_admin_kind::<Pool>(id, name, 0, dry_run)
                .await
                .map(drop),
            Kind::Volume => {
                let r = DeleteVolumeRequest {
                    name: name.into(),
                    resource_version: 0,
                };
                if dry_run {
                    self.delete_volume_once(id, &r, true).await.map(drop)
                } else {
                    self.delete_volume_inner(id, r).await.map(drop)
                }
            }
            Kind::Attachment => {
                let r = DeleteAttachmentRequest {
                    name: name.into(),
                    resource_version: 0,
                };
                if dry_run {
                    self.delete_attachment_once(id, &r, true).await.map(drop)
                } else {
                    self.delete_attachment_inner(id, r).await.map(drop)
                }
            }
            Kind::Unspecified => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stable_and_well_formed() {
        let uid = "6f1c2b8e-9d7a-4c3b-8a21-0f5e4d3c2b1a";
        let a = identity_status(uid);
        assert_eq!(a, identity_status(uid));
        assert!(a.subsystem_nqn.starts_with(VOLUME_NQN_PREFIX));
        assert_eq!(a.nguid.len(), 32);
        assert_eq!(a.serial.len(), 20);
    }

    #[test]
    fn shrink_checks_happen_on_sizes_not_strings() {
        let spec = VolumeSpec {
            tenant: "t".into(),
            size: "1GiB".into(),
            ..Default::default()
        };
        assert_eq!(validate_volume_spec(&spec).ok(), Some(1 << 30));
        let bad = VolumeSpec {
            size: "1000".into(),
            ..spec
        };
        assert!(validate_volume_spec(&bad).is_err(), "not a block multiple");
    }

    fn conflict() -> ApiError {
        ApiError::Conflict {
            kind: "attachment",
            name: "a".into(),
            current: 2,
            given: 1,
        }
    }

    /// Conflicts `fail` times, then succeeds; returns (result, attempts).
    fn flaky(given: u64, fail: usize) -> (Result<(), ApiError>, usize) {
        let calls = std::cell::Cell::new(0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let r = rt.block_on(retry_unconditional(given, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n <= fail {
                    Err(conflict())
                } else {
                    Ok(())
                }
            }
        }));
        (r, calls.get())
    }

    #[test]
    fn unconditional_requests_retry_conflicts() {
        let (r, calls) = flaky(0, 3);
        assert!(r.is_ok());
        assert_eq!(calls, 4);
        // Bounded: a conflict storm still ends with the conflict.
        let (r, calls) = flaky(0, 1000);
        assert!(matches!(r, Err(ApiError::Conflict { .. })));
        assert_eq!(calls, UNCONDITIONAL_RETRIES + 1);
    }

    #[test]
    fn conditional_requests_report_the_conflict() {
        let (r, calls) = flaky(7, 3);
        assert!(matches!(r, Err(ApiError::Conflict { .. })));
        assert_eq!(calls, 1);
    }
}
