//! Storage role: exports of the desired state become subsystems of the
//! node's target driver (built-in or kernel), removals tear them down (and delete data only when the
//! policy says so, the agent created it, and no host is connected).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use ferrofab_nvmeof_target::SubsystemStatus;
use ferrofab_nvmeof_wire::units::format_size;
use ferrofab_proto::v1::{DesiredState, Export, ExportStatus, Listener, Removal};
use tracing::{info, info_span, warn};

use crate::backing::{self, file_id, missing_message};
use crate::config::{AgentConfig, PoolConfig, Provisioning};
use crate::driver::{TargetDriver, NSID};
use crate::names;
use crate::problem::{condition, PassOutcome, Problem};

/// The storage reconciler and the target it drives.
#[derive(Debug)]
pub struct StorageReconciler {
    cfg: Arc<AgentConfig>,
    driver: Arc<dyn TargetDriver>,
    /// Problems of the last pass, by volume.
    problems: HashMap<String, Problem>,
    /// Listener problems of the last pass.
    listener_errors: Vec<String>,
    /// (device, inode) of each backing file when it was opened, to notice
    /// a file deleted or replaced behind the agent's back.
    opened: HashMap<String, (u64, u64)>,
}

impl StorageReconciler {
    /// A reconciler over `driver` (chosen by `factory`).
    pub fn new(cfg: Arc<AgentConfig>, driver: Arc<dyn TargetDriver>) -> Self {
        StorageReconciler {
            cfg,
            driver,
            problems: HashMap::new(),
            listener_errors: Vec::new(),
            opened: HashMap::new(),
        }
    }

    pub fn driver(&self) -> &dyn TargetDriver {
        self.driver.as_ref()
    }

    /// A handle on the target for readers that must not wait for a pass
    /// (metrics, shutdown).
    pub fn driver_handle(&self) -> Arc<dyn TargetDriver> {
        self.driver.clone()
    }

    pub fn listener_errors(&self) -> &[String] {
        &self.listener_errors
    }

    /// One full pass over listeners, exports, removals and orphans.
    pub fn reconcile(&mut self, ds: &DesiredState) -> PassOutcome {
        let mut out = PassOutcome::default();
        self.sync_listeners(ds);
        out.errors += self.listener_errors.len();
        self.problems.clear();
        for e in &ds.exports {
            let span = info_span!("export", volume = %e.volume, nqn = %e.subsystem_nqn);
            let _g = span.enter();
            match self.reconcile_export(e) {
                Ok(changed) => out.changes += usize::from(changed),
                Err(p) => {
                    warn!(reason = p.reason, "{}", p.message);
                    self.problems.insert(e.volume.clone(), p);
                    out.errors += 1;
                }
            }
        }
        for r in &ds.removals {
            let span = info_span!("removal", volume = %r.volume, nqn = %r.subsystem_nqn);
            let _g = span.enter();
            if let Err(p) = self.reconcile_removal(r) {
                warn!(reason = p.reason, "{}", p.message);
                self.problems.insert(r.volume.clone(), p);
                out.errors += 1;
            }
        }
        out.changes += self.remove_orphans(ds);
        out
    }

    fn sync_listeners(&mut self, ds: &DesiredState) {
        let wanted: Vec<Listener> = if self.cfg.data_listen.is_empty() {
            ds.listeners.clone()
        } else {
            self.cfg
                .data_listen
                .iter()
                .map(|a| Listener {
                    address: a.ip().to_string(),
                    port: u32::from(a.port()),
                    transport: "tcp".into(),
                })
                .collect()
        };
        let errors = self.driver.sync_listeners(&wanted);
        for e in &errors {
            warn!(error = %e, "listener");
        }
        self.listener_errors = errors;
    }

    /// Makes one export exist as desired. Returns whether anything changed.
    fn reconcile_export(&mut self, e: &Export) -> Result<bool, Problem> {
        let pool = self.check_export(e)?;
        let nqn = &e.subsystem_nqn;
        let mut changed = false;
        if !self.driver.has_subsystem(nqn) {
            self.driver.add_subsystem(e)?;
            changed = true;
        }
        self.driver.sync_auth(e)?;
        if !self.driver.has_namespace(nqn) {
            let backend = match backing::open(&self.cfg.node, e, &pool) {
                Ok(b) => b,
                Err(p) => {
                    // Leave no half-made subsystem: the next pass starts over.
                    let _ = self.driver.remove_subsystem(nqn);
                    return Err(p);
                }
            };
            self.driver.add_namespace(e, backend)?;
            if let Some(id) = file_id(Path::new(&e.backing_path)) {
                self.opened.insert(nqn.clone(), id);
            }
            info!(size = e.size_bytes, path = %e.backing_path, "exported");
            changed = true;
        }
        // Read-only first: a host that becomes a reader is never allowed
        // to write in between.
        self.driver.sync_read_only_hosts(nqn, &e.read_only_hosts)?;
        self.driver.sync_hosts(nqn, &e.allowed_hosts)?;
        let thick = pool.provisioning == Provisioning::Thick;
        if self.driver.grow(nqn, e.size_bytes, thick)? {
            info!(size = e.size_bytes, "grown");
            changed = true;
        }
        self.check_backing_present(e)?;
        Ok(changed)
    }

    /// Validates the export against the local config.
    fn check_export(&self, e: &Export) -> Result<PoolConfig, Problem> {
        if e.subsystem_nqn.is_empty() || e.backing_path.is_empty() || e.size_bytes == 0 {
            return Err(Problem::new(
                "IncompleteExport",
                "desired export lacks an NQN, a backing path or a size",
            ));
        }
        // The kernel driver makes configfs directories of these.
        names::export_names(&e.subsystem_nqn, &e.allowed_hosts)?;
        let path = Path::new(&e.backing_path);
        self.cfg
            .pool_of(path)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| {
                Problem::new(
                    "BackingPathOutsidePools",
                    format!(
                        "backing path {} is not inside any pool configured on this node (pools: {})",
                        e.backing_path,
                        self.cfg.pools.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
            })
    }

    /// A backing file deleted or replaced out of band cannot be repaired
    /// without losing data, so it is reported (with where the still-open
    /// data can be copied from).
    fn check_backing_present(&self, e: &Export) -> Result<(), Problem> {
        let path = Path::new(&e.backing_path);
        let now = file_id(path);
        let then = self.opened.get(&e.subsystem_nqn).copied();
        match (now, then) {
            (None, _) => Err(Problem::new("BackingFileMissing", missing_message(path))),
            (Some(n), Some(t)) if n != t => Err(Problem::new(
                "BackingFileReplaced",
                format!(
                    "backing file {} was replaced out of band; the export still serves the original (restart the agent to serve the new file)",
                    path.display()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Tears an export down; deletes the data if allowed.
    fn reconcile_removal(&mut self, r: &Removal) -> Result<(), Problem> {
        let nqn = &r.subsystem_nqn;
        if self.driver.has_subsystem(nqn) {
            let connected = self.driver.connected_hosts(nqn);
            if !connected.is_empty() {
                return Err(Problem::new(
                    "RemovalBlocked",
                    format!(
                        "{} host(s) still connected ({}); export and data kept until they disconnect",
                        connected.len(),
                        connected.join(", ")
                    ),
                ));
            }
            self.driver.remove_subsystem(nqn)?;
            self.opened.remove(nqn);
            info!("export removed");
        }
        if r.delete_data {
            self.delete_data(r)?;
        }
        Ok(())
    }

    fn delete_data(&self, r: &Removal) -> Result<(), Problem> {
        let path = Path::new(&r.backing_path);
        if self.cfg.pool_of(path).is_none() {
            return Err(Problem::new(
                "BackingPathOutsidePools",
                format!("not deleting {}: outside every pool", path.display()),
            ));
        }
        backing::delete(path, &r.volume)
    }

    /// Subsystems no longer desired at all (neither exported nor being
    /// removed) are taken down; their data is never touched.
    fn remove_orphans(&mut self, ds: &DesiredState) -> usize {
        let known: BTreeSet<&str> = ds
            .exports
            .iter()
            .map(|e| e.subsystem_nqn.as_str())
            .chain(ds.removals.iter().map(|r| r.subsystem_nqn.as_str()))
            .collect();
        let mut n = 0;
        for nqn in self.driver.subsystems() {
            if known.contains(nqn.as_str()) {
                continue;
            }
            match self.driver.remove_subsystem(&nqn) {
                Ok(()) => {
                    info!(%nqn, "orphan export removed (data kept)");
                    self.opened.remove(&nqn);
                    n += 1;
                }
                Err(e) => warn!(%nqn, error = %e, "removing orphan export"),
            }
        }
        n
    }

    /// Export statuses read back from the target (not from memory).
    pub fn observe(&self, ds: &DesiredState) -> Vec<ExportStatus> {
        let st = self.driver.status();
        let mut out: Vec<ExportStatus> = ds
            .exports
            .iter()
            .map(|e| {
                let sub = st.subsystems.iter().find(|s| s.nqn == e.subsystem_nqn);
                self.export_status(e, sub)
            })
            .collect();
        // Anything else still served (a blocked removal, an orphan not yet
        // removed) is reported too: absence means "removed".
        for s in &st.subsystems {
            if ds.exports.iter().any(|e| e.subsystem_nqn == s.nqn) {
                continue;
            }
            let removal = ds.removals.iter().find(|r| r.subsystem_nqn == s.nqn);
            let volume = removal.map(|r| r.volume.clone()).unwrap_or_default();
            let p = self
                .problems
                .get(&volume)
                .cloned()
                .unwrap_or_else(|| Problem::new("RemovalPending", "export is being torn down"));
            out.push(ExportStatus {
                volume,
                subsystem_nqn: s.nqn.clone(),
                ready: false,
                conditions: vec![condition("Exported", false, p.reason, p.message)],
                generation: 0,
                allowed_hosts: s.allowed_hosts.clone(),
                connected_hosts: s.controllers.iter().map(|c| c.hostnqn.clone()).collect(),
                host_keys: Vec::new(),
            });
        }
        out
    }

    fn export_status(&self, e: &Export, sub: Option<&SubsystemStatus>) -> ExportStatus {
        let verdict = self.verdict(e, sub);
        let mut conditions = vec![match &verdict {
            Ok(msg) => condition("Exported", true, "ExportReady", msg.clone()),
            Err(p) => condition("Exported", false, p.reason, p.message.clone()),
        }];
        if let Some(c) = pool_space_condition(&self.cfg, e) {
            conditions.push(c);
        }
        // The verdict compares the target with `e`, so this status speaks
        // for the generation `e` was computed from: echoing it lets the
        // controller tell a report about the new size from one about the old.
        // What the target really lets in and has connected: the
        // controller completes the fence of a move on these.
        let (allowed_hosts, connected_hosts) = sub
            .map(|s| {
                let connected = s.controllers.iter().map(|c| c.hostnqn.clone()).collect();
                (s.allowed_hosts.clone(), connected)
            })
            .unwrap_or_default();
        ExportStatus {
            volume: e.volume.clone(),
            subsystem_nqn: e.subsystem_nqn.clone(),
            ready: verdict.is_ok(),
            conditions,
            generation: e.generation,
            allowed_hosts,
            connected_hosts,
            host_keys: self.driver.host_keys_applied(&e.subsystem_nqn),
        }
    }

    /// Ready with a summary, or the first thing that is wrong.
    fn verdict(&self, e: &Export, sub: Option<&SubsystemStatus>) -> Result<String, Problem> {
        if let Some(p) = self.problems.get(&e.volume) {
            return Err(p.clone());
        }
        let sub = sub.ok_or_else(|| Problem::new("NotExported", "no subsystem on the target"))?;
        let ns = sub
            .namespaces
            .iter()
            .find(|n| n.nsid == NSID)
            .ok_or_else(|| Problem::new("NamespaceMissing", "subsystem has no namespace 1"))?;
        if ns.size < e.size_bytes {
            return Err(Problem::new(
                "Growing",
                format!(
                    "namespace is {}, {} desired",
                    format_size(ns.size),
                    format_size(e.size_bytes)
                ),
            ));
        }
        let mut have = sub.allowed_hosts.clone();
        let mut want = e.allowed_hosts.clone();
        have.sort();
        want.sort();
        if have != want {
            return Err(Problem::new(
                "HostsOutOfSync",
                "allowed hosts differ from the desired ones",
            ));
        }
        if file_id(Path::new(&e.backing_path)).is_none() {
            return Err(Problem::new(
                "BackingFileMissing",
                missing_message(Path::new(&e.backing_path)),
            ));
        }
        Ok(format!(
            "serving {} ({} bytes, block size {}) to {} allowed host(s), {} connected",
            format_size(ns.size),
            ns.size,
            ns.block_size,
            want.len(),
            sub.controllers.len()
        ))
    }
}

/// A warning when the export's pool filesystem has no space left.
fn pool_space_condition(cfg: &AgentConfig, e: &Export) -> Option<ferrofab_proto::v1::Condition> {
    let (name, pool) = cfg.pool_of(Path::new(&e.backing_path))?;
    let (_, free) = crate::status::statvfs(&pool.path)?;
    (free == 0).then(|| {
        condition(
            "PoolSpace",
            false,
            "PoolFull",
            format!("pool directory full: pool {name} ({})", pool.path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backing::ownership::{self, MarkerState};
    use crate::driver::builtin::BuiltinTarget;
    use ferrofab_proto::v1::BackingKind;

    fn reconciler(cfg: Arc<AgentConfig>) -> StorageReconciler {
        let t = BuiltinTarget::new(cfg.builtin_target.target_options()).unwrap();
        StorageReconciler::new(cfg, Arc::new(t))
    }

    fn cfg(pool: &Path) -> Arc<AgentConfig> {
        let mut c = AgentConfig::for_tests("s1");
        c.pools.insert(
            "p".into(),
            PoolConfig {
                path: pool.to_path_buf(),
                provisioning: Provisioning::Thin,
            },
        );
        Arc::new(c)
    }

    fn export(pool: &Path, name: &str) -> Export {
        Export {
            volume: name.into(),
            volume_uid: format!("uid-{name}"),
            subsystem_nqn: format!("nqn.2026-11.io.ferrofab:{name}"),
            nsid: 1,
            backing_kind: BackingKind::Directory as i32,
            backing_path: pool.join(format!("uid-{name}")).display().to_string(),
            size_bytes: 1 << 20,
            block_size: 4096,
            uuid: uuid::Uuid::new_v4().to_string(),
            allowed_hosts: vec!["nqn.2014-08.org.nvmexpress:uuid:h".into()],
            ..Default::default()
        }
    }

    fn ds(exports: Vec<Export>, removals: Vec<Removal>) -> DesiredState {
        DesiredState {
            node: "s1".into(),
            exports,
            removals,
            ..Default::default()
        }
    }

    #[test]
    fn export_is_idempotent_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = reconciler(cfg(dir.path()));
        let e = export(dir.path(), "v1");
        let d = ds(vec![e.clone()], vec![]);
        assert_eq!(r.reconcile(&d).errors, 0);
        assert_eq!(r.reconcile(&d), PassOutcome::default());
        let st = r.observe(&d);
        assert!(st[0].ready, "{st:?}");
        let m = ownership::read(Path::new(&e.backing_path)).unwrap();
        assert_eq!(m.state, MarkerState::Created);
        assert_eq!(m.volume, "v1");
    }

    #[test]
    fn grows_and_restores_a_removed_export() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = reconciler(cfg(dir.path()));
        let mut e = export(dir.path(), "v1");
        r.reconcile(&ds(vec![e.clone()], vec![]));
        e.size_bytes = 4 << 20;
        r.driver.remove_subsystem(&e.subsystem_nqn).unwrap();
        let d = ds(vec![e.clone()], vec![]);
        assert_eq!(r.reconcile(&d).errors, 0);
        let st = r.driver.status();
        assert_eq!(st.subsystems[0].namespaces[0].size, 4 << 20);
    }

    #[test]
    fn status_echoes_the_generation_it_was_checked_against() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = reconciler(cfg(dir.path()));
        let mut e = export(dir.path(), "v1");
        e.generation = 1;
        let d = ds(vec![e.clone()], vec![]);
        r.reconcile(&d);
        let st = r.observe(&d);
        assert!(st[0].ready && st[0].generation == 1, "{st:?}");
        e.generation = 2;
        e.size_bytes = 4 << 20;
        let d = ds(vec![e.clone()], vec![]);
        assert!(
            !r.observe(&d)[0].ready,
            "not grown yet: not ready for generation 2"
        );
        r.reconcile(&d);
        let st = r.observe(&d);
        assert!(st[0].ready && st[0].generation == 2, "{st:?}");
        let msg = &st[0].conditions[0].message;
        assert!(msg.contains(&(4u64 << 20).to_string()), "{msg}");
    }

    #[test]
    fn refuses_paths_outside_pools_and_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = reconciler(cfg(&dir.path().join("pool")));
        std::fs::create_dir(dir.path().join("pool")).unwrap();
        let bad = export(dir.path(), "evil");
        let d = ds(vec![bad], vec![]);
        r.reconcile(&d);
        let st = r.observe(&d);
        assert_eq!(st[0].conditions[0].reason, "BackingPathOutsidePools");

        let e = export(&dir.path().join("pool"), "v1");
        let d = ds(vec![e.clone()], vec![]);
        r.reconcile(&d);
        std::fs::remove_file(&e.backing_path).unwrap();
        r.reconcile(&d);
        let st = r.observe(&d);
        assert!(!st[0].ready);
        assert_eq!(st[0].conditions[0].reason, "BackingFileMissing");
        assert!(st[0].conditions[0].message.contains("/proc/"), "{st:?}");
    }

    /// NQNs become configfs directories on the kernel driver: one that is
    /// not a single safe file name is refused for either driver.
    #[test]
    fn unsafe_nqns_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = reconciler(cfg(dir.path()));
        let mut e = export(dir.path(), "v1");
        e.subsystem_nqn = "../../../etc".into();
        let mut h = export(dir.path(), "v2");
        h.allowed_hosts = vec!["nqn.x/../../y".into()];
        let d = ds(vec![e.clone(), h], vec![]);
        assert_eq!(r.reconcile(&d).errors, 2);
        for st in r.observe(&d) {
            assert_eq!(st.conditions[0].reason, "InvalidName", "{st:?}");
        }
        assert!(r.driver.subsystems().is_empty());
        assert!(!Path::new(&e.backing_path).exists());
    }

    #[test]
    fn removal_deletes_only_marked_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = reconciler(cfg(dir.path()));
        let e = export(dir.path(), "v1");
        let foreign = dir.path().join("foreign");
        std::fs::write(&foreign, vec![0u8; 1 << 20]).unwrap();
        let mut e2 = export(dir.path(), "v2");
        e2.backing_path = foreign.display().to_string();
        r.reconcile(&ds(vec![e.clone(), e2.clone()], vec![]));
        let removal = |e: &Export| Removal {
            volume: e.volume.clone(),
            subsystem_nqn: e.subsystem_nqn.clone(),
            backing_path: e.backing_path.clone(),
            delete_data: true,
        };
        let d = ds(vec![], vec![removal(&e), removal(&e2)]);
        assert_eq!(r.reconcile(&d).errors, 0);
        assert!(!Path::new(&e.backing_path).exists());
        assert!(foreign.exists(), "unmarked data must never be deleted");
        assert!(r.observe(&d).is_empty());
    }

    #[test]
    fn missing_file_with_created_marker_is_not_recreated() {
        let dir = tempfile::tempdir().unwrap();
        let e = export(dir.path(), "v1");
        backing::write_marker("s1", &e, Path::new(&e.backing_path), MarkerState::Created).unwrap();
        let mut r = reconciler(cfg(dir.path()));
        let d = ds(vec![e.clone()], vec![]);
        assert_eq!(r.reconcile(&d).errors, 1);
        assert!(!Path::new(&e.backing_path).exists());
        assert_eq!(r.observe(&d)[0].conditions[0].reason, "BackingFileMissing");
    }
}
