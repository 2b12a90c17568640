//! NetworkPolicy enforcement on this node: a loop beside the Service sync, in the same
//! process, that watches NetworkPolicies, pods and namespaces and keeps the nftables
//! table `inet rkube-netpol` equal to what they ask (see `render` for its shape).
//!
//! Level-driven like the Service sync: the whole table each time, batched by
//! `min_sync_period`, retried with backoff on failure. What a policy names that does not
//! exist (a named port no pod has, an IPv6 block) matches nothing and is reported once as
//! a Warning event on the policy; it never keeps the other policies' rules from loading.

pub mod model;
pub mod render;

use crate::nft::{apply, NftError};
use futures::{FutureExt, StreamExt};
use rkube_api::core::v1::{Namespace, Pod};
use rkube_api::networking::v1::NetworkPolicy;
use rkube_client::runtime::WatcherConfig;
use rkube_client::{Api, Client, EventType, Informer, Recorder};
use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

/// Where the rules go: `nft`, or a fake in tests.
pub trait PolicyDataplane: Send {
    fn apply(&mut self, script: &str) -> impl Future<Output = Result<(), NftError>> + Send;
}

/// `nft -f -` through the proxy's nft command.
pub struct Nft(pub Vec<String>);

impl PolicyDataplane for Nft {
    async fn apply(&mut self, script: &str) -> Result<(), NftError> {
        apply(&self.0, script).await
    }
}

/// Removes the table (`rkube-proxy --cleanup`).
pub async fn cleanup(nft_command: &[String]) -> Result<(), NftError> {
    apply(nft_command, &render::render_cleanup()).await
}

/// Runs until `shutdown` resolves.
pub async fn run(
    client: Client,
    node: String,
    min_sync_period: Duration,
    mut dataplane: impl PolicyDataplane,
    shutdown: impl Future<Output = ()>,
) {
    let policies = Informer::new(
        Api::<NetworkPolicy>::all(client.clone()),
        WatcherConfig::default(),
    );
    let pods = Informer::new(Api::<Pod>::all(client.clone()), WatcherConfig::default());
    let namespaces = Informer::new(Api::<Namespace>::all(client.clone()), WatcherConfig::default());
    let recorder = Recorder::new(client, "rkube-proxy", &node);
    let mut changes = futures::stream::select(
        futures::stream::select(policies.subscribe().map(|_| ()), pods.subscribe().map(|_| ())),
        namespaces.subscribe().map(|_| ()),
    );
    for started in [policies.start(), pods.start(), namespaces.start()] {
        if let Err(e) = started {
            tracing::error!("NetworkPolicy enforcement cannot start: {e}");
            return;
        }
    }
    let mut shutdown = std::pin::pin!(shutdown.fuse());
    tokio::select! {
        _ = &mut shutdown => return,
        _ = async {
            policies.wait_until_synced().await;
            pods.wait_until_synced().await;
            namespaces.wait_until_synced().await;
        } => {}
    }
    let (policy_store, pod_store, ns_store) = (policies.store(), pods.store(), namespaces.store());
    let mut applied: Option<model::Plan> = None;
    let mut reported: HashSet<(String, String, String)> = HashSet::new();
    let mut pacing = crate::Pacing::new(min_sync_period);
    loop {
        let (plan, problems) = model::plan(&node, &policy_store.list(), &pod_store.list(), &ns_store.list());
        for p in problems {
            let key = (
                p.policy
                    .metadata
                    .as_ref()
                    .map(|m| m.uid.clone())
                    .unwrap_or_default(),
                p.reason.to_string(),
                p.message.clone(),
            );
            if reported.insert(key) {
                tracing::warn!(policy = %rkube_api::Resource::key(p.policy.as_ref()), reason = p.reason, "{}", p.message);
                // beside the sync, never before it: a slow apiserver must not hold the rules
                let recorder = recorder.clone();
                tokio::spawn(async move {
                    if let Err(e) = recorder
                        .publish(p.policy.as_ref(), EventType::Warning, p.reason, &p.message)
                        .await
                    {
                        tracing::debug!("cannot record an event: {e}");
                    }
                });
            }
        }
        if applied.as_ref() != Some(&plan) {
            let started = Instant::now();
            match dataplane.apply(&render::render(&plan)).await {
                Ok(()) => {
                    tracing::debug!(
                        policies = plan.chains.len(),
                        isolated = plan.ingress.len() + plan.egress.len(),
                        took = ?started.elapsed(),
                        "network policies synced"
                    );
                    applied = Some(plan);
                    pacing.succeeded();
                }
                Err(e) => {
                    let next = pacing.failed();
                    tracing::warn!(retry_in = ?next, "network policy sync failed: {e}");
                }
            }
        }
        match pacing.wait(&mut changes, &mut shutdown).await {
            None => break,
            Some(true) => applied = None,
            Some(false) => {}
        }
    }
}
