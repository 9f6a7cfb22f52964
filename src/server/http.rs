//! The HTTP/1.1 endpoints of the client port (`/health`, `/version`, `/metrics`) and of the
//! `--listen-metrics-urls` listeners (`/metrics`, `/health`).
//!
//! Thin handlers over [`Server`] and [`crate::metrics`]; they must not hold logic of their own.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use crate::limits::{ETCD_CLUSTER_VERSION, ETCD_COMPAT_VERSION};
use crate::server::Server;

/// mnemo's own version, reported beside the etcd-compatible one.
pub const MNEMO_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The router of the HTTP endpoints.
pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(server)
}

/// The router of a `--listen-metrics-urls` listener: plain HTTP, `/metrics` and `/health`
/// only, as etcd serves there.
pub fn metrics_router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(server)
}

/// `/metrics`: every metric in Prometheus's text format. Sampling reads RocksDB properties
/// and `/proc`, so it runs on a blocking thread, never on a runtime worker.
async fn metrics(State(server): State<Arc<Server>>) -> impl IntoResponse {
    let rendered =
        tokio::task::spawn_blocking(move || crate::metrics::render(&server.metrics_sample())).await;
    match rendered {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
            text,
        ),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("sampling metrics failed: {err}"),
        ),
    }
}

/// `/health`: unhealthy while an alarm is raised (unless the query excludes its type, as in
/// `?exclude=NOSPACE`), without a leader, or when a linearizable read fails.
async fn health(
    State(server): State<Arc<Server>>,
    RawQuery(query): RawQuery,
) -> (StatusCode, Json<serde_json::Value>) {
    let excluded: Vec<String> = query
        .as_deref()
        .map(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .filter(|(name, _)| name == "exclude")
                .map(|(_, value)| value.into_owned())
                .collect()
        })
        .unwrap_or_default();
    let alarmed = server
        .raised_alarms()
        .into_iter()
        .find(|alarm| !excluded.iter().any(|name| name == alarm.kind.name()));
    if let Some(alarm) = alarmed {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "health": "false", "reason": format!("ALARM {}", alarm.kind.name()) })),
        );
    }
    if server.is_healthy().await {
        (
            StatusCode::OK,
            Json(json!({ "health": "true", "reason": "" })),
        )
    } else {
        let reason = if server.status().leader == 0 {
            "RAFT NO LEADER"
        } else {
            "RANGE ERROR"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "health": "false", "reason": reason })),
        )
    }
}

async fn version() -> Json<serde_json::Value> {
    Json(json!({
        "etcdserver": ETCD_COMPAT_VERSION,
        "etcdcluster": ETCD_CLUSTER_VERSION,
        "mnemo": MNEMO_VERSION,
    }))
}
