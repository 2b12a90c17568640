//! The etcd backend: every object lives in an etcd cluster, so several apiservers can
//! serve the same objects and losing one machine loses nothing.
//!
//! Reads never go to etcd. As Kubernetes' cacher does, the store keeps the whole key space
//! under its prefix in memory (the [`Feed`] the sled backend uses too), filled by one
//! paginated range read at a revision R and then kept current by one etcd watch from R + 1.
//! The cache also keeps a bounded in-memory event log: watches from a revision it still
//! holds are served from it (no etcd traffic per watcher); older ones catch up from an
//! etcd watch on the whole prefix and move over to the cache once they reach what it
//! holds. So one etcd watch feeds any number of watchers.
//!
//! Writes are etcd transactions: a create compares `create_revision == 0`, an update or
//! delete compares `mod_revision` with the expected revision; when a compare fails the
//! failure branch reads every key the transaction named, atomically, which tells
//! AlreadyExists, NotFound and Conflict apart. The resourceVersion is etcd's revision. A
//! write (or refusal) is answered only once the cache has seen its revision, so this
//! apiserver's clients always read their own writes, and a Conflict is answered only once
//! a re-read finds the newer value.
//!
//! When etcd cannot be reached (down, partitioned, no quorum) writes fail within the
//! request timeout with [`StoreError::Unavailable`]; reads keep being served from the
//! cache, and its watch reconnects and resumes from its last revision, so nothing is
//! missed. Compaction of etcd's history is done here too, as kube-apiserver does it.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse,
};
use im::OrdMap;
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinHandle;

use crate::shared::{CommitBatch, Feed, Snapshot};
use crate::watch::{ChangeLog, LogRead, Watcher, REPLAY_CHUNK};
use crate::{
    Event, EventKind, KeyValue, ListResult, Op, Revision, Store, StoreError, StoreFuture, TxnResult,
    WatchItem, WatchStream,
};

/// Keys read per request while filling the cache: small enough that one page of large
/// objects stays far below etcd's 1.5 MiB request limit and gRPC's message limit.
const PAGE: i64 = 500;
/// Where the compactor keeps its turn (as kube-apiserver's `compact_rev_key`), under the
/// prefix so that its writes reach the cache's watch like any other revision; hidden from
/// the store's key space (every apiserver key contains a `/`, so none can clash).
const COMPACT_KEY: &str = "compact_rev_key";
/// gRPC messages from etcd: a page of objects or a big watch response.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// TLS towards etcd (PEM contents, as kube-apiserver's `--etcd-cafile`, `--etcd-certfile`,
/// `--etcd-keyfile`).
#[derive(Clone)]
pub struct EtcdTls {
    /// The CA that signed etcd's serving certificates.
    pub ca: Vec<u8>,
    /// This client's certificate and key, when etcd checks client certificates.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print a key
        f.debug_struct("EtcdTls")
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

/// How to reach etcd and how to keep the cache. Build it with [`EtcdConfig::new`].
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// `http://HOST:PORT` or `https://HOST:PORT` of the cluster's members.
    pub endpoints: Vec<String>,
    /// Every key is stored as `PREFIX/KEY` (kube-apiserver's default is `/registry`).
    pub prefix: String,
    pub tls: Option<EtcdTls>,
    /// How long a request to etcd may take before it fails with Unavailable.
    pub request_timeout: Duration,
    /// How often history is compacted (to the revision seen one interval earlier, as
    /// kube-apiserver does); zero: never (someone else compacts).
    pub compaction_interval: Duration,
    /// Revisions of events the cache keeps for watches; older ones are read from etcd.
    pub history: u64,
    /// How long a watch may stay silent before it yields a progress item (a bookmark).
    pub progress_interval: Duration,
    /// Committed batches buffered per watcher before it lags (and replays the log).
    pub watch_buffer: usize,
    /// How many list snapshots to hold for paginated lists (continue tokens).
    pub list_snapshots: usize,
    /// How long an unused list snapshot is held.
    pub list_snapshot_ttl: Duration,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: "/registry".to_string(),
            tls: None,
            request_timeout: Duration::from_secs(5),
            compaction_interval: Duration::from_secs(5 * 60),
            history: 10_000,
            progress_interval: Duration::from_secs(1),
            watch_buffer: 1024,
            list_snapshots: 32,
            list_snapshot_ttl: Duration::from_secs(5 * 60),
        }
    }
}

/// Counters for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EtcdStats {
    /// Transactions committed.
    pub txns: u64,
    /// Transactions refused (NotFound, AlreadyExists, Conflict).
    pub rejected: u64,
    /// Compactions of etcd's history this store made.
    pub compactions: u64,
    /// Times the cache's watch had to reconnect to etcd.
    pub reconnects: u64,
    /// The cache's revision.
    pub revision: Revision,
    /// Watches from below this revision answer Gone.
    pub compacted: Revision,
}

/// The store on etcd. Reads come from the cache; see the module documentation.
pub struct EtcdStore {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

struct Inner {
    client: Client,
    config: EtcdConfig,
    /// The endpoints, comma-separated, for messages.
    endpoints: String,
    /// `PREFIX/`: every etcd key of this store starts with it.
    root: String,
    cache: Arc<Cache>,
    runtime: tokio::runtime::Handle,
    closed: AtomicBool,
    inflight: Inflight,
    txns: AtomicU64,
    rejected: AtomicU64,
    compactions: AtomicU64,
}

impl EtcdStore {
    /// Connects, reads every key under the prefix into the cache and starts the watch that
    /// keeps it current (and the compactor). Fails with [`StoreError::Unavailable`] when
    /// etcd does not answer within the request timeout. Must run inside a tokio runtime;
    /// the store's background work runs on it.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdStore, StoreError> {
        let endpoints = config.endpoints.join(",");
        let invalid = |detail: String| StoreError::Etcd {
            endpoints: endpoints.clone(),
            detail,
        };
        if config.endpoints.is_empty() {
            return Err(invalid("no etcd endpoint is given".into()));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.request_timeout)
            // a partitioned member must not hold the cache's watch forever
            .with_keep_alive(Duration::from_secs(10), config.request_timeout)
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &config.tls {
            let mut tls_options = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca));
            if let Some((cert, key)) = &tls.identity {
                tls_options = tls_options.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls_options);
        }
        let client = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(|e| invalid(format!("cannot use the endpoints: {e}")))?;
        let root = format!("{}/", config.prefix.trim_end_matches('/'));

        let (map, revision) = load(&client, &root, &endpoints, config.request_timeout).await?;
        tracing::info!(
            endpoints = %endpoints,
            prefix = %root,
            revision,
            keys = map.len(),
            "loaded the store from etcd"
        );
        let cache = Arc::new(Cache::new(map, revision, &config));
        let inner = Arc::new(Inner {
            client,
            endpoints,
            root,
            cache,
            runtime: tokio::runtime::Handle::current(),
            closed: AtomicBool::new(false),
            inflight: Inflight::default(),
            txns: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            config,
        });
        let mut tasks = vec![tokio::spawn(reflect(Arc::downgrade(&inner)))];
        if !inner.config.compaction_interval.is_zero() {
            tasks.push(tokio::spawn(compact_periodically(Arc::downgrade(&inner))));
        }
        Ok(EtcdStore {
            inner,
            tasks: Mutex::new(tasks),
        })
    }

    /// Waits (at most twice the request timeout) for the writes already sent, then stops
    /// the cache's watch and the compactor and ends every watch with Closed. Later writes
    /// and watches answer Closed; reads keep serving the last state. Idempotent.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let wait = self.inner.config.request_timeout * 2;
        if tokio::time::timeout(wait, self.inner.inflight.idle())
            .await
            .is_err()
        {
            tracing::warn!("closing the etcd store with writes still unanswered after {wait:?}");
        }
        self.stop();
    }

    fn stop(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
        self.inner.cache.closed.store(true, Ordering::SeqCst);
        self.inner.cache.feed.close_events();
    }

    /// Compacts etcd's history now so that watches from before `revision` answer Gone (as
    /// [`SledStore::compact`](crate::SledStore::compact)'s horizon: a watch from `revision`
    /// itself still works). `revision` must be below the current one. Resolves with it,
    /// also when some apiserver had already compacted further.
    pub fn compact(&self, revision: Revision) -> StoreFuture<Revision> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.compact(revision).await })
    }

    pub fn stats(&self) -> EtcdStats {
        let inner = &self.inner;
        EtcdStats {
            txns: inner.txns.load(Ordering::Relaxed),
            rejected: inner.rejected.load(Ordering::Relaxed),
            compactions: inner.compactions.load(Ordering::Relaxed),
            reconnects: inner.cache.reconnects.load(Ordering::Relaxed),
            revision: inner.cache.revision(),
            compacted: inner.cache.compacted(),
        }
    }

    /// The endpoints, comma-separated.
    pub fn endpoints(&self) -> &str {
        &self.inner.endpoints
    }

    /// Whether the cache's watch is connected to etcd right now.
    pub fn connected(&self) -> bool {
        self.inner.cache.connected.load(Ordering::SeqCst)
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Option<KeyValue> {
        self.inner.cache.feed.get(key)
    }

    fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        at_revision: Option<Revision>,
    ) -> Result<ListResult, StoreError> {
        self.inner
            .cache
            .feed
            .list(prefix, start_after, limit, at_revision)
    }

    fn txn(&self, ops: Vec<Op>) -> StoreFuture<TxnResult> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Box::pin(async { Err(StoreError::Closed) });
        }
        // Sent now, whether or not the caller polls the answer (the trait's promise).
        let inner = self.inner.clone();
        let guard = self.inner.inflight.enter();
        let task = self.inner.runtime.spawn(async move {
            let _guard = guard;
            inner.txn(ops).await
        });
        Box::pin(async move { task.await.unwrap_or(Err(StoreError::Closed)) })
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let cache = &self.inner.cache;
        let etcd_compacted = cache.etcd_compacted.load(Ordering::SeqCst);
        let phase = match Watcher::new(cache, prefix, after) {
            Ok(watcher) => Phase::Cache(watcher),
            // Older than the cache holds: known to be compacted in etcd too, or caught up
            // from etcd's history.
            Err(StoreError::Compacted { .. }) if after < etcd_compacted => {
                return Err(StoreError::Compacted {
                    requested: after,
                    compacted: etcd_compacted,
                })
            }
            Err(StoreError::Compacted { .. }) => Phase::Etcd(CatchUp::new(after)),
            Err(e) => return Err(e),
        };
        let watch = EtcdWatch {
            inner: Arc::downgrade(&self.inner),
            prefix: prefix.to_string(),
            phase,
            done: false,
        };
        Ok(WatchStream::new(futures::stream::unfold(
            watch,
            |mut watch| async move {
                let item = watch.next_item().await?;
                Some((item, watch))
            },
        )))
    }

    fn revision(&self) -> Revision {
        self.inner.cache.revision()
    }

    fn sync(&self) -> StoreFuture<Revision> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.sync().await })
    }
}

impl Inner {
    /// A request to etcd (`attempt` makes it) within the request timeout, its errors in the
    /// store's words; see [`call`].
    async fn call<T, Fut>(&self, attempt: impl FnMut() -> Fut) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        call(&self.endpoints, self.config.request_timeout, attempt).await
    }

    /// A transaction: [`Inner::call`], and when the outcome is unknown (etcd did not
    /// answer after the request left) the error says so.
    async fn kv_txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, StoreError> {
        let answer = self
            .call(|| {
                let (mut kv, txn) = (self.client.kv_client(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await;
        answer.map_err(|e| match e {
            StoreError::Unavailable { endpoints, detail } => StoreError::Unavailable {
                endpoints,
                detail: format!(
                    "{detail}; the write may have been applied all the same: read the object \
                     before writing it again"
                ),
            },
            e => e,
        })
    }

    fn etcd_key(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<TxnResult, StoreError> {
        if ops.is_empty() {
            return Ok(TxnResult {
                revision: self.cache.revision(),
                prev: Vec::new(),
            });
        }
        let mut keys = BTreeSet::new();
        if !ops.iter().all(|op| keys.insert(op_key(op))) {
            return self.txn_touching_a_key_twice(ops).await;
        }
        let mut compares = Vec::new();
        let mut success = Vec::with_capacity(ops.len());
        let mut failure = Vec::with_capacity(ops.len());
        for op in &ops {
            let key = self.etcd_key(op_key(op));
            match op {
                Op::Create { value, .. } => {
                    compares.push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
                    success.push(TxnOp::put(key.clone(), value.to_vec(), None));
                }
                Op::Put { value, expected, .. } => {
                    if let Some(expected) = *expected {
                        compares.push(Compare::mod_revision(
                            key.clone(),
                            CompareOp::Equal,
                            rev(expected),
                        ));
                        if expected == 0 {
                            // an absent key's mod_revision is 0 too
                            compares.push(Compare::create_revision(key.clone(), CompareOp::Greater, 0));
                        }
                    }
                    success.push(TxnOp::put(
                        key.clone(),
                        value.to_vec(),
                        Some(PutOptions::new().with_prev_key()),
                    ));
                }
                Op::Delete { expected, .. } => {
                    compares.push(Compare::create_revision(key.clone(), CompareOp::Greater, 0));
                    if let Some(expected) = *expected {
                        compares.push(Compare::mod_revision(
                            key.clone(),
                            CompareOp::Equal,
                            rev(expected),
                        ));
                    }
                    success.push(TxnOp::delete(
                        key.clone(),
                        Some(DeleteOptions::new().with_prev_key()),
                    ));
                }
            }
            failure.push(TxnOp::get(key, None));
        }
        let txn = Txn::new().when(compares).and_then(success).or_else(failure);
        let response = self.kv_txn(txn).await?;
        let revision = header_revision(response.header());
        let answers = response.op_responses();
        let result = if response.succeeded() {
            let prev = answers
                .into_iter()
                .map(|answer| {
                    let kv = match answer {
                        TxnOpResponse::Put(put) => put.prev_key().cloned(),
                        TxnOpResponse::Delete(delete) => delete.prev_kvs().first().cloned(),
                        _ => None,
                    };
                    kv.and_then(|kv| self.key_value(&kv))
                })
                .collect();
            self.txns.fetch_add(1, Ordering::Relaxed);
            Ok(TxnResult { revision, prev })
        } else {
            let found: Vec<Option<KeyValue>> = answers
                .into_iter()
                .map(|answer| match answer {
                    TxnOpResponse::Get(get) => get.kvs().first().and_then(|kv| self.key_value(kv)),
                    _ => None,
                })
                .collect();
            self.rejected.fetch_add(1, Ordering::Relaxed);
            Err(refusal(&ops, &found).unwrap_or_else(|| StoreError::Etcd {
                endpoints: self.endpoints.clone(),
                detail: "a transaction's compare failed although every key was as expected".into(),
            }))
        };
        // Read-your-writes: answer once a read here sees this revision (for a refusal, the
        // state that refused it).
        self.caught_up(revision).await;
        result
    }

    /// etcd refuses a transaction that writes one key twice; the store promises that later
    /// ops see earlier ones. Such a transaction is applied optimistically: read the keys,
    /// apply the ops to what was read (as the sled writer does), then write the outcome
    /// only if none of the keys changed since the read, else start over.
    async fn txn_touching_a_key_twice(&self, ops: Vec<Op>) -> Result<TxnResult, StoreError> {
        let keys: BTreeSet<String> = ops.iter().map(|op| op_key(op).to_string()).collect();
        loop {
            let reads = keys
                .iter()
                .map(|k| TxnOp::get(self.etcd_key(k), None))
                .collect::<Vec<_>>();
            let read = self.kv_txn(Txn::new().and_then(reads)).await?;
            let mut state = OrdMap::new();
            for answer in read.op_responses() {
                if let TxnOpResponse::Get(get) = answer {
                    for kv in get.kvs().iter().filter_map(|kv| self.key_value(kv)) {
                        state.insert(kv.key.clone(), kv);
                    }
                }
            }
            // The revision the write gets if nothing else is written meanwhile; only what
            // the ops see of their own writes depends on it.
            let next = header_revision(read.header()) + 1;
            let applied = match crate::writer::apply(&state, next, ops.clone()) {
                Ok(applied) => applied,
                Err(refused) => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    self.caught_up(header_revision(read.header())).await;
                    return Err(refused);
                }
            };
            let mut compares = Vec::new();
            let mut writes = Vec::new();
            for key in &keys {
                let seen = state.get(key).map_or(0, |kv| kv.mod_revision);
                compares.push(Compare::mod_revision(
                    self.etcd_key(key),
                    CompareOp::Equal,
                    rev(seen),
                ));
                match applied.map.get(key) {
                    Some(kv) => writes.push(TxnOp::put(self.etcd_key(key), kv.value.to_vec(), None)),
                    None if state.contains_key(key) => writes.push(TxnOp::delete(self.etcd_key(key), None)),
                    None => {}
                }
            }
            let write = self.kv_txn(Txn::new().when(compares).and_then(writes)).await?;
            if write.succeeded() {
                let revision = header_revision(write.header());
                self.txns.fetch_add(1, Ordering::Relaxed);
                self.caught_up(revision).await;
                return Ok(TxnResult {
                    revision,
                    prev: applied.prev,
                });
            }
        }
    }

    /// Waits until the cache has seen `revision`, at most the request timeout: the write is
    /// committed either way, so a cache that is behind (its watch reconnecting) costs
    /// read-your-writes for a moment, not the answer.
    async fn caught_up(&self, revision: Revision) -> bool {
        let reached = self.cache.wait_for(revision, self.config.request_timeout).await;
        if !reached {
            tracing::warn!(
                revision,
                cache = self.cache.revision(),
                "answering a write before this apiserver's cache has seen it: its watch on etcd is behind"
            );
        }
        reached
    }

    async fn sync(&self) -> Result<Revision, StoreError> {
        if !self.cache.connected.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                endpoints: self.endpoints.clone(),
                detail: "is not connected to this apiserver's cache (its watch is reconnecting)".into(),
            });
        }
        // A linearizable read of one key: its header carries etcd's current revision.
        let response = self
            .call(|| {
                let mut kv = self.client.kv_client();
                let key = self.etcd_key(COMPACT_KEY);
                async move { kv.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        let target = header_revision(response.header());
        if self.cache.wait_for(target, self.config.request_timeout).await {
            Ok(self.cache.revision())
        } else {
            Err(StoreError::Unavailable {
                endpoints: self.endpoints.clone(),
                detail: format!(
                    "is at revision {target} but this apiserver's cache reached only {} within {:?} \
                     (if other programs write to this etcd outside the prefix {}, start etcd with \
                     --experimental-watch-progress-notify-interval=1s)",
                    self.cache.revision(),
                    self.config.request_timeout,
                    self.root
                ),
            })
        }
    }

    async fn compact(&self, revision: Revision) -> Result<Revision, StoreError> {
        // etcd keeps the compaction revision itself watchable: compacting at `revision + 1`
        // refuses exactly the watches from before `revision`.
        let reached = match self
            .call(|| {
                let mut kv = self.client.kv_client();
                async move { kv.compact(rev(revision + 1), None).await }
            })
            .await
        {
            Ok(_) => {
                self.compactions.fetch_add(1, Ordering::Relaxed);
                revision
            }
            // Another apiserver compacted as far or further: the goal is reached.
            Err(StoreError::Etcd { detail, .. }) if detail.contains("compacted") => {
                tracing::debug!(revision, "etcd was already compacted past this revision");
                revision
            }
            Err(e) => return Err(e),
        };
        self.cache.raise_horizon(reached);
        Ok(reached)
    }

    /// etcd's key-value pair as the store's, `None` for keys outside the store.
    fn key_value(&self, kv: &etcd_client::KeyValue) -> Option<KeyValue> {
        key_value(&self.root, kv)
    }
}

fn op_key(op: &Op) -> &str {
    match op {
        Op::Create { key, .. } | Op::Put { key, .. } | Op::Delete { key, .. } => key,
    }
}

/// The first op that the keys as found refuse, and why.
fn refusal(ops: &[Op], found: &[Option<KeyValue>]) -> Option<StoreError> {
    for (op, current) in ops.iter().zip(found) {
        match (op, current) {
            (Op::Create { key, .. }, Some(_)) => return Some(StoreError::AlreadyExists { key: key.clone() }),
            (
                Op::Put {
                    key,
                    expected: Some(_),
                    ..
                }
                | Op::Delete { key, .. },
                None,
            ) => return Some(StoreError::NotFound { key: key.clone() }),
            (
                Op::Put {
                    key,
                    expected: Some(expected),
                    ..
                }
                | Op::Delete {
                    key,
                    expected: Some(expected),
                },
                Some(kv),
            ) if kv.mod_revision != *expected => {
                return Some(StoreError::Conflict {
                    key: key.clone(),
                    expected: *expected,
                    actual: kv.mod_revision,
                })
            }
            _ => {}
        }
    }
    None
}

/// The store's horizon for etcd's compaction revision C: etcd still serves watches that
/// start at C, that is watches from after C - 1.
fn watchable_after(compact_revision: i64) -> Revision {
    u64::try_from(compact_revision).unwrap_or(0).saturating_sub(1)
}

fn rev(revision: Revision) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0))
}

fn store_key(root: &str, key: &[u8]) -> Option<String> {
    let key = std::str::from_utf8(key.strip_prefix(root.as_bytes())?).ok()?;
    (key != COMPACT_KEY).then(|| key.to_string())
}

fn key_value(root: &str, kv: &etcd_client::KeyValue) -> Option<KeyValue> {
    Some(KeyValue {
        key: store_key(root, kv.key())?,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: u64::try_from(kv.create_revision()).unwrap_or(0),
        mod_revision: u64::try_from(kv.mod_revision()).unwrap_or(0),
    })
}

/// The end of the key range of everything under `root` (which ends with `/`).
fn range_end(root: &str) -> Vec<u8> {
    let mut end = root.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Pause before sending again a request that never left (see [`call`]).
const RESEND_PAUSE: Duration = Duration::from_millis(20);

/// A request to etcd within `timeout`, its errors in the store's words. `attempt` makes
/// the request; it is made again when it never left this process because the member the
/// client's balancer picked cannot be connected to (killed, its machine down): the
/// balancer spreads requests over every endpoint, dead ones included, so another attempt
/// most likely reaches a live member. This is safe for writes too (nothing reached etcd)
/// and is what etcd's own client does; without it, one member of three down would fail a
/// share of the writes.
async fn call<T, Fut>(
    endpoints: &str,
    timeout: Duration,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, StoreError>
where
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) if never_sent(&e) && tokio::time::Instant::now() + RESEND_PAUSE < deadline => {
                tokio::time::sleep(RESEND_PAUSE).await;
            }
            Ok(Err(e)) => return Err(etcd_error(endpoints, timeout, e)),
            Err(_) => {
                return Err(StoreError::Unavailable {
                    endpoints: endpoints.to_string(),
                    detail: format!("did not answer within {}s", timeout.as_secs_f32()),
                })
            }
        }
    }
}

/// The request failed before it left: no connection to the member could be made.
fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable && {
                let m = status.message();
                m.contains("tcp connect error") || m.contains("Connection refused")
            }
        }
        _ => false,
    }
}

fn etcd_error(endpoints: &str, timeout: Duration, e: etcd_client::Error) -> StoreError {
    use tonic::Code;
    let unavailable = |detail: String| StoreError::Unavailable {
        endpoints: endpoints.to_string(),
        detail,
    };
    match e {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted => {
                unavailable(format!(
                    "did not answer within {}s ({})",
                    timeout.as_secs_f32(),
                    status.message()
                ))
            }
            // etcd's NOSPACE alarm: its backend reached --quota-backend-bytes, and it takes
            // only reads and deletes until an operator frees space and disarms the alarm.
            Code::ResourceExhausted if status.message().contains("database space exceeded") => {
                StoreError::StorageFull {
                    what: format!("etcd at {endpoints} reports {}", status.message()),
                    remedy: "Compact and defragment etcd (etcdctl compact, etcdctl defrag) or raise \
                             its --quota-backend-bytes, then clear the alarm with `etcdctl alarm \
                             disarm`; reads and watches keep working meanwhile"
                        .to_string(),
                }
            }
            _ => StoreError::Etcd {
                endpoints: endpoints.to_string(),
                detail: status.message().to_string(),
            },
        },
        etcd_client::Error::TransportError(e) => unavailable(format!("cannot be reached ({e})")),
        etcd_client::Error::IoError(e) => unavailable(format!("cannot be reached ({e})")),
        other => StoreError::Etcd {
            endpoints: endpoints.to_string(),
            detail: other.to_string(),
        },
    }
}

/// Reads every key under `root` at one revision, page by page.
async fn load(
    client: &Client,
    root: &str,
    endpoints: &str,
    timeout: Duration,
) -> Result<(OrdMap<String, KeyValue>, Revision), StoreError> {
    let mut map = OrdMap::new();
    let mut revision = 0;
    let mut start = root.as_bytes().to_vec();
    loop {
        let mut options = GetOptions::new().with_range(range_end(root)).with_limit(PAGE);
        if revision > 0 {
            options = options.with_revision(rev(revision));
        }
        let page = call(endpoints, timeout, || {
            let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
            let (start, options) = (start.clone(), options.clone());
            async move { kv.get(start, Some(options)).await }
        })
        .await?;
        if revision == 0 {
            revision = header_revision(page.header());
        }
        for kv in page.kvs() {
            if let Some(kv) = key_value(root, kv) {
                map.insert(kv.key.clone(), kv);
            }
        }
        match page.kvs().last() {
            Some(last) if page.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => return Ok((map, revision)),
        }
    }
}

/// Counts the writes sent and not yet answered, so that close can wait for them.
#[derive(Default)]
struct Inflight {
    count: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

struct InflightGuard {
    count: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

impl Inflight {
    fn enter(&self) -> InflightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InflightGuard {
            count: self.count.clone(),
            idle: self.idle.clone(),
        }
    }

    async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// The cache: the key space, the event log watchers replay, and the revision it reached.
struct Cache {
    feed: Feed,
    log: Mutex<EventLog>,
    /// The cache's revision, for writers and consistent reads waiting to see theirs.
    revision: tokio::sync::watch::Sender<Revision>,
    /// Whether the watch feeding the cache is connected to etcd.
    connected: AtomicBool,
    reconnects: AtomicU64,
    /// etcd's history below this is known to be compacted.
    etcd_compacted: AtomicU64,
    closed: AtomicBool,
    history: u64,
    watch_buffer: usize,
    progress_interval: Duration,
}

struct EventLog {
    /// One entry per revision, oldest first.
    entries: VecDeque<(Revision, Vec<Event>)>,
    /// Every change after this revision is in `entries`.
    horizon: Revision,
}

impl Cache {
    fn new(map: OrdMap<String, KeyValue>, revision: Revision, config: &EtcdConfig) -> Cache {
        Cache {
            feed: Feed::new(
                Snapshot { revision, map },
                config.watch_buffer,
                config.list_snapshots,
                config.list_snapshot_ttl,
            ),
            log: Mutex::new(EventLog {
                entries: VecDeque::new(),
                horizon: revision,
            }),
            revision: tokio::sync::watch::Sender::new(revision),
            connected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            etcd_compacted: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            history: config.history.max(1),
            watch_buffer: config.watch_buffer,
            progress_interval: config.progress_interval,
        }
    }

    fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut receiver = self.revision.subscribe();
        let reached = tokio::time::timeout(timeout, receiver.wait_for(|r| *r >= revision)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Applies the changes of one watch response (revision order) and publishes them as
    /// one batch at `revision` (the response's last, or a later revision that changed
    /// nothing under the prefix).
    fn apply(&self, changes: Vec<(EventKind, KeyValue)>, revision: Revision) {
        let current = self.feed.current();
        if revision <= current.revision {
            return;
        }
        let mut map = current.map.clone();
        let mut events = Vec::with_capacity(changes.len());
        for (kind, kv) in changes {
            let prev = match kind {
                EventKind::Put => map.insert(kv.key.clone(), kv.clone()),
                EventKind::Delete => map.remove(&kv.key),
            };
            let event = match kind {
                EventKind::Put => Event { kind, kv, prev },
                EventKind::Delete => match prev {
                    // the deleted value, stamped with the delete's revision
                    Some(prev) => Event {
                        kind,
                        kv: KeyValue {
                            mod_revision: kv.mod_revision,
                            ..prev.clone()
                        },
                        prev: Some(prev),
                    },
                    // deleting what the cache never had: nothing to tell
                    None => continue,
                },
            };
            events.push(event);
        }
        {
            // The log first: a watcher that reads the new revision must find its events.
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            let mut start = 0;
            while start < events.len() {
                let r = events[start].revision();
                let end = start + events[start..].iter().take_while(|e| e.revision() == r).count();
                log.entries.push_back((r, events[start..end].to_vec()));
                start = end;
            }
            while log.entries.len() as u64 > self.history {
                if let Some((r, _)) = log.entries.pop_front() {
                    log.horizon = r;
                }
            }
        }
        self.feed
            .publish(Snapshot { revision, map }, CommitBatch { revision, events });
        self.revision.send_replace(revision);
    }

    /// Watches from before `revision` answer Gone from now on.
    fn raise_horizon(&self, revision: Revision) {
        self.etcd_compacted.fetch_max(revision, Ordering::SeqCst);
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        while log.entries.front().is_some_and(|(r, _)| *r <= revision) {
            log.entries.pop_front();
        }
        log.horizon = log.horizon.max(revision.min(self.revision()));
    }

    /// The history the cache followed was compacted away while its watch was disconnected:
    /// start over from a fresh read, and end every watch following the old history.
    fn reset(&self, map: OrdMap<String, KeyValue>, revision: Revision) {
        {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            log.entries.clear();
            log.horizon = revision;
        }
        self.feed.publish(
            Snapshot { revision, map },
            CommitBatch {
                revision,
                events: Vec::new(),
            },
        );
        self.feed.reset_events(self.watch_buffer);
        self.revision.send_replace(revision);
    }
}

impl ChangeLog for Cache {
    fn subscribe(&self) -> Option<broadcast::Receiver<Arc<CommitBatch>>> {
        self.feed.subscribe()
    }

    fn current_revision(&self) -> Revision {
        self.feed.current().revision
    }

    fn compacted(&self) -> Revision {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).horizon
    }

    fn progress_interval(&self) -> Duration {
        self.progress_interval
    }

    fn read(self: Arc<Self>, from: Revision, until: Revision) -> LogRead {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let result = if from < log.horizon {
            Err(StoreError::Compacted {
                requested: from,
                compacted: log.horizon,
            })
        } else {
            let first = log.entries.partition_point(|(r, _)| *r <= from);
            Ok(log
                .entries
                .iter()
                .skip(first)
                .take_while(|(r, _)| *r <= until)
                .take(REPLAY_CHUNK)
                .cloned()
                .collect())
        };
        Box::pin(async move { result })
    }
}

/// The changes of one etcd watch response as the store's: (kind, key-value) in revision
/// order, and the response's last revision (0 if it carried none).
fn changes(root: &str, response: &WatchResponse) -> (Vec<(EventKind, KeyValue)>, Revision) {
    let mut last = 0;
    let mut out = Vec::with_capacity(response.events().len());
    for event in response.events() {
        let Some(kv) = event.kv() else { continue };
        last = last.max(u64::try_from(kv.mod_revision()).unwrap_or(0));
        let Some(kv) = key_value(root, kv) else { continue };
        let kind = match event.event_type() {
            EventType::Put => EventKind::Put,
            EventType::Delete => EventKind::Delete,
        };
        out.push((kind, kv));
    }
    (out, last)
}

/// The watch that keeps the cache current, for the store's lifetime: it reconnects with
/// backoff whenever etcd goes away and resumes from the cache's revision, so the cache
/// neither misses nor repeats a change.
async fn reflect(inner: Weak<Inner>) {
    let mut backoff = Duration::from_millis(100);
    let mut warned = false;
    loop {
        let Some(store) = inner.upgrade() else { return };
        let cache = store.cache.clone();
        let root = store.root.clone();
        let from = cache.revision() + 1;
        let options = WatchOptions::new()
            .with_range(range_end(&root))
            .with_start_revision(rev(from))
            .with_progress_notify();
        let client = store.client.watch_client().max_decoding_message_size(MAX_MESSAGE);
        let opened = call(&store.endpoints, store.config.request_timeout, || {
            let (mut client, root, options) = (client.clone(), root.clone(), options.clone());
            async move { client.watch(root, Some(options)).await }
        })
        .await;
        let (client, endpoints, timeout) = (
            store.client.clone(),
            store.endpoints.clone(),
            store.config.request_timeout,
        );
        // Not held while waiting for etcd: the store may close meanwhile.
        drop(store);
        let failure = match opened {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(response)) if response.canceled() && response.compact_revision() > 0 => {
                        let compacted = watchable_after(response.compact_revision());
                        tracing::warn!(
                            from,
                            compacted,
                            "etcd compacted the history this apiserver's cache had not seen yet; reading everything again (watches from before now answer Gone)"
                        );
                        cache.etcd_compacted.fetch_max(compacted, Ordering::SeqCst);
                        match load(&client, &root, &endpoints, timeout).await {
                            Ok((map, revision)) => cache.reset(map, revision),
                            Err(e) => break e.to_string(),
                        }
                        break "restarting the watch after reading everything again".to_string();
                    }
                    Ok(Some(response)) if response.canceled() => {
                        break format!("etcd cancelled the watch: {}", response.cancel_reason())
                    }
                    Ok(Some(response)) if response.created() => {
                        cache.connected.store(true, Ordering::SeqCst);
                        backoff = Duration::from_millis(100);
                        if warned {
                            tracing::info!(
                                from,
                                "the cache's watch on etcd is back; resuming from revision {from}"
                            );
                            warned = false;
                        }
                    }
                    Ok(Some(response)) => {
                        let (changes, last) = changes(&root, &response);
                        // A progress notification (no events) or writes the store does not
                        // show (the compactor's key): the revision moves all the same.
                        let revision = last.max(if response.events().is_empty() {
                            header_revision(response.header())
                        } else {
                            0
                        });
                        cache.apply(changes, revision);
                    }
                    Ok(None) => break "etcd ended the watch".to_string(),
                    Err(e) => break etcd_error(&endpoints, timeout, e).to_string(),
                }
            },
            Err(e) => e.to_string(),
        };
        if cache.closed.load(Ordering::SeqCst) {
            return;
        }
        cache.connected.store(false, Ordering::SeqCst);
        cache.reconnects.fetch_add(1, Ordering::Relaxed);
        if !warned {
            tracing::warn!(
                revision = cache.revision(),
                "the watch feeding this apiserver's cache lost etcd ({failure}); reads are served from the cache meanwhile, reconnecting"
            );
            warned = true;
        } else {
            tracing::debug!("the cache's watch is still reconnecting: {failure}");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Compacts etcd's history every interval to the revision seen one interval earlier, as
/// kube-apiserver does: apiservers take turns through the version of the compactor key,
/// so with several of them etcd is still compacted once per interval, and none of them
/// logs another's compaction as an error.
async fn compact_periodically(inner: Weak<Inner>) {
    let Some(interval) = inner.upgrade().map(|s| s.config.compaction_interval) else {
        return;
    };
    let (mut turn, mut seen) = (0i64, 0 as Revision);
    loop {
        tokio::time::sleep(interval).await;
        let Some(store) = inner.upgrade() else { return };
        let key = store.etcd_key(COMPACT_KEY);
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, turn)])
            .and_then([TxnOp::put(key.clone(), seen.to_string(), None)])
            .or_else([TxnOp::get(key, None)]);
        let response = match store.kv_txn(txn).await {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!("cannot compact etcd's history this time: {e}");
                continue;
            }
        };
        let current = header_revision(response.header());
        if !response.succeeded() {
            // Another apiserver compacted this interval; take the next turn after it.
            turn = response
                .op_responses()
                .into_iter()
                .find_map(|r| match r {
                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.version()),
                    _ => None,
                })
                .unwrap_or(0);
            seen = current;
            continue;
        }
        turn += 1;
        if seen > 1 {
            match store.compact(seen - 1).await {
                Ok(_) => tracing::debug!(revision = seen, "compacted etcd's history"),
                Err(e) => tracing::warn!(revision = seen, "cannot compact etcd's history: {e}"),
            }
        }
        seen = current;
    }
}

/// A watch on the etcd store: served from the cache, or catching up from etcd's history
/// until it reaches what the cache holds.
struct EtcdWatch {
    inner: Weak<Inner>,
    prefix: String,
    phase: Phase,
    done: bool,
}

enum Phase {
    Cache(Watcher<Cache>),
    Etcd(CatchUp),
}

/// A watch from before the cache's history: an etcd watch on the whole prefix (so that
/// its position advances through every revision the cache knows), filtered here.
struct CatchUp {
    /// Every change at or below this revision has been delivered or filtered out.
    last: Revision,
    stream: Option<etcd_client::WatchStream>,
    pending: VecDeque<Event>,
}

impl CatchUp {
    fn new(last: Revision) -> CatchUp {
        CatchUp {
            last,
            stream: None,
            pending: VecDeque::new(),
        }
    }
}

impl EtcdWatch {
    async fn next_item(&mut self) -> Option<Result<WatchItem, StoreError>> {
        if self.done {
            return None;
        }
        let item = self.step().await;
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }

    async fn step(&mut self) -> Result<WatchItem, StoreError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let catch_up = match &mut self.phase {
                Phase::Cache(watcher) => match watcher.next_item().await {
                    // Fell behind what the cache holds: catch up from etcd.
                    Some(Err(StoreError::Compacted { requested, .. })) => {
                        self.phase = Phase::Etcd(CatchUp::new(requested));
                        continue;
                    }
                    Some(item) => return item,
                    None => return Err(StoreError::Closed),
                },
                Phase::Etcd(catch_up) => catch_up,
            };
            if let Some(event) = catch_up.pending.pop_front() {
                return Ok(WatchItem::Event(event));
            }
            let inner = self.inner.upgrade().ok_or(StoreError::Closed)?;
            if inner.cache.closed.load(Ordering::SeqCst) {
                return Err(StoreError::Closed);
            }
            // Reached what the cache holds: follow the cache from here.
            if inner.cache.compacted() <= catch_up.last {
                match Watcher::new(&inner.cache, &self.prefix, catch_up.last) {
                    Ok(watcher) => {
                        self.phase = Phase::Cache(watcher);
                        continue;
                    }
                    Err(StoreError::Compacted { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            let Some(stream) = catch_up.stream.as_mut() else {
                let options = WatchOptions::new()
                    .with_range(range_end(&inner.root))
                    .with_start_revision(rev(catch_up.last + 1))
                    .with_prev_key()
                    .with_progress_notify();
                let client = inner.client.watch_client().max_decoding_message_size(MAX_MESSAGE);
                let opened = inner
                    .call(|| {
                        let (mut client, root, options) =
                            (client.clone(), inner.root.clone(), options.clone());
                        async move { client.watch(root, Some(options)).await }
                    })
                    .await;
                drop(inner);
                match opened {
                    Ok(stream) => catch_up.stream = Some(stream),
                    Err(e) => {
                        tracing::debug!("a watch catching up from etcd cannot reach it, retrying: {e}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
                continue;
            };
            let root = inner.root.clone();
            drop(inner);
            // Bounded, so that a watch whose prefix stays quiet still looks for the cache.
            let message = match tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
                Err(_) => continue,
                Ok(message) => message,
            };
            match message {
                Ok(Some(response)) if response.canceled() && response.compact_revision() > 0 => {
                    let compacted = watchable_after(response.compact_revision());
                    if let Some(inner) = self.inner.upgrade() {
                        inner.cache.etcd_compacted.fetch_max(compacted, Ordering::SeqCst);
                    }
                    return Err(StoreError::Compacted {
                        requested: catch_up.last,
                        compacted,
                    });
                }
                Ok(Some(response)) if response.canceled() => catch_up.stream = None,
                Ok(Some(response)) if response.created() => {}
                Ok(Some(response)) if response.events().is_empty() => {
                    let revision = header_revision(response.header());
                    if revision > catch_up.last {
                        catch_up.last = revision;
                        return Ok(WatchItem::Progress(revision));
                    }
                }
                Ok(Some(response)) => {
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        let revision = u64::try_from(kv.mod_revision()).unwrap_or(0);
                        catch_up.last = catch_up.last.max(revision);
                        let prev = event.prev_kv().and_then(|p| key_value(&root, p));
                        let Some(kv) = key_value(&root, kv) else { continue };
                        if !kv.key.starts_with(&self.prefix) {
                            continue;
                        }
                        let event = match event.event_type() {
                            EventType::Put => Event {
                                kind: EventKind::Put,
                                kv,
                                prev,
                            },
                            EventType::Delete => match prev {
                                Some(prev) => Event {
                                    kind: EventKind::Delete,
                                    kv: KeyValue {
                                        mod_revision: revision,
                                        ..prev.clone()
                                    },
                                    prev: Some(prev),
                                },
                                None => continue,
                            },
                        };
                        catch_up.pending.push_back(event);
                    }
                }
                // etcd went away: reconnect from the last delivered revision.
                Ok(None) | Err(_) => catch_up.stream = None,
            }
        }
    }
}
