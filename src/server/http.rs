//! The HTTP/1.1 endpoints of the client port: `/health` and `/version`.
//!
//! Thin handlers over [`Server`]; they must not hold logic of their own.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
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
        .with_state(server)
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
