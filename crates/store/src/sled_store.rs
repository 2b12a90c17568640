//! The sled backend: opening and loading the data directory, and the read side (get, list,
//! list snapshots). Writes go through the single writer thread in `writer.rs`; watches
//! live in `watch.rs`; the state all three share is in `shared.rs`.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use im::OrdMap;
use tokio::sync::oneshot;

use crate::codec::{self, META_COMPACTED, META_REVISION, RECORD_PREFIX};
use crate::dir;
use crate::shared::{Engine, Shared, Snapshot, WriteFailure};
use crate::writer::{Request, Writer};
use crate::{
    KeyValue, ListResult, Op, Revision, Store, StoreConfig, StoreError, StoreFuture, TxnResult, WatchStream,
};

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
    /// Writes are being refused because the data directory's filesystem is full; they
    /// resume by themselves once it has room.
    pub storage_full: bool,
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
        let lock = Arc::new(lock);
        let engine = Arc::new(Engine::new(db, db_path, lock.clone()));
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

        let shared = Arc::new(Shared::new(
            engine,
            config,
            Snapshot {
                revision: loaded.revision,
                map: loaded.map.clone(),
            },
            loaded.compacted,
        ));

        let (requests, receiver) = mpsc::channel();
        let writer = Writer::new(
            shared.clone(),
            receiver,
            loaded.map,
            loaded.revision,
            loaded.compacted,
            lock,
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
                path: self.shared.db_path.clone(),
                source: std::io::Error::other("the store writer thread panicked"),
            })
        });
        self.shared.feed.close_events();
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
            revision: self.shared.feed.current().revision,
            compacted: self.shared.compacted.load(Ordering::SeqCst),
            storage_full: self
                .shared
                .full
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.shared.config.path
    }

    #[cfg(test)]
    pub(crate) fn engine(&self) -> Arc<Engine> {
        self.shared.engine().expect("the database is open")
    }

    /// Live watch subscriptions.
    #[cfg(test)]
    pub(crate) fn watchers(&self) -> usize {
        self.shared.feed.watchers()
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
        self.shared.feed.get(key)
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at_revision: Option<Revision>,
    ) -> Result<ListResult, StoreError> {
        self.shared.feed.list(prefix, start_after, limit, at_revision)
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
        self.shared.feed.current().revision
    }
}

/// sled with control-plane settings: a small cache and no background flusher, because
/// every write is flushed explicitly by the group commit before it is acknowledged.
pub(crate) fn open_sled(path: &Path, config: &StoreConfig) -> Result<sled::Db, StoreError> {
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
pub(crate) fn check_database_format(engine: &Engine, initialised: bool) -> Result<(), StoreError> {
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

pub(crate) struct Loaded {
    pub(crate) map: OrdMap<String, KeyValue>,
    pub(crate) revision: Revision,
    pub(crate) compacted: Revision,
}

/// Reads the key space and the counters, checking that they agree with each other, so a
/// damaged database is reported at startup rather than served.
pub(crate) fn load(engine: &Engine) -> Result<Loaded, StoreError> {
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
