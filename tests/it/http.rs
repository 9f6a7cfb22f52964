//! The HTTP/1.1 endpoints served beside gRPC on the client port (etcd-api.md §8): `/health` and
//! `/version`, fetched with a raw request over a plain TCP stream.

use mnemo::pb::etcdserverpb::StatusRequest;
use serde_json::{Value, json};

use crate::support::{Member, http_get, parse_semver};

fn json_body(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|err| panic!("body is not JSON ({err}): {body:?}"))
}

/// `GET /health` answers 200 with `"health":"true"`, and gRPC keeps working on the same port.
#[tokio::test]
async fn health_answers_200_with_health_true() {
    let member = Member::start().await;
    let response = http_get(member.client_addr(), "/health")
        .await
        .expect("GET /health");
    assert_eq!(response.status, 200, "{response:?}");
    let body = json_body(&response.body_text());
    assert_eq!(
        body["health"],
        json!("true"),
        "health is the string \"true\": {body}"
    );
    // 3.5+ adds an empty "reason" to a healthy answer; nothing else is expected.
    let object = body.as_object().expect("a JSON object");
    for name in object.keys() {
        assert!(
            name == "health" || name == "reason",
            "unexpected field {name:?} in {body}"
        );
    }
    if let Some(reason) = object.get("reason") {
        assert_eq!(reason, &json!(""), "a healthy member gives no reason");
    }

    // gRPC keeps working on the same port after HTTP/1.1 traffic.
    let status = member
        .maintenance()
        .await
        .status(StatusRequest {})
        .await
        .expect("status over gRPC");
    assert_ne!(status.into_inner().leader, 0);
}

/// `GET /version` gives the etcd API versions plus mnemo's own, matching Status.version.
#[tokio::test]
async fn version_reports_the_etcd_api_version_and_mnemos_own() {
    let member = Member::start().await;
    let response = http_get(member.client_addr(), "/version")
        .await
        .expect("GET /version");
    assert_eq!(response.status, 200, "{response:?}");
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type:?}"
    );
    let body = json_body(&response.body_text());
    assert_eq!(
        body,
        json!({"etcdserver": "3.6.0", "etcdcluster": "3.6.0", "mnemo": env!("CARGO_PKG_VERSION")}),
        "/version body"
    );
    let server = body["etcdserver"].as_str().expect("etcdserver is a string");
    assert!(
        parse_semver(server).is_some_and(|version| version >= (3, 5, 13)),
        "etcdserver {server}"
    );

    // /version and Maintenance.Status advertise the same server version.
    let status = member
        .maintenance()
        .await
        .status(StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.version, server);
}

/// An unknown path is a 404, as on etcd.
#[tokio::test]
async fn unknown_http_path_is_not_found() {
    let member = Member::start().await;
    let response = http_get(member.client_addr(), "/no/such/path")
        .await
        .expect("GET an unknown path");
    assert_eq!(response.status, 404, "{response:?}");
    // The member is unaffected.
    let health = http_get(member.client_addr(), "/health")
        .await
        .expect("GET /health");
    assert_eq!(health.status, 200);
}
