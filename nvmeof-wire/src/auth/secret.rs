//! The `DHHC-1` secret representation and the key transformation.
//!
//! A secret is written `DHHC-1:XX:<base64 of key || CRC-32(key)>:`, where
//! the key is 32, 48 or 64 bytes, the CRC-32 (the IEEE polynomial, as in
//! zlib) is stored little-endian, and XX names the hash used to transform
//! the key before use: 00 none, 01 SHA-256, 02 SHA-384, 03 SHA-512. The
//! transformed key is HMAC-hash(key, NQN || "NVMe-over-Fabrics"), with the
//! NQN of the side that owns the key (the host NQN for a host secret, the
//! subsystem NQN for a controller secret). This is the format nvme-cli's
//! `gen-dhchap-key` prints and the Linux host and target accept.

use base64::Engine;
use zeroize::Zeroizing;

use super::crypto::HashId;

/// What can be wrong with a written secret. The messages never include
/// the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a DH-HMAC-CHAP secret must look like DHHC-1:XX:<base64>: (the prefix is missing)")]
    Prefix,
    #[error("the transformation field of the DHHC-1 secret must be 00, 01, 02 or 03, not {0:?}")]
    Transform(String),
    #[error("the DHHC-1 secret must end with ':' after its base64 part")]
    Terminator,
    #[error("the base64 part of the DHHC-1 secret is not valid base64")]
    Base64,
    #[error("the DHHC-1 secret holds a {0}-byte key; it must be 32, 48 or 64 bytes")]
    Length(usize),
    #[error("the DHHC-1 secret's CRC-32 does not match its key (mistyped or truncated)")]
    Crc,
}

/// A parsed secret: the key and the transformation to apply to it.
#[derive(Clone, PartialEq, Eq)]
pub struct DhchapSecret {
    transform: Option<HashId>,
    key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for DhchapSecret {
    /// Redacted: secrets must never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DhchapSecret(<{} bytes, redacted>)", self.key.len())
    }
}

const PREFIX: &str = "DHHC-1:";

impl DhchapSecret {
    /// A secret from raw key bytes (32, 48 or 64 of them).
    pub fn new(key: &[u8], transform: Option<HashId>) -> Result<DhchapSecret, SecretError> {
        if !matches!(key.len(), 32 | 48 | 64) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(DhchapSecret {
            transform,
            key: Zeroizing::new(key.to_vec()),
        })
    }

    /// A fresh random key of `len` bytes (32, 48 or 64).
    pub fn generate(len: usize, transform: Option<HashId>) -> Result<DhchapSecret, SecretError> {
        let mut key = Zeroizing::new(vec![0u8; len]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        DhchapSecret::new(&key, transform)
    }

    /// Parse `DHHC-1:XX:<base64>:`, checking the key length and CRC.
    pub fn parse(text: &str) -> Result<DhchapSecret, SecretError> {
        let rest = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(SecretError::Prefix)?;
        let (xx, b64) = rest.split_once(':').ok_or(SecretError::Prefix)?;
        let transform = match xx {
            "00" => None,
            "01" => Some(HashId::Sha256),
            "02" => Some(HashId::Sha384),
            "03" => Some(HashId::Sha512),
            other => return Err(SecretError::Transform(other.chars().take(4).collect())),
        };
        let b64 = b64.strip_suffix(':').ok_or(SecretError::Terminator)?;
        // 64 key bytes + 4 CRC bytes are 92 base64 characters: refuse
        // anything longer before decoding.
        if b64.len() > 96 {
            return Err(SecretError::Length(b64.len() * 3 / 4));
        }
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| SecretError::Base64)?,
        );
        if raw.len() < 4 {
            return Err(SecretError::Length(0));
        }
        let (key, crc) = raw.split_at(raw.len() - 4);
        if !matches!(key.len(), 32 | 48 | 64) {
            return Err(SecretError::Length(key.len()));
        }
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32_ieee(key) != stored {
            return Err(SecretError::Crc);
        }
        DhchapSecret::new(key, transform)
    }

    /// The written form, `DHHC-1:XX:<base64>:`. Handle with care: this is
    /// the secret.
    pub fn encode(&self) -> String {
        let mut raw = Zeroizing::new(self.key.to_vec());
        raw.extend_from_slice(&crc32_ieee(&self.key).to_le_bytes());
        let xx = self.transform.map_or(0, |h| h as u8);
        format!(
            "{PREFIX}{xx:02}:{}:",
            base64::engine::general_purpose::STANDARD.encode(&raw[..])
        )
    }

    /// The transformation hash named in the secret (None for 00).
    pub fn transform(&self) -> Option<HashId> {
        self.transform
    }

    /// Length of the untransformed key.
    pub fn key_len(&self) -> usize {
        self.key.len()
    }

    /// The key as used in responses: HMAC-hash(key, nqn ||
    /// "NVMe-over-Fabrics"), or the key itself for transformation 00.
    pub fn transformed(&self, nqn: &str) -> Zeroizing<Vec<u8>> {
        match self.transform {
            None => self.key.clone(),
            Some(h) => Zeroizing::new(h.hmac(&self.key, &[nqn.as_bytes(), b"NVMe-over-Fabrics"])),
        }
    }
}

/// CRC-32 with the IEEE polynomial (reflected, initial and final value all
/// ones), as zlib computes it. Bitwise: it runs over 64 bytes at most.
pub fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    const NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Known answers from nvme-cli 2.3 (libnvme) on this machine:
    /// `nvme gen-dhchap-key -l LEN --secret=HEX --hmac=0` prints the
    /// untransformed secret, and with `--hmac=H --nqn=NQN` it prints the
    /// key already transformed with NQN (as a `DHHC-1:0H:` secret; it only
    /// does so when the key length equals the hash length, "-" otherwise).
    /// Columns: hmac, length, secret hex, transformed secret, plain secret.
    const NVME_CLI: &str = include_str!("kat/transform.txt");

    #[test]
    fn nvme_cli_secrets_parse_encode_and_transform() {
        let mut checked = 0;
        for line in NVME_CLI.lines().filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (hmac, len, hex, transformed, plain) = (f[0], f[1], f[2], f[3], f[4]);
            let key = unhex(hex);
            assert_eq!(key.len(), len.parse::<usize>().unwrap());
            let plain_secret = DhchapSecret::parse(plain).unwrap();
            assert_eq!(plain_secret.encode(), plain, "round trip of {plain}");
            assert_eq!(&plain_secret.transformed(NQN)[..], &key[..]);
            checked += 1;
            if transformed == "-" {
                continue;
            }
            let hash = HashId::from_id(hmac.parse().unwrap()).unwrap();
            let with = DhchapSecret::new(&key, Some(hash)).unwrap();
            let expect = DhchapSecret::parse(transformed).unwrap();
            assert_eq!(expect.transform(), Some(hash));
            assert_eq!(
                &with.transformed(NQN)[..],
                &expect.key[..],
                "transformation with hmac {hmac}, {len}-byte key"
            );
            checked += 10;
        }
        assert_eq!(checked, 9 + 3 * 10, "9 plain secrets, 3 transformations");
    }

    #[test]
    fn crc_check_value() {
        // The standard CRC-32 check value of "123456789".
        assert_eq!(crc32_ieee(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn bad_secrets_are_refused_with_their_reason() {
        let good = DhchapSecret::new(&[7u8; 32], Some(HashId::Sha256))
            .unwrap()
            .encode();
        assert!(DhchapSecret::parse(&good).is_ok());
        assert_eq!(
            DhchapSecret::parse("DHHC-2:01:abc:"),
            Err(SecretError::Prefix)
        );
        assert_eq!(
            DhchapSecret::parse(&good.replace(":01:", ":04:")),
            Err(SecretError::Transform("04".into()))
        );
        assert_eq!(
            DhchapSecret::parse(good.trim_end_matches(':')),
            Err(SecretError::Terminator)
        );
        assert_eq!(
            DhchapSecret::parse("DHHC-1:00:!!!!:"),
            Err(SecretError::Base64)
        );
        // A flipped character changes the key, not the CRC.
        let mut chars: Vec<char> = good.chars().collect();
        chars[12] = if chars[12] == 'A' { 'B' } else { 'A' };
        let flipped: String = chars.into_iter().collect();
        assert_eq!(DhchapSecret::parse(&flipped), Err(SecretError::Crc));
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 20]);
        assert_eq!(
            DhchapSecret::parse(&format!("DHHC-1:00:{short}:")),
            Err(SecretError::Length(16))
        );
        let long = "A".repeat(4000);
        assert!(matches!(
            DhchapSecret::parse(&format!("DHHC-1:00:{long}:")),
            Err(SecretError::Length(_))
        ));
        assert_eq!(
            DhchapSecret::parse("DHHC-1:00::"),
            Err(SecretError::Length(0))
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let s = DhchapSecret::new(&[0xAB; 32], None).unwrap();
        let shown = format!("{s:?}");
        assert!(!shown.contains("ab") && !shown.contains("AB") && !shown.contains(&s.encode()));
    }
}
