//! The gRPC client: talks etcd's wire protocol to remote members (mnemo or etcd).
//!
//! Errors come back as gRPC statuses; like clientv3, it recognises etcd's errors by their
//! exact message and turns them back into [`EtcdError`]. Over several endpoints, one tonic
//! channel balances calls across them; a call that could not reach a member (refused
//! connection) is resent to another, and every unary call has a deadline
//! ([`CLIENT_REQUEST_TIMEOUT`]). Watch streams have none: they live for minutes, and HTTP/2
//! pings break the one on a frozen member so that it resumes where the balancer sends it.
//! A frozen member still accepts TCP connections, so the balancer cannot tell it is down:
//! calls sent to it end at the deadline.
//! This module owns the transport only; request and response conversion lives in `convert`.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::{
    ClientError, EtcdError, Header, KvClient, LeaseGranted, LeaseTimeToLive, Reply, WatchEvents,
    WatchRequest, WatchUpdate,
};
use crate::convert;
use crate::limits::{
    CLIENT_CALL_ATTEMPTS_MAX, CLIENT_CALL_BACKOFF_INITIAL, CLIENT_CALL_BACKOFF_MAX,
    CLIENT_CONNECT_TIMEOUT, CLIENT_KEEPALIVE_INTERVAL, CLIENT_KEEPALIVE_TIMEOUT,
    CLIENT_REQUEST_TIMEOUT, CLIENT_WATCH_BACKOFF_INITIAL, CLIENT_WATCH_BACKOFF_MAX,
    CLIENT_WATCH_QUEUE, GRPC_RECV_BYTES_MAX,
};
use crate::pb::etcdserverpb::{
    self as rpc, kv_client::KvClient as KvStub, lease_client::LeaseClient as LeaseStub,
    watch_client::WatchClient as WatchStub,
};
use crate::tls::ClientTls;
use crate::types::{
    DeleteRangeRequest, DeleteRangeResponse, LeaseId, PutRequest, PutResponse, RangeRequest,
    RangeResponse, Revision, TxnRequest, TxnResponse,
};

/// A client of remote members over gRPC.
#[derive(Clone)]
pub struct GrpcClient {
    kv: KvStub<Channel>,
    channel: Channel,
    /// Deadline of each unary call, retries included.
    deadline: Duration,
}

impl GrpcClient {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:2379`).
    ///
    /// # Errors
    /// [`ClientError::Transport`] when the endpoint is invalid or unreachable.
    pub async fn connect(endpoint: &str) -> Result<GrpcClient, ClientError> {
        GrpcClient::connect_with_tls(endpoint, None).await
    }

    /// Connects to `endpoint`; an `https://` one (e.g. `https://127.0.0.1:2379`) is dialed
    /// with `tls`: the member's certificate must chain to its CA, and its client certificate,
    /// if any, is presented (as etcdctl's `--cacert`, `--cert`, `--key`).
    ///
    /// # Errors
    /// [`ClientError::Transport`] when the endpoint is invalid or unreachable, the TLS
    /// handshake fails, or an `https://` endpoint comes without `tls`.
    pub async fn connect_with_tls(
        endpoint: &str,
        tls: Option<&ClientTls>,
    ) -> Result<GrpcClient, ClientError> {
        let channel = endpoint_of(endpoint, tls)?
            .connect()
            .await
            .map_err(transport)?;
        Ok(GrpcClient::on(channel))
    }

    /// Connects to every one of `endpoints` and spreads calls over them, as clientv3 does
    /// with several endpoints: a member that is down is skipped (its calls are resent to
    /// another), and one that comes back is used again. `tls` is for the `https://` ones.
    ///
    /// # Errors
    /// [`ClientError::Transport`] when `endpoints` is empty, one is invalid, or none of them
    /// can be reached now (each one's reason is given).
    pub async fn connect_all(
        endpoints: &[String],
        tls: Option<&ClientTls>,
    ) -> Result<GrpcClient, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::Transport("no endpoint given".into()));
        }
        let targets = endpoints
            .iter()
            .map(|endpoint| endpoint_of(endpoint, tls))
            .collect::<Result<Vec<_>, _>>()?;
        // The balanced channel connects lazily; one live member now is what a caller that
        // fails fast on a wrong address needs to know.
        let probes = endpoints
            .iter()
            .zip(&targets)
            .map(|(endpoint, target)| async move {
                match tokio::time::timeout(CLIENT_CONNECT_TIMEOUT, target.connect()).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(err)) => Err(format!("{endpoint}: {}", error_chain(&err))),
                    Err(_) => Err(format!(
                        "{endpoint}: no connection within {CLIENT_CONNECT_TIMEOUT:?}"
                    )),
                }
            });
        let probed = futures::future::join_all(probes).await;
        if probed.iter().all(Result::is_err) {
            let reasons: Vec<String> = probed.into_iter().filter_map(Result::err).collect();
            return Err(ClientError::Transport(format!(
                "no endpoint could be reached: {}",
                reasons.join("; ")
            )));
        }
        Ok(GrpcClient::on(Channel::balance_list(targets.into_iter())))
    }

    /// The same client with another deadline for each unary call (default
    /// [`CLIENT_REQUEST_TIMEOUT`]).
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> GrpcClient {
        self.deadline = deadline;
        self
    }

    fn on(channel: Channel) -> GrpcClient {
        let kv = KvStub::new(channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(GRPC_RECV_BYTES_MAX);
        GrpcClient {
            kv,
            channel,
            deadline: CLIENT_REQUEST_TIMEOUT,
        }
    }

    /// Runs one unary call (`attempt` makes it once) within the deadline, resending it while
    /// the member it went to could not be reached, or, for a call that may run twice
    /// (`idempotent`: reads, keepalives), while the answer is Unavailable: a connection that
    /// broke under it, or a member without a leader (clientv3 resends reads on these too).
    async fn call<T, F, Fut>(&self, idempotent: bool, mut attempt: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let attempts = async {
            let mut backoff = CLIENT_CALL_BACKOFF_INITIAL;
            let mut tries = 1;
            loop {
                match attempt().await {
                    Ok(response) => return Ok(response),
                    Err(status)
                        if tries < CLIENT_CALL_ATTEMPTS_MAX
                            && (never_sent(&status)
                                || (idempotent && status.code() == tonic::Code::Unavailable)) =>
                    {
                        tracing::debug!(%status, tries, "call failed; resending");
                    }
                    Err(status) => return Err(from_status(status)),
                }
                tries += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(CLIENT_CALL_BACKOFF_MAX);
            }
        };
        tokio::time::timeout(self.deadline, attempts)
            .await
            .unwrap_or(Err(ClientError::Timeout(self.deadline)))
    }
}

/// A transport error as a [`ClientError`], with its causes.
fn transport(err: tonic::transport::Error) -> ClientError {
    ClientError::Transport(error_chain(&err))
}

/// The endpoint to dial for `endpoint`, TLS and timeouts set.
fn endpoint_of(endpoint: &str, tls: Option<&ClientTls>) -> Result<Endpoint, ClientError> {
    let mut target = Endpoint::from_shared(endpoint.to_string())
        .map_err(transport)?
        .connect_timeout(CLIENT_CONNECT_TIMEOUT)
        .http2_keep_alive_interval(CLIENT_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(CLIENT_KEEPALIVE_TIMEOUT);
    if crate::tls::is_https(endpoint) {
        let tls = tls.ok_or_else(|| {
            ClientError::Transport(format!(
                "{endpoint} is an https endpoint: a CA to verify it is needed"
            ))
        })?;
        target = target.tls_config(tls.tonic_config()).map_err(transport)?;
    }
    Ok(target)
}

/// Whether the call failed before it was sent: no connection to the member could be made
/// (tonic then answers Unavailable with its connect error beneath).
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    for _ in 0..ERROR_CHAIN_DEPTH_MAX {
        let Some(cause) = source else { return false };
        if cause.is::<tonic::ConnectError>() {
            return true;
        }
        source = cause.source();
    }
    false
}

impl GrpcClient {
    fn lease(&self) -> LeaseStub<Channel> {
        LeaseStub::new(self.channel.clone())
    }
}

/// Causes of a transport error included in its description.
const ERROR_CHAIN_DEPTH_MAX: usize = 8;

/// An error with its causes: tonic's transport errors say only "transport error" at the top,
/// and the reason (refused connection, a certificate that did not verify) lies beneath. A
/// cause worded like the one above it (tonic wraps its connect error once more) is said once.
fn error_chain(error: &dyn std::error::Error) -> String {
    with_causes(error.to_string(), error.source())
}

/// `text` followed by each cause in `source`'s chain, a cause worded like the one before it
/// (wrappers often repeat their cause) said once.
fn with_causes(text: String, mut source: Option<&dyn std::error::Error>) -> String {
    let mut last = text.clone();
    let mut text = text;
    for _ in 0..ERROR_CHAIN_DEPTH_MAX {
        let Some(cause) = source else { break };
        let said = cause.to_string();
        if said != last {
            text.push_str(": ");
            text.push_str(&said);
            last = said;
        }
        source = cause.source();
    }
    text
}

fn header_from_pb(header: Option<rpc::ResponseHeader>) -> Header {
    let header = header.unwrap_or_default();
    Header {
        cluster_id: header.cluster_id,
        member_id: header.member_id,
        revision: header.revision,
        raft_term: header.raft_term,
    }
}

/// Turns a status back into etcd's error when its message is one of etcd's.
fn from_status(status: tonic::Status) -> ClientError {
    let known = [
        EtcdError::KeyNotProvided,
        EtcdError::KeyNotFound,
        EtcdError::ValueProvided,
        EtcdError::LeaseProvided,
        EtcdError::TooManyOps,
        EtcdError::DuplicateKey,
        EtcdError::RequestTooLarge,
        EtcdError::InvalidSortOption,
        EtcdError::Compacted,
        EtcdError::FutureRevision,
        EtcdError::LeaseNotFound,
        EtcdError::LeaseExists,
        EtcdError::LeaseTtlTooLarge,
        EtcdError::ElectionNotLeader,
        EtcdError::ElectionNoLeader,
        EtcdError::NoLeader,
        EtcdError::LeaderChanged,
        EtcdError::Timeout,
        EtcdError::Stopped,
    ];
    match known
        .into_iter()
        .find(|error| error.to_string() == status.message())
    {
        Some(error) => ClientError::Etcd(error),
        None if status.code() == tonic::Code::Unknown => {
            ClientError::Etcd(EtcdError::Internal(status_text(&status)))
        }
        None => ClientError::Transport(format!("{:?}: {}", status.code(), status_text(&status))),
    }
}

/// A status's message with the causes of a status made on this side (a refused TLS handshake
/// says only "transport error" at the top); a member's own statuses carry none.
fn status_text(status: &tonic::Status) -> String {
    with_causes(
        status.message().to_string(),
        std::error::Error::source(status),
    )
}

impl KvClient for GrpcClient {
    async fn range(&self, request: RangeRequest) -> Result<Reply<RangeResponse>, ClientError> {
        let request = convert::range_to_pb(&request);
        let response = self
            .call(true, || {
                let (mut kv, request) = (self.kv.clone(), request.clone());
                async move { kv.range(request).await }
            })
            .await?
            .into_inner();
        Ok(Reply {
            header: header_from_pb(response.header),
            response: convert::range_response_from_pb(response),
        })
    }

    async fn put(&self, request: PutRequest) -> Result<Reply<PutResponse>, ClientError> {
        let request = convert::put_to_pb(&request);
        let response = self
            .call(false, || {
                let (mut kv, request) = (self.kv.clone(), request.clone());
                async move { kv.put(request).await }
            })
            .await?
            .into_inner();
        Ok(Reply {
            header: header_from_pb(response.header),
            response: convert::put_response_from_pb(response),
        })
    }

    async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<Reply<DeleteRangeResponse>, ClientError> {
        let request = convert::delete_to_pb(&request);
        let response = self
            .call(false, || {
                let (mut kv, request) = (self.kv.clone(), request.clone());
                async move { kv.delete_range(request).await }
            })
            .await?
            .into_inner();
        Ok(Reply {
            header: header_from_pb(response.header),
            response: convert::delete_response_from_pb(response),
        })
    }

    async fn txn(&self, request: TxnRequest) -> Result<Reply<TxnResponse>, ClientError> {
        let request = convert::txn_to_pb(&request);
        let response = self
            .call(false, || {
                let (mut kv, request) = (self.kv.clone(), request.clone());
                async move { kv.txn(request).await }
            })
            .await?
            .into_inner();
        Ok(Reply {
            header: header_from_pb(response.header),
            response: convert::txn_response_from_pb(response),
        })
    }

    async fn compact(&self, revision: Revision, physical: bool) -> Result<Header, ClientError> {
        let request = rpc::CompactionRequest { revision, physical };
        let response = self
            .call(false, || {
                let mut kv = self.kv.clone();
                async move { kv.compact(request).await }
            })
            .await?;
        Ok(header_from_pb(response.into_inner().header))
    }

    async fn lease_grant(&self, ttl: i64, id: LeaseId) -> Result<Reply<LeaseGranted>, ClientError> {
        let response = self
            .call(false, || {
                let mut lease = self.lease();
                async move { lease.lease_grant(rpc::LeaseGrantRequest { ttl, id }).await }
            })
            .await?
            .into_inner();
        Ok(Reply {
            header: header_from_pb(response.header),
            response: LeaseGranted {
                id: response.id,
                ttl: response.ttl,
            },
        })
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<Header, ClientError> {
        let response = self
            .call(false, || {
                let mut lease = self.lease();
                async move { lease.lease_revoke(rpc::LeaseRevokeRequest { id }).await }
            })
            .await?
            .into_inner();
        Ok(header_from_pb(response.header))
    }

    async fn lease_keep_alive_once(&self, id: LeaseId) -> Result<Reply<i64>, ClientError> {
        let response = self
            .call(true, || {
                let mut lease = self.lease();
                async move {
                    let request = futures::stream::iter([rpc::LeaseKeepAliveRequest { id }]);
                    let mut responses = lease.lease_keep_alive(request).await?.into_inner();
                    responses
                        .message()
                        .await?
                        .ok_or_else(|| tonic::Status::unavailable("keepalive stream ended"))
                }
            })
            .await?;
        Ok(Reply {
            header: header_from_pb(response.header),
            response: response.ttl,
        })
    }

    async fn lease_time_to_live(
        &self,
        id: LeaseId,
        keys: bool,
    ) -> Result<Reply<LeaseTimeToLive>, ClientError> {
        let response = self
            .call(true, || {
                let mut lease = self.lease();
                async move {
                    let request = rpc::LeaseTimeToLiveRequest { id, keys };
                    lease.lease_time_to_live(request).await
                }
            })
            .await?
            .into_inner();
        Ok(Reply {
            header: header_from_pb(response.header),
            response: LeaseTimeToLive {
                ttl: response.ttl,
                granted: response.granted_ttl,
                keys: response.keys,
            },
        })
    }

    async fn lease_leases(&self) -> Result<Reply<Vec<LeaseId>>, ClientError> {
        let response = self
            .call(true, || {
                let mut lease = self.lease();
                async move { lease.lease_leases(rpc::LeaseLeasesRequest {}).await }
            })
            .await?
            .into_inner();
        Ok(Reply {
            header: header_from_pb(response.header),
            response: response.leases.into_iter().map(|lease| lease.id).collect(),
        })
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchEvents, ClientError> {
        let (updates, updates_rx) = mpsc::channel(CLIENT_WATCH_QUEUE);
        let (accepted, accepted_rx) = oneshot::channel();
        let task = tokio::spawn(run_watch(
            self.channel.clone(),
            watch_create_to_pb(&request),
            updates,
            accepted,
        ));
        // Only the wait for the member to accept the watch has the deadline; the stream
        // itself lives as long as its consumer.
        match tokio::time::timeout(self.deadline, accepted_rx).await {
            Ok(Ok(Ok(()))) => Ok(Box::pin(ReceiverStream::new(updates_rx))),
            Ok(Ok(Err(err))) => Err(err),
            Ok(Err(_)) => Err(ClientError::Transport("watch task ended".into())),
            Err(_) => {
                task.abort();
                Err(ClientError::Timeout(self.deadline))
            }
        }
    }
}

fn watch_create_to_pb(request: &WatchRequest) -> rpc::WatchCreateRequest {
    use rpc::watch_create_request::FilterType;
    let mut filters = Vec::new();
    if request.no_put {
        filters.push(FilterType::Noput as i32);
    }
    if request.no_delete {
        filters.push(FilterType::Nodelete as i32);
    }
    rpc::WatchCreateRequest {
        key: request.range.key.clone(),
        range_end: request.range.range_end.clone(),
        start_revision: request.start_revision,
        progress_notify: request.progress_notify,
        filters,
        prev_kv: request.prev_kv,
        watch_id: request.watch_id,
        fragment: request.fragment,
    }
}

/// How one connection of a watch ended.
enum WatchEnd {
    /// The consumer dropped the stream, or the watch ended for good (error already sent).
    Finished,
    /// The connection broke; resume from `create.start_revision`. `created` says whether
    /// the member had accepted the watch on it (then the backoff starts over).
    Broken { reason: String, created: bool },
}

/// Runs a watch across connections: each time the stream breaks, it creates the watch again
/// from the revision after the last one seen (events, progress notifications, or the
/// creation revision of a watch from "now"), so the consumer sees no gap and no repeat.
async fn run_watch(
    channel: Channel,
    mut create: rpc::WatchCreateRequest,
    updates: mpsc::Sender<Result<WatchUpdate, ClientError>>,
    accepted: oneshot::Sender<Result<(), ClientError>>,
) {
    let mut accepted = Some(accepted);
    let mut backoff = CLIENT_WATCH_BACKOFF_INITIAL;
    let mut unaccepted_attempts = 0;
    loop {
        match watch_once(&channel, &mut create, &updates, &mut accepted).await {
            WatchEnd::Finished => return,
            WatchEnd::Broken { reason, created } => {
                if created {
                    backoff = CLIENT_WATCH_BACKOFF_INITIAL;
                }
                if accepted.is_some() {
                    // Not accepted yet: creating a watch changes nothing, so it is tried on
                    // another endpoint like a unary call is (the caller's deadline bounds
                    // the wait); past the attempts, the caller hears why instead of a stream.
                    unaccepted_attempts += 1;
                    if unaccepted_attempts >= CLIENT_CALL_ATTEMPTS_MAX {
                        if let Some(accepted) = accepted.take() {
                            let _ = accepted.send(Err(ClientError::Transport(reason)));
                        }
                        return;
                    }
                    tracing::debug!(%reason, "watch not accepted; trying again");
                } else {
                    tracing::debug!(%reason, resume = create.start_revision, "watch broken; resuming");
                }
            }
        }
        if updates.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(CLIENT_WATCH_BACKOFF_MAX);
    }
}

async fn watch_once(
    channel: &Channel,
    create: &mut rpc::WatchCreateRequest,
    updates: &mpsc::Sender<Result<WatchUpdate, ClientError>>,
    accepted: &mut Option<oneshot::Sender<Result<(), ClientError>>>,
) -> WatchEnd {
    let (requests, requests_rx) = mpsc::channel(1);
    let request = rpc::WatchRequest {
        request_union: Some(rpc::watch_request::RequestUnion::CreateRequest(
            create.clone(),
        )),
    };
    if requests.send(request).await.is_err() {
        return broken("request queue closed", false);
    }
    let mut stub = WatchStub::new(channel.clone()).max_decoding_message_size(usize::MAX);
    let mut responses = match stub.watch(ReceiverStream::new(requests_rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return broken(status, false),
    };
    // Kept open: closing the request side is allowed, but there is no reason to.
    let _requests = requests;
    let mut fragments: Vec<crate::pb::mvccpb::Event> = Vec::new();
    let mut created = false;
    loop {
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return broken("stream ended by the member", created),
            Err(status) => return broken(status, created),
        };
        let header = header_from_pb(response.header);
        if response.created {
            if response.canceled {
                let error = ClientError::WatchCanceled(response.cancel_reason);
                return finish(updates, accepted, error).await;
            }
            created = true;
            if create.start_revision == 0 {
                create.start_revision = header.revision + 1;
            }
            if let Some(accepted) = accepted.take() {
                let _ = accepted.send(Ok(()));
            }
            continue;
        }
        if response.canceled {
            let error = if response.compact_revision != 0 {
                ClientError::WatchCompacted {
                    compact_revision: response.compact_revision,
                }
            } else {
                ClientError::WatchCanceled(response.cancel_reason)
            };
            return finish(updates, accepted, error).await;
        }
        fragments.extend(response.events);
        if response.fragment {
            continue;
        }
        let events: Vec<_> = std::mem::take(&mut fragments)
            .into_iter()
            .map(convert::event_from_pb)
            .collect();
        let resume = match events.last() {
            Some(last) => last.kv.mod_revision + 1,
            None => header.revision + 1,
        };
        create.start_revision = create.start_revision.max(resume);
        if updates
            .send(Ok(WatchUpdate { header, events }))
            .await
            .is_err()
        {
            return WatchEnd::Finished;
        }
    }
}

fn broken(reason: impl ToString, created: bool) -> WatchEnd {
    WatchEnd::Broken {
        reason: reason.to_string(),
        created,
    }
}

/// Ends a watch with `error`: to the caller if the watch was never accepted, else as the
/// stream's last item.
async fn finish(
    updates: &mpsc::Sender<Result<WatchUpdate, ClientError>>,
    accepted: &mut Option<oneshot::Sender<Result<(), ClientError>>>,
    error: ClientError,
) -> WatchEnd {
    match accepted.take() {
        Some(accepted) => {
            let _ = accepted.send(Err(error));
        }
        None => {
            let _ = updates.send(Err(error)).await;
        }
    }
    WatchEnd::Finished
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Deadline the tests give a call; short, so they run fast.
    const TEST_DEADLINE: Duration = Duration::from_millis(500);
    /// Scheduling slack allowed on top of a deadline.
    const SLACK: Duration = Duration::from_secs(2);

    /// A listener that accepts connections and never reads from or writes to them, as a
    /// frozen (SIGSTOP) member looks to a client. Returns its URL and the task holding them.
    async fn silent_member() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local_addr"));
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        (url, holder)
    }

    /// A URL nothing listens on: bound, then released.
    fn refusing_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        format!("http://{}", listener.local_addr().expect("local_addr"))
    }

    #[tokio::test]
    async fn a_call_to_a_silent_member_ends_at_the_deadline() {
        let (url, holder) = silent_member().await;
        let client = GrpcClient::connect_all(std::slice::from_ref(&url), None)
            .await
            .expect("the member accepts connections")
            .with_deadline(TEST_DEADLINE);
        let started = Instant::now();
        let range = client.range(RangeRequest::key("k")).await;
        assert_eq!(range.err(), Some(ClientError::Timeout(TEST_DEADLINE)));
        let put = client.put(PutRequest::new("k", "v")).await;
        assert_eq!(put.err(), Some(ClientError::Timeout(TEST_DEADLINE)));
        // A watch the member never accepts fails the same way instead of hanging.
        let watch = client.watch(WatchRequest::key("k")).await;
        assert_eq!(watch.err(), Some(ClientError::Timeout(TEST_DEADLINE)));
        let elapsed = started.elapsed();
        assert!(
            elapsed >= TEST_DEADLINE * 3 && elapsed < TEST_DEADLINE * 3 + SLACK,
            "three calls took {elapsed:?}"
        );
        holder.abort();
    }

    #[tokio::test]
    async fn the_default_deadline_is_the_named_one() {
        let (url, holder) = silent_member().await;
        let client = GrpcClient::connect(&url).await.expect("connect");
        assert_eq!(client.deadline, CLIENT_REQUEST_TIMEOUT);
        holder.abort();
    }

    #[tokio::test]
    async fn connect_all_fails_when_no_endpoint_can_be_reached() {
        let (first, second) = (refusing_url(), refusing_url());
        let started = Instant::now();
        let Err(ClientError::Transport(message)) =
            GrpcClient::connect_all(&[first.clone(), second.clone()], None).await
        else {
            panic!("connecting to two closed ports succeeded");
        };
        assert!(started.elapsed() < CLIENT_CONNECT_TIMEOUT + SLACK);
        assert!(
            message.starts_with("no endpoint could be reached: ")
                && message.contains(&first)
                && message.contains(&second),
            "{message}"
        );
        let Err(ClientError::Transport(message)) = GrpcClient::connect_all(&[], None).await else {
            panic!("connecting to no endpoint succeeded");
        };
        assert_eq!(message, "no endpoint given");
    }

    #[tokio::test]
    async fn calls_give_up_when_every_endpoint_refuses() {
        // One endpoint answered at start (the silent one), then is gone: calls are resent a
        // bounded number of times and end with the transport error, before the deadline.
        let (url, holder) = silent_member().await;
        let client = GrpcClient::connect_all(&[url, refusing_url()], None)
            .await
            .expect("one endpoint accepts connections");
        holder.abort();
        let _ = holder.await;
        let started = Instant::now();
        let outcome = client.range(RangeRequest::key("k")).await;
        assert!(
            matches!(outcome, Err(ClientError::Transport(ref m)) if m.starts_with("Unavailable")),
            "{outcome:?}"
        );
        assert!(
            started.elapsed() < CLIENT_REQUEST_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
    }
}
