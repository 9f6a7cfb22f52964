//! The etcd Lease service: wire conversion around [`Server`]'s lease calls, and the
//! keepalive stream (one answer per request, in order).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::header_to_pb;
use crate::limits::LEASE_KEEPALIVE_QUEUE;
use crate::pb::etcdserverpb::{self as rpc, lease_server::Lease};
use crate::server::Server;

/// Serves `etcdserverpb.Lease`.
pub struct LeaseService {
    server: Arc<Server>,
}

impl LeaseService {
    /// A Lease service over `server`.
    pub fn new(server: Arc<Server>) -> LeaseService {
        LeaseService { server }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<rpc::LeaseGrantRequest>,
    ) -> Result<Response<rpc::LeaseGrantResponse>, Status> {
        let request = request.into_inner();
        let (granted, header) = self.server.lease_grant(request.ttl, request.id).await?;
        Ok(Response::new(rpc::LeaseGrantResponse {
            header: Some(header_to_pb(header)),
            id: granted.id,
            ttl: granted.ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<rpc::LeaseRevokeRequest>,
    ) -> Result<Response<rpc::LeaseRevokeResponse>, Status> {
        let header = self.server.lease_revoke(request.into_inner().id).await?;
        Ok(Response::new(rpc::LeaseRevokeResponse {
            header: Some(header_to_pb(header)),
        }))
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<rpc::LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<rpc::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut requests = request.into_inner();
        let (out, out_rx) = mpsc::channel(LEASE_KEEPALIVE_QUEUE);
        let server = Arc::clone(&self.server);
        tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    request = requests.message() => request,
                    () = out.closed() => return,
                };
                let Ok(Some(request)) = request else {
                    return;
                };
                let answer = match server.lease_keep_alive(request.id).await {
                    Ok((ttl, header)) => Ok(rpc::LeaseKeepAliveResponse {
                        header: Some(header_to_pb(header)),
                        id: request.id,
                        ttl,
                    }),
                    Err(err) => Err(Status::from(err)),
                };
                let failed = answer.is_err();
                if out.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<rpc::LeaseTimeToLiveRequest>,
    ) -> Result<Response<rpc::LeaseTimeToLiveResponse>, Status> {
        let request = request.into_inner();
        let (answer, header) = self
            .server
            .lease_time_to_live(request.id, request.keys)
            .await?;
        Ok(Response::new(rpc::LeaseTimeToLiveResponse {
            header: Some(header_to_pb(header)),
            id: request.id,
            ttl: answer.ttl,
            granted_ttl: answer.granted,
            keys: answer.keys,
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<rpc::LeaseLeasesRequest>,
    ) -> Result<Response<rpc::LeaseLeasesResponse>, Status> {
        let (ids, header) = self.server.lease_leases().await?;
        Ok(Response::new(rpc::LeaseLeasesResponse {
            header: Some(header_to_pb(header)),
            leases: ids.into_iter().map(|id| rpc::LeaseStatus { id }).collect(),
        }))
    }
}
