//! The `ferrofab-nvmeof serve` configuration file, and applying it to a
//! running [`Target`].
//!
//! Applying is level-triggered: the file is compared with what the target
//! serves right now, not with the previous file, and only the differences
//! are changed. Applying the same file twice changes nothing, and a host
//! connected to a subsystem the edit did not touch notices nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::backend::{
    max_memory_bytes, open_backend, BackendKind, BlockBackend, DirectIo, FileOptions, MemoryBackend,
};
use ferrofab_nvmeof_wire::auth::{DhGroup, DhchapSecret, HashId};
use ferrofab_nvmeof_wire::units::Size;

use super::{
    derive_uuid, HostAuth, ListenerKind, NamespaceConfig, SubsystemConfig, Target, TargetError,
    TargetOptions,
};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    #[serde(default)]
    pub target: TargetOptions,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    #[serde(default, rename = "subsystem")]
    pub subsystems: Vec<SubsystemFile>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    #[serde(default = "default_kind")]
    pub kind: ListenerKind,
    /// Address to put in discovery log entries (for NAT).
    #[serde(default)]
    pub advertise: Option<String>,
}

fn default_kind() -> ListenerKind {
    ListenerKind::Io
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubsystemFile {
    pub nqn: String,
    #[serde(default)]
    pub serial: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub allow_any_host: bool,
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default, rename = "namespace")]
    pub namespaces: Vec<NamespaceFile>,
    /// Refuse at Connect every host without a `host_key` here.
    #[serde(default)]
    pub require_auth: bool,
    /// DH-HMAC-CHAP keys of hosts: a host with a key must authenticate.
    #[serde(default, rename = "host_key")]
    pub host_keys: Vec<HostKeyFile>,
}

/// One host's in-band authentication settings. Each secret is given either
/// inline (`key`) or, better, in a file readable only by the target
/// (`key_file`), holding a `DHHC-1:XX:...:` string as `nvme
/// gen-dhchap-key` prints it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostKeyFile {
    pub host: String,
    #[serde(default)]
    pub key: Option<SecretText>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Controller secret for bidirectional authentication.
    #[serde(default)]
    pub ctrl_key: Option<SecretText>,
    #[serde(default)]
    pub ctrl_key_file: Option<PathBuf>,
    /// sha256, sha384 or sha512; default: the host's first choice.
    #[serde(default)]
    pub hash: Option<String>,
    /// null, ffdhe2048 .. ffdhe8192; default: ffdhe2048 if the host offers
    /// it.
    #[serde(default)]
    pub dhgroup: Option<String>,
}

/// A secret in the configuration file; never shown by Debug.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl HostKeyFile {
    /// The settings with the secrets read and checked. Errors name the
    /// host and the field, never the secret.
    pub fn resolve(&self) -> Result<HostAuth, String> {
        let what = |field: &str, e: &dyn std::fmt::Display| {
            format!("host_key for {}: {field}: {e}", self.host)
        };
        let load = |inline: &Option<SecretText>,
                    file: &Option<PathBuf>,
                    field: &str|
         -> Result<Option<DhchapSecret>, String> {
            let text = match (inline, file) {
                (Some(_), Some(_)) => {
                    return Err(what(
                        field,
                        &"give the secret inline or in a file, not both",
                    ))
                }
                (Some(t), None) => t.0.clone(),
                (None, Some(p)) => std::fs::read_to_string(p)
                    .map_err(|e| what(field, &format!("cannot read {}: {e}", p.display())))?,
                (None, None) => return Ok(None),
            };
            DhchapSecret::parse(&text)
                .map(Some)
                .map_err(|e| what(field, &e))
        };
        let key = load(&self.key, &self.key_file, "key")?
            .ok_or_else(|| what("key", &"missing (set key or key_file)"))?;
        let ctrl_key = load(&self.ctrl_key, &self.ctrl_key_file, "ctrl_key")?;
        let hash =
            match &self.hash {
                None => None,
                Some(h) => Some(HashId::from_name(h).ok_or_else(|| {
                    what("hash", &format!("{h:?} (use sha256, sha384 or sha512)"))
                })?),
            };
        let dhgroup = match &self.dhgroup {
            None => None,
            Some(g) => Some(DhGroup::from_name(g).ok_or_else(|| {
                what(
                    "dhgroup",
                    &format!(
                        "{g:?} (use null, ffdhe2048, ffdhe3072, ffdhe4096, ffdhe6144 or ffdhe8192)"
                    ),
                )
            })?),
        };
        Ok(HostAuth {
            key,
            ctrl_key,
            hash,
            dhgroup,
        })
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamespaceFile {
    pub nsid: u32,
    /// A regular file (created sparse if missing) or a block device.
    /// Exactly one of `path` and `memory` is given.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Keep the namespace in the target's memory instead, this big
    /// (`MemoryBackend`): volatile, lost when the target stops; for
    /// benchmarks, tests and scratch, like SPDK's Malloc bdev. All memory
    /// namespaces of the process together at most `max_memory_bytes`.
    #[serde(default)]
    pub memory: Option<Size>,
    /// Size of a file backend; the file is created or grown to it. Leave it
    /// out for block devices and existing files.
    #[serde(default)]
    pub size: Option<Size>,
    #[serde(default = "default_block_size")]
    pub block_size: u32,
    #[serde(default)]
    pub uuid: Option<uuid::Uuid>,
    #[serde(default)]
    pub direct_io: DirectIoSetting,
    /// Allocate the whole file up front (thick) instead of sparse (thin).
    #[serde(default)]
    pub preallocate: bool,
    #[serde(default)]
    pub read_only: bool,
}

fn default_block_size() -> u32 {
    512
}

impl NamespaceFile {
    /// Where the namespace lives, checked: a path, or memory of a valid
    /// size (not 0, whole blocks, at most the machine's memory).
    fn validate_storage(&self) -> Result<(), String> {
        let Some(memory) = self.memory else {
            return match self.path {
                Some(_) => Ok(()),
                None => {
                    Err("give its storage: path = \"FILE OR DEVICE\" or memory = \"SIZE\"".into())
                }
            };
        };
        if self.path.is_some() {
            return Err("path and memory both given: a namespace is a file or device (path) or memory, not both".into());
        }
        if self.size.is_some() || self.preallocate || self.direct_io != DirectIoSetting::Auto {
            return Err("size, preallocate and direct_io are for path namespaces; memory = \"SIZE\" alone sets a memory namespace's size".into());
        }
        let bytes = memory.0;
        if bytes == 0 {
            return Err("memory = 0: a memory namespace needs at least one block".into());
        }
        if !bytes.is_multiple_of(u64::from(self.block_size)) {
            return Err(format!(
                "memory = {bytes} bytes is not a multiple of block_size {}",
                self.block_size
            ));
        }
        let max = max_memory_bytes();
        if bytes > max {
            return Err(format!(
                "memory = {bytes} bytes is more than the machine can give memory namespaces \
                 ({max} bytes: the least of its memory, MemAvailable and the cgroup's memory.max)"
            ));
        }
        Ok(())
    }

    /// How logs name the namespace's storage.
    fn storage(&self) -> String {
        match (&self.path, self.memory) {
            (_, Some(m)) => format!("memory, {} bytes", m.0),
            (Some(p), None) => p.display().to_string(),
            (None, None) => "no storage".into(),
        }
    }
}

/// The config spelling of [`DirectIo`].
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DirectIoSetting {
    #[default]
    Auto,
    On,
    Off,
}

impl From<DirectIoSetting> for DirectIo {
    fn from(s: DirectIoSetting) -> DirectIo {
        match s {
            DirectIoSetting::Auto => DirectIo::Auto,
            DirectIoSetting::On => DirectIo::On,
            DirectIoSetting::Off => DirectIo::Off,
        }
    }
}

/// Errors reading or applying the file. Each names the file and the item.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{item}: {source}")]
    Apply { item: String, source: TargetError },
}

impl ServeConfig {
    pub fn load(path: &Path) -> Result<ServeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: ServeConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    /// Checks that need the whole file: duplicates and bad values.
    pub fn validate(&self) -> Result<(), String> {
        self.target.validate().map_err(|e| e.to_string())?;
        let mut addrs = BTreeSet::new();
        for l in &self.listeners {
            if !addrs.insert(l.address) {
                return Err(format!("listener {} appears twice", l.address));
            }
        }
        let mut nqns = BTreeSet::new();
        for s in &self.subsystems {
            ferrofab_nvmeof_wire::spec::validate_nqn(&s.nqn)
                .map_err(|e| format!("subsystem {:?}: {e}", s.nqn))?;
            if !nqns.insert(&s.nqn) {
                return Err(format!("subsystem {} appears twice", s.nqn));
            }
            for h in &s.allowed_hosts {
                ferrofab_nvmeof_wire::spec::validate_nqn(h)
                    .map_err(|e| format!("subsystem {}: allowed host {h:?}: {e}", s.nqn))?;
            }
            let mut keyed = BTreeSet::new();
            for k in &s.host_keys {
                ferrofab_nvmeof_wire::spec::validate_nqn(&k.host)
                    .map_err(|e| format!("subsystem {}: host_key {:?}: {e}", s.nqn, k.host))?;
                if !keyed.insert(&k.host) {
                    return Err(format!(
                        "subsystem {}: host_key for {} appears twice",
                        s.nqn, k.host
                    ));
                }
                k.resolve()
                    .map_err(|e| format!("subsystem {}: {e}", s.nqn))?;
            }
            let mut nsids = BTreeSet::new();
            for ns in &s.namespaces {
                if ns.block_size != 512 && ns.block_size != 4096 {
                    return Err(format!(
                        "subsystem {} namespace {}: block_size {} (use 512 or 4096)",
                        s.nqn, ns.nsid, ns.block_size
                    ));
                }
                if ns.nsid == 0 || ns.nsid > self.target.max_namespaces {
                    return Err(format!("subsystem {}: invalid nsid {}", s.nqn, ns.nsid));
                }
                if !nsids.insert(ns.nsid) {
                    return Err(format!(
                        "subsystem {}: namespace {} appears twice",
                        s.nqn, ns.nsid
                    ));
                }
                ns.validate_storage()
                    .map_err(|e| format!("subsystem {} namespace {}: {e}", s.nqn, ns.nsid))?;
            }
        }
        self.validate_memory_total()
    }

    /// Each memory size was checked alone; all memory namespaces of the
    /// process together must fit as well (`max_memory_bytes`).
    fn validate_memory_total(&self) -> Result<(), String> {
        let sized: Vec<(String, u64)> = self
            .subsystems
            .iter()
            .flat_map(|s| {
                s.namespaces.iter().filter_map(move |ns| {
                    let m = ns.memory?;
                    Some((
                        format!("{} namespace {} ({} bytes)", s.nqn, ns.nsid, m.0),
                        m.0,
                    ))
                })
            })
            .collect();
        let total = sized.iter().fold(0u64, |t, (_, b)| t.saturating_add(*b));
        let max = max_memory_bytes();
        if total <= max {
            return Ok(());
        }
        let names: Vec<&str> = sized.iter().map(|(n, _)| n.as_str()).collect();
        Err(format!(
            "memory namespaces together need {total} bytes, more than the target process can \
             give them ({max} bytes: the least of the machine's memory, MemAvailable and the \
             cgroup's memory.max): {}",
            names.join(", ")
        ))
    }
}

/// What [`apply`] changed, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub changes: Vec<String>,
    pub errors: Vec<String>,
}

/// Make `target` serve exactly what `cfg` describes. Listener and target
/// option changes that need a restart are reported as errors; everything
/// else is applied live. Items that fail are reported and the rest still
/// applied, so one bad namespace does not stop the others.
pub fn apply(target: &Target, cfg: &ServeConfig) -> ApplyReport {
    let mut report = ApplyReport::default();
    if &cfg.target != target.options() {
        report
            .errors
            .push("[target] options changed: restart ferrofab-nvmeof serve to apply them".into());
    }
    apply_listeners(target, cfg, &mut report);
    apply_subsystems(target, cfg, &mut report);
    report
}

fn apply_listeners(target: &Target, cfg: &ServeConfig, report: &mut ApplyReport) {
    let current: BTreeMap<SocketAddr, ListenerKind> = target.listeners().into_iter().collect();
    let wanted: BTreeSet<SocketAddr> = cfg.listeners.iter().map(|l| l.address).collect();
    for l in &cfg.listeners {
        // A listener on port 0 is bound to some free port; it can never
        // be matched again, so it is added only once.
        let present = current.contains_key(&l.address)
            || (l.address.port() == 0 && current.keys().any(|a| a.ip() == l.address.ip()));
        if present {
            continue;
        }
        match target.add_listener(l.address, l.kind, l.advertise.clone()) {
            Ok(bound) => report.changes.push(format!("listening on {bound}")),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    for addr in current.keys() {
        let requested_by_port0 = cfg
            .listeners
            .iter()
            .any(|l| l.address.port() == 0 && l.address.ip() == addr.ip());
        if !wanted.contains(addr) && !requested_by_port0 {
            match target.remove_listener(*addr) {
                Ok(()) => report.changes.push(format!("stopped listening on {addr}")),
                Err(e) => report.errors.push(e.to_string()),
            }
        }
    }
}

fn apply_subsystems(target: &Target, cfg: &ServeConfig, report: &mut ApplyReport) {
    let wanted: BTreeSet<&str> = cfg.subsystems.iter().map(|s| s.nqn.as_str()).collect();
    for existing in target.subsystems() {
        if !wanted.contains(existing.nqn.as_str()) {
            record(
                report,
                format!("removed subsystem {}", existing.nqn),
                target.remove_subsystem(&existing.nqn),
                &existing.nqn,
            );
        }
    }
    for s in &cfg.subsystems {
        apply_subsystem(target, s, report);
    }
}

fn record(report: &mut ApplyReport, change: String, result: Result<(), TargetError>, item: &str) {
    match result {
        Ok(()) => report.changes.push(change),
        Err(source) => report.errors.push(
            ConfigError::Apply {
                item: item.to_string(),
                source,
            }
            .to_string(),
        ),
    }
}

fn apply_subsystem(target: &Target, s: &SubsystemFile, report: &mut ApplyReport) {
    let nqn = s.nqn.as_str();
    let Some(current) = target.subsystem(nqn) else {
        let result = target.add_subsystem(SubsystemConfig {
            nqn: s.nqn.clone(),
            serial: s.serial.clone(),
            model: s.model.clone(),
            allow_any_host: s.allow_any_host,
            allowed_hosts: s.allowed_hosts.clone(),
        });
        let ok = result.is_ok();
        record(report, format!("added subsystem {nqn}"), result, nqn);
        if ok {
            apply_auth(target, s, report);
            apply_namespaces(target, s, report);
        }
        return;
    };
    let have: BTreeSet<String> = current.hosts().into_iter().collect();
    let want: BTreeSet<String> = s.allowed_hosts.iter().cloned().collect();
    for h in want.difference(&have) {
        record(
            report,
            format!("allowed {h} on {nqn}"),
            target.allow_host(nqn, h),
            nqn,
        );
    }
    for h in have.difference(&want) {
        record(
            report,
            format!("revoked {h} on {nqn}"),
            target.revoke_host(nqn, h),
            nqn,
        );
    }
    if current.allow_any_host() != s.allow_any_host {
        let change = format!("allow_any_host = {} on {nqn}", s.allow_any_host);
        record(
            report,
            change,
            target.set_allow_any_host(nqn, s.allow_any_host),
            nqn,
        );
    }
    apply_auth(target, s, report);
    apply_namespaces(target, s, report);
}

/// Make the subsystem's host keys and `require_auth` those of the file.
/// Keys go first, so switching `require_auth` on in the same edit that
/// gives hosts their keys drops nobody who now has one. Changed keys apply
/// at each host's next (re-)authentication.
fn apply_auth(target: &Target, s: &SubsystemFile, report: &mut ApplyReport) {
    let nqn = s.nqn.as_str();
    let Some(subsys) = target.subsystem(nqn) else {
        return;
    };
    let mut wanted = BTreeSet::new();
    for k in &s.host_keys {
        wanted.insert(k.host.clone());
        let auth = match k.resolve() {
            Ok(a) => a,
            Err(e) => {
                report.errors.push(format!("{nqn}: {e}"));
                continue;
            }
        };
        if subsys.host_auth(&k.host).is_some_and(|a| *a == auth) {
            continue;
        }
        record(
            report,
            format!("set the key of {} on {nqn}", k.host),
            target.set_host_key(nqn, &k.host, auth),
            nqn,
        );
    }
    for h in subsys.hosts_with_keys() {
        if !wanted.contains(&h) {
            record(
                report,
                format!("removed the key of {h} on {nqn}"),
                target.remove_host_key(nqn, &h),
                nqn,
            );
        }
    }
    if subsys.require_auth() != s.require_auth {
        record(
            report,
            format!("require_auth = {} on {nqn}", s.require_auth),
            target.set_require_auth(nqn, s.require_auth),
            nqn,
        );
    }
}

fn apply_namespaces(target: &Target, s: &SubsystemFile, report: &mut ApplyReport) {
    let nqn = s.nqn.as_str();
    let Some(subsys) = target.subsystem(nqn) else {
        return;
    };
    let wanted: BTreeMap<u32, &NamespaceFile> = s.namespaces.iter().map(|n| (n.nsid, n)).collect();
    // Memory namespaces removed to be made again at another size.
    let mut replaced = BTreeSet::new();
    for existing in subsys.namespaces() {
        let item = format!("{nqn} namespace {}", existing.nsid);
        match wanted.get(&existing.nsid) {
            None => record(
                report,
                format!("removed {item}"),
                target.remove_namespace(nqn, existing.nsid),
                &item,
            ),
            Some(want)
                if keeps_memory(&existing, want) && !same_namespace(&existing, want, nqn) =>
            {
                // Only the description changed (read_only, uuid): the same
                // memory, and so the data, goes on under it.
                let result = target
                    .replace_namespace(nqn, namespace_config(nqn, want, existing.backend.clone()));
                record(report, format!("changed {item} (data kept)"), result, &item);
            }
            Some(want) if !same_namespace(&existing, want, nqn) => {
                // A different file or identity is a different namespace.
                let result = target.remove_namespace(nqn, existing.nsid);
                let change = if existing.backend.memory().is_some() {
                    replaced.insert(existing.nsid);
                    format!(
                        "replaced {item}: its memory size or block size changed, so its data is \
                         lost (the old memory is freed once its I/O drains)"
                    )
                } else {
                    format!("replaced {item}")
                };
                record(report, change, result, &item);
            }
            Some(want) => grow_if_needed(target, nqn, &existing, want, report),
        }
    }
    for ns in &s.namespaces {
        if subsys.namespace(ns.nsid).is_some() {
            continue;
        }
        let mut item = format!("{nqn} namespace {}", ns.nsid);
        if replaced.contains(&ns.nsid) {
            item.push_str(" (removed to change its memory, and not made again)");
        }
        let result = open_namespace(nqn, ns).and_then(|cfg| target.add_namespace(nqn, cfg));
        record(
            report,
            format!("added {item} ({})", ns.storage()),
            result,
            &item,
        );
    }
}

/// Whether `existing` is a memory namespace that `want` keeps: memory of
/// the same size and block size, so its data stays valid whatever else
/// (read_only, uuid) changes.
fn keeps_memory(existing: &super::Namespace, want: &NamespaceFile) -> bool {
    existing.backend.memory().is_some()
        && want.memory.map(|m| m.0) == Some(existing.backend.size())
        && want.block_size == existing.block_size
}

fn same_namespace(existing: &super::Namespace, want: &NamespaceFile, nqn: &str) -> bool {
    let uuid = want.uuid.unwrap_or_else(|| derive_uuid(nqn, want.nsid));
    let info = existing.backend.info();
    let same_storage = match (&want.path, want.memory) {
        (_, Some(m)) => info.kind == BackendKind::Memory && info.size == m.0,
        (Some(p), None) => info.kind != BackendKind::Memory && info.path == *p,
        (None, None) => false,
    };
    same_storage
        && existing.block_size == want.block_size
        && existing.uuid == *uuid.as_bytes()
        && existing.read_only == want.read_only
}

fn grow_if_needed(
    target: &Target,
    nqn: &str,
    existing: &super::Namespace,
    want: &NamespaceFile,
    report: &mut ApplyReport,
) {
    // A memory namespace's size is part of its identity (`same_namespace`).
    let Some(size) = want.size.filter(|_| want.memory.is_none()) else {
        return;
    };
    let item = format!("{nqn} namespace {}", existing.nsid);
    let current = existing.backend.size();
    if size.0 > current {
        let result = target.resize_namespace(nqn, existing.nsid, size.0);
        record(
            report,
            format!("grew {item} to {} bytes", size.0),
            result,
            &item,
        );
    } else if size.0 < current {
        report.errors.push(format!(
            "{item}: size {} is smaller than the current {current} bytes; namespaces only grow",
            size.0
        ));
    }
}

fn open_namespace(nqn: &str, ns: &NamespaceFile) -> Result<NamespaceConfig, TargetError> {
    let backend: std::sync::Arc<dyn BlockBackend> = match (&ns.path, ns.memory) {
        (_, Some(memory)) => std::sync::Arc::new(MemoryBackend::new(memory.0, ns.block_size)?),
        (Some(path), None) => {
            let opts = FileOptions {
                create: true,
                size: ns.size.map(|s| s.0),
                direct_io: ns.direct_io.into(),
                block_size: ns.block_size,
                preallocate: ns.preallocate,
            };
            open_backend(path, &opts)?
        }
        (None, None) => {
            return Err(TargetError::InvalidOption(
                "the namespace has neither path nor memory".into(),
            ))
        }
    };
    Ok(namespace_config(nqn, ns, backend))
}

/// What `ns` describes, over `backend`.
fn namespace_config(
    nqn: &str,
    ns: &NamespaceFile,
    backend: std::sync::Arc<dyn BlockBackend>,
) -> NamespaceConfig {
    let uuid = ns.uuid.unwrap_or_else(|| derive_uuid(nqn, ns.nsid));
    NamespaceConfig {
        nsid: ns.nsid,
        backend,
        block_size: ns.block_size,
        uuid,
        nguid: *uuid.as_bytes(),
        read_only: ns.read_only,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_example() {
        let text = r#"
[target]
poll_mode = "adaptive:20"
queue_depth = 256

[[listener]]
address = "127.0.0.1:4420"

[[listener]]
address = "127.0.0.1:8009"
kind = "discovery"

[[subsystem]]
nqn = "nqn.2026-11.io.ferrofab:demo"
allowed_hosts = ["nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001"]

[[subsystem.namespace]]
nsid = 1
path = "/tmp/demo.img"
size = "1GiB"
"#;
        let cfg: ServeConfig = toml::from_str(text).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.target.queue_depth, 256);
        assert_eq!(cfg.listeners[1].kind, ListenerKind::Discovery);
        assert_eq!(cfg.subsystems[0].namespaces[0].size, Some(Size(1 << 30)));
    }

    const HOST1: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001";

    #[test]
    fn host_keys_parse_apply_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let key = DhchapSecret::new(&[3u8; 32], Some(HashId::Sha256))
            .unwrap()
            .encode();
        let ckey = DhchapSecret::new(&[4u8; 48], None).unwrap().encode();
        let key_file = dir.path().join("host1.key");
        std::fs::write(&key_file, format!("{ckey}\n")).unwrap();
        let text = format!(
            r#"
[[subsystem]]
nqn = "nqn.2026-11.io.ferrofab:demo"
allowed_hosts = ["{HOST1}"]
require_auth = true
[[subsystem.host_key]]
host = "{HOST1}"
key = "{key}"
ctrl_key_file = "{}"
hash = "sha384"
dhgroup = "ffdhe3072"
"#,
            key_file.display()
        );
        let cfg: ServeConfig = toml::from_str(&text).unwrap();
        cfg.validate().unwrap();
        assert!(!format!("{cfg:?}").contains(&key), "Debug shows no secret");
        let auth = cfg.subsystems[0].host_keys[0].resolve().unwrap();
        assert_eq!(auth.hash, Some(HashId::Sha384));
        assert_eq!(auth.dhgroup, Some(DhGroup::Ffdhe3072));
        assert_eq!(auth.ctrl_key.unwrap().encode(), ckey);

        let target = Target::new(TargetOptions::default()).unwrap();
        let report = apply(&target, &cfg);
        assert!(report.errors.is_empty(), "{report:?}");
        let subsys = target.subsystem("nqn.2026-11.io.ferrofab:demo").unwrap();
        assert!(subsys.require_auth());
        assert_eq!(subsys.hosts_with_keys(), vec![HOST1.to_string()]);
        // Applying again changes nothing; dropping the key removes it.
        assert!(apply(&target, &cfg).changes.is_empty());
        let mut cfg2 = cfg.clone();
        cfg2.subsystems[0].host_keys.clear();
        cfg2.subsystems[0].require_auth = false;
        let report = apply(&target, &cfg2);
        assert_eq!(report.changes.len(), 2, "{report:?}");
        assert!(subsys.hosts_with_keys().is_empty() && !subsys.require_auth());

        for (bad, needle) in [
            (text.replace("sha384", "md5"), "hash"),
            (text.replace("ffdhe3072", "ffdhe1024"), "dhgroup"),
            (text.replace(&key, "DHHC-1:01:AAAA:"), "key"),
            (text.replace("ctrl_key_file", "ctrl_key_filex"), "unknown"),
        ] {
            let err = match toml::from_str::<ServeConfig>(&bad) {
                Ok(c) => c.validate().unwrap_err(),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(needle), "{err}");
            assert!(!err.contains(&key[10..]), "no secret in {err}");
        }
    }

    #[test]
    fn connection_limits_parse_and_are_checked() {
        let text = "[target]\nmax_connections = 100\nmax_connections_per_peer = 10\nicreq_timeout_ms = 2000\nconnect_timeout_ms = 3000\n";
        let cfg: ServeConfig = toml::from_str(text).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.target.max_connections, 100);
        assert_eq!(cfg.target.max_connections_per_peer, 10);
        assert_eq!(cfg.target.icreq_timeout_ms, 2000);
        assert_eq!(cfg.target.connect_timeout_ms, 3000);
        let defaults = ServeConfig::default();
        assert_eq!(defaults.target.max_connections, 4096);
        assert_eq!(defaults.target.icreq_timeout_ms, 5000);
        for bad in [
            "[target]\nmax_connections = 0\n",
            "[target]\nmax_connections = 10\nmax_connections_per_peer = 11\n",
            "[target]\nicreq_timeout_ms = 0\n",
            "[target]\nconnect_timeout_ms = 0\n",
        ] {
            let cfg: ServeConfig = toml::from_str(bad).unwrap();
            let err = cfg.validate().unwrap_err();
            assert!(
                err.contains("max_connections") || err.contains("timeout_ms"),
                "{err}"
            );
        }
    }

    fn namespace_error(ns: &str) -> String {
        let text = format!(
            "[[subsystem]]\nnqn = \"nqn.2026-11.io.ferrofab:demo\"\n[[subsystem.namespace]]\nnsid = 1\n{ns}\n"
        );
        match toml::from_str::<ServeConfig>(&text) {
            Ok(cfg) => cfg.validate().err().unwrap_or_default(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn memory_namespaces_parse_and_bad_sizes_are_refused_by_name() {
        assert_eq!(namespace_error("memory = \"8MiB\"\nblock_size = 4096"), "");
        let too_big = max_memory_bytes() + 4096;
        for (ns, needle) in [
            (
                "memory = 0",
                "memory = 0: a memory namespace needs at least one block",
            ),
            (
                &format!("memory = {too_big}") as &str,
                "is more than the machine can give",
            ),
            (
                "memory = 4608\nblock_size = 4096",
                "memory = 4608 bytes is not a multiple of block_size 4096",
            ),
            (
                "memory = \"8MiB\"\npath = \"/tmp/x.img\"",
                "path and memory both given",
            ),
            (
                "memory = \"8MiB\"\nsize = \"8MiB\"",
                "are for path namespaces",
            ),
            ("block_size = 512", "give its storage"),
        ] {
            let err = namespace_error(ns);
            assert!(err.contains(needle), "{ns:?}: {err}");
            if !err.contains("give its storage") {
                assert!(err.contains("namespace 1"), "names the namespace: {err}");
            }
        }
    }

    #[test]
    fn memory_namespaces_that_fit_alone_but_not_together_are_refused_by_name() {
        let each = max_memory_bytes() / 10 * 6 / 4096 * 4096;
        let text = format!(
            "[[subsystem]]\nnqn = \"nqn.2026-11.io.ferrofab:demo\"\n\
             [[subsystem.namespace]]\nnsid = 1\nmemory = {each}\n\
             [[subsystem.namespace]]\nnsid = 2\nmemory = {each}\n"
        );
        let cfg: ServeConfig = toml::from_str(&text).unwrap();
        let err = cfg.validate().unwrap_err();
        assert!(err.contains("memory namespaces together need"), "{err}");
        assert!(
            err.contains("namespace 1") && err.contains("namespace 2"),
            "{err}"
        );
        // One of them alone is fine.
        let one = text.replace(
            &format!("nsid = 2\nmemory = {each}"),
            "nsid = 2\npath = \"/tmp/x\"",
        );
        let one: ServeConfig = toml::from_str(&one).unwrap();
        one.validate().unwrap();
    }

    #[test]
    fn applying_a_memory_namespace_twice_changes_nothing() {
        let text = "[[subsystem]]\nnqn = \"nqn.2026-11.io.ferrofab:demo\"\nallow_any_host = true\n[[subsystem.namespace]]\nnsid = 1\nmemory = \"4MiB\"\n";
        let cfg: ServeConfig = toml::from_str(text).unwrap();
        cfg.validate().unwrap();
        let target = Target::new(TargetOptions::default()).unwrap();
        let report = apply(&target, &cfg);
        assert!(report.errors.is_empty(), "{report:?}");
        assert!(
            report
                .changes
                .iter()
                .any(|c| c.contains("memory, 4194304 bytes")),
            "{report:?}"
        );
        let ns = target
            .subsystem("nqn.2026-11.io.ferrofab:demo")
            .unwrap()
            .namespace(1)
            .unwrap();
        assert_eq!(ns.backend.info().kind, BackendKind::Memory);
        assert!(apply(&target, &cfg).changes.is_empty());
        // Another size is another namespace (its data cannot carry over),
        // and the report says so.
        let bigger: ServeConfig = toml::from_str(&text.replace("4MiB", "8MiB")).unwrap();
        let report = apply(&target, &bigger);
        assert!(
            report
                .changes
                .iter()
                .any(|c| c.starts_with("replaced") && c.contains("data is lost")),
            "{report:?}"
        );
        assert!(report.errors.is_empty(), "{report:?}");
        // A new size the machine cannot give: the removal and the refusal
        // are both reported, naming the namespace.
        let huge = format!("memory = {}", max_memory_bytes() + 4096 * 1024);
        let too_big: ServeConfig =
            toml::from_str(&text.replace("memory = \"4MiB\"", &huge)).unwrap();
        let report = apply(&target, &too_big);
        assert!(
            report.changes.iter().any(|c| c.contains("data is lost")),
            "{report:?}"
        );
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.contains("namespace 1 (removed to change its memory")),
            "{report:?}"
        );
    }

    #[test]
    fn toggling_read_only_or_uuid_keeps_a_memory_namespaces_data() {
        let nqn = "nqn.2026-11.io.ferrofab:demo";
        let text = format!("[[subsystem]]\nnqn = \"{nqn}\"\nallow_any_host = true\n[[subsystem.namespace]]\nnsid = 1\nmemory = \"4MiB\"\n");
        let target = Target::new(TargetOptions::default()).unwrap();
        let cfg: ServeConfig = toml::from_str(&text).unwrap();
        assert!(apply(&target, &cfg).errors.is_empty());
        let ns = || target.subsystem(nqn).unwrap().namespace(1).unwrap();
        ns().backend.write_at(&[0x5A; 4096], 8192).unwrap();
        for change in [
            "read_only = true\n",
            "read_only = false\nuuid = \"6f1c1a9e-6c3b-4d4e-9f1a-2b3c4d5e6f70\"\n",
        ] {
            let cfg: ServeConfig = toml::from_str(&format!("{text}{change}")).unwrap();
            let report = apply(&target, &cfg);
            assert!(report.errors.is_empty(), "{report:?}");
            assert!(
                report.changes.iter().any(|c| c.contains("data kept")),
                "{change}: {report:?}"
            );
            let mut buf = [0u8; 4096];
            ns().backend.read_at(&mut buf, 8192).unwrap();
            assert!(buf.iter().all(|&b| b == 0x5A), "{change}: data lost");
        }
        assert!(!ns().read_only);
        assert_eq!(ns().uuid[0], 0x6f);
    }

    #[test]
    fn rejects_bad_values_with_names() {
        let bad_bs = r#"
[[subsystem]]
nqn = "nqn.2026-11.io.ferrofab:demo"
[[subsystem.namespace]]
nsid = 1
path = "/tmp/x"
block_size = 1000
"#;
        let cfg: ServeConfig = toml::from_str(bad_bs).unwrap();
        let err = cfg.validate().unwrap_err();
        assert!(err.contains("block_size 1000"), "{err}");

        let unknown = "[[subsystem]]\nnqn = \"nqn.2026-11.io.ferrofab:x\"\nallowed_host = []\n";
        let err = toml::from_str::<ServeConfig>(unknown)
            .unwrap_err()
            .to_string();
        assert!(err.contains("allowed_host"), "{err}");

        let bad_nqn = "[[subsystem]]\nnqn = \"bogus\"\n";
        let cfg: ServeConfig = toml::from_str(bad_nqn).unwrap();
        assert!(cfg.validate().unwrap_err().contains("bogus"));
    }
}
