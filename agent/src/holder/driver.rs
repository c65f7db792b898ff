//! The agent's built-in workstation driver when a holder owns the data
//! path: every pass is level-triggered through the holder's socket, and
//! stopping the agent leaves the holder (and every exposure) running.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ferrofab_proto::v1::{Connection, ConnectionStatus};
use ferrofab_types::Reason;
use tracing::{info, warn};

use super::proto::{ExposureSpec, ExposureStatus, Hello, Op, PROTOCOL_VERSION};
use super::{spawn, HolderClient, HolderError, HolderPaths, SpawnSpec};
use crate::driver::initiator::live_status;
use crate::driver::{Attachment, Listing, WorkstationDriver};
use crate::metrics::HolderCounters;
use crate::problem::{condition, Problem};

/// Condition reason while the running holder speaks another protocol.
pub const HOLDER_OUTDATED: Reason = Reason::HolderOutdated;
/// Condition reason while no holder answers and none could be started.
pub const HOLDER_UNAVAILABLE: Reason = Reason::HolderUnavailable;
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
            if !h.dhchap_keys {
                warn!(pid = h.pid, version = %h.version,
                    "the data-path holder predates authentication keys: its connections go \
                     without a key (refused where authentication is required) until it is \
                     replaced; `ferrofab-agent holder stop` once its volumes are not in use");
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

    /// Whether the adopted holder announced that it takes keys.
    fn takes_keys(&self) -> bool {
        self.holder.as_ref().is_some_and(|h| h.dhchap_keys)
    }

    fn list_exposures(&self) -> Result<Vec<ExposureStatus>, HolderError> {
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

    /// `ensure`: the holder connects, re-exposes or refreshes, whichever
    /// the attachment needs (it holds the controllers, so it decides).
    fn ensure(&self, c: &Connection) -> Result<bool, Problem> {
        let mut spec = Box::new(ExposureSpec::from_connection(c, &self.hostnqn));
        if !self.takes_keys() {
            // A holder from before keys refuses a spec carrying them; the
            // controller issues none once the node reports it cannot, but
            // a desired state computed before that report may still have
            // them. Without a key the target lets the host in unless the
            // export requires authentication.
            spec.host_key = None;
            spec.ctrl_key = None;
        }
        self.failed(self.client.call(Op::Ensure { spec }))
            .map(|r| r.changed == Some(true))
            .map_err(ensure_problem)
    }
}

impl WorkstationDriver for HolderWorkstation {
    fn prepare(&mut self, _wanted: &[Connection]) -> Result<(), Problem> {
        self.blocked = None;
        let r = self.ensure_holder();
        if let Err(p) = &r {
            self.blocked = Some(p.clone());
        }
        r
    }

    /// The holder checks every spec itself (with the same rules).
    fn check(&self, _c: &Connection) -> Result<(), Problem> {
        Ok(())
    }

    /// The holder's exposures; when it cannot be listed now (blocked,
    /// busy, gone), the last listing, marked as such.
    fn list(&self) -> Listing {
        let listed = match &self.blocked {
            Some(p) => Err(p.clone()),
            None => self
                .list_exposures()
                .map_err(|e| Problem::new(HOLDER_UNAVAILABLE, e.to_string())),
        };
        match listed {
            Ok(v) => Listing {
                attachments: v.iter().map(|e| attachment(e, None)).collect(),
                stale: None,
            },
            Err(p) => Listing {
                attachments: self
                    .last_seen()
                    .iter()
                    .map(|e| attachment(e, Some(&p)))
                    .collect(),
                stale: Some(p),
            },
        }
    }

    /// Whether the session still serves is the holder's call (`ensure`).
    fn serves(&self, _attachment: &str, _c: &Connection) -> bool {
        true
    }

    fn connect(&mut self, c: &Connection) -> Result<bool, Problem> {
        self.ensure(c)
    }

    fn expose(&mut self, c: &Connection) -> Result<bool, Problem> {
        self.ensure(c)
    }

    fn disconnect(&mut self, attachment: &str) -> Result<bool, Problem> {
        self.failed(self.client.call(Op::Remove {
            attachment: attachment.to_string(),
        }))
        .map(|r| r.changed == Some(true))
        .map_err(|e| Problem::new(HOLDER_UNAVAILABLE, e.to_string()))
    }

    /// Only when the holder adopted or started announced key support.
    fn dhchap_capable(&self) -> bool {
        self.takes_keys()
    }

    /// The agent stops: the holder and its exposures stay.
    fn shutdown(&mut self) {
        if let Some(h) = &self.holder {
            info!(
                pid = h.pid,
                "agent stopping; the data-path holder keeps serving"
            );
        }
    }
}

/// An exposure the holder listed, as the reconciler sees it; `stale`:
/// the holder could not be listed now and this is the last listing.
fn attachment(e: &ExposureStatus, stale: Option<&Problem>) -> Attachment {
    let c = e.spec.to_connection();
    let status = match stale {
        Some(p) => last_seen_status(&c, e, p),
        None => live_status(&c, e.controller_state(), e.exposed, &e.path, e.size_bytes),
    };
    Attachment {
        attachment: e.spec.attachment.clone(),
        volume: e.spec.volume.clone(),
        subsystem_nqn: e.spec.subsystem_nqn.clone(),
        read_only: e.spec.read_only,
        path: e.path.clone(),
        state: e.state.clone(),
        live: e.state == "live",
        size_bytes: e.size_bytes,
        status,
    }
}

/// An exposure as last listed, marked as such: the holder could not be
/// listed now (`p`), which is no sign that the exposure went away.
fn last_seen_status(c: &Connection, e: &ExposureStatus, p: &Problem) -> ConnectionStatus {
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
    const KNOWN: &[Reason] = &[
        Reason::ExposureUnavailable,
        Reason::InvalidExposureName,
        Reason::HostNotAllowed,
        Reason::ConnectRefused,
        Reason::TargetUnreachable,
        Reason::ConnectFailed,
        Reason::NamespaceMissing,
        Reason::WrongNamespace,
        Reason::ExposureFailed,
        Reason::IdentityMismatch,
        Reason::AuthenticationFailed,
        Reason::ReauthenticationFailed,
    ];
    match e {
        HolderError::Refused { code, message } => {
            let reason = KNOWN
                .iter()
                .find(|k| k.as_str() == code)
                .copied()
                .unwrap_or(Reason::HolderRefused);
            Problem::new(reason, message)
        }
        other => Problem::new(HOLDER_UNAVAILABLE, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::workstation::WorkstationReconciler;
    use ferrofab_proto::v1::DesiredState;
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

    /// A holder of our protocol built before keys: its `hello` has no
    /// `dhchap_keys`, and it refuses an `ensure` carrying keys as its
    /// spec (with `deny_unknown_fields`) did. Returns the lines it got.
    fn fake_keyless_holder(
        dir: &std::path::Path,
    ) -> (
        std::thread::JoinHandle<()>,
        std::sync::mpsc::Receiver<String>,
    ) {
        let l = UnixListener::bind(HolderPaths::new(dir).socket).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            for s in l.incoming().take(6) {
                let Ok(s) = s else { return };
                let mut line = String::new();
                let _ = BufReader::new(&s).read_line(&mut line);
                let answer = if line.contains("\"hello\"") {
                    "{\"ok\":true,\"hello\":{\"protocol\":1,\"version\":\"old\",\"pid\":7,\"exposures\":0}}\n"
                } else if line.contains("host_key") || line.contains("ctrl_key") {
                    "{\"ok\":false,\"error\":{\"code\":\"BadRequest\",\"message\":\"unknown field `host_key`\"}}\n"
                } else if line.contains("\"list\"") {
                    "{\"ok\":true,\"exposures\":[]}\n"
                } else {
                    "{\"ok\":true,\"changed\":true}\n"
                };
                let _ = (&s).write_all(answer.as_bytes());
                let _ = tx.send(line);
            }
        });
        (t, rx)
    }

    /// A holder from before keys (still running after an agent upgrade)
    /// is adopted: the node reports it cannot authenticate, and a desired
    /// connection that still carries keys is sent without them, so the
    /// old holder accepts it instead of refusing it.
    #[test]
    fn a_holder_without_key_support_gets_no_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (_t, lines) = fake_keyless_holder(dir.path());
        let mut w = WorkstationReconciler::new(Box::new(driver(dir.path())));
        let key = ferrofab_proto::v1::DhchapKey {
            secret: "DHHC-1:01:k:".into(),
            generation: 1,
            fingerprint: "f".into(),
        };
        let ds = DesiredState {
            connections: vec![ferrofab_proto::v1::Connection {
                attachment: "a1".into(),
                volume: "v1".into(),
                host_key: Some(key.clone()),
                ctrl_key: Some(key),
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = w.reconcile(&ds);
        assert_eq!(out.errors, 0, "the old holder took the connection");
        assert!(!w.driver().dhchap_capable());
        let sent: Vec<String> = lines.try_iter().collect();
        let ensure = sent
            .iter()
            .find(|l| l.contains("\"ensure\""))
            .expect("ensure sent");
        assert!(!ensure.contains("DHHC-1"), "{ensure}");
    }

    /// A holder driver whose holder binary does not exist, with its state
    /// and exposures under `dir`.
    fn driver(dir: &std::path::Path) -> HolderWorkstation {
        HolderWorkstation::new(
            SpawnSpec {
                binary: "/nonexistent/ferrofab-agent".into(),
                state_dir: dir.into(),
                expose_dir: dir.join("volumes"),
                log_level: "info".into(),
                raise_fuse_max_pages_limit: true,
            },
            "nqn.h".into(),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn an_outdated_holder_in_use_is_kept_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let _t = fake_old_holder(dir.path(), PROTOCOL_VERSION + 1);
        let mut w = WorkstationReconciler::new(Box::new(driver(dir.path())));
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
        let mut w = driver(dir.path());
        *w.last_seen() = vec![exposure("a1"), exposure("gone")];
        w.blocked = Some(Problem::new(HOLDER_UNAVAILABLE, "timed out"));
        let w = WorkstationReconciler::new(Box::new(w));
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
        assert_eq!(
            c.map(|c| c.reason.as_str()),
            Some(HOLDER_UNAVAILABLE.as_str())
        );
        let gone = st.iter().find(|s| s.attachment == "gone").unwrap();
        assert!(gone.connected, "still detaching: {gone:?}");
    }

    #[test]
    fn no_holder_and_no_binary_is_a_clear_condition() {
        let dir = tempfile::tempdir().unwrap();
        let w = driver(dir.path());
        let ds = DesiredState::default();
        let counters = Arc::new(HolderCounters::default());
        let mut w = WorkstationReconciler::new(Box::new(w.with_counters(counters.clone())));
        assert_eq!(w.reconcile(&ds).errors, 1);
        assert_eq!(counters.starts.load(Ordering::Relaxed), 1);
        let p = w.driver().blocked.clone().unwrap();
        assert_eq!(p.reason, HOLDER_UNAVAILABLE);
        assert!(
            p.message.contains("/nonexistent/ferrofab-agent"),
            "{}",
            p.message
        );
    }
}
