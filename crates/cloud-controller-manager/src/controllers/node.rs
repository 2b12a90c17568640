//! The cloud-node controller (Kubernetes' CloudNodeController): a kubelet
//! started with `--cloud-provider=external` registers its Node with the
//! taint `node.cloudprovider.kubernetes.io/uninitialized:NoSchedule`, so
//! nothing is scheduled there before the cloud has described it. This loop
//! fills `spec.providerID`, `status.addresses` and the instance-type, zone
//! and region labels from the provider, then removes the taint. Initialised
//! nodes get their addresses and labels refreshed every
//! `--node-status-update-frequency`.

use super::{Error, NodeState};
use crate::cloud::{CloudError, InstanceMetadata};
use crate::{Context, Shutdown};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::core::v1::{Node, NodeAddress};
use rkube_api::Resource;
use rkube_client::{Action, Api, EventType};
use std::sync::Arc;

pub const NAME: &str = "cloud-node";
pub const TAINT_UNINITIALIZED: &str = "node.cloudprovider.kubernetes.io/uninitialized";
pub const LABEL_INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    let resync = ctx.config.node_status_update_frequency;
    super::run_node_loop(NAME, ctx, resync, reconcile, shutdown).boxed()
}

pub fn is_uninitialized(node: &Node) -> bool {
    node.spec
        .as_ref()
        .is_some_and(|s| s.taints.iter().any(|t| t.key == TAINT_UNINITIALIZED))
}

/// The addresses to report: the provider's, plus the kubelet's Hostname
/// when the provider names none (as Kubernetes keeps it).
pub fn desired_addresses(node: &Node, meta: &InstanceMetadata) -> Vec<NodeAddress> {
    let mut addresses = meta.addresses.clone();
    if !addresses.iter().any(|a| a.r#type == "Hostname") {
        if let Some(h) = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.iter().find(|a| a.r#type == "Hostname"))
        {
            addresses.push(h.clone());
        }
    }
    addresses
}

/// `node` with the provider's description applied: providerID (never
/// overwritten once set), the instance-type/zone/region labels the provider
/// knows, and without the uninitialized taint.
pub fn initialized(mut node: Node, meta: &InstanceMetadata) -> Node {
    let spec = node.spec.get_or_insert_with(Default::default);
    if spec.provider_id.is_empty() {
        spec.provider_id = meta.provider_id.clone();
    }
    spec.taints.retain(|t| t.key != TAINT_UNINITIALIZED);
    let labels = &mut node.metadata.get_or_insert_with(Default::default).labels;
    for (key, value) in [
        (LABEL_INSTANCE_TYPE, &meta.instance_type),
        (LABEL_ZONE, &meta.zone),
        (LABEL_REGION, &meta.region),
    ] {
        if !value.is_empty() {
            labels.insert(key.to_string(), value.clone());
        }
    }
    node
}

async fn reconcile(key: String, state: Arc<NodeState>) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let Some(node) = state.nodes.get(&key) else {
        return Ok(Action::await_change());
    };
    if !node.metadata().deletion_timestamp.is_empty() {
        return Ok(Action::await_change());
    }
    let Some(instances) = ctx.cloud.instances() else {
        return Ok(Action::await_change());
    };
    let uninitialized = is_uninitialized(&node);
    let meta = match instances.instance_metadata(&node).await {
        Ok(m) => m,
        Err(CloudError::InstanceNotFound(_)) if !uninitialized => {
            // The lifecycle controller decides what happens to it.
            return Ok(Action::await_change());
        }
        Err(e) => {
            if uninitialized {
                crate::record(
                    ctx,
                    &*node,
                    EventType::Warning,
                    "FailedToInitialize",
                    &format!("Cannot initialize node {key} from the cloud provider: {e}"),
                )
                .await;
            }
            return Err(e.into());
        }
    };
    let api = Api::<Node>::all(ctx.client.clone());
    let addresses = desired_addresses(&node, &meta);
    let current = node
        .status
        .as_ref()
        .map(|s| s.addresses.clone())
        .unwrap_or_default();
    if !addresses.is_empty() && addresses != current {
        api.replace_status_with(&key, |mut n| {
            n.status.get_or_insert_with(Default::default).addresses = addresses.clone();
            n
        })
        .await?;
    }
    if initialized((*node).clone(), &meta) != *node {
        api.replace_with(&key, |n| initialized(n, &meta)).await?;
        if uninitialized {
            tracing::info!(node = %key, provider_id = %meta.provider_id, "node initialized");
            crate::record(
                ctx,
                &*node,
                EventType::Normal,
                "Synced",
                &format!("Node {key} initialized from instance {}", meta.provider_id),
            )
            .await;
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::core::v1::{NodeSpec, NodeStatus, Taint};

    fn meta() -> InstanceMetadata {
        InstanceMetadata {
            provider_id: "local://a".into(),
            instance_type: "pi4".into(),
            addresses: vec![NodeAddress {
                r#type: "InternalIP".into(),
                address: "10.0.0.2".into(),
            }],
            zone: "shelf-1".into(),
            region: "home".into(),
        }
    }

    #[test]
    fn initialising_sets_what_the_cloud_knows_and_lifts_only_its_taint() {
        let mut node = Node {
            spec: Some(NodeSpec {
                taints: vec![
                    Taint {
                        key: TAINT_UNINITIALIZED.into(),
                        value: "true".into(),
                        effect: "NoSchedule".into(),
                        ..Default::default()
                    },
                    Taint {
                        key: "dedicated".into(),
                        effect: "NoSchedule".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: vec![NodeAddress {
                    r#type: "Hostname".into(),
                    address: "a.lan".into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        node.metadata_mut().name = "a".into();
        assert!(is_uninitialized(&node));
        let done = initialized(node.clone(), &meta());
        assert!(!is_uninitialized(&done));
        let spec = done.spec.as_ref().unwrap();
        assert_eq!(spec.provider_id, "local://a");
        assert_eq!(spec.taints.len(), 1, "the user's taint stays");
        let labels = &done.metadata().labels;
        assert_eq!(labels[LABEL_INSTANCE_TYPE], "pi4");
        assert_eq!(labels[LABEL_ZONE], "shelf-1");
        assert_eq!(labels[LABEL_REGION], "home");
        assert_eq!(initialized(done.clone(), &meta()), done, "idempotent");

        let addresses = desired_addresses(&node, &meta());
        assert_eq!(
            addresses.iter().map(|a| a.address.as_str()).collect::<Vec<_>>(),
            ["10.0.0.2", "a.lan"]
        );

        // A providerID already set is never replaced.
        let mut other = done.clone();
        other.spec.as_mut().unwrap().provider_id = "local://elsewhere".into();
        assert_eq!(
            initialized(other, &meta()).spec.unwrap().provider_id,
            "local://elsewhere"
        );
    }
}
