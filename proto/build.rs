//! Compiles the protobuf definitions with protox, a pure-Rust compiler, so that
//! building Koguma never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/koguma/v1/config.proto", "proto/koguma/v1/kds.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        // Maps become BTreeMaps so that an encoded config is byte-for-byte
        // deterministic: its hash is the config version.
        .btree_map(".")
        .compile_fds(descriptors)?;
    Ok(())
}
