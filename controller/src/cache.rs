//! An in-memory mirror of every object, fed by the store's watch in
//! revision order. Reads, placement and the planner use it instead of
//! scanning the store; writers wait for their revision to be applied so a
//! client always reads its own writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use ferrofab_proto::v1::{Attachment, Kind, Node, Pool, Tenant, Volume};
use std::sync::atomic::Ordering;
use tokio::sync::watch;

use tracing::{error, warn};

use crate::resource::{prefix, Resource};
use crate::store::{Event, EventKind, KeyValue, Revision, SharedStore, StoreError};
use crate::watch::WatchStream;

/// Bytes and volume count placed on a pool or owned by a tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub volumes: u32,
}

/// Every object, by kind and name, with usage aggregates kept current.
#[derive(Debug, Default)]
pub struct Objects {
    pub revision: Revision,
    pub nodes: BTreeMap<String, Node>,
    pub pools: BTreeMap<String, Pool>,
    pub volumes: BTreeMap<String, Volume>,
    pub attachments: BTreeMap<String, Attachment>,
    pub tenants: BTreeMap<String, Tenant>,
    pub pool_usage: HashMap<String, Usage>,
    pub tenant_usage: HashMap<String, Usage>,
}

/// Access to the per-kind map, so generic code can read any kind.
pub trait Stored: Resource {
    fn map(o: &Objects) -> &BTreeMap<String, Self>;
    fn map_mut(o: &mut Objects) -> &mut BTreeMap<String, Self>;
}

macro_rules! stored {
    ($ty:ty, $field:ident) => {
        impl Stored for $ty {
            fn map(o: &Objects) -> &BTreeMap<String, Self> {
                &o.$field
            }
            fn map_mut(o: &mut Objects) -> &mut BTreeMap<String, Self> {
                &mut o.$field
            }
        }
    };
}
stored!(Node, nodes);
stored!(Pool, pools);
stored!(Volume, volumes);
stored!(Attachment, attachments);
stored!(Tenant, tenants);

/// Decodes a stored value and stamps the revisions the store assigned.
pub fn decode<R: Resource>(kv: &KeyValue) -> Option<R> {
    let mut r = R::decode(kv.value.as_slice()).ok()?;
    r.meta_mut().resource_version = kv.mod_revision;
    Some(r)
}

fn volume_usage(v: &Volume) -> Option<(String, String, u64)> {
    let st = v.status.as_ref()?;
    let tenant = v.spec.as_ref()?.tenant.clone();
    Some((st.pool.clone(), tenant, st.size_bytes))
}

fn add(map: &mut HashMap<String, Usage>, key: &str, bytes: u64, sign: i64) {
    let u = map.entry(key.to_string()).or_default();
    if sign > 0 {
        u.bytes = u.bytes.saturating_add(bytes);
        u.volumes = u.volumes.saturating_add(1);
    } else {
        u.bytes = u.bytes.saturating_sub(bytes);
        u.volumes = u.volumes.saturating_sub(1);
    }
}

impl Objects {
    fn account(&mut self, v: &Volume, sign: i64) {
        if let Some((pool, tenant, bytes)) = volume_usage(v) {
            if !pool.is_empty() {
                add(&mut self.pool_usage, &pool, bytes, sign);
            }
            add(&mut self.tenant_usage, &tenant, bytes, sign);
        }
    }

    fn apply_kind<R: Stored>(&mut self, name: &str, kv: &KeyValue, kind: EventKind) {
        match kind {
            EventKind::Put => match decode::<R>(kv) {
                Some(obj) => {
                    R::map_mut(self).insert(name.to_string(), obj);
                }
                None => warn!(key = %kv.key, "undecodable object in store; ignored"),
            },
            EventKind::Delete => {
                R::map_mut(self).remove(name);
            }
        }
    }

    /// Applies one committed change.
    pub fn apply(&mut self, kind: EventKind, kv: &KeyValue, revision: Revision) {
        self.revision = self.revision.max(revision);
        let Some((pfx, name)) = kv.key.split_once('/') else {
            return;
        };
        match pfx {
            "nodes" => self.apply_kind::<Node>(name, kv, kind),
            "pools" => self.apply_kind::<Pool>(name, kv, kind),
            "attachments" => self.apply_kind::<Attachment>(name, kv, kind),
            "tenants" => self.apply_kind::<Tenant>(name, kv, kind),
            "volumes" => {
                if let Some(old) = self.volumes.get(name).cloned() {
                    self.account(&old, -1);
                }
                self.apply_kind::<Volume>(name, kv, kind);
                if let Some(new) = self.volumes.get(name).cloned() {
                    self.account(&new, 1);
                }
            }
            _ => {}
        }
    }

    pub fn pool_usage(&self, pool: &str) -> Usage {
        self.pool_usage.get(pool).copied().unwrap_or_default()
    }

    pub fn tenant_usage(&self, tenant: &str) -> Usage {
        self.tenant_usage.get(tenant).copied().unwrap_or_default()
    }
}

/// See the module docs.
pub struct Cache {
    objects: RwLock<Objects>,
    applied: watch::Sender<Revision>,
}

impl Cache {
    /// Loads every object and starts following the store.
    pub fn start(store: SharedStore) -> Result<Arc<Self>, StoreError> {
        let mut objects = Objects::default();
        let mut max_rev = 0;
        for kind in [
            Kind::Tenant,
            Kind::Node,
            Kind::Pool,
            Kind::Volume,
            Kind::Attachment,
        ] {
            let (kvs, rev) = store.list(prefix(kind))?;
            max_rev = max_rev.max(rev);
            for kv in kvs {
                objects.apply(EventKind::Put, &kv, kv.mod_revision);
            }
        }
        // The lists may straddle a concurrent commit; the watch from the
        // smallest sound point re-applies anything newer (idempotent puts).
        let start_rev = store.revision().min(max_rev);
        objects.revision = start_rev;
        let mut stream = store.watch("", start_rev)?;
        let (applied, _) = watch::channel(start_rev);
        let cache = Arc::new(Self {
            objects: RwLock::new(objects),
            applied,
        });
        for ev in std::mem::take(&mut stream.backlog) {
            cache.apply(&ev);
        }
        let follower = cache.clone();
        tokio::spawn(async move { follower.follow(store, stream).await });
        Ok(cache)
    }

    /// Applies live events; if the hub cut this subscriber off for falling
    /// behind (a burst of writes while the runtime was busy), resumes from
    /// the last applied revision out of the hub's history.
    async fn follow(self: Arc<Self>, store: SharedStore, mut stream: WatchStream) {
        loop {
            while let Some(ev) = stream.live.recv().await {
                self.apply(&ev);
            }
            if !stream.lagged.load(Ordering::SeqCst) {
                break;
            }
            match store.watch("", self.revision()) {
                Ok(mut s) => {
                    for ev in std::mem::take(&mut s.backlog) {
                        self.apply(&ev);
                    }
                    stream = s;
                }
                Err(e) => {
                    error!(error = %e, "cache cannot resume following the store");
                    break;
                }
            }
        }
        warn!("cache stopped following the store");
    }

    fn apply(&self, ev: &Event) {
        {
            let mut o = self.objects.write().unwrap_or_else(PoisonError::into_inner);
            o.apply(ev.kind, &ev.kv, ev.revision);
        }
        self.applied.send_replace(ev.revision);
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Objects> {
        self.objects.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn revision(&self) -> Revision {
        *self.applied.borrow()
    }

    /// Resolves once the cache reflects `rev` (read-your-writes).
    pub async fn wait_for(&self, rev: Revision) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|r| *r >= rev).await;
    }

    /// Notified after every applied change (planner streams use it).
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.applied.subscribe()
    }
}
