//! The route controller (Kubernetes' RouteController): for every node with
//! a pod CIDR and an InternalIP, a route `podCIDR via InternalIP` exists in
//! the provider; a route the provider lists that belongs to no node (or to
//! a node whose CIDR changed) is deleted. One key, reconciled whenever a
//! node changes and every `--route-reconciliation-period`.

use super::Error;
use crate::cloud::{address_of, Route};
use crate::{Context, Shutdown};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::core::v1::Node;
use rkube_api::Resource;
use rkube_client::{Action, Controller, EventType, Store, WorkQueue};
use std::sync::Arc;

pub const NAME: &str = "route";
const KEY: &str = "routes";

struct State {
    ctx: Arc<Context>,
    nodes: Store<Node>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        if ctx.cloud.routes().is_none() {
            return super::idle(NAME, "the provider offers no routes", shutdown).await;
        }
        let nodes = ctx.informers.get::<Node>();
        let state = Arc::new(State {
            ctx: ctx.clone(),
            nodes: nodes.store(),
        });
        let queue = WorkQueue::new();
        queue.add(KEY);
        let period = ctx.config.route_reconciliation_period;
        Controller::new(NAME, state, reconcile)
            .with_queue(queue)
            .watches(&nodes, |_: &Node| vec![KEY.to_string()])
            .error_policy(move |_, _| Action::requeue(period))
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

fn pod_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = &node.spec else { return vec![] };
    let mut cidrs = spec.pod_cidrs.clone();
    if !spec.pod_cidr.is_empty() && !cidrs.contains(&spec.pod_cidr) {
        cidrs.insert(0, spec.pod_cidr.clone());
    }
    cidrs
}

/// The routes the nodes need.
pub fn desired_routes(nodes: &[Arc<Node>]) -> Vec<Route> {
    let mut out = Vec::new();
    for node in nodes {
        if !node.metadata().deletion_timestamp.is_empty() {
            continue;
        }
        let addresses = node
            .status
            .as_ref()
            .map(|s| s.addresses.clone())
            .unwrap_or_default();
        if address_of(&addresses, "InternalIP").is_none() {
            continue;
        }
        for cidr in pod_cidrs(node) {
            out.push(Route {
                target_node: node.name().to_string(),
                target_node_addresses: addresses.clone(),
                destination_cidr: cidr,
            });
        }
    }
    out
}

/// Whether `existing` already serves `wanted`: same destination and the
/// same node (by name, or by address when the provider cannot name it).
pub fn same_route(existing: &Route, wanted: &Route) -> bool {
    if existing.destination_cidr != wanted.destination_cidr {
        return false;
    }
    let by_name = !existing.target_node.is_empty() && existing.target_node == wanted.target_node;
    let to = address_of(&wanted.target_node_addresses, "InternalIP");
    let by_address = existing
        .target_node_addresses
        .iter()
        .any(|a| Some(a.address.as_str()) == to);
    by_name && (existing.target_node_addresses.is_empty() || by_address)
        || (existing.target_node.is_empty() && by_address)
}

/// What to create and what to delete to go from `existing` to `wanted`.
pub fn plan(existing: &[Route], wanted: &[Route]) -> (Vec<Route>, Vec<Route>) {
    let create = wanted
        .iter()
        .filter(|w| !existing.iter().any(|e| same_route(e, w)))
        .cloned()
        .collect();
    let delete = existing
        .iter()
        .filter(|e| !wanted.iter().any(|w| same_route(e, w)))
        .cloned()
        .collect();
    (create, delete)
}

async fn reconcile(_key: String, state: Arc<State>) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let period = ctx.config.route_reconciliation_period;
    let Some(routes) = ctx.cloud.routes() else {
        return Ok(Action::await_change());
    };
    let cluster = &ctx.config.cluster_name;
    let existing = routes.list_routes(cluster).await?;
    let nodes = state.nodes.list();
    let (create, delete) = plan(&existing, &desired_routes(&nodes));
    let mut failed = None;
    for r in &delete {
        match routes.delete_route(cluster, r).await {
            Ok(()) => tracing::info!(cidr = %r.destination_cidr, node = %r.target_node, "route deleted"),
            Err(e) => {
                tracing::warn!(cidr = %r.destination_cidr, "cannot delete route: {e}");
                failed.get_or_insert(e);
            }
        }
    }
    for r in &create {
        match routes.create_route(cluster, r).await {
            Ok(()) => tracing::info!(cidr = %r.destination_cidr, node = %r.target_node, "route created"),
            Err(e) => {
                if let Some(node) = state.nodes.get(&r.target_node) {
                    crate::record(
                        ctx,
                        &*node,
                        EventType::Warning,
                        "FailedToCreateRoute",
                        &format!(
                            "Could not create route {} for node {}: {e}",
                            r.destination_cidr, r.target_node
                        ),
                    )
                    .await;
                }
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(Action::requeue(period)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, cidr: &str, ip: &str) -> Arc<Node> {
        let mut n = Node {
            spec: Some(NodeSpec {
                pod_cidr: cidr.into(),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: vec![NodeAddress {
                    r#type: "InternalIP".into(),
                    address: ip.into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        n.metadata_mut().name = name.into();
        Arc::new(n)
    }

    fn listed(node: &str, cidr: &str, via: &str) -> Route {
        Route {
            target_node: node.into(),
            target_node_addresses: vec![NodeAddress {
                r#type: "InternalIP".into(),
                address: via.into(),
            }],
            destination_cidr: cidr.into(),
        }
    }

    #[test]
    fn routes_follow_the_nodes_cidrs_and_addresses() {
        let nodes = [
            node("a", "10.244.0.0/24", "10.0.0.2"),
            node("b", "10.244.1.0/24", "10.0.0.3"),
            node("no-cidr", "", "10.0.0.4"),
        ];
        let wanted = desired_routes(&nodes);
        assert_eq!(wanted.len(), 2);
        let existing = [
            listed("a", "10.244.0.0/24", "10.0.0.2"),
            // a node that is gone, and one the provider could not name
            listed("", "10.244.9.0/24", "10.0.0.9"),
            // b moved to another address
            listed("b", "10.244.1.0/24", "10.0.0.30"),
        ];
        let (create, delete) = plan(&existing, &wanted);
        assert_eq!(
            create
                .iter()
                .map(|r| r.destination_cidr.as_str())
                .collect::<Vec<_>>(),
            ["10.244.1.0/24"]
        );
        assert_eq!(
            delete
                .iter()
                .map(|r| r.destination_cidr.as_str())
                .collect::<Vec<_>>(),
            ["10.244.9.0/24", "10.244.1.0/24"]
        );
        // Unnamed but pointing at the right address counts as present.
        let (create, delete) = plan(&[listed("", "10.244.0.0/24", "10.0.0.2")], &wanted[..1]);
        assert!(create.is_empty() && delete.is_empty());
    }
}
