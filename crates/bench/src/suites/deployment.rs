//! A Deployment scaled from 0 to 1,000 replicas on 100 hollow nodes (issue 5): the real
//! apiserver (sled in a temp dir), scheduler and controller-manager, each started through
//! its library `run` function on its own tokio runtime in this process, as separate
//! processes would share the machine's cores. The nodes are Node objects with 4 cpu /
//! 32 GiB / 110 pods, Ready, with Leases renewed every 10 s (see [`crate::hollow`]); no
//! kubelet runs, so a pod's life here ends when it is bound.
//!
//! Timed from just before the `replicas: 1000` patch: until the watch has shown all 1,000
//! pods (created by the replicaset controller, at most 500 per sync, Kubernetes'
//! burstReplicas) and until it has shown all of them bound by the scheduler.
//!
//! The floor, on a fresh cluster of the same shape in the same run: the same 1,000 pods
//! (same template, `generateName`) created directly by a client, 64 in flight over 8
//! connections, bound by the same scheduler. The ratio is what the controller-manager's
//! loops cost on top of the apiserver and scheduler.

use crate::Args;
use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use rkube_api::apps::v1::{Deployment, ReplicaSet};
use rkube_api::core::v1::{Node, Pod};
use rkube_api::Resource;
use rkube_client::{Api, Client, ListParams, WatchEvent, WatchParams};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) const NODES: usize = 100;
const REPLICAS: usize = 1_000;
const NAMESPACE: &str = "default";
const APP: &str = "bench";
const CONNECTIONS: usize = 8;
const IN_FLIGHT: usize = 64;
/// Upper bound for every wait.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// Kubernetes' density SLO context: about 20 pods/s sustained at 100-node clusters.
const UPSTREAM_PODS_PER_S: f64 = 20.0;

#[derive(Clone, Copy, PartialEq)]
enum Creator {
    /// The replicaset controller, after a Deployment is scaled to 1,000.
    Deployment,
    /// A client creating the pods itself.
    Client,
}

struct Timings {
    /// From the start to the watch showing the last pod.
    exist: Duration,
    /// From the start to the watch showing the last pod bound.
    bound: Duration,
    /// Pods in the namespace once all were bound (over-creation would show here).
    listed: usize,
    setup: Duration,
}

pub fn run(args: &Args) -> anyhow::Result<String> {
    std::fs::create_dir_all(&args.tmp_dir)
        .with_context(|| format!("cannot create {}", args.tmp_dir.display()))?;
    eprintln!("deployment: scaling a Deployment from 0 to {REPLICAS}");
    let deployment = scenario(args, Creator::Deployment)?;
    eprintln!(
        "deployment: all bound after {:.2} s; floor: the same pods from a client",
        deployment.bound.as_secs_f64()
    );
    let floor = scenario(args, Creator::Client)?;
    Ok(render(&deployment, &floor))
}

fn runtime(name: &str, threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("cannot build the {name} runtime"))
}

/// One fresh cluster (apiserver, scheduler, controller-manager, hollow nodes) and one way of
/// creating the 1,000 pods.
fn scenario(args: &Args, creator: Creator) -> anyhow::Result<Timings> {
    with_cluster(args, "deployment", |url, client, setup| async move {
        let mut t = measure(&url, &client, creator).await?;
        t.setup = setup;
        Ok(t)
    })
}

/// Runs `body` against a fresh cluster: the apiserver (sled in a temp dir), scheduler and
/// controller-manager each on its own runtime (threads named after them), [`NODES`] hollow
/// nodes heartbeating, warmed up; `body` gets the URL, a client and how long setup took.
pub(super) fn with_cluster<T, F, Fut>(args: &Args, name: &str, body: F) -> anyhow::Result<T>
where
    F: FnOnce(String, Client, Duration) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let dir = tempfile::Builder::new()
        .prefix(&format!("rkube-bench-{name}-"))
        .tempdir_in(&args.tmp_dir)
        .with_context(|| format!("cannot create a directory in {}", args.tmp_dir.display()))?;
    let server_rt = runtime("apiserver", 2)?;
    let scheduler_rt = runtime("scheduler", 2)?;
    let cm_rt = runtime("controller-manager", 2)?;
    let client_rt = runtime("bench-client", 2)?;
    let server = server_rt
        .block_on(rkube_apiserver::start(rkube_apiserver::Config::local(dir.path())))
        .context("cannot start rkube's apiserver")?;
    let url = server.url();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let result = client_rt.block_on(async {
        let client = Client::connect(&url).context("cannot connect to the apiserver")?;
        let started = Instant::now();
        crate::hollow::create(&client, NODES, IN_FLIGHT).await?;
        let heartbeat = crate::hollow::heartbeat(client.clone(), NODES);
        let scheduler = scheduler_rt.spawn(rkube_scheduler::run(
            rkube_scheduler::Config::new(&url),
            stopped(stop_rx.clone()),
        ));
        let cm = cm_rt.spawn(rkube_controller_manager::run(
            rkube_controller_manager::Config::new(&url),
            stopped(stop_rx.clone()),
        ));
        let result = async {
            warm_up(&client).await?;
            body(url.clone(), client.clone(), started.elapsed()).await
        }
        .await;
        heartbeat.abort();
        let _ = stop_tx.send(true);
        for (name, task) in [("scheduler", scheduler), ("controller-manager", cm)] {
            match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) if result.is_ok() => return Err(e.context(format!("the {name} failed"))),
                Ok(Err(e)) if result.is_ok() => anyhow::bail!("the {name} panicked: {e}"),
                Err(_) if result.is_ok() => anyhow::bail!("the {name} did not stop within 10 s"),
                _ => {}
            }
        }
        result
    });
    let stopping = server_rt.block_on(server.stop());
    drop(cm_rt);
    drop(scheduler_rt);
    drop(client_rt);
    drop(server_rt);
    let t = result?;
    stopping.context("stopping the apiserver")?;
    Ok(t)
}

/// Waits until the controller-manager has given every node a podCIDR (node-ipam: its
/// informers are synced and its loops work) and the scheduler has bound a first pod.
async fn warm_up(client: &Client) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + MAX_WAIT;
    loop {
        let list = nodes.list(&ListParams::default()).await?;
        let with_cidr = list
            .items
            .iter()
            .filter(|n| n.spec.as_ref().is_some_and(|s| !s.pod_cidr.is_empty()))
            .count();
        if with_cidr == NODES {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {with_cidr} of {NODES} hollow nodes got a podCIDR from the controller-manager within {} s",
            MAX_WAIT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let mut warm = pod_template();
    warm.metadata_mut().generate_name.clear();
    warm.metadata_mut().name = "warm-up".into();
    warm.metadata_mut().labels.clear();
    pods.create(&warm).await.context("creating the warm-up pod")?;
    loop {
        let p = pods.get("warm-up").await?;
        if p.spec.as_ref().is_some_and(|s| !s.node_name.is_empty()) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the scheduler did not bind the warm-up pod within {} s",
            MAX_WAIT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(super) fn template_json() -> serde_json::Value {
    serde_json::json!({
        "metadata": {"labels": {"app": APP}},
        "spec": {
            "containers": [{
                "name": "main",
                "image": "registry.k8s.io/pause:3.9",
                "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}},
            }],
        },
    })
}

/// The pod the Deployment's template describes, as a client would create it.
fn pod_template() -> Pod {
    let mut pod: Pod = serde_json::from_value(template_json()).expect("a valid pod");
    pod.metadata_mut().generate_name = format!("{APP}-");
    pod.metadata_mut().namespace = NAMESPACE.into();
    pod
}

fn deployment() -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": APP, "namespace": NAMESPACE},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": APP}},
            "template": template_json(),
        },
    }))
    .expect("a valid deployment")
}

async fn measure(url: &str, client: &Client, creator: Creator) -> anyhow::Result<Timings> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    if creator == Creator::Deployment {
        // Created at 0 and given its (empty) ReplicaSet first, so the timed part is the
        // scale-up alone.
        deployments
            .create(&deployment())
            .await
            .context("creating the Deployment")?;
        let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NAMESPACE);
        let deadline = Instant::now() + MAX_WAIT;
        while sets.list(&ListParams::default()).await?.items.is_empty() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the deployment controller made no ReplicaSet for Deployment {APP} within {} s",
                MAX_WAIT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let rv = pods.list(&ListParams::default()).await?.resource_version;

    // First sight and binding of each pod, from a watch opened before the start.
    #[derive(Default)]
    struct Seen {
        exist: HashMap<String, Instant>,
        bound: HashMap<String, Instant>,
    }
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let mut watch = pods
        .watch(&WatchParams {
            resource_version: rv,
            ..Default::default()
        })
        .await
        .context("watching pods")?;
    let recorder = seen.clone();
    let watcher = tokio::spawn(async move {
        while let Some(ev) = watch.next().await {
            let Ok(WatchEvent::Modified(p) | WatchEvent::Added(p)) = ev else {
                continue;
            };
            if p.metadata().labels.get("app").map(String::as_str) != Some(APP) {
                continue;
            }
            let now = Instant::now();
            let mut s = recorder.lock().unwrap_or_else(|e| e.into_inner());
            s.exist.entry(p.name().to_string()).or_insert(now);
            if p.spec.as_ref().is_some_and(|s| !s.node_name.is_empty()) {
                s.bound.entry(p.name().to_string()).or_insert(now);
                if s.bound.len() >= REPLICAS {
                    break;
                }
            }
        }
    });

    let start = Instant::now();
    match creator {
        Creator::Deployment => {
            deployments
                .patch_merge(APP, &serde_json::json!({"spec": {"replicas": REPLICAS}}))
                .await
                .context("scaling the Deployment")?;
        }
        Creator::Client => {
            let cs: Vec<Client> = (0..CONNECTIONS)
                .map(|_| Client::connect(url).context("cannot connect to the apiserver"))
                .collect::<anyhow::Result<_>>()?;
            let template = pod_template();
            futures::stream::iter(0..REPLICAS)
                .map(|i| {
                    let api: Api<Pod> = Api::namespaced(cs[i % CONNECTIONS].clone(), NAMESPACE);
                    let pod = template.clone();
                    async move { api.create(&pod).await.map(|_| ()) }
                })
                .buffer_unordered(IN_FLIGHT)
                .try_collect::<Vec<()>>()
                .await
                .context("creating pods")?;
        }
    }
    let deadline = start + MAX_WAIT;
    while !watcher.is_finished() {
        if Instant::now() > deadline {
            watcher.abort();
            let s = seen.lock().unwrap_or_else(|e| e.into_inner());
            anyhow::bail!(
                "after {} s only {} of {REPLICAS} pods exist and {} are bound",
                MAX_WAIT.as_secs(),
                s.exist.len(),
                s.bound.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last = |m: &HashMap<String, Instant>| {
        m.values()
            .max()
            .map(|t| t.saturating_duration_since(start))
            .unwrap_or_default()
    };
    let (shown, exist, bound) = {
        let s = seen.lock().unwrap_or_else(|e| e.into_inner());
        (s.exist.len(), last(&s.exist), last(&s.bound))
    };
    anyhow::ensure!(
        shown >= REPLICAS,
        "the watch ended after showing only {shown} pods"
    );
    let listed = pods
        .list(&ListParams {
            label_selector: format!("app={APP}"),
            ..Default::default()
        })
        .await?
        .items
        .len();
    Ok(Timings {
        exist,
        bound,
        listed,
        setup: Duration::ZERO,
    })
}

fn render(d: &Timings, f: &Timings) -> String {
    let rate = |t: &Timings| REPLICAS as f64 / t.bound.as_secs_f64();
    let ms = |x: Duration| x.as_secs_f64() * 1e3;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## deployment: 0 → {REPLICAS} replicas on {NODES} hollow nodes\n"
    );
    let _ = writeln!(
        s,
        "Real apiserver (sled, durable writes), scheduler and controller-manager (all loops) in one \
         process on {} cores, each on its own runtime; {NODES} hollow nodes with Leases renewed every \
         10 s, no kubelet. Times from the `replicas: {REPLICAS}` patch, seen through a watch. Floor: a \
         fresh cluster of the same shape, where a client creates the same {REPLICAS} pods itself \
         ({IN_FLIGHT} in flight) and the same scheduler binds them.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let _ = writeln!(
        s,
        "| metric | Deployment | floor: client creates | Deployment / floor |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| all {REPLICAS} pods exist, ms | {:.0} | {:.0} | {:.2} |",
        ms(d.exist),
        ms(f.exist),
        d.exist.as_secs_f64() / f.exist.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| all {REPLICAS} pods bound, ms | {:.0} | {:.0} | {:.2} |",
        ms(d.bound),
        ms(f.bound),
        d.bound.as_secs_f64() / f.bound.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| pods/s, start to last bind | {:.0} | {:.0} | {:.2} |",
        rate(d),
        rate(f),
        rate(d) / rate(f)
    );
    let _ = writeln!(
        s,
        "| pods in the namespace at the end | {} | {} | |",
        d.listed, f.listed
    );
    let _ = writeln!(
        s,
        "| cluster setup ({NODES} nodes, podCIDRs, first bind), ms | {:.0} | {:.0} | |",
        ms(d.setup),
        ms(f.setup)
    );
    let _ = writeln!(
        s,
        "\nContext, not measured here: Kubernetes' density SLO asks for about {UPSTREAM_PODS_PER_S:.0} \
         pods/s at 100-node clusters; this run's Deployment reached {:.0} pods/s ({:.0}×).",
        rate(d),
        rate(d) / UPSTREAM_PODS_PER_S
    );
    s
}
