//! Gauges computed from the object cache at scrape time: pool capacity,
//! allocation and free space per pool, node readiness per node, each
//! volume's size and burst expiry, and the build of this binary.
//!
//! They are set on each scrape from the cache the API already keeps, so
//! they cost nothing between scrapes (no timer, no watcher) and can never
//! disagree with what `ferrofab pool list` / `node list` show. Series of
//! deleted pools and nodes are dropped by clearing the families first.

use ferrofab_proto::v1::{ConditionStatus, Node, Pool};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cache::Objects;

type Labels = Vec<(String, String)>;

#[derive(Default)]
pub struct ClusterGauges {
    pool_capacity: Family<Labels, Gauge>,
    pool_allocated: Family<Labels, Gauge>,
    pool_free: Family<Labels, Gauge>,
    node_ready: Family<Labels, Gauge>,
    volume_expiry: Family<Labels, Gauge>,
    volume_size: Family<Labels, Gauge>,
    /// Held from refresh through encoding: a second scrape clearing the
    /// families in between would make the first one miss series.
    scrape: std::sync::Mutex<()>,
}

impl ClusterGauges {
    /// Registers the gauges under `r` (the `ferrofab_controller` prefix).
    pub fn register(r: &mut Registry) -> Self {
        let g = Self::default();
        r.register(
            "pool_capacity_bytes",
            "Pool capacity (spec.capacity), by pool and node",
            g.pool_capacity.clone(),
        );
        r.register(
            "pool_allocated_bytes",
            "Bytes allocated to volumes in the pool, by pool and node",
            g.pool_allocated.clone(),
        );
        r.register(
            "pool_free_bytes",
            "Bytes still free for new volumes in the pool, by pool and node",
            g.pool_free.clone(),
        );
        r.register(
            "node_ready",
            "1 when the node's Ready condition is True, else 0, by node",
            g.node_ready.clone(),
        );
        r.register(
            "volume_expiry_timestamp_seconds",
            "When the burst volume expires (Unix seconds; spec.expires_at), by volume, pool and tenant; absent without an expiry",
            g.volume_expiry.clone(),
        );
        r.register(
            "volume_size_bytes",
            "Allocated size of each placed volume, by volume, pool and tenant",
            g.volume_size.clone(),
        );
        g
    }

    /// Serializes scrapes; hold the guard until the text is encoded.
    pub fn scrape_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets every series from `o` (call with [`Self::scrape_guard`] held).
    pub fn refresh(&self, o: &Objects) {
        for f in [
            &self.pool_capacity,
            &self.pool_allocated,
            &self.pool_free,
            &self.node_ready,
            &self.volume_expiry,
            &self.volume_size,
        ] {
            f.clear();
        }
        for (name, p) in &o.pools {
            let node = p.spec.as_ref().map_or("", |s| s.node.as_str());
            let labels = vec![("pool".into(), name.clone()), ("node".into(), node.into())];
            let (capacity, allocated, free) = pool_figures(o, name, p);
            set(&self.pool_capacity, &labels, capacity);
            set(&self.pool_allocated, &labels, allocated);
            set(&self.pool_free, &labels, free);
        }
        for (name, n) in &o.nodes {
            self.node_ready
                .get_or_create(&vec![("node".into(), name.clone())])
                .set(i64::from(is_ready(n)));
        }
        for (name, v) in &o.volumes {
            let spec = v.spec.as_ref();
            let st = v.status.as_ref();
            let labels = vec![
                ("volume".into(), name.clone()),
                ("pool".into(), st.map_or("", |s| s.pool.as_str()).into()),
                (
                    "tenant".into(),
                    spec.map_or("", |s| s.tenant.as_str()).into(),
                ),
            ];
            if let Some(t) = spec.and_then(|s| s.expires_at.as_ref()) {
                self.volume_expiry.get_or_create(&labels).set(t.seconds);
            }
            if let Some(s) = st.filter(|s| !s.pool.is_empty()) {
                set(&self.volume_size, &labels, s.size_bytes);
            }
        }
    }
}

/// (capacity, allocated, free) as `GetPool`/`ListPools` report them: the
/// stored pool carries no usage, the cache's aggregates do, and free is
/// what placement may still give out (capacity × overcommit − allocated).
fn pool_figures(o: &Objects, name: &str, p: &Pool) -> (u64, u64, u64) {
    let allocated = o.pool_usage(name).bytes;
    let limits = crate::domain::PoolLimits::try_from(p).ok();
    let capacity = limits.map_or(0, |l| l.capacity.0);
    let limit = limits.map_or(0, |l| l.effective().0);
    (capacity, allocated, limit.saturating_sub(allocated))
}

fn set(f: &Family<Labels, Gauge>, labels: &Labels, v: u64) {
    f.get_or_create(labels)
        .set(i64::try_from(v).unwrap_or(i64::MAX));
}

/// Ready only with a True Ready condition; never reported counts as not.
fn is_ready(n: &Node) -> bool {
    n.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.r#type == crate::heartbeat::READY && c.status == ConditionStatus::True as i32
        })
    })
}

/// `ferrofab_build_info{component,version,commit,build_date} 1`, on the
/// root registry so the name is the same in every component.
pub fn register_build_info(root: &mut Registry, component: &str) {
    let info = Family::<Labels, Gauge>::default();
    info.get_or_create(&vec![
        ("component".into(), component.into()),
        ("version".into(), ferrofab_buildinfo::VERSION.into()),
        ("commit".into(), ferrofab_buildinfo::COMMIT.into()),
        ("build_date".into(), ferrofab_buildinfo::BUILD_DATE.into()),
    ])
    .set(1);
    root.register(
        "ferrofab_build_info",
        "Build of this binary (value is always 1)",
        info,
    );
}
