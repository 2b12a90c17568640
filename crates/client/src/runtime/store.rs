//! The informer's cache: one `Writer` (the informer's task) applies
//! watcher events; any number of cheap `Store` readers get `Arc<K>`
//! snapshots of single objects, never a lock held across an await.
//!
//! Cached objects are shared: never mutate one; clone it, change the clone
//! and write that through the API with the resourceVersion it carries.

use crate::error::{Error, Result};
use crate::runtime::watcher::Event;
use rkube_api::Resource;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::watch;

/// Computes the values an object is indexed under (for example its
/// `spec.nodeName`, or the uids of its owners).
pub type IndexFn<K> = Arc<dyn Fn(&K) -> Vec<String> + Send + Sync>;

/// One change the cache made, old and new state: `(None, Some)` added,
/// `(Some, Some)` updated, `(Some, None)` deleted.
#[derive(Debug)]
pub struct Change<K> {
    pub old: Option<Arc<K>>,
    pub new: Option<Arc<K>>,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        Change {
            old: self.old.clone(),
            new: self.new.clone(),
        }
    }
}

impl<K> Change<K> {
    pub fn is_add(&self) -> bool {
        self.old.is_none() && self.new.is_some()
    }

    pub fn is_update(&self) -> bool {
        self.old.is_some() && self.new.is_some()
    }

    pub fn is_delete(&self) -> bool {
        self.new.is_none()
    }

    /// The newest state known: the new one, or the last one of a deleted
    /// object.
    pub fn latest(&self) -> Option<&Arc<K>> {
        self.new.as_ref().or(self.old.as_ref())
    }
}

struct State<K> {
    objects: HashMap<String, Arc<K>>,
    indexers: HashMap<String, IndexFn<K>>,
    /// index name → indexed value → keys of objects with that value.
    indices: HashMap<String, HashMap<String, BTreeSet<String>>>,
}

impl<K> State<K> {
    fn index_add(&mut self, key: &str, obj: &K) {
        for (name, f) in &self.indexers {
            let index = self.indices.entry(name.clone()).or_default();
            for value in f(obj) {
                index.entry(value).or_default().insert(key.to_string());
            }
        }
    }

    fn index_remove(&mut self, key: &str, obj: &K) {
        for (name, f) in &self.indexers {
            let Some(index) = self.indices.get_mut(name) else {
                continue;
            };
            for value in f(obj) {
                if let Some(keys) = index.get_mut(&value) {
                    keys.remove(key);
                    if keys.is_empty() {
                        index.remove(&value);
                    }
                }
            }
        }
    }
}

struct Inner<K> {
    state: RwLock<State<K>>,
    synced: watch::Sender<bool>,
}

/// A reader of the cache. Clones share one cache.
pub struct Store<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            inner: self.inner.clone(),
        }
    }
}

impl<K> fmt::Debug for Store<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("len", &self.read().objects.len())
            .field("synced", &*self.inner.synced.borrow())
            .finish()
    }
}

impl<K> Store<K> {
    // A panic elsewhere while the lock was held cannot leave the maps
    // half-updated in a way readers could not use, so a poisoned lock is
    // taken over rather than turned into more panics.
    fn read(&self) -> RwLockReadGuard<'_, State<K>> {
        self.inner.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State<K>> {
        self.inner.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The object under `namespace/name` (or `name` for cluster-scoped
    /// kinds).
    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.read().objects.get(key).cloned()
    }

    pub fn get_namespaced(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.get(&rkube_api::object_key(namespace, name))
    }

    /// Every cached object, in no particular order.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().objects.values().cloned().collect()
    }

    pub fn keys(&self) -> Vec<String> {
        self.read().objects.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds (or replaces) an index; existing objects are indexed at once.
    /// Add indices before `wait_until_synced` returns to readers that use
    /// them, or they see an index built from a partial cache.
    pub fn add_index<F>(&self, name: &str, f: F)
    where
        F: Fn(&K) -> Vec<String> + Send + Sync + 'static,
    {
        let f: IndexFn<K> = Arc::new(f);
        let mut state = self.write();
        let mut index: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (key, obj) in &state.objects {
            for value in f(obj) {
                index.entry(value).or_default().insert(key.clone());
            }
        }
        state.indices.insert(name.to_string(), index);
        state.indexers.insert(name.to_string(), f);
    }

    /// Objects whose index `name` yields `value`, in key order.
    pub fn by_index(&self, name: &str, value: &str) -> Result<Vec<Arc<K>>> {
        let state = self.read();
        if !state.indexers.contains_key(name) {
            return Err(Error::NoSuchIndex {
                index: name.to_string(),
            });
        }
        Ok(state
            .indices
            .get(name)
            .and_then(|index| index.get(value))
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| state.objects.get(k).cloned())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Keys of the objects whose index `name` yields `value`.
    pub fn index_keys(&self, name: &str, value: &str) -> Result<Vec<String>> {
        let state = self.read();
        if !state.indexers.contains_key(name) {
            return Err(Error::NoSuchIndex {
                index: name.to_string(),
            });
        }
        Ok(state
            .indices
            .get(name)
            .and_then(|index| index.get(value))
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default())
    }

    /// Whether the first complete list has been loaded. Stays true.
    pub fn is_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    /// Waits for the first complete list. Controllers must not act before:
    /// a partial cache looks like missing objects.
    pub async fn wait_until_synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        // The sender lives in `inner`, which `self` keeps alive, so this
        // cannot fail; if it somehow did, waiting longer would not help.
        let _ = rx.wait_for(|synced| *synced).await;
    }
}

/// The one writer of a cache.
pub struct Writer<K> {
    store: Store<K>,
}

impl<K: Resource> Default for Writer<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Resource> Writer<K> {
    pub fn new() -> Self {
        let (synced, _) = watch::channel(false);
        let state = State {
            objects: HashMap::new(),
            indexers: HashMap::new(),
            indices: HashMap::new(),
        };
        Writer {
            store: Store {
                inner: Arc::new(Inner {
                    state: RwLock::new(state),
                    synced,
                }),
            },
        }
    }

    /// A reader of this writer's cache.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Applies one watcher event and returns the changes it made. A
    /// `Resync` replaces the contents and reports only differences: objects
    /// whose resourceVersion is unchanged are not reported.
    pub fn apply(&mut self, event: Event<K>) -> Vec<Change<K>> {
        let changes = {
            let mut state = self.store.write();
            match event {
                Event::Applied(obj) => {
                    let key = obj.key();
                    let new = Arc::new(obj);
                    let old = state.objects.insert(key.clone(), new.clone());
                    if let Some(old) = &old {
                        state.index_remove(&key, old);
                    }
                    state.index_add(&key, &new);
                    vec![Change { old, new: Some(new) }]
                }
                Event::Deleted(obj) => {
                    let key = obj.key();
                    if let Some(old) = state.objects.remove(&key) {
                        state.index_remove(&key, &old);
                    }
                    // The event's object is the final state, newer than
                    // the cached one.
                    vec![Change {
                        old: Some(Arc::new(obj)),
                        new: None,
                    }]
                }
                Event::Resync(items) => {
                    let mut old_objects = std::mem::take(&mut state.objects);
                    let mut changes = Vec::new();
                    let mut objects = HashMap::with_capacity(items.len());
                    for obj in items {
                        let key = obj.key();
                        let old = old_objects.remove(&key);
                        let unchanged = old.as_ref().is_some_and(|o| {
                            o.metadata().resource_version == obj.metadata().resource_version
                                && !obj.metadata().resource_version.is_empty()
                        });
                        match (old, unchanged) {
                            (Some(old), true) => {
                                objects.insert(key, old);
                            }
                            (old, _) => {
                                let new = Arc::new(obj);
                                objects.insert(key, new.clone());
                                changes.push(Change { old, new: Some(new) });
                            }
                        }
                    }
                    for (_, old) in old_objects {
                        changes.push(Change {
                            old: Some(old),
                            new: None,
                        });
                    }
                    state.objects = objects;
                    let mut indices: HashMap<String, HashMap<String, BTreeSet<String>>> = HashMap::new();
                    for (name, f) in &state.indexers {
                        let index = indices.entry(name.clone()).or_default();
                        for (key, obj) in &state.objects {
                            for value in f(obj) {
                                index.entry(value).or_default().insert(key.clone());
                            }
                        }
                    }
                    state.indices = indices;
                    changes
                }
            }
        };
        // After the lock is released: waiters wake to a consistent cache.
        if !*self.store.inner.synced.borrow() {
            self.store.inner.synced.send_replace(true);
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::core::v1::{Pod, PodSpec};
    use rkube_api::meta::v1::{ObjectMeta, OwnerReference};

    fn pod(name: &str, rv: &str, node: &str, owner: &str) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "ns".into(),
                resource_version: rv.into(),
                owner_references: if owner.is_empty() {
                    vec![]
                } else {
                    vec![OwnerReference {
                        uid: owner.into(),
                        ..Default::default()
                    }]
                },
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn by_node(p: &Pod) -> Vec<String> {
        p.spec
            .as_ref()
            .map(|s| s.node_name.clone())
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect()
    }

    fn names(pods: Vec<Arc<Pod>>) -> Vec<String> {
        pods.iter().map(|p| p.metadata().name.clone()).collect()
    }

    #[test]
    fn applies_events_and_keeps_indices_current() {
        let mut w = Writer::<Pod>::new();
        let store = w.store();
        store.add_index("node", by_node);
        assert!(!store.is_synced());
        w.apply(Event::Resync(vec![
            pod("a", "1", "n1", ""),
            pod("b", "2", "n1", ""),
        ]));
        assert!(store.is_synced());
        assert_eq!(names(store.by_index("node", "n1").unwrap()), ["a", "b"]);

        // a moves to n2: it leaves n1's entry.
        let ch = w.apply(Event::Applied(pod("a", "3", "n2", "")));
        assert!(ch[0].is_update());
        assert_eq!(names(store.by_index("node", "n1").unwrap()), ["b"]);
        assert_eq!(names(store.by_index("node", "n2").unwrap()), ["a"]);

        let ch = w.apply(Event::Deleted(pod("b", "4", "n1", "")));
        assert!(ch[0].is_delete());
        assert!(store.by_index("node", "n1").unwrap().is_empty());
        assert!(store.get("ns/b").is_none());
        assert_eq!(store.get("ns/a").unwrap().metadata().resource_version, "3");
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn an_index_added_late_covers_existing_objects() {
        let mut w = Writer::<Pod>::new();
        let store = w.store();
        w.apply(Event::Resync(vec![
            pod("a", "1", "", "u1"),
            pod("b", "2", "", "u1"),
            pod("c", "3", "", "u2"),
        ]));
        store.add_index("owner", |p: &Pod| {
            p.metadata()
                .owner_references
                .iter()
                .map(|o| o.uid.clone())
                .collect()
        });
        assert_eq!(store.index_keys("owner", "u1").unwrap(), ["ns/a", "ns/b"]);
        assert_eq!(names(store.by_index("owner", "u2").unwrap()), ["c"]);
        assert!(store.by_index("owner", "nobody").unwrap().is_empty());
        assert!(matches!(
            store.by_index("ownr", "u1"),
            Err(Error::NoSuchIndex { .. })
        ));
    }

    #[test]
    fn resync_replaces_contents_and_reports_only_differences() {
        let mut w = Writer::<Pod>::new();
        let store = w.store();
        store.add_index("node", by_node);
        w.apply(Event::Resync(vec![
            pod("a", "1", "n1", ""),
            pod("b", "2", "n1", ""),
            pod("c", "3", "n1", ""),
        ]));
        let a_before = store.get("ns/a").unwrap();

        // b was deleted and c changed while the watch was broken; d is new.
        let changes = w.apply(Event::Resync(vec![
            pod("a", "1", "n1", ""),
            pod("c", "7", "n2", ""),
            pod("d", "8", "n1", ""),
        ]));
        let mut summary: Vec<(bool, bool, String)> = changes
            .iter()
            .map(|c| {
                (
                    c.old.is_some(),
                    c.new.is_some(),
                    c.latest().unwrap().metadata().name.clone(),
                )
            })
            .collect();
        summary.sort_by(|x, y| x.2.cmp(&y.2));
        assert_eq!(
            summary,
            [
                (true, false, "b".to_string()),
                (true, true, "c".to_string()),
                (false, true, "d".to_string())
            ]
        );
        assert!(store.get("ns/b").is_none());
        assert!(
            Arc::ptr_eq(&a_before, &store.get("ns/a").unwrap()),
            "unchanged objects keep their Arc"
        );
        assert_eq!(names(store.by_index("node", "n1").unwrap()), ["a", "d"]);
        assert_eq!(names(store.by_index("node", "n2").unwrap()), ["c"]);
    }

    #[tokio::test]
    async fn readers_wait_until_synced() {
        let mut w = Writer::<Pod>::new();
        let store = w.store();
        let waiter = tokio::spawn({
            let store = store.clone();
            async move {
                store.wait_until_synced().await;
                store.len()
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        w.apply(Event::Resync(vec![pod("a", "1", "", "")]));
        assert_eq!(waiter.await.unwrap(), 1);
    }
}
