//! The workload's etcd client: one request per operation, never retried, always with a deadline,
//! and every result sorted into the three outcome classes of the history.
//!
//! Owns the translation between the per-key etcd vocabulary ([`crate::model::etcd`]) and the
//! gRPC messages, and the outcome rules (jepsen.md §1.1, §6.1):
//! - `ok`: a response arrived; it is the operation's result. A compare-and-set whose compare
//!   failed is `ok` with `succeeded: false`.
//! - `fail`, the operation certainly did not take effect: a definite refusal (`InvalidArgument`,
//!   `FailedPrecondition`, `NotFound`, `OutOfRange`, `AlreadyExists`, `PermissionDenied`,
//!   `Unauthenticated`, `ResourceExhausted`), or a connection refused before anything was sent.
//!   Any error of a read is `fail` too: a read changes nothing, so dropping it loses no evidence.
//! - `info`, the outcome is unknown: the deadline passed, `Unavailable` after the request may have
//!   left (including "leader changed" and a reset mid-call), `Unknown`, `Internal`, `Cancelled`,
//!   anything else. The caller must retire the process.
//!
//! The list-append workload's two requests live here too ([`Client::read_keys`],
//! [`Client::write_if_unchanged`]), so that gRPC types stay in this module; the workload turns
//! their results into its own vocabulary ([`crate::checker::elle`]).
//!
//! Must not: retry (a retried write that had applied would be applied twice, jepsen.md §1.4),
//! record anything (the workload does), or pick nodes (each client is pinned to one).

pub mod watch;

use std::time::Duration;

use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::model::etcd::{Compare, EtcdInput, EtcdOp, EtcdOutput, KeyValue};
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::response_op::Response;
use crate::pb::etcdserverpb::{
    Compare as PbCompare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::pb::mvccpb;

/// Deadline of a connection attempt; shorter than any request deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How one operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It happened, with this result.
    Ok(EtcdOutput),
    /// It certainly did not happen; why.
    Fail(String),
    /// Unknown whether it happened; why.
    Info(String),
}

/// A client of one member's KV service.
#[derive(Clone)]
pub struct Client {
    kv: KvClient<Channel>,
    timeout: Duration,
}

impl Client {
    /// A client of the member at `endpoint` whose every request fails after `timeout`. It
    /// connects on first use, so it can be made for a member that is down.
    ///
    /// # Errors
    /// When `endpoint` is not a URL.
    pub fn new(endpoint: &str, timeout: Duration) -> anyhow::Result<Client> {
        let channel = Endpoint::from_shared(endpoint.to_owned())?
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .connect_lazy();
        Ok(Client {
            kv: KvClient::new(channel),
            timeout,
        })
    }

    /// Sends `input` once and classifies what came back.
    pub async fn invoke(&mut self, input: &EtcdInput) -> Outcome {
        let read_only = matches!(input.op, EtcdOp::Get);
        let key = input.key.as_bytes().to_vec();
        let call = async {
            match &input.op {
                EtcdOp::Get => {
                    let request = RangeRequest {
                        key,
                        ..RangeRequest::default()
                    };
                    let response = self.kv.range(request).await?.into_inner();
                    Ok(EtcdOutput::Get {
                        revision: response.header.map_or(0, |header| header.revision),
                        kv: response.kvs.first().map(key_value),
                    })
                }
                EtcdOp::Put { value, prev_kv } => {
                    let request = PutRequest {
                        key,
                        value: value.as_bytes().to_vec(),
                        prev_kv: *prev_kv,
                        ..PutRequest::default()
                    };
                    let response = self.kv.put(request).await?.into_inner();
                    Ok(EtcdOutput::Put {
                        revision: response.header.map_or(0, |header| header.revision),
                        prev_kv: response.prev_kv.as_ref().map(key_value),
                    })
                }
                EtcdOp::Delete => {
                    let request = DeleteRangeRequest {
                        key,
                        ..DeleteRangeRequest::default()
                    };
                    let response = self.kv.delete_range(request).await?.into_inner();
                    Ok(EtcdOutput::Delete {
                        revision: response.header.map_or(0, |header| header.revision),
                        deleted: response.deleted > 0,
                    })
                }
                EtcdOp::Cas { compare, value } => {
                    let request = cas_request(key, compare, value);
                    let response = self.kv.txn(request).await?.into_inner();
                    Ok(EtcdOutput::Cas {
                        revision: response.header.map_or(0, |header| header.revision),
                        succeeded: response.succeeded,
                    })
                }
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(output)) => Outcome::Ok(output),
            Ok(Err(status)) => classify(&status, read_only),
            Err(_) if read_only => Outcome::Fail("timeout".to_owned()),
            Err(_) => Outcome::Info("timeout".to_owned()),
        }
    }
}

/// A request that gave no result: certainly not applied (`fail`), or unknown (`info`); and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoResult {
    /// It certainly did not take effect.
    Fail(String),
    /// It may or may not have taken effect.
    Info(String),
}

/// One key as a read saw it; the default is an absent key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeenKey {
    /// Its value, or `None` when absent.
    pub value: Option<String>,
    /// Its `mod_revision`; 0 when absent, which is what a compare on an absent key sees.
    pub mod_revision: i64,
}

impl Client {
    /// Reads `keys` in one linearizable Txn of Ranges (no compares), so that all of them are
    /// seen at one revision. Returns that revision and each key, in order.
    ///
    /// # Errors
    /// Every error of a read is [`NoResult::Fail`]: it changed nothing.
    pub async fn read_keys(&mut self, keys: &[String]) -> Result<(i64, Vec<SeenKey>), NoResult> {
        let request = TxnRequest {
            compare: Vec::new(),
            success: keys
                .iter()
                .map(|key| RequestOp {
                    request: Some(Request::RequestRange(RangeRequest {
                        key: key.as_bytes().to_vec(),
                        ..RangeRequest::default()
                    })),
                })
                .collect(),
            failure: Vec::new(),
        };
        let response = match tokio::time::timeout(self.timeout, self.kv.txn(request)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(no_result(&status, true)),
            Err(_) => return Err(NoResult::Fail("timeout".to_owned())),
        };
        if response.responses.len() != keys.len() {
            return Err(NoResult::Fail(format!(
                "asked for {} ranges, got {} responses",
                keys.len(),
                response.responses.len()
            )));
        }
        let seen = response
            .responses
            .iter()
            .map(|op| match &op.response {
                Some(Response::ResponseRange(range)) => {
                    range.kvs.first().map_or(SeenKey::default(), |kv| SeenKey {
                        value: Some(String::from_utf8_lossy(&kv.value).into_owned()),
                        mod_revision: kv.mod_revision,
                    })
                }
                // Not what was asked; the caller sees no value, which a checker will flag.
                _ => SeenKey::default(),
            })
            .collect();
        Ok((response.header.map_or(0, |header| header.revision), seen))
    }

    /// One Txn: if every key of `guards` still has the given `mod_revision` (0: still absent),
    /// put every `(key, value)` of `puts`; no else branch. Returns the commit revision, or
    /// `None` when a guard did not hold (nothing was written).
    ///
    /// # Errors
    /// As [`classify`] sorts them for a write: definite refusals are [`NoResult::Fail`],
    /// everything else (timeouts included) [`NoResult::Info`].
    pub async fn write_if_unchanged(
        &mut self,
        guards: &[(String, i64)],
        puts: &[(String, String)],
    ) -> Result<Option<i64>, NoResult> {
        let request = TxnRequest {
            compare: guards
                .iter()
                .map(|(key, revision)| PbCompare {
                    result: CompareResult::Equal.into(),
                    target: CompareTarget::Mod.into(),
                    key: key.as_bytes().to_vec(),
                    target_union: Some(TargetUnion::ModRevision(*revision)),
                    ..PbCompare::default()
                })
                .collect(),
            success: puts
                .iter()
                .map(|(key, value)| RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key: key.as_bytes().to_vec(),
                        value: value.as_bytes().to_vec(),
                        ..PutRequest::default()
                    })),
                })
                .collect(),
            failure: Vec::new(),
        };
        match tokio::time::timeout(self.timeout, self.kv.txn(request)).await {
            Ok(Ok(response)) => {
                let response = response.into_inner();
                Ok(response
                    .succeeded
                    .then(|| response.header.map_or(0, |header| header.revision)))
            }
            Ok(Err(status)) => Err(no_result(&status, false)),
            Err(_) => Err(NoResult::Info("timeout".to_owned())),
        }
    }
}

fn no_result(status: &tonic::Status, read_only: bool) -> NoResult {
    match classify(status, read_only) {
        Outcome::Fail(why) => NoResult::Fail(why),
        Outcome::Info(why) => NoResult::Info(why),
        Outcome::Ok(_) => unreachable!("an error status is never classified ok"),
    }
}

/// A Txn: if the compare holds, put `value` on `key`; no else branch.
fn cas_request(key: Vec<u8>, compare: &Compare, value: &str) -> TxnRequest {
    let (target, union) = match compare {
        Compare::Value(expected) => (
            CompareTarget::Value,
            TargetUnion::Value(expected.as_bytes().to_vec()),
        ),
        Compare::Version(version) => (CompareTarget::Version, TargetUnion::Version(*version)),
        Compare::ModRevision(revision) => (CompareTarget::Mod, TargetUnion::ModRevision(*revision)),
    };
    TxnRequest {
        compare: vec![PbCompare {
            result: CompareResult::Equal.into(),
            target: target.into(),
            key: key.clone(),
            target_union: Some(union),
            ..PbCompare::default()
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key,
                value: value.as_bytes().to_vec(),
                ..PutRequest::default()
            })),
        }],
        failure: Vec::new(),
    }
}

fn key_value(kv: &mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        value: String::from_utf8_lossy(&kv.value).into_owned(),
        mod_revision: kv.mod_revision,
        version: kv.version,
        create_revision: kv.create_revision,
    }
}

/// The outcome of an operation that got `status` back.
#[must_use]
pub fn classify(status: &tonic::Status, read_only: bool) -> Outcome {
    let why = format!("{:?}: {}", status.code(), status.message());
    if read_only {
        return Outcome::Fail(why);
    }
    match status.code() {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::OutOfRange
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::ResourceExhausted => Outcome::Fail(why),
        Code::Unavailable if refused_before_send(status) => Outcome::Fail(why),
        _ => Outcome::Info(why),
    }
}

/// Whether the error says the connection was refused, so that no byte of the request left.
fn refused_before_send(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    // Error chains are a handful of links deep; the bound only guards against a cycle.
    for _ in 0..16 {
        let Some(error) = source else { break };
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = error.source();
    }
    status.message().contains("Connection refused")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_always_fail_and_writes_are_unknown_unless_definite() {
        let unavailable = tonic::Status::unavailable("etcdserver: leader changed");
        assert!(matches!(classify(&unavailable, true), Outcome::Fail(_)));
        assert!(matches!(classify(&unavailable, false), Outcome::Info(_)));
        let refused =
            tonic::Status::unavailable("tcp connect error: Connection refused (os error 111)");
        assert!(matches!(classify(&refused, false), Outcome::Fail(_)));
        let compacted =
            tonic::Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        assert!(matches!(classify(&compacted, false), Outcome::Fail(_)));
        let unknown = tonic::Status::unknown("something");
        assert!(matches!(classify(&unknown, false), Outcome::Info(_)));
        let deadline = tonic::Status::deadline_exceeded("late");
        assert!(matches!(classify(&deadline, false), Outcome::Info(_)));
    }
}
