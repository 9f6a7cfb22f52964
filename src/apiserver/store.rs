//! Objects in etcd the way kube-apiserver keeps them: JSON values under `/registry/...`, with
//! `metadata.resourceVersion` cleared before a write and set from the key's `mod_revision` on
//! every read, so RV = mod_revision. Every write is a Txn guarded by the mod_revision the
//! caller read (0 for a create), never a blind put.
//!
//! Speaks only [`KvClient`], so it runs on the embedded member and on any etcd v3 cluster.

use bytes::Bytes;
use serde_json::Value;

use super::error::ApiError;
use super::object::set_resource_version;
use crate::client::{ClientError, EtcdError, KvClient};
use crate::types::{
    Compare, CompareResult, DeleteRangeRequest, KeyValue, LeaseId, PutRequest, RangeRequest,
    ResponseOp, TxnRequest,
};

/// One object read from the store, with the mod_revision its RV is.
#[derive(Clone, Debug)]
pub struct Stored {
    /// The object, `metadata.resourceVersion` set.
    pub object: Value,
    /// The key's mod_revision.
    pub mod_revision: i64,
}

/// One read page of a key range.
pub struct Page {
    /// The objects, in key order, with their keys.
    pub items: Vec<(Bytes, Value)>,
    /// Whether keys remain after the last one.
    pub more: bool,
    /// Keys in the whole range read (from the start key on).
    pub count: i64,
    /// The header revision of the read.
    pub header_revision: i64,
}

/// Decodes a stored value, setting its resourceVersion from `kv.mod_revision`.
pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    decode_at(&kv.value, kv.mod_revision, &kv.key)
}

/// Decodes `value` of `key`, setting its resourceVersion to `revision`.
pub fn decode_at(value: &[u8], revision: i64, key: &[u8]) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(value).map_err(|err| {
        ApiError::Internal(format!(
            "object at {} is not JSON: {err}",
            String::from_utf8_lossy(key)
        ))
    })?;
    set_resource_version(&mut object, revision);
    Ok(object)
}

/// The bytes stored for `object`: its JSON without `metadata.resourceVersion`.
pub fn encode(object: &Value) -> Vec<u8> {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&object).expect("a JSON value serializes")
}

/// The end of the range of keys starting with `prefix` (etcd's prefix end).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Reads one object.
pub async fn get<C: KvClient>(client: &C, key: &str) -> Result<Option<Stored>, ApiError> {
    let reply = client.range(RangeRequest::key(key.to_string())).await?;
    match reply.response.kvs.first() {
        None => Ok(None),
        Some(kv) => Ok(Some(Stored {
            object: decode(kv)?,
            mod_revision: kv.mod_revision,
        })),
    }
}

/// Writes `object` at `key` if the key's mod_revision is still `expected` (0: absent).
/// Returns the new revision, or None when the guard failed. `lease` is what the key is
/// attached to afterwards: `Some(id)` (0: none), or `None` to keep the key's current lease
/// (only for an update, as etcd requires the key to exist for that).
pub async fn put_if<C: KvClient>(
    client: &C,
    key: &str,
    expected: i64,
    object: &Value,
    lease: Option<LeaseId>,
) -> Result<Option<i64>, ApiError> {
    let mut put = PutRequest::new(key.to_string(), encode(object));
    match lease {
        Some(id) => put = put.with_lease(id),
        // The guard (mod_revision == expected, not 0) means the key exists when the put runs.
        None if expected != 0 => put.ignore_lease = true,
        None => {}
    }
    let txn = TxnRequest::when([Compare::mod_revision(
        key.to_string(),
        CompareResult::Equal,
        expected,
    )])
    .and_then([put.into()]);
    let reply = client.txn(txn).await.map_err(|err| match (err, lease) {
        (ClientError::Etcd(EtcdError::LeaseNotFound), Some(id)) => ApiError::LeaseNotFound(id),
        (err, _) => ApiError::from(err),
    })?;
    Ok(reply.response.succeeded.then_some(reply.header.revision))
}

/// Deletes `key` if its mod_revision is still `expected`. Returns the delete's revision, or
/// None when the guard failed.
pub async fn delete_if<C: KvClient>(
    client: &C,
    key: &str,
    expected: i64,
) -> Result<Option<i64>, ApiError> {
    let txn = TxnRequest::when([Compare::mod_revision(
        key.to_string(),
        CompareResult::Equal,
        expected,
    )])
    .and_then([DeleteRangeRequest::key(key.to_string()).into()]);
    let reply = client.txn(txn).await?;
    Ok(reply.response.succeeded.then_some(reply.header.revision))
}

/// Deletes every key under `prefix` (a namespace's objects of one resource).
pub async fn delete_prefix<C: KvClient>(client: &C, prefix: &str) -> Result<i64, ApiError> {
    let reply = client
        .delete_range(DeleteRangeRequest::prefix(prefix.to_string()))
        .await?;
    Ok(reply.response.deleted)
}

/// Reads up to `limit` (0: all) keys of `[start, end)` at `revision` (0: latest).
///
/// # Errors
/// [`ApiError::Expired`] when `revision` was compacted, [`ApiError::TooLargeResourceVersion`]
/// when it is ahead of the store.
pub async fn range_page<C: KvClient>(
    client: &C,
    start: Vec<u8>,
    end: Vec<u8>,
    revision: i64,
    limit: i64,
) -> Result<Page, ApiError> {
    let request = RangeRequest::range(start, end)
        .limit(limit)
        .at_revision(revision);
    let reply = match client.range(request).await {
        Ok(reply) => reply,
        Err(ClientError::Etcd(EtcdError::FutureRevision)) => {
            return Err(ApiError::TooLargeResourceVersion {
                requested: revision,
                current: current_revision(client).await?,
            });
        }
        Err(err) => return Err(err.into()),
    };
    let items = reply
        .response
        .kvs
        .iter()
        .map(|kv| Ok((kv.key.clone(), decode(kv)?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Page {
        items,
        more: reply.response.more,
        count: reply.response.count,
        header_revision: reply.header.revision,
    })
}

/// The store's current revision.
pub async fn current_revision<C: KvClient>(client: &C) -> Result<i64, ApiError> {
    // A count-only read of one key costs nothing and carries the header revision.
    let reply = client
        .range(RangeRequest::key("/registry/health").count_only())
        .await?;
    Ok(reply.header.revision)
}

/// The value of a Range response inside a Txn response, if that is what `op` is.
pub fn range_kvs(op: &ResponseOp) -> &[KeyValue] {
    match op {
        ResponseOp::Range(range) => &range.kvs,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_drops_the_resource_version_and_decode_restores_it() {
        let object = serde_json::json!({"metadata": {"name": "x", "resourceVersion": "7"}});
        let bytes = encode(&object);
        assert!(!String::from_utf8_lossy(&bytes).contains("resourceVersion"));
        let back = decode_at(&bytes, 9, b"k").unwrap();
        assert_eq!(back["metadata"]["resourceVersion"], "9");
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
    }
}
