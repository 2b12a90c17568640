//! What the plugins need of the pod being scheduled, worked out once per
//! attempt instead of once per node.

use crate::resources::{pod_non_zero_requests, pod_requests, Resources};
use rkube_api::core::v1::{NodeSelector, Pod, PreferredSchedulingTerm, Toleration};
use rkube_api::selector::Selector;
use rkube_api::Resource;
use std::collections::BTreeMap;

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
