//! Conversions between the etcd protobuf messages and the domain types, in both directions.
//!
//! This is the one place that knows both shapes; `server::grpc`, `client::grpc` and the apply
//! codec call it so that no conversion is written twice. Inbound conversions are total where
//! etcd is lenient (an unknown enum value reads as the default) and fail with
//! [`ConvertError`] where the domain cannot express the message (an empty `RequestOp`).
//! This module must not validate business rules (that is `server::validate`) or touch state.

use crate::pb::etcdserverpb as rpc;
use crate::pb::mvccpb;
use crate::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventType, KeyRange, KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseOp, Revision, SortOrder, SortTarget, TxnRequest, TxnResponse,
};

/// A message the domain types cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// A transaction operation with no request set.
    #[error("transaction operation has no request")]
    EmptyRequestOp,
}

/// Converts a key-value to its wire form.
pub fn kv_to_pb(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// Converts a key-value from its wire form.
pub fn kv_from_pb(kv: mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// Converts an event to its wire form.
pub fn event_to_pb(event: Event) -> mvccpb::Event {
    let kind = match event.kind {
        EventType::Put => mvccpb::event::EventType::Put,
        EventType::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(kv_to_pb(event.kv)),
        prev_kv: event.prev_kv.map(kv_to_pb),
    }
}

/// Converts an event from its wire form. An unknown event type reads as a put.
pub fn event_from_pb(event: mvccpb::Event) -> Event {
    let kind = match mvccpb::event::EventType::try_from(event.r#type) {
        Ok(mvccpb::event::EventType::Delete) => EventType::Delete,
        _ => EventType::Put,
    };
    Event {
        kind,
        kv: kv_from_pb(event.kv.unwrap_or_default()),
        prev_kv: event.prev_kv.map(kv_from_pb),
    }
}

/// Converts a watch create request to its domain form. Unknown filter values are ignored,
/// as etcd ignores them.
pub fn watch_create_from_pb(request: rpc::WatchCreateRequest) -> crate::watch::CreateRequest {
    use rpc::watch_create_request::FilterType;
    let has = |filter: FilterType| request.filters.contains(&(filter as i32));
    crate::watch::CreateRequest {
        no_put: has(FilterType::Noput),
        no_delete: has(FilterType::Nodelete),
        range: KeyRange::new(request.key, request.range_end),
        start_revision: request.start_revision,
        progress_notify: request.progress_notify,
        prev_kv: request.prev_kv,
        watch_id: request.watch_id,
        fragment: request.fragment,
    }
}

/// True when the request's sort order and target are values etcd knows. etcd 3.6 refuses
/// others; the conversion below would read them as the defaults.
pub fn range_sort_is_known(request: &rpc::RangeRequest) -> bool {
    rpc::range_request::SortOrder::try_from(request.sort_order).is_ok()
        && rpc::range_request::SortTarget::try_from(request.sort_target).is_ok()
}

/// True when every range in the transaction, nested ones included, passes
/// [`range_sort_is_known`].
pub fn txn_sorts_are_known(request: &rpc::TxnRequest) -> bool {
    use rpc::request_op::Request;
    request
        .success
        .iter()
        .chain(request.failure.iter())
        .all(|op| match &op.request {
            Some(Request::RequestRange(range)) => range_sort_is_known(range),
            Some(Request::RequestTxn(txn)) => txn_sorts_are_known(txn),
            Some(Request::RequestPut(_) | Request::RequestDeleteRange(_)) | None => true,
        })
}

/// Converts a range request from its wire form.
pub fn range_from_pb(request: rpc::RangeRequest) -> RangeRequest {
    let sort_order = match rpc::range_request::SortOrder::try_from(request.sort_order) {
        Ok(rpc::range_request::SortOrder::Ascend) => SortOrder::Ascend,
        Ok(rpc::range_request::SortOrder::Descend) => SortOrder::Descend,
        // etcd 3.4 treats an unknown order as none; 3.6 rejects it in validation.
        Ok(rpc::range_request::SortOrder::None) | Err(_) => SortOrder::None,
    };
    let sort_target = match rpc::range_request::SortTarget::try_from(request.sort_target) {
        Ok(rpc::range_request::SortTarget::Version) => SortTarget::Version,
        Ok(rpc::range_request::SortTarget::Create) => SortTarget::Create,
        Ok(rpc::range_request::SortTarget::Mod) => SortTarget::Mod,
        Ok(rpc::range_request::SortTarget::Value) => SortTarget::Value,
        Ok(rpc::range_request::SortTarget::Key) | Err(_) => SortTarget::Key,
    };
    RangeRequest {
        range: KeyRange::new(request.key, request.range_end),
        limit: request.limit,
        revision: request.revision,
        sort_order,
        sort_target,
        serializable: request.serializable,
        keys_only: request.keys_only,
        count_only: request.count_only,
        min_mod_revision: request.min_mod_revision,
        max_mod_revision: request.max_mod_revision,
        min_create_revision: request.min_create_revision,
        max_create_revision: request.max_create_revision,
    }
}

/// Converts a range request to its wire form.
pub fn range_to_pb(request: &RangeRequest) -> rpc::RangeRequest {
    let sort_order = match request.sort_order {
        SortOrder::None => rpc::range_request::SortOrder::None,
        SortOrder::Ascend => rpc::range_request::SortOrder::Ascend,
        SortOrder::Descend => rpc::range_request::SortOrder::Descend,
    };
    let sort_target = match request.sort_target {
        SortTarget::Key => rpc::range_request::SortTarget::Key,
        SortTarget::Version => rpc::range_request::SortTarget::Version,
        SortTarget::Create => rpc::range_request::SortTarget::Create,
        SortTarget::Mod => rpc::range_request::SortTarget::Mod,
        SortTarget::Value => rpc::range_request::SortTarget::Value,
    };
    rpc::RangeRequest {
        key: request.range.key.clone(),
        range_end: request.range.range_end.clone(),
        limit: request.limit,
        revision: request.revision,
        sort_order: sort_order as i32,
        sort_target: sort_target as i32,
        serializable: request.serializable,
        keys_only: request.keys_only,
        count_only: request.count_only,
        min_mod_revision: request.min_mod_revision,
        max_mod_revision: request.max_mod_revision,
        min_create_revision: request.min_create_revision,
        max_create_revision: request.max_create_revision,
    }
}

/// Converts a range response to its wire form, with the given header.
pub fn range_response_to_pb(
    response: RangeResponse,
    header: Option<rpc::ResponseHeader>,
) -> rpc::RangeResponse {
    rpc::RangeResponse {
        header,
        kvs: response.kvs.into_iter().map(kv_to_pb).collect(),
        more: response.more,
        count: response.count,
    }
}

/// Converts a range response from its wire form.
pub fn range_response_from_pb(response: rpc::RangeResponse) -> RangeResponse {
    RangeResponse {
        kvs: response.kvs.into_iter().map(kv_from_pb).collect(),
        more: response.more,
        count: response.count,
    }
}

/// Converts a put request from its wire form.
pub fn put_from_pb(request: rpc::PutRequest) -> PutRequest {
    PutRequest {
        key: request.key,
        value: request.value,
        lease: request.lease,
        prev_kv: request.prev_kv,
        ignore_value: request.ignore_value,
        ignore_lease: request.ignore_lease,
    }
}

/// Converts a put request to its wire form.
pub fn put_to_pb(request: &PutRequest) -> rpc::PutRequest {
    rpc::PutRequest {
        key: request.key.clone(),
        value: request.value.clone(),
        lease: request.lease,
        prev_kv: request.prev_kv,
        ignore_value: request.ignore_value,
        ignore_lease: request.ignore_lease,
    }
}

/// Converts a put response to its wire form.
pub fn put_response_to_pb(
    response: PutResponse,
    header: Option<rpc::ResponseHeader>,
) -> rpc::PutResponse {
    rpc::PutResponse {
        header,
        prev_kv: response.prev_kv.map(kv_to_pb),
    }
}

/// Converts a put response from its wire form.
pub fn put_response_from_pb(response: rpc::PutResponse) -> PutResponse {
    PutResponse {
        prev_kv: response.prev_kv.map(kv_from_pb),
    }
}

/// Converts a delete request from its wire form.
pub fn delete_from_pb(request: rpc::DeleteRangeRequest) -> DeleteRangeRequest {
    DeleteRangeRequest {
        range: KeyRange::new(request.key, request.range_end),
        prev_kv: request.prev_kv,
    }
}

/// Converts a delete request to its wire form.
pub fn delete_to_pb(request: &DeleteRangeRequest) -> rpc::DeleteRangeRequest {
    rpc::DeleteRangeRequest {
        key: request.range.key.clone(),
        range_end: request.range.range_end.clone(),
        prev_kv: request.prev_kv,
    }
}

/// Converts a delete response to its wire form.
pub fn delete_response_to_pb(
    response: DeleteRangeResponse,
    header: Option<rpc::ResponseHeader>,
) -> rpc::DeleteRangeResponse {
    rpc::DeleteRangeResponse {
        header,
        deleted: response.deleted,
        prev_kvs: response.prev_kvs.into_iter().map(kv_to_pb).collect(),
    }
}

/// Converts a delete response from its wire form.
pub fn delete_response_from_pb(response: rpc::DeleteRangeResponse) -> DeleteRangeResponse {
    DeleteRangeResponse {
        deleted: response.deleted,
        prev_kvs: response.prev_kvs.into_iter().map(kv_from_pb).collect(),
    }
}

/// Converts a compare from its wire form. An unset value reads as zero (or empty), as in etcd.
pub fn compare_from_pb(compare: rpc::Compare) -> Compare {
    use rpc::compare::{CompareResult as Result, CompareTarget as Target, TargetUnion};
    let result = match Result::try_from(compare.result) {
        Ok(Result::Greater) => CompareResult::Greater,
        Ok(Result::Less) => CompareResult::Less,
        Ok(Result::NotEqual) => CompareResult::NotEqual,
        Ok(Result::Equal) | Err(_) => CompareResult::Equal,
    };
    // etcd-compat: each target reads only its own value field; a value of another type counts
    // as unset (zero), as etcd's compare does.
    let union = compare.target_union;
    let target = match Target::try_from(compare.target) {
        Ok(Target::Create) => CompareTarget::Create(match union {
            Some(TargetUnion::CreateRevision(value)) => value,
            _ => 0,
        }),
        Ok(Target::Mod) => CompareTarget::Mod(match union {
            Some(TargetUnion::ModRevision(value)) => value,
            _ => 0,
        }),
        Ok(Target::Value) => CompareTarget::Value(match union {
            Some(TargetUnion::Value(value)) => value,
            _ => bytes::Bytes::new(),
        }),
        Ok(Target::Lease) => CompareTarget::Lease(match union {
            Some(TargetUnion::Lease(value)) => value,
            _ => 0,
        }),
        Ok(Target::Version) | Err(_) => CompareTarget::Version(match union {
            Some(TargetUnion::Version(value)) => value,
            _ => 0,
        }),
    };
    Compare {
        range: KeyRange::new(compare.key, compare.range_end),
        result,
        target,
    }
}

/// Converts a compare to its wire form.
pub fn compare_to_pb(compare: &Compare) -> rpc::Compare {
    use rpc::compare::{CompareResult as Result, CompareTarget as Target, TargetUnion};
    let result = match compare.result {
        CompareResult::Equal => Result::Equal,
        CompareResult::Greater => Result::Greater,
        CompareResult::Less => Result::Less,
        CompareResult::NotEqual => Result::NotEqual,
    };
    let (target, union) = match &compare.target {
        CompareTarget::Version(value) => (Target::Version, TargetUnion::Version(*value)),
        CompareTarget::Create(value) => (Target::Create, TargetUnion::CreateRevision(*value)),
        CompareTarget::Mod(value) => (Target::Mod, TargetUnion::ModRevision(*value)),
        CompareTarget::Value(value) => (Target::Value, TargetUnion::Value(value.clone())),
        CompareTarget::Lease(value) => (Target::Lease, TargetUnion::Lease(*value)),
    };
    rpc::Compare {
        result: result as i32,
        target: target as i32,
        key: compare.range.key.clone(),
        range_end: compare.range.range_end.clone(),
        target_union: Some(union),
    }
}

/// Converts a transaction from its wire form.
///
/// # Errors
/// [`ConvertError::EmptyRequestOp`] when an operation (at any depth) has no request.
pub fn txn_from_pb(request: rpc::TxnRequest) -> Result<TxnRequest, ConvertError> {
    let ops = |ops: Vec<rpc::RequestOp>| {
        ops.into_iter()
            .map(request_op_from_pb)
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(TxnRequest {
        compare: request.compare.into_iter().map(compare_from_pb).collect(),
        success: ops(request.success)?,
        failure: ops(request.failure)?,
    })
}

fn request_op_from_pb(op: rpc::RequestOp) -> Result<RequestOp, ConvertError> {
    use rpc::request_op::Request;
    match op.request {
        Some(Request::RequestRange(range)) => Ok(RequestOp::Range(range_from_pb(range))),
        Some(Request::RequestPut(put)) => Ok(RequestOp::Put(put_from_pb(put))),
        Some(Request::RequestDeleteRange(delete)) => {
            Ok(RequestOp::DeleteRange(delete_from_pb(delete)))
        }
        Some(Request::RequestTxn(txn)) => Ok(RequestOp::Txn(txn_from_pb(txn)?)),
        None => Err(ConvertError::EmptyRequestOp),
    }
}

/// Converts a transaction to its wire form.
pub fn txn_to_pb(request: &TxnRequest) -> rpc::TxnRequest {
    let ops = |ops: &[RequestOp]| ops.iter().map(request_op_to_pb).collect::<Vec<_>>();
    rpc::TxnRequest {
        compare: request.compare.iter().map(compare_to_pb).collect(),
        success: ops(&request.success),
        failure: ops(&request.failure),
    }
}

fn request_op_to_pb(op: &RequestOp) -> rpc::RequestOp {
    use rpc::request_op::Request;
    let request = match op {
        RequestOp::Range(range) => Request::RequestRange(range_to_pb(range)),
        RequestOp::Put(put) => Request::RequestPut(put_to_pb(put)),
        RequestOp::DeleteRange(delete) => Request::RequestDeleteRange(delete_to_pb(delete)),
        RequestOp::Txn(txn) => Request::RequestTxn(txn_to_pb(txn)),
    };
    rpc::RequestOp {
        request: Some(request),
    }
}

/// Converts a transaction response to its wire form. `revision` is the transaction's header
/// revision. Following etcd, every inner range, put and delete response carries only a
/// revision: the transaction's new one once an operation before or at it changed a key, the
/// revision before the transaction until then. A nested transaction's own header is empty.
pub fn txn_response_to_pb(
    response: TxnResponse,
    header: Option<rpc::ResponseHeader>,
    revision: Revision,
) -> rpc::TxnResponse {
    let before = if txn_changed(&response) {
        revision - 1
    } else {
        revision
    };
    let mut changed = false;
    txn_to_pb_inner(
        response,
        header,
        Revisions {
            before,
            after: revision,
        },
        &mut changed,
    )
}

/// The revisions an inner header can carry.
#[derive(Clone, Copy)]
struct Revisions {
    before: Revision,
    after: Revision,
}

fn txn_to_pb_inner(
    response: TxnResponse,
    header: Option<rpc::ResponseHeader>,
    revisions: Revisions,
    changed: &mut bool,
) -> rpc::TxnResponse {
    let responses = response
        .responses
        .into_iter()
        .map(|op| response_op_to_pb(op, revisions, changed))
        .collect();
    rpc::TxnResponse {
        header,
        succeeded: response.succeeded,
        responses,
    }
}

/// True when an executed operation (at any depth) changed a key.
fn txn_changed(response: &TxnResponse) -> bool {
    response.responses.iter().any(|op| match op {
        ResponseOp::Put(_) => true,
        ResponseOp::DeleteRange(delete) => delete.deleted > 0,
        ResponseOp::Range(_) => false,
        ResponseOp::Txn(inner) => txn_changed(inner),
    })
}

fn response_op_to_pb(op: ResponseOp, revisions: Revisions, changed: &mut bool) -> rpc::ResponseOp {
    use rpc::response_op::Response;
    let header = |changed: bool| {
        let revision = if changed {
            revisions.after
        } else {
            revisions.before
        };
        Some(rpc::ResponseHeader {
            revision,
            ..Default::default()
        })
    };
    let response = match op {
        ResponseOp::Range(range) => {
            Response::ResponseRange(range_response_to_pb(range, header(*changed)))
        }
        ResponseOp::Put(put) => {
            *changed = true;
            Response::ResponsePut(put_response_to_pb(put, header(true)))
        }
        ResponseOp::DeleteRange(delete) => {
            *changed |= delete.deleted > 0;
            Response::ResponseDeleteRange(delete_response_to_pb(delete, header(*changed)))
        }
        ResponseOp::Txn(txn) => {
            let empty = Some(rpc::ResponseHeader::default());
            Response::ResponseTxn(txn_to_pb_inner(txn, empty, revisions, changed))
        }
    };
    rpc::ResponseOp {
        response: Some(response),
    }
}

/// Converts a transaction response from its wire form.
pub fn txn_response_from_pb(response: rpc::TxnResponse) -> TxnResponse {
    use rpc::response_op::Response;
    let responses = response
        .responses
        .into_iter()
        .filter_map(|op| op.response)
        .map(|op| match op {
            Response::ResponseRange(range) => ResponseOp::Range(range_response_from_pb(range)),
            Response::ResponsePut(put) => ResponseOp::Put(put_response_from_pb(put)),
            Response::ResponseDeleteRange(delete) => {
                ResponseOp::DeleteRange(delete_response_from_pb(delete))
            }
            Response::ResponseTxn(txn) => ResponseOp::Txn(txn_response_from_pb(txn)),
        })
        .collect();
    TxnResponse {
        succeeded: response.succeeded,
        responses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_round_trips_through_the_wire_form() {
        let txn = TxnRequest {
            compare: vec![Compare {
                range: KeyRange::new("a", "c"),
                result: CompareResult::Greater,
                target: CompareTarget::Mod(7),
            }],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: "a".into(),
                    value: "1".into(),
                    ..Default::default()
                }),
                RequestOp::Txn(TxnRequest {
                    failure: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                        range: KeyRange::prefix("p"),
                        prev_kv: true,
                    })],
                    ..Default::default()
                }),
            ],
            failure: vec![RequestOp::Range(RangeRequest {
                range: KeyRange::single("a"),
                sort_order: SortOrder::Descend,
                sort_target: SortTarget::Create,
                max_create_revision: 9,
                ..Default::default()
            })],
        };
        assert_eq!(txn_from_pb(txn_to_pb(&txn)).unwrap(), txn);
    }

    #[test]
    fn inner_headers_carry_the_revision_current_when_each_op_ran() {
        let response = TxnResponse {
            succeeded: true,
            responses: vec![
                ResponseOp::Range(RangeResponse::default()),
                ResponseOp::DeleteRange(DeleteRangeResponse::default()),
                ResponseOp::Put(PutResponse::default()),
                ResponseOp::Range(RangeResponse::default()),
                ResponseOp::Txn(TxnResponse {
                    succeeded: true,
                    responses: vec![ResponseOp::Range(RangeResponse::default())],
                }),
            ],
        };
        let wire = txn_response_to_pb(response, None, 7);
        let revisions: Vec<Option<Revision>> = wire
            .responses
            .iter()
            .map(|op| match op.response.as_ref().unwrap() {
                rpc::response_op::Response::ResponseRange(r) => r.header.map(|h| h.revision),
                rpc::response_op::Response::ResponsePut(r) => r.header.map(|h| h.revision),
                rpc::response_op::Response::ResponseDeleteRange(r) => r.header.map(|h| h.revision),
                rpc::response_op::Response::ResponseTxn(r) => {
                    assert_eq!(r.header, Some(rpc::ResponseHeader::default()));
                    match r.responses[0].response.as_ref().unwrap() {
                        rpc::response_op::Response::ResponseRange(inner) => {
                            inner.header.map(|h| h.revision)
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
            })
            .collect();
        assert_eq!(revisions, vec![Some(6), Some(6), Some(7), Some(7), Some(7)]);
        // A transaction that changed nothing reports its (current) revision everywhere.
        let read_only = TxnResponse {
            succeeded: false,
            responses: vec![ResponseOp::Range(RangeResponse::default())],
        };
        let wire = txn_response_to_pb(read_only, None, 7);
        match wire.responses[0].response.as_ref().unwrap() {
            rpc::response_op::Response::ResponseRange(r) => {
                assert_eq!(r.header.unwrap().revision, 7)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn empty_request_op_is_rejected() {
        let wire = rpc::TxnRequest {
            success: vec![rpc::RequestOp { request: None }],
            ..Default::default()
        };
        assert_eq!(txn_from_pb(wire), Err(ConvertError::EmptyRequestOp));
    }

    #[test]
    fn compare_value_of_another_type_reads_as_zero() {
        let wire = rpc::Compare {
            target: rpc::compare::CompareTarget::Mod as i32,
            key: "k".into(),
            target_union: Some(rpc::compare::TargetUnion::Version(5)),
            ..Default::default()
        };
        assert_eq!(compare_from_pb(wire).target, CompareTarget::Mod(0));
    }

    #[test]
    fn unset_compare_value_reads_as_zero() {
        let wire = rpc::Compare {
            target: rpc::compare::CompareTarget::Create as i32,
            key: "k".into(),
            ..Default::default()
        };
        assert_eq!(compare_from_pb(wire).target, CompareTarget::Create(0));
    }
}
