//! The encoding of member-to-member messages: the envelope every peer message travels in
//! (cluster id, sender, receiver), the postcard bodies inside it, and the requests a follower
//! forwards to the leader.
//!
//! Owns the meaning of `mnemo.internal.Peer` messages and their checks. It must not send or
//! serve anything (`network` and `peer_service` do) and must not touch the log or the state
//! machine.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{LogPos, MemberNode};
use crate::pb::internal::PeerMessage;

/// Encoding version of [`PeerMessage::body`] this build writes and reads.
pub(super) const BODY_VERSION: u32 = 1;

/// gRPC message text for a message from another cluster; etcd uses the same words.
pub(super) const CLUSTER_MISMATCH: &str = "cluster ID mismatch";
/// gRPC message text for a message from a member that was removed from the cluster.
pub(super) const SENDER_REMOVED: &str = "the member has been permanently removed from the cluster";
/// gRPC message text for a message meant for another member id.
pub(super) const WRONG_RECEIVER: &str = "message is meant for another member";

/// Who is talking to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Route {
    pub cluster_id: u64,
    pub from: u64,
    pub to: u64,
}

/// Wraps `body` for `route`.
pub(super) fn envelope<T: Serialize>(route: Route, body: &T) -> Result<PeerMessage, String> {
    let body = postcard::to_stdvec(body).map_err(|err| format!("encode peer message: {err}"))?;
    Ok(PeerMessage {
        version: BODY_VERSION,
        cluster_id: route.cluster_id,
        from: route.from,
        to: route.to,
        body: Bytes::from(body),
    })
}

/// Decodes the body of `message`.
pub(super) fn open<T: DeserializeOwned>(message: &PeerMessage) -> Result<T, String> {
    if message.version != BODY_VERSION {
        return Err(format!(
            "peer message version {} is not supported (this member speaks {BODY_VERSION})",
            message.version
        ));
    }
    postcard::from_bytes(&message.body).map_err(|err| format!("decode peer message: {err}"))
}

/// Why a received envelope is refused before its body is looked at.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum Refusal {
    /// The sender belongs to another cluster.
    #[error(
        "{CLUSTER_MISMATCH}: member {from:x} is in cluster {theirs:x}, this member is in {ours:x}"
    )]
    ClusterMismatch { from: u64, theirs: u64, ours: u64 },
    /// The sender means another member (for example a peer URL now used by a new member).
    #[error("{WRONG_RECEIVER}: {to:x}, this is {me:x}")]
    WrongReceiver { to: u64, me: u64 },
    /// The sender was removed from the cluster.
    #[error("{SENDER_REMOVED}: {from:x}")]
    SenderRemoved { from: u64 },
}

/// Checks that `message` is meant for member `me` of cluster `cluster_id`.
pub(super) fn check(message: &PeerMessage, cluster_id: u64, me: u64) -> Result<(), Refusal> {
    if message.cluster_id != cluster_id {
        return Err(Refusal::ClusterMismatch {
            from: message.from,
            theirs: message.cluster_id,
            ours: cluster_id,
        });
    }
    if message.to != me {
        return Err(Refusal::WrongReceiver { to: message.to, me });
    }
    Ok(())
}

/// A change of the member set, as etcd's Cluster service asks for it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MemberChange {
    /// Adds a member (a voter, or a learner that does not vote).
    Add {
        /// The new member's id.
        id: u64,
        /// Its peer URLs; name and client URLs stay empty until it starts.
        peer_urls: Vec<String>,
        /// True for a learner.
        learner: bool,
    },
    /// Removes a member.
    Remove {
        /// The member.
        id: u64,
    },
    /// Replaces a member's peer URLs.
    Update {
        /// The member.
        id: u64,
        /// New peer URLs.
        peer_urls: Vec<String>,
    },
    /// Makes a learner a voter.
    Promote {
        /// The learner.
        id: u64,
    },
    /// A started member announces its name and client URLs.
    Publish {
        /// The member.
        id: u64,
        /// Its name.
        name: String,
        /// Its client URLs.
        client_urls: Vec<String>,
    },
}

/// Work a follower asks the leader to do.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) enum ForwardRequest {
    /// Propose these payload bytes and answer with the apply result.
    Propose(Bytes),
    /// Confirm leadership with a quorum and answer with the log position a linearizable read
    /// must wait for.
    ReadIndex,
    /// Change the member set.
    ChangeMembers(MemberChange),
    /// A leader-only call of the layer above (opaque bytes).
    Call(Bytes),
    /// A question of the layer above for the receiving member, whatever its role (opaque
    /// bytes; answered with [`ForwardResponse::Called`]).
    Ask(Bytes),
}

/// A [`ForwardRequest`] on a forwarding stream, numbered by its sender so that the answer,
/// which may come back before those of earlier requests, finds its caller.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct ForwardCall {
    pub id: u64,
    pub request: ForwardRequest,
}

/// The answer to the [`ForwardCall`] with the same `id`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct ForwardReply {
    pub id: u64,
    pub response: ForwardResponse,
}

/// The leader's answer to a [`ForwardRequest`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) enum ForwardResponse {
    /// The apply result of a proposal.
    Applied(Bytes),
    /// The read index.
    ReadIndex(LogPos),
    /// The member set after a change.
    Members(Vec<(u64, MemberNode, bool)>),
    /// The answer to a leader-only call.
    Called(Bytes),
    /// The request failed on the leader.
    Failed(WireError),
}

/// [`super::RaftError`] as it crosses the wire.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum WireError {
    NoLeader,
    LeaderChanged,
    NotLeader(Option<u64>),
    Timeout,
    Stopped(String),
    Storage(String),
    Membership(super::MembershipError),
    Call(String),
}

impl From<super::RaftError> for WireError {
    fn from(error: super::RaftError) -> WireError {
        use super::RaftError;
        match error {
            RaftError::NoLeader => WireError::NoLeader,
            RaftError::LeaderChanged => WireError::LeaderChanged,
            RaftError::NotLeader { leader } => WireError::NotLeader(leader),
            RaftError::Timeout => WireError::Timeout,
            RaftError::Stopped(reason) => WireError::Stopped(reason),
            RaftError::Storage(reason) => WireError::Storage(reason),
            RaftError::Membership(error) => WireError::Membership(error),
            RaftError::Call(reason) => WireError::Call(reason),
        }
    }
}

impl From<WireError> for super::RaftError {
    fn from(error: WireError) -> super::RaftError {
        use super::RaftError;
        match error {
            WireError::NoLeader => RaftError::NoLeader,
            WireError::LeaderChanged => RaftError::LeaderChanged,
            WireError::NotLeader(leader) => RaftError::NotLeader { leader },
            WireError::Timeout => RaftError::Timeout,
            WireError::Stopped(reason) => RaftError::Stopped(reason),
            WireError::Storage(reason) => RaftError::Storage(reason),
            WireError::Membership(error) => RaftError::Membership(error),
            WireError::Call(reason) => RaftError::Call(reason),
        }
    }
}

/// The first chunk of a snapshot stream: what is being sent and the files it is made of.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct SnapshotHeader {
    /// The sending leader's vote (openraft checks it at install).
    pub vote: Vec<u8>,
    /// openraft's snapshot metadata, as the snapshot directory stores it (JSON).
    pub meta: Vec<u8>,
    /// Every file, in the order their bytes follow.
    pub files: Vec<SnapshotFile>,
}

/// One file of a snapshot directory.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct SnapshotFile {
    /// Path relative to the snapshot directory, `/`-separated, no `..`.
    pub path: String,
    /// Length in bytes.
    pub len: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_are_checked() {
        let route = Route {
            cluster_id: 7,
            from: 1,
            to: 2,
        };
        let request = ForwardRequest::Propose(Bytes::from_static(b"payload"));
        let message = envelope(route, &request).expect("encode");
        assert_eq!(check(&message, 7, 2), Ok(()));
        assert!(matches!(
            check(&message, 8, 2),
            Err(Refusal::ClusterMismatch {
                from: 1,
                theirs: 7,
                ours: 8
            })
        ));
        assert!(matches!(
            check(&message, 7, 3),
            Err(Refusal::WrongReceiver { to: 2, me: 3 })
        ));
        let decoded: ForwardRequest = open(&message).expect("decode");
        assert!(matches!(decoded, ForwardRequest::Propose(bytes) if bytes.as_ref() == b"payload"));
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        let route = Route {
            cluster_id: 1,
            from: 1,
            to: 2,
        };
        let mut message = envelope(route, &ForwardRequest::ReadIndex).expect("encode");
        message.version = BODY_VERSION + 1;
        let error = open::<ForwardRequest>(&message).expect_err("newer version");
        assert!(error.contains("not supported"), "{error}");
        message.version = BODY_VERSION;
        message.body = Bytes::from_static(&[0xff, 0xff, 0xff]);
        assert!(open::<ForwardRequest>(&message).is_err());
    }
}
