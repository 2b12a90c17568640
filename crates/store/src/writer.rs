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

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use im::OrdMap;
use tokio::sync::oneshot;

use crate::codec::{self, META_COMPACTED, META_REVISION};
use crate::shared::{CommitBatch, Shared, Snapshot, WriteFailure};
use crate::{Event, EventKind, KeyValue, Op, Revision, StoreError, TxnResult};

/// Log entries deleted per sled batch while compacting.
const COMPACTION_CHUNK: usize = 1024;

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
                    return Err(e);
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
            let first = if self.delete_through.is_some() {
                // Compaction work pending: only pick up what is already waiting.
                match self.requests.try_recv() {
                    Ok(request) => Some(request),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return Ok(()),
                }
            } else {
                let wait = self
                    .next_periodic_compaction
                    .saturating_duration_since(Instant::now());
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
                    self.handle_group(group)?;
                    if shutdown {
                        return Ok(());
                    }
                }
                None if self.delete_through.is_some() => self.delete_log_chunk()?,
                None => {
                    self.next_periodic_compaction = after(self.shared.config.compaction_interval);
                    if self.revision - self.compacted > self.shared.config.history {
                        self.compact()?;
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
            let result = self.compact();
            let _ = reply.send(match &result {
                Ok(()) => Ok(self.compacted),
                Err(Stop(e)) => Err(copy_error(e)),
            });
            result?;
        }
        // Keep the log near `history`: compact once it has grown 10% past it.
        let history = self.shared.config.history;
        if self.revision - self.compacted > history + history / 10 {
            self.compact()?;
        }
        Ok(())
    }

    fn commit(&mut self, txns: Vec<(Vec<Op>, TxnReply)>) -> Result<(), Stop> {
        let mut working = self.state.clone();
        let mut revision = self.revision;
        let mut batch = sled::Batch::default();
        let mut events = Vec::new();
        let mut answers = Vec::with_capacity(txns.len());
        let mut rejected = 0u64;

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
            batch.insert(META_REVISION, &codec::encode_u64(revision)[..]);
            let written = self
                .shared
                .engine
                .db
                .apply_batch(batch)
                .map_err(|e| self.fail(e))
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
        self.shared
            .engine
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
        let db = &self.shared.engine.db;
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

    fn flush(&self) -> Result<(), Stop> {
        self.shared.engine.db.flush().map_err(|e| self.fail(e))?;
        self.shared.counters.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Records why writes stopped, for every later caller.
    fn fail(&self, e: sled::Error) -> Stop {
        let error = StoreError::from_sled(&self.shared.engine.db_path, e);
        tracing::error!(error = %error, "store write failed; refusing further writes");
        let failure = WriteFailure {
            path: self.shared.engine.db_path.clone(),
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

/// The errors a failed write hands to several callers; `io::Error` is not `Clone`.
fn copy_error(e: &StoreError) -> StoreError {
    match e {
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
