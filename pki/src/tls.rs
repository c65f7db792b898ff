//! Loading and checking the PEM material a TLS endpoint needs.
//!
//! tonic takes PEM bytes (`Identity::from_pem`, `Certificate::from_pem`),
//! so these functions return bytes — but only after checking everything
//! that would otherwise surface as an opaque handshake failure: files
//! exist, parse, belong together, chain to the CA and are in date.

use std::path::Path;
use std::time::SystemTime;

use crate::cert::{cert_der_to_pem, certs_from_pem, first_cert_from_pem, parse_der};
use crate::keys::{key_matches, parse_key_pem};
use crate::layout::{display, read_file, warn_if_key_exposed, PkiDir};
use crate::validity::unix_seconds;
use crate::{Identity, PkiError};

/// PEM material for the controller's TLS listener.
#[derive(Clone)]
pub struct ServerTlsPem {
    /// Server certificate (chain), PEM.
    pub cert: Vec<u8>,
    /// Server private key, PEM.
    pub key: Vec<u8>,
    /// CA used to verify client certificates, PEM.
    pub client_ca: Vec<u8>,
}

/// PEM material for a client (CLI, agent) connecting to the controller.
#[derive(Clone)]
pub struct ClientTlsPem {
    /// CA that signed the controller's certificate, PEM.
    pub ca: Vec<u8>,
    /// Client certificate, PEM.
    pub cert: Vec<u8>,
    /// Client private key, PEM.
    pub key: Vec<u8>,
    /// The identity the client certificate carries.
    pub identity: Identity,
}

impl std::fmt::Debug for ServerTlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTlsPem").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ClientTlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTlsPem")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Loads `server.crt`, `server.key` and `ca.crt` from a `pki init`
/// directory.
///
/// The served chain always ends with the CA certificate: a node enrolling
/// with only a pinned token learns the CA from the handshake (see
/// [`crate::CaPin`]), so the CA must be in what the server presents.
pub fn load_server_tls(dir: &Path) -> Result<ServerTlsPem, PkiError> {
    let layout = PkiDir::new(dir);
    let pair = load_checked(
        &layout.ca_cert(),
        &layout.server_cert(),
        &layout.server_key(),
    )?;
    let cert = chain_with_ca(&display(&layout.server_cert()), pair.cert, &pair.ca)?;
    Ok(ServerTlsPem {
        cert,
        key: pair.key,
        client_ca: pair.ca,
    })
}

/// `chain` (PEM) with the CA's first certificate appended unless the chain
/// already contains it.
fn chain_with_ca(what: &str, mut chain: Vec<u8>, ca: &[u8]) -> Result<Vec<u8>, PkiError> {
    let ca_der = first_cert_from_pem("CA certificate", ca)?;
    if certs_from_pem(what, &chain)?.contains(&ca_der) {
        return Ok(chain);
    }
    if !chain.ends_with(b"\n") {
        chain.push(b'\n');
    }
    chain.extend_from_slice(cert_der_to_pem(&ca_der).as_bytes());
    Ok(chain)
}

/// Loads a client's CA, certificate and key, checking the certificate
/// carries a ferrofab identity.
pub fn load_client_tls(ca: &Path, cert: &Path, key: &Path) -> Result<ClientTlsPem, PkiError> {
    let pair = load_checked(ca, cert, key)?;
    let der = first_cert_from_pem(&display(cert), &pair.cert)?;
    let identity = Identity::from_cert_der(&der).map_err(|e| {
        PkiError::cert(
            display(cert),
            format!("not a ferrofab client certificate: {e}"),
        )
    })?;
    Ok(ClientTlsPem {
        ca: pair.ca,
        cert: pair.cert,
        key: pair.key,
        identity,
    })
}

struct Loaded {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// Reads the three files and checks they form a usable, current set.
fn load_checked(ca_path: &Path, cert_path: &Path, key_path: &Path) -> Result<Loaded, PkiError> {
    let (ca_what, cert_what, key_what) = (display(ca_path), display(cert_path), display(key_path));
    let ca = read_file(ca_path)?;
    let cert = read_file(cert_path)?;
    let key = read_file(key_path)?;
    warn_if_key_exposed(key_path);

    let ca_der = first_cert_from_pem(&ca_what, &ca)?;
    let ca_cert = parse_der(&ca_what, &ca_der)?;
    if !ca_cert.is_ca() {
        return Err(PkiError::cert(&ca_what, "not a CA certificate"));
    }
    let leaf_der = first_cert_from_pem(&cert_what, &cert)?;
    let leaf = parse_der(&cert_what, &leaf_der)?;
    check_dates(&cert_what, &leaf, SystemTime::now())?;
    leaf.verify_signature(Some(ca_cert.public_key()))
        .map_err(|_| PkiError::NotIssuedByCa {
            cert: cert_what.clone(),
            ca: ca_what.clone(),
        })?;
    let key_pair = parse_key_pem(&key_what, &key)?;
    if !key_matches(&leaf, &key_pair) {
        return Err(PkiError::KeyMismatch {
            cert: cert_what,
            key: key_what,
        });
    }
    Ok(Loaded { ca, cert, key })
}

fn check_dates(
    what: &str,
    cert: &x509_parser::prelude::X509Certificate<'_>,
    now: SystemTime,
) -> Result<(), PkiError> {
    let now = unix_seconds(now);
    let not_after = cert.validity().not_after.timestamp();
    if now > not_after {
        return Err(PkiError::Expired {
            what: what.to_owned(),
            not_after,
        });
    }
    if now < cert.validity().not_before.timestamp() {
        return Err(PkiError::cert(
            what,
            "certificate is not valid yet (check the clock)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{init, issue_to_dir, write_cert, write_key, InitOptions};
    use crate::{Ca, Validity};
    use std::time::Duration;

    fn hour() -> Validity {
        Validity::from_now(Duration::from_secs(3600)).unwrap()
    }

    #[test]
    fn server_and_client_load() {
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path(), &InitOptions::default()).unwrap();
        let s = load_server_tls(tmp.path()).unwrap();
        assert!(!s.key.is_empty());
        // The served chain is leaf + CA, and the CA is not appended twice.
        let chain = certs_from_pem("chain", &s.cert).unwrap();
        let ca_der = first_cert_from_pem("ca", &s.client_ca).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], ca_der);
        let again = chain_with_ca("chain", s.cert.clone(), &s.client_ca).unwrap();
        assert_eq!(again, s.cert);
        let ca = PkiDir::new(tmp.path()).load_ca().unwrap();
        let (c, k) = issue_to_dir(&ca, &Identity::Admin, hour(), tmp.path(), false).unwrap();
        let l = PkiDir::new(tmp.path());
        let client = load_client_tls(&l.ca_cert(), &c, &k).unwrap();
        assert_eq!(client.identity, Identity::Admin);
    }

    #[test]
    fn errors_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path(), &InitOptions::default()).unwrap();
        let l = PkiDir::new(tmp.path());
        // Missing file.
        let e = load_client_tls(&l.ca_cert(), &tmp.path().join("nope.crt"), &l.server_key())
            .unwrap_err();
        assert!(e.to_string().contains("nope.crt"), "{e}");
        // Server cert is not a client identity.
        let e = load_client_tls(&l.ca_cert(), &l.server_cert(), &l.server_key()).unwrap_err();
        assert!(e.to_string().contains("server.crt"), "{e}");
        // Swapped cert and key.
        let e = load_client_tls(&l.ca_cert(), &l.server_key(), &l.server_cert()).unwrap_err();
        assert!(e.to_string().contains("server.key"), "{e}");
        // Key of another certificate.
        let e = load_client_tls(&l.ca_cert(), &l.server_cert(), &l.ca_key()).unwrap_err();
        assert!(matches!(e, PkiError::KeyMismatch { .. }), "{e}");
    }

    #[test]
    fn foreign_ca_and_expired_cert_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path(), &InitOptions::default()).unwrap();
        let l = PkiDir::new(tmp.path());
        let other = Ca::generate(hour()).unwrap();
        let foreign = tmp.path().join("other-ca.crt");
        write_cert(&foreign, other.cert_pem(), false).unwrap();
        let e = load_client_tls(&foreign, &l.server_cert(), &l.server_key()).unwrap_err();
        assert!(matches!(e, PkiError::NotIssuedByCa { .. }), "{e}");

        let ca = l.load_ca().unwrap();
        let now = SystemTime::now();
        let old = Validity::between(
            now - Duration::from_secs(7200),
            now - Duration::from_secs(60),
        )
        .unwrap();
        let issued = ca.issue(&Identity::Admin, old).unwrap();
        let (c, k) = (tmp.path().join("old.crt"), tmp.path().join("old.key"));
        write_cert(&c, &issued.cert_pem, false).unwrap();
        write_key(&k, &issued.key_pem, false).unwrap();
        let e = load_client_tls(&l.ca_cert(), &c, &k).unwrap_err();
        assert!(matches!(e, PkiError::Expired { .. }), "{e}");
        assert!(e.to_string().contains("old.crt"), "{e}");
    }
}
