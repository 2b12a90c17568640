//! The resource metrics API, `metrics.k8s.io/v1beta1`, which `kubectl top`
//! reads and which metrics-server serves in Kubernetes. Here it is another
//! face of the apiserver's `Metrics` call (the one `rkubectl top` and the
//! HPA use): the kubelets' cgroup samples, gathered through the proxy, are
//! rewritten as NodeMetrics and PodMetrics. Authorization is Kubernetes':
//! `get`/`list` on `nodes` or `pods` in the `metrics.k8s.io` group.

use super::{json_response, status, Call};
use crate::attributes::Attributes;
use crate::error::ApiError;
use crate::handlers::{decode_stored, storage_prefix};
use crate::service::ApiService;
use rkube_api::core::v1::{Node, Pod};
use rkube_api::kubelet::v1::{ContainerUsage, NodeUsage, PodUsage};
use rkube_api::rpc;
use rkube_api::selector::Selector;
use rkube_api::Resource;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use tonic::body::Body;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";

/// What a `metrics.k8s.io/v1beta1` URL names: the node metrics (all, or
/// one node's), or the pod metrics (of every namespace when `namespace` is
/// empty, of one namespace, or of one pod).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum MetricsTarget {
    Nodes { name: String },
    Pods { namespace: String, name: String },
}

/// The target of the path segments after `/apis/metrics.k8s.io/v1beta1`.
pub(super) fn route(rest: &[&str]) -> Option<MetricsTarget> {
    let pods = |namespace: &str, name: &str| MetricsTarget::Pods {
        namespace: namespace.into(),
        name: name.into(),
    };
    match rest {
        ["nodes"] => Some(MetricsTarget::Nodes { name: String::new() }),
        ["nodes", name] => Some(MetricsTarget::Nodes {
            name: name.to_string(),
        }),
        ["pods"] => Some(pods("", "")),
        ["namespaces", ns, "pods"] => Some(pods(ns, "")),
        ["namespaces", ns, "pods", name] => Some(pods(ns, name)),
        _ => None,
    }
}

/// The entries of the group-version's APIResourceList.
pub fn discovery_resources() -> Vec<Value> {
    [
        ("nodes", "node", false, "NodeMetrics"),
        ("pods", "pod", true, "PodMetrics"),
    ]
    .into_iter()
    .map(|(name, singular, namespaced, kind)| {
        json!({
            "name": name, "singularName": singular,
            "namespaced": namespaced, "kind": kind, "verbs": ["get", "list"],
        })
    })
    .collect()
}

/// Answers a GET of node or pod metrics.
pub(super) async fn serve(api: &ApiService, call: &Call, target: MetricsTarget) -> http::Response<Body> {
    if call.parts.method != http::Method::GET {
        return super::method_not_allowed(&call.parts.method);
    }
    if call.query.flag("watch") {
        return status::error_response(
            ApiError::bad_request(
                "the metrics.k8s.io API cannot be watched (as in Kubernetes); list it again",
            ),
            None,
        );
    }
    let (resource, namespace, name) = match &target {
        MetricsTarget::Nodes { name } => ("nodes", "", name.as_str()),
        MetricsTarget::Pods { namespace, name } => ("pods", namespace.as_str(), name.as_str()),
    };
    let verb = if name.is_empty() { "list" } else { "get" };
    let attrs = Attributes::new(verb, GROUP, resource, namespace, name);
    if let Err(s) = api.admit(api.authenticate(&call.grpc(())), &attrs) {
        return status::response(&s, None);
    }
    let selector = call.query.get("labelSelector");
    let labels = match Selector::parse(selector) {
        Ok(l) => l,
        Err(e) => return status::error_response(ApiError::bad_request(e.to_string()), None),
    };
    let req = rpc::MetricsRequest {
        namespace: namespace.to_string(),
        // a node's labels are selected here; the kubelets select pods
        label_selector: if resource == "pods" {
            selector.into()
        } else {
            String::new()
        },
        nodes: resource == "nodes",
    };
    let usage = match crate::proxy::metrics(&api.state, req).await {
        Ok(u) => u,
        Err(e) => return status::error_response(e, None),
    };
    for e in &usage.errors {
        tracing::debug!("metrics.k8s.io: {e}");
    }
    let items: Vec<Value> = match &target {
        MetricsTarget::Nodes { .. } => {
            let node_labels = stored_labels::<Node>(api, "");
            usage
                .nodes
                .iter()
                .filter(|n| name.is_empty() || n.name == name)
                .filter_map(|n| {
                    let l = node_labels.get(&("".to_string(), n.name.clone()))?;
                    labels.matches(l).then(|| node_metrics(n, l))
                })
                .collect()
        }
        MetricsTarget::Pods { .. } => {
            let pod_labels = stored_labels::<Pod>(api, namespace);
            usage
                .pods
                .iter()
                .filter(|p| name.is_empty() || p.name == name)
                .map(|p| {
                    let key = (p.namespace.clone(), p.name.clone());
                    pod_metrics(p, pod_labels.get(&key).unwrap_or(&BTreeMap::new()))
                })
                .collect()
        }
    };
    let kind = if resource == "nodes" {
        "NodeMetrics"
    } else {
        "PodMetrics"
    };
    if name.is_empty() {
        return json_response(200, &list(kind, items));
    }
    match items.into_iter().next() {
        Some(item) => json_response(200, &item),
        None => status::response(
            &tonic::Status::not_found(format!(
                "{resource}.{GROUP} {name:?} not found (its node's kubelet has no sample of it yet, or it does not exist)"
            )),
            None,
        ),
    }
}

/// The labels of the stored objects of a kind, by (namespace, name).
fn stored_labels<K: Resource>(
    api: &ApiService,
    namespace: &str,
) -> HashMap<(String, String), BTreeMap<String, String>> {
    let Ok(list) = api
        .state
        .store
        .list(&storage_prefix(K::info(), namespace), None, 0, None)
    else {
        return HashMap::new();
    };
    list.items
        .iter()
        .filter_map(|kv| decode_stored::<K>(kv).ok())
        .map(|o| {
            let key = (o.namespace().to_string(), o.name().to_string());
            (key, o.metadata().labels.clone().into_iter().collect())
        })
        .collect()
}

/// CPU as Kubernetes' metrics-server writes it: nanocores.
pub fn cpu_quantity(millis: i64) -> String {
    format!("{}n", millis.max(0) * 1_000_000)
}

/// Memory in kibibytes when whole (as metrics-server writes it), else bytes.
pub fn memory_quantity(bytes: i64) -> String {
    let bytes = bytes.max(0);
    if bytes % 1024 == 0 {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

fn window(seconds: i32) -> String {
    format!("{}s", seconds.max(1))
}

fn timestamp(sampled: &str) -> String {
    if sampled.is_empty() {
        rkube_api::time::now()
    } else {
        sampled.to_string()
    }
}

fn usage(cpu_millis: i64, memory_bytes: i64) -> Value {
    json!({"cpu": cpu_quantity(cpu_millis), "memory": memory_quantity(memory_bytes)})
}

/// A NodeMetrics object.
pub fn node_metrics(n: &NodeUsage, labels: &BTreeMap<String, String>) -> Value {
    json!({
        "kind": "NodeMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {"name": n.name, "creationTimestamp": rkube_api::time::now(), "labels": labels},
        "timestamp": timestamp(&n.timestamp),
        "window": window(n.window_seconds),
        "usage": usage(n.cpu_millis, n.memory_bytes),
    })
}

/// A PodMetrics object.
pub fn pod_metrics(p: &PodUsage, labels: &BTreeMap<String, String>) -> Value {
    let containers: Vec<Value> = p
        .containers
        .iter()
        .map(|c: &ContainerUsage| json!({"name": c.name, "usage": usage(c.cpu_millis, c.memory_bytes)}))
        .collect();
    json!({
        "kind": "PodMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {
            "name": p.name,
            "namespace": p.namespace,
            "creationTimestamp": rkube_api::time::now(),
            "labels": labels,
        },
        "timestamp": timestamp(&p.timestamp),
        "window": window(p.window_seconds),
        "containers": containers,
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": format!("{kind}List"),
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_node_and_pod_metrics() {
        let pods = |ns: &str, name: &str| MetricsTarget::Pods {
            namespace: ns.into(),
            name: name.into(),
        };
        assert_eq!(
            route(&["nodes"]),
            Some(MetricsTarget::Nodes { name: String::new() })
        );
        assert_eq!(
            route(&["nodes", "a"]),
            Some(MetricsTarget::Nodes { name: "a".into() })
        );
        assert_eq!(route(&["pods"]), Some(pods("", "")));
        assert_eq!(route(&["namespaces", "ns", "pods"]), Some(pods("ns", "")));
        assert_eq!(
            route(&["namespaces", "ns", "pods", "web"]),
            Some(pods("ns", "web"))
        );
        assert_eq!(route(&["pods", "web"]), None);
        assert_eq!(route(&["namespaces", "ns", "nodes"]), None);
    }

    #[test]
    fn quantities_are_written_as_metrics_server_writes_them() {
        assert_eq!(cpu_quantity(250), "250000000n");
        assert_eq!(cpu_quantity(0), "0n");
        assert_eq!(memory_quantity(64 << 20), "65536Ki");
        assert_eq!(memory_quantity(1000), "1000");
    }

    #[test]
    fn node_and_pod_metrics_have_kubernetes_shapes() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let n = node_metrics(
            &NodeUsage {
                name: "node-a".into(),
                cpu_millis: 500,
                memory_bytes: 1 << 30,
                timestamp: "2026-01-02T03:04:05Z".into(),
                window_seconds: 10,
            },
            &labels,
        );
        assert_eq!(n["kind"], "NodeMetrics");
        assert_eq!(n["apiVersion"], "metrics.k8s.io/v1beta1");
        assert_eq!(n["metadata"]["name"], "node-a");
        assert_eq!(n["metadata"]["labels"]["app"], "web");
        assert!(n["metadata"]["creationTimestamp"].is_string());
        assert_eq!(n["timestamp"], "2026-01-02T03:04:05Z");
        assert_eq!(n["window"], "10s");
        assert_eq!(n["usage"], json!({"cpu": "500000000n", "memory": "1048576Ki"}));

        let p = pod_metrics(
            &PodUsage {
                namespace: "default".into(),
                name: "web-1".into(),
                containers: vec![ContainerUsage {
                    name: "httpd".into(),
                    cpu_millis: 3,
                    memory_bytes: 4096,
                }],
                timestamp: String::new(),
                window_seconds: 0,
            },
            &labels,
        );
        assert_eq!(p["kind"], "PodMetrics");
        assert_eq!(p["metadata"]["namespace"], "default");
        assert_eq!(p["metadata"]["name"], "web-1");
        assert!(p["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{p}");
        assert_eq!(p["window"], "1s");
        assert_eq!(
            p["containers"],
            json!([{"name": "httpd", "usage": {"cpu": "3000000n", "memory": "4Ki"}}])
        );
        let l = list("PodMetrics", vec![p]);
        assert_eq!(l["kind"], "PodMetricsList");
        assert_eq!(l["apiVersion"], "metrics.k8s.io/v1beta1");
        assert_eq!(l["items"].as_array().map(Vec::len), Some(1));
    }
}
