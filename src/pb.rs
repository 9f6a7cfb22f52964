//! Generated protobuf and gRPC code, and nothing else.
//!
//! Every module here is produced by `build.rs` from the files under `proto/`:
//! the etcd v3 wire contract (`etcdserverpb`, `mvccpb`, `authpb`, `v3lockpb`,
//! `v3electionpb`) and mnemo's own Raft entry payload (`internal`).
//!
//! Layering rule: protobuf types may be used only by the gRPC server layer
//! (`server/grpc`), the client, and the apply codec. Everything else works on
//! the crate's own domain types.
//!
//! The modules must stay siblings: generated code refers across packages with
//! relative paths such as `super::mvccpb::KeyValue`.
//!
//! The etcd packages also carry proto3 JSON `Serialize`/`Deserialize` impls (`*.serde.rs`,
//! from `pbjson-build`) for the JSON gateway.

/// etcd `mvccpb`: `KeyValue` and `Event`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd `authpb`: users, roles and permissions.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// etcd `etcdserverpb`: the KV, Watch, Lease, Cluster, Maintenance and Auth services.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// etcd `v3lockpb`: the Lock service.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// etcd `v3electionpb`: the Election service.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v3electionpb {
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.rs"));
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// Holder for the two-level `mnemo.internal` package. prost writes the
/// cross-package paths of that package as `super::super::etcdserverpb::...`,
/// so it has to sit two levels below this module; it is re-exported as
/// [`internal`].
mod mnemo {
    /// mnemo's on-disk Raft entry payload (`mnemo.internal`).
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod internal {
        include!(concat!(env!("OUT_DIR"), "/mnemo.internal.rs"));
    }
}

pub use self::mnemo::internal;
