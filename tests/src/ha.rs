//! A highly available control plane for fault tests, every part a real process so that a
//! fault is a real `kill -9`:
//!
//! ```text
//!  cluster namespace
//!    etcd member-0, member-1, member-2   own data directories, peer and client TLS
//!    rkube-apiserver x N                 --storage-backend etcd, 0.0.0.0:PORT each
//!    rkube-scheduler x N                 --leader-elect, every apiserver in --apiserver
//!    rkube-controller-manager x N        the same
//!    registry, the node's kubelet        (as in the usual harness)
//!        |
//!    node namespace 0: containerd, pods
//! ```
//!
//! The daemons are the binaries cargo built (`cargo build --bins`, which `make test`
//! does), started through their `main` and so their `run`, each with its own log. They
//! are supervised as systemd runs them (`Restart=always`, `RestartSec=1`): one that
//! exits or is killed is started again a second later with the same flags, on the same
//! port and data. etcd members are not: a test takes them away and brings them back
//! itself ([`rkube_testing::etcd::EtcdCluster`]).

use crate::{generate_pki, make_lan, make_node, node_ready, ClusterNode, ClusterOptions, LAN_GATEWAY};
use anyhow::{bail, Context};
use rkube_client::{Api, Client, ClientConfig};
use rkube_kubelet::testing::TestRegistry;
use rkube_testing::etcd::EtcdCluster;
use rkube_testing::eventually;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a supervised daemon stays down after it exited, as `RestartSec=1`.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

/// A daemon binary in its own process, started again whenever it ends (see the module
/// documentation). Dropped, its process is killed.
pub struct Supervised {
    pub name: String,
    /// Its health and metrics endpoint, if it has one.
    pub health: Option<SocketAddr>,
    log: PathBuf,
    /// The running process's id, 0 between two runs.
    pid: Arc<AtomicU32>,
    /// How many times it was started.
    starts: Arc<AtomicU32>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Supervised {
    /// Starts `bin ARGS...` with stdout and stderr appended to `log`.
    pub fn start(
        name: &str,
        bin: &Path,
        args: Vec<OsString>,
        log: PathBuf,
        health: Option<SocketAddr>,
    ) -> Supervised {
        let pid = Arc::new(AtomicU32::new(0));
        let starts = Arc::new(AtomicU32::new(0));
        let (stop, mut stopped) = watch::channel(false);
        let (bin, log_file, task_pid, task_starts) =
            (bin.to_path_buf(), log.clone(), pid.clone(), starts.clone());
        let task = tokio::spawn(async move {
            loop {
                let out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_file);
                let child = out.and_then(|out| {
                    tokio::process::Command::new(&bin)
                        .args(&args)
                        .env(
                            "RUST_LOG",
                            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                        )
                        .stdin(std::process::Stdio::null())
                        .stdout(out.try_clone()?)
                        .stderr(out)
                        .kill_on_drop(true)
                        .spawn()
                });
                match child {
                    Ok(mut child) => {
                        task_pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
                        task_starts.fetch_add(1, Ordering::SeqCst);
                        tokio::select! {
                            _ = child.wait() => {}
                            _ = until_stopped(&mut stopped) => {
                                // SIGTERM, as systemctl stop, then SIGKILL after 10 s
                                if let Some(id) = child.id() {
                                    signal(id, nix::sys::signal::Signal::SIGTERM);
                                }
                                if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                                    let _ = child.kill().await;
                                }
                                task_pid.store(0, Ordering::SeqCst);
                                return;
                            }
                        }
                        task_pid.store(0, Ordering::SeqCst);
                    }
                    Err(e) => {
                        eprintln!("cannot start {}: {e}", bin.display());
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(RESTART_DELAY) => {}
                    _ = until_stopped(&mut stopped) => return,
                }
            }
        });
        Supervised {
            name: name.to_string(),
            health,
            log,
            pid,
            starts,
            stop,
            task: Some(task),
        }
    }

    /// `kill -9` of the running process (the supervisor starts it again); false when
    /// none was running.
    pub fn kill9(&self) -> bool {
        match self.pid.load(Ordering::SeqCst) {
            0 => false,
            pid => signal(pid, nix::sys::signal::Signal::SIGKILL),
        }
    }

    /// How many times the process was started.
    pub fn starts(&self) -> u32 {
        self.starts.load(Ordering::SeqCst)
    }

    /// SIGTERM, and waits until it exited (SIGKILL after 10 s); it is not started again.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Its log's last `lines` lines.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Its `/metrics` text (it must have a health endpoint).
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let addr = self
            .health
            .with_context(|| format!("{} has no health endpoint", self.name))?;
        http_get_local(addr, "/metrics").await
    }

    /// Whether it leads: its `leader_election_master_status` is 1.
    pub async fn leads(&self) -> bool {
        self.metrics().await.is_ok_and(|m| {
            m.lines()
                .any(|l| l.starts_with("leader_election_master_status{") && l.ends_with(" 1"))
        })
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // the task's child is killed (kill_on_drop) when the aborted task drops it
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let pid @ 1.. = self.pid.load(Ordering::SeqCst) {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Resolves once the supervisor is told to stop (the watch's guard is not held across
/// an await: it is not Send).
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).is_ok()
}

/// One plain HTTP GET on this namespace's loopback; the body of a 200 answer.
async fn http_get_local(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
            .await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .with_context(|| format!("GET http://{addr}{path}: no answer within 2 s"))??;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET http://{addr}{path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// A binary of this workspace that cargo built next to the tests (`target/debug/NAME`).
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("locating the target directory")?;
    let candidate = dir.join(name);
    if candidate.exists() {
        return Ok(candidate);
    }
    bail!(
        "{name} is not built at {}: run `cargo build --bins` first (`make test` builds every binary)",
        candidate.display()
    )
}

/// `urls` comma-separated, starting with the one at `first`.
fn rotated(urls: &[String], first: usize) -> String {
    let n = urls.len();
    (0..n)
        .map(|k| urls[(first + k) % n].clone())
        .collect::<Vec<_>>()
        .join(",")
}

/// The shape of an [`HaCluster`].
#[derive(Clone, Debug)]
pub struct HaOptions {
    pub etcd_members: usize,
    pub apiservers: usize,
    pub schedulers: usize,
    pub controller_managers: usize,
    /// Leader-election lease of the schedulers and controller-managers (renew deadline
    /// two thirds of it, retry a sixth), short so that tests see takeovers quickly.
    pub lease_duration: Duration,
}

impl Default for HaOptions {
    fn default() -> Self {
        HaOptions {
            etcd_members: 3,
            apiservers: 3,
            schedulers: 2,
            controller_managers: 2,
            lease_duration: Duration::from_secs(3),
        }
    }
}

/// A running highly available cluster with one node. See the module documentation.
pub struct HaCluster {
    /// The cluster namespace.
    pub netns: PathBuf,
    /// The PKI, the daemons' data directories and logs.
    dir: tempfile::TempDir,
    pub pki: PathBuf,
    pub etcd: EtcdCluster,
    pub apiservers: Vec<Supervised>,
    /// `https://127.0.0.1:PORT` of each apiserver, in order.
    pub apiserver_urls: Vec<String>,
    pub schedulers: Vec<Supervised>,
    pub controller_managers: Vec<Supervised>,
    pub registry: TestRegistry,
    /// The busybox image in the registry.
    pub image: String,
    pub node: ClusterNode,
}

impl HaCluster {
    /// Starts everything inside the cluster namespace at `netns` (which the calling
    /// runtime's threads joined) and waits until the node is Ready.
    pub async fn start(netns: PathBuf, options: HaOptions) -> anyhow::Result<HaCluster> {
        let [apiserver, scheduler, controller_manager] =
            ["rkube-apiserver", "rkube-scheduler", "rkube-controller-manager"].map(workspace_binary);
        let (apiserver, scheduler, controller_manager) = (apiserver?, scheduler?, controller_manager?);
        make_lan(&netns)?;
        let registry = TestRegistry::start().await?;
        let (image, _) = registry.push_busybox("rkube/busybox").await?;
        let dir = tempfile::tempdir()?;
        let pki = dir.path().join("pki");
        generate_pki(&pki, &[LAN_GATEWAY.to_string()], &["node-0".to_string()])?;
        let etcd = EtcdCluster::start_tls(options.etcd_members).await?;

        let mut ports =
            rkube_testing::free_ports(options.apiservers + options.schedulers + options.controller_managers)?;
        let mut apiservers = Vec::new();
        let mut apiserver_urls = Vec::new();
        for i in 0..options.apiservers {
            let port = ports.pop().context("a port per daemon")?;
            let data = dir.path().join(format!("apiserver-{i}"));
            let args: Vec<OsString> = vec![
                "--cert-dir".into(),
                pki.clone().into(),
                "--listen".into(),
                format!("0.0.0.0:{port}").into(),
                // where the node reaches it: the kubernetes Service's endpoints
                "--advertise-address".into(),
                LAN_GATEWAY.to_string().into(),
                "--health-addr".into(),
                "off".into(),
                "--data-dir".into(),
                data.into(),
                "--storage-backend".into(),
                "etcd".into(),
                "--etcd-servers".into(),
                etcd.endpoints().join(",").into(),
                "--etcd-cafile".into(),
                etcd.pki.ca.clone().into(),
                "--etcd-certfile".into(),
                etcd.pki.client_cert.clone().into(),
                "--etcd-keyfile".into(),
                etcd.pki.client_key.clone().into(),
            ];
            let log = dir.path().join(format!("apiserver-{i}.log"));
            apiservers.push(Supervised::start(
                &format!("apiserver-{i}"),
                &apiserver,
                args,
                log,
                None,
            ));
            apiserver_urls.push(format!("https://127.0.0.1:{port}"));
        }
        // the node's kubelet runs in this process as in the usual harness, given every apiserver
        let node = make_node(
            &ClusterOptions {
                proxy: None,
                ..ClusterOptions::default()
            },
            0,
            &rotated(&apiserver_urls, 0),
            &apiserver_urls[0],
            &pki,
        )
        .await?;
        let mut cluster = HaCluster {
            netns,
            dir,
            pki,
            etcd,
            apiservers,
            apiserver_urls,
            schedulers: Vec::new(),
            controller_managers: Vec::new(),
            registry,
            image,
            node,
        };
        for i in 0..options.apiservers {
            cluster.wait_apiserver_ready(i).await?;
        }

        let lease = options.lease_duration;
        let election = |flags: &mut Vec<OsString>| {
            for (flag, value) in [
                ("--leader-elect-lease-duration", lease),
                ("--leader-elect-renew-deadline", lease * 2 / 3),
                ("--leader-elect-retry-period", lease / 6),
            ] {
                flags.push(flag.into());
                flags.push(format!("{}ms", value.as_millis()).into());
            }
        };
        for (bin, stem, count, kind) in [
            (&scheduler, "kube-scheduler", options.schedulers, "scheduler"),
            (
                &controller_manager,
                "kube-controller-manager",
                options.controller_managers,
                "controller-manager",
            ),
        ] {
            for i in 0..count {
                let health = SocketAddr::from(([127, 0, 0, 1], ports.pop().context("a port per daemon")?));
                let mut args: Vec<OsString> = vec![
                    "--apiserver".into(),
                    cluster.servers(i).into(),
                    "--kubeconfig".into(),
                    cluster.pki.join(format!("{stem}.conf")).into(),
                    "--health-addr".into(),
                    health.to_string().into(),
                ];
                election(&mut args);
                let name = format!("{kind}-{i}");
                let log = cluster.dir.path().join(format!("{name}.log"));
                let daemon = Supervised::start(&name, bin, args, log, Some(health));
                match kind {
                    "scheduler" => cluster.schedulers.push(daemon),
                    _ => cluster.controller_managers.push(daemon),
                }
            }
        }

        cluster.node.start_kubelet().await?;
        let nodes = Api::<rkube_api::core::v1::Node>::all(cluster.client(0)?);
        eventually("node-0 to be Ready", Duration::from_secs(90), || async {
            let node = nodes.get("node-0").await?;
            anyhow::ensure!(node_ready(&node) == Some(true), "node-0 is not Ready yet");
            Ok(true)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", cluster.logs(20)))?;
        Ok(cluster)
    }

    /// Waits (60 s at most) until apiserver `i` answers.
    pub async fn wait_apiserver_ready(&self, i: usize) -> anyhow::Result<()> {
        let client = self.client_of(&self.apiserver_urls[i])?;
        eventually(
            &format!("{} to answer", self.apiservers[i].name),
            Duration::from_secs(60),
            || async { client.version().await.map(|_| true).map_err(anyhow::Error::from) },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.apiservers[i].log_tail(30)))
    }

    /// Every apiserver's URL, comma-separated, starting with apiserver `first`: what a
    /// client that talks to `first` until it fails is given.
    pub fn servers(&self, first: usize) -> String {
        rotated(&self.apiserver_urls, first)
    }

    /// An administrator's client of every apiserver, talking to apiserver `first` first.
    pub fn client(&self, first: usize) -> anyhow::Result<Client> {
        self.client_of(&self.servers(first))
    }

    fn client_of(&self, servers: &str) -> anyhow::Result<Client> {
        let mut config = ClientConfig::load(&self.pki.join("admin.conf"))?;
        config.server = servers.to_string();
        Ok(Client::from_config(&config)?)
    }

    /// The index of the daemon among `daemons` that leads, if one does now.
    pub async fn leader(daemons: &[Supervised]) -> Option<usize> {
        for (i, d) in daemons.iter().enumerate() {
            if d.leads().await {
                return Some(i);
            }
        }
        None
    }

    /// The last `lines` lines of every daemon's and etcd member's log, for failure reports.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for d in self
            .apiservers
            .iter()
            .chain(&self.schedulers)
            .chain(&self.controller_managers)
        {
            out += &format!(
                "--- {} (started {} times)\n{}\n",
                d.name,
                d.starts(),
                d.log_tail(lines)
            );
        }
        for m in &self.etcd.members {
            out += &format!("--- etcd {}\n{}\n", m.name, m.log_tail());
        }
        out
    }

    /// Stops the kubelet, then every daemon (SIGTERM) and etcd.
    pub async fn stop(mut self) {
        self.node.stop_kubelet().await;
        for d in self
            .controller_managers
            .drain(..)
            .chain(self.schedulers.drain(..))
            .chain(self.apiservers.drain(..))
        {
            d.stop().await;
        }
        for m in &mut self.etcd.members {
            m.kill();
        }
    }
}
