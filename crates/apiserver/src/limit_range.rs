//! LimitRange admission (Kubernetes' LimitRanger) for new pods: the namespace's
//! LimitRanges of type Container give containers that state no request or limit their
//! `defaultRequest` and `default` (noted in the `kubernetes.io/limit-ranger` annotation),
//! then `min`, `max` and `maxLimitRequestRatio` are checked per Container and, for type
//! Pod, over the pod's sum, with Kubernetes' messages. Runs before quota, so that quota
//! charges what the defaults filled in.

use crate::error::{ApiError, ApiResult};
use crate::handlers::{self, storage_prefix};
use crate::State;
use rkube_api::core::v1::{Container, LimitRange, LimitRangeItem, Pod};
use rkube_api::quantity::Quantity;
use rkube_api::Resource;
use std::collections::BTreeMap;

pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// Applies the namespace's LimitRanges to a new pod; Forbidden names what is out of range.
pub fn admit_create<K: Resource>(state: &State, obj: &mut K) -> ApiResult<()> {
    let Some(pod) = (obj as &mut dyn std::any::Any).downcast_mut::<Pod>() else {
        return Ok(());
    };
    let info = LimitRange::info();
    let list = state
        .store
        .list(&storage_prefix(info, &pod.metadata().namespace), None, 0, None)
        .map_err(|e| ApiError::from_store(e, info, ""))?;
    if list.items.is_empty() {
        return Ok(());
    }
    let ranges = list
        .items
        .iter()
        .map(handlers::decode_stored::<LimitRange>)
        .collect::<ApiResult<Vec<_>>>()?;
    admit_pod(&ranges, pod).map_err(|why| ApiError::forbidden_object(Pod::info(), pod.name(), &why))
}

/// The pure part: defaults, then checks; the error is Kubernetes' aggregate message.
pub fn admit_pod(ranges: &[LimitRange], pod: &mut Pod) -> Result<(), String> {
    let items: Vec<&LimitRangeItem> = ranges
        .iter()
        .filter_map(|r| r.spec.as_ref())
        .flat_map(|s| &s.limits)
        .collect();
    let mut notes = Vec::new();
    if let Some(spec) = pod.spec.as_mut() {
        for item in items.iter().filter(|i| i.r#type == "Container") {
            for c in &mut spec.init_containers {
                notes.extend(apply_defaults(item, c, "init container"));
            }
            for c in &mut spec.containers {
                notes.extend(apply_defaults(item, c, "container"));
            }
        }
    }
    if !notes.is_empty() {
        pod.metadata_mut().annotations.insert(
            ANNOTATION.into(),
            format!("LimitRanger plugin set: {}", notes.join("; ")),
        );
    }
    let mut errors = Vec::new();
    let spec = pod.spec.clone().unwrap_or_default();
    for item in &items {
        match item.r#type.as_str() {
            "Container" => {
                for c in spec.init_containers.iter().chain(&spec.containers) {
                    let (requests, limits) = c
                        .resources
                        .as_ref()
                        .map(|r| (r.requests.clone(), r.limits.clone()))
                        .unwrap_or_default();
                    check(
                        item,
                        "Container",
                        &amounts(&requests),
                        &amounts(&limits),
                        &mut errors,
                    );
                }
            }
            "Pod" => {
                let (requests, limits) = pod_totals(&spec.containers, &spec.init_containers);
                check(item, "Pod", &requests, &limits, &mut errors);
            }
            _ => {}
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

/// Fills what the container lacks from the item's defaults; returns the annotation's
/// notes (`cpu, memory request for container app`).
fn apply_defaults(item: &LimitRangeItem, c: &mut Container, what: &str) -> Vec<String> {
    let r = c.resources.get_or_insert_with(Default::default);
    let mut set_requests = Vec::new();
    for (k, v) in &item.default_request {
        if !r.requests.contains_key(k) {
            r.requests.insert(k.clone(), v.clone());
            set_requests.push(k.clone());
        }
    }
    let mut set_limits = Vec::new();
    for (k, v) in &item.default {
        if !r.limits.contains_key(k) {
            r.limits.insert(k.clone(), v.clone());
            set_limits.push(k.clone());
        }
    }
    let mut notes = Vec::new();
    if !set_requests.is_empty() {
        notes.push(format!(
            "{} request for {what} {}",
            set_requests.join(", "),
            c.name
        ));
    }
    if !set_limits.is_empty() {
        notes.push(format!("{} limit for {what} {}", set_limits.join(", "), c.name));
    }
    notes
}

/// Observed amounts, keeping the quantity as written for messages.
type Observed = BTreeMap<String, (i128, String)>;

fn amounts(map: &BTreeMap<String, Quantity>) -> Observed {
    map.iter()
        .filter_map(|(k, q)| q.nanos().ok().map(|n| (k.clone(), (n, q.to_string()))))
        .collect()
}

/// A pod's requests and limits: the sum over containers, or an init container's if
/// larger. A limit counts only if every container states it.
fn pod_totals(containers: &[Container], init: &[Container]) -> (Observed, Observed) {
    let mut out = (Observed::new(), Observed::new());
    for (limits, target) in [(false, &mut out.0), (true, &mut out.1)] {
        let get = |c: &Container, k: &str| {
            c.resources
                .as_ref()
                .and_then(|r| if limits { &r.limits } else { &r.requests }.get(k))
                .and_then(|q| q.nanos().ok())
        };
        let keys: std::collections::BTreeSet<String> = containers
            .iter()
            .chain(init)
            .filter_map(|c| c.resources.as_ref())
            .flat_map(|r| if limits { &r.limits } else { &r.requests }.keys().cloned())
            .collect();
        for k in keys {
            if limits && containers.iter().any(|c| get(c, &k).is_none()) {
                continue;
            }
            let sum: i128 = containers.iter().filter_map(|c| get(c, &k)).sum();
            let max_init = init.iter().filter_map(|c| get(c, &k)).max().unwrap_or(0);
            let total = sum.max(max_init);
            target.insert(
                k.clone(),
                (total, rkube_api::quota::quantity(&k, total).to_string()),
            );
        }
    }
    out
}

/// Kubernetes' minConstraint, maxConstraint and limitRequestRatioConstraint.
fn check(
    item: &LimitRangeItem,
    kind: &str,
    requests: &Observed,
    limits: &Observed,
    errors: &mut Vec<String>,
) {
    for (r, min) in &item.min {
        let Ok(m) = min.nanos() else { continue };
        match (requests.get(r), limits.get(r)) {
            (None, _) => errors.push(format!(
                "minimum {r} usage per {kind} is {min}.  No request is specified"
            )),
            (Some((req, shown)), _) if *req < m => errors.push(format!(
                "minimum {r} usage per {kind} is {min}, but request is {shown}"
            )),
            (_, Some((lim, shown))) if *lim < m => errors.push(format!(
                "minimum {r} usage per {kind} is {min}, but limit is {shown}"
            )),
            _ => {}
        }
    }
    for (r, max) in &item.max {
        let Ok(m) = max.nanos() else { continue };
        match (requests.get(r), limits.get(r)) {
            (_, None) => errors.push(format!(
                "maximum {r} usage per {kind} is {max}.  No limit is specified"
            )),
            (_, Some((lim, shown))) if *lim > m => errors.push(format!(
                "maximum {r} usage per {kind} is {max}, but limit is {shown}"
            )),
            (Some((req, shown)), _) if *req > m => errors.push(format!(
                "maximum {r} usage per {kind} is {max}, but request is {shown}"
            )),
            _ => {}
        }
    }
    for (r, ratio) in &item.max_limit_request_ratio {
        let Ok(max_ratio) = ratio.nanos() else { continue };
        match (requests.get(r), limits.get(r)) {
            (None, _) | (Some((0, _)), _) => errors.push(format!(
                "{r} max limit to request ratio per {kind} is {ratio}, but no request is specified or request is 0"
            )),
            (_, None) | (_, Some((0, _))) => errors.push(format!(
                "{r} max limit to request ratio per {kind} is {ratio}, but no limit is specified or limit is 0"
            )),
            (Some((req, _)), Some((lim, _))) => {
                let observed = *lim as f64 / *req as f64;
                if observed * 1e9 > max_ratio as f64 {
                    errors.push(format!(
                        "{r} max limit to request ratio per {kind} is {ratio}, but provided ratio is {observed:.6}"
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::core::v1::{LimitRangeSpec, PodSpec, ResourceRequirements};

    fn q(kv: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), Quantity::new(*v)))
            .collect()
    }

    fn range(item: LimitRangeItem) -> LimitRange {
        LimitRange {
            spec: Some(LimitRangeSpec { limits: vec![item] }),
            ..Default::default()
        }
    }

    fn pod(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Pod {
        let mut p = Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    resources: Some(ResourceRequirements {
                        requests: q(requests),
                        limits: q(limits),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        p.metadata_mut().name = "web".into();
        p
    }

    #[test]
    fn defaults_fill_what_containers_leave_out_and_are_noted() {
        let lr = range(LimitRangeItem {
            r#type: "Container".into(),
            default: q(&[("cpu", "500m"), ("memory", "256Mi")]),
            default_request: q(&[("cpu", "100m"), ("memory", "128Mi")]),
            ..Default::default()
        });
        let mut p = pod(&[("cpu", "200m")], &[]);
        admit_pod(&[lr], &mut p).unwrap();
        let r = p.spec.unwrap().containers[0].resources.clone().unwrap();
        assert_eq!(r.requests["cpu"].to_string(), "200m", "a stated request stays");
        assert_eq!(r.requests["memory"].to_string(), "128Mi");
        assert_eq!(r.limits["cpu"].to_string(), "500m");
        assert_eq!(
            p.metadata.unwrap().annotations[ANNOTATION],
            "LimitRanger plugin set: memory request for container app; cpu, memory limit for container app"
        );
    }

    #[test]
    fn max_min_and_ratio_speak_kubernetes() {
        let lr = range(LimitRangeItem {
            r#type: "Container".into(),
            max: q(&[("cpu", "1")]),
            min: q(&[("memory", "64Mi")]),
            max_limit_request_ratio: q(&[("cpu", "2")]),
            ..Default::default()
        });
        let mut p = pod(&[("cpu", "1"), ("memory", "64Mi")], &[("cpu", "2")]);
        assert_eq!(
            admit_pod(std::slice::from_ref(&lr), &mut p).unwrap_err(),
            "maximum cpu usage per Container is 1, but limit is 2"
        );
        let mut p = pod(&[("cpu", "100m"), ("memory", "32Mi")], &[("cpu", "1")]);
        assert_eq!(
            admit_pod(std::slice::from_ref(&lr), &mut p).unwrap_err(),
            "[minimum memory usage per Container is 64Mi, but request is 32Mi, cpu max limit to request ratio per Container is 2, but provided ratio is 10.000000]"
        );
        let mut p = pod(&[("cpu", "500m"), ("memory", "64Mi")], &[("cpu", "1")]);
        admit_pod(&[lr], &mut p).unwrap();
    }

    #[test]
    fn a_pod_limit_is_checked_over_its_containers() {
        let lr = range(LimitRangeItem {
            r#type: "Pod".into(),
            max: q(&[("memory", "1Gi")]),
            ..Default::default()
        });
        let mut p = pod(&[], &[("memory", "768Mi")]);
        let spec = p.spec.as_mut().unwrap();
        let mut second = spec.containers[0].clone();
        second.name = "sidecar".into();
        spec.containers.push(second);
        assert_eq!(
            admit_pod(&[lr], &mut p).unwrap_err(),
            "maximum memory usage per Pod is 1Gi, but limit is 1536Mi"
        );
    }
}
