//! The single mapping from [`Error`] to gRPC status: etcd's code and exact message for each.
//!
//! The match is exhaustive on purpose: a new error variant does not compile until it is given
//! its code here.

use tonic::{Code, Status};

use crate::server::Error;

/// The gRPC status etcd sends for `error`.
pub fn to_status(error: &Error) -> Status {
    let code = match error {
        Error::KeyNotProvided
        | Error::KeyNotFound
        | Error::ValueProvided
        | Error::LeaseProvided
        | Error::TooManyOps
        | Error::DuplicateKey
        | Error::InvalidSortOption
        | Error::RequestTooLarge => Code::InvalidArgument,
        Error::Compacted | Error::FutureRevision => Code::OutOfRange,
        Error::LeaseNotFound => Code::NotFound,
        Error::NoLeader | Error::LeaderChanged | Error::Timeout | Error::Stopped => {
            Code::Unavailable
        }
        Error::Internal(_) => Code::Unknown,
    };
    Status::new(code, error.to_string())
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        to_status(&error)
    }
}

/// The answer for a method this build does not serve yet.
pub fn unimplemented(method: &str) -> Status {
    Status::unimplemented(format!("{method} is not implemented by this mnemo build"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error's code and text, as etcd sends them (etcd-api.md §5).
    #[test]
    fn codes_and_messages_match_etcd() {
        let table = [
            (
                Error::KeyNotProvided,
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                Error::KeyNotFound,
                Code::InvalidArgument,
                "etcdserver: key not found",
            ),
            (
                Error::ValueProvided,
                Code::InvalidArgument,
                "etcdserver: value is provided",
            ),
            (
                Error::LeaseProvided,
                Code::InvalidArgument,
                "etcdserver: lease is provided",
            ),
            (
                Error::TooManyOps,
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                Error::DuplicateKey,
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (
                Error::RequestTooLarge,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                Error::InvalidSortOption,
                Code::InvalidArgument,
                "etcdserver: invalid sort option",
            ),
            (
                Error::Compacted,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                Error::FutureRevision,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (
                Error::LeaseNotFound,
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (Error::NoLeader, Code::Unavailable, "etcdserver: no leader"),
            (
                Error::LeaderChanged,
                Code::Unavailable,
                "etcdserver: leader changed",
            ),
            (
                Error::Timeout,
                Code::Unavailable,
                "etcdserver: request timed out",
            ),
            (
                Error::Stopped,
                Code::Unavailable,
                "etcdserver: server stopped",
            ),
        ];
        for (error, code, message) in table {
            let status = to_status(&error);
            assert_eq!(status.code(), code, "{error:?}");
            assert_eq!(status.message(), message, "{error:?}");
        }
    }
}
