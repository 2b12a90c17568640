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
    /// Where to serve /healthz, /livez, /readyz and /metrics over plain
    /// HTTP (the API port speaks gRPC only); `off` turns it off.
    /// Default: 127.0.0.1:6444.
    #[arg(long, value_name = "ADDR|off")]
    pub health_addr: Option<rkube_daemon::HealthAddr>,
    /// PEM certificate (chain) the API serves TLS with; with
    /// --tls-private-key-file. Without them the API speaks plain text.
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, value_name = "FILE")]
    pub tls_private_key_file: Option<PathBuf>,
    /// PEM CA bundle: clients presenting a certificate it signed are
    /// authenticated as user = CN, groups = O. Needs TLS.
    #[arg(long, value_name = "FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// CSV of static bearer tokens, `token,user,uid,"group1,group2"` per
    /// line, as Kubernetes' --token-auth-file.
    #[arg(long, value_name = "FILE")]
    pub token_auth_file: Option<PathBuf>,
    /// AlwaysAllow (default) or RBAC (Roles and bindings decide; needs
    /// --client-ca-file or --token-auth-file).
    #[arg(long, value_name = "MODE")]
    pub authorization_mode: Option<crate::authz::Mode>,
    /// File to append one JSON audit event per mutating request to.
    #[arg(long, value_name = "FILE")]
    pub audit_log_path: Option<PathBuf>,
    /// File holding a 32-byte key in base64 (`head -c 32 /dev/urandom |
    /// base64`): Secrets are then stored AES-256-GCM encrypted. Secrets
    /// written before stay readable and are encrypted when next written;
    /// without the file, encrypted Secrets cannot be read.
    #[arg(long, value_name = "FILE")]
    pub encryption_key_file: Option<PathBuf>,
    /// Largest request accepted, in bytes (default 3 MiB, like etcd's
    /// limit); larger ones are refused with RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Watches one user may have open at once (default 100; 0: no limit).
    #[arg(long, value_name = "N")]
    pub max_watches_per_user: Option<usize>,
    /// Requests other than watch, logs and exec that one user may have
    /// in flight at once (default 400; 0: no limit).
    #[arg(long, value_name = "N")]
    pub max_requests_inflight_per_user: Option<usize>,
    /// Seconds a request other than watch, logs and exec may take before
    /// it fails with DEADLINE_EXCEEDED (default 60; 0: no limit).
    #[arg(long, value_name = "SECONDS")]
    pub request_timeout: Option<u64>,
    /// PEM CA certificate that signs node client certificates
    /// (IssueNodeCertificate), normally the cluster CA of
    /// --client-ca-file; with --cluster-signing-key-file. Also turns on
    /// bootstrap tokens (`rkubectl token create`), which new nodes use once
    /// to obtain their certificate.
    #[arg(long, value_name = "FILE")]
    pub cluster_signing_cert_file: Option<PathBuf>,
    /// PEM private key of --cluster-signing-cert-file.
    #[arg(long, value_name = "FILE")]
    pub cluster_signing_key_file: Option<PathBuf>,
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
    health_addr: Option<rkube_daemon::HealthAddr>,
    tls_cert_file: Option<PathBuf>,
    tls_private_key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    token_auth_file: Option<PathBuf>,
    authorization_mode: Option<crate::authz::Mode>,
    audit_log_path: Option<PathBuf>,
    encryption_key_file: Option<PathBuf>,
    max_request_bytes: Option<usize>,
    max_watches_per_user: Option<usize>,
    max_requests_inflight_per_user: Option<usize>,
    request_timeout: Option<u64>,
    cluster_signing_cert_file: Option<PathBuf>,
    cluster_signing_key_file: Option<PathBuf>,
}

/// Transport security, authentication, authorization and audit. The
/// default is all off: plain text, everyone anonymous and allowed.
#[derive(Debug, Clone, Default)]
pub struct SecurityConfig {
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    pub token_auth_file: Option<PathBuf>,
    pub authorization_mode: crate::authz::Mode,
    pub audit_log_path: Option<PathBuf>,
    /// `--encryption-key-file`: Secrets are encrypted at rest with it.
    pub encryption_key_file: Option<PathBuf>,
    /// The CA that signs node client certificates; also enables bootstrap
    /// tokens.
    pub cluster_signing_cert_file: Option<PathBuf>,
    pub cluster_signing_key_file: Option<PathBuf>,
}

impl SecurityConfig {
    /// Checks that the settings fit together; the message names the flags.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.tls_cert_file.is_some() != self.tls_private_key_file.is_some() {
            anyhow::bail!("--tls-cert-file and --tls-private-key-file go together: give both or neither");
        }
        if self.client_ca_file.is_some() && self.tls_cert_file.is_none() {
            anyhow::bail!("--client-ca-file needs TLS: give --tls-cert-file and --tls-private-key-file too");
        }
        if self.authorization_mode == crate::authz::Mode::Rbac
            && self.client_ca_file.is_none()
            && self.token_auth_file.is_none()
        {
            anyhow::bail!(
                "--authorization-mode=RBAC needs authenticated users: give --client-ca-file or --token-auth-file"
            );
        }
        if self.cluster_signing_cert_file.is_some() != self.cluster_signing_key_file.is_some() {
            anyhow::bail!(
                "--cluster-signing-cert-file and --cluster-signing-key-file go together: give both or neither"
            );
        }
        if self.cluster_signing_cert_file.is_some() && self.client_ca_file.is_none() {
            anyhow::bail!(
                "--cluster-signing-cert-file issues client certificates, which need --client-ca-file (normally the same CA) to be accepted"
            );
        }
        Ok(())
    }
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
    /// The health and metrics endpoint; `None`: not served (the default
    /// for tests and embedding; the daemon's flags default to loopback).
    pub health_addr: Option<SocketAddr>,
    pub security: SecurityConfig,
    /// Request size, per-user watch and in-flight caps, request timeout.
    pub limits: crate::limits::LimitsConfig,
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
            health_addr: None,
            security: SecurityConfig::default(),
            limits: Default::default(),
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
            health_addr: rkube_daemon::HealthAddr::resolve(
                args.health_addr.or(file.health_addr),
                rkube_daemon::health::APISERVER_PORT,
            ),
            security: SecurityConfig {
                tls_cert_file: args.tls_cert_file.or(file.tls_cert_file),
                tls_private_key_file: args.tls_private_key_file.or(file.tls_private_key_file),
                client_ca_file: args.client_ca_file.or(file.client_ca_file),
                token_auth_file: args.token_auth_file.or(file.token_auth_file),
                authorization_mode: args
                    .authorization_mode
                    .or(file.authorization_mode)
                    .unwrap_or_default(),
                audit_log_path: args.audit_log_path.or(file.audit_log_path),
                encryption_key_file: args.encryption_key_file.or(file.encryption_key_file),
                cluster_signing_cert_file: args.cluster_signing_cert_file.or(file.cluster_signing_cert_file),
                cluster_signing_key_file: args.cluster_signing_key_file.or(file.cluster_signing_key_file),
            },
            limits: {
                use crate::limits::*;
                LimitsConfig {
                    max_request_bytes: args
                        .max_request_bytes
                        .or(file.max_request_bytes)
                        .unwrap_or(DEFAULT_MAX_REQUEST_BYTES),
                    max_watches_per_user: args
                        .max_watches_per_user
                        .or(file.max_watches_per_user)
                        .unwrap_or(DEFAULT_MAX_WATCHES_PER_USER),
                    max_requests_inflight_per_user: args
                        .max_requests_inflight_per_user
                        .or(file.max_requests_inflight_per_user)
                        .unwrap_or(DEFAULT_MAX_REQUESTS_INFLIGHT_PER_USER),
                    request_timeout: args
                        .request_timeout
                        .or(file.request_timeout)
                        .map(std::time::Duration::from_secs)
                        .unwrap_or(DEFAULT_REQUEST_TIMEOUT),
                }
            },
        };
        cfg.security.validate()?;
        cfg.limits.validate()?;
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

#[cfg(test)]
mod security_tests {
    use super::*;

    fn config(flags: &[&str]) -> anyhow::Result<Config> {
        let argv = ["rkube-apiserver", "--health-addr", "off"].iter().chain(flags);
        Config::from_args(Args::try_parse_from(argv)?)
    }

    #[test]
    fn security_is_off_by_default() {
        let c = config(&[]).unwrap();
        assert!(c.security.tls_cert_file.is_none() && c.security.token_auth_file.is_none());
        assert_eq!(c.security.authorization_mode, crate::authz::Mode::AlwaysAllow);
    }

    #[test]
    fn security_flags_must_fit_together() {
        let err = config(&["--authorization-mode", "RBAC"]).unwrap_err().to_string();
        assert!(err.contains("--client-ca-file or --token-auth-file"), "{err}");
        let err = config(&["--client-ca-file", "ca.crt"]).unwrap_err().to_string();
        assert!(err.contains("--client-ca-file needs TLS"), "{err}");
        let err = config(&["--tls-cert-file", "a.crt"]).unwrap_err().to_string();
        assert!(err.contains("give both or neither"), "{err}");
        let err = config(&["--authorization-mode", "ABAC"]).unwrap_err().to_string();
        assert!(err.contains("use AlwaysAllow or RBAC"), "{err}");
        let err = config(&["--cluster-signing-cert-file", "ca.crt"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("give both or neither"), "{err}");
        let err = config(&[
            "--cluster-signing-cert-file",
            "ca.crt",
            "--cluster-signing-key-file",
            "ca.key",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("need --client-ca-file"), "{err}");
        let c = config(&["--authorization-mode", "RBAC", "--token-auth-file", "t.csv"]).unwrap();
        assert_eq!(c.security.authorization_mode, crate::authz::Mode::Rbac);
    }
}
