//! The `pods/eviction` subresource: a pod is deleted unless a PodDisruptionBudget that
//! covers it allows no disruption now, as Kubernetes' eviction REST
//! (`pkg/registry/core/pod/storage/eviction.go`) decides:
//!
//! * a pod that is Pending, Succeeded, Failed or already being deleted goes without
//!   asking any budget (it disrupts nothing more);
//! * no budget selects the pod: it is deleted; more than one: 500, Kubernetes does not
//!   support that;
//! * a budget the disruption controller has not caught up with (`observedGeneration`
//!   behind) or that allows no disruption answers 429 TooManyRequests with a
//!   `DisruptionBudget` cause naming it: clients wait and retry (`rkubectl drain`);
//! * otherwise the budget's `status.disruptionsAllowed` is decremented and the pod noted
//!   in `status.disruptedPods`, written with the budget's resourceVersion so that two
//!   concurrent evictions cannot both spend the last allowed disruption, then the pod is
//!   deleted with the eviction's DeleteOptions;
//! * a pod that is Running but not ready costs no budget while the budget has enough
//!   healthy pods without it; it is deleted only if it is still the pod that was judged
//!   (resourceVersion precondition).

use crate::error::{ApiError, ApiResult};
use crate::handlers::{self, storage_key, storage_prefix};
use crate::State;
use rkube_api::core::v1::Pod;
use rkube_api::meta::v1::{Condition, Preconditions};
use rkube_api::policy::v1::PodDisruptionBudget;
use rkube_api::rpc;
use rkube_api::selector::Selector;
use rkube_api::Resource;
use rkube_store::StoreError;
use std::sync::Arc;

/// Kubernetes' message for an eviction a budget forbids.
pub const VIOLATES_BUDGET: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// Kubernetes' `policyv1.DisruptionBudgetCause`.
const DISRUPTION_BUDGET_CAUSE: &str = "DisruptionBudget";

/// Kubernetes refuses evictions once this many are unconfirmed by the controller.
const MAX_DISRUPTED_PODS: usize = 2000;

/// How often a budget write that lost a race is tried again before giving up.
const CONFLICT_RETRIES: usize = 20;

pub async fn evict(state: Arc<State>, req: rpc::EvictRequest) -> ApiResult<()> {
    let info = Pod::info();
    let namespace = if req.namespace.is_empty() {
        "default".to_string()
    } else {
        req.namespace.clone()
    };
    let eviction = req.eviction.unwrap_or_default();
    if let Some(m) = &eviction.metadata {
        if !m.name.is_empty() && m.name != req.name {
            return Err(ApiError::bad_request(format!(
                "name in URL does not match name in Eviction object: {:?} is not {:?}",
                req.name, m.name
            )));
        }
    }
    let options = eviction.delete_options.unwrap_or_default();
    let dry_run = options.dry_run.iter().any(|d| d == "All");
    let key = storage_key(info, &namespace, &req.name);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let kv = handlers::read(&state, &key, info, &req.name)?;
        let pod: Pod = handlers::decode_stored(&kv)?;
        let decision = if can_ignore_budget(&pod) {
            Decision::Delete { precondition: false }
        } else {
            match budget_for(&state, &pod)? {
                None => Decision::Delete { precondition: false },
                Some(budget) => match spend(&state, &pod, budget, dry_run).await {
                    Err(e) if e.reason == "Conflict" && attempts < CONFLICT_RETRIES => continue,
                    other => other?,
                },
            }
        };
        let Decision::Delete { precondition } = decision;
        let mut preconditions = options.preconditions.clone();
        if precondition {
            // the pod must still be the unready one that was judged
            let p = preconditions.get_or_insert_with(Preconditions::default);
            p.resource_version = kv.mod_revision.to_string();
        }
        let delete = rpc::DeleteRequest {
            resource: None,
            namespace: namespace.clone(),
            name: req.name.clone(),
            preconditions,
            propagation_policy: options.propagation_policy.clone(),
            grace_period_seconds: options.grace_period_seconds,
            dry_run,
        };
        return handlers::delete::<Pod>(state, delete).await.map(|_| ());
    }
}

enum Decision {
    /// Delete the pod; `precondition`: only at the revision that was judged.
    Delete { precondition: bool },
}

/// Pods whose eviction disrupts nothing more: not running yet, finished, or going.
fn can_ignore_budget(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    matches!(phase, "Succeeded" | "Failed" | "Pending" | "") || !pod.metadata().deletion_timestamp.is_empty()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// The one budget selecting `pod`, with its stored revision; an error if several do.
fn budget_for(state: &State, pod: &Pod) -> ApiResult<Option<(PodDisruptionBudget, u64)>> {
    let info = PodDisruptionBudget::info();
    let list = state
        .store
        .list(&storage_prefix(info, pod.namespace()), None, 0, None)
        .map_err(|e| ApiError::from_store(e, info, ""))?;
    let mut found = Vec::new();
    for kv in &list.items {
        let pdb: PodDisruptionBudget = handlers::decode_stored(kv)?;
        if selects(&pdb, pod) {
            found.push((pdb, kv.mod_revision));
        }
    }
    if found.len() > 1 {
        return Err(ApiError::internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    Ok(found.pop())
}

/// policy/v1: a budget without a selector selects nothing, an empty one every pod of its
/// namespace.
pub fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    Selector::from_label_selector(sel).is_ok_and(|s| s.matches(&pod.metadata().labels))
}

/// Decides under `budget` and, when the eviction costs a disruption, writes the budget
/// with one fewer allowed (Conflict if it changed since it was read).
async fn spend(
    state: &State,
    pod: &Pod,
    (mut pdb, revision): (PodDisruptionBudget, u64),
    dry_run: bool,
) -> ApiResult<Decision> {
    let name = pdb.name().to_string();
    let status = pdb.status.clone().unwrap_or_default();
    let always_allow = pdb
        .spec
        .as_ref()
        .and_then(|s| s.unhealthy_pod_eviction_policy.as_deref())
        == Some("AlwaysAllow");
    if !is_ready(pod)
        && (always_allow || (status.current_healthy >= status.desired_healthy && status.desired_healthy > 0))
    {
        // an unready pod is not one of the healthy pods the budget protects
        return Ok(Decision::Delete { precondition: true });
    }
    if status.observed_generation < pdb.metadata().generation {
        return Err(ApiError::too_many_requests(VIOLATES_BUDGET).with_cause(
            DISRUPTION_BUDGET_CAUSE,
            format!("The disruption budget {name} is still being processed by the server."),
        ));
    }
    let pdb_info = PodDisruptionBudget::info();
    if status.disruptions_allowed < 0 {
        return Err(ApiError::forbidden_object(
            pdb_info,
            &name,
            "pdb disruptions allowed is negative",
        ));
    }
    if status.disrupted_pods.len() > MAX_DISRUPTED_PODS {
        return Err(ApiError::forbidden_object(
            pdb_info,
            &name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if status.disruptions_allowed == 0 {
        return Err(ApiError::too_many_requests(VIOLATES_BUDGET).with_cause(
            DISRUPTION_BUDGET_CAUSE,
            format!(
                "The disruption budget {name} needs {} healthy pods and has {} currently",
                status.desired_healthy, status.current_healthy
            ),
        ));
    }
    if dry_run {
        return Ok(Decision::Delete { precondition: false });
    }
    let s = pdb.status.get_or_insert_with(Default::default);
    s.disruptions_allowed -= 1;
    if s.disruptions_allowed == 0 {
        set_disruption_allowed(
            &mut s.conditions,
            pdb.metadata.as_ref().map_or(0, |m| m.generation),
        );
    }
    s.disrupted_pods.insert(pod.name().to_string(), handlers::now());
    let key = storage_key(pdb_info, pdb.namespace(), &name);
    match state
        .store
        .put(&key, handlers::encode_for_store(&pdb)?, Some(revision))
        .await
    {
        Ok(_) => Ok(Decision::Delete { precondition: false }),
        Err(StoreError::Conflict { .. }) => Err(ApiError::stale(pdb_info, &name)),
        Err(e) => Err(ApiError::from_store(e, pdb_info, &name)),
    }
}

/// The budget's `DisruptionAllowed` condition once the last disruption is spent.
fn set_disruption_allowed(conditions: &mut Vec<Condition>, generation: i32) {
    let now = handlers::now();
    let changed = !conditions
        .iter()
        .any(|c| c.r#type == "DisruptionAllowed" && c.status == "False");
    let old = conditions
        .iter()
        .find(|c| c.r#type == "DisruptionAllowed")
        .map(|c| c.last_transition_time.clone());
    conditions.retain(|c| c.r#type != "DisruptionAllowed");
    conditions.push(Condition {
        r#type: "DisruptionAllowed".into(),
        status: "False".into(),
        reason: "InsufficientPods".into(),
        message: String::new(),
        observed_generation: generation,
        last_transition_time: if changed { now } else { old.unwrap_or(now) },
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::meta::v1::LabelSelector;
    use rkube_api::policy::v1::PodDisruptionBudgetSpec;

    fn pod(phase: &str, labels: &[(&str, &str)]) -> Pod {
        let mut p = Pod::default();
        p.status.get_or_insert_with(Default::default).phase = phase.into();
        for (k, v) in labels {
            p.metadata_mut().labels.insert(k.to_string(), v.to_string());
        }
        p
    }

    #[test]
    fn pods_that_are_not_running_or_are_going_skip_the_budget() {
        assert!(can_ignore_budget(&pod("Pending", &[])));
        assert!(can_ignore_budget(&pod("Succeeded", &[])));
        assert!(can_ignore_budget(&pod("Failed", &[])));
        assert!(!can_ignore_budget(&pod("Running", &[])));
        let mut going = pod("Running", &[]);
        going.metadata_mut().deletion_timestamp = "2026-01-01T00:00:00Z".into();
        assert!(can_ignore_budget(&going));
    }

    #[test]
    fn a_budget_without_selector_selects_nothing_an_empty_one_everything() {
        let p = pod("Running", &[("app", "web")]);
        let mut pdb = PodDisruptionBudget {
            spec: Some(PodDisruptionBudgetSpec::default()),
            ..Default::default()
        };
        assert!(!selects(&pdb, &p));
        pdb.spec.as_mut().unwrap().selector = Some(LabelSelector::default());
        assert!(selects(&pdb, &p));
        let mut sel = LabelSelector::default();
        sel.match_labels.insert("app".into(), "db".into());
        pdb.spec.as_mut().unwrap().selector = Some(sel);
        assert!(!selects(&pdb, &p));
    }
}
