//! Flags, or the same fields in a YAML file given with `--config` (camelCase
//! keys; flags win).

use clap::Parser;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "rkube-proxy",
    version,
    about = "rkube's service proxy: makes Service addresses reach ready endpoints on this node"
)]
pub struct Args {
    /// YAML file with any of the settings below (camelCase keys, e.g.
    /// `mode: userspace`, `minSyncPeriod: 100ms`); flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The apiserver to watch Services and Endpoints on.
    #[arg(long, value_name = "URL")]
    pub apiserver: Option<String>,
    /// Client config file with this daemon's credentials: server, CA and
    /// client certificate or token (`rkubectl certs generate` writes one per
    /// component). --apiserver, if given, overrides its server.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
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
    pub cleanup: bool,
    /// The command that runs nft, split on spaces (e.g.
    /// `nsenter --net=/var/run/netns/X nft` to program another network
    /// namespace).
    #[arg(long, value_name = "COMMAND")]
    pub nft_command: Option<String>,
    /// The command that runs ip (iproute2), for userspace mode.
    #[arg(long, value_name = "COMMAND")]
    pub ip_command: Option<String>,
    /// The command that runs conntrack (package conntrack), which nftables
    /// mode uses to clear entries its new rules cannot fix.
    #[arg(long, value_name = "COMMAND")]
    pub conntrack_command: Option<String>,
    /// Where to serve /healthz, /livez, /readyz and /metrics over plain
    /// HTTP; `off` turns it off. Default: 127.0.0.1:10256.
    #[arg(long, value_name = "ADDR|off")]
    pub health_addr: Option<rkube_daemon::HealthAddr>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    apiserver: Option<String>,
    kubeconfig: Option<PathBuf>,
    node_name: Option<String>,
    mode: Option<String>,
    min_sync_period: Option<String>,
    nft_command: Option<Vec<String>>,
    ip_command: Option<Vec<String>>,
    conntrack_command: Option<Vec<String>>,
    health_addr: Option<rkube_daemon::HealthAddr>,
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
    /// Program and leading arguments that run `conntrack`.
    pub conntrack_command: Vec<String>,
    /// The health and metrics endpoint; `None` (the default for tests and
    /// embedding) serves none. The daemon's flags default to loopback.
    pub health_addr: Option<std::net::SocketAddr>,
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

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
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
            conntrack_command: vec!["conntrack".into()],
            health_addr: None,
        }
    }

    pub fn from_args(args: Args) -> anyhow::Result<Config> {
        let file: FileConfig = rkube_daemon::load_config_file(args.config.as_deref())?;
        let host = rkube_daemon::host_name();
        let d = Config::new("http://127.0.0.1:6443", host);
        let mode = match args.mode.or(file.mode).as_deref() {
            None | Some("nftables") => Mode::Nftables,
            Some("userspace") => Mode::Userspace,
            Some(other) => anyhow::bail!("--mode {other:?} is not one of nftables, userspace"),
        };
        let min_sync_period = match args.min_sync_period.or(file.min_sync_period) {
            None => d.min_sync_period,
            Some(s) => parse_duration(&s).ok_or_else(|| {
                anyhow::anyhow!("--min-sync-period {s:?} is not a duration like 100ms or 1s")
            })?,
        };
        let nft_command = args
            .nft_command
            .map(|s| words(&s))
            .or(file.nft_command)
            .unwrap_or(d.nft_command);
        let ip_command = args
            .ip_command
            .map(|s| words(&s))
            .or(file.ip_command)
            .unwrap_or(d.ip_command);
        let conntrack_command = args
            .conntrack_command
            .map(|s| words(&s))
            .or(file.conntrack_command)
            .unwrap_or(d.conntrack_command);
        if nft_command.is_empty() || ip_command.is_empty() || conntrack_command.is_empty() {
            anyhow::bail!("--nft-command, --ip-command and --conntrack-command must name a program");
        }
        let (apiserver, kubeconfig) =
            rkube_daemon::connection(args.apiserver, file.apiserver, args.kubeconfig, file.kubeconfig);
        let cfg = Config {
            apiserver,
            kubeconfig,
            node_name: args.node_name.or(file.node_name).unwrap_or(d.node_name),
            mode,
            min_sync_period,
            cleanup: args.cleanup,
            nft_command,
            ip_command,
            conntrack_command,
            health_addr: rkube_daemon::HealthAddr::resolve(
                args.health_addr.or(file.health_addr),
                rkube_daemon::health::PROXY_PORT,
            ),
        };
        if cfg.node_name.is_empty() {
            anyhow::bail!("--node-name is required (the host name could not be read)");
        }
        if cfg.min_sync_period > Duration::from_secs(1) {
            anyhow::bail!(
                "--min-sync-period must be at most 1s, so a change reaches the rules within a second"
            );
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let cfg = Config::from_args(Args {
            config: Some(file.clone()),
            node_name: Some("n2".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.mode, Mode::Userspace);
        assert_eq!(cfg.node_name, "n2");
        assert_eq!(cfg.min_sync_period, Duration::from_millis(50));
        assert_eq!(cfg.nft_command, ["nsenter", "--net=/x", "nft"]);
        let err = Config::from_args(Args {
            mode: Some("ipvs".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("ipvs"), "{err}");
        std::fs::write(&file, "bogus: 1\n").unwrap();
        let err = Config::from_args(Args {
            config: Some(file),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("proxy.yaml"), "{err}");
    }
}
