//! The errors a client can see, each with etcd's exact message.
//!
//! The `Display` text of every variant is wire contract: clientv3 maps errors back to typed
//! errors by this string. `server::grpc::status` gives each variant its gRPC code in one
//! exhaustive match. This module must not know about gRPC.

/// A request failure as reported to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request with an empty key.
    #[error("etcdserver: key is not provided")]
    KeyNotProvided,
    /// `ignore_value`/`ignore_lease` on a missing key, or an empty transaction operation.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` together with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A transaction list longer than the limit.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// Two writes of one key in a transaction.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A range with a sort order or target etcd does not know (etcd 3.6 and later).
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// A request whose encoded entry exceeds the request size limit.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// A read or compaction at a compacted revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A read or compaction at a revision not reached yet.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A put naming a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant naming a lease id that is taken.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant with a TTL above [`crate::limits::LEASE_TTL_MAX`].
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A write that needs space while the backend is over its quota or a NOSPACE alarm is
    /// raised.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A write while a CORRUPT alarm is raised.
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// No leader is known.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// Leadership moved while the request was in flight; its outcome is unknown.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The request did not finish in time.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The member is stopping.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// A membership change named an unknown member.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// A new member's id is taken.
    #[error("etcdserver: member ID already exist")]
    MemberIdExists,
    /// Another member uses one of the peer URLs.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlsExist,
    /// Peer URLs that do not parse as http URLs.
    #[error("etcdserver: given member URLs are invalid")]
    InvalidMemberUrls,
    /// The cluster already has the most learners allowed.
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// Promote named a voter.
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    /// Promote named a learner that is too far behind the leader.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotInSync,
    /// A request only the leader serves (MoveLeader) reached a follower.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// MoveLeader named a member that cannot lead.
    #[error("etcdserver: bad leader transferee")]
    BadTransferee,
    /// A learner received a request only voters serve.
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    /// The consensus layer refused a membership change (e.g. another is in progress).
    #[error("etcdserver: {0}")]
    MembershipRefused(String),
    /// An election call named a leader key that no longer leads (etcd's concurrency
    /// package error, sent as gRPC Unknown).
    #[error("election: not leader")]
    ElectionNotLeader,
    /// An election has no leader.
    #[error("election: no leader")]
    ElectionNoLeader,
    /// Proclaim or Resign without a leader key.
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    /// The member serves as many watch streams as it allows
    /// ([`crate::limits::WATCH_STREAMS_MAX`]; etcd has no such bound).
    #[error("etcdserver: too many watch streams")]
    TooManyWatchStreams,
    /// An auth failure (etcd's auth errors, with their texts).
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// Anything else: a bug or a storage failure. Sent as gRPC Unknown with this text.
    #[error("{0}")]
    Internal(String),
}
