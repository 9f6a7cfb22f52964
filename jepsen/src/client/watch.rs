//! The watch workload's wire side: its writes (Put, Delete, a multi-key Txn, Compact) and its watch
//! streams, translated between etcd gRPC and the watch checker's vocabulary
//! ([`crate::checker::watch`]).
//!
//! Owns the requests the workload sends and the conversion of every response. Writes follow the
//! outcome rules of [`super::classify`]; a watch stream is one create request on one stream, with
//! progress requests on demand.
//!
//! Must not: retry (a resuming watcher decides where to resume, the workload does), record
//! anything, or pick members.

use std::time::Duration;

use tonic::codec::Streaming;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::{CONNECT_TIMEOUT, Outcome, classify};
use crate::checker::watch::{
    EventKind, PrevKv, Revision, TxnOp, WatchEvent, WriteInput, WriteOutput,
};
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::request_op::Request;
use crate::pb::etcdserverpb::watch_client::WatchClient;
use crate::pb::etcdserverpb::watch_create_request::FilterType;
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest, WatchResponse,
};
use crate::pb::mvccpb;

/// Requests a stream's sender holds before the workload must wait: a create and a few progress
/// requests are all a segment ever sends.
const STREAM_REQUESTS_QUEUED_MAX: usize = 8;

/// How a write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResult {
    /// It happened, with this result.
    Ok(WriteOutput),
    /// It certainly did not happen; why.
    Fail(String),
    /// Unknown whether it happened; why.
    Info(String),
}

/// A client of one member's KV service for the watch workload's writes.
#[derive(Clone)]
pub struct WriteClient {
    kv: KvClient<Channel>,
    timeout: Duration,
}

impl WriteClient {
    /// A client of the member at `endpoint` whose every request fails after `timeout`; it
    /// connects on first use.
    ///
    /// # Errors
    /// When `endpoint` is not a URL.
    pub fn new(endpoint: &str, timeout: Duration) -> anyhow::Result<WriteClient> {
        let channel = Endpoint::from_shared(endpoint.to_owned())?
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .connect_lazy();
        Ok(WriteClient {
            kv: KvClient::new(channel),
            timeout,
        })
    }

    /// Sends `input` once and classifies what came back.
    pub async fn invoke(&mut self, input: &WriteInput) -> WriteResult {
        let call = async {
            match input {
                WriteInput::Put { key, value } => {
                    let response = self.kv.put(put_request(key, value)).await?.into_inner();
                    Ok(WriteOutput::Put {
                        revision: response.header.map_or(0, |header| header.revision),
                    })
                }
                WriteInput::Delete { key } => {
                    let response = self
                        .kv
                        .delete_range(delete_request(key))
                        .await?
                        .into_inner();
                    Ok(WriteOutput::Delete {
                        revision: response.header.map_or(0, |header| header.revision),
                        deleted: response.deleted,
                    })
                }
                WriteInput::Compact { revision } => {
                    let request = CompactionRequest {
                        revision: *revision,
                        physical: false,
                    };
                    let response = self.kv.compact(request).await?.into_inner();
                    Ok(WriteOutput::Compact {
                        revision: response.header.map_or(0, |header| header.revision),
                    })
                }
                WriteInput::Txn { ops } => {
                    let request = TxnRequest {
                        compare: Vec::new(),
                        success: ops.iter().map(txn_op).collect(),
                        failure: Vec::new(),
                    };
                    let response = self.kv.txn(request).await?.into_inner();
                    Ok(WriteOutput::Txn {
                        revision: response.header.map_or(0, |header| header.revision),
                    })
                }
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(output)) => WriteResult::Ok(output),
            Ok(Err(status)) => match classify(&status, false) {
                Outcome::Fail(why) => WriteResult::Fail(why),
                Outcome::Info(why) => WriteResult::Info(why),
                // classify never answers ok; an error of unknown meaning is unknown.
                Outcome::Ok(_) => WriteResult::Info(status.message().to_owned()),
            },
            Err(_) => WriteResult::Info("timeout".to_owned()),
        }
    }
}

fn put_request(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..PutRequest::default()
    }
}

fn delete_request(key: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.as_bytes().to_vec(),
        ..DeleteRangeRequest::default()
    }
}

fn txn_op(op: &TxnOp) -> RequestOp {
    let request = match op {
        TxnOp::Put { key, value } => Request::RequestPut(put_request(key, value)),
        TxnOp::Delete { key } => Request::RequestDeleteRange(delete_request(key)),
    };
    RequestOp {
        request: Some(request),
    }
}

/// What a watch stream asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "the flags of etcd's create request, one each"
)]
pub struct WatchSpec {
    /// Every key with this prefix.
    pub prefix: String,
    /// The first revision wanted (never 0 in this workload).
    pub start_revision: Revision,
    /// Leave out puts.
    pub no_put: bool,
    /// Leave out deletes.
    pub no_delete: bool,
    /// Include each event's previous version.
    pub prev_kv: bool,
    /// Ask for the member's periodic progress notifications.
    pub progress_notify: bool,
}

/// One watch response, converted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchReply {
    /// The header's revision.
    pub header_revision: Revision,
    /// The watch id named.
    pub watch_id: i64,
    /// It answers the create.
    pub created: bool,
    /// The watcher is gone.
    pub canceled: bool,
    /// Non-zero when cancelled for compaction.
    pub compact_revision: Revision,
    /// Why it was cancelled.
    pub cancel_reason: String,
    /// More parts follow.
    pub fragment: bool,
    /// The events.
    pub events: Vec<WatchEvent>,
}

/// One open watch stream holding one watcher. Dropping it closes the stream.
pub struct WatchStream {
    requests: tokio::sync::mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

impl WatchStream {
    /// Opens a stream to the member at `endpoint` and sends the create request; waits at most
    /// `timeout` for the stream to be accepted (not for the created reply, which comes through
    /// [`WatchStream::next`]).
    ///
    /// # Errors
    /// When the member cannot be reached or refuses the stream; the text says why.
    pub async fn open(
        endpoint: &str,
        spec: &WatchSpec,
        timeout: Duration,
    ) -> Result<WatchStream, String> {
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|error| error.to_string())?
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .connect_lazy();
        let (requests, queued) = tokio::sync::mpsc::channel(STREAM_REQUESTS_QUEUED_MAX);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create_request(spec))),
        };
        requests
            .try_send(create)
            .map_err(|error| error.to_string())?;
        let mut client = WatchClient::new(channel);
        let opened = tokio::time::timeout(timeout, client.watch(ReceiverStream::new(queued))).await;
        match opened {
            Ok(Ok(response)) => Ok(WatchStream {
                requests,
                responses: response.into_inner(),
            }),
            Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
            Err(_) => Err("timeout opening the stream".to_owned()),
        }
    }

    /// The next response; `Ok(None)` when the member ended the stream.
    ///
    /// # Errors
    /// When the stream broke; the text says why.
    pub async fn next(&mut self) -> Result<Option<WatchReply>, String> {
        match self.responses.message().await {
            Ok(Some(response)) => Ok(Some(reply(response))),
            Ok(None) => Ok(None),
            Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
        }
    }

    /// Asks for a progress report; false when the request could not be queued (the stream is
    /// gone, or earlier requests are still unsent), which a later attempt may fix.
    #[must_use]
    pub fn request_progress(&self) -> bool {
        self.requests
            .try_send(WatchRequest {
                request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
            })
            .is_ok()
    }
}

fn create_request(spec: &WatchSpec) -> WatchCreateRequest {
    let mut filters = Vec::new();
    if spec.no_put {
        filters.push(FilterType::Noput.into());
    }
    if spec.no_delete {
        filters.push(FilterType::Nodelete.into());
    }
    WatchCreateRequest {
        key: spec.prefix.as_bytes().to_vec(),
        range_end: prefix_end(spec.prefix.as_bytes()),
        start_revision: spec.start_revision,
        progress_notify: spec.progress_notify,
        filters,
        prev_kv: spec.prev_kv,
        ..WatchCreateRequest::default()
    }
}

/// The range end that makes a range of every key starting with `prefix`: the prefix with its
/// last byte below 0xff incremented and what follows dropped.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from the prefix on.
    vec![0]
}

fn reply(response: WatchResponse) -> WatchReply {
    WatchReply {
        header_revision: response.header.map_or(0, |header| header.revision),
        watch_id: response.watch_id,
        created: response.created,
        canceled: response.canceled,
        compact_revision: response.compact_revision,
        cancel_reason: response.cancel_reason,
        fragment: response.fragment,
        events: response.events.iter().map(event).collect(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn event(event: &mvccpb::Event) -> WatchEvent {
    let kind = if event.r#type == i32::from(mvccpb::event::EventType::Delete) {
        EventKind::Delete
    } else {
        EventKind::Put
    };
    let kv = event.kv.clone().unwrap_or_default();
    WatchEvent {
        kind,
        key: text(&kv.key),
        value: text(&kv.value),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        prev_kv: event.prev_kv.as_ref().map(|prev| PrevKv {
            value: text(&prev.value),
            create_revision: prev.create_revision,
            mod_revision: prev.mod_revision,
            version: prev.version,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_covers_exactly_the_prefix() {
        assert_eq!(prefix_end(b"watch/"), b"watch0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
