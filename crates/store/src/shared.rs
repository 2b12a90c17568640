//! The state the store handle, the writer thread and the watches share: the engine (sled
//! and its directory lock), the published snapshot, the commit broadcast, the held list
//! snapshots, the counters and the write failure. It sits in its own module so that
//! `sled_store.rs` (which creates it), `writer.rs` (which publishes to it) and `watch.rs`
//! (which follows it) each depend on it rather than on one another.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use im::OrdMap;
use tokio::sync::broadcast;

use crate::dir::DirLock;
use crate::{Event, KeyValue, Revision, StoreConfig, StoreError};

/// The sled database together with the directory lock that protects it. The fields drop in
/// order, so sled's files are closed before another process may take the lock. Watch
/// replays hold an `Arc` of this only for the duration of one log read.
pub(crate) struct Engine {
    pub(crate) db: sled::Db,
    pub(crate) db_path: PathBuf,
    _lock: DirLock,
}

impl Engine {
    pub(crate) fn new(db: sled::Db, db_path: PathBuf, lock: DirLock) -> Engine {
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
    pub(crate) engine: Arc<Engine>,
    pub(crate) config: StoreConfig,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Log entries at or below this revision may be gone. Raised by the writer *before* it
    /// deletes anything, so a replay that reads it afterwards knows whether it saw a hole.
    pub(crate) compacted: AtomicU64,
    /// Taken away on close, which ends every watch with Closed.
    events: RwLock<Option<broadcast::Sender<Arc<CommitBatch>>>>,
    held: Mutex<VecDeque<HeldSnapshot>>,
    pub(crate) counters: Counters,
    pub(crate) failure: Arc<Mutex<Option<WriteFailure>>>,
}

struct HeldSnapshot {
    snapshot: Arc<Snapshot>,
    last_used: Instant,
}

impl Shared {
    /// Publishes `snapshot` as the current state, with `compacted` as the log's horizon.
    pub(crate) fn new(
        engine: Arc<Engine>,
        config: StoreConfig,
        snapshot: Snapshot,
        compacted: Revision,
    ) -> Shared {
        let (events, _) = broadcast::channel(config.watch_buffer.max(1));
        Shared {
            engine,
            config,
            snapshot: RwLock::new(Arc::new(snapshot)),
            compacted: AtomicU64::new(compacted),
            events: RwLock::new(Some(events)),
            held: Mutex::new(VecDeque::new()),
            counters: Counters::default(),
            failure: Arc::new(Mutex::new(None)),
        }
    }

    pub(crate) fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Called by the writer after the snapshot's revision is durable.
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

    pub(crate) fn hold(&self, snapshot: &Arc<Snapshot>) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let ttl = self.config.list_snapshot_ttl;
        held.retain(|h| now.duration_since(h.last_used) < ttl);
        if let Some(h) = held.iter_mut().find(|h| h.snapshot.revision == snapshot.revision) {
            h.last_used = now;
            return;
        }
        // Oldest first; a full set drops the least recently used.
        if held.len() >= self.config.list_snapshots.max(1) {
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

    pub(crate) fn held_snapshot(&self, revision: Revision) -> Option<Arc<Snapshot>> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let ttl = self.config.list_snapshot_ttl;
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
