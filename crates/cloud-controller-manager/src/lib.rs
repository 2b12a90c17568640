//! rkube-cloud-controller-manager: where the cluster meets the machines it
//! runs on. One process running named reconcile loops (Kubernetes'
//! cloud-controller-manager) behind the [`cloud::CloudProvider`] trait:
//! cloud-node initialises nodes from their instance (provider ID,
//! addresses, instance type, zone, region) and lifts the
//! `node.cloudprovider.kubernetes.io/uninitialized` taint;
//! cloud-node-lifecycle deletes NotReady nodes whose instance is gone and
//! taints shut-down ones; service gives `type: LoadBalancer` Services an
//! address; route programs a route to each node's pod CIDR.
//!
//! It talks only to the apiserver and to its provider; it must not touch
//! containers or the store, and what it does to the host (routes, with the
//! `local` provider) stays inside what the provider owns and can list.
//! Which loops run is configuration (`--controllers=*,-name`): every loop
//! is registered by name in `CONTROLLERS`.

pub mod cloud;
pub mod config;
pub mod controllers;
pub mod fake;
pub mod providers;

pub use config::{Config, Options};
use rkube_client::runtime::{Manager, ManagerParts};
use rkube_client::{Client, Recorder};
use std::future::Future;
use std::sync::Arc;

/// What every controller shares.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub informers: rkube_client::SharedInformers,
    pub recorder: Recorder,
    pub cloud: Arc<dyn cloud::CloudProvider>,
}

pub use rkube_client::runtime::Shutdown;

/// A controller: runs until shutdown; an error ends the process.
pub type StartFn = rkube_client::runtime::StartFn<Context>;

/// Every controller, by the name `--controllers` uses.
pub const CONTROLLERS: &[(&str, StartFn)] = controllers::ALL;

/// Which controllers `spec` enables: `*` is all, `name` adds one, `-name`
/// removes one (`*,-route`).
pub fn enabled(spec: &[String]) -> anyhow::Result<Vec<&'static str>> {
    Manager::enabled(CONTROLLERS, spec)
}

/// The Lease replicas compete for (`--leader-elect`), as Kubernetes names it.
pub const LEASE_NAME: &str = "cloud-controller-manager";

/// Runs the enabled controllers until `shutdown` resolves: what `main` calls. With leader
/// election (the default) they run only while this process holds the Lease, and losing it
/// is an error, so the process exits and is restarted as a standby.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    config.validate()?;
    let cloud = match &config.provider {
        Some(p) => p.clone(),
        None => providers::build(&config)?,
    };
    let connection = (config.apiserver.as_str(), config.kubeconfig.as_deref());
    let manager = Manager::new(
        "cloud-controller-manager",
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
        cloud,
    };
    manager.run(context, shutdown).await
}

/// Events are advisory: a failure is logged, never fails the reconcile.
pub(crate) async fn record<K: rkube_api::Resource>(
    ctx: &Context,
    obj: &K,
    kind: rkube_client::EventType,
    reason: &str,
    message: &str,
) {
    if let Err(e) = ctx.recorder.publish(obj, kind, reason, message).await {
        tracing::warn!(object = obj.name(), reason, error = %e, "cannot record event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_selection_follows_kubernetes_syntax() {
        let all = enabled(&["*".into()]).unwrap();
        assert_eq!(
            all,
            [
                "cloud-node",
                "cloud-node-lifecycle",
                "service",
                "route",
                "volume-provisioner"
            ]
        );
        let without = enabled(&["*,-route".into()]).unwrap();
        assert_eq!(
            without,
            [
                "cloud-node",
                "cloud-node-lifecycle",
                "service",
                "volume-provisioner"
            ]
        );
        assert_eq!(enabled(&["service".into()]).unwrap(), ["service"]);
        let err = enabled(&["nope".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown controller \"nope\""), "{err}");
    }
}
