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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    let protos: Vec<PathBuf> = PROTOS.iter().map(PathBuf::from).collect();
    tonic_prost_build::configure()
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
