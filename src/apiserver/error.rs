//! The API server's errors and their one mapping to kube `Status` bodies: code, reason and
//! message as kube-apiserver words them, because kubectl prints them as they are
//! (`Error from server (NotFound): pods "x" not found`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::registry::Resource;
use super::validate::FieldError;
use crate::client::{ClientError, EtcdError};
use crate::types::LeaseId;

/// A request the API server refuses or could not serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The object does not exist.
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        /// Qualified resource (`pods`, `deployments.apps`).
        resource: String,
        /// Plural for `details.kind`.
        plural: &'static str,
        /// Group for `details.group`.
        group: &'static str,
        /// Object name.
        name: String,
    },
    /// No route serves the path.
    #[error("the server could not find the requested resource")]
    NoRoute,
    /// A create found the name taken.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        /// Qualified resource.
        resource: String,
        /// Plural for `details.kind`.
        plural: &'static str,
        /// Group for `details.group`.
        group: &'static str,
        /// Object name.
        name: String,
    },
    /// A write's precondition (resourceVersion, uid, binding) does not hold.
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {detail}")]
    Conflict {
        /// Qualified resource (`pods`, `pods/binding`).
        resource: String,
        /// Plural for `details.kind`.
        plural: &'static str,
        /// Group for `details.group`.
        group: &'static str,
        /// Object name.
        name: String,
        /// Why.
        detail: String,
    },
    /// Malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// Refused on purpose (a terminating namespace).
    #[error("{0}")]
    Forbidden(String),
    /// The verb is not served on this path.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// The object fails validation.
    #[error("{message}")]
    Invalid {
        /// kube's summary line.
        message: String,
        /// Kind for `details.kind`.
        kind: &'static str,
        /// Group for `details.group`.
        group: &'static str,
        /// Object name.
        name: String,
        /// One cause per field error.
        causes: Vec<FieldError>,
    },
    /// A request the patch rules refuse (server-side apply without a field manager).
    #[error("{0}")]
    UnprocessablePatch(String),
    /// A patch that does not decode or apply, with the code and reason the patch module
    /// gives (kube's own per error).
    #[error("{message}")]
    Patch {
        /// HTTP status code.
        code: u16,
        /// kube's reason ("" for its unknown-reason 500s).
        reason: &'static str,
        /// kube's message.
        message: String,
    },
    /// The requested revision was compacted away.
    #[error("{0}")]
    Expired(String),
    /// The body's media type is not one we decode.
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(&'static str),
    /// A requested revision ahead of the store.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion {
        /// The revision asked for.
        requested: i64,
        /// The store's revision.
        current: i64,
    },
    /// The store did not answer within the client's deadline.
    #[error("Timeout: request did not complete within requested timeout - {0}")]
    Timeout(String),
    /// A write named a lease the store no longer has (revoked, or expired meanwhile).
    #[error("Internal error occurred: etcdserver: requested lease not found")]
    LeaseNotFound(LeaseId),
    /// The store failed.
    #[error("Internal error occurred: {0}")]
    Internal(String),
}

impl From<super::patch::PatchError> for ApiError {
    fn from(err: super::patch::PatchError) -> ApiError {
        ApiError::Patch {
            code: err.code(),
            reason: err.reason(),
            message: err.to_string(),
        }
    }
}

impl From<ClientError> for ApiError {
    fn from(err: ClientError) -> ApiError {
        match err {
            ClientError::Etcd(EtcdError::Compacted) | ClientError::WatchCompacted { .. } => {
                ApiError::Expired("The resourceVersion for the provided list is too old.".into())
            }
            // kube-apiserver answers a request whose storage call outlives its deadline with
            // 504 Timeout in these words (`finishRequest` in its REST handlers); our deadline
            // is the etcd client's, but the caller learns the same thing: try again.
            timeout @ ClientError::Timeout(_) => ApiError::Timeout(timeout.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    /// NotFound for an object of `resource`.
    pub fn not_found(resource: &Resource, name: &str) -> ApiError {
        ApiError::NotFound {
            resource: resource.qualified(),
            plural: resource.plural,
            group: resource.group,
            name: name.to_string(),
        }
    }

    /// AlreadyExists for an object of `resource`.
    pub fn already_exists(resource: &Resource, name: &str) -> ApiError {
        ApiError::AlreadyExists {
            resource: resource.qualified(),
            plural: resource.plural,
            group: resource.group,
            name: name.to_string(),
        }
    }

    /// The Conflict of a stale resourceVersion.
    pub fn stale(resource: &Resource, name: &str) -> ApiError {
        ApiError::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// A Conflict with its own detail.
    pub fn conflict(resource: &Resource, name: &str, detail: impl Into<String>) -> ApiError {
        ApiError::Conflict {
            resource: resource.qualified(),
            plural: resource.plural,
            group: resource.group,
            name: name.to_string(),
            detail: detail.into(),
        }
    }

    /// HTTP code and kube reason.
    pub fn code_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => (StatusCode::NOT_FOUND, "NotFound"),
            ApiError::AlreadyExists { .. } => (StatusCode::CONFLICT, "AlreadyExists"),
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "Conflict"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            ApiError::Invalid { .. } | ApiError::UnprocessablePatch(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "Invalid")
            }
            ApiError::Expired(_) => (StatusCode::GONE, "Expired"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType")
            }
            ApiError::TooLargeResourceVersion { .. } | ApiError::Timeout(_) => {
                (StatusCode::GATEWAY_TIMEOUT, "Timeout")
            }
            ApiError::Internal(_) | ApiError::LeaseNotFound(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
            }
            ApiError::Patch { code, reason, .. } => (
                StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                reason,
            ),
        }
    }

    /// The kube `Status` body.
    pub fn status(&self) -> Value {
        let (code, reason) = self.code_and_reason();
        let details = match self {
            ApiError::NotFound {
                plural,
                group,
                name,
                ..
            }
            | ApiError::AlreadyExists {
                plural,
                group,
                name,
                ..
            }
            | ApiError::Conflict {
                plural,
                group,
                name,
                ..
            } => Some(json!({"name": name, "group": group, "kind": plural})),
            ApiError::Invalid {
                kind,
                group,
                name,
                causes,
                ..
            } => Some(json!({
                "name": name,
                "group": group,
                "kind": kind,
                "causes": causes.iter().map(|cause| json!({
                    "reason": cause.kind.reason(),
                    "message": cause.message(),
                    "field": cause.field,
                })).collect::<Vec<_>>(),
            })),
            ApiError::TooLargeResourceVersion { .. } => Some(json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1,
            })),
            _ => None,
        };
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code.as_u16(),
        });
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, _) = self.code_and_reason();
        (code, axum::Json(self.status())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry;

    #[test]
    fn messages_are_kubes() {
        let pods = registry::find("", "v1", "pods").unwrap();
        assert_eq!(
            ApiError::not_found(pods, "x").to_string(),
            "pods \"x\" not found"
        );
        assert_eq!(
            ApiError::already_exists(pods, "x").to_string(),
            "pods \"x\" already exists"
        );
        assert_eq!(
            ApiError::stale(pods, "x").to_string(),
            "Operation cannot be fulfilled on pods \"x\": the object has been modified; \
             please apply your changes to the latest version and try again"
        );
        let deployments = registry::find("apps", "v1", "deployments").unwrap();
        let status = ApiError::not_found(deployments, "d").status();
        assert_eq!(status["message"], "deployments.apps \"d\" not found");
        assert_eq!(status["details"]["group"], "apps");
        assert_eq!(status["details"]["kind"], "deployments");
        assert_eq!(status["code"], 404);
        let timeout = ApiError::from(ClientError::Timeout(std::time::Duration::from_secs(10)));
        assert_eq!(
            timeout.to_string(),
            "Timeout: request did not complete within requested timeout - context deadline \
             exceeded: no answer within 10s"
        );
        assert_eq!(timeout.status()["code"], 504);
        assert_eq!(timeout.status()["reason"], "Timeout");
        assert_eq!(
            ApiError::UnsupportedMediaType("application/json, application/yaml").to_string(),
            "the body of the request was in an unknown format - accepted media types include: \
             application/json, application/yaml"
        );
    }
}
