//! Readiness and the status summary: waiting until the workstation's
//! attachments are exposed as files, then the text printed when ready.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use ferrofab_proto::v1::{self};

use super::paths::{path_text, Paths};
use super::setup::endpoint;
use super::state::DevState;
use super::{POOL, READY_TIMEOUT, STORAGE_NODE, WORKSTATION_NODE};
use crate::client::{status_error, Admin};
use crate::resource::{readiness, Readiness, Resource};

/// An attachment of the workstation whose file is there.
#[derive(Debug, Clone)]
pub(super) struct Exposed {
    pub(super) volume: String,
    pub(super) path: PathBuf,
}

/// Waits until every attachment to the workstation is Ready and its file
/// exists (attachments the user deleted are simply not waited for).
pub(super) async fn wait_attached(
    admin: &mut Admin,
    volumes: &Path,
) -> anyhow::Result<Vec<Exposed>> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let (ready, pending) = attachment_states(admin, volumes).await?;
        if pending.is_empty() {
            return Ok(ready);
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out after {}s waiting for {}",
                READY_TIMEOUT.as_secs(),
                pending.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// (ready, descriptions of the pending). A Failed phase counts as pending:
/// right after start the target may still be coming up, and the timeout
/// reports the reason if it never does.
pub(super) async fn attachment_states(
    admin: &mut Admin,
    volumes: &Path,
) -> anyhow::Result<(Vec<Exposed>, Vec<String>)> {
    let all = <v1::Attachment as Resource>::list(admin, "")
        .await
        .map_err(|s| status_error("attachments", s))?;
    let mut ready = Vec::new();
    let mut pending = Vec::new();
    for a in all {
        let Some(spec) = a.spec.as_ref().filter(|s| s.node == WORKSTATION_NODE) else {
            continue;
        };
        let name = a.metadata.as_ref().map_or("", |m| m.name.as_str());
        let path = exposed_path(&a, volumes);
        match readiness(&a) {
            Readiness::Ready if path.exists() => ready.push(Exposed {
                volume: spec.volume.clone(),
                path,
            }),
            Readiness::Ready => pending.push(format!(
                "attachment/{name} (file {} not there yet)",
                path.display()
            )),
            Readiness::Pending(why) | Readiness::Failed(why) => {
                pending.push(format!("attachment/{name} ({why})"))
            }
        }
    }
    Ok((ready, pending))
}

/// The agent reports the file it exposed; before its first report the
/// file is named after the volume in the exposure directory.
pub(super) fn exposed_path(a: &v1::Attachment, volumes: &Path) -> PathBuf {
    match a.status.as_ref().map(|s| s.device_path.as_str()) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => volumes.join(a.spec.as_ref().map_or("", |s| s.volume.as_str())),
    }
}

// ------------------------------------------------------------------ summary

pub(super) async fn summary(
    admin: &mut Admin,
    paths: &Paths,
    state: &DevState,
    http: Option<SocketAddr>,
    agent_metrics: &[SocketAddr],
    exposed: &[Exposed],
) -> anyhow::Result<String> {
    let volumes = <v1::Volume as Resource>::list(admin, "")
        .await
        .map_err(|s| status_error("volumes", s))?;
    let client = path_text(&paths.client_config());
    let mut out = format!("ferrofab dev: cluster in {}\n", paths.root.display());
    out += &format!("  controller  {}", endpoint(state));
    if let Some(h) = http {
        out += &format!("  (metrics http://{h}/metrics)");
    }
    out += &format!(
        "\n  node        {STORAGE_NODE}  storage      NVMe/TCP 127.0.0.1:{}, pool {POOL} in {}\n",
        state.data_port,
        paths.pool().display()
    );
    out += &format!(
        "  node        {WORKSTATION_NODE}       workstation  volumes appear in {}\n",
        paths.volumes().display()
    );
    if !agent_metrics.is_empty() {
        let urls: Vec<String> = agent_metrics
            .iter()
            .map(|a| format!("http://{a}/metrics"))
            .collect();
        out += &format!("  agent metrics  {}\n", urls.join("  "));
    }
    for v in &volumes {
        out += &volume_line(v, exposed);
    }
    if let Some(first) = exposed.first() {
        let p = first.path.display();
        out += &format!(
            "\ntry:\n  dd if=/dev/urandom of={p} bs=1M count=64 conv=fsync\n  \
             dd if={p} bs=1M count=64 | sha256sum\n"
        );
    } else {
        out += "\nno volume is attached to the workstation\n";
    }
    out += &format!(
        "  ferrofab --config {client} volume list\n\
         client config (admin): {client}\n\
         stop with Ctrl-C; run the same command again to resume\n"
    );
    Ok(out)
}

pub(super) fn volume_line(v: &v1::Volume, exposed: &[Exposed]) -> String {
    let name = v.metadata.as_ref().map_or("", |m| m.name.as_str());
    let size = v.spec.as_ref().map_or("", |s| s.size.as_str());
    let at = exposed.iter().find(|e| e.volume == name).map_or_else(
        || "not attached".to_owned(),
        |e| format!("attached to {WORKSTATION_NODE}: {}", e.path.display()),
    );
    format!("  volume      {name:<10} {size:<6} thin, {at}\n")
}

/// How long the admin token `dev` prints stays valid: a working day of
/// trying things, not a credential that outlives the session by weeks.
const DASHBOARD_TOKEN_TTL_SECONDS: u32 = 12 * 3600;

/// The dashboard's URL and a fresh admin API token to sign in with (a new
/// one each start; the previous ones expire by themselves).
pub(super) async fn dashboard(
    admin: &mut Admin,
    paths: &Paths,
    api: SocketAddr,
) -> anyhow::Result<String> {
    let t = admin
        .create_api_token(v1::CreateApiTokenRequest {
            identity: "admin".into(),
            ttl_seconds: DASHBOARD_TOKEN_TTL_SECONDS,
            description: "ferrofab dev".into(),
        })
        .await
        .map_err(|s| status_error("dashboard token", s))?
        .into_inner();
    let port = api.port();
    let ca = path_text(&paths.pki().root().join("ca.crt"));
    Ok(format!(
        "dashboard: https://localhost:{port}/ui  (sign in with the admin token below; \
         the certificate is from {ca})\n\
         admin API token (12h): {}\n\
         curl --cacert {ca} -H 'Authorization: Bearer <token>' https://localhost:{port}/v1/volumes\n",
        t.token
    ))
}
