//! Errors of the MVCC store.
//!
//! Owns: [`MvccError`]. The gRPC layer maps each variant to etcd's exact code and message
//! (`etcdserver: mvcc: required revision has been compacted`, ...); the messages here are
//! for logs and carry the values involved.
//! Must not: depend on anything but the backend error and the domain types.

use crate::storage::backend::BackendError;
use crate::types::{LeaseId, Revision};

/// A failed MVCC operation. The first four variants are client mistakes: the request is
/// rejected and leaves no trace. `Backend` and `Corrupt` are fatal (see [`MvccError::is_fatal`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MvccError {
    /// The requested revision is below the compact revision, so its history is gone.
    #[error("required revision {requested} has been compacted (compact revision {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The store's compact revision.
        compacted: Revision,
    },
    /// The requested revision is above the current revision.
    #[error("required revision {requested} is a future revision (current revision {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// A put names a lease that does not exist.
    #[error("requested lease {0:#018x} not found")]
    LeaseNotFound(LeaseId),
    /// A put with `ignore_value` or `ignore_lease` targets a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// The backend failed.
    #[error("backend failure: {0}")]
    Backend(#[from] BackendError),
    /// Stored history could not be decoded or contradicts the key index.
    #[error("corrupt mvcc history: {0}")]
    Corrupt(String),
}

impl MvccError {
    /// True for errors after which the store must not be used any more: the member should
    /// stop (and be rebuilt from a snapshot if the data is corrupt).
    #[must_use]
    pub fn is_fatal(&self) -> bool {
        match self {
            MvccError::Backend(_) | MvccError::Corrupt(_) => true,
            MvccError::Compacted { .. }
            | MvccError::FutureRevision { .. }
            | MvccError::LeaseNotFound(_)
            | MvccError::KeyNotFound => false,
        }
    }
}
