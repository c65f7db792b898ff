//! Submission and completion queue entries (NVMe Base specification).
//!
//! A submission queue entry is 64 bytes and a completion queue entry 16.
//! Over a fabric they travel inside CapsuleCmd and CapsuleResp PDUs. Fields
//! are kept as plain dwords so that the same struct serves admin, NVM and
//! fabrics commands; the typed accessors live next to the handlers that need
//! them.

use super::{get_u16, get_u32, get_u64};

/// Size of a submission queue entry.
pub const SQE_LEN: usize = 64;
/// Size of a completion queue entry.
pub const CQE_LEN: usize = 16;

/// SGL descriptor type/subtype byte: Data Block with Offset, used for
/// in-capsule data.
pub const SGL_DATA_BLOCK_OFFSET: u8 = 0x01;
/// SGL descriptor type/subtype byte: Transport SGL Data Block, used when the
/// data moves in separate PDUs (R2T/H2CData, C2HData) or there is none.
pub const SGL_TRANSPORT_DATA_BLOCK: u8 = 0x5A;

/// The SGL data descriptor carried in DPTR (bytes 24..40).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sgl {
    pub address: u64,
    pub length: u32,
    /// Type in bits 7:4, subtype in bits 3:0.
    pub id: u8,
}

/// A submission queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sqe {
    pub opcode: u8,
    /// FUSE in bits 1:0, PSDT in bits 7:6.
    pub flags: u8,
    pub cid: u16,
    /// NSID for admin and NVM commands; for fabrics commands byte 4 is the
    /// fabrics command type (see [`Sqe::fctype`]).
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub mptr: u64,
    pub sgl: Sgl,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
}

impl Sqe {
    /// Decode from exactly [`SQE_LEN`] bytes.
    pub fn decode(b: &[u8; SQE_LEN]) -> Sqe {
        Sqe {
            opcode: b[0],
            flags: b[1],
            cid: get_u16(b, 2),
            nsid: get_u32(b, 4),
            cdw2: get_u32(b, 8),
            cdw3: get_u32(b, 12),
            mptr: get_u64(b, 16),
            sgl: Sgl {
                address: get_u64(b, 24),
                length: get_u32(b, 32),
                id: b[39],
            },
            cdw10: get_u32(b, 40),
            cdw11: get_u32(b, 44),
            cdw12: get_u32(b, 48),
            cdw13: get_u32(b, 52),
            cdw14: get_u32(b, 56),
            cdw15: get_u32(b, 60),
        }
    }

    /// Encode into exactly [`SQE_LEN`] bytes.
    pub fn encode(&self) -> [u8; SQE_LEN] {
        let mut b = [0u8; SQE_LEN];
        b[0] = self.opcode;
        b[1] = self.flags;
        b[2..4].copy_from_slice(&self.cid.to_le_bytes());
        b[4..8].copy_from_slice(&self.nsid.to_le_bytes());
        b[8..12].copy_from_slice(&self.cdw2.to_le_bytes());
        b[12..16].copy_from_slice(&self.cdw3.to_le_bytes());
        b[16..24].copy_from_slice(&self.mptr.to_le_bytes());
        b[24..32].copy_from_slice(&self.sgl.address.to_le_bytes());
        b[32..36].copy_from_slice(&self.sgl.length.to_le_bytes());
        b[39] = self.sgl.id;
        for (i, dw) in [
            self.cdw10, self.cdw11, self.cdw12, self.cdw13, self.cdw14, self.cdw15,
        ]
        .iter()
        .enumerate()
        {
            let at = 40 + i * 4;
            b[at..at + 4].copy_from_slice(&dw.to_le_bytes());
        }
        b
    }

    /// Fabrics command type (byte 4 of a fabrics command).
    pub fn fctype(&self) -> u8 {
        (self.nsid & 0xFF) as u8
    }

    /// Starting LBA of a Read, Write, Write Zeroes or Compare.
    pub fn slba(&self) -> u64 {
        u64::from(self.cdw10) | (u64::from(self.cdw11) << 32)
    }

    /// Number of logical blocks (the 0-based field plus one).
    pub fn nlb(&self) -> u32 {
        (self.cdw12 & 0xFFFF) + 1
    }

    /// Force Unit Access (CDW12 bit 30).
    pub fn fua(&self) -> bool {
        self.cdw12 & (1 << 30) != 0
    }
}

/// A completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cqe {
    /// Command specific result (DW0, and DW1 for 8-byte property reads).
    pub result: u64,
    pub sqhd: u16,
    pub sqid: u16,
    pub cid: u16,
    /// The status field: DNR bit 15, More bit 14, CRD 13:12, SCT 11:9,
    /// SC 8:1. Bit 0 is the phase tag, which fabrics do not use.
    pub status: u16,
}

impl Cqe {
    pub fn decode(b: &[u8; CQE_LEN]) -> Cqe {
        Cqe {
            result: get_u64(b, 0),
            sqhd: get_u16(b, 8),
            sqid: get_u16(b, 10),
            cid: get_u16(b, 12),
            status: get_u16(b, 14),
        }
    }

    pub fn encode(&self) -> [u8; CQE_LEN] {
        let mut b = [0u8; CQE_LEN];
        b[0..8].copy_from_slice(&self.result.to_le_bytes());
        b[8..10].copy_from_slice(&self.sqhd.to_le_bytes());
        b[10..12].copy_from_slice(&self.sqid.to_le_bytes());
        b[12..14].copy_from_slice(&self.cid.to_le_bytes());
        b[14..16].copy_from_slice(&self.status.to_le_bytes());
        b
    }

    /// Status code type (bits 11:9 of the status field).
    pub fn sct(&self) -> u8 {
        ((self.status >> 9) & 0x7) as u8
    }

    /// Status code (bits 8:1 of the status field).
    pub fn sc(&self) -> u8 {
        ((self.status >> 1) & 0xFF) as u8
    }

    pub fn is_success(&self) -> bool {
        self.status >> 1 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rw_fields() {
        let sqe = Sqe {
            opcode: 0x02,
            cdw10: 0x1122_3344,
            cdw11: 0x0000_0055,
            cdw12: (1 << 30) | 7,
            ..Default::default()
        };
        assert_eq!(sqe.slba(), 0x55_1122_3344);
        assert_eq!(sqe.nlb(), 8);
        assert!(sqe.fua());
    }

    #[test]
    fn cqe_status_fields() {
        let cqe = Cqe {
            status: (1 << 15) | (1 << 9) | (0x82 << 1),
            ..Default::default()
        };
        assert_eq!(cqe.sct(), 1);
        assert_eq!(cqe.sc(), 0x82);
        assert!(!cqe.is_success());
    }

    proptest! {
        #[test]
        fn sqe_roundtrip(bytes in proptest::collection::vec(any::<u8>(), SQE_LEN)) {
            let mut raw = [0u8; SQE_LEN];
            raw.copy_from_slice(&bytes);
            // Bytes 36..39 are reserved and not kept.
            raw[36] = 0; raw[37] = 0; raw[38] = 0;
            prop_assert_eq!(Sqe::decode(&raw).encode(), raw);
        }

        #[test]
        fn cqe_roundtrip(bytes in proptest::collection::vec(any::<u8>(), CQE_LEN)) {
            let mut raw = [0u8; CQE_LEN];
            raw.copy_from_slice(&bytes);
            prop_assert_eq!(Cqe::decode(&raw).encode(), raw);
        }
    }
}
