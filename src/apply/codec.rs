//! The Raft entry payload and apply result formats: `mnemo.internal.InternalRequest` and
//! `InternalResponse` (proto/internal/raft.proto).
//!
//! These bytes are an on-disk format: they sit in the write-ahead log and are re-applied after
//! a restart, possibly by a newer binary. Field numbers are never reused and every payload
//! carries [`PAYLOAD_VERSION`]; a golden-bytes test pins the encoding.

use bytes::Bytes;
use prost::Message;

use crate::alarm::{Alarm, AlarmType};
use crate::auth::{AuthChange, AuthError, AuthStamp, PasswordHash, PermType, Permission};
use crate::convert;
use crate::limits::{QUOTA_KV_OVERHEAD_BYTES, QUOTA_LEASE_OVERHEAD_BYTES};
use crate::pb::etcdserverpb as rpc;
use crate::pb::internal::{self, internal_request, internal_response};
use crate::types::{
    DeleteRangeRequest, DeleteRangeResponse, LeaseId, PutRequest, PutResponse, RequestOp, Revision,
    TxnRequest, TxnResponse,
};

/// Version of the payload format written today.
pub const PAYLOAD_VERSION: u32 = 1;

/// A state change to replicate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proposal {
    /// Write one key.
    Put(PutRequest),
    /// Delete a range.
    DeleteRange(DeleteRangeRequest),
    /// A transaction with at least one write.
    Txn(TxnRequest),
    /// Compact history up to a revision.
    Compact {
        /// Revision to compact up to.
        revision: Revision,
        /// Whether the caller waits for the data to be physically dropped.
        physical: bool,
    },
    /// Grant a lease; the proposer picked the id when the client left it to the server.
    LeaseGrant {
        /// The lease id (never 0 here).
        id: LeaseId,
        /// Granted TTL in seconds, already raised to the minimum.
        ttl: i64,
    },
    /// Revoke a lease and delete its keys in one revision.
    LeaseRevoke {
        /// The lease id.
        id: LeaseId,
    },
    /// The leader's record of the remaining TTLs of renewed leases.
    LeaseCheckpoint(Vec<(LeaseId, i64)>),
    /// Raise or clear one alarm.
    Alarm {
        /// Raise it (true) or clear it (false).
        activate: bool,
        /// The member and type.
        alarm: Alarm,
    },
    /// Change the auth store.
    Auth(AuthChange),
}

impl Proposal {
    /// Bytes the proposal is expected to add to the backend, as the quota counts them; 0 for
    /// one that needs no space (deletes, compaction, lease revokes, alarms).
    ///
    /// A put costs its encoded size plus [`QUOTA_KV_OVERHEAD_BYTES`], a lease grant
    /// [`QUOTA_LEASE_OVERHEAD_BYTES`], and a transaction the dearer of its two branches (only
    /// one of them runs). Puts inside nested transactions count too; etcd 3.4 charges
    /// nothing for them, which lets a nested put through while NOSPACE is raised.
    #[must_use]
    pub fn space_cost(&self) -> u64 {
        match self {
            Proposal::Put(put) => put_cost(put),
            Proposal::Txn(txn) => txn_cost(txn),
            Proposal::LeaseGrant { .. } => QUOTA_LEASE_OVERHEAD_BYTES,
            Proposal::DeleteRange(_)
            | Proposal::Compact { .. }
            | Proposal::LeaseRevoke { .. }
            | Proposal::LeaseCheckpoint(_)
            | Proposal::Alarm { .. }
            | Proposal::Auth(_) => 0,
        }
    }
}

fn put_cost(put: &PutRequest) -> u64 {
    let encoded = u64::try_from(convert::put_to_pb(put).encoded_len()).unwrap_or(u64::MAX);
    QUOTA_KV_OVERHEAD_BYTES.saturating_add(encoded)
}

fn txn_cost(txn: &TxnRequest) -> u64 {
    let branch = |ops: &[RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match op {
                RequestOp::Put(put) => put_cost(put),
                RequestOp::Txn(nested) => txn_cost(nested),
                RequestOp::Range(_) | RequestOp::DeleteRange(_) => 0,
            })
            .fold(0, u64::saturating_add)
    };
    branch(&txn.success).max(branch(&txn.failure))
}

/// The result of applying a [`Proposal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Result of a put.
    Put(PutResponse),
    /// Result of a delete.
    DeleteRange(DeleteRangeResponse),
    /// Result of a transaction.
    Txn(TxnResponse),
    /// Compaction done.
    Compact,
    /// A lease was granted.
    LeaseGrant {
        /// Its id.
        id: LeaseId,
        /// Its TTL.
        ttl: i64,
    },
    /// A lease was revoked.
    LeaseRevoke,
    /// A checkpoint was recorded.
    LeaseCheckpoint,
    /// An alarm change: the alarm an activate raised (or found raised), or the one a
    /// deactivate cleared; empty when a deactivate found nothing to clear.
    Alarm(Vec<Alarm>),
    /// An auth change was applied (or changed nothing, as etcd allows for some).
    Auth,
}

/// A successful apply and the revision for the response header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// The revision after the request: new if it changed something, else current.
    pub revision: Revision,
    /// The result.
    pub result: Applied,
}

/// Why a committed request had no effect. Every member reaches the same verdict.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The request named a revision that was compacted.
    #[error("required revision has been compacted")]
    Compacted,
    /// The request named a revision not reached yet.
    #[error("required revision is a future revision")]
    FutureRevision,
    /// The request named a lease that does not exist.
    #[error("requested lease not found")]
    LeaseNotFound,
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// A grant named a lease id that is taken.
    #[error("lease already exists")]
    LeaseExists,
    /// A write that needs space while a NOSPACE alarm is raised.
    #[error("database space exceeded")]
    NoSpace,
    /// A write while a CORRUPT alarm is raised.
    #[error("corrupt cluster")]
    Corrupt,
    /// The auth store refused the change, or the caller's permission (checked again here).
    #[error(transparent)]
    Auth(AuthError),
    /// The entry could not be understood or applied; a bug or a newer format.
    #[error("internal apply error: {0}")]
    Internal(String),
}

/// Error kind numbers in `InternalError.code`; part of the on-disk format.
const ERROR_COMPACTED: u32 = 1;
const ERROR_FUTURE_REVISION: u32 = 2;
const ERROR_LEASE_NOT_FOUND: u32 = 3;
const ERROR_KEY_NOT_FOUND: u32 = 4;
const ERROR_INTERNAL: u32 = 5;
const ERROR_LEASE_EXISTS: u32 = 6;
const ERROR_NO_SPACE: u32 = 7;
const ERROR_CORRUPT: u32 = 8;
/// Auth errors are `ERROR_AUTH_BASE + AuthError::code()`.
const ERROR_AUTH_BASE: u32 = 100;

/// Encodes a proposal with the proposer's request id, unchecked by auth at apply (the
/// member's own proposals).
pub fn encode_proposal(id: u64, proposal: &Proposal) -> Bytes {
    encode_stamped(id, proposal, None)
}

/// Encodes a proposal with the proposer's request id and the caller it was checked for.
pub fn encode_stamped(id: u64, proposal: &Proposal, stamp: Option<&AuthStamp>) -> Bytes {
    let request = match proposal {
        Proposal::Put(put) => internal_request::Request::Put(convert::put_to_pb(put)),
        Proposal::DeleteRange(delete) => {
            internal_request::Request::DeleteRange(convert::delete_to_pb(delete))
        }
        Proposal::Txn(txn) => internal_request::Request::Txn(convert::txn_to_pb(txn)),
        Proposal::Compact { revision, physical } => {
            internal_request::Request::Compaction(rpc::CompactionRequest {
                revision: *revision,
                physical: *physical,
            })
        }
        Proposal::LeaseGrant { id, ttl } => {
            internal_request::Request::LeaseGrant(rpc::LeaseGrantRequest { ttl: *ttl, id: *id })
        }
        Proposal::LeaseRevoke { id } => {
            internal_request::Request::LeaseRevoke(rpc::LeaseRevokeRequest { id: *id })
        }
        Proposal::LeaseCheckpoint(checkpoints) => {
            internal_request::Request::LeaseCheckpoint(rpc::LeaseCheckpointRequest {
                checkpoints: checkpoints
                    .iter()
                    .map(|(id, remaining)| rpc::LeaseCheckpoint {
                        id: *id,
                        remaining_ttl: *remaining,
                    })
                    .collect(),
            })
        }
        Proposal::Auth(change) => auth_to_pb(change),
        Proposal::Alarm { activate, alarm } => {
            let action = if *activate {
                rpc::alarm_request::AlarmAction::Activate
            } else {
                rpc::alarm_request::AlarmAction::Deactivate
            };
            internal_request::Request::Alarm(rpc::AlarmRequest {
                action: action.into(),
                member_id: alarm.member,
                alarm: alarm.kind.number(),
            })
        }
    };
    let message = internal::InternalRequest {
        version: PAYLOAD_VERSION,
        id,
        request: Some(request),
        auth: stamp.map(|stamp| internal::AuthStamp {
            user: stamp.user.clone(),
            revision: stamp.revision,
        }),
    };
    Bytes::from(message.encode_to_vec())
}

/// A permission in its wire form.
pub fn permission_to_pb(permission: &Permission) -> crate::pb::authpb::Permission {
    use crate::pb::authpb::permission::Type;
    let perm_type = match permission.perm_type {
        PermType::Read => Type::Read,
        PermType::Write => Type::Write,
        PermType::ReadWrite => Type::Readwrite,
    };
    crate::pb::authpb::Permission {
        perm_type: perm_type.into(),
        key: permission.key.clone(),
        range_end: permission.range_end.clone(),
    }
}

/// A permission from the wire or the log.
///
/// # Errors
/// An unknown permission type.
pub fn permission_from_pb(permission: crate::pb::authpb::Permission) -> Result<Permission, String> {
    use crate::pb::authpb::permission::Type;
    let perm_type = match Type::try_from(permission.perm_type) {
        Ok(Type::Read) => PermType::Read,
        Ok(Type::Write) => PermType::Write,
        Ok(Type::Readwrite) => PermType::ReadWrite,
        Err(_) => return Err(format!("unknown permission type {}", permission.perm_type)),
    };
    Ok(Permission {
        perm_type,
        key: permission.key,
        range_end: permission.range_end,
    })
}

fn hashed(hash: String) -> Option<PasswordHash> {
    (!hash.is_empty()).then_some(PasswordHash(hash))
}

fn auth_to_pb(change: &AuthChange) -> internal_request::Request {
    use internal_request::Request;
    match change {
        AuthChange::Enable => Request::AuthEnable(rpc::AuthEnableRequest {}),
        AuthChange::Disable => Request::AuthDisable(rpc::AuthDisableRequest {}),
        AuthChange::UserAdd { name, password } => Request::UserAdd(rpc::AuthUserAddRequest {
            name: name.clone(),
            password: String::new(),
            options: Some(crate::pb::authpb::UserAddOptions {
                no_password: password.is_none(),
            }),
            hashed_password: password.clone().map(|hash| hash.0).unwrap_or_default(),
        }),
        AuthChange::UserDelete { name } => {
            Request::UserDelete(rpc::AuthUserDeleteRequest { name: name.clone() })
        }
        AuthChange::UserChangePassword { name, password } => {
            Request::UserChangePassword(rpc::AuthUserChangePasswordRequest {
                name: name.clone(),
                password: String::new(),
                hashed_password: password.0.clone(),
            })
        }
        AuthChange::UserGrantRole { user, role } => {
            Request::UserGrantRole(rpc::AuthUserGrantRoleRequest {
                user: user.clone(),
                role: role.clone(),
            })
        }
        AuthChange::UserRevokeRole { user, role } => {
            Request::UserRevokeRole(rpc::AuthUserRevokeRoleRequest {
                name: user.clone(),
                role: role.clone(),
            })
        }
        AuthChange::RoleAdd { name } => {
            Request::RoleAdd(rpc::AuthRoleAddRequest { name: name.clone() })
        }
        AuthChange::RoleDelete { name } => {
            Request::RoleDelete(rpc::AuthRoleDeleteRequest { role: name.clone() })
        }
        AuthChange::RoleGrantPermission { role, permission } => {
            Request::RoleGrantPermission(rpc::AuthRoleGrantPermissionRequest {
                name: role.clone(),
                perm: Some(permission_to_pb(permission)),
            })
        }
        AuthChange::RoleRevokePermission {
            role,
            key,
            range_end,
        } => Request::RoleRevokePermission(rpc::AuthRoleRevokePermissionRequest {
            role: role.clone(),
            key: key.clone(),
            range_end: range_end.clone(),
        }),
    }
}

/// Decodes a proposal, returning its request id.
///
/// # Errors
/// [`ApplyError::Internal`] for bytes that are not a known payload.
pub fn decode_proposal(bytes: &[u8]) -> Result<(u64, Proposal), ApplyError> {
    decode_entry(bytes).map(|(id, proposal, _)| (id, proposal))
}

/// Decodes a proposal, returning its request id and the caller it was checked for.
///
/// # Errors
/// [`ApplyError::Internal`] for bytes that are not a known payload.
pub fn decode_entry(bytes: &[u8]) -> Result<(u64, Proposal, Option<AuthStamp>), ApplyError> {
    let message = internal::InternalRequest::decode(bytes)
        .map_err(|err| ApplyError::Internal(format!("undecodable raft payload: {err}")))?;
    if message.version != PAYLOAD_VERSION {
        return Err(ApplyError::Internal(format!(
            "unknown raft payload version {}",
            message.version
        )));
    }
    let proposal = match message.request {
        Some(internal_request::Request::Put(put)) => Proposal::Put(convert::put_from_pb(put)),
        Some(internal_request::Request::DeleteRange(delete)) => {
            Proposal::DeleteRange(convert::delete_from_pb(delete))
        }
        Some(internal_request::Request::Txn(txn)) => Proposal::Txn(
            convert::txn_from_pb(txn).map_err(|err| ApplyError::Internal(err.to_string()))?,
        ),
        Some(internal_request::Request::Compaction(compaction)) => Proposal::Compact {
            revision: compaction.revision,
            physical: compaction.physical,
        },
        Some(internal_request::Request::LeaseGrant(grant)) => Proposal::LeaseGrant {
            id: grant.id,
            ttl: grant.ttl,
        },
        Some(internal_request::Request::LeaseRevoke(revoke)) => {
            Proposal::LeaseRevoke { id: revoke.id }
        }
        Some(internal_request::Request::LeaseCheckpoint(checkpoint)) => Proposal::LeaseCheckpoint(
            checkpoint
                .checkpoints
                .into_iter()
                .map(|entry| (entry.id, entry.remaining_ttl))
                .collect(),
        ),
        Some(internal_request::Request::Alarm(request)) => decode_alarm(&request)?,
        Some(internal_request::Request::AuthEnable(_)) => Proposal::Auth(AuthChange::Enable),
        Some(internal_request::Request::AuthDisable(_)) => Proposal::Auth(AuthChange::Disable),
        Some(internal_request::Request::UserAdd(add)) => Proposal::Auth(AuthChange::UserAdd {
            name: add.name,
            password: hashed(add.hashed_password),
        }),
        Some(internal_request::Request::UserDelete(delete)) => {
            Proposal::Auth(AuthChange::UserDelete { name: delete.name })
        }
        Some(internal_request::Request::UserChangePassword(change)) => {
            Proposal::Auth(AuthChange::UserChangePassword {
                name: change.name,
                password: PasswordHash(change.hashed_password),
            })
        }
        Some(internal_request::Request::UserGrantRole(grant)) => {
            Proposal::Auth(AuthChange::UserGrantRole {
                user: grant.user,
                role: grant.role,
            })
        }
        Some(internal_request::Request::UserRevokeRole(revoke)) => {
            Proposal::Auth(AuthChange::UserRevokeRole {
                user: revoke.name,
                role: revoke.role,
            })
        }
        Some(internal_request::Request::RoleAdd(add)) => {
            Proposal::Auth(AuthChange::RoleAdd { name: add.name })
        }
        Some(internal_request::Request::RoleDelete(delete)) => {
            Proposal::Auth(AuthChange::RoleDelete { name: delete.role })
        }
        Some(internal_request::Request::RoleGrantPermission(grant)) => {
            let permission = grant
                .perm
                .ok_or_else(|| ApplyError::Internal("permission grant without a permission".into()))
                .and_then(|perm| permission_from_pb(perm).map_err(ApplyError::Internal))?;
            Proposal::Auth(AuthChange::RoleGrantPermission {
                role: grant.name,
                permission,
            })
        }
        Some(internal_request::Request::RoleRevokePermission(revoke)) => {
            Proposal::Auth(AuthChange::RoleRevokePermission {
                role: revoke.role,
                key: revoke.key,
                range_end: revoke.range_end,
            })
        }
        None => {
            return Err(ApplyError::Internal(
                "raft payload without a request".into(),
            ));
        }
    };
    let stamp = message.auth.map(|stamp| AuthStamp {
        user: stamp.user,
        revision: stamp.revision,
    });
    Ok((message.id, proposal, stamp))
}

/// An alarm change from the log. Only activate and deactivate of a known type are ever
/// proposed; anything else comes from a newer format and must not be skipped silently.
fn decode_alarm(request: &rpc::AlarmRequest) -> Result<Proposal, ApplyError> {
    use rpc::alarm_request::AlarmAction;
    let activate = match AlarmAction::try_from(request.action) {
        Ok(AlarmAction::Activate) => true,
        Ok(AlarmAction::Deactivate) => false,
        Ok(AlarmAction::Get) | Err(_) => {
            return Err(ApplyError::Internal(format!(
                "alarm entry with action {}",
                request.action
            )));
        }
    };
    let kind = AlarmType::from_number(request.alarm)
        .ok_or_else(|| ApplyError::Internal(format!("alarm entry with type {}", request.alarm)))?;
    Ok(Proposal::Alarm {
        activate,
        alarm: Alarm {
            member: request.member_id,
            kind,
        },
    })
}

fn alarm_to_pb(alarm: Alarm) -> rpc::AlarmMember {
    rpc::AlarmMember {
        member_id: alarm.member,
        alarm: alarm.kind.number(),
    }
}

fn header(revision: Revision) -> Option<rpc::ResponseHeader> {
    Some(rpc::ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// Encodes an apply result.
pub fn encode_outcome(outcome: Result<ApplyOutcome, ApplyError>) -> Bytes {
    let response = match outcome {
        Ok(ApplyOutcome { revision, result }) => match result {
            Applied::Put(put) => {
                internal_response::Response::Put(convert::put_response_to_pb(put, header(revision)))
            }
            Applied::DeleteRange(delete) => internal_response::Response::DeleteRange(
                convert::delete_response_to_pb(delete, header(revision)),
            ),
            Applied::Txn(txn) => internal_response::Response::Txn(convert::txn_response_to_pb(
                txn,
                header(revision),
                revision,
            )),
            Applied::Compact => internal_response::Response::Compaction(rpc::CompactionResponse {
                header: header(revision),
            }),
            Applied::LeaseGrant { id, ttl } => {
                internal_response::Response::LeaseGrant(rpc::LeaseGrantResponse {
                    header: header(revision),
                    id,
                    ttl,
                    error: String::new(),
                })
            }
            Applied::LeaseRevoke => {
                internal_response::Response::LeaseRevoke(rpc::LeaseRevokeResponse {
                    header: header(revision),
                })
            }
            Applied::LeaseCheckpoint => {
                internal_response::Response::LeaseCheckpoint(rpc::LeaseCheckpointResponse {
                    header: header(revision),
                })
            }
            Applied::Alarm(alarms) => internal_response::Response::Alarm(rpc::AlarmResponse {
                header: header(revision),
                alarms: alarms.into_iter().map(alarm_to_pb).collect(),
            }),
            Applied::Auth => internal_response::Response::Auth(rpc::AuthEnableResponse {
                header: header(revision),
            }),
        },
        Err(error) => {
            let code = match &error {
                ApplyError::Compacted => ERROR_COMPACTED,
                ApplyError::FutureRevision => ERROR_FUTURE_REVISION,
                ApplyError::LeaseNotFound => ERROR_LEASE_NOT_FOUND,
                ApplyError::KeyNotFound => ERROR_KEY_NOT_FOUND,
                ApplyError::LeaseExists => ERROR_LEASE_EXISTS,
                ApplyError::NoSpace => ERROR_NO_SPACE,
                ApplyError::Corrupt => ERROR_CORRUPT,
                ApplyError::Auth(auth) => ERROR_AUTH_BASE + auth.code(),
                ApplyError::Internal(_) => ERROR_INTERNAL,
            };
            internal_response::Response::Error(internal::InternalError {
                code,
                message: error.to_string(),
            })
        }
    };
    Bytes::from(
        internal::InternalResponse {
            response: Some(response),
        }
        .encode_to_vec(),
    )
}

/// Decodes an apply result.
///
/// # Errors
/// The [`ApplyError`] the apply produced, or [`ApplyError::Internal`] for undecodable bytes.
pub fn decode_outcome(bytes: &[u8]) -> Result<ApplyOutcome, ApplyError> {
    let message = internal::InternalResponse::decode(bytes)
        .map_err(|err| ApplyError::Internal(format!("undecodable apply result: {err}")))?;
    let revision_of =
        |header: &Option<rpc::ResponseHeader>| header.as_ref().map_or(0, |header| header.revision);
    let (revision, result) = match message.response {
        Some(internal_response::Response::Put(put)) => (
            revision_of(&put.header),
            Applied::Put(convert::put_response_from_pb(put)),
        ),
        Some(internal_response::Response::DeleteRange(delete)) => (
            revision_of(&delete.header),
            Applied::DeleteRange(convert::delete_response_from_pb(delete)),
        ),
        Some(internal_response::Response::Txn(txn)) => (
            revision_of(&txn.header),
            Applied::Txn(convert::txn_response_from_pb(txn)),
        ),
        Some(internal_response::Response::Compaction(compaction)) => {
            (revision_of(&compaction.header), Applied::Compact)
        }
        Some(internal_response::Response::LeaseGrant(grant)) => (
            revision_of(&grant.header),
            Applied::LeaseGrant {
                id: grant.id,
                ttl: grant.ttl,
            },
        ),
        Some(internal_response::Response::LeaseRevoke(revoke)) => {
            (revision_of(&revoke.header), Applied::LeaseRevoke)
        }
        Some(internal_response::Response::LeaseCheckpoint(checkpoint)) => {
            (revision_of(&checkpoint.header), Applied::LeaseCheckpoint)
        }
        Some(internal_response::Response::Alarm(response)) => {
            let alarms = response
                .alarms
                .iter()
                .map(|member| {
                    AlarmType::from_number(member.alarm)
                        .map(|kind| Alarm {
                            member: member.member_id,
                            kind,
                        })
                        .ok_or_else(|| {
                            ApplyError::Internal(format!("alarm result with type {}", member.alarm))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            (revision_of(&response.header), Applied::Alarm(alarms))
        }
        Some(internal_response::Response::Auth(response)) => {
            (revision_of(&response.header), Applied::Auth)
        }
        Some(internal_response::Response::Error(error)) => {
            return Err(match error.code {
                ERROR_COMPACTED => ApplyError::Compacted,
                ERROR_FUTURE_REVISION => ApplyError::FutureRevision,
                ERROR_LEASE_NOT_FOUND => ApplyError::LeaseNotFound,
                ERROR_KEY_NOT_FOUND => ApplyError::KeyNotFound,
                ERROR_LEASE_EXISTS => ApplyError::LeaseExists,
                ERROR_NO_SPACE => ApplyError::NoSpace,
                ERROR_CORRUPT => ApplyError::Corrupt,
                code => match code
                    .checked_sub(ERROR_AUTH_BASE)
                    .and_then(AuthError::from_code)
                {
                    Some(auth) => ApplyError::Auth(auth),
                    None => ApplyError::Internal(error.message),
                },
            });
        }
        None => return Err(ApplyError::Internal("empty apply result".into())),
    };
    Ok(ApplyOutcome { revision, result })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_proposal_has_stable_bytes() {
        let proposal = Proposal::Put(PutRequest {
            key: "k".into(),
            value: "v".into(),
            ..Default::default()
        });
        let bytes = encode_proposal(7, &proposal);
        // version=1 (field 1), id=7 (field 2), put (field 10) = {key "k", value "v"}.
        assert_eq!(
            bytes.as_ref(),
            &[
                0x08, 0x01, 0x10, 0x07, 0x52, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v'
            ]
        );
        assert_eq!(decode_proposal(&bytes).unwrap(), (7, proposal));
    }

    #[test]
    fn alarm_proposal_has_stable_bytes() {
        let proposal = Proposal::Alarm {
            activate: true,
            alarm: Alarm {
                member: 5,
                kind: AlarmType::NoSpace,
            },
        };
        let bytes = encode_proposal(7, &proposal);
        // version=1, id=7, alarm (field 17, two-byte tag) = {action ACTIVATE, member 5, NOSPACE}.
        assert_eq!(
            bytes.as_ref(),
            &[
                0x08, 0x01, 0x10, 0x07, 0x8a, 0x01, 0x06, 0x08, 0x01, 0x10, 0x05, 0x18, 0x01
            ]
        );
        assert_eq!(decode_proposal(&bytes).unwrap(), (7, proposal));
    }

    #[test]
    fn alarm_entries_other_than_a_change_of_a_known_type_are_not_skipped() {
        for (action, alarm) in [(0, 1), (1, 0), (2, 7), (9, 1)] {
            let message = internal::InternalRequest {
                version: PAYLOAD_VERSION,
                id: 1,
                request: Some(internal_request::Request::Alarm(rpc::AlarmRequest {
                    action,
                    member_id: 1,
                    alarm,
                })),
                auth: None,
            };
            assert!(
                matches!(
                    decode_proposal(&message.encode_to_vec()),
                    Err(ApplyError::Internal(_))
                ),
                "action {action} type {alarm}"
            );
        }
    }

    #[test]
    fn alarm_results_round_trip() {
        let alarms = vec![
            Alarm {
                member: 1,
                kind: AlarmType::NoSpace,
            },
            Alarm {
                member: 2,
                kind: AlarmType::Corrupt,
            },
        ];
        let outcome = ApplyOutcome {
            revision: 4,
            result: Applied::Alarm(alarms),
        };
        assert_eq!(
            decode_outcome(&encode_outcome(Ok(outcome.clone()))),
            Ok(outcome)
        );
    }

    #[test]
    fn space_cost_charges_writes_that_need_space_only() {
        let put = |key: &str, value: &str| PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..PutRequest::default()
        };
        // key "k" and value "vv": tag, length and bytes of each field.
        let small = QUOTA_KV_OVERHEAD_BYTES + 3 + 4;
        assert_eq!(Proposal::Put(put("k", "vv")).space_cost(), small);
        assert_eq!(
            Proposal::LeaseGrant { id: 1, ttl: 5 }.space_cost(),
            QUOTA_LEASE_OVERHEAD_BYTES
        );
        let delete = RequestOp::DeleteRange(DeleteRangeRequest {
            range: crate::types::KeyRange::single("k"),
            prev_kv: false,
        });
        let deletes_only = TxnRequest {
            compare: Vec::new(),
            success: vec![delete.clone()],
            failure: vec![delete.clone()],
        };
        assert_eq!(Proposal::Txn(deletes_only.clone()).space_cost(), 0);
        assert_eq!(
            Proposal::DeleteRange(DeleteRangeRequest {
                range: crate::types::KeyRange::single("k"),
                prev_kv: false,
            })
            .space_cost(),
            0
        );
        assert_eq!(
            Proposal::Compact {
                revision: 1,
                physical: true
            }
            .space_cost(),
            0
        );
        assert_eq!(Proposal::LeaseRevoke { id: 1 }.space_cost(), 0);
        // The dearer branch counts, and a put in a nested txn counts.
        let two_puts = TxnRequest {
            compare: Vec::new(),
            success: vec![
                RequestOp::Put(put("k", "vv")),
                RequestOp::Put(put("k", "vv")),
            ],
            failure: vec![RequestOp::Put(put("k", "vv"))],
        };
        assert_eq!(Proposal::Txn(two_puts.clone()).space_cost(), 2 * small);
        let nested = TxnRequest {
            compare: Vec::new(),
            success: vec![delete],
            failure: vec![RequestOp::Txn(two_puts)],
        };
        assert_eq!(Proposal::Txn(nested).space_cost(), 2 * small);
    }

    #[test]
    fn unknown_payload_version_is_refused() {
        let message = internal::InternalRequest {
            version: 99,
            id: 1,
            request: None,
            auth: None,
        };
        assert!(matches!(
            decode_proposal(&message.encode_to_vec()),
            Err(ApplyError::Internal(_))
        ));
    }

    #[test]
    fn errors_round_trip() {
        for error in [
            ApplyError::Compacted,
            ApplyError::FutureRevision,
            ApplyError::LeaseNotFound,
            ApplyError::KeyNotFound,
            ApplyError::LeaseExists,
            ApplyError::NoSpace,
            ApplyError::Corrupt,
            ApplyError::Auth(AuthError::AuthOldRevision),
            ApplyError::Auth(AuthError::PermissionDenied),
        ] {
            assert_eq!(
                decode_outcome(&encode_outcome(Err(error.clone()))),
                Err(error)
            );
        }
    }
}
