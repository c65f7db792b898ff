//! Self-describing blocks for `--verify`.
//!
//! Every written unit carries a header naming where it was meant to land
//! (offset), which run wrote it (seed) and which write it was (generation),
//! and a CRC-32C over the whole unit. Reading it back therefore tells apart
//! the ways a storage path can lose data:
//!
//! * lost write — a valid unit, but an older generation (or another run's);
//! * torn write — the CRC fails, so the unit mixes old and new sectors;
//! * misplaced write — a valid unit stamped for a different offset.
//!
//! The payload is a pseudo-random stream derived from (seed, offset,
//! generation) so that two generations of the same unit differ in every
//! sector, which is what makes a torn write visible to the CRC.

use serde::Serialize;

/// Smallest unit that can hold the header.
pub const MIN_UNIT: usize = HEADER_LEN;

const MAGIC: [u8; 8] = *b"FFBNCHv1";
const HEADER_LEN: usize = 40;
const CRC_AT: usize = 36;

/// What a read-back found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Mismatch {
    /// No stamp at all: the unit was never written by any verify run.
    NotStamped,
    /// Stamped, but the CRC does not match: a torn or corrupted write.
    Torn,
    /// A valid unit that belongs at another offset.
    Misplaced { found_offset: u64 },
    /// A valid unit from another verify run (seed differs): a lost write.
    ForeignRun { found_seed: u64 },
    /// A valid unit of an older (or newer) write than the last acknowledged.
    StaleGeneration { expected: u64, found: u64 },
    /// Header says a different unit size than the one being read.
    WrongLength { found: u32 },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::NotStamped => write!(f, "no verify stamp (lost write)"),
            Mismatch::Torn => write!(f, "checksum mismatch (torn or corrupted write)"),
            Mismatch::Misplaced { found_offset } => {
                write!(
                    f,
                    "misplaced write: block stamped for offset {found_offset}"
                )
            }
            Mismatch::ForeignRun { found_seed } => {
                write!(
                    f,
                    "lost write: block from another run (seed {found_seed:#x})"
                )
            }
            Mismatch::StaleGeneration { expected, found } => write!(
                f,
                "lost write: generation {found} found, {expected} expected"
            ),
            Mismatch::WrongLength { found } => write!(f, "block stamped with length {found}"),
        }
    }
}

/// Fill `buf` with the unit for (seed, offset, generation).
pub fn stamp(buf: &mut [u8], seed: u64, offset: u64, generation: u64) {
    debug_assert!(buf.len() >= HEADER_LEN);
    fill_payload(&mut buf[HEADER_LEN..], seed, offset, generation);
    buf[0..8].copy_from_slice(&MAGIC);
    buf[8..16].copy_from_slice(&offset.to_le_bytes());
    buf[16..24].copy_from_slice(&seed.to_le_bytes());
    buf[24..32].copy_from_slice(&generation.to_le_bytes());
    let len = buf.len() as u32;
    buf[32..36].copy_from_slice(&len.to_le_bytes());
    let crc = unit_crc(buf);
    buf[CRC_AT..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Check a unit read from `offset` against the last acknowledged write.
pub fn check(buf: &[u8], seed: u64, offset: u64, expected_gen: u64) -> Result<(), Mismatch> {
    if buf.len() < HEADER_LEN || buf[0..8] != MAGIC {
        return Err(Mismatch::NotStamped);
    }
    let stored_crc = le_u32(&buf[CRC_AT..HEADER_LEN]);
    if stored_crc != unit_crc(buf) {
        return Err(Mismatch::Torn);
    }
    let found_len = le_u32(&buf[32..36]);
    if found_len as usize != buf.len() {
        return Err(Mismatch::WrongLength { found: found_len });
    }
    let found_offset = le_u64(&buf[8..16]);
    if found_offset != offset {
        return Err(Mismatch::Misplaced { found_offset });
    }
    let found_seed = le_u64(&buf[16..24]);
    if found_seed != seed {
        return Err(Mismatch::ForeignRun { found_seed });
    }
    let found = le_u64(&buf[24..32]);
    if found != expected_gen {
        return Err(Mismatch::StaleGeneration {
            expected: expected_gen,
            found,
        });
    }
    Ok(())
}

fn unit_crc(buf: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&buf[..CRC_AT]);
    crc32c::crc32c_append(crc, &buf[HEADER_LEN..])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// SplitMix64 step: cheap, and good enough that neighbouring units and
/// generations share no byte patterns.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fill_payload(out: &mut [u8], seed: u64, offset: u64, generation: u64) {
    let mut state = seed ^ offset.rotate_left(17) ^ generation.rotate_left(41);
    for chunk in out.chunks_mut(8) {
        let word = splitmix(&mut state).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(offset: u64, generation: u64) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        stamp(&mut b, 42, offset, generation);
        b
    }

    #[test]
    fn good_unit_checks() {
        assert_eq!(check(&unit(8192, 3), 42, 8192, 3), Ok(()));
    }

    #[test]
    fn detects_each_failure_kind() {
        assert_eq!(check(&[0u8; 4096], 42, 0, 1), Err(Mismatch::NotStamped));
        assert_eq!(
            check(&unit(0, 1), 42, 4096, 1),
            Err(Mismatch::Misplaced { found_offset: 0 })
        );
        assert_eq!(
            check(&unit(0, 1), 42, 0, 2),
            Err(Mismatch::StaleGeneration {
                expected: 2,
                found: 1
            })
        );
        assert_eq!(
            check(&unit(0, 1), 7, 0, 1),
            Err(Mismatch::ForeignRun { found_seed: 42 })
        );
        // Torn: first sector of the new generation, the rest of the old.
        let mut torn = unit(0, 1);
        torn[..512].copy_from_slice(&unit(0, 2)[..512]);
        assert_eq!(check(&torn, 42, 0, 2), Err(Mismatch::Torn));
        let mut torn_tail = unit(0, 2);
        torn_tail[3584..].copy_from_slice(&unit(0, 1)[3584..]);
        assert_eq!(check(&torn_tail, 42, 0, 2), Err(Mismatch::Torn));
    }

    #[test]
    fn generations_differ_in_every_sector() {
        let a = unit(0, 1);
        let b = unit(0, 2);
        for (sa, sb) in a.chunks(512).zip(b.chunks(512)).skip(1) {
            assert_ne!(sa, sb);
        }
    }
}
