//! The etcd Cluster service: member list and run-time membership changes, converted to and
//! from the wire and handed to [`Server`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::status::to_status;
use crate::pb::etcdserverpb::{self as rpc, cluster_server::Cluster};
use crate::server::{Member, Server};

fn member_to_pb(member: Member) -> rpc::Member {
    rpc::Member {
        id: member.id,
        name: member.name,
        peer_ur_ls: member.peer_urls,
        client_ur_ls: member.client_urls,
        is_learner: member.is_learner,
    }
}

fn members_to_pb(members: Vec<Member>) -> Vec<rpc::Member> {
    members.into_iter().map(member_to_pb).collect()
}

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
        request: Request<rpc::MemberAddRequest>,
    ) -> Result<Response<rpc::MemberAddResponse>, Status> {
        let request = request.into_inner();
        let (member, members) = self
            .server
            .member_add(request.peer_ur_ls, request.is_learner)
            .await
            .map_err(|err| to_status(&err))?;
        Ok(Response::new(rpc::MemberAddResponse {
            header: Some(self.header()),
            member: Some(member_to_pb(member)),
            members: members_to_pb(members),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<rpc::MemberRemoveRequest>,
    ) -> Result<Response<rpc::MemberRemoveResponse>, Status> {
        let members = self
            .server
            .member_remove(request.into_inner().id)
            .await
            .map_err(|err| to_status(&err))?;
        Ok(Response::new(rpc::MemberRemoveResponse {
            header: Some(self.header()),
            members: members_to_pb(members),
        }))
    }

    async fn member_update(
        &self,
        request: Request<rpc::MemberUpdateRequest>,
    ) -> Result<Response<rpc::MemberUpdateResponse>, Status> {
        let request = request.into_inner();
        let members = self
            .server
            .member_update(request.id, request.peer_ur_ls)
            .await
            .map_err(|err| to_status(&err))?;
        Ok(Response::new(rpc::MemberUpdateResponse {
            header: Some(self.header()),
            members: members_to_pb(members),
        }))
    }

    async fn member_list(
        &self,
        _request: Request<rpc::MemberListRequest>,
    ) -> Result<Response<rpc::MemberListResponse>, Status> {
        Ok(Response::new(rpc::MemberListResponse {
            header: Some(self.header()),
            members: members_to_pb(self.server.members()),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<rpc::MemberPromoteRequest>,
    ) -> Result<Response<rpc::MemberPromoteResponse>, Status> {
        let members = self
            .server
            .member_promote(request.into_inner().id)
            .await
            .map_err(|err| to_status(&err))?;
        Ok(Response::new(rpc::MemberPromoteResponse {
            header: Some(self.header()),
            members: members_to_pb(members),
        }))
    }
}
