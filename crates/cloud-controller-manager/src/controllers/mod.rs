//! The controllers, one module each, registered by name in `ALL`.

use crate::cloud::CloudError;
use crate::StartFn;

pub mod node;
pub mod node_lifecycle;
pub mod route;
pub mod service;

/// Every controller by the name `--controllers` uses. Add a loop by adding
/// its module and one line here.
pub const ALL: &[(&str, StartFn)] = &[
    (node::NAME, node::start),
    (node_lifecycle::NAME, node_lifecycle::start),
    (service::NAME, service::start),
    (route::NAME, route::start),
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
