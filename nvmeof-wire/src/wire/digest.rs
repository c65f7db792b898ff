//! CRC-32C digests as NVMe/TCP uses them.
//!
//! NVMe/TCP uses the Castagnoli polynomial (not the IEEE one of Ethernet
//! and zlib), seeded with all ones and inverted at the end, and puts the
//! result on the wire little-endian. The `crc32c` crate computes exactly that
//! standard value and uses SSE4.2 where the CPU has it.

/// Size of a header or data digest on the wire.
pub const DIGEST_LEN: usize = 4;

/// The CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Continue a CRC-32C over another piece of a split buffer.
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// The digest of `data` as it is written on the wire.
pub fn digest_bytes(data: &[u8]) -> [u8; DIGEST_LEN] {
    crc32c(data).to_le_bytes()
}

/// Whether `wire` (4 bytes, little-endian) is the digest of `data`.
pub fn digest_matches(data: &[u8], wire: &[u8]) -> bool {
    wire.len() == DIGEST_LEN && wire == digest_bytes(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_value() {
        // The catalogue check value of CRC-32C over the ASCII digits.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn append_equals_whole() {
        let data = b"the quick brown fox jumps over the lazy dog";
        let (a, b) = data.split_at(11);
        assert_eq!(crc32c_append(crc32c(a), b), crc32c(data));
    }

    #[test]
    fn matches_rejects_wrong_length() {
        assert!(!digest_matches(b"x", &[0, 0, 0]));
        assert!(digest_matches(b"x", &digest_bytes(b"x")));
    }
}
