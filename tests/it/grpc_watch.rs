//! The Watch service over gRPC, checked against etcd v3's watch contract (etcd-api.md §3.3, §4):
//! key, range, prefix and all-key watchers, ids, refusals, start revisions, prev_kv, filters,
//! atomic revisions, cancel, progress (requested and periodic), compaction and fragments.
//! Every expectation here also holds against etcd 3.4.23 (`MNEMO_IT_SERVER=/usr/bin/etcd`),
//! except where a comment says mnemo follows etcd 3.5+ on purpose.
//!
//! Each test starts its own member, so revisions are predictable: a new cluster is at revision 1
//! and every write that changes something adds exactly 1.
//!
//! Nothing here sleeps to prove that something did *not* arrive. Instead a test writes a later
//! "fence" revision that some watcher of the same stream must see: a stream delivers in revision
//! order, so anything wrongly sent for an earlier revision would arrive before the fence.

use std::time::Duration;

use mnemo::pb::etcdserverpb::kv_client::KvClient;
use mnemo::pb::etcdserverpb::request_op::Request;
use mnemo::pb::etcdserverpb::watch_client::WatchClient;
use mnemo::pb::etcdserverpb::watch_create_request::FilterType;
use mnemo::pb::etcdserverpb::watch_request::RequestUnion;
use mnemo::pb::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, WatchCancelRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use mnemo::pb::mvccpb::Event;
use mnemo::pb::mvccpb::event::EventType;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::support::{Member, RESPONSE_BYTES_MAX, delete, put, testing_mnemo};

/// How long a test waits for any one watch response before failing.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most responses one collection reads before failing (a runaway stream must not hang a test).
const COLLECT_RESPONSES_MAX: usize = 10_000;

const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

// ---- the stream helper ----

/// One Watch call: requests go in through a channel, responses come out of the gRPC stream.
///
/// etcd's gRPC server sends its response headers only with the first message, so the call is
/// made on a task and awaited on the first read; requests may be queued before that.
struct WatchStream {
    requests: mpsc::Sender<WatchRequest>,
    opening: Option<JoinHandle<Result<Streaming<WatchResponse>, tonic::Status>>>,
    responses: Option<Streaming<WatchResponse>>,
}

impl WatchStream {
    /// Opens a stream on a new connection to `member`.
    async fn open(member: &Member) -> WatchStream {
        WatchStream::open_on(member.channel().await)
    }

    /// Opens a stream on `channel`; several streams may share one connection.
    fn open_on(channel: Channel) -> WatchStream {
        let mut client = WatchClient::new(channel).max_decoding_message_size(RESPONSE_BYTES_MAX);
        let (requests, receiver) = mpsc::channel(64);
        let opening = tokio::spawn(async move {
            client
                .watch(ReceiverStream::new(receiver))
                .await
                .map(tonic::Response::into_inner)
        });
        WatchStream {
            requests,
            opening: Some(opening),
            responses: None,
        }
    }

    async fn send(&self, request: RequestUnion) {
        let request = WatchRequest {
            request_union: Some(request),
        };
        self.requests
            .send(request)
            .await
            .expect("the watch request stream is open");
    }

    async fn create(&self, request: WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(request)).await;
    }

    async fn cancel(&self, watch_id: i64) {
        self.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id }))
            .await;
    }

    async fn request_progress(&self) {
        self.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
            .await;
    }

    /// The next response; panics when none arrives within [`RESPONSE_TIMEOUT`] or the stream
    /// ends or fails.
    async fn next(&mut self) -> WatchResponse {
        if let Some(opening) = self.opening.take() {
            let opened = tokio::time::timeout(RESPONSE_TIMEOUT, opening)
                .await
                .unwrap_or_else(|_| {
                    panic!("the watch call did not open within {RESPONSE_TIMEOUT:?}")
                })
                .expect("the watch call task");
            self.responses = Some(opened.unwrap_or_else(|status| panic!("watch: {status:?}")));
        }
        let responses = self.responses.as_mut().expect("an open watch stream");
        match tokio::time::timeout(RESPONSE_TIMEOUT, responses.message()).await {
            Err(_) => panic!("no watch response within {RESPONSE_TIMEOUT:?}"),
            Ok(Err(status)) => panic!("the watch stream failed: {status:?}"),
            Ok(Ok(None)) => panic!("the watch stream ended"),
            Ok(Ok(Some(response))) => response,
        }
    }

    /// Creates a watcher and returns its `created` reply, checking that it is one.
    async fn create_ok(&mut self, request: WatchCreateRequest) -> WatchResponse {
        let shown = format!("{request:?}");
        self.create(request).await;
        let reply = self.next().await;
        assert!(
            reply.created && !reply.canceled && reply.events.is_empty(),
            "create {shown} got {reply:?}"
        );
        reply
    }

    /// Reads responses until `done` holds for everything read so far, and returns them in
    /// arrival order.
    async fn collect_until(
        &mut self,
        what: &str,
        done: impl Fn(&[WatchResponse]) -> bool,
    ) -> Vec<WatchResponse> {
        let mut responses = Vec::new();
        while !done(&responses) {
            assert!(
                responses.len() < COLLECT_RESPONSES_MAX,
                "{what}: still not done after {} responses",
                responses.len()
            );
            responses.push(self.next().await);
        }
        responses
    }
}

// ---- request builders and summaries ----

fn bytes<T: From<Vec<u8>>>(text: impl AsRef<[u8]>) -> T {
    text.as_ref().to_vec().into()
}

/// A create request over [key, range_end); an empty `range_end` watches the single key.
fn watch(key: impl AsRef<[u8]>, range_end: impl AsRef<[u8]>) -> WatchCreateRequest {
    WatchCreateRequest {
        key: bytes(key),
        range_end: bytes(range_end),
        ..Default::default()
    }
}

fn put_op(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: bytes(key),
            value: bytes(value),
            ..Default::default()
        })),
    }
}

fn del_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(delete_request(key))),
    }
}

fn delete_request(key: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: bytes(key),
        ..Default::default()
    }
}

/// Runs a transaction without compares (its success ops always run); returns its revision.
async fn txn(kv: &mut KvClient<Channel>, ops: Vec<RequestOp>) -> i64 {
    let response = kv
        .txn(TxnRequest {
            success: ops,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("txn failed: {status:?}"))
        .into_inner();
    assert!(response.succeeded);
    response.header.expect("txn header").revision
}

async fn put_rev(kv: &mut KvClient<Channel>, key: &str, value: &str) -> i64 {
    put(kv, key, value)
        .await
        .header
        .expect("put header")
        .revision
}

async fn delete_rev(kv: &mut KvClient<Channel>, key: &str) -> i64 {
    let response = delete(kv, delete_request(key)).await;
    assert_eq!(response.deleted, 1, "delete {key}");
    response.header.expect("delete header").revision
}

/// An event as (type, key, value, mod_revision).
type Seen = (&'static str, String, String, i64);

fn put_ev(key: &str, value: &str, mod_revision: i64) -> Seen {
    ("PUT", key.to_owned(), value.to_owned(), mod_revision)
}

fn del_ev(key: &str, mod_revision: i64) -> Seen {
    ("DELETE", key.to_owned(), String::new(), mod_revision)
}

fn text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

fn seen(event: &Event) -> Seen {
    let kind = match EventType::try_from(event.r#type) {
        Ok(EventType::Put) => "PUT",
        Ok(EventType::Delete) => "DELETE",
        Err(_) => panic!("unknown event type in {event:?}"),
    };
    let kv = event.kv.as_ref().expect("an event carries a kv");
    (kind, text(&kv.key), text(&kv.value), kv.mod_revision)
}

/// The events of every response to `watch_id`, in arrival order.
fn events_of(responses: &[WatchResponse], watch_id: i64) -> Vec<Seen> {
    responses
        .iter()
        .filter(|response| response.watch_id == watch_id)
        .flat_map(|response| response.events.iter().map(seen))
        .collect()
}

/// Whether `watch_id` has been sent an event of revision `revision` or later.
fn reached(responses: &[WatchResponse], watch_id: i64, revision: i64) -> bool {
    events_of(responses, watch_id)
        .iter()
        .any(|(_, _, _, mod_revision)| *mod_revision >= revision)
}

fn header_rev(response: &WatchResponse) -> i64 {
    response.header.as_ref().map_or(0, |header| header.revision)
}

/// Asserts `response` is a refused create with `reason`.
#[track_caller]
fn assert_refused(response: &WatchResponse, reason: &str) {
    assert!(
        response.created && response.canceled,
        "refused create: {response:?}"
    );
    assert_eq!(response.watch_id, -1, "{response:?}");
    assert_eq!(response.cancel_reason, reason, "{response:?}");
    assert!(response.events.is_empty(), "{response:?}");
}

/// Asserts `response` is a stream-wide progress report at `revision`.
#[track_caller]
fn assert_progress_reply(response: &WatchResponse, revision: i64) {
    assert_eq!(response.watch_id, -1, "{response:?}");
    assert!(!response.created && !response.canceled, "{response:?}");
    assert!(response.events.is_empty(), "{response:?}");
    assert_eq!(response.compact_revision, 0, "{response:?}");
    assert_eq!(header_rev(response), revision, "{response:?}");
}

// ---- tests ----

/// A watcher sees exactly the events of its keys: one key, [key, range_end), a prefix
/// (range_end = prefix + 1), and every key (key "\0", range_end "\0"); each event with its type,
/// key, value and mod_revision.
#[tokio::test]
async fn watchers_of_a_key_a_range_a_prefix_and_all_keys_see_exactly_their_events() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let mut stream = WatchStream::open(&member).await;
    let watchers = [
        watch("a", ""),
        watch("b", "d"),
        watch("p/", "p0"),
        watch("\0", "\0"),
    ];
    for (expected_id, request) in (0..).zip(watchers) {
        let created = stream.create_ok(request).await;
        assert_eq!(created.watch_id, expected_id);
        assert_eq!(
            header_rev(&created),
            1,
            "created carries the current revision"
        );
    }

    assert_eq!(put_rev(&mut kv, "a", "1").await, 2);
    put_rev(&mut kv, "ab", "not a").await; // 3
    put_rev(&mut kv, "b", "2").await; // 4
    put_rev(&mut kv, "c", "3").await; // 5
    put_rev(&mut kv, "d", "range end is exclusive").await; // 6
    put_rev(&mut kv, "p/x", "5").await; // 7
    put_rev(&mut kv, "p0", "past the prefix").await; // 8
    put_rev(&mut kv, "p", "before the prefix").await; // 9
    delete_rev(&mut kv, "a").await; // 10
    delete_rev(&mut kv, "c").await; // 11
    // A revision every watcher sees, after which nothing else is written.
    let fence = txn(
        &mut kv,
        vec![put_op("a", "f"), put_op("bb", "f"), put_op("p/y", "f")],
    )
    .await;
    assert_eq!(fence, 12);

    let responses = stream
        .collect_until("every watcher reaches the fence", |seen| {
            (0..4).all(|id| reached(seen, id, fence))
        })
        .await;
    for response in &responses {
        assert!(!response.created && !response.canceled, "{response:?}");
        assert!(!response.events.is_empty(), "{response:?}");
        let last = response.events.last().and_then(|event| event.kv.as_ref());
        assert!(
            header_rev(response) >= last.map_or(0, |kv| kv.mod_revision),
            "header revision covers the events: {response:?}"
        );
    }
    assert_eq!(
        events_of(&responses, 0),
        [put_ev("a", "1", 2), del_ev("a", 10), put_ev("a", "f", 12)]
    );
    assert_eq!(
        events_of(&responses, 1),
        [
            put_ev("b", "2", 4),
            put_ev("c", "3", 5),
            del_ev("c", 11),
            put_ev("bb", "f", 12)
        ]
    );
    assert_eq!(
        events_of(&responses, 2),
        [put_ev("p/x", "5", 7), put_ev("p/y", "f", 12)]
    );
    assert_eq!(
        events_of(&responses, 3),
        [
            put_ev("a", "1", 2),
            put_ev("ab", "not a", 3),
            put_ev("b", "2", 4),
            put_ev("c", "3", 5),
            put_ev("d", "range end is exclusive", 6),
            put_ev("p/x", "5", 7),
            put_ev("p0", "past the prefix", 8),
            put_ev("p", "before the prefix", 9),
            del_ev("a", 10),
            del_ev("c", 11),
            put_ev("a", "f", 12),
            put_ev("bb", "f", 12),
            put_ev("p/y", "f", 12),
        ]
    );

    // The full records: create_revision, version, and a delete's bare kv.
    let all: Vec<&Event> = responses
        .iter()
        .filter(|response| response.watch_id == 3)
        .flat_map(|response| &response.events)
        .collect();
    let first = all[0].kv.as_ref().expect("kv");
    assert_eq!(
        (first.create_revision, first.mod_revision, first.version),
        (2, 2, 1)
    );
    let deleted = all[8].kv.as_ref().expect("kv");
    assert_eq!(
        (
            text(&deleted.key),
            deleted.create_revision,
            deleted.mod_revision,
            deleted.version,
            deleted.value.is_empty()
        ),
        ("a".to_owned(), 0, 10, 0, true)
    );
    let recreated = all[10].kv.as_ref().expect("kv");
    assert_eq!(
        (
            recreated.create_revision,
            recreated.mod_revision,
            recreated.version
        ),
        (12, 12, 1)
    );
}

/// Automatic ids count up from 0 on each stream and are never handed out twice: after
/// cancelling 0 the next one is 3 (etcd keeps counting and skips ids in use, including explicit
/// ones). Explicit ids are used as given; a duplicate, or an empty range (key >= range_end), is
/// refused with created and canceled set, watch_id -1 and etcd's reason.
#[tokio::test]
async fn watch_ids_count_up_per_stream_and_bad_creates_are_refused() {
    let member = Member::start().await;
    let mut stream = WatchStream::open(&member).await;
    for expected_id in 0..3 {
        let created = stream.create_ok(watch("a", "")).await;
        assert_eq!(created.watch_id, expected_id);
    }
    stream.cancel(0).await;
    let canceled = stream.next().await;
    assert_eq!(
        (canceled.watch_id, canceled.canceled, canceled.created),
        (0, true, false)
    );
    assert_eq!(stream.create_ok(watch("a", "")).await.watch_id, 3);

    let explicit = |id| WatchCreateRequest {
        watch_id: id,
        ..watch("b", "")
    };
    assert_eq!(stream.create_ok(explicit(7)).await.watch_id, 7);
    assert_eq!(stream.create_ok(explicit(5)).await.watch_id, 5);
    assert_eq!(stream.create_ok(explicit(100)).await.watch_id, 100);
    assert_eq!(stream.create_ok(watch("a", "")).await.watch_id, 4);
    assert_eq!(
        stream.create_ok(watch("a", "")).await.watch_id,
        6,
        "5 is taken"
    );
    assert_eq!(
        stream.create_ok(watch("a", "")).await.watch_id,
        8,
        "7 is taken"
    );

    stream.create(explicit(7)).await;
    let duplicate = stream.next().await;
    assert_refused(&duplicate, DUPLICATE_ID);
    assert_eq!(header_rev(&duplicate), 1);
    // An explicit id that was cancelled may be asked for again. (An explicit 0 cannot be asked
    // for: 0 means "pick one".)
    stream.cancel(100).await;
    assert_eq!(stream.next().await.watch_id, 100);
    assert_eq!(stream.create_ok(explicit(100)).await.watch_id, 100);

    stream.create(watch("b", "a")).await;
    assert_refused(&stream.next().await, EMPTY_RANGE);
    stream.create(watch("a", "a")).await;
    assert_refused(&stream.next().await, EMPTY_RANGE);
    // Refusals use no id: the counter goes on from where it was.
    assert_eq!(stream.create_ok(watch("a", "")).await.watch_id, 9);

    // A second stream counts from 0 again.
    let mut other = WatchStream::open(&member).await;
    assert_eq!(other.create_ok(watch("a", "")).await.watch_id, 0);
    assert_eq!(other.create_ok(watch("a", "")).await.watch_id, 1);
}

/// start_revision 0 gives only events after the current revision.
#[tokio::test]
async fn start_revision_zero_sees_only_future_events() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    put_rev(&mut kv, "a", "old").await; // 2
    let mut stream = WatchStream::open(&member).await;
    let created = stream.create_ok(watch("a", "")).await;
    assert_eq!(header_rev(&created), 2);
    put_rev(&mut kv, "a", "new").await; // 3
    let response = stream.next().await;
    assert_eq!(response.watch_id, 0);
    assert_eq!(
        response.events.iter().map(seen).collect::<Vec<_>>(),
        [put_ev("a", "new", 3)]
    );
    assert_eq!(header_rev(&response), 3);
}

/// A start revision at or below the current one replays history from it, inclusive: puts,
/// deletes and a three-key transaction (whose events stay together in one response), then goes
/// on with live events. The `created` reply comes before any replayed event.
#[tokio::test]
async fn past_start_revision_replays_from_it_inclusively() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    put_rev(&mut kv, "a", "1").await; // 2
    put_rev(&mut kv, "b", "1").await; // 3
    put_rev(&mut kv, "a", "2").await; // 4
    delete_rev(&mut kv, "a").await; // 5
    let triple = txn(
        &mut kv,
        vec![put_op("a", "3"), put_op("b", "2"), put_op("c", "1")],
    )
    .await;
    assert_eq!(triple, 6);
    put_rev(&mut kv, "a", "4").await; // 7

    let mut stream = WatchStream::open(&member).await;
    stream
        .create(WatchCreateRequest {
            start_revision: 3,
            ..watch("\0", "\0")
        })
        .await;
    let created = stream.next().await;
    assert!(created.created && created.events.is_empty(), "{created:?}");
    assert_eq!(created.watch_id, 0);
    assert_eq!(header_rev(&created), 7);

    let replayed = stream
        .collect_until("the replay reaches revision 7", |seen| reached(seen, 0, 7))
        .await;
    assert_eq!(
        events_of(&replayed, 0),
        [
            put_ev("b", "1", 3),
            put_ev("a", "2", 4),
            del_ev("a", 5),
            put_ev("a", "3", 6),
            put_ev("b", "2", 6),
            put_ev("c", "1", 6),
            put_ev("a", "4", 7),
        ]
    );
    assert_revisions_not_split(&replayed);

    // Then live events.
    put_rev(&mut kv, "z", "live").await; // 8
    let live = stream.next().await;
    assert_eq!(
        live.events.iter().map(seen).collect::<Vec<_>>(),
        [put_ev("z", "live", 8)]
    );

    // A watcher on one key replays only that key.
    stream
        .create(WatchCreateRequest {
            start_revision: 1,
            ..watch("b", "")
        })
        .await;
    let created = stream.next().await;
    assert_eq!((created.watch_id, created.created), (1, true));
    let replayed = stream
        .collect_until("b's replay reaches revision 6", |seen| reached(seen, 1, 6))
        .await;
    assert_eq!(
        events_of(&replayed, 1),
        [put_ev("b", "1", 3), put_ev("b", "2", 6)]
    );
}

/// Asserts no revision's events are spread over more than one response.
#[track_caller]
fn assert_revisions_not_split(responses: &[WatchResponse]) {
    let mut seen_in: Vec<(i64, i64, usize)> = Vec::new();
    for (index, response) in responses.iter().enumerate() {
        for event in &response.events {
            let revision = event.kv.as_ref().expect("kv").mod_revision;
            if let Some((_, _, first)) = seen_in
                .iter()
                .find(|(id, rev, _)| *id == response.watch_id && *rev == revision)
            {
                assert_eq!(
                    *first, index,
                    "revision {revision} split over responses: {responses:?}"
                );
            } else {
                seen_in.push((response.watch_id, revision, index));
            }
        }
    }
}

/// A start revision above the current one waits, then delivers only events at or after it.
#[tokio::test]
async fn future_start_revision_waits_for_it() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let mut stream = WatchStream::open(&member).await;
    let created = stream
        .create_ok(WatchCreateRequest {
            start_revision: 4,
            ..watch("k", "")
        })
        .await;
    assert_eq!(header_rev(&created), 1);
    for value in ["r2", "r3", "r4", "r5"] {
        put_rev(&mut kv, "k", value).await;
    }
    let responses = stream
        .collect_until("revision 5", |seen| reached(seen, 0, 5))
        .await;
    assert_eq!(
        events_of(&responses, 0),
        [put_ev("k", "r4", 4), put_ev("k", "r5", 5)]
    );
}

/// A prev_kv as (key, value, create_revision, mod_revision, version).
type Prev = (String, String, i64, i64, i64);

/// prev_kv carries the previous version on updates and deletes, and is absent on a creation
/// (and for a watcher that did not ask).
#[tokio::test]
async fn prev_kv_is_given_for_updates_and_deletes_only() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let mut stream = WatchStream::open(&member).await;
    stream
        .create_ok(WatchCreateRequest {
            prev_kv: true,
            ..watch("a", "")
        })
        .await;
    stream.create_ok(watch("a", "")).await;
    put_rev(&mut kv, "a", "1").await; // 2
    put_rev(&mut kv, "a", "2").await; // 3
    delete_rev(&mut kv, "a").await; // 4
    put_rev(&mut kv, "a", "3").await; // 5

    let responses = stream
        .collect_until("both watchers reach revision 5", |seen| {
            reached(seen, 0, 5) && reached(seen, 1, 5)
        })
        .await;
    let prevs = |watch_id| -> Vec<Option<Prev>> {
        responses
            .iter()
            .filter(|response| response.watch_id == watch_id)
            .flat_map(|response| &response.events)
            .map(|event| {
                event.prev_kv.as_ref().map(|prev| {
                    (
                        text(&prev.key),
                        text(&prev.value),
                        prev.create_revision,
                        prev.mod_revision,
                        prev.version,
                    )
                })
            })
            .collect()
    };
    assert_eq!(
        prevs(0),
        [
            None,
            Some(("a".to_owned(), "1".to_owned(), 2, 2, 1)),
            Some(("a".to_owned(), "2".to_owned(), 2, 3, 2)),
            None,
        ]
    );
    assert_eq!(prevs(1), [None, None, None, None]);
    assert_eq!(events_of(&responses, 0), events_of(&responses, 1));
}

/// NOPUT (0) leaves out puts and NODELETE (1) deletes; with both a watcher gets nothing.
/// A watcher whose events were all filtered out gets no (empty) response at all.
#[tokio::test]
async fn filters_leave_out_puts_or_deletes() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let mut stream = WatchStream::open(&member).await;
    let filtered = |filters: Vec<FilterType>| WatchCreateRequest {
        filters: filters.into_iter().map(|filter| filter as i32).collect(),
        ..watch("a", "")
    };
    stream.create_ok(filtered(vec![FilterType::Noput])).await; // 0
    stream.create_ok(filtered(vec![FilterType::Nodelete])).await; // 1
    stream
        .create_ok(filtered(vec![FilterType::Noput, FilterType::Nodelete]))
        .await; // 2
    stream.create_ok(watch("a", "")).await; // 3
    put_rev(&mut kv, "a", "1").await; // 2
    put_rev(&mut kv, "a", "2").await; // 3
    delete_rev(&mut kv, "a").await; // 4
    put_rev(&mut kv, "a", "3").await; // 5
    delete_rev(&mut kv, "a").await; // 6

    let responses = stream
        .collect_until("watchers 0, 1 and 3 reach their last events", |seen| {
            reached(seen, 0, 6) && reached(seen, 1, 5) && reached(seen, 3, 6)
        })
        .await;
    // Fences: within one revision a stream may deliver its watchers in any order, but
    // revisions stay in order, so once watchers 1 and 3 have revision 8 everything of
    // revision 7 and before has arrived.
    put_rev(&mut kv, "a", "fence").await; // 7
    put_rev(&mut kv, "a", "fence2").await; // 8
    let rest = stream
        .collect_until("the fences", |seen| {
            reached(seen, 1, 8) && reached(seen, 3, 8)
        })
        .await;
    let all: Vec<WatchResponse> = responses.into_iter().chain(rest).collect();
    assert_eq!(events_of(&all, 0), [del_ev("a", 4), del_ev("a", 6)]);
    assert_eq!(
        events_of(&all, 1),
        [
            put_ev("a", "1", 2),
            put_ev("a", "2", 3),
            put_ev("a", "3", 5),
            put_ev("a", "fence", 7),
            put_ev("a", "fence2", 8)
        ]
    );
    assert!(
        all.iter().all(|response| response.watch_id != 2),
        "both filters: nothing at all: {all:?}"
    );
    assert!(
        all.iter().all(|response| !response.events.is_empty()),
        "no empty responses: {all:?}"
    );
    assert_eq!(events_of(&all, 3).len(), 7);
}

/// A transaction writing three keys is one revision and reaches a watcher as one response with
/// three events, live and when replayed from the past.
#[tokio::test]
async fn a_three_key_txn_arrives_as_one_response() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let mut stream = WatchStream::open(&member).await;
    stream.create_ok(watch("k", "l")).await;
    let revision = txn(
        &mut kv,
        vec![put_op("k1", "x"), put_op("k2", "y"), put_op("k3", "z")],
    )
    .await;
    assert_eq!(revision, 2);
    let expected = [
        put_ev("k1", "x", 2),
        put_ev("k2", "y", 2),
        put_ev("k3", "z", 2),
    ];
    let live = stream.next().await;
    assert_eq!(live.events.iter().map(seen).collect::<Vec<_>>(), expected);
    assert_eq!(header_rev(&live), 2);

    // A delete of the three in one txn is one response with three deletes.
    let deleted = txn(&mut kv, vec![del_op("k1"), del_op("k2"), del_op("k3")]).await;
    assert_eq!(deleted, 3);
    let live = stream.next().await;
    assert_eq!(
        live.events.iter().map(seen).collect::<Vec<_>>(),
        [del_ev("k1", 3), del_ev("k2", 3), del_ev("k3", 3)]
    );

    let mut replay = WatchStream::open(&member).await;
    replay
        .create_ok(WatchCreateRequest {
            start_revision: 2,
            ..watch("k", "l")
        })
        .await;
    let first = replay.next().await;
    assert_eq!(
        first.events.iter().map(seen).take(3).collect::<Vec<_>>(),
        expected,
        "revision 2 whole in the first replayed response"
    );
    let mut replayed = vec![first];
    if events_of(&replayed, 0).len() < 6 {
        replayed.push(replay.next().await);
    }
    assert_eq!(events_of(&replayed, 0).len(), 6, "{replayed:?}");
    assert_revisions_not_split(&replayed);
}

/// Cancel replies {watch_id, canceled} with the current revision, and the watcher gets nothing
/// afterwards; cancelling an unknown id gets no reply at all.
#[tokio::test]
async fn cancel_stops_a_watcher_and_unknown_ids_get_no_reply() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let mut stream = WatchStream::open(&member).await;
    stream.create_ok(watch("a", "")).await; // 0
    stream.create_ok(watch("fence", "")).await; // 1
    put_rev(&mut kv, "a", "1").await; // 2
    assert_eq!(
        stream
            .next()
            .await
            .events
            .iter()
            .map(seen)
            .collect::<Vec<_>>(),
        [put_ev("a", "1", 2)]
    );

    stream.cancel(0).await;
    let canceled = stream.next().await;
    assert_eq!(canceled.watch_id, 0);
    assert!(canceled.canceled && !canceled.created, "{canceled:?}");
    assert!(canceled.events.is_empty() && canceled.cancel_reason.is_empty());
    assert_eq!(header_rev(&canceled), 2);

    put_rev(&mut kv, "a", "2").await; // 3
    put_rev(&mut kv, "fence", "f").await; // 4
    let next = stream.next().await;
    assert_eq!(next.watch_id, 1, "the cancelled watcher got {next:?}");
    assert_eq!(
        next.events.iter().map(seen).collect::<Vec<_>>(),
        [put_ev("fence", "f", 4)]
    );

    // Unknown ids, and 0 again: no reply; the next response answers the progress request.
    stream.cancel(42).await;
    stream.cancel(0).await;
    stream.request_progress().await;
    assert_progress_reply(&stream.next().await, 4);
}

/// A progress request is answered with watch_id -1, no events, and the current revision; later
/// events have higher revisions.
#[tokio::test]
async fn progress_request_reports_the_current_revision() {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let mut stream = WatchStream::open(&member).await;
    // Even a stream without watchers is answered.
    stream.request_progress().await;
    assert_progress_reply(&stream.next().await, 1);

    stream.create_ok(watch("a", "")).await;
    put_rev(&mut kv, "a", "1").await; // 2
    put_rev(&mut kv, "other", "1").await; // 3
    stream.next().await;
    stream.request_progress().await;
    assert_progress_reply(&stream.next().await, 3);
    put_rev(&mut kv, "a", "2").await; // 4
    let after = stream.next().await;
    assert_eq!(
        after.events.iter().map(seen).collect::<Vec<_>>(),
        [put_ev("a", "2", 4)]
    );
}

/// With `--experimental-watch-progress-notify-interval=500ms`, an idle watcher that asked for
/// progress_notify gets periodic responses with its id, no events, neither created nor
/// canceled, and the current revision; a watcher that did not ask gets none.
#[tokio::test]
async fn progress_notify_reaches_idle_watchers_that_asked() {
    let member = Member::start_with_flags(
        "infra0",
        &["--experimental-watch-progress-notify-interval=500ms"],
    )
    .await;
    let mut kv = member.kv().await;
    put_rev(&mut kv, "elsewhere", "1").await; // 2
    let mut stream = WatchStream::open(&member).await;
    stream.create_ok(watch("quiet", "")).await; // 0: no notifications
    stream
        .create_ok(WatchCreateRequest {
            progress_notify: true,
            ..watch("idle", "")
        })
        .await; // 1
    put_rev(&mut kv, "elsewhere", "2").await; // 3

    for _ in 0..2 {
        let notify = stream.next().await;
        assert_eq!(notify.watch_id, 1, "{notify:?}");
        assert!(notify.events.is_empty(), "{notify:?}");
        assert!(!notify.created && !notify.canceled, "{notify:?}");
        assert_eq!(notify.compact_revision, 0, "{notify:?}");
        assert_eq!(header_rev(&notify), 3, "{notify:?}");
    }
}

/// A member where `a` was put at revisions 2 to 6, compacted at 5.
async fn member_compacted_at_5() -> Member {
    let member = Member::start().await;
    let mut kv = member.kv().await;
    for value in ["2", "3", "4", "5", "6"] {
        put_rev(&mut kv, "a", value).await;
    }
    kv.compact(CompactionRequest {
        revision: 5,
        physical: true,
    })
    .await
    .expect("compact to 5");
    member
}

/// A watcher starting below the compacted revision C is created, then cancelled with
/// compact_revision C and header revision 0.
#[tokio::test]
async fn watch_from_a_compacted_revision_is_cancelled_with_the_compact_revision() {
    let member = member_compacted_at_5().await;

    let mut stream = WatchStream::open(&member).await;
    stream
        .create(WatchCreateRequest {
            start_revision: 3,
            ..watch("a", "")
        })
        .await;
    let created = stream.next().await;
    assert!(created.created && !created.canceled, "{created:?}");
    assert_eq!((created.watch_id, header_rev(&created)), (0, 6));
    let compacted = stream.next().await;
    assert_eq!(compacted.watch_id, 0, "{compacted:?}");
    assert!(compacted.canceled && !compacted.created, "{compacted:?}");
    assert_eq!(compacted.compact_revision, 5, "{compacted:?}");
    assert!(compacted.events.is_empty(), "{compacted:?}");
    assert_eq!(header_rev(&compacted), 0, "{compacted:?}");
}

/// etcd 3.5+ refuses a negative start revision with the compacted reason (etcd 3.4.23 accepted
/// it); mnemo follows 3.5+, so this is checked only against mnemo.
#[tokio::test]
async fn negative_start_revision_is_refused_like_etcd_3_5() {
    let member = Member::start().await;
    let mut stream = WatchStream::open(&member).await;
    if testing_mnemo() {
        stream
            .create(WatchCreateRequest {
                start_revision: -5,
                ..watch("a", "")
            })
            .await;
        let refused = stream.next().await;
        assert_refused(&refused, COMPACTED);
    }
    // The stream keeps working either way.
    stream.request_progress().await;
    let progress = stream
        .collect_until("the progress reply", |seen| {
            seen.last()
                .is_some_and(|response| response.watch_id == -1 && !response.created)
        })
        .await;
    assert_progress_reply(progress.last().expect("a reply"), 1);
}

/// One revision larger than the gRPC message limit (max-request-bytes + 512 KiB = 2 MiB): a
/// watcher with `fragment` receives it in several responses, each but the last marked
/// `fragment`, together holding the revision's three events in order; a watcher without it
/// receives one response.
///
/// A single request is limited to 1.5 MiB, so the large revision comes from a transaction
/// rewriting three keys with 500,000-byte values, watched with prev_kv: each event then carries
/// about 1 MB.
#[tokio::test]
async fn fragment_splits_a_revision_over_the_message_limit() {
    const VALUE_BYTES: usize = 500_000;
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let old: Vec<Vec<u8>> = (0..3)
        .map(|index| vec![b'a' + index; VALUE_BYTES])
        .collect();
    let new: Vec<Vec<u8>> = (0..3)
        .map(|index| vec![b'x' + index; VALUE_BYTES])
        .collect();
    for (index, value) in old.iter().enumerate() {
        put(&mut kv, format!("f{index}"), value).await;
    }
    let mut stream = WatchStream::open(&member).await;
    stream
        .create_ok(WatchCreateRequest {
            prev_kv: true,
            fragment: true,
            ..watch("f", "g")
        })
        .await; // 0
    stream
        .create_ok(WatchCreateRequest {
            prev_kv: true,
            ..watch("f", "g")
        })
        .await; // 1

    let ops = new
        .iter()
        .enumerate()
        .map(|(index, value)| put_op(format!("f{index}"), value))
        .collect();
    let revision = txn(&mut kv, ops).await;
    assert_eq!(revision, 5);

    let responses = stream
        .collect_until("the whole revision for both watchers", |seen| {
            let whole = |id| {
                seen.iter()
                    .filter(|response| response.watch_id == id)
                    .map(|response| response.events.len())
                    .sum::<usize>()
                    == 3
            };
            whole(0) && whole(1)
        })
        .await;
    let parts: Vec<&WatchResponse> = responses
        .iter()
        .filter(|response| response.watch_id == 0)
        .collect();
    assert!(parts.len() >= 2, "{} parts", parts.len());
    let last = parts.len() - 1;
    for (index, part) in parts.iter().enumerate() {
        assert_eq!(
            part.fragment,
            index < last,
            "part {index} of {}",
            parts.len()
        );
        assert!(!part.events.is_empty(), "part {index} is empty");
        assert_eq!(header_rev(part), revision);
    }
    // etcd fills each part with as many events as stay under 2 MiB: two ~1 MB events, then one.
    let sizes: Vec<usize> = parts.iter().map(|part| part.events.len()).collect();
    assert_eq!(sizes, [2, 1], "events per part");
    let joined: Vec<&Event> = parts.iter().flat_map(|part| &part.events).collect();
    for (index, event) in joined.iter().enumerate() {
        let kv = event.kv.as_ref().expect("kv");
        let prev = event.prev_kv.as_ref().expect("prev_kv");
        assert_eq!(text(&kv.key), format!("f{index}"));
        assert_eq!(kv.mod_revision, revision);
        assert!(kv.value == new[index], "new value of f{index}");
        assert!(prev.value == old[index], "old value of f{index}");
    }

    let whole: Vec<&WatchResponse> = responses
        .iter()
        .filter(|response| response.watch_id == 1)
        .collect();
    assert_eq!(whole.len(), 1, "without fragment: one response");
    assert!(!whole[0].fragment);
    assert_eq!(whole[0].events.len(), 3);
}

/// Many watchers on one stream and several streams at once (two sharing one connection): each
/// watcher gets exactly its own events, with its own stream's ids.
#[tokio::test]
async fn many_watchers_on_several_streams_each_get_their_own_events() {
    const KEYS: i64 = 20;
    let member = Member::start().await;
    let mut kv = member.kv().await;
    let shared = member.channel().await;
    let mut streams = vec![
        WatchStream::open_on(shared.clone()),
        WatchStream::open_on(shared),
        WatchStream::open(&member).await,
    ];
    for stream in &mut streams {
        for index in 0..KEYS {
            let created = stream.create_ok(watch(format!("key{index:02}"), "")).await;
            assert_eq!(created.watch_id, index);
        }
        let prefix = stream.create_ok(watch("key", "kez")).await;
        assert_eq!(prefix.watch_id, KEYS);
    }
    for index in 0..KEYS {
        put_rev(&mut kv, &format!("key{index:02}"), &format!("v{index}")).await;
    }
    let last = KEYS + 1;
    for stream in &mut streams {
        let responses = stream
            .collect_until("every watcher's event", |seen| {
                (0..=KEYS).all(|id| reached(seen, id, if id == KEYS { last } else { id + 2 }))
            })
            .await;
        for index in 0..KEYS {
            assert_eq!(
                events_of(&responses, index),
                [put_ev(
                    &format!("key{index:02}"),
                    &format!("v{index}"),
                    index + 2
                )]
            );
        }
        assert_eq!(events_of(&responses, KEYS).len(), 20);
        assert_eq!(responses.len(), 40, "one response per watcher and revision");
    }
}

/// A watcher may start exactly at the compacted revision C: etcd still holds C's changes (a
/// compaction keeps each key's newest version at or below C) and replays from C, inclusive.
#[tokio::test]
async fn watch_from_exactly_the_compact_revision_replays_it() {
    let member = member_compacted_at_5().await;

    let mut stream = WatchStream::open(&member).await;
    let created = stream
        .create_ok(WatchCreateRequest {
            start_revision: 5,
            ..watch("a", "")
        })
        .await;
    assert_eq!((created.watch_id, header_rev(&created)), (0, 6));
    let first = stream.next().await;
    assert!(!first.canceled, "etcd replays revision 5, got {first:?}");
    let mut responses = vec![first];
    if !reached(&responses, 0, 6) {
        responses.push(stream.next().await);
    }
    assert_eq!(
        events_of(&responses, 0),
        [put_ev("a", "5", 5), put_ev("a", "6", 6)]
    );
}
