//! Pool writes (administrators only) and the pool's computed status. A
//! pool's node and backing are immutable: moving them would leave every
//! volume's data behind (and Apply once moved a pool to another node and a
//! path under /etc this way).

use ferrofab_proto::v1::{BackingKind, Pool};

use super::common::{admin_write, delete_unused};
use super::{Delete, Shared};
use crate::action::Action;
use crate::domain::PoolLimits;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::resource::{parse_size, validate_name, Object};

fn validate(s: &Shared, p: &Pool) -> Result<(), ApiError> {
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

/// Creates a pool; with `dry_run`, every check and no write.
pub async fn create(s: &Shared, id: &Identity, p: Pool, dry_run: bool) -> Result<Pool, ApiError> {
    let p = admin_write(s, id, Action::CreatePool, p, dry_run, validate).await?;
    Ok(with_status(s, p))
}

/// Updates a pool's capacity, ratio, labels and annotations (see the
/// module docs for what may not change).
pub async fn update(s: &Shared, id: &Identity, p: Pool, dry_run: bool) -> Result<Pool, ApiError> {
    let check = |s: &Shared, p: &Pool| {
        validate(s, p)?;
        immutable(s, p)
    };
    let p = admin_write(s, id, Action::UpdatePool, p, dry_run, check).await?;
    Ok(with_status(s, p))
}

/// Refuses a change of the pool's node or backing.
fn immutable(s: &Shared, p: &Pool) -> Result<(), ApiError> {
    let cur: Pool = s.get(p.name())?;
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
    Ok(())
}

/// Deletes a pool no volume is placed on.
pub async fn delete(
    s: &Shared,
    id: &Identity,
    d: &Delete,
    dry_run: bool,
) -> Result<Pool, ApiError> {
    delete_unused(s, id, d, dry_run).await
}

/// Fills in computed status (usage lives in the cache's aggregates, not
/// in the stored object).
pub fn with_status(s: &Shared, mut p: Pool) -> Pool {
    let objs = s.cache.read();
    let u = objs.pool_usage(p.name());
    let limits = PoolLimits::try_from(&p).ok();
    let limit = limits.map_or(0, |l| l.effective().0);
    let cap = limits.map_or(0, |l| l.capacity.0);
    let st = p.status.get_or_insert_with(Default::default);
    st.capacity_bytes = cap;
    st.allocated_bytes = u.bytes;
    st.free_bytes = limit.saturating_sub(u.bytes);
    st.volume_count = u.volumes;
    st.observed_generation = p.metadata.as_ref().map_or(0, |m| m.generation);
    p
}
