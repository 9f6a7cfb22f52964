//! Every hard limit and default of the crate, with the etcd value it matches and why.
//!
//! Names put the unit last. Relationships between limits are checked at compile time.
//! This module must not depend on any other module of the crate.

use std::time::Duration;

/// Largest encoded request accepted, checked on the Raft entry (etcd `--max-request-bytes`).
pub const REQUEST_BYTES_MAX: usize = 1_572_864;

/// Extra room gRPC gets above the request limit for framing (etcd adds 512 KiB).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Largest gRPC message the server decodes.
pub const GRPC_RECV_BYTES_MAX: usize = REQUEST_BYTES_MAX + GRPC_OVERHEAD_BYTES;

/// Most operations in one list of a transaction (etcd `--max-txn-ops`).
pub const TXN_OPS_MAX: usize = 128;

/// Default backend quota (etcd `--quota-backend-bytes`): 2 GiB.
pub const QUOTA_BACKEND_BYTES_DEFAULT: u64 = 2 * 1024 * 1024 * 1024;

/// Raft entries applied between snapshots by default (etcd 3.6 `--snapshot-count`).
pub const SNAPSHOT_COUNT_DEFAULT: u64 = 10_000;

/// Log entries kept behind a snapshot so a slightly lagging follower needs no snapshot.
pub const SNAPSHOT_CATCHUP_ENTRIES: u64 = 5_000;

/// Default heartbeat interval (etcd `--heartbeat-interval`).
pub const HEARTBEAT_INTERVAL_DEFAULT: Duration = Duration::from_millis(100);

/// Default election timeout (etcd `--election-timeout`).
pub const ELECTION_TIMEOUT_DEFAULT: Duration = Duration::from_millis(1000);

/// How long a proposal may wait for its apply result before the client gets
/// `etcdserver: request timed out` (etcd: 5 s plus twice the election timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// Size a WAL segment grows to before the log rolls over to a new one.
pub const WAL_SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Largest single WAL record; a bigger length prefix is treated as corruption.
pub const WAL_RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Most queued jobs (each an append of one or more entries) one group commit takes before it
/// fsyncs.
pub const WAL_GROUP_COMMIT_JOBS_MAX: usize = 4096;

/// Bound of the queue of appends waiting for the WAL writer; senders wait when it is full.
pub const WAL_QUEUE_DEPTH: usize = 1024;

/// Raft entries applied per state-machine write batch at most.
pub const APPLY_BATCH_ENTRIES_MAX: usize = 1024;

/// Version of the etcd API mnemo reports in `Status.version` and `/version`: at least 3.5.13
/// so Kubernetes enables its newer watch features.
pub const ETCD_COMPAT_VERSION: &str = "3.6.0";

/// Cluster version reported by `/version`.
pub const ETCD_CLUSTER_VERSION: &str = "3.6.0";

const _: () = assert!(GRPC_RECV_BYTES_MAX > REQUEST_BYTES_MAX);
const _: () = assert!(WAL_RECORD_BYTES_MAX >= GRPC_RECV_BYTES_MAX);
const _: () = assert!(WAL_SEGMENT_BYTES_MAX as usize >= WAL_RECORD_BYTES_MAX);
const _: () = assert!(SNAPSHOT_CATCHUP_ENTRIES <= SNAPSHOT_COUNT_DEFAULT);

/// Longest election timeout accepted (etcd refuses above 50 s).
pub const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(50_000);

/// Election timeouts a starting member waits for a leader before serving anyway (a lone
/// member elects itself within one).
pub const LEADER_WAIT_ELECTION_TIMEOUTS: u32 = 3;

/// How long shutdown waits for a client listener to finish its in-flight requests.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

const _: () =
    assert!(ELECTION_TIMEOUT_DEFAULT.as_millis() >= 5 * HEARTBEAT_INTERVAL_DEFAULT.as_millis());

/// Largest HTTP/2 frame payload the client port accepts and produces (HTTP/2's default, which
/// the server does not raise).
pub const H2_FRAME_BYTES_MAX: usize = 16 * 1024;

/// HPACK header table size of the client port: HTTP/2's default, which the server keeps.
pub const H2_HEADER_TABLE_BYTES: usize = 4096;

/// Largest header block a client may send on the client port.
pub const H2_HEADER_BLOCK_BYTES_MAX: usize = 1024 * 1024;

const _: () = assert!(H2_HEADER_BLOCK_BYTES_MAX >= H2_FRAME_BYTES_MAX);
