//! The single writer: every mutation of the store happens on one OS thread.
//!
//! Group commit: the writer blocks for one request, then takes every request already
//! queued (up to `max_group`), validates each transaction against the state left by the
//! ones before it, gives the valid ones consecutive revisions, writes them all in one sled
//! batch and makes them durable with one fsync. Only then does it publish the new snapshot,
//! broadcast the events and answer the callers. Concurrent writers therefore share fsyncs,
//! and nothing is acknowledged or visible before it is on disk.
//!
//! Compaction runs on the same thread between groups, deleting old log entries in small
//! chunks so that writers never wait behind a long delete.
//!
//! A full disk is not fatal. Before each group the writer checks that the data directory's
//! filesystem keeps `min_free_bytes` free after the group's bytes; if not, the whole group
//! is refused with [`StoreError::StorageFull`] and sled is not touched, so the next group
//! that fits simply goes through: writing resumes by itself once space is freed.
//!
//! The check can lose a race (another process fills the disk in between, or a sled write
//! is larger than counted). sled, once a write has failed, refuses every later one (it keeps
//! a global error for the life of the open database), so then the writer refuses writes
//! the same way and, about once a second when the filesystem has room again, opens the
//! database anew under the same directory lock (the old one is closed on a thread of its
//! own: sled's close flushes, and after a failed write that flush may never return). It
//! loads what is on disk and checks it against what it had acknowledged before writing
//! again: nothing acknowledged may be missing (that would be corruption, and writes stop
//! for good), and a refused group that reached the disk anyway is published like any other
//! commit, so readers and watchers see exactly what is stored. Reads are served from memory
//! throughout, and live watches keep following.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use im::OrdMap;
use tokio::sync::oneshot;

use crate::codec::{self, META_COMPACTED, META_REVISION};
use crate::dir::DirLock;
use crate::shared::{CommitBatch, Engine, Shared, Snapshot, WriteFailure};
use crate::{Event, EventKind, KeyValue, Op, Revision, StoreError, TxnResult};

/// Log entries deleted per sled batch while compacting.
const COMPACTION_CHUNK: usize = 1024;

/// How often the writer looks for room again while the disk is full.
const FULL_RETRY: Duration = Duration::from_secs(1);

/// How long a reopening waits for watch replays to finish their read of the old database.
const REPLAY_WAIT: Duration = Duration::from_secs(2);

/// `now + interval`, saturating: an interval of "forever" must not overflow.
fn after(interval: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(interval)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

pub(crate) enum Request {
    Txn {
        ops: Vec<Op>,
        reply: oneshot::Sender<Result<TxnResult, StoreError>>,
    },
    Compact {
        reply: oneshot::Sender<Result<Revision, StoreError>>,
    },
    Shutdown,
}

type TxnReply = oneshot::Sender<Result<TxnResult, StoreError>>;

pub(crate) struct Writer {
    shared: Arc<Shared>,
    requests: Receiver<Request>,
    /// The committed key space; the writer's own copy of the published snapshot.
    state: OrdMap<String, KeyValue>,
    revision: Revision,
    compacted: Revision,
    /// Log entries at or below this revision still have to be deleted.
    delete_through: Option<Revision>,
    next_periodic_compaction: Instant,
    /// Set after sled failed a write on a full disk: when to look for room and reopen it.
    full: Option<Instant>,
    /// The last group was refused by the free-space check (for logging the change once).
    low_space: bool,
    /// Held across a reopening of the database, so no other process can take the directory.
    lock: Arc<DirLock>,
}

/// A sled write failed: the on-disk state is unknown, so the writer stops.
struct Stop(StoreError);

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        requests: Receiver<Request>,
        state: OrdMap<String, KeyValue>,
        revision: Revision,
        compacted: Revision,
        lock: Arc<DirLock>,
    ) -> Writer {
        let next_periodic_compaction = after(shared.config.compaction_interval);
        Writer {
            shared,
            requests,
            state,
            revision,
            compacted,
            // A crash in the middle of a compaction leaves entries below the horizon.
            delete_through: (compacted > 0).then_some(compacted),
            next_periodic_compaction,
            full: None,
            low_space: false,
            lock,
        }
    }

    pub(crate) fn run(mut self) -> Result<(), StoreError> {
        match self.serve() {
            Ok(()) => {
                // Shutdown: answer what is already queued, then leave everything on disk.
                let mut queued = Vec::new();
                while let Ok(request) = self.requests.try_recv() {
                    queued.push(request);
                }
                if let Err(Stop(e)) = self.handle_group(queued) {
                    if !e.is_storage_full() {
                        return Err(e);
                    }
                }
                if self.full.is_some() {
                    // Everything acknowledged is on disk already; the rest was refused.
                    return Ok(());
                }
                self.flush().map_err(|Stop(e)| e)
            }
            Err(Stop(e)) => {
                // Callers still queued get the failure instead of a silent Closed.
                while let Ok(request) = self.requests.try_recv() {
                    self.refuse(request);
                }
                Err(e)
            }
        }
    }

    fn serve(&mut self) -> Result<(), Stop> {
        loop {
            let first = if self.delete_through.is_some() && self.full.is_none() {
                // Compaction work pending: only pick up what is already waiting.
                match self.requests.try_recv() {
                    Ok(request) => Some(request),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return Ok(()),
                }
            } else {
                let wake = match self.full {
                    Some(retry) => retry.min(self.next_periodic_compaction),
                    None => self.next_periodic_compaction,
                };
                let wait = wake.saturating_duration_since(Instant::now());
                match self.requests.recv_timeout(wait) {
                    Ok(request) => Some(request),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                }
            };
            match first {
                Some(first) => {
                    let mut group = vec![first];
                    while group.len() < self.shared.config.max_group.max(1) {
                        match self.requests.try_recv() {
                            Ok(request) => group.push(request),
                            Err(_) => break,
                        }
                    }
                    let shutdown = group.iter().any(|r| matches!(r, Request::Shutdown));
                    let handled = self.handle_group(group);
                    survive(handled)?;
                    if shutdown {
                        return Ok(());
                    }
                }
                // Idle while the disk is full: look for room, so that the store reports
                // itself writable again without waiting for the next write.
                None if self.full.is_some() => {
                    self.resume()?;
                }
                None if self.delete_through.is_some() => {
                    let deleted = self.delete_log_chunk();
                    survive(deleted)?;
                }
                None => {
                    self.next_periodic_compaction = after(self.shared.config.compaction_interval);
                    if self.revision - self.compacted > self.shared.config.history {
                        let compacted = self.compact();
                        survive(compacted)?;
                    }
                }
            }
        }
    }

    fn handle_group(&mut self, group: Vec<Request>) -> Result<(), Stop> {
        let mut txns = Vec::new();
        let mut compactions = Vec::new();
        for request in group {
            match request {
                Request::Txn { ops, reply } => txns.push((ops, reply)),
                Request::Compact { reply } => compactions.push(reply),
                Request::Shutdown => {}
            }
        }
        if !txns.is_empty() {
            self.commit(txns)?;
        }
        for reply in compactions {
            if self.full.is_some() && !self.resume()? {
                let _ = reply.send(Err(self.shared.full_error()));
                continue;
            }
            let result = self.compact();
            let _ = reply.send(match &result {
                Ok(()) => Ok(self.compacted),
                Err(Stop(e)) => Err(copy_error(e)),
            });
            result?;
        }
        // Keep the log near `history`: compact once it has grown 10% past it.
        let history = self.shared.config.history;
        if self.full.is_none() && self.revision - self.compacted > history + history / 10 {
            self.compact()?;
        }
        Ok(())
    }

    fn commit(&mut self, txns: Vec<(Vec<Op>, TxnReply)>) -> Result<(), Stop> {
        if self.full.is_some() && !self.resume()? {
            let error = self.shared.full_error();
            for (_, reply) in txns {
                let _ = reply.send(Err(copy_error(&error)));
            }
            return Ok(());
        }
        let mut working = self.state.clone();
        let mut revision = self.revision;
        let mut batch = sled::Batch::default();
        let mut events = Vec::new();
        let mut answers = Vec::with_capacity(txns.len());
        let mut rejected = 0u64;
        // What the group adds to sled's log: each record, and the change log entry.
        let mut batch_bytes = 0u64;

        for (ops, reply) in txns {
            match apply(&working, revision + 1, ops) {
                Ok(applied) if applied.events.is_empty() => {
                    answers.push((
                        reply,
                        Ok(TxnResult {
                            revision,
                            prev: applied.prev,
                        }),
                    ));
                }
                Ok(applied) => {
                    revision += 1;
                    // sled's batch keeps the last write per key, so a key touched twice in
                    // one group ends with its final value.
                    for event in &applied.events {
                        batch_bytes += 2 * (event.kv.key.len() + event.kv.value.len()) as u64;
                        let key = codec::record_key(&event.kv.key);
                        match event.kind {
                            EventKind::Put => batch.insert(key, codec::encode_record(&event.kv)),
                            EventKind::Delete => batch.remove(key),
                        }
                    }
                    batch.insert(
                        &codec::log_key(revision)[..],
                        codec::encode_log_entry(&applied.events),
                    );
                    working = applied.map;
                    events.extend(applied.events);
                    answers.push((
                        reply,
                        Ok(TxnResult {
                            revision,
                            prev: applied.prev,
                        }),
                    ));
                }
                Err(e) => {
                    rejected += 1;
                    answers.push((reply, Err(e)));
                }
            }
        }

        let committed = revision - self.revision;
        if committed > 0 {
            if let Err(error) = self.room_for(batch_bytes) {
                for (reply, _) in answers {
                    let _ = reply.send(Err(copy_error(&error)));
                }
                return Ok(());
            }
            batch.insert(META_REVISION, &codec::encode_u64(revision)[..]);
            let written = self
                .engine()
                .and_then(|engine| engine.db.apply_batch(batch).map_err(|e| self.fail(e)))
                .and_then(|()| self.flush());
            if let Err(Stop(e)) = written {
                // Every answer in this group, even a refusal, was computed against state
                // that is now unknown.
                for (reply, _) in answers {
                    let _ = reply.send(Err(copy_error(&e)));
                }
                return Err(Stop(e));
            }
            self.state = working.clone();
            self.revision = revision;
            self.shared.feed.publish(
                Snapshot {
                    revision,
                    map: working,
                },
                CommitBatch { revision, events },
            );
        }
        let counters = &self.shared.counters;
        counters.txns.fetch_add(committed, Ordering::Relaxed);
        counters.rejected.fetch_add(rejected, Ordering::Relaxed);
        for (reply, answer) in answers {
            // A caller that gave up waiting is not an error.
            let _ = reply.send(answer);
        }
        Ok(())
    }

    /// Raises the compaction horizon to `revision - history`. The horizon is made durable
    /// before any entry is deleted, so after a crash the log never has an unrecorded hole;
    /// the entries below it are then deleted chunk by chunk between groups.
    fn compact(&mut self) -> Result<(), Stop> {
        let target = self.revision.saturating_sub(self.shared.config.history);
        if target <= self.compacted {
            return Ok(());
        }
        self.engine()?
            .db
            .insert(META_COMPACTED, &codec::encode_u64(target)[..])
            .map_err(|e| self.fail(e))?;
        self.flush()?;
        self.compacted = target;
        self.shared.compacted.store(target, Ordering::SeqCst);
        self.shared.counters.compactions.fetch_add(1, Ordering::Relaxed);
        self.delete_through = Some(target);
        tracing::debug!(compacted = target, "compacted the change log");
        Ok(())
    }

    /// Not flushed: entries below the durable horizon are invisible to readers already, and
    /// the next group's fsync (or the next compaction after a crash) takes care of them.
    fn delete_log_chunk(&mut self) -> Result<(), Stop> {
        let Some(through) = self.delete_through else {
            return Ok(());
        };
        let engine = self.engine()?;
        let db = &engine.db;
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for key in db
            .range(codec::log_key(0)..=codec::log_key(through))
            .keys()
            .take(COMPACTION_CHUNK)
        {
            batch.remove(key.map_err(|e| self.fail(e))?);
            count += 1;
        }
        if count < COMPACTION_CHUNK {
            self.delete_through = None;
        }
        if count > 0 {
            db.apply_batch(batch).map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Stop> {
        let flushed = self.engine()?.db.flush();
        flushed.map_err(|e| self.fail(e))?;
        self.shared.counters.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The open database; refused (storage full) while a reopening has not succeeded yet.
    fn engine(&self) -> Result<Arc<Engine>, Stop> {
        self.shared.engine().map_err(Stop)
    }

    /// Records why a write failed. A full disk refuses writes until there is room again
    /// (the answer is [`StoreError::StorageFull`], which [`survive`] lets pass); anything
    /// else stops writes for good, for every later caller.
    fn fail(&mut self, e: sled::Error) -> Stop {
        let error = StoreError::from_sled(&self.shared.db_path, e);
        if let StoreError::Io { source, .. } = &error {
            if StoreError::is_no_space(source) {
                if self.full.is_none() {
                    tracing::error!(
                        data_dir = %self.shared.config.path.display(),
                        error = %source.kind(),
                        "storage full: refusing writes until the filesystem has room again; \
                         reads and watches go on"
                    );
                }
                *self.shared.full.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(source.kind().to_string());
                self.full = Some(Instant::now() + FULL_RETRY);
                return Stop(self.shared.full_error());
            }
        }
        self.stop(error)
    }

    /// Whether the data directory's filesystem keeps `min_free_bytes` free after `bytes`
    /// more; if not, the [`StoreError::StorageFull`] to answer. A filesystem that cannot
    /// be asked (statvfs failing) is left to sled to find out.
    fn room_for(&mut self, bytes: u64) -> Result<(), StoreError> {
        let reserve = self.shared.config.min_free_bytes;
        if reserve == 0 {
            return Ok(());
        }
        let free = match free_bytes(&self.shared.config.path) {
            Ok(free) => free,
            Err(_) => return Ok(()),
        };
        if free >= reserve.saturating_add(bytes) {
            if std::mem::take(&mut self.low_space) {
                *self.shared.full.lock().unwrap_or_else(PoisonError::into_inner) = None;
                tracing::info!(
                    data_dir = %self.shared.config.path.display(),
                    free,
                    "storage has room again; writes resumed"
                );
            }
            return Ok(());
        }
        let why = format!(
            "{free} bytes free, and the store keeps at least {reserve} free so that its database \
             never runs out mid-write"
        );
        if !std::mem::replace(&mut self.low_space, true) {
            tracing::error!(
                data_dir = %self.shared.config.path.display(),
                free,
                reserve,
                "storage full: refusing writes until the filesystem has room again; reads and \
                 watches go on"
            );
        }
        *self.shared.full.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
        Err(self.shared.full_error())
    }

    /// While sled's database is unusable after a full disk: at most once per
    /// [`FULL_RETRY`], and only when the filesystem has room, reopens it. True once
    /// writes may go on.
    fn resume(&mut self) -> Result<bool, Stop> {
        let Some(retry) = self.full else {
            return Ok(true);
        };
        let now = Instant::now();
        if now < retry {
            return Ok(false);
        }
        self.full = Some(now + FULL_RETRY);
        if self.room_for(0).is_err() {
            return Ok(false);
        }
        match self.reopen() {
            Ok(true) => {
                self.full = None;
                *self.shared.full.lock().unwrap_or_else(PoisonError::into_inner) = None;
                tracing::info!(
                    data_dir = %self.shared.config.path.display(),
                    revision = self.revision,
                    "storage has room again; writes resumed"
                );
                Ok(true)
            }
            Ok(false) => Ok(false),
            // Still no room, or sled's files still held: try again later.
            Err(StoreError::Io { source, .. }) => {
                tracing::warn!(
                    data_dir = %self.shared.config.path.display(),
                    error = %source,
                    "reopening the store after the disk was full failed; retrying"
                );
                let why = if StoreError::is_no_space(&source) {
                    source.kind().to_string()
                } else {
                    format!(
                        "reopening the database after the disk was full failed: {source}; if this \
                         lasts, restart rkube-apiserver"
                    )
                };
                *self.shared.full.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
                Ok(false)
            }
            Err(e) => Err(self.stop(e)),
        }
    }

    /// Closes the database sled has given up on and opens it again under the same lock,
    /// then makes the writer's state what is on disk. False when a watch replay still held
    /// the old database; the next attempt tries again.
    fn reopen(&mut self) -> Result<bool, StoreError> {
        let mut slot = self.shared.engine_slot();
        if let Some(old) = slot.as_ref() {
            // Replays take their handle under the slot's read lock, so none can start now;
            // the ones under way finish one chunk.
            let deadline = Instant::now() + REPLAY_WAIT;
            while Arc::strong_count(old) > 1 {
                if Instant::now() > deadline {
                    return Ok(false);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // sled's files close with the old database, and its lock on them with them. Its
        // close flushes, which after a failed write may wait forever: never on this thread.
        // Until it is done, opening finds the files locked and the next attempt retries.
        if let Some(old) = slot.take() {
            let closing = std::thread::Builder::new()
                .name("rkube-store-close".to_string())
                .spawn(move || drop(old));
            if let Err(e) = closing {
                return Err(StoreError::io(&self.shared.db_path)(e));
            }
        }
        let db_path = self.shared.db_path.clone();
        let db = crate::sled_store::open_sled(&db_path, &self.shared.config)?;
        let engine = Arc::new(Engine::new(db, db_path.clone(), self.lock.clone()));
        crate::sled_store::check_database_format(&engine, true)?;
        let loaded = crate::sled_store::load(&engine)?;
        if loaded.revision < self.revision {
            return Err(StoreError::corrupt(
                &db_path,
                format!(
                    "after the disk was full the database reopened at revision {} but revision {} \
                     had been acknowledged",
                    loaded.revision, self.revision
                ),
            ));
        }
        if loaded.revision > self.revision {
            // The group refused when the disk filled reached it after all: publish it, as
            // what is stored must be what readers and watchers see.
            let mut events = Vec::new();
            let mut from = self.revision;
            while from < loaded.revision {
                let chunk = crate::watch::read_log(&engine, from, loaded.revision)?;
                let Some(&(last, _)) = chunk.last() else {
                    break;
                };
                events.extend(chunk.into_iter().flat_map(|(_, events)| events));
                from = last;
            }
            tracing::warn!(
                from = self.revision,
                to = loaded.revision,
                "writes refused when the disk filled were stored after all; publishing them"
            );
            self.shared
                .counters
                .txns
                .fetch_add(loaded.revision - self.revision, Ordering::Relaxed);
            self.shared.feed.publish(
                Snapshot {
                    revision: loaded.revision,
                    map: loaded.map.clone(),
                },
                CommitBatch {
                    revision: loaded.revision,
                    events,
                },
            );
            self.state = loaded.map;
            self.revision = loaded.revision;
        }
        if loaded.compacted > self.compacted {
            self.compacted = loaded.compacted;
            self.shared.compacted.store(loaded.compacted, Ordering::SeqCst);
        }
        // Deleting below the horizon is idempotent; it finishes what a refused pass began.
        if self.compacted > 0 {
            self.delete_through = Some(self.compacted);
        }
        *slot = Some(engine);
        Ok(true)
    }

    fn stop(&self, error: StoreError) -> Stop {
        tracing::error!(error = %error, "store write failed; refusing further writes");
        let failure = WriteFailure {
            path: self.shared.db_path.clone(),
            kind: match &error {
                StoreError::Io { source, .. } => source.kind(),
                _ => std::io::ErrorKind::Other,
            },
            message: error.to_string(),
        };
        *self.shared.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(failure.clone());
        Stop(failure.to_error())
    }

    fn refuse(&self, request: Request) {
        let error = || match &*self.shared.failure.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(failure) => failure.to_error(),
            None => StoreError::Closed,
        };
        match request {
            Request::Txn { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            Request::Compact { reply } => {
                let _ = reply.send(Err(error()));
            }
            Request::Shutdown => {}
        }
    }
}

/// A full disk is no reason to stop the writer: it keeps refusing writes until there is
/// room, then resumes.
fn survive(result: Result<(), Stop>) -> Result<(), Stop> {
    match result {
        Err(Stop(e)) if e.is_storage_full() => Ok(()),
        other => other,
    }
}

/// Space the process may still write to on the filesystem holding `dir`: root may use the
/// blocks reserved for it, other users only the available ones.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if root {
        fs4::free_space(dir)
    } else {
        fs4::available_space(dir)
    }
}

/// The errors a failed write hands to several callers; `io::Error` is not `Clone`.
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::StorageFull { what, remedy } => StoreError::StorageFull {
            what: what.clone(),
            remedy: remedy.clone(),
        },
        StoreError::Io { path, source } => StoreError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        StoreError::Corrupt { path, detail } => StoreError::Corrupt {
            path: path.clone(),
            detail: detail.clone(),
        },
        _ => StoreError::Closed,
    }
}

pub(crate) struct Applied {
    pub(crate) map: OrdMap<String, KeyValue>,
    pub(crate) events: Vec<Event>,
    pub(crate) prev: Vec<Option<KeyValue>>,
}

/// Applies one transaction's ops in order to a copy of `state`, all or nothing. Ops see the
/// effects of earlier ops in the same transaction.
pub(crate) fn apply(
    state: &OrdMap<String, KeyValue>,
    revision: Revision,
    ops: Vec<Op>,
) -> Result<Applied, StoreError> {
    let mut map = state.clone();
    let mut events = Vec::with_capacity(ops.len());
    let mut prevs = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::Create { key, value } => {
                if map.contains_key(&key) {
                    return Err(StoreError::AlreadyExists { key });
                }
                let kv = KeyValue {
                    key: key.clone(),
                    value,
                    create_revision: revision,
                    mod_revision: revision,
                };
                map.insert(key, kv.clone());
                events.push(Event {
                    kind: EventKind::Put,
                    kv,
                    prev: None,
                });
                prevs.push(None);
            }
            Op::Put { key, value, expected } => {
                let prev = map.get(&key).cloned();
                if let Some(expected) = expected {
                    match &prev {
                        None => return Err(StoreError::NotFound { key }),
                        Some(p) if p.mod_revision != expected => {
                            return Err(StoreError::Conflict {
                                key,
                                expected,
                                actual: p.mod_revision,
                            })
                        }
                        Some(_) => {}
                    }
                }
                let kv = KeyValue {
                    key: key.clone(),
                    value,
                    create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                    mod_revision: revision,
                };
                map.insert(key, kv.clone());
                events.push(Event {
                    kind: EventKind::Put,
                    kv,
                    prev: prev.clone(),
                });
                prevs.push(prev);
            }
            Op::Delete { key, expected } => {
                let Some(prev) = map.remove(&key) else {
                    return Err(StoreError::NotFound { key });
                };
                if let Some(expected) = expected {
                    if prev.mod_revision != expected {
                        return Err(StoreError::Conflict {
                            key,
                            expected,
                            actual: prev.mod_revision,
                        });
                    }
                }
                events.push(Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        mod_revision: revision,
                        ..prev.clone()
                    },
                    prev: Some(prev.clone()),
                });
                prevs.push(Some(prev));
            }
        }
    }
    Ok(Applied {
        map,
        events,
        prev: prevs,
    })
}
