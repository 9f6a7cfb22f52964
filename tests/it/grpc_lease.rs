//! The Lease service over gRPC, checked against etcd v3's lease contract (etcd-api.md §3.4,
//! §3.1, §5): grant (explicit and server-picked ids, refusals, the minimum TTL), revoke,
//! keepalive, TimeToLive, Leases, and puts that attach, keep or name an unknown lease.
//! Every expectation here also holds against etcd 3.4.23 (`MNEMO_IT_SERVER=/usr/bin/etcd`).
//!
//! Each test starts its own member, so revisions are predictable: a new cluster is at
//! revision 1, a grant, keepalive or TimeToLive changes no revision, and a revoke that deletes
//! keys adds exactly 1.
//!
//! TimeToLive's remaining seconds depend on how long the test took between the grant (or the
//! last keepalive) and the query, so they are checked against that measured interval: the
//! server truncates to whole seconds, so `granted - ceil(elapsed) <= remaining <= granted`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mnemo::pb::etcdserverpb::kv_client::KvClient;
use mnemo::pb::etcdserverpb::lease_client::LeaseClient;
use mnemo::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RangeResponse,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::lease::{
    KeepAliveStream, PrefixWatch, event_summary, grant, lease_ids, put_with_lease, revoke,
    time_to_live,
};
use crate::support::{Member, assert_status, put, range};

const LEASE_EXISTS: &str = "etcdserver: lease already exists";
const TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
const KEY_NOT_FOUND: &str = "etcdserver: key not found";
/// etcd's largest TTL, 9e9 seconds.
const TTL_MAX: i64 = 9_000_000_000;
/// How long a test waits for one keepalive answer or watch response.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

async fn lease_client(member: &Member) -> LeaseClient<Channel> {
    LeaseClient::new(member.channel().await)
}

/// The single key `key` as the member holds it now.
async fn get(kv: &mut KvClient<Channel>, key: &str) -> RangeResponse {
    range(
        kv,
        RangeRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        },
    )
    .await
}

/// The lease attached to `key`; panics when the key does not exist.
async fn lease_of(kv: &mut KvClient<Channel>, key: &str) -> i64 {
    let response = get(kv, key).await;
    let found = response
        .kvs
        .first()
        .unwrap_or_else(|| panic!("{key} does not exist"));
    found.lease
}

/// The current revision, from a linearizable read.
async fn current_revision(kv: &mut KvClient<Channel>) -> i64 {
    let response = get(kv, "any").await;
    response.header.expect("range header").revision
}

/// Asserts TimeToLive's remaining seconds fit the interval since `renewed_before`, a moment
/// taken before the grant or keepalive was sent.
#[track_caller]
fn assert_remaining(remaining: i64, granted: i64, renewed_before: Instant) {
    let elapsed = renewed_before.elapsed();
    let elapsed_secs_ceil =
        i64::try_from(elapsed.as_secs()).expect("seconds") + i64::from(elapsed.subsec_nanos() > 0);
    assert!(
        (granted - elapsed_secs_ceil..=granted).contains(&remaining),
        "remaining {remaining} s of {granted} s, {elapsed:?} after the renewal was sent"
    );
}

fn key_set(keys: &[bytes::Bytes]) -> BTreeSet<String> {
    keys.iter()
        .map(|key| String::from_utf8_lossy(key).into_owned())
        .collect()
}

/// A grant with an explicit id returns that id; with id 0 the server picks a positive one.
/// Neither moves the revision, and both leases are listed.
#[tokio::test]
async fn grant_returns_the_explicit_id_or_a_positive_one_it_picked() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    let mut kv = member.kv().await;

    let explicit = grant(&mut lease, 60, 1000).await;
    assert_eq!((explicit.id, explicit.ttl), (1000, 60));
    assert_eq!(explicit.header.expect("grant header").revision, 1);
    assert_eq!(explicit.error, "");

    let picked = grant(&mut lease, 60, 0).await;
    assert!(
        picked.id > 0,
        "a server-picked id is positive: {}",
        picked.id
    );
    assert_ne!(picked.id, 1000);
    assert_eq!(picked.ttl, 60);

    let listed: BTreeSet<i64> = lease_ids(&mut lease).await.into_iter().collect();
    assert_eq!(listed, BTreeSet::from([1000, picked.id]));
    assert_eq!(
        current_revision(&mut kv).await,
        1,
        "grants move no revision"
    );
}

/// A taken id is refused with FailedPrecondition, and a TTL over 9e9 s with OutOfRange; 9e9
/// itself is granted.
#[tokio::test]
async fn grant_refuses_a_taken_id_and_a_ttl_over_9e9_seconds() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    grant(&mut lease, 60, 7).await;
    assert_status(
        lease
            .lease_grant(LeaseGrantRequest { ttl: 30, id: 7 })
            .await,
        Code::FailedPrecondition,
        LEASE_EXISTS,
    );
    assert_status(
        lease
            .lease_grant(LeaseGrantRequest {
                ttl: TTL_MAX + 1,
                id: 8,
            })
            .await,
        Code::OutOfRange,
        TTL_TOO_LARGE,
    );
    // The refused grant left id 8 free.
    let largest = grant(&mut lease, TTL_MAX, 8).await;
    assert_eq!((largest.id, largest.ttl), (8, TTL_MAX));
    // The first grant of 7 still holds its own TTL.
    assert_eq!(time_to_live(&mut lease, 7, false).await.granted_ttl, 60);
}

/// TTLs below ceil(1.5 × election timeout) are raised to it, and the answer carries the TTL
/// granted: 2 s at the default 1 s election timeout (etcd 3.4.23: 1 → 2, 0 → 2, -5 → 2), and
/// 5 s at a 3 s election timeout.
#[tokio::test]
async fn grant_raises_small_ttls_to_one_and_a_half_election_timeouts() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    for (id, asked, granted) in [(1, 1, 2), (2, 0, 2), (3, -5, 2), (4, 2, 2), (5, 3, 3)] {
        let response = grant(&mut lease, asked, id).await;
        assert_eq!(response.ttl, granted, "TTL {asked} asked");
        assert_eq!(
            time_to_live(&mut lease, id, false).await.granted_ttl,
            granted,
            "TimeToLive's granted TTL of {asked} asked"
        );
    }
    drop(member);

    let slow = Member::start_with_flags(
        "infra0",
        &["--heartbeat-interval", "300", "--election-timeout", "3000"],
    )
    .await;
    let mut lease = lease_client(&slow).await;
    for (id, asked, granted) in [(1, 1, 5), (2, 4, 5), (3, 6, 6)] {
        assert_eq!(
            grant(&mut lease, asked, id).await.ttl,
            granted,
            "TTL {asked} asked at a 3 s election timeout"
        );
    }
}

/// A revoke deletes every attached key in one revision, delivered to a watcher as one response
/// of DELETE events; keys without the lease stay. The lease is gone afterwards.
#[tokio::test]
async fn revoke_deletes_all_attached_keys_in_one_revision() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    let mut kv = member.kv().await;
    grant(&mut lease, 60, 42).await;
    for key in ["r/c", "r/a", "r/b"] {
        kv.put(put_with_lease(key, "v", 42)).await.expect("put");
    }
    put(&mut kv, "r/free", "v").await; // revision 5
    let mut watch = PrefixWatch::open(member.channel().await, "r/", 0, ANSWER_TIMEOUT).await;

    let revoked_at = revoke(&mut lease, 42).await;
    assert_eq!(
        revoked_at, 6,
        "the revoke's header carries its one new revision"
    );
    let response = watch.next(ANSWER_TIMEOUT).await;
    let mut events = event_summary(&response);
    events.sort();
    assert_eq!(
        events,
        [
            (true, "r/a".to_owned(), 6),
            (true, "r/b".to_owned(), 6),
            (true, "r/c".to_owned(), 6),
        ],
        "one response holds the three deletes: {response:?}"
    );
    assert_eq!(response.header.expect("watch header").revision, 6);

    let left = range(
        &mut kv,
        RangeRequest {
            key: b"r/".to_vec().into(),
            range_end: b"r0".to_vec().into(),
            ..Default::default()
        },
    )
    .await;
    let keys: Vec<&[u8]> = left.kvs.iter().map(|kv| &kv.key[..]).collect();
    assert_eq!(keys, [&b"r/free"[..]]);
    assert_eq!(left.header.expect("range header").revision, 6);
    assert_eq!(time_to_live(&mut lease, 42, false).await.ttl, -1);
    assert!(lease_ids(&mut lease).await.is_empty());
}

/// A lease without keys is revoked without a new revision.
#[tokio::test]
async fn revoke_of_a_lease_without_keys_moves_no_revision() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    let mut kv = member.kv().await;
    grant(&mut lease, 60, 5).await;
    assert_eq!(revoke(&mut lease, 5).await, 1);
    assert_eq!(current_revision(&mut kv).await, 1);
}

/// Revoking a lease that was never granted, or twice, is NotFound.
#[tokio::test]
async fn revoke_of_an_unknown_lease_is_not_found() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    assert_status(
        lease.lease_revoke(LeaseRevokeRequest { id: 12345 }).await,
        Code::NotFound,
        LEASE_NOT_FOUND,
    );
    grant(&mut lease, 60, 12345).await;
    revoke(&mut lease, 12345).await;
    assert_status(
        lease.lease_revoke(LeaseRevokeRequest { id: 12345 }).await,
        Code::NotFound,
        LEASE_NOT_FOUND,
    );
}

/// On one keepalive stream every request gets an answer, in order: `{ID, TTL = granted}` for a
/// live lease and `{ID, TTL = 0}` (not an error) for an unknown or revoked one; the stream
/// stays usable after a TTL-0 answer. Each answer's header carries the current revision.
#[tokio::test]
async fn keepalive_answers_the_granted_ttl_or_zero_for_unknown_leases() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    let mut kv = member.kv().await;
    grant(&mut lease, 30, 77).await;
    put(&mut kv, "k", "v").await; // revision 2
    let mut stream = KeepAliveStream::open(member.channel().await);

    let renewed = stream
        .keep_alive(77, ANSWER_TIMEOUT)
        .await
        .expect("keepalive");
    assert_eq!((renewed.id, renewed.ttl), (77, 30));
    assert_eq!(renewed.header.expect("keepalive header").revision, 2);

    let unknown = stream
        .keep_alive(999, ANSWER_TIMEOUT)
        .await
        .expect("an unknown lease is answered, not failed");
    assert_eq!((unknown.id, unknown.ttl), (999, 0));

    let again = stream
        .keep_alive(77, ANSWER_TIMEOUT)
        .await
        .expect("keepalive");
    assert_eq!((again.id, again.ttl), (77, 30));

    revoke(&mut lease, 77).await;
    let revoked = stream
        .keep_alive(77, ANSWER_TIMEOUT)
        .await
        .expect("keepalive");
    assert_eq!((revoked.id, revoked.ttl), (77, 0));
}

/// A keepalive restarts the lease's TTL: TimeToLive after it reports close to the full TTL
/// again.
#[tokio::test]
async fn keepalive_restarts_the_remaining_ttl() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    let granted_before = Instant::now();
    grant(&mut lease, 4, 3).await;
    // Long enough that a lease that was not renewed shows a smaller remaining TTL.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_remaining(
        time_to_live(&mut lease, 3, false).await.ttl,
        4,
        granted_before,
    );
    assert!(time_to_live(&mut lease, 3, false).await.ttl <= 1);
    let renewed_before = Instant::now();
    let mut stream = KeepAliveStream::open(member.channel().await);
    let renewed = stream
        .keep_alive(3, ANSWER_TIMEOUT)
        .await
        .expect("keepalive");
    assert_eq!(renewed.ttl, 4);
    let status = time_to_live(&mut lease, 3, false).await;
    assert_remaining(status.ttl, 4, renewed_before);
    assert!(status.ttl >= 3, "renewed to 4 s, {} s left", status.ttl);
}

/// TimeToLive reports the remaining seconds (at most the granted TTL), the granted TTL, and the
/// attached keys only when asked; an unknown lease is a normal answer with TTL -1.
#[tokio::test]
async fn time_to_live_reports_remaining_granted_and_keys() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    let mut kv = member.kv().await;
    let granted_before = Instant::now();
    grant(&mut lease, 30, 9).await;
    for key in ["t/b", "t/a"] {
        kv.put(put_with_lease(key, "v", 9)).await.expect("put");
    }

    let without_keys = time_to_live(&mut lease, 9, false).await;
    assert_eq!((without_keys.id, without_keys.granted_ttl), (9, 30));
    assert_remaining(without_keys.ttl, 30, granted_before);
    assert!(without_keys.keys.is_empty(), "keys only when asked");
    assert_eq!(without_keys.header.expect("header").revision, 3);

    let with_keys = time_to_live(&mut lease, 9, true).await;
    assert_eq!(with_keys.granted_ttl, 30);
    assert_remaining(with_keys.ttl, 30, granted_before);
    assert_eq!(
        key_set(&with_keys.keys),
        BTreeSet::from(["t/a".to_owned(), "t/b".to_owned()])
    );

    let unknown = time_to_live(&mut lease, 404, true).await;
    assert_eq!(
        (unknown.id, unknown.ttl, unknown.granted_ttl),
        (404, -1, 0),
        "an unknown lease: {unknown:?}"
    );
    assert!(unknown.keys.is_empty());
}

/// Leases lists exactly the granted, unrevoked ids.
#[tokio::test]
async fn leases_lists_the_granted_ids() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    assert!(lease_ids(&mut lease).await.is_empty());
    for id in [30, 10, 20] {
        grant(&mut lease, 100, id).await;
    }
    let listed: BTreeSet<i64> = lease_ids(&mut lease).await.into_iter().collect();
    assert_eq!(listed, BTreeSet::from([10, 20, 30]));
    revoke(&mut lease, 20).await;
    let listed: BTreeSet<i64> = lease_ids(&mut lease).await.into_iter().collect();
    assert_eq!(listed, BTreeSet::from([10, 30]));
}

/// A put with a lease attaches the key; `ignore_lease` keeps the attachment; a plain put
/// detaches it, so the revoke leaves that key alone.
#[tokio::test]
async fn put_attaches_keeps_or_detaches_the_lease() {
    let member = Member::start().await;
    let mut lease = lease_client(&member).await;
    let mut kv = member.kv().await;
    grant(&mut lease, 60, 55).await;
    kv.put(put_with_lease("a", "1", 55)).await.expect("put a");
    kv.put(put_with_lease("b", "1", 55)).await.expect("put b");
    assert_eq!(lease_of(&mut kv, "a").await, 55);

    kv.put(PutRequest {
        key: b"a".to_vec().into(),
        value: b"2".to_vec().into(),
        ignore_lease: true,
        ..Default::default()
    })
    .await
    .expect("put a with ignore_lease");
    assert_eq!(lease_of(&mut kv, "a").await, 55, "ignore_lease keeps it");

    put(&mut kv, "b", "2").await;
    assert_eq!(lease_of(&mut kv, "b").await, 0, "a plain put detaches it");
    let attached = time_to_live(&mut lease, 55, true).await;
    assert_eq!(key_set(&attached.keys), BTreeSet::from(["a".to_owned()]));

    revoke(&mut lease, 55).await;
    assert!(
        get(&mut kv, "a").await.kvs.is_empty(),
        "a went with the lease"
    );
    assert_eq!(get(&mut kv, "b").await.kvs.len(), 1, "b was detached");
}

/// A put naming a lease that does not exist is NotFound and writes nothing; `ignore_lease`
/// with a lease, or on a missing key, is InvalidArgument.
#[tokio::test]
async fn put_with_an_unknown_lease_is_refused() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    assert_status(
        kv.put(put_with_lease("a", "1", 31337)).await,
        Code::NotFound,
        LEASE_NOT_FOUND,
    );
    assert!(get(&mut kv, "a").await.kvs.is_empty());
    assert_eq!(current_revision(&mut kv).await, 1);

    put(&mut kv, "a", "1").await;
    assert_status(
        kv.put(PutRequest {
            key: b"a".to_vec().into(),
            lease: 5,
            ignore_lease: true,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        LEASE_PROVIDED,
    );
    assert_status(
        kv.put(PutRequest {
            key: b"missing".to_vec().into(),
            value: b"1".to_vec().into(),
            ignore_lease: true,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        KEY_NOT_FOUND,
    );
}
