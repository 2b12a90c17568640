//! The scheduling plugins, named as Kubernetes names them. A filter says
//! whether a pod may run on a node and, if not, why (the reasons end up in
//! the pod's `PodScheduled` message); a score ranks the nodes that passed,
//! 0 to 100, times its weight.
//!
//! Plugins are stateless: what they read of the cluster comes from the
//! cache and from the [`Cycle`] worked out once per pod.

pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_ready;
pub mod node_resources;
pub mod node_unschedulable;
pub mod spread;
pub mod taint_toleration;
pub mod volume_binding;

use crate::cache::{Cache, NodeInfo};
use crate::pod_info::PodInfo;
use std::borrow::Cow;
use std::collections::HashMap;

/// Highest score a plugin gives (Kubernetes' `MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;

/// Why a node cannot take the pod, as Kubernetes words it
/// (`Insufficient cpu`, `node(s) were unschedulable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfit(pub Vec<Cow<'static, str>>);

impl Unfit {
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Unfit {
        Unfit(vec![reason.into()])
    }
}

pub trait FilterPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn filter(&self, pod: &PodInfo, node: &NodeInfo, cycle: &Cycle<'_>) -> Result<(), Unfit>;
}

pub trait ScorePlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn weight(&self) -> i64;
    /// Whether the plugin has anything to say about this pod; skipping
    /// saves a pass over the nodes.
    fn applies(&self, _pod: &PodInfo) -> bool {
        true
    }
    fn score(&self, pod: &PodInfo, node: &NodeInfo, cycle: &Cycle<'_>) -> i64;
    /// Brings raw scores into 0..=100 (default: they already are).
    fn normalize(&self, _scores: &mut [i64]) {}
}

/// Pods matching one topology spread constraint per domain (value of the
/// topology label) among the nodes the pod may run on.
#[derive(Debug, Default, Clone)]
pub struct SpreadCounts {
    pub counts: HashMap<String, u32>,
    /// The smallest count over the domains (0 when there are none).
    pub min: u32,
    /// 1 when the pod being placed matches its own selector.
    pub self_match: u32,
}

/// What one scheduling attempt works out once and every node reuses.
pub struct Cycle<'a> {
    pub cache: &'a Cache,
    /// Pods of the pod's owner per node (default spreading).
    pub owner_nodes: Option<&'a HashMap<String, u32>>,
    /// Pods of the pod's owner per zone.
    pub owner_zones: HashMap<String, u32>,
    /// One per `pod.spread` constraint, same order.
    pub spread: Vec<SpreadCounts>,
    /// Inter-pod affinity counts; None when no pod has such terms.
    pub affinity: Option<inter_pod_affinity::AffinityState>,
}

impl<'a> Cycle<'a> {
    pub fn new(pod: &PodInfo, cache: &'a Cache) -> Cycle<'a> {
        let owner_nodes = pod.owner.as_deref().and_then(|o| cache.owner_nodes(o));
        let mut owner_zones = HashMap::new();
        if let Some(per_node) = owner_nodes {
            for (node, n) in per_node {
                if let Some(zone) = cache.node(node).and_then(|i| i.zone.as_ref()) {
                    *owner_zones.entry(zone.clone()).or_insert(0) += n;
                }
            }
        }
        let spread = spread::count(pod, cache);
        let affinity = inter_pod_affinity::count(pod, cache);
        Cycle {
            cache,
            owner_nodes,
            owner_zones,
            spread,
            affinity,
        }
    }
}

/// The filters, in the order Kubernetes runs them; the first that fails
/// gives the node's reason.
pub fn default_filters() -> Vec<Box<dyn FilterPlugin>> {
    vec![
        Box::new(node_unschedulable::NodeUnschedulable),
        Box::new(node_name::NodeName),
        Box::new(taint_toleration::TaintToleration),
        Box::new(node_ready::NodeReady),
        Box::new(node_affinity::NodeAffinity),
        Box::new(node_ports::NodePorts),
        Box::new(node_resources::NodeResourcesFit),
        Box::new(spread::PodTopologySpread),
        Box::new(inter_pod_affinity::InterPodAffinity),
        Box::new(volume_binding::VolumeBinding),
    ]
}

/// The scores with Kubernetes' default weights.
pub fn default_scores() -> Vec<Box<dyn ScorePlugin>> {
    vec![
        Box::new(node_resources::LeastAllocated),
        Box::new(node_resources::BalancedAllocation),
        Box::new(node_affinity::NodeAffinity),
        Box::new(taint_toleration::TaintToleration),
        Box::new(spread::PodTopologySpread),
        Box::new(spread::DefaultSpread),
        Box::new(inter_pod_affinity::InterPodAffinity),
    ]
}

/// Scales raw scores so the highest becomes 100 (0 stays 0).
pub fn normalize_to_max(scores: &mut [i64]) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max > 0 {
        for s in scores {
            *s = *s * MAX_NODE_SCORE / max;
        }
    }
}

/// For "fewer is better" raw values: the lowest becomes 100, the highest 0;
/// all equal gives 100 everywhere.
pub fn normalize_reverse(scores: &mut [i64]) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for s in scores {
        *s = if max > 0 {
            MAX_NODE_SCORE * (max - *s) / max
        } else {
            MAX_NODE_SCORE
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        let mut s = [0, 5, 10];
        normalize_to_max(&mut s);
        assert_eq!(s, [0, 50, 100]);
        let mut s = [0, 5, 10];
        normalize_reverse(&mut s);
        assert_eq!(s, [100, 50, 0]);
        let mut s = [0, 0];
        normalize_reverse(&mut s);
        assert_eq!(s, [100, 100]);
    }
}
