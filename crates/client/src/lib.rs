//! rkube's client library: how every daemon and `rkubectl` talk to the
//! apiserver. It owns the connection (`Client`, one lazily connected,
//! self-reconnecting gRPC channel), the typed calls on one kind (`Api<K>`)
//! and the dynamic ones for kinds known only at run time, the client
//! config file (`ClientConfig`), and the controller machinery in
//! [`runtime`]: informers (list + watch + cache + indexers), the
//! deduplicating work queue with per-key backoff, and the `Controller`
//! runner; plus the events `Recorder` and Lease-based `LeaderElector`.
//!
//! It must not know any controller's logic, open the store, or talk to
//! anything but the apiserver. Server errors keep their Kubernetes meaning
//! (`Error::is_not_found`, `is_conflict`, `is_gone`, ...). Objects from a
//! cache are shared (`Arc<K>`): never mutate one in place; write a changed
//! copy with the resourceVersion it was read at.

pub mod api;
pub mod client;
pub mod config;
pub mod error;
pub mod events;
pub mod kubeconfig;
pub mod leader;
pub mod list_watch;
pub mod params;
pub mod pki;
pub mod runtime;

pub use api::Api;
pub use client::Client;
pub use config::ClientConfig;
pub use error::{Cause, Error, Result};
pub use events::{object_reference, EventType, Recorder};
pub use leader::{
    run_leading, LeaderElection, LeaderElectionConfig, LeaderElectionOptions, LeaderElector, LeaseStore,
};
pub use params::{
    DeleteParams, ListParams, ObjectList, PostParams, Preconditions, PropagationPolicy, Subresource,
    WatchEvent, WatchParams,
};
pub use runtime::{Action, Controller, Informer, SharedInformers, Store, WorkQueue};
