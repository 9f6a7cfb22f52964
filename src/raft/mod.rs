//! Consensus: the openraft adapter. Orders proposals, persists them in our write-ahead log,
//! hands committed entries to the state machine host, and takes snapshots.
//!
//! Entries are opaque bytes here: this module never decodes a payload and must not import
//! `apply`, `storage::mvcc` or `server`. The layer above plugs in through
//! [`StateMachineHost`]. openraft's types stay inside this module; callers see
//! [`RaftNode`], [`LogPos`], [`RaftStatus`] and [`RaftError`] only, so an openraft upgrade
//! touches this directory and nothing else.
//!
//! ```text
//! propose(bytes) --> openraft core --> LogStore::append --> wal writer (group fsync)
//!                         |                                        |
//!                         |<------------- durable -----------------+
//!                         v
//!             StateMachine::apply --> StateMachineHost::apply (one atomic batch)
//!                         |
//!                         +--> response bytes back to the proposer
//! ```

mod log_store;
mod network;
mod state_machine;
pub mod wal;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError as EngineError};
use openraft::{Config as EngineConfig, ReadPolicy, SnapshotPolicy};

use self::log_store::LogStore;
use self::network::PeerNetworkFactory;
use self::state_machine::StateMachine;
pub use self::wal::LogPos;
use crate::limits::{REQUEST_TIMEOUT, SNAPSHOT_CATCHUP_ENTRIES, WAL_SEGMENT_BYTES_MAX};

/// An opaque proposal: the bytes the apply layer encoded.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Payload(pub Bytes);

impl std::fmt::Display for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "payload({} bytes)", self.0.len())
    }
}

/// The apply result of one proposal: opaque bytes the apply layer encoded.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Response(pub Bytes);

/// What the cluster knows about a member, carried in the replicated membership.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberNode {
    /// Human-readable member name (`--name`).
    pub name: String,
    /// URLs peers reach this member on.
    pub peer_urls: Vec<String>,
    /// URLs clients reach this member on.
    pub client_urls: Vec<String>,
}

impl std::fmt::Display for MemberNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_urls.join(","))
    }
}

openraft::declare_raft_types!(
    /// openraft's type configuration for mnemo.
    pub TypeConfig:
        D = Payload,
        R = Response,
        NodeId = u64,
        Node = MemberNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

type Engine = openraft::Raft<TypeConfig, StateMachine>;
type EngineLogId = openraft::type_config::alias::LogIdOf<TypeConfig>;

fn to_pos(log_id: &EngineLogId) -> LogPos {
    LogPos {
        index: log_id.index,
        term: log_id.leader_id.term,
    }
}

fn to_log_id(position: LogPos) -> EngineLogId {
    openraft::LogId {
        leader_id: openraft::type_config::alias::CommittedLeaderIdOf::<TypeConfig>::new(
            position.term,
        ),
        index: position.index,
    }
}

/// What a committed entry carries, as the host sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommittedData {
    /// A leader's no-op entry.
    Blank,
    /// A proposal.
    Normal(Bytes),
    /// A membership change; the bytes are opaque and must be handed back by
    /// [`StateMachineHost::applied_state`].
    Membership(Bytes),
}

/// One committed entry handed to the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedEntry {
    /// Where the entry sits in the log.
    pub position: LogPos,
    /// What it carries.
    pub data: CommittedData,
}

/// What the state machine has applied, as stored by the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// Last applied entry, `None` before anything was applied.
    pub applied: Option<LogPos>,
    /// The last membership blob applied (see [`CommittedData::Membership`]).
    pub membership: Option<Bytes>,
}

/// The state machine, as the layer above implements it. Calls may block (they do disk I/O);
/// the adapter runs them on blocking threads.
pub trait StateMachineHost: Send + Sync + 'static {
    /// The last applied position and membership, read from durable state.
    ///
    /// # Errors
    /// Backend failures.
    fn applied_state(&self) -> io::Result<AppliedState>;

    /// Applies `entries` (consecutive, committed) in one atomic write that also records the
    /// last entry's position and, if one is in the batch, the last membership. Returns one
    /// response per [`CommittedData::Normal`] entry, in order.
    ///
    /// # Errors
    /// Backend failures; they stop the member.
    fn apply(&self, entries: &[CommittedEntry]) -> io::Result<Vec<Bytes>>;

    /// Writes a consistent copy of the state into the new directory `target`, returning the
    /// applied state the copy holds.
    ///
    /// # Errors
    /// Backend failures.
    fn checkpoint(&self, target: &Path) -> io::Result<AppliedState>;

    /// Replaces the whole state with the copy in `source` (made by [`Self::checkpoint`] on
    /// some member).
    ///
    /// # Errors
    /// Backend failures, or a copy that cannot be installed.
    fn install(&self, source: &Path) -> io::Result<()>;
}

/// How to run the consensus of one member.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    /// This member's id.
    pub member_id: u64,
    /// Directory of the write-ahead log and vote.
    pub wal_dir: PathBuf,
    /// Directory snapshots are kept in.
    pub snap_dir: PathBuf,
    /// Leader heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Election timeout (the lower bound; the upper bound is twice it).
    pub election_timeout: Duration,
    /// Applied entries between two snapshots.
    pub snapshot_count: u64,
    /// Members of a new cluster; ignored when the log already exists.
    pub initial_members: BTreeMap<u64, MemberNode>,
}

/// Consensus failures as the server reports them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaftError {
    /// No leader is known right now.
    #[error("no leader")]
    NoLeader,
    /// The proposal's entry was dropped because leadership moved; it may or may not commit.
    #[error("leader changed")]
    LeaderChanged,
    /// Another member leads; the request must go there.
    #[error("not leader; leader is {leader:?}")]
    NotLeader {
        /// The leader, if known.
        leader: Option<u64>,
    },
    /// The request did not complete in time.
    #[error("request timed out")]
    Timeout,
    /// The member is shutting down or stopped after a fatal error.
    #[error("raft stopped: {0}")]
    Stopped(String),
    /// The storage or configuration could not be opened.
    #[error("raft storage error: {0}")]
    Storage(String),
}

/// A snapshot of the consensus state, for Status and headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftStatus {
    /// This member.
    pub member_id: u64,
    /// The leader, if known.
    pub leader: Option<u64>,
    /// Current term.
    pub term: u64,
    /// Index of the last entry known committed.
    pub commit_index: u64,
    /// Index of the last applied entry.
    pub applied_index: u64,
    /// Index of the last entry in the log.
    pub last_log_index: u64,
}

/// A running Raft member.
pub struct RaftNode {
    engine: Engine,
    member_id: u64,
}

impl RaftNode {
    /// Opens the log and state, starts consensus, and bootstraps a new cluster from
    /// `config.initial_members` if this member has no log yet.
    ///
    /// # Errors
    /// [`RaftError::Storage`] when the log cannot be opened (for example it is corrupt).
    pub async fn start(
        config: RaftConfig,
        host: Arc<dyn StateMachineHost>,
    ) -> Result<RaftNode, RaftError> {
        let (log_store, fresh) = LogStore::open(&config.wal_dir, WAL_SEGMENT_BYTES_MAX)
            .map_err(|err| RaftError::Storage(err.to_string()))?;
        let state_machine = StateMachine::new(host, config.snap_dir.clone())
            .map_err(|err| RaftError::Storage(err.to_string()))?;
        let engine_config = engine_config(&config)?;
        let engine = Engine::new(
            config.member_id,
            Arc::new(engine_config),
            PeerNetworkFactory,
            log_store,
            state_machine,
        )
        .await
        .map_err(|err| RaftError::Stopped(err.to_string()))?;
        if fresh {
            match engine.initialize(config.initial_members.clone()).await {
                Ok(()) => {}
                Err(EngineError::APIError(err)) => {
                    tracing::info!(%err, "cluster already initialized");
                }
                Err(err) => return Err(RaftError::Stopped(err.to_string())),
            }
        }
        Ok(RaftNode {
            engine,
            member_id: config.member_id,
        })
    }

    /// Proposes `payload` and waits until it is committed and applied, returning the apply
    /// result.
    ///
    /// # Errors
    /// [`RaftError::NotLeader`] (this member cannot order it), [`RaftError::LeaderChanged`]
    /// (outcome unknown), [`RaftError::Timeout`], [`RaftError::Stopped`].
    pub async fn propose(&self, payload: Bytes) -> Result<Bytes, RaftError> {
        let write = self.engine.client_write(Payload(payload));
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, write)
            .await
            .map_err(|_| RaftError::Timeout)?;
        match outcome {
            Ok(response) => Ok(response.data.0),
            Err(EngineError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(RaftError::NotLeader {
                    leader: forward.leader_id,
                })
            }
            Err(EngineError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                Err(RaftError::LeaderChanged)
            }
            Err(EngineError::APIError(other)) => Err(RaftError::Stopped(other.to_string())),
            Err(EngineError::Fatal(fatal)) => Err(RaftError::Stopped(fatal.to_string())),
        }
    }

    /// Waits until this member has applied everything committed before the call, after
    /// confirming with a quorum that it still leads (ReadIndex). Reads that follow see every
    /// write acknowledged before the call.
    ///
    /// # Errors
    /// [`RaftError::NotLeader`], [`RaftError::NoLeader`], [`RaftError::Timeout`],
    /// [`RaftError::Stopped`].
    pub async fn read_barrier(&self) -> Result<(), RaftError> {
        let barrier = self.engine.ensure_linearizable(ReadPolicy::ReadIndex);
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, barrier)
            .await
            .map_err(|_| RaftError::Timeout)?;
        match outcome {
            Ok(_) => Ok(()),
            Err(EngineError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
                match forward.leader_id {
                    Some(leader) => Err(RaftError::NotLeader {
                        leader: Some(leader),
                    }),
                    None => Err(RaftError::NoLeader),
                }
            }
            Err(EngineError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {
                Err(RaftError::NoLeader)
            }
            Err(EngineError::Fatal(fatal)) => Err(RaftError::Stopped(fatal.to_string())),
        }
    }

    /// Waits until some member leads, up to `timeout`.
    ///
    /// # Errors
    /// [`RaftError::Timeout`] when no leader appeared in time.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, RaftError> {
        let mut metrics = self.engine.metrics();
        let wait = async {
            loop {
                if let Some(leader) = metrics.borrow_watched().current_leader {
                    return Ok(leader);
                }
                if metrics.changed().await.is_err() {
                    return Err(RaftError::Stopped("raft metrics closed".into()));
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| RaftError::Timeout)?
    }

    /// The current consensus state.
    pub fn status(&self) -> RaftStatus {
        let metrics = self.engine.metrics();
        let metrics = metrics.borrow_watched();
        RaftStatus {
            member_id: self.member_id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            commit_index: metrics
                .cluster_committed
                .as_ref()
                .or(metrics.local_committed.as_ref())
                .map_or(0, |log_id| log_id.index),
            applied_index: metrics
                .last_applied
                .as_ref()
                .map_or(0, |log_id| log_id.index),
            last_log_index: metrics.last_log_index.unwrap_or(0),
        }
    }

    /// This member's id.
    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    /// The members of the current configuration: (id, node, is learner), by id.
    pub fn members(&self) -> Vec<(u64, MemberNode, bool)> {
        let metrics = self.engine.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| (*id, node.clone(), !voters.contains(id)))
            .collect()
    }

    /// Waits until a snapshot covers at least `index` and the log before it has been purged,
    /// returning (snapshot index, purged index); for tests and tools.
    ///
    /// # Errors
    /// [`RaftError::Timeout`] when that does not happen within `timeout`.
    pub async fn wait_for_log_compaction(
        &self,
        index: u64,
        timeout: Duration,
    ) -> Result<(u64, u64), RaftError> {
        let mut metrics = self.engine.metrics();
        let wait = async {
            loop {
                {
                    let current = metrics.borrow_watched();
                    let snapshot = current.snapshot.as_ref().map_or(0, |log_id| log_id.index);
                    let purged = current.purged.as_ref().map_or(0, |log_id| log_id.index);
                    if snapshot >= index && purged > 0 {
                        return Ok((snapshot, purged));
                    }
                }
                if metrics.changed().await.is_err() {
                    return Err(RaftError::Stopped("raft metrics closed".into()));
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| RaftError::Timeout)?
    }

    /// Stops consensus; the log is flushed by the time this returns.
    pub async fn shutdown(&self) {
        if let Err(err) = self.engine.shutdown().await {
            tracing::warn!(%err, "raft shutdown did not finish cleanly");
        }
    }
}

fn engine_config(config: &RaftConfig) -> Result<EngineConfig, RaftError> {
    let heartbeat_ms = u64::try_from(config.heartbeat_interval.as_millis()).unwrap_or(u64::MAX);
    let election_ms = u64::try_from(config.election_timeout.as_millis()).unwrap_or(u64::MAX);
    let engine_config = EngineConfig {
        cluster_name: "mnemo".into(),
        heartbeat_interval: heartbeat_ms,
        election_timeout_min: election_ms,
        election_timeout_max: election_ms.saturating_mul(2),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count),
        max_in_snapshot_log_to_keep: SNAPSHOT_CATCHUP_ENTRIES.min(config.snapshot_count),
        enable_pre_vote: Some(true),
        ..EngineConfig::default()
    };
    engine_config
        .validate()
        .map_err(|err| RaftError::Storage(format!("invalid raft timing: {err}")))
}
