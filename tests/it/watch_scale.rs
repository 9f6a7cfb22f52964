//! Watch at scale and under a slow consumer: 10,000 watchers on one stream, 1,000 streams of
//! 10 watchers, each getting every event of a steady write load; and a stream that stops
//! reading, which must neither delay another stream nor hold more than the documented buffer.
//!
//! The memory per watcher is measured on the member process (resident set growth while the
//! watchers are created, divided by their number) and printed; the assertion bounds it loosely
//! so a leak per watcher fails the test.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mnemo::embed::{Config, Node};
use mnemo::limits::WATCH_STREAM_BUFFER_BYTES_MAX;
use mnemo::pb::etcdserverpb::{
    PutRequest, WatchCreateRequest, WatchRequest, WatchResponse, kv_client::KvClient,
    watch_client::WatchClient, watch_request::RequestUnion,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

use crate::support::Member;

/// Puts of the steady write load.
const WRITES: usize = 20;
/// Pause between two puts of the write load.
const WRITE_INTERVAL: Duration = Duration::from_millis(50);
/// Longest wait for any one expected response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Loose bound on member memory per idle watcher; a leak per watcher exceeds it.
const BYTES_PER_WATCHER_MAX: u64 = 16 * 1024;

/// Resident set size of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

/// A watch stream: the request sender and the response stream.
struct Stream {
    requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

async fn open(channel: &Channel) -> Stream {
    let (requests, requests_rx) = mpsc::channel(1024);
    let responses = WatchClient::new(channel.clone())
        .max_decoding_message_size(usize::MAX)
        .watch(ReceiverStream::new(requests_rx))
        .await
        .expect("open watch stream")
        .into_inner();
    Stream {
        requests,
        responses,
    }
}

async fn next(stream: &mut Streaming<WatchResponse>) -> WatchResponse {
    tokio::time::timeout(RESPONSE_TIMEOUT, stream.message())
        .await
        .expect("a watch response in time")
        .expect("watch stream healthy")
        .expect("watch stream open")
}

fn create(prefix: &str, prefix_end: &str) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: prefix.as_bytes().to_vec().into(),
            range_end: prefix_end.as_bytes().to_vec().into(),
            ..Default::default()
        })),
    }
}

/// Creates `count` watchers on `stream`, alternating between the single key `s/k` and the
/// prefix `s/`, and waits for every `created`.
async fn create_watchers(stream: &mut Stream, count: usize) {
    let sender = stream.requests.clone();
    let sending = tokio::spawn(async move {
        for index in 0..count {
            let request = if index % 2 == 0 {
                create("s/k", "")
            } else {
                create("s/", "s0")
            };
            sender.send(request).await.expect("send create");
        }
    });
    for _ in 0..count {
        let response = next(&mut stream.responses).await;
        assert!(response.created && !response.canceled, "{response:?}");
    }
    sending.await.expect("creates sent");
}

/// Puts `s/k` [`WRITES`] times at a steady pace; returns the revisions.
async fn steady_writes(channel: &Channel) -> Vec<i64> {
    let mut kv = KvClient::new(channel.clone());
    let mut revisions = Vec::new();
    for index in 0..WRITES {
        let response = kv
            .put(PutRequest {
                key: "s/k".into(),
                value: format!("v{index}").into_bytes().into(),
                ..Default::default()
            })
            .await
            .expect("put")
            .into_inner();
        revisions.push(response.header.expect("header").revision);
        tokio::time::sleep(WRITE_INTERVAL).await;
    }
    revisions
}

/// Reads `stream` until each of its `watchers` has every revision in `expected`, checking
/// order and uniqueness per watcher.
async fn expect_every_event(stream: &mut Stream, watchers: usize, expected: &[i64]) {
    let mut seen: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut complete = 0;
    while complete < watchers {
        let response = next(&mut stream.responses).await;
        let revisions = seen.entry(response.watch_id).or_default();
        for event in &response.events {
            revisions.push(event.kv.as_ref().expect("kv").mod_revision);
        }
        if !response.events.is_empty() && revisions.len() == expected.len() {
            assert_eq!(revisions, expected, "watcher {}", response.watch_id);
            complete += 1;
        }
        assert!(
            revisions.len() <= expected.len(),
            "watcher {}: {revisions:?}",
            response.watch_id
        );
    }
    assert_eq!(seen.len(), watchers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_watchers_on_one_stream_get_every_event() {
    const WATCHERS: usize = 10_000;
    let member = Member::start().await;
    let channel = member.channel().await;
    let mut stream = open(&channel).await;
    let before = rss_bytes(member.pid());
    create_watchers(&mut stream, WATCHERS).await;
    let after = rss_bytes(member.pid());
    let per_watcher = after.saturating_sub(before) / WATCHERS as u64;
    println!("member memory per watcher (one stream): {per_watcher} bytes");
    assert!(
        per_watcher < BYTES_PER_WATCHER_MAX,
        "{per_watcher} bytes per watcher"
    );

    let writer = tokio::spawn({
        let channel = channel.clone();
        async move { steady_writes(&channel).await }
    });
    // Read while the writes go on, so the stream is never the bottleneck by design.
    let expected_len = WRITES;
    let reader = tokio::spawn(async move {
        let mut seen: HashMap<i64, Vec<i64>> = HashMap::new();
        let mut complete = 0;
        while complete < WATCHERS {
            let response = next(&mut stream.responses).await;
            let revisions = seen.entry(response.watch_id).or_default();
            revisions.extend(
                response
                    .events
                    .iter()
                    .map(|event| event.kv.as_ref().expect("kv").mod_revision),
            );
            if !response.events.is_empty() && revisions.len() == expected_len {
                complete += 1;
            }
        }
        seen
    });
    let revisions = writer.await.expect("writes");
    let seen = reader.await.expect("reader");
    assert_eq!(seen.len(), WATCHERS);
    for (watch_id, got) in seen {
        assert_eq!(got, revisions, "watcher {watch_id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_streams_of_ten_watchers_get_every_event() {
    const STREAMS: usize = 1_000;
    const CONNECTIONS: usize = 10;
    const WATCHERS: usize = 10;
    let member = Member::start().await;
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(
            Endpoint::from_shared(member.endpoint())
                .expect("endpoint")
                .connect()
                .await
                .expect("connect"),
        );
    }
    let before = rss_bytes(member.pid());
    let mut streams = Vec::new();
    for index in 0..STREAMS {
        let mut stream = open(&channels[index % CONNECTIONS]).await;
        create_watchers(&mut stream, WATCHERS).await;
        streams.push(stream);
    }
    let after = rss_bytes(member.pid());
    let per_watcher = after.saturating_sub(before) / (STREAMS * WATCHERS) as u64;
    println!("member memory per watcher (1,000 streams of 10): {per_watcher} bytes");
    assert!(
        per_watcher < BYTES_PER_WATCHER_MAX,
        "{per_watcher} bytes per watcher"
    );

    let revisions = steady_writes(&channels[0]).await;
    let started = Instant::now();
    for stream in &mut streams {
        expect_every_event(stream, WATCHERS, &revisions).await;
    }
    println!(
        "all streams complete {:?} after the last write",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stops_reading_delays_no_other_and_stays_within_its_buffer() {
    /// Values large enough that the writes exceed the stream buffer bound several times.
    const VALUE_BYTES: usize = 512 * 1024;
    const PUTS: usize = 3 * WATCH_STREAM_BUFFER_BYTES_MAX / VALUE_BYTES;
    /// The fast watcher sees each event this soon after its put was acknowledged.
    const FAST_DELAY_MAX: Duration = Duration::from_secs(2);

    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(Config {
        data_dir: dir.path().join("slow"),
        listen_client_urls: vec!["http://127.0.0.1:0".parse().expect("url")],
        listen_peer_urls: vec!["http://127.0.0.1:0".parse().expect("url")],
        ..Config::default()
    })
    .await
    .expect("member");
    let endpoint = format!("http://{}", node.client_addrs()[0]);
    let channel = Endpoint::from_shared(endpoint.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    // The slow stream gets its own connection, so HTTP/2 flow control stalls only it.
    let slow_channel = Endpoint::from_shared(endpoint)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut slow = open(&slow_channel).await;
    slow.requests
        .send(create("big/", "big0"))
        .await
        .expect("create");
    assert!(next(&mut slow.responses).await.created);
    let mut fast = open(&channel).await;
    fast.requests
        .send(create("big/", "big0"))
        .await
        .expect("create");
    assert!(next(&mut fast.responses).await.created);

    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
    let mut fast_responses = fast.responses;
    let fast_reader = tokio::spawn(async move {
        let mut count = 0;
        while count < PUTS {
            let response = next(&mut fast_responses).await;
            for event in response.events {
                count += 1;
                let revision = event.kv.expect("kv").mod_revision;
                arrivals_tx
                    .send((revision, Instant::now()))
                    .expect("arrivals");
            }
        }
    });

    let hub = std::sync::Arc::clone(node.server().watch());
    let mut kv = KvClient::new(channel.clone());
    let mut acked = Vec::new();
    let mut buffered_max = 0;
    let mut set_aside = false;
    let value = vec![b'x'; VALUE_BYTES];
    for index in 0..PUTS {
        let response = kv
            .put(PutRequest {
                key: format!("big/{index:04}").into_bytes().into(),
                value: value.clone().into(),
                ..Default::default()
            })
            .await
            .expect("put")
            .into_inner();
        acked.push((response.header.expect("header").revision, Instant::now()));
        let counts = hub.counts();
        buffered_max = buffered_max.max(counts.buffered_bytes);
        set_aside |= counts.unsynced > 0;
    }
    fast_reader.await.expect("fast reader");
    let mut worst = Duration::ZERO;
    let mut arrived = Vec::new();
    while let Ok((revision, at)) = arrivals.try_recv() {
        arrived.push((revision, at));
    }
    assert_eq!(
        arrived
            .iter()
            .map(|(revision, _)| *revision)
            .collect::<Vec<_>>(),
        acked
            .iter()
            .map(|(revision, _)| *revision)
            .collect::<Vec<_>>()
    );
    for ((_, acked_at), (_, arrived_at)) in acked.iter().zip(&arrived) {
        worst = worst.max(arrived_at.saturating_duration_since(*acked_at));
    }
    println!(
        "slow consumer: fast watcher's worst delay after ack {worst:?}; \
         most buffered {buffered_max} bytes (bound {WATCH_STREAM_BUFFER_BYTES_MAX})"
    );
    assert!(worst <= FAST_DELAY_MAX, "fast watcher delayed by {worst:?}");
    assert!(set_aside, "the stalled watcher was never set aside");
    // One batch may exceed the bound when the buffer was empty; nothing more.
    assert!(
        buffered_max <= WATCH_STREAM_BUFFER_BYTES_MAX + 2 * VALUE_BYTES,
        "buffered {buffered_max} bytes"
    );

    // Once it reads again, the slow stream gets every event once, in order.
    let mut slow_seen = Vec::new();
    while slow_seen.len() < PUTS {
        let response = next(&mut slow.responses).await;
        slow_seen.extend(
            response
                .events
                .iter()
                .map(|event| event.kv.as_ref().expect("kv").mod_revision),
        );
    }
    assert_eq!(
        slow_seen,
        acked
            .iter()
            .map(|(revision, _)| *revision)
            .collect::<Vec<_>>()
    );
    drop(slow);
    node.shutdown().await;
}
