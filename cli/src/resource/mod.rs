//! The five API kinds behind one trait, so get/list/create/update/delete,
//! wait and output are written once instead of five times.

pub(crate) use ferrofab_proto::object::Object;
use ferrofab_proto::v1::{Condition, ConditionStatus};
use serde_json::Value;
use tonic::Status;

use crate::client::Admin;

/// What waiting can conclude about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Done.
    Ready,
    /// Not yet; the text says why (a condition message or phase).
    Pending(String),
    /// Will not become ready without intervention.
    Failed(String),
}

/// One API kind: its RPCs, its readiness rule and its presentation. Its
/// words (`R::NOUN` as on the command line, `R::TITLE` as in documents),
/// metadata and conditions come from [`Object`], shared with the
/// controller.
pub(crate) trait Resource: Object {
    /// Whether the controller reports convergence for this kind at all.
    /// Tenants are pure bookkeeping: existing is all "ready" can mean.
    const CONVERGES: bool = true;
    /// Readiness from a kind-specific phase, where the kind has one.
    fn phase_readiness(&self) -> Option<Readiness> {
        None
    }

    async fn get(c: &mut Admin, name: &str) -> Result<Self, Status>;
    async fn list(c: &mut Admin, selector: &str) -> Result<Vec<Self>, Status>;
    async fn create(c: &mut Admin, obj: Self) -> Result<Self, Status>;
    async fn update(c: &mut Admin, obj: Self) -> Result<Self, Status>;
    async fn delete(c: &mut Admin, name: &str, resource_version: u64) -> Result<Self, Status>;

    /// `spec` and `status` as JSON (metadata is shared).
    fn spec_status(&self) -> (Value, Value);
    /// Table header.
    fn columns() -> &'static [&'static str];
    /// Table cells, one per column.
    fn row(&self) -> Vec<String>;
}

/// The object's name ("" if the server sent no metadata).
pub(crate) fn name_of<R: Resource>(obj: &R) -> &str {
    obj.name()
}

/// `volume "scratch-1"`: the prefix of every error about an object.
pub(crate) fn what<R: Resource>(name: &str) -> String {
    format!("{} {name:?}", R::NOUN)
}

/// Whether an object is Ready.
///
/// A status describing an older generation says nothing about the current
/// spec, so it counts as pending; an explicit `Ready` condition wins over a
/// phase; kinds with neither are ready once observed, and kinds that do not
/// converge (tenants) as soon as they exist.
pub(crate) fn readiness<R: Resource>(obj: &R) -> Readiness {
    let generation = obj.meta().map_or(0, |m| m.generation);
    if obj.meta().is_some_and(|m| m.deletion_timestamp.is_some()) {
        return Readiness::Pending("being deleted".into());
    }
    if !R::CONVERGES {
        return Readiness::Ready;
    }
    if let Some(Readiness::Failed(m)) = obj.phase_readiness() {
        return Readiness::Failed(m);
    }
    let Some(observed) = obj.observed_generation() else {
        return Readiness::Pending("no status reported yet".into());
    };
    if observed < generation {
        return Readiness::Pending("controller has not observed the latest change".into());
    }
    if let Some(c) = ready_condition(obj.conditions()) {
        return match c.status() {
            ConditionStatus::True => Readiness::Ready,
            _ => Readiness::Pending(condition_text(c)),
        };
    }
    match obj.phase_readiness() {
        Some(Readiness::Pending(phase)) => {
            Readiness::Pending(first_unmet(obj.conditions()).map_or(phase, condition_text))
        }
        Some(other) => other,
        None => Readiness::Ready,
    }
}

/// The first condition that is not True: the most specific explanation
/// of why an object without a `Ready` condition is still pending.
fn first_unmet(conds: &[Condition]) -> Option<&Condition> {
    conds.iter().find(|c| c.status() != ConditionStatus::True)
}

fn ready_condition(conds: &[Condition]) -> Option<&Condition> {
    conds.iter().find(|c| c.r#type == "Ready")
}

fn condition_text(c: &Condition) -> String {
    match (c.reason.is_empty(), c.message.is_empty()) {
        (true, true) => format!("{} is {}", c.r#type, status_word(c)),
        (false, true) => c.reason.clone(),
        (_, false) => c.message.clone(),
    }
}

fn status_word(c: &Condition) -> &'static str {
    match c.status() {
        ConditionStatus::True => "True",
        ConditionStatus::False => "False",
        _ => "Unknown",
    }
}

/// The READY table cell, from the same rule `wait` uses: `True`,
/// `False (Reason)` with the reason of the unmet condition, or `Failed`.
pub(crate) fn ready_cell<R: Resource>(obj: &R) -> String {
    match readiness(obj) {
        Readiness::Ready => "True".into(),
        Readiness::Failed(_) => "Failed".into(),
        Readiness::Pending(_) => {
            let unmet = ready_condition(obj.conditions())
                .filter(|c| c.status() != ConditionStatus::True)
                .or_else(|| first_unmet(obj.conditions()));
            match unmet {
                Some(c) if !c.reason.is_empty() => format!("False ({})", c.reason),
                _ => "False".into(),
            }
        }
    }
}

/// Items asked for per List call; the controller may send fewer to stay
/// within its message limit.
const LIST_PAGE_SIZE: u32 = 500;

/// Implements the RPC plumbing, which differs between kinds only in names.
macro_rules! rpcs {
    ($ty:ty, $field:ident, $get:ident, $getreq:ident, $list:ident, $listreq:ident,
     $create:ident, $createreq:ident, $update:ident, $updatereq:ident,
     $delete:ident, $deletereq:ident) => {
        async fn get(c: &mut Admin, name: &str) -> Result<Self, Status> {
            let req = v1::$getreq {
                name: name.to_owned(),
            };
            Ok(c.$get(req).await?.into_inner())
        }
        /// All pages: the controller bounds each response by the message
        /// size, so a long list comes in several.
        async fn list(c: &mut Admin, selector: &str) -> Result<Vec<Self>, Status> {
            let mut items = Vec::new();
            let mut page_token = String::new();
            loop {
                let req = v1::$listreq {
                    label_selector: selector.to_owned(),
                    page_size: LIST_PAGE_SIZE,
                    page_token,
                };
                let page = c.$list(req).await?.into_inner();
                items.extend(page.items);
                if page.next_page_token.is_empty() {
                    return Ok(items);
                }
                page_token = page.next_page_token;
            }
        }
        async fn create(c: &mut Admin, obj: Self) -> Result<Self, Status> {
            // Only the volume requests have more fields (dry_run, left off).
            #[allow(clippy::needless_update)]
            let req = v1::$createreq {
                $field: Some(obj),
                ..Default::default()
            };
            Ok(c.$create(req).await?.into_inner())
        }
        async fn update(c: &mut Admin, obj: Self) -> Result<Self, Status> {
            // Only the volume requests have more fields (dry_run, left off).
            #[allow(clippy::needless_update)]
            let req = v1::$updatereq {
                $field: Some(obj),
                ..Default::default()
            };
            Ok(c.$update(req).await?.into_inner())
        }
        async fn delete(c: &mut Admin, name: &str, resource_version: u64) -> Result<Self, Status> {
            let req = v1::$deletereq {
                name: name.to_owned(),
                resource_version,
            };
            Ok(c.$delete(req).await?.into_inner())
        }
    };
}

mod attachment;
mod node;
mod pool;
mod tenant;
mod view;
mod volume;

pub(crate) use view::document;

#[cfg(test)]
mod tests {
    use ferrofab_proto::v1::{self, ObjectMeta};

    use super::view::address_text;
    use super::*;

    fn cond(status: ConditionStatus, reason: &str) -> Condition {
        Condition {
            r#type: "Ready".into(),
            status: status as i32,
            reason: reason.into(),
            message: format!("because {reason}"),
            ..Default::default()
        }
    }

    fn volume(
        generation: u64,
        observed: u64,
        phase: v1::VolumePhase,
        conds: Vec<Condition>,
    ) -> v1::Volume {
        v1::Volume {
            metadata: Some(ObjectMeta {
                name: "v".into(),
                generation,
                ..Default::default()
            }),
            spec: None,
            status: Some(v1::VolumeStatus {
                observed_generation: observed,
                phase: phase as i32,
                conditions: conds,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn readiness_rules() {
        use v1::VolumePhase as P;
        assert_eq!(readiness(&volume(1, 1, P::Ready, vec![])), Readiness::Ready);
        assert!(matches!(
            readiness(&volume(2, 1, P::Ready, vec![])),
            Readiness::Pending(_)
        ));
        assert_eq!(
            readiness(&volume(
                1,
                1,
                P::Placed,
                vec![cond(ConditionStatus::False, "NoExport")]
            )),
            Readiness::Pending("because NoExport".into())
        );
        assert!(matches!(
            readiness(&volume(1, 1, P::Failed, vec![])),
            Readiness::Failed(_)
        ));
        assert_eq!(
            readiness(&volume(
                1,
                1,
                P::Placed,
                vec![cond(ConditionStatus::True, "Ok")]
            )),
            Readiness::Ready
        );
        let t = v1::Tenant {
            metadata: Some(ObjectMeta::default()),
            ..Default::default()
        };
        assert_eq!(readiness(&t), Readiness::Ready);
    }

    #[test]
    fn ready_cells() {
        use v1::VolumePhase as P;
        assert_eq!(ready_cell(&volume(1, 1, P::Ready, vec![])), "True");
        assert_eq!(
            ready_cell(&volume(
                1,
                1,
                P::Pending,
                vec![cond(ConditionStatus::False, "NoPoolFits")]
            )),
            "False (NoPoolFits)"
        );
        let mut exported = cond(ConditionStatus::False, "WaitingForStorageNode");
        exported.r#type = "Exported".into();
        let v = volume(1, 1, P::Placed, vec![exported]);
        assert_eq!(ready_cell(&v), "False (WaitingForStorageNode)");
        assert_eq!(
            readiness(&v),
            Readiness::Pending("because WaitingForStorageNode".into())
        );
        assert_eq!(ready_cell(&volume(1, 1, P::Failed, vec![])), "Failed");
    }

    #[test]
    fn document_shape() {
        let v = volume(1, 1, v1::VolumePhase::Ready, vec![]);
        let d = document(&v);
        assert_eq!(d["kind"], "Volume");
        assert_eq!(d["metadata"]["name"], "v");
        assert_eq!(d["status"]["phase"], "ready");
    }

    #[test]
    fn addresses() {
        let a = v1::DataAddress {
            address: "fd00::1".into(),
            port: 4420,
            transport: String::new(),
        };
        assert_eq!(address_text(&a), "[fd00::1]:4420");
    }
}
