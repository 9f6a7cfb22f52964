//! etcd KV semantics, one behaviour per test (etcd-api.md §3.1, §3.2, §4).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;

use crate::storage::backend::Cf;
use crate::types::{
    CompareResult, CompareTarget, DeleteRangeRequest, EventType, KeyRange, KeyValue, PutRequest,
    RangeRequest, RequestOp, ResponseOp, SortOrder, SortTarget,
};

use super::super::{COMPACT_REVISION_KEY, MvccError, MvccStore};
use super::{
    compare, delete, get, leases, pairs, put, put_now, range, reopen, temp_store, txn, values,
};

#[test]
fn new_store_starts_at_revision_one_never_compacted() {
    let (_dir, store) = temp_store();
    assert_eq!(store.current_revision(), 1);
    assert_eq!(store.compact_revision(), 0);
    let response = store.range(&range("\0", "\0")).unwrap();
    assert_eq!(
        (response.kvs.len(), response.count, response.more),
        (0, 0, false)
    );
}

#[test]
fn mvcc_store_is_send_and_sync() {
    fn shareable<T: Send + Sync>() {}
    shareable::<MvccStore>();
    shareable::<Arc<MvccStore>>();
}

#[test]
fn put_bumps_revision_even_with_the_same_value_and_counts_versions() {
    let (_dir, store) = temp_store();
    assert_eq!(put_now(&store, "a", "1"), 2);
    assert_eq!(put_now(&store, "a", "1"), 3);
    assert_eq!(put_now(&store, "a", "2"), 4);
    let kv = &store.range(&get("a")).unwrap().kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 4, 3));
    assert_eq!(kv.value.as_ref(), b"2");
}

#[test]
fn delete_resets_the_key_and_deleting_nothing_does_not_bump() {
    let (_dir, store) = temp_store();
    put_now(&store, "a", "1");
    put_now(&store, "a", "2");
    let mut batch = store.write();
    let (response, revision) = batch
        .delete_range(&DeleteRangeRequest {
            prev_kv: true,
            ..delete("a", "")
        })
        .unwrap();
    assert_eq!((response.deleted, revision), (1, 4));
    assert_eq!(response.prev_kvs[0].value.as_ref(), b"2");
    let (response, revision) = batch.delete_range(&delete("a", "")).unwrap();
    assert_eq!(
        (response.deleted, revision),
        (0, 4),
        "deleting nothing keeps the revision"
    );
    let (_, revision) = batch.put(&put("a", "3"), &leases()).unwrap();
    assert_eq!(revision, 5);
    let committed = batch.commit().unwrap();
    assert_eq!(committed.revision, 5);

    let delete_event = &committed.events[0];
    assert_eq!(delete_event.kind, EventType::Delete);
    let only_key_and_revision = KeyValue {
        key: Bytes::from_static(b"a"),
        mod_revision: 4,
        ..KeyValue::default()
    };
    assert_eq!(delete_event.kv, only_key_and_revision);
    assert_eq!(delete_event.prev_kv.as_ref().unwrap().version, 2);

    let kv = &store.range(&get("a")).unwrap().kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    assert!(
        committed.events[1].prev_kv.is_none(),
        "a re-creating put has no prev_kv"
    );
    // Old revisions still show the old generation.
    let old = store
        .range(&RangeRequest {
            revision: 3,
            ..get("a")
        })
        .unwrap();
    assert_eq!(
        (old.kvs[0].version, old.kvs[0].value.as_ref()),
        (2, &b"2"[..])
    );
    let deleted = store
        .range(&RangeRequest {
            revision: 4,
            ..get("a")
        })
        .unwrap();
    assert_eq!((deleted.count, deleted.kvs.len()), (0, 0));
}

#[test]
fn range_syntax_edge_cases() {
    let (_dir, store) = temp_store();
    for key in ["\0", "a", "b", "c"] {
        put_now(&store, key, key);
    }
    let all = store.range(&range("\0", "\0")).unwrap();
    assert_eq!(all.count, 4, "key \\0 with range_end \\0 is every key");
    assert_eq!(
        values(&store.range(&get("\0")).unwrap()),
        pairs(&[("\0", "\0")])
    );
    assert_eq!(
        store.range(&range("b", "\0")).unwrap().count,
        2,
        "range_end \\0 is from-key"
    );
    assert_eq!(
        store.range(&range("c", "a")).unwrap().count,
        0,
        "key >= range_end is empty"
    );
    assert_eq!(store.range(&range("b", "b")).unwrap().count, 0);
    assert_eq!(store.range(&range("a", "c")).unwrap().count, 2);
    let prefix = RangeRequest {
        range: KeyRange::prefix("b"),
        ..RangeRequest::default()
    };
    assert_eq!(values(&store.range(&prefix).unwrap()), pairs(&[("b", "b")]));
}

#[test]
fn count_ignores_limit_and_filters_and_more_reports_the_rest() {
    let (_dir, store) = temp_store();
    for key in ["a", "b", "c", "d"] {
        put_now(&store, key, key);
    }
    let limited = store
        .range(&RangeRequest {
            limit: 3,
            ..range("a", "\0")
        })
        .unwrap();
    assert_eq!(
        (limited.kvs.len(), limited.count, limited.more),
        (3, 4, true)
    );
    let exact = store
        .range(&RangeRequest {
            limit: 4,
            ..range("a", "\0")
        })
        .unwrap();
    assert_eq!((exact.kvs.len(), exact.more), (4, false));
    // a=2 b=3 c=4 d=5: keep mod revisions 3..=4, both fit the limit of 2.
    let filtered = RangeRequest {
        limit: 2,
        min_mod_revision: 3,
        max_mod_revision: 4,
        ..range("a", "\0")
    };
    let filtered = store.range(&filtered).unwrap();
    assert_eq!(values(&filtered), pairs(&[("b", "b"), ("c", "c")]));
    assert_eq!((filtered.count, filtered.more), (4, false));
    let count_only = RangeRequest {
        count_only: true,
        limit: 1,
        ..range("a", "\0")
    };
    let count_only = store.range(&count_only).unwrap();
    assert_eq!(
        (count_only.kvs.len(), count_only.count, count_only.more),
        (0, 4, false)
    );
    let keys_only = store
        .range(&RangeRequest {
            keys_only: true,
            ..get("a")
        })
        .unwrap();
    assert_eq!(
        (keys_only.kvs[0].value.len(), keys_only.kvs[0].version),
        (0, 1)
    );
}

#[test]
fn sorting_sorts_the_whole_range_before_the_limit() {
    let (_dir, store) = temp_store();
    put_now(&store, "c", "1");
    put_now(&store, "a", "3");
    put_now(&store, "b", "2");
    put_now(&store, "a", "0");
    let keys = |request: RangeRequest| -> Vec<String> {
        let response = store.range(&request).unwrap();
        response
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect()
    };
    let base = range("a", "\0");
    // Create revisions: c=2, a=3, b=4. Mod revisions: c=2, b=4, a=5.
    let by_create = RangeRequest {
        sort_target: SortTarget::Create,
        limit: 2,
        ..base.clone()
    };
    assert_eq!(
        keys(by_create.clone()),
        ["c", "a"],
        "order NONE with a target sorts ascending"
    );
    let descending = RangeRequest {
        sort_order: SortOrder::Descend,
        ..by_create
    };
    assert_eq!(keys(descending), ["b", "a"]);
    let by_mod = RangeRequest {
        sort_target: SortTarget::Mod,
        sort_order: SortOrder::Descend,
        ..base.clone()
    };
    assert_eq!(keys(by_mod), ["a", "b", "c"]);
    let by_value = RangeRequest {
        sort_target: SortTarget::Value,
        limit: 1,
        ..base.clone()
    };
    assert_eq!(keys(by_value), ["a"]);
    let by_version = RangeRequest {
        sort_target: SortTarget::Version,
        sort_order: SortOrder::Descend,
        ..base.clone()
    };
    assert_eq!(keys(by_version), ["a", "b", "c"], "ties stay in key order");
    let key_descending = RangeRequest {
        sort_order: SortOrder::Descend,
        limit: 1,
        ..base
    };
    let response = store.range(&key_descending).unwrap();
    assert_eq!(
        (keys(key_descending), response.more),
        (vec!["c".to_owned()], true)
    );
}

#[test]
fn revision_bounds_future_compacted_and_exactly_compacted() {
    let (_dir, store) = temp_store();
    for value in ["1", "2", "3", "4"] {
        put_now(&store, "a", value);
    }
    assert_eq!(store.current_revision(), 5);
    let future = store.range(&RangeRequest {
        revision: 6,
        ..get("a")
    });
    assert!(matches!(
        future,
        Err(MvccError::FutureRevision {
            requested: 6,
            current: 5
        })
    ));
    let latest = store
        .range(&RangeRequest {
            revision: -3,
            ..get("a")
        })
        .unwrap();
    assert_eq!(
        latest.kvs[0].mod_revision, 5,
        "revision <= 0 reads the current revision"
    );

    let mut batch = store.write();
    assert_eq!(
        batch.compact(3).unwrap(),
        5,
        "compaction keeps the revision"
    );
    assert!(matches!(
        batch.compact(3),
        Err(MvccError::Compacted {
            requested: 3,
            compacted: 3
        })
    ));
    assert!(matches!(
        batch.compact(2),
        Err(MvccError::Compacted {
            requested: 2,
            compacted: 3
        })
    ));
    assert!(matches!(
        batch.compact(6),
        Err(MvccError::FutureRevision {
            requested: 6,
            current: 5
        })
    ));
    let inside = batch.range(&RangeRequest {
        revision: 2,
        ..get("a")
    });
    assert!(matches!(
        inside,
        Err(MvccError::Compacted {
            requested: 2,
            compacted: 3
        })
    ));
    let committed = batch.commit().unwrap();
    assert_eq!((committed.revision, committed.events.len()), (5, 0));

    assert_eq!(store.compact_revision(), 3);
    let exactly = store
        .range(&RangeRequest {
            revision: 3,
            ..get("a")
        })
        .unwrap();
    assert_eq!(
        values(&exactly),
        pairs(&[("a", "2")]),
        "the compact revision is readable"
    );
    let below = store.range(&RangeRequest {
        revision: 2,
        ..get("a")
    });
    assert!(matches!(
        below,
        Err(MvccError::Compacted {
            requested: 2,
            compacted: 3
        })
    ));
}

#[test]
fn compaction_drops_deleted_keys_and_survives_restart() {
    let (dir, store) = temp_store();
    put_now(&store, "a", "1"); // 2
    put_now(&store, "b", "1"); // 3
    let mut batch = store.write();
    batch.delete_range(&delete("a", "")).unwrap(); // 4
    batch.compact(4).unwrap();
    batch.commit().unwrap();
    // Deleted exactly at the compact revision: kept, so history from 4 still has the delete.
    assert_eq!(store.backend().scan(Cf::Kv, &[], None).count(), 3);
    let mut batch = store.write();
    batch.compact(4).unwrap_err();
    batch.put(&put("b", "2"), &leases()).unwrap(); // 5
    batch.compact(5).unwrap();
    batch.commit().unwrap();
    assert_eq!(store.range(&range("\0", "\0")).unwrap().count, 1);
    let hash_before = store.hash_kv(0).unwrap();

    let store = reopen(&dir, store);
    assert_eq!((store.current_revision(), store.compact_revision()), (5, 5));
    assert_eq!(store.hash_kv(0).unwrap(), hash_before);
    assert_eq!(
        values(&store.range(&range("\0", "\0")).unwrap()),
        pairs(&[("b", "2")])
    );
    let stored = store
        .backend()
        .get(Cf::Meta, COMPACT_REVISION_KEY)
        .unwrap()
        .unwrap();
    assert_eq!(stored, 5i64.to_be_bytes());
    // Only b's row is left in history.
    assert_eq!(store.backend().scan(Cf::Kv, &[], None).count(), 1);
}

#[test]
fn compacting_at_the_newest_revision_keeps_its_rows_and_the_revision() {
    let (dir, store) = temp_store();
    put_now(&store, "a", "1"); // 2
    let mut batch = store.write();
    batch.delete_range(&delete("a", "")).unwrap(); // 3
    batch.compact(3).unwrap();
    batch.commit().unwrap();
    // The compact revision stays readable: its delete (and the put it replaced) are kept.
    assert_eq!(store.backend().scan(Cf::Kv, &[], None).count(), 2);
    let store = reopen(&dir, store);
    assert_eq!(store.current_revision(), 3);
    let history = store.history(3, 10).unwrap();
    assert_eq!(history.events.len(), 1);
    assert_eq!(history.events[0].kind, EventType::Delete);
    assert_eq!(put_now(&store, "a", "2"), 4);
}

#[test]
fn txn_takes_one_revision_with_sub_revisions() {
    let (_dir, store) = temp_store();
    put_now(&store, "x", "0"); // 2
    let mut batch = store.write();
    let request = txn(
        vec![],
        vec![
            RequestOp::Put(put("a", "1")),
            RequestOp::Put(put("b", "1")),
            RequestOp::Range(range("a", "c")),
            RequestOp::DeleteRange(delete("x", "")),
        ],
        vec![],
    );
    let (response, revision) = batch.txn(&request, &leases()).unwrap();
    assert_eq!(revision, 3);
    assert!(response.succeeded);
    let ResponseOp::Range(read) = &response.responses[2] else {
        panic!("range response")
    };
    assert_eq!(read.count, 2, "later ops see earlier writes");
    assert!(read.kvs.iter().all(|kv| kv.mod_revision == 3));
    let committed = batch.commit().unwrap();
    let kinds: Vec<_> = committed
        .events
        .iter()
        .map(|event| (event.kind, event.kv.mod_revision))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventType::Put, 3),
            (EventType::Put, 3),
            (EventType::Delete, 3)
        ]
    );
    assert_eq!(store.current_revision(), 3);
}

#[test]
fn txn_that_changes_nothing_does_not_bump() {
    let (_dir, store) = temp_store();
    put_now(&store, "a", "1"); // 2
    let mut batch = store.write();
    let read_only = txn(vec![], vec![RequestOp::Range(get("a"))], vec![]);
    assert_eq!(batch.txn(&read_only, &leases()).unwrap().1, 2);
    let deletes_nothing = txn(
        vec![],
        vec![RequestOp::DeleteRange(delete("zz", ""))],
        vec![],
    );
    assert_eq!(batch.txn(&deletes_nothing, &leases()).unwrap().1, 2);
    let failed_compare = txn(
        vec![compare(
            "a",
            CompareResult::Equal,
            CompareTarget::Value(Bytes::from_static(b"no")),
        )],
        vec![RequestOp::Put(put("a", "2"))],
        vec![],
    );
    let (response, revision) = batch.txn(&failed_compare, &leases()).unwrap();
    assert_eq!(
        (response.succeeded, response.responses.len(), revision),
        (false, 0, 2)
    );
    assert_eq!(batch.commit().unwrap().revision, 2);
}

#[test]
fn nested_compares_see_the_state_before_the_txn() {
    let (_dir, store) = temp_store();
    let mut batch = store.write();
    // etcd [obs]: outer put x=1, then a nested value(x) == 1 takes the failure branch.
    let nested = txn(
        vec![compare(
            "x",
            CompareResult::Equal,
            CompareTarget::Value(Bytes::from_static(b"1")),
        )],
        vec![RequestOp::Put(put("then", "1"))],
        vec![RequestOp::Put(put("else", "1"))],
    );
    let outer = txn(
        vec![],
        vec![RequestOp::Put(put("x", "1")), RequestOp::Txn(nested)],
        vec![],
    );
    let (response, revision) = batch.txn(&outer, &leases()).unwrap();
    let ResponseOp::Txn(inner) = &response.responses[1] else {
        panic!("nested response")
    };
    assert!(!inner.succeeded);
    assert_eq!(revision, 2);
    let committed = batch.commit().unwrap();
    let keys: Vec<_> = committed
        .events
        .iter()
        .map(|event| event.kv.key.clone())
        .collect();
    assert_eq!(
        keys,
        [Bytes::from_static(b"x"), Bytes::from_static(b"else")]
    );
}

#[test]
fn compares_follow_etcd_rules_for_absent_keys_and_ranges() {
    let (_dir, store) = temp_store();
    put_now(&store, "a", "1"); // 2
    put_now(&store, "b", "1"); // 3
    let batch = &mut store.write();
    let mut holds = |compare: crate::types::Compare| {
        let request = txn(vec![compare], vec![], vec![]);
        batch.txn(&request, &leases()).unwrap().0.succeeded
    };
    use CompareResult::{Equal, Greater, Less, NotEqual};
    assert!(
        holds(compare("zz", Equal, CompareTarget::Version(0))),
        "absent key has version 0"
    );
    assert!(holds(compare("zz", Equal, CompareTarget::Create(0))));
    assert!(holds(compare("zz", Equal, CompareTarget::Lease(0))));
    assert!(
        !holds(compare("zz", Equal, CompareTarget::Value(Bytes::new()))),
        "value on absent"
    );
    assert!(!holds(compare(
        "zz",
        NotEqual,
        CompareTarget::Value(Bytes::new())
    )));
    let over = |key: &str, end: &str, result, target| crate::types::Compare {
        range: KeyRange::new(key.as_bytes().to_vec(), end.as_bytes().to_vec()),
        result,
        target,
    };
    assert!(holds(over(
        "a",
        "c",
        Equal,
        CompareTarget::Value(Bytes::from_static(b"1"))
    )));
    assert!(holds(over("a", "c", Greater, CompareTarget::Mod(1))));
    assert!(
        !holds(over("a", "c", Less, CompareTarget::Mod(3))),
        "every key must match"
    );
    assert!(
        holds(over("x", "z", Equal, CompareTarget::Version(0))),
        "empty range compares 0"
    );
    assert!(!holds(over("x", "z", Greater, CompareTarget::Version(0))));
    assert!(!holds(over(
        "x",
        "z",
        Equal,
        CompareTarget::Value(Bytes::new())
    )));
    assert!(
        holds(over("c", "a", Equal, CompareTarget::Create(0))),
        "reversed range is empty"
    );
}

#[test]
fn failing_txn_leaves_no_trace() {
    let (_dir, store) = temp_store();
    put_now(&store, "a", "1"); // 2
    let mut batch = store.write();
    let unknown_lease = PutRequest {
        lease: 99,
        ..put("b", "1")
    };
    let request = txn(
        vec![],
        vec![
            RequestOp::Put(put("c", "1")),
            RequestOp::Put(unknown_lease.clone()),
        ],
        vec![],
    );
    assert!(matches!(
        batch.txn(&request, &leases()),
        Err(MvccError::LeaseNotFound(99))
    ));
    // The unknown lease sits on the branch not taken: fine.
    let other_branch = txn(
        vec![],
        vec![RequestOp::Put(put("c", "1"))],
        vec![RequestOp::Put(unknown_lease)],
    );
    assert_eq!(batch.txn(&other_branch, &leases()).unwrap().1, 3);
    let future = txn(
        vec![],
        vec![
            RequestOp::Put(put("d", "1")),
            RequestOp::Range(RangeRequest {
                revision: 4,
                ..get("a")
            }),
        ],
        vec![],
    );
    let error = batch.txn(&future, &leases()).unwrap_err();
    assert!(
        matches!(
            error,
            MvccError::FutureRevision {
                requested: 4,
                current: 3
            }
        ),
        "{error}"
    );
    let missing = PutRequest {
        ignore_value: true,
        ..put("nope", "")
    };
    let request = txn(
        vec![],
        vec![RequestOp::Put(put("e", "1")), RequestOp::Put(missing)],
        vec![],
    );
    assert!(matches!(
        batch.txn(&request, &leases()),
        Err(MvccError::KeyNotFound)
    ));
    // A delete then an ignore_value put of the same key fails only while running; it is
    // still undone completely.
    let late = PutRequest {
        ignore_value: true,
        ..put("a", "")
    };
    let request = txn(
        vec![],
        vec![
            RequestOp::DeleteRange(delete("a", "")),
            RequestOp::Put(late),
        ],
        vec![],
    );
    assert!(matches!(
        batch.txn(&request, &leases()),
        Err(MvccError::KeyNotFound)
    ));

    assert_eq!(batch.current_revision(), 3);
    let everything = batch.range(&range("\0", "\0")).unwrap();
    assert_eq!(values(&everything), pairs(&[("a", "1"), ("c", "1")]));
    let committed = batch.commit().unwrap();
    assert_eq!((committed.revision, committed.events.len()), (3, 1));
}

#[test]
fn ignore_value_and_lease_reuse_the_current_ones_and_puts_detach_leases() {
    let (_dir, store) = temp_store();
    let mut batch = store.write();
    let missing = PutRequest {
        ignore_lease: true,
        ..put("a", "1")
    };
    assert!(matches!(
        batch.put(&missing, &leases()),
        Err(MvccError::KeyNotFound)
    ));
    let unknown = PutRequest {
        lease: 7,
        ignore_value: true,
        ..put("a", "")
    };
    assert!(
        matches!(
            batch.put(&unknown, &leases()),
            Err(MvccError::LeaseNotFound(7))
        ),
        "lease first"
    );
    assert_eq!(batch.current_revision(), 1);

    batch
        .put(
            &PutRequest {
                lease: 1,
                ..put("a", "v1")
            },
            &leases(),
        )
        .unwrap();
    let keep_value = PutRequest {
        lease: 2,
        ignore_value: true,
        prev_kv: true,
        ..put("a", "")
    };
    let (response, _) = batch.put(&keep_value, &leases()).unwrap();
    assert_eq!(response.prev_kv.unwrap().lease, 1);
    let keep_lease = PutRequest {
        ignore_lease: true,
        ..put("a", "v2")
    };
    batch.put(&keep_lease, &leases()).unwrap();
    let kv = batch.range(&get("a")).unwrap().kvs[0].clone();
    assert_eq!(
        (kv.value.as_ref(), kv.lease, kv.version),
        (&b"v2"[..], 2, 3)
    );
    batch.put(&put("a", "v3"), &leases()).unwrap();
    assert_eq!(
        batch.range(&get("a")).unwrap().kvs[0].lease,
        0,
        "a plain put detaches"
    );
    batch.commit().unwrap();
}

#[test]
fn uncommitted_writes_are_invisible_and_dropped_batches_leave_nothing() {
    let (_dir, store) = temp_store();
    put_now(&store, "a", "1");
    {
        let mut batch = store.write();
        batch.put(&put("a", "2"), &leases()).unwrap();
        batch.put(&put("b", "2"), &leases()).unwrap();
        batch.compact(2).unwrap();
        assert_eq!(
            values(&store.range(&range("\0", "\0")).unwrap()),
            pairs(&[("a", "1")])
        );
        assert_eq!(store.current_revision(), 2);
        assert_eq!(batch.range(&range("\0", "\0")).unwrap().count, 2);
        // Dropped here without commit.
    }
    assert_eq!((store.current_revision(), store.compact_revision()), (2, 0));
    let mut batch = store.write();
    let (_, revision) = batch.put(&put("c", "1"), &leases()).unwrap();
    assert_eq!(revision, 3, "the dropped batch's revisions are reused");
    let committed = batch.commit().unwrap();
    assert_eq!(committed.events.len(), 1);
    assert_eq!(store.range(&range("\0", "\0")).unwrap().count, 2);
}

#[test]
fn events_carry_prev_kv_across_requests_of_one_batch() {
    let (_dir, store) = temp_store();
    let mut batch = store.write();
    batch.put(&put("a", "1"), &leases()).unwrap();
    batch.put(&put("a", "2"), &leases()).unwrap();
    batch.delete_range(&delete("a", "b")).unwrap();
    let committed = batch.commit().unwrap();
    let summary: Vec<_> = committed
        .events
        .iter()
        .map(|event| {
            (
                event.kind,
                event.kv.mod_revision,
                event.prev_kv.as_ref().map(|kv| kv.mod_revision),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (EventType::Put, 2, None),
            (EventType::Put, 3, Some(2)),
            (EventType::Delete, 4, Some(3))
        ]
    );
}

#[test]
fn put_raw_commits_with_the_batch() {
    let (_dir, store) = temp_store();
    let mut batch = store.write();
    batch.put(&put("a", "1"), &leases()).unwrap();
    batch.put_raw(Cf::Meta, b"apply/applied", b"42");
    batch.put_raw(Cf::Lease, b"lease/1", b"ttl");
    batch.delete_raw(Cf::Lease, b"lease/1");
    assert_eq!(
        store.backend().get(Cf::Meta, b"apply/applied").unwrap(),
        None
    );
    batch.commit().unwrap();
    assert_eq!(
        store
            .backend()
            .get(Cf::Meta, b"apply/applied")
            .unwrap()
            .unwrap(),
        b"42"
    );
    assert_eq!(store.backend().get(Cf::Lease, b"lease/1").unwrap(), None);
}

#[test]
#[should_panic(expected = "reserved for the mvcc store")]
fn put_raw_refuses_reserved_meta_keys() {
    let (_dir, store) = temp_store();
    store.write().put_raw(Cf::Meta, COMPACT_REVISION_KEY, b"0");
}

#[test]
fn hash_kv_depends_only_on_history() {
    let (_dir_a, a) = temp_store();
    let (_dir_b, b) = temp_store();
    for store in [&a, &b] {
        put_now(store, "k", "1");
        put_now(store, "l", "1");
    }
    assert_eq!(a.hash_kv(0).unwrap(), b.hash_kv(0).unwrap());
    let at_two = a.hash_kv(2).unwrap();
    assert_eq!((at_two.hash_revision, at_two.compact_revision), (2, 0));
    put_now(&a, "k", "2");
    put_now(&b, "k", "3");
    assert_eq!(a.hash_kv(3).unwrap(), b.hash_kv(3).unwrap());
    assert_eq!(
        a.hash_kv(2).unwrap(),
        at_two,
        "later writes do not change older hashes"
    );
    assert_ne!(a.hash_kv(0).unwrap().hash, b.hash_kv(0).unwrap().hash);
    assert!(matches!(
        a.hash_kv(5),
        Err(MvccError::FutureRevision {
            requested: 5,
            current: 4
        })
    ));
    let mut batch = a.write();
    batch.compact(3).unwrap();
    batch.commit().unwrap();
    assert!(matches!(
        a.hash_kv(2),
        Err(MvccError::Compacted {
            requested: 2,
            compacted: 3
        })
    ));
    assert_eq!(a.hash_kv(3).unwrap().compact_revision, 3);
}

#[test]
fn concurrent_reads_see_only_committed_state_during_writes_and_compactions() {
    let (_dir, store) = temp_store();
    let store = Arc::new(store);
    const KEYS: usize = 20;
    const ROUNDS: i64 = 60;
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (store, stop, reads) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&reads));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // Every batch rewrites all keys with the same value: a consistent read sees
                // one value everywhere, or no key before the first batch.
                let response = store.range(&range("\0", "\0")).unwrap();
                let distinct: std::collections::BTreeSet<_> =
                    response.kvs.iter().map(|kv| kv.value.clone()).collect();
                assert!(distinct.len() <= 1, "torn read: {distinct:?}");
                assert!(response.kvs.is_empty() || response.kvs.len() == KEYS);
                // Reading exactly at the (moving) compact revision must always work.
                let compacted = store.compact_revision().max(1);
                match store.range(&RangeRequest {
                    revision: compacted,
                    ..range("\0", "\0")
                }) {
                    Ok(_) | Err(MvccError::Compacted { .. }) => {}
                    Err(error) => panic!("unexpected {error}"),
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Start writing only once the reader runs, so the two really overlap.
    while reads.load(Ordering::Relaxed) == 0 {
        std::thread::yield_now();
    }
    for round in 0..ROUNDS {
        let mut batch = store.write();
        for key in 0..KEYS {
            batch
                .put(&put(&format!("k{key:02}"), &round.to_string()), &leases())
                .unwrap();
        }
        if round > 2 {
            batch
                .compact(batch.current_revision() - KEYS as i64)
                .unwrap();
        }
        batch.commit().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let last = store.range(&range("\0", "\0")).unwrap();
    assert!(
        last.kvs
            .iter()
            .all(|kv| kv.value.as_ref() == (ROUNDS - 1).to_string().as_bytes())
    );
}

#[test]
fn read_txn_sees_one_committed_revision() {
    let (_dir, store) = temp_store();
    put_now(&store, "a", "1"); // 2
    let mut batch = store.write();
    batch.put(&put("a", "2"), &leases()).unwrap();
    let old_read = RangeRequest {
        revision: 2,
        ..get("a")
    };
    let nested = txn(vec![], vec![RequestOp::Range(old_read)], vec![]);
    let request = txn(
        vec![compare(
            "a",
            CompareResult::Equal,
            CompareTarget::Value(Bytes::from_static(b"1")),
        )],
        vec![RequestOp::Range(get("a")), RequestOp::Txn(nested)],
        vec![],
    );
    // The open batch's write is invisible: the compare still sees a=1.
    let (response, revision) = store.read_txn(&request).unwrap();
    assert!(response.succeeded);
    assert_eq!(revision, 2);
    let ResponseOp::Range(read) = &response.responses[0] else {
        panic!("range response")
    };
    assert_eq!(values(read), pairs(&[("a", "1")]));
    let future_read = RangeRequest {
        revision: 3,
        ..get("a")
    };
    let future = txn(vec![], vec![RequestOp::Range(future_read)], vec![]);
    let error = store.read_txn(&future).unwrap_err();
    assert!(matches!(
        error,
        MvccError::FutureRevision {
            requested: 3,
            current: 2
        }
    ));
    batch.commit().unwrap();
    let (response, revision) = store.read_txn(&request).unwrap();
    assert_eq!(
        (response.succeeded, response.responses.len(), revision),
        (false, 0, 3)
    );
}
