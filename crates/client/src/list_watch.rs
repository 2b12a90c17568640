//! Where a watcher gets its objects ([`ListWatch`]) and the paginated list
//! every consumer of one shares ([`list_pages`]). It depends on neither
//! `Api` nor the watcher, so that `Api::list_all` and the watcher can both
//! use it without importing each other.

use crate::error::Result;
use crate::params::{ListParams, ObjectList, WatchEvent, WatchParams, DEFAULT_PAGE_SIZE};
use futures::stream::BoxStream;

/// Where a watcher gets its objects: the apiserver (`Api<K>`), or a fake
/// in tests.
#[async_trait::async_trait]
pub trait ListWatch<K>: Send + Sync + 'static {
    async fn list(&self, lp: &ListParams) -> Result<ObjectList<K>>;
    async fn watch(&self, wp: &WatchParams) -> Result<BoxStream<'static, Result<WatchEvent<K>>>>;
}

/// Lists every page of a collection from one snapshot. If the continue
/// token expires midway the pages no longer form one snapshot, so the
/// whole list is fetched again in one call.
pub async fn list_pages<K, L>(lw: &L, lp: &ListParams) -> Result<ObjectList<K>>
where
    L: ListWatch<K> + ?Sized,
{
    let mut page = lp.clone();
    if page.limit == 0 {
        page.limit = DEFAULT_PAGE_SIZE;
    }
    page.continue_token.clear();
    let mut items = Vec::new();
    loop {
        let list = match lw.list(&page).await {
            Ok(list) => list,
            Err(e) if e.is_gone() && !page.continue_token.is_empty() => {
                tracing::debug!("continue token expired; listing again in one page");
                let whole = ListParams {
                    limit: 0,
                    continue_token: String::new(),
                    ..lp.clone()
                };
                return lw.list(&whole).await;
            }
            Err(e) => return Err(e),
        };
        items.extend(list.items);
        if list.continue_token.is_empty() {
            return Ok(ObjectList {
                items,
                resource_version: list.resource_version,
                continue_token: String::new(),
                remaining_item_count: None,
            });
        }
        page.continue_token = list.continue_token;
    }
}
