//! Leases: the replicated table of granted leases and the keys attached to them, and the
//! leader's timers that decide when one expires.
//!
//! Two kinds of state live here, kept apart on purpose:
//! - the *table* (id, granted TTL, checkpointed remaining TTL, attached keys) changes only
//!   when apply hands it a committed grant, revoke, checkpoint or key change, so it is the
//!   same on every member; it is stored in the `lease` column family in apply's batch;
//! - the *deadlines* are local and volatile. Every member keeps one per lease (set at grant,
//!   checkpoint and renewal, from this member's clock), but only the leader acts on them:
//!   it renews on keepalive and proposes the revoke of an expired lease. A renewal is
//!   answered only once a checkpoint carrying its TTL has committed, so every renewal a
//!   client was told about is known to every member that could lead next: a follower's
//!   deadline (apply time + checkpointed TTL) is never earlier than the truth. A member that
//!   becomes leader extends every deadline to at least one election timeout ahead, so
//!   clients have time to find it before anything expires.
//!
//! Deadlines come from a [`Clock`], which tests replace. Nothing read from the clock flows
//! into an apply result, so apply stays deterministic. This module must not propose, await
//! or touch RocksDB beyond reading the table at load; the server drives it.

use std::collections::{BTreeMap, BTreeSet};
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
    /// Remaining TTL in seconds at the last checkpoint; 0 when none was taken since the
    /// grant (the full TTL applies). Replicated.
    remaining: i64,
    keys: BTreeSet<Bytes>,
    /// When it expires by this member's clock. Volatile.
    deadline: Instant,
    /// When this leader last proposed its revoke, so it is proposed once per interval.
    revoking: Option<Instant>,
}

#[derive(Debug, Default)]
struct Table {
    leases: BTreeMap<LeaseId, Lease>,
    /// This member leads and its deadlines are authoritative.
    primary: bool,
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

/// A seconds count as a duration (negative counts as zero).
fn seconds(count: i64) -> Duration {
    Duration::from_secs(u64::try_from(count).unwrap_or(0))
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
            let left = if remaining > 0 { remaining } else { ttl };
            leases.insert(
                id,
                Lease {
                    ttl,
                    remaining,
                    keys: BTreeSet::new(),
                    deadline: now + seconds(left),
                    revoking: None,
                },
            );
        }
        let everything = RangeRequest {
            range: KeyRange::prefix(""),
            keys_only: true,
            ..RangeRequest::default()
        };
        for kv in store.range(&everything)?.kvs {
            if let Some(lease) = leases.get_mut(&kv.lease) {
                lease.keys.insert(kv.key);
            }
        }
        let mut table = self.table.lock();
        let primary = table.primary;
        *table = Table { leases, primary };
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
            },
        );
        crate::metrics::get().lease_granted.inc();
        Some(encode_row(ttl, 0))
    }

    /// Applies a committed revoke: forgets the lease and returns its keys (to delete in
    /// the same batch), or `None` for an unknown lease.
    pub fn revoke(&self, id: LeaseId) -> Option<Vec<Bytes>> {
        let lease = self.table.lock().leases.remove(&id)?;
        crate::metrics::get().lease_revoked.inc();
        Some(lease.keys.into_iter().collect())
    }

    /// Applies a committed checkpoint of remaining TTLs; returns the rows to store.
    pub fn checkpoint(&self, remaining: &[(LeaseId, i64)]) -> Vec<(LeaseId, [u8; 16])> {
        let now = self.clock.now();
        let mut table = self.table.lock();
        let primary = table.primary;
        let mut rows = Vec::new();
        for (id, left) in remaining {
            if let Some(lease) = table.leases.get_mut(id) {
                lease.remaining = *left;
                // A follower takes the checkpoint as its best knowledge of when the lease
                // ends. The leader's own renewals already set its deadline; a committed
                // renewal it did not make (a deposed leader's, forwarded after it answered
                // its client) still binds it, so it never ends the lease earlier.
                let promised = now + seconds(*left);
                if primary {
                    lease.deadline = lease.deadline.max(promised);
                } else {
                    lease.deadline = promised;
                }
                rows.push((*id, encode_row(lease.ttl, lease.remaining)));
            }
        }
        rows
    }

    /// Follows committed key changes: a put attaches its key to its lease (and detaches it
    /// from the lease it had), a delete detaches it.
    pub fn observe(&self, events: &[Event]) {
        let mut table = self.table.lock();
        for event in events {
            if let Some(previous) = &event.prev_kv
                && previous.lease != 0
                && (event.kind == EventType::Delete || previous.lease != event.kv.lease)
                && let Some(lease) = table.leases.get_mut(&previous.lease)
            {
                lease.keys.remove(&event.kv.key);
            }
            if event.kind == EventType::Put
                && event.kv.lease != 0
                && let Some(lease) = table.leases.get_mut(&event.kv.lease)
            {
                lease.keys.insert(event.kv.key.clone());
            }
        }
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

    /// This member's timers became authoritative (it leads): every deadline is pushed to
    /// at least `extend` from now.
    pub fn promote(&self, extend: Duration) {
        let floor = self.clock.now() + extend;
        let mut table = self.table.lock();
        table.primary = true;
        for lease in table.leases.values_mut() {
            lease.deadline = lease.deadline.max(floor);
            lease.revoking = None;
        }
    }

    /// This member no longer leads.
    pub fn demote(&self) {
        self.table.lock().primary = false;
    }

    /// True while this member's timers are authoritative.
    pub fn is_primary(&self) -> bool {
        self.table.lock().primary
    }

    /// Renews a lease on the leader: its deadline moves to a full TTL from now. Returns the
    /// granted TTL, or `None` when the lease is unknown or already expired (its revoke is
    /// on its way). The caller checkpoints the TTL before telling the client.
    pub fn renew(&self, id: LeaseId) -> Option<i64> {
        let now = self.clock.now();
        let mut table = self.table.lock();
        let lease = table.leases.get_mut(&id)?;
        if lease.deadline <= now {
            return None;
        }
        lease.deadline = now + seconds(lease.ttl);
        crate::metrics::get().lease_renewed.inc();
        Some(lease.ttl)
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
    /// `max`), marked as being revoked now. Empty unless this member leads.
    pub fn expired(&self, max: usize, retry: Duration) -> Vec<LeaseId> {
        let now = self.clock.now();
        let mut table = self.table.lock();
        if !table.primary {
            return Vec::new();
        }
        let mut due = Vec::new();
        for (id, lease) in &mut table.leases {
            if due.len() >= max {
                break;
            }
            let retry_due = lease
                .revoking
                .is_none_or(|proposed| now.saturating_duration_since(proposed) >= retry);
            if lease.deadline <= now && retry_due {
                lease.revoking = Some(now);
                due.push(*id);
            }
        }
        due
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
