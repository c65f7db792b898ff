//! Establishing and ending an association: the admin queue, controller
//! enable, Identify, the I/O queues, and the shutdown handshake.
//!
//! An association is what a reconnect replaces wholesale: all its queues
//! share one controller ID and die together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cmd;
use super::exec::{exec, exec_raw, Ctx};
use super::options::ConnectOptions;
use super::queue::{Queue, QueueConfig};
use super::HostError;
use ferrofab_nvmeof_wire::spec::identify::{
    decode_ns_descriptors, decode_ns_list, nidt, IdentifyController, IdentifyNamespace,
};
use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::spec::{aen, cc, cns, csts, feature, prop, CNTLID_DYNAMIC, PAGE_SIZE};
use ferrofab_nvmeof_wire::wire::Cqe;

/// Admin queue entries (as the Linux host uses).
const ADMIN_QUEUE_SIZE: u16 = 32;
/// PDU size limit on the admin queue: the largest admin transfer we ask
/// for plus headers.
const ADMIN_MAX_PLEN: usize = 64 * 1024 + 8192;

/// Explain a refused Connect the way an operator needs it.
pub(crate) fn connect_refusal(cqe: &Cqe, ctx: &Ctx, qid: u16) -> HostError {
    let status = Status::from_field(cqe.status);
    let dw0 = cqe.result as u32;
    let in_data = dw0 & (1 << 16) != 0;
    let ipo = dw0 & 0xFFFF;
    let reason = match (status.sct, status.sc) {
        (1, 0x84) => format!("host {} not allowed", ctx.hostnqn),
        (1, 0x82) if in_data => match ipo {
            256 => format!("subsystem {} not found on the target", ctx.subnqn),
            512 => format!("host NQN {} rejected", ctx.hostnqn),
            16 => format!("controller ID rejected for queue {qid}"),
            0 => "host ID rejected".to_string(),
            _ => format!("invalid parameter at byte {ipo} of the Connect data"),
        },
        (1, 0x82) => match ipo {
            42 => format!("queue ID {qid} rejected"),
            44 => format!("queue size rejected for queue {qid}"),
            _ => format!("invalid parameter at byte {ipo} of the Connect command"),
        },
        (1, 0x81) => "controller busy".to_string(),
        (1, 0x91) => format!(
            "the subsystem requires authentication and has no key for host {}",
            ctx.hostnqn
        ),
        (1, 0x80) => "incompatible Connect format".to_string(),
        _ => format!("Connect of queue {qid} failed"),
    };
    HostError::ConnectRejected {
        subnqn: ctx.subnqn.clone(),
        addr: ctx.addr.clone(),
        reason,
        status,
    }
}

/// Fabrics Connect on a freshly opened queue. Returns the controller ID.
pub(crate) fn fabric_connect(
    q: &Arc<Queue>,
    opts: &ConnectOptions,
    ctx: &Ctx,
    sqsize: u16,
    kato_ms: u32,
    cntlid: u16,
) -> Result<u16, HostError> {
    let c = cmd::connect(
        q.qid,
        sqsize,
        kato_ms,
        cntlid,
        &opts.identity.hostid,
        &opts.subnqn,
        &opts.identity.hostnqn,
    );
    let (cqe, _) = exec_raw(q, c, ctx)?;
    if !cqe.is_success() {
        return Err(connect_refusal(&cqe, ctx, q.qid));
    }
    let dw0 = cqe.result as u32;
    authenticate_if_needed(q, opts, ctx, dw0)?;
    Ok(dw0 as u16)
}

/// After a successful Connect: authenticate the queue when the controller
/// asks (AUTHREQ.ATR), or when we hold a controller secret (then we insist
/// on the controller proving itself even if it did not ask).
fn authenticate_if_needed(
    q: &Arc<Queue>,
    opts: &ConnectOptions,
    ctx: &Ctx,
    dw0: u32,
) -> Result<(), HostError> {
    let auth_err = |why: &str| HostError::AuthenticationFailed {
        subnqn: ctx.subnqn.clone(),
        addr: ctx.addr.clone(),
        qid: q.qid,
        why: why.to_string(),
    };
    if dw0 & ferrofab_nvmeof_wire::auth::CONNECT_ASCR != 0 {
        return Err(auth_err(
            "the controller requires secure channel concatenation (TLS), which is not supported",
        ));
    }
    let asked = dw0 & ferrofab_nvmeof_wire::auth::CONNECT_ATR != 0;
    if !asked && opts.dhchap_ctrl_secret.is_none() {
        return Ok(());
    }
    let Some(host) = &opts.dhchap_secret else {
        return Err(auth_err(
            "the controller requires authentication and no DH-HMAC-CHAP secret is configured (dhchap_secret)",
        ));
    };
    super::auth::authenticate(
        q,
        ctx,
        &super::auth::Secrets {
            host,
            ctrl: opts.dhchap_ctrl_secret.as_ref(),
        },
    )
}

pub(crate) fn prop_get(
    q: &Arc<Queue>,
    ctx: &Ctx,
    offset: u32,
    wide: bool,
) -> Result<u64, HostError> {
    let (v, _) = exec(q, cmd::property_get(offset, wide), ctx)?;
    Ok(if wide { v } else { v & 0xFFFF_FFFF })
}

pub(crate) fn prop_set(
    q: &Arc<Queue>,
    ctx: &Ctx,
    offset: u32,
    value: u32,
) -> Result<(), HostError> {
    exec(q, cmd::property_set(offset, value), ctx).map(|_| ())
}

/// Poll CSTS until `done` says so, a fatal status, or `limit`.
fn wait_csts(
    q: &Arc<Queue>,
    ctx: &Ctx,
    what: &str,
    limit: Duration,
    done: impl Fn(u32) -> bool,
) -> Result<u32, HostError> {
    let start = Instant::now();
    let mut nap = Duration::from_millis(1);
    loop {
        let v = prop_get(q, ctx, prop::CSTS, false)? as u32;
        if done(v) {
            return Ok(v);
        }
        if v & csts::CFS != 0 {
            return Err(ctx.controller_err(format!(
                "controller fatal status (CSTS {v:#x}) while waiting for {what}"
            )));
        }
        if start.elapsed() >= limit {
            return Err(HostError::Timeout {
                what: format!("waiting for {what} (CSTS {v:#x})"),
                addr: ctx.addr.clone(),
                after_ms: limit.as_millis() as u64,
            });
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(50));
    }
}

/// CC value for enabling: NVM command set, 4 KiB pages, 64-byte SQEs and
/// 16-byte CQEs (nvmet fails the controller on anything else).
pub(crate) fn cc_enable_value(cap: u64) -> u32 {
    let css_field = (cap >> 37) & 0xFF;
    let css = if css_field & 1 == 0 && css_field & (1 << 6) != 0 {
        6
    } else {
        0
    };
    (css << 4) | (6 << cc::IOSQES_SHIFT) | (4 << cc::IOCQES_SHIFT)
}

/// CAP.TO: worst case time to become ready, in 500 ms units.
fn ready_timeout(cap: u64) -> Duration {
    Duration::from_millis((((cap >> 24) & 0xFF) + 1) * 500)
}

/// Read CAP and enable the controller (disabling it first if needed).
fn enable_controller(q: &Arc<Queue>, ctx: &Ctx) -> Result<u64, HostError> {
    let cap = prop_get(q, ctx, prop::CAP, true)?;
    let mpsmin = (cap >> 48) & 0xF;
    if mpsmin != 0 {
        return Err(ctx.controller_err(format!(
            "CAP.MPSMIN is {mpsmin}: the controller does not support 4 KiB pages"
        )));
    }
    let limit = ready_timeout(cap);
    let current = prop_get(q, ctx, prop::CC, false)? as u32;
    if current & cc::EN != 0 {
        prop_set(q, ctx, prop::CC, current & !cc::EN)?;
        wait_csts(q, ctx, "CSTS.RDY=0", limit, |v| v & csts::RDY == 0)?;
    }
    let value = cc_enable_value(cap);
    prop_set(q, ctx, prop::CC, value)?;
    prop_set(q, ctx, prop::CC, value | cc::EN)?;
    wait_csts(q, ctx, "CSTS.RDY=1", limit, |v| v & csts::RDY != 0)?;
    Ok(cap)
}

/// Orderly shutdown: CC.SHN = 01b and wait for CSTS.SHST = 10b.
pub(crate) fn shutdown_controller(
    q: &Arc<Queue>,
    ctx: &Ctx,
    limit: Duration,
) -> Result<(), HostError> {
    let current = prop_get(q, ctx, prop::CC, false)? as u32;
    let value = (current & !cc::SHN_MASK) | (1 << cc::SHN_SHIFT);
    prop_set(q, ctx, prop::CC, value)?;
    wait_csts(q, ctx, "shutdown (CSTS.SHST=10b)", limit, |v| {
        v & csts::SHST_MASK == csts::SHST_COMPLETE
    })?;
    Ok(())
}

/// What a scan learns about one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub nsid: u32,
    /// Size in logical blocks.
    pub blocks: u64,
    pub block_size: u32,
    pub nguid: Option<[u8; 16]>,
    pub uuid: Option<[u8; 16]>,
    pub eui64: Option<[u8; 8]>,
}

impl NamespaceInfo {
    pub fn size_bytes(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }

    /// Whether `other` is the same namespace (same identifiers), possibly
    /// resized.
    pub fn same_identity(&self, other: &NamespaceInfo) -> bool {
        self.nsid == other.nsid
            && self.nguid == other.nguid
            && self.uuid == other.uuid
            && self.eui64 == other.eui64
    }
}

fn nonzero<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    let a: [u8; N] = v.try_into().ok()?;
    (a != [0; N]).then_some(a)
}

/// List the active namespaces and identify each. Namespaces with NCAP 0 or
/// an unusable block size are skipped.
pub(crate) fn scan_namespaces(q: &Arc<Queue>, ctx: &Ctx) -> Result<Vec<NamespaceInfo>, HostError> {
    let (_, list) = exec(q, cmd::identify(cns::ACTIVE_NS_LIST, 0), ctx)?;
    let mut out = Vec::new();
    for nsid in decode_ns_list(&list) {
        let (_, raw) = exec(q, cmd::identify(cns::NAMESPACE, nsid), ctx)?;
        let id = IdentifyNamespace::decode(&raw);
        if id.ncap == 0 || id.block_size() == 0 {
            tracing::debug!(nsid, ncap = id.ncap, lbads = id.lbads, "skipping namespace");
            continue;
        }
        let mut info = NamespaceInfo {
            nsid,
            blocks: id.nsze,
            block_size: id.block_size(),
            nguid: nonzero(&id.nguid),
            uuid: None,
            eui64: nonzero(&id.eui64),
        };
        // Descriptors are optional for old controllers; their absence is
        // not fatal here.
        match exec(q, cmd::identify(cns::NS_ID_DESCRIPTORS, nsid), ctx) {
            Ok((_, d)) => {
                for (t, v) in decode_ns_descriptors(&d) {
                    match t {
                        nidt::UUID => info.uuid = nonzero(&v),
                        nidt::NGUID => info.nguid = nonzero(&v).or(info.nguid),
                        nidt::EUI64 => info.eui64 = nonzero(&v).or(info.eui64),
                        _ => {}
                    }
                }
            }
            Err(e @ HostError::Command { .. }) => {
                tracing::debug!(nsid, error = %e, "no namespace identification descriptors")
            }
            Err(e) => return Err(e),
        }
        out.push(info);
    }
    Ok(out)
}

/// A live association: the admin queue, the I/O queues, and what Identify
/// said.
pub(crate) struct Association {
    pub gen: u64,
    pub admin: Arc<Queue>,
    pub io: Vec<Arc<Queue>>,
    pub cntlid: u16,
    pub ctrl: IdentifyController,
    /// Largest data transfer of one command, in bytes.
    pub max_transfer: usize,
}

impl Association {
    /// Every queue, admin first.
    pub fn queues(&self) -> impl Iterator<Item = &Arc<Queue>> {
        std::iter::once(&self.admin).chain(self.io.iter())
    }
}

/// Closes the queues opened so far unless disarmed, so a failed set-up
/// leaves no threads behind.
struct OpenQueues(Vec<Arc<Queue>>);

impl Drop for OpenQueues {
    fn drop(&mut self) {
        for q in self.0.drain(..) {
            for r in q.close() {
                r.finish(Err(HostError::ConnectionLost {
                    addr: q.addr.clone(),
                    qid: q.qid,
                    why: "association set-up failed".into(),
                }));
            }
        }
    }
}

/// Open the admin queue, Connect, enable and identify the controller.
pub(crate) fn open_admin(
    opts: &ConnectOptions,
    ctx: &Ctx,
    kato_ms: u32,
) -> Result<(Arc<Queue>, u16, u64, IdentifyController), HostError> {
    let admin = Queue::open(&QueueConfig {
        addr: opts.addr.clone(),
        qid: 0,
        digests: opts.digests,
        connect_timeout: opts.connect_timeout,
        incapsule_max: 0,
        max_plen: ADMIN_MAX_PLEN,
        slots: ADMIN_QUEUE_SIZE - 1,
    })?;
    let mut guard = OpenQueues(vec![admin.clone()]);
    let cntlid = fabric_connect(&admin, opts, ctx, ADMIN_QUEUE_SIZE, kato_ms, CNTLID_DYNAMIC)?;
    let cap = enable_controller(&admin, ctx)?;
    let (_, raw) = exec(&admin, cmd::identify(cns::CONTROLLER, 0), ctx)?;
    let ctrl = IdentifyController::decode(&raw);
    if ctrl.cntlid != cntlid {
        tracing::warn!(
            connect = cntlid,
            identify = ctrl.cntlid,
            "controller ID mismatch"
        );
    }
    guard.0.clear();
    Ok((admin, cntlid, cap, ctrl))
}

/// Build a whole association for an I/O controller.
pub(crate) fn establish(opts: &ConnectOptions, gen: u64) -> Result<Association, HostError> {
    let _span =
        tracing::info_span!("associate", addr = %opts.addr, subnqn = %opts.subnqn).entered();
    let ctx = Ctx::from_opts(opts);
    let kato_ms = opts.kato.as_millis().min(u128::from(u32::MAX)) as u32;
    let (admin, cntlid, cap, ctrl) = open_admin(opts, &ctx, kato_ms)?;
    let mut guard = OpenQueues(vec![admin.clone()]);

    let wanted = opts.nr_io_queues.max(1);
    let (granted, _) = exec(&admin, cmd::set_num_queues(wanted), &ctx)?;
    let nsqa = (granted & 0xFFFF) as u16;
    let ncqa = ((granted >> 16) & 0xFFFF) as u16;
    let nr = wanted
        .min(nsqa.saturating_add(1))
        .min(ncqa.saturating_add(1))
        .max(1);

    if ctrl.oaes & aen::CFG_NS_ATTR != 0 {
        exec(
            &admin,
            cmd::set_features(feature::ASYNC_EVENT_CONFIG, aen::CFG_NS_ATTR),
            &ctx,
        )?;
    }

    let mqes = (cap & 0xFFFF) as u32 + 1;
    let mut qsize = u32::from(opts.queue_size.max(2)).min(mqes);
    if ctrl.maxcmd > 0 {
        qsize = qsize.min(u32::from(ctrl.maxcmd));
    }
    let qsize = qsize.max(2) as u16;
    let max_transfer = max_transfer(ctrl.mdts, opts.max_io_size);
    let incapsule_max = (ctrl.ioccsz as usize * 16).saturating_sub(64);
    let mut io = Vec::with_capacity(usize::from(nr));
    for qid in 1..=nr {
        let q = Queue::open(&QueueConfig {
            addr: opts.addr.clone(),
            qid,
            digests: opts.digests,
            connect_timeout: opts.connect_timeout,
            incapsule_max,
            max_plen: max_transfer + 8192,
            slots: qsize - 1,
        })?;
        guard.0.push(q.clone());
        fabric_connect(&q, opts, &ctx, qsize, 0, cntlid)?;
        io.push(q);
    }
    tracing::info!(
        cntlid,
        io_queues = nr,
        queue_size = qsize,
        max_transfer,
        "association established"
    );
    guard.0.clear();
    Ok(Association {
        gen,
        admin,
        io,
        cntlid,
        ctrl,
        max_transfer,
    })
}

/// Largest transfer per command: MDTS (in units of the 4 KiB minimum page)
/// capped by the host's own limit.
pub(crate) fn max_transfer(mdts: u8, host_limit: usize) -> usize {
    let host_limit = host_limit.max(PAGE_SIZE);
    if mdts == 0 || mdts >= 20 {
        host_limit
    } else {
        (PAGE_SIZE << mdts).min(host_limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx {
        Ctx {
            addr: "10.0.0.1:4420".into(),
            subnqn: "nqn.x".into(),
            hostnqn: "nqn.y".into(),
            timeout: Duration::from_secs(1),
            spin: crate::spin::SpinPolicy::Fixed(Duration::ZERO),
        }
    }

    #[test]
    fn refusal_messages() {
        let cqe = Cqe {
            status: Status::CONNECT_INVALID_HOST.to_field(),
            result: (1 << 16) | 512,
            ..Default::default()
        };
        assert_eq!(
            connect_refusal(&cqe, &ctx(), 0).to_string(),
            "connect to nqn.x at 10.0.0.1:4420 refused: host nqn.y not allowed (connect: host not allowed)"
        );
        let cqe = Cqe {
            status: Status::CONNECT_INVALID_PARAMETERS.to_field(),
            result: (1 << 16) | 256,
            ..Default::default()
        };
        assert!(connect_refusal(&cqe, &ctx(), 0)
            .to_string()
            .contains("subsystem nqn.x not found"));
    }

    #[test]
    fn cc_and_limits() {
        // nvmet: CAP.CSS has NVM (bit 37) and "I/O command sets" (bit 43).
        let cap = (1u64 << 37) | (1 << 43) | (15 << 24) | 1023;
        assert_eq!(cc_enable_value(cap), 0x0046_0000);
        assert_eq!(cc_enable_value(1 << 43) >> 4 & 7, 6);
        assert_eq!(ready_timeout(cap), Duration::from_millis(8000));
        assert_eq!(max_transfer(0, 1 << 20), 1 << 20);
        assert_eq!(max_transfer(5, 1 << 20), 128 << 10);
    }
}
