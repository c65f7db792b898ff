//! The node kind: its RPCs, its table columns and its readiness rule.

use ferrofab_proto::v1;
use serde_json::{json, Value};
use tonic::Status;

use super::view::{address_text, bytes_cell, conditions_view, list_cell};
use super::{name_of, ready_cell, Resource, LIST_PAGE_SIZE};
use crate::client::Admin;
use crate::output::{enum_word, timestamp};

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
