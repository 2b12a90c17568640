//! `Informer`: a watcher feeding a cache, and telling subscribers what
//! changed. One per kind (and selector) per process; controllers share it.

use crate::error::{Error, Result};
use crate::runtime::store::{Change, Store, Writer};
use crate::runtime::watcher::{watcher, Event, ListWatch, WatcherConfig};
use futures::stream::{BoxStream, Stream, StreamExt};
use rkube_api::Resource;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

type Subscribers<K> = Arc<Mutex<Vec<mpsc::UnboundedSender<Change<K>>>>>;
/// The cache writer and the events that feed it, until the informer starts.
type Pending<K> = (Writer<K>, BoxStream<'static, Event<K>>);

/// A cached, watched collection. Clones are handles on the same informer;
/// its task stops when the last handle is dropped.
pub struct Informer<K> {
    store: Store<K>,
    subscribers: Subscribers<K>,
    runner: Arc<Runner<K>>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            store: self.store.clone(),
            subscribers: self.subscribers.clone(),
            runner: self.runner.clone(),
        }
    }
}

impl<K> fmt::Debug for Informer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Informer")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

struct Runner<K> {
    /// The writer and its event source until `start` takes them.
    pending: Mutex<Option<Pending<K>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl<K> Drop for Runner<K> {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<K: Resource> Informer<K> {
    /// An informer over `lw` (usually an `Api<K>`), not yet started.
    pub fn new<L: ListWatch<K>>(lw: L, config: WatcherConfig) -> Self {
        Self::from_events(watcher(lw, config).boxed())
    }

    /// An informer over any event source (tests, or a custom watcher).
    pub fn from_events(events: BoxStream<'static, Event<K>>) -> Self {
        let writer = Writer::new();
        Informer {
            store: writer.store(),
            subscribers: Arc::new(Mutex::new(Vec::new())),
            runner: Arc::new(Runner {
                pending: Mutex::new(Some((writer, events))),
                task: Mutex::new(None),
            }),
        }
    }

    /// The cache.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every change the cache makes from now on. Changes made before are
    /// already in the store; subscribe before `start` to see every one.
    pub fn subscribe(&self) -> Subscription<K> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.subscribers).push(tx);
        Subscription { rx }
    }

    /// Starts listing and watching, once; later calls do nothing. Needs a
    /// tokio runtime.
    pub fn start(&self) -> Result<()> {
        let Some((mut writer, mut events)) = lock(&self.runner.pending).take() else {
            return Ok(());
        };
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::InvalidRequest("Informer::start must be called inside a tokio runtime".into())
        })?;
        let subscribers = self.subscribers.clone();
        let task = handle.spawn(async move {
            while let Some(event) = events.next().await {
                let changes = writer.apply(event);
                if changes.is_empty() {
                    continue;
                }
                let mut subs = lock(&subscribers);
                subs.retain(|tx| changes.iter().all(|c| tx.send(c.clone()).is_ok()));
            }
        });
        *lock(&self.runner.task) = Some(task);
        Ok(())
    }

    pub fn is_synced(&self) -> bool {
        self.store.is_synced()
    }

    pub async fn wait_until_synced(&self) {
        self.store.wait_until_synced().await
    }
}

/// A stream of cache changes. Unbounded, so a slow subscriber never makes
/// the cache miss an event; a dropped one is forgotten.
pub struct Subscription<K> {
    rx: mpsc::UnboundedReceiver<Change<K>>,
}

impl<K> Stream for Subscription<K> {
    type Item = Change<K>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::runtime::fake::{gone, pod, FakeApi, PATIENCE};
    use rkube_api::core::v1::Pod;
    use rkube_testing::eventually;
    use std::time::Duration;

    fn config() -> WatcherConfig {
        WatcherConfig {
            page_size: 2,
            ..WatcherConfig::default()
        }
    }

    fn node_of(store: &Store<Pod>, key: &str) -> Option<String> {
        store
            .get(key)
            .map(|p| p.spec.as_ref().map(|s| s.node_name.clone()).unwrap_or_default())
    }

    async fn started(fake: &FakeApi) -> (Informer<Pod>, Subscription<Pod>) {
        let informer = Informer::new(fake.clone(), config());
        let changes = informer.subscribe();
        informer.start().unwrap();
        informer.wait_until_synced().await;
        eventually("the watch is open", PATIENCE, || async {
            fake.open_watches() == 1
        })
        .await
        .unwrap();
        (informer, changes)
    }

    async fn next_change(changes: &mut Subscription<Pod>) -> (Option<String>, Option<String>) {
        let c = tokio::time::timeout(Duration::from_secs(10), changes.next())
            .await
            .unwrap()
            .unwrap();
        let name = |p: &Option<Arc<Pod>>| p.as_ref().map(|p| p.name().to_string());
        (name(&c.old), name(&c.new))
    }

    #[tokio::test(start_paused = true)]
    async fn lists_in_pages_then_watches_from_the_list_revision() {
        let fake = FakeApi::default();
        for name in ["a", "b", "c"] {
            fake.put(pod(name, "n1"));
        }
        let (informer, mut changes) = started(&fake).await;
        let store = informer.store();
        assert_eq!(store.len(), 3);
        assert_eq!(fake.list_count(), 2, "3 objects in pages of 2");
        assert_eq!(fake.watch_rvs(), ["3"]);
        assert!(fake.state().watch_calls[0].allow_bookmarks);
        for _ in 0..3 {
            assert!(matches!(next_change(&mut changes).await, (None, Some(_))));
        }

        fake.put(pod("a", "n2"));
        fake.delete("ns/b");
        fake.put(pod("d", "n1"));
        assert_eq!(
            next_change(&mut changes).await,
            (Some("a".into()), Some("a".into()))
        );
        assert_eq!(next_change(&mut changes).await, (Some("b".into()), None));
        assert_eq!(next_change(&mut changes).await, (None, Some("d".into())));
        assert_eq!(node_of(&store, "ns/a").as_deref(), Some("n2"));
        assert!(store.get("ns/b").is_none());
        assert_eq!(store.get("ns/d").unwrap().metadata().resource_version, "6");
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_watch_resumes_from_the_last_revision_without_relisting() {
        let fake = FakeApi::default();
        fake.put(pod("a", "n1"));
        let (informer, mut changes) = started(&fake).await;
        let store = informer.store();
        next_change(&mut changes).await;
        fake.put(pod("b", "n1")); // rv 2, seen
        next_change(&mut changes).await;

        fake.disconnect();
        // Changes while no watch is open are replayed on resume.
        fake.put(pod("c", "n1")); // rv 3
        fake.delete("ns/a"); // rv 4
        assert_eq!(next_change(&mut changes).await, (None, Some("c".into())));
        assert_eq!(next_change(&mut changes).await, (Some("a".into()), None));
        assert_eq!(fake.watch_rvs(), ["1", "2"]);

        // An error on the stream resumes the same way, after a backoff.
        fake.break_watches(|| Error::Transport {
            server: "fake".into(),
            message: "reset".into(),
        });
        fake.put(pod("e", "n1")); // rv 5
        assert_eq!(next_change(&mut changes).await, (None, Some("e".into())));
        assert_eq!(fake.watch_rvs(), ["1", "2", "4"]);
        assert_eq!(
            fake.list_count(),
            1,
            "no relist while the revision is still served"
        );
        let mut keys = store.keys();
        keys.sort();
        assert_eq!(keys, ["ns/b", "ns/c", "ns/e"]);
    }

    #[tokio::test(start_paused = true)]
    async fn bookmarks_move_the_resume_point() {
        let fake = FakeApi::default();
        fake.put(pod("a", ""));
        let (_informer, _changes) = started(&fake).await;
        // Revisions advance through writes the watch does not show (other
        // namespaces, selectors); a bookmark carries the new revision.
        fake.state().revision = 40;
        fake.bookmark();
        tokio::time::sleep(Duration::from_millis(10)).await;
        fake.disconnect();
        eventually("the watch resumes", PATIENCE, || async {
            fake.watch_rvs().len() == 2
        })
        .await
        .unwrap();
        assert_eq!(fake.watch_rvs(), ["1", "40"]);
    }

    #[tokio::test(start_paused = true)]
    async fn gone_relists_and_the_cache_replaces_itself() {
        let fake = FakeApi::default();
        fake.put(pod("a", "n1"));
        fake.put(pod("b", "n1"));
        let (informer, mut changes) = started(&fake).await;
        let store = informer.store();
        store.add_index("node", |p: &Pod| {
            p.spec.iter().map(|s| s.node_name.clone()).collect()
        });
        next_change(&mut changes).await;
        next_change(&mut changes).await;

        // While disconnected, a is deleted, b changes and c is created, and
        // the server forgets those revisions.
        fake.disconnect();
        fake.delete("ns/a");
        fake.put(pod("b", "n2"));
        fake.put(pod("c", "n1"));
        fake.compact();

        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(next_change(&mut changes).await);
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                (None, Some("c".into())),
                (Some("a".into()), None),
                (Some("b".into()), Some("b".into()))
            ]
        );
        assert!(store.get("ns/a").is_none(), "the deleted object disappeared");
        assert_eq!(node_of(&store, "ns/b").as_deref(), Some("n2"));
        assert_eq!(store.len(), 2);
        assert_eq!(store.index_keys("node", "n1").unwrap(), ["ns/c"]);
        assert_eq!(fake.list_count(), 2, "one relist");
        assert_eq!(
            fake.watch_rvs(),
            ["2", "2", "5"],
            "resume refused as Gone, then watch from the relist"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gone_on_an_open_stream_relists_too() {
        let fake = FakeApi::default();
        fake.put(pod("a", ""));
        let (informer, _changes) = started(&fake).await;
        fake.break_watches(gone);
        fake.delete("ns/a");
        eventually("relisted", PATIENCE, || async { fake.list_count() == 2 })
            .await
            .unwrap();
        eventually("a is gone", PATIENCE, || async { informer.store().is_empty() })
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn failed_lists_are_retried_with_backoff_before_sync() {
        let fake = FakeApi::default();
        fake.put(pod("a", ""));
        fake.state().fail_lists = 3;
        let informer = Informer::new(fake.clone(), config());
        informer.start().unwrap();
        let begin = tokio::time::Instant::now();
        assert!(!informer.is_synced());
        informer.wait_until_synced().await;
        assert_eq!(informer.store().len(), 1);
        assert_eq!(fake.list_count(), 4);
        // 800 ms + 1.6 s + 3.2 s, each with up to 20 % jitter.
        let waited = begin.elapsed();
        assert!(
            waited >= Duration::from_millis(5600) && waited <= Duration::from_millis(6720),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn start_is_idempotent_and_dropping_every_handle_stops_the_task() {
        let fake = FakeApi::default();
        let informer = Informer::new(fake.clone(), config());
        informer.start().unwrap();
        informer.clone().start().unwrap();
        informer.wait_until_synced().await;
        eventually("the watch is open", PATIENCE, || async {
            fake.open_watches() == 1
        })
        .await
        .unwrap();
        assert_eq!(fake.list_count(), 1);
        drop(informer);
        eventually("the watch is closed", PATIENCE, || async {
            fake.open_watches() == 0
        })
        .await
        .unwrap();
    }
}
