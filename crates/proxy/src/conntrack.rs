//! Conntrack entries that would keep traffic away from the rules just
//! programmed, and their removal (nftables mode; the `conntrack` tool of
//! package conntrack).
//!
//! NAT is decided once per connection, on its first packet. Two kinds of
//! entries outlive the decision they recorded:
//! * A connection attempt to a ClusterIP (or NodePort) before the proxy
//!   programmed it gets an entry without DNAT. For TCP it stays in
//!   SYN_SENT for two minutes, and a later connection that happens to reuse
//!   the client's source port is taken for a retransmission of it: its SYN
//!   goes, untranslated, to the ClusterIP itself and is lost. So when a
//!   ServicePort becomes reachable, its entries without DNAT are removed.
//! * UDP has no connection end: a client that keeps sending keeps its entry,
//!   and its DNAT to an endpoint that is gone, for ever. So when an endpoint
//!   leaves a UDP ServicePort, its entries towards that endpoint are removed
//!   (as kube-proxy does). TCP connections to a removed endpoint are left to
//!   finish.

use crate::model::{Protocol, ServicePort};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};

/// One entry of `conntrack -L`, what matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub protocol: Protocol,
    /// The TCP state (`SYN_SENT`, `CLOSE`, ...), empty for UDP.
    pub state: String,
    pub orig_dst: SocketAddrV4,
    pub reply_src: SocketAddrV4,
    pub unreplied: bool,
}

impl Flow {
    /// No DNAT was applied: the reply is expected from where the packet
    /// was sent.
    fn untranslated(&self) -> bool {
        self.reply_src == self.orig_dst
    }
}

/// Parses one line of `conntrack -L` (default output), e.g. `tcp 6 116
/// SYN_SENT src=A dst=B sport=1 dport=80 [UNREPLIED] src=B dst=A sport=80
/// dport=1 mark=0 use=1`. Other protocols and families give `None`.
pub fn parse_flow(line: &str) -> Option<Flow> {
    let mut words = line.split_whitespace();
    let protocol = match words.next()? {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    let (mut state, mut unreplied) = (String::new(), false);
    // src, dst, sport, dport of the original direction, then of the reply
    let mut tuples: Vec<HashMap<&str, &str>> = vec![HashMap::new()];
    for w in words.skip(2) {
        if let Some((k, v)) = w.split_once('=') {
            if !matches!(k, "src" | "dst" | "sport" | "dport") {
                continue;
            }
            if tuples.last().is_some_and(|t| t.contains_key(k)) {
                if tuples.len() == 2 {
                    break;
                }
                tuples.push(HashMap::new());
            }
            tuples.last_mut()?.insert(k, v);
        } else if w == "[UNREPLIED]" {
            unreplied = true;
        } else if !w.starts_with('[') && state.is_empty() && tuples[0].is_empty() {
            state = w.to_string();
        }
    }
    let addr = |t: &HashMap<&str, &str>, ip: &str, port: &str| -> Option<SocketAddrV4> {
        Some(SocketAddrV4::new(
            t.get(ip)?.parse().ok()?,
            t.get(port)?.parse().ok()?,
        ))
    };
    let (orig, reply) = (tuples.first()?, tuples.get(1)?);
    Some(Flow {
        protocol,
        state,
        orig_dst: addr(orig, "dst", "dport")?,
        reply_src: addr(reply, "src", "sport")?,
        unreplied,
    })
}

/// What `conntrack -D` is asked to remove: entries of `protocol` sent to
/// `orig_dst` whose replies come from `reply_src`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StaleFlows {
    pub protocol: Protocol,
    pub orig_dst: SocketAddrV4,
    pub reply_src: SocketAddrV4,
}

impl StaleFlows {
    /// The arguments of `conntrack` that delete them.
    pub fn delete_args(&self) -> Vec<String> {
        [
            "-D",
            "-p",
            self.protocol.nft(),
            "--orig-dst",
            &self.orig_dst.ip().to_string(),
            "--orig-port-dst",
            &self.orig_dst.port().to_string(),
            "--reply-src",
            &self.reply_src.ip().to_string(),
            "--reply-port-src",
            &self.reply_src.port().to_string(),
        ]
        .map(String::from)
        .to_vec()
    }
}

/// Where a ServicePort is reached: its ClusterIP (or a load balancer
/// address) and port, or (None) its
/// NodePort on any local address.
type Frontend = (Protocol, Option<Ipv4Addr>, u16);

fn frontends(sp: &ServicePort) -> impl Iterator<Item = Frontend> + '_ {
    let ips = sp
        .cluster_ip
        .iter()
        .chain(&sp.load_balancer_ips)
        .map(|ip| (sp.protocol, Some(*ip), sp.port));
    let np = sp.node_port.map(|np| (sp.protocol, None, np));
    ips.chain(np)
}

fn matches(f: &Flow, (protocol, ip, port): &Frontend) -> bool {
    f.protocol == *protocol && f.orig_dst.port() == *port && ip.is_none_or(|ip| *f.orig_dst.ip() == ip)
}

/// What to look for after `before` was replaced by `after`: frontends
/// that became reachable, and UDP endpoints that left a frontend. Empty
/// when nothing can be stale, so the table need not be read.
pub struct Changes {
    reachable: Vec<Frontend>,
    removed_udp: Vec<(Frontend, SocketAddrV4)>,
}

impl Changes {
    pub fn between(before: &[ServicePort], after: &[ServicePort]) -> Changes {
        let mut had: HashMap<Frontend, BTreeSet<SocketAddrV4>> = HashMap::new();
        for sp in before {
            for fe in frontends(sp) {
                had.entry(fe).or_default().extend(&sp.endpoints);
            }
        }
        let mut has: HashMap<Frontend, BTreeSet<SocketAddrV4>> = HashMap::new();
        for sp in after {
            for fe in frontends(sp) {
                has.entry(fe).or_default().extend(&sp.endpoints);
            }
        }
        let empty = BTreeSet::new();
        let mut reachable: Vec<Frontend> = has
            .iter()
            .filter(|(fe, eps)| !eps.is_empty() && had.get(fe).is_none_or(BTreeSet::is_empty))
            .map(|(fe, _)| *fe)
            .collect();
        reachable.sort();
        let mut removed_udp: Vec<(Frontend, SocketAddrV4)> = had
            .iter()
            .filter(|(fe, _)| fe.0 == Protocol::Udp)
            .flat_map(|(fe, eps)| {
                let now = has.get(fe).unwrap_or(&empty);
                eps.difference(now).map(move |ep| (*fe, *ep))
            })
            .collect();
        removed_udp.sort();
        Changes {
            reachable,
            removed_udp,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.reachable.is_empty() && self.removed_udp.is_empty()
    }

    /// The deletions that clear the stale entries among `flows`.
    pub fn stale(&self, flows: &[Flow]) -> Vec<StaleFlows> {
        let mut out = BTreeSet::new();
        for f in flows {
            // without DNAT: still unanswered, or (TCP) refused before the
            // rules existed and now closed
            let dead_end =
                f.untranslated() && (f.unreplied || f.protocol == Protocol::Udp || f.state == "CLOSE");
            if dead_end && self.reachable.iter().any(|fe| matches(f, fe)) {
                out.insert(StaleFlows {
                    protocol: f.protocol,
                    orig_dst: f.orig_dst,
                    reply_src: f.reply_src,
                });
            }
            if f.protocol == Protocol::Udp
                && self
                    .removed_udp
                    .iter()
                    .any(|(fe, ep)| f.reply_src == *ep && matches(f, fe))
            {
                out.insert(StaleFlows {
                    protocol: f.protocol,
                    orig_dst: f.orig_dst,
                    reply_src: f.reply_src,
                });
            }
        }
        out.into_iter().collect()
    }
}

/// Runs the `conntrack` tool (with the same namespace prefix as nft).
pub struct Conntrack {
    command: Vec<String>,
    /// Set once the tool was found missing, so that is logged once.
    missing: bool,
}

impl Conntrack {
    pub fn new(command: Vec<String>) -> Self {
        Conntrack {
            command,
            missing: false,
        }
    }

    async fn run(&self, args: &[String]) -> std::io::Result<std::process::Output> {
        let (program, lead) = self
            .command
            .split_first()
            .ok_or_else(|| std::io::Error::other("empty conntrack command"))?;
        tokio::process::Command::new(program)
            .args(lead)
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
    }

    /// Removes the entries `changes` made stale. Failures are logged, not
    /// returned: the rules are in place either way, and the next change
    /// looks again.
    pub async fn clear_stale(&mut self, changes: &Changes) {
        if changes.is_empty() || self.missing {
            return;
        }
        let shown = self.command.join(" ");
        let listing = match self.run(&["-L".to_string()]).await {
            Ok(out) if out.status.success() => out.stdout,
            Ok(out) => {
                tracing::warn!(
                    "{shown} -L failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.missing = true;
                tracing::warn!(
                    "cannot run {shown:?} ({e}): stale conntrack entries are not cleared, so a client \
                     that tried a Service before it was programmed may hang on a reused source port; \
                     install package conntrack or set --conntrack-command"
                );
                return;
            }
            Err(e) => {
                tracing::warn!("cannot run {shown:?}: {e}");
                return;
            }
        };
        let flows: Vec<Flow> = String::from_utf8_lossy(&listing)
            .lines()
            .filter_map(parse_flow)
            .collect();
        let stale = changes.stale(&flows);
        let mut seen = HashSet::new();
        for s in stale {
            if !seen.insert(s.clone()) {
                continue;
            }
            match self.run(&s.delete_args()).await {
                // exit status 1 with nothing deleted: already gone
                Ok(out)
                    if out.status.success()
                        || String::from_utf8_lossy(&out.stderr).contains(" 0 flow entries") =>
                {
                    tracing::debug!(?s, "removed stale conntrack entries");
                }
                Ok(out) => tracing::warn!(
                    "{shown} {}: {}",
                    s.delete_args().join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => tracing::warn!("cannot run {shown:?}: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "\
tcp      6 112 SYN_SENT src=10.244.7.19 dst=10.96.0.2 sport=43038 dport=80 [UNREPLIED] src=10.96.0.2 dst=10.244.7.19 sport=80 dport=43038 mark=0 use=3
tcp      6 119 TIME_WAIT src=10.244.7.19 dst=10.96.0.2 sport=49210 dport=80 src=10.244.7.12 dst=10.244.7.19 sport=8080 dport=49210 [ASSURED] mark=0 use=1
tcp      6 9 CLOSE src=10.0.0.5 dst=10.244.7.1 sport=5000 dport=30080 src=10.244.7.1 dst=10.0.0.5 sport=30080 dport=5000 mark=0 use=1
tcp      6 431999 ESTABLISHED src=127.0.0.1 dst=127.0.0.1 sport=34293 dport=45862 src=127.0.0.1 dst=127.0.0.1 sport=45862 dport=34293 [ASSURED] mark=0 use=1
udp      17 29 src=10.244.7.19 dst=10.96.0.10 sport=5353 dport=53 src=10.244.7.11 dst=10.244.7.19 sport=53 dport=5353 [ASSURED] mark=0 use=1
udp      17 29 src=10.244.7.19 dst=10.96.0.10 sport=5354 dport=53 src=10.244.7.12 dst=10.244.7.19 sport=53 dport=5354 [ASSURED] mark=0 use=1
icmp     1 29 src=10.244.7.19 dst=10.96.0.2 type=8 code=0 id=1 src=10.96.0.2 dst=10.244.7.19 type=0 code=0 id=1 mark=0 use=1
";

    fn port(proto: Protocol, ip: &str, port: u16, node_port: Option<u16>, eps: &[&str]) -> ServicePort {
        ServicePort {
            name: format!("default/{ip}:"),
            cluster_ip: Some(ip.parse().unwrap()),
            load_balancer_ips: vec![],
            protocol: proto,
            port,
            node_port,
            affinity_timeout: None,
            endpoints: eps.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    fn flows() -> Vec<Flow> {
        LISTING.lines().filter_map(parse_flow).collect()
    }

    #[test]
    fn parses_both_directions() {
        let f = flows();
        assert_eq!(f.len(), 6, "{f:?}");
        assert_eq!(f[0].state, "SYN_SENT");
        assert!(f[0].unreplied && f[0].untranslated());
        assert_eq!(f[1].reply_src, "10.244.7.12:8080".parse().unwrap());
        assert!(!f[1].untranslated());
        assert_eq!(f[4].protocol, Protocol::Udp);
        assert_eq!(f[4].state, "");
    }

    #[test]
    fn a_service_that_becomes_reachable_loses_its_untranslated_entries() {
        let web = port(Protocol::Tcp, "10.96.0.2", 80, Some(30080), &["10.244.7.12:8080"]);
        let changes = Changes::between(&[], std::slice::from_ref(&web));
        let stale = changes.stale(&flows());
        assert_eq!(
            stale,
            vec![
                StaleFlows {
                    protocol: Protocol::Tcp,
                    orig_dst: "10.96.0.2:80".parse().unwrap(),
                    reply_src: "10.96.0.2:80".parse().unwrap(),
                },
                StaleFlows {
                    protocol: Protocol::Tcp,
                    orig_dst: "10.244.7.1:30080".parse().unwrap(),
                    reply_src: "10.244.7.1:30080".parse().unwrap(),
                },
            ]
        );
        assert_eq!(
            stale[0].delete_args().join(" "),
            "-D -p tcp --orig-dst 10.96.0.2 --orig-port-dst 80 --reply-src 10.96.0.2 --reply-port-src 80"
        );
        // already reachable before: nothing to look for
        let again = Changes::between(std::slice::from_ref(&web), std::slice::from_ref(&web));
        assert!(again.is_empty());
        // no endpoints yet: it rejects, whatever the entry
        let empty = port(Protocol::Tcp, "10.96.0.2", 80, None, &[]);
        assert!(Changes::between(&[], &[empty]).is_empty());
    }

    #[test]
    fn udp_entries_to_a_removed_endpoint_go() {
        let dns = |eps: &[&str]| port(Protocol::Udp, "10.96.0.10", 53, None, eps);
        let changes = Changes::between(
            &[dns(&["10.244.7.11:53", "10.244.7.12:53"])],
            &[dns(&["10.244.7.12:53"])],
        );
        assert_eq!(
            changes.stale(&flows()),
            vec![StaleFlows {
                protocol: Protocol::Udp,
                orig_dst: "10.96.0.10:53".parse().unwrap(),
                reply_src: "10.244.7.11:53".parse().unwrap(),
            }]
        );
        // a TCP endpoint that leaves keeps its connections until they end
        let web = |eps: &[&str]| port(Protocol::Tcp, "10.96.0.2", 80, None, eps);
        let changes = Changes::between(
            &[web(&["10.244.7.12:8080", "10.244.7.13:8080"])],
            &[web(&["10.244.7.13:8080"])],
        );
        assert!(changes.is_empty());
    }
}
