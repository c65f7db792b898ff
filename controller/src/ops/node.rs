//! Node writes (administrators only; agents' own node writes go through
//! enrollment). A node's host NQN and data addresses are checked here,
//! and its identity must not clash with another node's.

use ferrofab_proto::v1::Node;

use super::common::{admin_write, delete_unused};
use super::{Delete, Shared};
use crate::action::Action;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::resource::{validate_nqn, Object};

fn validate(s: &Shared, n: &Node) -> Result<(), ApiError> {
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

/// Creates a node; with `dry_run`, every check and no write.
pub async fn create(s: &Shared, id: &Identity, n: Node, dry_run: bool) -> Result<Node, ApiError> {
    admin_write(s, id, Action::CreateNode, n, dry_run, validate).await
}

/// Updates a node's spec, labels and annotations.
pub async fn update(s: &Shared, id: &Identity, n: Node, dry_run: bool) -> Result<Node, ApiError> {
    admin_write(s, id, Action::UpdateNode, n, dry_run, validate).await
}

/// Deletes a node no pool or attachment uses.
pub async fn delete(
    s: &Shared,
    id: &Identity,
    d: &Delete,
    dry_run: bool,
) -> Result<Node, ApiError> {
    delete_unused(s, id, d, dry_run).await
}
