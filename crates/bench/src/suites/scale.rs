//! The scale envelope (issue 21): how the control plane grows to 1,000 nodes and 30,000
//! pods, then 5,000 nodes. The release `rkube-apiserver`, `rkube-scheduler` and
//! `rkube-controller-manager` run as their own processes (plain text on 127.0.0.1, sled in
//! a temp dir, every controller on), so each one's memory is its own. The nodes are
//! hollow, as Kubernetes' kubemark makes them: Node objects and `kube-node-lease` Leases
//! that this benchmark renews every 10 s as kubelets do, and no kubelet; a pod's life ends
//! when it is bound.
//!
//! Measured, in this order: RSS of the three daemons on the empty cluster, with the
//! nodes, then with the pods bound (and bytes per node and per pod from the differences);
//! the scheduler's pods/s from the first create to the last bind; the create latency of
//! those pods and of the Lease renewals (Kubernetes' mutating API call SLO: p99 ≤ 1 s); a
//! list of all pods in pages of 500 as informers and kubectl list (the list SLO: p99
//! ≤ 30 s for cluster scope); one ConfigMap write seen by 1,000 watchers (delivery
//! p50/p99); how long the node-lifecycle controller takes to mark 100 nodes whose Leases
//! stopped; and the daemons' RSS and the heartbeat write load with 5,000 nodes.
//!
//! Every wait is bounded, so the suite ends by itself in a few minutes.

use crate::process::{self, mib, Daemon, Memory};
use crate::stats::Samples;
use crate::Args;
use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use rkube_api::coordination::v1::Lease;
use rkube_api::core::v1::{ConfigMap, Namespace, Node, Pod};
use rkube_api::Resource;
use rkube_client::{Api, Client, ListParams, WatchEvent, WatchParams};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODES: usize = 1_000;
const MORE_NODES: usize = 5_000;
const PODS: usize = 30_000;
const NAMESPACE: &str = "scale";
const CONNECTIONS: usize = 8;
const IN_FLIGHT: usize = 64;
const LISTS: usize = 10;
const WATCHERS: usize = 1_000;
const WATCH_CONNECTIONS: usize = 16;
const WATCH_WRITES: usize = 20;
const LOST: usize = 100;
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// Upper bound for every wait.
const MAX_WAIT: Duration = Duration::from_secs(300);

pub fn run(args: &Args) -> anyhow::Result<String> {
    let binaries = [
        process::require("rkube-apiserver")?,
        process::require("rkube-scheduler")?,
        process::require("rkube-controller-manager")?,
    ];
    std::fs::create_dir_all(&args.tmp_dir)
        .with_context(|| format!("cannot create {}", args.tmp_dir.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("rkube-bench-scale-")
        .tempdir_in(&args.tmp_dir)
        .with_context(|| format!("cannot create a directory in {}", args.tmp_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let r = rt.block_on(measure(&binaries, dir.path()))?;
    Ok(render(&r))
}

#[derive(Default)]
struct Results {
    empty: [Memory; 3],
    nodes: [Memory; 3],
    pods: [Memory; 3],
    more_nodes: [Memory; 3],
    schedule: Duration,
    creates: Samples,
    renewals: Samples,
    renewals_per_s: f64,
    more_renewals: Samples,
    more_renewals_per_s: f64,
    lists: Samples,
    listed: usize,
    deliveries: Samples,
    delivered: usize,
    lifecycle: Duration,
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|a| a.to_string()).collect()
}

async fn measure(binaries: &[std::path::PathBuf; 3], dir: &Path) -> anyhow::Result<Results> {
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let data = dir.join("apiserver");
    let mut apiserver = Daemon::start(
        "apiserver",
        None,
        &binaries[0],
        &s(&[
            "--insecure",
            "--listen",
            &listen,
            "--data-dir",
            &data.display().to_string(),
            "--health-addr",
            "off",
            "--max-watches-per-user",
            "0",
            "--max-requests-inflight-per-user",
            "0",
        ]),
        dir,
    )?;
    let client = Client::connect(&url).context("cannot connect to the apiserver")?;
    wait_for(&mut [&mut apiserver], "the apiserver answers", || async {
        Ok(Api::<Namespace>::all(client.clone())
            .list(&ListParams::default())
            .await
            .is_ok())
    })
    .await?;
    let mut scheduler = Daemon::start(
        "scheduler",
        None,
        &binaries[1],
        &s(&["--apiserver", &url, "--health-addr", "127.0.0.1:0"]),
        dir,
    )?;
    let mut cm = Daemon::start(
        "controller-manager",
        None,
        &binaries[2],
        // A cluster CIDR with room for a /24 per node at 5,000 nodes.
        &s(&[
            "--apiserver",
            &url,
            "--health-addr",
            "127.0.0.1:0",
            "--cluster-cidr",
            "10.0.0.0/8",
        ]),
        dir,
    )?;
    let mut r = Results::default();
    tokio::time::sleep(Duration::from_secs(2)).await;
    r.empty = settled([&mut apiserver, &mut scheduler, &mut cm]).await?;

    eprintln!("scale: {NODES} hollow nodes");
    crate::hollow::create(&client, NODES, IN_FLIGHT).await?;
    let heartbeat = Heartbeat::start(client.clone(), NODES);
    let result = async {
        wait_for(
            &mut [&mut apiserver, &mut scheduler, &mut cm],
            "every node has a podCIDR",
            || nodes_have_cidrs(&client, NODES),
        )
        .await?;
        r.nodes = settled([&mut apiserver, &mut scheduler, &mut cm]).await?;

        eprintln!("scale: {PODS} pods");
        Api::<Namespace>::all(client.clone())
            .create(&serde_json::from_value(
                serde_json::json!({"metadata": {"name": NAMESPACE}}),
            )?)
            .await
            .context("creating the namespace")?;
        let (schedule, creates) = create_and_bind(&url, &client).await?;
        r.schedule = schedule;
        r.creates = creates;
        // The renewals of a full round with every pod in place.
        let renewals = heartbeat.measure_round().await;
        r.renewals_per_s = NODES as f64 / RENEW_EVERY.as_secs_f64();
        r.renewals = renewals;
        r.pods = settled([&mut apiserver, &mut scheduler, &mut cm]).await?;

        eprintln!("scale: {LISTS} lists of every pod");
        let pods: Api<Pod> = Api::all(client.clone());
        for _ in 0..LISTS {
            let started = Instant::now();
            let list = pods.list_all(&ListParams::default()).await?;
            r.lists.extend([started.elapsed()]);
            r.listed = list.items.len();
        }

        eprintln!("scale: {WATCHERS} watchers");
        (r.deliveries, r.delivered) = fan_out(&url).await?;

        eprintln!("scale: {LOST} nodes stop renewing their Leases");
        let stopped = heartbeat.lose(LOST).await;
        wait_for(
            &mut [&mut apiserver, &mut scheduler, &mut cm],
            "the lost nodes are marked not ready",
            || lost_marked(&client),
        )
        .await?;
        r.lifecycle = stopped.elapsed();

        eprintln!("scale: {MORE_NODES} hollow nodes");
        create_more(&client, NODES, MORE_NODES).await?;
        heartbeat.grow(MORE_NODES);
        wait_for(
            &mut [&mut apiserver, &mut scheduler, &mut cm],
            "every node has a podCIDR",
            || nodes_have_cidrs(&client, MORE_NODES),
        )
        .await?;
        r.more_renewals = heartbeat.measure_round().await;
        r.more_renewals_per_s = (MORE_NODES - LOST) as f64 / RENEW_EVERY.as_secs_f64();
        r.more_nodes = settled([&mut apiserver, &mut scheduler, &mut cm]).await?;
        anyhow::Ok(())
    }
    .await;
    heartbeat.stop();
    for d in [&mut cm, &mut scheduler, &mut apiserver] {
        d.stop();
    }
    result?;
    Ok(r)
}

async fn wait_for<F, Fut>(daemons: &mut [&mut Daemon], what: &str, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + MAX_WAIT;
    loop {
        for d in daemons.iter_mut() {
            d.check_running()?;
        }
        if done().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = daemons
                .iter()
                .map(|d| format!("{}:\n{}", d.name, d.log_tail()))
                .collect();
            anyhow::bail!(
                "not reached within {} s: {what}; the end of the logs:\n{}",
                MAX_WAIT.as_secs(),
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// VmRSS of each daemon once all three stop moving: five 1 s samples within 1 % (at most
/// 30 s).
async fn settled(daemons: [&mut Daemon; 3]) -> anyhow::Result<[Memory; 3]> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut samples: Vec<[Memory; 3]> = Vec::new();
    loop {
        let mut now = [Memory::default(); 3];
        for (i, d) in daemons.iter().enumerate() {
            now[i] = d.memory()?;
        }
        samples.push(now);
        let last = &samples[samples.len().saturating_sub(5)..];
        let steady = last.len() == 5
            && (0..3).all(|i| {
                let lo = last.iter().map(|m| m[i].rss).min().unwrap_or(0);
                let hi = last.iter().map(|m| m[i].rss).max().unwrap_or(0);
                (hi - lo) * 100 <= hi
            });
        if steady || Instant::now() > deadline {
            return Ok(now);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn nodes_have_cidrs(client: &Client, count: usize) -> anyhow::Result<bool> {
    let list = Api::<Node>::all(client.clone())
        .list_all(&ListParams::default())
        .await?;
    Ok(list.items.len() == count
        && list
            .items
            .iter()
            .all(|n| n.spec.as_ref().is_some_and(|s| !s.pod_cidr.is_empty())))
}

/// Nodes `from..to`, as [`crate::hollow::create`] makes them.
async fn create_more(client: &Client, from: usize, to: usize) -> anyhow::Result<()> {
    // hollow::create numbers from 0; the nodes below `from` exist already.
    let nodes: Api<Node> = Api::all(client.clone());
    let created = crate::hollow::create_range(client, from..to, IN_FLIGHT).await;
    created.with_context(|| format!("creating nodes {from}..{to}"))?;
    let count = nodes.list_all(&ListParams::default()).await?.items.len();
    anyhow::ensure!(count == to, "{count} nodes after creating up to {to}");
    Ok(())
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("pod-{i:05}"), "namespace": NAMESPACE, "labels": {"app": "scale"}},
        "spec": {"containers": [{
            "name": "main",
            "image": "registry.k8s.io/pause:3.9",
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
        }]},
    }))
    .expect("a valid pod")
}

/// Creates the pods (8 connections, 64 in flight) and waits until a watch has shown every
/// one bound: the time from the first create to the last bind, and the create latencies.
async fn create_and_bind(url: &str, client: &Client) -> anyhow::Result<(Duration, Samples)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let mut events = pods.watch(&WatchParams::default()).await?;
    let bound = tokio::spawn(async move {
        let mut bound = std::collections::HashSet::new();
        while let Some(ev) = events.next().await {
            if let Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)) = ev {
                if p.spec.as_ref().is_some_and(|s| !s.node_name.is_empty()) {
                    bound.insert(p.name().to_string());
                    if bound.len() == PODS {
                        return Some(Instant::now());
                    }
                }
            }
        }
        None
    });
    let cs: Vec<Client> = (0..CONNECTIONS)
        .map(|_| Client::connect(url).context("cannot connect to the apiserver"))
        .collect::<anyhow::Result<_>>()?;
    let cs = &cs;
    let started = Instant::now();
    let latencies: Vec<Duration> = futures::stream::iter(0..PODS)
        .map(|i| async move {
            let api: Api<Pod> = Api::namespaced(cs[i % CONNECTIONS].clone(), NAMESPACE);
            let t = Instant::now();
            api.create(&pod(i))
                .await
                .with_context(|| format!("creating pod pod-{i:05}"))?;
            anyhow::Ok(t.elapsed())
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    let mut creates = Samples::default();
    creates.extend(latencies);
    let last = tokio::time::timeout(MAX_WAIT, bound)
        .await
        .context("the scheduler did not bind every pod within the bound")??
        .context("the watch of the pods ended before every pod was bound")?;
    Ok((last - started, creates))
}

/// One ConfigMap write at a time, each seen by [`WATCHERS`] watches (over
/// [`WATCH_CONNECTIONS`] connections): the delay from the create call to each watcher's
/// event, and how many of the `WATCHERS x WATCH_WRITES` arrived.
async fn fan_out(url: &str) -> anyhow::Result<(Samples, usize)> {
    let ns = "fanout";
    let client = Client::connect(url)?;
    Api::<Namespace>::all(client.clone())
        .create(&serde_json::from_value(
            serde_json::json!({"metadata": {"name": ns}}),
        )?)
        .await
        .context("creating the fan-out namespace")?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let cs: Vec<Client> = (0..WATCH_CONNECTIONS)
        .map(|_| Client::connect(url).context("cannot connect to the apiserver"))
        .collect::<anyhow::Result<_>>()?;
    let mut streams = Vec::with_capacity(WATCHERS);
    for i in 0..WATCHERS {
        let api: Api<ConfigMap> = Api::namespaced(cs[i % WATCH_CONNECTIONS].clone(), ns);
        let rv = api.list(&ListParams::default()).await?.resource_version;
        let wp = WatchParams {
            resource_version: rv,
            ..Default::default()
        };
        streams.push(api.watch(&wp).await.context("opening a watch")?);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let mut tasks = Vec::new();
    for mut stream in streams {
        let (tx, sent) = (tx.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = 0;
            while let Some(Ok(ev)) = stream.next().await {
                if let WatchEvent::Added(cm) = ev {
                    let at = Instant::now();
                    let from = sent
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(cm.name())
                        .copied();
                    if let Some(from) = from {
                        let _ = tx.send(at.saturating_duration_since(from));
                    }
                    seen += 1;
                    if seen == WATCH_WRITES {
                        return;
                    }
                }
            }
        }));
    }
    drop(tx);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for i in 0..WATCH_WRITES {
        let name = format!("fanout-{i:02}");
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns}, "data": {"i": i.to_string()},
        }))?;
        sent.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), Instant::now());
        cms.create(&cm)
            .await
            .with_context(|| format!("creating ConfigMap {name}"))?;
        // One write at a time, as a watcher's delay is what is measured, not a burst.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut samples = Samples::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut count = 0;
    while count < WATCHERS * WATCH_WRITES {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(d)) => {
                samples.extend([d]);
                count += 1;
            }
            _ => break,
        }
    }
    for t in tasks {
        t.abort();
    }
    Ok((samples, count))
}

async fn lost_marked(client: &Client) -> anyhow::Result<bool> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut marked = 0;
    for i in 0..LOST {
        let n = nodes.get(&crate::hollow::name(i)).await?;
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.r#type == "Ready"))
            .map(|c| c.status.as_str() == "True")
            .unwrap_or(false);
        if !ready {
            marked += 1;
        }
    }
    Ok(marked == LOST)
}

/// Renews hollow nodes' Leases every 10 s, as kubelets do, timing each renewal's write.
struct Heartbeat {
    shared: Arc<HeartbeatState>,
    task: tokio::task::JoinHandle<()>,
}

struct HeartbeatState {
    count: std::sync::atomic::AtomicUsize,
    /// Nodes below this stop renewing.
    lost: std::sync::atomic::AtomicUsize,
    /// The latencies of the last complete round, and when it started.
    last_round: Mutex<Option<(Instant, Samples)>>,
    round_done: tokio::sync::Notify,
    stopping: AtomicBool,
}

impl Heartbeat {
    fn start(client: Client, count: usize) -> Heartbeat {
        let shared = Arc::new(HeartbeatState {
            count: count.into(),
            lost: 0.into(),
            last_round: Mutex::new(None),
            round_done: tokio::sync::Notify::new(),
            stopping: AtomicBool::new(false),
        });
        let state = shared.clone();
        let task = tokio::spawn(async move {
            let leases: Api<Lease> = Api::namespaced(client, crate::hollow::LEASE_NAMESPACE);
            let mut tick = tokio::time::interval(RENEW_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !state.stopping.load(Ordering::Relaxed) {
                tick.tick().await;
                let started = Instant::now();
                let now = rkube_api::time::now();
                let (from, to) = (
                    state.lost.load(Ordering::Relaxed),
                    state.count.load(Ordering::Relaxed),
                );
                // Spread over the period, as independent kubelets renew, not in a burst
                // that could outlast the node-lifecycle grace period on a loaded machine.
                let slot = RENEW_EVERY / (to - from).max(1) as u32;
                let round = tokio::time::Instant::now();
                let latencies: Vec<Duration> = futures::stream::iter(from..to)
                    .map(|i| {
                        let (leases, now) = (leases.clone(), now.clone());
                        let at = round + slot * (i - from) as u32;
                        async move {
                            tokio::time::sleep_until(at).await;
                            let mut lease = leases.get(&crate::hollow::name(i)).await.ok()?;
                            if let Some(s) = lease.spec.as_mut() {
                                s.renew_time = now;
                            }
                            let t = Instant::now();
                            leases.update(&lease).await.ok()?;
                            Some(t.elapsed())
                        }
                    })
                    .buffer_unordered(256)
                    .filter_map(|d| async move { d })
                    .collect()
                    .await;
                let mut samples = Samples::default();
                samples.extend(latencies);
                *state.last_round.lock().unwrap_or_else(|p| p.into_inner()) = Some((started, samples));
                state.round_done.notify_waiters();
            }
        });
        Heartbeat { shared, task }
    }

    /// The write latencies of the next complete round.
    async fn measure_round(&self) -> Samples {
        // The round in progress may have started before the change being measured.
        for _ in 0..2 {
            self.shared.round_done.notified().await;
        }
        self.shared
            .last_round
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }

    /// Nodes `0..n` stop renewing; returns when their last renewal round started.
    async fn lose(&self, n: usize) -> Instant {
        self.shared.round_done.notified().await;
        let last = self
            .shared
            .last_round
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(t, _)| *t)
            .unwrap_or_else(Instant::now);
        self.shared.lost.store(n, Ordering::Relaxed);
        last
    }

    fn grow(&self, count: usize) {
        self.shared.count.store(count, Ordering::Relaxed);
    }

    fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

fn render(r: &Results) -> String {
    let names = ["rkube-apiserver", "rkube-scheduler", "rkube-controller-manager"];
    let total = |m: &[Memory; 3]| m.iter().map(|m| m.rss).sum::<u64>();
    let per = |a: u64, b: u64, n: usize| (a as f64 - b as f64) / n as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## scale: {NODES} hollow nodes and {PODS} pods, then {MORE_NODES} nodes\n"
    );
    let _ = writeln!(
        s,
        "The release apiserver, scheduler and controller-manager as their own processes on \
         127.0.0.1; hollow nodes (Node and Lease objects, Leases renewed every 10 s by the \
         benchmark, no kubelet); unbound pods with requests, bound by the scheduler.\n"
    );
    let _ = writeln!(
        s,
        "| daemon | empty | {NODES} nodes | + {PODS} pods | per node | per pod | {MORE_NODES} nodes, same pods |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    for (i, name) in names.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {name} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.0} B | {:.0} B | {:.1} MiB |",
            mib(r.empty[i].rss),
            mib(r.nodes[i].rss),
            mib(r.pods[i].rss),
            per(r.nodes[i].rss, r.empty[i].rss, NODES),
            per(r.pods[i].rss, r.nodes[i].rss, PODS),
            mib(r.more_nodes[i].rss),
        );
    }
    let _ = writeln!(
        s,
        "| **control plane** | {:.1} MiB | {:.1} MiB | **{:.1} MiB** | | | {:.1} MiB |\n",
        mib(total(&r.empty)),
        mib(total(&r.nodes)),
        mib(total(&r.pods)),
        mib(total(&r.more_nodes)),
    );
    let _ = writeln!(s, "| measure | value | Kubernetes SLO |");
    let _ = writeln!(s, "|---|---:|---:|");
    let _ = writeln!(
        s,
        "| scheduler, pods/s from first create to last bind | {:.0} | |",
        PODS as f64 / r.schedule.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "| pod create p50 / p99 ({} creates, 64 in flight) | {:.1} / {:.1} ms | p99 ≤ 1 s |",
        r.creates.len(),
        r.creates.quantile_ms(0.5),
        r.creates.quantile_ms(0.99)
    );
    for (nodes, per_s, samples) in [
        (NODES, r.renewals_per_s, &r.renewals),
        (MORE_NODES - LOST, r.more_renewals_per_s, &r.more_renewals),
    ] {
        let _ = writeln!(
            s,
            "| Lease renewal write p50 / p99, {nodes} nodes renewing ({per_s:.0} writes/s) | {:.1} / {:.1} ms | p99 ≤ 1 s |",
            samples.quantile_ms(0.5),
            samples.quantile_ms(0.99)
        );
    }
    let _ = writeln!(
        s,
        "| list of all {} pods (pages of 500) p50 / p99 of {LISTS} | {:.0} / {:.0} ms | p99 ≤ 30 s |",
        r.listed,
        r.lists.quantile_ms(0.5),
        r.lists.quantile_ms(0.99)
    );
    let _ = writeln!(
        s,
        "| watch delivery to {WATCHERS} watchers p50 / p99 ({} of {} events) | {:.1} / {:.1} ms | |",
        r.delivered,
        WATCHERS * WATCH_WRITES,
        r.deliveries.quantile_ms(0.5),
        r.deliveries.quantile_ms(0.99)
    );
    let _ = writeln!(
        s,
        "| {LOST} nodes' Leases stop → all marked not ready (grace period 40 s) | {:.1} s | |",
        r.lifecycle.as_secs_f64()
    );
    s
}
