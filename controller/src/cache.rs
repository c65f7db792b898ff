//! An in-memory mirror of every object, fed by the store's watch in
//! revision order. Reads, placement and the planner use it instead of
//! scanning the store; writers wait for their revision to be applied so a
//! client always reads its own writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use ferrofab_proto::v1::{Attachment, Kind, Node, Pool, Tenant, Volume};
use std::sync::atomic::Ordering;
use tokio::sync::watch;

use tracing::{error, warn};

use crate::resource::{prefix, Resource};
use crate::store::watch::WatchStream;
use crate::store::{Event, EventKind, KeyValue, Revision, SharedStore, StoreError};

/// Bytes and volume count placed on a pool or owned by a tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub volumes: u32,
}

/// The key prefix (without its `/`) of the usage fences: keys written with
/// every write that raises a pool's or tenant's usage, so that a decision
/// made on this cache can be made conditional on no such write having
/// landed since (see `ops::volume`).
pub const FENCES: &str = "fences";
/// Per storage node, the host key generations its target holds
/// (`keys`, written by the replica that received the node's report).
pub(crate) const HELD_KEYS_PREFIX: &str = "authkeys/held/";

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
    /// Mod revisions of the usage fences (`fences/pools/P`,
    /// `fences/tenants/T`, see `ops::volume`), by the key under `fences/`.
    pub fences: HashMap<String, Revision>,
    /// Per storage node, the host key generations its target holds, as
    /// recorded in the store (`authkeys/held/NODE`, written by whichever
    /// replica received the node's report). A workstation's stream on
    /// another replica needs them to hand it its key towards that node
    /// (`keys::host_key_towards`); the replica's own memory has only the
    /// reports it received itself.
    pub held_keys: HashMap<String, BTreeMap<String, u64>>,
    /// Secondary indexes and per-node change tracking for the planner.
    pub index: Index,
}

/// Lookups the planner and status handling need per node or per volume.
/// Without them every agent's desired state was a scan of every volume and
/// attachment on every change — O(objects) per write per connected agent,
/// which is what made create throughput fall as the store grew.
#[derive(Debug, Default)]
pub struct Index {
    /// Volume names by the storage node they are placed on.
    volumes_by_node: HashMap<String, BTreeSet<String>>,
    /// Attachment names by volume.
    attachments_by_volume: HashMap<String, BTreeSet<String>>,
    /// Attachment names by workstation node.
    attachments_by_node: HashMap<String, BTreeSet<String>>,
    /// Attachments being moved away from a workstation node, by that node
    /// (status.moved_from_node): its reports release them.
    attachments_moving_from: HashMap<String, BTreeSet<String>>,
    /// Last revision that may have changed each node's desired state.
    node_changed: HashMap<String, Revision>,
    /// Last revision that may have changed every node's desired state
    /// (node specs, pool specs: rare administrative changes).
    all_changed: Revision,
}

fn link(map: &mut HashMap<String, BTreeSet<String>>, key: &str, name: &str) {
    if !key.is_empty() {
        map.entry(key.to_string())
            .or_default()
            .insert(name.to_string());
    }
}

fn unlink(map: &mut HashMap<String, BTreeSet<String>>, key: &str, name: &str) {
    if let Some(set) = map.get_mut(key) {
        set.remove(name);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

fn names<'a>(
    map: &'a HashMap<String, BTreeSet<String>>,
    key: &str,
) -> impl Iterator<Item = &'a String> + 'a {
    map.get(key).into_iter().flatten()
}

impl Index {
    /// Whether `node`'s desired state may differ from the one computed at
    /// revision `since` (0: never computed).
    pub fn node_changed_since(&self, node: &str, since: Revision) -> bool {
        since == 0
            || self.all_changed > since
            || self.node_changed.get(node).is_some_and(|r| *r > since)
    }

    fn touch(&mut self, node: &str, rev: Revision) {
        if !node.is_empty() {
            self.node_changed.insert(node.to_string(), rev);
        }
    }
}

fn volume_node(v: &Volume) -> &str {
    v.status.as_ref().map_or("", |s| s.node.as_str())
}

fn moved_from(a: &Attachment) -> String {
    a.status
        .as_ref()
        .map(|s| s.moved_from_node.clone())
        .unwrap_or_default()
}

fn attachment_ends(a: &Attachment) -> (String, String) {
    a.spec
        .as_ref()
        .map(|s| (s.volume.clone(), s.node.clone()))
        .unwrap_or_default()
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
            "nodes" => self.apply_node(name, kv, kind, revision),
            "pools" => self.apply_spec_kind::<Pool>(name, kv, kind, revision),
            "attachments" => self.apply_attachment(name, kv, kind, revision),
            "tenants" => self.apply_kind::<Tenant>(name, kv, kind),
            "volumes" => self.apply_volume(name, kv, kind, revision),
            "authkeys" => {
                if let Some(node) = name.strip_prefix("held/") {
                    self.apply_held(node, kv, kind, revision);
                } else if let Some(node) = name.strip_prefix("host/") {
                    self.touch_host_key_users(node, revision);
                }
            }
            FENCES => match kind {
                EventKind::Put => {
                    self.fences.insert(name.to_string(), kv.mod_revision);
                }
                EventKind::Delete => {
                    self.fences.remove(name);
                }
            },
            _ => {}
        }
    }

    /// Nodes and pools: the planner reads only their specs, so a status
    /// write (every agent heartbeat) changes no desired state.
    fn apply_spec_kind<R: Stored>(
        &mut self,
        name: &str,
        kv: &KeyValue,
        kind: EventKind,
        revision: Revision,
    ) {
        let before = R::map(self).get(name).map(Resource::spec_fields);
        self.apply_kind::<R>(name, kv, kind);
        let after = R::map(self).get(name).map(Resource::spec_fields);
        if before != after {
            self.index.all_changed = revision;
        }
    }

    /// A node's spec, and of its status the one field the planner reads
    /// (`reports_allowed_hosts`: whether workstations wait for the node to
    /// admit their host). When it goes false (an older agent), waiting
    /// connections are released at once; when it goes true, the admissions
    /// written by the same report touch the workstations, and recomputing
    /// them before would withdraw connections already handed out.
    fn apply_node(&mut self, name: &str, kv: &KeyValue, kind: EventKind, revision: Revision) {
        let reports = |o: &Self| {
            o.nodes
                .get(name)
                .and_then(|n| n.status.as_ref())
                .is_some_and(|s| s.reports_allowed_hosts)
        };
        let before = reports(self);
        let auth_before = self.auth_flags(name);
        self.apply_spec_kind::<Node>(name, kv, kind, revision);
        if before && !reports(self) {
            self.index.all_changed = revision;
        }
        let auth_after = self.auth_flags(name);
        if auth_before.0 != auth_after.0 {
            // A workstation became able (or unable) to authenticate: the
            // storage nodes serving it gain or drop its key.
            self.touch_host_key_users(name, revision);
        }
        if auth_before.1 != auth_after.1 {
            // A storage node's controller keys come or go: so do those of
            // the workstations connected to it.
            self.touch_workstations_of(name, revision);
        }
    }

    /// `(dhchap_capable, dhchap_unidirectional)` of node `name`'s status.
    fn auth_flags(&self, name: &str) -> (bool, bool) {
        self.nodes
            .get(name)
            .and_then(|n| n.status.as_ref())
            .map_or((false, false), |s| {
                (s.dhchap_capable, s.dhchap_unidirectional)
            })
    }

    /// The workstations attached to volumes on storage node `node`.
    fn touch_workstations_of(&mut self, node: &str, revision: Revision) {
        let workstations: BTreeSet<String> = names(&self.index.volumes_by_node, node)
            .flat_map(|v| names(&self.index.attachments_by_volume, v))
            .filter_map(|a| self.attachments.get(a))
            .map(|a| attachment_ends(a).1)
            .collect();
        for ws in workstations {
            self.index.touch(&ws, revision);
        }
    }

    /// `authkeys/held/NODE`: what storage node NODE's target holds. A
    /// change touches the workstations attached to its volumes, whose
    /// connections carry keys towards it.
    fn apply_held(&mut self, node: &str, kv: &KeyValue, kind: EventKind, revision: Revision) {
        let held = match kind {
            EventKind::Put => match serde_json::from_slice::<BTreeMap<String, u64>>(&kv.value) {
                Ok(h) => Some(h),
                Err(e) => {
                    warn!(key = %kv.key, error = %e, "unreadable record of held key generations; ignored");
                    return;
                }
            },
            EventKind::Delete => None,
        };
        let changed = match held {
            Some(h) => self.held_keys.insert(node.to_string(), h.clone()) != Some(h),
            None => self.held_keys.remove(node).is_some(),
        };
        if changed {
            self.touch_workstations_of(node, revision);
        }
    }

    /// `authkeys/host/NODE` (issued or rotated, possibly by another
    /// replica), or NODE's ability to authenticate changed: workstation
    /// NODE's own stream and the storage nodes its attachments' volumes
    /// are on carry that key, so they recompute. The replica that wrote it
    /// also wakes its streams directly (`keys`).
    fn touch_host_key_users(&mut self, node: &str, revision: Revision) {
        // Also where it is still allowed as a move's previous holder.
        let storage: BTreeSet<String> = names(&self.index.attachments_by_node, node)
            .chain(names(&self.index.attachments_moving_from, node))
            .filter_map(|a| self.attachments.get(a))
            .filter_map(|a| self.volumes.get(&attachment_ends(a).0))
            .map(|v| volume_node(v).to_string())
            .collect();
        self.index.touch(node, revision);
        for s in storage {
            self.index.touch(&s, revision);
        }
    }

    fn apply_volume(&mut self, name: &str, kv: &KeyValue, kind: EventKind, revision: Revision) {
        if let Some(old) = self.volumes.get(name).cloned() {
            self.account(&old, -1);
            unlink(&mut self.index.volumes_by_node, volume_node(&old), name);
            self.index.touch(volume_node(&old), revision);
        }
        self.apply_kind::<Volume>(name, kv, kind);
        if let Some(new) = self.volumes.get(name).cloned() {
            self.account(&new, 1);
            link(&mut self.index.volumes_by_node, volume_node(&new), name);
            self.index.touch(volume_node(&new), revision);
        }
        // Workstations attached to it see its readiness and address.
        let workstations: Vec<String> = names(&self.index.attachments_by_volume, name)
            .filter_map(|a| self.attachments.get(a))
            .map(|a| attachment_ends(a).1)
            .collect();
        for ws in workstations {
            self.index.touch(&ws, revision);
        }
    }

    fn apply_attachment(&mut self, name: &str, kv: &KeyValue, kind: EventKind, revision: Revision) {
        if let Some(old) = self.attachments.get(name) {
            let (volume, node) = attachment_ends(old);
            let prev = moved_from(old);
            self.unlink_attachment(name, &volume, &node, revision);
            unlink(&mut self.index.attachments_moving_from, &prev, name);
            self.index.touch(&prev, revision);
        }
        self.apply_kind::<Attachment>(name, kv, kind);
        if let Some(new) = self.attachments.get(name) {
            let (volume, node) = attachment_ends(new);
            let prev = moved_from(new);
            link(&mut self.index.attachments_by_volume, &volume, name);
            link(&mut self.index.attachments_by_node, &node, name);
            link(&mut self.index.attachments_moving_from, &prev, name);
            self.touch_attachment(&volume, &node, revision);
            self.index.touch(&prev, revision);
        }
    }

    fn unlink_attachment(&mut self, name: &str, volume: &str, node: &str, revision: Revision) {
        unlink(&mut self.index.attachments_by_volume, volume, name);
        unlink(&mut self.index.attachments_by_node, node, name);
        self.touch_attachment(volume, node, revision);
    }

    /// The workstation's connections and the storage node's allowed hosts.
    fn touch_attachment(&mut self, volume: &str, node: &str, revision: Revision) {
        let storage = self
            .volumes
            .get(volume)
            .map(|v| volume_node(v).to_string())
            .unwrap_or_default();
        self.index.touch(node, revision);
        self.index.touch(&storage, revision);
    }

    /// Volumes placed on storage node `node`.
    pub fn volumes_on<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Volume> + 'a {
        names(&self.index.volumes_by_node, node).filter_map(|n| self.volumes.get(n))
    }

    /// Attachments of volume `volume`.
    pub fn attachments_of<'a>(&'a self, volume: &str) -> impl Iterator<Item = &'a Attachment> + 'a {
        names(&self.index.attachments_by_volume, volume).filter_map(|n| self.attachments.get(n))
    }

    /// Attachments being moved away from workstation `node` whose fence is
    /// not complete yet.
    pub fn attachments_moving_from<'a>(
        &'a self,
        node: &str,
    ) -> impl Iterator<Item = &'a Attachment> + 'a {
        names(&self.index.attachments_moving_from, node).filter_map(|n| self.attachments.get(n))
    }

    /// Attachments requested for workstation `node`.
    pub fn attachments_for<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Attachment> + 'a {
        names(&self.index.attachments_by_node, node).filter_map(|n| self.attachments.get(n))
    }

    pub fn pool_usage(&self, pool: &str) -> Usage {
        self.pool_usage.get(pool).copied().unwrap_or_default()
    }

    pub fn tenant_usage(&self, tenant: &str) -> Usage {
        self.tenant_usage.get(tenant).copied().unwrap_or_default()
    }

    /// Whether volume `name` with uid `uid` is cached at `size_bytes` or
    /// more: placement's test that a write it reserved for has landed.
    pub fn holds_volume(&self, name: &str, uid: &str, size_bytes: u64) -> bool {
        self.volumes.get(name).is_some_and(|v| {
            v.metadata.as_ref().is_some_and(|m| m.uid == uid)
                && v.status
                    .as_ref()
                    .is_some_and(|s| s.size_bytes >= size_bytes)
        })
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
        Self::start_following(store, true)
    }

    /// A cache of Apply's private fork ([`crate::staging`]), whose end is
    /// expected and not worth a warning.
    pub fn start_fork(store: SharedStore) -> Result<Arc<Self>, StoreError> {
        Self::start_following(store, false)
    }

    fn start_following(store: SharedStore, warn_on_end: bool) -> Result<Arc<Self>, StoreError> {
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
        for pfx in [format!("{FENCES}/"), HELD_KEYS_PREFIX.to_string()] {
            let (kvs, rev) = store.list(&pfx)?;
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
        cache.apply_backlog(std::mem::take(&mut stream.backlog));
        let follower = cache.clone();
        tokio::spawn(async move { follower.follow(store, stream, warn_on_end).await });
        Ok(cache)
    }

    /// Applies live events; if the hub cut this subscriber off for falling
    /// behind (a burst of writes while the runtime was busy), resumes from
    /// the last applied revision out of the hub's history.
    async fn follow(
        self: Arc<Self>,
        store: SharedStore,
        mut stream: WatchStream,
        warn_on_end: bool,
    ) {
        loop {
            while let Some(ev) = stream.live.recv().await {
                self.apply(&ev);
            }
            if !stream.lagged.load(Ordering::SeqCst) {
                break;
            }
            match store.watch("", self.revision()) {
                Ok(mut s) => {
                    self.apply_backlog(std::mem::take(&mut s.backlog));
                    stream = s;
                }
                Err(e) => {
                    error!(error = %e, "cache cannot resume following the store");
                    break;
                }
            }
        }
        if warn_on_end {
            warn!("cache stopped following the store");
        }
    }

    /// Applies one live event. The revision counts as applied only at the
    /// end of its transaction (see [`Event::batch_end`]), so `wait_for`
    /// never wakes with part of a multi-key write missing.
    fn apply(&self, ev: &Event) {
        {
            let mut o = self.objects.write().unwrap_or_else(PoisonError::into_inner);
            let complete = o.revision;
            o.apply(ev.kind, &ev.kv, ev.revision);
            // `Objects::revision` is what a watch snapshot or a List says
            // it reflects, so it too moves only at a transaction's end: a
            // snapshot taken mid-transaction says the revision before it,
            // and the watch that follows it replays the whole transaction.
            if !ev.batch_end {
                o.revision = complete;
            }
        }
        if ev.batch_end {
            self.applied.send_replace(ev.revision);
        }
    }

    /// Applies a watch backlog. It holds whole transactions (the hub takes
    /// the same lock to publish a batch and to cut a backlog), so its last
    /// revision is complete whatever the flags say.
    fn apply_backlog(&self, backlog: Vec<Arc<Event>>) {
        let Some(last) = backlog.last().map(|e| e.revision) else {
            return;
        };
        {
            let mut o = self.objects.write().unwrap_or_else(PoisonError::into_inner);
            for ev in &backlog {
                o.apply(ev.kind, &ev.kv, ev.revision);
            }
        }
        self.applied.send_replace(last);
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferrofab_proto::v1::{
        AttachmentSpec, NodeSpec, NodeStatus, ObjectMeta, VolumeSpec, VolumeStatus,
    };
    use prost::Message;

    fn put<R: Message>(o: &mut Objects, key: &str, obj: &R, rev: Revision) {
        let kv = KeyValue {
            key: key.into(),
            value: obj.encode_to_vec(),
            create_revision: rev,
            mod_revision: rev,
        };
        o.apply(EventKind::Put, &kv, rev);
    }

    fn meta(name: &str) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            name: name.into(),
            ..Default::default()
        })
    }

    fn volume(name: &str, node: &str) -> Volume {
        Volume {
            metadata: meta(name),
            spec: Some(VolumeSpec::default()),
            status: Some(VolumeStatus {
                node: node.into(),
                ..Default::default()
            }),
        }
    }

    fn attachment(name: &str, volume: &str, node: &str) -> Attachment {
        Attachment {
            metadata: meta(name),
            spec: Some(AttachmentSpec {
                volume: volume.into(),
                node: node.into(),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn indexes_follow_moves_and_deletes() {
        let mut o = Objects::default();
        put(&mut o, "volumes/v1", &volume("v1", "s1"), 1);
        put(&mut o, "volumes/v2", &volume("v2", "s2"), 2);
        put(&mut o, "attachments/a1", &attachment("a1", "v1", "ws1"), 3);
        assert_eq!(o.volumes_on("s1").count(), 1);
        assert_eq!(o.attachments_of("v1").count(), 1);
        assert_eq!(o.attachments_for("ws1").count(), 1);
        put(&mut o, "volumes/v1", &volume("v1", "s2"), 4);
        assert_eq!(o.volumes_on("s1").count(), 0);
        assert_eq!(o.volumes_on("s2").count(), 2);
        let kv = KeyValue {
            key: "attachments/a1".into(),
            value: vec![],
            create_revision: 3,
            mod_revision: 5,
        };
        o.apply(EventKind::Delete, &kv, 5);
        assert_eq!(o.attachments_of("v1").count(), 0);
        assert_eq!(o.attachments_for("ws1").count(), 0);
    }

    /// What a storage node's target holds, recorded by another replica,
    /// reaches this replica's workstation streams: the record is kept and
    /// the workstations attached to that node's volumes recompute (the
    /// `ha` suite's workstation on another replica than its storage node
    /// waited for its key forever without it).
    #[test]
    fn held_key_records_are_kept_and_touch_the_workstations_using_the_node() {
        let mut o = Objects::default();
        put(&mut o, "volumes/v1", &volume("v1", "s2"), 1);
        put(&mut o, "volumes/v2", &volume("v2", "s1"), 2);
        put(&mut o, "attachments/a1", &attachment("a1", "v1", "ws2"), 3);
        put(&mut o, "attachments/a2", &attachment("a2", "v2", "ws1"), 4);
        let held = |rev: Revision, body: &str| KeyValue {
            key: "authkeys/held/s2".into(),
            value: body.as_bytes().to_vec(),
            create_revision: 5,
            mod_revision: rev,
        };
        o.apply(EventKind::Put, &held(5, r#"{"nqn.host:ws2":1}"#), 5);
        assert_eq!(o.held_keys["s2"]["nqn.host:ws2"], 1);
        assert!(o.index.node_changed_since("ws2", 4));
        assert!(!o.index.node_changed_since("ws1", 4), "not attached to s2");
        // The same record again changes nothing; a newer generation does.
        o.apply(EventKind::Put, &held(6, r#"{"nqn.host:ws2":1}"#), 6);
        assert!(!o.index.node_changed_since("ws2", 5));
        o.apply(EventKind::Put, &held(7, r#"{"nqn.host:ws2":2}"#), 7);
        assert!(o.index.node_changed_since("ws2", 6));
        // Unreadable: ignored, the last good record stays.
        o.apply(EventKind::Put, &held(8, "not json"), 8);
        assert_eq!(o.held_keys["s2"]["nqn.host:ws2"], 2);
        o.apply(EventKind::Delete, &held(9, ""), 9);
        assert!(!o.held_keys.contains_key("s2"));
        assert!(o.index.node_changed_since("ws2", 8));
        // A host key issued or rotated elsewhere: the workstation and the
        // storage node its volume is on recompute, nobody else.
        let host = KeyValue {
            key: "authkeys/host/ws2".into(),
            value: b"{}".to_vec(),
            create_revision: 10,
            mod_revision: 10,
        };
        o.apply(EventKind::Put, &host, 10);
        assert!(o.index.node_changed_since("ws2", 9));
        assert!(o.index.node_changed_since("s2", 9));
        assert!(!o.index.node_changed_since("s1", 9));
        assert!(!o.index.node_changed_since("ws1", 9));
        // ws2 becomes able to authenticate (its report, maybe to another
        // replica): s2 must gain its key.
        let mut n = Node {
            metadata: meta("ws2"),
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus::default()),
        };
        put(&mut o, "nodes/ws2", &n, 11);
        if let Some(st) = n.status.as_mut() {
            st.dhchap_capable = true;
        }
        put(&mut o, "nodes/ws2", &n, 12);
        assert!(o.index.node_changed_since("s2", 11));
        assert!(!o.index.node_changed_since("s1", 11));
        // s1 turns unidirectional: its workstations drop controller keys.
        let mut n = Node {
            metadata: meta("s1"),
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus::default()),
        };
        put(&mut o, "nodes/s1", &n, 13);
        if let Some(st) = n.status.as_mut() {
            st.dhchap_unidirectional = true;
        }
        put(&mut o, "nodes/s1", &n, 14);
        assert!(o.index.node_changed_since("ws1", 13));
        assert!(!o.index.node_changed_since("ws2", 13));
    }

    #[test]
    fn changes_touch_only_the_nodes_they_concern() {
        let mut o = Objects::default();
        put(&mut o, "volumes/v1", &volume("v1", "s1"), 1);
        put(&mut o, "attachments/a1", &attachment("a1", "v1", "ws1"), 2);
        let i = &o.index;
        assert!(i.node_changed_since("s1", 1), "attachment adds a host");
        assert!(i.node_changed_since("ws1", 1));
        assert!(!i.node_changed_since("s2", 2));
        put(&mut o, "volumes/v2", &volume("v2", "s2"), 3);
        assert!(o.index.node_changed_since("s2", 2));
        assert!(!o.index.node_changed_since("s1", 2));
        assert!(!o.index.node_changed_since("ws1", 2));
        // A volume change reaches the workstations attached to it.
        put(&mut o, "volumes/v1", &volume("v1", "s1"), 4);
        assert!(o.index.node_changed_since("ws1", 3));
        // Node status (heartbeats) changes nobody's desired state; spec does.
        let mut n = Node {
            metadata: meta("ws9"),
            spec: Some(NodeSpec::default()),
            status: None,
        };
        put(&mut o, "nodes/ws9", &n, 5);
        n.status = Some(NodeStatus::default());
        n.status.as_mut().expect("status").agent_version = "x".into();
        put(&mut o, "nodes/ws9", &n, 6);
        assert!(!o.index.node_changed_since("s1", 5));
        n.spec.as_mut().expect("spec").host_nqn = "nqn.2014-08.org.nvmexpress:uuid:x".into();
        put(&mut o, "nodes/ws9", &n, 7);
        assert!(o.index.node_changed_since("s1", 6));
        assert!(o.index.node_changed_since("anything", 6));
    }

    fn event(rev: Revision, key: &str, batch_end: bool) -> Event {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.into(),
                value: VolumeSpec::default().encode_to_vec(),
                create_revision: rev,
                mod_revision: rev,
            },
            revision: rev,
            batch_end,
        }
    }

    /// A transaction that writes two keys arrives as two events with one
    /// revision: a reader waiting for that revision must find both (an
    /// Apply that wrote a whole layout was read back with a volume missing).
    #[test]
    fn a_revision_counts_as_applied_only_at_the_end_of_its_transaction() {
        let (applied, _) = watch::channel(0);
        let cache = Cache {
            objects: RwLock::new(Objects::default()),
            applied,
        };
        cache.apply(&event(5, "volumes/a", false));
        assert_eq!(cache.revision(), 0, "half a transaction is not applied");
        assert_eq!(
            cache.read().revision,
            0,
            "nor is it what a snapshot reflects"
        );
        cache.apply(&event(5, "volumes/b", true));
        assert_eq!(cache.revision(), 5);
        assert_eq!(cache.read().revision, 5);
        // A backlog holds whole transactions whatever its flags say.
        cache.apply_backlog(vec![
            Arc::new(event(6, "volumes/c", false)),
            Arc::new(event(6, "volumes/d", false)),
        ]);
        assert_eq!(cache.revision(), 6);
    }
}
