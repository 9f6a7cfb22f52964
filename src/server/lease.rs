//! The lease lifecycle of a request: grant and revoke go through Raft; keepalive and
//! TimeToLive run on the leader, whose timers are the ones that count (a follower sends them
//! there as a leader-only call); and the leader's duties: promoting its timers when it takes
//! over, proposing the revoke of expired leases and, when lease checkpointing is on,
//! checkpointing long leases' remaining TTLs. A renewal is answered only after a quorum
//! confirmed this member still leads in the same term, in a round that started after the
//! renewal (or, for a lease with a checkpoint, after the clear of that checkpoint committed
//! in that term), so a new leader (which gives every lease a full TTL from its takeover)
//! never ends a lease earlier than a client was promised. The timers count only in the term
//! they were promoted in, and only once everything committed before it is applied.
//!
//! Must not decide expiry itself: `crate::lease::Lessor` owns the timers; this module only
//! asks it and proposes what it says.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;

use super::{Error, Header, Server, raft_error, unexpected};
use crate::apply::codec::{Applied, Proposal};
use crate::lease::LeaseStatus;
use crate::limits::{
    LEASE_CHECKPOINTS_PER_PROPOSAL, LEASE_EXPIRED_POLL, LEASE_EXPIRED_REVOKE_WAIT,
    LEASE_RENEW_RETRY, LEASE_REVOKE_RETRY, LEASE_REVOKES_PER_TICK, LEASE_TICK, LEASE_TTL_MAX,
    REQUEST_TIMEOUT,
};
use crate::raft::LeaderCalls;
use crate::types::LeaseId;

/// A granted lease as LeaseGrant reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGranted {
    /// Its id.
    pub id: LeaseId,
    /// Its TTL, after raising to the minimum.
    pub ttl: i64,
}

/// LeaseTimeToLive's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTimeToLive {
    /// Remaining whole seconds; -1 for an unknown lease.
    pub ttl: i64,
    /// Granted TTL; 0 for an unknown lease.
    pub granted: i64,
    /// Attached keys when asked for.
    pub keys: Vec<Bytes>,
}

/// Lease checkpointing (opt-in): how often, and the gate that orders checkpoints with
/// renewals.
#[derive(Debug, Default)]
pub(super) struct Checkpoints {
    /// How often a long lease's remaining TTL is checkpointed; `None`: never (etcd's
    /// default).
    pub(super) interval: Option<Duration>,
    /// Renewals hold it shared, a checkpoint round exclusively from choosing its TTLs until
    /// its proposal returns. A checkpoint chosen before a renewal but applied after it would
    /// cut the lease short at the next leader; with the gate, a renewal either comes before
    /// the round chose (so the TTL chosen covers it), or sees the checkpoint (applied, or
    /// pending when its proposal failed) and clears it through Raft, after it in the log.
    /// Both only ever come from this leader in its term (neither is forwarded), and a new
    /// leader applies its predecessors' before it promotes, so the order holds across
    /// leaders too.
    gate: tokio::sync::RwLock<()>,
}

/// A leader-only lease call, as it crosses to the leader.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum LeaseCall {
    KeepAlive(LeaseId),
    TimeToLive(LeaseId),
}

/// The leader's answer to a [`LeaseCall`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum LeaseAnswer {
    /// Granted TTL after a renewal, or 0 when the lease is unknown or expired.
    Renewed(i64),
    /// Remaining, granted and keys; `None` for an unknown lease.
    Status(Option<(i64, i64, Vec<Vec<u8>>)>),
    /// The renewal could not be confirmed (leadership is moving); try again.
    Unavailable,
}

/// The smallest TTL granted: etcd's ceil(1.5 × election timeout), in seconds.
fn min_ttl(server: &Server) -> i64 {
    let millis = server.raft.election_timeout().as_millis();
    i64::try_from((millis * 3).div_ceil(2 * 1000)).unwrap_or(i64::MAX)
}

impl Server {
    /// Grants a lease (`id` 0: the member picks one).
    ///
    /// # Errors
    /// [`Error::LeaseTtlTooLarge`], [`Error::LeaseExists`], and Raft unavailability.
    pub async fn lease_grant(
        &self,
        ttl: i64,
        id: LeaseId,
    ) -> Result<(LeaseGranted, Header), Error> {
        if ttl > LEASE_TTL_MAX {
            return Err(Error::LeaseTtlTooLarge);
        }
        // etcd-compat: an id left to the server comes from the request id generator (member
        // bits, start time, counter), masked to a positive int63, so ids differ across
        // members and restarts.
        let id = if id == 0 {
            let request_id = self.next_proposal_id.fetch_add(1, Ordering::Relaxed);
            LeaseId::try_from(request_id & (u64::MAX >> 1))
                .unwrap_or(1)
                .max(1)
        } else {
            id
        };
        let ttl = ttl.max(min_ttl(self));
        let (revision, applied) = self.propose(&Proposal::LeaseGrant { id, ttl }).await?;
        match applied {
            Applied::LeaseGrant { id, ttl } => {
                Ok((LeaseGranted { id, ttl }, self.header(revision)))
            }
            other => Err(unexpected(&other)),
        }
    }

    /// Revokes a lease, deleting its keys in one revision.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`], and Raft unavailability.
    pub async fn lease_revoke(&self, id: LeaseId) -> Result<Header, Error> {
        let (revision, applied) = self.propose(&Proposal::LeaseRevoke { id }).await?;
        match applied {
            Applied::LeaseRevoke => Ok(self.header(revision)),
            other => Err(unexpected(&other)),
        }
    }

    /// Renews a lease on the leader; the TTL is 0 for an unknown or expired lease.
    ///
    /// # Errors
    /// Raft unavailability.
    pub async fn lease_keep_alive(&self, id: LeaseId) -> Result<(i64, Header), Error> {
        self.refuse_on_learner()?;
        // etcd-compat: the header is taken before renewing.
        let header = self.current_header();
        // A renewal is idempotent, so while leadership moves it is retried here (as etcd's
        // follower waits for the new leader) instead of failing the client's stream.
        match self
            .call_leader_patiently(&LeaseCall::KeepAlive(id))
            .await?
        {
            LeaseAnswer::Renewed(ttl) => Ok((ttl, header)),
            other => Err(Error::Internal(format!(
                "unexpected keepalive answer {other:?}"
            ))),
        }
    }

    /// Sends `call` to the leader, and again every [`LEASE_RENEW_RETRY`] while leadership
    /// moves (the leader answers [`LeaseAnswer::Unavailable`], or there is none), for up to
    /// [`REQUEST_TIMEOUT`]. Both calls are idempotent.
    async fn call_leader_patiently(&self, call: &LeaseCall) -> Result<LeaseAnswer, Error> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            let retry = match self.call_leader(call).await {
                Ok(LeaseAnswer::Unavailable) => Error::LeaderChanged,
                Err(error @ (Error::LeaderChanged | Error::NoLeader)) => error,
                other => return other,
            };
            if tokio::time::Instant::now() + LEASE_RENEW_RETRY >= deadline {
                return Err(retry);
            }
            tokio::time::sleep(LEASE_RENEW_RETRY).await;
        }
    }

    /// The leader's view of a lease.
    ///
    /// # Errors
    /// Raft unavailability.
    pub async fn lease_time_to_live(
        &self,
        id: LeaseId,
        with_keys: bool,
    ) -> Result<(LeaseTimeToLive, Header), Error> {
        self.refuse_on_learner()?;
        let header = self.current_header();
        let status = match self
            .call_leader_patiently(&LeaseCall::TimeToLive(id))
            .await?
        {
            LeaseAnswer::Status(status) => status,
            other => {
                return Err(Error::Internal(format!(
                    "unexpected TimeToLive answer {other:?}"
                )));
            }
        };
        let answer = match status {
            Some((remaining, granted, keys)) => LeaseTimeToLive {
                ttl: remaining,
                granted,
                keys: if with_keys {
                    keys.into_iter().map(Bytes::from).collect()
                } else {
                    Vec::new()
                },
            },
            None => LeaseTimeToLive {
                ttl: -1,
                granted: 0,
                keys: Vec::new(),
            },
        };
        Ok((answer, header))
    }

    /// Every granted lease, as of a linearizable read.
    ///
    /// # Errors
    /// Raft unavailability.
    pub async fn lease_leases(&self) -> Result<(Vec<LeaseId>, Header), Error> {
        self.refuse_on_learner()?;
        self.read_barrier().await?;
        let header = self.current_header();
        Ok((self.applier.lessor().ids(), header))
    }

    async fn call_leader(&self, call: &LeaseCall) -> Result<LeaseAnswer, Error> {
        let request = postcard::to_stdvec(call)
            .map_err(|err| Error::Internal(format!("cannot encode a lease call: {err}")))?;
        let answer = self
            .raft
            .call_leader(Bytes::from(request))
            .await
            .map_err(raft_error)?;
        postcard::from_bytes(&answer)
            .map_err(|err| Error::Internal(format!("cannot decode a lease answer: {err}")))
    }

    /// Makes this leader's lease timers authoritative for its current term and returns the
    /// term. The first time in a term, it first confirms its leadership and applies
    /// everything committed before (the new term's first entry included), so it knows every
    /// grant, revoke and checkpoint of its predecessors, and nothing of theirs applies after
    /// it took over; then every lease gets its full TTL (or its checkpoint) from now.
    ///
    /// # Errors
    /// [`Error::LeaderChanged`] when this member does not lead (or stops leading meanwhile),
    /// and Raft unavailability.
    async fn ensure_primary(&self) -> Result<u64, Error> {
        let lessor = self.applier.lessor();
        let term = self.raft.term();
        if !self.raft.is_leader() {
            return Err(Error::LeaderChanged);
        }
        if lessor.primary_term() == Some(term) {
            return Ok(term);
        }
        self.raft.confirm_leading().await.map_err(raft_error)?;
        if !self.raft.is_leader() || self.raft.term() != term {
            return Err(Error::LeaderChanged);
        }
        if lessor.primary_term() != Some(term) {
            lessor.promote(self.raft.election_timeout(), term);
            tracing::info!(term, "lease timers promoted on the new leader");
        }
        Ok(term)
    }

    async fn answer_call(&self, request: Bytes) -> Result<Bytes, String> {
        let call: LeaseCall = postcard::from_bytes(&request).map_err(|err| err.to_string())?;
        let answer = match self.ensure_primary().await {
            // Not (or no longer) the leader with its timers: the caller asks again, as a
            // follower waits for its leader in etcd.
            Err(_) => LeaseAnswer::Unavailable,
            Ok(term) => self.answer_as_primary(call, term).await,
        };
        postcard::to_stdvec(&answer)
            .map(Bytes::from)
            .map_err(|err| err.to_string())
    }

    async fn answer_as_primary(&self, call: LeaseCall, term: u64) -> LeaseAnswer {
        let lessor = self.applier.lessor();
        match call {
            LeaseCall::KeepAlive(id) => self.keep_alive_as_leader(id, term).await,
            LeaseCall::TimeToLive(id) => {
                LeaseAnswer::Status(lessor.status(id).map(|status: LeaseStatus| {
                    (
                        status.remaining,
                        status.granted,
                        status.keys.into_iter().map(|key| key.to_vec()).collect(),
                    )
                }))
            }
        }
    }

    /// Renews lease `id` on this leader, primary in `term`, and decides what the client is
    /// told.
    async fn keep_alive_as_leader(&self, id: LeaseId, term: u64) -> LeaseAnswer {
        let ordered = self.lease_checkpoints.gate.read().await;
        let lessor = self.applier.lessor();
        let Some(renewal) = lessor.renew(id) else {
            // Nothing to order against checkpoints; the wait below needs this leader's
            // lease duties (which take the gate) to propose the revoke.
            drop(ordered);
            // An expired lease may still hold its keys until its revoke is applied: answer
            // "gone" only then, as etcd does.
            return if self.wait_lease_gone(id).await {
                LeaseAnswer::Renewed(0)
            } else {
                LeaseAnswer::Unavailable
            };
        };
        if renewal.checkpointed {
            // A next leader would start the lease from its checkpointed remaining TTL, which
            // this renewal outlasts: clear it through Raft first (as etcd does). Only this
            // leader proposes it (never forwarded), under the gate, so it lands after every
            // checkpoint this leader chose before the renewal. Once it has committed in this
            // term, any later leader took over after the renewal and starts the lease at its
            // full TTL. It commits only if the lease still exists then.
            return match self
                .propose_with(&Proposal::LeaseCheckpoint(vec![(id, 0)]), false, None)
                .await
            {
                Ok(_) if self.raft.term() == term => LeaseAnswer::Renewed(renewal.ttl),
                Err(Error::LeaseNotFound) => LeaseAnswer::Renewed(0),
                Ok(_) | Err(_) => LeaseAnswer::Unavailable,
            };
        }
        // The renewal is only in this member's timers. It holds if this member still led
        // after making it: then any later leader took over after it, and gives the lease a
        // full TTL from then. A term that moved meanwhile may hide a leader between two of
        // this member's terms, which could have revoked the lease; the client asks again.
        // The confirmation also applies everything committed before it, so a revoke that
        // committed first is seen below.
        if self.raft.confirm_leading().await.is_err() || self.raft.term() != term {
            return LeaseAnswer::Unavailable;
        }
        if lessor.status(id).is_none() {
            // Revoked while the round ran.
            return LeaseAnswer::Renewed(0);
        }
        LeaseAnswer::Renewed(renewal.ttl)
    }

    /// Waits until lease `id` is no longer in this member's table (its revoke applied, or it
    /// never existed), for at most [`LEASE_EXPIRED_REVOKE_WAIT`]; true if it is gone.
    async fn wait_lease_gone(&self, id: LeaseId) -> bool {
        let deadline = tokio::time::Instant::now() + LEASE_EXPIRED_REVOKE_WAIT;
        let lessor = self.applier.lessor();
        // Bounded by the deadline; one look per poll interval.
        loop {
            if lessor.status(id).is_none() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(LEASE_EXPIRED_POLL).await;
        }
    }

    /// One round of the leader's lease duties: promote or demote the timers, propose the
    /// revoke of expired leases, and (when on) the checkpoints that are due.
    async fn lease_duties(self: &Arc<Self>) {
        let lessor = self.applier.lessor();
        if !self.raft.is_leader() {
            if lessor.primary_term().is_some() {
                lessor.demote();
                tracing::info!("lease timers demoted: no longer the leader");
            }
            #[cfg(feature = "bug-injection")]
            if crate::bugs::enabled(crate::bugs::Bug::LeaseExpireLocal) {
                for id in lessor.expired_by_own_clock(LEASE_REVOKES_PER_TICK) {
                    match self.applier.revoke_locally(id) {
                        Ok(()) => {
                            tracing::debug!(lease = id, "lease expired locally (injected bug)")
                        }
                        Err(err) => tracing::warn!(%err, lease = id, "local lease expiry failed"),
                    }
                }
            }
            return;
        }
        let term = match self.ensure_primary().await {
            Ok(term) => term,
            Err(err) => {
                tracing::debug!(%err, "lease timers not promoted yet");
                return;
            }
        };
        for id in lessor.expired(LEASE_REVOKES_PER_TICK, LEASE_REVOKE_RETRY, term) {
            let server = Arc::clone(self);
            tokio::spawn(async move {
                // Expiry is this leader's own decision, from its own timers: it must not be
                // forwarded, or a leader deposed while paused would have the new leader revoke
                // leases it keeps alive.
                let expire = server
                    .propose_with(&Proposal::LeaseRevoke { id }, false, None)
                    .await;
                match expire.map(|_| ()) {
                    Ok(_) | Err(Error::LeaseNotFound) => {}
                    Err(err) => tracing::debug!(%err, lease = id, "revoking an expired lease"),
                }
            });
        }
        // Last, as it may wait for a commit: expiry and demotion never wait behind it.
        if let Some(interval) = self.lease_checkpoints.interval {
            self.checkpoint_leases(interval, term).await;
        }
    }

    /// Proposes the checkpoints that are due (one batch per tick), as this leader's own
    /// decision: never forwarded, like an expiry.
    async fn checkpoint_leases(&self, interval: Duration, term: u64) {
        let lessor = self.applier.lessor();
        // Most ticks have nothing due; they must not make renewals queue behind the gate.
        if !lessor.any_checkpoint_due(interval, term) {
            return;
        }
        let _ordered = self.lease_checkpoints.gate.write().await;
        let due = lessor.checkpoints_due(interval, LEASE_CHECKPOINTS_PER_PROPOSAL, term);
        if due.is_empty() {
            return;
        }
        let count = due.len();
        match self
            .propose_with(&Proposal::LeaseCheckpoint(due), false, None)
            .await
        {
            Ok(_) => tracing::debug!(count, "lease remaining TTLs checkpointed"),
            // Every lease of the batch was revoked meanwhile.
            Err(Error::LeaseNotFound) => {}
            Err(err) => tracing::debug!(%err, count, "checkpointing lease TTLs"),
        }
    }

    /// Runs the leader's lease duties every [`LEASE_TICK`] until the server is gone, and
    /// answers leader-only lease calls from followers.
    pub fn start_lease_duties(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        self.raft.set_leader_calls(Arc::new(LeaseCalls {
            server: Arc::downgrade(self),
        }));
        let server = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(LEASE_TICK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(server) = server.upgrade() else {
                    return;
                };
                server.lease_duties().await;
            }
        })
    }
}

/// Answers followers' lease calls on the leader.
struct LeaseCalls {
    server: Weak<Server>,
}

impl LeaderCalls for LeaseCalls {
    fn call(
        &self,
        request: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Bytes, String>> + Send + '_>>
    {
        Box::pin(async move {
            let server = self
                .server
                .upgrade()
                .ok_or_else(|| Error::Stopped.to_string())?;
            server.answer_call(request).await
        })
    }
}
