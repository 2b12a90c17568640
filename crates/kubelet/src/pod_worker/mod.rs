//! The pod workers: one task per pod bound to this node, serialised per pod and
//! level-triggered. Each sync compares the pod's spec with what containerd has (containers
//! labelled with the pod uid, container name and restart attempt), starts, restarts and
//! stops containers, and writes `status` when it differs from what the apiserver has.
//!
//! Everything a restarted kubelet needs is in containerd and the root dir: the current and
//! the previous container of each spec container are kept (the previous for `lastState`
//! and `logs --previous`), older ones are removed; the restart count is the attempt label.
//!
//! * `manager`: the dispatcher ([`PodManager`]) (one worker task per pod) and the sweep of orphans;
//! * `sync`: sandbox and network, container starts and restarts with back-off, probes;
//! * `images`: image pulls with pull secrets and back-off;
//! * `status`: the pod status from what the runtime reports, and writing it;
//! * `termination`: stopping a deleted pod's containers within its grace period;
//! * `eviction`: evicting a pod whose disk-backed emptyDir outgrew its `sizeLimit`, or
//!   that the node-pressure eviction manager (`crate::node_pressure`) chose.

mod eviction;
mod hooks;
mod images;
mod manager;
mod status;
mod sync;
mod termination;

use manager::cleanup_orphan;
pub use manager::PodManager;
use sync::crash_streak;
use termination::grace_period;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rkube_api::core::v1::{ContainerStateTerminated, Pod};
use rkube_client::{object_reference, Client, EventType, Recorder, Store};
use tokio::sync::watch;

use crate::config::Config;
use crate::node::NetworkSlot;
use crate::probes::ProbeBoard;
use crate::volumes::PodDirs;
use rkube_node_runtime::network::PodNetworkStatus;
use rkube_node_runtime::runtime::{labels, ContainerId, ContainerRuntime, ContainerState, ContainerStatus};

/// Removes a pod's cgroup once its last container is gone (a no-op for fakes).
pub type CgroupCleaner = Arc<dyn Fn(&str) + Send + Sync>;

/// What every pod worker shares.
pub struct Shared {
    pub client: Client,
    pub config: Config,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub network: NetworkSlot,
    pub recorder: Recorder,
    pub pods: Store<Pod>,
    pub remove_cgroup: CgroupCleaner,
    /// The cluster CA the kubelet verifies the apiserver with (PEM): `ca.crt` of pods'
    /// ServiceAccount volumes.
    pub cluster_ca: Option<Vec<u8>>,
    /// Pods the node-pressure eviction manager evicts, by uid, with the status message;
    /// each pod's worker takes its entry and carries the eviction out.
    pub evictions: std::sync::Mutex<HashMap<String, String>>,
}

impl Shared {
    pub(super) fn event(&self, pod: &Pod, warning: bool, reason: &str, message: String) {
        let recorder = self.recorder.clone();
        let reference = object_reference(pod);
        let reason = reason.to_string();
        let kind = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.event(&reference, kind, &reason, &message).await {
                tracing::debug!(pod = %reference.name, "recording event {reason}: {e}");
            }
        });
    }

    /// The node-pressure eviction of pod `uid`, if one was asked for (taken: once).
    pub(super) fn take_eviction(&self, uid: &str) -> Option<String> {
        self.evictions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid)
    }

    pub(super) fn current_network(&self) -> Option<Arc<dyn rkube_node_runtime::network::PodNetwork>> {
        self.network.borrow().clone()
    }

    pub(super) fn pod_dirs(&self, uid: &str) -> PodDirs {
        PodDirs::new(&self.config.root_dir, uid)
    }
}

pub(super) fn uid_of(pod: &Pod) -> String {
    pod.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default()
}

pub(super) fn key_of(pod: &Pod) -> String {
    let m = pod.metadata.clone().unwrap_or_default();
    format!("{}/{}", m.namespace, m.name)
}

pub(super) fn rfc3339(t: SystemTime) -> String {
    rkube_api::time::format(t.into())
}

/// One container instance as containerd reports it.
#[derive(Debug, Clone)]
struct Instance {
    id: ContainerId,
    attempt: u32,
    status: ContainerStatus,
}

impl Instance {
    pub(super) fn exited(&self) -> Option<(i32, bool)> {
        match self.status.state {
            ContainerState::Exited {
                exit_code,
                oom_killed,
                ..
            } => Some((exit_code, oom_killed)),
            ContainerState::Unknown { .. } => Some((-1, false)),
            _ => None,
        }
    }
    pub(super) fn running(&self) -> bool {
        self.status.state == ContainerState::Running
    }
    /// How long this instance ran, once it exited (zero when a time is unknown).
    pub(super) fn ran_for(&self) -> Duration {
        match (&self.status.state, self.status.started_at) {
            (
                ContainerState::Exited {
                    finished_at: Some(finished),
                    ..
                },
                Some(started),
            ) => finished.duration_since(started).unwrap_or_default(),
            _ => Duration::ZERO,
        }
    }
    /// Quick exits in a row before this instance, from its label; containers created
    /// before the label existed count every earlier attempt.
    pub(super) fn streak_before(&self) -> u32 {
        self.status
            .labels
            .get(labels::CRASH_STREAK)
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.attempt)
    }
    /// The crash streak including this (exited) instance's run.
    pub(super) fn crash_streak(&self, reset: Duration) -> u32 {
        crash_streak(self.streak_before(), self.ran_for(), reset)
    }
    pub(super) fn terminated(&self) -> ContainerStateTerminated {
        let (exit_code, oom) = self.exited().unwrap_or((0, false));
        let finished = match &self.status.state {
            ContainerState::Exited { finished_at, .. } => *finished_at,
            _ => None,
        };
        let reason = match (&self.status.state, oom, exit_code) {
            (ContainerState::Unknown { .. }, _, _) => "Unknown",
            (_, true, _) => "OOMKilled",
            (_, _, 0) => "Completed",
            _ => "Error",
        };
        ContainerStateTerminated {
            exit_code,
            signal: 0,
            reason: reason.into(),
            message: match &self.status.state {
                ContainerState::Unknown { reason } => reason.clone(),
                _ => String::new(),
            },
            started_at: self.status.started_at.map(rfc3339).unwrap_or_default(),
            finished_at: finished.map(rfc3339).unwrap_or_default(),
            container_id: format!("containerd://{}", self.id),
        }
    }
}

/// What the worker knows about one container of the spec.
#[derive(Default)]
struct Track {
    current: Option<Instance>,
    previous: Option<Instance>,
    /// Why the container waits (ErrImagePull, CreateContainerConfigError, CrashLoopBackOff...).
    waiting: Option<(String, String)>,
    /// Consecutive image pull failures, when the next pull may be tried, and why the last
    /// one failed (the ImagePullBackOff message is made from it, so it stays the same
    /// from one sync to the next).
    pull_failures: u32,
    pull_retry_at: Option<SystemTime>,
    pull_error: String,
    image_id: String,
    probe_task: Option<(ContainerId, tokio::task::JoinHandle<()>)>,
}

impl Drop for Track {
    fn drop(&mut self) {
        if let Some((_, task)) = self.probe_task.take() {
            task.abort();
        }
    }
}

struct PodWorker {
    shared: Arc<Shared>,
    uid: String,
    dirs: PodDirs,
    adopted: bool,
    tracks: HashMap<String, Track>,
    net: Option<PodNetworkStatus>,
    volumes: Option<HashMap<String, PathBuf>>,
    volumes_at: Instant,
    /// The pod's labels and annotations the volumes were last written with: a change
    /// rewrites them at once (downward API files), not at the next resync.
    volumes_meta: Option<(BTreeMap<String, String>, BTreeMap<String, String>)>,
    probes: Arc<ProbeBoard>,
    /// The pod as our last status write returned it.
    written: Option<Pod>,
    start_time: Option<String>,
    /// A pod-level problem shown on containers still waiting to be created.
    pod_waiting: Option<String>,
    /// The last pod seen, for cleanup when it disappears.
    last_pod: Option<Arc<Pod>>,
    /// Why this kubelet evicted the pod (the status message), once it has.
    evicted: Option<String>,
    /// The evicted pod's emptyDir contents are removed.
    evicted_reclaimed: bool,
    /// When the limited emptyDir volumes were last measured.
    usage_checked_at: Option<Instant>,
    /// Image checks this sync ran beside the sandbox's setup, by container name; what is
    /// left at the end of the sync is dropped.
    prefetched_images: HashMap<String, images::ImageOutcome>,
}

enum Next {
    Continue(Duration),
    Done,
}

impl PodWorker {
    pub(super) fn new(shared: Arc<Shared>, uid: String) -> Self {
        PodWorker {
            dirs: shared.pod_dirs(&uid),
            shared,
            uid,
            adopted: false,
            tracks: HashMap::new(),
            net: None,
            volumes: None,
            volumes_at: Instant::now(),
            volumes_meta: None,
            probes: Arc::new(ProbeBoard::default()),
            written: None,
            start_time: None,
            pod_waiting: None,
            last_pod: None,
            evicted: None,
            evicted_reclaimed: false,
            usage_checked_at: None,
            prefetched_images: HashMap::new(),
        }
    }

    pub(super) async fn run(mut self, mut rx: watch::Receiver<Option<Arc<Pod>>>) {
        let probes = self.probes.clone();
        loop {
            let pod = rx.borrow_and_update().clone();
            let next = match pod {
                Some(pod) => {
                    self.last_pod = Some(pod.clone());
                    self.sync(&pod).await
                }
                None => {
                    let grace = self
                        .last_pod
                        .as_ref()
                        .map(|p| grace_period(p).min(Duration::from_secs(10)))
                        .unwrap_or(Duration::from_secs(2));
                    self.tracks.clear();
                    cleanup_orphan(&self.shared, &self.uid, grace).await;
                    Next::Done
                }
            };
            let wait = match next {
                Next::Done => return,
                Next::Continue(d) => d,
            };
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
                _ = probes.wake.notified() => {}
            }
        }
    }

    pub(super) async fn sync(&mut self, pod: &Arc<Pod>) -> Next {
        let deleting = pod
            .metadata
            .as_ref()
            .is_some_and(|m| !m.deletion_timestamp.is_empty());
        if deleting {
            return self.terminate(pod).await;
        }
        match self.sync_running(pod).await {
            Ok(next) => Next::Continue(next),
            Err(e) => {
                tracing::warn!(pod = %key_of(pod), "sync failed: {e:#}");
                Next::Continue(Duration::from_secs(1))
            }
        }
    }
}
