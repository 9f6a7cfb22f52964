//! The MVCC store: the committed key index, the revision counters, committed reads and
//! the hash of history.
//!
//! Owns: [`MvccStore`] and its two locks, recovery of the index from the `kv` column family
//! on open, the swap to a whole new state ([`MvccStore::replace`]), and the `mvcc/` keys of
//! the `meta` column family.
//! Must not: change state outside [`WriteTxn::commit`] and [`MvccStore::replace`]; read the
//! clock; spawn; block on anything but its own locks and RocksDB; know where its database
//! lives on disk (`storage::member_db` does).
//!
//! Lock order: `writer` (held by a [`WriteTxn`] for its whole life) before `state`. Readers
//! take only `state`, shared, and never while holding `writer`.
//!
//! The backend lives inside `state`, next to the index it matches. A reader takes the state
//! lock once, clones the backend handle and index results under it, and finishes with that
//! handle: after a [`MvccStore::replace`] it completes on the old database (kept open until
//! the last handle drops) and never pairs the old index with the new database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::storage::backend::{Backend, BackendError, BackendSnapshot, Cf};
use crate::types::{
    Event, LeaseId, RangeRequest, RangeResponse, Revision, TxnRequest, TxnResponse,
};

use super::codec::decode_key_value;
use super::error::MvccError;
use super::index::{Index, PendingIndex, layered_range};
use super::key_index::{KeyIndex, VisibleVersion};
use super::read::{
    check_read_revision, check_row, collect, finish_range, plan_range, read_only_txn,
};
use super::revision::{RowKey, RowKind, main_revision_bound};
use super::write::WriteTxn;

/// Prefix of every `meta` key the MVCC store owns; [`WriteTxn::put_raw`] refuses it.
pub const RESERVED_META_PREFIX: &[u8] = b"mvcc/";

/// `meta` key holding the compact revision (8 bytes, big-endian). It is written in the same
/// batch as the compaction's row deletions, so the two can never disagree after a crash.
pub const COMPACT_REVISION_KEY: &[u8] = b"mvcc/compact_revision";

/// How the store asks whether a lease exists. The lease layer owns leases; apply implements
/// this so the store never depends on the lessor.
pub trait LeaseLookup {
    /// True when the lease `id` is currently granted.
    fn lease_exists(&self, id: LeaseId) -> bool;
}

impl<F> LeaseLookup for F
where
    F: Fn(LeaseId) -> bool,
{
    fn lease_exists(&self, id: LeaseId) -> bool {
        self(id)
    }
}

/// The hash of history in `(compact_revision, hash_revision]`, for comparing members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashKv {
    /// CRC-32 (IEEE) over the encoded row keys and row values, in revision order.
    pub hash: u32,
    /// The compact revision when the hash was taken.
    pub compact_revision: Revision,
    /// The last revision included.
    pub hash_revision: Revision,
}

/// What a committed write batch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The current revision after the batch.
    pub revision: Revision,
    /// Every key change of the batch, in revision order (sub-revision order inside a txn).
    /// Each event carries `prev_kv`: the version the change replaced, or `None` when a put
    /// created the key; or, while [`MvccStore::set_put_prev_kv`] is off, `None` for every
    /// put that did not ask for it (`version > 1` tells that one replaced a version).
    pub events: Vec<Event>,
}

/// The committed state behind [`MvccStore::state`].
pub(super) struct CommittedState {
    /// The database the index describes. Replaced only by [`MvccStore::replace`], which
    /// holds `writer`, so a [`WriteTxn`] may keep the handle it started with.
    pub backend: Arc<Backend>,
    /// Every key with history left after compaction.
    pub index: Index,
    /// The revision of the last change (1 in a new store).
    pub current_revision: Revision,
    /// The last compaction's revision (0 when never compacted).
    pub compact_revision: Revision,
}

/// The multi-version key space: every version of every key since the compact revision.
///
/// Reads ([`MvccStore::range`], [`MvccStore::read_txn`], [`MvccStore::hash_kv`]) see only
/// committed state and run concurrently with each other and with an open [`WriteTxn`].
/// Writes go through [`MvccStore::write`], one batch at a time. All methods block (locks,
/// RocksDB), so async callers run them on blocking threads; the exception is a small batch
/// started with [`MvccStore::try_write`], which its caller has judged short.
pub struct MvccStore {
    /// Committed backend, index and revisions. Shared by readers; exclusive only inside
    /// `WriteTxn::commit` and `replace`, which also hold `writer`. Second in the lock order.
    pub(super) state: RwLock<CommittedState>,
    /// One writer at a time: held by each `WriteTxn` from `write()` to commit or drop, and
    /// by `replace`. First in the lock order.
    pub(super) writer: Mutex<()>,
    /// Whether a put's event carries the version it replaced. See
    /// [`MvccStore::set_put_prev_kv`].
    put_prev_kv: AtomicBool,
}

impl std::fmt::Debug for MvccStore {
    /// Revisions only: the index can hold millions of keys.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.read();
        formatter
            .debug_struct("MvccStore")
            .field("path", &state.backend.path())
            .field("current_revision", &state.current_revision)
            .field("compact_revision", &state.compact_revision)
            .field("keys", &state.index.len())
            .finish_non_exhaustive()
    }
}

impl MvccStore {
    /// Opens the store on `backend`, rebuilding the key index from the history rows and
    /// reading the compact revision.
    ///
    /// # Errors
    /// [`MvccError::Backend`] on a read failure, [`MvccError::Corrupt`] when stored history
    /// cannot be decoded or is inconsistent.
    pub fn open(backend: Arc<Backend>) -> Result<MvccStore, MvccError> {
        let compact_revision = match backend.get(Cf::Meta, COMPACT_REVISION_KEY)? {
            None => 0,
            Some(bytes) => {
                let bytes: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                    MvccError::Corrupt(format!("compact revision has {} bytes", bytes.len()))
                })?;
                i64::from_be_bytes(bytes)
            }
        };
        if compact_revision < 0 {
            return Err(MvccError::Corrupt(format!(
                "negative compact revision {compact_revision}"
            )));
        }

        let mut index = Index::new();
        let mut last_main: Revision = 0;
        for item in backend.scan(Cf::Kv, &[], None) {
            let (encoded_key, encoded_value) = item?;
            let row_key = RowKey::decode(&encoded_key)?;
            let kv = decode_key_value(&Bytes::from(encoded_value.into_vec()))?;
            if kv.mod_revision != row_key.revision.main || kv.key.is_empty() {
                return Err(MvccError::Corrupt(format!(
                    "row {row_key:?} holds key {:?} with mod revision {}",
                    kv.key, kv.mod_revision
                )));
            }
            let restore = |key_index: &mut KeyIndex| {
                let restored = match row_key.kind {
                    RowKind::Put => {
                        key_index.restore_put(row_key.revision, kv.create_revision, kv.version)
                    }
                    RowKind::Tombstone => key_index.restore_tombstone(row_key.revision),
                };
                restored
                    .map_err(|message| MvccError::Corrupt(format!("key {:?}: {message}", kv.key)))
            };
            if let Some(key_index) = index.get_mut(kv.key.as_ref()) {
                restore(key_index)?;
            } else {
                let mut key_index = KeyIndex::default();
                restore(&mut key_index)?;
                // A fresh copy: `kv.key` shares its buffer with the whole row value.
                index.insert(Bytes::copy_from_slice(&kv.key), key_index);
            }
            last_main = row_key.revision.main;
        }

        // A compaction may remove the newest rows (a tombstone at the compact revision), so
        // the compact revision also bounds the current one from below.
        let current_revision = last_main.max(compact_revision).max(1);
        let state = CommittedState {
            backend,
            index,
            current_revision,
            compact_revision,
        };
        Ok(MvccStore {
            state: RwLock::new(state),
            writer: Mutex::new(()),
            put_prev_kv: AtomicBool::new(true),
        })
    }

    /// Whether a put's event carries `prev_kv`, the version it replaced (on when opened).
    /// Reading that version back is a large share of a put's cost once it has left the
    /// memtable, and only a watcher that asked for `prev_kv` uses it (leases track their keys
    /// themselves), so the watch hub turns this off while no such watcher exists. A put that changes an
    /// existing key then reports `prev_kv: None` with `version > 1`, which a consumer must
    /// read as "not loaded" (history has it). A put that asks for `prev_kv` in its response,
    /// or ignores its value or lease, still reads it.
    pub fn set_put_prev_kv(&self, on: bool) {
        self.put_prev_kv.store(on, Ordering::Release);
    }

    /// See [`MvccStore::set_put_prev_kv`].
    #[must_use]
    pub fn put_prev_kv(&self) -> bool {
        self.put_prev_kv.load(Ordering::Acquire)
    }

    /// The backend the store currently writes to. After a [`MvccStore::replace`] a handle
    /// taken before still reads the old database; take a new one for the new state.
    #[must_use]
    pub fn backend(&self) -> Arc<Backend> {
        Arc::clone(&self.state.read().backend)
    }

    /// Replaces the whole state (backend, key index and revisions) with `replacement`'s,
    /// which is consumed. Returns the backend that was replaced; it stays open while
    /// readers that started before the swap hold it.
    ///
    /// `switch` runs first, with writers excluded and readers still served the old state:
    /// it is where the caller makes the replacement durable (flips the pointer to its
    /// directory). When it fails nothing is swapped and its error is returned.
    ///
    /// Revisions are taken as they are in `replacement`; they may be lower than ours, since
    /// the new state is a different history rather than a continuation of this one.
    ///
    /// # Errors
    /// Whatever `switch` returns.
    pub fn replace<E>(
        &self,
        replacement: MvccStore,
        switch: impl FnOnce() -> Result<(), E>,
    ) -> Result<Arc<Backend>, E> {
        let replacement = replacement.state.into_inner();
        let writer = self.writer.lock();
        // The backend cannot change while `writer` is held, so this holds through the swap.
        assert!(
            !Arc::ptr_eq(&self.state.read().backend, &replacement.backend),
            "a store cannot be replaced with its own backend"
        );
        switch()?;
        let replaced = {
            let mut state = self.state.write();
            std::mem::replace(&mut *state, replacement)
        };
        drop(writer);
        Ok(replaced.backend)
    }

    /// The last committed revision (1 in a new store).
    #[must_use]
    pub fn current_revision(&self) -> Revision {
        self.state.read().current_revision
    }

    /// The last committed compaction's revision (0 when never compacted).
    #[must_use]
    pub fn compact_revision(&self) -> Revision {
        self.state.read().compact_revision
    }

    /// Reads a key range from committed state, with etcd's Range semantics.
    ///
    /// # Errors
    /// [`MvccError::FutureRevision`] / [`MvccError::Compacted`] for an unreadable revision;
    /// fatal errors on backend failure or corruption.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.range_with_revision(request)
            .map(|(response, _)| response)
    }

    /// As [`MvccStore::range`], also returning the store revision the read saw, which is what
    /// the response header must carry (a revision read separately could be newer than the
    /// data, and a client watching from it would miss events).
    ///
    /// # Errors
    /// As [`MvccStore::range`].
    pub fn range_with_revision(
        &self,
        request: &RangeRequest,
    ) -> Result<(RangeResponse, Revision), MvccError> {
        let no_pending = PendingIndex::new();
        // The backend the index below describes, kept for loading rows after the lock goes.
        let backend: Arc<Backend>;
        let (plan, collected, snapshot, revision) = {
            let state = self.state.read();
            let plan = plan_range(request, state.current_revision, state.compact_revision)?;
            let collected = collect(
                layered_range(&state.index, &no_pending, &request.range),
                &plan,
            );
            backend = Arc::clone(&state.backend);
            // Taken under the lock, so it holds every row the collected versions point at,
            // even if a compaction commits before the rows are loaded.
            (plan, collected, backend.snapshot(), state.current_revision)
        };
        let response = finish_range(request, &plan, collected, |key, version| {
            load_row(|row_key| snapshot.get(Cf::Kv, row_key), key, version)
        })?;
        Ok((response, revision))
    }

    /// Runs a txn without writes (see [`TxnRequest::is_read_only`]) on committed state,
    /// without going through a write batch: etcd serves such txns without Raft. Compares and
    /// ranges all see one revision. Returns the response and the header revision (current).
    ///
    /// # Errors
    /// As [`WriteTxn::txn`] for ranges at future or compacted revisions; fatal errors.
    ///
    /// # Panics
    /// When `request` contains a put or a delete.
    pub fn read_txn(&self, request: &TxnRequest) -> Result<(TxnResponse, Revision), MvccError> {
        assert!(
            request.is_read_only(),
            "read_txn needs a txn without writes"
        );
        let no_pending = PendingIndex::new();
        // Held for the whole txn so every compare and range sees the same revision; it also
        // keeps compactions from committing, so rows can be read without a snapshot.
        let state = self.state.read();
        let mut load = |key: &Bytes, version: &VisibleVersion| {
            load_row(|row_key| state.backend.get(Cf::Kv, row_key), key, version)
        };
        let response = read_only_txn(
            request,
            &state.index,
            &no_pending,
            state.current_revision,
            state.compact_revision,
            &mut load,
        )?;
        Ok((response, state.current_revision))
    }

    /// Hashes committed history in `(compact revision, revision]`; `revision <= 0` means the
    /// current revision. Members with equal histories get equal hashes.
    ///
    /// # Errors
    /// [`MvccError::FutureRevision`] / [`MvccError::Compacted`] as for [`MvccStore::range`];
    /// fatal errors on backend failure.
    pub fn hash_kv(&self, revision: Revision) -> Result<HashKv, MvccError> {
        // As in `range_with_revision`: the backend that matches the revisions read.
        let backend: Arc<Backend>;
        let (snapshot, hash_revision, compact_revision) = {
            let state = self.state.read();
            let hash_revision =
                check_read_revision(revision, state.current_revision, state.compact_revision)?;
            backend = Arc::clone(&state.backend);
            (backend.snapshot(), hash_revision, state.compact_revision)
        };
        let from = main_revision_bound(compact_revision + 1);
        let to = main_revision_bound(hash_revision + 1);
        let mut hasher = crc32fast::Hasher::new();
        for item in snapshot.scan(Cf::Kv, &from, Some(&to)) {
            let (row_key, row_value) = item?;
            hasher.update(&row_key);
            hasher.update(&row_value);
        }
        Ok(HashKv {
            hash: hasher.finalize(),
            compact_revision,
            hash_revision,
        })
    }

    /// CRC-32 of the whole database (every column family) and the revision it was taken at,
    /// for Maintenance.Hash.
    ///
    /// # Errors
    /// A backend read failure.
    pub fn hash_all(&self) -> Result<(u32, Revision), MvccError> {
        self.read_consistent(|snapshot, revision, _| Ok((snapshot.hash_all()?, revision)))
    }

    /// Runs `read` over one point-in-time view of every column family together with the
    /// current and compact revisions that view holds: the view is taken under the state lock,
    /// and commits write the backend under that lock too, so the three always agree. The
    /// lock is released before `read` runs; the view alone keeps the rows (RocksDB pins what
    /// a snapshot can see), so a long `read` (a whole-store dump) never holds up writers.
    pub fn read_consistent<T>(
        &self,
        read: impl FnOnce(&BackendSnapshot<'_>, Revision, Revision) -> T,
    ) -> T {
        // As in `range_with_revision`: the backend that matches the revisions read.
        let backend: Arc<Backend>;
        let (snapshot, current_revision, compact_revision) = {
            let state = self.state.read();
            backend = Arc::clone(&state.backend);
            (
                backend.snapshot(),
                state.current_revision,
                state.compact_revision,
            )
        };
        read(&snapshot, current_revision, compact_revision)
    }

    /// Starts a write batch. Blocks while another batch is open.
    #[must_use]
    pub fn write(&self) -> WriteTxn<'_> {
        WriteTxn::begin(self)
    }

    /// Starts a write batch if no other is open; `None` at once otherwise, for callers that
    /// must not wait (an async worker).
    #[must_use]
    pub fn try_write(&self) -> Option<WriteTxn<'_>> {
        WriteTxn::try_begin(self)
    }
}

/// Loads and checks the committed row of `version` through `get` (a backend or snapshot read
/// of the `kv` column family).
pub(super) fn load_row(
    get: impl FnOnce(&[u8]) -> Result<Option<Vec<u8>>, BackendError>,
    key: &Bytes,
    version: &VisibleVersion,
) -> Result<crate::types::KeyValue, MvccError> {
    let row_key = RowKey::put(version.revision).encode();
    let Some(bytes) = get(&row_key)? else {
        return Err(MvccError::Corrupt(format!(
            "history row {:?} of key {key:?} is missing",
            version.revision
        )));
    };
    check_row(key, version, decode_key_value(&Bytes::from(bytes))?)
}
