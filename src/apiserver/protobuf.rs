//! Kubernetes protobuf request bodies → the same JSON object a JSON body would have given.
//!
//! kubectl 1.32's typed-client commands (`create namespace|configmap|secret|deployment|
//! service`) send `application/vnd.kubernetes.protobuf` with no JSON fallback (apiserver.md
//! §3). The body is kube's envelope: the magic `k8s\0`, then a `runtime.Unknown` whose
//! `typeMeta` names the kind and whose `raw` is the object's own message. The messages are
//! described by the kube schema (`schema`), which `prost-reflect` decodes against, so no Rust
//! types are generated for them.
//!
//! Kubernetes' proto field names are its JSON names, so each field becomes the JSON key of its
//! name; the few wrapper messages with their own JSON form (times, quantities, int-or-string,
//! raw JSON) are turned into that form. A field this schema does not know is refused, naming
//! its path, rather than dropped: a client must never lose data silently.
//!
//! Must not touch: the store, validation or defaulting — the object it returns goes through
//! exactly the path a JSON body goes through.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use prost_reflect::{
    DynamicMessage, MapKey, MessageDescriptor, ReflectMessage as _, Value as Field,
};
use serde_json::{Map, Value};

use super::schema::{is_inline, is_pointer, message_descriptor};

/// The media type of kube's protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The first bytes of every kube protobuf body ("k8s" and a zero byte).
const ENVELOPE_MAGIC: &[u8] = b"k8s\0";

/// Seconds since 1970 of 10000-01-01T00:00:00Z, the first time RFC 3339 cannot write.
const RFC3339_SECONDS_END: u64 = 253_402_300_800;

/// The kinds whose protobuf bodies are decoded: every kind this server takes in a body.
const DECODED_KINDS: &[(&str, &str)] = &[
    ("v1", "Namespace"),
    ("v1", "Pod"),
    ("v1", "Node"),
    ("v1", "Event"),
    ("v1", "ServiceAccount"),
    ("coordination.k8s.io/v1", "Lease"),
    ("v1", "Binding"),
    ("autoscaling/v1", "Scale"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
];

fn is_zero(value: &Field) -> bool {
    match value {
        Field::Bool(v) => !v,
        Field::I32(v) => *v == 0,
        Field::I64(v) => *v == 0,
        Field::U32(v) => *v == 0,
        Field::U64(v) => *v == 0,
        Field::F32(v) => *v == 0.0,
        Field::F64(v) => *v == 0.0,
        Field::String(v) => v.is_empty(),
        Field::Bytes(v) => v.is_empty(),
        Field::EnumNumber(_) | Field::Message(_) | Field::List(_) | Field::Map(_) => false,
    }
}

/// Why a protobuf body could not be turned into an object.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtobufError {
    /// The body does not start with kube's envelope magic.
    #[error("the protobuf body does not start with the \"k8s\\x00\" envelope prefix")]
    NoEnvelope,
    /// The envelope or the object's bytes are not valid protobuf for their message.
    #[error("the protobuf body does not decode as {message}: {reason}")]
    Malformed {
        /// The message being decoded.
        message: String,
        /// prost's reason.
        reason: String,
    },
    /// The envelope names a kind whose protobuf form is not decoded here.
    #[error(
        "protobuf bodies of {api_version} {kind} are not decoded by this server; send the object as JSON (e.g. kubectl create -f)"
    )]
    KindNotDecoded {
        /// The envelope's apiVersion.
        api_version: String,
        /// The envelope's kind.
        kind: String,
    },
    /// The envelope says the raw bytes are compressed or otherwise encoded.
    #[error("the protobuf body's content encoding {0:?} is not supported")]
    ContentEncoding(String),
    /// A field the schema does not know: refused so that nothing is dropped silently.
    #[error(
        "the protobuf body has field number {number} at {path}, which this server does not decode; send the object as JSON (e.g. kubectl create -f)"
    )]
    UnknownField {
        /// Where in the object, as a JSON path.
        path: String,
        /// Its protobuf field number.
        number: u32,
    },
    /// A value with no JSON form (a time before 1970, raw JSON that does not parse).
    #[error("the protobuf body has an invalid value at {path}: {reason}")]
    BadValue {
        /// Where in the object.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Whether a Content-Type header's media type is kube's protobuf.
#[must_use]
pub fn is_protobuf(media_type: &str) -> bool {
    media_type.eq_ignore_ascii_case(MEDIA_TYPE)
}

/// Decodes a kube protobuf body into the object's JSON form, with `apiVersion` and `kind`
/// taken from the envelope.
///
/// # Errors
/// [`ProtobufError`] when the body is not kube's envelope, names a kind not decoded here, or
/// holds bytes or fields the schema does not describe.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let raw_envelope = body
        .strip_prefix(ENVELOPE_MAGIC)
        .ok_or(ProtobufError::NoEnvelope)?;
    let envelope = decode_message(&message_descriptor("Unknown"), raw_envelope)?;
    reject_unknown_fields(&envelope, "the envelope")?;
    let type_meta = envelope.get_field_by_name("typeMeta");
    let type_meta = type_meta.as_ref().and_then(|v| v.as_message());
    let text = |message: Option<&DynamicMessage>, name: &str| {
        message
            .and_then(|m| m.get_field_by_name(name))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let api_version = text(type_meta, "apiVersion");
    let kind = text(type_meta, "kind");
    let encoding = text(Some(&envelope), "contentEncoding");
    if !encoding.is_empty() {
        return Err(ProtobufError::ContentEncoding(encoding));
    }
    if !DECODED_KINDS.contains(&(api_version.as_str(), kind.as_str())) {
        return Err(ProtobufError::KindNotDecoded { api_version, kind });
    }
    let raw = envelope
        .get_field_by_name("raw")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let object = decode_message(&message_descriptor(&kind), &raw)?;
    let mut json = match to_json(&object, "")? {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    // The envelope's type goes first, where a JSON body has it.
    let mut typed = Map::new();
    typed.insert("apiVersion".into(), Value::String(api_version));
    typed.insert("kind".into(), Value::String(kind));
    typed.append(&mut json);
    Ok(Value::Object(typed))
}

fn decode_message(desc: &MessageDescriptor, bytes: &[u8]) -> Result<DynamicMessage, ProtobufError> {
    DynamicMessage::decode(desc.clone(), bytes).map_err(|err| ProtobufError::Malformed {
        message: desc.name().to_string(),
        reason: err.to_string(),
    })
}

fn reject_unknown_fields(message: &DynamicMessage, path: &str) -> Result<(), ProtobufError> {
    match message.unknown_fields().next() {
        Some(field) => Err(ProtobufError::UnknownField {
            path: if path.is_empty() {
                "the object".to_string()
            } else {
                path.to_string()
            },
            number: field.number(),
        }),
        None => Ok(()),
    }
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A message as kube's JSON shows it: empty lists and maps, and zero plain scalars (see
/// [`is_pointer`]) are left out, as Go's `omitempty` leaves them out.
fn to_json(message: &DynamicMessage, path: &str) -> Result<Value, ProtobufError> {
    reject_unknown_fields(message, path)?;
    let desc = message.descriptor();
    let int_field = |name: &str| -> i64 {
        match message.get_field_by_name(name).as_deref() {
            Some(Field::I64(v)) => *v,
            Some(Field::I32(v)) => i64::from(*v),
            _ => 0,
        }
    };
    let text_field = |name: &str| -> String {
        message
            .get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let bytes_field = |name: &str| -> Vec<u8> {
        message
            .get_field_by_name(name)
            .and_then(|v| v.as_bytes().map(|b| b.to_vec()))
            .unwrap_or_default()
    };
    match desc.full_name().strip_prefix("kube.").unwrap_or_default() {
        name @ ("Time" | "MicroTime") => {
            let (seconds, nanos) = (int_field("seconds"), int_field("nanos"));
            if seconds == 0 && nanos == 0 {
                return Ok(Value::Null);
            }
            let bad = |reason: &str| ProtobufError::BadValue {
                path: path.to_string(),
                reason: reason.to_string(),
            };
            let seconds = u64::try_from(seconds).map_err(|_| bad("a time before 1970"))?;
            let nanos = u32::try_from(nanos)
                .ok()
                .filter(|n| *n < 1_000_000_000)
                .ok_or_else(|| bad("nanoseconds out of range"))?;
            let at = SystemTime::UNIX_EPOCH
                .checked_add(Duration::new(seconds, nanos))
                .ok_or_else(|| bad("a time too far ahead"))?;
            // RFC 3339 has four-digit years: a later time has no text form (and would make
            // the formatter fail).
            if seconds >= RFC3339_SECONDS_END {
                return Err(bad("a time after the year 9999"));
            }
            let text = if name == "Time" {
                humantime::format_rfc3339_seconds(at).to_string()
            } else {
                humantime::format_rfc3339_micros(at).to_string()
            };
            return Ok(Value::String(text));
        }
        "Quantity" => return Ok(Value::String(text_field("string"))),
        "IntOrString" => {
            return Ok(if int_field("type") == 1 {
                Value::String(text_field("strVal"))
            } else {
                Value::from(int_field("intVal"))
            });
        }
        "RawExtension" | "FieldsV1" => {
            let field = if desc.full_name() == "kube.FieldsV1" {
                "Raw"
            } else {
                "raw"
            };
            let raw = bytes_field(field);
            if raw.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&raw).map_err(|err| ProtobufError::BadValue {
                path: path.to_string(),
                reason: format!("embedded JSON does not parse: {err}"),
            });
        }
        _ => {}
    }
    let mut object = Map::new();
    for (field, value) in message.fields() {
        let key = field.name();
        let at = child_path(path, key);
        let json = match value {
            Field::List(items) => {
                if items.is_empty() {
                    continue;
                }
                let mut array = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    array.push(scalar_or_message(item, &format!("{at}[{i}]"))?);
                }
                Value::Array(array)
            }
            Field::Map(entries) => {
                if entries.is_empty() {
                    continue;
                }
                let mut map = Map::new();
                for (entry_key, entry_value) in entries {
                    let MapKey::String(entry_key) = entry_key else {
                        return Err(ProtobufError::BadValue {
                            path: at,
                            reason: "a map whose keys are not strings".into(),
                        });
                    };
                    let item = scalar_or_message(entry_value, &format!("{at}[{entry_key}]"))?;
                    map.insert(entry_key.clone(), item);
                }
                Value::Object(map)
            }
            scalar if is_zero(scalar) && !is_pointer(&field) => continue,
            Field::Message(embedded) if is_inline(&field) => {
                if let Value::Object(fields) = to_json(embedded, path)? {
                    object.extend(fields);
                }
                continue;
            }
            other => match scalar_or_message(other, &at)? {
                Value::Null => continue,
                json => json,
            },
        };
        object.insert(key.to_string(), json);
    }
    Ok(Value::Object(object))
}

/// One value: a scalar as JSON, bytes as base64 (kube's JSON form of `[]byte`), a message
/// recursively.
fn scalar_or_message(value: &Field, path: &str) -> Result<Value, ProtobufError> {
    Ok(match value {
        Field::Bool(v) => Value::Bool(*v),
        Field::I32(v) => Value::from(*v),
        Field::I64(v) => Value::from(*v),
        Field::U32(v) => Value::from(*v),
        Field::U64(v) => Value::from(*v),
        Field::F32(v) => Value::from(f64::from(*v)),
        Field::F64(v) => Value::from(*v),
        Field::String(v) => Value::String(v.clone()),
        Field::Bytes(v) => Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
        Field::Message(m) => to_json(m, path)?,
        Field::EnumNumber(_) | Field::List(_) | Field::Map(_) => {
            return Err(ProtobufError::BadValue {
                path: path.to_string(),
                reason: "a value kube's schema never has here".into(),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use serde_json::json;

    use super::*;

    fn message(name: &str) -> DynamicMessage {
        DynamicMessage::new(message_descriptor(name))
    }

    fn set(message: &mut DynamicMessage, name: &str, value: Field) {
        message.set_field_by_name(name, value);
    }

    /// The bytes kubectl would send for `object` of `api_version`/`kind`.
    fn envelope(api_version: &str, kind: &str, object: &DynamicMessage) -> Vec<u8> {
        let mut type_meta = message("TypeMeta");
        set(
            &mut type_meta,
            "apiVersion",
            Field::String(api_version.into()),
        );
        set(&mut type_meta, "kind", Field::String(kind.into()));
        let mut unknown = message("Unknown");
        set(&mut unknown, "typeMeta", Field::Message(type_meta));
        set(
            &mut unknown,
            "raw",
            Field::Bytes(object.encode_to_vec().into()),
        );
        // kube's encoder always writes its strings, empty or not.
        set(
            &mut unknown,
            "contentEncoding",
            Field::String(String::new()),
        );
        set(&mut unknown, "contentType", Field::String(String::new()));
        let mut body = ENVELOPE_MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        body
    }

    fn meta(name: &str) -> DynamicMessage {
        let mut meta = message("ObjectMeta");
        set(&mut meta, "name", Field::String(name.into()));
        // Written by kube's encoder even when empty; must not reach the object.
        set(&mut meta, "namespace", Field::String(String::new()));
        set(
            &mut meta,
            "creationTimestamp",
            Field::Message(message("Time")),
        );
        set(&mut meta, "generation", Field::I64(0));
        meta
    }

    #[test]
    fn every_decoded_kind_and_the_pointer_marks_are_in_the_schema() {
        for (_, kind) in DECODED_KINDS {
            assert_eq!(message_descriptor(kind).name(), *kind);
        }
        let field = |message: &str, name: &str| {
            message_descriptor(message).get_field_by_name(name).unwrap()
        };
        // The build must keep custom options, or every zero would be dropped.
        assert!(is_pointer(&field("DeploymentSpec", "replicas")));
        assert!(is_pointer(&field(
            "PodSpec",
            "automountServiceAccountToken"
        )));
        assert!(!is_pointer(&field("PodSpec", "hostNetwork")));
        assert!(!is_pointer(&field("ContainerPort", "hostPort")));
    }

    #[test]
    fn a_namespace_decodes_to_its_json_form() {
        let mut namespace = message("Namespace");
        set(&mut namespace, "metadata", Field::Message(meta("demo2")));
        set(
            &mut namespace,
            "spec",
            Field::Message(message("NamespaceSpec")),
        );
        set(
            &mut namespace,
            "status",
            Field::Message(message("NamespaceStatus")),
        );
        let decoded = decode(&envelope("v1", "Namespace", &namespace)).unwrap();
        assert_eq!(
            decoded,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo2"},
                   "spec": {}, "status": {}})
        );
    }

    #[test]
    fn maps_bytes_times_and_zero_numbers_keep_their_json_forms() {
        let mut config = message("ConfigMap");
        let mut meta = meta("c");
        let mut created = message("Time");
        set(&mut created, "seconds", Field::I64(1_700_000_000));
        set(&mut meta, "creationTimestamp", Field::Message(created));
        set(&mut config, "metadata", Field::Message(meta));
        let data = [
            (MapKey::String("a".into()), Field::String("1".into())),
            (MapKey::String("empty".into()), Field::String(String::new())),
        ];
        set(&mut config, "data", Field::Map(data.into_iter().collect()));
        let binary = [(
            MapKey::String("b".into()),
            Field::Bytes(vec![0, 255].into()),
        )];
        set(
            &mut config,
            "binaryData",
            Field::Map(binary.into_iter().collect()),
        );
        set(&mut config, "immutable", Field::Bool(false));
        let decoded = decode(&envelope("v1", "ConfigMap", &config)).unwrap();
        assert_eq!(
            decoded,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "c", "creationTimestamp": "2023-11-14T22:13:20Z"},
                   // An empty value inside a map is a value, not an absent field.
                   "data": {"a": "1", "empty": ""}, "binaryData": {"b": "AP8="},
                   "immutable": false})
        );
    }

    #[test]
    fn inlined_messages_spread_into_their_parent() {
        let mut volume = message("Volume");
        set(&mut volume, "name", Field::String("cache".into()));
        let mut source = message("VolumeSource");
        set(
            &mut source,
            "emptyDir",
            Field::Message(message("EmptyDirVolumeSource")),
        );
        set(&mut volume, "volumeSource", Field::Message(source));
        let mut probe = message("Probe");
        let mut handler = message("ProbeHandler");
        let mut exec = message("ExecAction");
        set(
            &mut exec,
            "command",
            Field::List(vec![Field::String("true".into())]),
        );
        set(&mut handler, "exec", Field::Message(exec));
        set(&mut probe, "handler", Field::Message(handler));
        set(&mut probe, "periodSeconds", Field::I32(5));
        assert_eq!(
            to_json(&volume, "").unwrap(),
            json!({"name": "cache", "emptyDir": {}})
        );
        assert_eq!(
            to_json(&probe, "").unwrap(),
            json!({"exec": {"command": ["true"]}, "periodSeconds": 5})
        );
    }

    #[test]
    fn times_rfc3339_cannot_write_are_refused() {
        for seconds in [253_402_300_800_i64, i64::MAX, -1] {
            let mut namespace = message("Namespace");
            let mut meta = meta("t");
            let mut created = message("Time");
            set(&mut created, "seconds", Field::I64(seconds));
            set(&mut meta, "creationTimestamp", Field::Message(created));
            set(&mut namespace, "metadata", Field::Message(meta));
            let err = decode(&envelope("v1", "Namespace", &namespace)).unwrap_err();
            assert!(
                matches!(&err, ProtobufError::BadValue { path, .. } if path == "metadata.creationTimestamp"),
                "{seconds}: {err}"
            );
        }
    }

    #[test]
    fn fields_the_schema_does_not_know_are_refused_with_their_path() {
        let mut namespace = message("Namespace");
        let mut meta = meta("x");
        // Field 999 of ObjectMeta: some future field this schema lacks.
        let mut raw = meta.encode_to_vec();
        raw.extend([0xba, 0x3e, 0x01, b'z']); // field 999, wire type 2, length 1
        meta = DynamicMessage::decode(message_descriptor("ObjectMeta"), &raw[..]).unwrap();
        set(&mut namespace, "metadata", Field::Message(meta));
        let err = decode(&envelope("v1", "Namespace", &namespace)).unwrap_err();
        assert_eq!(
            err,
            ProtobufError::UnknownField {
                path: "metadata".into(),
                number: 999
            }
        );
        assert!(err.to_string().contains("kubectl create -f"), "{err}");
    }

    #[test]
    fn bodies_that_are_not_decodable_get_clear_errors() {
        assert_eq!(
            decode(b"{\"kind\":\"Namespace\"}"),
            Err(ProtobufError::NoEnvelope)
        );
        let garbage = [ENVELOPE_MAGIC, &[0x0a, 0x7f, 0x01][..]].concat();
        assert!(matches!(
            decode(&garbage),
            Err(ProtobufError::Malformed { .. })
        ));
        let pod = envelope("v1", "PersistentVolume", &message("Namespace"));
        assert_eq!(
            decode(&pod),
            Err(ProtobufError::KindNotDecoded {
                api_version: "v1".into(),
                kind: "PersistentVolume".into()
            })
        );
        let mut type_meta = message("TypeMeta");
        set(&mut type_meta, "apiVersion", Field::String("v1".into()));
        set(&mut type_meta, "kind", Field::String("Namespace".into()));
        let mut unknown = message("Unknown");
        set(&mut unknown, "typeMeta", Field::Message(type_meta));
        set(
            &mut unknown,
            "contentEncoding",
            Field::String("gzip".into()),
        );
        let gzip = [ENVELOPE_MAGIC, &unknown.encode_to_vec()[..]].concat();
        assert_eq!(
            decode(&gzip),
            Err(ProtobufError::ContentEncoding("gzip".into()))
        );
    }
}
