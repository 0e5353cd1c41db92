//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so a fresh
//! machine builds with cargo alone: no `protoc` binary is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Canonical, so cargo's rerun-if-changed paths are plain absolute paths.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../proto")
        .canonicalize()?;
    let files = [
        "misim/entra/v1/directory.proto",
        "misim/entra/v1/federation.proto",
        "misim/imds/v1/control.proto",
        "misim/arm/v1/authorization.proto",
        "misim/arm/v1/operations.proto",
        "misim/oidc/v1/issuers.proto",
        "misim/admin/v1/clock.proto",
        "misim/admin/v1/keys.proto",
        "misim/admin/v1/faults.proto",
        "misim/admin/v1/log.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // The descriptor set feeds tonic-reflection, so grpcurl works against every server.
    std::fs::write(
        out.join("misim_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
