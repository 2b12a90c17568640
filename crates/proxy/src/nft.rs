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

/// The stable part of the names of a ServicePort's chains (`svc_ID`, `nodeport_ID`,
/// `loadbalancer_ID`, `endpoint_ID_J`): derived from what the port is (its name, protocol
/// and number), not where it sits in the list, so that a partial sync can rewrite one
/// Service's chains while the others keep theirs (FNV-1a, stable across runs and builds).
pub fn chain_id(sp: &ServicePort) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let port = sp.port.to_string();
    for b in sp
        .name
        .bytes()
        .chain([0])
        .chain(sp.protocol.nft().bytes())
        .chain([0])
        .chain(port.bytes())
    {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The chain a ServicePort's ClusterIP sends to: it picks an endpoint.
pub fn service_chain(sp: &ServicePort) -> String {
    format!("svc_{}", chain_id(sp))
}

/// The verdict maps the `services` and `no_endpoints` chains look packets up in.
const SERVICE_IPS: &str = "service_ips";
const SERVICE_NODEPORTS: &str = "service_nodeports";
const NO_ENDPOINT_IPS: &str = "no_endpoint_ips";
const NO_ENDPOINT_NODEPORTS: &str = "no_endpoint_nodeports";

/// One element of a verdict map: which map, its key, its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Element {
    map: &'static str,
    key: String,
    verdict: String,
}

/// The map elements one ServicePort needs: its ClusterIP, load balancer addresses and
/// NodePort to its chains when it has ready endpoints, else to `reject_service`.
fn elements(sp: &ServicePort) -> Vec<Element> {
    let id = chain_id(sp);
    let proto = sp.protocol.nft();
    let with = !sp.endpoints.is_empty();
    let (ips, nodeports) = if with {
        (SERVICE_IPS, SERVICE_NODEPORTS)
    } else {
        (NO_ENDPOINT_IPS, NO_ENDPOINT_NODEPORTS)
    };
    let target = |chain: &str| {
        if with {
            format!("goto {chain}_{id}")
        } else {
            "goto reject_service".to_string()
        }
    };
    let ip = |ip: &std::net::Ipv4Addr, chain: &str| Element {
        map: ips,
        key: format!("{ip} . {proto} . {}", sp.port),
        verdict: target(chain),
    };
    // LoadBalancer ingress addresses reach the same endpoints as the ClusterIP, through a
    // chain that masquerades (see below).
    let mut out: Vec<Element> = sp
        .cluster_ip
        .iter()
        .map(|a| ip(a, "svc"))
        .chain(sp.load_balancer_ips.iter().map(|a| ip(a, "loadbalancer")))
        .collect();
    if let Some(np) = sp.node_port {
        out.push(Element {
            map: nodeports,
            key: format!("{proto} . {np}"),
            verdict: target("nodeport"),
        });
    }
    out
}

/// The chains of one ServicePort (none without ready endpoints), each with its rules, in
/// the order they are declared.
fn chains(sp: &ServicePort) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    if sp.endpoints.is_empty() {
        return out;
    }
    let id = chain_id(sp);
    let proto = sp.protocol.nft();
    let svc = format!("svc_{id}");
    if sp.node_port.is_some() {
        out.push((
            format!("nodeport_{id}"),
            vec!["jump mark_for_masquerade".into(), format!("goto {svc}")],
        ));
    }
    // Load balancer traffic comes from outside through any node, like NodePort traffic:
    // masqueraded so the reply returns through this node's conntrack (Kubernetes'
    // externalTrafficPolicy: Cluster).
    if !sp.load_balancer_ips.is_empty() {
        out.push((
            format!("loadbalancer_{id}"),
            vec!["jump mark_for_masquerade".into(), format!("goto {svc}")],
        ));
    }
    let mut rules: Vec<String> = sp
        .endpoints
        .iter()
        .map(|ep| format!("ip saddr {} jump mark_for_masquerade", ep.ip()))
        .collect();
    let n = sp.endpoints.len();
    if sp.affinity_timeout.is_some() {
        for (j, ep) in sp.endpoints.iter().enumerate() {
            let set = affinity_set(sp, ep);
            rules.push(format!("ip saddr @{set} goto endpoint_{id}_{j}"));
        }
    }
    for (j, ep) in sp.endpoints.iter().enumerate() {
        let action = if sp.affinity_timeout.is_some() {
            format!("goto endpoint_{id}_{j}")
        } else {
            format!("meta l4proto {proto} dnat to {ep}")
        };
        let left = n - j;
        if left > 1 {
            rules.push(format!("numgen random mod {left} == 0 {action}"));
        } else {
            rules.push(action);
        }
    }
    out.push((svc, rules));
    if sp.affinity_timeout.is_some() {
        for (j, ep) in sp.endpoints.iter().enumerate() {
            let set = affinity_set(sp, ep);
            out.push((
                format!("endpoint_{id}_{j}"),
                vec![
                    format!("update @{set} {{ ip saddr }}"),
                    format!("meta l4proto {proto} dnat to {ep}"),
                ],
            ));
        }
    }
    out
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
    let all: Vec<Element> = ports.iter().flat_map(elements).collect();
    for (name, key) in [
        (SERVICE_IPS, "ipv4_addr . inet_proto . inet_service"),
        (SERVICE_NODEPORTS, "inet_proto . inet_service"),
        (NO_ENDPOINT_IPS, "ipv4_addr . inet_proto . inet_service"),
        (NO_ENDPOINT_NODEPORTS, "inet_proto . inet_service"),
    ] {
        let elems: Vec<String> = all
            .iter()
            .filter(|e| e.map == name)
            .map(|e| format!("{} : {}", e.key, e.verdict))
            .collect();
        map(&mut out, name, key, &elems);
    }
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
    for sp in ports {
        for (name, rules) in chains(sp) {
            let _ = writeln!(out, "  chain {name} {{");
            for rule in rules {
                let _ = writeln!(out, "    {rule}");
            }
            let _ = writeln!(out, "  }}");
        }
    }
    out.push_str("}\n");
    out
}

/// The transaction that takes the table from `before` (what the last sync loaded) to
/// `after`, touching only the ServicePorts that changed, as kube-proxy's nftables mode
/// does: their map elements deleted and added, their chains flushed and written again,
/// the chains of those gone deleted. `None` when a full sync is needed instead: a change
/// involves session affinity (its sets carry clients across a full sync), or a
/// ServicePort appears twice. Loading it fails (and the caller falls back to a full sync)
/// when the table is not what `before` says, e.g. someone deleted it.
pub fn render_partial(before: &[ServicePort], after: &[ServicePort]) -> Option<String> {
    fn index(ports: &[ServicePort]) -> Option<std::collections::HashMap<String, &ServicePort>> {
        let mut by_id = std::collections::HashMap::with_capacity(ports.len());
        for sp in ports {
            if by_id.insert(chain_id(sp), sp).is_some() {
                return None;
            }
        }
        Some(by_id)
    }
    let (old, new) = (index(before)?, index(after)?);
    let mut ids: Vec<&String> = old
        .keys()
        .chain(new.keys())
        .filter(|id| old.get(*id) != new.get(*id))
        .collect();
    ids.sort();
    ids.dedup();
    let changed: Vec<(Option<&ServicePort>, Option<&ServicePort>)> = ids
        .iter()
        .map(|id| (old.get(*id).copied(), new.get(*id).copied()))
        .collect();
    if changed
        .iter()
        .flat_map(|(a, b)| [a, b])
        .flatten()
        .any(|sp| sp.affinity_timeout.is_some())
    {
        return None;
    }
    let mut out = String::new();
    let (mut gone_elements, mut new_elements) = (Vec::new(), Vec::new());
    let (mut gone_chains, mut new_chains) = (Vec::new(), Vec::new());
    for (a, b) in &changed {
        let had: Vec<Element> = a.map(elements).unwrap_or_default();
        let has: Vec<Element> = b.map(elements).unwrap_or_default();
        gone_elements.extend(had.iter().filter(|e| !has.contains(e)).cloned());
        new_elements.extend(has.iter().filter(|e| !had.contains(e)).cloned());
        let kept: Vec<(String, Vec<String>)> = b.map(chains).unwrap_or_default();
        gone_chains.extend(
            a.map(chains)
                .unwrap_or_default()
                .into_iter()
                .map(|(name, _)| name)
                .filter(|name| !kept.iter().any(|(k, _)| k == name)),
        );
        new_chains.extend(kept);
    }
    // Deletions first (a key may pass from a Service that went to one that came), and
    // nothing is deleted while something still refers to it.
    for e in &gone_elements {
        let _ = writeln!(out, "delete element ip {TABLE} {} {{ {} }}", e.map, e.key);
    }
    for name in &gone_chains {
        let _ = writeln!(out, "flush chain ip {TABLE} {name}");
    }
    for name in &gone_chains {
        let _ = writeln!(out, "delete chain ip {TABLE} {name}");
    }
    for (name, _) in &new_chains {
        let _ = writeln!(out, "add chain ip {TABLE} {name}\nflush chain ip {TABLE} {name}");
    }
    for (name, rules) in &new_chains {
        for rule in rules {
            let _ = writeln!(out, "add rule ip {TABLE} {name} {rule}");
        }
    }
    for e in &new_elements {
        let _ = writeln!(
            out,
            "add element ip {TABLE} {} {{ {} : {} }}",
            e.map, e.key, e.verdict
        );
    }
    Some(out)
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

/// How often the nftables dataplane rewrites the whole table even when a partial sync
/// would do, so that anything else that changed it is put right (kube-proxy's nftables
/// mode does the same, hourly).
pub const FULL_SYNC_PERIOD: std::time::Duration = std::time::Duration::from_secs(3600);

/// The nftables dataplane.
pub struct NftDataplane {
    command: Vec<String>,
    conntrack: Conntrack,
    /// What the kernel has, once a sync succeeded: what stale conntrack
    /// entries are looked for against, and what a partial sync starts from.
    applied: Option<Vec<ServicePort>>,
    /// When the whole table was last written.
    full_sync_at: Option<std::time::Instant>,
    /// How the last sync went: `true` when only the changed Services were written.
    pub last_sync_partial: bool,
}

impl NftDataplane {
    /// `command` runs nft, `conntrack_command` the conntrack tool (same
    /// namespace).
    pub fn new(command: Vec<String>, conntrack_command: Vec<String>) -> Self {
        NftDataplane {
            command,
            conntrack: Conntrack::new(conntrack_command),
            applied: None,
            full_sync_at: None,
            last_sync_partial: false,
        }
    }

    /// Writes only what changed since the last successful sync, when that is possible
    /// and no full sync is due; whether it did.
    async fn sync_partial(&mut self, ports: &[ServicePort]) -> bool {
        let due = self
            .full_sync_at
            .is_none_or(|at| at.elapsed() >= FULL_SYNC_PERIOD);
        let Some(applied) = self.applied.as_deref().filter(|_| !due) else {
            return false;
        };
        let Some(script) = render_partial(applied, ports) else {
            return false;
        };
        match apply(&self.command, &script).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("partial sync failed, writing the whole table instead: {e}");
                false
            }
        }
    }
}

impl crate::Dataplane for NftDataplane {
    async fn sync(&mut self, ports: &[ServicePort]) -> Result<(), crate::Error> {
        self.last_sync_partial = self.sync_partial(ports).await;
        if !self.last_sync_partial {
            let affinities = if ports.iter().any(|p| p.affinity_timeout.is_some()) {
                read_affinities(&self.command).await
            } else {
                Affinities::new()
            };
            // a failed load changes nothing (one transaction): `applied` stays true
            apply(&self.command, &render_with(ports, &affinities)).await?;
            self.full_sync_at = Some(std::time::Instant::now());
        }
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
        let id = chain_id(&p);
        assert!(
            text.contains(&format!(
                "  set {set} {{\n    type ipv4_addr\n    flags dynamic,timeout\n    timeout 60s\n  }}"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("    ip saddr @{set} goto endpoint_{id}_0\n")),
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
        let (id, idle_id) = (chain_id(&web), chain_id(&idle));
        let text = render(&[web, idle]);
        assert!(
            text.contains(&format!(
                "      10.96.0.2 . tcp . 80 : goto svc_{id},\n      192.0.2.100 . tcp . 80 : goto loadbalancer_{id}\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "  chain loadbalancer_{id} {{\n    jump mark_for_masquerade\n    goto svc_{id}\n  }}\n"
            )),
            "{text}"
        );
        assert!(!text.contains(&idle_id), "no chain without endpoints: {text}");
        // Without ready endpoints the load balancer address rejects at once too.
        assert!(
            text.contains("      10.96.0.3 . tcp . 80 : goto reject_service,\n      192.0.2.101 . tcp . 80 : goto reject_service\n"),
            "{text}"
        );
    }

    #[test]
    fn chains_keep_their_names_while_other_services_come_and_go() {
        let web = port("default/web:", "10.96.0.2", None, &["10.244.7.10:8080"]);
        let id = chain_id(&web);
        let alone = render(std::slice::from_ref(&web));
        let behind = render(&[
            port("default/aaa:", "10.96.0.3", None, &["10.244.7.11:8080"]),
            web.clone(),
        ]);
        for text in [alone, behind] {
            assert!(
                text.contains(&format!("10.96.0.2 . tcp . 80 : goto svc_{id}")),
                "{text}"
            );
            assert!(text.contains(&format!("  chain svc_{id} {{\n")), "{text}");
        }
        let mut other_port = web.clone();
        other_port.port = 81;
        assert_ne!(
            chain_id(&other_port),
            id,
            "each port of a Service has its own chains"
        );
    }

    #[test]
    fn partial_sync_of_an_endpoint_change_rewrites_only_that_chain() {
        let web = port("default/web:", "10.96.0.2", Some(30080), &["10.244.7.10:8080"]);
        let other = port("default/other:", "10.96.0.3", None, &["10.244.7.20:8080"]);
        let mut moved = web.clone();
        moved.endpoints = vec![
            "10.244.7.11:8080".parse().unwrap(),
            "10.244.7.12:8080".parse().unwrap(),
        ];
        let id = chain_id(&web);
        let script = render_partial(&[other.clone(), web], &[other, moved]).expect("a partial sync");
        assert_eq!(
            script,
            format!(
                "add chain ip rkube nodeport_{id}\nflush chain ip rkube nodeport_{id}\n\
                 add chain ip rkube svc_{id}\nflush chain ip rkube svc_{id}\n\
                 add rule ip rkube nodeport_{id} jump mark_for_masquerade\n\
                 add rule ip rkube nodeport_{id} goto svc_{id}\n\
                 add rule ip rkube svc_{id} ip saddr 10.244.7.11 jump mark_for_masquerade\n\
                 add rule ip rkube svc_{id} ip saddr 10.244.7.12 jump mark_for_masquerade\n\
                 add rule ip rkube svc_{id} numgen random mod 2 == 0 meta l4proto tcp dnat to 10.244.7.11:8080\n\
                 add rule ip rkube svc_{id} meta l4proto tcp dnat to 10.244.7.12:8080\n"
            )
        );
        let same = port("default/other:", "10.96.0.3", None, &["10.244.7.20:8080"]);
        assert_eq!(
            render_partial(std::slice::from_ref(&same), std::slice::from_ref(&same)).as_deref(),
            Some(""),
            "nothing changed, nothing written"
        );
    }

    #[test]
    fn partial_sync_moves_a_service_between_its_chains_and_reject_and_removes_what_went() {
        let web = port("default/web:", "10.96.0.2", Some(30080), &["10.244.7.10:8080"]);
        let mut drained = web.clone();
        drained.endpoints.clear();
        let id = chain_id(&web);
        let script = render_partial(std::slice::from_ref(&web), std::slice::from_ref(&drained)).unwrap();
        assert_eq!(
            script,
            format!(
                "delete element ip rkube service_ips {{ 10.96.0.2 . tcp . 80 }}\n\
                 delete element ip rkube service_nodeports {{ tcp . 30080 }}\n\
                 flush chain ip rkube nodeport_{id}\nflush chain ip rkube svc_{id}\n\
                 delete chain ip rkube nodeport_{id}\ndelete chain ip rkube svc_{id}\n\
                 add element ip rkube no_endpoint_ips {{ 10.96.0.2 . tcp . 80 : goto reject_service }}\n\
                 add element ip rkube no_endpoint_nodeports {{ tcp . 30080 : goto reject_service }}\n"
            )
        );
        let back = render_partial(std::slice::from_ref(&drained), std::slice::from_ref(&web)).unwrap();
        assert!(
            back.starts_with("delete element ip rkube no_endpoint_ips { 10.96.0.2 . tcp . 80 }\n"),
            "{back}"
        );
        assert!(
            back.ends_with(&format!(
                "add element ip rkube service_nodeports {{ tcp . 30080 : goto nodeport_{id} }}\n"
            )),
            "{back}"
        );
        // a Service deleted: its elements and chains go, nothing else is written
        let gone = render_partial(std::slice::from_ref(&web), &[]).unwrap();
        assert!(!gone.contains("add "), "{gone}");
        assert!(
            gone.contains(&format!("delete chain ip rkube svc_{id}\n")),
            "{gone}"
        );
    }

    #[test]
    fn session_affinity_changes_and_duplicates_take_a_full_sync() {
        let web = port("default/web:", "10.96.0.2", None, &["10.244.7.10:8080"]);
        let mut sticky = web.clone();
        sticky.affinity_timeout = Some(60);
        assert_eq!(
            render_partial(std::slice::from_ref(&web), std::slice::from_ref(&sticky)),
            None
        );
        assert_eq!(render_partial(&[], &[web.clone(), web.clone()]), None);
        // an unchanged sticky Service beside a change does not force one
        let other = port("default/other:", "10.96.0.3", None, &[]);
        assert!(render_partial(std::slice::from_ref(&sticky), &[sticky.clone(), other]).is_some());
    }
}
