//! The footprint of each daemon (issue 8): resident memory (VmRSS from /proc/PID/status) and
//! idle CPU (utime + stime from /proc/PID/stat over a 30 s window in which nobody asks the
//! cluster for anything, as % of one core), at rest (one node, no pods) and with 100 pods
//! running.
//!
//! Every daemon is the release binary as its own process, started with `nsenter --net`
//! inside the network namespace of a [`TestNode`] (only loopback, no route out), which
//! stands in for the machine: apiserver (sled in a temp dir), scheduler, controller-manager,
//! cloud-controller-manager (when built), rkubelet on the node's own containerd, and
//! rkube-proxy in nftables mode, whose table lives and dies with the namespace. The image
//! is the busybox test image, served by Debian's `docker-registry` inside the namespace.
//! This process talks to the apiserver from a thread that joined the namespace.
//!
//! The 100 pods are a Deployment of `sleep` containers; the node offers the kubelet's
//! default 110 pods and a /24 podCIDR, so they all fit. containerd and its runc shims are
//! shown as context; they are not rkube's and no target counts them.

use crate::process::{self, mib, Daemon, Memory};
use crate::Args;
use anyhow::Context;
use rkube_api::apps::v1::Deployment;
use rkube_api::core::v1::{Node, Pod};
use rkube_client::{Api, Client, ListParams};
use rkube_kubelet::testing::TestNode;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PODS: usize = 100;
const NODE: &str = "bench-node";
const NAMESPACE: &str = "default";
const API: &str = "127.0.0.1:6443";
const REGISTRY: &str = "127.0.0.1:5000";
const IMAGE: &str = "127.0.0.1:5000/rkube/busybox:latest";
/// The idle window over which CPU time is measured.
const WINDOW: Duration = Duration::from_secs(30);
/// Quiet time before a window, so start-up and the last pod's status writes are over.
const SETTLE: Duration = Duration::from_secs(10);
const MAX_WAIT: Duration = Duration::from_secs(300);
const CONTROL_PLANE_TARGET_MIB: f64 = 100.0;
const NODE_TARGET_MIB: f64 = 50.0;
const CPU_TARGET_PERCENT: f64 = 1.0;

/// The daemons, in the table's order; `true` for the control plane.
const DAEMONS: &[(&str, bool)] = &[
    ("rkube-apiserver", true),
    ("rkube-scheduler", true),
    ("rkube-controller-manager", true),
    ("rkube-cloud-controller-manager", true),
    ("rkubelet", false),
    ("rkube-proxy", false),
];

pub fn run(_args: &Args) -> anyhow::Result<String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok("## footprint\n\nNot run: network namespaces and containers need root.\n".into());
    }
    if let Some(reason) = rkube_kubelet::testing::skip_reason() {
        anyhow::bail!("the footprint suite needs a real containerd: {reason}");
    }
    let mut binaries = Vec::new();
    for (name, _) in DAEMONS {
        let found = process::binary(name)?;
        if found.is_none() && *name != "rkube-cloud-controller-manager" {
            process::require(name)?;
        }
        binaries.push((*name, found));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-footprint")
        .enable_all()
        .build()
        .context("cannot build the runtime")?;
    let node = rt.block_on(TestNode::start()).context("starting the test node")?;
    let result = measure(&rt, &node, &binaries);
    drop(node); // kills every container, containerd, removes the namespace
    result.map(|r| render(&r))
}

/// Runs `f`'s future to completion on a thread inside the namespace at `netns`, so every
/// socket it opens (the client's connections to the apiserver) is there.
fn in_netns<F, Fut, T>(netns: &Path, f: F) -> anyhow::Result<T>
where
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
    T: Send,
{
    rkube_node_runtime::network::netns::run_in(netns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build a runtime in the test namespace")?
            .block_on(f())
    })
    .with_context(|| format!("cannot enter {}", netns.display()))?
}

struct Sample {
    memory: Memory,
    /// Share of one core over the window, in percent.
    cpu: f64,
}

/// A daemon's name, whether it is part of the control plane, and its samples at rest and
/// with the pods (`None` when it is not built).
type Row = (&'static str, bool, Option<(Sample, Sample)>);

struct Results {
    /// Per daemon: at rest and with the pods; `None` when not built.
    daemons: Vec<Row>,
    /// PSS of this node's containerd, with the pods.
    containerd: u64,
    /// Summed PSS and count of its runc shims, with the pods.
    shims: (u64, usize),
    pods_running_after: Duration,
}

fn measure(
    rt: &tokio::runtime::Runtime,
    node: &TestNode,
    binaries: &[(&'static str, Option<PathBuf>)],
) -> anyhow::Result<Results> {
    let dir = node.dir().to_path_buf();
    let netns = node.netns_path.clone();
    let logs = dir.join("bench-logs");
    std::fs::create_dir_all(&logs)?;

    // The image, in a registry inside the namespace.
    let layout = dir.join("image");
    rt.block_on(rkube_kubelet::testing::build_busybox_image(&layout))
        .context("building the busybox image")?;
    let registry_config = dir.join("registry.yml");
    std::fs::write(
        &registry_config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {REGISTRY}\n",
            dir.join("registry").display()
        ),
    )?;
    let registry_bin = which("docker-registry")?;
    let mut registry = Daemon::start(
        "docker-registry",
        Some(&netns),
        &registry_bin,
        &["serve".into(), registry_config.display().to_string()],
        &logs,
    )?;
    push_image(&netns, &layout, &mut registry)?;

    // Secure, as users run it: the cluster PKI with this node's certificate, every daemon
    // with its own client config.
    let url = format!("https://{API}");
    let pki = dir.join("pki");
    rkube_client::pki::generate(&rkube_client::pki::PkiRequest {
        dir: pki.clone(),
        apiserver_sans: Vec::new(),
        nodes: vec![NODE.to_string()],
        apiserver_url: url.clone(),
        validity_days: 1,
    })?;
    let conf = |stem: &str| pki.join(format!("{stem}.conf")).display().to_string();
    let admin = rkube_client::ClientConfig::load(&pki.join("admin.conf"))?;
    let bin = |name: &str| {
        binaries
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, p)| p.clone())
    };
    let mut daemons: Vec<(&'static str, bool, Option<Daemon>)> = Vec::new();
    let start = |name: &'static str, args: Vec<String>| -> anyhow::Result<Option<Daemon>> {
        match bin(name) {
            Some(path) => Daemon::start(name, Some(&netns), &path, &args, &logs).map(Some),
            None => Ok(None),
        }
    };
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    daemons.push((
        "rkube-apiserver",
        true,
        start(
            "rkube-apiserver",
            vec![
                "--listen".into(),
                API.into(),
                "--data-dir".into(),
                dir.join("apiserver").display().to_string(),
                "--cert-dir".into(),
                pki.display().to_string(),
            ],
        )?,
    ));
    in_netns(&netns, || async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = async {
                let nodes: Api<Node> = Api::all(Client::from_config(&admin)?);
                nodes.list(&ListParams::default()).await?;
                anyhow::Ok(())
            }
            .await;
            match answer {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context("the apiserver did not answer within 30 s"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })?;
    // The local provider's machine list: this one node. No pod routes: with one node there is
    // no other node to route to.
    let cloud_config = dir.join("cloud-config.yaml");
    std::fs::write(
        &cloud_config,
        format!(
            "machines:\n  - name: {NODE}\n    addresses:\n      - {{type: InternalIP, address: 127.0.0.1}}\nroutes:\n  enabled: false\n"
        ),
    )?;
    let cloud_config = cloud_config.display().to_string();
    daemons.push((
        "rkube-scheduler",
        true,
        start(
            "rkube-scheduler",
            s(&["--apiserver", &url, "--kubeconfig", &conf("kube-scheduler")]),
        )?,
    ));
    daemons.push((
        "rkube-controller-manager",
        true,
        start(
            "rkube-controller-manager",
            s(&[
                "--apiserver",
                &url,
                "--kubeconfig",
                &conf("kube-controller-manager"),
            ]),
        )?,
    ));
    daemons.push((
        "rkube-cloud-controller-manager",
        true,
        start(
            "rkube-cloud-controller-manager",
            s(&[
                "--apiserver",
                &url,
                "--kubeconfig",
                &conf("cloud-controller-manager"),
                "--cloud-provider",
                "local",
                "--cloud-config",
                &cloud_config,
            ]),
        )?,
    ));
    let socket = node.socket.display().to_string();
    let root = dir.join("kubelet-root").display().to_string();
    let run = dir.join("run").display().to_string();
    daemons.push((
        "rkubelet",
        false,
        start(
            "rkubelet",
            s(&[
                "--apiserver",
                &url,
                "--kubeconfig",
                &conf(&format!("node-{NODE}")),
                "--node-name",
                NODE,
                "--containerd-socket",
                &socket,
                "--root-dir",
                &root,
                "--run-dir",
                &run,
                "--node-ip",
                "127.0.0.1",
                "--listen",
                "127.0.0.1:10250",
                "--cgroup-parent",
                &node.cgroup_parent,
            ]),
        )?,
    ));
    daemons.push((
        "rkube-proxy",
        false,
        start(
            "rkube-proxy",
            s(&[
                "--apiserver",
                &url,
                "--kubeconfig",
                &conf("kube-proxy"),
                "--node-name",
                NODE,
                "--mode",
                "nftables",
            ]),
        )?,
    ));

    let check = |daemons: &mut Vec<(&'static str, bool, Option<Daemon>)>| -> anyhow::Result<()> {
        for (_, _, d) in daemons.iter_mut() {
            if let Some(d) = d {
                d.check_running()?;
            }
        }
        Ok(())
    };

    eprintln!("footprint: waiting for node {NODE} to be Ready");
    let deadline = Instant::now() + MAX_WAIT;
    loop {
        check(&mut daemons)?;
        let ready = in_netns(&netns, || async {
            let nodes: Api<Node> = Api::all(Client::from_config(&admin)?);
            let Some(n) = nodes.get_opt(NODE).await? else {
                return Ok(false);
            };
            let cidr = n.spec.as_ref().is_some_and(|s| !s.pod_cidr.is_empty());
            let ready = n.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.r#type == "Ready" && c.status == "True")
            });
            Ok(cidr && ready)
        })?;
        if ready {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node {NODE} not Ready with a podCIDR within {} s",
            MAX_WAIT.as_secs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    eprintln!(
        "footprint: at rest, {} s quiet then a {} s window",
        SETTLE.as_secs(),
        WINDOW.as_secs()
    );
    let at_rest = window(&mut daemons)?;

    eprintln!("footprint: a Deployment of {PODS} pods");
    let started = Instant::now();
    in_netns(&netns, || async {
        let deployments: Api<Deployment> = Api::namespaced(Client::from_config(&admin)?, NAMESPACE);
        deployments
            .create(&deployment())
            .await
            .context("creating the Deployment")?;
        anyhow::Ok(())
    })?;
    let deadline = started + MAX_WAIT;
    loop {
        check(&mut daemons)?;
        let running = in_netns(&netns, || async {
            let pods: Api<Pod> = Api::namespaced(Client::from_config(&admin)?, NAMESPACE);
            let list = pods.list(&ListParams::default().labels("app=sleep")).await?;
            Ok(list
                .items
                .iter()
                .filter(|p| p.status.as_ref().is_some_and(|s| s.phase == "Running"))
                .count())
        })?;
        if running >= PODS {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {running} of {PODS} pods Running after {} s",
            MAX_WAIT.as_secs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let pods_running_after = started.elapsed();
    eprintln!(
        "footprint: {PODS} pods Running after {:.1} s; {} s quiet then a {} s window",
        pods_running_after.as_secs_f64(),
        SETTLE.as_secs(),
        WINDOW.as_secs()
    );
    let loaded = window(&mut daemons)?;
    let (containerd, shims) = runtime_memory(&dir)?;

    let mut results = Results {
        daemons: Vec::new(),
        containerd: containerd.0,
        shims,
        pods_running_after,
    };
    let mut rest = at_rest.samples.into_iter();
    let mut load = loaded.samples.into_iter();
    for (name, control_plane, d) in daemons.iter_mut() {
        let pair = match d {
            Some(_) => match (rest.next().flatten(), load.next().flatten()) {
                (Some(a), Some(b)) => Some((a, b)),
                _ => None,
            },
            None => {
                let _ = (rest.next(), load.next());
                None
            }
        };
        results.daemons.push((*name, *control_plane, pair));
    }
    // The node first, so the kubelet does not see its apiserver go.
    for (_, _, d) in daemons.iter_mut().rev() {
        if let Some(d) = d {
            d.stop();
        }
    }
    registry.stop();
    Ok(results)
}

struct Window {
    /// Per daemon, in order; `None` for one not built.
    samples: Vec<Option<Sample>>,
}

/// A quiet `SETTLE`, then CPU time over `WINDOW` and memory at its end, for every daemon.
fn window(daemons: &mut [(&'static str, bool, Option<Daemon>)]) -> anyhow::Result<Window> {
    std::thread::sleep(SETTLE);
    let before: Vec<Option<u64>> = daemons
        .iter()
        .map(|(_, _, d)| d.as_ref().map(|d| d.cpu_ticks()).transpose())
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    std::thread::sleep(WINDOW);
    let elapsed = started.elapsed().as_secs_f64();
    let tps = process::ticks_per_second() as f64;
    let mut samples = Vec::new();
    for ((_, _, d), before) in daemons.iter_mut().zip(before) {
        match (d, before) {
            (Some(d), Some(before)) => {
                d.check_running()?;
                let ticks = d.cpu_ticks()?.saturating_sub(before);
                samples.push(Some(Sample {
                    memory: d.memory()?,
                    cpu: ticks as f64 / tps / elapsed * 100.0,
                }));
            }
            _ => samples.push(None),
        }
    }
    Ok(Window { samples })
}

/// The PSS of this node's containerd and the summed PSS and count of its runc shims:
/// processes whose command line names a path in the node's directory.
fn runtime_memory(dir: &Path) -> anyhow::Result<((u64, usize), (u64, usize))> {
    let needle = dir.display().to_string();
    let (mut containerd, mut shims) = ((0u64, 0usize), (0u64, 0usize));
    for entry in std::fs::read_dir("/proc")?.filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.iter().any(|a| a.starts_with(&needle)) {
            continue;
        }
        let exe = std::fs::read_link(entry.path().join("exe")).unwrap_or_default();
        let name = exe
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(m) = process::pss(pid) else { continue };
        if name.starts_with("containerd-shim") {
            shims = (shims.0 + m, shims.1 + 1);
        } else if name == "containerd" {
            containerd = (containerd.0 + m, containerd.1 + 1);
        }
    }
    Ok((containerd, shims))
}

fn which(binary: &str) -> anyhow::Result<PathBuf> {
    ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(binary))
        .find(|p| p.is_file())
        .with_context(|| format!("{binary} is not installed (apt-get install docker-registry)"))
}

/// Pushes the image layout with skopeo run inside the namespace, retrying while the
/// registry starts.
fn push_image(netns: &Path, layout: &Path, registry: &mut Daemon) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        registry.check_running()?;
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["skopeo", "copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{IMAGE}"))
            .output()
            .context("running skopeo (apt-get install skopeo)")?;
        if out.status.success() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "skopeo could not push {IMAGE} within 30 s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn deployment() -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sleep", "namespace": NAMESPACE},
        "spec": {
            "replicas": PODS,
            "selector": {"matchLabels": {"app": "sleep"}},
            "template": {
                "metadata": {"labels": {"app": "sleep"}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "sleep",
                        "image": IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["sleep", "36000"],
                    }],
                },
            },
        },
    }))
    .expect("a valid deployment")
}

fn render(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## footprint: memory and idle CPU of each daemon\n");
    let _ = writeln!(
        s,
        "Release binaries, each its own process in a test network namespace on one machine ({} cores): \
         one node (rkubelet on its own containerd), rkube-proxy in nftables mode. RSS is VmRSS at the end \
         of a {} s window with no client activity; idle CPU is utime + stime over that window, as % of \
         one core. With pods: a Deployment of {PODS} `sleep` pods (all Running {:.1} s after it was \
         created). containerd and its shims are context, as PSS (shared pages divided among the \
         processes sharing them); no target counts them.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        WINDOW.as_secs(),
        r.pods_running_after.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| daemon | RSS at rest, MiB | RSS with {PODS} pods, MiB | idle CPU at rest | idle CPU with {PODS} pods |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    let mut sums = [(0u64, 0u64, 0f64, 0f64); 2];
    for (name, control_plane, pair) in &r.daemons {
        match pair {
            Some((a, b)) => {
                let _ = writeln!(
                    s,
                    "| {name} | {:.1} | {:.1} | {:.2} % | {:.2} % |",
                    mib(a.memory.rss),
                    mib(b.memory.rss),
                    a.cpu,
                    b.cpu
                );
                let sum = &mut sums[usize::from(!control_plane)];
                sum.0 += a.memory.rss;
                sum.1 += b.memory.rss;
                sum.2 += a.cpu;
                sum.3 += b.cpu;
            }
            None => {
                let _ = writeln!(s, "| {name} | not built | not built | | |");
            }
        }
        if *name == "rkube-cloud-controller-manager" {
            let (a, b, ca, cb) = sums[0];
            let _ = writeln!(
                s,
                "| **control plane** (target < {CONTROL_PLANE_TARGET_MIB:.0} MiB) | **{:.1}** | **{:.1}** | {ca:.2} % | {cb:.2} % |",
                mib(a),
                mib(b)
            );
        }
    }
    let (a, b, ca, cb) = sums[1];
    let _ = writeln!(
        s,
        "| **kubelet + proxy** (target < {NODE_TARGET_MIB:.0} MiB) | **{:.1}** | **{:.1}** | {ca:.2} % | {cb:.2} % |",
        mib(a),
        mib(b)
    );
    let _ = writeln!(
        s,
        "| (context) this node's containerd, PSS | | {:.1} | | |",
        mib(r.containerd)
    );
    let _ = writeln!(
        s,
        "| (context) its {} runc shims, summed PSS | | {:.1} | | |",
        r.shims.1,
        mib(r.shims.0)
    );
    let cp = mib(sums[0].1.max(sums[0].0));
    let nd = mib(sums[1].1.max(sums[1].0));
    let max_cpu = r
        .daemons
        .iter()
        .filter_map(|(_, _, p)| p.as_ref())
        .flat_map(|(a, b)| [a.cpu, b.cpu])
        .fold(0.0, f64::max);
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    let _ = writeln!(
        s,
        "\nTargets: control plane < {CONTROL_PLANE_TARGET_MIB:.0} MiB: {} ({cp:.1} MiB at most); kubelet + proxy \
         < {NODE_TARGET_MIB:.0} MiB: {} ({nd:.1} MiB at most); idle CPU < {CPU_TARGET_PERCENT:.0} % of a core per \
         daemon: {} (highest {max_cpu:.2} %).{} For scale, k3s documents about 1.6 GB for its server with a \
         workload (context, not measured here).",
        verdict(cp < CONTROL_PLANE_TARGET_MIB),
        verdict(nd < NODE_TARGET_MIB),
        verdict(max_cpu < CPU_TARGET_PERCENT),
        if r.daemons.iter().any(|(_, cp, p)| *cp && p.is_none()) {
            " The control-plane sum lacks the daemons not built."
        } else {
            ""
        }
    );
    s
}
