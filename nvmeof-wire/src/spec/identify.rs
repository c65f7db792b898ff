//! Identify data structures and the discovery log page, encoded and decoded
//! at the byte offsets of the specifications.
//!
//! The target encodes them; the initiator decodes them. Keeping both
//! directions in one place means a test can round-trip every field.

use super::{get_ascii_padded, get_str_nul, put_ascii_padded, put_str_nul};
use crate::wire::{get_u16, get_u32, get_u64};

/// Size of every Identify data structure.
pub const IDENTIFY_LEN: usize = 4096;

/// Controller types (CNTRLTYPE).
pub mod cntrltype {
    pub const IO: u8 = 1;
    pub const DISCOVERY: u8 = 2;
}

/// The Identify Controller fields ferrofab sets or reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentifyController {
    pub vid: u16,
    pub ssvid: u16,
    pub serial: String,
    pub model: String,
    pub firmware: String,
    pub cmic: u8,
    /// Maximum data transfer size as a power of two of the minimum page
    /// size; 0 means no limit.
    pub mdts: u8,
    pub cntlid: u16,
    pub ver: u32,
    pub rtd3e: u32,
    pub oaes: u32,
    pub ctratt: u32,
    pub cntrltype: u8,
    pub oacs: u16,
    pub acl: u8,
    /// Asynchronous event request limit, 0-based.
    pub aerl: u8,
    /// Firmware updates: bit 0 slot 1 read-only, bits 3:1 number of slots.
    pub frmw: u8,
    pub lpa: u8,
    pub elpe: u8,
    /// Number of power states supported, 0-based.
    pub npss: u8,
    /// Warning and critical composite temperature thresholds, in Kelvin.
    pub wctemp: u16,
    pub cctemp: u16,
    /// Keep alive support: granularity in units of 100 ms; 0 means none.
    pub kas: u16,
    pub sqes: u8,
    pub cqes: u8,
    pub maxcmd: u16,
    pub nn: u32,
    pub oncs: u16,
    pub vwc: u8,
    pub sgls: u32,
    pub subnqn: String,
    /// I/O queue command capsule size, in 16-byte units.
    pub ioccsz: u32,
    /// I/O queue response capsule size, in 16-byte units.
    pub iorcsz: u32,
    pub icdoff: u16,
    pub fcatt: u8,
    pub msdbd: u8,
}

impl IdentifyController {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_LEN];
        put16(&mut b, 0, self.vid);
        put16(&mut b, 2, self.ssvid);
        put_ascii_padded(&mut b[4..24], &self.serial);
        put_ascii_padded(&mut b[24..64], &self.model);
        put_ascii_padded(&mut b[64..72], &self.firmware);
        b[72] = 0; // RAB
        b[76] = self.cmic;
        b[77] = self.mdts;
        put16(&mut b, 78, self.cntlid);
        put32(&mut b, 80, self.ver);
        put32(&mut b, 88, self.rtd3e);
        put32(&mut b, 92, self.oaes);
        put32(&mut b, 96, self.ctratt);
        b[111] = self.cntrltype;
        put16(&mut b, 256, self.oacs);
        b[258] = self.acl;
        b[259] = self.aerl;
        b[260] = self.frmw;
        b[261] = self.lpa;
        b[262] = self.elpe;
        b[263] = self.npss;
        put16(&mut b, 266, self.wctemp);
        put16(&mut b, 268, self.cctemp);
        put16(&mut b, 320, self.kas);
        b[512] = self.sqes;
        b[513] = self.cqes;
        put16(&mut b, 514, self.maxcmd);
        put32(&mut b, 516, self.nn);
        put16(&mut b, 520, self.oncs);
        b[525] = self.vwc;
        put32(&mut b, 536, self.sgls);
        put_str_nul(&mut b[768..1024], &self.subnqn);
        put32(&mut b, 1792, self.ioccsz);
        put32(&mut b, 1796, self.iorcsz);
        put16(&mut b, 1800, self.icdoff);
        b[1802] = self.fcatt;
        b[1803] = self.msdbd;
        b
    }

    pub fn decode(b: &[u8]) -> IdentifyController {
        let byte = |at: usize| b.get(at).copied().unwrap_or(0);
        let slice = |from: usize, to: usize| b.get(from..to).unwrap_or(&[]);
        IdentifyController {
            vid: get_u16(b, 0),
            ssvid: get_u16(b, 2),
            serial: get_ascii_padded(slice(4, 24)),
            model: get_ascii_padded(slice(24, 64)),
            firmware: get_ascii_padded(slice(64, 72)),
            cmic: byte(76),
            mdts: byte(77),
            cntlid: get_u16(b, 78),
            ver: get_u32(b, 80),
            rtd3e: get_u32(b, 88),
            oaes: get_u32(b, 92),
            ctratt: get_u32(b, 96),
            cntrltype: byte(111),
            oacs: get_u16(b, 256),
            acl: byte(258),
            aerl: byte(259),
            frmw: byte(260),
            lpa: byte(261),
            elpe: byte(262),
            npss: byte(263),
            wctemp: get_u16(b, 266),
            cctemp: get_u16(b, 268),
            kas: get_u16(b, 320),
            sqes: byte(512),
            cqes: byte(513),
            maxcmd: get_u16(b, 514),
            nn: get_u32(b, 516),
            oncs: get_u16(b, 520),
            vwc: byte(525),
            sgls: get_u32(b, 536),
            subnqn: get_str_nul(slice(768, 1024)),
            ioccsz: get_u32(b, 1792),
            iorcsz: get_u32(b, 1796),
            icdoff: get_u16(b, 1800),
            fcatt: byte(1802),
            msdbd: byte(1803),
        }
    }
}

/// The Identify Namespace fields ferrofab sets or reads. Only LBA format 0
/// is used.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentifyNamespace {
    /// Size in logical blocks.
    pub nsze: u64,
    pub ncap: u64,
    pub nuse: u64,
    pub nsfeat: u8,
    pub nmic: u8,
    pub dlfeat: u8,
    /// Namespace attributes; bit 0: write protected.
    pub nsattr: u8,
    pub nguid: [u8; 16],
    pub eui64: [u8; 8],
    /// log2 of the logical block size of LBA format 0.
    pub lbads: u8,
}

impl IdentifyNamespace {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_LEN];
        put64(&mut b, 0, self.nsze);
        put64(&mut b, 8, self.ncap);
        put64(&mut b, 16, self.nuse);
        b[24] = self.nsfeat;
        b[25] = 0; // NLBAF: one format, 0-based
        b[26] = 0; // FLBAS: format 0
        b[30] = self.nmic;
        b[33] = self.dlfeat;
        b[99] = self.nsattr;
        b[104..120].copy_from_slice(&self.nguid);
        b[120..128].copy_from_slice(&self.eui64);
        // LBA format 0: no metadata, LBADS, best relative performance.
        b[130] = self.lbads;
        b
    }

    pub fn decode(b: &[u8]) -> IdentifyNamespace {
        let mut nguid = [0u8; 16];
        if let Some(s) = b.get(104..120) {
            nguid.copy_from_slice(s);
        }
        let mut eui64 = [0u8; 8];
        if let Some(s) = b.get(120..128) {
            eui64.copy_from_slice(s);
        }
        let flbas = b.get(26).copied().unwrap_or(0) & 0x0F;
        let lbaf_at = 128 + 4 * usize::from(flbas);
        IdentifyNamespace {
            nsze: get_u64(b, 0),
            ncap: get_u64(b, 8),
            nuse: get_u64(b, 16),
            nsfeat: b.get(24).copied().unwrap_or(0),
            nmic: b.get(30).copied().unwrap_or(0),
            dlfeat: b.get(33).copied().unwrap_or(0),
            nsattr: b.get(99).copied().unwrap_or(0),
            nguid,
            eui64,
            lbads: b.get(lbaf_at + 2).copied().unwrap_or(0),
        }
    }

    /// The logical block size in bytes, or 0 if LBADS is out of range.
    pub fn block_size(&self) -> u32 {
        if (9..=16).contains(&self.lbads) {
            1 << self.lbads
        } else {
            0
        }
    }
}

/// Namespace identification descriptor types.
pub mod nidt {
    pub const EUI64: u8 = 1;
    pub const NGUID: u8 = 2;
    pub const UUID: u8 = 3;
    pub const CSI: u8 = 4;
}

/// Encode a namespace identification descriptor list (CNS 03h).
pub fn encode_ns_descriptors(nguid: &[u8; 16], uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = Vec::with_capacity(IDENTIFY_LEN);
    for (t, v) in [
        (nidt::NGUID, &nguid[..]),
        (nidt::UUID, &uuid[..]),
        (nidt::CSI, &[0u8][..]),
    ] {
        b.extend_from_slice(&[t, v.len() as u8, 0, 0]);
        b.extend_from_slice(v);
    }
    b.resize(IDENTIFY_LEN, 0);
    b
}

/// Decode a namespace identification descriptor list into (type, value)
/// pairs, stopping at the first zero-length descriptor.
pub fn decode_ns_descriptors(b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= b.len() {
        let (t, len) = (b[at], usize::from(b[at + 1]));
        if t == 0 || len == 0 || at + 4 + len > b.len() {
            break;
        }
        out.push((t, b[at + 4..at + 4 + len].to_vec()));
        at += 4 + len;
    }
    out
}

/// Encode an active namespace ID list (CNS 02h): IDs above `after`, in
/// increasing order, at most 1024.
pub fn encode_ns_list(nsids: impl IntoIterator<Item = u32>, after: u32) -> Vec<u8> {
    let mut ids: Vec<u32> = nsids.into_iter().filter(|&n| n > after).collect();
    ids.sort_unstable();
    let mut b = vec![0u8; IDENTIFY_LEN];
    for (i, id) in ids.into_iter().take(IDENTIFY_LEN / 4).enumerate() {
        put32(&mut b, i * 4, id);
    }
    b
}

pub fn decode_ns_list(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| get_u32(c, 0))
        .take_while(|&n| n != 0)
        .collect()
}

/// Size of the discovery log page header and of each entry.
pub const DISC_RECORD_LEN: usize = 1024;

/// Discovery log entry subtypes.
pub mod subtype {
    pub const REFERRAL: u8 = 1;
    pub const NVME: u8 = 2;
    pub const CURRENT_DISCOVERY: u8 = 3;
}

/// One discovery log page entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryEntry {
    /// Transport type: 3 = TCP.
    pub trtype: u8,
    /// Address family: 1 = IPv4, 2 = IPv6.
    pub adrfam: u8,
    pub subtype: u8,
    /// Transport requirements; bit 2 = SQ flow control disable supported.
    pub treq: u8,
    pub portid: u16,
    pub cntlid: u16,
    pub asqsz: u16,
    pub trsvcid: String,
    pub subnqn: String,
    pub traddr: String,
}

impl DiscoveryEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + DISC_RECORD_LEN, 0);
        let b = &mut out[start..];
        b[0] = self.trtype;
        b[1] = self.adrfam;
        b[2] = self.subtype;
        b[3] = self.treq;
        put16(b, 4, self.portid);
        put16(b, 6, self.cntlid);
        put16(b, 8, self.asqsz);
        put_str_nul(&mut b[32..64], &self.trsvcid);
        put_str_nul(&mut b[256..512], &self.subnqn);
        put_str_nul(&mut b[512..768], &self.traddr);
        // TSAS for TCP: security type 0 (none).
    }

    pub fn decode(b: &[u8]) -> DiscoveryEntry {
        let byte = |at: usize| b.get(at).copied().unwrap_or(0);
        let slice = |from: usize, to: usize| b.get(from..to).unwrap_or(&[]);
        DiscoveryEntry {
            trtype: byte(0),
            adrfam: byte(1),
            subtype: byte(2),
            treq: byte(3),
            portid: get_u16(b, 4),
            cntlid: get_u16(b, 6),
            asqsz: get_u16(b, 8),
            trsvcid: get_str_nul(slice(32, 64)),
            subnqn: get_str_nul(slice(256, 512)),
            traddr: get_str_nul(slice(512, 768)),
        }
    }
}

/// Encode a whole discovery log page: header then entries.
pub fn encode_discovery_log(genctr: u64, entries: &[DiscoveryEntry]) -> Vec<u8> {
    let mut b = vec![0u8; DISC_RECORD_LEN];
    put64(&mut b, 0, genctr);
    put64(&mut b, 8, entries.len() as u64);
    put16(&mut b, 16, 0); // recfmt
    for e in entries {
        e.encode(&mut b);
    }
    b
}

/// Decode the discovery log header: (genctr, numrec).
pub fn decode_discovery_header(b: &[u8]) -> (u64, u64) {
    (get_u64(b, 0), get_u64(b, 8))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_roundtrip() {
        let c = IdentifyController {
            vid: 0x1b36,
            serial: "ff0001".into(),
            model: "ferrofab".into(),
            firmware: "0.1.0".into(),
            cmic: 3,
            mdts: 8,
            cntlid: 7,
            ver: 0x10300,
            oaes: 1 << 8,
            cntrltype: cntrltype::IO,
            aerl: 3,
            frmw: 3,
            lpa: 4,
            npss: 0,
            wctemp: 343,
            cctemp: 358,
            kas: 10,
            sqes: 0x66,
            cqes: 0x44,
            maxcmd: 128,
            nn: 256,
            oncs: 0xC,
            vwc: 1,
            sgls: 0x10_0001,
            subnqn: "nqn.2026-11.io.ferrofab:x".into(),
            ioccsz: 1028,
            iorcsz: 1,
            ..Default::default()
        };
        let b = c.encode();
        assert_eq!(b.len(), IDENTIFY_LEN);
        assert_eq!(IdentifyController::decode(&b), c);
    }

    #[test]
    fn namespace_roundtrip() {
        let n = IdentifyNamespace {
            nsze: 1000,
            ncap: 1000,
            nuse: 1000,
            nsfeat: 1,
            nmic: 1,
            dlfeat: 9,
            nsattr: 1,
            nguid: [7; 16],
            eui64: [0; 8],
            lbads: 12,
        };
        let d = IdentifyNamespace::decode(&n.encode());
        assert_eq!(d, n);
        assert_eq!(d.block_size(), 4096);
    }

    #[test]
    fn descriptors_and_lists() {
        let b = encode_ns_descriptors(&[1; 16], &[2; 16]);
        let d = decode_ns_descriptors(&b);
        assert_eq!(d[0], (nidt::NGUID, vec![1; 16]));
        assert_eq!(d[1], (nidt::UUID, vec![2; 16]));
        assert_eq!(d[2], (nidt::CSI, vec![0]));
        let l = encode_ns_list([5, 1, 3], 1);
        assert_eq!(decode_ns_list(&l), vec![3, 5]);
    }

    #[test]
    fn discovery_roundtrip() {
        let e = DiscoveryEntry {
            trtype: 3,
            adrfam: 1,
            subtype: subtype::NVME,
            treq: 4,
            portid: 1,
            cntlid: 0xFFFF,
            asqsz: 32,
            trsvcid: "4420".into(),
            subnqn: "nqn.2026-11.io.ferrofab:a".into(),
            traddr: "10.0.2.2".into(),
        };
        let page = encode_discovery_log(5, std::slice::from_ref(&e));
        assert_eq!(page.len(), 2048);
        assert_eq!(decode_discovery_header(&page), (5, 1));
        assert_eq!(DiscoveryEntry::decode(&page[1024..]), e);
    }
}
