//! The events recorder: what `rkubectl describe` shows under Events.
//! Repeats of one event (same object, type, reason and message) within
//! ten minutes bump `count` and `lastTimestamp` of the Event already
//! written instead of piling up new ones, as Kubernetes does.

use crate::api::Api;
use crate::client::Client;
use crate::error::Result;
use chrono::Utc;
use rkube_api::core::v1::{Event, EventSource, ObjectReference};
use rkube_api::meta::v1::ObjectMeta;
use rkube_api::Resource;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// How long a repeat is folded into the Event already written.
pub const AGGREGATION_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How many distinct events a recorder remembers (client-go's LRU size).
const CACHE_SIZE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Where events are written: the apiserver, or a fake in tests.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    async fn create(&self, event: &Event) -> Result<Event>;
    /// JSON merge patch of an existing Event.
    async fn patch(&self, namespace: &str, name: &str, patch: &serde_json::Value) -> Result<Event>;
}

struct ApiSink(Client);

#[async_trait::async_trait]
impl EventSink for ApiSink {
    async fn create(&self, event: &Event) -> Result<Event> {
        Api::<Event>::namespaced(self.0.clone(), event.namespace())
            .create(event)
            .await
    }

    async fn patch(&self, namespace: &str, name: &str, patch: &serde_json::Value) -> Result<Event> {
        Api::<Event>::namespaced(self.0.clone(), namespace)
            .patch_merge(name, patch)
            .await
    }
}

/// A reference to `obj` for `involvedObject`.
pub fn object_reference<K: Resource>(obj: &K) -> ObjectReference {
    let m = obj.metadata();
    ObjectReference {
        kind: K::INFO.kind.to_string(),
        api_version: K::INFO.api_version(),
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: String::new(),
    }
}

/// Which events count as repeats of each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AggregateKey {
    kind: String,
    namespace: String,
    name: String,
    uid: String,
    event_type: EventType,
    reason: String,
    message: String,
}

#[derive(Debug, Clone)]
struct Written {
    namespace: String,
    name: String,
    count: i32,
    last_seen: Instant,
}

/// What to write for an occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Create,
    /// Bump the Event already written to `count`.
    Patch {
        namespace: String,
        name: String,
        count: i32,
    },
}

/// The repeat-folding memory, separate from I/O so its rules are tested
/// directly.
#[derive(Debug, Default)]
struct Aggregator {
    written: HashMap<AggregateKey, Written>,
}

impl Aggregator {
    fn decide(&mut self, key: &AggregateKey, now: Instant) -> Decision {
        match self.written.get_mut(key) {
            Some(w) if now.saturating_duration_since(w.last_seen) <= AGGREGATION_WINDOW => {
                // Counted at once, so a concurrent repeat patches to the
                // next count rather than the same one.
                w.count = w.count.saturating_add(1);
                w.last_seen = now;
                Decision::Patch {
                    namespace: w.namespace.clone(),
                    name: w.name.clone(),
                    count: w.count,
                }
            }
            _ => Decision::Create,
        }
    }

    fn created(&mut self, key: AggregateKey, namespace: String, name: String, now: Instant) {
        if self.written.len() >= CACHE_SIZE && !self.written.contains_key(&key) {
            // Forget the longest-quiet event; it would be the first to fall
            // out of the window anyway.
            if let Some(oldest) = self
                .written
                .iter()
                .min_by_key(|(_, w)| w.last_seen)
                .map(|(k, _)| k.clone())
            {
                self.written.remove(&oldest);
            }
        }
        self.written.insert(
            key,
            Written {
                namespace,
                name,
                count: 1,
                last_seen: now,
            },
        );
    }

    fn forget(&mut self, key: &AggregateKey) {
        self.written.remove(key);
    }
}

/// Writes Events about objects on behalf of one component. Clones share
/// the repeat memory.
#[derive(Clone)]
pub struct Recorder {
    sink: Arc<dyn EventSink>,
    component: String,
    host: String,
    memory: Arc<Mutex<Aggregator>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("component", &self.component)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// `component` is the reporter (`replicaset-controller`, `kubelet`);
    /// `host` the node or machine it runs on.
    pub fn new(client: Client, component: &str, host: &str) -> Self {
        Self::with_sink(Arc::new(ApiSink(client)), component, host)
    }

    pub fn with_sink(sink: Arc<dyn EventSink>, component: &str, host: &str) -> Self {
        Recorder {
            sink,
            component: component.to_string(),
            host: host.to_string(),
            memory: Arc::default(),
        }
    }

    fn memory(&self) -> MutexGuard<'_, Aggregator> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an event about `obj`.
    pub async fn publish<K: Resource>(
        &self,
        obj: &K,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> Result<()> {
        self.event(&object_reference(obj), event_type, reason, message)
            .await
    }

    /// Records an event about the object `involved` refers to. Events are
    /// advisory: callers usually log a failure and carry on.
    pub async fn event(
        &self,
        involved: &ObjectReference,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> Result<()> {
        let key = AggregateKey {
            kind: involved.kind.clone(),
            namespace: involved.namespace.clone(),
            name: involved.name.clone(),
            uid: involved.uid.clone(),
            event_type,
            reason: reason.to_string(),
            message: message.to_string(),
        };
        let now = Instant::now();
        let timestamp = rkube_api::time::now();
        let decision = self.memory().decide(&key, now);
        if let Decision::Patch {
            namespace,
            name,
            count,
        } = decision
        {
            let patch = serde_json::json!({ "count": count, "lastTimestamp": timestamp });
            match self.sink.patch(&namespace, &name, &patch).await {
                Ok(_) => return Ok(()),
                // Expired or deleted: start a new one.
                Err(e) if e.is_not_found() => self.memory().forget(&key),
                Err(e) => return Err(e),
            }
        }
        let event = self.new_event(involved, event_type, reason, message, &timestamp);
        let created = match self.sink.create(&event).await {
            // Two events in the same nanosecond: try once more with a new name.
            Err(e) if e.is_already_exists() => {
                let event = self.new_event(involved, event_type, reason, message, &timestamp);
                self.sink.create(&event).await?
            }
            other => other?,
        };
        let m = created.metadata();
        let (namespace, name) = if m.name.is_empty() {
            (event.namespace().to_string(), event.name().to_string())
        } else {
            (m.namespace.clone(), m.name.clone())
        };
        self.memory().created(key, namespace, name, now);
        Ok(())
    }

    fn new_event(
        &self,
        involved: &ObjectReference,
        event_type: EventType,
        reason: &str,
        message: &str,
        timestamp: &str,
    ) -> Event {
        let namespace = if involved.namespace.is_empty() {
            "default"
        } else {
            &involved.namespace
        };
        Event {
            api_version: String::new(),
            kind: String::new(),
            metadata: Some(ObjectMeta {
                name: event_name(&involved.name),
                namespace: namespace.to_string(),
                ..Default::default()
            }),
            involved_object: Some(involved.clone()),
            reason: reason.to_string(),
            message: message.to_string(),
            source: Some(EventSource {
                component: self.component.clone(),
                host: self.host.clone(),
            }),
            first_timestamp: timestamp.to_string(),
            last_timestamp: timestamp.to_string(),
            count: 1,
            r#type: event_type.as_str().to_string(),
            event_time: String::new(),
            action: String::new(),
            reporting_component: self.component.clone(),
            reporting_instance: self.host.clone(),
            related: None,
        }
    }
}

/// `<object>.<hex>`, unique enough: Kubernetes uses the nanosecond clock;
/// random bits are added so two recorders in one nanosecond differ too.
fn event_name(object: &str) -> String {
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
    let salt: u16 = rand::random();
    let object = if object.is_empty() { "event" } else { object };
    format!("{object}.{nanos:x}{salt:04x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use rkube_api::core::v1::Pod;

    #[derive(Default)]
    struct FakeSink {
        events: Mutex<Vec<Event>>,
        patches: Mutex<Vec<(String, String, serde_json::Value)>>,
        lose_events: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl EventSink for FakeSink {
        async fn create(&self, event: &Event) -> Result<Event> {
            self.events.lock().unwrap().push(event.clone());
            Ok(event.clone())
        }

        async fn patch(&self, namespace: &str, name: &str, patch: &serde_json::Value) -> Result<Event> {
            if self.lose_events.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::Api {
                    code: tonic::Code::NotFound,
                    reason: "NotFound".into(),
                    message: format!("events {name:?} not found"),
                    causes: vec![],
                });
            }
            self.patches
                .lock()
                .unwrap()
                .push((namespace.into(), name.into(), patch.clone()));
            Ok(Event::default())
        }
    }

    fn pod(ns: &str, name: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata_mut().namespace = ns.into();
        p.metadata_mut().name = name.into();
        p.metadata_mut().uid = "uid-1".into();
        p
    }

    #[tokio::test(start_paused = true)]
    async fn first_event_is_created_with_the_kubernetes_shape() {
        let sink = Arc::new(FakeSink::default());
        let rec = Recorder::with_sink(sink.clone(), "replicaset-controller", "node-1");
        rec.publish(
            &pod("web", "p1"),
            EventType::Warning,
            "FailedCreate",
            "quota exceeded",
        )
        .await
        .unwrap();
        let events = sink.events.lock().unwrap().clone();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.namespace(), "web");
        assert!(e.name().starts_with("p1."), "{}", e.name());
        assert!(
            e.name()[3..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{}",
            e.name()
        );
        let involved = e.involved_object.as_ref().unwrap();
        assert_eq!(
            (
                involved.kind.as_str(),
                involved.api_version.as_str(),
                involved.uid.as_str()
            ),
            ("Pod", "v1", "uid-1")
        );
        assert_eq!(e.r#type, "Warning");
        assert_eq!(e.count, 1);
        assert_eq!(e.source.as_ref().unwrap().component, "replicaset-controller");
        assert_eq!(e.source.as_ref().unwrap().host, "node-1");
        assert!(
            chrono::DateTime::parse_from_rfc3339(&e.first_timestamp).is_ok(),
            "{}",
            e.first_timestamp
        );
        assert_eq!(e.first_timestamp, e.last_timestamp);
    }

    #[tokio::test(start_paused = true)]
    async fn cluster_scoped_objects_get_events_in_default() {
        let sink = Arc::new(FakeSink::default());
        let rec = Recorder::with_sink(sink.clone(), "node-controller", "");
        let mut node = rkube_api::core::v1::Node::default();
        node.metadata_mut().name = "n1".into();
        rec.publish(
            &node,
            EventType::Normal,
            "NodeNotReady",
            "Node n1 status is now: NodeNotReady",
        )
        .await
        .unwrap();
        assert_eq!(sink.events.lock().unwrap()[0].namespace(), "default");
    }

    #[tokio::test(start_paused = true)]
    async fn repeats_within_ten_minutes_patch_count_and_last_timestamp() {
        let sink = Arc::new(FakeSink::default());
        let rec = Recorder::with_sink(sink.clone(), "kubelet", "n1");
        let p = pod("web", "p1");
        rec.publish(
            &p,
            EventType::Warning,
            "BackOff",
            "Back-off restarting failed container",
        )
        .await
        .unwrap();
        tokio::time::advance(Duration::from_secs(60)).await;
        rec.publish(
            &p,
            EventType::Warning,
            "BackOff",
            "Back-off restarting failed container",
        )
        .await
        .unwrap();
        tokio::time::advance(Duration::from_secs(9 * 60)).await;
        rec.publish(
            &p,
            EventType::Warning,
            "BackOff",
            "Back-off restarting failed container",
        )
        .await
        .unwrap();

        let created = sink.events.lock().unwrap().clone();
        assert_eq!(created.len(), 1);
        let patches = sink.patches.lock().unwrap().clone();
        assert_eq!(patches.len(), 2);
        for (i, (ns, name, patch)) in patches.iter().enumerate() {
            assert_eq!(ns, "web");
            assert_eq!(name, created[0].name());
            assert_eq!(patch["count"], serde_json::json!(i + 2));
            assert!(patch["lastTimestamp"].is_string());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn different_reason_message_or_object_is_a_new_event() {
        let sink = Arc::new(FakeSink::default());
        let rec = Recorder::with_sink(sink.clone(), "kubelet", "n1");
        rec.publish(&pod("web", "p1"), EventType::Normal, "Pulled", "image a")
            .await
            .unwrap();
        rec.publish(&pod("web", "p1"), EventType::Normal, "Pulled", "image b")
            .await
            .unwrap();
        rec.publish(&pod("web", "p1"), EventType::Normal, "Created", "image a")
            .await
            .unwrap();
        rec.publish(&pod("web", "p2"), EventType::Normal, "Pulled", "image a")
            .await
            .unwrap();
        rec.publish(&pod("web", "p1"), EventType::Warning, "Pulled", "image a")
            .await
            .unwrap();
        assert_eq!(sink.events.lock().unwrap().len(), 5);
        assert!(sink.patches.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeat_after_the_window_is_a_new_event() {
        let sink = Arc::new(FakeSink::default());
        let rec = Recorder::with_sink(sink.clone(), "kubelet", "n1");
        let p = pod("web", "p1");
        rec.publish(&p, EventType::Normal, "Started", "started")
            .await
            .unwrap();
        tokio::time::advance(AGGREGATION_WINDOW + Duration::from_secs(1)).await;
        rec.publish(&p, EventType::Normal, "Started", "started")
            .await
            .unwrap();
        assert_eq!(sink.events.lock().unwrap().len(), 2);
        assert!(sink.patches.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_vanished_event_is_created_again_with_count_one() {
        let sink = Arc::new(FakeSink::default());
        let rec = Recorder::with_sink(sink.clone(), "kubelet", "n1");
        let p = pod("web", "p1");
        rec.publish(&p, EventType::Normal, "Started", "started")
            .await
            .unwrap();
        sink.lose_events.store(true, std::sync::atomic::Ordering::SeqCst);
        rec.publish(&p, EventType::Normal, "Started", "started")
            .await
            .unwrap();
        let events = sink.events.lock().unwrap().clone();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].count, 1);
        assert_ne!(events[0].name(), events[1].name());
    }

    #[test]
    fn aggregator_memory_is_bounded() {
        let mut agg = Aggregator::default();
        let now = Instant::now();
        for i in 0..CACHE_SIZE + 10 {
            let key = AggregateKey {
                kind: "Pod".into(),
                namespace: "ns".into(),
                name: format!("p{i}"),
                uid: String::new(),
                event_type: EventType::Normal,
                reason: "R".into(),
                message: "m".into(),
            };
            assert_eq!(agg.decide(&key, now), Decision::Create);
            agg.created(key, "ns".into(), format!("p{i}.1"), now);
        }
        assert_eq!(agg.written.len(), CACHE_SIZE);
    }
}
