//! Private keys: generation (always ECDSA P-256), parsing and pairing with
//! certificates.

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use x509_parser::prelude::X509Certificate;

use crate::PkiError;

/// A fresh ECDSA P-256 key.
///
/// P-256 because every TLS stack ferrofab talks to (rustls, OpenSSL-based
/// tools, Go) supports it, and its keys and signatures are small.
pub fn generate_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(PkiError::from)
}

/// Parses a PEM private key, attributing errors to `what`.
pub fn parse_key_pem(what: &str, pem: &[u8]) -> Result<KeyPair, PkiError> {
    let text = std::str::from_utf8(pem).map_err(|_| PkiError::key(what, "not UTF-8 PEM text"))?;
    if !text.contains("-----BEGIN") {
        return Err(PkiError::key(what, "no PEM block found"));
    }
    if text.contains("CERTIFICATE-----") {
        return Err(PkiError::key(
            what,
            "contains a certificate, not a private key (are the cert and key paths swapped?)",
        ));
    }
    KeyPair::from_pem(text).map_err(|e| PkiError::key(what, e.to_string()))
}

/// Whether `key` is the private half of `cert`'s public key.
pub(crate) fn key_matches(cert: &X509Certificate<'_>, key: &KeyPair) -> bool {
    cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_through_pem() {
        let k = generate_key().unwrap();
        let back = parse_key_pem("k", k.serialize_pem().as_bytes()).unwrap();
        assert_eq!(back.public_key_raw(), k.public_key_raw());
    }

    #[test]
    fn rejects_garbage_and_certificates() {
        assert!(parse_key_pem("k", b"nope").is_err());
        let e = parse_key_pem(
            "k.key",
            b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("swapped"), "{e}");
    }
}
