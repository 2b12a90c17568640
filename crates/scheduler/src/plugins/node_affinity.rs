//! NodeAffinity: `spec.nodeSelector` (every label must match) and the
//! required node affinity (any term; within a term every expression and
//! field must match) filter nodes; the preferred terms' weights score them.

use super::{normalize_to_max, Cycle, FilterPlugin, ScorePlugin, Unfit};
use crate::cache::NodeInfo;
use crate::pod_info::PodInfo;
use rkube_api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
use std::collections::BTreeMap;

pub struct NodeAffinity;

pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// One `matchExpressions` entry against the node's labels. Unknown
/// operators and non-integer values for Gt/Lt match nothing (the apiserver
/// validates them; this keeps a bad object from matching by accident).
pub fn requirement_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&r.key);
    let int = |s: &str| s.trim().parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| r.values.contains(v)),
        "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(want)) =
                (value.and_then(|v| int(v)), r.values.first().and_then(|v| int(v)))
            else {
                return false;
            };
            if r.operator == "Gt" {
                have > want
            } else {
                have < want
            }
        }
        _ => false,
    }
}

/// One `matchFields` entry: Kubernetes supports only `metadata.name`.
fn field_matches(r: &NodeSelectorRequirement, node: &NodeInfo) -> bool {
    if r.key != "metadata.name" {
        return false;
    }
    let fields = BTreeMap::from([(r.key.clone(), node.name.clone())]);
    matches!(r.operator.as_str(), "In" | "NotIn") && requirement_matches(r, &fields)
}

/// A term with neither expressions nor fields matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    if term.match_expressions.is_empty() && term.match_fields.is_empty() {
        return false;
    }
    let labels = node.labels();
    term.match_expressions
        .iter()
        .all(|r| requirement_matches(r, labels))
        && term.match_fields.iter().all(|r| field_matches(r, node))
}

/// Whether the node satisfies the pod's nodeSelector and required affinity.
pub fn node_matches(pod: &PodInfo, node: &NodeInfo) -> bool {
    let labels = node.labels();
    if !pod.node_selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    match &pod.required_affinity {
        Some(sel) => sel.node_selector_terms.iter().any(|t| term_matches(t, node)),
        None => true,
    }
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
    use rkube_api::core::v1::{Affinity, NodeAffinity as Spec, NodeSelector, PreferredSchedulingTerm};

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
        });
        assert_eq!(score_nodes(&NodeAffinity, &p, &[ssd, hdd, none]), [100, 20, 0]);
    }
}
