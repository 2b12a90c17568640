//! Disruption budgets end to end, on real nodes and containers: `rkubectl drain` of a node
//! holding every replica of a Deployment guarded by a PodDisruptionBudget waits (kubectl's
//! retry every 5 s) while the budget allows nothing, and goes on only as replicas become
//! ready on the other node, never leaving fewer ready than the budget asks.

use futures::StreamExt;
use rkube_api::core::v1::Pod;
use rkube_api::Resource;
use rkube_client::{WatchEvent, WatchParams};
use rkube_e2e::{pod_ready, rkubectl_binary, run, ClusterOptions, TestCluster};
use rkube_testing::eventually;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn web(image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {image}
        command: ["sh", "-c", "touch /tmp/ready; exec sleep 3600"]
        readinessProbe:
          exec: {{command: ["cat", "/tmp/ready"]}}
          initialDelaySeconds: 2
          periodSeconds: 1
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: web, namespace: default}}
spec:
  minAvailable: 2
  selector: {{matchLabels: {{app: web}}}}
"#
    )
}

fn live(p: &Pod) -> bool {
    p.metadata().deletion_timestamp.is_empty()
}

fn node_of(p: &Pod) -> String {
    p.spec.as_ref().map(|s| s.node_name.clone()).unwrap_or_default()
}

/// The ready `app=web` pods, by node.
async fn ready_by_node(cluster: &TestCluster) -> anyhow::Result<HashMap<String, usize>> {
    let pods = cluster.api::<Pod>("default")?;
    let mut out = HashMap::new();
    for p in pods
        .list(&rkube_client::ListParams::default().labels("app=web"))
        .await?
        .items
        .iter()
        .filter(|p| live(p) && pod_ready(p))
    {
        *out.entry(node_of(p)).or_insert(0) += 1;
    }
    Ok(out)
}

async fn drain_waits_for_the_budget(netns: std::path::PathBuf) -> anyhow::Result<()> {
    let cluster = TestCluster::start(
        netns,
        ClusterOptions {
            nodes: 2,
            proxy: None,
            ..Default::default()
        },
    )
    .await?;
    cluster.wait_nodes_ready(Duration::from_secs(60)).await?;
    let (a, b) = (cluster.nodes[0].name.clone(), cluster.nodes[1].name.clone());
    // both replicas on node a
    cluster.rkubectl(&["cordon", &b])?;
    cluster.apply(&web(&cluster.image))?;
    eventually(
        "2 ready replicas on the first node",
        Duration::from_secs(60),
        || async { anyhow::Ok(ready_by_node(&cluster).await?.get(&a) == Some(&2)) },
    )
    .await?;
    cluster.rkubectl(&["uncordon", &b])?;
    let pdbs = cluster.api::<rkube_api::policy::v1::PodDisruptionBudget>("default")?;
    eventually(
        "the budget allows no disruption",
        Duration::from_secs(30),
        || async {
            let s = pdbs.get("web").await?.status.unwrap_or_default();
            anyhow::Ok(s.current_healthy == 2 && s.desired_healthy == 2 && s.disruptions_allowed == 0)
        },
    )
    .await?;

    // from here on, the fewest ready replicas at any moment, as one watch sees them
    let fewest = Arc::new(Mutex::new((usize::MAX, Vec::<String>::new())));
    let watcher = {
        let pods = cluster.api::<Pod>("default")?;
        let fewest = fewest.clone();
        let mut stream = pods
            .watch(&WatchParams {
                label_selector: "app=web".into(),
                ..Default::default()
            })
            .await?;
        tokio::spawn(async move {
            let mut seen: HashMap<String, Pod> = HashMap::new();
            // the watch starts with one ADDED per pod: count only once both are seen
            let mut primed = false;
            while let Some(Ok(ev)) = stream.next().await {
                let (pod, gone) = match ev {
                    WatchEvent::Added(p) | WatchEvent::Modified(p) => (p, false),
                    WatchEvent::Deleted(p) => (p, true),
                    _ => continue,
                };
                if gone {
                    seen.remove(pod.name());
                } else {
                    seen.insert(pod.name().to_string(), pod.clone());
                }
                let ready = seen.values().filter(|p| live(p) && pod_ready(p)).count();
                primed |= ready >= 2;
                if !primed {
                    continue;
                }
                let mut f = fewest.lock().unwrap_or_else(|e| e.into_inner());
                f.0 = f.0.min(ready);
                f.1.push(format!("{} gone={gone} ready={}", pod.name(), pod_ready(&pod)));
            }
        })
    };

    let drain = {
        let binary = rkubectl_binary()?;
        let conf = cluster.kubeconfig("admin");
        let url = cluster.url();
        let node = a.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(binary)
                .arg("--config")
                .arg(conf)
                .arg("--server")
                .arg(url)
                .args(["drain", &node, "--timeout=120s"])
                .output()
        })
    };
    // the budget refuses: drain waits, and both replicas stay on node a
    eventually(
        "drain to be refused by the budget",
        Duration::from_secs(30),
        || async {
            let refused = cluster
                .audit_log()?
                .lines()
                .filter(|l| l.contains("\"subresource\":\"eviction\"") && l.contains("\"code\":429"))
                .count();
            anyhow::Ok(refused >= 2)
        },
    )
    .await?;
    assert_eq!(
        ready_by_node(&cluster).await?.get(&a),
        Some(&2),
        "nothing evicted yet"
    );

    // a third replica, ready on node b, lets the budget allow one disruption at a time
    cluster.rkubectl(&["scale", "deployment/web", "--replicas=3"])?;
    let out = drain.await??;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "drain failed:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "(will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget."
        ),
        "{stderr}"
    );
    assert!(stdout.ends_with(&format!("node/{a} drained\n")), "{stdout}");
    eventually(
        "3 ready replicas on the second node",
        Duration::from_secs(60),
        || async {
            let by_node = ready_by_node(&cluster).await?;
            anyhow::Ok(by_node.get(&b) == Some(&3) && !by_node.contains_key(&a))
        },
    )
    .await?;
    watcher.abort();
    let (min, log) = fewest.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        min >= 2,
        "the budget kept 2 replicas ready; fewest seen {min}: {log:#?}"
    );
    cluster.stop().await
}

#[test]
fn drain_waits_for_a_disruption_budget_until_replicas_are_ready_elsewhere() -> anyhow::Result<()> {
    run(drain_waits_for_the_budget)
}
