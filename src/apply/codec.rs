//! The Raft entry payload and apply result formats: `mnemo.internal.InternalRequest` and
//! `InternalResponse` (proto/internal/raft.proto).
//!
//! These bytes are an on-disk format: they sit in the write-ahead log and are re-applied after
//! a restart, possibly by a newer binary. Field numbers are never reused and every payload
//! carries [`PAYLOAD_VERSION`]; a golden-bytes test pins the encoding.

use bytes::Bytes;
use prost::Message;

use crate::convert;
use crate::pb::etcdserverpb as rpc;
use crate::pb::internal::{self, internal_request, internal_response};
use crate::types::{
    DeleteRangeRequest, DeleteRangeResponse, LeaseId, PutRequest, PutResponse, Revision,
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

/// Encodes a proposal with the proposer's request id.
pub fn encode_proposal(id: u64, proposal: &Proposal) -> Bytes {
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
    };
    let message = internal::InternalRequest {
        version: PAYLOAD_VERSION,
        id,
        request: Some(request),
    };
    Bytes::from(message.encode_to_vec())
}

/// Decodes a proposal, returning its request id.
///
/// # Errors
/// [`ApplyError::Internal`] for bytes that are not a known payload.
pub fn decode_proposal(bytes: &[u8]) -> Result<(u64, Proposal), ApplyError> {
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
        Some(other @ internal_request::Request::Alarm(_)) => {
            return Err(ApplyError::Internal(format!(
                "request not supported by this member: {other:?}"
            )));
        }
        None => {
            return Err(ApplyError::Internal(
                "raft payload without a request".into(),
            ));
        }
    };
    Ok((message.id, proposal))
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
        },
        Err(error) => {
            let code = match &error {
                ApplyError::Compacted => ERROR_COMPACTED,
                ApplyError::FutureRevision => ERROR_FUTURE_REVISION,
                ApplyError::LeaseNotFound => ERROR_LEASE_NOT_FOUND,
                ApplyError::KeyNotFound => ERROR_KEY_NOT_FOUND,
                ApplyError::LeaseExists => ERROR_LEASE_EXISTS,
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
        Some(internal_response::Response::Error(error)) => {
            return Err(match error.code {
                ERROR_COMPACTED => ApplyError::Compacted,
                ERROR_FUTURE_REVISION => ApplyError::FutureRevision,
                ERROR_LEASE_NOT_FOUND => ApplyError::LeaseNotFound,
                ERROR_KEY_NOT_FOUND => ApplyError::KeyNotFound,
                ERROR_LEASE_EXISTS => ApplyError::LeaseExists,
                _ => ApplyError::Internal(error.message),
            });
        }
        Some(other) => {
            return Err(ApplyError::Internal(format!(
                "unexpected apply result {other:?}"
            )));
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
    fn unknown_payload_version_is_refused() {
        let message = internal::InternalRequest {
            version: 99,
            id: 1,
            request: None,
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
        ] {
            assert_eq!(
                decode_outcome(&encode_outcome(Err(error.clone()))),
                Err(error)
            );
        }
    }
}
