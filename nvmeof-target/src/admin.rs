//! Admin commands: Identify, Get Log Page, Set/Get Features, Asynchronous
//! Event Request, Keep Alive and Abort.
//!
//! Every length a command carries is checked before anything is sized from
//! it (see [`Conn::check_admin_transfer`]): the command's own fields (NUMD,
//! CNS, FID) define how many bytes it moves; more than MDTS is Invalid
//! Field in Command, as for Read and Write, and an SGL that disagrees is
//! Data SGL Length Invalid, which is what Linux nvmet answers on fabrics.
//! Only then is a page built, and pages are built at their real size.

use ferrofab_nvmeof_wire::spec::identify::{
    cntrltype, encode_discovery_log, encode_ns_descriptors, encode_ns_list, IdentifyController,
    IdentifyNamespace, IDENTIFY_LEN,
};
use ferrofab_nvmeof_wire::spec::status::Status;
use ferrofab_nvmeof_wire::spec::{admin, aen, cns, feature, log};
use ferrofab_nvmeof_wire::wire::Sqe;

use super::conn::Conn;
use super::features::{FeatureValues, COMPOSITE_TEMP_K, WCTEMP_K};
use super::registry::controller::Controller;

/// The broadcast namespace ID.
const NSID_ALL: u32 = 0xFFFF_FFFF;
/// AERL: four asynchronous event requests may be outstanding (0-based).
const AERL: u8 = 3;
/// Keep-alive granularity advertised in KAS, in 100 ms units.
const KAS: u16 = 10;
/// Critical temperature (CCTEMP).
const CCTEMP_K: u16 = 358;
/// The fields of the Arbitration value: HPW, MPW, LPW and AB.
const ARBITRATION_MASK: u32 = 0xFFFF_FF07;
/// Power Management: Workload Hint (bits 7:5) and Power State (4:0).
const PM_WORKLOAD_HINT_MASK: u32 = 0b111 << 5;
const PM_POWER_STATE_MASK: u32 = 0x1F;
/// Error Recovery: TLER (bits 15:0) and DULBE (bit 16).
const ER_TLER_MASK: u32 = 0xFFFF;
const ER_DULBE: u32 = 1 << 16;
/// Temperature Threshold selectors: TMPSEL 0 is the composite
/// temperature, the only sensor reported; Fh (Set only) means every
/// sensor. THSEL 0 is the over-, 1 the under-temperature threshold.
const TMPSEL_COMPOSITE: u32 = 0;
const TMPSEL_ALL: u32 = 0xF;
const THSEL_OVER: u32 = 0;
const THSEL_UNDER: u32 = 1;

impl Conn {
    /// `data` is in-capsule host-to-controller data; no admin command
    /// served here takes any, so it is only checked to be absent.
    pub(crate) fn admin_command(&mut self, sqe: Sqe, data: Option<&[u8]>) {
        let Some(ctrl) = self.queue.as_ref().map(|q| q.ctrl.clone()) else {
            return;
        };
        if !ctrl.is_ready() && sqe.opcode != admin::KEEP_ALIVE {
            // Only fabrics commands work before CC.EN; Identify and the rest
            // need an enabled controller.
            self.complete(sqe.cid, Status::COMMAND_SEQUENCE_ERROR, 0);
            return;
        }
        if let Err(status) = self.check_admin_transfer(&sqe, data) {
            self.target.count_length_refusal();
            tracing::debug!(
                cid = sqe.cid,
                opcode = sqe.opcode,
                sgl_length = sqe.sgl.length,
                status = %status,
                "admin command refused: transfer length"
            );
            self.complete(sqe.cid, status, 0);
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

    /// Check the data a command moves before anything is sized from it:
    /// none from the host, at most MDTS to it, and an SGL exactly as long
    /// as the command's own fields say.
    fn check_admin_transfer(&self, sqe: &Sqe, data: Option<&[u8]>) -> Result<(), Status> {
        if data.is_some_and(|d| !d.is_empty()) {
            return Err(Status::INVALID_FIELD);
        }
        let Some(want) = admin_transfer_len(sqe)? else {
            return Ok(());
        };
        if want > u64::from(self.target.opts.mdts_bytes) {
            return Err(Status::INVALID_FIELD);
        }
        if u64::from(sqe.sgl.length) != want {
            return Err(Status::DATA_SGL_LENGTH_INVALID);
        }
        Ok(())
    }

    fn identify(&mut self, sqe: &Sqe, ctrl: &Controller) {
        let cns_value = (sqe.cdw10 & 0xFF) as u8;
        // FFFFFFFFh (all namespaces) needs namespace management for CNS
        // 00h, and FFFFFFFEh/FFFFFFFFh leave no ID above them for CNS 02h.
        let bad_nsid = match cns_value {
            cns::NAMESPACE => sqe.nsid == NSID_ALL,
            cns::ACTIVE_NS_LIST => sqe.nsid >= NSID_ALL - 1,
            _ => false,
        };
        if bad_nsid && !ctrl.is_discovery() {
            self.complete(sqe.cid, Status::INVALID_NAMESPACE, 0);
            return;
        }
        let page = match (cns_value, ctrl.subsystem()) {
            (cns::CONTROLLER, _) => Some(self.identify_controller(ctrl).encode()),
            (cns::NAMESPACE, Some(subsys)) => Some(match subsys.namespace(sqe.nsid) {
                Some(ns) => identify_namespace(&ns, ctrl.write_protected()).encode(),
                // An inactive namespace reads as all zeroes.
                None => vec![0; IDENTIFY_LEN],
            }),
            (cns::ACTIVE_NS_LIST, Some(subsys)) => Some(encode_ns_list(subsys.nsids(), sqe.nsid)),
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
                ferrofab_nvmeof_wire::spec::DISCOVERY_NQN.to_string(),
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
            // A 128-bit Host Identifier (the one given at Connect).
            ctratt: 1,
            aerl: AERL,
            // One firmware slot, read-only.
            frmw: 0b11,
            // Log pages support the extended offset (LPO).
            lpa: 1 << 2,
            // One power state, 0.
            npss: 0,
            wctemp: WCTEMP_K,
            cctemp: CCTEMP_K,
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

    /// The length was checked against the SGL and MDTS before this runs
    /// (see [`Conn::check_admin_transfer`]), so nothing here is sized by
    /// NUMD beyond that bound.
    fn get_log_page(&mut self, sqe: &Sqe, ctrl: &Controller) {
        let lid = (sqe.cdw10 & 0xFF) as u8;
        let rae = sqe.cdw10 & (1 << 15) != 0;
        let len = usize::try_from(log_page_len(sqe)).unwrap_or(usize::MAX);
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
            (log::FIRMWARE_SLOT, false) => Some(firmware_slot_log()),
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
        if ctrl.state().features.temperature_warning() {
            page[0] |= 1 << 1;
        }
        page[1..3].copy_from_slice(&COMPOSITE_TEMP_K.to_le_bytes());
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
            feature::ARBITRATION
            | feature::POWER_MANAGEMENT
            | feature::TEMPERATURE_THRESHOLD
            | feature::ERROR_RECOVERY => {
                let mut st = ctrl.state();
                set_stored_feature(&mut st.features, fid, value).map(|()| 0)
            }
            // A fabrics host gives its identifier at Connect and may not
            // change it afterwards.
            feature::HOST_IDENTIFIER => Err(Status::COMMAND_SEQUENCE_ERROR),
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
            feature::ARBITRATION
            | feature::POWER_MANAGEMENT
            | feature::TEMPERATURE_THRESHOLD
            | feature::ERROR_RECOVERY => match get_stored_feature(&st.features, fid, sqe.cdw11) {
                Ok(v) => Some(u64::from(v)),
                Err(status) => {
                    drop(st);
                    self.complete(sqe.cid, status, 0);
                    return;
                }
            },
            feature::HOST_IDENTIFIER => {
                // EXHID and the 16-byte length were checked up front.
                drop(st);
                let hostid = ctrl.hostid;
                self.send_to_host(sqe, &hostid, 0);
                return;
            }
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

/// How many bytes an admin command moves, as its own fields define it;
/// `None` for opcodes not served (they fail as Invalid Opcode). Get
/// Features Host Identifier without EXHID is refused here: a fabrics
/// controller only has the 128-bit identifier.
fn admin_transfer_len(sqe: &Sqe) -> Result<Option<u64>, Status> {
    let len = match sqe.opcode {
        admin::IDENTIFY => IDENTIFY_LEN as u64,
        admin::GET_LOG_PAGE => log_page_len(sqe),
        admin::GET_FEATURES if (sqe.cdw10 & 0xFF) as u8 == feature::HOST_IDENTIFIER => {
            if sqe.cdw11 & feature::HOST_ID_EXHID == 0 {
                return Err(Status::INVALID_FIELD);
            }
            feature::HOST_ID_LEN as u64
        }
        admin::GET_FEATURES
        | admin::SET_FEATURES
        | admin::ASYNC_EVENT_REQUEST
        | admin::KEEP_ALIVE
        | admin::ABORT => 0,
        _ => return Ok(None),
    };
    Ok(Some(len))
}

/// Get Log Page length in bytes: NUMD (NUMDU:NUMDL, 0-based dwords) can
/// ask for up to 16 GiB, hence u64.
fn log_page_len(sqe: &Sqe) -> u64 {
    let numd = (u64::from(sqe.cdw11 & 0xFFFF) << 16) | u64::from(sqe.cdw10 >> 16);
    (numd + 1) * 4
}

/// Firmware Slot Information: slot 1 is active and holds this build.
fn firmware_slot_log() -> Vec<u8> {
    let mut page = vec![0u8; log::FIRMWARE_SLOT_LEN];
    page[0] = 1; // AFI: running from slot 1
    ferrofab_nvmeof_wire::spec::put_ascii_padded(&mut page[8..16], super::FIRMWARE_REVISION);
    page
}

/// Set Features for the stored features. Values outside what the
/// controller has are Invalid Field: a power state other than 0 (NPSS is
/// 0), DULBE (not supported by any namespace), a sensor other than the
/// composite one, a reserved threshold type.
fn set_stored_feature(f: &mut FeatureValues, fid: u8, value: u32) -> Result<(), Status> {
    match fid {
        feature::ARBITRATION => f.arbitration = value & ARBITRATION_MASK,
        feature::POWER_MANAGEMENT => {
            if value & PM_POWER_STATE_MASK != 0 {
                return Err(Status::INVALID_FIELD);
            }
            f.power_management = value & PM_WORKLOAD_HINT_MASK;
        }
        feature::TEMPERATURE_THRESHOLD => {
            let (tmpth, tmpsel, thsel) = temperature_fields(value);
            if tmpsel != TMPSEL_COMPOSITE && tmpsel != TMPSEL_ALL {
                return Err(Status::INVALID_FIELD);
            }
            match thsel {
                THSEL_OVER => f.temp_over = tmpth,
                THSEL_UNDER => f.temp_under = tmpth,
                _ => return Err(Status::INVALID_FIELD),
            }
        }
        feature::ERROR_RECOVERY => {
            if value & ER_DULBE != 0 {
                return Err(Status::INVALID_FIELD);
            }
            f.error_recovery = value & ER_TLER_MASK;
        }
        _ => return Err(Status::INVALID_FIELD),
    }
    Ok(())
}

/// Get Features for the stored features; `cdw11` selects the sensor and
/// threshold type for Temperature Threshold.
fn get_stored_feature(f: &FeatureValues, fid: u8, cdw11: u32) -> Result<u32, Status> {
    Ok(match fid {
        feature::ARBITRATION => f.arbitration,
        feature::POWER_MANAGEMENT => f.power_management,
        feature::TEMPERATURE_THRESHOLD => {
            let (_, tmpsel, thsel) = temperature_fields(cdw11);
            let tmpth = match (tmpsel, thsel) {
                (TMPSEL_COMPOSITE, THSEL_OVER) => f.temp_over,
                (TMPSEL_COMPOSITE, THSEL_UNDER) => f.temp_under,
                _ => return Err(Status::INVALID_FIELD),
            };
            u32::from(tmpth) | (tmpsel << 16) | (thsel << 20)
        }
        feature::ERROR_RECOVERY => f.error_recovery,
        _ => return Err(Status::INVALID_FIELD),
    })
}

/// TMPTH (bits 15:0), TMPSEL (19:16) and THSEL (21:20).
fn temperature_fields(v: u32) -> (u16, u32, u32) {
    ((v & 0xFFFF) as u16, (v >> 16) & 0xF, (v >> 20) & 0x3)
}

fn queues_dw0(n: u16) -> u64 {
    let v = u64::from(n.saturating_sub(1));
    v | (v << 16)
}

/// `write_protected`: the asking host may only read (NSATTR bit 0).
pub(crate) fn identify_namespace(
    ns: &super::registry::Namespace,
    write_protected: bool,
) -> IdentifyNamespace {
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
        nsattr: u8::from(write_protected),
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
/// beyond the page is an error. `len` was bounded by MDTS before this is
/// called; only the part within the page is copied.
fn log_slice(page: &[u8], offset: u64, len: usize) -> Option<Vec<u8>> {
    let offset = usize::try_from(offset).ok()?;
    let rest = page.get(offset..)?;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&rest[..rest.len().min(len)]);
    out.resize(len, 0);
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
    fn log_page_length_is_numd_plus_one_dwords() {
        let sqe = |cdw10: u32, cdw11: u32| Sqe {
            cdw10,
            cdw11,
            ..Default::default()
        };
        assert_eq!(log_page_len(&sqe(0x02 | (127 << 16), 0)), 512);
        assert_eq!(log_page_len(&sqe(0xFFFF_0002, 0xFFFF)), 16 << 30);
    }

    #[test]
    fn stored_features_read_back_what_was_set() {
        let mut f = FeatureValues::default();
        assert_eq!(get_stored_feature(&f, feature::ARBITRATION, 0), Ok(0b111));
        set_stored_feature(&mut f, feature::ARBITRATION, 0x0302_01F5).unwrap();
        // Reserved bits 7:3 are dropped.
        assert_eq!(
            get_stored_feature(&f, feature::ARBITRATION, 0),
            Ok(0x0302_0105)
        );

        assert_eq!(get_stored_feature(&f, feature::POWER_MANAGEMENT, 0), Ok(0));
        set_stored_feature(&mut f, feature::POWER_MANAGEMENT, 2 << 5).unwrap();
        assert_eq!(
            get_stored_feature(&f, feature::POWER_MANAGEMENT, 0),
            Ok(2 << 5)
        );
        // Only power state 0 exists (NPSS 0).
        assert_eq!(
            set_stored_feature(&mut f, feature::POWER_MANAGEMENT, 1),
            Err(Status::INVALID_FIELD)
        );

        set_stored_feature(&mut f, feature::ERROR_RECOVERY, 50).unwrap();
        assert_eq!(get_stored_feature(&f, feature::ERROR_RECOVERY, 0), Ok(50));
        assert_eq!(
            set_stored_feature(&mut f, feature::ERROR_RECOVERY, ER_DULBE),
            Err(Status::INVALID_FIELD)
        );
    }

    #[test]
    fn temperature_thresholds_round_trip_and_raise_the_smart_warning() {
        let mut f = FeatureValues::default();
        let over = |tmpsel: u32| tmpsel << 16;
        let under = (THSEL_UNDER << 20) | (TMPSEL_COMPOSITE << 16);
        assert_eq!(
            get_stored_feature(&f, feature::TEMPERATURE_THRESHOLD, over(0)),
            Ok(u32::from(WCTEMP_K))
        );
        assert_eq!(
            get_stored_feature(&f, feature::TEMPERATURE_THRESHOLD, under),
            Ok(under)
        );
        assert!(!f.temperature_warning());
        set_stored_feature(&mut f, feature::TEMPERATURE_THRESHOLD, 350).unwrap();
        set_stored_feature(&mut f, feature::TEMPERATURE_THRESHOLD, under | 273).unwrap();
        assert_eq!(
            get_stored_feature(&f, feature::TEMPERATURE_THRESHOLD, 0),
            Ok(350)
        );
        assert_eq!(
            get_stored_feature(&f, feature::TEMPERATURE_THRESHOLD, under),
            Ok(under | 273)
        );
        // "All sensors" sets the composite one.
        set_stored_feature(&mut f, feature::TEMPERATURE_THRESHOLD, over(0xF) | 290).unwrap();
        assert_eq!(f.temp_over, 290);
        assert!(f.temperature_warning(), "300 K is over a 290 K threshold");
        // Sensors 1-8 are not reported; THSEL 2 and 3 are reserved.
        for bad in [over(1) | 300, over(8), (2 << 20) | 300, 3 << 20] {
            assert_eq!(
                set_stored_feature(&mut f, feature::TEMPERATURE_THRESHOLD, bad),
                Err(Status::INVALID_FIELD),
                "{bad:#x}"
            );
        }
        assert_eq!(
            get_stored_feature(&f, feature::TEMPERATURE_THRESHOLD, over(1)),
            Err(Status::INVALID_FIELD)
        );
    }

    #[test]
    fn firmware_slot_log_reports_slot_one_active() {
        let page = firmware_slot_log();
        assert_eq!(page.len(), 512);
        assert_eq!(page[0], 1, "AFI");
        assert_eq!(
            ferrofab_nvmeof_wire::spec::get_ascii_padded(&page[8..16]),
            super::super::FIRMWARE_REVISION
        );
        assert!(page[16..].iter().all(|&b| b == 0), "slots 2-7 empty");
    }

    #[test]
    fn queue_counts_are_zero_based() {
        assert_eq!(queues_dw0(2), 0x0001_0001);
        assert_eq!(queues_dw0(0), 0);
    }
}
