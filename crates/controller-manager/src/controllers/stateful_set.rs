//! The StatefulSet controller: pods with stable names `NAME-0 .. NAME-(N-1)` (from
//! `ordinals.start`), each with its own claims from `volumeClaimTemplates`, as Kubernetes'
//! StatefulSet controller keeps them.
//!
//! * **OrderedReady** (the default): pods are created one at a time in ordinal order, each
//!   once every lower one is Running and Ready; scale-down removes the highest ordinal
//!   first, one at a time, and waits for it to be gone. **Parallel** creates and deletes
//!   them all at once.
//! * **Identity.** Each pod gets `hostname` = its name and `subdomain` = `serviceName`, so
//!   the headless Service gives it a stable DNS name, and the labels
//!   `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`.
//! * **Claims** `CLAIM-NAME-ORDINAL` are created before the pod and never replaced with it.
//!   `persistentVolumeClaimRetentionPolicy`: with `whenDeleted: Delete` the claims are owned
//!   by the StatefulSet (the garbage collector removes them with it); with
//!   `whenScaled: Delete` the claims of ordinals scaled away are deleted once their pod is.
//! * **Updates.** Pods carry the template's hash. RollingUpdate replaces outdated pods from
//!   the highest ordinal down, one at a time and only while all are Ready, leaving ordinals
//!   below `partition` alone; OnDelete replaces a pod only when someone deletes it.
//!   `currentRevision` follows `updateRevision` once every pod is updated. Both name
//!   ControllerRevisions (see `history`) holding the templates, so a pod below the partition
//!   that is deleted comes back at the current revision, as in Kubernetes, and `rollout
//!   history`/`undo` work.

use super::daemon_set::REVISION_HASH_LABEL;
use super::deployment::pod_template_hash;
use super::history;
use super::workload::{
    self, availability, controller_ref, controller_reference, is_deleting, write_status, PodControl,
    NAMESPACE_INDEX,
};
use super::Error;
use crate::{Context, Shutdown};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use rkube_api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use rkube_api::meta::v1::ObjectMeta;
use rkube_api::Resource;
use rkube_client::{Action, Api, Controller, DeleteParams, EventType, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "statefulset";

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

struct State {
    ctx: Arc<Context>,
    statefulsets: Store<StatefulSet>,
    pods: Store<Pod>,
    claims: Store<PersistentVolumeClaim>,
    revisions: Store<ControllerRevision>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let sts_informer = ctx.informers.get::<StatefulSet>();
        let pod_informer = ctx.informers.get::<Pod>();
        let claim_informer = ctx.informers.get::<PersistentVolumeClaim>();
        let pods = pod_informer.store();
        pods.add_index(NAMESPACE_INDEX, workload::namespace_index::<Pod>);
        let revision_informer = ctx.informers.get::<ControllerRevision>();
        let revisions = revision_informer.store();
        revisions.add_index(NAMESPACE_INDEX, workload::namespace_index::<ControllerRevision>);
        let claims = claim_informer.store();
        claims.add_index(
            NAMESPACE_INDEX,
            workload::namespace_index::<PersistentVolumeClaim>,
        );
        let workers = ctx.config.workers;
        let state = Arc::new(State {
            ctx,
            statefulsets: sts_informer.store(),
            pods,
            claims,
            revisions,
        });
        Controller::new(NAME, state, reconcile)
            .primary(&sts_informer)
            .watches(
                &pod_informer,
                rkube_client::runtime::controller_owner_keys::<StatefulSet, Pod>,
            )
            .watches(
                &revision_informer,
                rkube_client::runtime::controller_owner_keys::<StatefulSet, ControllerRevision>,
            )
            .workers(workers)
            .resync(Duration::from_secs(300))
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

/// The ordinal in a pod's name `NAME-ORDINAL`.
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

/// The claim of template `claim` for the pod with `ordinal`.
pub fn claim_name(claim: &str, set: &str, ordinal: i32) -> String {
    format!("{claim}-{set}-{ordinal}")
}

/// What the StatefulSet must do now.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Ordinals whose pod (and missing claims) to create.
    pub create: Vec<i32>,
    /// Pods to delete.
    pub delete: Vec<String>,
    /// Claims to delete (`whenScaled: Delete`, their pod gone).
    pub delete_claims: Vec<String>,
    pub status: StatefulSetStatus,
    pub requeue: Option<Duration>,
}

/// The plan for `sts` (template hash `hash`) given the pods it owns and the claims of its
/// namespace, at `now`.
pub fn plan(
    sts: &StatefulSet,
    hash: &str,
    owned: &[Arc<Pod>],
    claims: &BTreeSet<String>,
    now: DateTime<Utc>,
) -> Plan {
    let spec = sts.spec.clone().unwrap_or_default();
    let set = sts.name();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec.ordinals.as_ref().map(|o| o.start).unwrap_or(0);
    let wanted = start..start + replicas;
    let parallel = spec.pod_management_policy == "Parallel";
    let phase = |p: &Pod| p.status.as_ref().map(|s| s.phase.clone()).unwrap_or_default();
    let healthy = |p: &Pod| phase(p) == "Running" && workload::is_ready(p) && !is_deleting(p.metadata());
    let updated = |p: &Pod| p.metadata().labels.get(REVISION_HASH_LABEL).map(String::as_str) == Some(hash);

    let mut by_ordinal: BTreeMap<i32, &Arc<Pod>> = BTreeMap::new();
    for pod in owned {
        if let Some(i) = ordinal_of(set, pod.name()) {
            by_ordinal.insert(i, pod);
        }
    }
    let old = sts.status.clone().unwrap_or_default();
    let mut status = StatefulSetStatus {
        observed_generation: sts.metadata().generation,
        update_revision: format!("{set}-{hash}"),
        current_revision: old.current_revision.clone(),
        collision_count: old.collision_count,
        ..Default::default()
    };
    let mut plan = Plan::default();
    for pod in by_ordinal.values() {
        if is_deleting(pod.metadata()) {
            continue;
        }
        status.replicas += 1;
        if workload::is_ready(pod) {
            status.ready_replicas += 1;
        }
        let (available, after) = availability(pod, spec.min_ready_seconds, now);
        if available {
            status.available_replicas += 1;
        } else if let Some(a) = after {
            plan.requeue = Some(plan.requeue.map_or(a, |r| r.min(a)));
        }
        if updated(pod) {
            status.updated_replicas += 1;
        }
    }

    // Creation and replacement, in ordinal order.
    let mut blocked = false;
    for i in wanted.clone() {
        match by_ordinal.get(&i) {
            None => {
                if !blocked {
                    plan.create.push(i);
                }
                blocked |= !parallel;
            }
            Some(pod) if is_deleting(pod.metadata()) => blocked |= !parallel,
            Some(pod) if matches!(phase(pod).as_str(), "Failed" | "Succeeded") => {
                // A pod that ended is deleted and made again under the same name.
                if !blocked {
                    plan.delete.push(pod.name().to_string());
                }
                blocked |= !parallel;
            }
            Some(pod) => blocked |= !parallel && !healthy(pod),
        }
    }
    // Scale-down, highest ordinal first.
    let condemned: Vec<&&Arc<Pod>> = by_ordinal
        .iter()
        .filter(|(i, _)| !wanted.contains(*i))
        .rev()
        .map(|(_, p)| p)
        .collect();
    let terminating = by_ordinal.values().any(|p| is_deleting(p.metadata()));
    if parallel {
        plan.delete.extend(
            condemned
                .iter()
                .filter(|p| !is_deleting(p.metadata()))
                .map(|p| p.name().to_string()),
        );
    } else if let Some(first) = condemned.first() {
        let others_healthy = wanted
            .clone()
            .all(|i| by_ordinal.get(&i).is_some_and(|p| healthy(p)));
        if !terminating && (others_healthy || !healthy(first)) {
            plan.delete.push(first.name().to_string());
        }
    }
    // Claims of ordinals scaled away.
    let retention = spec
        .persistent_volume_claim_retention_policy
        .clone()
        .unwrap_or_default();
    if retention.when_scaled == "Delete" {
        for template in &spec.volume_claim_templates {
            let claim = template
                .metadata
                .as_ref()
                .map(|m| m.name.as_str())
                .unwrap_or_default();
            for name in claims {
                let Some(rest) = name.strip_prefix(&format!("{claim}-")) else {
                    continue;
                };
                if let Some(i) = ordinal_of(set, rest) {
                    if !wanted.contains(&i) && !by_ordinal.contains_key(&i) {
                        plan.delete_claims.push(name.clone());
                    }
                }
            }
        }
    }

    // Rolling update: the highest outdated ordinal at or above the partition, when nothing
    // else is being created, deleted or unready.
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let all_updated = wanted
        .clone()
        .all(|i| by_ordinal.get(&i).is_some_and(|p| updated(p)));
    if strategy.r#type != "OnDelete" && plan.create.is_empty() && plan.delete.is_empty() && !terminating {
        let partition = partition(sts);
        let all_healthy = wanted
            .clone()
            .all(|i| by_ordinal.get(&i).is_some_and(|p| healthy(p)));
        let outdated = wanted
            .clone()
            .rev()
            .filter(|i| *i >= partition)
            .filter_map(|i| by_ordinal.get(&i))
            .find(|p| !updated(p));
        if let Some(pod) = outdated {
            if all_healthy || parallel {
                plan.delete.push(pod.name().to_string());
            }
        }
    }
    if (all_updated && status.replicas == replicas) || status.current_revision.is_empty() {
        status.current_revision = status.update_revision.clone();
    }
    let current_hash = status
        .current_revision
        .strip_prefix(&format!("{set}-"))
        .unwrap_or_default()
        .to_string();
    status.current_replicas = by_ordinal
        .values()
        .filter(|p| !is_deleting(p.metadata()))
        .filter(|p| p.metadata().labels.get(REVISION_HASH_LABEL) == Some(&current_hash))
        .count() as i32;
    plan.status = status;
    plan
}

/// The ordinal below which a rolling update leaves pods at the current revision (0 for
/// OnDelete, which has no partition).
pub fn partition(sts: &StatefulSet) -> i32 {
    let strategy = sts
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.clone())
        .unwrap_or_default();
    if strategy.r#type == "OnDelete" {
        return 0;
    }
    strategy.rolling_update.and_then(|r| r.partition).unwrap_or(0)
}

/// The pod with `ordinal`, from `template` (hash `hash`), with its claims as volumes.
pub fn pod_for(sts: &StatefulSet, template: &PodTemplateSpec, hash: &str, ordinal: i32) -> Pod {
    let spec = sts.spec.clone().unwrap_or_default();
    let template = template.clone();
    let tm = template.metadata.unwrap_or_default();
    let name = format!("{}-{ordinal}", sts.name());
    let mut labels = tm.labels;
    labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    let mut pod_spec = template.spec.unwrap_or_default();
    pod_spec.hostname = name.clone();
    if !spec.service_name.is_empty() {
        pod_spec.subdomain = spec.service_name.clone();
    }
    for claim in &spec.volume_claim_templates {
        let claim_template = claim
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        pod_spec.volumes.retain(|v| v.name != claim_template);
        pod_spec.volumes.push(Volume {
            name: claim_template.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&claim_template, sts.name(), ordinal),
                read_only: false,
            }),
            ..Default::default()
        });
    }
    Pod {
        metadata: Some(ObjectMeta {
            name,
            namespace: sts.namespace().into(),
            labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: vec![controller_reference(sts)],
            ..Default::default()
        }),
        spec: Some(pod_spec),
        ..Default::default()
    }
}

/// The claims the pod with `ordinal` needs, from the templates.
pub fn claims_for(sts: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let spec = sts.spec.clone().unwrap_or_default();
    let owned_by_set = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .is_some_and(|p| p.when_deleted == "Delete");
    let selector_labels = spec
        .selector
        .as_ref()
        .map(|s| s.match_labels.clone())
        .unwrap_or_default();
    spec.volume_claim_templates
        .iter()
        .map(|t| {
            let tm = t.metadata.clone().unwrap_or_default();
            let mut labels = tm.labels;
            labels.extend(selector_labels.clone());
            PersistentVolumeClaim {
                metadata: Some(ObjectMeta {
                    name: claim_name(&tm.name, sts.name(), ordinal),
                    namespace: sts.namespace().into(),
                    labels,
                    annotations: tm.annotations,
                    owner_references: if owned_by_set {
                        vec![rkube_api::meta::v1::OwnerReference {
                            controller: Some(false),
                            ..controller_reference(sts)
                        }]
                    } else {
                        Vec::new()
                    },
                    ..Default::default()
                }),
                spec: t.spec.clone(),
                ..Default::default()
            }
        })
        .collect()
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let Some(sts) = state.statefulsets.get(&key) else {
        return Ok(Action::await_change());
    };
    let ns = sts.namespace().to_string();
    let uid = sts.metadata().uid.clone();
    let owned: Vec<Arc<Pod>> = state
        .pods
        .by_index(NAMESPACE_INDEX, &ns)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| controller_ref(p.metadata()).is_some_and(|r| r.uid == uid))
        .collect();
    let claims: BTreeSet<String> = state
        .claims
        .by_index(NAMESPACE_INDEX, &ns)
        .unwrap_or_default()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let template = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let hash = pod_template_hash(&template, sts.status.as_ref().and_then(|s| s.collision_count));
    let limit = sts.spec.as_ref().and_then(|s| s.revision_history_limit);
    let revisions = history::sync(
        &state.ctx.client,
        &state.revisions,
        &*sts,
        &template,
        &hash,
        &owned,
        limit,
    )
    .await?;
    let plan = plan(&sts, &hash, &owned, &claims, Utc::now());
    // Below the partition a pod comes back at the current revision (when its template is
    // still known), as Kubernetes' newVersionedStatefulSetPod does.
    let current_hash = sts
        .status
        .as_ref()
        .and_then(|s| s.current_revision.strip_prefix(&format!("{}-", sts.name())))
        .unwrap_or_default();
    let current = revisions
        .iter()
        .filter(|r| current_hash != hash && history::hash_of(r) == Some(current_hash))
        .find_map(|r| rkube_api::revision::template_of(r));
    let partition = partition(&sts);
    let control = PodControl {
        api: Api::namespaced(state.ctx.client.clone(), &ns),
        recorder: &state.ctx.recorder,
        owner: &*sts,
    };
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(state.ctx.client.clone(), &ns);

    if !is_deleting(sts.metadata()) {
        for name in &plan.delete {
            if let Some(pod) = owned.iter().find(|p| p.name() == name) {
                let set = sts.name();
                control
                    .delete(pod, |pod| {
                        format!("delete Pod {pod} in StatefulSet {set} successful")
                    })
                    .await?;
            }
        }
        for ordinal in &plan.create {
            for claim in claims_for(&sts, *ordinal) {
                if claims.contains(claim.name()) {
                    continue;
                }
                match claims_api.create(&claim).await {
                    Ok(_) => {
                        let msg = format!(
                            "create Claim {} Pod {}-{ordinal} in StatefulSet {} success",
                            claim.name(),
                            sts.name(),
                            sts.name()
                        );
                        control.event(EventType::Normal, "SuccessfulCreate", &msg).await;
                    }
                    Err(e) if e.is_already_exists() => {}
                    Err(e) => {
                        let msg = format!("create Claim {} failed error: {e}", claim.name());
                        control.event(EventType::Warning, "FailedCreate", &msg).await;
                        return Err(e.into());
                    }
                }
            }
            // An earlier pod of this name still being deleted makes this a no-op; its
            // deletion wakes the set again.
            let pod = match &current {
                Some(old) if *ordinal < partition => pod_for(&sts, old, current_hash, *ordinal),
                _ => pod_for(&sts, &template, &hash, *ordinal),
            };
            let set = sts.name();
            control
                .create(&pod, |pod| {
                    format!("create Pod {pod} in StatefulSet {set} successful")
                })
                .await?;
        }
        for name in &plan.delete_claims {
            match claims_api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let api = Api::<StatefulSet>::namespaced(state.ctx.client.clone(), &ns);
    write_status(&api, &sts, |s| s.status = Some(plan.status)).await?;
    Ok(plan.requeue.map_or(Action::await_change(), Action::requeue))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::core::v1::{PodCondition, PodStatus};
    use rkube_api::defaults::Defaulting as _;

    fn sts(replicas: i32, extra: &str) -> StatefulSet {
        let yaml = format!(
            "metadata: {{name: web, namespace: default, uid: sts-uid, generation: 1}}\nspec:\n  replicas: {replicas}\n  serviceName: web\n  selector: {{matchLabels: {{app: web}}}}\n{extra}  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: w, image: busybox}}]\n"
        );
        let mut s: StatefulSet = serde_yaml::from_str(&yaml).unwrap();
        s.apply_defaults();
        s
    }

    fn pod(name: &str, hash: &str, ready: bool) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata_mut().name = name.into();
        p.metadata_mut().uid = format!("uid-{name}");
        p.metadata_mut()
            .labels
            .insert(REVISION_HASH_LABEL.into(), hash.into());
        p.status = Some(PodStatus {
            phase: "Running".into(),
            conditions: ready
                .then(|| PodCondition {
                    r#type: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        });
        Arc::new(p)
    }

    fn run(s: &StatefulSet, pods: &[Arc<Pod>]) -> Plan {
        plan(s, "h1", pods, &BTreeSet::new(), Utc::now())
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time_in_order() {
        let s = sts(3, "");
        assert_eq!(run(&s, &[]).create, vec![0]);
        assert_eq!(run(&s, &[pod("web-0", "h1", false)]).create, Vec::<i32>::new());
        assert_eq!(run(&s, &[pod("web-0", "h1", true)]).create, vec![1]);
        let parallel = sts(3, "  podManagementPolicy: Parallel\n");
        assert_eq!(run(&parallel, &[]).create, vec![0, 1, 2]);
    }

    #[test]
    fn scale_down_goes_highest_first_one_at_a_time() {
        let s = sts(2, "");
        let pods = [
            pod("web-0", "h1", true),
            pod("web-1", "h1", true),
            pod("web-2", "h1", true),
            pod("web-3", "h1", true),
        ];
        assert_eq!(run(&s, &pods).delete, vec!["web-3"]);
        let mut going = (*pods[3]).clone();
        going.metadata_mut().deletion_timestamp = "2026-12-06T12:00:00Z".into();
        let pods = [pods[0].clone(), pods[1].clone(), pods[2].clone(), Arc::new(going)];
        assert!(run(&s, &pods).delete.is_empty(), "waits for web-3 to be gone");
    }

    #[test]
    fn rolling_update_goes_from_the_top_and_respects_the_partition() {
        let s = sts(
            3,
            "  updateStrategy: {type: RollingUpdate, rollingUpdate: {partition: 1}}\n",
        );
        let pods = [
            pod("web-0", "old", true),
            pod("web-1", "old", true),
            pod("web-2", "old", true),
        ];
        assert_eq!(run(&s, &pods).delete, vec!["web-2"]);
        let pods = [
            pod("web-0", "old", true),
            pod("web-1", "old", true),
            pod("web-2", "h1", true),
        ];
        assert_eq!(run(&s, &pods).delete, vec!["web-1"]);
        let pods = [
            pod("web-0", "old", true),
            pod("web-1", "h1", true),
            pod("web-2", "h1", true),
        ];
        assert!(run(&s, &pods).delete.is_empty(), "web-0 is below the partition");
        let on_delete = sts(3, "  updateStrategy: {type: OnDelete}\n");
        assert!(run(&on_delete, &[pod("web-0", "old", true)]).delete.is_empty());
    }

    #[test]
    fn pods_have_stable_identities_and_their_own_claims() {
        let s = sts(
            2,
            "  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
        );
        let template = s
            .spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default();
        let p = pod_for(&s, &template, "h1", 1);
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(
            (p.name(), spec.hostname.as_str(), spec.subdomain.as_str()),
            ("web-1", "web-1", "web")
        );
        assert_eq!(p.metadata().labels[POD_NAME_LABEL], "web-1");
        let volume = spec.volumes.iter().find(|v| v.name == "data").unwrap();
        assert_eq!(
            volume.persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-web-1"
        );
        let claims = claims_for(&s, 1);
        assert_eq!(claims[0].name(), "data-web-1");
        assert!(
            claims[0].metadata().owner_references.is_empty(),
            "Retain: not owned"
        );
    }
}
