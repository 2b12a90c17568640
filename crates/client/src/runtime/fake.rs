//! An in-memory stand-in for the apiserver's list and watch of pods, with
//! the same revision semantics: every write gets the next revision, a
//! watch from N replays the changes after N, a watch from before the
//! compacted revision is Gone. Tests break, compact and script it.

use crate::error::{Error, Result};
use crate::params::{ListParams, ObjectList, WatchEvent, WatchParams};
use crate::runtime::watcher::ListWatch;
use futures::stream::{BoxStream, StreamExt};
use rkube_api::core::v1::{Pod, PodSpec};
use rkube_api::meta::v1::{ObjectMeta, OwnerReference};
use rkube_api::Resource;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

type Sender = mpsc::UnboundedSender<Result<WatchEvent<Pod>>>;

#[derive(Default)]
pub struct State {
    pub revision: u64,
    pub objects: BTreeMap<String, Pod>,
    log: Vec<(u64, WatchEvent<Pod>)>,
    compacted: u64,
    watchers: Vec<Sender>,
    /// Every list and watch request, in order.
    pub list_calls: Vec<ListParams>,
    pub watch_calls: Vec<WatchParams>,
    /// Fail this many of the next list calls with a transport error.
    pub fail_lists: usize,
    /// Answer list calls that carry a continue token with Gone.
    pub expire_continue: bool,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

pub fn gone() -> Error {
    Error::Api {
        code: tonic::Code::OutOfRange,
        reason: "Gone".into(),
        message: "too old resource version".into(),
        causes: vec![],
    }
}

fn unreachable_server() -> Error {
    Error::Transport {
        server: "fake".into(),
        message: "connection refused".into(),
    }
}

pub fn pod(name: &str, node: &str) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "ns".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: node.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod controlled by the ReplicaSet `owner`.
pub fn owned_pod(name: &str, owner: &str) -> Pod {
    let mut p = pod(name, "");
    p.metadata_mut().owner_references = vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: owner.into(),
        uid: format!("uid-{owner}"),
        controller: Some(true),
        block_owner_deletion: None,
    }];
    p
}

impl FakeApi {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, event: impl FnOnce(u64) -> (Option<Pod>, WatchEvent<Pod>)) -> u64 {
        let mut s = self.state();
        s.revision += 1;
        let rev = s.revision;
        let (stored, ev) = event(rev);
        if let Some(obj) = stored {
            s.objects.insert(obj.key(), obj);
        }
        s.log.push((rev, ev.clone()));
        s.watchers.retain(|w| w.send(Ok(ev.clone())).is_ok());
        rev
    }

    /// Creates or replaces a pod; returns its revision.
    pub fn put(&self, mut p: Pod) -> u64 {
        let existed = self.state().objects.contains_key(&p.key());
        self.record(|rev| {
            p.metadata_mut().resource_version = rev.to_string();
            let ev = if existed {
                WatchEvent::Modified(p.clone())
            } else {
                WatchEvent::Added(p.clone())
            };
            (Some(p), ev)
        })
    }

    pub fn delete(&self, key: &str) -> u64 {
        let Some(mut p) = self.state().objects.remove(key) else {
            return 0;
        };
        self.record(|rev| {
            p.metadata_mut().resource_version = rev.to_string();
            (None, WatchEvent::Deleted(p))
        })
    }

    /// Ends every open watch, as a server restart or network break would.
    pub fn disconnect(&self) {
        self.state().watchers.clear();
    }

    /// Breaks every open watch with an error.
    pub fn break_watches(&self, err: fn() -> Error) {
        let mut s = self.state();
        for w in s.watchers.drain(..) {
            let _ = w.send(Err(err()));
        }
    }

    pub fn bookmark(&self) {
        let mut s = self.state();
        let rv = s.revision.to_string();
        s.watchers
            .retain(|w| w.send(Ok(WatchEvent::Bookmark(rv.clone()))).is_ok());
    }

    /// Forgets the change log: watches from any earlier revision are Gone.
    pub fn compact(&self) {
        let mut s = self.state();
        s.compacted = s.revision;
        s.log.clear();
    }

    pub fn watch_rvs(&self) -> Vec<String> {
        self.state()
            .watch_calls
            .iter()
            .map(|w| w.resource_version.clone())
            .collect()
    }

    pub fn list_count(&self) -> usize {
        self.state().list_calls.len()
    }

    pub fn open_watches(&self) -> usize {
        let mut s = self.state();
        s.watchers.retain(|w| !w.is_closed());
        s.watchers.len()
    }
}

#[async_trait::async_trait]
impl ListWatch<Pod> for FakeApi {
    async fn list(&self, lp: &ListParams) -> Result<ObjectList<Pod>> {
        let mut s = self.state();
        s.list_calls.push(lp.clone());
        if s.fail_lists > 0 {
            s.fail_lists -= 1;
            return Err(unreachable_server());
        }
        if s.expire_continue && !lp.continue_token.is_empty() {
            return Err(gone());
        }
        let after = lp.continue_token.as_str();
        let mut items: Vec<Pod> = s
            .objects
            .iter()
            .filter(|(k, _)| after.is_empty() || k.as_str() > after)
            .map(|(_, p)| p.clone())
            .collect();
        let mut continue_token = String::new();
        if lp.limit > 0 && items.len() > lp.limit as usize {
            items.truncate(lp.limit as usize);
            continue_token = items.last().map(|p| p.key()).unwrap_or_default();
        }
        Ok(ObjectList {
            items,
            resource_version: s.revision.to_string(),
            continue_token,
            remaining_item_count: None,
        })
    }

    async fn watch(&self, wp: &WatchParams) -> Result<BoxStream<'static, Result<WatchEvent<Pod>>>> {
        let mut s = self.state();
        s.watch_calls.push(wp.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        if wp.resource_version.is_empty() {
            for p in s.objects.values() {
                let _ = tx.send(Ok(WatchEvent::Added(p.clone())));
            }
        } else {
            let from: u64 = wp.resource_version.parse().map_err(|_| gone())?;
            if from < s.compacted {
                return Err(gone());
            }
            for (rev, ev) in &s.log {
                if *rev > from {
                    let _ = tx.send(Ok(ev.clone()));
                }
            }
        }
        s.watchers.push(tx);
        Ok(UnboundedReceiverStream::new(rx).boxed())
    }
}

/// How long a test with paused time waits for a condition
/// (`rkube_testing::eventually`): five simulated minutes.
pub const PATIENCE: Duration = Duration::from_secs(300);
