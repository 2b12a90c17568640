//! rkube-apiserver's configuration: flags, or the same fields in a YAML
//! file given with `--config` (flags win).

use clap::Parser;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "rkube-apiserver",
    version,
    about = "rkube's API server: the only process that touches the object store"
)]
pub struct Args {
    /// YAML file with any of the settings below (camelCase keys, e.g.
    /// `listen: 0.0.0.0:6443`, `dataDir: /var/lib/rkube/apiserver`); flags
    /// given on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to serve the gRPC API on. Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the object store; created if missing. Only one
    /// apiserver may use it at a time.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Revisions of change history kept for watches that resume from an old
    /// resourceVersion; older ones answer Gone and clients relist.
    #[arg(long, value_name = "N")]
    pub watch_history: Option<u64>,
    /// Size of the store's page cache in MiB.
    #[arg(long, value_name = "MIB")]
    pub cache_mib: Option<u64>,
    /// Seconds between bookmarks sent to idle watchers that asked for them.
    #[arg(long, value_name = "SECONDS")]
    pub bookmark_interval: Option<u64>,
    /// CIDR that Services' ClusterIPs come from (IPv4). Changing it leaves
    /// existing Services their addresses.
    #[arg(long, value_name = "CIDR")]
    pub service_cluster_ip_range: Option<String>,
    /// Ports that NodePort and LoadBalancer Services' node ports come
    /// from, FIRST-LAST inclusive.
    #[arg(long, value_name = "FIRST-LAST")]
    pub service_node_port_range: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    watch_history: Option<u64>,
    cache_mib: Option<u64>,
    bookmark_interval: Option<u64>,
    service_cluster_ip_range: Option<String>,
    service_node_port_range: Option<String>,
}

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub watch_history: u64,
    pub cache_mib: u64,
    pub bookmark_interval: std::time::Duration,
    /// Default 10.96.0.0/16.
    pub service_cluster_ip_range: String,
    /// Default 30000-32767.
    pub service_node_port_range: String,
}

pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/16";
pub const DEFAULT_NODE_PORT_RANGE: &str = "30000-32767";

impl Config {
    /// A configuration for tests and embedding: a free loopback port and
    /// the given data directory.
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            data_dir: data_dir.into(),
            watch_history: 100_000,
            cache_mib: 16,
            bookmark_interval: std::time::Duration::from_secs(1),
            service_cluster_ip_range: DEFAULT_SERVICE_CIDR.into(),
            service_node_port_range: DEFAULT_NODE_PORT_RANGE.into(),
        }
    }

    /// Merges flags over the config file; errors name the file and field.
    pub fn from_args(args: Args) -> anyhow::Result<Config> {
        let file: FileConfig = rkube_daemon::load_config_file(args.config.as_deref())?;
        let cfg = Config {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| "127.0.0.1:6443".parse().expect("literal address")),
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("/var/lib/rkube/apiserver")),
            watch_history: args.watch_history.or(file.watch_history).unwrap_or(100_000),
            cache_mib: args.cache_mib.or(file.cache_mib).unwrap_or(16),
            bookmark_interval: std::time::Duration::from_secs(
                args.bookmark_interval.or(file.bookmark_interval).unwrap_or(1),
            ),
            service_cluster_ip_range: args
                .service_cluster_ip_range
                .or(file.service_cluster_ip_range)
                .unwrap_or_else(|| DEFAULT_SERVICE_CIDR.into()),
            service_node_port_range: args
                .service_node_port_range
                .or(file.service_node_port_range)
                .unwrap_or_else(|| DEFAULT_NODE_PORT_RANGE.into()),
        };
        crate::allocator::ServiceAllocator::new(&cfg.service_cluster_ip_range, &cfg.service_node_port_range)?;
        if cfg.watch_history < 1000 {
            anyhow::bail!(
                "--watch-history must be at least 1000 (got {})",
                cfg.watch_history
            );
        }
        if cfg.bookmark_interval.is_zero() {
            anyhow::bail!("--bookmark-interval must be at least 1 second");
        }
        Ok(cfg)
    }
}
