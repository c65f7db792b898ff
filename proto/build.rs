//! Generates the ferrofab.v1 Rust code. Uses the protoc shipped inside
//! `protoc-bin-vendored` because build machines have no protoc installed.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/ferrofab/v1/meta.proto",
    "proto/ferrofab/v1/resources.proto",
    "proto/ferrofab/v1/admin.proto",
    "proto/ferrofab/v1/agent.proto",
    "proto/ferrofab/v1/debug.proto",
];

/// Messages of meta.proto and resources.proto that the HTTP/JSON API
/// carries (the five kinds and their parts).
const JSON_MESSAGES: &[&str] = &[
    "ObjectMeta",
    "Condition",
    "LabelSelector",
    "DataAddress",
    "NodeSpec",
    "NodeStatus",
    "Node",
    "PoolBacking",
    "PoolSpec",
    "PoolStatus",
    "Pool",
    "VolumeSpec",
    "VolumeStatus",
    "Volume",
    "AttachmentSpec",
    "AttachmentStatus",
    "Attachment",
    "TenantSpec",
    "TenantStatus",
    "Tenant",
];

/// Their google.protobuf.Timestamp fields: RFC 3339 strings in JSON.
const JSON_TIMESTAMPS: &[&str] = &[
    "ObjectMeta.creation_timestamp",
    "ObjectMeta.deletion_timestamp",
    "Condition.last_transition_time",
    "NodeStatus.last_heartbeat",
    "VolumeSpec.expires_at",
    "VolumeStatus.expiry_deletes_at",
];

/// Their enum fields (i32 in Rust) and the `json` module that writes them
/// as the enum value's name, as the protobuf JSON mapping does.
const JSON_ENUMS: &[(&str, &str, &str)] = &[
    ("Condition.status", "condition_status", "String"),
    ("Condition.severity", "severity", "String"),
    ("NodeSpec.roles", "node_roles", "Vec<String>"),
    ("PoolBacking.kind", "backing_kind", "String"),
    ("PoolSpec.reclaim_policy", "reclaim_policy", "String"),
    ("VolumeSpec.expiry_action", "expiry_action", "String"),
    ("VolumeStatus.phase", "volume_phase", "String"),
    ("AttachmentSpec.mode", "access_mode", "String"),
    ("AttachmentStatus.phase", "attachment_phase", "String"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    let protos: Vec<PathBuf> = PROTOS.iter().map(PathBuf::from).collect();
    let mut builder = tonic_prost_build::configure();
    // The object messages also derive serde and utoipa's schema (feature
    // `json`, used by the controller's HTTP/JSON API and its OpenAPI
    // document), so that the JSON shape is the protobuf message itself and
    // cannot drift from the gRPC one. The attributes are cfg-gated: crates
    // that do not enable `json` compile exactly what they did before.
    for m in JSON_MESSAGES {
        builder = builder.message_attribute(
            format!(".ferrofab.v1.{m}"),
            "#[cfg_attr(feature = \"json\", derive(serde::Serialize, serde::Deserialize, utoipa::ToSchema))]",
        );
        // Every field optional in JSON (missing: the protobuf default).
        // Per field rather than on the container: utoipa would otherwise
        // serialize each field's default into the schema, which the
        // timestamp fields cannot do without their `with` module.
        builder = builder.field_attribute(
            format!(".ferrofab.v1.{m}"),
            "#[cfg_attr(feature = \"json\", serde(default))]",
        );
    }
    for f in JSON_TIMESTAMPS {
        builder = builder.field_attribute(
            format!(".ferrofab.v1.{f}"),
            "#[cfg_attr(feature = \"json\", serde(with = \"crate::json::timestamp\"))]\n\
             #[cfg_attr(feature = \"json\", schema(value_type = Option<String>, format = DateTime))]",
        );
    }
    for (f, module, ty) in JSON_ENUMS {
        builder = builder.field_attribute(
            format!(".ferrofab.v1.{f}"),
            format!(
                "#[cfg_attr(feature = \"json\", serde(with = \"crate::json::{module}\"))]\n\
                 #[cfg_attr(feature = \"json\", schema(value_type = {ty}))]"
            ),
        );
    }
    builder
        .build_server(true)
        .build_client(true)
        // Secrets: Debug is written by hand in lib.rs, redacted.
        .skip_debug(["ferrofab.v1.DhchapKey"])
        .compile_with_config(config, &protos, &[PathBuf::from("proto"), well_known])?;
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
