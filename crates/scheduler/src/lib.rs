//! rkube-scheduler: binds every pending pod that names this scheduler
//! (`spec.schedulerName`, default `default-scheduler`) to a node. Each
//! attempt runs the filter plugins (NodeResourcesFit, NodeName,
//! NodeUnschedulable, NodeReady, NodeAffinity, TaintToleration, NodePorts,
//! PodTopologySpread, InterPodAffinity) over the nodes, scores the feasible
//! ones (least-allocated, balanced allocation, preferred node and pod
//! affinity, PreferNoSchedule taints, spreading) and binds the pod to the best
//! through the apiserver's Bind call.
//!
//! It talks only to the apiserver, never moves a pod that is bound, and
//! keeps no state of its own: killed at any moment, the next instance
//! rebuilds its picture from the apiserver, and the apiserver's Bind
//! refuses to bind a pod twice.

pub mod cache;
pub mod config;
pub mod framework;
pub mod plugins;
pub mod pod_info;
pub mod preemption;
pub mod resources;
pub mod scheduler;
#[cfg(test)]
pub(crate) mod testing;

pub use config::{Config, Options};
pub use scheduler::{Scheduler, Stats};

use rkube_client::Client;
pub use rkube_daemon::notify_systemd;
use std::future::Future;
use std::sync::Arc;

/// The Lease replicas compete for (`--leader-elect`), as Kubernetes names it.
pub const LEASE_NAME: &str = "kube-scheduler";
pub const LEASE_NAMESPACE: &str = "kube-system";

/// Runs the scheduler until `shutdown` resolves: what `main` calls. With
/// leader election (the default) it schedules only while holding the Lease
/// and returns an error if the Lease is lost, so the process exits and no pod
/// is bound by a scheduler that no longer leads.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    config.validate()?;
    let _health = rkube_daemon::serve_health(config.health_addr).await?;
    let client = Client::for_daemon(&config.apiserver, config.kubeconfig.as_deref())?;
    let election = config.leader_election.clone();
    let scheduler = Arc::new(Scheduler::new(config, client.clone()));
    // Ready means serving: the health endpoint answers and the scheduler
    // runs, as leader or as a standby waiting for the Lease.
    rkube_daemon::ready();
    rkube_client::run_leading(client, &election, shutdown, move |stop| scheduler.run(stop)).await
}
