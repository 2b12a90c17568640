//! NodeAffinity: `spec.nodeSelector` (every label must match) and the
//! required node affinity (any term; within a term every expression and
//! field must match) filter nodes; the preferred terms' weights score them.

use super::{normalize_to_max, Cycle, FilterPlugin, ScorePlugin, Unfit};
use crate::cache::NodeInfo;
use crate::pod_info::PodInfo;
use rkube_api::core::v1::NodeSelectorTerm;

pub struct NodeAffinity;

pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

pub use rkube_api::placement::requirement_matches;

/// A node selector term against a cached node.
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    rkube_api::placement::term_matches(term, &node.name, node.labels())
}

/// Whether the node satisfies the pod's nodeSelector and required affinity.
pub fn node_matches(pod: &PodInfo, node: &NodeInfo) -> bool {
    rkube_api::placement::selector_and_affinity_match(
        &pod.node_selector,
        pod.required_affinity.as_ref(),
        &node.name,
        node.labels(),
    )
}

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle<'_>) -> Result<(), Unfit> {
        if node_matches(pod, node) {
            Ok(())
        } else {
            Err(Unfit::new(REASON))
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn weight(&self) -> i64 {
        2
    }

    fn applies(&self, pod: &PodInfo) -> bool {
        !pod.preferred_affinity.is_empty()
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle<'_>) -> i64 {
        pod.preferred_affinity
            .iter()
            .filter(|p| p.weight > 0 && p.preference.as_ref().is_some_and(|t| term_matches(t, node)))
            .map(|p| i64::from(p.weight))
            .sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_to_max(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_filter, labelled, node, pod, score_nodes};
    use rkube_api::core::v1::{
        Affinity, NodeAffinity as Spec, NodeSelector, NodeSelectorRequirement, PreferredSchedulingTerm,
    };
    use std::collections::BTreeMap;

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn with_required(
        mut p: rkube_api::core::v1::Pod,
        terms: Vec<NodeSelectorTerm>,
    ) -> rkube_api::core::v1::Pod {
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(Spec {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: terms,
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    #[test]
    fn every_operator() {
        let labels = BTreeMap::from([
            ("disk".to_string(), "ssd".to_string()),
            ("cores".to_string(), "8".to_string()),
        ]);
        let cases = [
            (req("disk", "In", &["ssd", "nvme"]), true),
            (req("disk", "In", &["hdd"]), false),
            (req("disk", "NotIn", &["hdd"]), true),
            (req("absent", "NotIn", &["x"]), true),
            (req("disk", "NotIn", &["ssd"]), false),
            (req("disk", "Exists", &[]), true),
            (req("absent", "Exists", &[]), false),
            (req("absent", "DoesNotExist", &[]), true),
            (req("disk", "DoesNotExist", &[]), false),
            (req("cores", "Gt", &["4"]), true),
            (req("cores", "Gt", &["8"]), false),
            (req("cores", "Lt", &["16"]), true),
            (req("disk", "Gt", &["1"]), false),
            (req("absent", "Lt", &["1"]), false),
            (req("disk", "Like", &["ssd"]), false),
        ];
        for (r, want) in cases {
            assert_eq!(requirement_matches(&r, &labels), want, "{r:?}");
        }
    }

    #[test]
    fn node_selector_and_required_terms() {
        let ssd = labelled(node("ssd", "1", "1Gi"), &[("disk", "ssd")]);
        let hdd = labelled(node("hdd", "1", "1Gi"), &[("disk", "hdd")]);
        let mut p = pod("p", "0", "0");
        p.spec
            .as_mut()
            .unwrap()
            .node_selector
            .insert("disk".into(), "ssd".into());
        assert_eq!(check_filter(&NodeAffinity, &p, &ssd), Ok(()));
        assert_eq!(
            check_filter(&NodeAffinity, &p, &hdd),
            Err(vec![REASON.to_string()])
        );

        // Terms are ORed; expressions and fields inside a term are ANDed.
        let p = with_required(
            pod("p", "0", "0"),
            vec![
                NodeSelectorTerm {
                    match_expressions: vec![req("disk", "In", &["nvme"])],
                    ..Default::default()
                },
                NodeSelectorTerm {
                    match_expressions: vec![req("disk", "Exists", &[])],
                    match_fields: vec![req("metadata.name", "In", &["hdd"])],
                },
            ],
        );
        assert_eq!(check_filter(&NodeAffinity, &p, &hdd), Ok(()));
        assert!(check_filter(&NodeAffinity, &p, &ssd).is_err());
        let empty = with_required(pod("p", "0", "0"), vec![NodeSelectorTerm::default()]);
        assert!(
            check_filter(&NodeAffinity, &empty, &ssd).is_err(),
            "an empty term matches nothing"
        );
    }

    #[test]
    fn preferred_terms_score_by_weight() {
        let ssd = labelled(node("ssd", "1", "1Gi"), &[("disk", "ssd"), ("zone", "a")]);
        let hdd = labelled(node("hdd", "1", "1Gi"), &[("disk", "hdd"), ("zone", "a")]);
        let none = node("none", "1", "1Gi");
        let mut p = pod("p", "0", "0");
        let term = |k: &str, v: &str, w: i32| PreferredSchedulingTerm {
            weight: w,
            preference: Some(NodeSelectorTerm {
                match_expressions: vec![req(k, "In", &[v])],
                ..Default::default()
            }),
        };
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(Spec {
                preferred_during_scheduling_ignored_during_execution: vec![
                    term("disk", "ssd", 80),
                    term("zone", "a", 20),
                ],
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(score_nodes(&NodeAffinity, &p, &[ssd, hdd, none]), [100, 20, 0]);
    }
}
