//! Request checks that run before anything is proposed, with etcd's verdicts.
//!
//! Pure functions over domain requests: no state, no I/O. Checks that need the state (a lease
//! that does not exist, a missing key under `ignore_value`) happen at apply instead.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::Error;
use crate::limits::TXN_OPS_MAX;
use crate::types::{DeleteRangeRequest, KeyRange, PutRequest, RangeRequest, RequestOp, TxnRequest};

/// Checks a range request.
///
/// # Errors
/// [`Error::KeyNotProvided`] for an empty key.
pub fn range(request: &RangeRequest) -> Result<(), Error> {
    non_empty(&request.range.key)
}

/// Checks a put request.
///
/// # Errors
/// [`Error::KeyNotProvided`], [`Error::ValueProvided`], [`Error::LeaseProvided`].
pub fn put(request: &PutRequest) -> Result<(), Error> {
    non_empty(&request.key)?;
    if request.ignore_value && !request.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if request.ignore_lease && request.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

/// Checks a delete request.
///
/// # Errors
/// [`Error::KeyNotProvided`] for an empty key.
pub fn delete_range(request: &DeleteRangeRequest) -> Result<(), Error> {
    non_empty(&request.range.key)
}

/// Checks a transaction: list lengths (nested transactions get what their parent list left
/// of the budget), every operation and compare, and the duplicate-key rule.
///
/// # Errors
/// [`Error::TooManyOps`], [`Error::DuplicateKey`], and the errors of the single-op checks.
pub fn txn(request: &TxnRequest) -> Result<(), Error> {
    txn_within(request, TXN_OPS_MAX)?;
    check_writes(&request.success)?;
    check_writes(&request.failure)?;
    Ok(())
}

fn txn_within(request: &TxnRequest, ops_max: usize) -> Result<(), Error> {
    let longest = request
        .compare
        .len()
        .max(request.success.len())
        .max(request.failure.len());
    if longest > ops_max {
        return Err(Error::TooManyOps);
    }
    for compare in &request.compare {
        non_empty(&compare.range.key)?;
    }
    // etcd-compat: a nested txn gets what the longest list of its parent left of the budget
    // (etcd's checkTxnRequest passes maxTxnOps minus that length).
    let budget = ops_max - longest;
    for ops in [&request.success, &request.failure] {
        for op in ops {
            match op {
                RequestOp::Range(inner) => range(inner)?,
                RequestOp::Put(inner) => put(inner)?,
                RequestOp::DeleteRange(inner) => delete_range(inner)?,
                RequestOp::Txn(inner) => txn_within(inner, budget)?,
            }
        }
    }
    Ok(())
}

/// Keys written and ranges deleted by one list of operations, nested lists included.
struct Writes {
    puts: BTreeSet<Bytes>,
    deletes: Vec<KeyRange>,
}

/// etcd's duplicate-key rule for one list: a key may be put once, and not inside a range the
/// same list (or a transaction nested in it) deletes. The two branches of one nested
/// transaction exclude each other, so they may put the same key.
fn check_writes(ops: &[RequestOp]) -> Result<Writes, Error> {
    // etcd-compat: etcd checks overlaps with intervals in which a "\0" end means nothing, so
    // a from-key delete (`range_end == "\0"`) never conflicts with a put in etcd; the same
    // transactions are accepted here.
    let mut deletes: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(delete) if !delete.range.is_to_end() => {
                Some(delete.range.clone())
            }
            _ => None,
        })
        .collect();
    let mut puts = BTreeSet::new();
    let deleted =
        |deletes: &[KeyRange], key: &[u8]| deletes.iter().any(|range| range.contains(key));
    for op in ops {
        let RequestOp::Txn(nested) = op else { continue };
        let then_writes = check_writes(&nested.success)?;
        let else_writes = check_writes(&nested.failure)?;
        for key in &then_writes.puts {
            if puts.contains(key) || deleted(&deletes, key) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        for key in &else_writes.puts {
            let shared_with_then = then_writes.puts.contains(key);
            if (puts.contains(key) && !shared_with_then) || deleted(&deletes, key) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        deletes.extend(then_writes.deletes);
        deletes.extend(else_writes.deletes);
    }
    for op in ops {
        let RequestOp::Put(put) = op else { continue };
        if puts.contains(&put.key) || deleted(&deletes, &put.key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(put.key.clone());
    }
    Ok(Writes { puts, deletes })
}

fn non_empty(key: &Bytes) -> Result<(), Error> {
    if key.is_empty() {
        Err(Error::KeyNotProvided)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_op(key: &str) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            ..Default::default()
        })
    }

    fn delete_op(key: &str, end: &str) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest {
            range: KeyRange::new(key.to_string(), end.to_string()),
            prev_kv: false,
        })
    }

    fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp::Txn(TxnRequest {
            compare: vec![],
            success,
            failure,
        })
    }

    fn check(success: Vec<RequestOp>) -> Result<(), Error> {
        txn(&TxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        })
    }

    #[test]
    fn duplicate_key_cases_match_etcd() {
        assert_eq!(
            check(vec![put_op("a"), put_op("a")]),
            Err(Error::DuplicateKey)
        );
        assert_eq!(
            check(vec![put_op("a"), delete_op("a", "")]),
            Err(Error::DuplicateKey)
        );
        assert_eq!(
            check(vec![put_op("x"), nested(vec![put_op("x")], vec![])]),
            Err(Error::DuplicateKey)
        );
        assert_eq!(
            check(vec![delete_op("a", "z"), nested(vec![put_op("b")], vec![])]),
            Err(Error::DuplicateKey)
        );
        // Branches of one nested txn exclude each other.
        assert_eq!(
            check(vec![nested(vec![put_op("k")], vec![put_op("k")])]),
            Ok(())
        );
        // etcd-compat: a from-key delete does not conflict with a put (etcd's interval check).
        assert_eq!(check(vec![delete_op("a", "\0"), put_op("b")]), Ok(()));
        // Overlapping deletes and reads never conflict.
        assert_eq!(
            check(vec![delete_op("a", "z"), delete_op("b", "c")]),
            Ok(())
        );
        // The success and failure lists of the top level are checked separately.
        let both = TxnRequest {
            compare: vec![],
            success: vec![put_op("a")],
            failure: vec![put_op("a")],
        };
        assert_eq!(txn(&both), Ok(()));
    }

    #[test]
    fn op_budget_is_shared_with_nested_txns() {
        let many = |count: usize| {
            (0..count)
                .map(|i| put_op(&format!("k{i}")))
                .collect::<Vec<_>>()
        };
        assert_eq!(check(many(TXN_OPS_MAX)), Ok(()));
        assert_eq!(check(many(TXN_OPS_MAX + 1)), Err(Error::TooManyOps));
        // 100 ops at the top leave 28 for a nested list.
        let mut ops = many(99);
        ops.push(nested(
            (0..29).map(|i| put_op(&format!("n{i}"))).collect(),
            vec![],
        ));
        assert_eq!(check(ops), Err(Error::TooManyOps));
    }

    #[test]
    fn empty_keys_are_rejected_everywhere() {
        assert_eq!(put(&PutRequest::default()), Err(Error::KeyNotProvided));
        assert_eq!(
            check(vec![nested(vec![put_op("")], vec![])]),
            Err(Error::KeyNotProvided)
        );
        let ignore = PutRequest {
            key: "k".into(),
            value: "v".into(),
            ignore_value: true,
            ..Default::default()
        };
        assert_eq!(put(&ignore), Err(Error::ValueProvided));
        let lease = PutRequest {
            key: "k".into(),
            lease: 5,
            ignore_lease: true,
            ..Default::default()
        };
        assert_eq!(put(&lease), Err(Error::LeaseProvided));
    }

    #[test]
    fn nested_budget_follows_the_longest_list_compares_included() {
        // etcd: 100 compares and one nested txn of 50 puts is too many.
        let compare = |index: usize| crate::types::Compare {
            range: KeyRange::single(format!("c{index}")),
            result: crate::types::CompareResult::Equal,
            target: crate::types::CompareTarget::Version(0),
        };
        let request = TxnRequest {
            compare: (0..100).map(compare).collect(),
            success: vec![nested(
                (0..50).map(|i| put_op(&format!("n{i}"))).collect(),
                vec![],
            )],
            failure: vec![],
        };
        assert_eq!(txn(&request), Err(Error::TooManyOps));
        let request = TxnRequest {
            compare: (0..100).map(compare).collect(),
            ..request
        };
        let fits = TxnRequest {
            success: vec![nested(
                (0..28).map(|i| put_op(&format!("n{i}"))).collect(),
                vec![],
            )],
            ..request
        };
        assert_eq!(txn(&fits), Ok(()));
    }
}
