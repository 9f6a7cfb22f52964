//! Generated etcd protobuf and gRPC client code, and nothing else.
//!
//! Produced by `build.rs` from the repository's `proto/etcd` files. Only [`crate::client`],
//! [`crate::cluster`] (leader discovery) and the workloads' own request code may use these types; everything else speaks the models'
//! vocabularies. The modules stay siblings because generated code refers across packages with
//! relative paths such as `super::mvccpb::KeyValue`.

/// etcd `mvccpb`: `KeyValue` and `Event`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

/// etcd `authpb`, needed by `etcdserverpb`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}

/// etcd `etcdserverpb`: the KV, Lease and Maintenance clients the harness uses.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

/// etcd `v3lockpb`: the Lock service's client (the `lease` workload's locks).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v3lockpb {
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.rs"));
}
