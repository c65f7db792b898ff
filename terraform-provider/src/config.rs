//! The `provider "ferrofab"` block: where the controller is and which
//! client certificate to present, with `FERROFAB_*` environment variables
//! as fallback for every attribute.

use std::path::Path;
use std::time::Duration;

use ferrofab_proto::client::{Admin, TlsPem};

use crate::diag::Diag;
use crate::schema::{attr, Block, Mode};
use crate::value::{Type, Value};

/// Default for `request_timeout`: one controller call.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn block() -> Block {
    use Mode::Optional;
    Block {
        attrs: vec![
            attr("endpoints", Type::list(Type::String), Optional,
                 "Controller URLs, one per replica, e.g. `https://ctl.example:7443`. The first that answers is used; when it fails, calls move to the next. Env: `FERROFAB_ENDPOINTS` (comma-separated)."),
            attr("ca_file", Type::String, Optional,
                 "PEM file of the ferrofab CA. Env: `FERROFAB_CA_FILE`."),
            attr("cert_file", Type::String, Optional,
                 "PEM client certificate (CN `admin`). Env: `FERROFAB_CERT_FILE`."),
            attr("key_file", Type::String, Optional,
                 "PEM private key of the client certificate. Env: `FERROFAB_KEY_FILE`."),
            attr("ca_pem", Type::String, Optional,
                 "The CA certificate itself, instead of `ca_file`. Env: `FERROFAB_CA_PEM`."),
            attr("cert_pem", Type::String, Optional,
                 "The client certificate itself, instead of `cert_file`. Env: `FERROFAB_CERT_PEM`."),
            attr("key_pem", Type::String, Optional,
                 "The client key itself, instead of `key_file`. Env: `FERROFAB_KEY_PEM`.").sensitive(),
            attr("server_name", Type::String, Optional,
                 "Name to check in the controller's certificate when it differs from the endpoint host. Env: `FERROFAB_SERVER_NAME`."),
            attr("request_timeout", Type::String, Optional,
                 "Deadline of each controller call on one replica, e.g. `30s` (default); a replica that misses it is failed over. Env: `FERROFAB_REQUEST_TIMEOUT`."),
        ],
        blocks: vec![],
        description: "Manages ferrofab pools, volumes, attachments and tenants through the controller's admin API (mutual TLS).",
    }
}

/// The resolved configuration.
#[derive(Clone, Default)]
pub struct ProviderConfig {
    pub endpoints: Vec<String>,
    pub tls: Option<TlsPem>,
    pub request_timeout: Option<Duration>,
}

/// `attribute` from config, else environment variable `env`.
fn setting(cfg: &Value, attribute: &str, env: &str) -> Option<String> {
    cfg.get(attribute)
        .as_str()
        .map(str::to_owned)
        .or_else(|| std::env::var(env).ok())
        .filter(|s| !s.trim().is_empty())
}

/// A PEM from `<x>_pem` or the file named by `<x>_file`.
fn pem(cfg: &Value, what: &str, env: &str) -> Result<Option<Vec<u8>>, Diag> {
    if let Some(p) = setting(cfg, &format!("{what}_pem"), &format!("FERROFAB_{env}_PEM")) {
        return Ok(Some(p.into_bytes()));
    }
    let attr_name = format!("{what}_file");
    match setting(cfg, &attr_name, &format!("FERROFAB_{env}_FILE")) {
        None => Ok(None),
        Some(path) => std::fs::read(Path::new(&path)).map(Some).map_err(|e| {
            Diag::new(format!("cannot read {attr_name}"), format!("{path}: {e}")).on(&attr_name)
        }),
    }
}

/// Resolves the block (null attributes fall back to the environment).
/// Unknown values cannot occur here: Terraform configures a provider only
/// once its configuration is known.
pub fn resolve(cfg: &Value) -> Result<ProviderConfig, Diag> {
    let mut endpoints = cfg.get("endpoints").strings();
    if endpoints.is_empty() {
        endpoints = std::env::var("FERROFAB_ENDPOINTS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
    }
    if endpoints.is_empty() {
        return Err(Diag::new(
            "no controller endpoint",
            "set `endpoints` in the provider block or FERROFAB_ENDPOINTS",
        )
        .on("endpoints"));
    }
    let request_timeout = match setting(cfg, "request_timeout", "FERROFAB_REQUEST_TIMEOUT") {
        None => DEFAULT_REQUEST_TIMEOUT,
        Some(s) => crate::common::parse_duration(&s)
            .map_err(|e| Diag::new("invalid request_timeout", e).on("request_timeout"))?,
    };
    let ca = pem(cfg, "ca", "CA")?;
    let cert = pem(cfg, "cert", "CERT")?;
    let key = pem(cfg, "key", "KEY")?;
    let tls = match (ca, cert, key) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsPem {
            ca,
            cert,
            key,
            server_name: setting(cfg, "server_name", "FERROFAB_SERVER_NAME"),
        }),
        (None, None, None) => None,
        _ => {
            return Err(Diag::new(
                "incomplete TLS configuration",
                "give all three of the CA, the client certificate and its key (files or PEM), or none for a plaintext controller",
            ))
        }
    };
    Ok(ProviderConfig {
        endpoints,
        tls,
        request_timeout: Some(request_timeout),
    })
}

/// A client over every endpoint: the first reachable one is used and the
/// others are kept to fail over to (see `ferrofab_proto::failover`), so
/// losing a controller replica mid-apply costs one retried call.
pub async fn connect(cfg: &ProviderConfig) -> Result<Admin, Diag> {
    ferrofab_proto::client::connect(&cfg.endpoints, cfg.tls.as_ref(), cfg.request_timeout)
        .await
        .map_err(|e| Diag::new("cannot connect to the ferrofab controller", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_tls_is_refused_and_endpoint_required() {
        let mut v = Value::object();
        v.set(
            "endpoints",
            Value::List(vec![Value::str("http://127.0.0.1:1")]),
        );
        v.set("ca_pem", Value::str("x"));
        let e = resolve(&v).err().unwrap();
        assert_eq!(e.summary, "incomplete TLS configuration");
        v.set("cert_pem", Value::str("y"));
        v.set("key_pem", Value::str("z"));
        v.set("request_timeout", Value::str("5s"));
        let c = resolve(&v).ok().unwrap();
        assert_eq!(c.request_timeout, Some(Duration::from_secs(5)));
        assert!(c.tls.is_some());
    }

    #[tokio::test]
    async fn when_no_endpoint_answers_the_diagnostic_names_each() {
        // Bound, not listening: refused, and the ports stay ours.
        let mut urls = vec![];
        let mut socks = vec![];
        for _ in 0..2 {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            urls.push(format!("http://{}", s.local_addr().unwrap()));
            socks.push(s);
        }
        let cfg = ProviderConfig {
            endpoints: urls.clone(),
            tls: None,
            request_timeout: Some(Duration::from_secs(1)),
        };
        let d = connect(&cfg).await.err().expect("nothing listens");
        for u in &urls {
            assert!(d.detail.contains(u.as_str()), "{u} not in {}", d.detail);
        }
    }

    #[test]
    fn unreadable_file_names_the_attribute() {
        let mut v = Value::object();
        v.set(
            "endpoints",
            Value::List(vec![Value::str("http://127.0.0.1:1")]),
        );
        v.set("ca_file", Value::str("/nonexistent/ca.pem"));
        let e = resolve(&v).err().unwrap();
        assert_eq!(e.attr, vec!["ca_file".to_string()]);
    }
}
