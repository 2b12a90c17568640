//! The controller runner: informer changes become keys in a work queue,
//! workers run `reconcile(key)` on them, and the outcome decides when the
//! key comes back.
//!
//! ```ignore
//! let pods = Informer::new(Api::<Pod>::all(client.clone()), WatcherConfig::default());
//! let replicasets = Informer::new(Api::<ReplicaSet>::all(client.clone()), WatcherConfig::default());
//! Controller::new("replicaset", ctx, reconcile)
//!     .primary(&replicasets)
//!     .watches(&pods, controller_owner_keys::<ReplicaSet, Pod>)
//!     .workers(5)
//!     .resync(Duration::from_secs(300))
//!     .run(shutdown)
//!     .await;
//! ```

use crate::runtime::informer::Informer;
use crate::runtime::queue::WorkQueue;
use crate::runtime::store::Change;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use futures::FutureExt;
use rkube_api::Resource;
use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What to do with a key after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile again after this long even if nothing changes (for
    /// time-driven work: a grace period ending, a probe due).
    Requeue(Duration),
    /// Nothing until a watched object changes (or the resync).
    AwaitChange,
    /// Try again after the key's exponential backoff: the default for errors.
    RequeueRateLimited,
}

impl Action {
    pub fn requeue(after: Duration) -> Self {
        Action::Requeue(after)
    }

    pub fn await_change() -> Self {
        Action::AwaitChange
    }

    pub fn rate_limited() -> Self {
        Action::RequeueRateLimited
    }
}

type ReconcileFn<Ctx, E> =
    Arc<dyn Fn(String, Arc<Ctx>) -> BoxFuture<'static, Result<Action, E>> + Send + Sync>;
type ErrorPolicyFn<E> = Arc<dyn Fn(&E, &str) -> Action + Send + Sync>;

#[derive(Debug, Default)]
struct Counters {
    reconciles: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
}

/// Live counters of one controller; clones share them.
#[derive(Clone)]
pub struct ControllerMetrics {
    name: Arc<str>,
    counters: Arc<Counters>,
    queue: WorkQueue,
}

/// A moment's view of a controller's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub name: String,
    /// Reconciles run (successful or not).
    pub reconciles: u64,
    /// Reconciles that returned an error or panicked.
    pub errors: u64,
    /// Reconciles that panicked (also counted in `errors`).
    pub panics: u64,
    /// Keys ready and waiting for a worker.
    pub queue_depth: usize,
    /// Keys waiting for a delay or backoff.
    pub queue_delayed: usize,
    /// Reconciles running now.
    pub in_flight: usize,
}

impl ControllerMetrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            name: self.name.to_string(),
            reconciles: self.counters.reconciles.load(Ordering::Relaxed),
            errors: self.counters.errors.load(Ordering::Relaxed),
            panics: self.counters.panics.load(Ordering::Relaxed),
            queue_depth: self.queue.len(),
            queue_delayed: self.queue.waiting_len(),
            in_flight: self.queue.processing_len(),
        }
    }
}

impl fmt::Debug for ControllerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// One informer feeding the queue.
struct Source {
    kind: &'static str,
    start: Box<dyn Fn() -> crate::Result<()> + Send + Sync>,
    synced: BoxFuture<'static, ()>,
    /// For the primary kind: every cached key, for the first pass and the
    /// periodic resync.
    all_keys: Option<Box<dyn Fn() -> Vec<String> + Send + Sync>>,
    keys: BoxStream<'static, Vec<String>>,
}

/// A reconcile loop. See the module docs.
pub struct Controller<Ctx, E> {
    name: String,
    ctx: Arc<Ctx>,
    reconcile: ReconcileFn<Ctx, E>,
    error_policy: ErrorPolicyFn<E>,
    sources: Vec<Source>,
    workers: usize,
    resync: Option<Duration>,
    queue: WorkQueue,
    counters: Arc<Counters>,
}

impl<Ctx, E> Controller<Ctx, E>
where
    Ctx: Send + Sync + 'static,
    E: fmt::Display + Send + 'static,
{
    /// A controller named `name` (for logs and metrics) that calls
    /// `reconcile(key, ctx)`. Errors are requeued with the key's backoff
    /// unless `error_policy` says otherwise.
    pub fn new<R, Fut>(name: &str, ctx: Arc<Ctx>, reconcile: R) -> Self
    where
        R: Fn(String, Arc<Ctx>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        Controller {
            name: name.to_string(),
            ctx,
            reconcile: Arc::new(move |key, ctx| reconcile(key, ctx).boxed()),
            error_policy: Arc::new(|_, _| Action::RequeueRateLimited),
            sources: Vec::new(),
            workers: 1,
            resync: None,
            queue: WorkQueue::new(),
            counters: Arc::default(),
        }
    }

    /// What to do after a failed reconcile of `key`; the default is
    /// `Action::RequeueRateLimited`.
    pub fn error_policy<P>(mut self, policy: P) -> Self
    where
        P: Fn(&E, &str) -> Action + Send + Sync + 'static,
    {
        self.error_policy = Arc::new(policy);
        self
    }

    /// The kind this controller reconciles: a change to an object queues
    /// its own key, and every cached key is queued once the caches are
    /// synced and at each resync.
    pub fn primary<K: Resource>(self, informer: &Informer<K>) -> Self {
        let store = informer.store();
        self.add_source(
            informer,
            per_object(|k: &K| vec![k.key()]),
            Some(Box::new(move || store.keys())),
        )
    }

    /// A related kind: a change to one of its objects queues the keys
    /// `mapper` returns (for the old and the new state, so an object that
    /// moved to another owner wakes both).
    pub fn watches<K, M>(self, informer: &Informer<K>, mapper: M) -> Self
    where
        K: Resource,
        M: Fn(&K) -> Vec<String> + Send + Sync + 'static,
    {
        self.add_source(informer, per_object(mapper), None)
    }

    /// A related kind whose changes matter only sometimes: `mapper` sees the
    /// old and the new state (None when the object is new or gone) and
    /// returns the keys to queue, so it can skip changes that concern no
    /// one (a Node's heartbeat, for a loop that reads its labels).
    pub fn watches_changes<K, M>(self, informer: &Informer<K>, mapper: M) -> Self
    where
        K: Resource,
        M: Fn(Option<&K>, Option<&K>) -> Vec<String> + Send + Sync + 'static,
    {
        let mapper = move |c: &Change<K>| mapper(c.old.as_deref(), c.new.as_deref());
        self.add_source(informer, mapper, None)
    }

    fn add_source<K, M>(
        mut self,
        informer: &Informer<K>,
        mapper: M,
        all_keys: Option<Box<dyn Fn() -> Vec<String> + Send + Sync>>,
    ) -> Self
    where
        K: Resource,
        M: Fn(&Change<K>) -> Vec<String> + Send + Sync + 'static,
    {
        // Subscribed now, so nothing between building and running is lost.
        let keys = informer
            .subscribe()
            .map(move |change: Change<K>| mapper(&change))
            .boxed();
        let handle = informer.clone();
        let store = informer.store();
        self.sources.push(Source {
            kind: K::INFO.kind,
            start: Box::new(move || handle.start()),
            synced: async move { store.wait_until_synced().await }.boxed(),
            all_keys,
            keys,
        });
        self
    }

    /// How many keys are reconciled at once (never the same key twice).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Queue every cached key of the primary kind this often, to catch
    /// anything a missed event or a bug left unreconciled.
    pub fn resync(mut self, period: Duration) -> Self {
        self.resync = Some(period).filter(|p| !p.is_zero());
        self
    }

    /// Uses `queue` instead of a fresh one (to set its backoff, or to add
    /// keys from outside).
    pub fn with_queue(mut self, queue: WorkQueue) -> Self {
        self.queue = queue;
        self
    }

    /// The controller's queue: other code may add keys to it.
    pub fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    pub fn metrics(&self) -> ControllerMetrics {
        ControllerMetrics {
            name: self.name.as_str().into(),
            counters: self.counters.clone(),
            queue: self.queue.clone(),
        }
    }

    /// Starts the informers, waits for their caches, then reconciles until
    /// `shutdown` completes; returns after the reconciles in flight finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let Controller {
            name,
            ctx,
            reconcile,
            error_policy,
            sources,
            workers,
            resync,
            queue,
            counters,
        } = self;
        let mut shutdown = std::pin::pin!(shutdown);
        let mut background = tokio::task::JoinSet::new();
        let mut synced = Vec::new();
        let mut primaries = Vec::new();
        for source in sources {
            if let Err(e) = (source.start)() {
                tracing::error!(controller = %name, kind = source.kind, error = %e, "cannot start informer");
                return;
            }
            synced.push(source.synced);
            if let Some(all) = source.all_keys {
                primaries.push(all);
            }
            let q = queue.clone();
            let mut keys = source.keys;
            background.spawn(async move {
                while let Some(batch) = keys.next().await {
                    for key in batch {
                        q.add(key);
                    }
                }
            });
        }

        tokio::select! {
            _ = futures::future::join_all(synced) => {}
            _ = &mut shutdown => {
                queue.shutdown();
                return;
            }
        }
        tracing::info!(controller = %name, workers, "caches synced; starting workers");
        let primaries = Arc::new(primaries);
        let enqueue_all = {
            let primaries = primaries.clone();
            let queue = queue.clone();
            move || {
                for all in primaries.iter() {
                    for key in all() {
                        queue.add(key);
                    }
                }
            }
        };
        // Level-triggered: everything existing is reconciled once at start,
        // whether or not an event about it is still to come.
        enqueue_all();
        if let Some(period) = resync {
            background.spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    enqueue_all();
                }
            });
        }

        let mut pool = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let worker = Worker {
                name: name.clone(),
                ctx: ctx.clone(),
                reconcile: reconcile.clone(),
                error_policy: error_policy.clone(),
                queue: queue.clone(),
                counters: counters.clone(),
            };
            pool.spawn(worker.run());
        }
        shutdown.await;
        tracing::info!(controller = %name, "shutting down; waiting for reconciles in flight");
        queue.shutdown();
        background.abort_all();
        while pool.join_next().await.is_some() {}
    }
}

struct Worker<Ctx, E> {
    name: String,
    ctx: Arc<Ctx>,
    reconcile: ReconcileFn<Ctx, E>,
    error_policy: ErrorPolicyFn<E>,
    queue: WorkQueue,
    counters: Arc<Counters>,
}

impl<Ctx, E> Worker<Ctx, E>
where
    Ctx: Send + Sync + 'static,
    E: fmt::Display + Send + 'static,
{
    async fn run(self) {
        while let Some(key) = self.queue.get().await {
            // Run in its own task so a panicking reconcile costs one
            // attempt, not this worker (and the key stays in processing
            // forever).
            let outcome = tokio::spawn((self.reconcile)(key.clone(), self.ctx.clone())).await;
            self.counters.reconciles.fetch_add(1, Ordering::Relaxed);
            let action = match outcome {
                Ok(Ok(action)) => {
                    // Success resets the backoff, whatever comes next.
                    self.queue.forget(&key);
                    action
                }
                Ok(Err(e)) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    let action = (self.error_policy)(&e, &key);
                    tracing::warn!(controller = %self.name, %key, error = %e, ?action, "reconcile failed");
                    action
                }
                Err(join) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    self.counters.panics.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(controller = %self.name, %key, error = %join, "reconcile panicked");
                    Action::RequeueRateLimited
                }
            };
            match action {
                Action::Requeue(after) => self.queue.add_after(key.clone(), after),
                Action::RequeueRateLimited => self.queue.add_rate_limited(key.clone()),
                Action::AwaitChange => {}
            }
            self.queue.done(&key);
        }
    }
}

/// Keys of the owners of kind `O` that control `obj` (its ownerReference
/// with `controller: true`): the usual mapper from pods to their
/// ReplicaSet, from ReplicaSets to their Deployment.
pub fn controller_owner_keys<O: Resource, K: Resource>(obj: &K) -> Vec<String> {
    obj.metadata()
        .owner_references
        .iter()
        .filter(|r| {
            r.controller == Some(true) && r.kind == O::INFO.kind && r.api_version == O::INFO.api_version()
        })
        .map(|r| {
            // Owners are in the dependent's namespace (or cluster-scoped).
            let ns = if O::INFO.namespaced { obj.namespace() } else { "" };
            rkube_api::object_key(ns, &r.name)
        })
        .collect()
}

/// A per-object mapper applied to a change's old and new states, the keys
/// merged.
fn per_object<K, M>(mapper: M) -> impl Fn(&Change<K>) -> Vec<String> + Send + Sync + 'static
where
    K: Resource,
    M: Fn(&K) -> Vec<String> + Send + Sync + 'static,
{
    move |change: &Change<K>| {
        let mut keys = BTreeSet::new();
        for obj in change.old.iter().chain(change.new.iter()) {
            keys.extend(mapper(obj));
        }
        keys.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::{owned_pod, pod, FakeApi, PATIENCE};
    use crate::runtime::watcher::{Event, WatcherConfig};
    use rkube_api::apps::v1::ReplicaSet;
    use rkube_api::core::v1::Pod;
    use rkube_testing::eventually;
    use std::collections::HashMap;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    use tokio::time::Instant;

    /// What reconciles saw: per key, when each started.
    #[derive(Default)]
    struct Ctx {
        starts: Mutex<HashMap<String, Vec<Instant>>>,
        in_flight: Mutex<HashMap<String, usize>>,
        max_same_key: AtomicUsize,
        max_total: AtomicUsize,
        total: AtomicUsize,
        /// Fail the first N reconciles of each key.
        fail_first: usize,
        hold: Duration,
    }

    impl Ctx {
        fn count(&self, key: &str) -> usize {
            self.starts.lock().unwrap().get(key).map_or(0, Vec::len)
        }

        fn gaps(&self, key: &str) -> Vec<Duration> {
            let starts = self.starts.lock().unwrap().get(key).cloned().unwrap_or_default();
            starts.windows(2).map(|w| w[1] - w[0]).collect()
        }
    }

    #[derive(Debug)]
    struct Failed;
    impl fmt::Display for Failed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("failed on purpose")
        }
    }

    async fn reconcile(key: String, ctx: Arc<Ctx>) -> Result<Action, Failed> {
        let attempt = {
            let mut starts = ctx.starts.lock().unwrap();
            let s = starts.entry(key.clone()).or_default();
            s.push(Instant::now());
            s.len()
        };
        {
            let mut f = ctx.in_flight.lock().unwrap();
            let n = f.entry(key.clone()).or_default();
            *n += 1;
            ctx.max_same_key.fetch_max(*n, Ordering::SeqCst);
        }
        let total = ctx.total.fetch_add(1, Ordering::SeqCst) + 1;
        ctx.max_total.fetch_max(total, Ordering::SeqCst);
        tokio::time::sleep(ctx.hold).await;
        ctx.total.fetch_sub(1, Ordering::SeqCst);
        *ctx.in_flight.lock().unwrap().get_mut(&key).unwrap() -= 1;
        if attempt <= ctx.fail_first {
            Err(Failed)
        } else {
            Ok(Action::await_change())
        }
    }

    /// Runs `c` in a task; returns the shutdown trigger and the task.
    fn spawn<E: fmt::Display + Send + 'static>(
        c: Controller<Ctx, E>,
    ) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(c.run(async move {
            let _ = rx.await;
        }));
        (tx, task)
    }

    /// An informer whose events the test sends.
    fn scripted<K: Resource>() -> (Informer<K>, tokio::sync::mpsc::UnboundedSender<Event<K>>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            Informer::from_events(tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed()),
            tx,
        )
    }

    fn rs(name: &str) -> ReplicaSet {
        let mut r = ReplicaSet::default();
        r.metadata_mut().namespace = "ns".into();
        r.metadata_mut().name = name.into();
        r.metadata_mut().resource_version = "1".into();
        r
    }

    #[tokio::test(start_paused = true)]
    async fn two_reconciles_of_one_key_never_overlap() {
        let ctx = Arc::new(Ctx {
            hold: Duration::from_millis(50),
            ..Default::default()
        });
        let c = Controller::new("test", ctx.clone(), reconcile).workers(4);
        let queue = c.queue();
        let (stop, task) = spawn(c);
        // Hammer one key while it is being reconciled, alongside others.
        for round in 0..20 {
            queue.add("ns/hot");
            queue.add(format!("ns/cold-{}", round % 4));
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
        eventually("the queue drains", PATIENCE, || async {
            queue.is_empty() && queue.processing_len() == 0
        })
        .await
        .unwrap();
        assert_eq!(ctx.max_same_key.load(Ordering::SeqCst), 1);
        assert!(
            ctx.max_total.load(Ordering::SeqCst) > 1,
            "workers did run in parallel"
        );
        // Re-adds during a reconcile collapse into one follow-up each time.
        let hot = ctx.count("ns/hot");
        assert!((2..20).contains(&hot), "{hot}");
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn errors_requeue_with_growing_backoff_and_success_resets_it() {
        let ctx = Arc::new(Ctx {
            fail_first: 4,
            ..Default::default()
        });
        let c = Controller::new("test", ctx.clone(), reconcile).with_queue(WorkQueue::with_backoff(
            Duration::from_millis(100),
            Duration::from_secs(10),
        ));
        let queue = c.queue();
        let metrics = c.metrics();
        let (_stop, _task) = spawn(c);
        queue.add("ns/a");
        eventually("the fifth attempt succeeds", PATIENCE, || async {
            ctx.count("ns/a") == 5
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let gaps: Vec<u128> = ctx.gaps("ns/a").iter().map(|d| d.as_millis()).collect();
        assert_eq!(gaps, [100, 200, 400, 800]);
        assert_eq!(queue.num_requeues("ns/a"), 0, "success forgot the failures");
        let m = metrics.snapshot();
        assert_eq!((m.reconciles, m.errors), (5, 4));

        // A later event is reconciled at once, not after the old backoff.
        let before = Instant::now();
        queue.add("ns/a");
        eventually("reconciled again", PATIENCE, || async { ctx.count("ns/a") == 6 })
            .await
            .unwrap();
        assert!(before.elapsed() < Duration::from_millis(50));
        // And nothing keeps requeueing a key that succeeded.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(ctx.count("ns/a"), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn the_error_policy_decides_the_requeue() {
        let ctx = Arc::new(Ctx {
            fail_first: 2,
            ..Default::default()
        });
        let c = Controller::new("test", ctx.clone(), reconcile)
            .error_policy(|_e: &Failed, _key: &str| Action::requeue(Duration::from_secs(3)));
        let queue = c.queue();
        let (_stop, _task) = spawn(c);
        queue.add("ns/a");
        eventually("recovered", PATIENCE, || async { ctx.count("ns/a") == 3 })
            .await
            .unwrap();
        assert_eq!(ctx.gaps("ns/a"), [Duration::from_secs(3), Duration::from_secs(3)]);
    }

    #[tokio::test(start_paused = true)]
    async fn requeue_after_brings_the_key_back() {
        let ctx = Arc::new(Ctx::default());
        let c = Controller::new("test", ctx.clone(), |key: String, ctx: Arc<Ctx>| async move {
            reconcile(key, ctx)
                .await
                .map(|_| Action::requeue(Duration::from_secs(30)))
        });
        let queue = c.queue();
        let (_stop, _task) = spawn(c);
        queue.add("ns/a");
        eventually("three runs", PATIENCE, || async { ctx.count("ns/a") == 3 })
            .await
            .unwrap();
        assert_eq!(
            ctx.gaps("ns/a"),
            [Duration::from_secs(30), Duration::from_secs(30)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_cached_key_is_reconciled_at_start_and_each_resync() {
        let ctx = Arc::new(Ctx::default());
        let (informer, events) = scripted::<ReplicaSet>();
        let c = Controller::new("test", ctx.clone(), reconcile)
            .primary(&informer)
            .resync(Duration::from_secs(60));
        let (_stop, _task) = spawn(c);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(ctx.count("ns/a"), 0, "nothing runs before the cache is synced");
        events.send(Event::Resync(vec![rs("a"), rs("b")])).unwrap();
        eventually("first pass", PATIENCE, || async {
            ctx.count("ns/a") >= 1 && ctx.count("ns/b") >= 1
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Synced + subscribed changes may both queue a key; dedup makes it one.
        assert_eq!((ctx.count("ns/a"), ctx.count("ns/b")), (1, 1));
        let synced_at = Instant::now();
        eventually("first resync", PATIENCE, || async {
            ctx.count("ns/a") == 2 && ctx.count("ns/b") == 2
        })
        .await
        .unwrap();
        let resync_gap = Instant::now() - synced_at;
        assert!(
            resync_gap >= Duration::from_secs(58) && resync_gap <= Duration::from_secs(61),
            "{resync_gap:?}"
        );
        eventually("second resync", PATIENCE, || async { ctx.count("ns/a") == 3 })
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn changes_to_owned_objects_reconcile_their_owner() {
        let ctx = Arc::new(Ctx::default());
        let (replicasets, rs_events) = scripted::<ReplicaSet>();
        let fake = FakeApi::default();
        let pods = Informer::new(fake.clone(), WatcherConfig::default());
        let c = Controller::new("replicaset", ctx.clone(), reconcile)
            .primary(&replicasets)
            .watches(&pods, controller_owner_keys::<ReplicaSet, Pod>);
        let (_stop, _task) = spawn(c);
        rs_events.send(Event::Resync(vec![rs("web")])).unwrap();
        eventually("first pass", PATIENCE, || async { ctx.count("ns/web") == 1 })
            .await
            .unwrap();

        fake.put(owned_pod("web-1", "web"));
        eventually("pod creation wakes its owner", PATIENCE, || async {
            ctx.count("ns/web") == 2
        })
        .await
        .unwrap();
        fake.put(pod("loner", "n1"));
        fake.delete("ns/web-1");
        eventually("pod deletion wakes its owner", PATIENCE, || async {
            ctx.count("ns/web") == 3
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(ctx.count("ns/web"), 3);
        assert_eq!(ctx.count("ns/loner"), 0, "unowned pods map to nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_reconcile_is_retried_and_the_worker_survives() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let c = Controller::new("test", Arc::new(()), {
            let attempts = attempts.clone();
            move |_key: String, _ctx: Arc<()>| {
                let n = attempts.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        panic!("bug in reconcile");
                    }
                    Ok::<_, Failed>(Action::await_change())
                }
            }
        });
        let queue = c.queue();
        let metrics = c.metrics();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let _task = tokio::spawn(c.run(async move {
            let _ = rx.await;
        }));
        queue.add("ns/a");
        eventually("retried", PATIENCE, || async {
            attempts.load(Ordering::SeqCst) == 2
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let m = metrics.snapshot();
        assert_eq!((m.reconciles, m.errors, m.panics), (2, 1, 1));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_reconciles_in_flight() {
        let ctx = Arc::new(Ctx {
            hold: Duration::from_secs(5),
            ..Default::default()
        });
        let c = Controller::new("test", ctx.clone(), reconcile);
        let queue = c.queue();
        let (stop, task) = spawn(c);
        queue.add("ns/a");
        eventually("started", PATIENCE, || async { ctx.count("ns/a") == 1 })
            .await
            .unwrap();
        let begin = Instant::now();
        stop.send(()).unwrap();
        task.await.unwrap();
        assert!(
            begin.elapsed() >= Duration::from_secs(4),
            "returned before the reconcile finished"
        );
        assert_eq!(ctx.total.load(Ordering::SeqCst), 0);
        queue.add("ns/b");
        assert!(queue.is_empty(), "a shut-down queue takes no keys");
    }

    #[test]
    fn owner_keys_follow_the_controller_reference_of_the_right_kind() {
        assert_eq!(
            controller_owner_keys::<ReplicaSet, Pod>(&owned_pod("p", "web")),
            ["ns/web"]
        );
        let mut not_controller = owned_pod("p", "web");
        not_controller.metadata_mut().owner_references[0].controller = None;
        assert!(controller_owner_keys::<ReplicaSet, Pod>(&not_controller).is_empty());
        assert!(
            controller_owner_keys::<rkube_api::apps::v1::Deployment, Pod>(&owned_pod("p", "web")).is_empty()
        );
    }
}
