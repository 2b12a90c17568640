//! Service address allocation: ClusterIPs from the service CIDR and
//! NodePorts from the node-port range, handed out once each.
//!
//! The allocated values live in the Services themselves (`spec.clusterIP`,
//! `spec.ports[].nodePort`), so the store is the durable record: at start
//! the allocator is rebuilt from every stored Service (`repair`), which both
//! survives restarts and picks up any Service written without passing
//! through the allocator (a restore, an older apiserver). While serving, one
//! mutex orders allocations, so concurrent creates never get the same value.
//! Handlers allocate before the store write and release if it fails, and
//! release after a delete succeeds.

use crate::error::{ApiError, ApiResult};
use rkube_api::core::v1::Service;
use rkube_api::validation::{ErrorType, FieldError};
use rkube_api::Resource;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::sync::{Mutex, MutexGuard};

/// A bad `--service-cluster-ip-range` or `--service-node-port-range`.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error("service CIDR {0:?} is not an IPv4 CIDR like 10.96.0.0/16")]
    BadCidr(String),
    #[error("service CIDR {0:?} is too small: it needs at least 8 addresses (a prefix of /29 or shorter)")]
    CidrTooSmall(String),
    #[error("node port range {0:?} is not FIRST-LAST with 1 <= FIRST <= LAST <= 65535, like 30000-32767")]
    BadPortRange(String),
}

/// Parses `10.96.0.0/16` into its network address and prefix length.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), RangeError> {
    let (ip, len) = rkube_api::validation::parse_cidr(s).ok_or_else(|| RangeError::BadCidr(s.into()))?;
    if len > 29 {
        return Err(RangeError::CidrTooSmall(s.into()));
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ok((Ipv4Addr::from(u32::from(ip) & mask), len))
}

/// Parses `30000-32767`.
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, RangeError> {
    let bad = || RangeError::BadPortRange(s.into());
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

#[derive(Default)]
struct Used {
    ips: HashSet<u32>,
    ports: HashSet<u16>,
    /// Where the next search starts, so released values are not handed out
    /// again at once (a client still holding the old address would reach the
    /// new Service).
    next_ip: u32,
    next_port: u16,
}

/// What one create or update took, to give back if the write fails.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub ip: Option<Ipv4Addr>,
    pub ports: Vec<u16>,
}

pub struct ServiceAllocator {
    /// First and last assignable address (network and broadcast excluded).
    first_ip: u32,
    last_ip: u32,
    ports: RangeInclusive<u16>,
    used: Mutex<Used>,
}

fn field_error(field: &str, value: impl Into<String>, detail: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        kind: ErrorType::Invalid(value.into()),
        detail: detail.into(),
    }
}

fn invalid(svc: &Service, field: &str, value: impl Into<String>, detail: impl Into<String>) -> ApiError {
    ApiError::invalid(
        Service::info(),
        svc.name(),
        vec![field_error(field, value, detail)],
    )
}

/// Whether a Service of this type gets node ports.
fn wants_node_ports(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .is_some_and(|s| matches!(s.r#type.as_str(), "NodePort" | "LoadBalancer"))
}

/// Whether a Service gets a ClusterIP (ExternalName and headless do not).
fn wants_cluster_ip(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .is_some_and(|s| s.r#type != "ExternalName" && s.cluster_ip != "None")
}

fn cluster_ip(svc: &Service) -> Option<Ipv4Addr> {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.parse().ok())
}

fn node_ports(svc: &Service) -> Vec<u16> {
    svc.spec
        .as_ref()
        .map(|s| {
            s.ports
                .iter()
                .filter_map(|p| u16::try_from(p.node_port).ok().filter(|p| *p != 0))
                .collect()
        })
        .unwrap_or_default()
}

impl ServiceAllocator {
    pub fn new(cidr: &str, node_ports: &str) -> Result<Self, RangeError> {
        let (net, len) = parse_cidr(cidr)?;
        let net = u32::from(net);
        let size = 1u64 << (32 - len);
        let ports = parse_port_range(node_ports)?;
        Ok(ServiceAllocator {
            first_ip: net + 1,
            last_ip: (net as u64 + size - 2) as u32,
            ports: ports.clone(),
            used: Mutex::new(Used {
                next_ip: net + 1,
                next_port: *ports.start(),
                ..Default::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Used> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many ClusterIPs and NodePorts are taken.
    pub fn in_use(&self) -> (usize, usize) {
        let u = self.lock();
        (u.ips.len(), u.ports.len())
    }

    /// Marks what stored Services hold as taken (start-up repair). Values
    /// outside the ranges (the flags changed) are kept by their Services but
    /// not tracked; duplicates are logged, not fatal, so one bad record
    /// cannot keep the apiserver down.
    pub fn repair<'a>(&self, services: impl IntoIterator<Item = &'a Service>) {
        let mut u = self.lock();
        for svc in services {
            if let Some(ip) = cluster_ip(svc) {
                let ip = u32::from(ip);
                if (self.first_ip..=self.last_ip).contains(&ip) && !u.ips.insert(ip) {
                    tracing::warn!(service = %svc.name(), namespace = %svc.namespace(), ip = %Ipv4Addr::from(ip), "clusterIP is held by more than one Service");
                }
            }
            for p in node_ports(svc) {
                if self.ports.contains(&p) && !u.ports.insert(p) {
                    tracing::warn!(service = %svc.name(), namespace = %svc.namespace(), port = p, "nodePort is held by more than one Service");
                }
            }
        }
    }

    /// Fills in and reserves what a new Service needs: a ClusterIP (the
    /// requested one if free and in range) and node ports for NodePort and
    /// LoadBalancer Services.
    pub fn allocate_create(&self, svc: &mut Service) -> ApiResult<Allocation> {
        let mut u = self.lock();
        let mut taken = Allocation::default();
        let result = self.allocate_locked(&mut u, svc, None, &mut taken);
        if result.is_err() {
            self.release_locked(&mut u, &taken);
        }
        result.map(|()| taken)
    }

    /// What an update needs on top of what the old Service holds: node
    /// ports when the type becomes NodePort/LoadBalancer or a port is added,
    /// a requested node port that changed. Returns what was newly taken
    /// (release it if the write fails) and what the old Service held that
    /// the new one does not (release it after the write succeeds).
    pub fn allocate_update(&self, new: &mut Service, old: &Service) -> ApiResult<(Allocation, Allocation)> {
        let mut u = self.lock();
        let mut taken = Allocation::default();
        if let Err(e) = self.allocate_locked(&mut u, new, Some(old), &mut taken) {
            self.release_locked(&mut u, &taken);
            return Err(e);
        }
        let mut freed = Allocation::default();
        let new_ip = cluster_ip(new);
        if cluster_ip(old).is_some() && new_ip != cluster_ip(old) {
            freed.ip = cluster_ip(old);
        }
        let new_ports = node_ports(new);
        freed.ports = node_ports(old)
            .into_iter()
            .filter(|p| !new_ports.contains(p))
            .collect();
        Ok((taken, freed))
    }

    fn allocate_locked(
        &self,
        u: &mut Used,
        svc: &mut Service,
        old: Option<&Service>,
        taken: &mut Allocation,
    ) -> ApiResult<()> {
        let old_ip = old.and_then(cluster_ip);
        let old_ports = old.map(node_ports).unwrap_or_default();
        let want_ip = wants_cluster_ip(svc);
        let want_ports = wants_node_ports(svc);
        let snapshot = svc.clone();
        let spec = svc.spec.get_or_insert_with(Default::default);
        if want_ip {
            if spec.cluster_ip.is_empty() {
                let ip = self.next_free_ip(u).ok_or_else(|| {
                    ApiError::internal(format!(
                        "cannot allocate a clusterIP for Service {:?}: the service CIDR is full; widen --service-cluster-ip-range or delete unused Services",
                        snapshot.name()
                    ))
                })?;
                u.ips.insert(u32::from(ip));
                taken.ip = Some(ip);
                spec.cluster_ip = ip.to_string();
            } else {
                let ip: Ipv4Addr = spec.cluster_ip.parse().map_err(|_| {
                    invalid(
                        &snapshot,
                        "spec.clusterIP",
                        &spec.cluster_ip,
                        "must be a valid IPv4 address or \"None\"",
                    )
                })?;
                let n = u32::from(ip);
                // an update keeping the old address: already ours
                if Some(ip) != old_ip && !(self.first_ip..=self.last_ip).contains(&n) {
                    return Err(invalid(
                        &snapshot,
                        "spec.clusterIP",
                        ip.to_string(),
                        format!(
                            "provided IP is not in the valid range {}-{}; leave clusterIP empty to get one",
                            Ipv4Addr::from(self.first_ip),
                            Ipv4Addr::from(self.last_ip)
                        ),
                    ));
                } else if Some(ip) != old_ip && !u.ips.insert(n) {
                    return Err(invalid(
                        &snapshot,
                        "spec.clusterIP",
                        ip.to_string(),
                        "provided IP is already allocated; leave clusterIP empty to get a free one",
                    ));
                } else if Some(ip) != old_ip {
                    taken.ip = Some(ip);
                }
            }
            spec.cluster_ips = vec![spec.cluster_ip.clone()];
        } else if spec.cluster_ip == "None" {
            spec.cluster_ips = vec!["None".into()];
        }
        for (i, p) in spec.ports.iter_mut().enumerate() {
            if !want_ports {
                // ClusterIP Services have none (validation forbids a
                // requested one); a type change drops the old ones.
                p.node_port = 0;
                continue;
            }
            let field = format!("spec.ports[{i}].nodePort");
            if p.node_port == 0 {
                let port = self.next_free_port(u).ok_or_else(|| {
                    invalid(
                        &snapshot,
                        &field,
                        "0",
                        "the node port range is full; widen --service-node-port-range or delete unused NodePort Services",
                    )
                })?;
                u.ports.insert(port);
                taken.ports.push(port);
                p.node_port = i32::from(port);
            } else {
                let port = u16::try_from(p.node_port).ok().filter(|p| self.ports.contains(p));
                let Some(port) = port else {
                    return Err(invalid(
                        &snapshot,
                        &field,
                        p.node_port.to_string(),
                        format!(
                            "provided port is not in the valid range {}-{}",
                            self.ports.start(),
                            self.ports.end()
                        ),
                    ));
                };
                if old_ports.contains(&port) {
                    continue;
                }
                if !u.ports.insert(port) {
                    return Err(invalid(
                        &snapshot,
                        &field,
                        port.to_string(),
                        "provided port is already allocated; leave nodePort out to get a free one",
                    ));
                }
                taken.ports.push(port);
            }
        }
        Ok(())
    }

    fn next_free_ip(&self, u: &mut Used) -> Option<Ipv4Addr> {
        let size = self.last_ip - self.first_ip + 1;
        for i in 0..size {
            let offset = (u.next_ip.wrapping_sub(self.first_ip).wrapping_add(i)) % size;
            let ip = self.first_ip + offset;
            // .1 of the range is kept for the `kubernetes` Service, as in Kubernetes.
            if ip == self.first_ip {
                continue;
            }
            if !u.ips.contains(&ip) {
                u.next_ip = if ip == self.last_ip { self.first_ip } else { ip + 1 };
                return Some(Ipv4Addr::from(ip));
            }
        }
        None
    }

    fn next_free_port(&self, u: &mut Used) -> Option<u16> {
        let first = u32::from(*self.ports.start());
        let size = u32::from(*self.ports.end()) - first + 1;
        for i in 0..size {
            let port = (first + (u32::from(u.next_port) - first + i) % size) as u16;
            if !u.ports.contains(&port) {
                u.next_port = if port == *self.ports.end() {
                    *self.ports.start()
                } else {
                    port + 1
                };
                return Some(port);
            }
        }
        None
    }

    /// Gives back what a failed write took, or what a deleted Service held.
    pub fn release(&self, a: &Allocation) {
        let mut u = self.lock();
        self.release_locked(&mut u, a);
    }

    fn release_locked(&self, u: &mut Used, a: &Allocation) {
        if let Some(ip) = a.ip {
            u.ips.remove(&u32::from(ip));
        }
        for p in &a.ports {
            u.ports.remove(p);
        }
    }

    /// What a stored Service holds, to release after it is deleted.
    pub fn held_by(svc: &Service) -> Allocation {
        Allocation {
            ip: cluster_ip(svc),
            ports: node_ports(svc),
        }
    }
}
