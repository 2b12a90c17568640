//! rkube's cluster DNS: answers the cluster domain (`cluster.local`) from
//! informer caches of Services, Endpoints and Pods, and forwards every other
//! name to the node's own resolvers. It is a library: rkube-proxy serves it
//! on every node (node-local, like Kubernetes' NodeLocal DNSCache), on a
//! link-local address of a dummy interface in the node's network namespace,
//! sharing the proxy's Service and Endpoints informers. It only reads the
//! apiserver; it owns the dummy interface it adds and nothing else.
//!
//! `zone` is the pure part (objects to names, names to answers); `server`
//! puts it on the wire with hickory-server (UDP and TCP, truncation).

pub mod client;
pub mod server;
pub mod zone;

use futures::StreamExt;
/// The DNS wire format (hickory-proto), for clients of this server (tests, the bench).
pub use hickory_server::proto;
use rkube_api::core::v1::{Endpoints, Pod, Service};
use rkube_client::Informer;
use server::{ClusterDns, SharedZone};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use zone::Zone;

/// Kubernetes' node-local DNS address: link-local, so it never collides with
/// a pod or Service network and is never routed off the node.
pub const DEFAULT_ADDRESS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 20, 10));
pub const DEFAULT_DOMAIN: &str = "cluster.local";
/// The dummy interface that holds the address.
pub const DEFAULT_INTERFACE: &str = "rkube-dns";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the cluster DNS to {addr}: {source} (another DNS server there? choose another --dns-address, or none)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("adding {address} to interface {interface}: {reason}")]
    Interface {
        interface: String,
        address: IpAddr,
        reason: String,
    },
}

/// How the DNS server runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where it listens, UDP and TCP (`169.254.20.10:53`).
    pub listen: SocketAddr,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// The resolvers other names go to; empty: the nameservers of `resolv_conf`.
    pub upstreams: Vec<SocketAddr>,
    /// The node's resolver configuration (`/etc/resolv.conf`).
    pub resolv_conf: PathBuf,
    /// Put `listen`'s address on this dummy interface first (created if
    /// missing); `None` when the address is already the node's.
    pub interface: Option<String>,
    /// Program and leading arguments that run `ip`.
    pub ip_command: Vec<String>,
    /// TTL of the cluster's answers, also their negative TTL (Kubernetes: 5s).
    pub ttl: u32,
}

impl Config {
    /// Node-local defaults: `169.254.20.10:53` on `rkube-dns`, `cluster.local`,
    /// the node's resolv.conf.
    pub fn new() -> Config {
        Config {
            listen: SocketAddr::new(DEFAULT_ADDRESS, 53),
            domain: DEFAULT_DOMAIN.into(),
            upstreams: Vec::new(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            interface: Some(DEFAULT_INTERFACE.into()),
            ip_command: vec!["ip".into()],
            ttl: 5,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

/// The nameservers of a resolv.conf, on port 53, without `exclude` (the
/// cluster DNS itself, which would forward to itself forever).
pub fn nameservers(resolv_conf: &str, exclude: IpAddr) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|s| s.split('%').next()?.parse::<IpAddr>().ok())
        .filter(|ip| *ip != exclude)
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// A running DNS server; dropping it stops it.
pub struct DnsServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The label of the address on `lo` on kernels without the dummy driver.
pub const LOOPBACK_LABEL: &str = "lo:rkdns";

/// Runs `ip ARGS`; stderr is the error.
async fn ip(config: &Config, args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new(&config.ip_command[0])
        .args(&config.ip_command[1..])
        .args(args)
        .output()
        .await
        .map_err(|e| format!("running {:?}: {e}", config.ip_command))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Adds the listen address to the dummy interface, creating it; kernels
/// without the dummy driver get it on `lo`, labelled [`LOOPBACK_LABEL`] (as
/// the userspace proxy does with ClusterIPs). Idempotent.
async fn ensure_interface(config: &Config, interface: &str) -> Result<(), Error> {
    let address = config.listen.ip();
    let err = |reason: String| Error::Interface {
        interface: interface.into(),
        address,
        reason,
    };
    let cidr = format!("{address}/{}", if address.is_ipv4() { 32 } else { 128 });
    let dev = match ip(config, &["link", "add", interface, "type", "dummy"]).await {
        Ok(()) => interface,
        Err(e) if e.contains("File exists") => interface,
        Err(e) if e.contains("Unknown device type") => {
            tracing::info!("no dummy interface driver in this kernel; the cluster DNS address goes on lo");
            "lo"
        }
        Err(e) => return Err(err(e)),
    };
    let mut add = vec!["addr", "replace", &cidr, "dev", dev];
    if dev == "lo" {
        add.extend(["label", LOOPBACK_LABEL]);
    }
    ip(config, &add).await.map_err(err)?;
    ip(config, &["link", "set", dev, "up"]).await.map_err(err)
}

/// Removes the dummy interface, or the address from `lo` (`rkube-proxy --cleanup`).
pub async fn cleanup(config: &Config) {
    if let Some(interface) = &config.interface {
        let _ = ip(config, &["link", "del", interface]).await;
        let cidr = format!("{}/32", config.listen.ip());
        let _ = ip(
            config,
            &["addr", "del", &cidr, "dev", "lo", "label", LOOPBACK_LABEL],
        )
        .await;
    }
}

/// Binds the server (after adding its address to the node), then serves
/// until the returned handle is dropped. Cluster names are answered once
/// the informers (started by the caller) have synced; until then SERVFAIL.
/// Each cache change rebuilds the zone at once, so answers follow a Service
/// within milliseconds of the watch event.
pub async fn start(
    config: Config,
    services: Informer<Service>,
    endpoints: Informer<Endpoints>,
    pods: Informer<Pod>,
) -> Result<DnsServer, Error> {
    if let Some(interface) = &config.interface {
        ensure_interface(&config, interface).await?;
    }
    let mut upstreams = config.upstreams.clone();
    if upstreams.is_empty() {
        let text = std::fs::read_to_string(&config.resolv_conf).unwrap_or_default();
        upstreams = nameservers(&text, config.listen.ip());
        if upstreams.is_empty() {
            // cluster names still work; the rest fails until configured
            tracing::warn!(
                "{} names no nameserver: names outside {} will fail (give --dns-upstream)",
                config.resolv_conf.display(),
                config.domain
            );
        }
    }
    let bind = |e| Error::Bind {
        addr: config.listen,
        source: e,
    };
    let first = udp_socket(config.listen).map_err(bind)?;
    let addr = first.local_addr().map_err(bind)?;
    // TCP on the same port (also when the caller asked for port 0), without
    // SO_REUSEPORT: a second server on this address fails here
    let tcp = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
    let mut sockets = vec![first];
    for _ in 1..tokio::runtime::Handle::current().metrics().num_workers() {
        sockets.push(udp_socket(addr).map_err(bind)?);
    }
    let (zone, zone_changes): (_, SharedZone) = tokio::sync::watch::channel(None);
    let handler = Arc::new(ClusterDns {
        zone: zone_changes,
        upstreams: upstreams.clone(),
        ttl: config.ttl,
    });
    let mut server = hickory_server::Server::new(ClusterDns::clone(&handler));
    server.register_listener(tcp, Duration::from_secs(10), 64 * 1024);
    tracing::info!(%addr, domain = %config.domain, ?upstreams, udp_sockets = sockets.len(), "cluster DNS listening");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut udp = tokio::task::JoinSet::new();
    for socket in sockets {
        udp.spawn(server::serve_udp(Arc::new(socket), handler.clone()));
    }
    tokio::spawn(async move {
        let rebuild = keep_zone(config.domain, zone, services, endpoints, pods);
        tokio::select! {
            _ = stopped => {}
            _ = rebuild => {}
        }
        udp.abort_all();
        let _ = server.shutdown_gracefully().await;
    });
    Ok(DnsServer {
        addr,
        stop: Some(stop),
    })
}

/// A UDP socket on `addr` that shares its port with the server's others
/// (SO_REUSEPORT; Linux lets only the same user join).
fn udp_socket(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// Rebuilds the zone on every change of the three caches.
async fn keep_zone(
    domain: String,
    zone: tokio::sync::watch::Sender<Option<Arc<Zone>>>,
    services: Informer<Service>,
    endpoints: Informer<Endpoints>,
    pods: Informer<Pod>,
) {
    let mut changes = futures::stream::select(
        futures::stream::select(
            services.subscribe().map(|_| ()),
            endpoints.subscribe().map(|_| ()),
        ),
        pods.subscribe().map(|_| ()),
    );
    services.wait_until_synced().await;
    endpoints.wait_until_synced().await;
    pods.wait_until_synced().await;
    let (svc, eps, pod) = (services.store(), endpoints.store(), pods.store());
    loop {
        let started = Instant::now();
        let z = Zone::build(
            &domain,
            &svc.list(),
            |ns, n| eps.get_namespaced(ns, n),
            &pod.list(),
        );
        zone.send_replace(Some(Arc::new(z)));
        tracing::debug!(took = ?started.elapsed(), "cluster DNS zone rebuilt");
        if changes.next().await.is_none() {
            return;
        }
        // a burst of changes makes one rebuild
        while let Some(Some(())) = futures::FutureExt::now_or_never(changes.next()) {}
    }
}
