//! The patch formats, applied to an object's Kubernetes JSON by the Patch
//! handler (one place for gRPC and REST): JSON merge patch (RFC 7386),
//! JSON patch (RFC 6902, the json-patch crate) and strategic merge patch.
//! No maintained crate implements strategic merge, so it is written here,
//! driven by a per-kind table of list merge keys ([`merge_key`]) that
//! mirrors the `patchMergeKey` tags of the Kubernetes types rkube serves
//! (the OpenAPI schemas take their `x-kubernetes-patch-merge-key` from it
//! too, so what `kubectl apply` computes is what is merged here),
//! with the directives `kubectl apply`, `label`, `annotate`, `scale` and
//! `set image` send: `$patch: replace|delete|merge`, `$setElementOrder/`,
//! `$deleteFromPrimitiveList/` and `$retainKeys`. Lists without a merge key
//! are replaced, as in Kubernetes.
//!
//! Server-side apply (`apply`) merges the applied configuration like a
//! strategic merge patch; the field managers around it (conflicts, force,
//! removal of fields a manager stops applying) are `crate::managed_fields`,
//! which computes its field sets from the same merge-key table.

use crate::error::{ApiError, ApiResult};
use serde_json::{Map, Value};

/// The patch type named by a request's content type, as the gRPC
/// PatchRequest spells it.
pub fn type_of_content(content_type: &str) -> Option<&'static str> {
    match content_type.split(';').next().unwrap_or("").trim() {
        "application/merge-patch+json" => Some("merge"),
        "application/json-patch+json" => Some("json"),
        "application/strategic-merge-patch+json" => Some("strategic"),
        "application/apply-patch+yaml" => Some("apply"),
        _ => None,
    }
}

/// Applies `patch` of `patch_type` ("" is merge) to `doc`, an object of `kind`.
pub fn apply(patch_type: &str, kind: &str, doc: &mut Value, patch: &Value) -> ApiResult<()> {
    match patch_type {
        "" | "merge" => {
            crate::handlers::merge_patch(doc, patch);
            Ok(())
        }
        "json" => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is not a list of RFC 6902 operations: {e}")))?;
            // On a copy, which replaces the object only when every operation applied:
            // json_patch::patch undoes a failed patch in place, and its undo panics on
            // some inputs (a `move` of a path into itself after an earlier operation).
            let mut patched = doc.clone();
            json_patch::patch_unsafe(&mut patched, &ops)
                .map_err(|e| unprocessable(format!("the JSON patch cannot be applied: {e}")))?;
            *doc = patched;
            Ok(())
        }
        "strategic" | "apply" => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch or applied configuration must be an object",
                ));
            }
            strategic_merge(kind, "", doc, patch);
            Ok(())
        }
        other => Err(ApiError::bad_request(format!(
            "patch type {other:?} is not supported; use \"merge\" (RFC 7386), \"json\" (RFC 6902), \"strategic\" or \"apply\""
        ))),
    }
}

/// Where each kind holds a PodSpec, for the PodSpec merge keys.
const POD_SPEC_AT: &[(&str, &str)] = &[
    ("Pod", "spec"),
    ("Deployment", "spec.template.spec"),
    ("ReplicaSet", "spec.template.spec"),
    ("DaemonSet", "spec.template.spec"),
    ("StatefulSet", "spec.template.spec"),
    ("Job", "spec.template.spec"),
    ("CronJob", "spec.jobTemplate.spec.template.spec"),
];

/// Merge keys inside a PodSpec (path relative to it; `[]` marks list items).
const POD_SPEC_KEYS: &[(&str, &str)] = &[
    ("containers", "name"),
    ("initContainers", "name"),
    ("ephemeralContainers", "name"),
    ("containers[].ports", "containerPort"),
    ("initContainers[].ports", "containerPort"),
    ("containers[].env", "name"),
    ("initContainers[].env", "name"),
    ("containers[].volumeMounts", "mountPath"),
    ("initContainers[].volumeMounts", "mountPath"),
    ("containers[].volumeDevices", "devicePath"),
    ("volumes", "name"),
    ("imagePullSecrets", "name"),
    ("schedulingGates", "name"),
    ("hostAliases", "ip"),
    ("topologySpreadConstraints", "topologyKey"),
];

/// Merge keys elsewhere: (kind or `*`, path). A `*` entry holds wherever
/// its path ends (object metadata in pod templates too).
const KIND_KEYS: &[(&str, &str, &str)] = &[
    ("*", "metadata.ownerReferences", "uid"),
    ("Service", "spec.ports", "port"),
    ("Pod", "status.conditions", "type"),
    ("Pod", "status.podIPs", "ip"),
    ("Pod", "status.hostIPs", "ip"),
    ("Node", "status.conditions", "type"),
    ("Node", "status.addresses", "type"),
    ("Deployment", "status.conditions", "type"),
    ("ReplicaSet", "status.conditions", "type"),
    ("DaemonSet", "status.conditions", "type"),
    ("StatefulSet", "status.conditions", "type"),
    ("Job", "status.conditions", "type"),
    ("HorizontalPodAutoscaler", "status.conditions", "type"),
    ("Namespace", "status.conditions", "type"),
];

/// Lists of scalars merged as sets rather than replaced (wherever the
/// path ends, as `*` merge keys).
const PRIMITIVE_MERGE: &[&str] = &["metadata.finalizers"];

/// Whether `path` is `at` or ends with `.at`.
fn ends_with_field_path(path: &str, at: &str) -> bool {
    path.strip_suffix(at)
        .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
}

/// Whether the list of scalars at `path` is merged as a set
/// (`$deleteFromPrimitiveList`) rather than replaced.
pub fn merges_primitives(path: &str) -> bool {
    PRIMITIVE_MERGE.iter().any(|at| ends_with_field_path(path, at))
}

/// The merge key of the list at `path` (fields joined by `.`, list items
/// as `[]`) in an object of `kind`; None: the list is replaced.
pub fn merge_key(kind: &str, path: &str) -> Option<&'static str> {
    if let Some((_, _, key)) = KIND_KEYS
        .iter()
        .find(|(k, p, _)| (*k == kind && *p == path) || (*k == "*" && ends_with_field_path(path, p)))
    {
        return Some(key);
    }
    POD_SPEC_AT
        .iter()
        .filter(|(k, _)| *k == kind)
        .filter_map(|(_, at)| path.strip_prefix(at).and_then(|r| r.strip_prefix('.')))
        .find_map(|rel| POD_SPEC_KEYS.iter().find(|(p, _)| *p == rel).map(|(_, key)| *key))
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn is_directive(key: &str) -> bool {
    key == "$patch"
        || key == "$retainKeys"
        || key.starts_with("$setElementOrder/")
        || key.starts_with("$deleteFromPrimitiveList/")
}

/// A patch value as data: directives removed, nulls dropped.
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !is_directive(k) && !v.is_null())
                .map(|(k, v)| (k.clone(), clean(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(clean).collect()),
        other => other.clone(),
    }
}

/// Strategic merge of `patch` into the map `target` at `path`.
fn strategic_merge(kind: &str, path: &str, target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = clean(patch);
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = clean(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let mut orders = Vec::new();
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            orders.push((field.to_string(), v.clone()));
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(gone)) = (target.get_mut(field), v.as_array()) {
                items.retain(|i| !gone.contains(i));
            }
            continue;
        }
        if is_directive(k) {
            continue;
        }
        let Some(t) = target.as_object_mut() else {
            return;
        };
        let child_path = join(path, k);
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(child) => {
                if child.get("$patch").and_then(Value::as_str) == Some("delete") {
                    t.remove(k);
                } else {
                    let entry = t.entry(k.clone()).or_insert(Value::Null);
                    strategic_merge(kind, &child_path, entry, v);
                }
            }
            Value::Array(items) => {
                let current = t.remove(k);
                let merged = merge_list(kind, &child_path, current, items);
                t.insert(k.clone(), merged);
            }
            scalar => {
                t.insert(k.clone(), scalar.clone());
            }
        }
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (field, order) in orders {
        if let (Some(Value::Array(items)), Some(order)) = (t.get_mut(&field), order.as_array()) {
            let key = merge_key(kind, &join(path, &field));
            reorder(items, order, key);
        }
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        t.retain(|k, _| keep.iter().any(|r| r.as_str() == Some(k)));
    }
}

fn merge_list(kind: &str, path: &str, current: Option<Value>, items: &[Value]) -> Value {
    let mut current = match current {
        Some(Value::Array(c)) => c,
        _ => Vec::new(),
    };
    if merges_primitives(path) {
        for i in items {
            if !current.contains(i) {
                current.push(i.clone());
            }
        }
        return Value::Array(current);
    }
    // the patch's items as data (a `{$patch: replace}` item only says
    // "replace the list")
    let replacement = || {
        Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .map(clean)
                .collect(),
        )
    };
    let Some(key) = merge_key(kind, path) else {
        // no merge key: the patch's list replaces the object's
        return replacement();
    };
    let item_path = format!("{path}[]");
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return replacement();
    }
    for item in items {
        let Some(id) = item.get(key) else {
            current.push(clean(item));
            continue;
        };
        let at = current.iter().position(|c| c.get(key) == Some(id));
        match (item.get("$patch").and_then(Value::as_str), at) {
            (Some("delete"), Some(i)) => {
                current.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => strategic_merge(kind, &item_path, &mut current[i], item),
            (_, None) => current.push(clean(item)),
        }
    }
    Value::Array(current)
}

/// Orders `items` as `order` lists them (by merge key for maps, by value
/// for scalars); items the order does not name keep their relative order
/// after the named ones.
fn reorder(items: &mut [Value], order: &[Value], key: Option<&str>) {
    let rank = |v: &Value| -> usize {
        order
            .iter()
            .position(|o| match key {
                Some(k) => o.get(k).is_some() && o.get(k) == v.get(k),
                None => o == v,
            })
            .unwrap_or(usize::MAX)
    };
    // a stable sort keeps unnamed items in their order
    items.sort_by_key(|v| rank(v));
}

/// A patch that is well formed but cannot apply (a JSON patch `test`
/// that fails, a path that does not exist): Kubernetes' 422.
fn unprocessable(message: String) -> ApiError {
    let mut e = ApiError::bad_request(message);
    e.reason = "Invalid";
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(kind: &str, doc: Value, patch: Value) -> Value {
        let mut doc = doc;
        apply("strategic", kind, &mut doc, &patch).unwrap();
        doc
    }

    #[test]
    fn merge_keys_come_from_the_per_kind_table() {
        assert_eq!(
            merge_key("Deployment", "spec.template.spec.containers"),
            Some("name")
        );
        assert_eq!(merge_key("Pod", "spec.containers[].ports"), Some("containerPort"));
        assert_eq!(merge_key("Service", "spec.ports"), Some("port"));
        assert_eq!(merge_key("Pod", "spec.tolerations"), None);
        assert_eq!(
            merge_key("CronJob", "spec.jobTemplate.spec.template.spec.containers"),
            Some("name")
        );
        assert_eq!(merge_key("ConfigMap", "metadata.ownerReferences"), Some("uid"));
        assert_eq!(
            merge_key("Deployment", "spec.template.metadata.ownerReferences"),
            Some("uid")
        );
        assert_eq!(merge_key("Pod", "spec.xmetadata.ownerReferences"), None);
        assert!(merges_primitives("spec.template.metadata.finalizers"));
        assert!(!merges_primitives("spec.finalizers"));
    }

    #[test]
    fn set_image_merges_the_container_by_name() {
        let doc = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox"}]}}}});
        let out = smp(
            "Deployment",
            doc,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}}),
        );
        let c = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(c[0]["image"], "nginx:2");
        assert_eq!(
            c[0]["ports"][0]["containerPort"], 80,
            "fields the patch does not name stay"
        );
        assert_eq!(c[1]["name"], "side", "containers the patch does not name stay");
    }

    #[test]
    fn apply_directives_delete_order_and_null() {
        let doc = json!({
            "metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "spec": {"containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "j"}],
                     "tolerations": [{"key": "k"}]}
        });
        let out = smp(
            "Pod",
            doc,
            json!({
                "metadata": {"labels": {"b": null, "c": "3"}, "finalizers": ["y"]},
                "spec": {
                    "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
                    "containers": [{"name": "b", "$patch": "delete"}, {"name": "c", "image": "k"}],
                    "tolerations": [{"key": "z"}]
                }
            }),
        );
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "c": "3"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["c", "a"]);
        assert_eq!(
            out["spec"]["tolerations"],
            json!([{"key": "z"}]),
            "no merge key: replaced"
        );
        assert!(out["spec"]["containers"][0].get("$patch").is_none());
    }

    #[test]
    fn replace_retain_keys_and_primitive_deletes() {
        let doc = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}},
                         "metadata": {"finalizers": ["a", "b"]}});
        let out = smp(
            "Deployment",
            doc,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}},
                   "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        let out = smp(
            "ConfigMap",
            json!({"data": {"a": "1", "b": "2"}}),
            json!({"data": {"$patch": "replace", "c": "3"}}),
        );
        assert_eq!(out["data"], json!({"c": "3"}));
    }

    #[test]
    fn a_failed_json_patch_leaves_the_object_alone() {
        // the undo of this move would be a move into itself: json_patch::patch panicked
        let mut doc = json!({"spec": {"replicas": 2}});
        let ops = json!([
            {"op": "move", "from": "/spec/replicas", "path": "/spec"},
            {"op": "test", "path": "/spec", "value": 3}
        ]);
        let err = apply("json", "Deployment", &mut doc, &ops).unwrap_err();
        assert!(err.to_string().contains("cannot be applied"), "{err}");
        assert_eq!(doc, json!({"spec": {"replicas": 2}}));
        let ops = json!([{"op": "move", "from": "/spec/replicas", "path": "/spec"}]);
        apply("json", "Deployment", &mut doc, &ops).unwrap();
        assert_eq!(doc, json!({"spec": 2}));
    }

    #[test]
    fn json_patch_and_merge_patch() {
        let mut doc = json!({"spec": {"replicas": 1}, "metadata": {"labels": {"a": "b"}}});
        apply(
            "json",
            "Deployment",
            &mut doc,
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 3},
                    {"op": "add", "path": "/metadata/labels/c", "value": "d"}]),
        )
        .unwrap();
        assert_eq!(doc["spec"]["replicas"], 3);
        assert_eq!(doc["metadata"]["labels"]["c"], "d");
        let err = apply(
            "json",
            "Deployment",
            &mut doc,
            &json!([{"op": "test", "path": "/spec/replicas", "value": 9}]),
        )
        .unwrap_err();
        assert_eq!(err.reason, "Invalid");
        apply(
            "merge",
            "Deployment",
            &mut doc,
            &json!({"metadata": {"labels": {"a": null}}}),
        )
        .unwrap();
        assert_eq!(doc["metadata"]["labels"], json!({"c": "d"}));
        assert!(apply("server-side", "Deployment", &mut doc, &json!({})).is_err());
        assert_eq!(
            type_of_content("application/strategic-merge-patch+json"),
            Some("strategic")
        );
        assert_eq!(
            type_of_content("application/json-patch+json; charset=utf-8"),
            Some("json")
        );
        assert_eq!(type_of_content("application/apply-patch+yaml"), Some("apply"));
        assert_eq!(type_of_content("application/vnd.kubernetes.protobuf"), None);
    }
}
