//! The write batch: a sequence of requests (one Raft batch) applied to the key space and
//! committed to RocksDB as one write.
//!
//! Owns: [`WriteTxn`], the execution of Put, DeleteRange, Txn and Compact, revision
//! assignment, and the commit that publishes a batch to readers.
//! Must not: be visible to readers before commit; leave any trace of a failed request or a
//! dropped batch; read the clock or any state outside the store and the given lease lookup.
//!
//! Every request gets the next revision if it changes at least one key; a Txn takes one
//! revision for all its changes, numbered by sub-revision. Each request runs inside a
//! `RequestScope` that can be rolled back, so a request returning an error leaves the batch
//! exactly as it was.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::MutexGuard;

use crate::storage::backend::{Backend, BackendBatch, Cf};
use crate::types::{
    DeleteRangeRequest, DeleteRangeResponse, Event, EventType, KeyValue, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseOp, Revision, TxnRequest, TxnResponse,
};

use super::codec::encode_key_value;
use super::error::MvccError;
use super::index::{PendingChange, PendingIndex, PendingKey, layered_range, visible};
use super::key_index::VisibleVersion;
use super::read::{
    RangePlan, check_read_revision, check_row, collect, compare_holds, finish_range, plan_range,
};
use super::revision::{RevisionPair, RowKey, RowKind};
use super::store::{
    COMPACT_REVISION_KEY, Committed, LeaseLookup, MvccStore, RESERVED_META_PREFIX, load_row,
};

/// A history row written by the open batch.
#[derive(Clone, Debug)]
struct PendingRow {
    kind: RowKind,
    kv: KeyValue,
}

/// An exclusive write batch on an [`MvccStore`]; see the module docs.
///
/// Reads through it see the batch's earlier writes; other readers see none of them until
/// [`WriteTxn::commit`]. Dropping it without commit discards everything. It holds the
/// store's writer lock, so it is not `Send`: create, use and commit it on one thread.
pub struct WriteTxn<'a> {
    store: &'a MvccStore,
    /// The store's writer lock, held until commit or drop (first in the lock order).
    _writer: MutexGuard<'a, ()>,
    /// The committed backend when the batch began. Only `MvccStore::replace` changes it,
    /// and that needs the writer lock this batch holds.
    backend: Arc<Backend>,
    /// The committed revision when the batch began: rows above it exist only in `rows`.
    base_revision: Revision,
    /// The revision after the requests run so far.
    current_revision: Revision,
    /// The compact revision after the requests run so far.
    compact_revision: Revision,
    /// The compaction to perform at commit, if any was requested.
    compaction: Option<Revision>,
    /// Uncommitted changes to the key index.
    pending: PendingIndex,
    /// Uncommitted history rows.
    rows: BTreeMap<RevisionPair, PendingRow>,
    /// Writes to other column families, made with `put_raw`/`delete_raw`.
    raw: BackendBatch,
    /// Events of the requests run so far, in revision order.
    events: Vec<Event>,
}

/// The undo information of the request being run.
struct RequestScope {
    /// The revision the request takes if it changes anything.
    revision: Revision,
    /// The next sub-revision; 0 means nothing changed yet.
    next_sub: i64,
    /// Keys that got pending changes (may repeat).
    touched: Vec<Bytes>,
    /// Length of the event list when the request began.
    events_len: usize,
}

impl RequestScope {
    fn next_revision(&mut self) -> RevisionPair {
        let revision = RevisionPair::new(self.revision, self.next_sub);
        self.next_sub += 1;
        revision
    }

    /// The revision reads with `revision <= 0` see: this request's revision once it changed
    /// something, the batch's current revision before.
    fn read_revision(&self, current: Revision) -> Revision {
        if self.next_sub > 0 {
            self.revision
        } else {
            current
        }
    }
}

/// Which requests `check_path` validates.
#[derive(Clone, Copy)]
enum PathCheck<'l> {
    Puts(&'l dyn LeaseLookup),
    Ranges,
}

impl<'a> WriteTxn<'a> {
    pub(super) fn begin(store: &'a MvccStore) -> WriteTxn<'a> {
        WriteTxn::holding(store, store.writer.lock())
    }

    /// As [`WriteTxn::begin`], but `None` at once when another batch is open.
    pub(super) fn try_begin(store: &'a MvccStore) -> Option<WriteTxn<'a>> {
        let writer = store.writer.try_lock()?;
        Some(WriteTxn::holding(store, writer))
    }

    fn holding(store: &'a MvccStore, writer: MutexGuard<'a, ()>) -> WriteTxn<'a> {
        let (backend, current_revision, compact_revision) = {
            let state = store.state.read();
            (
                Arc::clone(&state.backend),
                state.current_revision,
                state.compact_revision,
            )
        };
        WriteTxn {
            store,
            _writer: writer,
            backend,
            base_revision: current_revision,
            current_revision,
            compact_revision,
            compaction: None,
            pending: PendingIndex::new(),
            rows: BTreeMap::new(),
            raw: BackendBatch::new(),
            events: Vec::new(),
        }
    }

    /// The revision after the requests run so far (the header revision of a read now).
    #[must_use]
    pub fn current_revision(&self) -> Revision {
        self.current_revision
    }

    /// The compact revision after the requests run so far.
    #[must_use]
    pub fn compact_revision(&self) -> Revision {
        self.compact_revision
    }

    /// Reads a key range, seeing the batch's earlier writes. The header revision of the
    /// response is [`WriteTxn::current_revision`].
    ///
    /// # Errors
    /// As [`MvccStore::range`].
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.read_range(request, self.current_revision)
    }

    /// Writes one key. Returns the response and its header revision (the new revision).
    ///
    /// # Errors
    /// [`MvccError::LeaseNotFound`] for an unknown lease (checked first, as etcd does for a
    /// lone put), [`MvccError::KeyNotFound`] for `ignore_value`/`ignore_lease` on a missing
    /// key; fatal errors on backend failure.
    pub fn put(
        &mut self,
        request: &PutRequest,
        leases: &dyn LeaseLookup,
    ) -> Result<(PutResponse, Revision), MvccError> {
        check_lease(request, leases)?;
        self.run_request(|txn, scope| txn.exec_put(scope, request))
    }

    /// Deletes a key range. Returns the response and its header revision: the new revision
    /// when a key was deleted, the current one otherwise.
    ///
    /// # Errors
    /// Only fatal errors.
    pub fn delete_range(
        &mut self,
        request: &DeleteRangeRequest,
    ) -> Result<(DeleteRangeResponse, Revision), MvccError> {
        self.run_request(|txn, scope| txn.exec_delete(scope, request))
    }

    /// Runs a transaction. Returns the response and its header revision: the txn's revision
    /// when it changed a key, the current one otherwise.
    ///
    /// All compares on the chosen path, nested ones included, see the state before the txn.
    /// Before anything runs, the chosen path is checked: puts first (`ignore_*` on a missing
    /// key, unknown lease), then range revisions (future or compacted, against the state
    /// before the txn), as etcd's `checkRequests` does. Operations then run in order, and
    /// later ones see the writes of earlier ones.
    ///
    /// # Errors
    /// The first failed check, or an error while running (then nothing of the txn remains).
    ///
    /// # Panics
    /// Only on an internal inconsistency (the chosen path and the executed path differ).
    pub fn txn(
        &mut self,
        request: &TxnRequest,
        leases: &dyn LeaseLookup,
    ) -> Result<(TxnResponse, Revision), MvccError> {
        let mut path = Vec::new();
        self.choose_path(request, &mut path)?;
        self.check_path(request, &path, &mut 0, PathCheck::Puts(leases))?;
        self.check_path(request, &path, &mut 0, PathCheck::Ranges)?;
        self.run_request(|txn, scope| {
            let mut cursor = 0;
            let response = txn.exec_txn(scope, request, &path, &mut cursor, leases)?;
            assert_eq!(cursor, path.len(), "every txn on the chosen path ran");
            Ok(response)
        })
    }

    /// Compacts history at `revision`: afterwards only revisions `>= revision` are readable.
    /// The rows are removed when the batch commits. Returns the header revision (current).
    ///
    /// # Errors
    /// [`MvccError::Compacted`] when `revision` is not above the compact revision,
    /// [`MvccError::FutureRevision`] when it is above the current revision.
    pub fn compact(&mut self, revision: Revision) -> Result<Revision, MvccError> {
        if revision <= self.compact_revision {
            return Err(MvccError::Compacted {
                requested: revision,
                compacted: self.compact_revision,
            });
        }
        if revision > self.current_revision {
            return Err(MvccError::FutureRevision {
                requested: revision,
                current: self.current_revision,
            });
        }
        self.compact_revision = revision;
        self.compaction = Some(revision);
        Ok(self.current_revision)
    }

    /// How many events the batch has produced so far.
    pub fn events_len(&self) -> usize {
        self.events.len()
    }

    /// The events produced since the batch had `from` of them.
    pub fn events_since(&self, from: usize) -> &[crate::types::Event] {
        self.events.get(from..).unwrap_or_default()
    }

    /// Adds a raw write to another column family to the batch's RocksDB write, so it commits
    /// atomically with the key changes (apply stores its applied log id this way). Raw
    /// writes are not visible through the store before commit.
    ///
    /// # Panics
    /// For the `kv` column family and for `meta` keys starting with
    /// [`RESERVED_META_PREFIX`], which belong to the store.
    pub fn put_raw(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        assert_raw_key_allowed(cf, key);
        self.raw.put(cf, key, value);
    }

    /// Like [`WriteTxn::put_raw`], for a deletion.
    ///
    /// # Panics
    /// As [`WriteTxn::put_raw`].
    pub fn delete_raw(&mut self, cf: Cf, key: &[u8]) {
        assert_raw_key_allowed(cf, key);
        self.raw.delete(cf, key);
    }

    /// Writes the whole batch to RocksDB as one write and publishes it to readers.
    ///
    /// # Errors
    /// Only [`MvccError::Backend`], which is fatal: the in-memory index already includes the
    /// batch, so the store must be dropped (reopening rebuilds it from disk).
    ///
    /// # Panics
    /// When the pending changes contradict the committed index (a bug).
    pub fn commit(self) -> Result<Committed, MvccError> {
        let WriteTxn {
            store,
            _writer,
            backend,
            current_revision,
            compact_revision,
            compaction,
            pending,
            rows,
            raw,
            events,
            ..
        } = self;
        // Raw writes never touch `kv` or the store's `meta` keys, so their order relative
        // to the rows below does not matter.
        let mut batch = raw;
        for (revision, row) in &rows {
            let row_key = RowKey {
                revision: *revision,
                kind: row.kind,
            };
            batch.put(Cf::Kv, row_key.encode(), encode_key_value(&row.kv));
        }

        let mut state = store.state.write();
        for (key, pending_key) in pending {
            let key_index = state.index.entry(key).or_default();
            for change in pending_key.changes {
                match change.kind {
                    RowKind::Put => {
                        let produced = key_index.put(change.revision);
                        // Pair assertion with the version computed while the batch ran.
                        assert_eq!(Some(produced), change.after, "pending put diverged");
                    }
                    RowKind::Tombstone => key_index.tombstone(change.revision),
                }
            }
        }
        if let Some(at) = compaction {
            let mut removed = Vec::new();
            state.index.retain(|_, key_index| {
                key_index.compact(at, &mut removed);
                !key_index.is_empty()
            });
            for row_key in removed {
                batch.delete(Cf::Kv, row_key.encode());
            }
            batch.put(Cf::Meta, COMPACT_REVISION_KEY, at.to_be_bytes());
        }
        assert!(
            compact_revision <= current_revision,
            "compact {compact_revision} > current"
        );
        assert!(
            current_revision >= state.current_revision,
            "revision went backwards"
        );
        state.current_revision = current_revision;
        state.compact_revision = compact_revision;
        // Written while readers are locked out: a reader's snapshot then always matches the
        // index it walked (rows removed by this compaction are still in older snapshots).
        // Pair check with `MvccStore::replace`, which needs the writer lock held here.
        assert!(
            Arc::ptr_eq(&state.backend, &backend),
            "backend replaced during a write batch"
        );
        backend.write(batch)?;
        drop(state);
        Ok(Committed {
            revision: current_revision,
            events,
        })
    }

    /// Runs one request in a scope: on success the revision moves if something changed; on
    /// error everything the request did is undone.
    fn run_request<T>(
        &mut self,
        body: impl FnOnce(&mut Self, &mut RequestScope) -> Result<T, MvccError>,
    ) -> Result<(T, Revision), MvccError> {
        let mut scope = RequestScope {
            revision: self.current_revision + 1,
            next_sub: 0,
            touched: Vec::new(),
            events_len: self.events.len(),
        };
        match body(self, &mut scope) {
            Ok(response) => {
                if scope.next_sub > 0 {
                    self.current_revision = scope.revision;
                }
                Ok((response, self.current_revision))
            }
            Err(error) => {
                self.roll_back(scope);
                Err(error)
            }
        }
    }

    fn roll_back(&mut self, scope: RequestScope) {
        for key in scope.touched {
            if let Some(pending_key) = self.pending.get_mut(&key) {
                pending_key
                    .changes
                    .retain(|change| change.revision.main < scope.revision);
                if pending_key.changes.is_empty() {
                    self.pending.remove(&key);
                }
            }
        }
        // Every row of the request has main revision `scope.revision`, the highest so far.
        drop(self.rows.split_off(&RevisionPair::new(scope.revision, 0)));
        self.events.truncate(scope.events_len);
    }

    fn read_range(
        &self,
        request: &RangeRequest,
        current: Revision,
    ) -> Result<RangeResponse, MvccError> {
        let plan = plan_range(request, current, self.compact_revision)?;
        let collected = {
            let state = self.store.state.read();
            collect(
                layered_range(&state.index, &self.pending, &request.range),
                &plan,
            )
        };
        finish_range(request, &plan, collected, |key, version| {
            self.load(key, version)
        })
    }

    /// The row of `version`: from the batch when it is newer than the committed state,
    /// otherwise from the backend (no snapshot needed: only this batch could change it).
    fn load(&self, key: &Bytes, version: &VisibleVersion) -> Result<KeyValue, MvccError> {
        if version.revision.main > self.base_revision {
            let row = self.rows.get(&version.revision);
            let row = row.unwrap_or_else(|| panic!("pending row {:?} missing", version.revision));
            return check_row(key, version, row.kv.clone());
        }
        load_row(|row_key| self.backend.get(Cf::Kv, row_key), key, version)
    }

    fn latest_version(&self, key: &[u8]) -> Option<VisibleVersion> {
        let state = self.store.state.read();
        visible(state.index.get(key), self.pending.get(key), Revision::MAX)
    }

    fn record(&mut self, scope: &mut RequestScope, key: &Bytes, change: PendingChange) {
        scope.touched.push(key.clone());
        if let Some(pending_key) = self.pending.get_mut(key) {
            pending_key.changes.push(change);
        } else {
            // A fresh copy: request keys may share a buffer with a whole Raft entry.
            let owned = Bytes::copy_from_slice(key);
            self.pending.insert(
                owned,
                PendingKey {
                    changes: vec![change],
                },
            );
        }
    }

    fn exec_put(
        &mut self,
        scope: &mut RequestScope,
        request: &PutRequest,
    ) -> Result<PutResponse, MvccError> {
        // Validation rejects empty keys before Raft; one here would make the history
        // unreadable on the next open.
        assert!(
            !request.key.is_empty(),
            "put of an empty key reached the store"
        );
        let before = self.latest_version(&request.key);
        if before.is_none() && (request.ignore_value || request.ignore_lease) {
            return Err(MvccError::KeyNotFound);
        }
        // The replaced row is read only when something uses it: most puts need just its
        // version, which the index has (see `MvccStore::set_put_prev_kv`).
        let wanted = request.prev_kv
            || request.ignore_value
            || request.ignore_lease
            || self.store.put_prev_kv();
        let previous = match &before {
            Some(version) if wanted => Some(self.load(&request.key, version)?),
            _ => None,
        };
        let (value, lease) = match &previous {
            Some(previous) => (
                if request.ignore_value {
                    previous.value.clone()
                } else {
                    request.value.clone()
                },
                if request.ignore_lease {
                    previous.lease
                } else {
                    request.lease
                },
            ),
            None => (request.value.clone(), request.lease),
        };
        let revision = scope.next_revision();
        let after = match &before {
            Some(before) => VisibleVersion {
                revision,
                create_revision: before.create_revision,
                version: before.version + 1,
            },
            None => VisibleVersion {
                revision,
                create_revision: revision.main,
                version: 1,
            },
        };
        let change = PendingChange {
            revision,
            kind: RowKind::Put,
            after: Some(after),
        };
        self.record(scope, &request.key, change);
        let kv = KeyValue {
            key: request.key.clone(),
            create_revision: after.create_revision,
            mod_revision: revision.main,
            version: after.version,
            value,
            lease,
        };
        self.rows.insert(
            revision,
            PendingRow {
                kind: RowKind::Put,
                kv: kv.clone(),
            },
        );
        self.events.push(Event {
            kind: EventType::Put,
            kv,
            prev_kv: previous.clone(),
        });
        Ok(PutResponse {
            prev_kv: if request.prev_kv { previous } else { None },
        })
    }

    fn exec_delete(
        &mut self,
        scope: &mut RequestScope,
        request: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        let collected = {
            let state = self.store.state.read();
            let plan = RangePlan::everything_at(Revision::MAX);
            collect(
                layered_range(&state.index, &self.pending, &request.range),
                &plan,
            )
        };
        let mut previous = Vec::with_capacity(collected.entries.len());
        for (key, version) in &collected.entries {
            previous.push(self.load(key, version)?);
        }
        for deleted in &previous {
            let revision = scope.next_revision();
            let change = PendingChange {
                revision,
                kind: RowKind::Tombstone,
                after: None,
            };
            self.record(scope, &deleted.key, change);
            // etcd-compat: a delete event's kv holds only the key and the deletion revision.
            let tombstone = KeyValue {
                key: deleted.key.clone(),
                mod_revision: revision.main,
                ..KeyValue::default()
            };
            self.rows.insert(
                revision,
                PendingRow {
                    kind: RowKind::Tombstone,
                    kv: tombstone.clone(),
                },
            );
            self.events.push(Event {
                kind: EventType::Delete,
                kv: tombstone,
                prev_kv: Some(deleted.clone()),
            });
        }
        // An in-memory count always fits in i64.
        let deleted = i64::try_from(previous.len()).unwrap_or(i64::MAX);
        let prev_kvs = if request.prev_kv {
            previous
        } else {
            Vec::new()
        };
        Ok(DeleteRangeResponse { deleted, prev_kvs })
    }

    /// Evaluates the compares of `request` and of every nested txn on the chosen path, all
    /// against the state before the txn, and records the decisions in pre-order.
    fn choose_path(&self, request: &TxnRequest, path: &mut Vec<bool>) -> Result<(), MvccError> {
        let mut succeeded = true;
        for compare in &request.compare {
            let holds = {
                let state = self.store.state.read();
                let walk = layered_range(&state.index, &self.pending, &compare.range);
                compare_holds(compare, walk, Revision::MAX, |key, version| {
                    self.load(key, version)
                })?
            };
            if !holds {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        for op in branch(request, succeeded) {
            if let RequestOp::Txn(nested) = op {
                self.choose_path(nested, path)?;
            }
        }
        Ok(())
    }

    /// Checks the operations on the chosen path against the state before the txn.
    fn check_path(
        &self,
        request: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
        check: PathCheck<'_>,
    ) -> Result<(), MvccError> {
        let succeeded = path[*cursor];
        *cursor += 1;
        for op in branch(request, succeeded) {
            match (op, check) {
                (RequestOp::Put(put), PathCheck::Puts(leases)) => {
                    // etcd-compat: inside a txn the key is checked before the lease
                    // (etcd `checkRequestPut`), the reverse of a lone put.
                    let needs_key = put.ignore_value || put.ignore_lease;
                    if needs_key && self.latest_version(&put.key).is_none() {
                        return Err(MvccError::KeyNotFound);
                    }
                    check_lease(put, leases)?;
                }
                (RequestOp::Range(range), PathCheck::Ranges) => {
                    check_read_revision(
                        range.revision,
                        self.current_revision,
                        self.compact_revision,
                    )?;
                }
                (RequestOp::Txn(nested), _) => self.check_path(nested, path, cursor, check)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn exec_txn(
        &mut self,
        scope: &mut RequestScope,
        request: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
        leases: &dyn LeaseLookup,
    ) -> Result<TxnResponse, MvccError> {
        let succeeded = path[*cursor];
        *cursor += 1;
        let operations = branch(request, succeeded);
        let mut responses = Vec::with_capacity(operations.len());
        for op in operations {
            let response = match op {
                RequestOp::Range(range) => {
                    let current = scope.read_revision(self.current_revision);
                    ResponseOp::Range(self.read_range(range, current)?)
                }
                RequestOp::Put(put) => {
                    check_lease(put, leases)?;
                    ResponseOp::Put(self.exec_put(scope, put)?)
                }
                RequestOp::DeleteRange(delete) => {
                    ResponseOp::DeleteRange(self.exec_delete(scope, delete)?)
                }
                RequestOp::Txn(nested) => {
                    ResponseOp::Txn(self.exec_txn(scope, nested, path, cursor, leases)?)
                }
            };
            responses.push(response);
        }
        Ok(TxnResponse {
            succeeded,
            responses,
        })
    }
}

fn branch(request: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &request.success
    } else {
        &request.failure
    }
}

fn check_lease(request: &PutRequest, leases: &dyn LeaseLookup) -> Result<(), MvccError> {
    if request.lease != 0 && !leases.lease_exists(request.lease) {
        return Err(MvccError::LeaseNotFound(request.lease));
    }
    Ok(())
}

fn assert_raw_key_allowed(cf: Cf, key: &[u8]) {
    assert!(
        cf != Cf::Kv,
        "the kv column family belongs to the mvcc store"
    );
    assert!(
        !(cf == Cf::Meta && key.starts_with(RESERVED_META_PREFIX)),
        "meta key {key:?} is reserved for the mvcc store"
    );
}
