//! What kubectl and client libraries ask before anything else: the version
//! (kubectl on this machine picks its own version from `minor`), legacy
//! discovery (`/api`, `/apis`, the resource lists; kubectl 1.32 falls back
//! to it from aggregated discovery) and the OpenAPI v3 documents (the
//! paths, saying the server validates fields itself: `fieldValidation` on
//! PATCH; the schemas come from [`openapi`]). All of it is generated from
//! the kind registry.

use super::openapi;
use crate::custom::CustomKind;
use rkube_api::{ResourceInfo, KINDS};
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};

/// The served versions of the kinds CustomResourceDefinitions add (and the
/// CRD kind itself), as discovery lists them beside the built-in ones.
pub type Custom = [Arc<CustomKind>];

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

/// The group-versions served: `("", "v1")` first, then the named groups;
/// a custom group's storage version before its other versions.
fn group_versions(custom: &Custom) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let mut custom: Vec<&Arc<CustomKind>> = custom.iter().filter(|k| k.served).collect();
    custom.sort_by_key(|k| k.info.version != k.storage_version);
    for k in KINDS.iter().chain(custom.iter().map(|k| k.info)) {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out.push(("authorization.k8s.io", "v1"));
    out.push((super::metrics::GROUP, super::metrics::VERSION));
    out.sort_by_key(|(g, _)| !g.is_empty());
    out
}

pub fn root_paths(custom: &Custom) -> Value {
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
    for (g, v) in group_versions(custom) {
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

pub fn groups(custom: &Custom) -> Value {
    let mut groups: Vec<Value> = Vec::new();
    for (g, v) in group_versions(custom).into_iter().filter(|(g, _)| !g.is_empty()) {
        let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
        match groups.iter_mut().find(|e| e["name"] == g) {
            // a group's later versions: the first (the storage version) stays preferred
            Some(e) => e["versions"]
                .as_array_mut()
                .into_iter()
                .for_each(|vs| vs.push(gv.clone())),
            None => groups.push(json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})),
        }
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The APIResourceList of a group-version, or None if it is not served.
pub fn resources(group: &str, version: &str, custom: &Custom) -> Option<Value> {
    if !group_versions(custom).contains(&(group, version)) {
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
    if group == super::metrics::GROUP {
        list.extend(super::metrics::discovery_resources());
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
                ("pods/attach", "PodAttachOptions"),
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
    for k in custom
        .iter()
        .filter(|k| k.served && k.info.group == group && k.info.version == version)
    {
        let info = k.info;
        let mut r = json!({
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": VERBS,
        });
        if !info.short_names.is_empty() {
            r["shortNames"] = json!(info.short_names);
        }
        if !k.categories.is_empty() {
            r["categories"] = json!(k.categories);
        }
        list.push(r);
        if k.status {
            list.push(json!({
                "name": format!("{}/status", info.plural), "singularName": "",
                "namespaced": info.namespaced, "kind": info.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if k.scale.is_some() {
            list.push(json!({
                "name": format!("{}/scale", info.plural), "singularName": "",
                "namespaced": info.namespaced, "group": "autoscaling", "version": "v1",
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
pub fn aggregated(core: bool, custom: &Custom) -> Value {
    let mut items: Vec<Value> = Vec::new();
    let versions = group_versions(custom)
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .filter_map(|(g, v)| {
            let list = resources(g, v, custom)?;
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
            Some((
                g,
                json!({"version": v, "resources": resources, "freshness": "Current"}),
            ))
        });
    for (g, version) in versions {
        match items.iter_mut().find(|i| i["metadata"]["name"] == g) {
            Some(item) => item["versions"]
                .as_array_mut()
                .into_iter()
                .for_each(|vs| vs.push(version.clone())),
            None => items.push(json!({"metadata": {"name": g}, "versions": [version]})),
        }
    }
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

/// `/openapi/v3`: where each group-version's document is. The hash is of
/// the document, so kubectl's cache (keyed by the URL) follows the schemas.
pub fn openapi_root(custom: &Custom) -> Value {
    let mut paths: serde_json::Map<String, Value> = openapi_documents()
        .iter()
        .map(|d| {
            let p = openapi_path(d.group, d.version);
            let url = format!("/openapi/v3/{p}?hash={:016X}", d.hash);
            (p, json!({ "serverRelativeURL": url }))
        })
        .collect();
    for (group, version) in group_versions(custom) {
        let p = openapi_path(group, version);
        if paths.contains_key(&p) {
            continue;
        }
        if let Some(doc) = custom_openapi_document(group, version, custom) {
            let url = format!("/openapi/v3/{p}?hash={:016X}", hash_of(&doc));
            paths.insert(p, json!({ "serverRelativeURL": url }));
        }
    }
    json!({ "paths": paths })
}

fn hash_of(doc: &Value) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&doc.to_string(), &mut hasher);
    std::hash::Hasher::finish(&hasher)
}

/// The OpenAPI document of a group-version only CRDs serve: their schemas,
/// under Kubernetes' names (`com.example.v1.Widget`), and their paths.
fn custom_openapi_document(group: &str, version: &str, custom: &Custom) -> Option<Value> {
    let kinds: Vec<&Arc<CustomKind>> = custom
        .iter()
        .filter(|k| k.served && k.info.group == group && k.info.version == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut schemas = serde_json::Map::new();
    let mut infos = Vec::new();
    for k in kinds {
        let mut schema = k.schema.clone().unwrap_or_else(|| json!({"type": "object"}));
        schema["x-kubernetes-group-version-kind"] =
            json!([{"group": k.info.group, "version": k.info.version, "kind": k.info.kind}]);
        schemas.insert(custom_schema_name(k.info), schema);
        infos.push(k.info);
    }
    Some(openapi_document_of(
        group,
        version,
        &infos,
        schemas,
        custom_schema_name,
    ))
}

/// Kubernetes' name of a custom kind's schema: the group reversed, the version, the kind.
fn custom_schema_name(info: &ResourceInfo) -> String {
    let reversed: Vec<&str> = info.group.split('.').rev().collect();
    format!("{}.{}.{}", reversed.join("."), info.version, info.kind)
}

/// A group-version's OpenAPI v3 document, built once.
struct OpenApiDocument {
    group: &'static str,
    version: &'static str,
    doc: Value,
    hash: u64,
}

fn openapi_documents() -> &'static [OpenApiDocument] {
    static DOCS: OnceLock<Vec<OpenApiDocument>> = OnceLock::new();
    DOCS.get_or_init(|| {
        group_versions(&[])
            .into_iter()
            .filter_map(|(group, version)| {
                let doc = openapi_document(group, version)?;
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&doc.to_string(), &mut hasher);
                let hash = std::hash::Hasher::finish(&hasher);
                Some(OpenApiDocument {
                    group,
                    version,
                    doc,
                    hash,
                })
            })
            .collect()
    })
}

/// A group-version's OpenAPI v3 document: each kind's paths, with the
/// PATCH operation declaring `fieldValidation` (so kubectl leaves field
/// validation to the server) and the group-version-kind extension (what
/// `kubectl explain` finds a resource's schema by), and the schemas
/// generated from proto/ ([`openapi`]), which `kubectl apply` builds its
/// strategic merge patches from.
pub fn openapi_group_version(group: &str, version: &str, custom: &Custom) -> Option<Value> {
    openapi_documents()
        .iter()
        .find(|d| d.group == group && d.version == version)
        .map(|d| d.doc.clone())
        .or_else(|| custom_openapi_document(group, version, custom))
}

fn openapi_document(group: &str, version: &str) -> Option<Value> {
    let schemas = openapi::schemas(group, version)?;
    let kinds: Vec<&ResourceInfo> = KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    Some(openapi_document_of(
        group,
        version,
        &kinds,
        schemas,
        openapi::kind_schema_name,
    ))
}

fn openapi_document_of(
    group: &str,
    version: &str,
    kinds: &[&ResourceInfo],
    schemas: serde_json::Map<String, Value>,
    schema_name: fn(&ResourceInfo) -> String,
) -> Value {
    let prefix = format!("/{}", openapi_path(group, version));
    let mut paths = serde_json::Map::new();
    for k in kinds {
        let gvk = json!({"group": k.group, "version": k.version, "kind": k.kind});
        let reference = json!({"$ref": format!("#/components/schemas/{}", schema_name(k))});
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
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "rkube", "version": version},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_carry_verbs_short_names_categories_and_subresources() {
        let core = resources("", "v1", &[]).unwrap();
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
        let apps = resources("apps", "v1", &[]).unwrap();
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
        assert!(resources("apps", "v2", &[]).is_none());
        assert!(groups(&[])["groups"]
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
        let apps = aggregated(false, &[]);
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
        let core = aggregated(true, &[]);
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        assert_eq!(core["items"][0]["versions"][0]["version"], "v1");
    }

    #[test]
    fn kubectl_top_finds_the_metrics_group() {
        // kubectl top asks the legacy group list whether metrics.k8s.io/v1beta1 is served
        let metrics = groups(&[])["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "metrics.k8s.io")
            .cloned()
            .unwrap();
        assert_eq!(
            metrics["preferredVersion"]["groupVersion"],
            "metrics.k8s.io/v1beta1"
        );
        let list = resources("metrics.k8s.io", "v1beta1", &[]).unwrap();
        let kinds: Vec<(&Value, &Value, &Value)> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (&r["name"], &r["kind"], &r["namespaced"]))
            .collect();
        assert_eq!(
            kinds,
            [
                (&json!("nodes"), &json!("NodeMetrics"), &json!(false)),
                (&json!("pods"), &json!("PodMetrics"), &json!(true)),
            ]
        );
        assert_eq!(list["resources"][1]["verbs"], json!(["get", "list"]));
        let aggregated = aggregated(false, &[]);
        let group = aggregated["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "metrics.k8s.io")
            .unwrap();
        assert_eq!(group["versions"][0]["version"], "v1beta1");
        assert_eq!(group["versions"][0]["resources"][0]["scope"], "Cluster");
        assert_eq!(
            group["versions"][0]["resources"][1]["responseKind"]["kind"],
            "PodMetrics"
        );
    }

    #[test]
    fn openapi_tells_kubectl_that_patch_takes_field_validation() {
        let root = openapi_root(&[]);
        let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
        let doc = openapi_group_version("apps", "v1", &[]).unwrap();
        let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
    }

    /// Follows `$ref`s (directly or under allOf) in a document's schemas.
    fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
        let reference = schema["$ref"]
            .as_str()
            .or_else(|| schema["allOf"][0]["$ref"].as_str());
        match reference {
            Some(r) => {
                let name = r.trim_start_matches("#/components/schemas/");
                let target = &doc["components"]["schemas"][name];
                assert!(target.is_object(), "{r} is not in the document");
                target
            }
            None => schema,
        }
    }

    fn kind_schema<'a>(doc: &'a Value, kind: &str) -> &'a Value {
        doc["components"]["schemas"]
            .as_object()
            .unwrap()
            .values()
            .find(|s| s["x-kubernetes-group-version-kind"][0]["kind"] == kind)
            .unwrap_or_else(|| panic!("no schema carries the {kind} group-version-kind"))
    }

    #[test]
    fn openapi_schemas_reach_container_fields_with_descriptions() {
        let doc = openapi_group_version("", "v1", &[]).unwrap();
        let pod = &doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["x-kubernetes-group-version-kind"],
            json!([{"group": "", "version": "v1", "kind": "Pod"}])
        );
        let spec = resolve(&doc, &pod["properties"]["spec"]);
        let containers = &spec["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        let container = resolve(&doc, &containers["items"]);
        let image = &container["properties"]["image"];
        assert_eq!(image["type"], "string");
        assert!(
            image["description"].as_str().is_some_and(|d| d.contains("image")),
            "{image}"
        );
        let ports = &container["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
        let port = resolve(&doc, &ports["items"]);
        let container_port = &port["properties"]["containerPort"];
        assert_eq!(
            (container_port["type"].as_str(), container_port["format"].as_str()),
            (Some("integer"), Some("int32"))
        );
        assert_eq!(
            container["properties"]["env"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        assert_eq!(
            container["properties"]["volumeMounts"]["x-kubernetes-patch-merge-key"],
            "mountPath"
        );
        assert_eq!(
            spec["properties"]["volumes"]["x-kubernetes-patch-strategy"],
            "merge,retainKeys"
        );
        // lists Kubernetes replaces carry no strategy
        let tolerations = &spec["properties"]["tolerations"];
        assert!(tolerations.get("x-kubernetes-patch-strategy").is_none());
        assert_eq!(tolerations["x-kubernetes-list-type"], "atomic");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        // maps, json_name overrides, unions and times as Kubernetes writes them
        assert_eq!(
            spec["properties"]["nodeSelector"]["additionalProperties"],
            json!({"type": "string"})
        );
        assert!(spec["properties"].get("hostPID").is_some());
        let resources = resolve(&doc, &container["properties"]["resources"]);
        let quantity = resolve(&doc, &resources["properties"]["limits"]["additionalProperties"]);
        assert_eq!(quantity["x-kubernetes-int-or-string"], true);
        let meta = resolve(&doc, &pod["properties"]["metadata"]);
        assert_eq!(meta["properties"]["creationTimestamp"]["format"], "date-time");
        assert_eq!(meta["properties"]["creationTimestamp"]["nullable"], true);
        assert_eq!(
            meta["properties"]["ownerReferences"]["x-kubernetes-patch-merge-key"],
            "uid"
        );
        assert_eq!(
            meta["properties"]["finalizers"]["x-kubernetes-patch-strategy"],
            "merge"
        );
        let service = kind_schema(&doc, "Service");
        let service_spec = resolve(&doc, &service["properties"]["spec"]);
        assert_eq!(
            service_spec["properties"]["ports"]["x-kubernetes-patch-merge-key"],
            "port"
        );
        let target = resolve(
            &doc,
            &resolve(&doc, &service_spec["properties"]["ports"]["items"])["properties"]["targetPort"],
        );
        assert_eq!(target["x-kubernetes-int-or-string"], true);
    }

    #[test]
    fn every_document_resolves_and_every_kind_has_its_schema() {
        for (g, v) in group_versions(&[]) {
            let Some(doc) = openapi_group_version(g, v, &[]) else {
                assert!(["authorization.k8s.io", "metrics.k8s.io"].contains(&g), "{g}");
                continue;
            };
            for k in KINDS.iter().filter(|k| k.group == g && k.version == v) {
                let schema = kind_schema(&doc, k.kind);
                assert_eq!(schema["x-kubernetes-group-version-kind"][0]["group"], g);
                assert!(schema["properties"]["metadata"].is_object(), "{}", k.kind);
            }
            // every $ref points into the same document
            fn refs(v: &Value, out: &mut Vec<String>) {
                match v {
                    Value::Object(m) => {
                        if let Some(Value::String(r)) = m.get("$ref") {
                            out.push(r.clone());
                        }
                        m.values().for_each(|v| refs(v, out));
                    }
                    Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                    _ => {}
                }
            }
            let mut all = Vec::new();
            refs(&doc["components"], &mut all);
            for r in all {
                let name = r.trim_start_matches("#/components/schemas/");
                assert!(doc["components"]["schemas"][name].is_object(), "{g}/{v}: {r}");
            }
        }
        let apps = openapi_group_version("apps", "v1", &[]).unwrap();
        let deployment = kind_schema(&apps, "Deployment");
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        let spec = resolve(&apps, &deployment["properties"]["spec"]);
        assert_eq!(
            spec["properties"]["strategy"]["x-kubernetes-patch-strategy"],
            "retainKeys"
        );
        let template = resolve(&apps, &spec["properties"]["template"]);
        let pod_spec = resolve(&apps, &template["properties"]["spec"]);
        assert_eq!(
            pod_spec["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
    }

    #[test]
    fn kinds_sharing_a_list_merge_it_alike() {
        assert_eq!(openapi::patch_conflicts(), Vec::<String>::new());
    }
}
