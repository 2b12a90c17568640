//! Lifecycle hooks: `postStart` right after a container starts (a failure kills it, and
//! the restart policy decides), `preStop` before a container is stopped (within the grace
//! period, which then continues with SIGTERM). Both run exec, httpGet or sleep as
//! Kubernetes does; they share the probes' ways of reaching into the container.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rkube_api::core::v1::{Container, Pod};

use crate::probes::{self, Action, ProbeTarget};
use rkube_node_runtime::runtime::ContainerId;

use super::PodWorker;

/// What Kubernetes adds to a grace period a preStop hook used up, so the container still
/// gets a SIGTERM before the SIGKILL.
const AFTER_HOOK: Duration = Duration::from_secs(2);

impl PodWorker {
    /// Where a probe or hook of container `c` (running as `id`) reaches it.
    pub(super) fn target(&self, c: &Container, id: &ContainerId) -> ProbeTarget {
        ProbeTarget {
            runtime: self.shared.runtime.clone(),
            id: id.clone(),
            container: c.clone(),
            pod_ip: self.pod_ip_addr(),
            netns: self.net.as_ref().map(|n| n.netns_path.clone()),
        }
    }

    /// Runs the container's postStart hook, if any; on failure says so and kills the
    /// container (the caller sees it exited).
    pub(super) async fn post_start(&self, pod: &Arc<Pod>, c: &Container, id: &ContainerId) {
        let Some(action) = hook(c, |l| l.post_start.as_ref()) else {
            return;
        };
        if let Err(msg) = probes::perform(&self.target(c, id), action, None).await {
            self.shared.event(
                pod,
                true,
                "FailedPostStartHook",
                format!("PostStartHook failed: {msg}"),
            );
            let grace = super::termination::grace_period(pod);
            if let Err(e) = self.shared.runtime.stop_container(id, grace).await {
                tracing::warn!(container = %c.name, "stopping after a failed postStart hook: {e}");
            }
        }
    }

    /// Stops a running container: its preStop hook first, within `grace`, then SIGTERM
    /// with what is left of the grace period (at least two seconds more), then SIGKILL.
    pub(super) async fn stop_container(
        &self,
        pod: &Pod,
        c: Option<&Container>,
        id: &ContainerId,
        grace: Duration,
    ) -> Result<(), rkube_node_runtime::runtime::Error> {
        let mut left = grace;
        if let Some((c, action)) = c.and_then(|c| Some((c, hook(c, |l| l.pre_stop.as_ref())?))) {
            let started = Instant::now();
            let target = self.target(c, id);
            let run = probes::perform(&target, action, Some(grace));
            match tokio::time::timeout(grace, run).await {
                Ok(Ok(())) => {}
                Ok(Err(msg)) => self.shared.event(
                    pod,
                    true,
                    "FailedPreStopHook",
                    format!("PreStopHook failed: {msg}"),
                ),
                Err(_) => self.shared.event(
                    pod,
                    true,
                    "FailedPreStopHook",
                    format!("PreStopHook did not finish within the grace period of {grace:?}"),
                ),
            }
            left = grace.saturating_sub(started.elapsed()).max(AFTER_HOOK);
        }
        self.shared.runtime.stop_container(id, left).await
    }
}

fn hook<'a>(
    c: &'a Container,
    which: impl Fn(&'a rkube_api::core::v1::Lifecycle) -> Option<&'a rkube_api::core::v1::LifecycleHandler>,
) -> Option<Action<'a>> {
    c.lifecycle.as_ref().and_then(which).and_then(Action::of_hook)
}
