//! Fields Kubernetes writes even when zero (no `omitempty` in its Go
//! types), which proto3 JSON drops and clients validate as required (the
//! Python client's models refuse a ContainerStatus without `restartCount`).
//! Every JSON rkube emits, the REST API's and `rkubectl -o yaml|json`'s,
//! goes through [`fill`].

use serde_json::{json, Value};

/// (kind or `*`, path, value).
/// `[]` in a path means every element of that list; a value is added only
/// where its parent object exists.
pub const ZERO_VALUES: &[(&str, &str, ZeroValue)] = &[
    ("Pod", "status.containerStatuses[].restartCount", ZeroValue::Int),
    ("Pod", "status.containerStatuses[].ready", ZeroValue::False),
    ("Pod", "status.containerStatuses[].image", ZeroValue::Str),
    ("Pod", "status.containerStatuses[].imageID", ZeroValue::Str),
    (
        "Pod",
        "status.initContainerStatuses[].restartCount",
        ZeroValue::Int,
    ),
    ("Pod", "status.initContainerStatuses[].ready", ZeroValue::False),
    ("Pod", "status.initContainerStatuses[].image", ZeroValue::Str),
    ("Pod", "status.initContainerStatuses[].imageID", ZeroValue::Str),
    (
        "Pod",
        "status.containerStatuses[].state.terminated.exitCode",
        ZeroValue::Int,
    ),
    (
        "Pod",
        "status.containerStatuses[].lastState.terminated.exitCode",
        ZeroValue::Int,
    ),
    (
        "Pod",
        "status.initContainerStatuses[].state.terminated.exitCode",
        ZeroValue::Int,
    ),
    (
        "Pod",
        "status.initContainerStatuses[].lastState.terminated.exitCode",
        ZeroValue::Int,
    ),
    ("Node", "status.nodeInfo.machineID", ZeroValue::Str),
    ("Node", "status.nodeInfo.systemUUID", ZeroValue::Str),
    ("Node", "status.nodeInfo.bootID", ZeroValue::Str),
    ("Node", "status.nodeInfo.kernelVersion", ZeroValue::Str),
    ("Node", "status.nodeInfo.osImage", ZeroValue::Str),
    ("Node", "status.nodeInfo.containerRuntimeVersion", ZeroValue::Str),
    ("Node", "status.nodeInfo.kubeletVersion", ZeroValue::Str),
    ("Node", "status.nodeInfo.kubeProxyVersion", ZeroValue::Str),
    ("Node", "status.nodeInfo.operatingSystem", ZeroValue::Str),
    ("Node", "status.nodeInfo.architecture", ZeroValue::Str),
    ("ReplicaSet", "status.replicas", ZeroValue::Int),
    ("StatefulSet", "status.replicas", ZeroValue::Int),
    ("DaemonSet", "status.currentNumberScheduled", ZeroValue::Int),
    ("DaemonSet", "status.numberMisscheduled", ZeroValue::Int),
    ("DaemonSet", "status.desiredNumberScheduled", ZeroValue::Int),
    ("DaemonSet", "status.numberReady", ZeroValue::Int),
    (
        "HorizontalPodAutoscaler",
        "status.desiredReplicas",
        ZeroValue::Int,
    ),
    (
        "*",
        "spec.template.spec.containers[].ports[].containerPort",
        ZeroValue::Int,
    ),
    ("Pod", "spec.containers[].ports[].containerPort", ZeroValue::Int),
    ("Service", "spec.ports[].port", ZeroValue::Int),
    ("Endpoints", "subsets[].ports[].port", ZeroValue::Int),
];

#[derive(Debug, Clone, Copy)]
pub enum ZeroValue {
    Int,
    False,
    Str,
}

impl ZeroValue {
    fn value(self) -> Value {
        match self {
            ZeroValue::Int => json!(0),
            ZeroValue::False => json!(false),
            ZeroValue::Str => json!(""),
        }
    }
}

/// Adds the zero values of [`ZERO_VALUES`] that `obj` (of `kind`) lacks.
///
/// Walks each path without splitting it into a vector and allocates only for a field it
/// adds: this runs for every object of every JSON list and watch, so a 10,000-pod list
/// spent more time here than in serializing before.
pub fn fill(kind: &str, obj: &mut Value) {
    for (k, path, zero) in ZERO_VALUES {
        if *k == "*" || *k == kind {
            fill_path(obj, path, *zero);
        }
    }
}

fn fill_path(v: &mut Value, path: &str, zero: ZeroValue) {
    let Some(map) = v.as_object_mut() else {
        return;
    };
    let (first, rest) = match path.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (path, None),
    };
    if let Some(list) = first.strip_suffix("[]") {
        if let (Some(Value::Array(items)), Some(rest)) = (map.get_mut(list), rest) {
            for item in items {
                fill_path(item, rest, zero);
            }
        }
    } else if let Some(rest) = rest {
        if let Some(child) = map.get_mut(first) {
            fill_path(child, rest, zero);
        }
    } else if !map.contains_key(first) {
        map.insert(first.to_string(), zero.value());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_values_are_filled_where_the_parent_exists() {
        let mut pod =
            json!({"status": {"containerStatuses": [{"name": "a"}, {"name": "b", "restartCount": 3}]}});
        fill("Pod", &mut pod);
        assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
        assert_eq!(pod["status"]["containerStatuses"][0]["ready"], false);
        assert_eq!(pod["status"]["containerStatuses"][1]["restartCount"], 3);
        let mut bare = json!({"metadata": {"name": "x"}});
        fill("Pod", &mut bare);
        assert_eq!(bare, json!({"metadata": {"name": "x"}}));
        let mut pod = json!({"status": {"containerStatuses": [{"name": "a", "state": {"terminated": {"reason": "Completed"}}}]}});
        fill("Pod", &mut pod);
        assert_eq!(
            pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            0
        );
        let mut node = json!({"status": {"nodeInfo": {"kubeletVersion": "v1"}}});
        fill("Node", &mut node);
        assert_eq!(node["status"]["nodeInfo"]["bootID"], "");
        assert_eq!(node["status"]["nodeInfo"]["kubeletVersion"], "v1");
        let mut rs = json!({"status": {}});
        fill("ReplicaSet", &mut rs);
        assert_eq!(rs["status"]["replicas"], 0);
    }
}
