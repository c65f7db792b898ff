//! Builders for the commands the initiator sends.
//!
//! Each returns a [`Cmd`]: the submission queue entry without a CID (the
//! queue assigns one), the data that goes to the controller and the number
//! of bytes expected back. Keeping them pure makes every field testable
//! against the specification without a connection.

use uuid::Uuid;

use ferrofab_nvmeof_wire::spec::{admin, cns, fctype, feature, nvm, put_str_nul, CNTLID_DYNAMIC};
use ferrofab_nvmeof_wire::wire::Sqe;

/// PSDT = 01b: the data pointer is an SGL. Fabrics only know SGLs.
pub const PSDT_SGL: u8 = 0x40;

/// Length of the Connect command's data.
pub const CONNECT_DATA_LEN: usize = 1024;

/// One command, ready to be given a CID and sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// Human name for errors and traces.
    pub name: &'static str,
    pub sqe: Sqe,
    /// Host-to-controller data.
    pub data_out: Vec<u8>,
    /// Controller-to-host data length.
    pub data_in_len: usize,
}

impl Cmd {
    fn new(name: &'static str, opcode: u8) -> Cmd {
        Cmd {
            name,
            sqe: Sqe {
                opcode,
                flags: PSDT_SGL,
                ..Default::default()
            },
            data_out: Vec::new(),
            data_in_len: 0,
        }
    }

    fn fabrics(name: &'static str, fctype: u8) -> Cmd {
        let mut c = Cmd::new(name, admin::FABRICS);
        c.sqe.nsid = u32::from(fctype);
        c
    }
}

/// Fabrics Connect for queue `qid` with `sqsize` entries (0-based on the
/// wire), KATO in milliseconds (admin queue only) and the controller ID
/// (`CNTLID_DYNAMIC` for the admin queue, the admin's answer for I/O
/// queues).
pub fn connect(
    qid: u16,
    sqsize: u16,
    kato_ms: u32,
    cntlid: u16,
    hostid: &Uuid,
    subnqn: &str,
    hostnqn: &str,
) -> Cmd {
    let mut c = Cmd::fabrics("Connect", fctype::CONNECT);
    c.sqe.cdw10 = u32::from(qid) << 16; // RECFMT 0
    c.sqe.cdw11 = u32::from(sqsize.saturating_sub(1));
    c.sqe.cdw12 = kato_ms;
    let mut d = vec![0u8; CONNECT_DATA_LEN];
    d[0..16].copy_from_slice(hostid.as_bytes());
    d[16..18].copy_from_slice(&cntlid.to_le_bytes());
    put_str_nul(&mut d[256..512], subnqn);
    put_str_nul(&mut d[512..768], hostnqn);
    c.data_out = d;
    c
}

/// Admin Connect: dynamic controller.
pub fn connect_admin(kato_ms: u32, hostid: &Uuid, subnqn: &str, hostnqn: &str) -> Cmd {
    connect(0, 32, kato_ms, CNTLID_DYNAMIC, hostid, subnqn, hostnqn)
}

/// Property Get of a 4-byte (`wide` false) or 8-byte property.
pub fn property_get(offset: u32, wide: bool) -> Cmd {
    let mut c = Cmd::fabrics("Property Get", fctype::PROPERTY_GET);
    c.sqe.cdw10 = u32::from(wide);
    c.sqe.cdw11 = offset;
    c
}

/// Property Set of a 4-byte property.
pub fn property_set(offset: u32, value: u32) -> Cmd {
    let mut c = Cmd::fabrics("Property Set", fctype::PROPERTY_SET);
    c.sqe.cdw10 = 0;
    c.sqe.cdw11 = offset;
    c.sqe.cdw12 = value;
    c
}

/// Identify with the given CNS for `nsid`; always 4096 bytes.
pub fn identify(cns_value: u8, nsid: u32) -> Cmd {
    let mut c = Cmd::new(
        match cns_value {
            cns::CONTROLLER => "Identify Controller",
            cns::NAMESPACE => "Identify Namespace",
            cns::ACTIVE_NS_LIST => "Identify Active Namespace List",
            cns::NS_ID_DESCRIPTORS => "Identify Namespace ID Descriptors",
            _ => "Identify",
        },
        admin::IDENTIFY,
    );
    c.sqe.nsid = nsid;
    c.sqe.cdw10 = u32::from(cns_value);
    c.data_in_len = ferrofab_nvmeof_wire::spec::identify::IDENTIFY_LEN;
    c
}

/// Get Log Page `lid`, `len` bytes (a multiple of 4) from byte `offset`,
/// with Retain Asynchronous Event `rae`.
pub fn get_log_page(lid: u8, len: usize, offset: u64, rae: bool) -> Cmd {
    let mut c = Cmd::new("Get Log Page", admin::GET_LOG_PAGE);
    let numd = (len / 4).saturating_sub(1) as u32;
    c.sqe.nsid = 0xFFFF_FFFF;
    c.sqe.cdw10 = u32::from(lid) | (u32::from(rae) << 15) | ((numd & 0xFFFF) << 16);
    c.sqe.cdw11 = numd >> 16;
    c.sqe.cdw12 = offset as u32;
    c.sqe.cdw13 = (offset >> 32) as u32;
    c.data_in_len = len;
    c
}

pub fn set_features(fid: u8, cdw11: u32) -> Cmd {
    let mut c = Cmd::new("Set Features", admin::SET_FEATURES);
    c.sqe.cdw10 = u32::from(fid);
    c.sqe.cdw11 = cdw11;
    c
}

/// Set Features Number of Queues asking for `n` submission and completion
/// queues (0-based on the wire).
pub fn set_num_queues(n: u16) -> Cmd {
    let v = u32::from(n.saturating_sub(1));
    set_features(feature::NUMBER_OF_QUEUES, v | (v << 16))
}

pub fn keep_alive() -> Cmd {
    Cmd::new("Keep Alive", admin::KEEP_ALIVE)
}

pub fn async_event_request() -> Cmd {
    Cmd::new("Asynchronous Event Request", admin::ASYNC_EVENT_REQUEST)
}

fn rw(name: &'static str, opcode: u8, nsid: u32, slba: u64, nlb: u32) -> Cmd {
    let mut c = Cmd::new(name, opcode);
    c.sqe.nsid = nsid;
    c.sqe.cdw10 = slba as u32;
    c.sqe.cdw11 = (slba >> 32) as u32;
    c.sqe.cdw12 = nlb.saturating_sub(1) & 0xFFFF;
    c
}

/// Read `nlb` (1..=65536) blocks of `block_size` bytes at `slba`.
pub fn read(nsid: u32, slba: u64, nlb: u32, block_size: u32) -> Cmd {
    let mut c = rw("Read", nvm::READ, nsid, slba, nlb);
    c.data_in_len = nlb as usize * block_size as usize;
    c
}

/// Write `data` (a whole number of blocks) at `slba`.
pub fn write(nsid: u32, slba: u64, nlb: u32, data: Vec<u8>) -> Cmd {
    let mut c = rw("Write", nvm::WRITE, nsid, slba, nlb);
    c.data_out = data;
    c
}

pub fn write_zeroes(nsid: u32, slba: u64, nlb: u32) -> Cmd {
    rw("Write Zeroes", nvm::WRITE_ZEROES, nsid, slba, nlb)
}

pub fn flush(nsid: u32) -> Cmd {
    let mut c = Cmd::new("Flush", nvm::FLUSH);
    c.sqe.nsid = nsid;
    c
}

/// Largest number of ranges in one Dataset Management command.
pub const DSM_MAX_RANGES: usize = 256;

/// Dataset Management with the Deallocate attribute over `(slba, nlb)`
/// ranges (1..=256 of them).
pub fn deallocate(nsid: u32, ranges: &[(u64, u32)]) -> Cmd {
    let mut c = Cmd::new("Dataset Management", nvm::DATASET_MANAGEMENT);
    c.sqe.nsid = nsid;
    c.sqe.cdw10 = (ranges.len().clamp(1, DSM_MAX_RANGES) - 1) as u32;
    c.sqe.cdw11 = 1 << 2; // AD: deallocate
    let mut d = Vec::with_capacity(16 * ranges.len());
    for &(slba, nlb) in ranges.iter().take(DSM_MAX_RANGES) {
        d.extend_from_slice(&0u32.to_le_bytes()); // context attributes
        d.extend_from_slice(&nlb.to_le_bytes());
        d.extend_from_slice(&slba.to_le_bytes());
    }
    c.data_out = d;
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrofab_nvmeof_wire::wire::get_u16;

    #[test]
    fn connect_layout() {
        let id = Uuid::from_bytes([9; 16]);
        let c = connect(
            3,
            128,
            5000,
            7,
            &id,
            "nqn.2026-11.io.ferrofab:s",
            "nqn.2026-11.io.ferrofab:h",
        );
        assert_eq!(c.sqe.opcode, 0x7F);
        assert_eq!(c.sqe.fctype(), 1);
        assert_eq!(c.sqe.flags, 0x40);
        assert_eq!(c.sqe.cdw10 >> 16, 3);
        assert_eq!(c.sqe.cdw11 & 0xFFFF, 127);
        assert_eq!(c.sqe.cdw12, 5000);
        assert_eq!(c.data_out.len(), 1024);
        assert_eq!(&c.data_out[0..16], &[9; 16]);
        assert_eq!(get_u16(&c.data_out, 16), 7);
        assert_eq!(&c.data_out[256..281], b"nqn.2026-11.io.ferrofab:s");
        assert_eq!(c.data_out[281], 0);
        assert_eq!(&c.data_out[512..537], b"nqn.2026-11.io.ferrofab:h");
        let a = connect_admin(0, &id, "s", "h");
        assert_eq!(a.sqe.cdw11, 31);
        assert_eq!(get_u16(&a.data_out, 16), 0xFFFF);
    }

    #[test]
    fn get_log_page_dwords_and_offset() {
        let c = get_log_page(0x70, 4096, 0x1_0000_2000, true);
        assert_eq!(c.sqe.cdw10 & 0xFF, 0x70);
        assert_eq!(c.sqe.cdw10 >> 15 & 1, 1);
        assert_eq!(c.sqe.cdw10 >> 16, 1023);
        assert_eq!(c.sqe.cdw11, 0);
        assert_eq!(c.sqe.cdw12, 0x2000);
        assert_eq!(c.sqe.cdw13, 1);
        assert_eq!(c.data_in_len, 4096);
        let big = get_log_page(0x04, 1 << 20, 0, false);
        assert_eq!((big.sqe.cdw11 << 16) | (big.sqe.cdw10 >> 16), (1 << 18) - 1);
    }

    #[test]
    fn io_commands() {
        let r = read(1, 0x1_2345_6789, 8, 512);
        assert_eq!(r.sqe.slba(), 0x1_2345_6789);
        assert_eq!(r.sqe.nlb(), 8);
        assert_eq!(r.data_in_len, 4096);
        let w = write(1, 5, 1, vec![0; 4096]);
        assert_eq!(w.sqe.opcode, 1);
        assert_eq!(w.sqe.nlb(), 1);
        let z = write_zeroes(2, 9, 65536);
        assert_eq!(z.sqe.cdw12, 0xFFFF);
        let d = deallocate(1, &[(10, 20), (100, 1)]);
        assert_eq!(d.sqe.cdw10, 1);
        assert_eq!(d.sqe.cdw11, 4);
        assert_eq!(d.data_out.len(), 32);
        assert_eq!(ferrofab_nvmeof_wire::wire::get_u32(&d.data_out, 4), 20);
        assert_eq!(ferrofab_nvmeof_wire::wire::get_u64(&d.data_out, 8), 10);
        let q = set_num_queues(4);
        assert_eq!(q.sqe.cdw11, 0x0003_0003);
        let p = property_get(0, true);
        assert_eq!((p.sqe.fctype(), p.sqe.cdw10, p.sqe.cdw11), (4, 1, 0));
    }
}
