//! `ferrofab token create|list|revoke`: API tokens for the HTTP/JSON API
//! and the dashboard (`ferrofab node token` mints node bootstrap tokens).

use anyhow::bail;
use ferrofab_proto::v1::{
    ApiTokenInfo, CreateApiTokenRequest, ListApiTokensRequest, RevokeApiTokenRequest,
};
use serde_json::{json, Value};

use super::Ctx;
use crate::args::{ApiTokenCommand, Format};
use crate::client::status_error;
use crate::output::{print, render_value, table, timestamp};

pub async fn run(ctx: &Ctx, cmd: ApiTokenCommand) -> anyhow::Result<()> {
    match cmd {
        ApiTokenCommand::Create {
            identity,
            ttl,
            description,
        } => create(ctx, identity, ttl, description).await,
        ApiTokenCommand::List => list(ctx).await,
        ApiTokenCommand::Revoke { id } => revoke(ctx, id).await,
    }
}

fn info_json(i: &ApiTokenInfo) -> Value {
    json!({
        "id": i.id,
        "identity": i.identity,
        "description": i.description,
        "created_at": i.created_at.as_ref().map(timestamp),
        "expires_at": i.expires_at.as_ref().map(timestamp),
    })
}

async fn create(
    ctx: &Ctx,
    identity: String,
    ttl: std::time::Duration,
    description: String,
) -> anyhow::Result<()> {
    let Ok(ttl_seconds) = u32::try_from(ttl.as_secs()) else {
        bail!("--ttl {}: too long", ferrofab_pki::format_duration(ttl));
    };
    let mut admin = ctx.admin().await?;
    let resp = admin
        .create_api_token(CreateApiTokenRequest {
            identity: identity.clone(),
            ttl_seconds,
            description,
        })
        .await
        .map_err(|s| status_error(&format!("API token for {identity}"), s))?
        .into_inner();
    let info = resp.info.unwrap_or_default();
    match ctx.format {
        Format::Table => {
            // The token alone on stdout, so `$(ferrofab token create ...)` works.
            print(&format!("{}\n", resp.token))?;
            eprintln!(
                "API token {} for {}, expires {}; it is shown only now (the controller keeps a hash)",
                info.id,
                info.identity,
                info.expires_at
                    .as_ref()
                    .map_or_else(|| "-".into(), timestamp)
            );
        }
        f => {
            let mut v = info_json(&info);
            v["token"] = json!(resp.token);
            print(&render_value(&v, f))?;
        }
    }
    Ok(())
}

async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let mut admin = ctx.admin().await?;
    let items = admin
        .list_api_tokens(ListApiTokensRequest {})
        .await
        .map_err(|s| status_error("API tokens", s))?
        .into_inner()
        .items;
    match ctx.format {
        Format::Table => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| {
                    vec![
                        i.id.clone(),
                        i.identity.clone(),
                        i.expires_at.as_ref().map_or_else(|| "-".into(), timestamp),
                        i.description.clone(),
                    ]
                })
                .collect();
            print(&table(&["ID", "IDENTITY", "EXPIRES", "DESCRIPTION"], &rows))?;
        }
        f => print(&render_value(
            &json!({ "items": items.iter().map(info_json).collect::<Vec<_>>() }),
            f,
        ))?,
    }
    Ok(())
}

async fn revoke(ctx: &Ctx, id: String) -> anyhow::Result<()> {
    let mut admin = ctx.admin().await?;
    let info = admin
        .revoke_api_token(RevokeApiTokenRequest { id: id.clone() })
        .await
        .map_err(|s| status_error(&format!("API token {id:?}"), s))?
        .into_inner()
        .info
        .unwrap_or_default();
    match ctx.format {
        Format::Table => print(&format!(
            "API token {} ({}) revoked\n",
            info.id, info.identity
        ))?,
        f => print(&render_value(&info_json(&info), f))?,
    }
    Ok(())
}
