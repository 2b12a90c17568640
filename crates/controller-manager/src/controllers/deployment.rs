//! The Deployment controller: one ReplicaSet per pod template, named
//! `<deployment>-<pod-template-hash>`, rolled from old to new with the
//! RollingUpdate (maxSurge / maxUnavailable) or Recreate strategy;
//! revisions, history cleanup, pause, proportional scaling and the
//! Available / Progressing conditions as Kubernetes' deployment controller
//! computes them (pkg/controller/deployment), so `rollout status` and
//! anything that reads Kubernetes' status fields behave the same.
//!
//! The decisions are pure functions of the Deployment and its
//! ReplicaSets (tested below); `reconcile` only reads the caches and
//! writes what they decide, one step at a time: each write changes the
//! cache, which brings the Deployment back for the next step.

use super::workload::{self, controller_ref, controller_reference, is_deleting, NAMESPACE_INDEX};
use super::Error;
use crate::{Context, Shutdown};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use rkube_api::core::v1::{Pod, PodTemplateSpec};
use rkube_api::meta::v1::ObjectMeta;
use rkube_api::Resource;
use rkube_client::runtime::controller_owner_keys;
use rkube_client::{Action, Api, Controller, DeleteParams, EventType, Preconditions, Store};
use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "deployment";

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";
/// Annotations of the Deployment that are not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    REVISION,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deployment.kubernetes.io/revision-history",
    "kubectl.kubernetes.io/last-applied-configuration",
];

struct State {
    ctx: Arc<Context>,
    deployments: Store<Deployment>,
    replicasets: Store<ReplicaSet>,
    pods: Store<Pod>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let d_informer = ctx.informers.get::<Deployment>();
        let rs_informer = ctx.informers.get::<ReplicaSet>();
        let pod_informer = ctx.informers.get::<Pod>();
        let deployments = d_informer.store();
        let replicasets = rs_informer.store();
        let pods = pod_informer.store();
        deployments.add_index(NAMESPACE_INDEX, workload::namespace_index::<Deployment>);
        replicasets.add_index(NAMESPACE_INDEX, workload::namespace_index::<ReplicaSet>);
        pods.add_index(NAMESPACE_INDEX, workload::namespace_index::<Pod>);
        let rs_mapper = {
            let deployments = deployments.clone();
            move |rs: &ReplicaSet| {
                if controller_ref(rs.metadata()).is_some() {
                    return controller_owner_keys::<Deployment, ReplicaSet>(rs);
                }
                // An orphan wakes every Deployment that could adopt it.
                deployments
                    .by_index(NAMESPACE_INDEX, rs.namespace())
                    .unwrap_or_default()
                    .iter()
                    .filter(|d| {
                        workload::selector_of(d.spec.as_ref().and_then(|s| s.selector.as_ref()), "")
                            .is_ok_and(|s| s.matches(&rs.metadata().labels))
                    })
                    .map(|d| d.key())
                    .collect()
            }
        };
        // Pods matter only to Recreate, which waits for the old ones to go.
        let pod_mapper = {
            let replicasets = replicasets.clone();
            move |pod: &Pod| {
                controller_owner_keys::<ReplicaSet, Pod>(pod)
                    .iter()
                    .filter_map(|k| replicasets.get(k))
                    .flat_map(|rs| controller_owner_keys::<Deployment, ReplicaSet>(&*rs))
                    .collect()
            }
        };
        let workers = ctx.config.workers;
        let state = Arc::new(State {
            ctx,
            deployments,
            replicasets,
            pods,
        });
        Controller::new(NAME, state, reconcile)
            .primary(&d_informer)
            .watches(&rs_informer, rs_mapper)
            .watches(&pod_informer, pod_mapper)
            .workers(workers)
            .resync(Duration::from_secs(300))
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

// ------------------------------------------------------------------ hashing

/// Kubernetes' alphabet for generated name parts: no vowels (no words),
/// no look-alikes (0/o, 1/l/i, 3/e).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Kubernetes' `rand.SafeEncodeString`.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

fn fnv32a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The `pod-template-hash` of a template: FNV-32a of its protobuf
/// encoding (canonical: fields in tag order, maps sorted, defaults
/// omitted, so adding a proto field does not change existing hashes),
/// plus the collision count, rendered as Kubernetes does.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = prost::Message::encode_to_vec(template);
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

// ------------------------------------------------------- replica set views

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn rs_status(rs: &ReplicaSet) -> rkube_api::apps::v1::ReplicaSetStatus {
    rs.status.clone().unwrap_or_default()
}

pub fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn d_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// The template with the hash label removed, for comparison.
fn without_hash(t: Option<&PodTemplateSpec>) -> PodTemplateSpec {
    let mut t = t.cloned().unwrap_or_default();
    if let Some(m) = t.metadata.as_mut() {
        m.labels.remove(HASH_LABEL);
    }
    t
}

/// The ReplicaSet running the Deployment's current template: the oldest
/// one whose template equals it but for `pod-template-hash`.
pub fn find_new_rs(d: &Deployment, rss: &[Arc<ReplicaSet>]) -> Option<Arc<ReplicaSet>> {
    let want = without_hash(d.spec.as_ref().and_then(|s| s.template.as_ref()));
    let mut matching: Vec<&Arc<ReplicaSet>> = rss
        .iter()
        .filter(|rs| without_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref())) == want)
        .collect();
    matching.sort_by(|a, b| by_creation(a, b));
    matching.first().map(|rs| (*rs).clone())
}

fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let t = |r: &ReplicaSet| workload::parse_time(&r.metadata().creation_timestamp);
    t(a).cmp(&t(b)).then_with(|| a.name().cmp(b.name()))
}

/// maxSurge and maxUnavailable resolved against `replicas` (surge rounds
/// up, unavailable down); both 0 would never progress, so unavailable
/// becomes 1, as in Kubernetes.
pub fn fenceposts(d: &Deployment) -> Result<(i32, i32), String> {
    let replicas = d_replicas(d);
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let surge = ru
        .max_surge
        .map(|v| v.scaled_value(replicas, true))
        .transpose()?
        .unwrap_or(0);
    let unavailable = ru
        .max_unavailable
        .map(|v| v.scaled_value(replicas, false))
        .transpose()?
        .unwrap_or(0);
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .is_none_or(|s| s.r#type != "Recreate")
}

fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling(d) {
        return 0;
    }
    fenceposts(d).map(|(s, _)| s).unwrap_or(0)
}

/// Kubernetes' `MaxUnavailable`: 0 for Recreate or no replicas, never more
/// than replicas.
fn max_unavailable(d: &Deployment) -> i32 {
    let replicas = d_replicas(d);
    if !is_rolling(d) || replicas == 0 {
        return 0;
    }
    fenceposts(d).map(|(_, u)| u.min(replicas)).unwrap_or(0)
}

/// How many replicas the new ReplicaSet should have now (rolling update):
/// grow while the total stays within replicas + maxSurge.
pub fn new_rs_replicas(d: &Deployment, all: &[Arc<ReplicaSet>], new_rs: Option<&ReplicaSet>) -> i32 {
    let replicas = d_replicas(d);
    let current_new = new_rs.map(rs_replicas).unwrap_or(0);
    if !is_rolling(d) {
        return replicas;
    }
    let total: i32 = all.iter().map(|r| rs_replicas(r)).sum();
    let max_total = replicas + max_surge(d);
    if total >= max_total {
        return current_new;
    }
    let up = (max_total - total).min(replicas - current_new).max(0);
    current_new + up
}

/// The rolling-update scale-down of old ReplicaSets: first the replicas
/// that are not available anyway (they cost no availability), then
/// available ones while availability stays at replicas - maxUnavailable.
/// Returns (name, new replicas) for each ReplicaSet to scale.
pub fn scale_down_old(
    d: &Deployment,
    old: &[Arc<ReplicaSet>],
    new_rs: Option<&ReplicaSet>,
) -> Vec<(String, i32)> {
    let old_total: i32 = old.iter().map(|r| rs_replicas(r)).sum();
    if old_total == 0 {
        return Vec::new();
    }
    let mut sizes: Vec<(Arc<ReplicaSet>, i32)> = old.iter().map(|r| (r.clone(), rs_replicas(r))).collect();
    sizes.sort_by(|a, b| by_creation(&a.0, &b.0));
    let new_spec = new_rs.map(rs_replicas).unwrap_or(0);
    let new_available = new_rs.map(|r| rs_status(r).available_replicas).unwrap_or(0);
    let all_total = old_total + new_spec;
    let min_available = d_replicas(d) - max_unavailable(d);
    let new_unavailable = new_spec - new_available;
    let max_scaled_down = all_total - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    // Unhealthy replicas first.
    let mut cleaned = 0;
    for (rs, size) in sizes.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        if *size == 0 {
            continue;
        }
        let unhealthy = (*size - rs_status(rs).available_replicas).max(0);
        let n = unhealthy.min(max_scaled_down - cleaned);
        *size -= n;
        cleaned += n;
    }
    // Then healthy ones, as far as availability allows.
    let available: i32 = old.iter().map(|r| rs_status(r).available_replicas).sum::<i32>() + new_available;
    let mut budget = available - min_available;
    for (_, size) in sizes.iter_mut() {
        if budget <= 0 {
            break;
        }
        if *size == 0 {
            continue;
        }
        let n = (*size).min(budget);
        *size -= n;
        budget -= n;
    }
    sizes
        .into_iter()
        .filter(|(rs, size)| *size != rs_replicas(rs))
        .map(|(rs, size)| (rs.name().to_string(), size))
        .collect()
}

/// Whether the ReplicaSets' sizes disagree with the Deployment's replicas
/// (someone scaled it): then sizes change proportionally, not by rollout.
fn is_scaling_event(d: &Deployment, all: &[Arc<ReplicaSet>]) -> bool {
    let want = d_replicas(d).to_string();
    all.iter().filter(|r| rs_replicas(r) > 0).any(|r| {
        r.metadata()
            .annotations
            .get(DESIRED_REPLICAS)
            .is_some_and(|v| *v != want)
    })
}

/// Kubernetes' `scale`: the new sizes of the active ReplicaSets when the
/// Deployment was resized mid-rollout, proportional to their share.
pub fn proportional_sizes(
    d: &Deployment,
    new_rs: Option<&Arc<ReplicaSet>>,
    old: &[Arc<ReplicaSet>],
) -> Vec<(String, i32)> {
    let replicas = d_replicas(d);
    let mut active: Vec<Arc<ReplicaSet>> = old
        .iter()
        .chain(new_rs)
        .filter(|r| rs_replicas(r) > 0)
        .cloned()
        .collect();
    if active.len() <= 1 {
        // One active ReplicaSet (or none): it simply takes the size.
        let target = active.first().cloned().or_else(|| new_rs.cloned());
        return target
            .filter(|r| rs_replicas(r) != replicas)
            .map(|r| vec![(r.name().to_string(), replicas)])
            .unwrap_or_default();
    }
    if let Some(n) = new_rs {
        if rs_replicas(n) == replicas && rs_status(n).available_replicas == replicas {
            // The new one is saturated: the old ones go.
            return old
                .iter()
                .filter(|r| rs_replicas(r) != 0)
                .map(|r| (r.name().to_string(), 0))
                .collect();
        }
    }
    if !is_rolling(d) {
        return Vec::new();
    }
    let total: i32 = active.iter().map(|r| rs_replicas(r)).sum();
    let allowed = if replicas > 0 { replicas + max_surge(d) } else { 0 };
    let to_add = allowed - total;
    match to_add.cmp(&0) {
        // Larger first; among equals, newer first when growing.
        Ordering::Greater => active.sort_by(|a, b| {
            rs_replicas(b)
                .cmp(&rs_replicas(a))
                .then_with(|| by_creation(b, a))
        }),
        Ordering::Less => active.sort_by(|a, b| {
            rs_replicas(b)
                .cmp(&rs_replicas(a))
                .then_with(|| by_creation(a, b))
        }),
        Ordering::Equal => return Vec::new(),
    }
    let mut added = 0;
    let mut sizes: Vec<(Arc<ReplicaSet>, i32)> = Vec::new();
    for rs in &active {
        let size = rs_replicas(rs);
        let proportion = if size == 0 || to_add == added {
            0
        } else {
            let fraction = if replicas == 0 {
                -size
            } else {
                let annotated = rs
                    .metadata()
                    .annotations
                    .get(MAX_REPLICAS)
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or_else(|| d.status.as_ref().map_or(0, |s| s.replicas))
                    .max(1);
                let scaled = f64::from(size) * f64::from(replicas + max_surge(d)) / f64::from(annotated);
                scaled.round() as i32 - size
            };
            let allowed_left = to_add - added;
            if to_add > 0 {
                fraction.min(allowed_left)
            } else {
                fraction.max(allowed_left)
            }
        };
        added += proportion;
        sizes.push((rs.clone(), size + proportion));
    }
    if let Some(first) = sizes.first_mut() {
        first.1 = (first.1 + to_add - added).max(0);
    }
    sizes
        .into_iter()
        .filter(|(rs, size)| *size != rs_replicas(rs))
        .map(|(rs, size)| (rs.name().to_string(), size))
        .collect()
}

/// ReplicaSets beyond revisionHistoryLimit to delete: the oldest revisions
/// among those scaled to 0 with no pods left.
pub fn history_to_delete(d: &Deployment, old: &[Arc<ReplicaSet>]) -> Vec<Arc<ReplicaSet>> {
    let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
        return Vec::new();
    };
    let mut cleanable: Vec<Arc<ReplicaSet>> = old
        .iter()
        .filter(|r| rs_replicas(r) == 0 && rs_status(r).replicas == 0 && !is_deleting(r.metadata()))
        .cloned()
        .collect();
    let excess = cleanable
        .len()
        .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
    cleanable.sort_by(|a, b| {
        revision(a.metadata())
            .cmp(&revision(b.metadata()))
            .then_with(|| by_creation(a, b))
    });
    cleanable.truncate(excess);
    cleanable
}

// ---------------------------------------------------------------- status

fn condition(type_: &str, status: &str, reason: &str, message: String, now: &str) -> DeploymentCondition {
    DeploymentCondition {
        r#type: type_.into(),
        status: status.into(),
        last_update_time: now.into(),
        last_transition_time: now.into(),
        reason: reason.into(),
        message,
    }
}

/// Kubernetes' `SetDeploymentCondition`: the same status and reason is no
/// change; the same status keeps its transition time.
pub fn set_condition(conds: &mut Vec<DeploymentCondition>, mut c: DeploymentCondition) {
    if let Some(cur) = conds.iter().find(|x| x.r#type == c.r#type) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|x| x.r#type != c.r#type);
    conds.push(c);
}

fn get_condition<'a>(s: &'a DeploymentStatus, t: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.iter().find(|c| c.r#type == t)
}

/// Kubernetes' `calculateStatus`: counts from the ReplicaSets and the
/// Available condition.
pub fn calculate_status(
    d: &Deployment,
    all: &[Arc<ReplicaSet>],
    new_rs: Option<&ReplicaSet>,
    now: &str,
) -> DeploymentStatus {
    let old = d.status.clone().unwrap_or_default();
    let available: i32 = all.iter().map(|r| rs_status(r).available_replicas).sum();
    let total_spec: i32 = all.iter().map(|r| rs_replicas(r)).sum();
    let mut s = DeploymentStatus {
        observed_generation: d.metadata().generation,
        replicas: all.iter().map(|r| rs_status(r).replicas).sum(),
        updated_replicas: new_rs.map(|r| rs_status(r).replicas).unwrap_or(0),
        ready_replicas: all.iter().map(|r| rs_status(r).ready_replicas).sum(),
        available_replicas: available,
        unavailable_replicas: (total_spec - available).max(0),
        conditions: old.conditions,
        collision_count: old.collision_count,
    };
    let c = if available >= d_replicas(d) - max_unavailable(d) {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            now,
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    set_condition(&mut s.conditions, c);
    // Kubernetes' getReplicaFailures: a ReplicaSet that cannot create or delete its pods
    // (a quota, an admission refusal) shows on the Deployment, newest ReplicaSet first.
    let failure = new_rs
        .into_iter()
        .chain(all.iter().map(|r| &**r))
        .filter_map(|r| r.status.as_ref())
        .flat_map(|st| &st.conditions)
        .find(|c| c.r#type == "ReplicaFailure" && c.status == "True");
    match failure {
        Some(f) => set_condition(
            &mut s.conditions,
            condition("ReplicaFailure", "True", &f.reason, f.message.clone(), now),
        ),
        None => s.conditions.retain(|c| c.r#type != "ReplicaFailure"),
    }
    s
}

fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let r = d_replicas(d);
    s.updated_replicas == r
        && s.replicas == r
        && s.available_replicas == r
        && s.observed_generation >= d.metadata().generation
}

fn deployment_progressing(d: &Deployment, s: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = old.replicas - old.updated_replicas;
    let new_old = s.replicas - s.updated_replicas;
    s.updated_replicas > old.updated_replicas
        || new_old < old_old
        || s.ready_replicas > old.ready_replicas
        || s.available_replicas > old.available_replicas
}

fn deadline(d: &Deployment) -> Option<i32> {
    // Kubernetes treats MaxInt32 as "no deadline".
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

fn timed_out(d: &Deployment, s: &DeploymentStatus, now: DateTime<Utc>) -> bool {
    let Some(secs) = deadline(d) else { return false };
    let Some(c) = get_condition(s, "Progressing") else {
        return false;
    };
    match c.reason.as_str() {
        "NewReplicaSetAvailable" => false,
        "ProgressDeadlineExceeded" => true,
        _ => workload::parse_time(&c.last_update_time)
            .is_some_and(|from| from + chrono::Duration::seconds(i64::from(secs)) < now),
    }
}

/// Kubernetes' `syncRolloutStatus`: the status plus the Progressing
/// condition, and when to look again for the progress deadline.
pub fn rollout_status(
    d: &Deployment,
    all: &[Arc<ReplicaSet>],
    new_rs: Option<&ReplicaSet>,
    now: DateTime<Utc>,
) -> (DeploymentStatus, Option<Duration>) {
    let now_s = workload::format_time(now);
    let mut s = calculate_status(d, all, new_rs, &now_s);
    if deadline(d).is_none() {
        s.conditions.retain(|c| c.r#type != "Progressing");
    }
    let current = d
        .status
        .as_ref()
        .and_then(|st| get_condition(st, "Progressing"))
        .cloned();
    let complete = s.replicas == s.updated_replicas
        && current
            .as_ref()
            .is_some_and(|c| c.reason == "NewReplicaSetAvailable");
    if deadline(d).is_some() && !complete {
        let what = match new_rs {
            Some(rs) => format!("ReplicaSet {:?}", rs.name()),
            None => format!("Deployment {:?}", d.name()),
        };
        if deployment_complete(d, &s) {
            let c = condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("{what} has successfully progressed."),
                &now_s,
            );
            set_condition(&mut s.conditions, c);
        } else if deployment_progressing(d, &s) {
            let mut c = condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("{what} is progressing."),
                &now_s,
            );
            if let Some(cur) = &current {
                if cur.status == "True" {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                s.conditions.retain(|x| x.r#type != "Progressing");
            }
            set_condition(&mut s.conditions, c);
        } else if timed_out(d, &s, now) {
            let c = condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("{what} has timed out progressing."),
                &now_s,
            );
            set_condition(&mut s.conditions, c);
        }
    }
    // Look again when the deadline would pass (Kubernetes'
    // requeueStuckDeployment).
    let mut requeue = None;
    if let (Some(secs), Some(c)) = (deadline(d), get_condition(&s, "Progressing")) {
        if !deployment_complete(d, &s)
            && c.reason != "ProgressDeadlineExceeded"
            && c.reason != "NewReplicaSetAvailable"
        {
            if let Some(from) = workload::parse_time(&c.last_update_time) {
                let at = from + chrono::Duration::seconds(i64::from(secs));
                requeue = Some(
                    (at - now)
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                        .max(Duration::from_secs(1)),
                );
            }
        }
    }
    (s, requeue)
}

/// Progressing while paused or just resumed, as Kubernetes reports it.
fn paused_conditions(d: &Deployment, s: &mut DeploymentStatus, now: &str) {
    if deadline(d).is_none() {
        return;
    }
    let paused = d.spec.as_ref().is_some_and(|s| s.paused);
    let cur = get_condition(s, "Progressing").map(|c| c.reason.clone());
    if paused && cur.as_deref() != Some("DeploymentPaused") {
        set_condition(
            &mut s.conditions,
            condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
                now,
            ),
        );
    } else if !paused && cur.as_deref() == Some("DeploymentPaused") {
        set_condition(
            &mut s.conditions,
            condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
                now,
            ),
        );
    }
}

// -------------------------------------------------------------- reconcile

/// A new ReplicaSet for the Deployment's template.
pub fn new_replicaset(d: &Deployment, replicas: i32, revision: i64) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let collision = d.status.as_ref().and_then(|s| s.collision_count);
    let mut template = spec.template.clone().unwrap_or_default();
    let hash = pod_template_hash(&template, collision);
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .insert(HASH_LABEL.into(), hash.clone());
    let mut selector = spec.selector.clone().unwrap_or_default();
    selector.match_labels.insert(HASH_LABEL.into(), hash.clone());
    let mut meta = ObjectMeta {
        name: format!("{}-{hash}", d.name()),
        namespace: d.namespace().to_string(),
        labels: template
            .metadata
            .as_ref()
            .map(|m| m.labels.clone())
            .unwrap_or_default(),
        owner_references: vec![controller_reference(d)],
        ..Default::default()
    };
    set_rs_annotations(&mut meta, d, revision);
    ReplicaSet {
        metadata: Some(meta),
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector: Some(selector),
            template: Some(template),
        }),
        ..Default::default()
    }
}

/// The annotations a ReplicaSet carries for its Deployment: the
/// Deployment's own (change-cause and the like), the revision, and the
/// sizes proportional scaling needs.
fn set_rs_annotations(meta: &mut ObjectMeta, d: &Deployment, revision: i64) {
    for (k, v) in &d.metadata().annotations {
        if !NOT_COPIED.contains(&k.as_str()) {
            meta.annotations.insert(k.clone(), v.clone());
        }
    }
    meta.annotations.insert(REVISION.into(), revision.to_string());
    set_size_annotations(meta, d);
}

fn set_size_annotations(meta: &mut ObjectMeta, d: &Deployment) {
    meta.annotations
        .insert(DESIRED_REPLICAS.into(), d_replicas(d).to_string());
    meta.annotations
        .insert(MAX_REPLICAS.into(), (d_replicas(d) + max_surge(d)).to_string());
}

struct Run<'a> {
    state: &'a State,
    d: Deployment,
    rs_api: Api<ReplicaSet>,
    d_api: Api<Deployment>,
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let Some(cached) = state.deployments.get(&key) else {
        return Ok(Action::await_change());
    };
    let mut run = Run {
        state: &state,
        d: (*cached).clone(),
        rs_api: Api::namespaced(state.ctx.client.clone(), cached.namespace()),
        d_api: Api::namespaced(state.ctx.client.clone(), cached.namespace()),
    };
    let selector = match workload::selector_of(
        cached.spec.as_ref().and_then(|s| s.selector.as_ref()),
        &format!("deployment {key}"),
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%key, error = %e, "not managing replica sets");
            return Ok(Action::await_change());
        }
    };
    let rss = run.claim(&selector).await?;
    let now = Utc::now();
    let new_rs = find_new_rs(&run.d, &rss);
    let old: Vec<Arc<ReplicaSet>> = rss
        .iter()
        .filter(|r| {
            new_rs
                .as_ref()
                .is_none_or(|n| n.metadata().uid != r.metadata().uid)
        })
        .cloned()
        .collect();

    if is_deleting(run.d.metadata()) {
        // Being deleted: report, change nothing (the garbage collector
        // owns what happens to the ReplicaSets now).
        return run.write_status(&rss, new_rs.as_deref(), now, false).await;
    }
    let paused = run.d.spec.as_ref().is_some_and(|s| s.paused);
    if paused || is_scaling_event(&run.d, &rss) {
        // Kubernetes' `sync`: sizes only, no rollout.
        let new_rs = match new_rs {
            Some(n) => Some(run.sync_new_rs(n, &old).await?),
            None => None,
        };
        let changes = proportional_sizes(&run.d, new_rs.as_ref(), &old);
        if !changes.is_empty() {
            run.apply_sizes(&rss, &changes).await?;
            return Ok(Action::await_change());
        }
        if paused {
            run.cleanup(&old).await?;
        }
        return run.write_status(&rss, new_rs.as_deref(), now, false).await;
    }

    if !is_rolling(&run.d) {
        return run.recreate(new_rs, old, now).await;
    }
    // RollingUpdate.
    let all_before: Vec<Arc<ReplicaSet>> = rss.clone();
    let new_rs = match new_rs {
        Some(n) => run.sync_new_rs(n, &old).await?,
        None => {
            let replicas = new_rs_replicas(&run.d, &all_before, None);
            run.create_new_rs(&old, replicas, now).await?
        }
    };
    let mut all = old.clone();
    all.push(new_rs.clone());
    let want = new_rs_replicas(&run.d, &all, Some(&new_rs));
    let target = if rs_replicas(&new_rs) > d_replicas(&run.d) {
        d_replicas(&run.d)
    } else {
        want
    };
    if target != rs_replicas(&new_rs) {
        run.scale(&new_rs, target).await?;
        return Ok(Action::await_change());
    }
    let downs = scale_down_old(&run.d, &old, Some(&new_rs));
    if !downs.is_empty() {
        run.apply_sizes(&all, &downs).await?;
        return Ok(Action::await_change());
    }
    let (status, _) = rollout_status(&run.d, &all, Some(&new_rs), now);
    if deployment_complete(&run.d, &status) {
        run.cleanup(&old).await?;
    }
    run.write_status(&all, Some(&new_rs), now, true).await
}

impl Run<'_> {
    /// The ReplicaSets of this Deployment: its own (released if their
    /// labels stopped matching) and matching orphans, adopted.
    async fn claim(
        &mut self,
        selector: &rkube_api::selector::Selector,
    ) -> Result<Vec<Arc<ReplicaSet>>, Error> {
        let uid = self.d.metadata().uid.clone();
        let deleting = is_deleting(self.d.metadata());
        let mut owned = Vec::new();
        let candidates = self
            .state
            .replicasets
            .by_index(NAMESPACE_INDEX, self.d.namespace())
            .unwrap_or_default();
        for rs in candidates {
            let matches = selector.matches(&rs.metadata().labels);
            match controller_ref(rs.metadata()) {
                Some(r) if r.uid == uid => {
                    if matches {
                        owned.push(rs);
                    } else if !deleting && !is_deleting(rs.metadata()) {
                        let mut copy = (*rs).clone();
                        copy.metadata_mut().owner_references.retain(|r| r.uid != uid);
                        ignore_stale(self.rs_api.update(&copy).await)?;
                    }
                }
                Some(_) => {}
                None if matches && !deleting && !is_deleting(rs.metadata()) => {
                    let mut copy = (*rs).clone();
                    copy.metadata_mut()
                        .owner_references
                        .push(controller_reference(&self.d));
                    if let Some(adopted) = ignore_stale(self.rs_api.update(&copy).await)? {
                        owned.push(Arc::new(adopted));
                    }
                }
                None => {}
            }
        }
        Ok(owned)
    }

    /// Makes the existing new ReplicaSet carry the newest revision (a
    /// rollback to an old template gives it a new one), the Deployment's
    /// annotations, and the Deployment the same revision.
    async fn sync_new_rs(
        &mut self,
        new_rs: Arc<ReplicaSet>,
        old: &[Arc<ReplicaSet>],
    ) -> Result<Arc<ReplicaSet>, Error> {
        let max_old = old.iter().map(|r| revision(r.metadata())).max().unwrap_or(0);
        let current = revision(new_rs.metadata());
        let rev = if current <= max_old { max_old + 1 } else { current };
        let mut copy = (*new_rs).clone();
        set_rs_annotations(copy.metadata_mut(), &self.d, rev);
        // Sizes are annotated when the ReplicaSet is scaled, not here.
        for k in [DESIRED_REPLICAS, MAX_REPLICAS] {
            match new_rs.metadata().annotations.get(k) {
                Some(v) => copy.metadata_mut().annotations.insert(k.into(), v.clone()),
                None => copy.metadata_mut().annotations.remove(k),
            };
        }
        let rs = if copy != *new_rs {
            Arc::new(self.rs_api.update(&copy).await?)
        } else {
            new_rs
        };
        self.set_revision(rev).await?;
        if deadline(&self.d).is_some()
            && self
                .d
                .status
                .as_ref()
                .and_then(|s| get_condition(s, "Progressing"))
                .is_none()
        {
            let msg = format!("Found new replica set {:?}", rs.name());
            let now = workload::now_rfc3339();
            let st = self.d.status.get_or_insert_with(Default::default);
            set_condition(
                &mut st.conditions,
                condition("Progressing", "True", "FoundNewReplicaSet", msg, &now),
            );
        }
        Ok(rs)
    }

    async fn set_revision(&mut self, rev: i64) -> Result<(), Error> {
        if revision(self.d.metadata()) == rev {
            return Ok(());
        }
        let mut copy = self.d.clone();
        copy.metadata_mut()
            .annotations
            .insert(REVISION.into(), rev.to_string());
        let status = self.d.status.clone();
        self.d = self.d_api.update(&copy).await?;
        // Keep the status changes made in memory this pass.
        self.d.status = status;
        Ok(())
    }

    async fn create_new_rs(
        &mut self,
        old: &[Arc<ReplicaSet>],
        replicas: i32,
        now: DateTime<Utc>,
    ) -> Result<Arc<ReplicaSet>, Error> {
        let rev = old.iter().map(|r| revision(r.metadata())).max().unwrap_or(0) + 1;
        let rs = new_replicaset(&self.d, replicas, rev);
        let created = match self.rs_api.create(&rs).await {
            Ok(c) => c,
            Err(e) if e.is_already_exists() => {
                let existing = self.rs_api.get(rs.name()).await?;
                let ours =
                    controller_ref(existing.metadata()).is_some_and(|r| r.uid == self.d.metadata().uid);
                let same = without_hash(existing.spec.as_ref().and_then(|s| s.template.as_ref()))
                    == without_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref()));
                if ours && same {
                    // Ours, created by an earlier pass the cache has not
                    // shown yet.
                    return Ok(Arc::new(existing));
                }
                // A hash collision: another template got this name. Count it
                // so the next hash differs.
                let mut copy = self.d.clone();
                let st = copy.status.get_or_insert_with(Default::default);
                let count = st.collision_count.unwrap_or(0) + 1;
                st.collision_count = Some(count);
                self.d_api.update_status(&copy).await?;
                return Err(Error::Invalid(format!(
                    "deployment {}: replica set {} exists with another template; retrying with collisionCount {count}",
                    self.d.key(),
                    rs.name(),
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let msg = format!("Scaled up replica set {} to {replicas}", created.name());
        self.event("ScalingReplicaSet", &msg).await;
        self.set_revision(rev).await?;
        if deadline(&self.d).is_some() {
            let now_s = workload::format_time(now);
            let msg = format!("Created new replica set {:?}", created.name());
            let st = self.d.status.get_or_insert_with(Default::default);
            set_condition(
                &mut st.conditions,
                condition("Progressing", "True", "NewReplicaSetCreated", msg, &now_s),
            );
            let copy = self.d.clone();
            if let Some(stored) = ignore_stale(self.d_api.update_status(&copy).await)? {
                self.d = stored;
            }
        }
        Ok(Arc::new(created))
    }

    async fn scale(&self, rs: &ReplicaSet, replicas: i32) -> Result<(), Error> {
        let old = rs_replicas(rs);
        let mut copy = rs.clone();
        copy.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
        set_size_annotations(copy.metadata_mut(), &self.d);
        if copy == *rs {
            return Ok(());
        }
        self.rs_api.update(&copy).await?;
        if old != replicas {
            let dir = if replicas > old { "up" } else { "down" };
            let msg = format!("Scaled {dir} replica set {} to {replicas}", rs.name());
            self.event("ScalingReplicaSet", &msg).await;
        }
        Ok(())
    }

    async fn apply_sizes(&self, all: &[Arc<ReplicaSet>], sizes: &[(String, i32)]) -> Result<(), Error> {
        for (name, size) in sizes {
            if let Some(rs) = all.iter().find(|r| r.name() == name) {
                self.scale(rs, *size).await?;
            }
        }
        Ok(())
    }

    async fn recreate(
        &mut self,
        new_rs: Option<Arc<ReplicaSet>>,
        old: Vec<Arc<ReplicaSet>>,
        now: DateTime<Utc>,
    ) -> Result<Action, Error> {
        let new_rs = match new_rs {
            Some(n) => Some(self.sync_new_rs(n, &old).await?),
            None => None,
        };
        let mut all = old.clone();
        all.extend(new_rs.clone());
        let active_old: Vec<&Arc<ReplicaSet>> = old.iter().filter(|r| rs_replicas(r) > 0).collect();
        if !active_old.is_empty() {
            for rs in active_old {
                self.scale(rs, 0).await?;
            }
            return Ok(Action::await_change());
        }
        if self.old_pods_running(&old) {
            return self.write_status(&all, new_rs.as_deref(), now, true).await;
        }
        let new_rs = match new_rs {
            Some(n) => n,
            None => {
                let n = self.create_new_rs(&old, d_replicas(&self.d), now).await?;
                all.push(n.clone());
                n
            }
        };
        if rs_replicas(&new_rs) != d_replicas(&self.d) {
            self.scale(&new_rs, d_replicas(&self.d)).await?;
            return Ok(Action::await_change());
        }
        let (status, _) = rollout_status(&self.d, &all, Some(&new_rs), now);
        if deployment_complete(&self.d, &status) {
            self.cleanup(&old).await?;
        }
        self.write_status(&all, Some(&new_rs), now, true).await
    }

    /// Whether any pod of an old ReplicaSet may still run (Recreate must
    /// not overlap old and new pods).
    fn old_pods_running(&self, old: &[Arc<ReplicaSet>]) -> bool {
        if old.iter().any(|r| rs_status(r).replicas > 0) {
            return true;
        }
        let uids: Vec<&str> = old.iter().map(|r| r.metadata().uid.as_str()).collect();
        self.state
            .pods
            .by_index(NAMESPACE_INDEX, self.d.namespace())
            .unwrap_or_default()
            .iter()
            .filter(|p| controller_ref(p.metadata()).is_some_and(|r| uids.contains(&r.uid.as_str())))
            .any(|p| !workload::is_terminal(p))
    }

    async fn cleanup(&self, old: &[Arc<ReplicaSet>]) -> Result<(), Error> {
        for rs in history_to_delete(&self.d, old) {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(rs.metadata().uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match self.rs_api.delete(rs.name(), &dp).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn write_status(
        &mut self,
        all: &[Arc<ReplicaSet>],
        new_rs: Option<&ReplicaSet>,
        now: DateTime<Utc>,
        rollout: bool,
    ) -> Result<Action, Error> {
        let now_s = workload::format_time(now);
        let (mut status, requeue) = if rollout {
            rollout_status(&self.d, all, new_rs, now)
        } else {
            (calculate_status(&self.d, all, new_rs, &now_s), None)
        };
        paused_conditions(&self.d, &mut status, &now_s);
        if self.d.status.as_ref() != Some(&status) {
            let mut copy = self.d.clone();
            copy.status = Some(status);
            ignore_stale(self.d_api.update_status(&copy).await)?;
        }
        Ok(requeue.map_or(Action::await_change(), Action::requeue))
    }

    async fn event(&self, reason: &str, msg: &str) {
        if let Err(e) = self
            .state
            .ctx
            .recorder
            .publish(&self.d, EventType::Normal, reason, msg)
            .await
        {
            tracing::debug!(deployment = %self.d.key(), error = %e, "cannot record event");
        }
    }
}

/// A write refused because the cache was behind (Conflict) or the object
/// went away: the newer state is on its way and brings the key back.
fn ignore_stale<T>(r: rkube_client::Result<T>) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_conflict() || e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetCondition, ReplicaSetStatus, RollingUpdateDeployment,
    };
    use rkube_api::core::v1::{Container, PodSpec};
    use rkube_api::intstr::IntOrString;
    use rkube_api::meta::v1::LabelSelector;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: image.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        let mut d = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: Some(LabelSelector {
                    match_labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
                template: Some(template("nginx:2")),
                strategy: Some(DeploymentStrategy {
                    r#type: "RollingUpdate".into(),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                revision_history_limit: Some(10),
                progress_deadline_seconds: Some(600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = d.metadata_mut();
        m.name = "web".into();
        m.namespace = "ns".into();
        m.uid = "d-uid".into();
        m.generation = 1;
        d
    }

    fn rs(
        name: &str,
        image: &str,
        rev: i64,
        replicas: i32,
        available: i32,
        created: &str,
    ) -> Arc<ReplicaSet> {
        let d = deployment(0, IntOrString::int(1), IntOrString::int(0));
        let mut r = ReplicaSet {
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                template: Some(template(image)),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas,
                ready_replicas: available,
                available_replicas: available,
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = r.metadata_mut();
        m.name = name.into();
        m.namespace = "ns".into();
        m.uid = format!("uid-{name}");
        m.creation_timestamp = created.into();
        m.annotations.insert(REVISION.into(), rev.to_string());
        m.owner_references.push(controller_reference(&d));
        Arc::new(r)
    }

    #[test]
    fn hash_is_stable_and_follows_the_template() {
        let a = pod_template_hash(&template("nginx:1"), None);
        assert_eq!(a, pod_template_hash(&template("nginx:1"), None));
        assert_ne!(a, pod_template_hash(&template("nginx:2"), None));
        assert_ne!(
            a,
            pod_template_hash(&template("nginx:1"), Some(1)),
            "collisions move the name"
        );
        assert!(a.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{a}");
        // Pinned: a changed hash renames every ReplicaSet of every cluster
        // on upgrade and restarts all their pods.
        assert_eq!(safe_encode("1234567890"), "56789bcdf4");
        assert_eq!(fnv32a(b"hello"), 0x4f9f_2cab);
    }

    #[test]
    fn surge_rounds_up_unavailable_down_and_both_zero_is_impossible() {
        let d = deployment(10, IntOrString::string("25%"), IntOrString::string("25%"));
        assert_eq!(fenceposts(&d), Ok((3, 2)));
        let d = deployment(3, IntOrString::int(0), IntOrString::int(0));
        assert_eq!(fenceposts(&d), Ok((0, 1)));
        let d = deployment(1, IntOrString::string("10%"), IntOrString::string("10%"));
        assert_eq!(fenceposts(&d), Ok((1, 0)));
    }

    #[test]
    fn new_replicas_grow_within_the_surge() {
        let d = deployment(4, IntOrString::int(1), IntOrString::int(1));
        let old = rs("web-old", "nginx:1", 1, 4, 4, "2024-01-01T00:00:00Z");
        let new = rs("web-new", "nginx:2", 2, 0, 0, "2024-01-02T00:00:00Z");
        let all = vec![old.clone(), new.clone()];
        assert_eq!(
            new_rs_replicas(&d, &all, Some(&new)),
            1,
            "4 + 1 surge allows one more"
        );
        let new1 = rs("web-new", "nginx:2", 2, 1, 0, "2024-01-02T00:00:00Z");
        assert_eq!(
            new_rs_replicas(&d, &[old, new1.clone()], Some(&new1)),
            1,
            "at the surge limit"
        );
    }

    #[test]
    fn old_replicas_shrink_only_as_availability_allows() {
        let d = deployment(4, IntOrString::int(1), IntOrString::int(1));
        let old = rs("web-old", "nginx:1", 1, 4, 4, "2024-01-01T00:00:00Z");
        let new = rs("web-new", "nginx:2", 2, 1, 0, "2024-01-02T00:00:00Z");
        // 5 pods, 4 available, min 3 available, 1 new unavailable: 1 may go.
        assert_eq!(
            scale_down_old(&d, std::slice::from_ref(&old), Some(&new)),
            [("web-old".to_string(), 3)]
        );
        // Unavailable old replicas go first and cost nothing.
        let sick = rs("web-old", "nginx:1", 1, 4, 2, "2024-01-01T00:00:00Z");
        let new_ok = rs("web-new", "nginx:2", 2, 1, 1, "2024-01-02T00:00:00Z");
        assert_eq!(
            scale_down_old(&d, &[sick], Some(&new_ok)),
            [("web-old".to_string(), 2)]
        );
        // Nothing may go while the minimum is not met.
        let weak = rs("web-old", "nginx:1", 1, 3, 3, "2024-01-01T00:00:00Z");
        let new_pending = rs("web-new", "nginx:2", 2, 2, 0, "2024-01-02T00:00:00Z");
        assert!(scale_down_old(&d, &[weak], Some(&new_pending)).is_empty());
    }

    #[test]
    fn the_new_replicaset_is_found_by_template_and_rollback_reuses_it() {
        let d = deployment(3, IntOrString::int(1), IntOrString::int(0));
        let mut v1 = (*rs("web-aaa", "nginx:1", 1, 0, 0, "2024-01-01T00:00:00Z")).clone();
        v1.spec
            .as_mut()
            .unwrap()
            .template
            .as_mut()
            .unwrap()
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .insert(HASH_LABEL.into(), "aaa".into());
        let v2 = rs("web-bbb", "nginx:2", 2, 3, 3, "2024-01-02T00:00:00Z");
        let all = vec![Arc::new(v1), v2.clone()];
        assert_eq!(
            find_new_rs(&d, &all).map(|r| r.name().to_string()).as_deref(),
            Some("web-bbb")
        );
        let mut back = d.clone();
        back.spec.as_mut().unwrap().template = Some(template("nginx:1"));
        assert_eq!(
            find_new_rs(&back, &all).map(|r| r.name().to_string()).as_deref(),
            Some("web-aaa")
        );

        let created = new_replicaset(&d, 1, 3);
        let hash = created
            .spec
            .as_ref()
            .unwrap()
            .selector
            .as_ref()
            .unwrap()
            .match_labels[HASH_LABEL]
            .clone();
        assert_eq!(created.name(), format!("web-{hash}"));
        assert_eq!(created.metadata().annotations[REVISION], "3");
        assert_eq!(created.metadata().labels[HASH_LABEL], hash);
    }

    #[test]
    fn history_beyond_the_limit_goes_oldest_first() {
        let mut d = deployment(3, IntOrString::int(1), IntOrString::int(0));
        d.spec.as_mut().unwrap().revision_history_limit = Some(1);
        let old = vec![
            rs("r2", "nginx:b", 2, 0, 0, "2024-01-02T00:00:00Z"),
            rs("r1", "nginx:a", 1, 0, 0, "2024-01-01T00:00:00Z"),
            rs("r3", "nginx:c", 3, 1, 1, "2024-01-03T00:00:00Z"),
        ];
        let names: Vec<String> = history_to_delete(&d, &old)
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        assert_eq!(names, ["r1"], "r3 still runs, r2 is within the limit");
    }

    #[test]
    fn proportional_scaling_splits_by_size() {
        let mut d = deployment(20, IntOrString::int(3), IntOrString::int(0));
        let mut old = (*rs("old", "nginx:1", 1, 8, 8, "2024-01-01T00:00:00Z")).clone();
        old.metadata_mut()
            .annotations
            .insert(MAX_REPLICAS.into(), "13".into());
        let mut new = (*rs("new", "nginx:2", 2, 5, 0, "2024-01-02T00:00:00Z")).clone();
        new.metadata_mut()
            .annotations
            .insert(MAX_REPLICAS.into(), "13".into());
        d.status = Some(DeploymentStatus {
            replicas: 13,
            ..Default::default()
        });
        let mut sizes = proportional_sizes(&d, Some(&Arc::new(new)), &[Arc::new(old)]);
        sizes.sort();
        // 10 → 20 replicas (+3 surge = 23 allowed): 8/13 and 5/13 of 23.
        assert_eq!(sizes, [("new".to_string(), 9), ("old".to_string(), 14)]);
    }

    #[test]
    fn a_replica_set_that_cannot_create_pods_shows_replica_failure_on_the_deployment() {
        let d = deployment(3, IntOrString::int(1), IntOrString::int(0));
        let mut failing = (*rs("web-new", "nginx:2", 2, 3, 1, "2024-01-02T00:00:00Z")).clone();
        failing
            .status
            .as_mut()
            .unwrap()
            .conditions
            .push(ReplicaSetCondition {
                r#type: "ReplicaFailure".into(),
                status: "True".into(),
                reason: "FailedCreate".into(),
                message: "pods \"web-\" is forbidden: exceeded quota".into(),
                ..Default::default()
            });
        let failing = Arc::new(failing);
        let s = calculate_status(
            &d,
            std::slice::from_ref(&failing),
            Some(&failing),
            "2024-01-03T00:00:00Z",
        );
        let c = s
            .conditions
            .iter()
            .find(|c| c.r#type == "ReplicaFailure")
            .expect("ReplicaFailure");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "FailedCreate"));
        assert!(c.message.contains("exceeded quota"));

        let healed = rs("web-new", "nginx:2", 2, 3, 3, "2024-01-02T00:00:00Z");
        let mut d2 = d.clone();
        d2.status = Some(s);
        let s = calculate_status(
            &d2,
            std::slice::from_ref(&healed),
            Some(&healed),
            "2024-01-03T00:01:00Z",
        );
        assert!(
            !s.conditions.iter().any(|c| c.r#type == "ReplicaFailure"),
            "gone once pods are created"
        );
    }

    #[test]
    fn conditions_follow_kubernetes() {
        let d = deployment(3, IntOrString::int(1), IntOrString::int(0));
        let new = rs("web-new", "nginx:2", 2, 3, 3, "2024-01-02T00:00:00Z");
        let now = workload::parse_time("2024-01-03T00:00:00Z").unwrap();
        let (s, requeue) = rollout_status(&d, std::slice::from_ref(&new), Some(&new), now);
        let c: Vec<(&str, &str, &str)> = s
            .conditions
            .iter()
            .map(|c| (c.r#type.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            c,
            [
                ("Available", "True", "MinimumReplicasAvailable"),
                ("Progressing", "True", "NewReplicaSetAvailable")
            ]
        );
        assert_eq!(
            (
                s.replicas,
                s.updated_replicas,
                s.available_replicas,
                s.unavailable_replicas
            ),
            (3, 3, 3, 0)
        );
        assert_eq!(requeue, None);

        // Stuck: no progress since the last update, past the deadline.
        let mut stuck = d.clone();
        let pending = rs("web-new", "nginx:2", 2, 3, 0, "2024-01-02T00:00:00Z");
        let (mut st, _) = rollout_status(&stuck, std::slice::from_ref(&pending), Some(&pending), now);
        st.conditions
            .iter_mut()
            .for_each(|c| c.last_update_time = "2024-01-02T23:00:00Z".into());
        st.conditions.retain(|c| c.r#type != "Progressing");
        st.conditions.push(condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            "x".into(),
            "2024-01-02T23:00:00Z",
        ));
        stuck.status = Some(st);
        let (s, _) = rollout_status(&stuck, std::slice::from_ref(&pending), Some(&pending), now);
        let p = get_condition(&s, "Progressing").unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("False", "ProgressDeadlineExceeded")
        );
        assert_eq!(p.message, "ReplicaSet \"web-new\" has timed out progressing.");
        let a = get_condition(&s, "Available").unwrap();
        assert_eq!(
            (a.status.as_str(), a.reason.as_str()),
            ("False", "MinimumReplicasUnavailable")
        );
    }
}
