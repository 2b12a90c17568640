//! Flags, or the same fields in a YAML file given with `--config`.

use clap::Parser;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "rkube-controller-manager",
    version,
    about = "rkube's controller manager: the loops that keep the cluster as declared"
)]
pub struct Args {
    /// YAML file with any of the settings below (camelCase keys); flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The apiserver to talk to.
    #[arg(long, value_name = "URL")]
    pub apiserver: Option<String>,
    /// Client config file with this daemon's credentials: server, CA and
    /// client certificate or token (`rkubectl certs generate` writes one per
    /// component). --apiserver, if given, overrides its server.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Which controllers run: `*` for all, `name` to add, `-name` to remove
    /// (e.g. `*,-horizontal-pod-autoscaler`).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub controllers: Vec<String>,
    /// Concurrent reconciles per controller.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
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
    /// Where to serve /healthz, /livez, /readyz and /metrics over plain
    /// HTTP; `off` turns it off. Default: 127.0.0.1:10257.
    #[arg(long, value_name = "ADDR|off")]
    pub health_addr: Option<rkube_daemon::HealthAddr>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    apiserver: Option<String>,
    kubeconfig: Option<PathBuf>,
    controllers: Option<Vec<String>>,
    workers: Option<usize>,
    node_monitor_grace_period: Option<u64>,
    default_toleration_seconds: Option<u64>,
    cluster_cidr: Option<String>,
    node_cidr_mask_size: Option<u8>,
    hpa_sync_period: Option<u64>,
    hpa_downscale_stabilization: Option<u64>,
    node_monitor_period: Option<u64>,
    health_addr: Option<rkube_daemon::HealthAddr>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub apiserver: String,
    /// Credentials (see `--kubeconfig`); `None`: plain `apiserver`.
    pub kubeconfig: Option<PathBuf>,
    pub controllers: Vec<String>,
    pub workers: usize,
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
            node_monitor_grace_period: Duration::from_secs(40),
            default_toleration_seconds: 300,
            cluster_cidr: "10.244.0.0/16".into(),
            node_cidr_mask_size: 24,
            hpa_sync_period: Duration::from_secs(15),
            hpa_downscale_stabilization: Duration::from_secs(300),
            node_monitor_period: Duration::from_secs(5),
            metrics_source: None,
            health_addr: None,
        }
    }

    pub fn from_args(args: Args) -> anyhow::Result<Config> {
        let file: FileConfig = rkube_daemon::load_config_file(args.config.as_deref())?;
        let d = Config::new("http://127.0.0.1:6443");
        let secs =
            |a: Option<u64>, f: Option<u64>, d: Duration| a.or(f).map(Duration::from_secs).unwrap_or(d);
        let (apiserver, kubeconfig) =
            rkube_daemon::connection(args.apiserver, file.apiserver, args.kubeconfig, file.kubeconfig);
        let cfg = Config {
            apiserver,
            kubeconfig,
            controllers: if !args.controllers.is_empty() {
                args.controllers
            } else {
                file.controllers.unwrap_or(d.controllers)
            },
            workers: args.workers.or(file.workers).unwrap_or(d.workers),
            node_monitor_grace_period: secs(
                args.node_monitor_grace_period,
                file.node_monitor_grace_period,
                d.node_monitor_grace_period,
            ),
            default_toleration_seconds: args
                .default_toleration_seconds
                .or(file.default_toleration_seconds)
                .unwrap_or(d.default_toleration_seconds),
            cluster_cidr: args.cluster_cidr.or(file.cluster_cidr).unwrap_or(d.cluster_cidr),
            node_cidr_mask_size: args
                .node_cidr_mask_size
                .or(file.node_cidr_mask_size)
                .unwrap_or(d.node_cidr_mask_size),
            hpa_sync_period: secs(args.hpa_sync_period, file.hpa_sync_period, d.hpa_sync_period),
            hpa_downscale_stabilization: secs(
                args.hpa_downscale_stabilization,
                file.hpa_downscale_stabilization,
                d.hpa_downscale_stabilization,
            ),
            node_monitor_period: secs(
                args.node_monitor_period,
                file.node_monitor_period,
                d.node_monitor_period,
            ),
            metrics_source: None,
            health_addr: rkube_daemon::HealthAddr::resolve(
                args.health_addr.or(file.health_addr),
                rkube_daemon::health::CONTROLLER_MANAGER_PORT,
            ),
        };
        if cfg.workers == 0 {
            anyhow::bail!("--workers must be at least 1");
        }
        crate::enabled(&cfg.controllers)?;
        Ok(cfg)
    }
}
