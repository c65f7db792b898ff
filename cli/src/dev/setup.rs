//! Configuration writing and enrollment: the PKI, client.toml and
//! controller.toml, and each node's agent config from a bootstrap token.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use ferrofab_agent::enroll::EnrollArgs;
use ferrofab_agent::{Agent, AgentConfig, AgentHandle, PoolConfig, Provisioning, Role};
use ferrofab_pki::validity::DEFAULT_CLIENT_VALIDITY;
use ferrofab_pki::{Identity, InitOptions, Validity};
use ferrofab_proto::v1::{self, CreateBootstrapTokenRequest, DataAddress};
use tracing::info;

use super::paths::{path_text, write_atomic, Paths};
use super::state::DevState;
use super::{POOL, STORAGE_NODE, TOKEN_TTL_SECONDS};
use crate::client::{status_error, Admin};
use crate::resource::Resource;

/// A CA, the controller's server certificate (localhost, 127.0.0.1, ::1)
/// and an admin client certificate, each created only if missing.
pub(super) fn ensure_pki(paths: &Paths) -> anyhow::Result<()> {
    let pki = paths.pki();
    if !pki.ca_cert().exists() {
        ferrofab_pki::init(pki.root(), &InitOptions::default()).context("creating the PKI")?;
        info!(dir = %pki.root().display(), "created CA and controller certificate");
    }
    let admin = Identity::Admin;
    if !pki.client_cert(&admin).exists() {
        let ca = pki.load_ca()?;
        let validity = Validity::from_now(DEFAULT_CLIENT_VALIDITY)?;
        ferrofab_pki::issue_to_dir(&ca, &admin, validity, pki.root(), true)
            .context("issuing the admin certificate")?;
    }
    Ok(())
}

pub(super) fn endpoint(state: &DevState) -> String {
    format!("https://127.0.0.1:{}", state.controller_port)
}

/// Paths relative to the file, so the directory can be used as is from
/// any working directory.
pub(super) fn write_client_config(paths: &Paths, state: &DevState) -> anyhow::Result<()> {
    let text = format!(
        "# Admin access to the `ferrofab dev` cluster in this directory:\n\
         #   ferrofab --config {} volume list\n\
         endpoint = \"{}\"\n\n[tls]\nca = \"pki/ca.crt\"\ncert = \"pki/admin.crt\"\nkey = \"pki/admin.key\"\n",
        path_text(&paths.client_config()),
        endpoint(state)
    );
    write_atomic(&paths.client_config(), &text)
}

/// Written to a file and loaded back through the controller's own parser,
/// so dev runs exactly the configuration a user could run by hand.
pub(super) fn write_controller_config(
    paths: &Paths,
    state: &DevState,
) -> anyhow::Result<ferrofab_controller::config::Config> {
    let mut pki = toml::Table::new();
    pki.insert("dir".into(), path_text(paths.pki().root()).into());
    pki.insert("enrollment".into(), true.into());
    let mut t = toml::Table::new();
    t.insert(
        "listen".into(),
        format!("127.0.0.1:{}", state.controller_port).into(),
    );
    t.insert(
        "http_listen".into(),
        format!("127.0.0.1:{}", state.http_port).into(),
    );
    t.insert(
        "store_path".into(),
        path_text(&paths.root.join("controller.redb")).into(),
    );
    t.insert("pki".into(), pki.into());
    let mut api = toml::Table::new();
    api.insert(
        "listen".into(),
        format!("127.0.0.1:{}", state.api_port).into(),
    );
    t.insert("http_api".into(), api.into());
    let text = format!(
        "# Written by `ferrofab dev` at every start (ports: dev.toml).\n{}",
        toml::to_string_pretty(&t).context("encoding controller.toml")?
    );
    let path = paths.controller_config();
    write_atomic(&path, &text)?;
    Ok(ferrofab_controller::config::Config::load(&path)?)
}

pub(super) async fn connect_admin(paths: &Paths) -> anyhow::Result<Admin> {
    let cfg = crate::config::load(Some(&paths.client_config()), None)?;
    crate::client::connect(&cfg).await
}

// ------------------------------------------------------------------ nodes

/// The node's agent config: enrolled through a bootstrap token on the
/// first run (the real flow: the key never leaves the node's directory),
/// then completed with dev's local paths.
pub(super) async fn node_config(
    admin: &mut Admin,
    paths: &Paths,
    state: &DevState,
    name: &str,
    role: Role,
) -> anyhow::Result<AgentConfig> {
    let dir = paths.node(name);
    let file = dir.join("agent.toml");
    let enrolled = ["agent.toml", "node.crt", "node.key", "ca.crt"]
        .iter()
        .all(|f| dir.join(f).is_file());
    if !enrolled {
        enroll(admin, paths, state, name, role, &file).await?;
    }
    let mut cfg = AgentConfig::load(&file)?;
    cfg.controller_endpoints = vec![endpoint(state)];
    cfg.roles = vec![role];
    cfg.state_dir = dir.join("state");
    cfg.api_socket = dir.join("agent.sock");
    // A port of the system's choosing, shown in the summary: the
    // dashboard (docs/grafana) needs the agents' series too.
    cfg.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    match role {
        Role::Storage => {
            let pool = paths.pool();
            std::fs::create_dir_all(&pool)
                .with_context(|| format!("creating {}", pool.display()))?;
            cfg.pools = BTreeMap::from([(
                POOL.to_owned(),
                PoolConfig {
                    path: pool,
                    provisioning: Provisioning::Thin,
                },
            )]);
        }
        Role::Workstation => cfg.expose_dir = paths.volumes(),
    }
    write_atomic(&file, &cfg.to_toml()?)?;
    Ok(cfg)
}

pub(super) async fn enroll(
    admin: &mut Admin,
    paths: &Paths,
    state: &DevState,
    name: &str,
    role: Role,
    file: &Path,
) -> anyhow::Result<()> {
    let token = admin
        .create_bootstrap_token(CreateBootstrapTokenRequest {
            node: name.to_owned(),
            ttl_seconds: TOKEN_TTL_SECONDS,
        })
        .await
        .map_err(|s| status_error(&format!("bootstrap token for node {name:?}"), s))?
        .into_inner()
        .token;
    let data_addresses = match role {
        Role::Storage => vec![format!("127.0.0.1:{}", state.data_port)],
        Role::Workstation => Vec::new(),
    };
    let args = EnrollArgs {
        token,
        controller: format!("127.0.0.1:{}", state.controller_port),
        ca: Some(paths.pki().ca_cert()),
        node: Some(name.to_owned()),
        roles: vec![role],
        config: file.to_path_buf(),
        data_addresses,
        state_dir: Some(paths.node(name).join("state")),
        keep_config: false,
    };
    let out = ferrofab_agent::enroll::enroll(&args)
        .await
        .with_context(|| format!("enrolling node {name}"))?;
    info!(node = name, host_nqn = %out.host_nqn, "enrolled");
    Ok(())
}

/// The storage node's registered data address must be dev.toml's data
/// port: workstations connect to what the node spec says.
pub(super) async fn ensure_data_address(admin: &mut Admin, state: &DevState) -> anyhow::Result<()> {
    let what = format!("node {STORAGE_NODE:?}");
    let mut node = <v1::Node as Resource>::get(admin, STORAGE_NODE)
        .await
        .map_err(|s| status_error(&what, s))?;
    let want = vec![DataAddress {
        address: "127.0.0.1".into(),
        port: u32::from(state.data_port),
        transport: "tcp".into(),
    }];
    let spec = node.spec.get_or_insert_with(Default::default);
    if spec.data_addresses == want {
        return Ok(());
    }
    spec.data_addresses = want;
    <v1::Node as Resource>::update(admin, node)
        .await
        .map_err(|s| status_error(&what, s))?;
    Ok(())
}

pub(super) async fn start_agent(cfg: AgentConfig) -> anyhow::Result<AgentHandle> {
    let name = cfg.node.clone();
    Agent::start(cfg)
        .await
        .with_context(|| format!("starting the agent of node {name}"))
}
