//! Informers shared by every controller of a process: one list + watch and one cache per
//! kind, however many loops read it (Kubernetes' SharedInformerFactory). With 10,000 pods
//! the cache is the process's memory, so it must exist once. The controller-manager and
//! the cloud-controller-manager both build on it.
//!
//! Objects are compacted as they enter the cache (see [`compact`]): managedFields are
//! dropped, as Kubernetes' controller-manager and scheduler drop them from their informers
//! (no loop reads them, and a write without them keeps the stored ones), and the lists of a
//! Pod are shrunk to their length, which decoding leaves with room for four elements.

use super::{informer::Informer, watcher::WatcherConfig};
use crate::error::Result;
use crate::list_watch::ListWatch;
use crate::params::{ListParams, ObjectList, WatchEvent, WatchParams};
use crate::{Api, Client};
use futures::stream::{BoxStream, StreamExt};
use rkube_api::core::v1::Pod;
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
            let informer = Informer::new(
                Compacting(Api::<K>::all(self.client.clone())),
                WatcherConfig::default(),
            );
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

/// A list + watch source whose objects are compacted as each page or event is decoded, so
/// the room given back is reused by the next page rather than left as holes in the heap.
struct Compacting<L>(L);

#[async_trait::async_trait]
impl<K: Resource, L: ListWatch<K>> ListWatch<K> for Compacting<L> {
    async fn list(&self, lp: &ListParams) -> Result<ObjectList<K>> {
        let mut list = self.0.list(lp).await?;
        list.items.iter_mut().for_each(compact);
        Ok(list)
    }

    async fn watch(&self, wp: &WatchParams) -> Result<BoxStream<'static, Result<WatchEvent<K>>>> {
        let events = self.0.watch(wp).await?;
        Ok(events
            .map(|event| {
                event.map(|event| match event {
                    WatchEvent::Added(mut o) => {
                        compact(&mut o);
                        WatchEvent::Added(o)
                    }
                    WatchEvent::Modified(mut o) => {
                        compact(&mut o);
                        WatchEvent::Modified(o)
                    }
                    WatchEvent::Deleted(mut o) => {
                        compact(&mut o);
                        WatchEvent::Deleted(o)
                    }
                    bookmark => bookmark,
                })
            })
            .boxed())
    }
}

/// What a shared cache keeps of `obj`: everything a loop may read or write back, without
/// managedFields, and (for Pods, the kind there are thousands of) without the spare
/// capacity of its lists: a decoded list of one 504-byte container status holds four.
pub fn compact<K: Resource>(obj: &mut K) {
    let m = obj.metadata_mut();
    m.managed_fields = Vec::new();
    m.owner_references.shrink_to_fit();
    m.finalizers.shrink_to_fit();
    if let Some(pod) = (obj as &mut dyn std::any::Any).downcast_mut::<Pod>() {
        compact_pod(pod);
    }
}

fn compact_pod(pod: &mut Pod) {
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes.shrink_to_fit();
        spec.tolerations.shrink_to_fit();
        spec.topology_spread_constraints.shrink_to_fit();
        for c in spec.init_containers.iter_mut().chain(spec.containers.iter_mut()) {
            c.command.shrink_to_fit();
            c.args.shrink_to_fit();
            c.ports.shrink_to_fit();
            c.env.shrink_to_fit();
            c.env_from.shrink_to_fit();
            c.volume_mounts.shrink_to_fit();
        }
        spec.init_containers.shrink_to_fit();
        spec.containers.shrink_to_fit();
    }
    if let Some(status) = pod.status.as_mut() {
        status.conditions.shrink_to_fit();
        status.pod_ips.shrink_to_fit();
        status.host_ips.shrink_to_fit();
        status.init_container_statuses.shrink_to_fit();
        status.container_statuses.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use rkube_api::core::v1::{ContainerStatus, PodStatus};
    use rkube_api::meta::v1::ManagedFieldsEntry;

    #[test]
    fn cached_pods_lose_managed_fields_and_spare_capacity_but_nothing_else() {
        let mut pod = Pod {
            status: Some(PodStatus {
                phase: "Running".into(),
                container_statuses: vec![ContainerStatus {
                    name: "main".into(),
                    ready: true,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        pod.metadata_mut().name = "web-1".into();
        pod.metadata_mut().labels.insert("app".into(), "web".into());
        let expected = pod.clone();
        pod.metadata_mut().managed_fields.push(ManagedFieldsEntry {
            manager: "kubectl".into(),
            operation: "Update".into(),
            ..Default::default()
        });
        // As the informer gets it: decoded from the wire.
        let mut decoded = Pod::decode(pod.encode_to_vec().as_slice()).unwrap();
        assert!(decoded.status.as_ref().unwrap().container_statuses.capacity() > 1);
        compact(&mut decoded);
        assert_eq!(decoded, expected, "only managedFields went");
        assert_eq!(decoded.status.as_ref().unwrap().container_statuses.capacity(), 1);
    }
}
