//! What a Job must do now, decided from the Job and the pods it owns alone (no I/O), as
//! Kubernetes' Job controller decides it:
//!
//! * **Counting.** Every pod a Job creates carries the `batch.kubernetes.io/job-tracking`
//!   finalizer. A finished pod is counted once: its uid goes into
//!   `status.uncountedTerminatedPods`, then its finalizer is removed, then it moves into
//!   `status.succeeded`/`status.failed` (and, for Indexed Jobs, `completedIndexes`). So the
//!   counts survive pods being deleted, and a pod is never counted twice.
//! * **Finishing.** Complete once `completions` pods succeeded (every index, for Indexed
//!   Jobs; for a work queue without `completions`, once one succeeded and none is still
//!   running). Failed with `BackoffLimitExceeded` once more pods failed than
//!   `backoffLimit` (container restarts count too, with `restartPolicy: OnFailure`), or with
//!   `DeadlineExceeded` once `activeDeadlineSeconds` have passed since the start. A finished
//!   or suspended Job keeps no pod running.
//! * **Running.** Up to `parallelism` pods, never more than the completions still
//!   missing; Indexed Jobs run the lowest indexes not yet succeeded nor running. After
//!   failures, new pods wait 10 s, 20 s, 40 s, ... (at most 6 minutes) from the last one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rkube_api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use rkube_api::core::v1::Pod;
use rkube_api::Resource as _;

use super::workload::{format_time, is_deleting, parse_time};

pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";

/// The first delay before a pod replaces a failed one, doubled per failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// What the controller does next for one Job.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Pods to create: the completion index of each (`None` for NonIndexed Jobs).
    pub create: Vec<Option<i32>>,
    /// Active pods to delete (surplus, or every one of a finished or suspended Job).
    pub delete: Vec<String>,
    /// Finished pods whose finalizer can go: they are recorded as uncounted in `status`.
    pub release: Vec<String>,
    /// The status to write.
    pub status: JobStatus,
    /// When to look again (back-off, deadline, TTL), if nothing else changes first.
    pub requeue: Option<Duration>,
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("")
}

/// The completion index of a pod of an Indexed Job.
pub fn completion_index(pod: &Pod) -> Option<i32> {
    pod.metadata()
        .annotations
        .get(COMPLETION_INDEX_ANNOTATION)
        .and_then(|v| v.parse().ok())
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .map(|s| s.container_statuses.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// `1,3-5,7` from a set of indexes, as Kubernetes writes `completedIndexes`.
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// The indexes of `1,3-5,7`; anything unreadable is skipped.
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

fn condition(kind: &str, reason: &str, message: &str, now: DateTime<Utc>) -> JobCondition {
    JobCondition {
        r#type: kind.into(),
        status: "True".into(),
        last_probe_time: format_time(now),
        last_transition_time: format_time(now),
        reason: reason.into(),
        message: message.into(),
    }
}

/// The finished condition (`Complete` or `Failed`) a Job already has.
pub fn finished(status: Option<&JobStatus>) -> Option<&JobCondition> {
    status?
        .conditions
        .iter()
        .find(|c| (c.r#type == "Complete" || c.r#type == "Failed") && c.status == "True")
}

/// The plan for `job` given the pods it owns (`owned`: with its controller reference),
/// at `now`.
pub fn plan(job: &Job, owned: &[std::sync::Arc<Pod>], now: DateTime<Utc>) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let on_failure = spec
        .template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .is_some_and(|s| s.restart_policy == "OnFailure");
    let mut plan = Plan::default();

    // 1. Counting: finished uncounted pods whose finalizer is gone (or the pod is gone) move
    //    into the counters; finished pods still holding it are recorded, then released.
    let mut uncounted = status.uncounted_terminated_pods.take().unwrap_or_default();
    let by_uid: BTreeMap<&str, &Pod> = owned.iter().map(|p| (p.metadata().uid.as_str(), &**p)).collect();
    let holds = |uid: &str| {
        by_uid
            .get(uid)
            .is_some_and(|p| p.metadata().finalizers.iter().any(|f| f == TRACKING_FINALIZER))
    };
    let mut completed = parse_indexes(&status.completed_indexes);
    let mut still = UncountedTerminatedPods::default();
    for uid in uncounted.succeeded.drain(..) {
        if holds(&uid) {
            still.succeeded.push(uid);
        } else {
            status.succeeded += 1;
            if let Some(i) = by_uid.get(uid.as_str()).and_then(|p| completion_index(p)) {
                completed.insert(i);
            }
        }
    }
    for uid in uncounted.failed.drain(..) {
        if holds(&uid) {
            still.failed.push(uid);
        } else {
            status.failed += 1;
        }
    }
    for pod in owned {
        let uid = pod.metadata().uid.as_str();
        let recorded = still.succeeded.iter().chain(&still.failed).any(|u| u == uid);
        let list = match phase(pod) {
            "Succeeded" => &mut still.succeeded,
            "Failed" => &mut still.failed,
            _ => continue,
        };
        if !pod.metadata().finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
            continue;
        }
        if !recorded {
            list.push(uid.to_string());
        }
    }
    // Only pods the previous status already recorded may lose their finalizer: the record
    // must be written before the finalizer goes.
    let recorded_before: BTreeSet<&str> = old
        .uncounted_terminated_pods
        .as_ref()
        .map(|u| u.succeeded.iter().chain(&u.failed).map(String::as_str).collect())
        .unwrap_or_default();
    for pod in owned {
        if recorded_before.contains(pod.metadata().uid.as_str())
            && pod.metadata().finalizers.iter().any(|f| f == TRACKING_FINALIZER)
        {
            plan.release.push(pod.name().to_string());
        }
    }
    // Indexes of succeeded pods count as complete once recorded.
    for uid in &still.succeeded {
        if let Some(i) = by_uid.get(uid.as_str()).and_then(|p| completion_index(p)) {
            completed.insert(i);
        }
    }
    let pending_succeeded = still.succeeded.len() as i32;
    let pending_failed = still.failed.len() as i32;
    status.uncounted_terminated_pods = Some(still);
    if indexed {
        status.completed_indexes = format_indexes(&completed);
    }

    let active: Vec<&std::sync::Arc<Pod>> = owned
        .iter()
        .filter(|p| !matches!(phase(p), "Succeeded" | "Failed") && !is_deleting(p.metadata()))
        .collect();
    status.active = active.len() as i32;
    status.ready = Some(active.iter().filter(|p| super::workload::is_ready(p)).count() as i32);
    status.terminating = Some(
        owned
            .iter()
            .filter(|p| is_deleting(p.metadata()) && !matches!(phase(p), "Succeeded" | "Failed"))
            .count() as i32,
    );

    let succeeded = status.succeeded + pending_succeeded;
    let failed = status.failed + pending_failed;
    let suspended = spec.suspend == Some(true);
    if !suspended && status.start_time.is_empty() {
        status.start_time = format_time(now);
    }

    // 2. Finishing.
    let mut done = finished(Some(&old)).cloned();
    if done.is_none() {
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let restarts: i32 = if on_failure {
            active.iter().map(|p| restarts(p)).sum()
        } else {
            0
        };
        let deadline = spec.active_deadline_seconds.and_then(|d| {
            let start = parse_time(&status.start_time)?;
            Some(start + chrono::Duration::seconds(i64::from(d)))
        });
        let complete = match spec.completions {
            Some(c) if indexed => (0..c).all(|i| completed.contains(&i)),
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
        if complete {
            done = Some(condition("Complete", "", "", now));
        } else if failed + restarts > backoff_limit {
            done = Some(condition(
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                now,
            ));
        } else if let Some(at) = deadline.filter(|_| !suspended) {
            if at <= now {
                done = Some(condition(
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                    now,
                ));
            } else {
                plan.requeue = (at - now).to_std().ok();
            }
        }
        // As Kubernetes: the finished condition (and completionTime) is written only once
        // every finished pod is counted, so a Complete or Failed Job shows its final counts.
        // Until then the Job is finishing: it starts nothing and stops what runs.
        if let Some(c) = done.as_ref().filter(|_| pending_succeeded + pending_failed == 0) {
            if c.r#type == "Complete" {
                status.completion_time = format_time(now);
            }
            status.conditions.push(c.clone());
        }
    }
    set_suspended(&mut status, suspended && done.is_none(), now);

    // 3. Running.
    if done.is_some() || suspended {
        plan.delete = active.iter().map(|p| p.name().to_string()).collect();
        plan.status = status;
        return plan;
    }
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let wanted = match spec.completions {
        Some(c) if indexed => {
            let running: BTreeSet<i32> = active.iter().filter_map(|p| completion_index(p)).collect();
            let missing = (0..c).filter(|i| !completed.contains(i)).count() as i32;
            let free: Vec<i32> = (0..c)
                .filter(|i| !completed.contains(i) && !running.contains(i))
                .collect();
            let room = parallelism.min(missing) - active.len() as i32;
            plan.create = free.into_iter().take(room.max(0) as usize).map(Some).collect();
            parallelism.min(missing)
        }
        Some(c) => {
            let wanted = parallelism.min((c - succeeded).max(0));
            let room = wanted - active.len() as i32;
            plan.create = vec![None; room.max(0) as usize];
            wanted
        }
        // A work queue: once one pod succeeded, no new ones start.
        None => {
            let wanted = if succeeded > 0 { 0 } else { parallelism };
            let room = wanted - active.len() as i32;
            plan.create = vec![None; room.max(0) as usize];
            wanted
        }
    };
    if active.len() as i32 > wanted {
        let mut surplus: Vec<&&std::sync::Arc<Pod>> = active.iter().collect();
        // Not yet running first, then the highest indexes.
        surplus.sort_by_key(|p| (phase(p) == "Running", std::cmp::Reverse(completion_index(p))));
        plan.delete = surplus
            .iter()
            .take((active.len() as i32 - wanted) as usize)
            .map(|p| p.name().to_string())
            .collect();
    }
    // Back-off after failures: no new pod before the delay since the last failure.
    if !plan.create.is_empty() && failed > 0 {
        let last_failure = owned
            .iter()
            .filter(|p| phase(p) == "Failed")
            .filter_map(|p| {
                let s = p.status.as_ref()?;
                s.container_statuses
                    .iter()
                    .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
                    .filter_map(|t| parse_time(&t.finished_at))
                    .max()
            })
            .max();
        let exp = u32::try_from(failed - 1).unwrap_or(0).min(16);
        let delay = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX);
        if let Some(at) = last_failure.map(|t| t + chrono::Duration::from_std(delay).unwrap_or_default()) {
            if at > now {
                plan.create.clear();
                let wait = (at - now).to_std().ok();
                plan.requeue = [plan.requeue, wait].into_iter().flatten().min();
            }
        }
    }
    plan.status = status;
    plan
}

/// Kubernetes' Suspended condition: True while suspended, False (kept) once resumed.
fn set_suspended(status: &mut JobStatus, suspended: bool, now: DateTime<Utc>) {
    let existing = status.conditions.iter_mut().find(|c| c.r#type == "Suspended");
    match (existing, suspended) {
        (Some(c), true) if c.status == "True" => {}
        (Some(c), true) => {
            *c = condition("Suspended", "JobSuspended", "Job suspended", now);
        }
        (Some(c), false) if c.status == "True" => {
            c.status = "False".into();
            c.reason = "JobResumed".into();
            c.message = "Job resumed".into();
            c.last_transition_time = format_time(now);
        }
        (Some(_), false) => {}
        (None, true) => status
            .conditions
            .push(condition("Suspended", "JobSuspended", "Job suspended", now)),
        (None, false) => {}
    }
}

/// When a finished Job with `ttlSecondsAfterFinished` is to be deleted.
pub fn expires_at(job: &Job) -> Option<DateTime<Utc>> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let done = finished(job.status.as_ref())?;
    let at = parse_time(&done.last_transition_time)?;
    Some(at + chrono::Duration::seconds(i64::from(ttl)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::defaults::Defaulting as _;
    use std::sync::Arc;

    fn job(extra: &str) -> Job {
        let yaml = format!(
            "metadata: {{name: pi, namespace: default, uid: job-uid}}\nspec:\n{extra}  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: pi, image: busybox}}]\n"
        );
        let mut j: Job = serde_yaml::from_str(&yaml).unwrap();
        j.apply_defaults();
        j
    }

    fn pod(name: &str, phase: &str, index: Option<i32>, tracked: bool) -> Arc<Pod> {
        let mut p = Pod::default();
        let meta = p.metadata_mut();
        meta.name = name.into();
        meta.uid = format!("uid-{name}");
        if tracked {
            meta.finalizers.push(TRACKING_FINALIZER.into());
        }
        if let Some(i) = index {
            meta.annotations
                .insert(COMPLETION_INDEX_ANNOTATION.into(), i.to_string());
        }
        p.status = Some(rkube_api::core::v1::PodStatus {
            phase: phase.into(),
            ..Default::default()
        });
        Arc::new(p)
    }

    /// Runs the plan and folds its status back into the Job, as the controller's write
    /// would, with released pods losing their finalizer.
    fn step(job: &mut Job, pods: &mut [Arc<Pod>], now: DateTime<Utc>) -> Plan {
        let plan = plan(job, pods, now);
        job.status = Some(plan.status.clone());
        for name in &plan.release {
            if let Some(p) = pods.iter_mut().find(|p| p.name() == name) {
                let mut q = (**p).clone();
                q.metadata_mut().finalizers.clear();
                *p = Arc::new(q);
            }
        }
        plan
    }

    #[test]
    fn indexes_format_as_ranges() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into();
        assert_eq!(format_indexes(&set), "0-2,4,6-7");
        assert_eq!(parse_indexes("0-2,4,6-7"), set);
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn a_job_runs_parallelism_pods_until_completions_succeeded() {
        let now = Utc::now();
        let mut j = job("  completions: 3\n  parallelism: 2\n");
        let mut pods = vec![];
        let p = step(&mut j, &mut pods, now);
        assert_eq!(p.create, vec![None, None]);
        assert!(!j.status.as_ref().unwrap().start_time.is_empty());

        pods = vec![pod("a", "Succeeded", None, true), pod("b", "Running", None, true)];
        let p = step(&mut j, &mut pods, now);
        // One more to start: 3 - 1 succeeded = 2 wanted, 1 running.
        assert_eq!(p.create, vec![None]);
        assert!(p.release.is_empty(), "recorded first, released on the next sync");
        assert_eq!(
            j.status
                .as_ref()
                .unwrap()
                .uncounted_terminated_pods
                .as_ref()
                .unwrap()
                .succeeded,
            vec!["uid-a"]
        );

        let p = step(&mut j, &mut pods, now);
        assert_eq!(p.release, vec!["a"]);
        let p = step(&mut j, &mut pods, now);
        assert!(p.release.is_empty());
        assert_eq!(j.status.as_ref().unwrap().succeeded, 1);

        // The counted pod may go: it stays counted.
        pods = vec![
            pod("b", "Succeeded", None, true),
            pod("c", "Succeeded", None, true),
        ];
        for _ in 0..3 {
            step(&mut j, &mut pods, now);
        }
        let s = j.status.as_ref().unwrap();
        assert_eq!((s.succeeded, s.failed, s.active), (3, 0, 0));
        assert_eq!(finished(Some(s)).map(|c| c.r#type.as_str()), Some("Complete"));
        assert!(!s.completion_time.is_empty());
    }

    #[test]
    fn failures_past_the_backoff_limit_fail_the_job_and_stop_its_pods() {
        let now = Utc::now();
        let mut j = job("  backoffLimit: 1\n  parallelism: 2\n  completions: 4\n");
        let mut pods = vec![
            pod("a", "Failed", None, true),
            pod("b", "Failed", None, true),
            pod("c", "Running", None, true),
        ];
        // Finishing: the running pod stops and nothing starts, but the condition waits
        // until both failures are counted.
        let p = step(&mut j, &mut pods, now);
        assert_eq!(p.delete, vec!["c"]);
        assert!(p.create.is_empty());
        assert!(finished(j.status.as_ref()).is_none(), "{:?}", j.status);
        // recorded, then released, then counted
        step(&mut j, &mut pods, now);
        let p = step(&mut j, &mut pods, now);
        let s = j.status.as_ref().unwrap();
        assert_eq!(s.failed, 2);
        let failed = finished(Some(s)).expect("finished");
        assert_eq!(
            (failed.r#type.as_str(), failed.reason.as_str()),
            ("Failed", "BackoffLimitExceeded")
        );
        assert!(p.create.is_empty());
    }

    #[test]
    fn after_a_failure_the_next_pod_waits_out_the_back_off() {
        let now = Utc::now();
        let mut j = job("");
        let mut failed = (*pod("a", "Failed", None, true)).clone();
        failed
            .status
            .as_mut()
            .unwrap()
            .container_statuses
            .push(rkube_api::core::v1::ContainerStatus {
                state: Some(rkube_api::core::v1::ContainerState {
                    terminated: Some(rkube_api::core::v1::ContainerStateTerminated {
                        finished_at: format_time(now - chrono::Duration::seconds(4)),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        let mut pods = vec![Arc::new(failed)];
        let p = step(&mut j, &mut pods, now);
        assert!(p.create.is_empty());
        let wait = p.requeue.expect("requeued");
        assert!(
            wait <= Duration::from_secs(6) && wait >= Duration::from_secs(5),
            "{wait:?}"
        );
        let p = step(&mut j, &mut pods, now + chrono::Duration::seconds(7));
        assert_eq!(p.create, vec![None]);
    }

    #[test]
    fn indexed_jobs_run_each_missing_index_once() {
        let now = Utc::now();
        let mut j = job("  completionMode: Indexed\n  completions: 4\n  parallelism: 2\n");
        let mut pods = vec![
            pod("a", "Succeeded", Some(0), true),
            pod("b", "Running", Some(1), true),
        ];
        let p = step(&mut j, &mut pods, now);
        assert_eq!(p.create, vec![Some(2)]);
        assert_eq!(j.status.as_ref().unwrap().completed_indexes, "0");
        pods.push(pod("c", "Succeeded", Some(2), true));
        pods.push(pod("d", "Succeeded", Some(3), true));
        pods[1] = pod("b", "Succeeded", Some(1), true);
        for _ in 0..3 {
            step(&mut j, &mut pods, now);
        }
        let s = j.status.as_ref().unwrap();
        assert_eq!(s.completed_indexes, "0-3");
        assert_eq!(finished(Some(s)).map(|c| c.r#type.as_str()), Some("Complete"));
    }

    #[test]
    fn a_suspended_job_stops_its_pods_and_says_so() {
        let now = Utc::now();
        let mut j = job("  suspend: true\n");
        let mut pods = vec![pod("a", "Running", None, true)];
        let p = step(&mut j, &mut pods, now);
        assert_eq!(p.delete, vec!["a"]);
        let s = j.status.as_ref().unwrap();
        assert!(s
            .conditions
            .iter()
            .any(|c| c.r#type == "Suspended" && c.status == "True"));
        assert!(s.start_time.is_empty());
    }

    #[test]
    fn the_deadline_fails_a_job_that_runs_too_long() {
        let now = Utc::now();
        let mut j = job("  activeDeadlineSeconds: 30\n");
        let mut pods = vec![pod("a", "Running", None, true)];
        let p = step(&mut j, &mut pods, now);
        assert!(p.requeue.is_some_and(|d| d <= Duration::from_secs(30)));
        let p = step(&mut j, &mut pods, now + chrono::Duration::seconds(31));
        let s = j.status.as_ref().unwrap();
        assert_eq!(
            finished(Some(s)).map(|c| c.reason.as_str()),
            Some("DeadlineExceeded")
        );
        assert_eq!(p.delete, vec!["a"]);
    }
}
