//! The etcd Maintenance service. Status, HashKV, Defragment, MoveLeader and listing alarms are
//! served; the operations that belong to later work (raising alarms, Hash, snapshot, downgrade)
//! answer UNIMPLEMENTED.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::header_to_pb;
use super::status::{to_status, unimplemented};
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
        request: Request<rpc::AlarmRequest>,
    ) -> Result<Response<rpc::AlarmResponse>, Status> {
        // No alarm can be raised yet (the quota and corruption checks come with the operations
        // work), so the list is truly empty and clearing one is a no-op. etcdctl 3.5+ lists
        // alarms in `endpoint health` and `alarm disarm`.
        match rpc::alarm_request::AlarmAction::try_from(request.into_inner().action) {
            Ok(
                rpc::alarm_request::AlarmAction::Get | rpc::alarm_request::AlarmAction::Deactivate,
            ) => Ok(Response::new(rpc::AlarmResponse {
                header: Some(header_to_pb(self.server.current_header())),
                alarms: Vec::new(),
            })),
            Ok(rpc::alarm_request::AlarmAction::Activate) | Err(_) => {
                Err(unimplemented("Maintenance/Alarm ACTIVATE"))
            }
        }
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
        let (before, after) = self
            .server
            .defragment()
            .await
            .map_err(|err| to_status(&err))?;
        tracing::info!(before, after, "defragmented");
        Ok(Response::new(rpc::DefragmentResponse {
            header: Some(header_to_pb(self.server.current_header())),
        }))
    }

    async fn hash(
        &self,
        _request: Request<rpc::HashRequest>,
    ) -> Result<Response<rpc::HashResponse>, Status> {
        Err(unimplemented("Maintenance/Hash"))
    }

    async fn hash_kv(
        &self,
        request: Request<rpc::HashKvRequest>,
    ) -> Result<Response<rpc::HashKvResponse>, Status> {
        let (hash, header) = self.server.hash_kv(request.into_inner().revision).await?;
        Ok(Response::new(rpc::HashKvResponse {
            header: Some(header_to_pb(header)),
            hash: hash.hash,
            compact_revision: hash.compact_revision,
            hash_revision: hash.hash_revision,
        }))
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
        request: Request<rpc::MoveLeaderRequest>,
    ) -> Result<Response<rpc::MoveLeaderResponse>, Status> {
        self.server
            .move_leader(request.into_inner().target_id)
            .await
            .map_err(|err| to_status(&err))?;
        // etcd-compat: MoveLeader answers with no header.
        Ok(Response::new(rpc::MoveLeaderResponse { header: None }))
    }

    async fn downgrade(
        &self,
        _request: Request<rpc::DowngradeRequest>,
    ) -> Result<Response<rpc::DowngradeResponse>, Status> {
        Err(unimplemented("Maintenance/Downgrade"))
    }
}
