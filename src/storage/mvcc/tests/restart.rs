//! Restart at scale: 100,000 keys written in a few large batches, then updated, partly
//! deleted and compacted, must read back identically after the store is reopened on the
//! same directory (the key index is rebuilt from the history rows alone).

use bytes::Bytes;

use crate::types::{
    DeleteRangeRequest, KeyRange, PutRequest, RangeRequest, RequestOp, SortOrder, SortTarget,
    TxnRequest,
};

use super::{leases, put, reopen, temp_store};

const KEY_COUNT: usize = 100_000;
const KEYS_PER_BATCH: usize = 25_000;
const UPDATE_EVERY: usize = 10;

fn key(index: usize) -> String {
    format!("key/{index:06}")
}

fn prefix(prefix: &str) -> KeyRange {
    KeyRange::prefix(Bytes::copy_from_slice(prefix.as_bytes()))
}

#[test]
fn hundred_thousand_keys_read_back_identically_after_reopen() {
    let (dir, store) = temp_store();
    for first in (0..KEY_COUNT).step_by(KEYS_PER_BATCH) {
        let mut batch = store.write();
        for index in first..first + KEYS_PER_BATCH {
            batch
                .put(&put(&key(index), &format!("v{index}")), &leases())
                .unwrap();
        }
        batch.commit().unwrap();
    }
    let loaded = store.current_revision();
    assert_eq!(loaded, 1 + KEY_COUNT as i64);

    // One batch of history on top: every tenth key updated with a lease, a prefix of 100 keys
    // deleted, and a txn rewriting two keys in one revision.
    let mut batch = store.write();
    for index in (0..KEY_COUNT).step_by(UPDATE_EVERY) {
        let update = PutRequest {
            lease: 1,
            ..put(&key(index), &format!("w{index}"))
        };
        batch.put(&update, &leases()).unwrap();
    }
    let doomed = DeleteRangeRequest {
        range: prefix("key/0099"),
        prev_kv: false,
    };
    assert_eq!(batch.delete_range(&doomed).unwrap().0.deleted, 100);
    let pair = TxnRequest {
        success: vec![
            RequestOp::Put(put(&key(1), "t")),
            RequestOp::Put(put(&key(2), "t")),
        ],
        ..TxnRequest::default()
    };
    batch.txn(&pair, &leases()).unwrap();
    batch.commit().unwrap();
    let updated = store.current_revision();

    // Compact in the middle of the update batch: older versions of updated keys go away.
    let compact_at = loaded + 5_000;
    let mut batch = store.write();
    batch.compact(compact_at).unwrap();
    batch.commit().unwrap();

    let everything = KeyRange::new(Bytes::from_static(b"\0"), Bytes::from_static(b"\0"));
    let requests = [
        RangeRequest {
            range: everything.clone(),
            ..RangeRequest::default()
        },
        RangeRequest {
            range: prefix("key/01"),
            ..RangeRequest::default()
        },
        RangeRequest {
            range: everything.clone(),
            limit: 10,
            ..RangeRequest::default()
        },
        RangeRequest {
            range: everything.clone(),
            count_only: true,
            ..RangeRequest::default()
        },
        RangeRequest {
            range: prefix("key/00"),
            revision: compact_at,
            ..RangeRequest::default()
        },
        RangeRequest {
            range: prefix("key/09"),
            revision: updated - 1,
            keys_only: true,
            ..RangeRequest::default()
        },
        RangeRequest {
            range: everything,
            sort_target: SortTarget::Mod,
            sort_order: SortOrder::Descend,
            limit: 5,
            ..RangeRequest::default()
        },
    ];
    let before: Vec<_> = requests
        .iter()
        .map(|request| store.range(request).unwrap())
        .collect();
    assert_eq!(before[0].count, (KEY_COUNT - 100) as i64);
    assert_eq!(before[2].kvs.len(), 10);
    assert!(before[2].more);
    assert_eq!(before[3].count, (KEY_COUNT - 100) as i64);
    assert_eq!(before[6].kvs[0].mod_revision, updated);
    let hash_before = store.hash_kv(0).unwrap();

    let store = reopen(&dir, store);
    assert_eq!(
        (store.current_revision(), store.compact_revision()),
        (updated, compact_at)
    );
    let after: Vec<_> = requests
        .iter()
        .map(|request| store.range(request).unwrap())
        .collect();
    for (index, (before, after)) in before.iter().zip(&after).enumerate() {
        assert!(
            before == after,
            "request {index} differs after reopen: {:?}",
            requests[index]
        );
    }
    assert_eq!(store.hash_kv(0).unwrap(), hash_before);
}
