//! When objects reach a state, as a watch sees it: the pods and scheduler suites time each
//! pod from its create to the first event that shows it Running, or bound; the storage
//! suite times claims to Bound the same way.

use anyhow::Context;
use futures::StreamExt;
use rkube_api::Resource;
use rkube_client::{Api, WatchEvent, WatchParams};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::task::JoinHandle;

/// When each object was first seen in the state looked for, by name.
pub type SeenAt = Arc<Mutex<HashMap<String, Instant>>>;

/// Watches `objects` from `resource_version` and records when each object first matches
/// `reached`. The task ends once `count` objects have matched, or when the watch ends.
pub async fn first_seen<K: Resource>(
    objects: &Api<K>,
    resource_version: String,
    count: usize,
    reached: impl Fn(&K) -> bool + Send + 'static,
) -> anyhow::Result<(SeenAt, JoinHandle<()>)> {
    let seen_at: SeenAt = Arc::default();
    let mut watch = objects
        .watch(&WatchParams {
            resource_version,
            ..Default::default()
        })
        .await
        .with_context(|| format!("watching {}", K::INFO.plural))?;
    let seen = seen_at.clone();
    let watcher = tokio::spawn(async move {
        while let Some(ev) = watch.next().await {
            let Ok(WatchEvent::Modified(p) | WatchEvent::Added(p)) = ev else {
                continue;
            };
            if reached(&p) {
                let mut m = seen.lock().unwrap_or_else(|e| e.into_inner());
                m.entry(p.name().to_string()).or_insert_with(Instant::now);
                if m.len() >= count {
                    break;
                }
            }
        }
    });
    Ok((seen_at, watcher))
}
