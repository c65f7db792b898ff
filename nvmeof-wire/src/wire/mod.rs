//! The wire format: NVMe/TCP PDUs, queue entries and digests.
//!
//! Nothing in this module does I/O; it turns bytes into typed values and
//! back, and rejects malformed input with an error that names the field.

pub mod command;
pub mod digest;
pub mod pdu;

pub use command::{Cqe, Sgl, Sqe, CQE_LEN, SQE_LEN};
pub use pdu::{
    DataHeader, DecodeStatus, Decoded, Digests, IcReq, IcResp, Pdu, PduError, R2t, TermReq,
};

/// Little-endian field readers. Callers pass slices whose length they have
/// already checked; a short slice yields zeroes rather than a panic so that
/// a framing bug can never crash the process.
pub fn get_u16(b: &[u8], at: usize) -> u16 {
    let mut v = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        v.copy_from_slice(s);
    }
    u16::from_le_bytes(v)
}

pub fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

pub fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}
