//! `mnemo scheduler`: binds pods to nodes through a Kubernetes API server, the way
//! kube-scheduler's default profile does for resource requests.
//!
//! It lists nodes and pods, then watches both. Each pod without a node (and with no other
//! scheduler named) goes to a Ready node with room for its CPU and memory requests,
//! spreading pods evenly ([`placement::choose`]), through the `pods/binding` subresource.
//! A pod that fits nowhere gets a `PodScheduled=False` condition and a `FailedScheduling`
//! event, once per distinct reason; it is tried again whenever a node changes and every
//! [`RESYNC_INTERVAL`].
//!
//! It talks only to the API server's REST API ([`api`]), never to the store, so it runs
//! against `mnemo apiserver` or a real kube-apiserver alike.

pub mod api;
pub mod placement;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use self::api::{ApiCallError, KubeApi, WatchEvent};
use self::placement::{Node, Requests, Usage};

/// How often pods that fit nowhere are tried again even if no node changed (kube-scheduler
/// flushes its unschedulable queue on a similar period).
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(30);
/// Pause before listing again after the API server could not be reached.
pub const RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// Watch events queued per resource before the watch waits for the scheduler.
pub const WATCH_QUEUE_EVENTS: usize = 1024;
/// The scheduler name pods get when they name none.
pub const SCHEDULER_NAME_DEFAULT: &str = "default-scheduler";

/// How to run the scheduler.
#[derive(Clone, Debug)]
pub struct Options {
    /// The API server, e.g. `http://127.0.0.1:8080`.
    pub server: String,
    /// Pods naming this `spec.schedulerName` (or none, for the default name) are ours.
    pub name: String,
}

/// A pod's key: namespace and name.
type PodKey = (String, String);

/// What the scheduler knows of the cluster, from its lists and watches.
#[derive(Default)]
struct Cache {
    nodes: BTreeMap<String, Value>,
    pods: BTreeMap<PodKey, Value>,
    /// Pods that fit nowhere, with the reason last reported for each.
    unschedulable: BTreeMap<PodKey, String>,
}

/// Runs until `shutdown` resolves, listing again after any failure.
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) {
    let api = KubeApi::new(&options.server);
    let mut cache = Cache::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            outcome = session(&api, &options.name, &mut cache) => {
                if let Err(error) = outcome {
                    tracing::warn!(%error, "scheduler lost the API server; listing again");
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(RETRY_BACKOFF) => {}
                    }
                }
            }
        }
    }
}

fn pod_key(pod: &Value) -> PodKey {
    let text = |field: &str| {
        pod["metadata"][field]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    (text("namespace"), text("name"))
}

fn resource_version(object: &Value) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Whether the pod has finished (its requests no longer count).
fn finished(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// Whether `pod` is this scheduler's to place.
fn waiting_for(pod: &Value, name: &str) -> bool {
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    let scheduler = pod["spec"]["schedulerName"]
        .as_str()
        .filter(|scheduler| !scheduler.is_empty())
        .unwrap_or(SCHEDULER_NAME_DEFAULT);
    node.is_empty()
        && scheduler == name
        && pod["metadata"]["deletionTimestamp"].is_null()
        && !finished(pod)
}

/// One list, then watches until they end or fail.
async fn session(api: &KubeApi, name: &str, cache: &mut Cache) -> Result<(), ApiCallError> {
    let nodes = api.get("/api/v1/nodes").await?;
    let pods = api.get("/api/v1/pods").await?;
    cache.nodes = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|node| (pod_key(node).1, node.clone()))
        .collect();
    cache.pods = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|pod| (pod_key(pod), pod.clone()))
        .collect();
    cache
        .unschedulable
        .retain(|key, _| cache.pods.contains_key(key));
    let (node_events, mut node_rx) = mpsc::channel(WATCH_QUEUE_EVENTS);
    let (pod_events, mut pod_rx) = mpsc::channel(WATCH_QUEUE_EVENTS);
    let node_watch = tokio::spawn(keep_watching(
        api.clone(),
        "/api/v1/nodes",
        resource_version(&nodes),
        node_events,
    ));
    let pod_watch = tokio::spawn(keep_watching(
        api.clone(),
        "/api/v1/pods",
        resource_version(&pods),
        pod_events,
    ));
    let outcome = async {
        schedule_all(api, name, cache).await;
        let mut resync = tokio::time::interval(RESYNC_INTERVAL);
        resync.reset();
        loop {
            tokio::select! {
                event = pod_rx.recv() => match event {
                    Some(WatchEvent::Upsert(pod)) => {
                        let key = pod_key(&pod);
                        let waiting = waiting_for(&pod, name);
                        cache.pods.insert(key.clone(), pod);
                        if waiting {
                            let mut state = cluster_state(cache);
                            schedule_one(api, name, cache, &mut state, &key).await;
                        } else {
                            cache.unschedulable.remove(&key);
                        }
                    }
                    Some(WatchEvent::Deleted(pod)) => {
                        let key = pod_key(&pod);
                        cache.pods.remove(&key);
                        cache.unschedulable.remove(&key);
                        // Room freed on its node may fit a waiting pod.
                        schedule_all(api, name, cache).await;
                    }
                    Some(WatchEvent::Bookmark(_)) => {}
                    Some(WatchEvent::Expired) | None => return Ok(()),
                },
                event = node_rx.recv() => match event {
                    Some(WatchEvent::Upsert(node)) => {
                        cache.nodes.insert(pod_key(&node).1, node);
                        schedule_all(api, name, cache).await;
                    }
                    Some(WatchEvent::Deleted(node)) => {
                        cache.nodes.remove(&pod_key(&node).1);
                    }
                    Some(WatchEvent::Bookmark(_)) => {}
                    Some(WatchEvent::Expired) | None => return Ok(()),
                },
                _ = resync.tick() => schedule_all(api, name, cache).await,
            }
        }
    }
    .await;
    node_watch.abort();
    pod_watch.abort();
    outcome
}

/// Watches `path` from `resource_version` for as long as `events` is open, watching again
/// from the last version seen each time the server ends a watch. Ends (closing `events`)
/// when a watch fails or expires, so the scheduler lists again.
async fn keep_watching(
    api: KubeApi,
    path: &'static str,
    mut resource_version: String,
    events: mpsc::Sender<WatchEvent>,
) {
    let (seen, mut seen_rx) = mpsc::channel(WATCH_QUEUE_EVENTS);
    loop {
        let from = resource_version.clone();
        let watch = api.watch(path, &from, &seen);
        tokio::pin!(watch);
        let outcome = loop {
            tokio::select! {
                outcome = &mut watch => break outcome,
                Some(event) = seen_rx.recv() => {
                    if !forward(&events, &mut resource_version, event).await {
                        return;
                    }
                }
            }
        };
        // Events the watch queued before it ended.
        while let Ok(event) = seen_rx.try_recv() {
            if !forward(&events, &mut resource_version, event).await {
                return;
            }
        }
        if let Err(error) = outcome {
            tracing::warn!(%error, "watch failed");
            let _ = events.send(WatchEvent::Expired).await;
            return;
        }
    }
}

/// Passes `event` on and remembers its version; false when the watch must end.
async fn forward(
    events: &mpsc::Sender<WatchEvent>,
    resource_version: &mut String,
    event: WatchEvent,
) -> bool {
    match &event {
        WatchEvent::Upsert(object) | WatchEvent::Deleted(object) => {
            *resource_version = self::resource_version(object);
        }
        WatchEvent::Bookmark(version) => resource_version.clone_from(version),
        WatchEvent::Expired => {
            let _ = events.send(event).await;
            return false;
        }
    }
    events.send(event).await.is_ok()
}

/// Tries every waiting pod, oldest first (by name within a namespace, as listed).
async fn schedule_all(api: &KubeApi, name: &str, cache: &mut Cache) {
    let waiting: Vec<PodKey> = cache
        .pods
        .iter()
        .filter(|(_, pod)| waiting_for(pod, name))
        .map(|(key, _)| key.clone())
        .collect();
    if waiting.is_empty() {
        return;
    }
    // Built once for the whole pass; each binding updates it.
    let mut state = cluster_state(cache);
    for key in waiting {
        schedule_one(api, name, cache, &mut state, &key).await;
    }
}

/// The nodes and what is placed on each, from the cache.
fn cluster_state(cache: &Cache) -> ClusterState {
    let nodes: Vec<Node> = cache.nodes.values().map(Node::from_object).collect();
    let mut usage: BTreeMap<String, Usage> = BTreeMap::new();
    for pod in cache.pods.values() {
        let Some(node) = pod["spec"]["nodeName"]
            .as_str()
            .filter(|node| !node.is_empty())
        else {
            continue;
        };
        if finished(pod) {
            continue;
        }
        usage
            .entry(node.to_owned())
            .or_default()
            .add(Requests::of_pod(pod));
    }
    (nodes, usage)
}

/// The nodes, and what is placed on each.
type ClusterState = (Vec<Node>, BTreeMap<String, Usage>);

async fn schedule_one(
    api: &KubeApi,
    name: &str,
    cache: &mut Cache,
    state: &mut ClusterState,
    key: &PodKey,
) {
    let Some(pod) = cache.pods.get(key).cloned() else {
        return;
    };
    let (nodes, usage) = state;
    let (namespace, pod_name) = key;
    match placement::choose(nodes, usage, &pod) {
        Ok(node) => {
            let binding = json!({
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": pod_name, "namespace": namespace},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            });
            let path = format!("/api/v1/namespaces/{namespace}/pods/{pod_name}/binding");
            match api.post(&path, &binding).await {
                Ok(_) => {
                    // Counted on the node at once, before the watch reports the binding,
                    // so the next pod does not take the same room.
                    if let Some(cached) = cache.pods.get_mut(key) {
                        cached["spec"]["nodeName"] = Value::String(node.clone());
                    }
                    usage
                        .entry(node.clone())
                        .or_default()
                        .add(Requests::of_pod(&pod));
                    cache.unschedulable.remove(key);
                    tracing::info!(pod = %format!("{namespace}/{pod_name}"), %node, "bound");
                    let message = format!("Successfully assigned {namespace}/{pod_name} to {node}");
                    record_event(api, name, &pod, "Normal", "Scheduled", &message).await;
                }
                // Someone else bound or deleted it; the watch brings the news.
                Err(error) if matches!(error.code(), Some(404 | 409)) => {}
                Err(error) => tracing::warn!(%error, "binding failed"),
            }
        }
        Err(reason) => {
            if cache.unschedulable.get(key) == Some(&reason) {
                return;
            }
            tracing::info!(pod = %format!("{namespace}/{pod_name}"), %reason, "unschedulable");
            let condition = json!({"status": {"conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": reason,
                "lastProbeTime": null,
                "lastTransitionTime": now_rfc3339(),
            }]}});
            let path = format!("/api/v1/namespaces/{namespace}/pods/{pod_name}/status");
            if let Err(error) = api.patch(&path, &condition).await {
                tracing::warn!(%error, "setting PodScheduled=False failed");
                return;
            }
            record_event(api, name, &pod, "Warning", "FailedScheduling", &reason).await;
            cache.unschedulable.insert(key.clone(), reason);
        }
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Posts an event about `pod` (best effort: a lost event is logged, not retried).
async fn record_event(
    api: &KubeApi,
    scheduler: &str,
    pod: &Value,
    kind: &str,
    reason: &str,
    message: &str,
) {
    let (namespace, pod_name) = pod_key(pod);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let now = now_rfc3339();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        // kube's event names: the object's name and a hex timestamp.
        "metadata": {"name": format!("{pod_name}.{nanos:x}"), "namespace": namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod_name,
            "namespace": namespace,
            "uid": pod["metadata"]["uid"],
            "resourceVersion": pod["metadata"]["resourceVersion"],
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": scheduler},
        "reportingComponent": scheduler,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let path = format!("/api/v1/namespaces/{namespace}/events");
    if let Err(error) = api.post(&path, &event).await {
        tracing::warn!(%error, reason, "recording an event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unbound_live_pods_for_this_scheduler_wait() {
        let pod = |spec: Value, extra: Value| {
            let mut pod = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec});
            if let Value::Object(extra) = extra {
                for (key, value) in extra {
                    pod[key.as_str()] = value;
                }
            }
            pod
        };
        let name = SCHEDULER_NAME_DEFAULT;
        assert!(waiting_for(&pod(json!({}), json!({})), name));
        assert!(waiting_for(
            &pod(json!({"schedulerName": name}), json!({})),
            name
        ));
        assert!(!waiting_for(
            &pod(json!({"nodeName": "n1"}), json!({})),
            name
        ));
        assert!(!waiting_for(
            &pod(json!({"schedulerName": "other"}), json!({})),
            name
        ));
        assert!(!waiting_for(
            &pod(json!({}), json!({"status": {"phase": "Succeeded"}})),
            name
        ));
        let mut deleting = pod(json!({}), json!({}));
        deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(!waiting_for(&deleting, name));
    }

    #[test]
    fn usage_counts_bound_pods_that_have_not_finished() {
        let mut cache = Cache::default();
        let requests =
            json!({"containers": [{"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]});
        for (name, node, phase) in [
            ("a", "n1", "Running"),
            ("b", "n1", "Succeeded"),
            ("c", "", "Pending"),
            ("d", "n2", "Pending"),
        ] {
            let mut pod = json!({"metadata": {"name": name, "namespace": "default"}, "spec": requests.clone(), "status": {"phase": phase}});
            if !node.is_empty() {
                pod["spec"]["nodeName"] = json!(node);
            }
            cache.pods.insert(pod_key(&pod), pod);
        }
        let (_, usage) = cluster_state(&cache);
        assert_eq!(usage["n1"].pods, 1);
        assert_eq!(usage["n1"].requested.cpu_milli, 1000);
        assert_eq!(usage["n2"].pods, 1);
        assert_eq!(usage.len(), 2);
    }
}
