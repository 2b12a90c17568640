//! What the workload loops (replicaset, deployment, garbage-collector,
//! namespace) share: pod readiness and availability as Kubernetes counts
//! them, controller references, timestamps and selectors.

use chrono::{DateTime, Utc};
use rkube_api::core::v1::Pod;
use rkube_api::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use rkube_api::selector::Selector;
use rkube_api::Resource;
use std::time::Duration;

use super::Error;

pub use rkube_api::time::{format as format_time, now as now_rfc3339};

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub fn is_deleting(meta: &ObjectMeta) -> bool {
    !meta.deletion_timestamp.is_empty()
}

/// Succeeded or Failed: its containers will not run again.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().map(|s| s.phase.as_str()),
        Some("Succeeded" | "Failed")
    )
}

/// Counts toward replicas: neither terminal nor being deleted.
pub fn is_active(pod: &Pod) -> bool {
    !is_terminal(pod) && !is_deleting(pod.metadata())
}

/// When the pod's Ready condition turned True, if it is True.
pub fn ready_since(pod: &Pod) -> Option<Option<DateTime<Utc>>> {
    let cond = pod
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready" && c.status == "True")?;
    Some(parse_time(&cond.last_transition_time))
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Whether the pod has been Ready for `min_ready_seconds`; if it is Ready
/// but not yet long enough, how long until it is available.
pub fn availability(pod: &Pod, min_ready_seconds: i32, now: DateTime<Utc>) -> (bool, Option<Duration>) {
    let Some(since) = ready_since(pod) else {
        return (false, None);
    };
    if min_ready_seconds <= 0 {
        return (true, None);
    }
    // A Ready condition without a time counts as ready long ago, as
    // Kubernetes does.
    let Some(since) = since else { return (true, None) };
    let at = since + chrono::Duration::seconds(i64::from(min_ready_seconds));
    if at <= now {
        (true, None)
    } else {
        (false, (at - now).to_std().ok())
    }
}

/// The reference with `controller: true`, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().find(|r| r.controller == Some(true))
}

/// The controller reference a workload puts on what it creates or adopts.
pub fn controller_reference<K: Resource>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::INFO.api_version(),
        kind: K::INFO.kind.to_string(),
        name: owner.name().to_string(),
        uid: owner.metadata().uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The selector, or an error naming the object's field.
pub fn selector_of(sel: Option<&LabelSelector>, what: &str) -> Result<Selector, Error> {
    let sel = sel.ok_or_else(|| Error::Invalid(format!("{what}: spec.selector is missing")))?;
    let parsed = Selector::from_label_selector(sel)
        .map_err(|e| Error::Invalid(format!("{what}: spec.selector is invalid: {}", e.reason)))?;
    if parsed.is_empty() {
        // An empty selector would claim every pod of the namespace.
        return Err(Error::Invalid(format!(
            "{what}: spec.selector is empty and selects nothing"
        )));
    }
    Ok(parsed)
}

/// The index the workload loops add to the pod and ReplicaSet caches.
pub const NAMESPACE_INDEX: &str = "workload/namespace";

pub fn namespace_index<K: Resource>(obj: &K) -> Vec<String> {
    vec![obj.namespace().to_string()]
}

/// Creating and deleting an owner's pods, with the events Kubernetes records for them
/// (Kubernetes' PodControl): what the job, daemonset and statefulset loops share.
pub struct PodControl<'a, K: Resource> {
    pub api: rkube_client::Api<Pod>,
    pub recorder: &'a rkube_client::Recorder,
    pub owner: &'a K,
}

impl<K: Resource> PodControl<'_, K> {
    /// Records an event about the owner (see [`publish`]).
    pub async fn event(&self, t: rkube_client::EventType, reason: &str, message: &str) {
        publish(self.recorder, self.owner, t, reason, message).await;
    }

    /// Creates `pod` (SuccessfulCreate with `done(name)`, or FailedCreate and an error for
    /// the owner's status). An existing pod of that name is `Ok(None)`.
    pub async fn create(&self, pod: &Pod, done: impl FnOnce(&str) -> String) -> Result<Option<Pod>, Error> {
        match self.api.create(pod).await {
            Ok(created) => {
                let message = done(created.name());
                self.event(rkube_client::EventType::Normal, "SuccessfulCreate", &message)
                    .await;
                Ok(Some(created))
            }
            Err(e) if e.is_already_exists() && !pod.name().is_empty() => Ok(None),
            Err(e) => {
                let message = format!("Error creating: {e}");
                self.event(rkube_client::EventType::Warning, "FailedCreate", &message)
                    .await;
                Err(Error::Manage {
                    reason: "FailedCreate",
                    message: e.to_string(),
                })
            }
        }
    }

    /// Deletes `pod` if it is still the one seen (its uid), with SuccessfulDelete and
    /// `done(name)`; a pod already gone or replaced is fine.
    pub async fn delete(&self, pod: &Pod, done: impl FnOnce(&str) -> String) -> Result<(), Error> {
        if delete_if_same(&self.api, pod.name(), Some(&pod.metadata().uid), None).await? {
            let message = done(pod.name());
            self.event(rkube_client::EventType::Normal, "SuccessfulDelete", &message)
                .await;
        }
        Ok(())
    }
}

/// Records an event about `obj`; a failure to record is only logged (events are
/// best-effort, as in Kubernetes).
pub async fn publish<K: Resource>(
    recorder: &rkube_client::Recorder,
    obj: &K,
    t: rkube_client::EventType,
    reason: &str,
    message: &str,
) {
    if let Err(e) = recorder.publish(obj, t, reason, message).await {
        tracing::debug!(object = %obj.key(), error = %e, "cannot record event");
    }
}

/// Deletes `name` if it is still the object with `uid` (when given), with `policy` for its
/// dependents. Returns whether this call deleted it: one already gone or replaced is not
/// an error.
pub async fn delete_if_same<K: Resource>(
    api: &rkube_client::Api<K>,
    name: &str,
    uid: Option<&str>,
    policy: Option<rkube_client::PropagationPolicy>,
) -> Result<bool, Error> {
    let dp = rkube_client::DeleteParams {
        propagation_policy: policy,
        preconditions: uid.map(|uid| rkube_client::Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Writes `status` as `obj`'s status when it differs from what `obj` has. A conflict or a
/// gone object is left to the next sync, which sees the newer object.
pub async fn write_status<K: Resource>(
    api: &rkube_client::Api<K>,
    obj: &K,
    set: impl FnOnce(&mut K),
) -> Result<(), Error> {
    let mut updated = obj.clone();
    set(&mut updated);
    if updated == *obj {
        return Ok(());
    }
    match api.update_status(&updated).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_conflict() || e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use rkube_api::core::v1::{Container, Pod, PodCondition, PodSpec, PodStatus};
    use rkube_api::Resource;

    pub fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
        let mut p = Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: "nginx:1".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: "Pending".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = p.metadata_mut();
        m.name = name.into();
        m.namespace = "ns".into();
        m.uid = format!("uid-{name}");
        m.creation_timestamp = "2024-01-01T00:00:00Z".into();
        for (k, v) in labels {
            m.labels.insert(k.to_string(), v.to_string());
        }
        p
    }

    pub fn ready(mut p: Pod, since: &str) -> Pod {
        let s = p.status.get_or_insert_with(Default::default);
        s.phase = "Running".into();
        s.conditions.push(PodCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            last_transition_time: since.into(),
            ..Default::default()
        });
        p
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn availability_waits_min_ready_seconds() {
        let now = parse_time("2024-01-01T00:00:10Z").unwrap();
        let p = ready(pod("a", &[]), "2024-01-01T00:00:05Z");
        assert_eq!(availability(&p, 0, now), (true, None));
        assert_eq!(availability(&p, 5, now), (true, None));
        assert_eq!(availability(&p, 8, now), (false, Some(Duration::from_secs(3))));
        assert_eq!(availability(&pod("b", &[]), 0, now), (false, None));
    }
}
