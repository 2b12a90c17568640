//! rkube's object store: a bytes-level, etcd-like key-value store that only the apiserver
//! opens. It owns revisions (one global counter, one new revision per transaction), atomic
//! compare-and-swap transactions that are acknowledged only once durable, consistent and
//! paginated list snapshots, a change log that watches replay and then follow live, and
//! the compaction of that log. It must not know anything about Kubernetes: keys are opaque
//! strings, values opaque bytes; validation, encoding and selectors belong to the
//! apiserver. Two backends: [`SledStore`] (embedded, one machine, the default) and
//! [`EtcdStore`] (an etcd cluster, for several apiservers; reads and watches served from a
//! cache fed by an etcd watch). Nothing outside this crate may assume either: callers use
//! the object-safe [`Store`] trait.

mod codec;
mod config;
mod dir;
mod error;
mod etcd_store;
mod shared;
mod sled_store;
#[cfg(test)]
mod tests;
mod watch;
mod writer;

use bytes::Bytes;
use futures::future::BoxFuture;

pub use config::StoreConfig;
pub use error::StoreError;
pub use etcd_store::{EtcdConfig, EtcdStats, EtcdStore, EtcdTls};
pub use sled_store::{SledStore, StoreStats};
pub use watch::WatchStream;

/// A point in the store's history. Every committed transaction gets the next one; it is
/// what Kubernetes calls resourceVersion. 0 is the empty store.
pub type Revision = u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// The revision that created this key (kept across updates, reset by delete + create).
    pub create_revision: Revision,
    /// The revision of the last write to this key.
    pub mod_revision: Revision,
}

/// One element of an atomic transaction.
#[derive(Clone, Debug)]
pub enum Op {
    /// Fails with AlreadyExists if the key is present.
    Create { key: String, value: Bytes },
    /// `expected: Some(r)` requires the key's current mod_revision to be `r` (Conflict if
    /// it differs, NotFound if the key is absent); `None` creates or replaces unconditionally.
    Put {
        key: String,
        value: Bytes,
        expected: Option<Revision>,
    },
    /// NotFound if absent; Conflict if `expected` is given and differs.
    Delete { key: String, expected: Option<Revision> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// The revision of this transaction (the store's revision if it changed nothing).
    pub revision: Revision,
    /// The value each op found, in op order.
    pub prev: Vec<Option<KeyValue>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For a put, the new value. For a delete, the deleted value with `mod_revision` set to
    /// the delete's revision. Either way `kv.mod_revision` is the event's revision.
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// What a watch yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    Event(Event),
    /// Every change up to this revision has been delivered (or did not match the prefix).
    /// Sent after a quiet `progress_interval` so idle watchers can bookmark.
    Progress(Revision),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The snapshot's revision: pass it back as `at_revision` to continue this list, or
    /// watch from it.
    pub revision: Revision,
    pub more: bool,
    /// Matching keys after this page.
    pub remaining: u64,
}

/// The future of a write; resolves once the write is durable (or refused).
pub type StoreFuture<T> = BoxFuture<'static, Result<T, StoreError>>;

/// The store as the apiserver sees it. Object-safe so that it can be held as
/// `Arc<dyn Store>`: reads are synchronous because they never wait for I/O (they are served
/// from memory), writes return a boxed future that owns everything it needs.
pub trait Store: Send + Sync {
    /// The current value of `key`, from memory.
    fn get(&self, key: &str) -> Option<KeyValue>;

    /// [`Store::get`] for layers that transform values (encryption at rest): their read can
    /// fail ([`StoreError::Untransformable`]) where the plain backend's cannot.
    fn try_get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.get(key))
    }

    /// Keys starting with `prefix` and sorted after `start_after`, at most `limit` of them
    /// (0 = all), from one consistent snapshot. `at_revision` continues a paginated list on
    /// the snapshot an earlier page returned; if that snapshot is no longer held the answer
    /// is [`StoreError::Expired`] (Gone).
    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at_revision: Option<Revision>,
    ) -> Result<ListResult, StoreError>;

    /// Applies all ops or none, under one new revision, and resolves after fsync. The
    /// transaction is queued when this is called; dropping the future only discards the
    /// answer, it does not cancel the write.
    fn txn(&self, ops: Vec<Op>) -> StoreFuture<TxnResult>;

    /// Every change under `prefix` with a revision greater than `after`, in revision order,
    /// then live changes, with progress items while idle. [`StoreError::Compacted`] if
    /// `after` is older than the log holds. The stream must be polled inside a tokio
    /// runtime (it reads the log on the blocking pool and uses tokio timers).
    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    /// The latest committed (durable) revision.
    fn revision(&self) -> Revision;

    /// Waits until reads reflect every write committed before the call, by this process or
    /// any other sharing the backend, and resolves with the revision reads are then served
    /// at: a consistent read is `sync` then `get`/`list`. The sled backend, the only writer
    /// of its data, is always in sync; the etcd backend asks etcd for its revision and waits
    /// until its cache has caught up (as Kubernetes' consistent reads from the watch cache).
    fn sync(&self) -> StoreFuture<Revision> {
        let revision = self.revision();
        Box::pin(async move { Ok(revision) })
    }

    /// Creates `key`; returns what was stored.
    fn create(&self, key: &str, value: Bytes) -> StoreFuture<KeyValue> {
        let key = key.to_string();
        let txn = self.txn(vec![Op::Create {
            key: key.clone(),
            value: value.clone(),
        }]);
        Box::pin(async move {
            let result = txn.await?;
            Ok(KeyValue {
                key,
                value,
                create_revision: result.revision,
                mod_revision: result.revision,
            })
        })
    }

    /// Writes `key` (see [`Op::Put`]); returns what was stored.
    fn put(&self, key: &str, value: Bytes, expected: Option<Revision>) -> StoreFuture<KeyValue> {
        let key = key.to_string();
        let txn = self.txn(vec![Op::Put {
            key: key.clone(),
            value: value.clone(),
            expected,
        }]);
        Box::pin(async move {
            let result = txn.await?;
            let create_revision = match result.prev.into_iter().next().flatten() {
                Some(prev) => prev.create_revision,
                None => result.revision,
            };
            Ok(KeyValue {
                key,
                value,
                create_revision,
                mod_revision: result.revision,
            })
        })
    }

    /// Deletes `key` (see [`Op::Delete`]); returns the delete's revision and the value that
    /// was deleted.
    fn delete(&self, key: &str, expected: Option<Revision>) -> StoreFuture<(Revision, KeyValue)> {
        let key = key.to_string();
        let txn = self.txn(vec![Op::Delete {
            key: key.clone(),
            expected,
        }]);
        Box::pin(async move {
            let result = txn.await?;
            match result.prev.into_iter().next().flatten() {
                Some(prev) => Ok((result.revision, prev)),
                // A successful delete always found a value; keep the promise explicit.
                None => Err(StoreError::NotFound { key }),
            }
        })
    }
}
