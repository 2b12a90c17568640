//! The controllers, one module each, registered by name in `ALL`.

use crate::cloud::CloudError;
use crate::{Context, Shutdown, StartFn};
use rkube_api::core::v1::Node;
use rkube_client::{Action, Controller, Store};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub mod node;
pub mod node_lifecycle;
pub mod route;
pub mod service;
pub mod volume;

/// Every controller by the name `--controllers` uses. Add a loop by adding
/// its module and one line here.
pub const ALL: &[(&str, StartFn)] = &[
    (node::NAME, node::start),
    (node_lifecycle::NAME, node_lifecycle::start),
    (service::NAME, service::start),
    (route::NAME, route::start),
    (volume::NAME, volume::start),
];

/// Why a reconcile failed: the apiserver or the provider.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] rkube_client::Error),
    #[error(transparent)]
    Cloud(#[from] CloudError),
}

/// Ready's status: "True", "False", "Unknown", or "" when never reported.
pub fn ready_status(node: &rkube_api::core::v1::Node) -> &str {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == "Ready"))
        .map(|c| c.status.as_str())
        .unwrap_or("")
}

/// Waits for shutdown, logging why a controller has nothing to do.
pub(crate) async fn idle(name: &str, why: &str, shutdown: crate::Shutdown) -> anyhow::Result<()> {
    tracing::warn!(controller = name, "not running: {why}");
    shutdown.wait().await;
    Ok(())
}

/// What the two node loops (cloud-node, cloud-node-lifecycle) hold: the manager's context
/// and the Node cache.
pub(crate) struct NodeState {
    pub ctx: Arc<Context>,
    pub nodes: Store<Node>,
}

/// Runs a node loop: `reconcile` for every Node, when the provider has instances (both
/// node loops ask it about them; without, the loop idles). `resync` re-reconciles every
/// node that often (zero: only on changes).
pub(crate) async fn run_node_loop<R, Fut>(
    name: &'static str,
    ctx: Arc<Context>,
    resync: Duration,
    reconcile: R,
    shutdown: Shutdown,
) -> anyhow::Result<()>
where
    R: Fn(String, Arc<NodeState>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    if ctx.cloud.instances().is_none() {
        return idle(name, "the provider has no instances", shutdown).await;
    }
    let nodes = ctx.informers.get::<Node>();
    let state = Arc::new(NodeState {
        ctx: ctx.clone(),
        nodes: nodes.store(),
    });
    Controller::new(name, state, reconcile)
        .primary(&nodes)
        .resync(resync)
        .workers(ctx.config.workers)
        .run(shutdown.wait())
        .await;
    Ok(())
}
