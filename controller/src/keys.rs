//! DH-HMAC-CHAP keys issued by the controller (issue 16, control plane).
//!
//! * One host secret per workstation node that can authenticate
//!   (`NodeStatus.dhchap_capable`), stored under `authkeys/host/<node>`;
//!   one controller secret per exported subsystem (bidirectional
//!   authentication), under `authkeys/ctrl/<subsystem NQN>`.
//! * Secrets are sealed with XChaCha20-Poly1305 under a 32-byte key kept in
//!   `pki.dir/authkeys.key` beside the CA key (mode 0600, created on first start), so
//!   a copy of the store alone does not leak them; the AEAD's associated
//!   data is the store key, so a sealed secret cannot be moved to another
//!   slot. Backups carry both the store and the PKI directory, sealed again.
//! * Secrets leave the controller only in desired-state snapshots sent over
//!   mTLS to the two nodes that need them ([`fill`]); everything else (logs,
//!   metrics, admin APIs) sees the generation and a fingerprint at most.

use std::collections::{BTreeMap, HashMap};

use ferrofab_proto::v1::{DesiredState, DhchapKey, ExportStatus, HostKey, NodeRole};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::keyring::{applied, internal, Keys, Sealed};
use crate::ops::Shared;
use crate::store::{Txn, TxnResult};

const HOST_PREFIX: &str = "authkeys/host/";
const CTRL_PREFIX: &str = "authkeys/ctrl/";
/// Per storage node, the host key generations its target holds (from its
/// reports), so that a restarted controller hands workstations their keys
/// at once instead of waiting for every storage node to report again.
const HELD_PREFIX: &str = crate::cache::HELD_KEYS_PREFIX;

/// The secrets of one slot: the one in force and, during a rotation, the
/// one it replaced (kept so the record shows what was rolled).
#[derive(Clone, Serialize, Deserialize)]
struct Record {
    current: Sealed,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<Sealed>,
    /// When `current` was issued (unix seconds), for `auth.rotate_every`.
    #[serde(default)]
    issued_at: i64,
}

/// The sealed keys among `kvs` (records of the `authkeys/` prefix), for
/// `--check-config`.
pub fn sealed_records(kvs: &[crate::store::KeyValue]) -> Vec<(String, crate::keyring::Sealed)> {
    kvs.iter()
        .filter(|kv| kv.key.starts_with(HOST_PREFIX) || kv.key.starts_with(CTRL_PREFIX))
        .filter_map(|kv| {
            let rec: Record = serde_json::from_slice(&kv.value).ok()?;
            Some((kv.key.clone(), rec.current))
        })
        .collect()
}

/// The cluster's own `[auth] require` choice, recorded at its first start.
const REQUIRE_SLOT: &str = "authkeys/require";

#[derive(Serialize, Deserialize)]
struct RequirePolicy {
    require: bool,
}

/// `[auth] require` in force, and where it comes from (`config` or
/// `cluster`). The cluster's choice is recorded in the store the first
/// time a controller of this version starts on it: required for a new
/// cluster (a store without objects), not required for one that already
/// has objects (it predates the setting, and its hosts without keys must
/// not be locked out by an upgrade). `configured` (the config key), when
/// set, overrides the record without changing it.
pub async fn require_policy(
    store: &crate::store::SharedStore,
    cache: &crate::cache::Cache,
    configured: Option<bool>,
) -> Result<(bool, &'static str), ApiError> {
    let recorded = match store.get(REQUIRE_SLOT)? {
        Some(kv) => {
            serde_json::from_slice::<RequirePolicy>(&kv.value)
                .map_err(|e| internal(&format!("{REQUIRE_SLOT} unreadable: {e}")))?
                .require
        }
        None => {
            let new_cluster = {
                let o = cache.read();
                o.nodes.is_empty()
                    && o.pools.is_empty()
                    && o.volumes.is_empty()
                    && o.attachments.is_empty()
                    && o.tenants.is_empty()
            };
            let value = serde_json::to_vec(&RequirePolicy {
                require: new_cluster,
            })
            .map_err(|e| internal(&e.to_string()))?;
            let txn = Txn::new().when(REQUIRE_SLOT, 0).put(REQUIRE_SLOT, value);
            let r = store
                .txn(txn)
                .await
                .map_err(|_| ApiError::Internal("store writer stopped".into()))??;
            match r {
                TxnResult::Committed { .. } => {
                    tracing::info!(
                        require = new_cluster,
                        new_cluster,
                        "cluster authentication policy recorded ([auth] require overrides it)"
                    );
                    new_cluster
                }
                // Another controller recorded it first: theirs stands.
                TxnResult::CompareFailed { .. } => {
                    let kv = store
                        .get(REQUIRE_SLOT)?
                        .ok_or_else(|| internal(&format!("{REQUIRE_SLOT} vanished")))?;
                    serde_json::from_slice::<RequirePolicy>(&kv.value)
                        .map_err(|e| internal(&format!("{REQUIRE_SLOT} unreadable: {e}")))?
                        .require
                }
            }
        }
    };
    Ok(match configured {
        Some(c) => (c, "config"),
        None => (recorded, "cluster"),
    })
}

fn host_slot(node: &str) -> String {
    format!("{HOST_PREFIX}{node}")
}

fn ctrl_slot(subsystem_nqn: &str) -> String {
    format!("{CTRL_PREFIX}{subsystem_nqn}")
}

fn read_record(s: &Shared, slot: &str) -> Result<Option<(Record, u64)>, ApiError> {
    let Some(kv) = s.store.get(slot)? else {
        return Ok(None);
    };
    let rec: Record = serde_json::from_slice(&kv.value)
        .map_err(|e| internal(&format!("{slot} unreadable: {e}")))?;
    Ok(Some((rec, kv.mod_revision)))
}

/// The key of `slot`, generated (generation 1) if it has none yet. Two
/// streams racing to create it both end up with the one that committed.
async fn get_or_create(s: &Shared, keys: &Keys, slot: &str) -> Result<DhchapKey, ApiError> {
    if let Some((rec, _)) = read_record(s, slot)? {
        return keys.unseal(slot, &rec.current);
    }
    let rec = Record {
        current: keys.fresh(slot, 1)?,
        previous: None,
        issued_at: s.clock.now(),
    };
    let value = serde_json::to_vec(&rec).map_err(|e| internal(&e.to_string()))?;
    let txn = Txn::new()
        .when(slot.to_string(), 0)
        .put(slot.to_string(), value);
    match s.commit(txn).await? {
        TxnResult::Committed { .. } => {
            tracing::info!(slot, fingerprint = %rec.current.fingerprint, "authentication key issued");
            if let Some(node) = slot.strip_prefix(HOST_PREFIX) {
                s.metrics.auth_keys.set_host_key(node, 1, rec.issued_at);
            }
            // The other side (a storage node computed before this host
            // could authenticate) must learn it too.
            keys.changed.send_modify(|n| *n = n.wrapping_add(1));
            keys.unseal(slot, &rec.current)
        }
        TxnResult::CompareFailed { .. } => {
            let (rec, _) = read_record(s, slot)?
                .ok_or_else(|| internal(&format!("{slot} vanished while being created")))?;
            keys.unseal(slot, &rec.current)
        }
    }
}

/// The host key generation storage node `storage`'s target holds for
/// `host_nqn`, from the store's record (`authkeys/held/NODE`, written by
/// whichever replica received the node's report and followed by every
/// replica's cache), so that a workstation whose stream is on another
/// replica than its storage node's reports still gets its key. The record
/// is authoritative (a write waits for the cache, so the replica that made
/// it sees it too); this replica's memory of the node's reports counts
/// only while the store has no record for the node (a write that failed).
fn held_generation(s: &Shared, keys: &Keys, storage: &str, host_nqn: &str) -> Option<u64> {
    let stored = s
        .cache
        .read()
        .held_keys
        .get(storage)
        .map(|h| h.get(host_nqn).copied());
    match stored {
        Some(g) => g,
        None => applied(keys)
            .get(&(storage.to_string(), host_nqn.to_string()))
            .copied(),
    }
}

/// The host key workstation `node` may use towards storage node
/// `storage`: the one that node's target holds (it reported its
/// generation). Before the target holds any, none: the workstation
/// connects unauthenticated until the storage node is ready, rather than
/// fail authenticating against a target that does not know its key yet.
/// After a rotation, the previous key until the target holds the new one.
async fn host_key_towards(
    s: &Shared,
    keys: &Keys,
    node: &str,
    host_nqn: &str,
    storage: &str,
) -> Result<Option<DhchapKey>, ApiError> {
    let Some(held) = held_generation(s, keys, storage, host_nqn) else {
        return Ok(None);
    };
    let slot = host_slot(node);
    let current = get_or_create(s, keys, &slot).await?;
    if held >= current.generation {
        return Ok(Some(current));
    }
    match read_record(s, &slot)?.and_then(|(r, _)| r.previous) {
        Some(prev) if prev.generation == held => Ok(Some(keys.unseal(&slot, &prev)?)),
        _ => Ok(Some(current)),
    }
}

/// `RotateNodeKey`: the node must be a workstation.
pub async fn rotate_node_key(
    s: &Shared,
    node: &str,
) -> Result<ferrofab_proto::v1::RotateNodeKeyResponse, ApiError> {
    crate::resource::validate_name("node", node)?;
    let is_ws = {
        let objs = s.cache.read();
        let n = objs
            .nodes
            .get(node)
            .ok_or_else(|| ApiError::not_found("node", node))?;
        n.spec
            .as_ref()
            .is_some_and(|sp| sp.roles.contains(&(NodeRole::Workstation as i32)))
    };
    if !is_ws {
        return Err(ApiError::FailedPrecondition(format!(
            "node {node:?} is not a workstation: only workstations (hosts) have a host key"
        )));
    }
    let r = rotate_host_key(s, node, "manual").await?;
    Ok(ferrofab_proto::v1::RotateNodeKeyResponse {
        node: node.to_string(),
        generation: r.generation,
        fingerprint: r.fingerprint,
    })
}

/// What `ferrofab node rotate-key` reports: never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub generation: u64,
    pub fingerprint: String,
}

/// Replaces `node`'s host secret with a fresh one (generation + 1) and
/// wakes every desired-state stream: the storage nodes get the new key for
/// their targets and the workstation re-authenticates its live
/// connections with it, without reconnecting. `trigger` (`manual`,
/// `periodic`) labels the rotation metric.
pub async fn rotate_host_key(s: &Shared, node: &str, trigger: &str) -> Result<Rotated, ApiError> {
    let keys = s.keys.as_ref().ok_or_else(disabled)?;
    let slot = host_slot(node);
    let (old, rev) = match read_record(s, &slot)? {
        Some((rec, rev)) => (Some(rec.current), rev),
        None => (None, 0),
    };
    let generation = old.as_ref().map_or(1, |o| o.generation.saturating_add(1));
    let rec = Record {
        current: keys.fresh(&slot, generation)?,
        previous: old,
        issued_at: s.clock.now(),
    };
    let value = serde_json::to_vec(&rec).map_err(|e| internal(&e.to_string()))?;
    match s
        .commit(Txn::new().when(slot.clone(), rev).put(slot.clone(), value))
        .await?
    {
        TxnResult::Committed { .. } => {}
        TxnResult::CompareFailed { .. } => {
            return Err(ApiError::FailedPrecondition(format!(
                "the host key of node {node:?} changed meanwhile; try again"
            )))
        }
    }
    tracing::info!(%node, generation, fingerprint = %rec.current.fingerprint, trigger, "host key rotated");
    s.metrics.auth_keys.rotated(trigger);
    s.metrics
        .auth_keys
        .set_host_key(node, generation, rec.issued_at);
    keys.changed.send_modify(|n| *n = n.wrapping_add(1));
    Ok(Rotated {
        generation,
        fingerprint: rec.current.fingerprint,
    })
}

fn disabled() -> ApiError {
    ApiError::FailedPrecondition(
        "data-path authentication keys are not available on this controller (no pki.dir key file)"
            .into(),
    )
}

/// Whether `node` is a workstation whose data path can authenticate.
fn capable(node: &ferrofab_proto::v1::Node) -> bool {
    let ws = node
        .spec
        .as_ref()
        .is_some_and(|s| s.roles.contains(&(NodeRole::Workstation as i32)));
    ws && node.status.as_ref().is_some_and(|st| st.dhchap_capable)
}

/// Whether storage node `node` holds controller secrets per host rather
/// than per subsystem (Linux nvmet, `NodeStatus.dhchap_unidirectional`):
/// it then gets no controller keys, and neither do the workstations for
/// their connections to it, so authentication towards it is
/// unidirectional. (A storage node that cannot authenticate at all, such
/// as Linux 6.1's nvmet, needs no flag: it never reports a host key held,
/// so its workstations never get one; see `host_key_towards`.)
fn unidirectional(objs: &crate::cache::Objects, node: &str) -> bool {
    objs.nodes
        .get(node)
        .and_then(|n| n.status.as_ref())
        .is_some_and(|st| st.dhchap_unidirectional)
}

/// The node (capable of authenticating) whose host NQN is `nqn`.
fn node_of(objs: &crate::cache::Objects, nqn: &str) -> Option<String> {
    objs.nodes
        .iter()
        .find(|(_, n)| capable(n) && n.spec.as_ref().is_some_and(|s| s.host_nqn == nqn))
        .map(|(name, _)| name.clone())
}

/// Puts the secrets `node` needs into its desired state, and nothing else:
/// a storage node gets, per export, the key of each allowed host that
/// authenticates and the subsystem's controller key; a workstation gets
/// its own host key and the controller key of each subsystem it connects
/// to. Called only for the node's own stream.
pub async fn fill(s: &Shared, node: &str, ds: &mut DesiredState) -> Result<(), ApiError> {
    let Some(keys) = s.keys.as_ref() else {
        return Ok(());
    };
    let one_way = unidirectional(&s.cache.read(), node);
    for e in &mut ds.exports {
        e.require_auth = keys.require();
        let owners: Vec<(String, String)> = {
            let objs = s.cache.read();
            e.allowed_hosts
                .iter()
                .filter_map(|h| node_of(&objs, h).map(|n| (h.clone(), n)))
                .collect()
        };
        for (host_nqn, owner) in owners {
            let key = get_or_create(s, keys, &host_slot(&owner)).await?;
            e.host_keys.push(HostKey {
                host_nqn,
                key: Some(key),
            });
        }
        if !e.host_keys.is_empty() && !one_way {
            e.ctrl_key = Some(get_or_create(s, keys, &ctrl_slot(&e.subsystem_nqn)).await?);
        }
    }
    for c in &mut ds.connections {
        c.require_auth = keys.require();
    }
    if ds.connections.is_empty() {
        return Ok(());
    }
    let (host_nqn, storage_of) = {
        let objs = s.cache.read();
        let Some(me) = objs.nodes.get(node).filter(|n| capable(n)) else {
            return Ok(());
        };
        let nqn = me
            .spec
            .as_ref()
            .map(|sp| sp.host_nqn.clone())
            .unwrap_or_default();
        let storage: Vec<(String, bool)> = ds
            .connections
            .iter()
            .map(|c| {
                let st = objs
                    .volumes
                    .get(&c.volume)
                    .and_then(|v| v.status.as_ref())
                    .map(|st| st.node.clone())
                    .unwrap_or_default();
                let one_way = unidirectional(&objs, &st);
                (st, one_way)
            })
            .collect();
        (nqn, storage)
    };
    for (c, (storage, one_way)) in ds.connections.iter_mut().zip(storage_of) {
        c.host_key = host_key_towards(s, keys, node, &host_nqn, &storage).await?;
        if c.host_key.is_some() && !one_way {
            c.ctrl_key = Some(get_or_create(s, keys, &ctrl_slot(&c.subsystem_nqn)).await?);
        }
    }
    Ok(())
}

/// The host key generations a storage node's report says its target
/// holds: per host, the lowest across its exports.
pub fn held(exports: &[ExportStatus]) -> HashMap<String, u64> {
    let mut now_held: HashMap<String, u64> = HashMap::new();
    for hk in exports.iter().flat_map(|e| &e.host_keys) {
        let g = now_held.entry(hk.host_nqn.clone()).or_insert(hk.generation);
        *g = (*g).min(hk.generation);
    }
    now_held
}

/// Records [`held`] for storage node `node`, in memory and (when it
/// changed) in the store under `authkeys/held/<node>`. Wakes the streams
/// when a generation went up, so that a workstation waiting for its
/// rotated key gets it.
pub async fn note_held(s: &Shared, node: &str, now_held: HashMap<String, u64>) {
    let Some(keys) = s.keys.as_ref() else {
        return;
    };
    let (went_up, mine) = {
        let mut map = applied(keys);
        map.retain(|(n, h), _| n != node || now_held.contains_key(h));
        let mut went_up = false;
        for (host, generation) in &now_held {
            let prev = map.insert((node.to_string(), host.clone()), *generation);
            went_up |= prev.is_none_or(|g| g < *generation);
        }
        let mine: BTreeMap<String, u64> = now_held.into_iter().collect();
        (went_up, mine)
    };
    // Compared with the store's record (through the cache), not with this
    // replica's memory: the node may have reported to another replica
    // before, and a write that failed must be retried by the next report.
    let stored = s
        .cache
        .read()
        .held_keys
        .get(node)
        .cloned()
        .unwrap_or_default();
    if stored != mine {
        if let Err(e) = persist_held(s, node, &mine).await {
            // The next report tries again (the record still differs).
            tracing::warn!(%node, error = %e, "recording the host key generations held");
        }
    }
    if went_up {
        keys.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

async fn persist_held(
    s: &Shared,
    node: &str,
    held: &BTreeMap<String, u64>,
) -> Result<(), ApiError> {
    let slot = format!("{HELD_PREFIX}{node}");
    let txn = if held.is_empty() {
        Txn::new().delete(slot)
    } else {
        let value = serde_json::to_vec(held).map_err(|e| internal(&e.to_string()))?;
        Txn::new().put(slot, value)
    };
    s.commit(txn).await.map(|_| ())
}

/// At start-up: the host key metrics from the store's records, and how
/// many held generations the store records (the cache follows those).
pub fn load_key_metrics(s: &Shared) -> Result<usize, ApiError> {
    if s.keys.is_none() {
        return Ok(0);
    }
    // The key metrics start from the records too.
    let (hosts, _) = s.store.list(HOST_PREFIX)?;
    for kv in hosts {
        let (Some(node), Ok(rec)) = (
            kv.key.strip_prefix(HOST_PREFIX),
            serde_json::from_slice::<Record>(&kv.value),
        ) else {
            continue;
        };
        s.metrics
            .auth_keys
            .set_host_key(node, rec.current.generation, rec.issued_at);
    }
    // What the targets hold is followed by the cache (loaded with it, see
    // `Objects::held_keys`); the count is for the start-up log.
    let n = s.cache.read().held_keys.values().map(BTreeMap::len).sum();
    Ok(n)
}

/// Removes the key records nothing uses any more: the host key and the
/// held generations of deleted nodes, and the controller key of
/// subsystems no volume has. Level-triggered (it compares the store with
/// the objects each time), so running it again changes nothing; a record
/// that changed meanwhile is left for the next run. Returns how many
/// records went.
pub async fn cleanup(s: &Shared) -> Result<usize, ApiError> {
    let Some(keys) = s.keys.as_ref() else {
        return Ok(0);
    };
    let mut stale = Vec::new();
    for prefix in [HOST_PREFIX, HELD_PREFIX, CTRL_PREFIX] {
        let (kvs, _) = s.store.list(prefix)?;
        let objs = s.cache.read();
        for kv in kvs {
            let Some(name) = kv.key.strip_prefix(prefix) else {
                continue;
            };
            let used = if prefix == CTRL_PREFIX {
                objs.volumes
                    .values()
                    .any(|v| v.status.as_ref().is_some_and(|st| st.subsystem_nqn == name))
            } else {
                objs.nodes.contains_key(name)
            };
            if !used {
                stale.push((kv.key.clone(), kv.mod_revision));
            }
        }
    }
    let mut removed = 0;
    for (key, rev) in stale {
        let txn = Txn::new().when(key.clone(), rev).delete(key.clone());
        if let TxnResult::Committed { .. } = s.commit(txn).await? {
            tracing::info!(%key, "authentication key record of a deleted object removed");
            if let Some(node) = key.strip_prefix(HOST_PREFIX) {
                s.metrics.auth_keys.remove_host_key(node);
            }
            removed += 1;
        }
    }
    {
        let objs = s.cache.read();
        applied(keys).retain(|(n, _), _| objs.nodes.contains_key(n));
    }
    Ok(removed)
}

/// Whether `node` last reported that its data path can authenticate.
pub fn reports_capable(s: &Shared, node: &str) -> bool {
    s.cache
        .read()
        .nodes
        .get(node)
        .and_then(|n| n.status.as_ref())
        .is_some_and(|st| st.dhchap_capable)
}

/// A workstation's capability changed (its agent started using a holder
/// that takes keys, or went back to one that does not): the storage nodes
/// serving it must gain or drop its key, and their desired state does not
/// depend on another node's status in the cache's index, so every stream
/// recomputes.
pub fn capability_changed(s: &Shared, node: &str) {
    if let Some(keys) = s.keys.as_ref() {
        tracing::info!(%node, capable = reports_capable(s, node), "data-path authentication capability changed");
        keys.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Wakes on every key change (rotation, a rolled-out key); `None`
/// without keys (a rehearsal fork).
pub fn subscribe(s: &Shared) -> Option<tokio::sync::watch::Receiver<u64>> {
    s.keys.as_ref().map(|k| k.subscribe())
}

/// How often the periodic rotation looks for old keys. Rotation periods
/// are hours at least (`MIN_ROTATE_EVERY`), so a minute late is nothing.
const ROTATION_CHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a key issued at `issued_at` is due for rotation at `now`.
fn due(issued_at: i64, every: std::time::Duration, now: i64) -> bool {
    let every = i64::try_from(every.as_secs()).unwrap_or(i64::MAX);
    issued_at.saturating_add(every) <= now
}

/// The keys' housekeeping, every [`ROTATION_CHECK`]: removes the records
/// of deleted objects ([`cleanup`]) and, with `auth.rotate_every`, rotates
/// each workstation's host key once it is that old, the same way
/// `ferrofab node rotate-key` does.
pub async fn run_housekeeping(s: std::sync::Arc<Shared>, every: Option<std::time::Duration>) {
    let mut tick = tokio::time::interval(ROTATION_CHECK);
    loop {
        tick.tick().await;
        // Singletons: only the leader cleans up and rotates (see crate::leader).
        let pass = || async {
            if let Err(e) = cleanup(&s).await {
                tracing::warn!(error = %e, "removing unused authentication key records");
            }
            if let Some(every) = every {
                if let Err(e) = rotate_due(&s, every).await {
                    tracing::warn!(error = %e, "periodic key rotation");
                }
            }
        };
        crate::loops::as_leader(&s, pass).await;
    }
}

async fn rotate_due(s: &Shared, every: std::time::Duration) -> Result<(), ApiError> {
    let now = s.clock.now();
    let (kvs, _) = s.store.list(HOST_PREFIX)?;
    for kv in kvs {
        let Some(node) = kv.key.strip_prefix(HOST_PREFIX) else {
            continue;
        };
        let Ok(rec) = serde_json::from_slice::<Record>(&kv.value) else {
            continue;
        };
        if due(rec.issued_at, every, now) && s.cache.read().nodes.contains_key(node) {
            let r = rotate_host_key(s, node, "periodic").await?;
            tracing::info!(%node, generation = r.generation, "periodic host key rotation");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_storage_node_reporting_it_is_unidirectional() {
        use ferrofab_proto::v1::{Node, NodeStatus};
        let mut objs = crate::cache::Objects::default();
        let node = |one_way: bool| Node {
            status: Some(NodeStatus {
                dhchap_unidirectional: one_way,
                ..Default::default()
            }),
            ..Default::default()
        };
        objs.nodes.insert("nvmet".into(), node(true));
        objs.nodes.insert("builtin".into(), node(false));
        objs.nodes.insert("silent".into(), Node::default());
        assert!(unidirectional(&objs, "nvmet"));
        assert!(!unidirectional(&objs, "builtin"));
        // No report yet, or an unknown node: controller keys as before.
        assert!(!unidirectional(&objs, "silent"));
        assert!(!unidirectional(&objs, "absent"));
    }

    #[test]
    fn keys_are_due_once_rotate_every_has_passed() {
        let day = std::time::Duration::from_secs(86_400);
        assert!(!due(1_000, day, 1_000 + 86_399));
        assert!(due(1_000, day, 1_000 + 86_400));
        // Records written before issued_at existed (0) are due at once.
        assert!(due(0, day, 86_400));
    }
}
