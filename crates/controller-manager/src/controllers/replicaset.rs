//! The ReplicaSet controller: keeps exactly `spec.replicas` active pods
//! matching each ReplicaSet's selector. It adopts matching orphans,
//! releases pods whose labels stopped matching, replaces terminal pods,
//! creates from the template, deletes the least valuable pods first on
//! scale-down, and reports replicas, fullyLabeledReplicas, readyReplicas,
//! availableReplicas and observedGeneration.
//!
//! Writes are followed by expectations (see `expectations`): a ReplicaSet
//! acts again only once the cache shows its previous writes, so a lagging
//! cache never makes it create or delete twice.

use super::expectations::{Expectations, Readiness};
use super::workload::{
    self, availability, controller_ref, controller_reference, is_active, is_deleting, is_terminal,
    NAMESPACE_INDEX,
};
use super::Error;
use crate::{Context, Shutdown};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use rkube_api::core::v1::Pod;
use rkube_api::meta::v1::ObjectMeta;
use rkube_api::selector::Selector;
use rkube_api::Resource;
use rkube_client::runtime::controller_owner_keys;
use rkube_client::{Action, Api, Controller, DeleteParams, EventType, Preconditions, Store};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "replicaset";

/// At most this many pods are created or deleted per reconcile
/// (Kubernetes' burstReplicas).
const BURST: usize = 500;

struct State {
    ctx: Arc<Context>,
    replicasets: Store<ReplicaSet>,
    pods: Store<Pod>,
    expectations: Arc<Expectations>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let rs_informer = ctx.informers.get::<ReplicaSet>();
        let pod_informer = ctx.informers.get::<Pod>();
        let replicasets = rs_informer.store();
        let pods = pod_informer.store();
        replicasets.add_index(NAMESPACE_INDEX, workload::namespace_index::<ReplicaSet>);
        pods.add_index(NAMESPACE_INDEX, workload::namespace_index::<Pod>);
        let expectations = Arc::new(Expectations::default());
        let mapper = {
            let replicasets = replicasets.clone();
            let expectations = expectations.clone();
            move |pod: &Pod| {
                let owners = controller_owner_keys::<ReplicaSet, Pod>(pod);
                for key in &owners {
                    expectations.observed_create(key, pod.name());
                }
                if !owners.is_empty() || controller_ref(pod.metadata()).is_some() {
                    return owners;
                }
                // An orphan wakes every ReplicaSet that could adopt it.
                matching_replicasets(&replicasets, pod)
            }
        };
        let workers = ctx.config.workers;
        let state = Arc::new(State {
            ctx,
            replicasets,
            pods,
            expectations,
        });
        Controller::new(NAME, state, reconcile)
            .primary(&rs_informer)
            .watches(&pod_informer, mapper)
            .workers(workers)
            .resync(Duration::from_secs(300))
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

fn matching_replicasets(replicasets: &Store<ReplicaSet>, pod: &Pod) -> Vec<String> {
    let Ok(candidates) = replicasets.by_index(NAMESPACE_INDEX, pod.namespace()) else {
        return Vec::new();
    };
    candidates
        .iter()
        .filter(|rs| {
            workload::selector_of(rs.spec.as_ref().and_then(|s| s.selector.as_ref()), "")
                .is_ok_and(|sel| sel.matches(&pod.metadata().labels))
        })
        .map(|rs| rs.key())
        .collect()
}

/// Which pods of the namespace a ReplicaSet owns, and which ownership
/// changes it must make (Kubernetes' PodControllerRefManager).
#[derive(Debug, Default)]
pub struct Claim {
    pub owned: Vec<Arc<Pod>>,
    pub adopt: Vec<Arc<Pod>>,
    pub release: Vec<Arc<Pod>>,
}

pub fn claim(rs: &ReplicaSet, selector: &Selector, pods: &[Arc<Pod>]) -> Claim {
    let uid = &rs.metadata().uid;
    let rs_deleting = is_deleting(rs.metadata());
    let mut c = Claim::default();
    for pod in pods {
        let matches = selector.matches(&pod.metadata().labels);
        match controller_ref(pod.metadata()) {
            Some(r) if &r.uid == uid => {
                if matches {
                    c.owned.push(pod.clone());
                } else if !rs_deleting && !is_deleting(pod.metadata()) {
                    c.release.push(pod.clone());
                }
            }
            Some(_) => {}
            None => {
                if matches && !rs_deleting && !is_deleting(pod.metadata()) {
                    c.adopt.push(pod.clone());
                }
            }
        }
    }
    c
}

/// What a ReplicaSet must do about its pods now.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: usize,
    /// Pods to delete: terminal ones (to be replaced), then the surplus.
    pub delete: Vec<String>,
}

/// The decision from the owned pods alone (`now` for readiness age).
pub fn plan(replicas: i32, owned: &[Arc<Pod>], now: DateTime<Utc>) -> Plan {
    let mut plan = Plan::default();
    let replicas = usize::try_from(replicas.max(0)).unwrap_or(0);
    for p in owned
        .iter()
        .filter(|p| is_terminal(p) && !is_deleting(p.metadata()))
    {
        plan.delete.push(p.name().to_string());
    }
    let mut active: Vec<&Arc<Pod>> = owned.iter().filter(|p| is_active(p)).collect();
    if active.len() < replicas {
        plan.create = (replicas - active.len()).min(BURST);
    } else if active.len() > replicas {
        let surplus = (active.len() - replicas).min(BURST);
        active.sort_by(|a, b| deletion_order(a, b, now));
        plan.delete
            .extend(active[..surplus].iter().map(|p| p.name().to_string()));
    }
    plan
}

/// Scale-down order, Kubernetes' `ActivePods` ranking: the pod that costs
/// least to lose comes first — unscheduled before scheduled, Pending before
/// Unknown before Running, not ready before ready, ready for less time,
/// more restarts, then newer.
pub fn deletion_order(a: &Pod, b: &Pod, _now: DateTime<Utc>) -> Ordering {
    let scheduled = |p: &Pod| p.spec.as_ref().is_some_and(|s| !s.node_name.is_empty());
    let phase_rank = |p: &Pod| match p.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("") {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    };
    let restarts = |p: &Pod| -> i32 {
        p.status
            .as_ref()
            .map(|s| s.container_statuses.iter().map(|c| c.restart_count).sum())
            .unwrap_or(0)
    };
    let created = |p: &Pod| workload::parse_time(&p.metadata().creation_timestamp);
    scheduled(a)
        .cmp(&scheduled(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| workload::is_ready(a).cmp(&workload::is_ready(b)))
        // Ready more recently first (a later time sorts first).
        .then_with(|| {
            let since = |p: &Pod| workload::ready_since(p).flatten();
            since(b).cmp(&since(a))
        })
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| created(b).cmp(&created(a)))
        .then_with(|| a.name().cmp(b.name()))
}

/// The status the owned pods give, and when an unavailable ready pod turns
/// available (so the ReplicaSet is looked at again then).
pub fn status(
    rs: &ReplicaSet,
    owned: &[Arc<Pod>],
    now: DateTime<Utc>,
) -> (ReplicaSetStatus, Option<Duration>) {
    let spec = rs.spec.clone().unwrap_or_default();
    let template_labels: BTreeMap<String, String> = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .map(|m| m.labels.clone())
        .unwrap_or_default();
    let mut s = ReplicaSetStatus {
        observed_generation: rs.metadata().generation,
        conditions: rs
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    let mut next = None::<Duration>;
    for p in owned.iter().filter(|p| is_active(p)) {
        s.replicas += 1;
        if template_labels
            .iter()
            .all(|(k, v)| p.metadata().labels.get(k) == Some(v))
        {
            s.fully_labeled_replicas += 1;
        }
        if workload::is_ready(p) {
            s.ready_replicas += 1;
        }
        match availability(p, spec.min_ready_seconds, now) {
            (true, _) => s.available_replicas += 1,
            (false, Some(after)) => next = Some(next.map_or(after, |n| n.min(after))),
            (false, None) => {}
        }
    }
    (s, next)
}

/// A pod from the ReplicaSet's template, owned by it.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    // Generated names add 5 characters; keep within 63.
    let mut prefix = format!("{}-", rs.name());
    if prefix.len() > 58 {
        prefix.truncate(58);
    }
    Pod {
        metadata: Some(ObjectMeta {
            generate_name: prefix,
            namespace: rs.namespace().to_string(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: vec![controller_reference(rs)],
            ..Default::default()
        }),
        spec: template.spec,
        ..Default::default()
    }
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let Some(rs) = state.replicasets.get(&key) else {
        state.expectations.forget(&key);
        return Ok(Action::await_change());
    };
    let selector = match workload::selector_of(
        rs.spec.as_ref().and_then(|s| s.selector.as_ref()),
        &format!("replicaset {key}"),
    ) {
        Ok(s) => s,
        Err(e) => {
            // Validation should have refused it; nothing to do until it
            // changes.
            tracing::warn!(%key, error = %e, "not managing pods");
            return Ok(Action::await_change());
        }
    };
    let pods_api: Api<Pod> = Api::namespaced(state.ctx.client.clone(), rs.namespace());
    let ns_pods = state
        .pods
        .by_index(NAMESPACE_INDEX, rs.namespace())
        .unwrap_or_default();
    let claim = claim(&rs, &selector, &ns_pods);
    let mut owned = claim.owned;
    if !claim.adopt.is_empty() {
        // Kubernetes re-reads the owner before adopting: a ReplicaSet that
        // was deleted (or replaced under the same name) must not adopt.
        let fresh = Api::<ReplicaSet>::namespaced(state.ctx.client.clone(), rs.namespace())
            .get_opt(rs.name())
            .await?;
        let current =
            fresh.is_some_and(|f| f.metadata().uid == rs.metadata().uid && !is_deleting(f.metadata()));
        if current {
            for pod in &claim.adopt {
                let mut p = (**pod).clone();
                p.metadata_mut().owner_references.push(controller_reference(&*rs));
                match pods_api.update(&p).await {
                    Ok(updated) => owned.push(Arc::new(updated)),
                    Err(e) if e.is_not_found() || e.is_conflict() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    for pod in &claim.release {
        let mut p = (**pod).clone();
        let uid = rs.metadata().uid.clone();
        p.metadata_mut().owner_references.retain(|r| r.uid != uid);
        match pods_api.update(&p).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
    }

    let pods = state.pods.clone();
    let ns = rs.namespace().to_string();
    let readiness = state.expectations.check(
        &key,
        |name| pods.get_namespaced(&ns, name).is_some(),
        |uid| {
            !owned
                .iter()
                .any(|p| p.metadata().uid == uid && !is_deleting(p.metadata()))
        },
    );
    let now = Utc::now();
    let mut outcome: Result<(), Error> = Ok(());
    let mut requeue = None;
    if is_deleting(rs.metadata()) {
        // Being deleted (foreground): the garbage collector removes the
        // pods; recreating them would fight it.
    } else if let Readiness::Waiting(after) = readiness {
        requeue = Some(after);
    } else {
        let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let plan = plan(replicas, &owned, now);
        outcome = apply(&state, &rs, &key, &owned, plan, &pods_api).await;
    }

    let (mut status, available_in) = status(&rs, &owned, now);
    set_replica_failure(&mut status, &outcome, now);
    if rs.status.as_ref() != Some(&status) {
        let mut updated = (*rs).clone();
        updated.status = Some(status);
        match Api::<ReplicaSet>::namespaced(state.ctx.client.clone(), rs.namespace())
            .update_status(&updated)
            .await
        {
            Ok(_) => {}
            // A newer ReplicaSet is on its way through the cache and will
            // be reconciled again.
            Err(e) if e.is_conflict() || e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    outcome?;
    let after = [requeue, available_in].into_iter().flatten().min();
    Ok(after.map_or(Action::await_change(), Action::requeue))
}

/// Kubernetes' ReplicaFailure condition: True while creating or deleting pods fails (with
/// the apiserver's reason, so `describe` says why the replicas are missing), removed once a
/// sync goes through.
fn set_replica_failure(status: &mut ReplicaSetStatus, outcome: &Result<(), Error>, now: DateTime<Utc>) {
    match outcome {
        Err(e) => {
            let (reason, message) = match e {
                Error::Manage { reason, message } => (*reason, message.clone()),
                other => ("FailedCreate", other.to_string()),
            };
            let transition = status
                .conditions
                .iter()
                .find(|c| c.r#type == "ReplicaFailure" && c.status == "True")
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| super::workload::format_time(now));
            status.conditions.retain(|c| c.r#type != "ReplicaFailure");
            status.conditions.push(ReplicaSetCondition {
                r#type: "ReplicaFailure".into(),
                status: "True".into(),
                last_transition_time: transition,
                reason: reason.into(),
                message,
            });
        }
        Ok(()) => status.conditions.retain(|c| c.r#type != "ReplicaFailure"),
    }
}

async fn apply(
    state: &State,
    rs: &ReplicaSet,
    key: &str,
    owned: &[Arc<Pod>],
    plan: Plan,
    pods_api: &Api<Pod>,
) -> Result<(), Error> {
    if !plan.delete.is_empty() {
        let victims: Vec<&Arc<Pod>> = plan
            .delete
            .iter()
            .filter_map(|n| owned.iter().find(|p| p.name() == n))
            .collect();
        state
            .expectations
            .expect_deletes(key, victims.iter().map(|p| p.metadata().uid.clone()));
        let results = futures::future::join_all(victims.iter().map(|p| {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(p.metadata().uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            async move { (p, pods_api.delete(p.name(), &dp).await) }
        }))
        .await;
        let mut first_error = None;
        for (p, r) in results {
            match r {
                Ok(_) => {
                    let msg = format!("Deleted pod: {}", p.name());
                    publish(state, rs, EventType::Normal, "SuccessfulDelete", &msg).await;
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    let msg = format!("Error deleting: {e}");
                    publish(state, rs, EventType::Warning, "FailedDelete", &msg).await;
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(Error::Manage {
                reason: "FailedDelete",
                message: e.to_string(),
            });
        }
    }
    let mut stop = None;
    let template = pod_from_template(rs);
    for round in create_rounds(plan.create, replica_failure(rs)) {
        let (created, error) = create_round(pods_api, &template, round).await;
        state.expectations.expect_creates(key, created.iter().cloned());
        // Off the create path, as Kubernetes' recorder is: a thousand creates must not wait
        // for a thousand Event writes one after the other.
        publish_created(state, rs, created);
        if let Some(e) = error {
            stop = Some(e);
            break;
        }
    }
    if let Some(e) = stop {
        let msg = format!("Error creating: {e}");
        publish(state, rs, EventType::Warning, "FailedCreate", &msg).await;
        return Err(Error::Manage {
            reason: "FailedCreate",
            message: e.to_string(),
        });
    }
    Ok(())
}

/// Whether the ReplicaSet's last sync failed to create or delete (its ReplicaFailure
/// condition).
fn replica_failure(rs: &ReplicaSet) -> bool {
    rs.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "ReplicaFailure" && c.status == "True")
    })
}

/// The rounds in which `count` creates are made, each waiting for the one before. A
/// ReplicaSet whose creates are failing keeps Kubernetes' slow start (1, 2, 4, ...), so a
/// refused template or an exhausted quota costs a few calls per sync, not hundreds; a
/// healthy one makes one create to check the template goes through, then the rest at once
/// (at most [`CREATE_IN_FLIGHT`] in flight), instead of 18 rounds for 1,000 pods.
pub fn create_rounds(count: usize, failing: bool) -> Vec<usize> {
    let mut rounds = Vec::new();
    let mut remaining = count;
    let mut batch = 1;
    while remaining > 0 {
        let n = batch.min(remaining);
        rounds.push(n);
        remaining -= n;
        batch = if failing { batch * 2 } else { remaining };
    }
    rounds
}

/// Creates in flight at once within a round.
const CREATE_IN_FLIGHT: usize = 64;

/// Creates `n` pods from `template`, [`CREATE_IN_FLIGHT`] at a time; after the first error
/// no new create starts, but those in flight finish (a create dropped mid-call could make
/// a pod no expectation accounts for). Returns the names created and the first error.
async fn create_round(
    pods_api: &Api<Pod>,
    template: &Pod,
    n: usize,
) -> (Vec<String>, Option<rkube_client::Error>) {
    use futures::StreamExt;
    use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
    let failed = AtomicBool::new(false);
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|_| async {
            if failed.load(AtomicOrdering::Relaxed) {
                return None;
            }
            let r = pods_api.create(template).await;
            if r.is_err() {
                failed.store(true, AtomicOrdering::Relaxed);
            }
            Some(r)
        })
        .buffer_unordered(CREATE_IN_FLIGHT)
        .collect()
        .await;
    let mut created = Vec::new();
    let mut error = None;
    for r in results.into_iter().flatten() {
        match r {
            Ok(p) => created.push(p.name().to_string()),
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    (created, error)
}

/// `SuccessfulCreate` events for `names`, written in the background.
fn publish_created(state: &State, rs: &ReplicaSet, names: Vec<String>) {
    if names.is_empty() {
        return;
    }
    let recorder = state.ctx.recorder.clone();
    let involved = rkube_client::object_reference(rs);
    tokio::spawn(async move {
        use futures::StreamExt;
        futures::stream::iter(names)
            .for_each_concurrent(8, |name| {
                let (recorder, involved) = (&recorder, &involved);
                async move {
                    let msg = format!("Created pod: {name}");
                    if let Err(e) = recorder
                        .event(involved, EventType::Normal, "SuccessfulCreate", &msg)
                        .await
                    {
                        tracing::debug!(pod = %name, error = %e, "cannot record event");
                    }
                }
            })
            .await;
    });
}

async fn publish(state: &State, rs: &ReplicaSet, t: EventType, reason: &str, msg: &str) {
    if let Err(e) = state.ctx.recorder.publish(rs, t, reason, msg).await {
        tracing::debug!(replicaset = %rs.key(), error = %e, "cannot record event");
    }
}

#[cfg(test)]
mod tests {
    use super::super::workload::testing::{pod, ready};
    use super::*;
    use rkube_api::apps::v1::ReplicaSetSpec;
    use rkube_api::core::v1::PodTemplateSpec;
    use rkube_api::meta::v1::LabelSelector;

    fn rs(replicas: i32) -> ReplicaSet {
        let mut rs = ReplicaSet {
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                selector: Some(LabelSelector {
                    match_labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: [
                            ("app".to_string(), "web".to_string()),
                            ("tier".to_string(), "fe".to_string()),
                        ]
                        .into(),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                min_ready_seconds: 0,
            }),
            ..Default::default()
        };
        let m = rs.metadata_mut();
        m.name = "web".into();
        m.namespace = "ns".into();
        m.uid = "rs-uid".into();
        m.generation = 3;
        rs
    }

    fn owned(mut p: Pod, owner: &ReplicaSet) -> Arc<Pod> {
        p.metadata_mut()
            .owner_references
            .push(controller_reference(owner));
        Arc::new(p)
    }

    fn now() -> DateTime<Utc> {
        workload::parse_time("2024-01-01T01:00:00Z").unwrap()
    }

    #[test]
    fn creates_the_missing_and_replaces_terminal_pods() {
        let r = rs(3);
        let mut failed = pod("f", &[("app", "web")]);
        failed.status.as_mut().unwrap().phase = "Failed".into();
        let pods = vec![owned(pod("a", &[("app", "web")]), &r), owned(failed, &r)];
        let p = plan(3, &pods, now());
        assert_eq!(p.create, 2, "the failed pod does not count");
        assert_eq!(p.delete, ["f"]);
    }

    #[test]
    fn scale_down_removes_unscheduled_then_not_ready_then_newest() {
        let r = rs(1);
        let mut scheduled_old = ready(pod("ready-old", &[("app", "web")]), "2024-01-01T00:00:00Z");
        scheduled_old.spec.as_mut().unwrap().node_name = "n1".into();
        let mut scheduled_new = ready(pod("ready-new", &[("app", "web")]), "2024-01-01T00:30:00Z");
        scheduled_new.spec.as_mut().unwrap().node_name = "n1".into();
        let mut not_ready = pod("not-ready", &[("app", "web")]);
        not_ready.spec.as_mut().unwrap().node_name = "n1".into();
        not_ready.status.as_mut().unwrap().phase = "Running".into();
        let unscheduled = pod("unscheduled", &[("app", "web")]);
        let pods: Vec<Arc<Pod>> = [scheduled_old, scheduled_new, not_ready, unscheduled]
            .into_iter()
            .map(|p| owned(p, &r))
            .collect();
        assert_eq!(
            plan(1, &pods, now()).delete,
            ["unscheduled", "not-ready", "ready-new"]
        );
        assert_eq!(plan(3, &pods, now()).delete, ["unscheduled"]);

        let mut newer = pod("newer", &[("app", "web")]);
        newer.metadata_mut().creation_timestamp = "2024-01-01T00:10:00Z".into();
        let pods = vec![owned(pod("older", &[("app", "web")]), &r), owned(newer, &r)];
        assert_eq!(plan(1, &pods, now()).delete, ["newer"]);
    }

    #[test]
    fn pods_being_deleted_do_not_count() {
        let r = rs(2);
        let mut going = pod("going", &[("app", "web")]);
        going.metadata_mut().deletion_timestamp = "2024-01-01T00:00:00Z".into();
        let pods = vec![owned(pod("a", &[("app", "web")]), &r), owned(going, &r)];
        assert_eq!(
            plan(2, &pods, now()),
            Plan {
                create: 1,
                delete: vec![]
            }
        );
    }

    #[test]
    fn claim_adopts_orphans_releases_mismatches_and_ignores_others() {
        let r = rs(3);
        let sel = workload::selector_of(r.spec.as_ref().unwrap().selector.as_ref(), "").unwrap();
        let mut other = pod("other", &[("app", "web")]);
        other
            .metadata_mut()
            .owner_references
            .push(rkube_api::meta::v1::OwnerReference {
                uid: "someone-else".into(),
                controller: Some(true),
                ..Default::default()
            });
        let pods = vec![
            owned(pod("mine", &[("app", "web")]), &r),
            owned(pod("relabeled", &[("app", "db")]), &r),
            Arc::new(pod("orphan", &[("app", "web")])),
            Arc::new(pod("stranger", &[("app", "db")])),
            Arc::new(other),
        ];
        let c = claim(&r, &sel, &pods);
        let names = |v: &[Arc<Pod>]| v.iter().map(|p| p.name().to_string()).collect::<Vec<_>>();
        assert_eq!(names(&c.owned), ["mine"]);
        assert_eq!(names(&c.adopt), ["orphan"]);
        assert_eq!(names(&c.release), ["relabeled"]);
    }

    #[test]
    fn status_counts_labels_readiness_and_availability() {
        let mut r = rs(3);
        r.spec.as_mut().unwrap().min_ready_seconds = 60;
        let pods = vec![
            owned(
                ready(
                    pod("long", &[("app", "web"), ("tier", "fe")]),
                    "2024-01-01T00:00:00Z",
                ),
                &r,
            ),
            owned(
                ready(pod("recent", &[("app", "web")]), "2024-01-01T00:59:30Z"),
                &r,
            ),
            owned(pod("pending", &[("app", "web"), ("tier", "fe")]), &r),
        ];
        let (s, next) = status(&r, &pods, now());
        assert_eq!(
            (
                s.replicas,
                s.fully_labeled_replicas,
                s.ready_replicas,
                s.available_replicas,
                s.observed_generation
            ),
            (3, 2, 2, 1, 3)
        );
        assert_eq!(
            next,
            Some(Duration::from_secs(30)),
            "look again when `recent` becomes available"
        );
    }

    #[test]
    fn pods_come_from_the_template_with_a_controller_reference() {
        let p = pod_from_template(&rs(1));
        let m = p.metadata();
        assert_eq!(m.generate_name, "web-");
        assert_eq!(m.labels.get("tier").map(String::as_str), Some("fe"));
        let r = &m.owner_references[0];
        assert_eq!(
            (
                r.api_version.as_str(),
                r.kind.as_str(),
                r.uid.as_str(),
                r.controller,
                r.block_owner_deletion
            ),
            ("apps/v1", "ReplicaSet", "rs-uid", Some(true), Some(true))
        );
    }

    #[test]
    fn healthy_sets_create_in_two_rounds_failing_ones_start_slow() {
        assert_eq!(create_rounds(500, false), [1, 499]);
        assert_eq!(create_rounds(1, false), [1]);
        assert!(create_rounds(0, false).is_empty());
        assert_eq!(
            create_rounds(500, true),
            [1, 2, 4, 8, 16, 32, 64, 128, 245],
            "Kubernetes' slow start after a failed create"
        );
        let mut failing = rs(3);
        failing.status = Some(ReplicaSetStatus::default());
        assert!(!replica_failure(&failing));
        set_replica_failure(
            failing.status.as_mut().unwrap(),
            &Err(Error::Manage {
                reason: "FailedCreate",
                message: "quota".into(),
            }),
            Utc::now(),
        );
        assert!(replica_failure(&failing));
    }

    #[test]
    fn failing_creates_show_as_replica_failure_until_a_sync_succeeds() {
        let now = Utc::now();
        let mut status = ReplicaSetStatus::default();
        let refused: Result<(), Error> = Err(Error::Manage {
            reason: "FailedCreate",
            message: "pods \"web-\" is forbidden: exceeded quota".into(),
        });
        set_replica_failure(&mut status, &refused, now);
        let c = &status.conditions[0];
        assert_eq!(
            (c.r#type.as_str(), c.status.as_str(), c.reason.as_str()),
            ("ReplicaFailure", "True", "FailedCreate")
        );
        assert!(c.message.contains("exceeded quota"), "{}", c.message);
        let first = c.last_transition_time.clone();
        set_replica_failure(&mut status, &refused, now + chrono::Duration::seconds(5));
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(
            status.conditions[0].last_transition_time, first,
            "still failing: same transition"
        );
        set_replica_failure(&mut status, &Ok(()), now);
        assert!(status.conditions.is_empty(), "a successful sync clears it");
    }
}
