//! What NetworkPolicies ask of this node, derived from policies, pods and namespaces:
//! for each local pod isolated for ingress (egress), the policy chains whose rules may let
//! its traffic through. Pure: no I/O, so it is tested alone.
//!
//! Each node enforces the policies of its own pods only: ingress rules where the pod
//! receives, egress rules where it sends. Peers are resolved cluster-wide.
//!
//! Linear in policies and pods, not their product: pods are indexed by namespace and by
//! label, each distinct selector is resolved once per plan, and a peer set several rules
//! name (every pod of a namespace, say) is one shared `Arc`, which the renderer declares
//! once.

use rkube_api::core::v1::{Namespace, Pod};
use rkube_api::intstr::IntOrString;
use rkube_api::meta::v1::LabelSelector;
use rkube_api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use rkube_api::selector::{Requirement, Selector};
use rkube_api::validation::parse_any_cidr;
use rkube_api::Resource;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// Shared between the rules whose peers resolve to the same pods.
    pub pods: Arc<BTreeSet<Ipv4Addr>>,
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

/// Indexes over the informers' contents that every policy reads, and what has been
/// resolved from them so far.
struct Cluster<'a> {
    /// Pods with an address, with it.
    pods: Vec<(&'a Pod, Ipv4Addr)>,
    /// Namespace labels, the implied name label included.
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Pods (indices into `pods`) by namespace.
    by_namespace: BTreeMap<&'a str, Vec<usize>>,
    /// Pods by namespace and label.
    by_label: HashMap<(&'a str, &'a str, &'a str), Vec<usize>>,
    /// The pods of a namespace a selector picks, by (namespace, selector).
    selected: Memo<(String, String), Vec<usize>>,
    /// The addresses a peer names, by (namespace, pod selector, namespace selector).
    peers: Memo<(String, String, String), BTreeSet<Ipv4Addr>>,
    /// Named ports over every pod, by (name, protocol).
    named: Memo<(String, L4), Vec<NamedPort>>,
}

/// What one plan has resolved so far, shared with every rule that asks again.
type Memo<K, V> = RefCell<HashMap<K, Arc<V>>>;

/// A named port resolved on one pod: its address, protocol and number.
type NamedPort = (Ipv4Addr, L4, u16);

/// A selector's identity for the caches (its requirements in their order).
fn selector_key(sel: &Selector) -> String {
    format!("{:?}", sel.requirements)
}

impl<'a> Cluster<'a> {
    fn new(pods: &'a [Arc<Pod>], namespaces: &[Arc<Namespace>]) -> Cluster<'a> {
        let pods: Vec<(&Pod, Ipv4Addr)> = pods
            .iter()
            .filter_map(|p| Some((p.as_ref(), pod_ip(p)?)))
            .collect();
        let mut by_namespace: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut by_label: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
        for (i, (p, _)) in pods.iter().enumerate() {
            let ns = p.namespace();
            by_namespace.entry(ns).or_default().push(i);
            for (k, v) in &p.metadata().labels {
                by_label.entry((ns, k, v)).or_default().push(i);
            }
        }
        Cluster {
            pods,
            namespaces: namespaces
                .iter()
                .map(|n| {
                    let mut labels = n.metadata().labels.clone();
                    labels.insert(NAMESPACE_NAME_LABEL.into(), n.name().into());
                    (n.name().to_string(), labels)
                })
                .collect(),
            by_namespace,
            by_label,
            selected: Default::default(),
            peers: Default::default(),
            named: Default::default(),
        }
    }

    fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.namespaces
            .get(ns)
            .cloned()
            .unwrap_or_else(|| BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), ns.to_string())]))
    }

    /// The pods of namespace `ns` that `sel` picks (indices into `pods`, ascending):
    /// looked up by one of its `key=value` or `key in (...)` requirements when it has one,
    /// then checked whole; resolved once per plan.
    fn pods_in(&self, ns: &str, sel: &Selector) -> Arc<Vec<usize>> {
        let key = (ns.to_string(), selector_key(sel));
        if let Some(found) = self.selected.borrow().get(&key) {
            return found.clone();
        }
        let label =
            |k: &str, v: &str| -> Vec<usize> { self.by_label.get(&(ns, k, v)).cloned().unwrap_or_default() };
        let mut candidates: Vec<usize> = sel
            .requirements
            .iter()
            .find_map(|r| match r {
                Requirement::Equals(k, v) => Some(label(k, v)),
                Requirement::In(k, vs) => Some(vs.iter().flat_map(|v| label(k, v)).collect()),
                _ => None,
            })
            .unwrap_or_else(|| self.by_namespace.get(ns).cloned().unwrap_or_default());
        candidates.sort_unstable();
        candidates.dedup();
        candidates.retain(|&i| sel.matches(&self.pods[i].0.metadata().labels));
        let found = Arc::new(candidates);
        self.selected.borrow_mut().insert(key, found.clone());
        found
    }

    /// [`named_ports`] of every pod of the cluster (where egress goes); resolved once per
    /// plan.
    fn named_ports(&self, name: &str, protocol: L4) -> Arc<Vec<NamedPort>> {
        let key = (name.to_string(), protocol);
        if let Some(found) = self.named.borrow().get(&key) {
            return found.clone();
        }
        let found = Arc::new(named_ports(&self.pods, name, protocol));
        self.named.borrow_mut().insert(key, found.clone());
        found
    }

    /// The addresses of the pods `pod_sel` picks in `ns`, or with `ns_sel` in every
    /// namespace it picks; resolved once per plan.
    fn peer_pods(&self, ns: &str, pod_sel: &Selector, ns_sel: Option<&Selector>) -> Arc<BTreeSet<Ipv4Addr>> {
        let key = (
            ns_sel.map_or_else(|| ns.to_string(), |_| String::new()),
            selector_key(pod_sel),
            ns_sel.map(selector_key).unwrap_or_default(),
        );
        if let Some(found) = self.peers.borrow().get(&key) {
            return found.clone();
        }
        let namespaces: Vec<&str> = match ns_sel {
            None => vec![ns],
            Some(ns_sel) => (self.by_namespace.keys())
                .filter(|n| ns_sel.matches(&self.namespace_labels(n)))
                .copied()
                .collect(),
        };
        let found: BTreeSet<Ipv4Addr> = namespaces
            .into_iter()
            .flat_map(|n| {
                self.pods_in(n, pod_sel)
                    .iter()
                    .map(|&i| self.pods[i].1)
                    .collect::<Vec<_>>()
            })
            .collect();
        let found = Arc::new(found);
        self.peers.borrow_mut().insert(key, found.clone());
        found
    }
}

/// The plan for node `node`, and what could not be honoured.
pub fn plan(
    node: &str,
    policies: &[Arc<NetworkPolicy>],
    pods: &[Arc<Pod>],
    namespaces: &[Arc<Namespace>],
) -> (Plan, Vec<Problem>) {
    let cluster = Cluster::new(pods, namespaces);
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
        let targets: Vec<(&Pod, Ipv4Addr)> = (cluster.pods_in(ns, &target_sel).iter())
            .map(|&i| cluster.pods[i])
            .filter(|(p, _)| p.spec.as_ref().is_some_and(|s| s.node_name == node))
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
                    let named = |name: &str, protocol: L4| match direction {
                        Direction::Ingress => Arc::new(named_ports(&targets, name, protocol)),
                        Direction::Egress => cluster.named_ports(name, protocol),
                    };
                    let peers_field = match direction {
                        Direction::Ingress => format!("{f}.from"),
                        Direction::Egress => format!("{f}.to"),
                    };
                    Rule {
                        peers: (!peers.is_empty())
                            .then(|| resolve_peers(peers, ns, &cluster, &peers_field, &mut report)),
                        ports: (!ports.is_empty()).then(|| resolve_ports(ports, named, &f, &mut report)),
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
    let mut pods: Vec<Arc<BTreeSet<Ipv4Addr>>> = Vec::new();
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
            None => pods.push(cluster.peer_pods(ns, &pod_sel, None)),
            Some(ns_sel) => {
                let Some(ns_sel) = selector(Some(ns_sel)) else {
                    continue;
                };
                pods.push(cluster.peer_pods(ns, &pod_sel, Some(&ns_sel)));
            }
        }
    }
    // one peer's pods are shared as they are; several are joined
    out.pods = match pods.len() {
        0 => Arc::default(),
        1 => pods.swap_remove(0),
        _ => Arc::new(pods.iter().flat_map(|p| p.iter().copied()).collect()),
    };
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

/// The (address, protocol, number) of every container port named `name` of `pods`.
fn named_ports(pods: &[(&Pod, Ipv4Addr)], name: &str, protocol: L4) -> Vec<NamedPort> {
    let mut out = Vec::new();
    for (pod, ip) in pods {
        let containers = pod.spec.iter().flat_map(|s| &s.containers);
        for cp in containers.flat_map(|c| &c.ports) {
            if cp.name == name && L4::parse(&cp.protocol) == Some(protocol) {
                if let Ok(n) = u16::try_from(cp.container_port) {
                    out.push((*ip, protocol, n));
                }
            }
        }
    }
    out
}

/// `named` looks a named port up on the pods receiving.
fn resolve_ports(
    ports: &[NetworkPolicyPort],
    named: impl Fn(&str, L4) -> Arc<Vec<NamedPort>>,
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
                let found = named(str_val, protocol);
                out.named.extend(found.iter().copied());
                if found.is_empty() {
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
        assert_eq!(*peers.pods, BTreeSet::from([ip("10.244.2.6"), ip("10.244.1.9")]));
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

    #[test]
    fn selectors_resolve_by_label_index_and_equal_peers_are_one_set() {
        let pods = [
            pod("shop", "a", "app: web, tier: fe", "n1", "10.244.1.2"),
            pod("shop", "b", "app: api, tier: be", "n1", "10.244.1.3"),
            pod("shop", "c", "app: db", "n2", "10.244.2.2"),
            pod("other", "d", "app: web", "n2", "10.244.2.3"),
        ];
        let everyone = "  egress:\n  - to: [{podSelector: {}}]\n";
        let policies = [
            policy(&format!("metadata: {{name: p1, namespace: shop}}\nspec:\n  podSelector: {{matchExpressions: [{{key: app, operator: In, values: [web, api]}}, {{key: tier, operator: NotIn, values: [be]}}]}}\n  policyTypes: [Egress]\n{everyone}")),
            policy(&format!("metadata: {{name: p2, namespace: shop}}\nspec:\n  podSelector: {{matchExpressions: [{{key: tier, operator: Exists}}]}}\n  policyTypes: [Egress]\n{everyone}")),
        ];
        let (plan, _) = plan("n1", &policies, &pods, &[]);
        // In + NotIn picks a only; Exists (no index to use) picks a and b
        assert_eq!(
            plan.egress,
            BTreeMap::from([(ip("10.244.1.2"), vec![0, 1]), (ip("10.244.1.3"), vec![1])])
        );
        let peers = |c: usize| plan.chains[c].rules[0].peers.clone().unwrap().pods;
        assert_eq!(
            *peers(0),
            BTreeSet::from([ip("10.244.1.2"), ip("10.244.1.3"), ip("10.244.2.2")])
        );
        assert!(Arc::ptr_eq(&peers(0), &peers(1)), "one set for both policies");
    }
}
