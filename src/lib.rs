//! mnemo: a Raft-replicated MVCC key-value store that speaks etcd's v3 API.
//!
//! Run it as a server (`mnemo` with etcd's flags), or embed a member in your process:
//!
//! ```no_run
//! use mnemo::client::KvClient;
//! use mnemo::embed::{Config, Node};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let node = Node::start(Config { data_dir: "example.mnemo".into(), ..Config::default() }).await?;
//! let client = node.client();
//! client.set("greeting", "hello").await?;
//! assert_eq!(client.get("greeting").await?.unwrap().value, "hello");
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Layout, lowest layer first (see ARCHITECTURE.md):
//! `types`, `limits`, `tls` (certificate files, handshakes) → `storage` (RocksDB backend,
//! MVCC) → `snapshot` (the snapshot file) → `raft` (consensus, WAL) → `lease` (the lease table
//! and the leader's timers), `alarm` (the raised alarms), `auth` (users, roles, permissions,
//! tokens) → `apply` (the only post-commit mutation) → `watch` (events to watchers) →
//! `server` (request lifecycle, gRPC, HTTP) → `client` → `embed` (composition); `apiserver`
//! (the Kubernetes-style API server) sits on `client` alone, and `scheduler` on the API
//! server's REST API alone.

// The KV entry points nest several async layers (gRPC handler, lock recipes, the slow-request
// timer, proposal, Raft forwarding); computing their futures' layouts needs more than the
// default query depth.
#![recursion_limit = "256"]

pub mod alarm;
pub mod apiserver;
pub mod apply;
pub mod auth;
#[cfg(feature = "bug-injection")]
pub mod bugs;
pub mod client;
pub mod convert;
pub mod embed;
pub mod lease;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod pb;
pub mod raft;
pub mod scheduler;
pub mod server;
pub mod snapshot;
pub mod storage;
pub mod tls;
pub mod types;
pub mod watch;
