//! API tokens: bearer credentials for the HTTP/JSON API, each bound to an
//! identity (`admin` or `tenant:NAME`) and an expiry.
//!
//! A token is `ffapi1.<id>.<secret>`. The store keeps, under
//! `apitokens/<id>`, the identity, the expiry and a SHA-256 hash of the
//! secret (with a context string), never the secret itself: a copy of the
//! store (a backup, an etcd snapshot) holds no usable token. The secret is
//! 256 random bits, so a fast hash is enough (nothing to brute-force).
//! Revoking deletes the record; a revoked, expired or unknown token is
//! refused with the same UNAUTHENTICATED message, which tells a guesser
//! nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ferrofab_proto::v1::{ApiTokenInfo, CreateApiTokenResponse};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::info;

use super::Shared;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::store::{Txn, TxnResult};

const PREFIX: &str = "apitokens/";
/// Version tag that starts every token, so the format can change.
pub const TOKEN_TAG: &str = "ffapi1";
const ID_BYTES: usize = 9;
const SECRET_BYTES: usize = 32;
const HASH_CONTEXT: &[u8] = b"ferrofab-api-token-v1\0";
/// Validity when the request names none.
pub const DEFAULT_TTL_SECONDS: u32 = 30 * 86_400;
/// Longest validity: a credential nobody has to renew is one nobody
/// remembers to revoke.
pub const MAX_TTL_SECONDS: u32 = 366 * 86_400;
/// Most API tokens stored at once (every one is read on ListApiTokens and
/// kept in the store forever until revoked or collected after expiry).
pub const MAX_TOKENS: usize = 10_000;
/// Longest description, bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 256;

/// What the store keeps of a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    id: String,
    identity: String,
    description: String,
    created_at: i64,
    expires_at: i64,
    /// Hex SHA-256 of HASH_CONTEXT || secret.
    hash: String,
}

impl Record {
    fn info(&self) -> ApiTokenInfo {
        ApiTokenInfo {
            id: self.id.clone(),
            identity: self.identity.clone(),
            description: self.description.clone(),
            created_at: Some(ts(self.created_at)),
            expires_at: Some(ts(self.expires_at)),
        }
    }
}

fn ts(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

fn hash(secret: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(HASH_CONTEXT);
    h.update(secret);
    hex::encode(h.finalize())
}

fn random(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// The identity a token may be bound to: admin, or an existing tenant.
fn bindable(s: &Shared, text: &str) -> Result<Identity, ApiError> {
    let id: Identity = text
        .parse()
        .map_err(|e| ApiError::invalid("identity", format!("{e}")))?;
    match &id {
        Identity::Admin => Ok(id),
        Identity::Tenant(t) => {
            if s.cache.read().tenants.contains_key(t) {
                Ok(id)
            } else {
                Err(ApiError::invalid(
                    "identity",
                    format!("tenant {t:?} does not exist"),
                ))
            }
        }
        Identity::Node(_) => Err(ApiError::invalid(
            "identity",
            "nodes authenticate with certificates only; use admin or tenant:NAME",
        )),
    }
}

/// Mints a token for `identity` valid for `ttl_seconds` (0: the default).
pub async fn create(
    s: &Shared,
    identity: &str,
    ttl_seconds: u32,
    description: &str,
) -> Result<CreateApiTokenResponse, ApiError> {
    let who = bindable(s, identity)?;
    let ttl = match ttl_seconds {
        0 => DEFAULT_TTL_SECONDS,
        n if n > MAX_TTL_SECONDS => {
            return Err(ApiError::invalid(
                "ttl_seconds",
                format!("{n} is longer than the maximum of {MAX_TTL_SECONDS} (366 days)"),
            ))
        }
        n => n,
    };
    if description.len() > MAX_DESCRIPTION_BYTES {
        return Err(ApiError::invalid(
            "description",
            format!("longer than {MAX_DESCRIPTION_BYTES} bytes"),
        ));
    }
    let (existing, _) = s.store.list(PREFIX)?;
    if existing.len() >= MAX_TOKENS {
        s.metrics.refused("api_tokens");
        return Err(ApiError::Exhausted(format!(
            "{MAX_TOKENS} API tokens exist already (the most the controller keeps); revoke unused ones"
        )));
    }
    let id = URL_SAFE_NO_PAD.encode(random(ID_BYTES));
    let secret = random(SECRET_BYTES);
    let now = s.clock.now();
    let rec = Record {
        id: id.clone(),
        identity: who.to_string(),
        description: description.to_string(),
        created_at: now,
        expires_at: now.saturating_add(i64::from(ttl)),
        hash: hash(&secret),
    };
    let value = serde_json::to_vec(&rec).map_err(|e| ApiError::Internal(e.to_string()))?;
    let k = key(&id);
    s.commit(Txn::new().when(k.clone(), 0).put(k, value))
        .await?;
    info!(token_id = %id, identity = %who, ttl, "API token created");
    Ok(CreateApiTokenResponse {
        token: format!("{TOKEN_TAG}.{id}.{}", URL_SAFE_NO_PAD.encode(&secret)),
        info: Some(rec.info()),
    })
}

fn records(s: &Shared) -> Result<Vec<Record>, ApiError> {
    let (kvs, _) = s.store.list(PREFIX)?;
    Ok(kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Record>(&kv.value).ok())
        .collect())
}

/// Every token's public facts, oldest first.
pub fn list(s: &Shared) -> Result<Vec<ApiTokenInfo>, ApiError> {
    let mut recs = records(s)?;
    recs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(recs.iter().map(Record::info).collect())
}

/// Deletes the token `id`; its bearer is refused from the next request on.
pub async fn revoke(s: &Shared, id: &str) -> Result<ApiTokenInfo, ApiError> {
    if id.is_empty() {
        return Err(ApiError::invalid("id", "is required"));
    }
    let k = key(id);
    let kv = s
        .store
        .get(&k)?
        .ok_or_else(|| ApiError::not_found("api token", id))?;
    let rec: Record =
        serde_json::from_slice(&kv.value).map_err(|e| ApiError::Internal(e.to_string()))?;
    match s
        .commit(Txn::new().when(k.clone(), kv.mod_revision).delete(k))
        .await?
    {
        TxnResult::Committed { .. } => {
            info!(token_id = %id, identity = %rec.identity, "API token revoked");
            Ok(rec.info())
        }
        TxnResult::CompareFailed { .. } => Err(ApiError::not_found("api token", id)),
    }
}

/// The one refusal for every bad token, whatever was wrong with it.
fn refused() -> ApiError {
    ApiError::Unauthenticated(
        "API token is not valid (unknown, revoked or expired); ask an administrator for a new one"
            .into(),
    )
}

/// The identity a presented bearer token speaks for.
pub fn authenticate(s: &Shared, presented: &str) -> Result<Identity, ApiError> {
    let mut parts = presented.trim().splitn(3, '.');
    let (Some(TOKEN_TAG), Some(id), Some(secret)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ApiError::Unauthenticated(format!(
            "malformed API token (expected {TOKEN_TAG}.<id>.<secret>)"
        )));
    };
    let secret = URL_SAFE_NO_PAD.decode(secret).map_err(|_| refused())?;
    if id.is_empty() || id.len() > 64 || id.contains('/') {
        return Err(refused());
    }
    let kv = s.store.get(&key(id))?.ok_or_else(refused)?;
    let rec: Record = serde_json::from_slice(&kv.value).map_err(|_| refused())?;
    let want = hash(&secret);
    let same: bool = subtle::ConstantTimeEq::ct_eq(want.as_bytes(), rec.hash.as_bytes()).into();
    if !same || rec.expires_at <= s.clock.now() {
        return Err(refused());
    }
    rec.identity.parse().map_err(|_| refused())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_the_secret_and_is_not_it() {
        let a = hash(b"one");
        assert_ne!(a, hash(b"two"));
        assert_eq!(a.len(), 64);
        assert!(!a.contains("one"));
    }
}
