//! The cluster's DNS names, built from Services, Endpoints and Pods: a
//! pure function from the caches to a table, and lookups in that table. No
//! sockets, no clocks; the server module puts it on the wire.
//!
//! Names follow Kubernetes' DNS specification
//! (<https://github.com/kubernetes/dns/blob/master/docs/specification.md>):
//!
//! * `SVC.NS.svc.DOMAIN`: A/AAAA of the ClusterIPs; for a headless Service
//!   the ready endpoints' addresses; for an ExternalName Service a CNAME.
//! * `HOST.SVC.NS.svc.DOMAIN` for each ready endpoint of a headless Service:
//!   HOST is the pod's `hostname` when its `subdomain` is the Service (as
//!   StatefulSet pods have), else the address with dashes (`10-244-0-5`).
//! * `_PORT._PROTO.SVC.NS.svc.DOMAIN`: SRV for each named port, the targets'
//!   addresses in the additional section.
//! * `A-B-C-D.NS.pod.DOMAIN`: A of a pod in NS with that address.
//! * `D.C.B.A.in-addr.arpa` (and `ip6.arpa`): PTR of ClusterIPs, of headless
//!   endpoints with a hostname, and of pod addresses.
//!
//! A name under DOMAIN that is not in the table is NXDOMAIN unless a longer
//! name exists below it (an "empty non-terminal", e.g. `NS.svc.DOMAIN`):
//! then, as for an existing name asked for a type it does not have, the
//! answer is NODATA. Reverse names the cluster does not own are forwarded.

use rkube_api::core::v1::{Endpoints, Pod, Service};
use rkube_api::Resource;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// The record types the zone answers; anything else at an existing name is
/// NODATA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryType {
    A,
    Aaaa,
    Cname,
    Srv,
    Ptr,
    Soa,
    /// ANY: every record at the name.
    Any,
    Other,
}

/// One record's data. Names are absolute, lowercase, without the final dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Srv { weight: u16, port: u16, target: String },
    Ptr(String),
}

impl Rdata {
    fn matches(&self, t: QueryType) -> bool {
        matches!(
            (self, t),
            (_, QueryType::Any)
                | (Rdata::A(_), QueryType::A)
                | (Rdata::Aaaa(_), QueryType::Aaaa)
                | (Rdata::Cname(_), QueryType::Cname)
                | (Rdata::Srv { .. }, QueryType::Srv)
                | (Rdata::Ptr(_), QueryType::Ptr)
        )
    }
}

/// What the cluster says about a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Not a cluster name: ask the node's resolvers.
    Forward,
    /// The name does not exist (with the zone's SOA as authority).
    NxDomain,
    /// The name exists without records of that type.
    NoData,
    /// The zone apex's SOA.
    Soa,
    /// Records at the query name, and records at other names that help
    /// (the addresses of SRV targets).
    Records {
        answers: Vec<Rdata>,
        additionals: Vec<(String, Rdata)>,
    },
}

/// The table of one moment of the caches.
#[derive(Debug, Default)]
pub struct Zone {
    domain: String,
    records: HashMap<String, Vec<Rdata>>,
    /// Names that exist only because longer names do.
    non_terminals: HashSet<String>,
}

/// `name` lowercased, without the final dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The reverse-lookup name of an address (`5.0.96.10.in-addr.arpa`).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

/// An address as one DNS label: `10-244-0-5`, or for IPv6 the
/// colon-separated form with dashes (`fd00--5`), as Kubernetes spells them.
pub fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

impl Zone {
    /// The zone for `domain` (e.g. `cluster.local`) from the caches' current
    /// objects. Endpoints are looked up by their Service's namespace and name.
    pub fn build(
        domain: &str,
        services: &[Arc<Service>],
        endpoints_of: impl Fn(&str, &str) -> Option<Arc<Endpoints>>,
        pods: &[Arc<Pod>],
    ) -> Zone {
        let mut z = Zone {
            domain: normalize(domain),
            ..Zone::default()
        };
        for svc in services {
            z.add_service(svc, endpoints_of(svc.namespace(), svc.name()).as_deref());
        }
        let mut pod_ips: HashMap<IpAddr, usize> = HashMap::new();
        let mut pod_names = Vec::new();
        for pod in pods {
            let Some(status) = &pod.status else { continue };
            if pod.spec.as_ref().is_some_and(|s| s.host_network) {
                continue; // the node's address, not the pod's
            }
            let ips = std::iter::once(&status.pod_ip)
                .chain(status.pod_ips.iter().map(|p| &p.ip))
                .filter_map(|s| s.parse::<IpAddr>().ok())
                .collect::<HashSet<_>>();
            for ip in ips {
                *pod_ips.entry(ip).or_default() += 1;
                pod_names.push((ip, pod.namespace().to_string()));
            }
        }
        for (ip, ns) in pod_names {
            let name = format!("{}.{ns}.pod.{}", dashed(ip), z.domain);
            z.add(&name, address(ip));
            // A reverse name has one owner: a headless hostname wins, and an
            // address two pods claim (one finishing, one starting) has none.
            let rev = reverse_name(ip);
            if pod_ips[&ip] == 1 && !z.records.contains_key(&rev) {
                z.records.entry(rev).or_default().push(Rdata::Ptr(name));
            }
        }
        for recs in z.records.values_mut() {
            recs.dedup();
        }
        z
    }

    fn add(&mut self, name: &str, rdata: Rdata) {
        self.add_ancestors(name);
        let recs = self.records.entry(name.to_string()).or_default();
        if !recs.contains(&rdata) {
            recs.push(rdata);
        }
    }

    fn add_service(&mut self, svc: &Service, endpoints: Option<&Endpoints>) {
        let Some(spec) = &svc.spec else { return };
        let base = format!("{}.{}.svc.{}", svc.name(), svc.namespace(), self.domain);
        if spec.r#type == "ExternalName" {
            let target = normalize(&spec.external_name);
            if !target.is_empty() {
                self.add(&base, Rdata::Cname(target));
            }
            return;
        }
        let cluster_ips: Vec<IpAddr> = std::iter::once(&spec.cluster_ip)
            .chain(&spec.cluster_ips)
            .filter_map(|s| s.parse().ok())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let headless = spec.cluster_ip == "None";
        if !headless {
            if cluster_ips.is_empty() {
                return; // not allocated yet
            }
            let mut ips = cluster_ips;
            ips.sort();
            for ip in &ips {
                self.add(&base, address(*ip));
                self.records
                    .entry(reverse_name(*ip))
                    .or_default()
                    .push(Rdata::Ptr(base.clone()));
            }
            for p in spec.ports.iter().filter(|p| !p.name.is_empty()) {
                let Ok(port) = u16::try_from(p.port) else { continue };
                let srv = format!("_{}._{}.{base}", p.name, proto(&p.protocol));
                self.add(
                    &srv,
                    Rdata::Srv {
                        weight: 100,
                        port,
                        target: base.clone(),
                    },
                );
            }
            return;
        }
        // Headless: the ready endpoints, each under a name of its own.
        let Some(eps) = endpoints else {
            // exists, with no addresses yet
            self.non_terminals.insert(base.clone());
            self.add_ancestors(&base);
            return;
        };
        let mut any = false;
        let mut srvs: Vec<(String, u16, String)> = Vec::new();
        for subset in &eps.subsets {
            for a in &subset.addresses {
                let Ok(ip) = a.ip.parse::<IpAddr>() else { continue };
                any = true;
                let host = if a.hostname.is_empty() {
                    dashed(ip)
                } else {
                    a.hostname.to_ascii_lowercase()
                };
                let target = format!("{host}.{base}");
                self.add(&base, address(ip));
                self.add(&target, address(ip));
                if !a.hostname.is_empty() {
                    let recs = self.records.entry(reverse_name(ip)).or_default();
                    if !recs.contains(&Rdata::Ptr(target.clone())) {
                        recs.push(Rdata::Ptr(target.clone()));
                    }
                }
                for p in subset.ports.iter().filter(|p| !p.name.is_empty()) {
                    let Ok(port) = u16::try_from(p.port) else { continue };
                    let srv = format!("_{}._{}.{base}", p.name, proto(&p.protocol));
                    srvs.push((srv, port, target.clone()));
                }
            }
        }
        if !any {
            self.non_terminals.insert(base.clone());
            self.add_ancestors(&base);
        }
        // weights split 100 over each name's targets, as CoreDNS does
        let mut per_name: HashMap<&str, u16> = HashMap::new();
        for (srv, _, _) in &srvs {
            *per_name.entry(srv).or_default() += 1;
        }
        let weights: HashMap<String, u16> = per_name
            .into_iter()
            .map(|(k, n)| (k.to_string(), (100 / n).max(1)))
            .collect();
        for (srv, port, target) in srvs {
            let weight = weights[&srv];
            self.add(&srv, Rdata::Srv { weight, port, target });
        }
    }

    /// Every name between `name` and the domain exists.
    fn add_ancestors(&mut self, name: &str) {
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            if !self.owns(parent) {
                break;
            }
            self.non_terminals.insert(parent.to_string());
            rest = parent;
        }
    }

    /// Whether `name` (normalized) is the cluster domain or under it.
    pub fn owns(&self, name: &str) -> bool {
        name == self.domain
            || (name.len() > self.domain.len()
                && name.ends_with(&self.domain)
                && name.as_bytes()[name.len() - self.domain.len() - 1] == b'.')
    }

    /// The domain this zone answers (`cluster.local`).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// What the cluster says about `name` (any case, final dot or not).
    pub fn lookup(&self, name: &str, qtype: QueryType) -> Answer {
        let name = normalize(name);
        let reverse = name.ends_with(".in-addr.arpa") || name.ends_with(".ip6.arpa");
        if !reverse && !self.owns(&name) {
            return Answer::Forward;
        }
        if name == self.domain && qtype == QueryType::Soa {
            return Answer::Soa;
        }
        let Some(recs) = self.records.get(&name) else {
            if reverse {
                return Answer::Forward;
            }
            if name == self.domain || self.non_terminals.contains(&name) {
                return Answer::NoData;
            }
            return Answer::NxDomain;
        };
        // A CNAME stands for every type at its name.
        let cname: Vec<Rdata> = recs
            .iter()
            .filter(|r| matches!(r, Rdata::Cname(_)))
            .cloned()
            .collect();
        let answers: Vec<Rdata> = if cname.is_empty() {
            recs.iter().filter(|r| r.matches(qtype)).cloned().collect()
        } else {
            cname
        };
        if answers.is_empty() {
            return Answer::NoData;
        }
        let mut additionals = Vec::new();
        for r in &answers {
            if let Rdata::Srv { target, .. } = r {
                for a in self.records.get(target).into_iter().flatten() {
                    if matches!(a, Rdata::A(_) | Rdata::Aaaa(_)) {
                        additionals.push((target.clone(), a.clone()));
                    }
                }
            }
        }
        Answer::Records { answers, additionals }
    }
}

fn address(ip: IpAddr) -> Rdata {
    match ip {
        IpAddr::V4(v4) => Rdata::A(v4),
        IpAddr::V6(v6) => Rdata::Aaaa(v6),
    }
}

fn proto(protocol: &str) -> String {
    if protocol.is_empty() {
        "tcp".into()
    } else {
        protocol.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(yaml: &str) -> Arc<Service> {
        Arc::new(serde_yaml::from_str(yaml).unwrap())
    }

    fn eps(yaml: &str) -> Arc<Endpoints> {
        Arc::new(serde_yaml::from_str(yaml).unwrap())
    }

    fn pod(yaml: &str) -> Arc<Pod> {
        Arc::new(serde_yaml::from_str(yaml).unwrap())
    }

    fn zone() -> Zone {
        let services = vec![
            svc("metadata: {name: web, namespace: shop}\nspec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}, {port: 8080}, {name: dns, port: 53, protocol: UDP}]}"),
            svc("metadata: {name: db, namespace: shop}\nspec: {clusterIP: None, ports: [{name: pg, port: 5432}]}"),
            svc("metadata: {name: empty, namespace: shop}\nspec: {clusterIP: None}"),
            svc("metadata: {name: search, namespace: shop}\nspec: {type: ExternalName, externalName: Search.Example.COM.}"),
            svc("metadata: {name: v6, namespace: default}\nspec: {clusterIP: 'fd00::a', clusterIPs: ['fd00::a']}"),
        ];
        let endpoints = eps("metadata: {name: db, namespace: shop}\nsubsets:\n- addresses: [{ip: 10.244.0.5, hostname: db-0}, {ip: 10.244.1.7}]\n  notReadyAddresses: [{ip: 10.244.2.9, hostname: db-2}]\n  ports: [{name: pg, port: 5432}]\n");
        let pods = vec![
            pod("metadata: {name: a, namespace: shop}\nstatus: {podIP: 10.244.1.7}"),
            pod("metadata: {name: db-0, namespace: shop}\nstatus: {podIP: 10.244.0.5}"),
            pod("metadata: {name: host, namespace: shop}\nspec: {hostNetwork: true, containers: []}\nstatus: {podIP: 172.30.0.10}"),
        ];
        Zone::build(
            "Cluster.Local.",
            &services,
            |ns, name| (ns == "shop" && name == "db").then(|| endpoints.clone()),
            &pods,
        )
    }

    fn records(a: Answer) -> Vec<Rdata> {
        match a {
            Answer::Records { answers, .. } => answers,
            other => panic!("expected records, got {other:?}"),
        }
    }

    #[test]
    fn services_answer_their_cluster_ips_and_nothing_else() {
        let z = zone();
        assert_eq!(
            records(z.lookup("WEB.shop.svc.cluster.local.", QueryType::A)),
            [Rdata::A(Ipv4Addr::new(10, 96, 0, 10))]
        );
        assert_eq!(
            z.lookup("web.shop.svc.cluster.local", QueryType::Aaaa),
            Answer::NoData
        );
        assert_eq!(
            records(z.lookup("v6.default.svc.cluster.local", QueryType::Aaaa)),
            [Rdata::Aaaa("fd00::a".parse().unwrap())]
        );
        assert_eq!(
            z.lookup("nope.shop.svc.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(
            z.lookup("web.other.svc.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        // names that exist because longer ones do: NODATA, not NXDOMAIN
        for n in ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"] {
            assert_eq!(z.lookup(n, QueryType::A), Answer::NoData, "{n}");
        }
        assert_eq!(z.lookup("cluster.local", QueryType::Soa), Answer::Soa);
        assert_eq!(z.lookup("example.com", QueryType::A), Answer::Forward);
        assert_eq!(z.lookup("notcluster.local", QueryType::A), Answer::Forward);
    }

    #[test]
    fn named_ports_have_srv_records_with_their_targets_addresses() {
        let z = zone();
        let Answer::Records { answers, additionals } =
            z.lookup("_http._tcp.web.shop.svc.cluster.local", QueryType::Srv)
        else {
            panic!()
        };
        assert_eq!(
            answers,
            [Rdata::Srv {
                weight: 100,
                port: 80,
                target: "web.shop.svc.cluster.local".into()
            }]
        );
        assert_eq!(
            additionals,
            [(
                "web.shop.svc.cluster.local".into(),
                Rdata::A(Ipv4Addr::new(10, 96, 0, 10))
            )]
        );
        assert!(matches!(
            z.lookup("_dns._udp.web.shop.svc.cluster.local", QueryType::Srv),
            Answer::Records { .. }
        ));
        assert_eq!(
            z.lookup("_dns._tcp.web.shop.svc.cluster.local", QueryType::Srv),
            Answer::NxDomain
        );
        assert_eq!(
            z.lookup("_tcp.web.shop.svc.cluster.local", QueryType::Srv),
            Answer::NoData
        );
        // headless: one target per ready endpoint, named by hostname or address
        let Answer::Records { answers, additionals } =
            z.lookup("_pg._tcp.db.shop.svc.cluster.local", QueryType::Srv)
        else {
            panic!()
        };
        let targets: Vec<_> = answers
            .iter()
            .map(|r| match r {
                Rdata::Srv {
                    target,
                    weight: 50,
                    port: 5432,
                } => target.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            [
                "db-0.db.shop.svc.cluster.local",
                "10-244-1-7.db.shop.svc.cluster.local"
            ]
        );
        assert_eq!(additionals.len(), 2);
    }

    #[test]
    fn headless_services_answer_ready_endpoints_and_their_hostnames() {
        let z = zone();
        assert_eq!(
            records(z.lookup("db.shop.svc.cluster.local", QueryType::A)),
            [
                Rdata::A(Ipv4Addr::new(10, 244, 0, 5)),
                Rdata::A(Ipv4Addr::new(10, 244, 1, 7))
            ]
        );
        assert_eq!(
            records(z.lookup("db-0.db.shop.svc.cluster.local", QueryType::A)),
            [Rdata::A(Ipv4Addr::new(10, 244, 0, 5))]
        );
        // not ready: not published
        assert_eq!(
            z.lookup("db-2.db.shop.svc.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        // a headless Service without ready endpoints exists, empty
        assert_eq!(
            z.lookup("empty.shop.svc.cluster.local", QueryType::A),
            Answer::NoData
        );
    }

    #[test]
    fn external_names_are_cnames_for_every_type() {
        let z = zone();
        for t in [QueryType::A, QueryType::Aaaa, QueryType::Cname] {
            assert_eq!(
                records(z.lookup("search.shop.svc.cluster.local", t)),
                [Rdata::Cname("search.example.com".into())]
            );
        }
    }

    #[test]
    fn pods_and_reverse_names() {
        let z = zone();
        assert_eq!(
            records(z.lookup("10-244-1-7.shop.pod.cluster.local", QueryType::A)),
            [Rdata::A(Ipv4Addr::new(10, 244, 1, 7))]
        );
        assert_eq!(
            z.lookup("10-244-1-7.default.pod.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(
            z.lookup("172-30-0-10.shop.pod.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        let ptr = |ip: &str| records(z.lookup(&reverse_name(ip.parse().unwrap()), QueryType::Ptr));
        assert_eq!(
            ptr("10.96.0.10"),
            [Rdata::Ptr("web.shop.svc.cluster.local".into())]
        );
        assert_eq!(
            ptr("10.244.0.5"),
            [Rdata::Ptr("db-0.db.shop.svc.cluster.local".into())]
        );
        assert_eq!(
            ptr("10.244.1.7"),
            [Rdata::Ptr("10-244-1-7.shop.pod.cluster.local".into())]
        );
        assert_eq!(
            ptr("fd00::a"),
            [Rdata::Ptr("v6.default.svc.cluster.local".into())]
        );
        assert_eq!(
            reverse_name("fd00::a".parse().unwrap()),
            "a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa"
        );
        // reverse names of addresses the cluster does not know: the node's resolvers
        assert_eq!(
            z.lookup("1.1.168.192.in-addr.arpa", QueryType::Ptr),
            Answer::Forward
        );
        assert_eq!(
            z.lookup(&reverse_name("10.96.0.10".parse().unwrap()), QueryType::A),
            Answer::NoData
        );
    }
}
