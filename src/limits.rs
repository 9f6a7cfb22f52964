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

/// The quota of a member whose quota is off (etcd: a negative `--quota-backend-bytes`); no
/// backend reaches it.
pub const QUOTA_BACKEND_BYTES_DISABLED: u64 = u64::MAX;

/// Largest backend quota etcd suggests: 8 GiB. A larger `--quota-backend-bytes` is kept, as
/// etcd keeps it, but a warning is logged at start.
pub const QUOTA_BACKEND_BYTES_SUGGESTED_MAX: u64 = 8 * 1024 * 1024 * 1024;

/// What the quota charges for storing one key's bookkeeping, on top of the put request's
/// encoded size (etcd's estimate for a key's metadata).
pub const QUOTA_KV_OVERHEAD_BYTES: u64 = 256;

/// What the quota charges for a lease grant (etcd's estimate for storing a lease).
pub const QUOTA_LEASE_OVERHEAD_BYTES: u64 = 64;

const _: () = assert!(QUOTA_BACKEND_BYTES_DEFAULT <= QUOTA_BACKEND_BYTES_SUGGESTED_MAX);

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

/// A KV request slower than this is logged as slow (etcd's default for
/// `--experimental-warning-apply-duration`, 100 ms: far above a healthy disk's commit time).
pub const WARNING_APPLY_DURATION_DEFAULT: Duration = Duration::from_millis(100);

/// Size a WAL segment grows to before the log rolls over to a new one.
pub const WAL_SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Largest single WAL record; a bigger length prefix is treated as corruption.
pub const WAL_RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// How old a reading of the backend's size the quota check may use. Writes landing within
/// one interval can take the backend that much past the quota before the alarm, as writes
/// already proposed can in etcd.
pub const BACKEND_SIZE_REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// How long a "RocksDB would not hold writes back" reading stays good for apply's quick path.
/// Reading it takes RocksDB's DB mutex once per property and column family, about 2% of a
/// follower's CPU when read for every applied batch. A memtable takes far longer than this to
/// fill, and the reading could go stale between check and write anyway, so a stale "no" costs
/// at worst one batch whose write waits on an async worker.
pub const BACKEND_STALL_RECHECK_INTERVAL: Duration = Duration::from_millis(2);

/// Bytes of WAL records buffered before they are written to the segment file; a group commit
/// normally writes its whole batch at once, well under this.
pub const WAL_WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Most queued jobs (each an append of one or more entries) one group commit takes before it
/// fsyncs.
pub const WAL_GROUP_COMMIT_JOBS_MAX: usize = 4096;

/// Bound of the queue of appends waiting for the WAL writer; senders wait when it is full.
pub const WAL_QUEUE_DEPTH: usize = 1024;

/// Raft entries applied per state-machine write batch at most.
pub const APPLY_BATCH_ENTRIES_MAX: usize = 1024;

/// Raft entries a batch may hold and still be applied on the async worker that received it
/// (when each touches single keys only); larger batches go to a blocking thread.
pub const APPLY_QUICK_ENTRIES_MAX: usize = 64;
const _: () = assert!(APPLY_QUICK_ENTRIES_MAX <= APPLY_BATCH_ENTRIES_MAX);

/// Payload bytes a batch may hold and still be applied on the async worker (see
/// [`APPLY_QUICK_ENTRIES_MAX`]).
pub const APPLY_QUICK_BYTES_MAX: usize = 64 * 1024;

/// Single-key operations (puts, deletes, reads and compares, counted through nested
/// transactions, and the keys a lease revoke deletes) a batch may hold and still be applied on the async worker. Each costs a
/// memtable insert and a point read of the key's previous row, mostly from the block cache:
/// a few hundred microseconds for the whole batch at most.
pub const APPLY_QUICK_OPS_MAX: usize = 256;

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

/// Least time a leader waits for a follower's answer to the oldest unanswered append of a
/// pipelined replication stream before it drops the stream and starts another. openraft's
/// per-request budget (one heartbeat interval) is meant for one request at a time; a request
/// queued behind others in a follower's pipeline may fairly take a few fsyncs longer.
pub const PEER_STREAM_REPLY_TIMEOUT_MIN: Duration = Duration::from_secs(1);

/// Forwarded requests (or their answers) queued for one forwarding stream before senders
/// wait, and requests of one stream the receiver runs at once: bounds a stream's memory and
/// work when one side is slower than the other.
pub const PEER_FORWARD_QUEUE: usize = 1024;

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

/// Responses batches a watch stream buffers for its client (etcd: 128 responses per stream).
/// A watcher whose events find the buffer full is set aside and caught up from history, so
/// apply never waits for a client.
pub const WATCH_STREAM_BUFFER_BATCHES: usize = 128;

/// Bytes of event data (keys and values, `prev_kv` included) a watch stream buffers at most
/// beyond one batch. etcd bounds only the response count; a byte bound keeps a stream that
/// stops reading from holding a large share of memory when values are big.
pub const WATCH_STREAM_BUFFER_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Watchers one stream may hold. etcd has no bound; past this a create is refused the way
/// etcd refuses a bad create (`created` and `canceled`, watch id -1, a reason).
pub const WATCH_STREAM_WATCHERS_MAX: usize = 100_000;

/// Watch streams one member serves at once. etcd has no bound; past this a new stream is
/// refused with ResourceExhausted.
pub const WATCH_STREAMS_MAX: usize = 65_536;

/// How often watchers that are behind are caught up from history when nothing wakes the
/// catch-up earlier (etcd's sync loop runs every 100 ms).
pub const WATCH_SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Revisions read from history in one catch-up round, bounding the time the state lock is
/// shared with the reader and the size of one catch-up response.
pub const WATCH_SYNC_REVISIONS_MAX: usize = 256;

/// Watchers served by one catch-up round (etcd: 512 per sync).
pub const WATCH_SYNC_WATCHERS_MAX: usize = 512;

/// Default interval of progress notifications to watchers that asked for them (etcd
/// `--experimental-watch-progress-notify-interval`, 10 minutes).
pub const WATCH_PROGRESS_NOTIFY_INTERVAL_DEFAULT: Duration = Duration::from_secs(600);

/// Shortest progress notification interval accepted (etcd refuses below 100 ms).
pub const WATCH_PROGRESS_NOTIFY_INTERVAL_MIN: Duration = Duration::from_millis(100);

/// How often a watch stream opened with `hasleader` checks that a leader is still known.
pub const WATCH_LEADER_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A watch response at least this large, holding more than one event, is split into
/// fragments when the watcher asked for it (etcd: max-request-bytes + 512 KiB).
pub const WATCH_FRAGMENT_BYTES: usize = GRPC_RECV_BYTES_MAX;

/// Encoded responses queued between a watch stream's converter and the HTTP/2 connection.
pub const WATCH_SEND_QUEUE: usize = 16;

const _: () = assert!(
    WATCH_PROGRESS_NOTIFY_INTERVAL_DEFAULT.as_millis()
        >= WATCH_PROGRESS_NOTIFY_INTERVAL_MIN.as_millis()
);
const _: () = assert!(WATCH_STREAM_BUFFER_BYTES_MAX >= WATCH_FRAGMENT_BYTES);

/// Updates the gRPC client's watch queues for its consumer before it stops reading from the
/// member (the member then sets the watcher aside).
pub const CLIENT_WATCH_QUEUE: usize = 64;

/// First pause before the gRPC client re-creates a broken watch; doubled on each failure.
pub const CLIENT_WATCH_BACKOFF_INITIAL: Duration = Duration::from_millis(50);

/// Longest pause between attempts to re-create a broken watch.
pub const CLIENT_WATCH_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Deadline of one unary call of the gRPC client (range, put, txn, lease calls, and the wait
/// for a watch to be accepted; never a watch's stream), retries to other endpoints included.
/// Longer than the member's own [`REQUEST_TIMEOUT`] (an election plus a slow apply), so a live
/// member's `etcdserver: request timed out` arrives first and says more; far under
/// kube-apiserver's 60 s request timeout, so a stuck or cut-off member costs a request 10 s,
/// not the whole budget of the caller (clientv3 leaves it to the caller's context, etcdctl's
/// `--command-timeout` is 5 s).
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const _: () = assert!(CLIENT_REQUEST_TIMEOUT.as_millis() > REQUEST_TIMEOUT.as_millis());

/// How long the gRPC client waits for a TCP (and TLS) connection to one endpoint; a member
/// slower than this counts as down (etcdctl's `--dial-timeout` default).
pub const CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Interval of HTTP/2 pings on a gRPC client connection with open streams, so a watch on a
/// member that froze or was cut off breaks and resumes elsewhere. Not under etcd's
/// `--grpc-keepalive-min-time` (5 s), or etcd closes the connection for pinging too often.
pub const CLIENT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const _: () = assert!(CLIENT_KEEPALIVE_INTERVAL.as_secs() >= 5);

/// How long a ping may go unanswered before the connection counts as dead (kube-apiserver's
/// etcd client uses 10 s).
pub const CLIENT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts of one unary call across endpoints when a member cannot be reached (refused
/// connection: the request was never sent, so even a write is safe to resend). tonic's
/// balancer picks endpoints at random and offers a down one as often as a live one, so with
/// one of three down, 16 attempts all miss a live member once in 40 million calls.
pub const CLIENT_CALL_ATTEMPTS_MAX: u32 = 16;

/// First pause before a unary call is resent to another endpoint; doubled per attempt up to
/// [`CLIENT_CALL_BACKOFF_MAX`], so that every endpoint down does not spin.
pub const CLIENT_CALL_BACKOFF_INITIAL: Duration = Duration::from_millis(5);

/// Longest pause between two attempts of one unary call.
pub const CLIENT_CALL_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Largest lease TTL granted, in seconds (etcd: 9,000,000,000).
pub const LEASE_TTL_MAX: i64 = 9_000_000_000;

/// How often the leader looks for expired leases and renewed ones to checkpoint (etcd checks
/// expiry every 500 ms).
pub const LEASE_TICK: Duration = Duration::from_millis(500);

/// Revokes the leader proposes per tick at most: 500 per 500 ms tick is etcd's 1,000 per
/// second.
pub const LEASE_REVOKES_PER_TICK: usize = 500;

/// How long the leader waits for a proposed revoke to apply before proposing it again.
pub const LEASE_REVOKE_RETRY: Duration = Duration::from_secs(3);

/// How often a long lease's remaining TTL is checkpointed when lease checkpointing is on
/// (etcd's interval).
pub const LEASE_CHECKPOINT_INTERVAL_DEFAULT: Duration = Duration::from_secs(5 * 60);

/// The shortest checkpoint interval accepted: each round is one Raft entry per batch.
pub const LEASE_CHECKPOINT_INTERVAL_MIN: Duration = Duration::from_secs(1);

/// Leases checkpointed by one Raft entry at most (etcd's batch limit), so one entry stays
/// small however many leases are due.
pub const LEASE_CHECKPOINTS_PER_PROPOSAL: usize = 1000;
/// How long a keepalive of an expired lease waits for the lease's revoke to be applied before
/// answering that it is gone (TTL 0); past it the keepalive fails as unavailable. etcd-compat:
/// a client told its lease is gone must never see the lease's keys again.
pub const LEASE_EXPIRED_REVOKE_WAIT: Duration = Duration::from_secs(3);
/// Pause between two looks at whether an expired lease's revoke has been applied.
pub const LEASE_EXPIRED_POLL: Duration = Duration::from_millis(50);

/// Keepalive answers queued for one stream's client before the member stops reading its
/// requests.
pub const LEASE_KEEPALIVE_QUEUE: usize = 16;

/// The most JSON the gateway (`/v3/*`) buffers for one request message: one at the gRPC
/// receive limit grows by a third when its bytes are base64-encoded, plus names and quoting.
pub const GATEWAY_JSON_REQUEST_BYTES_MAX: usize = 2 * GRPC_RECV_BYTES_MAX;

const _: () = assert!(GATEWAY_JSON_REQUEST_BYTES_MAX >= GRPC_RECV_BYTES_MAX / 3 * 4);

/// Pause before a client retries a lease renewal that failed (no leader, broken connection).
pub const CLIENT_KEEPALIVE_RETRY: Duration = Duration::from_millis(500);

/// Pause before a keepalive is tried again while leadership moves.
pub const LEASE_RENEW_RETRY: Duration = Duration::from_millis(100);

/// Bytes of snapshot data in one Maintenance.Snapshot message (etcd 3.4 sends 32 KiB chunks).
pub const CLIENT_SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;

/// Chunks of a Maintenance.Snapshot stream produced ahead of the client. When the buffer is
/// full the producer (a blocking thread reading a RocksDB snapshot) waits; apply never does.
pub const CLIENT_SNAPSHOT_BUFFER_CHUNKS: usize = 4;

/// How long a Maintenance.Snapshot producer waits for a client that takes no chunk before
/// it gives up, so a client that stalls without disconnecting cannot pin a blocking thread
/// and a RocksDB snapshot forever (etcd has no such bound).
pub const CLIENT_SNAPSHOT_STALL_MAX: Duration = Duration::from_secs(60);

const _: () = assert!(CLIENT_SNAPSHOT_CHUNK_BYTES.is_multiple_of(512));
/// How long a TLS client or peer may take to complete its handshake before the connection is
/// dropped; a connection that never finishes would otherwise hold a handshake slot forever.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes in progress at once on one listener; further connections wait in the
/// kernel's accept queue until one finishes or times out.
pub const TLS_HANDSHAKES_PENDING_MAX: usize = 256;

/// Connections that finished their TLS handshake and wait for the server to take them; a full
/// queue makes handshake tasks wait (their slot stays taken).
pub const TLS_ACCEPTED_QUEUE: usize = 64;

/// bcrypt cost of stored password hashes (etcd's `--bcrypt-cost` default). One hash or one
/// check at cost 10 runs 2^10 key-schedule rounds: measured at 234 ms (hash) and 255 ms
/// (check) of one core in this project's unoptimised dev build on a 2-core machine, tens of
/// milliseconds optimised. That is what makes a stolen hash slow to guess, and why hashing
/// never runs in apply.
pub const AUTH_BCRYPT_COST: u32 = 10;

/// How long a simple token stays valid without being used (etcd's `--auth-token-ttl`
/// default, 300 s); every use extends it by as much again.
pub const AUTH_TOKEN_TTL_DEFAULT: Duration = Duration::from_secs(300);

/// How long a JWT auth token is valid when `--auth-token jwt,...` names no `ttl` (etcd's
/// default, 5 minutes). Unlike a simple token, use does not extend it.
pub const AUTH_JWT_TTL_DEFAULT: Duration = Duration::from_secs(300);

/// Simple tokens one member keeps at most. Past it, expired tokens are dropped first; if all
/// are live, Authenticate is refused as too many requests until some expire.
pub const AUTH_TOKENS_MAX: usize = 100_000;

/// Authenticate attempts one user may make at once before being slowed down. Each attempt
/// costs one bcrypt check (see [`AUTH_BCRYPT_COST`]); etcd has no such limit.
pub const AUTHENTICATE_BURST_PER_USER: u32 = 5;

/// After the burst, one more Authenticate attempt per user is allowed every this long:
/// 5 per second, so guessing one user's password gets an attacker at most 432,000 tries a
/// day. Five checks a second are a quarter to a whole core (see [`AUTH_BCRYPT_COST`]); the
/// total across users is capped by [`AUTHENTICATE_CONCURRENT_MAX`].
pub const AUTHENTICATE_REFILL_PER_USER: Duration = Duration::from_millis(200);

/// bcrypt checks (Authenticate) running at once on one member, whatever the user; more wait
/// their turn, so password checks never take more than this many cores.
pub const AUTHENTICATE_CONCURRENT_MAX: usize = 2;
