//! The pod manager: one worker task per pod bound to this node, fed from the pod informer,
//! and the sweep of what pods that are gone left behind.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use rkube_api::core::v1::Pod;
use tokio::sync::watch;

use super::{uid_of, PodWorker, Shared};
use crate::volumes::{self};
use rkube_node_runtime::runtime::{labels, RuntimeEvent};

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

    pub(super) fn dispatch(self: &Arc<Self>, uid: String, pod: Option<Arc<Pod>>) {
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
        tracing::debug!(target: rkube_api::POD_STARTUP_TRACE, pod_uid = %uid, "kubelet_received");
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

    /// Evicts pod `uid` (node pressure): its worker kills its containers and reports it
    /// Failed with reason `Evicted` and `message`, as for an emptyDir over its sizeLimit.
    pub fn evict(&self, uid: &str, message: String) {
        self.shared
            .evictions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_string(), message);
        self.wake(Some(uid));
    }

    /// Makes the worker of pod `uid` (every worker for `None`) sync now.
    pub(super) fn wake(&self, uid: Option<&str>) {
        let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        for (worker_uid, tx) in workers.iter() {
            if uid.is_none_or(|u| u == worker_uid) {
                tx.send_modify(|_| {});
            }
        }
    }

    /// Cleans up containers, network namespaces and pod directories of pods the apiserver
    /// no longer has (deleted while the kubelet was down, or force-deleted).
    pub(super) async fn sweep_orphans(self: &Arc<Self>) {
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
pub(super) async fn cleanup_orphan(shared: &Shared, uid: &str, grace: Duration) {
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
pub(super) async fn teardown_node_state(shared: &Shared, uid: &str) {
    let network = shared.current_network();
    if let Some(network) = network {
        if let Err(e) = network.teardown(uid).await {
            tracing::warn!(pod_uid = %uid, "tearing down the pod network: {e}");
        }
    } else {
        let _ = rkube_node_runtime::network::netns::remove(&shared.config.run_dir.join("netns").join(uid));
    }
    if let Err(e) = volumes::unmount_pod_volumes(&shared.pod_dirs(uid)) {
        tracing::warn!(pod_uid = %uid, "unmounting the pod's memory-backed volumes: {e}");
    }
    let dir = shared.pod_dirs(uid).root;
    // never remove files through a mount that is still there (a claim's volume holds data
    // that outlives the pod)
    let left = rkube_node_runtime::mounts::mount_points_below(&dir);
    if !left.is_empty() {
        tracing::warn!(pod_uid = %uid, "not removing {}: still mounted: {left:?}", dir.display());
    } else if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(pod_uid = %uid, "removing {}: {e}", dir.display());
        }
    }
    // claims' volumes no other pod here uses are unmounted; deleted ones reclaimed
    crate::claims::release_unused(&shared.config.root_dir).await;
    crate::claims::reclaim_deleted(&shared.client, &shared.config.root_dir).await;
    (shared.remove_cgroup)(uid);
}
