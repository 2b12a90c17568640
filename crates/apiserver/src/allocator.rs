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
//!
//! Several apiservers over one store (etcd) each have their own allocator, so
//! the store arbitrates: every allocated value has a reservation key
//! (`ranges/serviceips/10.96.0.12`, `ranges/servicenodeports/30080`, holding
//! the owning Service's `namespace/name` and uid), created in the same
//! transaction as the Service write that takes it and deleted in the same
//! transaction as the write that gives it up. Two apiservers that pick the
//! same free value both try to create its key; the store lets one win and the
//! other gets AlreadyExists on that key, marks the value taken and allocates
//! again ([`ServiceAllocator::taken_elsewhere`]). The in-memory sets are then
//! a hint that keeps collisions rare, refreshed from a watch on the
//! reservation keys ([`ServiceAllocator::observe`]). At start, stored Services
//! whose values have no key yet (a cluster from before the keys) get them
//! ([`reserve_stored`]).
//!
//! Node pod CIDRs are not allocated here: the controller-manager's node-ipam
//! loop writes them into `Node.spec.podCIDR`, and only the elected leader of
//! the controller-managers runs it, so there is one allocator cluster-wide.

use crate::error::{ApiError, ApiResult};
use bytes::Bytes;
use rkube_api::core::v1::Service;
use rkube_api::validation::{ErrorType, FieldError};
use rkube_api::Resource;
use rkube_store::{EventKind, Op, Store, StoreError};
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

/// The prefix of the ClusterIP reservation keys.
pub const CLUSTER_IP_KEYS: &str = "ranges/serviceips/";
/// The prefix of the NodePort reservation keys.
pub const NODE_PORT_KEYS: &str = "ranges/servicenodeports/";
/// What the apiserver watches to learn other apiservers' allocations.
pub const RESERVATION_KEYS: &str = "ranges/";

pub fn cluster_ip_key(ip: Ipv4Addr) -> String {
    format!("{CLUSTER_IP_KEYS}{ip}")
}

pub fn node_port_key(port: u16) -> String {
    format!("{NODE_PORT_KEYS}{port}")
}

/// A reservation key's value: who holds it, for operators reading the store.
fn owner(svc: &Service) -> Bytes {
    Bytes::from(format!(
        "{}/{} {}",
        svc.namespace(),
        svc.name(),
        svc.metadata().uid
    ))
}

impl Allocation {
    pub fn is_empty(&self) -> bool {
        self.ip.is_none() && self.ports.is_empty()
    }

    fn keys(&self) -> impl Iterator<Item = String> + '_ {
        self.ip
            .map(cluster_ip_key)
            .into_iter()
            .chain(self.ports.iter().map(|p| node_port_key(*p)))
    }

    /// The store ops that reserve what this allocation took for `svc`: put them in the
    /// transaction that writes the Service.
    pub fn reserve_ops(&self, svc: &Service) -> Vec<Op> {
        self.keys()
            .map(|key| Op::Create {
                key,
                value: owner(svc),
            })
            .collect()
    }

    /// The store ops that give back what this allocation held (a deleted Service's
    /// values, or those an update dropped): put them in the transaction that writes the
    /// change. Values without a key (outside the ranges, or never reserved) are skipped,
    /// as the delete of a missing key would fail the transaction.
    pub fn release_ops(&self, store: &dyn Store) -> Vec<Op> {
        self.keys()
            .filter(|key| store.get(key).is_some())
            .map(|key| Op::Delete { key, expected: None })
            .collect()
    }
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

    fn ip_in_range(&self, ip: Ipv4Addr) -> bool {
        (self.first_ip..=self.last_ip).contains(&u32::from(ip))
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

    /// A write failed with AlreadyExists on `key`: when it is a reservation key, another
    /// apiserver took that value first. It is marked taken here (the caller gives back the
    /// rest of its allocation and allocates again); returns whether `key` was one.
    pub fn taken_elsewhere(&self, key: &str) -> bool {
        let mut u = self.lock();
        if let Some(ip) = key
            .strip_prefix(CLUSTER_IP_KEYS)
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        {
            u.ips.insert(u32::from(ip));
            return true;
        }
        if let Some(port) = key
            .strip_prefix(NODE_PORT_KEYS)
            .and_then(|p| p.parse::<u16>().ok())
        {
            u.ports.insert(port);
            return true;
        }
        false
    }

    /// A reservation key was written or deleted (by this apiserver or another): the hint
    /// follows. Values this apiserver has taken for a write still in flight stay taken
    /// whatever the hint says later, because the store's answer to that write decides.
    pub fn observe(&self, key: &str, reserved: bool) {
        let mut u = self.lock();
        if let Some(ip) = key
            .strip_prefix(CLUSTER_IP_KEYS)
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        {
            let n = u32::from(ip);
            if reserved {
                u.ips.insert(n);
            } else {
                u.ips.remove(&n);
            }
        } else if let Some(port) = key
            .strip_prefix(NODE_PORT_KEYS)
            .and_then(|p| p.parse::<u16>().ok())
        {
            if reserved {
                u.ports.insert(port);
            } else {
                u.ports.remove(&port);
            }
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

/// Creates the reservation keys missing for what stored Services hold (a cluster from
/// before the keys, or a Service restored behind the apiserver's back), so that other
/// apiservers see those values taken. A value two Services hold is reserved for the first
/// and logged. Returns how many keys were created.
pub async fn reserve_stored(store: &dyn Store, allocator: &ServiceAllocator) -> Result<usize, StoreError> {
    let prefix = crate::keys::storage_prefix(Service::info(), "");
    let page = store.list(&prefix, None, 0, None)?;
    let mut created = 0;
    for kv in &page.items {
        let Ok(svc) = <Service as prost::Message>::decode(kv.value.as_ref()) else {
            continue;
        };
        let mut held = ServiceAllocator::held_by(&svc);
        held.ip = held.ip.filter(|ip| allocator.ip_in_range(*ip));
        held.ports.retain(|p| allocator.ports.contains(p));
        for op in held.reserve_ops(&svc) {
            let Op::Create { key, .. } = &op else { continue };
            if store.get(key).is_some() {
                continue;
            }
            match store.txn(vec![op.clone()]).await {
                Ok(_) => created += 1,
                Err(StoreError::AlreadyExists { .. }) => {
                    tracing::warn!(%key, service = %svc.name(), namespace = %svc.namespace(), "value held by more than one Service")
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(created)
}

/// Follows the reservation keys from revision `from` until `shutdown`, so this apiserver's
/// allocator learns what other apiservers take and give back. When the store has forgotten
/// the revision it goes on from now (the store still arbitrates every write).
pub async fn follow_reservations(
    store: std::sync::Arc<dyn Store>,
    allocator: std::sync::Arc<ServiceAllocator>,
    from: rkube_store::Revision,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    crate::feed::follow(
        store,
        RESERVATION_KEYS,
        from,
        shutdown,
        "following Service allocations",
        |ev| allocator.observe(&ev.kv.key, ev.kind == EventKind::Put),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed_fields::Writer;
    use crate::State;
    use rkube_api::rpc;
    use std::sync::Arc;

    const CIDR: &str = "10.96.0.0/24";
    const PORTS: &str = "30000-30299";

    /// One apiserver's state over `store`, as `start` builds it: its own allocator, rebuilt
    /// from the stored Services, following the reservation keys.
    async fn apiserver(store: &Arc<dyn Store>, shutdown: &tokio::sync::watch::Receiver<bool>) -> Arc<State> {
        let services = ServiceAllocator::new(CIDR, PORTS).unwrap();
        let from = store.revision();
        crate::repair_service_allocations(store.as_ref(), &services).unwrap();
        reserve_stored(store.as_ref(), &services).await.unwrap();
        let services = Arc::new(services);
        tokio::spawn(follow_reservations(
            store.clone(),
            services.clone(),
            from,
            shutdown.clone(),
        ));
        Arc::new(State {
            store: store.clone(),
            encrypted: Arc::new(crate::encryption::EncryptedStore::new(store.clone(), None)),
            custom: Default::default(),
            shutdown: shutdown.clone(),
            kubelets: crate::proxy::Kubelets::new(&Default::default()).unwrap(),
            services,
            authn: crate::authn::Authenticator::new(false, None).unwrap(),
            authz: crate::authz::Authorizer::new(Default::default(), store.clone()),
            audit: None,
            node_signer: None,
            token_signer: None,
        })
    }

    async fn create(state: &Arc<State>, name: &str) -> Service {
        let svc: Service = serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, namespace: default}}\nspec: {{type: NodePort, ports: [{{port: 80}}]}}\n"
        ))
        .unwrap();
        let req = rpc::CreateRequest {
            namespace: "default".into(),
            object: Some(rkube_api::to_any(&svc)),
            ..Default::default()
        };
        let any = crate::handlers::create::<Service>(state.clone(), req, &Writer::default())
            .await
            .unwrap_or_else(|e| panic!("creating {name}: {}", e.message));
        rkube_api::from_any(&any).unwrap()
    }

    fn keys(store: &dyn Store, prefix: &str) -> Vec<String> {
        let page = store.list(prefix, None, 0, None).unwrap();
        page.items.into_iter().map(|kv| kv.key).collect()
    }

    /// Two apiservers over one store, 200 Services created at once through both: every
    /// ClusterIP and NodePort is handed out once, each has its reservation key, and an
    /// apiserver started later on the store knows them all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_apiservers_over_one_store_never_hand_out_a_value_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(rkube_store::SledStore::open(rkube_store::StoreConfig::new(dir.path())).unwrap());
        crate::bootstrap(store.as_ref()).await.unwrap();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let a = apiserver(&store, &shutdown).await;
        let b = apiserver(&store, &shutdown).await;
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let state = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { create(&state, &format!("s{i}")).await })
            })
            .collect();
        let mut ips = HashSet::new();
        let mut ports = HashSet::new();
        for t in tasks {
            let svc = t.await.unwrap();
            let ip = cluster_ip(&svc).unwrap();
            assert!(ips.insert(ip), "clusterIP {ip} handed out twice");
            for p in node_ports(&svc) {
                assert!(ports.insert(p), "nodePort {p} handed out twice");
            }
        }
        assert_eq!((ips.len(), ports.len()), (200, 200));
        assert_eq!(keys(store.as_ref(), CLUSTER_IP_KEYS).len(), 200);
        assert_eq!(keys(store.as_ref(), NODE_PORT_KEYS).len(), 200);

        // A restarted apiserver knows them all: its next values are new ones.
        let c = apiserver(&store, &shutdown).await;
        assert_eq!(c.services.in_use(), (200, 200));
        let next = create(&c, "after-restart").await;
        assert!(!ips.contains(&cluster_ip(&next).unwrap()));
        assert!(!ports.contains(&node_ports(&next)[0]));

        // A delete gives its values back in the same transaction.
        let req = rpc::DeleteRequest {
            namespace: "default".into(),
            name: "after-restart".into(),
            ..Default::default()
        };
        crate::handlers::delete::<Service>(c.clone(), req).await.unwrap();
        assert!(store.get(&cluster_ip_key(cluster_ip(&next).unwrap())).is_none());
        assert!(store.get(&node_port_key(node_ports(&next)[0])).is_none());
        assert_eq!(keys(store.as_ref(), CLUSTER_IP_KEYS).len(), 200);
        let _ = stop.send(true);
    }

    /// A cluster from before the reservation keys: the first start creates them.
    #[tokio::test]
    async fn stored_services_without_keys_get_them_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(rkube_store::SledStore::open(rkube_store::StoreConfig::new(dir.path())).unwrap());
        let svc: Service = serde_yaml::from_str(
            "metadata: {name: old, namespace: default, uid: u1}\nspec: {type: NodePort, clusterIP: 10.96.0.9, ports: [{port: 80, nodePort: 30009}]}\n",
        )
        .unwrap();
        let key = crate::keys::storage_key(Service::info(), "default", "old");
        store
            .create(&key, prost::Message::encode_to_vec(&svc).into())
            .await
            .unwrap();
        let allocator = ServiceAllocator::new(CIDR, PORTS).unwrap();
        assert_eq!(reserve_stored(store.as_ref(), &allocator).await.unwrap(), 2);
        let held = store.get("ranges/serviceips/10.96.0.9").unwrap();
        assert_eq!(held.value.as_ref(), b"default/old u1");
        assert!(store.get("ranges/servicenodeports/30009").is_some());
        assert_eq!(reserve_stored(store.as_ref(), &allocator).await.unwrap(), 0);
    }
}
