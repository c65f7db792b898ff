//! Helpers shared by the controller's benchmark targets.
#![allow(dead_code)]

use ferrofab_proto::v1::{
    ConnectionStatus, DesiredState, ExportStatus, NodeStatus, ReportStatusRequest,
};

/// The count in variable `name`, or `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// One result line, `bench: NAME VALUE UNIT`, the format the bench suite's
/// scripts parse.
pub fn report(name: &str, value: f64, unit: &str) {
    println!("bench: {name} {value:.2} {unit}");
}

/// VmRSS of process `pid` in MiB (0 when unreadable).
pub fn rss_mb(pid: u32) -> f64 {
    ferrofab_testkit::process::rss_mb_of(pid)
}

/// `cargo test --benches` runs bench targets without `--bench`: they
/// measure only under `cargo bench`.
pub fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// What a data-path-less agent observes for `ds`: everything desired is
/// there.
pub fn observe(node: &str, ds: &DesiredState) -> ReportStatusRequest {
    ReportStatusRequest {
        node: node.into(),
        node_status: Some(NodeStatus::default()),
        exports: ds
            .exports
            .iter()
            .map(|e| ExportStatus {
                volume: e.volume.clone(),
                subsystem_nqn: e.subsystem_nqn.clone(),
                ready: true,
                conditions: vec![],
                generation: e.generation,
                ..Default::default()
            })
            .collect(),
        connections: ds
            .connections
            .iter()
            .map(|c| ConnectionStatus {
                attachment: c.attachment.clone(),
                volume: c.volume.clone(),
                connected: true,
                device_path: format!("/sim/{}", c.exposure_name),
                conditions: vec![],
                size_bytes: 0,
            })
            .collect(),
        desired_revision: ds.revision,
    }
}
