//! Tenant writes (administrators only) and the tenant's computed status
//! (usage lives in the cache's aggregates, not in the stored object).

use ferrofab_proto::v1::Tenant;

use super::common::{admin_write, delete_unused};
use super::{Delete, Shared};
use crate::action::Action;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::resource::{parse_size, validate_name, Object};

fn validate(t: &Tenant) -> Result<(), ApiError> {
    let spec = t.spec.clone().unwrap_or_default();
    if !spec.capacity_quota.is_empty() {
        parse_size("spec.capacity_quota", &spec.capacity_quota)?;
    }
    for (i, n) in spec.allowed_nodes.iter().enumerate() {
        validate_name(&format!("spec.allowed_nodes[{i}]"), n)?;
    }
    Ok(())
}

/// Creates a tenant; with `dry_run`, every check and no write.
pub async fn create(
    s: &Shared,
    id: &Identity,
    t: Tenant,
    dry_run: bool,
) -> Result<Tenant, ApiError> {
    let t = admin_write(s, id, Action::CreateTenant, t, dry_run, |_, t| validate(t)).await?;
    Ok(with_status(s, t))
}

/// Updates a tenant's quota, allowed nodes, labels and annotations.
pub async fn update(
    s: &Shared,
    id: &Identity,
    t: Tenant,
    dry_run: bool,
) -> Result<Tenant, ApiError> {
    let t = admin_write(s, id, Action::UpdateTenant, t, dry_run, |_, t| validate(t)).await?;
    Ok(with_status(s, t))
}

/// Deletes a tenant that owns no volume.
pub async fn delete(
    s: &Shared,
    id: &Identity,
    d: &Delete,
    dry_run: bool,
) -> Result<Tenant, ApiError> {
    delete_unused(s, id, d, dry_run).await
}

/// Fills in the tenant's usage from the cache.
pub fn with_status(s: &Shared, mut t: Tenant) -> Tenant {
    let u = s.cache.read().tenant_usage(t.name());
    let st = t.status.get_or_insert_with(Default::default);
    st.used_bytes = u.bytes;
    st.volume_count = u.volumes;
    st.observed_generation = t.metadata.as_ref().map_or(0, |m| m.generation);
    t
}
