//! The controller machinery every rkube daemon shares: watcher →
//! cache (informer) → work queue → reconcile.

pub mod backoff;
pub mod controller;
#[cfg(test)]
pub(crate) mod fake;
pub mod informer;
pub mod manager;
pub mod queue;
pub mod shared;
pub mod store;
pub mod watcher;

pub use backoff::Backoff;
pub use controller::{controller_owner_keys, Action, Controller, ControllerMetrics, MetricsSnapshot};
pub use informer::{Informer, Subscription};
pub use manager::{
    enabled_controllers, run_controllers, Manager, ManagerOptions, ManagerParts, Shutdown, StartFn,
};
pub use queue::WorkQueue;
pub use shared::SharedInformers;
pub use store::{Change, IndexFn, Store, Writer};
pub use watcher::{list_pages, watcher, Event, ListWatch, WatcherConfig};
