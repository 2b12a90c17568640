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
    CloudError, CloudProvider, CloudResult, InstanceMetadata, Instances, LoadBalancer, Routes,
};
use anyhow::Context as _;
use async_trait::async_trait;
use rkube_api::core::v1::{LoadBalancerIngress, Node, NodeAddress, Service};
use rkube_api::Resource;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
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

    fn volumes(&self) -> Option<&dyn crate::cloud::Volumes> {
        Some(self)
    }
}

mod routes;
#[cfg(test)]
mod tests;
pub mod volumes;
