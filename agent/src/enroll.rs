//! One-step enrollment: make a key here, send its CSR with the bootstrap
//! token, write certificate, key (0600) and CA where the config says, and
//! write or update the config file. The private key never leaves the node.
//!
//! The token and the controller's address are enough: without `--ca` the
//! CA is learned from the controller's handshake and trusted only if it
//! matches the token's pin ([`crate::bootstrap`]); without `--node` the
//! node is the one the token was minted for (the controller signs for it
//! and the certificate names it); without `--roles` the Node keeps the
//! roles it was declared with. Nothing is written before the controller
//! has answered, so a refused enrollment leaves the node as it was.
//!
//! With `keep_config` the config file is owned by configuration management
//! (Puppet writes it from its own parameters): enrollment then only reads
//! it and writes the TLS files, so the next Puppet run finds the file it
//! wrote and does not restart the agent for a rewrite it did not ask for.

use std::path::{Path, PathBuf};

use ferrofab_pki::{Identity, Token};
use ferrofab_proto::v1::{DataAddress, EnrollRequest, EnrollResponse, NodeRole, NodeSpec};
use tracing::info;

use crate::cache::write_atomic;
use crate::client::{self, endpoint_url};
use crate::config::{AgentConfig, Role, TlsFiles};
use crate::error::AgentError;

/// What `ferrofab-agent enroll` needs.
#[derive(Debug, Clone)]
pub struct EnrollArgs {
    pub token: String,
    /// `host:port` or `https://host:port`.
    pub controller: String,
    /// CA that signed the controller's certificate (PEM file). `None`:
    /// learn it from the controller, checked against the token's pin.
    pub ca: Option<PathBuf>,
    /// `None`: the node the token was minted for.
    pub node: Option<String>,
    /// Empty: keep the config's roles, or else the Node's in the controller.
    pub roles: Vec<Role>,
    pub config: PathBuf,
    /// Data addresses registered in the node spec (`IP:PORT`).
    pub data_addresses: Vec<String>,
    /// Overrides the config's state directory (where the host NQN lives).
    pub state_dir: Option<PathBuf>,
    /// Use the existing config as it is and never write it.
    pub keep_config: bool,
}

/// The outcome, for the CLI to print.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Enrolled {
    pub node: String,
    pub config: PathBuf,
    pub cert: PathBuf,
    pub host_nqn: String,
}

/// CSR subject while the node's name is not known yet; the controller
/// ignores the subject and signs for the token's node anyway.
const UNNAMED_CSR_NODE: &str = "enrolling";

/// Runs the whole enrollment.
pub async fn enroll(a: &EnrollArgs) -> Result<Enrolled, AgentError> {
    let mut cfg = base_config(a)?;
    let token: Token = a.token.trim().parse().map_err(|e| AgentError::Config {
        key: "--token".into(),
        message: format!("{e}"),
    })?;
    let ca_pem = controller_ca(a, &token, cfg.tls.server_name.as_deref()).await?;
    let host_nqn = crate::driver::initiator::host_identity(&cfg.state_dir)?.hostnqn;
    let requested = requested_node(a, &cfg);
    let identity = Identity::node(requested.as_deref().unwrap_or(UNNAMED_CSR_NODE))?;
    let kc = ferrofab_pki::generate_key_and_csr(&identity)?;
    let req = EnrollRequest {
        bootstrap_token: a.token.trim().to_owned(),
        csr_pem: kc.csr_pem.clone(),
        node_name: requested.unwrap_or_default(),
        node: Some(node_spec(&cfg, &a.data_addresses, &host_nqn)?),
        labels: Default::default(),
    };
    let resp = client::enroll(&a.controller, &ca_pem, cfg.tls.server_name.as_deref(), req).await?;
    let node = adopt(&mut cfg, a, &resp)?;
    for p in [&cfg.tls.key, &cfg.tls.cert, &cfg.tls.ca] {
        if let Some(d) = p.parent() {
            crate::cache::ensure_dir(d)?;
        }
    }
    write_atomic(&cfg.tls.key, kc.key_pem.as_bytes(), 0o600)?;
    write_atomic(&cfg.tls.cert, resp.certificate_pem.as_bytes(), 0o644)?;
    let ca_out = if resp.ca_certificate_pem.is_empty() {
        ca_pem
    } else {
        resp.ca_certificate_pem.into_bytes()
    };
    write_atomic(&cfg.tls.ca, &ca_out, 0o644)?;
    cfg.validate()?;
    if !a.keep_config {
        write_atomic(&a.config, cfg.to_toml()?.as_bytes(), 0o644)?;
    }
    info!(%node, config = %a.config.display(), "enrolled");
    Ok(Enrolled {
        node,
        config: a.config.clone(),
        cert: cfg.tls.cert.clone(),
        host_nqn,
    })
}

/// The CA to verify the controller with: `--ca` if given, else the
/// certificate the controller presents that matches the token's pin.
async fn controller_ca(
    a: &EnrollArgs,
    token: &Token,
    server_name: Option<&str>,
) -> Result<Vec<u8>, AgentError> {
    if let Some(path) = &a.ca {
        return std::fs::read(path)
            .map_err(|e| AgentError::io(format!("reading CA {}", path.display()), e));
    }
    let pin = token.ca_pin().ok_or_else(|| AgentError::Config {
        key: "--ca".into(),
        message: "the token carries no CA pin (three-part token from an older controller): \
                  pass the controller's CA certificate with --ca"
            .into(),
    })?;
    let pem = crate::bootstrap::pinned_ca(&a.controller, server_name, &pin).await?;
    Ok(pem.into_bytes())
}

/// The node name to put in the request: `--node`, or the kept config's
/// (so the controller refuses a token for another node before using it),
/// or none, meaning "the token's node".
fn requested_node(a: &EnrollArgs, cfg: &AgentConfig) -> Option<String> {
    match &a.node {
        Some(n) => Some(n.clone()),
        None if a.keep_config => Some(cfg.node.clone()),
        None => None,
    }
}

/// Takes the node name from the issued certificate and, without
/// `--roles`, the roles from the registered Node; returns the name.
fn adopt(
    cfg: &mut AgentConfig,
    a: &EnrollArgs,
    resp: &EnrollResponse,
) -> Result<String, AgentError> {
    let info = ferrofab_pki::CertInfo::from_pem(resp.certificate_pem.as_bytes())?;
    let Some(Identity::Node(node)) = info.identity else {
        return Err(AgentError::Other(format!(
            "the controller issued a certificate for {:?}, not for a node",
            info.identity.map(|i| i.to_string())
        )));
    };
    if a.keep_config {
        if cfg.node != node {
            return Err(AgentError::Config {
                key: "node".into(),
                message: format!(
                    "{} names node {:?} but the token enrolled {node:?}",
                    a.config.display(),
                    cfg.node
                ),
            });
        }
        return Ok(node);
    }
    cfg.node = node.clone();
    if a.roles.is_empty() {
        let spec = resp.node.as_ref().and_then(|n| n.spec.as_ref());
        let mut roles: Vec<Role> = spec
            .map(|s| s.roles.iter().filter_map(|r| role_of(*r)).collect())
            .unwrap_or_default();
        roles.sort();
        roles.dedup();
        if !roles.is_empty() {
            cfg.roles = roles;
        }
    }
    Ok(node)
}

fn role_of(r: i32) -> Option<Role> {
    match NodeRole::try_from(r).ok()? {
        NodeRole::Storage => Some(Role::Storage),
        NodeRole::Workstation => Some(Role::Workstation),
        _ => None,
    }
}

/// The existing config updated with the arguments, or a new one whose TLS
/// files sit next to the config file.
fn base_config(a: &EnrollArgs) -> Result<AgentConfig, AgentError> {
    if a.keep_config {
        return kept_config(a);
    }
    let endpoint = endpoint_url(&a.controller);
    let mut cfg = if a.config.exists() && !is_template(&a.config)? {
        AgentConfig::load(&a.config)?
    } else {
        let dir = a.config.parent().unwrap_or(Path::new("/etc/ferrofab"));
        AgentConfig::new(
            a.node.as_deref().unwrap_or_default(),
            &endpoint,
            TlsFiles {
                ca: dir.join("ca.crt"),
                cert: dir.join("node.crt"),
                key: dir.join("node.key"),
                server_name: None,
            },
        )
    };
    if let Some(n) = &a.node {
        cfg.node = n.clone();
    }
    if !cfg.controller_endpoints.contains(&endpoint) {
        cfg.controller_endpoints.insert(0, endpoint);
    }
    if !a.roles.is_empty() {
        cfg.roles = a.roles.clone();
        cfg.roles.sort();
        cfg.roles.dedup();
    }
    if let Some(s) = &a.state_dir {
        cfg.state_dir = s.clone();
    }
    Ok(cfg)
}

/// True when the file at `path` sets no key at all: comments and blank
/// lines only, like the commented template the Debian package installs at
/// /etc/ferrofab/agent.toml. Enrollment then writes a new config in its
/// place instead of failing on the template's missing `node`.
fn is_template(path: &Path) -> Result<bool, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|e| AgentError::Io {
        what: format!("reading config {}", path.display()),
        source: e,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#')))
}

/// The existing config, unchanged, after checking that the arguments do
/// not contradict it (a node enrolled under another name or roles than its
/// config says would fail at its first connection instead of here).
fn kept_config(a: &EnrollArgs) -> Result<AgentConfig, AgentError> {
    let mismatch = |key: &str, message: String| AgentError::Config {
        key: key.into(),
        message,
    };
    if !a.config.exists() {
        return Err(mismatch(
            "--keep-config",
            format!("config file {} does not exist", a.config.display()),
        ));
    }
    let cfg = AgentConfig::load(&a.config)?;
    if let Some(node) = a.node.as_ref().filter(|n| **n != cfg.node) {
        return Err(mismatch(
            "node",
            format!(
                "{} names node {:?} but --node is {node:?}",
                a.config.display(),
                cfg.node,
            ),
        ));
    }
    let mut roles = a.roles.clone();
    roles.sort();
    roles.dedup();
    if !roles.is_empty() && roles != cfg.roles {
        return Err(mismatch(
            "roles",
            format!(
                "{} has roles {:?} but --roles is {:?}",
                a.config.display(),
                cfg.roles,
                roles
            ),
        ));
    }
    if a.state_dir.is_some() {
        return Err(mismatch(
            "--state-dir",
            "cannot be combined with --keep-config; set state_dir in the config".into(),
        ));
    }
    Ok(cfg)
}

fn node_spec(cfg: &AgentConfig, addrs: &[String], host_nqn: &str) -> Result<NodeSpec, AgentError> {
    let roles = cfg
        .roles
        .iter()
        .map(|r| match r {
            Role::Storage => NodeRole::Storage as i32,
            Role::Workstation => NodeRole::Workstation as i32,
        })
        .collect();
    let mut data_addresses = Vec::new();
    for a in addrs {
        let (host, port) = a.rsplit_once(':').ok_or_else(|| AgentError::Config {
            key: "--data-address".into(),
            message: format!("{a:?} must be HOST:PORT"),
        })?;
        let port: u32 = port.parse().map_err(|_| AgentError::Config {
            key: "--data-address".into(),
            message: format!("{a:?}: bad port"),
        })?;
        data_addresses.push(DataAddress {
            address: host.trim_matches(['[', ']']).to_string(),
            port,
            transport: "tcp".into(),
        });
    }
    Ok(NodeSpec {
        roles,
        data_addresses,
        host_nqn: host_nqn.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_spec_parses_addresses_and_roles() {
        let mut cfg = AgentConfig::new(
            "n",
            "https://c:1",
            TlsFiles {
                ca: "/a".into(),
                cert: "/b".into(),
                key: "/c".into(),
                server_name: None,
            },
        );
        cfg.roles = vec![Role::Storage, Role::Workstation];
        let s = node_spec(
            &cfg,
            &["127.0.0.1:4420".into(), "[::1]:4421".into()],
            "nqn.x",
        )
        .unwrap();
        assert_eq!(s.roles.len(), 2);
        assert_eq!(s.data_addresses[1].address, "::1");
        assert_eq!(s.data_addresses[1].port, 4421);
        assert!(node_spec(&cfg, &["nope".into()], "nqn.x").is_err());
    }

    #[test]
    fn new_config_puts_tls_next_to_it() {
        let a = EnrollArgs {
            token: "t".into(),
            controller: "127.0.0.1:7443".into(),
            ca: Some("/ca.pem".into()),
            node: Some("ws1".into()),
            roles: vec![Role::Workstation],
            config: "/etc/x/agent.toml".into(),
            data_addresses: vec![],
            state_dir: None,
            keep_config: false,
        };
        let c = base_config(&a).unwrap();
        assert_eq!(c.tls.key, PathBuf::from("/etc/x/node.key"));
        assert_eq!(c.controller_endpoints, vec!["https://127.0.0.1:7443"]);
        assert_eq!(c.roles, vec![Role::Workstation]);
    }

    #[test]
    fn kept_config_is_used_as_is_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let mut a = EnrollArgs {
            token: "t".into(),
            controller: "127.0.0.1:9".into(),
            ca: Some("/ca.pem".into()),
            node: Some("ws1".into()),
            roles: vec![],
            config: path.clone(),
            data_addresses: vec![],
            state_dir: None,
            keep_config: true,
        };
        let err = base_config(&a).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        let text = "node = \"ws1\"\nroles = [\"workstation\"]\n\
            controller_endpoints = [\"https://ctl:7443\"]\n\
            [tls]\nca = \"/p/ca.crt\"\ncert = \"/p/n.crt\"\nkey = \"/p/n.key\"\n";
        std::fs::write(&path, text).unwrap();
        let c = base_config(&a).unwrap();
        assert_eq!(c.controller_endpoints, vec!["https://ctl:7443"]);
        assert_eq!(c.tls.key, PathBuf::from("/p/n.key"));
        a.roles = vec![Role::Workstation];
        assert!(base_config(&a).is_ok());
        a.roles = vec![Role::Storage];
        let err = base_config(&a).unwrap_err().to_string();
        assert!(err.contains("roles"), "{err}");
        a.roles = vec![];
        a.node = Some("ws2".into());
        let err = base_config(&a).unwrap_err().to_string();
        assert!(err.contains("node") && err.contains("ws2"), "{err}");
    }

    fn two_flag_args(token: &str) -> EnrollArgs {
        EnrollArgs {
            token: token.into(),
            controller: "127.0.0.1:9".into(),
            ca: None,
            node: None,
            roles: vec![],
            config: "/nonexistent/agent.toml".into(),
            data_addresses: vec![],
            state_dir: None,
            keep_config: false,
        }
    }

    #[tokio::test]
    async fn pinless_token_without_ca_asks_for_ca() {
        let (t, _) = Token::generate("ws1", std::time::Duration::from_secs(60)).unwrap();
        let a = two_flag_args(&t.to_string());
        let e = controller_ca(&a, &t, None).await.unwrap_err().to_string();
        assert!(e.contains("--ca") && e.contains("no CA pin"), "{e}");
    }

    #[test]
    fn a_commented_template_counts_as_no_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "# comments only\n\n  # node = \"x\"\n").unwrap();
        assert!(is_template(&path).unwrap());
        let mut a = two_flag_args("fft1.a.b.c");
        a.config = path.clone();
        a.node = Some("ws-9".into());
        let cfg = base_config(&a).unwrap();
        assert_eq!(cfg.node, "ws-9");
        assert_eq!(cfg.tls.cert, dir.path().join("node.crt"));
        std::fs::write(&path, "node = \"ws-1\"\n").unwrap();
        assert!(!is_template(&path).unwrap());
    }

    #[test]
    fn node_name_is_requested_only_when_known() {
        let mut a = two_flag_args("t");
        let cfg = AgentConfig::for_tests("from-config");
        assert_eq!(requested_node(&a, &cfg), None);
        a.keep_config = true;
        assert_eq!(requested_node(&a, &cfg).as_deref(), Some("from-config"));
        a.node = Some("ws1".into());
        assert_eq!(requested_node(&a, &cfg).as_deref(), Some("ws1"));
        assert_eq!(role_of(NodeRole::Storage as i32), Some(Role::Storage));
        assert_eq!(role_of(0), None);
        assert_eq!(role_of(99), None);
    }
}
