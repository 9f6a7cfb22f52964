//! Lease expiry on one member, timed with the real clock: the keys of a lease that is no
//! longer renewed disappear no earlier than one TTL after its last keepalive and not much
//! later, in one revision, and the keys of a lease kept alive never disappear.
//! Runs unchanged against etcd 3.4.23 (`MNEMO_IT_SERVER=/usr/bin/etcd`).
//!
//! The member runs with etcd's default 1 s election timeout. When a keepalive renewed the
//! lease is known only to lie between the moment the test sent it and the moment the answer
//! arrived, so the lower bound counts from the first and the upper bound from the second.

use std::time::{Duration, Instant};

use mnemo::pb::etcdserverpb::lease_client::LeaseClient;
use mnemo::pb::etcdserverpb::{PutRequest, RangeRequest};

use crate::support::lease::{
    PrefixWatch, event_summary, grant, keep_alive_once, put_with_lease, revoke, time_to_live,
};
use crate::support::{Member, range};

/// The TTL of the leases timed here.
const TTL: Duration = Duration::from_secs(5);
/// etcd's default `--election-timeout`, which the member runs with.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// How late past its TTL the deletion may reach a watcher, on top of one election timeout.
/// The election timeout covers the leader's expiry check, which runs every 500 ms in etcd and
/// in mnemo, and the commit of the revoke it proposes; this slack covers the watch delivery
/// and the scheduling of three processes (member, test, other builds) on a shared 2-core
/// machine.
const EXPIRY_SLACK: Duration = Duration::from_millis(500);
/// How often the kept-alive lease is renewed: clientv3 renews every TTL/3, about 1.7 s here.
const KEEPALIVE_EVERY: Duration = Duration::from_millis(1500);
/// How long the kept-alive lease is kept alive: more than two TTLs.
const KEPT_ALIVE_FOR: Duration = Duration::from_secs(12);
/// Deadline of one keepalive, RPC or watch response.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

fn ttl_secs() -> i64 {
    i64::try_from(TTL.as_secs()).expect("a small TTL")
}

/// Grants lease `id` for [`TTL`] and attaches `keys` to it.
async fn lease_with_keys(
    member: &Member,
    id: i64,
    keys: &[&str],
) -> LeaseClient<tonic::transport::Channel> {
    let mut lease = LeaseClient::new(member.channel().await);
    assert_eq!(grant(&mut lease, ttl_secs(), id).await.ttl, ttl_secs());
    let mut kv = member.kv().await;
    for key in keys {
        kv.put(put_with_lease(key, "v", id)).await.expect("put");
    }
    lease
}

/// A 5 s lease renewed once and then left alone: its three keys are deleted by one revision,
/// delivered to a watcher as one response, between 5 s after the keepalive was sent and
/// 5 s + one election timeout + [`EXPIRY_SLACK`] after its answer arrived. The lease is gone
/// afterwards: TimeToLive says -1 and a keepalive gets TTL 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_a_lease_left_alone_disappear_one_ttl_after_its_last_keepalive() {
    let member = Member::start().await;
    let mut lease = lease_with_keys(&member, 5, &["e/a", "e/b", "e/c"]).await;
    let mut watch = PrefixWatch::open(member.channel().await, "e/", 0, ANSWER_TIMEOUT).await;

    let last = keep_alive_once(member.channel().await, 5, ANSWER_TIMEOUT).await;
    let renewed = last.answer.expect("the last keepalive");
    assert_eq!(renewed.ttl, ttl_secs());
    let response = watch
        .next(TTL + ELECTION_TIMEOUT + EXPIRY_SLACK + ANSWER_TIMEOUT)
        .await;
    let seen = Instant::now();

    let since_sent = seen - last.sent;
    let since_answered = seen - last.answered;
    eprintln!(
        "lease expiry: deletes seen {since_sent:?} after the last keepalive was sent, \
         {since_answered:?} after its answer; {:?} late",
        since_answered.saturating_sub(TTL)
    );
    let mut events = event_summary(&response);
    events.sort();
    let revision = response.header.expect("watch header").revision;
    assert_eq!(
        events,
        [
            (true, "e/a".to_owned(), revision),
            (true, "e/b".to_owned(), revision),
            (true, "e/c".to_owned(), revision),
        ],
        "one response of three deletes at one revision: {response:?}"
    );
    assert_eq!(revision, 5, "grant at 1, three puts, then the revoke");
    assert!(
        since_sent >= TTL,
        "the keys went {since_sent:?} after the keepalive was sent, before the TTL"
    );
    assert!(
        since_answered <= TTL + ELECTION_TIMEOUT + EXPIRY_SLACK,
        "the keys went {since_answered:?} after the keepalive's answer"
    );

    assert_eq!(time_to_live(&mut lease, 5, false).await.ttl, -1);
    let after = keep_alive_once(member.channel().await, 5, ANSWER_TIMEOUT).await;
    assert_eq!(after.answer.expect("keepalive of an expired lease").ttl, 0);
}

/// A 5 s lease renewed every 1.5 s for 12 s keeps its keys: no delete reaches a watcher before
/// a later put, every keepalive gets the full TTL, and the keys are still there at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_a_lease_kept_alive_never_disappear() {
    let member = Member::start().await;
    let mut lease = lease_with_keys(&member, 6, &["k/a", "k/b"]).await;
    let mut watch = PrefixWatch::open(member.channel().await, "k/", 0, ANSWER_TIMEOUT).await;

    let started = Instant::now();
    let rounds_max = KEPT_ALIVE_FOR.as_millis() / KEEPALIVE_EVERY.as_millis() + 1;
    let mut last_answered = started;
    for _ in 0..rounds_max {
        if started.elapsed() >= KEPT_ALIVE_FOR {
            break;
        }
        let round = keep_alive_once(member.channel().await, 6, ANSWER_TIMEOUT).await;
        let answer = round.answer.expect("keepalive");
        assert_eq!(
            answer.ttl,
            ttl_secs(),
            "renewed {:?} into the test",
            started.elapsed()
        );
        assert!(
            round.sent - last_answered < TTL,
            "the test itself left {:?} between two keepalives",
            round.sent - last_answered
        );
        last_answered = round.answered;
        tokio::time::sleep(KEEPALIVE_EVERY).await;
    }
    assert!(
        started.elapsed() >= KEPT_ALIVE_FOR,
        "kept alive for the whole time"
    );

    // The fence is the first thing the watcher sees: a stream delivers in revision order, so
    // a delete of the lease's keys would have come before it.
    let mut kv = member.kv().await;
    let fence = kv
        .put(PutRequest {
            key: b"k/fence".to_vec().into(),
            value: b"v".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("put the fence")
        .into_inner();
    let fence_revision = fence.header.expect("put header").revision;
    let response = watch.next(ANSWER_TIMEOUT).await;
    assert_eq!(
        event_summary(&response),
        [(false, "k/fence".to_owned(), fence_revision)],
        "the first event after {KEPT_ALIVE_FOR:?} of keepalives"
    );
    let kept = range(
        &mut kv,
        RangeRequest {
            key: b"k/".to_vec().into(),
            range_end: b"k0".to_vec().into(),
            ..Default::default()
        },
    )
    .await;
    let keys: Vec<&[u8]> = kept.kvs.iter().map(|kv| &kv.key[..]).collect();
    assert_eq!(keys, [&b"k/a"[..], b"k/b", b"k/fence"]);
    assert_eq!(
        time_to_live(&mut lease, 6, false).await.granted_ttl,
        ttl_secs()
    );
    revoke(&mut lease, 6).await;
}
