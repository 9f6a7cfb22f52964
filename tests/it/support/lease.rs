//! Lease and watch helpers shared by the lease tests: granting, one keepalive at a time or a
//! long-lived keepalive stream, and a watcher of one key prefix that keeps each response whole
//! (the lease tests check that a revoke's deletes arrive in one response).
//!
//! etcd's gRPC server sends a stream's response headers only with its first message, so a
//! bidirectional call is opened on a task and awaited at the first read; requests may be
//! queued before that. Every read is bounded by a timeout.

use std::time::{Duration, Instant};

use mnemo::pb::etcdserverpb::lease_client::LeaseClient;
use mnemo::pb::etcdserverpb::watch_client::WatchClient;
use mnemo::pb::etcdserverpb::watch_request::RequestUnion;
use mnemo::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    PutRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use mnemo::pb::mvccpb::event::EventType;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

/// Requests a test may queue on one stream before reading; the tests send a handful.
const STREAM_REQUESTS_QUEUED: usize = 16;

/// Grants a lease of `ttl` seconds with id `id` (0: the server picks); panics on error.
pub async fn grant(lease: &mut LeaseClient<Channel>, ttl: i64, id: i64) -> LeaseGrantResponse {
    lease
        .lease_grant(LeaseGrantRequest { ttl, id })
        .await
        .unwrap_or_else(|status| panic!("grant of {id} (TTL {ttl}): {status:?}"))
        .into_inner()
}

/// Revokes lease `id`; panics on error.
pub async fn revoke(lease: &mut LeaseClient<Channel>, id: i64) -> i64 {
    let response = lease
        .lease_revoke(LeaseRevokeRequest { id })
        .await
        .unwrap_or_else(|status| panic!("revoke of {id}: {status:?}"))
        .into_inner();
    response.header.map_or(0, |header| header.revision)
}

/// LeaseTimeToLive of `id`; panics on error.
pub async fn time_to_live(
    lease: &mut LeaseClient<Channel>,
    id: i64,
    keys: bool,
) -> LeaseTimeToLiveResponse {
    lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
        .await
        .unwrap_or_else(|status| panic!("TimeToLive of {id}: {status:?}"))
        .into_inner()
}

/// The ids LeaseLeases lists, in the order it lists them; panics on error.
pub async fn lease_ids(lease: &mut LeaseClient<Channel>) -> Vec<i64> {
    lease
        .lease_leases(LeaseLeasesRequest {})
        .await
        .unwrap_or_else(|status| panic!("Leases: {status:?}"))
        .into_inner()
        .leases
        .into_iter()
        .map(|status| status.id)
        .collect()
}

/// A put of `key` = `value` attached to lease `lease`.
pub fn put_with_lease(key: &str, value: &str, lease: i64) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        lease,
        ..Default::default()
    }
}

/// One LeaseKeepAlive call, open until dropped.
pub struct KeepAliveStream {
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    opening: Option<JoinHandle<Result<Streaming<LeaseKeepAliveResponse>, tonic::Status>>>,
    responses: Option<Streaming<LeaseKeepAliveResponse>>,
}

impl KeepAliveStream {
    /// Opens a keepalive stream on `channel`.
    pub fn open(channel: Channel) -> KeepAliveStream {
        let mut client = LeaseClient::new(channel);
        let (requests, receiver) = mpsc::channel(STREAM_REQUESTS_QUEUED);
        let opening = tokio::spawn(async move {
            client
                .lease_keep_alive(ReceiverStream::new(receiver))
                .await
                .map(tonic::Response::into_inner)
        });
        KeepAliveStream {
            requests,
            opening: Some(opening),
            responses: None,
        }
    }

    /// Sends a keepalive of lease `id` and reads its answer, within `timeout` in all.
    pub async fn keep_alive(
        &mut self,
        id: i64,
        timeout: Duration,
    ) -> Result<LeaseKeepAliveResponse, String> {
        let exchange = async {
            self.requests
                .send(LeaseKeepAliveRequest { id })
                .await
                .map_err(|_| "the keepalive stream is closed".to_owned())?;
            if let Some(opening) = self.opening.take() {
                let opened = opening
                    .await
                    .map_err(|err| format!("the keepalive call task: {err}"))?;
                self.responses = Some(opened.map_err(|status| format!("{status:?}"))?);
            }
            let responses = self
                .responses
                .as_mut()
                .ok_or_else(|| "the keepalive stream failed to open".to_owned())?;
            match responses.message().await {
                Ok(Some(response)) => Ok(response),
                Ok(None) => Err("the keepalive stream ended".to_owned()),
                Err(status) => Err(format!("{status:?}")),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no keepalive answer within {timeout:?}")))
    }
}

/// One keepalive of lease `id` on a stream of its own, bounded by `timeout`. The times around
/// it say when the lease was renewed at the earliest (`sent`) and at the latest (`answered`).
pub struct KeepAliveRound {
    /// The answer, or why there was none.
    pub answer: Result<LeaseKeepAliveResponse, String>,
    /// Just before the request was sent.
    pub sent: Instant,
    /// Just after the answer (or the failure) arrived.
    pub answered: Instant,
}

/// Sends one keepalive of `id` through `channel` on a new stream; see [`KeepAliveRound`].
pub async fn keep_alive_once(channel: Channel, id: i64, timeout: Duration) -> KeepAliveRound {
    let sent = Instant::now();
    let mut stream = KeepAliveStream::open(channel);
    let answer = stream.keep_alive(id, timeout).await;
    KeepAliveRound {
        answer,
        sent,
        answered: Instant::now(),
    }
}

/// A watcher of every key under one prefix whose responses are read one at a time.
pub struct PrefixWatch {
    /// Kept so that the request side of the stream stays open.
    _requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

impl PrefixWatch {
    /// Watches keys starting with `prefix` (an ASCII prefix whose last byte is below 0x7f)
    /// through `channel` from `start_revision` (0: the member's next one), and waits for the
    /// watcher to be created. A follower may not have applied the latest writes yet, so a
    /// watch there that must not see them starts past them.
    pub async fn open(
        channel: Channel,
        prefix: &str,
        start_revision: i64,
        timeout: Duration,
    ) -> PrefixWatch {
        let mut range_end = prefix.as_bytes().to_vec();
        let last = range_end.last_mut().expect("a non-empty prefix");
        assert!(*last < 0x7f, "the prefix {prefix:?} must end below 0x7f");
        *last += 1;
        let create = WatchCreateRequest {
            key: prefix.as_bytes().to_vec().into(),
            range_end: range_end.into(),
            start_revision,
            ..Default::default()
        };
        let (requests, receiver) = mpsc::channel(STREAM_REQUESTS_QUEUED);
        requests
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(create)),
            })
            .await
            .expect("queue the watch create request");
        let opening = async {
            WatchClient::new(channel)
                .watch(ReceiverStream::new(receiver))
                .await
        };
        let responses = tokio::time::timeout(timeout, opening)
            .await
            .unwrap_or_else(|_| panic!("the watch of {prefix:?} did not open within {timeout:?}"))
            .unwrap_or_else(|status| panic!("watch of {prefix:?}: {status:?}"))
            .into_inner();
        let mut watch = PrefixWatch {
            _requests: requests,
            responses,
        };
        let created = watch.next(timeout).await;
        assert!(
            created.created && !created.canceled && created.events.is_empty(),
            "the watch of {prefix:?} answered {created:?}"
        );
        watch
    }

    /// The next response; panics when none arrives within `timeout`, or the stream fails.
    pub async fn next(&mut self, timeout: Duration) -> WatchResponse {
        match tokio::time::timeout(timeout, self.responses.message()).await {
            Err(_) => panic!("no watch response within {timeout:?}"),
            Ok(Err(status)) => panic!("the watch stream failed: {status:?}"),
            Ok(Ok(None)) => panic!("the watch stream ended"),
            Ok(Ok(Some(response))) => response,
        }
    }
}

/// `(DELETE?, key, mod_revision)` of every event of `response`, for assertions.
pub fn event_summary(response: &WatchResponse) -> Vec<(bool, String, i64)> {
    response
        .events
        .iter()
        .map(|event| {
            let kv = event.kv.as_ref().expect("an event carries a kv");
            (
                event.r#type == EventType::Delete as i32,
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.mod_revision,
            )
        })
        .collect()
}
