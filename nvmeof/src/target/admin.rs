//! Admin commands: Identify, Get Log Page, Set/Get Features, Asynchronous
//! Event Request, Keep Alive and Abort.

use crate::spec::identify::{
    cntrltype, encode_discovery_log, encode_ns_descriptors, encode_ns_list, IdentifyController,
    IdentifyNamespace,
};
use crate::spec::status::Status;
use crate::spec::{admin, aen, cns, feature, log};
use crate::wire::Sqe;

use super::conn::Conn;
use super::controller::Controller;

/// AERL: four asynchronous event requests may be outstanding (0-based).
const AERL: u8 = 3;
/// Keep-alive granularity advertised in KAS, in 100 ms units.
const KAS: u16 = 10;

impl Conn {
    /// `_data` is host-to-controller data; no admin command served here
    /// takes any, but the dispatcher hands it over uniformly.
    pub(crate) fn admin_command(&mut self, sqe: Sqe, _data: Option<&[u8]>) {
        let Some(ctrl) = self.queue.as_ref().map(|q| q.ctrl.clone()) else {
            return;
        };
        if !ctrl.is_ready() && sqe.opcode != admin::KEEP_ALIVE {
            // Only fabrics commands work before CC.EN; Identify and the rest
            // need an enabled controller.
            self.complete(sqe.cid, Status::COMMAND_SEQUENCE_ERROR, 0);
            return;
        }
        match sqe.opcode {
            admin::IDENTIFY => self.identify(&sqe, &ctrl),
            admin::GET_LOG_PAGE => self.get_log_page(&sqe, &ctrl),
            admin::SET_FEATURES => self.set_features(&sqe, &ctrl),
            admin::GET_FEATURES => self.get_features(&sqe, &ctrl),
            admin::ASYNC_EVENT_REQUEST => self.async_event_request(&sqe, &ctrl),
            admin::KEEP_ALIVE => self.complete(sqe.cid, Status::SUCCESS, 0),
            // Commands run to completion as they arrive, so by the time an
            // Abort is seen its target is done: report "not aborted".
            admin::ABORT => self.complete(sqe.cid, Status::SUCCESS, 1),
            _ => self.complete(sqe.cid, Status::INVALID_OPCODE, 0),
        }
    }

    fn identify(&mut self, sqe: &Sqe, ctrl: &Controller) {
        let cns_value = (sqe.cdw10 & 0xFF) as u8;
        let page = match (cns_value, ctrl.subsystem()) {
            (cns::CONTROLLER, _) => Some(self.identify_controller(ctrl).encode()),
            (cns::NAMESPACE, Some(subsys)) => Some(match subsys.namespace(sqe.nsid) {
                Some(ns) => identify_namespace(&ns).encode(),
                // An inactive namespace reads as all zeroes.
                None => vec![0; crate::spec::identify::IDENTIFY_LEN],
            }),
            (cns::ACTIVE_NS_LIST, Some(subsys)) if sqe.nsid < 0xFFFF_FFFE => {
                Some(encode_ns_list(subsys.nsids(), sqe.nsid))
            }
            (cns::NS_ID_DESCRIPTORS, Some(subsys)) => subsys
                .namespace(sqe.nsid)
                .map(|ns| encode_ns_descriptors(&ns.nguid, &ns.uuid)),
            _ => None,
        };
        match page {
            Some(page) => self.send_to_host(sqe, &page, 0),
            None if cns_value == cns::NS_ID_DESCRIPTORS => {
                self.complete(sqe.cid, Status::INVALID_NAMESPACE, 0)
            }
            None => self.complete(sqe.cid, Status::INVALID_FIELD, 0),
        }
    }

    fn identify_controller(&self, ctrl: &Controller) -> IdentifyController {
        let opts = &self.target.opts;
        let (serial, model, subnqn, nn, oncs, oaes, kind) = match ctrl.subsystem() {
            Some(s) => (
                s.serial.clone(),
                s.model.clone(),
                s.nqn.clone(),
                opts.max_namespaces,
                // Dataset Management and Write Zeroes.
                (1 << 2) | (1 << 3),
                aen::CFG_NS_ATTR,
                cntrltype::IO,
            ),
            None => (
                "ferrofab-discovery".to_string(),
                "ferrofab discovery".to_string(),
                crate::spec::DISCOVERY_NQN.to_string(),
                0,
                0,
                aen::CFG_DISCOVERY,
                cntrltype::DISCOVERY,
            ),
        };
        IdentifyController {
            vid: 0,
            ssvid: 0,
            serial,
            model,
            firmware: super::FIRMWARE_REVISION.to_string(),
            // Multi-port, multi-controller subsystem; no ANA.
            cmic: 0b011,
            mdts: opts.mdts_field(),
            cntlid: ctrl.cntlid,
            ver: super::NVME_VERSION,
            oaes,
            cntrltype: kind,
            aerl: AERL,
            // Log pages support the extended offset (LPO).
            lpa: 1 << 2,
            kas: KAS,
            sqes: 0x66,
            cqes: 0x44,
            maxcmd: opts.queue_depth,
            nn,
            oncs,
            vwc: 1,
            // SGLs supported; in-capsule data at an offset.
            sgls: 1 | (1 << 20),
            subnqn,
            ioccsz: ((64 + opts.in_capsule_data) / 16),
            iorcsz: 1,
            icdoff: 0,
            fcatt: 0,
            msdbd: 1,
            ..Default::default()
        }
    }

    fn get_log_page(&mut self, sqe: &Sqe, ctrl: &Controller) {
        let lid = (sqe.cdw10 & 0xFF) as u8;
        let rae = sqe.cdw10 & (1 << 15) != 0;
        let numd = ((u64::from(sqe.cdw11 & 0xFFFF) << 16) | u64::from(sqe.cdw10 >> 16)) + 1;
        let len = (numd * 4) as usize;
        let lpo = u64::from(sqe.cdw12) | (u64::from(sqe.cdw13) << 32);
        if lpo % 4 != 0 {
            self.complete(sqe.cid, Status::INVALID_FIELD, 0);
            return;
        }
        let page = match (lid, ctrl.is_discovery()) {
            (log::DISCOVERY, true) => Some(self.discovery_log(ctrl, rae)),
            // Nothing is logged: one empty entry (ELPE is 0).
            (log::ERROR_INFORMATION, _) => Some(vec![0; log::ERROR_ENTRY_LEN]),
            (log::SMART_HEALTH, false) => Some(self.smart_log(ctrl)),
            (log::CHANGED_NS_LIST, false) => Some(changed_ns_log(ctrl, rae)),
            _ => None,
        };
        let Some(page) = page else {
            self.complete(sqe.cid, Status::INVALID_LOG_PAGE, 0);
            return;
        };
        let Some(slice) = log_slice(&page, lpo, len) else {
            self.complete(sqe.cid, Status::INVALID_FIELD, 0);
            return;
        };
        self.send_to_host(sqe, &slice, 0);
    }

    fn discovery_log(&self, ctrl: &Controller, rae: bool) -> Vec<u8> {
        let (genctr, entries) = self.target.discovery_entries(&ctrl.hostnqn, self.local);
        if !rae {
            ctrl.state().disc_event_masked = false;
        }
        encode_discovery_log(genctr, &entries)
    }

    /// SMART / Health Information: the counters a host's `nvme smart-log`
    /// shows, summed over the subsystem's namespaces.
    fn smart_log(&self, ctrl: &Controller) -> Vec<u8> {
        let mut page = vec![0u8; log::SMART_LEN];
        let (mut rd_bytes, mut wr_bytes, mut reads, mut writes) = (0u64, 0u64, 0u64, 0u64);
        if let Some(subsys) = ctrl.subsystem() {
            for ns in subsys.namespaces() {
                let s = ns.stats.snapshot();
                rd_bytes += s.read_bytes;
                wr_bytes += s.write_bytes;
                reads += s.reads;
                writes += s.writes;
            }
        }
        // Temperature in Kelvin: report a plausible 300 K rather than 0.
        page[1..3].copy_from_slice(&300u16.to_le_bytes());
        page[3] = 100; // available spare %
        page[4] = 10; // available spare threshold %
                      // Data units are thousands of 512-byte units, rounded up.
        let units = |bytes: u64| bytes.div_ceil(512_000);
        page[32..40].copy_from_slice(&units(rd_bytes).to_le_bytes());
        page[48..56].copy_from_slice(&units(wr_bytes).to_le_bytes());
        page[64..72].copy_from_slice(&reads.to_le_bytes());
        page[80..88].copy_from_slice(&writes.to_le_bytes());
        page
    }

    fn set_features(&mut self, sqe: &Sqe, ctrl: &Controller) {
        let fid = (sqe.cdw10 & 0xFF) as u8;
        if sqe.cdw10 & (1 << 31) != 0 {
            self.complete(sqe.cid, Status::FEATURE_NOT_SAVEABLE, 0);
            return;
        }
        let value = sqe.cdw11;
        let result = match fid {
            feature::NUMBER_OF_QUEUES => self.set_number_of_queues(ctrl, value),
            feature::ASYNC_EVENT_CONFIG => {
                ctrl.state().aec = value & (aen::CFG_NS_ATTR | aen::CFG_DISCOVERY);
                Ok(0)
            }
            feature::KEEP_ALIVE_TIMER => {
                ctrl.set_kato_ms(value);
                Ok(0)
            }
            feature::VOLATILE_WRITE_CACHE => {
                ctrl.state().volatile_write_cache = value & 1 != 0;
                Ok(0)
            }
            _ => Err(Status::INVALID_FIELD),
        };
        match result {
            Ok(dw0) => self.complete(sqe.cid, Status::SUCCESS, dw0),
            Err(status) => self.complete(sqe.cid, status, 0),
        }
    }

    fn set_number_of_queues(&self, ctrl: &Controller, value: u32) -> Result<u64, Status> {
        let nsqr = value & 0xFFFF;
        let ncqr = value >> 16;
        if nsqr == 0xFFFF || ncqr == 0xFFFF || ctrl.is_discovery() {
            return Err(Status::INVALID_FIELD);
        }
        let wanted = nsqr.max(ncqr) + 1;
        let granted = wanted.min(u32::from(self.target.opts.max_io_queues)) as u16;
        ctrl.state().io_queues_granted = granted;
        Ok(queues_dw0(granted))
    }

    fn get_features(&mut self, sqe: &Sqe, ctrl: &Controller) {
        let fid = (sqe.cdw10 & 0xFF) as u8;
        let st = ctrl.state();
        let value = match fid {
            feature::NUMBER_OF_QUEUES if !ctrl.is_discovery() => {
                let n = if st.io_queues_granted == 0 {
                    self.target.opts.max_io_queues
                } else {
                    st.io_queues_granted
                };
                Some(queues_dw0(n))
            }
            feature::ASYNC_EVENT_CONFIG => Some(u64::from(st.aec)),
            feature::KEEP_ALIVE_TIMER => Some(u64::from(ctrl.kato_ms())),
            feature::VOLATILE_WRITE_CACHE => Some(u64::from(st.volatile_write_cache)),
            _ => None,
        };
        drop(st);
        match value {
            Some(v) => self.complete(sqe.cid, Status::SUCCESS, v),
            None => self.complete(sqe.cid, Status::INVALID_FIELD, 0),
        }
    }

    /// An AER stays outstanding until an event completes it. If an event
    /// is already waiting, it completes at once.
    fn async_event_request(&mut self, sqe: &Sqe, ctrl: &Controller) {
        let mut st = ctrl.state();
        if let Some(event) = st.events.pop_front() {
            drop(st);
            self.complete(sqe.cid, Status::SUCCESS, u64::from(event));
            return;
        }
        if st.aers.len() > usize::from(AERL) {
            drop(st);
            self.complete(sqe.cid, Status::AER_LIMIT_EXCEEDED, 0);
            return;
        }
        st.aers.push(sqe.cid);
    }
}

fn queues_dw0(n: u16) -> u64 {
    let v = u64::from(n.saturating_sub(1));
    v | (v << 16)
}

pub(crate) fn identify_namespace(ns: &super::registry::Namespace) -> IdentifyNamespace {
    let nblocks = ns.nblocks();
    let info = ns.backend.info();
    IdentifyNamespace {
        nsze: nblocks,
        ncap: nblocks,
        nuse: nblocks,
        // Thin provisioning.
        nsfeat: 1,
        // Shared: several controllers may attach it.
        nmic: 1,
        // Deallocated blocks read as zeroes (when the backend guarantees
        // it), and Write Zeroes may deallocate.
        dlfeat: if info.deallocate_reads_zero {
            0b1001
        } else {
            0b1000
        },
        nguid: ns.nguid,
        eui64: [0; 8],
        lbads: ns.block_shift() as u8,
    }
}

/// The Changed Namespace List. Reading it without RAE clears it and
/// unmasks further namespace events.
fn changed_ns_log(ctrl: &Controller, rae: bool) -> Vec<u8> {
    let mut st = ctrl.state();
    let mut page = vec![0u8; log::CHANGED_NS_LIST_LEN];
    for (i, nsid) in st
        .changed_ns
        .iter()
        .take(log::CHANGED_NS_LIST_LEN / 4)
        .enumerate()
    {
        page[i * 4..i * 4 + 4].copy_from_slice(&nsid.to_le_bytes());
    }
    if !rae {
        st.changed_ns.clear();
        st.ns_event_masked = false;
    }
    page
}

/// `len` bytes of `page` from `offset`, zero-padded past its end. An offset
/// beyond the page is an error.
fn log_slice(page: &[u8], offset: u64, len: usize) -> Option<Vec<u8>> {
    let offset = usize::try_from(offset).ok()?;
    if offset > page.len() {
        return None;
    }
    let mut out = vec![0u8; len];
    let avail = (page.len() - offset).min(len);
    out[..avail].copy_from_slice(&page[offset..offset + avail]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_slices() {
        let page: Vec<u8> = (0..10).collect();
        assert_eq!(log_slice(&page, 8, 4), Some(vec![8, 9, 0, 0]));
        assert_eq!(log_slice(&page, 10, 2), Some(vec![0, 0]));
        assert_eq!(log_slice(&page, 11, 2), None);
    }

    #[test]
    fn queue_counts_are_zero_based() {
        assert_eq!(queues_dw0(2), 0x0001_0001);
        assert_eq!(queues_dw0(0), 0);
    }
}
