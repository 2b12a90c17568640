//! The end-to-end harness: a whole rkube cluster, real daemons on real containerd, runc,
//! CNI and nftables, inside network namespaces the test creates.
//!
//! ```text
//!  cluster namespace ("the host", where the test body runs)
//!    apiserver (0.0.0.0:PORT), scheduler, controller-manager, cloud-controller-manager
//!    (optional), the image registry on 127.0.0.1, each kubelet's loops,
//!    bridge lan0 172.30.0.1/24, forwarding on, routes to every node's podCIDR
//!        |                |
//!    node namespace 0   node namespace 1 ...
//!      eth0 172.30.0.10   eth0 172.30.0.11       (default route via 172.30.0.1)
//!      containerd, the CNI bridge of its pods, the kubelet's server socket,
//!      rkube-proxy (a runtime whose threads joined the namespace)
//! ```
//!
//! No namespace here has a route to the outside, so no packet can leave the machine even
//! when a rule is wrong. Each cluster has its own namespaces, containerd roots and sockets,
//! so tests run side by side; everything is removed when the cluster is dropped, also when
//! the test panics.
//!
//! A test runs its body with [`run`], which creates the cluster namespace and a tokio
//! runtime whose threads joined it, then calls [`TestCluster::start`] inside (or
//! [`ha::HaCluster::start`] for a highly available control plane of real processes on
//! etcd).
//!
//! Every daemon runs as users run it: the apiserver with the flags of its secure default
//! (TLS, client certificates, RBAC, node restriction, an audit log) on a PKI the real
//! `rkubectl certs generate` made, and each component, kubelet and the test itself with
//! its own client certificate; the kubelets serve TLS too.

use anyhow::{bail, Context};
use rkube_client::{Api, Client};
use rkube_kubelet::testing::{TestNode, TestRegistry};
use rkube_testing::{eventually, Daemon, TestApiServer};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::sync::oneshot;

pub use rkube_kubelet::testing::{http_get_in_netns, skip_reason};

pub mod ha;

/// The lan bridge's address in the cluster namespace: how node namespaces reach the
/// apiserver and each other.
pub const LAN_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);

/// Where LoadBalancer addresses come from (the local provider's pool); the cluster
/// namespace routes it to the first node.
pub const LB_POOL: &str = "172.30.1.0/24";

/// The cluster PKI made by the real `rkubectl certs generate` in `dir`: the CA, the
/// apiserver's serving certificate (for `sans` besides localhost) and a certificate and
/// client config (`STEM.conf`) for admin, every component and each of `nodes`
/// (`node-NAME.conf`).
pub fn generate_pki(dir: &Path, sans: &[String], nodes: &[String]) -> anyhow::Result<()> {
    let mut cmd = Command::new(rkubectl_binary()?);
    cmd.args(["certs", "generate", "--dir"]).arg(dir);
    for san in sans {
        cmd.args(["--apiserver-san", san]);
    }
    for node in nodes {
        cmd.args(["--node", node]);
    }
    let out = cmd.output().context("running rkubectl certs generate")?;
    if !out.status.success() {
        bail!(
            "rkubectl certs generate failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The apiserver as users run it, secure by default (`--cert-dir`) on the PKI in `pki`
/// (see [`generate_pki`]), with an audit log, serving on `listen`.
pub async fn start_apiserver(pki: &Path, listen: SocketAddr) -> anyhow::Result<TestApiServer> {
    TestApiServer::builder()
        .cert_dir(pki)
        .listen(listen)
        // where the nodes reach it: the kubernetes Service's endpoints
        .flags(["--advertise-address".to_string(), LAN_GATEWAY.to_string()])
        .start()
        .await
}

/// Address of node `i` on the lan.
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 30, 0, 10 + i as u8)
}

fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace this harness created; removed on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(prefix: &str) -> anyhow::Result<Netns> {
        let name = format!("{prefix}{}-{}", std::process::id(), rand_suffix());
        sh(&["ip", "netns", "add", &name]).context("creating a network namespace (needs root)")?;
        let ns = Netns { name };
        sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{}", nanos & 0xffff, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Writes a sysctl inside the namespace at `netns`.
fn sysctl_in(netns: &Path, key: &str, value: &str) -> anyhow::Result<()> {
    sh(&[
        "nsenter",
        &format!("--net={}", netns.display()),
        "sysctl",
        "-qw",
        &format!("{key}={value}"),
    ])
    .map(|_| ())
}

/// Runs `body` on a fresh multi-threaded tokio runtime whose threads all joined a new
/// network namespace (the cluster namespace), which is removed afterwards. Prints a skip
/// line and returns Ok when the machine cannot run containers (not root, no containerd).
pub fn run<F, Fut>(body: F) -> anyhow::Result<()>
where
    F: FnOnce(PathBuf) -> Fut + Send,
    Fut: Future<Output = anyhow::Result<()>>,
{
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return Ok(());
    }
    let netns = Netns::create("rkc")?;
    let path = netns.path();
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let result = std::thread::scope(|s| {
        s.spawn(move || -> anyhow::Result<()> {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("joining the cluster namespace")?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()?;
            let result = runtime.block_on(body(path));
            // containers' shims and registries are children; give drops time to run
            runtime.shutdown_timeout(Duration::from_secs(10));
            result
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    drop(netns);
    result
}

/// How to build a cluster.
#[derive(Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    /// None: no rkube-proxy.
    pub proxy: Option<rkube_proxy::Mode>,
    /// Controller-manager loops (`*` for all); empty: no controller-manager.
    pub controllers: Vec<String>,
    pub scheduler: bool,
    /// Routes to each node's podCIDR, as the cloud-controller-manager's route controller
    /// would program them; false when the test runs that controller itself.
    pub static_routes: bool,
    /// Changes to each kubelet's configuration (node index, config).
    pub kubelet: fn(usize, &mut rkube_kubelet::Config),
    /// Changes to the controller-manager's configuration.
    pub controller_manager: fn(&mut rkube_controller_manager::Config),
    /// Run the cloud-controller-manager with the `local` provider over a cloud-config
    /// listing every node ([`TestCluster::write_cloud_config`]); kubelets then register
    /// with `--cloud-provider=external` and routes come from its route controller.
    pub cloud: bool,
    /// Each node's proxy serves the cluster DNS at [`CLUSTER_DNS`] and the kubelets
    /// give it to pods (`clusterDNS`); names outside the cluster go nowhere.
    pub dns: bool,
}

/// The node-local cluster DNS address of clusters with `dns`.
pub const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(169, 254, 20, 10);

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 1,
            proxy: Some(rkube_proxy::Mode::Nftables),
            controllers: vec!["*".into()],
            scheduler: true,
            static_routes: true,
            kubelet: |_, _| {},
            controller_manager: |_| {},
            cloud: false,
            dns: false,
        }
    }
}

/// A daemon (rkube-proxy, rkube-ingress) on a runtime whose threads joined a node's
/// namespace, as it runs on that machine; stopped (its shutdown future resolves) on
/// `stop` or drop.
pub struct NodeDaemon {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl NodeDaemon {
    /// Runs `run(shutdown)` on a thread named `name` inside the namespace at `netns`.
    pub fn start<F, Fut>(netns: &Path, name: String, run: F) -> anyhow::Result<NodeDaemon>
    where
        F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let file = std::fs::File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || -> anyhow::Result<()> {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                let result = runtime.block_on(run(Box::pin(async {
                    let _ = stopped.await;
                })));
                // said at once: a daemon that died shows in the test's output, not only
                // when the test stops it
                if let Err(e) = &result {
                    eprintln!(
                        "{}: ended with an error: {e:#}",
                        std::thread::current().name().unwrap_or("daemon")
                    );
                }
                result
            })?;
        Ok(NodeDaemon {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => Ok(()),
        }
    }
}

impl Drop for NodeDaemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// One node: its namespace and containerd, its kubelet, its proxy.
pub struct ClusterNode {
    pub name: String,
    pub ip: Ipv4Addr,
    pub containerd: TestNode,
    pub kubelet_config: rkube_kubelet::Config,
    kubelet: Option<rkube_kubelet::RunningKubelet>,
    proxy_config: Option<rkube_proxy::Config>,
    proxy: Option<NodeDaemon>,
}

impl ClusterNode {
    /// The node's network namespace.
    pub fn netns(&self) -> &Path {
        &self.containerd.netns_path
    }

    pub async fn start_kubelet(&mut self) -> anyhow::Result<()> {
        if self.kubelet.is_none() {
            self.kubelet = Some(
                rkube_kubelet::start(self.kubelet_config.clone())
                    .await
                    .with_context(|| format!("starting the kubelet of {}", self.name))?,
            );
        }
        Ok(())
    }

    /// Stops the kubelet; its containers keep running, as with the real daemon.
    pub async fn stop_kubelet(&mut self) {
        if let Some(k) = self.kubelet.take() {
            k.stop().await;
        }
    }

    pub fn start_proxy(&mut self) -> anyhow::Result<()> {
        if let (None, Some(config)) = (&self.proxy, &self.proxy_config) {
            let config = config.clone();
            let name = format!("proxy-{}", config.node_name);
            self.proxy = Some(NodeDaemon::start(self.netns(), name, |stop| {
                rkube_proxy::run(config, stop)
            })?);
        }
        Ok(())
    }

    pub fn stop_proxy(&mut self) -> anyhow::Result<()> {
        match self.proxy.take() {
            Some(mut p) => p.stop(),
            None => Ok(()),
        }
    }

    /// The node goes dark: kubelet, proxy and containerd stop (containers keep running in
    /// their shims, as on a machine that lost its network).
    pub async fn power_off(&mut self) -> anyhow::Result<()> {
        self.stop_kubelet().await;
        self.stop_proxy()?;
        self.containerd.stop_containerd();
        Ok(())
    }

    /// One HTTP GET from the node's namespace (as a process on that machine would make).
    pub async fn http_get(&self, addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
        let netns = self.netns().to_path_buf();
        let path = path.to_string();
        tokio::task::spawn_blocking(move || http_get_in_netns(&netns, addr, &path, Duration::from_secs(2)))
            .await?
    }
}

/// The lan bridge in the cluster namespace at `netns` (the one the calling thread joined),
/// with forwarding on: what node namespaces hang off.
pub fn make_lan(netns: &Path) -> anyhow::Result<()> {
    sh(&["ip", "link", "add", "lan0", "type", "bridge"])?;
    sh(&["ip", "addr", "add", &format!("{LAN_GATEWAY}/24"), "dev", "lan0"])?;
    sh(&["ip", "link", "set", "lan0", "up"])?;
    sysctl_in(netns, "net.ipv4.ip_forward", "1")
}

/// Node `i` of a cluster built as `options` say: its namespace on the lan with its own
/// containerd, and the configuration of its kubelet (talking to `url`, which may name
/// several apiservers) and proxy (to `lan_url`), with the identities of the PKI in `pki`.
/// Nothing of the node's daemons runs yet.
pub async fn make_node(
    options: &ClusterOptions,
    i: usize,
    url: &str,
    lan_url: &str,
    pki: &Path,
) -> anyhow::Result<ClusterNode> {
    let containerd = TestNode::start().await?;
    let ip = node_ip(i);
    let ns = containerd.netns_name.clone();
    let host_if = format!("vn{i}");
    sh(&[
        "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ])?;
    sh(&["ip", "link", "set", &host_if, "master", "lan0", "up"])?;
    sh(&["ip", "-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
    sh(&[
        "ip",
        "-n",
        &ns,
        "route",
        "add",
        "default",
        "via",
        &LAN_GATEWAY.to_string(),
    ])?;
    sysctl_in(&containerd.netns_path, "net.ipv4.ip_forward", "1")?;

    let name = format!("node-{i}");
    // without the controller-manager's node-ipam loop, the kubelet's own fallback
    let ipam = options.controllers.iter().any(|c| c == "*" || c == "node-ipam");
    let pod_cidr = (!ipam).then(|| format!("10.244.{}.0/24", 100 + i));
    let mut k = rkube_kubelet::Config::for_test_node(&containerd, url, &name, ip.into(), pod_cidr.as_deref());
    k.kubeconfig = Some(pki.join(format!("node-{name}.conf")));
    k.server_netns = Some(containerd.netns_path.clone());
    k.node_status_update_frequency = Duration::from_secs(1);
    k.crashloop_backoff_base = Duration::from_millis(500);
    k.crashloop_backoff_max = Duration::from_secs(5);
    if options.cloud {
        k.cloud_provider = "external".into();
    }
    if options.dns {
        k.cluster_dns = vec![CLUSTER_DNS.into()];
    }
    (options.kubelet)(i, &mut k);

    let proxy_config = options.proxy.map(|mode| {
        let mut p = rkube_proxy::Config::new(lan_url, name.clone());
        p.kubeconfig = Some(pki.join("kube-proxy.conf"));
        p.mode = mode;
        if options.dns {
            let mut dns = rkube_dns::Config::new();
            dns.listen.set_ip(CLUSTER_DNS.into());
            // nothing listens there: forwarded names fail inside the node
            dns.upstreams = vec![SocketAddr::from(([127, 0, 0, 1], 53))];
            p.dns = Some(dns);
        }
        p
    });
    Ok(ClusterNode {
        name,
        ip,
        containerd,
        kubelet_config: k,
        kubelet: None,
        proxy_config,
        proxy: None,
    })
}

/// A running cluster. See the module documentation.
pub struct TestCluster {
    pub options: ClusterOptions,
    /// The cluster namespace.
    pub netns: PathBuf,
    /// Holds `pki/` and the cloud-config; the apiserver has its own directory.
    dir: tempfile::TempDir,
    /// The cluster PKI and every identity's client config (see [`generate_pki`]).
    pub pki: PathBuf,
    api: TestApiServer,
    api_port: u16,
    scheduler: Option<Daemon>,
    controller_manager: Option<Daemon>,
    pub registry: TestRegistry,
    /// The project-built busybox image in the registry (`127.0.0.1:PORT/rkube/busybox:latest`).
    pub image: String,
    pub nodes: Vec<ClusterNode>,
    routes: Vec<String>,
    cloud_controller_manager: Option<Daemon>,
    /// The local provider's cloud-config file (when `options.cloud`).
    pub cloud_config: PathBuf,
}

impl TestCluster {
    /// Starts everything `options` asks for inside the cluster namespace at `netns` (the
    /// namespace the calling runtime's threads joined), and waits until every node is Ready.
    pub async fn start(netns: PathBuf, options: ClusterOptions) -> anyhow::Result<TestCluster> {
        make_lan(&netns)?;

        let registry = TestRegistry::start().await?;
        let (image, _) = registry.push_busybox("rkube/busybox").await?;

        let dir = tempfile::tempdir()?;
        let pki = dir.path().join("pki");
        let nodes: Vec<String> = (0..options.nodes).map(|i| format!("node-{i}")).collect();
        generate_pki(&pki, &[LAN_GATEWAY.to_string()], &nodes)?;
        // every address: the node namespaces reach it through the lan bridge
        let api = start_apiserver(&pki, "0.0.0.0:0".parse()?).await?;
        let api_port = api.addr().port();

        let mut cluster = TestCluster {
            options: options.clone(),
            netns,
            dir,
            pki,
            api,
            api_port,
            scheduler: None,
            controller_manager: None,
            registry,
            image,
            nodes: Vec::new(),
            routes: Vec::new(),
            cloud_controller_manager: None,
            cloud_config: PathBuf::new(),
        };
        cluster.cloud_config = cluster.dir.path().join("cloud-config.yaml");
        if options.scheduler {
            cluster.start_scheduler();
        }
        if !options.controllers.is_empty() {
            cluster.start_controller_manager();
        }
        for i in 0..options.nodes {
            let node = cluster.make_node(i).await?;
            cluster.nodes.push(node);
        }
        if options.cloud {
            // LoadBalancer addresses reach the first node's proxy, as a router would send them
            sh(&["ip", "route", "replace", LB_POOL, "via", &node_ip(0).to_string()])?;
            let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
            cluster.write_cloud_config(&names)?;
            cluster.start_cloud_controller_manager();
        }
        for node in &mut cluster.nodes {
            node.start_kubelet().await?;
            node.start_proxy()?;
        }
        cluster.wait_nodes_ready(Duration::from_secs(60)).await?;
        if options.static_routes && !options.cloud {
            cluster.program_routes().await?;
        }
        Ok(cluster)
    }

    async fn make_node(&self, i: usize) -> anyhow::Result<ClusterNode> {
        make_node(&self.options, i, &self.url(), &self.lan_url(), &self.pki).await
    }

    /// The apiserver as seen from the cluster namespace.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// The apiserver as seen from the node namespaces.
    pub fn lan_url(&self) -> String {
        format!("https://{LAN_GATEWAY}:{}", self.api_port)
    }

    /// The client config file of an identity (`admin`, `kube-scheduler`,
    /// `node-node-0`, ...).
    pub fn kubeconfig(&self, stem: &str) -> PathBuf {
        self.pki.join(format!("{stem}.conf"))
    }

    /// A client with the administrator's certificate (group system:masters).
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(self.api.client())
    }

    /// A client that presents a bearer token (a ServiceAccount's, read out of a pod).
    pub fn client_with_token(&self, token: &str) -> anyhow::Result<Client> {
        self.api.client_with_token(token)
    }

    /// The audit log's events, one JSON object per line.
    pub fn audit_log(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.api.dir().join("audit.log"))?)
    }

    pub fn api<K: rkube_api::Resource>(&self, namespace: &str) -> anyhow::Result<Api<K>> {
        Ok(Api::namespaced(self.client()?, namespace))
    }

    pub fn start_scheduler(&mut self) {
        if self.scheduler.is_none() {
            let mut config = rkube_scheduler::Config::new(self.url());
            config.kubeconfig = Some(self.kubeconfig("kube-scheduler"));
            self.scheduler = Some(Daemon::spawn(|stop| rkube_scheduler::run(config, stop)));
        }
    }

    /// Ends the scheduler as `kill -9` would: its task is aborted, work in flight is cut off.
    pub async fn kill_scheduler(&mut self) {
        if let Some(d) = self.scheduler.take() {
            d.abort().await;
        }
    }

    pub async fn stop_scheduler(&mut self) -> anyhow::Result<()> {
        match self.scheduler.take() {
            Some(d) => d.stop().await,
            None => Ok(()),
        }
    }

    /// The controller-manager with the option's loops and periods short enough for tests
    /// (node grace 4 s, eviction after 2 s, autoscaler every 2 s with a 10 s window).
    pub fn start_controller_manager(&mut self) {
        if self.controller_manager.is_none() {
            let mut config = rkube_controller_manager::Config::new(self.url());
            config.kubeconfig = Some(self.kubeconfig("kube-controller-manager"));
            config.controllers = self.options.controllers.clone();
            config.node_monitor_grace_period = Duration::from_secs(4);
            config.node_monitor_period = Duration::from_secs(1);
            config.default_toleration_seconds = 2;
            config.hpa_sync_period = Duration::from_secs(2);
            config.hpa_downscale_stabilization = Duration::from_secs(10);
            (self.options.controller_manager)(&mut config);
            self.controller_manager = Some(Daemon::spawn(|stop| rkube_controller_manager::run(config, stop)));
        }
    }

    /// Ends the controller-manager as `kill -9` would (see [`TestCluster::kill_scheduler`]).
    pub async fn kill_controller_manager(&mut self) {
        if let Some(d) = self.controller_manager.take() {
            d.abort().await;
        }
    }

    pub async fn stop_controller_manager(&mut self) -> anyhow::Result<()> {
        match self.controller_manager.take() {
            Some(d) => d.stop().await,
            None => Ok(()),
        }
    }

    /// Writes the local provider's cloud-config: the named nodes as machines (their lan
    /// addresses, zones `zone-a`/`zone-b` alternating, instance type `netns`), the
    /// LoadBalancer pool, routes on. The manager notices the change by itself.
    pub fn write_cloud_config(&self, machines: &[String]) -> anyhow::Result<()> {
        let mut yaml = String::from("machines:\n");
        for name in machines {
            let i: usize = name.trim_start_matches("node-").parse()?;
            yaml += &format!(
                "  - name: {name}\n    addresses: [{{type: InternalIP, address: {ip}}}]\n    zone: zone-{zone}\n    region: test\n    instanceType: netns\n",
                ip = node_ip(i),
                zone = if i.is_multiple_of(2) { "a" } else { "b" },
            );
        }
        yaml += &format!("loadBalancerPool: {LB_POOL}\nroutes:\n  enabled: true\n");
        let tmp = self.cloud_config.with_extension("tmp");
        std::fs::write(&tmp, yaml)?;
        std::fs::rename(&tmp, &self.cloud_config)?;
        Ok(())
    }

    /// The cloud-controller-manager (local provider) with periods short enough for tests.
    pub fn start_cloud_controller_manager(&mut self) {
        if self.cloud_controller_manager.is_none() {
            let mut config = rkube_cloud_controller_manager::Config::new(self.url());
            config.kubeconfig = Some(self.kubeconfig("cloud-controller-manager"));
            config.cloud_provider = "local".into();
            config.cloud_config = Some(self.cloud_config.clone());
            config.node_monitor_period = Duration::from_secs(1);
            config.route_reconciliation_period = Duration::from_secs(1);
            self.cloud_controller_manager = Some(Daemon::spawn(|stop| {
                rkube_cloud_controller_manager::run(config, stop)
            }));
        }
    }

    /// Ends the cloud-controller-manager as `kill -9` would (see
    /// [`TestCluster::kill_scheduler`]).
    pub async fn kill_cloud_controller_manager(&mut self) {
        if let Some(d) = self.cloud_controller_manager.take() {
            d.abort().await;
        }
    }

    pub async fn stop_cloud_controller_manager(&mut self) -> anyhow::Result<()> {
        match self.cloud_controller_manager.take() {
            Some(d) => d.stop().await,
            None => Ok(()),
        }
    }

    /// Stops the apiserver and starts it again on the same store and port.
    pub async fn restart_apiserver(&mut self) -> anyhow::Result<()> {
        self.api.restart().await
    }

    /// Waits until every node's Ready condition is True.
    pub async fn wait_nodes_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let nodes = Api::<rkube_api::core::v1::Node>::all(self.client()?);
        let want = self.nodes.len();
        eventually(&format!("{want} nodes to be Ready"), timeout, || async {
            let list = nodes.list(&Default::default()).await?;
            let ready = list.items.iter().filter(|n| node_ready(n) == Some(true)).count();
            anyhow::ensure!(ready == want, "{ready} of {want} nodes are Ready");
            Ok(true)
        })
        .await
    }

    /// Adds, in the cluster namespace, a route to each node's podCIDR through the node's
    /// address (what the cloud-controller-manager's route controller does for real).
    pub async fn program_routes(&mut self) -> anyhow::Result<()> {
        let nodes = Api::<rkube_api::core::v1::Node>::all(self.client()?);
        for node in &self.nodes {
            let name = node.name.clone();
            let cidr = eventually(
                &format!("{name} to get a podCIDR"),
                Duration::from_secs(30),
                || async {
                    let n = nodes.get(&name).await?;
                    let cidr = n.spec.map(|s| s.pod_cidr).unwrap_or_default();
                    Ok((!cidr.is_empty()).then_some(cidr))
                },
            )
            .await?;
            if !self.routes.contains(&cidr) {
                sh(&["ip", "route", "replace", &cidr, "via", &node.ip.to_string()])?;
                self.routes.push(cidr);
            }
        }
        Ok(())
    }

    /// One HTTP GET from the cluster namespace (a machine on the nodes' lan).
    pub async fn http_get(&self, addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
        let netns = self.netns.clone();
        let path = path.to_string();
        tokio::task::spawn_blocking(move || http_get_in_netns(&netns, addr, &path, Duration::from_secs(2)))
            .await?
    }

    /// What a human would look at when a test fails: pods, endpoints, each node's rules and
    /// routes.
    pub async fn diagnostics(&self) -> String {
        let mut out = String::new();
        for args in [
            &["get", "pods", "-A", "-o", "wide"][..],
            &["get", "endpoints", "-A"][..],
            &["get", "svc", "-A"][..],
        ] {
            out += &format!(
                "$ rkubectl {}\n{}\n",
                args.join(" "),
                self.rkubectl(args).unwrap_or_else(|e| format!("{e:#}"))
            );
        }
        out += &format!(
            "$ ip route (cluster)\n{}\n",
            sh(&["ip", "route"]).unwrap_or_default()
        );
        for node in &self.nodes {
            let ns = node.containerd.netns_name.clone();
            for cmd in [
                &["ip", "-n", &ns, "addr"][..],
                &["ip", "-n", &ns, "route"][..],
                &[
                    "nsenter",
                    &format!("--net={}", node.netns().display()),
                    "nft",
                    "list",
                    "ruleset",
                ][..],
            ] {
                out += &format!(
                    "$ {} ({})\n{}\n",
                    cmd.join(" "),
                    node.name,
                    sh(cmd).unwrap_or_else(|e| format!("{e:#}"))
                );
            }
        }
        out
    }

    /// Applies Kubernetes YAML (one or more documents) with the real `rkubectl apply -f`.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        let mut file = tempfile::Builder::new().suffix(".yaml").tempfile()?;
        std::io::Write::write_all(&mut file, yaml.as_bytes())?;
        let path = file.path().to_string_lossy().into_owned();
        self.rkubectl(&["apply", "-f", &path])
    }

    /// Runs the real rkubectl binary against this cluster and returns its stdout; fails with
    /// its stderr when it exits non-zero.
    pub fn rkubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(rkubectl_binary()?)
            .arg("--config")
            .arg(self.kubeconfig("admin"))
            .arg("--server")
            .arg(self.url())
            .args(args)
            .output()
            .context("running rkubectl")?;
        if !out.status.success() {
            bail!(
                "rkubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops every daemon; the namespaces and containerds go when the cluster is dropped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for node in &mut self.nodes {
            node.stop_kubelet().await;
            node.stop_proxy()?;
        }
        self.stop_cloud_controller_manager().await?;
        self.stop_controller_manager().await?;
        self.stop_scheduler().await?;
        self.api.stop().await
    }
}

/// A node's Ready condition: Some(true) for "True", Some(false) otherwise, None if absent.
pub fn node_ready(node: &rkube_api::core::v1::Node) -> Option<bool> {
    node.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
        .map(|c| c.status == "True")
}

/// A pod's Ready condition is True.
pub fn pod_ready(pod: &rkube_api::core::v1::Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// The rkubectl binary cargo built for these tests (or next to the test executable).
pub fn rkubectl_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = option_env!("CARGO_BIN_EXE_rkubectl") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("locating the target directory")?;
    let candidate = dir.join("rkubectl");
    if candidate.exists() {
        return Ok(candidate);
    }
    bail!(
        "rkubectl is not built at {}: run `cargo build -p rkube-ctl` first",
        candidate.display()
    )
}
