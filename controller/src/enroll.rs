//! Node enrollment: single-use bootstrap tokens and CSR signing.
//!
//! TEMPORARY signer: until `ferrofab-pki` lands on main this module signs
//! CSRs itself with rcgen (`Ca::sign_csr` will replace [`Signer::sign`]).
//! Tokens are stored hashed (SHA-256) so a store copy does not leak them.

use ferrofab_proto::v1::CreateBootstrapTokenResponse;
use rand::RngCore;
use rcgen::{CertificateSigningRequestParams, DnType, Issuer, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::Shared;
use crate::error::ApiError;
use crate::store::{Txn, TxnResult};

const TOKEN_PREFIX: &str = "tokens/";
const DEFAULT_TTL: u32 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("cannot read enrollment CA {path}: {reason}")]
    Load { path: String, reason: String },
}

/// Signs node CSRs with the enrollment CA.
pub struct Signer {
    ca_cert_pem: String,
    ca_key_pem: String,
    validity_days: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct TokenRecord {
    node: String,
    expires_at: i64,
    used: bool,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Signer {
    pub fn load(
        cert: &std::path::Path,
        key: &std::path::Path,
        validity_days: u32,
    ) -> Result<Self, SignerError> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| SignerError::Load {
                path: p.display().to_string(),
                reason: e.to_string(),
            })
        };
        let s = Self {
            ca_cert_pem: read(cert)?,
            ca_key_pem: read(key)?,
            validity_days,
        };
        s.issuer().map_err(|reason| SignerError::Load {
            path: cert.display().to_string(),
            reason,
        })?;
        Ok(s)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, String> {
        let key = KeyPair::from_pem(&self.ca_key_pem).map_err(|e| format!("CA key: {e}"))?;
        Issuer::from_ca_cert_pem(&self.ca_cert_pem, key).map_err(|e| format!("CA certificate: {e}"))
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// Issues a `node:NAME` client certificate for the CSR's key; the
    /// subject requested in the CSR is ignored.
    pub fn sign(&self, csr_pem: &str, node: &str, now: i64) -> Result<String, ApiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| ApiError::invalid("csr_pem", format!("not a valid PKCS#10 CSR: {e}")))?;
        let p = &mut csr.params;
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, format!("node:{node}"));
        p.subject_alt_names.clear();
        p.is_ca = rcgen::IsCa::NoCa;
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let start = time::OffsetDateTime::from_unix_timestamp(now - 300)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        p.not_before = start;
        p.not_after = start + time::Duration::days(i64::from(self.validity_days));
        let issuer = self.issuer().map_err(ApiError::Internal)?;
        let cert = csr
            .signed_by(&issuer)
            .map_err(|e| ApiError::Internal(format!("signing failed: {e}")))?;
        Ok(cert.pem())
    }
}

/// Mints a token for `node`.
pub async fn create_token(
    s: &Shared,
    node: &str,
    ttl: u32,
) -> Result<CreateBootstrapTokenResponse, ApiError> {
    let mut raw = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = format!("ffbt.{}", hex::encode(raw));
    let ttl = if ttl == 0 { DEFAULT_TTL } else { ttl };
    let expires_at = s.clock.now() + i64::from(ttl);
    let rec = TokenRecord {
        node: node.to_string(),
        expires_at,
        used: false,
    };
    let value = serde_json::to_vec(&rec).map_err(|e| ApiError::Internal(e.to_string()))?;
    let key = format!("{TOKEN_PREFIX}{}", hash(&token));
    s.commit(Txn::new().when(key.clone(), 0).put(key, value))
        .await?;
    Ok(CreateBootstrapTokenResponse {
        token,
        expires_at: Some(prost_types::Timestamp {
            seconds: expires_at,
            nanos: 0,
        }),
    })
}

/// Marks the token used (atomically, so two racing enrollments cannot both
/// succeed) after checking it is valid for `node`.
pub async fn consume_token(s: &Shared, token: &str, node: &str) -> Result<(), ApiError> {
    let denied = |why: &str| ApiError::Denied {
        identity: format!("bootstrap token for node:{node}"),
        action: "Enroll".into(),
        reason: why.into(),
    };
    let key = format!("{TOKEN_PREFIX}{}", hash(token));
    let kv = s
        .store
        .get(&key)?
        .ok_or_else(|| denied("unknown bootstrap token"))?;
    let mut rec: TokenRecord =
        serde_json::from_slice(&kv.value).map_err(|e| ApiError::Internal(e.to_string()))?;
    if rec.used {
        return Err(denied("bootstrap token was already used"));
    }
    if rec.expires_at < s.clock.now() {
        return Err(denied("bootstrap token has expired"));
    }
    if rec.node != node {
        return Err(denied(&format!(
            "bootstrap token was minted for node {}",
            rec.node
        )));
    }
    rec.used = true;
    let value = serde_json::to_vec(&rec).map_err(|e| ApiError::Internal(e.to_string()))?;
    match s
        .commit(
            Txn::new()
                .when(key.clone(), kv.mod_revision)
                .put(key, value),
        )
        .await?
    {
        TxnResult::Committed { .. } => Ok(()),
        TxnResult::CompareFailed { .. } => Err(denied("bootstrap token was already used")),
    }
}
