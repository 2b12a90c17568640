//! rkube-apiserver's options (flags, or the same fields in a YAML file given
//! with `--config`, e.g. `listen: 0.0.0.0:6443`; flags win) and the
//! configuration it runs with.

use clap::Parser;
use rkube_client::pki::APISERVER_KUBELET_CLIENT_STEM;
use rkube_daemon::DaemonOptions;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Deserialize, Debug, Clone, Default)]
#[command(
    name = "rkube-apiserver",
    version,
    about = "rkube's API server: the only process that touches the object store"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Options {
    #[command(flatten)]
    #[serde(flatten)]
    pub daemon: DaemonOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub security: SecurityConfig,
    /// Address to serve the gRPC API on. Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the object store; created if missing. Only one
    /// apiserver may use it at a time. With --storage-backend etcd it is
    /// not used.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where objects are kept: `sled` (embedded, in --data-dir; one
    /// apiserver, the default) or `etcd` (an etcd cluster given by
    /// --etcd-servers; several apiservers may share it).
    #[arg(long, value_name = "sled|etcd")]
    pub storage_backend: Option<StorageBackend>,
    /// etcd members' client URLs, comma-separated
    /// (`https://10.0.0.1:2379,https://10.0.0.2:2379`); https needs
    /// --etcd-cafile.
    #[arg(long, value_name = "URL,URL", value_delimiter = ',')]
    pub etcd_servers: Option<Vec<String>>,
    /// CA certificate (PEM) that signed the etcd members' serving
    /// certificates.
    #[arg(long, value_name = "FILE")]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate (PEM) this apiserver shows etcd (with
    /// --etcd-keyfile), when etcd checks client certificates.
    #[arg(long, value_name = "FILE")]
    pub etcd_certfile: Option<PathBuf>,
    /// Private key (PEM) of --etcd-certfile.
    #[arg(long, value_name = "FILE")]
    pub etcd_keyfile: Option<PathBuf>,
    /// Every object is stored in etcd under this prefix (default
    /// `/registry`, as kube-apiserver). Two clusters may share an etcd with
    /// different prefixes.
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// Seconds between compactions of etcd's history (default 300; 0: never,
    /// when something else compacts it). Each compaction drops the history
    /// older than one interval, as kube-apiserver does: watches that resume
    /// from before it answer Gone and clients list again.
    #[arg(long, value_name = "SECONDS")]
    pub etcd_compaction_interval: Option<u64>,
    /// With --storage-backend etcd: at start, before serving, copy every
    /// object of the sled store in DIR (the --data-dir of a stopped
    /// one-apiserver cluster) into etcd as it is (uid, creationTimestamp,
    /// generation, labels, status...; resourceVersions become etcd's). Only
    /// into an empty --etcd-prefix; once done, starting again with the flag
    /// changes nothing.
    #[arg(long, value_name = "DIR")]
    pub import_from_sled: Option<PathBuf>,
    /// Revisions of change history kept for watches that resume from an old
    /// resourceVersion; older ones answer Gone and clients relist.
    #[arg(long, value_name = "N")]
    pub watch_history: Option<u64>,
    /// Size of the store's page cache in MiB.
    #[arg(long, value_name = "MIB")]
    pub cache_mib: Option<u64>,
    /// sled: MiB the data directory's filesystem must keep free (default 16). Writes that
    /// would go below it are refused with "storage full" (503) until space is freed;
    /// reads and watches go on. 0 turns the check off.
    #[arg(long, value_name = "MIB")]
    pub storage_reserve_mib: Option<u64>,
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
    /// The address nodes and pods reach this apiserver at, which the
    /// `kubernetes` Service's Endpoints name (default: the --listen address
    /// when it is a specific one). Pods call the API at the Service's
    /// ClusterIP, the first address of --service-cluster-ip-range.
    #[arg(long, value_name = "IP")]
    pub advertise_address: Option<std::net::IpAddr>,
    /// Serve plain text with no authentication and no authorization: for
    /// local development only. Without it (and without --tls-cert-file)
    /// the apiserver is secure by default: see --cert-dir.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub insecure: Option<bool>,
    /// Where the cluster PKI lives when no --tls-cert-file is given
    /// (default /var/lib/rkube/pki). At first start the apiserver creates
    /// the cluster CA there, its serving certificate, and a certificate
    /// plus client config (`admin.conf`, `kube-scheduler.conf`, ...) for
    /// an administrator and each component, then serves TLS, authenticates
    /// client certificates, signs node certificates and authorizes with
    /// RBAC. Existing files are kept.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Extra DNS name or IP address for the serving certificate the
    /// apiserver creates in --cert-dir (repeatable; localhost, 127.0.0.1,
    /// the host name and the --listen address are always in it).
    #[arg(long = "tls-san", value_name = "NAME|IP")]
    pub tls_san: Option<Vec<String>>,
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
    /// Read requests (get, list; not watch, logs, exec) served at once by the whole
    /// apiserver, as Kubernetes' flag (default 400; 0: no limit). A quarter is kept for
    /// nodes and the control plane's own components.
    #[arg(long, value_name = "N")]
    pub max_requests_inflight: Option<usize>,
    /// Writes (create, update, patch, delete, bind, evict) served at once by the whole
    /// apiserver (default 200; 0: no limit). A quarter is kept for nodes and the control
    /// plane's own components.
    #[arg(long, value_name = "N")]
    pub max_mutating_requests_inflight: Option<usize>,
    /// Seconds a request other than watch, logs and exec may take before
    /// it fails with DEADLINE_EXCEEDED (default 60; 0: no limit).
    #[arg(long, value_name = "SECONDS")]
    pub request_timeout: Option<u64>,
}

rkube_daemon::impl_options!(Options, rkube_daemon::health::APISERVER_PORT, daemon);

/// Transport security, authentication, authorization and audit: flags and
/// config file keys (flattened into [`Options`]) and what the apiserver runs
/// with. The default of this struct (for tests and embedding) is all off:
/// plain text, everyone anonymous and allowed (`authorization_mode` `None`
/// is AlwaysAllow); the daemon defaults to secure (see
/// `Config::from_options`).
#[derive(clap::Args, Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecurityConfig {
    /// PEM certificate (chain) the API serves TLS with; with
    /// --tls-private-key-file. Without them the apiserver creates its own
    /// in --cert-dir, unless --insecure.
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
    /// without the file, encrypted Secrets cannot be read. Several keys,
    /// one a line (`NAME:BASE64` or `BASE64`), rotate it: the first
    /// encrypts, all decrypt.
    #[arg(long, value_name = "FILE")]
    pub encryption_key_file: Option<PathBuf>,
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
    /// PEM client certificate the apiserver presents to kubelets (logs,
    /// exec, metrics), with --kubelet-client-key; `rkubectl certs generate`
    /// writes apiserver-kubelet-client.crt. With it kubelets are called
    /// over https; without it over plain http.
    #[arg(long, value_name = "FILE")]
    pub kubelet_client_certificate: Option<PathBuf>,
    /// PEM private key of --kubelet-client-certificate.
    #[arg(long, value_name = "FILE")]
    pub kubelet_client_key: Option<PathBuf>,
    /// PEM CA bundle that verifies kubelets' serving certificates (default:
    /// --client-ca-file, the cluster CA that signs them).
    #[arg(long, value_name = "FILE")]
    pub kubelet_certificate_authority: Option<PathBuf>,
    /// PEM PKCS#8 ECDSA P-256 private key that signs ServiceAccount tokens
    /// (TokenRequest, the tokens the kubelet mounts into pods) and verifies
    /// them when they come back. Default with --cert-dir: `CERT_DIR/sa.key`,
    /// created at first start and kept (tokens survive restarts). Without
    /// it, ServiceAccount tokens are neither issued nor accepted.
    #[arg(long, value_name = "FILE")]
    pub service_account_signing_key_file: Option<PathBuf>,
    /// The `iss` of every ServiceAccount token (default
    /// https://kubernetes.default.svc.cluster.local).
    #[arg(long, value_name = "URL")]
    pub service_account_issuer: Option<String>,
    /// Audiences a token must be for to authenticate to this apiserver,
    /// comma-separated; also what a TokenRequest without audiences gets
    /// (default: the issuer).
    #[arg(long, value_name = "AUDIENCES", value_delimiter = ',')]
    pub api_audiences: Option<Vec<String>>,
    /// Longest lifetime of a requested token, in seconds; longer requests
    /// get this much (default: what is asked, up to 2^32 seconds).
    #[arg(long, value_name = "SECONDS")]
    pub service_account_max_token_expiration: Option<u64>,
}

impl SecurityConfig {
    /// The certificates the apiserver uses, by flag: checked for expiry at
    /// start and daily.
    pub fn certificate_files(&self) -> Vec<(&'static str, PathBuf)> {
        [
            ("--tls-cert-file", &self.tls_cert_file),
            ("--client-ca-file", &self.client_ca_file),
            ("--kubelet-client-certificate", &self.kubelet_client_certificate),
            (
                "--kubelet-certificate-authority",
                &self.kubelet_certificate_authority,
            ),
            ("--cluster-signing-cert-file", &self.cluster_signing_cert_file),
        ]
        .into_iter()
        .filter_map(|(flag, path)| Some((flag, path.clone()?)))
        .collect()
    }

    /// Checks that the settings fit together; the message names the flags.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.tls_cert_file.is_some() != self.tls_private_key_file.is_some() {
            anyhow::bail!("--tls-cert-file and --tls-private-key-file go together: give both or neither");
        }
        if self.client_ca_file.is_some() && self.tls_cert_file.is_none() {
            anyhow::bail!("--client-ca-file needs TLS: give --tls-cert-file and --tls-private-key-file too");
        }
        if self.authorization_mode == Some(crate::authz::Mode::Rbac)
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
        if self.kubelet_client_certificate.is_some() != self.kubelet_client_key.is_some() {
            anyhow::bail!(
                "--kubelet-client-certificate and --kubelet-client-key go together: give both or neither"
            );
        }
        if self.kubelet_certificate_authority.is_some() && self.kubelet_client_certificate.is_none() {
            anyhow::bail!(
                "--kubelet-certificate-authority is only used over https, which kubelets require a client certificate for: give --kubelet-client-certificate and --kubelet-client-key too"
            );
        }
        if self.kubelet_client_certificate.is_some()
            && self.kubelet_certificate_authority.is_none()
            && self.client_ca_file.is_none()
        {
            anyhow::bail!(
                "--kubelet-client-certificate needs a CA to verify kubelets with: give --kubelet-certificate-authority (or --client-ca-file, the cluster CA)"
            );
        }
        if let Some(max) = self.service_account_max_token_expiration {
            if max < crate::serviceaccount::MIN_EXPIRATION_SECONDS as u64 {
                anyhow::bail!(
                    "--service-account-max-token-expiration must be at least {} seconds (got {max})",
                    crate::serviceaccount::MIN_EXPIRATION_SECONDS
                );
            }
        }
        if self.cluster_signing_cert_file.is_some() && self.client_ca_file.is_none() {
            anyhow::bail!(
                "--cluster-signing-cert-file issues client certificates, which need --client-ca-file (normally the same CA) to be accepted"
            );
        }
        Ok(())
    }
}

/// `--storage-backend`.
#[derive(clap::ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    #[default]
    Sled,
    Etcd,
}

/// The etcd cluster objects are kept in (`--storage-backend etcd`).
#[derive(Debug, Clone)]
pub struct EtcdStorage {
    pub servers: Vec<String>,
    pub cafile: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    pub prefix: String,
    /// Zero: never.
    pub compaction_interval: std::time::Duration,
    /// `--import-from-sled`: a sled data directory copied into etcd at start.
    pub import_from_sled: Option<PathBuf>,
}

impl EtcdStorage {
    pub fn new(servers: Vec<String>) -> Self {
        EtcdStorage {
            servers,
            cafile: None,
            certfile: None,
            keyfile: None,
            prefix: "/registry".into(),
            compaction_interval: std::time::Duration::from_secs(300),
            import_from_sled: None,
        }
    }

    /// The flags checked against each other; errors name the flag and the fix.
    fn validate(&self) -> anyhow::Result<()> {
        if self.servers.is_empty() {
            anyhow::bail!(
                "--storage-backend etcd needs --etcd-servers (e.g. --etcd-servers https://127.0.0.1:2379)"
            );
        }
        for url in &self.servers {
            let tls = url.starts_with("https://");
            if !tls && !url.starts_with("http://") {
                anyhow::bail!("--etcd-servers {url:?}: an etcd URL starts with https:// or http://");
            }
            if tls && self.cafile.is_none() {
                anyhow::bail!("--etcd-servers {url:?} is https, which needs --etcd-cafile (the CA that signed etcd's certificates)");
            }
            if !tls && self.cafile.is_some() {
                anyhow::bail!(
                    "--etcd-cafile is given but --etcd-servers {url:?} is plain http: use https:// URLs"
                );
            }
        }
        if self.certfile.is_some() != self.keyfile.is_some() {
            anyhow::bail!("--etcd-certfile and --etcd-keyfile go together: give both or neither");
        }
        if self.certfile.is_some() && self.cafile.is_none() {
            anyhow::bail!("--etcd-certfile needs https:// --etcd-servers and --etcd-cafile");
        }
        if !self.prefix.starts_with('/') || self.prefix.len() < 2 {
            anyhow::bail!(
                "--etcd-prefix {:?} must start with / and name something (e.g. /registry)",
                self.prefix
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
    /// `None`: sled in `data_dir`.
    pub etcd: Option<EtcdStorage>,
    pub watch_history: u64,
    pub cache_mib: u64,
    pub storage_reserve_mib: u64,
    pub bookmark_interval: std::time::Duration,
    /// Default 10.96.0.0/16.
    pub service_cluster_ip_range: String,
    /// Default 30000-32767.
    pub service_node_port_range: String,
    /// Where the `kubernetes` Service's Endpoints point (the port is the one
    /// served); `None`: the --listen address when it is a specific one.
    pub advertise_address: Option<std::net::IpAddr>,
    /// The health and metrics endpoint; `None`: not served (the default
    /// for tests and embedding; the daemon's flags default to loopback).
    pub health_addr: Option<SocketAddr>,
    pub security: SecurityConfig,
    /// Request size, per-user watch and in-flight caps, request timeout.
    pub limits: crate::limits::LimitsConfig,
    /// The PKI to create at start when it does not exist yet (secure by
    /// default without --tls-cert-file); `security` already points at it.
    pub auto_pki: Option<AutoPki>,
    /// Encode every new object version's Kubernetes JSON in the background
    /// (`rest::warm`), so REST lists find it made. On by default; off only to measure
    /// what it saves (the benchmark).
    pub warm_json: bool,
}

/// The cluster PKI the apiserver creates for itself at first start.
#[derive(Debug, Clone)]
pub struct AutoPki {
    pub dir: PathBuf,
    /// Names and addresses for the serving certificate besides localhost.
    pub sans: Vec<String>,
    /// The URL written into the client configs (`admin.conf`, ...).
    pub url: String,
    /// This machine's node name: its kubelet's certificate and client
    /// config go into `kubelet.conf`, as kubeadm does for the control-plane
    /// machine (other machines join with a bootstrap token).
    pub node: Option<String>,
}

impl AutoPki {
    /// Creates the PKI unless it is complete (the serving certificate and
    /// every component's client config); returns whether it did. An existing
    /// CA is kept, so certificates issued before stay valid.
    pub fn ensure(&self) -> anyhow::Result<bool> {
        // apart from the rest: a PKI made before tokens existed gets its key
        rkube_client::pki::ensure_service_account_key(&self.dir).map_err(|e| {
            anyhow::anyhow!(
                "creating the ServiceAccount token key in {} (--cert-dir): {e}",
                self.dir.display()
            )
        })?;
        // Every component's client config too: a PKI made before a component existed
        // (rkube-ingress) gets it at the next start, from the same CA, so nothing
        // issued before stops working.
        // Not the nodes' configs: a PKI made by hand (`rkubectl certs generate --node`)
        // names its own nodes, and completing it would re-issue the serving certificate
        // without the SANs it was made with.
        let configs = rkube_client::pki::client_identities(&[])
            .into_iter()
            .map(|(stem, _, _)| format!("{stem}.conf"));
        let have = [
            "ca.crt".to_string(),
            "apiserver.crt".into(),
            "apiserver.key".into(),
            format!("{APISERVER_KUBELET_CLIENT_STEM}.crt"),
            format!("{APISERVER_KUBELET_CLIENT_STEM}.key"),
        ]
        .into_iter()
        .chain(configs)
        .all(|f| self.dir.join(f).exists());
        if have {
            return Ok(false);
        }
        let failed = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!(
                "creating the cluster PKI in {} (--cert-dir): {e}",
                self.dir.display()
            )
        };
        rkube_client::pki::generate(&rkube_client::pki::PkiRequest {
            dir: self.dir.clone(),
            apiserver_sans: self.sans.clone(),
            nodes: self.node.iter().cloned().collect(),
            apiserver_url: self.url.clone(),
            validity_days: 365,
        })
        .map_err(|e| failed(&e))?;
        if let Some(node) = &self.node {
            // the config names its files relative to itself: a copy beside it works
            std::fs::copy(
                self.dir.join(format!("node-{node}.conf")),
                self.dir.join("kubelet.conf"),
            )
            .map_err(|e| failed(&e))?;
        }
        Ok(true)
    }
}

impl SecurityConfig {
    /// Secure by default: TLS with the PKI in `dir`, client certificates
    /// signed by its CA, node certificates signed by it, and RBAC unless
    /// an authorization mode was chosen. Files given explicitly win.
    fn secure_by_default(&mut self, dir: &std::path::Path) {
        self.tls_cert_file = Some(dir.join("apiserver.crt"));
        self.tls_private_key_file = Some(dir.join("apiserver.key"));
        self.client_ca_file.get_or_insert_with(|| dir.join("ca.crt"));
        if self.cluster_signing_cert_file.is_none() && self.cluster_signing_key_file.is_none() {
            self.cluster_signing_cert_file = Some(dir.join("ca.crt"));
            self.cluster_signing_key_file = Some(dir.join("ca.key"));
        }
        if self.kubelet_client_certificate.is_none() && self.kubelet_client_key.is_none() {
            self.kubelet_client_certificate = Some(dir.join(format!("{APISERVER_KUBELET_CLIENT_STEM}.crt")));
            self.kubelet_client_key = Some(dir.join(format!("{APISERVER_KUBELET_CLIENT_STEM}.key")));
        }
        self.kubelet_certificate_authority
            .get_or_insert_with(|| dir.join("ca.crt"));
        self.service_account_signing_key_file
            .get_or_insert_with(|| dir.join(rkube_client::pki::SERVICE_ACCOUNT_KEY));
        self.authorization_mode.get_or_insert(crate::authz::Mode::Rbac);
    }
}

/// This machine's name, lowercased as the kubelet's default node name is.
fn host_name() -> Option<String> {
    let name = rkube_daemon::host_name().to_lowercase();
    rkube_api::validation::is_dns1123_subdomain(&name).then_some(name)
}

/// The serving certificate's names: the host name and the listen address
/// (when it is a specific one) besides the operator's `--tls-san`s.
fn default_sans(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut sans = extra.to_vec();
    if !listen.ip().is_unspecified() {
        sans.push(listen.ip().to_string());
    }
    sans.extend(host_name());
    sans.sort();
    sans.dedup();
    sans
}

/// The https URL clients on this host use for an apiserver listening on
/// `listen` (loopback when it listens on every address).
fn local_url(listen: SocketAddr) -> String {
    let ip = if listen.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        listen.ip()
    };
    format!("https://{}", SocketAddr::new(ip, listen.port()))
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
            etcd: None,
            watch_history: 100_000,
            cache_mib: 16,
            storage_reserve_mib: 16,
            bookmark_interval: std::time::Duration::from_secs(1),
            service_cluster_ip_range: DEFAULT_SERVICE_CIDR.into(),
            service_node_port_range: DEFAULT_NODE_PORT_RANGE.into(),
            advertise_address: None,
            health_addr: None,
            security: SecurityConfig::default(),
            limits: Default::default(),
            auto_pki: None,
            warm_json: true,
        }
    }

    /// The options resolved over the defaults, and checked; errors name the flag.
    pub fn from_options(o: Options) -> anyhow::Result<Config> {
        let health_addr = rkube_daemon::Options::health_addr(&o);
        let insecure = o.insecure.unwrap_or(false);
        let cert_dir = o.cert_dir.unwrap_or_else(|| PathBuf::from("/var/lib/rkube/pki"));
        let tls_san = o.tls_san.unwrap_or_default();
        let mut cfg = Config::local(
            o.data_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/rkube/apiserver")),
        );
        cfg.listen = o
            .listen
            .unwrap_or_else(|| "127.0.0.1:6443".parse().expect("literal address"));
        cfg.health_addr = health_addr;
        cfg.etcd = match o.storage_backend.unwrap_or_default() {
            StorageBackend::Etcd => {
                let mut etcd = EtcdStorage::new(o.etcd_servers.unwrap_or_default());
                etcd.cafile = o.etcd_cafile;
                etcd.certfile = o.etcd_certfile;
                etcd.keyfile = o.etcd_keyfile;
                etcd.prefix = o.etcd_prefix.unwrap_or(etcd.prefix);
                if let Some(s) = o.etcd_compaction_interval {
                    etcd.compaction_interval = std::time::Duration::from_secs(s);
                }
                etcd.import_from_sled = o.import_from_sled;
                etcd.validate()?;
                Some(etcd)
            }
            StorageBackend::Sled => {
                let given = [
                    ("--etcd-servers", o.etcd_servers.is_some()),
                    ("--etcd-cafile", o.etcd_cafile.is_some()),
                    ("--etcd-certfile", o.etcd_certfile.is_some()),
                    ("--etcd-keyfile", o.etcd_keyfile.is_some()),
                    ("--etcd-prefix", o.etcd_prefix.is_some()),
                    ("--etcd-compaction-interval", o.etcd_compaction_interval.is_some()),
                    ("--import-from-sled", o.import_from_sled.is_some()),
                ];
                if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
                    anyhow::bail!(
                        "{flag} is given but the storage backend is sled: add --storage-backend etcd, or drop {flag}"
                    );
                }
                None
            }
        };
        cfg.watch_history = o.watch_history.unwrap_or(cfg.watch_history);
        cfg.cache_mib = o.cache_mib.unwrap_or(cfg.cache_mib);
        cfg.storage_reserve_mib = o.storage_reserve_mib.unwrap_or(cfg.storage_reserve_mib);
        if let Some(s) = o.bookmark_interval {
            cfg.bookmark_interval = std::time::Duration::from_secs(s);
        }
        cfg.service_cluster_ip_range = o.service_cluster_ip_range.unwrap_or(cfg.service_cluster_ip_range);
        cfg.service_node_port_range = o.service_node_port_range.unwrap_or(cfg.service_node_port_range);
        cfg.advertise_address = o.advertise_address;
        cfg.security = o.security;
        let limits = &mut cfg.limits;
        limits.max_request_bytes = o.max_request_bytes.unwrap_or(limits.max_request_bytes);
        limits.max_watches_per_user = o.max_watches_per_user.unwrap_or(limits.max_watches_per_user);
        limits.max_requests_inflight_per_user = o
            .max_requests_inflight_per_user
            .unwrap_or(limits.max_requests_inflight_per_user);
        limits.max_requests_inflight = o.max_requests_inflight.unwrap_or(limits.max_requests_inflight);
        limits.max_mutating_requests_inflight = o
            .max_mutating_requests_inflight
            .unwrap_or(limits.max_mutating_requests_inflight);
        if let Some(s) = o.request_timeout {
            limits.request_timeout = std::time::Duration::from_secs(s);
        }
        if insecure {
            if cfg.security.tls_cert_file.is_some() || cfg.security.client_ca_file.is_some() {
                anyhow::bail!(
                    "--insecure serves plain text, but --tls-cert-file or --client-ca-file is given: drop one or the other"
                );
            }
        } else if cfg.security.tls_cert_file.is_none() && cfg.security.tls_private_key_file.is_none() {
            cfg.security.secure_by_default(&cert_dir);
            cfg.auto_pki = Some(AutoPki {
                dir: cert_dir,
                sans: default_sans(cfg.listen, &tls_san),
                url: local_url(cfg.listen),
                node: host_name(),
            });
        }
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
        Config::from_options(rkube_daemon::options::parse_from(argv)?)
    }

    #[test]
    fn secure_by_default_with_a_pki_in_the_cert_dir() {
        let c = config(&[
            "--cert-dir",
            "/tmp/pki",
            "--tls-san",
            "api.example",
            "--listen",
            "10.0.0.5:6443",
        ])
        .unwrap();
        let s = &c.security;
        assert_eq!(
            s.tls_cert_file.as_deref(),
            Some(std::path::Path::new("/tmp/pki/apiserver.crt"))
        );
        assert_eq!(
            s.client_ca_file.as_deref(),
            Some(std::path::Path::new("/tmp/pki/ca.crt"))
        );
        assert_eq!(
            s.cluster_signing_key_file.as_deref(),
            Some(std::path::Path::new("/tmp/pki/ca.key"))
        );
        assert_eq!(s.authorization_mode, Some(crate::authz::Mode::Rbac));
        assert_eq!(
            s.kubelet_client_certificate.as_deref(),
            Some(std::path::Path::new("/tmp/pki/apiserver-kubelet-client.crt"))
        );
        // every certificate it uses is watched for expiry, by flag
        let watched: Vec<String> = s
            .certificate_files()
            .iter()
            .map(|(flag, path)| format!("{flag} {}", path.display()))
            .collect();
        assert_eq!(
            watched,
            [
                "--tls-cert-file /tmp/pki/apiserver.crt",
                "--client-ca-file /tmp/pki/ca.crt",
                "--kubelet-client-certificate /tmp/pki/apiserver-kubelet-client.crt",
                "--kubelet-certificate-authority /tmp/pki/ca.crt",
                "--cluster-signing-cert-file /tmp/pki/ca.crt",
            ]
        );
        let pki = c.auto_pki.expect("the PKI is created at start");
        assert_eq!(pki.url, "https://10.0.0.5:6443");
        assert!(pki.sans.contains(&"api.example".to_string()) && pki.sans.contains(&"10.0.0.5".to_string()));
        // An explicit mode is kept; the default directory is /var/lib/rkube/pki.
        let c = config(&["--authorization-mode", "AlwaysAllow"]).unwrap();
        assert_eq!(
            c.security.authorization_mode,
            Some(crate::authz::Mode::AlwaysAllow)
        );
        assert_eq!(c.auto_pki.unwrap().dir, PathBuf::from("/var/lib/rkube/pki"));
        // Files given by the operator are used as they are.
        let c = config(&["--tls-cert-file", "a.crt", "--tls-private-key-file", "a.key"]).unwrap();
        assert!(c.auto_pki.is_none() && c.security.client_ca_file.is_none());
    }

    #[test]
    fn insecure_is_plain_text_and_says_what_contradicts_it() {
        let c = config(&["--insecure"]).unwrap();
        assert!(c.security.tls_cert_file.is_none() && c.auto_pki.is_none());
        assert_eq!(c.security.authorization_mode, None);
        let err = config(&[
            "--insecure",
            "--tls-cert-file",
            "a.crt",
            "--tls-private-key-file",
            "a.key",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("drop one or the other"), "{err}");
    }

    #[test]
    fn the_pki_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let pki = AutoPki {
            dir: dir.path().join("pki"),
            sans: vec!["10.1.2.3".into()],
            url: "https://127.0.0.1:6443".into(),
            node: Some("box-1".into()),
        };
        assert!(pki.ensure().unwrap());
        let kubelet = rkube_client::ClientConfig::load(&pki.dir.join("kubelet.conf")).unwrap();
        assert_eq!(kubelet.client_certificate, Some(pki.dir.join("node-box-1.crt")));
        let ca = std::fs::read(pki.dir.join("ca.crt")).unwrap();
        assert!(pki.dir.join("admin.conf").exists());
        assert!(!pki.ensure().unwrap(), "an existing PKI is kept");
        assert_eq!(std::fs::read(pki.dir.join("ca.crt")).unwrap(), ca);
        // a PKI from before a component existed gets its config, from the same CA
        std::fs::remove_file(pki.dir.join("rkube-ingress.conf")).unwrap();
        assert!(pki.ensure().unwrap());
        assert!(pki.dir.join("rkube-ingress.conf").exists());
        assert_eq!(std::fs::read(pki.dir.join("ca.crt")).unwrap(), ca);
    }

    #[test]
    fn security_flags_must_fit_together() {
        let err = config(&["--insecure", "--authorization-mode", "RBAC"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--client-ca-file or --token-auth-file"), "{err}");
        let err = config(&["--insecure", "--client-ca-file", "ca.crt"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("drop one or the other"), "{err}");
        let err = config(&["--tls-cert-file", "a.crt"]).unwrap_err().to_string();
        assert!(err.contains("give both or neither"), "{err}");
        let err = config(&["--authorization-mode", "ABAC"]).unwrap_err().to_string();
        assert!(err.contains("use AlwaysAllow or RBAC"), "{err}");
        let err = config(&["--insecure", "--cluster-signing-cert-file", "ca.crt"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("give both or neither"), "{err}");
        let err = config(&[
            "--insecure",
            "--cluster-signing-cert-file",
            "ca.crt",
            "--cluster-signing-key-file",
            "ca.key",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("need --client-ca-file"), "{err}");
        let c = config(&[
            "--insecure",
            "--authorization-mode",
            "RBAC",
            "--token-auth-file",
            "t.csv",
        ])
        .unwrap();
        assert_eq!(c.security.authorization_mode, Some(crate::authz::Mode::Rbac));
    }

    #[test]
    fn kubelet_client_flags_fit_together() {
        let err = config(&["--insecure", "--kubelet-client-certificate", "k.crt"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--kubelet-client-certificate and --kubelet-client-key go together"),
            "{err}"
        );
        let err = config(&["--insecure", "--kubelet-certificate-authority", "ca.crt"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("give --kubelet-client-certificate and --kubelet-client-key too"),
            "{err}"
        );
        let kubelet_client = [
            "--kubelet-client-certificate",
            "k.crt",
            "--kubelet-client-key",
            "k.key",
        ];
        let mut insecure = vec!["--insecure"];
        insecure.extend(kubelet_client);
        let err = config(&insecure).unwrap_err().to_string();
        assert!(err.contains("give --kubelet-certificate-authority"), "{err}");
        insecure.extend(["--kubelet-certificate-authority", "ca.crt"]);
        let c = config(&insecure).unwrap();
        assert_eq!(c.security.kubelet_client_key, Some(PathBuf::from("k.key")));
    }
}
