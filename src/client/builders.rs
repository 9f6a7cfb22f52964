//! Builders that make requests read like what they do:
//! `RangeRequest::prefix("app/").limit(10)`, `TxnRequest::when(..).and_then(..)`.

use bytes::Bytes;

use crate::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyRange, LeaseId, PutRequest,
    RangeRequest, RequestOp, Revision, SortOrder, SortTarget, TxnRequest,
};
use crate::watch::CreateRequest as WatchRequest;

impl RangeRequest {
    /// Reads one key.
    pub fn key(key: impl Into<Bytes>) -> RangeRequest {
        RangeRequest {
            range: KeyRange::single(key),
            ..RangeRequest::default()
        }
    }

    /// Reads every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Bytes>) -> RangeRequest {
        RangeRequest {
            range: KeyRange::prefix(prefix),
            ..RangeRequest::default()
        }
    }

    /// Reads `[key, range_end)` with etcd's range syntax.
    pub fn range(key: impl Into<Bytes>, range_end: impl Into<Bytes>) -> RangeRequest {
        RangeRequest {
            range: KeyRange::new(key, range_end),
            ..RangeRequest::default()
        }
    }

    /// Returns at most `limit` keys.
    #[must_use]
    pub fn limit(mut self, limit: i64) -> RangeRequest {
        self.limit = limit;
        self
    }

    /// Reads at `revision`.
    #[must_use]
    pub fn at_revision(mut self, revision: Revision) -> RangeRequest {
        self.revision = revision;
        self
    }

    /// Sorts the result.
    #[must_use]
    pub fn sort(mut self, target: SortTarget, order: SortOrder) -> RangeRequest {
        self.sort_target = target;
        self.sort_order = order;
        self
    }

    /// Returns keys without values.
    #[must_use]
    pub fn keys_only(mut self) -> RangeRequest {
        self.keys_only = true;
        self
    }

    /// Returns only the count.
    #[must_use]
    pub fn count_only(mut self) -> RangeRequest {
        self.count_only = true;
        self
    }

    /// Reads local state without a read barrier.
    #[must_use]
    pub fn serializable(mut self) -> RangeRequest {
        self.serializable = true;
        self
    }

    /// Keeps only keys created at or before `revision`.
    #[must_use]
    pub fn max_create_revision(mut self, revision: Revision) -> RangeRequest {
        self.max_create_revision = revision;
        self
    }
}

impl PutRequest {
    /// Sets `key` to `value`.
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> PutRequest {
        PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        }
    }

    /// Attaches a lease.
    #[must_use]
    pub fn with_lease(mut self, lease: LeaseId) -> PutRequest {
        self.lease = lease;
        self
    }

    /// Returns the previous key-value.
    #[must_use]
    pub fn with_prev_kv(mut self) -> PutRequest {
        self.prev_kv = true;
        self
    }
}

impl DeleteRangeRequest {
    /// Deletes one key.
    pub fn key(key: impl Into<Bytes>) -> DeleteRangeRequest {
        DeleteRangeRequest {
            range: KeyRange::single(key),
            prev_kv: false,
        }
    }

    /// Deletes every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Bytes>) -> DeleteRangeRequest {
        DeleteRangeRequest {
            range: KeyRange::prefix(prefix),
            prev_kv: false,
        }
    }

    /// Returns the deleted key-values.
    #[must_use]
    pub fn with_prev_kv(mut self) -> DeleteRangeRequest {
        self.prev_kv = true;
        self
    }
}

impl Compare {
    /// Compares the value of `key`.
    pub fn value(key: impl Into<Bytes>, result: CompareResult, value: impl Into<Bytes>) -> Compare {
        Compare {
            range: KeyRange::single(key),
            result,
            target: CompareTarget::Value(value.into()),
        }
    }

    /// Compares the version of `key` (0 when absent).
    pub fn version(key: impl Into<Bytes>, result: CompareResult, version: i64) -> Compare {
        Compare {
            range: KeyRange::single(key),
            result,
            target: CompareTarget::Version(version),
        }
    }

    /// Compares the create revision of `key` (0 when absent).
    pub fn create_revision(
        key: impl Into<Bytes>,
        result: CompareResult,
        revision: Revision,
    ) -> Compare {
        Compare {
            range: KeyRange::single(key),
            result,
            target: CompareTarget::Create(revision),
        }
    }

    /// Compares the mod revision of `key` (0 when absent).
    pub fn mod_revision(
        key: impl Into<Bytes>,
        result: CompareResult,
        revision: Revision,
    ) -> Compare {
        Compare {
            range: KeyRange::single(key),
            result,
            target: CompareTarget::Mod(revision),
        }
    }

    /// Compares the lease of `key`.
    pub fn lease(key: impl Into<Bytes>, result: CompareResult, lease: LeaseId) -> Compare {
        Compare {
            range: KeyRange::single(key),
            result,
            target: CompareTarget::Lease(lease),
        }
    }
}

impl TxnRequest {
    /// A transaction guarded by `compares`.
    pub fn when(compares: impl IntoIterator<Item = Compare>) -> TxnRequest {
        TxnRequest {
            compare: compares.into_iter().collect(),
            ..TxnRequest::default()
        }
    }

    /// Operations run when every compare holds.
    #[must_use]
    pub fn and_then(mut self, ops: impl IntoIterator<Item = RequestOp>) -> TxnRequest {
        self.success = ops.into_iter().collect();
        self
    }

    /// Operations run otherwise.
    #[must_use]
    pub fn or_else(mut self, ops: impl IntoIterator<Item = RequestOp>) -> TxnRequest {
        self.failure = ops.into_iter().collect();
        self
    }
}

impl From<RangeRequest> for RequestOp {
    fn from(request: RangeRequest) -> RequestOp {
        RequestOp::Range(request)
    }
}

impl From<PutRequest> for RequestOp {
    fn from(request: PutRequest) -> RequestOp {
        RequestOp::Put(request)
    }
}

impl From<DeleteRangeRequest> for RequestOp {
    fn from(request: DeleteRangeRequest) -> RequestOp {
        RequestOp::DeleteRange(request)
    }
}

impl From<TxnRequest> for RequestOp {
    fn from(request: TxnRequest) -> RequestOp {
        RequestOp::Txn(request)
    }
}

impl WatchRequest {
    /// Watches one key.
    pub fn key(key: impl Into<Bytes>) -> WatchRequest {
        WatchRequest {
            range: KeyRange::single(key),
            ..WatchRequest::default()
        }
    }

    /// Watches every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Bytes>) -> WatchRequest {
        WatchRequest {
            range: KeyRange::prefix(prefix),
            ..WatchRequest::default()
        }
    }

    /// Watches `[key, range_end)` with etcd's range syntax.
    pub fn range(key: impl Into<Bytes>, range_end: impl Into<Bytes>) -> WatchRequest {
        WatchRequest {
            range: KeyRange::new(key, range_end),
            ..WatchRequest::default()
        }
    }

    /// Starts at `revision` (inclusive) instead of after the current one.
    #[must_use]
    pub fn from_revision(mut self, revision: Revision) -> WatchRequest {
        self.start_revision = revision;
        self
    }

    /// Includes each event's previous version.
    #[must_use]
    pub fn with_prev_kv(mut self) -> WatchRequest {
        self.prev_kv = true;
        self
    }

    /// Leaves out put events.
    #[must_use]
    pub fn without_puts(mut self) -> WatchRequest {
        self.no_put = true;
        self
    }

    /// Leaves out delete events.
    #[must_use]
    pub fn without_deletes(mut self) -> WatchRequest {
        self.no_delete = true;
        self
    }

    /// Asks for periodic progress notifications while idle.
    #[must_use]
    pub fn with_progress_notify(mut self) -> WatchRequest {
        self.progress_notify = true;
        self
    }
}
