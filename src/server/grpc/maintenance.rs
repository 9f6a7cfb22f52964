//! The etcd Maintenance service. Status, Alarm, HashKV, Defragment, MoveLeader and Snapshot
//! are served; the operations that belong to later work (Hash, downgrade) answer UNIMPLEMENTED.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::header_to_pb;
use super::status::{to_status, unimplemented};
use crate::alarm::{Alarm, AlarmType};
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

type SnapshotStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<rpc::SnapshotResponse, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<rpc::AlarmRequest>,
    ) -> Result<Response<rpc::AlarmResponse>, Status> {
        use rpc::alarm_request::AlarmAction;
        let request = request.into_inner();
        let kind = AlarmType::from_number(request.alarm);
        let alarms = match AlarmAction::try_from(request.action) {
            // NONE lists every alarm; a type number etcd does not know matches none.
            Ok(AlarmAction::Get) if request.alarm == 0 => self.server.alarms(None).await,
            Ok(AlarmAction::Get) => match kind {
                Some(kind) => self.server.alarms(Some(kind)).await,
                None => Ok(Vec::new()),
            },
            Ok(action @ (AlarmAction::Activate | AlarmAction::Deactivate)) => match kind {
                Some(kind) => {
                    let alarm = Alarm {
                        member: request.member_id,
                        kind,
                    };
                    self.server
                        .change_alarm(action == AlarmAction::Activate, alarm)
                        .await
                }
                // etcd-compat: an alarm of type NONE (or an unknown type) means nothing, so it
                // is neither raised nor cleared; etcd would store one it cannot act on.
                None => Ok(Vec::new()),
            },
            // etcd answers an action it does not know with an empty list, too.
            Err(_) => Ok(Vec::new()),
        }
        .map_err(|err| to_status(&err))?;
        Ok(Response::new(rpc::AlarmResponse {
            header: Some(header_to_pb(self.server.current_header())),
            alarms: alarms
                .into_iter()
                .map(|alarm| rpc::AlarmMember {
                    member_id: alarm.member,
                    alarm: alarm.kind.number(),
                })
                .collect(),
        }))
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
        let (hash, header) = self.server.hash().await?;
        Ok(Response::new(rpc::HashResponse {
            header: Some(header_to_pb(header)),
            hash,
        }))
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
        let chunks = tokio_stream::wrappers::ReceiverStream::new(self.server.snapshot()?);
        let messages = futures::StreamExt::map(chunks, |chunk| {
            chunk
                .map(|chunk| rpc::SnapshotResponse {
                    // etcd-compat: snapshot chunks carry no header.
                    header: None,
                    remaining_bytes: chunk.remaining_bytes,
                    blob: chunk.blob,
                    ..Default::default()
                })
                .map_err(|err| to_status(&err))
        });
        Ok(Response::new(Box::pin(messages)))
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
