//! What the store's integration tests share: one harness that opens either backend with
//! the same knobs, so that one suite runs on sled and on a real etcd, and the helpers that
//! read watches.

#![allow(dead_code)] // each test binary uses its own part

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rkube_store::{
    EtcdConfig, EtcdStore, Event, Revision, SledStore, Store, StoreConfig, StoreError, WatchItem, WatchStream,
};
use rkube_testing::etcd::Etcd;

pub fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sled,
    Etcd,
}

/// The knobs both backends have.
#[derive(Clone, Debug)]
pub struct Knobs {
    /// Revisions of history kept (sled: its log; etcd: the cache's event log and what
    /// [`Opened::compact`] keeps).
    pub history: u64,
    pub list_snapshots: usize,
    pub watch_buffer: usize,
    pub progress_interval: Duration,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            history: 100_000,
            list_snapshots: 32,
            watch_buffer: 1024,
            progress_interval: Duration::from_secs(1),
        }
    }
}

/// Where a test's data lives: a sled directory, or an etcd of its own (so that revisions
/// are the test's alone). Reopening gives a new store over the same data.
pub struct Harness {
    pub kind: Kind,
    pub dir: tempfile::TempDir,
    pub etcd: Option<Etcd>,
}

impl Harness {
    pub async fn new(kind: Kind) -> Harness {
        let etcd = match kind {
            Kind::Sled => None,
            Kind::Etcd => Some(
                Etcd::temp()
                    .await
                    .expect("start etcd (install Debian's etcd-server: apt-get install etcd-server)"),
            ),
        };
        Harness {
            kind,
            dir: tempfile::tempdir().unwrap(),
            etcd,
        }
    }

    pub async fn open(&self) -> Opened {
        self.open_with(|_| {}).await
    }

    pub async fn open_with(&self, change: impl FnOnce(&mut Knobs)) -> Opened {
        let mut knobs = Knobs::default();
        change(&mut knobs);
        match &self.etcd {
            None => {
                let mut config = StoreConfig::new(self.dir.path());
                config.history = knobs.history;
                config.list_snapshots = knobs.list_snapshots;
                config.watch_buffer = knobs.watch_buffer;
                config.progress_interval = knobs.progress_interval;
                Opened::Sled(Arc::new(SledStore::open(config).expect("open store")), knobs)
            }
            Some(etcd) => {
                let mut config = EtcdConfig::new(vec![etcd.endpoint.clone()]);
                config.history = knobs.history;
                config.list_snapshots = knobs.list_snapshots;
                config.watch_buffer = knobs.watch_buffer;
                config.progress_interval = knobs.progress_interval;
                config.compaction_interval = Duration::ZERO;
                Opened::Etcd(
                    Arc::new(EtcdStore::connect(config).await.expect("connect to etcd")),
                    knobs,
                )
            }
        }
    }
}

/// An open store of either backend.
pub enum Opened {
    Sled(Arc<SledStore>, Knobs),
    Etcd(Arc<EtcdStore>, Knobs),
}

impl std::ops::Deref for Opened {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        match self {
            Opened::Sled(store, _) => store.as_ref(),
            Opened::Etcd(store, _) => store.as_ref(),
        }
    }
}

impl Opened {
    pub fn shared(&self) -> Arc<dyn Store> {
        match self {
            Opened::Sled(store, _) => store.clone(),
            Opened::Etcd(store, _) => store.clone(),
        }
    }

    /// Drops the history older than `history` revisions now; returns the new horizon.
    pub async fn compact(&self) -> Revision {
        match self {
            Opened::Sled(store, _) => store.compact().await.unwrap(),
            Opened::Etcd(store, knobs) => {
                let to = store.revision().saturating_sub(knobs.history);
                store.compact(to).await.unwrap()
            }
        }
    }

    pub async fn close(&self) {
        match self {
            Opened::Sled(store, _) => store.close().unwrap(),
            Opened::Etcd(store, _) => store.close().await,
        }
    }
}

/// The next event, skipping progress items; fails the test after 10 s.
pub async fn next_event(watch: &mut WatchStream) -> Event {
    match next_non_progress(watch).await {
        Some(Ok(WatchItem::Event(event))) => event,
        Some(Ok(WatchItem::Progress(_))) => unreachable!("skipped"),
        Some(Err(e)) => panic!("watch failed: {e}"),
        None => panic!("watch ended"),
    }
}

/// The next item that is not a progress item (an event or an error), or None at the end;
/// fails the test after 10 s.
pub async fn next_non_progress(watch: &mut WatchStream) -> Option<Result<WatchItem, StoreError>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, watch.next())
            .await
            .expect("no watch event or error within 10 s")
        {
            Some(Ok(WatchItem::Progress(_))) => continue,
            other => return other,
        }
    }
}

/// Why a watch from `after` is refused: at once (sled, or etcd when it knows) or as the
/// stream's first item (etcd finding out from its history).
pub async fn watch_refusal(store: &dyn Store, prefix: &str, after: Revision) -> StoreError {
    match store.watch(prefix, after) {
        Err(e) => e,
        Ok(mut watch) => match next_non_progress(&mut watch).await {
            Some(Err(e)) => e,
            other => panic!("a watch from {after} was not refused: {other:?}"),
        },
    }
}

/// The suite's tests, generated once per backend: `sled::NAME` and `etcd::NAME`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Harness::new(super::common::Kind::Sled).await).await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Harness::new(super::common::Kind::Etcd).await).await
                }
            )*
        }
    };
}
