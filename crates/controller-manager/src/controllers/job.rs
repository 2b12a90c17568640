//! The Job controller: runs each Job's pods to completion as `job_plan` decides, and
//! deletes finished Jobs once their `ttlSecondsAfterFinished` has passed (Kubernetes'
//! ttl-after-finished controller, here in the same loop because it reads the same cache).
//!
//! Order of writes, so a crash between any two loses nothing: the status that records a
//! finished pod first, then the pod's tracking finalizer is removed, then (next sync) the
//! pod moves into the counters. Pods whose Job is gone lose their finalizer, so they can be
//! deleted.

use super::expectations::{Expectations, Readiness};
use super::job_plan::{self, COMPLETION_INDEX_ANNOTATION, TRACKING_FINALIZER};
use super::workload::{
    self, controller_ref, controller_reference, delete_if_same, is_deleting, PodControl, NAMESPACE_INDEX,
};
use super::Error;
use crate::{Context, Shutdown};
use chrono::Utc;
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::batch::v1::Job;
use rkube_api::core::v1::{EnvVar, Pod};
use rkube_api::meta::v1::ObjectMeta;
use rkube_api::Resource;
use rkube_client::{Action, Api, Controller, EventType, Store};
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "job";

/// The label and environment variable that tell an Indexed Job's pod its index.
const COMPLETION_INDEX_LABEL: &str = "batch.kubernetes.io/job-completion-index";
const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

struct State {
    ctx: Arc<Context>,
    jobs: Store<Job>,
    pods: Store<Pod>,
    expectations: Arc<Expectations>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let job_informer = ctx.informers.get::<Job>();
        let pod_informer = ctx.informers.get::<Pod>();
        let jobs = job_informer.store();
        let pods = pod_informer.store();
        pods.add_index(NAMESPACE_INDEX, workload::namespace_index::<Pod>);
        let expectations = Arc::new(Expectations::default());
        let mapper = {
            let expectations = expectations.clone();
            move |pod: &Pod| {
                // By the controller reference's name, not only through a live Job: a pod
                // whose Job is gone still has a finalizer to lose.
                let Some(owner) = controller_ref(pod.metadata()).filter(|r| r.kind == "Job") else {
                    return Vec::new();
                };
                let key = rkube_api::object_key(pod.namespace(), &owner.name);
                expectations.observed_create(&key, pod.name());
                vec![key]
            }
        };
        let workers = ctx.config.workers;
        let state = Arc::new(State {
            ctx,
            jobs,
            pods,
            expectations,
        });
        Controller::new(NAME, state, reconcile)
            .primary(&job_informer)
            .watches(&pod_informer, mapper)
            .workers(workers)
            .resync(Duration::from_secs(300))
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

/// The pods of namespace `ns` whose controller is a Job named `name` (any uid).
fn pods_of(state: &State, ns: &str, name: &str) -> Vec<Arc<Pod>> {
    state
        .pods
        .by_index(NAMESPACE_INDEX, ns)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| controller_ref(p.metadata()).is_some_and(|r| r.kind == "Job" && r.name == name))
        .collect()
}

/// Removes the tracking finalizer from `pod`; gone or changed pods are fine (the next sync
/// sees them again).
async fn release(pods_api: &Api<Pod>, pod: &Pod) -> Result<(), Error> {
    let mut p = pod.clone();
    p.metadata_mut().finalizers.retain(|f| f != TRACKING_FINALIZER);
    match pods_api.update(&p).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let (ns, name) = key.split_once('/').unwrap_or(("", key.as_str()));
    let pods_api: Api<Pod> = Api::namespaced(state.ctx.client.clone(), ns);
    let pods = pods_of(&state, ns, name);
    let Some(job) = state.jobs.get(&key) else {
        // The Job is gone: its pods must not keep their finalizer.
        state.expectations.forget(&key);
        for pod in pods
            .iter()
            .filter(|p| p.metadata().finalizers.iter().any(|f| f == TRACKING_FINALIZER))
        {
            release(&pods_api, pod).await?;
        }
        return Ok(Action::await_change());
    };
    let uid = job.metadata().uid.clone();
    let (owned, strangers): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) = pods
        .into_iter()
        .partition(|p| controller_ref(p.metadata()).is_some_and(|r| r.uid == uid));
    // Pods of an earlier Job of the same name.
    for pod in strangers
        .iter()
        .filter(|p| p.metadata().finalizers.iter().any(|f| f == TRACKING_FINALIZER))
    {
        release(&pods_api, pod).await?;
    }
    let jobs_api: Api<Job> = Api::namespaced(state.ctx.client.clone(), ns);
    let now = Utc::now();

    if let Some(at) = job_plan::expires_at(&job) {
        if at <= now && !is_deleting(job.metadata()) {
            let background = Some(rkube_client::PropagationPolicy::Background);
            delete_if_same(&jobs_api, job.name(), Some(&uid), background).await?;
            return Ok(Action::await_change());
        }
    }

    let pods_cache = state.pods.clone();
    let readiness = state.expectations.check(
        &key,
        |pod| pods_cache.get_namespaced(ns, pod).is_some(),
        |pod_uid| {
            !owned
                .iter()
                .any(|p| p.metadata().uid == pod_uid && !is_deleting(p.metadata()))
        },
    );
    if let Readiness::Waiting(after) = readiness {
        return Ok(Action::requeue(after));
    }
    if is_deleting(job.metadata()) {
        // Foreground deletion: the garbage collector removes the pods; their finalizers
        // go once they are finished or the Job is gone.
        return Ok(Action::await_change());
    }

    let was_finished = job_plan::finished(job.status.as_ref()).is_some();
    let plan = job_plan::plan(&job, &owned, now);
    if job.status.as_ref() != Some(&plan.status) {
        let mut updated = (*job).clone();
        updated.status = Some(plan.status.clone());
        match jobs_api.update_status(&updated).await {
            Ok(_) => {}
            // A newer Job is on its way through the cache; act on that one.
            Err(e) if e.is_conflict() || e.is_not_found() => {
                return Ok(Action::requeue(Duration::from_secs(1)))
            }
            Err(e) => return Err(e.into()),
        }
        if !was_finished {
            if let Some(done) = job_plan::finished(Some(&plan.status)) {
                let (kind, reason, message) = if done.r#type == "Complete" {
                    (EventType::Normal, "Completed", "Job completed".to_string())
                } else {
                    (EventType::Warning, done.reason.as_str(), done.message.clone())
                };
                workload::publish(&state.ctx.recorder, &*job, kind, reason, &message).await;
            }
        }
    }
    // Recorded in the status written before this sync: the finalizers may go.
    for pod_name in &plan.release {
        if let Some(pod) = owned.iter().find(|p| p.name() == pod_name) {
            release(&pods_api, pod).await?;
        }
    }
    let control = PodControl {
        api: pods_api.clone(),
        recorder: &state.ctx.recorder,
        owner: &*job,
    };
    let victims: Vec<&Arc<Pod>> = plan
        .delete
        .iter()
        .filter_map(|n| owned.iter().find(|p| p.name() == n))
        .collect();
    state
        .expectations
        .expect_deletes(&key, victims.iter().map(|p| p.metadata().uid.clone()));
    for pod in victims {
        control.delete(pod, |name| format!("Deleted pod: {name}")).await?;
    }
    for index in &plan.create {
        let pod = pod_from_template(&job, *index);
        if let Some(created) = control
            .create(&pod, |name| format!("Created pod: {name}"))
            .await?
        {
            state
                .expectations
                .expect_creates(&key, [created.name().to_string()]);
        }
    }
    let ttl = job_plan::expires_at(&Job {
        status: Some(plan.status),
        ..(*job).clone()
    })
    .and_then(|at| (at - now).to_std().ok());
    let after = [plan.requeue, ttl].into_iter().flatten().min();
    Ok(after.map_or(Action::await_change(), Action::requeue))
}

/// A pod of `job` from its template: owned by it, holding the tracking finalizer, and for
/// Indexed Jobs carrying its index (annotation, label, `JOB_COMPLETION_INDEX`, and the
/// hostname `JOB-INDEX`, as Kubernetes gives them).
pub fn pod_from_template(job: &Job, index: Option<i32>) -> Pod {
    let template = job
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let mut prefix = match index {
        Some(i) => format!("{}-{i}-", job.name()),
        None => format!("{}-", job.name()),
    };
    // Generated names add 5 characters; keep within 63.
    prefix.truncate(58);
    let mut meta = ObjectMeta {
        generate_name: prefix,
        namespace: job.namespace().to_string(),
        labels: tm.labels,
        annotations: tm.annotations,
        finalizers: tm.finalizers,
        owner_references: vec![controller_reference(job)],
        ..Default::default()
    };
    meta.finalizers.push(TRACKING_FINALIZER.into());
    let mut spec = template.spec.unwrap_or_default();
    if let Some(i) = index {
        meta.annotations
            .insert(COMPLETION_INDEX_ANNOTATION.into(), i.to_string());
        meta.labels.insert(COMPLETION_INDEX_LABEL.into(), i.to_string());
        for c in spec.init_containers.iter_mut().chain(spec.containers.iter_mut()) {
            c.env.retain(|e| e.name != COMPLETION_INDEX_ENV);
            c.env.push(EnvVar {
                name: COMPLETION_INDEX_ENV.into(),
                value: i.to_string(),
                ..Default::default()
            });
        }
        if spec.hostname.is_empty() {
            let mut host = format!("{}-{i}", job.name());
            host.truncate(63);
            spec.hostname = host.trim_end_matches('-').to_string();
        }
    }
    Pod {
        metadata: Some(meta),
        spec: Some(spec),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::defaults::Defaulting as _;

    #[test]
    fn indexed_pods_know_their_index() {
        let mut job: Job = serde_yaml::from_str(
            "metadata: {name: work, namespace: default, uid: u1}\nspec:\n  completionMode: Indexed\n  completions: 3\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: w, image: busybox}]\n",
        )
        .unwrap();
        job.apply_defaults();
        let pod = pod_from_template(&job, Some(2));
        let meta = pod.metadata.as_ref().unwrap();
        assert_eq!(meta.generate_name, "work-2-");
        assert_eq!(meta.annotations[COMPLETION_INDEX_ANNOTATION], "2");
        assert!(meta.finalizers.iter().any(|f| f == TRACKING_FINALIZER));
        assert_eq!(meta.owner_references[0].uid, "u1");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname, "work-2");
        let env = &spec.containers[0].env;
        assert!(env
            .iter()
            .any(|e| e.name == COMPLETION_INDEX_ENV && e.value == "2"));
        assert_eq!(meta.labels["batch.kubernetes.io/job-name"], "work");
    }
}
