//! Workstation role on the kernel data path: each desired connection is a
//! fabrics controller made through `/dev/nvme-fabrics`, its namespace 1
//! found through sysfs and exposed as the symlink
//! `EXPOSE_DIR/<exposure name>` → `/dev/nvmeXnY`.
//!
//! Controllers are recorded (see [`super::ownership`]) before they are
//! made; on start the recorded ones that still exist are adopted as they
//! are, so I/O on them never stops for an agent restart. Controllers the
//! agent did not make (an admin's `nvme connect`) are never touched.

use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrofab_nvmeof_host::HostIdentity;
use ferrofab_proto::v1::{Connection, ConnectionStatus};
use ferrofab_types::Reason;
use tracing::{info, info_span, warn};

use super::auth::{host_supported, HOST_NEEDS};
use super::fabrics::{self, ConnectParams};
use super::ownership::{KeyId, OwnedController, OwnedHost, StateFile, HOST_STATE_FILE};
use super::sysfs::{self, ControllerInfo};
use super::{host_module, KernelPaths};
use crate::config::AgentConfig;
use crate::driver::{Attachment, Listing, WorkstationDriver, NSID};
use crate::names;
use crate::problem::{condition, Problem};

/// How long an attach waits for the namespace's block device to appear.
const NAMESPACE_WAIT: Duration = Duration::from_secs(15);

/// `BLKROSET` (`_IO(0x12, 93)`): marks a block device read-only.
const BLKROSET: libc::c_ulong = 0x125d;

/// The kernel workstation driver.
#[derive(Debug)]
pub struct KernelWorkstation {
    paths: KernelPaths,
    expose_dir: PathBuf,
    identity: HostIdentity,
    record: StateFile,
    owned: OwnedHost,
}

impl KernelWorkstation {
    pub fn new(cfg: &AgentConfig, paths: KernelPaths, identity: HostIdentity) -> Self {
        let record = StateFile::new(&cfg.state_dir, HOST_STATE_FILE);
        let owned = record.load();
        let mut w = KernelWorkstation {
            paths,
            expose_dir: cfg.expose_dir.clone(),
            identity,
            record,
            owned,
        };
        w.adopt();
        w
    }

    fn save(&self) -> Result<(), Problem> {
        self.record
            .store(&self.owned)
            .map_err(|e| Problem::new(Reason::OwnershipRecordFailed, e.to_string()))
    }

    /// Whether the live controller `info` is the one recorded in `rec`.
    fn is_ours(&self, rec: &OwnedController, info: &ControllerInfo) -> bool {
        info.subsysnqn == rec.subsysnqn
            && (info.hostnqn.is_empty() || info.hostnqn == self.identity.hostnqn)
            && info.address_field("traddr") == Some(rec.traddr.as_str())
            && info.address_field("trsvcid") == Some(rec.trsvcid.as_str())
    }

    /// Keeps the recorded controllers that still exist; an interrupted
    /// connect (recorded without a name) is matched to a live controller
    /// of the same subsystem, address and host that nobody else claims.
    pub fn adopt(&mut self) {
        let live = sysfs::controllers(&self.paths);
        let mut claimed: Vec<String> = self
            .owned
            .controllers
            .values()
            .filter_map(|r| r.controller.clone())
            .collect();
        let before = self.owned.clone();
        let mut keep = std::collections::BTreeMap::new();
        for (name, mut rec) in before.controllers.clone() {
            let found = match &rec.controller {
                Some(c) => live.iter().find(|i| &i.name == c && self.is_ours(&rec, i)),
                None => live
                    .iter()
                    .find(|i| !claimed.contains(&i.name) && self.is_ours(&rec, i)),
            };
            if let Some(i) = found {
                claimed.push(i.name.clone());
                rec.controller = Some(i.name.clone());
                keep.insert(name, rec);
            }
        }
        self.owned.controllers = keep;
        info!(
            controllers = self.owned.controllers.len(),
            "kernel host: adopted the controllers this agent connected"
        );
        if self.owned != before {
            if let Err(p) = self.save() {
                warn!("{p}");
            }
        }
    }

    /// `EXPOSE_DIR/<exposure name>`, only for a name that is one safe
    /// path component: the name comes from the controller, and the link
    /// is renamed into place (which would replace any file it named).
    fn exposure_path(&self, c: &Connection) -> Result<PathBuf, Problem> {
        Ok(self.expose_dir.join(names::exposure_name(c)?))
    }

    /// What a desired connection is recorded as.
    fn wanted_record(&self, c: &Connection) -> Result<OwnedController, Problem> {
        let exposure = self.exposure_path(c)?;
        let p = ConnectParams::for_connection(
            c,
            &self.identity.hostnqn,
            &self.identity.hostid.to_string(),
        );
        let options = p
            .option_string()
            .map_err(|m| Problem::new(Reason::InvalidConnection, m))?;
        Ok(OwnedController {
            controller: None,
            subsysnqn: c.subsystem_nqn.clone(),
            transport: p.transport,
            traddr: p.traddr,
            trsvcid: p.trsvcid,
            exposure_name: exposure.display().to_string(),
            volume: c.volume.clone(),
            uuid: c.uuid.clone(),
            read_only: c.read_only,
            options,
            host_key: KeyId::of(c.host_key.as_ref()),
            ctrl_key: KeyId::of(c.ctrl_key.as_ref()),
        })
    }

    /// A connection that must authenticate (it has a key, or the export
    /// requires it) needs a kernel that can.
    fn check_auth(&self, c: &Connection) -> Result<(), Problem> {
        if (c.host_key.is_none() && !c.require_auth) || host_supported(&self.paths) {
            return Ok(());
        }
        let why = if c.host_key.is_some() {
            "the connection must authenticate (DH-HMAC-CHAP)"
        } else {
            "the export requires authentication (DH-HMAC-CHAP)"
        };
        Err(Problem::new(
            Reason::AuthUnsupported,
            format!("{why} but this kernel's NVMe host cannot: needs {HOST_NEEDS}"),
        ))
    }

    /// Linux makes a controller's `dhchap_secret` and `dhchap_ctrl_secret`
    /// world-readable: any local user could read the host key. They are
    /// made readable by root only, checked on every pass; a failure is
    /// logged, not fatal (the data path works).
    fn restrict_secrets(&self, ctrl: &str) {
        let dir = self.paths.sysfs.join("class/nvme").join(ctrl);
        for attr in ["dhchap_secret", "dhchap_ctrl_secret"] {
            if let Err(e) = self.paths.restrict(&dir.join(attr)) {
                warn!(controller = %ctrl, error = %e, "cannot make {attr} readable by root only");
            }
        }
    }

    /// Follows a key rotation on a live controller: writes the new secret
    /// to the controller's sysfs `dhchap_secret` (and `dhchap_ctrl_secret`),
    /// on which Linux re-authenticates the admin queue and every I/O queue
    /// in place; nothing is disconnected. Whether anything was written.
    ///
    /// A controller connected without a key cannot be given one this way
    /// (the kernel refuses it): it keeps running unauthenticated until it
    /// reconnects, which takes the key.
    fn follow_keys(&mut self, c: &Connection) -> Result<bool, Problem> {
        let Some(rec) = self.owned.controllers.get(&c.attachment) else {
            return Ok(false);
        };
        let (want_host, want_ctrl) = (
            KeyId::of(c.host_key.as_ref()),
            KeyId::of(c.ctrl_key.as_ref()),
        );
        let Some(host_key) = c.host_key.as_ref() else {
            // The controller does not know yet which key the target holds
            // (it restarted): keep the keys this controller authenticated with.
            return Ok(false);
        };
        if rec.host_key.is_none() || (rec.host_key == want_host && rec.ctrl_key == want_ctrl) {
            return Ok(false);
        }
        let Some(ctrl) = rec.controller.clone() else {
            return Ok(false);
        };
        let dir = self.paths.sysfs.join("class/nvme").join(&ctrl);
        let mut writes = Vec::new();
        if rec.ctrl_key.is_some() && rec.ctrl_key != want_ctrl {
            if let Some(k) = c.ctrl_key.as_ref() {
                writes.push(("dhchap_ctrl_secret", k));
            }
        }
        if rec.host_key != want_host {
            writes.push(("dhchap_secret", host_key));
        }
        for (attr, k) in writes {
            let p = dir.join(attr);
            self.paths.write_secret(&p, &k.secret).map_err(|e| {
                Problem::new(
                    Reason::ReauthenticationFailed,
                    format!(
                        "giving controller {ctrl} key generation {}: {}",
                        k.generation,
                        super::io_msg("writing", &p, &e)
                    ),
                )
            })?;
        }
        if let Some(r) = self.owned.controllers.get_mut(&c.attachment) {
            r.host_key = want_host;
            if r.ctrl_key.is_some() {
                r.ctrl_key = want_ctrl;
            }
        }
        self.save()?;
        info!(controller = %ctrl, generation = host_key.generation,
            fingerprint = %host_key.fingerprint, "re-authenticating with the rotated key");
        Ok(true)
    }

    /// A recorded controller that must be redone: gone, dead, or made for
    /// a connection that changed.
    fn is_stale(&self, rec: &OwnedController, want: Option<&OwnedController>) -> bool {
        let Some(want) = want else { return true };
        // Keys are followed on the live controller (`follow_keys`), not
        // by reconnecting.
        let same = OwnedController {
            controller: rec.controller.clone(),
            host_key: rec.host_key.clone(),
            ctrl_key: rec.ctrl_key.clone(),
            ..want.clone()
        } == *rec;
        let alive = rec
            .controller
            .as_deref()
            .and_then(|c| sysfs::controller(&self.paths, c))
            .is_some_and(|i| self.is_ours(rec, &i) && i.state != "dead" && i.state != "deleting");
        !same || !alive
    }

    fn attach(&mut self, name: &str, c: &Connection) -> Result<(), Problem> {
        let rec = self.wanted_record(c)?;
        self.check_auth(c)?;
        // Never logged or recorded: it carries the secrets.
        let options = rec.options.clone()
            + &fabrics::secret_options(c)
                .map_err(|m| Problem::new(Reason::InvalidConnection, m))?;
        let transport = rec.transport.clone();
        self.owned.controllers.insert(name.to_string(), rec);
        self.save()?;
        match fabrics::connect(&self.paths, &options) {
            Ok(ctrl) => {
                info!(controller = %ctrl, "connected");
                if let Some(r) = self.owned.controllers.get_mut(name) {
                    r.controller = Some(ctrl);
                }
                self.save()?;
                self.expose_recorded(name)
            }
            Err(e) => {
                self.owned.controllers.remove(name);
                self.save()?;
                Err(self.connect_problem(&transport, &e))
            }
        }
    }

    fn connect_problem(&self, transport: &str, e: &std::io::Error) -> Problem {
        let module = host_module(transport);
        if !self.paths.module_loaded(&module) {
            return Problem::new(
                Reason::KernelModuleMissing,
                format!("connect failed ({e}): kernel module {module} is not loaded (modprobe {module})"),
            );
        }
        if e.raw_os_error() == Some(libc::EALREADY) {
            return Problem::new(
                Reason::AlreadyConnected,
                format!("connect refused by the kernel ({e}): a controller this agent did not create is already connected to this subsystem with this host NQN; it is left untouched"),
            );
        }
        let reason = match e.raw_os_error() {
            Some(libc::ECONNREFUSED | libc::ETIMEDOUT | libc::EHOSTUNREACH | libc::ENETUNREACH) => {
                Reason::TargetUnreachable
            }
            _ => Reason::ConnectFailed,
        };
        Problem::new(
            reason,
            format!("writing the connect options to /dev/nvme-fabrics failed: {e} (the kernel log says why)"),
        )
    }

    /// Finds the namespace's block device (waiting for the scan) and makes
    /// the exposure symlink point at it.
    fn expose_recorded(&self, name: &str) -> Result<(), Problem> {
        let rec = self
            .owned
            .controllers
            .get(name)
            .ok_or_else(|| Problem::new(Reason::NotConnected, "not connected"))?;
        let ctrl = rec
            .controller
            .as_deref()
            .ok_or_else(|| Problem::new(Reason::NotConnected, "connect did not finish"))?;
        let want = uuid::Uuid::parse_str(&rec.uuid).ok();
        let deadline = Instant::now() + NAMESPACE_WAIT;
        let block = loop {
            match sysfs::find_namespace(&self.paths, ctrl, NSID, want) {
                Err(m) => return Err(Problem::new(Reason::WrongNamespace, m)),
                Ok(Some(b)) => break b,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Ok(None) => {
                    return Err(Problem::new(
                        Reason::NamespaceMissing,
                        format!("controller {ctrl} shows no block device for namespace {NSID}"),
                    ))
                }
            }
        };
        if rec.host_key.is_some() {
            self.restrict_secrets(ctrl);
        }
        let dev = self.paths.dev.join(&block);
        if rec.read_only {
            set_read_only(&dev)?;
        }
        let link = PathBuf::from(&rec.exposure_name);
        if std::fs::read_link(&link).ok().as_deref() != Some(dev.as_path()) {
            replace_symlink(&dev, &link).map_err(|e| {
                Problem::new(
                    Reason::ExposureFailed,
                    format!("symlink {}: {e}", link.display()),
                )
            })?;
            info!(path = %link.display(), device = %dev.display(), "exposed");
        }
        Ok(())
    }

    /// Removes the symlink and deletes the controller (after checking it
    /// is still the one recorded).
    fn detach(&mut self, name: &str) -> Result<(), Problem> {
        let Some(rec) = self.owned.controllers.get(name).cloned() else {
            return Ok(());
        };
        let _span = info_span!("detach", attachment = name, volume = %rec.volume).entered();
        let link = Path::new(&rec.exposure_name);
        if std::fs::symlink_metadata(link).is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = std::fs::remove_file(link);
        }
        if let Some(ctrl) = &rec.controller {
            if let Some(i) = sysfs::controller(&self.paths, ctrl) {
                if self.is_ours(&rec, &i) && i.state != "deleting" {
                    fabrics::delete_controller(&self.paths, ctrl).map_err(|e| {
                        Problem::new(
                            Reason::DisconnectFailed,
                            format!("deleting controller {ctrl}: {e}"),
                        )
                    })?;
                }
            }
        }
        self.owned.controllers.remove(name);
        self.save()?;
        info!("detached");
        Ok(())
    }

    /// A recorded controller as the reconciler sees it, read back.
    fn attachment(&self, name: &str, rec: &OwnedController) -> Attachment {
        let (connected, cond) = self.read_back(rec);
        let info = rec
            .controller
            .as_deref()
            .and_then(|c| sysfs::controller(&self.paths, c));
        Attachment {
            attachment: name.to_string(),
            volume: rec.volume.clone(),
            subsystem_nqn: rec.subsysnqn.clone(),
            read_only: rec.read_only,
            path: rec.exposure_name.clone(),
            state: info.map_or_else(|| "gone".into(), |i| i.state),
            live: connected,
            size_bytes: device_size(&rec.exposure_name),
            status: ConnectionStatus {
                attachment: name.to_string(),
                volume: rec.volume.clone(),
                connected,
                device_path: rec.exposure_name.clone(),
                conditions: vec![cond],
                ..Default::default()
            },
        }
    }

    /// Live state of a recorded controller, from sysfs and the symlink.
    fn read_back(&self, rec: &OwnedController) -> (bool, ferrofab_proto::v1::Condition) {
        let info = rec
            .controller
            .as_deref()
            .and_then(|c| sysfs::controller(&self.paths, c));
        let exposed = std::fs::metadata(&rec.exposure_name).is_ok();
        match info {
            None => (
                false,
                condition(
                    "Connected",
                    false,
                    "ControllerLost",
                    "the controller is gone",
                ),
            ),
            Some(i) if i.state == "live" && exposed => (
                true,
                condition(
                    "Connected",
                    true,
                    "HostConnected",
                    format!(
                        "kernel controller {} to {}:{}, exposed at {}",
                        i.name, rec.traddr, rec.trsvcid, rec.exposure_name
                    ),
                ),
            ),
            Some(i) if i.state == "live" => (
                false,
                condition(
                    "Connected",
                    false,
                    "ExposureMissing",
                    "exposure symlink missing",
                ),
            ),
            Some(i) if i.state == "connecting" || i.state == "resetting" => (
                false,
                condition(
                    "Connected",
                    false,
                    "Reconnecting",
                    format!(
                        "controller {} is {}; the kernel retries within ctrl_loss_tmo",
                        i.name, i.state
                    ),
                ),
            ),
            Some(i) => (
                false,
                condition(
                    "Connected",
                    false,
                    "ControllerLost",
                    format!("controller {} is {}", i.name, i.state),
                ),
            ),
        }
    }
}

impl WorkstationDriver for KernelWorkstation {
    fn prepare(&mut self, wanted: &[Connection]) -> Result<(), Problem> {
        if !wanted.is_empty() {
            if let Some(m) = self.paths.host_unavailable() {
                return Err(Problem::new(Reason::KernelModuleMissing, m));
            }
        }
        crate::cache::ensure_dir(&self.expose_dir)
            .map_err(|e| Problem::new(Reason::ExposureUnavailable, e.to_string()))
    }

    fn check(&self, c: &Connection) -> Result<(), Problem> {
        self.wanted_record(c)?;
        fabrics::secret_options(c).map_err(|m| Problem::new(Reason::InvalidConnection, m))?;
        self.check_auth(c)
    }

    /// The recorded controllers (only those this agent connected).
    fn list(&self) -> Listing {
        Listing {
            attachments: self
                .owned
                .controllers
                .iter()
                .map(|(name, rec)| self.attachment(name, rec))
                .collect(),
            stale: None,
        }
    }

    fn serves(&self, attachment: &str, c: &Connection) -> bool {
        let want = self.wanted_record(c).ok();
        self.owned
            .controllers
            .get(attachment)
            .is_some_and(|rec| !self.is_stale(rec, want.as_ref()))
    }

    fn connect(&mut self, c: &Connection) -> Result<bool, Problem> {
        self.attach(&c.attachment, c).map(|()| true)
    }

    fn expose(&mut self, c: &Connection) -> Result<bool, Problem> {
        let rotated = self.follow_keys(c)?;
        self.expose_recorded(&c.attachment).map(|()| rotated)
    }

    fn disconnect(&mut self, attachment: &str) -> Result<bool, Problem> {
        let was = self.owned.controllers.contains_key(attachment);
        self.detach(attachment).map(|()| was)
    }

    /// Controllers stay connected while the agent is down (adopted on
    /// the next start), so applications keep their I/O.
    fn shutdown(&mut self) {}

    /// Whether this kernel's fabrics host does DH-HMAC-CHAP (nvme-auth).
    fn dhchap_capable(&self) -> bool {
        host_supported(&self.paths)
    }
}

/// Size of the block device behind `path` (0 if unknown).
fn device_size(path: &str) -> u64 {
    use std::io::{Seek, SeekFrom};
    std::fs::File::open(path)
        .and_then(|mut f| f.seek(SeekFrom::End(0)))
        .unwrap_or(0)
}

/// Points `link` at `target`, replacing what is there atomically (a
/// temporary link renamed over it).
fn replace_symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    let tmp = link.with_extension("ferrofab-tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

/// Marks the block device read-only on this host (`BLKROSET`).
fn set_read_only(dev: &Path) -> Result<(), Problem> {
    let f = std::fs::File::open(dev).map_err(|e| {
        Problem::new(
            Reason::ExposureFailed,
            format!("opening {}: {e}", dev.display()),
        )
    })?;
    let one: libc::c_int = 1;
    // SAFETY: BLKROSET reads one int through the pointer, which is valid
    // for the duration of the call; the descriptor is open.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKROSET as _, &one) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Problem::new(
            Reason::ExposureFailed,
            format!("marking {} read-only: {e}", dev.display()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::kernel::{sysfs::fake, testing};
    use crate::problem::PassOutcome;
    use crate::reconcile::workstation::WorkstationReconciler;
    use ferrofab_proto::v1::DesiredState;

    type Reconciler = WorkstationReconciler<KernelWorkstation>;

    fn reconciler(cfg: &AgentConfig, paths: &KernelPaths, id: HostIdentity) -> Reconciler {
        WorkstationReconciler::new(Box::new(KernelWorkstation::new(cfg, paths.clone(), id)))
    }

    fn setup(root: &Path) -> (AgentConfig, KernelPaths) {
        let mut cfg = AgentConfig::for_tests("w1");
        cfg.state_dir = root.join("state");
        cfg.expose_dir = root.join("volumes");
        let paths = testing::paths(root);
        std::fs::write(paths.dev.join("nvme-fabrics"), b"").unwrap();
        (cfg, paths)
    }

    /// Live controller nvme3 to `nqn.s` with namespace 1 (`nvme1n1`).
    fn live_nvme3(paths: &KernelPaths, u: &uuid::Uuid) {
        fake::controller(
            paths,
            "nvme3",
            "nqn.s",
            "nvme1c3n1",
            "nvme1n1",
            &u.to_string(),
        );
        std::fs::write(paths.dev.join("nvme1n1"), b"").unwrap();
    }

    fn connection(uuid: &uuid::Uuid) -> Connection {
        Connection {
            attachment: "a1".into(),
            volume: "v1".into(),
            subsystem_nqn: "nqn.s".into(),
            address: "10.0.2.2".into(),
            port: 4420,
            transport: "tcp".into(),
            exposure_name: "v1".into(),
            uuid: uuid.to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn adopts_recorded_controllers_detaches_only_its_own() {
        let root = tempfile::tempdir().unwrap();
        let (cfg, paths) = setup(root.path());
        let id = HostIdentity::ephemeral();
        let u = uuid::Uuid::new_v4();
        fake::controller(
            &paths,
            "nvme3",
            "nqn.s",
            "nvme1c3n1",
            "nvme1n1",
            &u.to_string(),
        );
        // An admin's controller to another subsystem.
        fake::controller(
            &paths,
            "nvme5",
            "nqn.admin",
            "nvme2c5n1",
            "nvme2n1",
            &u.to_string(),
        );
        std::fs::write(paths.dev.join("nvme1n1"), b"").unwrap();
        let c = connection(&u);

        // What a previous run recorded.
        let mut w = KernelWorkstation::new(&cfg, paths.clone(), id.clone());
        let mut rec = w.wanted_record(&c).unwrap();
        rec.controller = Some("nvme3".into());
        w.owned.controllers.insert("a1".into(), rec);
        w.save().unwrap();
        drop(w);

        let mut w = reconciler(&cfg, &paths, id);
        let ds = DesiredState {
            connections: vec![c],
            ..Default::default()
        };
        let out = w.reconcile(&ds);
        assert_eq!(
            out,
            PassOutcome {
                changes: 0,
                errors: 0
            },
            "{w:?}"
        );
        let link = cfg.expose_dir.join("v1");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            paths.dev.join("nvme1n1")
        );
        let st = w.observe(&ds);
        assert!(st[0].connected, "{st:?}");
        assert_eq!(w.local_attachments()[0].state, "live");

        // Detach: the symlink goes, delete_controller is written for
        // nvme3 only.
        let out = w.reconcile(&DesiredState::default());
        assert_eq!(out.changes, 1);
        assert!(std::fs::symlink_metadata(&link).is_err());
        let del = |c: &str| {
            paths
                .sysfs
                .join("class/nvme")
                .join(c)
                .join("delete_controller")
        };
        assert_eq!(std::fs::read_to_string(del("nvme3")).unwrap(), "1\n");
        assert!(!del("nvme5").exists());
        assert!(w.driver().owned.controllers.is_empty());
    }

    /// A controller naming `../../etc/shadow` as the exposure used to get
    /// the device symlink renamed over that file. Every name that is not
    /// one safe file name is refused before anything is recorded or
    /// connected, with a status naming it.
    #[test]
    fn unsafe_exposure_names_are_refused_and_nothing_outside_is_touched() {
        let root = tempfile::tempdir().unwrap();
        let (mut cfg, paths) = setup(root.path());
        // ../../etc/shadow from here is ROOT/etc/shadow.
        cfg.expose_dir = root.path().join("x/volumes");
        let shadow = root.path().join("etc/shadow");
        std::fs::create_dir_all(shadow.parent().unwrap()).unwrap();
        std::fs::write(&shadow, b"root:secret\n").unwrap();
        let u = uuid::Uuid::new_v4();
        live_nvme3(&paths, &u);
        let mut w = reconciler(&cfg, &paths, HostIdentity::ephemeral());
        // A fake /dev/nvme-fabrics whose answer (read after the options
        // written) names nvme3: a connect would succeed and expose.
        let opts = w.driver().wanted_record(&connection(&u)).unwrap().options;
        let fabrics = format!("{}instance=3,cntlid=1\n", " ".repeat(opts.len()));
        std::fs::write(paths.dev.join("nvme-fabrics"), &fabrics).unwrap();
        let bad = |attachment: &str, name: &str| Connection {
            attachment: attachment.into(),
            exposure_name: name.into(),
            ..connection(&u)
        };
        let ds = DesiredState {
            connections: vec![
                bad("a1", "../../etc/shadow"),
                bad("a2", "a/b"),
                bad("a3", ".."),
                bad("a4", "v\n1"),
            ],
            ..Default::default()
        };
        let out = w.reconcile(&ds);
        let meta = std::fs::symlink_metadata(&shadow).unwrap();
        assert!(meta.file_type().is_file(), "shadow replaced: {meta:?}");
        assert_eq!(std::fs::read(&shadow).unwrap(), b"root:secret\n");
        assert_eq!(out.errors, 4, "{w:?}");
        assert_eq!(out.changes, 0);
        for st in w.observe(&ds) {
            let c = &st.conditions[0];
            assert_eq!(c.reason, "InvalidExposureName", "{st:?}");
            assert!(c.message.contains("single file name"), "{}", c.message);
            assert!(!st.connected);
        }
        assert!(w.driver().owned.controllers.is_empty(), "nothing recorded");
        assert_eq!(
            std::fs::read_to_string(paths.dev.join("nvme-fabrics")).unwrap(),
            fabrics,
            "no connect was attempted"
        );
        assert!(!root.path().join("x/volumes/a").exists());
    }

    fn key(secret: &str, generation: u64) -> Option<ferrofab_proto::v1::DhchapKey> {
        Some(ferrofab_proto::v1::DhchapKey {
            secret: secret.into(),
            generation,
            fingerprint: format!("fp{generation}"),
        })
    }

    /// Keys from the controller: refused (AuthUnsupported) on a kernel
    /// without nvme-auth; passed in the connect options only (never in the
    /// record); a rotation is written to the live controller's sysfs
    /// `dhchap_secret`, without reconnecting.
    #[test]
    fn keys_go_in_the_connect_options_and_rotations_reauthenticate_in_place() {
        let root = tempfile::tempdir().unwrap();
        let (cfg, paths) = setup(root.path());
        let u = uuid::Uuid::new_v4();
        let h1 = "DHHC-1:01:aG9zdGtleTE=:";
        let h2 = "DHHC-1:01:aG9zdGtleTI=:";
        let c1 = Connection {
            host_key: key(h1, 1),
            ..connection(&u)
        };
        let ds = |c: &Connection| DesiredState {
            connections: vec![c.clone()],
            ..Default::default()
        };
        let mut w = reconciler(&cfg, &paths, HostIdentity::ephemeral());
        assert!(!w.driver().dhchap_capable());
        assert_eq!(w.reconcile(&ds(&c1)).errors, 1);
        let st = w.observe(&ds(&c1));
        assert_eq!(st[0].conditions[0].reason, "AuthUnsupported", "{st:?}");
        assert!(st[0].conditions[0]
            .message
            .contains("CONFIG_NVME_HOST_AUTH"));
        assert!(w.driver().owned.controllers.is_empty(), "nothing connected");
        // No key yet, but the export requires authentication: the same.
        let required = Connection {
            require_auth: true,
            ..connection(&u)
        };
        assert_eq!(w.reconcile(&ds(&required)).errors, 1);
        let st = w.observe(&ds(&required));
        assert_eq!(st[0].conditions[0].reason, "AuthUnsupported", "{st:?}");
        assert!(st[0].conditions[0]
            .message
            .contains("requires authentication"));

        // nvme-auth loaded (held by nvme-core): the connect carries the key.
        std::fs::create_dir_all(paths.sysfs.join("module/nvme_auth/holders/nvme_core")).unwrap();
        assert!(w.driver().dhchap_capable());
        live_nvme3(&paths, &u);
        let opts = w.driver().wanted_record(&c1).unwrap().options;
        let written = format!("{opts},dhchap_secret={h1}");
        let fabrics = paths.dev.join("nvme-fabrics");
        std::fs::write(
            &fabrics,
            format!("{}instance=3,cntlid=1\n", " ".repeat(written.len())),
        )
        .unwrap();
        let out = w.reconcile(&ds(&c1));
        assert_eq!((out.changes, out.errors), (1, 0), "{w:?}");
        assert!(std::fs::read_to_string(&fabrics)
            .unwrap()
            .starts_with(&written));
        let record = std::fs::read_to_string(cfg.state_dir.join(HOST_STATE_FILE)).unwrap();
        assert!(
            !record.contains("DHHC-1") && record.contains("fp1"),
            "{record}"
        );

        // Rotation: generation 2 goes to sysfs, nothing is reconnected.
        let secret_attr = paths.sysfs.join("class/nvme/nvme3/dhchap_secret");
        {
            // Linux makes it world-readable; the agent narrows it.
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&secret_attr, "x").unwrap();
            std::fs::set_permissions(&secret_attr, std::fs::Permissions::from_mode(0o644)).unwrap();
            w.reconcile(&ds(&c1));
            let mode = std::fs::metadata(&secret_attr)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let c2 = Connection {
            host_key: key(h2, 2),
            ..connection(&u)
        };
        assert_eq!(w.reconcile(&ds(&c2)).errors, 0, "{w:?}");
        assert_eq!(std::fs::read_to_string(&secret_attr).unwrap(), h2);
        assert!(!paths
            .sysfs
            .join("class/nvme/nvme3/delete_controller")
            .exists());
        let rec = &w.driver().owned.controllers["a1"];
        assert_eq!(rec.host_key.as_ref().map(|k| k.generation), Some(2));
        assert_eq!(rec.controller.as_deref(), Some("nvme3"));
        // Steady state: written once.
        std::fs::remove_file(&secret_attr).unwrap();
        assert_eq!(w.reconcile(&ds(&c2)), PassOutcome::default());
        assert!(!secret_attr.exists());
        // The controller lost track of the key (restart): kept as it is.
        assert_eq!(w.reconcile(&ds(&connection(&u))), PassOutcome::default());
        assert!(!secret_attr.exists());
    }

    #[test]
    fn connect_failures_are_explained() {
        let root = tempfile::tempdir().unwrap();
        let (cfg, paths) = setup(root.path());
        let w = KernelWorkstation::new(&cfg, paths.clone(), HostIdentity::ephemeral());
        let err = |n| std::io::Error::from_raw_os_error(n);
        let p = w.connect_problem("tcp", &err(libc::EINVAL));
        assert_eq!(p.reason, Reason::KernelModuleMissing);
        assert!(p.message.contains("nvme-tcp"), "{p}");
        std::fs::create_dir_all(paths.sysfs.join("module/nvme_tcp")).unwrap();
        assert_eq!(
            w.connect_problem("tcp", &err(libc::EALREADY)).reason,
            Reason::AlreadyConnected
        );
        assert_eq!(
            w.connect_problem("tcp", &err(libc::ECONNREFUSED)).reason,
            Reason::TargetUnreachable
        );
        assert_eq!(
            w.connect_problem("tcp", &err(libc::EIO)).reason,
            Reason::ConnectFailed
        );
    }

    #[test]
    fn gone_controllers_are_not_adopted_and_missing_modules_are_named() {
        let root = tempfile::tempdir().unwrap();
        let (cfg, paths) = setup(root.path());
        let u = uuid::Uuid::new_v4();
        let mut w = KernelWorkstation::new(&cfg, paths.clone(), HostIdentity::ephemeral());
        let mut rec = w.wanted_record(&connection(&u)).unwrap();
        rec.controller = Some("nvme7".into());
        w.owned.controllers.insert("a1".into(), rec);
        w.save().unwrap();
        let mut w = reconciler(&cfg, &paths, HostIdentity::ephemeral());
        assert!(w.driver().owned.controllers.is_empty());

        std::fs::remove_file(paths.dev.join("nvme-fabrics")).unwrap();
        let ds = DesiredState {
            connections: vec![connection(&u)],
            ..Default::default()
        };
        assert_eq!(w.reconcile(&ds).errors, 1);
        let st = w.observe(&ds);
        assert_eq!(st[0].conditions[0].reason, "KernelModuleMissing");
        assert!(st[0].conditions[0].message.contains("nvme-fabrics"));
    }
}
