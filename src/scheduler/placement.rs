//! Where a pod fits: the pure part of the scheduler. From the nodes and the pods already
//! bound, it picks a node for a pod or says, in kube-scheduler's words, why none fits.
//!
//! Nothing here does I/O or reads the clock; the objects come in as the JSON the API server
//! serves, and quantities are read with [`crate::apiserver::validate::parse_quantity`].

use std::collections::BTreeMap;

use serde_json::Value;

use crate::apiserver::validate::parse_quantity;

/// Pods a node takes when its status does not say (kubelet's default `--max-pods`).
pub const NODE_PODS_DEFAULT: i64 = 110;

/// What a pod asks of a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// CPU in millicores.
    pub cpu_milli: i64,
    /// Memory in bytes.
    pub memory: i64,
}

impl Requests {
    /// A pod's effective requests, as kube-scheduler computes them: the sum over its
    /// containers, or the largest init container's if that is more (init containers run
    /// one at a time, before the others).
    pub fn of_pod(pod: &Value) -> Requests {
        let spec = &pod["spec"];
        let mut total = Requests::default();
        for container in spec["containers"].as_array().into_iter().flatten() {
            let one = Requests::of_container(container);
            total.cpu_milli = total.cpu_milli.saturating_add(one.cpu_milli);
            total.memory = total.memory.saturating_add(one.memory);
        }
        for container in spec["initContainers"].as_array().into_iter().flatten() {
            let one = Requests::of_container(container);
            total.cpu_milli = total.cpu_milli.max(one.cpu_milli);
            total.memory = total.memory.max(one.memory);
        }
        total
    }

    fn of_container(container: &Value) -> Requests {
        let requests = &container["resources"]["requests"];
        Requests {
            cpu_milli: quantity(&requests["cpu"], true),
            memory: quantity(&requests["memory"], false),
        }
    }
}

/// A quantity field in millicores (`milli`) or whole units; absent or malformed counts as
/// zero (the API server validated what it stored). A bare JSON number (`cpu: 2` in YAML
/// arrives as one) is read as its decimal text, as kube reads it.
fn quantity(field: &Value, milli: bool) -> i64 {
    let text = match field {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => return 0,
    };
    match parse_quantity(&text) {
        Ok(quantity) if milli => quantity.milli_value().max(0),
        Ok(quantity) => quantity.value().max(0),
        Err(_) => 0,
    }
}

/// A node as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// `metadata.name`.
    pub name: String,
    /// Its `Ready` condition is `True`.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// `status.allocatable`.
    pub allocatable: Requests,
    /// `status.allocatable.pods`.
    pub pods_max: i64,
    /// `spec.taints` with effect `NoSchedule` or `NoExecute`: (key, value, effect).
    pub taints: Vec<(String, String, String)>,
}

impl Node {
    /// Reads a Node object.
    pub fn from_object(node: &Value) -> Node {
        let allocatable = &node["status"]["allocatable"];
        let ready = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|condition| condition["type"] == "Ready" && condition["status"] == "True");
        let taints = node["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|taint| matches!(taint["effect"].as_str(), Some("NoSchedule" | "NoExecute")))
            .map(|taint| {
                let text = |field: &str| taint[field].as_str().unwrap_or_default().to_owned();
                (text("key"), text("value"), text("effect"))
            })
            .collect();
        let pods_max = if allocatable["pods"].is_null() {
            NODE_PODS_DEFAULT
        } else {
            quantity(&allocatable["pods"], false)
        };
        Node {
            name: node["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            ready,
            unschedulable: node["spec"]["unschedulable"].as_bool().unwrap_or(false),
            allocatable: Requests {
                cpu_milli: quantity(&allocatable["cpu"], true),
                memory: quantity(&allocatable["memory"], false),
            },
            pods_max,
            taints,
        }
    }
}

/// What is already placed on one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sum of the requests of the pods bound to it that have not finished.
    pub requested: Requests,
    /// How many such pods.
    pub pods: i64,
}

/// The taint a node without a True `Ready` condition is treated as having (kube's node
/// lifecycle controller puts it there; here no controller runs, so the scheduler reads the
/// condition itself). Pods that tolerate it may still go there.
const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// The taint kube-scheduler treats a cordoned node as having, for tolerations.
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

impl Usage {
    /// Counts one more pod asking `wants` on the node.
    pub fn add(&mut self, wants: Requests) {
        self.pods += 1;
        self.requested.cpu_milli = self.requested.cpu_milli.saturating_add(wants.cpu_milli);
        self.requested.memory = self.requested.memory.saturating_add(wants.memory);
    }
}

/// Why one node does not take a pod, in kube-scheduler's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Misfit {
    /// Not enough CPU left.
    Cpu,
    /// Not enough memory left.
    Memory,
    /// As many pods as it takes.
    TooManyPods,
    /// Cordoned.
    Unschedulable,
    /// A taint the pod does not tolerate (the not-ready one included): `{key: value}`.
    Taint(String),
}

impl Misfit {
    fn text(&self) -> String {
        match self {
            Misfit::Cpu => "Insufficient cpu".to_owned(),
            Misfit::Memory => "Insufficient memory".to_owned(),
            Misfit::TooManyPods => "Too many pods".to_owned(),
            Misfit::Unschedulable => "node(s) were unschedulable".to_owned(),
            Misfit::Taint(taint) => format!("node(s) had untolerated taint {taint}"),
        }
    }
}

/// The misfits of `node` for `pod` (empty: it fits).
fn misfits(node: &Node, usage: Usage, pod: &Value, wants: Requests) -> Vec<Misfit> {
    let mut found = Vec::new();
    if node.unschedulable && !tolerates(pod, UNSCHEDULABLE_TAINT, "", "NoSchedule") {
        found.push(Misfit::Unschedulable);
    }
    let not_ready = (!node.ready).then(|| {
        (
            NOT_READY_TAINT.to_owned(),
            String::new(),
            "NoSchedule".to_owned(),
        )
    });
    if let Some((key, value, _)) = not_ready
        .iter()
        .chain(&node.taints)
        .find(|(key, value, effect)| !tolerates(pod, key, value, effect))
    {
        found.push(Misfit::Taint(format!("{{{key}: {value}}}")));
    }
    if usage.pods.saturating_add(1) > node.pods_max {
        found.push(Misfit::TooManyPods);
    }
    if usage.requested.cpu_milli.saturating_add(wants.cpu_milli) > node.allocatable.cpu_milli {
        found.push(Misfit::Cpu);
    }
    if usage.requested.memory.saturating_add(wants.memory) > node.allocatable.memory {
        found.push(Misfit::Memory);
    }
    found
}

/// Whether one of the pod's tolerations matches the taint (kube's rules: an empty key with
/// `Exists` matches every taint; an empty effect matches every effect).
fn tolerates(pod: &Value, key: &str, value: &str, effect: &str) -> bool {
    pod["spec"]["tolerations"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|toleration| {
            let field = |name: &str| toleration[name].as_str().unwrap_or_default();
            let effect_matches = field("effect").is_empty() || field("effect") == effect;
            let exists = field("operator") == "Exists";
            let key_matches = (field("key").is_empty() && exists) || field("key") == key;
            let value_matches = exists || field("value") == value;
            effect_matches && key_matches && value_matches
        })
}

/// The node for `pod`: among the nodes it fits, the one with the fewest pods, then the most
/// CPU left, then the first by name, so pods spread evenly. `Err` is kube-scheduler's
/// message, e.g. `0/3 nodes are available: 1 Insufficient memory, 2 Insufficient cpu.`
///
/// # Errors
/// The message when no node fits.
pub fn choose(
    nodes: &[Node],
    usage: &BTreeMap<String, Usage>,
    pod: &Value,
) -> Result<String, String> {
    let wants = Requests::of_pod(pod);
    let mut best: Option<(&Node, Usage)> = None;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for node in nodes {
        let used = usage.get(&node.name).copied().unwrap_or_default();
        let found = misfits(node, used, pod, wants);
        if !found.is_empty() {
            for misfit in found {
                *counts.entry(misfit.text()).or_default() += 1;
            }
            continue;
        }
        let better = match &best {
            None => true,
            Some((chosen, chosen_usage)) => {
                let free = |node: &Node, used: Usage| {
                    node.allocatable.cpu_milli - used.requested.cpu_milli
                };
                (used.pods, -free(node, used), &node.name)
                    < (
                        chosen_usage.pods,
                        -free(chosen, *chosen_usage),
                        &chosen.name,
                    )
            }
        };
        if better {
            best = Some((node, used));
        }
    }
    if let Some((node, _)) = best {
        return Ok(node.name.clone());
    }
    if nodes.is_empty() {
        return Err("no nodes available to schedule pods".to_owned());
    }
    // kube-scheduler lists each reason with its node count, sorted as text.
    let mut reasons: Vec<String> = counts
        .into_iter()
        .map(|(text, count)| format!("{count} {text}"))
        .collect();
    reasons.sort();
    Err(format!(
        "0/{} nodes are available: {}.",
        nodes.len(),
        reasons.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(name: &str, cpu: &str, memory: &str) -> Node {
        Node::from_object(&json!({
            "metadata": {"name": name},
            "status": {
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }))
    }

    fn pod(cpu: &str, memory: &str) -> Value {
        json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": cpu, "memory": memory}}},
        ]}})
    }

    /// Places `pod` and records it in `usage`, as the scheduler does after a binding.
    fn place(
        nodes: &[Node],
        usage: &mut BTreeMap<String, Usage>,
        pod: &Value,
    ) -> Result<String, String> {
        let chosen = choose(nodes, usage, pod)?;
        usage
            .entry(chosen.clone())
            .or_default()
            .add(Requests::of_pod(pod));
        Ok(chosen)
    }

    #[test]
    fn thirty_pods_spread_evenly_over_three_nodes_and_none_overcommits() {
        let nodes = [
            node("n1", "4", "8Gi"),
            node("n2", "4", "8Gi"),
            node("n3", "4", "8Gi"),
        ];
        let mut usage = BTreeMap::new();
        for _ in 0..30 {
            place(&nodes, &mut usage, &pod("100m", "128Mi")).expect("fits");
        }
        let counts: Vec<i64> = usage.values().map(|used| used.pods).collect();
        assert_eq!(counts, vec![10, 10, 10]);
        for used in usage.values() {
            assert_eq!(used.requested.cpu_milli, 1000);
            assert_eq!(used.requested.memory, 10 * 128 * 1024 * 1024);
        }
    }

    #[test]
    fn capacity_is_never_exceeded_and_the_refusal_names_the_resources() {
        let nodes = [node("n1", "1", "1Gi"), node("n2", "2", "512Mi")];
        let mut usage = BTreeMap::new();
        let mut placed = 0;
        let refusal = loop {
            match place(&nodes, &mut usage, &pod("500m", "256Mi")) {
                Ok(_) => placed += 1,
                Err(message) => break message,
            }
            assert!(placed <= 10, "placed more than can fit");
        };
        // n1: 2 × 500m fills its CPU; n2: 2 × 256Mi fills its memory.
        assert_eq!(placed, 4);
        assert_eq!(
            refusal,
            "0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."
        );
        for node in &nodes {
            let used = usage[&node.name];
            assert!(used.requested.cpu_milli <= node.allocatable.cpu_milli);
            assert!(used.requested.memory <= node.allocatable.memory);
        }
    }

    #[test]
    fn unready_cordoned_and_tainted_nodes_are_skipped_unless_tolerated() {
        let mut not_ready = node("a-not-ready", "8", "8Gi");
        not_ready.ready = false;
        let mut cordoned = node("b-cordoned", "8", "8Gi");
        cordoned.unschedulable = true;
        let mut tainted = node("c-tainted", "8", "8Gi");
        tainted.taints = vec![("gpu".into(), "yes".into(), "NoSchedule".into())];
        let nodes = [not_ready, cordoned, tainted];
        let usage = BTreeMap::new();
        assert_eq!(
            choose(&nodes, &usage, &pod("1", "1Gi")).unwrap_err(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {gpu: yes}, 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 1 node(s) were unschedulable."
        );
        let mut tolerant = pod("1", "1Gi");
        tolerant["spec"]["tolerations"] =
            json!([{"key": "gpu", "operator": "Equal", "value": "yes"}]);
        assert_eq!(choose(&nodes, &usage, &tolerant).unwrap(), "c-tainted");
        // Tolerating everything opens every node; the first by name wins the tie.
        tolerant["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
        assert_eq!(choose(&nodes, &usage, &tolerant).unwrap(), "a-not-ready");
    }

    #[test]
    fn requests_add_containers_and_take_the_largest_init_container() {
        let pod = json!({"spec": {
            "containers": [
                {"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                {"resources": {"requests": {"cpu": "0.5"}}},
                {"name": "no-requests"},
            ],
            "initContainers": [
                {"resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}},
            ],
        }});
        assert_eq!(
            Requests::of_pod(&pod),
            Requests {
                cpu_milli: 750,
                memory: 1 << 30
            }
        );
        assert_eq!(Requests::of_pod(&json!({})), Requests::default());
        // `cpu: 2` in YAML is a JSON number.
        let numeric = json!({"spec": {"containers": [
            {"resources": {"requests": {"cpu": 2, "memory": 1.5e9}}},
        ]}});
        assert_eq!(
            Requests::of_pod(&numeric),
            Requests {
                cpu_milli: 2000,
                memory: 1_500_000_000
            }
        );
    }

    #[test]
    fn no_nodes_at_all_is_its_own_message() {
        assert_eq!(
            choose(&[], &BTreeMap::new(), &pod("1", "1")).unwrap_err(),
            "no nodes available to schedule pods"
        );
    }
}
