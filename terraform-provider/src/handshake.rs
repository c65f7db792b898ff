//! The go-plugin handshake Terraform expects from a provider process:
//! magic cookie, protocol negotiation, auto-mTLS and the one stdout line
//! that tells Terraform where to dial.
//!
//! Terraform (go-plugin) hands us its client certificate in
//! `PLUGIN_CLIENT_CERT`: a self-signed ECDSA P-521 certificate. rustls'
//! WebPKI client verifier refuses it (a CA used as an end entity), so we pin
//! it instead: the presented certificate must be byte-identical to the one
//! in the environment. ring (rustls' provider in this workspace) cannot
//! verify P-521, so that one signature scheme is checked with aws-lc-rs.

use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

/// go-plugin's cookie for Terraform providers: a process started without it
/// was not started by Terraform.
pub const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
pub const MAGIC_COOKIE_VALUE: &str =
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// The plugin protocol this provider speaks.
pub const PROTOCOL_VERSION: u32 = 6;
/// go-plugin's own handshake version (the first field of the line).
const CORE_PROTOCOL_VERSION: u32 = 1;
/// The source address Terraform knows this provider by.
pub const PROVIDER_ADDRESS: &str = "registry.terraform.io/ferrofab/ferrofab";

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error(
        "this binary is a Terraform plugin and is not meant to be run directly \
         ({MAGIC_COOKIE_KEY} is missing or wrong); run it with --debug to serve \
         it for TF_REATTACH_PROVIDERS"
    )]
    Cookie,
    #[error("Terraform offers plugin protocol versions {offered:?}; this provider speaks only {PROTOCOL_VERSION}")]
    Version { offered: String },
    #[error("PLUGIN_CLIENT_CERT: {0}")]
    ClientCert(String),
    #[error("server certificate: {0}")]
    ServerCert(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// What the environment asks of this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEnv {
    /// DER of Terraform's client certificate; `None` means plaintext
    /// (Terraform started with TF_DISABLE_PLUGIN_TLS).
    pub client_cert: Option<Vec<u8>>,
}

/// Checks the cookie and the offered versions, and reads the client
/// certificate. `get` is the environment lookup (injected for tests).
pub fn read_env(get: impl Fn(&str) -> Option<String>) -> Result<PluginEnv, HandshakeError> {
    if get(MAGIC_COOKIE_KEY).as_deref() != Some(MAGIC_COOKIE_VALUE) {
        return Err(HandshakeError::Cookie);
    }
    // Absent means an old client that assumes its own default; anything
    // given must include 6.
    if let Some(offered) = get("PLUGIN_PROTOCOL_VERSIONS") {
        let ok = offered
            .split(',')
            .any(|v| v.trim().parse::<u32>() == Ok(PROTOCOL_VERSION));
        if !ok {
            return Err(HandshakeError::Version { offered });
        }
    }
    let client_cert = match get("PLUGIN_CLIENT_CERT").filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(pem) => Some(
            CertificateDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| HandshakeError::ClientCert(format!("not a PEM certificate: {e}")))?
                .to_vec(),
        ),
    };
    Ok(PluginEnv { client_cert })
}

/// The line go-plugin parses from our stdout. `cert_der` is our server
/// certificate (absent when serving plaintext), base64 without padding.
pub fn handshake_line(addr: std::net::SocketAddr, cert_der: Option<&[u8]>) -> String {
    let cert = cert_der
        .map(|d| base64::engine::general_purpose::STANDARD_NO_PAD.encode(d))
        .unwrap_or_default();
    format!("{CORE_PROTOCOL_VERSION}|{PROTOCOL_VERSION}|tcp|{addr}|grpc|{cert}")
}

/// The TF_REATTACH_PROVIDERS value for a provider served in debug mode.
pub fn reattach_json(addr: std::net::SocketAddr, pid: u32) -> String {
    serde_json::json!({
        PROVIDER_ADDRESS: {
            "Protocol": "grpc",
            "ProtocolVersion": PROTOCOL_VERSION,
            "Pid": pid,
            "Test": true,
            "Addr": {"Network": "tcp", "String": addr.to_string()},
        }
    })
    .to_string()
}

/// A fresh self-signed server certificate for `localhost` (Terraform dials
/// with ServerName=localhost and trusts exactly this certificate).
pub struct ServerCert {
    pub cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

pub fn server_cert() -> Result<ServerCert, HandshakeError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.distinguished_name.push(
        rcgen::DnType::OrganizationName,
        "ferrofab terraform provider",
    );
    // Terraform puts this very certificate in its root pool, so a
    // self-signed end-entity certificate is enough (and rustls-based
    // clients refuse a CA as the end entity).
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.self_signed(&key)?;
    Ok(ServerCert {
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    })
}

/// The server side of auto-mTLS: our certificate, Terraform's pinned, h2.
pub fn tls_config(
    server: &ServerCert,
    client_cert_der: Vec<u8>,
) -> Result<ServerConfig, HandshakeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedClientCert {
        expected: client_cert_der,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(
            vec![CertificateDer::from(server.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der.clone())),
        )?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Accepts exactly one client certificate, the one Terraform announced.
#[derive(Debug)]
struct PinnedClientCert {
    expected: Vec<u8>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// rustls' signature check for one TLS version.
type WebPkiVerify = fn(
    &[u8],
    &CertificateDer<'_>,
    &DigitallySignedStruct,
    &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error>;

impl PinnedClientCert {
    /// P-521 through aws-lc-rs, every other scheme through ring.
    fn verify(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
        webpki: WebPkiVerify,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme == SignatureScheme::ECDSA_NISTP521_SHA512 {
            verify_p521(message, cert, dss.signature())
        } else {
            webpki(message, cert, dss, &self.algorithms)
        }
    }
}

impl ClientCertVerifier for PinnedClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.expected.as_slice() {
            Ok(ClientCertVerified::assertion())
        } else {
            tracing::warn!("refused a client certificate that is not Terraform's");
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify(message, cert, dss, rustls::crypto::verify_tls12_signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify(message, cert, dss, rustls::crypto::verify_tls13_signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        let mut schemes = vec![SignatureScheme::ECDSA_NISTP521_SHA512];
        schemes.extend(self.algorithms.supported_schemes());
        schemes
    }
}

/// Checks an ECDSA P-521/SHA-512 handshake signature against the
/// certificate's public key, with aws-lc-rs.
fn verify_p521(
    message: &[u8],
    cert: &CertificateDer<'_>,
    signature: &[u8],
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let bad = |why: &str| {
        tracing::warn!(why, "client handshake signature refused");
        rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature)
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| bad("unparsable certificate"))?;
    let point = &parsed.public_key().subject_public_key.data;
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P521_SHA512_ASN1,
        point.as_ref(),
    )
    .verify(message, signature)
    .map_err(|_| bad("signature does not verify"))?;
    Ok(HandshakeSignatureValid::assertion())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn missing_or_wrong_cookie_is_refused() {
        assert!(matches!(read_env(env(&[])), Err(HandshakeError::Cookie)));
        let e = read_env(env(&[(MAGIC_COOKIE_KEY, "nope")]));
        assert!(matches!(e, Err(HandshakeError::Cookie)));
    }

    #[test]
    fn protocol_versions_are_a_list_in_any_order() {
        for offered in ["5,6", "6,5", "6", " 5, 6 "] {
            let e = env(&[
                (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
                ("PLUGIN_PROTOCOL_VERSIONS", offered),
            ]);
            assert_eq!(read_env(e).unwrap(), PluginEnv { client_cert: None });
        }
        let e = env(&[
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            ("PLUGIN_PROTOCOL_VERSIONS", "4,5"),
        ]);
        assert!(matches!(read_env(e), Err(HandshakeError::Version { .. })));
    }

    #[test]
    fn client_cert_must_be_pem() {
        let e = env(&[
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            ("PLUGIN_CLIENT_CERT", "garbage"),
        ]);
        assert!(matches!(read_env(e), Err(HandshakeError::ClientCert(_))));
    }

    #[test]
    fn handshake_line_has_unpadded_base64_cert() {
        let addr: std::net::SocketAddr = "127.0.0.1:10001".parse().unwrap();
        assert_eq!(
            handshake_line(addr, Some(&[1, 2, 3, 4])),
            "1|6|tcp|127.0.0.1:10001|grpc|AQIDBA"
        );
        assert_eq!(handshake_line(addr, None), "1|6|tcp|127.0.0.1:10001|grpc|");
    }

    #[test]
    fn reattach_value_names_the_provider_and_address() {
        let addr: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let v: serde_json::Value = serde_json::from_str(&reattach_json(addr, 42)).unwrap();
        let p = &v[PROVIDER_ADDRESS];
        assert_eq!(p["ProtocolVersion"], 6);
        assert_eq!(p["Pid"], 42);
        assert_eq!(p["Addr"]["String"], "127.0.0.1:4000");
    }

    /// Signs the client's CertificateVerify with a P-521 key through
    /// aws-lc-rs, as go-plugin's Go client does (ring cannot).
    #[derive(Debug)]
    struct P521Key(Arc<aws_lc_rs::signature::EcdsaKeyPair>);

    impl rustls::sign::SigningKey for P521Key {
        fn choose_scheme(
            &self,
            offered: &[SignatureScheme],
        ) -> Option<Box<dyn rustls::sign::Signer>> {
            offered
                .contains(&SignatureScheme::ECDSA_NISTP521_SHA512)
                .then(|| Box::new(P521Signer(self.0.clone())) as Box<dyn rustls::sign::Signer>)
        }
        fn algorithm(&self) -> rustls::SignatureAlgorithm {
            rustls::SignatureAlgorithm::ECDSA
        }
    }

    #[derive(Debug)]
    struct P521Signer(Arc<aws_lc_rs::signature::EcdsaKeyPair>);

    impl rustls::sign::Signer for P521Signer {
        fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            self.0
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| rustls::Error::General("signing failed".into()))
        }
        fn scheme(&self) -> SignatureScheme {
            SignatureScheme::ECDSA_NISTP521_SHA512
        }
    }

    #[derive(Debug)]
    struct ClientCert(Arc<rustls::sign::CertifiedKey>);

    impl rustls::client::ResolvesClientCert for ClientCert {
        fn resolve(
            &self,
            _: &[&[u8]],
            _: &[SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(self.0.clone())
        }
        fn has_certs(&self) -> bool {
            true
        }
    }

    /// Moves TLS records between the two ends until both finish (or one
    /// fails).
    fn drive(
        client: &mut rustls::ClientConnection,
        srv: &mut rustls::ServerConnection,
    ) -> Result<(), rustls::Error> {
        for _ in 0..10 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            let mut rd = buf.as_slice();
            while !rd.is_empty() {
                srv.read_tls(&mut rd).unwrap();
            }
            srv.process_new_packets()?;
            let mut buf = Vec::new();
            while srv.wants_write() {
                srv.write_tls(&mut buf).unwrap();
            }
            let mut rd = buf.as_slice();
            while !rd.is_empty() {
                client.read_tls(&mut rd).unwrap();
            }
            client.process_new_packets()?;
            if !client.is_handshaking() && !srv.is_handshaking() {
                return Ok(());
            }
        }
        Err(rustls::Error::General("handshake did not finish".into()))
    }

    /// go-plugin's kind of client certificate (self-signed CA, ECDSA P-521,
    /// the fixture was made with openssl) is accepted when pinned, in a real
    /// TLS 1.3 handshake over memory with ALPN h2; any other pin refuses it.
    #[test]
    fn pinned_p521_client_certificate_handshake() {
        let cert_pem = include_bytes!("../tests/fixtures/p521-client.crt");
        let key_pem = include_bytes!("../tests/fixtures/p521-client.key");
        let env = read_env(env(&[
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            ("PLUGIN_CLIENT_CERT", std::str::from_utf8(cert_pem).unwrap()),
        ]))
        .unwrap();
        let client_der = env.client_cert.unwrap();
        let key_der = PrivatePkcs8KeyDer::from_pem_slice(key_pem).unwrap();
        let key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P521_SHA512_ASN1_SIGNING,
            key_der.secret_pkcs8_der(),
        )
        .unwrap();
        let certified = Arc::new(rustls::sign::CertifiedKey::new(
            vec![CertificateDer::from(client_der.clone())],
            Arc::new(P521Key(Arc::new(key))),
        ));
        let server = server_cert().unwrap();

        let run = |pinned: Vec<u8>| -> Result<(), rustls::Error> {
            let scfg = Arc::new(
                tls_config(&server, pinned).map_err(|e| rustls::Error::General(e.to_string()))?,
            );
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from(server.cert_der.clone()))?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut ccfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_client_cert_resolver(Arc::new(ClientCert(certified.clone())));
            ccfg.alpn_protocols = vec![b"h2".to_vec()];
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut client = rustls::ClientConnection::new(Arc::new(ccfg), name)?;
            let mut srv = rustls::ServerConnection::new(scfg)?;
            drive(&mut client, &mut srv)?;
            assert_eq!(srv.alpn_protocol(), Some(&b"h2"[..]));
            Ok(())
        };
        run(client_der.clone()).expect("pinned certificate accepted");
        let mut other = client_der.clone();
        let last = other.len() - 1;
        other[last] ^= 1;
        assert!(run(other).is_err(), "a different certificate is refused");
    }
}
