//! Which pod goes first when the node is short of a resource, and what it is told.
//!
//! Kubernetes' order (`rankMemoryPressure`, `rankDiskPressureFunc`): pods using more than
//! they requested first, then lower priority first, then the one furthest above its
//! request. QoS classes fall out of it: a BestEffort pod requests nothing, so any usage
//! exceeds its request; a Burstable pod comes before the others only while over its
//! requests; a Guaranteed pod (usage within its requests, which equal its limits) last.

use std::sync::Arc;

use rkube_api::core::v1::Pod;

use super::signals::Observation;
use super::thresholds::{format_bytes, Threshold};

/// A running pod with what it uses of the resource the node is short of.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub pod: Arc<Pod>,
    /// Bytes of the resource in use: the sum of `containers` for memory, the pod's
    /// directory (emptyDirs, logs) for disk.
    pub usage: u64,
    /// Per container, where the runtime measures it (memory working sets).
    pub containers: Vec<(String, u64)>,
}

impl Candidate {
    fn request(&self, resource: &str) -> u64 {
        pod_request(&self.pod, resource)
    }
    fn priority(&self) -> i32 {
        self.pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
    }
}

/// The pod's request of `resource` in bytes: the larger of its containers' sum and its
/// largest init container (init containers run one at a time, before the others), as
/// Kubernetes counts it.
pub fn pod_request(pod: &Pod, resource: &str) -> u64 {
    let Some(spec) = &pod.spec else { return 0 };
    let of = |c: &rkube_api::core::v1::Container| -> u64 {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.get(resource))
            .and_then(|q| q.value().ok())
            .map_or(0, |v| v.max(0) as u64)
    };
    let sum: u64 = spec.containers.iter().map(of).sum();
    let init = spec.init_containers.iter().map(of).max().unwrap_or(0);
    sum.max(init)
}

/// The candidates in eviction order for `resource` (`memory` or `ephemeral-storage`).
pub fn rank(mut candidates: Vec<Candidate>, resource: &str) -> Vec<Candidate> {
    candidates.sort_by_cached_key(|c| {
        let request = c.request(resource);
        let exceeds = c.usage > request;
        let above = i128::from(c.usage) - i128::from(request);
        (!exceeds, c.priority(), std::cmp::Reverse(above))
    });
    candidates
}

/// Kubernetes' eviction message: what the node was short of, the threshold, what was
/// left, and what the pod's containers used against their requests.
pub fn message(threshold: &Threshold, observed: Observation, candidate: &Candidate) -> String {
    let signal = threshold.signal;
    let resource = signal.resource();
    let show = |v: u64| {
        if signal.is_bytes() {
            format_bytes(v)
        } else {
            v.to_string()
        }
    };
    let mut out = format!(
        "The node was low on resource: {resource}. Threshold quantity: {}, available: {}.",
        show(threshold.limit(observed.capacity)),
        show(observed.available),
    );
    let request_of = |name: &str| -> u64 {
        let spec = candidate.pod.spec.as_ref();
        spec.and_then(|s| s.containers.iter().find(|c| c.name == name))
            .and_then(|c| c.resources.as_ref())
            .and_then(|r| r.requests.get(resource))
            .and_then(|q| q.value().ok())
            .map_or(0, |v| v.max(0) as u64)
    };
    if candidate.containers.is_empty() {
        // disk usage is measured per pod (its emptyDirs and logs), not per container
        let request = candidate.request(resource);
        if candidate.usage > request {
            out.push_str(&format!(
                " Pod was using {}, request is {}, has larger consumption of {resource}.",
                show(candidate.usage),
                show(request)
            ));
        }
    }
    for (name, used) in &candidate.containers {
        let request = request_of(name);
        if *used > request {
            out.push_str(&format!(
                " Container {name} was using {}, request is {}, has larger consumption of {resource}.",
                show(*used),
                show(request)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::thresholds::parse_thresholds;
    use super::*;

    fn pod(name: &str, requests_mi: Option<u64>, priority: i32) -> Arc<Pod> {
        let resources = match requests_mi {
            Some(mi) => serde_json::json!({
                "requests": {"memory": format!("{mi}Mi"), "cpu": "100m"},
                "limits": {"memory": format!("{mi}Mi"), "cpu": "100m"},
            }),
            None => serde_json::json!({}),
        };
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"priority": priority, "containers": [{"name": "app", "image": "i", "resources": resources}]},
            }))
            .unwrap(),
        )
    }

    fn candidate(pod: Arc<Pod>, used_mi: u64) -> Candidate {
        Candidate {
            pod,
            usage: used_mi << 20,
            containers: vec![("app".into(), used_mi << 20)],
        }
    }

    fn names(ranked: &[Candidate]) -> Vec<String> {
        ranked
            .iter()
            .map(|c| c.pod.metadata.as_ref().unwrap().name.clone())
            .collect()
    }

    #[test]
    fn pods_over_their_requests_go_first_then_low_priority_then_the_largest_excess() {
        let ranked = rank(
            vec![
                candidate(pod("guaranteed-within", Some(100), 0), 90),
                candidate(pod("burstable-over", Some(10), 0), 50),
                candidate(pod("besteffort-small", None, 0), 5),
                candidate(pod("besteffort-big", None, 0), 60),
                candidate(pod("besteffort-important", None, 1000), 500),
            ],
            "memory",
        );
        assert_eq!(
            names(&ranked),
            [
                "besteffort-big",
                "burstable-over",
                "besteffort-small",
                "besteffort-important",
                "guaranteed-within"
            ]
        );
    }

    #[test]
    fn the_message_is_kubernetes_own() {
        let memory = candidate(pod("p", None, 0), 200);
        let disk = Candidate {
            pod: pod("p", None, 0),
            usage: 40 << 20,
            containers: vec![],
        };
        for (threshold, available, capacity, c, want) in [
            (
                "memory.available<100Mi",
                80 << 20,
                1 << 30,
                &memory,
                "The node was low on resource: memory. Threshold quantity: 100Mi, available: 80Mi. Container app was using 200Mi, request is 0, has larger consumption of memory.",
            ),
            (
                "nodefs.available<10%",
                5 << 20,
                100 << 20,
                &disk,
                "The node was low on resource: ephemeral-storage. Threshold quantity: 10Mi, available: 5Mi. Pod was using 40Mi, request is 0, has larger consumption of ephemeral-storage.",
            ),
        ] {
            let t = &parse_thresholds("--eviction-hard", threshold).unwrap()[0];
            assert_eq!(message(t, Observation { available, capacity }, c), want);
        }
    }
}
