//! Hollow nodes for the control-plane suites: Node objects with capacity and a Ready
//! condition, plus the `kube-node-lease` Lease a kubelet would keep renewing, and a task
//! that renews those Leases every 10 s as kubelets do. Without the renewals the
//! controller-manager's node-lifecycle loop would, after its 40 s grace period, mark every
//! node unreachable and start writing to every pod, which is not what these suites measure.

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use rkube_api::coordination::v1::Lease;
use rkube_api::core::v1::Node;
use rkube_client::{Api, Client};
use std::time::Duration;

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How often a kubelet renews its Lease (Kubernetes' default).
const RENEW_EVERY: Duration = Duration::from_secs(10);

pub fn name(i: usize) -> String {
    format!("hollow-{i:04}")
}

fn node(i: usize) -> anyhow::Result<(Node, Node)> {
    let name = name(i);
    let now = rkube_api::time::now();
    let object: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
    }))
    .context("building a hollow Node")?;
    let resources = serde_json::json!({"cpu": "4", "memory": "32Gi", "pods": "110"});
    let status: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
        },
    }))
    .context("building a hollow Node's status")?;
    Ok((object, status))
}

fn lease(name: &str) -> anyhow::Result<Lease> {
    let now = rkube_api::time::now();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "acquireTime": now, "renewTime": now},
    }))
    .context("building a hollow node's Lease")
}

/// Creates `count` Ready nodes `hollow-0000`... with 4 cpu, 32 GiB and 110 pods each, and
/// their Leases, `in_flight` requests at a time.
pub async fn create(client: &Client, count: usize, in_flight: usize) -> anyhow::Result<()> {
    create_range(client, 0..count, in_flight).await
}

/// Creates nodes `range` as [`create`] does.
pub async fn create_range(
    client: &Client,
    range: std::ops::Range<usize>,
    in_flight: usize,
) -> anyhow::Result<()> {
    futures::stream::iter(range)
        .map(|i| {
            let nodes: Api<Node> = Api::all(client.clone());
            let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
            async move {
                let (object, status) = node(i)?;
                let created = nodes
                    .create(&object)
                    .await
                    .with_context(|| format!("creating node {}", name(i)))?;
                let mut status = status;
                status.metadata = created.metadata;
                match nodes.update_status(&status).await {
                    Ok(_) => {}
                    // A controller-manager already running (node-ipam) wrote the new node
                    // first: set the status on what it wrote.
                    Err(e) if e.is_conflict() => {
                        let wanted = status.status.clone();
                        nodes
                            .replace_status_with(&name(i), |mut n| {
                                n.status = wanted.clone();
                                n
                            })
                            .await
                            .with_context(|| format!("setting node {} Ready", name(i)))?;
                    }
                    Err(e) => {
                        return Err(anyhow::Error::new(e).context(format!("setting node {} Ready", name(i))))
                    }
                }
                leases
                    .create(&lease(&name(i))?)
                    .await
                    .with_context(|| format!("creating the Lease of node {}", name(i)))?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(in_flight.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Renews the Leases of nodes `0..count` every 10 s until the task is aborted. A failed
/// renewal is retried at the next round (the grace period is four rounds).
pub fn heartbeat(client: Client, count: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            let now = rkube_api::time::now();
            futures::stream::iter(0..count)
                .for_each_concurrent(16, |i| {
                    let (leases, now) = (leases.clone(), now.clone());
                    async move {
                        let _ = leases
                            .replace_with(&name(i), |mut l| {
                                if let Some(s) = l.spec.as_mut() {
                                    s.renew_time = now.clone();
                                }
                                l
                            })
                            .await;
                    }
                })
                .await;
        }
    })
}
