//! `?watch=true`: a chunked stream of newline-ended JSON events (ADDED, MODIFIED, DELETED,
//! BOOKMARK, ERROR) over one etcd watch of the resource's prefix, as kube-apiserver's etcd3
//! watcher sends them: `resourceVersion=N` means events after N; unset or `0` first sends the
//! current objects as ADDED; a compacted start is a 200 stream with one 410 ERROR event.
//!
//! Speaks only `KvClient`; the stream ends at `timeoutSeconds`, when the client goes away,
//! or when the store ends the watch.

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::ApiError;
use super::handlers::{Params, Render, Selectors, list_page};
use super::object::set_resource_version;
use super::registry::Resource;
use super::store;
use super::table::{self, TableOptions};
use super::{WATCH_BUFFER_EVENTS, WATCH_TIMEOUT_DEFAULT, WATCH_TIMEOUT_MAX};
use crate::client::{ClientError, EtcdError, KvClient, WatchRequest};
use crate::types::EventType;

/// kube's message for a watch from a compacted revision.
const EXPIRED_MESSAGE: &str = "The resourceVersion for the provided watch is too old.";

/// Starts a watch and answers with its event stream.
pub async fn serve<C: KvClient + Clone + 'static>(
    client: C,
    resource: &'static Resource,
    namespace: Option<&str>,
    params: &Params,
    render: Render,
) -> Result<Response, ApiError> {
    if params.get("sendInitialEvents").is_some() {
        return Err(ApiError::BadRequest(
            "sendInitialEvents is not supported by this server".into(),
        ));
    }
    let selectors = Selectors::parse(resource, params)?;
    let timeout = match params.get("timeoutSeconds") {
        None => WATCH_TIMEOUT_DEFAULT,
        Some(text) => Duration::from_secs(text.parse().map_err(|_| {
            ApiError::BadRequest(format!("timeoutSeconds: Invalid value: \"{text}\""))
        })?)
        .min(WATCH_TIMEOUT_MAX),
    };
    let bookmarks = params.flag("allowWatchBookmarks");
    let start_rv: i64 = match params.get("resourceVersion") {
        None => 0,
        Some(text) => text.parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "resourceVersion: Invalid value: \"{text}\": must be a number"
            ))
        })?,
    };
    let mut encoder = Encoder {
        resource,
        render,
        headers_sent: false,
    };
    let mut initial = Vec::new();
    let after = if start_rv == 0 {
        // Unset or 0: the current state first, as ADDED events, then changes after it.
        let mut list_params = Params::empty();
        for key in ["labelSelector", "fieldSelector"] {
            if let Some(value) = params.get(key) {
                list_params.set(key, value);
            }
        }
        let page = list_page(&client, resource, namespace, &list_params).await?;
        initial.extend(
            page.items
                .into_iter()
                .map(|item| encoder.event("ADDED", item)),
        );
        page.revision
    } else {
        start_rv
    };
    let prefix = resource.list_prefix(namespace);
    let mut request = WatchRequest::prefix(prefix)
        .from_revision(after + 1)
        .with_prev_kv();
    if bookmarks {
        request = request.with_progress_notify();
    }
    let (sender, receiver) = mpsc::channel::<Result<Bytes, Infallible>>(WATCH_BUFFER_EVENTS);
    let watch = client.watch(request).await;
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        for line in initial {
            if sender.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let mut events = match watch {
            Ok(events) => events,
            Err(err) => {
                let _ = sender.send(Ok(encoder.error(&err))).await;
                return;
            }
        };
        loop {
            let update = tokio::select! {
                () = &mut deadline => return,
                () = sender.closed() => return,
                update = events.next() => update,
            };
            let lines = match update {
                None => return,
                Some(Err(err)) => {
                    let _ = sender.send(Ok(encoder.error(&err))).await;
                    return;
                }
                Some(Ok(update)) if update.events.is_empty() => {
                    if !bookmarks {
                        continue;
                    }
                    vec![encoder.bookmark(update.header.revision)]
                }
                Some(Ok(update)) => update
                    .events
                    .iter()
                    .filter_map(|event| encoder.translate(event, &selectors))
                    .collect(),
            };
            for line in lines {
                if sender.send(Ok(line)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(ReceiverStream::new(receiver)),
    )
        .into_response())
}

/// Turns store events into kube watch lines.
struct Encoder {
    resource: &'static Resource,
    render: Render,
    /// A Table watch sends column definitions in its first event only, as kube's.
    headers_sent: bool,
}

impl Encoder {
    fn line(value: &Value) -> Bytes {
        let mut text = value.to_string();
        text.push('\n');
        Bytes::from(text)
    }

    fn event(&mut self, kind: &str, object: Value) -> Bytes {
        let object = if self.render.table {
            let options = TableOptions {
                resource_version: super::object::meta_str(&object, "resourceVersion")
                    .unwrap_or("")
                    .to_string(),
                continue_token: "",
                headers: !self.headers_sent,
                include_object: self.render.include_object,
                now: SystemTime::now(),
            };
            self.headers_sent = true;
            table::table(self.resource, std::slice::from_ref(&object), &options)
        } else {
            object
        };
        Encoder::line(&json!({"type": kind, "object": object}))
    }

    fn bookmark(&self, revision: i64) -> Bytes {
        Encoder::line(&json!({"type": "BOOKMARK", "object": {
            "kind": self.resource.kind,
            "apiVersion": self.resource.api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
        }}))
    }

    fn error(&self, err: &ClientError) -> Bytes {
        let (code, reason, message) = match err {
            ClientError::WatchCompacted { .. } | ClientError::Etcd(EtcdError::Compacted) => {
                (410, "Expired", EXPIRED_MESSAGE.to_string())
            }
            other => (
                500,
                "InternalError",
                format!("Internal error occurred: {other}"),
            ),
        };
        Encoder::line(&json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": reason, "message": message, "code": code,
        }}))
    }

    /// One store event as a watch line; None when the selectors hide it. An object entering
    /// the selection is ADDED and one leaving it DELETED, as kube's watcher does.
    fn translate(&mut self, event: &crate::types::Event, selectors: &Selectors) -> Option<Bytes> {
        let resource = self.resource;
        let previous = event.prev_kv.as_ref().and_then(|kv| store::decode(kv).ok());
        let was_selected = previous
            .as_ref()
            .is_some_and(|object| selectors.matches(resource, object));
        match event.kind {
            EventType::Delete => {
                let mut last = previous?;
                if !was_selected {
                    return None;
                }
                set_resource_version(&mut last, event.kv.mod_revision);
                Some(self.event("DELETED", last))
            }
            EventType::Put => {
                let object = store::decode(&event.kv).ok()?;
                let selected = selectors.matches(resource, &object);
                match (was_selected, selected) {
                    (true, true) => Some(self.event("MODIFIED", object)),
                    (false, true) => Some(self.event("ADDED", object)),
                    (true, false) => Some(self.event("DELETED", object)),
                    (false, false) => None,
                }
            }
        }
    }
}
