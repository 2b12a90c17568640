//! Scheduling throughput through the real apiserver, the case upstream's
//! scheduler_perf calls SchedulingBasic: 5,000 hollow nodes (Node objects
//! with allocatable 4 cpu / 32 GiB / 110 pods and a Ready condition; no
//! kubelet), then 10,000 pods requesting 100m cpu and 500 MiB, created as
//! fast as the apiserver takes them (64 in flight over 8 connections).
//!
//! Reported: pods/s from the first create to the last bind, and per pod
//! the time from its create being acknowledged to the watch showing it
//! bound (p50/p99). The apiserver, the scheduler and the clients each run
//! on their own tokio runtime in this process, sharing the machine's cores
//! as separate processes would. The upstream anchor is its CI floor for
//! the same case: 680 pods/s on larger machines.

use crate::pod_watch;
use crate::stats::Samples;
use crate::Args;
use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use rkube_api::core::v1::{Container, Node, NodeCondition, NodeStatus, Pod, PodSpec, ResourceRequirements};
use rkube_api::quantity::Quantity;
use rkube_api::Resource;
use rkube_client::{Api, Client};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODES: usize = 5_000;
const PODS: usize = 10_000;
const CONNECTIONS: usize = 8;
const IN_FLIGHT: usize = 64;
const NAMESPACE: &str = "default";
/// Upper bound for the whole scheduling phase.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// Upstream's CI floor for SchedulingBasic 5000 nodes / 10000 pods.
const UPSTREAM_FLOOR: f64 = 680.0;

pub fn run(args: &Args) -> anyhow::Result<String> {
    std::fs::create_dir_all(&args.tmp_dir)
        .with_context(|| format!("cannot create {}", args.tmp_dir.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("rkube-bench-sched-")
        .tempdir_in(&args.tmp_dir)
        .with_context(|| format!("cannot create a directory in {}", args.tmp_dir.display()))?;
    let rt = |name: &str, threads: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()
            .with_context(|| format!("cannot build the {name} runtime"))
    };
    let server_rt = rt("apiserver", 2)?;
    let scheduler_rt = rt("scheduler", 2)?;
    let client_rt = rt("bench-client", 2)?;
    let server = server_rt
        .block_on(rkube_apiserver::start(rkube_apiserver::Config::local(dir.path())))
        .context("cannot start rkube's apiserver")?;
    let url = server.url();
    eprintln!("apiserver on {url}; creating {NODES} hollow nodes");
    let result = client_rt.block_on(measure(&url, &scheduler_rt));
    let stopped = server_rt.block_on(server.stop());
    drop(scheduler_rt);
    drop(client_rt);
    drop(server_rt);
    let r = result?;
    stopped.context("stopping the apiserver")?;
    Ok(render(&r))
}

struct Results {
    node_setup: Duration,
    elapsed: Duration,
    latencies: Samples,
    create_elapsed: Duration,
    bind_failures: u64,
    events_dropped: u64,
}

fn clients(url: &str) -> anyhow::Result<Vec<Client>> {
    (0..CONNECTIONS)
        .map(|_| Client::connect(url).context("cannot connect to the apiserver"))
        .collect()
}

fn hollow_node(i: usize) -> Node {
    let mut n = Node::default();
    let name = format!("hollow-{i:05}");
    n.metadata_mut()
        .labels
        .insert("kubernetes.io/hostname".into(), name.clone());
    n.metadata_mut().name = name;
    n
}

fn hollow_status(mut n: Node) -> Node {
    let res = BTreeMap::from([
        ("cpu".to_string(), Quantity::new("4")),
        ("memory".to_string(), Quantity::new("32Gi")),
        ("pods".to_string(), Quantity::new("110")),
    ]);
    n.status = Some(NodeStatus {
        capacity: res.clone(),
        allocatable: res,
        conditions: vec![NodeCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            reason: "KubeletReady".into(),
            last_heartbeat_time: chrono_now(),
            ..Default::default()
        }],
        ..Default::default()
    });
    n
}

fn chrono_now() -> String {
    // Seconds since the epoch are enough for a heartbeat nobody reads.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs}")
}

fn bench_pod(name: &str) -> Pod {
    let requests = BTreeMap::from([
        ("cpu".to_string(), Quantity::new("100m")),
        ("memory".to_string(), Quantity::new("500Mi")),
    ]);
    let mut p = Pod {
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "pause".into(),
                image: "registry.k8s.io/pause:3.9".into(),
                resources: Some(ResourceRequirements {
                    requests,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    p.metadata_mut().name = name.into();
    p.metadata_mut().namespace = NAMESPACE.into();
    p
}

async fn measure(url: &str, scheduler_rt: &tokio::runtime::Runtime) -> anyhow::Result<Results> {
    let cs = clients(url)?;
    let started = Instant::now();
    futures::stream::iter(0..NODES)
        .map(|i| {
            let nodes: Api<Node> = Api::all(cs[i % CONNECTIONS].clone());
            async move {
                let created = nodes.create(&hollow_node(i)).await?;
                nodes.update_status(&hollow_status(created)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .context("creating hollow nodes")?;
    let node_setup = started.elapsed();
    eprintln!(
        "{NODES} nodes in {:.1} s; starting the scheduler",
        node_setup.as_secs_f64()
    );

    let mut config = rkube_scheduler::Config::new(url);
    config.pod_initial_backoff = Duration::from_secs(1);
    let scheduler = Arc::new(rkube_scheduler::Scheduler::new(config, Client::connect(url)?));
    let stats = scheduler.stats.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sched_task = scheduler_rt.spawn(scheduler.clone().run(async move {
        let _ = stop_rx.await;
    }));

    // The scheduler is ready when it binds a first pod.
    let pods: Api<Pod> = Api::namespaced(cs[0].clone(), NAMESPACE);
    pods.create(&bench_pod("warm-up")).await?;
    let warm_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = pods.get("warm-up").await?;
        if p.spec.as_ref().is_some_and(|s| !s.node_name.is_empty()) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < warm_deadline,
            "the scheduler did not bind a warm-up pod within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rv = pods.get("warm-up").await?.metadata().resource_version.clone();

    // Bind times, from a watch opened before the first create (after the
    // warm-up pod's binding, so it is not counted).
    let (bound_at, watcher) = pod_watch::first_seen(&pods, rv, PODS, |p| {
        p.spec.as_ref().is_some_and(|s| !s.node_name.is_empty())
    })
    .await?;

    eprintln!("creating {PODS} pods");
    let created_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let first_create = Instant::now();
    futures::stream::iter(0..PODS)
        .map(|i| {
            let api: Api<Pod> = Api::namespaced(cs[i % CONNECTIONS].clone(), NAMESPACE);
            let created_at = created_at.clone();
            async move {
                let name = format!("pod-{i:05}");
                api.create(&bench_pod(&name)).await?;
                created_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name, Instant::now());
                anyhow::Ok(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .context("creating pods")?;
    let create_elapsed = first_create.elapsed();
    eprintln!(
        "{PODS} pods created in {:.1} s; waiting for binds",
        create_elapsed.as_secs_f64()
    );
    let deadline = Instant::now() + MAX_WAIT;
    loop {
        let n = bound_at.lock().unwrap_or_else(|e| e.into_inner()).len();
        if n >= PODS || watcher.is_finished() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {n} of {PODS} pods bound after {} s",
            MAX_WAIT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(());
    let _ = sched_task.await;

    let bound = bound_at.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let created = created_at.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut latencies = Samples::default();
    let mut last = first_create;
    for (name, c) in &created {
        let b = bound
            .get(name)
            .with_context(|| format!("pod {name} was never seen bound"))?;
        latencies.extend([b.saturating_duration_since(*c)]);
        last = last.max(*b);
    }
    Ok(Results {
        node_setup,
        elapsed: last - first_create,
        latencies,
        create_elapsed,
        bind_failures: stats.bind_failures.load(Ordering::Relaxed),
        events_dropped: stats.events_dropped.load(Ordering::Relaxed),
    })
}

fn render(r: &Results) -> String {
    let rate = PODS as f64 / r.elapsed.as_secs_f64();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## scheduler: SchedulingBasic, {NODES} hollow nodes, {PODS} pods\n"
    );
    let _ = writeln!(
        s,
        "Everything through the real apiserver (sled store, fsync per write group) on this machine \
         ({} cores). Pods request 100m cpu / 500 MiB; nodes offer 4 cpu / 32 GiB / 110 pods.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let _ = writeln!(s, "| metric | rkube | upstream CI floor |");
    let _ = writeln!(s, "| --- | ---: | ---: |");
    let _ = writeln!(
        s,
        "| pods/s, first create to last bind | {rate:.0} | {UPSTREAM_FLOOR:.0} |"
    );
    let _ = writeln!(
        s,
        "| scheduling latency p50 (create acked → bound) | {:.1} ms | |",
        r.latencies.quantile_ms(0.5)
    );
    let _ = writeln!(
        s,
        "| scheduling latency p99 | {:.1} ms | |",
        r.latencies.quantile_ms(0.99)
    );
    let _ = writeln!(
        s,
        "| creates alone: pods/s | {:.0} | |",
        PODS as f64 / r.create_elapsed.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| node setup ({NODES} create + status) | {:.1} s | |",
        r.node_setup.as_secs_f64()
    );
    let _ = writeln!(s, "| bind failures (retried) | {} | |", r.bind_failures);
    let _ = writeln!(
        s,
        "| Scheduled events dropped (apiserver busy) | {} | |",
        r.events_dropped
    );
    let _ = writeln!(
        s,
        "\nTarget: at least 1,000 pods/s on this machine. Since pods are created as fast as the apiserver \
         takes them, the rate cannot exceed the create rate; latency includes the time a pod waits in the \
         scheduler's queue behind the burst."
    );
    s
}
