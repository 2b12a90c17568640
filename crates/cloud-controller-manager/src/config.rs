//! Flags, or the same fields in a YAML file given with `--config`.

use crate::cloud::CloudProvider;
use clap::Parser;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "rkube-cloud-controller-manager",
    version,
    about = "rkube's cloud controller manager: initialises nodes from the machines they run on, \
             retires nodes whose machine is gone, gives LoadBalancer Services addresses and \
             routes pod networks between nodes"
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
    /// (cloud-node, cloud-node-lifecycle, service, route; e.g. `*,-route`).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub controllers: Vec<String>,
    /// Concurrent reconciles per controller.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// The cloud provider: `local` (machines listed in the cloud-config file).
    #[arg(long, value_name = "NAME")]
    pub cloud_provider: Option<String>,
    /// The provider's configuration file (for `local`: machines, the
    /// LoadBalancer address pool, route settings).
    #[arg(long, value_name = "FILE")]
    pub cloud_config: Option<PathBuf>,
    /// The cluster's name, passed to the provider to tell its objects apart.
    #[arg(long, value_name = "NAME")]
    pub cluster_name: Option<String>,
    /// Seconds between checks of NotReady nodes against their instances
    /// (deleted when gone, tainted when shut down).
    #[arg(long, value_name = "SECONDS")]
    pub node_monitor_period: Option<u64>,
    /// Seconds between refreshes of initialised nodes' addresses from the
    /// provider.
    #[arg(long, value_name = "SECONDS")]
    pub node_status_update_frequency: Option<u64>,
    /// Seconds between full reconciliations of the pod-network routes
    /// (node changes act at once).
    #[arg(long, value_name = "SECONDS")]
    pub route_reconciliation_period: Option<u64>,
    /// Where to serve /healthz, /livez, /readyz and /metrics over plain
    /// HTTP; `off` turns it off. Default: 127.0.0.1:10258.
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
    cloud_provider: Option<String>,
    cloud_config: Option<PathBuf>,
    cluster_name: Option<String>,
    node_monitor_period: Option<u64>,
    node_status_update_frequency: Option<u64>,
    route_reconciliation_period: Option<u64>,
    health_addr: Option<rkube_daemon::HealthAddr>,
}

#[derive(Clone)]
pub struct Config {
    pub apiserver: String,
    /// Credentials (see `--kubeconfig`); `None`: plain `apiserver`.
    pub kubeconfig: Option<PathBuf>,
    pub controllers: Vec<String>,
    pub workers: usize,
    /// `local`; ignored when `provider` is set.
    pub cloud_provider: String,
    pub cloud_config: Option<PathBuf>,
    pub cluster_name: String,
    pub node_monitor_period: Duration,
    pub node_status_update_frequency: Duration,
    pub route_reconciliation_period: Duration,
    /// A provider built by the embedder (tests: `fake::FakeCloud`); None:
    /// built from `cloud_provider` and `cloud_config`. Not a flag.
    pub provider: Option<Arc<dyn CloudProvider>>,
    /// The health and metrics endpoint; `None` (the default for tests and
    /// embedding) serves none. The daemon's flags default to loopback.
    pub health_addr: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("apiserver", &self.apiserver)
            .field("controllers", &self.controllers)
            .field("workers", &self.workers)
            .field("cloud_provider", &self.cloud_provider)
            .field("cloud_config", &self.cloud_config)
            .field("cluster_name", &self.cluster_name)
            .field("node_monitor_period", &self.node_monitor_period)
            .field("node_status_update_frequency", &self.node_status_update_frequency)
            .field("route_reconciliation_period", &self.route_reconciliation_period)
            .field("provider", &self.provider.as_ref().map(|p| p.name().to_string()))
            .field("health_addr", &self.health_addr)
            .finish()
    }
}

impl Config {
    /// Defaults as Kubernetes has them, against `apiserver`, with the
    /// `local` provider and no cloud-config yet.
    pub fn new(apiserver: impl Into<String>) -> Self {
        Config {
            apiserver: apiserver.into(),
            kubeconfig: None,
            controllers: vec!["*".into()],
            workers: 2,
            cloud_provider: "local".into(),
            cloud_config: None,
            cluster_name: "kubernetes".into(),
            node_monitor_period: Duration::from_secs(5),
            node_status_update_frequency: Duration::from_secs(300),
            route_reconciliation_period: Duration::from_secs(10),
            provider: None,
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
            cloud_provider: args
                .cloud_provider
                .or(file.cloud_provider)
                .unwrap_or(d.cloud_provider),
            cloud_config: args.cloud_config.or(file.cloud_config),
            cluster_name: args.cluster_name.or(file.cluster_name).unwrap_or(d.cluster_name),
            node_monitor_period: secs(
                args.node_monitor_period,
                file.node_monitor_period,
                d.node_monitor_period,
            ),
            node_status_update_frequency: secs(
                args.node_status_update_frequency,
                file.node_status_update_frequency,
                d.node_status_update_frequency,
            ),
            route_reconciliation_period: secs(
                args.route_reconciliation_period,
                file.route_reconciliation_period,
                d.route_reconciliation_period,
            ),
            provider: None,
            health_addr: rkube_daemon::HealthAddr::resolve(
                args.health_addr.or(file.health_addr),
                rkube_daemon::health::CLOUD_CONTROLLER_MANAGER_PORT,
            ),
        };
        cfg.validate()?;
        // A bad cloud-config is a configuration error: report it before
        // anything starts.
        crate::providers::build(&cfg)?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.workers == 0 {
            anyhow::bail!("--workers must be at least 1");
        }
        for (flag, d) in [
            ("--node-monitor-period", self.node_monitor_period),
            (
                "--node-status-update-frequency",
                self.node_status_update_frequency,
            ),
            ("--route-reconciliation-period", self.route_reconciliation_period),
        ] {
            if d.is_zero() {
                anyhow::bail!("{flag} must be at least 1 second");
            }
        }
        crate::enabled(&self.controllers)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_a_bad_cloud_config_is_reported_first() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = dir.path().join("cloud.yaml");
        std::fs::write(
            &cloud,
            "machines: [{name: a, addresses: [{type: InternalIP, address: 10.0.0.2}]}]\n",
        )
        .unwrap();
        let file = dir.path().join("ccm.yaml");
        std::fs::write(
            &file,
            format!(
                "apiserver: http://10.0.0.1:6443\nnodeMonitorPeriod: 2\ncloudConfig: {}\n",
                cloud.display()
            ),
        )
        .unwrap();
        let cfg = Config::from_args(Args {
            config: Some(file.clone()),
            node_monitor_period: Some(1),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(cfg.apiserver, "http://10.0.0.1:6443");
        assert_eq!(cfg.node_monitor_period, Duration::from_secs(1));
        assert_eq!(cfg.cloud_provider, "local");

        let err = Config::from_args(Args {
            cloud_provider: Some("aws".into()),
            cloud_config: Some(cloud.clone()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--cloud-provider \"aws\"") && err.contains("local"),
            "{err}"
        );

        let err = Config::from_args(Args::default()).unwrap_err().to_string();
        assert!(err.contains("--cloud-config"), "{err}");

        let err = Config::from_args(Args {
            cloud_config: Some(cloud),
            controllers: vec!["*".into(), "-nope".into()],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown controller \"nope\""), "{err}");
    }

    #[test]
    fn the_shipped_settings_file_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/config/cloud-controller-manager.yaml");
        if !path.exists() {
            return; // shipped by the deploy/ work; nothing to check without it
        }
        let file: FileConfig = rkube_daemon::load_config_file(Some(&path)).unwrap();
        assert_eq!(file.cloud_provider.as_deref(), Some("local"));
    }
}
