//! Reads as every API serves them: the authorization of the kind, then the
//! presentation (computed status). The gRPC adapters and the HTTP/JSON API
//! both call these, so a Get or List answers the same objects, and refuses
//! the same callers, whichever way it arrives.

use ferrofab_proto::v1::{Attachment, Node, Pool, Tenant, Volume};

use super::{get_checked, list_checked, Shared};
use crate::action::Action;
use crate::authz::{self, Owned};
use crate::cache::Stored;
use crate::error::ApiError;
use crate::identity::Identity;

/// A kind as the read calls serve it.
pub trait Readable: Stored + Owned {
    const GET: Action;
    const LIST: Action;
    const WATCH: Action;
    /// Kinds only administrators may read at all (pools: capacity is
    /// everyone's business but no tenant's to see).
    const ADMIN_ONLY: bool = false;
    /// Fills in what is computed rather than stored (usage).
    fn present(_s: &Shared, obj: Self) -> Self {
        obj
    }
}

impl Readable for Node {
    const GET: Action = Action::GetNode;
    const LIST: Action = Action::ListNodes;
    const WATCH: Action = Action::WatchNodes;
}

impl Readable for Pool {
    const GET: Action = Action::GetPool;
    const LIST: Action = Action::ListPools;
    const WATCH: Action = Action::WatchPools;
    const ADMIN_ONLY: bool = true;
    fn present(s: &Shared, obj: Self) -> Self {
        super::pool::with_status(s, obj)
    }
}

impl Readable for Volume {
    const GET: Action = Action::GetVolume;
    const LIST: Action = Action::ListVolumes;
    const WATCH: Action = Action::WatchVolumes;
}

impl Readable for Attachment {
    const GET: Action = Action::GetAttachment;
    const LIST: Action = Action::ListAttachments;
    const WATCH: Action = Action::WatchAttachments;
}

impl Readable for Tenant {
    const GET: Action = Action::GetTenant;
    const LIST: Action = Action::ListTenants;
    const WATCH: Action = Action::WatchTenants;
    fn present(s: &Shared, obj: Self) -> Self {
        super::tenant::with_status(s, obj)
    }
}

/// One object the caller may read, presented.
pub fn get<R: Readable>(s: &Shared, id: &Identity, name: &str) -> Result<R, ApiError> {
    if R::ADMIN_ONLY {
        authz::admin_only(id, R::GET)?;
        return Ok(R::present(s, s.get(name)?));
    }
    Ok(R::present(s, get_checked(s, id, R::GET, name)?))
}

/// One page of the objects the caller may read that match `selector`: the
/// items (presented), the revision they were read at, the next page's token.
pub fn list<R: Readable>(
    s: &Shared,
    id: &Identity,
    selector: &str,
    page_size: u32,
    token: &str,
) -> Result<(Vec<R>, u64, String), ApiError> {
    if R::ADMIN_ONLY {
        authz::admin_only(id, R::LIST)?;
    }
    let (items, revision) = list_checked(s, id, selector)?;
    let (items, next) = super::page(s, items, page_size, token)?;
    let items = items.into_iter().map(|o| R::present(s, o)).collect();
    Ok((items, revision, next))
}

/// Whether the caller may watch the kind at all (objects are filtered
/// one by one as they pass).
pub fn may_watch<R: Readable>(id: &Identity) -> Result<(), ApiError> {
    if R::ADMIN_ONLY {
        authz::admin_only(id, R::WATCH)?;
    }
    Ok(())
}
