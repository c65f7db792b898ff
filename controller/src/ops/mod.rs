//! The operations layer: every write of the controller, one module per
//! kind, over [`Shared`] (the store, the cache and what the writes need).
//! The gRPC adapters (`api`), Apply (`apply`) and the
//! background loops (`loops`) all call these functions, so a
//! check made here (validation, authorization, quotas, immutability) holds
//! whichever way a write arrives. Operations take typed inputs and return
//! [`ApiError`]; only the adapters turn it into a wire status.
//!
//! Writes go straight to the store as compare-and-swap transactions; reads
//! come from the cache after it has caught up with the caller's last write.

pub mod any;
pub mod apitoken;
pub mod attachment;
mod common;
pub mod enroll;
pub mod events;
pub mod node;
pub mod pool;
pub mod read;
pub mod status;
pub mod tenant;
pub mod volume;

pub use common::{get_checked, list_checked, page, Delete};

use std::sync::Arc;

use ferrofab_proto::v1::ObjectMeta;

use self::enroll::Signer;
use crate::cache::{Cache, Objects, Stored};
use crate::clock::Clock;
use crate::config::ExpiryConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::placement::Allocator;
use crate::planner::Defaults;
use crate::resource::{key, kind_name, validate_labels, validate_name, Resource};
use crate::store::{Revision, SharedStore, Txn, TxnResult};

/// What a usage decision rests on (see [`Shared::usage_guard`]): keys that
/// must still be at the revisions the decision saw, and the fences the
/// write bumps so that every later decision on the same pool or tenant
/// must see it first.
#[derive(Debug, Clone, Default)]
pub struct UsageGuard {
    compares: Vec<(String, Revision)>,
    bumps: Vec<String>,
}

impl UsageGuard {
    /// The pool's fence and object, and the tenant's, at the revisions
    /// `objs` saw; both fences are bumped.
    ///
    /// A tenant without quotas has nothing to over-commit, so its fence is
    /// left out: only the tenant object's revision is compared. A quota set
    /// meanwhile changes that revision, so the decision is made again, then
    /// under the fence. With the fence every create in one tenant contended
    /// on one key: a replica's concurrent creates committed one at a time
    /// and the others were decided again (`controller/benches/ha.rs`
    /// counts etcd transactions per create; docs/benchmarks.md).
    pub fn for_decision(objs: &Objects, pool: &str, tenant: &str) -> Self {
        let rv = |m: Option<&ObjectMeta>| m.map_or(0, |m| m.resource_version);
        let t = objs.tenants.get(tenant);
        let mut g = Self::default();
        g.fenced(
            objs,
            format!("pools/{pool}"),
            key(ferrofab_proto::v1::Kind::Pool, pool),
            rv(objs.pools.get(pool).and_then(|p| p.metadata.as_ref())),
        );
        let object = key(ferrofab_proto::v1::Kind::Tenant, tenant);
        let trev = rv(t.and_then(|t| t.metadata.as_ref()));
        if t.is_some_and(without_quota) {
            g.compares.push((object, trev));
        } else {
            g.fenced(objs, format!("tenants/{tenant}"), object, trev);
        }
        g
    }

    /// Requires `object` at `rev` and `fence` where `objs` saw it, and
    /// bumps the fence.
    fn fenced(&mut self, objs: &Objects, fence: String, object: String, rev: Revision) {
        let f = objs.fences.get(&fence).copied().unwrap_or(0);
        let fence_key = format!("{}/{fence}", crate::cache::FENCES);
        self.compares.push((fence_key.clone(), f));
        self.compares.push((object, rev));
        self.bumps.push(fence_key);
    }
}

/// A tenant with neither a capacity nor a volume quota.
fn without_quota(t: &ferrofab_proto::v1::Tenant) -> bool {
    t.spec
        .as_ref()
        .is_none_or(|s| s.capacity_quota.is_empty() && s.volume_quota == 0)
}

/// Everything the services share.
pub struct Shared {
    pub store: SharedStore,
    /// `[store] backend`, reported by GetServerInfo.
    pub store_backend: crate::store::Backend,
    pub cache: Arc<Cache>,
    pub allocator: Arc<Allocator>,
    pub clock: Clock,
    pub signer: Option<Signer>,
    pub metrics: Arc<Metrics>,
    pub defaults: Defaults,
    pub expiry: ExpiryConfig,
    /// What one object may hold (labels, annotations, encoded size).
    pub limits: crate::validate::ObjectLimits,
    /// Least time between two desired-state snapshots to one agent.
    pub desired_state_interval: std::time::Duration,
    /// Turns true when the server begins to shut down. Desired-state
    /// streams never end by themselves, and a graceful shutdown waits for
    /// every open call: the streams watch this and end, so SIGTERM does not
    /// hang until the last agent hangs up.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Open watch streams per identity (`server.max_watches_per_identity`).
    pub watches: Arc<crate::store::watch::WatchLimiter>,
    /// ReportStatus rate limits, bounds and in-memory node liveness.
    pub reports: crate::report::ReportGate,
    /// Orders Apply against every typed write. Typed creates, updates
    /// and deletes (and Enroll's node write) hold it shared, so they stay
    /// concurrent with each other (the [`Allocator`]'s reservations keep
    /// them from over-committing). Apply holds it exclusively from its
    /// rehearsal to its commit: the rehearsal checks quotas, capacity and
    /// references against a private copy of the store, and its final
    /// transaction guards only the keys it writes, so a typed write landing
    /// in between (a create taking the same quota, a delete of a pool the
    /// layout places on) could otherwise invalidate what was checked.
    /// Holders never take it twice: tokio's lock is fair, so a nested read
    /// behind a queued writer would deadlock.
    pub capacity_gate: Arc<tokio::sync::RwLock<()>>,
    /// Data-path authentication keys (the `keyring` module); `None` in forks.
    pub keys: Option<Arc<crate::keyring::Keys>>,
    /// `[events]`: how many event entries the store keeps.
    pub events: events::EventsConfig,
    /// Whether this replica runs the singletons now ([`crate::leader`]).
    pub leadership: crate::leader::Leadership,
}

impl Shared {
    /// Commits and waits until the cache reflects the write. Inside a
    /// singleton pass the write is conditional on this replica still
    /// being the leader ([`crate::leader::fenced`]).
    pub async fn commit(&self, txn: Txn) -> Result<TxnResult, ApiError> {
        let txn = match crate::leader::current_guard() {
            Some(g) => txn.fenced(Some(g)),
            None => txn,
        };
        let started = std::time::Instant::now();
        let r = self.store.txn(txn).await;
        self.metrics.store_latency(started.elapsed());
        let r = r.map_err(|_| ApiError::Internal("store writer stopped".into()))??;
        if let TxnResult::Committed { revision } = r {
            self.cache.wait_for(revision).await;
        }
        Ok(r)
    }

    /// Reads one object from the cache.
    pub fn get<R: Stored>(&self, name: &str) -> Result<R, ApiError> {
        R::map(&self.cache.read())
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind_name(R::KIND), name))
    }

    /// Writes `obj` if the stored object is still at `expected` (0: absent).
    /// Returns the object as stored, with its new resource_version.
    pub async fn put<R: Stored>(&self, obj: R, expected: Revision) -> Result<R, ApiError> {
        match self
            .put_guarded(obj, expected, &UsageGuard::default())
            .await?
        {
            Ok(o) => Ok(o),
            // Unreachable without guard keys; a conflict is the honest answer.
            Err(moved) => Err(ApiError::Internal(format!(
                "unexpected compare failure at revision {moved}"
            ))),
        }
    }

    /// Whether usage decisions need [`UsageGuard`]s: other processes write
    /// the same store (etcd), so the in-process [`Allocator`] alone cannot
    /// keep two replicas from over-committing a pool or a quota.
    pub fn usage_fenced(&self) -> bool {
        self.store_backend == crate::store::Backend::Etcd
    }

    /// The guard for a decision that raises `pool`'s and `tenant`'s usage,
    /// as seen in `objs` (empty when [`Self::usage_fenced`] is false; see
    /// [`UsageGuard::for_decision`]).
    pub fn usage_guard(&self, objs: &Objects, pool: &str, tenant: &str) -> UsageGuard {
        if !self.usage_fenced() {
            return UsageGuard::default();
        }
        UsageGuard::for_decision(objs, pool, tenant)
    }

    /// [`Self::put`] that also requires `guard`'s keys unchanged and bumps
    /// its fences, in the same transaction. `Ok(Err(rev))`: a guarded key
    /// moved (to `rev`); decide again on a cache that has seen it.
    pub async fn put_guarded<R: Stored>(
        &self,
        mut obj: R,
        expected: Revision,
        guard: &UsageGuard,
    ) -> Result<Result<R, Revision>, ApiError> {
        let name = obj.name().to_string();
        self.admit(&obj)?;
        let k = key(R::KIND, &name);
        obj.meta_mut().resource_version = 0;
        let mut txn = Txn::new().when(k.clone(), expected);
        for (gk, rev) in &guard.compares {
            txn = txn.when(gk.clone(), *rev);
        }
        for b in &guard.bumps {
            txn = txn.put(b.clone(), Vec::new());
        }
        let txn = txn.put(k.clone(), obj.encode_to_vec());
        Ok(match self.commit(txn).await? {
            TxnResult::Committed { revision } => {
                obj.meta_mut().resource_version = revision;
                Ok(obj)
            }
            TxnResult::CompareFailed { key: moved, actual } if moved != k => Err(actual),
            TxnResult::CompareFailed { actual: 0, .. } => {
                Err(ApiError::not_found(kind_name(R::KIND), &name))?
            }
            TxnResult::CompareFailed { actual, .. } if expected == 0 => {
                let _ = actual;
                Err(ApiError::AlreadyExists {
                    kind: kind_name(R::KIND),
                    name,
                })?
            }
            TxnResult::CompareFailed { actual, .. } => Err(ApiError::Conflict {
                kind: kind_name(R::KIND),
                name,
                current: actual,
                given: expected,
            })?,
        })
    }

    /// Every write passes here, whichever API made it, so that no path can
    /// store an object other paths could not list (see [`crate::validate`]).
    fn admit<R: Stored>(&self, obj: &R) -> Result<(), ApiError> {
        let objs = self.cache.read();
        let old = R::map(&objs).get(obj.name());
        crate::validate::admit(obj, old, &self.limits).inspect_err(|e| {
            self.metrics.refused("object_limits");
            tracing::info!(kind = kind_name(R::KIND), name = %obj.name(), error = %e, "write refused");
        })
    }

    /// Removes an object if it is still at `expected`.
    pub async fn remove<R: Stored>(&self, name: &str, expected: Revision) -> Result<(), ApiError> {
        let k = key(R::KIND, name);
        match self
            .commit(Txn::new().when(k.clone(), expected).delete(k))
            .await?
        {
            TxnResult::Committed { .. } => Ok(()),
            TxnResult::CompareFailed { actual: 0, .. } => {
                Err(ApiError::not_found(kind_name(R::KIND), name))
            }
            TxnResult::CompareFailed { actual, .. } => Err(ApiError::Conflict {
                kind: kind_name(R::KIND),
                name: name.to_string(),
                current: actual,
                given: expected,
            }),
        }
    }

    /// Re-reads and rewrites an object until the CAS succeeds (status
    /// updates from the controller itself, which must not be lost to a
    /// concurrent spec update). `f` returns false to skip the write.
    pub async fn modify<R: Stored>(
        &self,
        name: &str,
        mut f: impl FnMut(&mut R, &Objects) -> bool,
    ) -> Result<Option<R>, ApiError> {
        for _ in 0..16 {
            let (mut obj, rv) = {
                let objs = self.cache.read();
                let Some(cur) = R::map(&objs).get(name) else {
                    return Ok(None);
                };
                let mut obj = cur.clone();
                let rv = obj.meta().map_or(0, |m| m.resource_version);
                if !f(&mut obj, &objs) {
                    return Ok(Some(obj));
                }
                (obj, rv)
            };
            obj.meta_mut().resource_version = rv;
            match self.put(obj, rv).await {
                Ok(o) => return Ok(Some(o)),
                Err(ApiError::Conflict { .. }) => continue,
                Err(ApiError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::Internal(format!(
            "{} {name:?} kept changing; status update gave up",
            kind_name(R::KIND)
        )))
    }
}

/// Fills in what the controller owns on a new object and validates what
/// the client owns.
pub fn new_meta(
    meta: Option<&ObjectMeta>,
    now: prost_types::Timestamp,
) -> Result<ObjectMeta, ApiError> {
    let given = meta.cloned().unwrap_or_default();
    validate_name("metadata.name", &given.name)?;
    validate_labels("metadata.labels", &given.labels)?;
    Ok(ObjectMeta {
        name: given.name,
        uid: uuid::Uuid::new_v4().to_string(),
        generation: 1,
        resource_version: 0,
        labels: given.labels,
        annotations: given.annotations,
        finalizers: Vec::new(),
        creation_timestamp: Some(now),
        deletion_timestamp: None,
    })
}

/// Merges an update into the current object: the client's labels,
/// annotations and spec; everything else stays. Bumps the generation when
/// the spec changed. Returns the merged object and the revision to CAS on.
pub fn merge_update<R: Resource>(current: &R, mut incoming: R) -> Result<(R, Revision), ApiError> {
    let given = incoming.meta().cloned().unwrap_or_default();
    validate_labels("metadata.labels", &given.labels)?;
    let cur_meta = current.meta().cloned().unwrap_or_default();
    let expected = if given.resource_version == 0 {
        cur_meta.resource_version
    } else {
        given.resource_version
    };
    let spec_changed = current.spec_fields() != incoming.spec_fields();
    incoming.keep_status(current);
    let m = incoming.meta_mut();
    *m = ObjectMeta {
        labels: given.labels,
        annotations: given.annotations,
        generation: cur_meta.generation + u64::from(spec_changed),
        ..cur_meta
    };
    Ok((incoming, expected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrofab_proto::v1::{Tenant, TenantSpec};

    fn objs_with(tenant: &str, capacity: &str, volumes: u32) -> Objects {
        let mut o = Objects::default();
        o.tenants.insert(
            tenant.into(),
            Tenant {
                metadata: Some(ObjectMeta {
                    name: tenant.into(),
                    resource_version: 7,
                    ..Default::default()
                }),
                spec: Some(TenantSpec {
                    capacity_quota: capacity.into(),
                    volume_quota: volumes,
                    ..Default::default()
                }),
                status: None,
            },
        );
        o.fences.insert(format!("tenants/{tenant}"), 5);
        o.fences.insert("pools/p".into(), 3);
        o
    }

    #[test]
    fn a_tenant_without_quota_is_guarded_by_its_revision_only() {
        let g = UsageGuard::for_decision(&objs_with("t", "", 0), "p", "t");
        assert_eq!(g.bumps, vec!["fences/pools/p".to_string()]);
        assert!(g.compares.contains(&("fences/pools/p".into(), 3)));
        assert!(g.compares.contains(&("tenants/t".into(), 7)), "{g:?}");
        assert!(!g.compares.iter().any(|(k, _)| k == "fences/tenants/t"));
    }

    #[test]
    fn a_tenant_with_either_quota_is_fenced() {
        for (cap, vols) in [("1TiB", 0), ("", 3)] {
            let g = UsageGuard::for_decision(&objs_with("t", cap, vols), "p", "t");
            assert!(
                g.compares.contains(&("fences/tenants/t".into(), 5)),
                "{g:?}"
            );
            assert!(g.compares.contains(&("tenants/t".into(), 7)));
            assert!(g.bumps.contains(&"fences/tenants/t".to_string()));
        }
        // An unknown tenant: fenced (placement refuses it anyway).
        let g = UsageGuard::for_decision(&Objects::default(), "p", "x");
        assert!(g.bumps.contains(&"fences/tenants/x".to_string()));
    }
}
