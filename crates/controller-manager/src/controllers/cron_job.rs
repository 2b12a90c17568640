//! The CronJob controller: creates a Job from each CronJob's template when its schedule
//! fires, as Kubernetes' CronJob controller does.
//!
//! * **Which run.** The latest scheduled time after the last one run (or the CronJob's
//!   creation) that has come; earlier ones that were missed (the controller was down) are
//!   not run, and more than 100 missed gets a warning event. With
//!   `startingDeadlineSeconds`, a run is given up once that long has passed since its time.
//! * **Concurrency.** `Allow` runs alongside active Jobs; `Forbid` skips the run while one
//!   is active (and tries again until the deadline); `Replace` deletes the active ones first.
//! * **Idempotent.** A Job's name is the CronJob's name and its scheduled time in minutes,
//!   so a controller that crashed after creating it finds it again instead of running twice.
//! * **History.** Finished Jobs beyond `successfulJobsHistoryLimit` and
//!   `failedJobsHistoryLimit` are deleted, oldest first, with their pods.
//! * `status.active` lists the running Jobs, `lastScheduleTime` the last run started and
//!   `lastSuccessfulTime` the last that completed.

use super::job_plan::finished;
use super::workload::{
    controller_ref, controller_reference, delete_if_same, format_time, is_deleting, parse_time, write_status,
    NAMESPACE_INDEX,
};
use super::Error;
use crate::{Context, Shutdown};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::batch::v1::{CronJob, CronJobStatus, Job};
use rkube_api::core::v1::ObjectReference;
use rkube_api::cron::{time_zone, Schedule, Tz};
use rkube_api::meta::v1::ObjectMeta;
use rkube_api::Resource;
use rkube_client::{Action, Api, Controller, EventType, PropagationPolicy, Store};
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "cronjob";

/// The annotation on a Job saying which scheduled time it runs for.
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

struct State {
    ctx: Arc<Context>,
    cronjobs: Store<CronJob>,
    jobs: Store<Job>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let cj_informer = ctx.informers.get::<CronJob>();
        let job_informer = ctx.informers.get::<Job>();
        let jobs = job_informer.store();
        jobs.add_index(NAMESPACE_INDEX, super::workload::namespace_index::<Job>);
        let mapper = |job: &Job| {
            controller_ref(job.metadata())
                .filter(|r| r.kind == "CronJob")
                .map(|r| vec![rkube_api::object_key(job.namespace(), &r.name)])
                .unwrap_or_default()
        };
        let workers = ctx.config.workers;
        let state = Arc::new(State {
            ctx,
            cronjobs: cj_informer.store(),
            jobs,
        });
        Controller::new(NAME, state, reconcile)
            .primary(&cj_informer)
            .watches(&job_informer, mapper)
            .workers(workers)
            .resync(Duration::from_secs(300))
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

/// The name of the Job for the run scheduled at `at`.
pub fn job_name(cronjob: &str, at: DateTime<Utc>) -> String {
    format!("{cronjob}-{}", at.timestamp() / 60)
}

/// What to do about the schedule now.
#[derive(Debug, PartialEq)]
pub enum Run {
    /// Nothing is due; look again at the next scheduled time.
    Wait(Option<DateTime<Utc>>),
    /// Start the run scheduled at this time (`missed`: how many times came since the last
    /// run, more than one when runs were missed).
    Start { at: DateTime<Utc>, missed: u32 },
    /// The run scheduled at this time is past its starting deadline.
    TooLate(DateTime<Utc>),
}

/// Which run is due for `cj` at `now`.
pub fn due(cj: &CronJob, schedule: &Schedule, tz: Tz, now: DateTime<Utc>) -> Run {
    let spec = cj.spec.clone().unwrap_or_default();
    let since = cj
        .status
        .as_ref()
        .and_then(|s| parse_time(&s.last_schedule_time))
        .or_else(|| parse_time(&cj.metadata().creation_timestamp))
        .unwrap_or(now);
    let (latest, missed) = schedule.most_recent(tz, since, now);
    let next = schedule.next_instant(tz, now);
    let Some(at) = latest else {
        return Run::Wait(next);
    };
    if let Some(deadline) = spec.starting_deadline_seconds {
        if at + chrono::Duration::seconds(i64::from(deadline)) < now {
            return Run::TooLate(at);
        }
    }
    Run::Start { at, missed }
}

/// Finished Jobs beyond the history limits, oldest first.
pub fn history_to_delete(cj: &CronJob, jobs: &[Arc<Job>]) -> Vec<String> {
    let spec = cj.spec.clone().unwrap_or_default();
    let mut out = Vec::new();
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let mut done: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| finished(j.status.as_ref()).is_some_and(|c| c.r#type == kind))
            .filter(|j| !is_deleting(j.metadata()))
            .collect();
        done.sort_by_key(|j| {
            let s = j.status.clone().unwrap_or_default();
            (
                parse_time(&s.start_time).or_else(|| parse_time(&j.metadata().creation_timestamp)),
                j.name().to_string(),
            )
        });
        let surplus = done
            .len()
            .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        out.extend(done.iter().take(surplus).map(|j| j.name().to_string()));
    }
    out
}

/// The status the CronJob's Jobs give: the active ones, and the last successful time.
fn status_of(cj: &CronJob, jobs: &[Arc<Job>]) -> CronJobStatus {
    let mut status = cj.status.clone().unwrap_or_default();
    status.active = jobs
        .iter()
        .filter(|j| finished(j.status.as_ref()).is_none() && !is_deleting(j.metadata()))
        .map(|j| ObjectReference {
            kind: "Job".into(),
            namespace: j.namespace().into(),
            name: j.name().into(),
            uid: j.metadata().uid.clone(),
            api_version: "batch/v1".into(),
            resource_version: j.metadata().resource_version.clone(),
            field_path: String::new(),
        })
        .collect();
    status.active.sort_by(|a, b| a.name.cmp(&b.name));
    let last_success = jobs
        .iter()
        .filter(|j| finished(j.status.as_ref()).is_some_and(|c| c.r#type == "Complete"))
        .filter_map(|j| parse_time(&j.status.as_ref()?.completion_time))
        .max();
    if let Some(t) = last_success {
        if parse_time(&status.last_successful_time).is_none_or(|old| t > old) {
            status.last_successful_time = format_time(t);
        }
    }
    status
}

/// The Job for the run at `at`: the CronJob's template, owned by it.
pub fn job_for(cj: &CronJob, at: DateTime<Utc>) -> Job {
    let template = cj
        .spec
        .as_ref()
        .and_then(|s| s.job_template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let mut annotations = tm.annotations;
    annotations.insert(SCHEDULED_TIMESTAMP_ANNOTATION.into(), format_time(at));
    Job {
        metadata: Some(ObjectMeta {
            name: job_name(cj.name(), at),
            namespace: cj.namespace().into(),
            labels: tm.labels,
            annotations,
            owner_references: vec![controller_reference(cj)],
            ..Default::default()
        }),
        spec: template.spec,
        ..Default::default()
    }
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let Some(cj) = state.cronjobs.get(&key) else {
        return Ok(Action::await_change());
    };
    if is_deleting(cj.metadata()) {
        return Ok(Action::await_change());
    }
    let ns = cj.namespace().to_string();
    let uid = cj.metadata().uid.clone();
    let jobs: Vec<Arc<Job>> = state
        .jobs
        .by_index(NAMESPACE_INDEX, &ns)
        .unwrap_or_default()
        .into_iter()
        .filter(|j| controller_ref(j.metadata()).is_some_and(|r| r.uid == uid))
        .collect();
    let jobs_api: Api<Job> = Api::namespaced(state.ctx.client.clone(), &ns);
    let cj_api: Api<CronJob> = Api::namespaced(state.ctx.client.clone(), &ns);
    let spec = cj.spec.clone().unwrap_or_default();
    let now = Utc::now();

    for name in history_to_delete(&cj, &jobs) {
        delete_job(&jobs_api, &jobs, &name).await?;
    }
    let mut status = status_of(&cj, &jobs);

    let schedule: Result<Schedule, String> = spec
        .schedule
        .parse()
        .map_err(|e: rkube_api::cron::ScheduleError| e.to_string());
    let tz = time_zone(spec.time_zone.as_deref()).map_err(|e| e.to_string());
    let (schedule, tz) = match (schedule, tz) {
        (Ok(s), Ok(tz)) => (s, tz),
        (Err(e), _) | (_, Err(e)) => {
            // Validation refuses these; a CronJob stored before a rule tightened waits for a fix.
            publish(&state, &cj, EventType::Warning, "InvalidSchedule", &e).await;
            write_status(&cj_api, &cj, |c| c.status = Some(status)).await?;
            return Ok(Action::await_change());
        }
    };
    let mut after = None;
    if spec.suspend != Some(true) {
        match due(&cj, &schedule, tz, now) {
            Run::Wait(next) => after = next,
            Run::TooLate(at) => {
                let msg = format!("Missed scheduled time to start a job: {}", format_time(at));
                publish(&state, &cj, EventType::Warning, "MissSchedule", &msg).await;
                status.last_schedule_time = format_time(at);
                after = schedule.next_instant(tz, now);
            }
            Run::Start { at, missed } => {
                if missed > 100 {
                    let msg = format!(
                        "too many missed start times: {missed}; check the controller-manager's clock and uptime"
                    );
                    publish(&state, &cj, EventType::Warning, "TooManyMissedTimes", &msg).await;
                }
                let active: Vec<String> = status.active.iter().map(|r| r.name.clone()).collect();
                let mut start = true;
                match spec.concurrency_policy.as_str() {
                    "Forbid" if !active.is_empty() => {
                        // Kubernetes retries until the starting deadline: look again soon.
                        start = false;
                        let msg = "Not starting job because prior execution is running and concurrency policy is Forbid";
                        publish(&state, &cj, EventType::Normal, "JobAlreadyActive", msg).await;
                        after = Some(now + chrono::Duration::seconds(10));
                    }
                    "Replace" => {
                        for name in &active {
                            if *name != job_name(cj.name(), at) {
                                delete_job(&jobs_api, &jobs, name).await?;
                                let msg = format!("Deleted job {name}");
                                publish(&state, &cj, EventType::Normal, "SuccessfulDelete", &msg).await;
                            }
                        }
                    }
                    _ => {}
                }
                if start {
                    let job = job_for(&cj, at);
                    match jobs_api.create(&job).await {
                        Ok(created) => {
                            let msg = format!("Created job {}", created.name());
                            publish(&state, &cj, EventType::Normal, "SuccessfulCreate", &msg).await;
                        }
                        // Created before a restart: this run is done.
                        Err(e) if e.is_already_exists() => {}
                        Err(e) => {
                            let msg = format!("Error creating job: {e}");
                            publish(&state, &cj, EventType::Warning, "FailedCreate", &msg).await;
                            return Err(e.into());
                        }
                    }
                    status.last_schedule_time = format_time(at);
                    after = schedule.next_instant(tz, now);
                }
            }
        }
    }
    write_status(&cj_api, &cj, |c| c.status = Some(status)).await?;
    let wait = after
        .and_then(|t| (t - now).to_std().ok())
        .map(|d| d + Duration::from_millis(100));
    Ok(wait.map_or(Action::await_change(), Action::requeue))
}

async fn delete_job(api: &Api<Job>, jobs: &[Arc<Job>], name: &str) -> Result<(), Error> {
    let uid = jobs
        .iter()
        .find(|j| j.name() == name)
        .map(|j| j.metadata().uid.as_str());
    delete_if_same(api, name, uid, Some(PropagationPolicy::Background)).await?;
    Ok(())
}

async fn publish(state: &State, cj: &CronJob, t: EventType, reason: &str, msg: &str) {
    super::workload::publish(&state.ctx.recorder, cj, t, reason, msg).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::batch::v1::{JobCondition, JobStatus};
    use rkube_api::defaults::Defaulting as _;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cronjob(extra: &str, created: &str, last: Option<&str>) -> CronJob {
        let yaml = format!(
            "metadata: {{name: backup, namespace: default, uid: cj-uid, creationTimestamp: '{created}'}}\nspec:\n  schedule: '*/5 * * * *'\n{extra}  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers: [{{name: b, image: busybox}}]\n"
        );
        let mut cj: CronJob = serde_yaml::from_str(&yaml).unwrap();
        cj.apply_defaults();
        if let Some(last) = last {
            cj.status = Some(CronJobStatus {
                last_schedule_time: last.into(),
                ..Default::default()
            });
        }
        cj
    }

    fn schedule(cj: &CronJob) -> Schedule {
        cj.spec.as_ref().unwrap().schedule.parse().unwrap()
    }

    #[test]
    fn the_latest_due_run_starts_and_missed_ones_are_counted() {
        let cj = cronjob("", "2026-12-06T12:00:00Z", None);
        let s = schedule(&cj);
        let tz = Tz::UTC;
        assert_eq!(
            due(&cj, &s, tz, utc("2026-12-06T12:03:00Z")),
            Run::Wait(Some(utc("2026-12-06T12:05:00Z")))
        );
        assert_eq!(
            due(&cj, &s, tz, utc("2026-12-06T12:05:30Z")),
            Run::Start {
                at: utc("2026-12-06T12:05:00Z"),
                missed: 1
            }
        );
        // After a restart 20 minutes later: only the latest runs.
        let cj = cronjob("", "2026-12-06T12:00:00Z", Some("2026-12-06T12:05:00Z"));
        assert_eq!(
            due(&cj, &s, tz, utc("2026-12-06T12:26:00Z")),
            Run::Start {
                at: utc("2026-12-06T12:25:00Z"),
                missed: 4
            }
        );
    }

    #[test]
    fn a_run_past_its_starting_deadline_is_given_up() {
        let cj = cronjob("  startingDeadlineSeconds: 30\n", "2026-12-06T12:00:00Z", None);
        let s = schedule(&cj);
        assert_eq!(
            due(&cj, &s, Tz::UTC, utc("2026-12-06T12:06:00Z")),
            Run::TooLate(utc("2026-12-06T12:05:00Z"))
        );
        assert!(matches!(
            due(&cj, &s, Tz::UTC, utc("2026-12-06T12:05:20Z")),
            Run::Start { .. }
        ));
    }

    #[test]
    fn jobs_are_named_by_their_time_and_owned_by_the_cronjob() {
        let cj = cronjob("", "2026-12-06T12:00:00Z", None);
        let at = utc("2026-12-06T12:05:00Z");
        let job = job_for(&cj, at);
        let meta = job.metadata.as_ref().unwrap();
        assert_eq!(meta.name, format!("backup-{}", at.timestamp() / 60));
        assert_eq!(meta.owner_references[0].uid, "cj-uid");
        assert_eq!(
            meta.annotations[SCHEDULED_TIMESTAMP_ANNOTATION],
            "2026-12-06T12:05:00Z"
        );
        assert_eq!(
            job.spec.unwrap().template.unwrap().spec.unwrap().restart_policy,
            "OnFailure"
        );
    }

    #[test]
    fn history_keeps_the_newest_finished_jobs() {
        let cj = cronjob(
            "  successfulJobsHistoryLimit: 1\n  failedJobsHistoryLimit: 0\n",
            "2026-12-06T12:00:00Z",
            None,
        );
        let job = |name: &str, start: &str, outcome: Option<&str>| {
            let mut j = Job::default();
            j.metadata_mut().name = name.into();
            j.status = Some(JobStatus {
                start_time: start.into(),
                conditions: outcome
                    .map(|t| {
                        vec![JobCondition {
                            r#type: t.into(),
                            status: "True".into(),
                            ..Default::default()
                        }]
                    })
                    .unwrap_or_default(),
                ..Default::default()
            });
            Arc::new(j)
        };
        let jobs = vec![
            job("a", "2026-12-06T12:05:00Z", Some("Complete")),
            job("b", "2026-12-06T12:10:00Z", Some("Complete")),
            job("c", "2026-12-06T12:15:00Z", Some("Failed")),
            job("d", "2026-12-06T12:20:00Z", None),
        ];
        assert_eq!(history_to_delete(&cj, &jobs), vec!["a", "c"]);
        let status = status_of(&cj, &jobs);
        assert_eq!(
            status.active.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            vec!["d"]
        );
    }
}
