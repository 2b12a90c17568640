//! Flags, or the same fields in a YAML file given with `--config`
//! (camelCase keys); flags win.

use clap::Parser;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "rkube-scheduler",
    version,
    about = "rkube's scheduler: binds pending pods to the nodes that fit them best"
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
    /// The name pods ask for in `spec.schedulerName`; pods naming another
    /// scheduler are left alone. Default: default-scheduler.
    #[arg(long, value_name = "NAME")]
    pub scheduler_name: Option<String>,
    /// Run only while holding the Lease kube-system/kube-scheduler, so
    /// several replicas can stand by. Off by default (one instance);
    /// `--leader-elect` alone means true.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: Option<bool>,
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
    /// Where to serve /healthz, /livez, /readyz and /metrics over plain
    /// HTTP; `off` turns it off. Default: 127.0.0.1:10259.
    #[arg(long, value_name = "ADDR|off")]
    pub health_addr: Option<rkube_daemon::HealthAddr>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    apiserver: Option<String>,
    kubeconfig: Option<PathBuf>,
    scheduler_name: Option<String>,
    leader_elect: Option<bool>,
    percentage_of_nodes_to_score: Option<u32>,
    parallel_binds: Option<usize>,
    pod_initial_backoff_seconds: Option<u64>,
    pod_max_backoff_seconds: Option<u64>,
    health_addr: Option<rkube_daemon::HealthAddr>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub apiserver: String,
    /// Credentials (see `--kubeconfig`); `None`: plain `apiserver`.
    pub kubeconfig: Option<PathBuf>,
    pub scheduler_name: String,
    pub leader_elect: bool,
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
            leader_elect: false,
            percentage_of_nodes_to_score: 0,
            parallel_binds: 64,
            pod_initial_backoff: Duration::from_secs(1),
            pod_max_backoff: Duration::from_secs(10),
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
            scheduler_name: args
                .scheduler_name
                .or(file.scheduler_name)
                .unwrap_or(d.scheduler_name),
            leader_elect: args.leader_elect.or(file.leader_elect).unwrap_or(d.leader_elect),
            percentage_of_nodes_to_score: args
                .percentage_of_nodes_to_score
                .or(file.percentage_of_nodes_to_score)
                .unwrap_or(d.percentage_of_nodes_to_score),
            parallel_binds: args
                .parallel_binds
                .or(file.parallel_binds)
                .unwrap_or(d.parallel_binds),
            pod_initial_backoff: secs(
                args.pod_initial_backoff_seconds,
                file.pod_initial_backoff_seconds,
                d.pod_initial_backoff,
            ),
            pod_max_backoff: secs(
                args.pod_max_backoff_seconds,
                file.pod_max_backoff_seconds,
                d.pod_max_backoff,
            ),
            health_addr: rkube_daemon::HealthAddr::resolve(
                args.health_addr.or(file.health_addr),
                rkube_daemon::health::SCHEDULER_PORT,
            ),
        };
        cfg.validate()?;
        Ok(cfg)
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

    #[test]
    fn flags_win_over_the_file_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scheduler.yaml");
        std::fs::write(
            &path,
            "apiserver: http://file:6443\nschedulerName: custom\nparallelBinds: 8\n",
        )
        .unwrap();
        let args = Args::try_parse_from([
            "rkube-scheduler",
            "--config",
            path.to_str().unwrap(),
            "--parallel-binds",
            "16",
        ])
        .unwrap();
        let cfg = Config::from_args(args).unwrap();
        assert_eq!(cfg.apiserver, "http://file:6443");
        assert_eq!(cfg.scheduler_name, "custom");
        assert_eq!(cfg.parallel_binds, 16);

        std::fs::write(&path, "parallelBind: 8\n").unwrap();
        let err = Config::from_args(Args {
            config: Some(path.clone()),
            ..Args::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `parallelBind`"), "{err}");
        let err = Config::from_args(Args {
            percentage_of_nodes_to_score: Some(101),
            ..Args::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("--percentage-of-nodes-to-score"),
            "{err}"
        );
    }
}
