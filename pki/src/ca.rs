//! The certificate authority: creating it, loading it, and issuing server
//! and client certificates (directly or from a CSR).

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use std::net::IpAddr;

use crate::cert::{first_cert_from_pem, parse_der};
use crate::keys::{generate_key, key_matches, parse_key_pem};
use crate::{Identity, PkiError, Validity};

/// Subject CN of the CA certificate.
pub const CA_COMMON_NAME: &str = "ferrofab CA";
/// Subject CN of the controller's server certificate. Deliberately not an
/// identity, so the server certificate can never authenticate a client.
pub const SERVER_COMMON_NAME: &str = "ferrofab-controller";
/// Organization of every certificate ferrofab issues.
const ORGANIZATION: &str = "ferrofab";
/// SANs of a server certificate when none are given.
pub const DEFAULT_SERVER_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A certificate and its freshly generated private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8). Handle as a secret.
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    /// Redacts the key so an issued certificate can be logged safely.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The ferrofab certificate authority: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a new self-signed CA with a fresh P-256 key.
    ///
    /// Path length 0: the CA signs only end-entity certificates, so a
    /// leaked leaf key can never mint further certificates.
    pub fn generate(validity: Validity) -> Result<Self, PkiError> {
        let key = generate_key()?;
        let mut params = base_params(validity)?;
        params.distinguished_name = dn(CA_COMMON_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        tracing::info!(serial = %serial_of(cert.der()), "generated a new CA");
        Ok(Self {
            cert_pem: cert.pem(),
            key,
        })
    }

    /// Loads a CA from PEM text, checking the certificate is a CA and the
    /// key belongs to it. `cert_what`/`key_what` name the sources in errors.
    pub fn from_pem(
        cert_what: &str,
        cert_pem: &[u8],
        key_what: &str,
        key_pem: &[u8],
    ) -> Result<Self, PkiError> {
        let der = first_cert_from_pem(cert_what, cert_pem)?;
        let cert = parse_der(cert_what, &der)?;
        if !cert.is_ca() {
            return Err(PkiError::cert(cert_what, "not a CA certificate"));
        }
        let key = parse_key_pem(key_what, key_pem)?;
        if !key_matches(&cert, &key) {
            return Err(PkiError::KeyMismatch {
                cert: cert_what.to_owned(),
                key: key_what.to_owned(),
            });
        }
        let cert_pem = String::from_utf8(cert_pem.to_vec())
            .map_err(|_| PkiError::cert(cert_what, "not UTF-8 PEM text"))?;
        Ok(Self { cert_pem, key })
    }

    /// The CA certificate, PEM; what clients and servers trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM. Handle as a secret.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues the controller's server certificate for `sans` (DNS names or
    /// IP addresses), with a fresh key.
    pub fn issue_server(
        &self,
        sans: &[String],
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        let key = generate_key()?;
        let mut params = base_params(validity)?;
        params.distinguished_name = dn(SERVER_COMMON_NAME);
        params.subject_alt_names = server_sans(sans)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert_pem = self.sign(&params, &key)?;
        tracing::info!(?sans, "issued server certificate");
        Ok(IssuedCert {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a client certificate for `identity` with a fresh key; for
    /// admins and tenants, whose keys the operator hands out.
    pub fn issue(&self, identity: &Identity, validity: Validity) -> Result<IssuedCert, PkiError> {
        let key = generate_key()?;
        let params = client_params(identity, validity)?;
        let cert_pem = self.sign(&params, &key)?;
        tracing::info!(%identity, "issued client certificate");
        Ok(IssuedCert {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a node's CSR as `identity`.
    ///
    /// Only the CSR's public key is used (after checking its self-signature,
    /// which proves possession of the private key); its subject and
    /// extensions are ignored, because the caller decides — from an
    /// enrollment token or an existing certificate — who the key belongs to.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &Identity,
        validity: Validity,
    ) -> Result<String, PkiError> {
        crate::csr::check_csr(csr_pem)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::BadCsr(e.to_string()))?;
        if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(PkiError::BadCsr("key must be ECDSA P-256".into()));
        }
        let params = client_params(identity, validity)?;
        let cert_pem = self.sign(&params, &csr.public_key)?;
        tracing::info!(%identity, "signed certificate signing request");
        Ok(cert_pem)
    }

    fn sign(
        &self,
        params: &CertificateParams,
        public_key: &impl rcgen::PublicKeyData,
    ) -> Result<String, PkiError> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        Ok(params.signed_by(public_key, &issuer)?.pem())
    }
}

/// Parameters every certificate shares: validity, a random serial, and an
/// authority key identifier so chains build unambiguously after a CA rotation.
fn base_params(validity: Validity) -> Result<CertificateParams, PkiError> {
    let (not_before, not_after) = validity.to_offset()?;
    let mut params = CertificateParams::default();
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Parameters of a client certificate for `identity`.
fn client_params(identity: &Identity, validity: Validity) -> Result<CertificateParams, PkiError> {
    let mut params = base_params(validity)?;
    params.distinguished_name = dn(&identity.to_string());
    let uri = identity
        .to_uri()
        .try_into()
        .map_err(|_| PkiError::InvalidIdentity(identity.to_string()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Turns SAN strings into typed SANs; IPs are recognised first so
/// `127.0.0.1` is not taken for a DNS name.
fn server_sans(sans: &[String]) -> Result<Vec<SanType>, PkiError> {
    let defaults: Vec<String>;
    let sans = if sans.is_empty() {
        defaults = DEFAULT_SERVER_SANS
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        &defaults
    } else {
        sans
    };
    sans.iter().map(|s| server_san(s)).collect()
}

fn server_san(s: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    if !is_dns_name(s) {
        return Err(PkiError::InvalidSan(s.to_owned()));
    }
    let name = s
        .to_owned()
        .try_into()
        .map_err(|_| PkiError::InvalidSan(s.to_owned()))?;
    Ok(SanType::DnsName(name))
}

/// Loose DNS-name check (letters, digits, '-', '.', optional leading
/// wildcard label) to catch typos like spaces or URLs before they end up in
/// a certificate.
fn is_dns_name(s: &str) -> bool {
    let s = s.strip_prefix("*.").unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// 16 random bytes with the top bit clear, so the DER INTEGER is positive
/// and serials never collide in practice.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

fn serial_of(der: &[u8]) -> String {
    parse_der("certificate", der)
        .map(|c| c.raw_serial_as_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::CertInfo;
    use crate::csr::generate_key_and_csr;
    use std::time::{Duration, SystemTime};

    fn days(n: u64) -> Validity {
        Validity::from_now(Duration::from_secs(n * 86_400)).unwrap()
    }

    fn ca() -> Ca {
        Ca::generate(days(10)).unwrap()
    }

    fn der(pem: &str) -> Vec<u8> {
        first_cert_from_pem("t", pem.as_bytes()).unwrap()
    }

    #[test]
    fn issue_then_parse_identity() {
        let ca = ca();
        for id in [
            Identity::Admin,
            Identity::tenant("neuro").unwrap(),
            Identity::node("n1").unwrap(),
        ] {
            let issued = ca.issue(&id, days(1)).unwrap();
            assert_eq!(Identity::from_cert_der(&der(&issued.cert_pem)).unwrap(), id);
        }
    }

    #[test]
    fn issued_cert_chains_to_ca_and_matches_key() {
        let ca = ca();
        let issued = ca.issue(&Identity::Admin, days(1)).unwrap();
        let ca_der = der(ca.cert_pem());
        let ca_cert = parse_der("ca", &ca_der).unwrap();
        let leaf_der = der(&issued.cert_pem);
        let leaf = parse_der("leaf", &leaf_der).unwrap();
        leaf.verify_signature(Some(ca_cert.public_key())).unwrap();
        let key = parse_key_pem("k", issued.key_pem.as_bytes()).unwrap();
        assert!(key_matches(&leaf, &key));
        assert!(!leaf.is_ca());
    }

    #[test]
    fn csr_gets_the_ca_chosen_identity() {
        let ca = ca();
        let req = generate_key_and_csr(&Identity::Admin).unwrap();
        let node = Identity::node("n7").unwrap();
        let cert_pem = ca.sign_csr(&req.csr_pem, &node, days(1)).unwrap();
        let leaf_der = der(&cert_pem);
        assert_eq!(Identity::from_cert_der(&leaf_der).unwrap(), node);
        let leaf = parse_der("leaf", &leaf_der).unwrap();
        let key = parse_key_pem("k", req.key_pem.as_bytes()).unwrap();
        assert!(key_matches(&leaf, &key), "cert must carry the CSR's key");
    }

    /// A P-384 key signed with ecdsa-with-SHA256 used to pass the P-256
    /// check (rcgen reads the algorithm off the signature) and came out as
    /// a certificate with a malformed key.
    #[test]
    fn csr_with_a_p384_key_is_refused_not_signed() {
        let pem = include_str!("../tests/data/csr-p384-sha256.pem");
        let e = ca().sign_csr(pem, &Identity::Admin, days(1)).unwrap_err();
        assert!(
            matches!(&e, PkiError::BadCsr(why) if why.contains("P-384")),
            "{e}"
        );
    }

    #[test]
    fn csr_garbage_rejected() {
        let ca = ca();
        let e = ca
            .sign_csr("not a csr", &Identity::Admin, days(1))
            .unwrap_err();
        assert!(matches!(e, PkiError::BadCsr(_)), "{e}");
    }

    #[test]
    fn server_cert_has_default_sans_and_no_identity() {
        let ca = ca();
        let s = ca.issue_server(&[], days(1)).unwrap();
        let info = CertInfo::from_pem(s.cert_pem.as_bytes()).unwrap();
        assert_eq!(info.dns_names, vec!["localhost".to_owned()]);
        assert_eq!(info.ip_addresses.len(), 2);
        assert_eq!(info.identity, None);
        assert!(Identity::from_cert_der(&der(&s.cert_pem)).is_err());
    }

    #[test]
    fn server_sans_validated() {
        let ca = ca();
        let sans = vec!["ctl.example.com".to_owned(), "10.0.0.1".to_owned()];
        let s = ca.issue_server(&sans, days(1)).unwrap();
        let info = CertInfo::from_pem(s.cert_pem.as_bytes()).unwrap();
        assert_eq!(info.dns_names, vec!["ctl.example.com".to_owned()]);
        assert!(ca.issue_server(&["bad name".to_owned()], days(1)).is_err());
        assert!(ca.issue_server(&["https://x".to_owned()], days(1)).is_err());
    }

    #[test]
    fn ca_round_trips_through_pem_and_checks_key() {
        let a = ca();
        let b = ca();
        let loaded = Ca::from_pem(
            "ca.crt",
            a.cert_pem().as_bytes(),
            "ca.key",
            a.key_pem().as_bytes(),
        )
        .unwrap();
        loaded.issue(&Identity::Admin, days(1)).unwrap();
        let e = Ca::from_pem(
            "ca.crt",
            a.cert_pem().as_bytes(),
            "ca.key",
            b.key_pem().as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(e, PkiError::KeyMismatch { .. }), "{e}");
    }

    #[test]
    fn leaf_is_not_accepted_as_ca() {
        let a = ca();
        let leaf = a.issue(&Identity::Admin, days(1)).unwrap();
        let e = Ca::from_pem(
            "admin.crt",
            leaf.cert_pem.as_bytes(),
            "admin.key",
            leaf.key_pem.as_bytes(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a CA"), "{e}");
    }

    #[test]
    fn expired_cert_detected() {
        let ca = ca();
        let now = SystemTime::now();
        let v = Validity::between(
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
        .unwrap();
        let c = ca.issue(&Identity::Admin, v).unwrap();
        let info = CertInfo::from_pem(c.cert_pem.as_bytes()).unwrap();
        assert!(info.is_expired());
        assert!(info.needs_renewal());
        let fresh = ca.issue(&Identity::Admin, days(30)).unwrap();
        let info = CertInfo::from_pem(fresh.cert_pem.as_bytes()).unwrap();
        assert!(!info.is_expired());
        assert!(!info.needs_renewal());
    }

    #[test]
    fn debug_redacts_keys() {
        let c = ca().issue(&Identity::Admin, days(1)).unwrap();
        assert!(!format!("{c:?}").contains("PRIVATE KEY"));
    }
}
