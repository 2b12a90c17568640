//! What NetworkPolicies ask of this node, derived from policies, pods and namespaces:
//! for each local pod isolated for ingress (egress), the policy chains whose rules may let
//! its traffic through. Pure: no I/O, so it is tested alone.
//!
//! Each node enforces the policies of its own pods only: ingress rules where the pod
//! receives, egress rules where it sends. Peers are resolved cluster-wide.

use rkube_api::core::v1::{Namespace, Pod};
use rkube_api::intstr::IntOrString;
use rkube_api::meta::v1::LabelSelector;
use rkube_api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use rkube_api::selector::Selector;
use rkube_api::validation::parse_any_cidr;
use rkube_api::Resource;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// The label every namespace carries with its own name (Kubernetes sets it; it is
/// implied here so `namespaceSelector` by name works on every namespace).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4 {
    Tcp,
    Udp,
    Sctp,
}

impl L4 {
    fn parse(s: &str) -> Option<L4> {
        match s {
            "" | "TCP" => Some(L4::Tcp),
            "UDP" => Some(L4::Udp),
            "SCTP" => Some(L4::Sctp),
            _ => None,
        }
    }

    /// The name nft uses.
    pub fn nft(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
            L4::Sctp => "sctp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

/// An IPv4 CIDR block less its exceptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub net: (Ipv4Addr, u8),
    pub except: Vec<(Ipv4Addr, u8)>,
}

/// The peers a rule allows: pod addresses and address blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peers {
    pub pods: BTreeSet<Ipv4Addr>,
    pub blocks: Vec<Block>,
}

/// Inclusive port ranges, merged per protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    pub protocol: L4,
    pub first: u16,
    pub last: u16,
}

/// The ports a rule allows: numbers and ranges, and named ports resolved to
/// (destination pod, protocol, number).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ports {
    pub ranges: Vec<PortRange>,
    pub named: BTreeSet<(Ipv4Addr, L4, u16)>,
}

/// One rule: traffic must match a peer and a port. `None` means any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub peers: Option<Peers>,
    pub ports: Option<Ports>,
}

/// One direction of one policy: its rules, in the policy's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyChain {
    /// `namespace/name`, for comments and logs.
    pub policy: String,
    pub direction: Direction,
    pub rules: Vec<Rule>,
}

/// Everything the dataplane must enforce on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub chains: Vec<PolicyChain>,
    /// Local pods isolated for ingress, with the chains (indices) that may allow traffic in.
    pub ingress: BTreeMap<Ipv4Addr, Vec<usize>>,
    /// Local pods isolated for egress, with the chains that may allow traffic out.
    pub egress: BTreeMap<Ipv4Addr, Vec<usize>>,
}

/// Something in a policy this node cannot honour, for an event on the policy.
#[derive(Clone, Debug)]
pub struct Problem {
    pub policy: Arc<NetworkPolicy>,
    pub reason: &'static str,
    pub message: String,
}

/// The address a pod is reached at as a peer or a target: running or pending pods with an
/// IPv4 address of their own (host-network pods share the node's and are left out, as
/// Kubernetes leaves them out of policies).
pub fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    let spec = pod.spec.as_ref()?;
    let status = pod.status.as_ref()?;
    if spec.host_network || matches!(status.phase.as_str(), "Succeeded" | "Failed") {
        return None;
    }
    status.pod_ip.parse().ok()
}

fn selector(sel: Option<&LabelSelector>) -> Option<Selector> {
    Selector::from_label_selector(sel?).ok()
}

/// Indexes over the informers' contents that every policy reads.
struct Cluster<'a> {
    /// Pods with an address, with it.
    pods: Vec<(&'a Pod, Ipv4Addr)>,
    /// Namespace labels, the implied name label included.
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl Cluster<'_> {
    fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.namespaces
            .get(ns)
            .cloned()
            .unwrap_or_else(|| BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), ns.to_string())]))
    }

    fn pods_in<'s>(
        &'s self,
        ns: &'s str,
        sel: &'s Selector,
    ) -> impl Iterator<Item = &'s (&'s Pod, Ipv4Addr)> {
        self.pods
            .iter()
            .filter(move |(p, _)| p.namespace() == ns && sel.matches(&p.metadata().labels))
    }
}

/// The plan for node `node`, and what could not be honoured.
pub fn plan(
    node: &str,
    policies: &[Arc<NetworkPolicy>],
    pods: &[Arc<Pod>],
    namespaces: &[Arc<Namespace>],
) -> (Plan, Vec<Problem>) {
    let cluster = Cluster {
        pods: pods
            .iter()
            .filter_map(|p| Some((p.as_ref(), pod_ip(p)?)))
            .collect(),
        namespaces: namespaces
            .iter()
            .map(|n| {
                let mut labels = n.metadata().labels.clone();
                labels.insert(NAMESPACE_NAME_LABEL.into(), n.name().into());
                (n.name().to_string(), labels)
            })
            .collect(),
    };
    let mut sorted: Vec<&Arc<NetworkPolicy>> = policies.iter().collect();
    sorted.sort_by_key(|p| (p.namespace().to_string(), p.name().to_string()));
    let mut plan = Plan::default();
    let mut problems = Vec::new();
    for policy in sorted {
        let Some(spec) = &policy.spec else { continue };
        let Some(target_sel) = selector(spec.pod_selector.as_ref())
            .or_else(|| spec.pod_selector.is_none().then(Selector::everything))
        else {
            continue;
        };
        let ns = policy.namespace();
        let targets: Vec<(&Pod, Ipv4Addr)> = cluster
            .pods_in(ns, &target_sel)
            .filter(|(p, _)| p.spec.as_ref().is_some_and(|s| s.node_name == node))
            .copied()
            .collect();
        if targets.is_empty() {
            continue;
        }
        let mut report = |reason: &'static str, message: String| {
            problems.push(Problem {
                policy: policy.clone(),
                reason,
                message,
            })
        };
        for (direction, kind) in [(Direction::Ingress, "Ingress"), (Direction::Egress, "Egress")] {
            if !spec.policy_types.iter().any(|t| t == kind) {
                continue;
            }
            let rules: Vec<(&[NetworkPolicyPort], &[NetworkPolicyPeer])> = match direction {
                Direction::Ingress => spec.ingress.iter().map(|r| (&r.ports[..], &r.from[..])).collect(),
                Direction::Egress => spec.egress.iter().map(|r| (&r.ports[..], &r.to[..])).collect(),
            };
            let field = if direction == Direction::Ingress {
                "ingress"
            } else {
                "egress"
            };
            let rules = rules
                .into_iter()
                .enumerate()
                .map(|(i, (ports, peers))| {
                    let f = format!("spec.{field}[{i}]");
                    // named ports live on the pod receiving: the target for ingress, the
                    // destination pod for egress
                    let port_pods: &[(&Pod, Ipv4Addr)] = match direction {
                        Direction::Ingress => &targets,
                        Direction::Egress => &cluster.pods,
                    };
                    let peers_field = match direction {
                        Direction::Ingress => format!("{f}.from"),
                        Direction::Egress => format!("{f}.to"),
                    };
                    Rule {
                        peers: (!peers.is_empty())
                            .then(|| resolve_peers(peers, ns, &cluster, &peers_field, &mut report)),
                        ports: (!ports.is_empty()).then(|| resolve_ports(ports, port_pods, &f, &mut report)),
                    }
                })
                .collect();
            let index = plan.chains.len();
            plan.chains.push(PolicyChain {
                policy: policy.key(),
                direction,
                rules,
            });
            let isolated = match direction {
                Direction::Ingress => &mut plan.ingress,
                Direction::Egress => &mut plan.egress,
            };
            for (_, ip) in &targets {
                isolated.entry(*ip).or_default().push(index);
            }
        }
    }
    (plan, problems)
}

fn resolve_peers(
    peers: &[NetworkPolicyPeer],
    ns: &str,
    cluster: &Cluster<'_>,
    f: &str,
    report: &mut impl FnMut(&'static str, String),
) -> Peers {
    let mut out = Peers::default();
    for (j, peer) in peers.iter().enumerate() {
        if let Some(block) = &peer.ip_block {
            match ipv4_block(&block.cidr, &block.except) {
                Some(b) => out.blocks.push(b),
                None => report(
                    "IPBlockIgnored",
                    format!("{f}[{j}].ipBlock {:?} is not an IPv4 block; the cluster network is IPv4, so it matches nothing", block.cidr),
                ),
            }
            continue;
        }
        let pod_sel = match &peer.pod_selector {
            Some(s) => selector(Some(s)),
            None => Some(Selector::everything()),
        };
        let Some(pod_sel) = pod_sel else { continue };
        match &peer.namespace_selector {
            None => out.pods.extend(cluster.pods_in(ns, &pod_sel).map(|(_, ip)| *ip)),
            Some(ns_sel) => {
                let Some(ns_sel) = selector(Some(ns_sel)) else {
                    continue;
                };
                out.pods.extend(
                    cluster
                        .pods
                        .iter()
                        .filter(|(p, _)| {
                            ns_sel.matches(&cluster.namespace_labels(p.namespace()))
                                && pod_sel.matches(&p.metadata().labels)
                        })
                        .map(|(_, ip)| *ip),
                );
            }
        }
    }
    out
}

fn ipv4_block(cidr: &str, except: &[String]) -> Option<Block> {
    let v4 = |s: &str| match parse_any_cidr(s)? {
        (IpAddr::V4(a), len) => Some((mask(a, len), len)),
        _ => None,
    };
    Some(Block {
        net: v4(cidr)?,
        except: except.iter().filter_map(|e| v4(e)).collect(),
    })
}

/// `a` with the bits past `len` cleared (nft refuses a CIDR with host bits set).
fn mask(a: Ipv4Addr, len: u8) -> Ipv4Addr {
    let bits = u32::from(a);
    let m = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    Ipv4Addr::from(bits & m)
}

fn resolve_ports(
    ports: &[NetworkPolicyPort],
    port_pods: &[(&Pod, Ipv4Addr)],
    f: &str,
    report: &mut impl FnMut(&'static str, String),
) -> Ports {
    let mut out = Ports::default();
    for (j, p) in ports.iter().enumerate() {
        let Some(protocol) = L4::parse(p.protocol.as_deref().unwrap_or("TCP")) else {
            continue;
        };
        match &p.port {
            None => out.ranges.push(PortRange {
                protocol,
                first: 0,
                last: u16::MAX,
            }),
            Some(IntOrString {
                r#type: 1, str_val, ..
            }) => {
                let before = out.named.len();
                for (pod, ip) in port_pods {
                    let containers = pod.spec.iter().flat_map(|s| &s.containers);
                    for cp in containers.flat_map(|c| &c.ports) {
                        if cp.name == *str_val && L4::parse(&cp.protocol) == Some(protocol) {
                            if let Ok(n) = u16::try_from(cp.container_port) {
                                out.named.insert((*ip, protocol, n));
                            }
                        }
                    }
                }
                if out.named.len() == before {
                    report(
                        "NamedPortNotFound",
                        format!(
                            "{f}.ports[{j}]: no pod it applies to has a {} container port named {str_val:?}; the port allows nothing",
                            protocol.nft().to_uppercase()
                        ),
                    );
                }
            }
            Some(number) => {
                let Ok(first) = u16::try_from(number.int_val) else {
                    continue;
                };
                let last = p
                    .end_port
                    .and_then(|e| u16::try_from(e).ok())
                    .filter(|e| *e >= first)
                    .unwrap_or(first);
                out.ranges.push(PortRange {
                    protocol,
                    first,
                    last,
                });
            }
        }
    }
    out.ranges = merge(std::mem::take(&mut out.ranges));
    out
}

/// Overlapping and adjacent ranges of one protocol become one (an interval set refuses
/// overlaps).
fn merge(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(prev) if prev.protocol == r.protocol && u32::from(r.first) <= u32::from(prev.last) + 1 => {
                prev.last = prev.last.max(r.last);
            }
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj<T: serde::de::DeserializeOwned>(yaml: &str) -> Arc<T> {
        Arc::new(serde_yaml::from_str(yaml).unwrap())
    }

    fn pod(ns: &str, name: &str, labels: &str, node: &str, ip: &str) -> Arc<Pod> {
        obj(&format!("metadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\nspec: {{nodeName: {node}, containers: [{{name: c, image: x, ports: [{{name: http, containerPort: 8080}}, {{name: dns, containerPort: 53, protocol: UDP}}]}}]}}\nstatus: {{phase: Running, podIP: {ip}}}\n"))
    }

    fn policy(yaml: &str) -> Arc<NetworkPolicy> {
        use rkube_api::defaults::Defaulting;
        let mut p: NetworkPolicy = serde_yaml::from_str(yaml).unwrap();
        p.apply_defaults();
        Arc::new(p)
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn local_selected_pods_are_isolated_and_peers_resolve_cluster_wide() {
        let pods = [
            pod("shop", "db", "app: db", "n1", "10.244.1.5"),
            pod("shop", "db-2", "app: db", "n2", "10.244.2.5"),
            pod("shop", "web", "app: web", "n2", "10.244.2.6"),
            pod("ops", "probe", "app: probe", "n1", "10.244.1.9"),
            pod("shop", "other", "app: other", "n1", "10.244.1.7"),
        ];
        let namespaces = [obj::<Namespace>("metadata: {name: ops, labels: {team: ops}}\n")];
        let policies = [policy(
            "metadata: {name: db, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: web}}}, {namespaceSelector: {matchLabels: {team: ops}}}]\n    ports: [{port: http}, {port: 5432, endPort: 5440}, {port: 5435}, {protocol: UDP, port: dns}]\n  - from: [{ipBlock: {cidr: 192.168.1.1/16, except: [192.168.7.0/24]}}, {ipBlock: {cidr: '2001:db8::/64'}}]\n",
        )];
        let (plan, problems) = plan("n1", &policies, &pods, &namespaces);
        // only db on n1 is isolated here (db-2 is n2's business; `other` is not selected)
        assert_eq!(plan.ingress, BTreeMap::from([(ip("10.244.1.5"), vec![0])]));
        assert!(plan.egress.is_empty());
        let rule = &plan.chains[0].rules[0];
        let peers = rule.peers.as_ref().unwrap();
        assert_eq!(peers.pods, BTreeSet::from([ip("10.244.2.6"), ip("10.244.1.9")]));
        let ports = rule.ports.as_ref().unwrap();
        assert_eq!(
            ports.ranges,
            [PortRange {
                protocol: L4::Tcp,
                first: 5432,
                last: 5440
            }]
        );
        assert_eq!(
            ports.named,
            BTreeSet::from([(ip("10.244.1.5"), L4::Tcp, 8080), (ip("10.244.1.5"), L4::Udp, 53)])
        );
        let blocks = &plan.chains[0].rules[1].peers.as_ref().unwrap().blocks;
        assert_eq!(
            blocks,
            &[Block {
                net: (ip("192.168.0.0"), 16),
                except: vec![(ip("192.168.7.0"), 24)]
            }]
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].reason, "IPBlockIgnored");
    }

    #[test]
    fn default_deny_egress_and_missing_names_are_reported_not_fatal() {
        let pods = [pod("shop", "web", "app: web", "n1", "10.244.1.6")];
        let policies = [
            policy("metadata: {name: deny-all, namespace: shop}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n"),
            policy("metadata: {name: named, namespace: shop}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: nope}]}]\n"),
            policy("metadata: {name: elsewhere, namespace: other}\nspec: {podSelector: {}}\n"),
        ];
        let (plan, problems) = plan("n1", &policies, &pods, &[]);
        assert_eq!(plan.chains.len(), 3);
        assert!(plan.chains[0].rules.is_empty(), "deny-all has no rules");
        assert_eq!(plan.ingress[&ip("10.244.1.6")], vec![0, 2]);
        assert_eq!(plan.egress[&ip("10.244.1.6")], vec![1]);
        // the named port matches nothing: the rule allows nothing, the others stand
        assert_eq!(plan.chains[2].rules[0].ports, Some(Ports::default()));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].reason, "NamedPortNotFound");
        assert!(
            problems[0].message.contains("spec.ingress[0].ports[0]"),
            "{}",
            problems[0].message
        );
    }
}
