//! Generates the etcd gRPC client code included by `src/pb.rs`.
//!
//! Compiles the repository's own etcd wire contract (`../proto/etcd`) with `protox` (pure Rust,
//! no system `protoc`), clients only: the harness never serves these services.

use std::error::Error;

/// The files compiled; imports resolve against `../proto`.
const PROTOS: &[&str] = &[
    "../proto/etcd/kv.proto",
    "../proto/etcd/auth.proto",
    "../proto/etcd/rpc.proto",
    "../proto/etcd/v3lock.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=../proto/etcd");
    println!("cargo:rerun-if-changed=build.rs");

    let fds = protox::compile(PROTOS, ["../proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
