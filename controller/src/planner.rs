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

pub use crate::resource::DEFAULT_PORT;

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
        // Secrets are added per stream by the `keys` module, never here:
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
        // Added by the `keys` module for the node's own stream.
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

#[cfg(test)]
mod tests {
    //! One world (a storage node `s`, workstations `w1` and `w2`, pool `p`,
    //! volume `v`, attachment `a` of `v` on `w1`), changed by each case, and
    //! what every node is told. The cases are the ordering rules of the
    //! module docs.
    use super::*;
    use crate::resource::{key, Object, Resource};
    use crate::store::{EventKind, KeyValue};
    use ferrofab_proto::v1::{
        AttachmentSpec, AttachmentStatus, Kind, NodeSpec, ObjectMeta, PoolSpec, VolumeSpec,
    };

    fn meta(name: &str) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            name: name.into(),
            uid: format!("uid-{name}"),
            generation: 1,
            ..Default::default()
        })
    }

    fn node(name: &str, role: NodeRole) -> Node {
        Node {
            metadata: meta(name),
            spec: Some(NodeSpec {
                roles: vec![role as i32],
                host_nqn: format!("nqn.host:{name}"),
                data_addresses: vec![DataAddress {
                    address: format!("{name}.example"),
                    ..Default::default()
                }],
            }),
            status: None,
        }
    }

    /// The objects of the base world, each case's change applied.
    struct World {
        pool: Pool,
        volume: Volume,
        attachment: Attachment,
    }

    fn world() -> World {
        World {
            pool: Pool {
                metadata: meta("p"),
                spec: Some(PoolSpec {
                    node: "s".into(),
                    ..Default::default()
                }),
                status: None,
            },
            volume: Volume {
                metadata: meta("v"),
                spec: Some(VolumeSpec {
                    tenant: "t".into(),
                    ..Default::default()
                }),
                status: Some(VolumeStatus {
                    node: "s".into(),
                    pool: "p".into(),
                    subsystem_nqn: "nqn.vol:v".into(),
                    backing_path: "/pool/uid-v".into(),
                    size_bytes: 1 << 30,
                    export_ready: true,
                    ..Default::default()
                }),
            },
            attachment: Attachment {
                metadata: meta("a"),
                spec: Some(AttachmentSpec {
                    volume: "v".into(),
                    node: "w1".into(),
                    ..Default::default()
                }),
                status: Some(AttachmentStatus::default()),
            },
        }
    }

    fn objects(w: World) -> Objects {
        fn put<R: Resource>(o: &mut Objects, kind: Kind, r: &R, rev: u64) {
            let kv = KeyValue {
                key: key(kind, r.name()),
                value: r.encode_to_vec(),
                create_revision: rev,
                mod_revision: rev,
            };
            o.apply(EventKind::Put, &kv, rev);
        }
        let mut o = Objects::default();
        put(&mut o, Kind::Node, &node("s", NodeRole::Storage), 1);
        put(&mut o, Kind::Node, &node("w1", NodeRole::Workstation), 2);
        put(&mut o, Kind::Node, &node("w2", NodeRole::Workstation), 3);
        put(&mut o, Kind::Pool, &w.pool, 4);
        put(&mut o, Kind::Volume, &w.volume, 5);
        put(&mut o, Kind::Attachment, &w.attachment, 6);
        o
    }

    fn deleted() -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp::default())
    }

    /// What the nodes are told, in a form the table can spell.
    #[derive(Debug, PartialEq)]
    struct Told {
        /// `s`'s exports: (volume, allowed hosts, read-only hosts).
        exports: Vec<(String, Vec<String>, Vec<String>)>,
        /// `s`'s removals: (volume, delete its data).
        removals: Vec<(String, bool)>,
        /// `w1`'s connections: (volume, read-only).
        w1: Vec<(String, bool)>,
        /// `w2`'s connections.
        w2: usize,
    }

    fn told(o: &Objects) -> Told {
        let d = Defaults::default();
        let s = desired_state(o, "s", &d);
        let w1 = desired_state(o, "w1", &d);
        let w2 = desired_state(o, "w2", &d);
        Told {
            exports: s
                .exports
                .into_iter()
                .map(|e| (e.volume, e.allowed_hosts, e.read_only_hosts))
                .collect(),
            removals: s
                .removals
                .into_iter()
                .map(|r| (r.volume, r.delete_data))
                .collect(),
            w1: w1
                .connections
                .into_iter()
                .map(|c| (c.volume, c.read_only))
                .collect(),
            w2: w2.connections.len(),
        }
    }

    fn hosts(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| format!("nqn.host:{n}")).collect()
    }

    fn export(ro: &[&str], rw: &[&str]) -> Vec<(String, Vec<String>, Vec<String>)> {
        let mut all: Vec<&str> = ro.iter().chain(rw).copied().collect();
        all.sort_unstable();
        vec![("v".into(), hosts(&all), hosts(ro))]
    }

    #[test]
    fn each_rule_of_the_module_docs() {
        type Change = fn(&mut World);
        let connected = vec![("v".to_string(), false)];
        let cases: Vec<(&str, Change, Told)> = vec![
            (
                "an exported volume: the host is allowed and the workstation connects",
                |_| {},
                Told {
                    exports: export(&[], &["w1"]),
                    removals: vec![],
                    w1: connected.clone(),
                    w2: 0,
                },
            ),
            (
                "export not reported ready: no connection yet, the host already allowed",
                |w| w.volume.status.as_mut().expect("status").export_ready = false,
                Told {
                    exports: export(&[], &["w1"]),
                    removals: vec![],
                    w1: vec![],
                    w2: 0,
                },
            ),
            (
                "a detaching attachment: the connection goes at once, the host stays",
                |w| w.attachment.meta_mut().deletion_timestamp = deleted(),
                Told {
                    exports: export(&[], &["w1"]),
                    removals: vec![],
                    w1: vec![],
                    w2: 0,
                },
            ),
            (
                "a deleted volume: a removal that deletes the data, no connection",
                |w| w.volume.meta_mut().deletion_timestamp = deleted(),
                Told {
                    exports: vec![],
                    removals: vec![("v".into(), true)],
                    w1: vec![],
                    w2: 0,
                },
            ),
            (
                "a deleted volume of a Retain pool keeps its data",
                |w| {
                    w.volume.meta_mut().deletion_timestamp = deleted();
                    w.pool.spec.as_mut().expect("spec").reclaim_policy =
                        ReclaimPolicy::Retain as i32;
                },
                Told {
                    exports: vec![],
                    removals: vec![("v".into(), false)],
                    w1: vec![],
                    w2: 0,
                },
            ),
            (
                "a move from w2 not yet released: both hosts allowed, nobody connects",
                |w| {
                    w.attachment
                        .status
                        .as_mut()
                        .expect("status")
                        .moved_from_node = "w2".into()
                },
                Told {
                    exports: export(&[], &["w1", "w2"]),
                    removals: vec![],
                    w1: vec![],
                    w2: 0,
                },
            ),
            (
                "a released move: the old host goes, the new node still waits for the proof",
                |w| {
                    let st = w.attachment.status.as_mut().expect("status");
                    st.moved_from_node = "w2".into();
                    st.moved_from_released = true;
                },
                Told {
                    exports: export(&[], &["w1"]),
                    removals: vec![],
                    w1: vec![],
                    w2: 0,
                },
            ),
            (
                "a READ_ONLY attachment: a read-only host and a read-only connection",
                |w| w.attachment.spec.as_mut().expect("spec").mode = AccessMode::ReadOnly as i32,
                Told {
                    exports: export(&["w1"], &[]),
                    removals: vec![],
                    w1: vec![("v".into(), true)],
                    w2: 0,
                },
            ),
        ];
        for (name, change, want) in cases {
            let mut w = world();
            change(&mut w);
            assert_eq!(told(&objects(w)), want, "{name}");
        }
    }

    #[test]
    fn connections_carry_the_default_port_and_transport() {
        let o = objects(world());
        let c = &desired_state(&o, "w1", &Defaults::default()).connections[0];
        assert_eq!((c.address.as_str(), c.port), ("s.example", DEFAULT_PORT));
        assert_eq!(c.transport, "tcp");
        assert_eq!(c.subsystem_nqn, "nqn.vol:v");
    }

    #[test]
    fn an_unknown_node_gets_an_empty_state_at_the_current_revision() {
        let o = objects(world());
        let ds = desired_state(&o, "nobody", &Defaults::default());
        assert_eq!(ds.node, "nobody");
        assert_eq!(ds.revision, o.revision);
        assert!(ds.exports.is_empty() && ds.connections.is_empty() && ds.listeners.is_empty());
    }

    #[test]
    fn same_content_ignores_only_the_revision() {
        let o = objects(world());
        let a = desired_state(&o, "s", &Defaults::default());
        let mut b = a.clone();
        b.revision += 1;
        assert!(same_content(&a, &b));
        b.exports[0].size_bytes += 1;
        assert!(!same_content(&a, &b));
    }
}
