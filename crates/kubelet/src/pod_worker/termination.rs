//! A pod that is deleted or finished: its containers stopped within the grace period and
//! its node state removed.

use std::sync::Arc;
use std::time::Duration;

use rkube_api::core::v1::Pod;
use rkube_api::Resource as _;
use rkube_client::{Api, DeleteParams};

use rkube_node_runtime::runtime::ContainerId;

use super::manager::cleanup_orphan;
use super::{key_of, Next, PodWorker};

impl PodWorker {
    /// The pod is being deleted: stop its containers within the grace period, clean up the
    /// node, then delete the object for good.
    pub(super) async fn terminate(&mut self, pod: &Arc<Pod>) -> Next {
        let grace = grace_period(pod);
        if !self.adopted {
            let _ = self.adopt().await;
        }
        let running: Vec<(String, ContainerId)> = self
            .tracks
            .iter()
            .filter_map(|(name, t)| {
                t.current
                    .as_ref()
                    .filter(|i| i.exited().is_none())
                    .map(|i| (name.clone(), i.id.clone()))
            })
            .collect();
        for (name, _) in &running {
            self.shared
                .event(pod, false, "Killing", format!("Stopping container {name}"));
        }
        for t in self.tracks.values_mut() {
            if let Some((_, task)) = t.probe_task.take() {
                task.abort();
            }
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let container = |name: &str| {
            spec.init_containers
                .iter()
                .chain(&spec.containers)
                .find(|c| c.name == name)
        };
        let results = futures::future::join_all(
            running
                .iter()
                .map(|(name, id)| self.stop_container(pod, container(name), id, grace)),
        )
        .await;
        for ((name, _), r) in running.iter().zip(results) {
            if let Err(e) = r {
                tracing::warn!(pod = %key_of(pod), container = %name, "stopping: {e}");
                return Next::Continue(Duration::from_secs(1));
            }
        }
        self.tracks.clear();
        cleanup_orphan(&self.shared, &self.uid, Duration::ZERO).await;
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), pod.namespace());
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(rkube_client::Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(pod.name(), &dp).await {
            Ok(_) => Next::Done,
            Err(e) if e.is_not_found() || e.is_conflict() => Next::Done,
            Err(e) => {
                tracing::warn!(pod = %key_of(pod), "deleting the pod object: {e}");
                Next::Continue(Duration::from_secs(1))
            }
        }
    }
}

pub(super) fn grace_period(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .as_ref()
        .and_then(|m| m.deletion_grace_period_seconds)
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}
