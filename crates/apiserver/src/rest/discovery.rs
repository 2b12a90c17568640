//! What kubectl and client libraries ask before anything else: the version
//! (kubectl on this machine picks its own version from `minor`), legacy
//! discovery (`/api`, `/apis`, the resource lists; kubectl 1.32 falls back
//! to it from aggregated discovery) and enough OpenAPI v3 that `kubectl
//! apply` knows the server validates fields itself (`fieldValidation` on
//! PATCH), so it need not download schemas. All of it is generated from the
//! kind registry.

use rkube_api::{ResourceInfo, KINDS};
use serde_json::{json, Value};

/// The Kubernetes API level rkube implements.
pub const KUBERNETES_MAJOR: &str = "1";
pub const KUBERNETES_MINOR: &str = "32";

/// Kinds with a `scale` subresource (an autoscaling/v1 Scale).
pub fn has_scale(info: &ResourceInfo) -> bool {
    info.group == "apps" && matches!(info.kind, "Deployment" | "ReplicaSet" | "StatefulSet")
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub fn version() -> Value {
    json!({
        "major": KUBERNETES_MAJOR,
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0-rkube.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// The group-versions served: `("", "v1")` first, then the named groups.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in KINDS {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out.push(("authorization.k8s.io", "v1"));
    out.sort_by_key(|(g, _)| !g.is_empty());
    out
}

pub fn root_paths() -> Value {
    let mut paths = vec![
        "/api".to_string(),
        "/api/v1".to_string(),
        "/apis".to_string(),
        "/healthz".to_string(),
        "/livez".to_string(),
        "/openapi/v3".to_string(),
        "/readyz".to_string(),
        "/version".to_string(),
    ];
    for (g, v) in group_versions() {
        if !g.is_empty() {
            paths.push(format!("/apis/{g}"));
            paths.push(format!("/apis/{g}/{v}"));
        }
    }
    json!({ "paths": paths })
}

pub fn core_versions(parts: &http::request::Parts) -> Value {
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    })
}

pub fn groups() -> Value {
    let groups: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The APIResourceList of a group-version, or None if it is not served.
pub fn resources(group: &str, version: &str) -> Option<Value> {
    if !group_versions().contains(&(group, version)) {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut list = Vec::new();
    if group == "authorization.k8s.io" {
        list.push(json!({
            "name": "selfsubjectaccessreviews", "singularName": "selfsubjectaccessreview",
            "namespaced": false, "kind": "SelfSubjectAccessReview", "verbs": ["create"],
        }));
    }
    for k in KINDS.iter().filter(|k| k.group == group && k.version == version) {
        let mut r = json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": VERBS,
        });
        if !k.short_names.is_empty() {
            r["shortNames"] = json!(k.short_names);
        }
        if !k.categories().is_empty() {
            r["categories"] = json!(k.categories());
        }
        list.push(r);
        if k.has_status {
            list.push(json!({
                "name": format!("{}/status", k.plural), "singularName": "",
                "namespaced": k.namespaced, "kind": k.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if k.kind == "Pod" {
            list.push(json!({
                "name": "pods/log", "singularName": "",
                "namespaced": true, "kind": "Pod", "verbs": ["get"],
            }));
            for (name, kind) in [
                ("pods/exec", "PodExecOptions"),
                ("pods/portforward", "PodPortForwardOptions"),
            ] {
                list.push(json!({
                    "name": name, "singularName": "",
                    "namespaced": true, "kind": kind, "verbs": ["create", "get"],
                }));
            }
            // kubectl drain evicts only where discovery lists this subresource
            list.push(json!({
                "name": "pods/eviction", "singularName": "",
                "namespaced": true, "group": "policy", "version": "v1",
                "kind": "Eviction", "verbs": ["create"],
            }));
        }
        if k.kind == "ServiceAccount" {
            list.push(json!({
                "name": "serviceaccounts/token", "singularName": "",
                "namespaced": true, "group": "authentication.k8s.io", "version": "v1",
                "kind": "TokenRequest", "verbs": ["create"],
            }));
        }
        if has_scale(k) {
            list.push(json!({
                "name": format!("{}/scale", k.plural), "singularName": "",
                "namespaced": k.namespaced, "group": "autoscaling", "version": "v1",
                "kind": "Scale", "verbs": ["get", "patch", "update"],
            }));
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": list,
    }))
}

/// The media type of aggregated discovery (kubectl 1.32 asks for it first
/// and falls back to the legacy documents when answered plain JSON).
pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an `Accept` header asks for aggregated discovery v2.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|t| {
        let params: Vec<&str> = t.split(';').map(str::trim).collect();
        params.first() == Some(&"application/json")
            && params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

/// Aggregated discovery (`apidiscovery.k8s.io/v2`) of the core group
/// (`/api`) or the named groups (`/apis`), rewritten from the legacy
/// resource lists so both say the same.
pub fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .filter_map(|(g, v)| {
            let list = resources(g, v)?;
            let entries = list["resources"].as_array().cloned().unwrap_or_default();
            let kind_of = |r: &Value| {
                json!({
                    "group": r.get("group").and_then(Value::as_str).unwrap_or(g),
                    "version": r.get("version").and_then(Value::as_str).unwrap_or(v),
                    "kind": r["kind"],
                })
            };
            let resources: Vec<Value> = entries
                .iter()
                .filter_map(|r| {
                    let name = r["name"].as_str()?;
                    if name.contains('/') {
                        return None;
                    }
                    let subresources: Vec<Value> = entries
                        .iter()
                        .filter_map(|s| {
                            let sub = s["name"].as_str()?.strip_prefix(name)?.strip_prefix('/')?;
                            Some(json!({"subresource": sub, "responseKind": kind_of(s), "verbs": s["verbs"]}))
                        })
                        .collect();
                    let mut out = json!({
                        "resource": name,
                        "responseKind": kind_of(r),
                        "scope": if r["namespaced"] == true { "Namespaced" } else { "Cluster" },
                        "singularResource": r["singularName"],
                        "verbs": r["verbs"],
                    });
                    for field in ["shortNames", "categories"] {
                        if let Some(v) = r.get(field) {
                            out[field] = v.clone();
                        }
                    }
                    if !subresources.is_empty() {
                        out["subresources"] = Value::Array(subresources);
                    }
                    Some(out)
                })
                .collect();
            Some(json!({
                "metadata": {"name": g},
                "versions": [{"version": v, "resources": resources, "freshness": "Current"}],
            }))
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

fn openapi_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: where each group-version's document is. The hash makes
/// kubectl's cache key change with the server's build.
pub fn openapi_root() -> Value {
    let hash = env!("CARGO_PKG_VERSION").replace('.', "");
    let paths: serde_json::Map<String, Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g != "authorization.k8s.io")
        .map(|(g, v)| {
            let p = openapi_path(g, v);
            (
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// A group-version's OpenAPI v3 document: each kind's paths, with the
/// PATCH operation declaring `fieldValidation` (what kubectl looks for to
/// leave validation to the server) and the group-version-kind extension;
/// schemas are open objects for now.
pub fn openapi_group_version(group: &str, version: &str) -> Option<Value> {
    if !group_versions().contains(&(group, version)) || group == "authorization.k8s.io" {
        return None;
    }
    let prefix = format!("/{}", openapi_path(group, version));
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for k in KINDS.iter().filter(|k| k.group == group && k.version == version) {
        let gvk = json!({"group": k.group, "version": k.version, "kind": k.kind});
        let schema_name = format!(
            "io.rkube.{}.{}.{}",
            if k.group.is_empty() { "core" } else { k.group },
            k.version,
            k.kind
        );
        let reference = json!({"$ref": format!("#/components/schemas/{schema_name}")});
        let body = json!({"content": {"application/json": {"schema": reference}}});
        let ok =
            json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}});
        let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}});
        let collection_path = if k.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", k.plural)
        } else {
            format!("{prefix}/{}", k.plural)
        };
        paths.insert(
            format!("{collection_path}/{{name}}"),
            json!({
                "get": {"x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk, "responses": ok},
                "put": {"x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk,
                        "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation")],
                        "requestBody": body, "responses": ok},
                "patch": {"x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
                          "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation"), query("force")],
                          "requestBody": {"content": {
                              "application/json-patch+json": {"schema": {"type": "object"}},
                              "application/merge-patch+json": {"schema": {"type": "object"}},
                              "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
                          }},
                          "responses": ok},
                "delete": {"x-kubernetes-action": "delete", "x-kubernetes-group-version-kind": gvk, "responses": ok},
            }),
        );
        paths.insert(
            collection_path,
            json!({
                "get": {"x-kubernetes-action": "list", "x-kubernetes-group-version-kind": gvk, "responses": ok},
                "post": {"x-kubernetes-action": "post", "x-kubernetes-group-version-kind": gvk,
                         "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation")],
                         "requestBody": body, "responses": ok},
            }),
        );
        schemas.insert(
            schema_name,
            // no group-version-kind extension: kubectl apply then computes
            // its strategic merge patches from its built-in types rather
            // than from this open schema
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "rkube", "version": version},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_carry_verbs_short_names_categories_and_subresources() {
        let core = resources("", "v1").unwrap();
        assert_eq!(core["groupVersion"], "v1");
        let pods = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods")
            .unwrap();
        assert_eq!(pods["namespaced"], true);
        assert_eq!(pods["categories"], json!(["all"]));
        assert!(pods["shortNames"].as_array().unwrap().contains(&json!("po")));
        assert!(pods["verbs"]
            .as_array()
            .unwrap()
            .contains(&json!("deletecollection")));
        assert!(core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "pods/status"));
        let apps = resources("apps", "v1").unwrap();
        let scale = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(
            (scale["kind"].as_str(), scale["group"].as_str()),
            (Some("Scale"), Some("autoscaling"))
        );
        assert!(resources("apps", "v2").is_none());
        assert!(groups()["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "apps"));
        assert_eq!(version()["minor"], "32");
    }

    #[test]
    fn aggregated_discovery_says_what_the_legacy_lists_say() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json, */*"));
        let apps = aggregated(false);
        let group = apps["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        let deployments = group["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deployments["scope"], "Namespaced");
        assert_eq!(deployments["responseKind"]["kind"], "Deployment");
        let scale = deployments["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "scale")
            .unwrap();
        assert_eq!(scale["responseKind"]["group"], "autoscaling");
        let core = aggregated(true);
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        assert_eq!(core["items"][0]["versions"][0]["version"], "v1");
    }

    #[test]
    fn openapi_tells_kubectl_that_patch_takes_field_validation() {
        let root = openapi_root();
        let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
        let doc = openapi_group_version("apps", "v1").unwrap();
        let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
    }
}
