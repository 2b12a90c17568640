//! InterPodAffinity: pods placed relative to other pods, per topology
//! domain (the value of a node label: per node for
//! `kubernetes.io/hostname`, per zone for `topology.kubernetes.io/zone`).
//!
//! The filter, as Kubernetes' plugin:
//! * required podAffinity: every term needs a matching pod in the node's
//!   domain — except for the first pod of a group: when no pod anywhere
//!   matches the terms and the pod matches them itself, any node with the
//!   topology labels will do;
//! * required podAntiAffinity: no term may have a matching pod in the
//!   node's domain;
//! * existing pods' required anti-affinity against the incoming pod: no
//!   node in the domain of a pod that refuses it.
//!
//! The score adds the preferred terms' weights for matching pods in the
//! node's domains (anti-affinity subtracts), both those of the incoming
//! pod and, symmetrically, those of existing pods that match it (their
//! required affinity counts 1, Kubernetes' hardPodAffinityWeight).
//!
//! Everything is counted once per attempt, into [`AffinityState`].

use super::{Cycle, FilterPlugin, ScorePlugin, Unfit, MAX_NODE_SCORE};
use crate::cache::{Cache, CachedPod, NodeInfo};
use crate::pod_info::{AffinityTerm, PodInfo};
use std::collections::HashMap;

pub struct InterPodAffinity;

pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";

/// Kubernetes' hardPodAffinityWeight: how much an existing pod's required
/// affinity to the incoming pod counts in the score.
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// (topology key, value) → a count or a score.
type Domains = HashMap<(String, String), i64>;

#[derive(Debug, Default)]
pub struct AffinityState {
    /// Pods matching all of the incoming pod's required affinity terms,
    /// per domain of each term.
    affinity: Domains,
    /// Pods matching each required anti-affinity term, per domain.
    anti_affinity: Domains,
    /// Existing pods whose required anti-affinity matches the incoming
    /// pod, per domain.
    existing_anti_affinity: Domains,
    /// Preferred weights per domain, for the score.
    scores: Domains,
    /// Whether anything above is non-empty for scoring.
    has_scores: bool,
}

fn domain(cache: &Cache, pod: &CachedPod, key: &str) -> Option<(String, String)> {
    let node = cache.node(&pod.node)?;
    node.topology_value(key).map(|v| (key.to_string(), v.to_string()))
}

fn term_matches_pod(term: &AffinityTerm, cache: &Cache, pod: &CachedPod) -> bool {
    term.matches(
        &pod.namespace,
        &pod.labels,
        cache.namespace_labels(&pod.namespace),
    )
}

fn term_matches_incoming(term: &AffinityTerm, cache: &Cache, pod: &PodInfo) -> bool {
    term.matches(
        &pod.namespace,
        &pod.labels,
        cache.namespace_labels(&pod.namespace),
    )
}

/// Counts what the filter and score need for `pod`. None when neither the
/// pod nor any existing pod has inter-pod terms (the usual case: no cost).
pub fn count(pod: &PodInfo, cache: &Cache) -> Option<AffinityState> {
    let own = pod.affinity.as_deref();
    let existing_terms = cache.pods_with_affinity().next().is_some();
    if own.is_none() && !existing_terms {
        return None;
    }
    let mut st = AffinityState::default();
    let add = |m: &mut Domains, d: Option<(String, String)>, w: i64| {
        if let Some(d) = d {
            *m.entry(d).or_insert(0) += w;
        }
    };
    if let Some(own) = own {
        let needs_scan = !own.required_affinity.is_empty()
            || !own.required_anti_affinity.is_empty()
            || !own.preferred_affinity.is_empty()
            || !own.preferred_anti_affinity.is_empty();
        if needs_scan {
            for (key, p) in cache.pods() {
                if *key == pod.key {
                    continue;
                }
                if !own.required_affinity.is_empty()
                    && own
                        .required_affinity
                        .iter()
                        .all(|t| term_matches_pod(t, cache, p))
                {
                    for t in &own.required_affinity {
                        add(&mut st.affinity, domain(cache, p, &t.topology_key), 1);
                    }
                }
                for t in &own.required_anti_affinity {
                    if term_matches_pod(t, cache, p) {
                        add(&mut st.anti_affinity, domain(cache, p, &t.topology_key), 1);
                    }
                }
                for t in &own.preferred_affinity {
                    if term_matches_pod(t, cache, p) {
                        add(&mut st.scores, domain(cache, p, &t.topology_key), t.weight);
                    }
                }
                for t in &own.preferred_anti_affinity {
                    if term_matches_pod(t, cache, p) {
                        add(&mut st.scores, domain(cache, p, &t.topology_key), -t.weight);
                    }
                }
            }
        }
    }
    for (key, p) in cache.pods_with_affinity() {
        let Some(terms) = p.affinity.as_deref() else {
            continue;
        };
        if *key == pod.key {
            continue;
        }
        for t in &terms.required_anti_affinity {
            if term_matches_incoming(t, cache, pod) {
                add(
                    &mut st.existing_anti_affinity,
                    domain(cache, p, &t.topology_key),
                    1,
                );
            }
        }
        for t in &terms.required_affinity {
            if term_matches_incoming(t, cache, pod) {
                add(
                    &mut st.scores,
                    domain(cache, p, &t.topology_key),
                    HARD_POD_AFFINITY_WEIGHT,
                );
            }
        }
        for t in &terms.preferred_affinity {
            if term_matches_incoming(t, cache, pod) {
                add(&mut st.scores, domain(cache, p, &t.topology_key), t.weight);
            }
        }
        for t in &terms.preferred_anti_affinity {
            if term_matches_incoming(t, cache, pod) {
                add(&mut st.scores, domain(cache, p, &t.topology_key), -t.weight);
            }
        }
    }
    st.scores.retain(|_, v| *v != 0);
    st.has_scores = !st.scores.is_empty();
    Some(st)
}

fn count_in(m: &Domains, node: &NodeInfo, key: &str) -> i64 {
    node.topology_value(key)
        .and_then(|v| m.get(&(key.to_string(), v.to_string())))
        .copied()
        .unwrap_or(0)
}

impl FilterPlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, cycle: &Cycle<'_>) -> Result<(), Unfit> {
        let Some(st) = &cycle.affinity else { return Ok(()) };
        // Kubernetes' order: the pod's affinity, its anti-affinity, then
        // existing pods' anti-affinity.
        if let Some(own) = pod.affinity.as_deref() {
            if !own.required_affinity.is_empty() {
                let mut pods_exist = true;
                for t in &own.required_affinity {
                    if node.topology_value(&t.topology_key).is_none() {
                        return Err(Unfit::new(REASON_AFFINITY));
                    }
                    if count_in(&st.affinity, node, &t.topology_key) <= 0 {
                        pods_exist = false;
                    }
                }
                if !pods_exist {
                    // The first pod of a group that matches its own terms
                    // may go anywhere, or it could never start.
                    let first = st.affinity.is_empty()
                        && own
                            .required_affinity
                            .iter()
                            .all(|t| term_matches_incoming(t, cycle.cache, pod));
                    if !first {
                        return Err(Unfit::new(REASON_AFFINITY));
                    }
                }
            }
            for t in &own.required_anti_affinity {
                if count_in(&st.anti_affinity, node, &t.topology_key) > 0 {
                    return Err(Unfit::new(REASON_ANTI_AFFINITY));
                }
            }
        }
        let refused = st
            .existing_anti_affinity
            .iter()
            .any(|((k, v), n)| *n > 0 && node.topology_value(k) == Some(v.as_str()));
        if refused {
            return Err(Unfit::new(REASON_EXISTING_ANTI_AFFINITY));
        }
        Ok(())
    }
}

impl ScorePlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn weight(&self) -> i64 {
        2
    }

    fn score(&self, _: &PodInfo, node: &NodeInfo, cycle: &Cycle<'_>) -> i64 {
        let Some(st) = cycle.affinity.as_ref().filter(|s| s.has_scores) else {
            return 0;
        };
        st.scores
            .iter()
            .filter(|((k, v), _)| node.topology_value(k) == Some(v.as_str()))
            .map(|(_, w)| *w)
            .sum()
    }

    /// Kubernetes' min-max scaling: the lowest raw score becomes 0, the
    /// highest 100; all equal gives 0.
    fn normalize(&self, scores: &mut [i64]) {
        let max = scores.iter().copied().max().unwrap_or(0);
        let min = scores.iter().copied().min().unwrap_or(0);
        for s in scores {
            *s = if max > min {
                MAX_NODE_SCORE * (*s - min) / (max - min)
            } else {
                0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{LABEL_HOSTNAME, LABEL_ZONE};
    use crate::testing::{labelled, node, pod};
    use rkube_api::core::v1::{
        Affinity, Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity, WeightedPodAffinityTerm,
    };
    use rkube_api::meta::v1::LabelSelector;
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

    fn app(name: &str, app: &str) -> Pod {
        let mut p = pod(name, "0", "0");
        p.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("app".into(), app.into());
        p
    }

    fn term(app: &str, key: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: [("app".to_string(), app.to_string())].into(),
                ..Default::default()
            }),
            topology_key: key.into(),
            ..Default::default()
        }
    }

    fn affinity(mut p: Pod, a: Affinity) -> Pod {
        p.spec.as_mut().unwrap().affinity = Some(a);
        p
    }

    fn anti(p: Pod, app_: &str, key: &str) -> Pod {
        affinity(
            p,
            Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    required_during_scheduling_ignored_during_execution: vec![term(app_, key)],
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    }

    fn near(p: Pod, app_: &str, key: &str) -> Pod {
        affinity(
            p,
            Affinity {
                pod_affinity: Some(PodAffinity {
                    required_during_scheduling_ignored_during_execution: vec![term(app_, key)],
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    }

    fn place(cache: &mut Cache, p: &Pod, node: &str) {
        cache.assume(&PodInfo::new(p).unwrap(), node);
    }

    /// Nodes the filter lets `p` on, or the reasons per node.
    fn feasible(cache: &Cache, p: &Pod) -> Result<Vec<String>, Vec<String>> {
        let info = PodInfo::new(p).unwrap();
        let cycle = Cycle::new(&info, cache);
        let mut ok = Vec::new();
        let mut why = Vec::new();
        for n in cache.nodes() {
            match InterPodAffinity.filter(&info, n, &cycle) {
                Ok(()) => ok.push(n.name.clone()),
                Err(u) => why.extend(u.0.into_iter().map(|r| r.into_owned())),
            }
        }
        ok.sort();
        if ok.is_empty() {
            Err(why)
        } else {
            Ok(ok)
        }
    }

    #[test]
    fn anti_affinity_on_hostname_puts_replicas_on_different_nodes() {
        let mut cache = cluster();
        let web = |n: &str| anti(app(n, "web"), "web", LABEL_HOSTNAME);
        place(&mut cache, &web("w1"), "a1");
        assert_eq!(feasible(&cache, &web("w2")), Ok(vec!["a2".into(), "b1".into()]));
        place(&mut cache, &web("w2"), "b1");
        assert_eq!(feasible(&cache, &web("w3")), Ok(vec!["a2".into()]));
        place(&mut cache, &web("w3"), "a2");
        assert_eq!(
            feasible(&cache, &web("w4")),
            Err(vec![REASON_ANTI_AFFINITY.to_string(); 3])
        );
        // Another app is not concerned, on any node.
        assert_eq!(feasible(&cache, &app("db", "db")).map(|v| v.len()), Ok(3));
    }

    #[test]
    fn existing_pods_anti_affinity_keeps_the_incoming_pod_out_of_their_zone() {
        let mut cache = cluster();
        // The db refuses web pods in its zone; the web pod itself has no terms.
        place(&mut cache, &anti(app("db", "db"), "web", LABEL_ZONE), "a1");
        assert_eq!(feasible(&cache, &app("web", "web")), Ok(vec!["b1".into()]));
        let info = PodInfo::new(&app("web", "web")).unwrap();
        let cycle = Cycle::new(&info, &cache);
        assert_eq!(
            InterPodAffinity.filter(&info, cache.node("a2").unwrap(), &cycle),
            Err(Unfit::new(REASON_EXISTING_ANTI_AFFINITY))
        );
    }

    #[test]
    fn affinity_needs_a_matching_pod_in_the_domain_except_for_the_first_of_a_group() {
        let mut cache = cluster();
        // No cache pod yet: a web pod that wants db pods in its zone waits.
        assert_eq!(
            feasible(&cache, &near(app("web", "web"), "db", LABEL_ZONE)),
            Err(vec![REASON_AFFINITY.to_string(); 3])
        );
        // The first of a group that wants its own kind may go anywhere.
        let cache_pod = |n: &str| near(app(n, "cache"), "cache", LABEL_ZONE);
        assert_eq!(feasible(&cache, &cache_pod("c1")).map(|v| v.len()), Ok(3));
        place(&mut cache, &cache_pod("c1"), "b1");
        assert_eq!(feasible(&cache, &cache_pod("c2")), Ok(vec!["b1".into()]));
        place(&mut cache, &app("db", "db"), "a2");
        assert_eq!(
            feasible(&cache, &near(app("web", "web"), "db", LABEL_ZONE)),
            Ok(vec!["a1".into(), "a2".into()])
        );
        // A node without the topology label cannot satisfy the term.
        cache.set_node(Arc::new(node("bare", "4", "4Gi")));
        let info = PodInfo::new(&near(app("web", "web"), "db", LABEL_ZONE)).unwrap();
        let cycle = Cycle::new(&info, &cache);
        assert_eq!(
            InterPodAffinity.filter(&info, cache.node("bare").unwrap(), &cycle),
            Err(Unfit::new(REASON_AFFINITY))
        );
    }

    #[test]
    fn terms_see_only_their_namespaces() {
        let mut cache = cluster();
        let mut other = app("w-other", "web");
        other.metadata.as_mut().unwrap().namespace = "team-b".into();
        place(&mut cache, &other, "a1");
        let web = anti(app("w", "web"), "web", LABEL_HOSTNAME);
        assert_eq!(
            feasible(&cache, &web).map(|v| v.len()),
            Ok(3),
            "own namespace only"
        );
        let mut all = web.clone();
        all.spec
            .as_mut()
            .unwrap()
            .affinity
            .as_mut()
            .unwrap()
            .pod_anti_affinity
            .as_mut()
            .unwrap()
            .required_during_scheduling_ignored_during_execution[0]
            .namespace_selector = Some(LabelSelector::default());
        assert_eq!(feasible(&cache, &all), Ok(vec!["a2".into(), "b1".into()]));
        let mut labelled_ns = web;
        let t = &mut labelled_ns
            .spec
            .as_mut()
            .unwrap()
            .affinity
            .as_mut()
            .unwrap()
            .pod_anti_affinity
            .as_mut()
            .unwrap()
            .required_during_scheduling_ignored_during_execution[0];
        t.namespace_selector = Some(LabelSelector {
            match_labels: [("team".to_string(), "b".to_string())].into(),
            ..Default::default()
        });
        assert_eq!(feasible(&cache, &labelled_ns).map(|v| v.len()), Ok(3));
        cache.set_namespace("team-b", Some([("team".to_string(), "b".to_string())].into()));
        assert_eq!(feasible(&cache, &labelled_ns), Ok(vec!["a2".into(), "b1".into()]));
    }

    #[test]
    fn preferred_terms_score_domains_with_matching_pods() {
        let mut cache = cluster();
        place(&mut cache, &app("db", "db"), "a1");
        let p = affinity(
            app("web", "web"),
            Affinity {
                pod_affinity: Some(PodAffinity {
                    preferred_during_scheduling_ignored_during_execution: vec![WeightedPodAffinityTerm {
                        weight: 50,
                        pod_affinity_term: Some(term("db", LABEL_ZONE)),
                    }],
                    ..Default::default()
                }),
                pod_anti_affinity: Some(PodAntiAffinity {
                    preferred_during_scheduling_ignored_during_execution: vec![WeightedPodAffinityTerm {
                        weight: 10,
                        pod_affinity_term: Some(term("db", LABEL_HOSTNAME)),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let info = PodInfo::new(&p).unwrap();
        let cycle = Cycle::new(&info, &cache);
        let mut scores: Vec<i64> = ["a1", "a2", "b1"]
            .iter()
            .map(|n| InterPodAffinity.score(&info, cache.node(n).unwrap(), &cycle))
            .collect();
        assert_eq!(scores, [40, 50, 0]);
        InterPodAffinity.normalize(&mut scores);
        assert_eq!(scores, [80, 100, 0]);
    }

    #[test]
    fn match_label_keys_narrow_the_selector_to_the_pods_own_value() {
        let mut cache = cluster();
        let rev = |n: &str, hash: &str| {
            let mut p = anti(app(n, "web"), "web", LABEL_HOSTNAME);
            p.metadata
                .as_mut()
                .unwrap()
                .labels
                .insert("pod-template-hash".into(), hash.into());
            p.spec
                .as_mut()
                .unwrap()
                .affinity
                .as_mut()
                .unwrap()
                .pod_anti_affinity
                .as_mut()
                .unwrap()
                .required_during_scheduling_ignored_during_execution[0]
                .match_label_keys = vec!["pod-template-hash".into()];
            p
        };
        place(&mut cache, &rev("old", "v1"), "a1");
        // A new revision's pod may share a node with the old one...
        assert_eq!(feasible(&cache, &rev("new", "v2")).map(|v| v.len()), Ok(3));
        // ...but not with its own revision.
        assert_eq!(feasible(&cache, &rev("new", "v1")).map(|v| v.len()), Ok(2));
    }
}
