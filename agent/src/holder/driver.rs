//! The agent's built-in workstation driver when a holder owns the data
//! path: every pass is level-triggered through the holder's socket, and
//! stopping the agent leaves the holder (and every exposure) running.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ferrofab_proto::v1::{ConnectionStatus, DesiredState};
use tracing::{info, warn};

use super::proto::{ExposureSpec, ExposureStatus, Hello, Op, PROTOCOL_VERSION};
use super::{spawn, HolderClient, HolderError, HolderPaths, SpawnSpec};
use crate::metrics::HolderCounters;
use crate::reconcile::workstation::{detaching_status, live_status, LocalAttachment};
use crate::reconcile::{condition, PassOutcome, Problem};

/// Condition reason while the running holder speaks another protocol.
pub const HOLDER_OUTDATED: &str = "HolderOutdated";
/// Condition reason while no holder answers and none could be started.
pub const HOLDER_UNAVAILABLE: &str = "HolderUnavailable";
/// Condition type added to exposures reported from the last successful
/// listing because the holder could not be listed now.
pub const HOLDER_LISTED: &str = "HolderListed";

/// The workstation driver that reconciles through a holder.
#[derive(Debug)]
pub struct HolderWorkstation {
    client: HolderClient,
    spawn: SpawnSpec,
    start_timeout: Duration,
    hostnqn: String,
    /// The holder adopted or started, once one answered.
    holder: Option<Hello>,
    /// Set while the running holder cannot be managed (protocol
    /// mismatch with exposures in use, or none reachable).
    blocked: Option<Problem>,
    /// Failures of the last pass, by attachment.
    problems: HashMap<String, Problem>,
    /// The last successful listing. A failed listing (a busy holder timing
    /// out, an outdated or unreachable one) says nothing about the
    /// exposures, which keep serving: they are reported as last seen, never
    /// as gone, or the controller would revoke a host under a mounted
    /// filesystem. A Mutex because `observe` takes `&self`.
    last_listed: std::sync::Mutex<Vec<ExposureStatus>>,
    counters: Arc<HolderCounters>,
}

impl HolderWorkstation {
    pub fn new(
        spawn: SpawnSpec,
        hostnqn: String,
        start_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        let paths = HolderPaths::new(&spawn.state_dir);
        HolderWorkstation {
            client: HolderClient::new(paths.socket, request_timeout),
            spawn,
            start_timeout,
            hostnqn,
            holder: None,
            blocked: None,
            problems: HashMap::new(),
            last_listed: std::sync::Mutex::default(),
            counters: Arc::default(),
        }
    }

    /// Counts starts and failed requests into the agent's metrics.
    pub fn with_counters(mut self, counters: Arc<HolderCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// Counts a request that got no answer.
    fn failed<T>(&self, r: Result<T, HolderError>) -> Result<T, HolderError> {
        if let Err(e) = &r {
            if !matches!(e, HolderError::Refused { .. }) {
                self.counters
                    .request_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    /// A holder this agent can manage: the running one if it speaks our
    /// protocol, a new one if none runs, or a replacement of an outdated
    /// one that serves no exposure. An outdated holder with exposures is
    /// left serving (replacing it would break their users) and reported.
    fn ensure_holder(&mut self) -> Result<(), Problem> {
        match self.client.hello() {
            Ok(h) if h.protocol == PROTOCOL_VERSION => {
                self.adopt(h);
                Ok(())
            }
            Ok(h) if h.exposures == 0 => {
                info!(pid = h.pid, version = %h.version, protocol = h.protocol,
                    "replacing an idle data-path holder of another protocol");
                // An old holder may not know `shutdown` under our version;
                // a refusal is fine as long as it goes away.
                let _ = self.client.call_raw(Op::Shutdown);
                self.start()
            }
            Ok(h) => Err(outdated(&h)),
            Err(HolderError::Unreachable(..)) => self.start(),
            Err(e) => Err(Problem::new(HOLDER_UNAVAILABLE, e.to_string())),
        }
    }

    fn adopt(&mut self, h: Hello) {
        let same = self.holder.as_ref().is_some_and(|o| o.pid == h.pid);
        if !same {
            info!(pid = h.pid, version = %h.version, exposures = h.exposures,
                agent_version = %super::holder_version(), "adopted the running data-path holder");
            if h.expose_dir != self.spawn.expose_dir.display().to_string() {
                warn!(holder = %h.expose_dir, config = %self.spawn.expose_dir.display(),
                    "the holder serves another expose_dir; `ferrofab-agent holder stop` to apply the new one");
            }
        }
        self.holder = Some(h);
    }

    fn start(&mut self) -> Result<(), Problem> {
        self.counters.starts.fetch_add(1, Ordering::Relaxed);
        let h = spawn(&self.spawn, self.start_timeout)
            .map_err(|e| Problem::new(HOLDER_UNAVAILABLE, e.to_string()))?;
        self.adopt(h);
        Ok(())
    }

    fn list(&self) -> Result<Vec<ExposureStatus>, HolderError> {
        let v = self
            .failed(self.client.call(Op::List))?
            .exposures
            .unwrap_or_default();
        *self.last_seen() = v.clone();
        Ok(v)
    }

    fn last_seen(&self) -> std::sync::MutexGuard<'_, Vec<ExposureStatus>> {
        // A poisoned lock still holds a whole Vec: use it.
        self.last_listed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One pass: remove what is not desired, ensure every desired one.
    pub fn reconcile(&mut self, ds: &DesiredState) -> PassOutcome {
        let mut out = PassOutcome::default();
        self.problems.clear();
        self.blocked = None;
        if let Err(p) = self.ensure_holder() {
            warn!(reason = p.reason, "{}", p.message);
            self.blocked = Some(p);
            out.errors += 1;
            return out;
        }
        let wanted: HashSet<&str> = ds
            .connections
            .iter()
            .map(|c| c.attachment.as_str())
            .collect();
        match self.list() {
            Ok(have) => {
                for e in have
                    .iter()
                    .filter(|e| !wanted.contains(e.spec.attachment.as_str()))
                {
                    match self.failed(self.client.call(Op::Remove {
                        attachment: e.spec.attachment.clone(),
                    })) {
                        Ok(r) if r.changed == Some(true) => out.changes += 1,
                        Ok(_) => {}
                        Err(err) => {
                            warn!(attachment = %e.spec.attachment, error = %err, "remove");
                            out.errors += 1;
                        }
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "listing the holder's exposures");
                out.errors += 1;
            }
        }
        for c in &ds.connections {
            let spec = Box::new(ExposureSpec::from_connection(c, &self.hostnqn));
            match self.failed(self.client.call(Op::Ensure { spec })) {
                Ok(r) => {
                    if r.changed == Some(true) {
                        out.changes += 1;
                    }
                }
                Err(e) => {
                    let p = ensure_problem(e);
                    warn!(attachment = %c.attachment, reason = p.reason, "{}", p.message);
                    self.problems.insert(c.attachment.clone(), p);
                    out.errors += 1;
                }
            }
        }
        out
    }

    /// Statuses read back from the holder.
    pub fn observe(&self, ds: &DesiredState) -> Vec<ConnectionStatus> {
        let listed = match &self.blocked {
            Some(p) => Err(p.clone()),
            None => self
                .list()
                .map_err(|e| Problem::new(HOLDER_UNAVAILABLE, e.to_string())),
        };
        let seen = match &listed {
            Ok(v) => v.clone(),
            Err(_) => self.last_seen().clone(),
        };
        let have: HashMap<String, ExposureStatus> = seen
            .into_iter()
            .map(|e| (e.spec.attachment.clone(), e))
            .collect();
        let stale = listed.as_ref().err();
        let mut out: Vec<ConnectionStatus> = ds
            .connections
            .iter()
            .map(|c| {
                let mut st = ConnectionStatus {
                    attachment: c.attachment.clone(),
                    volume: c.volume.clone(),
                    ..Default::default()
                };
                if let (Some(p), Some(e)) = (stale, have.get(&c.attachment)) {
                    return last_seen_status(c, e, p);
                }
                let problem = stale.or_else(|| self.problems.get(&c.attachment));
                if let Some(p) = problem {
                    st.conditions =
                        vec![condition("Connected", false, p.reason, p.message.clone())];
                    return st;
                }
                match have.get(&c.attachment) {
                    Some(e) => {
                        live_status(c, e.controller_state(), e.exposed, &e.path, e.size_bytes)
                    }
                    None => {
                        st.conditions = vec![condition(
                            "Connected",
                            false,
                            "NotConnected",
                            "not connected yet",
                        )];
                        st
                    }
                }
            })
            .collect();
        for e in have.values() {
            if !ds
                .connections
                .iter()
                .any(|c| c.attachment == e.spec.attachment)
            {
                out.push(detaching_status(
                    &e.spec.attachment,
                    &e.spec.volume,
                    e.state == "live",
                    e.path.clone(),
                ));
            }
        }
        out
    }

    /// The agent stops: the holder and its exposures stay.
    pub fn shutdown(&mut self) {
        if let Some(h) = &self.holder {
            info!(
                pid = h.pid,
                "agent stopping; the data-path holder keeps serving"
            );
        }
    }

    pub fn local_attachments(&self) -> Vec<LocalAttachment> {
        let mut v: Vec<LocalAttachment> = self
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|e| LocalAttachment {
                attachment: e.spec.attachment,
                volume: e.spec.volume,
                subsystem_nqn: e.spec.subsystem_nqn,
                path: e.path,
                read_only: e.spec.read_only,
                state: e.state,
                size_bytes: e.size_bytes,
                // Filled in from the desired state by the agent
                // (`expiry::annotate`): the holder does not know expiries.
                expires_at: None,
                expires_in: None,
                expiry_warning: false,
                access_mode: String::new(),
            })
            .collect();
        v.sort_by(|a, b| a.attachment.cmp(&b.attachment));
        v
    }
}

impl crate::driver::WorkstationDriver for HolderWorkstation {
    fn reconcile(&mut self, ds: &DesiredState) -> PassOutcome {
        HolderWorkstation::reconcile(self, ds)
    }
    fn observe(&self, ds: &DesiredState) -> Vec<ConnectionStatus> {
        HolderWorkstation::observe(self, ds)
    }
    fn shutdown(&mut self) {
        HolderWorkstation::shutdown(self);
    }
    fn local_attachments(&self) -> Vec<LocalAttachment> {
        HolderWorkstation::local_attachments(self)
    }
}

/// An exposure as last listed, marked as such: the holder could not be
/// listed now (`p`), which is no sign that the exposure went away.
fn last_seen_status(
    c: &ferrofab_proto::v1::Connection,
    e: &ExposureStatus,
    p: &Problem,
) -> ConnectionStatus {
    let mut st = live_status(c, e.controller_state(), e.exposed, &e.path, e.size_bytes);
    st.conditions.push(condition(
        HOLDER_LISTED,
        false,
        p.reason,
        format!(
            "as last listed; the holder could not be listed now: {}",
            p.message
        ),
    ));
    st
}

fn outdated(h: &Hello) -> Problem {
    Problem::new(
        HOLDER_OUTDATED,
        format!(
            "the data-path holder (pid {}, {}) speaks protocol {} and this agent {}; \
             its {} exposure(s) keep serving but are not managed until it is replaced: \
             stop what uses them, then run `ferrofab-agent holder stop`",
            h.pid, h.version, h.protocol, PROTOCOL_VERSION, h.exposures
        ),
    )
}

/// The condition of a failed `ensure`: the holder's reason when it is one
/// the in-process driver reports too, so both drivers read the same.
fn ensure_problem(e: HolderError) -> Problem {
    const KNOWN: &[&str] = &[
        "ExposureUnavailable",
        "InvalidExposureName",
        "HostNotAllowed",
        "ConnectRefused",
        "TargetUnreachable",
        "ConnectFailed",
        "NamespaceMissing",
        "WrongNamespace",
        "ExposureFailed",
        "IdentityMismatch",
    ];
    match e {
        HolderError::Refused { code, message } => {
            let reason = KNOWN
                .iter()
                .find(|k| **k == code)
                .copied()
                .unwrap_or("HolderRefused");
            Problem::new(reason, message)
        }
        other => Problem::new(HOLDER_UNAVAILABLE, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    /// A fake holder that answers `hello` with protocol `protocol` and one
    /// exposure, and refuses everything else as an old holder would.
    fn fake_old_holder(dir: &std::path::Path, protocol: u32) -> std::thread::JoinHandle<()> {
        let l = UnixListener::bind(HolderPaths::new(dir).socket).unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(8) {
                let Ok(s) = s else { return };
                let mut line = String::new();
                let _ = BufReader::new(&s).read_line(&mut line);
                let answer = if line.contains("hello") {
                    format!(
                        "{{\"ok\":true,\"hello\":{{\"protocol\":{protocol},\"version\":\"old\",\"pid\":1,\"exposures\":1}}}}\n"
                    )
                } else {
                    "{\"ok\":false,\"error\":{\"code\":\"UnsupportedVersion\",\"message\":\"no\"}}\n"
                        .to_string()
                };
                let _ = (&s).write_all(answer.as_bytes());
            }
        })
    }

    #[test]
    fn an_outdated_holder_in_use_is_kept_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let _t = fake_old_holder(dir.path(), PROTOCOL_VERSION + 1);
        let mut w = HolderWorkstation::new(
            SpawnSpec {
                binary: "/nonexistent/ferrofab-agent".into(),
                state_dir: dir.path().into(),
                expose_dir: dir.path().join("volumes"),
                log_level: "info".into(),
            },
            "nqn.h".into(),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let ds = DesiredState {
            connections: vec![ferrofab_proto::v1::Connection {
                attachment: "a1".into(),
                volume: "v1".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = w.reconcile(&ds);
        assert_eq!(out.errors, 1);
        let st = w.observe(&ds);
        let c = &st[0].conditions[0];
        assert_eq!(c.reason, HOLDER_OUTDATED, "{c:?}");
        assert!(c.message.contains("holder stop"), "{}", c.message);
    }

    fn exposure(attachment: &str) -> ExposureStatus {
        ExposureStatus {
            spec: ExposureSpec {
                attachment: attachment.into(),
                volume: format!("v-{attachment}"),
                ..Default::default()
            },
            state: "live".into(),
            exposed: true,
            path: format!("/run/ferrofab/{attachment}"),
            size_bytes: 1,
        }
    }

    /// A failed listing is no disconnect: desired exposures stay connected
    /// as last seen and undesired ones stay "detaching", so the controller
    /// neither releases a move nor removes a deleting attachment.
    #[test]
    fn a_failed_listing_reports_exposures_as_last_seen() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = HolderWorkstation::new(
            SpawnSpec {
                binary: "/nonexistent/ferrofab-agent".into(),
                state_dir: dir.path().into(),
                expose_dir: dir.path().join("volumes"),
                log_level: "info".into(),
            },
            "nqn.h".into(),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        *w.last_seen() = vec![exposure("a1"), exposure("gone")];
        w.blocked = Some(Problem::new(HOLDER_UNAVAILABLE, "timed out"));
        let ds = DesiredState {
            connections: vec![ferrofab_proto::v1::Connection {
                attachment: "a1".into(),
                volume: "v-a1".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let st = w.observe(&ds);
        assert_eq!(st.len(), 2, "{st:?}");
        let a1 = st.iter().find(|s| s.attachment == "a1").unwrap();
        assert!(a1.connected, "{a1:?}");
        let c = a1.conditions.iter().find(|c| c.r#type == HOLDER_LISTED);
        assert_eq!(c.map(|c| c.reason.as_str()), Some(HOLDER_UNAVAILABLE));
        let gone = st.iter().find(|s| s.attachment == "gone").unwrap();
        assert!(gone.connected, "still detaching: {gone:?}");
    }

    #[test]
    fn no_holder_and_no_binary_is_a_clear_condition() {
        let dir = tempfile::tempdir().unwrap();
        let w = HolderWorkstation::new(
            SpawnSpec {
                binary: "/nonexistent/ferrofab-agent".into(),
                state_dir: dir.path().into(),
                expose_dir: dir.path().join("volumes"),
                log_level: "info".into(),
            },
            "nqn.h".into(),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let ds = DesiredState::default();
        let counters = Arc::new(HolderCounters::default());
        let mut w = w.with_counters(counters.clone());
        assert_eq!(w.reconcile(&ds).errors, 1);
        assert_eq!(counters.starts.load(Ordering::Relaxed), 1);
        let p = w.blocked.clone().unwrap();
        assert_eq!(p.reason, HOLDER_UNAVAILABLE);
        assert!(
            p.message.contains("/nonexistent/ferrofab-agent"),
            "{}",
            p.message
        );
    }
}
