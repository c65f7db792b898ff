//! The node side of enrollment: make a key locally and ask the CA to
//! certify it, so the node's private key never leaves the node.

use rcgen::{CertificateParams, DistinguishedName, DnType};

use crate::keys::generate_key;
use crate::{Identity, PkiError};

/// A private key and a CSR for it, both PEM.
#[derive(Clone)]
pub struct KeyAndCsr {
    /// The private key (PKCS#8). Keep it on the node, mode 0600.
    pub key_pem: String,
    /// The certificate signing request to send to the controller.
    pub csr_pem: String,
}

impl std::fmt::Debug for KeyAndCsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndCsr")
            .field("key_pem", &"<redacted>")
            .field("csr_pem", &self.csr_pem)
            .finish()
    }
}

/// Generates a P-256 key and a CSR whose subject CN is `requested`.
///
/// The CN is informational only: the CA ignores it and decides the identity
/// itself (see [`crate::Ca::sign_csr`]).
pub fn generate_key_and_csr(requested: &Identity) -> Result<KeyAndCsr, PkiError> {
    let key = generate_key()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, requested.to_string());
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndCsr {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem()?,
    })
}

/// A CSR for a key the node already has, for certificate renewal: only
/// the certificate file changes, in one atomic rename, so a crash mid-way
/// can never leave a key that does not match its certificate.
pub fn csr_for_key(key_pem: &str, requested: &Identity) -> Result<String, PkiError> {
    let key = crate::keys::parse_key_pem("node key", key_pem.as_bytes())?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, requested.to_string());
    params.distinguished_name = dn;
    Ok(params.serialize_request(&key)?.pem()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produces_pem_blocks_and_redacts_key() {
        let r = generate_key_and_csr(&Identity::node("n1").unwrap()).unwrap();
        assert!(r.csr_pem.contains("BEGIN CERTIFICATE REQUEST"));
        assert!(r.key_pem.contains("BEGIN PRIVATE KEY"));
        assert!(!format!("{r:?}").contains("BEGIN PRIVATE KEY"));
    }
}
