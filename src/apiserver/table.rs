//! Server-side printing: `meta.k8s.io/v1 Table` answers for `kubectl get`, with the columns
//! kube-apiserver prints for each kind, preformatted cells, a server-rendered Age, and a
//! PartialObjectMetadata per row (kubectl reads namespace and labels from it).
//!
//! Pure functions over JSON objects; the time comes from the caller.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::object::{age, labels, meta_str};
use super::registry::Resource;

/// One column: name, type, and priority (0 always shown, 1 only with `-o wide`).
struct Column(&'static str, &'static str, u8);

fn columns(kind: &str) -> &'static [Column] {
    match kind {
        "Pod" => &[
            Column("Name", "string", 0),
            Column("Ready", "string", 0),
            Column("Status", "string", 0),
            Column("Restarts", "string", 0),
            Column("Age", "string", 0),
            Column("IP", "string", 1),
            Column("Node", "string", 1),
            Column("Nominated Node", "string", 1),
            Column("Readiness Gates", "string", 1),
        ],
        "Node" => &[
            Column("Name", "string", 0),
            Column("Status", "string", 0),
            Column("Roles", "string", 0),
            Column("Age", "string", 0),
            Column("Version", "string", 0),
            Column("Internal-IP", "string", 1),
            Column("External-IP", "string", 1),
            Column("OS-Image", "string", 1),
            Column("Kernel-Version", "string", 1),
            Column("Container-Runtime", "string", 1),
        ],
        "Namespace" => &[
            Column("Name", "string", 0),
            Column("Status", "string", 0),
            Column("Age", "string", 0),
        ],
        "Service" => &[
            Column("Name", "string", 0),
            Column("Type", "string", 0),
            Column("Cluster-IP", "string", 0),
            Column("External-IP", "string", 0),
            Column("Port(s)", "string", 0),
            Column("Age", "string", 0),
            Column("Selector", "string", 1),
        ],
        "ConfigMap" => &[
            Column("Name", "string", 0),
            Column("Data", "integer", 0),
            Column("Age", "string", 0),
        ],
        "Secret" => &[
            Column("Name", "string", 0),
            Column("Type", "string", 0),
            Column("Data", "integer", 0),
            Column("Age", "string", 0),
        ],
        "ServiceAccount" => &[
            Column("Name", "string", 0),
            Column("Secrets", "integer", 0),
            Column("Age", "string", 0),
        ],
        "Lease" => &[
            Column("Name", "string", 0),
            Column("Holder", "string", 0),
            Column("Age", "string", 0),
        ],
        "Event" => &[
            Column("Last Seen", "string", 0),
            Column("Type", "string", 0),
            Column("Reason", "string", 0),
            Column("Object", "string", 0),
            Column("Message", "string", 0),
        ],
        "Deployment" => &[
            Column("Name", "string", 0),
            Column("Ready", "string", 0),
            Column("Up-to-date", "integer", 0),
            Column("Available", "integer", 0),
            Column("Age", "string", 0),
            Column("Containers", "string", 1),
            Column("Images", "string", 1),
            Column("Selector", "string", 1),
        ],
        _ => &[Column("Name", "string", 0), Column("Created At", "date", 0)],
    }
}

/// The `columnDefinitions` of a kind's Table.
pub fn column_definitions(kind: &str) -> Value {
    Value::Array(
        columns(kind)
            .iter()
            .map(|Column(name, kind, priority)| {
                json!({
                    "name": name,
                    "type": kind,
                    "format": if *name == "Name" { "name" } else { "" },
                    "description": "",
                    "priority": priority,
                })
            })
            .collect(),
    )
}

fn text<'a>(obj: &'a Value, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn array<'a>(obj: &'a Value, pointer: &str) -> &'a [Value] {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn none_if_empty(text: String) -> String {
    if text.is_empty() {
        "<none>".into()
    } else {
        text
    }
}

fn map_text(obj: &Value, pointer: &str) -> String {
    obj.pointer(pointer)
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The cells of one row of `obj`, a `kind` object.
fn cells(kind: &str, obj: &Value, now: SystemTime) -> Vec<Value> {
    let name = json!(meta_str(obj, "name").unwrap_or(""));
    let created = meta_str(obj, "creationTimestamp");
    let age = json!(age(created, now));
    match kind {
        "Pod" => {
            let statuses = array(obj, "/status/containerStatuses");
            let ready = statuses
                .iter()
                .filter(|status| status.get("ready") == Some(&Value::Bool(true)))
                .count();
            let restarts: i64 = statuses
                .iter()
                .map(|status| {
                    status
                        .get("restartCount")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                })
                .sum();
            let phase = if meta_str(obj, "deletionTimestamp").is_some() {
                "Terminating"
            } else {
                text(obj, "/status/phase").unwrap_or("Pending")
            };
            vec![
                name,
                json!(format!("{ready}/{}", array(obj, "/spec/containers").len())),
                json!(phase),
                json!(restarts.to_string()),
                age,
                json!(text(obj, "/status/podIP").unwrap_or("<none>")),
                json!(text(obj, "/spec/nodeName").unwrap_or("<none>")),
                json!(text(obj, "/status/nominatedNodeName").unwrap_or("<none>")),
                json!("<none>"),
            ]
        }
        "Node" => {
            let ready = array(obj, "/status/conditions")
                .iter()
                .find(|condition| condition.get("type") == Some(&json!("Ready")));
            let mut status = match ready.and_then(|c| c.get("status")).and_then(Value::as_str) {
                Some("True") => "Ready".to_string(),
                Some(_) => "NotReady".to_string(),
                None => "Unknown".to_string(),
            };
            if obj.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = labels(obj)
                .keys()
                .filter_map(|key| key.strip_prefix("node-role.kubernetes.io/"))
                .map(str::to_string)
                .collect();
            let address = |kind: &str| {
                array(obj, "/status/addresses")
                    .iter()
                    .find(|a| a.get("type") == Some(&json!(kind)))
                    .and_then(|a| a.get("address"))
                    .and_then(Value::as_str)
                    .unwrap_or("<none>")
                    .to_string()
            };
            vec![
                name,
                json!(status),
                json!(none_if_empty(roles.join(","))),
                age,
                json!(text(obj, "/status/nodeInfo/kubeletVersion").unwrap_or("")),
                json!(address("InternalIP")),
                json!(address("ExternalIP")),
                json!(text(obj, "/status/nodeInfo/osImage").unwrap_or("<unknown>")),
                json!(text(obj, "/status/nodeInfo/kernelVersion").unwrap_or("<unknown>")),
                json!(text(obj, "/status/nodeInfo/containerRuntimeVersion").unwrap_or("<unknown>")),
            ]
        }
        "Namespace" => vec![
            name,
            json!(text(obj, "/status/phase").unwrap_or("Active")),
            age,
        ],
        "Service" => {
            let ports: Vec<String> = array(obj, "/spec/ports")
                .iter()
                .map(|port| {
                    let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
                    let protocol = port
                        .get("protocol")
                        .and_then(Value::as_str)
                        .unwrap_or("TCP");
                    match port.get("nodePort").and_then(Value::as_i64) {
                        Some(node_port) => format!("{number}:{node_port}/{protocol}"),
                        None => format!("{number}/{protocol}"),
                    }
                })
                .collect();
            vec![
                name,
                json!(text(obj, "/spec/type").unwrap_or("ClusterIP")),
                json!(text(obj, "/spec/clusterIP").unwrap_or("<none>")),
                json!("<none>"),
                json!(none_if_empty(ports.join(","))),
                age,
                json!(none_if_empty(map_text(obj, "/spec/selector"))),
            ]
        }
        "ConfigMap" => {
            let count = |field: &str| {
                obj.get(field)
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
            };
            vec![name, json!(count("data") + count("binaryData")), age]
        }
        "Secret" => {
            let count = obj
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            vec![
                name,
                json!(text(obj, "/type").unwrap_or("Opaque")),
                json!(count),
                age,
            ]
        }
        "ServiceAccount" => {
            let secrets = obj
                .get("secrets")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            vec![name, json!(secrets), age]
        }
        "Lease" => vec![
            name,
            json!(text(obj, "/spec/holderIdentity").unwrap_or("")),
            age,
        ],
        "Event" => {
            let last_seen = text(obj, "/lastTimestamp")
                .or(text(obj, "/eventTime"))
                .or(created);
            let involved = format!(
                "{}/{}",
                text(obj, "/involvedObject/kind")
                    .unwrap_or("")
                    .to_lowercase(),
                text(obj, "/involvedObject/name").unwrap_or("")
            );
            vec![
                json!(super::object::age(last_seen, now)),
                json!(text(obj, "/type").unwrap_or("")),
                json!(text(obj, "/reason").unwrap_or("")),
                json!(involved),
                json!(text(obj, "/message").unwrap_or("")),
            ]
        }
        "Deployment" => {
            let containers = array(obj, "/spec/template/spec/containers");
            let joined = |field: &str| {
                containers
                    .iter()
                    .filter_map(|c| c.get(field).and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(obj, "/status/readyReplicas"),
                    obj.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1)
                )),
                json!(int(obj, "/status/updatedReplicas")),
                json!(int(obj, "/status/availableReplicas")),
                age,
                json!(joined("name")),
                json!(joined("image")),
                json!(none_if_empty(map_text(obj, "/spec/selector/matchLabels"))),
            ]
        }
        _ => vec![name, json!(created.unwrap_or(""))],
    }
}

/// One Table row, with the object's metadata as a PartialObjectMetadata when asked for.
pub fn row(resource: &Resource, obj: &Value, now: SystemTime, include_object: bool) -> Value {
    let mut row = json!({ "cells": cells(resource.kind, obj, now) });
    if include_object {
        row["object"] = json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        });
    }
    row
}

/// The Table of a list (or, with one item, of one object); `continue_token` is empty on
/// the last page. `headers` false leaves the column definitions out, as later watch events do.
pub struct TableOptions<'a> {
    /// The list's resourceVersion.
    pub resource_version: String,
    /// The continue token, "" on the last page.
    pub continue_token: &'a str,
    /// Whether to send `columnDefinitions`.
    pub headers: bool,
    /// Whether rows carry their object's metadata.
    pub include_object: bool,
    /// The time Ages are rendered against.
    pub now: SystemTime,
}

/// Builds a Table of `items`.
pub fn table(resource: &Resource, items: &[Value], options: &TableOptions<'_>) -> Value {
    let mut metadata = json!({ "resourceVersion": options.resource_version });
    if !options.continue_token.is_empty() {
        metadata["continue"] = json!(options.continue_token);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": if options.headers { column_definitions(resource.kind) } else { json!([]) },
        "rows": items
            .iter()
            .map(|item| row(resource, item, options.now, options.include_object))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry;

    #[test]
    fn pod_rows_have_kubes_cells() {
        let pods = registry::find("", "v1", "pods").unwrap();
        let pod = json!({
            "metadata": {"name": "web", "namespace": "demo", "creationTimestamp": "2023-11-14T22:13:20Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "node1"},
            "status": {"phase": "Running", "containerStatuses": [{"ready": true, "restartCount": 2}]},
        });
        let now = humantime::parse_rfc3339("2023-11-14T22:13:25Z").unwrap();
        let row = row(pods, &pod, now, true);
        assert_eq!(
            row["cells"],
            json!([
                "web", "1/2", "Running", "2", "5s", "<none>", "node1", "<none>", "<none>"
            ])
        );
        assert_eq!(row["object"]["metadata"]["namespace"], "demo");
        assert_eq!(column_definitions("Pod").as_array().unwrap().len(), 9);
    }

    #[test]
    fn node_status_reads_the_ready_condition() {
        let nodes = registry::find("", "v1", "nodes").unwrap();
        let node = json!({
            "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.32.0"}},
        });
        let cells = &row(nodes, &node, SystemTime::UNIX_EPOCH, false)["cells"];
        assert_eq!(cells[1], "Ready,SchedulingDisabled");
        assert_eq!(cells[2], "control-plane");
        assert_eq!(cells[4], "v1.32.0");
    }
}
