//! Node pressure: Kubernetes' eviction manager. Every `eviction_monitoring_period` the
//! signals are read ([`signals`]: memory, the node and image filesystems) and compared
//! with `--eviction-hard` ([`thresholds`]). A met threshold turns its node condition
//! (MemoryPressure, DiskPressure) True, and it stays True until no threshold of it was met
//! for `--eviction-pressure-transition-period`, so a node hovering at the edge does not
//! flap. While a threshold is met the node first reclaims what it can without touching
//! running pods: on disk pressure it removes dead containers and every unused image
//! ([`image_gc`]); if that was not enough it evicts one pod per period, the first in
//! Kubernetes' order ([`ranking`]), through the pod's worker (the same path as the
//! emptyDir `sizeLimit` eviction: containers killed, phase Failed, reason `Evicted`,
//! a Warning event `Evicted`). The node gets a Warning event `EvictionThresholdMet`.
//!
//! Image garbage collection also runs on its own: whenever the image filesystem is above
//! `--image-gc-high-threshold` percent, down to `--image-gc-low-threshold`.

pub mod image_gc;
pub mod ranking;
pub mod signals;
pub mod thresholds;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rkube_api::core::v1::{ObjectReference, Pod};
use rkube_client::EventType;
use rkube_node_runtime::disk_usage;
use rkube_node_runtime::runtime::{labels, ContainerState};
use tokio::sync::watch;

use crate::pod_worker::{PodManager, Shared};
use image_gc::ImageGc;
use ranking::Candidate;
use signals::{Observations, SignalSource};
use thresholds::{Condition, Signal, Threshold};

/// Kubernetes' `system-cluster-critical` priority: pods at or above it are not evicted.
const CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// The pressure conditions the node reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodePressure {
    pub memory: bool,
    pub disk: bool,
}

/// What the node status reads the pressure from.
pub type PressureSlot = watch::Receiver<NodePressure>;

/// The thresholds of `thresholds` that `observed` meets, memory first (Kubernetes
/// relieves memory before disk).
pub fn met<'a>(thresholds: &'a [Threshold], observed: &Observations) -> Vec<&'a Threshold> {
    let mut out: Vec<&Threshold> = thresholds
        .iter()
        .filter(|t| {
            observed
                .get(&t.signal)
                .is_some_and(|o| t.met(o.available, o.capacity))
        })
        .collect();
    out.sort_by_key(|t| t.signal);
    out
}

/// When each condition's thresholds were last met, and the conditions that gives at `now`.
#[derive(Debug, Default)]
pub struct PressureState {
    last_met: BTreeMap<Condition, Instant>,
}

impl PressureState {
    pub fn update(&mut self, met: &[&Threshold], now: Instant, transition: Duration) -> NodePressure {
        for t in met {
            self.last_met.insert(t.signal.condition(), now);
        }
        let on = |c: Condition| {
            self.last_met.get(&c).is_some_and(|at| {
                now.saturating_duration_since(*at) < transition
                    || met.iter().any(|t| t.signal.condition() == c)
            })
        };
        NodePressure {
            memory: on(Condition::MemoryPressure),
            disk: on(Condition::DiskPressure),
        }
    }
}

pub struct EvictionManager {
    shared: Arc<Shared>,
    pods: Arc<PodManager>,
    source: Arc<dyn SignalSource>,
    pressure: watch::Sender<NodePressure>,
    state: PressureState,
    image_gc: ImageGc,
    /// Pods this manager evicted (their status may not say so yet).
    evicted: HashSet<String>,
}

impl EvictionManager {
    pub fn new(
        shared: Arc<Shared>,
        pods: Arc<PodManager>,
        source: Arc<dyn SignalSource>,
        pressure: watch::Sender<NodePressure>,
    ) -> Self {
        EvictionManager {
            shared,
            pods,
            source,
            pressure,
            state: PressureState::default(),
            image_gc: ImageGc::default(),
            evicted: HashSet::new(),
        }
    }

    /// Runs until dropped.
    pub async fn run(mut self) {
        loop {
            self.synchronize().await;
            tokio::time::sleep(self.shared.config.eviction_monitoring_period).await;
        }
    }

    /// One look at the node: conditions, image GC, reclaim, at most one eviction.
    pub async fn synchronize(&mut self) {
        let shared = self.shared.clone();
        let config = &shared.config;
        let mut observed = self.source.observe();
        if self.periodic_image_gc(&observed).await {
            observed = self.source.observe();
        }
        let thresholds = config.eviction_hard.clone();
        let met_now = met(&thresholds, &observed);
        let pressure = self.state.update(
            &met_now,
            Instant::now(),
            config.eviction_pressure_transition_period,
        );
        self.pressure
            .send_if_modified(|p| std::mem::replace(p, pressure) != pressure);
        let Some(first) = met_now.first() else { return };
        tracing::warn!(node = %config.node_name, threshold = %first, "eviction threshold met");
        self.node_event(
            "EvictionThresholdMet",
            format!("Attempting to reclaim {}", first.signal.resource()),
        );
        // Node-level resources first: dead containers and unused images.
        let met_now = if met_now.iter().any(|t| t.signal != Signal::MemoryAvailable) {
            self.reclaim_disk().await;
            observed = self.source.observe();
            met(&thresholds, &observed)
        } else {
            met_now
        };
        let Some(threshold) = met_now.first() else {
            tracing::info!("reclaiming node-level resources relieved the pressure; no pod evicted");
            return;
        };
        let Some(obs) = observed.get(&threshold.signal).copied() else {
            return;
        };
        let resource = match threshold.signal {
            Signal::MemoryAvailable => "memory",
            _ => "ephemeral-storage",
        };
        let candidates = self.candidates(threshold.signal).await;
        let Some(victim) = ranking::rank(candidates, resource).into_iter().next() else {
            tracing::warn!(threshold = %threshold, "no pod to evict");
            return;
        };
        let message = ranking::message(threshold, obs, &victim);
        let uid = victim
            .pod
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default();
        tracing::warn!(pod = %pod_key(&victim.pod), "evicting: {message}");
        self.evicted.insert(uid.clone());
        self.pods.evict(&uid, message);
        self.wait_for_cleanup(&victim.pod).await;
    }

    /// Waits (30 s at most, Kubernetes' podCleanupTimeout) until the evicted pod is
    /// reported Failed, which its worker does once its containers are dead and its
    /// emptyDirs emptied: the next look then sees the space or memory it gave back rather
    /// than evicting a second pod for the same shortage.
    async fn wait_for_cleanup(&self, pod: &Pod) {
        let Some(meta) = pod.metadata.as_ref() else { return };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let done = match self.shared.pods.get_namespaced(&meta.namespace, &meta.name) {
                Some(p) => {
                    p.metadata.as_ref().is_none_or(|m| m.uid != meta.uid)
                        || p.status.as_ref().is_some_and(|s| s.phase == "Failed")
                }
                None => true,
            };
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!(pod = %pod_key(pod), "the evicted pod was not cleaned up within 30s");
    }

    /// Image GC when the image filesystem is above the high threshold. Returns whether an
    /// image was removed.
    async fn periodic_image_gc(&mut self, observed: &Observations) -> bool {
        let config = &self.shared.config;
        let Some(fs) = observed.get(&Signal::ImageFsAvailable) else {
            return false;
        };
        let want = image_gc::bytes_to_free(
            fs.available,
            fs.capacity,
            config.image_gc_high_threshold,
            config.image_gc_low_threshold,
        );
        if want == 0 {
            return false;
        }
        let collected = self
            .image_gc
            .collect(self.shared.runtime.as_ref(), want, config.minimum_image_ttl)
            .await;
        match collected {
            Ok(done) => {
                if done.freed_bytes < want {
                    tracing::warn!(
                        wanted = want,
                        freed = done.freed_bytes,
                        "image garbage collection could not bring the image filesystem down to --image-gc-low-threshold {}%",
                        config.image_gc_low_threshold
                    );
                }
                !done.removed.is_empty()
            }
            Err(e) => {
                tracing::warn!("image garbage collection: {e:#}");
                false
            }
        }
    }

    /// Dead containers, then every image no container uses.
    async fn reclaim_disk(&mut self) {
        let runtime = self.shared.runtime.clone();
        match remove_dead_containers(runtime.as_ref()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(containers = n, "disk pressure: removed dead containers"),
            Err(e) => tracing::warn!("disk pressure: removing dead containers: {e:#}"),
        }
        let min_age = self.shared.config.minimum_image_ttl;
        match self.image_gc.collect(runtime.as_ref(), u64::MAX, min_age).await {
            Ok(done) if !done.removed.is_empty() => {
                tracing::info!(images = ?done.removed, "disk pressure: removed unused images")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("disk pressure: image garbage collection: {e:#}"),
        }
    }

    /// The pods that can be evicted, with their use of what `signal` measures.
    async fn candidates(&self, signal: Signal) -> Vec<Candidate> {
        let pods: Vec<Arc<Pod>> = self
            .shared
            .pods
            .list()
            .into_iter()
            .filter(|p| {
                let meta = p.metadata.as_ref();
                let phase = p.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
                // critical pods (system-cluster-critical and above) are never evicted, as in
                // Kubernetes: the node needs them to recover
                let critical = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0) >= CRITICAL_PRIORITY;
                !critical
                    && !matches!(phase, "Succeeded" | "Failed")
                    && meta.is_some_and(|m| m.deletion_timestamp.is_empty() && !self.evicted.contains(&m.uid))
            })
            .collect();
        if signal == Signal::MemoryAvailable {
            let mut by_pod: HashMap<String, Vec<(String, u64)>> = HashMap::new();
            match self.shared.runtime.running_container_stats().await {
                Ok(stats) => {
                    for (c, s) in stats {
                        if let (Some(uid), Some(name)) = (c.labels.get(labels::POD_UID), c.container_name()) {
                            by_pod
                                .entry(uid.clone())
                                .or_default()
                                .push((name.to_string(), s.memory_working_set_bytes));
                        }
                    }
                }
                Err(e) => tracing::warn!("eviction: reading container memory: {e}"),
            }
            return pods
                .into_iter()
                .map(|pod| {
                    let uid = pod.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default();
                    let containers = by_pod.remove(&uid).unwrap_or_default();
                    Candidate {
                        pod,
                        usage: containers.iter().map(|c| c.1).sum(),
                        containers,
                    }
                })
                .collect();
        }
        let root = self.shared.config.root_dir.clone();
        let measured = tokio::task::spawn_blocking(move || {
            pods.into_iter()
                .map(|pod| {
                    let uid = pod.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default();
                    let dir = crate::volumes::PodDirs::new(&root, &uid).root;
                    let usage = disk_usage::bytes_used(&dir).unwrap_or(0);
                    Candidate {
                        pod,
                        usage,
                        containers: Vec::new(),
                    }
                })
                .collect::<Vec<_>>()
        })
        .await;
        measured.unwrap_or_default()
    }

    fn node_event(&self, reason: &str, message: String) {
        let name = self.shared.config.node_name.clone();
        // Kubernetes' node reference: the node's name stands in for its uid
        let reference = ObjectReference {
            kind: "Node".into(),
            api_version: "v1".into(),
            name: name.clone(),
            uid: name,
            ..Default::default()
        };
        let recorder = self.shared.recorder.clone();
        let reason = reason.to_string();
        tokio::spawn(async move {
            if let Err(e) = recorder
                .event(&reference, EventType::Warning, &reason, &message)
                .await
            {
                tracing::debug!("recording node event {reason}: {e}");
            }
        });
    }
}

fn pod_key(pod: &Pod) -> String {
    let m = pod.metadata.clone().unwrap_or_default();
    format!("{}/{}", m.namespace, m.name)
}

/// Removes exited containers a pod worker no longer reports on: every start of a
/// container but its latest (whose status and logs `--previous` the worker keeps would
/// otherwise hold the disk). Returns how many went.
pub async fn remove_dead_containers(
    runtime: &dyn rkube_node_runtime::runtime::ContainerRuntime,
) -> anyhow::Result<usize> {
    let list = runtime.list_containers().await?;
    let mut latest: HashMap<(String, String), u32> = HashMap::new();
    for c in &list {
        if let Some(id) = c.identity() {
            let e = latest
                .entry((id.pod_uid, id.container_name))
                .or_insert(id.restart_attempt);
            *e = (*e).max(id.restart_attempt);
        }
    }
    let mut removed = 0;
    for c in list {
        let Some(id) = c.identity() else { continue };
        let dead = matches!(
            c.state,
            ContainerState::Exited { .. } | ContainerState::Unknown { .. }
        );
        if dead && latest[&(id.pod_uid, id.container_name)] > id.restart_attempt {
            runtime.remove_container(&c.id).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_node_runtime::runtime::{
        ContainerConfig, ContainerRuntime, FakeRuntime, ImageConfig, PullOptions,
    };
    use signals::Observation;

    #[tokio::test]
    async fn dead_containers_go_but_each_containers_latest_start_stays() {
        let rt = FakeRuntime::new();
        rt.add_registry_image("busybox", ImageConfig::default());
        rt.pull_image("busybox", &PullOptions::default()).await.unwrap();
        let start = |name: &str, attempt: u32| ContainerConfig {
            pod_uid: "0b4f3c1e-8d2a-4e5f-9a6b-7c8d9e0f1a2b".into(),
            pod_namespace: "default".into(),
            pod_name: "p".into(),
            name: name.into(),
            restart_attempt: attempt,
            image: "busybox".into(),
            command: vec!["sleep".into()],
            ..Default::default()
        };
        let first = rt.create_container(&start("app", 0)).await.unwrap();
        let latest = rt.create_container(&start("app", 1)).await.unwrap();
        let other = rt.create_container(&start("sidecar", 0)).await.unwrap();
        for id in [&first, &latest, &other] {
            rt.exit_container(id, 1, false);
        }
        assert_eq!(remove_dead_containers(&rt).await.unwrap(), 1);
        let mut left: Vec<_> = rt
            .list_containers()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        left.sort();
        let mut want = vec![latest, other];
        want.sort();
        assert_eq!(left, want);
    }

    fn observed(pairs: &[(Signal, u64, u64)]) -> Observations {
        pairs
            .iter()
            .map(|(s, available, capacity)| {
                (
                    *s,
                    Observation {
                        available: *available,
                        capacity: *capacity,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn conditions_hold_for_the_transition_period_after_the_last_met_threshold() {
        let t = thresholds::parse_thresholds(
            "--eviction-hard",
            "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%",
        )
        .unwrap();
        let transition = Duration::from_secs(30);
        let start = Instant::now();
        let mut state = PressureState::default();

        let disk_full = observed(&[
            (Signal::MemoryAvailable, 1 << 30, 4 << 30),
            (Signal::NodeFsAvailable, 5, 100),
            (Signal::ImageFsAvailable, 50, 100),
        ]);
        let m = met(&t, &disk_full);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].signal, Signal::NodeFsAvailable);
        let p = state.update(&m, start, transition);
        assert_eq!(
            p,
            NodePressure {
                memory: false,
                disk: true
            }
        );

        let fine = observed(&[
            (Signal::MemoryAvailable, 1 << 30, 4 << 30),
            (Signal::NodeFsAvailable, 50, 100),
        ]);
        let m = met(&t, &fine);
        assert!(m.is_empty());
        let p = state.update(&m, start + Duration::from_secs(29), transition);
        assert!(p.disk, "still within the transition period");
        let p = state.update(&m, start + Duration::from_secs(31), transition);
        assert_eq!(p, NodePressure::default());

        // memory first, whatever order the flag has
        let both = observed(&[
            (Signal::MemoryAvailable, 1 << 20, 4 << 30),
            (Signal::NodeFsAvailable, 5, 100),
        ]);
        let m = met(&t, &both);
        assert_eq!(m[0].signal, Signal::MemoryAvailable);
        let p = state.update(&m, start + Duration::from_secs(40), transition);
        assert_eq!(
            p,
            NodePressure {
                memory: true,
                disk: true
            }
        );
    }
}
