//! The gRPC client: talks etcd's wire protocol to a remote member (mnemo or etcd).
//!
//! Errors come back as gRPC statuses; like clientv3, it recognises etcd's errors by their
//! exact message and turns them back into [`EtcdError`].

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::{
    ClientError, EtcdError, Header, KvClient, LeaseGranted, LeaseTimeToLive, Reply, WatchEvents,
    WatchRequest, WatchUpdate,
};
use crate::convert;
use crate::limits::{
    CLIENT_WATCH_BACKOFF_INITIAL, CLIENT_WATCH_BACKOFF_MAX, CLIENT_WATCH_QUEUE, GRPC_RECV_BYTES_MAX,
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

/// A client of a remote member over gRPC.
#[derive(Clone)]
pub struct GrpcClient {
    kv: KvStub<Channel>,
    channel: Channel,
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
        let transport = |err: tonic::transport::Error| ClientError::Transport(error_chain(&err));
        let mut target = Endpoint::from_shared(endpoint.to_string()).map_err(transport)?;
        if crate::tls::is_https(endpoint) {
            let tls = tls.ok_or_else(|| {
                ClientError::Transport(format!(
                    "{endpoint} is an https endpoint: a CA to verify it is needed"
                ))
            })?;
            target = target.tls_config(tls.tonic_config()).map_err(transport)?;
        }
        let channel = target.connect().await.map_err(transport)?;
        let kv = KvStub::new(channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(GRPC_RECV_BYTES_MAX);
        Ok(GrpcClient { kv, channel })
    }
}

impl GrpcClient {
    fn lease(&self) -> LeaseStub<Channel> {
        LeaseStub::new(self.channel.clone())
    }
}

/// Causes of a transport error included in its description.
const ERROR_CHAIN_DEPTH_MAX: usize = 8;

/// An error with its causes: tonic's transport errors say only "transport error" at the top,
/// and the reason (refused connection, a certificate that did not verify) lies beneath.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    for _ in 0..ERROR_CHAIN_DEPTH_MAX {
        let Some(cause) = source else { break };
        text.push_str(": ");
        text.push_str(&cause.to_string());
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
            ClientError::Etcd(EtcdError::Internal(status.message().to_string()))
        }
        None => ClientError::Transport(format!("{:?}: {}", status.code(), status.message())),
    }
}

impl KvClient for GrpcClient {
    async fn range(&self, request: RangeRequest) -> Result<Reply<RangeResponse>, ClientError> {
        let response = self
            .kv
            .clone()
            .range(convert::range_to_pb(&request))
            .await
            .map_err(from_status)?;
        let response = response.into_inner();
        Ok(Reply {
            header: header_from_pb(response.header),
            response: convert::range_response_from_pb(response),
        })
    }

    async fn put(&self, request: PutRequest) -> Result<Reply<PutResponse>, ClientError> {
        let response = self
            .kv
            .clone()
            .put(convert::put_to_pb(&request))
            .await
            .map_err(from_status)?;
        let response = response.into_inner();
        Ok(Reply {
            header: header_from_pb(response.header),
            response: convert::put_response_from_pb(response),
        })
    }

    async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<Reply<DeleteRangeResponse>, ClientError> {
        let response = self
            .kv
            .clone()
            .delete_range(convert::delete_to_pb(&request))
            .await
            .map_err(from_status)?;
        let response = response.into_inner();
        Ok(Reply {
            header: header_from_pb(response.header),
            response: convert::delete_response_from_pb(response),
        })
    }

    async fn txn(&self, request: TxnRequest) -> Result<Reply<TxnResponse>, ClientError> {
        let response = self
            .kv
            .clone()
            .txn(convert::txn_to_pb(&request))
            .await
            .map_err(from_status)?;
        let response = response.into_inner();
        Ok(Reply {
            header: header_from_pb(response.header),
            response: convert::txn_response_from_pb(response),
        })
    }

    async fn compact(&self, revision: Revision, physical: bool) -> Result<Header, ClientError> {
        let request = rpc::CompactionRequest { revision, physical };
        let response = self
            .kv
            .clone()
            .compact(request)
            .await
            .map_err(from_status)?;
        Ok(header_from_pb(response.into_inner().header))
    }

    async fn lease_grant(&self, ttl: i64, id: LeaseId) -> Result<Reply<LeaseGranted>, ClientError> {
        let response = self
            .lease()
            .lease_grant(rpc::LeaseGrantRequest { ttl, id })
            .await
            .map_err(from_status)?
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
            .lease()
            .lease_revoke(rpc::LeaseRevokeRequest { id })
            .await
            .map_err(from_status)?
            .into_inner();
        Ok(header_from_pb(response.header))
    }

    async fn lease_keep_alive_once(&self, id: LeaseId) -> Result<Reply<i64>, ClientError> {
        let request = futures::stream::iter([rpc::LeaseKeepAliveRequest { id }]);
        let mut responses = self
            .lease()
            .lease_keep_alive(request)
            .await
            .map_err(from_status)?
            .into_inner();
        let response = responses
            .message()
            .await
            .map_err(from_status)?
            .ok_or_else(|| ClientError::Transport("keepalive stream ended".into()))?;
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
            .lease()
            .lease_time_to_live(rpc::LeaseTimeToLiveRequest { id, keys })
            .await
            .map_err(from_status)?
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
            .lease()
            .lease_leases(rpc::LeaseLeasesRequest {})
            .await
            .map_err(from_status)?
            .into_inner();
        Ok(Reply {
            header: header_from_pb(response.header),
            response: response.leases.into_iter().map(|lease| lease.id).collect(),
        })
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchEvents, ClientError> {
        let (updates, updates_rx) = mpsc::channel(CLIENT_WATCH_QUEUE);
        let (accepted, accepted_rx) = oneshot::channel();
        tokio::spawn(run_watch(
            self.channel.clone(),
            watch_create_to_pb(&request),
            updates,
            accepted,
        ));
        match accepted_rx.await {
            Ok(Ok(())) => Ok(Box::pin(ReceiverStream::new(updates_rx))),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(ClientError::Transport("watch task ended".into())),
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
    loop {
        match watch_once(&channel, &mut create, &updates, &mut accepted).await {
            WatchEnd::Finished => return,
            WatchEnd::Broken { reason, created } => {
                if created {
                    backoff = CLIENT_WATCH_BACKOFF_INITIAL;
                }
                if let Some(accepted) = accepted.take() {
                    // The first attempt failed: the caller hears it instead of a stream.
                    let _ = accepted.send(Err(ClientError::Transport(reason)));
                    return;
                }
                tracing::debug!(%reason, resume = create.start_revision, "watch broken; resuming");
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
