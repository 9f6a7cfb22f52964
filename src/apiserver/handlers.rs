//! HTTP routing and the verbs: URL → (resource, namespace, name, subresource) → create, get,
//! list, update, patch, delete, status/scale/binding, watch. Each verb reads and writes through
//! `store` only; conflicts between writers are settled by the store's mod_revision guards.
//!
//! Must not touch anything but `client::KvClient` (through `store`) and this module's pure
//! helpers (`object`, `table`, `discovery`, `patch`, `selector`, `validate`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::error::ApiError;
use super::object::{self, meta_str, metadata_mut};
use super::patch::{PatchType, apply_patch};
use super::protobuf;
use super::registry::{self, Resource};
use super::schema;
use super::selector::{FieldSelector, LabelSelector, field_value};
use super::store::{self, Stored};
use super::table::{self, TableOptions};
use super::ttl::TtlLeases;
use super::validate::{FieldError, FieldErrorKind, invalid_status_message, validate};
use super::{
    LIST_FETCH_LIMIT_MAX, LIST_PASSES_MAX, NAMESPACES_SEEDED, UPDATE_ATTEMPTS_MAX, discovery, watch,
};
use crate::client::KvClient;
use crate::types::LeaseId;

/// Media types a create or update body may have, as kube lists them in its 415.
const BODY_MEDIA_TYPES: &str =
    "application/json, application/yaml, application/vnd.kubernetes.protobuf";
/// Media types a PATCH body may have, as kube lists them in its 415.
const PATCH_MEDIA_TYPES: &str = "application/json-patch+json, application/merge-patch+json, \
     application/apply-patch+yaml, application/strategic-merge-patch+json";
/// The longest warning text sent, in characters (kube's cut).
const WARNING_CHARS_MAX: usize = 256;
/// The most warning text one response carries, in bytes (kube's cap).
const WARNINGS_BYTES_MAX: usize = 4096;
/// The continue token's version tag, as kube's.
const CONTINUE_VERSION: &str = "meta.k8s.io/v1";
/// Pods read per page while looking for those whose grace period is over.
const REAP_PAGE_KEYS: i64 = 500;

/// The shared state of every request.
pub struct Api<C> {
    /// The store.
    pub client: C,
    /// `host:port` reported in `/api`'s serverAddressByClientCIDRs.
    pub server_address: String,
    /// The leases Events are created with, so they expire.
    pub ttl_leases: TtlLeases,
}

/// Query parameters, last value wins.
pub struct Params(HashMap<String, String>);

impl Params {
    fn parse(uri: &Uri) -> Params {
        let query = uri.query().unwrap_or("");
        Params(
            url::form_urlencoded::parse(query.as_bytes())
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect(),
        )
    }

    /// No parameters.
    pub fn empty() -> Params {
        Params(HashMap::new())
    }

    /// Sets one parameter.
    pub fn set(&mut self, key: &str, value: &str) {
        self.0.insert(key.to_string(), value.to_string());
    }

    /// A parameter's value, None when absent or empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Whether a boolean parameter is set (`true` or `1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// What the Accept header asks for.
#[derive(Clone, Copy)]
pub struct Render {
    /// A `meta.k8s.io/v1 Table`.
    pub table: bool,
    /// Rows carry their object's metadata (kube's default `includeObject=Metadata`).
    pub include_object: bool,
}

impl Render {
    fn of(headers: &HeaderMap, params: &Params) -> Render {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Render {
            table: accept.contains("as=Table"),
            include_object: params.get("includeObject") != Some("None"),
        }
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// Every request lands here; errors become kube Status bodies.
pub async fn dispatch<C: KvClient + Clone + 'static>(
    State(api): State<Arc<Api<C>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(&uri);
    match route(&api, &method, &uri, &headers, &params, body).await {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(%method, %uri, %err, "apiserver request refused");
            err.into_response()
        }
    }
}

async fn route<C: KvClient + Clone + 'static>(
    api: &Arc<Api<C>>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    params: &Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let document = match segments.as_slice() {
        ["version"] => Some(discovery::version()),
        ["healthz" | "readyz" | "livez"] => return Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => Some(discovery::api_versions(&api.server_address)),
        ["apis"] => Some(discovery::api_groups()),
        ["apis", group] => discovery::api_group(group),
        ["openapi", "v3"] => Some(discovery::openapi_index()),
        ["openapi", "v3", "api", version] => discovery::openapi_group_version("", version),
        ["openapi", "v3", "apis", group, version] => {
            discovery::openapi_group_version(group, version)
        }
        ["api", version] => discovery::resource_list("", version),
        ["apis", group, version] => discovery::resource_list(group, version),
        ["api", version, rest @ ..] => {
            return resource_route(api, method, headers, params, body, ("", version), rest).await;
        }
        ["apis", group, version, rest @ ..] => {
            return resource_route(api, method, headers, params, body, (group, version), rest)
                .await;
        }
        _ => None,
    };
    match document {
        Some(_) if method != Method::GET => Err(ApiError::MethodNotAllowed),
        Some(document) => Ok(json_response(StatusCode::OK, &document)),
        None => Err(ApiError::NoRoute),
    }
}

/// A request on a resource path, parsed.
struct Target<'a> {
    resource: &'static Resource,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

fn parse_target<'a>(group: &str, version: &str, rest: &[&'a str]) -> Result<Target<'a>, ApiError> {
    let namespaced_path = rest.len() >= 3
        && rest[0] == "namespaces"
        && registry::find(group, version, rest[2]).is_some_and(|r| r.namespaced);
    let (namespace, rest) = if namespaced_path {
        (Some(rest[1]), &rest[2..])
    } else {
        (None, rest)
    };
    let resource = rest
        .first()
        .and_then(|plural| registry::find(group, version, plural))
        .ok_or(ApiError::NoRoute)?;
    let name = rest.get(1).copied();
    let subresource = rest.get(2).copied();
    let addressable = rest.len() <= 3
        && !(resource.namespaced && namespace.is_none() && name.is_some())
        && subresource.is_none_or(|sub| resource.has_subresource(sub));
    if !addressable {
        return Err(ApiError::NoRoute);
    }
    Ok(Target {
        resource,
        namespace,
        name,
        subresource,
    })
}

async fn resource_route<C: KvClient + Clone + 'static>(
    api: &Arc<Api<C>>,
    method: &Method,
    headers: &HeaderMap,
    params: &Params,
    body: Bytes,
    (group, version): (&str, &str),
    rest: &[&str],
) -> Result<Response, ApiError> {
    let target = parse_target(group, version, rest)?;
    let resource = target.resource;
    let namespace = target.namespace.unwrap_or("");
    let render = Render::of(headers, params);
    let client = &api.client;
    match (target.name, target.subresource, method.clone()) {
        (None, None, Method::GET) if params.flag("watch") => {
            watch::serve(client.clone(), resource, target.namespace, params, render).await
        }
        (None, None, Method::GET) => list(client, resource, target.namespace, params, render).await,
        (None, None, Method::POST) => {
            let mut object = decode_body(headers, &body)?;
            let warnings = check_fields(resource, &mut object, FieldValidation::of(params)?)?;
            let created =
                create_expiring(client, &api.ttl_leases, resource, namespace, object).await?;
            Ok(with_warnings(
                json_response(StatusCode::CREATED, &created),
                &warnings,
            ))
        }
        (Some(name), None | Some("status"), Method::GET) => {
            let stored = get_existing(client, resource, namespace, name).await?;
            Ok(render_one(resource, &stored.object, render))
        }
        (Some(name), sub @ (None | Some("status")), Method::PUT) => {
            let mut object = decode_body(headers, &body)?;
            let warnings = check_fields(resource, &mut object, FieldValidation::of(params)?)?;
            let lease = api.ttl_leases.lease_for(client, resource.kind).await?;
            let updated = update(
                client,
                resource,
                namespace,
                name,
                object,
                sub.is_some(),
                lease,
            )
            .await?;
            Ok(with_warnings(
                json_response(StatusCode::OK, &updated),
                &warnings,
            ))
        }
        (Some(name), sub @ (None | Some("status")), Method::PATCH) => {
            patch(
                client,
                &api.ttl_leases,
                resource,
                namespace,
                name,
                sub.is_some(),
                headers,
                params,
                &body,
            )
            .await
        }
        (Some(name), None, Method::DELETE) => {
            let options = delete_options(headers, &body, params)?;
            let last = delete(client, resource, namespace, name, &options).await?;
            Ok(json_response(StatusCode::OK, &last))
        }
        // As kube, only within one namespace for namespaced kinds, and never for namespaces.
        (None, None, Method::DELETE)
            if resource.kind != "Namespace"
                && (!resource.namespaced || target.namespace.is_some()) =>
        {
            let options = delete_options(headers, &body, params)?;
            let deleted =
                delete_collection(client, resource, target.namespace, params, &options).await?;
            Ok(json_response(StatusCode::OK, &deleted))
        }
        (Some(name), Some("scale"), Method::GET) => {
            let stored = get_existing(client, resource, namespace, name).await?;
            Ok(json_response(StatusCode::OK, &scale_of(&stored.object)))
        }
        (Some(name), Some("scale"), Method::PUT | Method::PATCH) => {
            let scale =
                update_scale(client, resource, namespace, name, method, headers, &body).await?;
            Ok(json_response(StatusCode::OK, &scale))
        }
        (Some(name), Some("binding"), Method::POST) => {
            let binding = decode_body(headers, &body)?;
            bind(client, resource, namespace, name, &binding).await?;
            let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Success", "code": 201});
            Ok(json_response(StatusCode::CREATED, &status))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// The JSON object of a create or update body: JSON (or YAML's media type), or the protobuf
/// kubectl 1.32's typed clients send, decoded into the same JSON form.
fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if protobuf::is_protobuf(media) {
        return protobuf::decode(body).map_err(|err| ApiError::BadRequest(err.to_string()));
    }
    // JSON is YAML, and every kubectl command that sends YAML's media type sends JSON text.
    if !matches!(media, "application/json" | "application/yaml" | "") {
        return Err(ApiError::UnsupportedMediaType(BODY_MEDIA_TYPES));
    }
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        ApiError::BadRequest(format!(
            "couldn't get version/kind; json parse error: {err}"
        ))
    })?;
    if !value.is_object() {
        return Err(ApiError::BadRequest(
            "couldn't get version/kind; json parse error: the body is not a JSON object".into(),
        ));
    }
    Ok(value)
}

/// kube's `fieldValidation` levels: what a create, update or patch does with fields the kind's
/// schema does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldValidation {
    /// Refuse the request (400), listing every unknown field.
    Strict,
    /// Drop them, and say so in a `Warning` header each (kube's default).
    Warn,
    /// Drop them silently.
    Ignore,
}

impl FieldValidation {
    fn of(params: &Params) -> Result<FieldValidation, ApiError> {
        match params.get("fieldValidation").unwrap_or("") {
            "" | "Warn" => Ok(FieldValidation::Warn),
            "Strict" => Ok(FieldValidation::Strict),
            "Ignore" => Ok(FieldValidation::Ignore),
            other => Err(ApiError::BadRequest(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

/// Applies `level` to `object` of `resource`, a decoded body or a patched object: under
/// Strict unknown fields fail the request with kube's strict decoding error; otherwise they
/// are dropped, as kube's decoder drops them, and Warn returns one warning per field.
fn check_fields(
    resource: &Resource,
    object: &mut Value,
    level: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    let strict = level == FieldValidation::Strict;
    let found = schema::conform(resource.kind, object, !strict).unwrap_or_default();
    let listed: Vec<String> = found
        .iter()
        .map(|field| format!("unknown field {field:?}"))
        .collect();
    match level {
        _ if listed.is_empty() => Ok(Vec::new()),
        FieldValidation::Strict => Err(ApiError::BadRequest(format!(
            "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
            listed.join(", "),
            kind = resource.kind,
            version = resource.version,
        ))),
        FieldValidation::Warn => Ok(listed),
        FieldValidation::Ignore => Ok(Vec::new()),
    }
}

/// Adds one `Warning` header (RFC 7234's code 299, agent `-`) per warning, which kubectl
/// prints as `Warning: <text>`. As kube, each text is cut to [`WARNING_CHARS_MAX`] and the
/// warnings stop at [`WARNINGS_BYTES_MAX`] in all, so a body full of unknown fields cannot
/// make the response's headers huge.
fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    let mut total = 0;
    for warning in warnings {
        let text: String = warning.chars().take(WARNING_CHARS_MAX).collect();
        total += text.len();
        if total > WARNINGS_BYTES_MAX {
            break;
        }
        let quoted = format!(
            "299 - \"{}\"",
            text.replace('\\', "\\\\").replace('"', "\\\"")
        );
        if let Ok(value) = header::HeaderValue::from_str(&quoted) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// Checks the body's apiVersion and kind against the URL's resource, filling them in when
/// absent.
fn check_type(resource: &Resource, object: &mut Value) -> Result<(), ApiError> {
    let api_version = resource.api_version();
    if let Some(given) = object.get("apiVersion").and_then(Value::as_str)
        && given != api_version
    {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({given}) does not match the expected API version ({api_version})"
        )));
    }
    if let Some(given) = object.get("kind").and_then(Value::as_str)
        && given != resource.kind
    {
        return Err(ApiError::BadRequest(format!(
            "the kind in the data ({given}) does not match the expected kind ({})",
            resource.kind
        )));
    }
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(resource.kind);
    Ok(())
}

/// Sets `metadata.namespace` from the URL; a different one in the body is a 400.
fn check_namespace(
    resource: &Resource,
    namespace: &str,
    object: &mut Value,
) -> Result<(), ApiError> {
    if !resource.namespaced {
        metadata_mut(object).remove("namespace");
        return Ok(());
    }
    match meta_str(object, "namespace") {
        Some(given) if !given.is_empty() && given != namespace => Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        )),
        _ => {
            metadata_mut(object).insert("namespace".into(), json!(namespace));
            Ok(())
        }
    }
}

fn invalid(resource: &Resource, name: &str, causes: Vec<FieldError>) -> ApiError {
    ApiError::Invalid {
        message: invalid_status_message(resource.kind, name, &causes),
        kind: resource.kind,
        group: resource.group,
        name: name.to_string(),
        causes,
    }
}

fn check_valid(resource: &Resource, object: &Value) -> Result<(), ApiError> {
    let causes = validate(resource.kind, object);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(resource, object::name(object), causes))
    }
}

/// Requires `namespace` to exist and not be terminating, as kube does before a create.
async fn ensure_namespace<C: KvClient>(client: &C, namespace: &str) -> Result<(), ApiError> {
    let namespaces = registry::find("", "v1", "namespaces").expect("namespaces are served");
    let stored = store::get(client, &namespaces.key("", namespace))
        .await?
        .ok_or_else(|| ApiError::not_found(namespaces, namespace))?;
    if meta_str(&stored.object, "deletionTimestamp").is_some() {
        return Err(ApiError::Forbidden(format!(
            "unable to create new content in namespace {namespace} because it is being terminated"
        )));
    }
    Ok(())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    bytes
}

/// Fields kube defaults at create, for the kinds we serve (a small subset of its defaulting).
fn apply_defaults(resource: &Resource, object: &mut Value) {
    let set_if_absent = |object: &mut Value, pointer: &str, value: Value| {
        if object.pointer(pointer).is_none() {
            let (parent, field) = pointer.rsplit_once('/').expect("pointers have a parent");
            if object.pointer(parent).is_none_or(|p| !p.is_object()) {
                let (grand, leaf) = parent.rsplit_once('/').expect("two-level pointers");
                if let Some(map) = object.pointer_mut(grand).and_then(Value::as_object_mut) {
                    map.insert(leaf.to_string(), json!({}));
                }
            }
            if let Some(map) = object.pointer_mut(parent).and_then(Value::as_object_mut) {
                map.insert(field.to_string(), value);
            }
        }
    };
    match resource.kind {
        "Namespace" => {
            set_if_absent(object, "/spec/finalizers", json!(["kubernetes"]));
            set_if_absent(object, "/status/phase", json!("Active"));
        }
        "Pod" => {
            set_if_absent(object, "/spec/restartPolicy", json!("Always"));
            set_if_absent(object, "/spec/schedulerName", json!("default-scheduler"));
            set_if_absent(object, "/spec/terminationGracePeriodSeconds", json!(30));
            set_if_absent(object, "/status/phase", json!("Pending"));
        }
        "Service" => {
            set_if_absent(object, "/spec/type", json!("ClusterIP"));
            set_if_absent(object, "/spec/sessionAffinity", json!("None"));
        }
        "Secret" => set_if_absent(object, "/type", json!("Opaque")),
        "Deployment" => {
            // kube's apps/v1 defaults, which `kubectl describe deployment` prints.
            set_if_absent(object, "/spec/replicas", json!(1));
            set_if_absent(object, "/spec/revisionHistoryLimit", json!(10));
            set_if_absent(object, "/spec/progressDeadlineSeconds", json!(600));
            set_if_absent(object, "/spec/strategy/type", json!("RollingUpdate"));
            if object.pointer("/spec/strategy/type") == Some(&json!("RollingUpdate")) {
                set_if_absent(
                    object,
                    "/spec/strategy/rollingUpdate/maxUnavailable",
                    json!("25%"),
                );
                set_if_absent(
                    object,
                    "/spec/strategy/rollingUpdate/maxSurge",
                    json!("25%"),
                );
            }
            set_if_absent(object, "/spec/template/spec/restartPolicy", json!("Always"));
            set_if_absent(
                object,
                "/spec/template/spec/dnsPolicy",
                json!("ClusterFirst"),
            );
            set_if_absent(
                object,
                "/spec/template/spec/schedulerName",
                json!("default-scheduler"),
            );
            set_if_absent(
                object,
                "/spec/template/spec/terminationGracePeriodSeconds",
                json!(30),
            );
        }
        _ => {}
    }
}

/// [`create`] with the lease the kind expires on, if any (Events); a lease the store no
/// longer has is dropped and the create tried once more on a new one.
async fn create_expiring<C: KvClient>(
    client: &C,
    ttl_leases: &TtlLeases,
    resource: &Resource,
    namespace: &str,
    object: Value,
) -> Result<Value, ApiError> {
    let Some(lease) = ttl_leases.lease_for(client, resource.kind).await? else {
        return create(client, resource, namespace, object, None).await;
    };
    match create(client, resource, namespace, object.clone(), Some(lease)).await {
        Err(ApiError::LeaseNotFound(gone)) => {
            ttl_leases.forget(gone);
            let lease = ttl_leases.lease_for(client, resource.kind).await?;
            create(client, resource, namespace, object, lease).await
        }
        created => created,
    }
}

/// Creates `object` in `namespace`: the server sets uid, creationTimestamp, a generated name
/// when asked, and the RV; the write is `Txn(mod_revision == 0, Put)`, attached to `lease`
/// for kinds that expire.
pub async fn create<C: KvClient>(
    client: &C,
    resource: &Resource,
    namespace: &str,
    mut object: Value,
    lease: Option<LeaseId>,
) -> Result<Value, ApiError> {
    check_type(resource, &mut object)?;
    check_namespace(resource, namespace, &mut object)?;
    if meta_str(&object, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
        return Err(ApiError::Internal(
            "resourceVersion should not be set on objects to be created".into(),
        ));
    }
    if object::name(&object).is_empty() {
        if let Some(prefix) = meta_str(&object, "generateName").filter(|p| !p.is_empty()) {
            let name = object::generated_name(prefix, random_bytes());
            metadata_mut(&mut object).insert("name".into(), json!(name));
        } else {
            let cause = FieldError {
                field: "metadata.name".into(),
                kind: FieldErrorKind::Required,
                detail: "name or generateName is required".into(),
            };
            return Err(invalid(resource, "", vec![cause]));
        }
    }
    let name = object::name(&object).to_string();
    if resource.namespaced {
        ensure_namespace(client, namespace).await?;
    }
    check_valid(resource, &object)?;
    apply_defaults(resource, &mut object);
    let meta = metadata_mut(&mut object);
    for server_owned in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
    ] {
        meta.remove(server_owned);
    }
    meta.insert("uid".into(), json!(object::new_uid(random_bytes())));
    meta.insert(
        "creationTimestamp".into(),
        json!(object::timestamp(SystemTime::now())),
    );
    if resource.tracks_generation {
        meta.insert("generation".into(), json!(1));
    }
    let key = resource.key(namespace, &name);
    match store::put_if(client, &key, 0, &object, lease).await? {
        Some(revision) => {
            object::set_resource_version(&mut object, revision);
            Ok(object)
        }
        None => Err(ApiError::already_exists(resource, &name)),
    }
}

async fn get_existing<C: KvClient>(
    client: &C,
    resource: &Resource,
    namespace: &str,
    name: &str,
) -> Result<Stored, ApiError> {
    store::get(client, &resource.key(namespace, name))
        .await?
        .ok_or_else(|| ApiError::not_found(resource, name))
}

fn render_one(resource: &Resource, object: &Value, render: Render) -> Response {
    if render.table {
        let options = TableOptions {
            resource_version: meta_str(object, "resourceVersion")
                .unwrap_or("")
                .to_string(),
            continue_token: "",
            headers: true,
            include_object: render.include_object,
            now: SystemTime::now(),
        };
        json_response(
            StatusCode::OK,
            &table::table(resource, std::slice::from_ref(object), &options),
        )
    } else {
        json_response(StatusCode::OK, object)
    }
}

/// Parsed label and field selectors of a list or watch.
pub struct Selectors {
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Selectors {
    /// Parses `labelSelector` and `fieldSelector`; a bad one or an unsupported field is a 400.
    pub fn parse(resource: &Resource, params: &Params) -> Result<Selectors, ApiError> {
        let labels = params
            .get("labelSelector")
            .map(LabelSelector::parse)
            .transpose()
            .map_err(|err| ApiError::BadRequest(err.to_string()))?;
        let fields = params
            .get("fieldSelector")
            .map(FieldSelector::parse)
            .transpose()
            .map_err(|err| ApiError::BadRequest(err.to_string()))?;
        if let Some(fields) = &fields {
            fields
                .check_supported(resource.kind)
                .map_err(|err| ApiError::BadRequest(err.to_string()))?;
        }
        Ok(Selectors { labels, fields })
    }

    /// Whether any selector is set.
    pub fn any(&self) -> bool {
        self.labels.is_some() || self.fields.is_some()
    }

    /// Whether `object` (a `resource` object) is selected.
    pub fn matches(&self, resource: &Resource, object: &Value) -> bool {
        let labels_match = self
            .labels
            .as_ref()
            .is_none_or(|selector| selector.matches(&object::labels(object)));
        labels_match
            && self.fields.as_ref().is_none_or(|selector| {
                selector.matches(&|field| field_value(resource.kind, object, field))
            })
    }
}

/// The decoded continue token: the revision of the first page and the key to go on from,
/// relative to the list's prefix.
struct ContinueToken {
    revision: i64,
    start: String,
}

fn encode_continue(revision: i64, start: &str) -> String {
    let token = json!({"v": CONTINUE_VERSION, "rv": revision, "start": start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(text: &str) -> Result<ContinueToken, ApiError> {
    let bad = |why: &str| ApiError::BadRequest(format!("continue key is not valid: {why}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| bad("not base64"))?;
    let token: Value = serde_json::from_slice(&bytes).map_err(|_| bad("not JSON"))?;
    if token["v"] != CONTINUE_VERSION {
        return Err(bad(
            "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    let revision = token["rv"]
        .as_i64()
        .filter(|rv| *rv > 0)
        .ok_or_else(|| bad("bad rv"))?;
    let start = token["start"].as_str().ok_or_else(|| bad("no start"))?;
    // The start key is appended to the list's prefix: it must not climb out of it.
    if start.split('/').any(|step| step == "..") {
        return Err(bad("start key may not contain '..'"));
    }
    Ok(ContinueToken {
        revision,
        start: start.to_string(),
    })
}

/// Which revision a list reads, from `resourceVersion`, `resourceVersionMatch`, `limit` and
/// `continue` (apiserver.md §9); 0 means the latest.
fn list_revision(params: &Params, limit: i64) -> Result<(i64, Option<ContinueToken>), ApiError> {
    let rv = params.get("resourceVersion");
    let rv_match = params.get("resourceVersionMatch");
    if let Some(token) = params.get("continue") {
        if rv.is_some_and(|rv| rv != "0") {
            return Err(ApiError::BadRequest(
                "specifying resource version is not allowed when using continue".into(),
            ));
        }
        let token = decode_continue(token)?;
        return Ok((token.revision, Some(token)));
    }
    let Some(rv) = rv else {
        if rv_match.is_some() {
            return Err(ApiError::BadRequest(
                "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
            ));
        }
        return Ok((0, None));
    };
    let revision: i64 = rv.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "resourceVersion: Invalid value: \"{rv}\": must be a number"
        ))
    })?;
    match rv_match {
        Some("Exact") if revision == 0 => Err(ApiError::BadRequest(
            "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"".into(),
        )),
        Some("Exact") => Ok((revision, None)),
        // Legacy: an RV with a limit and no match means exactly that revision.
        None if revision > 0 && limit > 0 => Ok((revision, None)),
        None | Some("NotOlderThan") => Ok((0, None)),
        Some(other) => Err(ApiError::BadRequest(format!(
            "resourceVersionMatch: Unsupported value: \"{other}\""
        ))),
    }
}

/// One list page: items, the list RV, the continue token ("" when done) and, without
/// selectors, how many items remain.
pub struct ListPage {
    /// Selected objects.
    pub items: Vec<Value>,
    /// The list's resourceVersion (the revision read).
    pub revision: i64,
    /// The continue token, "" on the last page.
    pub continue_token: String,
    /// Items after this page, when known.
    pub remaining: Option<i64>,
}

/// Lists `resource` objects (of one namespace, or all) as kube does: one consistent
/// revision for every page, selectors applied while reading, the read limit doubled while
/// selectors drop items.
pub async fn list_page<C: KvClient>(
    client: &C,
    resource: &Resource,
    namespace: Option<&str>,
    params: &Params,
) -> Result<ListPage, ApiError> {
    let selectors = Selectors::parse(resource, params)?;
    let limit: i64 = match params.get("limit") {
        None => 0,
        Some(text) => text
            .parse::<i64>()
            .map_err(|_| ApiError::BadRequest(format!("limit: Invalid value: \"{text}\"")))?
            .max(0),
    };
    let (mut revision, token) = list_revision(params, limit)?;
    let minimum = params
        .get("resourceVersion")
        .filter(|_| params.get("resourceVersionMatch") != Some("Exact"))
        .and_then(|rv| rv.parse::<i64>().ok())
        .unwrap_or(0);
    let prefix = resource.list_prefix(namespace);
    let end = store::prefix_end(prefix.as_bytes());
    let mut start = match &token {
        Some(token) => format!("{prefix}{}", token.start).into_bytes(),
        None => prefix.clone().into_bytes(),
    };
    let mut fetch = if limit > 0 { limit } else { 0 };
    let mut items = Vec::new();
    let mut continue_from = None;
    let mut remaining = None;
    for _ in 0..LIST_PASSES_MAX {
        let page = store::range_page(client, start.clone(), end.clone(), revision, fetch)
            .await
            .map_err(|err| match (err, &token) {
                (ApiError::Expired(_), Some(_)) => ApiError::Expired(
                    "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter."
                        .into(),
                ),
                (err, _) => err,
            })?;
        if revision == 0 {
            revision = page.header_revision;
            if minimum > revision {
                return Err(ApiError::TooLargeResourceVersion {
                    requested: minimum,
                    current: revision,
                });
            }
        }
        let fetched = page.items.len();
        let mut last_key = None;
        for (idx, (key, object)) in page.items.into_iter().enumerate() {
            last_key = Some(key);
            if selectors.matches(resource, &object) {
                items.push(object);
            }
            let full = limit > 0 && items.len() as i64 >= limit;
            let more_after = idx + 1 < fetched || page.more;
            if full {
                if more_after {
                    continue_from = last_key.take();
                    if !selectors.any() {
                        remaining = Some(page.count - (idx as i64 + 1));
                    }
                }
                break;
            }
        }
        if continue_from.is_some() || !page.more || limit == 0 {
            break;
        }
        // Selectors dropped items and keys remain: read on, with a larger batch.
        let Some(last) = last_key else { break };
        start = last.to_vec();
        start.push(0);
        fetch = (fetch * 2).min(LIST_FETCH_LIMIT_MAX);
    }
    let continue_token = match continue_from {
        Some(key) => {
            let mut next = key[prefix.len()..].to_vec();
            next.push(0);
            encode_continue(revision, &String::from_utf8_lossy(&next))
        }
        None => String::new(),
    };
    Ok(ListPage {
        items,
        revision,
        continue_token,
        remaining,
    })
}

async fn list<C: KvClient>(
    client: &C,
    resource: &Resource,
    namespace: Option<&str>,
    params: &Params,
    render: Render,
) -> Result<Response, ApiError> {
    let page = list_page(client, resource, namespace, params).await?;
    if render.table {
        let options = TableOptions {
            resource_version: page.revision.to_string(),
            continue_token: &page.continue_token,
            headers: true,
            include_object: render.include_object,
            now: SystemTime::now(),
        };
        return Ok(json_response(
            StatusCode::OK,
            &table::table(resource, &page.items, &options),
        ));
    }
    let mut metadata = json!({"resourceVersion": page.revision.to_string()});
    if !page.continue_token.is_empty() {
        metadata["continue"] = json!(page.continue_token);
    }
    if let Some(remaining) = page.remaining {
        metadata["remainingItemCount"] = json!(remaining);
    }
    let list = json!({
        "kind": resource.list_kind(),
        "apiVersion": resource.api_version(),
        "metadata": metadata,
        "items": page.items,
    });
    Ok(json_response(StatusCode::OK, &list))
}

/// kube's GuaranteedUpdate: read, apply `change`, skip the write when nothing changed, and
/// write under `Txn(mod_revision == read one)`, again on a lost race. `precondition` is the
/// caller's resourceVersion: a mismatch is the user's 409 Conflict.
async fn guaranteed_update<C: KvClient, F>(
    client: &C,
    resource: &Resource,
    namespace: &str,
    name: &str,
    precondition: Option<i64>,
    lease: Option<LeaseId>,
    mut change: F,
) -> Result<Value, ApiError>
where
    F: FnMut(&Value) -> Result<Value, ApiError>,
{
    let key = resource.key(namespace, name);
    for _ in 0..UPDATE_ATTEMPTS_MAX {
        let current = store::get(client, &key)
            .await?
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        if precondition.is_some_and(|rv| rv != current.mod_revision) {
            return Err(ApiError::stale(resource, name));
        }
        let mut updated = change(&current.object)?;
        object::set_resource_version(&mut updated, current.mod_revision);
        if updated == current.object {
            return Ok(current.object);
        }
        // An object being deleted goes once its last finalizer is removed.
        let finalized = meta_str(&updated, "deletionTimestamp").is_some()
            && updated
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        let written = if finalized {
            store::delete_if(client, &key, current.mod_revision).await?
        } else {
            store::put_if(client, &key, current.mod_revision, &updated, lease).await?
        };
        match written {
            Some(revision) => {
                object::set_resource_version(&mut updated, revision);
                return Ok(updated);
            }
            None if precondition.is_some() => return Err(ApiError::stale(resource, name)),
            None => continue,
        }
    }
    Err(ApiError::stale(resource, name))
}

/// Carries the server-owned fields of `current` into `updated` (a main-resource write): uid,
/// creationTimestamp, deletion marks, the status when it has its own subresource, and the
/// generation, bumped when the spec changed.
fn carry_over(resource: &Resource, current: &Value, updated: &mut Value) {
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "name",
        "namespace",
    ] {
        match current.get("metadata").and_then(|m| m.get(field)) {
            Some(value) => {
                metadata_mut(updated).insert(field.into(), value.clone());
            }
            None => {
                metadata_mut(updated).remove(field);
            }
        }
    }
    if resource.has_subresource("status") {
        match current.get("status") {
            Some(status) => updated["status"] = status.clone(),
            None => {
                if let Some(map) = updated.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    }
    if resource.tracks_generation && current.get("spec") != updated.get("spec") {
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        metadata_mut(updated).insert("generation".into(), json!(generation + 1));
    }
}

/// A status write keeps everything of `current` but `.status`.
fn status_only(current: &Value, updated: &Value) -> Value {
    let mut out = current.clone();
    match updated.get("status") {
        Some(status) => out["status"] = status.clone(),
        None => {
            if let Some(map) = out.as_object_mut() {
                map.remove("status");
            }
        }
    }
    out
}

fn resource_version_of(object: &Value) -> Result<Option<i64>, ApiError> {
    match meta_str(object, "resourceVersion").filter(|rv| !rv.is_empty()) {
        None => Ok(None),
        Some(rv) => rv.parse().map(Some).map_err(|_| {
            ApiError::BadRequest(format!(
                "metadata.resourceVersion: Invalid value: \"{rv}\": must be a number"
            ))
        }),
    }
}

#[allow(clippy::too_many_arguments)]
async fn update<C: KvClient>(
    client: &C,
    resource: &Resource,
    namespace: &str,
    name: &str,
    mut object: Value,
    status: bool,
    lease: Option<LeaseId>,
) -> Result<Value, ApiError> {
    check_type(resource, &mut object)?;
    check_namespace(resource, namespace, &mut object)?;
    let body_name = object::name(&object);
    if body_name != name {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    check_valid(resource, &object)?;
    let precondition = resource_version_of(&object)?;
    guaranteed_update(
        client,
        resource,
        namespace,
        name,
        precondition,
        lease,
        |current| {
            if status {
                return Ok(status_only(current, &object));
            }
            let mut updated = object.clone();
            carry_over(resource, current, &mut updated);
            Ok(updated)
        },
    )
    .await
}

/// A patch's resourceVersion, when it carries one, must be the current one (kubectl's
/// `--resource-version` relies on it).
fn check_patched_version(
    resource: &Resource,
    name: &str,
    current: &Value,
    patched: &Value,
) -> Result<(), ApiError> {
    let wanted = meta_str(patched, "resourceVersion");
    if wanted.is_some_and(|rv| Some(rv) != meta_str(current, "resourceVersion")) {
        return Err(ApiError::stale(resource, name));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn patch<C: KvClient>(
    client: &C,
    ttl_leases: &TtlLeases,
    resource: &Resource,
    namespace: &str,
    name: &str,
    status: bool,
    headers: &HeaderMap,
    params: &Params,
    body: &[u8],
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    let validation = FieldValidation::of(params)?;
    let patch_type = if media == "application/apply-patch+yaml" {
        // Server-side apply, first version: create or merge, no field ownership.
        if params.get("fieldManager").is_none() {
            return Err(ApiError::UnprocessablePatch(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is \
                 required for apply patch"
                    .into(),
            ));
        }
        let exists = store::get(client, &resource.key(namespace, name))
            .await?
            .is_some();
        if !exists && !status {
            let mut object = decode_body(&HeaderMap::new(), body)?;
            let warnings = check_fields(resource, &mut object, validation)?;
            let created = create_expiring(client, ttl_leases, resource, namespace, object).await?;
            return Ok(with_warnings(
                json_response(StatusCode::CREATED, &created),
                &warnings,
            ));
        }
        PatchType::Merge
    } else {
        PatchType::from_content_type(media)
            .ok_or(ApiError::UnsupportedMediaType(PATCH_MEDIA_TYPES))?
    };
    let mut warnings = Vec::new();
    let lease = ttl_leases.lease_for(client, resource.kind).await?;
    let updated = guaranteed_update(client, resource, namespace, name, None, lease, |current| {
        let mut patched =
            apply_patch(patch_type, resource.kind, current, body).map_err(ApiError::from)?;
        // kube decodes the patched object as it would a body, so the same field rules hold.
        warnings = check_fields(resource, &mut patched, validation)?;
        check_patched_version(resource, name, current, &patched)?;
        if status {
            return Ok(status_only(current, &patched));
        }
        let mut updated = patched;
        check_type(resource, &mut updated)?;
        carry_over(resource, current, &mut updated);
        check_valid(resource, &updated)?;
        Ok(updated)
    })
    .await?;
    Ok(with_warnings(
        json_response(StatusCode::OK, &updated),
        &warnings,
    ))
}

/// The `autoscaling/v1 Scale` of a deployment.
fn scale_of(object: &Value) -> Value {
    let meta = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let selector = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

async fn update_scale<C: KvClient>(
    client: &C,
    resource: &Resource,
    namespace: &str,
    name: &str,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    let patch_type = if *method == Method::PATCH {
        let media = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Some(
            PatchType::from_content_type(media)
                .ok_or(ApiError::UnsupportedMediaType(PATCH_MEDIA_TYPES))?,
        )
    } else {
        None
    };
    let put_body = match patch_type {
        None => Some(decode_body(headers, body)?),
        Some(_) => None,
    };
    let updated = guaranteed_update(client, resource, namespace, name, None, None, |current| {
        let scale = scale_of(current);
        let wanted = match (patch_type, &put_body) {
            (Some(patch_type), _) => {
                apply_patch(patch_type, "Scale", &scale, body).map_err(ApiError::from)?
            }
            (None, Some(put)) => put.clone(),
            (None, None) => unreachable!("a PUT has a body"),
        };
        check_patched_version(resource, name, current, &wanted)?;
        // A plain int32 in autoscaling/v1: absent reads as 0 (and protobuf leaves a 0 out).
        let replicas = wanted
            .pointer("/spec/replicas")
            .map_or(Some(0), Value::as_i64)
            .filter(|replicas| *replicas >= 0)
            .ok_or_else(|| {
                invalid_scale(name, "spec.replicas", "must be greater than or equal to 0")
            })?;
        let mut updated = current.clone();
        updated["spec"]["replicas"] = json!(replicas);
        carry_over(resource, current, &mut updated);
        Ok(updated)
    })
    .await?;
    Ok(scale_of(&updated))
}

fn invalid_scale(name: &str, field: &str, detail: &str) -> ApiError {
    let causes = vec![FieldError {
        field: field.into(),
        kind: FieldErrorKind::Invalid,
        detail: detail.into(),
    }];
    ApiError::Invalid {
        message: invalid_status_message("Scale", name, &causes),
        kind: "Scale",
        group: "autoscaling",
        name: name.into(),
        causes,
    }
}

/// `pods/<name>/binding`: sets `spec.nodeName` once; a bound pod is a 409.
async fn bind<C: KvClient>(
    client: &C,
    resource: &Resource,
    namespace: &str,
    name: &str,
    binding: &Value,
) -> Result<(), ApiError> {
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|node| !node.is_empty())
        .ok_or_else(|| {
            let causes = vec![FieldError {
                field: "target.name".into(),
                kind: FieldErrorKind::Required,
                detail: String::new(),
            }];
            ApiError::Invalid {
                message: invalid_status_message("Binding", name, &causes),
                kind: "Binding",
                group: "",
                name: name.into(),
                causes,
            }
        })?
        .to_string();
    guaranteed_update(client, resource, namespace, name, None, None, |current| {
        if let Some(bound) = current.pointer("/spec/nodeName").and_then(Value::as_str)
            && !bound.is_empty()
        {
            return Err(ApiError::Conflict {
                resource: "pods/binding".into(),
                plural: resource.plural,
                group: resource.group,
                name: name.into(),
                detail: format!("pod {name} is already assigned to node \"{bound}\""),
            });
        }
        let mut updated = current.clone();
        updated["spec"]["nodeName"] = json!(node);
        let condition = json!({"type": "PodScheduled", "status": "True",
                               "lastTransitionTime": object::timestamp(SystemTime::now())});
        let conditions = updated["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conditions: Vec<Value> = conditions
            .into_iter()
            .filter(|c| c.get("type") != Some(&json!("PodScheduled")))
            .collect();
        conditions.push(condition);
        updated["status"]["conditions"] = json!(conditions);
        Ok(updated)
    })
    .await
    .map(|_| ())
}

fn check_preconditions(
    resource: &Resource,
    name: &str,
    current: &Stored,
    options: &Value,
) -> Result<(), ApiError> {
    if let Some(uid) = options
        .pointer("/preconditions/uid")
        .and_then(Value::as_str)
    {
        let actual = meta_str(&current.object, "uid").unwrap_or("");
        if uid != actual {
            return Err(ApiError::conflict(
                resource,
                name,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
    {
        let actual = current.mod_revision.to_string();
        if rv != actual {
            return Err(ApiError::conflict(
                resource,
                name,
                format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, \
                     ResourceVersion in object meta: {actual}"
                ),
            ));
        }
    }
    Ok(())
}

/// The DeleteOptions of a DELETE: its body, with `gracePeriodSeconds` also read from the
/// query as kube does (the body wins).
fn delete_options(headers: &HeaderMap, body: &[u8], params: &Params) -> Result<Value, ApiError> {
    let mut options = if body.is_empty() {
        json!({})
    } else {
        decode_body(headers, body)?
    };
    if options.get("gracePeriodSeconds").is_none()
        && let Some(text) = params.get("gracePeriodSeconds")
    {
        let seconds: i64 = text
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("invalid gracePeriodSeconds {text:?}")))?;
        options["gracePeriodSeconds"] = json!(seconds);
    }
    Ok(options)
}

/// `deletecollection`: deletes every object the list's selectors pick (one namespace's or,
/// for a cluster-wide request, all), each as a single DELETE with the same options would, and
/// returns them as a list, as kube does. An object that went meanwhile is skipped.
async fn delete_collection<C: KvClient>(
    client: &C,
    resource: &Resource,
    namespace: Option<&str>,
    params: &Params,
    options: &Value,
) -> Result<Value, ApiError> {
    let page = list_page(client, resource, namespace, params).await?;
    let mut deleted = Vec::with_capacity(page.items.len());
    for object in &page.items {
        let object_namespace = meta_str(object, "namespace").unwrap_or("");
        match delete(
            client,
            resource,
            object_namespace,
            object::name(object),
            options,
        )
        .await
        {
            Ok(last) => deleted.push(last),
            Err(ApiError::NotFound { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(json!({
        "kind": resource.list_kind(),
        "apiVersion": resource.api_version(),
        "metadata": {"resourceVersion": page.revision.to_string()},
        "items": deleted,
    }))
}

/// Deletes an object (checking `options.preconditions`), returning its last state. An object
/// with finalizers only gets its deletion marks; a namespace takes its objects with it.
async fn delete<C: KvClient>(
    client: &C,
    resource: &Resource,
    namespace: &str,
    name: &str,
    options: &Value,
) -> Result<Value, ApiError> {
    let key = resource.key(namespace, name);
    let is_namespace = resource.kind == "Namespace";
    for _ in 0..UPDATE_ATTEMPTS_MAX {
        let current = store::get(client, &key)
            .await?
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        check_preconditions(resource, name, &current, options)?;
        let user_finalizers = current
            .object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if user_finalizers || is_namespace {
            let mut marked = current.object.clone();
            if meta_str(&marked, "deletionTimestamp").is_none() {
                let meta = metadata_mut(&mut marked);
                meta.insert(
                    "deletionTimestamp".into(),
                    json!(object::timestamp(SystemTime::now())),
                );
                meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                if is_namespace {
                    marked["status"]["phase"] = json!("Terminating");
                }
                let Some(revision) =
                    store::put_if(client, &key, current.mod_revision, &marked, None).await?
                else {
                    continue;
                };
                object::set_resource_version(&mut marked, revision);
            }
            if !is_namespace {
                return Ok(marked);
            }
            // No namespace controller runs: empty the namespace here, then remove it, so
            // `kubectl delete ns` returns. New content was refused from the mark on.
            for contained in registry::RESOURCES.iter().filter(|r| r.namespaced) {
                store::delete_prefix(client, &contained.list_prefix(Some(name))).await?;
            }
            let Some(current) = store::get(client, &key).await? else {
                return Ok(marked);
            };
            let Some(revision) = store::delete_if(client, &key, current.mod_revision).await? else {
                continue;
            };
            let mut last = current.object;
            object::set_resource_version(&mut last, revision);
            return Ok(last);
        }
        let grace = (resource.kind == "Pod")
            .then(|| pod_grace_seconds(&current.object, options))
            .transpose()?
            .unwrap_or(0);
        if grace > 0 {
            let deadline = SystemTime::now() + Duration::from_secs(grace.unsigned_abs());
            let marked_until = meta_str(&current.object, "deletionTimestamp")
                .and_then(|text| humantime::parse_rfc3339(text).ok());
            // A pod already terminating keeps the earlier of its deadline and the new one.
            if marked_until.is_some_and(|until| until <= deadline) {
                return Ok(current.object);
            }
            let mut marked = current.object.clone();
            let meta = metadata_mut(&mut marked);
            meta.insert(
                "deletionTimestamp".into(),
                json!(object::timestamp(deadline)),
            );
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            let Some(revision) =
                store::put_if(client, &key, current.mod_revision, &marked, None).await?
            else {
                continue;
            };
            object::set_resource_version(&mut marked, revision);
            return Ok(marked);
        }
        if let Some(revision) = store::delete_if(client, &key, current.mod_revision).await? {
            let mut last = current.object;
            object::set_resource_version(&mut last, revision);
            return Ok(last);
        }
    }
    Err(ApiError::stale(resource, name))
}

/// The grace period of a pod's deletion, in seconds. As in kube's pod strategy, a pod that
/// never reached a node, or has finished, has nothing to stop and goes at once (0), and
/// otherwise the request's `gracePeriodSeconds` counts (kubectl: `--grace-period=N`, 1 for
/// `--now`, 0 with `--force`).
///
/// etcd-compat (kube): without one, kube takes the pod's `terminationGracePeriodSeconds`
/// (default 30), the time its kubelet gives the containers to stop, and the kubelet deletes
/// the pod once they have. No kubelet runs here and no container either, so such a pod goes at
/// once: `kubectl delete pod` returns promptly, as it does against a cluster whose containers
/// stop quickly, instead of after 30 s.
fn pod_grace_seconds(pod: &Value, options: &Value) -> Result<i64, ApiError> {
    let requested =
        match options.get("gracePeriodSeconds") {
            None | Some(Value::Null) => None,
            Some(value) => Some(value.as_i64().ok_or_else(|| {
                ApiError::BadRequest(format!("invalid gracePeriodSeconds {value}"))
            })?),
        };
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|node| !node.is_empty());
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !scheduled || finished {
        return Ok(0);
    }
    Ok(requested.unwrap_or(0).max(0))
}

/// Deletes the pods whose graceful deletion deadline has passed. A kubelet would confirm
/// each once its containers stopped; no kubelet runs here, so the deadline stands for that.
/// Pods with finalizers wait for them, as for any object. Guarded by `mod_revision`, so API
/// servers sharing a store never delete a pod that changed meanwhile.
///
/// # Errors
/// [`ApiError`] when the store cannot be read or written.
pub async fn reap_terminated_pods<C: KvClient>(client: &C) -> Result<usize, ApiError> {
    let pods = registry::find("", "v1", "pods").expect("pods are served");
    let now = SystemTime::now();
    let mut reaped = 0;
    let mut start = pods.list_prefix(None).into_bytes();
    let end = store::prefix_end(&start);
    loop {
        let page = store::range_page(client, start.clone(), end.clone(), 0, REAP_PAGE_KEYS).await?;
        for (key, pod) in &page.items {
            let due = meta_str(pod, "deletionTimestamp")
                .and_then(|text| humantime::parse_rfc3339(text).ok())
                .is_some_and(|deadline| deadline <= now);
            let finalizers = pod
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
            let revision = meta_str(pod, "resourceVersion").and_then(|rv| rv.parse().ok());
            if let (true, false, Some(revision)) = (due, finalizers, revision)
                && store::delete_if(client, &String::from_utf8_lossy(key), revision)
                    .await?
                    .is_some()
            {
                reaped += 1;
            }
        }
        match page.items.last() {
            Some((last, _)) if page.more => {
                start = last.to_vec();
                start.push(0);
            }
            _ => return Ok(reaped),
        }
    }
}

/// Creates the namespaces every cluster has, when missing.
pub async fn seed_namespaces<C: KvClient>(client: &C) -> Result<(), ApiError> {
    let namespaces = registry::find("", "v1", "namespaces").expect("namespaces are served");
    for name in NAMESPACES_SEEDED {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match create(client, namespaces, "", object, None).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_grace_periods_follow_kubes_pod_strategy() {
        let bound = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30}});
        let grace = |pod: &Value, options: Value| pod_grace_seconds(pod, &options).unwrap();
        assert_eq!(grace(&bound, json!({"gracePeriodSeconds": 7})), 7);
        assert_eq!(grace(&bound, json!({"gracePeriodSeconds": 0})), 0);
        assert_eq!(grace(&bound, json!({"gracePeriodSeconds": -3})), 0);
        // No kubelet would honour the pod's own period: without a request, at once.
        assert_eq!(grace(&bound, json!({})), 0);
        // Nothing runs for a pod that never reached a node, or has finished.
        assert_eq!(
            grace(&json!({"spec": {}}), json!({"gracePeriodSeconds": 9})),
            0
        );
        let done = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded"}});
        assert_eq!(grace(&done, json!({"gracePeriodSeconds": 9})), 0);
        assert!(matches!(
            pod_grace_seconds(&bound, &json!({"gracePeriodSeconds": "soon"})),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn continue_tokens_round_trip_and_refuse_escapes() {
        let token = encode_continue(42, "demo/web\u{0}");
        let back = decode_continue(&token).unwrap();
        assert_eq!(back.revision, 42);
        assert_eq!(back.start, "demo/web\u{0}");
        let escape = encode_continue(42, "../secrets/x");
        assert!(matches!(
            decode_continue(&escape),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            decode_continue("%%%"),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn paths_parse_into_targets() {
        let t = parse_target("", "v1", &["namespaces", "demo", "pods", "web", "status"]).unwrap();
        assert_eq!(t.resource.plural, "pods");
        assert_eq!(t.namespace, Some("demo"));
        assert_eq!(t.name, Some("web"));
        assert_eq!(t.subresource, Some("status"));
        let t = parse_target("", "v1", &["namespaces", "demo"]).unwrap();
        assert_eq!(t.resource.plural, "namespaces");
        assert_eq!(t.name, Some("demo"));
        let t = parse_target("", "v1", &["namespaces", "demo", "status"]).unwrap();
        assert_eq!(t.resource.plural, "namespaces");
        assert_eq!(t.subresource, Some("status"));
        let t = parse_target("", "v1", &["pods"]).unwrap();
        assert_eq!(t.namespace, None);
        assert!(parse_target("", "v1", &["pods", "web"]).is_err());
        assert!(parse_target("", "v1", &["nodes", "n1", "binding"]).is_err());
        assert!(parse_target("", "v1", &["foos"]).is_err());
    }

    #[test]
    fn list_revision_follows_kube() {
        let params = |query: &str| Params::parse(&format!("/x?{query}").parse::<Uri>().unwrap());
        assert_eq!(list_revision(&params(""), 0).unwrap().0, 0);
        assert_eq!(
            list_revision(&params("resourceVersion=0"), 500).unwrap().0,
            0
        );
        assert_eq!(
            list_revision(&params("resourceVersion=7"), 500).unwrap().0,
            7
        );
        assert_eq!(list_revision(&params("resourceVersion=7"), 0).unwrap().0, 0);
        let exact = params("resourceVersion=7&resourceVersionMatch=Exact");
        assert_eq!(list_revision(&exact, 0).unwrap().0, 7);
        let both = params(&format!(
            "resourceVersion=7&continue={}",
            encode_continue(3, "a")
        ));
        assert!(matches!(
            list_revision(&both, 5),
            Err(ApiError::BadRequest(_))
        ));
    }
}
