//! The reflector half of an informer: list, then watch from the list's
//! revision, resuming after disconnects and relisting when the server has
//! forgotten that revision. Its output is what a cache needs to mirror the
//! server: single changes, or a whole new list to replace itself with.

use crate::error::Result;
pub use crate::list_watch::{list_pages, ListWatch};
use crate::params::{ListParams, WatchEvent, WatchParams, DEFAULT_PAGE_SIZE};
use crate::runtime::backoff::Backoff;
use futures::stream::{BoxStream, Stream, StreamExt};
use rkube_api::Resource;
use std::sync::Arc;
use std::time::Duration;

/// What the watcher tells its cache.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<K> {
    /// Created or changed.
    Applied(K),
    /// Gone; the object's last state.
    Deleted(K),
    /// The complete current set, after the first list or a relist: the
    /// cache replaces its contents, so objects deleted while the watch was
    /// broken disappear too.
    Resync(Vec<K>),
}

#[derive(Debug, Clone)]
pub struct WatcherConfig {
    pub label_selector: String,
    pub field_selector: String,
    /// List page size.
    pub page_size: u32,
    /// Pause after a failed list or watch, doubling up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            label_selector: String::new(),
            field_selector: String::new(),
            page_size: DEFAULT_PAGE_SIZE,
            backoff_initial: Duration::from_millis(800),
            backoff_max: Duration::from_secs(30),
        }
    }
}

impl WatcherConfig {
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = selector.to_string();
        self
    }

    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = selector.to_string();
        self
    }
}

/// A never-ending stream of cache events for `lw`. It retries failures by
/// itself (with backoff, logging them), so a consumer only ever sees
/// events; the first is a `Resync` once the first list succeeds.
pub fn watcher<K, L>(lw: L, config: WatcherConfig) -> impl Stream<Item = Event<K>> + Send + 'static
where
    K: Resource,
    L: ListWatch<K>,
{
    let state = WatchState {
        lw: Arc::new(lw),
        backoff: Backoff::new(config.backoff_initial, config.backoff_max),
        config,
        resource_version: None,
        stream: None,
        events_on_stream: 0,
    };
    futures::stream::unfold(state, |mut state| async move {
        let event = state.next_event().await;
        Some((event, state))
    })
}

struct WatchState<K, L> {
    lw: Arc<L>,
    config: WatcherConfig,
    backoff: Backoff,
    /// None: (re)list before watching.
    resource_version: Option<String>,
    stream: Option<BoxStream<'static, Result<WatchEvent<K>>>>,
    /// Events received since the stream was opened; a stream that ends
    /// without any is treated as a failure so a server that closes at
    /// once is not hammered.
    events_on_stream: u64,
}

impl<K: Resource, L: ListWatch<K>> WatchState<K, L> {
    async fn next_event(&mut self) -> Event<K> {
        loop {
            let Some(rv) = self.resource_version.clone() else {
                let lp = ListParams {
                    label_selector: self.config.label_selector.clone(),
                    field_selector: self.config.field_selector.clone(),
                    limit: self.config.page_size,
                    continue_token: String::new(),
                };
                match list_pages(self.lw.as_ref(), &lp).await {
                    Ok(list) => {
                        self.backoff.reset();
                        self.resource_version = Some(list.resource_version);
                        return Event::Resync(list.items);
                    }
                    Err(e) => {
                        let delay = self.backoff.next_delay();
                        tracing::warn!(kind = K::INFO.kind, error = %e, ?delay, "list failed; retrying");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
            };
            let Some(stream) = self.stream.as_mut() else {
                let wp = WatchParams {
                    label_selector: self.config.label_selector.clone(),
                    field_selector: self.config.field_selector.clone(),
                    resource_version: rv,
                    allow_bookmarks: true,
                };
                match self.lw.watch(&wp).await {
                    Ok(s) => {
                        self.stream = Some(s);
                        self.events_on_stream = 0;
                    }
                    Err(e) if e.is_gone() => {
                        tracing::info!(kind = K::INFO.kind, rv = %wp.resource_version, "watch revision too old; relisting");
                        self.resource_version = None;
                    }
                    Err(e) => {
                        let delay = self.backoff.next_delay();
                        tracing::warn!(kind = K::INFO.kind, error = %e, ?delay, "watch failed; retrying");
                        tokio::time::sleep(delay).await;
                    }
                }
                continue;
            };
            match stream.next().await {
                Some(Ok(ev)) => {
                    self.backoff.reset();
                    self.events_on_stream += 1;
                    match ev {
                        WatchEvent::Added(obj) | WatchEvent::Modified(obj) => {
                            self.advance(&obj);
                            return Event::Applied(obj);
                        }
                        WatchEvent::Deleted(obj) => {
                            self.advance(&obj);
                            return Event::Deleted(obj);
                        }
                        WatchEvent::Bookmark(rv) => {
                            if !rv.is_empty() {
                                self.resource_version = Some(rv);
                            }
                        }
                    }
                }
                Some(Err(e)) if e.is_gone() => {
                    tracing::info!(kind = K::INFO.kind, "watch revision too old; relisting");
                    self.stream = None;
                    self.resource_version = None;
                }
                Some(Err(e)) => {
                    self.stream = None;
                    let delay = self.backoff.next_delay();
                    tracing::warn!(kind = K::INFO.kind, error = %e, ?delay, "watch broke; resuming");
                    tokio::time::sleep(delay).await;
                }
                None => {
                    self.stream = None;
                    // Servers end watches now and then on purpose; resume
                    // at once unless the stream gave nothing at all.
                    if self.events_on_stream == 0 {
                        let delay = self.backoff.next_delay();
                        tracing::debug!(kind = K::INFO.kind, ?delay, "watch ended empty; resuming");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }

    fn advance(&mut self, obj: &K) {
        let rv = &obj.metadata().resource_version;
        if !rv.is_empty() {
            self.resource_version = Some(rv.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::{pod, FakeApi};

    #[tokio::test]
    async fn list_pages_follows_continue_tokens() {
        let fake = FakeApi::default();
        for name in ["a", "b", "c", "d", "e"] {
            fake.put(pod(name, ""));
        }
        let list = list_pages(&fake, &ListParams::default().limit(2)).await.unwrap();
        let names: Vec<_> = list.items.iter().map(|p| p.name().to_string()).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e"]);
        assert_eq!(list.resource_version, "5");
        let tokens: Vec<_> = fake
            .state()
            .list_calls
            .iter()
            .map(|l| l.continue_token.clone())
            .collect();
        assert_eq!(tokens, ["", "ns/b", "ns/d"]);
    }

    #[tokio::test]
    async fn an_expired_continue_token_falls_back_to_one_whole_list() {
        let fake = FakeApi::default();
        for name in ["a", "b", "c"] {
            fake.put(pod(name, ""));
        }
        fake.state().expire_continue = true;
        let list = list_pages(&fake, &ListParams::default().limit(2)).await.unwrap();
        assert_eq!(list.items.len(), 3, "no page is lost or doubled");
        let limits: Vec<_> = fake.state().list_calls.iter().map(|l| l.limit).collect();
        assert_eq!(limits, [2, 2, 0]);
    }
}
