//! Compiles the `.proto` files with `protox` (no system `protoc`), generates the tonic code and
//! writes the encoded descriptor set that the gateway and gRPC reflection read.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "aigronova/common/v1/options.proto",
    "aigronova/common/v1/common.proto",
    "aigronova/common/v1/data_subject.proto",
    "aigronova/common/v1/models.proto",
    "aigronova/health/v1/health.proto",
    "aigronova/fin/v1/fin.proto",
    "aigronova/governance/v1/governance.proto",
    "inference/open_inference.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true).open_files(PROTOS)?;
    // Encoded from the compiler itself: prost's own types would drop the custom options
    // (`google.api.http`, `required_scope`, `owner`) the gateway reads.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("descriptor.bin"), compiler.encode_file_descriptor_set())?;
    let fds = compiler.file_descriptor_set();
    // The inputs an answer shows, by feature name, in the same order on every call.
    tonic_prost_build::configure()
        .btree_map(".aigronova.health.v1.Assessment.features")
        .btree_map(".aigronova.fin.v1.CreditScore.features")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
