//! Generates the tfplugin6 server and go-plugin controller code from our own
//! proto files, with the protoc shipped inside `protoc-bin-vendored`.

use std::path::PathBuf;

const PROTOS: &[&str] = &["proto/tfplugin6.proto", "proto/grpc_controller.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let protos: Vec<PathBuf> = PROTOS.iter().map(PathBuf::from).collect();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(config, &protos, &[PathBuf::from("proto")])?;
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
