//! Following the store's change feed from inside the apiserver, for what keeps a picture
//! of the store up to date (the JSON cache, the Service allocator's view of other
//! apiservers' reservations): every change under a prefix, in order, until shutdown.

use rkube_store::{Event, Revision, Store, StoreError, WatchItem};
use std::sync::Arc;
use tokio::sync::watch;

/// Calls `on_change` with every change under `prefix` after revision `from` until
/// `shutdown` flips or the store stops. When the store has forgotten the revision reached
/// (the follower fell far behind), it goes on from the store's current revision: what was
/// missed must be worked out by other means (`what` names the follower in the log).
pub async fn follow(
    store: Arc<dyn Store>,
    prefix: &str,
    mut from: Revision,
    mut shutdown: watch::Receiver<bool>,
    what: &str,
    mut on_change: impl FnMut(Event),
) {
    loop {
        let mut feed = match store.watch(prefix, from) {
            Ok(feed) => feed,
            Err(e) => {
                tracing::debug!("{what} stopped: the store's change feed: {e}");
                return;
            }
        };
        loop {
            let item = tokio::select! {
                item = feed.next() => item,
                _ = shutdown.changed() => return,
            };
            match item {
                None => return,
                Some(Err(StoreError::Compacted { .. })) => {
                    from = store.revision();
                    break;
                }
                Some(Err(e)) => {
                    tracing::debug!("{what} stopped: the store's change feed: {e}");
                    return;
                }
                Some(Ok(WatchItem::Event(ev))) => on_change(ev),
                Some(Ok(WatchItem::Progress(_))) => {}
            }
        }
    }
}
