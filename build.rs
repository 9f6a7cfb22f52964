//! Generates the protobuf and gRPC code included by `src/pb.rs`.
//!
//! The `.proto` files are parsed by `protox` (pure Rust), so no system
//! `protoc` is needed. All `bytes` fields become `bytes::Bytes`.

use std::error::Error;

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

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");

    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
