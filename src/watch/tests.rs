//! Hub tests: registration, delivery, set-aside and catch-up, progress.

use std::sync::Arc;

use super::*;
use crate::storage::backend::Backend;
use crate::types::{KeyRange, PutRequest};

fn store() -> (tempfile::TempDir, Arc<MvccStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = Arc::new(Backend::open(dir.path()).expect("backend"));
    (dir, Arc::new(MvccStore::open(backend).expect("store")))
}

fn put(store: &MvccStore, hub: &WatchHub, key: &str, value: &str) -> Revision {
    let mut txn = store.write();
    let (_, revision) = txn
        .put(
            &PutRequest::new(key.to_string(), value.to_string()),
            &NoLeases,
        )
        .expect("put");
    let committed = txn.commit().expect("commit");
    hub.publish(&committed);
    revision
}

struct NoLeases;

impl crate::storage::mvcc::LeaseLookup for NoLeases {
    fn lease_exists(&self, _id: crate::types::LeaseId) -> bool {
        false
    }
}

fn messages(receiver: &mut WatchReceiver) -> Vec<Message> {
    let mut all = Vec::new();
    while let Some(batch) = receiver.try_recv() {
        all.extend(batch.take());
    }
    all
}

#[tokio::test]
async fn created_comes_before_events_and_auto_ids_count_up() {
    let (_dir, store) = store();
    let hub = WatchHub::new(Arc::clone(&store));
    let (stream, mut receiver) = hub.open_stream().expect("stream");
    for _ in 0..2 {
        stream
            .create(CreateRequest {
                range: KeyRange::single("a"),
                ..CreateRequest::default()
            })
            .await
            .expect("create");
    }
    let revision = put(&store, &hub, "a", "1");
    let got = messages(&mut receiver);
    assert!(matches!(got[0], Message::Created { watch_id: 0, .. }));
    assert!(matches!(got[1], Message::Created { watch_id: 1, .. }));
    let ids: Vec<WatchId> = got[2..]
        .iter()
        .map(|message| match message {
            Message::Events {
                watch_id, events, ..
            } => {
                assert_eq!(events.len(), 1);
                assert_eq!(events[0].kv.mod_revision, revision);
                *watch_id
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(ids, vec![0, 1]);
}
