//! Where a pod may run, as Kubernetes decides it and every component must agree on it:
//! whether a toleration tolerates a taint, and whether a node satisfies a pod's
//! `nodeSelector` and required node affinity. The scheduler filters with these, the
//! DaemonSet controller picks its nodes with them, and node-lifecycle evicts by them.

use crate::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration};
use std::collections::BTreeMap;

/// Kubernetes' `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if !t.effect.is_empty() && t.effect != taint.effect {
        return false;
    }
    if !t.key.is_empty() && t.key != taint.key {
        return false;
    }
    match t.operator.as_str() {
        "" | "Equal" => t.value == taint.value,
        "Exists" => true,
        _ => false,
    }
}

/// One `matchExpressions` entry against a node's labels. Unknown operators and non-integer
/// values for Gt/Lt match nothing (the apiserver validates them; this keeps a bad object
/// from matching by accident).
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

/// One `matchFields` entry: Kubernetes supports only `metadata.name`, with In and NotIn.
fn field_matches(r: &NodeSelectorRequirement, node_name: &str) -> bool {
    if r.key != "metadata.name" {
        return false;
    }
    let fields = BTreeMap::from([(r.key.clone(), node_name.to_string())]);
    matches!(r.operator.as_str(), "In" | "NotIn") && requirement_matches(r, &fields)
}

/// A node selector term against the node `node_name` with `labels`. A term with neither
/// expressions nor fields matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
    if term.match_expressions.is_empty() && term.match_fields.is_empty() {
        return false;
    }
    term.match_expressions
        .iter()
        .all(|r| requirement_matches(r, labels))
        && term.match_fields.iter().all(|r| field_matches(r, node_name))
}

/// Whether the node satisfies a `nodeSelector` (every label) and a required node affinity
/// (any term).
pub fn selector_and_affinity_match(
    node_selector: &BTreeMap<String, String>,
    required: Option<&NodeSelector>,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    node_selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        && required.is_none_or(|sel| {
            sel.node_selector_terms
                .iter()
                .any(|t| term_matches(t, node_name, labels))
        })
}

/// Whether the node satisfies the pod's `nodeSelector` and required node affinity.
pub fn node_matches(spec: &PodSpec, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    selector_and_affinity_match(&spec.node_selector, required, node_name, labels)
}
