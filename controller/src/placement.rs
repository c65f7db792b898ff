//! Placement and quotas. A volume goes to its explicit pool, or to the pool
//! matching its selector with the most free capacity. Capacity is
//! `capacity × overcommit`, bounded by the pool's namespace limit; the
//! tenant's quotas apply first. Refusals to administrators list every
//! candidate and what it lacked, because "no space" alone does not tell an
//! operator what to fix. Refusals to tenants say only that no capacity is
//! available to them: pool names, capacities and node readiness are the
//! installation's (and other tenants') business, not theirs.
//!
//! Decisions are made against the cache plus in-flight reservations, so
//! concurrent creates cannot oversubscribe a pool while their transactions
//! are still being fsynced (the controller is the store's only writer).
//! A reservation stops counting the moment the cache shows the write it was
//! made for (see [`Settles`]), not when its guard is dropped: the writer
//! drops the guard only after the cache has applied the write, and in
//! between the volume would otherwise be counted twice (once in the cache's
//! usage, once as a reservation) and refuse a create that fits exactly.
//!
//! Placement decides on typed facts ([`PlacementFacts`]: the tenant's
//! parsed quotas, each pool's limits and readiness) that the volume
//! operations convert from the cache; it reads the cache only for its
//! usage aggregates. It parses no size and reads no message.

use std::sync::{Arc, Mutex, PoisonError};

use ferrofab_types::size::format_size;
use ferrofab_types::Bytes;

use crate::cache::{Objects, Usage};
use crate::domain::{PoolView, TenantQuota};
use crate::error::ApiError;
use crate::resource::Selector;

#[derive(Debug, Clone)]
struct Reservation {
    id: u64,
    pool: String,
    tenant: String,
    bytes: u64,
    /// A new volume (counts against namespace and volume-count limits).
    new_volume: bool,
    settles: Option<Settles>,
}

/// The volume write a reservation is for. Once the cache holds volume
/// `volume` with this `uid` at `size_bytes` or more, the cache's usage
/// already counts the bytes and the reservation no longer does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settles {
    pub volume: String,
    pub uid: String,
    pub size_bytes: u64,
}

impl Settles {
    fn in_cache(&self, objs: &Objects) -> bool {
        objs.holds_volume(&self.volume, &self.uid, self.size_bytes)
    }
}

/// What placement decides on, converted from the cache once by the caller
/// (see the module docs).
#[derive(Debug, Clone)]
pub struct PlacementFacts {
    /// The requesting tenant's quotas.
    pub tenant: TenantQuota,
    /// Every pool, in name order.
    pub pools: Vec<PoolView>,
}

impl PlacementFacts {
    /// The facts for a request of tenant `tenant`; refuses an unknown
    /// tenant or an unparsable quota with the messages users always got.
    pub fn from_cache(objs: &Objects, tenant: &str) -> Result<Self, ApiError> {
        Ok(Self {
            tenant: TenantQuota::of(objs, tenant)?,
            pools: PoolView::all(objs),
        })
    }
}

/// What to place.
#[derive(Debug, Clone)]
pub struct Request {
    pub tenant: String,
    pub bytes: u64,
    /// Explicit pool, or None to use the selector.
    pub pool: Option<String>,
    pub selector: Selector,
    /// False when growing an existing volume (only bytes are added).
    pub new_volume: bool,
    /// Whether a refusal may explain itself with pools, capacities and
    /// nodes (administrators) or must not (tenants).
    pub detail: bool,
    /// The write that will make the cache count these bytes; None keeps
    /// the reservation counting until its guard is dropped.
    pub settles: Option<Settles>,
}

/// In-flight reservations; see the module docs.
#[derive(Default)]
pub struct Allocator {
    inner: Mutex<(u64, Vec<Reservation>)>,
}

/// Holds capacity until the write that needed it is applied to the cache
/// (or failed); dropping it releases the reservation.
pub struct Reserved {
    allocator: Arc<Allocator>,
    id: u64,
    pub pool: String,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let mut g = self
            .allocator
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        g.1.retain(|r| r.id != self.id);
    }
}

/// Reserved usage the cache does not show yet; see the module docs.
fn pending(objs: &Objects, res: &[Reservation], f: impl Fn(&Reservation) -> bool) -> Usage {
    res.iter()
        .filter(|r| f(r))
        .filter(|r| !r.settles.as_ref().is_some_and(|s| s.in_cache(objs)))
        .fold(Usage::default(), |u, r| Usage {
            bytes: u.bytes.saturating_add(r.bytes),
            volumes: u.volumes + u32::from(r.new_volume),
        })
}

fn plus(a: Usage, b: Usage) -> Usage {
    Usage {
        bytes: a.bytes.saturating_add(b.bytes),
        volumes: a.volumes.saturating_add(b.volumes),
    }
}

impl Allocator {
    /// Checks quotas, picks a pool and reserves the bytes on it.
    /// `objs` gives the usage aggregates, `facts` everything else.
    pub fn reserve(
        self: &Arc<Self>,
        objs: &Objects,
        facts: &PlacementFacts,
        req: &Request,
    ) -> Result<Reserved, ApiError> {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let t_used = plus(
            objs.tenant_usage(&req.tenant),
            pending(objs, &g.1, |r| r.tenant == req.tenant),
        );
        check_tenant(&facts.tenant, t_used, req)?;
        let pool = choose_pool(objs, &facts.pools, &g.1, req)?;
        g.0 += 1;
        let id = g.0;
        g.1.push(Reservation {
            id,
            pool: pool.clone(),
            tenant: req.tenant.clone(),
            bytes: req.bytes,
            new_volume: req.new_volume,
            settles: req.settles.clone(),
        });
        Ok(Reserved {
            allocator: self.clone(),
            id,
            pool,
        })
    }
}

fn check_tenant(tenant: &TenantQuota, used: Usage, req: &Request) -> Result<(), ApiError> {
    let name = &tenant.name;
    if req.new_volume && tenant.volume_quota > 0 && used.volumes >= tenant.volume_quota {
        return Err(ApiError::Exhausted(format!(
            "tenant {name:?} is at its volume quota: {} of {} volumes",
            used.volumes, tenant.volume_quota
        )));
    }
    if let Some(Bytes(quota)) = tenant.capacity_quota {
        if used.bytes.saturating_add(req.bytes) > quota {
            return Err(ApiError::Exhausted(format!(
                "tenant {name:?} capacity quota exceeded: {} used + {} requested > {} quota",
                format_size(used.bytes),
                format_size(req.bytes),
                format_size(quota)
            )));
        }
    }
    Ok(())
}

/// Why a pool cannot take the request, or its free bytes if it can.
fn fit(objs: &Objects, res: &[Reservation], pool: &PoolView, req: &Request) -> Result<u64, String> {
    let name = pool.name.as_str();
    if pool.deleting {
        return Err("is being deleted".into());
    }
    if let Some(why) = &pool.node_not_ready {
        return Err(format!("its node {} is NotReady ({why})", pool.node));
    }
    let limits = pool.limits.clone()?;
    let limit = limits.effective().0;
    let used = plus(
        objs.pool_usage(name),
        pending(objs, res, |r| r.pool == name),
    );
    let free = limit.saturating_sub(used.bytes);
    if req.new_volume && used.volumes >= limits.namespace_limit {
        return Err(format!(
            "namespace limit reached ({} of {})",
            used.volumes, limits.namespace_limit
        ));
    }
    if free < req.bytes {
        return Err(format!(
            "only {} free of {} (capacity × overcommit), {} needed",
            format_size(free),
            format_size(limit),
            format_size(req.bytes)
        ));
    }
    Ok(free)
}

/// Picks a pool; a refusal is detailed or redacted as `req.detail` says.
fn choose_pool(
    objs: &Objects,
    pools: &[PoolView],
    res: &[Reservation],
    req: &Request,
) -> Result<String, ApiError> {
    choose_pool_detailed(objs, pools, res, req).map_err(|e| {
        if req.detail {
            return e;
        }
        // The operator still finds the full reason in the log.
        tracing::info!(tenant = %req.tenant, reason = %e, "placement refused a tenant");
        redact(e, req)
    })
}

/// The refusal a tenant gets: the request's own figures and nothing about
/// pools beyond the name the tenant gave. One code and one message for
/// every cause (missing, full, down, no match), so the refusal does not
/// tell which pools exist or what state they are in.
fn redact(_detailed: ApiError, req: &Request) -> ApiError {
    let size = format_size(req.bytes);
    ApiError::Exhausted(match &req.pool {
        Some(pool) => format!(
            "pool {pool:?} has no capacity available to your tenant for {size}; ask an administrator"
        ),
        None => format!(
            "no capacity available for {size} in the pools your tenant may use; ask an administrator"
        ),
    })
}

fn choose_pool_detailed(
    objs: &Objects,
    pools: &[PoolView],
    res: &[Reservation],
    req: &Request,
) -> Result<String, ApiError> {
    if let Some(name) = &req.pool {
        let pool = pools.iter().find(|p| p.name == *name).ok_or_else(|| {
            ApiError::invalid("spec.pool", format!("pool {name:?} does not exist"))
        })?;
        return fit(objs, res, pool, req)
            .map(|_| name.clone())
            .map_err(|why| {
                ApiError::Exhausted(format!("pool {name:?} cannot take the volume: {why}"))
            });
    }
    let candidates: Vec<&PoolView> = pools
        .iter()
        .filter(|p| p.selected_by(&req.selector))
        .collect();
    if candidates.is_empty() {
        return Err(ApiError::FailedPrecondition(format!(
            "no pool matches the volume's pool selector ({} pools exist)",
            pools.len()
        )));
    }
    let mut best: Option<(u64, String)> = None;
    let mut refusals = Vec::new();
    for p in candidates {
        let name = p.name.as_str();
        match fit(objs, res, p, req) {
            Ok(free) if best.as_ref().is_none_or(|(f, _)| free > *f) => {
                best = Some((free, name.to_string()));
            }
            Ok(_) => {}
            Err(why) => refusals.push(format!("pool {name:?}: {why}")),
        }
    }
    best.map(|(_, n)| n).ok_or_else(|| {
        ApiError::Exhausted(format!(
            "no matching pool can take {}: {}",
            format_size(req.bytes),
            refusals.join("; ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrofab_proto::v1::{ObjectMeta, Pool, PoolSpec, Tenant, TenantSpec};

    /// Places `r` the way the volume operations do: facts converted from
    /// the cache, then the reservation.
    fn place(a: &Arc<Allocator>, o: &Objects, r: &Request) -> Result<Reserved, ApiError> {
        a.reserve(o, &PlacementFacts::from_cache(o, &r.tenant)?, r)
    }

    fn pool(name: &str, cap: &str, tier: &str) -> Pool {
        let mut m = ObjectMeta {
            name: name.into(),
            ..Default::default()
        };
        m.labels.insert("tier".into(), tier.into());
        Pool {
            metadata: Some(m),
            spec: Some(PoolSpec {
                capacity: cap.into(),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn objs() -> Objects {
        let mut o = Objects::default();
        o.pools.insert("a".into(), pool("a", "10GiB", "fast"));
        o.pools.insert("b".into(), pool("b", "20GiB", "fast"));
        o.pools.insert("c".into(), pool("c", "100GiB", "slow"));
        o.tenants.insert(
            "t".into(),
            Tenant {
                metadata: Some(ObjectMeta {
                    name: "t".into(),
                    ..Default::default()
                }),
                spec: Some(TenantSpec {
                    capacity_quota: "20GiB".into(),
                    volume_quota: 3,
                    ..Default::default()
                }),
                status: None,
            },
        );
        o
    }

    fn req(gib: u64) -> Request {
        Request {
            tenant: "t".into(),
            bytes: gib << 30,
            pool: None,
            selector: Selector::parse("tier=fast").expect("selector"),
            new_volume: true,
            detail: true,
            settles: None,
        }
    }

    /// Quota and capacity refusals read in binary units, never as raw byte
    /// counts (issue 13: "8 TiB", not 8796093022208).
    #[test]
    fn quota_and_capacity_refusals_name_human_sizes() {
        let mut o = objs();
        if let Some(t) = o.tenants.get_mut("t") {
            t.spec.as_mut().expect("spec").capacity_quota = "8TiB".into();
        }
        o.pools.insert("a".into(), pool("a", "16TiB", "fast"));
        o.pools.remove("b");
        let a = Arc::new(Allocator::default());
        let e = place(&a, &o, &req(9 << 10)).err().expect("over quota");
        let m = e.to_string();
        assert!(m.contains("0B used + 9TiB requested > 8TiB quota"), "{m}");
        assert!(!m.contains(&(8u64 << 40).to_string()), "{m}");
        if let Some(t) = o.tenants.get_mut("t") {
            t.spec.as_mut().expect("spec").capacity_quota = "64TiB".into();
        }
        let e = place(&a, &o, &req(20 << 10)).err().expect("over capacity");
        let m = e.to_string();
        assert!(m.contains("only 16TiB free of 16TiB"), "{m}");
        assert!(m.contains("20TiB needed"), "{m}");
        assert!(!m.contains(&(16u64 << 40).to_string()), "{m}");
    }

    /// Puts volume `name` (uid `uid`, `gib` GiB on pool `pool`) in the
    /// cache the way the store's watch does.
    fn cache_volume(o: &mut Objects, name: &str, uid: &str, pool: &str, gib: u64) {
        use crate::store::{EventKind, KeyValue};
        use ferrofab_proto::v1::{Volume, VolumeSpec, VolumeStatus};
        use prost::Message;
        let v = Volume {
            metadata: Some(ObjectMeta {
                name: name.into(),
                uid: uid.into(),
                ..Default::default()
            }),
            spec: Some(VolumeSpec {
                tenant: "t".into(),
                ..Default::default()
            }),
            status: Some(VolumeStatus {
                pool: pool.into(),
                size_bytes: gib << 30,
                ..Default::default()
            }),
        };
        let kv = KeyValue {
            key: format!("volumes/{name}"),
            value: v.encode_to_vec(),
            create_revision: 1,
            mod_revision: 1,
        };
        o.apply(EventKind::Put, &kv, 1);
    }

    /// The writer drops its reservation only after the cache has applied
    /// the write; in between, the volume must count once, so a create that
    /// fits the quota exactly is not refused (on main it was: "16GiB used +
    /// 8GiB requested > 20GiB" with 8GiB committed).
    #[test]
    fn a_written_volume_counts_once_before_its_reservation_is_dropped() {
        let mut o = objs();
        let a = Arc::new(Allocator::default());
        let mut r = req(8);
        r.settles = Some(Settles {
            volume: "v1".into(),
            uid: "u1".into(),
            size_bytes: 8 << 30,
        });
        let held = place(&a, &o, &r).expect("first");
        // The write reached the cache; the guard is still held.
        cache_volume(&mut o, "v1", "u1", &held.pool, 8);
        let second = place(&a, &o, &req(8)).expect("8 + 8 of 20GiB fits");
        let e = place(&a, &o, &req(8)).err().expect("8 + 8 + 8 does not");
        assert!(e.to_string().contains("16GiB used"), "{e}");
        drop((held, second));
        // A grow settles when the cache shows the new size.
        let mut g = req(4);
        g.new_volume = false;
        g.pool = Some("b".into());
        g.settles = Some(Settles {
            volume: "v1".into(),
            uid: "u1".into(),
            size_bytes: 12 << 30,
        });
        let grow = place(&a, &o, &g).expect("grow");
        let e = place(&a, &o, &req(9))
            .err()
            .expect("8 + 4 pending + 9 > 20");
        assert!(e.to_string().contains("12GiB used"), "{e}");
        cache_volume(&mut o, "v1", "u1", "b", 12);
        let e = place(&a, &o, &req(9)).err().expect("12 + 9 > 20 once");
        assert!(e.to_string().contains("12GiB used"), "{e}");
        assert!(place(&a, &o, &req(8)).is_ok(), "12 + 8 fits");
        drop(grow);
    }

    #[test]
    fn picks_most_free_and_counts_reservations() {
        let o = objs();
        let a = Arc::new(Allocator::default());
        let r1 = place(&a, &o, &req(8)).expect("first");
        assert_eq!(r1.pool, "b");
        let r2 = place(&a, &o, &req(8)).expect("second");
        assert_eq!(r2.pool, "b", "b has 12GiB left, a 10GiB");
        let e = place(&a, &o, &req(8)).err().expect("quota");
        assert!(e.to_string().contains("capacity quota"), "{e}");
        drop(r2);
        assert!(place(&a, &o, &req(8)).is_ok());
    }

    #[test]
    fn pools_on_not_ready_nodes_are_skipped_with_a_reason() {
        use ferrofab_proto::v1::{Condition, ConditionStatus, Node, NodeStatus};
        let mut o = objs();
        for (name, node) in [("a", "dead"), ("b", "dead")] {
            o.pools
                .get_mut(name)
                .and_then(|p| p.spec.as_mut())
                .expect("pool")
                .node = node.into();
        }
        o.nodes.insert(
            "dead".into(),
            Node {
                status: Some(NodeStatus {
                    conditions: vec![Condition {
                        r#type: "Ready".into(),
                        status: ConditionStatus::False as i32,
                        reason: "NoHeartbeat".into(),
                        message: "no heartbeat for 50s (timeout 45s)".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let a = Arc::new(Allocator::default());
        let e = place(&a, &o, &req(1)).err().expect("refused");
        assert!(
            e.to_string()
                .contains("NotReady (NoHeartbeat: no heartbeat for 50s"),
            "{e}"
        );
    }

    #[test]
    fn refusal_explains_each_pool() {
        let mut o = objs();
        o.tenants
            .get_mut("t")
            .and_then(|t| t.spec.as_mut())
            .expect("tenant")
            .capacity_quota = String::new();
        let a = Arc::new(Allocator::default());
        let e = place(&a, &o, &req(21)).err().expect("too big");
        let msg = e.to_string();
        assert!(
            msg.contains("pool \"a\"") && msg.contains("pool \"b\""),
            "{msg}"
        );
        let mut r = req(1);
        r.selector = Selector::parse("tier=none").expect("selector");
        assert!(matches!(
            place(&a, &o, &r),
            Err(ApiError::FailedPrecondition(_))
        ));
    }

    /// A stored pool whose capacity does not parse (written before a
    /// validation existed, or by hand) stays a candidate that refuses with
    /// the parse error, so an administrator's refusal says what to fix.
    #[test]
    fn a_pool_with_an_unparsable_capacity_refuses_with_the_parse_error() {
        let mut o = objs();
        o.pools.insert("a".into(), pool("a", "ten gigs", "fast"));
        o.pools.remove("b");
        let a = Arc::new(Allocator::default());
        let e = place(&a, &o, &req(1)).err().expect("refused");
        let m = e.to_string();
        assert!(
            m.contains("pool \"a\": invalid spec.capacity: \"ten gigs\""),
            "{m}"
        );
    }

    /// Tenants learn that there is no room for them, not which pools
    /// exist, how full they are, or which nodes are down.
    #[test]
    fn tenant_refusals_name_no_pool_capacity_or_node() {
        let mut o = objs();
        o.tenants
            .get_mut("t")
            .and_then(|t| t.spec.as_mut())
            .expect("tenant")
            .capacity_quota = String::new();
        let a = Arc::new(Allocator::default());
        let mut r = req(21);
        r.detail = false;
        let e = place(&a, &o, &r).err().expect("too big");
        assert!(matches!(e, ApiError::Exhausted(_)), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("21GiB") && msg.contains("administrator"),
            "{msg}"
        );
        for leak in ["\"a\"", "\"b\"", "10GiB", "20GiB", "free", "node"] {
            assert!(!msg.contains(leak), "{leak} in {msg}");
        }
        r.selector = Selector::parse("tier=none").expect("selector");
        let e = place(&a, &o, &r).err().expect("no match");
        assert_eq!(e.to_string(), msg, "no match reads as no capacity");
        r.pool = Some("a".into());
        let e = place(&a, &o, &r).err().expect("explicit pool full");
        let msg = e.to_string();
        assert!(msg.contains("\"a\"") && !msg.contains("10GiB"), "{msg}");
        r.pool = Some("zz".into());
        let e = place(&a, &o, &r).err().expect("explicit pool missing");
        assert!(matches!(e, ApiError::Exhausted(_)), "{e}");
        assert_eq!(
            e.to_string().replace("zz", "a"),
            msg,
            "missing reads as full"
        );
    }
}
