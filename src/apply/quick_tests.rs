//! The quick way to apply (on the async worker): it gives the same responses and state as the
//! blocking way, and declines, changing nothing, whatever could take long or wait.

use std::path::Path;

use tempfile::TempDir;

use super::*;
use crate::alarm::Alarm;
use crate::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyRange, PutRequest, RangeRequest,
};

fn member() -> (TempDir, Applier) {
    let dir = tempfile::tempdir().unwrap();
    let applier = open(dir.path());
    (dir, applier)
}

fn open(dir: &Path) -> Applier {
    Applier::new(MemberDb::open(dir).unwrap()).unwrap()
}

fn put(key: &str, value: &str) -> Proposal {
    Proposal::Put(PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..PutRequest::default()
    })
}

fn delete(range: KeyRange) -> Proposal {
    Proposal::DeleteRange(DeleteRangeRequest {
        range,
        prev_kv: true,
    })
}

/// A Kubernetes-style update: if `key` was last modified at `revision`, write `value`, else
/// read the key.
fn cas(key: &str, revision: Revision, value: &str) -> Proposal {
    Proposal::Txn(TxnRequest {
        compare: vec![Compare {
            range: KeyRange::single(key.as_bytes().to_vec()),
            result: CompareResult::Equal,
            target: CompareTarget::Mod(revision),
        }],
        success: vec![RequestOp::Put(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            prev_kv: true,
            ..PutRequest::default()
        })],
        failure: vec![RequestOp::Range(RangeRequest {
            range: KeyRange::single(key.as_bytes().to_vec()),
            ..RangeRequest::default()
        })],
    })
}

/// `proposals` as committed entries after `applier`'s applied index, in term 1.
fn entries(applier: &Applier, proposals: &[Proposal]) -> Vec<CommittedEntry> {
    let first = applier.applied_index() + 1;
    proposals
        .iter()
        .zip(first..)
        .map(|(proposal, index)| CommittedEntry {
            position: LogPos { index, term: 1 },
            data: CommittedData::Normal(codec::encode_proposal(index, proposal)),
        })
        .collect()
}

/// Every key-value of the store, its hash, and every row of every column family (leases,
/// alarms, the applied position and membership among them).
fn state(applier: &Applier) -> (Vec<crate::types::KeyValue>, u32, Vec<super::tests::Row>) {
    let store = applier.store();
    let all = store
        .range(&RangeRequest {
            range: KeyRange::new(b"\0".to_vec(), b"\0".to_vec()),
            ..RangeRequest::default()
        })
        .unwrap();
    (
        all.kvs,
        store.hash_kv(0).unwrap().hash,
        super::tests::rows(store),
    )
}

/// Asserts that `proposals` are declined by the quick way and leave `applier` as it was.
fn assert_declined(applier: &Applier, proposals: &[Proposal]) {
    let before = (applier.applied_index(), state(applier));
    let batch = entries(applier, proposals);
    assert!(
        applier.try_apply_quick(&batch).is_none(),
        "quick apply took {proposals:?}"
    );
    assert_eq!((applier.applied_index(), state(applier)), before);
}

#[test]
fn quick_apply_answers_and_stores_what_the_blocking_way_does() {
    let (_quick_dir, quick) = member();
    let (_slow_dir, slow) = member();
    let batches = [
        vec![put("a", "1"), put("b", "2"), put("c", "3")],
        vec![
            Proposal::LeaseGrant { id: 7, ttl: 30 },
            Proposal::Put(PutRequest {
                key: Bytes::from_static(b"leased"),
                value: Bytes::from_static(b"v"),
                lease: 7,
                ..PutRequest::default()
            }),
            delete(KeyRange::single(b"b".to_vec())),
        ],
        // One update that holds (a was written at revision 2) and one that does not.
        vec![cas("a", 2, "updated"), cas("c", 2, "lost")],
        vec![
            Proposal::LeaseCheckpoint(vec![(7, 12)]),
            // A revoke deletes the lease's key; an unknown lease is refused. Both come before
            // the alarm, which refuses writes once raised.
            Proposal::LeaseRevoke { id: 7 },
            Proposal::LeaseRevoke { id: 8 },
            Proposal::Alarm {
                activate: true,
                alarm: Alarm {
                    member: 3,
                    kind: AlarmType::Corrupt,
                },
            },
        ],
    ];
    for (round, proposals) in batches.into_iter().enumerate() {
        let mut quick_batch = entries(&quick, &proposals);
        // The last round also carries a leader's blank entry and a membership change, which
        // take no proposal: the decoded proposals must stay in step with the entries.
        if round == 3 {
            // Positions are set right below.
            let unnumbered = LogPos { index: 0, term: 1 };
            quick_batch.insert(
                0,
                CommittedEntry {
                    position: unnumbered,
                    data: CommittedData::Blank,
                },
            );
            quick_batch.push(CommittedEntry {
                position: unnumbered,
                data: CommittedData::Membership(Bytes::from_static(b"members")),
            });
            for (index, entry) in (quick.applied_index() + 1..).zip(quick_batch.iter_mut()) {
                entry.position.index = index;
            }
        }
        let answered = quick
            .try_apply_quick(&quick_batch)
            .expect("a batch of single-key requests is quick")
            .unwrap();
        let slow_batch = quick_batch.clone();
        assert_eq!(answered, slow.apply(&slow_batch).unwrap());
        assert_eq!(quick.applied_index(), slow.applied_index());
        assert_eq!(state(&quick), state(&slow));
        assert_eq!(
            quick.applied_state().unwrap(),
            slow.applied_state().unwrap()
        );
    }
    assert_eq!(
        quick.applied_state().unwrap().membership,
        Some(Bytes::from_static(b"members"))
    );
    // The writes really happened: the CAS on "a" held, the one on "c" did not.
    let (kvs, _, _) = state(&quick);
    let value_of = |key: &[u8]| {
        kvs.iter()
            .find(|kv| kv.key.as_ref() == key)
            .map(|kv| kv.value.clone())
    };
    assert_eq!(value_of(b"a"), Some(Bytes::from_static(b"updated")));
    assert_eq!(value_of(b"c"), Some(Bytes::from_static(b"3")));
    assert_eq!(value_of(b"b"), None);
    assert_eq!(
        value_of(b"leased"),
        None,
        "the revoke deleted the lease's key"
    );
    // And they are durable like any other: a reopened member holds them.
    let reopened_hash = {
        let dir = _quick_dir.path().to_path_buf();
        drop(quick);
        state(&open(&dir)).1
    };
    assert_eq!(reopened_hash, state(&slow).1);
}

#[test]
fn work_of_unbounded_size_is_declined() {
    let (_dir, applier) = member();
    let setup = entries(&applier, &[put("a", "1"), put("b", "2")]);
    applier.apply(&setup).unwrap();
    let range = KeyRange::new(b"a".to_vec(), b"z".to_vec());
    assert_declined(&applier, &[delete(range.clone())]);
    assert_declined(
        &applier,
        &[Proposal::Compact {
            revision: 2,
            physical: false,
        }],
    );
    // A revoke is as big as its lease: one with more keys than a quick batch may touch
    // takes the slow way.
    let mut leased = vec![Proposal::LeaseGrant { id: 7, ttl: 30 }];
    leased.extend((0..APPLY_QUICK_OPS_MAX).map(|index| {
        Proposal::Put(PutRequest {
            key: Bytes::from(format!("leased{index}")),
            value: Bytes::from_static(b"v"),
            lease: 7,
            ..PutRequest::default()
        })
    }));
    applier.apply(&entries(&applier, &leased)).unwrap();
    assert_declined(&applier, &[Proposal::LeaseRevoke { id: 7 }]);
    // One range inside a transaction is enough, in a compare or in a nested operation.
    let mut scanning = cas("a", 2, "x");
    if let Proposal::Txn(txn) = &mut scanning {
        txn.failure.push(RequestOp::Txn(TxnRequest {
            compare: Vec::new(),
            success: vec![RequestOp::Range(RangeRequest {
                range: range.clone(),
                ..RangeRequest::default()
            })],
            failure: Vec::new(),
        }));
    }
    assert_declined(&applier, &[put("c", "3"), scanning]);
    let mut comparing = cas("a", 2, "x");
    if let Proposal::Txn(txn) = &mut comparing {
        txn.compare[0].range = range;
    }
    assert_declined(&applier, &[comparing]);
}

#[test]
fn batches_past_the_limits_are_declined() {
    let (_dir, applier) = member();
    let many: Vec<Proposal> = (0..=APPLY_QUICK_ENTRIES_MAX)
        .map(|index| put(&format!("k{index}"), "v"))
        .collect();
    assert_declined(&applier, &many);
    let big = "v".repeat(APPLY_QUICK_BYTES_MAX);
    assert_declined(&applier, &[put("big", &big)]);
    // Just inside both limits, it is quick.
    let within = entries(&applier, &many[..APPLY_QUICK_ENTRIES_MAX]);
    assert!(
        applier
            .try_apply_quick(&within)
            .is_some_and(|applied| applied.is_ok())
    );
}

#[test]
fn an_open_write_batch_sends_apply_the_blocking_way() {
    let (_dir, applier) = member();
    let batch = entries(&applier, &[put("a", "1")]);
    let held = applier.store().write();
    assert!(applier.try_apply_quick(&batch).is_none());
    drop(held);
    assert_eq!(applier.applied_index(), 0);
    assert!(applier.try_apply_quick(&batch).unwrap().is_ok());
    assert_eq!(applier.applied_index(), 1);
}

#[test]
fn an_undecodable_entry_is_left_to_the_blocking_way_which_refuses_it() {
    let (_dir, applier) = member();
    let batch = vec![CommittedEntry {
        position: LogPos { index: 1, term: 1 },
        data: CommittedData::Normal(Bytes::from_static(b"\xff\xff not a proposal")),
    }];
    assert!(applier.try_apply_quick(&batch).is_none());
    assert!(applier.apply(&batch).is_err());
    assert_eq!(applier.applied_index(), 0);
}

#[test]
fn operations_are_counted_through_nested_transactions() {
    let (_dir, applier) = member();
    // A transaction of 100 puts, half of them one level down: small on the wire, and within
    // the entry and byte limits however many of them a batch holds.
    let puts = |from: usize| -> Vec<RequestOp> {
        (from..from + 50)
            .map(|index| {
                RequestOp::Put(PutRequest {
                    key: Bytes::from(format!("k{index}")),
                    value: Bytes::from_static(b"v"),
                    ..PutRequest::default()
                })
            })
            .collect()
    };
    let mut outer = puts(0);
    outer.push(RequestOp::Txn(TxnRequest {
        success: puts(50),
        ..TxnRequest::default()
    }));
    let wide = Proposal::Txn(TxnRequest {
        success: outer,
        ..TxnRequest::default()
    });
    let over = APPLY_QUICK_OPS_MAX / 100 + 1;
    assert_declined(&applier, &vec![wide.clone(); over]);
    let within = entries(&applier, &vec![wide; over - 1]);
    assert!(
        applier
            .try_apply_quick(&within)
            .is_some_and(|applied| applied.is_ok())
    );
}

#[test]
fn a_permission_checked_put_under_a_lease_is_declined() {
    let (_dir, applier) = member();
    let grant = entries(&applier, &[Proposal::LeaseGrant { id: 7, ttl: 30 }]);
    applier.apply(&grant).unwrap();
    let leased = Proposal::Put(PutRequest {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
        lease: 7,
        ..PutRequest::default()
    });
    let stamp = AuthStamp {
        user: "root".into(),
        revision: 1,
    };
    let index = applier.applied_index() + 1;
    let stamped = vec![CommittedEntry {
        position: LogPos { index, term: 1 },
        data: CommittedData::Normal(codec::encode_stamped(index, &leased, Some(&stamp))),
    }];
    assert!(applier.try_apply_quick(&stamped).is_none());
    // Without a stamp there is no permission check, and the same put is quick.
    assert!(
        applier
            .try_apply_quick(&entries(&applier, &[leased]))
            .is_some_and(|applied| applied.is_ok())
    );
}
