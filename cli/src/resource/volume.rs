//! The volume kind: its RPCs, its table columns and its readiness rule.

use ferrofab_proto::v1;
use serde_json::{json, Value};
use tonic::Status;

use super::view::conditions_view;
use super::{
    condition_text, name_of, ready_cell, ready_condition, Readiness, Resource, LIST_PAGE_SIZE,
};
use crate::client::Admin;
use crate::output::{dash, enum_word, timestamp};

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
pub(super) fn mode_word(raw: i32) -> String {
    match v1::AccessMode::try_from(raw) {
        Ok(v1::AccessMode::Unspecified) | Ok(v1::AccessMode::ReadWrite) => "read-write".into(),
        Ok(m) => enum_word(m.as_str_name(), "ACCESS_MODE_"),
        Err(_) => format!("unknown ({raw})"),
    }
}
