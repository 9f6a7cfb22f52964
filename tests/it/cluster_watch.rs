//! Watch on a multi-member cluster: a watcher on a follower sees exactly what the leader
//! committed, and a watcher whose member dies resumes on another member from its last
//! revision + 1 and gets exactly the events it missed.
//!
//! Runs unchanged against etcd 3.4 with `MNEMO_IT_SERVER=/usr/bin/etcd`.

use std::time::Duration;

use futures::StreamExt;
use mnemo::client::{GrpcClient, KvClient, WatchEvents, WatchRequest};

use crate::support::cluster::{Cluster, LEADER_TIMEOUT};

/// Longest wait for a watch update once the events it carries were acknowledged.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a watcher on a dead member is read before it is declared cut off.
const CUT_OFF_QUIET: Duration = Duration::from_secs(3);
/// Keys written before and after the leader is killed.
const WRITES_EACH_PHASE: usize = 40;

/// A watch of every key under `w/` from revision 1 through `slot`.
async fn watch_from(cluster: &Cluster, slot: usize, revision: i64) -> WatchEvents {
    let client = GrpcClient::connect(&cluster.member(slot).endpoint())
        .await
        .expect("connect");
    client
        .watch(WatchRequest::prefix("w/").from_revision(revision))
        .await
        .expect("watch accepted")
}

/// Collects `(revision, key)` pairs until the watch has reached `last`, failing loudly when it
/// stalls.
async fn collect_until(watch: &mut WatchEvents, seen: &mut Vec<(i64, String)>, last: i64) {
    while seen.last().map_or(0, |(revision, _)| *revision) < last {
        let update = tokio::time::timeout(UPDATE_TIMEOUT, watch.next())
            .await
            .unwrap_or_else(|_| panic!("watch stalled at {:?}, waiting for {last}", seen.last()))
            .expect("watch ended")
            .expect("watch update");
        for event in update.events {
            seen.push((
                event.kv.mod_revision,
                String::from_utf8_lossy(&event.kv.key).into_owned(),
            ));
        }
    }
}

/// Reads what a watch delivers until it has been quiet for [`CUT_OFF_QUIET`] or ends.
async fn drain_until_quiet(watch: &mut WatchEvents, seen: &mut Vec<(i64, String)>) {
    while let Ok(Some(Ok(update))) = tokio::time::timeout(CUT_OFF_QUIET, watch.next()).await {
        for event in update.events {
            seen.push((
                event.kv.mod_revision,
                String::from_utf8_lossy(&event.kv.key).into_owned(),
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_on_followers_and_across_a_leader_kill_get_every_event_once() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_leader(&[0, 1, 2]).await;
    let followers: Vec<usize> = (0..3).filter(|slot| *slot != leader).collect();
    let (writer, other) = (followers[0], followers[1]);

    let mut on_leader = watch_from(&cluster, leader, 1).await;
    let mut on_follower = watch_from(&cluster, other, 1).await;
    let mut acked = Vec::new();
    for index in 0..WRITES_EACH_PHASE {
        let key = format!("w/{index:03}");
        let revision = cluster
            .put_eventually(writer, &key, "v", LEADER_TIMEOUT)
            .await;
        acked.push((revision, key));
    }
    // The leader's watcher has read only part of the stream when its member dies.
    let mut leader_seen = Vec::new();
    collect_until(
        &mut on_leader,
        &mut leader_seen,
        acked[WRITES_EACH_PHASE / 2].0,
    )
    .await;
    cluster.kill9(leader);
    for index in WRITES_EACH_PHASE..2 * WRITES_EACH_PHASE {
        let key = format!("w/{index:03}");
        let revision = cluster
            .put_eventually(writer, &key, "v", LEADER_TIMEOUT * 3)
            .await;
        acked.push((revision, key));
    }
    let last = acked.last().expect("writes").0;

    // The follower's watcher never noticed the failover. A put retried after an ambiguous
    // failure may have been committed twice, so the committed history is what a fresh
    // watcher from revision 1 reads; it must hold every acknowledged write.
    let mut committed = Vec::new();
    let mut fresh = watch_from(&cluster, writer, 1).await;
    collect_until(&mut fresh, &mut committed, last).await;
    for write in &acked {
        assert!(committed.contains(write), "acknowledged {write:?} missing");
    }
    let mut follower_seen = Vec::new();
    collect_until(&mut on_follower, &mut follower_seen, last).await;
    assert_eq!(follower_seen, committed, "watcher on a surviving follower");

    // The leader's watcher lost its member; it resumes on another from its last revision + 1.
    drain_until_quiet(&mut on_leader, &mut leader_seen).await;
    drop(on_leader);
    let resume_at = leader_seen.last().map_or(1, |(revision, _)| revision + 1);
    let mut resumed = watch_from(&cluster, other, resume_at).await;
    collect_until(&mut resumed, &mut leader_seen, last).await;
    assert_eq!(leader_seen, committed, "watcher resumed on another member");
}

/// A watch stream opened with `hasleader: true` ends with Unavailable "etcdserver: no leader"
/// once its member has lost the leader, instead of staying silent forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hasleader_watch_ends_when_its_member_loses_the_leader() {
    use mnemo::pb::etcdserverpb::{
        WatchCreateRequest, WatchRequest as WireRequest, watch_client::WatchClient,
        watch_request::RequestUnion,
    };
    /// etcd ends such a stream after about three election timeouts without a leader.
    const END_TIMEOUT: Duration = Duration::from_secs(20);

    let mut cluster = Cluster::start(3).await;
    let channel = cluster.member(0).channel().await;
    let (requests, requests_rx) = tokio::sync::mpsc::channel(1);
    requests
        .send(WireRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"a".to_vec().into(),
                ..Default::default()
            })),
        })
        .await
        .expect("send create");
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(requests_rx));
    request
        .metadata_mut()
        .insert("hasleader", "true".parse().expect("ascii metadata"));
    let mut responses = WatchClient::new(channel)
        .watch(request)
        .await
        .expect("stream opened while there is a leader")
        .into_inner();
    let created = tokio::time::timeout(UPDATE_TIMEOUT, responses.message())
        .await
        .expect("created in time")
        .expect("stream healthy")
        .expect("a response");
    assert!(created.created);
    cluster.kill9(1);
    cluster.kill9(2);
    let end = tokio::time::timeout(END_TIMEOUT, async {
        loop {
            match responses.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends once the leader is lost");
    let status = end.expect_err("the stream ends with an error");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), "etcdserver: no leader");
    drop(requests);
}
