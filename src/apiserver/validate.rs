//! Validation of the objects the API server stores, with kube-apiserver's field errors, and
//! Kubernetes resource quantities.
//!
//! Owns: the rules a create or update must pass (names, labels, annotations, finalizers, the
//! basics of pod, deployment, service, configmap and secret specs), the text of each field
//! error, the `Kind "name" is invalid: ...` message of the 422 Status, and quantity parsing
//! (`100m`, `1Gi`, `1e3`) for validation and the scheduler.
//! Must not: do I/O, fill defaults or change the object; the caller answers 422 when
//! [`validate`] returns errors.
//!
//! kube-compat: rules and texts follow `k8s.io/apimachinery` v0.32 (`pkg/util/validation`,
//! `pkg/api/validation/objectmeta.go`, `pkg/util/validation/field`, `pkg/api/resource`) and the
//! subset of `pkg/apis/core/validation` and `pkg/apis/apps/validation` listed above. Where kube
//! prints a Go struct with `%#v` we print its JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use super::selector::{LabelOperator, LabelRequirement};

/// Longest DNS-1123 subdomain (object names of most kinds, label key prefixes): RFC 1123.
pub const DNS1123_SUBDOMAIN_LENGTH_MAX: usize = 253;
/// Longest DNS-1123 label (namespace names, container names): RFC 1123.
pub const DNS1123_LABEL_LENGTH_MAX: usize = 63;
/// Longest DNS-1035 label (service names): RFC 1035.
pub const DNS1035_LABEL_LENGTH_MAX: usize = 63;
/// Longest name part of a label key or qualified name (kube's `qualifiedNameMaxLength`).
pub const QUALIFIED_NAME_LENGTH_MAX: usize = 63;
/// Longest label value (kube's `LabelValueMaxLength`).
pub const LABEL_VALUE_LENGTH_MAX: usize = 63;
/// Most bytes of all annotation keys and values of one object together
/// (kube's `TotalAnnotationSizeLimitB`): annotations ride along on every read and watch event.
pub const ANNOTATIONS_TOTAL_BYTES_MAX: usize = 256 * 1024;
/// Most bytes of a ConfigMap's or Secret's data (kube's `MaxSecretSize`), which keeps one
/// object well under etcd's request limit.
pub const CONFIG_DATA_BYTES_MAX: usize = 1024 * 1024;
/// Longest named port (RFC 6335 service names, kube's `IsValidPortName`).
pub const PORT_NAME_LENGTH_MAX: usize = 15;
/// Highest TCP/UDP port.
pub const PORT_MAX: i64 = 65_535;
/// Most significant digits of a quantity kept exactly; further digits only round up. 36 digits
/// times the largest scale still fit in an `i128`.
pub const QUANTITY_SIGNIFICANT_DIGITS_MAX: usize = 36;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const CONFIG_KEY_ERR: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";
/// kube's quantity pattern, quoted in its parse error.
const QUANTITY_FMT: &str = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

// ---------------------------------------------------------------------------------------------
// Field errors.

/// The kind of a field error; [`FieldErrorKind::reason`] is the Status cause `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// A required value is missing.
    Required,
    /// A value is malformed.
    Invalid,
    /// A value is not one of an enumeration.
    NotSupported,
    /// A value that must be unique is repeated.
    Duplicate,
    /// A value is too long.
    TooLong,
    /// A value is not allowed here.
    Forbidden,
}

impl FieldErrorKind {
    /// kube's `CauseType` (`FieldValueRequired`, ...).
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
        }
    }

    /// The words that open kube's message (`Required value`, ...).
    pub fn text(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::Forbidden => "Forbidden",
        }
    }
}

/// One validation failure of one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path (`spec.containers[0].image`).
    pub field: String,
    /// What is wrong.
    pub kind: FieldErrorKind,
    /// kube's message after the kind's words, with the bad value first where kube shows one
    /// (`"Bad_Name": a lowercase RFC 1123 ...`); empty when kube says only the words.
    pub detail: String,
}

impl FieldError {
    /// A missing value; `detail` may be empty.
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: detail.into(),
        }
    }

    /// A malformed value.
    pub fn invalid(field: impl Into<String>, value: &BadValue<'_>, detail: &str) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid,
            detail: join_detail(&value.to_string(), detail),
        }
    }

    /// A value outside an enumeration; kube quotes the supported values in the given order.
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> FieldError {
        let supported: Vec<String> = supported.iter().map(|value| go_quote(value)).collect();
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::NotSupported,
            detail: join_detail(
                &go_quote(value),
                &format!("supported values: {}", supported.join(", ")),
            ),
        }
    }

    /// A repeated value.
    pub fn duplicate(field: impl Into<String>, value: &BadValue<'_>) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Duplicate,
            detail: value.to_string(),
        }
    }

    /// A value longer than `bytes_max`.
    pub fn too_long(field: impl Into<String>, bytes_max: usize) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::TooLong,
            detail: format!("may not be more than {bytes_max} bytes"),
        }
    }

    /// A value not allowed here.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            detail: detail.into(),
        }
    }

    /// The Status cause `message` (kube's `ErrorBody`): `Required value`,
    /// `Invalid value: "x": ...`.
    pub fn message(&self) -> String {
        join_detail(self.kind.text(), &self.detail)
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.field, self.message())
    }
}

/// A bad value as kube prints it in a field error: strings quoted, numbers bare, maps and
/// other structures as JSON.
#[derive(Clone, Copy, Debug)]
pub enum BadValue<'a> {
    /// A string, printed quoted.
    Str(&'a str),
    /// An integer, printed bare.
    Int(i64),
    /// A map of strings (labels), printed as Go's `%#v` prints a `map[string]string`.
    StringMap(&'a BTreeMap<String, String>),
    /// Any other value, printed as JSON.
    Json(&'a Value),
}

impl fmt::Display for BadValue<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadValue::Str(text) => formatter.write_str(&go_quote(text)),
            BadValue::Int(number) => write!(formatter, "{number}"),
            BadValue::StringMap(map) => {
                let entries: Vec<String> = map
                    .iter()
                    .map(|(key, value)| format!("{}:{}", go_quote(key), go_quote(value)))
                    .collect();
                write!(formatter, "map[string]string{{{}}}", entries.join(", "))
            }
            BadValue::Json(value) => write!(formatter, "{value}"),
        }
    }
}

fn join_detail(head: &str, detail: &str) -> String {
    if detail.is_empty() {
        head.to_string()
    } else {
        format!("{head}: {detail}")
    }
}

/// A string quoted as Go's `%q` quotes it (close enough for the printable text of names).
fn go_quote(text: &str) -> String {
    format!("\"{}\"", text.escape_debug())
}

/// The message of kube-apiserver's 422 Status: `Pod "x" is invalid: <error>` for one error,
/// `... is invalid: [<error>, <error>]` for several (repeated texts once). `kind` is the
/// object's kind; kinds of a named API group get the group (`Deployment.apps`), as upstream's
/// `GroupKind` prints.
pub fn invalid_status_message(kind: &str, name: &str, errors: &[FieldError]) -> String {
    let qualified_kind = match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => format!("{kind}.apps"),
        _ => kind.to_string(),
    };
    let mut seen = BTreeSet::new();
    let texts: Vec<String> = errors
        .iter()
        .map(ToString::to_string)
        .filter(|text| seen.insert(text.clone()))
        .collect();
    let name = go_quote(name);
    match texts.len() {
        0 => format!("{qualified_kind} {name} is invalid"),
        1 => format!("{qualified_kind} {name} is invalid: {}", texts[0]),
        _ => format!("{qualified_kind} {name} is invalid: [{}]", texts.join(", ")),
    }
}

// ---------------------------------------------------------------------------------------------
// String rules (kube's `pkg/util/validation`).

fn regex_error(message: &str, pattern: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{message} (regex used for validation is '{pattern}')");
    }
    // kube separates examples with "', " and " or ", which doubles the space.
    let examples: Vec<String> = examples
        .iter()
        .map(|example| format!("'{example}', "))
        .collect();
    format!(
        "{message} (e.g. {}regex used for validation is '{pattern}')",
        examples.join(" or ")
    )
}

fn max_length_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

fn is_lower_alphanumeric(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1123_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            is_lower_alphanumeric(first)
                && is_lower_alphanumeric(last)
                && bytes
                    .iter()
                    .all(|&byte| is_lower_alphanumeric(byte) || byte == b'-')
        }
        _ => false,
    }
}

fn matches_dns1123_subdomain(text: &str) -> bool {
    text.split('.').all(matches_dns1123_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// kube's `IsDNS1123Label`: the reasons `text` is not a DNS-1123 label (none when it is).
pub fn dns1123_label_errors(text: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if text.len() > DNS1123_LABEL_LENGTH_MAX {
        errors.push(max_length_error(DNS1123_LABEL_LENGTH_MAX));
    }
    if !matches_dns1123_label(text) {
        if matches_dns1123_subdomain(text) {
            errors.push("must not contain dots".to_string());
        } else {
            errors.push(regex_error(
                DNS1123_LABEL_ERR,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errors
}

/// kube's `IsDNS1123Subdomain`.
pub fn dns1123_subdomain_errors(text: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if text.len() > DNS1123_SUBDOMAIN_LENGTH_MAX {
        errors.push(max_length_error(DNS1123_SUBDOMAIN_LENGTH_MAX));
    }
    if !matches_dns1123_subdomain(text) {
        errors.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errors
}

/// kube's `IsDNS1035Label`.
pub fn dns1035_label_errors(text: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if text.len() > DNS1035_LABEL_LENGTH_MAX {
        errors.push(max_length_error(DNS1035_LABEL_LENGTH_MAX));
    }
    let starts_with_letter = text.as_bytes().first().is_some_and(u8::is_ascii_lowercase);
    if !(starts_with_letter && matches_dns1123_label(text)) {
        errors.push(regex_error(
            DNS1035_LABEL_ERR,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errors
}

/// kube's `IsQualifiedName`, the rule for label keys and (lower-cased) annotation keys: an
/// optional DNS subdomain prefix and `/`, then a name of at most 63 characters.
pub fn label_key_errors(key: &str) -> Vec<String> {
    let examples = ["MyName", "my.name", "123-abc"];
    let mut errors = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_string());
            } else {
                errors.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|message| format!("prefix part {message}")),
                );
            }
            *name
        }
        _ => {
            errors.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &examples)
            ));
            return errors;
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_LENGTH_MAX {
        errors.push(format!(
            "name part {}",
            max_length_error(QUALIFIED_NAME_LENGTH_MAX)
        ));
    }
    if !matches_qualified_name(name) {
        errors.push(format!(
            "name part {}",
            regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &examples)
        ));
    }
    errors
}

/// kube's `IsValidLabelValue`.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > LABEL_VALUE_LENGTH_MAX {
        errors.push(max_length_error(LABEL_VALUE_LENGTH_MAX));
    }
    if !value.is_empty() && !matches_qualified_name(value) {
        errors.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

/// kube's `IsConfigMapKey`, the rule for ConfigMap and Secret data keys.
pub fn config_key_errors(key: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if key.len() > DNS1123_SUBDOMAIN_LENGTH_MAX {
        errors.push(max_length_error(DNS1123_SUBDOMAIN_LENGTH_MAX));
    }
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_');
    if key.is_empty() || !key.bytes().all(allowed) {
        errors.push(regex_error(
            CONFIG_KEY_ERR,
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    match key {
        "." => errors.push("must not be '.'".to_string()),
        ".." => errors.push("must not be '..'".to_string()),
        _ if key.starts_with("..") => errors.push("must not start with '..'".to_string()),
        _ => {}
    }
    errors
}

fn port_number_errors(port: i64) -> Vec<String> {
    if (1..=PORT_MAX).contains(&port) {
        Vec::new()
    } else {
        vec![format!("must be between 1 and {PORT_MAX}, inclusive")]
    }
}

/// kube's `IsValidPortName`.
fn port_name_errors(name: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if name.len() > PORT_NAME_LENGTH_MAX {
        errors.push(max_length_error(PORT_NAME_LENGTH_MAX));
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|byte| is_lower_alphanumeric(byte) || byte == b'-')
    {
        errors.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !name.bytes().any(|byte| byte.is_ascii_lowercase()) {
        errors.push("must contain at least one letter (a-z)".to_string());
    }
    if name.contains("--") {
        errors.push("must not contain consecutive hyphens".to_string());
    }
    if name.starts_with('-') || name.ends_with('-') {
        errors.push("must not begin or end with a hyphen".to_string());
    }
    errors
}

// ---------------------------------------------------------------------------------------------
// Objects.

/// How a kind's names are checked.
#[derive(Clone, Copy)]
enum NameRule {
    Dns1123Subdomain,
    Dns1123Label,
    Dns1035Label,
}

impl NameRule {
    fn errors(self, name: &str) -> Vec<String> {
        match self {
            NameRule::Dns1123Subdomain => dns1123_subdomain_errors(name),
            NameRule::Dns1123Label => dns1123_label_errors(name),
            NameRule::Dns1035Label => dns1035_label_errors(name),
        }
    }
}

fn name_rule(kind: &str) -> NameRule {
    match kind {
        "Namespace" => NameRule::Dns1123Label,
        "Service" => NameRule::Dns1035Label,
        _ => NameRule::Dns1123Subdomain,
    }
}

fn is_cluster_scoped(kind: &str) -> bool {
    matches!(kind, "Namespace" | "Node")
}

/// The finalizers kube knows without a domain prefix.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];
const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

/// Validates an object of `kind` as kube-apiserver does on create and update, returning every
/// failure (none when the object is valid).
pub fn validate(kind: &str, obj: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    validate_object_meta(
        kind,
        obj.get("metadata").unwrap_or(&Value::Null),
        "metadata",
        &mut errors,
    );
    match kind {
        "Pod" => validate_pod_spec(obj.get("spec"), "spec", true, &mut errors),
        "Deployment" => validate_deployment(obj, &mut errors),
        "Service" => validate_service(obj, &mut errors),
        "ConfigMap" => validate_config_data(obj, false, &mut errors),
        "Secret" => validate_config_data(obj, true, &mut errors),
        _ => {}
    }
    errors
}

fn string_at<'a>(value: Option<&'a Value>, key: &str) -> &'a str {
    value
        .and_then(|value| value.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn validate_object_meta(kind: &str, meta: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let rule = name_rule(kind);
    let generate_name = string_at(Some(meta), "generateName");
    if !generate_name.is_empty() {
        // A prefix may end in '-': the generated suffix follows it.
        let masked = match generate_name.strip_suffix('-') {
            Some(stem) => format!("{stem}a"),
            None => generate_name.to_string(),
        };
        for message in rule.errors(&masked) {
            errors.push(FieldError::invalid(
                format!("{path}.generateName"),
                &BadValue::Str(generate_name),
                &message,
            ));
        }
    }
    let name = string_at(Some(meta), "name");
    if name.is_empty() {
        errors.push(FieldError::required(
            format!("{path}.name"),
            "name or generateName is required",
        ));
    } else {
        for message in rule.errors(name) {
            errors.push(FieldError::invalid(
                format!("{path}.name"),
                &BadValue::Str(name),
                &message,
            ));
        }
    }
    let namespace = string_at(Some(meta), "namespace");
    if is_cluster_scoped(kind) {
        if !namespace.is_empty() {
            errors.push(FieldError::forbidden(
                format!("{path}.namespace"),
                "not allowed on this type",
            ));
        }
    } else if namespace.is_empty() {
        errors.push(FieldError::required(format!("{path}.namespace"), ""));
    } else {
        for message in dns1123_label_errors(namespace) {
            errors.push(FieldError::invalid(
                format!("{path}.namespace"),
                &BadValue::Str(namespace),
                &message,
            ));
        }
    }
    validate_labels(
        &string_map(meta.get("labels")),
        &format!("{path}.labels"),
        errors,
    );
    validate_annotations(
        &string_map(meta.get("annotations")),
        &format!("{path}.annotations"),
        errors,
    );
    if let Some(finalizers) = meta.get("finalizers").and_then(Value::as_array) {
        for finalizer in finalizers.iter().filter_map(Value::as_str) {
            validate_finalizer(finalizer, &format!("{path}.finalizers"), errors);
        }
    }
}

fn validate_labels(labels: &BTreeMap<String, String>, path: &str, errors: &mut Vec<FieldError>) {
    for (key, value) in labels {
        for message in label_key_errors(key) {
            errors.push(FieldError::invalid(path, &BadValue::Str(key), &message));
        }
        for message in label_value_errors(value) {
            errors.push(FieldError::invalid(path, &BadValue::Str(value), &message));
        }
    }
}

fn validate_annotations(
    annotations: &BTreeMap<String, String>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let mut total_bytes = 0;
    for (key, value) in annotations {
        // Annotation keys follow the label-key rule without regard to case.
        for message in label_key_errors(&key.to_lowercase()) {
            errors.push(FieldError::invalid(path, &BadValue::Str(key), &message));
        }
        total_bytes += key.len() + value.len();
    }
    if total_bytes > ANNOTATIONS_TOTAL_BYTES_MAX {
        errors.push(FieldError::too_long(path, ANNOTATIONS_TOTAL_BYTES_MAX));
    }
}

fn validate_finalizer(finalizer: &str, path: &str, errors: &mut Vec<FieldError>) {
    let messages = label_key_errors(finalizer);
    if !messages.is_empty() {
        for message in messages {
            errors.push(FieldError::invalid(
                path,
                &BadValue::Str(finalizer),
                &message,
            ));
        }
        return;
    }
    if !finalizer.contains('/') && !STANDARD_FINALIZERS.contains(&finalizer) {
        errors.push(FieldError::invalid(
            path,
            &BadValue::Str(finalizer),
            "name is neither a standard finalizer name nor is it fully qualified",
        ));
    }
}

/// kube's pod spec checks, in its order: regular containers (names unique among them), init
/// containers (names unique among all), the restart policy; then, for a pod but not a pod
/// template, the images' whitespace.
fn validate_pod_spec(spec: Option<&Value>, path: &str, is_pod: bool, errors: &mut Vec<FieldError>) {
    let list = |field: &str| -> &[Value] {
        spec.and_then(|spec| spec.get(field))
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    };
    let containers = list("containers");
    let init_containers = list("initContainers");
    if containers.is_empty() {
        errors.push(FieldError::required(format!("{path}.containers"), ""));
    }
    // Regular container names must be unique among themselves, a nameless one included.
    let mut names = BTreeSet::new();
    for (index, container) in containers.iter().enumerate() {
        let container_path = format!("{path}.containers[{index}]");
        validate_container(container, &container_path, errors);
        let name = string_at(Some(container), "name");
        if !names.insert(name.to_string()) {
            errors.push(FieldError::duplicate(
                format!("{container_path}.name"),
                &BadValue::Str(name),
            ));
        }
    }
    // Init container names must differ from every other container's.
    for (index, container) in init_containers.iter().enumerate() {
        let container_path = format!("{path}.initContainers[{index}]");
        validate_container(container, &container_path, errors);
        let name = string_at(Some(container), "name");
        if names.contains(name) {
            errors.push(FieldError::duplicate(
                format!("{container_path}.name"),
                &BadValue::Str(name),
            ));
        } else if !name.is_empty() {
            names.insert(name.to_string());
        }
    }
    let restart_policy = string_at(spec, "restartPolicy");
    if !restart_policy.is_empty() && !RESTART_POLICIES.contains(&restart_policy) {
        errors.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            restart_policy,
            RESTART_POLICIES,
        ));
    }
    if is_pod {
        let lists = [
            ("containers", containers),
            ("initContainers", init_containers),
        ];
        for (list_name, list) in lists {
            for (index, container) in list.iter().enumerate() {
                let image = string_at(Some(container), "image");
                if image.trim() != image {
                    errors.push(FieldError::invalid(
                        format!("{path}.{list_name}[{index}].image"),
                        &BadValue::Str(image),
                        "must not have leading or trailing whitespace",
                    ));
                }
            }
        }
    }
}

/// The checks kube applies to every container: name, image, ports, resources.
fn validate_container(container: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let name = string_at(Some(container), "name");
    if name.is_empty() {
        errors.push(FieldError::required(format!("{path}.name"), ""));
    } else {
        for message in dns1123_label_errors(name) {
            errors.push(FieldError::invalid(
                format!("{path}.name"),
                &BadValue::Str(name),
                &message,
            ));
        }
    }
    if string_at(Some(container), "image").is_empty() {
        errors.push(FieldError::required(format!("{path}.image"), ""));
    }
    let mut port_names = BTreeSet::new();
    let ports = container.get("ports").and_then(Value::as_array);
    for (index, port) in ports.into_iter().flatten().enumerate() {
        let port_path = format!("{path}.ports[{index}]");
        let port_name = string_at(Some(port), "name");
        if !port_name.is_empty() {
            let messages = port_name_errors(port_name);
            if !messages.is_empty() {
                for message in messages {
                    errors.push(FieldError::invalid(
                        format!("{port_path}.name"),
                        &BadValue::Str(port_name),
                        &message,
                    ));
                }
            } else if !port_names.insert(port_name.to_string()) {
                errors.push(FieldError::duplicate(
                    format!("{port_path}.name"),
                    &BadValue::Str(port_name),
                ));
            }
        }
        match port.get("containerPort").and_then(Value::as_i64) {
            None | Some(0) => errors.push(FieldError::required(
                format!("{port_path}.containerPort"),
                "",
            )),
            Some(number) => {
                for message in port_number_errors(number) {
                    errors.push(FieldError::invalid(
                        format!("{port_path}.containerPort"),
                        &BadValue::Int(number),
                        &message,
                    ));
                }
            }
        }
        let protocol = string_at(Some(port), "protocol");
        if !protocol.is_empty() && !PROTOCOLS.contains(&protocol) {
            errors.push(FieldError::not_supported(
                format!("{port_path}.protocol"),
                protocol,
                PROTOCOLS,
            ));
        }
    }
    validate_resources(
        container.get("resources"),
        &format!("{path}.resources"),
        errors,
    );
}

/// The text of a quantity as written (JSON numbers are accepted as quantities too).
fn quantity_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn validate_resources(resources: Option<&Value>, path: &str, errors: &mut Vec<FieldError>) {
    let mut parsed: BTreeMap<(&str, String), Quantity> = BTreeMap::new();
    for list in ["limits", "requests"] {
        let entries = resources
            .and_then(|resources| resources.get(list))
            .and_then(Value::as_object);
        for (resource, value) in entries.into_iter().flatten() {
            let text = quantity_text(value);
            let field = format!("{path}.{list}[{resource}]");
            match parse_quantity(&text) {
                Err(error) => {
                    errors.push(FieldError::invalid(
                        field,
                        &BadValue::Str(&text),
                        &error.to_string(),
                    ));
                }
                Ok(quantity) if quantity.is_negative() => errors.push(FieldError::invalid(
                    field,
                    &BadValue::Str(&text),
                    "must be greater than or equal to 0",
                )),
                Ok(quantity) => {
                    parsed.insert((list, resource.clone()), quantity);
                }
            }
        }
    }
    for ((list, resource), request) in &parsed {
        if *list != "requests" {
            continue;
        }
        let Some(limit) = parsed.get(&("limits", resource.clone())) else {
            continue;
        };
        if request.milli_value() > limit.milli_value() {
            // kube names the requests map here, not the entry.
            errors.push(FieldError::invalid(
                format!("{path}.requests"),
                &BadValue::Str(request.as_str()),
                &format!(
                    "must be less than or equal to {resource} limit of {}",
                    limit.as_str()
                ),
            ));
        }
    }
}

fn validate_deployment(obj: &Value, errors: &mut Vec<FieldError>) {
    let spec = obj.get("spec");
    if let Some(replicas) = spec
        .and_then(|spec| spec.get("replicas"))
        .and_then(Value::as_i64)
        && replicas < 0
    {
        errors.push(FieldError::invalid(
            "spec.replicas",
            &BadValue::Int(replicas),
            "must be greater than or equal to 0",
        ));
    }
    let template = spec.and_then(|spec| spec.get("template"));
    let template_labels = string_map(
        template
            .and_then(|template| template.get("metadata"))
            .and_then(|m| m.get("labels")),
    );
    match spec
        .and_then(|spec| spec.get("selector"))
        .filter(|selector| !selector.is_null())
    {
        None => errors.push(FieldError::required("spec.selector", "")),
        Some(selector) => {
            let match_labels = string_map(selector.get("matchLabels"));
            let expressions = selector.get("matchExpressions").and_then(Value::as_array);
            validate_labels(&match_labels, "spec.selector.matchLabels", errors);
            if match_labels.is_empty() && expressions.is_none_or(Vec::is_empty) {
                errors.push(FieldError::invalid(
                    "spec.selector",
                    &BadValue::Json(selector),
                    "empty selector is invalid for deployment",
                ));
            } else if !selector_matches(&match_labels, expressions, &template_labels) {
                errors.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    &BadValue::StringMap(&template_labels),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    validate_labels(&template_labels, "spec.template.metadata.labels", errors);
    let template_spec = template.and_then(|template| template.get("spec"));
    validate_pod_spec(template_spec, "spec.template.spec", false, errors);
    let restart_policy = string_at(template_spec, "restartPolicy");
    if !restart_policy.is_empty() && restart_policy != "Always" {
        errors.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            restart_policy,
            &["Always"],
        ));
    }
}

/// Whether a `metav1.LabelSelector` (match labels and expressions) selects `labels`.
fn selector_matches(
    match_labels: &BTreeMap<String, String>,
    expressions: Option<&Vec<Value>>,
    labels: &BTreeMap<String, String>,
) -> bool {
    let labels_match = match_labels
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value));
    let expressions_match = expressions.into_iter().flatten().all(|expression| {
        let operator = match string_at(Some(expression), "operator") {
            "In" => LabelOperator::In,
            "NotIn" => LabelOperator::NotIn,
            "Exists" => LabelOperator::Exists,
            "DoesNotExist" => LabelOperator::DoesNotExist,
            _ => return false,
        };
        let values = expression
            .get("values")
            .and_then(Value::as_array)
            .map(|values| {
                values
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let requirement = LabelRequirement {
            key: string_at(Some(expression), "key").to_string(),
            operator,
            values,
        };
        requirement.matches(labels)
    });
    labels_match && expressions_match
}

fn validate_service(obj: &Value, errors: &mut Vec<FieldError>) {
    let spec = obj.get("spec");
    let service_type = string_at(spec, "type");
    if !service_type.is_empty() && !SERVICE_TYPES.contains(&service_type) {
        errors.push(FieldError::not_supported(
            "spec.type",
            service_type,
            SERVICE_TYPES,
        ));
    }
    let ports = spec
        .and_then(|spec| spec.get("ports"))
        .and_then(Value::as_array);
    let port_count = ports.map_or(0, Vec::len);
    if port_count == 0 && service_type != "ExternalName" {
        errors.push(FieldError::required("spec.ports", ""));
    }
    let mut seen_names = BTreeSet::new();
    for (index, port) in ports.into_iter().flatten().enumerate() {
        let path = format!("spec.ports[{index}]");
        let name = string_at(Some(port), "name");
        if name.is_empty() {
            if port_count > 1 {
                errors.push(FieldError::required(format!("{path}.name"), ""));
            }
        } else {
            for message in dns1123_label_errors(name) {
                errors.push(FieldError::invalid(
                    format!("{path}.name"),
                    &BadValue::Str(name),
                    &message,
                ));
            }
            if !seen_names.insert(name.to_string()) {
                errors.push(FieldError::duplicate(
                    format!("{path}.name"),
                    &BadValue::Str(name),
                ));
            }
        }
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        for message in port_number_errors(number) {
            errors.push(FieldError::invalid(
                format!("{path}.port"),
                &BadValue::Int(number),
                &message,
            ));
        }
        let protocol = string_at(Some(port), "protocol");
        if !protocol.is_empty() && !PROTOCOLS.contains(&protocol) {
            errors.push(FieldError::not_supported(
                format!("{path}.protocol"),
                protocol,
                PROTOCOLS,
            ));
        }
        match port.get("targetPort") {
            Some(Value::Number(target)) => {
                let target = target.as_i64().unwrap_or(0);
                for message in port_number_errors(target) {
                    errors.push(FieldError::invalid(
                        format!("{path}.targetPort"),
                        &BadValue::Int(target),
                        &message,
                    ));
                }
            }
            Some(Value::String(target)) => {
                for message in port_name_errors(target) {
                    errors.push(FieldError::invalid(
                        format!("{path}.targetPort"),
                        &BadValue::Str(target),
                        &message,
                    ));
                }
            }
            _ => {}
        }
    }
}

fn validate_config_data(obj: &Value, is_secret: bool, errors: &mut Vec<FieldError>) {
    let data = obj.get("data").and_then(Value::as_object);
    let second_name = if is_secret {
        "stringData"
    } else {
        "binaryData"
    };
    let second = obj.get(second_name).and_then(Value::as_object);
    let mut total_bytes = 0;
    for (map_name, map) in [("data", data), (second_name, second)] {
        for (key, value) in map.into_iter().flatten() {
            for message in config_key_errors(key) {
                errors.push(FieldError::invalid(
                    format!("{map_name}[{key}]"),
                    &BadValue::Str(key),
                    &message,
                ));
            }
            let text = value.as_str().unwrap_or_default();
            // Secret data and ConfigMap binaryData hold base64; count their decoded bytes.
            let base64 = (is_secret && map_name == "data") || map_name == "binaryData";
            total_bytes += if base64 {
                text.len() / 4 * 3
            } else {
                text.len()
            };
        }
    }
    if !is_secret && let (Some(data), Some(binary)) = (data, second) {
        for key in data.keys().filter(|key| binary.contains_key(*key)) {
            errors.push(FieldError::invalid(
                format!("data[{key}]"),
                &BadValue::Str(key),
                "duplicate of key present in binaryData",
            ));
        }
    }
    if total_bytes > CONFIG_DATA_BYTES_MAX {
        let field = if is_secret { "data" } else { "" };
        errors.push(FieldError::too_long(field, CONFIG_DATA_BYTES_MAX));
    }
}

// ---------------------------------------------------------------------------------------------
// Quantities.

/// Why a quantity did not parse; `Display` is kube's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantityError {
    /// Not of the form number + suffix.
    #[error("quantities must match the regular expression '{QUANTITY_FMT}'")]
    Format,
    /// A suffix that is no unit (`1K`, `1mi`).
    #[error("unable to parse quantity's suffix")]
    Suffix,
}

/// A Kubernetes resource quantity (`100m`, `1`, `1.5Gi`, `500Mi`, `1e3`), kept exactly as
/// `significand × 10^exponent10 × 2^exponent2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quantity {
    text: String,
    negative: bool,
    /// The significant digits without the decimal point.
    significand: u128,
    /// Whether nonzero digits past [`QUANTITY_SIGNIFICANT_DIGITS_MAX`] were dropped (the true
    /// value is a little larger than the significand says).
    truncated: bool,
    exponent10: i32,
    exponent2: u32,
}

impl Quantity {
    /// The quantity as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative && (self.significand != 0 || self.truncated)
    }

    /// The value in whole units, rounded away from zero (kube's `Value()`): bytes for memory,
    /// cores for CPU. Saturates at `i64`'s range.
    pub fn value(&self) -> i64 {
        self.scaled(0)
    }

    /// The value in thousandths, rounded away from zero (kube's `MilliValue()`): millicores for
    /// CPU. Saturates at `i64`'s range.
    pub fn milli_value(&self) -> i64 {
        self.scaled(3)
    }

    fn scaled(&self, extra_exponent10: i32) -> i64 {
        let magnitude = self.magnitude(self.exponent10 + extra_exponent10);
        let magnitude = i64::try_from(magnitude).unwrap_or(i64::MAX);
        if self.negative { -magnitude } else { magnitude }
    }

    /// `ceil(significand × 10^exponent10 × 2^exponent2)`, saturating.
    fn magnitude(&self, exponent10: i32) -> u128 {
        if self.significand == 0 {
            return u128::from(self.truncated);
        }
        let Some(mut numerator) = 2u128
            .checked_pow(self.exponent2)
            .and_then(|power| self.significand.checked_mul(power))
        else {
            return u128::MAX;
        };
        if exponent10 >= 0 {
            let power = 10u128.checked_pow(exponent10.unsigned_abs());
            return power
                .and_then(|power| numerator.checked_mul(power))
                .map_or(u128::MAX, |value| {
                    value.saturating_add(u128::from(self.truncated))
                });
        }
        let Some(denominator) = 10u128.checked_pow(exponent10.unsigned_abs()) else {
            // Less than one unit but above zero.
            return 1;
        };
        let whole = numerator / denominator;
        numerator %= denominator;
        whole + u128::from(numerator != 0 || self.truncated)
    }
}

/// Parses a Kubernetes resource quantity.
///
/// # Errors
/// [`QuantityError`] with kube's message when the text is not a quantity.
pub fn parse_quantity(text: &str) -> Result<Quantity, QuantityError> {
    let allowed =
        |character: char| character.is_ascii_digit() || "+-.eEinumkKMGTP".contains(character);
    if text.is_empty() || !text.chars().all(allowed) {
        return Err(QuantityError::Format);
    }
    let (negative, unsigned) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = unsigned
        .find(|character: char| !(character.is_ascii_digit() || character == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
        return Err(QuantityError::Format);
    }
    let (exponent10, exponent2) = parse_suffix(suffix)?;

    let digits = whole
        .bytes()
        .chain(fraction.bytes())
        .skip_while(|&digit| digit == b'0');
    let mut significand: u128 = 0;
    let mut kept = 0usize;
    let mut dropped = 0usize;
    let mut truncated = false;
    for digit in digits {
        if kept < QUANTITY_SIGNIFICANT_DIGITS_MAX {
            significand = significand * 10 + u128::from(digit - b'0');
            kept += 1;
        } else {
            dropped += 1;
            truncated |= digit != b'0';
        }
    }
    let dropped = i32::try_from(dropped).map_err(|_| QuantityError::Format)?;
    let fraction_digits = i32::try_from(fraction.len()).map_err(|_| QuantityError::Format)?;
    Ok(Quantity {
        text: text.to_string(),
        negative,
        significand,
        truncated,
        exponent10: exponent10
            .saturating_sub(fraction_digits)
            .saturating_add(dropped),
        exponent2,
    })
}

/// The powers of ten and of two a suffix stands for.
fn parse_suffix(suffix: &str) -> Result<(i32, u32), QuantityError> {
    Ok(match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let exponent = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or(QuantityError::Suffix)?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(QuantityError::Suffix);
            }
            (
                exponent.parse::<i32>().map_err(|_| QuantityError::Suffix)?,
                0,
            )
        }
    })
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
