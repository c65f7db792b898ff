//! The five API kinds behind one trait, so get/list/create/update/delete,
//! wait and output are written once instead of five times.

pub(crate) use ferrofab_proto::object::Object;
use ferrofab_proto::v1::{self, Condition, ConditionStatus, ObjectMeta};
use serde_json::{json, Map, Value};
use tonic::Status;

use crate::client::Admin;
use crate::output::{dash, enum_word, human_size, timestamp};

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

/// The full JSON/YAML document of an object.
pub(crate) fn document<R: Resource>(obj: &R) -> Value {
    let (spec, status) = obj.spec_status();
    let mut doc = Map::new();
    doc.insert("kind".into(), Value::String(R::TITLE.into()));
    doc.insert("metadata".into(), meta_view(obj.meta()));
    doc.insert("spec".into(), spec);
    doc.insert("status".into(), status);
    Value::Object(doc)
}

fn meta_view(meta: Option<&ObjectMeta>) -> Value {
    let Some(m) = meta else {
        return Value::Null;
    };
    let mut v = Map::new();
    v.insert("name".into(), json!(m.name));
    if !m.uid.is_empty() {
        v.insert("uid".into(), json!(m.uid));
    }
    v.insert("generation".into(), json!(m.generation));
    v.insert("resource_version".into(), json!(m.resource_version));
    if !m.labels.is_empty() {
        v.insert("labels".into(), json!(m.labels));
    }
    if !m.annotations.is_empty() {
        v.insert("annotations".into(), json!(m.annotations));
    }
    if !m.finalizers.is_empty() {
        v.insert("finalizers".into(), json!(m.finalizers));
    }
    if let Some(t) = &m.creation_timestamp {
        v.insert("creation_timestamp".into(), json!(timestamp(t)));
    }
    if let Some(t) = &m.deletion_timestamp {
        v.insert("deletion_timestamp".into(), json!(timestamp(t)));
    }
    Value::Object(v)
}

fn conditions_view(conds: &[Condition]) -> Value {
    Value::Array(
        conds
            .iter()
            .map(|c| {
                let mut v = Map::new();
                v.insert("type".into(), json!(c.r#type));
                v.insert("status".into(), json!(status_word(c)));
                if !c.reason.is_empty() {
                    v.insert("reason".into(), json!(c.reason));
                }
                if !c.message.is_empty() {
                    v.insert("message".into(), json!(c.message));
                }
                v.insert(
                    "severity".into(),
                    json!(enum_word(c.severity().as_str_name(), "SEVERITY_")),
                );
                if let Some(t) = &c.last_transition_time {
                    v.insert("last_transition_time".into(), json!(timestamp(t)));
                }
                Value::Object(v)
            })
            .collect(),
    )
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

impl Resource for v1::Node {
    rpcs!(
        v1::Node,
        node,
        get_node,
        GetNodeRequest,
        list_nodes,
        ListNodesRequest,
        create_node,
        CreateNodeRequest,
        update_node,
        UpdateNodeRequest,
        delete_node,
        DeleteNodeRequest
    );

    fn spec_status(&self) -> (Value, Value) {
        let spec = self.spec.clone().unwrap_or_default();
        let spec_v = json!({
            "roles": spec.roles().map(|r| enum_word(r.as_str_name(), "NODE_ROLE_")).collect::<Vec<_>>(),
            "data_addresses": spec.data_addresses.iter().map(address_text).collect::<Vec<_>>(),
            "host_nqn": spec.host_nqn,
        });
        let status_v = self.status.as_ref().map_or(Value::Null, |s| {
            json!({
                "observed_generation": s.observed_generation,
                "conditions": conditions_view(&s.conditions),
                "last_heartbeat": s.last_heartbeat.as_ref().map(timestamp),
                "agent_version": s.agent_version,
                "capacity_bytes": s.capacity_bytes,
                "free_bytes": s.free_bytes,
            })
        });
        (spec_v, status_v)
    }

    fn columns() -> &'static [&'static str] {
        &[
            "NAME",
            "ROLES",
            "ADDRESSES",
            "READY",
            "CAPACITY",
            "FREE",
            "HEARTBEAT",
        ]
    }

    fn row(&self) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        vec![
            name_of(self).to_owned(),
            list_cell(
                spec.roles()
                    .map(|r| enum_word(r.as_str_name(), "NODE_ROLE_")),
            ),
            list_cell(spec.data_addresses.iter().map(address_text)),
            ready_cell(self),
            bytes_cell(st.capacity_bytes),
            bytes_cell(st.free_bytes),
            st.last_heartbeat.as_ref().map_or("-".into(), timestamp),
        ]
    }
}

impl Resource for v1::Pool {
    rpcs!(
        v1::Pool,
        pool,
        get_pool,
        GetPoolRequest,
        list_pools,
        ListPoolsRequest,
        create_pool,
        CreatePoolRequest,
        update_pool,
        UpdatePoolRequest,
        delete_pool,
        DeletePoolRequest
    );

    fn spec_status(&self) -> (Value, Value) {
        let spec = self.spec.clone().unwrap_or_default();
        let backing = spec.backing.clone().unwrap_or_default();
        let spec_v = json!({
            "node": spec.node,
            "backing": {
                "kind": enum_word(backing.kind().as_str_name(), "BACKING_KIND_"),
                "path": backing.path,
            },
            "capacity": spec.capacity,
            "overcommit_ratio": spec.overcommit_ratio,
            "namespace_limit": spec.namespace_limit,
            "reclaim_policy": enum_word(spec.reclaim_policy().as_str_name(), "RECLAIM_POLICY_"),
        });
        let status_v = self.status.as_ref().map_or(Value::Null, |s| {
            json!({
                "observed_generation": s.observed_generation,
                "conditions": conditions_view(&s.conditions),
                "capacity_bytes": s.capacity_bytes,
                "allocated_bytes": s.allocated_bytes,
                "free_bytes": s.free_bytes,
                "volume_count": s.volume_count,
            })
        });
        (spec_v, status_v)
    }

    fn columns() -> &'static [&'static str] {
        &[
            "NAME",
            "NODE",
            "BACKING",
            "CAPACITY",
            "ALLOCATED",
            "FREE",
            "VOLUMES",
            "READY",
        ]
    }

    fn row(&self) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        let backing = spec.backing.clone().unwrap_or_default();
        vec![
            name_of(self).to_owned(),
            spec.node.clone(),
            format!(
                "{}:{}",
                enum_word(backing.kind().as_str_name(), "BACKING_KIND_"),
                backing.path
            ),
            if st.capacity_bytes > 0 {
                human_size(st.capacity_bytes)
            } else {
                spec.capacity.clone()
            },
            bytes_cell(st.allocated_bytes),
            bytes_cell(st.free_bytes),
            st.volume_count.to_string(),
            ready_cell(self),
        ]
    }
}

impl Resource for v1::Volume {
    rpcs!(
        v1::Volume,
        volume,
        get_volume,
        GetVolumeRequest,
        list_volumes,
        ListVolumesRequest,
        create_volume,
        CreateVolumeRequest,
        update_volume,
        UpdateVolumeRequest,
        delete_volume,
        DeleteVolumeRequest
    );

    fn phase_readiness(&self) -> Option<Readiness> {
        let st = self.status.as_ref()?;
        Some(match st.phase() {
            v1::VolumePhase::Ready => Readiness::Ready,
            v1::VolumePhase::Failed => Readiness::Failed(
                ready_condition(&st.conditions)
                    .map(condition_text)
                    .unwrap_or_else(|| "volume failed".into()),
            ),
            p => Readiness::Pending(format!(
                "phase {}",
                enum_word(p.as_str_name(), "VOLUME_PHASE_")
            )),
        })
    }

    fn spec_status(&self) -> (Value, Value) {
        let spec = self.spec.clone().unwrap_or_default();
        let mut spec_v = json!({
            "tenant": spec.tenant,
            "size": spec.size,
            "block_size": spec.block_size,
        });
        if !spec.pool.is_empty() {
            spec_v["pool"] = json!(spec.pool);
        }
        if let Some(sel) = spec
            .pool_selector
            .as_ref()
            .filter(|s| !s.match_labels.is_empty())
        {
            spec_v["pool_selector"] = json!(sel.match_labels);
        }
        if let Some(t) = &spec.expires_at {
            spec_v["expires_at"] = json!(timestamp(t));
            spec_v["expiry_action"] =
                json!(if spec.expiry_action == v1::ExpiryAction::Delete as i32 {
                    "delete"
                } else {
                    "retain"
                });
        }
        let status_v = self.status.as_ref().map_or(Value::Null, |s| {
            let mut v = json!({
                "observed_generation": s.observed_generation,
                "conditions": conditions_view(&s.conditions),
                "phase": enum_word(s.phase().as_str_name(), "VOLUME_PHASE_"),
                "pool": s.pool,
                "node": s.node,
                "size_bytes": s.size_bytes,
                "uuid": s.uuid,
                "nguid": s.nguid,
                "serial": s.serial,
                "subsystem_nqn": s.subsystem_nqn,
                "backing_path": s.backing_path,
                "export_ready": s.export_ready,
            });
            if let Some(t) = &s.expiry_deletes_at {
                v["expiry_deletes_at"] = json!(timestamp(t));
            }
            v
        });
        (spec_v, status_v)
    }

    fn columns() -> &'static [&'static str] {
        &[
            "NAME", "TENANT", "SIZE", "POOL", "NODE", "PHASE", "READY", "EXPIRES",
        ]
    }

    fn row(&self) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        vec![
            name_of(self).to_owned(),
            spec.tenant.clone(),
            spec.size.clone(),
            dash(&st.pool),
            dash(&st.node),
            enum_word(st.phase().as_str_name(), "VOLUME_PHASE_"),
            ready_cell(self),
            crate::output::expires_cell(
                spec.expires_at.as_ref(),
                st.expiry_deletes_at.as_ref(),
                spec.expiry_action != v1::ExpiryAction::Delete as i32,
                crate::output::now_seconds(),
            ),
        ]
    }
}

/// An access mode as the CLI takes it: `read-write` (also for
/// UNSPECIFIED, which means it), `read-only`, `read-write-many`.
fn mode_word(raw: i32) -> String {
    match v1::AccessMode::try_from(raw) {
        Ok(v1::AccessMode::Unspecified) | Ok(v1::AccessMode::ReadWrite) => "read-write".into(),
        Ok(m) => enum_word(m.as_str_name(), "ACCESS_MODE_"),
        Err(_) => format!("unknown ({raw})"),
    }
}

impl Resource for v1::Attachment {
    rpcs!(
        v1::Attachment,
        attachment,
        get_attachment,
        GetAttachmentRequest,
        list_attachments,
        ListAttachmentsRequest,
        create_attachment,
        CreateAttachmentRequest,
        update_attachment,
        UpdateAttachmentRequest,
        delete_attachment,
        DeleteAttachmentRequest
    );

    fn phase_readiness(&self) -> Option<Readiness> {
        let st = self.status.as_ref()?;
        Some(match st.phase() {
            v1::AttachmentPhase::Attached => Readiness::Ready,
            p => Readiness::Pending(format!(
                "phase {}",
                enum_word(p.as_str_name(), "ATTACHMENT_PHASE_")
            )),
        })
    }

    fn spec_status(&self) -> (Value, Value) {
        let spec = self.spec.clone().unwrap_or_default();
        let spec_v = json!({
            "volume": spec.volume,
            "node": spec.node,
            "mode": mode_word(spec.mode),
        });
        let status_v = self.status.as_ref().map_or(Value::Null, |s| {
            json!({
                "observed_generation": s.observed_generation,
                "conditions": conditions_view(&s.conditions),
                "phase": enum_word(s.phase().as_str_name(), "ATTACHMENT_PHASE_"),
                "device_path": s.device_path,
                "moved_from_node": s.moved_from_node,
            })
        });
        (spec_v, status_v)
    }

    fn columns() -> &'static [&'static str] {
        &["NAME", "VOLUME", "NODE", "MODE", "PHASE", "DEVICE", "READY"]
    }

    fn row(&self) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        vec![
            name_of(self).to_owned(),
            spec.volume.clone(),
            spec.node.clone(),
            mode_word(spec.mode),
            enum_word(st.phase().as_str_name(), "ATTACHMENT_PHASE_"),
            dash(&st.device_path),
            ready_cell(self),
        ]
    }
}

impl Resource for v1::Tenant {
    const CONVERGES: bool = false;
    rpcs!(
        v1::Tenant,
        tenant,
        get_tenant,
        GetTenantRequest,
        list_tenants,
        ListTenantsRequest,
        create_tenant,
        CreateTenantRequest,
        update_tenant,
        UpdateTenantRequest,
        delete_tenant,
        DeleteTenantRequest
    );

    fn spec_status(&self) -> (Value, Value) {
        let spec = self.spec.clone().unwrap_or_default();
        let spec_v = json!({
            "capacity_quota": spec.capacity_quota,
            "volume_quota": spec.volume_quota,
            "allowed_nodes": spec.allowed_nodes,
        });
        let status_v = self.status.as_ref().map_or(Value::Null, |s| {
            json!({
                "observed_generation": s.observed_generation,
                "conditions": conditions_view(&s.conditions),
                "used_bytes": s.used_bytes,
                "volume_count": s.volume_count,
            })
        });
        (spec_v, status_v)
    }

    fn columns() -> &'static [&'static str] {
        &["NAME", "USED", "QUOTA", "VOLUMES", "ALLOWED NODES", "READY"]
    }

    fn row(&self) -> Vec<String> {
        let spec = self.spec.clone().unwrap_or_default();
        let st = self.status.clone().unwrap_or_default();
        let vol_quota = if spec.volume_quota == 0 {
            "-".to_owned()
        } else {
            spec.volume_quota.to_string()
        };
        vec![
            name_of(self).to_owned(),
            human_size(st.used_bytes),
            if spec.capacity_quota.is_empty() {
                "unlimited".into()
            } else {
                spec.capacity_quota.clone()
            },
            format!("{}/{}", st.volume_count, vol_quota),
            list_cell(spec.allowed_nodes.iter().cloned()),
            ready_cell(self),
        ]
    }
}

/// `host:port` (the port only when set).
pub(crate) fn address_text(a: &v1::DataAddress) -> String {
    let host = if a.address.contains(':') {
        format!("[{}]", a.address)
    } else {
        a.address.clone()
    };
    if a.port == 0 {
        host
    } else {
        format!("{host}:{}", a.port)
    }
}

fn list_cell(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

fn bytes_cell(b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        human_size(b)
    }
}

#[cfg(test)]
mod tests {
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
