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

/// Largest peer message sent or accepted. An append carries at most
/// [`PEER_APPEND_ENTRIES_MAX`] entries of at most [`GRPC_RECV_BYTES_MAX`] each.
pub const PEER_MESSAGE_BYTES_MAX: usize = 160 * 1024 * 1024;

/// Most log entries in one append sent to a follower: bounds a peer message while still
/// batching a busy leader's writes.
pub const PEER_APPEND_ENTRIES_MAX: u64 = 64;

/// How long a member waits for a TCP connection to a peer.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// First pause before retrying an unreachable peer; doubled on each failure.
pub const PEER_BACKOFF_INITIAL: Duration = Duration::from_millis(50);

/// Longest pause between retries of an unreachable peer, so a restarted member is found
/// again within about a second.
pub const PEER_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Bytes of snapshot data in one streamed chunk.
pub const PEER_SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// How long sending one snapshot chunk may take before the transfer is abandoned (and
/// retried from the start).
pub const PEER_SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the leader waits for a follower to install a fully received snapshot (copying a
/// large checkpoint and rebuilding the key index can take a while).
pub const PEER_SNAPSHOT_INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Shortest pause between two log lines about refused peer traffic from the same source.
pub const PEER_REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Fraction of the leader's log, in percent, a learner must have to be promoted (etcd: 90).
pub const LEARNER_PROMOTE_PROGRESS_PERCENT: u64 = 90;

/// Most learners in a cluster (etcd 3.4/3.5: 1).
pub const LEARNERS_MAX: usize = 1;

/// How long MoveLeader waits for the target to take over.
pub const MOVE_LEADER_TIMEOUT: Duration = Duration::from_secs(7);

const _: () = assert!(
    PEER_MESSAGE_BYTES_MAX >= PEER_APPEND_ENTRIES_MAX as usize * (GRPC_RECV_BYTES_MAX + 1024)
);
const _: () = assert!(PEER_SNAPSHOT_CHUNK_BYTES < PEER_MESSAGE_BYTES_MAX);

/// How long a member joining a running cluster waits for one of the members named in
/// `--initial-cluster` to tell it the cluster's id and members.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between two attempts of a started member to publish its name and client URLs.
pub const PUBLISH_RETRY_INTERVAL: Duration = Duration::from_millis(500);
