//! The controller work queue, as client-go's: a key queued many times is
//! processed once; a key is never handed to two workers at once (one
//! re-added while being processed is handed out again after `done`);
//! failures back off per key, exponentially, until `forget`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Kubernetes' per-item backoff: 5 ms doubling to 1000 s.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(5);
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(1000);

#[derive(Default)]
struct State {
    /// Ready keys, highest rank first, then in order.
    queue: BTreeMap<(Reverse<i64>, u64), String>,
    /// Keys handed out before others (the scheduler's pod priority); 0
    /// when not set.
    ranks: HashMap<String, i64>,
    /// Keys that need processing: queued, or re-added while processing.
    dirty: HashSet<String>,
    /// Keys handed to a worker and not yet `done`.
    processing: HashSet<String>,
    /// Delayed keys: the earliest time each becomes ready.
    waiting: HashMap<String, Instant>,
    /// `waiting` ordered by time; entries whose time no longer matches
    /// `waiting` are stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, u64, String)>>,
    seq: u64,
    /// Consecutive failures per key, for `add_rate_limited`.
    failures: HashMap<String, u32>,
    shutting_down: bool,
}

impl State {
    fn add(&mut self, key: String) -> bool {
        if self.shutting_down || self.dirty.contains(&key) {
            return false;
        }
        self.dirty.insert(key.clone());
        if self.processing.contains(&key) {
            // handed out again by `done`
            return false;
        }
        self.push(key);
        true
    }

    fn push(&mut self, key: String) {
        let rank = self.ranks.get(&key).copied().unwrap_or(0);
        self.seq += 1;
        self.queue.insert((Reverse(rank), self.seq), key);
    }

    /// Moves delayed keys whose time has come to the queue; returns the
    /// next time one will.
    fn promote(&mut self, now: Instant) -> (bool, Option<Instant>) {
        let mut added = false;
        while let Some(Reverse((at, _, key))) = self.timers.peek().cloned() {
            if self.waiting.get(&key) != Some(&at) {
                self.timers.pop();
                continue;
            }
            if at > now {
                return (added, Some(at));
            }
            self.timers.pop();
            self.waiting.remove(&key);
            added |= self.add(key);
        }
        (added, None)
    }
}

struct Inner {
    state: Mutex<State>,
    notify: Notify,
    base_delay: Duration,
    max_delay: Duration,
}

/// A deduplicating, delaying, rate-limited queue of object keys. Clones
/// share one queue.
#[derive(Clone)]
pub struct WorkQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WorkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("WorkQueue")
            .field("ready", &s.queue.len())
            .field("processing", &s.processing.len())
            .field("waiting", &s.waiting.len())
            .finish()
    }
}

impl Default for WorkQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkQueue {
    pub fn new() -> Self {
        Self::with_backoff(DEFAULT_BASE_DELAY, DEFAULT_MAX_DELAY)
    }

    /// A queue whose `add_rate_limited` waits `base * 2^failures`, at
    /// most `max`.
    pub fn with_backoff(base: Duration, max: Duration) -> Self {
        WorkQueue {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                notify: Notify::new(),
                base_delay: base,
                max_delay: max.max(base),
            }),
        }
    }

    // Every critical section leaves the state consistent, so a poisoned
    // lock is safe to take over.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` unless it is already queued.
    pub fn add(&self, key: impl Into<String>) {
        if self.lock().add(key.into()) {
            self.inner.notify.notify_one();
        }
    }

    /// Queues `key` after `delay`. An earlier pending time for the key
    /// wins over a later one.
    pub fn add_after(&self, key: impl Into<String>, delay: Duration) {
        let key = key.into();
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        let mut s = self.lock();
        if s.shutting_down || s.waiting.get(&key).is_some_and(|t| *t <= at) {
            return;
        }
        s.waiting.insert(key.clone(), at);
        s.seq += 1;
        let seq = s.seq;
        s.timers.push(Reverse((at, seq, key)));
        drop(s);
        // A sleeping worker may now have an earlier deadline to wait for.
        self.inner.notify.notify_waiters();
    }

    /// Queues `key` after its backoff, and lengthens the backoff.
    pub fn add_rate_limited(&self, key: impl Into<String>) {
        let key = key.into();
        let delay = {
            let mut s = self.lock();
            let n = s.failures.entry(key.clone()).or_insert(0);
            let delay = backoff(self.inner.base_delay, self.inner.max_delay, *n);
            *n = n.saturating_add(1);
            delay
        };
        self.add_after(key, delay);
    }

    /// The delay the next `add_rate_limited(key)` would use.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let n = self.lock().failures.get(key).copied().unwrap_or(0);
        backoff(self.inner.base_delay, self.inner.max_delay, n)
    }

    /// Resets `key`'s backoff (after a success) and its rank.
    pub fn forget(&self, key: &str) {
        let mut s = self.lock();
        s.failures.remove(key);
        s.ranks.remove(key);
    }

    /// Queues `key` like `add`, handed out before keys of lower rank (FIFO
    /// among equals). The rank sticks to the key, also for later adds,
    /// until `forget`.
    pub fn add_ranked(&self, key: impl Into<String>, rank: i64) {
        let key = key.into();
        {
            let mut s = self.lock();
            if s.shutting_down {
                return;
            }
            s.ranks.insert(key.clone(), rank);
        }
        self.add(key);
    }

    /// How many times `key` was rate-limited since its last `forget`.
    pub fn num_requeues(&self, key: &str) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// The next key to process, waiting for one; None once shut down.
    /// The caller must call `done(key)` when finished with it.
    pub async fn get(&self) -> Option<String> {
        loop {
            // Registered before looking, so an add between the look and
            // the wait still wakes this worker.
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let deadline = {
                let mut s = self.lock();
                if s.shutting_down {
                    return None;
                }
                let (_, next) = s.promote(Instant::now());
                if let Some((_, key)) = s.queue.pop_first() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    let more = !s.queue.is_empty();
                    drop(s);
                    if more {
                        // Pass the wakeup on: this worker consumed one that
                        // may have been meant for another key.
                        self.inner.notify.notify_one();
                    }
                    return Some(key);
                }
                next
            };
            match deadline {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks `key` processed; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &str) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) && !s.shutting_down {
            s.push(key.to_string());
            drop(s);
            self.inner.notify.notify_one();
        }
    }

    /// Stops handing out keys: `get` returns None from now on, and adds are
    /// ignored. Keys being processed may still be `done`.
    pub fn shutdown(&self) {
        self.lock().shutting_down = true;
        self.inner.notify.notify_waiters();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.lock().shutting_down
    }

    /// Keys ready to be handed out.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys waiting for their delay.
    pub fn waiting_len(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Keys handed out and not yet done.
    pub fn processing_len(&self) -> usize {
        self.lock().processing.len()
    }
}

fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures);
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_now(q: &WorkQueue) -> Option<String> {
        tokio::time::timeout(Duration::from_millis(1), q.get())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_queued_twice_is_processed_once() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert_eq!(q.get().await.as_deref(), Some("b"));
        q.done("a");
        q.done("b");
        assert_eq!(get_now(&q).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn higher_ranks_go_first_and_equals_keep_their_order() {
        let q = WorkQueue::new();
        q.add("low-1");
        q.add_ranked("high", 1000);
        q.add("low-2");
        q.add_ranked("negative", -5);
        let mut order = Vec::new();
        while let Some(k) = get_now(&q).await {
            q.done(&k);
            order.push(k);
        }
        assert_eq!(order, ["high", "low-1", "low-2", "negative"]);
        // The rank sticks for later adds until forget.
        q.add("low-1");
        q.add("high");
        assert_eq!(get_now(&q).await.as_deref(), Some("high"));
        q.done("high");
        q.forget("high");
        q.add("high");
        assert_eq!(get_now(&q).await.as_deref(), Some("low-1"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_re_added_while_processing_waits_for_done() {
        let q = WorkQueue::new();
        q.add("a");
        let key = q.get().await.unwrap();
        q.add("a");
        q.add("a");
        // Not handed to a second worker while the first has it.
        assert_eq!(get_now(&q).await, None);
        assert_eq!(q.len(), 0);
        q.done(&key);
        assert_eq!(q.get().await.as_deref(), Some("a"));
        q.done("a");
        assert_eq!(get_now(&q).await, None, "the two re-adds collapse into one");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_worker_is_woken_by_add() {
        let q = WorkQueue::new();
        let worker = tokio::spawn({
            let q = q.clone();
            async move { q.get().await }
        });
        tokio::task::yield_now().await;
        q.add("x");
        assert_eq!(worker.await.unwrap().as_deref(), Some("x"));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_caps_and_forget_resets() {
        let q = WorkQueue::with_backoff(Duration::from_millis(5), Duration::from_millis(100));
        let mut delays = Vec::new();
        for _ in 0..7 {
            delays.push(q.next_backoff("k").as_millis());
            q.add_rate_limited("k");
        }
        assert_eq!(delays, [5, 10, 20, 40, 80, 100, 100]);
        assert_eq!(q.num_requeues("k"), 7);
        q.forget("k");
        assert_eq!(q.num_requeues("k"), 0);
        assert_eq!(q.next_backoff("k"), Duration::from_millis(5));
        // Other keys have their own backoff.
        assert_eq!(q.next_backoff("other"), Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn default_backoff_is_kubernetes() {
        let q = WorkQueue::new();
        assert_eq!(q.next_backoff("k"), Duration::from_millis(5));
        for _ in 0..40 {
            q.add_rate_limited("k");
        }
        assert_eq!(q.next_backoff("k"), Duration::from_secs(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_keys_come_back_after_their_delay() {
        let q = WorkQueue::with_backoff(Duration::from_millis(100), Duration::from_secs(10));
        let start = Instant::now();
        q.add_rate_limited("k"); // 100 ms
        assert_eq!(q.len(), 0);
        assert_eq!(q.waiting_len(), 1);
        assert_eq!(q.get().await.as_deref(), Some("k"));
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        q.done("k");
        q.add_rate_limited("k"); // 200 ms
        assert_eq!(q.get().await.as_deref(), Some("k"));
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_delays_and_the_earliest_time_wins() {
        let q = WorkQueue::new();
        let start = Instant::now();
        q.add_after("late", Duration::from_secs(10));
        q.add_after("soon", Duration::from_secs(5));
        q.add_after("soon", Duration::from_secs(8)); // later: ignored
        q.add_after("late", Duration::from_secs(2)); // earlier: wins
        assert_eq!(get_now(&q).await, None);
        assert_eq!(q.get().await.as_deref(), Some("late"));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(q.get().await.as_deref(), Some("soon"));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        q.done("late");
        q.done("soon");
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(get_now(&q).await, None, "superseded timers fire nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleeping_worker_sees_an_earlier_deadline() {
        let q = WorkQueue::new();
        let start = Instant::now();
        q.add_after("a", Duration::from_secs(60));
        let worker = tokio::spawn({
            let q = q.clone();
            async move { q.get().await }
        });
        tokio::task::yield_now().await;
        q.add_after("b", Duration::from_secs(1));
        assert_eq!(worker.await.unwrap().as_deref(), Some("b"));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_releases_waiting_workers_and_ignores_adds() {
        let q = WorkQueue::new();
        let worker = tokio::spawn({
            let q = q.clone();
            async move { q.get().await }
        });
        tokio::task::yield_now().await;
        q.shutdown();
        assert_eq!(worker.await.unwrap(), None);
        q.add("a");
        assert!(q.is_empty());
        assert_eq!(q.get().await, None);
    }
}
