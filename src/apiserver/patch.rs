//! The three JSON PATCH bodies kube-apiserver accepts, applied to a stored object.
//!
//! Owns: RFC 7386 merge patch and RFC 6902 JSON patch (both through the `json-patch` crate),
//! strategic merge patch with the list-merge table of the built-in kinds we serve, and the
//! errors kube-apiserver answers for bad patches (message, HTTP code and reason).
//! Must not: do I/O, touch the store, or check preconditions (`metadata.resourceVersion` in a
//! patch is the caller's business); the result is validated by the caller as any other write.
//!
//! kube-compat: strategic merge patch follows `k8s.io/apimachinery`
//! `pkg/util/strategicpatch/patch.go` as the server runs it (`MergeParallelList` and
//! `IgnoreUnmatchedNulls` on), with the merge keys and strategies of `k8s.io/api`'s struct tags.
//! Worked example: kubectl apply bumping the image of container `a` of a two-container pod sends
//!
//! ```json
//! {"spec":{"$setElementOrder/containers":[{"name":"a"},{"name":"b"}],
//!          "containers":[{"name":"a","image":"nginx:2"}]}}
//! ```
//!
//! `containers` merges by `name`, so `a` gets the new image and `b` stays; a plain merge patch
//! would replace the list and drop `b`.
//! Deliberate differences: a value added fresh from a patch is cleaned of every directive key
//! (`$setElementOrder/…`, `$retainKeys`, …) and of nulls, since we store the JSON as is where
//! upstream's typed decode drops them; the relative order of list items that a `$setElementOrder`
//! list does not name is kept (upstream's comparator leaves it unspecified).

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// Most operations in one JSON patch: kube-apiserver's `maxJSONPatchOperations`, which bounds
/// the work one request can ask for.
pub const JSON_PATCH_OPERATIONS_MAX: usize = 10_000;

/// How deep a strategic merge may recurse. Bodies parsed here already stop at serde_json's
/// nesting limit (128), but `original` comes from the caller; the bound keeps the merge's
/// recursion off the end of the stack whatever it is handed, and sits far above any
/// Kubernetes object's depth.
pub const STRATEGIC_PATCH_DEPTH_MAX: usize = 100;

/// The key of a `$patch: replace|delete|merge` directive.
const DIRECTIVE_MARKER: &str = "$patch";
/// The key listing the fields of a map that survive the patch (`patchStrategy:"retainKeys"`).
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
/// The prefix of the key giving the final order of a merged list.
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder/";
/// The prefix of the key listing values to remove from a set-merged primitive list.
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList/";

/// The body types of a PATCH request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
}

impl PatchType {
    /// The patch type of a request's `Content-Type`, parameters (`; charset=utf-8`) ignored;
    /// `None` for anything else (kube-apiserver answers 415 then).
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        match media_type.to_ascii_lowercase().as_str() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/json-patch+json" => Some(PatchType::Json),
            _ => None,
        }
    }

    /// The media type of this patch type.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
            PatchType::Json => "application/json-patch+json",
        }
    }
}

/// Why a patch was refused; `Display` is the `message` of kube-apiserver's Status, and
/// [`PatchError::code`] and [`PatchError::reason`] its `code` and `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatchError {
    /// A merge or JSON patch body that is not JSON of the right shape.
    /// kube-compat: the detail is serde_json's wording where upstream has Go's, except for the
    /// shape errors, which are spelled as Go spells them.
    #[error("error decoding patch: {detail}")]
    Decode {
        /// What the decoder said.
        detail: String,
    },
    /// A strategic merge patch body that is not a JSON object (upstream sends the decoder's
    /// message alone).
    #[error("{detail}")]
    StrategicDecode {
        /// What the decoder said.
        detail: String,
    },
    /// A merge patch whose body is `null`.
    #[error("Invalid JSON Patch")]
    NullMergePatch,
    /// A JSON patch with more than [`JSON_PATCH_OPERATIONS_MAX`] operations.
    #[error("The allowed maximum operations in a JSON patch is {max}, got {count}")]
    TooManyOperations {
        /// Operations in the patch.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A JSON patch operation failed (a `test` that did not match, a path that does not
    /// exist, an unknown op). kube-compat: upstream answers this generic message and keeps the
    /// cause out of the Status; we keep it in `detail` for logs.
    #[error("the server rejected our request due to an error in our request")]
    JsonPatchFailed {
        /// Which operation failed and why.
        detail: String,
    },
    /// A strategic merge patch on a kind without a list-merge table (custom resources).
    #[error("strategic merge patch format is not supported")]
    StrategicUnsupported {
        /// The object's kind.
        kind: String,
    },
    /// A malformed `$retainKeys`, `$deleteFromPrimitiveList/` or `$setElementOrder/` directive
    /// (upstream's `invalid patch format of …` errors).
    #[error("invalid patch format of {directive}")]
    BadDirectiveFormat {
        /// `retainKeys`, `primitive list` or `setElementOrder list`.
        directive: &'static str,
    },
    /// A list whose items are lists, where a merge needs maps or scalars.
    #[error("lists of lists are not supported")]
    ListOfLists,
    /// Any other strategic merge patch failure, such as a list item without its merge key.
    /// kube-compat: upstream returns these as plain errors, which become a 500 with an empty
    /// reason.
    #[error("{message}")]
    Strategic {
        /// Upstream's message.
        message: String,
    },
}

impl PatchError {
    /// The HTTP status code kube-apiserver answers with.
    pub fn code(&self) -> u16 {
        match self {
            PatchError::Decode { .. }
            | PatchError::StrategicDecode { .. }
            | PatchError::NullMergePatch
            | PatchError::StrategicUnsupported { .. }
            | PatchError::BadDirectiveFormat { .. } => 400,
            PatchError::TooManyOperations { .. } => 413,
            PatchError::JsonPatchFailed { .. } | PatchError::ListOfLists => 422,
            PatchError::Strategic { .. } => 500,
        }
    }

    /// The Status `reason` kube-apiserver answers with (empty for the plain errors, as upstream's
    /// `StatusReasonUnknown`).
    pub fn reason(&self) -> &'static str {
        match self.code() {
            400 => "BadRequest",
            413 => "RequestEntityTooLarge",
            422 => "Invalid",
            _ => "",
        }
    }

    fn strategic(message: impl Into<String>) -> PatchError {
        PatchError::Strategic {
            message: message.into(),
        }
    }
}

/// Applies a PATCH body of `patch_type` to `original`, an object of `kind` ("Pod",
/// "Deployment", ...), and returns the patched object.
///
/// # Errors
/// A [`PatchError`] carrying kube-apiserver's message, code and reason.
pub fn apply_patch(
    patch_type: PatchType,
    kind: &str,
    original: &Value,
    patch: &[u8],
) -> Result<Value, PatchError> {
    match patch_type {
        PatchType::Merge => apply_merge_patch(original, patch),
        PatchType::Json => apply_json_patch(original, patch),
        PatchType::StrategicMerge => apply_strategic_merge_patch(kind, original, patch),
    }
}

fn apply_merge_patch(original: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let patch: Value = serde_json::from_slice(patch).map_err(|error| PatchError::Decode {
        detail: error.to_string(),
    })?;
    match &patch {
        Value::Null => Err(PatchError::NullMergePatch),
        Value::Object(_) => {
            let mut patched = original.clone();
            json_patch::merge(&mut patched, &patch);
            Ok(patched)
        }
        other => Err(PatchError::Decode {
            detail: go_unmarshal_error(other, "map[string]interface {}"),
        }),
    }
}

fn apply_json_patch(original: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let patch: Value = serde_json::from_slice(patch).map_err(|error| PatchError::Decode {
        detail: error.to_string(),
    })?;
    let Value::Array(operations) = patch else {
        return Err(PatchError::Decode {
            detail: go_unmarshal_error(&patch, "[]handlers.jsonPatchOp"),
        });
    };
    if let Some(not_object) = operations.iter().find(|operation| !operation.is_object()) {
        return Err(PatchError::Decode {
            detail: go_unmarshal_error(not_object, "handlers.jsonPatchOp"),
        });
    }
    if operations.len() > JSON_PATCH_OPERATIONS_MAX {
        return Err(PatchError::TooManyOperations {
            count: operations.len(),
            max: JSON_PATCH_OPERATIONS_MAX,
        });
    }
    // Upstream decodes operations lazily, so an unknown op or a missing path fails at apply
    // time with 422; serde fails here and we answer the same.
    let operations: json_patch::Patch =
        serde_json::from_value(Value::Array(operations)).map_err(|error| {
            PatchError::JsonPatchFailed {
                detail: error.to_string(),
            }
        })?;
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &operations).map_err(|error| PatchError::JsonPatchFailed {
        detail: error.to_string(),
    })?;
    Ok(patched)
}

fn apply_strategic_merge_patch(
    kind: &str,
    original: &Value,
    patch: &[u8],
) -> Result<Value, PatchError> {
    let schema = Schema::for_kind(kind).ok_or_else(|| PatchError::StrategicUnsupported {
        kind: kind.to_string(),
    })?;
    let patch: Value =
        serde_json::from_slice(patch).map_err(|error| PatchError::StrategicDecode {
            detail: error.to_string(),
        })?;
    let patch = match patch {
        Value::Object(map) => map,
        // Go decodes `null` into a nil map: an empty patch.
        Value::Null => Map::new(),
        other => {
            return Err(PatchError::StrategicDecode {
                detail: go_unmarshal_error(&other, "map[string]interface {}"),
            });
        }
    };
    let original = original.as_object().cloned().unwrap_or_default();
    Ok(Value::Object(merge_map(original, patch, schema, 0)?))
}

// ---------------------------------------------------------------------------------------------
// The list-merge table of the served kinds.

/// A struct type of the served kinds whose fields have merge metadata; `Other` is any struct
/// or map without any (its lists replace, its maps merge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Schema {
    Other,
    ObjectMeta,
    Pod,
    PodSpec,
    PodStatus,
    PodTemplateSpec,
    Container,
    Deployment,
    DeploymentSpec,
    DeploymentStatus,
    Service,
    ServiceSpec,
    ServiceStatus,
    Node,
    NodeSpec,
    NodeStatus,
    Namespace,
    NamespaceStatus,
    /// ConfigMap, Secret, Event, Lease: only `metadata` carries merge metadata.
    MetadataOnly,
    /// ServiceAccount: `secrets` merge by name.
    ServiceAccount,
}

/// How a list field merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListStrategy {
    /// No `patchStrategy`: the patch's list replaces the original.
    Replace,
    /// `patchStrategy:"merge"` on a list of scalars: set union.
    MergePrimitives,
    /// `patchStrategy:"merge"` with `patchMergeKey`: items merge by that key.
    MergeByKey(&'static str),
}

/// One field with merge metadata: in struct `parent`, field `name` merges by `strategy` (for a
/// list) and its value (or each item) is of struct type `child`.
struct FieldMeta {
    parent: Schema,
    name: &'static str,
    strategy: ListStrategy,
    child: Schema,
}

const fn struct_field(parent: Schema, name: &'static str, child: Schema) -> FieldMeta {
    FieldMeta {
        parent,
        name,
        strategy: ListStrategy::Replace,
        child,
    }
}

const fn merge_list(parent: Schema, name: &'static str, key: &'static str) -> FieldMeta {
    FieldMeta {
        parent,
        name,
        strategy: ListStrategy::MergeByKey(key),
        child: Schema::Other,
    }
}

/// The fields with merge metadata, from `k8s.io/api` core/v1 and apps/v1 `patchStrategy` and
/// `patchMergeKey` tags. Fields not listed are maps that merge and lists that replace
/// (tolerations, node taints, envFrom, container statuses, namespace finalizers).
const FIELDS: &[FieldMeta] = &[
    // metav1.ObjectMeta
    FieldMeta {
        parent: Schema::ObjectMeta,
        name: "finalizers",
        strategy: ListStrategy::MergePrimitives,
        child: Schema::Other,
    },
    merge_list(Schema::ObjectMeta, "ownerReferences", "uid"),
    // Pod
    struct_field(Schema::Pod, "metadata", Schema::ObjectMeta),
    struct_field(Schema::Pod, "spec", Schema::PodSpec),
    struct_field(Schema::Pod, "status", Schema::PodStatus),
    FieldMeta {
        parent: Schema::PodSpec,
        name: "volumes",
        strategy: ListStrategy::MergeByKey("name"),
        child: Schema::Other,
    },
    FieldMeta {
        parent: Schema::PodSpec,
        name: "initContainers",
        strategy: ListStrategy::MergeByKey("name"),
        child: Schema::Container,
    },
    FieldMeta {
        parent: Schema::PodSpec,
        name: "containers",
        strategy: ListStrategy::MergeByKey("name"),
        child: Schema::Container,
    },
    FieldMeta {
        parent: Schema::PodSpec,
        name: "ephemeralContainers",
        strategy: ListStrategy::MergeByKey("name"),
        child: Schema::Container,
    },
    merge_list(Schema::PodSpec, "imagePullSecrets", "name"),
    merge_list(Schema::PodSpec, "hostAliases", "ip"),
    merge_list(Schema::PodSpec, "topologySpreadConstraints", "topologyKey"),
    merge_list(Schema::PodSpec, "schedulingGates", "name"),
    merge_list(Schema::PodSpec, "resourceClaims", "name"),
    merge_list(Schema::Container, "ports", "containerPort"),
    merge_list(Schema::Container, "env", "name"),
    merge_list(Schema::Container, "volumeMounts", "mountPath"),
    merge_list(Schema::Container, "volumeDevices", "devicePath"),
    merge_list(Schema::PodStatus, "conditions", "type"),
    merge_list(Schema::PodStatus, "podIPs", "ip"),
    merge_list(Schema::PodStatus, "hostIPs", "ip"),
    merge_list(Schema::PodStatus, "resourceClaimStatuses", "name"),
    // apps/v1 Deployment
    struct_field(Schema::Deployment, "metadata", Schema::ObjectMeta),
    struct_field(Schema::Deployment, "spec", Schema::DeploymentSpec),
    struct_field(Schema::Deployment, "status", Schema::DeploymentStatus),
    struct_field(Schema::DeploymentSpec, "template", Schema::PodTemplateSpec),
    struct_field(Schema::PodTemplateSpec, "metadata", Schema::ObjectMeta),
    struct_field(Schema::PodTemplateSpec, "spec", Schema::PodSpec),
    merge_list(Schema::DeploymentStatus, "conditions", "type"),
    // Service
    struct_field(Schema::Service, "metadata", Schema::ObjectMeta),
    struct_field(Schema::Service, "spec", Schema::ServiceSpec),
    struct_field(Schema::Service, "status", Schema::ServiceStatus),
    merge_list(Schema::ServiceSpec, "ports", "port"),
    merge_list(Schema::ServiceStatus, "conditions", "type"),
    // Node
    struct_field(Schema::Node, "metadata", Schema::ObjectMeta),
    struct_field(Schema::Node, "spec", Schema::NodeSpec),
    struct_field(Schema::Node, "status", Schema::NodeStatus),
    FieldMeta {
        parent: Schema::NodeSpec,
        name: "podCIDRs",
        strategy: ListStrategy::MergePrimitives,
        child: Schema::Other,
    },
    merge_list(Schema::NodeStatus, "conditions", "type"),
    merge_list(Schema::NodeStatus, "addresses", "type"),
    // Namespace
    struct_field(Schema::Namespace, "metadata", Schema::ObjectMeta),
    struct_field(Schema::Namespace, "status", Schema::NamespaceStatus),
    merge_list(Schema::NamespaceStatus, "conditions", "type"),
    // ConfigMap, Secret, Event, Lease
    struct_field(Schema::MetadataOnly, "metadata", Schema::ObjectMeta),
    // ServiceAccount
    struct_field(Schema::ServiceAccount, "metadata", Schema::ObjectMeta),
    merge_list(Schema::ServiceAccount, "secrets", "name"),
];

impl Schema {
    fn for_kind(kind: &str) -> Option<Schema> {
        match kind {
            "Pod" => Some(Schema::Pod),
            "Deployment" => Some(Schema::Deployment),
            "Service" => Some(Schema::Service),
            "Node" => Some(Schema::Node),
            "Namespace" => Some(Schema::Namespace),
            "ConfigMap" | "Secret" | "Event" | "Lease" => Some(Schema::MetadataOnly),
            "ServiceAccount" => Some(Schema::ServiceAccount),
            _ => None,
        }
    }

    /// The merge metadata of field `name` (replace, and no struct type, when it has none).
    fn field(self, name: &str) -> (ListStrategy, Schema) {
        FIELDS
            .iter()
            .find(|field| field.parent == self && field.name == name)
            .map_or((ListStrategy::Replace, Schema::Other), |field| {
                (field.strategy, field.child)
            })
    }
}

// ---------------------------------------------------------------------------------------------
// The merge.

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: Schema,
    depth: usize,
) -> Result<Map<String, Value>, PatchError> {
    if depth > STRATEGIC_PATCH_DEPTH_MAX {
        return Err(PatchError::strategic(format!(
            "patch nests deeper than {STRATEGIC_PATCH_DEPTH_MAX} levels"
        )));
    }
    if let Some(directive) = patch.get(DIRECTIVE_MARKER) {
        return match directive.as_str() {
            Some("replace") => {
                patch.remove(DIRECTIVE_MARKER);
                Ok(clean_map(patch))
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(bad_patch_type(directive, &patch)),
        };
    }
    apply_retain_keys(&mut original, &mut patch)?;
    merge_set_element_order_lists(&mut original, &mut patch, schema, depth)?;

    for (key, patch_value) in patch {
        let (key, is_delete_list) = match key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
            Some(field) => (field.to_string(), true),
            None => (key, false),
        };
        if patch_value.is_null() {
            original.remove(&key);
            continue;
        }
        let Some(original_value) = original.remove(&key) else {
            if !is_delete_list && let Some(value) = clean(patch_value) {
                original.insert(key, value);
            }
            continue;
        };
        let merged = match (original_value, patch_value) {
            (Value::Object(original_map), Value::Object(patch_map)) => {
                let (_, child) = schema.field(&key);
                Some(Value::Object(merge_map(
                    original_map,
                    patch_map,
                    child,
                    depth + 1,
                )?))
            }
            (Value::Array(original_list), Value::Array(patch_list)) => {
                let (strategy, child) = schema.field(&key);
                if strategy == ListStrategy::Replace && !is_delete_list {
                    clean(Value::Array(patch_list))
                } else {
                    let list = ListField {
                        name: &key,
                        strategy,
                        child,
                    };
                    let merged = merge_list_values(
                        original_list,
                        patch_list,
                        &list,
                        is_delete_list,
                        depth + 1,
                    )?;
                    Some(Value::Array(merged.ordered))
                }
            }
            // A delete list for a field of another type changes nothing.
            (original_value, _) if is_delete_list => Some(original_value),
            (_, patch_value) => clean(patch_value),
        };
        if let Some(merged) = merged {
            original.insert(key, merged);
        }
    }
    Ok(original)
}

/// A list field being merged: its name (for messages), strategy and item struct type.
struct ListField<'a> {
    name: &'a str,
    strategy: ListStrategy,
    child: Schema,
}

impl ListField<'_> {
    fn merge_key(&self) -> Option<&'static str> {
        match self.strategy {
            ListStrategy::MergeByKey(key) => Some(key),
            ListStrategy::Replace | ListStrategy::MergePrimitives => None,
        }
    }
}

/// The kind of the items of one or more lists, which must agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ItemKind {
    Map,
    Scalar,
}

fn item_kind(lists: &[&[Value]]) -> Result<ItemKind, PatchError> {
    let mut kind: Option<(ItemKind, &'static str)> = None;
    for item in lists.iter().flat_map(|list| list.iter()) {
        let this = match item {
            Value::Array(_) => return Err(PatchError::ListOfLists),
            Value::Object(_) => (ItemKind::Map, "map"),
            other => (ItemKind::Scalar, go_type_name(other)),
        };
        match kind {
            None => kind = Some(this),
            Some(seen) if seen.1 != this.1 => {
                let lists: Vec<Value> = lists
                    .iter()
                    .map(|list| Value::Array(list.to_vec()))
                    .collect();
                return Err(PatchError::strategic(format!(
                    "list element types are not identical: {}",
                    go_format(&Value::Array(lists))
                )));
            }
            Some(_) => {}
        }
    }
    kind.map(|(kind, _)| kind)
        .ok_or_else(|| PatchError::strategic("no elements in any of the given slices"))
}

/// A merged list: `ordered` is the result; `server_order` is the order a `$setElementOrder`
/// directive slots the list's server-only items by.
struct MergedList {
    ordered: Vec<Value>,
    server_order: Vec<Value>,
}

/// Merges a patch list into an original list of a field whose strategy is a merge (or whose
/// patch is a `$deleteFromPrimitiveList/`), then orders the result.
fn merge_list_values(
    original: Vec<Value>,
    patch: Vec<Value>,
    list: &ListField<'_>,
    is_delete_list: bool,
    depth: usize,
) -> Result<MergedList, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(MergedList {
            ordered: Vec::new(),
            server_order: Vec::new(),
        });
    }
    match item_kind(&[&original, &patch])? {
        ItemKind::Scalar => {
            if is_delete_list {
                let kept: Vec<Value> = original
                    .into_iter()
                    .filter(|item| !patch.contains(item))
                    .collect();
                return Ok(MergedList {
                    ordered: kept.clone(),
                    server_order: kept,
                });
            }
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for item in original.iter().chain(patch.iter()) {
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            let (in_patch, server_only) = partition(merged, &patch, None);
            let ordered = normalize_order(in_patch, server_only, &patch, &original, None)?;
            Ok(MergedList {
                ordered,
                server_order: original,
            })
        }
        ItemKind::Map => {
            let Some(merge_key) = list.merge_key() else {
                return Err(PatchError::strategic(format!(
                    "cannot merge lists without merge key for {}",
                    list.name
                )));
            };
            let original_count = original.len();
            let (original, patch) = apply_list_directives(original, patch, merge_key)?;
            let deleted_count = original_count.saturating_sub(original.len());
            let mut merged = original.clone();
            for item in &patch {
                let Value::Object(item_map) = item else {
                    continue;
                };
                let key_value = item_map
                    .get(merge_key)
                    .ok_or_else(|| no_merge_key(item, merge_key))?;
                let found = merged.iter().position(|candidate| {
                    candidate.as_object().and_then(|m| m.get(merge_key)) == Some(key_value)
                });
                match found {
                    Some(index) => {
                        let Value::Object(existing) = std::mem::take(&mut merged[index]) else {
                            unreachable!("item kinds were checked to be maps");
                        };
                        merged[index] = Value::Object(merge_map(
                            existing,
                            item_map.clone(),
                            list.child,
                            depth + 1,
                        )?);
                    }
                    None => {
                        if let Some(value) = clean(item.clone()) {
                            merged.push(value);
                        }
                    }
                }
            }
            // kube-compat: server-only items are slotted in among the patch items by their
            // place in the original list (after deletions), where new items are not found, so
            // new items come first: adding port 81 to [80] gives [81, 80], as upstream.
            // Under a `$setElementOrder`, upstream slots them in by the original list's storage
            // as the merge left it: deletions shifted it left and new items were appended into
            // the freed room, so the first `deleted_count` new items are found after the
            // remaining originals. Upstream's "add map and delete map from merging list" cases
            // pin this.
            let server_order_count = merged.len().min(original.len() + deleted_count);
            let server_order = merged[..server_order_count].to_vec();
            let (in_patch, server_only) = partition(merged, &patch, Some(merge_key));
            let ordered =
                normalize_order(in_patch, server_only, &patch, &original, Some(merge_key))?;
            Ok(MergedList {
                ordered,
                server_order,
            })
        }
    }
}

/// Applies the `$patch` items of a patch list of maps: `delete` removes the original items with
/// that key, `replace` makes the rest of the patch list the whole list. Returns the original
/// and the patch items left to merge.
fn apply_list_directives(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut rest = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let directive = item.get(DIRECTIVE_MARKER).cloned();
        match directive {
            None => rest.push(item),
            Some(Value::String(directive)) if directive == "delete" => {
                let key_value = item
                    .get(merge_key)
                    .ok_or_else(|| no_merge_key(&item, merge_key))?;
                original.retain(|candidate| candidate.get(merge_key) != Some(key_value));
            }
            Some(Value::String(directive)) if directive == "replace" => replace = true,
            Some(Value::String(directive)) if directive == "merge" => {
                return Err(PatchError::strategic(
                    "merging lists cannot yet be specified in the patch",
                ));
            }
            Some(other) => {
                let map = item.as_object().cloned().unwrap_or_default();
                return Err(bad_patch_type(&other, &map));
            }
        }
    }
    if replace {
        return Ok((rest.into_iter().filter_map(clean).collect(), Vec::new()));
    }
    Ok((original, rest))
}

/// Applies `$retainKeys`: every original key it does not list goes, and every key the patch
/// sets must be listed.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(retain_keys) = patch.remove(RETAIN_KEYS_DIRECTIVE) else {
        return Ok(());
    };
    let bad_format = PatchError::BadDirectiveFormat {
        directive: "retainKeys",
    };
    let Value::Array(retain_keys) = retain_keys else {
        return Err(bad_format);
    };
    let retained = |key: &str| {
        retain_keys
            .iter()
            .any(|listed| listed.as_str() == Some(key))
    };
    for (key, value) in patch.iter() {
        let is_directive = key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
            || key.starts_with(SET_ELEMENT_ORDER_PREFIX);
        if value.is_null() || is_directive {
            continue;
        }
        if !retained(key) {
            return Err(bad_format);
        }
    }
    original.retain(|key, _| retained(key));
    Ok(())
}

/// Merges every list that has a `$setElementOrder/<field>` directive and puts its items in the
/// directive's order; removes both the directive and the patch list from `patch`.
fn merge_set_element_order_lists(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    schema: Schema,
    depth: usize,
) -> Result<(), PatchError> {
    let directive_keys: Vec<String> = patch
        .keys()
        .filter(|key| key.starts_with(SET_ELEMENT_ORDER_PREFIX))
        .cloned()
        .collect();
    for directive_key in directive_keys {
        let Some(order) = patch.remove(&directive_key) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(PatchError::strategic(format!(
                "expected a []interface {{}}, but received a {}",
                go_type_name(&order)
            )));
        };
        let field = &directive_key[SET_ELEMENT_ORDER_PREFIX.len()..];
        let original_list = match original.get(field) {
            None => None,
            Some(Value::Array(list)) => Some(list.clone()),
            Some(other) => {
                return Err(PatchError::strategic(format!(
                    "expected a []interface {{}}, but received a {}",
                    go_type_name(other)
                )));
            }
        };
        let patch_list = match patch.get(field) {
            None => None,
            Some(Value::Array(list)) => Some(list.clone()),
            Some(other) => {
                return Err(PatchError::strategic(format!(
                    "expected a []interface {{}}, but received a {}",
                    go_type_name(other)
                )));
            }
        };
        let (strategy, child) = schema.field(field);
        let list = ListField {
            name: field,
            strategy,
            child,
        };
        let merge_key = list.merge_key();
        check_order_matches_patch(patch_list.as_deref().unwrap_or(&[]), &order, merge_key)?;

        let original_items = original_list.clone().unwrap_or_default();
        let cleaned = |patch_list: Vec<Value>| match clean(Value::Array(patch_list)) {
            Some(Value::Array(list)) => list,
            _ => Vec::new(),
        };
        let (merged, server_order) = match (original_list, patch_list) {
            (None, None) => continue,
            (Some(original_list), None) => (original_list, original_items.clone()),
            (None, Some(patch_list)) => (cleaned(patch_list), original_items.clone()),
            (Some(_), Some(patch_list)) if strategy == ListStrategy::Replace => {
                (cleaned(patch_list), original_items.clone())
            }
            (Some(original_list), Some(patch_list)) => {
                let merged = merge_list_values(original_list, patch_list, &list, false, depth + 1)?;
                (merged.ordered, merged.server_order)
            }
        };
        let patch_items = match patch.get(field) {
            Some(Value::Array(list)) => list.clone(),
            _ => Vec::new(),
        };
        item_kind(&[&original_items, &patch_items])?;
        let (in_order, server_only) = partition(merged, &order, merge_key);
        let ordered = normalize_order(in_order, server_only, &order, &server_order, merge_key)?;
        original.insert(field.to_string(), Value::Array(ordered));
        patch.remove(field);
    }
    Ok(())
}

/// Checks that the patch list's items appear in the `$setElementOrder` list in the same order.
fn check_order_matches_patch(
    patch_list: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    if patch_list.is_empty() || order.is_empty() {
        return Ok(());
    }
    let kept: Vec<&Value> = patch_list
        .iter()
        .filter(|item| {
            merge_key.is_none()
                || item.get(DIRECTIVE_MARKER).and_then(Value::as_str) != Some("delete")
        })
        .collect();
    let (mut patch_index, mut order_index) = (0, 0);
    while patch_index < kept.len() && order_index < order.len() {
        if kept[patch_index].get(DIRECTIVE_MARKER).is_some() {
            patch_index += 1;
            continue;
        }
        if same_item(kept[patch_index], &order[order_index], merge_key)? {
            patch_index += 1;
        }
        order_index += 1;
    }
    if patch_index < kept.len() {
        return Err(PatchError::strategic(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER_PREFIX} list:\n{}\n",
            go_format(&Value::Array(patch_list.to_vec())),
            go_format(&Value::Array(order.to_vec())),
        )));
    }
    Ok(())
}

fn same_item(left: &Value, right: &Value, merge_key: Option<&str>) -> Result<bool, PatchError> {
    let Some(merge_key) = merge_key else {
        return Ok(left == right);
    };
    let left_value = left
        .get(merge_key)
        .ok_or_else(|| no_merge_key(left, merge_key))?;
    let right_value = right
        .get(merge_key)
        .ok_or_else(|| no_merge_key(right, merge_key))?;
    Ok(left_value == right_value)
}

/// The identity of a list item: its merge key's value, or the item itself for scalars.
fn identity<'a>(item: &'a Value, merge_key: Option<&str>) -> Option<&'a Value> {
    match merge_key {
        Some(key) => item.get(key),
        None => Some(item),
    }
}

fn position_in(list: &[Value], item: &Value, merge_key: Option<&str>) -> Option<usize> {
    let wanted = identity(item, merge_key)?;
    list.iter()
        .position(|candidate| identity(candidate, merge_key) == Some(wanted))
}

/// Splits `items` into those `by` names (by identity) and the rest, keeping their order.
fn partition(items: Vec<Value>, by: &[Value], merge_key: Option<&str>) -> (Vec<Value>, Vec<Value>) {
    items
        .into_iter()
        .partition(|item| position_in(by, item, merge_key).is_some())
}

/// Orders a merged list as upstream's `normalizeElementOrder`: patch items in `patch_order`,
/// server-only items in `server_order`, then the server-only items slotted in among the patch
/// items by their place in `server_order`.
fn normalize_order(
    mut in_patch: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Result<Vec<Value>, PatchError> {
    if let Some(key) = merge_key {
        for item in in_patch
            .iter()
            .chain(server_only.iter())
            .chain(patch_order.iter())
        {
            if item.get(key).is_none() {
                return Err(no_merge_key(item, key));
            }
        }
    }
    sort_by_position(&mut in_patch, patch_order, merge_key);
    sort_by_position(&mut server_only, server_order, merge_key);

    let mut ordered = Vec::with_capacity(in_patch.len() + server_only.len());
    let mut server_only = server_only.into_iter().peekable();
    let mut in_patch = in_patch.into_iter().peekable();
    loop {
        let take_server_only = match (server_only.peek(), in_patch.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(left), Some(right)) => {
                let left_position = position_in(server_order, left, merge_key);
                let right_position = position_in(server_order, right, merge_key);
                matches!((left_position, right_position), (Some(l), Some(r)) if l < r)
            }
        };
        let next = if take_server_only {
            server_only.next()
        } else {
            in_patch.next()
        };
        ordered.extend(next);
    }
    Ok(ordered)
}

/// Stable sort by position in `order`; items `order` does not name keep their relative order
/// after those it does.
fn sort_by_position(items: &mut [Value], order: &[Value], merge_key: Option<&str>) {
    items.sort_by(|left, right| {
        match (
            position_in(order, left, merge_key),
            position_in(order, right, merge_key),
        ) {
            (Some(l), Some(r)) => l.cmp(&r),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    });
}

/// A patch value taken as is (no original to merge with): maps carrying `$patch` go, other
/// directive keys and nulls are dropped. `None` when the value itself is a directive map.
fn clean(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) => {
            if map.contains_key(DIRECTIVE_MARKER) {
                return None;
            }
            Some(Value::Object(clean_map(map)))
        }
        Value::Array(items) => Some(Value::Array(items.into_iter().filter_map(clean).collect())),
        other => Some(other),
    }
}

fn clean_map(map: Map<String, Value>) -> Map<String, Value> {
    map.into_iter()
        .filter(|(key, value)| !key.starts_with('$') && !value.is_null())
        .filter_map(|(key, value)| clean(value).map(|value| (key, value)))
        .collect()
}

fn no_merge_key(item: &Value, merge_key: &str) -> PatchError {
    PatchError::strategic(format!(
        "map: {} does not contain declared merge key: {merge_key}",
        go_format(item)
    ))
}

fn bad_patch_type(directive: &Value, map: &Map<String, Value>) -> PatchError {
    PatchError::strategic(format!(
        "unknown patch type: {} in map: {}",
        go_format(directive),
        go_format(&Value::Object(map.clone()))
    ))
}

/// Go's `json: cannot unmarshal X into Go value of type T`.
fn go_unmarshal_error(value: &Value, go_type: &str) -> String {
    let json_kind = match value {
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null => "null",
    };
    format!("json: cannot unmarshal {json_kind} into Go value of type {go_type}")
}

/// The Go type a decoded JSON value has upstream.
fn go_type_name(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
        Value::String(_) => "string",
        Value::Number(number) if number.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::Bool(_) => "bool",
        Value::Null => "<nil>",
    }
}

/// A JSON value as Go's `%v` prints the decoded value (`map[k:v]`, `[a b]`), for messages that
/// quote the patch as upstream does.
fn go_format(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => text.clone(),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(go_format).collect();
            format!("[{}]", items.join(" "))
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|left, right| left.0.cmp(right.0));
            let entries: Vec<String> = entries
                .iter()
                .map(|(key, value)| format!("{key}:{}", go_format(value)))
                .collect();
            format!("map[{}]", entries.join(" "))
        }
    }
}

#[cfg(test)]
#[path = "patch_tests.rs"]
mod tests;
