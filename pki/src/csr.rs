//! The node side of enrollment: make a key locally and ask the CA to
//! certify it, so the node's private key never leaves the node.

use rcgen::{CertificateParams, DistinguishedName, DnType};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    Oid, OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ED25519,
};
use x509_parser::pem::Pem;
use x509_parser::prelude::FromDer;

use crate::keys::generate_key;
use crate::{Identity, PkiError};

/// Largest CSR accepted, PEM. A P-256 CSR is about 400 bytes; the bound
/// keeps a peer from making the CA parse megabytes. A named constant rather
/// than a setting: no supported key needs more.
pub const MAX_CSR_PEM_BYTES: usize = 8 * 1024;

/// PEM label of a PKCS#10 request.
const CSR_LABEL: &str = "CERTIFICATE REQUEST";

/// Length of an uncompressed SEC1 P-256 point: 0x04, X, Y.
const P256_POINT_LEN: usize = 65;

/// Checks a CSR completely before anything is done on its behalf: one PEM
/// block, DER that parses to its end, a self-signature that verifies, and
/// a key the CA supports, spelled the way the CA will copy it into a
/// certificate.
///
/// Why explicitly: rcgen picks the key algorithm from the CSR's
/// *signature* algorithm, so a P-384 key signed with ecdsa-with-SHA256
/// passed a "is it P-256?" check and was copied, 97 bytes long, into a
/// certificate that claims a P-256 key. Here the key's own algorithm and
/// curve OIDs and its encoding are checked, and the signature must be
/// ecdsa-with-SHA256 as the node's [`generate_key_and_csr`] makes it.
/// Supported: ECDSA P-256 with an uncompressed point and named-curve
/// parameters, which is all ferrofab agents generate.
pub fn check_csr(csr_pem: &str) -> Result<(), PkiError> {
    let bad = |why: String| PkiError::BadCsr(why);
    if csr_pem.len() > MAX_CSR_PEM_BYTES {
        return Err(bad(format!(
            "{} bytes, more than the {MAX_CSR_PEM_BYTES} bytes a supported CSR needs",
            csr_pem.len()
        )));
    }
    let der = single_csr_block(csr_pem)?;
    let (rest, req) = X509CertificationRequest::from_der(&der)
        .map_err(|e| bad(format!("not a PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes after the request", rest.len())));
    }
    check_key(&req)?;
    let sig = &req.signature_algorithm.algorithm;
    if *sig != OID_SIG_ECDSA_WITH_SHA256 {
        return Err(bad(format!(
            "signature algorithm {} is not supported; sign with ecdsa-with-SHA256",
            oid_name(sig)
        )));
    }
    req.verify_signature().map_err(|e| {
        bad(format!(
            "its signature does not verify with its own key: {e}"
        ))
    })
}

/// The DER of the one `CERTIFICATE REQUEST` block in `pem`.
fn single_csr_block(pem: &str) -> Result<Vec<u8>, PkiError> {
    let mut blocks = Pem::iter_from_buffer(pem.as_bytes());
    let first = match blocks.next() {
        Some(Ok(b)) => b,
        Some(Err(e)) => return Err(PkiError::BadCsr(format!("bad PEM: {e}"))),
        None => return Err(PkiError::BadCsr("no PEM block found".into())),
    };
    if first.label != CSR_LABEL {
        return Err(PkiError::BadCsr(format!(
            "expected a {CSR_LABEL} PEM block, found {:?}",
            first.label
        )));
    }
    if blocks.next().is_some() {
        return Err(PkiError::BadCsr("more than one PEM block".into()));
    }
    Ok(first.contents)
}

/// The key must be id-ecPublicKey on the named curve P-256, as an
/// uncompressed 65-byte point in a BIT STRING without unused bits (the
/// point itself is checked by the signature verification, which refuses
/// points not on the curve).
fn check_key(req: &X509CertificationRequest<'_>) -> Result<(), PkiError> {
    let spki = &req.certification_request_info.subject_pki;
    let alg = &spki.algorithm.algorithm;
    if *alg != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(PkiError::BadCsr(format!(
            "{} keys are not supported; use an ECDSA P-256 key",
            oid_name(alg)
        )));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .filter(|p| p.tag() == x509_parser::der_parser::asn1_rs::Tag::Oid)
        .and_then(|p| p.as_oid().ok());
    match curve {
        Some(c) if c == OID_EC_P256 => {}
        Some(c) => {
            return Err(PkiError::BadCsr(format!(
                "ECDSA curve {} is not supported; use P-256",
                oid_name(&c)
            )))
        }
        None => {
            return Err(PkiError::BadCsr(
                "the EC key does not name its curve (explicit or missing parameters); \
                 use the named curve P-256"
                    .into(),
            ))
        }
    }
    let key = &spki.subject_public_key;
    if key.unused_bits != 0 {
        return Err(PkiError::BadCsr(
            "the public key BIT STRING has unused bits".into(),
        ));
    }
    let point = key.data.as_ref();
    if point.len() != P256_POINT_LEN || point.first() != Some(&0x04) {
        return Err(PkiError::BadCsr(format!(
            "the P-256 public key must be an uncompressed point of {P256_POINT_LEN} bytes \
             starting with 0x04, found {} bytes",
            point.len()
        )));
    }
    Ok(())
}

/// A readable name for the OIDs users are likely to send.
fn oid_name(oid: &Oid<'_>) -> String {
    let known = [
        (OID_EC_P256, "P-256"),
        (OID_NIST_EC_P384, "P-384"),
        (OID_NIST_EC_P521, "P-521"),
        (OID_PKCS1_RSAENCRYPTION, "RSA"),
        (OID_SIG_ED25519, "Ed25519"),
        (OID_KEY_TYPE_EC_PUBLIC_KEY, "EC"),
        (OID_SIG_ECDSA_WITH_SHA256, "ecdsa-with-SHA256"),
    ];
    known
        .iter()
        .find(|(o, _)| o == oid)
        .map_or_else(|| oid.to_id_string(), |(_, n)| (*n).to_string())
}

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

    fn refusal(pem: &str) -> String {
        match check_csr(pem) {
            Err(PkiError::BadCsr(why)) => why,
            other => panic!("expected BadCsr, got {other:?}"),
        }
    }

    #[test]
    fn agent_csrs_pass_the_check() {
        let r = generate_key_and_csr(&Identity::node("n1").unwrap()).unwrap();
        check_csr(&r.csr_pem).unwrap();
        let key = generate_key().unwrap();
        let renew = csr_for_key(&key.serialize_pem(), &Identity::Admin).unwrap();
        check_csr(&renew).unwrap();
    }

    // The fixtures were made with `openssl req -new -newkey ...` (see
    // tests/data/README.md), since rcgen cannot make most of them.
    #[test]
    fn other_keys_and_encodings_are_refused_by_name() {
        let cases = [
            (include_str!("../tests/data/csr-p384-sha256.pem"), "P-384"),
            (include_str!("../tests/data/csr-p384-sha384.pem"), "P-384"),
            (include_str!("../tests/data/csr-rsa2048.pem"), "RSA"),
            (include_str!("../tests/data/csr-ed25519.pem"), "Ed25519"),
            (
                include_str!("../tests/data/csr-p256-explicit.pem"),
                "named curve",
            ),
            (
                include_str!("../tests/data/csr-p256-compressed.pem"),
                "uncompressed",
            ),
        ];
        for (pem, says) in cases {
            let why = refusal(pem);
            assert!(why.contains(says), "{says}: {why}");
        }
    }

    #[test]
    fn malformed_requests_are_refused() {
        let good = generate_key_and_csr(&Identity::Admin).unwrap().csr_pem;
        assert!(refusal("garbage").contains("PEM"));
        assert!(refusal(&format!("{good}{good}")).contains("more than one"));
        assert!(refusal(&"x".repeat(MAX_CSR_PEM_BYTES + 1)).contains("bytes"));
        let validity = crate::Validity::from_now(std::time::Duration::from_secs(3600)).unwrap();
        let cert = crate::Ca::generate(validity)
            .unwrap()
            .cert_pem()
            .to_string();
        assert!(refusal(&cert).contains("CERTIFICATE REQUEST"));
        // One flipped bit in the signed part: the signature no longer holds.
        let block = Pem::iter_from_buffer(good.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let mut der = block.contents;
        let at = der.len() / 2;
        der[at] ^= 0x01;
        let why = refusal(&pem_of(&der));
        assert!(!why.is_empty());
    }

    fn pem_of(der: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {CSR_LABEL}-----\n{}\n-----END {CSR_LABEL}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn produces_pem_blocks_and_redacts_key() {
        let r = generate_key_and_csr(&Identity::node("n1").unwrap()).unwrap();
        assert!(r.csr_pem.contains("BEGIN CERTIFICATE REQUEST"));
        assert!(r.key_pem.contains("BEGIN PRIVATE KEY"));
        assert!(!format!("{r:?}").contains("BEGIN PRIVATE KEY"));
    }
}
