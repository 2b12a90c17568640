//! rkube-apiserver: the only process that opens the object store. It
//! serves one generic gRPC service over every kind, and the Kubernetes REST
//! API as a face over the same handlers on the same port (`rest`), applies defaulting,
//! validation and admission, stamps resourceVersions, and fans changes out
//! to watchers. It must not run controllers or talk to nodes' containers:
//! everything else is a client of this API.

pub mod admission;
pub mod allocator;
pub mod attributes;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod certificates;
pub mod config;
pub mod custom;
pub mod encryption;
pub mod error;
pub mod eviction;
pub mod feed;
pub mod handlers;
pub mod ingress_class;
pub mod keys;
pub mod limit_range;
pub mod limits;
pub mod managed_fields;
pub mod master_service;
pub mod node;
pub mod pod_priority;
pub mod pod_security;
pub mod proxy;
pub mod quota;
pub mod rest;
pub mod service;
pub mod serviceaccount;
pub mod storage_class;

use anyhow::Context;
pub use config::{Config, EtcdStorage, Options, SecurityConfig, StorageBackend};
use rkube_api::core::v1::Namespace;
use rkube_api::rpc::api_server_server::ApiServerServer;
use rkube_api::Resource;
pub use rkube_daemon::notify_systemd;
use rkube_store::{EtcdConfig, EtcdStore, EtcdTls, SledStore, Store, StoreConfig, StoreError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// What every request handler shares.
pub struct State {
    pub store: Arc<dyn Store>,
    /// Flips to true when the server shuts down, ending watch streams.
    pub shutdown: watch::Receiver<bool>,
    /// Connections to kubelets for logs, exec and metrics.
    pub kubelets: proxy::Kubelets,
    /// ClusterIPs and NodePorts of Services.
    pub services: Arc<allocator::ServiceAllocator>,
    /// Who is calling (off unless a client CA or token file is given).
    pub authn: authn::Authenticator,
    /// Whether they may (AlwaysAllow unless `--authorization-mode=RBAC`).
    pub authz: authz::Authorizer,
    /// `--audit-log-path`.
    pub audit: Option<audit::AuditLog>,
    /// `--cluster-signing-cert-file`: signs node client certificates.
    pub node_signer: Option<certificates::NodeCertificateSigner>,
    /// `--service-account-signing-key-file`: signs and verifies
    /// ServiceAccount tokens.
    pub token_signer: Option<Arc<serviceaccount::TokenSigner>>,
    /// The encryption layer under `store`, for what only it knows: whether
    /// a Secret is encrypted with an old key.
    pub encrypted: Arc<encryption::EncryptedStore>,
    /// The kinds CustomResourceDefinitions add, rebuilt on every CRD write.
    pub custom: custom::CustomKinds,
}

/// A started apiserver: its address, and how to stop it.
pub struct RunningApiServer {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    store: Backend,
    tls: bool,
    json_warming: Option<Arc<rest::warm::WarmStats>>,
}

impl RunningApiServer {
    /// `http://ADDR` (`https://` with TLS), what clients connect to.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// What the background JSON encoding did (`None` when `warm_json` is off).
    pub fn json_warming(&self) -> Option<&rest::warm::WarmStats> {
        self.json_warming.as_deref()
    }

    /// Stops serving, ends watches, finishes queued writes and flushes.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let served = self.server.await.context("the server task failed")?;
        served.context("the server failed")?;
        self.store.close().await
    }

    /// The etcd store, when the apiserver runs on etcd (tests look at its cache).
    pub fn etcd(&self) -> Option<&Arc<EtcdStore>> {
        match &self.store {
            Backend::Etcd(store) => Some(store),
            Backend::Sled(_) => None,
        }
    }
}

/// The store under the encryption layer, kept for what only the backend does (closing).
enum Backend {
    Sled(Arc<SledStore>),
    Etcd(Arc<EtcdStore>),
}

impl Backend {
    /// sled in `--data-dir`, or the etcd cluster of `--etcd-servers`.
    async fn open(config: &Config) -> anyhow::Result<Backend> {
        let Some(etcd) = &config.etcd else {
            let mut store_config = StoreConfig::new(&config.data_dir);
            store_config.history = config.watch_history;
            store_config.cache_bytes = config.cache_mib * 1024 * 1024;
            store_config.min_free_bytes = config.storage_reserve_mib.saturating_mul(1024 * 1024);
            store_config.progress_interval = config.bookmark_interval;
            // Opening blocks on disk; the error already names the directory and what to do.
            let store = tokio::task::spawn_blocking(move || SledStore::open(store_config))
                .await
                .context("the store opener panicked")??;
            return Ok(Backend::Sled(Arc::new(store)));
        };
        let read = |flag: &str, path: &std::path::Path| {
            rkube_client::pki::read_pem(flag, path).map_err(|e| anyhow::anyhow!("{}", e.0))
        };
        let tls = match &etcd.cafile {
            Some(ca) => Some(EtcdTls {
                ca: read("--etcd-cafile", ca)?,
                identity: match (&etcd.certfile, &etcd.keyfile) {
                    (Some(cert), Some(key)) => {
                        Some((read("--etcd-certfile", cert)?, read("--etcd-keyfile", key)?))
                    }
                    _ => None,
                },
            }),
            None => None,
        };
        let mut store_config = EtcdConfig::new(etcd.servers.clone());
        store_config.prefix = etcd.prefix.clone();
        store_config.tls = tls;
        store_config.compaction_interval = etcd.compaction_interval;
        store_config.progress_interval = config.bookmark_interval;
        let store = EtcdStore::connect(store_config)
            .await
            .context("cannot use etcd (--etcd-servers)")?;
        if let Some(dir) = &etcd.import_from_sled {
            import_from_sled(&store, dir, &etcd.prefix).await?;
        }
        Ok(Backend::Etcd(Arc::new(store)))
    }

    fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sled(store) => store.clone(),
            Backend::Etcd(store) => store.clone(),
        }
    }

    /// Where the objects are, for the log.
    fn describe(&self) -> String {
        match self {
            Backend::Sled(store) => format!("sled in {}", store.path().display()),
            Backend::Etcd(store) => format!("etcd at {}", store.endpoints()),
        }
    }

    /// Finishes the writes already accepted, ends watches, and lets the backend go.
    async fn close(&self) -> anyhow::Result<()> {
        match self {
            Backend::Sled(store) => {
                store.close().context("closing the store")?;
                // The data directory's lock goes with the last reference to the store.
                // Tasks that followed it (the reservation watch, JSON warming) let it go
                // once they see the shutdown, a moment after the server task ends: wait
                // for them, so that the directory can be opened again once `stop`
                // returns (a restart in the same process, a tool reading the data).
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
                while Arc::strong_count(store) > 1 && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Ok(())
            }
            Backend::Etcd(store) => {
                store.close().await;
                Ok(())
            }
        }
    }
}

/// Copies every key of the sled store in `dir` into `etcd` as it is: the objects' bytes
/// (uid, creationTimestamp, generation, labels, annotations, finalizers, owners, status;
/// Secrets as the encryption layer wrote them, so the same --encryption-key-file reads
/// them) and the Service allocations' reservation keys. Only the revisions change: etcd
/// gives its own, which become the resourceVersions. Refused unless etcd holds nothing
/// under the prefix, or already holds every key of `dir` (a restart with the flag still
/// given, which then changes nothing).
async fn import_from_sled(etcd: &EtcdStore, dir: &std::path::Path, prefix: &str) -> anyhow::Result<()> {
    let flag = format!("--import-from-sled {}", dir.display());
    anyhow::ensure!(
        dir.join("db").exists() || dir.join("conf").exists(),
        "{flag}: no sled store there; give the --data-dir of the apiserver to move (stopped)"
    );
    let config = StoreConfig::new(dir);
    let sled = tokio::task::spawn_blocking(move || SledStore::open(config))
        .await
        .context("the store opener panicked")?
        .with_context(|| format!("{flag}: cannot open it (stop the apiserver that uses it first)"))?;
    let all = sled
        .list("", None, 0, None)
        .with_context(|| format!("{flag}: reading it"))?;
    let present = etcd.list("", None, 1, None).context("reading etcd")?;
    if !present.items.is_empty() {
        if all.items.iter().all(|kv| etcd.get(&kv.key).is_some()) {
            tracing::info!(
                "{flag}: etcd already holds its {} keys; nothing to copy",
                all.items.len()
            );
            return Ok(());
        }
        anyhow::bail!(
            "{flag}: etcd already holds other objects under --etcd-prefix {prefix}; import into an \
             empty prefix (a new etcd cluster, or another --etcd-prefix)"
        );
    }
    // One transaction per batch, well under etcd's limit of 128 operations per transaction.
    for batch in all.items.chunks(100) {
        let ops = batch
            .iter()
            .map(|kv| rkube_store::Op::Create {
                key: kv.key.clone(),
                value: kv.value.clone(),
            })
            .collect();
        etcd.txn(ops)
            .await
            .with_context(|| format!("{flag}: writing to etcd"))?;
    }
    let _ = sled.close();
    tracing::info!(
        "{flag}: copied {} keys into etcd under {prefix} (revision {} of the sled store)",
        all.items.len(),
        all.revision
    );
    Ok(())
}

/// Opens the store, creates the system namespaces on first start, binds the
/// listener and starts serving. Returns once the server accepts requests.
pub async fn start(config: Config) -> anyhow::Result<RunningApiServer> {
    // a bad range is a configuration error: refuse before opening anything
    let services =
        allocator::ServiceAllocator::new(&config.service_cluster_ip_range, &config.service_node_port_range)?;
    if let Some(pki) = &config.auto_pki {
        if pki.ensure()? {
            tracing::info!(
                dir = %pki.dir.display(),
                "created the cluster PKI: {}/admin.conf is the administrator's client config",
                pki.dir.display()
            );
        }
    }
    let security = &config.security;
    security.validate()?;
    let certificates = security.certificate_files();
    rkube_client::pki::log_warnings_daily(move || {
        let now = time::OffsetDateTime::now_utc();
        certificates
            .iter()
            .flat_map(|(what, path)| rkube_client::pki::file_expiry_warnings(what, path, now))
            .collect()
    });
    let tls = rest::listener::tls_config(security)?;
    if tls.is_none() {
        tracing::warn!("serving plain text without authentication (--insecure): anyone who reaches the port may do anything");
    }
    let mut authn = authn::Authenticator::new(
        security.client_ca_file.is_some(),
        security.token_auth_file.as_deref(),
    )?;
    let encryption_key = match &security.encryption_key_file {
        Some(p) => Some(encryption::EncryptionKey::load(p)?),
        None => None,
    };
    let audit = match &security.audit_log_path {
        Some(p) => Some(audit::AuditLog::open(p)?),
        None => None,
    };
    let node_signer = match (
        &security.cluster_signing_cert_file,
        &security.cluster_signing_key_file,
    ) {
        (Some(cert), Some(key)) => Some(certificates::NodeCertificateSigner::load(cert, key)?),
        _ => None,
    };
    let token_signer = match &security.service_account_signing_key_file {
        Some(path) => Some(Arc::new(serviceaccount::TokenSigner::load(
            path,
            security
                .service_account_issuer
                .as_deref()
                .unwrap_or(serviceaccount::DEFAULT_ISSUER),
            security.api_audiences.clone().unwrap_or_default(),
            security
                .service_account_max_token_expiration
                .map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
        )?)),
        None => None,
    };
    // https to kubelets with --kubelet-client-certificate, else http
    let kubelets = proxy::Kubelets::new(security)?;
    let backend = Backend::open(&config).await?;
    // Everything above the backend, bootstrap included, goes through the
    // encryption layer: Secrets are encrypted at rest when a key is given,
    // and an encrypted Secret read without it is a clear error.
    let encrypted = Arc::new(encryption::EncryptedStore::new(backend.store(), encryption_key));
    let store: Arc<dyn Store> = encrypted.clone();
    bootstrap(store.as_ref()).await?;
    pod_priority::bootstrap(store.as_ref()).await?;
    // From here on every reservation written by another apiserver is followed.
    let reservations_from = store.revision();
    repair_service_allocations(store.as_ref(), &services)?;
    if security.authorization_mode == Some(authz::Mode::Rbac) {
        authz::bootstrap_default_roles(store.as_ref()).await?;
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: is another apiserver running there? choose another --listen",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let advertise = config
        .advertise_address
        .or_else(|| (!addr.ip().is_unspecified()).then_some(addr.ip()))
        .map(|ip| SocketAddr::new(ip, addr.port()));
    master_service::reconcile(
        store.as_ref(),
        &services,
        &config.service_cluster_ip_range,
        addr.port(),
        advertise,
    )
    .await?;
    let reserved = allocator::reserve_stored(store.as_ref(), &services)
        .await
        .context("reserving the stored Services' ClusterIPs and NodePorts")?;
    if reserved > 0 {
        tracing::info!(
            keys = reserved,
            "reserved stored Services' addresses and ports in the store"
        );
    }
    let services = Arc::new(services);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(allocator::follow_reservations(
        store.clone(),
        services.clone(),
        reservations_from,
        shutdown_rx.clone(),
    ));
    let json_warming = if config.warm_json {
        let stats = rest::warm::start(
            store.clone(),
            rest::json::JsonCache::global(),
            shutdown_rx.clone(),
        )
        .context("cannot start the thread that encodes objects as JSON")?;
        Some(stats)
    } else {
        None
    };
    // the stored CRDs' kinds are served from the first request on
    let custom = custom::CustomKinds::default();
    custom
        .reload(store.as_ref())
        .context("reading the stored CustomResourceDefinitions")?;
    let authz = authz::Authorizer::new(security.authorization_mode.unwrap_or_default(), store.clone());
    if node_signer.is_some() {
        // bootstrap tokens are only good for a node certificate: accepted
        // when this apiserver can sign one
        authn.enable_bootstrap_tokens(store.clone());
    }
    if let Some(signer) = &token_signer {
        authn.enable_service_account_tokens(signer.clone(), store.clone());
    }
    let state = Arc::new(State {
        store: store.clone(),
        shutdown: shutdown_rx.clone(),
        kubelets,
        services,
        authn,
        authz,
        audit,
        node_signer,
        token_signer,
        encrypted,
        custom,
    });
    let service = ApiServerServer::new(service::ApiService { state: state.clone() })
        .max_decoding_message_size(config.limits.max_request_bytes)
        .max_encoding_message_size(usize::MAX);
    // one port for both faces: gRPC (tonic) and the Kubernetes REST API
    let tls_on = tls.is_some();
    let rest = Arc::new(rest::Rest::new(state.clone(), config.limits.max_request_bytes));
    let server = rest::listener::serve(
        listener,
        tls,
        tonic::service::Routes::new(service),
        rest,
        limits::LimitsLayer::new(config.limits.clone(), state.clone()),
        shutdown_rx,
    );
    tracing::info!(
        %addr,
        storage = %backend.describe(),
        revision = store.revision(),
        tls = tls_on,
        authentication = state_authn_enabled(&config.security),
        authorization = ?config.security.authorization_mode,
        secrets_encrypted = config.security.encryption_key_file.is_some(),
        "rkube-apiserver serving"
    );
    Ok(RunningApiServer {
        addr,
        shutdown: shutdown_tx,
        server,
        store: backend,
        tls: tls_on,
        json_warming,
    })
}

fn state_authn_enabled(security: &SecurityConfig) -> bool {
    security.client_ca_file.is_some()
        || security.token_auth_file.is_some()
        || security.cluster_signing_cert_file.is_some()
}

/// Runs until `shutdown` resolves: what `main` calls.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let _health = rkube_daemon::serve_health(config.health_addr).await?;
    let server = start(config).await?;
    rkube_daemon::ready();
    shutdown.await;
    tracing::info!("shutting down");
    notify_systemd("STOPPING=1");
    server.stop().await
}

/// Marks every stored Service's ClusterIP and NodePorts as taken: the
/// Services are the durable record of the allocations, so this is both how
/// they survive a restart and how one written behind the allocator's back
/// is repaired.
fn repair_service_allocations(
    store: &dyn Store,
    services: &allocator::ServiceAllocator,
) -> anyhow::Result<()> {
    use rkube_api::core::v1::Service;
    let prefix = handlers::storage_prefix(Service::info(), "");
    let page = store
        .list(&prefix, None, 0, None)
        .context("listing Services to rebuild the allocations")?;
    let mut stored = Vec::with_capacity(page.items.len());
    for kv in &page.items {
        match <Service as prost::Message>::decode(kv.value.as_ref()) {
            Ok(svc) => stored.push(svc),
            Err(e) => {
                tracing::warn!(key = %kv.key, "stored Service cannot be decoded, its addresses are not reserved: {e}")
            }
        }
    }
    services.repair(&stored);
    let (ips, ports) = services.in_use();
    tracing::info!(
        services = stored.len(),
        cluster_ips = ips,
        node_ports = ports,
        "service allocations rebuilt from the store"
    );
    Ok(())
}

/// Creates `default`, `kube-system` and `kube-node-lease` if missing.
async fn bootstrap(store: &dyn Store) -> anyhow::Result<()> {
    for name in admission::SYSTEM_NAMESPACES {
        let key = handlers::storage_key(Namespace::info(), "", name);
        if store.get(&key).is_some() {
            continue;
        }
        let mut ns = Namespace::default();
        ns.set_type_meta();
        let meta = ns.metadata_mut();
        meta.name = name.to_string();
        meta.uid = uuid::Uuid::new_v4().to_string();
        meta.creation_timestamp = handlers::now();
        meta.generation = 1;
        ns.status.get_or_insert_with(Default::default).phase = "Active".into();
        match store
            .create(&key, prost::Message::encode_to_vec(&ns).into())
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e).with_context(|| format!("creating namespace {name}")),
        }
    }
    Ok(())
}
