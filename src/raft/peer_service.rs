//! The receiving side of the peer transport: the `mnemo.internal.Peer` gRPC service on the
//! peer URL. It checks every message's cluster and receiver, hands openraft's messages to the
//! engine, receives snapshots into a temporary directory (each chunk checked before it is
//! written, the whole set checked before install), and runs requests forwarded by followers.
//!
//! Must not interpret log payloads or touch the state machine except through openraft's
//! snapshot install.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use openraft::storage::Snapshot;
use parking_lot::Mutex;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

use super::network::PeerContext;
use super::state_machine::{META_FILE, SnapshotDir};
use super::wire::{self, ForwardReply, ForwardRequest, ForwardResponse, Refusal, SnapshotHeader};
use super::{Core, TypeConfig};
use crate::limits::PEER_FORWARD_QUEUE;
use crate::pb::internal::peer_server::Peer;
use crate::pb::internal::{
    MemberInfo, MembershipRequest, MembershipResponse, PeerMessage, SnapshotChunk,
};

type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
type AppendRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
/// The answers of [`Peer::append_stream`], one per request, in order.
pub(super) type AppendReplies =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<PeerMessage, Status>> + Send + 'static>>;
type Meta = openraft::storage::SnapshotMeta<
    openraft::type_config::alias::CommittedLeaderIdOf<TypeConfig>,
    u64,
    super::MemberNode,
>;

/// Prefix of the temporary directory a snapshot is received into; the `.tmp` suffix makes a
/// restart remove a half-received one.
const RECEIVING_PREFIX: &str = "receiving-";

/// The peer service of one member.
pub(super) struct PeerService {
    core: Core,
    ctx: Arc<PeerContext>,
    snap_dir: PathBuf,
    /// Members that were removed from the cluster while this member ran; their messages are
    /// answered with "removed" so they stop.
    removed: Arc<Mutex<HashSet<u64>>>,
}

impl PeerService {
    pub(super) fn new(
        core: Core,
        ctx: Arc<PeerContext>,
        snap_dir: PathBuf,
        removed: Arc<Mutex<HashSet<u64>>>,
    ) -> PeerService {
        PeerService {
            core,
            ctx,
            snap_dir,
            removed,
        }
    }

    fn admit(&self, message: &PeerMessage) -> Result<(), Status> {
        admit(&self.ctx, &self.removed, message)
    }

    /// Admits `request`, decodes its body, hands it (with the sender) to `handle`, and wraps
    /// the engine's answer for the sender.
    async fn exchange<Req, Resp, E, Fut>(
        &self,
        request: Request<PeerMessage>,
        handle: impl FnOnce(u64, Req) -> Fut,
    ) -> Result<Response<PeerMessage>, Status>
    where
        Req: serde::de::DeserializeOwned,
        Resp: serde::Serialize,
        E: std::fmt::Display,
        Fut: std::future::Future<Output = Result<Resp, E>>,
    {
        let message = request.into_inner();
        self.admit(&message)?;
        let rpc = wire::open(&message).map_err(bad_body)?;
        let response = handle(message.from, rpc).await.map_err(engine_failure)?;
        self.reply(message.from, &response)
    }

    fn reply<T: serde::Serialize>(
        &self,
        to: u64,
        body: &T,
    ) -> Result<Response<PeerMessage>, Status> {
        let route = wire::Route {
            cluster_id: self.ctx.cluster_id,
            from: self.ctx.member_id,
            to,
        };
        wire::envelope(route, body)
            .map(Response::new)
            .map_err(Status::internal)
    }
}

/// Refuses a message meant for another cluster or member, or sent by a removed member.
fn admit(
    ctx: &PeerContext,
    removed: &Mutex<HashSet<u64>>,
    message: &PeerMessage,
) -> Result<(), Status> {
    let refusal = wire::check(message, ctx.cluster_id, ctx.member_id)
        .err()
        .or_else(|| {
            removed
                .lock()
                .contains(&message.from)
                .then_some(Refusal::SenderRemoved { from: message.from })
        });
    let Some(refusal) = refusal else {
        return Ok(());
    };
    let status = match &refusal {
        Refusal::ClusterMismatch { .. } | Refusal::WrongReceiver { .. } => {
            Status::failed_precondition(refusal.to_string())
        }
        Refusal::SenderRemoved { .. } => Status::permission_denied(refusal.to_string()),
    };
    ctx.log_refusal(message.from, "refused", &status);
    Err(status)
}

/// Runs one forwarded request on this member, which the sender believes leads.
async fn run_forwarded(core: &Core, request: ForwardRequest) -> ForwardResponse {
    let outcome = match request {
        ForwardRequest::Propose(payload) => core
            .propose_local(payload)
            .await
            .map(ForwardResponse::Applied),
        ForwardRequest::ReadIndex => core
            .read_index_local()
            .await
            .map(ForwardResponse::ReadIndex),
        ForwardRequest::ChangeMembers(change) => core
            .change_members_local(change)
            .await
            .map(ForwardResponse::Members),
        ForwardRequest::Call(request) => core.call_local(request).await.map(ForwardResponse::from),
        ForwardRequest::Ask(question) => {
            core.answer_local(question).await.map(ForwardResponse::from)
        }
    };
    outcome.unwrap_or_else(|error| ForwardResponse::Failed(error.into()))
}

fn bad_body(reason: String) -> Status {
    Status::invalid_argument(reason)
}

fn engine_failure(error: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft stopped: {error}"))
}

#[tonic::async_trait]
impl Peer for PeerService {
    type AppendStreamStream = AppendReplies;

    /// Feeds the leader's requests to the engine as they arrive and sends back its answers in
    /// order; the engine appends a request's entries without waiting for the earlier ones to
    /// be flushed. A message that may not be admitted, or does not decode, ends the requests:
    /// the answers to those before it still go back, then the refusal as the stream's status.
    async fn append_stream(
        &self,
        request: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<AppendReplies>, Status> {
        let inbound = request.into_inner();
        let ctx = Arc::clone(&self.ctx);
        let removed = Arc::clone(&self.removed);
        // The sender (learned from its first message) and the reason the requests ended early.
        let shared = Arc::new(Mutex::new((None::<u64>, None::<Status>)));
        let requests = {
            let shared = Arc::clone(&shared);
            inbound.map_while(move |item| {
                // The leader went away (or reset the stream): no more requests.
                let message = item.ok()?;
                let opened = admit(&ctx, &removed, &message)
                    .and_then(|()| wire::open::<AppendRequest>(&message).map_err(bad_body));
                let mut shared = shared.lock();
                match opened {
                    Ok(rpc) => {
                        ctx.heard_from(message.from);
                        shared.0 = Some(message.from);
                        Some(rpc)
                    }
                    Err(status) => {
                        shared.1 = Some(status);
                        None
                    }
                }
            })
        };
        let answers = Box::pin(self.core.engine.stream_append(requests));
        let (cluster_id, member_id) = (self.ctx.cluster_id, self.ctx.member_id);
        let replies = {
            let shared = Arc::clone(&shared);
            answers.map(move |answer| {
                let answer = answer.map_err(engine_failure)?;
                let to = shared.lock().0.unwrap_or_default();
                let route = wire::Route {
                    cluster_id,
                    from: member_id,
                    to,
                };
                wire::envelope(route, &answer).map_err(Status::internal)
            })
        };
        // Polled only after the last answer, so it sees why the requests ended, if early.
        let refusal = futures::stream::once(async move { shared.lock().1.take() })
            .filter_map(|refusal| refusal.map(Err));
        Ok(Response::new(Box::pin(replies.chain(refusal))))
    }

    async fn vote(&self, request: Request<PeerMessage>) -> Result<Response<PeerMessage>, Status> {
        let engine = &self.core.engine;
        self.exchange(request, |_, rpc| engine.vote(rpc)).await
    }

    async fn pre_vote(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let engine = &self.core.engine;
        self.exchange(request, |_, rpc| engine.pre_vote(rpc)).await
    }

    async fn transfer_leader(
        &self,
        request: Request<PeerMessage>,
    ) -> Result<Response<PeerMessage>, Status> {
        let engine = &self.core.engine;
        self.exchange(request, |_, rpc| engine.handle_transfer_leader(rpc))
            .await
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<PeerMessage>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let envelope = first
            .header
            .ok_or_else(|| Status::invalid_argument("the first snapshot chunk has no header"))?;
        self.admit(&envelope)?;
        let header: SnapshotHeader = wire::open(&envelope).map_err(bad_body)?;
        let vote: Vote = postcard::from_bytes(&header.vote)
            .map_err(|err| Status::invalid_argument(format!("snapshot vote: {err}")))?;
        let meta: Meta = serde_json::from_slice(&header.meta)
            .map_err(|err| Status::invalid_argument(format!("snapshot metadata: {err}")))?;
        let index = meta.last_log_id.as_ref().map_or(0, |log_id| log_id.index);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let target = self.snap_dir.join(format!(
            "{RECEIVING_PREFIX}{:x}-{index}-{nanos}.tmp",
            envelope.from
        ));
        let received = receive_files(&target, &header, &mut stream).await;
        if let Err(status) = received {
            remove_quietly(&target).await;
            tracing::warn!(from = %format!("{:x}", envelope.from), index, reason = status.message(), "snapshot transfer failed");
            return Err(status);
        }
        let meta_bytes = header.meta.clone();
        let write_meta = {
            let target = target.clone();
            tokio::task::spawn_blocking(move || {
                super::wal::write_file_atomically(&target, META_FILE, &meta_bytes)
            })
            .await
            .map_err(|err| Status::internal(err.to_string()))?
        };
        if let Err(err) = write_meta {
            remove_quietly(&target).await;
            return Err(Status::internal(format!(
                "writing snapshot metadata: {err}"
            )));
        }
        let snapshot = Snapshot {
            meta,
            snapshot: SnapshotDir(target.clone()),
        };
        let response = self.core.engine.install_full_snapshot(vote, snapshot).await;
        // On success the state machine moved the directory into place; whatever is left
        // under the temporary name is garbage.
        remove_quietly(&target).await;
        let response = response.map_err(engine_failure)?;
        tracing::info!(from = %format!("{:x}", envelope.from), index, "installed snapshot from the leader");
        self.reply(envelope.from, &response)
    }

    type ForwardStreamStream = AppendReplies;

    /// Runs each forwarded request as it arrives, concurrently with the others, and sends
    /// every answer back under its request's number as soon as it is ready. A message that may
    /// not be admitted, or does not decode, ends the stream with that refusal at once; requests
    /// still running then finish unanswered, and their callers learn that the stream broke
    /// (outcome unknown).
    async fn forward_stream(
        &self,
        request: Request<Streaming<PeerMessage>>,
    ) -> Result<Response<AppendReplies>, Status> {
        let mut inbound = request.into_inner();
        let (replies, answers) = tokio::sync::mpsc::channel(PEER_FORWARD_QUEUE);
        let (core, ctx, removed) = (
            self.core.clone(),
            Arc::clone(&self.ctx),
            Arc::clone(&self.removed),
        );
        // At most this many requests of one stream run at once; beyond it the stream is not
        // read, and HTTP/2 flow control holds the follower back.
        let running = Arc::new(tokio::sync::Semaphore::new(PEER_FORWARD_QUEUE));
        tokio::spawn(async move {
            // Ends when the follower closes its side or the connection goes away.
            while let Ok(Some(message)) = inbound.message().await {
                let call = admit(&ctx, &removed, &message)
                    .and_then(|()| wire::open::<wire::ForwardCall>(&message).map_err(bad_body));
                let call = match call {
                    Ok(call) => call,
                    Err(status) => {
                        let _ = replies.send(Err(status)).await;
                        return;
                    }
                };
                let route = wire::Route {
                    cluster_id: ctx.cluster_id,
                    from: ctx.member_id,
                    to: message.from,
                };
                let Ok(permit) = Arc::clone(&running).acquire_owned().await else {
                    return;
                };
                let (core, replies) = (core.clone(), replies.clone());
                tokio::spawn(async move {
                    let response = run_forwarded(&core, call.request).await;
                    drop(permit);
                    let reply = ForwardReply {
                        id: call.id,
                        response,
                    };
                    // The follower may be gone; its callers then learn nothing either way.
                    let _ = replies
                        .send(wire::envelope(route, &reply).map_err(Status::internal))
                        .await;
                });
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(answers),
        )))
    }

    async fn membership(
        &self,
        request: Request<MembershipRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        tracing::info!(peer_urls = ?request.get_ref().peer_urls, "a member asked for the cluster membership");
        let members = self
            .core
            .members()
            .into_iter()
            .map(|(id, node, is_learner)| MemberInfo {
                id,
                name: node.name,
                peer_urls: node.peer_urls,
                client_urls: node.client_urls,
                is_learner,
            })
            .collect();
        Ok(Response::new(MembershipResponse {
            cluster_id: self.ctx.cluster_id,
            members,
        }))
    }
}

/// A snapshot file path from the header made safe: relative, no `..`, no root.
fn safe_relative(path: &str) -> Result<PathBuf, Status> {
    let candidate = Path::new(path);
    let safe = !path.is_empty()
        && candidate
            .components()
            .all(|component| matches!(component, Component::Normal(_)));
    if safe {
        Ok(candidate.to_path_buf())
    } else {
        Err(Status::invalid_argument(format!(
            "snapshot file path {path:?} is not a plain relative path"
        )))
    }
}

/// Receives every file of `header` from `stream` into `target`: chunks must come in order,
/// each with a matching CRC-32, and every file must arrive whole. Files and directories are
/// fsynced before this returns.
async fn receive_files(
    target: &Path,
    header: &SnapshotHeader,
    stream: &mut Streaming<SnapshotChunk>,
) -> Result<(), Status> {
    let io_error = |err: std::io::Error| Status::internal(format!("writing snapshot: {err}"));
    let paths: Vec<PathBuf> = header
        .files
        .iter()
        .map(|file| safe_relative(&file.path))
        .collect::<Result<_, _>>()?;
    tokio::fs::create_dir_all(target).await.map_err(io_error)?;
    // Files are written on a blocking thread, one at a time, in the order they arrive.
    let mut current: Option<(usize, std::fs::File, u64)> = None;
    let mut next_file = 0usize;
    let mut directories: HashSet<PathBuf> = HashSet::new();
    directories.insert(target.to_path_buf());
    let finish = |current: &mut Option<(usize, std::fs::File, u64)>| -> Result<(), Status> {
        if let Some((number, file, written)) = current.take() {
            let expected = header.files[number].len;
            if written != expected {
                return Err(Status::data_loss(format!(
                    "snapshot file {} ended at {written} of {expected} bytes",
                    header.files[number].path
                )));
            }
            file.sync_all().map_err(io_error)?;
        }
        Ok(())
    };
    let open =
        |number: usize, directories: &mut HashSet<PathBuf>| -> Result<std::fs::File, Status> {
            let path = target.join(&paths[number]);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io_error)?;
                directories.insert(parent.to_path_buf());
            }
            std::fs::File::create(&path).map_err(io_error)
        };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let number = usize::try_from(chunk.file).unwrap_or(usize::MAX);
        if number >= header.files.len() {
            return Err(Status::invalid_argument(format!(
                "snapshot chunk names file {number} of {}",
                header.files.len()
            )));
        }
        if crc32fast::hash(&chunk.data) != chunk.crc32 {
            return Err(Status::data_loss(format!(
                "snapshot chunk of {} at offset {} fails its checksum",
                header.files[number].path, chunk.offset
            )));
        }
        let same_file = current
            .as_ref()
            .is_some_and(|(open_number, _, _)| *open_number == number);
        if !same_file {
            finish(&mut current)?;
            // Empty files send no chunk: create every file skipped over.
            while next_file < number {
                if header.files[next_file].len != 0 {
                    return Err(Status::data_loss(format!(
                        "snapshot file {} was skipped",
                        header.files[next_file].path
                    )));
                }
                open(next_file, &mut directories)?
                    .sync_all()
                    .map_err(io_error)?;
                next_file += 1;
            }
            if number != next_file {
                return Err(Status::invalid_argument("snapshot chunks out of order"));
            }
            current = Some((number, open(number, &mut directories)?, 0));
            next_file += 1;
        }
        let Some((_, file, written)) = current.as_mut() else {
            return Err(Status::internal("no open snapshot file"));
        };
        if chunk.offset != *written || *written + chunk.data.len() as u64 > header.files[number].len
        {
            return Err(Status::data_loss(format!(
                "snapshot chunk of {} at offset {} does not follow byte {written}",
                header.files[number].path, chunk.offset
            )));
        }
        file.write_all(&chunk.data).map_err(io_error)?;
        *written += chunk.data.len() as u64;
    }
    finish(&mut current)?;
    while next_file < header.files.len() {
        if header.files[next_file].len != 0 {
            return Err(Status::data_loss(format!(
                "snapshot stream ended before file {}",
                header.files[next_file].path
            )));
        }
        open(next_file, &mut directories)?
            .sync_all()
            .map_err(io_error)?;
        next_file += 1;
    }
    for directory in directories {
        std::fs::File::open(&directory)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error)?;
    }
    Ok(())
}

async fn remove_quietly(path: &Path) {
    if tokio::fs::try_exists(path).await.unwrap_or(false)
        && let Err(err) = tokio::fs::remove_dir_all(path).await
    {
        tracing::warn!(path = %path.display(), %err, "cannot remove a received snapshot directory");
    }
}
