//! `rkubelet`'s options (flags, or the same fields, camelCase, in a YAML file given with
//! `--config`; flags win) and the configuration it runs with.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rkube_daemon::{ClientOptions, DaemonOptions};
use serde::Deserialize;

#[derive(Parser, Deserialize, Debug, Clone, Default)]
#[command(
    name = "rkubelet",
    version,
    about = "rkube's node agent: runs the pods bound to this node on containerd"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Options {
    #[command(flatten)]
    #[serde(flatten)]
    pub daemon: DaemonOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub client: ClientOptions,
    /// A bootstrap token (`rkubectl token create`) to obtain this node's
    /// client certificate with when --kubeconfig does not exist yet (`rkubectl
    /// certs generate --node NAME` writes one instead); the kubelet then
    /// writes that file, with its key and certificate beside it. It works
    /// once.
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
    /// The cluster's pod network, holding every node's pod CIDR (the
    /// controller-manager's --cluster-cidr; default 10.244.0.0/16). Pod
    /// traffic to it keeps the pod's address, so NetworkPolicies on other
    /// nodes see the client pod; traffic to anywhere else is masqueraded
    /// to the node's address. Empty: masquerade everything that leaves
    /// this node's pod CIDR (the CNI bridge plugin's ipMasq).
    #[arg(long, value_name = "CIDR")]
    pub cluster_cidr: Option<String>,
    /// Directory of the CNI plugin binaries (bridge, host-local, loopback, portmap).
    #[arg(long, value_name = "DIR")]
    pub cni_bin_dir: Option<PathBuf>,
    /// A registry (`host` or `host:port`) reached over plain http; repeatable. Loopback
    /// registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Option<Vec<String>>,
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
    /// The cluster DNS address(es) pods with dnsPolicy ClusterFirst use as
    /// nameserver, comma-separated or repeated (Kubernetes' clusterDNS; rkube-proxy
    /// serves one on every node at 169.254.20.10). Empty: pods get the node's
    /// resolv.conf.
    #[arg(long, value_name = "IP", value_delimiter = ',')]
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Option<Vec<IpAddr>>,
    /// The cluster's DNS domain, searched by pods (default cluster.local).
    #[arg(long, value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,
    /// The node's resolver configuration, which dnsPolicy Default pods get
    /// and ClusterFirst pods take search domains from (default /etc/resolv.conf).
    #[arg(long, value_name = "FILE")]
    pub resolv_conf: Option<PathBuf>,
    /// Hard eviction thresholds, comma-separated `signal<amount` (amount a quantity
    /// or a percentage of capacity); signals memory.available, nodefs.available,
    /// nodefs.inodesFree, imagefs.available, imagefs.inodesFree (default
    /// memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%;
    /// "" for none).
    #[arg(long, value_name = "THRESHOLDS")]
    pub eviction_hard: Option<String>,
    /// How long a pressure condition stays True after its thresholds were last met,
    /// in seconds (default 300).
    #[arg(long, value_name = "SECONDS")]
    pub eviction_pressure_transition_period: Option<f64>,
    /// Image garbage collection starts when the image filesystem is fuller than this
    /// percentage (default 85; 100 turns it off).
    #[arg(long, value_name = "PERCENT")]
    pub image_gc_high_threshold: Option<u8>,
    /// ...and removes unused images, least recently used first, down to this
    /// percentage (default 80).
    #[arg(long, value_name = "PERCENT")]
    pub image_gc_low_threshold: Option<u8>,
    /// An unused image younger than this (seconds since the kubelet first saw it) is not
    /// garbage-collected, so one just pulled survives until its container exists
    /// (default 120).
    #[arg(long, value_name = "SECONDS")]
    pub minimum_image_ttl_duration: Option<f64>,
    /// containerd's root directory: its filesystem is imagefs (default /var/lib/containerd).
    #[arg(long, value_name = "DIR")]
    pub containerd_root: Option<PathBuf>,
    /// The node's network namespace (a bind mount like /var/run/netns/NAME): pods are
    /// wired and the server listens there, while the kubelet talks to the apiserver,
    /// containerd and registries from its own. For several nodes on one machine.
    #[arg(long, value_name = "PATH")]
    pub node_netns: Option<PathBuf>,
}

rkube_daemon::impl_options!(Options, rkube_daemon::health::KUBELET_PORT, daemon);

/// A bootstrap token, kept out of `Debug` output (and so out of logs).
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken(pub String);

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the id half is not secret and tells which token it was
        let id = self.0.split('.').next().unwrap_or("");
        write!(f, "BootstrapToken({id}.<redacted>)")
    }
}

/// Everything the kubelet runs with. Tests build it with [`Config::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct Config {
    /// Empty: the server of `kubeconfig`.
    pub apiserver: String,
    /// The kubelet's client config file (credentials); `None`: plain
    /// `apiserver` without credentials.
    pub kubeconfig: Option<PathBuf>,
    /// Creates `kubeconfig` when it does not exist (the bootstrap module).
    pub bootstrap_token: Option<BootstrapToken>,
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
    /// Traffic from pods to it is not masqueraded; `None`: the bridge plugin's ipMasq.
    pub cluster_cidr: Option<String>,
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
    /// How often a running pod's disk-backed emptyDir volumes with a `sizeLimit` are
    /// measured; one over its limit evicts the pod (Kubernetes' eviction manager, every
    /// `--housekeeping-interval`, 10 s). Not a flag.
    pub eviction_monitoring_period: Duration,
    /// `--eviction-hard`: met thresholds set MemoryPressure/DiskPressure and evict pods
    /// (see `crate::node_pressure`), checked every `eviction_monitoring_period`.
    pub eviction_hard: Vec<crate::node_pressure::thresholds::Threshold>,
    pub eviction_pressure_transition_period: Duration,
    /// Image GC percentages of the image filesystem.
    pub image_gc_high_threshold: u8,
    pub image_gc_low_threshold: u8,
    /// Images first seen more recently than this are not collected.
    pub minimum_image_ttl: Duration,
    /// containerd's root directory, on the image filesystem.
    pub containerd_root: PathBuf,
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
    /// Nameservers of ClusterFirst pods; empty: the node's (see `crate::pod_dns`).
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    /// The node's resolv.conf.
    pub resolv_conf: PathBuf,
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
            cluster_cidr: Some("10.244.0.0/16".into()),
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
            eviction_monitoring_period: Duration::from_secs(10),
            eviction_hard: crate::node_pressure::thresholds::parse_thresholds(
                "--eviction-hard",
                crate::node_pressure::thresholds::DEFAULT_EVICTION_HARD,
            )
            .unwrap_or_default(),
            eviction_pressure_transition_period: Duration::from_secs(300),
            image_gc_high_threshold: 85,
            image_gc_low_threshold: 80,
            minimum_image_ttl: Duration::from_secs(120),
            containerd_root: PathBuf::from("/var/lib/containerd"),
            cni_node_netns: None,
            log_driver: default_log_driver(),
            server_netns: None,
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".into(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }

    /// The options resolved over the defaults, and checked; errors name the flag.
    pub fn from_options(o: Options) -> anyhow::Result<Config> {
        let health_addr = rkube_daemon::Options::health_addr(&o);
        let node_name = o.node_name.unwrap_or_else(hostname);
        let (apiserver, kubeconfig) = o.client.connection();
        let mut c = Config::new(apiserver, node_name.to_lowercase());
        c.kubeconfig = kubeconfig;
        c.health_addr = health_addr;
        c.bootstrap_token = o.bootstrap_token.map(BootstrapToken);
        c.bootstrap_ca_file = o.bootstrap_ca_file;
        if let Some(v) = o.containerd_socket {
            c.containerd_socket = v;
        }
        if let Some(v) = o.root_dir {
            c.runtime_state_dir = v.join("runtime");
            c.root_dir = v;
        }
        c.run_dir = o.run_dir.unwrap_or(c.run_dir);
        c.node_ip = o.node_ip.unwrap_or(c.node_ip);
        c.listen = o.listen.unwrap_or(c.listen);
        c.tls_cert_file = o.tls_cert_file;
        c.tls_private_key_file = o.tls_private_key_file;
        c.client_ca_file = o.client_ca_file;
        c.pod_cidr = o.pod_cidr.filter(|s| !s.is_empty());
        if let Some(cidr) = o.cluster_cidr {
            c.cluster_cidr = Some(cidr).filter(|s| !s.is_empty());
        }
        if let Some(v) = o.cni_bin_dir {
            c.cni_bin_dirs = vec![v];
        }
        c.insecure_registries = o.insecure_registries.unwrap_or_default();
        let secs = |flag: &str, v: Option<f64>, d: Duration| -> anyhow::Result<Duration> {
            match v {
                None => Ok(d),
                Some(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
                Some(s) => anyhow::bail!("--{flag} must be a positive number of seconds, not {s}"),
            }
        };
        c.crashloop_backoff_base = secs(
            "crashloop-backoff-base",
            o.crashloop_backoff_base,
            c.crashloop_backoff_base,
        )?;
        c.crashloop_backoff_max = secs(
            "crashloop-backoff-max",
            o.crashloop_backoff_max,
            c.crashloop_backoff_max,
        )?;
        c.crashloop_backoff_reset = secs(
            "crashloop-backoff-reset",
            o.crashloop_backoff_reset,
            c.crashloop_backoff_reset,
        )?;
        c.node_status_update_frequency = secs(
            "node-status-update-frequency",
            o.node_status_update_frequency,
            c.node_status_update_frequency,
        )?;
        c.cloud_provider = o.cloud_provider.unwrap_or(c.cloud_provider);
        c.cgroup_parent = o.cgroup_parent.unwrap_or(c.cgroup_parent);
        if let Some(v) = o.node_netns {
            c.cni_node_netns = Some(v.clone());
            c.server_netns = Some(v);
        }
        c.cluster_dns = o.cluster_dns.unwrap_or_default();
        if let Some(d) = o.cluster_domain {
            c.cluster_domain = d.trim_end_matches('.').to_ascii_lowercase();
        }
        c.resolv_conf = o.resolv_conf.unwrap_or(c.resolv_conf);
        if let Some(text) = o.eviction_hard {
            c.eviction_hard = crate::node_pressure::thresholds::parse_thresholds("--eviction-hard", &text)
                .map_err(anyhow::Error::msg)?;
        }
        if let Some(secs) = o.eviction_pressure_transition_period {
            c.eviction_pressure_transition_period = Duration::try_from_secs_f64(secs).map_err(|_| {
                anyhow::anyhow!(
                    "--eviction-pressure-transition-period {secs}: give a number of seconds, like 300"
                )
            })?;
        }
        c.image_gc_high_threshold = o.image_gc_high_threshold.unwrap_or(c.image_gc_high_threshold);
        c.image_gc_low_threshold = o.image_gc_low_threshold.unwrap_or(c.image_gc_low_threshold);
        if let Some(secs) = o.minimum_image_ttl_duration {
            c.minimum_image_ttl = Duration::try_from_secs_f64(secs).map_err(|_| {
                anyhow::anyhow!("--minimum-image-ttl-duration {secs}: give a number of seconds, like 120")
            })?;
        }
        c.containerd_root = o.containerd_root.unwrap_or(c.containerd_root);
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
        if let Some(cidr) = &self.cluster_cidr {
            if rkube_node_runtime::network::masquerade::Cidr::parse(cidr).is_none() {
                anyhow::bail!(
                    "--cluster-cidr {cidr:?} is not address/prefix like 10.244.0.0/16 (the controller-manager's --cluster-cidr); give \"\" to masquerade by the node's pod CIDR only"
                );
            }
        }
        if self.bootstrap_token.is_some() && self.kubeconfig.is_none() {
            anyhow::bail!(
                "--bootstrap-token needs --kubeconfig: the file the node's credentials are written to"
            );
        }
        if self.tls_cert_file.is_some() != self.tls_private_key_file.is_some() {
            anyhow::bail!("--tls-cert-file and --tls-private-key-file go together: give both or neither");
        }
        if !rkube_api::validation::is_dns1123_subdomain(&self.cluster_domain) {
            anyhow::bail!(
                "--cluster-domain {:?} is not a DNS domain like cluster.local",
                self.cluster_domain
            );
        }
        if self.image_gc_high_threshold > 100 || self.image_gc_low_threshold >= self.image_gc_high_threshold {
            anyhow::bail!(
                "--image-gc-low-threshold {} must be below --image-gc-high-threshold {}, which is at most 100",
                self.image_gc_low_threshold,
                self.image_gc_high_threshold
            );
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

/// The first IPv4 address of the host that others can reach it at (from the kernel's
/// view of which source address a route would use is not needed: any interface address
/// will do), else 127.0.0.1. Not one on the loopback interface, nor a link-local one: the
/// cluster DNS address rkube-proxy puts on `lo` (169.254.20.10) is the same on every node.
pub fn default_node_ip() -> IpAddr {
    use nix::net::if_::InterfaceFlags;
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return loopback;
    };
    for a in addrs {
        if a.flags.contains(InterfaceFlags::IFF_LOOPBACK) {
            continue;
        }
        if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            let ip = sin.ip();
            if !ip.is_loopback() && !ip.is_link_local() {
                return IpAddr::V4(ip);
            }
        }
    }
    loopback
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The configuration from `rkubelet FLAGS...`.
    pub(crate) fn config(flags: &[&str]) -> anyhow::Result<Config> {
        let argv = ["rkubelet"].iter().chain(flags);
        Config::from_options(rkube_daemon::options::parse_from(argv)?)
    }

    #[test]
    fn tls_files_come_from_flags_or_the_file_and_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kubelet.yaml");
        std::fs::write(
            &file,
            "nodeName: n1\ntlsCertFile: /etc/rkube/kubelet.crt\ntlsPrivateKeyFile: /etc/rkube/kubelet.key\nclientCaFile: /etc/rkube/ca.crt\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let c = config(&["--config", file, "--client-ca-file", "/other/ca.crt"]).unwrap();
        assert_eq!(c.tls_cert_file, Some(PathBuf::from("/etc/rkube/kubelet.crt")));
        assert_eq!(
            c.tls_private_key_file,
            Some(PathBuf::from("/etc/rkube/kubelet.key"))
        );
        assert_eq!(c.client_ca_file, Some(PathBuf::from("/other/ca.crt")));

        let err = config(&["--node-name", "n1", "--tls-cert-file", "/etc/rkube/kubelet.crt"])
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
        let file = file.to_str().unwrap();
        let c = config(&["--config", file, "--node-name", "from-flag"]).unwrap();
        assert_eq!(c.node_name, "from-flag");
        assert_eq!(c.pod_cidr.as_deref(), Some("10.1.0.0/24"));
        assert_eq!(c.crashloop_backoff_base, Duration::from_secs(2));

        let err = config(&["--node-name", "n", "--cloud-provider", "aws"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--cloud-provider"), "{err}");
        let err = config(&["--node-name", "n", "--pod-cidr", "10.0.0.0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--pod-cidr"), "{err}");
    }

    #[test]
    fn cluster_cidr_defaults_to_the_controller_managers_and_empty_turns_it_off() {
        let c = config(&["--node-name", "n"]).unwrap();
        assert_eq!(c.cluster_cidr.as_deref(), Some("10.244.0.0/16"));
        let c = config(&["--node-name", "n", "--cluster-cidr", ""]).unwrap();
        assert_eq!(c.cluster_cidr, None);
        let err = config(&["--node-name", "n", "--cluster-cidr", "10.244.0.0"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--cluster-cidr \"10.244.0.0\""), "{err}");
    }

    #[test]
    fn eviction_flags_default_as_kubernetes_and_bad_values_name_the_flag() {
        use crate::node_pressure::thresholds::Signal;
        let c = config(&["--node-name", "n"]).unwrap();
        assert_eq!(c.eviction_hard.len(), 4);
        assert_eq!(c.eviction_pressure_transition_period, Duration::from_secs(300));
        assert_eq!((c.image_gc_high_threshold, c.image_gc_low_threshold), (85, 80));
        let c = config(&[
            "--node-name",
            "n",
            "--eviction-hard",
            "nodefs.available<99.9%",
            "--eviction-pressure-transition-period",
            "2.5",
        ])
        .unwrap();
        assert_eq!(c.eviction_hard.len(), 1);
        assert_eq!(c.eviction_hard[0].signal, Signal::NodeFsAvailable);
        assert_eq!(c.eviction_pressure_transition_period, Duration::from_millis(2500));
        assert!(config(&["--node-name", "n", "--eviction-hard", ""])
            .unwrap()
            .eviction_hard
            .is_empty());

        let err = config(&["--node-name", "n", "--eviction-hard", "memory.available<lots"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("--eviction-hard \"memory.available<lots\""),
            "{err}"
        );
        let err = config(&["--node-name", "n", "--eviction-pressure-transition-period=-1"]).unwrap_err();
        assert!(
            err.to_string().contains("--eviction-pressure-transition-period"),
            "{err}"
        );
        let err = config(&["--node-name", "n", "--image-gc-high-threshold", "70"]).unwrap_err();
        assert!(err.to_string().contains("--image-gc-low-threshold 80"), "{err}");
    }

    #[test]
    fn cluster_dns_comes_as_kubernetes_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kubelet.yaml");
        std::fs::write(
            &file,
            "nodeName: n\nclusterDNS: [169.254.20.10]\nclusterDomain: corp.local\n",
        )
        .unwrap();
        let c = config(&["--config", file.to_str().unwrap()]).unwrap();
        assert_eq!(c.cluster_dns, ["169.254.20.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.cluster_domain, "corp.local");
        let c = config(&["--node-name", "n", "--cluster-dns", "10.96.0.10,10.96.0.11"]).unwrap();
        assert_eq!(c.cluster_dns.len(), 2);
        assert_eq!(c.cluster_domain, "cluster.local");
        let err = config(&["--node-name", "n", "--cluster-domain", "Not_A_Domain"]).unwrap_err();
        assert!(err.to_string().contains("--cluster-domain"), "{err}");
    }
}
