//! The scheduler's Kubernetes API client: JSON over plain HTTP/1.1 (hyper), list and watch,
//! binding, status patches and events. It speaks only the public REST API, so it works
//! against `mnemo apiserver` and against any kube-apiserver reachable without auth.
//!
//! Every call but a watch is bounded by [`REQUEST_TIMEOUT`]; a watch is bounded by the
//! `timeoutSeconds` it asks for plus that margin.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::mpsc;

/// Longest wait for one request's whole answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one watch request lasts before the server ends it and the scheduler watches
/// again from where it was.
pub const WATCH_SECONDS: u64 = 300;
/// Bytes one watch line may take (a pod or node object); longer lines end the watch.
pub const WATCH_LINE_BYTES_MAX: usize = 4 << 20;
/// Answer bytes read from one non-watch request at most.
pub const RESPONSE_BYTES_MAX: usize = 64 << 20;

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiCallError {
    /// The server could not be reached, or the answer did not come.
    #[error("{method} {path}: {detail}")]
    Transport {
        /// The HTTP method.
        method: &'static str,
        /// The path asked for.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// The server answered with an error status (its Status message).
    #[error("{method} {path}: HTTP {code}: {message}")]
    Status {
        /// The HTTP method.
        method: &'static str,
        /// The path asked for.
        path: String,
        /// The HTTP status code.
        code: u16,
        /// The Status object's message, or the body.
        message: String,
    },
}

impl ApiCallError {
    /// The HTTP status code, for an answered call.
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiCallError::Status { code, .. } => Some(*code),
            ApiCallError::Transport { .. } => None,
        }
    }
}

/// One event of a watch.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent {
    /// ADDED or MODIFIED: the object as it is now.
    Upsert(Value),
    /// DELETED: the object as it was.
    Deleted(Value),
    /// A bookmark at this resourceVersion.
    Bookmark(String),
    /// The watch cannot go on from its resourceVersion (410 Expired, or another ERROR):
    /// list again.
    Expired,
}

/// A client of one API server.
#[derive(Clone)]
pub struct KubeApi {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl KubeApi {
    /// A client of the server at `base` (`http://host:port`, no trailing slash needed).
    pub fn new(base: &str) -> KubeApi {
        KubeApi {
            base: base.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// `GET path` as JSON.
    ///
    /// # Errors
    /// Transport failures and error statuses.
    pub async fn get(&self, path: &str) -> Result<Value, ApiCallError> {
        self.call(http::Method::GET, "GET", path, None, "application/json")
            .await
    }

    /// `POST path` with a JSON body.
    ///
    /// # Errors
    /// Transport failures and error statuses.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiCallError> {
        self.call(
            http::Method::POST,
            "POST",
            path,
            Some(body),
            "application/json",
        )
        .await
    }

    /// `PATCH path` with a strategic merge patch.
    ///
    /// # Errors
    /// Transport failures and error statuses.
    pub async fn patch(&self, path: &str, patch: &Value) -> Result<Value, ApiCallError> {
        self.call(
            http::Method::PATCH,
            "PATCH",
            path,
            Some(patch),
            "application/strategic-merge-patch+json",
        )
        .await
    }

    async fn call(
        &self,
        method: http::Method,
        name: &'static str,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> Result<Value, ApiCallError> {
        let transport = |detail: String| ApiCallError::Transport {
            method: name,
            path: path.to_owned(),
            detail,
        };
        let body = body
            .map(|body| Bytes::from(body.to_string()))
            .unwrap_or_default();
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .map_err(|err| transport(err.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|err| transport(err.to_string()))?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
                .collect()
                .await
                .map_err(|err| transport(err.to_string()))?
                .to_bytes();
            Ok::<_, ApiCallError>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| transport(format!("no answer within {REQUEST_TIMEOUT:?}")))??;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(value);
        }
        let message = value["message"].as_str().map_or_else(
            || String::from_utf8_lossy(&body).into_owned(),
            str::to_owned,
        );
        Err(ApiCallError::Status {
            method: name,
            path: path.to_owned(),
            code: status.as_u16(),
            message,
        })
    }

    /// Watches `path` (a collection) from `resource_version`, sending each event to
    /// `events` until the server ends the watch, the watch fails, or `events` is closed.
    ///
    /// # Errors
    /// Transport failures and error statuses of the watch request itself.
    pub async fn watch(
        &self,
        path: &str,
        resource_version: &str,
        events: &mpsc::Sender<WatchEvent>,
    ) -> Result<(), ApiCallError> {
        let query = format!(
            "{path}?watch=true&allowWatchBookmarks=true&resourceVersion={resource_version}&timeoutSeconds={WATCH_SECONDS}"
        );
        let transport = |detail: String| ApiCallError::Transport {
            method: "GET",
            path: query.clone(),
            detail,
        };
        let request = http::Request::builder()
            .uri(format!("{}{query}", self.base))
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|err| transport(err.to_string()))?;
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(WATCH_SECONDS) + REQUEST_TIMEOUT;
        let response = tokio::time::timeout_at(deadline, self.client.request(request))
            .await
            .map_err(|_| transport("no answer".to_owned()))?
            .map_err(|err| transport(err.to_string()))?;
        if !response.status().is_success() {
            let code = response.status().as_u16();
            if code == 410 {
                let _ = events.send(WatchEvent::Expired).await;
                return Ok(());
            }
            return Err(ApiCallError::Status {
                method: "GET",
                path: query.clone(),
                code,
                message: "watch refused".to_owned(),
            });
        }
        let mut body = response.into_body();
        let mut pending = BytesMut::new();
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) | Ok(None) => return Ok(()),
                Ok(Some(Err(err))) => return Err(transport(err.to_string())),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
                let line = pending.split_to(end + 1);
                let Some(event) = parse_watch_line(&line) else {
                    continue;
                };
                let ends = event == WatchEvent::Expired;
                if events.send(event).await.is_err() || ends {
                    return Ok(());
                }
            }
            if pending.len() > WATCH_LINE_BYTES_MAX {
                return Err(transport(format!(
                    "a watch line is over {WATCH_LINE_BYTES_MAX} bytes"
                )));
            }
        }
    }
}

/// One line of a watch stream; `None` for a blank or unreadable line.
fn parse_watch_line(line: &[u8]) -> Option<WatchEvent> {
    let value: Value = serde_json::from_slice(line).ok()?;
    let object = value.get("object").cloned().unwrap_or(Value::Null);
    match value["type"].as_str()? {
        "ADDED" | "MODIFIED" => Some(WatchEvent::Upsert(object)),
        "DELETED" => Some(WatchEvent::Deleted(object)),
        "BOOKMARK" => Some(WatchEvent::Bookmark(
            object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )),
        // An ERROR event (410 Expired or other): the watch cannot continue.
        _ => Some(WatchEvent::Expired),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines_become_events() {
        assert_eq!(
            parse_watch_line(br#"{"type":"ADDED","object":{"a":1}}"#),
            Some(WatchEvent::Upsert(serde_json::json!({"a":1})))
        );
        assert_eq!(
            parse_watch_line(br#"{"type":"DELETED","object":{"a":1}}"#),
            Some(WatchEvent::Deleted(serde_json::json!({"a":1})))
        );
        assert_eq!(
            parse_watch_line(
                br#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"12"}}}"#
            ),
            Some(WatchEvent::Bookmark("12".into()))
        );
        assert_eq!(
            parse_watch_line(br#"{"type":"ERROR","object":{"code":410}}"#),
            Some(WatchEvent::Expired)
        );
        assert_eq!(parse_watch_line(b"\n"), None);
    }
}
