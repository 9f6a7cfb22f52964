//! The single mapping from [`Error`] to gRPC status: etcd's code and exact message for each.
//!
//! The match is exhaustive on purpose: a new error variant does not compile until it is given
//! its code here.

use tonic::{Code, Status};

use crate::auth::AuthError;
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
        Error::Compacted | Error::FutureRevision | Error::LeaseTtlTooLarge => Code::OutOfRange,
        Error::LeaseExists => Code::FailedPrecondition,
        Error::LeaseNotFound | Error::MemberNotFound => Code::NotFound,
        Error::InvalidMemberUrls => Code::InvalidArgument,
        Error::MemberIdExists
        | Error::PeerUrlsExist
        | Error::TooManyLearners
        | Error::NotLearner
        | Error::LearnerNotInSync
        | Error::NotLeader
        | Error::BadTransferee
        | Error::NotSupportedForLearner
        | Error::MembershipRefused(_) => Code::FailedPrecondition,
        Error::NoLeader | Error::LeaderChanged | Error::Timeout | Error::Stopped => {
            Code::Unavailable
        }
        Error::TooManyWatchStreams | Error::NoSpace => Code::ResourceExhausted,
        Error::Corrupt => Code::DataLoss,
        Error::Auth(auth) => auth_code(auth),
        Error::ElectionNotLeader
        | Error::ElectionNoLeader
        | Error::MissingLeaderKey
        | Error::Internal(_) => Code::Unknown,
    };
    Status::new(code, error.to_string())
}

/// etcd's code for each auth error (`rpctypes/error.go`).
fn auth_code(error: &AuthError) -> Code {
    match error {
        AuthError::UserEmpty
        | AuthError::RoleEmpty
        | AuthError::AuthFailed
        | AuthError::InvalidAuthMgmt
        | AuthError::AuthOldRevision
        | AuthError::PermissionNotGiven => Code::InvalidArgument,
        AuthError::RootUserNotExist
        | AuthError::RootRoleNotExist
        | AuthError::UserAlreadyExist
        | AuthError::UserNotFound
        | AuthError::RoleAlreadyExist
        | AuthError::RoleNotFound
        | AuthError::RoleNotGranted
        | AuthError::PermissionNotGranted
        | AuthError::AuthNotEnabled => Code::FailedPrecondition,
        AuthError::PermissionDenied => Code::PermissionDenied,
        AuthError::InvalidAuthToken => Code::Unauthenticated,
        // etcd-compat: etcd maps "too many requests" wrongly, so it goes out as Unknown.
        AuthError::TooManyRequests | AuthError::VerifyOnly => Code::Unknown,
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        to_status(&error)
    }
}

/// The gRPC status of a gateway failure, as etcd 3.4's grpc-gateway reports it.
pub fn gateway_status(error: &super::gateway::Error) -> Status {
    use super::gateway::Error as Gateway;
    let code = match error {
        Gateway::BadRequestJson(_) => Code::InvalidArgument,
        // grpc-gateway v1 passes the decoder's error on untyped, which reads as Unknown.
        Gateway::BadStreamJson(_) | Gateway::BodyRead(_) => Code::Unknown,
        Gateway::BodyTooLarge { .. } => Code::ResourceExhausted,
    };
    Status::new(code, error.to_string())
}

/// What tonic's decoder says when a request message exceeds the receive limit.
const TONIC_OVERSIZED_PREFIX: &str = "Error, decoded message length too large: found ";

/// Rewrites tonic's answer to an over-limit request message into etcd's (gRPC-Go's):
/// ResourceExhausted `grpc: received message larger than max (N vs. LIMIT)` instead of
/// OutOfRange with tonic's wording, which clients would read as a compacted revision's code.
/// tonic sends such errors as trailers-only responses, so the status is in the headers.
pub fn etcd_oversized_message<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers();
    if headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        != Some("11")
    {
        return response;
    }
    let Some(message) = headers
        .get("grpc-message")
        .and_then(|value| value.to_str().ok())
    else {
        return response;
    };
    // grpc-message is percent-encoded on the wire.
    let Ok(message) = percent_encoding::percent_decode_str(message).decode_utf8() else {
        return response;
    };
    let Some(rest) = message.strip_prefix(TONIC_OVERSIZED_PREFIX) else {
        return response;
    };
    let found = rest.split(' ').next().unwrap_or_default();
    let rewritten = format!(
        "grpc: received message larger than max ({found} vs. {})",
        crate::limits::GRPC_RECV_BYTES_MAX
    );
    let Ok(value) = http::HeaderValue::from_str(&rewritten) else {
        return response;
    };
    let headers = response.headers_mut();
    headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    headers.insert("grpc-message", value);
    response
}

/// The answer for a method this build does not serve yet.
pub fn unimplemented(method: &str) -> Status {
    Status::unimplemented(format!("{method} is not implemented by this mnemo build"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_messages_get_grpc_gos_code_and_text() {
        let tonic_answer = Status::out_of_range(format!(
            "{TONIC_OVERSIZED_PREFIX}3000000 bytes, the limit is: 2097152 bytes"
        ))
        .into_http::<()>();
        let rewritten = etcd_oversized_message(tonic_answer);
        let status = Status::from_header_map(rewritten.headers()).unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "grpc: received message larger than max (3000000 vs. 2097152)"
        );
        // Other OutOfRange answers (a compacted revision) are left alone.
        let compacted = to_status(&Error::Compacted).into_http::<()>();
        let untouched = etcd_oversized_message(compacted);
        assert_eq!(
            Status::from_header_map(untouched.headers()).unwrap().code(),
            Code::OutOfRange
        );
    }

    /// Every error's code and text, as etcd sends them (etcd-api.md §5).
    #[test]
    fn codes_and_messages_match_etcd() {
        let table = [
            (
                Error::Auth(AuthError::RootUserNotExist),
                Code::FailedPrecondition,
                "etcdserver: root user does not exist",
            ),
            (
                Error::Auth(AuthError::RootRoleNotExist),
                Code::FailedPrecondition,
                "etcdserver: root user does not have root role",
            ),
            (
                Error::Auth(AuthError::UserAlreadyExist),
                Code::FailedPrecondition,
                "etcdserver: user name already exists",
            ),
            (
                Error::Auth(AuthError::UserEmpty),
                Code::InvalidArgument,
                "etcdserver: user name is empty",
            ),
            (
                Error::Auth(AuthError::UserNotFound),
                Code::FailedPrecondition,
                "etcdserver: user name not found",
            ),
            (
                Error::Auth(AuthError::RoleAlreadyExist),
                Code::FailedPrecondition,
                "etcdserver: role name already exists",
            ),
            (
                Error::Auth(AuthError::RoleNotFound),
                Code::FailedPrecondition,
                "etcdserver: role name not found",
            ),
            (
                Error::Auth(AuthError::RoleEmpty),
                Code::InvalidArgument,
                "etcdserver: role name is empty",
            ),
            (
                Error::Auth(AuthError::AuthFailed),
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            (
                Error::Auth(AuthError::PermissionDenied),
                Code::PermissionDenied,
                "etcdserver: permission denied",
            ),
            (
                Error::Auth(AuthError::RoleNotGranted),
                Code::FailedPrecondition,
                "etcdserver: role is not granted to the user",
            ),
            (
                Error::Auth(AuthError::PermissionNotGranted),
                Code::FailedPrecondition,
                "etcdserver: permission is not granted to the role",
            ),
            (
                Error::Auth(AuthError::AuthNotEnabled),
                Code::FailedPrecondition,
                "etcdserver: authentication is not enabled",
            ),
            (
                Error::Auth(AuthError::InvalidAuthMgmt),
                Code::InvalidArgument,
                "etcdserver: invalid auth management",
            ),
            (
                Error::Auth(AuthError::InvalidAuthToken),
                Code::Unauthenticated,
                "etcdserver: invalid auth token",
            ),
            (
                Error::Auth(AuthError::AuthOldRevision),
                Code::InvalidArgument,
                "etcdserver: revision of auth store is old",
            ),
            (
                Error::Auth(AuthError::TooManyRequests),
                Code::Unknown,
                "etcdserver: too many requests",
            ),
            (
                Error::Auth(AuthError::PermissionNotGiven),
                Code::InvalidArgument,
                "etcdserver: permission not given",
            ),
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
            (
                Error::MemberNotFound,
                Code::NotFound,
                "etcdserver: member not found",
            ),
            (
                Error::PeerUrlsExist,
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ),
            (
                Error::InvalidMemberUrls,
                Code::InvalidArgument,
                "etcdserver: given member URLs are invalid",
            ),
            (
                Error::LearnerNotInSync,
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ),
            (
                Error::NotLeader,
                Code::FailedPrecondition,
                "etcdserver: not leader",
            ),
            (
                Error::BadTransferee,
                Code::FailedPrecondition,
                "etcdserver: bad leader transferee",
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
            (
                Error::NoSpace,
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            (
                Error::Corrupt,
                Code::DataLoss,
                "etcdserver: corrupt cluster",
            ),
        ];
        for (error, code, message) in table {
            let status = to_status(&error);
            assert_eq!(status.code(), code, "{error:?}");
            assert_eq!(status.message(), message, "{error:?}");
        }
    }
}
