//! What every kind's operations share: reads checked against the caller,
//! deletes that respect finalizers, retries of unconditional requests,
//! and the create/update/delete of the admin-only kinds.

use ferrofab_proto::v1::Kind;

use super::{merge_update, new_meta, Shared};
use crate::action::Action;
use crate::authz::{self, Owned, Verb};
use crate::cache::Stored;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::resource::Object;
use crate::resource::{kind_name, Resource, Selector};

/// What a delete names: the object and the revision it must still be at
/// (0: whatever is current).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delete {
    pub name: String,
    pub resource_version: u64,
}

/// Reads an object the caller may read. A missing object and one the
/// caller may not read give the same NOT_FOUND ([`authz::hidden`]), so no
/// RPC that starts here tells a tenant what other tenants have.
pub fn get_checked<R: Stored + Owned>(
    s: &Shared,
    id: &Identity,
    action: Action,
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

/// The objects of kind R the caller may read that match `selector`, and
/// the revision they were read at.
pub fn list_checked<R: Stored + Owned>(
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

/// One page of a List within the message limit (see [`crate::validate::page`]).
pub fn page<R: Resource>(
    s: &Shared,
    items: Vec<R>,
    page_size: u32,
    token: &str,
) -> Result<(Vec<R>, String), ApiError> {
    crate::validate::page(items, page_size, token, s.limits.page_budget())
        .inspect_err(|_| s.metrics.refused("list_size"))
}

/// Deletes now if no finalizer holds the object, else marks it deleting.
pub(super) async fn delete_or_mark<R: Stored>(
    s: &Shared,
    mut obj: R,
    rv: u64,
) -> Result<R, ApiError> {
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
pub(super) const UNCONDITIONAL_RETRIES: usize = 16;

/// Runs `attempt` again on a conflict when the caller gave no
/// resource_version: the caller asked for "delete whatever is current", so
/// a concurrent status update is no reason to fail. With a version the
/// conflict is the answer the caller asked for.
pub(super) async fn retry_unconditional<T, F, Fut>(
    given: u64,
    mut attempt: F,
) -> Result<T, ApiError>
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

/// The revision to compare with: the caller's, or the current one.
pub(super) fn expected_rv<R: Resource>(obj: &R, given: u64) -> u64 {
    if given == 0 {
        obj.meta().map_or(0, |m| m.resource_version)
    } else {
        given
    }
}

/// Deletes a node, pool or tenant unless other objects still use it;
/// with `dry_run`, every check and no write.
pub(super) async fn delete_unused<R: Stored + Owned>(
    s: &Shared,
    id: &Identity,
    d: &Delete,
    dry_run: bool,
) -> Result<R, ApiError> {
    let _capacity = s.capacity_gate.read().await;
    authz::admin_only(id, Action::delete(R::KIND))?;
    let cur: R = s.get(&d.name)?;
    let users = users_of(s, R::KIND, &d.name);
    if !users.is_empty() {
        return Err(ApiError::FailedPrecondition(format!(
            "{} {:?} is still in use by {}",
            kind_name(R::KIND),
            d.name,
            users.join(", ")
        )));
    }
    if dry_run {
        return Ok(cur);
    }
    let rv = expected_rv(&cur, d.resource_version);
    delete_or_mark(s, cur, rv).await
}

/// The create or update (as `action` says) of an object of an admin-only
/// kind: the capacity gate, the admin check, the kind's own `check`, then
/// the write; with `dry_run`, every check and no write.
pub(super) async fn admin_write<R, F>(
    s: &Shared,
    id: &Identity,
    action: Action,
    obj: R,
    dry_run: bool,
    check: F,
) -> Result<R, ApiError>
where
    R: Stored + Owned,
    F: FnOnce(&Shared, &R) -> Result<(), ApiError>,
{
    let _capacity = s.capacity_gate.read().await;
    authz::admin_only(id, action)?;
    check(s, &obj)?;
    if action.is_create() {
        create_simple(s, obj, dry_run).await
    } else {
        update_simple(s, obj, dry_run).await
    }
}

/// Stores a new object of an admin-only kind (the caller has been
/// authorized and the object validated).
async fn create_simple<R: Stored + Owned>(
    s: &Shared,
    obj: R,
    dry_run: bool,
) -> Result<R, ApiError> {
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
async fn update_simple<R: Stored + Owned>(
    s: &Shared,
    obj: R,
    dry_run: bool,
) -> Result<R, ApiError> {
    let cur: R = s.get(obj.name())?;
    let (merged, rv) = merge_update(&cur, obj)?;
    if dry_run {
        return Ok(merged);
    }
    s.put(merged, rv).await
}

/// What still uses the object `name` of `kind`, as "pool x", "volume y".
fn users_of(s: &Shared, kind: Kind, name: &str) -> Vec<String> {
    let objs = s.cache.read();
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

#[cfg(test)]
mod tests {
    use super::*;

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
