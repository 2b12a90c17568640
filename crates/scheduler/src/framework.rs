//! One scheduling attempt: filter nodes, score the feasible ones, pick the
//! best (ties at random), or explain why none fits.
//!
//! Like Kubernetes (`percentageOfNodesToScore`), the search stops once it
//! has found enough feasible nodes: in a large cluster scoring all 5,000
//! nodes for every pod buys little placement quality for a lot of time.
//! The default is adaptive, Kubernetes' formula: 50% minus 1% per 125
//! nodes, at least 5%, and never fewer than 100 nodes (so clusters of up to
//! 100 nodes are always searched in full). Each search starts where the
//! previous one stopped, so every node gets its turn. When no node fits
//! the search covers every node, so the message counts all of them.

use crate::cache::{Cache, NodeInfo};
use crate::plugins::{Cycle, FilterPlugin, ScorePlugin};
use crate::pod_info::PodInfo;
use rand::Rng;
use std::collections::HashMap;
use std::fmt;

/// Below this many nodes every node is searched.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never drops below this.
pub const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// No node fits: how many nodes there were and how many failed for which
/// reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub nodes: usize,
    pub reasons: HashMap<String, usize>,
}

impl fmt::Display for FitError {
    /// Kubernetes' wording: `0/3 nodes are available: 2 Insufficient cpu,
    /// 1 node(s) were unschedulable.` (reasons sorted as strings).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return write!(f, "0/0 nodes are available: no nodes available to schedule pods.");
        }
        let mut parts: Vec<String> = self.reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        parts.sort();
        write!(f, "0/{} nodes are available: {}.", self.nodes, parts.join(", "))
    }
}

impl std::error::Error for FitError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node: String,
    /// Nodes the filters ran on, and how many of those fit.
    pub evaluated: usize,
    pub feasible: usize,
}

pub struct Framework {
    pub filters: Vec<Box<dyn FilterPlugin>>,
    pub scores: Vec<Box<dyn ScorePlugin>>,
    /// 1..=100, or 0 for the adaptive default.
    pub percentage_of_nodes_to_score: u32,
}

impl Default for Framework {
    fn default() -> Self {
        Framework {
            filters: crate::plugins::default_filters(),
            scores: crate::plugins::default_scores(),
            percentage_of_nodes_to_score: 0,
        }
    }
}

impl Framework {
    /// How many feasible nodes end the search in a cluster of `n`.
    pub fn feasible_nodes_to_find(&self, n: usize) -> usize {
        if n < MIN_FEASIBLE_NODES_TO_FIND || self.percentage_of_nodes_to_score >= 100 {
            return n;
        }
        let pct = match self.percentage_of_nodes_to_score {
            0 => 50usize.saturating_sub(n / 125).max(MIN_FEASIBLE_NODES_PERCENTAGE),
            p => p as usize,
        };
        (n * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
    }

    /// Picks a node for `pod`. Does not assume it; the caller does.
    pub fn schedule(
        &self,
        pod: &PodInfo,
        cache: &mut Cache,
        rng: &mut impl Rng,
    ) -> Result<Placement, FitError> {
        let (placement, next_start) = self.search(pod, cache, rng)?;
        cache.next_start = next_start;
        Ok(placement)
    }

    fn search(
        &self,
        pod: &PodInfo,
        cache: &Cache,
        rng: &mut impl Rng,
    ) -> Result<(Placement, usize), FitError> {
        let nodes = cache.nodes();
        let n = nodes.len();
        if n == 0 {
            return Err(FitError {
                nodes: 0,
                reasons: HashMap::new(),
            });
        }
        let cycle = Cycle::new(pod, cache);
        let want = self.feasible_nodes_to_find(n);
        let start = cache.next_start % n;
        let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want.min(n));
        let mut reasons: HashMap<String, usize> = HashMap::new();
        let mut evaluated = 0;
        for i in 0..n {
            let node = &nodes[(start + i) % n];
            evaluated += 1;
            match self.filters.iter().try_for_each(|f| f.filter(pod, node, &cycle)) {
                Ok(()) => {
                    feasible.push(node);
                    if feasible.len() >= want {
                        break;
                    }
                }
                Err(unfit) => {
                    for r in unfit.0 {
                        *reasons.entry(r.into_owned()).or_insert(0) += 1;
                    }
                }
            }
        }
        let next_start = (start + evaluated) % n;
        if feasible.is_empty() {
            return Err(FitError { nodes: n, reasons });
        }
        let placement = |node: &NodeInfo| Placement {
            node: node.name.clone(),
            evaluated,
            feasible: feasible.len(),
        };
        if feasible.len() == 1 {
            return Ok((placement(feasible[0]), next_start));
        }
        let mut total = vec![0i64; feasible.len()];
        let mut scores = vec![0i64; feasible.len()];
        for plugin in self.scores.iter().filter(|p| p.applies(pod)) {
            for (s, node) in scores.iter_mut().zip(&feasible) {
                *s = plugin.score(pod, node, &cycle);
            }
            plugin.normalize(&mut scores);
            let w = plugin.weight();
            for (t, s) in total.iter_mut().zip(&scores) {
                *t += s * w;
            }
        }
        // Highest total wins; equal nodes share the load at random
        // (reservoir sampling over the ties).
        let mut best = 0;
        let mut ties = 0u32;
        for (i, t) in total.iter().enumerate() {
            if *t > total[best] {
                best = i;
                ties = 1;
            } else if *t == total[best] {
                ties += 1;
                if rng.gen_range(0..ties) == 0 {
                    best = i;
                }
            }
        }
        Ok((placement(feasible[best]), next_start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod, taint};
    use rand::SeedableRng;
    use std::sync::Arc;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn the_unschedulable_message_reads_like_kubernetes() {
        let mut cache = Cache::default();
        cache.set_node(Arc::new(node("small-1", "1", "1Gi")));
        cache.set_node(Arc::new(node("small-2", "1", "1Gi")));
        let mut down = node("down", "8", "8Gi");
        down.spec.get_or_insert_with(Default::default).taints =
            vec![taint("node.kubernetes.io/not-ready", "", "NoSchedule")];
        cache.set_node(Arc::new(down));
        let info = PodInfo::new(&pod("web-1", "2", "0")).unwrap();
        let err = Framework::default()
            .schedule(&info, &mut cache, &mut rng())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 2 Insufficient cpu."
        );
        let empty = Framework::default()
            .schedule(&info, &mut Cache::default(), &mut rng())
            .unwrap_err();
        assert_eq!(
            empty.to_string(),
            "0/0 nodes are available: no nodes available to schedule pods."
        );
    }

    #[test]
    fn adaptive_search_size() {
        let f = Framework::default();
        assert_eq!(f.feasible_nodes_to_find(50), 50);
        assert_eq!(f.feasible_nodes_to_find(1000), 420);
        assert_eq!(f.feasible_nodes_to_find(5000), 500);
        assert_eq!(f.feasible_nodes_to_find(100_000), 5000);
        let all = Framework {
            percentage_of_nodes_to_score: 100,
            ..Framework::default()
        };
        assert_eq!(all.feasible_nodes_to_find(5000), 5000);
    }

    #[test]
    fn equal_nodes_share_the_load_and_assumed_pods_count() {
        let mut cache = Cache::default();
        for i in 0..4 {
            cache.set_node(Arc::new(node(&format!("n{i}"), "4", "4Gi")));
        }
        let f = Framework::default();
        let mut r = rng();
        let mut per_node: HashMap<String, u32> = HashMap::new();
        for i in 0..16 {
            let info = PodInfo::new(&pod(&format!("p{i}"), "1", "1Gi")).unwrap();
            let placed = f.schedule(&info, &mut cache, &mut r).unwrap();
            cache.assume(&info, &placed.node);
            *per_node.entry(placed.node).or_default() += 1;
        }
        // Exactly full: every node got 4, none overcommitted.
        assert!(per_node.values().all(|n| *n == 4), "{per_node:?}");
        let info = PodInfo::new(&pod("extra", "1", "0")).unwrap();
        let err = f.schedule(&info, &mut cache, &mut r).unwrap_err();
        assert_eq!(err.to_string(), "0/4 nodes are available: 4 Insufficient cpu.");
    }

    #[test]
    fn ties_are_broken_at_random() {
        let mut cache = Cache::default();
        for i in 0..3 {
            cache.set_node(Arc::new(node(&format!("n{i}"), "64", "64Gi")));
        }
        let f = Framework::default();
        let mut r = rng();
        let info = PodInfo::new(&pod("p", "0", "0")).unwrap();
        let picked: std::collections::HashSet<String> = (0..60)
            .map(|_| f.schedule(&info, &mut cache, &mut r).unwrap().node)
            .collect();
        assert_eq!(
            picked.len(),
            3,
            "without assuming, every equal node gets picked sometimes"
        );
    }
}
