//! The kernel target: Linux nvmet driven through configfs
//! (`/sys/kernel/config/nvmet`).
//!
//! Layout used (one volume per subsystem, namespace 1):
//!
//! ```text
//! nvmet/subsystems/<nqn>/attr_allow_any_host = 0, attr_model = ferrofab
//! nvmet/subsystems/<nqn>/allowed_hosts/<host> -> nvmet/hosts/<host>
//! nvmet/subsystems/<nqn>/namespaces/1/{device_path,device_uuid,device_nguid,buffered_io,enable}
//! nvmet/ports/<id>/{addr_trtype,addr_adrfam,addr_traddr,addr_trsvcid}
//! nvmet/ports/<id>/subsystems/<nqn> -> nvmet/subsystems/<nqn>
//! ```
//!
//! DH-HMAC-CHAP (`sync_auth`): nvmet keeps the keys in the host entry
//! (`nvmet/hosts/<host>/{dhchap_key,dhchap_ctrl_key,dhchap_hash,dhchap_dhgroup}`),
//! shared by every subsystem that allows the host; see [`KernelTarget::sync_auth`].
//!
//! Only objects recorded in the ownership state (and, for subsystems,
//! marked in `attr_model`) are changed or removed; everything else is
//! read at most. Nothing is torn down when the agent stops: the kernel
//! keeps serving and the next start adopts the objects.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::OpenOptions;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use ferrofab_nvmeof_target::backend::BlockBackend;
use ferrofab_nvmeof_target::{
    ListenerKind, ListenerStatus, NamespaceStatus, SubsystemStatus, TargetStatus,
};
use ferrofab_nvmeof_wire::auth::DhchapSecret;
use ferrofab_proto::v1::{DhchapKey, Export, KeyApplied, Listener};
use ferrofab_types::Reason;
use tracing::{info, warn};

use super::auth::{target_supported, TARGET_NEEDS};
use super::ownership::{OwnedTarget, StateFile, MODEL_MARKER, TARGET_STATE_FILE};
use super::{entries, io_msg, read_attr, target_module, KernelPaths};
use crate::driver::builtin::NSID;
use crate::driver::TargetDriver;
use crate::problem::Problem;

/// Longest serial number nvmet accepts.
const SERIAL_MAX: usize = 20;

/// The hash and DH group nvmet offers each keyed host: the built-in
/// target's defaults (SHA-256, ffdhe2048), so both targets negotiate the
/// same with a given host. A DH group keeps a recorded exchange from being
/// used to test key guesses offline (docs/security.md).
const DHCHAP_HASH: &str = "hmac(sha256)";
const DHCHAP_DHGROUP: &str = "ffdhe2048";

/// Length of the random key that locks out a host without a key where
/// authentication is required (nobody knows it, so nvmet refuses the host).
const LOCK_KEY_LEN: usize = 32;

/// What the agent put into nvmet's host entries (the secrets themselves
/// stay in configfs; this is what may be reported).
#[derive(Debug, Default)]
struct AuthBook {
    /// Host NQN -> generation of the key its entry holds.
    applied: BTreeMap<String, u64>,
    /// Subsystem NQN -> hosts whose key was applied for it.
    by_nqn: HashMap<String, BTreeSet<String>>,
    /// Hosts locked with a random key (no key, authentication required).
    locked: BTreeSet<String>,
    /// Subsystems already warned about (keys unsupported, foreign host).
    warned: BTreeSet<String>,
}

/// One port as configured in nvmet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortAddr {
    pub trtype: String,
    pub traddr: String,
    pub trsvcid: String,
}

impl PortAddr {
    fn adrfam(&self) -> &'static str {
        if self.traddr.contains(':') {
            "ipv6"
        } else {
            "ipv4"
        }
    }
}

impl std::fmt::Display for PortAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}:{}", self.trtype, self.traddr, self.trsvcid)
    }
}

/// nvmet through configfs.
#[derive(Debug)]
pub struct KernelTarget {
    paths: KernelPaths,
    record: StateFile,
    owned: Mutex<OwnedTarget>,
    /// Owned ports that match the desired listeners (subsystems are
    /// linked to these).
    active_ports: Mutex<BTreeSet<u16>>,
    auth: Mutex<AuthBook>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KernelTarget {
    /// Opens the ownership record and adopts the recorded objects that
    /// still exist (see [`KernelTarget::adopt`]).
    pub fn new(paths: KernelPaths, state_dir: &Path) -> Self {
        let record = StateFile::new(state_dir, TARGET_STATE_FILE);
        let owned: OwnedTarget = record.load();
        let t = KernelTarget {
            paths,
            record,
            owned: Mutex::new(owned),
            active_ports: Mutex::new(BTreeSet::new()),
            auth: Mutex::new(AuthBook::default()),
        };
        t.adopt();
        t
    }

    fn nvmet(&self) -> PathBuf {
        self.paths.nvmet()
    }
    fn subsys_dir(&self, nqn: &str) -> PathBuf {
        self.nvmet().join("subsystems").join(nqn)
    }
    fn ns_dir(&self, nqn: &str) -> PathBuf {
        self.subsys_dir(nqn)
            .join("namespaces")
            .join(NSID.to_string())
    }
    fn port_dir(&self, id: u16) -> PathBuf {
        self.nvmet().join("ports").join(id.to_string())
    }
    fn host_dir(&self, host: &str) -> PathBuf {
        self.nvmet().join("hosts").join(host)
    }

    /// Keeps only the records whose objects exist (and, for subsystems,
    /// carry the marker), so the agent takes over what it made before a
    /// restart without disturbing connected hosts.
    pub fn adopt(&self) {
        if self.paths.target_unavailable().is_some() {
            return;
        }
        let mut owned = lock(&self.owned);
        let before = owned.clone();
        owned.subsystems = before
            .subsystems
            .iter()
            .filter(|nqn| self.adoptable_subsystem(nqn))
            .cloned()
            .collect();
        owned.ports.retain(|id| self.port_dir(*id).is_dir());
        owned.hosts.retain(|h| self.host_dir(h).is_dir());
        info!(
            subsystems = owned.subsystems.len(),
            ports = owned.ports.len(),
            hosts = owned.hosts.len(),
            "kernel target: adopted the objects this agent created"
        );
        if *owned != before {
            self.save(&owned);
        }
    }

    /// A recorded subsystem is ours if it carries the marker, or if it is
    /// a bare leftover of a creation interrupted before the marker was
    /// written (no namespace, no hosts).
    fn adoptable_subsystem(&self, nqn: &str) -> bool {
        let dir = self.subsys_dir(nqn);
        if !dir.is_dir() {
            return false;
        }
        if read_attr(&dir.join("attr_model")).as_deref() == Some(MODEL_MARKER) {
            return true;
        }
        let bare = entries(&dir.join("namespaces")).is_empty()
            && entries(&dir.join("allowed_hosts")).is_empty();
        if bare {
            let _ = self.paths.write_attr(&dir.join("attr_model"), MODEL_MARKER);
        } else {
            warn!(%nqn, "recorded subsystem lacks the ferrofab model marker: treated as foreign");
        }
        bare
    }

    fn save(&self, owned: &OwnedTarget) {
        if let Err(e) = self.record.store(owned) {
            warn!(error = %e, "cannot persist the kernel ownership record");
        }
    }

    /// Records an object before it is created (see the module docs).
    fn record(&self, f: impl FnOnce(&mut OwnedTarget)) -> Result<(), Problem> {
        let mut owned = lock(&self.owned);
        f(&mut owned);
        self.record
            .store(&*owned)
            .map_err(|e| Problem::new(Reason::OwnershipRecordFailed, e.to_string()))
    }

    fn forget(&self, f: impl FnOnce(&mut OwnedTarget)) {
        let mut owned = lock(&self.owned);
        f(&mut owned);
        self.save(&owned);
    }

    fn owns_subsystem(&self, nqn: &str) -> bool {
        lock(&self.owned).subsystems.contains(nqn)
    }

    fn available(&self) -> Result<(), Problem> {
        match self.paths.target_unavailable() {
            Some(m) => Err(Problem::new(Reason::KernelModuleMissing, m)),
            None => Ok(()),
        }
    }

    /// Every port in nvmet (owned or not) with its address.
    fn ports(&self) -> Vec<(u16, PortAddr)> {
        let dir = self.nvmet().join("ports");
        entries(&dir)
            .into_iter()
            .filter_map(|name| {
                let id: u16 = name.parse().ok()?;
                let p = dir.join(&name);
                Some((
                    id,
                    PortAddr {
                        trtype: read_attr(&p.join("addr_trtype")).unwrap_or_default(),
                        traddr: read_attr(&p.join("addr_traddr")).unwrap_or_default(),
                        trsvcid: read_attr(&p.join("addr_trsvcid")).unwrap_or_default(),
                    },
                ))
            })
            .collect()
    }

    /// Creates an owned port for `want`; returns its ID.
    fn create_port(&self, want: &PortAddr, taken: &BTreeSet<u16>) -> Result<u16, String> {
        let module = target_module(&want.trtype);
        if !self.paths.module_loaded(&module) {
            return Err(format!(
                "listener {want}: kernel module {module} is not loaded (modprobe {module})"
            ));
        }
        let id = (1..=u16::MAX)
            .find(|i| !taken.contains(i))
            .ok_or_else(|| format!("listener {want}: no free nvmet port ID"))?;
        self.record(|o| {
            o.ports.insert(id);
        })
        .map_err(|p| p.message)?;
        let dir = self.port_dir(id);
        let made = std::fs::create_dir_all(&dir)
            .map_err(|e| io_msg("creating nvmet port", &dir, &e))
            .and_then(|()| {
                for (attr, v) in [
                    ("addr_trtype", want.trtype.as_str()),
                    ("addr_adrfam", want.adrfam()),
                    ("addr_traddr", want.traddr.as_str()),
                    ("addr_trsvcid", want.trsvcid.as_str()),
                ] {
                    let p = dir.join(attr);
                    self.paths
                        .write_attr(&p, v)
                        .map_err(|e| io_msg("writing", &p, &e))?;
                }
                Ok(())
            });
        if let Err(e) = made {
            let _ = self.paths.remove_item(&dir);
            self.forget(|o| {
                o.ports.remove(&id);
            });
            return Err(format!("listener {want}: {e}"));
        }
        info!(port = id, listener = %want, "nvmet port created");
        Ok(id)
    }

    /// Unlinks every subsystem from an owned port and removes it.
    fn remove_port(&self, id: u16) -> Result<(), String> {
        let dir = self.port_dir(id);
        let subs = dir.join("subsystems");
        for nqn in entries(&subs) {
            if !self.owns_subsystem(&nqn) {
                return Err(format!(
                    "nvmet port {id} is no longer wanted but foreign subsystem {nqn} is linked to it: port kept"
                ));
            }
            let l = subs.join(&nqn);
            std::fs::remove_file(&l).map_err(|e| io_msg("unlinking", &l, &e))?;
        }
        self.paths
            .remove_item(&dir)
            .map_err(|e| io_msg("removing nvmet port", &dir, &e))?;
        self.forget(|o| {
            o.ports.remove(&id);
        });
        info!(port = id, "nvmet port removed");
        Ok(())
    }

    /// Links `nqn` to every active port; with `bounce`, links that exist
    /// are first removed, which ends the subsystem's controllers on that
    /// port (how a revoked host loses its live connection on 6.1).
    fn link_ports(&self, nqn: &str, bounce: bool) -> Result<(), Problem> {
        let target = self.subsys_dir(nqn);
        let active = lock(&self.active_ports).clone();
        for id in active {
            let l = self.port_dir(id).join("subsystems").join(nqn);
            let linked = std::fs::symlink_metadata(&l).is_ok();
            if linked && bounce {
                std::fs::remove_file(&l).map_err(|e| {
                    Problem::new(Reason::HostsNotApplied, io_msg("unlinking", &l, &e))
                })?;
            } else if linked {
                continue;
            }
            ensure_group(l.parent().unwrap_or(Path::new("/")))?;
            std::os::unix::fs::symlink(&target, &l).map_err(|e| {
                let module = self
                    .ports()
                    .into_iter()
                    .find(|(i, _)| *i == id)
                    .map(|(_, a)| target_module(&a.trtype))
                    .unwrap_or_default();
                Problem::new(
                    Reason::ExportFailed,
                    format!(
                        "{} (enabling the port needs kernel module {module}; see the kernel log)",
                        io_msg("linking subsystem to port", &l, &e)
                    ),
                )
            })?;
        }
        Ok(())
    }

    /// Removes host entries the agent created that no subsystem links
    /// any more.
    fn gc_hosts(&self) {
        let subs = self.nvmet().join("subsystems");
        let used: BTreeSet<String> = entries(&subs)
            .iter()
            .flat_map(|s| entries(&subs.join(s).join("allowed_hosts")))
            .collect();
        let ours = lock(&self.owned).hosts.clone();
        for h in ours.difference(&used) {
            let dir = self.host_dir(h);
            match self.paths.remove_item(&dir) {
                Ok(()) => {
                    self.forget(|o| {
                        o.hosts.remove(h);
                    });
                    let mut book = lock(&self.auth);
                    book.applied.remove(h);
                    book.locked.remove(h);
                }
                Err(e) => warn!(host = %h, error = %e, "removing nvmet host"),
            }
        }
    }

    fn ensure_host(&self, host: &str) -> Result<(), Problem> {
        let dir = self.host_dir(host);
        if dir.is_dir() {
            return Ok(());
        }
        self.record(|o| {
            o.hosts.insert(host.to_string());
        })?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| Problem::new(Reason::HostsNotApplied, io_msg("creating host", &dir, &e)))
    }

    fn owns_host(&self, host: &str) -> bool {
        lock(&self.owned).hosts.contains(host)
    }

    /// Makes `host`'s entry hold `key` (and `ctrl_key` when given) with the
    /// agent's hash and DH group; whether the entry holds it now. Only an
    /// entry the agent created is written: an admin's is left alone (its
    /// host then gets no key, see the docs).
    fn apply_host_key(
        &self,
        nqn: &str,
        host: &str,
        key: &DhchapKey,
        ctrl_key: Option<&DhchapKey>,
    ) -> Result<bool, Problem> {
        self.ensure_host(host)?;
        if !self.owns_host(host) {
            if lock(&self.auth).warned.insert(format!("{nqn} {host}")) {
                warn!(%nqn, %host, "host entry was not created by this agent: its key is not written, the host connects without one");
            }
            return Ok(false);
        }
        let dir = self.host_dir(host);
        let fail = |p: &Path, e: std::io::Error| {
            Problem::new(Reason::AuthNotApplied, io_msg("writing", p, &e))
        };
        for (attr, want) in [
            ("dhchap_hash", DHCHAP_HASH),
            ("dhchap_dhgroup", DHCHAP_DHGROUP),
        ] {
            let p = dir.join(attr);
            if read_attr(&p).as_deref() != Some(want) {
                self.paths.write_attr(&p, want).map_err(|e| fail(&p, e))?;
            }
        }
        let mut wrote = false;
        for (attr, secret) in [("dhchap_key", Some(key)), ("dhchap_ctrl_key", ctrl_key)] {
            let Some(secret) = secret else { continue };
            let p = dir.join(attr);
            self.paths.restrict(&p).map_err(|e| fail(&p, e))?;
            if read_attr(&p).as_deref() != Some(secret.secret.as_str()) {
                self.paths
                    .write_secret(&p, &secret.secret)
                    .map_err(|e| fail(&p, e))?;
                wrote = true;
            }
        }
        let mut book = lock(&self.auth);
        book.locked.remove(host);
        book.applied.insert(host.to_string(), key.generation);
        if wrote {
            info!(%nqn, %host, generation = key.generation, fingerprint = %key.fingerprint,
                bidirectional = ctrl_key.is_some(), "host key applied");
        }
        Ok(true)
    }

    /// Where authentication is required, a host without a key must be
    /// refused. nvmet lets in any allowed host whose entry has no key, so
    /// the entry gets a random key nobody holds: the host's Connect then
    /// asks for authentication, which it cannot complete.
    fn lock_host(&self, nqn: &str, host: &str) -> Result<(), Problem> {
        self.ensure_host(host)?;
        if !self.owns_host(host) {
            if lock(&self.auth).warned.insert(format!("{nqn} {host}")) {
                warn!(%nqn, %host, "host entry was not created by this agent: cannot make it require authentication");
            }
            return Ok(());
        }
        let p = self.host_dir(host).join("dhchap_key");
        let held = read_attr(&p).is_some_and(|k| !k.is_empty());
        if held && lock(&self.auth).locked.contains(host) {
            return Ok(());
        }
        let random = DhchapSecret::generate(LOCK_KEY_LEN, None)
            .map_err(|e| Problem::new(Reason::AuthNotApplied, format!("generating a key: {e}")))?;
        self.paths
            .restrict(&p)
            .and_then(|()| self.paths.write_secret(&p, &random.encode()))
            .map_err(|e| Problem::new(Reason::AuthNotApplied, io_msg("writing", &p, &e)))?;
        let mut book = lock(&self.auth);
        book.applied.remove(host);
        book.locked.insert(host.to_string());
        info!(%nqn, %host, "host has no key and authentication is required: locked with a random key");
        Ok(())
    }

    /// A host that should connect without a key but whose entry (the
    /// agent's) holds one. nvmet cannot unset a key, so the entry is made
    /// again: unlinked from the subsystems that allow it, removed,
    /// created and linked back.
    fn clear_host_key(&self, host: &str) -> Result<(), Problem> {
        let dir = self.host_dir(host);
        let held = read_attr(&dir.join("dhchap_key")).is_some_and(|k| !k.is_empty());
        if !held || !self.owns_host(host) {
            return Ok(());
        }
        let subs_dir = self.nvmet().join("subsystems");
        let linked: Vec<PathBuf> = entries(&subs_dir)
            .into_iter()
            .map(|s| subs_dir.join(s).join("allowed_hosts").join(host))
            .filter(|l| std::fs::symlink_metadata(l).is_ok())
            .collect();
        let fail = |what: &str, p: &Path, e: std::io::Error| {
            Problem::new(Reason::AuthNotApplied, io_msg(what, p, &e))
        };
        for l in &linked {
            std::fs::remove_file(l).map_err(|e| fail("unlinking", l, e))?;
        }
        self.paths
            .remove_item(&dir)
            .map_err(|e| fail("removing host", &dir, e))?;
        std::fs::create_dir_all(&dir).map_err(|e| fail("creating host", &dir, e))?;
        for l in &linked {
            std::os::unix::fs::symlink(&dir, l).map_err(|e| fail("allowing host at", l, e))?;
        }
        let mut book = lock(&self.auth);
        book.applied.remove(host);
        book.locked.remove(host);
        info!(%host, "host key removed (host entry re-created)");
        Ok(())
    }

    fn namespace_status(&self, nqn: &str, nsid: &str) -> Option<NamespaceStatus> {
        let dir = self.subsys_dir(nqn).join("namespaces").join(nsid);
        if read_attr(&dir.join("enable")).as_deref() != Some("1") {
            return None;
        }
        let path = read_attr(&dir.join("device_path")).unwrap_or_default();
        let (size, block_size) = backing_geometry(&self.paths, Path::new(&path));
        Some(NamespaceStatus {
            nsid: nsid.parse().ok()?,
            size,
            block_size,
            uuid: read_attr(&dir.join("device_uuid"))
                .and_then(|u| uuid::Uuid::parse_str(&u).ok())
                .unwrap_or_default(),
            path,
            stats: Default::default(),
        })
    }

    fn subsystem_status(&self, nqn: &str) -> SubsystemStatus {
        let dir = self.subsys_dir(nqn);
        SubsystemStatus {
            nqn: nqn.to_string(),
            serial: read_attr(&dir.join("attr_serial")).unwrap_or_default(),
            allow_any_host: read_attr(&dir.join("attr_allow_any_host")).as_deref() == Some("1"),
            allowed_hosts: entries(&dir.join("allowed_hosts")),
            // nvmet has no per-host read-only (docs/agent.md).
            read_only_hosts: Vec::new(),
            namespaces: entries(&dir.join("namespaces"))
                .iter()
                .filter_map(|n| self.namespace_status(nqn, n))
                .collect(),
            // Linux 6.1 shows no controllers in configfs.
            controllers: Vec::new(),
        }
    }

    fn write_ns_attrs(&self, e: &Export, dir: &Path) -> Result<(), Problem> {
        let path = Path::new(&e.backing_path);
        let mut attrs = vec![("device_path", e.backing_path.clone())];
        if let Ok(u) = uuid::Uuid::parse_str(&e.uuid) {
            attrs.push(("device_uuid", u.to_string()));
            let nguid = if e.nguid.is_empty() {
                u.simple().to_string()
            } else {
                e.nguid.replace('-', "")
            };
            attrs.push(("device_nguid", nguid));
        }
        let buffered = needs_buffered_io(path);
        attrs.push(("buffered_io", u8::from(buffered).to_string()));
        for (attr, v) in attrs {
            let p = dir.join(attr);
            self.paths
                .write_attr(&p, &v)
                .map_err(|err| Problem::new(Reason::ExportFailed, io_msg("writing", &p, &err)))?;
        }
        Ok(())
    }
}

/// A default group (`allowed_hosts`, `ports/N/subsystems`): configfs
/// makes it with its parent, a test tree may not have it yet.
fn ensure_group(dir: &Path) -> Result<(), Problem> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Problem::new(Reason::ExportFailed, io_msg("creating", dir, &e)))
}

/// Whether nvmet must use the page cache for `path`: files on
/// filesystems without `O_DIRECT` (tmpfs) cannot be enabled otherwise.
fn needs_buffered_io(path: &Path) -> bool {
    let is_file = std::fs::metadata(path).is_ok_and(|m| m.is_file());
    is_file
        && OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .is_err()
}

/// (size, logical block size) of a backing file or block device.
fn backing_geometry(paths: &KernelPaths, path: &Path) -> (u64, u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(path) else {
        return (0, 0);
    };
    if m.file_type().is_block_device() {
        let rdev = m.rdev();
        let sys = paths.sysfs.join(format!(
            "dev/block/{}:{}",
            libc::major(rdev),
            libc::minor(rdev)
        ));
        let sectors: u64 = read_attr(&sys.join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let lbs = read_attr(&sys.join("queue/logical_block_size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(512);
        return (sectors * 512, lbs);
    }
    // nvmet uses the inode's block size, at most 4 KiB, for files.
    let lbs = u32::try_from(m.blksize()).unwrap_or(4096).clamp(512, 4096);
    (m.len(), lbs)
}

/// The nvmet address of a desired listener (host names resolved).
pub fn port_addr(l: &Listener) -> Result<PortAddr, String> {
    let trtype = if l.transport.is_empty() {
        "tcp".to_string()
    } else {
        l.transport.to_lowercase()
    };
    if trtype != "tcp" && trtype != "rdma" {
        return Err(format!(
            "listener {}:{}: transport {:?} is not supported by the kernel driver (tcp, rdma)",
            l.address, l.port, l.transport
        ));
    }
    let port = if l.port == 0 { 4420 } else { l.port };
    let port16 = u16::try_from(port)
        .map_err(|_| format!("listener {}:{}: port out of range", l.address, l.port))?;
    let ip: IpAddr = match l.address.parse() {
        Ok(ip) => ip,
        Err(_) => (l.address.as_str(), port16)
            .to_socket_addrs()
            .map_err(|e| format!("listener {}:{}: {e}", l.address, l.port))?
            .next()
            .map(|a| a.ip())
            .ok_or_else(|| format!("listener {}: no address", l.address))?,
    };
    Ok(PortAddr {
        trtype,
        traddr: ip.to_string(),
        trsvcid: port.to_string(),
    })
}

impl TargetDriver for KernelTarget {
    fn status(&self) -> TargetStatus {
        let active = lock(&self.active_ports).clone();
        let listeners = self
            .ports()
            .into_iter()
            .filter(|(id, _)| active.contains(id))
            .filter_map(|(_, a)| {
                let ip: IpAddr = a.traddr.parse().ok()?;
                Some(ListenerStatus {
                    address: SocketAddr::new(ip, a.trsvcid.parse().ok()?),
                    kind: ListenerKind::Io,
                })
            })
            .collect();
        TargetStatus {
            listeners,
            subsystems: self
                .subsystems()
                .iter()
                .map(|n| self.subsystem_status(n))
                .collect(),
            genctr: 0,
            // The kernel target's refusals are not visible from configfs.
            commands_refused_length: 0,
            commands_refused_write_protected: 0,
            connections: None,
        }
    }

    /// The kernel keeps serving while the agent is down.
    fn shutdown(&self) {}

    fn sync_listeners(&self, wanted: &[Listener]) -> Vec<String> {
        if let Some(m) = self.paths.target_unavailable() {
            return vec![m];
        }
        let mut errors = Vec::new();
        let want: BTreeSet<PortAddr> = wanted
            .iter()
            .filter_map(|l| port_addr(l).map_err(|e| errors.push(e)).ok())
            .collect();
        let ports = self.ports();
        let owned = lock(&self.owned).ports.clone();
        let mut taken: BTreeSet<u16> = ports.iter().map(|(i, _)| *i).collect();
        let mut active = BTreeSet::new();
        for w in &want {
            match ports.iter().find(|(_, a)| a == w) {
                Some((id, _)) if owned.contains(id) => {
                    active.insert(*id);
                }
                Some((id, _)) => errors.push(format!(
                    "listener {w}: nvmet port {id} already has this address and was not created by this agent: left untouched and not used"
                )),
                None => match self.create_port(w, &taken) {
                    Ok(id) => {
                        taken.insert(id);
                        active.insert(id);
                    }
                    Err(e) => errors.push(e),
                },
            }
        }
        for id in owned.difference(&active) {
            if let Err(e) = self.remove_port(*id) {
                errors.push(e);
            }
        }
        *lock(&self.active_ports) = active;
        errors
    }

    fn has_subsystem(&self, nqn: &str) -> bool {
        self.owns_subsystem(nqn) && self.subsys_dir(nqn).is_dir()
    }

    fn add_subsystem(&self, e: &Export) -> Result<(), Problem> {
        self.available()?;
        let nqn = &e.subsystem_nqn;
        let dir = self.subsys_dir(nqn);
        if dir.is_dir() {
            if self.owns_subsystem(nqn) {
                return Ok(());
            }
            return Err(Problem::new(
                Reason::SubsystemConflict,
                format!("NQN {nqn} is already used by an nvmet subsystem this agent did not create: left untouched"),
            ));
        }
        self.record(|o| {
            o.subsystems.insert(nqn.clone());
        })?;
        let made = std::fs::create_dir_all(&dir)
            .map_err(|err| io_msg("creating subsystem", &dir, &err))
            .and_then(|()| {
                let mut attrs = vec![
                    ("attr_allow_any_host", "0".to_string()),
                    ("attr_model", MODEL_MARKER.to_string()),
                ];
                if !e.serial.is_empty() && e.serial.len() <= SERIAL_MAX && e.serial.is_ascii() {
                    attrs.push(("attr_serial", e.serial.clone()));
                }
                for (attr, v) in attrs {
                    let p = dir.join(attr);
                    self.paths
                        .write_attr(&p, &v)
                        .map_err(|err| io_msg("writing", &p, &err))?;
                }
                Ok(())
            });
        if let Err(m) = made {
            let _ = self.paths.remove_item(&dir);
            self.forget(|o| {
                o.subsystems.remove(nqn);
            });
            return Err(Problem::new(Reason::ExportFailed, m));
        }
        info!(%nqn, "nvmet subsystem created");
        Ok(())
    }

    fn has_namespace(&self, nqn: &str) -> bool {
        self.owns_subsystem(nqn)
            && read_attr(&self.ns_dir(nqn).join("enable")).as_deref() == Some("1")
    }

    fn add_namespace(&self, e: &Export, backend: Arc<dyn BlockBackend>) -> Result<(), Problem> {
        // nvmet opens the path itself; the agent's handle only made sure
        // the file exists with the right size.
        drop(backend);
        let nqn = &e.subsystem_nqn;
        if !self.owns_subsystem(nqn) {
            return Err(Problem::new(
                Reason::ExportFailed,
                format!("subsystem {nqn} is not ours"),
            ));
        }
        let dir = self.ns_dir(nqn);
        if read_attr(&dir.join("enable")).as_deref() == Some("1") {
            return Ok(());
        }
        std::fs::create_dir_all(&dir).map_err(|err| {
            Problem::new(
                Reason::ExportFailed,
                io_msg("creating namespace", &dir, &err),
            )
        })?;
        self.write_ns_attrs(e, &dir)?;
        let p = dir.join("enable");
        self.paths.write_attr(&p, "1").map_err(|err| {
            Problem::new(
                Reason::ExportFailed,
                format!(
                    "enabling namespace {NSID} of {nqn} on {}: {err} (see the kernel log)",
                    e.backing_path
                ),
            )
        })?;
        Ok(())
    }

    fn grow(&self, nqn: &str, size: u64, thick: bool) -> Result<bool, Problem> {
        let dir = self.ns_dir(nqn);
        let Some(path) = read_attr(&dir.join("device_path")) else {
            return Ok(false);
        };
        let path = PathBuf::from(path);
        let meta = std::fs::metadata(&path)
            .map_err(|e| Problem::new(Reason::GrowFailed, io_msg("reading", &path, &e)))?;
        if meta.file_type().is_block_device() {
            let (have, _) = backing_geometry(&self.paths, &path);
            return if have >= size {
                Ok(false)
            } else {
                Err(Problem::new(
                    Reason::GrowFailed,
                    format!(
                        "block device {} has {}, {} desired: grow it first",
                        path.display(),
                        ferrofab_nvmeof_wire::units::format_size(have),
                        ferrofab_nvmeof_wire::units::format_size(size)
                    ),
                ))
            };
        }
        if !crate::backing::grow(&path, size, thick)? {
            return Ok(false);
        }
        let p = dir.join("revalidate_size");
        self.paths
            .write_attr(&p, "1")
            .map_err(|e| Problem::new(Reason::GrowFailed, io_msg("writing", &p, &e)))?;
        Ok(true)
    }

    fn sync_hosts(&self, nqn: &str, hosts: &[String]) -> Result<(), Problem> {
        if !self.owns_subsystem(nqn) {
            return Err(Problem::new(
                Reason::HostsNotApplied,
                format!("subsystem {nqn} is not ours"),
            ));
        }
        let sub = self.subsys_dir(nqn);
        let any = sub.join("attr_allow_any_host");
        if read_attr(&any).as_deref() != Some("0") {
            self.paths
                .write_attr(&any, "0")
                .map_err(|e| Problem::new(Reason::HostsNotApplied, io_msg("writing", &any, &e)))?;
        }
        let links = sub.join("allowed_hosts");
        let have: BTreeSet<String> = entries(&links).into_iter().collect();
        let want: BTreeSet<String> = hosts.iter().cloned().collect();
        for h in want.difference(&have) {
            self.ensure_host(h)?;
            ensure_group(&links)?;
            let l = links.join(h);
            std::os::unix::fs::symlink(self.host_dir(h), &l).map_err(|e| {
                Problem::new(Reason::HostsNotApplied, io_msg("allowing host at", &l, &e))
            })?;
        }
        let mut revoked = false;
        for h in have.difference(&want) {
            let l = links.join(h);
            std::fs::remove_file(&l).map_err(|e| {
                Problem::new(Reason::HostsNotApplied, io_msg("revoking host at", &l, &e))
            })?;
            revoked = true;
            info!(%nqn, host = %h, "host revoked");
        }
        if revoked {
            self.gc_hosts();
        }
        self.link_ports(nqn, revoked)
    }

    /// Writes the keys of `e`'s hosts into their nvmet host entries (before
    /// `sync_hosts` links new ones). nvmet takes a changed key for the next
    /// authentication: live queues stay up, and a host re-authenticating
    /// (after a rotation) is checked against the new key, since nvmet
    /// reloads the entry's keys when the admin queue re-negotiates.
    ///
    /// nvmet keeps one controller key per host entry, not per subsystem,
    /// so this node reports itself unidirectional and the controller sends
    /// it no controller keys; one that comes anyway is written.
    fn sync_auth(&self, e: &Export) -> Result<(), Problem> {
        let nqn = &e.subsystem_nqn;
        let key_of = |h: &str| {
            e.host_keys
                .iter()
                .find(|k| k.host_nqn == h)
                .and_then(|k| k.key.as_ref())
        };
        let wanted = e.require_auth || e.allowed_hosts.iter().any(|h| key_of(h).is_some());
        if !wanted {
            lock(&self.auth).by_nqn.remove(nqn);
            for h in &e.allowed_hosts {
                self.clear_host_key(h)?;
            }
            return Ok(());
        }
        if !target_supported(&self.paths) {
            let mut book = lock(&self.auth);
            book.by_nqn.remove(nqn);
            if e.require_auth {
                return Err(Problem::new(
                    Reason::AuthUnsupported,
                    format!("the export requires authentication but this kernel's NVMe target cannot authenticate hosts: needs {TARGET_NEEDS}"),
                ));
            }
            if book.warned.insert(nqn.clone()) {
                warn!(%nqn, "host keys not applied: this kernel's NVMe target cannot authenticate (needs {TARGET_NEEDS}); hosts connect without authentication");
            }
            return Ok(());
        }
        let mut keyed = BTreeSet::new();
        for h in &e.allowed_hosts {
            match key_of(h) {
                Some(k) => {
                    if self.apply_host_key(nqn, h, k, e.ctrl_key.as_ref())? {
                        keyed.insert(h.clone());
                    }
                }
                None if e.require_auth => self.lock_host(nqn, h)?,
                None => self.clear_host_key(h)?,
            }
        }
        lock(&self.auth).by_nqn.insert(nqn.clone(), keyed);
        Ok(())
    }

    fn host_keys_applied(&self, nqn: &str) -> Vec<KeyApplied> {
        let book = lock(&self.auth);
        book.by_nqn
            .get(nqn)
            .into_iter()
            .flatten()
            .filter_map(|h| {
                book.applied.get(h).map(|g| KeyApplied {
                    host_nqn: h.clone(),
                    generation: *g,
                })
            })
            .collect()
    }

    fn connected_hosts(&self, _nqn: &str) -> Vec<String> {
        Vec::new()
    }

    fn remove_subsystem(&self, nqn: &str) -> Result<(), Problem> {
        let dir = self.subsys_dir(nqn);
        if !self.owns_subsystem(nqn) {
            return Ok(());
        }
        if !dir.is_dir() {
            self.forget(|o| {
                o.subsystems.remove(nqn);
            });
            return Ok(());
        }
        let fail = |what: &str, p: &Path, e: std::io::Error| {
            Problem::new(Reason::RemovalFailed, io_msg(what, p, &e))
        };
        // Ports first (ends the controllers), then hosts, namespaces and
        // the subsystem itself: configfs refuses to remove linked items.
        for (id, _) in self.ports() {
            let l = self.port_dir(id).join("subsystems").join(nqn);
            if std::fs::symlink_metadata(&l).is_ok() {
                std::fs::remove_file(&l).map_err(|e| fail("unlinking", &l, e))?;
            }
        }
        for h in entries(&dir.join("allowed_hosts")) {
            let l = dir.join("allowed_hosts").join(h);
            std::fs::remove_file(&l).map_err(|e| fail("unlinking", &l, e))?;
        }
        for n in entries(&dir.join("namespaces")) {
            let ns = dir.join("namespaces").join(n);
            let _ = self.paths.write_attr(&ns.join("enable"), "0");
            self.paths
                .remove_item(&ns)
                .map_err(|e| fail("removing namespace", &ns, e))?;
        }
        self.paths
            .remove_item(&dir)
            .map_err(|e| fail("removing subsystem", &dir, e))?;
        self.forget(|o| {
            o.subsystems.remove(nqn);
        });
        lock(&self.auth).by_nqn.remove(nqn);
        self.gc_hosts();
        info!(%nqn, "nvmet subsystem removed");
        Ok(())
    }

    fn subsystems(&self) -> Vec<String> {
        lock(&self.owned)
            .subsystems
            .iter()
            .filter(|n| self.subsys_dir(n).is_dir())
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::kernel::testing;

    const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:a";
    const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:b";

    fn export(dir: &Path, name: &str) -> Export {
        let f = dir.join(format!("{name}.img"));
        std::fs::write(&f, vec![0u8; 4096]).unwrap();
        Export {
            volume: name.into(),
            subsystem_nqn: format!("nqn.2026-11.io.ferrofab:{name}"),
            backing_path: f.display().to_string(),
            size_bytes: 4096,
            uuid: uuid::Uuid::new_v4().to_string(),
            serial: "abc123".into(),
            allowed_hosts: vec![HOST_A.into()],
            ..Default::default()
        }
    }

    fn listener(port: u32) -> Listener {
        Listener {
            address: "0.0.0.0".into(),
            port,
            transport: "tcp".into(),
        }
    }

    fn backend(e: &Export) -> Arc<dyn BlockBackend> {
        ferrofab_nvmeof_target::backend::open_backend(
            &e.backing_path,
            &ferrofab_nvmeof_target::backend::FileOptions::default(),
        )
        .unwrap()
    }

    fn serve(t: &KernelTarget, e: &Export) {
        t.add_subsystem(e).unwrap();
        t.add_namespace(e, backend(e)).unwrap();
        // The emulated tree has no kernel to flip `enable`.
        t.sync_hosts(&e.subsystem_nqn, &e.allowed_hosts).unwrap();
    }

    #[test]
    fn creates_the_configfs_layout_and_reads_it_back() {
        let root = tempfile::tempdir().unwrap();
        let paths = testing::paths(root.path());
        let t = KernelTarget::new(paths.clone(), &root.path().join("state"));
        assert!(t.sync_listeners(&[listener(4420)]).is_empty());
        let e = export(root.path(), "v1");
        serve(&t, &e);
        let nvmet = paths.nvmet();
        let sub = nvmet.join("subsystems").join(&e.subsystem_nqn);
        assert_eq!(read_attr(&sub.join("attr_allow_any_host")).unwrap(), "0");
        assert_eq!(read_attr(&sub.join("attr_model")).unwrap(), MODEL_MARKER);
        assert_eq!(read_attr(&sub.join("attr_serial")).unwrap(), "abc123");
        let ns = sub.join("namespaces/1");
        assert_eq!(read_attr(&ns.join("device_path")).unwrap(), e.backing_path);
        assert_eq!(read_attr(&ns.join("device_uuid")).unwrap(), e.uuid);
        assert_eq!(read_attr(&ns.join("enable")).unwrap(), "1");
        assert!(nvmet.join("hosts").join(HOST_A).is_dir());
        assert!(std::fs::symlink_metadata(sub.join("allowed_hosts").join(HOST_A)).is_ok());
        let port = nvmet.join("ports/1");
        assert_eq!(read_attr(&port.join("addr_trtype")).unwrap(), "tcp");
        assert_eq!(read_attr(&port.join("addr_adrfam")).unwrap(), "ipv4");
        assert_eq!(read_attr(&port.join("addr_trsvcid")).unwrap(), "4420");
        assert!(std::fs::symlink_metadata(port.join("subsystems").join(&e.subsystem_nqn)).is_ok());

        let st = t.status();
        assert_eq!(st.listeners.len(), 1);
        assert_eq!(st.subsystems[0].allowed_hosts, vec![HOST_A]);
        assert_eq!(st.subsystems[0].namespaces[0].size, 4096);
        assert!(t.has_namespace(&e.subsystem_nqn));

        // Grow: the file is extended and revalidate_size written.
        assert!(t.grow(&e.subsystem_nqn, 8192, false).unwrap());
        assert!(!t.grow(&e.subsystem_nqn, 8192, false).unwrap());
        assert!(t.grow(&e.subsystem_nqn, 16384, true).unwrap());
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&e.backing_path).unwrap();
        assert!(m.blocks() * 512 >= 16384 - 4096, "thick grow allocates");
        assert_eq!(read_attr(&ns.join("revalidate_size")).unwrap(), "1");
        assert_eq!(t.status().subsystems[0].namespaces[0].size, 16384);

        // Revoke A, allow B: A's host entry (ours) goes away.
        t.sync_hosts(&e.subsystem_nqn, &[HOST_B.into()]).unwrap();
        assert!(!nvmet.join("hosts").join(HOST_A).exists());
        assert_eq!(t.status().subsystems[0].allowed_hosts, vec![HOST_B]);

        // Removal in order leaves nothing of ours behind.
        t.remove_subsystem(&e.subsystem_nqn).unwrap();
        t.remove_subsystem(&e.subsystem_nqn).unwrap();
        assert!(!sub.exists());
        assert!(!nvmet.join("hosts").join(HOST_B).exists());
        assert!(t.sync_listeners(&[]).is_empty());
        assert!(!port.exists());
    }

    #[test]
    fn adopts_its_own_objects_and_never_touches_foreign_ones() {
        let root = tempfile::tempdir().unwrap();
        let paths = testing::paths(root.path());
        let state = root.path().join("state");
        let nvmet = paths.nvmet();
        // An admin's subsystem, host and port, made before the agent.
        let foreign = nvmet.join("subsystems/nqn.2026-11.org.admin:keep");
        std::fs::create_dir_all(foreign.join("namespaces/1")).unwrap();
        std::fs::write(foreign.join("namespaces/1/enable"), "1\n").unwrap();
        std::fs::create_dir_all(nvmet.join("hosts").join(HOST_A)).unwrap();
        std::fs::create_dir_all(nvmet.join("ports/1")).unwrap();
        std::fs::write(nvmet.join("ports/1/addr_trtype"), "tcp\n").unwrap();
        std::fs::write(nvmet.join("ports/1/addr_traddr"), "0.0.0.0\n").unwrap();
        std::fs::write(nvmet.join("ports/1/addr_trsvcid"), "4420\n").unwrap();

        let t = KernelTarget::new(paths.clone(), &state);
        // Same address as the admin's port: reported, not used.
        let errs = t.sync_listeners(&[listener(4420)]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("not created by this agent"), "{errs:?}");
        assert!(t.sync_listeners(&[listener(4421)]).is_empty());
        assert!(nvmet.join("ports/2").is_dir(), "new port takes a free ID");

        let e = export(root.path(), "v1");
        serve(&t, &e);
        // The NQN of the admin's subsystem is a conflict.
        let mut clash = export(root.path(), "clash");
        clash.subsystem_nqn = "nqn.2026-11.org.admin:keep".into();
        let p = t.add_subsystem(&clash).unwrap_err();
        assert_eq!(p.reason, Reason::SubsystemConflict);
        assert!(!t.has_subsystem(&clash.subsystem_nqn));
        assert_eq!(t.subsystems(), vec![e.subsystem_nqn.clone()]);
        // Removing an unowned subsystem is a no-op.
        t.remove_subsystem(&clash.subsystem_nqn).unwrap();
        assert!(foreign.join("namespaces/1").is_dir());

        // A restart adopts v1 and port 2 and still leaves the rest alone.
        drop(t);
        let t = KernelTarget::new(paths.clone(), &state);
        assert!(t.has_namespace(&e.subsystem_nqn));
        assert!(t.sync_listeners(&[listener(4421)]).is_empty());
        t.remove_subsystem(&e.subsystem_nqn).unwrap();
        assert!(t.sync_listeners(&[]).is_empty());
        assert!(foreign.is_dir());
        assert!(nvmet.join("ports/1").is_dir());
        assert!(!nvmet.join("ports/2").exists());
        assert!(
            nvmet.join("hosts").join(HOST_A).is_dir(),
            "a host entry the agent did not create is never removed"
        );
    }

    fn key(secret: &str, generation: u64) -> Option<DhchapKey> {
        Some(DhchapKey {
            secret: secret.into(),
            generation,
            fingerprint: format!("fp{generation}"),
        })
    }

    fn host_key(host: &str, secret: &str, generation: u64) -> ferrofab_proto::v1::HostKey {
        ferrofab_proto::v1::HostKey {
            host_nqn: host.into(),
            key: key(secret, generation),
        }
    }

    /// Keys go into the host entries the agent made (with the hash and DH
    /// group), follow a rotation in place, lock out a keyless host where
    /// authentication is required and come off again when it no longer
    /// is; a kernel without target authentication reports AuthUnsupported
    /// when the export requires it, and serves without keys otherwise.
    #[test]
    fn host_keys_go_into_nvmet_host_entries() {
        const HOST_C: &str = "nqn.2014-08.org.nvmexpress:uuid:c";
        let root = tempfile::tempdir().unwrap();
        let paths = testing::paths(root.path());
        let hosts = paths.nvmet().join("hosts");
        // An admin's host entry, made before the agent.
        std::fs::create_dir_all(hosts.join(HOST_C)).unwrap();
        let t = KernelTarget::new(paths.clone(), &root.path().join("state"));
        let k1 = "DHHC-1:01:a2V5b25lLWtleW9uZS1rZXlvbmUta2V5b25lLWsxMjM0:";
        let k2 = "DHHC-1:01:a2V5dHdvLWtleXR3by1rZXl0d28ta2V5dHdvLWsxMjM0:";
        let mut e = export(root.path(), "v1");
        e.allowed_hosts = vec![HOST_A.into(), HOST_B.into(), HOST_C.into()];
        e.host_keys = vec![host_key(HOST_A, k1, 1), host_key(HOST_C, k1, 1)];
        t.add_subsystem(&e).unwrap();

        // Linux 6.1: no nvme-auth.
        t.sync_auth(&e).unwrap();
        assert!(!hosts.join(HOST_A).join("dhchap_key").exists());
        assert!(t.host_keys_applied(&e.subsystem_nqn).is_empty());
        e.require_auth = true;
        let p = t.sync_auth(&e).unwrap_err();
        assert_eq!(p.reason, Reason::AuthUnsupported);
        assert!(p.message.contains("CONFIG_NVME_TARGET_AUTH"), "{p}");

        // nvme-auth held by nvmet.
        std::fs::create_dir_all(paths.sysfs.join("module/nvme_auth/holders/nvmet")).unwrap();
        t.sync_auth(&e).unwrap();
        t.sync_hosts(&e.subsystem_nqn, &e.allowed_hosts).unwrap();
        let attr = |h: &str, a: &str| read_attr(&hosts.join(h).join(a)).unwrap_or_default();
        assert_eq!(attr(HOST_A, "dhchap_key"), k1);
        {
            // nvmet makes it 0644; the agent narrows it on every pass.
            use std::os::unix::fs::PermissionsExt;
            let p = hosts.join(HOST_A).join("dhchap_key");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            t.sync_auth(&e).unwrap();
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(attr(HOST_A, "dhchap_hash"), "hmac(sha256)");
        assert_eq!(attr(HOST_A, "dhchap_dhgroup"), "ffdhe2048");
        assert!(!hosts.join(HOST_A).join("dhchap_ctrl_key").exists());
        let lock_b = attr(HOST_B, "dhchap_key");
        assert!(lock_b.starts_with("DHHC-1:00:") && lock_b != k1, "{lock_b}");
        assert_eq!(
            attr(HOST_C, "dhchap_key"),
            "",
            "an admin's entry is not written"
        );
        let applied = |t: &KernelTarget| {
            t.host_keys_applied(&e.subsystem_nqn)
                .into_iter()
                .map(|k| (k.host_nqn, k.generation))
                .collect::<Vec<_>>()
        };
        assert_eq!(applied(&t), vec![(HOST_A.to_string(), 1)]);
        // The next pass leaves the lock as it is.
        t.sync_auth(&e).unwrap();
        assert_eq!(attr(HOST_B, "dhchap_key"), lock_b);

        // Rotation: written in place; a controller key when one comes.
        e.host_keys = vec![host_key(HOST_A, k2, 2)];
        e.ctrl_key = key(k1, 1);
        t.sync_auth(&e).unwrap();
        assert_eq!(attr(HOST_A, "dhchap_key"), k2);
        assert_eq!(attr(HOST_A, "dhchap_ctrl_key"), k1);
        assert_eq!(applied(&t), vec![(HOST_A.to_string(), 2)]);

        // No longer required: B's entry is made again without a key and
        // stays allowed.
        e.require_auth = false;
        t.sync_auth(&e).unwrap();
        assert!(!hosts.join(HOST_B).join("dhchap_key").exists());
        let allowed = paths
            .nvmet()
            .join("subsystems")
            .join(&e.subsystem_nqn)
            .join("allowed_hosts");
        assert!(std::fs::symlink_metadata(allowed.join(HOST_B)).is_ok());
        assert_eq!(attr(HOST_A, "dhchap_key"), k2);

        // Revoked and removed: nothing is reported any more.
        t.remove_subsystem(&e.subsystem_nqn).unwrap();
        assert!(t.host_keys_applied(&e.subsystem_nqn).is_empty());
        assert!(!hosts.join(HOST_A).exists());
        assert!(hosts.join(HOST_C).is_dir());
    }

    #[test]
    fn a_subsystem_without_the_marker_is_not_adopted() {
        let root = tempfile::tempdir().unwrap();
        let paths = testing::paths(root.path());
        let state = root.path().join("state");
        let t = KernelTarget::new(paths.clone(), &state);
        let e = export(root.path(), "v1");
        serve(&t, &e);
        drop(t);
        // Someone re-created the NQN with their own namespace.
        let sub = paths.nvmet().join("subsystems").join(&e.subsystem_nqn);
        std::fs::write(sub.join("attr_model"), "Linux\n").unwrap();
        let t = KernelTarget::new(paths, &state);
        assert!(!t.has_subsystem(&e.subsystem_nqn));
        t.remove_subsystem(&e.subsystem_nqn).unwrap();
        assert!(sub.is_dir());
    }

    #[test]
    fn missing_nvmet_is_a_clear_problem() {
        let root = tempfile::tempdir().unwrap();
        let paths = KernelPaths {
            configfs: root.path().join("config"),
            sysfs: root.path().join("sys"),
            dev: root.path().join("dev"),
            emulated: true,
        };
        let t = KernelTarget::new(paths, &root.path().join("state"));
        let p = t.add_subsystem(&export(root.path(), "v")).unwrap_err();
        assert_eq!(p.reason, Reason::KernelModuleMissing);
        assert!(p.message.contains("configfs"), "{p}");
        assert!(t.sync_listeners(&[listener(4420)])[0].contains("configfs"));
    }

    #[test]
    fn listener_addresses() {
        let a = port_addr(&Listener {
            address: "::1".into(),
            port: 0,
            transport: "RDMA".into(),
        })
        .unwrap();
        assert_eq!(
            (a.trtype.as_str(), a.adrfam(), a.trsvcid.as_str()),
            ("rdma", "ipv6", "4420")
        );
        assert!(port_addr(&Listener {
            address: "1.2.3.4".into(),
            port: 1,
            transport: "fc".into()
        })
        .is_err());
    }
}
