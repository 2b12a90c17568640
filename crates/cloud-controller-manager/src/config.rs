//! The cloud-controller-manager's options (flags, or the same fields in a YAML file given
//! with `--config`; flags win) and the configuration it runs with.

use crate::cloud::CloudProvider;
use clap::Parser;
use rkube_client::runtime::ManagerOptions;
use rkube_client::{LeaderElection, LeaderElectionOptions};
use rkube_daemon::{ClientOptions, DaemonOptions, Options as _};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Deserialize, Debug, Clone, Default)]
#[command(
    name = "rkube-cloud-controller-manager",
    version,
    about = "rkube's cloud controller manager: initialises nodes from the machines they run on, \
             retires nodes whose machine is gone, gives LoadBalancer Services addresses and \
             routes pod networks between nodes (controllers: cloud-node, cloud-node-lifecycle, \
             service, route)"
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
}

rkube_daemon::impl_options!(
    Options,
    rkube_daemon::health::CLOUD_CONTROLLER_MANAGER_PORT,
    daemon
);

#[derive(Clone)]
pub struct Config {
    pub apiserver: String,
    /// Credentials (see `--kubeconfig`); `None`: plain `apiserver`.
    pub kubeconfig: Option<PathBuf>,
    pub controllers: Vec<String>,
    pub workers: usize,
    /// On by default: only the holder of the Lease kube-system/cloud-controller-manager
    /// runs the controllers.
    pub leader_election: LeaderElection,
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
            .field("leader_election", &self.leader_election)
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
            leader_election: LeaderElection::new(crate::LEASE_NAME),
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

    /// The options resolved over the defaults, and checked; a bad cloud-config is
    /// reported here, before anything starts.
    pub fn from_options(o: Options) -> anyhow::Result<Config> {
        let (apiserver, kubeconfig) = o.client.connection();
        let mut c = Config::new(apiserver);
        let secs = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_secs);
        c.kubeconfig = kubeconfig;
        c.health_addr = o.health_addr();
        c.controllers = o.manager.controllers();
        c.workers = o.manager.workers(c.workers)?;
        c.leader_election = o.leader_election.resolve(crate::LEASE_NAME)?;
        c.cloud_provider = o.cloud_provider.unwrap_or(c.cloud_provider);
        c.cloud_config = o.cloud_config;
        c.cluster_name = o.cluster_name.unwrap_or(c.cluster_name);
        c.node_monitor_period = secs(o.node_monitor_period, c.node_monitor_period);
        c.node_status_update_frequency = secs(o.node_status_update_frequency, c.node_status_update_frequency);
        c.route_reconciliation_period = secs(o.route_reconciliation_period, c.route_reconciliation_period);
        c.validate()?;
        crate::providers::build(&c)?;
        Ok(c)
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

    fn config(flags: &[&str]) -> anyhow::Result<Config> {
        let argv = ["rkube-cloud-controller-manager"].iter().chain(flags);
        Config::from_options(rkube_daemon::options::parse_from(argv)?)
    }

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
        let file = file.to_str().unwrap();
        let cfg = config(&["--config", file, "--node-monitor-period", "1"]).unwrap();
        assert_eq!(cfg.apiserver, "http://10.0.0.1:6443");
        assert_eq!(cfg.node_monitor_period, Duration::from_secs(1));
        assert_eq!(cfg.cloud_provider, "local");

        let cloud = cloud.to_str().unwrap();
        let err = config(&["--cloud-provider", "aws", "--cloud-config", cloud])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--cloud-provider \"aws\"") && err.contains("local"),
            "{err}"
        );

        let err = config(&[]).unwrap_err().to_string();
        assert!(err.contains("--cloud-config"), "{err}");

        let err = config(&["--cloud-config", cloud, "--controllers", "*,-nope"])
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
        let path = path.to_str().unwrap();
        let o: Options =
            rkube_daemon::options::parse_from(["rkube-cloud-controller-manager", "--config", path]).unwrap();
        assert_eq!(o.cloud_provider.as_deref(), Some("local"));
    }
}
