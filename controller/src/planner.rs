//! Computes a node's desired state from the objects. Pure: the same objects
//! give the same desired state, which is what makes agent reconnects and
//! controller restarts safe. It reads only the node's own objects through
//! the cache's indexes (volumes on the node, attachments of a volume or for
//! a workstation), so its cost does not grow with the size of the store.
//!
//! Ordering rules encoded here:
//! * a workstation is told to connect only once the volume's export is
//!   reported ready and the storage node has reported the workstation's
//!   host allowed on it ([`admitted`]), so its first connect is not refused
//!   (it used to be, and the retry after a fixed delay made an attach
//!   ~200 ms of waiting);
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
//!
//! The rules read volumes, attachments and pools through the typed views of
//! [`crate::domain`] ([`VolumeFacts`], [`AttachmentFacts`], [`PoolFacts`]),
//! converted from the cached messages where each object is first read; what
//! they produce stays the wire's [`DesiredState`], sent as is.

use ferrofab_proto::v1::{
    AccessMode, Connection, DataAddress, DesiredState, Export, Listener, Node, NodeRole, Removal,
    TransportOptions,
};

use std::collections::BTreeMap;

use crate::access;
use crate::cache::Objects;
use crate::domain::{AttachmentFacts, PoolFacts, VolumeFacts};

pub use crate::resource::DEFAULT_PORT;

/// Transport settings every connection gets (from the controller config).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults {
    pub transport: TransportOptions,
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

fn export(o: &Objects, v: &VolumeFacts<'_>, pool: PoolFacts) -> Export {
    let (hosts, read_only_hosts) = export_hosts(o, v.name);
    Export {
        volume: v.name.to_string(),
        volume_uid: v.uid.to_string(),
        subsystem_nqn: v.subsystem_nqn.to_string(),
        nsid: 1,
        backing_kind: pool.backing_kind,
        backing_path: v.backing_path.to_string(),
        size_bytes: v.size.0,
        block_size: if v.block_size == 0 {
            4096
        } else {
            v.block_size
        },
        uuid: v.uuid.to_string(),
        nguid: v.nguid.to_string(),
        serial: v.serial.to_string(),
        allowed_hosts: hosts,
        read_only_hosts,
        // Echoed by the agent once served: a spec change that needs no
        // data-path work (a new expiry) still changes the snapshot, and the
        // echo is what lets the controller observe it.
        generation: v.generation,
        pool: v.pool.to_string(),
        // Secrets are added per stream by the `keys` module, never here:
        // the planner's output is also what admins may read.
        ..Default::default()
    }
}

/// The hosts an export allows, and the subset that may only read.
fn export_hosts(o: &Objects, volume: &str) -> (Vec<String>, Vec<String>) {
    // host -> whether some attachment lets it write.
    let mut hosts: BTreeMap<String, bool> = BTreeMap::new();
    for a in o.attachments_of(volume).filter_map(AttachmentFacts::of) {
        let writes = a.mode != AccessMode::ReadOnly;
        for h in a.holders().filter_map(|n| access::host_of(o, n)) {
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

fn removal(v: &VolumeFacts<'_>, pool: PoolFacts) -> Removal {
    Removal {
        volume: v.name.to_string(),
        subsystem_nqn: v.subsystem_nqn.to_string(),
        backing_path: v.backing_path.to_string(),
        delete_data: !pool.retain,
    }
}

fn storage_part(o: &Objects, node: &Node, name: &str, ds: &mut DesiredState) {
    if let Some(spec) = &node.spec {
        ds.listeners = spec.data_addresses.iter().map(listener).collect();
    }
    for v in o.volumes_on(name).map(VolumeFacts::from) {
        let pool = PoolFacts::from(o.pools.get(v.pool));
        if v.deleting {
            ds.removals.push(removal(&v, pool));
        } else {
            ds.exports.push(export(o, &v, pool));
        }
    }
}

fn connection(o: &Objects, a: &AttachmentFacts<'_>, defaults: &Defaults) -> Option<Connection> {
    // Fenced: the previous holder is not proven gone yet.
    if a.fence.is_some() {
        return None;
    }
    let v = VolumeFacts::from(o.volumes.get(a.volume)?);
    if !v.export_ready || v.deleting {
        return None;
    }
    let storage = o.nodes.get(v.node)?;
    if !admitted(o, a, storage) {
        return None;
    }
    let addr = storage.spec.as_ref()?.data_addresses.first()?;
    let l = listener(addr);
    Some(Connection {
        attachment: a.name?.to_string(),
        volume: a.volume.to_string(),
        subsystem_nqn: v.subsystem_nqn.to_string(),
        address: l.address,
        port: l.port,
        transport: l.transport,
        options: Some(defaults.transport),
        exposure_name: a.volume.to_string(),
        read_only: a.mode == AccessMode::ReadOnly,
        access_mode: a.mode as i32,
        uuid: v.uuid.to_string(),
        expires_at: v.expires_at,
        pool: v.pool.to_string(),
        // Added by the `keys` module for the node's own stream.
        ..Default::default()
    })
}

/// Whether the storage node is known to let the attachment's host in.
///
/// Only a latency matter, never access control (the target enforces its
/// allow-list): waiting for the storage node's report spares the
/// workstation a refused connect and its retry delay. Not waited for: a
/// storage node whose reports do not carry the allowed hosts (an older
/// agent; it would never prove the admission), an attachment already
/// Attached (the admission is proven by the connection; after an upgrade
/// its connection must not be withdrawn), a node without a host NQN. Once
/// recorded, the admission is not withdrawn by a later report.
fn admitted(o: &Objects, a: &AttachmentFacts<'_>, storage: &Node) -> bool {
    let reports_hosts = storage
        .status
        .as_ref()
        .is_some_and(|s| s.reports_allowed_hosts);
    if !reports_hosts || a.attached {
        return true;
    }
    access::host_of(o, a.node).is_none_or(|h| h == a.admitted_host)
}

fn workstation_part(o: &Objects, name: &str, defaults: &Defaults, ds: &mut DesiredState) {
    ds.connections = o
        .attachments_for(name)
        .filter_map(AttachmentFacts::of)
        .filter(|a| !a.deleting)
        .filter_map(|a| connection(o, &a, defaults))
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
        Attachment, AttachmentSpec, AttachmentStatus, Kind, NodeSpec, ObjectMeta, Pool, PoolSpec,
        ReclaimPolicy, Volume, VolumeSpec, VolumeStatus,
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

    /// The workstation is told to connect only once the storage node has
    /// reported its host allowed, when the storage node reports allowed
    /// hosts at all; an Attached attachment keeps its connection.
    #[test]
    fn the_connection_waits_for_the_storage_node_to_admit_the_host() {
        use ferrofab_proto::v1::{AttachmentPhase, NodeStatus};
        type Change = fn(&mut AttachmentStatus);
        let cases: Vec<(&str, bool, Change, bool)> = vec![
            (
                "an older storage agent: not waited for",
                false,
                |_| {},
                true,
            ),
            ("not admitted yet: no connection", true, |_| {}, false),
            (
                "admitted: the connection",
                true,
                |st| st.admitted_host = "nqn.host:w1".into(),
                true,
            ),
            (
                "admitted for the node it moved from: no connection",
                true,
                |st| st.admitted_host = "nqn.host:w2".into(),
                false,
            ),
            (
                "already Attached (e.g. before an upgrade): kept",
                true,
                |st| st.phase = AttachmentPhase::Attached as i32,
                true,
            ),
        ];
        for (name, reports, change, connects) in cases {
            let mut w = world();
            change(w.attachment.status.as_mut().expect("status"));
            let mut o = objects(w);
            o.nodes.get_mut("s").expect("s").status = Some(NodeStatus {
                reports_allowed_hosts: reports,
                ..Default::default()
            });
            let n = desired_state(&o, "w1", &Defaults::default())
                .connections
                .len();
            assert_eq!(n == 1, connects, "{name}");
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
