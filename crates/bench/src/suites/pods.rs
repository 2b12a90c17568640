//! Pod startup latency on one real node, and where it goes: rkube's apiserver, scheduler
//! and kubelet in this process, a throwaway containerd inside a private network namespace
//! with only loopback (the kubelet's test harness, `rkube_kubelet::testing`), and the
//! busybox test image on a loopback registry. Nothing leaves the machine.
//!
//! The pods are not bound in advance: each goes through the scheduler, as a user's pod
//! does. The image is pulled first by running one warm-up pod. Then:
//!
//! * **one pod at a time**, `SINGLE_ROUNDS` times: a pod (one container, `sleep`) is
//!   created and timed from just before its create request to the watch showing
//!   `phase: Running`; the next one is created once it is;
//! * **a burst**: `BURST` pods created at once, each timed the same way.
//!
//! Every daemon marks the steps of a pod's startup as tracing spans with the pod's uid
//! (target `rkube_api::POD_STARTUP_TRACE`, see [`crate::startup_trace`]); the suite
//! records them in process and prints, per step, when it began after the create and how
//! long it took.
//!
//! The floor, in the same run and on the same containerd once every pod is gone: the same
//! image and command started with `ctr run -d` (ctr's own container setup, no network, no
//! apiserver), one at a time `SINGLE_ROUNDS` times, then `BURST` at once. Targets (issue
//! 21): one pod's p50 at most 1.5 x one `ctr run -d`'s, the burst's p99 at most 1.0 x
//! that of `BURST` concurrent `ctr run -d`.

use crate::one_node::{Daemons, OneNode};
use crate::pod_watch;
use crate::startup_trace::{self, Steps, STEPS};
use crate::stats::Samples;
use crate::Args;
use anyhow::Context;
use rkube_api::core::v1::Pod;
use rkube_api::Resource;
use rkube_client::{Api, Client, DeleteParams, ListParams};
use rkube_kubelet::testing::TestNode;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BURST: usize = 30;
const SINGLE_ROUNDS: usize = 10;
const NAMESPACE: &str = "default";
const NODE: &str = "bench-node";
/// containerd namespace of the floor's containers (the kubelet uses its own).
const CTR_NAMESPACE: &str = "rkube-bench";
/// Upper bound for every wait.
const MAX_WAIT: Duration = Duration::from_secs(120);
/// The command of every pod and floor container.
const COMMAND: [&str; 2] = ["sleep", "3600"];
const TARGET_SINGLE: f64 = 1.5;
const TARGET_BURST: f64 = 1.0;

pub fn run(_args: &Args) -> anyhow::Result<String> {
    if let Some(reason) = rkube_kubelet::testing::skip_reason() {
        anyhow::bail!("the pods suite needs a real containerd: {reason}");
    }
    let steps = startup_trace::recorder();
    crate::one_node::block_on("bench-pods", measure(steps)).map(|r| render(&r))
}

/// One phase's pods: create → Running, and the breakdown of their steps.
#[derive(Default)]
struct Phase {
    startup: Samples,
    /// Per step: when it began after the create, and how long it took.
    steps: BTreeMap<&'static str, (Samples, Samples)>,
    /// Pods whose steps were all recorded.
    traced: usize,
}

struct Results {
    single: Phase,
    burst: Phase,
    burst_wall: Duration,
    floor_single: Samples,
    floor_burst: Samples,
    floor_burst_wall: Duration,
}

async fn measure(steps: Steps) -> anyhow::Result<Results> {
    let OneNode {
        node,
        registry,
        image,
        api,
        api_dir: _api_dir,
    } = OneNode::start().await?;
    let url = api.url();
    let mut daemons = Daemons::new();
    let scheduler = rkube_scheduler::Config::new(&url);
    daemons.spawn("scheduler", |stop| rkube_scheduler::run(scheduler, stop));
    let config = rkube_kubelet::Config::for_test_node(
        &node,
        url.clone(),
        NODE,
        [127, 0, 0, 1].into(),
        Some("10.244.7.0/24"),
    );
    let kubelet = rkube_kubelet::start(config)
        .await
        .context("starting the kubelet")?;
    let result = measure_with(&url, &node, &image, &steps).await;
    kubelet.stop().await;
    let stopped = daemons.stop().await;
    drop(node); // kills every container, removes the namespace
    api.stop().await.context("stopping the apiserver")?;
    drop(registry);
    stopped.and(result)
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("")
}

/// Waits until `watcher` saw every pod it waits for; `what` names them in the error.
async fn wait_watcher(
    watcher: &tokio::task::JoinHandle<()>,
    seen: &pod_watch::SeenAt,
    expected: usize,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + MAX_WAIT;
    while !watcher.is_finished() {
        if Instant::now() > deadline {
            watcher.abort();
            let n = seen.lock().unwrap_or_else(|e| e.into_inner()).len();
            anyhow::bail!("only {n} of {expected} {what} Running after {MAX_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Creates the pods named `names` at once; each one's name, uid and when its create was
/// sent.
async fn create_all(
    pods: &Api<Pod>,
    image: &str,
    names: Vec<String>,
) -> anyhow::Result<Vec<(String, String, Instant)>> {
    futures::future::try_join_all(names.into_iter().map(|name| {
        let pods = pods.clone();
        let object = pod_object(&name, image);
        async move {
            let at = Instant::now();
            let created = pods.create(&object).await?;
            anyhow::Ok((name, created.metadata().uid.clone(), at))
        }
    }))
    .await
}

/// Deletes every pod and waits until none is left (their containers stopped, their
/// networks torn down), so the next phase starts on a quiet node.
async fn delete_all(pods: &Api<Pod>) -> anyhow::Result<()> {
    let now = pods.list(&ListParams::default()).await?;
    let zero = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    for p in &now.items {
        match pods.delete(p.name(), &zero).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e).with_context(|| format!("deleting pod {}", p.name())),
        }
    }
    let deadline = Instant::now() + MAX_WAIT;
    loop {
        let left = pods.list(&ListParams::default()).await?.items.len();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("{left} pods still there {MAX_WAIT:?} after their deletion");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Adds the pods created at `created` (name, uid, create sent) to `phase`: their startup
/// from the watch's `seen`, their steps from the recorder.
fn account(
    phase: &mut Phase,
    created: &[(String, String, Instant)],
    seen: &pod_watch::SeenAt,
    steps: &Steps,
) -> anyhow::Result<()> {
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    for (name, uid, at) in created {
        let running = *seen
            .get(name)
            .with_context(|| format!("the watch never showed {name} Running"))?;
        phase.startup.extend([running.duration_since(*at)]);
        let mut recorded = steps.of(uid);
        recorded.push(startup_trace::Step {
            name: "status_seen",
            start: running,
            end: running,
        });
        let mut complete = true;
        for (step, _) in STEPS {
            let Some(s) = recorded.iter().find(|s| s.name == *step) else {
                complete = false;
                continue;
            };
            let entry = phase.steps.entry(step).or_default();
            entry.0.extend([s.start.saturating_duration_since(*at)]);
            entry.1.extend([s.end.saturating_duration_since(s.start)]);
        }
        phase.traced += usize::from(complete);
    }
    Ok(())
}

async fn measure_with(url: &str, node: &TestNode, image: &str, steps: &Steps) -> anyhow::Result<Results> {
    let client = Client::connect(url)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);

    // Warm-up: pulls the image, sets up the node's bridge.
    eprintln!("warm-up pod (pulls {image})");
    let rv = pods.list(&Default::default()).await?.resource_version;
    let (seen, watcher) = pod_watch::first_seen(&pods, rv, 1, |p| phase(p) == "Running").await?;
    create_all(&pods, image, vec!["warm-up".into()]).await?;
    wait_watcher(&watcher, &seen, 1, "warm-up pod").await?;
    delete_all(&pods).await?;

    eprintln!("{SINGLE_ROUNDS} pods one at a time");
    let mut single = Phase::default();
    for i in 0..SINGLE_ROUNDS {
        let rv = pods.list(&Default::default()).await?.resource_version;
        let (seen, watcher) = pod_watch::first_seen(&pods, rv, 1, |p| phase(p) == "Running").await?;
        let created = create_all(&pods, image, vec![format!("one-{i:02}")]).await?;
        wait_watcher(&watcher, &seen, 1, "pod").await?;
        account(&mut single, &created, &seen, steps)?;
    }
    delete_all(&pods).await?;

    eprintln!("creating {BURST} pods at once");
    let rv = pods.list(&Default::default()).await?.resource_version;
    let (seen, watcher) = pod_watch::first_seen(&pods, rv, BURST, |p| {
        p.name().starts_with("burst-") && phase(p) == "Running"
    })
    .await?;
    let wall = Instant::now();
    let created = create_all(
        &pods,
        image,
        (0..BURST).map(|i| format!("burst-{i:02}")).collect(),
    )
    .await?;
    wait_watcher(&watcher, &seen, BURST, "pods").await?;
    let burst_wall = wall.elapsed();
    let mut burst = Phase::default();
    account(&mut burst, &created, &seen, steps)?;
    delete_all(&pods).await?;

    // The floor: ctr on the same containerd and image, with the pods gone.
    let sock = node.socket.display().to_string();
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
    eprintln!("floor: {SINGLE_ROUNDS} x ctr run -d one at a time");
    let mut floor_single = Samples::default();
    for i in 0..SINGLE_ROUNDS {
        floor_single.extend([ctr_run(
            &sock,
            image,
            &format!("one-{i:02}"),
            &node.cgroup_parent,
        )?]);
    }
    ctr_remove(&sock, (0..SINGLE_ROUNDS).map(|i| format!("one-{i:02}")));
    eprintln!("floor: {BURST} x ctr run -d at once");
    let started = Instant::now();
    let runs: Vec<_> = (0..BURST)
        .map(|i| {
            let (sock, image) = (sock.clone(), image.to_string());
            let parent = node.cgroup_parent.clone();
            tokio::task::spawn_blocking(move || ctr_run(&sock, &image, &format!("burst-{i:02}"), &parent))
        })
        .collect();
    let mut floor_burst = Samples::default();
    for run in runs {
        floor_burst.extend([run.await??]);
    }
    let floor_burst_wall = started.elapsed();
    ctr_remove(&sock, (0..BURST).map(|i| format!("burst-{i:02}")));
    Ok(Results {
        single,
        burst,
        burst_wall,
        floor_single,
        floor_burst,
        floor_burst_wall,
    })
}

/// `ctr run -d IMAGE ID sleep 3600` on the node's containerd, in a cgroup below the node's
/// parent (so the node's cleanup covers it); how long the command took (it returns once
/// the task started).
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
            "-d",
            "--cgroup",
            &cgroup,
            image,
            id,
        ])
        .args(COMMAND)
        .stdin(Stdio::null())
        .output()
        .context("running ctr run")?;
    let took = started.elapsed();
    if !out.status.success() {
        anyhow::bail!(
            "ctr run -d {id} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(took)
}

/// Kills and removes the floor's containers `ids` (best effort: the node's cleanup kills
/// whatever is left).
fn ctr_remove(sock: &str, ids: impl Iterator<Item = String>) {
    for id in ids {
        for args in [vec!["task", "delete", "--force"], vec!["container", "delete"]] {
            let _ = Command::new("ctr")
                .args(["--address", sock, "-n", CTR_NAMESPACE])
                .args(args)
                .arg(&id)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn pod_object(name: &str, image: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": image, "command": COMMAND}],
        },
    }))
    .expect("a valid pod")
}

fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio <= target {
        "met"
    } else {
        "**missed**"
    }
}

fn render(r: &Results) -> String {
    let single_p50 = r.single.startup.quantile_ms(0.5);
    let floor_p50 = r.floor_single.quantile_ms(0.5);
    let burst_p50 = r.burst.startup.quantile_ms(0.5);
    let burst_p99 = r.burst.startup.quantile_ms(0.99);
    let floor_burst_p50 = r.floor_burst.quantile_ms(0.5);
    let floor_burst_p99 = r.floor_burst.quantile_ms(0.99);
    let single_ratio = single_p50 / floor_p50;
    let burst_ratio = burst_p99 / floor_burst_p99;
    let mut s = String::new();
    let _ = writeln!(s, "## pods: startup latency on one node\n");
    let _ = writeln!(
        s,
        "Pods (one container, `{}`, image present) scheduled and started on one node, from \
         the create request to `Running` seen through a watch; floor: `ctr run -d` of the same \
         image and command on the same containerd, which returns once the task started.\n",
        COMMAND.join(" ")
    );
    let _ = writeln!(
        s,
        "| measure | rkube (ms) | `ctr run -d` (ms) | rkube / ctr | target |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| one pod at a time, p50 of {SINGLE_ROUNDS} | {single_p50:.0} | {floor_p50:.0} | {single_ratio:.2} | ≤ {TARGET_SINGLE} ({}) |",
        verdict(single_ratio, TARGET_SINGLE)
    );
    let _ = writeln!(
        s,
        "| {BURST} at once, p50 | {burst_p50:.0} | {floor_burst_p50:.0} | {:.2} | |",
        burst_p50 / floor_burst_p50
    );
    let _ = writeln!(
        s,
        "| {BURST} at once, p99 | {burst_p99:.0} | {floor_burst_p99:.0} | {burst_ratio:.2} | ≤ {TARGET_BURST} ({}) |",
        verdict(burst_ratio, TARGET_BURST)
    );
    let _ = writeln!(
        s,
        "| {BURST} at once, all done (wall) | {:.0} | {:.0} | {:.2} | |",
        r.burst_wall.as_secs_f64() * 1e3,
        r.floor_burst_wall.as_secs_f64() * 1e3,
        r.burst_wall.as_secs_f64() / r.floor_burst_wall.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "\nWhere the time goes: each step's start after the create request and its duration \
         (ms; p50 over the pods of the phase, and p99 for the burst). Steps of one pod can \
         overlap (the sandbox contains the network namespace and CNI ADD). Traced completely: \
         {} of {SINGLE_ROUNDS} single pods, {} of {BURST} burst pods.\n",
        r.single.traced, r.burst.traced
    );
    let _ = writeln!(
        s,
        "| step | one pod: starts at | takes | burst: starts at p50 / p99 | takes p50 / p99 |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for (step, what) in STEPS {
        let single = r.single.steps.get(step);
        let burst = r.burst.steps.get(step);
        let q = |x: Option<&(Samples, Samples)>, start: bool, p: f64| {
            x.map(|(a, b)| if start { a } else { b })
                .map(|v| v.quantile_ms(p))
                .filter(|v| !v.is_nan())
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "–".into())
        };
        let _ = writeln!(
            s,
            "| {what} (`{step}`) | {} | {} | {} / {} | {} / {} |",
            q(single, true, 0.5),
            q(single, false, 0.5),
            q(burst, true, 0.5),
            q(burst, true, 0.99),
            q(burst, false, 0.5),
            q(burst, false, 0.99),
        );
    }
    s
}
