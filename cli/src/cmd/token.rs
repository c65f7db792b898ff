//! `ferrofab node token create`: ask the controller for a bootstrap token.

use anyhow::bail;
use ferrofab_proto::v1::CreateBootstrapTokenRequest;
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
