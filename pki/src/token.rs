//! One-time bootstrap tokens for node enrollment.
//!
//! The controller hands an operator a token bound to a node name; the node
//! presents it once to get its first certificate. Only a SHA-256 hash of the
//! secret is stored, so a leaked controller store does not leak usable
//! tokens. Storage is the controller's business: this module is pure.
//!
//! A token may also carry a pin of the controller's CA certificate
//! (`fft1.<id>.<secret>.<pin>`, pin = base64url(SHA-256(CA cert DER)),
//! like a discovery-token CA hash): a node holding only the token and the
//! controller's address can then learn the CA from the TLS handshake and
//! trust it only if it hashes to the pin. The pin is not secret and takes
//! no part in the controller's check, which sees only id and secret; a
//! three-part token (no pin) stays valid, the node then needs the CA file.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::validity::{from_unix_seconds, unix_seconds};
use crate::{validate_name, PkiError};

/// Version prefix, so the format can change without ambiguity.
pub const TOKEN_PREFIX: &str = "fft1";
const ID_BYTES: usize = 9;
const SECRET_BYTES: usize = 32;
/// Domain separation for the stored hash.
const HASH_CONTEXT: &[u8] = b"ferrofab-bootstrap-token-v1\0";

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The string is not `fft1.<id>.<secret>`.
    #[error("malformed bootstrap token: {0}")]
    Malformed(&'static str),
    /// The secret (or id) does not match the record.
    #[error("bootstrap token is not valid")]
    Mismatch,
    /// The token's TTL has passed.
    #[error("bootstrap token for node {node:?} expired")]
    Expired {
        /// Node the token was for.
        node: String,
    },
    /// The token was already used to enroll.
    #[error("bootstrap token for node {node:?} was already used")]
    AlreadyUsed {
        /// Node the token was for.
        node: String,
    },
    /// The CA pin part is not base64url of 32 bytes.
    #[error("malformed CA pin in bootstrap token: {0}")]
    BadPin(&'static str),
    /// The requested time to live is zero or absurd.
    #[error("invalid token TTL: {0}")]
    InvalidTtl(&'static str),
}

/// A bootstrap token as handed to the operator: `fft1.<id>.<secret>`,
/// optionally followed by `.<pin>` (see [`CaPin`]).
///
/// `Display` reveals the secret (that is how it is shown once); `Debug`
/// does not.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    id: String,
    secret: [u8; SECRET_BYTES],
    ca_pin: Option<CaPin>,
}

/// SHA-256 of a CA certificate's DER encoding; written base64url without
/// padding. It lets a node recognise the controller's CA among the
/// certificates of an unauthenticated handshake.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CaPin([u8; 32]);

impl CaPin {
    /// The pin of one certificate (DER).
    pub fn of_der(der: &[u8]) -> Self {
        CaPin(Sha256::digest(der).into())
    }

    /// The pin of the first certificate of a PEM document.
    pub fn of_pem(pem: &[u8]) -> Result<Self, PkiError> {
        Ok(Self::of_der(&crate::first_cert_from_pem(
            "CA certificate",
            pem,
        )?))
    }

    /// Whether `der` is the pinned certificate (constant time, although the
    /// pin is not secret: it costs nothing).
    pub fn matches(&self, der: &[u8]) -> bool {
        bool::from(Self::of_der(der).0.ct_eq(&self.0))
    }

    /// The first certificate of `chain` that is the pinned one.
    pub fn find_in<'a, C: AsRef<[u8]> + ?Sized + 'a>(
        &self,
        chain: impl IntoIterator<Item = &'a C>,
    ) -> Option<&'a [u8]> {
        chain
            .into_iter()
            .map(AsRef::as_ref)
            .find(|der| self.matches(der))
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl FromStr for CaPin {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::BadPin("not base64url"))?;
        let pin: [u8; 32] = bytes
            .try_into()
            .map_err(|_| TokenError::BadPin("not a SHA-256 (32 bytes)"))?;
        Ok(CaPin(pin))
    }
}

/// What the controller stores for a token; contains no secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenRecord {
    /// Public token id, the lookup key.
    pub id: String,
    /// The node this token may enroll.
    pub node: String,
    /// Hex SHA-256 of the secret (with id and a context string).
    pub hash: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: i64,
    /// Set by the controller once the token has enrolled a node.
    #[serde(default)]
    pub used: bool,
}

impl Token {
    /// Creates a token for `node` valid for `ttl`, and the record to store.
    pub fn generate(node: &str, ttl: Duration) -> Result<(Token, TokenRecord), PkiError> {
        Self::generate_at(node, ttl, SystemTime::now())
    }

    /// [`Token::generate`] with an explicit clock, for tests.
    pub fn generate_at(
        node: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(Token, TokenRecord), PkiError> {
        validate_name(node)?;
        if ttl.is_zero() {
            return Err(TokenError::InvalidTtl("must be positive").into());
        }
        let expires = now
            .checked_add(ttl)
            .ok_or(TokenError::InvalidTtl("too large"))?;
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let token = Token {
            id: URL_SAFE_NO_PAD.encode(id),
            secret,
            ca_pin: None,
        };
        let record = TokenRecord {
            id: token.id.clone(),
            node: node.to_owned(),
            hash: token.hash_hex(),
            expires_at: unix_seconds(expires),
            used: false,
        };
        Ok((token, record))
    }

    /// The public id, for looking up the record.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The same token carrying `pin`, for printing to the operator.
    pub fn with_ca_pin(mut self, pin: CaPin) -> Self {
        self.ca_pin = Some(pin);
        self
    }

    /// The CA pin, if the token carries one.
    pub fn ca_pin(&self) -> Option<CaPin> {
        self.ca_pin
    }

    fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(HASH_CONTEXT);
        h.update(self.id.as_bytes());
        h.update(b"\0");
        h.update(self.secret);
        h.finalize().into()
    }

    fn hash_hex(&self) -> String {
        self.hash().iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl TokenRecord {
    /// Checks a presented token against this record, now.
    pub fn verify(&self, presented: &Token) -> Result<(), TokenError> {
        self.verify_at(presented, SystemTime::now())
    }

    /// Checks a presented token against this record at `now`.
    ///
    /// The secret is compared first and in constant time, so a wrong token
    /// learns nothing — not even whether the real one is used or expired.
    pub fn verify_at(&self, presented: &Token, now: SystemTime) -> Result<(), TokenError> {
        let stored = decode_hex(&self.hash).ok_or(TokenError::Mismatch)?;
        let computed = presented.hash();
        let id_ok = presented.id.as_bytes().ct_eq(self.id.as_bytes());
        let hash_ok = computed.as_slice().ct_eq(stored.as_slice());
        if !bool::from(id_ok & hash_ok) {
            return Err(TokenError::Mismatch);
        }
        if self.used {
            return Err(TokenError::AlreadyUsed {
                node: self.node.clone(),
            });
        }
        if unix_seconds(now) > self.expires_at {
            return Err(TokenError::Expired {
                node: self.node.clone(),
            });
        }
        Ok(())
    }

    /// Verifies and marks the record used; returns the node name to enroll.
    /// The controller must persist the updated record before issuing.
    pub fn consume_at(&mut self, presented: &Token, now: SystemTime) -> Result<&str, TokenError> {
        self.verify_at(presented, now)?;
        self.used = true;
        Ok(&self.node)
    }

    /// Expiry as a `SystemTime`.
    pub fn expires_at(&self) -> SystemTime {
        from_unix_seconds(self.expires_at)
    }

    /// Whether the record can be garbage-collected: used or expired.
    pub fn is_spent_at(&self, now: SystemTime) -> bool {
        self.used || unix_seconds(now) > self.expires_at
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}.{}.{}",
            self.id,
            URL_SAFE_NO_PAD.encode(self.secret)
        )?;
        match &self.ca_pin {
            Some(pin) => write!(f, ".{pin}"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("ca_pin", &self.ca_pin.map(|p| p.to_string()))
            .finish()
    }
}

impl FromStr for Token {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().split('.');
        let (Some(prefix), Some(id), Some(secret), pin, None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Malformed(
                "expected fft1.<id>.<secret>[.<ca-pin>]",
            ));
        };
        if prefix != TOKEN_PREFIX {
            return Err(TokenError::Malformed("unknown token version"));
        }
        let id_bytes = URL_SAFE_NO_PAD
            .decode(id)
            .map_err(|_| TokenError::Malformed("bad id encoding"))?;
        if id_bytes.len() != ID_BYTES {
            return Err(TokenError::Malformed("bad id length"));
        }
        let secret: [u8; SECRET_BYTES] = URL_SAFE_NO_PAD
            .decode(secret)
            .map_err(|_| TokenError::Malformed("bad secret encoding"))?
            .try_into()
            .map_err(|_| TokenError::Malformed("bad secret length"))?;
        let ca_pin = pin.map(str::parse).transpose()?;
        Ok(Token {
            id: id.to_owned(),
            secret,
            ca_pin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn fresh() -> (Token, TokenRecord, SystemTime) {
        let now = SystemTime::now();
        let (t, r) = Token::generate_at("n1", HOUR, now).unwrap();
        (t, r, now)
    }

    #[test]
    fn round_trips_and_verifies() {
        let (t, r, now) = fresh();
        let s = t.to_string();
        assert!(s.starts_with("fft1."));
        let parsed: Token = s.parse().unwrap();
        assert_eq!(parsed, t);
        assert_eq!(parsed.id(), r.id);
        r.verify_at(&parsed, now).unwrap();
        assert_eq!(r.node, "n1");
        assert!(!r.hash.contains(&s[s.len() - 10..]));
    }

    #[test]
    fn wrong_secret_rejected() {
        let (_, r, now) = fresh();
        let (other, _) = Token::generate_at("n1", HOUR, now).unwrap();
        assert_eq!(r.verify_at(&other, now), Err(TokenError::Mismatch));
        let forged = Token {
            id: r.id.clone(),
            secret: other.secret,
            ca_pin: None,
        };
        assert_eq!(r.verify_at(&forged, now), Err(TokenError::Mismatch));
    }

    #[test]
    fn expiry() {
        let (t, r, now) = fresh();
        assert!(r.verify_at(&t, now + HOUR).is_ok());
        assert!(matches!(
            r.verify_at(&t, now + HOUR + Duration::from_secs(1)),
            Err(TokenError::Expired { .. })
        ));
        assert!(r.is_spent_at(now + HOUR * 2));
    }

    #[test]
    fn reuse_rejected() {
        let (t, mut r, now) = fresh();
        assert_eq!(r.consume_at(&t, now).unwrap(), "n1");
        assert!(r.used);
        assert!(matches!(
            r.verify_at(&t, now),
            Err(TokenError::AlreadyUsed { .. })
        ));
        assert!(r.consume_at(&t, now).is_err());
    }

    #[test]
    fn malformed_rejected() {
        for s in [
            "",
            "fft1",
            "fft1.a.b",
            "fft2.AAAAAAAAAAAA.AAAA",
            "fft1..x",
            "fft1.AAAAAAAAAAAA.x.y.z",
        ] {
            assert!(s.parse::<Token>().is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn bad_node_or_ttl_rejected() {
        assert!(Token::generate("Bad_Node", HOUR).is_err());
        assert!(Token::generate("n1", Duration::ZERO).is_err());
    }

    #[test]
    fn debug_redacts_and_record_serializes() {
        let (t, r, _) = fresh();
        let secret = t.to_string().rsplit('.').next().unwrap().to_owned();
        assert!(!format!("{t:?}").contains(&secret));
        let j = serde_json::to_string(&r).unwrap();
        let back: TokenRecord = serde_json::from_str(&j).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn pinned_token_round_trips_and_verifies_on_id_and_secret_only() {
        let (t, r, now) = fresh();
        let pin = CaPin::of_der(b"some CA");
        let pinned = t.clone().with_ca_pin(pin);
        let s = pinned.to_string();
        assert_eq!(s.split('.').count(), 4, "{s}");
        assert!(s.starts_with(&t.to_string()), "{s}");
        let parsed: Token = s.parse().unwrap();
        assert_eq!(parsed.ca_pin(), Some(pin));
        assert_eq!(parsed, pinned);
        r.verify_at(&parsed, now).unwrap();
        // A three-part token parses without a pin and still verifies.
        let plain: Token = t.to_string().parse().unwrap();
        assert_eq!(plain.ca_pin(), None);
        r.verify_at(&plain, now).unwrap();
    }

    #[test]
    fn bad_pin_rejected() {
        let (t, _, _) = fresh();
        let base = t.to_string();
        let short = URL_SAFE_NO_PAD.encode([0u8; 31]);
        for pin in ["", "!!!", short.as_str()] {
            let e = format!("{base}.{pin}").parse::<Token>().unwrap_err();
            assert!(matches!(e, TokenError::BadPin(_)), "{pin:?}: {e}");
        }
    }

    #[test]
    fn pin_finds_its_certificate_in_a_chain() {
        let ca = b"ca der".to_vec();
        let leaf = b"leaf der".to_vec();
        let pin = CaPin::of_der(&ca);
        assert!(pin.matches(&ca) && !pin.matches(&leaf));
        let chain = vec![leaf.clone(), ca.clone()];
        assert_eq!(pin.find_in(&chain), Some(ca.as_slice()));
        assert_eq!(pin.find_in(&chain[..1]), None);
        let text = pin.to_string();
        assert_eq!(text.parse::<CaPin>().unwrap(), pin);
        assert_eq!(text.len(), 43);
    }
}
