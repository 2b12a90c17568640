//! The pod workers: one task per pod bound to this node, serialised per pod and
//! level-triggered. Each sync compares the pod's spec with what containerd has (containers
//! labelled with the pod uid, container name and restart attempt), starts, restarts and
//! stops containers, and writes `status` when it differs from what the apiserver has.
//!
//! Everything a restarted kubelet needs is in containerd and the root dir: the current and
//! the previous container of each spec container are kept (the previous for `lastState`
//! and `logs --previous`), older ones are removed; the restart count is the attempt label.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt as _;
use rkube_api::core::v1::{
    Container, ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as ApiStatus, HostIp, Pod, PodCondition, PodIp, PodStatus,
};
use rkube_api::Resource as _;
use rkube_client::{object_reference, Api, Client, DeleteParams, EventType, Recorder, Store};
use tokio::sync::watch;

use crate::config::Config;
use crate::image::credentials::candidates;
use crate::image::{PullError, Reference};
use crate::network::{PodNetworkConfig, PodNetworkStatus, PortMapping, Protocol};
use crate::node::NetworkSlot;
use crate::pod_worker_config::{build_env, pull_credentials, resources, user};
use crate::probes::{self, ProbeBoard, ProbeTarget};
use crate::runtime::{
    labels, ContainerConfig, ContainerId, ContainerNetwork, ContainerRuntime, ContainerState,
    ContainerStatus, PullOptions, RegistryAuth, RuntimeEvent,
};
use crate::volumes::{self, PodDirs};

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
}

impl Shared {
    fn event(&self, pod: &Pod, warning: bool, reason: &str, message: String) {
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

    fn current_network(&self) -> Option<Arc<dyn crate::network::PodNetwork>> {
        self.network.borrow().clone()
    }

    fn pod_dirs(&self, uid: &str) -> PodDirs {
        PodDirs::new(&self.config.root_dir, uid)
    }
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default()
}

fn key_of(pod: &Pod) -> String {
    let m = pod.metadata.clone().unwrap_or_default();
    format!("{}/{}", m.namespace, m.name)
}

fn rfc3339(t: SystemTime) -> String {
    rkube_api::time::format(t.into())
}

/// Dispatches informer changes to per-pod workers and cleans up pods that vanished.
pub struct PodManager {
    shared: Arc<Shared>,
    workers: Mutex<HashMap<String, watch::Sender<Option<Arc<Pod>>>>>,
    /// Worker tasks, aborted when the manager stops (a stopped kubelet leaves no worker
    /// behind; the containers keep running).
    tasks: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

/// Aborts every worker when `PodManager::run` ends or is dropped.
struct AbortWorkers(Arc<PodManager>);

impl Drop for AbortWorkers {
    fn drop(&mut self) {
        for (_, task) in self.0.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            task.abort();
        }
    }
}

impl PodManager {
    pub fn new(shared: Arc<Shared>) -> Arc<Self> {
        Arc::new(PodManager {
            shared,
            workers: Mutex::new(HashMap::new()),
            tasks: Mutex::new(HashMap::new()),
        })
    }

    fn dispatch(self: &Arc<Self>, uid: String, pod: Option<Arc<Pod>>) {
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = workers.get(&uid) {
            if tx.send(pod.clone()).is_ok() {
                return;
            }
        }
        let Some(pod) = pod else {
            // Gone before a worker ever ran: clean up whatever is left on the node.
            let shared = self.shared.clone();
            tokio::spawn(async move { cleanup_orphan(&shared, &uid, Duration::from_secs(2)).await });
            return;
        };
        let (tx, rx) = watch::channel(Some(pod));
        workers.insert(uid.clone(), tx);
        let me = self.clone();
        let worker_uid = uid.clone();
        let task = tokio::spawn(async move {
            PodWorker::new(me.shared.clone(), worker_uid.clone())
                .run(rx)
                .await;
            me.workers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&worker_uid);
            me.tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&worker_uid);
        });
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid, task.abort_handle());
    }

    /// Runs until dropped: feeds every change of `informer` to its pod's worker.
    pub async fn run(self: Arc<Self>, informer: rkube_client::Informer<Pod>) {
        let _abort = AbortWorkers(self.clone());
        let mut changes = informer.subscribe();
        if let Err(e) = informer.start() {
            tracing::error!("starting the pod informer: {e}");
            return;
        }
        informer.wait_until_synced().await;
        for pod in self.shared.pods.list() {
            self.dispatch(uid_of(&pod), Some(pod));
        }
        self.sweep_orphans().await;
        let mut housekeeping = tokio::time::interval(Duration::from_secs(60));
        housekeeping.tick().await;
        // Exits wake their pod's worker at once; the workers' periodic resync is only the
        // safety net, which is what keeps an idle node's kubelet nearly idle.
        let mut exits = self.shared.runtime.exit_events();
        let mut exits_open = true;
        loop {
            tokio::select! {
                event = exits.recv(), if exits_open => match event {
                    Some(RuntimeEvent::Exited { pod_uid: Some(uid), .. }) => self.wake(Some(&uid)),
                    Some(RuntimeEvent::Exited { pod_uid: None, .. }) => {}
                    Some(RuntimeEvent::Resync) => self.wake(None),
                    None => exits_open = false,
                },
                change = changes.next() => {
                    let Some(change) = change else { return };
                    match (&change.new, &change.old) {
                        (Some(new), _) => self.dispatch(uid_of(new), Some(new.clone())),
                        (None, Some(old)) => self.dispatch(uid_of(old), None),
                        (None, None) => {}
                    }
                }
                _ = housekeeping.tick() => self.sweep_orphans().await,
            }
        }
    }

    /// Makes the worker of pod `uid` (every worker for `None`) sync now.
    fn wake(&self, uid: Option<&str>) {
        let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        for (worker_uid, tx) in workers.iter() {
            if uid.is_none_or(|u| u == worker_uid) {
                tx.send_modify(|_| {});
            }
        }
    }

    /// Cleans up containers, network namespaces and pod directories of pods the apiserver
    /// no longer has (deleted while the kubelet was down, or force-deleted).
    async fn sweep_orphans(self: &Arc<Self>) {
        let known: HashSet<String> = self.shared.pods.list().iter().map(|p| uid_of(p)).collect();
        let mut orphans: HashSet<String> = HashSet::new();
        match self.shared.runtime.list_containers().await {
            Ok(list) => {
                for c in list {
                    if let Some(uid) = c.labels.get(labels::POD_UID) {
                        if !known.contains(uid) {
                            orphans.insert(uid.clone());
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("listing containers for orphan cleanup: {e}"),
        }
        for dir in [
            self.shared.config.run_dir.join("netns"),
            self.shared.config.root_dir.join("pods"),
        ] {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.filter_map(Result::ok) {
                    let uid = e.file_name().to_string_lossy().into_owned();
                    if !known.contains(&uid) {
                        orphans.insert(uid);
                    }
                }
            }
        }
        let active: HashSet<String> = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for uid in orphans.into_iter().filter(|u| !active.contains(u)) {
            tracing::info!(pod_uid = %uid, "cleaning up a pod the apiserver no longer has");
            cleanup_orphan(&self.shared, &uid, Duration::from_secs(2)).await;
        }
    }
}

/// Stops and removes everything of pod `uid` on this node.
async fn cleanup_orphan(shared: &Shared, uid: &str, grace: Duration) {
    let containers = match shared.runtime.list_containers().await {
        Ok(list) => list
            .into_iter()
            .filter(|c| c.labels.get(labels::POD_UID).map(String::as_str) == Some(uid))
            .map(|c| c.id)
            .collect::<Vec<_>>(),
        Err(e) => {
            tracing::warn!(pod_uid = %uid, "listing containers: {e}");
            return;
        }
    };
    futures::future::join_all(containers.iter().map(|id| async move {
        if let Err(e) = shared.runtime.stop_container(id, grace).await {
            tracing::warn!(pod_uid = %uid, container = %id, "stopping: {e}");
        }
        if let Err(e) = shared.runtime.remove_container(id).await {
            tracing::warn!(pod_uid = %uid, container = %id, "removing: {e}");
        }
    }))
    .await;
    teardown_node_state(shared, uid).await;
}

/// Network, pod directory and cgroup of a pod whose containers are gone.
async fn teardown_node_state(shared: &Shared, uid: &str) {
    let network = shared.current_network();
    if let Some(network) = network {
        if let Err(e) = network.teardown(uid).await {
            tracing::warn!(pod_uid = %uid, "tearing down the pod network: {e}");
        }
    } else {
        let _ = crate::network::netns::remove(&shared.config.run_dir.join("netns").join(uid));
    }
    if let Err(e) = volumes::unmount_pod_volumes(&shared.pod_dirs(uid)) {
        tracing::warn!(pod_uid = %uid, "unmounting the pod's memory-backed volumes: {e}");
    }
    let dir = shared.pod_dirs(uid).root;
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(pod_uid = %uid, "removing {}: {e}", dir.display());
        }
    }
    (shared.remove_cgroup)(uid);
}

/// One container instance as containerd reports it.
#[derive(Debug, Clone)]
struct Instance {
    id: ContainerId,
    attempt: u32,
    status: ContainerStatus,
}

impl Instance {
    fn exited(&self) -> Option<(i32, bool)> {
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
    fn running(&self) -> bool {
        self.status.state == ContainerState::Running
    }
    /// How long this instance ran, once it exited (zero when a time is unknown).
    fn ran_for(&self) -> Duration {
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
    fn streak_before(&self) -> u32 {
        self.status
            .labels
            .get(labels::CRASH_STREAK)
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.attempt)
    }
    /// The crash streak including this (exited) instance's run.
    fn crash_streak(&self, reset: Duration) -> u32 {
        crash_streak(self.streak_before(), self.ran_for(), reset)
    }
    fn terminated(&self) -> ContainerStateTerminated {
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
    /// Consecutive image pull failures and when the next pull may be tried.
    pull_failures: u32,
    pull_retry_at: Option<SystemTime>,
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
    probes: Arc<ProbeBoard>,
    /// The pod as our last status write returned it.
    written: Option<Pod>,
    start_time: Option<String>,
    /// A pod-level problem shown on containers still waiting to be created.
    pod_waiting: Option<String>,
    /// The last pod seen, for cleanup when it disappears.
    last_pod: Option<Arc<Pod>>,
}

enum Next {
    Continue(Duration),
    Done,
}

impl PodWorker {
    fn new(shared: Arc<Shared>, uid: String) -> Self {
        PodWorker {
            dirs: shared.pod_dirs(&uid),
            shared,
            uid,
            adopted: false,
            tracks: HashMap::new(),
            net: None,
            volumes: None,
            volumes_at: Instant::now(),
            probes: Arc::new(ProbeBoard::default()),
            written: None,
            start_time: None,
            pod_waiting: None,
            last_pod: None,
        }
    }

    async fn run(mut self, mut rx: watch::Receiver<Option<Arc<Pod>>>) {
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

    async fn sync(&mut self, pod: &Arc<Pod>) -> Next {
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

    /// Finds the containers a previous kubelet started for this pod.
    async fn adopt(&mut self) -> anyhow::Result<()> {
        let list = self.shared.runtime.list_containers().await?;
        let mut by_name: HashMap<String, Vec<(u32, ContainerId)>> = HashMap::new();
        for c in list {
            if let Some(identity) = c.identity().filter(|i| i.pod_uid == self.uid) {
                by_name
                    .entry(identity.container_name)
                    .or_default()
                    .push((identity.restart_attempt, c.id));
            }
        }
        for (name, mut instances) in by_name {
            instances.sort_by_key(|i| std::cmp::Reverse(i.0));
            let track = self.tracks.entry(name).or_default();
            for (i, (attempt, id)) in instances.into_iter().enumerate() {
                if i >= 2 {
                    let _ = self.shared.runtime.remove_container(&id).await;
                    continue;
                }
                let status = self.shared.runtime.container_status(&id).await?;
                let instance = Instance { id, attempt, status };
                if i == 0 {
                    track.current = Some(instance);
                } else {
                    track.previous = Some(instance);
                }
            }
        }
        self.net = match self.shared.current_network() {
            Some(n) => n.status(&self.uid).await.ok().flatten(),
            None => None,
        };
        self.adopted = true;
        Ok(())
    }

    async fn sync_running(&mut self, pod: &Arc<Pod>) -> anyhow::Result<Duration> {
        if !self.adopted {
            self.adopt().await?;
        }
        let spec = pod.spec.clone().unwrap_or_default();
        let mut next = self.shared.config.pod_poll_interval;
        // What containerd says now.
        for track in self.tracks.values_mut() {
            if let Some(cur) = &mut track.current {
                if cur.exited().is_some() {
                    continue;
                }
                match self.shared.runtime.container_status(&cur.id).await {
                    Ok(s) => cur.status = s,
                    Err(e) if e.is_not_found() => track.current = None,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let already_terminal = matches!(current_phase(pod, &self.written).as_str(), "Succeeded" | "Failed");
        if self.start_time.is_none() {
            self.start_time = pod
                .status
                .as_ref()
                .map(|s| s.start_time.clone())
                .filter(|s| !s.is_empty())
                .or_else(|| Some(crate::node::now_rfc3339()));
        }

        if !already_terminal {
            self.pod_waiting = None;
            if let Err(why) = self.ensure_sandbox(pod, &spec).await {
                self.pod_waiting = Some(why);
                next = next.min(Duration::from_secs(1));
            } else {
                next = next.min(self.run_containers(pod, &spec).await);
            }
        }
        self.manage_probe_tasks(pod, &spec);
        self.write_status(pod, &spec).await?;
        Ok(next)
    }

    /// Network, volumes and the /etc files. `Err` says why the pod cannot start yet.
    async fn ensure_sandbox(
        &mut self,
        pod: &Arc<Pod>,
        spec: &rkube_api::core::v1::PodSpec,
    ) -> Result<(), String> {
        let meta = pod.metadata.clone().unwrap_or_default();
        if !spec.host_network && self.net.is_none() {
            let Some(network) = self.shared.current_network() else {
                return Err(format!(
                    "network is not ready: node {} has no pod CIDR yet",
                    self.shared.config.node_name
                ));
            };
            let config = PodNetworkConfig {
                pod_uid: self.uid.clone(),
                pod_namespace: meta.namespace.clone(),
                pod_name: meta.name.clone(),
                port_mappings: port_mappings(spec),
            };
            match network.setup(&config).await {
                Ok(n) => self.net = Some(n),
                Err(e) => {
                    let msg = format!("setting up the pod network: {}", crate::error_report(&e));
                    self.shared
                        .event(pod, true, "FailedCreatePodSandBox", msg.clone());
                    return Err(msg);
                }
            }
        }
        let refresh = self.volumes.is_none() || self.volumes_at.elapsed() >= self.shared.config.resync_period;
        if refresh {
            match volumes::prepare(&self.shared.client, pod, &self.dirs).await {
                Ok(v) => {
                    self.volumes = Some(v);
                    self.volumes_at = Instant::now();
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.shared.event(pod, true, "FailedMount", msg.clone());
                    if self.volumes.is_none() {
                        return Err(msg);
                    }
                }
            }
        }
        let hostname = hostname_of(pod);
        if let Err(e) = volumes::write_etc_files(&self.dirs, &self.pod_ip(), &hostname, spec.host_network) {
            return Err(format!("writing /etc/hosts of pod {}: {e}", key_of(pod)));
        }
        Ok(())
    }

    fn pod_ip(&self) -> String {
        match &self.net {
            Some(n) => n.ip.to_string(),
            None => self.shared.config.node_ip.to_string(),
        }
    }

    fn pod_ip_addr(&self) -> Option<IpAddr> {
        Some(
            self.net
                .as_ref()
                .map(|n| n.ip)
                .unwrap_or(self.shared.config.node_ip),
        )
    }

    /// Init containers in order, then the app containers. Returns when to look again.
    async fn run_containers(&mut self, pod: &Arc<Pod>, spec: &rkube_api::core::v1::PodSpec) -> Duration {
        let mut next = self.shared.config.pod_poll_interval;
        let policy = spec.restart_policy.as_str();
        for c in &spec.init_containers {
            let t = self.tracks.entry(c.name.clone()).or_default();
            match t.current.as_ref().map(|i| (i.exited(), i.running())) {
                Some((Some((0, _)), _)) => continue,
                Some((Some(_), _)) if policy == "Never" => return next,
                Some((None, true)) => return next,
                _ => {
                    if let Some(wait) = self.start_if_due(pod, c, true).await {
                        next = next.min(wait);
                    }
                    return next;
                }
            }
        }
        for c in &spec.containers {
            let t = self.tracks.entry(c.name.clone()).or_default();
            // Liveness or startup probe failed: kill, and let the restart policy decide.
            if let Some(cur) = t.current.clone().filter(|i| i.running()) {
                if let Some(msg) = self.probes.get(&cur.id).failed {
                    self.shared.event(pod, false, "Killing", msg);
                    let grace = grace_for_probe(pod, c);
                    if let Err(e) = self.shared.runtime.stop_container(&cur.id, grace).await {
                        tracing::warn!(pod = %key_of(pod), container = %c.name, "stopping after a failed probe: {e}");
                    }
                    self.probes.forget(&cur.id);
                    if let Ok(s) = self.shared.runtime.container_status(&cur.id).await {
                        if let Some(t) = self.tracks.get_mut(&c.name) {
                            if let Some(i) = &mut t.current {
                                i.status = s;
                            }
                        }
                    }
                }
            }
            let t = self.tracks.entry(c.name.clone()).or_default();
            let restart = match t.current.as_ref().map(|i| i.exited()) {
                None => true,
                Some(None) => false,
                Some(Some((code, _))) => match policy {
                    "Never" => false,
                    "OnFailure" => code != 0,
                    _ => true,
                },
            };
            if restart {
                if let Some(wait) = self.start_if_due(pod, c, false).await {
                    next = next.min(wait);
                }
            }
        }
        next
    }

    /// Starts the container's next attempt unless a back-off holds it; returns how long
    /// until it may be tried again when it did not start.
    async fn start_if_due(&mut self, pod: &Arc<Pod>, c: &Container, _init: bool) -> Option<Duration> {
        let config = self.shared.config.clone();
        let t = self.tracks.entry(c.name.clone()).or_default();
        let now = SystemTime::now();
        // CrashLoopBackOff: the n-th quick exit in a row waits base * 2^(n-2), capped; a
        // long enough run starts the count again.
        if let Some(cur) = &t.current {
            if cur.exited().is_some() {
                let delay = backoff(cur.crash_streak(config.crashloop_backoff_reset), &config);
                let finished = match cur.status.state {
                    ContainerState::Exited {
                        finished_at: Some(f), ..
                    } => f,
                    _ => now,
                };
                let due = finished + delay;
                if delay > Duration::ZERO && due > now {
                    let message = format!(
                        "back-off {} restarting failed container={} pod={}_{}({})",
                        human(delay),
                        c.name,
                        pod.name(),
                        pod.namespace(),
                        self.uid
                    );
                    if t.waiting.as_ref().map(|w| w.0.as_str()) != Some("CrashLoopBackOff") {
                        self.shared.event(
                            pod,
                            true,
                            "BackOff",
                            format!(
                                "Back-off restarting failed container {} in pod {}",
                                c.name,
                                key_of(pod)
                            ),
                        );
                    }
                    t.waiting = Some(("CrashLoopBackOff".into(), message));
                    return Some(due.duration_since(now).unwrap_or_default());
                }
            }
        }
        if let Some(at) = t.pull_retry_at {
            if at > now {
                let last = t.waiting.clone().map(|w| w.1).unwrap_or_default();
                t.waiting = Some((
                    "ImagePullBackOff".into(),
                    format!("Back-off pulling image {:?}: {last}", c.image)
                        .replace(": Back-off pulling image", ":"),
                ));
                return Some(at.duration_since(now).unwrap_or_default());
            }
        }
        self.start(pod, c).await.err()
    }

    /// Pull, configure, create and start one attempt of `c`.
    async fn start(&mut self, pod: &Arc<Pod>, c: &Container) -> Result<(), Duration> {
        let shared = self.shared.clone();
        let rt = shared.runtime.clone();
        // Image.
        let image_id = match self.ensure_image(pod, c).await {
            Ok(id) => id,
            Err(wait) => return Err(wait),
        };
        let pod_ip = self.pod_ip();
        let host_ip = shared.config.node_ip.to_string();
        let env = match build_env(&shared.client, pod, c, &pod_ip, &host_ip).await {
            Ok(env) => env,
            Err(e) => return Err(self.config_error(pod, c, e.0)),
        };
        let res = match resources(c) {
            Ok(r) => r,
            Err(e) => return Err(self.config_error(pod, c, e.0)),
        };
        let volumes = self.volumes.clone().unwrap_or_default();
        let mounts = match volumes::mounts_for(pod, c, &volumes, &self.dirs) {
            Ok(m) => m,
            Err(e) => return Err(self.config_error(pod, c, e.to_string())),
        };
        let (run_as_user, run_as_group) = user(pod, c);
        let meta = pod.metadata.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let t = self.tracks.entry(c.name.clone()).or_default();
        let attempt = t.current.as_ref().map(|i| i.attempt + 1).unwrap_or(0);
        let streak = t
            .current
            .as_ref()
            .map(|i| i.crash_streak(shared.config.crashloop_backoff_reset))
            .unwrap_or(0);
        let config = ContainerConfig {
            pod_uid: self.uid.clone(),
            pod_namespace: meta.namespace.clone(),
            pod_name: meta.name.clone(),
            name: c.name.clone(),
            restart_attempt: attempt,
            image: c.image.clone(),
            // `$(NAME)` in command and args refers to the container's env (not the image's).
            command: c
                .command
                .iter()
                .map(|a| crate::expansion::expand(a, &env))
                .collect(),
            args: c.args.iter().map(|a| crate::expansion::expand(a, &env)).collect(),
            env,
            working_dir: Some(c.working_dir.clone()).filter(|w| !w.is_empty()),
            mounts,
            network: match (&self.net, spec.host_network) {
                (_, true) => ContainerNetwork::Host,
                (Some(n), false) => ContainerNetwork::Namespace(n.netns_path.clone()),
                (None, false) => ContainerNetwork::Isolated,
            },
            hostname: Some(hostname_of(pod)),
            resources: res,
            run_as_user,
            run_as_group,
            labels: [(labels::CRASH_STREAK.to_string(), streak.to_string())].into(),
        };
        let id = match rt.create_container(&config).await {
            Ok(id) => id,
            Err(e) => {
                let msg = crate::error_report(&e);
                shared.event(pod, true, "Failed", format!("Error: {msg}"));
                t.waiting = Some(("CreateContainerError".into(), msg));
                return Err(backoff(1, &shared.config));
            }
        };
        shared.event(pod, false, "Created", format!("Created container {}", c.name));
        let log = self.dirs.log(&c.name, attempt);
        if let Err(e) = rt.start_container(&id, &log).await {
            let msg = crate::error_report(&e);
            shared.event(pod, true, "Failed", format!("Error: {msg}"));
            let _ = rt.remove_container(&id).await;
            t.waiting = Some(("RunContainerError".into(), msg));
            return Err(backoff(1, &shared.config));
        }
        shared.event(pod, false, "Started", format!("Started container {}", c.name));
        let status = match rt.container_status(&id).await {
            Ok(s) => s,
            Err(_) => ContainerStatus {
                id: id.clone(),
                state: ContainerState::Running,
                started_at: Some(SystemTime::now()),
                pid: None,
                image: c.image.clone(),
                labels: Default::default(),
                log_path: Some(log),
            },
        };
        // Keep the attempt before this one (lastState, `logs --previous`); drop older ones.
        let older = t.previous.take();
        t.previous = t.current.take();
        t.current = Some(Instance { id, attempt, status });
        t.waiting = None;
        t.image_id = image_id;
        if let Some(old) = older {
            let _ = rt.remove_container(&old.id).await;
        }
        if attempt >= 2 {
            let _ = std::fs::remove_file(self.dirs.log(&c.name, attempt - 2));
        }
        Ok(())
    }

    fn config_error(&mut self, pod: &Arc<Pod>, c: &Container, msg: String) -> Duration {
        let t = self.tracks.entry(c.name.clone()).or_default();
        if t.waiting.as_ref().map(|w| &w.1) != Some(&msg) {
            self.shared.event(pod, true, "Failed", format!("Error: {msg}"));
        }
        t.waiting = Some(("CreateContainerConfigError".into(), msg));
        self.retry_soon()
    }

    /// When to try again after a problem the user is likely fixing right now (a missing
    /// ConfigMap, an image to be loaded): sooner than the periodic resync.
    fn retry_soon(&self) -> Duration {
        self.shared.config.pod_poll_interval.min(Duration::from_secs(2))
    }

    /// Pulls per imagePullPolicy; returns the image's repo digest, or how long to wait.
    async fn ensure_image(&mut self, pod: &Arc<Pod>, c: &Container) -> Result<String, Duration> {
        let shared = self.shared.clone();
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
        let t = self.tracks.entry(c.name.clone()).or_default();
        if let Some(info) = present {
            return Ok(info.repo_digest);
        }
        if policy == "Never" {
            let msg = format!(
                "Container image {:?} is not present with pull policy of Never",
                c.image
            );
            if t.waiting.as_ref().map(|w| w.0.as_str()) != Some("ErrImageNeverPull") {
                shared.event(pod, true, "ErrImageNeverPull", msg.clone());
            }
            t.waiting = Some(("ErrImageNeverPull".into(), msg));
            return Err(self.retry_soon());
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
        let mut result = Err(crate::runtime::Error::ImageNotPresent {
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
                Err(crate::runtime::Error::Pull(PullError::Unauthorized { .. }))
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
                t.pull_failures = 0;
                t.pull_retry_at = None;
                Ok(info.repo_digest)
            }
            Err(e) => {
                let msg = crate::error_report(&e);
                shared.event(
                    pod,
                    true,
                    "Failed",
                    format!("Failed to pull image {:?}: {msg}", c.image),
                );
                t.pull_failures += 1;
                let wait = backoff(t.pull_failures + 1, &shared.config);
                t.pull_retry_at = Some(SystemTime::now() + wait);
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

    /// Starts probe tasks for running containers with probes, stops the others' tasks.
    fn manage_probe_tasks(&mut self, pod: &Arc<Pod>, spec: &rkube_api::core::v1::PodSpec) {
        let netns = self.net.as_ref().map(|n| n.netns_path.clone());
        let pod_ip = self.pod_ip_addr();
        for c in &spec.containers {
            let Some(t) = self.tracks.get_mut(&c.name) else {
                continue;
            };
            let running = t.current.as_ref().filter(|i| i.running()).map(|i| i.id.clone());
            let same = match (&t.probe_task, &running) {
                (Some((id, _)), Some(r)) => id == r,
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            if let Some((id, task)) = t.probe_task.take() {
                task.abort();
                self.probes.forget(&id);
            }
            if let Some(id) = running {
                if !probes::has_probes(c) {
                    continue;
                }
                let target = ProbeTarget {
                    runtime: self.shared.runtime.clone(),
                    id: id.clone(),
                    container: c.clone(),
                    pod_ip,
                    netns: netns.clone(),
                };
                let shared = self.shared.clone();
                let pod_for_events = pod.clone();
                let event: probes::EventFn = Arc::new(move |reason, message| {
                    shared.event(&pod_for_events, true, reason, message);
                });
                let task = tokio::spawn(probes::run(target, self.probes.clone(), event));
                t.probe_task = Some((id, task));
            }
        }
    }

    fn container_status(&self, c: &Container, is_init: bool) -> ApiStatus {
        let t = self.tracks.get(&c.name);
        let current = t.and_then(|t| t.current.as_ref());
        let waiting = |reason: &str, message: &str| ApiState {
            waiting: Some(ContainerStateWaiting {
                reason: reason.into(),
                message: message.into(),
            }),
            ..Default::default()
        };
        let terminated = |i: &Instance| ApiState {
            terminated: Some(i.terminated()),
            ..Default::default()
        };
        let mut ready = false;
        let mut started = None;
        let (state, last) = match current {
            None => {
                let (reason, message) = match (t.and_then(|t| t.waiting.clone()), &self.pod_waiting) {
                    (Some(w), _) => w,
                    (None, Some(m)) => ("ContainerCreating".to_string(), m.clone()),
                    (None, None) if is_init => ("PodInitializing".to_string(), String::new()),
                    (None, None) => ("ContainerCreating".to_string(), String::new()),
                };
                (waiting(&reason, &message), None)
            }
            Some(i) => {
                let last = t.and_then(|t| t.previous.as_ref()).map(terminated);
                match &i.status.state {
                    ContainerState::Running => {
                        let probes = self.probes.get(&i.id);
                        let s = if c.startup_probe.is_some() {
                            probes.started
                        } else {
                            true
                        };
                        started = Some(s);
                        ready = if is_init {
                            false
                        } else if c.readiness_probe.is_some() || c.startup_probe.is_some() {
                            probes.ready && s
                        } else {
                            true
                        };
                        (
                            ApiState {
                                running: Some(ContainerStateRunning {
                                    started_at: i.status.started_at.map(rfc3339).unwrap_or_default(),
                                }),
                                ..Default::default()
                            },
                            last,
                        )
                    }
                    ContainerState::Created => (waiting("ContainerCreating", ""), last),
                    _ => {
                        started = Some(false);
                        ready = is_init && i.exited() == Some((0, false));
                        match t.and_then(|t| t.waiting.clone()) {
                            Some((reason, message)) => (waiting(&reason, &message), Some(terminated(i))),
                            None => (terminated(i), last),
                        }
                    }
                }
            }
        };
        ApiStatus {
            name: c.name.clone(),
            state: Some(state),
            last_state: Some(last.unwrap_or_default()),
            ready,
            restart_count: current.map(|i| i.attempt as i32).unwrap_or(0),
            image: c.image.clone(),
            image_id: t.map(|t| t.image_id.clone()).unwrap_or_default(),
            container_id: current
                .map(|i| format!("containerd://{}", i.id))
                .unwrap_or_default(),
            started: if is_init {
                None
            } else {
                Some(started.unwrap_or(false))
            },
        }
    }

    fn compute_status(&self, pod: &Pod, spec: &rkube_api::core::v1::PodSpec) -> PodStatus {
        let old = pod.status.clone().unwrap_or_default();
        let policy = spec.restart_policy.as_str();
        let init_statuses: Vec<ApiStatus> = spec
            .init_containers
            .iter()
            .map(|c| self.container_status(c, true))
            .collect();
        let statuses: Vec<ApiStatus> = spec
            .containers
            .iter()
            .map(|c| self.container_status(c, false))
            .collect();
        let exited = |name: &str| {
            self.tracks
                .get(name)
                .and_then(|t| t.current.as_ref())
                .and_then(Instance::exited)
        };
        let init_done = spec
            .init_containers
            .iter()
            .all(|c| exited(&c.name).is_some_and(|e| e.0 == 0));
        let init_failed = policy == "Never"
            && spec
                .init_containers
                .iter()
                .any(|c| exited(&c.name).is_some_and(|e| e.0 != 0));
        let previous_phase = current_phase(pod, &self.written);
        let phase = if matches!(previous_phase.as_str(), "Succeeded" | "Failed") {
            previous_phase
        } else if init_failed {
            "Failed".to_string()
        } else if !init_done {
            "Pending".to_string()
        } else {
            let finals: Vec<Option<i32>> = spec
                .containers
                .iter()
                .map(|c| {
                    exited(&c.name).and_then(|(code, _)| match policy {
                        "Never" => Some(code),
                        "OnFailure" if code == 0 => Some(code),
                        _ => None,
                    })
                })
                .collect();
            if !finals.is_empty() && finals.iter().all(Option::is_some) {
                if finals.iter().all(|c| *c == Some(0)) {
                    "Succeeded".to_string()
                } else {
                    "Failed".to_string()
                }
            } else if spec
                .containers
                .iter()
                .all(|c| self.tracks.get(&c.name).is_some_and(|t| t.current.is_some()))
            {
                "Running".to_string()
            } else {
                "Pending".to_string()
            }
        };
        let terminal = matches!(phase.as_str(), "Succeeded" | "Failed");
        let now = crate::node::now_rfc3339();
        let condition = |type_: &str, ok: bool, reason: &str, message: String| {
            let status = if ok { "True" } else { "False" }.to_string();
            let previous = old.conditions.iter().find(|c| c.r#type == type_);
            PodCondition {
                r#type: type_.into(),
                last_transition_time: match previous {
                    Some(p) if p.status == status && !p.last_transition_time.is_empty() => {
                        p.last_transition_time.clone()
                    }
                    _ => now.clone(),
                },
                status,
                last_probe_time: String::new(),
                reason: if ok { String::new() } else { reason.into() },
                message: if ok { String::new() } else { message },
            }
        };
        let incomplete: Vec<&str> = spec
            .init_containers
            .iter()
            .filter(|c| exited(&c.name).is_none_or(|e| e.0 != 0))
            .map(|c| c.name.as_str())
            .collect();
        let unready: Vec<&str> = statuses
            .iter()
            .filter(|s| !s.ready)
            .map(|s| s.name.as_str())
            .collect();
        let (ready_reason, ready_msg) = if terminal {
            ("PodCompleted", String::new())
        } else {
            (
                "ContainersNotReady",
                format!("containers with unready status: [{}]", unready.join(" ")),
            )
        };
        let all_ready = unready.is_empty() && !terminal;
        let scheduled = old
            .conditions
            .iter()
            .find(|c| c.r#type == "PodScheduled")
            .cloned()
            .unwrap_or_else(|| condition("PodScheduled", true, "", String::new()));
        let conditions = vec![
            condition(
                "Initialized",
                init_done || (terminal && incomplete.is_empty()),
                "ContainersNotInitialized",
                format!("containers with incomplete status: [{}]", incomplete.join(" ")),
            ),
            condition("Ready", all_ready, ready_reason, ready_msg.clone()),
            condition("ContainersReady", all_ready, ready_reason, ready_msg),
            scheduled,
        ];
        let host_ip = self.shared.config.node_ip.to_string();
        let pod_ip = if spec.host_network || self.net.is_some() {
            self.pod_ip()
        } else {
            String::new()
        };
        PodStatus {
            phase,
            conditions,
            message: self.pod_waiting.clone().unwrap_or_default(),
            reason: String::new(),
            host_ips: vec![HostIp { ip: host_ip.clone() }],
            host_ip,
            pod_ips: if pod_ip.is_empty() {
                vec![]
            } else {
                vec![PodIp { ip: pod_ip.clone() }]
            },
            pod_ip,
            start_time: self.start_time.clone().unwrap_or_default(),
            init_container_statuses: init_statuses,
            container_statuses: statuses,
            qos_class: old.qos_class.clone(),
            nominated_node_name: old.nominated_node_name.clone(),
        }
    }

    /// Writes the status if it differs from what the apiserver has, retrying conflicts.
    async fn write_status(
        &mut self,
        pod: &Arc<Pod>,
        spec: &rkube_api::core::v1::PodSpec,
    ) -> anyhow::Result<()> {
        let base = newer(pod, self.written.as_ref());
        let status = self.compute_status(&base, spec);
        if base.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), pod.namespace());
        let mut obj = base.clone();
        for attempt in 0..5 {
            obj.status = Some(status.clone());
            match api.update_status(&obj).await {
                Ok(stored) => {
                    self.written = Some(stored);
                    return Ok(());
                }
                Err(e) if e.is_conflict() && attempt < 4 => {
                    obj = api.get(pod.name()).await?;
                    if uid_of(&obj) != self.uid {
                        return Ok(());
                    }
                }
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// The pod is being deleted: stop its containers within the grace period, clean up the
    /// node, then delete the object for good.
    async fn terminate(&mut self, pod: &Arc<Pod>) -> Next {
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
        let rt = self.shared.runtime.clone();
        let results =
            futures::future::join_all(running.iter().map(|(_, id)| rt.stop_container(id, grace))).await;
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

fn current_phase(pod: &Pod, written: &Option<Pod>) -> String {
    let base = newer(pod, written.as_ref());
    base.status.as_ref().map(|s| s.phase.clone()).unwrap_or_default()
}

/// The more recent of the informer's copy and what our last write returned.
fn newer(pod: &Pod, written: Option<&Pod>) -> Pod {
    let rv = |p: &Pod| {
        p.metadata
            .as_ref()
            .and_then(|m| m.resource_version.parse::<u64>().ok())
            .unwrap_or(0)
    };
    match written {
        Some(w) if uid_of(w) == uid_of(pod) && rv(w) > rv(pod) => w.clone(),
        _ => pod.clone(),
    }
}

fn grace_period(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .as_ref()
        .and_then(|m| m.deletion_grace_period_seconds)
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

fn grace_for_probe(pod: &Pod, c: &Container) -> Duration {
    let probe = c
        .liveness_probe
        .as_ref()
        .and_then(|p| p.termination_grace_period_seconds)
        .or_else(|| {
            c.startup_probe
                .as_ref()
                .and_then(|p| p.termination_grace_period_seconds)
        });
    let seconds = probe
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

/// The crash streak after a run of `ran`, when `before` quick exits in a row preceded it: a
/// run of at least `reset` starts a new streak (it counts as its first exit), a shorter one
/// extends the streak.
fn crash_streak(before: u32, ran: Duration, reset: Duration) -> u32 {
    if ran >= reset {
        1
    } else {
        before.saturating_add(1)
    }
}

/// The CrashLoopBackOff delay before the next restart of a container whose runs so far
/// (oldest first) lasted `runs`: [`backoff`] of the streak of quick exits since the last
/// run that lasted `crashloop_backoff_reset` (that run included).
#[cfg(test)]
fn restart_delay(runs: &[Duration], config: &Config) -> Duration {
    let streak = runs.iter().fold(0, |before, ran| {
        crash_streak(before, *ran, config.crashloop_backoff_reset)
    });
    backoff(streak, config)
}

/// Delay before restart number `n` (1-based): none for the first, then base * 2^(n-2),
/// capped, as Kubernetes' kubelet does.
fn backoff(n: u32, config: &Config) -> Duration {
    if n <= 1 {
        return Duration::ZERO;
    }
    let factor = 2u32.saturating_pow((n - 2).min(20));
    config
        .crashloop_backoff_base
        .saturating_mul(factor)
        .min(config.crashloop_backoff_max)
}

fn human(d: Duration) -> String {
    if d.as_secs() >= 60 {
        format!("{}m{}s", d.as_secs() / 60, d.as_secs() % 60)
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn hostname_of(pod: &Pod) -> String {
    let spec_name = pod.spec.as_ref().map(|s| s.hostname.clone()).unwrap_or_default();
    let name = if spec_name.is_empty() {
        pod.name().to_string()
    } else {
        spec_name
    };
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

fn port_mappings(spec: &rkube_api::core::v1::PodSpec) -> Vec<PortMapping> {
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter())
        .filter(|p| p.host_port > 0)
        .filter_map(|p| {
            Some(PortMapping {
                host_port: u16::try_from(p.host_port).ok()?,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: match p.protocol.as_str() {
                    "UDP" => Protocol::Udp,
                    "SCTP" => Protocol::Sctp,
                    _ => Protocol::Tcp,
                },
                host_ip: p.host_ip.parse().ok(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_second_restart_and_is_capped() {
        let mut c = Config::new("http://x", "n");
        c.crashloop_backoff_base = Duration::from_secs(10);
        c.crashloop_backoff_max = Duration::from_secs(300);
        let d: Vec<u64> = (1..=8).map(|n| backoff(n, &c).as_secs()).collect();
        assert_eq!(d, vec![0, 10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn backoff_resets_after_a_run_as_long_as_the_reset_threshold() {
        let mut c = Config::new("http://x", "n");
        c.crashloop_backoff_base = Duration::from_secs(10);
        c.crashloop_backoff_max = Duration::from_secs(300);
        assert_eq!(
            c.crashloop_backoff_reset,
            Duration::from_secs(600),
            "Kubernetes' default"
        );
        let s = Duration::from_secs;
        let delay = |runs: &[u64]| {
            let runs: Vec<Duration> = runs.iter().map(|r| s(*r)).collect();
            restart_delay(&runs, &c).as_secs()
        };
        // Quick crashes: the same delays as by restart count.
        assert_eq!(delay(&[]), 0);
        assert_eq!(delay(&[1]), 0);
        assert_eq!(delay(&[1, 1]), 10);
        assert_eq!(delay(&[1; 7]), 300);
        for n in 1..=8 {
            assert_eq!(delay(&vec![1; n as usize]), backoff(n, &c).as_secs());
        }
        // A run of 10 minutes (or more) after a crash loop: restart at once, then start again
        // from the base delay.
        assert_eq!(delay(&[1, 1, 1, 1, 1, 1, 1, 600]), 0);
        assert_eq!(delay(&[1, 1, 1, 1, 1, 1, 1, 3600, 1]), 10);
        assert_eq!(delay(&[1, 1, 1, 1, 1, 1, 1, 3600, 1, 1]), 20);
        // Just short of the threshold does not reset.
        assert_eq!(delay(&[1, 1, 1, 1, 1, 1, 1, 599]), 300);
        // Long runs only: never a back-off.
        assert_eq!(delay(&[700, 700, 700]), 0);

        // The threshold is configurable.
        let mut short = c.clone();
        short.crashloop_backoff_reset = s(5);
        assert_eq!(restart_delay(&[s(1), s(1), s(1), s(5)], &short), s(0));
        assert_eq!(restart_delay(&[s(1), s(1), s(1), s(4)], &short), s(40));
        assert_eq!(restart_delay(&[s(1), s(5), s(4)], &short), s(10));

        // The label a restarted kubelet reads: streak before + this run.
        assert_eq!(crash_streak(6, s(1), s(5)), 7);
        assert_eq!(crash_streak(6, s(5), s(5)), 1);
        assert_eq!(crash_streak(u32::MAX, s(1), s(5)), u32::MAX);
    }
}
