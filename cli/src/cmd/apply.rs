//! `ferrofab apply -f layout.toml`: dry run, show the diff, confirm, apply.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context as _};
use ferrofab_proto::v1::{ApplyRequest, ApplyResponse, DiffAction, ObjectDiff};
use serde_json::{json, Value};

use super::{wait, Ctx};
use crate::args::{ApplyArgs, Format};
use crate::client::status_error;
use crate::layout;
use crate::output::{enum_word, print, render_value};

pub async fn run(ctx: &Ctx, a: ApplyArgs) -> anyhow::Result<()> {
    let what = a.file.display().to_string();
    let text = std::fs::read_to_string(&a.file).with_context(|| what.clone())?;
    let layout = layout::parse(&text).with_context(|| what.clone())?;
    let mut admin = ctx.admin().await?;
    let request = |dry_run| ApplyRequest {
        layout: Some(layout.clone()),
        dry_run,
        prune: a.prune,
        prune_nodes: a.prune_nodes,
    };
    let plan = admin
        .apply(request(true))
        .await
        .map_err(|s| status_error(&what, s))?
        .into_inner();
    print(&render_response(&plan, ctx.format))?;
    if a.dry_run {
        return Ok(());
    }
    if count_changes(&plan) > 0 {
        confirm(a.yes)?;
        let applied = admin
            .apply(request(false))
            .await
            .map_err(|s| status_error(&what, s))?
            .into_inner();
        if ctx.format == Format::Table {
            eprintln!(
                "applied: {} (revision {})",
                summary(&applied),
                applied.revision
            );
        } else {
            print(&render_response(&applied, ctx.format))?;
        }
    }
    if a.wait {
        let targets = layout::object_refs(&layout)
            .into_iter()
            .map(|(kind, name)| wait::Target::new(kind, name))
            .collect::<anyhow::Result<Vec<_>>>()?;
        wait::wait_for(&mut admin, &targets, a.timeout).await?;
    }
    Ok(())
}

/// Asks on the terminal; without one, only `--yes` may proceed, because a
/// script that pipes into apply must never hang on (or guess at) a prompt.
fn confirm(yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("not applying: stdin is not a terminal, so confirmation is impossible (pass --yes)");
    }
    eprint!("Apply these changes? [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        bail!("not applying: not confirmed; nothing was changed")
    }
}

fn count_changes(r: &ApplyResponse) -> usize {
    r.diffs
        .iter()
        .filter(|d| !matches!(d.action(), DiffAction::Unchanged | DiffAction::Unspecified))
        .count()
}

fn summary(r: &ApplyResponse) -> String {
    let n = |a: DiffAction| r.diffs.iter().filter(|d| d.action() == a).count();
    format!(
        "{} created, {} updated, {} deleted, {} unchanged",
        n(DiffAction::Created),
        n(DiffAction::Updated),
        n(DiffAction::Deleted),
        n(DiffAction::Unchanged)
    )
}

/// Human diff for tables, a document otherwise.
pub fn render_response(r: &ApplyResponse, format: Format) -> String {
    match format {
        Format::Table => render_diff_text(r),
        f => render_value(&response_doc(r), f),
    }
}

fn kind_word(d: &ObjectDiff) -> String {
    enum_word(d.kind().as_str_name(), "KIND_")
}

/// ```text
/// + tenant/neuro
/// ~ volume/scratch-1
///     spec.size: 100GiB -> 200GiB
/// - pool/old
/// plan: 1 created, 1 updated, 1 deleted, 3 unchanged
/// ```
fn render_diff_text(r: &ApplyResponse) -> String {
    let mut out = String::new();
    for d in &r.diffs {
        let sign = match d.action() {
            DiffAction::Created => '+',
            DiffAction::Updated => '~',
            DiffAction::Deleted => '-',
            _ => continue,
        };
        out.push_str(&format!("{sign} {}/{}\n", kind_word(d), d.name));
        for c in &d.changes {
            out.push_str(&format!(
                "    {}: {} -> {}\n",
                c.path,
                shown(&c.old_value),
                shown(&c.new_value)
            ));
        }
    }
    if count_changes(r) == 0 {
        out.push_str("no changes\n");
    } else {
        let label = if r.dry_run { "plan" } else { "result" };
        out.push_str(&format!("{label}: {}\n", summary(r)));
    }
    out
}

fn shown(v: &str) -> &str {
    if v.is_empty() {
        "(none)"
    } else {
        v
    }
}

fn response_doc(r: &ApplyResponse) -> Value {
    json!({
        "dry_run": r.dry_run,
        "revision": r.revision,
        "diffs": r.diffs.iter().map(|d| json!({
            "kind": kind_word(d),
            "name": d.name,
            "action": enum_word(d.action().as_str_name(), "DIFF_ACTION_"),
            "changes": d.changes.iter().map(|c| json!({
                "path": c.path,
                "old": c.old_value,
                "new": c.new_value,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrofab_proto::v1::{FieldChange, Kind};

    fn diff(kind: Kind, name: &str, action: DiffAction, changes: Vec<FieldChange>) -> ObjectDiff {
        ObjectDiff {
            kind: kind as i32,
            name: name.into(),
            action: action as i32,
            changes,
        }
    }

    fn sample() -> ApplyResponse {
        ApplyResponse {
            diffs: vec![
                diff(Kind::Tenant, "neuro", DiffAction::Created, vec![]),
                diff(
                    Kind::Volume,
                    "scratch-1",
                    DiffAction::Updated,
                    vec![FieldChange {
                        path: "spec.size".into(),
                        old_value: "100GiB".into(),
                        new_value: "200GiB".into(),
                    }],
                ),
                diff(Kind::Pool, "old", DiffAction::Deleted, vec![]),
                diff(Kind::Pool, "fast", DiffAction::Unchanged, vec![]),
            ],
            revision: 0,
            dry_run: true,
        }
    }

    #[test]
    fn text_diff() {
        assert_eq!(
            render_response(&sample(), Format::Table),
            "+ tenant/neuro\n~ volume/scratch-1\n    spec.size: 100GiB -> 200GiB\n- pool/old\n\
             plan: 1 created, 1 updated, 1 deleted, 1 unchanged\n"
        );
        let empty = ApplyResponse {
            diffs: vec![diff(Kind::Pool, "fast", DiffAction::Unchanged, vec![])],
            ..Default::default()
        };
        assert_eq!(render_response(&empty, Format::Table), "no changes\n");
        assert_eq!(count_changes(&empty), 0);
    }

    #[test]
    fn json_diff() {
        let v: Value = serde_json::from_str(&render_response(&sample(), Format::Json)).unwrap();
        assert_eq!(v["diffs"][1]["kind"], "volume");
        assert_eq!(v["diffs"][1]["action"], "updated");
        assert_eq!(v["diffs"][1]["changes"][0]["new"], "200GiB");
        assert_eq!(v["dry_run"], true);
    }
}
