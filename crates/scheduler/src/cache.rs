//! The scheduler's picture of the cluster: every node with what the pods
//! bound (or assumed) to it request, the host ports they hold and how many
//! pods of each owner run where.
//!
//! The informers report what the apiserver has; the scheduling loop adds
//! *assumed* pods the moment it picks a node, before the Bind call
//! returns, so the next pod in a burst already sees the node's capacity
//! taken. A failed bind forgets the assumption; the informer confirming
//! the binding turns it into a bound pod.

use crate::pod_info::{HostPort, PodAffinityInfo, PodInfo};
use crate::resources::{node_allocatable, Resources};
use rkube_api::core::v1::{Node, Pod, Taint};
use rkube_api::Resource;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// The label Kubernetes puts on every node with its name.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// The zone label (and its deprecated beta form, still common).
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
pub const LABEL_ZONE_BETA: &str = "failure-domain.beta.kubernetes.io/zone";

/// What the node's Ready condition says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Ready=False, or no Ready condition yet (a node that just
    /// registered): Kubernetes taints both `node.kubernetes.io/not-ready`.
    NotReady,
    /// Ready=Unknown: the node stopped reporting
    /// (`node.kubernetes.io/unreachable`).
    Unreachable,
}

/// One node as the plugins see it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub node: Arc<Node>,
    pub zone: Option<String>,
    pub readiness: Readiness,
    pub allocatable: Resources,
    /// What bound and assumed pods request (`pods` is their number).
    pub requested: Resources,
    /// The same with Kubernetes' defaults for pods that request nothing,
    /// for scoring.
    pub non_zero_requested: Resources,
    /// (protocol, port) → host IPs in use ("" or 0.0.0.0 for all).
    pub used_ports: HashMap<(String, i32), Vec<String>>,
}

impl NodeInfo {
    fn new(node: Arc<Node>) -> NodeInfo {
        let labels = &node.metadata().labels;
        let zone = labels
            .get(LABEL_ZONE)
            .or_else(|| labels.get(LABEL_ZONE_BETA))
            .cloned();
        NodeInfo {
            name: node.name().to_string(),
            zone,
            readiness: readiness(&node),
            allocatable: node_allocatable(&node),
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            used_ports: HashMap::new(),
            node,
        }
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.node.metadata().labels
    }

    pub fn taints(&self) -> &[Taint] {
        self.node
            .spec
            .as_ref()
            .map(|s| s.taints.as_slice())
            .unwrap_or(&[])
    }

    pub fn unschedulable(&self) -> bool {
        self.node.spec.as_ref().is_some_and(|s| s.unschedulable)
    }

    /// The value of a topology label; the hostname falls back to the node's
    /// name, which is what the kubelet sets it to.
    pub fn topology_value(&self, key: &str) -> Option<&str> {
        match self.labels().get(key) {
            Some(v) => Some(v.as_str()),
            None if key == LABEL_HOSTNAME => Some(self.name.as_str()),
            None => None,
        }
    }

    fn account(&mut self, pod: &CachedPod, add: bool) {
        if add {
            self.requested.add(&pod.requests);
            self.non_zero_requested.add(&pod.non_zero);
            for p in &pod.ports {
                self.used_ports
                    .entry((p.protocol.clone(), p.port))
                    .or_default()
                    .push(p.ip.clone());
            }
        } else {
            self.requested.sub(&pod.requests);
            self.non_zero_requested.sub(&pod.non_zero);
            for p in &pod.ports {
                let k = (p.protocol.clone(), p.port);
                if let Some(ips) = self.used_ports.get_mut(&k) {
                    if let Some(i) = ips.iter().position(|ip| *ip == p.ip) {
                        ips.swap_remove(i);
                    }
                    if ips.is_empty() {
                        self.used_ports.remove(&k);
                    }
                }
            }
        }
    }

    /// Whether `port` collides with a port already held on this node.
    pub fn port_in_use(&self, port: &HostPort) -> bool {
        let Some(ips) = self.used_ports.get(&(port.protocol.clone(), port.port)) else {
            return false;
        };
        let wildcard = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
        ips.iter()
            .any(|ip| wildcard(ip) || wildcard(&port.ip) || *ip == port.ip)
    }
}

pub fn readiness(node: &Node) -> Readiness {
    let cond = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == "Ready"));
    match cond.map(|c| c.status.as_str()) {
        Some("True") => Readiness::Ready,
        Some("Unknown") => Readiness::Unreachable,
        _ => Readiness::NotReady,
    }
}

/// A pod the cache accounts for.
#[derive(Debug, Clone)]
pub struct CachedPod {
    pub uid: String,
    pub namespace: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub owner: Option<String>,
    pub requests: Resources,
    pub non_zero: Resources,
    pub ports: Vec<HostPort>,
    /// Placed by this scheduler, Bind not yet confirmed by the informer.
    pub assumed: bool,
    pub affinity: Option<Arc<PodAffinityInfo>>,
    pub priority: i32,
    /// Being deleted: still on its node until the kubelet lets go.
    pub terminating: bool,
}

impl CachedPod {
    fn from_info(info: &PodInfo, node: &str, assumed: bool) -> CachedPod {
        CachedPod {
            uid: info.uid.clone(),
            namespace: info.namespace.clone(),
            node: node.to_string(),
            labels: info.labels.clone(),
            owner: info.owner.clone(),
            requests: info.requests,
            non_zero: info.non_zero,
            ports: info.host_ports.clone(),
            assumed,
            affinity: info.affinity.clone(),
            priority: info.priority,
            terminating: info.terminating,
        }
    }
}

/// Whether a pod still holds its node's resources: bound, not finished.
pub fn holds_node(pod: &Pod) -> bool {
    let bound = pod.spec.as_ref().is_some_and(|s| !s.node_name.is_empty());
    let phase = pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    bound && phase != "Succeeded" && phase != "Failed"
}

#[derive(Debug, Default)]
pub struct Cache {
    /// Nodes in a stable order, so the search can resume where the last
    /// one stopped (see `next_start`).
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    pods: HashMap<String, CachedPod>,
    /// node name → keys of its pods, also for nodes the cache does not
    /// know (yet), so a node that appears after its pods is accounted.
    pods_by_node: HashMap<String, HashSet<String>>,
    /// owner uid → node name → pods of that owner there (default spreading).
    owner_nodes: HashMap<String, HashMap<String, u32>>,
    /// Keys of pods with inter-pod affinity terms: every attempt reads
    /// them, so they are not looked for among all pods.
    with_affinity: HashSet<String>,
    /// Namespace name → its labels (podAffinity namespaceSelector).
    namespaces: HashMap<String, BTreeMap<String, String>>,
    /// Where the next search over nodes starts.
    pub next_start: usize,
}

impl Cache {
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    pub fn pods(&self) -> impl Iterator<Item = (&String, &CachedPod)> {
        self.pods.iter()
    }

    pub fn pod(&self, key: &str) -> Option<&CachedPod> {
        self.pods.get(key)
    }

    /// Pods with inter-pod affinity or anti-affinity terms.
    pub fn pods_with_affinity(&self) -> impl Iterator<Item = (&String, &CachedPod)> {
        self.with_affinity
            .iter()
            .filter_map(|k| self.pods.get_key_value(k))
    }

    /// Keys of the pods on `node`.
    pub fn pods_on(&self, node: &str) -> impl Iterator<Item = (&String, &CachedPod)> {
        self.pods_by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get_key_value(k))
    }

    pub fn namespace_labels(&self, namespace: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces.get(namespace)
    }

    pub fn set_namespace(&mut self, name: &str, labels: Option<BTreeMap<String, String>>) {
        match labels {
            Some(l) => {
                self.namespaces.insert(name.to_string(), l);
            }
            None => {
                self.namespaces.remove(name);
            }
        }
    }

    /// Takes a pod out of the picture, as if deleted (preemption's
    /// what-if); `restore` puts it back.
    pub fn take_pod(&mut self, key: &str) -> Option<CachedPod> {
        self.remove(key)
    }

    pub fn restore_pod(&mut self, key: &str, pod: CachedPod) {
        self.insert(key, pod);
    }

    /// Pods of `owner` per node.
    pub fn owner_nodes(&self, owner: &str) -> Option<&HashMap<String, u32>> {
        self.owner_nodes.get(owner)
    }

    /// Adds or replaces a node. Returns whether anything the filters or
    /// scores read changed (labels, taints, unschedulable, allocatable,
    /// readiness): a heartbeat alone should not wake every waiting pod.
    pub fn set_node(&mut self, node: Arc<Node>) -> bool {
        let name = node.name().to_string();
        let mut info = NodeInfo::new(node);
        match self.index.get(&name) {
            Some(&i) => {
                let old = &self.nodes[i];
                let relevant = old.labels() != info.labels()
                    || old.node.spec != info.node.spec
                    || old.allocatable != info.allocatable
                    || old.readiness != info.readiness;
                info.requested = old.requested;
                info.non_zero_requested = old.non_zero_requested;
                info.used_ports = std::mem::take(&mut self.nodes[i].used_ports);
                self.nodes[i] = info;
                relevant
            }
            None => {
                if let Some(keys) = self.pods_by_node.get(&name) {
                    for k in keys {
                        if let Some(p) = self.pods.get(k) {
                            info.account(p, true);
                        }
                    }
                }
                self.index.insert(name, self.nodes.len());
                self.nodes.push(info);
                true
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else { return };
        self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name.clone(), i);
        }
    }

    fn insert(&mut self, key: &str, pod: CachedPod) {
        if let Some(&i) = self.index.get(&pod.node) {
            self.nodes[i].account(&pod, true);
        }
        if let Some(owner) = &pod.owner {
            *self
                .owner_nodes
                .entry(owner.clone())
                .or_default()
                .entry(pod.node.clone())
                .or_default() += 1;
        }
        self.pods_by_node
            .entry(pod.node.clone())
            .or_default()
            .insert(key.to_string());
        if pod.affinity.is_some() {
            self.with_affinity.insert(key.to_string());
        }
        self.pods.insert(key.to_string(), pod);
    }

    fn remove(&mut self, key: &str) -> Option<CachedPod> {
        let pod = self.pods.remove(key)?;
        self.with_affinity.remove(key);
        if let Some(&i) = self.index.get(&pod.node) {
            self.nodes[i].account(&pod, false);
        }
        if let Some(owner) = &pod.owner {
            if let Some(per_node) = self.owner_nodes.get_mut(owner) {
                if let Some(n) = per_node.get_mut(&pod.node) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        per_node.remove(&pod.node);
                    }
                }
                if per_node.is_empty() {
                    self.owner_nodes.remove(owner);
                }
            }
        }
        if let Some(keys) = self.pods_by_node.get_mut(&pod.node) {
            keys.remove(key);
            if keys.is_empty() {
                self.pods_by_node.remove(&pod.node);
            }
        }
        Some(pod)
    }

    /// Places `pod` on `node` before the apiserver knows.
    pub fn assume(&mut self, pod: &PodInfo, node: &str) {
        self.remove(&pod.key);
        self.insert(&pod.key, CachedPod::from_info(pod, node, true));
    }

    /// Undoes `assume` after a failed Bind. A pod the informer has meanwhile
    /// reported bound stays.
    pub fn forget(&mut self, key: &str, uid: &str) {
        if self.pods.get(key).is_some_and(|p| p.assumed && p.uid == uid) {
            self.remove(key);
        }
    }

    pub fn is_assumed(&self, key: &str, uid: &str) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed && p.uid == uid)
    }

    /// Applies what the pod informer says about a pod. Returns whether a
    /// pod that held node resources let go of them (deleted or finished),
    /// which may make room for pods waiting.
    pub fn update_pod(&mut self, key: &str, pod: Option<&Pod>) -> bool {
        match pod {
            Some(p) if holds_node(p) => {
                let info = PodInfo::accounting(p);
                let node = p.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or("");
                let same = self.pods.get(key).is_some_and(|c| {
                    c.uid == info.uid
                        && c.node == node
                        && c.labels == info.labels
                        && c.terminating == info.terminating
                });
                if same {
                    if let Some(c) = self.pods.get_mut(key) {
                        c.assumed = false;
                    }
                    false
                } else {
                    let freed = self.remove(key).is_some_and(|c| c.node != node);
                    self.insert(key, CachedPod::from_info(&info, node, false));
                    freed
                }
            }
            // Unbound pods (pending, or assumed and not yet confirmed) keep
            // their assumption: the informer reports the pod as unbound
            // until the Bind lands.
            Some(p) if p.spec.as_ref().is_some_and(|s| s.node_name.is_empty()) => false,
            _ => self.remove(key).is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};

    #[test]
    fn assumed_pods_take_capacity_until_forgotten_and_bound_pods_replace_them() {
        let mut cache = Cache::default();
        cache.set_node(Arc::new(node("n1", "4", "8Gi")));
        let p = pod("web-1", "1", "1Gi");
        let info = PodInfo::new(&p).unwrap();
        cache.assume(&info, "n1");
        assert_eq!(cache.node("n1").unwrap().requested.milli_cpu, 1000);
        assert!(cache.is_assumed(&info.key, &info.uid));
        cache.forget(&info.key, &info.uid);
        assert_eq!(cache.node("n1").unwrap().requested.milli_cpu, 0);

        cache.assume(&info, "n1");
        let mut bound = p.clone();
        bound.spec.as_mut().unwrap().node_name = "n1".into();
        cache.update_pod(&info.key, Some(&bound));
        assert!(!cache.is_assumed(&info.key, &info.uid));
        assert_eq!(
            cache.node("n1").unwrap().requested.milli_cpu,
            1000,
            "counted once"
        );
        assert!(cache.update_pod(&info.key, None), "deletion frees the node");
        assert_eq!(cache.node("n1").unwrap().requested.pods, 0);
    }

    #[test]
    fn pods_seen_before_their_node_are_accounted_when_it_appears() {
        let mut cache = Cache::default();
        let mut p = pod("a", "500m", "0");
        p.spec.as_mut().unwrap().node_name = "late".into();
        cache.update_pod("default/a", Some(&p));
        cache.set_node(Arc::new(node("late", "1", "1Gi")));
        assert_eq!(cache.node("late").unwrap().requested.milli_cpu, 500);
        cache.remove_node("late");
        assert!(cache.node("late").is_none());
    }

    #[test]
    fn heartbeats_are_not_relevant_changes() {
        let mut cache = Cache::default();
        let n = node("n1", "1", "1Gi");
        assert!(cache.set_node(Arc::new(n.clone())));
        let mut beat = n.clone();
        beat.status.as_mut().unwrap().conditions[0].last_heartbeat_time = "later".into();
        assert!(!cache.set_node(Arc::new(beat)));
        let mut cordoned = n;
        cordoned.spec.get_or_insert_with(Default::default).unschedulable = true;
        assert!(cache.set_node(Arc::new(cordoned)));
    }
}
