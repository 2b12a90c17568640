//! batch/v1: Jobs (pods that run to completion) and the CronJobs that create them on a
//! schedule.

use super::meta::{validate_meta, NameRule};
use super::workloads::{validate_label_selector, validate_template};
use super::{Errors, FieldError, Validate};
use crate::batch::v1::{CronJob, Job, JobSpec};

/// Kubernetes' limit: a CronJob's name plus the 11 characters of a Job's suffix must fit
/// in a label value (63).
const MAX_CRONJOB_NAME: usize = 52;

fn non_negative(e: &mut Errors, field: String, value: Option<i32>) {
    if let Some(v) = value.filter(|v| *v < 0) {
        e.invalid(field, v, "must be greater than or equal to 0");
    }
}

/// A Job's spec, at `f` (`spec`, or `spec.jobTemplate.spec` in a CronJob). A missing
/// selector is an error only where the user must give it (`manualSelector: true`): the
/// apiserver makes one for every other Job.
fn validate_job_spec(spec: &JobSpec, f: &str, e: &mut Errors) {
    non_negative(e, format!("{f}.parallelism"), spec.parallelism);
    non_negative(e, format!("{f}.completions"), spec.completions);
    non_negative(e, format!("{f}.backoffLimit"), spec.backoff_limit);
    non_negative(
        e,
        format!("{f}.ttlSecondsAfterFinished"),
        spec.ttl_seconds_after_finished,
    );
    if let Some(d) = spec.active_deadline_seconds.filter(|d| *d <= 0) {
        e.invalid(format!("{f}.activeDeadlineSeconds"), d, "must be greater than 0");
    }
    let mode = spec.completion_mode.as_deref().unwrap_or("NonIndexed");
    e.one_of(format!("{f}.completionMode"), mode, &["NonIndexed", "Indexed"]);
    if mode == "Indexed" && spec.completions.is_none() {
        e.required(format!("{f}.completions"), "when completion mode is Indexed");
    }
    if let Some(p) = &spec.pod_replacement_policy {
        e.one_of(
            format!("{f}.podReplacementPolicy"),
            p,
            &["TerminatingOrFailed", "Failed"],
        );
    }
    let selector = match &spec.selector {
        Some(s) => validate_label_selector(Some(s), &format!("{f}.selector"), e),
        None => {
            if spec.manual_selector == Some(true) {
                e.required(format!("{f}.selector"), "when manualSelector is true");
            }
            None
        }
    };
    validate_template(selector, spec.template.as_ref(), f, &["OnFailure", "Never"], e);
}

impl Validate for Job {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        match &self.spec {
            None => e.required("spec.template", ""),
            Some(spec) => validate_job_spec(spec, "spec", &mut e),
        }
        e.0
    }

    /// As in Kubernetes: what the Job's pods are and how many must succeed cannot change
    /// under it (the template only while it is suspended, which rkube leaves for later).
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut e = Errors::default();
        let (new, old) = (
            self.spec.clone().unwrap_or_default(),
            old.spec.clone().unwrap_or_default(),
        );
        if new.selector != old.selector {
            e.invalid("spec.selector", "", "field is immutable");
        }
        if new.template != old.template {
            e.invalid("spec.template", "", "field is immutable");
        }
        if new.completions != old.completions {
            e.invalid("spec.completions", new.completions, "field is immutable");
        }
        if new.completion_mode != old.completion_mode {
            e.invalid("spec.completionMode", new.completion_mode, "field is immutable");
        }
        e.0
    }
}

impl Validate for CronJob {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        if let Some(name) = self.metadata.as_ref().map(|m| m.name.as_str()) {
            if name.len() > MAX_CRONJOB_NAME {
                e.invalid(
                    "metadata.name",
                    name,
                    format!("must be no more than {MAX_CRONJOB_NAME} characters"),
                );
            }
        }
        let Some(spec) = &self.spec else {
            e.required("spec.schedule", "");
            return e.0;
        };
        if spec.schedule.is_empty() {
            e.required("spec.schedule", "");
        } else if let Err(err) = spec.schedule.parse::<crate::cron::Schedule>() {
            e.invalid("spec.schedule", &spec.schedule, err.to_string());
        }
        if let Some(tz) = &spec.time_zone {
            // IANA names: letters, digits, `/`, `_`, `-`, `+`; the controller resolves them.
            let ok = !tz.is_empty()
                && tz
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c))
                && !tz.starts_with('/')
                && !tz.contains("..");
            if !ok {
                e.invalid("spec.timeZone", tz, "unknown time zone");
            }
        }
        e.one_of(
            "spec.concurrencyPolicy".into(),
            &spec.concurrency_policy,
            &["Allow", "Forbid", "Replace"],
        );
        non_negative(
            &mut e,
            "spec.startingDeadlineSeconds".into(),
            spec.starting_deadline_seconds,
        );
        non_negative(
            &mut e,
            "spec.successfulJobsHistoryLimit".into(),
            spec.successful_jobs_history_limit,
        );
        non_negative(
            &mut e,
            "spec.failedJobsHistoryLimit".into(),
            spec.failed_jobs_history_limit,
        );
        match spec.job_template.as_ref().and_then(|t| t.spec.as_ref()) {
            None => e.required("spec.jobTemplate.spec.template", ""),
            Some(job) => validate_job_spec(job, "spec.jobTemplate.spec", &mut e),
        }
        e.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::Defaulting as _;

    fn job(yaml: &str) -> Job {
        let mut j: Job = serde_yaml::from_str(yaml).unwrap();
        j.metadata.get_or_insert_with(Default::default).uid = "0b1e".into();
        j.apply_defaults();
        j
    }

    fn errors(v: &impl Validate) -> Vec<String> {
        v.validate().iter().map(|e| e.to_string()).collect()
    }

    const PI: &str = "metadata: {name: pi}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: pi, image: busybox}]\n";

    #[test]
    fn a_defaulted_job_is_valid_and_selects_its_own_pods() {
        let j = job(PI);
        assert_eq!(errors(&j), Vec::<String>::new());
        let spec = j.spec.unwrap();
        let labels = spec.template.unwrap().metadata.unwrap().labels;
        let selector = spec.selector.unwrap();
        assert_eq!(
            selector
                .match_labels
                .get("batch.kubernetes.io/controller-uid")
                .map(String::as_str),
            Some("0b1e")
        );
        assert_eq!(
            labels.get("batch.kubernetes.io/job-name").map(String::as_str),
            Some("pi")
        );
    }

    #[test]
    fn job_errors_are_kubernetes_words() {
        let j = job(&PI.replace("restartPolicy: Never", "restartPolicy: Always"));
        assert_eq!(
            errors(&j),
            vec![
                "spec.template.spec.restartPolicy: Unsupported value: supported values: \"OnFailure\", \"Never\": got \"Always\""
            ]
        );
        let j = job(&PI.replace(
            "spec:\n  template",
            "spec:\n  completionMode: Indexed\n  parallelism: -1\n  template",
        ));
        assert_eq!(
            errors(&j),
            vec![
                "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
                "spec.completions: Required value: when completion mode is Indexed"
            ]
        );
    }

    #[test]
    fn cron_job_schedule_and_policy_are_checked() {
        let yaml = "metadata: {name: backup}\nspec:\n  schedule: '61 * * * *'\n  concurrencyPolicy: Sometimes\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers: [{name: b, image: busybox}]\n";
        let mut c: CronJob = serde_yaml::from_str(yaml).unwrap();
        c.apply_defaults();
        assert_eq!(
            errors(&c),
            vec![
                "spec.schedule: Invalid value: \"61 * * * *\": minute 61 is out of range 0-59",
                "spec.concurrencyPolicy: Unsupported value: supported values: \"Allow\", \"Forbid\", \"Replace\": got \"Sometimes\""
            ]
        );
    }
}
