//! The tenant kind: its RPCs, its table columns and its readiness rule.

use ferrofab_proto::v1;
use serde_json::{json, Value};
use tonic::Status;

use super::view::{conditions_view, list_cell};
use super::{name_of, ready_cell, Resource, LIST_PAGE_SIZE};
use crate::client::Admin;
use crate::output::human_size;

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
