//! Learning the controller's CA from the bootstrap token's pin.
//!
//! A token minted by the controller ends with a pin of its CA certificate
//! (see [`ferrofab_pki::CaPin`]). With only the token and the controller's
//! address, the node opens one TLS connection that accepts whatever chain
//! the controller presents (nothing is sent over it), and takes as its CA
//! the presented certificate whose SHA-256 is the pin. Everything after
//! that, the Enroll call included, runs over normally verified TLS against
//! that CA. The permissive verifier exists only inside [`probe_chain`].

use std::sync::Arc;
use std::time::Duration;

use ferrofab_pki::CaPin;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tracing::{debug, instrument};

use crate::client::endpoint_url;
use crate::error::AgentError;

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The controller's CA (PEM) as learned from its handshake and `pin`.
///
/// `server_name` overrides the name sent as SNI (the config's
/// `tls.server_name`); it changes nothing about what is trusted.
#[instrument(skip(pin), fields(pin = %pin))]
pub async fn pinned_ca(
    controller: &str,
    server_name: Option<&str>,
    pin: &CaPin,
) -> Result<String, AgentError> {
    let chain = probe_chain(controller, server_name).await?;
    debug!(certificates = chain.len(), "controller presented its chain");
    let ca = pin.find_in(&chain).ok_or_else(|| {
        AgentError::Other(format!(
            "controller's CA does not match the token's pin: none of the {} certificate(s) \
             {} presented hashes to {pin} (wrong controller address, or a token from another \
             controller?)",
            chain.len(),
            endpoint_url(controller)
        ))
    })?;
    Ok(ferrofab_pki::cert_der_to_pem(ca))
}

/// The certificates (DER, leaf first) the controller presents, read from a
/// handshake that verifies nothing. Only the chain is used, and only after
/// it matched the pin.
pub async fn probe_chain(
    controller: &str,
    server_name: Option<&str>,
) -> Result<Vec<Vec<u8>>, AgentError> {
    let url = endpoint_url(controller);
    let fail = |message: String| AgentError::Connect {
        endpoint: url.clone(),
        message,
    };
    let (host, port) = host_port(&url).map_err(&fail)?;
    let sni = ServerName::try_from(server_name.unwrap_or(&host).to_owned())
        .map_err(|e| fail(format!("bad TLS server name: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyChain(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| fail(e.to_string()))?;
        connector
            .connect(sni, tcp)
            .await
            .map_err(|e| fail(format!("TLS handshake: {e}")))
    };
    let tls = tokio::time::timeout(PROBE_TIMEOUT, handshake)
        .await
        .map_err(|_| fail(format!("no TLS handshake within {PROBE_TIMEOUT:?}")))??;
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|d| d.to_vec()).collect())
        .unwrap_or_default();
    Ok(chain)
}

/// Host (without IPv6 brackets) and port of an `https://HOST[:PORT]` URL.
fn host_port(url: &str) -> Result<(String, u16), String> {
    let uri: tonic::transport::Uri = url
        .parse()
        .map_err(|e| format!("not a controller address: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| "controller address has no host".to_string())?
        .trim_matches(['[', ']'])
        .to_owned();
    Ok((host, uri.port_u16().unwrap_or(443)))
}

/// Accepts any server chain: the caller trusts a certificate only after it
/// matched the token's pin. Handshake signatures are still checked, so the
/// peer holds the key of the leaf it presented.
#[derive(Debug)]
struct AcceptAnyChain(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyChain {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_handles_names_ips_and_default_port() {
        assert_eq!(
            host_port("https://ctl.example:7443").unwrap(),
            ("ctl.example".into(), 7443)
        );
        assert_eq!(
            host_port("https://[::1]:7443").unwrap(),
            ("::1".into(), 7443)
        );
        assert_eq!(
            host_port("https://10.0.0.1").unwrap(),
            ("10.0.0.1".into(), 443)
        );
        assert!(host_port("https://").is_err());
    }

    #[tokio::test]
    async fn unreachable_controller_is_a_connect_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let e = probe_chain(&addr.to_string(), None).await.unwrap_err();
        assert!(matches!(e, AgentError::Connect { .. }), "{e}");
    }
}
