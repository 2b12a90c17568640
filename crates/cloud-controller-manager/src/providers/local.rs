//! `local`: a cloud provider for bare metal and home labs, where the
//! "cloud" is a file the operator keeps.
//!
//! * **Instances** are the `machines` of the cloud-config file (name,
//!   addresses, zone, region, instanceType, `shutdown`). The file is read
//!   again whenever its modification time or size changes (checked on each
//!   use, which the controllers' periods turn into polling), so deleting a
//!   machine there is how an operator retires it. A file that becomes
//!   unreadable or invalid while running is logged and the last good
//!   version kept: a typo must not retire every machine.
//! * **LoadBalancer** addresses come from `loadBalancerPool` (`A-B` or a
//!   CIDR). There is no box in front of the nodes: every node's rkube-proxy
//!   serves the address like a ClusterIP, and the operator's network (a
//!   route, or an address on a router) brings the traffic to a node. An
//!   allocation is stable across restarts: a Service that already shows a
//!   pool address in its status gets that address back.
//! * **Routes** are kernel routes `POD_CIDR via NODE_INTERNAL_IP` in the
//!   network namespace the manager runs in (or `routes.netns`), programmed
//!   by the manager itself over rtnetlink (no `ip` binary needed), tagged
//!   with the route protocol `routes.protocol` (default 240, unused by the
//!   kernel and iproute2's `rt_protos`), so listing sees only the routes
//!   this provider made and never touches anyone else's. Each call opens
//!   its own netlink socket: a socket belongs to the network namespace of
//!   the thread that created it, so one opened at start-up would pin the
//!   namespace the manager happened to start in.

use crate::cloud::{
    CloudError, CloudProvider, CloudResult, InstanceMetadata, Instances, LoadBalancer, Route, Routes,
};
use anyhow::Context as _;
use async_trait::async_trait;
use futures::TryStreamExt as _;
use rkube_api::core::v1::{LoadBalancerIngress, Node, NodeAddress, Service};
use rkube_api::Resource;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::RouteMessageBuilder;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub const NAME: &str = "local";
/// The route protocol number of routes this provider makes.
pub const DEFAULT_ROUTE_PROTOCOL: u8 = 240;
const ADDRESS_TYPES: &[&str] = &[
    "InternalIP",
    "ExternalIP",
    "Hostname",
    "InternalDNS",
    "ExternalDNS",
];

#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Machine {
    pub name: String,
    #[serde(default)]
    pub addresses: Vec<MachineAddress>,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub instance_type: String,
    /// Powered off: its node gets the shutdown taint instead of being
    /// deleted.
    #[serde(default)]
    pub shutdown: bool,
}

#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MachineAddress {
    #[serde(rename = "type")]
    pub kind: String,
    pub address: String,
}

#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSettings {
    /// false: this provider offers no routes (the route controller does
    /// not run), e.g. when the nodes share one L2 segment and an overlay or
    /// the operator routes pod networks.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_protocol")]
    pub protocol: u8,
    /// A routing table other than main.
    #[serde(default)]
    pub table: Option<u32>,
    /// A named network namespace (`ip netns`) to program instead of the
    /// manager's own.
    #[serde(default)]
    pub netns: Option<String>,
}

fn yes() -> bool {
    true
}

fn default_protocol() -> u8 {
    DEFAULT_ROUTE_PROTOCOL
}

impl Default for RouteSettings {
    fn default() -> Self {
        RouteSettings {
            enabled: true,
            protocol: DEFAULT_ROUTE_PROTOCOL,
            table: None,
            netns: None,
        }
    }
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CloudConfigFile {
    #[serde(default)]
    machines: Vec<Machine>,
    #[serde(default)]
    load_balancer_pool: Option<String>,
    #[serde(default)]
    routes: Option<RouteSettings>,
}

/// An inclusive range of IPv4 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl Pool {
    /// `A-B` (inclusive) or `NET/BITS` (without the network and broadcast
    /// addresses, unless /31 or /32).
    pub fn parse(s: &str) -> Result<Pool, String> {
        let s = s.trim();
        if let Some((a, b)) = s.split_once('-') {
            let first: Ipv4Addr = a
                .trim()
                .parse()
                .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
            let last: Ipv4Addr = b
                .trim()
                .parse()
                .map_err(|_| format!("{b:?} is not an IPv4 address"))?;
            if first > last {
                return Err(format!("{s:?}: the range ends before it starts"));
            }
            return Ok(Pool { first, last });
        }
        if let Some((net, bits)) = s.split_once('/') {
            let net: Ipv4Addr = net
                .parse()
                .map_err(|_| format!("{net:?} is not an IPv4 address"))?;
            let bits: u32 = bits
                .parse()
                .ok()
                .filter(|b| *b <= 32)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0-32"))?;
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            let base = u32::from(net) & mask;
            let top = base | !mask;
            let (first, last) = if bits >= 31 {
                (base, top)
            } else {
                (base + 1, top - 1)
            };
            return Ok(Pool {
                first: first.into(),
                last: last.into(),
            });
        }
        Err(format!(
            "{s:?} is neither a range (192.0.2.100-192.0.2.120) nor a CIDR (192.0.2.96/28)"
        ))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.first <= ip && ip <= self.last
    }

    pub fn size(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }

    fn iter(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

/// The cloud-config file, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudConfig {
    pub machines: Vec<Machine>,
    pub pool: Option<Pool>,
    pub routes: RouteSettings,
}

impl CloudConfig {
    /// Parses and checks the file's text; errors name `path` and the field.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<CloudConfig> {
        let shown = path.display();
        let file: CloudConfigFile =
            serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("cloud-config {shown}: {e}"))?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, m) in file.machines.iter().enumerate() {
            if m.name.is_empty() {
                anyhow::bail!("cloud-config {shown}: machines[{i}].name: must not be empty");
            }
            if !seen.insert(m.name.as_str()) {
                anyhow::bail!(
                    "cloud-config {shown}: machines[{i}].name: {:?} is listed twice",
                    m.name
                );
            }
            for (j, a) in m.addresses.iter().enumerate() {
                if !ADDRESS_TYPES.contains(&a.kind.as_str()) {
                    anyhow::bail!(
                        "cloud-config {shown}: machines[{i}].addresses[{j}].type: {:?} is not one of {}",
                        a.kind,
                        ADDRESS_TYPES.join(", ")
                    );
                }
                if a.kind.ends_with("IP") && a.address.parse::<IpAddr>().is_err() {
                    anyhow::bail!(
                        "cloud-config {shown}: machines[{i}].addresses[{j}].address: {:?} is not an IP address",
                        a.address
                    );
                }
            }
        }
        let pool = match &file.load_balancer_pool {
            None => None,
            Some(p) => Some(
                Pool::parse(p).map_err(|e| anyhow::anyhow!("cloud-config {shown}: loadBalancerPool: {e}"))?,
            ),
        };
        Ok(CloudConfig {
            machines: file.machines,
            pool,
            routes: file.routes.unwrap_or_default(),
        })
    }

    pub fn machine(&self, name: &str) -> Option<&Machine> {
        self.machines.iter().find(|m| m.name == name)
    }
}

/// What identifies a version of the file.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

struct Loaded {
    config: Arc<CloudConfig>,
    stamp: Stamp,
}

pub struct LocalCloud {
    path: PathBuf,
    loaded: Mutex<Loaded>,
    /// Load balancer name → its address.
    allocations: Mutex<BTreeMap<String, Ipv4Addr>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LocalCloud {
    /// Reads `path`; an error names the file and the field.
    pub fn load(path: &Path) -> anyhow::Result<LocalCloud> {
        let stamp = stamp(path);
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read cloud-config {}", path.display()))?;
        let config = CloudConfig::parse(&text, path)?;
        Ok(LocalCloud {
            path: path.to_path_buf(),
            loaded: Mutex::new(Loaded {
                config: Arc::new(config),
                stamp,
            }),
            allocations: Mutex::new(BTreeMap::new()),
        })
    }

    /// The configuration, read again if the file changed.
    pub fn current(&self) -> Arc<CloudConfig> {
        let now = stamp(&self.path);
        let mut loaded = lock(&self.loaded);
        if now.is_some() && now != loaded.stamp {
            loaded.stamp = now;
            let read = std::fs::read_to_string(&self.path)
                .map_err(|e| anyhow::anyhow!("cannot read cloud-config {}: {e}", self.path.display()))
                .and_then(|text| CloudConfig::parse(&text, &self.path));
            match read {
                Ok(c) => {
                    tracing::info!(file = %self.path.display(), machines = c.machines.len(), "cloud-config reloaded");
                    loaded.config = Arc::new(c);
                }
                Err(e) => tracing::warn!("{e:#}; keeping the previous version until it is fixed"),
            }
        }
        loaded.config.clone()
    }

    fn machine_for(&self, node: &Node) -> Option<Machine> {
        let provider_id = node.spec.as_ref().map(|s| s.provider_id.as_str()).unwrap_or("");
        let name = provider_id
            .strip_prefix("local://")
            .filter(|n| !n.is_empty())
            .unwrap_or(node.name());
        self.current().machine(name).cloned()
    }

    /// Picks the address of load balancer `name`: the one it has, else the
    /// one `wanted` (its Service's status after a restart, or
    /// spec.loadBalancerIP), else the lowest free one.
    pub fn allocate(
        &self,
        name: &str,
        wanted: &[Ipv4Addr],
        required: Option<Ipv4Addr>,
    ) -> CloudResult<Ipv4Addr> {
        let config = self.current();
        let Some(pool) = config.pool else {
            return Err(CloudError::Other(format!(
                "cloud-config {} has no loadBalancerPool: add one (e.g. loadBalancerPool: 192.0.2.100-192.0.2.120) to give LoadBalancer Services addresses",
                self.path.display()
            )));
        };
        let mut allocations = lock(&self.allocations);
        let taken_by_other =
            |ip: Ipv4Addr, a: &BTreeMap<String, Ipv4Addr>| a.iter().any(|(n, got)| *got == ip && n != name);
        if let Some(ip) = required {
            if !pool.contains(ip) {
                return Err(CloudError::Other(format!(
                    "spec.loadBalancerIP {ip} is outside the loadBalancerPool {}-{} of cloud-config {}",
                    pool.first,
                    pool.last,
                    self.path.display()
                )));
            }
            if taken_by_other(ip, &allocations) {
                return Err(CloudError::Other(format!(
                    "spec.loadBalancerIP {ip} is already used by another LoadBalancer Service"
                )));
            }
            allocations.insert(name.to_string(), ip);
            return Ok(ip);
        }
        if let Some(ip) = allocations.get(name).copied().filter(|ip| pool.contains(*ip)) {
            return Ok(ip);
        }
        let pick = wanted
            .iter()
            .copied()
            .find(|ip| pool.contains(*ip) && !taken_by_other(*ip, &allocations))
            .or_else(|| pool.iter().find(|ip| !allocations.values().any(|got| got == ip)));
        let Some(ip) = pick else {
            return Err(CloudError::Other(format!(
                "the loadBalancerPool {}-{} of cloud-config {} is exhausted ({} addresses in use): widen it",
                pool.first,
                pool.last,
                self.path.display(),
                pool.size()
            )));
        };
        allocations.insert(name.to_string(), ip);
        Ok(ip)
    }

    pub fn release(&self, name: &str) -> Option<Ipv4Addr> {
        lock(&self.allocations).remove(name)
    }
}

fn ingress_ips(service: &Service) -> Vec<Ipv4Addr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .map(|lb| lb.ingress.iter().filter_map(|i| i.ip.parse().ok()).collect())
        .unwrap_or_default()
}

#[async_trait]
impl Instances for LocalCloud {
    async fn instance_exists(&self, node: &Node) -> CloudResult<bool> {
        Ok(self.machine_for(node).is_some())
    }

    async fn instance_shutdown(&self, node: &Node) -> CloudResult<bool> {
        Ok(self.machine_for(node).is_some_and(|m| m.shutdown))
    }

    async fn instance_metadata(&self, node: &Node) -> CloudResult<InstanceMetadata> {
        let m = self
            .machine_for(node)
            .ok_or_else(|| CloudError::InstanceNotFound(node.name().to_string()))?;
        Ok(InstanceMetadata {
            provider_id: format!("{NAME}://{}", m.name),
            instance_type: m.instance_type,
            addresses: m
                .addresses
                .into_iter()
                .map(|a| NodeAddress {
                    r#type: a.kind,
                    address: a.address,
                })
                .collect(),
            zone: m.zone,
            region: m.region,
        })
    }
}

#[async_trait]
impl LoadBalancer for LocalCloud {
    async fn get_load_balancer(
        &self,
        _cluster: &str,
        service: &Service,
    ) -> CloudResult<Option<Vec<LoadBalancerIngress>>> {
        let name = self.load_balancer_name(service);
        Ok(lock(&self.allocations).get(&name).map(|ip| {
            vec![LoadBalancerIngress {
                ip: ip.to_string(),
                ..Default::default()
            }]
        }))
    }

    async fn ensure_load_balancer(
        &self,
        _cluster: &str,
        service: &Service,
        _nodes: &[Node],
    ) -> CloudResult<Vec<LoadBalancerIngress>> {
        let name = self.load_balancer_name(service);
        let spec = service.spec.clone().unwrap_or_default();
        let required = if spec.load_balancer_ip.is_empty() {
            None
        } else {
            Some(spec.load_balancer_ip.parse().map_err(|_| {
                CloudError::Other(format!(
                    "spec.loadBalancerIP {:?} is not an IPv4 address",
                    spec.load_balancer_ip
                ))
            })?)
        };
        let ip = self.allocate(&name, &ingress_ips(service), required)?;
        Ok(vec![LoadBalancerIngress {
            ip: ip.to_string(),
            ip_mode: "VIP".into(),
            ..Default::default()
        }])
    }

    async fn update_load_balancer(
        &self,
        _cluster: &str,
        _service: &Service,
        _nodes: &[Node],
    ) -> CloudResult<()> {
        // Every node's rkube-proxy serves the address: nothing to repoint.
        Ok(())
    }

    async fn ensure_load_balancer_deleted(&self, _cluster: &str, service: &Service) -> CloudResult<()> {
        let name = self.load_balancer_name(service);
        if let Some(ip) = self.release(&name) {
            tracing::info!(service = %format!("{}/{}", service.namespace(), service.name()), %ip, "load balancer address released");
        }
        Ok(())
    }
}

/// The main routing table (`RT_TABLE_MAIN`).
const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// Runs `op` on a netlink connection opened in `netns` (a name under
/// /var/run/netns), or else in the calling thread's network namespace.
///
/// A netlink socket talks to the namespace of the thread that created it,
/// so the connection is made here, per call. A named namespace is entered
/// by a thread of its own (with its own runtime, whose reactor the socket
/// registers with) that ends with the call: a worker thread of the
/// caller's runtime must never change namespace.
async fn on_netlink<T, F, Fut>(netns: Option<String>, op: F) -> CloudResult<T>
where
    T: Send + 'static,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = CloudResult<T>> + Send + 'static,
{
    let Some(name) = netns else {
        return connected(op).await;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let shown = name.clone();
    std::thread::Builder::new()
        .name("rkccm-netns".into())
        .spawn(move || {
            let result = enter_netns(&name)
                .and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .build()
                        .map_err(|e| {
                            CloudError::Other(format!("cannot start a runtime for routes.netns {name}: {e}"))
                        })
                })
                .and_then(|rt| rt.block_on(connected(op)));
            let _ = tx.send(result);
        })
        .map_err(|e| CloudError::Other(format!("cannot start a thread for routes.netns {shown}: {e}")))?;
    rx.await.map_err(|_| {
        CloudError::Other(format!(
            "the thread programming routes in routes.netns {shown} died; see the log"
        ))
    })?
}

fn enter_netns(name: &str) -> CloudResult<()> {
    let path = Path::new("/var/run/netns").join(name);
    let file = std::fs::File::open(&path).map_err(|e| {
        CloudError::Other(format!(
            "routes.netns {name}: cannot open {}: {e}; create the namespace (ip netns add {name}) or fix routes.netns in the cloud-config",
            path.display()
        ))
    })?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        CloudError::Other(format!(
            "routes.netns {name}: cannot enter {}: {e} (needs CAP_SYS_ADMIN)",
            path.display()
        ))
    })
}

async fn connected<T, F, Fut>(op: F) -> CloudResult<T>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: Future<Output = CloudResult<T>>,
{
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| {
        CloudError::Other(format!(
            "cannot open a netlink socket to program kernel routes: {e}"
        ))
    })?;
    let connection = tokio::spawn(connection);
    let result = op(handle).await;
    connection.abort();
    result
}

/// The kernel's errno in `e`, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()).filter(|c| *c != 0),
        _ => None,
    }
}

/// `e` in words: the kernel's error text without the `(os error N)` noise.
fn explain(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) => {
            let text = m.to_io().to_string();
            match text.split_once(" (os error") {
                Some((words, _)) => words.to_string(),
                None => text,
            }
        }
        other => other.to_string(),
    }
}

/// `NET/BITS` with no host bits set (the kernel refuses those).
fn parse_cidr(cidr: &str) -> Result<(IpAddr, u8), String> {
    let (net, bits) = cidr
        .split_once('/')
        .ok_or_else(|| "is not a CIDR (NET/BITS)".to_string())?;
    let net: IpAddr = net.parse().map_err(|_| format!("{net:?} is not an IP address"))?;
    let max = if net.is_ipv4() { 32 } else { 128 };
    let bits: u8 = bits
        .parse()
        .ok()
        .filter(|b| *b <= max)
        .ok_or_else(|| format!("the prefix length must be 0-{max}"))?;
    let host_bits_set = match net {
        IpAddr::V4(a) => bits < 32 && u32::from(a) & (u32::MAX >> bits) != 0,
        IpAddr::V6(a) => bits < 128 && u128::from(a) & (u128::MAX >> bits) != 0,
    };
    if host_bits_set {
        return Err("has host bits set".into());
    }
    Ok((net, bits))
}

fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

/// `(destination CIDR, next hop)` of the unicast routes with `protocol` in
/// `table`, IPv4 and IPv6.
async fn kernel_routes(
    handle: rtnetlink::Handle,
    protocol: u8,
    table: u32,
) -> CloudResult<Vec<(String, IpAddr)>> {
    let mut found = Vec::new();
    let dumps = [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ];
    for (i, query) in dumps.into_iter().enumerate() {
        let mut routes = handle.route().get(query).execute();
        loop {
            let r = match routes.try_next().await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                // A kernel without IPv6 has no IPv6 routes to list.
                Err(e) if i == 1 && errno(&e) == Some(nix::libc::EAFNOSUPPORT) => break,
                Err(e) => {
                    return Err(CloudError::Other(format!(
                        "cannot list the kernel's routes over netlink: {}",
                        explain(&e)
                    )))
                }
            };
            if u8::from(r.header.protocol) != protocol
                || route_table(&r) != table
                || r.header.kind != RouteType::Unicast
            {
                continue;
            }
            let dst = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(a) => ip_of(a),
                _ => None,
            });
            let via = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(a) => ip_of(a),
                _ => None,
            });
            if let (Some(dst), Some(via)) = (dst, via) {
                found.push((format!("{dst}/{}", r.header.destination_prefix_length), via));
            }
        }
    }
    Ok(found)
}

/// How the kernel reaches `gateway` (`ip route get`), or why it cannot.
async fn next_hop(handle: &rtnetlink::Handle, gateway: IpAddr) -> Result<NextHop, String> {
    let bits = if gateway.is_ipv4() { 32 } else { 128 };
    let query = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(gateway, bits)
        .map_err(|e| e.to_string())?
        .build();
    let answer = handle.route().get(query).execute().try_next().await;
    match answer {
        Ok(Some(r)) if r.header.kind == RouteType::Local => Ok(NextHop::Local),
        Ok(Some(r)) => match r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(a) => ip_of(a),
            _ => None,
        }) {
            Some(router) => Ok(NextHop::ThroughRouter(router)),
            None => Ok(NextHop::Direct),
        },
        Ok(None) => Err(format!("the kernel gave no route to {gateway}")),
        Err(e) if matches!(errno(&e), Some(nix::libc::ENETUNREACH | nix::libc::EHOSTUNREACH)) => {
            Err(format!("no interface has a route to {gateway}"))
        }
        Err(e) => Err(format!("cannot look up the route to {gateway}: {}", explain(&e))),
    }
}

enum NextHop {
    /// An address of this machine: its pods are reached directly.
    Local,
    /// On the network of one of this machine's interfaces.
    Direct,
    /// Reached only through another router: not a valid next hop.
    ThroughRouter(IpAddr),
}

#[async_trait]
impl Routes for LocalCloud {
    async fn list_routes(&self, _cluster: &str) -> CloudResult<Vec<Route>> {
        let config = self.current();
        let settings = config.routes.clone();
        let table = settings.table.unwrap_or(MAIN_TABLE);
        let routes = on_netlink(settings.netns.clone(), move |handle| {
            kernel_routes(handle, settings.protocol, table)
        })
        .await?;
        Ok(routes
            .into_iter()
            .map(|(destination_cidr, via)| {
                let via = via.to_string();
                let target_node = config
                    .machines
                    .iter()
                    .find(|m| m.addresses.iter().any(|a| a.address == via))
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                Route {
                    target_node,
                    target_node_addresses: vec![NodeAddress {
                        r#type: "InternalIP".into(),
                        address: via,
                    }],
                    destination_cidr,
                }
            })
            .collect())
    }

    async fn create_route(&self, _cluster: &str, route: &Route) -> CloudResult<()> {
        let config = self.current();
        let settings = config.routes.clone();
        let gateway = crate::cloud::address_of(&route.target_node_addresses, "InternalIP")
            .map(str::to_string)
            .or_else(|| {
                config
                    .machine(&route.target_node)
                    .and_then(|m| m.addresses.iter().find(|a| a.kind == "InternalIP"))
                    .map(|a| a.address.clone())
            })
            .ok_or_else(|| {
                CloudError::Other(format!(
                    "node {} has no InternalIP to route {} to: list it under its machine in cloud-config {}",
                    route.target_node,
                    route.destination_cidr,
                    self.path.display()
                ))
            })?;
        let what = format!(
            "route for node {} (podCIDR {} via {gateway})",
            route.target_node, route.destination_cidr
        );
        let fail = move |why: String| CloudError::Other(format!("{what}: {why}"));
        let (dst, bits) =
            parse_cidr(&route.destination_cidr).map_err(|e| fail(format!("the podCIDR {e}")))?;
        let via: IpAddr = gateway
            .parse()
            .map_err(|_| fail(format!("the next hop {gateway:?} is not an IP address")))?;
        if dst.is_ipv4() != via.is_ipv4() {
            return Err(fail(
                "the podCIDR and the next hop are of different IP families".into(),
            ));
        }
        let message = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst, bits)
            .and_then(|b| b.gateway(via))
            .map_err(|e| fail(e.to_string()))?
            .protocol(RouteProtocol::from(settings.protocol))
            .table_id(settings.table.unwrap_or(MAIN_TABLE))
            .build();
        let made = on_netlink(settings.netns.clone(), move |handle| async move {
            match next_hop(&handle, via).await.map_err(&fail)? {
                // The node this manager runs on reaches its own pods directly.
                NextHop::Local => return Ok(false),
                NextHop::Direct => {}
                NextHop::ThroughRouter(router) => {
                    return Err(fail(format!(
                        "{via} is not on the network of any interface here (the kernel reaches it only through the router {router}); a next hop must be directly connected"
                    )))
                }
            }
            handle
                .route()
                .add(message)
                .replace()
                .execute()
                .await
                .map_err(|e| match errno(&e) {
                    Some(nix::libc::ENETUNREACH) => fail(format!("no interface has a route to {via}")),
                    Some(nix::libc::EPERM) => fail("not permitted: the manager needs CAP_NET_ADMIN to program routes".into()),
                    _ => fail(explain(&e)),
                })?;
            Ok(true)
        })
        .await?;
        if made {
            tracing::debug!(node = %route.target_node, cidr = %route.destination_cidr, %gateway, "kernel route in place");
        }
        Ok(())
    }

    async fn delete_route(&self, _cluster: &str, route: &Route) -> CloudResult<()> {
        let config = self.current();
        let settings = config.routes.clone();
        let what = format!(
            "deleting the route for node {} (podCIDR {})",
            route.target_node, route.destination_cidr
        );
        let fail = move |why: String| CloudError::Other(format!("{what}: {why}"));
        let (dst, bits) =
            parse_cidr(&route.destination_cidr).map_err(|e| fail(format!("the podCIDR {e}")))?;
        // Whatever route of ours leads to the CIDR goes, whichever its next
        // hop: the node may have changed address since.
        let mut message = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst, bits)
            .map_err(|e| fail(e.to_string()))?
            .protocol(RouteProtocol::from(settings.protocol))
            .table_id(settings.table.unwrap_or(MAIN_TABLE))
            .build();
        message.header.scope = RouteScope::NoWhere;
        on_netlink(settings.netns.clone(), move |handle| async move {
            match handle.route().del(message).execute().await {
                Ok(()) => Ok(()),
                // Already gone.
                Err(e) if errno(&e) == Some(nix::libc::ESRCH) => Ok(()),
                Err(e) => Err(fail(explain(&e))),
            }
        })
        .await
    }
}

impl CloudProvider for LocalCloud {
    fn name(&self) -> &str {
        NAME
    }

    fn instances(&self) -> Option<&dyn Instances> {
        Some(self)
    }

    fn load_balancer(&self) -> Option<&dyn LoadBalancer> {
        Some(self)
    }

    fn routes(&self) -> Option<&dyn Routes> {
        // Settings read at start: whether routes run at all is decided once.
        if self.current().routes.enabled {
            Some(self)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::core::v1::{LoadBalancerStatus, ServiceSpec, ServiceStatus};

    const SAMPLE: &str = "\
machines:
  - name: a
    addresses: [{type: InternalIP, address: 10.0.0.2}, {type: Hostname, address: a.lan}]
    zone: shelf-1
    region: home
    instanceType: pi4
  - name: b
    addresses: [{type: InternalIP, address: 10.0.0.3}]
    shutdown: true
loadBalancerPool: 192.0.2.100-192.0.2.102
routes: {protocol: 241}
";

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("cloud.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn node(name: &str) -> Node {
        let mut n = Node::default();
        n.metadata_mut().name = name.into();
        n
    }

    fn service(uid: &str, ingress: &str) -> Service {
        let mut s = Service {
            spec: Some(ServiceSpec {
                r#type: "LoadBalancer".into(),
                ..Default::default()
            }),
            status: (!ingress.is_empty()).then(|| ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: vec![LoadBalancerIngress {
                        ip: ingress.into(),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        s.metadata_mut().uid = uid.into();
        s.metadata_mut().name = format!("svc-{uid}");
        s.metadata_mut().namespace = "default".into();
        s
    }

    async fn ensure(cloud: &LocalCloud, svc: &Service) -> CloudResult<String> {
        Ok(cloud.ensure_load_balancer("k", svc, &[]).await?[0].ip.clone())
    }

    #[tokio::test]
    async fn machines_are_instances_with_their_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = LocalCloud::load(&write(dir.path(), SAMPLE)).unwrap();
        let meta = cloud.instance_metadata(&node("a")).await.unwrap();
        assert_eq!(meta.provider_id, "local://a");
        assert_eq!(
            (
                meta.instance_type.as_str(),
                meta.zone.as_str(),
                meta.region.as_str()
            ),
            ("pi4", "shelf-1", "home")
        );
        assert_eq!(meta.addresses.len(), 2);
        assert_eq!(meta.addresses[0].r#type, "InternalIP");
        assert!(cloud.instance_exists(&node("a")).await.unwrap());
        assert!(!cloud.instance_shutdown(&node("a")).await.unwrap());
        assert!(cloud.instance_shutdown(&node("b")).await.unwrap());
        assert!(!cloud.instance_exists(&node("c")).await.unwrap());
        assert!(matches!(
            cloud.instance_metadata(&node("c")).await,
            Err(CloudError::InstanceNotFound(_))
        ));
        // The providerID wins over the node's name.
        let mut renamed = node("other-name");
        renamed.spec.get_or_insert_with(Default::default).provider_id = "local://a".into();
        assert!(cloud.instance_exists(&renamed).await.unwrap());
        assert_eq!(cloud.current().routes.protocol, 241);
        assert!(cloud.routes().is_some());
    }

    #[test]
    fn a_garbled_cloud_config_names_the_file_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("machines:\n  - nme: a\n", "machines[0]: unknown field `nme`"),
            (
                "machines:\n  - name: a\n    addresses: [{type: InternalAddress, address: 10.0.0.2}]\n",
                "machines[0].addresses[0].type: \"InternalAddress\" is not one of",
            ),
            (
                "machines:\n  - name: a\n    addresses: [{type: InternalIP, address: ten}]\n",
                "machines[0].addresses[0].address: \"ten\" is not an IP address",
            ),
            (
                "machines: [{name: a}, {name: a}]\n",
                "machines[1].name: \"a\" is listed twice",
            ),
            (
                "loadBalancerPool: 192.0.2.9-192.0.2.1\n",
                "loadBalancerPool: \"192.0.2.9-192.0.2.1\": the range ends before it starts",
            ),
            (
                "loadBalancerPool: lots\n",
                "loadBalancerPool: \"lots\" is neither a range",
            ),
            ("routes: {protocol: 300}\n", "routes.protocol"),
        ];
        for (text, want) in cases {
            let path = write(dir.path(), text);
            let err = format!("{:#}", LocalCloud::load(&path).err().expect(text));
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(want), "{text}: {err}");
        }
        let err = format!(
            "{:#}",
            LocalCloud::load(&dir.path().join("missing.yaml")).err().unwrap()
        );
        assert!(
            err.contains("cannot read cloud-config") && err.contains("missing.yaml"),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../../../deploy/examples/cloud-config.yaml");
        let c = CloudConfig::parse(text, Path::new("deploy/examples/cloud-config.yaml")).unwrap();
        assert_eq!(c.machines.len(), 2);
        assert_eq!(c.pool.unwrap().size(), 21);
        assert_eq!(c.routes, RouteSettings::default());
    }

    #[test]
    fn pools_are_ranges_or_cidrs() {
        let p = Pool::parse("192.0.2.100-192.0.2.120").unwrap();
        assert_eq!(
            (p.first, p.last, p.size()),
            ("192.0.2.100".parse().unwrap(), "192.0.2.120".parse().unwrap(), 21)
        );
        let p = Pool::parse("192.0.2.96/28").unwrap();
        assert_eq!(
            (p.first.to_string(), p.last.to_string()),
            ("192.0.2.97".into(), "192.0.2.110".into())
        );
        let p = Pool::parse("192.0.2.7/32").unwrap();
        assert_eq!((p.first.to_string(), p.size()), ("192.0.2.7".into(), 1));
        assert!(Pool::parse("192.0.2.0/33").is_err());
    }

    #[test]
    fn pod_cidrs_are_checked_before_they_reach_the_kernel() {
        assert_eq!(
            parse_cidr("10.244.1.0/24").unwrap(),
            ("10.244.1.0".parse().unwrap(), 24)
        );
        assert_eq!(
            parse_cidr("fd00:10:244:1::/64").unwrap(),
            ("fd00:10:244:1::".parse().unwrap(), 64)
        );
        for (bad, why) in [
            ("10.244.1.0", "is not a CIDR"),
            ("10.244.1.7/24", "has host bits set"),
            ("10.244.1.0/33", "prefix length must be 0-32"),
            ("ten/8", "\"ten\" is not an IP address"),
        ] {
            let err = parse_cidr(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn pool_addresses_are_stable_released_and_recovered_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), SAMPLE);
        let cloud = LocalCloud::load(&path).unwrap();
        let (one, two, three) = (service("1", ""), service("2", ""), service("3", ""));
        assert_eq!(ensure(&cloud, &one).await.unwrap(), "192.0.2.100");
        assert_eq!(ensure(&cloud, &two).await.unwrap(), "192.0.2.101");
        assert_eq!(ensure(&cloud, &one).await.unwrap(), "192.0.2.100", "stable");
        assert_eq!(ensure(&cloud, &three).await.unwrap(), "192.0.2.102");
        let err = ensure(&cloud, &service("4", "")).await.unwrap_err().to_string();
        assert!(err.contains("exhausted") && err.contains("cloud.yaml"), "{err}");
        cloud.ensure_load_balancer_deleted("k", &one).await.unwrap();
        assert!(cloud.get_load_balancer("k", &one).await.unwrap().is_none());
        assert_eq!(
            ensure(&cloud, &service("4", "")).await.unwrap(),
            "192.0.2.100",
            "reused"
        );

        // A new process: Services showing an address get it back, whatever
        // order they come in; new ones get what is free.
        let cloud = LocalCloud::load(&path).unwrap();
        assert_eq!(
            ensure(&cloud, &service("3", "192.0.2.102")).await.unwrap(),
            "192.0.2.102"
        );
        assert_eq!(ensure(&cloud, &service("5", "")).await.unwrap(), "192.0.2.100");
        // An address outside the pool (the pool changed) is not kept.
        assert_eq!(
            ensure(&cloud, &service("6", "198.51.100.1")).await.unwrap(),
            "192.0.2.101"
        );

        // spec.loadBalancerIP is honoured inside the pool, refused outside.
        let cloud = LocalCloud::load(&path).unwrap();
        let mut pinned = service("7", "");
        pinned.spec.as_mut().unwrap().load_balancer_ip = "192.0.2.102".into();
        assert_eq!(ensure(&cloud, &pinned).await.unwrap(), "192.0.2.102");
        pinned.spec.as_mut().unwrap().load_balancer_ip = "192.0.2.1".into();
        let err = ensure(&cloud, &pinned).await.unwrap_err().to_string();
        assert!(err.contains("spec.loadBalancerIP 192.0.2.1 is outside"), "{err}");
    }

    #[tokio::test]
    async fn the_file_is_read_again_when_it_changes_and_a_bad_edit_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "machines: [{name: a}]\n");
        let cloud = LocalCloud::load(&path).unwrap();
        assert!(!cloud.instance_exists(&node("b")).await.unwrap());
        assert!(cloud.load_balancer_name(&service("x", "")).starts_with('a'));
        let err = ensure(&cloud, &service("x", "")).await.unwrap_err().to_string();
        assert!(err.contains("has no loadBalancerPool"), "{err}");

        write(
            dir.path(),
            "machines: [{name: a}, {name: b}]\nloadBalancerPool: 192.0.2.10/32\n",
        );
        assert!(cloud.instance_exists(&node("b")).await.unwrap());
        assert_eq!(ensure(&cloud, &service("x", "")).await.unwrap(), "192.0.2.10");

        // Removing a machine retires it.
        write(
            dir.path(),
            "machines: [{name: b}]\nloadBalancerPool: 192.0.2.10/32\n",
        );
        assert!(!cloud.instance_exists(&node("a")).await.unwrap());

        // A typo keeps the last good version instead of retiring everything.
        write(dir.path(), "machines: [{nam: b}]\n");
        assert!(cloud.instance_exists(&node("b")).await.unwrap());
    }
}
