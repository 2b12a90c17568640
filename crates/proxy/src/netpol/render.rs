//! The NetworkPolicy ruleset of table `inet rkube-netpol`, rendered as text and loaded
//! with one `nft -f` transaction per sync (the table is deleted and declared again in the
//! same transaction, so packets see the old rules or the new, never none).
//!
//! Shape (and why):
//! * `ingress_pods` / `egress_pods`: verdict maps from an isolated local pod's address to
//!   the chain of the policies that select it; one lookup however many pods and policies
//!   there are. Pods selected by the same policies share that chain.
//! * Such a chain jumps to each policy's chain and drops what none allowed. A policy chain
//!   has one rule per (peer kind, port kind) of each policy rule; pod peers, port ranges
//!   and named ports are named sets, so a rule stays one rule however many pods it names.
//! * `forward` (filter hook, after rkube-proxy's DNAT, so Service traffic is judged by the
//!   endpoint it reaches) lets replies of allowed connections pass (`ct state
//!   established,related`), checks the sender's egress, then the receiver's ingress: an
//!   egress rule's allow continues (`goto ingress_check`) rather than accepting.
//! * Only forwarded traffic is filtered: the node itself always reaches its pods, and
//!   they it (Kubernetes: traffic from the pod's node is always allowed), so kubelet
//!   probes keep working.

use super::model::{Direction, Plan, Rule};
use crate::nft::declare_set as set;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;

pub const TABLE: &str = "rkube-netpol";

/// The complete transaction for `plan`.
pub fn render(plan: &Plan) -> String {
    let mut out = String::with_capacity(1024 + plan.chains.len() * 512);
    let _ = writeln!(
        out,
        "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{"
    );
    // rules naming the same peers or ports share one set (a namespace-wide peer list
    // repeated in every policy would otherwise be loaded once per rule)
    let mut sets = SharedSets::default();
    let rule_sets: Vec<Vec<RuleSets>> = plan
        .chains
        .iter()
        .enumerate()
        .map(|(i, chain)| {
            (chain.rules.iter().enumerate())
                .map(|(r, rule)| sets.for_rule(&mut out, &format!("policy_{i}_{r}"), rule))
                .collect()
        })
        .collect();
    let ingress = groups(&plan.ingress);
    let egress = groups(&plan.egress);
    verdict_map(&mut out, "ingress_pods", "ingress", &plan.ingress, &ingress);
    verdict_map(&mut out, "egress_pods", "egress", &plan.egress, &egress);
    out.push_str(concat!(
        "  chain forward {\n",
        "    type filter hook forward priority filter; policy accept;\n",
        "    ct state established,related accept\n",
        "    ip saddr vmap @egress_pods\n",
        "    goto ingress_check\n",
        "  }\n",
        "  chain ingress_check {\n",
        "    ip daddr vmap @ingress_pods\n",
        "    accept\n",
        "  }\n",
    ));
    for (prefix, groups) in [("ingress", &ingress), ("egress", &egress)] {
        for (chains, k) in groups {
            let _ = writeln!(out, "  chain {prefix}_{k} {{");
            for i in chains {
                let _ = writeln!(out, "    jump policy_{i}");
            }
            let _ = writeln!(out, "    drop\n  }}");
        }
    }
    for (i, chain) in plan.chains.iter().enumerate() {
        let (peer, allow) = match chain.direction {
            Direction::Ingress => ("saddr", "accept"),
            Direction::Egress => ("daddr", "goto ingress_check"),
        };
        let _ = writeln!(
            out,
            "  # {} {:?}\n  chain policy_{i} {{",
            chain.policy, chain.direction
        );
        for (rule, names) in chain.rules.iter().zip(&rule_sets[i]) {
            for p in peer_matches(names, peer, rule) {
                for q in port_matches(names, rule) {
                    let cond = [p.as_str(), q.as_str()]
                        .iter()
                        .filter(|s| !s.is_empty())
                        .copied()
                        .collect::<Vec<_>>()
                        .join(" ");
                    if cond.is_empty() {
                        let _ = writeln!(out, "    {allow}");
                    } else {
                        let _ = writeln!(out, "    {cond} {allow}");
                    }
                }
            }
        }
        let _ = writeln!(out, "  }}");
    }
    out.push_str("}\n");
    out
}

/// What removes the table.
pub fn render_cleanup() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}

/// Distinct lists of policy chains, numbered in order of first appearance.
fn groups(isolated: &BTreeMap<std::net::Ipv4Addr, Vec<usize>>) -> BTreeMap<Vec<usize>, usize> {
    let mut out = BTreeMap::new();
    for chains in isolated.values() {
        let next = out.len();
        out.entry(chains.clone()).or_insert(next);
    }
    out
}

fn verdict_map(
    out: &mut String,
    name: &str,
    prefix: &str,
    isolated: &BTreeMap<std::net::Ipv4Addr, Vec<usize>>,
    groups: &BTreeMap<Vec<usize>, usize>,
) {
    let elems: Vec<String> = isolated
        .iter()
        .map(|(ip, chains)| format!("{ip} : goto {prefix}_{}", groups[chains]))
        .collect();
    set(out, name, "ipv4_addr : verdict", "", &elems);
}

/// The names of the sets one rule's matches use; `None` where the rule has nothing of
/// that kind (and writes no match for it).
#[derive(Default)]
struct RuleSets {
    peers: Option<String>,
    excepts: Vec<Option<String>>,
    ports: Option<String>,
    named: Option<String>,
}

/// The sets declared so far, by type and elements, so equal ones are declared once; pod
/// peer sets also by their allocation, so one the model shared between many rules is
/// written out (and compared) once.
#[derive(Default)]
struct SharedSets {
    by_elements: HashMap<(&'static str, Vec<String>), String>,
    by_peers: HashMap<*const BTreeSet<Ipv4Addr>, Option<String>>,
}

impl SharedSets {
    /// The set of `key` type holding `elems`: one declared before, or `name`, declared now.
    fn get(
        &mut self,
        out: &mut String,
        name: String,
        key: &'static str,
        elems: Vec<String>,
    ) -> Option<String> {
        if elems.is_empty() {
            return None;
        }
        let elems = (key, elems);
        if let Some(existing) = self.by_elements.get(&elems) {
            return Some(existing.clone());
        }
        let flags = match key {
            "ipv4_addr/interval" => "flags interval\n    auto-merge",
            "inet_proto . inet_service" => "flags interval",
            _ => "",
        };
        set(out, &name, key.trim_end_matches("/interval"), flags, &elems.1);
        self.by_elements.insert(elems, name.clone());
        Some(name)
    }

    fn for_rule(&mut self, out: &mut String, name: &str, rule: &Rule) -> RuleSets {
        let mut names = RuleSets::default();
        if let Some(peers) = &rule.peers {
            // the plan holds every shared set while it is rendered: no address is reused
            let shared = Arc::as_ptr(&peers.pods);
            names.peers = match self.by_peers.get(&shared) {
                Some(known) => known.clone(),
                None => {
                    let elems = peers.pods.iter().map(|ip| ip.to_string()).collect();
                    let declared = self.get(out, format!("{name}_peers"), "ipv4_addr", elems);
                    self.by_peers.insert(shared, declared.clone());
                    declared
                }
            };
            for (k, block) in peers.blocks.iter().enumerate() {
                let elems = block.except.iter().map(|(a, l)| format!("{a}/{l}")).collect();
                let except = self.get(
                    out,
                    format!("{name}_block_{k}_except"),
                    "ipv4_addr/interval",
                    elems,
                );
                names.excepts.push(except);
            }
        }
        if let Some(ports) = &rule.ports {
            let elems = (ports.ranges.iter())
                .map(|r| {
                    if r.first == r.last {
                        format!("{} . {}", r.protocol.nft(), r.first)
                    } else {
                        format!("{} . {}-{}", r.protocol.nft(), r.first, r.last)
                    }
                })
                .collect();
            names.ports = self.get(out, format!("{name}_ports"), "inet_proto . inet_service", elems);
            let elems = (ports.named.iter())
                .map(|(ip, proto, port)| format!("{ip} . {} . {port}", proto.nft()))
                .collect();
            names.named = self.get(
                out,
                format!("{name}_named"),
                "ipv4_addr . inet_proto . inet_service",
                elems,
            );
        }
        names
    }
}

/// The alternative peer matches of a rule: `[""]` for any peer, none when it names
/// nothing that exists.
fn peer_matches(names: &RuleSets, field: &str, rule: &Rule) -> Vec<String> {
    let Some(peers) = &rule.peers else {
        return vec![String::new()];
    };
    let mut out = Vec::new();
    if let Some(set) = &names.peers {
        out.push(format!("ip {field} @{set}"));
    }
    for (block, except) in peers.blocks.iter().zip(&names.excepts) {
        let (net, len) = block.net;
        match except {
            None => out.push(format!("ip {field} {net}/{len}")),
            Some(set) => out.push(format!("ip {field} {net}/{len} ip {field} != @{set}")),
        }
    }
    out
}

/// The alternative port matches of a rule, as [`peer_matches`].
fn port_matches(names: &RuleSets, rule: &Rule) -> Vec<String> {
    if rule.ports.is_none() {
        return vec![String::new()];
    }
    let mut out = Vec::new();
    if let Some(set) = &names.ports {
        out.push(format!("meta l4proto . th dport @{set}"));
    }
    if let Some(set) = &names.named {
        out.push(format!("ip daddr . meta l4proto . th dport @{set}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::model::*;
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn plan() -> Plan {
        let db = PolicyChain {
            policy: "shop/db".into(),
            direction: Direction::Ingress,
            rules: vec![
                Rule {
                    peers: Some(Peers {
                        pods: Arc::new(BTreeSet::from([ip("10.244.1.6")])),
                        blocks: vec![Block {
                            net: (ip("192.168.0.0"), 16),
                            except: vec![(ip("192.168.7.0"), 24), (ip("192.168.7.128"), 25)],
                        }],
                    }),
                    ports: Some(Ports {
                        ranges: vec![PortRange {
                            protocol: L4::Tcp,
                            first: 5432,
                            last: 5440,
                        }],
                        named: BTreeSet::from([(ip("10.244.1.5"), L4::Sctp, 9000)]),
                    }),
                },
                // a selector that matched nothing: no rule at all
                Rule {
                    peers: Some(Peers::default()),
                    ports: None,
                },
            ],
        };
        let deny_out = PolicyChain {
            policy: "shop/deny".into(),
            direction: Direction::Egress,
            rules: vec![Rule {
                peers: None,
                ports: Some(Ports {
                    ranges: vec![PortRange {
                        protocol: L4::Udp,
                        first: 53,
                        last: 53,
                    }],
                    named: BTreeSet::new(),
                }),
            }],
        };
        Plan {
            chains: vec![db, deny_out],
            ingress: [(ip("10.244.1.5"), vec![0]), (ip("10.244.1.7"), vec![0])].into(),
            egress: [(ip("10.244.1.5"), vec![1])].into(),
        }
    }

    #[test]
    fn rules_per_peer_and_port_kind_and_pods_share_chains() {
        let text = render(&plan());
        for line in [
            "      10.244.1.5 : goto ingress_0,\n      10.244.1.7 : goto ingress_0\n",
            "  chain ingress_0 {\n    jump policy_0\n    drop\n  }\n",
            "  chain egress_0 {\n    jump policy_1\n    drop\n  }\n",
            "    ip saddr @policy_0_0_peers meta l4proto . th dport @policy_0_0_ports accept\n",
            "    ip saddr @policy_0_0_peers ip daddr . meta l4proto . th dport @policy_0_0_named accept\n",
            "    ip saddr 192.168.0.0/16 ip saddr != @policy_0_0_block_0_except meta l4proto . th dport @policy_0_0_ports accept\n",
            "    meta l4proto . th dport @policy_1_0_ports goto ingress_check\n",
            "      udp . 53\n",
            "      10.244.1.5 . sctp . 9000\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        // 4 policy rules, established replies, and ingress_check for non-isolated pods
        assert_eq!(text.matches(" accept\n").count(), 6, "{text}");
        assert!(!text.contains("policy_0_1"), "{text}");
    }

    #[test]
    fn rules_naming_the_same_peers_and_ports_share_their_sets() {
        let mut p = plan();
        let mut copy = p.chains[0].clone();
        copy.policy = "shop/db-copy".into();
        p.chains.push(copy);
        p.ingress.insert(ip("10.244.1.8"), vec![2]);
        let text = render(&p);
        assert_eq!(text.matches("  set policy_0_0_peers {").count(), 1, "{text}");
        assert!(!text.contains("policy_2_0_"), "{text}");
        assert!(
            text.contains("  chain policy_2 {\n    ip saddr @policy_0_0_peers meta l4proto . th dport @policy_0_0_ports accept\n"),
            "{text}"
        );
    }

    /// The kernel takes the rendering (checked in a network namespace of its own, never
    /// committed); skipped where that cannot run (not root, no nft).
    #[test]
    fn nft_accepts_the_ruleset() {
        use std::io::Write as _;
        let Ok(mut child) = std::process::Command::new("unshare")
            .args(["-n", "nft", "-c", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("SKIPPED: no unshare");
            return;
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(render(&plan()).as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("Operation not permitted") || stderr.contains("No such file") {
            eprintln!("SKIPPED: {stderr}");
            return;
        }
        assert!(out.status.success(), "{stderr}");
        assert!(render(&Plan::default()).contains("map ingress_pods"));
    }
}
