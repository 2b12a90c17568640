//! The controller-manager's loops end to end, on real nodes and containers: a Deployment
//! keeps its replicas through kills, deletions, scaling, a rolling update and a rollback;
//! deleting it cascades; an autoscaler follows CPU load; a lost node's pods move.

use anyhow::Context;
use futures::StreamExt;
use rkube_api::apps::v1::{Deployment, ReplicaSet};
use rkube_api::autoscaling::v2::HorizontalPodAutoscaler;
use rkube_api::core::v1::Pod;
use rkube_client::{ListParams, WatchEvent, WatchParams};
use rkube_e2e::{pod_ready, run, ClusterOptions, TestCluster};
use rkube_testing::eventually;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn name(p: &Pod) -> String {
    p.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default()
}

fn terminating(p: &Pod) -> bool {
    p.metadata
        .as_ref()
        .is_some_and(|m| !m.deletion_timestamp.is_empty())
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .map(|s| s.container_statuses.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// Pods with label `app=APP` that are Ready and not being deleted.
async fn ready_pods(cluster: &TestCluster, app: &str) -> anyhow::Result<Vec<Pod>> {
    let pods = cluster.api::<Pod>("default")?;
    Ok(pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?
        .items
        .into_iter()
        .filter(|p| pod_ready(p) && !terminating(p))
        .collect())
}

/// Waits until exactly `n` pods of `app` are ready (and no others are starting).
async fn wait_ready(
    cluster: &TestCluster,
    app: &str,
    n: usize,
    within: Duration,
) -> anyhow::Result<Vec<Pod>> {
    let pods = cluster.api::<Pod>("default")?;
    let last = std::sync::atomic::AtomicUsize::new(0);
    let found = eventually(&format!("{n} ready {app} pods"), within, || async {
        let all = pods
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .ok()?
            .items;
        let live: Vec<Pod> = all.into_iter().filter(|p| !terminating(p)).collect();
        let ready: Vec<Pod> = live.iter().filter(|p| pod_ready(p)).cloned().collect();
        last.store(ready.len(), std::sync::atomic::Ordering::Relaxed);
        (ready.len() == n && live.len() == n).then_some(ready)
    })
    .await
    .ok();
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "{app}: wanted {n} ready pods within {within:?}, last saw {}",
            last.into_inner()
        )
    })
}

fn web(image: &str, marker: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: 3
  minReadySeconds: 1
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: {image}
        command: ["sh", "-c", "touch /tmp/ready; exec sleep {marker}"]
        readinessProbe:
          exec: {{command: ["cat", "/tmp/ready"]}}
          periodSeconds: 1
        resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
"#
    )
}

/// Pod readiness as seen through one watch from the start: the fewest ready pods at any
/// moment and the most pods alive at any moment.
#[derive(Default)]
struct Watched {
    pods: HashMap<String, Pod>,
    min_ready: Option<usize>,
    max_live: usize,
    /// What happened, for the failure message.
    log: Vec<String>,
}

impl Watched {
    fn observe(&mut self, pod: Pod, deleted: bool) {
        if deleted {
            self.pods.remove(&name(&pod));
        } else {
            self.pods.insert(name(&pod), pod.clone());
        }
        let ready = self
            .pods
            .values()
            .filter(|p| pod_ready(p) && !terminating(p))
            .count();
        let live = self.pods.values().filter(|p| !terminating(p)).count();
        self.log.push(format!(
            "{} {} ready={} terminating={} -> {ready} ready, {live} alive",
            if deleted { "deleted" } else { "seen" },
            name(&pod),
            pod_ready(&pod),
            terminating(&pod)
        ));
        self.min_ready = Some(self.min_ready.map_or(ready, |m| m.min(ready)));
        self.max_live = self.max_live.max(live);
    }
}

async fn deployment_lifecycle(netns: std::path::PathBuf) -> anyhow::Result<()> {
    let cluster = TestCluster::start(netns, ClusterOptions::default()).await?;
    // a number unique to this test run, so killing its process touches nothing else
    let marker = format!("{}{}", 36000 + std::process::id() % 1000, 100 + rand_digit());
    cluster.apply(&web(&cluster.image, &marker))?;
    let pods = wait_ready(&cluster, "web", 3, Duration::from_secs(60)).await?;
    for p in &pods {
        let owner = &p.metadata.as_ref().unwrap().owner_references[0];
        assert_eq!(
            owner.kind,
            "ReplicaSet",
            "{} is owned by the Deployment's ReplicaSet",
            name(p)
        );
    }
    let api_pods = cluster.api::<Pod>("default")?;

    // a container killed from outside is restarted in the same pod
    let killed = std::process::Command::new("pkill")
        .args(["-KILL", "-f", &format!("sleep {marker}")])
        .status()?;
    assert!(killed.success(), "found the containers' processes");
    let restarted = eventually(
        "the killed containers to restart in place",
        Duration::from_secs(30),
        || async {
            let now = ready_pods(&cluster, "web").await.ok()?;
            let same: Vec<_> = now
                .iter()
                .filter(|p| pods.iter().any(|o| name(o) == name(p)))
                .collect();
            (same.len() == 3 && same.iter().all(|p| restarts(p) >= 1)).then_some(())
        },
    )
    .await
    .ok();
    assert!(
        restarted.is_some(),
        "killed containers were restarted in place, restartCount 1"
    );

    // a deleted pod is replaced by a new one
    let victim = name(&pods[0]);
    cluster.rkubectl(&["delete", "pod", &victim])?;
    let after = wait_ready(&cluster, "web", 3, Duration::from_secs(60)).await?;
    assert!(!after.iter().any(|p| name(p) == victim), "{victim} was replaced");

    // scale 3 -> 5 -> 1
    cluster.rkubectl(&["scale", "deployment/web", "--replicas=5"])?;
    wait_ready(&cluster, "web", 5, Duration::from_secs(60)).await?;
    cluster.rkubectl(&["scale", "deployment/web", "--replicas=1"])?;
    wait_ready(&cluster, "web", 1, Duration::from_secs(60)).await?;
    cluster.rkubectl(&["scale", "deployment/web", "--replicas=3"])?;
    wait_ready(&cluster, "web", 3, Duration::from_secs(60)).await?;
    let deployments = cluster.api::<Deployment>("default")?;
    eventually(
        "the Deployment's status to show 3 available",
        Duration::from_secs(20),
        || async {
            let s = deployments.get("web").await.ok()?.status?;
            (s.available_replicas == 3 && s.updated_replicas == 3).then_some(())
        },
    )
    .await
    .context("the Deployment's status never showed 3 available")?;

    // a rolling update, watched from the first moment: ready pods never below 3 - 1,
    // pods alive never above 3 + 1
    let (second, _) = cluster.registry.push_busybox("rkube/busybox-v2").await?;
    let list = api_pods.list(&ListParams::default().labels("app=web")).await?;
    let watched = Arc::new(Mutex::new(Watched::default()));
    // the starting state counts as a whole, not pod by pod
    let last = list.items.last().cloned();
    for p in list.items {
        watched.lock().unwrap().pods.insert(name(&p), p);
    }
    if let Some(p) = last {
        watched.lock().unwrap().observe(p, false);
    }
    let mut stream = api_pods
        .watch(&WatchParams {
            label_selector: "app=web".into(),
            resource_version: list.resource_version,
            ..Default::default()
        })
        .await?;
    let w = watched.clone();
    let watcher = tokio::spawn(async move {
        while let Some(Ok(ev)) = stream.next().await {
            match ev {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => w.lock().unwrap().observe(p, false),
                WatchEvent::Deleted(p) => w.lock().unwrap().observe(p, true),
                WatchEvent::Bookmark(_) => {}
            }
        }
    });
    cluster.rkubectl(&["set", "image", "deployment/web", &format!("web={second}")])?;
    let status = cluster.rkubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])?;
    assert!(status.contains("successfully rolled out"), "{status}");
    let now = wait_ready(&cluster, "web", 3, Duration::from_secs(30)).await?;
    for p in &now {
        assert_eq!(
            p.spec.as_ref().unwrap().containers[0].image,
            second,
            "{} runs the new image",
            name(p)
        );
    }
    watcher.abort();
    {
        let w = watched.lock().unwrap();
        assert!(
            w.min_ready.unwrap() >= 2,
            "ready pods fell to {:?} during the rollout:\n{}",
            w.min_ready,
            w.log.join("\n")
        );
        assert!(
            w.max_live <= 4,
            "{} pods were alive at once (maxSurge 1)",
            w.max_live
        );
    }
    let history = cluster.rkubectl(&["rollout", "history", "deployment/web"])?;
    assert!(
        history.contains('1') && history.contains('2'),
        "two revisions: {history}"
    );

    // rollback restores the previous template
    cluster.rkubectl(&["rollout", "undo", "deployment/web"])?;
    cluster.rkubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])?;
    let back = wait_ready(&cluster, "web", 3, Duration::from_secs(30)).await?;
    for p in &back {
        assert_eq!(
            p.spec.as_ref().unwrap().containers[0].image,
            cluster.image,
            "{} rolled back",
            name(p)
        );
    }

    // deleting the Deployment removes its ReplicaSets and pods
    cluster.rkubectl(&["delete", "deployment", "web"])?;
    let replicasets = cluster.api::<ReplicaSet>("default")?;
    let gone = eventually(
        "the ReplicaSets and pods to go",
        Duration::from_secs(60),
        || async {
            let rs = replicasets.list(&ListParams::default()).await.ok()?.items;
            let pods = api_pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?
                .items;
            (rs.is_empty() && pods.is_empty()).then_some(())
        },
    )
    .await
    .ok();
    assert!(gone.is_some(), "ReplicaSets and pods went with the Deployment");
    cluster.stop().await
}

fn rand_digit() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 800)
        .unwrap_or(0)
}

#[test]
fn a_deployment_keeps_its_replicas_through_kills_scaling_rollouts_and_rollbacks() -> anyhow::Result<()> {
    run(deployment_lifecycle)
}

async fn autoscaling(netns: std::path::PathBuf) -> anyhow::Result<()> {
    let cluster = TestCluster::start(netns, ClusterOptions::default()).await?;
    // the load runs while a file the test owns is absent; the limit keeps the burn to a
    // fifth of a core per pod on a small machine
    let stop_dir = tempfile::tempdir()?;
    cluster.apply(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: burn, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: burn}}}}
  template:
    metadata: {{labels: {{app: burn}}}}
    spec:
      terminationGracePeriodSeconds: 1
      volumes: [{{name: control, hostPath: {{path: {dir}}}}}]
      containers:
      - name: burn
        image: {image}
        command: ["sh", "-c", "while [ ! -e /control/stop ]; do :; done; exec sleep 3600"]
        volumeMounts: [{{name: control, mountPath: /control}}]
        resources:
          requests: {{cpu: 100m, memory: 8Mi}}
          limits: {{cpu: 200m}}
"#,
        dir = stop_dir.path().display(),
        image = cluster.image
    ))?;
    wait_ready(&cluster, "burn", 1, Duration::from_secs(60)).await?;
    cluster.rkubectl(&[
        "autoscale",
        "deployment/burn",
        "--min=1",
        "--max=3",
        "--cpu-percent=50",
    ])?;
    let hpas = cluster.api::<HorizontalPodAutoscaler>("default")?;

    // ~200% of the request against a 50% target: up to the maximum
    wait_ready(&cluster, "burn", 3, Duration::from_secs(90)).await?;
    // The autoscaler scales the Deployment first and writes its own status after: the
    // pods can be there a moment before the status says so.
    hpa_desires(&hpas, 3).await?;
    let shown = cluster.rkubectl(&["get", "hpa", "burn"])?;
    assert!(shown.contains("/50%"), "TARGETS shows usage against 50%: {shown}");

    // the load stops: after the stabilization window, back to the minimum
    std::fs::write(stop_dir.path().join("stop"), b"")?;
    wait_ready(&cluster, "burn", 1, Duration::from_secs(90)).await?;
    hpa_desires(&hpas, 1).await?;
    cluster.stop().await
}

/// Waits until the `burn` autoscaler's status says it wants `n` replicas.
async fn hpa_desires(hpas: &rkube_client::Api<HorizontalPodAutoscaler>, n: i32) -> anyhow::Result<()> {
    eventually(
        &format!("the autoscaler to want {n} replicas"),
        Duration::from_secs(10),
        || async {
            let status = hpas.get("burn").await?.status.unwrap_or_default();
            anyhow::ensure!(status.desired_replicas == n, "status {status:?}");
            Ok(true)
        },
    )
    .await
}

#[test]
fn an_autoscaler_adds_pods_under_cpu_load_and_removes_them_after() -> anyhow::Result<()> {
    run(autoscaling)
}

async fn node_loss(netns: std::path::PathBuf) -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(
        netns,
        ClusterOptions {
            nodes: 2,
            proxy: None,
            ..Default::default()
        },
    )
    .await?;
    let marker = format!("{}{}", 37000 + std::process::id() % 1000, 100 + rand_digit());
    cluster.apply(&web(&cluster.image, &marker).replace("replicas: 3", "replicas: 4"))?;
    let pods = wait_ready(&cluster, "web", 4, Duration::from_secs(60)).await?;
    let on_lost = pods
        .iter()
        .filter(|p| p.spec.as_ref().unwrap().node_name == "node-1")
        .count();
    assert!(on_lost > 0, "the scheduler put some replicas on node-1");

    // node-1 goes dark: no kubelet, no containerd, no heartbeats
    cluster.nodes[1].power_off().await?;
    let moved = eventually("4 ready pods on node-0", Duration::from_secs(60), || async {
        let ready = ready_pods(&cluster, "web").await.ok()?;
        let on_0 = ready
            .iter()
            .filter(|p| p.spec.as_ref().unwrap().node_name == "node-0")
            .count();
        (on_0 == 4).then_some(())
    })
    .await
    .ok();
    assert!(
        moved.is_some(),
        "all 4 replicas run on node-0 after node-1 was lost"
    );
    let nodes = cluster.rkubectl(&["get", "nodes"])?;
    let line = nodes
        .lines()
        .find(|l| l.starts_with("node-1"))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("NotReady"), "node-1 shows NotReady: {nodes}");
    cluster.stop().await
}

#[test]
fn pods_of_a_node_that_stops_heartbeating_are_recreated_on_another() -> anyhow::Result<()> {
    run(node_loss)
}
