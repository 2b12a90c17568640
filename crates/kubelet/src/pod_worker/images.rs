//! The image of a container: present, or pulled with the pod's pull secrets, with back-off.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rkube_api::core::v1::{Container, Pod};

use crate::container_config::pull_credentials;
use rkube_node_runtime::image::credentials::candidates;
use rkube_node_runtime::image::{PullError, Reference};
use rkube_node_runtime::runtime::{PullOptions, RegistryAuth};

use super::sync::backoff;
use super::{PodWorker, Shared};
use tracing::Instrument as _;

/// What checking (and, per the pull policy, pulling) a container's image came to, before
/// it is recorded on the container's track.
pub(super) enum ImageOutcome {
    /// The image's repo digest.
    Ready(String),
    /// Not present and the pull policy is Never: the message.
    NeverPull(String),
    /// The pull failed: the message.
    Failed(String),
}

/// Checks the image of container `c` and pulls it as its pull policy says, with the pod's
/// pull secrets. It touches nothing of the pod's worker, so the first sync of a pod runs it
/// beside the sandbox's setup (network, volumes) instead of after it.
pub(super) async fn check_image(shared: Arc<Shared>, pod: Arc<Pod>, c: Container) -> ImageOutcome {
    let uid = super::uid_of(&pod);
    let span = tracing::debug_span!(target: rkube_api::POD_STARTUP_TRACE, "image_check", pod_uid = %uid);
    check_image_inner(&shared, &pod, &c).instrument(span).await
}

async fn check_image_inner(shared: &Shared, pod: &Arc<Pod>, c: &Container) -> ImageOutcome {
    let policy = if c.image_pull_policy.is_empty() {
        rkube_api::defaults::default_pull_policy(&c.image)
    } else {
        c.image_pull_policy.as_str()
    };
    let present = if policy == "Always" {
        None
    } else {
        shared.runtime.image_present(&c.image).await.ok().flatten()
    };
    if let Some(info) = present {
        return ImageOutcome::Ready(info.repo_digest);
    }
    if policy == "Never" {
        return ImageOutcome::NeverPull(format!(
            "Container image {:?} is not present with pull policy of Never",
            c.image
        ));
    }
    shared.event(pod, false, "Pulling", format!("Pulling image {:?}", c.image));
    let started = Instant::now();
    let (credentials, warnings) =
        pull_credentials(&shared.client, pod, &shared.config.root_dir.join("config.json")).await;
    if !warnings.is_empty() {
        shared.event(
            pod,
            true,
            "FailedToRetrieveImagePullSecret",
            format!(
                "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed",
                warnings.join("; ")
            ),
        );
    }
    // Every matching credential in turn, the most specific first; anonymous only when
    // none matches (as Kubernetes does).
    let mut auths: Vec<Option<RegistryAuth>> = match Reference::parse(&c.image) {
        Ok(reference) => candidates(&credentials, &reference)
            .into_iter()
            .map(|c| Some(c.auth))
            .collect(),
        Err(_) => Vec::new(),
    };
    if auths.is_empty() {
        auths.push(None);
    }
    let mut result = Err(rkube_node_runtime::runtime::Error::ImageNotPresent {
        image: c.image.clone(),
    });
    for auth in auths {
        let options = PullOptions {
            auth,
            insecure_registries: shared.config.insecure_registries.clone(),
        };
        result = shared.runtime.pull_image(&c.image, &options).await;
        let refused = matches!(
            &result,
            Err(rkube_node_runtime::runtime::Error::Pull(
                PullError::Unauthorized { .. }
            ))
        );
        if !refused {
            break;
        }
    }
    match result {
        Ok(info) => {
            shared.event(
                pod,
                false,
                "Pulled",
                format!(
                    "Successfully pulled image {:?} in {:.3}s",
                    c.image,
                    started.elapsed().as_secs_f64()
                ),
            );
            ImageOutcome::Ready(info.repo_digest)
        }
        Err(e) => {
            let msg = crate::error_report(&e);
            shared.event(
                pod,
                true,
                "Failed",
                format!("Failed to pull image {:?}: {msg}", c.image),
            );
            ImageOutcome::Failed(msg)
        }
    }
}

impl PodWorker {
    /// Pulls per imagePullPolicy (or takes what this sync's early check found); returns the
    /// image's repo digest, or how long to wait.
    pub(super) async fn ensure_image(&mut self, pod: &Arc<Pod>, c: &Container) -> Result<String, Duration> {
        let outcome = match self.prefetched_images.remove(&c.name) {
            Some(outcome) => outcome,
            None => check_image(self.shared.clone(), pod.clone(), c.clone()).await,
        };
        self.record_image(pod, c, outcome)
    }

    /// Records what checking the image of `c` came to on its track (the pull back-off, why
    /// the container waits); the digest, or how long to wait.
    pub(super) fn record_image(
        &mut self,
        pod: &Arc<Pod>,
        c: &Container,
        outcome: ImageOutcome,
    ) -> Result<String, Duration> {
        let shared = self.shared.clone();
        let t = self.tracks.entry(c.name.clone()).or_default();
        match outcome {
            ImageOutcome::Ready(digest) => {
                t.pull_failures = 0;
                t.pull_retry_at = None;
                t.pull_error.clear();
                Ok(digest)
            }
            ImageOutcome::NeverPull(msg) => {
                if t.waiting.as_ref().map(|w| w.0.as_str()) != Some("ErrImageNeverPull") {
                    shared.event(pod, true, "ErrImageNeverPull", msg.clone());
                }
                t.waiting = Some(("ErrImageNeverPull".into(), msg));
                Err(self.retry_soon())
            }
            ImageOutcome::Failed(msg) => {
                t.pull_failures += 1;
                let wait = backoff(t.pull_failures + 1, &shared.config);
                t.pull_retry_at = Some(SystemTime::now() + wait);
                t.pull_error = msg.clone();
                t.waiting = Some(("ErrImagePull".into(), msg));
                shared.event(
                    pod,
                    false,
                    "BackOff",
                    format!("Back-off pulling image {:?}", c.image),
                );
                Err(wait)
            }
        }
    }
}
