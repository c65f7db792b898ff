//! The built-in target: one `ferrofab_nvmeof_target::Target` living in the
//! agent process, driven through its live reconfiguration API.
//!
//! Every function here is idempotent and touches only the object it names,
//! so that connected hosts on other subsystems are never disturbed by a
//! reconcile pass.

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use ferrofab_nvmeof_target::backend::{BackendErrorKind, BlockBackend};
use ferrofab_nvmeof_target::{
    ListenerKind, NamespaceConfig, SubsystemConfig, Target, TargetError, TargetOptions,
    TargetStatus,
};
use ferrofab_proto::v1::{Export, KeyApplied, Listener};

use crate::backing::export_block_size as block_size;
use crate::error::AgentError;
use crate::problem::Problem;

pub use super::NSID;

/// The in-process target.
#[derive(Debug)]
pub struct BuiltinTarget {
    target: Target,
    keys: super::target_auth::KeyBook,
}

impl BuiltinTarget {
    /// A target with `opts` (the agent's `[builtin_target]` limits; the
    /// rest default).
    pub fn new(opts: TargetOptions) -> Result<Self, AgentError> {
        let target = Target::new(opts)
            .map_err(|e| AgentError::Other(format!("starting the built-in target: {e}")))?;
        Ok(BuiltinTarget {
            target,
            keys: Default::default(),
        })
    }

    /// Stops listening and ends every connection.
    pub fn shutdown(&self) {
        self.target.shutdown();
    }

    /// What the target really serves right now.
    pub fn status(&self) -> TargetStatus {
        self.target.status()
    }

    /// Makes the bound listeners exactly `wanted`; returns one message per
    /// listener that could not be bound.
    pub fn sync_listeners(&self, wanted: &BTreeSet<SocketAddr>) -> Vec<String> {
        let bound: BTreeSet<SocketAddr> =
            self.target.listeners().into_iter().map(|l| l.0).collect();
        let mut errors = Vec::new();
        for addr in wanted.difference(&bound) {
            if let Err(e) = self.target.add_listener(*addr, ListenerKind::Io, None) {
                errors.push(e.to_string());
            }
        }
        for addr in bound.difference(wanted) {
            if let Err(e) = self.target.remove_listener(*addr) {
                errors.push(e.to_string());
            }
        }
        errors
    }

    pub fn has_subsystem(&self, nqn: &str) -> bool {
        self.target.subsystem(nqn).is_some()
    }

    /// Creates the subsystem of `e` with its identity and allowed hosts.
    pub fn add_subsystem(&self, e: &Export) -> Result<(), TargetError> {
        self.target.add_subsystem(SubsystemConfig {
            nqn: e.subsystem_nqn.clone(),
            serial: e.serial.clone(),
            model: String::new(),
            allow_any_host: false,
            allowed_hosts: e.allowed_hosts.clone(),
        })
    }

    pub fn has_namespace(&self, nqn: &str) -> bool {
        self.target
            .subsystem(nqn)
            .is_some_and(|s| s.namespace(NSID).is_some())
    }

    /// Adds namespace 1 with the export's stable identity, so a re-created
    /// export looks identical to hosts (same UUID and NGUID).
    pub fn add_namespace(
        &self,
        e: &Export,
        backend: Arc<dyn BlockBackend>,
    ) -> Result<(), TargetError> {
        let uuid = uuid::Uuid::parse_str(&e.uuid)
            .unwrap_or_else(|_| ferrofab_nvmeof_target::derive_uuid(&e.subsystem_nqn, NSID));
        let nguid = parse_nguid(&e.nguid).unwrap_or(*uuid.as_bytes());
        self.target.add_namespace(
            &e.subsystem_nqn,
            NamespaceConfig {
                nsid: NSID,
                backend,
                block_size: block_size(e),
                uuid,
                nguid,
                read_only: false,
            },
        )
    }

    /// Grows namespace 1 to `size` if it is smaller.
    pub fn grow(&self, nqn: &str, size: u64) -> Result<bool, TargetError> {
        let Some(ns) = self.target.subsystem(nqn).and_then(|s| s.namespace(NSID)) else {
            return Ok(false);
        };
        if ns.backend.size() >= size {
            return Ok(false);
        }
        self.target.resize_namespace(nqn, NSID, size)?;
        Ok(true)
    }

    /// Makes the allow-list exactly `hosts`: new hosts are admitted,
    /// dropped ones revoked (which ends their controllers).
    pub fn sync_hosts(&self, nqn: &str, hosts: &[String]) -> Result<(), TargetError> {
        let Some(sub) = self.target.subsystem(nqn) else {
            return Err(TargetError::UnknownSubsystem(nqn.to_string()));
        };
        let have: BTreeSet<String> = sub.hosts().into_iter().collect();
        let want: BTreeSet<String> = hosts.iter().cloned().collect();
        for h in want.difference(&have) {
            self.target.allow_host(nqn, h)?;
        }
        for h in have.difference(&want) {
            self.target.revoke_host(nqn, h)?;
        }
        Ok(())
    }

    /// Makes the read-only hosts of `nqn` exactly `hosts`.
    pub fn sync_read_only_hosts(&self, nqn: &str, hosts: &[String]) -> Result<(), TargetError> {
        let Some(sub) = self.target.subsystem(nqn) else {
            return Err(TargetError::UnknownSubsystem(nqn.to_string()));
        };
        let have: BTreeSet<String> = sub.read_only_hosts().into_iter().collect();
        let want: BTreeSet<String> = hosts.iter().cloned().collect();
        for h in want.difference(&have) {
            self.target.set_host_read_only(nqn, h, true)?;
        }
        for h in have.difference(&want) {
            self.target.set_host_read_only(nqn, h, false)?;
        }
        Ok(())
    }

    /// Host NQNs of the controllers connected to `nqn` now.
    pub fn connected_hosts(&self, nqn: &str) -> Vec<String> {
        self.status()
            .subsystems
            .into_iter()
            .find(|s| s.nqn == nqn)
            .map(|s| s.controllers.into_iter().map(|c| c.hostnqn).collect())
            .unwrap_or_default()
    }

    pub fn remove_subsystem(&self, nqn: &str) -> Result<(), TargetError> {
        match self.target.remove_subsystem(nqn) {
            Err(TargetError::UnknownSubsystem(_)) => Ok(()),
            other => other,
        }
    }

    /// NQNs of every subsystem served.
    pub fn subsystems(&self) -> Vec<String> {
        self.target
            .subsystems()
            .iter()
            .map(|s| s.nqn.clone())
            .collect()
    }
}

impl super::TargetDriver for BuiltinTarget {
    fn status(&self) -> TargetStatus {
        BuiltinTarget::status(self)
    }
    fn shutdown(&self) {
        BuiltinTarget::shutdown(self);
    }
    fn sync_listeners(&self, wanted: &[Listener]) -> Vec<String> {
        let (addrs, mut errors) = resolve_listeners(wanted);
        errors.extend(BuiltinTarget::sync_listeners(self, &addrs));
        errors
    }
    fn has_subsystem(&self, nqn: &str) -> bool {
        BuiltinTarget::has_subsystem(self, nqn)
    }
    fn add_subsystem(&self, e: &Export) -> Result<(), Problem> {
        BuiltinTarget::add_subsystem(self, e).map_err(|err| failed("ExportFailed", &err))
    }
    fn has_namespace(&self, nqn: &str) -> bool {
        BuiltinTarget::has_namespace(self, nqn)
    }
    fn add_namespace(&self, e: &Export, backend: Arc<dyn BlockBackend>) -> Result<(), Problem> {
        BuiltinTarget::add_namespace(self, e, backend).map_err(|err| failed("ExportFailed", &err))
    }
    /// The backend remembers whether it is thick and grows accordingly.
    fn grow(&self, nqn: &str, size: u64, _thick: bool) -> Result<bool, Problem> {
        BuiltinTarget::grow(self, nqn, size).map_err(|err| failed(grow_reason(&err), &err))
    }
    fn sync_hosts(&self, nqn: &str, hosts: &[String]) -> Result<(), Problem> {
        BuiltinTarget::sync_hosts(self, nqn, hosts).map_err(|err| failed("HostsNotApplied", &err))
    }
    fn sync_read_only_hosts(&self, nqn: &str, hosts: &[String]) -> Result<(), Problem> {
        BuiltinTarget::sync_read_only_hosts(self, nqn, hosts)
            .map_err(|err| failed("HostsNotApplied", &err))
    }
    fn sync_auth(&self, e: &Export) -> Result<(), Problem> {
        self.keys
            .sync(&self.target, e)
            .map_err(|err| failed("AuthNotApplied", &err))
    }
    fn host_keys_applied(&self, nqn: &str) -> Vec<KeyApplied> {
        self.keys.applied(nqn)
    }
    fn connected_hosts(&self, nqn: &str) -> Vec<String> {
        BuiltinTarget::connected_hosts(self, nqn)
    }
    fn remove_subsystem(&self, nqn: &str) -> Result<(), Problem> {
        self.keys.forget(nqn);
        BuiltinTarget::remove_subsystem(self, nqn).map_err(|err| failed("RemovalFailed", &err))
    }
    fn subsystems(&self) -> Vec<String> {
        BuiltinTarget::subsystems(self)
    }
}

fn failed(reason: &'static str, err: &TargetError) -> Problem {
    Problem::new(reason, err.to_string())
}

/// A grow that failed for lack of space is the pool's problem, not the
/// target's.
fn grow_reason(e: &TargetError) -> &'static str {
    match e {
        TargetError::Backend(b) if b.kind() == BackendErrorKind::NoSpace => "PoolFull",
        _ => "GrowFailed",
    }
}

/// 32 hex digits (dashes allowed) → 16 bytes.
fn parse_nguid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Socket addresses for the desired listeners (host names resolved). A
/// listener that does not resolve is reported, not fatal.
pub fn resolve_listeners(ls: &[Listener]) -> (BTreeSet<SocketAddr>, Vec<String>) {
    let mut out = BTreeSet::new();
    let mut errors = Vec::new();
    for l in ls {
        if !l.transport.is_empty() && l.transport != "tcp" {
            errors.push(format!(
                "listener {}:{}: transport {:?} is not supported (tcp only)",
                l.address, l.port, l.transport
            ));
            continue;
        }
        let port = u16::try_from(l.port).unwrap_or(4420);
        match (l.address.as_str(), port).to_socket_addrs() {
            Ok(mut it) => match it.next() {
                Some(a) => {
                    out.insert(a);
                }
                None => errors.push(format!("listener {}: no address", l.address)),
            },
            Err(e) => errors.push(format!("listener {}:{}: {e}", l.address, l.port)),
        }
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nguid_parses_with_or_without_dashes() {
        let u = uuid::Uuid::new_v4();
        assert_eq!(parse_nguid(&u.to_string()), Some(*u.as_bytes()));
        assert_eq!(parse_nguid(&u.simple().to_string()), Some(*u.as_bytes()));
        assert_eq!(parse_nguid("xyz"), None);
    }

    #[test]
    fn listeners_resolve_and_refuse_other_transports() {
        let (ok, errs) = resolve_listeners(&[
            Listener {
                address: "127.0.0.1".into(),
                port: 4420,
                transport: "tcp".into(),
            },
            Listener {
                address: "127.0.0.1".into(),
                port: 4421,
                transport: "rdma".into(),
            },
        ]);
        assert_eq!(ok.len(), 1);
        assert_eq!(errs.len(), 1);
    }

    #[test]
    fn export_lifecycle_on_a_live_target() {
        let dir = tempfile::tempdir().unwrap();
        let t = BuiltinTarget::new(TargetOptions::default()).unwrap();
        let e = Export {
            subsystem_nqn: "nqn.2026-11.io.ferrofab:v1".into(),
            uuid: uuid::Uuid::new_v4().to_string(),
            size_bytes: 1 << 20,
            allowed_hosts: vec!["nqn.2014-08.org.nvmexpress:uuid:a".into()],
            ..Default::default()
        };
        t.add_subsystem(&e).unwrap();
        let be = ferrofab_nvmeof_target::backend::open_backend(
            dir.path().join("f"),
            &ferrofab_nvmeof_target::backend::FileOptions {
                create: true,
                size: Some(1 << 20),
                block_size: 4096,
                ..Default::default()
            },
        )
        .unwrap();
        t.add_namespace(&e, be).unwrap();
        assert!(t.has_namespace(&e.subsystem_nqn));
        assert!(t.grow(&e.subsystem_nqn, 2 << 20).unwrap());
        assert!(!t.grow(&e.subsystem_nqn, 2 << 20).unwrap());
        t.sync_hosts(
            &e.subsystem_nqn,
            &["nqn.2014-08.org.nvmexpress:uuid:b".into()],
        )
        .unwrap();
        let st = t.status();
        assert_eq!(
            st.subsystems[0].allowed_hosts,
            vec!["nqn.2014-08.org.nvmexpress:uuid:b"]
        );
        assert_eq!(st.subsystems[0].namespaces[0].size, 2 << 20);
        t.remove_subsystem(&e.subsystem_nqn).unwrap();
        t.remove_subsystem(&e.subsystem_nqn).unwrap();
        assert!(t.subsystems().is_empty());
    }
}
