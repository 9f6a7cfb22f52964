//! KV, Maintenance.Status and Cluster.MemberList over gRPC, checked against etcd v3's semantics
//! (etcd-api.md §3.1–3.2, §3.5–3.6, §4, §5). Expected values come from etcd's documented and
//! observed behaviour; each test starts its own member, so revisions are predictable: a new
//! cluster is at revision 1 and every write that changes something adds exactly 1.

use std::time::Duration;

use mnemo::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use mnemo::pb::etcdserverpb::kv_client::KvClient;
use mnemo::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use mnemo::pb::etcdserverpb::request_op::Request;
use mnemo::pb::etcdserverpb::response_op::Response;
use mnemo::pb::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, MemberListRequest, PutRequest, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, StatusRequest, TxnRequest, TxnResponse,
};
use mnemo::pb::mvccpb::KeyValue;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{Member, assert_status, delete, header_revision, parse_semver, put, range};

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";
const KEY_NOT_PROVIDED: &str = "etcdserver: key is not provided";
const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";

// ---- request builders ----

fn bytes<T: From<Vec<u8>>>(text: impl AsRef<[u8]>) -> T {
    text.as_ref().to_vec().into()
}

/// A Range over [key, range_end); an empty `range_end` means the single key.
fn rr(key: impl AsRef<[u8]>, range_end: impl AsRef<[u8]>) -> RangeRequest {
    RangeRequest {
        key: bytes(key),
        range_end: bytes(range_end),
        ..Default::default()
    }
}

fn put_req(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> PutRequest {
    PutRequest {
        key: bytes(key),
        value: bytes(value),
        ..Default::default()
    }
}

fn del_req(key: impl AsRef<[u8]>, range_end: impl AsRef<[u8]>) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: bytes(key),
        range_end: bytes(range_end),
        ..Default::default()
    }
}

fn get_op(request: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(request)),
    }
}

fn put_op(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(put_req(key, value))),
    }
}

fn del_op(key: impl AsRef<[u8]>, range_end: impl AsRef<[u8]>) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(del_req(key, range_end))),
    }
}

fn txn_op(txn: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestTxn(txn)),
    }
}

fn txn_req(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

/// A compare of `key` whose target follows from the operand.
fn cmp(key: impl AsRef<[u8]>, result: CompareResult, operand: TargetUnion) -> Compare {
    let target = match operand {
        TargetUnion::Version(_) => CompareTarget::Version,
        TargetUnion::CreateRevision(_) => CompareTarget::Create,
        TargetUnion::ModRevision(_) => CompareTarget::Mod,
        TargetUnion::Value(_) => CompareTarget::Value,
        TargetUnion::Lease(_) => CompareTarget::Lease,
    };
    Compare {
        result: result as i32,
        target: target as i32,
        key: bytes(key),
        range_end: Default::default(),
        target_union: Some(operand),
    }
}

fn cmp_range(key: &str, range_end: &str, result: CompareResult, operand: TargetUnion) -> Compare {
    Compare {
        range_end: bytes(range_end),
        ..cmp(key, result, operand)
    }
}

fn value_operand(value: &str) -> TargetUnion {
    TargetUnion::Value(bytes(value))
}

async fn txn(kv: &mut KvClient<Channel>, request: TxnRequest) -> TxnResponse {
    let shown = format!("{request:?}");
    kv.txn(request)
        .await
        .unwrap_or_else(|status| panic!("txn {shown} failed: {status:?}"))
        .into_inner()
}

// ---- response views ----

fn text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

fn keys(response: &RangeResponse) -> Vec<String> {
    response.kvs.iter().map(|kv| text(&kv.key)).collect()
}

fn pairs(response: &RangeResponse) -> Vec<(String, String)> {
    response
        .kvs
        .iter()
        .map(|kv| (text(&kv.key), text(&kv.value)))
        .collect()
}

/// (key, value, create_revision, mod_revision, version, lease) of a KeyValue.
fn full(kv: &KeyValue) -> (String, String, i64, i64, i64, i64) {
    (
        text(&kv.key),
        text(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease,
    )
}

fn header(header: Option<&ResponseHeader>) -> ResponseHeader {
    header.copied().expect("response has a header")
}

async fn current_revision(kv: &mut KvClient<Channel>) -> i64 {
    header_revision(&range(kv, rr("current-revision-probe", "")).await)
}

fn range_response(op: &mnemo::pb::etcdserverpb::ResponseOp) -> &RangeResponse {
    match op.response.as_ref() {
        Some(Response::ResponseRange(response)) => response,
        other => panic!("expected a range response, got {other:?}"),
    }
}

fn inner_header(op: &mnemo::pb::etcdserverpb::ResponseOp) -> ResponseHeader {
    let header = match op.response.as_ref() {
        Some(Response::ResponseRange(response)) => response.header,
        Some(Response::ResponsePut(response)) => response.header,
        Some(Response::ResponseDeleteRange(response)) => response.header,
        Some(Response::ResponseTxn(response)) => response.header,
        None => panic!("empty response op"),
    };
    header.unwrap_or_default()
}

/// Only the revision of an inner response header is set (etcd-api.md §3.2 Txn, §4).
fn revision_only(revision: i64) -> ResponseHeader {
    ResponseHeader {
        revision,
        ..Default::default()
    }
}

// ---- Range ----

/// Range syntax (etcd-api.md §3.1): empty range_end, half-open ranges, "\0" range_end, all keys,
/// prefixes, byte order, and key >= range_end answering nothing without an error.
#[tokio::test]
async fn range_key_forms_select_single_keys_ranges_prefixes_and_everything() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    for key in ["a", "a/1", "a/2", "b", "c", "d"] {
        put(&mut kv, key, format!("value of {key}")).await;
    }
    put(&mut kv, b"z\xff", "high byte").await;
    let all = ["a", "a/1", "a/2", "b", "c", "d", "z\u{fffd}"];

    let single = range(&mut kv, rr("b", "")).await;
    assert_eq!(pairs(&single), [("b".to_owned(), "value of b".to_owned())]);
    assert_eq!((single.count, single.more), (1, false));

    let missing = range(&mut kv, rr("a/", "")).await;
    assert!(
        missing.kvs.is_empty(),
        "a key-only range matches no prefix: {missing:?}"
    );
    assert_eq!(missing.count, 0);

    let half_open = range(&mut kv, rr("b", "d")).await;
    assert_eq!(keys(&half_open), ["b", "c"], "range_end is exclusive");
    assert_eq!(half_open.count, 2);

    let from_key = range(&mut kv, rr("b", "\0")).await;
    assert_eq!(
        keys(&from_key),
        ["b", "c", "d", "z\u{fffd}"],
        "range_end \\0 means every key >= key"
    );

    let everything = range(&mut kv, rr("\0", "\0")).await;
    assert_eq!(
        keys(&everything),
        all,
        "key \\0 with range_end \\0 means all keys, in byte order"
    );
    assert_eq!(everything.count, 7);

    let prefix = range(&mut kv, rr("a/", "a0")).await;
    assert_eq!(keys(&prefix), ["a/1", "a/2"]);

    // The prefix [z, 0xff] ends at "{": trailing 0xff dropped, last byte incremented.
    let high_prefix = range(&mut kv, rr(b"z\xff", "{")).await;
    assert_eq!(high_prefix.kvs.len(), 1);
    assert_eq!(&high_prefix.kvs[0].key[..], b"z\xff");

    let revision = header_revision(&everything);
    for (key, end) in [("d", "b"), ("b", "b"), ("z", "a")] {
        let empty = range(&mut kv, rr(key, end)).await;
        assert!(
            empty.kvs.is_empty(),
            "key {key:?} >= range_end {end:?} returns nothing: {empty:?}"
        );
        assert_eq!((empty.count, empty.more), (0, false));
        assert_eq!(header_revision(&empty), revision);
    }
}

/// An empty key is refused before anything runs (§3.1, §5).
#[tokio::test]
async fn range_with_empty_key_is_rejected() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    assert_status(
        kv.range(rr("", "")).await,
        Code::InvalidArgument,
        KEY_NOT_PROVIDED,
    );
    assert_status(
        kv.range(rr("", "z")).await,
        Code::InvalidArgument,
        KEY_NOT_PROVIDED,
    );
}

/// `limit` cuts the result, `more` says keys were left out, `count` ignores the limit (§3.2).
#[tokio::test]
async fn range_limit_sets_more_and_count_ignores_limit() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    for index in 1..=5 {
        put(&mut kv, format!("k{index}"), "v").await;
    }
    put(&mut kv, "other", "v").await;

    let limited = range(
        &mut kv,
        RangeRequest {
            limit: 2,
            ..rr("k", "l")
        },
    )
    .await;
    assert_eq!(keys(&limited), ["k1", "k2"]);
    assert_eq!(
        (limited.more, limited.count),
        (true, 5),
        "count ignores the limit"
    );

    let just_under = range(
        &mut kv,
        RangeRequest {
            limit: 4,
            ..rr("k", "l")
        },
    )
    .await;
    assert_eq!(
        (just_under.kvs.len(), just_under.more, just_under.count),
        (4, true, 5)
    );

    let exact = range(
        &mut kv,
        RangeRequest {
            limit: 5,
            ..rr("k", "l")
        },
    )
    .await;
    assert_eq!((exact.kvs.len(), exact.more, exact.count), (5, false, 5));

    let above = range(
        &mut kv,
        RangeRequest {
            limit: 50,
            ..rr("k", "l")
        },
    )
    .await;
    assert_eq!((above.kvs.len(), above.more, above.count), (5, false, 5));

    let unlimited = range(
        &mut kv,
        RangeRequest {
            limit: 0,
            ..rr("k", "l")
        },
    )
    .await;
    assert_eq!(
        (unlimited.kvs.len(), unlimited.more, unlimited.count),
        (5, false, 5)
    );

    let single = range(
        &mut kv,
        RangeRequest {
            limit: 1,
            ..rr("k3", "")
        },
    )
    .await;
    assert_eq!(
        (keys(&single), single.more, single.count),
        (vec!["k3".to_owned()], false, 1)
    );
}

/// Reads at a revision (§3.2): history, latest for revision <= 0, the future and compacted
/// errors, and the compaction revision itself still readable; the header keeps the current
/// revision (§4).
#[tokio::test]
async fn range_reads_old_current_future_and_compacted_revisions() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    assert_eq!(header_revision(&put(&mut kv, "a", "1").await), 2);
    assert_eq!(header_revision(&put(&mut kv, "a", "2").await), 3);
    assert_eq!(header_revision(&put(&mut kv, "b", "1").await), 4);
    let deleted = delete(&mut kv, del_req("a", "")).await;
    assert_eq!((deleted.deleted, header_revision(&deleted)), (1, 5));

    let at = |revision: i64| RangeRequest {
        revision,
        ..rr("a", "c")
    };
    let at_1 = range(&mut kv, at(1)).await;
    assert!(
        at_1.kvs.is_empty(),
        "nothing existed at revision 1: {at_1:?}"
    );
    let at_2 = range(&mut kv, at(2)).await;
    assert_eq!(
        at_2.kvs.iter().map(full).collect::<Vec<_>>(),
        [("a".into(), "1".into(), 2, 2, 1, 0)]
    );
    let at_3 = range(&mut kv, at(3)).await;
    assert_eq!(
        at_3.kvs.iter().map(full).collect::<Vec<_>>(),
        [("a".into(), "2".into(), 2, 3, 2, 0)]
    );
    let at_4 = range(&mut kv, at(4)).await;
    assert_eq!(
        pairs(&at_4),
        [("a".into(), "2".into()), ("b".into(), "1".into())]
    );
    assert_eq!(at_4.count, 2);
    for latest in [at(5), at(0), at(-1)] {
        let response = range(&mut kv, latest).await;
        assert_eq!(
            pairs(&response),
            [("b".into(), "1".into())],
            "revision <= 0 and 5 read the latest state"
        );
    }
    // The header carries the current revision, not the one read.
    assert_eq!(header_revision(&at_2), 5);

    assert_status(kv.range(at(6)).await, Code::OutOfRange, FUTURE);
    assert_status(kv.range(at(1000)).await, Code::OutOfRange, FUTURE);

    kv.compact(CompactionRequest {
        revision: 3,
        physical: false,
    })
    .await
    .expect("compact at 3");
    assert_status(kv.range(at(2)).await, Code::OutOfRange, COMPACTED);
    assert_status(kv.range(at(1)).await, Code::OutOfRange, COMPACTED);
    let at_compaction = range(&mut kv, at(3)).await;
    assert_eq!(
        at_compaction.kvs.iter().map(full).collect::<Vec<_>>(),
        [("a".into(), "2".into(), 2, 3, 2, 0)],
        "exactly the compaction revision stays readable"
    );
    assert_eq!(
        pairs(&range(&mut kv, at(4)).await),
        [("a".into(), "2".into()), ("b".into(), "1".into())]
    );
}

/// Four keys whose key, create, mod, version and value orders all differ, with no ties:
///
/// | key | create | mod | version | value |
/// |-----|--------|-----|---------|-------|
/// | k1  | 3      | 11  | 3       | "m2"  |
/// | k2  | 5      | 5   | 1       | "z"   |
/// | k3  | 2      | 9   | 2       | "a"   |
/// | k4  | 4      | 10  | 4       | "f"   |
async fn put_sort_fixture(kv: &mut KvClient<Channel>) {
    let writes = [
        ("k3", "m"),
        ("k1", "q"),
        ("k4", "c"),
        ("k2", "z"),
        ("k4", "c"),
        ("k1", "q"),
        ("k4", "c"),
        ("k3", "a"),
        ("k4", "f"),
        ("k1", "m2"),
    ];
    for (index, (key, value)) in writes.into_iter().enumerate() {
        let response = put(kv, key, value).await;
        assert_eq!(header_revision(&response), index as i64 + 2);
    }
    put(kv, "outside", "not in k*").await;
}

/// Every sort target in both orders, NONE with a target meaning ascending, and the limit
/// applied after sorting (§3.2).
#[tokio::test]
async fn range_sorts_by_every_target_and_order() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    put_sort_fixture(&mut kv).await;
    let fixture = range(&mut kv, rr("k", "l")).await;
    assert_eq!(
        fixture.kvs.iter().map(full).collect::<Vec<_>>(),
        [
            ("k1".into(), "m2".into(), 3, 11, 3, 0),
            ("k2".into(), "z".into(), 5, 5, 1, 0),
            ("k3".into(), "a".into(), 2, 9, 2, 0),
            ("k4".into(), "f".into(), 4, 10, 4, 0),
        ]
    );

    let ascending: [(SortTarget, [&str; 4]); 5] = [
        (SortTarget::Key, ["k1", "k2", "k3", "k4"]),
        (SortTarget::Create, ["k3", "k1", "k4", "k2"]),
        (SortTarget::Mod, ["k2", "k3", "k4", "k1"]),
        (SortTarget::Version, ["k2", "k3", "k1", "k4"]),
        (SortTarget::Value, ["k3", "k4", "k1", "k2"]),
    ];
    for (target, expected) in ascending {
        let sorted = |order: SortOrder| RangeRequest {
            sort_order: order as i32,
            sort_target: target as i32,
            ..rr("k", "l")
        };
        let up = range(&mut kv, sorted(SortOrder::Ascend)).await;
        assert_eq!(keys(&up), expected, "{target:?} ASCEND");
        let mut reversed = expected;
        reversed.reverse();
        let down = range(&mut kv, sorted(SortOrder::Descend)).await;
        assert_eq!(keys(&down), reversed, "{target:?} DESCEND");
        // Order NONE with any target sorts ascending by that target (NONE + KEY is key order).
        let none = range(&mut kv, sorted(SortOrder::None)).await;
        assert_eq!(keys(&none), expected, "{target:?} NONE");
        assert_eq!((up.count, down.count, none.count), (4, 4, 4));

        // The limit applies after sorting.
        let top_two = range(
            &mut kv,
            RangeRequest {
                limit: 2,
                ..sorted(SortOrder::Descend)
            },
        )
        .await;
        assert_eq!(keys(&top_two), reversed[..2], "{target:?} DESCEND limit 2");
        assert_eq!((top_two.more, top_two.count), (true, 4));
    }
}

/// `keys_only` drops values only; `count_only` returns only the count (§3.2).
#[tokio::test]
async fn range_keys_only_and_count_only() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    put_sort_fixture(&mut kv).await;

    let keys_only = range(
        &mut kv,
        RangeRequest {
            keys_only: true,
            ..rr("k", "l")
        },
    )
    .await;
    assert_eq!(
        keys_only.kvs.iter().map(full).collect::<Vec<_>>(),
        [
            ("k1".into(), String::new(), 3, 11, 3, 0),
            ("k2".into(), String::new(), 5, 5, 1, 0),
            ("k3".into(), String::new(), 2, 9, 2, 0),
            ("k4".into(), String::new(), 4, 10, 4, 0),
        ],
        "keys_only drops values and keeps everything else"
    );
    assert_eq!((keys_only.count, keys_only.more), (4, false));

    let count_only = range(
        &mut kv,
        RangeRequest {
            count_only: true,
            ..rr("k", "l")
        },
    )
    .await;
    assert!(
        count_only.kvs.is_empty(),
        "count_only returns no kvs: {count_only:?}"
    );
    assert_eq!((count_only.count, count_only.more), (4, false));

    let everything = range(
        &mut kv,
        RangeRequest {
            count_only: true,
            ..rr("\0", "\0")
        },
    )
    .await;
    assert_eq!(everything.count, 5);
    assert_eq!(header_revision(&everything), 12);

    let old = range(
        &mut kv,
        RangeRequest {
            count_only: true,
            revision: 4,
            ..rr("k", "l")
        },
    )
    .await;
    assert_eq!(old.count, 3, "at revision 4 only k3, k1 and k4 existed");
}

/// The min/max mod and create revision filters are inclusive, 0 means unset, and `count` ignores
/// them (§3.2).
#[tokio::test]
async fn range_filters_by_mod_and_create_revision_inclusively() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    put_sort_fixture(&mut kv).await;
    let filtered = |min_mod: i64, max_mod: i64, min_create: i64, max_create: i64| RangeRequest {
        min_mod_revision: min_mod,
        max_mod_revision: max_mod,
        min_create_revision: min_create,
        max_create_revision: max_create,
        ..rr("k", "l")
    };
    // (min_mod, max_mod, min_create, max_create) and the keys expected.
    type Filters = (i64, i64, i64, i64);
    let cases: [(Filters, &[&str]); 9] = [
        ((9, 0, 0, 0), &["k1", "k3", "k4"]),
        ((10, 0, 0, 0), &["k1", "k4"]),
        ((0, 9, 0, 0), &["k2", "k3"]),
        ((9, 10, 0, 0), &["k3", "k4"]),
        ((0, 0, 3, 0), &["k1", "k2", "k4"]),
        ((0, 0, 0, 3), &["k1", "k3"]),
        ((0, 0, 3, 4), &["k1", "k4"]),
        ((10, 0, 0, 3), &["k1"]),
        ((12, 0, 0, 0), &[]),
    ];
    for ((min_mod, max_mod, min_create, max_create), expected) in cases {
        let response = range(&mut kv, filtered(min_mod, max_mod, min_create, max_create)).await;
        assert_eq!(
            keys(&response),
            expected,
            "min_mod {min_mod} max_mod {max_mod} min_create {min_create} max_create {max_create}"
        );
        assert_eq!(response.count, 4, "count ignores the revision filters");
        assert!(!response.more);
    }

    // The limit applies to the filtered result.
    let limited = range(
        &mut kv,
        RangeRequest {
            limit: 1,
            ..filtered(9, 0, 0, 0)
        },
    )
    .await;
    assert_eq!(
        (keys(&limited), limited.more, limited.count),
        (vec!["k1".to_owned()], true, 4)
    );
    let limited_exact = range(
        &mut kv,
        RangeRequest {
            limit: 2,
            ..filtered(10, 0, 0, 0)
        },
    )
    .await;
    assert_eq!((limited_exact.kvs.len(), limited_exact.more), (2, false));

    // A filter combined with a sort: mod revision >= 9, newest first.
    let sorted = range(
        &mut kv,
        RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Mod as i32,
            ..filtered(9, 0, 0, 0)
        },
    )
    .await;
    assert_eq!(keys(&sorted), ["k1", "k4", "k3"]);
}

/// A serializable read on a single member sees the same data as a linearizable one (§3.2).
#[tokio::test]
async fn serializable_range_returns_the_same_data() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    put_sort_fixture(&mut kv).await;
    let linearizable = range(&mut kv, rr("\0", "\0")).await;
    let serializable = range(
        &mut kv,
        RangeRequest {
            serializable: true,
            ..rr("\0", "\0")
        },
    )
    .await;
    assert_eq!(serializable.kvs, linearizable.kvs);
    assert_eq!(serializable.count, linearizable.count);
    assert_eq!(
        header_revision(&serializable),
        header_revision(&linearizable)
    );
    let old = range(
        &mut kv,
        RangeRequest {
            serializable: true,
            revision: 3,
            ..rr("k", "l")
        },
    )
    .await;
    assert_eq!(keys(&old), ["k1", "k3"]);
}

// ---- Put ----

/// Put bookkeeping (§3.1): revision, version and create_revision, prev_kv when asked, a new
/// generation after a delete.
#[tokio::test]
async fn put_bumps_revision_and_version_and_returns_prev_kv() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let first = kv
        .put(PutRequest {
            prev_kv: true,
            ..put_req("k", "v1")
        })
        .await
        .expect("put")
        .into_inner();
    assert_eq!(header_revision(&first), 2);
    assert_eq!(first.prev_kv, None, "no prev_kv for a new key");

    let second = kv
        .put(PutRequest {
            prev_kv: true,
            ..put_req("k", "v2")
        })
        .await
        .expect("put")
        .into_inner();
    assert_eq!(header_revision(&second), 3);
    assert_eq!(
        second.prev_kv.as_ref().map(full),
        Some(("k".into(), "v1".into(), 2, 2, 1, 0))
    );

    let unasked = put(&mut kv, "k", "v2").await;
    assert_eq!(
        header_revision(&unasked),
        4,
        "a put of the same value still moves the revision"
    );
    assert_eq!(unasked.prev_kv, None, "prev_kv only when asked");

    let now = range(&mut kv, rr("k", "")).await;
    assert_eq!(
        now.kvs.iter().map(full).collect::<Vec<_>>(),
        [("k".into(), "v2".into(), 2, 4, 3, 0)]
    );

    delete(&mut kv, del_req("k", "")).await;
    let recreated = kv
        .put(PutRequest {
            prev_kv: true,
            ..put_req("k", "v3")
        })
        .await
        .expect("put")
        .into_inner();
    assert_eq!(header_revision(&recreated), 6);
    assert_eq!(recreated.prev_kv, None, "a deleted key has no prev_kv");
    let after = range(&mut kv, rr("k", "")).await;
    assert_eq!(
        after.kvs.iter().map(full).collect::<Vec<_>>(),
        [("k".into(), "v3".into(), 6, 6, 1, 0)],
        "a put after a delete starts a new generation"
    );

    let empty_value = put(&mut kv, "empty", "").await;
    assert_eq!(header_revision(&empty_value), 7);
    let stored = range(&mut kv, rr("empty", "")).await;
    assert_eq!(
        stored.kvs.iter().map(full).collect::<Vec<_>>(),
        [("empty".into(), String::new(), 7, 7, 1, 0)]
    );
}

/// `ignore_value` / `ignore_lease` reuse the current value or lease, and their three errors
/// (§3.2 Put, §5) leave the revision alone.
#[tokio::test]
async fn put_ignore_value_and_ignore_lease() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    put(&mut kv, "k", "kept").await;

    let ignored = kv
        .put(PutRequest {
            ignore_value: true,
            prev_kv: true,
            ..put_req("k", "")
        })
        .await
        .expect("put with ignore_value")
        .into_inner();
    assert_eq!(header_revision(&ignored), 3);
    assert_eq!(
        ignored.prev_kv.as_ref().map(full),
        Some(("k".into(), "kept".into(), 2, 2, 1, 0))
    );
    let after = range(&mut kv, rr("k", "")).await;
    assert_eq!(
        after.kvs.iter().map(full).collect::<Vec<_>>(),
        [("k".into(), "kept".into(), 2, 3, 2, 0)]
    );

    let lease_kept = kv
        .put(PutRequest {
            ignore_lease: true,
            ..put_req("k", "new")
        })
        .await
        .expect("put")
        .into_inner();
    assert_eq!(header_revision(&lease_kept), 4);
    let after = range(&mut kv, rr("k", "")).await;
    assert_eq!(
        after.kvs.iter().map(full).collect::<Vec<_>>(),
        [("k".into(), "new".into(), 2, 4, 3, 0)]
    );

    assert_status(
        kv.put(PutRequest {
            ignore_value: true,
            ..put_req("k", "x")
        })
        .await,
        Code::InvalidArgument,
        "etcdserver: value is provided",
    );
    assert_status(
        kv.put(PutRequest {
            ignore_lease: true,
            lease: 5,
            ..put_req("k", "x")
        })
        .await,
        Code::InvalidArgument,
        "etcdserver: lease is provided",
    );
    assert_status(
        kv.put(PutRequest {
            ignore_value: true,
            ..put_req("missing", "")
        })
        .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_status(
        kv.put(PutRequest {
            ignore_lease: true,
            ..put_req("missing", "v")
        })
        .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_eq!(
        current_revision(&mut kv).await,
        4,
        "failed puts do not move the revision"
    );
    assert!(range(&mut kv, rr("missing", "")).await.kvs.is_empty());
}

/// An unknown lease is NotFound and an empty key InvalidArgument (§3.2 Put, §5).
#[tokio::test]
async fn put_with_unknown_lease_or_without_key_fails() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    assert_status(
        kv.put(PutRequest {
            lease: 12345,
            ..put_req("k", "v")
        })
        .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    assert_status(
        kv.put(put_req("", "v")).await,
        Code::InvalidArgument,
        KEY_NOT_PROVIDED,
    );
    assert_eq!(current_revision(&mut kv).await, 1);
    assert!(range(&mut kv, rr("k", "")).await.kvs.is_empty());
}

/// The 1.5 MiB request limit applies to the encoded request: a 1,572,844-byte value is already
/// refused (§6, observed on etcd), while 1,000,000 bytes are fine.
#[tokio::test]
async fn put_of_a_value_over_the_request_limit_is_too_large() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    // etcd refuses this size already: the limit (1,572,864 bytes) applies to the whole
    // encoded request, which is a little larger than the value.
    let too_large = vec![b'x'; 1_572_844];
    assert_status(
        kv.put(put_req("big", &too_large)).await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    assert_eq!(current_revision(&mut kv).await, 1);

    let fits = vec![b'y'; 1_000_000];
    let accepted = put(&mut kv, "big", &fits).await;
    assert_eq!(header_revision(&accepted), 2);
    let stored = range(&mut kv, rr("big", "")).await;
    assert_eq!(stored.kvs.len(), 1);
    assert_eq!(stored.kvs[0].value.len(), 1_000_000);
    assert!(stored.kvs[0].value.iter().all(|byte| *byte == b'y'));
}

// ---- DeleteRange ----

/// DeleteRange over a key, a range, a prefix, from a key and everything: `deleted` counts,
/// `prev_kvs`, one revision per call, no revision when nothing was deleted (§3.2, §4).
#[tokio::test]
async fn delete_range_forms_counts_and_prev_kvs() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    for key in ["a", "b", "c", "d", "p/1", "p/2", "p/3", "q", "r"] {
        put(&mut kv, key, format!("{key}!")).await;
    }
    assert_eq!(current_revision(&mut kv).await, 10);

    let single = delete(
        &mut kv,
        DeleteRangeRequest {
            prev_kv: true,
            ..del_req("a", "")
        },
    )
    .await;
    assert_eq!((single.deleted, header_revision(&single)), (1, 11));
    assert_eq!(
        single.prev_kvs.iter().map(full).collect::<Vec<_>>(),
        [("a".into(), "a!".into(), 2, 2, 1, 0)]
    );

    let span = delete(&mut kv, del_req("b", "d")).await;
    assert_eq!(
        (span.deleted, header_revision(&span)),
        (2, 12),
        "one revision for the whole range"
    );
    assert!(span.prev_kvs.is_empty(), "prev_kvs only when asked");

    let prefix = delete(
        &mut kv,
        DeleteRangeRequest {
            prev_kv: true,
            ..del_req("p/", "p0")
        },
    )
    .await;
    assert_eq!((prefix.deleted, header_revision(&prefix)), (3, 13));
    assert_eq!(
        prefix
            .prev_kvs
            .iter()
            .map(|kv| (text(&kv.key), text(&kv.value)))
            .collect::<Vec<_>>(),
        [
            ("p/1".into(), "p/1!".into()),
            ("p/2".into(), "p/2!".into()),
            ("p/3".into(), "p/3!".into())
        ]
    );

    let nothing = delete(
        &mut kv,
        DeleteRangeRequest {
            prev_kv: true,
            ..del_req("a", "d")
        },
    )
    .await;
    assert_eq!(
        (nothing.deleted, header_revision(&nothing)),
        (0, 13),
        "deleting nothing keeps the revision"
    );
    assert!(nothing.prev_kvs.is_empty());
    let absent = delete(&mut kv, del_req("never", "")).await;
    assert_eq!((absent.deleted, header_revision(&absent)), (0, 13));

    let from_key = delete(&mut kv, del_req("q", "\0")).await;
    assert_eq!((from_key.deleted, header_revision(&from_key)), (2, 14));

    let left = range(&mut kv, rr("\0", "\0")).await;
    assert_eq!(pairs(&left), [("d".into(), "d!".into())]);
    let everything = delete(&mut kv, del_req("\0", "\0")).await;
    assert_eq!((everything.deleted, header_revision(&everything)), (1, 15));
    assert_eq!(
        range(
            &mut kv,
            RangeRequest {
                count_only: true,
                ..rr("\0", "\0")
            }
        )
        .await
        .count,
        0
    );

    // History is still readable below the deletes.
    let before = range(
        &mut kv,
        RangeRequest {
            revision: 10,
            ..rr("\0", "\0")
        },
    )
    .await;
    assert_eq!(before.count, 9);

    assert_status(
        kv.delete_range(del_req("", "")).await,
        Code::InvalidArgument,
        KEY_NOT_PROVIDED,
    );
    assert_eq!(current_revision(&mut kv).await, 15);
}

// ---- Txn ----

/// All five compare targets with all four results, against values below, equal to and above
/// the key's (§3.2 Txn); unset operands compare against zero; all compares must hold.
#[tokio::test]
async fn txn_compares_every_target_with_every_result() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    put(&mut kv, "other", "x").await; // revision 2
    put(&mut kv, "c", "m").await; // revision 3: c created
    put(&mut kv, "other", "y").await; // revision 4
    put(&mut kv, "c", "m").await; // revision 5: c version 2, mod 5
    put(&mut kv, "other", "z").await; // revision 6
    // c: version 2, create 3, mod 5, value "m", lease 0.
    let (mut checked, revision) = (0, 6);

    // For each target, an operand below, equal to and above c's value.
    let operands: [(&str, [TargetUnion; 3]); 5] = [
        (
            "VERSION",
            [
                TargetUnion::Version(1),
                TargetUnion::Version(2),
                TargetUnion::Version(3),
            ],
        ),
        (
            "CREATE",
            [
                TargetUnion::CreateRevision(2),
                TargetUnion::CreateRevision(3),
                TargetUnion::CreateRevision(4),
            ],
        ),
        (
            "MOD",
            [
                TargetUnion::ModRevision(4),
                TargetUnion::ModRevision(5),
                TargetUnion::ModRevision(6),
            ],
        ),
        (
            "VALUE",
            [value_operand("l"), value_operand("m"), value_operand("n")],
        ),
        (
            "LEASE",
            [
                TargetUnion::Lease(-1),
                TargetUnion::Lease(0),
                TargetUnion::Lease(1),
            ],
        ),
    ];
    for (target, [below, equal, above]) in operands {
        // (operand, result, expected): GREATER means "the key's value > operand".
        let cases = [
            (below.clone(), CompareResult::Equal, false),
            (equal.clone(), CompareResult::Equal, true),
            (above.clone(), CompareResult::Equal, false),
            (below.clone(), CompareResult::Greater, true),
            (equal.clone(), CompareResult::Greater, false),
            (above.clone(), CompareResult::Greater, false),
            (below.clone(), CompareResult::Less, false),
            (equal.clone(), CompareResult::Less, false),
            (above.clone(), CompareResult::Less, true),
            (below.clone(), CompareResult::NotEqual, true),
            (equal.clone(), CompareResult::NotEqual, false),
            (above.clone(), CompareResult::NotEqual, true),
        ];
        for (operand, result, expected) in cases {
            let compare = cmp("c", result, operand.clone());
            let response = txn(
                &mut kv,
                txn_req(vec![compare], vec![get_op(rr("c", ""))], vec![]),
            )
            .await;
            assert_eq!(
                response.succeeded, expected,
                "{target} {result:?} {operand:?}"
            );
            assert_eq!(
                response.responses.len(),
                usize::from(expected),
                "only the chosen branch runs"
            );
            assert_eq!(
                header_revision(&response),
                revision,
                "a read-only txn keeps the revision"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 60);

    // An unset operand compares against zero (or the empty value).
    let unset = Compare {
        result: CompareResult::Greater as i32,
        target: CompareTarget::Version as i32,
        key: bytes("c"),
        range_end: Default::default(),
        target_union: None,
    };
    assert!(
        txn(&mut kv, txn_req(vec![unset], vec![], vec![]))
            .await
            .succeeded,
        "version 2 > unset (0)"
    );

    // Several compares must all hold.
    let both = vec![
        cmp("c", CompareResult::Equal, TargetUnion::Version(2)),
        cmp("c", CompareResult::Equal, value_operand("m")),
    ];
    assert!(txn(&mut kv, txn_req(both, vec![], vec![])).await.succeeded);
    let one_false = vec![
        cmp("c", CompareResult::Equal, TargetUnion::Version(2)),
        cmp("c", CompareResult::Equal, value_operand("n")),
    ];
    assert!(
        !txn(&mut kv, txn_req(one_false, vec![], vec![]))
            .await
            .succeeded
    );
    assert_eq!(current_revision(&mut kv).await, revision);
}

/// A compare with range_end holds only if every key in the range matches; an empty range
/// compares against zero, and VALUE on it is false (§3.2 Txn).
#[tokio::test]
async fn txn_compare_over_a_range_needs_every_key_to_match() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    put(&mut kv, "r/1", "same").await;
    put(&mut kv, "r/2", "same").await;
    put(&mut kv, "r/2", "same").await; // r/2 is at version 2
    put(&mut kv, "s", "different").await;

    let check = |compare: Compare| txn_req(vec![compare], vec![], vec![]);
    let cases = [
        (
            cmp_range("r/", "r0", CompareResult::Greater, TargetUnion::Version(0)),
            true,
        ),
        (
            cmp_range("r/", "r0", CompareResult::Equal, TargetUnion::Version(1)),
            false,
        ),
        (
            cmp_range("r/", "r0", CompareResult::Less, TargetUnion::Version(3)),
            true,
        ),
        (
            cmp_range("r/", "r0", CompareResult::Equal, value_operand("same")),
            true,
        ),
        (
            cmp_range("r/", "t", CompareResult::Equal, value_operand("same")),
            false,
        ),
        (
            cmp_range(
                "r/",
                "\0",
                CompareResult::Greater,
                TargetUnion::CreateRevision(1),
            ),
            true,
        ),
        (
            cmp_range("r/", "\0", CompareResult::Equal, value_operand("same")),
            false,
        ),
        (
            cmp_range(
                "r/",
                "r0",
                CompareResult::Greater,
                TargetUnion::ModRevision(2),
            ),
            false,
        ),
        (
            cmp_range("r/", "r0", CompareResult::Equal, TargetUnion::Lease(0)),
            true,
        ),
        // An empty range compares against zero, except VALUE which is always false.
        (
            cmp_range("x/", "x0", CompareResult::Equal, TargetUnion::Version(0)),
            true,
        ),
        (
            cmp_range(
                "x/",
                "x0",
                CompareResult::Equal,
                TargetUnion::CreateRevision(0),
            ),
            true,
        ),
        (
            cmp_range("x/", "x0", CompareResult::Equal, value_operand("")),
            false,
        ),
        (
            cmp_range("x/", "x0", CompareResult::NotEqual, value_operand("q")),
            false,
        ),
    ];
    for (compare, expected) in cases {
        let shown = format!("{compare:?}");
        assert_eq!(
            txn(&mut kv, check(compare)).await.succeeded,
            expected,
            "{shown}"
        );
    }
}

/// Absent keys: VERSION, CREATE, MOD and LEASE compare against 0, VALUE is always false
/// (§3.2 Txn); the lock recipe's create-if-absent txn works.
#[tokio::test]
async fn txn_compare_on_an_absent_key_uses_zero_and_value_is_always_false() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    put(&mut kv, "present", "v").await;
    let cases = [
        (
            cmp("absent", CompareResult::Equal, TargetUnion::Version(0)),
            true,
        ),
        (
            cmp("absent", CompareResult::Greater, TargetUnion::Version(0)),
            false,
        ),
        (
            cmp("absent", CompareResult::Less, TargetUnion::Version(1)),
            true,
        ),
        (
            cmp(
                "absent",
                CompareResult::Equal,
                TargetUnion::CreateRevision(0),
            ),
            true,
        ),
        (
            cmp(
                "absent",
                CompareResult::NotEqual,
                TargetUnion::CreateRevision(0),
            ),
            false,
        ),
        (
            cmp("absent", CompareResult::Equal, TargetUnion::ModRevision(0)),
            true,
        ),
        (
            cmp("absent", CompareResult::Equal, TargetUnion::Lease(0)),
            true,
        ),
        (
            cmp("absent", CompareResult::Equal, value_operand("")),
            false,
        ),
        (
            cmp("absent", CompareResult::NotEqual, value_operand("x")),
            false,
        ),
        (
            cmp("absent", CompareResult::Greater, value_operand("")),
            false,
        ),
        (
            cmp("absent", CompareResult::Less, value_operand("zzz")),
            false,
        ),
        (
            cmp("present", CompareResult::Equal, value_operand("v")),
            true,
        ),
    ];
    for (compare, expected) in cases {
        let shown = format!("{compare:?}");
        let response = txn(
            &mut kv,
            txn_req(vec![compare], vec![get_op(rr("present", ""))], vec![]),
        )
        .await;
        assert_eq!(response.succeeded, expected, "{shown}");
    }
    // The lock recipe: create only if absent.
    let create = |value: &str| {
        txn_req(
            vec![cmp(
                "lock",
                CompareResult::Equal,
                TargetUnion::CreateRevision(0),
            )],
            vec![put_op("lock", value)],
            vec![get_op(rr("lock", ""))],
        )
    };
    let first = txn(&mut kv, create("first")).await;
    assert!(first.succeeded);
    let second = txn(&mut kv, create("second")).await;
    assert!(!second.succeeded);
    assert_eq!(
        pairs(range_response(&second.responses[0])),
        [("lock".into(), "first".into())]
    );
}

/// Txn evaluation (§3.2): later ops see earlier writes, one revision per writing txn, nested
/// compares see the pre-txn state, the failure branch, and no revision for txns that change nothing.
#[tokio::test]
async fn txn_runs_ops_in_order_in_one_revision_with_compares_on_the_old_state() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    put(&mut kv, "gone", "soon").await; // revision 2

    // Later ops see earlier writes; everything lands in revision 3.
    let response = txn(
        &mut kv,
        txn_req(
            vec![cmp("gone", CompareResult::Equal, value_operand("soon"))],
            vec![
                put_op("a", "1"),
                get_op(rr("a", "")),
                put_op("b", "2"),
                del_op("gone", ""),
                get_op(rr("\0", "\0")),
            ],
            vec![put_op("failure-branch", "ran")],
        ),
    )
    .await;
    assert!(response.succeeded);
    assert_eq!(
        header_revision(&response),
        3,
        "one revision for the whole txn"
    );
    assert_eq!(response.responses.len(), 5);
    assert_eq!(
        pairs(range_response(&response.responses[1])),
        [("a".into(), "1".into())]
    );
    let seen = range_response(&response.responses[4]);
    assert_eq!(
        pairs(seen),
        [("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    match response.responses[3].response.as_ref() {
        Some(Response::ResponseDeleteRange(deleted)) => assert_eq!(deleted.deleted, 1),
        other => panic!("expected a delete response, got {other:?}"),
    }
    let stored = range(&mut kv, rr("\0", "\0")).await;
    assert_eq!(
        stored.kvs.iter().map(full).collect::<Vec<_>>(),
        [
            ("a".into(), "1".into(), 3, 3, 1, 0),
            ("b".into(), "2".into(), 3, 3, 1, 0)
        ]
    );
    assert!(
        range(&mut kv, rr("failure-branch", ""))
            .await
            .kvs
            .is_empty()
    );

    // A nested compare sees the state before the txn, not the outer put.
    let nested = txn(
        &mut kv,
        txn_req(
            vec![],
            vec![
                put_op("x", "1"),
                txn_op(txn_req(
                    vec![cmp("x", CompareResult::Equal, value_operand("1"))],
                    vec![put_op("result", "then")],
                    vec![put_op("result", "else")],
                )),
            ],
            vec![],
        ),
    )
    .await;
    assert!(nested.succeeded);
    assert_eq!(header_revision(&nested), 4);
    match nested.responses[1].response.as_ref() {
        Some(Response::ResponseTxn(inner)) => {
            assert!(!inner.succeeded, "the nested compare saw x absent");
            assert_eq!(inner.responses.len(), 1);
        }
        other => panic!("expected a nested txn response, got {other:?}"),
    }
    let result = range(&mut kv, rr("result", "")).await;
    assert_eq!(
        result.kvs.iter().map(full).collect::<Vec<_>>(),
        [("result".into(), "else".into(), 4, 4, 1, 0)]
    );
    let x = range(&mut kv, rr("x", "")).await;
    assert_eq!(
        x.kvs[0].mod_revision, 4,
        "outer and nested writes share one revision"
    );

    // The failure branch runs when a compare fails.
    let failed = txn(
        &mut kv,
        txn_req(
            vec![cmp("x", CompareResult::Equal, value_operand("2"))],
            vec![put_op("x", "from-success")],
            vec![put_op("x", "from-failure"), get_op(rr("x", ""))],
        ),
    )
    .await;
    assert!(!failed.succeeded);
    assert_eq!(header_revision(&failed), 5);
    assert_eq!(
        pairs(range_response(&failed.responses[1])),
        [("x".into(), "from-failure".into())]
    );

    // A txn whose branch changes nothing keeps the revision; so does an empty txn.
    let no_change = txn(
        &mut kv,
        txn_req(
            vec![],
            vec![del_op("never-there", ""), get_op(rr("x", ""))],
            vec![],
        ),
    )
    .await;
    assert_eq!(header_revision(&no_change), 5);
    let empty = txn(&mut kv, txn_req(vec![], vec![], vec![])).await;
    assert!(empty.succeeded, "a txn without compares succeeds");
    assert_eq!(header_revision(&empty), 5);
    assert_eq!(current_revision(&mut kv).await, 5);
}

/// Inner response headers hold only a revision (§3.2 Txn, §4): ops before the first write report
/// the pre-txn revision, later ops the txn's, and a nested txn's own header is empty (all
/// observed on etcd 3.4.23).
#[tokio::test]
async fn txn_inner_headers_carry_only_the_revision() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    put(&mut kv, "t/x", "1").await; // revision 2

    let response = txn(
        &mut kv,
        txn_req(
            vec![],
            vec![
                get_op(rr("t/x", "")),
                del_op("t/none", ""),
                put_op("t/y", "2"),
                get_op(rr("t/y", "")),
                del_op("t/none2", ""),
                txn_op(txn_req(vec![], vec![put_op("t/z", "3")], vec![])),
            ],
            vec![],
        ),
    )
    .await;
    let outer = header(response.header.as_ref());
    assert_eq!(outer.revision, 3);
    assert_ne!(outer.cluster_id, 0);
    assert_ne!(outer.member_id, 0);
    // Observed on etcd: ops before the first write report the pre-txn revision, later ones
    // the txn's revision; the nested txn's own header is empty.
    let inner: Vec<ResponseHeader> = response.responses.iter().map(inner_header).collect();
    assert_eq!(
        inner,
        [
            revision_only(2),
            revision_only(2),
            revision_only(3),
            revision_only(3),
            revision_only(3),
            revision_only(0)
        ]
    );
    match response.responses[5].response.as_ref() {
        Some(Response::ResponseTxn(nested)) => {
            assert!(nested.succeeded);
            assert_eq!(
                nested
                    .responses
                    .iter()
                    .map(inner_header)
                    .collect::<Vec<_>>(),
                [revision_only(3)]
            );
        }
        other => panic!("expected a nested txn response, got {other:?}"),
    }

    let read_only = txn(
        &mut kv,
        txn_req(vec![], vec![get_op(rr("t/", "t0"))], vec![]),
    )
    .await;
    assert_eq!(header(read_only.header.as_ref()).revision, 3);
    assert_eq!(
        read_only
            .responses
            .iter()
            .map(inner_header)
            .collect::<Vec<_>>(),
        [revision_only(3)]
    );
    assert_eq!(
        keys(range_response(&read_only.responses[0])),
        ["t/x", "t/y", "t/z"]
    );
}

/// At most 128 ops per list (compare, success, failure); a nested txn gets the budget its parent
/// leaves (§3.2 Txn validation, §6).
#[tokio::test]
async fn txn_with_more_than_128_ops_in_a_list_is_rejected() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let puts = |count: usize, prefix: &str| {
        (0..count)
            .map(|i| put_op(format!("{prefix}{i:03}"), "v"))
            .collect::<Vec<_>>()
    };
    let compares = |count: usize| {
        (0..count)
            .map(|i| {
                cmp(
                    format!("c{i:03}"),
                    CompareResult::Equal,
                    TargetUnion::Version(0),
                )
            })
            .collect::<Vec<_>>()
    };

    let at_limit = txn(
        &mut kv,
        txn_req(compares(128), puts(128, "s"), puts(128, "f")),
    )
    .await;
    assert!(at_limit.succeeded);
    assert_eq!(at_limit.responses.len(), 128);
    assert_eq!(header_revision(&at_limit), 2);
    assert_eq!(
        range(
            &mut kv,
            RangeRequest {
                count_only: true,
                ..rr("s", "t")
            }
        )
        .await
        .count,
        128
    );

    assert_status(
        kv.txn(txn_req(vec![], puts(129, "s"), vec![])).await,
        Code::InvalidArgument,
        TOO_MANY_OPS,
    );
    assert_status(
        kv.txn(txn_req(compares(129), vec![], vec![])).await,
        Code::InvalidArgument,
        TOO_MANY_OPS,
    );
    assert_status(
        kv.txn(txn_req(vec![], vec![], puts(129, "f"))).await,
        Code::InvalidArgument,
        TOO_MANY_OPS,
    );

    // A nested txn gets what its parent leaves: 128 - (ops in the parent's largest list).
    let nested = |outer: usize, inner: usize| {
        let mut success = puts(outer - 1, "o");
        success.push(txn_op(txn_req(vec![], puts(inner, "i"), vec![])));
        txn_req(vec![], success, vec![])
    };
    assert_status(
        kv.txn(nested(100, 29)).await,
        Code::InvalidArgument,
        TOO_MANY_OPS,
    );
    assert_status(
        kv.txn(nested(1, 128)).await,
        Code::InvalidArgument,
        TOO_MANY_OPS,
    );
    assert_eq!(
        current_revision(&mut kv).await,
        2,
        "rejected txns change nothing"
    );
    let fits = txn(&mut kv, nested(100, 28)).await;
    assert!(fits.succeeded);
    assert_eq!(header_revision(&fits), 3);
    assert_eq!(
        range(
            &mut kv,
            RangeRequest {
                count_only: true,
                ..rr("i", "j")
            }
        )
        .await
        .count,
        28
    );
    assert_eq!(
        range(
            &mut kv,
            RangeRequest {
                count_only: true,
                ..rr("o", "p")
            }
        )
        .await
        .count,
        99
    );
}

/// Duplicate-key validation (§3.2 Txn): puts of one key, puts inside deletes, across nesting
/// levels and in either list are refused; then/else sharing, overlapping deletes and reads are not.
#[tokio::test]
async fn txn_with_duplicate_keys_is_rejected() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let nested_then = |ops: Vec<RequestOp>| txn_op(txn_req(vec![], ops, vec![]));
    let rejected: Vec<(&str, TxnRequest)> = vec![
        (
            "put a + put a",
            txn_req(vec![], vec![put_op("a", "1"), put_op("a", "2")], vec![]),
        ),
        (
            "put a + del a",
            txn_req(vec![], vec![put_op("a", "1"), del_op("a", "")], vec![]),
        ),
        (
            "del a + put a",
            txn_req(vec![], vec![del_op("a", ""), put_op("a", "1")], vec![]),
        ),
        (
            "put x + nested put x",
            txn_req(
                vec![],
                vec![put_op("x", "1"), nested_then(vec![put_op("x", "2")])],
                vec![],
            ),
        ),
        (
            "nested put x + put x",
            txn_req(
                vec![],
                vec![nested_then(vec![put_op("x", "2")]), put_op("x", "1")],
                vec![],
            ),
        ),
        (
            "del [a,z) + nested put b",
            txn_req(
                vec![],
                vec![del_op("a", "z"), nested_then(vec![put_op("b", "1")])],
                vec![],
            ),
        ),
        (
            "nested del [a,z) + put b",
            txn_req(
                vec![],
                vec![nested_then(vec![del_op("a", "z")]), put_op("b", "1")],
                vec![],
            ),
        ),
        (
            "two nested txns both putting x",
            txn_req(
                vec![],
                vec![
                    nested_then(vec![put_op("x", "1")]),
                    nested_then(vec![put_op("x", "2")]),
                ],
                vec![],
            ),
        ),
        (
            "duplicate in the failure list",
            txn_req(
                vec![],
                vec![put_op("ok", "1")],
                vec![put_op("y", "1"), put_op("y", "2")],
            ),
        ),
        (
            "failure: put y + nested put y",
            txn_req(
                vec![],
                vec![],
                vec![put_op("y", "1"), nested_then(vec![put_op("y", "2")])],
            ),
        ),
    ];
    for (case, request) in rejected {
        let result = kv.txn(request).await;
        match result {
            Err(status) => assert_eq!(
                (status.code(), status.message()),
                (Code::InvalidArgument, DUPLICATE_KEY),
                "{case}: {status:?}"
            ),
            Ok(response) => panic!("{case}: expected {DUPLICATE_KEY:?}, got {response:?}"),
        }
    }
    assert_eq!(current_revision(&mut kv).await, 1);

    let accepted: Vec<(&str, TxnRequest)> = vec![
        (
            "then and else of one nested txn share a key",
            txn_req(
                vec![],
                vec![txn_op(txn_req(
                    vec![],
                    vec![put_op("x", "1")],
                    vec![put_op("x", "2")],
                ))],
                vec![],
            ),
        ),
        (
            "overlapping deletes",
            txn_req(vec![], vec![del_op("a", "z"), del_op("b", "c")], vec![]),
        ),
        (
            "read then put",
            txn_req(vec![], vec![get_op(rr("r", "")), put_op("r", "1")], vec![]),
        ),
        (
            "same key in success and failure",
            txn_req(vec![], vec![put_op("s", "1")], vec![put_op("s", "2")]),
        ),
    ];
    for (case, request) in accepted {
        let response = kv.txn(request).await;
        assert!(response.is_ok(), "{case}: {response:?}");
    }
}

/// An empty RequestOp is `key not found`; empty keys in compares and ops are `key is not
/// provided` (§3.2 Txn validation, §5).
#[tokio::test]
async fn txn_validation_rejects_empty_ops_and_empty_compare_keys() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let empty_op = RequestOp { request: None };
    assert_status(
        kv.txn(txn_req(vec![], vec![empty_op.clone()], vec![]))
            .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_status(
        kv.txn(txn_req(vec![], vec![], vec![put_op("k", "v"), empty_op]))
            .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_status(
        kv.txn(txn_req(
            vec![cmp("", CompareResult::Equal, TargetUnion::Version(0))],
            vec![],
            vec![],
        ))
        .await,
        Code::InvalidArgument,
        KEY_NOT_PROVIDED,
    );
    assert_status(
        kv.txn(txn_req(vec![], vec![put_op("", "v")], vec![])).await,
        Code::InvalidArgument,
        KEY_NOT_PROVIDED,
    );
    assert_status(
        kv.txn(txn_req(vec![], vec![get_op(rr("", ""))], vec![]))
            .await,
        Code::InvalidArgument,
        KEY_NOT_PROVIDED,
    );
    assert_eq!(current_revision(&mut kv).await, 1);
}

/// Lease and future-revision errors come only from the branch that runs, and abort the whole
/// txn (§3.2 Txn).
#[tokio::test]
async fn txn_checks_leases_and_revisions_only_on_the_chosen_branch() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let leased_put = RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            lease: 5,
            ..put_req("l", "v")
        })),
    };
    let future_read = get_op(RangeRequest {
        revision: 1000,
        ..rr("l", "")
    });

    let skipped = txn(
        &mut kv,
        txn_req(
            vec![],
            vec![put_op("l", "plain")],
            vec![leased_put.clone(), future_read.clone()],
        ),
    )
    .await;
    assert!(skipped.succeeded);
    assert_eq!(header_revision(&skipped), 2);

    assert_status(
        kv.txn(txn_req(vec![], vec![put_op("m", "1"), leased_put], vec![]))
            .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    assert_status(
        kv.txn(txn_req(vec![], vec![put_op("m", "1"), future_read], vec![]))
            .await,
        Code::OutOfRange,
        FUTURE,
    );
    // An error aborts the whole txn: the put before it is not applied.
    assert!(range(&mut kv, rr("m", "")).await.kvs.is_empty());
    assert_eq!(current_revision(&mut kv).await, 2);
}

// ---- Compact ----

/// Compaction (§3.2 Compact): keeps the newest version at or below the revision, refuses
/// repeated, older and future revisions, supports physical, and does not move the revision.
#[tokio::test]
async fn compact_keeps_the_newest_version_and_rejects_old_and_future_revisions() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    put(&mut kv, "k", "v1").await; // 2
    put(&mut kv, "k", "v2").await; // 3
    put(&mut kv, "other", "o").await; // 4
    put(&mut kv, "k", "v3").await; // 5
    put(&mut kv, "gone", "g").await; // 6
    delete(&mut kv, del_req("gone", "")).await; // 7

    let compacted = kv
        .compact(CompactionRequest {
            revision: 4,
            physical: false,
        })
        .await
        .expect("compact 4")
        .into_inner();
    let compact_header = header(compacted.header.as_ref());
    assert_eq!(
        compact_header.revision, 7,
        "the header carries the current revision"
    );
    assert_ne!(compact_header.member_id, 0);
    assert_eq!(
        current_revision(&mut kv).await,
        7,
        "compaction does not move the revision"
    );

    let at_4 = range(
        &mut kv,
        RangeRequest {
            revision: 4,
            ..rr("\0", "\0")
        },
    )
    .await;
    assert_eq!(
        at_4.kvs.iter().map(full).collect::<Vec<_>>(),
        [
            ("k".into(), "v2".into(), 2, 3, 2, 0),
            ("other".into(), "o".into(), 4, 4, 1, 0)
        ],
        "the newest version at or below the compaction revision survives"
    );
    assert_status(
        kv.range(RangeRequest {
            revision: 3,
            ..rr("k", "")
        })
        .await,
        Code::OutOfRange,
        COMPACTED,
    );
    assert_eq!(
        pairs(
            &range(
                &mut kv,
                RangeRequest {
                    revision: 6,
                    ..rr("gone", "")
                }
            )
            .await
        ),
        [("gone".into(), "g".into())]
    );

    assert_status(
        kv.compact(CompactionRequest {
            revision: 4,
            physical: false,
        })
        .await,
        Code::OutOfRange,
        COMPACTED,
    );
    assert_status(
        kv.compact(CompactionRequest {
            revision: 2,
            physical: false,
        })
        .await,
        Code::OutOfRange,
        COMPACTED,
    );
    assert_status(
        kv.compact(CompactionRequest {
            revision: 8,
            physical: false,
        })
        .await,
        Code::OutOfRange,
        FUTURE,
    );

    let physical = kv
        .compact(CompactionRequest {
            revision: 7,
            physical: true,
        })
        .await
        .expect("physical compact 7");
    assert_eq!(header_revision(&physical.into_inner()), 7);
    assert_status(
        kv.range(RangeRequest {
            revision: 6,
            ..rr("gone", "")
        })
        .await,
        Code::OutOfRange,
        COMPACTED,
    );
    let latest = range(&mut kv, rr("\0", "\0")).await;
    assert_eq!(
        pairs(&latest),
        [("k".into(), "v3".into()), ("other".into(), "o".into())]
    );
    let at_7 = range(
        &mut kv,
        RangeRequest {
            revision: 7,
            ..rr("\0", "\0")
        },
    )
    .await;
    assert_eq!(at_7.kvs, latest.kvs);

    // Writes continue from the same revision counter.
    assert_eq!(header_revision(&put(&mut kv, "k", "v4").await), 8);
    let k = range(&mut kv, rr("k", "")).await;
    assert_eq!(
        k.kvs.iter().map(full).collect::<Vec<_>>(),
        [("k".into(), "v4".into(), 2, 8, 4, 0)]
    );
}

// ---- headers, Status, MemberList ----

/// Header rules (§4): stable non-zero ids, a term >= 1, and the right revision per response kind;
/// a new cluster starts at revision 1 (§3.1).
#[tokio::test]
async fn response_headers_carry_ids_term_and_the_right_revision() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let first = range(&mut kv, rr("k", "")).await;
    let base = header(first.header.as_ref());
    assert_eq!(base.revision, 1, "a new cluster starts at revision 1");
    assert_ne!(base.cluster_id, 0);
    assert_ne!(base.member_id, 0);
    assert!(base.raft_term >= 1, "raft_term {}", base.raft_term);

    let same_ids = |got: &ResponseHeader, what: &str| {
        assert_eq!(
            (got.cluster_id, got.member_id),
            (base.cluster_id, base.member_id),
            "{what}"
        );
        assert!(got.raft_term >= base.raft_term, "{what}: term went back");
    };
    let written = put(&mut kv, "k", "v").await;
    let written_header = header(written.header.as_ref());
    same_ids(&written_header, "put");
    assert_eq!(written_header.revision, 2, "put: the new revision");

    let old_read = range(
        &mut kv,
        RangeRequest {
            revision: 1,
            ..rr("k", "")
        },
    )
    .await;
    same_ids(&header(old_read.header.as_ref()), "range");
    assert_eq!(
        header_revision(&old_read),
        2,
        "range: the current revision, not the one read"
    );

    let deleted_nothing = delete(&mut kv, del_req("nothing", "")).await;
    same_ids(&header(deleted_nothing.header.as_ref()), "delete");
    assert_eq!(
        header_revision(&deleted_nothing),
        2,
        "delete of nothing: current"
    );
    let deleted = delete(&mut kv, del_req("k", "")).await;
    assert_eq!(header_revision(&deleted), 3, "delete: the new revision");

    let read_txn = txn(&mut kv, txn_req(vec![], vec![get_op(rr("k", ""))], vec![])).await;
    same_ids(&header(read_txn.header.as_ref()), "txn");
    assert_eq!(header_revision(&read_txn), 3);
    let write_txn = txn(&mut kv, txn_req(vec![], vec![put_op("k", "again")], vec![])).await;
    assert_eq!(header_revision(&write_txn), 4);

    let mut maintenance = member.maintenance().await;
    let status = maintenance
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    same_ids(&header(status.header.as_ref()), "status");
    assert_eq!(header_revision(&status), 4, "status: the current revision");
}

/// Maintenance.Status (§3.6): a version of at least 3.5.13 (§10), the member leads itself, and
/// the raft indexes are positive and move with writes.
#[tokio::test]
async fn status_reports_version_leader_and_raft_progress() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    put(&mut kv, "k", "v").await;
    let mut maintenance = member.maintenance().await;
    let status = maintenance
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let status_header = header(status.header.as_ref());

    let version = parse_semver(&status.version)
        .unwrap_or_else(|| panic!("version {:?} is not semver", status.version));
    assert!(
        version >= (3, 5, 13),
        "version {} must be at least 3.5.13",
        status.version
    );
    assert_eq!(
        status.leader, status_header.member_id,
        "a single member leads itself"
    );
    assert_ne!(status.leader, 0);
    assert!(status.raft_term >= 1);
    assert_eq!(status.raft_term, status_header.raft_term);
    assert!(status.raft_index > 0, "raft_index {}", status.raft_index);
    assert!(
        status.raft_applied_index > 0,
        "raft_applied_index {}",
        status.raft_applied_index
    );
    assert!(status.db_size > 0, "db_size {}", status.db_size);
    assert!(status.errors.is_empty(), "errors {:?}", status.errors);
    assert!(!status.is_learner);
    assert_eq!(status_header.revision, 2);

    // The raft log moves forward with writes.
    put(&mut kv, "k", "v2").await;
    let later = maintenance
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert!(
        later.raft_index > status.raft_index,
        "{} then {}",
        status.raft_index,
        later.raft_index
    );
    assert!(later.raft_applied_index > status.raft_applied_index);
}

/// Cluster.MemberList (§3.5): the one member with its name and URLs; the header has no revision
/// (§4).
#[tokio::test]
async fn member_list_reports_the_single_member() {
    let member = Member::start_named("solo-member").await;
    let mut cluster = member.cluster().await;
    let listed = cluster
        .member_list(MemberListRequest::default())
        .await
        .expect("member list")
        .into_inner();
    let list_header = header(listed.header.as_ref());
    assert_eq!(list_header.revision, 0, "Member* headers carry no revision");
    assert_ne!(list_header.cluster_id, 0);
    assert!(list_header.raft_term >= 1);
    assert_eq!(listed.members.len(), 1, "{listed:?}");
    let only = &listed.members[0];
    assert_eq!(only.id, list_header.member_id);
    assert_eq!(only.name, member.name());
    assert_eq!(only.name, "solo-member");
    assert_eq!(only.peer_ur_ls, [member.peer_url()]);
    assert_eq!(only.client_ur_ls, [member.endpoint()]);
    assert!(!only.is_learner);

    let mut kv = member.kv().await;
    let range_header = header(range(&mut kv, rr("k", "")).await.header.as_ref());
    assert_eq!(
        (range_header.cluster_id, range_header.member_id),
        (list_header.cluster_id, list_header.member_id)
    );
}

/// Services mnemo does not serve yet answer UNIMPLEMENTED at once instead of hanging (§11.1);
/// the served admin calls refuse bad input with etcd's errors.
#[tokio::test]
async fn unimplemented_methods_answer_unimplemented_promptly() {
    use mnemo::pb::etcdserverpb::auth_client::AuthClient;
    use mnemo::pb::etcdserverpb::{
        AuthStatusRequest, DowngradeRequest, MemberAddRequest, MoveLeaderRequest,
    };

    let member = Member::start().await;
    let channel = member.channel().await;
    let deadline = Duration::from_secs(5);
    let within = |what: &'static str| {
        move |elapsed: Result<tonic::Status, tokio::time::error::Elapsed>| {
            let status = elapsed.unwrap_or_else(|_| panic!("{what} did not answer within 5 s"));
            assert_eq!(status.code(), Code::Unimplemented, "{what}: {status:?}");
        }
    };

    let mut maintenance = member.maintenance().await;
    within("Downgrade")(
        tokio::time::timeout(deadline, async {
            maintenance
                .downgrade(DowngradeRequest::default())
                .await
                .expect_err("Downgrade must fail")
        })
        .await,
    );
    // MoveLeader and MemberAdd are served: bad input gets etcd's errors, not UNIMPLEMENTED.
    let bad_target = maintenance
        .move_leader(MoveLeaderRequest { target_id: 0 })
        .await
        .expect_err("MoveLeader to member 0 must fail");
    assert_eq!(
        (bad_target.code(), bad_target.message()),
        (
            Code::FailedPrecondition,
            "etcdserver: bad leader transferee"
        )
    );
    let mut cluster = member.cluster().await;
    let no_urls = cluster
        .member_add(MemberAddRequest::default())
        .await
        .expect_err("MemberAdd without peer URLs must fail");
    assert_eq!(
        (no_urls.code(), no_urls.message()),
        (
            Code::InvalidArgument,
            "etcdserver: given member URLs are invalid"
        )
    );
    // Auth is served: a fresh member reports it off, at auth revision 0.
    let mut auth = AuthClient::new(channel);
    let status = tokio::time::timeout(deadline, auth.auth_status(AuthStatusRequest::default()))
        .await
        .expect("AuthStatus answers within 5 s")
        .expect("AuthStatus")
        .into_inner();
    assert_eq!((status.enabled, status.auth_revision), (false, 0));

    // The member still serves after refusing those.
    let mut kv = member.kv().await;
    assert_eq!(header_revision(&put(&mut kv, "k", "v").await), 2);
}

/// Maintenance.Alarm GET on a fresh member lists no alarms, with a header, as etcdctl 3.5's
/// `endpoint health` and `alarm list` expect (raising alarms is tested in `quota`); HashKV hashes the history, equal for equal
/// histories, different once the history differs, and refuses compacted revisions (§3.6).
#[tokio::test]
async fn alarm_list_is_empty_and_hash_kv_follows_the_history() {
    use mnemo::pb::etcdserverpb::{AlarmRequest, HashKvRequest};

    let member = Member::start().await;
    let mut kv = member.kv().await;
    let mut maintenance = member.maintenance().await;
    let alarms = maintenance
        .alarm(AlarmRequest::default())
        .await
        .expect("alarm get")
        .into_inner();
    assert!(alarms.alarms.is_empty());
    assert!(alarms.header.is_some_and(|header| header.revision == 1));

    put(&mut kv, "a", "1").await;
    let hash = |revision| {
        let mut maintenance = maintenance.clone();
        async move { maintenance.hash_kv(HashKvRequest { revision }).await }
    };
    let first = hash(0).await.expect("hash").into_inner();
    let again = hash(0).await.expect("hash").into_inner();
    assert_eq!(first.hash, again.hash);
    assert_eq!(first.hash_revision, 2);
    put(&mut kv, "a", "2").await;
    let later = hash(0).await.expect("hash").into_inner();
    assert_ne!(later.hash, first.hash);
    assert_eq!(
        hash(2).await.expect("hash at 2").into_inner().hash,
        first.hash
    );
    kv.compact(CompactionRequest {
        revision: 3,
        physical: true,
    })
    .await
    .expect("compact");
    let status = hash(2).await.expect_err("compacted revision");
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(
        status.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
}

/// Maintenance.Hash hashes the whole database: stable while nothing changes, different after
/// any write (a lease grant too, which HashKV does not cover), with the revision in the header.
#[tokio::test]
async fn hash_covers_the_whole_database() {
    use mnemo::pb::etcdserverpb::{HashKvRequest, HashRequest, LeaseGrantRequest};

    let member = Member::start().await;
    let mut kv = member.kv().await;
    let mut maintenance = member.maintenance().await;
    put(&mut kv, "a", "1").await;
    let hash = |mut maintenance: mnemo::pb::etcdserverpb::maintenance_client::MaintenanceClient<
        tonic::transport::Channel,
    >| async move {
        let response = maintenance
            .hash(HashRequest {})
            .await
            .expect("hash")
            .into_inner();
        (response.hash, response.header.expect("header").revision)
    };
    let (first, revision) = hash(maintenance.clone()).await;
    assert_eq!(revision, 2);
    assert_eq!(hash(maintenance.clone()).await, (first, 2));
    let kv_hash = maintenance
        .hash_kv(HashKvRequest { revision: 0 })
        .await
        .expect("hash kv")
        .into_inner()
        .hash;
    mnemo::pb::etcdserverpb::lease_client::LeaseClient::new(member.channel().await)
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 7 })
        .await
        .expect("grant");
    let (after_grant, revision) = hash(maintenance.clone()).await;
    assert_ne!(after_grant, first, "a lease grant changes the database");
    assert_eq!(revision, 2, "a lease grant is not a revision");
    assert_eq!(
        maintenance
            .hash_kv(HashKvRequest { revision: 0 })
            .await
            .expect("hash kv")
            .into_inner()
            .hash,
        kv_hash,
        "HashKV covers the key history only"
    );
    put(&mut kv, "a", "2").await;
    let (after_put, revision) = hash(maintenance.clone()).await;
    assert_ne!(after_put, after_grant);
    assert_eq!(revision, 3);
}

/// etcd 3.6 refuses sort enums it does not know, in a Range and in a Txn's ranges (§3.2).
#[tokio::test]
async fn unknown_sort_options_are_refused() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let bad_order = RangeRequest {
        sort_order: 7,
        ..rr("a", "")
    };
    let status = kv.range(bad_order).await.expect_err("unknown sort order");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "etcdserver: invalid sort option");
    let bad_target = RangeRequest {
        sort_target: 9,
        ..rr("a", "")
    };
    let txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestRange(bad_target)),
        }],
        ..Default::default()
    };
    let status = kv.txn(txn).await.expect_err("unknown sort target in a txn");
    assert_eq!(status.message(), "etcdserver: invalid sort option");
}

/// A request message over the gRPC receive limit (request limit + 512 KiB) is refused the way
/// etcd's gRPC server refuses it: ResourceExhausted, `grpc: received message larger than max
/// (N vs. 2097152)` (etcd-api.md §5).
#[tokio::test]
async fn message_over_the_grpc_limit_is_resource_exhausted() {
    let member = Member::start().await;
    let mut kv = member.kv().await.max_encoding_message_size(usize::MAX);
    let value = vec![b'x'; 3_000_000];
    let status = kv
        .put(put_req("big", value))
        .await
        .expect_err("a 3 MB message must be refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("grpc: received message larger than max (")
            && status.message().ends_with(" vs. 2097152)"),
        "{}",
        status.message()
    );
    // The member keeps serving.
    put(&mut kv, "small", "ok").await;
}
