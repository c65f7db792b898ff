//! Computes a node's desired state from the objects. Pure: the same objects
//! give the same desired state, which is what makes agent reconnects and
//! controller restarts safe. It reads only the node's own objects through
//! the cache's indexes (volumes on the node, attachments of a volume or for
//! a workstation), so its cost does not grow with the size of the store.
//!
//! Ordering rules encoded here:
//! * a workstation is told to connect only once the volume's export is
//!   reported ready;
//! * a detaching attachment (deletion requested) disappears from the
//!   workstation's connections at once, but its host stays allowed on the
//!   export until the workstation reports the disconnect (then the
//!   attachment object is removed and the host with it);
//! * the fence of a move (see [`crate::access`]): a moved attachment's new
//!   node gets no connection while `status.moved_from_node` is set, and the
//!   previous node's host stays allowed until it is released (its
//!   workstation reported the disconnect, or the move was forced). The
//!   controller clears `moved_from_node` only once the storage node has
//!   reported, for a desired state at least as new as the attachment, that
//!   the old host is neither allowed nor connected. So no node is ever told
//!   to connect while another one that held the volume may still write.
//! * an export's read-only hosts are those whose every attachment of the
//!   volume is READ_ONLY; the target refuses their writes.

use ferrofab_proto::v1::{
    AccessMode, Attachment, BackingKind, Connection, DataAddress, DesiredState, Export, Listener,
    Node, NodeRole, Pool, ReclaimPolicy, Removal, TransportOptions, Volume, VolumeStatus,
};

use std::collections::BTreeMap;

use crate::access;
use crate::cache::Objects;

/// NVMe/TCP's IANA port, used when an address has none.
pub const DEFAULT_PORT: u32 = 4420;

/// Transport settings every connection gets (from the controller config).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults {
    pub transport: TransportOptions,
}

fn deleting(m: Option<&ferrofab_proto::v1::ObjectMeta>) -> bool {
    m.is_some_and(|m| m.deletion_timestamp.is_some())
}

fn has_role(node: &Node, role: NodeRole) -> bool {
    node.spec
        .as_ref()
        .is_some_and(|s| s.roles.contains(&(role as i32)))
}

fn listener(a: &DataAddress) -> Listener {
    Listener {
        address: a.address.clone(),
        port: if a.port == 0 { DEFAULT_PORT } else { a.port },
        transport: if a.transport.is_empty() {
            "tcp".into()
        } else {
            a.transport.clone()
        },
    }
}

fn export(o: &Objects, v: &Volume, pool: Option<&Pool>) -> Export {
    let name = v.metadata.as_ref().map_or("", |m| m.name.as_str());
    // Borrowed, not cloned: the status carries conditions the export does
    // not need, and this runs for every volume of a node per snapshot.
    let empty = VolumeStatus::default();
    let st = v.status.as_ref().unwrap_or(&empty);
    let block_size = v.spec.as_ref().map_or(0, |s| s.block_size);
    let (hosts, read_only_hosts) = export_hosts(o, name);
    Export {
        volume: name.to_string(),
        volume_uid: v.metadata.as_ref().map_or(String::new(), |m| m.uid.clone()),
        subsystem_nqn: st.subsystem_nqn.clone(),
        nsid: 1,
        backing_kind: pool
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.backing.as_ref())
            .map_or(BackingKind::Directory as i32, |b| b.kind),
        backing_path: st.backing_path.clone(),
        size_bytes: st.size_bytes,
        block_size: if block_size == 0 { 4096 } else { block_size },
        uuid: st.uuid.clone(),
        nguid: st.nguid.clone(),
        serial: st.serial.clone(),
        allowed_hosts: hosts,
        read_only_hosts,
        // Echoed by the agent once served: a spec change that needs no
        // data-path work (a new expiry) still changes the snapshot, and the
        // echo is what lets the controller observe it.
        generation: v.metadata.as_ref().map_or(0, |m| m.generation),
        // Secrets are added per stream by `crate::keys::fill`, never here:
        // the planner's output is also what admins may read.
        ..Default::default()
    }
}

/// The hosts an export allows, and the subset that may only read.
fn export_hosts(o: &Objects, volume: &str) -> (Vec<String>, Vec<String>) {
    // host -> whether some attachment lets it write.
    let mut hosts: BTreeMap<String, bool> = BTreeMap::new();
    for a in o.attachments_of(volume) {
        let Some(spec) = a.spec.as_ref() else {
            continue;
        };
        let writes = access::mode_of(a) != AccessMode::ReadOnly;
        let mut holders = vec![spec.node.as_str()];
        if let Some(st) = a.status.as_ref() {
            if !st.moved_from_node.is_empty() && !st.moved_from_released {
                holders.push(st.moved_from_node.as_str());
            }
        }
        for h in holders.into_iter().filter_map(|n| access::host_of(o, n)) {
            *hosts.entry(h.to_string()).or_default() |= writes;
        }
    }
    let read_only = hosts
        .iter()
        .filter(|(_, w)| !**w)
        .map(|(h, _)| h.clone())
        .collect();
    (hosts.into_keys().collect(), read_only)
}

fn removal(v: &Volume, pool: Option<&Pool>) -> Removal {
    let empty = VolumeStatus::default();
    let st = v.status.as_ref().unwrap_or(&empty);
    let retain = pool
        .and_then(|p| p.spec.as_ref())
        .is_some_and(|s| s.reclaim_policy == ReclaimPolicy::Retain as i32);
    Removal {
        volume: v
            .metadata
            .as_ref()
            .map_or(String::new(), |m| m.name.clone()),
        subsystem_nqn: st.subsystem_nqn.clone(),
        backing_path: st.backing_path.clone(),
        delete_data: !retain,
    }
}

fn storage_part(o: &Objects, node: &Node, name: &str, ds: &mut DesiredState) {
    if let Some(spec) = &node.spec {
        ds.listeners = spec.data_addresses.iter().map(listener).collect();
    }
    for v in o.volumes_on(name) {
        let pool = v.status.as_ref().and_then(|s| o.pools.get(&s.pool));
        if deleting(v.metadata.as_ref()) {
            ds.removals.push(removal(v, pool));
        } else {
            ds.exports.push(export(o, v, pool));
        }
    }
}

fn connection(o: &Objects, a: &Attachment, defaults: &Defaults) -> Option<Connection> {
    let spec = a.spec.as_ref()?;
    // Fenced: the previous holder is not proven gone yet.
    if a.status
        .as_ref()
        .is_some_and(|s| !s.moved_from_node.is_empty())
    {
        return None;
    }
    let v = o.volumes.get(&spec.volume)?;
    let st = v.status.as_ref()?;
    if !st.export_ready || deleting(v.metadata.as_ref()) {
        return None;
    }
    let storage = o.nodes.get(&st.node)?;
    let addr = storage.spec.as_ref()?.data_addresses.first()?;
    let l = listener(addr);
    Some(Connection {
        attachment: a.metadata.as_ref()?.name.clone(),
        volume: spec.volume.clone(),
        subsystem_nqn: st.subsystem_nqn.clone(),
        address: l.address,
        port: l.port,
        transport: l.transport,
        options: Some(defaults.transport),
        exposure_name: spec.volume.clone(),
        read_only: access::mode_of(a) == AccessMode::ReadOnly,
        access_mode: access::mode_of(a) as i32,
        uuid: st.uuid.clone(),
        expires_at: v.spec.as_ref().and_then(|s| s.expires_at),
        // Added by `crate::keys::fill` for the node's own stream.
        ..Default::default()
    })
}

fn workstation_part(o: &Objects, name: &str, defaults: &Defaults, ds: &mut DesiredState) {
    ds.connections = o
        .attachments_for(name)
        .filter(|a| !deleting(a.metadata.as_ref()))
        .filter_map(|a| connection(o, a, defaults))
        .collect();
}

/// The desired state of `name` (empty if the node is unknown).
pub fn desired_state(o: &Objects, name: &str, defaults: &Defaults) -> DesiredState {
    let mut ds = DesiredState {
        node: name.to_string(),
        revision: o.revision,
        ..Default::default()
    };
    let Some(node) = o.nodes.get(name) else {
        return ds;
    };
    if has_role(node, NodeRole::Storage) {
        storage_part(o, node, name, &mut ds);
    }
    if has_role(node, NodeRole::Workstation) {
        workstation_part(o, name, defaults, &mut ds);
    }
    ds
}

/// Equal ignoring the revision: decides whether a new snapshot is worth
/// sending to an agent.
pub fn same_content(a: &DesiredState, b: &DesiredState) -> bool {
    a.listeners == b.listeners
        && a.exports == b.exports
        && a.removals == b.removals
        && a.connections == b.connections
}
