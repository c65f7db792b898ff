//! `ferrofab version`: this client's build and the controller's.

use serde_json::{json, Value};

use super::Ctx;
use crate::args::Format;
use crate::client::status_error;
use crate::output::{print, render_value};

/// Prints the client's version, then asks the controller for its own
/// (unless `client_only`). An unreachable controller is an error after the
/// client line is printed, so a script still learns the client version.
pub async fn run(ctx: &Ctx, client_only: bool) -> anyhow::Result<()> {
    let client = json!({
        "version": ferrofab_buildinfo::VERSION,
        "commit": ferrofab_buildinfo::COMMIT,
        "build_date": ferrofab_buildinfo::BUILD_DATE,
    });
    if client_only {
        return Ok(print(&render(ctx.format, &client, None))?);
    }
    let controller = async {
        let mut admin = ctx.admin().await?;
        let info = admin
            .get_server_info(ferrofab_proto::v1::GetServerInfoRequest {})
            .await
            .map_err(|s| status_error("controller", s))?
            .into_inner();
        anyhow::Ok(json!({
            "version": info.version,
            "commit": info.commit,
            "build_date": info.build_date,
            "store": info.store,
            "revision": info.revision,
        }))
    }
    .await;
    match controller {
        Ok(c) => print(&render(ctx.format, &client, Some(&c))).map_err(Into::into),
        Err(e) => {
            print(&render(ctx.format, &client, None))?;
            Err(e)
        }
    }
}

fn render(format: Format, client: &Value, controller: Option<&Value>) -> String {
    match format {
        Format::Table | Format::Wide | Format::Name => {
            let mut s = format!("client      {}\n", line(client));
            if let Some(c) = controller {
                s.push_str(&format!("controller  {}\n", line(c)));
            }
            s
        }
        other => {
            let mut doc = json!({ "client": client });
            if let Some(c) = controller {
                doc["controller"] = c.clone();
            }
            render_value(&doc, other)
        }
    }
}

/// `0.1.0 (commit abc, built 2026-12-04)`.
fn line(v: &Value) -> String {
    format!(
        "{} (commit {}, built {})",
        v["version"].as_str().unwrap_or("?"),
        v["commit"].as_str().unwrap_or("?"),
        v["build_date"].as_str().unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_both_lines() {
        let v = json!({"version": "1.0", "commit": "abc", "build_date": "2026-01-02"});
        let s = render(Format::Table, &v, Some(&v));
        assert_eq!(
            s,
            "client      1.0 (commit abc, built 2026-01-02)\n\
             controller  1.0 (commit abc, built 2026-01-02)\n"
        );
        let j: Value = serde_json::from_str(&render(Format::Json, &v, None)).unwrap();
        assert_eq!(j["client"]["commit"], "abc");
        assert!(j.get("controller").is_none());
    }
}
