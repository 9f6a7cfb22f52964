//! The etcd Watch service: one bidirectional stream per call, many watchers on it.
//!
//! Two tasks per stream: one reads requests and hands them to the stream's
//! [`WatchStream`]; one turns the hub's [`Message`]s into wire responses (splitting an
//! oversized one into fragments when its watcher allowed it) and queues them for HTTP/2.
//! This module owns only the wire side; ordering and delivery belong to `crate::watch`.

use std::sync::Arc;

use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{HAS_LEADER_METADATA, header_to_pb};
use crate::auth::Needs;
use crate::convert;
use crate::limits::{WATCH_FRAGMENT_BYTES, WATCH_LEADER_CHECK_INTERVAL, WATCH_SEND_QUEUE};
use crate::pb::etcdserverpb::{self as rpc, watch_request::RequestUnion, watch_server::Watch};
use crate::server::{Caller, Error, Server};
use crate::watch::{Message, STREAM_WATCH_ID, WatchError, WatchReceiver, WatchStream};

/// Serves `etcdserverpb.Watch`.
pub struct WatchService {
    server: Arc<Server>,
}

impl WatchService {
    /// A Watch service over `server`.
    pub fn new(server: Arc<Server>) -> WatchService {
        WatchService { server }
    }
}

type Outgoing = mpsc::Sender<Result<rpc::WatchResponse, Status>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<rpc::WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<rpc::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // etcd-compat: a learner refuses every stream.
        if self.server.is_learner() {
            return Err(Error::NotSupportedForLearner.into());
        }
        let wants_leader = request
            .metadata()
            .get(HAS_LEADER_METADATA)
            .is_some_and(|value| value.as_bytes() == b"true");
        let (stream, receiver) = self.server.watch().open_stream().map_err(|err| match err {
            WatchError::TooManyStreams => Error::TooManyWatchStreams,
            other => Error::Internal(other.to_string()),
        })?;
        let (out, out_rx) = mpsc::channel(WATCH_SEND_QUEUE);
        // The sending task owns the only sender, so the response stream ends with it; its
        // end (the client went away, the member stops, the leader was lost) stops the
        // reading task through `ended`, which drops the stream's watchers.
        let (ended_tx, ended) = oneshot::channel::<()>();
        // The caller is read here, inside the call's scope: the tasks below run outside it.
        let caller = Caller::current().unwrap_or_default();
        tokio::spawn(read_requests(
            Arc::clone(&self.server),
            caller,
            request.into_inner(),
            stream,
            ended,
        ));
        let server = Arc::clone(&self.server);
        tokio::spawn(async move {
            send_messages(&server, receiver, out, wants_leader).await;
            drop(ended_tx);
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

/// Hands the client's requests to the stream until the client goes away. A client that
/// closes its sending side keeps its watchers, as in etcd.
async fn read_requests(
    server: Arc<Server>,
    caller: Caller,
    mut requests: Streaming<rpc::WatchRequest>,
    stream: WatchStream,
    mut ended: oneshot::Receiver<()>,
) {
    loop {
        let next = tokio::select! {
            next = requests.message() => next,
            _ = &mut ended => return,
        };
        let handled = match next {
            Ok(Some(request)) => match request.request_union {
                Some(RequestUnion::CreateRequest(create)) => {
                    let create = convert::watch_create_from_pb(create);
                    // A watch needs READ over its range, checked at each create (etcd checks
                    // an existing watcher no more after a revocation).
                    let read = Needs {
                        read: vec![create.range.clone()],
                        ..Needs::default()
                    };
                    if server.authorize_caller(&caller, &read).is_ok() {
                        stream.create(create).await
                    } else {
                        stream.refuse(WatchError::PermissionDenied).await
                    }
                }
                Some(RequestUnion::CancelRequest(cancel)) => stream.cancel(cancel.watch_id).await,
                Some(RequestUnion::ProgressRequest(_)) => stream.request_progress().await,
                None => Ok(()),
            },
            Ok(None) => {
                let _ = ended.await;
                return;
            }
            Err(status) => {
                tracing::debug!(%status, "watch stream ended by the client");
                return;
            }
        };
        if handled.is_err() {
            return;
        }
    }
}

/// Sends the stream's messages until it ends, the client goes away, or (for a client that
/// sent `hasleader`) the leader is lost.
async fn send_messages(
    server: &Server,
    mut receiver: WatchReceiver,
    out: Outgoing,
    wants_leader: bool,
) {
    let mut leader_check = tokio::time::interval(WATCH_LEADER_CHECK_INTERVAL);
    loop {
        let batch = tokio::select! {
            batch = receiver.recv() => batch,
            _ = leader_check.tick(), if wants_leader => {
                if !server.has_leader() {
                    let _ = out.send(Err(Error::NoLeader.into())).await;
                    return;
                }
                continue;
            }
            () = out.closed() => return,
        };
        let Some(batch) = batch else {
            return;
        };
        for message in batch.take() {
            for response in to_responses(server, message) {
                if out.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The wire responses for one message: one, or several fragments.
fn to_responses(server: &Server, message: Message) -> Vec<rpc::WatchResponse> {
    let header = |revision| Some(header_to_pb(server.header(revision)));
    let response = match message {
        Message::Created { watch_id, revision } => rpc::WatchResponse {
            header: header(revision),
            watch_id,
            created: true,
            ..Default::default()
        },
        Message::Refused { reason, revision } => rpc::WatchResponse {
            header: header(revision),
            watch_id: STREAM_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        },
        Message::Canceled { watch_id, revision } => rpc::WatchResponse {
            header: header(revision),
            watch_id,
            canceled: true,
            ..Default::default()
        },
        // etcd-compat: the compacted notice carries header revision 0 and no reason.
        Message::Compacted {
            watch_id,
            compact_revision,
        } => rpc::WatchResponse {
            header: header(0),
            watch_id,
            canceled: true,
            compact_revision,
            ..Default::default()
        },
        Message::Progress { watch_id, revision } => rpc::WatchResponse {
            header: header(revision),
            watch_id,
            ..Default::default()
        },
        Message::Events {
            watch_id,
            revision,
            events,
            fragment,
        } => {
            let response = rpc::WatchResponse {
                header: header(revision),
                watch_id,
                events: events.into_iter().map(convert::event_to_pb).collect(),
                ..Default::default()
            };
            if fragment {
                return split_fragments(response);
            }
            response
        }
    };
    vec![response]
}

/// Splits a response of at least [`WATCH_FRAGMENT_BYTES`] with more than one event into
/// parts under [`WATCH_FRAGMENT_BYTES`] (each with at least one event, and as many as fit);
/// every part but the last is marked `fragment`, and the client joins them.
///
/// etcd-compat: the same cut as etcd's `sendFragments` (v3rpc/watch.go), which fills each part
/// up to its send limit, max-request-bytes + 512 KiB, counting the `fragment` flag in the size.
/// Three 1 MB events thus go out as parts of two and one, not three parts of one.
fn split_fragments(response: rpc::WatchResponse) -> Vec<rpc::WatchResponse> {
    if response.events.len() < 2 || response.encoded_len() < WATCH_FRAGMENT_BYTES {
        return vec![response];
    }
    let mut template = response;
    let events = std::mem::take(&mut template.events);
    let base = rpc::WatchResponse {
        fragment: true,
        ..template.clone()
    }
    .encoded_len();
    let mut parts = Vec::new();
    let mut current = Vec::new();
    let mut size = base;
    for event in events {
        // Field tag, length prefix, body.
        let event_size = 1 + prost::length_delimiter_len(event.encoded_len()) + event.encoded_len();
        if !current.is_empty() && size + event_size >= WATCH_FRAGMENT_BYTES {
            parts.push(std::mem::take(&mut current));
            size = base;
        }
        size += event_size;
        current.push(event);
    }
    parts.push(current);
    let last = parts.len() - 1;
    parts
        .into_iter()
        .enumerate()
        .map(|(index, events)| rpc::WatchResponse {
            events,
            fragment: index < last,
            ..template.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::REQUEST_BYTES_MAX;

    fn event(value_bytes: usize) -> crate::pb::mvccpb::Event {
        crate::pb::mvccpb::Event {
            kv: Some(crate::pb::mvccpb::KeyValue {
                key: b"k".to_vec().into(),
                value: vec![b'v'; value_bytes].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn small_responses_are_not_split() {
        let response = rpc::WatchResponse {
            watch_id: 3,
            events: vec![event(10), event(10)],
            ..Default::default()
        };
        assert_eq!(split_fragments(response.clone()), vec![response]);
    }

    #[test]
    fn one_huge_event_is_not_split() {
        let response = rpc::WatchResponse {
            events: vec![event(WATCH_FRAGMENT_BYTES + 10)],
            ..Default::default()
        };
        assert_eq!(split_fragments(response.clone()), vec![response]);
    }

    #[test]
    fn large_responses_split_into_parts_under_the_message_limit() {
        let events: Vec<_> = (0..5).map(|_| event(REQUEST_BYTES_MAX / 2)).collect();
        let response = rpc::WatchResponse {
            watch_id: 7,
            events: events.clone(),
            ..Default::default()
        };
        let parts = split_fragments(response);
        assert!(parts.len() >= 3, "{} parts", parts.len());
        let last = parts.len() - 1;
        for (index, part) in parts.iter().enumerate() {
            assert_eq!(part.watch_id, 7);
            assert_eq!(part.fragment, index < last);
            assert!(!part.events.is_empty());
            assert!(part.encoded_len() < WATCH_FRAGMENT_BYTES || part.events.len() == 1);
        }
        // Each part holds as many events as fit: two of about 786 KB under 2 MiB, not three.
        let sizes: Vec<usize> = parts.iter().map(|part| part.events.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        let joined: Vec<_> = parts.into_iter().flat_map(|part| part.events).collect();
        assert_eq!(joined, events);
    }
}
