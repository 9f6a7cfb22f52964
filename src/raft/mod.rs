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
mod peer_service;
mod state_machine;
pub mod wal;
mod wire;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError as EngineError};
use openraft::{Config as EngineConfig, ReadPolicy, SnapshotPolicy};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use self::log_store::LogStore;
use self::network::{PeerContext, PeerNetworkFactory};
use self::state_machine::StateMachine;
pub use self::wal::LogPos;
pub use self::wire::MemberChange;
use self::wire::{ForwardRequest, ForwardResponse};
use crate::limits::{
    LEARNER_PROMOTE_PROGRESS_PERCENT, LEARNERS_MAX, MOVE_LEADER_TIMEOUT, PEER_APPEND_ENTRIES_MAX,
    PEER_MESSAGE_BYTES_MAX, PEER_SNAPSHOT_CHUNK_BYTES, PEER_SNAPSHOT_CHUNK_TIMEOUT,
    REQUEST_TIMEOUT, SNAPSHOT_CATCHUP_ENTRIES, WAL_SEGMENT_BYTES_MAX,
};

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
/// the adapter runs them on blocking threads, except [`Self::try_apply_quick`].
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

    /// Applies `entries` exactly as [`Self::apply`] would, but only if that is quick enough
    /// to run on the async worker calling it: a bounded number of point reads and memory
    /// updates and one unsynced write that the storage does not expect to hold back; it may
    /// still wait briefly for readers of the same state. Otherwise it changes nothing and
    /// returns `None`, and the adapter runs [`Self::apply`] on a blocking thread. Handing a
    /// small batch to a blocking thread and back costs two thread switches, more than the work
    /// itself. The default always declines.
    fn try_apply_quick(&self, entries: &[CommittedEntry]) -> Option<io::Result<Vec<Bytes>>> {
        let _ = entries;
        None
    }

    /// Writes a consistent copy of the state into the new directory `target`, returning the
    /// applied state the copy holds.
    ///
    /// # Errors
    /// Backend failures.
    fn checkpoint(&self, target: &Path) -> io::Result<AppliedState>;

    /// Replaces the whole state with the copy in `source` (made by [`Self::checkpoint`] on
    /// some member). The host copies what it needs and leaves `source` as it is: the adapter
    /// keeps it as the current snapshot and may send it on to other members.
    ///
    /// # Errors
    /// Backend failures, or a copy that cannot be installed.
    fn install(&self, source: &Path) -> io::Result<()>;
}

/// How to run the consensus of one member.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    /// The cluster this member belongs to; every peer message carries it.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
    /// Directory of the write-ahead log and vote.
    pub wal_dir: PathBuf,
    /// Directory snapshots are kept in.
    pub snap_dir: PathBuf,
    /// Leader heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Election timeout: followers wait between half of it and all of it without hearing
    /// from a leader before they campaign, and refuse votes for all of it (see
    /// `engine_config`).
    pub election_timeout: Duration,
    /// Applied entries between two snapshots.
    pub snapshot_count: u64,
    /// Members of a new cluster; ignored when the log already exists, and empty for a member
    /// joining an existing cluster (the leader sends it the membership).
    pub initial_members: BTreeMap<u64, MemberNode>,
    /// How `https://` peers are dialed (their certificates verified against
    /// `--peer-trusted-ca-file`, this member's peer certificate presented); `None` when no
    /// CA was given.
    pub peer_tls: Option<crate::tls::ClientTls>,
}

/// Why a membership change was refused; the texts are etcd's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum MembershipError {
    /// No member has that id.
    #[error("member not found")]
    NotFound,
    /// The id is taken.
    #[error("member ID already exist")]
    IdExists,
    /// Another member uses one of the peer URLs.
    #[error("Peer URLs already exists")]
    PeerUrlsExist,
    /// The cluster already has the most learners allowed.
    #[error("too many learner members in cluster")]
    TooManyLearners,
    /// Promote named a voter.
    #[error("can only promote a learner member")]
    NotLearner,
    /// Promote named a learner that is too far behind.
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotInSync,
    /// MoveLeader named a member that cannot lead.
    #[error("bad leader transferee")]
    BadTransferee,
    /// Another membership change is still in progress, or openraft refused the change.
    #[error("membership change refused: {0}")]
    Refused(String),
}

/// Consensus failures as the server reports them.
#[derive(Clone, Debug, thiserror::Error)]
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
    /// A membership change was refused.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    /// A leader-only call failed in the layer above; the text is that layer's.
    #[error("{0}")]
    Call(String),
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

/// One member as the membership lists it: id, what it published, and whether it is a learner.
pub type MemberEntry = (u64, MemberNode, bool);

/// What the client-facing calls and the peer service share: the engine and the transport.
#[derive(Clone)]
pub(crate) struct Core {
    engine: Engine,
    ctx: Arc<PeerContext>,
    /// The layer above's handler of leader-only calls, set once after start.
    calls: Arc<std::sync::OnceLock<Arc<dyn LeaderCalls>>>,
    /// The layer above's handler of questions addressed to this member, set once after start.
    questions: Arc<std::sync::OnceLock<Arc<dyn LeaderCalls>>>,
}

/// Work that only the leader can do and that is not a proposal (lease renewals read the
/// leader's timers). The layer above gives the bytes their meaning; `raft` only carries
/// them to the leader and back.
pub trait LeaderCalls: Send + Sync + 'static {
    /// Runs `request` on this member, which leads; the error text goes back to the caller.
    fn call(
        &self,
        request: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Bytes, String>> + Send + '_>>;
}

/// A leader-only call's answer, or a member's answer to a question.
struct CallResult(Bytes);

impl From<CallResult> for ForwardResponse {
    fn from(result: CallResult) -> ForwardResponse {
        ForwardResponse::Called(result.0)
    }
}

fn write_error(error: EngineError<TypeConfig, ClientWriteError<TypeConfig>>) -> RaftError {
    match error {
        EngineError::APIError(ClientWriteError::ForwardToLeader(forward)) => RaftError::NotLeader {
            leader: forward.leader_id,
        },
        EngineError::APIError(ClientWriteError::LogEntryDiscarded(_)) => RaftError::LeaderChanged,
        EngineError::APIError(ClientWriteError::ChangeMembershipError(err)) => {
            RaftError::Membership(MembershipError::Refused(err.to_string()))
        }
        EngineError::APIError(other) => RaftError::Stopped(other.to_string()),
        EngineError::Fatal(fatal) => RaftError::Stopped(fatal.to_string()),
    }
}

impl Core {
    fn member_id(&self) -> u64 {
        self.ctx.member_id
    }

    fn leader(&self) -> Option<u64> {
        self.engine.metrics().borrow_watched().current_leader
    }

    fn members(&self) -> Vec<MemberEntry> {
        let metrics = self.engine.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| (*id, node.clone(), !voters.contains(id)))
            .collect()
    }

    fn peer_url(&self, member: u64) -> Option<String> {
        let metrics = self.engine.metrics();
        let metrics = metrics.borrow_watched();
        metrics
            .membership_config
            .membership()
            .get_node(&member)
            .and_then(|node| node.peer_urls.first().cloned())
    }

    /// Runs a leader-only call on this member, which must lead.
    async fn call_local(&self, request: Bytes) -> Result<CallResult, RaftError> {
        if self.leader() != Some(self.member_id()) {
            return Err(RaftError::NotLeader {
                leader: self.leader(),
            });
        }
        let Some(handler) = self.calls.get() else {
            return Err(RaftError::Stopped("no handler for leader calls".into()));
        };
        handler
            .call(request)
            .await
            .map(CallResult)
            .map_err(RaftError::Call)
    }

    /// Answers a question addressed to this member, whatever its role.
    async fn answer_local(&self, question: Bytes) -> Result<CallResult, RaftError> {
        let Some(handler) = self.questions.get() else {
            return Err(RaftError::Stopped("no handler for member questions".into()));
        };
        handler
            .call(question)
            .await
            .map(CallResult)
            .map_err(RaftError::Call)
    }

    /// Proposes on this member, which must lead.
    async fn propose_local(&self, payload: Bytes) -> Result<Bytes, RaftError> {
        let write = self.engine.client_write(Payload(payload));
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, write)
            .await
            .map_err(|_| RaftError::Timeout)?;
        outcome.map(|response| response.data.0).map_err(write_error)
    }

    /// Confirms leadership with a quorum (ReadIndex) and returns the position a linearizable
    /// read must wait for. Concurrent calls share quorum rounds inside openraft: a read is
    /// satisfied by the first heartbeat round that started after it arrived.
    async fn read_index_local(&self) -> Result<LogPos, RaftError> {
        let linearizer = self.engine.get_read_linearizer(ReadPolicy::ReadIndex);
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, linearizer)
            .await
            .map_err(|_| RaftError::Timeout)?;
        match outcome {
            Ok(linearizer) => {
                let log_id = *linearizer.read_log_id().log_id();
                Ok(to_pos(&log_id))
            }
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

    /// Waits until this member has applied `index`, up to `timeout`.
    async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), RaftError> {
        wait_metrics(&self.engine, timeout, |metrics| {
            let applied = metrics
                .last_applied
                .as_ref()
                .map_or(0, |log_id| log_id.index);
            (applied >= index).then_some(())
        })
        .await
    }

    /// Applies a membership change on this member, which must lead.
    async fn change_members_local(
        &self,
        change: MemberChange,
    ) -> Result<Vec<MemberEntry>, RaftError> {
        if self.leader() != Some(self.member_id()) {
            return Err(RaftError::NotLeader {
                leader: self.leader(),
            });
        }
        let members = self.members();
        let find = |id: u64| members.iter().find(|(member, _, _)| *member == id);
        let urls_taken = |urls: &[String], except: Option<u64>| {
            members.iter().any(|(member, node, _)| {
                Some(*member) != except && node.peer_urls.iter().any(|url| urls.contains(url))
            })
        };
        let change_membership = |changes: ChangeMembers<u64, MemberNode>| async move {
            let write = self.engine.change_membership(changes, false);
            tokio::time::timeout(REQUEST_TIMEOUT, write)
                .await
                .map_err(|_| RaftError::Timeout)?
                .map_err(write_error)
        };
        match change {
            MemberChange::Add {
                id,
                peer_urls,
                learner,
            } => {
                if find(id).is_some() {
                    return Err(MembershipError::IdExists.into());
                }
                if urls_taken(&peer_urls, None) {
                    return Err(MembershipError::PeerUrlsExist.into());
                }
                let learners = members
                    .iter()
                    .filter(|(_, _, is_learner)| *is_learner)
                    .count();
                if learner && learners >= LEARNERS_MAX {
                    return Err(MembershipError::TooManyLearners.into());
                }
                let node = MemberNode {
                    name: String::new(),
                    peer_urls,
                    client_urls: Vec::new(),
                };
                // The new member is not running yet (etcd's flow is: add, then start it), so
                // the learner is added without waiting for it to catch up.
                let add = self.engine.add_learner(id, node, false);
                tokio::time::timeout(REQUEST_TIMEOUT, add)
                    .await
                    .map_err(|_| RaftError::Timeout)?
                    .map_err(write_error)?;
                if !learner {
                    change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?;
                }
            }
            MemberChange::Remove { id } => {
                let Some((_, _, is_learner)) = find(id) else {
                    return Err(MembershipError::NotFound.into());
                };
                let change = if *is_learner {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                };
                change_membership(change).await?;
            }
            MemberChange::Update { id, peer_urls } => {
                let Some((_, node, _)) = find(id) else {
                    return Err(MembershipError::NotFound.into());
                };
                if urls_taken(&peer_urls, Some(id)) {
                    return Err(MembershipError::PeerUrlsExist.into());
                }
                let node = MemberNode {
                    peer_urls,
                    ..node.clone()
                };
                change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)]))).await?;
            }
            MemberChange::Promote { id } => {
                let Some((_, _, is_learner)) = find(id) else {
                    return Err(MembershipError::NotFound.into());
                };
                if !is_learner {
                    return Err(MembershipError::NotLearner.into());
                }
                if !self.learner_in_sync(id) {
                    return Err(MembershipError::LearnerNotInSync.into());
                }
                change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?;
            }
            MemberChange::Publish {
                id,
                name,
                client_urls,
            } => {
                let Some((_, node, _)) = find(id) else {
                    return Err(MembershipError::NotFound.into());
                };
                if node.name != name || node.client_urls != client_urls {
                    let node = MemberNode {
                        name,
                        client_urls,
                        ..node.clone()
                    };
                    change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])))
                        .await?;
                }
            }
        }
        Ok(self.members())
    }

    /// True when the leader has replicated to `learner` at least
    /// [`LEARNER_PROMOTE_PROGRESS_PERCENT`] of its log (etcd's rule).
    fn learner_in_sync(&self, learner: u64) -> bool {
        let metrics = self.engine.metrics();
        let metrics = metrics.borrow_watched();
        let leader_last = metrics.last_log_index.unwrap_or(0);
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|progress| progress.get(&learner).cloned().flatten())
            .map_or(0, |log_id| log_id.index);
        matched.saturating_mul(100) >= leader_last.saturating_mul(LEARNER_PROMOTE_PROGRESS_PERCENT)
    }
}

/// Follower reads batched into rounds: every read that arrives while a round is in flight
/// waits for the next one, which starts after it arrived, so one leader round trip serves
/// them all and none gets a read index older than its own arrival.
#[derive(Default)]
struct ReadRounds {
    /// The round readers are joining now; taken by the reader that starts it.
    joining: Mutex<Option<tokio::sync::broadcast::Sender<Result<LogPos, RaftError>>>>,
    /// Held by the reader running a round, so rounds run one at a time.
    running: tokio::sync::Mutex<()>,
}

impl ReadRounds {
    async fn read_index<F, Fut>(&self, ask_leader: F) -> Result<LogPos, RaftError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<LogPos, RaftError>>,
    {
        let mut answer = {
            let mut joining = self.joining.lock();
            match joining.as_ref() {
                Some(round) => round.subscribe(),
                None => {
                    let (round, answer) = tokio::sync::broadcast::channel(1);
                    *joining = Some(round);
                    answer
                }
            }
        };
        let running = self.running.lock().await;
        if let Ok(result) = answer.try_recv() {
            return result;
        }
        // Everyone who joined so far is in this round; later readers start a new one.
        let round = self.joining.lock().take();
        let result = ask_leader().await;
        if let Some(round) = round {
            let _ = round.send(result.clone());
        }
        drop(running);
        result
    }
}

/// A running Raft member.
pub struct RaftNode {
    core: Core,
    read_rounds: ReadRounds,
    /// Members removed while this member ran (see [`peer_service::PeerService`]).
    removed_members: Arc<Mutex<HashSet<u64>>>,
    snap_dir: PathBuf,
    /// How long a leader counts as leading without a quorum's acknowledgement.
    leader_lease: Duration,
    watcher: tokio::task::JoinHandle<()>,
}

impl RaftNode {
    /// Opens the log and state, starts consensus, and bootstraps a new cluster from
    /// `config.initial_members` if this member has no log yet and the map is not empty.
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
        let ctx = Arc::new(PeerContext::new(
            config.cluster_id,
            config.member_id,
            config.peer_tls.clone(),
        ));
        let engine = Engine::new(
            config.member_id,
            Arc::new(engine_config),
            PeerNetworkFactory {
                ctx: Arc::clone(&ctx),
            },
            log_store,
            state_machine,
        )
        .await
        .map_err(|err| RaftError::Stopped(err.to_string()))?;
        if fresh && !config.initial_members.is_empty() {
            // Every founding member initializes with the same membership, so their first log
            // entries are identical whichever of them is elected.
            match engine.initialize(config.initial_members.clone()).await {
                Ok(()) => {}
                Err(EngineError::APIError(err)) => {
                    tracing::info!(%err, "cluster already initialized");
                }
                Err(err) => return Err(RaftError::Stopped(err.to_string())),
            }
        }
        let removed_members = Arc::new(Mutex::new(HashSet::new()));
        let core = Core {
            engine,
            ctx,
            calls: Arc::new(std::sync::OnceLock::new()),
            questions: Arc::new(std::sync::OnceLock::new()),
        };
        let watcher = tokio::spawn(watch_membership(core.clone(), Arc::clone(&removed_members)));
        Ok(RaftNode {
            core,
            read_rounds: ReadRounds::default(),
            removed_members,
            snap_dir: config.snap_dir,
            leader_lease: config.election_timeout,
            watcher,
        })
    }

    /// Serves the peer service on `listener` until `shutdown` resolves; with `tls`, every
    /// connection completes a TLS handshake first (and, with `--peer-client-cert-auth`,
    /// presents a certificate signed by the peer CA).
    ///
    /// # Errors
    /// The server failed.
    pub async fn serve_peers(
        &self,
        listener: tokio::net::TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), String> {
        let service = peer_service::PeerService::new(
            self.core.clone(),
            Arc::clone(&self.core.ctx),
            self.snap_dir.clone(),
            Arc::clone(&self.removed_members),
        );
        let server = crate::pb::internal::peer_server::PeerServer::new(service)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
        let router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(server);
        let served = match tls {
            None => {
                // The builder's `tcp_nodelay` only reaches listeners tonic opens itself. Without
                // it, a follower's small streamed answers wait behind Nagle for the leader's
                // delayed ACK, about 40 ms each time.
                let incoming = tokio_stream::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    |accepted| {
                        let stream = accepted?;
                        if let Err(err) = stream.set_nodelay(true) {
                            tracing::debug!(%err, "cannot disable Nagle on a peer connection");
                        }
                        Ok::<_, std::io::Error>(stream)
                    },
                );
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
            Some(config) => {
                let incoming = crate::tls::accept(listener, config, "peer");
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
        };
        served.map_err(|err| err.to_string())
    }

    /// Proposes `payload` and waits until it is committed and applied, returning the apply
    /// result. A follower forwards it to the leader; without a leader it waits for one.
    ///
    /// # Errors
    /// [`RaftError::NoLeader`] (none appeared in time), [`RaftError::LeaderChanged`]
    /// (outcome unknown), [`RaftError::Timeout`], [`RaftError::Stopped`].
    pub async fn propose(&self, payload: Bytes) -> Result<Bytes, RaftError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let request = ForwardRequest::Propose(payload.clone());
        let response = self
            .on_leader(
                deadline,
                || self.core.propose_local(payload.clone()),
                &request,
            )
            .await?;
        match response {
            ForwardResponse::Applied(result) => Ok(result),
            other => Err(RaftError::Stopped(format!(
                "the leader answered a proposal with {other:?}"
            ))),
        }
    }

    /// Proposes `payload` only if this member leads now, and never forwards it: for decisions
    /// only a leader may take on its own authority, such as expiring a lease by its timers. A
    /// member deposed meanwhile gets [`RaftError::NotLeader`]; an entry it appended in its old
    /// term cannot commit once a newer term exists.
    ///
    /// # Errors
    /// As [`RaftNode::propose`], and [`RaftError::NotLeader`] instead of forwarding.
    pub async fn propose_as_leader(&self, payload: Bytes) -> Result<Bytes, RaftError> {
        self.core.propose_local(payload).await
    }

    /// Installs the handler of leader-only calls (once; later calls are ignored).
    pub fn set_leader_calls(&self, handler: Arc<dyn LeaderCalls>) {
        let _ = self.core.calls.set(handler);
    }

    /// Installs the handler of questions other members address to this one (once; later
    /// calls are ignored). It has the shape of a leader-call handler but runs on any member.
    pub fn set_question_handler(&self, handler: Arc<dyn LeaderCalls>) {
        let _ = self.core.questions.set(handler);
    }

    /// Asks member `member` a question of the layer above (locally when it is this member),
    /// waiting at most `timeout`. Used to compare members' state (the corruption check).
    ///
    /// # Errors
    /// [`RaftError::Call`] for an unknown member or the handler's error text, and the
    /// transport's errors ([`RaftError::Timeout`], [`RaftError::NoLeader`] when unreachable).
    pub async fn ask_member(
        &self,
        member: u64,
        question: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RaftError> {
        if member == self.core.member_id() {
            return self
                .core
                .answer_local(question)
                .await
                .map(|answer| answer.0);
        }
        let Some(url) = self.core.peer_url(member) else {
            return Err(RaftError::Call(format!(
                "member {member:x} is not in the cluster"
            )));
        };
        let response = self
            .core
            .ctx
            .forward(member, &url, &ForwardRequest::Ask(question), timeout)
            .await?;
        match response {
            ForwardResponse::Called(answer) => Ok(answer),
            ForwardResponse::Failed(error) => Err(error.into()),
            other => Err(RaftError::Stopped(format!(
                "member {member:x} answered a question with {other:?}"
            ))),
        }
    }

    /// Runs `request` on the leader through the handler installed there: locally when this
    /// member leads, otherwise over the peer port. Waits for a leader like a proposal.
    ///
    /// # Errors
    /// As [`RaftNode::propose`], plus [`RaftError::Call`] with the handler's error text.
    pub async fn call_leader(&self, request: Bytes) -> Result<Bytes, RaftError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let forwarded = ForwardRequest::Call(request.clone());
        let response = self
            .on_leader(
                deadline,
                || self.core.call_local(request.clone()),
                &forwarded,
            )
            .await?;
        match response {
            ForwardResponse::Called(result) => Ok(result),
            other => Err(RaftError::Stopped(format!(
                "the leader answered a call with {other:?}"
            ))),
        }
    }

    /// Runs `local` if this member leads, or sends `request` to the leader, waiting for a
    /// leader when none is known, until `deadline`.
    async fn on_leader<F, Fut, T>(
        &self,
        deadline: Instant,
        local: F,
        request: &ForwardRequest,
    ) -> Result<ForwardResponse, RaftError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, RaftError>>,
        T: Into<ForwardResponse>,
    {
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(RaftError::Timeout);
            }
            let leader = match self.core.leader() {
                Some(leader) => leader,
                None => self
                    .wait_for_leader(remaining)
                    .await
                    .map_err(|_| RaftError::NoLeader)?,
            };
            if leader == self.core.member_id() {
                match local().await {
                    Ok(value) => return Ok(value.into()),
                    // Leadership moved between the check and the call (or this leader lost
                    // its quorum): try again once this member's view of the leader changes.
                    Err(RaftError::NotLeader { .. }) => {
                        self.wait_leader_change(leader, remaining).await;
                        continue;
                    }
                    Err(other) => return Err(other),
                }
            }
            let Some(url) = self.core.peer_url(leader) else {
                return Err(RaftError::NoLeader);
            };
            let response = self
                .core
                .ctx
                .forward(leader, &url, request, remaining)
                .await?;
            match response {
                ForwardResponse::Failed(wire::WireError::NotLeader(_)) => {
                    // The leader we knew stepped down; wait for our view to move on.
                    self.wait_leader_change(leader, remaining).await;
                }
                ForwardResponse::Failed(error) => return Err(error.into()),
                other => return Ok(other),
            }
        }
    }

    /// Waits until this member names a leader other than `previous`, for at most `timeout`
    /// and at most one election timeout: a leader that refused for want of a quorum may get it
    /// back without any change of leader, so the caller tries it again after that.
    async fn wait_leader_change(&self, previous: u64, timeout: Duration) {
        let timeout = timeout.min(self.leader_lease);
        let changed = wait_metrics(&self.core.engine, timeout, |metrics| {
            (metrics.current_leader != Some(previous)).then_some(())
        })
        .await;
        if let Err(err) = changed {
            tracing::debug!(%err, leader = %format!("{previous:x}"), "leader view did not change");
        }
    }

    /// Confirms with a quorum, in a round that starts after the call, that this member still
    /// leads, then waits until it has applied everything committed before, its own term's
    /// first entry included. Whatever it did before the call therefore happened before any
    /// later leader took over, and nothing a predecessor committed is still to apply.
    /// Concurrent calls share rounds.
    ///
    /// # Errors
    /// [`RaftError::NotLeader`] when another member leads, [`RaftError::NoLeader`] without a
    /// quorum, [`RaftError::Timeout`], [`RaftError::Stopped`].
    pub async fn confirm_leading(&self) -> Result<(), RaftError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let position = self.core.read_index_local().await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.core.wait_applied(position.index, remaining).await
    }

    /// Waits until this member has applied everything committed before the call, after the
    /// leader confirmed with a quorum that it still leads (ReadIndex). Reads that follow see
    /// every write acknowledged before the call.
    ///
    /// # Errors
    /// [`RaftError::NoLeader`], [`RaftError::Timeout`], [`RaftError::Stopped`].
    pub async fn read_barrier(&self) -> Result<(), RaftError> {
        if self.core.leader() == Some(self.core.member_id()) {
            return self.confirm_leading().await;
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let position = self
            .read_rounds
            .read_index(|| async {
                let response = self
                    .on_leader(
                        deadline,
                        || self.core.read_index_local(),
                        &ForwardRequest::ReadIndex,
                    )
                    .await?;
                match response {
                    ForwardResponse::ReadIndex(position) => Ok(position),
                    other => Err(RaftError::Stopped(format!(
                        "the leader answered a read index request with {other:?}"
                    ))),
                }
            })
            .await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.core.wait_applied(position.index, remaining).await
    }

    /// Changes the member set through the leader and returns the members afterwards.
    ///
    /// # Errors
    /// [`RaftError::Membership`] with etcd's reason, or consensus unavailability.
    pub async fn change_members(
        &self,
        change: MemberChange,
    ) -> Result<Vec<MemberEntry>, RaftError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let request = ForwardRequest::ChangeMembers(change.clone());
        let response = self
            .on_leader(
                deadline,
                || self.core.change_members_local(change.clone()),
                &request,
            )
            .await?;
        match response {
            ForwardResponse::Members(members) => Ok(members),
            other => Err(RaftError::Stopped(format!(
                "the leader answered a membership change with {other:?}"
            ))),
        }
    }

    /// Hands leadership to `target`; this member must lead. Returns once `target` leads.
    ///
    /// # Errors
    /// [`RaftError::NotLeader`] when this member does not lead,
    /// [`MembershipError::BadTransferee`] when `target` is not a voter, [`RaftError::Timeout`]
    /// when it did not take over in time.
    pub async fn move_leader(&self, target: u64) -> Result<(), RaftError> {
        if self.core.leader() != Some(self.core.member_id()) {
            return Err(RaftError::NotLeader {
                leader: self.core.leader(),
            });
        }
        let is_voter = self
            .core
            .members()
            .iter()
            .any(|(id, _, learner)| *id == target && !learner);
        if !is_voter {
            return Err(MembershipError::BadTransferee.into());
        }
        if target == self.core.member_id() {
            return Ok(());
        }
        self.core
            .engine
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|fatal| RaftError::Stopped(fatal.to_string()))?;
        wait_metrics(&self.core.engine, MOVE_LEADER_TIMEOUT, |metrics| {
            (metrics.current_leader == Some(target)).then_some(())
        })
        .await
    }

    /// Waits until some member leads, up to `timeout`.
    ///
    /// # Errors
    /// [`RaftError::Timeout`] when no leader appeared in time.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, RaftError> {
        wait_metrics(&self.core.engine, timeout, |metrics| metrics.current_leader).await
    }

    /// Waits until this member knows some entry is committed, up to `timeout`. Until then a
    /// new cluster's founding membership is not committed and cannot be changed.
    ///
    /// # Errors
    /// [`RaftError::Timeout`] when nothing was committed in time.
    pub async fn wait_for_first_commit(&self, timeout: Duration) -> Result<(), RaftError> {
        wait_metrics(&self.core.engine, timeout, |metrics| {
            let committed = metrics
                .cluster_committed
                .as_ref()
                .or(metrics.local_committed.as_ref())
                .map_or(0, |log_id| log_id.index);
            (committed > 0).then_some(())
        })
        .await
    }

    /// The current consensus state. A leader that has not heard from a quorum for an
    /// election timeout reports no leader, as etcd's check-quorum leader steps down: it can
    /// commit nothing, so clients asking for a leader (`hasleader`) are refused at once. A
    /// follower that has not heard from its leader for an election timeout reports none
    /// either, as etcd's follower does once it campaigns.
    pub fn status(&self) -> RaftStatus {
        let metrics = self.core.engine.metrics();
        let metrics = metrics.borrow_watched();
        let mut leader = metrics.current_leader;
        let has_peers = metrics.membership_config.membership().voter_ids().count() > 1;
        if leader == Some(self.core.member_id()) && has_peers {
            let quorum_fresh = metrics
                .last_quorum_acked
                .as_ref()
                .is_some_and(|acked| openraft::Instant::elapsed(&**acked) < self.leader_lease);
            if !quorum_fresh {
                leader = None;
            }
        } else if let Some(other) = leader.filter(|id| *id != self.core.member_id()) {
            let recent = self
                .core
                .ctx
                .since_heard_from(other)
                .is_some_and(|since| since < self.leader_lease);
            if !recent {
                leader = None;
            }
        }
        RaftStatus {
            member_id: self.core.member_id(),
            leader,
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

    /// The current term; cheaper than [`RaftNode::status`], for response headers.
    pub fn term(&self) -> u64 {
        self.core.engine.metrics().borrow_watched().current_term
    }

    /// This member's id.
    pub fn member_id(&self) -> u64 {
        self.core.member_id()
    }

    /// The configured election timeout.
    pub fn election_timeout(&self) -> Duration {
        self.leader_lease
    }

    /// True when this member believes it leads.
    pub fn is_leader(&self) -> bool {
        self.core.leader() == Some(self.core.member_id())
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> u64 {
        self.core.ctx.cluster_id
    }

    /// The members of the current configuration: (id, node, is learner), by id.
    pub fn members(&self) -> Vec<MemberEntry> {
        self.core.members()
    }

    /// Becomes `Some(reason)` once this member learns it was removed from the cluster.
    pub fn removed(&self) -> watch::Receiver<Option<String>> {
        self.core.ctx.removed()
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
        wait_metrics(&self.core.engine, timeout, |metrics| {
            let snapshot = metrics.snapshot.as_ref().map_or(0, |log_id| log_id.index);
            let purged = metrics.purged.as_ref().map_or(0, |log_id| log_id.index);
            (snapshot >= index && purged > 0).then_some((snapshot, purged))
        })
        .await
    }

    /// Stops consensus; the log is flushed by the time this returns.
    pub async fn shutdown(&self) {
        self.watcher.abort();
        if let Err(err) = self.core.engine.shutdown().await {
            tracing::warn!(%err, "raft shutdown did not finish cleanly");
        }
    }
}

impl From<Bytes> for ForwardResponse {
    fn from(result: Bytes) -> ForwardResponse {
        ForwardResponse::Applied(result)
    }
}

impl From<LogPos> for ForwardResponse {
    fn from(position: LogPos) -> ForwardResponse {
        ForwardResponse::ReadIndex(position)
    }
}

impl From<Vec<MemberEntry>> for ForwardResponse {
    fn from(members: Vec<MemberEntry>) -> ForwardResponse {
        ForwardResponse::Members(members)
    }
}

/// Waits until `ready` finds what it waits for in the engine's metrics, up to `timeout`.
async fn wait_metrics<T>(
    engine: &Engine,
    timeout: Duration,
    mut ready: impl FnMut(&openraft::RaftMetrics<TypeConfig>) -> Option<T>,
) -> Result<T, RaftError> {
    let mut metrics = engine.metrics();
    let wait = async {
        loop {
            if let Some(found) = ready(&metrics.borrow_watched()) {
                return Ok(found);
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

/// Follows committed membership changes: remembers members that were removed (so their
/// messages are refused and they learn it), and raises this member's removed flag when a
/// committed configuration it was part of drops it. Also follows the leader, logging each
/// change with its term and counting it in `etcd_server_leader_changes_seen_total`.
async fn watch_membership(core: Core, removed_members: Arc<Mutex<HashSet<u64>>>) {
    // The server metrics change only with the vote, state, leader or membership; the full
    // metrics change with every log append and apply, and would wake this task for each.
    let mut metrics = core.engine.server_metrics();
    let mut previous: Option<BTreeSet<u64>> = None;
    let mut leader_seen: Option<u64> = None;
    // Whether the current interregnum (no leader known) was logged already.
    let mut leaderless_logged = false;
    loop {
        let (current, leader, term) = {
            let metrics = metrics.borrow_watched();
            let current: BTreeSet<u64> = metrics
                .committed_membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect();
            let term = core.engine.metrics().borrow_watched().current_term;
            (current, metrics.current_leader, term)
        };
        // etcd-compat: like etcd, a change is counted when a leader is known that differs
        // from the last one known (the first election counts too); an interregnum without a
        // leader is no change by itself.
        if let Some(leader) = leader
            && leader_seen != Some(leader)
        {
            crate::metrics::get().leader_changes_seen.inc();
            tracing::info!(
                term,
                leader = %format!("{leader:x}"),
                previous_leader = %leader_seen.map(|id| format!("{id:x}")).unwrap_or_default(),
                member_id = %format!("{:x}", core.member_id()),
                "leader changed"
            );
            leader_seen = Some(leader);
            leaderless_logged = false;
        }
        if leader.is_none() && leader_seen.is_some() && !leaderless_logged {
            tracing::info!(
                term,
                previous_leader = %leader_seen.map(|id| format!("{id:x}")).unwrap_or_default(),
                member_id = %format!("{:x}", core.member_id()),
                "lost the leader; an election is under way"
            );
            leaderless_logged = true;
        }
        if let Some(before) = &previous
            && *before != current
        {
            let gone: Vec<u64> = before.difference(&current).copied().collect();
            let added: Vec<u64> = current.difference(before).copied().collect();
            tracing::info!(
                term,
                member_id = %format!("{:x}", core.member_id()),
                added = ?added.iter().map(|id| format!("{id:x}")).collect::<Vec<_>>(),
                removed = ?gone.iter().map(|id| format!("{id:x}")).collect::<Vec<_>>(),
                "committed membership changed"
            );
            removed_members.lock().extend(gone.iter().copied());
            if gone.contains(&core.member_id()) {
                core.ctx
                    .mark_removed("a committed membership change removed this member".to_owned());
            }
        }
        if !current.is_empty() {
            previous = Some(current);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

fn engine_config(config: &RaftConfig) -> Result<EngineConfig, RaftError> {
    let heartbeat_ms = u64::try_from(config.heartbeat_interval.as_millis()).unwrap_or(u64::MAX);
    let election_ms = u64::try_from(config.election_timeout.as_millis()).unwrap_or(u64::MAX);
    let chunk_timeout_ms =
        u64::try_from(PEER_SNAPSHOT_CHUNK_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
    // openraft's followers refuse votes for `election_timeout_max` after the last heartbeat
    // (the leader lease), and candidates time out somewhere in [min, max). With etcd's
    // [timeout, 2 x timeout) every first election attempt would hit the lease and a
    // failover would take two to four election timeouts. Half the timeout to the timeout
    // gives a lease of one election timeout, as etcd's check-quorum has, and failovers
    // within one to two.
    let engine_config = EngineConfig {
        cluster_name: "mnemo".into(),
        heartbeat_interval: heartbeat_ms,
        election_timeout_min: (election_ms / 2).max(heartbeat_ms.saturating_add(1)),
        election_timeout_max: election_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count),
        max_in_snapshot_log_to_keep: SNAPSHOT_CATCHUP_ENTRIES.min(config.snapshot_count),
        max_payload_entries: PEER_APPEND_ENTRIES_MAX,
        snapshot_max_chunk_size: PEER_SNAPSHOT_CHUNK_BYTES as u64,
        install_snapshot_timeout: chunk_timeout_ms,
        enable_pre_vote: Some(true),
        ..EngineConfig::default()
    };
    engine_config
        .validate()
        .map_err(|err| RaftError::Storage(format!("invalid raft timing: {err}")))
}

/// Asks the members at `peer_urls` (any that answers) for the cluster id and members; a
/// member joining an existing cluster needs both before it can start.
///
/// # Errors
/// A description of every failure when none answered.
pub async fn fetch_membership(
    peer_urls: &[String],
    my_peer_urls: &[String],
    tls: Option<&crate::tls::ClientTls>,
    timeout: Duration,
) -> Result<(u64, Vec<MemberEntry>), String> {
    let mut failures = Vec::new();
    for url in peer_urls {
        match network::fetch_membership(url, my_peer_urls, tls, timeout).await {
            Ok(response) => {
                let members = response
                    .members
                    .into_iter()
                    .map(|member| {
                        (
                            member.id,
                            MemberNode {
                                name: member.name,
                                peer_urls: member.peer_urls,
                                client_urls: member.client_urls,
                            },
                            member.is_learner,
                        )
                    })
                    .collect();
                return Ok((response.cluster_id, members));
            }
            Err(reason) => failures.push(reason),
        }
    }
    Err(failures.join("; "))
}
