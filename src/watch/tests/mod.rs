//! Hub tests, all through the hub's own API on a real [`MvccStore`], committing and publishing
//! as apply does (`WriteTxn::commit`, then `WatchHub::publish`).
//!
//! * `hub`: one behaviour per test: replay then live, set-aside under a full buffer and
//!   catch-up, compaction, progress requests and ticks, restore, cancel, reply ordering.
//! * `model`: the acceptance property test: random writes, compactions and watchers on
//!   streams read at different paces, checked against the MVCC model's history.
//!
//! The catch-up loop retries a stream whose buffer was full every
//! [`crate::limits::WATCH_SYNC_INTERVAL`]; tests that drain such a stream wake the loop
//! themselves ([`Fixture::nudge`]) instead of waiting for that timer.

mod hub;
mod model;

use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;

use super::{CreateRequest, Message, WatchHub, WatchReceiver};
use crate::storage::backend::Backend;
use crate::storage::mvcc::{Committed, MvccStore, WriteTxn};
use crate::types::{KeyRange, LeaseId, PutRequest, Revision};

/// How long a test waits for something the catch-up loop must do before it fails. Only a
/// broken hub (or a stalled machine) waits this long.
const PATIENCE: Duration = Duration::from_secs(10);

/// No lease exists.
fn no_leases(_id: LeaseId) -> bool {
    false
}

/// A store in a temporary directory and a hub over it.
struct Fixture {
    store: Arc<MvccStore>,
    hub: Arc<WatchHub>,
    /// Last, so the directory outlives the store.
    _dir: TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(open_store(&dir));
        let hub = WatchHub::new(Arc::clone(&store));
        Fixture {
            store,
            hub,
            _dir: dir,
        }
    }

    /// Runs `write` in one batch, commits it and publishes the result, as apply does.
    fn commit(&self, write: impl FnOnce(&mut WriteTxn<'_>)) -> Committed {
        let committed = self.commit_unpublished(write);
        self.hub.publish(&committed);
        committed
    }

    /// Commits without telling the hub (what an installed snapshot does to it).
    fn commit_unpublished(&self, write: impl FnOnce(&mut WriteTxn<'_>)) -> Committed {
        let mut txn = self.store.write();
        write(&mut txn);
        txn.commit().expect("commit")
    }

    /// Puts `key = value` in its own revision; returns the revision.
    fn put(&self, key: &str, value: &str) -> Revision {
        self.commit(|txn| put(txn, key, value)).revision
    }

    fn compact(&self, revision: Revision) {
        self.commit(|txn| {
            txn.compact(revision).expect("compact");
        });
    }

    /// Wakes the catch-up loop, standing in for its retry timer.
    fn nudge(&self) {
        self.hub.wake.notify_one();
    }
}

fn open_store(dir: &TempDir) -> MvccStore {
    let backend = Arc::new(Backend::open(dir.path()).expect("backend"));
    MvccStore::open(backend).expect("store")
}

fn put(txn: &mut WriteTxn<'_>, key: &str, value: &str) {
    txn.put(
        &PutRequest::new(key.to_owned(), value.to_owned()),
        &no_leases,
    )
    .expect("put");
}

/// A watcher of `range` from `start_revision`, everything else default.
fn watch(range: KeyRange, start_revision: Revision) -> CreateRequest {
    CreateRequest {
        range,
        start_revision,
        ..CreateRequest::default()
    }
}

/// Every message queued now.
fn queued(receiver: &mut WatchReceiver) -> Vec<Message> {
    let mut all = Vec::new();
    while let Some(batch) = receiver.try_recv() {
        all.extend(batch.take());
    }
    all
}

/// Receives until `done` holds for everything received so far, waking the catch-up loop
/// whenever nothing is queued; fails after [`PATIENCE`].
async fn receive_until(
    fixture: &Fixture,
    receiver: &mut WatchReceiver,
    done: impl Fn(&[Message]) -> bool,
) -> Vec<Message> {
    let mut all = Vec::new();
    let waited = tokio::time::timeout(PATIENCE, async {
        while !done(&all) {
            fixture.nudge();
            let next = tokio::time::timeout(Duration::from_millis(20), receiver.recv()).await;
            if let Ok(batch) = next {
                all.extend(batch.expect("stream open").take());
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "gave up waiting; received so far: {all:#?}");
    all
}

/// The revisions of the events a watcher received, in order of arrival.
fn event_revisions(messages: &[Message], watch_id: super::WatchId) -> Vec<Revision> {
    messages
        .iter()
        .filter_map(|message| match message {
            Message::Events {
                watch_id: id,
                events,
                ..
            } if *id == watch_id => Some(events),
            _ => None,
        })
        .flatten()
        .map(|event| event.kv.mod_revision)
        .collect()
}
