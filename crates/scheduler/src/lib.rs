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

use rkube_client::{Client, LeaderElectionConfig, LeaderElector};
pub use rkube_daemon::notify_systemd;
use std::future::Future;
use std::sync::Arc;

/// The Lease replicas compete for (`--leader-elect`), as Kubernetes names it.
pub const LEASE_NAME: &str = "kube-scheduler";
pub const LEASE_NAMESPACE: &str = "kube-system";

/// Runs the scheduler until `shutdown` resolves: what `main` calls. With
/// `leader_elect`, schedules only while holding the Lease and returns an
/// error if the Lease is lost, so the process exits and no pod is bound by
/// a scheduler that no longer leads.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    config.validate()?;
    let _health = rkube_daemon::serve_health(config.health_addr).await?;
    let client = Client::for_daemon(&config.apiserver, config.kubeconfig.as_deref())?;
    let leader_elect = config.leader_elect;
    let scheduler = Arc::new(Scheduler::new(config, client.clone()));
    // Ready means serving: the health endpoint answers and the scheduler
    // runs, as leader or as a standby waiting for the Lease.
    rkube_daemon::ready();
    if !leader_elect {
        return scheduler.run(shutdown).await;
    }

    let host = rkube_daemon::host_name();
    let identity = format!("{host}_{}", uuid_like());
    let elector = Arc::new(LeaderElector::new(
        client,
        LeaderElectionConfig::new(LEASE_NAME, LEASE_NAMESPACE, &identity),
    )?);
    let mut leading = elector.is_leader();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let el = elector.clone();
    let mut election = tokio::spawn(async move {
        el.run(
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
            || {},
            || {},
        )
        .await
    });
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => {
            let _ = stop_tx.send(true);
            let _ = election.await;
            return Ok(());
        }
        r = &mut election => {
            return Err(anyhow::anyhow!("leader election ended before this scheduler led: {:?}", r));
        }
        _ = async { let _ = leading.wait_for(|l| *l).await.is_ok(); } => {}
    }
    tracing::info!(lease = LEASE_NAME, %identity, "leading; scheduling starts");
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let work = tokio::spawn(scheduler.run(async move {
        let _ = done_rx.await;
    }));
    let result = tokio::select! {
        _ = &mut shutdown => Ok(()),
        r = &mut election => match r {
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("lost the scheduler lease; exiting so a new leader takes over")),
            other => Err(anyhow::anyhow!("leader election stopped: {other:?}")),
        },
    };
    let _ = done_tx.send(());
    let _ = work.await;
    let _ = stop_tx.send(true);
    let _ = election.await;
    result
}

fn uuid_like() -> String {
    format!("{:016x}", rand::random::<u64>())
}
