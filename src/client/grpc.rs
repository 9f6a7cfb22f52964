//! The gRPC client: talks etcd's wire protocol to a remote member (mnemo or etcd).
//!
//! Errors come back as gRPC statuses; like clientv3, it recognises etcd's errors by their
//! exact message and turns them back into [`EtcdError`].

use tonic::transport::{Channel, Endpoint};

use super::{ClientError, EtcdError, Header, KvClient, Reply};
use crate::convert;
use crate::limits::GRPC_RECV_BYTES_MAX;
use crate::pb::etcdserverpb::{self as rpc, kv_client::KvClient as KvStub};
use crate::types::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    Revision, TxnRequest, TxnResponse,
};

/// A client of a remote member over gRPC.
#[derive(Clone)]
pub struct GrpcClient {
    kv: KvStub<Channel>,
}

impl GrpcClient {
    /// Connects to `endpoint` (e.g. `http://127.0.0.1:2379`).
    ///
    /// # Errors
    /// [`ClientError::Transport`] when the endpoint is invalid or unreachable.
    pub async fn connect(endpoint: &str) -> Result<GrpcClient, ClientError> {
        let channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|err| ClientError::Transport(err.to_string()))?
            .connect()
            .await
            .map_err(|err| ClientError::Transport(err.to_string()))?;
        let kv = KvStub::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(GRPC_RECV_BYTES_MAX);
        Ok(GrpcClient { kv })
    }
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
}
