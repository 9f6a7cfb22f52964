//! Leases: the replicated table of granted leases and the keys attached to them, and the
//! leader's timers that decide when one expires.
//!
//! Two kinds of state live here, kept apart on purpose:
//! - the *table* (id, granted TTL, checkpointed remaining TTL, attached keys) changes only
//!   when apply hands it a committed grant, revoke, checkpoint or key change, so it is the
//!   same on every member; it is stored in the `lease` column family in apply's batch;
//! - the *deadlines* are local and volatile. Every member keeps one per lease (set at grant,
//!   checkpoint and renewal, from this member's clock), but only the leader acts on them:
//!   it renews on keepalive and proposes the revoke of an expired lease. Renewals are not
//!   replicated (as in etcd): the leader answers one only after a quorum confirmed, in a
//!   round that started after the renewal, that it still leads. So every renewal a client
//!   was told about happened before any later leader took over, and a member that becomes
//!   leader gives every lease its full TTL (or its checkpointed remaining TTL) from the
//!   takeover, and at least one election timeout, so clients have time to find it before
//!   anything expires. A checkpointed remaining TTL would cut a renewed lease short at the
//!   next leader, so renewing such a lease first clears its checkpoint through Raft.
//! - *checkpoints* (opt-in, etcd's lease checkpointing): the leader records long leases'
//!   remaining TTLs in the table once per interval, so a failover does not restart them at
//!   their full TTL. A lease whose checkpoint is proposed but not yet applied counts as
//!   checkpointed, so a renewal in between still clears it.
//!
//! Deadlines come from a [`Clock`], which tests replace. Nothing read from the clock flows
//! into an apply result, so apply stays deterministic. This module must not propose, await
//! or touch RocksDB beyond reading the table at load; the server drives it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::storage::backend::Cf;
use crate::storage::mvcc::{LeaseLookup, MvccError, MvccStore};
use crate::types::{Event, EventType, KeyRange, LeaseId, RangeRequest};

/// A source of "now" for lease deadlines.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The process's monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to, for tests.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> ManualClock {
        ManualClock {
            start: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        }
    }
}

impl ManualClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock()
    }
}

/// What TimeToLive reports about a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseStatus {
    /// Whole seconds left (truncated), as the leader's timer sees it.
    pub remaining: i64,
    /// The TTL it was granted with.
    pub granted: i64,
    /// Attached keys, in key order.
    pub keys: Vec<Bytes>,
}

#[derive(Debug)]
struct Lease {
    /// Granted TTL in seconds.
    ttl: i64,
    /// Remaining TTL in seconds at the last checkpoint; 0 when none holds (the full TTL
    /// applies). Replicated.
    remaining: i64,
    keys: BTreeSet<Bytes>,
    /// When it expires by this member's clock. Volatile.
    deadline: Instant,
    /// When this leader last proposed its revoke, so it is proposed once per interval.
    revoking: Option<Instant>,
    /// When the lease last got a fresh deadline (grant, renewal, promotion) or a checkpoint
    /// was proposed for it; the next checkpoint is due an interval later. Volatile.
    checkpoint_base: Instant,
    /// A checkpoint of it was proposed and has not been applied (it may still commit).
    /// Volatile.
    checkpoint_pending: bool,
}

#[derive(Debug, Default)]
struct Table {
    leases: BTreeMap<LeaseId, Lease>,
    /// The lease each attached key belongs to: the inverse of the leases' key sets, so a
    /// put that moves a key learns its old lease without reading the replaced row.
    attached: HashMap<Bytes, LeaseId>,
    /// The term in which this member leads with authoritative deadlines; `None` when it
    /// does not. Tied to a term, so a member deposed and elected again between two looks
    /// is promoted afresh rather than trusting deadlines from before another leader.
    primary: Option<u64>,
}

/// The member's leases.
pub struct Lessor {
    table: Mutex<Table>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Lessor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.table.lock();
        formatter
            .debug_struct("Lessor")
            .field("leases", &table.leases.len())
            .field("primary", &table.primary)
            .finish()
    }
}

/// Encodes a lease row of the `lease` column family: granted TTL then checkpointed
/// remaining TTL, both big-endian i64.
fn encode_row(ttl: i64, remaining: i64) -> [u8; 16] {
    let mut row = [0u8; 16];
    row[..8].copy_from_slice(&ttl.to_be_bytes());
    row[8..].copy_from_slice(&remaining.to_be_bytes());
    row
}

fn decode_row(key: &[u8], value: &[u8]) -> Result<(LeaseId, i64, i64), MvccError> {
    let corrupt = || MvccError::Corrupt(format!("lease row {key:02x?} is malformed"));
    let id: [u8; 8] = key.try_into().map_err(|_| corrupt())?;
    let value: [u8; 16] = value.try_into().map_err(|_| corrupt())?;
    let mut ttl = [0u8; 8];
    let mut remaining = [0u8; 8];
    ttl.copy_from_slice(&value[..8]);
    remaining.copy_from_slice(&value[8..]);
    Ok((
        LeaseId::from_be_bytes(id),
        i64::from_be_bytes(ttl),
        i64::from_be_bytes(remaining),
    ))
}

/// The row key of lease `id`.
pub fn row_key(id: LeaseId) -> [u8; 8] {
    id.to_be_bytes()
}

/// A renewal the leader made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// The granted TTL, which the lease now has again.
    pub ttl: i64,
    /// The lease carries a checkpointed remaining TTL, which the caller must clear through
    /// Raft before answering: a next leader would start from it instead of the full TTL.
    pub checkpointed: bool,
}

/// A seconds count as a duration (negative counts as zero).
fn seconds(count: i64) -> Duration {
    Duration::from_secs(u64::try_from(count).unwrap_or(0))
}

/// The remaining TTL to checkpoint for `lease` at `now`, if one is due (see
/// [`Lessor::checkpoints_due`]).
fn checkpoint_due(lease: &Lease, now: Instant, interval: Duration) -> Option<i64> {
    let left = lease.deadline.saturating_duration_since(now);
    let left_secs =
        i64::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0)).unwrap_or(i64::MAX);
    (now.saturating_duration_since(lease.checkpoint_base) >= interval
        && left > interval
        && left_secs < lease.ttl)
        .then_some(left_secs)
}

/// Seconds a lease has left by the replicated table alone: its checkpointed remaining TTL,
/// or its granted TTL when no checkpoint holds.
fn left_after_checkpoint(ttl: i64, remaining: i64) -> i64 {
    if remaining > 0 { remaining } else { ttl }
}

impl Lessor {
    /// An empty lessor reading deadlines from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Lessor {
        Lessor {
            table: Mutex::new(Table::default()),
            clock,
        }
    }

    /// Replaces the table with what `store` holds: the lease rows, and the attachments of
    /// every live key. Deadlines start from now (a restarted or newly installed member
    /// knows no better).
    ///
    /// # Errors
    /// Backend failures and malformed rows.
    pub fn load(&self, store: &MvccStore) -> Result<(), MvccError> {
        let now = self.clock.now();
        let mut leases = BTreeMap::new();
        let backend = store.backend();
        for item in backend.scan(Cf::Lease, &[], None) {
            let (key, value) = item?;
            let (id, ttl, remaining) = decode_row(&key, &value)?;
            let left = left_after_checkpoint(ttl, remaining);
            leases.insert(
                id,
                Lease {
                    ttl,
                    remaining,
                    keys: BTreeSet::new(),
                    deadline: now + seconds(left),
                    revoking: None,
                    checkpoint_base: now,
                    checkpoint_pending: false,
                },
            );
        }
        let everything = RangeRequest {
            range: KeyRange::prefix(""),
            keys_only: true,
            ..RangeRequest::default()
        };
        let mut attached = HashMap::new();
        for kv in store.range(&everything)?.kvs {
            if let Some(lease) = leases.get_mut(&kv.lease) {
                attached.insert(kv.key.clone(), kv.lease);
                lease.keys.insert(kv.key);
            }
        }
        // Deadlines restarted from now: a member that leads must promote again.
        *self.table.lock() = Table {
            leases,
            attached,
            primary: None,
        };
        Ok(())
    }

    /// Applies a committed grant. Returns the row to store, or `None` when the id is taken.
    pub fn grant(&self, id: LeaseId, ttl: i64) -> Option<[u8; 16]> {
        let now = self.clock.now();
        let mut table = self.table.lock();
        if table.leases.contains_key(&id) {
            return None;
        }
        table.leases.insert(
            id,
            Lease {
                ttl,
                remaining: 0,
                keys: BTreeSet::new(),
                deadline: now + seconds(ttl),
                revoking: None,
                checkpoint_base: now,
                checkpoint_pending: false,
            },
        );
        crate::metrics::get().lease_granted.inc();
        Some(encode_row(ttl, 0))
    }

    /// Applies a committed revoke: forgets the lease and returns its keys (to delete in
    /// the same batch), or `None` for an unknown lease.
    pub fn revoke(&self, id: LeaseId) -> Option<Vec<Bytes>> {
        let mut table = self.table.lock();
        let lease = table.leases.remove(&id)?;
        for key in &lease.keys {
            table.attached.remove(key);
        }
        drop(table);
        crate::metrics::get().lease_revoked.inc();
        Some(lease.keys.into_iter().collect())
    }

    /// Applies a committed checkpoint of remaining TTLs (0 clears a lease's checkpoint: its
    /// full TTL applies again); returns the rows to store.
    pub fn checkpoint(&self, remaining: &[(LeaseId, i64)]) -> Vec<(LeaseId, [u8; 16])> {
        let now = self.clock.now();
        let mut table = self.table.lock();
        let primary = table.primary.is_some();
        let mut rows = Vec::new();
        for (id, left) in remaining {
            if let Some(lease) = table.leases.get_mut(id) {
                lease.remaining = (*left).max(0);
                lease.checkpoint_pending = false;
                let promised = now + seconds(left_after_checkpoint(lease.ttl, lease.remaining));
                if !primary {
                    // A follower takes the checkpoint as its best knowledge of when the lease
                    // ends.
                    lease.deadline = promised;
                } else if lease.remaining == 0 {
                    // A cleared checkpoint comes with this leader's own renewal (clears are
                    // never forwarded either), which set the deadline already; the full TTL
                    // from now is never less than it promised.
                    lease.deadline = lease.deadline.max(promised);
                }
                // A remaining TTL on the leader is its own checkpoint (they are never
                // forwarded, and the server promotes only once everything committed before
                // the takeover is applied), taken from this very deadline: applying it must
                // not stretch the lease.
                rows.push((*id, encode_row(lease.ttl, lease.remaining)));
            }
        }
        rows
    }

    /// Follows committed key changes: a put attaches its key to its lease (and detaches it
    /// from the lease it had), a delete detaches it. Uses only each event's `kv`, never its
    /// `prev_kv`, which a put may leave unloaded.
    pub fn observe(&self, events: &[Event]) {
        let mut guard = self.table.lock();
        let table = &mut *guard;
        for event in events {
            let key = &event.kv.key;
            let now = match event.kind {
                EventType::Put => event.kv.lease,
                EventType::Delete => 0,
            };
            let before = table.attached.get(key).copied().unwrap_or(0);
            if before == now {
                continue;
            }
            if before != 0 {
                table.attached.remove(key);
                if let Some(lease) = table.leases.get_mut(&before) {
                    lease.keys.remove(key);
                }
            }
            if now != 0
                && let Some(lease) = table.leases.get_mut(&now)
            {
                // A fresh copy: an applied key may share its buffer with a whole Raft entry.
                let key = Bytes::copy_from_slice(key);
                table.attached.insert(key.clone(), now);
                lease.keys.insert(key);
            }
        }
    }

    /// How many keys are attached to lease `id`, if it is granted.
    pub fn key_count(&self, id: LeaseId) -> Option<usize> {
        self.table
            .lock()
            .leases
            .get(&id)
            .map(|lease| lease.keys.len())
    }

    /// Granted lease ids, the one this member expects to expire first first (ties by id).
    // etcd-compat: etcd 3.4's lessor sorts Leases by expiry, so `etcdctl lease list` prints
    // the soonest first.
    pub fn ids(&self) -> Vec<LeaseId> {
        let table = self.table.lock();
        let mut by_deadline: Vec<(Instant, LeaseId)> = table
            .leases
            .iter()
            .map(|(id, lease)| (lease.deadline, *id))
            .collect();
        by_deadline.sort_unstable();
        by_deadline.into_iter().map(|(_, id)| id).collect()
    }

    /// This member's timers became authoritative (it leads): every lease gets its full TTL
    /// (or its checkpointed remaining TTL) from now, and at least `extend`. Renewals are not
    /// replicated, so this member cannot know a lease's last one; every renewal a client was
    /// told about happened before this takeover (see the module header), so a full TTL from
    /// now outlasts it.
    /// The caller promotes only once it has applied everything committed before its
    /// takeover in `term`.
    pub fn promote(&self, extend: Duration, term: u64) {
        let now = self.clock.now();
        let mut table = self.table.lock();
        table.primary = Some(term);
        for lease in table.leases.values_mut() {
            let left = seconds(left_after_checkpoint(lease.ttl, lease.remaining));
            lease.deadline = lease.deadline.max(now + left.max(extend));
            lease.revoking = None;
            lease.checkpoint_base = now;
            // Whatever this member proposed while it led before has been applied or dropped
            // by now (see above).
            lease.checkpoint_pending = false;
        }
    }

    /// This member no longer leads.
    pub fn demote(&self) {
        self.table.lock().primary = None;
    }

    /// The term in which this member's timers are authoritative, if any.
    pub fn primary_term(&self) -> Option<u64> {
        self.table.lock().primary
    }

    /// Renews a lease on the leader: its deadline moves to a full TTL from now. Returns
    /// `None` when the lease is unknown or already expired (its revoke is on its way). The
    /// caller confirms its leadership (and clears a checkpoint the renewal reports) before
    /// telling the client.
    pub fn renew(&self, id: LeaseId) -> Option<Renewal> {
        let now = self.clock.now();
        let mut table = self.table.lock();
        let lease = table.leases.get_mut(&id)?;
        if lease.deadline <= now {
            return None;
        }
        lease.deadline = now + seconds(lease.ttl);
        lease.checkpoint_base = now;
        crate::metrics::get().lease_renewed.inc();
        Some(Renewal {
            ttl: lease.ttl,
            checkpointed: lease.remaining != 0 || lease.checkpoint_pending,
        })
    }

    /// Checkpoints due on the leader (at most `max`), marked as proposed: the remaining TTL
    /// (whole seconds, rounded up so a next leader never ends a lease early) of each lease
    /// whose last fresh deadline or checkpoint is `interval` old, that has more than
    /// `interval` left (a shorter one ends before a next round matters, as in etcd) and less
    /// than its full TTL. Empty unless this member leads, promoted in `term`.
    pub fn checkpoints_due(
        &self,
        interval: Duration,
        max: usize,
        term: u64,
    ) -> Vec<(LeaseId, i64)> {
        self.pick_as_primary(term, max, |lease, now| {
            let left = checkpoint_due(lease, now, interval)?;
            lease.checkpoint_base = now;
            lease.checkpoint_pending = true;
            Some(left)
        })
    }

    /// Whether [`Lessor::checkpoints_due`] would find any, without marking them: a round
    /// that has nothing to do need not hold up renewals.
    pub fn any_checkpoint_due(&self, interval: Duration, term: u64) -> bool {
        let now = self.clock.now();
        let table = self.table.lock();
        table.primary == Some(term)
            && table
                .leases
                .values()
                .any(|lease| checkpoint_due(lease, now, interval).is_some())
    }

    /// What TimeToLive reports, or `None` for an unknown lease.
    pub fn status(&self, id: LeaseId) -> Option<LeaseStatus> {
        let now = self.clock.now();
        let table = self.table.lock();
        let lease = table.leases.get(&id)?;
        let left = lease.deadline.saturating_duration_since(now).as_secs();
        Some(LeaseStatus {
            remaining: i64::try_from(left).unwrap_or(i64::MAX),
            granted: lease.ttl,
            keys: lease.keys.iter().cloned().collect(),
        })
    }

    /// Leases past their deadline whose revoke was not proposed within `retry` (at most
    /// `max`), marked as being revoked now. Empty unless this member leads, promoted in
    /// `term`.
    pub fn expired(&self, max: usize, retry: Duration, term: u64) -> Vec<LeaseId> {
        self.pick_as_primary(term, max, |lease, now| {
            let retry_due = lease
                .revoking
                .is_none_or(|proposed| now.saturating_duration_since(proposed) >= retry);
            (lease.deadline <= now && retry_due).then(|| lease.revoking = Some(now))
        })
        .into_iter()
        .map(|(id, ())| id)
        .collect()
    }

    /// Up to `max` leases, in id order, that `pick` selects (marking them as it likes) at
    /// this member's now, with what it returns; none unless this member is primary in
    /// `term`.
    fn pick_as_primary<T>(
        &self,
        term: u64,
        max: usize,
        mut pick: impl FnMut(&mut Lease, Instant) -> Option<T>,
    ) -> Vec<(LeaseId, T)> {
        let now = self.clock.now();
        let mut table = self.table.lock();
        if table.primary != Some(term) {
            return Vec::new();
        }
        let mut picked = Vec::new();
        for (id, lease) in &mut table.leases {
            if picked.len() >= max {
                break;
            }
            if let Some(value) = pick(lease, now) {
                picked.push((*id, value));
            }
        }
        picked
    }
}

#[cfg(feature = "bug-injection")]
impl Lessor {
    /// Injected bug `lease-expire-local`: leases past this member's own deadline whatever its
    /// role (at most `max`). A follower's deadline only follows the checkpoints it has applied,
    /// so a follower cut off from the leader, or paused, finds leases "expired" that the leader
    /// keeps renewing.
    pub fn expired_by_own_clock(&self, max: usize) -> Vec<LeaseId> {
        let now = self.clock.now();
        let table = self.table.lock();
        table
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, _)| *id)
            .take(max)
            .collect()
    }
}

impl LeaseLookup for Lessor {
    fn lease_exists(&self, id: LeaseId) -> bool {
        self.table.lock().leases.contains_key(&id)
    }
}

#[cfg(test)]
mod tests;
