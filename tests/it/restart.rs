//! Recovery: a store of 100,000 keys with deletes, updates and a compaction answers exactly the
//! same ranges after a graceful stop (SIGTERM) and restart, and again after `kill -9` and
//! restart.
//!
//! Revision plan (each txn or delete that changes something adds one revision):
//! - 2..=1001: 1,000 txns of 100 puts load `key/000000`..`key/099999`;
//! - 1002..=1021: 20 txns update every key i < 20,000 with i % 10 == 3;
//! - compaction at 1011;
//! - 1022: delete [key/030000, key/033000); 1023: delete prefix key/0500;
//!   1024..=1027: 4 txns of 100 single deletes (i % 50 == 7 for 60,000 <= i < 80,000);
//! - 1028: one txn updates every key with i % 1000 == 999 that still exists;
//! - 1029..=1033: five single puts of new keys beyond the loaded ones.

use std::os::unix::process::ExitStatusExt as _;

use futures::StreamExt as _;
use mnemo::pb::etcdserverpb::kv_client::KvClient;
use mnemo::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use mnemo::pb::etcdserverpb::request_op::Request;
use mnemo::pb::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp,
    TxnRequest,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{Member, assert_status, delete, header_revision, put, range, testing_mnemo};

const KEYS: usize = 100_000;
const PUTS_PER_TXN: usize = 100;
const TXNS_IN_FLIGHT: usize = 8;
const COMPACT_REVISION: i64 = 1011;
const OLD_REVISION: i64 = 1025;
const FINAL_REVISION: i64 = 1033;

fn key(index: usize) -> String {
    format!("key/{index:06}")
}

/// Values of varied length and content; a few are empty.
fn value(index: usize, round: u32) -> String {
    if index.is_multiple_of(997) {
        return String::new();
    }
    let filler = [
        "",
        "a",
        "bc",
        "lorem ipsum",
        "0123456789abcdef",
        "\u{e9}t\u{e9}",
    ][index % 6];
    format!("r{round}:{index}:{}", filler.repeat(1 + index % 5))
}

fn put_op(key: String, value: String) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.into_bytes().into(),
            value: value.into_bytes().into(),
            ..Default::default()
        })),
    }
}

fn delete_op(key: String) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.into_bytes().into(),
            ..Default::default()
        })),
    }
}

fn request(key: &str, range_end: &str) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec().into(),
        range_end: range_end.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

/// Runs txns of the given ops, several at once; each must succeed and change the store.
async fn run_txns(kv: &KvClient<Channel>, batches: Vec<Vec<RequestOp>>) {
    let count = batches.len();
    let results: Vec<i64> = futures::stream::iter(batches)
        .map(|ops| {
            let mut kv = kv.clone();
            async move {
                let response = kv
                    .txn(TxnRequest {
                        compare: vec![],
                        success: ops,
                        failure: vec![],
                    })
                    .await
                    .unwrap_or_else(|status| panic!("txn failed: {status:?}"))
                    .into_inner();
                assert!(response.succeeded);
                header_revision(&response)
            }
        })
        .buffer_unordered(TXNS_IN_FLIGHT)
        .collect()
        .await;
    assert_eq!(results.len(), count);
}

/// Builds the store following the module's revision plan.
async fn populate(kv: &mut KvClient<Channel>) {
    let load: Vec<Vec<RequestOp>> = (0..KEYS / PUTS_PER_TXN)
        .map(|batch| {
            (batch * PUTS_PER_TXN..(batch + 1) * PUTS_PER_TXN)
                .map(|i| put_op(key(i), value(i, 1)))
                .collect()
        })
        .collect();
    run_txns(kv, load).await;
    assert_eq!(header_revision(&range(kv, request("key/", "")).await), 1001);

    let updated: Vec<usize> = (0..20_000).filter(|i| i % 10 == 3).collect();
    let updates: Vec<Vec<RequestOp>> = updated
        .chunks(PUTS_PER_TXN)
        .map(|chunk| chunk.iter().map(|&i| put_op(key(i), value(i, 2))).collect())
        .collect();
    assert_eq!(updates.len(), 20);
    run_txns(kv, updates).await;

    kv.compact(CompactionRequest {
        revision: COMPACT_REVISION,
        physical: true,
    })
    .await
    .expect("compact");

    let first = delete(
        kv,
        DeleteRangeRequest {
            key: key(30_000).into_bytes().into(),
            range_end: key(33_000).into_bytes().into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!((first.deleted, header_revision(&first)), (3_000, 1022));
    let second = delete(
        kv,
        DeleteRangeRequest {
            key: b"key/0500".to_vec().into(),
            range_end: b"key/0501".to_vec().into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!((second.deleted, header_revision(&second)), (100, 1023));
    let singles: Vec<usize> = (60_000..80_000).filter(|i| i % 50 == 7).collect();
    let deletes: Vec<Vec<RequestOp>> = singles
        .chunks(PUTS_PER_TXN)
        .map(|chunk| chunk.iter().map(|&i| delete_op(key(i))).collect())
        .collect();
    assert_eq!(deletes.len(), 4);
    run_txns(kv, deletes).await;

    let survivors_999: Vec<RequestOp> = (0..KEYS)
        .filter(|i| {
            i % 1000 == 999 && !(30_000..33_000).contains(i) && !(50_000..50_100).contains(i)
        })
        .map(|i| put_op(key(i), value(i, 3)))
        .collect();
    assert_eq!(survivors_999.len(), 97);
    run_txns(kv, vec![survivors_999]).await;
    for extra in KEYS..KEYS + 5 {
        put(kv, key(extra), value(extra, 4)).await;
    }
    assert_eq!(
        header_revision(&range(kv, request("key/", "")).await),
        FINAL_REVISION
    );
}

/// The ranges compared across restarts.
fn probes() -> Vec<(&'static str, RangeRequest)> {
    let descending = |target: SortTarget| RangeRequest {
        sort_order: SortOrder::Descend as i32,
        sort_target: target as i32,
        limit: 50,
        ..request("key/", "key0")
    };
    vec![
        ("every key", request("key/", "key0")),
        ("everything from \\0", request("\0", "\0")),
        ("prefix key/01", request("key/01", "key/02")),
        (
            "prefix key/03 (partly deleted)",
            request("key/03", "key/04"),
        ),
        ("prefix key/0500 (deleted)", request("key/0500", "key/0501")),
        ("single key", request(&key(12_345), "")),
        ("single deleted key", request(&key(60_007), "")),
        ("limit 50 key descending", descending(SortTarget::Key)),
        (
            "limit 50 from key/09",
            RangeRequest {
                limit: 50,
                ..request("key/09", "\0")
            },
        ),
        (
            "count only",
            RangeRequest {
                count_only: true,
                ..request("key/", "key0")
            },
        ),
        (
            "keys only key/099",
            RangeRequest {
                keys_only: true,
                ..request("key/099", "key/09:")
            },
        ),
        (
            "updated since 1002",
            RangeRequest {
                min_mod_revision: 1002,
                ..request("key/", "key0")
            },
        ),
        (
            "created after the load",
            RangeRequest {
                min_create_revision: 1002,
                ..request("key/", "key0")
            },
        ),
        (
            "prefix key/03 at revision 1025",
            RangeRequest {
                revision: OLD_REVISION,
                ..request("key/03", "key/04")
            },
        ),
        (
            "count at revision 1025",
            RangeRequest {
                revision: OLD_REVISION,
                count_only: true,
                ..request("key/", "key0")
            },
        ),
        (
            "prefix key/0007 at the compaction revision",
            RangeRequest {
                revision: COMPACT_REVISION,
                ..request("key/0007", "key/0008")
            },
        ),
    ]
}

async fn capture(kv: &mut KvClient<Channel>) -> Vec<(&'static str, RangeResponse)> {
    let mut captured = Vec::new();
    for (name, probe) in probes() {
        captured.push((name, range(kv, probe).await));
    }
    captured
}

/// Checks the captured ranges hold what the revision plan implies, so that comparing two
/// captures compares something meaningful.
fn check_plan(captured: &[(&'static str, RangeResponse)]) {
    let get = |name: &str| {
        &captured
            .iter()
            .find(|(probe, _)| *probe == name)
            .expect("probe exists")
            .1
    };
    let live = KEYS - 3_000 - 100 - 400 + 5;
    assert_eq!(get("every key").count, live as i64);
    assert_eq!(get("every key").kvs.len(), live);
    assert_eq!(get("count only").count, live as i64);
    assert!(get("count only").kvs.is_empty());
    assert_eq!(get("prefix key/0500 (deleted)").count, 0);
    assert_eq!(get("single deleted key").count, 0);
    assert_eq!(get("prefix key/03 (partly deleted)").count, 10_000 - 3_000);
    assert_eq!(get("prefix key/03 at revision 1025").count, 10_000 - 3_000);
    assert_eq!(
        get("count at revision 1025").count,
        (KEYS - 3_000 - 100 - 200) as i64
    );
    let top = get("limit 50 key descending");
    assert_eq!((top.kvs.len(), top.more), (50, true));
    assert_eq!(&top.kvs[0].key[..], key(KEYS + 4).as_bytes());
    assert_eq!(get("updated since 1002").kvs.len(), 2_000 + 97 + 5);
    assert_eq!(get("created after the load").kvs.len(), 5);
    let single = &get("single key").kvs;
    assert_eq!(single.len(), 1);
    assert_eq!(&single[0].value[..], value(12_345, 1).as_bytes());
    for (_, response) in captured {
        assert_eq!(header_revision(response), FINAL_REVISION);
    }
}

fn assert_same(
    when: &str,
    before: &[(&'static str, RangeResponse)],
    after: &[(&'static str, RangeResponse)],
) {
    assert_eq!(before.len(), after.len());
    for ((name, old), (_, new)) in before.iter().zip(after) {
        assert_eq!(
            header_revision(new),
            header_revision(old),
            "{when}: {name}: header revision"
        );
        assert_eq!(
            (new.count, new.more),
            (old.count, old.more),
            "{when}: {name}: count and more"
        );
        assert_eq!(
            new.kvs.len(),
            old.kvs.len(),
            "{when}: {name}: number of kvs"
        );
        if let Some(index) = old.kvs.iter().zip(&new.kvs).position(|(a, b)| a != b) {
            panic!(
                "{when}: {name}: kv {index} differs: before {:?}, after {:?}",
                old.kvs[index], new.kvs[index]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_are_identical_after_sigterm_and_after_kill_9() {
    let mut member = Member::start().await;
    let mut kv = member.kv().await;
    populate(&mut kv).await;
    let before = capture(&mut kv).await;
    check_plan(&before);
    drop(kv);

    let status = member.terminate().await;
    // mnemo handles SIGTERM and exits 0; etcd (via MNEMO_IT_SERVER) dies by the re-raised signal.
    let clean = status.success() || (!testing_mnemo() && status.signal() == Some(15));
    assert!(
        clean,
        "SIGTERM must stop the member cleanly, got {status}\n{}",
        member.log_tail()
    );
    member.restart().await;
    let mut kv = member.kv().await;
    let after_sigterm = capture(&mut kv).await;
    assert_same("after SIGTERM", &before, &after_sigterm);
    assert_status(
        kv.range(RangeRequest {
            revision: COMPACT_REVISION - 1,
            ..request("key/", "key0")
        })
        .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    drop(kv);

    member.kill9();
    member.restart().await;
    let mut kv = member.kv().await;
    let after_kill = capture(&mut kv).await;
    assert_same("after kill -9", &before, &after_kill);
    assert_status(
        kv.range(RangeRequest {
            revision: COMPACT_REVISION - 1,
            ..request("key/", "key0")
        })
        .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );

    // The store keeps counting from where it was.
    let next = put(&mut kv, "after-restarts", "v").await;
    assert_eq!(header_revision(&next), FINAL_REVISION + 1);
}
