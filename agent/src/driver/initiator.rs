//! The built-in initiator as a workstation driver: each connection is a
//! `ferrofab-nvmeof` host controller whose namespace 1 is exposed as
//! `EXPOSE_DIR/exposure_name` through one FUSE mount for the whole
//! directory.
//!
//! It runs inside the data-path holder process (`holder`), which
//! outlives agent restarts; the agent reaches it through
//! `holder::driver`. With `holder.enabled = false` the agent runs it
//! in its own process.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrofab_nvmeof_expose::{ExposeOptions, Exposer};
use ferrofab_nvmeof_host::DynBlockIo;
use ferrofab_nvmeof_host::{
    BlockIo, ConnectOptions, Controller, ControllerState, Digests, HostError, HostIdentity,
    Namespace, NamespaceEvent,
};
use ferrofab_proto::v1::{Connection, ConnectionStatus};
use ferrofab_types::Reason;
use std::sync::Arc;
use tracing::{info, info_span, warn};

use super::{Attachment, Listing, WorkstationDriver};
use crate::error::AgentError;
use crate::names;
use crate::problem::{condition, Problem};

/// File names of the persisted host identity inside the state directory.
pub const HOSTNQN_FILE: &str = "hostnqn";
pub const HOSTID_FILE: &str = "hostid";

/// Loads (creating once) the node's NVMe host identity from `state_dir`.
/// It is what storage nodes allow, so it must survive restarts.
pub fn host_identity(state_dir: &Path) -> Result<HostIdentity, AgentError> {
    crate::cache::ensure_dir(state_dir)?;
    HostIdentity::load_or_create(&state_dir.join(HOSTNQN_FILE), &state_dir.join(HOSTID_FILE))
        .map_err(|e| AgentError::Other(format!("host identity in {}: {e}", state_dir.display())))
}

/// One live attachment.
struct Attached {
    /// The desired connection it was made for; a change means reconnect.
    conn: Connection,
    ctrl: Controller,
    path: PathBuf,
}

/// The built-in initiator: the exposure mount and the controllers.
pub struct BuiltinInitiator {
    expose_dir: PathBuf,
    identity: HostIdentity,
    exposer: Option<Exposer>,
    attached: HashMap<String, Attached>,
    /// `holder.raise_fuse_max_pages_limit` (default true).
    raise_fuse_max_pages_limit: bool,
}

impl std::fmt::Debug for BuiltinInitiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinInitiator")
            .field("hostnqn", &self.identity.hostnqn)
            .field("attached", &self.attached.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl BuiltinInitiator {
    /// An initiator exposing under `expose_dir` as host `identity`.
    pub fn new(expose_dir: PathBuf, identity: HostIdentity) -> Self {
        BuiltinInitiator {
            expose_dir,
            identity,
            exposer: None,
            attached: HashMap::new(),
            raise_fuse_max_pages_limit: true,
        }
    }

    /// Whether mounting may raise the sysctl `fs.fuse.max_pages_limit`
    /// (`ExposeOptions::raise_max_pages_limit`); an administrator who
    /// owns the sysctl turns it off.
    pub fn raising_fuse_max_pages_limit(mut self, raise: bool) -> Self {
        self.raise_fuse_max_pages_limit = raise;
        self
    }

    pub fn hostnqn(&self) -> &str {
        &self.identity.hostnqn
    }

    /// Every live attachment with its connection, controller state,
    /// whether its file is exposed, its path and size. (The holder's
    /// `list`.)
    pub fn exposures(&self) -> Vec<Exposure> {
        let mut v: Vec<Exposure> = self
            .attached
            .values()
            .map(|a| Exposure {
                conn: a.conn.clone(),
                state: a.ctrl.state(),
                exposed: self.is_exposed(&a.conn.exposure_name),
                path: a.path.display().to_string(),
                size_bytes: ns_size(&a.ctrl),
            })
            .collect();
        v.sort_by(|a, b| a.conn.attachment.cmp(&b.conn.attachment));
        v
    }

    fn is_exposed(&self, name: &str) -> bool {
        self.exposer
            .as_ref()
            .is_some_and(|e| e.names().iter().any(|n| n == name))
    }

    fn exposer(&self) -> Result<&Exposer, Problem> {
        self.exposer.as_ref().ok_or_else(|| {
            Problem::new(
                Reason::ExposureUnavailable,
                "exposure directory not mounted",
            )
        })
    }
}

impl WorkstationDriver for BuiltinInitiator {
    /// The built-in initiator authenticates (`host_auth`).
    fn dhchap_capable(&self) -> bool {
        true
    }

    /// Mounts the exposure directory once.
    fn prepare(&mut self, _wanted: &[Connection]) -> Result<(), Problem> {
        if self.exposer.is_some() {
            return Ok(());
        }
        let opts = ExposeOptions {
            allow_other: true,
            raise_max_pages_limit: self.raise_fuse_max_pages_limit,
            ..Default::default()
        };
        let exp = Exposer::mount(&self.expose_dir, &opts)
            .map_err(|e| Problem::new(Reason::ExposureUnavailable, e.to_string()))?;
        self.exposer = Some(exp);
        Ok(())
    }

    /// A name that is not one safe file name is refused with a status,
    /// and no controller is made for it.
    fn check(&self, c: &Connection) -> Result<(), Problem> {
        names::check(
            Reason::InvalidExposureName,
            "exposure name",
            &c.exposure_name,
        )
    }

    fn list(&self) -> Listing {
        let attachments = self
            .exposures()
            .into_iter()
            .map(|e| Attachment {
                attachment: e.conn.attachment.clone(),
                volume: e.conn.volume.clone(),
                subsystem_nqn: e.conn.subsystem_nqn.clone(),
                read_only: e.conn.read_only,
                state: format!("{:?}", e.state).to_lowercase(),
                live: e.state == ControllerState::Live,
                size_bytes: e.size_bytes,
                status: live_status(&e.conn, e.state, e.exposed, &e.path, e.size_bytes),
                path: e.path,
            })
            .collect();
        Listing {
            attachments,
            stale: None,
        }
    }

    fn serves(&self, attachment: &str, c: &Connection) -> bool {
        self.attached
            .get(attachment)
            .is_some_and(|a| same_session(c, &a.conn) && a.ctrl.state() != ControllerState::Failed)
    }

    fn connect(&mut self, c: &Connection) -> Result<bool, Problem> {
        self.check(c)?;
        let exposer = self.exposer()?;
        let ctrl = Controller::connect(connect_options(c, &self.identity))
            .map_err(|e| connect_problem(&e))?;
        let ns = ctrl
            .namespace(1)
            .map_err(|e| Problem::new(Reason::NamespaceMissing, e.to_string()))?;
        check_identity(c, &ctrl)?;
        if exposer.names().iter().any(|n| n == &c.exposure_name) {
            let _ = exposer.remove(&c.exposure_name);
        }
        // The namespace goes in as one, so its reads skip a copy and are
        // answered asynchronously; a read-only one behind its wrapper.
        let added = if c.read_only {
            let dev: Arc<DynBlockIo> = Arc::new(ReadOnly(ns.clone()));
            exposer.add_namespace_as(&c.exposure_name, dev, ns)
        } else {
            exposer.add_namespace(&c.exposure_name, ns)
        };
        let path = added.map_err(|e| Problem::new(Reason::ExposureFailed, e.to_string()))?;
        let volumes = exposer.volumes();
        let name = c.exposure_name.clone();
        ctrl.watch(move |ev| {
            if let NamespaceEvent::Resized { new, .. } = ev {
                info!(volume = %name, size = new.size_bytes(), "namespace grew");
                let _ = volumes.refresh_size(&name);
            }
        });
        info!(path = %path.display(), read_only = c.read_only, "attached");
        self.attached.insert(
            c.attachment.clone(),
            Attached {
                conn: c.clone(),
                ctrl,
                path,
            },
        );
        Ok(true)
    }

    /// Same session: informational fields (the expiry) follow, and the
    /// file takes the namespace's current size.
    fn expose(&mut self, c: &Connection) -> Result<bool, Problem> {
        if let Some(a) = self.attached.get_mut(&c.attachment) {
            super::host_auth::follow_keys(&a.ctrl, &a.conn, c)?;
            a.conn = c.clone();
            if let Some(exp) = &self.exposer {
                let _ = exp.refresh_size(&c.exposure_name);
            }
        }
        Ok(false)
    }

    /// Removes the file, then disconnects (flushing through the shutdown
    /// handshake). A failure is logged: the controller is gone either way.
    fn disconnect(&mut self, attachment: &str) -> Result<bool, Problem> {
        let Some(a) = self.attached.remove(attachment) else {
            return Ok(false);
        };
        let _span = info_span!("detach", attachment, volume = %a.conn.volume).entered();
        if let Some(exp) = &self.exposer {
            if let Err(e) = exp.remove(&a.conn.exposure_name) {
                warn!(error = %e, "removing exposure");
            }
        }
        if let Err(e) = a.ctrl.disconnect() {
            warn!(error = %e, "disconnect");
        }
        info!("detached");
        Ok(true)
    }

    /// Detaches everything and unmounts.
    fn shutdown(&mut self) {
        let names: Vec<String> = self.attached.keys().cloned().collect();
        for n in names {
            let _ = self.disconnect(&n);
        }
        if let Some(exp) = self.exposer.take() {
            if let Err(e) = exp.unmount() {
                warn!(error = %e, "unmount");
            }
        }
    }
}

fn ns_size(ctrl: &Controller) -> u64 {
    ctrl.namespaces().first().map_or(0, |n| n.size_bytes())
}

/// One live attachment as the holder lists it.
#[derive(Debug, Clone)]
pub struct Exposure {
    pub conn: Connection,
    pub state: ControllerState,
    pub exposed: bool,
    pub path: String,
    pub size_bytes: u64,
}

/// The status of desired connection `c` whose controller is in `state`
/// and whose file at `path` is (or is not) `exposed`: shared by the
/// in-process reconciler and the holder client, so both report alike.
pub(crate) fn live_status(
    c: &Connection,
    state: ControllerState,
    exposed: bool,
    path: &str,
    size_bytes: u64,
) -> ConnectionStatus {
    let mut st = ConnectionStatus {
        attachment: c.attachment.clone(),
        volume: c.volume.clone(),
        size_bytes: if exposed { size_bytes } else { 0 },
        ..Default::default()
    };
    st.connected = state == ControllerState::Live && exposed;
    st.device_path = path.to_string();
    st.conditions = vec![match (state, exposed) {
        (ControllerState::Live, true) => condition(
            "Connected",
            true,
            "HostConnected",
            format!("connected to {}:{}, exposed at {path}", c.address, c.port),
        ),
        (_, false) => condition(
            "Connected",
            false,
            "ExposureMissing",
            "exposed file missing",
        ),
        (ControllerState::Reconnecting, _) => condition(
            "Connected",
            false,
            "Reconnecting",
            format!(
                "connection to {}:{} lost; reconnecting within ctrl-loss timeout",
                c.address, c.port
            ),
        ),
        (s, _) => condition(
            "Connected",
            false,
            "ControllerLost",
            format!("controller {s:?}"),
        ),
    }];
    st
}

/// Whether a live controller made for `old` still serves `new`: every
/// field matters except the expiry, which is informational (an extension
/// must not disconnect a researcher's mounted volume).
fn same_session(new: &Connection, old: &Connection) -> bool {
    let mut n = new.clone();
    n.expires_at = old.expires_at;
    // A new key re-authenticates the live session (rotation).
    n.host_key.clone_from(&old.host_key);
    n.ctrl_key.clone_from(&old.ctrl_key);
    n == *old
}

fn connect_options(c: &Connection, id: &HostIdentity) -> ConnectOptions {
    let addr = if c.address.contains(':') && !c.address.starts_with('[') {
        format!("[{}]:{}", c.address, c.port)
    } else {
        format!("{}:{}", c.address, c.port)
    };
    let mut o = ConnectOptions::new(addr, c.subsystem_nqn.clone(), id.clone());
    (o.dhchap_secret, o.dhchap_ctrl_secret) = super::host_auth::secrets(c);
    if let Some(t) = &c.options {
        o.digests = Digests {
            header: t.header_digest,
            data: t.data_digest,
        };
        if t.nr_io_queues > 0 {
            o.nr_io_queues = u16::try_from(t.nr_io_queues).unwrap_or(u16::MAX);
        }
        if t.queue_size > 0 {
            o.queue_size = u16::try_from(t.queue_size).unwrap_or(u16::MAX);
        }
        if t.ctrl_loss_tmo > 0 {
            o.ctrl_loss_tmo = Some(Duration::from_secs(u64::from(t.ctrl_loss_tmo)));
        }
    }
    o
}

/// The namespace must be the volume the controller means (same UUID), so
/// a reused NQN can never expose someone else's data under this name.
fn check_identity(c: &Connection, ctrl: &Controller) -> Result<(), Problem> {
    let Ok(want) = uuid::Uuid::parse_str(&c.uuid) else {
        return Ok(());
    };
    let got = ctrl
        .namespaces()
        .first()
        .and_then(|n| n.uuid)
        .map(uuid::Uuid::from_bytes);
    match got {
        Some(u) if u != want => Err(Problem::new(
            Reason::WrongNamespace,
            format!("namespace UUID {u} is not the volume's {want}"),
        )),
        _ => Ok(()),
    }
}

fn connect_problem(e: &HostError) -> Problem {
    match e {
        HostError::ConnectRejected { status, reason, .. }
            if status.sct == 1 && status.sc == 0x84 =>
        {
            Problem::new(
                Reason::HostNotAllowed,
                format!("connect refused: host not allowed ({reason})"),
            )
        }
        HostError::ConnectRejected { reason, .. } => {
            Problem::new(Reason::ConnectRefused, format!("connect refused: {reason}"))
        }
        HostError::AuthenticationFailed { .. } => {
            Problem::new(Reason::AuthenticationFailed, e.to_string())
        }
        HostError::Unreachable { .. } | HostError::Timeout { .. } => {
            Problem::new(Reason::TargetUnreachable, e.to_string())
        }
        _ => Problem::new(Reason::ConnectFailed, e.to_string()),
    }
}

/// A namespace exposed read-only: writes fail with EROFS on this host.
struct ReadOnly(Namespace);

impl BlockIo for ReadOnly {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn block_size(&self) -> u32 {
        self.0.block_size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EROFS))
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn read_only(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;
    use crate::reconcile::workstation::WorkstationReconciler;
    use ferrofab_proto::v1::DesiredState;

    /// The built-in driver refuses the same names as the kernel driver,
    /// before connecting, with a status; the FUSE directory stays empty
    /// and nothing outside it is touched. Mounts FUSE: needs root and
    /// /dev/fuse, like the exposure tests of ferrofab-nvmeof.
    #[test]
    fn unsafe_exposure_names_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let shadow = root.path().join("etc/shadow");
        std::fs::create_dir_all(shadow.parent().unwrap()).unwrap();
        std::fs::write(&shadow, b"root:secret\n").unwrap();
        let mut cfg = AgentConfig::for_tests("w1");
        cfg.expose_dir = root.path().join("x/volumes");
        let mut w = WorkstationReconciler::new(Box::new(BuiltinInitiator::new(
            cfg.expose_dir.clone(),
            HostIdentity::ephemeral(),
        )));
        let bad = |attachment: &str, name: &str| Connection {
            attachment: attachment.into(),
            volume: "v1".into(),
            exposure_name: name.into(),
            subsystem_nqn: "nqn.2026-11.io.ferrofab:v1".into(),
            // Nothing listens on port 1: a connect would be refused.
            address: "127.0.0.1".into(),
            port: 1,
            transport: "tcp".into(),
            ..Default::default()
        };
        let ds = DesiredState {
            connections: vec![
                bad("a1", "../../etc/shadow"),
                bad("a2", "a/b"),
                bad("a3", "."),
                bad("a4", "v\u{1b}[2J"),
            ],
            ..Default::default()
        };
        let out = w.reconcile(&ds);
        let listed: Vec<_> = std::fs::read_dir(&cfg.expose_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let st = w.observe(&ds);
        w.shutdown();
        assert_eq!(out.errors, 4, "{w:?}");
        for s in st {
            let c = &s.conditions[0];
            assert_eq!(c.reason, "InvalidExposureName", "{s:?}");
            assert!(c.message.contains("single file name"), "{}", c.message);
        }
        assert!(listed.is_empty(), "{listed:?}");
        assert_eq!(std::fs::read(&shadow).unwrap(), b"root:secret\n");
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let id = HostIdentity::ephemeral();
        let c = Connection {
            address: "::1".into(),
            port: 4420,
            subsystem_nqn: "nqn.2026-11.io.ferrofab:v".into(),
            ..Default::default()
        };
        assert_eq!(connect_options(&c, &id).addr, "[::1]:4420");
        let c = Connection {
            address: "10.0.0.1".into(),
            port: 4421,
            ..c
        };
        assert_eq!(connect_options(&c, &id).addr, "10.0.0.1:4421");
    }

    #[test]
    fn transport_options_apply() {
        let c = Connection {
            address: "10.0.0.1".into(),
            port: 4420,
            options: Some(ferrofab_proto::v1::TransportOptions {
                header_digest: true,
                data_digest: false,
                nr_io_queues: 2,
                queue_size: 64,
                ctrl_loss_tmo: 30,
            }),
            ..Default::default()
        };
        let o = connect_options(&c, &HostIdentity::ephemeral());
        assert!(o.digests.header);
        assert_eq!(o.nr_io_queues, 2);
        assert_eq!(o.queue_size, 64);
        assert_eq!(o.ctrl_loss_tmo, Some(Duration::from_secs(30)));
    }

    #[test]
    fn host_identity_persists() {
        let dir = tempfile::tempdir().unwrap();
        let a = host_identity(dir.path()).unwrap();
        let b = host_identity(dir.path()).unwrap();
        assert_eq!(a, b);
    }
}
