//! Domain types shared by every layer: identifiers, key ranges, key-values, events, and the
//! KV request/response shapes that the MVCC store executes.
//!
//! These mirror etcd's v3 messages field for field, but they are plain Rust: protobuf types
//! never reach below `server::grpc`, `client` and the apply codec, which convert to and from
//! these.
//! This module must not depend on any other module of the crate except `limits`.

use bytes::Bytes;

/// A store revision: the logical clock of the key space. It starts at 1 in a new cluster and
/// goes up by exactly one for every applied request that changes at least one key.
pub type Revision = i64;

/// A lease identifier; 0 means "no lease".
pub type LeaseId = i64;

/// A member identifier, stable for the life of the member.
pub type MemberId = u64;

/// A cluster identifier, derived from the initial membership and token.
pub type ClusterId = u64;

/// The all-keys sentinel used as `range_end`: every key greater than or equal to `key`.
pub const RANGE_END_ALL: &[u8] = b"\0";

/// A key interval with etcd's range syntax.
///
/// * empty `range_end`: the single key `key`;
/// * `range_end == "\0"`: every key `>= key`;
/// * otherwise the half-open interval `[key, range_end)` (empty when `key >= range_end`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyRange {
    /// First key (inclusive).
    pub key: Bytes,
    /// End of the range (exclusive), with the special values described on the type.
    pub range_end: Bytes,
}

impl KeyRange {
    /// A range over exactly one key.
    pub fn single(key: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            range_end: Bytes::new(),
        }
    }

    /// A range from `key` to `range_end`, with etcd's meaning of `range_end`.
    pub fn new(key: impl Into<Bytes>, range_end: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            range_end: range_end.into(),
        }
    }

    /// Every key that starts with `prefix`; an empty prefix means every key.
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let prefix: Bytes = prefix.into();
        if prefix.is_empty() {
            return Self::new(
                Bytes::from_static(RANGE_END_ALL),
                Bytes::from_static(RANGE_END_ALL),
            );
        }
        Self {
            range_end: prefix_end(&prefix),
            key: prefix,
        }
    }

    /// True when the range names exactly one key.
    pub fn is_single(&self) -> bool {
        self.range_end.is_empty()
    }

    /// True when the range is open-ended (`range_end == "\0"`).
    pub fn is_to_end(&self) -> bool {
        self.range_end.as_ref() == RANGE_END_ALL
    }

    /// True when `key` lies inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        if self.is_single() {
            return key == self.key.as_ref();
        }
        if key < self.key.as_ref() {
            return false;
        }
        self.is_to_end() || key < self.range_end.as_ref()
    }

    /// True when no key can lie in the range (`key >= range_end` for a proper interval).
    pub fn is_empty_interval(&self) -> bool {
        !self.is_single() && !self.is_to_end() && self.key >= self.range_end
    }

    /// The exclusive upper bound as an optional key: `None` means "no upper bound".
    /// For a single key it is the key followed by a zero byte.
    pub fn upper_bound(&self) -> Option<Vec<u8>> {
        if self.is_single() {
            let mut end = self.key.to_vec();
            end.push(0);
            Some(end)
        } else if self.is_to_end() {
            None
        } else {
            Some(self.range_end.to_vec())
        }
    }

    /// True when the two ranges share at least one key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        let lower_a = self.key.as_ref();
        let lower_b = other.key.as_ref();
        let upper_a = self.upper_bound();
        let upper_b = other.upper_bound();
        let a_before_b_end = upper_b.as_ref().is_none_or(|end| lower_a < end.as_slice());
        let b_before_a_end = upper_a.as_ref().is_none_or(|end| lower_b < end.as_slice());
        !self.is_empty_interval() && !other.is_empty_interval() && a_before_b_end && b_before_a_end
    }
}

/// The smallest key greater than every key that starts with `prefix`: the prefix with
/// trailing 0xff bytes dropped and its last byte incremented; all-0xff gives `"\0"` (to the end).
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(RANGE_END_ALL)
}

/// One version of one key, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Bytes,
    /// Revision of the put that created this generation of the key.
    pub create_revision: Revision,
    /// Revision of the last change to the key.
    pub mod_revision: Revision,
    /// Number of puts since the key was (re)created; 1 on creation.
    pub version: i64,
    /// The value.
    pub value: Bytes,
    /// Lease attached to the key, 0 for none.
    pub lease: LeaseId,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change to one key, as published to watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventType,
    /// The key after the change. For a delete only `key` and `mod_revision` (the deletion
    /// revision) are set, as in etcd.
    pub kv: KeyValue,
    /// The key before the change, when it existed.
    pub prev_kv: Option<KeyValue>,
}

/// Range result ordering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Key order, ascending (unless a sort target other than key is given).
    #[default]
    None,
    /// Ascending by the target.
    Ascend,
    /// Descending by the target.
    Descend,
}

/// Field a range result is sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    /// The key bytes.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value bytes.
    Value,
}

/// A read of a key range, as etcd's `RangeRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// Keys to read.
    pub range: KeyRange,
    /// Maximum number of keys returned; 0 = no limit.
    pub limit: i64,
    /// Revision to read at; `<= 0` = the current revision.
    pub revision: Revision,
    /// Result order.
    pub sort_order: SortOrder,
    /// Field to sort by.
    pub sort_target: SortTarget,
    /// Serve from local state without a read barrier.
    pub serializable: bool,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Inclusive lower bound on mod_revision, 0 = unset.
    pub min_mod_revision: Revision,
    /// Inclusive upper bound on mod_revision, 0 = unset.
    pub max_mod_revision: Revision,
    /// Inclusive lower bound on create_revision, 0 = unset.
    pub min_create_revision: Revision,
    /// Inclusive upper bound on create_revision, 0 = unset.
    pub max_create_revision: Revision,
}

/// The answer to a [`RangeRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// Matching key-values (empty when `count_only`).
    pub kvs: Vec<KeyValue>,
    /// True when keys exist past `limit`.
    pub more: bool,
    /// Number of keys in the range at that revision, ignoring limit and min/max filters.
    pub count: i64,
}

/// A write of one key, as etcd's `PutRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    /// The key (never empty once validated).
    pub key: Bytes,
    /// The new value.
    pub value: Bytes,
    /// Lease to attach, 0 = none (detaches an existing lease unless `ignore_lease`).
    pub lease: LeaseId,
    /// Return the previous key-value.
    pub prev_kv: bool,
    /// Keep the current value.
    pub ignore_value: bool,
    /// Keep the current lease.
    pub ignore_lease: bool,
}

/// The answer to a [`PutRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// The previous key-value, when asked for and present.
    pub prev_kv: Option<KeyValue>,
}

/// A delete of a key range, as etcd's `DeleteRangeRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    /// Keys to delete.
    pub range: KeyRange,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

/// The answer to a [`DeleteRangeRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    /// Number of keys deleted.
    pub deleted: i64,
    /// The deleted key-values, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// How a compare relates the key's field to the given value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompareResult {
    /// Field == value.
    #[default]
    Equal,
    /// Field > value.
    Greater,
    /// Field < value.
    Less,
    /// Field != value.
    NotEqual,
}

/// Which field of a key a compare looks at, with the value to compare against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's version (0 when absent).
    Version(i64),
    /// The key's create revision (0 when absent).
    Create(Revision),
    /// The key's mod revision (0 when absent).
    Mod(Revision),
    /// The key's value; a compare on an absent key is always false.
    Value(Bytes),
    /// The key's lease (0 when absent or none).
    Lease(LeaseId),
}

/// One guard of a transaction; it holds when every key in the range satisfies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// Keys the compare applies to.
    pub range: KeyRange,
    /// Relation.
    pub result: CompareResult,
    /// Field and value.
    pub target: CompareTarget,
}

/// One operation inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    /// A read.
    Range(RangeRequest),
    /// A write.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction.
    Txn(TxnRequest),
}

/// The result of one [`RequestOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    /// Result of a read.
    Range(RangeResponse),
    /// Result of a write.
    Put(PutResponse),
    /// Result of a delete.
    DeleteRange(DeleteRangeResponse),
    /// Result of a nested transaction.
    Txn(TxnResponse),
}

/// A transaction: if every compare holds, run `success`, otherwise `failure`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    /// Guards, all evaluated against the state before the transaction.
    pub compare: Vec<Compare>,
    /// Operations run when every compare holds.
    pub success: Vec<RequestOp>,
    /// Operations run otherwise.
    pub failure: Vec<RequestOp>,
}

/// The answer to a [`TxnRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether the compares held (and `success` ran).
    pub succeeded: bool,
    /// One result per executed operation, in order.
    pub responses: Vec<ResponseOp>,
}

impl TxnRequest {
    /// True when neither branch (recursively) contains a write.
    pub fn is_read_only(&self) -> bool {
        self.success
            .iter()
            .chain(self.failure.iter())
            .all(|op| match op {
                RequestOp::Range(_) => true,
                RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
                RequestOp::Txn(inner) => inner.is_read_only(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte_and_drops_trailing_ff() {
        assert_eq!(prefix_end(b"abc").as_ref(), b"abd");
        assert_eq!(prefix_end(b"a\xff").as_ref(), b"b");
        assert_eq!(prefix_end(b"\xff\xff").as_ref(), b"\0");
    }

    #[test]
    fn key_range_contains_follows_etcd_syntax() {
        let single = KeyRange::single("b");
        assert!(single.contains(b"b"));
        assert!(!single.contains(b"ba"));
        let to_end = KeyRange::new("b", "\0");
        assert!(to_end.contains(b"zzz"));
        assert!(!to_end.contains(b"a"));
        let interval = KeyRange::new("b", "d");
        assert!(interval.contains(b"c"));
        assert!(!interval.contains(b"d"));
        assert!(KeyRange::new("d", "b").is_empty_interval());
        let all = KeyRange::prefix("");
        assert!(all.contains(b"\0"));
        assert!(all.contains(b"anything"));
    }

    #[test]
    fn overlaps_detects_shared_keys_only() {
        assert!(KeyRange::new("a", "z").overlaps(&KeyRange::single("b")));
        assert!(!KeyRange::new("a", "b").overlaps(&KeyRange::single("b")));
        assert!(KeyRange::new("a", "\0").overlaps(&KeyRange::single("zz")));
        assert!(!KeyRange::single("a").overlaps(&KeyRange::single("b")));
    }
}
