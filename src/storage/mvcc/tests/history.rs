//! History read back as events must equal, event for event, what the commits reported when
//! they happened: same order, same kinds, same key-values, same `prev_kv`; never a revision
//! split between batches; and a clear error once compaction removed the start.

use bytes::Bytes;
use proptest::prelude::*;

use super::super::{HistoryBatch, MvccError, MvccStore};
use super::{delete, leases, put, temp_store, txn};
use crate::types::{Event, EventType, RequestOp, Revision};

/// One generated change.
#[derive(Clone, Debug)]
enum Change {
    Put(u8, u8),
    Delete(u8),
    DeleteFrom(u8),
    /// A txn putting the first key and deleting the second (when different).
    Txn(u8, u8, u8),
    Compact,
}

fn key_name(key: u8) -> String {
    format!("k{}", key % 6)
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        5 => (any::<u8>(), any::<u8>()).prop_map(|(key, value)| Change::Put(key, value)),
        2 => any::<u8>().prop_map(Change::Delete),
        1 => any::<u8>().prop_map(Change::DeleteFrom),
        2 => (any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(put, value, delete)| Change::Txn(put, value, delete)),
        1 => Just(Change::Compact),
    ]
}

/// Applies `change` in one commit; returns the events the commit reported and the revision
/// compacted to, if it compacted.
fn apply(store: &MvccStore, change: &Change) -> (Vec<Event>, Option<Revision>) {
    let mut write = store.write();
    let mut compacted = None;
    match change {
        Change::Put(key, value) => {
            write
                .put(&put(&key_name(*key), &value.to_string()), &leases())
                .expect("put");
        }
        Change::Delete(key) => {
            write
                .delete_range(&delete(&key_name(*key), ""))
                .expect("delete");
        }
        Change::DeleteFrom(key) => {
            write
                .delete_range(&delete(&key_name(*key), "\0"))
                .expect("delete from");
        }
        Change::Txn(put_key, value, delete_key) => {
            let mut ops = vec![RequestOp::Put(put(&key_name(*put_key), &value.to_string()))];
            if key_name(*put_key) != key_name(*delete_key) {
                ops.push(RequestOp::DeleteRange(delete(&key_name(*delete_key), "")));
            }
            write
                .txn(&txn(Vec::new(), ops, Vec::new()), &leases())
                .expect("txn");
        }
        Change::Compact => {
            // Compact to just below the current revision, keeping the newest one readable.
            let target = (write.current_revision() - 1).max(write.compact_revision());
            if target > write.compact_revision() {
                write.compact(target).expect("compact");
                compacted = Some(target);
            }
        }
    }
    let committed = write.commit().expect("commit");
    (committed.events, compacted)
}

/// Reads history from `from` to the end in batches of `revisions_max`.
fn read_all(
    store: &MvccStore,
    from: Revision,
    revisions_max: usize,
) -> Result<Vec<Event>, MvccError> {
    let mut events = Vec::new();
    let mut next = from;
    loop {
        let HistoryBatch {
            events: batch,
            next: after,
            current,
        } = store.history(next, revisions_max)?;
        // A batch ends at a revision boundary: its last revision's events are all in it.
        if let (Some(last), Some(first_after)) = (batch.last(), events_after(store, after)) {
            assert_ne!(last.kv.mod_revision, first_after, "a revision was split");
        }
        assert!(after > next || next > current, "no progress from {next}");
        events.extend(batch);
        if after > current {
            return Ok(events);
        }
        next = after;
    }
}

/// The revision of the first event at or after `from`, if any.
fn events_after(store: &MvccStore, from: Revision) -> Option<Revision> {
    store
        .history(from, 1)
        .ok()
        .and_then(|batch| batch.events.first().map(|event| event.kv.mod_revision))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn history_equals_what_the_commits_reported(
        changes in proptest::collection::vec(change(), 1..40),
        revisions_max in 1usize..5,
    ) {
        let (_dir, store) = temp_store();
        let mut reported: Vec<Event> = Vec::new();
        let mut compacted: Revision = 0;
        for change in &changes {
            let (events, compact) = apply(&store, change);
            reported.extend(events);
            if let Some(revision) = compact {
                compacted = revision;
            }
        }
        // The compact revision itself stays readable; a put there lost the version it
        // replaced to the compaction, so its prev_kv is gone (a delete there keeps it).
        let first_readable = compacted.max(1);
        let expected: Vec<Event> = reported
            .iter()
            .filter(|event| event.kv.mod_revision >= first_readable)
            .cloned()
            .map(|mut event| {
                if event.kv.mod_revision == compacted && event.kind == EventType::Put {
                    event.prev_kv = None;
                }
                event
            })
            .collect();
        let read = read_all(&store, first_readable, revisions_max).expect("readable history");
        prop_assert_eq!(read, expected);
        if compacted > 1 {
            let refused = store.history(compacted - 1, revisions_max);
            let is_compacted = matches!(refused, Err(MvccError::Compacted { .. }));
            prop_assert!(is_compacted, "{:?}", refused);
        }
    }
}

#[test]
fn history_past_the_end_is_empty_and_says_where_to_resume() {
    let (_dir, store) = temp_store();
    let mut write = store.write();
    write.put(&put("a", "1"), &leases()).expect("put");
    write.commit().expect("commit");
    let batch = store.history(3, 10).expect("history");
    assert!(batch.events.is_empty());
    assert_eq!((batch.next, batch.current), (3, 2));
    let batch = store.history(2, 10).expect("history");
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].kv.value, Bytes::from_static(b"1"));
    assert_eq!(batch.events[0].prev_kv, None);
    assert_eq!(batch.next, 3);
}
