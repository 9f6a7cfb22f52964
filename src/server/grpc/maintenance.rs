//! The etcd Maintenance service. Status and HashKV are served; the operations that belong to
//! later work (alarms, defragment, snapshot, move-leader, downgrade) answer UNIMPLEMENTED.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{header_to_pb, status::unimplemented};
use crate::pb::etcdserverpb::{self as rpc, maintenance_server::Maintenance};
use crate::server::Server;

/// Serves `etcdserverpb.Maintenance`.
pub struct MaintenanceService {
    server: Arc<Server>,
}

impl MaintenanceService {
    /// A Maintenance service over `server`.
    pub fn new(server: Arc<Server>) -> MaintenanceService {
        MaintenanceService { server }
    }
}

type SnapshotStream = futures::stream::Empty<Result<rpc::SnapshotResponse, Status>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        _request: Request<rpc::AlarmRequest>,
    ) -> Result<Response<rpc::AlarmResponse>, Status> {
        Err(unimplemented("Maintenance/Alarm"))
    }

    async fn status(
        &self,
        _request: Request<rpc::StatusRequest>,
    ) -> Result<Response<rpc::StatusResponse>, Status> {
        let status = self.server.status();
        Ok(Response::new(rpc::StatusResponse {
            header: Some(header_to_pb(status.header)),
            version: status.version,
            db_size: status.db_size_bytes,
            leader: status.leader,
            raft_index: status.raft_index,
            raft_term: status.raft_term,
            raft_applied_index: status.raft_applied_index,
            errors: status.errors,
            db_size_in_use: status.db_size_in_use_bytes,
            is_learner: status.is_learner,
            db_size_quota: status.db_size_quota_bytes,
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        _request: Request<rpc::DefragmentRequest>,
    ) -> Result<Response<rpc::DefragmentResponse>, Status> {
        Err(unimplemented("Maintenance/Defragment"))
    }

    async fn hash(
        &self,
        _request: Request<rpc::HashRequest>,
    ) -> Result<Response<rpc::HashResponse>, Status> {
        Err(unimplemented("Maintenance/Hash"))
    }

    async fn hash_kv(
        &self,
        _request: Request<rpc::HashKvRequest>,
    ) -> Result<Response<rpc::HashKvResponse>, Status> {
        Err(unimplemented("Maintenance/HashKV"))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _request: Request<rpc::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unimplemented("Maintenance/Snapshot"))
    }

    async fn move_leader(
        &self,
        _request: Request<rpc::MoveLeaderRequest>,
    ) -> Result<Response<rpc::MoveLeaderResponse>, Status> {
        Err(unimplemented("Maintenance/MoveLeader"))
    }

    async fn downgrade(
        &self,
        _request: Request<rpc::DowngradeRequest>,
    ) -> Result<Response<rpc::DowngradeResponse>, Status> {
        Err(unimplemented("Maintenance/Downgrade"))
    }
}
