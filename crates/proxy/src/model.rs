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
