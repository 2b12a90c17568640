//! The disruption controller: keeps each PodDisruptionBudget's status saying how many of
//! its pods may be disrupted now, which the eviction subresource spends, as Kubernetes'
//! disruption controller does.
//!
//! * **Expected pods.** With `maxUnavailable`, or `minAvailable` as a percentage, the
//!   scale of the pods' controllers (a Deployment's replicas for its ReplicaSets' pods, a
//!   ReplicaSet's or StatefulSet's own), each counted once. Unlike Kubernetes, which
//!   refuses to compute a budget over pods without such a controller, a pod without one
//!   counts as itself: a budget over a few bare pods still protects them. With
//!   `minAvailable` as a number, the pods the selector matches.
//! * **Healthy pods.** Ready and not being deleted, less those an eviction has just
//!   claimed (`status.disruptedPods`) and whose deletion has not been seen yet; a claim the
//!   pod never honoured expires after two minutes, as in Kubernetes.
//! * **Status.** `expectedPods`, `desiredHealthy`, `currentHealthy`,
//!   `disruptionsAllowed` (healthy above desired, never negative), `observedGeneration`,
//!   and the `DisruptionAllowed` condition (SufficientPods or InsufficientPods).

use super::workload::{
    self, controller_ref, is_deleting, is_ready, parse_time, write_status, NAMESPACE_INDEX,
};
use super::Error;
use crate::{Context, Shutdown};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use rkube_api::core::v1::Pod;
use rkube_api::meta::v1::Condition;
use rkube_api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use rkube_api::selector::Selector;
use rkube_api::Resource;
use rkube_client::{Action, Api, Controller, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "disruption";

/// How long an eviction's claim on a pod (`status.disruptedPods`) stands without the
/// pod's deletion being seen (Kubernetes' DeletionTimeout).
const DELETION_TIMEOUT: chrono::Duration = chrono::Duration::minutes(2);

struct State {
    ctx: Arc<Context>,
    budgets: Store<PodDisruptionBudget>,
    pods: Store<Pod>,
    replicasets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let pdb_informer = ctx.informers.get::<PodDisruptionBudget>();
        let pod_informer = ctx.informers.get::<Pod>();
        let rs_informer = ctx.informers.get::<ReplicaSet>();
        let deploy_informer = ctx.informers.get::<Deployment>();
        let sts_informer = ctx.informers.get::<StatefulSet>();
        let budgets = pdb_informer.store();
        budgets.add_index(NAMESPACE_INDEX, workload::namespace_index::<PodDisruptionBudget>);
        let pods = pod_informer.store();
        pods.add_index(NAMESPACE_INDEX, workload::namespace_index::<Pod>);
        // A pod concerns the budgets that select it; a scale change every budget of its
        // namespace (cheap: budgets are few).
        let pod_mapper = {
            let budgets = budgets.clone();
            move |pod: &Pod| {
                in_namespace(&budgets, pod.namespace())
                    .into_iter()
                    .filter(|b| selector(b).is_some_and(|s| s.matches(&pod.metadata().labels)))
                    .map(|b| b.key())
                    .collect::<Vec<_>>()
            }
        };
        let scale_mapper = |budgets: Store<PodDisruptionBudget>| {
            move |ns: &str| {
                in_namespace(&budgets, ns)
                    .iter()
                    .map(|b| b.key())
                    .collect::<Vec<_>>()
            }
        };
        let rs_map = scale_mapper(budgets.clone());
        let deploy_map = scale_mapper(budgets.clone());
        let sts_map = scale_mapper(budgets.clone());
        let workers = ctx.config.workers;
        let state = Arc::new(State {
            ctx,
            budgets,
            pods,
            replicasets: rs_informer.store(),
            deployments: deploy_informer.store(),
            statefulsets: sts_informer.store(),
        });
        Controller::new(NAME, state, reconcile)
            .primary(&pdb_informer)
            .watches(&pod_informer, pod_mapper)
            .watches(&rs_informer, move |rs: &ReplicaSet| rs_map(rs.namespace()))
            .watches(&deploy_informer, move |d: &Deployment| deploy_map(d.namespace()))
            .watches(&sts_informer, move |s: &StatefulSet| sts_map(s.namespace()))
            .workers(workers)
            .resync(Duration::from_secs(300))
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

fn in_namespace(budgets: &Store<PodDisruptionBudget>, ns: &str) -> Vec<Arc<PodDisruptionBudget>> {
    budgets.by_index(NAMESPACE_INDEX, ns).unwrap_or_default()
}

/// policy/v1: no selector selects nothing, an empty one every pod of the namespace.
fn selector(pdb: &PodDisruptionBudget) -> Option<Selector> {
    let sel = pdb.spec.as_ref()?.selector.as_ref()?;
    Selector::from_label_selector(sel).ok()
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let Some(pdb) = state.budgets.get(&key) else {
        return Ok(Action::await_change());
    };
    if is_deleting(pdb.metadata()) {
        return Ok(Action::await_change());
    }
    let pods: Vec<Arc<Pod>> = match selector(&pdb) {
        Some(sel) => state
            .pods
            .by_index(NAMESPACE_INDEX, pdb.namespace())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| sel.matches(&p.metadata().labels))
            .collect(),
        None => Vec::new(),
    };
    let now = Utc::now();
    let (status, recheck) = compute(&pdb, &pods, |pod| expected_scale(&state, pod), now)?;
    let api: Api<PodDisruptionBudget> = Api::namespaced(state.ctx.client.clone(), pdb.namespace());
    write_status(&api, &pdb, |p| p.status = Some(status)).await?;
    Ok(match recheck {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// What a pod's controller wants: `(controller uid, replicas)`, or None when the pod has
/// no scalable controller (it then counts as one pod).
fn expected_scale(state: &State, pod: &Pod) -> Option<(String, i32)> {
    let owner = controller_ref(pod.metadata())?;
    let ns = pod.namespace();
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let rs = state.replicasets.get_namespaced(ns, &owner.name)?;
            if rs.metadata().uid != owner.uid {
                return None;
            }
            if let Some(d) = controller_ref(rs.metadata()).filter(|r| r.kind == "Deployment") {
                let deploy = state.deployments.get_namespaced(ns, &d.name)?;
                return Some((d.uid.clone(), deploy.spec.as_ref()?.replicas.unwrap_or(1)));
            }
            Some((owner.uid.clone(), rs.spec.as_ref()?.replicas.unwrap_or(1)))
        }
        "StatefulSet" => {
            let sts = state.statefulsets.get_namespaced(ns, &owner.name)?;
            (sts.metadata().uid == owner.uid).then(|| {
                (
                    owner.uid.clone(),
                    sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                )
            })
        }
        _ => None,
    }
}

/// The budget's status over `pods` at `now`, and when to look again (the next claim in
/// `disruptedPods` to expire).
fn compute(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    scale: impl Fn(&Pod) -> Option<(String, i32)>,
    now: DateTime<Utc>,
) -> Result<(PodDisruptionBudgetStatus, Option<Duration>), Error> {
    let spec = pdb.spec.clone().unwrap_or_default();
    let what = format!("PodDisruptionBudget {}", pdb.key());
    let expected_from_scale = || {
        let mut controllers: BTreeMap<String, i32> = BTreeMap::new();
        let mut bare = 0;
        for pod in pods {
            match scale(pod) {
                Some((uid, replicas)) => {
                    controllers.insert(uid, replicas);
                }
                None if !workload::is_terminal(pod) => bare += 1,
                None => {}
            }
        }
        controllers.values().sum::<i32>() + bare
    };
    let (expected, desired) = if let Some(max) = &spec.max_unavailable {
        let expected = expected_from_scale();
        let unavailable = max
            .scaled_value(expected, true)
            .map_err(|e| Error::Invalid(format!("{what}: spec.maxUnavailable: {e}")))?;
        (expected, (expected - unavailable).max(0))
    } else if let Some(min) = &spec.min_available {
        if min.as_str().is_some() {
            let expected = expected_from_scale();
            let desired = min
                .scaled_value(expected, true)
                .map_err(|e| Error::Invalid(format!("{what}: spec.minAvailable: {e}")))?;
            (expected, desired)
        } else {
            let expected = pods.iter().filter(|p| !workload::is_terminal(p)).count() as i32;
            (expected, min.scaled_value(0, true).unwrap_or(0))
        }
    } else {
        // Neither set: minAvailable 1, as policy/v1beta1 defaulted it (a budget that
        // protects nothing, Kubernetes' policy/v1 reading, helps no one)
        let expected = pods.iter().filter(|p| !workload::is_terminal(p)).count() as i32;
        (expected, 1)
    };

    // claims of evictions whose deletion has not been seen yet
    let old = pdb.status.clone().unwrap_or_default();
    let by_name: BTreeMap<&str, &Pod> = pods.iter().map(|p| (p.name(), p.as_ref())).collect();
    let mut disrupted = BTreeMap::new();
    let mut recheck: Option<Duration> = None;
    for (name, at) in &old.disrupted_pods {
        let Some(pod) = by_name.get(name.as_str()) else {
            continue;
        };
        if is_deleting(pod.metadata()) {
            continue;
        }
        let Some(expires) = parse_time(at).map(|t| t + DELETION_TIMEOUT) else {
            continue;
        };
        if expires <= now {
            continue;
        }
        disrupted.insert(name.clone(), at.clone());
        let left = (expires - now).to_std().unwrap_or_default();
        recheck = Some(recheck.map_or(left, |r| r.min(left)));
    }
    let claimed: BTreeSet<&str> = disrupted.keys().map(String::as_str).collect();
    let healthy = pods
        .iter()
        .filter(|p| is_ready(p) && !is_deleting(p.metadata()) && !claimed.contains(p.name()))
        .count() as i32;
    let allowed = if expected <= 0 {
        0
    } else {
        (healthy - desired).max(0)
    };
    let generation = pdb.metadata().generation;
    let (cond_status, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let previous = old.conditions.iter().find(|c| c.r#type == "DisruptionAllowed");
    let condition = Condition {
        r#type: "DisruptionAllowed".into(),
        status: cond_status.into(),
        observed_generation: generation,
        last_transition_time: match previous {
            Some(c) if c.status == cond_status => c.last_transition_time.clone(),
            _ => workload::format_time(now),
        },
        reason: reason.into(),
        message: String::new(),
    };
    let mut conditions: Vec<Condition> = old
        .conditions
        .iter()
        .filter(|c| c.r#type != "DisruptionAllowed")
        .cloned()
        .collect();
    conditions.push(condition);
    Ok((
        PodDisruptionBudgetStatus {
            observed_generation: generation,
            disrupted_pods: disrupted,
            disruptions_allowed: allowed,
            current_healthy: healthy,
            desired_healthy: desired,
            expected_pods: expected,
            conditions,
        },
        recheck,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::workload::testing::{pod, ready};
    use rkube_api::intstr::IntOrString;
    use rkube_api::policy::v1::PodDisruptionBudgetSpec;

    fn budget(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        let mut pdb = PodDisruptionBudget {
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                ..Default::default()
            }),
            ..Default::default()
        };
        pdb.metadata_mut().generation = 3;
        pdb
    }

    fn now() -> DateTime<Utc> {
        parse_time("2026-01-01T00:10:00Z").unwrap()
    }

    fn pods(ready_count: usize, pending: usize) -> Vec<Arc<Pod>> {
        let mut out = Vec::new();
        for i in 0..ready_count {
            out.push(Arc::new(ready(
                pod(&format!("r{i}"), &[]),
                "2026-01-01T00:00:00Z",
            )));
        }
        for i in 0..pending {
            out.push(Arc::new(pod(&format!("p{i}"), &[])));
        }
        out
    }

    #[test]
    fn min_available_as_a_number_counts_matching_pods() {
        let (s, _) = compute(
            &budget(Some(IntOrString::int(2)), None),
            &pods(3, 1),
            |_| None,
            now(),
        )
        .unwrap();
        assert_eq!(
            (
                s.expected_pods,
                s.desired_healthy,
                s.current_healthy,
                s.disruptions_allowed
            ),
            (4, 2, 3, 1)
        );
        assert_eq!(s.observed_generation, 3);
        let c = &s.conditions[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "SufficientPods"));
    }

    #[test]
    fn percentages_and_max_unavailable_follow_the_controllers_scale() {
        // three ready pods of a Deployment that wants four
        let scale = |_: &Pod| Some(("deploy-uid".to_string(), 4));
        let (s, _) = compute(
            &budget(Some(IntOrString::string("50%")), None),
            &pods(3, 0),
            scale,
            now(),
        )
        .unwrap();
        assert_eq!(
            (s.expected_pods, s.desired_healthy, s.disruptions_allowed),
            (4, 2, 1)
        );
        let (s, _) = compute(
            &budget(None, Some(IntOrString::int(1))),
            &pods(3, 0),
            scale,
            now(),
        )
        .unwrap();
        assert_eq!(
            (s.expected_pods, s.desired_healthy, s.disruptions_allowed),
            (4, 3, 0)
        );
        let c = &s.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InsufficientPods")
        );
        // 25% of 4 unavailable rounds up to 1
        let (s, _) = compute(
            &budget(None, Some(IntOrString::string("25%"))),
            &pods(4, 0),
            scale,
            now(),
        )
        .unwrap();
        assert_eq!((s.desired_healthy, s.disruptions_allowed), (3, 1));
    }

    #[test]
    fn an_evicted_pod_is_not_healthy_until_its_claim_expires() {
        let mut pdb = budget(Some(IntOrString::int(1)), None);
        let mut status = PodDisruptionBudgetStatus::default();
        status
            .disrupted_pods
            .insert("r0".into(), "2026-01-01T00:09:30Z".into());
        status
            .disrupted_pods
            .insert("gone".into(), "2026-01-01T00:09:30Z".into());
        pdb.status = Some(status);
        let (s, recheck) = compute(&pdb, &pods(2, 0), |_| None, now()).unwrap();
        assert_eq!((s.current_healthy, s.disruptions_allowed), (1, 0));
        assert_eq!(s.disrupted_pods.keys().collect::<Vec<_>>(), vec!["r0"]);
        assert_eq!(recheck, Some(Duration::from_secs(90)));
        let later = parse_time("2026-01-01T00:12:00Z").unwrap();
        let (s, _) = compute(&pdb, &pods(2, 0), |_| None, later).unwrap();
        assert_eq!((s.current_healthy, s.disruptions_allowed), (2, 1));
        assert!(s.disrupted_pods.is_empty());
    }
}
