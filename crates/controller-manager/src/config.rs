//! The controller-manager's options (flags, or the same fields in a YAML file given with
//! `--config`; flags win) and the configuration it runs with.

use clap::Parser;
use rkube_client::runtime::ManagerOptions;
use rkube_client::{LeaderElection, LeaderElectionOptions};
use rkube_daemon::{ClientOptions, DaemonOptions, Options as _};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Deserialize, Debug, Clone, Default)]
#[command(
    name = "rkube-controller-manager",
    version,
    about = "rkube's controller manager: the loops that keep the cluster as declared"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Options {
    #[command(flatten)]
    #[serde(flatten)]
    pub daemon: DaemonOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub client: ClientOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub manager: ManagerOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub leader_election: LeaderElectionOptions,
    /// Seconds a node may go without renewing its Lease before it is marked
    /// Ready=Unknown and tainted unreachable.
    #[arg(long, value_name = "SECONDS")]
    pub node_monitor_grace_period: Option<u64>,
    /// Default seconds pods tolerate an unreachable or not-ready node before
    /// they are evicted (when they do not say tolerationSeconds).
    #[arg(long, value_name = "SECONDS")]
    pub default_toleration_seconds: Option<u64>,
    /// Pod network of the cluster; every node gets a slice of it.
    #[arg(long, value_name = "CIDR")]
    pub cluster_cidr: Option<String>,
    /// Prefix length of each node's podCIDR.
    #[arg(long, value_name = "BITS")]
    pub node_cidr_mask_size: Option<u8>,
    /// Seconds between autoscaler evaluations.
    #[arg(long, value_name = "SECONDS")]
    pub hpa_sync_period: Option<u64>,
    /// Seconds the autoscaler waits before scaling down (the highest
    /// recommendation in this window wins).
    #[arg(long, value_name = "SECONDS")]
    pub hpa_downscale_stabilization: Option<u64>,
    /// Seconds between checks of each node's heartbeat and of the pods to
    /// evict from tainted nodes (at the latest; changes act at once).
    #[arg(long, value_name = "SECONDS")]
    pub node_monitor_period: Option<u64>,
    /// PEM CA certificate csrsigning signs CertificateSigningRequests with.
    #[arg(long, value_name = "FILE")]
    pub cluster_signing_cert_file: Option<PathBuf>,
    /// PEM private key of --cluster-signing-cert-file.
    #[arg(long, value_name = "FILE")]
    pub cluster_signing_key_file: Option<PathBuf>,
    /// Longest certificate csrsigning gives (`8760h`, `90m`, `120s`); a
    /// request's spec.expirationSeconds can only shorten it.
    #[arg(long, value_name = "DURATION")]
    pub cluster_signing_duration: Option<String>,
}

rkube_daemon::impl_options!(Options, rkube_daemon::health::CONTROLLER_MANAGER_PORT, daemon);

#[derive(Debug, Clone)]
pub struct Config {
    pub apiserver: String,
    /// Credentials (see `--kubeconfig`); `None`: plain `apiserver`.
    pub kubeconfig: Option<PathBuf>,
    pub controllers: Vec<String>,
    pub workers: usize,
    /// On by default: only the holder of the Lease kube-system/kube-controller-manager
    /// runs the controllers.
    pub leader_election: LeaderElection,
    pub node_monitor_grace_period: Duration,
    pub default_toleration_seconds: u64,
    pub cluster_cidr: String,
    pub node_cidr_mask_size: u8,
    pub hpa_sync_period: Duration,
    pub hpa_downscale_stabilization: Duration,
    pub node_monitor_period: Duration,
    /// Where the autoscaler reads pod usage; None: from the kubelets
    /// through the apiserver. Not a flag: tests and embedders set it.
    pub metrics_source: Option<crate::metrics::SharedMetricsSource>,
    /// The cluster CA for csrsigning; without both it signs nothing.
    pub cluster_signing_cert_file: Option<PathBuf>,
    pub cluster_signing_key_file: Option<PathBuf>,
    /// Kubernetes' default: a year (8760h).
    pub cluster_signing_duration: Duration,
    /// The health and metrics endpoint; `None` (the default for tests and
    /// embedding) serves none. The daemon's flags default to loopback.
    pub health_addr: Option<std::net::SocketAddr>,
}

impl Config {
    /// Defaults as Kubernetes has them, against `apiserver`.
    pub fn new(apiserver: impl Into<String>) -> Self {
        Config {
            apiserver: apiserver.into(),
            kubeconfig: None,
            controllers: vec!["*".into()],
            workers: 4,
            leader_election: LeaderElection::new(crate::LEASE_NAME),
            node_monitor_grace_period: Duration::from_secs(40),
            default_toleration_seconds: 300,
            cluster_cidr: "10.244.0.0/16".into(),
            node_cidr_mask_size: 24,
            hpa_sync_period: Duration::from_secs(15),
            hpa_downscale_stabilization: Duration::from_secs(300),
            node_monitor_period: Duration::from_secs(5),
            metrics_source: None,
            cluster_signing_cert_file: None,
            cluster_signing_key_file: None,
            cluster_signing_duration: Duration::from_secs(8760 * 3600),
            health_addr: None,
        }
    }

    /// The options resolved over the defaults, and checked.
    pub fn from_options(o: Options) -> anyhow::Result<Config> {
        let (apiserver, kubeconfig) = o.client.connection();
        let mut c = Config::new(apiserver);
        let secs = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_secs);
        c.kubeconfig = kubeconfig;
        c.health_addr = o.health_addr();
        c.controllers = o.manager.controllers();
        c.workers = o.manager.workers(c.workers)?;
        c.leader_election = o.leader_election.resolve(crate::LEASE_NAME)?;
        c.node_monitor_grace_period = secs(o.node_monitor_grace_period, c.node_monitor_grace_period);
        c.default_toleration_seconds = o
            .default_toleration_seconds
            .unwrap_or(c.default_toleration_seconds);
        c.cluster_cidr = o.cluster_cidr.unwrap_or(c.cluster_cidr);
        c.node_cidr_mask_size = o.node_cidr_mask_size.unwrap_or(c.node_cidr_mask_size);
        c.hpa_sync_period = secs(o.hpa_sync_period, c.hpa_sync_period);
        c.hpa_downscale_stabilization = secs(o.hpa_downscale_stabilization, c.hpa_downscale_stabilization);
        c.node_monitor_period = secs(o.node_monitor_period, c.node_monitor_period);
        if o.cluster_signing_cert_file.is_some() != o.cluster_signing_key_file.is_some() {
            anyhow::bail!("--cluster-signing-cert-file and --cluster-signing-key-file go together: give both or neither");
        }
        c.cluster_signing_cert_file = o.cluster_signing_cert_file;
        c.cluster_signing_key_file = o.cluster_signing_key_file;
        if let Some(d) = o.cluster_signing_duration {
            c.cluster_signing_duration =
                parse_duration(&d).map_err(|e| anyhow::anyhow!("--cluster-signing-duration {d:?}: {e}"))?;
        }
        crate::enabled(&c.controllers)?;
        Ok(c)
    }
}

/// A Go-style duration as Kubernetes' flags take it: `8760h`, `1h30m`,
/// `90s`; at least ten minutes would be Kubernetes' floor for a request, but
/// the flag itself may be shorter (tests rotate certificates in minutes).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total = 0u64;
    let mut number = String::new();
    let mut units = 0;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let scale = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(format!("unknown unit {c:?}; use h, m or s (8760h, 90m, 120s)")),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("a number must come before {c:?} (8760h, 90m, 120s)"))?;
        total = total.saturating_add(n.saturating_mul(scale));
        number.clear();
        units += 1;
    }
    if !number.is_empty() || units == 0 {
        return Err("needs a unit: h, m or s (8760h, 90m, 120s)".into());
    }
    if total == 0 {
        return Err("must be longer than zero".into());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_durations_read_as_kubernetes_writes_them() {
        assert_eq!(parse_duration("8760h"), Ok(Duration::from_secs(8760 * 3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("120").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("2d").unwrap_err().contains("unknown unit 'd'"));
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn a_signing_cert_without_its_key_is_refused() {
        let o = Options {
            cluster_signing_cert_file: Some("/etc/rkube/pki/ca.crt".into()),
            ..Options::default()
        };
        let err = Config::from_options(o).unwrap_err().to_string();
        assert!(err.contains("--cluster-signing-key-file"), "{err}");
    }
}
