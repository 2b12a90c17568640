//! `rkubelet`'s settings: flags, or the same fields (camelCase) in a YAML file given with
//! `--config`; flags win.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "rkubelet",
    version,
    about = "rkube's node agent: runs the pods bound to this node on containerd"
)]
pub struct Args {
    /// YAML file with any of the settings below (camelCase keys); flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The apiserver to talk to (default: the server of --kubeconfig, else
    /// https://127.0.0.1:6443).
    #[arg(long, value_name = "URL")]
    pub apiserver: Option<String>,
    /// Client config file with the kubelet's credentials (server, CA,
    /// client certificate; rkubectl certs generate writes node-NAME.conf).
    /// With --bootstrap-token and no such file yet, the kubelet obtains its
    /// certificate and writes the file (and its key and certificate beside
    /// it).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// A bootstrap token (`rkubectl token create`) to obtain this node's
    /// client certificate with when --kubeconfig does not exist yet. It
    /// works once.
    #[arg(long, value_name = "TOKEN")]
    pub bootstrap_token: Option<String>,
    /// The cluster CA (ca.crt) that verifies an https:// apiserver while
    /// bootstrapping, before the kubelet has a kubeconfig.
    #[arg(long, value_name = "FILE")]
    pub bootstrap_ca_file: Option<PathBuf>,
    /// This node's name (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// containerd's gRPC socket.
    #[arg(long, value_name = "PATH")]
    pub containerd_socket: Option<PathBuf>,
    /// Persistent state: pod volumes, logs, CNI allocations (default /var/lib/rkubelet).
    #[arg(long, value_name = "DIR")]
    pub root_dir: Option<PathBuf>,
    /// Volatile state: pod network namespaces (default /run/rkubelet).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// The node's InternalIP (default: the first non-loopback address, else 127.0.0.1).
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<IpAddr>,
    /// Address of the kubelet gRPC server (logs, exec, metrics) the apiserver calls.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// PEM certificate (chain) the kubelet server serves TLS with, with
    /// --tls-private-key-file; it must name --node-ip, which the apiserver
    /// verifies. Without them, a kubelet of an https apiserver has its
    /// serving certificate signed by the apiserver at each start, and one
    /// of a plain-http apiserver serves plain text.
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, value_name = "FILE")]
    pub tls_private_key_file: Option<PathBuf>,
    /// PEM CA bundle that must have signed callers' client certificates
    /// when the server speaks TLS (default: the cluster CA of --kubeconfig,
    /// else --bootstrap-ca-file). Only the apiserver (CN
    /// kube-apiserver-kubelet-client) and group system:masters may call.
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Pod CIDR used when the Node has no spec.podCIDR (no node-ipam controller).
    #[arg(long, value_name = "CIDR")]
    pub pod_cidr: Option<String>,
    /// Directory of the CNI plugin binaries (bridge, host-local, loopback, portmap).
    #[arg(long, value_name = "DIR")]
    pub cni_bin_dir: Option<PathBuf>,
    /// A registry (`host` or `host:port`) reached over plain http; repeatable. Loopback
    /// registries always are.
    #[arg(long, value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// First CrashLoopBackOff / image pull back-off delay, in seconds (fractions allowed).
    #[arg(long, value_name = "SECONDS")]
    pub crashloop_backoff_base: Option<f64>,
    /// Longest back-off delay, in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub crashloop_backoff_max: Option<f64>,
    /// A container that ran this many seconds before exiting restarts without back-off, as
    /// if it had never crashed (default 600).
    #[arg(long, value_name = "SECONDS")]
    pub crashloop_backoff_reset: Option<f64>,
    /// Seconds between Node status updates and Lease renewals.
    #[arg(long, value_name = "SECONDS")]
    pub node_status_update_frequency: Option<f64>,
    /// "" or "external": with external, the Node registers tainted
    /// node.cloudprovider.kubernetes.io/uninitialized:NoSchedule.
    #[arg(long, value_name = "NAME")]
    pub cloud_provider: Option<String>,
    /// Parent cgroup of every container (default /rkube).
    #[arg(long, value_name = "PATH")]
    pub cgroup_parent: Option<String>,
    /// The node's network namespace (a bind mount like /var/run/netns/NAME): pods are
    /// wired and the server listens there, while the kubelet talks to the apiserver,
    /// containerd and registries from its own. For several nodes on one machine.
    #[arg(long, value_name = "PATH")]
    pub node_netns: Option<PathBuf>,
    /// Where to serve /healthz, /livez, /readyz and /metrics over plain
    /// HTTP; `off` turns it off. Default: 127.0.0.1:10248.
    #[arg(long, value_name = "ADDR|off")]
    pub health_addr: Option<rkube_daemon::HealthAddr>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    apiserver: Option<String>,
    kubeconfig: Option<PathBuf>,
    bootstrap_token: Option<String>,
    bootstrap_ca_file: Option<PathBuf>,
    node_name: Option<String>,
    containerd_socket: Option<PathBuf>,
    root_dir: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    node_ip: Option<IpAddr>,
    listen: Option<SocketAddr>,
    tls_cert_file: Option<PathBuf>,
    tls_private_key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    pod_cidr: Option<String>,
    cni_bin_dir: Option<PathBuf>,
    insecure_registries: Option<Vec<String>>,
    crashloop_backoff_base: Option<f64>,
    crashloop_backoff_max: Option<f64>,
    crashloop_backoff_reset: Option<f64>,
    node_status_update_frequency: Option<f64>,
    cloud_provider: Option<String>,
    cgroup_parent: Option<String>,
    node_netns: Option<PathBuf>,
    health_addr: Option<rkube_daemon::HealthAddr>,
}

/// Everything the kubelet runs with. Tests build it with [`Config::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// Empty: the server of `kubeconfig`.
    pub apiserver: String,
    /// The kubelet's client config file (credentials); `None`: plain
    /// `apiserver` without credentials.
    pub kubeconfig: Option<PathBuf>,
    /// Creates `kubeconfig` when it does not exist (see `crate::bootstrap`).
    pub bootstrap_token: Option<crate::bootstrap::BootstrapToken>,
    pub bootstrap_ca_file: Option<PathBuf>,
    pub node_name: String,
    pub containerd_socket: PathBuf,
    pub root_dir: PathBuf,
    pub run_dir: PathBuf,
    pub node_ip: IpAddr,
    pub listen: SocketAddr,
    /// The server's certificate and key from the operator; `None`: issued
    /// by an https apiserver, or plain text (see `crate::serving`).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    /// Verifies callers' client certificates (default: the cluster CA).
    pub client_ca_file: Option<PathBuf>,
    pub pod_cidr: Option<String>,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub insecure_registries: Vec<String>,
    pub crashloop_backoff_base: Duration,
    pub crashloop_backoff_max: Duration,
    /// A run at least this long resets the back-off: the next restart is immediate and the
    /// delays start again from `crashloop_backoff_base` (Kubernetes: 10 minutes).
    pub crashloop_backoff_reset: Duration,
    pub node_status_update_frequency: Duration,
    pub cloud_provider: String,
    pub cgroup_parent: String,
    /// How often a pod worker looks at its containers when nothing else woke it. Exits
    /// wake it at once through containerd's events, so this is only the safety net: a
    /// minute, as Kubernetes' `--sync-frequency`.
    pub pod_poll_interval: Duration,
    /// How often every pod is synced even when nothing changed (configMap/secret volumes
    /// are refreshed then).
    pub resync_period: Duration,
    /// Run the CNI plugins inside this network namespace (tests keep the "node" network in
    /// a namespace they own); `None` in production.
    pub cni_node_netns: Option<PathBuf>,
    /// Network namespace to bind the gRPC server in (None: the kubelet's own). Not a
    /// flag: for tests and embedders running several nodes in one process.
    pub server_netns: Option<PathBuf>,
    /// Parent directory of containerd's exec output files.
    pub runtime_state_dir: PathBuf,
    /// The `rkubelet` binary containerd's shim runs as each container's logger
    /// (`rkubelet log-driver`); default: this binary when it is `rkubelet`, else an
    /// `rkubelet` next to it (test binaries). Checked at start; without a working one,
    /// logs are the raw streams, without times.
    pub log_driver: Option<PathBuf>,
    /// The health and metrics endpoint; `None` (the default for tests and
    /// embedding) serves none. The daemon's flags default to loopback.
    pub health_addr: Option<SocketAddr>,
}

impl Config {
    /// Kubernetes-like defaults for node `node_name` against `apiserver`.
    pub fn new(apiserver: impl Into<String>, node_name: impl Into<String>) -> Self {
        let root_dir = PathBuf::from("/var/lib/rkubelet");
        Config {
            apiserver: apiserver.into(),
            kubeconfig: None,
            bootstrap_token: None,
            bootstrap_ca_file: None,
            node_name: node_name.into(),
            containerd_socket: PathBuf::from("/run/containerd/containerd.sock"),
            runtime_state_dir: root_dir.join("runtime"),
            health_addr: None,
            root_dir,
            run_dir: PathBuf::from("/run/rkubelet"),
            node_ip: default_node_ip(),
            listen: SocketAddr::from(([0, 0, 0, 0], 10250)),
            tls_cert_file: None,
            tls_private_key_file: None,
            client_ca_file: None,
            pod_cidr: None,
            cni_bin_dirs: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
            insecure_registries: Vec::new(),
            crashloop_backoff_base: Duration::from_secs(10),
            crashloop_backoff_max: Duration::from_secs(300),
            crashloop_backoff_reset: Duration::from_secs(600),
            node_status_update_frequency: Duration::from_secs(10),
            cloud_provider: String::new(),
            cgroup_parent: "/rkube".into(),
            pod_poll_interval: Duration::from_secs(60),
            resync_period: Duration::from_secs(60),
            cni_node_netns: None,
            log_driver: default_log_driver(),
            server_netns: None,
        }
    }

    /// Merges flags over the config file and checks the result; errors name the flag.
    pub fn from_args(args: Args) -> anyhow::Result<Config> {
        let file: FileConfig = rkube_daemon::load_config_file(args.config.as_deref())?;
        let node_name = match args.node_name.or(file.node_name) {
            Some(n) => n,
            None => hostname(),
        };
        let (apiserver, kubeconfig) =
            rkube_daemon::connection(args.apiserver, file.apiserver, args.kubeconfig, file.kubeconfig);
        let mut c = Config::new(apiserver, node_name.to_lowercase());
        c.kubeconfig = kubeconfig;
        c.bootstrap_token = args
            .bootstrap_token
            .or(file.bootstrap_token)
            .map(crate::bootstrap::BootstrapToken);
        c.bootstrap_ca_file = args.bootstrap_ca_file.or(file.bootstrap_ca_file);
        if let Some(v) = args.containerd_socket.or(file.containerd_socket) {
            c.containerd_socket = v;
        }
        if let Some(v) = args.root_dir.or(file.root_dir) {
            c.runtime_state_dir = v.join("runtime");
            c.root_dir = v;
        }
        if let Some(v) = args.run_dir.or(file.run_dir) {
            c.run_dir = v;
        }
        if let Some(v) = args.node_ip.or(file.node_ip) {
            c.node_ip = v;
        }
        if let Some(v) = args.listen.or(file.listen) {
            c.listen = v;
        }
        c.tls_cert_file = args.tls_cert_file.or(file.tls_cert_file);
        c.tls_private_key_file = args.tls_private_key_file.or(file.tls_private_key_file);
        c.client_ca_file = args.client_ca_file.or(file.client_ca_file);
        c.pod_cidr = args.pod_cidr.or(file.pod_cidr).filter(|s| !s.is_empty());
        if let Some(v) = args.cni_bin_dir.or(file.cni_bin_dir) {
            c.cni_bin_dirs = vec![v];
        }
        c.insecure_registries = if args.insecure_registry.is_empty() {
            file.insecure_registries.unwrap_or_default()
        } else {
            args.insecure_registry
        };
        let secs = |flag: &str, v: Option<f64>, d: Duration| -> anyhow::Result<Duration> {
            match v {
                None => Ok(d),
                Some(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
                Some(s) => anyhow::bail!("--{flag} must be a positive number of seconds, not {s}"),
            }
        };
        c.crashloop_backoff_base = secs(
            "crashloop-backoff-base",
            args.crashloop_backoff_base.or(file.crashloop_backoff_base),
            c.crashloop_backoff_base,
        )?;
        c.crashloop_backoff_max = secs(
            "crashloop-backoff-max",
            args.crashloop_backoff_max.or(file.crashloop_backoff_max),
            c.crashloop_backoff_max,
        )?;
        c.crashloop_backoff_reset = secs(
            "crashloop-backoff-reset",
            args.crashloop_backoff_reset.or(file.crashloop_backoff_reset),
            c.crashloop_backoff_reset,
        )?;
        c.node_status_update_frequency = secs(
            "node-status-update-frequency",
            args.node_status_update_frequency
                .or(file.node_status_update_frequency),
            c.node_status_update_frequency,
        )?;
        if let Some(v) = args.cloud_provider.or(file.cloud_provider) {
            c.cloud_provider = v;
        }
        if let Some(v) = args.cgroup_parent.or(file.cgroup_parent) {
            c.cgroup_parent = v;
        }
        if let Some(v) = args.node_netns.or(file.node_netns) {
            c.cni_node_netns = Some(v.clone());
            c.server_netns = Some(v);
        }
        c.health_addr = rkube_daemon::HealthAddr::resolve(
            args.health_addr.or(file.health_addr),
            rkube_daemon::health::KUBELET_PORT,
        );
        c.validate()?;
        Ok(c)
    }

    /// Checks what would otherwise fail later, deep inside a pod sync.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.node_name.is_empty()
            || !self
                .node_name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            anyhow::bail!(
                "--node-name {:?} is not a valid node name (lowercase letters, digits, '-' and '.')",
                self.node_name
            );
        }
        if !matches!(self.cloud_provider.as_str(), "" | "external") {
            anyhow::bail!(
                "--cloud-provider {:?} is not supported: use \"\" or \"external\"",
                self.cloud_provider
            );
        }
        if self.crashloop_backoff_max < self.crashloop_backoff_base {
            anyhow::bail!("--crashloop-backoff-max must not be smaller than --crashloop-backoff-base");
        }
        if let Some(cidr) = &self.pod_cidr {
            rkube_node_runtime::network::CniNetwork::new(rkube_node_runtime::network::CniConfig {
                pod_cidr: cidr.clone(),
                ..Default::default()
            })
            .map_err(|e| anyhow::anyhow!("--pod-cidr: {e}"))?;
        }
        if self.bootstrap_token.is_some() && self.kubeconfig.is_none() {
            anyhow::bail!(
                "--bootstrap-token needs --kubeconfig: the file the node's credentials are written to"
            );
        }
        if self.tls_cert_file.is_some() != self.tls_private_key_file.is_some() {
            anyhow::bail!("--tls-cert-file and --tls-private-key-file go together: give both or neither");
        }
        if !self.cgroup_parent.starts_with('/') {
            anyhow::bail!(
                "--cgroup-parent {:?} must be an absolute cgroup path",
                self.cgroup_parent
            );
        }
        Ok(())
    }
}

/// This executable if it is `rkubelet`; else an `rkubelet` beside it or one directory up
/// (cargo puts test binaries in `target/debug/deps`, binaries in `target/debug`).
pub fn default_log_driver() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    if exe.file_name().is_some_and(|n| n == "rkubelet") {
        return Some(exe);
    }
    let dir = exe.parent()?;
    [dir.join("rkubelet"), dir.parent()?.join("rkubelet")]
        .into_iter()
        .find(|p| p.is_file())
}

/// The machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The first non-loopback IPv4 address of the host (from the kernel's view of which
/// source address a route would use is not needed: any interface address will do), else
/// 127.0.0.1.
pub fn default_node_ip() -> IpAddr {
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return loopback;
    };
    for a in addrs {
        if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            let ip = IpAddr::V4(sin.ip());
            if !ip.is_loopback() {
                return ip;
            }
        }
    }
    loopback
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_come_from_flags_or_the_file_and_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kubelet.yaml");
        std::fs::write(
            &file,
            "nodeName: n1\ntlsCertFile: /etc/rkube/kubelet.crt\ntlsPrivateKeyFile: /etc/rkube/kubelet.key\nclientCaFile: /etc/rkube/ca.crt\n",
        )
        .unwrap();
        let c = Config::from_args(Args {
            config: Some(file),
            client_ca_file: Some("/other/ca.crt".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.tls_cert_file, Some(PathBuf::from("/etc/rkube/kubelet.crt")));
        assert_eq!(
            c.tls_private_key_file,
            Some(PathBuf::from("/etc/rkube/kubelet.key"))
        );
        assert_eq!(c.client_ca_file, Some(PathBuf::from("/other/ca.crt")));

        let err = Config::from_args(Args {
            node_name: Some("n1".into()),
            tls_cert_file: Some("/etc/rkube/kubelet.crt".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--tls-cert-file and --tls-private-key-file go together"),
            "{err}"
        );
    }

    #[test]
    fn flags_win_over_the_file_and_bad_values_name_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kubelet.yaml");
        std::fs::write(
            &file,
            "nodeName: from-file\npodCIDR: 10.1.0.0/24\ncrashloopBackoffBase: 2\n"
                .replace("podCIDR", "podCidr"),
        )
        .unwrap();
        let args = Args {
            config: Some(file.clone()),
            node_name: Some("from-flag".into()),
            ..Default::default()
        };
        let c = Config::from_args(args).unwrap();
        assert_eq!(c.node_name, "from-flag");
        assert_eq!(c.pod_cidr.as_deref(), Some("10.1.0.0/24"));
        assert_eq!(c.crashloop_backoff_base, Duration::from_secs(2));

        let err = Config::from_args(Args {
            node_name: Some("n".into()),
            cloud_provider: Some("aws".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("--cloud-provider"), "{err}");
        let err = Config::from_args(Args {
            node_name: Some("n".into()),
            pod_cidr: Some("10.0.0.0".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("--pod-cidr"), "{err}");
    }
}
