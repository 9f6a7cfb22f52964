//! The peer transport openraft uses to reach other members.
//!
//! A one-member cluster never sends a peer message; this transport answers every call with
//! "unreachable" so that a misconfigured multi-member start fails loudly instead of hanging.
//! The replicated transport over the peer URL replaces it (issue #3). It must not touch the
//! state machine or the log.

use std::future::Future;
use std::io;

use openraft::OptionalSend;
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};

use super::state_machine::SnapshotDir;
use super::{MemberNode, TypeConfig};

type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
type EngineSnapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotDir>;

fn unreachable(target: u64) -> Unreachable<TypeConfig> {
    let error = io::Error::new(
        io::ErrorKind::NotConnected,
        format!("member {target:x} is unreachable: this build has no peer transport yet"),
    );
    Unreachable::new(&error)
}

/// Creates a [`PeerClient`] per target member.
pub(super) struct PeerNetworkFactory;

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, _node: &MemberNode) -> PeerClient {
        PeerClient { target }
    }
}

/// The connection to one peer.
pub(super) struct PeerClient {
    target: u64,
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotDir;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(unreachable(self.target)))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(unreachable(self.target)))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: EngineSnapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(unreachable(self.target)))
    }
}
