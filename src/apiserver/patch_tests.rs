//! Tests of `apiserver::patch`: the patches kubectl sends, upstream's ordering rules, and the
//! error texts kube-apiserver answers.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn strategic(kind: &str, original: &Value, patch: &Value) -> Result<Value, PatchError> {
    apply_patch(
        PatchType::StrategicMerge,
        kind,
        original,
        patch.to_string().as_bytes(),
    )
}

fn two_container_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "two", "namespace": "demo", "labels": {"app": "two"}},
        "spec": {"containers": [
            {"name": "a", "image": "nginx:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
            {"name": "b", "image": "busybox:1", "command": ["sleep", "3600"]}
        ]}
    })
}

fn container_names(pod: &Value) -> Vec<&str> {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|container| container["name"].as_str().unwrap())
        .collect()
}

#[test]
fn content_types_map_to_patch_types() {
    assert_eq!(
        PatchType::from_content_type("application/merge-patch+json"),
        Some(PatchType::Merge)
    );
    assert_eq!(
        PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
        Some(PatchType::StrategicMerge)
    );
    assert_eq!(
        PatchType::from_content_type("application/json-patch+json"),
        Some(PatchType::Json)
    );
    assert_eq!(
        PatchType::from_content_type("application/apply-patch+yaml"),
        None
    );
    assert_eq!(PatchType::from_content_type("application/json"), None);
    for patch_type in [PatchType::Merge, PatchType::StrategicMerge, PatchType::Json] {
        assert_eq!(
            PatchType::from_content_type(patch_type.content_type()),
            Some(patch_type)
        );
    }
}

#[test]
fn apply_image_bump_keeps_every_container() {
    // What kubectl apply sends after the image of `a` changed in the manifest.
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"image": "nginx:2", "name": "a"}]
        }
    });
    let patched = strategic("Pod", &two_container_pod(), &patch).unwrap();
    assert_eq!(container_names(&patched), ["a", "b"]);
    assert_eq!(patched["spec"]["containers"][0]["image"], "nginx:2");
    assert_eq!(patched["spec"]["containers"][0]["env"][1]["name"], "Y");
    assert_eq!(patched["spec"]["containers"][1]["image"], "busybox:1");
    assert_eq!(
        patched["spec"]["containers"][1]["command"],
        json!(["sleep", "3600"])
    );
    assert!(patched["spec"].get("$setElementOrder/containers").is_none());
    // A plain merge patch with the same body replaces the list: the bug SMP exists to avoid.
    let merged = apply_patch(
        PatchType::Merge,
        "Pod",
        &two_container_pod(),
        patch.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(container_names(&merged), ["a"]);
}

#[test]
fn set_element_order_reorders_and_places_new_items() {
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}],
        "containers": [{"name": "c", "image": "redis"}]
    }});
    let patched = strategic("Pod", &two_container_pod(), &patch).unwrap();
    assert_eq!(container_names(&patched), ["c", "b", "a"]);
}

#[test]
fn set_element_order_slots_server_only_items_as_upstream() {
    let pod = |names: &[&str]| {
        let containers: Vec<Value> = names
            .iter()
            .map(|name| json!({"name": name, "image": "i"}))
            .collect();
        json!({"spec": {"containers": containers}})
    };
    // A new item named in the order list goes where the order says, server-only items after.
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
        "containers": [{"name": "a", "image": "j"}, {"name": "b", "image": "i"}]
    }});
    let patched = strategic("Pod", &pod(&["a", "c"]), &patch).unwrap();
    assert_eq!(container_names(&patched), ["a", "b", "c"]);
    assert_eq!(patched["spec"]["containers"][0]["image"], "j");
    // With a deletion in the same patch, upstream finds the first new item in the room the
    // deletion freed, after the remaining server items.
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "b"}, {"name": "c"}],
        "containers": [{"name": "c", "image": "i"}, {"$patch": "delete", "name": "a"}]
    }});
    let patched = strategic("Pod", &pod(&["a", "b", "d"]), &patch).unwrap();
    assert_eq!(container_names(&patched), ["b", "d", "c"]);
}

#[test]
fn patch_delete_directive_removes_one_item() {
    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "a"}],
        "containers": [{"$patch": "delete", "name": "b"}]
    }});
    let patched = strategic("Pod", &two_container_pod(), &patch).unwrap();
    assert_eq!(container_names(&patched), ["a"]);
    assert_eq!(patched["spec"]["containers"][0]["image"], "nginx:1");
}

#[test]
fn env_merges_by_name() {
    let patch = json!({"spec": {"containers": [{"name": "a", "env": [
        {"name": "Y", "value": "20"}, {"name": "Z", "value": "3"}
    ]}]}});
    let patched = strategic("Pod", &two_container_pod(), &patch).unwrap();
    assert_eq!(
        patched["spec"]["containers"][0]["env"],
        json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "20"}, {"name": "Z", "value": "3"}])
    );
    assert_eq!(container_names(&patched), ["a", "b"]);
}

#[test]
fn deployment_template_containers_merge_by_name() {
    let deployment = json!({"kind": "Deployment", "spec": {"replicas": 1, "template": {
        "metadata": {"labels": {"app": "d"}},
        "spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}
    }}});
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "y:2"}]}}}});
    let patched = strategic("Deployment", &deployment, &patch).unwrap();
    assert_eq!(
        patched["spec"]["template"]["spec"]["containers"],
        json!([{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:2"}])
    );
    assert_eq!(patched["spec"]["replicas"], 1);
}

#[test]
fn service_ports_merge_by_port_and_container_ports_by_container_port() {
    let service =
        json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
    let patch = json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]}});
    let patched = strategic("Service", &service, &patch).unwrap();
    assert_eq!(
        patched["spec"]["ports"],
        json!([{"port": 80, "name": "http"}, {"port": 443, "name": "https", "targetPort": 8443}])
    );

    let pod = json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80}]}]}});
    let patch = json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 81}]}]}});
    let patched = strategic("Pod", &pod, &patch).unwrap();
    // Upstream puts new items before the server's when no `$setElementOrder` says otherwise.
    assert_eq!(
        patched["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 81}, {"containerPort": 80}])
    );
}

#[test]
fn lists_without_strategy_replace() {
    // Tolerations and node taints carry no patchStrategy upstream.
    let pod = json!({"spec": {"tolerations": [{"key": "a", "operator": "Exists"}]}});
    let patch = json!({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}});
    let patched = strategic("Pod", &pod, &patch).unwrap();
    assert_eq!(
        patched["spec"]["tolerations"],
        json!([{"key": "b", "operator": "Exists"}])
    );

    let node = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}});
    let patch = json!({"spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]}});
    let patched = strategic("Node", &node, &patch).unwrap();
    assert_eq!(
        patched["spec"]["taints"],
        json!([{"key": "b", "effect": "NoSchedule"}])
    );
}

#[test]
fn finalizers_merge_as_a_set_and_delete_from_primitive_list_removes() {
    let pod = json!({"metadata": {"finalizers": ["a", "b"]}});
    let patched = strategic(
        "Pod",
        &pod,
        &json!({"metadata": {"finalizers": ["b", "c"]}}),
    )
    .unwrap();
    assert_eq!(patched["metadata"]["finalizers"], json!(["a", "b", "c"]));

    let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
    let patched = strategic("Pod", &pod, &patch).unwrap();
    assert_eq!(patched["metadata"]["finalizers"], json!(["b"]));
    assert!(
        patched["metadata"]
            .get("$deleteFromPrimitiveList/finalizers")
            .is_none()
    );

    // Upstream's ordering: patch items keep the patch's order, server-only ones slot in by
    // their original place.
    let original = json!({"metadata": {"finalizers": ["1", "2", "3"]}});
    let patched = strategic(
        "Pod",
        &original,
        &json!({"metadata": {"finalizers": ["3", "1"]}}),
    )
    .unwrap();
    assert_eq!(patched["metadata"]["finalizers"], json!(["2", "3", "1"]));
}

#[test]
fn null_deletes_a_map_key_and_maps_merge() {
    let patch = json!({"metadata": {"labels": {"app": null, "tier": "fe"}}});
    let patched = strategic("Pod", &two_container_pod(), &patch).unwrap();
    assert_eq!(patched["metadata"]["labels"], json!({"tier": "fe"}));
    assert_eq!(patched["metadata"]["name"], "two");
}

#[test]
fn patch_replace_directive_on_a_map_and_on_a_list() {
    let pod = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
    let patch = json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}});
    let patched = strategic("Pod", &pod, &patch).unwrap();
    assert_eq!(patched["metadata"]["labels"], json!({"c": "3"}));

    let patch =
        json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "z", "image": "z"}]}});
    let patched = strategic("Pod", &two_container_pod(), &patch).unwrap();
    assert_eq!(
        patched["spec"]["containers"],
        json!([{"name": "z", "image": "z"}])
    );

    let patch = json!({"metadata": {"labels": {"$patch": "delete"}}});
    let patched = strategic("Pod", &pod, &patch).unwrap();
    assert_eq!(patched["metadata"]["labels"], json!({}));
}

#[test]
fn retain_keys_clears_unlisted_fields() {
    let deployment = json!({"spec": {"strategy": {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}
    }}});
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
    let patched = strategic("Deployment", &deployment, &patch).unwrap();
    assert_eq!(patched["spec"]["strategy"], json!({"type": "Recreate"}));

    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}});
    let error = strategic("Deployment", &deployment, &patch).unwrap_err();
    assert_eq!(error.to_string(), "invalid patch format of retainKeys");
    assert_eq!((error.code(), error.reason()), (400, "BadRequest"));
}

#[test]
fn fresh_values_lose_their_directives() {
    let patch = json!({"spec": {"containers": [{"name": "a", "image": "x", "env": [
        {"name": "E", "value": "1"}, {"$patch": "delete", "name": "F"}
    ]}], "$setElementOrder/containers": [{"name": "a"}]}});
    let patched = strategic("Pod", &json!({"metadata": {"name": "p"}}), &patch).unwrap();
    assert_eq!(
        patched["spec"],
        json!({"containers": [{"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}]}]})
    );
}

#[test]
fn strategic_errors_match_upstream() {
    let error = strategic(
        "Pod",
        &two_container_pod(),
        &json!({"spec": {"containers": [{"image": "x"}]}}),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "map: map[image:x] does not contain declared merge key: name"
    );
    assert_eq!(error.code(), 500);

    let error = strategic(
        "Pod",
        &two_container_pod(),
        &json!({"metadata": {"$patch": "merge"}}),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown patch type: merge in map: map[$patch:merge]"
    );

    let error = strategic(
        "Pod",
        &two_container_pod(),
        &json!({"spec": {"containers": [{"$patch": "merge"}]}}),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "merging lists cannot yet be specified in the patch"
    );

    let error = strategic("Widget", &json!({}), &json!({})).unwrap_err();
    assert_eq!(
        error.to_string(),
        "strategic merge patch format is not supported"
    );
    assert_eq!(error.code(), 400);

    let error = strategic("Pod", &json!({}), &json!(["x"])).unwrap_err();
    assert_eq!(
        error.to_string(),
        "json: cannot unmarshal array into Go value of type map[string]interface {}"
    );
    assert_eq!(error.code(), 400);

    let error = strategic(
        "Pod",
        &json!({"spec": {"containers": [[1]]}}),
        &json!({"spec": {"containers": [[2]]}}),
    )
    .unwrap_err();
    assert_eq!(
        (error.to_string().as_str(), error.code()),
        ("lists of lists are not supported", 422)
    );

    let error = apply_patch(PatchType::StrategicMerge, "Pod", &json!({}), b"{").unwrap_err();
    assert_eq!(error.code(), 400);

    let patch = json!({"spec": {
        "$setElementOrder/containers": [{"name": "a"}],
        "containers": [{"name": "b", "image": "x"}]
    }});
    let error = strategic("Pod", &two_container_pod(), &patch).unwrap_err();
    assert!(error.to_string().starts_with("The order in patch list:\n[map[image:x name:b]]\n doesn't match $setElementOrder/ list:\n[map[name:a]]"), "{error}");
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let mut original = json!({});
    let mut patch = json!({"leaf": 1});
    for _ in 0..(STRATEGIC_PATCH_DEPTH_MAX + 5) {
        original = json!({"n": original});
        patch = json!({"n": patch});
    }
    let error = strategic("ConfigMap", &original, &patch).unwrap_err();
    assert!(error.to_string().contains("deeper than"), "{error}");
}

#[test]
fn merge_patch_null_deletes_and_lists_replace() {
    let patch = br#"{"metadata":{"labels":{"app":null,"x":"y"}},"spec":{"containers":[{"name":"c","image":"i"}]}}"#;
    let patched = apply_patch(PatchType::Merge, "Pod", &two_container_pod(), patch).unwrap();
    assert_eq!(patched["metadata"]["labels"], json!({"x": "y"}));
    assert_eq!(container_names(&patched), ["c"]);

    let error = apply_patch(PatchType::Merge, "Pod", &two_container_pod(), b"null").unwrap_err();
    assert_eq!(
        (error.to_string().as_str(), error.code()),
        ("Invalid JSON Patch", 400)
    );
    let error = apply_patch(PatchType::Merge, "Pod", &two_container_pod(), b"[1]").unwrap_err();
    assert_eq!(
        error.to_string(),
        "error decoding patch: json: cannot unmarshal array into Go value of type map[string]interface {}"
    );
    let error = apply_patch(PatchType::Merge, "Pod", &two_container_pod(), b"{nope").unwrap_err();
    assert!(
        error.to_string().starts_with("error decoding patch: "),
        "{error}"
    );
    assert_eq!(error.reason(), "BadRequest");
}

#[test]
fn json_patch_operations() {
    let pod = two_container_pod();
    let patch = json!([
        {"op": "test", "path": "/metadata/name", "value": "two"},
        {"op": "add", "path": "/metadata/labels/j", "value": "1"},
        {"op": "replace", "path": "/spec/containers/1/image", "value": "busybox:2"},
        {"op": "remove", "path": "/spec/containers/0/env/0"},
        {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/copy"},
        {"op": "move", "from": "/metadata/labels/j", "path": "/metadata/labels/k"}
    ]);
    let patched = apply_patch(PatchType::Json, "Pod", &pod, patch.to_string().as_bytes()).unwrap();
    assert_eq!(
        patched["metadata"]["labels"],
        json!({"app": "two", "copy": "two", "k": "1"})
    );
    assert_eq!(patched["spec"]["containers"][1]["image"], "busybox:2");
    assert_eq!(
        patched["spec"]["containers"][0]["env"],
        json!([{"name": "Y", "value": "2"}])
    );

    for failing in [
        json!([{"op": "test", "path": "/metadata/name", "value": "other"}]),
        json!([{"op": "remove", "path": "/metadata/nothing"}]),
        json!([{"op": "replace", "path": "/spec/containers/9/image", "value": "x"}]),
        json!([{"op": "frobnicate", "path": "/metadata/name"}]),
    ] {
        let error =
            apply_patch(PatchType::Json, "Pod", &pod, failing.to_string().as_bytes()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the server rejected our request due to an error in our request",
            "{failing}"
        );
        assert_eq!((error.code(), error.reason()), (422, "Invalid"));
        let PatchError::JsonPatchFailed { detail } = error else {
            panic!("{error:?}")
        };
        assert!(!detail.is_empty());
    }

    let error = apply_patch(PatchType::Json, "Pod", &pod, br#"{"op":"add"}"#).unwrap_err();
    assert_eq!(
        error.to_string(),
        "error decoding patch: json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp"
    );
    assert_eq!(error.code(), 400);
}

#[test]
fn json_patch_operation_count_is_bounded() {
    let operation = json!({"op": "test", "path": "/kind", "value": "Pod"});
    let too_many = Value::Array(vec![operation; JSON_PATCH_OPERATIONS_MAX + 1]);
    let error = apply_patch(
        PatchType::Json,
        "Pod",
        &two_container_pod(),
        too_many.to_string().as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "The allowed maximum operations in a JSON patch is 10000, got 10001"
    );
    assert_eq!(
        (error.code(), error.reason()),
        (413, "RequestEntityTooLarge")
    );
}

/// The RFC 7386 patch that turns `from` into `to` (both objects without nulls).
fn merge_patch_diff(from: &Value, to: &Value) -> Value {
    match (from, to) {
        (Value::Object(from_map), Value::Object(to_map)) => {
            let mut patch = serde_json::Map::new();
            for key in from_map.keys() {
                if !to_map.contains_key(key) {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            for (key, to_value) in to_map {
                match from_map.get(key) {
                    Some(from_value) if from_value == to_value => {}
                    Some(from_value) if from_value.is_object() && to_value.is_object() => {
                        patch.insert(key.clone(), merge_patch_diff(from_value, to_value));
                    }
                    _ => {
                        patch.insert(key.clone(), to_value.clone());
                    }
                }
            }
            Value::Object(patch)
        }
        _ => to.clone(),
    }
}

fn json_without_nulls() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        "[a-z]{0,4}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn json_object_without_nulls() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-d]", json_without_nulls(), 0..5)
        .prop_map(|map| Value::Object(map.into_iter().collect()))
}

proptest! {
    #[test]
    fn merge_patch_of_the_diff_yields_the_target(
        from in json_object_without_nulls(),
        to in json_object_without_nulls(),
    ) {
        let patch = merge_patch_diff(&from, &to);
        let patched = apply_patch(PatchType::Merge, "ConfigMap", &from, patch.to_string().as_bytes()).unwrap();
        prop_assert_eq!(&patched, &to);
        // Maps without lists carrying merge keys merge the same way strategically.
        let patched = apply_patch(PatchType::StrategicMerge, "ConfigMap", &from, patch.to_string().as_bytes()).unwrap();
        prop_assert_eq!(&patched, &to);
    }
}

/// Any JSON, nulls and directive keys included, for the no-panic property.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i32..3).prop_map(Value::from),
        prop_oneof![
            Just("delete"),
            Just("replace"),
            Just("merge"),
            Just("a"),
            Just("b")
        ]
        .prop_map(Value::from),
    ];
    let keys = prop_oneof![
        Just("name".to_string()),
        Just("containers".to_string()),
        Just("spec".to_string()),
        Just("metadata".to_string()),
        Just("finalizers".to_string()),
        Just("$patch".to_string()),
        Just("$retainKeys".to_string()),
        Just("$setElementOrder/containers".to_string()),
        Just("$deleteFromPrimitiveList/finalizers".to_string()),
        "[a-c]",
    ];
    leaf.prop_recursive(4, 40, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Whatever the body, a patch answers a result or an error, never a panic.
    #[test]
    fn any_patch_answers_without_panicking(original in any_json(), patch in any_json()) {
        for kind in ["Pod", "Deployment", "Node"] {
            for patch_type in [PatchType::StrategicMerge, PatchType::Merge, PatchType::Json] {
                let result = apply_patch(patch_type, kind, &original, patch.to_string().as_bytes());
                if let Err(error) = result {
                    prop_assert!(!error.to_string().is_empty());
                }
            }
        }
    }
}
