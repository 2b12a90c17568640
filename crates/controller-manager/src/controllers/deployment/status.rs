//! The Deployment's status as Kubernetes computes it: replica counts, the
//! Available and Progressing conditions (with the progress deadline),
//! `rollout status`, and the conditions of a paused Deployment.

use super::*;

// ---------------------------------------------------------------- status

pub(super) fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: &str,
) -> DeploymentCondition {
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

pub(super) fn get_condition<'a>(s: &'a DeploymentStatus, t: &str) -> Option<&'a DeploymentCondition> {
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

pub(super) fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let r = d_replicas(d);
    s.updated_replicas == r
        && s.replicas == r
        && s.available_replicas == r
        && s.observed_generation >= d.metadata().generation
}

pub(super) fn deployment_progressing(d: &Deployment, s: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = old.replicas - old.updated_replicas;
    let new_old = s.replicas - s.updated_replicas;
    s.updated_replicas > old.updated_replicas
        || new_old < old_old
        || s.ready_replicas > old.ready_replicas
        || s.available_replicas > old.available_replicas
}

pub(super) fn deadline(d: &Deployment) -> Option<i32> {
    // Kubernetes treats MaxInt32 as "no deadline".
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

pub(super) fn timed_out(d: &Deployment, s: &DeploymentStatus, now: DateTime<Utc>) -> bool {
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
pub(super) fn paused_conditions(d: &Deployment, s: &mut DeploymentStatus, now: &str) {
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
