//! The etcd KV service: wire conversion around [`Server`]'s KV calls.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{header_to_pb, status::unimplemented};
use crate::convert;
use crate::pb::etcdserverpb::{self as rpc, kv_server::Kv};
use crate::server::{Error, Server};

/// Serves `etcdserverpb.KV`.
pub struct KvService {
    server: Arc<Server>,
}

impl KvService {
    /// A KV service over `server`.
    pub fn new(server: Arc<Server>) -> KvService {
        KvService { server }
    }
}

type RangeStream = futures::stream::Empty<Result<rpc::RangeStreamResponse, Status>>;

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<rpc::RangeRequest>,
    ) -> Result<Response<rpc::RangeResponse>, Status> {
        let request = request.into_inner();
        // etcd-compat: 3.6 refuses unknown sort enums (3.4 read them as the defaults).
        if !convert::range_sort_is_known(&request) {
            return Err(Error::InvalidSortOption.into());
        }
        let request = convert::range_from_pb(request);
        let (response, header) = self.server.range(request).await?;
        Ok(Response::new(convert::range_response_to_pb(
            response,
            Some(header_to_pb(header)),
        )))
    }

    type RangeStreamStream = RangeStream;

    async fn range_stream(
        &self,
        _request: Request<rpc::RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(unimplemented("KV/RangeStream"))
    }

    async fn put(
        &self,
        request: Request<rpc::PutRequest>,
    ) -> Result<Response<rpc::PutResponse>, Status> {
        let request = convert::put_from_pb(request.into_inner());
        let (response, header) = self.server.put(request).await?;
        Ok(Response::new(convert::put_response_to_pb(
            response,
            Some(header_to_pb(header)),
        )))
    }

    async fn delete_range(
        &self,
        request: Request<rpc::DeleteRangeRequest>,
    ) -> Result<Response<rpc::DeleteRangeResponse>, Status> {
        let request = convert::delete_from_pb(request.into_inner());
        let (response, header) = self.server.delete_range(request).await?;
        Ok(Response::new(convert::delete_response_to_pb(
            response,
            Some(header_to_pb(header)),
        )))
    }

    async fn txn(
        &self,
        request: Request<rpc::TxnRequest>,
    ) -> Result<Response<rpc::TxnResponse>, Status> {
        let request = request.into_inner();
        if !convert::txn_sorts_are_known(&request) {
            return Err(Error::InvalidSortOption.into());
        }
        // etcd-compat: an operation with no request is reported as "key not found".
        let request = convert::txn_from_pb(request).map_err(|_| Error::KeyNotFound)?;
        let (response, header) = self.server.txn(request).await?;
        let revision = header.revision;
        Ok(Response::new(convert::txn_response_to_pb(
            response,
            Some(header_to_pb(header)),
            revision,
        )))
    }

    async fn compact(
        &self,
        request: Request<rpc::CompactionRequest>,
    ) -> Result<Response<rpc::CompactionResponse>, Status> {
        let request = request.into_inner();
        let header = self
            .server
            .compact(request.revision, request.physical)
            .await?;
        Ok(Response::new(rpc::CompactionResponse {
            header: Some(header_to_pb(header)),
        }))
    }
}
