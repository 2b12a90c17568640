//! NodeResourcesFit (filter): the pod's cpu, memory and ephemeral-storage
//! requests must fit in the node's allocatable minus what the pods bound
//! or assumed there request — whether they run yet or not — and the node
//! must have room for one more pod. Scores: LeastAllocated prefers emptier
//! nodes, BalancedAllocation nodes whose cpu and memory would be used in
//! like proportion.

use super::{Cycle, FilterPlugin, ScorePlugin, Unfit, MAX_NODE_SCORE};
use crate::cache::NodeInfo;
use crate::pod_info::PodInfo;

pub struct NodeResourcesFit;
pub struct LeastAllocated;
pub struct BalancedAllocation;

impl FilterPlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle<'_>) -> Result<(), Unfit> {
        let (want, used, have) = (&pod.requests, &node.requested, &node.allocatable);
        let mut reasons = Vec::new();
        if used.pods + 1 > have.pods {
            reasons.push("Too many pods".into());
        }
        if want.milli_cpu > 0 && want.milli_cpu > have.milli_cpu - used.milli_cpu {
            reasons.push("Insufficient cpu".into());
        }
        if want.memory > 0 && want.memory > have.memory - used.memory {
            reasons.push("Insufficient memory".into());
        }
        if want.ephemeral_storage > 0
            && want.ephemeral_storage > have.ephemeral_storage - used.ephemeral_storage
        {
            reasons.push("Insufficient ephemeral-storage".into());
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(Unfit(reasons))
        }
    }
}

/// (cpu, memory) fractions of allocatable the node would have requested
/// with the pod on it, non-zero requests counted.
fn fractions(pod: &PodInfo, node: &NodeInfo) -> [(i64, i64); 2] {
    [
        (
            node.non_zero_requested.milli_cpu + pod.non_zero.milli_cpu,
            node.allocatable.milli_cpu,
        ),
        (
            node.non_zero_requested.memory + pod.non_zero.memory,
            node.allocatable.memory,
        ),
    ]
}

impl ScorePlugin for LeastAllocated {
    fn name(&self) -> &'static str {
        "NodeResourcesLeastAllocated"
    }

    fn weight(&self) -> i64 {
        1
    }

    /// Mean over cpu and memory of the free share after placing the pod.
    fn score(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle<'_>) -> i64 {
        let per = |(req, alloc): (i64, i64)| {
            if alloc <= 0 || req > alloc {
                0
            } else {
                (alloc - req) * MAX_NODE_SCORE / alloc
            }
        };
        let [cpu, mem] = fractions(pod, node);
        (per(cpu) + per(mem)) / 2
    }
}

impl ScorePlugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    fn weight(&self) -> i64 {
        1
    }

    /// (1 - standard deviation of the two fractions) × 100; with two
    /// resources the deviation is half their difference.
    fn score(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle<'_>) -> i64 {
        let frac = |(req, alloc): (i64, i64)| {
            if alloc <= 0 {
                1.0
            } else {
                (req as f64 / alloc as f64).min(1.0)
            }
        };
        let [cpu, mem] = fractions(pod, node);
        let std = (frac(cpu) - frac(mem)).abs() / 2.0;
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::testing::{node, pod, score_nodes, with_ephemeral};
    use std::sync::Arc;

    fn fit(cache: &Cache, p: &rkube_api::core::v1::Pod, node: &str) -> Result<(), Vec<String>> {
        let info = PodInfo::new(p).unwrap();
        let cycle = Cycle::new(&info, cache);
        NodeResourcesFit
            .filter(&info, cache.node(node).unwrap(), &cycle)
            .map_err(|u| u.0.into_iter().map(|r| r.into_owned()).collect())
    }

    #[test]
    fn requests_must_fit_in_allocatable_minus_bound_and_assumed_pods() {
        let mut cache = Cache::default();
        cache.set_node(Arc::new(node("n1", "2", "4Gi")));
        assert_eq!(fit(&cache, &pod("a", "1500m", "1Gi"), "n1"), Ok(()));
        cache.assume(&PodInfo::new(&pod("a", "1500m", "1Gi")).unwrap(), "n1");
        assert_eq!(
            fit(&cache, &pod("b", "500m", "3Gi"), "n1"),
            Ok(()),
            "exactly full fits"
        );
        assert_eq!(
            fit(&cache, &pod("b", "501m", "3Gi"), "n1"),
            Err(vec!["Insufficient cpu".into()])
        );
        assert_eq!(
            fit(&cache, &pod("b", "1", "4Gi"), "n1"),
            Err(vec!["Insufficient cpu".into(), "Insufficient memory".into()])
        );
        // A bound pod that is not running yet counts the same.
        let mut bound = pod("c", "500m", "0");
        bound.spec.as_mut().unwrap().node_name = "n1".into();
        cache.update_pod("default/c", Some(&bound));
        assert_eq!(
            fit(&cache, &pod("d", "1m", "0"), "n1"),
            Err(vec!["Insufficient cpu".into()])
        );
        assert_eq!(
            fit(&cache, &pod("e", "0", "0"), "n1"),
            Ok(()),
            "requesting nothing always fits"
        );
    }

    #[test]
    fn pod_count_and_ephemeral_storage() {
        let mut cache = Cache::default();
        let mut n = node("n1", "2", "4Gi");
        let alloc = &mut n.status.as_mut().unwrap().allocatable;
        alloc.insert("pods".into(), rkube_api::quantity::Quantity::new("1"));
        alloc.insert(
            "ephemeral-storage".into(),
            rkube_api::quantity::Quantity::new("1Gi"),
        );
        cache.set_node(Arc::new(n));
        assert_eq!(
            fit(&cache, &with_ephemeral(pod("a", "0", "0"), "2Gi"), "n1"),
            Err(vec!["Insufficient ephemeral-storage".into()])
        );
        cache.assume(&PodInfo::new(&pod("a", "0", "0")).unwrap(), "n1");
        assert_eq!(
            fit(&cache, &pod("b", "0", "0"), "n1"),
            Err(vec!["Too many pods".into()])
        );
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node_and_balanced_the_even_one() {
        let small = node("small", "2", "2Gi");
        let big = node("big", "8", "8Gi");
        let p = pod("p", "1", "1Gi");
        let s = score_nodes(&LeastAllocated, &p, &[small.clone(), big.clone()]);
        assert!(s[1] > s[0], "{s:?}");
        // cpu-heavy pod: on the cpu-rich node usage stays balanced.
        let cpu_rich = node("cpu", "8", "2Gi");
        let mem_rich = node("mem", "2", "8Gi");
        let heavy = pod("h", "1500m", "256Mi");
        let b = score_nodes(&BalancedAllocation, &heavy, &[cpu_rich, mem_rich]);
        assert!(b[0] > b[1], "{b:?}");
    }
}
