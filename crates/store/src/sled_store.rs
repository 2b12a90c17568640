//! The sled backend: opening and loading the data directory, and the read side (get, list,
//! list snapshots). Writes go through the single writer thread in `writer.rs`; watches
//! live in `watch.rs`.

use std::collections::VecDeque;
use std::ops::Bound;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use im::OrdMap;
use tokio::sync::{broadcast, oneshot};

use crate::codec::{self, META_COMPACTED, META_REVISION, RECORD_PREFIX};
use crate::dir::{self, DirLock};
use crate::writer::{Request, Writer};
use crate::{
    Event, KeyValue, ListResult, Op, Revision, Store, StoreConfig, StoreError, StoreFuture, TxnResult,
    WatchStream,
};

/// The sled database together with the directory lock that protects it. The fields drop in
/// order, so sled's files are closed before another process may take the lock. Watch
/// replays hold an `Arc` of this only for the duration of one log read.
pub(crate) struct Engine {
    pub(crate) db: sled::Db,
    pub(crate) db_path: PathBuf,
    _lock: DirLock,
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

    fn close_events(&self) {
        self.events.write().unwrap_or_else(PoisonError::into_inner).take();
    }

    fn hold(&self, snapshot: &Arc<Snapshot>) {
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

    fn held_snapshot(&self, revision: Revision) -> Option<Arc<Snapshot>> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let ttl = self.config.list_snapshot_ttl;
        held.retain(|h| now.duration_since(h.last_used) < ttl);
        let h = held.iter_mut().find(|h| h.snapshot.revision == revision)?;
        h.last_used = now;
        Some(h.snapshot.clone())
    }
}

/// Counters for tests, metrics and capacity planning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed (each one revision).
    pub txns: u64,
    /// Transactions refused (NotFound, AlreadyExists, Conflict).
    pub rejected: u64,
    /// fsyncs. Group commit keeps this well below `txns` under concurrent load.
    pub flushes: u64,
    /// Times the change log was compacted.
    pub compactions: u64,
    pub revision: Revision,
    pub compacted: Revision,
}

/// The embedded store: sled on disk, the key space in memory, one writer thread.
pub struct SledStore {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    writer: Mutex<Option<JoinHandle<Result<(), StoreError>>>>,
    closed: AtomicBool,
}

impl SledStore {
    /// Locks and opens (or initialises) the data directory, loads the key space into memory
    /// and starts the writer thread. Does not need a tokio runtime; watches do.
    pub fn open(config: StoreConfig) -> Result<SledStore, StoreError> {
        let (lock, initialised) = dir::prepare(&config.path)?;
        let db_path = dir::db_path(&config.path);
        let db = open_sled(&db_path, &config)?;
        let engine = Arc::new(Engine {
            db,
            db_path,
            _lock: lock,
        });
        check_database_format(&engine, initialised)?;
        if !initialised {
            dir::write_marker(&config.path)?;
        }
        let loaded = load(&engine)?;
        tracing::info!(
            path = %config.path.display(),
            revision = loaded.revision,
            compacted = loaded.compacted,
            keys = loaded.map.len(),
            "opened store"
        );

        let (events, _) = broadcast::channel(config.watch_buffer.max(1));
        let shared = Arc::new(Shared {
            engine,
            config,
            snapshot: RwLock::new(Arc::new(Snapshot {
                revision: loaded.revision,
                map: loaded.map.clone(),
            })),
            compacted: AtomicU64::new(loaded.compacted),
            events: RwLock::new(Some(events)),
            held: Mutex::new(VecDeque::new()),
            counters: Counters::default(),
            failure: Arc::new(Mutex::new(None)),
        });

        let (requests, receiver) = mpsc::channel();
        let writer = Writer::new(
            shared.clone(),
            receiver,
            loaded.map,
            loaded.revision,
            loaded.compacted,
        );
        let handle = std::thread::Builder::new()
            .name("rkube-store-writer".to_string())
            .spawn(move || writer.run())
            .map_err(StoreError::io(&shared.config.path))?;

        Ok(SledStore {
            shared,
            requests,
            writer: Mutex::new(Some(handle)),
            closed: AtomicBool::new(false),
        })
    }

    /// Finishes the queued writes, flushes, stops the writer and ends every watch with
    /// Closed. Later writes and watches answer Closed; reads keep serving the last snapshot.
    /// The directory lock is released when the last handle is dropped. Idempotent.
    pub fn close(&self) -> Result<(), StoreError> {
        self.closed.store(true, Ordering::SeqCst);
        let handle = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(handle) = handle else {
            return Ok(());
        };
        // The writer may already have stopped after a failure; then the send fails.
        let _ = self.requests.send(Request::Shutdown);
        let result = handle.join().unwrap_or_else(|_| {
            Err(StoreError::Io {
                path: self.shared.engine.db_path.clone(),
                source: std::io::Error::other("the store writer thread panicked"),
            })
        });
        self.shared.close_events();
        result
    }

    /// Compacts the change log to `revision - history` now instead of waiting for the
    /// periodic pass. Resolves with the new compacted revision once it is durable.
    pub fn compact(&self) -> StoreFuture<Revision> {
        let (reply, answer) = oneshot::channel();
        let sent = self.requests.send(Request::Compact { reply }).is_ok();
        let failure = self.shared.failure.clone();
        Box::pin(async move {
            if !sent {
                return Err(stopped(&failure));
            }
            answer.await.unwrap_or_else(|_| Err(stopped(&failure)))
        })
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.shared.counters;
        StoreStats {
            txns: c.txns.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            revision: self.shared.current().revision,
            compacted: self.shared.compacted.load(Ordering::SeqCst),
        }
    }

    pub fn path(&self) -> &Path {
        &self.shared.config.path
    }

    #[cfg(test)]
    pub(crate) fn engine(&self) -> Arc<Engine> {
        self.shared.engine.clone()
    }

    /// Live watch subscriptions.
    #[cfg(test)]
    pub(crate) fn watchers(&self) -> usize {
        self.shared
            .events
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, broadcast::Sender::receiver_count)
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the store failed");
        }
    }
}

fn stopped(failure: &Mutex<Option<WriteFailure>>) -> StoreError {
    match &*failure.lock().unwrap_or_else(PoisonError::into_inner) {
        Some(failure) => failure.to_error(),
        None => StoreError::Closed,
    }
}

impl Store for SledStore {
    fn get(&self, key: &str) -> Option<KeyValue> {
        self.shared.current().map.get(key).cloned()
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at_revision: Option<Revision>,
    ) -> Result<ListResult, StoreError> {
        let current = self.shared.current();
        let snapshot = match at_revision {
            None => current,
            Some(r) if r == current.revision => current,
            Some(r) => self.shared.held_snapshot(r).ok_or(StoreError::Expired {
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
            self.shared.hold(&snapshot);
        }
        Ok(ListResult {
            items,
            revision: snapshot.revision,
            more: remaining > 0,
            remaining,
        })
    }

    fn txn(&self, ops: Vec<Op>) -> StoreFuture<TxnResult> {
        let (reply, answer) = oneshot::channel();
        let sent =
            !self.closed.load(Ordering::SeqCst) && self.requests.send(Request::Txn { ops, reply }).is_ok();
        let failure = self.shared.failure.clone();
        Box::pin(async move {
            if !sent {
                return Err(stopped(&failure));
            }
            // The writer drops the reply sender only when it stops before answering.
            answer.await.unwrap_or_else(|_| Err(stopped(&failure)))
        })
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        crate::watch::start(&self.shared, prefix, after)
    }

    fn revision(&self) -> Revision {
        self.shared.current().revision
    }
}

/// sled with control-plane settings: a small cache and no background flusher, because
/// every write is flushed explicitly by the group commit before it is acknowledged.
fn open_sled(path: &Path, config: &StoreConfig) -> Result<sled::Db, StoreError> {
    let sled_config = sled::Config::new()
        .path(path)
        .cache_capacity(config.cache_bytes)
        .flush_every_ms(None)
        .mode(sled::Mode::HighThroughput);
    // sled panics on some malformed files instead of returning an error; a damaged data
    // directory must produce a message, not a crash.
    match panic::catch_unwind(AssertUnwindSafe(|| sled_config.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(StoreError::from_sled(path, e)),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no detail");
            Err(StoreError::corrupt(
                path,
                format!("sled could not read its files: {detail}"),
            ))
        }
    }
}

/// sled answers a damaged data file with an empty database rather than an error, so the
/// database carries the format too: a marked directory whose database lacks it has lost
/// its data, and must not be served as an empty store.
fn check_database_format(engine: &Engine, initialised: bool) -> Result<(), StoreError> {
    let path = &engine.db_path;
    let sled_err = |e| StoreError::from_sled(path, e);
    match engine.db.get(codec::META_FORMAT).map_err(sled_err)? {
        Some(format) => {
            let format = codec::decode_u64("m/format", &format).map_err(|d| StoreError::corrupt(path, d))?;
            if format != dir::FORMAT {
                return Err(StoreError::UnsupportedFormat {
                    path: path.clone(),
                    found: format.to_string(),
                    supported: dir::FORMAT,
                });
            }
            Ok(())
        }
        None if initialised => Err(StoreError::corrupt(
            path,
            format!(
                "the database holds no rkube data although {} says it was initialised \
                 (sled could not read its files, or they were removed)",
                dir::MARKER_FILE
            ),
        )),
        None if !engine.db.is_empty() => Err(StoreError::Foreign {
            path: path.clone(),
            detail: "it holds a sled database that rkube did not create".to_string(),
        }),
        None => {
            engine
                .db
                .insert(codec::META_FORMAT, &codec::encode_u64(dir::FORMAT)[..])
                .map_err(sled_err)?;
            engine.db.flush().map_err(sled_err)?;
            Ok(())
        }
    }
}

struct Loaded {
    map: OrdMap<String, KeyValue>,
    revision: Revision,
    compacted: Revision,
}

/// Reads the key space and the counters, checking that they agree with each other, so a
/// damaged database is reported at startup rather than served.
fn load(engine: &Engine) -> Result<Loaded, StoreError> {
    let path = &engine.db_path;
    let sled_err = |e| StoreError::from_sled(path, e);
    let meta = |name: &[u8]| -> Result<Revision, StoreError> {
        match engine.db.get(name).map_err(sled_err)? {
            None => Ok(0),
            Some(v) => codec::decode_u64(&String::from_utf8_lossy(name), &v)
                .map_err(|d| StoreError::corrupt(path, d)),
        }
    };
    let revision = meta(META_REVISION)?;
    let compacted = meta(META_COMPACTED)?;
    if compacted > revision {
        return Err(StoreError::corrupt(
            path,
            format!("compacted revision {compacted} is after the current revision {revision}"),
        ));
    }

    let mut map = OrdMap::new();
    for item in engine.db.scan_prefix(RECORD_PREFIX) {
        let (key, value) = item.map_err(sled_err)?;
        let kv = codec::decode_record(&key, &value).map_err(|d| StoreError::corrupt(path, d))?;
        if kv.mod_revision > revision || kv.create_revision > kv.mod_revision {
            return Err(StoreError::corrupt(
                path,
                format!(
                    "key {} has revisions {}/{} but the store is at revision {revision}",
                    kv.key, kv.create_revision, kv.mod_revision
                ),
            ));
        }
        map.insert(kv.key.clone(), kv);
    }

    if let Some(last) = engine.db.scan_prefix(codec::LOG_PREFIX).keys().next_back() {
        let last = last.map_err(sled_err)?;
        let last = codec::log_revision(&last).map_err(|d| StoreError::corrupt(path, d))?;
        if last > revision {
            return Err(StoreError::corrupt(
                path,
                format!("the change log reaches revision {last} but the store is at {revision}"),
            ));
        }
    }
    Ok(Loaded {
        map,
        revision,
        compacted,
    })
}
