//! The host side of DH-HMAC-CHAP: one transaction on one queue.
//!
//! Run after Connect on every queue whose Connect response asked for it
//! (AUTHREQ.ATR), and again on request ([`super::Controller::reauthenticate`]).
//! The host offers every hash and DH group it supports and lets the
//! controller choose; with a controller secret it also challenges the
//! controller and refuses one that cannot answer.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use ferrofab_nvmeof_wire::auth::crypto::{
    chap_response, ct_eq, random_bytes, random_seqnum, DhKeyPair, ResponseInput, Role,
};
use ferrofab_nvmeof_wire::auth::msg::{self, Descriptor, FailureReason, Message, Reply};
use ferrofab_nvmeof_wire::auth::{auth_cdw10, DhGroup, DhchapSecret, HashId, MAX_AUTH_MESSAGE};
use ferrofab_nvmeof_wire::spec::{admin, fctype};

use super::cmd::{Cmd, PSDT_SGL};
use super::exec::{exec, Ctx};
use super::queue::Queue;
use super::HostError;

/// Transaction IDs: distinct per transaction of this process.
static NEXT_TID: AtomicU16 = AtomicU16::new(1);

/// The secrets one connection authenticates with.
pub(crate) struct Secrets<'a> {
    pub host: &'a DhchapSecret,
    pub ctrl: Option<&'a DhchapSecret>,
}

fn auth_cmd(name: &'static str, fct: u8) -> Cmd {
    let mut c = Cmd {
        name,
        sqe: Default::default(),
        data_out: Vec::new(),
        data_in_len: 0,
    };
    c.sqe.opcode = admin::FABRICS;
    c.sqe.flags = PSDT_SGL;
    c.sqe.nsid = u32::from(fct);
    c.sqe.cdw10 = auth_cdw10();
    c
}

/// Authentication Send carrying `m`.
pub fn auth_send(m: &Message) -> Cmd {
    let data = m.encode();
    let mut c = auth_cmd("Authentication Send", fctype::AUTH_SEND);
    c.sqe.cdw11 = data.len() as u32;
    c.data_out = data;
    c
}

/// Authentication Receive with room for the largest message.
pub fn auth_recv() -> Cmd {
    let mut c = auth_cmd("Authentication Receive", fctype::AUTH_RECV);
    c.sqe.cdw11 = MAX_AUTH_MESSAGE as u32;
    c.data_in_len = MAX_AUTH_MESSAGE;
    c
}

fn failed(ctx: &Ctx, qid: u16, why: impl Into<String>) -> HostError {
    HostError::AuthenticationFailed {
        subnqn: ctx.subnqn.clone(),
        addr: ctx.addr.clone(),
        qid,
        why: why.into(),
    }
}

/// Tell the controller we give up (AUTH_Failure2), then report `why`.
/// The send is best effort: the error that matters is ours.
fn give_up(q: &Arc<Queue>, ctx: &Ctx, tid: u16, reason: FailureReason, why: String) -> HostError {
    let m = Message::Failure {
        tid,
        from_host: true,
        rc: msg::RC_FAILURE,
        rce: reason as u8,
    };
    if let Err(e) = exec(q, auth_send(&m), ctx) {
        tracing::debug!(error = %e, "sending AUTH_Failure2 failed");
    }
    failed(ctx, q.qid, why)
}

/// One authentication transaction on queue `q`. An Authentication
/// Send/Receive the controller fails (say, one that has no key for us and
/// was asked anyway because we hold a controller secret) is an
/// authentication failure too.
pub(crate) fn authenticate(
    q: &Arc<Queue>,
    ctx: &Ctx,
    secrets: &Secrets<'_>,
) -> Result<(), HostError> {
    transaction(q, ctx, secrets).map_err(|e| match e {
        HostError::Command { cmd, status, .. } => {
            failed(ctx, q.qid, format!("{cmd} failed: {status}"))
        }
        other => other,
    })
}

fn transaction(q: &Arc<Queue>, ctx: &Ctx, secrets: &Secrets<'_>) -> Result<(), HostError> {
    let qid = q.qid;
    let tid = NEXT_TID.fetch_add(1, Ordering::Relaxed);
    let _span = tracing::debug_span!("authenticate", qid, tid).entered();
    let negotiate = Message::Negotiate {
        tid,
        sc_c: 0,
        protocols: vec![Descriptor {
            protocol: msg::PROTOCOL_DHCHAP,
            hashes: HashId::ALL.iter().map(|h| *h as u8).collect(),
            dhgroups: DhGroup::ALL.iter().map(|g| *g as u8).collect(),
        }],
    };
    exec(q, auth_send(&negotiate), ctx)?;
    let (_, data) = exec(q, auth_recv(), ctx)?;
    let ch = match Message::decode(&data) {
        Ok(Message::Challenge(c)) => c,
        Ok(m) => return Err(unexpected(q, ctx, tid, &m, "DH-HMAC-CHAP_Challenge")),
        Err(e) => {
            return Err(give_up(
                q,
                ctx,
                tid,
                FailureReason::IncorrectPayload,
                format!("malformed challenge: {e}"),
            ))
        }
    };
    let bad = |why: String| give_up(q, ctx, tid, FailureReason::IncorrectPayload, why);
    if ch.tid != tid {
        return Err(bad(format!(
            "challenge for transaction {} (ours is {tid})",
            ch.tid
        )));
    }
    let Some(hash) = HashId::from_id(ch.hash) else {
        return Err(give_up(
            q,
            ctx,
            tid,
            FailureReason::HashUnusable,
            format!("controller chose unknown hash {:#x}", ch.hash),
        ));
    };
    let Some(group) = DhGroup::from_id(ch.dhgroup) else {
        return Err(give_up(
            q,
            ctx,
            tid,
            FailureReason::DhGroupUnusable,
            format!("controller chose unknown DH group {:#x}", ch.dhgroup),
        ));
    };
    if ch.seqnum == 0 || ch.challenge.len() != hash.digest_len() {
        return Err(bad(
            "challenge with sequence number 0 or wrong length".into()
        ));
    }
    let (dh_public, shared) = match DhKeyPair::generate(group) {
        None if ch.dh_public.is_empty() => (Vec::new(), None),
        Some(dh) if !ch.dh_public.is_empty() => {
            let z = dh
                .shared(&ch.dh_public)
                .map_err(|e| bad(format!("controller's DH value: {e}")))?;
            (dh.public(), Some(z))
        }
        _ => return Err(bad(format!("DH value does not match group {group}"))),
    };
    let shared = shared.as_deref().map(|z| &z[..]);
    let host_key = secrets.host.transformed(&ctx.hostnqn);
    let response = chap_response(&ResponseInput {
        hash,
        key: &host_key,
        challenge: &ch.challenge,
        seqnum: ch.seqnum,
        tid,
        sc_c: 0,
        role: Role::Host,
        hostnqn: &ctx.hostnqn,
        subnqn: &ctx.subnqn,
        dh_shared: shared,
    });
    let ctrl_challenge = secrets
        .ctrl
        .map(|_| (random_seqnum(), random_bytes(hash.digest_len())));
    let reply = Message::Reply(Reply {
        tid,
        response,
        ctrl_challenge: ctrl_challenge.clone(),
        dh_public,
    });
    exec(q, auth_send(&reply), ctx)?;
    let (_, data) = exec(q, auth_recv(), ctx)?;
    let ctrl_response = match Message::decode(&data) {
        Ok(Message::Success1 {
            tid: t,
            hl,
            response,
        }) if t == tid && usize::from(hl) == hash.digest_len() => response,
        Ok(m) => return Err(unexpected(q, ctx, tid, &m, "DH-HMAC-CHAP_Success1")),
        Err(e) => return Err(bad(format!("malformed Success1: {e}"))),
    };
    let (Some(ctrl_key), Some((s2, c2))) = (secrets.ctrl, ctrl_challenge) else {
        tracing::debug!(%hash, %group, "authenticated");
        return Ok(());
    };
    let Some(got) = ctrl_response else {
        return Err(bad("controller did not answer our challenge".into()));
    };
    let ckey = ctrl_key.transformed(&ctx.subnqn);
    let expected = chap_response(&ResponseInput {
        hash,
        key: &ckey,
        challenge: &c2,
        seqnum: s2,
        tid,
        sc_c: 0,
        role: Role::Controller,
        hostnqn: &ctx.hostnqn,
        subnqn: &ctx.subnqn,
        dh_shared: shared,
    });
    if !ct_eq(&expected, &got) {
        return Err(give_up(
            q,
            ctx,
            tid,
            FailureReason::Failed,
            "the controller failed to prove it knows the controller secret".into(),
        ));
    }
    exec(q, auth_send(&Message::Success2 { tid }), ctx)?;
    tracing::debug!(%hash, %group, "authenticated both ways");
    Ok(())
}

/// A message other than the one expected: AUTH_Failure1 from the
/// controller ends the transaction with its reason; anything else is
/// answered with AUTH_Failure2.
fn unexpected(q: &Arc<Queue>, ctx: &Ctx, tid: u16, m: &Message, wanted: &str) -> HostError {
    if let Message::Failure {
        from_host: false,
        rce,
        ..
    } = m
    {
        let why = FailureReason::from_code(*rce).map_or("unknown reason", |r| r.describe());
        return failed(ctx, q.qid, format!("controller refused: {why}"));
    }
    give_up(
        q,
        ctx,
        tid,
        FailureReason::IncorrectProtocolMessage,
        format!("expected {wanted}, got {}", m.name()),
    )
}
