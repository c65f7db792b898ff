//! Workstation role: makes the desired connections true over any
//! [`WorkstationDriver`] (the built-in initiator in the holder or in
//! process, the holder client, the kernel host). The driver knows how to
//! connect, expose and disconnect; this module knows when.
//!
//! One pass: prepare the driver, read back what it has, disconnect what is
//! no longer wanted (or no longer serves its connection), then connect
//! what is missing and keep the rest exposed. Every step is idempotent,
//! and only attachments the driver made are ever listed or disconnected.

use std::collections::{HashMap, HashSet};

use ferrofab_proto::v1::{Connection, ConnectionStatus, DesiredState};
use tracing::{debug, info, info_span, warn};

use ferrofab_types::Reason;

use crate::driver::{Listing, WorkstationDriver};
use crate::problem::{condition, PassOutcome, Problem};
use crate::status::LocalAttachment;

/// The workstation reconciler and the driver it runs.
#[derive(Debug)]
pub struct WorkstationReconciler<D: WorkstationDriver + ?Sized = dyn WorkstationDriver> {
    driver: Box<D>,
    /// Failures of the last pass, by attachment.
    problems: HashMap<String, Problem>,
}

impl<D: WorkstationDriver + ?Sized> WorkstationReconciler<D> {
    /// A reconciler over `driver` (chosen by `factory`).
    pub fn new(driver: Box<D>) -> Self {
        WorkstationReconciler {
            driver,
            problems: HashMap::new(),
        }
    }

    pub fn driver(&self) -> &D {
        &self.driver
    }

    /// One pass: detach what is no longer wanted (or changed, or failed
    /// for good), attach what is missing, keep the rest exposed.
    pub fn reconcile(&mut self, ds: &DesiredState) -> PassOutcome {
        let mut out = PassOutcome::default();
        self.problems.clear();
        if let Err(p) = self.driver.prepare(&ds.connections) {
            warn!(reason = p.reason.as_str(), "{}", p.message);
            for c in &ds.connections {
                self.problems.insert(c.attachment.clone(), p.clone());
            }
            out.errors += 1;
            return out;
        }
        let listing = self.driver.list();
        let mut wanted: HashMap<&str, &Connection> = HashMap::new();
        for c in &ds.connections {
            match self.driver.check(c) {
                Ok(()) => {
                    wanted.insert(c.attachment.as_str(), c);
                }
                Err(p) => {
                    warn!(attachment = %c.attachment, reason = p.reason.as_str(), "{}", p.message);
                    self.problems.insert(c.attachment.clone(), p);
                    out.errors += 1;
                }
            }
        }
        let kept = self.detach_stale(&listing, &wanted, &mut out);
        for c in &ds.connections {
            if !wanted.contains_key(c.attachment.as_str()) {
                continue;
            }
            let span = info_span!("attach", attachment = %c.attachment, volume = %c.volume, nqn = %c.subsystem_nqn);
            let _g = span.enter();
            let r = if kept.contains(c.attachment.as_str()) {
                self.driver.expose(c)
            } else if self.awaits_key(c) {
                debug!("not connecting yet: the export requires a key and ours has not arrived");
                self.problems.insert(
                    c.attachment.clone(),
                    Problem::new(
                        Reason::KeyPending,
                        "waiting for this workstation's data-path key: the export requires authentication",
                    ),
                );
                continue;
            } else {
                self.driver.connect(c)
            };
            match r {
                Ok(changed) => out.changes += usize::from(changed),
                Err(p) => {
                    warn!(reason = p.reason.as_str(), "{}", p.message);
                    self.problems.insert(c.attachment.clone(), p);
                    out.errors += 1;
                }
            }
        }
        out
    }

    /// Whether connecting `c` now would only be refused: the export
    /// requires authentication, this data path can authenticate, but the
    /// controller has not sent our key yet (it does once our first report
    /// says we can). Waiting for it, rather than connecting keyless, keeps
    /// a new workstation's first attach free of a refused Connect and its
    /// warning. A data path that cannot authenticate connects anyway and
    /// reports why it was refused (`AuthUnsupported`).
    fn awaits_key(&self, c: &Connection) -> bool {
        c.require_auth && c.host_key.is_none() && self.driver.dhchap_capable()
    }

    /// Disconnects every listed attachment that is not wanted or no longer
    /// serves its connection; returns the ones still attached. A stale listing (the
    /// data path could not be read) removes nothing.
    fn detach_stale<'a>(
        &mut self,
        listing: &'a Listing,
        wanted: &HashMap<&str, &Connection>,
        out: &mut PassOutcome,
    ) -> HashSet<&'a str> {
        let mut kept = HashSet::new();
        if let Some(p) = &listing.stale {
            warn!(
                reason = p.reason.as_str(),
                "listing the attachments: {}", p.message
            );
            out.errors += 1;
            return kept;
        }
        for a in &listing.attachments {
            let name = a.attachment.as_str();
            let serves = wanted
                .get(name)
                .is_some_and(|c| self.driver.serves(name, c));
            if serves {
                kept.insert(name);
                continue;
            }
            match self.driver.disconnect(name) {
                Ok(changed) => out.changes += usize::from(changed),
                Err(p) => {
                    // Still attached: it is kept exposed, never connected
                    // a second time; the next pass retries.
                    warn!(attachment = %name, reason = p.reason.as_str(), "{}", p.message);
                    out.errors += 1;
                    kept.insert(name);
                }
            }
        }
        kept
    }

    /// Makes one desired connection true, level-triggered: an attachment
    /// that still serves it is only kept exposed; one whose spec changed
    /// or whose controller failed for good is reconnected. Whether
    /// anything changed. (The holder's `ensure`.)
    pub fn ensure_one(&mut self, c: &Connection) -> Result<bool, Problem> {
        let span = info_span!("attach", attachment = %c.attachment, volume = %c.volume, nqn = %c.subsystem_nqn);
        let _g = span.enter();
        self.driver.prepare(std::slice::from_ref(c))?;
        let listed = self.driver.list().get(&c.attachment).is_some();
        if listed && self.driver.serves(&c.attachment, c) {
            return self.driver.expose(c);
        }
        if listed {
            self.driver.disconnect(&c.attachment)?;
        }
        let r = self.driver.check(c).and_then(|()| self.driver.connect(c));
        if let Err(p) = &r {
            warn!(reason = p.reason.as_str(), "{}", p.message);
            if listed {
                info!("detached before a failed re-attach");
            }
        }
        r.map(|_| true)
    }

    /// Detaches `attachment` if attached; whether it was. (The holder's
    /// `remove`.)
    pub fn remove_one(&mut self, attachment: &str) -> bool {
        match self.driver.disconnect(attachment) {
            Ok(was) => was,
            Err(p) => {
                warn!(attachment, reason = p.reason.as_str(), "{}", p.message);
                true
            }
        }
    }

    /// Connection statuses read back from the data path: every desired
    /// one, and those still attached but no longer desired (detaching).
    pub fn observe(&self, ds: &DesiredState) -> Vec<ConnectionStatus> {
        let listing = self.driver.list();
        let mut out: Vec<ConnectionStatus> = ds
            .connections
            .iter()
            .map(|c| self.connection_status(c, &listing))
            .collect();
        for a in &listing.attachments {
            if !ds.connections.iter().any(|c| c.attachment == a.attachment) {
                out.push(detaching_status(
                    &a.attachment,
                    &a.volume,
                    a.live,
                    a.path.clone(),
                ));
            }
        }
        out
    }

    fn connection_status(&self, c: &Connection, listing: &Listing) -> ConnectionStatus {
        let listed = listing.get(&c.attachment);
        if let (Some(_), Some(a)) = (&listing.stale, listed) {
            // Could not be read now: as last seen, never as gone.
            return a.status.clone();
        }
        let mut st = ConnectionStatus {
            attachment: c.attachment.clone(),
            volume: c.volume.clone(),
            ..Default::default()
        };
        let problem = listing
            .stale
            .as_ref()
            .or_else(|| self.problems.get(&c.attachment));
        if let Some(p) = problem {
            st.conditions = vec![condition("Connected", false, p.reason, p.message.clone())];
            return st;
        }
        match listed {
            Some(a) => a.status.clone(),
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
    }

    /// Attachments for the local API: only what the data path shows now
    /// (none while it cannot be listed; the last report still has them).
    pub fn local_attachments(&self) -> Vec<LocalAttachment> {
        let listing = self.driver.list();
        if listing.stale.is_some() {
            return Vec::new();
        }
        let mut v: Vec<LocalAttachment> = listing
            .attachments
            .into_iter()
            .map(|a| LocalAttachment {
                attachment: a.attachment,
                volume: a.volume,
                subsystem_nqn: a.subsystem_nqn,
                path: a.path,
                read_only: a.read_only,
                state: a.state,
                size_bytes: a.size_bytes,
                // Filled in from the desired state by the agent
                // (`expiry::annotate`, the local API).
                ..Default::default()
            })
            .collect();
        v.sort_by(|a, b| a.attachment.cmp(&b.attachment));
        v
    }

    /// Called when the agent stops: the driver decides what stays (the
    /// holder's and the kernel's attachments keep serving).
    pub fn shutdown(&mut self) {
        self.driver.shutdown();
    }
}

/// The status of a connection still up but no longer desired.
fn detaching_status(
    attachment: &str,
    volume: &str,
    connected: bool,
    device_path: String,
) -> ConnectionStatus {
    ConnectionStatus {
        attachment: attachment.to_string(),
        volume: volume.to_string(),
        connected,
        device_path,
        conditions: vec![condition(
            "Connected",
            false,
            "Detaching",
            "disconnect in progress",
        )],
        // Not desired any more: no size is promised for it.
        size_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Attachment;

    /// A driver that records every call and holds attachments in memory.
    #[derive(Debug, Default)]
    struct Fake {
        have: HashMap<String, Connection>,
        calls: Vec<String>,
        stale: Option<Problem>,
        disconnect_fails: bool,
        capable: bool,
    }

    impl WorkstationDriver for Fake {
        fn prepare(&mut self, _wanted: &[Connection]) -> Result<(), Problem> {
            Ok(())
        }
        fn check(&self, c: &Connection) -> Result<(), Problem> {
            crate::names::check(
                Reason::InvalidExposureName,
                "exposure name",
                &c.exposure_name,
            )
        }
        fn list(&self) -> Listing {
            let mut attachments: Vec<Attachment> = self
                .have
                .values()
                .map(|c| Attachment {
                    attachment: c.attachment.clone(),
                    volume: c.volume.clone(),
                    live: true,
                    status: ConnectionStatus {
                        attachment: c.attachment.clone(),
                        connected: true,
                        ..Default::default()
                    },
                    ..Default::default()
                })
                .collect();
            attachments.sort_by(|a, b| a.attachment.cmp(&b.attachment));
            Listing {
                attachments,
                stale: self.stale.clone(),
            }
        }
        fn serves(&self, attachment: &str, c: &Connection) -> bool {
            self.have.get(attachment) == Some(c)
        }
        fn connect(&mut self, c: &Connection) -> Result<bool, Problem> {
            self.calls.push(format!("connect {}", c.attachment));
            self.have.insert(c.attachment.clone(), c.clone());
            Ok(true)
        }
        fn expose(&mut self, c: &Connection) -> Result<bool, Problem> {
            self.calls.push(format!("expose {}", c.attachment));
            Ok(false)
        }
        fn disconnect(&mut self, attachment: &str) -> Result<bool, Problem> {
            self.calls.push(format!("disconnect {attachment}"));
            if self.disconnect_fails {
                return Err(Problem::new(Reason::DisconnectFailed, "busy"));
            }
            Ok(self.have.remove(attachment).is_some())
        }
        fn shutdown(&mut self) {}
        fn dhchap_capable(&self) -> bool {
            self.capable
        }
    }

    fn conn(attachment: &str, port: u32) -> Connection {
        Connection {
            attachment: attachment.into(),
            volume: format!("v-{attachment}"),
            exposure_name: format!("v-{attachment}"),
            port,
            ..Default::default()
        }
    }

    fn ds(connections: Vec<Connection>) -> DesiredState {
        DesiredState {
            connections,
            ..Default::default()
        }
    }

    fn calls(r: &mut WorkstationReconciler<Fake>) -> Vec<String> {
        std::mem::take(&mut r.driver.calls)
    }

    #[test]
    fn a_pass_is_level_triggered_and_idempotent() {
        let mut r = WorkstationReconciler::new(Box::<Fake>::default());
        let d = ds(vec![conn("a1", 1), conn("a2", 1)]);
        assert_eq!(r.reconcile(&d).changes, 2);
        assert_eq!(calls(&mut r), ["connect a1", "connect a2"]);
        assert_eq!(r.reconcile(&d), PassOutcome::default());
        assert_eq!(calls(&mut r), ["expose a1", "expose a2"]);
        // A changed session is reconnected; an undesired one disconnected.
        let d = ds(vec![conn("a1", 2)]);
        assert_eq!(r.reconcile(&d).changes, 3);
        let mut c = calls(&mut r);
        c.sort();
        assert_eq!(c, ["connect a1", "disconnect a1", "disconnect a2"]);
        let st = r.observe(&d);
        assert_eq!(st.len(), 1);
        assert!(st[0].connected, "{st:?}");
    }

    /// With authentication required, a data path that can authenticate
    /// waits for its key instead of a Connect that would be refused; one
    /// that cannot connects (and reports the refusal).
    #[test]
    fn a_required_key_not_yet_sent_is_waited_for() {
        let mut r = WorkstationReconciler::new(Box::new(Fake {
            capable: true,
            ..Default::default()
        }));
        let mut c = conn("a1", 1);
        c.require_auth = true;
        let out = r.reconcile(&ds(vec![c.clone()]));
        assert_eq!(out, PassOutcome::default());
        assert!(calls(&mut r).is_empty());
        assert_eq!(r.problems["a1"].reason, Reason::KeyPending);
        c.host_key = Some(ferrofab_proto::v1::DhchapKey {
            secret: "DHHC-1:00:k:".into(),
            generation: 1,
            ..Default::default()
        });
        assert_eq!(r.reconcile(&ds(vec![c.clone()])).changes, 1);
        assert_eq!(calls(&mut r), ["connect a1"]);
        assert!(r.problems.is_empty());
        let mut keyless = WorkstationReconciler::new(Box::<Fake>::default());
        c.host_key = None;
        assert_eq!(keyless.reconcile(&ds(vec![c])).changes, 1);
        assert_eq!(calls(&mut keyless), ["connect a1"]);
    }

    /// A listing that could not be read now removes nothing, and the
    /// attachments are reported as last seen, never as gone.
    #[test]
    fn a_stale_listing_removes_nothing() {
        let mut r = WorkstationReconciler::new(Box::<Fake>::default());
        r.reconcile(&ds(vec![conn("a1", 1)]));
        calls(&mut r);
        r.driver.stale = Some(Problem::new(Reason::HolderUnavailable, "timed out"));
        let out = r.reconcile(&ds(vec![]));
        assert_eq!(out.errors, 1);
        assert!(calls(&mut r).is_empty());
        let st = r.observe(&ds(vec![conn("a1", 1)]));
        assert!(st[0].connected, "{st:?}");
        assert!(r.local_attachments().is_empty());
    }

    /// An attachment that could not be disconnected is still attached: it
    /// is kept exposed, never connected a second time.
    #[test]
    fn a_failed_disconnect_never_connects_twice() {
        let mut r = WorkstationReconciler::new(Box::<Fake>::default());
        r.reconcile(&ds(vec![conn("a1", 1)]));
        calls(&mut r);
        r.driver.disconnect_fails = true;
        let out = r.reconcile(&ds(vec![conn("a1", 2)]));
        assert_eq!(out.errors, 1);
        assert_eq!(calls(&mut r), ["disconnect a1", "expose a1"]);
    }

    #[test]
    fn refused_names_touch_nothing_and_are_reported() {
        let mut r = WorkstationReconciler::new(Box::<Fake>::default());
        let mut bad = conn("a1", 1);
        bad.exposure_name = "../x".into();
        let d = ds(vec![bad]);
        assert_eq!(r.reconcile(&d).errors, 1);
        assert!(calls(&mut r).is_empty());
        assert_eq!(r.observe(&d)[0].conditions[0].reason, "InvalidExposureName");
    }
}
