//! The `v3lockpb.Lock` and `v3electionpb.Election` services: etcd's lock and election recipes
//! (`crate::client::concurrency`) run inside the member over the in-process client, with the
//! caller's lease. This module only converts between the wire and those functions.
//! The recipes' requests run in the call's caller scope, so they are checked as the caller's
//! own; Observe's stream runs outside it and is checked once, up front.

use std::sync::Arc;

use futures::StreamExt;
use tonic::{Request, Response, Status};

use super::header_to_pb;
use super::status::to_status;
use crate::auth::Needs;
use crate::client::concurrency::{self, LeaderKey};
use crate::client::{ClientError, LocalClient};
use crate::convert;
use crate::pb::v3electionpb as election;
use crate::pb::v3lockpb as lock;
use crate::server::{Caller, Error, Header, Server};
use crate::types::{KeyRange, RangeRequest};

fn client_status(error: ClientError) -> Status {
    match error {
        // etcd-compat: etcd's lock and election servers pass the recipe's error on untyped,
        // so an auth refusal goes out as Unknown with etcd's text.
        ClientError::Etcd(error @ Error::Auth(_)) => Status::unknown(error.to_string()),
        ClientError::Etcd(error) => to_status(&error),
        other => to_status(&Error::Internal(other.to_string())),
    }
}

fn header(header: Header) -> Option<crate::pb::etcdserverpb::ResponseHeader> {
    Some(header_to_pb(header))
}

/// Serves `v3lockpb.Lock`.
pub struct LockService {
    client: LocalClient,
}

impl LockService {
    /// A Lock service over `server`.
    pub fn new(server: &Arc<Server>) -> LockService {
        LockService {
            client: LocalClient::new(server),
        }
    }
}

#[tonic::async_trait]
impl lock::lock_server::Lock for LockService {
    async fn lock(
        &self,
        request: Request<lock::LockRequest>,
    ) -> Result<Response<lock::LockResponse>, Status> {
        let request = request.into_inner();
        let (key, acquired) = concurrency::lock(&self.client, &request.name, request.lease)
            .await
            .map_err(client_status)?;
        Ok(Response::new(lock::LockResponse {
            header: header(acquired),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<lock::UnlockRequest>,
    ) -> Result<Response<lock::UnlockResponse>, Status> {
        let released = concurrency::unlock(&self.client, request.into_inner().key)
            .await
            .map_err(client_status)?;
        Ok(Response::new(lock::UnlockResponse {
            header: header(released),
        }))
    }
}

/// Serves `v3electionpb.Election`.
pub struct ElectionService {
    client: LocalClient,
    /// For the caller's permission check that Observe makes up front.
    server: Arc<Server>,
}

impl ElectionService {
    /// An Election service over `server`.
    pub fn new(server: &Arc<Server>) -> ElectionService {
        ElectionService {
            client: LocalClient::new(server),
            server: Arc::clone(server),
        }
    }
}

fn leader_from_pb(leader: Option<election::LeaderKey>) -> Result<LeaderKey, Status> {
    let leader = leader.ok_or_else(|| to_status(&Error::MissingLeaderKey))?;
    Ok(LeaderKey {
        name: leader.name,
        key: leader.key,
        rev: leader.rev,
        lease: leader.lease,
    })
}

type Observed =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<election::LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl election::election_server::Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<election::CampaignRequest>,
    ) -> Result<Response<election::CampaignResponse>, Status> {
        let request = request.into_inner();
        let (leader, elected) =
            concurrency::campaign(&self.client, &request.name, request.lease, request.value)
                .await
                .map_err(client_status)?;
        Ok(Response::new(election::CampaignResponse {
            header: header(elected),
            leader: Some(election::LeaderKey {
                name: leader.name,
                key: leader.key,
                rev: leader.rev,
                lease: leader.lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<election::ProclaimRequest>,
    ) -> Result<Response<election::ProclaimResponse>, Status> {
        let request = request.into_inner();
        let leader = leader_from_pb(request.leader)?;
        let proclaimed = concurrency::proclaim(&self.client, &leader, request.value)
            .await
            .map_err(client_status)?;
        Ok(Response::new(election::ProclaimResponse {
            header: header(proclaimed),
        }))
    }

    async fn leader(
        &self,
        request: Request<election::LeaderRequest>,
    ) -> Result<Response<election::LeaderResponse>, Status> {
        let (kv, read) = concurrency::leader(&self.client, &request.into_inner().name)
            .await
            .map_err(client_status)?;
        Ok(Response::new(election::LeaderResponse {
            header: header(read),
            kv: Some(convert::kv_to_pb(kv)),
        }))
    }

    async fn resign(
        &self,
        request: Request<election::ResignRequest>,
    ) -> Result<Response<election::ResignResponse>, Status> {
        let leader = leader_from_pb(request.into_inner().leader)?;
        let resigned = concurrency::resign(&self.client, &leader)
            .await
            .map_err(client_status)?;
        Ok(Response::new(election::ResignResponse {
            header: header(resigned),
        }))
    }

    type ObserveStream = Observed;

    async fn observe(
        &self,
        request: Request<election::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let name = request.into_inner().name;
        // The stream is polled outside this call's caller scope, so its reads would go
        // unchecked: the caller must be able to read the whole election up front.
        if let Some(caller) = Caller::current() {
            let election = RangeRequest {
                range: KeyRange::prefix(concurrency::contenders(&name)),
                ..RangeRequest::default()
            };
            self.server
                .authorize_caller(&caller, &Needs::range(&election))
                .map_err(|error| to_status(&error))?;
        }
        let stream = concurrency::observe(self.client.clone(), name).map(|item| {
            item.map(|(kv, read)| election::LeaderResponse {
                header: header(read),
                kv: Some(convert::kv_to_pb(kv)),
            })
            .map_err(client_status)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
