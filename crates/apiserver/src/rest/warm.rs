//! Keeps the REST face's [`JsonCache`] warm, so that a list finds its items' JSON made
//! already, even the first list of objects nobody has read as JSON yet (a 10,000-pod
//! list otherwise spends five times the gRPC list's time converting protobuf to JSON).
//!
//! Every new object version (a put on the store's change feed) and, at start, what the
//! store holds, is encoded off the request path by one worker thread at the lowest CPU
//! priority, so writes do not wait for it and only spare CPU time goes to it. Bounds:
//! the queue holds at most [`QUEUE_BYTES`] of wire bytes and drops work beyond that (a
//! list encodes what was dropped itself, as it would without the worker); the start-up
//! pass encodes at most one cache generation; the cache bounds what is kept. Secrets are
//! neither queued nor kept ([`JsonCache::keeps`]).
//!
//! Why the store's change feed and not the handlers: every write, whoever makes it
//! (the handlers, bootstrap, the node-lifecycle writes of the apiserver itself), shows up
//! there once, already with its revision; a tokio task only forwards it, so the feed
//! never lags behind the encoding (a lagging watcher would re-read the change log).

use super::json::JsonCache;
use crate::handlers::{stamped, storage_prefix};
use prost_types::Any;
use rkube_api::ResourceInfo;
use rkube_store::{EventKind, Store};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::watch;

/// The most wire bytes waiting to be encoded: about 30,000 pods, well over what the
/// cache holds in one generation, so a burst of creates is encoded whole once the
/// CPU is free, while a flood that never lets up costs at most this much memory.
pub const QUEUE_BYTES: usize = 16 << 20;

/// What the warmer did, for tests and the benchmark.
#[derive(Debug, Default)]
pub struct WarmStats {
    /// Versions encoded (or found encoded already) by the worker.
    pub encoded: AtomicU64,
    /// Versions not queued because the queue was full.
    pub dropped: AtomicU64,
}

/// The sending side: hands object versions to the worker without ever waiting.
#[derive(Clone)]
pub struct WarmQueue {
    tx: mpsc::Sender<Job>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    stats: Arc<WarmStats>,
}

struct Job {
    info: &'static ResourceInfo,
    any: Any,
}

impl WarmQueue {
    /// A queue of at most `limit` wire bytes and its receiving end.
    fn new(limit: usize, stats: Arc<WarmStats>) -> (WarmQueue, WarmReceiver) {
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let queue = WarmQueue {
            tx,
            queued: queued.clone(),
            limit,
            stats: stats.clone(),
        };
        (queue, WarmReceiver { rx, queued, stats })
    }

    /// Queues `any` for encoding; false (and counted as dropped) when the queue is full,
    /// false when its kind is not kept or the worker is gone.
    pub fn offer(&self, info: &'static ResourceInfo, any: Any) -> bool {
        if !JsonCache::keeps(info) {
            return false;
        }
        let size = any.value.len();
        let before = self.queued.fetch_add(size, Ordering::SeqCst);
        if before + size > self.limit {
            self.queued.fetch_sub(size, Ordering::SeqCst);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if self.tx.send(Job { info, any }).is_err() {
            self.queued.fetch_sub(size, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Wire bytes waiting now.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

/// The worker's end of a [`WarmQueue`].
struct WarmReceiver {
    rx: mpsc::Receiver<Job>,
    queued: Arc<AtomicUsize>,
    stats: Arc<WarmStats>,
}

impl WarmReceiver {
    /// Encodes into `cache` until every sender is gone.
    fn drain(self, cache: &JsonCache) {
        while self.encode_next(cache) {}
    }

    /// Waits for the next version and encodes it; false when every sender is gone.
    fn encode_next(&self, cache: &JsonCache) -> bool {
        let Ok(job) = self.rx.recv() else {
            return false;
        };
        self.queued.fetch_sub(job.any.value.len(), Ordering::SeqCst);
        // an object that cannot be encoded fails its list with the reason; not here
        let _ = cache.encode(job.info, &job.any);
        self.stats.encoded.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// Starts warming `cache` from `store`: the worker thread, which first encodes what the
/// store holds, and the task that follows the store's change feed until `shutdown`.
pub fn start(
    store: Arc<dyn Store>,
    cache: &'static JsonCache,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<Arc<WarmStats>> {
    let stats = Arc::new(WarmStats::default());
    let (queue, receiver) = WarmQueue::new(QUEUE_BYTES, stats.clone());
    let from = store.revision();
    let snapshot_store = store.clone();
    let stopped = shutdown.clone();
    std::thread::Builder::new()
        .name("rest-json-warm".into())
        .spawn(move || {
            lowest_priority();
            // The store is let go as soon as the apiserver stops: a restart in the same
            // process opens the same data directory, which the store holds locked.
            encode_stored(snapshot_store.as_ref(), cache, || *stopped.borrow());
            drop(snapshot_store);
            receiver.drain(cache);
        })?;
    tokio::spawn(crate::feed::follow(
        store,
        "",
        from,
        shutdown,
        "JSON warming",
        move |ev| {
            if ev.kind == EventKind::Put {
                if let Some(info) = kind_of_key(&ev.kv.key) {
                    queue.offer(info, stamped(&ev.kv, info));
                }
            }
        },
    ));
    Ok(stats)
}

/// The kind stored under `key` (`{group|core}/{plural}/...`).
fn kind_of_key(key: &str) -> Option<&'static ResourceInfo> {
    let mut parts = key.splitn(3, '/');
    let group = parts.next()?;
    let plural = parts.next()?;
    ResourceInfo::by_group_resource(if group == "core" { "" } else { group }, plural)
}

/// Encodes what the store holds, kind by kind, until one cache generation is full (more
/// would only push out what was just encoded).
fn encode_stored(store: &dyn Store, cache: &JsonCache, stopped: impl Fn() -> bool) {
    let mut budget = cache.limit();
    for info in rkube_api::KINDS.iter().filter(|i| JsonCache::keeps(i)) {
        if stopped() {
            return;
        }
        let Ok(page) = store.list(&storage_prefix(info, ""), None, 0, None) else {
            return;
        };
        for kv in &page.items {
            if stopped() {
                return;
            }
            let any = stamped(kv, info);
            let Ok(json) = cache.encode(info, &any) else {
                continue;
            };
            budget = budget.saturating_sub(json.len() + any.value.len());
            if budget == 0 {
                return;
            }
        }
    }
}

/// Puts the calling thread at nice 19, so the encoding takes only CPU time nothing else
/// wants: the write path must not slow down for it.
#[allow(unsafe_code)]
fn lowest_priority() {
    // SAFETY: setpriority takes plain integers and touches no memory of ours; on Linux,
    // `who == 0` with PRIO_PROCESS means the calling thread only.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    if rc != 0 {
        tracing::debug!(
            "JSON warming runs at normal priority: setpriority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::core::v1::{Pod, Secret};
    use rkube_api::{to_any, Resource};

    fn pod(name: &str) -> Any {
        let pod: Pod = serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: default, resourceVersion: '7'}}\nspec: {{containers: [{{name: c, image: busybox}}]}}\n"
        ))
        .unwrap();
        to_any(&pod)
    }

    #[test]
    fn queued_versions_are_encoded_and_secrets_are_not_queued() {
        let stats = Arc::new(WarmStats::default());
        let (queue, receiver) = WarmQueue::new(1 << 20, stats.clone());
        let web = pod("web");
        assert!(queue.offer(Pod::info(), web.clone()));
        let secret: Secret =
            serde_yaml::from_str("metadata: {name: s, namespace: default}\ntype: Opaque\n").unwrap();
        assert!(
            !queue.offer(Secret::info(), to_any(&secret)),
            "a Secret is not queued"
        );
        drop(queue);
        let cache = JsonCache::new(1 << 20);
        receiver.drain(&cache);
        assert_eq!(stats.encoded.load(Ordering::Relaxed), 1);
        let direct = serde_json::to_vec(&super::super::json::to_json(Pod::info(), &web).unwrap()).unwrap();
        assert_eq!(cache.get(&web).as_deref(), Some(&direct[..]));
    }

    #[test]
    fn a_full_queue_drops_work_instead_of_growing() {
        let stats = Arc::new(WarmStats::default());
        let one = pod("web-00").value.len();
        let (queue, receiver) = WarmQueue::new(10 * one + one / 2, stats.clone());
        let accepted = (0..25)
            .filter(|i| queue.offer(Pod::info(), pod(&format!("web-{i:02}"))))
            .count();
        assert_eq!(accepted, 10, "room for 10");
        assert_eq!(queue.queued_bytes(), 10 * one);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 15);
        // each version the worker takes makes room for one more
        let cache = JsonCache::new(1 << 20);
        assert!(receiver.encode_next(&cache));
        assert!(queue.offer(Pod::info(), pod("web-25")));
        assert!(!queue.offer(Pod::info(), pod("web-26")));
    }

    #[test]
    fn the_cache_stays_within_two_generations() {
        let cache = JsonCache::new(64 << 10);
        for i in 0..500 {
            cache.encode(Pod::info(), &pod(&format!("web-{i}"))).unwrap();
            assert!(cache.bytes() <= 2 * cache.limit(), "{} bytes held", cache.bytes());
        }
        assert!(cache.bytes() > cache.limit() / 2);
    }

    #[test]
    fn reading_a_list_back_keeps_all_of_it() {
        let pods: Vec<Any> = (0..40).map(|i| pod(&format!("web-{i:02}"))).collect();
        let one = JsonCache::new(1 << 20)
            .encode(Pod::info(), &pods[0])
            .unwrap()
            .len()
            + pods[0].value.len();
        // 40 versions, 30 to a generation: 30 old, 10 young
        let cache = JsonCache::new(30 * one);
        for p in &pods {
            cache.encode(Pod::info(), p).unwrap();
        }
        for _ in 0..2 {
            for p in &pods {
                assert!(
                    cache.get(p).is_some(),
                    "a listed version aged out while the list read it"
                );
            }
        }
        assert!(cache.bytes() <= 2 * cache.limit());
    }

    #[test]
    fn keys_name_their_kind() {
        assert_eq!(kind_of_key("core/pods/default/web").map(|i| i.kind), Some("Pod"));
        assert_eq!(
            kind_of_key("apps/deployments/default/web").map(|i| i.kind),
            Some("Deployment")
        );
        assert_eq!(kind_of_key("core/nodes/n1").map(|i| i.kind), Some("Node"));
        assert!(kind_of_key("registry/whatever").is_none());
    }
}
