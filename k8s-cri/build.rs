//! Generates the CRI client from the vendored `proto/runtime/v1/api.proto` with Debian's `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/runtime/v1/api.proto");
    tonic_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_protos(&["proto/runtime/v1/api.proto"], &["proto"])
        .map_err(|e| {
            format!(
                "generating the CRI client from proto/runtime/v1/api.proto: {e} \
                 (protoc comes from Debian's protobuf-compiler: apt-get install protobuf-compiler)"
            )
        })?;
    Ok(())
}
