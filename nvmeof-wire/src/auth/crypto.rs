//! Hash functions, HMAC, finite-field Diffie-Hellman (RFC 7919 groups) and
//! the DH-HMAC-CHAP response computation.
//!
//! The response to a challenge C with sequence number S in transaction T
//! is HMAC-hash(K', Ca || S || T || SC_C || role || NQN1 || 0x00 || NQN2),
//! S little-endian in 4 bytes, T in 2, SC_C in 1, where K' is the
//! transformed secret of the responder, role is "HostHost" (NQN1 the host,
//! NQN2 the subsystem) or "Controller" (the other way round), and Ca is the
//! challenge itself with the null DH group or, with a DH group,
//! HMAC-hash(hash(g^xy mod p), C): the augmented challenge, which binds the
//! response to this exchange's ephemeral key so a recorded exchange
//! cannot be replayed or attacked offline without breaking the DH.

use hmac::{Hmac, Mac};
use num_bigint::BigUint;
use sha2::{Digest, Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

/// Hash function identifiers of DH-HMAC-CHAP (also the XX of a DHHC-1
/// secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum HashId {
    Sha256 = 1,
    Sha384 = 2,
    Sha512 = 3,
}

impl HashId {
    pub const ALL: [HashId; 3] = [HashId::Sha256, HashId::Sha384, HashId::Sha512];

    pub fn from_id(id: u8) -> Option<HashId> {
        match id {
            1 => Some(HashId::Sha256),
            2 => Some(HashId::Sha384),
            3 => Some(HashId::Sha512),
            _ => None,
        }
    }

    /// Digest length, which is also the challenge and response length.
    pub fn digest_len(self) -> usize {
        match self {
            HashId::Sha256 => 32,
            HashId::Sha384 => 48,
            HashId::Sha512 => 64,
        }
    }

    /// The name used in configuration and by Linux (`hmac(sha256)` there).
    pub fn name(self) -> &'static str {
        match self {
            HashId::Sha256 => "sha256",
            HashId::Sha384 => "sha384",
            HashId::Sha512 => "sha512",
        }
    }

    pub fn from_name(s: &str) -> Option<HashId> {
        let s = s.trim().to_ascii_lowercase();
        let s = s
            .strip_prefix("hmac(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or(&s);
        HashId::ALL.into_iter().find(|h| h.name() == s)
    }

    /// HMAC of the concatenation of `parts` under `key`.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC accepts keys of any length");
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
        match self {
            HashId::Sha256 => run::<Hmac<Sha256>>(key, parts),
            HashId::Sha384 => run::<Hmac<Sha384>>(key, parts),
            HashId::Sha512 => run::<Hmac<Sha512>>(key, parts),
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashId::Sha256 => Sha256::digest(data).to_vec(),
            HashId::Sha384 => Sha384::digest(data).to_vec(),
            HashId::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

impl std::fmt::Display for HashId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Diffie-Hellman group identifiers of DH-HMAC-CHAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DhGroup {
    Null = 0,
    Ffdhe2048 = 1,
    Ffdhe3072 = 2,
    Ffdhe4096 = 3,
    Ffdhe6144 = 4,
    Ffdhe8192 = 5,
}

/// The RFC 7919 primes, as printed by OpenSSL 3.0
/// (`openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdheN |
/// openssl asn1parse`). The generator of every group is 2.
const P2048: &str = include_str!("ffdhe2048.hex");
const P3072: &str = include_str!("ffdhe3072.hex");
const P4096: &str = include_str!("ffdhe4096.hex");
const P6144: &str = include_str!("ffdhe6144.hex");
const P8192: &str = include_str!("ffdhe8192.hex");

impl DhGroup {
    pub const ALL: [DhGroup; 6] = [
        DhGroup::Null,
        DhGroup::Ffdhe2048,
        DhGroup::Ffdhe3072,
        DhGroup::Ffdhe4096,
        DhGroup::Ffdhe6144,
        DhGroup::Ffdhe8192,
    ];

    pub fn from_id(id: u8) -> Option<DhGroup> {
        DhGroup::ALL.into_iter().find(|g| *g as u8 == id)
    }

    pub fn name(self) -> &'static str {
        match self {
            DhGroup::Null => "null",
            DhGroup::Ffdhe2048 => "ffdhe2048",
            DhGroup::Ffdhe3072 => "ffdhe3072",
            DhGroup::Ffdhe4096 => "ffdhe4096",
            DhGroup::Ffdhe6144 => "ffdhe6144",
            DhGroup::Ffdhe8192 => "ffdhe8192",
        }
    }

    pub fn from_name(s: &str) -> Option<DhGroup> {
        let s = s.trim().to_ascii_lowercase();
        DhGroup::ALL.into_iter().find(|g| g.name() == s)
    }

    /// Size in bytes of the prime, of public values and of the shared
    /// secret (0 for the null group).
    pub fn size(self) -> usize {
        match self {
            DhGroup::Null => 0,
            DhGroup::Ffdhe2048 => 256,
            DhGroup::Ffdhe3072 => 384,
            DhGroup::Ffdhe4096 => 512,
            DhGroup::Ffdhe6144 => 768,
            DhGroup::Ffdhe8192 => 1024,
        }
    }

    /// Length of the random private exponent, in bytes.
    ///
    /// RFC 7919 section 5.2 allows short exponents with these safe primes
    /// and gives minimums of 225, 275, 325, 375 and 400 bits; these are
    /// above each, rounded up to whole bytes with margin, which keeps an
    /// ffdhe8192 exchange to a few milliseconds instead of seconds.
    fn exponent_len(self) -> usize {
        match self {
            DhGroup::Null => 0,
            DhGroup::Ffdhe2048 => 32,
            DhGroup::Ffdhe3072 => 40,
            DhGroup::Ffdhe4096 => 48,
            DhGroup::Ffdhe6144 => 56,
            DhGroup::Ffdhe8192 => 64,
        }
    }

    fn prime(self) -> Option<BigUint> {
        let hex = match self {
            DhGroup::Null => return None,
            DhGroup::Ffdhe2048 => P2048,
            DhGroup::Ffdhe3072 => P3072,
            DhGroup::Ffdhe4096 => P4096,
            DhGroup::Ffdhe6144 => P6144,
            DhGroup::Ffdhe8192 => P8192,
        };
        BigUint::parse_bytes(hex.trim().as_bytes(), 16)
    }
}

impl std::fmt::Display for DhGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a peer's DH public value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhError {
    #[error("the null DH group has no key exchange")]
    NullGroup,
    #[error("DH public value of {got} bytes, the {group} group needs at most {max}")]
    Length {
        group: DhGroup,
        got: usize,
        max: usize,
    },
    #[error("DH public value outside 2..p-2 for {0} (a degenerate or forged value)")]
    Range(DhGroup),
}

/// An ephemeral DH key pair of one authentication transaction.
pub struct DhKeyPair {
    group: DhGroup,
    p: BigUint,
    x: BigUint,
}

impl DhKeyPair {
    /// A new random key pair; `None` for the null group.
    pub fn generate(group: DhGroup) -> Option<DhKeyPair> {
        let mut bytes = Zeroizing::new(vec![0u8; group.exponent_len()]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        // The top bit set, so the exponent has its full length.
        if let Some(b) = bytes.first_mut() {
            *b |= 0x80;
        }
        DhKeyPair::from_private(group, &bytes)
    }

    /// A key pair with a given private exponent (known-answer tests).
    pub fn from_private(group: DhGroup, x: &[u8]) -> Option<DhKeyPair> {
        let p = group.prime()?;
        Some(DhKeyPair {
            group,
            p,
            x: BigUint::from_bytes_be(x),
        })
    }

    /// g^x mod p, big-endian, padded to the group size.
    pub fn public(&self) -> Vec<u8> {
        let y = BigUint::from(2u32).modpow(&self.x, &self.p);
        pad(&y.to_bytes_be(), self.group.size())
    }

    /// The shared secret peer^x mod p, big-endian, padded to the group
    /// size. The peer's value is checked first: one of 0, 1 or p-1 would
    /// force a known secret.
    pub fn shared(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, DhError> {
        let size = self.group.size();
        if peer.len() > size || peer.is_empty() {
            return Err(DhError::Length {
                group: self.group,
                got: peer.len(),
                max: size,
            });
        }
        let y = BigUint::from_bytes_be(peer);
        let one = BigUint::from(1u32);
        if y <= one || y >= &self.p - &one {
            return Err(DhError::Range(self.group));
        }
        let z = y.modpow(&self.x, &self.p);
        Ok(Zeroizing::new(pad(&z.to_bytes_be(), size)))
    }

    pub fn group(&self) -> DhGroup {
        self.group
    }
}

impl Drop for DhKeyPair {
    /// Best effort: overwrite the exponent's value (num-bigint does not
    /// zeroize its buffers on reallocation).
    fn drop(&mut self) {
        self.x = BigUint::default();
    }
}

fn pad(v: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size.saturating_sub(v.len())];
    out.extend_from_slice(v);
    out
}

/// The role string that starts the second half of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The host answering the controller's challenge.
    Host,
    /// The controller answering the host's challenge.
    Controller,
}

/// Everything a response depends on.
pub struct ResponseInput<'a> {
    pub hash: HashId,
    /// The responder's transformed secret.
    pub key: &'a [u8],
    pub challenge: &'a [u8],
    pub seqnum: u32,
    pub tid: u16,
    pub sc_c: u8,
    pub role: Role,
    pub hostnqn: &'a str,
    pub subnqn: &'a str,
    /// The DH shared secret, absent with the null group.
    pub dh_shared: Option<&'a [u8]>,
}

/// The augmented challenge: HMAC-hash(hash(shared), challenge).
pub fn augmented_challenge(hash: HashId, shared: &[u8], challenge: &[u8]) -> Vec<u8> {
    let hashed = Zeroizing::new(hash.digest(shared));
    hash.hmac(&hashed, &[challenge])
}

/// The DH-HMAC-CHAP response (see the module documentation).
pub fn chap_response(i: &ResponseInput<'_>) -> Vec<u8> {
    let challenge = match i.dh_shared {
        Some(z) => augmented_challenge(i.hash, z, i.challenge),
        None => i.challenge.to_vec(),
    };
    let (role, nqn1, nqn2): (&[u8], &str, &str) = match i.role {
        Role::Host => (b"HostHost", i.hostnqn, i.subnqn),
        Role::Controller => (b"Controller", i.subnqn, i.hostnqn),
    };
    i.hash.hmac(
        i.key,
        &[
            &challenge,
            &i.seqnum.to_le_bytes(),
            &i.tid.to_le_bytes(),
            &[i.sc_c],
            role,
            nqn1.as_bytes(),
            &[0],
            nqn2.as_bytes(),
        ],
    )
}

/// Compare two responses in time independent of where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Random bytes for challenges.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut v);
    v
}

/// A random non-zero sequence number.
pub fn random_seqnum() -> u32 {
    loop {
        let v = rand::random::<u32>();
        if v != 0 {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s = s.trim();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Key pairs and shared secrets made by OpenSSL 3.0 for each RFC 7919
    /// group (`openssl genpkey -algorithm DH -pkeyopt group:ffdheN`, then
    /// `openssl pkeyutl -derive -pkeyopt dh_pad:1`): our modexp must give
    /// OpenSSL's public value for its private key and the same shared
    /// secret with the other side's public value.
    const OPENSSL_DH: &str = include_str!("kat/ffdhe.txt");

    #[test]
    fn ffdhe_groups_agree_with_openssl() {
        let mut fields = std::collections::HashMap::new();
        let mut done = 0;
        for line in OPENSSL_DH.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            fields.insert(k.to_string(), v.to_string());
            if k != "shared" {
                continue;
            }
            let group = match fields["group"].as_str() {
                "2048" => DhGroup::Ffdhe2048,
                "3072" => DhGroup::Ffdhe3072,
                "4096" => DhGroup::Ffdhe4096,
                "6144" => DhGroup::Ffdhe6144,
                "8192" => DhGroup::Ffdhe8192,
                other => panic!("group {other}"),
            };
            let a = DhKeyPair::from_private(group, &unhex(&fields["x_a"])).unwrap();
            let pub_a = unhex(&fields["pub_a"]);
            let pub_a = &pub_a[pub_a.len() - group.size()..];
            assert_eq!(a.public(), pub_a, "{group} public value");
            // OpenSSL prints a sign byte (00) in front of some values.
            let pub_b = unhex(&fields["pub_b"]);
            let shared = a.shared(&pub_b[pub_b.len() - group.size()..]).unwrap();
            assert_eq!(
                &shared[..],
                &unhex(&fields["shared"])[..],
                "{group} shared secret"
            );
            done += 1;
        }
        assert_eq!(done, 5, "every ffdhe group checked");
    }

    #[test]
    fn degenerate_public_values_are_refused() {
        let a = DhKeyPair::generate(DhGroup::Ffdhe2048).unwrap();
        assert!(matches!(a.shared(&[1]), Err(DhError::Range(_))));
        assert!(matches!(a.shared(&[0; 256]), Err(DhError::Range(_))));
        assert!(matches!(a.shared(&[]), Err(DhError::Length { .. })));
        assert!(matches!(a.shared(&[2; 257]), Err(DhError::Length { .. })));
        let p_minus_1 = unhex(P2048.trim());
        let mut v = p_minus_1.clone();
        *v.last_mut().unwrap() -= 1;
        assert!(matches!(a.shared(&v), Err(DhError::Range(_))));
        assert!(matches!(a.shared(&p_minus_1), Err(DhError::Range(_))));
        assert!(DhKeyPair::generate(DhGroup::Null).is_none());
    }

    #[test]
    fn two_sides_agree() {
        for g in &DhGroup::ALL[1..] {
            let a = DhKeyPair::generate(*g).unwrap();
            let b = DhKeyPair::generate(*g).unwrap();
            assert_eq!(a.public().len(), g.size());
            assert_eq!(
                &a.shared(&b.public()).unwrap()[..],
                &b.shared(&a.public()).unwrap()[..]
            );
        }
    }

    /// Responses computed by Python's hmac/hashlib (an implementation
    /// independent of the Rust crates), see kat/responses.py.
    const PY_RESPONSES: &str = include_str!("kat/responses.txt");

    #[test]
    fn responses_match_python() {
        let mut n = 0;
        for line in PY_RESPONSES.lines().filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // hash role seqnum tid key challenge shared(or -) hostnqn subnqn expected
            let hash = HashId::from_id(f[0].parse().unwrap()).unwrap();
            let role = if f[1] == "host" {
                Role::Host
            } else {
                Role::Controller
            };
            let key = unhex(f[4]);
            let challenge = unhex(f[5]);
            let shared = (f[6] != "-").then(|| unhex(f[6]));
            let got = chap_response(&ResponseInput {
                hash,
                key: &key,
                challenge: &challenge,
                seqnum: f[2].parse().unwrap(),
                tid: f[3].parse().unwrap(),
                sc_c: 0,
                role,
                hostnqn: f[7],
                subnqn: f[8],
                dh_shared: shared.as_deref(),
            });
            assert_eq!(got, unhex(f[9]), "line {line:.60}");
            n += 1;
        }
        assert!(n >= 12);
    }

    #[test]
    fn names_round_trip() {
        for h in HashId::ALL {
            assert_eq!(HashId::from_name(h.name()), Some(h));
            assert_eq!(HashId::from_id(h as u8), Some(h));
        }
        assert_eq!(HashId::from_name("hmac(sha384)"), Some(HashId::Sha384));
        for g in DhGroup::ALL {
            assert_eq!(DhGroup::from_name(g.name()), Some(g));
            assert_eq!(DhGroup::from_id(g as u8), Some(g));
        }
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"ab", b"abc"));
    }
}
