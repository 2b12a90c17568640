//! What an object costs a ResourceQuota, as Kubernetes' quota evaluators count it: the
//! apiserver charges it at admission and the resourcequota controller recomputes the sum.
//!
//! * Every kind counts as `count/<plural>.<group>` (`count/deployments.apps`,
//!   `count/pods` for the core group); the core kinds also under their older names
//!   (`pods`, `services`, `configmaps`, `secrets`, `persistentvolumeclaims`,
//!   `replicationcontrollers`, `resourcequotas`).
//! * A pod that has not ended also costs `requests.cpu`, `requests.memory` (`cpu` and
//!   `memory` are the same), `limits.cpu` and `limits.memory`: the sum over its containers,
//!   or an init container's if larger, as Kubernetes counts a pod's requests.
//!
//! Amounts are nano-units (`Quantity::nanos`) so CPU millicores and memory bytes add up
//! exactly.

use crate::core::v1::{Container, Pod, PodSpec, ResourceQuota};
use crate::quantity::Quantity;
use crate::{Resource, ResourceInfo};
use std::collections::BTreeMap;

/// Resource name → amount in nano-units.
pub type Usage = BTreeMap<String, i128>;

const NANO: i128 = 1_000_000_000;

/// The compute resources a pod is charged for.
pub const POD_COMPUTE: &[&str] = &[
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
    "cpu",
    "memory",
];

/// The names a kind is counted under in `spec.hard`.
pub fn count_names(info: &ResourceInfo) -> Vec<String> {
    let mut names = vec![if info.group.is_empty() {
        format!("count/{}", info.plural)
    } else {
        format!("count/{}.{}", info.plural, info.group)
    }];
    if info.group.is_empty()
        && matches!(
            info.plural,
            "pods"
                | "services"
                | "configmaps"
                | "secrets"
                | "persistentvolumeclaims"
                | "replicationcontrollers"
                | "resourcequotas"
        )
    {
        names.push(info.plural.to_string());
    }
    names
}

/// Whether a pod still holds its share: it has not ended (Succeeded or Failed), and is
/// not past the end of its deletion grace period (`now` is RFC 3339, as timestamps are).
pub fn pod_counts(pod: &Pod, now: &str) -> bool {
    let phase = pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed") {
        return false;
    }
    let deletion = &pod.metadata().deletion_timestamp;
    // RFC 3339 UTC timestamps compare in time order as strings
    deletion.is_empty() || deletion.as_str() > now
}

/// What `obj` costs when it is created (pods also their compute resources).
pub fn usage<K: Resource>(obj: &K) -> Usage {
    let mut u = Usage::new();
    for name in count_names(K::info()) {
        u.insert(name, NANO);
    }
    if let Some(pod) = (obj as &dyn std::any::Any).downcast_ref::<Pod>() {
        if let Some(spec) = &pod.spec {
            for (name, amount) in pod_compute(spec) {
                u.insert(name, amount);
            }
        }
    }
    u
}

/// A pod's requests and limits under their quota names.
pub fn pod_compute(spec: &PodSpec) -> Usage {
    let mut u = Usage::new();
    for (prefix, limits) in [("requests", false), ("limits", true)] {
        for resource in ["cpu", "memory"] {
            let amount = |c: &Container| -> i128 {
                c.resources
                    .as_ref()
                    .and_then(|r| if limits { &r.limits } else { &r.requests }.get(resource))
                    .and_then(|q| q.nanos().ok())
                    .unwrap_or(0)
            };
            let sum: i128 = spec.containers.iter().map(amount).sum();
            let init = spec.init_containers.iter().map(amount).max().unwrap_or(0);
            let total = sum.max(init);
            u.insert(format!("{prefix}.{resource}"), total);
            if !limits {
                u.insert(resource.to_string(), total);
            }
        }
    }
    u
}

/// Kubernetes' rule from before QoS classes: a quota on `requests.cpu` (or `cpu`,
/// `limits.memory`, ...) needs every container to state it. The message lists what is
/// missing, for which containers (`requests.cpu for: app,sidecar; limits.memory for: app`).
pub fn missing_compute(spec: &PodSpec, hard: &BTreeMap<String, Quantity>) -> Option<String> {
    let mut missing: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for name in POD_COMPUTE.iter().filter(|n| hard.contains_key(**n)) {
        let (limits, resource) = match name.split_once('.') {
            Some(("limits", r)) => (true, r),
            Some((_, r)) => (false, r),
            None => (false, *name),
        };
        for c in &spec.containers {
            let has = c
                .resources
                .as_ref()
                .is_some_and(|r| if limits { &r.limits } else { &r.requests }.contains_key(resource));
            if !has {
                missing.entry(name).or_default().push(&c.name);
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .into_iter()
        .map(|(name, mut containers)| {
            containers.sort();
            containers.dedup();
            format!("{name} for: {}", containers.join(","))
        })
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// Whether the quota's scopes (Terminating, NotTerminating, BestEffort, NotBestEffort)
/// take in `obj`: a scoped quota only counts pods.
pub fn in_scope<K: Resource>(quota: &ResourceQuota, obj: &K) -> bool {
    let scopes = quota
        .spec
        .as_ref()
        .map(|s| s.scopes.as_slice())
        .unwrap_or_default();
    if scopes.is_empty() {
        return true;
    }
    let Some(pod) = (obj as &dyn std::any::Any).downcast_ref::<Pod>() else {
        return false;
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let terminating = spec.active_deadline_seconds.is_some();
    let best_effort = spec.init_containers.iter().chain(&spec.containers).all(|c| {
        c.resources
            .as_ref()
            .is_none_or(|r| r.requests.is_empty() && r.limits.is_empty())
    });
    scopes.iter().all(|s| match s.as_str() {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort,
        "NotBestEffort" => !best_effort,
        _ => false,
    })
}

/// An amount written as Kubernetes would: millicores for CPU, binary suffixes for
/// memory and storage, whole numbers for counts.
pub fn quantity(name: &str, nanos: i128) -> Quantity {
    let whole = |n: i128| i64::try_from((n + NANO - 1).div_euclid(NANO)).unwrap_or(i64::MAX);
    if name == "cpu" || name.ends_with(".cpu") {
        let millis = (nanos + 999_999).div_euclid(1_000_000);
        Quantity::from_millis(i64::try_from(millis).unwrap_or(i64::MAX))
    } else if name == "memory" || name.ends_with(".memory") || name.ends_with("storage") {
        Quantity::from_bytes(whole(nanos))
    } else {
        Quantity::new(whole(nanos).to_string())
    }
}

/// A quota map read as amounts (unparseable quantities, refused by validation, as 0).
pub fn amounts(map: &BTreeMap<String, Quantity>) -> Usage {
    map.iter()
        .map(|(k, q)| (k.clone(), q.nanos().unwrap_or(0)))
        .collect()
}

/// `pods=1,requests.cpu=500m`: a quota message's list, sorted by name.
pub fn pretty(usage: &Usage) -> String {
    usage
        .iter()
        .map(|(k, v)| format!("{k}={}", quantity(k, *v)))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::v1::Deployment;
    use crate::core::v1::{ConfigMap, ResourceRequirements};

    fn container(name: &str, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), Quantity::new(*v)))
                .collect()
        };
        Container {
            name: name.into(),
            resources: Some(ResourceRequirements {
                requests: map(requests),
                limits: map(limits),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn kinds_count_under_their_names() {
        assert_eq!(count_names(Deployment::info()), vec!["count/deployments.apps"]);
        assert_eq!(
            count_names(ConfigMap::info()),
            vec!["count/configmaps", "configmaps"]
        );
        let u = usage(&ConfigMap::default());
        assert_eq!(pretty(&u), "configmaps=1,count/configmaps=1");
    }

    #[test]
    fn a_pod_costs_its_containers_sum_or_its_largest_init_container() {
        let spec = PodSpec {
            containers: vec![
                container("a", &[("cpu", "250m"), ("memory", "64Mi")], &[("cpu", "1")]),
                container("b", &[("cpu", "250m"), ("memory", "64Mi")], &[]),
            ],
            init_containers: vec![container("init", &[("cpu", "2")], &[])],
            ..Default::default()
        };
        let u = pod_compute(&spec);
        assert_eq!(quantity("requests.cpu", u["requests.cpu"]).to_string(), "2");
        assert_eq!(quantity("memory", u["memory"]).to_string(), "128Mi");
        assert_eq!(quantity("limits.cpu", u["limits.cpu"]).to_string(), "1");
        let mut hard = BTreeMap::new();
        hard.insert("limits.cpu".to_string(), Quantity::new("4"));
        hard.insert("requests.memory".to_string(), Quantity::new("1Gi"));
        assert_eq!(
            missing_compute(&spec, &hard).as_deref(),
            Some("must specify limits.cpu for: b")
        );
    }

    #[test]
    fn ended_and_expired_pods_hold_nothing() {
        let mut p = Pod::default();
        assert!(pod_counts(&p, "2026-01-01T00:00:00Z"));
        p.metadata_mut().deletion_timestamp = "2026-01-01T00:00:30Z".into();
        assert!(pod_counts(&p, "2026-01-01T00:00:00Z"));
        assert!(!pod_counts(&p, "2026-01-01T00:01:00Z"));
        p.metadata_mut().deletion_timestamp.clear();
        p.status.get_or_insert_with(Default::default).phase = "Succeeded".into();
        assert!(!pod_counts(&p, "2026-01-01T00:00:00Z"));
    }
}
