//! The cloud-node-lifecycle controller (Kubernetes' CloudNodeLifecycleController):
//! every `--node-monitor-period` it looks at each node whose Ready condition
//! is False or Unknown (not one that never reported).
//! A node whose instance is shut down gets the taint
//! `node.cloudprovider.kubernetes.io/shutdown:NoSchedule` (removed once it
//! is Ready again); a node whose instance no longer exists is deleted, and
//! so are the pods bound to it (force, since no kubelet is left to confirm),
//! so their controllers recreate them on other nodes. Kubernetes leaves
//! that last step to the pod garbage collector of the controller-manager,
//! which rkube does not have.

use super::{ready_status, Error, NodeState};
use crate::{Context, Shutdown};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::core::v1::{Node, Pod, Taint};
use rkube_api::Resource;
use rkube_client::{Action, Api, DeleteParams, EventType, ListParams, Preconditions};
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "cloud-node-lifecycle";
pub const TAINT_SHUTDOWN: &str = "node.cloudprovider.kubernetes.io/shutdown";

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    super::run_node_loop(NAME, ctx, Duration::ZERO, reconcile, shutdown).boxed()
}

pub fn has_shutdown_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .is_some_and(|s| s.taints.iter().any(|t| t.key == TAINT_SHUTDOWN))
}

/// `node` with the shutdown taint added or removed.
pub fn with_shutdown_taint(mut node: Node, on: bool) -> Node {
    let taints = &mut node.spec.get_or_insert_with(Default::default).taints;
    let there = taints.iter().any(|t| t.key == TAINT_SHUTDOWN);
    if on && !there {
        taints.push(Taint {
            key: TAINT_SHUTDOWN.into(),
            value: String::new(),
            effect: "NoSchedule".into(),
            time_added: rkube_api::time::now(),
        });
    } else if !on {
        taints.retain(|t| t.key != TAINT_SHUTDOWN);
    }
    node
}

async fn reconcile(key: String, state: Arc<NodeState>) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let period = ctx.config.node_monitor_period;
    let Some(node) = state.nodes.get(&key) else {
        return Ok(Action::await_change());
    };
    let Some(instances) = ctx.cloud.instances() else {
        return Ok(Action::await_change());
    };
    let api = Api::<Node>::all(ctx.client.clone());
    // A node that never reported Ready is still coming up (Kubernetes
    // skips it too).
    if ready_status(&node).is_empty() {
        return Ok(Action::requeue(period));
    }
    if ready_status(&node) == "True" {
        if has_shutdown_taint(&node) {
            api.replace_with(&key, |n| with_shutdown_taint(n, false)).await?;
        }
        return Ok(Action::requeue(period));
    }
    if instances.instance_shutdown(&node).await? {
        if !has_shutdown_taint(&node) {
            api.replace_with(&key, |n| with_shutdown_taint(n, true)).await?;
            tracing::info!(node = %key, "instance is shut down; node tainted {TAINT_SHUTDOWN}");
        }
        return Ok(Action::requeue(period));
    }
    if instances.instance_exists(&node).await? {
        return Ok(Action::requeue(period));
    }
    tracing::info!(node = %key, "instance no longer exists; deleting the node");
    crate::record(
        ctx,
        &*node,
        EventType::Normal,
        "DeletingNode",
        &format!("Deleting node {key} because it does not exist in the cloud provider"),
    )
    .await;
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(node.metadata().uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&key, &dp).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() || e.is_conflict() => {}
        Err(e) => return Err(e.into()),
    }
    delete_pods_of(ctx, &key).await?;
    Ok(Action::await_change())
}

/// Force-deletes the pods bound to `node`, which no kubelet will stop.
async fn delete_pods_of(ctx: &Context, node: &str) -> Result<(), Error> {
    let pods = Api::<Pod>::all(ctx.client.clone())
        .list_all(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    for pod in pods.items {
        let api = Api::<Pod>::namespaced(ctx.client.clone(), pod.namespace());
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(pod.metadata().uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        }
        .grace_period(0);
        match api.delete(pod.name(), &dp).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{}/{}", pod.namespace(), pod.name()), node, "deleted with its node")
            }
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shutdown_taint_is_added_once_and_removed() {
        let node = Node::default();
        let tainted = with_shutdown_taint(node, true);
        assert!(has_shutdown_taint(&tainted));
        let again = with_shutdown_taint(tainted.clone(), true);
        assert_eq!(again.spec.as_ref().unwrap().taints.len(), 1);
        assert_eq!(again.spec.as_ref().unwrap().taints[0].effect, "NoSchedule");
        assert!(!has_shutdown_taint(&with_shutdown_taint(again, false)));
    }
}
