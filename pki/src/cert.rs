//! Reading certificates back: PEM decoding, the facts the rest of ferrofab
//! needs (identity, dates, SANs), expiry and the renewal window.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::identity::identity_of;
use crate::validity::from_unix_seconds;
use crate::{Identity, PkiError};

/// PEM label of certificates.
const CERT_LABEL: &str = "CERTIFICATE";

/// Decodes every `CERTIFICATE` block of a PEM buffer into DER.
///
/// `what` names the source (usually a file) for error messages. Other block
/// types are an error, because a key pasted into a certificate file is a
/// mistake worth reporting.
pub fn certs_from_pem(what: &str, pem: &[u8]) -> Result<Vec<Vec<u8>>, PkiError> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| PkiError::cert(what, format!("bad PEM: {e}")))?;
        if block.label != CERT_LABEL {
            return Err(PkiError::cert(
                what,
                format!("expected a CERTIFICATE PEM block, found {:?}", block.label),
            ));
        }
        out.push(block.contents);
    }
    if out.is_empty() {
        return Err(PkiError::cert(what, "no PEM CERTIFICATE block found"));
    }
    Ok(out)
}

/// The first certificate of a PEM buffer, as DER.
pub fn first_cert_from_pem(what: &str, pem: &[u8]) -> Result<Vec<u8>, PkiError> {
    let mut certs = certs_from_pem(what, pem)?;
    Ok(certs.swap_remove(0))
}

/// One certificate (DER) as a PEM document, 64 columns per line, so that
/// a certificate learned from a handshake can be written as a CA file.
pub fn cert_der_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {CERT_LABEL}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {CERT_LABEL}-----\n"));
    out
}

/// Parses DER fully, insisting nothing trails the certificate.
pub(crate) fn parse_der<'a>(what: &str, der: &'a [u8]) -> Result<X509Certificate<'a>, PkiError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| PkiError::cert(what, e.to_string()))?;
    if !rest.is_empty() {
        return Err(PkiError::cert(what, "trailing bytes after DER certificate"));
    }
    Ok(cert)
}

/// What ferrofab cares about in a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's common name, if any.
    pub common_name: Option<String>,
    /// The ferrofab identity, if the CN is one (the CA and server
    /// certificates have none).
    pub identity: Option<Identity>,
    /// Serial number, colon-separated hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Whether the certificate may sign others.
    pub is_ca: bool,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
}

impl CertInfo {
    /// Facts from a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let cert = parse_der("certificate", der)?;
        Ok(Self::from_parsed(&cert))
    }

    /// Facts from the first certificate in a PEM buffer.
    pub fn from_pem(pem: &[u8]) -> Result<Self, PkiError> {
        Self::from_der(&first_cert_from_pem("certificate", pem)?)
    }

    /// Facts from the first certificate of a PEM file; errors name the file.
    pub fn load(path: &std::path::Path) -> Result<Self, PkiError> {
        let what = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| PkiError::io(path, e))?;
        let der = first_cert_from_pem(&what, &pem)?;
        Ok(Self::from_parsed(&parse_der(&what, &der)?))
    }

    fn from_parsed(cert: &X509Certificate<'_>) -> Self {
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let (dns_names, ip_addresses) = sans(cert);
        Self {
            common_name,
            identity: identity_of(cert).ok(),
            serial: cert.raw_serial_as_string(),
            not_before: from_unix_seconds(cert.validity().not_before.timestamp()),
            not_after: from_unix_seconds(cert.validity().not_after.timestamp()),
            is_ca: cert.is_ca(),
            dns_names,
            ip_addresses,
        }
    }

    /// Total lifetime, `notAfter - notBefore`.
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO)
    }

    /// Whether `now` is past `notAfter`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        now > self.not_after
    }

    /// Whether the certificate has expired.
    pub fn is_expired(&self) -> bool {
        self.is_expired_at(SystemTime::now())
    }

    /// Whether `now` is before `notBefore`.
    pub fn is_not_yet_valid_at(&self, now: SystemTime) -> bool {
        now < self.not_before
    }

    /// When renewal becomes due: two thirds into the lifetime.
    ///
    /// Renewing in the last third (rather than at a fixed margin) scales to
    /// both 1-day test certificates and 1-year admin certificates, and leaves
    /// a controller outage of up to a third of the lifetime survivable.
    pub fn renew_after(&self) -> SystemTime {
        self.not_before + self.lifetime() * 2 / 3
    }

    /// Whether `now` falls in the renewal window (or past expiry).
    pub fn needs_renewal_at(&self, now: SystemTime) -> bool {
        now >= self.renew_after()
    }

    /// Whether the certificate should be renewed now.
    pub fn needs_renewal(&self) -> bool {
        self.needs_renewal_at(SystemTime::now())
    }
}

/// DNS and IP subject alternative names, ignoring the other kinds.
fn sans(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return (dns, ips);
    };
    for name in &ext.value.general_names {
        match name {
            GeneralName::DNSName(d) => dns.push((*d).to_owned()),
            GeneralName::IPAddress(bytes) => {
                if let Some(ip) = ip_from_bytes(bytes) {
                    ips.push(ip);
                }
            }
            _ => {}
        }
    }
    (dns, ips)
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_certificate_pem() {
        let err = certs_from_pem(
            "x.crt",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("x.crt: "), "{err}");
        assert!(certs_from_pem("x.crt", b"hello").is_err());
        assert!(certs_from_pem("x.crt", b"").is_err());
    }

    #[test]
    fn renewal_window_is_last_third() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let info = CertInfo {
            common_name: None,
            identity: None,
            serial: String::new(),
            not_before: start,
            not_after: start + Duration::from_secs(300),
            is_ca: false,
            dns_names: vec![],
            ip_addresses: vec![],
        };
        assert!(!info.needs_renewal_at(start + Duration::from_secs(199)));
        assert!(info.needs_renewal_at(start + Duration::from_secs(200)));
        assert!(!info.is_expired_at(start + Duration::from_secs(300)));
        assert!(info.is_expired_at(start + Duration::from_secs(301)));
        assert!(info.is_not_yet_valid_at(start - Duration::from_secs(1)));
    }
}
