//! Diagnostics as Terraform shows them: a summary, a detail and, when the
//! problem is in one attribute, the path that points at its config line.

use tonic::Status;

use crate::pb;

/// Collected diagnostics of one RPC.
#[derive(Debug, Default)]
pub struct Diags(pub Vec<pb::Diagnostic>);

fn path(steps: &[&str]) -> Option<pb::AttributePath> {
    if steps.is_empty() {
        return None;
    }
    Some(pb::AttributePath {
        steps: steps
            .iter()
            .map(|s| pb::attribute_path::Step {
                selector: Some(pb::attribute_path::step::Selector::AttributeName(
                    (*s).to_owned(),
                )),
            })
            .collect(),
    })
}

/// An attribute path of plain attribute names, for requires_replace.
pub fn attr_path(name: &str) -> pb::AttributePath {
    path(&[name]).unwrap_or_default()
}

impl Diags {
    pub fn error(&mut self, summary: impl Into<String>, detail: impl Into<String>) {
        self.attr_error(&[], summary, detail);
    }

    pub fn attr_error(
        &mut self,
        attr: &[&str],
        summary: impl Into<String>,
        detail: impl Into<String>,
    ) {
        self.0.push(pb::Diagnostic {
            severity: pb::diagnostic::Severity::Error as i32,
            summary: summary.into(),
            detail: detail.into(),
            attribute: path(attr),
        });
    }

    #[cfg(test)]
    pub fn has_errors(&self) -> bool {
        self.0
            .iter()
            .any(|d| d.severity == pb::diagnostic::Severity::Error as i32)
    }

    pub fn push(&mut self, d: Diag) {
        let attr: Vec<&str> = d.attr.iter().map(String::as_str).collect();
        self.attr_error(&attr, d.summary, d.detail);
    }
}

/// One error on its way to becoming a diagnostic.
#[derive(Debug, Clone)]
pub struct Diag {
    pub summary: String,
    pub detail: String,
    pub attr: Vec<String>,
}

impl Diag {
    pub fn new(summary: impl Into<String>, detail: impl Into<String>) -> Diag {
        Diag {
            summary: summary.into(),
            detail: detail.into(),
            attr: vec![],
        }
    }
    pub fn on(mut self, attr: &str) -> Diag {
        self.attr = vec![attr.to_owned()];
        self
    }
    /// A controller refusal: the server's message (it names fields and
    /// quotas) under a summary saying what was attempted.
    pub fn api(what: &str, s: &Status) -> Diag {
        let code = ferrofab_proto::client::code_text(s.code());
        let msg: Vec<&str> = s
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        Diag::new(format!("{what}: {code}"), msg.join("; "))
    }

    /// An object that is not in the Terraform state already exists on the
    /// controller. ApplyResourceChange and PlanResourceChange carry the
    /// resource type but not its address in the configuration, so the
    /// import command has a placeholder where the resource's local name
    /// goes.
    pub fn already_exists(type_name: &str, id: &str, s: &Status, why: &str) -> Diag {
        let kind = type_name.trim_start_matches("ferrofab_");
        let server = Diag::api("", s).detail;
        Diag::new(
            format!("{kind} {id:?} already exists"),
            format!(
                "{server}. {why} To manage the existing {kind} with this configuration, import it into the state \
                 (put your resource's address in place of {type_name}.<name>, e.g. {type_name}.<name>[\"key\"] under for_each), \
                 then plan again:\n\n  terraform import {type_name}.<name> {id}\n\n\
                 Otherwise delete the existing {kind} or choose another name."
            ),
        )
    }
}

impl From<Diag> for Diags {
    fn from(d: Diag) -> Diags {
        let mut ds = Diags::default();
        ds.push(d);
        ds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn already_exists_gives_the_import_command() {
        let d = Diag::already_exists(
            "ferrofab_volume",
            "orphan-1",
            &Status::already_exists("volume \"orphan-1\" already exists"),
            "It is not in the Terraform state.",
        );
        assert_eq!(d.summary, "volume \"orphan-1\" already exists");
        assert!(
            d.detail
                .contains("terraform import ferrofab_volume.<name> orphan-1"),
            "{}",
            d.detail
        );
    }

    #[test]
    fn api_diag_keeps_server_words_on_one_line() {
        let d = Diag::api(
            "volume \"a\"",
            &Status::resource_exhausted("tenant \"lab\" quota\n  exceeded"),
        )
        .on("size");
        assert_eq!(d.summary, "volume \"a\": refused: over quota or capacity");
        assert_eq!(d.detail, "tenant \"lab\" quota; exceeded");
        let ds = Diags::from(d);
        assert!(ds.has_errors());
        let p = ds.0[0].attribute.as_ref().unwrap();
        assert_eq!(
            p.steps[0].selector,
            Some(pb::attribute_path::step::Selector::AttributeName(
                "size".into()
            ))
        );
    }
}
