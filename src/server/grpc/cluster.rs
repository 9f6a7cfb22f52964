//! The etcd Cluster service. MemberList is served; membership changes come with the
//! replicated cluster (issue #3) and answer UNIMPLEMENTED until then.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::status::unimplemented;
use crate::pb::etcdserverpb::{self as rpc, cluster_server::Cluster};
use crate::server::Server;

/// Serves `etcdserverpb.Cluster`.
pub struct ClusterService {
    server: Arc<Server>,
}

impl ClusterService {
    /// A Cluster service over `server`.
    pub fn new(server: Arc<Server>) -> ClusterService {
        ClusterService { server }
    }

    /// etcd-compat: Member* headers carry cluster id, member id and term, but no revision.
    fn header(&self) -> rpc::ResponseHeader {
        let header = self.server.current_header();
        rpc::ResponseHeader {
            cluster_id: header.cluster_id,
            member_id: header.member_id,
            revision: 0,
            raft_term: header.raft_term,
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _request: Request<rpc::MemberAddRequest>,
    ) -> Result<Response<rpc::MemberAddResponse>, Status> {
        Err(unimplemented("Cluster/MemberAdd"))
    }

    async fn member_remove(
        &self,
        _request: Request<rpc::MemberRemoveRequest>,
    ) -> Result<Response<rpc::MemberRemoveResponse>, Status> {
        Err(unimplemented("Cluster/MemberRemove"))
    }

    async fn member_update(
        &self,
        _request: Request<rpc::MemberUpdateRequest>,
    ) -> Result<Response<rpc::MemberUpdateResponse>, Status> {
        Err(unimplemented("Cluster/MemberUpdate"))
    }

    async fn member_list(
        &self,
        _request: Request<rpc::MemberListRequest>,
    ) -> Result<Response<rpc::MemberListResponse>, Status> {
        let members = self
            .server
            .members()
            .into_iter()
            .map(|member| rpc::Member {
                id: member.id,
                name: member.name,
                peer_ur_ls: member.peer_urls,
                client_ur_ls: member.client_urls,
                is_learner: member.is_learner,
            })
            .collect();
        Ok(Response::new(rpc::MemberListResponse {
            header: Some(self.header()),
            members,
        }))
    }

    async fn member_promote(
        &self,
        _request: Request<rpc::MemberPromoteRequest>,
    ) -> Result<Response<rpc::MemberPromoteResponse>, Status> {
        Err(unimplemented("Cluster/MemberPromote"))
    }
}
