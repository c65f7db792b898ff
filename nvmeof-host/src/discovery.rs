//! Discovery client: read the discovery log page (LID 70h) of a discovery
//! controller.

use std::sync::Arc;
use std::time::Duration;

use super::assoc;
use super::cmd;
use super::exec::{exec, Ctx};
use super::identity::HostIdentity;
use super::options::ConnectOptions;
use super::queue::Queue;
use super::HostError;
use ferrofab_nvmeof_wire::spec::identify::{
    decode_discovery_header, DiscoveryEntry, DISC_RECORD_LEN,
};
use ferrofab_nvmeof_wire::spec::{log, DISCOVERY_NQN};

/// Chunk size of log page reads (libnvme reads in 4 KiB pieces, and
/// controllers must honour the offset).
const CHUNK: usize = 4096;
/// Attempts to get a consistent log while it keeps changing.
const MAX_ATTEMPTS: usize = 10;
/// More records than any sane discovery controller has; bounds memory.
const MAX_RECORDS: u64 = 65536;

/// Discover the subsystems offered by the discovery controller at `addr`
/// (`host:port`, usually port 8009).
pub fn discover(addr: &str, identity: &HostIdentity) -> Result<Vec<DiscoveryEntry>, HostError> {
    discover_with(&ConnectOptions::new(addr, DISCOVERY_NQN, identity.clone()))
}

/// Like [`discover`], with explicit options (digests, timeouts). The
/// subsystem NQN is forced to the discovery NQN and KATO to 0.
pub fn discover_with(opts: &ConnectOptions) -> Result<Vec<DiscoveryEntry>, HostError> {
    let mut opts = opts.clone();
    opts.subnqn = DISCOVERY_NQN.to_string();
    opts.kato = Duration::ZERO;
    let _span = tracing::info_span!("discover", addr = %opts.addr).entered();
    let ctx = Ctx::from_opts(&opts);
    let (admin, _cntlid, _cap, _ctrl) = assoc::open_admin(&opts, &ctx, 0)?;
    let result = read_discovery_log(&admin, &ctx);
    if let Err(e) = assoc::shutdown_controller(&admin, &ctx, opts.shutdown_timeout) {
        tracing::debug!(error = %e, "discovery controller shutdown");
    }
    admin.close();
    result
}

fn read_discovery_log(q: &Arc<Queue>, ctx: &Ctx) -> Result<Vec<DiscoveryEntry>, HostError> {
    let mut last_genctr = None;
    for _ in 0..MAX_ATTEMPTS {
        let (_, hdr) = exec(
            q,
            cmd::get_log_page(log::DISCOVERY, DISC_RECORD_LEN, 0, true),
            ctx,
        )?;
        let (genctr, numrec) = decode_discovery_header(&hdr);
        if numrec > MAX_RECORDS {
            return Err(HostError::Protocol {
                addr: ctx.addr.clone(),
                qid: 0,
                why: format!("discovery log claims {numrec} records"),
            });
        }
        let total = DISC_RECORD_LEN * (1 + numrec as usize);
        let mut page = Vec::with_capacity(total);
        while page.len() < total {
            let n = (total - page.len()).min(CHUNK);
            let c = cmd::get_log_page(log::DISCOVERY, n, page.len() as u64, false);
            let (_, data) = exec(q, c, ctx)?;
            page.extend_from_slice(&data);
        }
        let (genctr2, numrec2) = decode_discovery_header(&page);
        if genctr2 == genctr && numrec2 == numrec {
            return Ok(page[DISC_RECORD_LEN..]
                .chunks_exact(DISC_RECORD_LEN)
                .map(DiscoveryEntry::decode)
                .collect());
        }
        tracing::debug!(
            genctr,
            genctr2,
            "discovery log changed while reading; retrying"
        );
        last_genctr = Some(genctr2);
    }
    Err(HostError::Protocol {
        addr: ctx.addr.clone(),
        qid: 0,
        why: format!(
            "discovery log kept changing (generation {last_genctr:?}) over {MAX_ATTEMPTS} attempts"
        ),
    })
}
