//! Alarms through apply: a raised NOSPACE refuses exactly the writes that need space, CORRUPT
//! refuses every write, refusals change nothing, and the table is part of the replicated
//! state (it survives a restart and travels in a snapshot, but stays out of HashKV).

use tempfile::TempDir;

use super::*;
use crate::alarm::{Alarm, AlarmType};
use crate::storage::member_db::MemberDb;
use crate::types::{DeleteRangeRequest, KeyRange, PutRequest};

const NOSPACE: Alarm = Alarm {
    member: 7,
    kind: AlarmType::NoSpace,
};
const CORRUPT: Alarm = Alarm {
    member: 7,
    kind: AlarmType::Corrupt,
};

fn member() -> (TempDir, Applier) {
    let dir = tempfile::tempdir().unwrap();
    let applier = Applier::new(MemberDb::open(dir.path()).unwrap()).unwrap();
    (dir, applier)
}

/// Applies `proposal` as the next entry and returns its decoded result.
fn apply_one(applier: &Applier, proposal: &Proposal) -> Result<ApplyOutcome, ApplyError> {
    let index = applier.applied_index() + 1;
    let entry = CommittedEntry {
        position: LogPos { index, term: 2 },
        data: CommittedData::Normal(codec::encode_proposal(index, proposal)),
    };
    let responses = applier.apply(&[entry]).unwrap();
    assert_eq!(responses.len(), 1);
    codec::decode_outcome(&responses[0])
}

fn put(key: &str) -> Proposal {
    Proposal::Put(put_request(key))
}

fn put_request(key: &str) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::from_static(b"v"),
        ..PutRequest::default()
    }
}

fn delete_op(key: &str) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest {
        range: KeyRange::single(key.as_bytes().to_vec()),
        prev_kv: false,
    })
}

fn change(activate: bool, alarm: Alarm) -> Proposal {
    Proposal::Alarm { activate, alarm }
}

#[test]
fn activate_answers_with_the_alarm_and_deactivate_only_when_it_was_raised() {
    let (_dir, a) = member();
    for _ in 0..2 {
        let raised = apply_one(&a, &change(true, NOSPACE)).unwrap();
        assert_eq!(raised.result, Applied::Alarm(vec![NOSPACE]));
    }
    assert_eq!(a.alarms().list(None), vec![NOSPACE]);
    let cleared = apply_one(&a, &change(false, NOSPACE)).unwrap();
    assert_eq!(cleared.result, Applied::Alarm(vec![NOSPACE]));
    let nothing = apply_one(&a, &change(false, NOSPACE)).unwrap();
    assert_eq!(nothing.result, Applied::Alarm(Vec::new()));
    assert!(a.alarms().list(None).is_empty());
}

#[test]
fn nospace_refuses_only_writes_that_need_space() {
    let (_dir, a) = member();
    apply_one(&a, &put("a")).unwrap();
    apply_one(&a, &put("b")).unwrap();
    apply_one(&a, &Proposal::LeaseGrant { id: 1, ttl: 60 }).unwrap();
    apply_one(&a, &change(true, NOSPACE)).unwrap();
    let revision = a.store().current_revision();

    let txn_with_put = TxnRequest {
        compare: Vec::new(),
        success: vec![delete_op("a")],
        // Only the failure branch writes: the txn is refused whichever branch would run.
        failure: vec![RequestOp::Put(put_request("c"))],
    };
    for refused in [
        put("c"),
        Proposal::Txn(txn_with_put),
        Proposal::LeaseGrant { id: 2, ttl: 60 },
    ] {
        assert_eq!(
            apply_one(&a, &refused),
            Err(ApplyError::NoSpace),
            "{refused:?}"
        );
    }
    assert_eq!(
        a.store().current_revision(),
        revision,
        "refusals change nothing"
    );
    assert_eq!(a.lessor().ids(), vec![1], "lease 2 not granted");

    let delete_txn = TxnRequest {
        compare: Vec::new(),
        success: vec![delete_op("a")],
        failure: Vec::new(),
    };
    apply_one(&a, &Proposal::Txn(delete_txn)).unwrap();
    apply_one(
        &a,
        &Proposal::DeleteRange(DeleteRangeRequest {
            range: KeyRange::single(b"b".to_vec()),
            prev_kv: false,
        }),
    )
    .unwrap();
    apply_one(
        &a,
        &Proposal::Compact {
            revision: a.store().current_revision(),
            physical: true,
        },
    )
    .unwrap();
    apply_one(&a, &Proposal::LeaseRevoke { id: 1 }).unwrap();
    assert_eq!(a.store().current_revision(), revision + 2);

    // Clearing the alarm lets the same put through.
    apply_one(&a, &change(false, NOSPACE)).unwrap();
    apply_one(&a, &put("c")).unwrap();
}

#[test]
fn any_members_nospace_refuses_writes_until_every_one_is_cleared() {
    let (_dir, a) = member();
    let other = Alarm {
        member: 8,
        kind: AlarmType::NoSpace,
    };
    apply_one(&a, &change(true, NOSPACE)).unwrap();
    apply_one(&a, &change(true, other)).unwrap();
    apply_one(&a, &change(false, NOSPACE)).unwrap();
    assert_eq!(apply_one(&a, &put("k")), Err(ApplyError::NoSpace));
    apply_one(&a, &change(false, other)).unwrap();
    apply_one(&a, &put("k")).unwrap();
}

#[test]
fn corrupt_refuses_every_write_but_alarm_changes() {
    let (_dir, a) = member();
    apply_one(&a, &put("a")).unwrap();
    apply_one(&a, &change(true, CORRUPT)).unwrap();
    for refused in [
        put("b"),
        Proposal::DeleteRange(DeleteRangeRequest {
            range: KeyRange::single(b"a".to_vec()),
            prev_kv: false,
        }),
        Proposal::Compact {
            revision: 1,
            physical: false,
        },
        Proposal::LeaseGrant { id: 1, ttl: 60 },
    ] {
        assert_eq!(
            apply_one(&a, &refused),
            Err(ApplyError::Corrupt),
            "{refused:?}"
        );
    }
    apply_one(&a, &change(false, CORRUPT)).unwrap();
    apply_one(&a, &put("b")).unwrap();
}

#[test]
fn alarms_survive_a_restart_and_travel_in_a_snapshot_but_not_in_hash_kv() {
    let (dir_a, a) = member();
    let (_dir_b, b) = member();
    for applier in [&a, &b] {
        apply_one(applier, &put("k")).unwrap();
    }
    let hash_before = a.store().hash_kv(0).unwrap();
    apply_one(&a, &change(true, NOSPACE)).unwrap();
    apply_one(&a, &change(true, CORRUPT)).unwrap();
    apply_one(&a, &change(false, CORRUPT)).unwrap();
    assert_eq!(a.store().hash_kv(0).unwrap(), hash_before);

    // B raises its own alarm, which the snapshot of A replaces.
    let own = Alarm {
        member: 9,
        kind: AlarmType::Corrupt,
    };
    apply_one(&b, &change(true, own)).unwrap();
    let snap = tempfile::tempdir().unwrap();
    let data = snap.path().join("data");
    a.checkpoint(&data).unwrap();
    b.install(&data).unwrap();
    assert_eq!(b.alarms().list(None), vec![NOSPACE]);
    assert_eq!(apply_one(&b, &put("x")), Err(ApplyError::NoSpace));

    drop(a);
    let reopened = Applier::new(MemberDb::open(dir_a.path()).unwrap()).unwrap();
    assert_eq!(reopened.alarms().list(None), vec![NOSPACE]);
    assert_eq!(apply_one(&reopened, &put("x")), Err(ApplyError::NoSpace));
}
