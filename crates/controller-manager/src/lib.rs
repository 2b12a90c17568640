//! rkube-controller-manager: one process running named reconcile loops,
//! each built on the client crate's controller runner, level-triggered,
//! idempotent and safe to kill at any moment. It talks only to the
//! apiserver; it must not touch containers, nodes' networks or the store.
//!
//! Which loops run is configuration (`--controllers=*,-name`): every loop is
//! registered by name in `CONTROLLERS`.

pub mod config;
pub mod controllers;
pub mod metrics;

pub use config::{Config, Options};
use rkube_client::runtime::{Manager, ManagerParts};
use rkube_client::{Client, Recorder};
pub use rkube_daemon::notify_systemd;
use std::future::Future;

/// What every controller shares.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub informers: rkube_client::SharedInformers,
    pub recorder: Recorder,
}

pub use rkube_client::runtime::Shutdown;

/// A controller: runs until shutdown; an error ends the process.
pub type StartFn = rkube_client::runtime::StartFn<Context>;

/// Every controller, by the name `--controllers` uses.
pub const CONTROLLERS: &[(&str, StartFn)] = controllers::ALL;

/// Which controllers `spec` enables: `*` is all, `name` adds one, `-name`
/// removes one (`*,-horizontal-pod-autoscaler`).
pub fn enabled(spec: &[String]) -> anyhow::Result<Vec<&'static str>> {
    Manager::enabled(CONTROLLERS, spec)
}

/// The Lease replicas compete for (`--leader-elect`), as Kubernetes names it.
pub const LEASE_NAME: &str = "kube-controller-manager";

/// Runs the enabled controllers until `shutdown` resolves: what `main` calls. With leader
/// election (the default) they run only while this process holds the Lease, and losing it
/// is an error, so the process exits and is restarted as a standby.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let connection = (config.apiserver.as_str(), config.kubeconfig.as_deref());
    let manager = Manager::new(
        "controller-manager",
        CONTROLLERS,
        &config.controllers,
        connection,
        config.health_addr,
    )
    .leader_election(config.leader_election.clone());
    let context = |p: ManagerParts| Context {
        client: p.client,
        informers: p.informers,
        recorder: p.recorder,
        config,
    };
    manager.run(context, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_selection_follows_kubernetes_syntax() {
        let all = enabled(&["*".into()]).unwrap();
        assert_eq!(all.len(), CONTROLLERS.len());
        if let Some(first) = all.first() {
            let without = enabled(&[format!("*,-{first}")]).unwrap();
            assert!(!without.contains(first));
            assert_eq!(enabled(&[first.to_string()]).unwrap(), vec![*first]);
        }
        let err = enabled(&["nope".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown controller \"nope\""), "{err}");
    }
}
