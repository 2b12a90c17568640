//! The controller-manager's memory with 10,000 pods in its caches (issue 5). The release
//! binary `rkube-controller-manager` runs as its own process (every loop enabled, default
//! settings) against the real apiserver in this process (sled in a temp dir), on 127.0.0.1.
//!
//! The cluster: 100 hollow nodes with Leases renewed every 10 s (see [`crate::hollow`]), 10
//! ReplicaSets of 1,000 replicas, and their 10,000 pods, created by this suite before the
//! controller-manager starts: bound to the hollow nodes, owned by their ReplicaSet, with a
//! `Running` / Ready status as a kubelet would report it. So the controller-manager starts
//! on a cluster that is already as declared: it caches every pod and has nothing to create.
//! It is synced when every ReplicaSet's status says `observedGeneration` = generation and
//! 1,000 ready replicas; its VmRSS is then read from /proc once it stops moving (1 % over
//! 5 s, at most 30 s), with VmHWM, the peak, which includes the initial list.
//!
//! The baseline, in the same run: a first controller-manager process against the nodes
//! alone, synced when node-ipam has given every node a podCIDR, measured the same way.
//! Bytes per pod = (RSS with the pods - baseline) / 10,000.

use crate::process::{self, mib, Daemon, Memory};
use crate::Args;
use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use rkube_api::apps::v1::ReplicaSet;
use rkube_api::core::v1::{Node, Pod};
use rkube_api::Resource;
use rkube_client::{Api, Client, ListParams};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

const NODES: usize = 100;
const SETS: usize = 10;
const PER_SET: usize = 1_000;
const PODS: usize = SETS * PER_SET;
const NAMESPACE: &str = "default";
const CONNECTIONS: usize = 8;
const IN_FLIGHT: usize = 64;
const MAX_WAIT: Duration = Duration::from_secs(300);

pub fn run(args: &Args) -> anyhow::Result<String> {
    let binary = process::require("rkube-controller-manager")?;
    std::fs::create_dir_all(&args.tmp_dir)
        .with_context(|| format!("cannot create {}", args.tmp_dir.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("rkube-bench-cm-memory-")
        .tempdir_in(&args.tmp_dir)
        .with_context(|| format!("cannot create a directory in {}", args.tmp_dir.display()))?;
    let store = dir.path().join("apiserver");
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("apiserver")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let server = server_rt
        .block_on(rkube_apiserver::start(rkube_apiserver::Config::local(&store)))
        .context("cannot start rkube's apiserver")?;
    let url = server.url();
    let result = client_rt.block_on(measure(&url, &binary, dir.path()));
    let stopping = server_rt.block_on(server.stop());
    drop(client_rt);
    drop(server_rt);
    let r = result?;
    stopping.context("stopping the apiserver")?;
    Ok(render(&r))
}

struct Results {
    baseline: Memory,
    loaded: Memory,
    /// From the process start to every ReplicaSet status settled.
    sync: Duration,
    pods_after: usize,
}

async fn measure(url: &str, binary: &Path, dir: &Path) -> anyhow::Result<Results> {
    let client = Client::connect(url).context("cannot connect to the apiserver")?;
    crate::hollow::create(&client, NODES, IN_FLIGHT).await?;
    let heartbeat = crate::hollow::heartbeat(client.clone(), NODES);
    let result = async {
        eprintln!("controller-manager with {NODES} nodes and no pods");
        let mut args = vec!["--apiserver".to_string(), url.to_string()];
        // Its health endpoint on a free port, not the default one a cluster on this machine
        // may hold.
        if process::supports(binary, "--health-addr") {
            args.extend(["--health-addr".to_string(), "127.0.0.1:0".to_string()]);
        }
        let mut cm = Daemon::start("controller-manager-baseline", None, binary, &args, dir)?;
        wait_until(&mut cm, "every node has a podCIDR", || nodes_have_cidrs(&client)).await?;
        let baseline = settled_memory(&mut cm).await?;
        cm.stop();
        drop(cm);

        eprintln!("creating {SETS} ReplicaSets and {PODS} pods");
        let loaded_at = Instant::now();
        load(url, &client).await?;
        eprintln!(
            "loaded in {:.1} s; controller-manager with {PODS} pods",
            loaded_at.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        let mut cm = Daemon::start("controller-manager", None, binary, &args, dir)?;
        wait_until(&mut cm, "every ReplicaSet's status is current", || {
            sets_synced(&client)
        })
        .await?;
        let sync = started.elapsed();
        let loaded = settled_memory(&mut cm).await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        let pods_after = pods.list(&ListParams::default()).await?.items.len();
        cm.stop();
        anyhow::Ok(Results {
            baseline,
            loaded,
            sync,
            pods_after,
        })
    }
    .await;
    heartbeat.abort();
    result
}

async fn wait_until<F, Fut>(cm: &mut Daemon, what: &str, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + MAX_WAIT;
    loop {
        cm.check_running()?;
        if done().await? {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the controller-manager did not get to \"{what}\" within {} s; the end of its log:\n{}",
            MAX_WAIT.as_secs(),
            cm.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// VmRSS once it stops moving: five 1 s samples within 1 % of each other (at most 30 s).
async fn settled_memory(cm: &mut Daemon) -> anyhow::Result<Memory> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut samples: Vec<u64> = Vec::new();
    loop {
        cm.check_running()?;
        let m = cm.memory()?;
        samples.push(m.rss);
        let last = &samples[samples.len().saturating_sub(5)..];
        let (lo, hi) = (
            last.iter().copied().min().unwrap_or(0),
            last.iter().copied().max().unwrap_or(0),
        );
        if (last.len() == 5 && (hi - lo) * 100 <= hi) || Instant::now() > deadline {
            return Ok(m);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn nodes_have_cidrs(client: &Client) -> anyhow::Result<bool> {
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await?;
    Ok(list.items.len() == NODES
        && list
            .items
            .iter()
            .all(|n| n.spec.as_ref().is_some_and(|s| !s.pod_cidr.is_empty())))
}

/// A number that proto3 JSON may write as a string (64-bit) or a number.
fn int(v: &serde_json::Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

async fn sets_synced(client: &Client) -> anyhow::Result<bool> {
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NAMESPACE);
    let list = sets.list(&ListParams::default()).await?;
    let mut synced = 0;
    for rs in &list.items {
        let v = serde_json::to_value(rs)?;
        let status = &v["status"];
        if int(&status["observedGeneration"]) == int(&v["metadata"]["generation"])
            && int(&status["replicas"]) == PER_SET as i64
            && int(&status["readyReplicas"]) == PER_SET as i64
        {
            synced += 1;
        }
    }
    Ok(synced == SETS)
}

fn replica_set(i: usize) -> ReplicaSet {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("app-{i:02}"), "namespace": NAMESPACE},
        "spec": {
            "replicas": PER_SET,
            "selector": {"matchLabels": {"app": format!("app-{i:02}")}},
            "template": {
                "metadata": {"labels": {"app": format!("app-{i:02}")}},
                "spec": {"containers": [{
                    "name": "main",
                    "image": "registry.k8s.io/pause:3.9",
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                }]},
            },
        },
    }))
    .expect("a valid ReplicaSet")
}

/// Pod `j` of ReplicaSet `rs`, as the replicaset controller would have made it, bound to a
/// hollow node.
fn pod(rs: &ReplicaSet, i: usize, j: usize) -> Pod {
    let n = i * PER_SET + j;
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": format!("app-{i:02}-{j:04}"),
            "namespace": NAMESPACE,
            "labels": {"app": format!("app-{i:02}")},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs.name(),
                "uid": rs.metadata().uid, "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "nodeName": crate::hollow::name(n % NODES),
            "containers": [{
                "name": "main",
                "image": "registry.k8s.io/pause:3.9",
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
            }],
        },
    }))
    .expect("a valid pod")
}

/// The status a kubelet would have written for a running, ready pod.
fn running(mut p: Pod, n: usize) -> anyhow::Result<Pod> {
    let now = rkube_api::time::now();
    let status: Pod = serde_json::from_value(serde_json::json!({
        "status": {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": format!("10.244.{}.{}", n % NODES, 2 + n / NODES),
            "startTime": now,
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            ],
            "containerStatuses": [{
                "name": "main", "ready": true, "restartCount": 0, "started": true,
                "image": "registry.k8s.io/pause:3.9",
                "containerID": format!("containerd://{n:064x}"),
                "state": {"running": {"startedAt": now}},
            }],
        },
    }))
    .context("building a pod status")?;
    p.status = status.status;
    Ok(p)
}

async fn load(url: &str, client: &Client) -> anyhow::Result<()> {
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NAMESPACE);
    let mut created = Vec::new();
    for i in 0..SETS {
        created.push(
            sets.create(&replica_set(i))
                .await
                .with_context(|| format!("creating ReplicaSet app-{i:02}"))?,
        );
    }
    let cs: Vec<Client> = (0..CONNECTIONS)
        .map(|_| Client::connect(url).context("cannot connect to the apiserver"))
        .collect::<anyhow::Result<_>>()?;
    let created = &created;
    let cs = &cs;
    futures::stream::iter(0..PODS)
        .map(|n| async move {
            let (i, j) = (n / PER_SET, n % PER_SET);
            let api: Api<Pod> = Api::namespaced(cs[n % CONNECTIONS].clone(), NAMESPACE);
            let p = api
                .create(&pod(&created[i], i, j))
                .await
                .with_context(|| format!("creating pod app-{i:02}-{j:04}"))?;
            api.update_status(&running(p, n)?)
                .await
                .with_context(|| format!("setting pod app-{i:02}-{j:04} Running"))?;
            anyhow::Ok(())
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn render(r: &Results) -> String {
    let per_pod = (r.loaded.rss as f64 - r.baseline.rss as f64) / PODS as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## controller-manager: memory with {PODS} pods in its caches\n"
    );
    let _ = writeln!(
        s,
        "The release `rkube-controller-manager` as its own process, every loop enabled, against the \
         real apiserver; {NODES} hollow nodes with heartbeating Leases, {SETS} ReplicaSets x {PER_SET} \
         Running, ready pods bound to them, all created before it starts. Memory from /proc/PID/status \
         once synced (every ReplicaSet's status current) and steady; baseline: the same binary with the \
         nodes alone.\n"
    );
    let _ = writeln!(s, "| measure | nodes only | with {PODS} pods |");
    let _ = writeln!(s, "|---|---:|---:|");
    let _ = writeln!(
        s,
        "| VmRSS, MiB | {:.1} | {:.1} |",
        mib(r.baseline.rss),
        mib(r.loaded.rss)
    );
    let _ = writeln!(
        s,
        "| VmHWM (peak), MiB | {:.1} | {:.1} |",
        mib(r.baseline.hwm),
        mib(r.loaded.hwm)
    );
    let _ = writeln!(s, "| bytes per pod, (RSS - baseline) / {PODS} | | {per_pod:.0} |");
    let _ = writeln!(
        s,
        "| bytes per pod, RSS / {PODS} | | {:.0} |",
        r.loaded.rss as f64 / PODS as f64
    );
    let _ = writeln!(s, "| start to synced, ms | | {:.0} |", r.sync.as_secs_f64() * 1e3);
    let _ = writeln!(
        s,
        "| pods after (nothing created or deleted) | | {} |",
        r.pods_after
    );
    s
}
