//! The served resources: one row per resource with its discovery facts and its etcd key
//! prefix, in kube-apiserver's layout (`/registry/pods/<ns>/<name>`, `/registry/minions/<name>`).
//!
//! Pure data: no I/O, no HTTP. Everything else in the API server looks resources up here, so
//! adding a kind is one row (plus its Table columns in `table`).

/// One served resource (a plural under a group version).
#[derive(Debug)]
pub struct Resource {
    /// API group; "" for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Kind of one object.
    pub kind: &'static str,
    /// Plural name, used in URLs.
    pub plural: &'static str,
    /// Singular name.
    pub singular: &'static str,
    /// Short names kubectl resolves (`po`, `ns`); kubectl has none built in.
    pub short_names: &'static [&'static str],
    /// Categories (`all` drives `kubectl get all`).
    pub categories: &'static [&'static str],
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Served subresources (`status`, `binding`, `scale`).
    pub subresources: &'static [&'static str],
    /// etcd key prefix, without the trailing slash.
    pub key_prefix: &'static str,
    /// Whether `metadata.generation` counts spec changes (apps/* do; pods, configmaps and
    /// namespaces do not in 1.32).
    pub tracks_generation: bool,
}

/// Verbs of a main resource. Namespaces have no `deletecollection` (see
/// [`Resource::verbs`]), as in kube.
pub const RESOURCE_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Every served resource. Order is discovery order.
pub const RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        categories: &[],
        namespaced: false,
        subresources: &["status"],
        key_prefix: "/registry/namespaces",
        tracks_generation: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        categories: &["all"],
        namespaced: true,
        subresources: &["status", "binding"],
        key_prefix: "/registry/pods",
        tracks_generation: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        categories: &[],
        namespaced: false,
        subresources: &["status"],
        key_prefix: "/registry/minions",
        tracks_generation: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        categories: &["all"],
        namespaced: true,
        subresources: &["status"],
        key_prefix: "/registry/services/specs",
        tracks_generation: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        short_names: &["cm"],
        categories: &[],
        namespaced: true,
        subresources: &[],
        key_prefix: "/registry/configmaps",
        tracks_generation: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        categories: &[],
        namespaced: true,
        subresources: &[],
        key_prefix: "/registry/secrets",
        tracks_generation: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        categories: &[],
        namespaced: true,
        subresources: &[],
        key_prefix: "/registry/events",
        tracks_generation: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        short_names: &["sa"],
        categories: &[],
        namespaced: true,
        subresources: &[],
        key_prefix: "/registry/serviceaccounts",
        tracks_generation: false,
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
        categories: &["all"],
        namespaced: true,
        subresources: &["status", "scale"],
        key_prefix: "/registry/deployments",
        tracks_generation: true,
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        short_names: &[],
        categories: &[],
        namespaced: true,
        subresources: &[],
        key_prefix: "/registry/leases",
        tracks_generation: false,
    },
];

/// The served group versions, core first, as (group, version).
pub const GROUP_VERSIONS: &[(&str, &str)] =
    &[("", "v1"), ("apps", "v1"), ("coordination.k8s.io", "v1")];

impl Resource {
    /// The verbs discovery lists for this resource.
    pub fn verbs(&self) -> Vec<&'static str> {
        RESOURCE_VERBS
            .iter()
            .copied()
            .filter(|verb| *verb != "deletecollection" || self.kind != "Namespace")
            .collect()
    }

    /// `apiVersion` of the objects: `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        group_version(self.group, self.version)
    }

    /// Kind of a list of these objects (`PodList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The resource as kube names it in messages: `pods`, `deployments.apps`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether `sub` is a served subresource.
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// The etcd key of one object; `namespace` is ignored for cluster-scoped resources.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("{}/{namespace}/{name}", self.key_prefix)
        } else {
            format!("{}/{name}", self.key_prefix)
        }
    }

    /// The etcd key prefix of a list: one namespace's objects, or every object.
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(namespace) if self.namespaced => format!("{}/{namespace}/", self.key_prefix),
            _ => format!("{}/", self.key_prefix),
        }
    }
}

/// `v1` for the core group, `group/version` otherwise.
pub fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The resource named `plural` in a group version.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of `kind` (`Namespace`, `Pod`).
pub fn by_kind(kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.kind == kind)
}

/// The resources of one group version, in discovery order.
pub fn in_group_version(group: &str, version: &str) -> impl Iterator<Item = &'static Resource> {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_kube_apiserver_layout() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(pods.key("default", "web"), "/registry/pods/default/web");
        assert_eq!(pods.list_prefix(Some("demo")), "/registry/pods/demo/");
        assert_eq!(pods.list_prefix(None), "/registry/pods/");
        let nodes = find("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key("ignored", "n1"), "/registry/minions/n1");
        let services = find("", "v1", "services").unwrap();
        assert_eq!(services.key("a", "s"), "/registry/services/specs/a/s");
        let deployments = find("apps", "v1", "deployments").unwrap();
        assert_eq!(deployments.key("a", "d"), "/registry/deployments/a/d");
        assert_eq!(deployments.qualified(), "deployments.apps");
        assert_eq!(deployments.api_version(), "apps/v1");
    }

    #[test]
    fn no_list_prefix_contains_another() {
        // A list reads `<prefix>/`: one resource's prefix must never cover another's keys.
        for a in RESOURCES {
            for b in RESOURCES {
                if !std::ptr::eq(a, b) {
                    assert!(
                        !b.list_prefix(None).starts_with(&a.list_prefix(None)),
                        "{} covers {}",
                        a.plural,
                        b.plural
                    );
                }
            }
        }
    }
}
