//! What the dataplane must do, derived from Services and Endpoints: one
//! `ServicePort` per port of each Service, with its ready endpoints.

use rkube_api::core::v1::{Endpoints, Service};
use rkube_api::Resource;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// The name nft uses.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One port of one Service as the dataplane sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/service:port-name`, for logs.
    pub name: String,
    /// None for headless Services, which are only reachable through their
    /// NodePorts (none) — kept so their absence is explicit.
    pub cluster_ip: Option<Ipv4Addr>,
    /// A LoadBalancer Service's `status.loadBalancer.ingress[].ip`: served
    /// like the ClusterIP, so traffic the network brings to a node for the
    /// load balancer address reaches the pods (no extra hop through a
    /// NodePort, as kube-proxy does it).
    pub load_balancer_ips: Vec<Ipv4Addr>,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
    /// sessionAffinity ClientIP: how long a client sticks to its endpoint.
    pub affinity_timeout: Option<u32>,
    /// Ready endpoints only, sorted.
    pub endpoints: Vec<SocketAddrV4>,
}

/// Every ServicePort the cluster declares, in a stable order. Services
/// without a ClusterIP or NodePort (headless, ExternalName) and SCTP ports
/// are left out: there is nothing to program for them.
pub fn service_ports(
    services: &[Arc<Service>],
    endpoints_of: impl Fn(&str, &str) -> Option<Arc<Endpoints>>,
) -> Vec<ServicePort> {
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        if spec.r#type == "ExternalName" {
            continue;
        }
        let cluster_ip = spec.cluster_ip.parse::<Ipv4Addr>().ok();
        let load_balancer_ips = load_balancer_ips(svc);
        let eps = endpoints_of(svc.namespace(), svc.name());
        let affinity_timeout = (spec.session_affinity == "ClientIP").then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .map(|t| t.clamp(1, 86400) as u32)
                .unwrap_or(10800)
        });
        for p in &spec.ports {
            let Some(protocol) = Protocol::parse(&p.protocol) else {
                tracing::debug!(service = %svc.name(), protocol = %p.protocol, "protocol not supported by rkube-proxy, skipped");
                continue;
            };
            let Ok(port) = u16::try_from(p.port) else { continue };
            let node_port = u16::try_from(p.node_port).ok().filter(|p| *p != 0);
            if cluster_ip.is_none() && node_port.is_none() {
                continue;
            }
            let mut ready: Vec<SocketAddrV4> = eps
                .iter()
                .flat_map(|e| &e.subsets)
                .flat_map(|s| {
                    let port = s
                        .ports
                        .iter()
                        .find(|ep| ep.name == p.name && Protocol::parse(&ep.protocol) == Some(protocol));
                    s.addresses.iter().filter_map(move |a| {
                        let port = u16::try_from(port?.port).ok()?;
                        Some(SocketAddrV4::new(a.ip.parse().ok()?, port))
                    })
                })
                .collect();
            ready.sort();
            ready.dedup();
            out.push(ServicePort {
                name: format!("{}/{}:{}", svc.namespace(), svc.name(), p.name),
                cluster_ip,
                load_balancer_ips: load_balancer_ips.clone(),
                protocol,
                port,
                node_port,
                affinity_timeout,
                endpoints: ready,
            });
        }
    }
    out.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then(a.protocol.cmp(&b.protocol))
            .then(a.port.cmp(&b.port))
    });
    out
}

/// The IPv4 ingress addresses of a LoadBalancer Service, sorted; none for
/// other types (an address left in status after a type change is stale).
fn load_balancer_ips(svc: &Service) -> Vec<Ipv4Addr> {
    if svc.spec.as_ref().is_none_or(|s| s.r#type != "LoadBalancer") {
        return Vec::new();
    }
    let mut ips: Vec<Ipv4Addr> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .map(|lb| lb.ingress.iter().filter_map(|i| i.ip.parse().ok()).collect())
        .unwrap_or_default();
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(yaml: &str) -> Arc<Service> {
        Arc::new(serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn load_balancer_ingress_addresses_are_frontends_of_load_balancers_only() {
        let lb = svc("metadata: {name: web, namespace: default}\nspec: {type: LoadBalancer, clusterIP: 10.96.0.5, ports: [{name: http, port: 80, nodePort: 30080}]}\nstatus: {loadBalancer: {ingress: [{ip: 192.0.2.101}, {hostname: lb.example}, {ip: 192.0.2.100}]}}\n");
        let ports = service_ports(&[lb], |_, _| None);
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].cluster_ip, Some(Ipv4Addr::new(10, 96, 0, 5)));
        assert_eq!(
            ports[0].load_balancer_ips,
            [Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 101)]
        );
        // Changed to ClusterIP with the old status still there: not served.
        let stale = svc("metadata: {name: web, namespace: default}\nspec: {type: ClusterIP, clusterIP: 10.96.0.5, ports: [{name: http, port: 80}]}\nstatus: {loadBalancer: {ingress: [{ip: 192.0.2.101}]}}\n");
        assert!(service_ports(&[stale], |_, _| None)[0]
            .load_balancer_ips
            .is_empty());
    }
}
