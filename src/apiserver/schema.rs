//! The kube schema: Kubernetes' object messages from `proto/kube/objects.proto`, compiled by
//! `build.rs` into a descriptor set, and what is answered from it — which fields a kind has
//! (kube's `fieldValidation`: unknown fields are refused, warned about or dropped) and which
//! scalars are Go pointers (for the protobuf decoder).
//!
//! Kubernetes names its proto fields by their JSON names, so one schema serves JSON and
//! protobuf bodies alike; fields Go embeds with `json:",inline"` are marked `kube.inline`, and
//! their fields are looked up in the parent. A message declared without fields is not looked
//! into: its content is neither checked nor dropped.
//!
//! Must not touch: the store, the request or the clock; it only reads objects (and removes the
//! fields it reports, when asked).

use std::sync::LazyLock;

use prost_reflect::{
    DescriptorPool, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor,
};
use serde_json::Value;

/// The protobuf package of `proto/kube/objects.proto`.
const PACKAGE: &str = "kube";

/// Messages whose JSON form is not an object of their fields (a time string, a quantity, an
/// int or a string, embedded JSON): their JSON is not looked into.
const OPAQUE_MESSAGES: &[&str] = &[
    "Time",
    "MicroTime",
    "Quantity",
    "IntOrString",
    "RawExtension",
    "FieldsV1",
];

/// The message of resource quantities (`cpu: 500m`).
const QUANTITY: &str = "Quantity";

/// Keys every top-level object has beyond its message's fields (Go's inlined TypeMeta).
const TYPE_KEYS: &[&str] = &["apiVersion", "kind"];

/// The compiled `proto/kube/objects.proto`.
static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/kube_descriptors.bin"))[..])
        .expect("build.rs compiled proto/kube/objects.proto into a valid descriptor set")
});

/// The field option the schema puts on scalars that are pointers in Kubernetes' Go types.
static POINTER_OPTION: LazyLock<ExtensionDescriptor> = LazyLock::new(|| {
    POOL.get_extension_by_name(&format!("{PACKAGE}.pointer"))
        .expect("proto/kube/objects.proto declares the kube.pointer field option")
});

/// The message `kube.<name>`; the caller names only messages the schema declares.
///
/// # Panics
/// When the schema lacks it: a mismatch between code and `proto/kube/objects.proto`.
pub fn message_descriptor(name: &str) -> MessageDescriptor {
    POOL.get_message_by_name(&format!("{PACKAGE}.{name}"))
        .unwrap_or_else(|| panic!("proto/kube/objects.proto declares {PACKAGE}.{name}"))
}

/// The field option the schema puts on message fields Go embeds with `json:",inline"`.
static INLINE_OPTION: LazyLock<ExtensionDescriptor> = LazyLock::new(|| {
    POOL.get_extension_by_name(&format!("{PACKAGE}.inline"))
        .expect("proto/kube/objects.proto declares the kube.inline field option")
});

/// Whether a message field's own fields sit in its parent's JSON object (a volume's source,
/// a probe's handler) instead of under its name.
pub fn is_inline(field: &FieldDescriptor) -> bool {
    let options = field.options();
    options.has_extension(&INLINE_OPTION)
        && options.get_extension(&INLINE_OPTION).as_bool() == Some(true)
}

/// The field behind JSON key `key` of `message`, looking through inlined fields.
fn json_field(message: &MessageDescriptor, key: &str) -> Option<FieldDescriptor> {
    if let Some(field) = message.get_field_by_name(key).filter(|f| !is_inline(f)) {
        return Some(field);
    }
    message
        .fields()
        .filter(is_inline)
        .find_map(|inline| match inline.kind() {
            Kind::Message(embedded) => json_field(&embedded, key),
            _ => None,
        })
}

/// Whether a scalar field was a pointer in kube's Go type. kube's protobuf encoder writes
/// every plain scalar, set or not, and Go's JSON leaves such zeros out (`omitempty`); a
/// pointer scalar is written only when set, so its zero is the client's value (`replicas: 0`).
pub fn is_pointer(field: &FieldDescriptor) -> bool {
    let options = field.options();
    options.has_extension(&POINTER_OPTION)
        && options.get_extension(&POINTER_OPTION).as_bool() == Some(true)
}

/// Conforms `object`, a `kind` in its JSON form, to the kind's schema as kube's decoder
/// would: returns the fields the schema does not have, as kube names them
/// (`spec.containers[0].imagee`), in key order, and with `remove` takes them out; quantities
/// given as bare numbers (`cpu: 2`) become strings. `None` when the schema does not describe
/// the kind, so nothing is checked.
pub fn conform(kind: &str, object: &mut Value, remove: bool) -> Option<Vec<String>> {
    let message = POOL.get_message_by_name(&format!("{PACKAGE}.{kind}"))?;
    let mut found = Vec::new();
    walk(&message, object, "", true, remove, &mut found);
    Some(found)
}

fn walk(
    message: &MessageDescriptor,
    value: &mut Value,
    path: &str,
    top: bool,
    remove: bool,
    found: &mut Vec<String>,
) {
    if message.name() == QUANTITY {
        // kube's Quantity decodes a bare JSON number too and is stored as its string form.
        if let Value::Number(number) = value {
            *value = Value::String(number.to_string());
        }
        return;
    }
    if message.fields().len() == 0 || OPAQUE_MESSAGES.contains(&message.name()) {
        return;
    }
    // A value of the wrong JSON type is validation's to report, not an unknown field.
    let Value::Object(map) = value else { return };
    let mut unknown = Vec::new();
    for (key, item) in map.iter_mut() {
        let at = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let Some(field) = json_field(message, key) else {
            if !(top && TYPE_KEYS.contains(&key.as_str())) {
                unknown.push(key.clone());
                found.push(at);
            }
            continue;
        };
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                continue;
            };
            let Kind::Message(values) = entry.map_entry_value_field().kind() else {
                continue;
            };
            if let Value::Object(entries) = item {
                for (entry_key, entry_value) in entries.iter_mut() {
                    walk(
                        &values,
                        entry_value,
                        &format!("{at}.{entry_key}"),
                        false,
                        remove,
                        found,
                    );
                }
            }
        } else if let Kind::Message(child) = field.kind() {
            match item {
                Value::Array(items) if field.is_list() => {
                    for (i, element) in items.iter_mut().enumerate() {
                        walk(&child, element, &format!("{at}[{i}]"), false, remove, found);
                    }
                }
                _ => walk(&child, item, &at, false, remove, found),
            }
        }
    }
    if remove {
        for key in unknown {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unknown_fields_are_found_at_every_depth_and_removed_on_request() {
        let mut deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"any": "key"}, "colour": "red"},
            "spec": {
                "replicas": 1,
                "template": {"spec": {
                    "containers": [
                        {"name": "a", "image": "x", "resources": {"limits": {"cpu": "1"}}},
                        {"name": "b", "imagee": "y", "ports": [{"containerPort": 80, "hostPortt": 1}]}
                    ],
                    // Sources sit beside the volume's name (an inlined message).
                    "volumes": [{"name": "v", "nfs": {"server": "s", "path": "/"}},
                                {"name": "w", "emptyDir": {"medium": "Memory", "size": 1}}]
                }},
                "strategy": {"type": "Recreate", "rollingUpdate": null}
            },
            "extra": true
        });
        let original = deployment.clone();
        let found = conform("Deployment", &mut deployment, false).unwrap();
        assert_eq!(
            found,
            [
                "extra",
                "metadata.colour",
                "spec.template.spec.containers[1].imagee",
                "spec.template.spec.containers[1].ports[0].hostPortt",
                "spec.template.spec.volumes[1].emptyDir.size",
            ]
        );
        assert_eq!(deployment, original, "only reported");
        conform("Deployment", &mut deployment, true).unwrap();
        assert!(deployment.get("extra").is_none());
        assert!(deployment["metadata"].get("colour").is_none());
        let second = &deployment["spec"]["template"]["spec"]["containers"][1];
        assert_eq!(
            second,
            &json!({"name": "b", "ports": [{"containerPort": 80}]})
        );
        assert_eq!(conform("Deployment", &mut deployment, false), Some(vec![]));
    }

    #[test]
    fn opaque_values_and_map_values_are_handled_by_their_types() {
        let mut config = json!({
            "metadata": {
                "name": "c",
                "creationTimestamp": "2024-01-01T00:00:00Z",
                "managedFields": [{"manager": "m", "fieldsV1": {"f:data": {}}}]
            },
            "data": {"anything": "goes"}
        });
        assert_eq!(conform("ConfigMap", &mut config, false), Some(vec![]));
        let mut service = json!({"spec": {"ports": [{"port": 80, "targetPort": "web"}]},
                                 "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4", "bogus": 1}]}}});
        assert_eq!(
            conform("Service", &mut service, false),
            Some(vec!["status.loadBalancer.ingress[0].bogus".to_string()])
        );
        assert_eq!(conform("NoSuchKind", &mut json!({}), false), None);
        let mut pod = json!({"spec": {"containers": [{"name": "c", "resources": {
            "requests": {"cpu": 2, "memory": "64Mi"}, "limits": {"cpu": 2.5}}}]}});
        assert_eq!(conform("Pod", &mut pod, false), Some(vec![]));
        assert_eq!(
            pod["spec"]["containers"][0]["resources"],
            json!({"requests": {"cpu": "2", "memory": "64Mi"}, "limits": {"cpu": "2.5"}})
        );
    }
}
