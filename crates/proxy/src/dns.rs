//! The cluster DNS (crate `rkube-dns`) served by the proxy on every node: it
//! shares the proxy's Service and Endpoints informers and adds one of Pods.
//! Node-local, so a pod's query never leaves its node and no Service or
//! extra daemon stands between pods and their resolver.

use rkube_api::core::v1::{Endpoints, Pod, Service};
use rkube_client::runtime::WatcherConfig;
use rkube_client::{Api, Client, Informer};

/// Starts the DNS server; it stops when the handle is dropped.
pub async fn start(
    config: rkube_dns::Config,
    client: Client,
    services: &Informer<Service>,
    endpoints: &Informer<Endpoints>,
) -> anyhow::Result<rkube_dns::DnsServer> {
    let pods = Informer::new(Api::<Pod>::all(client), WatcherConfig::default());
    pods.start()?;
    Ok(rkube_dns::start(config, services.clone(), endpoints.clone(), pods).await?)
}
