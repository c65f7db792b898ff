//! The client configuration file: which controller(s) to talk to and with
//! which certificate.
//!
//! ```toml
//! endpoints = ["https://ctl-a:7443", "https://ctl-b:7443"]  # or endpoint = "..."
//! [tls]
//! ca = "ca.crt"          # relative paths are relative to this file
//! cert = "admin.crt"
//! key = "admin.key"
//! server_name = "ctl.example.com"  # optional: name to verify instead of the URL host
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors while finding or reading the client configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {error}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why (in the message, not a `source`, so it is printed once).
        error: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// toml's message (includes line and column).
        message: String,
    },
    /// No config was given or found, and no endpoint either.
    #[error(
        "no client configuration: pass --config FILE, set FERROFAB_CONFIG, or create {}",
        default_hint()
    )]
    Missing,
    /// Neither `endpoint` nor `endpoints` is set.
    #[error("{}: no endpoint configured (set endpoint = \"https://HOST:PORT\")", path.display())]
    NoEndpoint {
        /// The config file.
        path: PathBuf,
    },
    /// An https endpoint without a [tls] section.
    #[error("{what}: https endpoints need a [tls] section with ca, cert and key")]
    NoTls {
        /// The config file or "--endpoint".
        what: String,
    },
}

/// The file as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    endpoint: Option<String>,
    #[serde(default)]
    endpoints: Vec<String>,
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    server_name: Option<String>,
}

/// A resolved client configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Controller URLs, one per replica: the first that answers is used,
    /// the next when it fails (see `ferrofab_proto::failover`).
    pub endpoints: Vec<String>,
    /// TLS files, if any.
    pub tls: Option<TlsFiles>,
}

/// Paths of the client's TLS material, absolute or relative to the cwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate.
    pub ca: PathBuf,
    /// Client certificate.
    pub cert: PathBuf,
    /// Client key.
    pub key: PathBuf,
    /// Name to verify the server certificate against.
    pub server_name: Option<String>,
}

/// Where to look when neither `--config` nor `FERROFAB_CONFIG` is given.
pub fn default_locations() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(xdg).join("ferrofab/client.toml"));
    } else if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(home).join(".config/ferrofab/client.toml"));
    }
    out.push(PathBuf::from("/etc/ferrofab/client.toml"));
    out
}

fn default_hint() -> String {
    default_locations()
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/etc/ferrofab/client.toml".to_owned())
}

/// Loads the configuration: the explicit file if given, else the first
/// default location that exists. `endpoint` (from `--endpoint`) overrides
/// the file's endpoints.
pub fn load(explicit: Option<&Path>, endpoint: Option<&str>) -> Result<ClientConfig, ConfigError> {
    let path = match explicit {
        Some(p) => Some(p.to_owned()),
        None => default_locations().into_iter().find(|p| p.is_file()),
    };
    let Some(path) = path else {
        return from_endpoint_only(endpoint);
    };
    let text = std::fs::read_to_string(&path).map_err(|error| ConfigError::Read {
        path: path.clone(),
        error,
    })?;
    parse(&path, &text, endpoint)
}

/// `--endpoint` alone is enough for plaintext (test) controllers.
fn from_endpoint_only(endpoint: Option<&str>) -> Result<ClientConfig, ConfigError> {
    let Some(e) = endpoint else {
        return Err(ConfigError::Missing);
    };
    let e = normalize_endpoint(e);
    if e.starts_with("https://") {
        return Err(ConfigError::NoTls {
            what: "--endpoint".to_owned(),
        });
    }
    Ok(ClientConfig {
        endpoints: vec![e],
        tls: None,
    })
}

/// Parses config text; relative TLS paths resolve against the file's directory.
pub fn parse(path: &Path, text: &str, endpoint: Option<&str>) -> Result<ClientConfig, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.message().to_owned() + &line_hint(text, e.span()),
    })?;
    let mut endpoints: Vec<String> = match endpoint {
        Some(e) => vec![e.to_owned()],
        None => raw.endpoint.into_iter().chain(raw.endpoints).collect(),
    };
    endpoints = endpoints.iter().map(|e| normalize_endpoint(e)).collect();
    if endpoints.is_empty() {
        return Err(ConfigError::NoEndpoint {
            path: path.to_owned(),
        });
    }
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let tls = raw.tls.map(|t| TlsFiles {
        ca: base.join(t.ca),
        cert: base.join(t.cert),
        key: base.join(t.key),
        server_name: t.server_name,
    });
    if tls.is_none() && endpoints.iter().any(|e| e.starts_with("https://")) {
        return Err(ConfigError::NoTls {
            what: path.display().to_string(),
        });
    }
    Ok(ClientConfig { endpoints, tls })
}

/// A bare `host:port` means https: plaintext must be asked for explicitly.
fn normalize_endpoint(e: &str) -> String {
    let e = e.trim();
    if e.contains("://") {
        e.to_owned()
    } else {
        format!("https://{e}")
    }
}

fn line_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => {
            let line = text.get(..r.start).map_or(0, |t| t.lines().count().max(1));
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves_paths() {
        let c = parse(
            Path::new("/etc/ff/client.toml"),
            "endpoint = \"ctl:7443\"\n[tls]\nca = \"ca.crt\"\ncert = \"/abs/a.crt\"\nkey = \"a.key\"\n",
            None,
        )
        .unwrap();
        assert_eq!(c.endpoints, vec!["https://ctl:7443".to_owned()]);
        let tls = c.tls.unwrap();
        assert_eq!(tls.ca, PathBuf::from("/etc/ff/ca.crt"));
        assert_eq!(tls.cert, PathBuf::from("/abs/a.crt"));
    }

    #[test]
    fn endpoint_flag_overrides() {
        let c = parse(
            Path::new("c.toml"),
            "endpoints = [\"http://a:1\", \"http://b:1\"]\n",
            Some("http://z:9"),
        )
        .unwrap();
        assert_eq!(c.endpoints, vec!["http://z:9".to_owned()]);
    }

    #[test]
    fn errors_are_specific() {
        let e = parse(Path::new("c.toml"), "endpont = \"x\"\n", None).unwrap_err();
        assert!(e.to_string().starts_with("c.toml: "), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = parse(Path::new("c.toml"), "", None).unwrap_err();
        assert!(matches!(e, ConfigError::NoEndpoint { .. }));
        let e = parse(Path::new("c.toml"), "endpoint = \"https://x:1\"\n", None).unwrap_err();
        assert!(matches!(e, ConfigError::NoTls { .. }));
        assert!(from_endpoint_only(Some("http://127.0.0.1:1")).is_ok());
        assert!(from_endpoint_only(Some("ctl:1")).is_err());
    }
}
