//! Generates the protobuf and gRPC code included by `src/pb.rs`.
//!
//! The `.proto` files are parsed by `protox` (pure Rust), so no system
//! `protoc` is needed. All `bytes` fields become `bytes::Bytes`.
//! The etcd packages also get proto3 JSON (serde) impls from `pbjson-build`, for the
//! `/v3/*` JSON gateway; they keep the `.proto` field names on output, as etcd's gateway does,
//! and accept both those and the lowerCamel names on input.

use std::error::Error;

use prost::Message as _;

/// Every file that is compiled; imports resolve against `proto/`.
const PROTOS: &[&str] = &[
    "proto/etcd/kv.proto",
    "proto/etcd/auth.proto",
    "proto/etcd/rpc.proto",
    "proto/etcd/v3lock.proto",
    "proto/etcd/v3election.proto",
    "proto/internal/raft.proto",
    "proto/internal/peer.proto",
];

/// Kubernetes' object messages, compiled to a descriptor set only (see `src/apiserver/protobuf.rs`).
const KUBE_PROTOS: &[&str] = &["proto/kube/objects.proto"];

/// The packages the JSON gateway serves; mnemo's internal ones never leave the peer port.
const JSON_PACKAGES: &[&str] = &[
    ".etcdserverpb",
    ".mvccpb",
    ".authpb",
    ".v3lockpb",
    ".v3electionpb",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");

    let fds = protox::compile(PROTOS, ["proto"])?;
    let descriptors = fds.encode_to_vec();
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".")
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        // etcd's gateway ignores fields it does not know, so clients of a newer etcd still work.
        .ignore_unknown_fields()
        .build(JSON_PACKAGES)?;
    // Kubernetes' object messages get no Rust types: the apiserver decodes kubectl's protobuf
    // bodies dynamically (prost-reflect) against this descriptor set.
    // Encoded from protox's own pool: prost-types descriptors would drop the custom
    // `kube.pointer` field option the decoder reads.
    let mut kube = protox::Compiler::new(["proto"])?;
    kube.include_imports(true);
    for file in KUBE_PROTOS {
        kube.open_file(file)?;
    }
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("kube_descriptors.bin"),
        kube.encode_file_descriptor_set(),
    )?;
    Ok(())
}
