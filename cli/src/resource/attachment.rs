//! The attachment kind: its RPCs, its table columns and its readiness rule.

use ferrofab_proto::v1;
use serde_json::{json, Value};
use tonic::Status;

use super::view::conditions_view;
use super::volume::mode_word;
use super::{name_of, ready_cell, Readiness, Resource, LIST_PAGE_SIZE};
use crate::client::Admin;
use crate::output::{dash, enum_word};

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
