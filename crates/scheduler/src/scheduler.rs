//! The scheduling loop and what feeds it.
//!
//! * The pod and node informers keep the [`Cache`] current and put pending
//!   pods that name this scheduler into the work queue.
//! * One loop takes a pod at a time, runs the [`Framework`] under the
//!   cache lock, *assumes* the pod on the chosen node and hands the Bind
//!   call to a task: up to `parallel_binds` binds are in flight while the
//!   loop goes on with the next pod. A failed bind forgets the assumption
//!   and requeues the pod.
//! * A pod that fits nowhere gets `PodScheduled=False` (reason
//!   `Unschedulable`) and a FailedScheduling event, and waits in the
//!   unschedulable set: it is retried with back-off, and at once when a
//!   node is added or changes in a way the filters notice, or when a pod
//!   that held node resources goes away.
//! * Pods are taken in priority order (`spec.priority`). A pod that fits
//!   nowhere may preempt: pods of lower priority are deleted from the node
//!   where that makes room (see [`crate::preemption`]), with a `Preempted`
//!   event, and the pod's `status.nominatedNodeName` says where it waits
//!   for them to go.
//! * Pods with `schedulingGates` are left alone until the gates are
//!   removed.
//! * Events are written by a separate task through a bounded channel, so
//!   the loop never waits on them; if the apiserver cannot keep up, events
//!   are dropped (as client-go's broadcaster does), never bindings.
//!
//! Restart safety: all state here is rebuilt from the apiserver. The
//! apiserver's Bind refuses a pod that is already bound or being deleted,
//! so a pod assumed by a process that died is either bound (and the new
//! process sees it bound) or still pending (and is scheduled again).

use crate::cache::Cache;
use crate::framework::{FitError, Framework};
use crate::pod_info::PodInfo;
use crate::preemption;
use crate::Config;
use futures::StreamExt;
use rand::SeedableRng;
use rkube_api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, PodCondition};
use rkube_api::policy::v1::PodDisruptionBudget;
use rkube_api::storage::v1::StorageClass;
use rkube_api::Resource;
use rkube_client::runtime::WatcherConfig;
use rkube_client::{
    object_reference, Api, Client, DeleteParams, EventType, Informer, Preconditions, Recorder, WorkQueue,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, Semaphore};
use tracing::Instrument as _;

/// Events waiting to be written; beyond this they are dropped.
const EVENT_BUFFER: usize = 16_384;
/// Events written at once.
const EVENT_WRITERS: usize = 16;

/// Counters a test or an operator can read.
#[derive(Debug, Default)]
pub struct Stats {
    pub scheduled: AtomicU64,
    pub unschedulable: AtomicU64,
    pub bind_failures: AtomicU64,
    /// Pods that evicted others to make room.
    pub preemptions: AtomicU64,
    pub events_dropped: AtomicU64,
}

struct EventMsg {
    pod: Arc<Pod>,
    event_type: EventType,
    reason: &'static str,
    message: String,
}

pub struct Scheduler {
    config: Config,
    client: Client,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    /// Their labels, for podAffinity terms' namespaceSelector.
    namespaces: Informer<Namespace>,
    /// PodDisruptionBudgets: preemption prefers victims that break none.
    /// Not waited for at start: budgets are a preference, and a scheduler
    /// that may not list them (RBAC) must still schedule.
    budgets: Informer<PodDisruptionBudget>,
    /// Claims, volumes and classes: where a pod's volumes are (VolumeBinding).
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    cache: Arc<Mutex<Cache>>,
    queue: WorkQueue,
    /// Pods that fit nowhere on their last attempt.
    unschedulable: Arc<Mutex<HashSet<String>>>,
    /// Pods that preempted, and the node they wait for (also written to
    /// their status; kept here so a retry before that write lands does not
    /// preempt again).
    nominated: Arc<Mutex<HashMap<String, String>>>,
    framework: Framework,
    events: mpsc::Sender<EventMsg>,
    events_rx: Mutex<Option<mpsc::Receiver<EventMsg>>>,
    recorder: Recorder,
    binds: Arc<Semaphore>,
    pub stats: Arc<Stats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Scheduler {
    pub fn new(config: Config, client: Client) -> Scheduler {
        let host = rkube_daemon::host_name();
        let recorder = Recorder::new(client.clone(), &config.scheduler_name, &host);
        let (events, events_rx) = mpsc::channel(EVENT_BUFFER);
        Scheduler {
            pods: Informer::new(Api::<Pod>::all(client.clone()), WatcherConfig::default()),
            nodes: Informer::new(Api::<Node>::all(client.clone()), WatcherConfig::default()),
            namespaces: Informer::new(Api::<Namespace>::all(client.clone()), WatcherConfig::default()),
            budgets: Informer::new(
                Api::<PodDisruptionBudget>::all(client.clone()),
                WatcherConfig::default(),
            ),
            claims: Informer::new(
                Api::<PersistentVolumeClaim>::all(client.clone()),
                WatcherConfig::default(),
            ),
            volumes: Informer::new(
                Api::<PersistentVolume>::all(client.clone()),
                WatcherConfig::default(),
            ),
            classes: Informer::new(Api::<StorageClass>::all(client.clone()), WatcherConfig::default()),
            cache: Arc::default(),
            queue: WorkQueue::with_backoff(config.pod_initial_backoff, config.pod_max_backoff),
            unschedulable: Arc::default(),
            nominated: Arc::default(),
            framework: Framework {
                percentage_of_nodes_to_score: config.percentage_of_nodes_to_score,
                ..Framework::default()
            },
            events,
            events_rx: Mutex::new(Some(events_rx)),
            recorder,
            binds: Arc::new(Semaphore::new(config.parallel_binds)),
            stats: Arc::default(),
            client,
            config,
        }
    }

    fn is_ours(&self, pod: &Pod) -> bool {
        let name = pod.spec.as_ref().map(|s| s.scheduler_name.as_str()).unwrap_or("");
        name.is_empty() || name == self.config.scheduler_name
    }

    /// A pod this scheduler should place now.
    fn wants(&self, pod: &Pod) -> bool {
        self.is_ours(pod)
            && pod
                .spec
                .as_ref()
                .is_some_and(|s| s.node_name.is_empty() && s.scheduling_gates.is_empty())
            && pod.metadata().deletion_timestamp.is_empty()
            && !matches!(
                pod.status.as_ref().map(|s| s.phase.as_str()),
                Some("Succeeded") | Some("Failed")
            )
    }

    /// Puts every pod that did not fit back into the queue.
    fn retry_unschedulable(&self) {
        let keys: Vec<String> = lock(&self.unschedulable).iter().cloned().collect();
        for k in keys {
            self.queue.add(k);
        }
    }

    fn on_pod(&self, old: Option<&Arc<Pod>>, new: Option<&Arc<Pod>>) {
        let Some(any) = new.or(old) else { return };
        let key = rkube_api::object_key(any.namespace(), any.name());
        let freed = lock(&self.cache).update_pod(&key, new.map(|p| p.as_ref()));
        match new {
            Some(p) if self.wants(p) => {
                // Our own status write (PodScheduled=False) must not
                // trigger another attempt; a change the plugins read must.
                let relevant =
                    old.is_none_or(|o| o.spec != p.spec || o.metadata().labels != p.metadata().labels);
                if old.is_none() {
                    tracing::debug!(target: rkube_api::POD_STARTUP_TRACE, pod_uid = %p.metadata().uid, "scheduler_received");
                }
                if relevant {
                    self.queue.add_ranked(key, rank(p));
                }
            }
            _ => {
                lock(&self.unschedulable).remove(&key);
                lock(&self.nominated).remove(&key);
            }
        }
        if freed {
            self.retry_unschedulable();
        }
    }

    fn on_node(&self, old: Option<&Arc<Node>>, new: Option<&Arc<Node>>) {
        match (new, old) {
            (Some(n), _) => {
                if lock(&self.cache).set_node(n.clone()) {
                    self.retry_unschedulable();
                }
            }
            (None, Some(o)) => lock(&self.cache).remove_node(o.name()),
            (None, None) => {}
        }
    }

    fn on_namespace(&self, old: Option<&Arc<Namespace>>, new: Option<&Arc<Namespace>>) {
        let Some(any) = new.or(old) else { return };
        let labels = new.map(|n| n.metadata().labels.clone());
        lock(&self.cache).set_namespace(any.name(), labels);
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        let mut pod_changes = self.pods.subscribe();
        let mut node_changes = self.nodes.subscribe();
        let mut namespace_changes = self.namespaces.subscribe();
        self.pods.start()?;
        self.nodes.start()?;
        self.namespaces.start()?;
        self.budgets.start()?;
        self.claims.start()?;
        self.volumes.start()?;
        self.classes.start()?;
        let mut shutdown = std::pin::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = async { tokio::join!(
                self.pods.wait_until_synced(),
                self.nodes.wait_until_synced(),
                self.namespaces.wait_until_synced(),
                self.claims.wait_until_synced(),
                self.volumes.wait_until_synced(),
                self.classes.wait_until_synced(),
            ) } => {}
        }
        // The caches are complete: build the picture from them before the
        // first attempt; the change streams replaying the same objects
        // afterwards change nothing.
        for n in self.nodes.store().list() {
            self.on_node(None, Some(&n));
        }
        for ns in self.namespaces.store().list() {
            self.on_namespace(None, Some(&ns));
        }
        for p in self.pods.store().list() {
            self.on_pod(None, Some(&p));
        }
        tracing::info!(
            nodes = lock(&self.cache).nodes().len(),
            pending = self.queue.len(),
            "caches synced; scheduling"
        );

        let mut tasks = tokio::task::JoinSet::new();
        let me = self.clone();
        tasks.spawn(async move {
            while let Some(c) = pod_changes.next().await {
                me.on_pod(c.old.as_ref(), c.new.as_ref());
            }
        });
        let me = self.clone();
        tasks.spawn(async move {
            while let Some(c) = node_changes.next().await {
                me.on_node(c.old.as_ref(), c.new.as_ref());
            }
        });
        let me = self.clone();
        tasks.spawn(async move {
            while let Some(c) = namespace_changes.next().await {
                me.on_namespace(c.old.as_ref(), c.new.as_ref());
            }
        });
        if let Some(rx) = lock(&self.events_rx).take() {
            let recorder = self.recorder.clone();
            tasks.spawn(write_events(recorder, rx));
        }
        let me = self.clone();
        tasks.spawn(async move { me.schedule_loop().await });

        shutdown.await;
        self.queue.shutdown();
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        // Binds already sent finish on their own; a Bind that lands after
        // we exit is seen bound by the next scheduler.
        Ok(())
    }

    async fn schedule_loop(self: Arc<Self>) {
        let mut rng = rand::rngs::StdRng::from_entropy();
        while let Some(key) = self.queue.get().await {
            // Back-pressure: no more than `parallel_binds` binds in flight.
            let permit = match self.binds.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => break,
            };
            self.schedule_one(&key, permit, &mut rng);
            self.queue.done(&key);
        }
    }

    fn schedule_one(
        self: &Arc<Self>,
        key: &str,
        permit: tokio::sync::OwnedSemaphorePermit,
        rng: &mut impl rand::Rng,
    ) {
        let Some(pod) = self.pods.store().get(key) else {
            lock(&self.unschedulable).remove(key);
            self.queue.forget(key);
            return;
        };
        if !self.wants(&pod) {
            lock(&self.unschedulable).remove(key);
            self.queue.forget(key);
            return;
        }
        let _span = tracing::debug_span!(target: rkube_api::POD_STARTUP_TRACE, "schedule", pod_uid = %pod.metadata().uid).entered();
        let info = match PodInfo::new(&pod) {
            Ok(mut i) => {
                let volumes = crate::plugins::volume_binding::claim_constraints(
                    &pod,
                    &self.claims.store(),
                    &self.volumes.store(),
                    &self.classes.store(),
                );
                match volumes {
                    Ok((affinity, waiting)) => {
                        i.volume_affinity = affinity;
                        i.waiting_claims = waiting;
                    }
                    Err(message) => {
                        // the binder or provisioner is at work: try again shortly
                        self.stats.unschedulable.fetch_add(1, Ordering::Relaxed);
                        lock(&self.unschedulable).insert(key.to_string());
                        self.queue.add_rate_limited(key);
                        self.mark_unschedulable(pod, message);
                        return;
                    }
                }
                i
            }
            Err(e) => {
                // Only a change to the pod can fix this; its update
                // requeues it.
                let message = format!("pod {key}: {e}");
                tracing::warn!("{message}");
                self.stats.unschedulable.fetch_add(1, Ordering::Relaxed);
                self.mark_unschedulable(pod, message);
                return;
            }
        };
        let nominated = self.nominated_before(&info);
        let placed = {
            let mut cache = lock(&self.cache);
            if cache.is_assumed(key, &info.uid) {
                // A Bind for it is in flight.
                return;
            }
            // Room made by preemption is kept for the pod that preempted
            // (and any other nominated pod at least as important): they
            // count on their nominated nodes while others are placed.
            let mut reserved = Vec::new();
            for (other, node) in &nominated {
                if cache.pod(&other.key).is_none() {
                    cache.assume(other, node);
                    reserved.push((other.key.clone(), other.uid.clone()));
                }
            }
            let placed = self.framework.schedule(&info, &mut cache, rng);
            for (k, uid) in &reserved {
                cache.forget(k, uid);
            }
            if let Ok(p) = &placed {
                cache.assume(&info, &p.node);
            }
            placed
        };
        match placed {
            Ok(p) => {
                lock(&self.unschedulable).remove(key);
                tracing::debug!(pod = key, node = %p.node, evaluated = p.evaluated, feasible = p.feasible, "assumed");
                let me = self.clone();
                tokio::spawn(async move {
                    me.bind(pod, info, p.node).await;
                    drop(permit);
                });
            }
            Err(fit) => {
                self.stats.unschedulable.fetch_add(1, Ordering::Relaxed);
                lock(&self.unschedulable).insert(key.to_string());
                self.queue.add_rate_limited(key);
                tracing::debug!(pod = key, "{fit}");
                self.preempt(&pod, &info);
                self.mark_unschedulable(pod, fit_message(&fit));
            }
        }
    }

    /// The nominated pods as important as `pod` (other than it), with
    /// their nominated nodes. Read before the cache lock is taken.
    fn nominated_before(&self, pod: &PodInfo) -> Vec<(PodInfo, String)> {
        let nominated: Vec<(String, String)> = lock(&self.nominated)
            .iter()
            .filter(|(k, _)| **k != pod.key)
            .map(|(k, n)| (k.clone(), n.clone()))
            .collect();
        nominated
            .into_iter()
            .filter_map(|(k, node)| {
                let p = self.pods.store().get(&k)?;
                let other = PodInfo::new(&p).ok()?;
                (other.priority >= pod.priority).then_some((other, node))
            })
            .collect()
    }

    /// Evicts lower-priority pods to make room for `pod`, if that helps
    /// anywhere; the pod is placed once they are gone (their deletion
    /// retries the unschedulable pods).
    fn preempt(&self, pod: &Arc<Pod>, info: &PodInfo) {
        let nominated = lock(&self.nominated).get(&info.key).cloned().or_else(|| {
            pod.status
                .as_ref()
                .map(|s| s.nominated_node_name.clone())
                .filter(|n| !n.is_empty())
        });
        let candidate = {
            let mut cache = lock(&self.cache);
            if nominated.is_some_and(|n| preemption::awaiting_victims(info, &cache, &n)) {
                return;
            }
            let budgets = preemption::Budgets::new(&self.budgets.store().list());
            preemption::find(&self.framework, info, &mut cache, &budgets)
        };
        let Some(c) = candidate else { return };
        lock(&self.nominated).insert(info.key.clone(), c.node.clone());
        self.stats.preemptions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(pod = %info.key, node = %c.node, victims = c.victims.len(), "preempting");
        let client = self.client.clone();
        let events = self.events.clone();
        let stats = self.stats.clone();
        let victims_store = self.pods.store();
        let (namespace, name, uid) = (info.namespace.clone(), info.name.clone(), info.uid.clone());
        let preemptor = info.key.clone();
        let scheduler_name = self.config.scheduler_name.clone();
        tokio::spawn(async move {
            let api = Api::<Pod>::namespaced(client.clone(), &namespace);
            let node = c.node.clone();
            let r = api
                .replace_status_with(&name, |mut p| {
                    if p.metadata().uid == uid {
                        p.status.get_or_insert_with(Default::default).nominated_node_name = node.clone();
                    }
                    p
                })
                .await;
            if let Err(e) = r {
                tracing::debug!(pod = %preemptor, "cannot write nominatedNodeName: {e}");
            }
            for (key, victim_uid, _) in &c.victims {
                let Some(victim) = victims_store.get(key) else {
                    continue;
                };
                let (ns, victim_name) = (victim.namespace().to_string(), victim.name().to_string());
                // Kubernetes names the preemptor by uid; its name is what
                // a user can look up.
                let message = format!("Preempted by pod {preemptor} on node {}", c.node);
                let msg = EventMsg {
                    pod: victim,
                    event_type: EventType::Normal,
                    reason: "Preempted",
                    message,
                };
                if events.try_send(msg).is_err() {
                    stats.events_dropped.fetch_add(1, Ordering::Relaxed);
                }
                // Kubernetes marks the victim first, so its owner and the
                // user can tell a preemption from other deletions.
                let victims_api = Api::<Pod>::namespaced(client.clone(), &ns);
                let marked = victims_api
                    .replace_status_with(&victim_name, |mut p| {
                        if p.metadata().uid == *victim_uid {
                            set_disruption_target(&mut p, &scheduler_name);
                        }
                        p
                    })
                    .await;
                if let Err(e) = marked {
                    tracing::debug!(pod = %key, "cannot mark DisruptionTarget: {e}");
                }
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(victim_uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match Api::<Pod>::namespaced(client.clone(), &ns)
                    .delete(&victim_name, &dp)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() || e.is_conflict() => {}
                    Err(e) => tracing::warn!(pod = %key, "cannot preempt: {e}"),
                }
            }
        });
    }

    async fn bind(&self, pod: Arc<Pod>, info: PodInfo, node: String) {
        // WaitForFirstConsumer claims learn the node first, so their volumes are made there
        for claim in &info.waiting_claims {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &info.namespace);
            let mut annotations = serde_json::Map::new();
            annotations.insert(
                crate::plugins::volume_binding::SELECTED_NODE.into(),
                node.clone().into(),
            );
            let patch = serde_json::json!({"metadata": {"annotations": annotations}});
            if let Err(e) = api.patch_merge(claim, &patch).await {
                tracing::warn!(pod = %info.key, claim, "cannot select node {node} for the claim: {e}");
                lock(&self.cache).forget(&info.key, &info.uid);
                self.queue.add_rate_limited(info.key);
                return;
            }
        }
        let span = tracing::debug_span!(target: rkube_api::POD_STARTUP_TRACE, "bind", pod_uid = %info.uid);
        match self
            .client
            .bind(&info.namespace, &info.name, &info.uid, &node)
            .instrument(span)
            .await
        {
            Ok(()) => {
                self.queue.forget(&info.key);
                lock(&self.nominated).remove(&info.key);
                self.stats.scheduled.fetch_add(1, Ordering::Relaxed);
                let message = format!("Successfully assigned {} to {node}", info.key);
                self.event(pod, EventType::Normal, "Scheduled", message);
            }
            Err(e) => {
                lock(&self.cache).forget(&info.key, &info.uid);
                self.stats.bind_failures.fetch_add(1, Ordering::Relaxed);
                if e.is_conflict() || e.is_not_found() {
                    // Bound elsewhere, deleted or recreated: the informer
                    // tells which; the retry finds nothing to do unless the
                    // pod is still pending.
                    tracing::debug!(pod = %info.key, %node, "bind refused: {e}");
                } else {
                    tracing::warn!(pod = %info.key, %node, "bind failed, will retry: {e}");
                    let message = format!("Binding rejected: {e}");
                    self.event(pod, EventType::Warning, "FailedScheduling", message);
                }
                self.queue.add_rate_limited(info.key);
            }
        }
    }

    fn event(&self, pod: Arc<Pod>, event_type: EventType, reason: &'static str, message: String) {
        let msg = EventMsg {
            pod,
            event_type,
            reason,
            message,
        };
        if self.events.try_send(msg).is_err() {
            self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes `PodScheduled=False` (unless the pod says so already, with
    /// the same message) and a FailedScheduling event, off the loop.
    fn mark_unschedulable(&self, pod: Arc<Pod>, message: String) {
        self.event(
            pod.clone(),
            EventType::Warning,
            "FailedScheduling",
            message.clone(),
        );
        if !needs_condition(&pod, &message) {
            return;
        }
        let api = Api::<Pod>::namespaced(self.client.clone(), pod.namespace());
        let uid = pod.metadata().uid.clone();
        let name = pod.name().to_string();
        tokio::spawn(async move {
            let result = api
                .replace_status_with(&name, |mut p| {
                    let bound = p.spec.as_ref().is_some_and(|s| !s.node_name.is_empty());
                    if p.metadata().uid == uid && !bound {
                        set_unschedulable(&mut p, &message);
                    }
                    p
                })
                .await;
            if let Err(e) = result {
                if !e.is_not_found() {
                    tracing::warn!(pod = %name, "cannot write PodScheduled=False: {e}");
                }
            }
        });
    }
}

/// `DisruptionTarget=True, reason PreemptionByScheduler`, Kubernetes'
/// mark on a pod the scheduler evicts.
fn set_disruption_target(pod: &mut Pod, scheduler_name: &str) {
    let status = pod.status.get_or_insert_with(Default::default);
    status.conditions.retain(|c| c.r#type != "DisruptionTarget");
    status.conditions.push(PodCondition {
        r#type: "DisruptionTarget".into(),
        status: "True".into(),
        reason: "PreemptionByScheduler".into(),
        message: format!("{scheduler_name}: preempting to accommodate a higher priority pod"),
        last_transition_time: rkube_api::time::now(),
        ..Default::default()
    });
}

/// A pod's place in the queue: its priority.
fn rank(pod: &Pod) -> i64 {
    i64::from(pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0))
}

/// The condition message: Kubernetes' FitError text.
fn fit_message(fit: &FitError) -> String {
    fit.to_string()
}

fn needs_condition(pod: &Pod, message: &str) -> bool {
    !pod.status.as_ref().is_some_and(|s| {
        s.conditions.iter().any(|c| {
            c.r#type == "PodScheduled"
                && c.status == "False"
                && c.reason == "Unschedulable"
                && c.message == message
        })
    })
}

/// Sets `PodScheduled=False, reason Unschedulable`, keeping the transition
/// time when the status was already False.
pub fn set_unschedulable(pod: &mut Pod, message: &str) {
    let now = rkube_api::time::now();
    let status = pod.status.get_or_insert_with(Default::default);
    let transition = status
        .conditions
        .iter()
        .find(|c| c.r#type == "PodScheduled" && c.status == "False")
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    status.conditions.retain(|c| c.r#type != "PodScheduled");
    status.conditions.push(PodCondition {
        r#type: "PodScheduled".into(),
        status: "False".into(),
        last_probe_time: now,
        last_transition_time: transition,
        reason: "Unschedulable".into(),
        message: message.into(),
    });
    if status.phase.is_empty() {
        status.phase = "Pending".into();
    }
}

async fn write_events(recorder: Recorder, rx: mpsc::Receiver<EventMsg>) {
    tokio_stream_like(rx)
        .for_each_concurrent(EVENT_WRITERS, |m| {
            let recorder = recorder.clone();
            async move {
                let r = recorder
                    .event(
                        &object_reference(m.pod.as_ref()),
                        m.event_type,
                        m.reason,
                        &m.message,
                    )
                    .await;
                if let Err(e) = r {
                    tracing::debug!(pod = %m.pod.name(), reason = m.reason, "cannot write event: {e}");
                }
            }
        })
        .await
}

fn tokio_stream_like<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;

    #[test]
    fn the_unschedulable_condition_keeps_its_transition_time() {
        let mut p = pod("p", "1", "0");
        set_unschedulable(&mut p, "0/1 nodes are available: 1 Insufficient cpu.");
        let first = p.status.as_ref().unwrap().conditions[0].clone();
        assert_eq!(
            (first.status.as_str(), first.reason.as_str()),
            ("False", "Unschedulable")
        );
        assert!(!needs_condition(
            &p,
            "0/1 nodes are available: 1 Insufficient cpu."
        ));
        assert!(needs_condition(
            &p,
            "0/2 nodes are available: 2 Insufficient cpu."
        ));
        set_unschedulable(&mut p, "other");
        let conds = &p.status.as_ref().unwrap().conditions;
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, first.last_transition_time);
        assert_eq!(conds[0].message, "other");
    }
}
