//! A pod's /etc/resolv.conf and /etc/hosts, as Kubernetes' kubelet writes
//! them (pkg/kubelet/network/dns): pure functions of the pod, the node's own
//! resolv.conf and the kubelet's `clusterDNS` / `clusterDomain`.
//!
//! * `ClusterFirst` (the default): the cluster DNS, searching
//!   `NS.svc.DOMAIN svc.DOMAIN DOMAIN` and the node's search domains, with
//!   `ndots:5`. A hostNetwork pod gets the node's file instead, unless its
//!   policy is `ClusterFirstWithHostNet`. Without a cluster DNS configured,
//!   the node's file (Kubernetes does the same, with an event).
//! * `Default`: the node's nameservers, search domains and options.
//! * `None`: only what `dnsConfig` says.
//!
//! `dnsConfig` is merged over the result: nameservers and search domains
//! appended without duplicates, options replaced by name. At most 3
//! nameservers and 32 search domains are written, as resolvers read no more.

use rkube_api::core::v1::Pod;
use rkube_api::Resource;
use std::net::IpAddr;

/// The parts of a resolv.conf the kubelet composes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// `name` or `name:value`, in order.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Reads the lines resolvers understand; `domain` counts as a search.
    pub fn parse(text: &str) -> ResolvConf {
        let mut r = ResolvConf::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => r.nameservers.extend(words.next().map(String::from)),
                // the last search or domain line wins, as in glibc
                Some("search" | "domain") => r.searches = words.map(String::from).collect(),
                Some("options") => r.options.extend(words.map(String::from)),
                _ => {}
            }
        }
        r
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        if !self.searches.is_empty() {
            s.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for ns in &self.nameservers {
            s.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            s.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        s
    }
}

fn option_name(o: &str) -> &str {
    o.split(':').next().unwrap_or(o)
}

/// The pod's resolv.conf: see the module documentation.
pub fn resolv_conf(pod: &Pod, node: &ResolvConf, cluster_dns: &[IpAddr], domain: &str) -> ResolvConf {
    let spec = pod.spec.clone().unwrap_or_default();
    let cluster_policy = match spec.dns_policy.as_str() {
        "ClusterFirstWithHostNet" => true,
        "" | "ClusterFirst" => !spec.host_network,
        _ => false,
    };
    let mut r = match spec.dns_policy.as_str() {
        "None" => ResolvConf::default(),
        _ if cluster_policy && !cluster_dns.is_empty() => {
            let ns = pod.namespace();
            let mut searches = vec![
                format!("{ns}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.to_string(),
            ];
            searches.extend(
                node.searches
                    .iter()
                    .filter(|s| !searches.contains(s))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            ResolvConf {
                nameservers: cluster_dns.iter().map(|ip| ip.to_string()).collect(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        _ => node.clone(),
    };
    if let Some(c) = &spec.dns_config {
        for ns in &c.nameservers {
            if !r.nameservers.contains(ns) {
                r.nameservers.push(ns.clone());
            }
        }
        for s in &c.searches {
            if !r.searches.contains(s) {
                r.searches.push(s.clone());
            }
        }
        for o in &c.options {
            let text = match &o.value {
                Some(v) => format!("{}:{v}", o.name),
                None => o.name.clone(),
            };
            match r.options.iter_mut().find(|x| option_name(x) == o.name) {
                Some(existing) => *existing = text,
                None => r.options.push(text),
            }
        }
    }
    r.nameservers.truncate(rkube_api::validation::MAX_NAMESERVERS);
    r.searches.truncate(rkube_api::validation::MAX_SEARCHES);
    r
}

/// The pod's /etc/hosts (not for hostNetwork pods, which get the node's):
/// localhost, the pod's own name (and its FQDN under a subdomain), then
/// `hostAliases`.
pub fn hosts_file(pod: &Pod, pod_ip: &str, hostname: &str, domain: &str) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut s = String::from(
        "# Kubernetes-managed hosts file (rkubelet).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if !pod_ip.is_empty() {
        if spec.subdomain.is_empty() {
            s.push_str(&format!("{pod_ip}\t{hostname}\n"));
        } else {
            let fqdn = format!("{hostname}.{}.{}.svc.{domain}", spec.subdomain, pod.namespace());
            s.push_str(&format!("{pod_ip}\t{fqdn}\t{hostname}\n"));
        }
    }
    s.push_str(&host_aliases(pod));
    s
}

/// `hostAliases` as hosts-file lines, under Kubernetes' heading.
pub fn host_aliases(pod: &Pod) -> String {
    let aliases = pod
        .spec
        .as_ref()
        .map(|s| s.host_aliases.as_slice())
        .unwrap_or_default();
    if aliases.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        s.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.join("\t")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: &str) -> Pod {
        serde_yaml::from_str(&format!(
            "metadata: {{name: web-0, namespace: shop}}\nspec: {spec}"
        ))
        .unwrap()
    }

    const NODE: &str = "# from the node\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example\noptions timeout:2\n";

    fn conf(spec: &str, dns: &[&str]) -> String {
        let dns: Vec<IpAddr> = dns.iter().map(|s| s.parse().unwrap()).collect();
        resolv_conf(&pod(spec), &ResolvConf::parse(NODE), &dns, "cluster.local").render()
    }

    #[test]
    fn cluster_first_uses_the_cluster_dns_and_searches_the_namespace_first() {
        assert_eq!(
            conf("{containers: []}", &["169.254.20.10"]),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 169.254.20.10\noptions ndots:5\n"
        );
        // without a cluster DNS, or on the host network: the node's file
        let node = "search corp.example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\noptions timeout:2\n";
        assert_eq!(conf("{containers: []}", &[]), node);
        assert_eq!(
            conf("{hostNetwork: true, dnsPolicy: ClusterFirst}", &["169.254.20.10"]),
            node
        );
        assert!(conf(
            "{hostNetwork: true, dnsPolicy: ClusterFirstWithHostNet}",
            &["169.254.20.10"]
        )
        .contains("nameserver 169.254.20.10\n"));
        assert_eq!(conf("{dnsPolicy: Default}", &["169.254.20.10"]), node);
    }

    #[test]
    fn dns_config_is_merged_and_none_is_only_dns_config() {
        assert_eq!(
            conf(
                "{dnsPolicy: None, dnsConfig: {nameservers: [1.1.1.1], searches: [a.example], options: [{name: ndots, value: '2'}, {name: edns0}]}}",
                &["169.254.20.10"]
            ),
            "search a.example\nnameserver 1.1.1.1\noptions ndots:2 edns0\n"
        );
        assert_eq!(
            conf(
                "{dnsConfig: {nameservers: [169.254.20.10, 1.1.1.1, 2.2.2.2, 3.3.3.3], searches: [svc.cluster.local, a.example], options: [{name: ndots, value: '1'}, {name: single-request}]}}",
                &["169.254.20.10"]
            ),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example a.example\nnameserver 169.254.20.10\nnameserver 1.1.1.1\nnameserver 2.2.2.2\noptions ndots:1 single-request\n"
        );
    }

    #[test]
    fn hosts_names_the_pod_and_its_fqdn_under_a_subdomain() {
        let h = hosts_file(&pod("{containers: []}"), "10.244.0.5", "web-0", "cluster.local");
        assert!(h.ends_with("\n10.244.0.5\tweb-0\n"), "{h}");
        let p = pod("{hostname: web-0, subdomain: web, hostAliases: [{ip: 10.0.0.1, hostnames: [a.example, b.example]}]}");
        let h = hosts_file(&p, "10.244.0.5", "web-0", "cluster.local");
        assert!(
            h.contains("\n10.244.0.5\tweb-0.web.shop.svc.cluster.local\tweb-0\n"),
            "{h}"
        );
        assert!(
            h.ends_with("# Entries added by HostAliases.\n10.0.0.1\ta.example\tb.example\n"),
            "{h}"
        );
    }
}
