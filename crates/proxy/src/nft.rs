//! nftables mode: the whole ruleset of table `ip rkube`, rendered as text
//! and loaded with one `nft -f` transaction per sync.
//!
//! Shape (and why):
//! * `service_ips` (`daddr . l4proto . dport`) and `service_nodeports`
//!   (`l4proto . dport`, for local destinations) are named verdict maps to
//!   one chain per ServicePort: one lookup however many Services exist.
//! * A service chain picks an endpoint with `numgen random mod K == 0`
//!   rules, K counting down from N (the first matches with 1/N, the next
//!   with 1/(N-1) of what is left, ...: uniform). An anonymous
//!   `numgen ... map { }` per chain reads better but every anonymous set is
//!   a kernel object: 10,000 Services took 34 s to load that way, 0.7 s this
//!   way.
//! * Traffic from an endpoint of the Service itself (hairpin), NodePort
//!   traffic and traffic to a LoadBalancer ingress address (which the
//!   verdict map sends to the service chain like the ClusterIP) is marked
//!   and masqueraded in postrouting, so replies come back through this
//!   node's conntrack.
//! * A ServicePort with no ready endpoint is in `no_endpoint_ips` /
//!   `no_endpoint_nodeports`, looked up by filter chains that reject at
//!   once (reject is not allowed in nat chains).
//! * sessionAffinity ClientIP: a dynamic set per endpoint with the
//!   affinity timeout; the endpoint chain adds the client, the service
//!   chain sends known clients to their endpoint first.
//! * After each load, conntrack entries the new rules cannot fix are
//!   removed (see `conntrack`).

use crate::conntrack::{Changes, Conntrack};
use crate::model::ServicePort;
use std::fmt::Write;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

pub const TABLE: &str = "rkube";
/// The packet mark bit that asks postrouting to masquerade.
pub const MASQUERADE_MARK: u32 = 0x4000;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run {command:?}: {source}; is nftables installed (package nftables)?")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command:?} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// The complete transaction: create the table if missing, delete it, and
/// declare it again with everything in it. nft applies the file as one
/// transaction, so packets see the old ruleset or the new one, never none.
pub fn render(ports: &[ServicePort]) -> String {
    render_with(ports, &Affinities::new())
}

/// Clients remembered by each affinity set: set name to (client, seconds left).
pub type Affinities = std::collections::HashMap<String, Vec<(std::net::Ipv4Addr, u64)>>;

/// The name of the affinity set of one endpoint of one ServicePort. Derived from what
/// they are, not where they sit in the list, so the set keeps its name across syncs
/// while other Services come and go (FNV-1a, stable across runs and builds).
pub fn affinity_set(sp: &ServicePort, endpoint: &std::net::SocketAddrV4) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sp.name.bytes().chain([0]).chain(endpoint.to_string().bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("aff_{hash:016x}")
}

/// [`render`], carrying the clients each affinity set remembers into the new table: the
/// table is replaced whole, and without this every sync would forget them and send a
/// client to another endpoint.
pub fn render_with(ports: &[ServicePort], affinities: &Affinities) -> String {
    let mut out = String::with_capacity(256 + ports.len() * 256);
    let mark = MASQUERADE_MARK;
    let _ = writeln!(
        out,
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{"
    );
    // affinity sets first: chains reference them
    for sp in ports {
        if let Some(timeout) = sp.affinity_timeout {
            for ep in &sp.endpoints {
                let name = affinity_set(sp, ep);
                let _ = write!(
                    out,
                    "  set {name} {{\n    type ipv4_addr\n    flags dynamic,timeout\n    timeout {timeout}s\n"
                );
                let kept: Vec<String> = affinities
                    .get(&name)
                    .into_iter()
                    .flatten()
                    .filter(|(_, left)| *left > 0)
                    .map(|(client, left)| {
                        format!(
                            "{client} timeout {timeout}s expires {}s",
                            (*left).min(u64::from(timeout))
                        )
                    })
                    .collect();
                if !kept.is_empty() {
                    let _ = writeln!(out, "    elements = {{ {} }}", kept.join(", "));
                }
                let _ = writeln!(out, "  }}");
            }
        }
    }
    let has_endpoints = |sp: &&ServicePort| !sp.endpoints.is_empty();
    let ip_elems = |with: bool| -> Vec<String> {
        ports
            .iter()
            .enumerate()
            .filter(|(_, sp)| has_endpoints(sp) == with)
            .flat_map(|(i, sp)| {
                let (target, lb_target) = if with {
                    (format!("svc_{i}"), format!("loadbalancer_{i}"))
                } else {
                    ("reject_service".into(), "reject_service".into())
                };
                let elem = |ip: &std::net::Ipv4Addr, target: &str| {
                    format!("{ip} . {} . {} : goto {target}", sp.protocol.nft(), sp.port)
                };
                // LoadBalancer ingress addresses reach the same endpoints as the
                // ClusterIP, through a chain that masquerades (see below).
                sp.cluster_ip
                    .iter()
                    .map(|ip| elem(ip, &target))
                    .chain(sp.load_balancer_ips.iter().map(|ip| elem(ip, &lb_target)))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let np_elems = |with: bool| -> Vec<String> {
        ports
            .iter()
            .enumerate()
            .filter(|(_, sp)| has_endpoints(sp) == with)
            .filter_map(|(i, sp)| {
                let np = sp.node_port?;
                let target = if with {
                    format!("nodeport_{i}")
                } else {
                    "reject_service".into()
                };
                Some(format!("{} . {np} : goto {target}", sp.protocol.nft()))
            })
            .collect()
    };
    map(
        &mut out,
        "service_ips",
        "ipv4_addr . inet_proto . inet_service",
        &ip_elems(true),
    );
    map(
        &mut out,
        "service_nodeports",
        "inet_proto . inet_service",
        &np_elems(true),
    );
    map(
        &mut out,
        "no_endpoint_ips",
        "ipv4_addr . inet_proto . inet_service",
        &ip_elems(false),
    );
    map(
        &mut out,
        "no_endpoint_nodeports",
        "inet_proto . inet_service",
        &np_elems(false),
    );
    out.push_str("  chain reject_service {\n    meta l4proto tcp reject with tcp reset\n    reject\n  }\n");
    let _ = writeln!(
        out,
        "  chain mark_for_masquerade {{\n    meta mark set meta mark | {mark:#x}\n  }}"
    );
    // NodePorts on every local address but loopback (127/8 would need route_localnet)
    out.push_str(concat!(
        "  chain services {\n",
        "    ip daddr . meta l4proto . th dport vmap @service_ips\n",
        "    ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @service_nodeports\n",
        "  }\n",
        "  chain no_endpoints {\n",
        "    ip daddr . meta l4proto . th dport vmap @no_endpoint_ips\n",
        "    ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @no_endpoint_nodeports\n",
        "  }\n",
        "  chain filter_prerouting {\n    type filter hook prerouting priority -110; policy accept;\n    jump no_endpoints\n  }\n",
        "  chain filter_output {\n    type filter hook output priority -110; policy accept;\n    jump no_endpoints\n  }\n",
        "  chain nat_prerouting {\n    type nat hook prerouting priority -100; policy accept;\n    jump services\n  }\n",
        "  chain nat_output {\n    type nat hook output priority -100; policy accept;\n    jump services\n  }\n",
    ));
    let _ = writeln!(
        out,
        "  chain nat_postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n    meta mark & {mark:#x} == {mark:#x} masquerade\n  }}"
    );
    for (i, sp) in ports.iter().enumerate() {
        if sp.endpoints.is_empty() {
            continue;
        }
        let proto = sp.protocol.nft();
        if sp.node_port.is_some() {
            let _ = writeln!(
                out,
                "  chain nodeport_{i} {{\n    jump mark_for_masquerade\n    goto svc_{i}\n  }}"
            );
        }
        // Load balancer traffic comes from outside through any node, like
        // NodePort traffic: masqueraded so the reply returns through this
        // node's conntrack (Kubernetes' externalTrafficPolicy: Cluster).
        if !sp.load_balancer_ips.is_empty() {
            let _ = writeln!(
                out,
                "  chain loadbalancer_{i} {{\n    jump mark_for_masquerade\n    goto svc_{i}\n  }}"
            );
        }
        let _ = writeln!(out, "  chain svc_{i} {{");
        for ep in &sp.endpoints {
            let _ = writeln!(out, "    ip saddr {} jump mark_for_masquerade", ep.ip());
        }
        let n = sp.endpoints.len();
        if sp.affinity_timeout.is_some() {
            for (j, ep) in sp.endpoints.iter().enumerate() {
                let set = affinity_set(sp, ep);
                let _ = writeln!(out, "    ip saddr @{set} goto endpoint_{i}_{j}");
            }
        }
        for (j, ep) in sp.endpoints.iter().enumerate() {
            let action = if sp.affinity_timeout.is_some() {
                format!("goto endpoint_{i}_{j}")
            } else {
                format!("meta l4proto {proto} dnat to {ep}")
            };
            let left = n - j;
            if left > 1 {
                let _ = writeln!(out, "    numgen random mod {left} == 0 {action}");
            } else {
                let _ = writeln!(out, "    {action}");
            }
        }
        let _ = writeln!(out, "  }}");
        if sp.affinity_timeout.is_some() {
            for (j, ep) in sp.endpoints.iter().enumerate() {
                let set = affinity_set(sp, ep);
                let _ = writeln!(
                    out,
                    "  chain endpoint_{i}_{j} {{\n    update @{set} {{ ip saddr }}\n    meta l4proto {proto} dnat to {ep}\n  }}"
                );
            }
        }
    }
    out.push_str("}\n");
    out
}

fn map(out: &mut String, name: &str, key: &str, elems: &[String]) {
    declare_set(out, name, &format!("{key} : verdict"), "", elems);
}

/// Declares a named set (or, with a `: verdict` type, a map) with its elements; `flags`
/// are whole lines (`flags interval`).
pub(crate) fn declare_set(out: &mut String, name: &str, key: &str, flags: &str, elems: &[String]) {
    let kind = if key.ends_with(": verdict") { "map" } else { "set" };
    let _ = writeln!(out, "  {kind} {name} {{\n    type {key}");
    if !flags.is_empty() {
        let _ = writeln!(out, "    {flags}");
    }
    if !elems.is_empty() {
        let _ = writeln!(
            out,
            "    elements = {{\n      {}\n    }}",
            elems.join(",\n      ")
        );
    }
    let _ = writeln!(out, "  }}");
}

/// What removes everything this mode installed.
pub fn render_cleanup() -> String {
    format!("table ip {TABLE}\ndelete table ip {TABLE}\n")
}

/// Runs `nft -f -` with `script` on stdin. `command` is the program and its
/// leading arguments (`["nft"]`, or `["nsenter", "--net=...", "nft"]`).
pub async fn apply(command: &[String], script: &str) -> Result<(), NftError> {
    let shown = command.join(" ");
    let (program, args) = command.split_first().ok_or_else(|| NftError::Spawn {
        command: shown.clone(),
        source: std::io::Error::other("empty command"),
    })?;
    let spawn_err = |source| NftError::Spawn {
        command: shown.clone(),
        source,
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await.map_err(spawn_err)?;
    }
    let output = child.wait_with_output().await.map_err(spawn_err)?;
    if output.status.success() {
        return Ok(());
    }
    let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    stderr.truncate(4000);
    Err(NftError::Failed {
        command: format!("{shown} -f -"),
        status: output.status,
        stderr,
    })
}

/// The clients in the affinity sets of `nft -j list sets` output (`{"nftables": [{"set":
/// {"name": ..., "table": "rkube", "elem": [{"elem": {"val": IP, "expires": S}}]}}]}`).
pub fn parse_affinities(json: &str) -> Affinities {
    let mut out = Affinities::new();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return out;
    };
    for item in v["nftables"].as_array().into_iter().flatten() {
        let set = &item["set"];
        let Some(name) = set["name"].as_str().filter(|n| n.starts_with("aff_")) else {
            continue;
        };
        if set["table"].as_str() != Some(TABLE) {
            continue;
        }
        let clients = set["elem"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let e = &e["elem"];
                let ip = e["val"].as_str()?.parse().ok()?;
                Some((ip, e["expires"].as_u64()?))
            })
            .collect();
        out.insert(name.to_string(), clients);
    }
    out
}

/// Reads what the affinity sets remember now; nothing when there is no table yet.
async fn read_affinities(command: &[String]) -> Affinities {
    let Some((program, args)) = command.split_first() else {
        return Affinities::new();
    };
    match tokio::process::Command::new(program)
        .args(args)
        .args(["-j", "list", "sets", "ip"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
    {
        Ok(out) if out.status.success() => parse_affinities(&String::from_utf8_lossy(&out.stdout)),
        _ => Affinities::new(),
    }
}

/// The nftables dataplane.
pub struct NftDataplane {
    command: Vec<String>,
    conntrack: Conntrack,
    /// What the kernel has, once a sync succeeded: what stale conntrack
    /// entries are looked for against.
    applied: Option<Vec<ServicePort>>,
}

impl NftDataplane {
    /// `command` runs nft, `conntrack_command` the conntrack tool (same
    /// namespace).
    pub fn new(command: Vec<String>, conntrack_command: Vec<String>) -> Self {
        NftDataplane {
            command,
            conntrack: Conntrack::new(conntrack_command),
            applied: None,
        }
    }
}

impl crate::Dataplane for NftDataplane {
    async fn sync(&mut self, ports: &[ServicePort]) -> Result<(), crate::Error> {
        let affinities = if ports.iter().any(|p| p.affinity_timeout.is_some()) {
            read_affinities(&self.command).await
        } else {
            Affinities::new()
        };
        apply(&self.command, &render_with(ports, &affinities)).await?;
        // after the commit: an entry made before it is stale, one made
        // after it was translated by the new rules
        let changes = Changes::between(self.applied.as_deref().unwrap_or_default(), ports);
        self.applied = Some(ports.to_vec());
        self.conntrack.clear_stale(&changes).await;
        Ok(())
    }

    async fn cleanup(&mut self) -> Result<(), crate::Error> {
        self.applied = None;
        Ok(apply(&self.command, &render_cleanup()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn port(name: &str, ip: &str, node_port: Option<u16>, eps: &[&str]) -> ServicePort {
        ServicePort {
            name: name.into(),
            cluster_ip: Some(ip.parse().unwrap()),
            load_balancer_ips: vec![],
            protocol: Protocol::Tcp,
            port: 80,
            node_port,
            affinity_timeout: None,
            endpoints: eps.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn renders_the_exact_ruleset() {
        let ports = [
            port("default/empty:", "10.96.0.3", None, &[]),
            port(
                "default/web:",
                "10.96.0.2",
                Some(30080),
                &["10.244.7.10:8080", "10.244.7.11:8080"],
            ),
        ];
        let text = render(&ports);
        let expected = include_str!("testdata/two-services.nft");
        assert_eq!(text, expected, "got:\n{text}");
    }

    #[test]
    fn affinity_uses_a_timed_set_per_endpoint() {
        let mut p = port("default/sticky:", "10.96.0.4", None, &["10.244.7.10:8080"]);
        p.affinity_timeout = Some(60);
        let set = affinity_set(&p, &p.endpoints[0]);
        let text = render(std::slice::from_ref(&p));
        assert!(
            text.contains(&format!(
                "  set {set} {{\n    type ipv4_addr\n    flags dynamic,timeout\n    timeout 60s\n  }}"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("    ip saddr @{set} goto endpoint_0_0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "    update @{set} {{ ip saddr }}\n    meta l4proto tcp dnat to 10.244.7.10:8080\n"
            )),
            "{text}"
        );
    }

    #[test]
    fn affinity_sets_keep_their_names_and_clients_across_syncs() {
        let mut sticky = port("default/sticky:", "10.96.0.4", None, &["10.244.7.10:8080"]);
        sticky.affinity_timeout = Some(60);
        let other = port("default/aaa:", "10.96.0.3", None, &["10.244.7.11:8080"]);
        let set = affinity_set(&sticky, &sticky.endpoints[0]);
        // another Service sorted in front does not rename the set
        assert!(render(&[other.clone(), sticky.clone()]).contains(&format!("set {set} ")));
        let listed = format!(
            r#"{{"nftables": [{{"metainfo": {{"version": "1.0.6"}}}}, {{"set": {{"family": "ip", "name": "{set}", "table": "rkube", "type": "ipv4_addr", "flags": ["timeout"], "timeout": 60, "elem": [{{"elem": {{"val": "10.0.0.5", "expires": 29}}}}, {{"elem": {{"val": "10.0.0.6", "expires": 600}}}}]}}}}]}}"#
        );
        let kept = parse_affinities(&listed);
        assert_eq!(
            kept[&set],
            vec![
                ("10.0.0.5".parse().unwrap(), 29),
                ("10.0.0.6".parse().unwrap(), 600)
            ]
        );
        let text = render_with(&[other, sticky], &kept);
        assert!(
            text.contains(
                "    elements = { 10.0.0.5 timeout 60s expires 29s, 10.0.0.6 timeout 60s expires 60s }\n"
            ),
            "clients carried over, expiry capped at the timeout:\n{text}"
        );
    }

    #[test]
    fn load_balancer_addresses_reach_the_service_chain_masqueraded() {
        let mut web = port("default/web:", "10.96.0.2", Some(30080), &["10.244.7.10:8080"]);
        web.load_balancer_ips = vec!["192.0.2.100".parse().unwrap()];
        let mut idle = port("default/idle:", "10.96.0.3", None, &[]);
        idle.load_balancer_ips = vec!["192.0.2.101".parse().unwrap()];
        let text = render(&[web, idle]);
        assert!(
            text.contains(
                "      10.96.0.2 . tcp . 80 : goto svc_0,\n      192.0.2.100 . tcp . 80 : goto loadbalancer_0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  chain loadbalancer_0 {\n    jump mark_for_masquerade\n    goto svc_0\n  }\n"),
            "{text}"
        );
        assert!(
            !text.contains("loadbalancer_1"),
            "no chain without endpoints: {text}"
        );
        // Without ready endpoints the load balancer address rejects at once too.
        assert!(
            text.contains("      10.96.0.3 . tcp . 80 : goto reject_service,\n      192.0.2.101 . tcp . 80 : goto reject_service\n"),
            "{text}"
        );
    }
}
