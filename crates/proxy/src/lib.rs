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
pub mod dns;
pub mod model;
pub mod netpol;
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

/// How a level-driven sync loop paces itself: a failed sync is retried with backoff
/// (500 ms, doubling up to 10 s); after a sync it waits for a change (or the retry) and
/// lets a burst of changes settle until `min_sync_period` has passed since.
pub(crate) struct Pacing {
    min_sync_period: Duration,
    retry: Option<Duration>,
}

impl Pacing {
    pub(crate) fn new(min_sync_period: Duration) -> Self {
        Pacing {
            min_sync_period,
            retry: None,
        }
    }

    pub(crate) fn succeeded(&mut self) {
        self.retry = None;
    }

    /// Records a failure; the delay until the retry.
    pub(crate) fn failed(&mut self) -> Duration {
        let next = self.retry.map_or(Duration::from_millis(500), |d| {
            (d * 2).min(Duration::from_secs(10))
        });
        self.retry = Some(next);
        next
    }

    /// Waits until the next sync is due: None on shutdown, else whether the last sync
    /// failed (and everything must be applied again).
    pub(crate) async fn wait(
        &self,
        changes: &mut (impl futures::Stream<Item = ()> + Unpin),
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Option<bool> {
        let synced_at = Instant::now();
        tokio::select! {
            _ = &mut *shutdown => return None,
            _ = changes.next() => {}
            _ = tokio::time::sleep(self.retry.unwrap_or(Duration::from_secs(3600))) => {}
        }
        tokio::select! {
            _ = &mut *shutdown => return None,
            _ = tokio::time::sleep_until((synced_at + self.min_sync_period).into()) => {}
        }
        while let Some(Some(())) = changes.next().now_or_never() {}
        Some(self.retry.is_some())
    }
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
        if config.mode == Mode::Nftables {
            netpol::cleanup(&config.nft_command)
                .await
                .context("removing the NetworkPolicy table")?;
        }
        if let Some(dns) = &config.dns {
            rkube_dns::cleanup(dns).await;
        }
        tracing::info!("removed everything rkube-proxy installed");
        return Ok(());
    }
    let _health = rkube_daemon::serve_health(config.health_addr).await?;
    let client = Client::for_daemon(&config.apiserver, config.kubeconfig.as_deref())?;
    // NetworkPolicies: their own loop and table beside the Services' (nftables mode)
    let _network_policies = (config.mode == Mode::Nftables && config.network_policy).then(|| {
        AbortOnDrop(tokio::spawn(netpol::run(
            client.clone(),
            config.node_name.clone(),
            config.min_sync_period,
            netpol::Nft(config.nft_command.clone()),
            std::future::pending(),
        )))
    });
    let services = Informer::new(Api::<Service>::all(client.clone()), WatcherConfig::default());
    let endpoints = Informer::new(Api::<Endpoints>::all(client.clone()), WatcherConfig::default());
    let mut changes = futures::stream::select(
        services.subscribe().map(|_| ()),
        endpoints.subscribe().map(|_| ()),
    );
    services.start()?;
    endpoints.start()?;
    let _dns = match config.dns.clone() {
        Some(dns) => Some(dns::start(dns, client, &services, &endpoints).await?),
        None => None,
    };
    let mut shutdown = std::pin::pin!(shutdown.fuse());
    tokio::select! {
        _ = &mut shutdown => return Ok(()),
        _ = async { services.wait_until_synced().await; endpoints.wait_until_synced().await } => {}
    }
    tracing::info!(node = %config.node_name, mode = ?config.mode, "caches synced; programming the dataplane");
    let (svc_store, ep_store) = (services.store(), endpoints.store());
    let mut applied: Option<Vec<ServicePort>> = None;
    let mut ready = false;
    let mut pacing = Pacing::new(config.min_sync_period);
    loop {
        let wanted = model::service_ports(&svc_store.list(), |ns, name| ep_store.get_namespaced(ns, name));
        if applied.as_ref() != Some(&wanted) {
            let started = Instant::now();
            match dataplane.sync(&wanted).await {
                Ok(()) => {
                    tracing::debug!(ports = wanted.len(), took = ?started.elapsed(), "synced");
                    applied = Some(wanted);
                    pacing.succeeded();
                    if !ready {
                        // ready once Service addresses work on this node
                        ready = true;
                        rkube_daemon::ready();
                    }
                }
                Err(e) => {
                    let next = pacing.failed();
                    tracing::warn!(retry_in = ?next, "sync failed: {e}");
                }
            }
        }
        match pacing.wait(&mut changes, &mut shutdown).await {
            None => break,
            Some(true) => applied = None,
            Some(false) => {}
        }
    }
    notify_systemd("STOPPING=1");
    // rules stay: a restarted proxy takes over without a gap
    Ok(())
}
