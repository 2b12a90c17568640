//! Preemption, as Kubernetes' DefaultPreemption: when a pod fits nowhere,
//! find the node where evicting pods of lower priority makes it fit,
//! evicting as few and as unimportant pods as possible.
//!
//! Per node: take every lower-priority pod away; if the pod still does not
//! fit, the node cannot help. Otherwise give the pods back one by one,
//! keeping each whose return still leaves room: first those whose eviction
//! would break a PodDisruptionBudget, then the others, most important first
//! within each: the rest are the victims. Among the nodes, the one whose
//! victims break the fewest budgets wins, then the one whose most important
//! victim is least important, then the smallest sum of victims' priorities,
//! then the fewest victims. As in Kubernetes, budgets are a preference, not a
//! guarantee: when only breaking one makes room, preemption does.

use crate::cache::{Cache, CachedPod};
use crate::framework::Framework;
use crate::plugins::{inter_pod_affinity, node_ports, spread, Cycle};
use crate::pod_info::PodInfo;
use rkube_api::policy::v1::PodDisruptionBudget;
use rkube_api::selector::Selector;
use rkube_api::Resource;
use std::sync::Arc;

/// A node and the pods to evict from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node: String,
    /// (key, uid, priority), most important first.
    pub victims: Vec<(String, String, i32)>,
    /// How many victims' eviction breaks a PodDisruptionBudget.
    pub violations: usize,
}

impl Candidate {
    /// How bad the eviction is; lower is better.
    fn cost(&self) -> (usize, i32, i64, usize) {
        let highest = self.victims.iter().map(|v| v.2).max().unwrap_or(i32::MIN);
        let sum = self.victims.iter().map(|v| i64::from(v.2)).sum();
        (self.violations, highest, sum, self.victims.len())
    }
}

/// The PodDisruptionBudgets preemption weighs: each one's namespace, selector and the
/// disruptions it allows now.
#[derive(Debug, Clone, Default)]
pub struct Budgets(Vec<Budget>);

#[derive(Debug, Clone)]
struct Budget {
    namespace: String,
    selector: Selector,
    allowed: i32,
    /// Pods the apiserver is evicting already: counted, so no new disruption.
    disrupted: Vec<String>,
}

impl Budgets {
    pub fn new(pdbs: &[Arc<PodDisruptionBudget>]) -> Budgets {
        Budgets(
            pdbs.iter()
                .filter_map(|pdb| {
                    let selector = pdb.spec.as_ref()?.selector.as_ref()?;
                    let selector = Selector::from_label_selector(selector).ok()?;
                    let status = pdb.status.clone().unwrap_or_default();
                    Some(Budget {
                        namespace: pdb.namespace().to_string(),
                        selector,
                        allowed: status.disruptions_allowed,
                        disrupted: status.disrupted_pods.into_keys().collect(),
                    })
                })
                .collect(),
        )
    }

    /// For each of `pods` in turn, whether evicting it (after the ones before it) breaks a
    /// budget, as Kubernetes' filterPodsWithPDBViolation counts.
    fn violations(&self, pods: &[(&str, &CachedPod)]) -> Vec<bool> {
        let mut allowed: Vec<i32> = self.0.iter().map(|b| b.allowed).collect();
        pods.iter()
            .map(|(key, pod)| {
                let name = key.rsplit('/').next().unwrap_or(key);
                let mut violated = false;
                for (i, b) in self.0.iter().enumerate() {
                    if b.namespace != pod.namespace
                        || b.selector.is_empty()
                        || !b.selector.matches(&pod.labels)
                        || b.disrupted.iter().any(|d| d == name)
                    {
                        continue;
                    }
                    allowed[i] -= 1;
                    violated |= allowed[i] < 0;
                }
                violated
            })
            .collect()
    }
}

/// Whether every filter lets `pod` onto `node` as the cache is now.
fn fits(framework: &Framework, pod: &PodInfo, cache: &Cache, node: &str) -> bool {
    let Some(info) = cache.node(node) else {
        return false;
    };
    let cycle = Cycle::new(pod, cache);
    framework
        .filters
        .iter()
        .all(|f| f.filter(pod, info, &cycle).is_ok())
}

/// Whether a filter's reason is one that evicting pods can cure (what
/// Kubernetes calls Unschedulable, as opposed to
/// UnschedulableAndUnresolvable: taints, node affinity, a missing
/// topology label, pod affinity).
fn resolvable(reason: &str) -> bool {
    reason.starts_with("Insufficient ")
        || [
            "Too many pods",
            node_ports::REASON,
            spread::REASON,
            inter_pod_affinity::REASON_ANTI_AFFINITY,
            inter_pod_affinity::REASON_EXISTING_ANTI_AFFINITY,
        ]
        .contains(&reason)
}

/// Whether evicting pods could make `pod` fit on `node`: no filter says
/// no for a reason that evictions cannot change.
fn might_help(framework: &Framework, pod: &PodInfo, cache: &Cache, node: &str) -> bool {
    let Some(info) = cache.node(node) else {
        return false;
    };
    let cycle = Cycle::new(pod, cache);
    framework
        .filters
        .iter()
        .filter_map(|f| f.filter(pod, info, &cycle).err())
        .all(|unfit| unfit.0.iter().all(|r| resolvable(r)))
}

/// The victims on `node` that make room for `pod`, or None if evicting
/// every lower-priority pod there would not. Leaves the cache as it was.
fn victims_on(
    framework: &Framework,
    pod: &PodInfo,
    cache: &mut Cache,
    budgets: &Budgets,
    node: &str,
) -> Option<Candidate> {
    let mut lower: Vec<(&String, &CachedPod)> = cache
        .pods_on(node)
        .filter(|(k, p)| **k != pod.key && p.priority < pod.priority && !p.terminating)
        .collect();
    if lower.is_empty() || !might_help(framework, pod, cache, node) {
        return None;
    }
    // Most important first; the name keeps the choice stable.
    lower.sort_by(|a, b| b.1.priority.cmp(&a.1.priority).then_with(|| a.0.cmp(b.0)));
    let flags = budgets.violations(&lower.iter().map(|(k, p)| (k.as_str(), *p)).collect::<Vec<_>>());
    // Those whose eviction breaks a budget get their place back first.
    let mut order: Vec<(String, bool)> = lower
        .iter()
        .zip(&flags)
        .map(|((k, _), violates)| (k.to_string(), *violates))
        .collect();
    order.sort_by_key(|(_, violates)| !violates);
    let mut taken = Vec::with_capacity(order.len());
    for (k, violates) in &order {
        if let Some(p) = cache.take_pod(k) {
            taken.push((k.clone(), p, *violates));
        }
    }
    let result = if fits(framework, pod, cache, node) {
        let mut victims = Vec::new();
        let mut violations = 0;
        for (k, p, violates) in std::mem::take(&mut taken) {
            let (uid, priority) = (p.uid.clone(), p.priority);
            cache.restore_pod(&k, p);
            if !fits(framework, pod, cache, node) {
                if let Some(p) = cache.take_pod(&k) {
                    taken.push((k.clone(), p, violates));
                }
                victims.push((k, uid, priority));
                violations += usize::from(violates);
            }
        }
        victims.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        Some(Candidate {
            node: node.to_string(),
            victims,
            violations,
        })
    } else {
        None
    };
    for (k, p, _) in taken {
        cache.restore_pod(&k, p);
    }
    result.filter(|c| !c.victims.is_empty())
}

/// The best node to preempt on for `pod`, if any.
pub fn find(framework: &Framework, pod: &PodInfo, cache: &mut Cache, budgets: &Budgets) -> Option<Candidate> {
    if pod.never_preempts {
        return None;
    }
    let names: Vec<String> = cache.nodes().iter().map(|n| n.name.clone()).collect();
    names
        .iter()
        .filter_map(|n| victims_on(framework, pod, cache, budgets, n))
        .min_by(|a, b| a.cost().cmp(&b.cost()).then_with(|| a.node.cmp(&b.node)))
}

/// Whether pods evicted for `pod` on `node` are still going away: then the
/// pod waits for them rather than evicting more (Kubernetes'
/// PodEligibleToPreemptOthers).
pub fn awaiting_victims(pod: &PodInfo, cache: &Cache, node: &str) -> bool {
    cache
        .pods_on(node)
        .any(|(_, p)| p.terminating && p.priority < pod.priority)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, pod};
    use rkube_api::core::v1::Pod;

    fn prio(mut p: Pod, priority: i32) -> Pod {
        p.spec.as_mut().unwrap().priority = Some(priority);
        p
    }

    fn place(cache: &mut Cache, p: &Pod, node: &str) {
        cache.assume(&PodInfo::new(p).unwrap(), node);
    }

    fn victims(c: &Candidate) -> Vec<&str> {
        c.victims.iter().map(|v| v.0.as_str()).collect()
    }

    #[test]
    fn the_fewest_least_important_pods_make_room() {
        let mut cache = Cache::default();
        cache.set_node(Arc::new(node("n1", "4", "4Gi")));
        cache.set_node(Arc::new(node("n2", "4", "4Gi")));
        // n1: two 1-cpu pods at 10 and one 2-cpu at 5; n2: a 4-cpu at 50.
        place(&mut cache, &prio(pod("a", "1", "0"), 10), "n1");
        place(&mut cache, &prio(pod("b", "1", "0"), 10), "n1");
        place(&mut cache, &prio(pod("c", "2", "0"), 5), "n1");
        place(&mut cache, &prio(pod("big", "4", "0"), 50), "n2");
        let f = Framework::default();
        let high = PodInfo::new(&prio(pod("high", "2", "0"), 100)).unwrap();
        let c = find(&f, &high, &mut cache, &Budgets::default()).unwrap();
        assert_eq!(c.node, "n1");
        assert_eq!(victims(&c), ["default/c"], "one pod at 5 beats two at 10");
        // The cache is as it was.
        assert_eq!(cache.node("n1").unwrap().requested.milli_cpu, 4000);
        assert_eq!(cache.node("n2").unwrap().requested.milli_cpu, 4000);

        // Needing 3 cpus, n1 gives c and one of a/b (highest victim 10 <
        // 50 on n2).
        let bigger = PodInfo::new(&prio(pod("bigger", "3", "0"), 100)).unwrap();
        let c = find(&f, &bigger, &mut cache, &Budgets::default()).unwrap();
        assert_eq!(c.node, "n1");
        assert_eq!(victims(&c), ["default/b", "default/c"]);
    }

    #[test]
    fn victims_that_break_no_budget_are_preferred() {
        use rkube_api::policy::v1::{
            PodDisruptionBudget, PodDisruptionBudgetSpec, PodDisruptionBudgetStatus,
        };
        let mut cache = Cache::default();
        cache.set_node(Arc::new(node("n1", "2", "2Gi")));
        cache.set_node(Arc::new(node("n2", "2", "2Gi")));
        let labelled = |name: &str, app: &str| {
            let mut p = prio(pod(name, "2", "0"), 1);
            p.metadata
                .as_mut()
                .unwrap()
                .labels
                .insert("app".into(), app.into());
            p
        };
        // n1 runs a database replica its budget cannot spare; n2 a batch pod, more
        // important but unprotected
        place(&mut cache, &labelled("db-0", "db"), "n1");
        let mut batch = labelled("batch", "batch");
        batch.spec.as_mut().unwrap().priority = Some(5);
        place(&mut cache, &batch, "n2");
        let budget = |allowed: i32| {
            Arc::new(PodDisruptionBudget {
                metadata: Some(rkube_api::meta::v1::ObjectMeta {
                    name: "db".into(),
                    namespace: "default".into(),
                    ..Default::default()
                }),
                spec: Some(PodDisruptionBudgetSpec {
                    selector: Some(rkube_api::meta::v1::LabelSelector {
                        match_labels: [("app".to_string(), "db".to_string())].into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                status: Some(PodDisruptionBudgetStatus {
                    disruptions_allowed: allowed,
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let f = Framework::default();
        let high = PodInfo::new(&prio(pod("high", "2", "0"), 100)).unwrap();
        let c = find(&f, &high, &mut cache, &Budgets::default()).unwrap();
        assert_eq!(
            victims(&c),
            ["default/db-0"],
            "without budgets the least important goes"
        );
        let c = find(&f, &high, &mut cache, &Budgets::new(&[budget(0)])).unwrap();
        assert_eq!((victims(&c), c.violations), (vec!["default/batch"], 0));
        let c = find(&f, &high, &mut cache, &Budgets::new(&[budget(1)])).unwrap();
        assert_eq!(victims(&c), ["default/db-0"], "a budget with room is no obstacle");
        // when only breaking the budget makes room, preemption still does
        cache.take_pod("default/batch");
        let c = find(&f, &high, &mut cache, &Budgets::new(&[budget(0)])).unwrap();
        assert_eq!((victims(&c), c.violations), (vec!["default/db-0"], 1));
    }

    #[test]
    fn equal_or_higher_priority_and_never_policies_preempt_nobody() {
        let mut cache = Cache::default();
        cache.set_node(Arc::new(node("n1", "1", "1Gi")));
        place(&mut cache, &prio(pod("a", "1", "0"), 10), "n1");
        let f = Framework::default();
        let same = PodInfo::new(&prio(pod("same", "1", "0"), 10)).unwrap();
        assert_eq!(find(&f, &same, &mut cache, &Budgets::default()), None);
        let mut never = prio(pod("never", "1", "0"), 100);
        never.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        assert_eq!(
            find(
                &f,
                &PodInfo::new(&never).unwrap(),
                &mut cache,
                &Budgets::default()
            ),
            None
        );
        // Too big for the node even when empty.
        let huge = PodInfo::new(&prio(pod("huge", "2", "0"), 100)).unwrap();
        assert_eq!(find(&f, &huge, &mut cache, &Budgets::default()), None);
        let high = PodInfo::new(&prio(pod("high", "1", "0"), 100)).unwrap();
        assert!(!awaiting_victims(&high, &cache, "n1"));
        // Evicting does not cure a taint.
        let mut tainted = node("n1", "1", "1Gi");
        tainted.spec.as_mut().unwrap().taints = vec![crate::testing::taint("dedicated", "db", "NoSchedule")];
        cache.set_node(Arc::new(tainted.clone()));
        assert_eq!(find(&f, &high, &mut cache, &Budgets::default()), None);
        tainted.spec.as_mut().unwrap().taints.clear();
        cache.set_node(Arc::new(tainted));
        let c = find(&f, &high, &mut cache, &Budgets::default()).unwrap();
        assert_eq!(victims(&c), ["default/a"]);
    }

    #[test]
    fn anti_affinity_against_a_lower_priority_pod_is_cured_by_evicting_it() {
        use rkube_api::core::v1::{Affinity, PodAffinityTerm, PodAntiAffinity};
        use rkube_api::meta::v1::LabelSelector;
        let mut cache = Cache::default();
        cache.set_node(Arc::new(node("n1", "8", "8Gi")));
        let mut noisy = prio(pod("noisy", "0", "0"), 1);
        noisy
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("app".into(), "noisy".into());
        place(&mut cache, &noisy, "n1");
        place(&mut cache, &prio(pod("quiet", "0", "0"), 1), "n1");
        let mut p = prio(pod("latency", "0", "0"), 100);
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: vec![PodAffinityTerm {
                    label_selector: Some(LabelSelector {
                        match_labels: [("app".to_string(), "noisy".to_string())].into(),
                        ..Default::default()
                    }),
                    topology_key: crate::cache::LABEL_HOSTNAME.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        });
        let c = find(
            &Framework::default(),
            &PodInfo::new(&p).unwrap(),
            &mut cache,
            &Budgets::default(),
        )
        .unwrap();
        assert_eq!(victims(&c), ["default/noisy"]);
    }
}
