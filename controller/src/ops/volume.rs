//! Volume writes: create (placement, quotas, the stable NVMe identity),
//! update (grow only, immutable placement, expiry rules) and delete
//! (refused while attached; the export finalizer waits for the storage
//! node's teardown).

use ferrofab_proto::v1::{Volume, VolumePhase, VolumeSpec, VolumeStatus};
use ferrofab_types::size::format_size;
use tracing::info;

use super::common::{delete_or_mark, expected_rv, retry_unconditional};
use super::{get_checked, merge_update, new_meta, Delete, Shared, UsageGuard};
use crate::action::Action;
use crate::authz::{self, Verb};
use crate::conditions::condition;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::placement::{PlacementFacts, Request as Placement, Settles};
use crate::resource::{parse_size, validate_name, Object, Selector, FINALIZER_EXPORT};
use crate::store::Revision;

/// NQN prefix of every volume's subsystem; the rest is the volume uid, so
/// the NQN never changes for the life of the volume.
pub const VOLUME_NQN_PREFIX: &str = "nqn.2024-01.io.ferrofab:volume:";

/// Checks what the client owns in a volume's spec; returns its size in bytes.
pub fn validate_spec(spec: &VolumeSpec) -> Result<u64, ApiError> {
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

/// The settlement a placement of `bytes` for volume `v` records.
fn settles(v: &Volume, size_bytes: u64) -> Option<Settles> {
    Some(Settles {
        volume: v.name().to_string(),
        uid: v.metadata.as_ref().map_or(String::new(), |m| m.uid.clone()),
        size_bytes,
    })
}

/// How often a create or growth decides again after another replica
/// changed the pool's or tenant's usage between its decision and its
/// write (etcd only, see [`Shared::usage_guard`]). Each retry decides on a
/// cache that has seen the other write, so it fails only under a storm of
/// competing writes to one pool; the bound turns that into an error.
const PLACEMENT_RETRIES: u32 = 32;

/// Waits until the cache has seen the write that moved a usage guard, or
/// gives up after [`PLACEMENT_RETRIES`] (counted in
/// `limit_refusals{limit="placement_retries"}`).
async fn placement_moved(s: &Shared, moved: u64, attempts: u32) -> Result<(), ApiError> {
    if attempts >= PLACEMENT_RETRIES {
        s.metrics.refused("placement_retries");
        return Err(ApiError::Exhausted(format!(
            "placement kept being overtaken by concurrent writes to the same pool or tenant ({attempts} attempts); try again"
        )));
    }
    s.cache.wait_for(moved).await;
    Ok(())
}

/// The volume as placed on `pool`: identity, backing path, conditions.
fn place(s: &Shared, mut vol: Volume, pool: &str, bytes: u64) -> Volume {
    let (node, base) = {
        let objs = s.cache.read();
        let p = objs
            .pools
            .get(pool)
            .and_then(|p| p.spec.clone())
            .unwrap_or_default();
        (p.node, p.backing.unwrap_or_default().path)
    };
    let now = s.clock.now_ts();
    let m = vol.meta_mut();
    m.finalizers.push(FINALIZER_EXPORT.into());
    let uid = m.uid.clone();
    let mut st = identity_status(&uid);
    st.pool = pool.to_string();
    st.node = node.clone();
    st.size_bytes = bytes;
    st.backing_path = format!("{}/{}", base.trim_end_matches('/'), uid);
    st.phase = VolumePhase::Placed as i32;
    st.observed_generation = 1;
    st.conditions.push(condition(
        "Placed",
        true,
        "PlacedOnPool",
        format!("placed on pool {pool} of node {node}"),
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
    vol
}

/// Creates a volume. With `dry_run`, runs every check (validation,
/// authorization, placement, quotas) and returns the volume as it would
/// be stored, without storing it (its uid and identity are not final).
pub async fn create(
    s: &Shared,
    id: &Identity,
    v: Volume,
    dry_run: bool,
) -> Result<Volume, ApiError> {
    let _capacity = s.capacity_gate.read().await;
    let spec = v.spec.clone().unwrap_or_default();
    let meta = new_meta(v.metadata.as_ref(), s.clock.now_ts())?;
    let bytes = validate_spec(&spec)?;
    let vol = Volume {
        metadata: Some(meta),
        spec: Some(spec.clone()),
        status: None,
    };
    {
        let objs = s.cache.read();
        authz::check_new(id, Action::CreateVolume, &vol, &objs)?;
    }
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
        settles: settles(&vol, bytes),
    };
    let mut attempts = 0;
    let out = loop {
        let (reserved, guard) = {
            let objs = s.cache.read();
            let facts = PlacementFacts::from_cache(&objs, &req.tenant)?;
            let r = s.allocator.reserve(&objs, &facts, &req)?;
            let g = s.usage_guard(&objs, &r.pool, &req.tenant);
            (r, g)
        };
        let placed = place(s, vol.clone(), &reserved.pool, bytes);
        if dry_run {
            return Ok(placed);
        }
        let out = s.put_guarded(placed, 0, &guard).await;
        drop(reserved);
        match out? {
            Ok(v) => break v,
            Err(moved) => {
                attempts += 1;
                placement_moved(s, moved, attempts).await?;
            }
        }
    };
    info!(volume = %out.name(), pool = %out.status.as_ref().map_or("", |s| s.pool.as_str()), "volume created");
    Ok(out)
}

/// Updates a volume; `dry_run` as for [`create`]. A growth that another
/// replica overtook (it changed the pool's or tenant's usage between this
/// decision and its write) decides again, as a create does, up to
/// [`PLACEMENT_RETRIES`] times: the caller's request was valid, only the
/// usage it was checked against moved. A change of the volume itself
/// stays a conflict for the caller.
pub async fn update(
    s: &Shared,
    id: &Identity,
    v: Volume,
    dry_run: bool,
) -> Result<Volume, ApiError> {
    let mut attempts = 0;
    loop {
        match update_once(s, id, v.clone(), dry_run).await? {
            Ok(v) => return Ok(v),
            Err(moved) => {
                attempts += 1;
                placement_moved(s, moved, attempts).await?;
            }
        }
    }
}

/// One decision of [`update`] on the cache as it is now. `Ok(Err(rev))`:
/// a usage guard moved to `rev` before the write.
async fn update_once(
    s: &Shared,
    id: &Identity,
    v: Volume,
    dry_run: bool,
) -> Result<Result<Volume, Revision>, ApiError> {
    let _capacity = s.capacity_gate.read().await;
    let name = v.name().to_string();
    let cur: Volume = get_checked(s, id, Action::UpdateVolume, &name)?;
    {
        let objs = s.cache.read();
        authz::check(id, Action::UpdateVolume, Verb::Write, &cur, &objs)?;
    }
    let old = cur.spec.clone().unwrap_or_default();
    let new = v.spec.clone().unwrap_or_default();
    let new_bytes = validate_spec(&new)?;
    for (field, same) in [
        ("spec.tenant", old.tenant == new.tenant),
        ("spec.block_size", old.block_size == new.block_size),
        ("spec.pool", old.pool == new.pool),
        (
            "spec.pool_selector",
            old.pool_selector.unwrap_or_default() == new.pool_selector.clone().unwrap_or_default(),
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
    let (_reserved, guard) = if new_bytes > old_bytes {
        let objs = s.cache.read();
        let pool = cur.status.as_ref().map(|s| s.pool.clone());
        let req = Placement {
            tenant: old.tenant.clone(),
            bytes: new_bytes - old_bytes,
            pool: pool.clone(),
            selector: Selector::default(),
            new_volume: false,
            detail: *id == Identity::Admin,
            settles: settles(&cur, new_bytes),
        };
        let facts = PlacementFacts::from_cache(&objs, &req.tenant)?;
        let r = s.allocator.reserve(&objs, &facts, &req)?;
        let g = s.usage_guard(&objs, &pool.unwrap_or_default(), &req.tenant);
        (Some(r), g)
    } else {
        (None, UsageGuard::default())
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
        return Ok(Ok(merged));
    }
    s.put_guarded(merged, rv, &guard).await
}

/// Deletes a volume, retrying a conflict when the caller gave no
/// resource_version (see [`retry_unconditional`]).
pub async fn delete(s: &Shared, id: &Identity, d: &Delete) -> Result<Volume, ApiError> {
    retry_unconditional(d.resource_version, || delete_once(s, id, d, false)).await
}

/// One attempt; with `dry_run`, every check and no write.
pub async fn delete_once(
    s: &Shared,
    id: &Identity,
    d: &Delete,
    dry_run: bool,
) -> Result<Volume, ApiError> {
    let _capacity = s.capacity_gate.read().await;
    let cur: Volume = get_checked(s, id, Action::DeleteVolume, &d.name)?;
    let attached: Vec<String> = {
        let objs = s.cache.read();
        authz::check(id, Action::DeleteVolume, Verb::Write, &cur, &objs)?;
        objs.attachments_of(&d.name)
            .map(|a| a.name().to_string())
            .collect()
    };
    if !attached.is_empty() {
        return Err(ApiError::FailedPrecondition(format!(
            "volume {:?} is attached (attachments: {}); delete those attachments first",
            d.name,
            attached.join(", ")
        )));
    }
    let mut cur = cur;
    let rv = expected_rv(&cur, d.resource_version);
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
        assert_eq!(validate_spec(&spec).ok(), Some(1 << 30));
        let bad = VolumeSpec {
            size: "1000".into(),
            ..spec
        };
        assert!(validate_spec(&bad).is_err(), "not a block multiple");
    }
}
