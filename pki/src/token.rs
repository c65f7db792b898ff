//! One-time bootstrap tokens for node enrollment.
//!
//! The controller hands an operator a token bound to a node name; the node
//! presents it once to get its first certificate. Only a SHA-256 hash of the
//! secret is stored, so a leaked controller store does not leak usable
//! tokens. Storage is the controller's business: this module is pure.

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
    /// The requested time to live is zero or absurd.
    #[error("invalid token TTL: {0}")]
    InvalidTtl(&'static str),
}

/// A bootstrap token as handed to the operator: `fft1.<id>.<secret>`.
///
/// `Display` reveals the secret (that is how it is shown once); `Debug`
/// does not.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    id: String,
    secret: [u8; SECRET_BYTES],
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
        )
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl FromStr for Token {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().split('.');
        let (Some(prefix), Some(id), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("expected fft1.<id>.<secret>"));
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
        Ok(Token {
            id: id.to_owned(),
            secret,
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
            "fft1.AAAAAAAAAAAA.x.y",
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
}
