//! The state the store handle, the writer thread and the watches share: the engine (sled
//! and its directory lock), the [`Feed`] (published snapshot, commit broadcast, held list
//! snapshots, which the etcd backend's cache uses too), the counters and the write failure.
//! It sits in its own module so that `sled_store.rs` (which creates it), `writer.rs` (which
//! publishes to it) and `watch.rs` (which follows it) each depend on it rather than on one
//! another.

use std::collections::VecDeque;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use im::OrdMap;
use tokio::sync::broadcast;

use crate::dir::DirLock;
use crate::{Event, KeyValue, ListResult, Revision, StoreConfig, StoreError};

/// The sled database together with the directory lock that protects it. The fields drop in
/// order, so sled's files are closed before another process may take the lock. Watch
/// replays hold an `Arc` of this only for the duration of one log read. The lock is shared
/// because the writer reopens the database under the same lock after the disk was full.
pub(crate) struct Engine {
    pub(crate) db: sled::Db,
    pub(crate) db_path: PathBuf,
    _lock: Arc<DirLock>,
}

impl Engine {
    pub(crate) fn new(db: sled::Db, db_path: PathBuf, lock: Arc<DirLock>) -> Engine {
        Engine {
            db,
            db_path,
            _lock: lock,
        }
    }
}

/// The whole key space at one revision. `im::OrdMap` shares structure between versions,
/// so every committed revision can be published and held cheaply.
pub(crate) struct Snapshot {
    pub(crate) revision: Revision,
    pub(crate) map: OrdMap<String, KeyValue>,
}

/// What one group commit made visible, as broadcast to watchers.
pub(crate) struct CommitBatch {
    /// The last revision in the batch.
    pub(crate) revision: Revision,
    /// In revision order.
    pub(crate) events: Vec<Event>,
}

/// Why writes stopped after sled failed, so that later callers get the same explanation.
#[derive(Clone, Debug)]
pub(crate) struct WriteFailure {
    pub(crate) path: PathBuf,
    pub(crate) kind: std::io::ErrorKind,
    pub(crate) message: String,
}

impl WriteFailure {
    pub(crate) fn to_error(&self) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source: std::io::Error::new(
                self.kind,
                format!(
                    "the store stopped accepting writes after a write failed ({}); restart \
                     rkube-apiserver",
                    self.message
                ),
            ),
        }
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) txns: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) compactions: AtomicU64,
}

/// State shared by the handle, the writer thread and (weakly) the watchers.
pub(crate) struct Shared {
    /// `None` only while the writer reopens sled after the disk was full and the reopening
    /// failed (still no room); watch replays are refused with [`StoreError::StorageFull`]
    /// then, and every other read is served from memory.
    engine: RwLock<Option<Arc<Engine>>>,
    pub(crate) db_path: PathBuf,
    /// Why writes are refused for now because the disk is full (the I/O error's text);
    /// cleared by the writer once it has room again.
    pub(crate) full: Mutex<Option<String>>,
    pub(crate) config: StoreConfig,
    pub(crate) feed: Feed,
    /// Log entries at or below this revision may be gone. Raised by the writer *before* it
    /// deletes anything, so a replay that reads it afterwards knows whether it saw a hole.
    pub(crate) compacted: AtomicU64,
    pub(crate) counters: Counters,
    pub(crate) failure: Arc<Mutex<Option<WriteFailure>>>,
}

impl Shared {
    /// Publishes `snapshot` as the current state, with `compacted` as the log's horizon.
    pub(crate) fn new(
        engine: Arc<Engine>,
        config: StoreConfig,
        snapshot: Snapshot,
        compacted: Revision,
    ) -> Shared {
        let feed = Feed::new(
            snapshot,
            config.watch_buffer,
            config.list_snapshots,
            config.list_snapshot_ttl,
        );
        Shared {
            db_path: engine.db_path.clone(),
            engine: RwLock::new(Some(engine)),
            full: Mutex::new(None),
            config,
            feed,
            compacted: AtomicU64::new(compacted),
            counters: Counters::default(),
            failure: Arc::new(Mutex::new(None)),
        }
    }
}

impl Shared {
    /// The open database, for one read or one write.
    pub(crate) fn engine(&self) -> Result<Arc<Engine>, StoreError> {
        match &*self.engine.read().unwrap_or_else(PoisonError::into_inner) {
            Some(engine) => Ok(engine.clone()),
            None => Err(self.full_error()),
        }
    }

    /// The slot the writer swaps the database in while it reopens it.
    pub(crate) fn engine_slot(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<Engine>>> {
        self.engine.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`StoreError::StorageFull`] naming the data directory and the last I/O error.
    pub(crate) fn full_error(&self) -> StoreError {
        let why = self
            .full
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "No space left on device".to_string());
        StoreError::disk_full(&self.config.path, why)
    }
}

/// What every backend publishes to its readers: the key space at the latest revision (the
/// snapshot reads are served from), the broadcast of committed batches that live watches
/// follow, and the snapshots held for paginated lists. The sled writer feeds it after each
/// fsync; the etcd backend's cache feeds it from its etcd watch.
pub(crate) struct Feed {
    snapshot: RwLock<Arc<Snapshot>>,
    /// Taken away on close, which ends every watch with Closed.
    events: RwLock<Option<broadcast::Sender<Arc<CommitBatch>>>>,
    held: Mutex<VecDeque<HeldSnapshot>>,
    list_snapshots: usize,
    list_snapshot_ttl: Duration,
}

struct HeldSnapshot {
    snapshot: Arc<Snapshot>,
    last_used: Instant,
}

impl Feed {
    pub(crate) fn new(
        snapshot: Snapshot,
        watch_buffer: usize,
        list_snapshots: usize,
        list_snapshot_ttl: Duration,
    ) -> Feed {
        let (events, _) = broadcast::channel(watch_buffer.max(1));
        Feed {
            snapshot: RwLock::new(Arc::new(snapshot)),
            events: RwLock::new(Some(events)),
            held: Mutex::new(VecDeque::new()),
            list_snapshots,
            list_snapshot_ttl,
        }
    }

    pub(crate) fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes `snapshot` what readers see, then tells the watchers (so that a watcher that
    /// reads the current revision after an event finds it at least that new).
    pub(crate) fn publish(&self, snapshot: Snapshot, batch: CommitBatch) {
        *self.snapshot.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
        if let Some(sender) = &*self.events.read().unwrap_or_else(PoisonError::into_inner) {
            // No receivers is not an error: nobody is watching.
            let _ = sender.send(Arc::new(batch));
        }
    }

    pub(crate) fn subscribe(&self) -> Option<broadcast::Receiver<Arc<CommitBatch>>> {
        self.events
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(broadcast::Sender::subscribe)
    }

    pub(crate) fn close_events(&self) {
        self.events.write().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// Replaces the broadcast with a fresh one: every watch following the old one ends
    /// (and learns why from its change log). Used when the history it followed is lost.
    pub(crate) fn reset_events(&self, watch_buffer: usize) {
        let mut events = self.events.write().unwrap_or_else(PoisonError::into_inner);
        if events.is_some() {
            *events = Some(broadcast::channel(watch_buffer.max(1)).0);
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<KeyValue> {
        self.current().map.get(key).cloned()
    }

    /// [`crate::Store::list`] over the current snapshot or a held one.
    pub(crate) fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at_revision: Option<Revision>,
    ) -> Result<ListResult, StoreError> {
        let current = self.current();
        let snapshot = match at_revision {
            None => current,
            Some(r) if r == current.revision => current,
            Some(r) => self.held_snapshot(r).ok_or(StoreError::Expired {
                requested: r,
                current: current.revision,
            })?,
        };
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut matching = snapshot
            .map
            .range::<_, str>((lower, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix));
        let mut items = Vec::new();
        for (_, kv) in matching.by_ref() {
            items.push(kv.clone());
            if limit != 0 && items.len() == limit {
                break;
            }
        }
        // Counting the rest walks it; lists of a control plane's size make that cheap next
        // to encoding the page, and Kubernetes clients show the number.
        let remaining = matching.count() as u64;
        // Any paginated list may be continued, even when this page reached the end of the
        // prefix: the caller may have filtered and stopped early within the page.
        if limit != 0 {
            self.hold(&snapshot);
        }
        Ok(ListResult {
            items,
            revision: snapshot.revision,
            more: remaining > 0,
            remaining,
        })
    }

    fn hold(&self, snapshot: &Arc<Snapshot>) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let ttl = self.list_snapshot_ttl;
        held.retain(|h| now.duration_since(h.last_used) < ttl);
        if let Some(h) = held.iter_mut().find(|h| h.snapshot.revision == snapshot.revision) {
            h.last_used = now;
            return;
        }
        // Oldest first; a full set drops the least recently used.
        if held.len() >= self.list_snapshots.max(1) {
            if let Some(lru) = held
                .iter()
                .enumerate()
                .min_by_key(|(_, h)| h.last_used)
                .map(|(i, _)| i)
            {
                held.remove(lru);
            }
        }
        held.push_back(HeldSnapshot {
            snapshot: snapshot.clone(),
            last_used: now,
        });
    }

    fn held_snapshot(&self, revision: Revision) -> Option<Arc<Snapshot>> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let ttl = self.list_snapshot_ttl;
        held.retain(|h| now.duration_since(h.last_used) < ttl);
        let h = held.iter_mut().find(|h| h.snapshot.revision == revision)?;
        h.last_used = now;
        Some(h.snapshot.clone())
    }

    /// Live watch subscriptions.
    #[cfg(test)]
    pub(crate) fn watchers(&self) -> usize {
        self.events
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, broadcast::Sender::receiver_count)
    }
}
