//! Spreading pods that belong together across failure domains.
//!
//! PodTopologySpread honours the pod's `topologySpreadConstraints`: pods
//! matching the constraint's selector (in the pod's namespace) are counted
//! per domain — per value of the topology label, e.g. per node for
//! `kubernetes.io/hostname`, per zone for `topology.kubernetes.io/zone` —
//! over the nodes the pod may run on. `DoNotSchedule` constraints filter:
//! placing the pod must not make its domain exceed the emptiest one by more
//! than `maxSkew`. `ScheduleAnyway` constraints score: fewer matching pods
//! in the domain is better.
//!
//! DefaultSpread applies to pods without constraints, the way Kubernetes'
//! default constraints and SelectorSpread do: pods of the same controlling
//! owner (ReplicaSet, ...) prefer nodes, and zones, that have fewer of
//! them, so one failure does not take every replica.

use super::node_affinity::node_matches;
use super::{normalize_reverse, Cycle, FilterPlugin, ScorePlugin, SpreadCounts, Unfit};
use crate::cache::{Cache, NodeInfo};
use crate::pod_info::PodInfo;
use std::collections::HashMap;

pub struct PodTopologySpread;
pub struct DefaultSpread;

pub const REASON: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// Counts, per constraint of `pod`, the matching pods per domain. Costs a
/// pass over nodes and pods, so it runs once per attempt and only for pods
/// that have constraints.
pub fn count(pod: &PodInfo, cache: &Cache) -> Vec<SpreadCounts> {
    if pod.spread.is_empty() {
        return Vec::new();
    }
    // The domains are those of nodes the pod may run on.
    let eligible: Vec<&NodeInfo> = cache.nodes().iter().filter(|n| node_matches(pod, n)).collect();
    pod.spread
        .iter()
        .map(|c| {
            let mut counts: HashMap<String, u32> = HashMap::new();
            let mut domain_of: HashMap<&str, &str> = HashMap::new();
            for n in &eligible {
                if let Some(v) = n.topology_value(&c.topology_key) {
                    counts.entry(v.to_string()).or_insert(0);
                    domain_of.insert(n.name.as_str(), v);
                }
            }
            if let Some(sel) = &c.selector {
                for (key, p) in cache.pods() {
                    if *key == pod.key || p.namespace != pod.namespace || !sel.matches(&p.labels) {
                        continue;
                    }
                    if let Some(d) = domain_of.get(p.node.as_str()) {
                        if let Some(n) = counts.get_mut(*d) {
                            *n += 1;
                        }
                    }
                }
            }
            let min = counts.values().copied().min().unwrap_or(0);
            let self_match = u32::from(c.selector.as_ref().is_some_and(|s| s.matches(&pod.labels)));
            SpreadCounts {
                counts,
                min,
                self_match,
            }
        })
        .collect()
}

impl FilterPlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, cycle: &Cycle<'_>) -> Result<(), Unfit> {
        for (c, state) in pod.spread.iter().zip(&cycle.spread).filter(|(c, _)| c.hard) {
            let Some(domain) = node.topology_value(&c.topology_key) else {
                return Err(Unfit::new(REASON_MISSING_LABEL));
            };
            let here = state.counts.get(domain).copied().unwrap_or(0);
            let skew = i64::from(here) + i64::from(state.self_match) - i64::from(state.min);
            if skew > i64::from(c.max_skew) {
                return Err(Unfit::new(REASON));
            }
        }
        Ok(())
    }
}

impl ScorePlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn weight(&self) -> i64 {
        2
    }

    fn applies(&self, pod: &PodInfo) -> bool {
        pod.spread.iter().any(|c| !c.hard)
    }

    /// Matching pods in the node's domains, over the soft constraints.
    fn score(&self, pod: &PodInfo, node: &NodeInfo, cycle: &Cycle<'_>) -> i64 {
        pod.spread
            .iter()
            .zip(&cycle.spread)
            .filter(|(c, _)| !c.hard)
            .filter_map(|(c, s)| {
                node.topology_value(&c.topology_key)
                    .map(|d| s.counts.get(d).copied().unwrap_or(0))
            })
            .map(i64::from)
            .sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_reverse(scores)
    }
}

impl ScorePlugin for DefaultSpread {
    fn name(&self) -> &'static str {
        "DefaultPodTopologySpread"
    }

    fn weight(&self) -> i64 {
        2
    }

    fn applies(&self, pod: &PodInfo) -> bool {
        pod.owner.is_some() && pod.spread.is_empty()
    }

    /// Pods of the same owner on the node, plus twice those in its zone
    /// (Kubernetes weighs zones 2:1 over nodes when nodes have zones).
    fn score(&self, _: &PodInfo, node: &NodeInfo, cycle: &Cycle<'_>) -> i64 {
        let on_node = cycle
            .owner_nodes
            .and_then(|m| m.get(&node.name))
            .copied()
            .unwrap_or(0);
        let in_zone = node
            .zone
            .as_ref()
            .and_then(|z| cycle.owner_zones.get(z))
            .copied()
            .unwrap_or(0);
        i64::from(on_node) + 2 * i64::from(in_zone)
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_reverse(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{LABEL_HOSTNAME, LABEL_ZONE};
    use crate::testing::{labelled, node, owned, pod, with_spread};
    use std::sync::Arc;

    fn cluster() -> Cache {
        let mut cache = Cache::default();
        for (n, z) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
            cache.set_node(Arc::new(labelled(
                node(n, "4", "4Gi"),
                &[(LABEL_ZONE, z), (LABEL_HOSTNAME, n)],
            )));
        }
        cache
    }

    fn feasible(cache: &Cache, p: &rkube_api::core::v1::Pod) -> Vec<String> {
        let info = PodInfo::new(p).unwrap();
        let cycle = Cycle::new(&info, cache);
        let mut ok: Vec<String> = cache
            .nodes()
            .iter()
            .filter(|n| PodTopologySpread.filter(&info, n, &cycle).is_ok())
            .map(|n| n.name.clone())
            .collect();
        ok.sort();
        ok
    }

    #[test]
    fn do_not_schedule_keeps_skew_within_max_skew() {
        let mut cache = cluster();
        let web = |name: &str| with_spread(labelled_pod(name), LABEL_ZONE, 1, "DoNotSchedule");
        cache.assume(&PodInfo::new(&web("w1")).unwrap(), "a1");
        // zone a has 1, zone b 0: another in a would make skew 2.
        assert_eq!(feasible(&cache, &web("w2")), ["b1"]);
        cache.assume(&PodInfo::new(&web("w2")).unwrap(), "b1");
        assert_eq!(feasible(&cache, &web("w3")), ["a1", "a2", "b1"]);
        // Pods outside the selector do not count.
        cache.assume(&PodInfo::new(&pod("other", "0", "0")).unwrap(), "b1");
        assert_eq!(feasible(&cache, &web("w3")), ["a1", "a2", "b1"]);
    }

    fn labelled_pod(name: &str) -> rkube_api::core::v1::Pod {
        let mut p = pod(name, "0", "0");
        p.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("app".into(), "web".into());
        p
    }

    #[test]
    fn nodes_without_the_topology_label_fail_hard_constraints() {
        let mut cache = cluster();
        cache.set_node(Arc::new(node("bare", "4", "4Gi")));
        let p = with_spread(labelled_pod("w"), LABEL_ZONE, 1, "DoNotSchedule");
        let info = PodInfo::new(&p).unwrap();
        let cycle = Cycle::new(&info, &cache);
        assert_eq!(
            PodTopologySpread.filter(&info, cache.node("bare").unwrap(), &cycle),
            Err(Unfit::new(REASON_MISSING_LABEL))
        );
    }

    #[test]
    fn schedule_anyway_scores_emptier_domains_higher() {
        let mut cache = cluster();
        let p = with_spread(labelled_pod("w1"), LABEL_HOSTNAME, 1, "ScheduleAnyway");
        cache.assume(&PodInfo::new(&p).unwrap(), "a1");
        let info = PodInfo::new(&with_spread(
            labelled_pod("w2"),
            LABEL_HOSTNAME,
            1,
            "ScheduleAnyway",
        ))
        .unwrap();
        let cycle = Cycle::new(&info, &cache);
        let mut scores: Vec<i64> = ["a1", "a2"]
            .iter()
            .map(|n| PodTopologySpread.score(&info, cache.node(n).unwrap(), &cycle))
            .collect();
        PodTopologySpread.normalize(&mut scores);
        assert_eq!(scores, [0, 100]);
        assert!(
            PodTopologySpread
                .filter(&info, cache.node("a1").unwrap(), &cycle)
                .is_ok(),
            "soft never filters"
        );
    }

    #[test]
    fn default_spread_prefers_nodes_and_zones_without_siblings() {
        let mut cache = cluster();
        let sibling = owned(pod("r1", "0", "0"), "rs-uid");
        cache.assume(&PodInfo::new(&sibling).unwrap(), "a1");
        let info = PodInfo::new(&owned(pod("r2", "0", "0"), "rs-uid")).unwrap();
        assert!(DefaultSpread.applies(&info));
        let cycle = Cycle::new(&info, &cache);
        let mut scores: Vec<i64> = ["a1", "a2", "b1"]
            .iter()
            .map(|n| DefaultSpread.score(&info, cache.node(n).unwrap(), &cycle))
            .collect();
        DefaultSpread.normalize(&mut scores);
        assert!(scores[2] > scores[1] && scores[1] > scores[0], "{scores:?}");
        assert!(!DefaultSpread.applies(&PodInfo::new(&pod("lonely", "0", "0")).unwrap()));
    }
}
