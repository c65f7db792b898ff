//! `ferrofab node token create`: ask the controller for a bootstrap token;
//! `ferrofab node rotate-key`: roll a node's data-path key.

use anyhow::bail;
use ferrofab_proto::v1::{CreateBootstrapTokenRequest, RotateNodeKeyRequest};
use serde_json::json;

use super::Ctx;
use crate::args::{Format, TokenCommand};
use crate::client::status_error;
use crate::output::{print, render_value, timestamp};

pub async fn run(ctx: &Ctx, cmd: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create { node, ttl } = cmd;
    ferrofab_pki::validate_name(&node)?;
    let Ok(ttl_seconds) = u32::try_from(ttl.as_secs()) else {
        bail!("--ttl {}: too long", ferrofab_pki::format_duration(ttl));
    };
    let mut admin = ctx.admin().await?;
    let resp = admin
        .create_bootstrap_token(CreateBootstrapTokenRequest {
            node: node.clone(),
            ttl_seconds,
        })
        .await
        .map_err(|s| status_error(&format!("bootstrap token for node {node:?}"), s))?
        .into_inner();
    let expires = resp.expires_at.as_ref().map(timestamp);
    match ctx.format {
        Format::Table => {
            // The token alone on stdout, so `$(ferrofab node token create ...)` works.
            print(&format!("{}\n", resp.token))?;
            eprintln!(
                "single-use enrollment token for node {node:?}, expires {}; give it to that node's agent",
                expires.as_deref().unwrap_or("in ttl")
            );
        }
        f => print(&render_value(
            &json!({ "node": node, "token": resp.token, "expires_at": expires }),
            f,
        ))?,
    }
    Ok(())
}

/// `ferrofab node rotate-key NODE`: the controller issues the key and rolls
/// it out; only its generation and fingerprint come back.
pub async fn rotate_key(ctx: &Ctx, node: &str) -> anyhow::Result<()> {
    ferrofab_pki::validate_name(node)?;
    let mut admin = ctx.admin().await?;
    let resp = admin
        .rotate_node_key(RotateNodeKeyRequest {
            node: node.to_string(),
        })
        .await
        .map_err(|s| status_error(&format!("rotating the key of node {node:?}"), s))?
        .into_inner();
    match ctx.format {
        Format::Table => print(&format!(
            "node {:?}: host key generation {} (fingerprint {}) issued; the storage nodes get it \
             first, then the workstation re-authenticates with it\n",
            resp.node, resp.generation, resp.fingerprint
        ))?,
        f => print(&render_value(
            &json!({ "node": resp.node, "generation": resp.generation, "fingerprint": resp.fingerprint }),
            f,
        ))?,
    }
    Ok(())
}
