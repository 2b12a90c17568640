//! Resource arithmetic the way the Kubernetes scheduler does it: a pod asks
//! for the sum of its containers' requests, or the largest init
//! container's if that is more (init containers run one at a time, before
//! the others).

use rkube_api::core::v1::{Container, Node, Pod};
use rkube_api::quantity::Quantity;
use std::collections::BTreeMap;

/// CPU a container without a cpu request counts as when spreading load
/// (Kubernetes' `DefaultMilliCPURequest`); never used for fitting.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory likewise (`DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// The resources the scheduler accounts for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// How many pods (for a node's allocatable; a pod counts as one).
    pub pods: i64,
}

impl Resources {
    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods -= o.pods;
    }

    fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
    }

    /// Reads `cpu`, `memory`, `ephemeral-storage` and `pods` from a
    /// resource map. An unparsable quantity counts as zero here: the
    /// apiserver validates quantities, so this only guards against a
    /// corrupt object taking the scheduler down.
    pub fn from_map(map: &BTreeMap<String, Quantity>) -> Resources {
        let get = |k: &str, milli: bool| {
            map.get(k)
                .and_then(|q| if milli { q.millis().ok() } else { q.value().ok() })
                .unwrap_or(0)
        };
        Resources {
            milli_cpu: get("cpu", true),
            memory: get("memory", false),
            ephemeral_storage: get("ephemeral-storage", false),
            pods: get("pods", false),
        }
    }
}

fn container_requests(c: &Container, non_zero: bool) -> Resources {
    let mut r = c
        .resources
        .as_ref()
        .map(|r| Resources::from_map(&r.requests))
        .unwrap_or_default();
    r.pods = 0;
    if non_zero {
        let has = |k: &str| c.resources.as_ref().is_some_and(|r| r.requests.contains_key(k));
        if !has("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !has("memory") {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

fn requests(pod: &Pod, non_zero: bool) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources {
            pods: 1,
            ..Default::default()
        };
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&container_requests(c, non_zero));
    }
    for c in &spec.init_containers {
        sum.max(&container_requests(c, non_zero));
    }
    sum.pods = 1;
    sum
}

/// What the pod requests; `pods` is 1.
pub fn pod_requests(pod: &Pod) -> Resources {
    requests(pod, false)
}

/// What the pod requests, with Kubernetes' defaults for containers that
/// request no cpu or memory: used only to score, so that best-effort pods
/// still spread instead of piling onto the node that looks emptiest.
pub fn pod_non_zero_requests(pod: &Pod) -> Resources {
    requests(pod, true)
}

/// The node's allocatable resources (capacity when allocatable is absent,
/// as the kubelet reports capacity first on older versions).
pub fn node_allocatable(node: &Node) -> Resources {
    let Some(status) = node.status.as_ref() else {
        return Resources::default();
    };
    if status.allocatable.is_empty() {
        Resources::from_map(&status.capacity)
    } else {
        Resources::from_map(&status.allocatable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::core::v1::{PodSpec, ResourceRequirements};

    fn container(cpu: Option<&str>, mem: Option<&str>) -> Container {
        let mut requests = BTreeMap::new();
        if let Some(c) = cpu {
            requests.insert("cpu".to_string(), Quantity::new(c));
        }
        if let Some(m) = mem {
            requests.insert("memory".to_string(), Quantity::new(m));
        }
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn sums_containers_and_takes_the_larger_init_container() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![
                    container(Some("250m"), Some("64Mi")),
                    container(Some("250m"), None),
                ],
                init_containers: vec![container(Some("2"), Some("1Mi"))],
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = pod_requests(&pod);
        assert_eq!(r.milli_cpu, 2000);
        assert_eq!(r.memory, 64 << 20);
        assert_eq!(r.pods, 1);
        let nz = pod_non_zero_requests(&pod);
        assert_eq!(nz.memory, (64 << 20) + DEFAULT_MEMORY_REQUEST);
    }
}
