//! The two `KvClient` implementations (in-process and gRPC) give the same answers to the same
//! script, so an embedder can switch between them.

use std::time::Duration;

use futures::StreamExt;
use mnemo::client::{
    ClientError, EtcdError, GrpcClient, KvClient, LocalClient, Reply, WatchEvents, WatchRequest,
};
use mnemo::embed::{Config, Node};
use mnemo::types::{
    Compare, CompareResult, DeleteRangeRequest, Event, PutRequest, RangeRequest, RequestOp,
    SortOrder, SortTarget, TxnRequest,
};

use crate::support::{Member, poll_until};

/// Everything a script observed, with the member-specific header fields left out.
#[derive(Debug, PartialEq)]
struct Observed(Vec<String>);

fn record<T: std::fmt::Debug>(observed: &mut Observed, reply: Result<Reply<T>, ClientError>) {
    observed.0.push(match reply {
        Ok(reply) => format!("rev={} {:?}", reply.header.revision, reply.response),
        Err(error) => format!("error {error}"),
    });
}

async fn script(client: &impl KvClient) -> Observed {
    let mut observed = Observed(Vec::new());
    for index in 0..5 {
        record(
            &mut observed,
            client
                .put(PutRequest::new(format!("k{index}"), format!("v{index}")).with_prev_kv())
                .await,
        );
    }
    record(
        &mut observed,
        client
            .put(PutRequest::new("k1", "again").with_prev_kv())
            .await,
    );
    record(
        &mut observed,
        client
            .range(
                RangeRequest::prefix("k")
                    .sort(SortTarget::Mod, SortOrder::Descend)
                    .limit(3),
            )
            .await,
    );
    let swap = TxnRequest::when([Compare::value("k1", CompareResult::Equal, "again")])
        .and_then([
            RequestOp::from(PutRequest::new("k1", "swapped")),
            RangeRequest::key("k1").into(),
        ])
        .or_else([RangeRequest::key("k1").into()]);
    record(&mut observed, client.txn(swap).await);
    record(
        &mut observed,
        client
            .delete_range(DeleteRangeRequest::prefix("k").with_prev_kv())
            .await,
    );
    record(
        &mut observed,
        client.range(RangeRequest::prefix("k").at_revision(3)).await,
    );
    observed.0.push(format!(
        "{:?}",
        client.compact(4, false).await.map(|header| header.revision)
    ));
    record(
        &mut observed,
        client.range(RangeRequest::prefix("k").at_revision(3)).await,
    );
    record(
        &mut observed,
        client.put(PutRequest::new("", "no key")).await,
    );
    record(
        &mut observed,
        client
            .put(PutRequest::new("leased", "v").with_lease(42))
            .await,
    );
    observed
}

/// A member embedded in this process, in `dir`, on a free client port and a free peer port
/// (the default 2380 may be taken by another test's member).
async fn embedded(dir: &tempfile::TempDir) -> Node {
    let peer: url::Url = format!("http://127.0.0.1:{}", crate::support::free_port())
        .parse()
        .expect("url");
    let config = Config {
        data_dir: dir.path().join("embedded"),
        listen_client_urls: vec!["http://127.0.0.1:0".parse().expect("url")],
        listen_peer_urls: vec![peer.clone()],
        initial_advertise_peer_urls: vec![peer],
        ..Config::default()
    };
    Node::start(config).await.expect("embedded member")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_and_grpc_clients_agree() {
    let member = Member::start().await;
    let remote = GrpcClient::connect(&member.endpoint())
        .await
        .expect("connect");
    let over_grpc = script(&remote).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let node = embedded(&dir).await;
    let local: LocalClient = node.client();
    let in_process = script(&local).await;
    node.shutdown().await;

    assert_eq!(in_process, over_grpc);
    // The script did reach the errors it means to check.
    assert!(
        over_grpc
            .0
            .iter()
            .any(|line| line == "error etcdserver: mvcc: required revision has been compacted")
    );
    assert!(
        over_grpc
            .0
            .iter()
            .any(|line| line == "error etcdserver: key is not provided")
    );
    assert!(
        over_grpc
            .0
            .iter()
            .any(|line| line == "error etcdserver: requested lease not found")
    );
    // A client kept after its member stopped is told so, and keeps nothing open.
    assert_eq!(
        local.get("k1").await,
        Err(ClientError::Etcd(EtcdError::Stopped))
    );
}

/// Reads `count` events from a watch (across as many updates as it takes), failing loudly
/// when they do not come within a bound.
async fn next_events(watch: &mut WatchEvents, count: usize) -> Vec<Event> {
    let mut events = Vec::new();
    while events.len() < count {
        let update = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .unwrap_or_else(|_| panic!("no watch update within 10 s; have {events:?}"))
            .expect("watch ended early")
            .expect("watch update");
        events.extend(update.events);
    }
    assert_eq!(events.len(), count, "more events than written: {events:?}");
    events
}

/// One line per event: kind, key, value, revision and the previous value.
fn describe(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|event| {
            format!(
                "{:?} {} {} @{} prev={:?}",
                event.kind,
                String::from_utf8_lossy(&event.kv.key),
                String::from_utf8_lossy(&event.kv.value),
                event.kv.mod_revision,
                event
                    .prev_kv
                    .as_ref()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
            )
        })
        .collect()
}

/// The same watch script through either client: a replay from the past with `prev_kv`, a
/// live watch, a compacted start and a refused range.
async fn watch_script(client: &impl KvClient) -> Vec<String> {
    let mut seen = Vec::new();
    client.set("w/a", "1").await.expect("put"); // revision 2
    client.set("w/b", "1").await.expect("put"); // 3
    client.set("other", "x").await.expect("put"); // 4
    let mut live = client
        .watch(WatchRequest::prefix("w/"))
        .await
        .expect("live watch");
    let mut replay = client
        .watch(WatchRequest::prefix("w/").from_revision(2).with_prev_kv())
        .await
        .expect("replay watch");
    client.set("w/a", "2").await.expect("put"); // 5
    client
        .txn(TxnRequest::when([]).and_then([
            RequestOp::from(PutRequest::new("w/c", "1")),
            DeleteRangeRequest::key("w/b").into(),
        ]))
        .await
        .expect("txn"); // 6
    seen.extend(describe(&next_events(&mut replay, 5).await));
    seen.push("--".into());
    seen.extend(describe(&next_events(&mut live, 3).await));
    client.compact(5, false).await.expect("compact");
    let compacted = client
        .watch(WatchRequest::prefix("w/").from_revision(3))
        .await
        .expect("watch accepted before the compacted notice");
    let mut compacted = compacted;
    let notice = tokio::time::timeout(Duration::from_secs(10), compacted.next())
        .await
        .expect("compacted notice within 10 s")
        .expect("an item");
    seen.push(format!("{notice:?}"));
    let refused = client.watch(WatchRequest::range("b", "a")).await.err();
    seen.push(format!("{refused:?}"));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_through_both_clients_agrees() {
    let member = Member::start().await;
    let remote = GrpcClient::connect(&member.endpoint())
        .await
        .expect("connect");
    let over_grpc = watch_script(&remote).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let node = embedded(&dir).await;
    let local = node.client();
    let in_process = watch_script(&local).await;
    let mut open = local
        .watch(WatchRequest::key("x"))
        .await
        .expect("watch before shutdown");
    node.shutdown().await;
    // A watch open while its member stops ends with "server stopped".
    let last = tokio::time::timeout(Duration::from_secs(10), open.next())
        .await
        .expect("the watch ends when the member stops");
    assert_eq!(last, Some(Err(ClientError::Etcd(EtcdError::Stopped))));

    assert_eq!(in_process, over_grpc);
    let expected = [
        "Put w/a 1 @2 prev=None",
        "Put w/b 1 @3 prev=None",
        "Put w/a 2 @5 prev=Some(\"1\")",
        "Put w/c 1 @6 prev=None",
        "Delete w/b  @6 prev=Some(\"1\")",
        "--",
        "Put w/a 2 @5 prev=None",
        "Put w/c 1 @6 prev=None",
        "Delete w/b  @6 prev=None",
        "Err(WatchCompacted { compact_revision: 5 })",
        "Some(WatchCanceled(\"mvcc: watcher range is empty\"))",
    ];
    assert_eq!(over_grpc, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_watch_resumes_after_the_member_restarts_without_gap_or_repeat() {
    let mut member = Member::start().await;
    let client = GrpcClient::connect(&member.endpoint())
        .await
        .expect("connect");
    let mut watch = client
        .watch(WatchRequest::prefix("r/"))
        .await
        .expect("watch");
    let mut written = Vec::new();
    for index in 0..20 {
        written.push(client.set(format!("r/{index}"), "v").await.expect("put"));
    }
    // Read only part of what was written, so some events are still on their way when the
    // member dies; the resumed watch must deliver those once each.
    let mut received: Vec<i64> = next_events(&mut watch, 5)
        .await
        .iter()
        .map(|event| event.kv.mod_revision)
        .collect();
    member.kill9();
    member.restart().await;
    for index in 20..30 {
        written.push(
            poll_until(
                "a put after the restart",
                Duration::from_secs(10),
                || async { client.set(format!("r/{index}"), "v").await.ok() },
            )
            .await,
        );
    }
    while received.len() < written.len() {
        let update = tokio::time::timeout(Duration::from_secs(15), watch.next())
            .await
            .unwrap_or_else(|_| panic!("watch stalled after {received:?}"))
            .expect("watch ended")
            .expect("update");
        received.extend(update.events.iter().map(|event| event.kv.mod_revision));
    }
    assert_eq!(received, written);
}

/// Calls, in a row, through a client over two endpoints of which one is closed.
const CALLS_OVER_A_DEAD_ENDPOINT: usize = 100;

/// A client over several endpoints, one of them closed: every call goes through (the
/// balancer offers the closed one half the time; such a call is resent to the live one), and
/// so does a watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_client_over_endpoints_skips_a_closed_one() {
    let member = Member::start().await;
    let closed = format!("http://127.0.0.1:{}", crate::support::free_port());
    let client = GrpcClient::connect_all(&[closed, member.endpoint()], None)
        .await
        .expect("one endpoint answers");
    let mut watch = client
        .watch(WatchRequest::prefix("multi/"))
        .await
        .expect("a watch through the live endpoint");
    for index in 0..CALLS_OVER_A_DEAD_ENDPOINT {
        let key = format!("multi/{index}");
        client.set(key.clone(), "v").await.expect("put");
        let read = client.get(key).await.expect("get");
        assert_eq!(read.expect("the key exists").value, "v");
    }
    let events = next_events(&mut watch, CALLS_OVER_A_DEAD_ENDPOINT).await;
    assert_eq!(events.len(), CALLS_OVER_A_DEAD_ENDPOINT);
    let only_closed = format!("http://127.0.0.1:{}", crate::support::free_port());
    let refused = GrpcClient::connect_all(std::slice::from_ref(&only_closed), None).await;
    assert!(
        matches!(&refused, Err(ClientError::Transport(m)) if m.contains(&only_closed)),
        "{:?}",
        refused.err()
    );
}
