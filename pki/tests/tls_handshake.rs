//! End-to-end check that what `pki init` / `pki issue` produce is accepted
//! by rustls (what tonic uses) for mutual TLS, and that the peer identity
//! comes back out of the verified client certificate.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use ferrofab_pki::{
    init, issue_to_dir, load_client_tls, load_server_tls, Identity, InitOptions, PkiDir, Validity,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(pem: &[u8]) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(roots)
}

fn certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Shuttles bytes between the two ends until neither wants to write.
fn pump(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<(), rustls::Error> {
    for _ in 0..20 {
        let mut buf = Vec::new();
        client.write_tls(&mut buf).unwrap();
        if !buf.is_empty() {
            server.read_tls(&mut buf.as_slice()).unwrap();
            server.process_new_packets()?;
        }
        let mut back = Vec::new();
        server.write_tls(&mut back).unwrap();
        if !back.is_empty() {
            client.read_tls(&mut back.as_slice()).unwrap();
            client.process_new_packets()?;
        }
        if !client.is_handshaking() && !server.is_handshaking() && buf.is_empty() && back.is_empty()
        {
            return Ok(());
        }
    }
    Ok(())
}

fn setup(id: &Identity, host: &str) -> (ServerConnection, ClientConnection) {
    let tmp = tempfile::tempdir().unwrap();
    init(tmp.path(), &InitOptions::default()).unwrap();
    let layout = PkiDir::new(tmp.path());
    let ca = layout.load_ca().unwrap();
    let v = Validity::from_now(Duration::from_secs(3600)).unwrap();
    let (crt, key) = issue_to_dir(&ca, id, v, tmp.path(), false).unwrap();

    let s = load_server_tls(tmp.path()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&s.client_ca), provider())
        .build()
        .unwrap();
    let server_cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&s.cert),
            PrivateKeyDer::from_pem_slice(&s.key).unwrap(),
        )
        .unwrap();

    let c = load_client_tls(&layout.ca_cert(), &crt, &key).unwrap();
    assert_eq!(&c.identity, id);
    let client_cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&c.ca))
        .with_client_auth_cert(
            certs(&c.cert),
            PrivateKeyDer::from_pem_slice(&c.key).unwrap(),
        )
        .unwrap();

    let server = ServerConnection::new(Arc::new(server_cfg)).unwrap();
    let name = ServerName::try_from(host.to_owned()).unwrap();
    let client = ClientConnection::new(Arc::new(client_cfg), name).unwrap();
    (server, client)
}

#[test]
fn mutual_tls_handshake_and_peer_identity() {
    let id = Identity::node("n1").unwrap();
    let (mut server, mut client) = setup(&id, "localhost");
    pump(&mut client, &mut server).unwrap();
    assert!(!client.is_handshaking());
    assert!(!server.is_handshaking());

    let peer = server.peer_certificates().unwrap();
    assert_eq!(Identity::from_cert_der(&peer[0]).unwrap(), id);

    client.writer().write_all(b"ping").unwrap();
    pump(&mut client, &mut server).unwrap();
    let mut got = [0u8; 4];
    server.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
}

#[test]
fn server_cert_covers_default_sans() {
    for host in ["localhost", "127.0.0.1", "::1"] {
        let (mut server, mut client) = setup(&Identity::Admin, host);
        pump(&mut client, &mut server).unwrap();
        assert!(!client.is_handshaking(), "{host}");
    }
}

#[test]
fn wrong_server_name_rejected() {
    let (mut server, mut client) = setup(&Identity::Admin, "ctl.example.com");
    assert!(pump(&mut client, &mut server).is_err());
}
