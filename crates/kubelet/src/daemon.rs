//! Wiring of the `rkubelet` daemon: containerd, the apiserver client, the Node heartbeats,
//! the pod workers and the gRPC server, started by [`start`] (tests) or [`run`] (`main`).

pub use rkube_daemon::notify_systemd;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rkube_api::core::v1::Pod;
use rkube_api::kubelet::v1::kubelet_server::KubeletServer;
use rkube_client::runtime::WatcherConfig;
use rkube_client::{Api, Client, Informer, Recorder};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::node::NodeAgent;
use crate::node_pressure::signals::MachineSignals;
use crate::node_pressure::{EvictionManager, NodePressure};
use crate::pod_worker::{PodManager, Shared};
use crate::server::{KubeletService, Sampler};
use rkube_node_runtime::runtime::{ContainerRuntime, ContainerdConfig, ContainerdRuntime};

/// A started kubelet: where its gRPC server listens, and how to stop it. Stopping (or
/// dropping) it stops the kubelet, not the containers: they keep running, as they do when
/// the real daemon is restarted.
pub struct RunningKubelet {
    pub addr: SocketAddr,
    tasks: JoinSet<()>,
    server_shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RunningKubelet {
    pub async fn stop(mut self) {
        if let Some(tx) = self.server_shutdown.take() {
            let _ = tx.send(());
        }
        self.tasks.shutdown().await;
    }
}

/// Binds the gRPC server's socket, in `server_netns` when set: where several nodes run in
/// one process (tests, embedders), each node's address, which the apiserver dials for logs
/// and exec, lives in that node's namespace rather than in the kubelet's own.
fn bind_server(config: &Config) -> std::io::Result<tokio::net::TcpListener> {
    let listen = config.listen;
    let std_listener = match &config.server_netns {
        Some(netns) => {
            rkube_node_runtime::network::netns::run_in(netns, move || std::net::TcpListener::bind(listen))??
        }
        None => std::net::TcpListener::bind(listen)?,
    };
    std_listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(std_listener)
}

/// Connects to containerd and the apiserver, registers the Node, and starts every loop.
/// Returns once the gRPC server is bound and the Node is registered.
pub async fn start(config: Config) -> anyhow::Result<RunningKubelet> {
    config.validate()?;
    for dir in [&config.root_dir, &config.run_dir, &config.runtime_state_dir] {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {} (the kubelet runs as root)", dir.display()))?;
    }
    let log_driver = check_log_driver(config.log_driver.as_deref()).await;
    let containerd = ContainerdRuntime::new(ContainerdConfig {
        socket: config.containerd_socket.clone(),
        cgroup_parent: config.cgroup_parent.clone(),
        state_dir: config.runtime_state_dir.clone(),
        log_driver,
        ..ContainerdConfig::default()
    });
    let runtime_version = wait_for_containerd(&containerd).await?;
    let client_config = crate::bootstrap::client_config(&config).await?;
    let client = Client::from_config(&client_config).with_context(|| {
        format!(
            "connecting to {:?} (--apiserver, --kubeconfig)",
            client_config.server
        )
    })?;
    // what pods' ServiceAccount volumes hold as ca.crt
    let cluster_ca = match (
        &client_config.certificate_authority_data,
        &client_config.certificate_authority,
    ) {
        (Some(data), _) => Some(data.clone()),
        (None, Some(path)) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading the cluster CA {} (--kubeconfig)", path.display()))?,
        ),
        (None, None) => None,
    };
    // Before the port is bound: a bad certificate file is a start-up error.
    let serving = crate::serving::serving_tls(&config, &client_config, &client).await?;
    let serving_tls = serving.tls.is_some();
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = serving.tls {
        server = server.tls_config(tls).context(
            "the kubelet server's TLS settings (--tls-cert-file, --tls-private-key-file, --client-ca-file)",
        )?;
    }
    let listener = bind_server(&config)
        .with_context(|| format!("binding the kubelet server on --listen {}", config.listen))?;
    let addr = listener.local_addr()?;

    let (network_tx, network_rx) = watch::channel(None);
    let (pressure_tx, pressure_rx) = watch::channel(NodePressure::default());
    let agent = Arc::new(NodeAgent {
        client: client.clone(),
        config: config.clone(),
        kubelet_port: addr.port(),
        runtime_version,
        network_tx,
        pressure: pressure_rx,
    });
    let mut delay = Duration::from_millis(200);
    loop {
        match agent.register().await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(node = %config.node_name, "registering the node with {}: {e:#}; retrying", client.server());
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    // The first status before pods start, so the network is configured when it can be.
    if let Err(e) = agent.update_status().await {
        tracing::warn!("first node status update: {e:#}");
    }
    if let Err(e) = agent.renew_lease().await {
        tracing::warn!("first node lease renewal: {e:#}");
    }

    let runtime: Arc<dyn ContainerRuntime> = Arc::new(containerd.clone());
    let informer: Informer<Pod> = Informer::new(
        Api::<Pod>::all(client.clone()),
        WatcherConfig::default().fields(&format!("spec.nodeName={}", config.node_name)),
    );
    let cgroups = containerd.clone();
    let shared = Arc::new(Shared {
        client: client.clone(),
        config: config.clone(),
        runtime: runtime.clone(),
        network: network_rx,
        recorder: Recorder::new(client.clone(), "kubelet", &config.node_name),
        cluster_ca,
        pods: informer.store(),
        remove_cgroup: Arc::new(move |uid: &str| {
            if let Err(e) = cgroups.remove_pod_cgroup(uid) {
                tracing::debug!(pod_uid = %uid, "removing the pod cgroup: {e}");
            }
        }),
        evictions: Default::default(),
    });
    let sampler = Arc::new(Sampler::default());
    let service = KubeletService {
        node_name: config.node_name.clone(),
        root_dir: config.root_dir.clone(),
        pods: informer.store(),
        runtime: runtime.clone(),
        sampler: sampler.clone(),
        network: agent.network_tx.subscribe(),
    };

    let mut tasks = JoinSet::new();
    tasks.spawn(agent.clone().heartbeat_loop());
    let pod_manager = PodManager::new(shared.clone());
    let signals = Arc::new(MachineSignals {
        root_dir: config.root_dir.clone(),
        image_fs_dir: config.containerd_root.clone(),
    });
    tasks.spawn(EvictionManager::new(shared, pod_manager.clone(), signals, pressure_tx).run());
    tasks.spawn(pod_manager.run(informer));
    tasks.spawn(sampler.run(runtime, Duration::from_secs(10)));
    tasks.spawn(crate::claims::housekeeping(
        client.clone(),
        config.root_dir.clone(),
    ));
    let (server_tx, server_rx) = tokio::sync::oneshot::channel::<()>();
    let callers = crate::serving::CallerCheck::new(&config.node_name, serving_tls);
    tasks.spawn(async move {
        let served = server
            .add_service(KubeletServer::with_interceptor(service, callers))
            .serve_with_incoming_shutdown(rkube_daemon::nodelay_incoming(listener), async {
                let _ = server_rx.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!("the kubelet gRPC server failed: {e}");
        }
    });
    tracing::info!(node = %config.node_name, %addr, tls = serving.source, "kubelet started");
    Ok(RunningKubelet {
        addr,
        tasks,
        server_shutdown: Some(server_tx),
    })
}

/// Runs until `shutdown` resolves: what `main` calls.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let _health = rkube_daemon::serve_health(config.health_addr).await?;
    let kubelet = start(config).await?;
    rkube_daemon::ready();
    shutdown.await;
    tracing::info!("shutting down; containers keep running");
    notify_systemd("STOPPING=1");
    kubelet.stop().await;
    Ok(())
}

async fn wait_for_containerd(runtime: &ContainerdRuntime) -> anyhow::Result<String> {
    let mut last = None;
    for _ in 0..30 {
        match runtime.version().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                tracing::warn!("{e}");
                last = Some(e);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(anyhow::anyhow!(
        "{}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
    .context("containerd did not answer for 30s; check --containerd-socket")
}

/// `driver` if `driver log-driver --check` answers as this version's log driver does (a
/// stale or foreign binary would lose every container's output), else `None` with a
/// warning: containers then log through the shim's raw file IO.
async fn check_log_driver(driver: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    let Some(driver) = driver else {
        tracing::warn!("no rkubelet binary to run as the container log driver; logs will have no timestamps");
        return None;
    };
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(driver)
            .args([rkube_node_runtime::log_driver::SUBCOMMAND, "--check"])
            .output(),
    )
    .await;
    match output {
        Ok(Ok(o))
            if o.status.success()
                && String::from_utf8_lossy(&o.stdout).trim()
                    == rkube_node_runtime::log_driver::CHECK_OUTPUT =>
        {
            Some(driver.to_path_buf())
        }
        other => {
            tracing::warn!(
                driver = %driver.display(),
                "the container log driver does not answer `log-driver --check` ({other:?}); logs will have no timestamps"
            );
            None
        }
    }
}
