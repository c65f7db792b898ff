//! `ferrofab pki init|issue|show`: local CA operations (no controller).

use std::path::Path;
use std::time::SystemTime;

use ferrofab_pki::validity::{unix_seconds, DEFAULT_CLIENT_VALIDITY, DEFAULT_NODE_VALIDITY};
use ferrofab_pki::{CertInfo, Identity, InitOptions, PkiDir, Validity};
use serde_json::json;

use super::Ctx;
use crate::args::{Format, PkiCommand, PkiInitArgs, PkiIssueArgs};
use crate::output::{print, render_value, table, timestamp};

pub fn run(ctx: &Ctx, cmd: PkiCommand) -> anyhow::Result<()> {
    match cmd {
        PkiCommand::Init(a) => init(ctx, a),
        PkiCommand::Issue(a) => issue(ctx, a),
        PkiCommand::Show { file } => show(ctx, &file),
    }
}

fn init(ctx: &Ctx, a: PkiInitArgs) -> anyhow::Result<()> {
    let opts = InitOptions {
        sans: a.sans,
        ca_validity: a.ca_validity,
        server_validity: a.server_validity,
        force: a.force,
    };
    let files = ferrofab_pki::init(&a.dir, &opts).map_err(with_force_hint)?;
    report_files(ctx, &files)?;
    if ctx.format == Format::Table {
        eprintln!(
            "next: ferrofab pki issue --dir {} --identity admin",
            a.dir.display()
        );
    }
    Ok(())
}

fn issue(ctx: &Ctx, a: PkiIssueArgs) -> anyhow::Result<()> {
    let ca = PkiDir::new(&a.dir).load_ca()?;
    let lifetime = a.validity.unwrap_or(match a.identity {
        Identity::Node(_) => DEFAULT_NODE_VALIDITY,
        _ => DEFAULT_CLIENT_VALIDITY,
    });
    let out = a.out.as_deref().unwrap_or(&a.dir);
    let (cert, key) = ferrofab_pki::issue_to_dir(
        &ca,
        &a.identity,
        Validity::from_now(lifetime)?,
        out,
        a.force,
    )
    .map_err(with_force_hint)?;
    report_files(ctx, &[cert, key])
}

/// The library says "refusing to overwrite"; only the CLI knows the flag.
fn with_force_hint(e: ferrofab_pki::PkiError) -> anyhow::Error {
    match e {
        ferrofab_pki::PkiError::AlreadyExists { .. } => {
            anyhow::anyhow!("{e} (pass --force to replace it)")
        }
        other => other.into(),
    }
}

fn report_files(ctx: &Ctx, files: &[std::path::PathBuf]) -> anyhow::Result<()> {
    let text = match ctx.format {
        Format::Table => files
            .iter()
            .map(|f| format!("wrote {}\n", f.display()))
            .collect(),
        f => render_value(
            &json!({ "files": files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>() }),
            f,
        ),
    };
    print(&text)?;
    Ok(())
}

fn show(ctx: &Ctx, file: &Path) -> anyhow::Result<()> {
    let info = CertInfo::load(file)?;
    let now = SystemTime::now();
    let ts = |t: SystemTime| {
        timestamp(&prost_types::Timestamp {
            seconds: unix_seconds(t),
            nanos: 0,
        })
    };
    let doc = json!({
        "file": file.display().to_string(),
        "identity": info.identity.as_ref().map(ToString::to_string),
        "common_name": info.common_name,
        "serial": info.serial,
        "is_ca": info.is_ca,
        "not_before": ts(info.not_before),
        "not_after": ts(info.not_after),
        "renew_after": ts(info.renew_after()),
        "expired": info.is_expired_at(now),
        "needs_renewal": info.needs_renewal_at(now),
        "dns_names": info.dns_names,
        "ip_addresses": info.ip_addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    let text = match ctx.format {
        Format::Table => key_value_table(&doc),
        f => render_value(&doc, f),
    };
    print(&text)?;
    Ok(())
}

/// Two columns, FIELD and VALUE, for one flat document.
fn key_value_table(doc: &serde_json::Value) -> String {
    let rows: Vec<Vec<String>> = doc
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let text = match v {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => "-".into(),
                        serde_json::Value::Array(a) if a.is_empty() => "-".into(),
                        serde_json::Value::Array(a) => a
                            .iter()
                            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join(","),
                        other => other.to_string(),
                    };
                    vec![k.clone(), text]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["FIELD", "VALUE"], &rows)
}
