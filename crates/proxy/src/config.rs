//! The proxy's options (flags, or the same fields in a YAML file given with `--config`,
//! camelCase keys; flags win) and the configuration it runs with.

use clap::Parser;
use rkube_daemon::{ClientOptions, DaemonOptions, Options as _};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Deserialize, Debug, Clone, Default)]
#[command(
    name = "rkube-proxy",
    version,
    about = "rkube's service proxy: makes Service addresses reach ready endpoints on this node",
    after_help = "In the config file (e.g. `mode: userspace`, `minSyncPeriod: 100ms`), \
                  commands are lists: `nftCommand: [nsenter, --net=/var/run/netns/X, nft]`."
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Options {
    #[command(flatten)]
    #[serde(flatten)]
    pub daemon: DaemonOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub client: ClientOptions,
    /// This node's name (defaults to the host name).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// `nftables` (one table `ip rkube`, replaced atomically per sync) or
    /// `userspace` (a TCP and UDP proxy listening on ClusterIPs, added to a dummy
    /// interface `rkube-svc`, and on NodePorts; for machines without nftables).
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
    /// Least time between two syncs, so a burst of changes makes one
    /// (e.g. `100ms`, `1s`).
    #[arg(long, value_name = "DURATION")]
    pub min_sync_period: Option<String>,
    /// Remove everything rkube-proxy installed (the nftables table, the
    /// `rkube-svc` interface) and exit.
    #[arg(long)]
    #[serde(skip)]
    pub cleanup: bool,
    /// The command that runs nft, split on spaces (e.g.
    /// `nsenter --net=/var/run/netns/X nft` to program another network
    /// namespace).
    #[arg(long, value_name = "COMMAND")]
    pub nft_command: Option<CommandLine>,
    /// Enforce NetworkPolicies (nftables mode only; table `inet rkube-netpol`). On by
    /// default; `--network-policy=false` leaves pods' traffic alone.
    #[arg(long, value_name = "BOOL")]
    pub network_policy: Option<bool>,
    /// The command that runs ip (iproute2), for userspace mode.
    #[arg(long, value_name = "COMMAND")]
    pub ip_command: Option<CommandLine>,
    /// The command that runs conntrack (package conntrack), which nftables
    /// mode uses to clear entries its new rules cannot fix.
    #[arg(long, value_name = "COMMAND")]
    pub conntrack_command: Option<CommandLine>,
    /// The address this node's cluster DNS answers on (UDP and TCP port 53),
    /// put on a dummy interface `rkube-dns`; give the kubelets the same
    /// address as `--cluster-dns`. Default 169.254.20.10; `none` serves no DNS.
    #[arg(long, value_name = "IP")]
    pub dns_address: Option<String>,
    /// The cluster's DNS domain (default cluster.local), as the kubelets'
    /// `--cluster-domain`.
    #[arg(long, value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,
    /// A resolver (`IP` or `IP:PORT`) names outside the cluster domain are
    /// forwarded to; repeatable (default: the nameservers of --resolv-conf).
    #[arg(long = "dns-upstream", value_name = "ADDR")]
    pub dns_upstreams: Option<Vec<String>>,
    /// The node's resolver configuration (default /etc/resolv.conf).
    #[arg(long, value_name = "FILE")]
    pub resolv_conf: Option<PathBuf>,
}

rkube_daemon::impl_options!(Options, rkube_daemon::health::PROXY_PORT, daemon);

/// A program and its leading arguments: split on spaces as a flag, a list in the file.
#[derive(Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct CommandLine(pub Vec<String>);

impl std::str::FromStr for CommandLine {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(CommandLine(s.split_whitespace().map(String::from).collect()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Nftables,
    Userspace,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub apiserver: String,
    /// Credentials (see `--kubeconfig`); `None`: plain `apiserver`.
    pub kubeconfig: Option<PathBuf>,
    pub node_name: String,
    pub mode: Mode,
    pub min_sync_period: Duration,
    pub cleanup: bool,
    /// Program and leading arguments that run `nft`.
    pub nft_command: Vec<String>,
    /// Program and leading arguments that run `ip`.
    pub ip_command: Vec<String>,
    /// Whether NetworkPolicies are enforced (nftables mode).
    pub network_policy: bool,
    /// Program and leading arguments that run `conntrack`.
    pub conntrack_command: Vec<String>,
    /// The health and metrics endpoint; `None` (the default for tests and
    /// embedding) serves none. The daemon's flags default to loopback.
    pub health_addr: Option<std::net::SocketAddr>,
    /// The node's cluster DNS; `None` (the default for tests and embedding)
    /// serves none. The daemon's flags default to 169.254.20.10.
    pub dns: Option<rkube_dns::Config>,
}

/// Parses `100ms`, `2s` or a bare number of milliseconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.trim().parse().ok().map(Duration::from_millis);
    }
    if let Some(secs) = s.strip_suffix('s') {
        return secs
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Duration::from_secs_f64);
    }
    s.parse().ok().map(Duration::from_millis)
}

impl Config {
    /// Defaults: nftables mode, 100 ms batching, `nft`, `ip` and
    /// `conntrack` from PATH.
    pub fn new(apiserver: impl Into<String>, node_name: impl Into<String>) -> Self {
        Config {
            apiserver: apiserver.into(),
            kubeconfig: None,
            node_name: node_name.into(),
            mode: Mode::Nftables,
            min_sync_period: Duration::from_millis(100),
            cleanup: false,
            nft_command: vec!["nft".into()],
            ip_command: vec!["ip".into()],
            network_policy: true,
            conntrack_command: vec!["conntrack".into()],
            health_addr: None,
            dns: None,
        }
    }

    /// The options resolved over the defaults, and checked; errors name the flag.
    pub fn from_options(o: Options) -> anyhow::Result<Config> {
        let (apiserver, kubeconfig) = o.client.connection();
        let health_addr = o.health_addr();
        let node_name = o.node_name.unwrap_or_else(rkube_daemon::host_name);
        let mut c = Config::new(apiserver, node_name);
        c.kubeconfig = kubeconfig;
        c.health_addr = health_addr;
        c.mode = match o.mode.as_deref() {
            None | Some("nftables") => Mode::Nftables,
            Some("userspace") => Mode::Userspace,
            Some(other) => anyhow::bail!("--mode {other:?} is not one of nftables, userspace"),
        };
        if let Some(s) = o.min_sync_period {
            c.min_sync_period = parse_duration(&s).ok_or_else(|| {
                anyhow::anyhow!("--min-sync-period {s:?} is not a duration like 100ms or 1s")
            })?;
        }
        c.cleanup = o.cleanup;
        c.network_policy = o.network_policy.unwrap_or(true);
        let command = |v: Option<CommandLine>, d: Vec<String>| v.map_or(d, |c| c.0);
        c.nft_command = command(o.nft_command, c.nft_command);
        c.ip_command = command(o.ip_command, c.ip_command);
        c.conntrack_command = command(o.conntrack_command, c.conntrack_command);
        if c.nft_command.is_empty() || c.ip_command.is_empty() || c.conntrack_command.is_empty() {
            anyhow::bail!("--nft-command, --ip-command and --conntrack-command must name a program");
        }
        c.dns = dns_config(
            o.dns_address,
            o.cluster_domain,
            o.dns_upstreams,
            o.resolv_conf,
            &c.ip_command,
        )?;
        if c.node_name.is_empty() {
            anyhow::bail!("--node-name is required (the host name could not be read)");
        }
        if c.min_sync_period > Duration::from_secs(1) {
            anyhow::bail!(
                "--min-sync-period must be at most 1s, so a change reaches the rules within a second"
            );
        }
        Ok(c)
    }
}

/// The cluster DNS's configuration from the flags; `None` with `--dns-address none`.
fn dns_config(
    address: Option<String>,
    domain: Option<String>,
    upstreams: Option<Vec<String>>,
    resolv_conf: Option<PathBuf>,
    ip_command: &[String],
) -> anyhow::Result<Option<rkube_dns::Config>> {
    let mut d = rkube_dns::Config::new();
    match address.as_deref().map(str::trim) {
        None => {}
        Some("none" | "") => return Ok(None),
        Some(a) => {
            let ip: std::net::IpAddr = a
                .parse()
                .map_err(|_| anyhow::anyhow!("--dns-address {a:?} is not an IP address (or none)"))?;
            d.listen.set_ip(ip);
        }
    }
    if let Some(domain) = domain {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if !rkube_api::validation::is_dns1123_subdomain(&domain) {
            anyhow::bail!("--cluster-domain {domain:?} is not a DNS domain like cluster.local");
        }
        d.domain = domain;
    }
    for u in upstreams.unwrap_or_default() {
        let addr = u
            .parse::<std::net::SocketAddr>()
            .or_else(|_| u.parse::<std::net::IpAddr>().map(|ip| (ip, 53).into()))
            .map_err(|_| anyhow::anyhow!("--dns-upstream {u:?} is not IP or IP:PORT"))?;
        d.upstreams.push(addr);
    }
    if let Some(f) = resolv_conf {
        d.resolv_conf = f;
    }
    d.ip_command = ip_command.to_vec();
    Ok(Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(flags: &[&str]) -> anyhow::Result<Config> {
        let argv = ["rkube-proxy"].iter().chain(flags);
        Config::from_options(rkube_daemon::options::parse_from(argv)?)
    }

    #[test]
    fn durations_and_flags_over_file() {
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("soon"), None);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("proxy.yaml");
        std::fs::write(
            &file,
            "mode: userspace\nnodeName: n1\nminSyncPeriod: 50ms\nnftCommand: [nsenter, --net=/x, nft]\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let cfg = config(&["--config", path, "--node-name", "n2"]).unwrap();
        assert_eq!(cfg.mode, Mode::Userspace);
        assert_eq!(cfg.node_name, "n2");
        assert_eq!(cfg.min_sync_period, Duration::from_millis(50));
        assert_eq!(cfg.nft_command, ["nsenter", "--net=/x", "nft"]);
        let cfg = config(&["--config", path, "--nft-command", "ip netns exec x nft"]).unwrap();
        assert_eq!(cfg.nft_command, ["ip", "netns", "exec", "x", "nft"]);
        let dns = cfg.dns.expect("the node-local DNS is on by default");
        assert_eq!(dns.listen, "169.254.20.10:53".parse().unwrap());
        assert_eq!(dns.domain, "cluster.local");
        let cfg = config(&[
            "--dns-address",
            "10.0.0.10",
            "--cluster-domain",
            "Corp.Example.",
            "--dns-upstream",
            "192.0.2.53:5353",
            "--dns-upstream",
            "192.0.2.54",
        ])
        .unwrap();
        let dns = cfg.dns.unwrap();
        assert_eq!(dns.listen, "10.0.0.10:53".parse().unwrap());
        assert_eq!(dns.domain, "corp.example");
        assert_eq!(
            dns.upstreams,
            [
                "192.0.2.53:5353".parse().unwrap(),
                "192.0.2.54:53".parse().unwrap()
            ]
        );
        assert!(config(&["--dns-address", "none"]).unwrap().dns.is_none());
        let err = config(&["--dns-address", "nowhere"]).unwrap_err();
        assert!(err.to_string().contains("--dns-address"), "{err}");
        let err = config(&["--mode", "ipvs"]).unwrap_err();
        assert!(err.to_string().contains("ipvs"), "{err}");
        std::fs::write(&file, "bogus: 1\n").unwrap();
        let err = config(&["--config", path]).unwrap_err();
        assert!(err.to_string().contains("proxy.yaml"), "{err}");
    }
}
