//! `get jobs` (NAME STATUS COMPLETIONS DURATION AGE) and `get cronjobs` (NAME SCHEDULE
//! TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE), as kubectl 1.32 prints them; wide adds
//! CONTAINERS IMAGES SELECTOR.

use super::apps::workload_wide;
use super::{age, human_duration, or_none, parse_time, Column, TableRow, CONTAINERS, IMAGES, SELECTOR};
use chrono::{DateTime, Utc};
use rkube_api::batch::v1::{CronJob, Job};

/// kubectl's STATUS of a Job: its finished condition, Suspended, else Running.
fn job_status(job: &Job) -> &'static str {
    let conditions = job
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let holds = |t: &str| conditions.iter().any(|c| c.r#type == t && c.status == "True");
    if holds("Complete") {
        "Complete"
    } else if holds("Failed") {
        "Failed"
    } else if holds("Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

impl TableRow for Job {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Status", "Status of the job."),
        Column::string(
            "Completions",
            "The number of pods which reached phase Succeeded, of those wanted.",
        ),
        Column::string("Duration", "Time required to complete the job."),
        Column::AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        // A work queue (no completions) shows how many succeeded of its parallelism.
        let completions = match spec.completions {
            Some(c) => format!("{}/{c}", status.succeeded),
            None => format!("{}/1 of {}", status.succeeded, spec.parallelism.unwrap_or(1)),
        };
        let duration = match (
            parse_time(&status.start_time),
            parse_time(&status.completion_time),
        ) {
            (Some(start), Some(end)) => human_duration((end - start).num_seconds()),
            (Some(start), None) => human_duration((now - start).num_seconds()),
            _ => String::new(),
        };
        let mut cells = vec![
            meta.name,
            job_status(self).into(),
            completions,
            duration,
            age(&meta.creation_timestamp, now),
        ];
        cells.extend(workload_wide(spec.template.as_ref(), spec.selector.as_ref()));
        cells
    }
}

impl TableRow for CronJob {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Schedule", "The schedule in Cron format."),
        Column::string("Timezone", "The time zone name for the given schedule."),
        Column::boolean("Suspend", "Whether subsequent executions are suspended."),
        Column::integer("Active", "The number of currently running jobs."),
        Column::string("Last Schedule", "How long ago a job was last scheduled."),
        Column::AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let last = if status.last_schedule_time.is_empty() {
            "<none>".to_string()
        } else {
            age(&status.last_schedule_time, now)
        };
        let mut cells = vec![
            meta.name,
            spec.schedule.clone(),
            or_none(spec.time_zone.clone().unwrap_or_default()),
            if spec.suspend == Some(true) {
                "True"
            } else {
                "False"
            }
            .into(),
            status.active.len().to_string(),
            last,
            age(&meta.creation_timestamp, now),
        ];
        let job = spec.job_template.and_then(|t| t.spec).unwrap_or_default();
        cells.extend(workload_wide(job.template.as_ref(), job.selector.as_ref()));
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_and_cronjob_rows() {
        let now = parse_time("2024-05-01T12:00:00Z").unwrap();
        let job: Job = serde_yaml::from_str(
            "metadata: {name: pi, creationTimestamp: '2024-05-01T11:59:00Z'}\nspec: {completions: 3}\nstatus:\n  succeeded: 3\n  startTime: '2024-05-01T11:59:00Z'\n  completionTime: '2024-05-01T11:59:42Z'\n  conditions: [{type: Complete, status: 'True'}]\n",
        )
        .unwrap();
        assert_eq!(
            job.cells(false, now)[..5],
            ["pi", "Complete", "3/3", "42s", "60s"]
        );
        let cj: CronJob = serde_yaml::from_str(
            "metadata: {name: backup, creationTimestamp: '2024-04-30T12:00:00Z'}\nspec: {schedule: '@hourly'}\nstatus: {lastScheduleTime: '2024-05-01T11:00:00Z'}\n",
        )
        .unwrap();
        assert_eq!(
            cj.cells(false, now)[..7],
            ["backup", "@hourly", "<none>", "False", "0", "60m", "24h"]
        );
    }
}
