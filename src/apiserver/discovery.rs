//! Discovery documents: `/version`, legacy `/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`, and the
//! stub OpenAPI v3 documents whose PATCH operations carry `fieldValidation`, which is all
//! kubectl looks for before it sends `fieldValidation=Strict` (apiserver.md §1, §2).
//!
//! Pure builders over the registry.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::registry::{self, GROUP_VERSIONS, Resource};

/// The Kubernetes minor version reported; the gcloud kubectl dispatcher picks its kubectl by it.
pub const KUBE_MINOR_VERSION: &str = "32";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR_VERSION,
        "gitVersion": format!("v1.{KUBE_MINOR_VERSION}.0-mnemo.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// `/api`: the core group's versions.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// `/apis`: every named group.
pub fn api_groups() -> Value {
    let groups: Vec<Value> = GROUP_VERSIONS
        .iter()
        .filter(|(group, _)| !group.is_empty())
        .map(|(group, version)| {
            let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
            json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`: one group, or None when not served.
pub fn api_group(group: &str) -> Option<Value> {
    let (_, version) = GROUP_VERSIONS
        .iter()
        .find(|(g, _)| !g.is_empty() && *g == group)?;
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    Some(json!({
        "kind": "APIGroup", "apiVersion": "v1", "name": group,
        "versions": [gv.clone()], "preferredVersion": gv,
    }))
}

fn subresource_entry(resource: &Resource, sub: &str) -> Value {
    match sub {
        "scale" => json!({
            "name": format!("{}/scale", resource.plural), "singularName": "",
            "namespaced": resource.namespaced, "group": "autoscaling", "version": "v1",
            "kind": "Scale", "verbs": ["get", "patch", "update"],
        }),
        "binding" => json!({
            "name": format!("{}/binding", resource.plural), "singularName": "",
            "namespaced": resource.namespaced, "kind": "Binding", "verbs": ["create"],
        }),
        _ => json!({
            "name": format!("{}/{sub}", resource.plural), "singularName": "",
            "namespaced": resource.namespaced, "kind": resource.kind,
            "verbs": ["get", "patch", "update"],
        }),
    }
}

/// `/api/v1` or `/apis/<g>/<v>`: the resources of one group version, or None when not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if !GROUP_VERSIONS.contains(&(group, version)) {
        return None;
    }
    let mut resources = Vec::new();
    for resource in registry::in_group_version(group, version) {
        let mut entry = json!({
            "name": resource.plural,
            "singularName": resource.singular,
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": resource.verbs(),
        });
        if !resource.short_names.is_empty() {
            entry["shortNames"] = json!(resource.short_names);
        }
        if !resource.categories.is_empty() {
            entry["categories"] = json!(resource.categories);
        }
        resources.push(entry);
        for sub in resource.subresources {
            resources.push(subresource_entry(resource, sub));
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": registry::group_version(group, version),
        "resources": resources,
    }))
}

/// The OpenAPI v3 path of a group version: `api/v1`, `apis/apps/v1`.
fn openapi_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The stub OpenAPI v3 document of one group version, or None when not served: one PATCH
/// operation per resource, tagged with its kind and taking `fieldValidation`.
pub fn openapi_group_version(group: &str, version: &str) -> Option<Value> {
    if !GROUP_VERSIONS.contains(&(group, version)) {
        return None;
    }
    let mut paths = serde_json::Map::new();
    for resource in registry::in_group_version(group, version) {
        let scope = if resource.namespaced {
            "namespaces/{namespace}/"
        } else {
            ""
        };
        let path = format!(
            "/{}/{scope}{}/{{name}}",
            openapi_path(group, version),
            resource.plural
        );
        paths.insert(
            path,
            json!({"patch": {
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": resource.kind},
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK"}},
            }}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{KUBE_MINOR_VERSION}.0")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// `/openapi/v3`: every served group version with a hash of its document, so kubectl's cache
/// notices a change.
pub fn openapi_index() -> Value {
    let mut paths = serde_json::Map::new();
    for (group, version) in GROUP_VERSIONS {
        let document = openapi_group_version(group, version).expect("served group version");
        let digest = Sha256::digest(document.to_string().as_bytes());
        let hash: String = digest.iter().take(16).map(|b| format!("{b:02X}")).collect();
        let path = openapi_path(group, version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
        );
    }
    json!({ "paths": paths })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_version_has_an_openapi_document() {
        let index = openapi_index();
        assert!(
            index["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/api/v1?hash=")
        );
        assert!(index["paths"]["apis/apps/v1"].is_object());
        let core = openapi_group_version("", "v1").unwrap();
        let pod = &core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(pod["x-kubernetes-group-version-kind"]["kind"], "Pod");
        assert_eq!(pod["parameters"][0]["name"], "fieldValidation");
        assert!(core["paths"]["/api/v1/nodes/{name}"].is_object());
        assert!(openapi_group_version("batch", "v1").is_none());
    }

    #[test]
    fn resource_lists_carry_short_names_and_subresources() {
        let core = resource_list("", "v1").unwrap();
        let resources = core["resources"].as_array().unwrap();
        let pods = resources.iter().find(|r| r["name"] == "pods").unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert!(resources.iter().any(|r| r["name"] == "pods/binding"));
        let apps = resource_list("apps", "v1").unwrap();
        let scale = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
        assert!(resource_list("apps", "v2").is_none());
    }
}
