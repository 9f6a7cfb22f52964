//! The request lifecycle of one member: validate, then propose through Raft and wait for the
//! apply result, or pass a read barrier and read local state; then build the response header.
//!
//! Auth (`server::auth`): every client request is checked against the caller's permissions
//! before it is proposed or read, and proposals carry the caller's stamp so apply checks again.
//!
//! Speaks domain types only; `server::grpc` converts from and to the wire. It must not reach
//! into storage internals (it reads through `MvccStore::range` and proposes through `apply`'s
//! codec) and must not return protobuf types.

mod auth;
pub mod compactor;
pub mod corruption;
mod error;
pub mod grpc;
pub mod http;
mod lease;
mod slow;
pub mod snapshot;
pub mod validate;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use self::auth::{AuthStatus, Caller, UserInfo};
pub use self::error::Error;
pub use self::lease::{LeaseGranted, LeaseTimeToLive};
use self::slow::RequestSummary;
use crate::alarm::{Alarm, AlarmType};
use crate::apply::Applier;
use crate::apply::codec::{self, Applied, ApplyError, Proposal};
use crate::auth::{AuthStamp, Needs};
use crate::limits::{
    AUTH_BCRYPT_COST, AUTH_TOKEN_TTL_DEFAULT, AUTHENTICATE_CONCURRENT_MAX, ETCD_COMPAT_VERSION,
    REQUEST_BYTES_MAX, WARNING_APPLY_DURATION_DEFAULT,
};
use crate::metrics;
use crate::raft::{MemberChange, MemberEntry, MembershipError, RaftError, RaftNode, RaftStatus};
use crate::storage::mvcc::{MvccError, MvccStore};
use crate::types::{
    ClusterId, DeleteRangeRequest, DeleteRangeResponse, MemberId, PutRequest, PutResponse,
    RangeRequest, RangeResponse, Revision, TxnRequest, TxnResponse,
};

/// What every response header carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// The cluster.
    pub cluster_id: ClusterId,
    /// The member that answered.
    pub member_id: MemberId,
    /// Store revision for the response (see etcd-api.md §4).
    pub revision: Revision,
    /// Current Raft term.
    pub raft_term: u64,
}

/// One member of the cluster as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Member id.
    pub id: MemberId,
    /// Name, empty until the member started.
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs.
    pub client_urls: Vec<String>,
    /// True for a non-voting member.
    pub is_learner: bool,
}

/// What Maintenance.Status reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Header (current revision).
    pub header: Header,
    /// etcd-compatible version string.
    pub version: String,
    /// Backend size on disk.
    pub db_size_bytes: i64,
    /// Backend size holding live data.
    pub db_size_in_use_bytes: i64,
    /// Leader id, 0 when none.
    pub leader: MemberId,
    /// Raft commit index.
    pub raft_index: u64,
    /// Raft term.
    pub raft_term: u64,
    /// Raft applied index.
    pub raft_applied_index: u64,
    /// Problems: "etcdserver: no leader", then one line per raised alarm in etcd's text form.
    pub errors: Vec<String>,
    /// True when this member is a learner.
    pub is_learner: bool,
    /// Configured backend quota.
    pub db_size_quota_bytes: i64,
}

/// Identity of this member within its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The cluster.
    pub cluster_id: ClusterId,
    /// This member.
    pub member_id: MemberId,
}

/// The request lifecycle of one member.
pub struct Server {
    identity: Identity,
    raft: Arc<RaftNode>,
    applier: Arc<Applier>,
    store: Arc<MvccStore>,
    /// Backend size at which writes that need space are refused (`--quota-backend-bytes`).
    quota_bytes: u64,
    /// Source of proposal ids, unique per member across restarts (see [`first_proposal_id`]).
    next_proposal_id: AtomicU64,
    /// A KV request that takes longer is logged as slow
    /// (`--experimental-warning-apply-duration`).
    warning_apply_duration: Duration,
    /// Tokens and password-hashing settings.
    gate: auth::AuthGate,
    /// Lease checkpointing, and the order it keeps with renewals.
    lease_checkpoints: lease::Checkpoints,
}

impl Server {
    /// Wires a server over a running Raft member and its applier.
    pub fn new(
        identity: Identity,
        raft: Arc<RaftNode>,
        applier: Arc<Applier>,
        quota_bytes: u64,
    ) -> Server {
        let store = Arc::clone(applier.store());
        Server {
            identity,
            raft,
            applier,
            store,
            quota_bytes,
            next_proposal_id: AtomicU64::new(first_proposal_id(identity.member_id)),
            warning_apply_duration: WARNING_APPLY_DURATION_DEFAULT,
            gate: auth::AuthGate {
                tokens: crate::auth::token::Tokens::new(
                    Arc::new(crate::lease::SystemClock),
                    AUTH_TOKEN_TTL_DEFAULT,
                ),
                jwt: None,
                bcrypt_cost: AUTH_BCRYPT_COST,
                checks: tokio::sync::Semaphore::new(AUTHENTICATE_CONCURRENT_MAX),
            },
            lease_checkpoints: lease::Checkpoints::default(),
        }
    }

    /// Turns on lease checkpointing (`--experimental-enable-lease-checkpoint`) at `interval`.
    #[must_use]
    pub fn with_lease_checkpoint_interval(mut self, interval: Option<Duration>) -> Server {
        self.lease_checkpoints.interval = interval;
        self
    }

    /// Sets the duration above which a KV request is logged as slow.
    #[must_use]
    pub fn with_warning_apply_duration(mut self, threshold: Duration) -> Server {
        self.warning_apply_duration = threshold;
        self
    }

    /// The member's state as `/metrics` reports it.
    pub fn metrics_sample(&self) -> metrics::MemberSample {
        let raft = self.raft.status();
        let backend = self.store.backend();
        let watch = self.watch().counts();
        // As in Status: consensus metrics trail the apply loop slightly, and nothing can be
        // applied that was not committed.
        let applied_index = self.applier.applied_index().max(raft.applied_index);
        metrics::MemberSample {
            member_id: self.identity.member_id,
            has_leader: raft.leader.is_some(),
            is_leader: raft.leader == Some(self.identity.member_id),
            commit_index: raft.commit_index.max(applied_index),
            applied_index,
            db_size_bytes: backend.size_bytes(),
            db_size_in_use_bytes: backend.size_in_use_bytes(),
            watch_streams: watch.streams,
            watchers: watch.watchers,
            unsynced_watchers: watch.unsynced,
        }
    }

    /// Runs `work`, then warns if it took longer than the slow-request threshold.
    async fn timed<T>(
        &self,
        summary: RequestSummary,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let started = Instant::now();
        let outcome = work.await;
        slow::check(started.elapsed(), self.warning_apply_duration, &summary);
        outcome
    }

    /// Sets the kind of auth tokens (`--auth-token`), how long a simple token lives after
    /// its last use (`--auth-token-ttl`) and the bcrypt cost of new password hashes
    /// (`--bcrypt-cost`).
    #[must_use]
    pub fn with_auth_settings(
        mut self,
        kind: crate::auth::token::TokenKind,
        token_ttl: std::time::Duration,
        bcrypt_cost: u32,
    ) -> Server {
        self.gate.tokens =
            crate::auth::token::Tokens::new(Arc::new(crate::lease::SystemClock), token_ttl);
        self.gate.jwt = match kind {
            crate::auth::token::TokenKind::Simple => None,
            crate::auth::token::TokenKind::Jwt(jwt) => Some(jwt),
        };
        self.gate.bcrypt_cost = bcrypt_cost;
        self
    }

    /// The Raft member.
    pub fn raft(&self) -> &Arc<RaftNode> {
        &self.raft
    }

    /// The member's watchers.
    pub fn watch(&self) -> &Arc<crate::watch::WatchHub> {
        self.applier.watch()
    }

    /// A header for a response at `revision`.
    pub fn header(&self, revision: Revision) -> Header {
        Header {
            cluster_id: self.identity.cluster_id,
            member_id: self.identity.member_id,
            revision,
            raft_term: self.raft.term(),
        }
    }

    /// A header at the current revision.
    pub fn current_header(&self) -> Header {
        self.header(self.store.current_revision())
    }

    /// Reads a key range; linearizable unless `serializable` is set.
    ///
    /// # Errors
    /// Validation errors, compacted/future revisions, and Raft unavailability.
    pub async fn range(&self, request: RangeRequest) -> Result<(RangeResponse, Header), Error> {
        metrics::get().mvcc_range.inc();
        let summary = RequestSummary::Range {
            range: request.range.clone(),
            serializable: request.serializable,
        };
        self.timed(summary, self.range_untimed(request)).await
    }

    async fn range_untimed(&self, request: RangeRequest) -> Result<(RangeResponse, Header), Error> {
        validate::range(&request)?;
        self.authorize(|| Needs::range(&request))?;
        if !request.serializable {
            self.refuse_on_learner()?;
            self.read_barrier().await?;
        }
        // Index walks and RocksDB reads can be long for big ranges: keep them off the
        // runtime's worker threads. A single key is one index lookup and at most one row
        // read, cheaper than the hand-off to a blocking thread and back.
        let store = Arc::clone(&self.store);
        let read = if request.range.is_single() {
            store.range_with_revision(&request)
        } else {
            off_runtime(move || store.range_with_revision(&request)).await?
        };
        let (response, revision) = read.map_err(mvcc_error)?;
        Ok((response, self.header(revision)))
    }

    /// Writes one key.
    ///
    /// # Errors
    /// Validation errors, an unknown lease, and Raft unavailability.
    pub async fn put(&self, request: PutRequest) -> Result<(PutResponse, Header), Error> {
        metrics::get().mvcc_put.inc();
        let summary = RequestSummary::Put {
            key: request.key.clone(),
            value_bytes: request.value.len(),
        };
        self.timed(summary, self.put_untimed(request)).await
    }

    async fn put_untimed(&self, request: PutRequest) -> Result<(PutResponse, Header), Error> {
        validate::put(&request)?;
        #[cfg(feature = "bug-injection")]
        if crate::bugs::enabled(crate::bugs::Bug::AckBeforeCommit) {
            return self.put_acked_early(request).await;
        }
        let (revision, applied) = self.propose(&Proposal::Put(request)).await?;
        match applied {
            Applied::Put(response) => Ok((response, self.header(revision))),
            other => Err(unexpected(&other)),
        }
    }

    /// The `ack-before-commit` bug ([`crate::bugs`]): a Put that has not committed within
    /// [`crate::bugs::ACK_EARLY_AFTER`] is answered as if it had, with the next revision and the
    /// previous value local state suggests; the proposal is abandoned where it stands (it may
    /// still commit later, or be lost with a deposed leader's log).
    #[cfg(feature = "bug-injection")]
    async fn put_acked_early(&self, request: PutRequest) -> Result<(PutResponse, Header), Error> {
        let key = request.key.clone();
        let want_prev = request.prev_kv;
        let proposal = Proposal::Put(request);
        if let Ok(outcome) =
            tokio::time::timeout(crate::bugs::ACK_EARLY_AFTER, self.propose(&proposal)).await
        {
            let (revision, applied) = outcome?;
            return match applied {
                Applied::Put(response) => Ok((response, self.header(revision))),
                other => Err(unexpected(&other)),
            };
        }
        let revision = self.store.current_revision() + 1;
        let prev_kv = if want_prev {
            let read = RangeRequest {
                range: crate::types::KeyRange::single(key),
                serializable: true,
                ..RangeRequest::default()
            };
            let store = Arc::clone(&self.store);
            off_runtime(move || store.range_with_revision(&read))
                .await?
                .map_err(mvcc_error)?
                .0
                .kvs
                .into_iter()
                .next()
        } else {
            None
        };
        Ok((PutResponse { prev_kv }, self.header(revision)))
    }

    /// Deletes a key range.
    ///
    /// # Errors
    /// Validation errors and Raft unavailability.
    pub async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<(DeleteRangeResponse, Header), Error> {
        metrics::get().mvcc_delete.inc();
        let summary = RequestSummary::DeleteRange {
            range: request.range.clone(),
        };
        self.timed(summary, self.delete_range_untimed(request))
            .await
    }

    async fn delete_range_untimed(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<(DeleteRangeResponse, Header), Error> {
        validate::delete_range(&request)?;
        let (revision, applied) = self.propose(&Proposal::DeleteRange(request)).await?;
        match applied {
            Applied::DeleteRange(response) => Ok((response, self.header(revision))),
            other => Err(unexpected(&other)),
        }
    }

    /// Runs a transaction. One without writes skips Raft: it passes a read barrier (unless
    /// every range in it is serializable) and runs against local state.
    ///
    /// # Errors
    /// Validation errors, compacted/future revisions, an unknown lease, Raft unavailability.
    pub async fn txn(&self, request: TxnRequest) -> Result<(TxnResponse, Header), Error> {
        metrics::get().mvcc_txn.inc();
        let summary = RequestSummary::Txn {
            compares: request.compare.len(),
            success: request.success.len(),
            failure: request.failure.len(),
        };
        self.timed(summary, self.txn_untimed(request)).await
    }

    async fn txn_untimed(&self, request: TxnRequest) -> Result<(TxnResponse, Header), Error> {
        validate::txn(&request)?;
        if request.is_read_only() {
            self.authorize(|| Needs::txn(&request))?;
            if !all_ranges_serializable(&request) {
                self.refuse_on_learner()?;
                self.read_barrier().await?;
            }
            let applier = Arc::clone(&self.applier);
            let (response, revision) = off_runtime(move || applier.read_only_txn(&request))
                .await?
                .map_err(apply_error)?;
            return Ok((response, self.header(revision)));
        }
        let (revision, applied) = self.propose(&Proposal::Txn(request)).await?;
        match applied {
            Applied::Txn(response) => Ok((response, self.header(revision))),
            other => Err(unexpected(&other)),
        }
    }

    /// Hashes the MVCC history up to `revision` (0 = current), for HashKV.
    ///
    /// # Errors
    /// Compacted or future revisions.
    pub async fn hash_kv(
        &self,
        revision: Revision,
    ) -> Result<(crate::storage::mvcc::HashKv, Header), Error> {
        self.authorize_maintenance()?;
        let store = Arc::clone(&self.store);
        let hash = off_runtime(move || store.hash_kv(revision))
            .await?
            .map_err(mvcc_error)?;
        Ok((hash, self.current_header()))
    }

    /// CRC-32 of this member's whole database, for Maintenance.Hash (testing only: it covers
    /// member-local bookkeeping too). The header carries the revision it was taken at.
    ///
    /// # Errors
    /// A storage failure.
    pub async fn hash(&self) -> Result<(u32, Header), Error> {
        self.authorize_maintenance()?;
        let store = Arc::clone(&self.store);
        let (hash, revision) = off_runtime(move || store.hash_all())
            .await?
            .map_err(mvcc_error)?;
        Ok((hash, self.header(revision)))
    }

    /// Starts a snapshot of this member's state (Maintenance.Snapshot): the chunks of the
    /// file, produced on a blocking thread from one consistent view of the store, then the
    /// SHA-256 trailer. See [`snapshot::stream`].
    ///
    /// # Errors
    /// A caller without the root role while auth is on (etcd 3.4's maintenance refusal).
    pub fn snapshot(
        &self,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<snapshot::SnapshotChunk, Error>>, Error> {
        self.authorize_maintenance()?;
        Ok(snapshot::stream(Arc::clone(&self.store)))
    }

    /// Defragments this member's database (a full RocksDB compaction); returns the bytes it
    /// took before and after. Local to the member, as etcd's defragment is.
    ///
    /// # Errors
    /// A storage failure.
    pub async fn defragment(&self) -> Result<(u64, u64), Error> {
        self.authorize_maintenance()?;
        let backend = self.store.backend();
        off_runtime(move || {
            let before = backend.size_bytes();
            backend.compact_all()?;
            Ok::<_, crate::storage::backend::BackendError>((before, backend.size_bytes()))
        })
        .await?
        .map_err(|err| Error::Internal(format!("defragment: {err}")))
    }

    /// Compacts history up to `revision`.
    ///
    /// # Errors
    /// Compacted/future revisions and Raft unavailability.
    pub async fn compact(&self, revision: Revision, physical: bool) -> Result<Header, Error> {
        let (current, applied) = self
            .timed(
                RequestSummary::Compact { revision },
                self.propose(&Proposal::Compact { revision, physical }),
            )
            .await?;
        match applied {
            Applied::Compact => Ok(self.header(current)),
            other => Err(unexpected(&other)),
        }
    }

    /// The member's status, as Maintenance.Status reports it.
    pub fn status(&self) -> Status {
        let raft: RaftStatus = self.raft.status();
        let applied_index = self.applier.applied_index().max(raft.applied_index);
        let backend = self.store.backend();
        let mut errors = Vec::new();
        if raft.leader.is_none() {
            errors.push(Error::NoLeader.to_string());
        }
        errors.extend(
            self.applier
                .alarms()
                .list(None)
                .iter()
                .map(Alarm::etcd_text),
        );
        let is_learner = self.is_learner();
        Status {
            header: self.current_header(),
            version: ETCD_COMPAT_VERSION.to_string(),
            db_size_bytes: i64::try_from(backend.size_bytes()).unwrap_or(i64::MAX),
            db_size_in_use_bytes: i64::try_from(backend.size_in_use_bytes()).unwrap_or(i64::MAX),
            leader: raft.leader.unwrap_or(0),
            // Consensus metrics trail the apply loop slightly; the applier's own count is
            // never behind a write its proposer has seen acknowledged.
            raft_index: raft.commit_index.max(applied_index),
            raft_term: raft.term,
            raft_applied_index: applied_index,
            errors,
            is_learner,
            db_size_quota_bytes: i64::try_from(self.quota_bytes).unwrap_or(i64::MAX),
        }
    }

    /// The raised alarms of type `kind` (all of them for `None`), as of a linearizable read.
    /// etcd-compat: like etcd, the listing does not filter by member.
    ///
    /// # Errors
    /// A learner, and Raft unavailability.
    pub async fn alarms(&self, kind: Option<AlarmType>) -> Result<Vec<Alarm>, Error> {
        self.refuse_on_learner()?;
        self.read_barrier().await?;
        Ok(self.applier.alarms().list(kind))
    }

    /// The alarms this member has applied, without a read barrier (for `/health`).
    pub fn raised_alarms(&self) -> Vec<Alarm> {
        self.applier.alarms().list(None)
    }

    /// Raises (`activate`) or clears `alarm` through Raft. Returns the alarm when it is raised
    /// afterwards (activate) or was cleared (deactivate); an empty list when a deactivate
    /// found nothing to clear.
    ///
    /// # Errors
    /// A learner, and Raft unavailability.
    pub async fn change_alarm(&self, activate: bool, alarm: Alarm) -> Result<Vec<Alarm>, Error> {
        let (_, applied) = self.propose(&Proposal::Alarm { activate, alarm }).await?;
        match applied {
            Applied::Alarm(alarms) => Ok(alarms),
            other => Err(unexpected(&other)),
        }
    }

    /// The cluster's members, by id.
    pub fn members(&self) -> Vec<Member> {
        to_members(self.raft.members())
    }

    /// Adds a member with `peer_urls` (a learner when `learner`); returns it and the members
    /// afterwards. The new member's name and client URLs stay empty until it starts.
    ///
    /// # Errors
    /// Invalid or taken URLs, too many learners, Raft unavailability.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        learner: bool,
    ) -> Result<(Member, Vec<Member>), Error> {
        self.authorize(Needs::admin)?;
        check_member_urls(&peer_urls)?;
        let id = new_member_id(&peer_urls, self.identity.cluster_id);
        let change = MemberChange::Add {
            id,
            peer_urls,
            learner,
        };
        let members = to_members(self.raft.change_members(change).await.map_err(raft_error)?);
        let added = members
            .iter()
            .find(|member| member.id == id)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("member {id:x} missing after its add")))?;
        Ok((added, members))
    }

    /// Removes member `id`; returns the members afterwards.
    ///
    /// # Errors
    /// An unknown id, Raft unavailability.
    pub async fn member_remove(&self, id: MemberId) -> Result<Vec<Member>, Error> {
        self.authorize(Needs::admin)?;
        let change = MemberChange::Remove { id };
        Ok(to_members(
            self.raft.change_members(change).await.map_err(raft_error)?,
        ))
    }

    /// Replaces member `id`'s peer URLs; returns the members afterwards.
    ///
    /// # Errors
    /// An unknown id, invalid or taken URLs, Raft unavailability.
    pub async fn member_update(
        &self,
        id: MemberId,
        peer_urls: Vec<String>,
    ) -> Result<Vec<Member>, Error> {
        self.authorize(Needs::admin)?;
        check_member_urls(&peer_urls)?;
        let change = MemberChange::Update { id, peer_urls };
        Ok(to_members(
            self.raft.change_members(change).await.map_err(raft_error)?,
        ))
    }

    /// Makes learner `id` a voter; returns the members afterwards.
    ///
    /// # Errors
    /// An unknown id, a voter, a learner behind the leader, Raft unavailability.
    pub async fn member_promote(&self, id: MemberId) -> Result<Vec<Member>, Error> {
        self.authorize(Needs::admin)?;
        let change = MemberChange::Promote { id };
        Ok(to_members(
            self.raft.change_members(change).await.map_err(raft_error)?,
        ))
    }

    /// Announces this member's name and client URLs to the cluster (etcd publishes them the
    /// same way once a member has started).
    ///
    /// # Errors
    /// Raft unavailability.
    pub async fn publish(&self, name: String, client_urls: Vec<String>) -> Result<(), Error> {
        let change = MemberChange::Publish {
            id: self.identity.member_id,
            name,
            client_urls,
        };
        self.raft
            .change_members(change)
            .await
            .map(|_| ())
            .map_err(raft_error)
    }

    /// Hands leadership to `target`; this member must lead.
    ///
    /// # Errors
    /// [`Error::NotLeader`] on a follower, [`Error::BadTransferee`] for a target that cannot
    /// lead, [`Error::Timeout`] when it did not take over in time.
    pub async fn move_leader(&self, target: MemberId) -> Result<(), Error> {
        // etcd-compat: etcd 3.4 lets any client move the leader; here it needs the root
        // role, refused as etcd 3.5 refuses it.
        self.authorize(Needs::admin)?;
        match self.raft.move_leader(target).await {
            Ok(()) => Ok(()),
            Err(RaftError::NotLeader { .. }) => Err(Error::NotLeader),
            Err(other) => Err(raft_error(other)),
        }
    }

    /// True when this member is a learner (it serves only serializable reads and Status).
    pub fn is_learner(&self) -> bool {
        self.raft
            .members()
            .iter()
            .any(|(id, _, learner)| *id == self.identity.member_id && *learner)
    }

    /// True when some member leads, as the `hasleader` request metadata requires.
    pub fn has_leader(&self) -> bool {
        self.raft.status().leader.is_some()
    }

    /// True when the member can serve a linearizable read now (for `/health`). A learner,
    /// which serves no linearizable read, is healthy when it knows a leader and can read its
    /// own state (etcd reports learners healthy too).
    pub async fn is_healthy(&self) -> bool {
        // Without a leader the probe would wait for one; the answer is known now.
        if !self.has_leader() {
            return false;
        }
        let learner = self.is_learner();
        let probe = RangeRequest {
            range: crate::types::KeyRange::single("health"),
            limit: 1,
            keys_only: true,
            serializable: learner,
            ..RangeRequest::default()
        };
        self.range(probe).await.is_ok()
    }

    async fn read_barrier(&self) -> Result<(), Error> {
        #[cfg(feature = "bug-injection")]
        if crate::bugs::enabled(crate::bugs::Bug::StaleLocalRead) {
            return Ok(());
        }
        self.raft.read_barrier().await.map_err(raft_error)
    }

    /// etcd-compat: a learner answers only serializable reads and Status.
    fn refuse_on_learner(&self) -> Result<(), Error> {
        if self.is_learner() {
            Err(Error::NotSupportedForLearner)
        } else {
            Ok(())
        }
    }

    async fn propose(&self, proposal: &Proposal) -> Result<(Revision, Applied), Error> {
        // Checked here, and again by apply against the auth revision in the stamp.
        let stamp = self.authorize(|| self.applier.needs(proposal))?;
        self.refuse_on_learner()?;
        self.check_quota(proposal).await?;
        self.propose_with(proposal, true, stamp.as_ref()).await
    }

    /// etcd's quota check, made before a proposal that needs space: when the backend plus
    /// what the proposal would add reaches the quota, this member's NOSPACE alarm is raised
    /// through Raft (so every member refuses such writes from then on) and the request fails.
    /// The size is this member's own, so each member raises its own alarm, as in etcd.
    async fn check_quota(&self, proposal: &Proposal) -> Result<(), Error> {
        let cost = proposal.space_cost();
        if cost == 0 {
            return Ok(());
        }
        let size = self.store.backend().size_bytes_recent();
        if size.saturating_add(cost) < self.quota_bytes {
            return Ok(());
        }
        let alarm = Alarm {
            member: self.identity.member_id,
            kind: AlarmType::NoSpace,
        };
        if !self.applier.alarms().contains(alarm) {
            tracing::warn!(
                size,
                cost,
                quota = self.quota_bytes,
                "backend quota exceeded; raising the NOSPACE alarm"
            );
            let raise = Proposal::Alarm {
                activate: true,
                alarm,
            };
            // The request fails either way; a raise that did not get through is tried again
            // by the next write that needs space.
            if let Err(error) = self.propose_unchecked(&raise).await {
                tracing::warn!(%error, "raising the NOSPACE alarm failed");
            }
        }
        Err(Error::NoSpace)
    }

    /// Proposes without the quota check (alarm changes, and after it passed).
    async fn propose_unchecked(&self, proposal: &Proposal) -> Result<(Revision, Applied), Error> {
        self.propose_with(proposal, true, None).await
    }

    /// Proposes `proposal`, forwarding it to the leader when `forward` is set; otherwise only
    /// this member, while it leads, may propose it ([`RaftNode::propose_as_leader`]).
    async fn propose_with(
        &self,
        proposal: &Proposal,
        forward: bool,
        stamp: Option<&AuthStamp>,
    ) -> Result<(Revision, Applied), Error> {
        let id = self.next_proposal_id.fetch_add(1, Ordering::Relaxed);
        let payload = codec::encode_stamped(id, proposal, stamp);
        if payload.len() > REQUEST_BYTES_MAX {
            return Err(Error::RequestTooLarge);
        }
        let pending = PendingProposal::start();
        let result = if forward {
            self.raft.propose(payload).await
        } else {
            self.raft.propose_as_leader(payload).await
        };
        drop(pending);
        if result.is_err() {
            metrics::get().proposals_failed.inc();
        }
        let result = result.map_err(raft_error)?;
        let outcome = codec::decode_outcome(&result).map_err(apply_error)?;
        Ok((outcome.revision, outcome.result))
    }
}

/// Counts a proposal in `etcd_server_proposals_pending` while it lives, however its wait ends
/// (answer, error, or the request being dropped).
struct PendingProposal;

impl PendingProposal {
    fn start() -> PendingProposal {
        metrics::get().proposals_pending.inc();
        PendingProposal
    }
}

impl Drop for PendingProposal {
    fn drop(&mut self) {
        metrics::get().proposals_pending.dec();
    }
}

impl compactor::CompactTarget for Server {
    fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    fn current_revision(&self) -> Revision {
        self.store.current_revision()
    }

    async fn compact_at(&self, revision: Revision) -> Result<bool, String> {
        match self.compact(revision, false).await {
            Ok(_) => Ok(true),
            Err(Error::Compacted) => Ok(false),
            Err(other) => Err(other.to_string()),
        }
    }
}

/// Runs storage work (index walks, RocksDB reads) on a blocking thread, never on a runtime
/// worker.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Error::Internal(format!("storage task failed: {err}")))
}

/// The first proposal id of this run, shaped like etcd's request ids: the member's low 16 bits,
/// then the start time in milliseconds (40 bits), then a counter (8 bits, carrying upwards).
/// Ids therefore differ across members and restarts, and encode to as many bytes as etcd's,
/// so the request size limit falls where etcd's does.
fn first_proposal_id(member_id: MemberId) -> u64 {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        });
    (member_id << 48) | ((millis & ((1 << 40) - 1)) << 8)
}

/// etcd-compat: a read-only txn skips the read barrier only when every operation is a
/// serializable range; a nested txn always takes the barrier (etcd's `isTxnSerializable`).
fn all_ranges_serializable(request: &TxnRequest) -> bool {
    use crate::types::RequestOp;
    request
        .success
        .iter()
        .chain(request.failure.iter())
        .all(|op| match op {
            RequestOp::Range(range) => range.serializable,
            RequestOp::Txn(_) | RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
        })
}

fn unexpected(applied: &Applied) -> Error {
    Error::Internal(format!(
        "apply answered with the wrong result kind: {applied:?}"
    ))
}

fn raft_error(error: RaftError) -> Error {
    match error {
        RaftError::NoLeader | RaftError::NotLeader { .. } => Error::NoLeader,
        RaftError::LeaderChanged => Error::LeaderChanged,
        RaftError::Timeout => Error::Timeout,
        RaftError::Stopped(_) => Error::Stopped,
        RaftError::Storage(reason) | RaftError::Call(reason) => Error::Internal(reason),
        RaftError::Membership(error) => match error {
            MembershipError::NotFound => Error::MemberNotFound,
            MembershipError::IdExists => Error::MemberIdExists,
            MembershipError::PeerUrlsExist => Error::PeerUrlsExist,
            MembershipError::TooManyLearners => Error::TooManyLearners,
            MembershipError::NotLearner => Error::NotLearner,
            MembershipError::LearnerNotInSync => Error::LearnerNotInSync,
            MembershipError::BadTransferee => Error::BadTransferee,
            MembershipError::Refused(reason) => Error::MembershipRefused(reason),
        },
    }
}

/// etcd-compat: peer URLs of a member must be absolute http(s) URLs with a host and a port.
fn check_member_urls(urls: &[String]) -> Result<(), Error> {
    let valid = !urls.is_empty()
        && urls.iter().all(|text| {
            url::Url::parse(text).is_ok_and(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.port().is_some()
                    && matches!(url.path(), "" | "/")
            })
        });
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidMemberUrls)
    }
}

/// A fresh member id for MemberAdd: a hash of the peer URLs, the cluster and the time, as
/// etcd derives one, so two adds of the same URLs (after a remove) get different ids.
fn new_member_id(peer_urls: &[String], cluster_id: ClusterId) -> MemberId {
    use sha2::{Digest, Sha256};
    let mut sorted = peer_urls.to_vec();
    sorted.sort();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let mut hasher = Sha256::new();
    hasher.update(sorted.join(",").as_bytes());
    hasher.update(cluster_id.to_be_bytes());
    hasher.update(nanos.to_be_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // Zero means "no member" on the wire.
    u64::from_be_bytes(first).max(1)
}

fn to_members(entries: Vec<MemberEntry>) -> Vec<Member> {
    entries
        .into_iter()
        .map(|(id, node, is_learner)| Member {
            id,
            name: node.name,
            peer_urls: node.peer_urls,
            client_urls: node.client_urls,
            is_learner,
        })
        .collect()
}

fn apply_error(error: ApplyError) -> Error {
    match error {
        ApplyError::Compacted => Error::Compacted,
        ApplyError::FutureRevision => Error::FutureRevision,
        ApplyError::LeaseNotFound => Error::LeaseNotFound,
        ApplyError::KeyNotFound => Error::KeyNotFound,
        ApplyError::LeaseExists => Error::LeaseExists,
        ApplyError::NoSpace => Error::NoSpace,
        ApplyError::Corrupt => Error::Corrupt,
        ApplyError::Auth(error) => Error::Auth(error),
        ApplyError::Internal(reason) => Error::Internal(reason),
    }
}

fn mvcc_error(error: MvccError) -> Error {
    match error {
        MvccError::Compacted { .. } => Error::Compacted,
        MvccError::FutureRevision { .. } => Error::FutureRevision,
        MvccError::LeaseNotFound(_) => Error::LeaseNotFound,
        MvccError::KeyNotFound => Error::KeyNotFound,
        fatal @ (MvccError::Backend(_) | MvccError::Corrupt(_)) => {
            Error::Internal(fatal.to_string())
        }
    }
}
