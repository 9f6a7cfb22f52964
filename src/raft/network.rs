//! The sending side of the peer transport: one gRPC channel per peer URL (TLS for
//! `https://` URLs, verified against `--peer-trusted-ca-file`), openraft's
//! messages (append, vote, pre-vote, leader transfer, whole snapshots) sent over it with
//! timeouts, and the requests a follower forwards to the leader.
//!
//! A slow or dead peer never stalls the others: openraft runs one replication task per
//! follower, every call here is bounded by a timeout, and an unreachable peer is retried
//! with a capped exponential backoff. Must not touch the log or the state machine; snapshot
//! files are only read.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::OptionalSend;
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendError,
    StreamAppendResult, TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::{Channel, Endpoint};

use super::state_machine::{DATA_DIR, SnapshotDir};
use super::wire::{
    self, CLUSTER_MISMATCH, ForwardRequest, ForwardResponse, Route, SENDER_REMOVED, SnapshotFile,
    SnapshotHeader,
};
use super::{MemberNode, RaftError, TypeConfig};
use crate::limits::{
    PEER_BACKOFF_INITIAL, PEER_BACKOFF_MAX, PEER_CONNECT_TIMEOUT, PEER_FORWARD_QUEUE,
    PEER_MESSAGE_BYTES_MAX, PEER_REFUSAL_LOG_INTERVAL, PEER_SNAPSHOT_CHUNK_BYTES,
    PEER_SNAPSHOT_CHUNK_TIMEOUT, PEER_SNAPSHOT_INSTALL_TIMEOUT, PEER_STREAM_REPLY_TIMEOUT_MIN,
};
use crate::pb::internal::peer_client::PeerClient as GrpcPeer;
use crate::pb::internal::{MembershipRequest, PeerMessage, SnapshotChunk};
use crate::tls::ClientTls;

type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
type EngineSnapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotDir>;

/// What every sender in this member shares: its identity, the channels to peers, and the
/// flag raised when a peer says this member was removed.
pub(super) struct PeerContext {
    pub cluster_id: u64,
    pub member_id: u64,
    /// How `https://` peers are dialed; `None` when no peer URL uses TLS.
    tls: Option<ClientTls>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Forwarding streams, by peer id and URL.
    lanes: Mutex<HashMap<(u64, String), Arc<ForwardLane>>>,
    /// When each kind of refusal was last logged, by peer; keeps a refused heartbeat every
    /// few milliseconds from flooding the log.
    refusals_logged: Mutex<HashMap<(u64, &'static str), Instant>>,
    /// Set (with the reason) once this member learns it was removed from the cluster.
    removed: watch::Sender<Option<String>>,
    /// The last member that sent this one an append (leaders do, heartbeats included), and
    /// when; a follower that has not heard from its leader for an election timeout counts
    /// itself leaderless, as etcd's does.
    last_append: Mutex<Option<(u64, Instant)>>,
}

impl PeerContext {
    pub(super) fn new(cluster_id: u64, member_id: u64, tls: Option<ClientTls>) -> PeerContext {
        PeerContext {
            cluster_id,
            member_id,
            tls,
            channels: Mutex::new(HashMap::new()),
            lanes: Mutex::new(HashMap::new()),
            refusals_logged: Mutex::new(HashMap::new()),
            removed: watch::Sender::new(None),
            last_append: Mutex::new(None),
        }
    }

    /// Records that `leader` just sent this member an append.
    pub(super) fn heard_from(&self, leader: u64) {
        *self.last_append.lock() = Some((leader, Instant::now()));
    }

    /// How long ago `leader` last sent this member an append, if it ever did.
    pub(super) fn since_heard_from(&self, leader: u64) -> Option<Duration> {
        match *self.last_append.lock() {
            Some((sender, at)) if sender == leader => Some(at.elapsed()),
            _ => None,
        }
    }

    /// Raises the removed flag (once).
    pub(super) fn mark_removed(&self, reason: String) {
        self.removed.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            tracing::error!(%reason, "this member has been removed from the cluster");
            *current = Some(reason);
            true
        });
    }

    /// Watches the removed flag.
    pub(super) fn removed(&self) -> watch::Receiver<Option<String>> {
        self.removed.subscribe()
    }

    fn route(&self, to: u64) -> Route {
        Route {
            cluster_id: self.cluster_id,
            from: self.member_id,
            to,
        }
    }

    /// A client for the peer at `url`. Channels connect lazily and reconnect by themselves,
    /// so one is kept per URL for the life of the member.
    fn client(&self, url: &str) -> Result<GrpcPeer<Channel>, String> {
        let mut channels = self.channels.lock();
        let channel = match channels.get(url) {
            Some(channel) => channel.clone(),
            None => {
                let channel = peer_endpoint(url, self.tls.as_ref())?.connect_lazy();
                channels.insert(url.to_owned(), channel.clone());
                channel
            }
        };
        Ok(GrpcPeer::new(channel)
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX))
    }

    /// Logs a refusal by `peer`, at most once per [`PEER_REFUSAL_LOG_INTERVAL`] per kind.
    pub(super) fn log_refusal(&self, peer: u64, kind: &'static str, status: &tonic::Status) {
        let now = Instant::now();
        let mut logged = self.refusals_logged.lock();
        let due = logged
            .get(&(peer, kind))
            .is_none_or(|last| now.duration_since(*last) >= PEER_REFUSAL_LOG_INTERVAL);
        if due {
            logged.insert((peer, kind), now);
            tracing::error!(peer = %format!("{peer:x}"), reason = status.message(), "peer refused this member's messages");
        }
    }

    /// Sends `request` to member `to` at `url` over the forwarding stream to that member
    /// (opened on first use) and waits at most `timeout` for the answer.
    ///
    /// # Errors
    /// [`RaftError::NoLeader`] when the member could not be reached (nothing was delivered),
    /// [`RaftError::LeaderChanged`] when the stream broke with the request possibly delivered
    /// (a write's outcome is then unknown), [`RaftError::Timeout`].
    pub(super) async fn forward(
        self: &Arc<Self>,
        to: u64,
        url: &str,
        request: &ForwardRequest,
        timeout: Duration,
    ) -> Result<ForwardResponse, RaftError> {
        let deadline = Instant::now() + timeout;
        // A lane that ended before this request went out is replaced once: nothing was sent
        // on it, so trying a fresh stream cannot apply a write twice.
        let mut fresh_tries = 1;
        loop {
            let lane = self.lane(to, url)?;
            let Some((id, answer, replies_before)) = lane.enter() else {
                if fresh_tries == 0 {
                    return Err(RaftError::NoLeader);
                }
                fresh_tries -= 1;
                continue;
            };
            let call = wire::ForwardCall {
                id,
                request: request.clone(),
            };
            let message = wire::envelope(self.route(to), &call).map_err(RaftError::Stopped)?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, lane.outbound.send(message)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    // The stream is over; the request never left this member.
                    lane.leave(id);
                    if fresh_tries == 0 {
                        return Err(lane.end_error());
                    }
                    fresh_tries -= 1;
                    continue;
                }
                Err(_) => {
                    // The queue stayed full for the whole wait: the stream is not moving.
                    lane.leave(id);
                    lane.end(LaneEnd::Broken);
                    return Err(RaftError::Timeout);
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            return match tokio::time::timeout(remaining, answer).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(_)) => Err(lane.end_error()),
                Err(_) => {
                    lane.leave(id);
                    // No answer at all since this request went out: the stream (or its
                    // connection) is stuck, so later requests get a fresh one.
                    if lane.replies_seen() == replies_before {
                        lane.end(LaneEnd::Broken);
                    }
                    Err(RaftError::Timeout)
                }
            };
        }
    }

    /// The open forwarding lane to member `to` at `url`, or a new one.
    fn lane(self: &Arc<Self>, to: u64, url: &str) -> Result<Arc<ForwardLane>, RaftError> {
        let key = (to, url.to_owned());
        let mut lanes = self.lanes.lock();
        if let Some(lane) = lanes.get(&key).filter(|lane| !lane.has_ended()) {
            return Ok(Arc::clone(lane));
        }
        let client = self.client(url).map_err(RaftError::Stopped)?;
        let (outbound, requests) = mpsc::channel(PEER_FORWARD_QUEUE);
        let lane = Arc::new(ForwardLane::new(outbound));
        lanes.insert(key, Arc::clone(&lane));
        drop(lanes);
        let driver = tokio::spawn(drive_lane(
            Arc::downgrade(self),
            to,
            client,
            Arc::clone(&lane),
            requests,
        ));
        let _ = lane.driver.set(driver.abort_handle());
        Ok(lane)
    }

    fn note_refusal(&self, peer: u64, status: &tonic::Status) {
        if status.code() == tonic::Code::FailedPrecondition
            && status.message().starts_with(CLUSTER_MISMATCH)
        {
            self.log_refusal(peer, "cluster", status);
        } else if status.code() == tonic::Code::PermissionDenied
            && status.message().starts_with(SENDER_REMOVED)
        {
            self.mark_removed(format!(
                "member {peer:x} refused this member: {}",
                status.message()
            ));
        }
    }
}

/// One long-lived `ForwardStream` call to a peer: a follower's requests for the leader go
/// out on it as they come, numbered, and answers come back in whatever order they finish.
/// One unary call per request cost a new HTTP/2 stream with its headers and trailers on both
/// members, about as much as the client's own request.
pub(super) struct ForwardLane {
    outbound: mpsc::Sender<PeerMessage>,
    state: Mutex<LaneState>,
    /// Answers received so far; a request that times out with none received since it was
    /// sent means the stream is stuck.
    replies_seen: AtomicU64,
    /// Stops the task that drives the stream.
    driver: std::sync::OnceLock<tokio::task::AbortHandle>,
}

#[derive(Default)]
struct LaneState {
    next_id: u64,
    /// Callers waiting for an answer, by request number.
    waiting: HashMap<u64, oneshot::Sender<ForwardResponse>>,
    /// Set once the stream is over, with how it ended.
    ended: Option<LaneEnd>,
}

/// How a forwarding stream ended, which decides what its waiting callers are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LaneEnd {
    /// The peer could not be reached: nothing sent on the stream was delivered.
    Unreached,
    /// The stream broke or was refused after opening: requests may have been delivered.
    Broken,
}

impl ForwardLane {
    fn new(outbound: mpsc::Sender<PeerMessage>) -> ForwardLane {
        ForwardLane {
            outbound,
            state: Mutex::new(LaneState::default()),
            replies_seen: AtomicU64::new(0),
            driver: std::sync::OnceLock::new(),
        }
    }

    /// Registers a caller: its request number, where its answer will arrive, and the count
    /// of answers seen so far. `None` if the stream is already over.
    fn enter(&self) -> Option<(u64, oneshot::Receiver<ForwardResponse>, u64)> {
        let mut state = self.state.lock();
        if state.ended.is_some() {
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        let (sender, receiver) = oneshot::channel();
        state.waiting.insert(id, sender);
        Some((id, receiver, self.replies_seen()))
    }

    /// Forgets a caller that stopped waiting.
    fn leave(&self, id: u64) {
        self.state.lock().waiting.remove(&id);
    }

    /// Hands an answer to its caller, if it still waits.
    fn answer(&self, reply: wire::ForwardReply) {
        self.replies_seen.fetch_add(1, Ordering::Relaxed);
        let waiting = self.state.lock().waiting.remove(&reply.id);
        if let Some(caller) = waiting {
            let _ = caller.send(reply.response);
        }
    }

    fn replies_seen(&self) -> u64 {
        self.replies_seen.load(Ordering::Relaxed)
    }

    fn has_ended(&self) -> bool {
        self.state.lock().ended.is_some()
    }

    /// Ends the lane: its waiting callers are released (their answers will never come), and
    /// the stream is dropped. The first reason given is kept.
    fn end(&self, how: LaneEnd) {
        let waiting = {
            let mut state = self.state.lock();
            state.ended.get_or_insert(how);
            std::mem::take(&mut state.waiting)
        };
        drop(waiting);
        if let Some(driver) = self.driver.get() {
            driver.abort();
        }
    }

    /// What a caller released by [`ForwardLane::end`] is told.
    fn end_error(&self) -> RaftError {
        match self.state.lock().ended {
            Some(LaneEnd::Unreached) => RaftError::NoLeader,
            // The request may have reached the leader: a write's outcome is unknown, so it
            // is reported like a leader change, not as a definite failure.
            _ => RaftError::LeaderChanged,
        }
    }
}

/// Opens the `ForwardStream` call of `lane` and hands every answer to its caller until the
/// stream ends, then ends the lane.
async fn drive_lane(
    ctx: std::sync::Weak<PeerContext>,
    to: u64,
    mut client: GrpcPeer<Channel>,
    lane: Arc<ForwardLane>,
    requests: mpsc::Receiver<PeerMessage>,
) {
    let requests = tokio_stream::wrappers::ReceiverStream::new(requests);
    let how = match client.forward_stream(requests).await {
        Err(status) => {
            note_refusal(&ctx, to, &status);
            if is_connect_failure(&status) {
                LaneEnd::Unreached
            } else {
                LaneEnd::Broken
            }
        }
        Ok(response) => {
            let mut replies = response.into_inner();
            loop {
                match replies.message().await {
                    Ok(Some(message)) => match wire::open::<wire::ForwardReply>(&message) {
                        Ok(reply) => lane.answer(reply),
                        Err(reason) => {
                            tracing::warn!(peer = %format!("{to:x}"), %reason, "undecodable answer on the forwarding stream");
                            break LaneEnd::Broken;
                        }
                    },
                    Ok(None) => break LaneEnd::Broken,
                    Err(status) => {
                        note_refusal(&ctx, to, &status);
                        break LaneEnd::Broken;
                    }
                }
            }
        }
    };
    lane.end(how);
}

/// [`PeerContext::note_refusal`] for a driver, which does not keep its member's context alive.
fn note_refusal(ctx: &std::sync::Weak<PeerContext>, peer: u64, status: &tonic::Status) {
    if let Some(ctx) = ctx.upgrade() {
        ctx.note_refusal(peer, status);
    }
}

/// A member's forwarding streams end with it (their drivers hold no reference to it).
impl Drop for PeerContext {
    fn drop(&mut self) {
        for lane in self.lanes.get_mut().values() {
            lane.end(LaneEnd::Broken);
        }
    }
}

fn peer_endpoint(url: &str, tls: Option<&ClientTls>) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|err| format!("peer URL {url}: {err}"))?
        .connect_timeout(PEER_CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if !crate::tls::is_https(url) {
        return Ok(endpoint);
    }
    let tls = tls.ok_or_else(|| {
        format!("peer URL {url} needs TLS, but no --peer-trusted-ca-file was given")
    })?;
    endpoint
        .tls_config(tls.tonic_config())
        .map_err(|err| format!("peer URL {url}: {err}"))
}

/// Asks the member at `url` for the cluster's id and members; used by a member joining an
/// existing cluster, which does not know the cluster id yet.
pub(super) async fn fetch_membership(
    url: &str,
    my_peer_urls: &[String],
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Result<crate::pb::internal::MembershipResponse, String> {
    let channel = peer_endpoint(url, tls)?.connect_lazy();
    let mut client = GrpcPeer::new(channel).max_decoding_message_size(PEER_MESSAGE_BYTES_MAX);
    let request = MembershipRequest {
        peer_urls: my_peer_urls.to_vec(),
    };
    match tokio::time::timeout(timeout, client.membership(request)).await {
        Err(_) => Err(format!("{url}: no answer within {timeout:?}")),
        Ok(Err(status)) => Err(format!("{url}: {}", status_text(&status))),
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}

/// A status's message with the transport error beneath it (a refused TLS handshake shows
/// only as "transport error" otherwise).
fn status_text(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    // Error chains are short; the bound only guards against a cyclic one.
    for _ in 0..ERROR_CHAIN_DEPTH_MAX {
        let Some(error) = source else { break };
        text.push_str(": ");
        text.push_str(&error.to_string());
        source = error.source();
    }
    text
}

/// Causes of an error followed when describing it.
const ERROR_CHAIN_DEPTH_MAX: usize = 8;

/// True when the connection was refused, so the request certainly never reached the peer;
/// any other failure may have happened after the peer received it.
fn is_connect_failure(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io_error) = error.downcast_ref::<io::Error>() {
            return io_error.kind() == io::ErrorKind::ConnectionRefused;
        }
        source = error.source();
    }
    false
}

/// Creates a [`PeerLink`] per target member.
pub(super) struct PeerNetworkFactory {
    pub ctx: Arc<PeerContext>,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerLink;

    async fn new_client(&mut self, target: u64, node: &MemberNode) -> PeerLink {
        PeerLink {
            ctx: Arc::clone(&self.ctx),
            target,
            url: node.peer_urls.first().cloned().unwrap_or_default(),
            single_lane: None,
        }
    }
}

/// The connection to one peer, as openraft uses it.
pub(super) struct PeerLink {
    ctx: Arc<PeerContext>,
    target: u64,
    url: String,
    /// An `AppendStream` call kept open for appends sent one at a time (openraft's
    /// heartbeats); `None` until the first, and after any failure.
    single_lane: Option<SingleLane>,
}

/// A long `AppendStream` call that carries one append at a time: each request is sent, then
/// its answer awaited, before the next goes out. A heartbeat per ReadIndex round would
/// otherwise cost a whole HTTP/2 stream (headers, trailers, and a task on the follower);
/// here it is one message each way.
struct SingleLane {
    requests: mpsc::Sender<PeerMessage>,
    answers: tonic::Streaming<PeerMessage>,
}

fn unreachable(reason: impl std::fmt::Display) -> Unreachable<TypeConfig> {
    Unreachable::new(&io::Error::new(
        io::ErrorKind::NotConnected,
        reason.to_string(),
    ))
}

impl PeerLink {
    fn timeout(&self, action: RPCTypes, after: Duration) -> Timeout<TypeConfig> {
        Timeout {
            action,
            id: self.ctx.member_id,
            target: self.target,
            timeout: after,
        }
    }

    /// One request/response exchange with the peer, bounded by the option's hard deadline.
    async fn exchange<Req, Resp, F, Fut>(
        &mut self,
        action: RPCTypes,
        request: &Req,
        option: &RPCOption,
        call: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(GrpcPeer<Channel>, PeerMessage) -> Fut,
        Fut: Future<Output = Result<tonic::Response<PeerMessage>, tonic::Status>>,
    {
        let client = self
            .ctx
            .client(&self.url)
            .map_err(|reason| RPCError::Unreachable(unreachable(reason)))?;
        let message = wire::envelope(self.ctx.route(self.target), request)
            .map_err(|reason| RPCError::Network(NetworkError::from_string(reason)))?;
        let deadline = option.hard_ttl();
        let reply = tokio::time::timeout(deadline, call(client, message))
            .await
            .map_err(|_| RPCError::Timeout(self.timeout(action, deadline)))?;
        match reply {
            Ok(reply) => wire::open(reply.get_ref())
                .map_err(|reason| RPCError::Network(NetworkError::from_string(reason))),
            Err(status) => Err(self.refused(&status)),
        }
    }

    /// Sends one append on [`Self::single_lane`], opening it first if needed, and returns the
    /// follower's answer. The lane is kept only after a successful answer: a lane whose
    /// exchange failed, timed out or was abandoned midway (the future dropped) may still owe
    /// an answer, and the follower ends its side after a refusal, so it is closed instead.
    async fn append_single(
        &mut self,
        request: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>> {
        let message = wire::envelope(self.ctx.route(self.target), request)
            .map_err(|reason| RPCError::Network(NetworkError::from_string(reason)))?;
        let deadline = option.hard_ttl();
        let exchange = async {
            let mut lane = match self.single_lane.take() {
                Some(lane) => lane,
                None => {
                    let mut client = self
                        .ctx
                        .client(&self.url)
                        .map_err(|reason| RPCError::Unreachable(unreachable(reason)))?;
                    // One request at a time: the queue never holds more than the one sent.
                    let (requests, queued) = mpsc::channel(1);
                    let queued = tokio_stream::wrappers::ReceiverStream::new(queued);
                    let answers = client
                        .append_stream(queued)
                        .await
                        .map_err(|status| self.refused(&status))?
                        .into_inner();
                    SingleLane { requests, answers }
                }
            };
            if lane.requests.send(message).await.is_err() {
                return Err(RPCError::Network(NetworkError::from_string(format!(
                    "member {:x} closed the append lane",
                    self.target
                ))));
            }
            let answer = match lane.answers.message().await {
                Ok(Some(answer)) => answer,
                Ok(None) => {
                    return Err(RPCError::Network(NetworkError::from_string(format!(
                        "member {:x} ended the append lane without an answer",
                        self.target
                    ))));
                }
                Err(status) => return Err(self.refused(&status)),
            };
            let answer: StreamAppendResult<TypeConfig> = wire::open(&answer)
                .map_err(|reason| RPCError::Network(NetworkError::from_string(reason)))?;
            Ok((answer, lane))
        };
        let (answer, lane) = tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| RPCError::Timeout(self.timeout(RPCTypes::AppendEntries, deadline)))??;
        if answer.is_ok() {
            self.single_lane = Some(lane);
        }
        Ok(answer)
    }

    /// The error openraft gets for a call the peer (or the transport) refused with `status`.
    fn refused(&self, status: &tonic::Status) -> RPCError<TypeConfig> {
        self.ctx.note_refusal(self.target, status);
        RPCError::Unreachable(unreachable(format!(
            "member {:x} at {}: {}",
            self.target,
            self.url,
            status_text(status)
        )))
    }
}

/// The answers of one pipelined replication stream, with the deadline of the oldest request.
struct Replies<'a> {
    link: &'a PeerLink,
    answers: tonic::Streaming<PeerMessage>,
    unanswered: Arc<Mutex<VecDeque<Instant>>>,
    patience: Duration,
    ended: bool,
}

impl Replies<'_> {
    /// The next answer; `None` once the follower ended the stream or after an error.
    async fn next(
        &mut self,
    ) -> Option<Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> {
        if self.ended {
            return None;
        }
        loop {
            let oldest = self.unanswered.lock().front().copied();
            // With nothing unanswered there is no deadline; look again after a while in case a
            // request went out meanwhile.
            let wait = oldest.map_or(self.patience, |sent| {
                (sent + self.patience).saturating_duration_since(Instant::now())
            });
            let answer = match tokio::time::timeout(wait, self.answers.message()).await {
                Ok(answer) => answer,
                Err(_) => {
                    if oldest.is_some_and(|sent| sent.elapsed() >= self.patience) {
                        self.ended = true;
                        return Some(Err(RPCError::Timeout(
                            self.link.timeout(RPCTypes::AppendEntries, self.patience),
                        )));
                    }
                    continue;
                }
            };
            let item = match answer {
                Ok(Some(message)) => {
                    self.unanswered.lock().pop_front();
                    wire::open(&message)
                        .map_err(|reason| RPCError::Network(NetworkError::from_string(reason)))
                }
                Ok(None) => {
                    self.ended = true;
                    return None;
                }
                Err(status) => Err(self.link.refused(&status)),
            };
            if item.is_err() {
                self.ended = true;
            }
            return Some(item);
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerLink {
    type SnapshotData = SnapshotDir;

    /// One append on the single-request lane. openraft sends every append through
    /// [`Self::stream_append`]; the trait still asks for this single-request form.
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let answer = self.append_single(&rpc, &option).await?;
        Ok(match answer {
            Ok(_) => AppendEntriesResponse::Success,
            Err(StreamAppendError::Conflict(_)) => AppendEntriesResponse::Conflict,
            Err(StreamAppendError::HigherVote(vote)) => AppendEntriesResponse::HigherVote(vote),
        })
    }

    /// Pipelined replication over one `AppendStream` call: requests go out as openraft makes
    /// them, without waiting for the answers to the earlier ones, and the follower answers each
    /// in order. The stream fails when the oldest unanswered request has waited longer than
    /// the option's hard limit (at least [`PEER_STREAM_REPLY_TIMEOUT_MIN`]), so a follower
    /// that stopped answering, or a link that drops traffic, ends it and openraft starts
    /// another.
    ///
    /// A stream that says it holds exactly one request (openraft's heartbeats) goes over the
    /// single-request lane instead of a call of its own.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>>
            + OptionalSend
            + Unpin
            + 'static,
    {
        if input.size_hint() == (1, Some(1)) {
            return Box::pin(async move {
                let mut input = input;
                let Some(request) = futures::StreamExt::next(&mut input).await else {
                    return Ok(Box::pin(futures::stream::empty()) as BoxStream<'s, _>);
                };
                let answer = self.append_single(&request, &option).await;
                Ok(Box::pin(futures::stream::once(async move { answer })) as BoxStream<'s, _>)
            });
        }
        Box::pin(async move {
            let mut client = self
                .ctx
                .client(&self.url)
                .map_err(|reason| RPCError::Unreachable(unreachable(reason)))?;
            let route = self.ctx.route(self.target);
            // When each unanswered request was handed to the transport, oldest first.
            let unanswered = Arc::new(Mutex::new(VecDeque::<Instant>::new()));
            let requests = {
                let unanswered = Arc::clone(&unanswered);
                let target = self.target;
                tokio_stream::StreamExt::map_while(input, move |request| {
                    match wire::envelope(route, &request) {
                        Ok(message) => {
                            unanswered.lock().push_back(Instant::now());
                            Some(message)
                        }
                        Err(reason) => {
                            // Ends the requests; the answers stop short and openraft resends.
                            tracing::error!(peer = %format!("{target:x}"), %reason, "cannot encode an append");
                            None
                        }
                    }
                })
            };
            let deadline = option.hard_ttl();
            let answers = tokio::time::timeout(deadline, client.append_stream(requests))
                .await
                .map_err(|_| RPCError::Timeout(self.timeout(RPCTypes::AppendEntries, deadline)))?
                .map_err(|status| self.refused(&status))?
                .into_inner();
            let replies = Replies {
                link: self,
                answers,
                unanswered,
                patience: deadline.max(PEER_STREAM_REPLY_TIMEOUT_MIN),
                ended: false,
            };
            let stream = futures::stream::unfold(replies, |mut replies| async move {
                let item = replies.next().await?;
                Some((item, replies))
            });
            Ok(Box::pin(stream) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.exchange(
            RPCTypes::Vote,
            &rpc,
            &option,
            |mut client, message| async move { client.vote(message).await },
        )
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.exchange(
            RPCTypes::Vote,
            &rpc,
            &option,
            |mut client, message| async move { client.pre_vote(message).await },
        )
        .await
    }

    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.exchange(
            RPCTypes::TransferLeader,
            &request,
            &option,
            |mut client, message| async move { client.transfer_leader(message).await },
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: EngineSnapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let chunk_timeout = option.hard_ttl().max(PEER_SNAPSHOT_CHUNK_TIMEOUT);
        let chunk_bytes = option
            .snapshot_chunk_size()
            .unwrap_or(PEER_SNAPSHOT_CHUNK_BYTES)
            .clamp(1, PEER_SNAPSHOT_CHUNK_BYTES);
        let directory = snapshot.snapshot.0.clone();
        let index = snapshot
            .meta
            .last_log_id
            .as_ref()
            .map_or(0, |log_id| log_id.index);
        let header = {
            let directory = directory.clone();
            let meta = serde_json::to_vec(&snapshot.meta)
                .map_err(|err| StreamingError::Network(NetworkError::new(&err)))?;
            let vote = postcard::to_stdvec(&vote)
                .map_err(|err| StreamingError::Network(NetworkError::new(&err)))?;
            tokio::task::spawn_blocking(move || snapshot_header(&directory, vote, meta))
                .await
                .map_err(|err| StreamingError::Network(NetworkError::new(&err)))?
                .map_err(|err| StreamingError::Network(NetworkError::new(&err)))?
        };
        let first = SnapshotChunk {
            header: Some(
                wire::envelope(self.ctx.route(self.target), &header)
                    .map_err(|reason| StreamingError::Network(NetworkError::from_string(reason)))?,
            ),
            ..SnapshotChunk::default()
        };
        tracing::info!(
            target_member = %format!("{:x}", self.target),
            index,
            files = header.files.len(),
            bytes = header.files.iter().map(|file| file.len).sum::<u64>(),
            "sending snapshot"
        );
        // The reader runs ahead of the network by a couple of chunks only: the channel's
        // bound is the backpressure, and a receiver that stops reading fails the send below.
        let (chunks, receiver) = mpsc::channel::<SnapshotChunk>(2);
        let mut client = self
            .ctx
            .client(&self.url)
            .map_err(|reason| StreamingError::Unreachable(unreachable(reason)))?;
        let call = tokio::spawn(async move {
            client
                .install_snapshot(tokio_stream::wrappers::ReceiverStream::new(receiver))
                .await
        });
        let feed = feed_snapshot(
            directory,
            header.files,
            first,
            chunks,
            chunk_bytes,
            chunk_timeout,
        );
        let outcome = tokio::select! {
            closed = cancel => {
                call.abort();
                return Err(StreamingError::Closed(closed));
            }
            fed = feed => fed,
        };
        if let Err(reason) = outcome {
            call.abort();
            return Err(StreamingError::Network(NetworkError::from_string(format!(
                "sending snapshot {index} to {:x}: {reason}",
                self.target
            ))));
        }
        let reply = tokio::time::timeout(PEER_SNAPSHOT_INSTALL_TIMEOUT, call)
            .await
            .map_err(|_| {
                StreamingError::Timeout(
                    self.timeout(RPCTypes::InstallSnapshot, PEER_SNAPSHOT_INSTALL_TIMEOUT),
                )
            })?
            .map_err(|err| StreamingError::Network(NetworkError::new(&err)))?;
        match reply {
            Ok(reply) => wire::open(reply.get_ref())
                .map_err(|reason| StreamingError::Network(NetworkError::from_string(reason))),
            Err(status) => {
                self.ctx.note_refusal(self.target, &status);
                Err(StreamingError::Unreachable(unreachable(format!(
                    "member {:x} refused snapshot {index}: {}",
                    self.target,
                    status.message()
                ))))
            }
        }
    }

    fn backoff(&self) -> Option<Backoff> {
        let mut next = PEER_BACKOFF_INITIAL;
        Some(Backoff::new(std::iter::from_fn(move || {
            let current = next;
            next = (next * 2).min(PEER_BACKOFF_MAX);
            Some(current)
        })))
    }
}

/// Lists the files of a snapshot's data directory, in a stable order.
fn snapshot_header(directory: &Path, vote: Vec<u8>, meta: Vec<u8>) -> io::Result<SnapshotHeader> {
    let mut files = Vec::new();
    let data = directory.join(DATA_DIR);
    let mut pending = vec![data.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let relative = path
                    .strip_prefix(directory)
                    .map_err(io::Error::other)?
                    .components()
                    .map(|part| part.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                files.push(SnapshotFile {
                    path: relative,
                    len: entry.metadata()?.len(),
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(SnapshotHeader { vote, meta, files })
}

/// Reads the snapshot files chunk by chunk into `chunks`, each chunk carrying its CRC-32.
async fn feed_snapshot(
    directory: PathBuf,
    files: Vec<SnapshotFile>,
    first: SnapshotChunk,
    chunks: mpsc::Sender<SnapshotChunk>,
    chunk_bytes: usize,
    chunk_timeout: Duration,
) -> Result<(), String> {
    let send = |chunk: SnapshotChunk| {
        let chunks = chunks.clone();
        async move {
            match tokio::time::timeout(chunk_timeout, chunks.send(chunk)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err("the receiver closed the stream".to_owned()),
                Err(_) => Err(format!("a chunk was not taken within {chunk_timeout:?}")),
            }
        }
    };
    send(first).await?;
    for (number, file) in files.iter().enumerate() {
        let path = directory.join(&file.path);
        let mut reader = tokio::fs::File::open(&path)
            .await
            .map_err(|err| format!("{}: {err}", path.display()))?;
        let mut offset = 0u64;
        while offset < file.len {
            let want = usize::try_from(file.len - offset)
                .unwrap_or(usize::MAX)
                .min(chunk_bytes);
            let mut data = vec![0u8; want];
            tokio::io::AsyncReadExt::read_exact(&mut reader, &mut data)
                .await
                .map_err(|err| format!("{}: {err}", path.display()))?;
            let crc32 = crc32fast::hash(&data);
            send(SnapshotChunk {
                header: None,
                file: u32::try_from(number).map_err(|err| err.to_string())?,
                offset,
                data: data.into(),
                crc32,
            })
            .await?;
            offset += want as u64;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A follower that answers appends by their `prev_log_id` index: 7 is a conflict, 9 is
    /// answered only after [`SLOW_ANSWER`], anything else succeeds. Counts `AppendStream` calls.
    struct FakeFollower {
        calls: Arc<AtomicU64>,
    }

    const SLOW_ANSWER: Duration = Duration::from_millis(600);

    type Replies = super::super::peer_service::AppendReplies;

    #[tonic::async_trait]
    impl crate::pb::internal::peer_server::Peer for FakeFollower {
        type AppendStreamStream = Replies;
        type ForwardStreamStream = Replies;

        async fn append_stream(
            &self,
            request: tonic::Request<tonic::Streaming<PeerMessage>>,
        ) -> Result<tonic::Response<Replies>, tonic::Status> {
            use futures::StreamExt as _;
            self.calls.fetch_add(1, Ordering::SeqCst);
            let answers = request.into_inner().then(|message| async move {
                let message = message?;
                let rpc: AppendEntriesRequest<TypeConfig> =
                    wire::open(&message).map_err(tonic::Status::invalid_argument)?;
                let index = rpc.prev_log_id.map_or(0, |log_id| log_id.index);
                if index == 9 {
                    tokio::time::sleep(SLOW_ANSWER).await;
                }
                let answer: StreamAppendResult<TypeConfig> = if index == 7 {
                    Err(StreamAppendError::Conflict(rpc.prev_log_id.expect("set")))
                } else {
                    Ok(rpc.prev_log_id)
                };
                let route = Route {
                    cluster_id: message.cluster_id,
                    from: message.to,
                    to: message.from,
                };
                wire::envelope(route, &answer).map_err(tonic::Status::internal)
            });
            Ok(tonic::Response::new(Box::pin(answers)))
        }

        async fn vote(
            &self,
            _: tonic::Request<PeerMessage>,
        ) -> Result<tonic::Response<PeerMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }

        async fn pre_vote(
            &self,
            _: tonic::Request<PeerMessage>,
        ) -> Result<tonic::Response<PeerMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }

        async fn transfer_leader(
            &self,
            _: tonic::Request<PeerMessage>,
        ) -> Result<tonic::Response<PeerMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }

        async fn install_snapshot(
            &self,
            _: tonic::Request<tonic::Streaming<SnapshotChunk>>,
        ) -> Result<tonic::Response<PeerMessage>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }

        async fn forward_stream(
            &self,
            _: tonic::Request<tonic::Streaming<PeerMessage>>,
        ) -> Result<tonic::Response<Replies>, tonic::Status> {
            Err(tonic::Status::unimplemented("fake"))
        }

        async fn membership(
            &self,
            _: tonic::Request<MembershipRequest>,
        ) -> Result<tonic::Response<crate::pb::internal::MembershipResponse>, tonic::Status>
        {
            Err(tonic::Status::unimplemented("fake"))
        }
    }

    /// Sends one heartbeat-shaped append (a stream of exactly one request, as openraft's
    /// heartbeat worker sends) with `prev_log_id` at `index`, and returns the one answer.
    async fn heartbeat(
        link: &mut PeerLink,
        index: u64,
        timeout: Duration,
    ) -> Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>> {
        use futures::StreamExt as _;
        let request = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new(1, 1),
            prev_log_id: Some(super::super::to_log_id(super::super::wal::LogPos {
                term: 1,
                index,
            })),
            leader_commit: None,
            entries: vec![],
        };
        let one = futures::stream::once(async move { request });
        let mut answers = link
            .stream_append(Box::pin(one), RPCOption::new(timeout))
            .await?;
        let answer = answers.next().await.expect("one answer");
        assert!(answers.next().await.is_none(), "exactly one answer");
        answer
    }

    /// Heartbeats share one `AppendStream` call; a refused one closes it, and so does one
    /// abandoned before its answer came, so a late answer never reaches the next heartbeat.
    #[tokio::test]
    async fn single_appends_share_one_call_until_one_fails() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let calls = Arc::new(AtomicU64::new(0));
        let follower = FakeFollower {
            calls: Arc::clone(&calls),
        };
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(crate::pb::internal::peer_server::PeerServer::new(follower))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let mut link = PeerLink {
            ctx: Arc::new(PeerContext::new(1, 1, None)),
            target: 2,
            url,
            single_lane: None,
        };
        let patient = Duration::from_secs(5);
        for index in [1, 2, 3] {
            let answer = heartbeat(&mut link, index, patient)
                .await
                .expect("answered");
            assert_eq!(
                answer.expect("accepted").map(|log_id| log_id.index),
                Some(index)
            );
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "three heartbeats, one call"
        );

        let refused = heartbeat(&mut link, 7, patient).await.expect("answered");
        assert!(
            matches!(refused, Err(StreamAppendError::Conflict(_))),
            "{refused:?}"
        );
        let answer = heartbeat(&mut link, 4, patient).await.expect("answered");
        assert_eq!(
            answer.expect("accepted").map(|log_id| log_id.index),
            Some(4)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a refusal closes the call");

        let abandoned = heartbeat(&mut link, 9, Duration::from_millis(100)).await;
        assert!(
            matches!(abandoned, Err(RPCError::Timeout(_))),
            "{abandoned:?}"
        );
        let answer = heartbeat(&mut link, 5, patient).await.expect("answered");
        assert_eq!(
            answer.expect("accepted").map(|log_id| log_id.index),
            Some(5),
            "the next heartbeat gets its own answer, not the abandoned one's"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3, "a timeout closes the call");
        server.abort();
    }

    /// A leader that refuses the connection never saw the request: the forward is a definite
    /// failure ("no leader"), not an unknown outcome ("leader changed").
    #[tokio::test]
    async fn a_refused_connection_is_a_definite_failure() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let ctx = Arc::new(PeerContext::new(1, 2, None));
        let outcome = ctx
            .forward(
                3,
                &format!("http://127.0.0.1:{port}"),
                &ForwardRequest::ReadIndex,
                Duration::from_secs(5),
            )
            .await;
        assert!(matches!(outcome, Err(RaftError::NoLeader)), "{outcome:?}");
    }

    /// Answers finish in any order and each reaches the caller that asked; ending the lane
    /// releases whoever still waits with an unknown outcome, and takes no one new.
    #[tokio::test]
    async fn a_lane_matches_answers_by_number_and_releases_callers_when_it_ends() {
        let (outbound, _requests) = mpsc::channel(4);
        let lane = ForwardLane::new(outbound);
        let (first, first_answer, seen) = lane.enter().expect("open lane");
        let (second, second_answer, _) = lane.enter().expect("open lane");
        let (third, third_answer, _) = lane.enter().expect("open lane");
        assert_eq!(seen, 0);
        assert!(first != second && second != third && first != third);
        let applied = |text: &'static str| {
            ForwardResponse::Applied(bytes::Bytes::from_static(text.as_bytes()))
        };
        lane.answer(wire::ForwardReply {
            id: second,
            response: applied("second"),
        });
        lane.answer(wire::ForwardReply {
            id: first,
            response: applied("first"),
        });
        assert!(
            matches!(second_answer.await, Ok(ForwardResponse::Applied(b)) if b.as_ref() == b"second")
        );
        assert!(
            matches!(first_answer.await, Ok(ForwardResponse::Applied(b)) if b.as_ref() == b"first")
        );
        assert_eq!(lane.replies_seen(), 2);
        // An answer for a caller that gave up is dropped.
        lane.leave(third);
        lane.answer(wire::ForwardReply {
            id: third,
            response: applied("third"),
        });
        assert!(third_answer.await.is_err());

        let (_, waiting, _) = lane.enter().expect("open lane");
        lane.end(LaneEnd::Broken);
        lane.end(LaneEnd::Unreached);
        assert!(waiting.await.is_err());
        assert!(matches!(lane.end_error(), RaftError::LeaderChanged));
        assert!(lane.enter().is_none());
        assert!(lane.has_ended());
    }

    /// A peer that takes the connection but never answers: the request times out, and the
    /// next one gets a fresh stream instead of queueing behind the stuck one.
    #[tokio::test]
    async fn a_silent_peer_times_out_and_its_lane_is_replaced() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                held.push(connection);
            }
        });
        let ctx = Arc::new(PeerContext::new(1, 2, None));
        let url = format!("http://127.0.0.1:{port}");
        let wait = Duration::from_millis(300);
        let outcome = ctx.forward(3, &url, &ForwardRequest::ReadIndex, wait).await;
        assert!(matches!(outcome, Err(RaftError::Timeout)), "{outcome:?}");
        let first = ctx
            .lanes
            .lock()
            .get(&(3, url.clone()))
            .cloned()
            .expect("lane");
        assert!(first.has_ended());
        let outcome = ctx.forward(3, &url, &ForwardRequest::ReadIndex, wait).await;
        assert!(matches!(outcome, Err(RaftError::Timeout)), "{outcome:?}");
        let second = ctx.lanes.lock().get(&(3, url)).cloned().expect("lane");
        assert!(!Arc::ptr_eq(&first, &second));
        holder.abort();
    }
}
