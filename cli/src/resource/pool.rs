//! The pool kind: its RPCs, its table columns and its readiness rule.

use ferrofab_proto::v1;
use serde_json::{json, Value};
use tonic::Status;

use super::view::{bytes_cell, conditions_view};
use super::{name_of, ready_cell, Resource, LIST_PAGE_SIZE};
use crate::client::Admin;
use crate::output::{enum_word, human_size};

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
