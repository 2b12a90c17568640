//! Informers shared by every controller of a process: one list + watch and one cache per
//! kind, however many loops read it (Kubernetes' SharedInformerFactory). With 10,000 pods
//! the cache is the process's memory, so it must exist once. The controller-manager and
//! the cloud-controller-manager both build on it.

use super::{informer::Informer, watcher::WatcherConfig};
use crate::{Api, Client};
use rkube_api::Resource;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Mutex;

pub struct SharedInformers {
    client: Client,
    informers: Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
}

impl SharedInformers {
    pub fn new(client: Client) -> Self {
        SharedInformers {
            client,
            informers: Mutex::new(HashMap::new()),
        }
    }

    /// The informer for `K` over all namespaces, created and started on
    /// first use. Callers add their indexers before waiting for sync.
    pub fn get<K: Resource>(&self) -> Informer<K> {
        let mut map = self.informers.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(TypeId::of::<K>()).or_insert_with(|| {
            let informer = Informer::new(Api::<K>::all(self.client.clone()), WatcherConfig::default());
            Box::new(informer)
        });
        let informer = entry
            .downcast_ref::<Informer<K>>()
            .expect("keyed by TypeId")
            .clone();
        if let Err(e) = informer.start() {
            tracing::warn!(kind = K::INFO.kind, "informer did not start: {e}");
        }
        informer
    }
}
