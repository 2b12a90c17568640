//! The scheduler's options (flags, or the same fields in a YAML file given with
//! `--config`, camelCase keys; flags win) and the configuration it runs with.

use clap::Parser;
use rkube_client::{LeaderElection, LeaderElectionOptions};
use rkube_daemon::{ClientOptions, DaemonOptions, Options as _};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Deserialize, Debug, Clone, Default)]
#[command(
    name = "rkube-scheduler",
    version,
    about = "rkube's scheduler: binds pending pods to the nodes that fit them best"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Options {
    #[command(flatten)]
    #[serde(flatten)]
    pub daemon: DaemonOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub client: ClientOptions,
    /// The name pods ask for in `spec.schedulerName`; pods naming another
    /// scheduler are left alone. Default: default-scheduler.
    #[arg(long, value_name = "NAME")]
    pub scheduler_name: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub leader_election: LeaderElectionOptions,
    /// Stop searching once this percentage of the nodes fit (1-100); 0
    /// adapts to the cluster's size as Kubernetes does (50% minus 1% per
    /// 125 nodes, at least 5%; never fewer than 100 nodes).
    #[arg(long, value_name = "PERCENT")]
    pub percentage_of_nodes_to_score: Option<u32>,
    /// Bind calls in flight at once while scheduling continues.
    #[arg(long, value_name = "N")]
    pub parallel_binds: Option<usize>,
    /// Seconds before the first retry of a pod that did not fit; doubles
    /// per failure.
    #[arg(long, value_name = "SECONDS")]
    pub pod_initial_backoff_seconds: Option<u64>,
    /// Longest wait between retries of a pod that does not fit (it is also
    /// retried at once when a node is added or changes or a pod goes away).
    #[arg(long, value_name = "SECONDS")]
    pub pod_max_backoff_seconds: Option<u64>,
}

rkube_daemon::impl_options!(Options, rkube_daemon::health::SCHEDULER_PORT, daemon);

#[derive(Debug, Clone)]
pub struct Config {
    pub apiserver: String,
    /// Credentials (see `--kubeconfig`); `None`: plain `apiserver`.
    pub kubeconfig: Option<PathBuf>,
    pub scheduler_name: String,
    /// On by default: only the holder of the Lease kube-system/kube-scheduler schedules.
    pub leader_election: LeaderElection,
    pub percentage_of_nodes_to_score: u32,
    pub parallel_binds: usize,
    pub pod_initial_backoff: Duration,
    pub pod_max_backoff: Duration,
    /// The health and metrics endpoint; `None` (the default for tests and
    /// embedding) serves none. The daemon's flags default to loopback.
    pub health_addr: Option<std::net::SocketAddr>,
}

impl Config {
    /// Kubernetes' defaults, against `apiserver`.
    pub fn new(apiserver: impl Into<String>) -> Self {
        Config {
            apiserver: apiserver.into(),
            kubeconfig: None,
            scheduler_name: "default-scheduler".into(),
            leader_election: LeaderElection::new(crate::LEASE_NAME),
            percentage_of_nodes_to_score: 0,
            parallel_binds: 64,
            pod_initial_backoff: Duration::from_secs(1),
            pod_max_backoff: Duration::from_secs(10),
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
        c.scheduler_name = o.scheduler_name.unwrap_or(c.scheduler_name);
        c.leader_election = o.leader_election.resolve(crate::LEASE_NAME)?;
        c.percentage_of_nodes_to_score = o
            .percentage_of_nodes_to_score
            .unwrap_or(c.percentage_of_nodes_to_score);
        c.parallel_binds = o.parallel_binds.unwrap_or(c.parallel_binds);
        c.pod_initial_backoff = secs(o.pod_initial_backoff_seconds, c.pod_initial_backoff);
        c.pod_max_backoff = secs(o.pod_max_backoff_seconds, c.pod_max_backoff);
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.scheduler_name.trim().is_empty() {
            anyhow::bail!("--scheduler-name must not be empty (the default is default-scheduler)");
        }
        if self.percentage_of_nodes_to_score > 100 {
            anyhow::bail!(
                "--percentage-of-nodes-to-score must be 0 (adaptive) to 100, got {}",
                self.percentage_of_nodes_to_score
            );
        }
        self.leader_election.validate()?;
        if self.parallel_binds == 0 {
            anyhow::bail!("--parallel-binds must be at least 1");
        }
        if self.pod_initial_backoff.is_zero() || self.pod_max_backoff < self.pod_initial_backoff {
            anyhow::bail!(
                "--pod-initial-backoff-seconds must be at least 1 and at most --pod-max-backoff-seconds"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(flags: &[&str]) -> anyhow::Result<Config> {
        let argv = ["rkube-scheduler"].iter().chain(flags);
        Config::from_options(rkube_daemon::options::parse_from(argv)?)
    }

    #[test]
    fn flags_win_over_the_file_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scheduler.yaml");
        std::fs::write(
            &path,
            "apiserver: http://file:6443\nschedulerName: custom\nparallelBinds: 8\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let cfg = config(&["--config", file, "--parallel-binds", "16"]).unwrap();
        assert_eq!(cfg.apiserver, "http://file:6443");
        assert_eq!(cfg.scheduler_name, "custom");
        assert_eq!(cfg.parallel_binds, 16);

        std::fs::write(&path, "parallelBind: 8\n").unwrap();
        let err = config(&["--config", file]).unwrap_err();
        assert!(err.to_string().contains("unknown field `parallelBind`"), "{err}");
        let err = config(&["--percentage-of-nodes-to-score", "101"]).unwrap_err();
        assert!(
            err.to_string().contains("--percentage-of-nodes-to-score"),
            "{err}"
        );
    }
}
