//! Node enrollment and renewal on top of `ferrofab-pki`.
//!
//! * Bootstrap tokens come from [`ferrofab_pki::Token`]; only the
//!   [`TokenRecord`] (a salted hash, never the secret) is stored, under
//!   `tokens/<id>`, so a copy of the store does not leak usable tokens.
//! * Consuming a token is a compare-and-swap on that record, so two racing
//!   enrollments with the same token cannot both succeed.
//! * Certificates are signed with the `pki init` CA ([`Ca::sign_csr`]); the
//!   CSR's requested subject is ignored, the identity comes from the token
//!   (enrollment) or from the caller's current certificate (renewal).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrofab_pki::{Ca, CaPin, Identity, PkiDir, Token, TokenError, TokenRecord, Validity};
use ferrofab_proto::v1::CreateBootstrapTokenResponse;
use tracing::info;

use super::Shared;
use crate::error::ApiError;
use crate::store::{Revision, Txn, TxnResult};

/// Store prefix of token records.
const TOKEN_PREFIX: &str = "tokens/";

#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("cannot load the enrollment CA from {dir}: {source}")]
    Load {
        dir: String,
        source: ferrofab_pki::PkiError,
    },
}

/// Signs node CSRs with the PKI directory's CA.
pub struct Signer {
    ca: Ca,
    node_validity: Duration,
}

impl Signer {
    /// Loads `ca.crt` and `ca.key` from a `ferrofab pki init` directory.
    pub fn load(dir: &Path, node_validity: Duration) -> Result<Self, SignerError> {
        let ca = PkiDir::new(dir)
            .load_ca()
            .map_err(|source| SignerError::Load {
                dir: dir.display().to_string(),
                source,
            })?;
        Ok(Self { ca, node_validity })
    }

    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The pin printed in tokens, so nodes can trust this CA without a file.
    pub fn ca_pin(&self) -> Result<CaPin, ApiError> {
        CaPin::of_pem(self.ca.cert_pem().as_bytes())
            .map_err(|e| ApiError::Internal(format!("cannot pin the CA certificate: {e}")))
    }

    /// Issues a `node:NAME` certificate for the CSR's key.
    ///
    /// Validity is measured on the real clock even under the test-only
    /// manual clock: TLS peers check certificates against real time.
    pub fn sign(&self, csr_pem: &str, node: &str) -> Result<String, ApiError> {
        let identity =
            Identity::node(node).map_err(|e| ApiError::invalid("node_name", e.to_string()))?;
        let validity = Validity::from_now(self.node_validity)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        self.ca
            .sign_csr(csr_pem, &identity, validity)
            .map_err(|e| match e {
                ferrofab_pki::PkiError::BadCsr(why) => {
                    ApiError::invalid("csr_pem", format!("not a usable PKCS#10 CSR: {why}"))
                }
                other => ApiError::Internal(format!("signing failed: {other}")),
            })
    }
}

fn system_time(unix: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0))
}

fn record_key(id: &str) -> String {
    format!("{TOKEN_PREFIX}{id}")
}

/// Mints a token for `node`; `ttl` 0 means the PKI default (one hour).
/// With enrollment enabled the token carries the CA pin, so that
/// `ferrofab-agent enroll` needs nothing but the token and the address.
pub async fn create_token(
    s: &Shared,
    node: &str,
    ttl: u32,
) -> Result<CreateBootstrapTokenResponse, ApiError> {
    let ttl = match ttl {
        0 => ferrofab_pki::validity::DEFAULT_TOKEN_TTL,
        n => Duration::from_secs(u64::from(n)),
    };
    let (token, record) = Token::generate_at(node, ttl, system_time(s.clock.now()))
        .map_err(|e| ApiError::invalid("node", e.to_string()))?;
    let value = serde_json::to_vec(&record).map_err(|e| ApiError::Internal(e.to_string()))?;
    let key = record_key(&record.id);
    s.commit(Txn::new().when(key.clone(), 0).put(key, value))
        .await?;
    info!(%node, token_id = %record.id, expires_at = %crate::clock::rfc3339(record.expires_at), "bootstrap token created");
    let token = match &s.signer {
        Some(signer) => token.with_ca_pin(signer.ca_pin()?),
        None => token,
    };
    Ok(CreateBootstrapTokenResponse {
        token: token.to_string(),
        expires_at: Some(prost_types::Timestamp {
            seconds: record.expires_at,
            nanos: 0,
        }),
    })
}

fn denied(node: &str, why: String) -> ApiError {
    let who = if node.is_empty() {
        "bootstrap token".to_owned()
    } else {
        format!("bootstrap token for node:{node}")
    };
    ApiError::Denied {
        identity: who,
        action: "Enroll".into(),
        reason: why,
    }
}

/// The stored record of a presented token, with its store revision.
fn lookup(
    s: &Shared,
    presented: &str,
    node: &str,
) -> Result<(Token, TokenRecord, Revision), ApiError> {
    let token: Token = presented
        .parse()
        .map_err(|e: TokenError| denied(node, e.to_string()))?;
    let kv = s
        .store
        .get(&record_key(token.id()))?
        .ok_or_else(|| denied(node, TokenError::Mismatch.to_string()))?;
    let rec: TokenRecord =
        serde_json::from_slice(&kv.value).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((token, rec, kv.mod_revision))
}

/// The node a presented token was minted for, after checking the token
/// (secret, expiry, not used) without consuming it. `requested` is the
/// caller's node name, empty for "the token's node"; a different name is
/// refused. Lets Enroll check its request before burning the token.
pub fn token_node(s: &Shared, presented: &str, requested: &str) -> Result<String, ApiError> {
    let (token, rec, _) = lookup(s, presented, requested)?;
    rec.verify_at(&token, system_time(s.clock.now()))
        .map_err(|e| denied(requested, e.to_string()))?;
    if !requested.is_empty() && rec.node != requested {
        return Err(denied(
            requested,
            format!("bootstrap token was minted for node {:?}", rec.node),
        ));
    }
    Ok(rec.node)
}

/// Verifies `presented` for `node` and marks it used, atomically.
pub async fn consume_token(s: &Shared, presented: &str, node: &str) -> Result<(), ApiError> {
    let denied = |why: String| denied(node, why);
    let (token, mut rec, revision) = lookup(s, presented, node)?;
    let key = record_key(token.id());
    let minted_for = rec
        .consume_at(&token, system_time(s.clock.now()))
        .map_err(|e| denied(e.to_string()))?
        .to_owned();
    if minted_for != node {
        return Err(denied(format!(
            "bootstrap token was minted for node {minted_for:?}"
        )));
    }
    let value = serde_json::to_vec(&rec).map_err(|e| ApiError::Internal(e.to_string()))?;
    match s
        .commit(Txn::new().when(key.clone(), revision).put(key, value))
        .await?
    {
        TxnResult::Committed { .. } => Ok(()),
        TxnResult::CompareFailed { .. } => Err(denied(
            TokenError::AlreadyUsed {
                node: node.to_owned(),
            }
            .to_string(),
        )),
    }
}

/// How long a token record outlives its expiry, so that a late or repeated
/// attempt is told "already used" or "expired" rather than "not valid".
const TOKEN_RECORD_GRACE_S: i64 = 86_400;

/// Whether a stored record can go: expired for longer than the grace.
fn collectable(rec: &TokenRecord, now: i64) -> bool {
    rec.expires_at.saturating_add(TOKEN_RECORD_GRACE_S) < now
}

/// Deletes token records that can no longer matter, so one-time tokens do
/// not accumulate in the store forever. Returns how many went.
pub async fn collect_tokens(s: &Shared) -> Result<usize, ApiError> {
    let now = s.clock.now();
    let (kvs, _) = s.store.list(TOKEN_PREFIX)?;
    let mut removed = 0;
    for kv in kvs {
        // An unreadable record is kept: deleting what we cannot interpret
        // would hide a bug.
        let Ok(rec) = serde_json::from_slice::<TokenRecord>(&kv.value) else {
            continue;
        };
        if !collectable(&rec, now) {
            continue;
        }
        let txn = Txn::new()
            .when(kv.key.clone(), kv.mod_revision)
            .delete(kv.key);
        if let TxnResult::Committed { .. } = s.commit(txn).await? {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_issues_node_identity_for_any_requested_subject() {
        let dir = tempfile::tempdir().expect("tempdir");
        ferrofab_pki::init(dir.path(), &Default::default()).expect("init");
        let signer = Signer::load(dir.path(), Duration::from_secs(3600)).expect("load");
        let req = ferrofab_pki::generate_key_and_csr(&Identity::Admin).expect("csr");
        let pem = signer.sign(&req.csr_pem, "ws1").expect("sign");
        let info = ferrofab_pki::CertInfo::from_pem(pem.as_bytes()).expect("parse");
        assert_eq!(info.identity, Some(Identity::Node("ws1".into())));
        let e = signer.sign("garbage", "ws1").expect_err("bad csr");
        assert!(e.to_string().contains("csr_pem"), "{e}");
    }

    #[test]
    fn records_are_collected_a_day_after_expiry() {
        let (_, rec) =
            Token::generate_at("ws1", Duration::from_secs(60), system_time(1_000)).expect("token");
        assert!(!collectable(&rec, 1_060 + TOKEN_RECORD_GRACE_S));
        assert!(collectable(&rec, 1_061 + TOKEN_RECORD_GRACE_S));
    }

    #[test]
    fn missing_ca_names_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = Signer::load(dir.path(), Duration::from_secs(1))
            .err()
            .expect("must fail");
        assert!(e.to_string().contains("ca.crt"), "{e}");
    }
}
