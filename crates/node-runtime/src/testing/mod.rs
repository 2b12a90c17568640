//! End-to-end test harness (feature `test-support`): real containerd, runc, CNI plugins and
//! an OCI registry, each test with its own copies so tests run side by side.
//!
//! * [`TestNode`]: a network namespace with only loopback (no route out: nothing a test
//!   does can leave the machine), a containerd with its own root, state and sockets started
//!   inside it with `nsenter --net` (not `ip netns exec`, which remounts /sys and hides the
//!   cgroup mounts from runc), a cgroup parent and a temp directory for CNI state. Dropping it
//!   kills every container process in its cgroups, the shims and containerd, unmounts what is
//!   left under its directory and removes the namespace, the cgroups and the files.
//! * [`TestRegistry`]: Debian's `docker-registry` on a free loopback port of the host
//!   namespace (the puller runs in the test process, which lives there), optionally with
//!   htpasswd basic auth; [`TestRegistry::push_busybox`] builds the busybox image with
//!   `tests/images/build-busybox-image.sh` and pushes it with skopeo.
//!
//! Everything here panics-free returns `anyhow::Result`, so tests can use `?`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::network::{netns, CniConfig};
use crate::runtime::{ContainerdConfig, ContainerdRuntime};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why end-to-end tests cannot run here, or `None` if they can. Only a missing containerd
/// is a reason to skip; anything else missing is a failure the test reports.
pub fn skip_reason() -> Option<String> {
    if find_in_path("containerd").is_none() {
        return Some(
            "containerd is not installed (apt-get install containerd runc containernetworking-plugins)"
                .to_string(),
        );
    }
    None
}

fn find_in_path(binary: &str) -> Option<PathBuf> {
    PATH.split(':')
        .map(|d| Path::new(d).join(binary))
        .find(|p| p.is_file())
}

/// Prefix of every name a test run creates (directories, namespaces, cgroups), carrying the
/// process id so a later run can tell leftovers of a killed run from a live neighbour's.
fn owner_prefix() -> String {
    format!("rkube-test-{}-", std::process::id())
}

fn random_suffix() -> String {
    use rand::Rng as _;
    let mut rng = rand::thread_rng();
    (0..8)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.gen_range(0..36)]))
        .collect()
}

fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .env("PATH", PATH)
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it right away).
pub fn free_loopback_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// One node's worth of container infrastructure. See the module documentation.
pub struct TestNode {
    dir: tempfile::TempDir,
    /// Name under /var/run/netns of the node's network namespace.
    pub netns_name: String,
    /// `/var/run/netns/<netns_name>`.
    pub netns_path: PathBuf,
    /// containerd's gRPC socket.
    pub socket: PathBuf,
    /// Every container of this node lives below this cgroup.
    pub cgroup_parent: String,
    containerd: Option<Child>,
}

impl TestNode {
    /// Creates the namespace and starts containerd in it; returns once containerd answers.
    pub async fn start() -> anyhow::Result<Self> {
        sweep_leftovers_of_dead_runs();
        let dir = tempfile::Builder::new()
            .prefix(&owner_prefix())
            .tempdir()
            .context("creating the test directory")?;
        let netns_name = format!("{}{}", owner_prefix(), random_suffix());
        run(Command::new("ip").args(["netns", "add", &netns_name]))
            .context("creating the test network namespace (needs root)")?;
        let mut node = Self {
            socket: dir.path().join("containerd.sock"),
            dir,
            netns_path: PathBuf::from("/var/run/netns").join(&netns_name),
            netns_name,
            cgroup_parent: format!("/{}{}", owner_prefix(), random_suffix()),
            containerd: None,
        };
        run(Command::new("ip").args(["-n", &node.netns_name, "link", "set", "lo", "up"]))?;
        node.start_containerd().await?;
        Ok(node)
    }

    /// The test's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's root directory (its content store and snapshots: the image
    /// filesystem).
    pub fn containerd_root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn write_containerd_config(&self) -> anyhow::Result<PathBuf> {
        let d = self.dir.path();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
# The CRI plugin would run its own CNI setup; rkube is the CRI here.
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = self.containerd_root().display(),
            state = d.join("state").display(),
            socket = self.socket.display(),
            opt = d.join("opt").display(),
        );
        let path = d.join("containerd.toml");
        std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Starts this node's containerd (again, after [`stop_containerd`](Self::stop_containerd)).
    pub async fn start_containerd(&mut self) -> anyhow::Result<()> {
        let config = self.write_containerd_config()?;
        let log_path = self.dir.path().join("containerd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns_path.display()))
            .arg("containerd")
            .arg("--config")
            .arg(&config)
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        self.containerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let runtime = ContainerdRuntime::new(self.runtime_config());
        loop {
            match runtime.version().await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    bail!("containerd did not come up within 30s: {e}\n--- containerd log ---\n{log}");
                }
                Err(_) => {
                    if let Some(child) = self.containerd.as_mut() {
                        if let Some(status) = child.try_wait()? {
                            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                            bail!("containerd exited with {status}\n--- containerd log ---\n{log}");
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Stops containerd (SIGTERM, then SIGKILL after 5s). Shims and containers keep running,
    /// as they do in production.
    pub fn stop_containerd(&mut self) {
        if let Some(mut child) = self.containerd.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills containerd with SIGKILL, as a crash or the OOM killer would: nothing of it
    /// shuts down in order. Shims and containers keep running.
    pub fn kill_containerd(&mut self) {
        if let Some(mut child) = self.containerd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops containerd (its shims and containers keep running, as in production) and starts
    /// it again on the same root and sockets.
    pub async fn restart_containerd(&mut self) -> anyhow::Result<()> {
        self.stop_containerd();
        self.start_containerd().await
    }

    /// Runtime configuration pointing at this node's containerd, cgroups and directories.
    pub fn runtime_config(&self) -> ContainerdConfig {
        ContainerdConfig {
            socket: self.socket.clone(),
            cgroup_parent: self.cgroup_parent.clone(),
            state_dir: self.dir.path().join("kubelet"),
            ..ContainerdConfig::default()
        }
    }

    /// A fresh runtime client for this node (as a restarted kubelet would create).
    pub fn runtime(&self) -> ContainerdRuntime {
        ContainerdRuntime::new(self.runtime_config())
    }

    /// CNI configuration whose plugins run in this node's namespace, so the bridge and NAT
    /// rules live there.
    pub fn cni_config(&self, pod_cidr: &str) -> CniConfig {
        CniConfig {
            run_dir: self.dir.path().join("run"),
            state_dir: self.dir.path().join("cni"),
            pod_cidr: pod_cidr.to_string(),
            node_netns: Some(self.netns_path.clone()),
            // A bridge name of this node's own (the namespace's random suffix), so a
            // check that the bridge stayed out of the host's namespace cannot be fooled
            // by a local cluster's `rkube0` there.
            bridge: format!("rkt{}", &self.netns_name[self.netns_name.len() - 8..]),
            ..CniConfig::default()
        }
    }

    /// Where container logs of this node go.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(format!("{name}.log"))
    }

    /// containerd's log so far, to attach to a failure.
    pub fn containerd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn leftovers(&self) -> Leftovers {
        Leftovers {
            dir: self.dir.path().to_path_buf(),
            netns_name: Some(self.netns_name.clone()),
            cgroup_parent: Some(self.cgroup_parent.clone()),
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let leftovers = self.leftovers();
        // Containers first, so no process of the test outlives it; then containerd, gently,
        // then whatever still refers to the directory (the shims).
        leftovers.kill_containers();
        self.stop_containerd();
        leftovers.clean();
        // TempDir removes the directory itself (clean already did, this is a no-op).
    }
}

/// What a test node leaves on the machine outside its own processes, and how to remove it.
/// Used by `TestNode`'s drop and, for runs that were killed before dropping anything, by
/// [`sweep_leftovers_of_dead_runs`].
struct Leftovers {
    dir: PathBuf,
    netns_name: Option<String>,
    cgroup_parent: Option<String>,
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl Leftovers {
    /// SIGKILLs every process in the node's cgroups, a few rounds in case one was forking.
    fn kill_containers(&self) {
        let Some(parent) = &self.cgroup_parent else {
            return;
        };
        let relative = parent.trim_start_matches('/');
        for _ in 0..20 {
            let mut pids = Vec::new();
            collect_procs(&Path::new(CGROUP_ROOT).join(relative), &mut pids);
            if let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) {
                for entry in entries.filter_map(Result::ok) {
                    collect_procs(&entry.path().join(relative), &mut pids);
                }
            }
            pids.sort_unstable();
            pids.dedup();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                kill(pid);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn clean(&self) {
        self.kill_containers();
        kill_processes_referring_to(&self.dir);
        self.remove_shim_state();
        let _ = crate::mounts::unmount_below(&self.dir);
        if let Some(parent) = &self.cgroup_parent {
            // Cgroups become removable a moment after their last process is reaped.
            for _ in 0..50 {
                if crate::runtime::remove_cgroup_tree(Path::new(CGROUP_ROOT), parent).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if let Some(name) = &self.netns_name {
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .env("PATH", PATH)
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Shim sockets and runc state the node's containers left outside its directory.
    fn remove_shim_state(&self) {
        let tasks = self.dir.join("state/io.containerd.runtime.v2.task");
        let Ok(namespaces) = std::fs::read_dir(&tasks) else {
            return;
        };
        for namespace in namespaces.filter_map(Result::ok) {
            let Ok(bundles) = std::fs::read_dir(namespace.path()) else {
                continue;
            };
            for bundle in bundles.filter_map(Result::ok) {
                if let Ok(address) = std::fs::read_to_string(bundle.path().join("address")) {
                    if let Some(socket) = address.trim().strip_prefix("unix://") {
                        let _ = std::fs::remove_file(socket);
                    }
                }
                let runc_state = Path::new("/run/containerd/runc")
                    .join(namespace.file_name())
                    .join(bundle.file_name());
                let _ = std::fs::remove_dir_all(runc_state);
            }
        }
    }
}

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
}

/// SIGKILLs processes whose command line names a path under `dir`: the node's containerd
/// (`--config DIR/containerd.toml`), its shims (`-address DIR/containerd.sock`), a
/// registry (`serve DIR/config.yml`).
fn kill_processes_referring_to(dir: &Path) {
    let needle = dir.display().to_string();
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mentions = cmdline
            .split(|b| *b == 0)
            .map(String::from_utf8_lossy)
            .any(|arg| arg.starts_with(&needle) && arg[needle.len()..].starts_with('/'));
        if mentions {
            kill(pid);
        }
    }
}

/// Whether `pid` is a live process (a zombie, killed but not yet reaped, is not).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Owner pid of a name made with [`owner_prefix`], if it is one.
fn owner_of(name: &str) -> Option<u32> {
    name.strip_prefix("rkube-test-")?.split('-').next()?.parse().ok()
}

/// Removes what test runs that were killed (no drop ran) left behind: their processes,
/// mounts, directories, namespaces and cgroups. Names carry the creating process id; a
/// name whose process is gone is a leftover. Runs once per process.
pub fn sweep_leftovers_of_dead_runs() {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    SWEEP.call_once(|| {
        let dead = |name: &str| owner_of(name).is_some_and(|pid| !process_alive(pid));
        let names_in = |dir: &Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut cgroups: Vec<String> = names_in(Path::new(CGROUP_ROOT))
            .iter()
            .flat_map(|controller| names_in(&Path::new(CGROUP_ROOT).join(controller)))
            .filter(|n| dead(n))
            .collect();
        cgroups.sort();
        cgroups.dedup();
        for cgroup in cgroups {
            Leftovers {
                dir: PathBuf::from("/nonexistent-rkube-test"),
                netns_name: None,
                cgroup_parent: Some(format!("/{cgroup}")),
            }
            .kill_containers();
        }
        let tmp = std::env::temp_dir();
        for name in names_in(&tmp).into_iter().filter(|n| dead(n)) {
            Leftovers {
                dir: tmp.join(&name),
                netns_name: None,
                cgroup_parent: None,
            }
            .clean();
        }
        for name in names_in(Path::new("/var/run/netns"))
            .into_iter()
            .filter(|n| dead(n))
        {
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .env("PATH", PATH)
                .output();
        }
        for controller in names_in(Path::new(CGROUP_ROOT)) {
            for name in names_in(&Path::new(CGROUP_ROOT).join(&controller))
                .into_iter()
                .filter(|n| dead(n))
            {
                let _ = crate::runtime::remove_cgroup_tree(Path::new(CGROUP_ROOT), &format!("/{name}"));
            }
        }
    });
}

fn collect_procs(dir: &Path, pids: &mut Vec<i32>) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_procs(&entry.path(), pids);
            }
        }
    }
}

/// Debian's docker-registry on a loopback port. See the module documentation.
pub struct TestRegistry {
    child: Child,
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
    /// `(username, password)` when started with basic auth.
    pub credentials: Option<(String, String)>,
}

impl TestRegistry {
    /// A registry without authentication.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_inner(None).await
    }

    /// A registry that requires `username`/`password` (htpasswd, bcrypt).
    pub async fn start_with_basic_auth(username: &str, password: &str) -> anyhow::Result<Self> {
        Self::start_inner(Some((username.to_string(), password.to_string()))).await
    }

    async fn start_inner(credentials: Option<(String, String)>) -> anyhow::Result<Self> {
        let mut last_error = None;
        // The free port can be taken between asking and binding; try a few.
        for _ in 0..5 {
            match Self::try_start(credentials.clone()).await {
                Ok(registry) => return Ok(registry),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("registry did not start")))
    }

    async fn try_start(credentials: Option<(String, String)>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}registry-", owner_prefix()))
            .tempdir()
            .context("creating the registry directory")?;
        let port = free_loopback_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: rkube-test-secret\n",
            dir.path().join("storage").display()
        );
        if let Some((user, password)) = &credentials {
            let hash = bcrypt::hash(password, 4).context("hashing the registry password")?;
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n"))?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: rkube-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        let mut registry = Self {
            child,
            dir,
            addr,
            credentials,
        };
        let url = format!("http://{addr}/v2/");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(response) = client.get(&url).send().await {
                // 401 is an answer too (auth variant).
                if response.status().is_success() || response.status().as_u16() == 401 {
                    return Ok(registry);
                }
            }
            if let Some(status) = registry.child.try_wait()? {
                bail!("docker-registry exited with {status}: {}", registry.log());
            }
            if Instant::now() > deadline {
                bail!("docker-registry did not answer on {addr}: {}", registry.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes the OCI layout at `layout` (tag `latest`) as `<host>/<repository>:<tag>`.
    pub async fn push_layout(&self, layout: &Path, repository: &str, tag: &str) -> anyhow::Result<()> {
        self.push_layout_as(layout, repository, tag, None).await
    }

    /// Like [`push_layout`](Self::push_layout), converting the manifest to `format` on the
    /// way (`v2s2`: Docker schema 2 media types; `oci`).
    pub async fn push_layout_as(
        &self,
        layout: &Path,
        repository: &str,
        tag: &str,
        format: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut command = tokio::process::Command::new("skopeo");
        command
            .args(["copy", "--insecure-policy", "--quiet", "--dest-tls-verify=false"])
            .env("PATH", PATH);
        if let Some(format) = format {
            command.arg("--format").arg(format);
        }
        if let Some((user, password)) = &self.credentials {
            command.arg("--dest-creds").arg(format!("{user}:{password}"));
        }
        command
            .arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{}/{repository}:{tag}", self.host()));
        let output = command
            .output()
            .await
            .context("running skopeo (apt-get install skopeo)")?;
        if !output.status.success() {
            bail!(
                "skopeo copy to {}/{repository}:{tag} failed: {}",
                self.host(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Stores `body` as manifest `<repository>:<tag>` (e.g. a hand-made image index whose
    /// manifests were pushed before). Returns the registry's digest header.
    pub async fn put_manifest(
        &self,
        repository: &str,
        tag: &str,
        media_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<String> {
        let mut request = reqwest::Client::new()
            .put(format!("http://{}/v2/{repository}/manifests/{tag}", self.addr))
            .header(reqwest::header::CONTENT_TYPE, media_type)
            .body(body);
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.context("PUT manifest")?;
        let status = response.status();
        let digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if !status.is_success() {
            bail!(
                "PUT manifest {repository}:{tag}: {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        Ok(digest)
    }

    /// Builds the busybox image's OCI layout under this registry's directory; returns it and
    /// the manifest digest.
    pub async fn busybox_layout(&self) -> anyhow::Result<(PathBuf, String)> {
        let layout = self.dir.path().join("layout-busybox");
        let digest = build_busybox_image(&layout).await?;
        Ok((layout, digest))
    }

    /// Builds the busybox image and pushes it as `<host>/<repository>:latest`. Returns the
    /// reference and the manifest digest.
    pub async fn push_busybox(&self, repository: &str) -> anyhow::Result<(String, String)> {
        self.push_built(repository, &[]).await
    }

    /// Like [`push_busybox`](Self::push_busybox), with `openssl` in the image, which
    /// busybox's wget runs for https:// URLs (so a pod can call the apiserver with it).
    pub async fn push_busybox_with_openssl(&self, repository: &str) -> anyhow::Result<(String, String)> {
        self.push_built(repository, &["--with-openssl"]).await
    }

    async fn push_built(&self, repository: &str, flags: &[&str]) -> anyhow::Result<(String, String)> {
        let layout = self
            .dir
            .path()
            .join(format!("layout-{}", repository.replace('/', "-")));
        let digest = run_image_script(&layout, flags).await?;
        self.push_layout(&layout, repository, "latest").await?;
        Ok((format!("{}/{repository}:latest", self.host()), digest))
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tests/images/build-busybox-image.sh OUT`; returns the image's manifest digest.
pub async fn build_busybox_image(out: &Path) -> anyhow::Result<String> {
    run_image_script(out, &[]).await
}

async fn run_image_script(out: &Path, flags: &[&str]) -> anyhow::Result<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/images/build-busybox-image.sh");
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .args(flags)
        .arg(out)
        .env("PATH", PATH)
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let digest = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !digest.starts_with("sha256:") {
        bail!("{} printed {digest:?} instead of a digest", script.display());
    }
    Ok(digest)
}

/// One plain HTTP/1.0 GET from inside the network namespace at `netns_path`; returns the
/// status code and body. For reaching pods from the namespace their bridge lives in.
pub fn http_get_in_netns(
    netns_path: &Path,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let response = netns::run_in(netns_path, move || -> std::io::Result<Vec<u8>> {
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(request.as_bytes())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        Ok(response)
    })
    .with_context(|| format!("entering {}", netns_path.display()))?
    .with_context(|| format!("GET http://{addr}{path} from {}", netns_path.display()))?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP response: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
