//! A control plane that survives losing a machine, with real processes and real `kill -9`:
//! three etcd members (peer and client TLS), three apiservers on them, two schedulers and
//! two controller-managers electing leaders, one node (see `rkube_e2e::ha`).
//!
//! While a client keeps creating ConfigMaps (remembering every create the apiserver
//! acknowledged) and a Deployment is scaled, the test kills, one at a time: the apiserver
//! that client talks to, one etcd member, the etcd leader, the leading scheduler and the
//! leading controller-manager. After each: no acknowledged write is lost, no write exists
//! twice, the Deployment converges to its new size, and the caches of three watchers (one
//! per apiserver, each failing over to the others) equal a fresh list; the time to recover
//! is printed. Then two of the three etcd members go: a write fails within the request
//! timeout with "storage unavailable", and succeeds again once one member is back.

use rkube_api::apps::v1::Deployment;
use rkube_api::core::v1::{ConfigMap, Namespace, Pod};
use rkube_api::Resource;
use rkube_client::runtime::WatcherConfig;
use rkube_client::{Api, Client, ListParams};
use rkube_client::{Informer, Store};
use rkube_e2e::ha::{HaCluster, HaOptions, Supervised};
use rkube_e2e::{pod_ready, run};
use rkube_testing::eventually;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NAMESPACE: &str = "ha";

/// How long the Deployment may take to converge after a fault (a debug build on a shared
/// 2-core machine starting containers).
const CONVERGENCE: Duration = Duration::from_secs(120);

/// The leader-election lease of the schedulers and controller-managers.
const LEASE: Duration = Duration::from_secs(3);

/// What the writer saw: every create the apiserver acknowledged (sequence number, the
/// generated name, when), and every one that failed.
#[derive(Default)]
struct Writes {
    acked: Vec<(u64, String, Instant)>,
    failed: Vec<(u64, String)>,
    /// How many of `failed` a check has reported.
    reported: usize,
}

/// Creates ConfigMaps one after another through `client` (each with a generated name and
/// its sequence number in its data, so that a create applied twice would show as two
/// objects) until `stop`; holds `gate` around each create so that a check can pause it.
async fn writer(
    client: Client,
    writes: Arc<Mutex<Writes>>,
    gate: Arc<tokio::sync::Mutex<()>>,
    stop: Arc<AtomicBool>,
) {
    let cms: Api<ConfigMap> = Api::namespaced(client, NAMESPACE);
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        {
            let _held = gate.lock().await;
            let mut cm = ConfigMap::default();
            cm.metadata_mut().generate_name = "write-".into();
            cm.metadata_mut().labels.insert("writer".into(), "ha".into());
            cm.data.insert("seq".into(), seq.to_string());
            match cms.create(&cm).await {
                Ok(made) => {
                    writes
                        .lock()
                        .unwrap()
                        .acked
                        .push((seq, made.metadata().name.clone(), Instant::now()))
                }
                Err(e) => writes.lock().unwrap().failed.push((seq, e.to_string())),
            }
        }
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first acknowledged write after `since`, waited for: the writer's recovery time.
async fn first_ack_after(writes: &Mutex<Writes>, since: Instant) -> anyhow::Result<Duration> {
    eventually(
        "an acknowledged write after the fault",
        Duration::from_secs(60),
        || async {
            let w = writes.lock().unwrap();
            let last_error = w.failed.last().map(|(_, e)| e.clone()).unwrap_or_default();
            w.acked
                .iter()
                .find(|(_, _, at)| *at > since)
                .map(|(_, _, at)| Some(*at - since))
                .ok_or_else(|| {
                    anyhow::anyhow!("no write acknowledged since the fault; last error: {last_error}")
                })
        },
    )
    .await
}

/// A watcher's cache of ConfigMaps and pods, through a client that talks to one
/// apiserver first and fails over to the others.
struct Watcher {
    name: String,
    configmaps: Store<ConfigMap>,
    pods: Store<Pod>,
    _informers: (Informer<ConfigMap>, Informer<Pod>),
}

impl Watcher {
    async fn start(name: String, client: Client) -> anyhow::Result<Watcher> {
        let config = WatcherConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(500),
            ..WatcherConfig::default()
        };
        let cms = Informer::new(
            Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE),
            config.clone(),
        );
        let pods = Informer::new(Api::<Pod>::namespaced(client, NAMESPACE), config);
        cms.start()?;
        pods.start()?;
        tokio::time::timeout(Duration::from_secs(30), async {
            cms.wait_until_synced().await;
            pods.wait_until_synced().await;
        })
        .await
        .map_err(|_| anyhow::anyhow!("{name} did not sync within 30 s"))?;
        Ok(Watcher {
            name,
            configmaps: cms.store(),
            pods: pods.store(),
            _informers: (cms, pods),
        })
    }
}

/// name → resourceVersion of what a store holds or a list returned.
fn versions<'a, K: Resource + 'a>(items: impl IntoIterator<Item = &'a K>) -> BTreeMap<String, String> {
    items
        .into_iter()
        .map(|o| {
            let m = o.metadata();
            (m.name.clone(), m.resource_version.clone())
        })
        .collect()
}

/// Everything the test watches and writes, and the checks made after each fault.
struct Checks {
    admin: Client,
    writes: Arc<Mutex<Writes>>,
    gate: Arc<tokio::sync::Mutex<()>>,
    watchers: Vec<Watcher>,
}

impl Checks {
    /// With the writer paused: every acknowledged write is there exactly once under the
    /// name it was acknowledged with, no write exists twice, and every watcher's caches
    /// equal a fresh list (waited for: a watcher may still be catching up).
    async fn writes_and_watchers(&self, after: &str) -> anyhow::Result<()> {
        let _paused = self.gate.lock().await;
        let cms: Api<ConfigMap> = Api::namespaced(self.admin.clone(), NAMESPACE);
        let listed = cms.list(&ListParams::default().labels("writer=ha")).await?;
        let mut by_seq: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for cm in &listed.items {
            let seq: u64 = cm
                .data
                .get("seq")
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX);
            by_seq.entry(seq).or_default().push(cm.metadata().name.clone());
        }
        let twice: Vec<_> = by_seq.iter().filter(|(_, names)| names.len() > 1).collect();
        assert!(twice.is_empty(), "after {after}: writes stored twice: {twice:?}");
        let (acked, failed, errors) = {
            let mut w = self.writes.lock().unwrap();
            // the errors since the last check, each once: what users saw
            let mut errors: Vec<String> = w.failed[w.reported..].iter().map(|(_, e)| e.clone()).collect();
            errors.sort();
            errors.dedup();
            w.reported = w.failed.len();
            (w.acked.clone(), w.failed.len(), errors)
        };
        let lost: Vec<_> = acked
            .iter()
            .filter(|(seq, name, _)| by_seq.get(seq) != Some(&vec![name.clone()]))
            .map(|(seq, name, _)| (seq, name))
            .collect();
        assert!(
            lost.is_empty(),
            "after {after}: {} of {} acknowledged writes lost, e.g. {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(5)]
        );
        println!(
            "after {after}: {} writes acknowledged, all stored once; {failed} failed (not acknowledged), {} of those stored anyway",
            acked.len(),
            listed.items.len() - acked.len(),
        );
        for e in errors {
            println!("  a write failed with: {e}");
        }

        for w in &self.watchers {
            eventually(
                &format!("{}'s caches to equal a fresh list after {after}", w.name),
                Duration::from_secs(30),
                || async {
                    let cms = versions::<ConfigMap>(cms.list(&ListParams::default()).await?.items.iter());
                    let pods = Api::<Pod>::namespaced(self.admin.clone(), NAMESPACE)
                        .list(&ListParams::default())
                        .await?;
                    let pods = versions::<Pod>(pods.items.iter());
                    let (cached_cms, cached_pods) = (
                        versions::<ConfigMap>(w.configmaps.list().iter().map(|o| &**o)),
                        versions::<Pod>(w.pods.list().iter().map(|o| &**o)),
                    );
                    anyhow::ensure!(
                        cached_cms == cms,
                        "ConfigMaps: {} cached, {} listed; differing: {:?}",
                        cached_cms.len(),
                        cms.len(),
                        difference(&cached_cms, &cms)
                    );
                    anyhow::ensure!(
                        cached_pods == pods,
                        "pods differ: {:?}",
                        difference(&cached_pods, &pods)
                    );
                    Ok(true)
                },
            )
            .await?;
        }
        Ok(())
    }
}

/// The first few entries on which two maps differ.
fn difference(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}@{v} (cache) vs {:?} (list)", b.get(k)))
        .collect();
    out.extend(
        b.keys()
            .filter(|k| !a.contains_key(*k))
            .map(|k| format!("{k} only in the list")),
    );
    out.truncate(5);
    out
}

fn web(image: &str) -> anyhow::Result<Deployment> {
    let yaml = format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NAMESPACE}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {image}
        command: ["sleep", "3600"]
"#
    );
    let objects = rkube_api::codec::decode_manifests(&yaml, "web.yaml")
        .map_err(|e| anyhow::anyhow!("web.yaml: {e:?}"))?;
    Ok(objects[0].decode::<Deployment>()?)
}

/// Sets the Deployment's replicas (through any apiserver).
async fn scale(deployments: &Api<Deployment>, replicas: i32) -> anyhow::Result<()> {
    eventually(
        &format!("web scaled to {replicas}"),
        Duration::from_secs(30),
        || async {
            deployments
                .patch_merge("web", &serde_json::json!({"spec": {"replicas": replicas}}))
                .await?;
            Ok(true)
        },
    )
    .await
}

/// Waits until the Deployment has `replicas` pods, all ready and of its current template,
/// and no other pod of it runs; returns how long that took from `since`.
async fn converged(admin: &Client, replicas: i32, since: Instant) -> anyhow::Result<Duration> {
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
    eventually(
        &format!("web to converge on {replicas} ready pods"),
        CONVERGENCE,
        || async {
            let d = deployments.get("web").await?;
            let s = d.status.clone().unwrap_or_default();
            let live: Vec<Pod> = pods
                .list(&ListParams::default().labels("app=web"))
                .await?
                .items
                .into_iter()
                .filter(|p| p.metadata().deletion_timestamp.is_empty())
                .collect();
            let ready = live.iter().filter(|p| pod_ready(p)).count();
            anyhow::ensure!(
                s.observed_generation >= d.metadata().generation
                    && s.replicas == replicas
                    && s.updated_replicas == replicas
                    && s.ready_replicas == replicas
                    && live.len() == replicas as usize
                    && ready == replicas as usize,
                "status replicas {} updated {} ready {}, observed generation {} of {}; {} live pods, {ready} ready",
                s.replicas,
                s.updated_replicas,
                s.ready_replicas,
                s.observed_generation,
                d.metadata().generation,
                live.len()
            );
            Ok(Some(since.elapsed()))
        },
    )
    .await
}

/// Kills the leader among `daemons` (a scheduler or controller-manager), scales the
/// Deployment to `replicas`, and returns (kill → another process leads, kill → converged).
async fn kill_leader(
    what: &str,
    daemons: &[Supervised],
    admin: &Client,
    replicas: i32,
) -> anyhow::Result<(Duration, Duration)> {
    let leader = eventually(&format!("a leading {what}"), Duration::from_secs(30), || {
        HaCluster::leader(daemons)
    })
    .await?;
    assert!(daemons[leader].kill9(), "{} was running", daemons[leader].name);
    let killed = Instant::now();
    scale(&Api::namespaced(admin.clone(), NAMESPACE), replicas).await?;
    // the killed one is started again a second later, as systemd would: whichever
    // process leads next, it must be a new one
    let starts = daemons[leader].starts();
    let taken_over = eventually(
        &format!("another {what} to lead after the leader was killed"),
        Duration::from_secs(60),
        || async {
            for (i, d) in daemons.iter().enumerate() {
                if (i != leader || d.starts() > starts) && d.leads().await {
                    return Some(killed.elapsed());
                }
            }
            None
        },
    )
    .await?;
    let done = converged(admin, replicas, killed).await?;
    Ok((taken_over, done))
}

#[test]
fn the_control_plane_survives_losing_any_one_machine() -> anyhow::Result<()> {
    run(|netns| async move {
        let mut cluster = HaCluster::start(
            netns,
            HaOptions {
                lease_duration: LEASE,
                ..HaOptions::default()
            },
        )
        .await?;
        let result = faults(&mut cluster).await;
        if let Err(e) = &result {
            eprintln!("{e:#}\n{}", cluster.logs(40));
        }
        cluster.stop().await;
        result
    })
}

async fn faults(cluster: &mut HaCluster) -> anyhow::Result<()> {
    let admin = cluster.client(1)?;
    let mut namespace = Namespace::default();
    namespace.metadata_mut().name = NAMESPACE.into();
    Api::<Namespace>::all(admin.clone()).create(&namespace).await?;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), NAMESPACE);
    deployments.create(&web(&cluster.image)?).await?;
    let start = Instant::now();
    converged(&admin, 2, start).await?;

    let mut watchers = Vec::new();
    for i in 0..cluster.apiservers.len() {
        watchers.push(Watcher::start(format!("the watcher of apiserver-{i}"), cluster.client(i)?).await?);
    }
    let writer_client = cluster.client(0)?;
    let checks = Checks {
        admin: admin.clone(),
        writes: Arc::default(),
        gate: Arc::default(),
        watchers,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(writer(
        writer_client.clone(),
        checks.writes.clone(),
        checks.gate.clone(),
        stop.clone(),
    ));
    first_ack_after(&checks.writes, Instant::now()).await?;

    // 1. the apiserver the writer talks to
    assert_eq!(writer_client.server(), cluster.apiserver_urls[0]);
    assert!(cluster.apiservers[0].kill9());
    let killed = Instant::now();
    scale(&deployments, 3).await?;
    let writes_back = first_ack_after(&checks.writes, killed).await?;
    let done = converged(&admin, 3, killed).await?;
    println!(
        "kill -9 of the writer's apiserver: next acknowledged write after {writes_back:?} (through {}), Deployment scaled 2 -> 3 converged after {done:?}",
        writer_client.server()
    );
    checks.writes_and_watchers("the apiserver's kill").await?;
    cluster.wait_apiserver_ready(0).await?;

    // 2. an etcd member that does not lead, then 3. the leader
    for (what, replicas) in [("an etcd follower", 2), ("the etcd leader", 4)] {
        let leader = cluster.etcd.wait_for_leader(Duration::from_secs(30)).await?;
        let victim = if what == "the etcd leader" {
            leader
        } else {
            (leader + 1) % cluster.etcd.members.len()
        };
        cluster.etcd.members[victim].kill();
        let killed = Instant::now();
        scale(&deployments, replicas).await?;
        let writes_back = first_ack_after(&checks.writes, killed).await?;
        let done = converged(&admin, replicas, killed).await?;
        println!(
            "kill -9 of {what} ({}): next acknowledged write after {writes_back:?}, Deployment scaled to {replicas} converged after {done:?}",
            cluster.etcd.members[victim].name
        );
        checks.writes_and_watchers(&format!("the kill of {what}")).await?;
        cluster.etcd.members[victim].restart().await?;
    }

    // 4. the leading scheduler, 5. the leading controller-manager
    let (taken_over, done) = kill_leader("scheduler", &cluster.schedulers, &admin, 5).await?;
    println!(
        "kill -9 of the leading scheduler (lease {LEASE:?}): another leads after {taken_over:?}, Deployment scaled to 5 converged after {done:?}"
    );
    checks.writes_and_watchers("the scheduler's kill").await?;
    let (taken_over, done) =
        kill_leader("controller-manager", &cluster.controller_managers, &admin, 3).await?;
    println!(
        "kill -9 of the leading controller-manager (lease {LEASE:?}): another leads after {taken_over:?}, Deployment scaled to 3 converged after {done:?}"
    );
    checks
        .writes_and_watchers("the controller-manager's kill")
        .await?;

    // 6. two of three etcd members: no quorum
    let leader = cluster.etcd.wait_for_leader(Duration::from_secs(30)).await?;
    let survivor = (leader + 1) % 3;
    let gone: Vec<usize> = (0..3).filter(|&i| i != survivor).collect();
    for &i in &gone {
        cluster.etcd.members[i].kill();
    }
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), NAMESPACE);
    let probe = |name: &str| {
        let mut cm = ConfigMap::default();
        cm.metadata_mut().name = name.into();
        cm
    };
    let asked = Instant::now();
    let err = cms
        .create(&probe("without-quorum"))
        .await
        .expect_err("a write without an etcd quorum must fail");
    let failed_after = asked.elapsed();
    let message = err.to_string();
    assert!(
        message.contains("storage unavailable"),
        "the error says the storage is unavailable: {message}"
    );
    // the store's request timeout is 5 s; the client's own is longer
    assert!(
        failed_after < Duration::from_secs(8),
        "the write failed after {failed_after:?}, not within the request timeout"
    );
    println!("a write with two of three etcd members gone failed after {failed_after:?}: {message}");
    cluster.etcd.members[gone[0]].restart().await?;
    let back = Instant::now();
    let writes_back = eventually("a write with a quorum again", Duration::from_secs(60), || async {
        match cms.create(&probe("quorum-back")).await {
            Ok(_) => Ok(true),
            // an earlier attempt was applied though its answer was lost
            Err(e) if e.is_already_exists() => Ok(true),
            Err(e) => Err(anyhow::Error::from(e)),
        }
    })
    .await
    .map(|_| back.elapsed())?;
    println!("with one member back, the next write succeeded after {writes_back:?}");
    first_ack_after(&checks.writes, back).await?;
    checks.writes_and_watchers("the quorum's loss and return").await?;
    cluster.etcd.members[gone[1]].restart().await?;

    stop.store(true, Ordering::SeqCst);
    writing.await?;
    converged(&admin, 3, Instant::now()).await?;
    checks.writes_and_watchers("the end").await
}
