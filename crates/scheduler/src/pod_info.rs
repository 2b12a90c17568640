//! What the plugins need of the pod being scheduled, worked out once per
//! attempt instead of once per node.

use crate::resources::{pod_non_zero_requests, pod_requests, Resources};
use rkube_api::core::v1::{
    NodeSelector, Pod, PodAffinityTerm, PreferredSchedulingTerm, Toleration, WeightedPodAffinityTerm,
};
use rkube_api::selector::{Requirement, Selector};
use rkube_api::Resource;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A port the pod binds on its node (`hostPort`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

/// One `topologySpreadConstraints` entry, selector parsed.
#[derive(Debug, Clone)]
pub struct SpreadConstraint {
    pub max_skew: i32,
    pub topology_key: String,
    /// `whenUnsatisfiable: DoNotSchedule` (a filter); otherwise a score.
    pub hard: bool,
    /// None: the constraint has no selector, which matches no pods
    /// (Kubernetes' rule), so it counts nothing.
    pub selector: Option<Selector>,
}

/// One podAffinity/podAntiAffinity term, normalized: the selector with
/// matchLabelKeys/mismatchLabelKeys merged in, the namespaces resolved.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    /// None: the term has no labelSelector, which matches no pods.
    pub selector: Option<Selector>,
    /// Pods in these namespaces match (the pod's own when the term names
    /// neither namespaces nor a namespaceSelector)...
    pub namespaces: Vec<String>,
    /// ...or in namespaces whose labels this matches (`{}`: all).
    pub namespace_selector: Option<Selector>,
    pub topology_key: String,
    /// For preferred terms; 0 for required ones.
    pub weight: i64,
}

impl AffinityTerm {
    /// Whether a pod in `namespace` with `labels` is one this term is
    /// about; `ns_labels` are the labels of that namespace.
    pub fn matches(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
        ns_labels: Option<&BTreeMap<String, String>>,
    ) -> bool {
        let Some(sel) = &self.selector else { return false };
        let in_namespace = self.namespaces.iter().any(|n| n == namespace)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| s.is_empty() || ns_labels.is_some_and(|l| s.matches(l)));
        in_namespace && sel.matches(labels)
    }
}

/// A pod's inter-pod affinity and anti-affinity terms.
#[derive(Debug, Clone, Default)]
pub struct PodAffinityInfo {
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<AffinityTerm>,
    pub preferred_anti_affinity: Vec<AffinityTerm>,
}

impl PodAffinityInfo {
    pub fn is_empty(&self) -> bool {
        self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty()
    }

    /// The terms of `pod`, None when it has none.
    pub fn of(pod: &Pod) -> Result<Option<Arc<PodAffinityInfo>>, InvalidPod> {
        let Some(a) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else {
            return Ok(None);
        };
        let m = pod.metadata();
        let term = |t: &PodAffinityTerm, weight: i32, field: String| -> Result<AffinityTerm, InvalidPod> {
            let bad = |e: rkube_api::selector::SelectorError| InvalidPod(format!("{field}: {e}"));
            let mut selector = match &t.label_selector {
                Some(ls) => Some(Selector::from_label_selector(ls).map_err(bad)?),
                None => None,
            };
            // Kubernetes merges these into the selector when the pod is
            // created; rkube does it here, with the same effect.
            if let Some(sel) = selector.as_mut() {
                for k in &t.match_label_keys {
                    if let Some(v) = m.labels.get(k) {
                        sel.requirements.push(Requirement::In(k.clone(), vec![v.clone()]));
                    }
                }
                for k in &t.mismatch_label_keys {
                    if let Some(v) = m.labels.get(k) {
                        sel.requirements
                            .push(Requirement::NotIn(k.clone(), vec![v.clone()]));
                    }
                }
            }
            let namespace_selector = match &t.namespace_selector {
                Some(ls) => Some(Selector::from_label_selector(ls).map_err(bad)?),
                None => None,
            };
            let namespaces = if t.namespaces.is_empty() && namespace_selector.is_none() {
                vec![m.namespace.clone()]
            } else {
                t.namespaces.clone()
            };
            if t.topology_key.is_empty() {
                return Err(InvalidPod(format!("{field}.topologyKey must not be empty")));
            }
            Ok(AffinityTerm {
                selector,
                namespaces,
                namespace_selector,
                topology_key: t.topology_key.clone(),
                weight: i64::from(weight),
            })
        };
        let required = |terms: &[PodAffinityTerm], f: &str| -> Result<Vec<AffinityTerm>, InvalidPod> {
            terms
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    term(
                        t,
                        0,
                        format!("{f}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"),
                    )
                })
                .collect()
        };
        let preferred = |terms: &[WeightedPodAffinityTerm],
                         f: &str|
         -> Result<Vec<AffinityTerm>, InvalidPod> {
            terms
                .iter()
                .enumerate()
                .filter_map(|(i, w)| {
                    let f =
                        format!("{f}.preferredDuringSchedulingIgnoredDuringExecution[{i}].podAffinityTerm");
                    w.pod_affinity_term.as_ref().map(|t| term(t, w.weight, f))
                })
                .collect()
        };
        let mut info = PodAffinityInfo::default();
        if let Some(pa) = &a.pod_affinity {
            let f = "spec.affinity.podAffinity";
            info.required_affinity = required(&pa.required_during_scheduling_ignored_during_execution, f)?;
            info.preferred_affinity = preferred(&pa.preferred_during_scheduling_ignored_during_execution, f)?;
        }
        if let Some(pa) = &a.pod_anti_affinity {
            let f = "spec.affinity.podAntiAffinity";
            info.required_anti_affinity =
                required(&pa.required_during_scheduling_ignored_during_execution, f)?;
            info.preferred_anti_affinity =
                preferred(&pa.preferred_during_scheduling_ignored_during_execution, f)?;
        }
        Ok((!info.is_empty()).then(|| Arc::new(info)))
    }
}

#[derive(Debug, Clone)]
pub struct PodInfo {
    /// `namespace/name`.
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub requests: Resources,
    pub non_zero: Resources,
    pub host_ports: Vec<HostPort>,
    /// The controlling owner's uid (default spreading groups by it).
    pub owner: Option<String>,
    pub node_name: String,
    pub node_selector: BTreeMap<String, String>,
    pub required_affinity: Option<NodeSelector>,
    pub preferred_affinity: Vec<PreferredSchedulingTerm>,
    pub tolerations: Vec<Toleration>,
    pub spread: Vec<SpreadConstraint>,
    /// Inter-pod affinity and anti-affinity terms (existing pods' are
    /// read too, so the cache keeps them).
    pub affinity: Option<Arc<PodAffinityInfo>>,
    /// `spec.priority` (set at admission from the PriorityClass).
    pub priority: i32,
    /// `preemptionPolicy: Never`: waits rather than evicting anyone.
    pub never_preempts: bool,
    /// Being deleted (gracefully): still holds its node.
    pub terminating: bool,
    /// The node selectors of the volumes its claims are bound to (every one must match).
    pub volume_affinity: Vec<rkube_api::core::v1::NodeSelector>,
    /// Its WaitForFirstConsumer claims that have no node yet: they get the pod's.
    pub waiting_claims: Vec<String>,
}

/// The taint the node-lifecycle controller puts on a node reporting MemoryPressure.
pub const MEMORY_PRESSURE_TAINT: &str = "node.kubernetes.io/memory-pressure";

/// BestEffort QoS: no container (init containers included) requests or limits anything
/// (a zero quantity counts as none, as in Kubernetes).
pub fn is_best_effort(spec: &rkube_api::core::v1::PodSpec) -> bool {
    spec.init_containers.iter().chain(&spec.containers).all(|c| {
        c.resources.as_ref().is_none_or(|r| {
            r.requests
                .values()
                .chain(r.limits.values())
                .all(|q| q.nanos().map_or(true, |v| v == 0))
        })
    })
}

/// A pod the scheduler cannot even start to place: the message says which
/// field and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPod(pub String);

impl PodInfo {
    /// Only what the cache accounts (resources, ports, owner, labels).
    pub fn accounting(pod: &Pod) -> PodInfo {
        let m = pod.metadata();
        let spec = pod.spec.as_ref();
        let host_ports = spec
            .map(|s| {
                s.containers
                    .iter()
                    .flat_map(|c| &c.ports)
                    .filter(|p| p.host_port > 0)
                    .map(|p| HostPort {
                        ip: p.host_ip.clone(),
                        protocol: if p.protocol.is_empty() {
                            "TCP".into()
                        } else {
                            p.protocol.clone()
                        },
                        port: p.host_port,
                    })
                    .collect()
            })
            .unwrap_or_default();
        PodInfo {
            key: rkube_api::object_key(&m.namespace, &m.name),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            uid: m.uid.clone(),
            labels: m.labels.clone(),
            requests: pod_requests(pod),
            non_zero: pod_non_zero_requests(pod),
            host_ports,
            owner: m
                .owner_references
                .iter()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            node_name: spec.map(|s| s.node_name.clone()).unwrap_or_default(),
            node_selector: BTreeMap::new(),
            required_affinity: None,
            preferred_affinity: Vec::new(),
            tolerations: Vec::new(),
            spread: Vec::new(),
            // A term that cannot be parsed was refused at validation; an
            // existing pod's such term is ignored rather than blocking.
            affinity: PodAffinityInfo::of(pod).ok().flatten(),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            never_preempts: spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never"),
            terminating: !m.deletion_timestamp.is_empty(),
            volume_affinity: Vec::new(),
            waiting_claims: Vec::new(),
        }
    }

    /// Everything the filters and scores read.
    pub fn new(pod: &Pod) -> Result<PodInfo, InvalidPod> {
        let mut info = PodInfo::accounting(pod);
        let Some(spec) = pod.spec.as_ref() else {
            return Ok(info);
        };
        info.node_selector = spec.node_selector.clone();
        if let Some(na) = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()) {
            info.required_affinity = na.required_during_scheduling_ignored_during_execution.clone();
            info.preferred_affinity = na.preferred_during_scheduling_ignored_during_execution.clone();
        }
        info.tolerations = spec.tolerations.clone();
        if !is_best_effort(spec) {
            // As Kubernetes does: Guaranteed and Burstable pods are taken to cope with a
            // node's memory pressure, so only new BestEffort pods are kept off it
            // (CheckNodeMemoryPressure); disk pressure keeps every pod off.
            info.tolerations.push(Toleration {
                key: MEMORY_PRESSURE_TAINT.into(),
                operator: "Exists".into(),
                value: String::new(),
                effect: "NoSchedule".into(),
                toleration_seconds: None,
            });
        }
        info.affinity = PodAffinityInfo::of(pod)?;
        for (i, c) in spec.topology_spread_constraints.iter().enumerate() {
            let field = format!("spec.topologySpreadConstraints[{i}]");
            if c.max_skew < 1 {
                return Err(InvalidPod(format!(
                    "{field}.maxSkew must be at least 1 (got {})",
                    c.max_skew
                )));
            }
            if c.topology_key.is_empty() {
                return Err(InvalidPod(format!("{field}.topologyKey must not be empty")));
            }
            let selector = match &c.label_selector {
                Some(ls) => Some(
                    Selector::from_label_selector(ls)
                        .map_err(|e| InvalidPod(format!("{field}.labelSelector: {e}")))?,
                ),
                None => None,
            };
            info.spread.push(SpreadConstraint {
                max_skew: c.max_skew,
                topology_key: c.topology_key.clone(),
                hard: c.when_unsatisfiable != "ScheduleAnyway",
                selector,
            });
        }
        Ok(info)
    }
}
