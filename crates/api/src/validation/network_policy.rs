//! NetworkPolicies (networking.k8s.io/v1), in Kubernetes' words: peers, ipBlocks, ports
//! and policyTypes.

use super::meta::{is_port_name, validate_meta, validate_port, NameRule, PROTOCOLS};
use super::{Errors, FieldError, Validate};
use crate::meta::v1::LabelSelector;
use crate::networking::v1::{IpBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use crate::selector::Selector;
use std::net::IpAddr;

impl Validate for NetworkPolicy {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        let Some(spec) = &self.spec else {
            return e.0;
        };
        selector(spec.pod_selector.as_ref(), "spec.podSelector", &mut e);
        for (i, rule) in spec.ingress.iter().enumerate() {
            let f = format!("spec.ingress[{i}]");
            rule_parts(&rule.ports, &rule.from, &f, "from", &mut e);
        }
        for (i, rule) in spec.egress.iter().enumerate() {
            let f = format!("spec.egress[{i}]");
            rule_parts(&rule.ports, &rule.to, &f, "to", &mut e);
        }
        for (i, t) in spec.policy_types.iter().enumerate() {
            e.one_of(format!("spec.policyTypes[{i}]"), t, &["Ingress", "Egress"]);
        }
        if spec.policy_types.len() > 2 {
            e.invalid(
                "spec.policyTypes",
                &spec.policy_types,
                "may not specify more than two policyTypes",
            );
        }
        e.0
    }
}

/// One ingress or egress rule at `f`: its ports and its peers (under `peers_field`).
fn rule_parts(
    ports: &[NetworkPolicyPort],
    peers: &[NetworkPolicyPeer],
    f: &str,
    peers_field: &str,
    e: &mut Errors,
) {
    for (j, p) in ports.iter().enumerate() {
        port(p, &format!("{f}.ports[{j}]"), e);
    }
    for (j, p) in peers.iter().enumerate() {
        peer(p, &format!("{f}.{peers_field}[{j}]"), e);
    }
}

/// Any selector is valid here, the empty one included (it selects everything).
fn selector(sel: Option<&LabelSelector>, f: &str, e: &mut Errors) {
    if let Some(s) = sel {
        if let Err(err) = Selector::from_label_selector(s) {
            e.invalid(f, "", err.to_string());
        }
    }
}

fn port(p: &NetworkPolicyPort, f: &str, e: &mut Errors) {
    if let Some(proto) = &p.protocol {
        e.one_of(format!("{f}.protocol"), proto, PROTOCOLS);
    }
    match (&p.port, p.end_port) {
        (Some(port), end) if !port.is_string() => {
            validate_port(port.int_val, format!("{f}.port"), e);
            if let Some(end) = end {
                if end < port.int_val {
                    e.invalid(
                        format!("{f}.endPort"),
                        port.int_val,
                        "must be greater than or equal to `port`",
                    );
                }
                validate_port(end, format!("{f}.endPort"), e);
            }
        }
        (Some(port), end) => {
            if let Some(end) = end {
                e.invalid(
                    format!("{f}.endPort"),
                    end,
                    "may not be specified when `port` is non-numeric",
                );
            }
            let name = port.as_str().unwrap_or_default();
            if !is_port_name(name) {
                e.invalid(
                    format!("{f}.port"),
                    name,
                    "must contain only lowercase letters, digits and '-', at most 15 characters",
                );
            }
        }
        (None, Some(end)) => e.invalid(
            format!("{f}.endPort"),
            end,
            "may not be specified when `port` is not specified",
        ),
        (None, None) => {}
    }
}

fn peer(p: &NetworkPolicyPeer, f: &str, e: &mut Errors) {
    selector(p.pod_selector.as_ref(), &format!("{f}.podSelector"), e);
    selector(
        p.namespace_selector.as_ref(),
        &format!("{f}.namespaceSelector"),
        e,
    );
    if let Some(block) = &p.ip_block {
        ip_block(block, &format!("{f}.ipBlock"), e);
    }
    let peers = [
        p.pod_selector.is_some(),
        p.namespace_selector.is_some(),
        p.ip_block.is_some(),
    ];
    match peers.iter().filter(|set| **set).count() {
        0 => e.required(f, "must specify a peer"),
        n if n > 1 && p.ip_block.is_some() => e.forbidden(f, "may not specify both ipBlock and another peer"),
        _ => {}
    }
}

/// `a.b.c.d/n` or an IPv6 CIDR: the address and the prefix length.
pub fn parse_any_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

/// The prefix of `ip` of `len` bits, as a number (IPv4 in the low 32 bits).
fn prefix_bits(ip: IpAddr, len: u8) -> u128 {
    let (bits, width) = match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    };
    if len == 0 {
        0
    } else {
        bits >> (width - u32::from(len))
    }
}

const CIDR_MESSAGE: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

fn ip_block(b: &IpBlock, f: &str, e: &mut Errors) {
    if b.cidr.is_empty() {
        e.required(format!("{f}.cidr"), "");
        return;
    }
    let Some((net, len)) = parse_any_cidr(&b.cidr) else {
        e.invalid(format!("{f}.cidr"), &b.cidr, CIDR_MESSAGE);
        return;
    };
    for (i, except) in b.except.iter().enumerate() {
        let ef = format!("{f}.except[{i}]");
        let Some((ip, elen)) = parse_any_cidr(except) else {
            e.invalid(ef, except, CIDR_MESSAGE);
            continue;
        };
        let inside = ip.is_ipv4() == net.is_ipv4() && prefix_bits(ip, len) == prefix_bits(net, len);
        if !inside || len >= elen {
            e.invalid(ef, except, "must be a strict subset of `cidr`");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::Defaulting;

    fn errors(yaml: &str) -> Vec<String> {
        let mut np: NetworkPolicy = serde_yaml::from_str(yaml).unwrap();
        np.apply_defaults();
        np.validate().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_full_policy_is_valid_and_defaulted() {
        let yaml = "metadata: {name: db, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {app: web}}\n    - namespaceSelector: {matchLabels: {team: ops}}\n      podSelector: {}\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}\n    ports: [{port: 5432}, {port: metrics, protocol: UDP}, {port: 8000, endPort: 8080}]\n  egress:\n  - to: [{ipBlock: {cidr: '2001:db8::/64'}}]\n";
        assert_eq!(errors(yaml), Vec::<String>::new());
        let mut np: NetworkPolicy = serde_yaml::from_str(yaml).unwrap();
        np.apply_defaults();
        let spec = np.spec.unwrap();
        assert_eq!(spec.policy_types, ["Ingress", "Egress"]);
        assert_eq!(spec.ingress[0].ports[0].protocol.as_deref(), Some("TCP"));
        assert_eq!(spec.ingress[0].ports[1].protocol.as_deref(), Some("UDP"));
        // no egress rules: Ingress only; a missing podSelector is the empty one
        let mut deny: NetworkPolicy =
            serde_yaml::from_str("metadata: {name: deny, namespace: shop}\nspec: {}\n").unwrap();
        deny.apply_defaults();
        let spec = deny.spec.unwrap();
        assert_eq!(spec.policy_types, ["Ingress"]);
        assert_eq!(spec.pod_selector, Some(LabelSelector::default()));
    }

    #[test]
    fn bad_input_is_reported_in_kubernetes_words() {
        let errs = errors("metadata: {name: bad, namespace: shop}\nspec:\n  policyTypes: [Ingress, Egress, Sideways]\n  ingress:\n  - from:\n    - {}\n    - ipBlock: {cidr: 10.0.0.0/8}\n      podSelector: {}\n    - ipBlock: {cidr: 10.0.0.0/33}\n    - ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16, 10.0.0.0/8]}\n    ports:\n    - {port: 0}\n    - {port: 80, endPort: 79}\n    - {port: http, endPort: 81}\n    - {endPort: 81}\n    - {port: Not_A_Name, protocol: ICMP}\n");
        let want = [
            "spec.ingress[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ingress[0].ports[1].endPort: Invalid value: 80: must be greater than or equal to `port`",
            "spec.ingress[0].ports[2].endPort: Invalid value: 81: may not be specified when `port` is non-numeric",
            "spec.ingress[0].ports[3].endPort: Invalid value: 81: may not be specified when `port` is not specified",
            "spec.ingress[0].ports[4].protocol: Unsupported value: supported values: \"TCP\", \"UDP\", \"SCTP\": got \"ICMP\"",
            "spec.ingress[0].ports[4].port: Invalid value: \"Not_A_Name\": must contain only lowercase letters, digits and '-', at most 15 characters",
            "spec.ingress[0].from[0]: Required value: must specify a peer",
            "spec.ingress[0].from[1]: Forbidden: may not specify both ipBlock and another peer",
            "spec.ingress[0].from[2].ipBlock.cidr: Invalid value: \"10.0.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            "spec.ingress[0].from[3].ipBlock.except[0]: Invalid value: \"192.168.0.0/16\": must be a strict subset of `cidr`",
            "spec.ingress[0].from[3].ipBlock.except[1]: Invalid value: \"10.0.0.0/8\": must be a strict subset of `cidr`",
            "spec.policyTypes[2]: Unsupported value: supported values: \"Ingress\", \"Egress\": got \"Sideways\"",
            "spec.policyTypes: Invalid value: [\"Ingress\", \"Egress\", \"Sideways\"]: may not specify more than two policyTypes",
        ];
        assert_eq!(errs, want);
    }
}
