//! Compiles proto/ with protox, so that a fresh machine needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "agora/hearing/v1/hearing.proto",
        "agora/hearing/v1/events.proto",
        "agora/response/v1/response.proto",
        "agora/response/v1/events.proto",
        "agora/identity/v1/identity.proto",
        "agora/identity/v1/events.proto",
        "agora/records/v1/events.proto",
        "agora/records/v1/records.proto",
        "agora/notification/v1/notification.proto",
        "agora/feed/v1/feed.proto",
    ];
    let descriptors = protox::compile(files, [&root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("agora_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_fds(descriptors)?;
    // The directory catches a new file; each file is named too, because once a warm target
    // directory did not rebuild after a change to records.proto with the directory alone.
    println!("cargo:rerun-if-changed={}", root.display());
    for file in files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    Ok(())
}
