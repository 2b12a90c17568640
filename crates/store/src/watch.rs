//! Watches: replay the change log from the requested revision, then follow the broadcast
//! of committed batches. The log is sled's persisted one, or the etcd backend's in-memory
//! event log (see [`ChangeLog`]).
//!
//! The receiver subscribes *before* reading the current revision R, and replay stops at R.
//! Anything committed after R is published after the subscription and therefore arrives
//! through the broadcast; anything at or below R is durable and in the log. Events are
//! deduplicated by revision, so the overlap is harmless. A watcher that lags behind the
//! broadcast does the same again from its last revision, so slowness costs a log read,
//! never an event.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use crate::codec;
use crate::shared::{CommitBatch, Engine, Shared};
use crate::{Event, Revision, StoreError, WatchItem};

/// Log entries read per blocking read during replay; bounds a watcher's memory while it
/// catches up.
pub(crate) const REPLAY_CHUNK: usize = 256;
const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(10);

/// `now + interval`, saturating: an interval of "forever" must not overflow.
fn deadline_after(interval: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(interval)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// A stream of [`WatchItem`]s. It ends after yielding an error. Dropping it releases
/// everything it holds.
pub struct WatchStream {
    inner: Pin<Box<dyn Stream<Item = Result<WatchItem, StoreError>> + Send>>,
}

impl WatchStream {
    /// Wraps another backend's stream.
    pub fn new(stream: impl Stream<Item = Result<WatchItem, StoreError>> + Send + 'static) -> Self {
        WatchStream {
            inner: Box::pin(stream),
        }
    }

    /// The next item, or None once the stream has ended.
    pub async fn next(&mut self) -> Option<Result<WatchItem, StoreError>> {
        futures::StreamExt::next(&mut self.inner).await
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchItem, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream").finish_non_exhaustive()
    }
}

/// What reading a chunk of a [`ChangeLog`] gives: (revision, its events) in order.
pub(crate) type LogRead = BoxFuture<'static, Result<Vec<(Revision, Vec<Event>)>, StoreError>>;

/// Where a [`Watcher`] replays history from and follows live changes: the sled backend's
/// persisted log, or the etcd backend's in-memory event log.
pub(crate) trait ChangeLog: Send + Sync + 'static {
    /// The live broadcast; `None` once the store is closed.
    fn subscribe(&self) -> Option<broadcast::Receiver<Arc<CommitBatch>>>;
    /// The revision of the snapshot readers see now.
    fn current_revision(&self) -> Revision;
    /// Watches from a revision below this one are refused (the history is gone).
    fn compacted(&self) -> Revision;
    fn progress_interval(&self) -> Duration;
    /// Up to REPLAY_CHUNK entries with revisions in (from, until], in order, each with its
    /// events; [`StoreError::Compacted`] if the log no longer holds everything after `from`.
    fn read(self: Arc<Self>, from: Revision, until: Revision) -> LogRead;
}

impl ChangeLog for Shared {
    fn subscribe(&self) -> Option<broadcast::Receiver<Arc<CommitBatch>>> {
        self.feed.subscribe()
    }

    fn current_revision(&self) -> Revision {
        self.feed.current().revision
    }

    fn compacted(&self) -> Revision {
        self.compacted.load(Ordering::SeqCst)
    }

    fn progress_interval(&self) -> Duration {
        self.config.progress_interval
    }

    fn read(self: Arc<Self>, from: Revision, until: Revision) -> LogRead {
        Box::pin(async move {
            let shared = self.clone();
            // The handle is taken on the blocking pool: while the writer reopens the
            // database after a full disk, taking it waits.
            let entries = tokio::task::spawn_blocking(move || read_log(&*shared.engine()?, from, until))
                .await
                .map_err(|_| StoreError::Closed)??;
            // The writer raises the horizon before deleting, so if it is still at or below
            // `from` now, nothing this read needed had been deleted.
            let compacted = self.compacted.load(Ordering::SeqCst);
            if compacted > from {
                return Err(StoreError::Compacted {
                    requested: from,
                    compacted,
                });
            }
            Ok(entries)
        })
    }
}

pub(crate) fn start<L: ChangeLog>(
    log: &Arc<L>,
    prefix: &str,
    after: Revision,
) -> Result<WatchStream, StoreError> {
    let watcher = Watcher::new(log, prefix, after)?;
    Ok(WatchStream::new(futures::stream::unfold(
        watcher,
        |mut watcher| async move {
            let item = watcher.next_item().await?;
            Some((item, watcher))
        },
    )))
}

pub(crate) struct Watcher<L: ChangeLog> {
    /// Weak, so a forgotten watch does not keep the database open after the store closes.
    log: Weak<L>,
    prefix: String,
    /// Every change at or below this revision has been delivered or filtered out.
    last: Revision,
    receiver: broadcast::Receiver<Arc<CommitBatch>>,
    /// Replaying the log up to this revision before following the broadcast.
    replay_until: Option<Revision>,
    pending: VecDeque<Event>,
    progress_interval: Duration,
    /// When the next progress item is due if nothing else is yielded.
    quiet_until: Instant,
    done: bool,
}

impl<L: ChangeLog> Watcher<L> {
    pub(crate) fn new(log: &Arc<L>, prefix: &str, after: Revision) -> Result<Self, StoreError> {
        let receiver = log.subscribe().ok_or(StoreError::Closed)?;
        let compacted = log.compacted();
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let until = log.current_revision();
        // A zero interval would yield progress items in a hot loop.
        let progress_interval = log.progress_interval().max(MIN_PROGRESS_INTERVAL);
        Ok(Watcher {
            log: Arc::downgrade(log),
            prefix: prefix.to_string(),
            last: after,
            receiver,
            replay_until: (until > after).then_some(until),
            pending: VecDeque::new(),
            progress_interval,
            quiet_until: deadline_after(progress_interval),
            done: false,
        })
    }

    pub(crate) async fn next_item(&mut self) -> Option<Result<WatchItem, StoreError>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.quiet_until = deadline_after(self.progress_interval);
                return Some(Ok(WatchItem::Event(event)));
            }
            let step = match self.replay_until {
                Some(until) => self.replay_chunk(until).await,
                None => match self.follow().await {
                    Ok(Some(progress)) => return Some(Ok(progress)),
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = step {
                self.done = true;
                return Some(Err(e));
            }
        }
    }

    /// Reads the next chunk of log entries after `last`, up to `until`.
    async fn replay_chunk(&mut self, until: Revision) -> Result<(), StoreError> {
        let from = self.last;
        let entries = self.upgrade()?.read(from, until).await?;
        let finished = entries.len() < REPLAY_CHUNK;
        for (revision, events) in entries {
            self.pending.extend(
                events
                    .into_iter()
                    .filter(|e| e.revision() > from && e.kv.key.starts_with(&self.prefix)),
            );
            self.last = revision;
        }
        if finished {
            self.last = self.last.max(until);
            self.replay_until = None;
        }
        Ok(())
    }

    /// Waits for the next committed batch or for the progress deadline. Returns a progress
    /// item when one is due; otherwise queues matching events (possibly none).
    async fn follow(&mut self) -> Result<Option<WatchItem>, StoreError> {
        tokio::select! {
            received = self.receiver.recv() => match received {
                Ok(batch) => {
                    if batch.revision > self.last {
                        let last = self.last;
                        self.pending.extend(
                            batch
                                .events
                                .iter()
                                .filter(|e| e.revision() > last && e.kv.key.starts_with(&self.prefix))
                                .cloned(),
                        );
                        self.last = batch.revision;
                    }
                    Ok(None)
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, last = self.last, "watcher lagged; replaying the log");
                    // Same order as at the start: subscribe, then read the revision.
                    self.receiver = self.receiver.resubscribe();
                    let until = self.upgrade()?.current_revision();
                    if until > self.last {
                        self.replay_until = Some(until);
                    }
                    Ok(None)
                }
                // The broadcast ends when the store closes, or when the history it carried
                // was lost (the etcd cache had to list again): then the client must too.
                Err(RecvError::Closed) => match self.upgrade()?.subscribe() {
                    None => Err(StoreError::Closed),
                    Some(_) => Err(StoreError::Compacted {
                        requested: self.last,
                        compacted: self.upgrade()?.compacted(),
                    }),
                },
            },
            () = tokio::time::sleep_until(self.quiet_until) => {
                self.quiet_until = deadline_after(self.progress_interval);
                Ok(Some(WatchItem::Progress(self.last)))
            }
        }
    }

    fn upgrade(&self) -> Result<Arc<L>, StoreError> {
        self.log.upgrade().ok_or(StoreError::Closed)
    }
}

/// Up to REPLAY_CHUNK log entries with revisions in (from, until], decoded.
pub(crate) fn read_log(
    engine: &Engine,
    from: Revision,
    until: Revision,
) -> Result<Vec<(Revision, Vec<Event>)>, StoreError> {
    let path = &engine.db_path;
    let mut entries = Vec::new();
    let start = codec::log_key(from.saturating_add(1));
    for item in engine.db.range(start..=codec::log_key(until)).take(REPLAY_CHUNK) {
        let (key, value) = item.map_err(|e| StoreError::from_sled(path, e))?;
        let revision = codec::log_revision(&key).map_err(|d| StoreError::corrupt(path, d))?;
        let events = codec::decode_log_entry(revision, &value).map_err(|d| StoreError::corrupt(path, d))?;
        entries.push((revision, events));
    }
    Ok(entries)
}
