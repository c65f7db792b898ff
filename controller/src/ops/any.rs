//! Writes of an object of any kind, as Apply performs them: each goes to
//! the very per-kind operation the typed RPC uses, so validation,
//! immutability and authorization are one code path.

use ferrofab_proto::v1::{watch_event::Object, Kind};

use super::{attachment, node, pool, tenant, volume, Delete, Shared};
use crate::error::ApiError;
use crate::identity::Identity;

/// Creates `obj`; with `dry_run`, every check and no write.
pub async fn create(s: &Shared, id: &Identity, obj: Object, dry_run: bool) -> Result<(), ApiError> {
    match obj {
        Object::Tenant(t) => tenant::create(s, id, t, dry_run).await.map(drop),
        Object::Node(n) => node::create(s, id, n, dry_run).await.map(drop),
        Object::Pool(p) => pool::create(s, id, p, dry_run).await.map(drop),
        Object::Volume(v) => volume::create(s, id, v, dry_run).await.map(drop),
        Object::Attachment(a) => attachment::create(s, id, a, dry_run).await.map(drop),
    }
}

/// Updates `obj`; with `dry_run`, every check and no write.
pub async fn update(s: &Shared, id: &Identity, obj: Object, dry_run: bool) -> Result<(), ApiError> {
    match obj {
        Object::Tenant(t) => tenant::update(s, id, t, dry_run).await.map(drop),
        Object::Node(n) => node::update(s, id, n, dry_run).await.map(drop),
        Object::Pool(p) => pool::update(s, id, p, dry_run).await.map(drop),
        Object::Volume(v) => volume::update(s, id, v, dry_run).await.map(drop),
        Object::Attachment(a) => attachment::update(s, id, a, dry_run, false).await.map(drop),
    }
}

/// Deletes the object `name` of `kind` at whatever revision is current.
pub async fn delete(
    s: &Shared,
    id: &Identity,
    kind: Kind,
    name: &str,
    dry_run: bool,
) -> Result<(), ApiError> {
    let d = Delete {
        name: name.into(),
        resource_version: 0,
    };
    match kind {
        Kind::Tenant => tenant::delete(s, id, &d, dry_run).await.map(drop),
        Kind::Node => node::delete(s, id, &d, dry_run).await.map(drop),
        Kind::Pool => pool::delete(s, id, &d, dry_run).await.map(drop),
        Kind::Volume if dry_run => volume::delete_once(s, id, &d, true).await.map(drop),
        Kind::Volume => volume::delete(s, id, &d).await.map(drop),
        Kind::Attachment if dry_run => attachment::delete_once(s, id, &d, true).await.map(drop),
        Kind::Attachment => attachment::delete(s, id, &d).await.map(drop),
        Kind::Unspecified => Ok(()),
    }
}
