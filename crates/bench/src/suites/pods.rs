//! Pod startup latency on one real node: rkube's apiserver and kubelet in this process, a
//! throwaway containerd inside a private network namespace with only loopback (the
//! kubelet's test harness, `rkube_kubelet::testing`), and the busybox test image on a
//! loopback registry. Nothing leaves the machine.
//!
//! The image is pulled first by running one warm-up pod. Then 30 pods (one container,
//! `sleep`) are created at once, bound to the node, and each one's time from just before
//! its create request to the watch showing `phase: Running` is recorded (p50, p99).
//!
//! The floor, in the same run and on the same containerd: the same image started and
//! stopped 30 times, one after the other, with `ctr run --rm IMAGE ID true` (ctr's own
//! container setup, no network, no apiserver): mean and p99 per container; then the same
//! 30 at once, as the pods were (p50, p99, wall time). The table shows rkube / floor.
//! Target: p99 under 1 s.

use crate::one_node::OneNode;
use crate::pod_watch;
use crate::stats::Samples;
use crate::Args;
use anyhow::Context;
use rkube_api::core::v1::Pod;
use rkube_api::Resource;
use rkube_client::{Api, Client, DeleteParams};
use rkube_kubelet::testing::TestNode;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PODS: usize = 30;
const FLOOR_RUNS: usize = 30;
const NAMESPACE: &str = "default";
const NODE: &str = "bench-node";
/// containerd namespace of the floor's containers (the kubelet uses its own).
const CTR_NAMESPACE: &str = "rkube-bench";
/// Upper bound for every wait.
const MAX_WAIT: Duration = Duration::from_secs(120);
const TARGET_P99: Duration = Duration::from_secs(1);

pub fn run(_args: &Args) -> anyhow::Result<String> {
    if let Some(reason) = rkube_kubelet::testing::skip_reason() {
        anyhow::bail!("the pods suite needs a real containerd: {reason}");
    }
    crate::one_node::block_on("bench-pods", measure()).map(|r| render(&r))
}

struct Results {
    startup: Samples,
    floor: Samples,
    floor_mean: Duration,
    floor_parallel: Samples,
    floor_parallel_wall: Duration,
    wall: Duration,
}

async fn measure() -> anyhow::Result<Results> {
    let OneNode {
        node,
        registry,
        image,
        api,
        api_dir: _api_dir,
    } = OneNode::start().await?;
    let config = rkube_kubelet::Config::for_test_node(
        &node,
        api.url(),
        NODE,
        [127, 0, 0, 1].into(),
        Some("10.244.7.0/24"),
    );
    let kubelet = rkube_kubelet::start(config)
        .await
        .context("starting the kubelet")?;
    let result = measure_with(&api.url(), &node, &image).await;
    kubelet.stop().await;
    drop(node); // kills every container, removes the namespace
    api.stop().await.context("stopping the apiserver")?;
    drop(registry);
    result
}

async fn wait_running(pods: &Api<Pod>, name: &str) -> anyhow::Result<Pod> {
    let deadline = Instant::now() + MAX_WAIT;
    loop {
        let p = pods.get(name).await?;
        if phase(&p) == "Running" {
            return Ok(p);
        }
        if Instant::now() > deadline {
            anyhow::bail!("pod {name} not Running after {MAX_WAIT:?}: {:?}", p.status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("")
}

async fn measure_with(url: &str, node: &TestNode, image: &str) -> anyhow::Result<Results> {
    let client = Client::connect(url)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);

    // Warm-up: pulls the image, sets up the node's bridge.
    eprintln!("warm-up pod (pulls {image})");
    pods.create(&pod_object("warm-up", image)).await?;
    wait_running(&pods, "warm-up").await?;
    pods.delete(
        "warm-up",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await?;
    let rv = pods.list(&Default::default()).await?.resource_version;

    let (running_at, watcher) = pod_watch::first_seen(&pods, rv, PODS, |p| {
        p.name().starts_with("start-") && phase(p) == "Running"
    })
    .await?;

    eprintln!("creating {PODS} pods at once");
    let wall = Instant::now();
    let created: Vec<(String, Instant)> = futures::future::try_join_all((0..PODS).map(|i| {
        let pods = pods.clone();
        let name = format!("start-{i:02}");
        let object = pod_object(&name, image);
        async move {
            let at = Instant::now();
            pods.create(&object).await?;
            anyhow::Ok((name, at))
        }
    }))
    .await?;
    let deadline = Instant::now() + MAX_WAIT;
    while !watcher.is_finished() {
        if Instant::now() > deadline {
            watcher.abort();
            let n = running_at.lock().unwrap_or_else(|e| e.into_inner()).len();
            anyhow::bail!("only {n} of {PODS} pods Running after {MAX_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = wall.elapsed();
    let mut startup = Samples::default();
    {
        let m = running_at.lock().unwrap_or_else(|e| e.into_inner());
        for (name, at) in &created {
            let done = m
                .get(name)
                .with_context(|| format!("the watch never showed {name} Running"))?;
            startup.extend([done.duration_since(*at)]);
        }
    }

    // The floor: ctr on the same containerd and image.
    let sock = node.socket.display().to_string();
    eprintln!("floor: {FLOOR_RUNS} x ctr run --rm {image} ID true");
    let pull = Command::new("ctr")
        .args([
            "--address",
            &sock,
            "-n",
            CTR_NAMESPACE,
            "images",
            "pull",
            "--plain-http",
            image,
        ])
        .stdout(Stdio::null())
        .output()
        .context("running ctr images pull (Debian package containerd)")?;
    if !pull.status.success() {
        anyhow::bail!(
            "ctr images pull {image} failed: {}",
            String::from_utf8_lossy(&pull.stderr)
        );
    }
    let mut floor = Samples::default();
    let mut total = Duration::ZERO;
    for i in 0..FLOOR_RUNS {
        let took = ctr_run(&sock, image, &format!("floor-{i:02}"), &node.cgroup_parent)?;
        floor.extend([took]);
        total += took;
    }
    // And all at once, as the pods were: what 30 containers cost this machine together.
    eprintln!("floor: {FLOOR_RUNS} x ctr run at once");
    let parallel_started = Instant::now();
    let runs: Vec<_> = (0..FLOOR_RUNS)
        .map(|i| {
            let (sock, image) = (sock.clone(), image.to_string());
            let parent = node.cgroup_parent.clone();
            tokio::task::spawn_blocking(move || ctr_run(&sock, &image, &format!("par-{i:02}"), &parent))
        })
        .collect();
    let mut floor_parallel = Samples::default();
    for run in runs {
        floor_parallel.extend([run.await??]);
    }
    let floor_parallel_wall = parallel_started.elapsed();
    Ok(Results {
        startup,
        floor,
        floor_mean: total / FLOOR_RUNS as u32,
        floor_parallel,
        floor_parallel_wall,
        wall,
    })
}

/// `ctr run --rm IMAGE ID true` on the node's containerd, in a cgroup below the node's
/// parent (so the node's cleanup covers it); how long the command took.
fn ctr_run(sock: &str, image: &str, id: &str, cgroup_parent: &str) -> anyhow::Result<Duration> {
    let cgroup = format!("{cgroup_parent}/{id}");
    let started = Instant::now();
    let out = Command::new("ctr")
        .args([
            "--address",
            sock,
            "-n",
            CTR_NAMESPACE,
            "run",
            "--rm",
            "--cgroup",
            &cgroup,
            image,
            id,
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .context("running ctr run")?;
    let took = started.elapsed();
    if !out.status.success() {
        anyhow::bail!(
            "ctr run {id} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(took)
}

fn pod_object(name: &str, image: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": image, "command": ["sleep", "3600"]}],
        },
    }))
    .expect("a valid pod")
}

fn render(r: &Results) -> String {
    let p50 = r.startup.quantile_ms(0.5);
    let p99 = r.startup.quantile_ms(0.99);
    let floor_mean = r.floor_mean.as_secs_f64() * 1e3;
    let floor_p99 = r.floor.quantile_ms(0.99);
    let mut s = String::new();
    let _ = writeln!(s, "## pods: startup latency on one node\n");
    let _ = writeln!(
        s,
        "{PODS} pods created at once on one node (image present), creation to `Running` seen \
         through a watch; floor: {FLOOR_RUNS} x `ctr run --rm IMAGE ID true` one after the \
         other on the same containerd, then {FLOOR_RUNS} at once. A floor run is the whole \
         life of a container (create, start, exit, delete); a pod's time ends at `Running`.\n"
    );
    let _ = writeln!(s, "| measure | rkube (ms) | floor (ms) | rkube / floor |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| p50 pod vs mean container | {p50:.0} | {floor_mean:.0} | {:.1} |",
        p50 / floor_mean
    );
    let _ = writeln!(s, "| p99 | {p99:.0} | {floor_p99:.0} | {:.1} |", p99 / floor_p99);
    let (par50, par99) = (
        r.floor_parallel.quantile_ms(0.5),
        r.floor_parallel.quantile_ms(0.99),
    );
    let _ = writeln!(
        s,
        "| p50, floor {FLOOR_RUNS} at once | {p50:.0} | {par50:.0} | {:.1} |",
        p50 / par50
    );
    let _ = writeln!(
        s,
        "| p99, floor {FLOOR_RUNS} at once | {p99:.0} | {par99:.0} | {:.1} |",
        p99 / par99
    );
    let _ = writeln!(
        s,
        "| all {PODS} done (wall) | {:.0} | {:.0} | {:.1} |",
        r.wall.as_secs_f64() * 1e3,
        r.floor_parallel_wall.as_secs_f64() * 1e3,
        r.wall.as_secs_f64() / r.floor_parallel_wall.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "\nAll {PODS} Running {:.0} ms after the first create. Target p99 < {} ms: {}.",
        r.wall.as_secs_f64() * 1e3,
        TARGET_P99.as_millis(),
        if p99 < TARGET_P99.as_secs_f64() * 1e3 {
            "met"
        } else {
            "**missed**"
        }
    );
    s
}
