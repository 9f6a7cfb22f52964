//! Apply: the only code that changes state after a Raft entry commits.
//!
//! ```text
//! committed entries --> Applier::apply --> one MVCC write txn per batch
//!                                           |  put / delete / txn / compact per entry
//!                                           |  + applied log position + membership (Meta CF)
//!                                           v
//!                                      one RocksDB write batch --> results to proposers
//! ```
//! Apply is deterministic: it reads no clock, draws no random numbers and does no I/O other
//! than the backend batch, so every member that applies the same log holds the same state.
//! It must not call into `raft` or `server`. After each batch commits, its events go to the
//! member's [`WatchHub`], which only queues them in memory and never waits. Lease grants,
//! revokes and checkpoints change the [`Lessor`]'s table, and every entry's key changes are
//! handed to it so keys follow their leases; its clock-driven deadlines never reach a result.
//!
//! Alarms gate what apply accepts, the same way on every member because the [`AlarmTable`]
//! only changes through committed entries: while any member's NOSPACE alarm is raised, a
//! proposal that needs space (a put, a txn with a put, a lease grant) is refused with
//! [`ApplyError::NoSpace`]; while a CORRUPT alarm is raised, every write is refused with
//! [`ApplyError::Corrupt`]. Reads never come here, and alarm changes are always accepted, so
//! an alarm can be cleared.
//!
//! Compactions and alarm changes are logged as they are applied (with the entry's index and
//! term); a log line is the only output besides the batch, and it changes no state.
//! Auth: an entry proposed for a client carries the caller and the auth revision the server
//! checked it at ([`AuthStamp`]); apply checks it again against the [`AuthStore`] as of this
//! entry and refuses it (old auth revision, permission denied) without applying anything.
//! Auth changes update the store and its rows in the `auth` column family in the same batch.
//!
//! Installing a snapshot (`StateMachineHost::install`) is not an apply: `storage::member_db`
//! replaces the whole state with the received checkpoint, and apply only checks that the
//! checkpoint's applied position decodes and then takes it as its own.

pub mod codec;

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use self::codec::{Applied, ApplyError, ApplyOutcome, Proposal};
use crate::alarm::{AlarmTable, AlarmType};
use crate::auth::{AuthStamp, AuthStore, Needs};
use crate::lease::{self, Clock, Lessor, SystemClock};
use crate::limits::{APPLY_QUICK_BYTES_MAX, APPLY_QUICK_ENTRIES_MAX, APPLY_QUICK_OPS_MAX};
use crate::raft::{AppliedState, CommittedData, CommittedEntry, LogPos, StateMachineHost};
use crate::storage::backend::Cf;
use crate::storage::member_db::MemberDb;
use crate::storage::mvcc::{MvccError, MvccStore, WriteTxn};
use crate::types::{DeleteRangeRequest, KeyRange, RequestOp, Revision, TxnRequest, TxnResponse};
use crate::watch::WatchHub;

/// Meta key of the last applied log position: index then term, big-endian.
pub const META_APPLIED: &[u8] = b"raft.applied";
/// Meta key of the last applied membership (an opaque blob from `raft`).
pub const META_MEMBERSHIP: &[u8] = b"raft.membership";

/// Applies committed entries to the MVCC store.
pub struct Applier {
    /// The member's state database; its store is the one entries are applied to.
    db: MemberDb,
    /// Raft index of the last applied entry, set before the entry's proposer hears back, and
    /// set to the checkpoint's once an install has swapped the state.
    applied_index: AtomicU64,
    /// The member's watchers, given every committed batch's events.
    watch: Arc<WatchHub>,
    /// The member's leases: the table apply changes, and the leader's timers.
    lessor: Arc<Lessor>,
    /// The raised alarms: changed only here, read by the server and by the refusal check.
    alarms: Arc<AlarmTable>,
    /// Users, roles and permissions: changed only here, read by the server's checks.
    auth: Arc<AuthStore>,
}

impl Applier {
    /// An applier over the member's state database `db`.
    ///
    /// # Errors
    /// Backend failures reading the applied position.
    pub fn new(db: MemberDb) -> io::Result<Applier> {
        Applier::with_clock(db, Arc::new(SystemClock))
    }

    /// An applier whose lease timers read `clock`.
    ///
    /// # Errors
    /// Backend failures reading the applied position or the lease table.
    pub fn with_clock(db: MemberDb, clock: Arc<dyn Clock>) -> io::Result<Applier> {
        let applied = applied_index_of(&read_applied_state(db.store())?);
        let watch = WatchHub::new(Arc::clone(db.store()));
        let lessor = Arc::new(Lessor::new(clock));
        lessor.load(db.store()).map_err(io::Error::other)?;
        let alarms = Arc::new(AlarmTable::new());
        alarms.load(db.store()).map_err(io::Error::other)?;
        let auth = Arc::new(AuthStore::new());
        auth.load(db.store()).map_err(io::Error::other)?;
        Ok(Applier {
            db,
            applied_index: AtomicU64::new(applied),
            watch,
            lessor,
            alarms,
            auth,
        })
    }

    /// The member's leases.
    pub fn lessor(&self) -> &Arc<Lessor> {
        &self.lessor
    }

    /// The member's view of the raised alarms (the same on every member at equal applied
    /// index).
    pub fn alarms(&self) -> &Arc<AlarmTable> {
        &self.alarms
    }

    /// The member's auth store (the same on every member at equal applied index).
    pub fn auth(&self) -> &Arc<AuthStore> {
        &self.auth
    }

    /// What `proposal` needs from its caller's permissions. Decided from the proposal and
    /// the replicated lease table, so the server's check and apply's agree.
    pub fn needs(&self, proposal: &Proposal) -> Needs {
        let lease_keys = |id| {
            self.lessor
                .status(id)
                .map(|status| status.keys)
                .unwrap_or_default()
        };
        match proposal {
            Proposal::Put(put) => {
                let keys = if put.lease == 0 {
                    Vec::new()
                } else {
                    lease_keys(put.lease)
                };
                Needs::put(put, keys)
            }
            Proposal::DeleteRange(delete) => Needs::delete(delete),
            Proposal::Txn(txn) => Needs::txn(txn),
            Proposal::LeaseRevoke { id } => Needs::write_keys(lease_keys(*id)),
            // etcd-compat: etcd 3.4 lets any client compact and raise or clear alarms. Both
            // act on the whole store (a compaction destroys every user's history, a cleared
            // NOSPACE lets writes past the quota), so here they need the root role, like
            // the other maintenance calls. The member's own compactions and alarms carry no
            // stamp and are not checked.
            Proposal::Auth(_) | Proposal::Compact { .. } | Proposal::Alarm { .. } => Needs::admin(),
            // As in etcd, granting a lease needs no permission: a lease holds nothing until
            // a key is attached, which needs WRITE on the key.
            Proposal::LeaseGrant { .. } | Proposal::LeaseCheckpoint(_) => Needs::anyone(),
        }
    }

    /// Raft index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    /// The store it applies to. The same object for the applier's whole life: an install
    /// replaces what is inside it.
    pub fn store(&self) -> &Arc<MvccStore> {
        self.db.store()
    }

    /// The member's watchers.
    pub fn watch(&self) -> &Arc<WatchHub> {
        &self.watch
    }

    /// Runs a transaction that has no write against the committed state, without Raft and
    /// without taking the writer's place.
    ///
    /// # Errors
    /// Compacted or future revisions named by a range inside.
    pub fn read_only_txn(
        &self,
        request: &TxnRequest,
    ) -> Result<(TxnResponse, Revision), ApplyError> {
        self.store().read_txn(request).map_err(apply_error)
    }

    fn apply_proposal(
        &self,
        txn: &mut WriteTxn<'_>,
        proposal: &Proposal,
        stamp: Option<&AuthStamp>,
    ) -> Result<ApplyOutcome, ApplyError> {
        // The proposer checked the caller at some auth revision; checking again here, against
        // the store as it is at this entry, makes a revocation committed in between count.
        // (Apply is the store's only writer, so "enabled" cannot change under this check.)
        if let Some(stamp) = stamp
            && self.auth.is_enabled()
        {
            self.auth
                .check(stamp, &self.needs(proposal))
                .map_err(ApplyError::Auth)?;
        }
        let events_before = txn.events_len();
        let outcome = self.apply_change(txn, proposal);
        // Keys follow their leases entry by entry, so a revoke later in the same batch
        // deletes a key attached earlier in it.
        self.lessor.observe(txn.events_since(events_before));
        outcome
    }

    /// Why the raised alarms forbid `proposal`, if they do. Decided from the replicated
    /// alarm table and the proposal alone, so every member gives the same verdict.
    fn refusal(&self, proposal: &Proposal) -> Option<ApplyError> {
        let is_write = match proposal {
            Proposal::Put(_)
            | Proposal::DeleteRange(_)
            | Proposal::Txn(_)
            | Proposal::Compact { .. }
            | Proposal::LeaseGrant { .. }
            | Proposal::LeaseRevoke { .. }
            | Proposal::Auth(_) => true,
            // A checkpoint only records how long leases have left (or clears that record),
            // and an alarm change must always pass or an alarm could never be cleared.
            Proposal::LeaseCheckpoint(_) | Proposal::Alarm { .. } => false,
        };
        if is_write && self.alarms.any(AlarmType::Corrupt) {
            return Some(ApplyError::Corrupt);
        }
        if proposal.space_cost() > 0 && self.alarms.any(AlarmType::NoSpace) {
            return Some(ApplyError::NoSpace);
        }
        None
    }

    fn apply_change(
        &self,
        txn: &mut WriteTxn<'_>,
        proposal: &Proposal,
    ) -> Result<ApplyOutcome, ApplyError> {
        if let Some(refusal) = self.refusal(proposal) {
            return Err(refusal);
        }
        let leases = &*self.lessor;
        let (revision, result) = match proposal {
            Proposal::Put(put) => {
                let (response, revision) = txn.put(put, leases).map_err(apply_error)?;
                (revision, Applied::Put(response))
            }
            Proposal::DeleteRange(delete) => {
                let (response, revision) = txn.delete_range(delete).map_err(apply_error)?;
                (revision, Applied::DeleteRange(response))
            }
            Proposal::Txn(request) => {
                #[cfg(feature = "bug-injection")]
                if crate::bugs::enabled(crate::bugs::Bug::TxnCompareAfterWrites) {
                    let (response, revision) = compare_after_writes(txn, request, leases)?;
                    return Ok(ApplyOutcome {
                        revision,
                        result: Applied::Txn(response),
                    });
                }
                let (response, revision) = txn.txn(request, leases).map_err(apply_error)?;
                (revision, Applied::Txn(response))
            }
            Proposal::LeaseGrant { id, ttl } => {
                let row = self
                    .lessor
                    .grant(*id, *ttl)
                    .ok_or(ApplyError::LeaseExists)?;
                txn.put_raw(Cf::Lease, &lease::row_key(*id), &row);
                (
                    txn.current_revision(),
                    Applied::LeaseGrant { id: *id, ttl: *ttl },
                )
            }
            Proposal::LeaseRevoke { id } => {
                let keys = self.lessor.revoke(*id).ok_or(ApplyError::LeaseNotFound)?;
                txn.delete_raw(Cf::Lease, &lease::row_key(*id));
                // Every attached key goes in one revision, as one txn of deletes.
                let deletes = TxnRequest {
                    compare: Vec::new(),
                    success: keys
                        .into_iter()
                        .map(|key| {
                            RequestOp::DeleteRange(DeleteRangeRequest {
                                range: KeyRange::single(key),
                                prev_kv: false,
                            })
                        })
                        .collect(),
                    failure: Vec::new(),
                };
                let (_, revision) = txn.txn(&deletes, leases).map_err(apply_error)?;
                (revision, Applied::LeaseRevoke)
            }
            Proposal::LeaseCheckpoint(remaining) => {
                let rows = self.lessor.checkpoint(remaining);
                // A checkpoint of leases that are all gone renews nothing: a deposed leader's
                // renewal can commit after the new leader revoked the lease, and its client
                // must then hear that the lease is gone, not that it was kept alive.
                if rows.is_empty() && !remaining.is_empty() {
                    return Err(ApplyError::LeaseNotFound);
                }
                for (id, row) in rows {
                    txn.put_raw(Cf::Lease, &lease::row_key(id), &row);
                }
                (txn.current_revision(), Applied::LeaseCheckpoint)
            }
            Proposal::Compact {
                revision,
                physical: _,
            } => {
                // Compaction drops history in the same batch that records it, so the data is
                // gone by the time any caller (physical or not) hears back.
                let current = txn.compact(*revision).map_err(apply_error)?;
                (current, Applied::Compact)
            }
            Proposal::Auth(change) => {
                for (key, value) in self.auth.apply(change).map_err(ApplyError::Auth)? {
                    match value {
                        Some(value) => txn.put_raw(Cf::Auth, &key, &value),
                        None => txn.delete_raw(Cf::Auth, &key),
                    }
                }
                (txn.current_revision(), Applied::Auth)
            }
            Proposal::Alarm {
                activate: true,
                alarm,
            } => {
                if let Some(key) = self.alarms.activate(*alarm) {
                    txn.put_raw(Cf::Meta, &key, &[]);
                }
                // Raising a raised alarm answers with it too, so the caller sees it is up.
                (txn.current_revision(), Applied::Alarm(vec![*alarm]))
            }
            Proposal::Alarm {
                activate: false,
                alarm,
            } => {
                let cleared = match self.alarms.deactivate(*alarm) {
                    Some(key) => {
                        txn.delete_raw(Cf::Meta, &key);
                        vec![*alarm]
                    }
                    None => Vec::new(),
                };
                (txn.current_revision(), Applied::Alarm(cleared))
            }
        };
        Ok(ApplyOutcome { revision, result })
    }
}

/// Logs the entries operators look for in a member's log: compactions and alarm changes,
/// with the entry's Raft index and term (the same on every member, so lines of several
/// members can be matched up).
fn log_applied(proposal: &Proposal, outcome: &Result<ApplyOutcome, ApplyError>, position: LogPos) {
    let Ok(outcome) = outcome else {
        return;
    };
    match proposal {
        Proposal::Compact { revision, .. } => tracing::info!(
            compact_revision = revision,
            revision = outcome.revision,
            index = position.index,
            term = position.term,
            "compaction applied"
        ),
        Proposal::Alarm { activate, alarm } => tracing::warn!(
            alarm = alarm.kind.name(),
            alarm_member_id = %format!("{:x}", alarm.member),
            activate,
            index = position.index,
            term = position.term,
            "{}",
            if *activate { "alarm raised" } else { "alarm cleared" }
        ),
        _ => {}
    }
}

/// The injected `txn-compare-after-writes` bug: the success branch's writes land
/// unconditionally, and the compares are judged afterwards on the state those writes produced.
/// A guard on a key the txn writes then fails even when it held, and the writes stay either way.
#[cfg(feature = "bug-injection")]
fn compare_after_writes(
    txn: &mut WriteTxn<'_>,
    request: &TxnRequest,
    leases: &dyn crate::storage::mvcc::LeaseLookup,
) -> Result<(TxnResponse, Revision), ApplyError> {
    let writes = TxnRequest {
        compare: Vec::new(),
        success: request.success.clone(),
        failure: Vec::new(),
    };
    let (written, revision) = txn.txn(&writes, leases).map_err(apply_error)?;
    // A txn without operations changes nothing and takes no revision: it only judges.
    let judge = TxnRequest {
        compare: request.compare.clone(),
        success: Vec::new(),
        failure: Vec::new(),
    };
    let (judged, _) = txn.txn(&judge, leases).map_err(apply_error)?;
    let responses = if judged.succeeded {
        written.responses
    } else {
        Vec::new()
    };
    Ok((
        TxnResponse {
            succeeded: judged.succeeded,
            responses,
        },
        revision,
    ))
}

#[cfg(feature = "bug-injection")]
impl Applier {
    /// Injected bug `lease-expire-local`: applies a revoke of `id` to this member's state alone,
    /// outside the log, so its keys vanish here and nowhere else.
    ///
    /// # Errors
    /// Backend failures committing the batch.
    pub fn revoke_locally(&self, id: crate::types::LeaseId) -> io::Result<()> {
        let mut txn = self.store().write();
        if self
            .apply_proposal(&mut txn, &Proposal::LeaseRevoke { id }, None)
            .is_err()
        {
            return Ok(());
        }
        let committed = txn.commit().map_err(io::Error::other)?;
        self.watch.publish(&committed);
        Ok(())
    }
}

fn apply_error(error: MvccError) -> ApplyError {
    match error {
        MvccError::Compacted { .. } => ApplyError::Compacted,
        MvccError::FutureRevision { .. } => ApplyError::FutureRevision,
        MvccError::LeaseNotFound(_) => ApplyError::LeaseNotFound,
        MvccError::KeyNotFound => ApplyError::KeyNotFound,
        fatal @ (MvccError::Backend(_) | MvccError::Corrupt(_)) => {
            ApplyError::Internal(fatal.to_string())
        }
    }
}

fn encode_position(position: LogPos) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&position.index.to_be_bytes());
    bytes[8..].copy_from_slice(&position.term.to_be_bytes());
    bytes
}

fn decode_position(bytes: &[u8]) -> io::Result<LogPos> {
    let bytes: [u8; 16] = bytes.try_into().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "applied position is not 16 bytes",
        )
    })?;
    let mut index = [0u8; 8];
    let mut term = [0u8; 8];
    index.copy_from_slice(&bytes[..8]);
    term.copy_from_slice(&bytes[8..]);
    Ok(LogPos {
        index: u64::from_be_bytes(index),
        term: u64::from_be_bytes(term),
    })
}

fn applied_index_of(state: &AppliedState) -> u64 {
    state.applied.map_or(0, |position| position.index)
}

fn read_applied_state(store: &MvccStore) -> io::Result<AppliedState> {
    // One backend handle for both keys, so they come from the same database even if an
    // install swaps it meanwhile.
    let backend = store.backend();
    let applied = backend
        .get(Cf::Meta, META_APPLIED)
        .map_err(io::Error::other)?;
    let membership = backend
        .get(Cf::Meta, META_MEMBERSHIP)
        .map_err(io::Error::other)?;
    Ok(AppliedState {
        applied: applied.as_deref().map(decode_position).transpose()?,
        membership: membership.map(Bytes::from),
    })
}

/// The key operations applying `proposal` costs, when that is bounded: each touches one key
/// (a range, a range delete or a lease revoke may touch any number), and a compaction walks
/// the whole index. `None` when it is not bounded. A lease checkpoint or an alarm counts as
/// one: it changes one row per lease or alarm named, and the payload limit bounds those.
fn quick_ops(
    proposal: &Proposal,
    stamp: Option<&AuthStamp>,
    lease_keys: impl Fn(crate::types::LeaseId) -> usize,
) -> Option<usize> {
    match proposal {
        // A revoke deletes the lease's keys, counted as they are attached now; puts earlier in
        // the same batch may attach a few more, each counted as an op of its own already.
        Proposal::LeaseRevoke { id } => Some(1 + lease_keys(*id)),
        // The permission check of a stamped put under a lease covers every key of that lease.
        Proposal::Put(put) => (stamp.is_none() || put.lease == 0).then_some(1),
        Proposal::LeaseGrant { .. } | Proposal::LeaseCheckpoint(_) | Proposal::Alarm { .. } => {
            Some(1)
        }
        Proposal::DeleteRange(delete) => delete.range.is_single().then_some(1),
        Proposal::Txn(txn) => txn_quick_ops(txn),
        _ => None,
    }
}

/// As [`quick_ops`], for a transaction: its compares and the operations of both branches,
/// nested transactions included, since either branch may run.
fn txn_quick_ops(txn: &TxnRequest) -> Option<usize> {
    if !txn.compare.iter().all(|compare| compare.range.is_single()) {
        return None;
    }
    let mut ops = txn.compare.len();
    for op in txn.success.iter().chain(&txn.failure) {
        ops += match op {
            RequestOp::Range(range) => range.range.is_single().then_some(1)?,
            RequestOp::Put(_) => 1,
            RequestOp::DeleteRange(delete) => delete.range.is_single().then_some(1)?,
            RequestOp::Txn(nested) => txn_quick_ops(nested)?,
        };
    }
    Some(ops)
}

impl Applier {
    /// The body of both ways to apply: runs `entries` in `txn`, taking each proposal from
    /// `decode` (given its payload), and commits.
    fn apply_in(
        &self,
        mut txn: WriteTxn<'_>,
        entries: &[CommittedEntry],
        mut decode: impl FnMut(&Bytes) -> Result<(Proposal, Option<AuthStamp>), ApplyError>,
    ) -> io::Result<Vec<Bytes>> {
        let Some(last) = entries.last() else {
            return Ok(Vec::new());
        };
        let mut responses = Vec::new();
        let mut membership = None;
        for entry in entries {
            match &entry.data {
                CommittedData::Blank => {}
                CommittedData::Membership(blob) => membership = Some(blob.clone()),
                CommittedData::Normal(bytes) => {
                    let outcome = decode(bytes).and_then(|(proposal, stamp)| {
                        let outcome = self.apply_proposal(&mut txn, &proposal, stamp.as_ref());
                        log_applied(&proposal, &outcome, entry.position);
                        outcome
                    });
                    // An entry this member cannot decode, or a storage failure, must not be
                    // skipped while the applied position moves past it: this member's state
                    // would then differ from the others'. The batch is dropped and the member
                    // stops; it re-applies from the log once the cause is fixed.
                    if let Err(ApplyError::Internal(reason)) = &outcome {
                        tracing::error!(index = entry.position.index, %reason, "entry cannot be applied; stopping");
                        drop(txn);
                        return Err(io::Error::other(format!(
                            "raft entry {} cannot be applied: {reason}",
                            entry.position.index
                        )));
                    }
                    responses.push(codec::encode_outcome(outcome));
                }
            }
        }
        txn.put_raw(Cf::Meta, META_APPLIED, &encode_position(last.position));
        if let Some(blob) = membership {
            txn.put_raw(Cf::Meta, META_MEMBERSHIP, &blob);
        }
        let committed = txn.commit().map_err(io::Error::other)?;
        // Published before any proposer hears back, so a client that saw its write
        // acknowledged and then creates a watch from "now" starts after that write.
        self.watch.publish(&committed);
        self.applied_index
            .store(last.position.index, Ordering::Release);
        Ok(responses)
    }
}

impl StateMachineHost for Applier {
    fn applied_state(&self) -> io::Result<AppliedState> {
        read_applied_state(self.store())
    }

    fn apply(&self, entries: &[CommittedEntry]) -> io::Result<Vec<Bytes>> {
        let txn = self.store().write();
        self.apply_in(txn, entries, |bytes| {
            codec::decode_entry(bytes).map(|(_id, proposal, stamp)| (proposal, stamp))
        })
    }

    fn try_apply_quick(&self, entries: &[CommittedEntry]) -> Option<io::Result<Vec<Bytes>>> {
        if entries.len() > APPLY_QUICK_ENTRIES_MAX {
            return None;
        }
        let mut payload_bytes = 0;
        let mut ops = 0;
        let mut decoded = Vec::with_capacity(entries.len());
        for entry in entries {
            if let CommittedData::Normal(bytes) = &entry.data {
                payload_bytes += bytes.len();
                if payload_bytes > APPLY_QUICK_BYTES_MAX {
                    return None;
                }
                // An entry that does not decode takes the slow way, which reports it.
                let (_id, proposal, stamp) = codec::decode_entry(bytes).ok()?;
                ops += quick_ops(&proposal, stamp.as_ref(), |id| {
                    self.lessor.key_count(id).unwrap_or(0)
                })?;
                if ops > APPLY_QUICK_OPS_MAX {
                    return None;
                }
                decoded.push((proposal, stamp));
            }
        }
        // A snapshot being taken holds the writer, and a write RocksDB would hold back sleeps:
        // neither may stall an async worker.
        if self.store().backend().writes_may_wait() {
            return None;
        }
        let txn = self.store().try_write()?;
        let mut decoded = decoded.into_iter();
        Some(self.apply_in(txn, entries, |_bytes| {
            decoded.next().ok_or_else(|| {
                ApplyError::Internal("quick apply decoded fewer entries than it applies".into())
            })
        }))
    }

    fn checkpoint(&self, target: &Path) -> io::Result<AppliedState> {
        // Holding the writer's place keeps apply out while the copy is taken, so the applied
        // position read here is the one the copy holds.
        let writer = self.store().write();
        let state = read_applied_state(self.store())?;
        self.store()
            .backend()
            .checkpoint(target)
            .map_err(io::Error::other)?;
        drop(writer);
        Ok(state)
    }

    fn install(&self, source: &Path) -> io::Result<()> {
        // A checkpoint whose applied position does not decode would leave Raft unable to
        // restart from it: refuse it before anything is switched.
        let installed = self.db.install(source, read_applied_state)?;
        self.lessor.load(self.store()).map_err(io::Error::other)?;
        self.alarms.load(self.store()).map_err(io::Error::other)?;
        self.auth.load(self.store()).map_err(io::Error::other)?;
        // No apply runs during an install (the Raft state machine calls one at a time), so
        // nothing can store an older index after this.
        self.applied_index
            .store(applied_index_of(&installed), Ordering::Release);
        self.watch.restore();
        Ok(())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod alarm_tests;

#[cfg(test)]
mod auth_tests;

#[cfg(test)]
mod quick_tests;
