//! Reading committed history back as events, revision by revision: what a watcher that starts
//! in the past, or fell behind, catches up from.
//!
//! Owns [`MvccStore::history`] and [`HistoryBatch`]. Must not change state, read the clock or
//! block on anything but the state lock and RocksDB; batches are bounded by the caller.

use std::sync::Arc;

use bytes::Bytes;

use super::codec::decode_key_value;
use super::error::MvccError;
use super::revision::{RowKey, RowKind, main_revision_bound};
use super::store::{MvccStore, load_row};
use crate::storage::backend::{Backend, Cf};
use crate::types::{Event, EventType, KeyValue, Revision};

/// Events of consecutive revisions read from history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryBatch {
    /// Every change of the revisions read, in revision order (sub-revision order inside a
    /// revision), each with its `prev_kv` as a commit reports it. A revision is never split
    /// between two batches.
    pub events: Vec<Event>,
    /// The first revision not read: where the next batch starts.
    pub next: Revision,
    /// The store's revision when the batch was read; `next > current` means caught up.
    pub current: Revision,
}

impl MvccStore {
    /// Reads the changes of revisions `from..` as events, at most `revisions_max` revisions
    /// (at least one when any exists), with the `prev_kv` of each. Revisions without changes
    /// (a compaction's own) yield no events.
    ///
    /// # Errors
    /// [`MvccError::Compacted`] when `from` is below the compact revision, whose history
    /// is gone; fatal errors on backend failure or corruption.
    pub fn history(&self, from: Revision, revisions_max: usize) -> Result<HistoryBatch, MvccError> {
        let from = from.max(1);
        let state = self.state.read();
        // The compact revision itself is kept whole (its puts are the latest versions at
        // or below it, and compaction keeps its tombstones), so reading from it is allowed,
        // as etcd allows watching from it.
        if from < state.compact_revision {
            return Err(MvccError::Compacted {
                requested: from,
                compacted: state.compact_revision,
            });
        }
        let current = state.current_revision;
        let span = Revision::try_from(revisions_max.max(1)).unwrap_or(Revision::MAX);
        let last = current.min(from.saturating_add(span - 1));
        if from > last {
            return Ok(HistoryBatch {
                events: Vec::new(),
                next: from,
                current,
            });
        }
        // The state lock is held for the whole read: it keeps compaction and installs out,
        // so every row the index points at is still there, and the index describes this
        // backend. Batches are bounded, so writers wait a bounded time.
        let backend: Arc<Backend> = Arc::clone(&state.backend);
        let start = main_revision_bound(from);
        let end = main_revision_bound(last + 1);
        let mut events = Vec::new();
        for item in backend.scan(Cf::Kv, &start, Some(&end)) {
            let (encoded_key, encoded_value) = item?;
            let row_key = RowKey::decode(&encoded_key)?;
            let kv = decode_key_value(&Bytes::from(encoded_value.into_vec()))?;
            let key = Bytes::copy_from_slice(&kv.key);
            // A key is changed at most once per revision, so what was visible just before
            // this revision is the version this change replaced.
            let previous = state
                .index
                .get(key.as_ref())
                .and_then(|key_index| key_index.visible_at(row_key.revision.main - 1));
            let prev_kv = match previous {
                Some(version) => Some(load_row(|row| backend.get(Cf::Kv, row), &key, &version)?),
                None => None,
            };
            let (kind, kv) = match row_key.kind {
                RowKind::Put => (EventType::Put, kv),
                RowKind::Tombstone => (
                    EventType::Delete,
                    KeyValue {
                        key,
                        mod_revision: row_key.revision.main,
                        ..KeyValue::default()
                    },
                ),
            };
            events.push(Event { kind, kv, prev_kv });
        }
        Ok(HistoryBatch {
            events,
            next: last + 1,
            current,
        })
    }
}
