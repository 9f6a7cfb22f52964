//! Store-level tests of the MVCC layer: etcd semantics case by case (`semantics`), a
//! model-based property test (`model`) and a large restart test (`restart`).

mod history;
pub(crate) mod model;
mod restart;
mod semantics;

use std::sync::Arc;

use bytes::Bytes;
use tempfile::TempDir;

use crate::storage::backend::Backend;
use crate::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyRange, LeaseId, PutRequest,
    RangeRequest, RequestOp, TxnRequest,
};

use super::{LeaseLookup, MvccStore};

/// A fresh store in a temporary directory (kept alive by the returned guard).
fn temp_store() -> (TempDir, MvccStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = Arc::new(Backend::open(dir.path()).expect("open backend"));
    let store = MvccStore::open(backend).expect("open store");
    (dir, store)
}

/// Reopens the store on the same directory, as after a restart.
fn reopen(dir: &TempDir, store: MvccStore) -> MvccStore {
    drop(store);
    let backend = Arc::new(Backend::open(dir.path()).expect("reopen backend"));
    MvccStore::open(backend).expect("reopen store")
}

/// Leases 1 and 2 exist; no other.
fn leases() -> impl LeaseLookup {
    |id: LeaseId| id == 1 || id == 2
}

fn put(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..PutRequest::default()
    }
}

fn get(key: &str) -> RangeRequest {
    RangeRequest {
        range: KeyRange::single(key.as_bytes().to_vec()),
        ..RangeRequest::default()
    }
}

fn range(key: &str, range_end: &str) -> RangeRequest {
    let range = KeyRange::new(key.as_bytes().to_vec(), range_end.as_bytes().to_vec());
    RangeRequest {
        range,
        ..RangeRequest::default()
    }
}

fn delete(key: &str, range_end: &str) -> DeleteRangeRequest {
    let range = KeyRange::new(key.as_bytes().to_vec(), range_end.as_bytes().to_vec());
    DeleteRangeRequest {
        range,
        prev_kv: false,
    }
}

fn compare(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        range: KeyRange::single(key.as_bytes().to_vec()),
        result,
        target,
    }
}

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

/// Commits single requests one batch at a time; returns the revision after the put.
fn put_now(store: &MvccStore, key: &str, value: &str) -> i64 {
    let mut batch = store.write();
    let (_, revision) = batch.put(&put(key, value), &leases()).expect("put");
    batch.commit().expect("commit");
    revision
}

fn values(response: &crate::types::RangeResponse) -> Vec<(String, String)> {
    response
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}
