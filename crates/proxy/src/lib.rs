//! rkube-proxy: makes Service addresses work on one node. It watches
//! Services and Endpoints through the apiserver and programs the node's
//! dataplane: in nftables mode one table `ip rkube`, replaced atomically
//! per sync; in userspace mode a TCP and UDP proxy. It owns nothing else on the
//! node: it must not touch other tables, routes or pod interfaces, and it
//! never writes to the apiserver.
//!
//! Syncs are level-driven (the whole desired state each time), batched by
//! `min_sync_period`, and retried on failure. A restarted proxy does not
//! remove its rules first: the first sync replaces them atomically, so
//! traffic keeps flowing.

pub mod config;
pub mod conntrack;
pub mod model;
pub mod nft;
pub mod userspace;

pub use config::{Config, Mode, Options};
use futures::{FutureExt, StreamExt};
use model::ServicePort;
use rkube_api::core::v1::{Endpoints, Service};
use rkube_client::runtime::WatcherConfig;
use rkube_client::{Api, Client, Informer};
pub use rkube_daemon::notify_systemd;
use std::future::Future;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error(transparent)]
    Userspace(#[from] userspace::UserspaceError),
}

/// The node's packet path, behind which the sync loop does not care how
/// Services are implemented. `sync` gets the complete desired state.
pub trait Dataplane: Send {
    fn sync(&mut self, ports: &[ServicePort]) -> impl Future<Output = Result<(), Error>> + Send;
    /// Removes everything this dataplane installed.
    fn cleanup(&mut self) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Runs until `shutdown` resolves (or, with `cleanup`, removes what an
/// earlier run installed and returns): what `main` calls.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    match config.mode {
        Mode::Nftables => {
            run_with(
                config.clone(),
                nft::NftDataplane::new(config.nft_command, config.conntrack_command),
                shutdown,
            )
            .await
        }
        Mode::Userspace => {
            run_with(
                config.clone(),
                userspace::UserspaceProxy::new(config.ip_command),
                shutdown,
            )
            .await
        }
    }
}

/// The sync loop over any dataplane.
pub async fn run_with<D: Dataplane>(
    config: Config,
    mut dataplane: D,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    if config.cleanup {
        dataplane.cleanup().await.context("cleaning up")?;
        tracing::info!("removed everything rkube-proxy installed");
        return Ok(());
    }
    let _health = rkube_daemon::serve_health(config.health_addr).await?;
    let client = Client::for_daemon(&config.apiserver, config.kubeconfig.as_deref())?;
    let services = Informer::new(Api::<Service>::all(client.clone()), WatcherConfig::default());
    let endpoints = Informer::new(Api::<Endpoints>::all(client), WatcherConfig::default());
    let mut changes = futures::stream::select(
        services.subscribe().map(|_| ()),
        endpoints.subscribe().map(|_| ()),
    );
    services.start()?;
    endpoints.start()?;
    let mut shutdown = std::pin::pin!(shutdown.fuse());
    tokio::select! {
        _ = &mut shutdown => return Ok(()),
        _ = async { services.wait_until_synced().await; endpoints.wait_until_synced().await } => {}
    }
    tracing::info!(node = %config.node_name, mode = ?config.mode, "caches synced; programming the dataplane");
    let (svc_store, ep_store) = (services.store(), endpoints.store());
    let mut applied: Option<Vec<ServicePort>> = None;
    let mut ready = false;
    let mut retry: Option<Duration> = None;
    loop {
        let wanted = model::service_ports(&svc_store.list(), |ns, name| ep_store.get_namespaced(ns, name));
        if applied.as_ref() != Some(&wanted) {
            let started = Instant::now();
            match dataplane.sync(&wanted).await {
                Ok(()) => {
                    tracing::debug!(ports = wanted.len(), took = ?started.elapsed(), "synced");
                    applied = Some(wanted);
                    retry = None;
                    if !ready {
                        // ready once Service addresses work on this node
                        ready = true;
                        rkube_daemon::ready();
                    }
                }
                Err(e) => {
                    let next = retry.map_or(Duration::from_millis(500), |d| {
                        (d * 2).min(Duration::from_secs(10))
                    });
                    tracing::warn!(retry_in = ?next, "sync failed: {e}");
                    retry = Some(next);
                }
            }
        }
        let synced_at = Instant::now();
        // wait for a change (or the retry), then let a burst settle
        tokio::select! {
            _ = &mut shutdown => break,
            _ = changes.next() => {}
            _ = tokio::time::sleep(retry.unwrap_or(Duration::from_secs(3600))) => {}
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep_until((synced_at + config.min_sync_period).into()) => {}
        }
        while let Some(Some(())) = changes.next().now_or_never() {}
        if retry.is_some() {
            applied = None;
        }
    }
    notify_systemd("STOPPING=1");
    // rules stay: a restarted proxy takes over without a gap
    Ok(())
}
