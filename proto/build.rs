//! Generates the Rust SDK from `qapmap/**.proto` with the vendored protoc, so a
//! build never needs protoc installed, and writes a descriptor set for gRPC
//! server reflection.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let protos = proto_files(&root.join("qapmap"))?;
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // `prost::Name` gives each message its full name for the Qapmap-Type header.
    config.enable_type_names();
    let includes = [root.clone(), protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("qapmap_descriptor.bin"))
        .compile_with_config(config, &protos, &includes)?;
    Ok(())
}

/// Every `.proto` under `dir`, sorted so the generated code is reproducible.
fn proto_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            found.extend(proto_files(&path)?);
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}
