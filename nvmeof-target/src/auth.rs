//! The controller side of DH-HMAC-CHAP, one state machine per queue.
//!
//! A host with a key on the subsystem gets AUTHREQ.ATR in its Connect
//! response and must then, on that queue, run one transaction before any
//! other command is served (everything else is answered Authentication
//! Required):
//!
//! ```text
//! host                                   controller
//! Send    AUTH_Negotiate        ------>  pick hash + DH group
//! Receive DH-HMAC-CHAP_Challenge <-----  C1, seqnum, g^y
//! Send    DH-HMAC-CHAP_Reply    ------>  check R1 (and answer C2)
//! Receive Success1 / AUTH_Failure1 <---  R2 when the host asked
//! Send    Success2 / AUTH_Failure2 ---->  (bidirectional only)
//! ```
//!
//! A new Negotiate on an authenticated queue is a re-authentication: the
//! queue keeps working meanwhile and stays authenticated only if the new
//! transaction succeeds. Keys are looked up at each Negotiate, so a rotated
//! key applies from the next transaction on.

use std::sync::atomic::Ordering;

use ferrofab_nvmeof_wire::auth::crypto::{
    chap_response, ct_eq, random_bytes, random_seqnum, DhKeyPair, ResponseInput, Role,
};
use ferrofab_nvmeof_wire::auth::msg::{self, Challenge, FailureReason, Message, Reply};
use ferrofab_nvmeof_wire::auth::{is_dhchap_cdw10, DhGroup, HashId, MAX_AUTH_MESSAGE};
use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::wire::Sqe;

use super::auth_state::{QueueAuth, Step, Txn};
use super::conn::{Conn, PendingKind};

/// Pick the hash: the configured one if the host offers it, else the
/// first supported one the host offers.
fn choose_hash(offered: &[u8], wanted: Option<HashId>) -> Option<HashId> {
    let offered: Vec<HashId> = offered.iter().filter_map(|&h| HashId::from_id(h)).collect();
    match wanted {
        Some(w) => offered.contains(&w).then_some(w),
        None => offered.first().copied(),
    }
}

/// Pick the DH group: the configured one if offered; without a setting,
/// ffdhe2048 if offered (forward secrecy at a small cost), else the first
/// supported one the host offers.
fn choose_group(offered: &[u8], wanted: Option<DhGroup>) -> Option<DhGroup> {
    let offered: Vec<DhGroup> = offered
        .iter()
        .filter_map(|&g| DhGroup::from_id(g))
        .collect();
    match wanted {
        Some(w) => offered.contains(&w).then_some(w),
        None if offered.contains(&DhGroup::Ffdhe2048) => Some(DhGroup::Ffdhe2048),
        None => offered.first().copied(),
    }
}

impl Conn {
    /// Whether the host of this queue must authenticate, per the policy
    /// at Connect time.
    pub(crate) fn host_has_key(&self) -> bool {
        self.queue.as_ref().is_some_and(|q| {
            q.ctrl
                .subsystem()
                .is_some_and(|s| s.host_auth(&q.ctrl.hostnqn).is_some())
        })
    }

    /// Refuse a command on a queue that has not authenticated. Returns
    /// whether it was refused.
    pub(crate) fn refuse_unauthenticated(&mut self, sqe: &Sqe) -> bool {
        if self.auth.as_ref().is_none_or(QueueAuth::allows_commands) {
            return false;
        }
        self.target
            .gate
            .counters
            .auth_required_rejections
            .fetch_add(1, Ordering::Relaxed);
        self.complete(sqe.cid, Status::AUTH_REQUIRED, 0);
        true
    }

    /// Authentication Send: a message from the host.
    pub(crate) fn auth_send(&mut self, sqe: Sqe, data: Option<&[u8]>) {
        if !is_dhchap_cdw10(sqe.cdw10) {
            return self.complete(sqe.cid, Status::INVALID_FIELD, 0);
        }
        let tl = sqe.cdw11 as usize;
        if tl == 0 || tl > MAX_AUTH_MESSAGE || sqe.sgl.length as usize != tl {
            self.target.count_length_refusal();
            return self.complete(sqe.cid, Status::INVALID_FIELD, 0);
        }
        let Some(data) = data else {
            // Sent with R2T (an I/O queue with little in-capsule room):
            // fetch it, bounded above, and come back here.
            return self.request_data(sqe, PendingKind::Collect(Vec::with_capacity(tl)));
        };
        if self.auth.is_none() {
            if !self.host_has_key() {
                // A host without a key here (the Connect response did not
                // ask for authentication): there is nothing to
                // authenticate against.
                return self.complete(sqe.cid, Status::COMMAND_SEQUENCE_ERROR, 0);
            }
            // The host got its key after this queue connected (it was
            // admitted without one, as the policy then allowed): let it
            // authenticate now, as a re-authentication, so that a host
            // taking its first key does not have to drop its queues. The
            // queue keeps working meanwhile and loses its commands if the
            // transaction fails, as any failed re-authentication does.
            self.auth = Some(QueueAuth {
                authenticated: true,
                ..QueueAuth::default()
            });
        }
        match Message::decode(data) {
            Ok(m) => self.auth_message(m),
            Err(e) => {
                tracing::warn!(peer = %self.peer, error = %e, "malformed authentication message");
                let tid = ferrofab_nvmeof_wire::wire::get_u16(data, 4);
                self.set_step(Step::FailureReady {
                    tid,
                    reason: FailureReason::IncorrectPayload,
                });
            }
        }
        self.complete(sqe.cid, Status::SUCCESS, 0);
    }

    fn set_step(&mut self, step: Step) {
        if let Some(a) = &mut self.auth {
            a.step = step;
        }
    }

    fn take_step(&mut self) -> Step {
        self.auth
            .as_mut()
            .map(|a| std::mem::take(&mut a.step))
            .unwrap_or_default()
    }

    fn auth_message(&mut self, m: Message) {
        let step = self.take_step();
        let next = match (m, step) {
            (
                Message::Negotiate {
                    tid,
                    sc_c,
                    protocols,
                },
                _,
            ) => self.negotiate(tid, sc_c, &protocols),
            (Message::Reply(r), Step::AwaitReply(txn)) => self.check_reply(r, *txn),
            (Message::Success2 { tid }, Step::AwaitSuccess2 { tid: want }) if tid == want => {
                self.auth_succeeded(tid);
                Step::Idle
            }
            (Message::Failure { tid, rce, .. }, _) => {
                let why = FailureReason::from_code(rce).map_or("unknown reason", |r| r.describe());
                self.auth_failed(tid, &format!("host sent AUTH_Failure2: {why}"));
                Step::Idle
            }
            (m, _) => {
                tracing::warn!(peer = %self.peer, message = m.name(), "authentication message out of sequence");
                Step::FailureReady {
                    tid: m.tid(),
                    reason: FailureReason::IncorrectProtocolMessage,
                }
            }
        };
        self.set_step(next);
    }

    fn negotiate(&mut self, tid: u16, sc_c: u8, protocols: &[msg::Descriptor]) -> Step {
        let fail = |reason| Step::FailureReady { tid, reason };
        if sc_c != 0 {
            return fail(FailureReason::ConcatMismatch);
        }
        let Some(d) = protocols
            .iter()
            .find(|d| d.protocol == msg::PROTOCOL_DHCHAP)
        else {
            return fail(FailureReason::ProtocolUnusable);
        };
        let Some(auth) = self.queue.as_ref().and_then(|q| {
            q.ctrl
                .subsystem()
                .and_then(|s| s.host_auth(&q.ctrl.hostnqn))
        }) else {
            tracing::warn!(peer = %self.peer, "host asked to authenticate but has no key on this subsystem");
            return fail(FailureReason::Failed);
        };
        let Some(hash) = choose_hash(&d.hashes, auth.hash) else {
            return fail(FailureReason::HashUnusable);
        };
        let Some(group) = choose_group(&d.dhgroups, auth.dhgroup) else {
            return fail(FailureReason::DhGroupUnusable);
        };
        tracing::debug!(peer = %self.peer, tid, %hash, %group, "authentication negotiated");
        Step::ChallengeReady(Box::new(Txn {
            tid,
            hash,
            dh: DhKeyPair::generate(group),
            seqnum: random_seqnum(),
            challenge: random_bytes(hash.digest_len()),
            auth,
        }))
    }

    fn nqns(&self) -> (String, String) {
        self.queue.as_ref().map_or_else(Default::default, |q| {
            (q.ctrl.hostnqn.clone(), q.ctrl.subnqn().to_string())
        })
    }

    fn check_reply(&mut self, r: Reply, txn: Txn) -> Step {
        let fail = |reason| Step::FailureReady {
            tid: txn.tid,
            reason,
        };
        let hl = txn.hash.digest_len();
        if r.tid != txn.tid || r.response.len() != hl {
            return fail(FailureReason::IncorrectPayload);
        }
        let shared = match (&txn.dh, r.dh_public.is_empty()) {
            (None, true) => None,
            (Some(dh), false) => match dh.shared(&r.dh_public) {
                Ok(z) => Some(z),
                Err(e) => {
                    tracing::warn!(peer = %self.peer, error = %e, "bad DH value in Reply");
                    return fail(FailureReason::IncorrectPayload);
                }
            },
            _ => return fail(FailureReason::IncorrectPayload),
        };
        let (hostnqn, subnqn) = self.nqns();
        let expected = |key: &ferrofab_nvmeof_wire::auth::DhchapSecret| {
            let key = key.transformed(&hostnqn);
            chap_response(&ResponseInput {
                hash: txn.hash,
                key: &key,
                challenge: &txn.challenge,
                seqnum: txn.seqnum,
                tid: txn.tid,
                sc_c: 0,
                role: Role::Host,
                hostnqn: &hostnqn,
                subnqn: &subnqn,
                dh_shared: shared.as_deref().map(|z| &z[..]),
            })
        };
        let subsystem = self.queue.as_ref().and_then(|q| q.ctrl.subsystem());
        if ct_eq(&expected(&txn.auth.key), &r.response) {
            if subsystem.is_some_and(|s| s.retire_previous_key(&hostnqn)) {
                tracing::info!(peer = %self.peer, %hostnqn, %subnqn, "host uses its new key: previous key retired");
            }
        } else {
            // During a rotation the host may still open a queue with the
            // key it had: accept it until it switched (or the grace time
            // ran out).
            let previous = subsystem.and_then(|s| s.previous_host_key(&hostnqn));
            if !previous.is_some_and(|k| ct_eq(&expected(&k), &r.response)) {
                return fail(FailureReason::Failed);
            }
            tracing::info!(peer = %self.peer, %hostnqn, %subnqn, "host authenticated with its previous key (rotation in progress)");
        }
        let Some((s2, c2)) = r.ctrl_challenge else {
            return Step::Success1Ready {
                tid: txn.tid,
                hl: hl as u8,
                response: None,
            };
        };
        let Some(ctrl_key) = &txn.auth.ctrl_key else {
            tracing::warn!(peer = %self.peer, "host asked for bidirectional authentication, but no controller key is configured for it");
            return fail(FailureReason::Failed);
        };
        if s2 == 0 || c2.len() != hl {
            return fail(FailureReason::IncorrectPayload);
        }
        let ckey = ctrl_key.transformed(&subnqn);
        let response = chap_response(&ResponseInput {
            hash: txn.hash,
            key: &ckey,
            challenge: &c2,
            seqnum: s2,
            tid: txn.tid,
            sc_c: 0,
            role: Role::Controller,
            hostnqn: &hostnqn,
            subnqn: &subnqn,
            dh_shared: shared.as_deref().map(|z| &z[..]),
        });
        Step::Success1Ready {
            tid: txn.tid,
            hl: hl as u8,
            response: Some(response),
        }
    }

    /// Authentication Receive: the controller's next message.
    ///
    /// The state machine advances (and a Success1 or Failure1 takes
    /// effect) only once the whole message is known to reach the host:
    /// a message cut to the host's buffer would leave the queue
    /// authenticated by the target but not by the host.
    pub(crate) fn auth_recv(&mut self, sqe: Sqe) {
        if !is_dhchap_cdw10(sqe.cdw10) {
            return self.complete(sqe.cid, Status::INVALID_FIELD, 0);
        }
        let al = sqe.cdw11 as usize;
        if al == 0 {
            return self.complete(sqe.cid, Status::INVALID_FIELD, 0);
        }
        if al > sqe.sgl.length as usize {
            // The host allows more than its buffer holds.
            self.target.count_length_refusal();
            return self.complete(sqe.cid, Status::DATA_SGL_LENGTH_INVALID, 0);
        }
        let step = self.take_step();
        let message = match &step {
            Step::ChallengeReady(txn) => Message::Challenge(Challenge {
                tid: txn.tid,
                hash: txn.hash as u8,
                dhgroup: txn.dh.as_ref().map_or(0, |d| d.group() as u8),
                seqnum: txn.seqnum,
                challenge: txn.challenge.clone(),
                dh_public: txn.dh.as_ref().map(DhKeyPair::public).unwrap_or_default(),
            }),
            Step::Success1Ready { tid, hl, response } => Message::Success1 {
                tid: *tid,
                hl: *hl,
                response: response.clone(),
            },
            Step::FailureReady { tid, reason } => Message::Failure {
                tid: *tid,
                from_host: false,
                rc: msg::RC_FAILURE,
                rce: *reason as u8,
            },
            _ => {
                self.set_step(step);
                return self.complete(sqe.cid, Status::COMMAND_SEQUENCE_ERROR, 0);
            }
        };
        let bytes = message.encode();
        if bytes.len() > al {
            // Keep the state: the host may ask again with room enough.
            self.set_step(step);
            return self.complete(sqe.cid, Status::INVALID_FIELD, 0);
        }
        let next = match step {
            Step::ChallengeReady(txn) => Step::AwaitReply(txn),
            Step::Success1Ready { tid, response, .. } => {
                if response.is_some() {
                    Step::AwaitSuccess2 { tid }
                } else {
                    self.auth_succeeded(tid);
                    Step::Idle
                }
            }
            Step::FailureReady { tid, reason } => {
                self.auth_failed(tid, reason.describe());
                Step::Idle
            }
            other => other,
        };
        self.set_step(next);
        self.send_to_host(&sqe, &bytes, 0);
    }

    fn auth_succeeded(&mut self, tid: u16) {
        let mut was_counted = false;
        if let Some(a) = &mut self.auth {
            a.authenticated = true;
            was_counted = std::mem::take(&mut a.counted);
        }
        if was_counted {
            if let Some(q) = &self.queue {
                q.ctrl.end_auth();
            }
        }
        self.target
            .gate
            .counters
            .auth_successes
            .fetch_add(1, Ordering::Relaxed);
        let (hostnqn, subnqn) = self.nqns();
        tracing::info!(peer = %self.peer, qid = self.queue.as_ref().map_or(0, |q| q.qid), tid, %hostnqn, %subnqn, "host authenticated");
    }

    fn auth_failed(&mut self, tid: u16, why: &str) {
        if let Some(a) = &mut self.auth {
            a.authenticated = false;
        }
        self.target
            .gate
            .counters
            .auth_failures
            .fetch_add(1, Ordering::Relaxed);
        let (hostnqn, subnqn) = self.nqns();
        tracing::warn!(peer = %self.peer, qid = self.queue.as_ref().map_or(0, |q| q.qid), tid, %hostnqn, %subnqn, reason = why, "authentication failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_group_choice() {
        assert_eq!(choose_hash(&[1, 2, 3], None), Some(HashId::Sha256));
        assert_eq!(choose_hash(&[9, 3], None), Some(HashId::Sha512));
        assert_eq!(
            choose_hash(&[1, 2], Some(HashId::Sha384)),
            Some(HashId::Sha384)
        );
        assert_eq!(choose_hash(&[1], Some(HashId::Sha384)), None);
        assert_eq!(choose_hash(&[], None), None);
        assert_eq!(choose_group(&[0, 1, 2], None), Some(DhGroup::Ffdhe2048));
        assert_eq!(choose_group(&[0], None), Some(DhGroup::Null));
        assert_eq!(
            choose_group(&[0, 5], Some(DhGroup::Ffdhe8192)),
            Some(DhGroup::Ffdhe8192)
        );
        assert_eq!(choose_group(&[0, 1], Some(DhGroup::Ffdhe8192)), None);
    }
}
