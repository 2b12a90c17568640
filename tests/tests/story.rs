//! The whole story, as a user lives it, on a three-node cluster: the README's example app
//! applied from its YAML file, reached through the URL `rkubectl service --url` prints,
//! healing from a killed container and a deleted pod, scaling, a rollout without a failed
//! request, the autoscaler following load, a lost node, and every control-plane daemon
//! restarted in turn without losing anything.

use anyhow::Context;
use rkube_api::apps::v1::Deployment;
use rkube_api::core::v1::Pod;
use rkube_client::ListParams;
use rkube_e2e::{pod_ready, run, ClusterOptions, TestCluster};
use rkube_testing::eventually;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn name(p: &Pod) -> String {
    p.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default()
}

async fn ready_web_pods(cluster: &TestCluster) -> Vec<Pod> {
    let Ok(pods) = cluster.api::<Pod>("default") else {
        return Vec::new();
    };
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            pod_ready(p)
                && p.metadata
                    .as_ref()
                    .is_some_and(|m| m.deletion_timestamp.is_empty())
        })
        .collect()
}

async fn wait_ready(
    cluster: &TestCluster,
    n: usize,
    within: Duration,
    what: &str,
) -> anyhow::Result<Vec<Pod>> {
    eventually(&format!("{what}: {n} ready web pods"), within, || async {
        let pods = ready_web_pods(cluster).await;
        (pods.len() == n).then_some(pods)
    })
    .await
    .with_context(|| format!("{what}: {n} ready web pods did not show within {within:?}"))
}

/// `http://ADDR:PORT` as `rkubectl service --url` prints it.
fn parse_url(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.trim().strip_prefix("http://").unwrap_or(url.trim());
    Ok(rest.trim_end_matches('/').parse()?)
}

/// A background loop of GETs from the cluster namespace, counting answers by pod and
/// failures, until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<BTreeSet<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(cluster: &TestCluster, addr: SocketAddr, path: &'static str, threads: usize) -> Traffic {
        let t = Traffic {
            stop: Arc::default(),
            ok: Arc::default(),
            failures: Arc::default(),
            seen: Arc::default(),
            tasks: Vec::new(),
        };
        let mut tasks = Vec::new();
        for _ in 0..threads {
            let (stop, ok, failures, seen) =
                (t.stop.clone(), t.ok.clone(), t.failures.clone(), t.seen.clone());
            let netns = cluster.netns.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                while !stop.load(Ordering::Relaxed) {
                    match rkube_e2e::http_get_in_netns(&netns, addr, path, Duration::from_secs(5)) {
                        Ok((200, body)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            let pod = body.split_whitespace().last().unwrap_or_default().to_string();
                            seen.lock().unwrap().insert(pod);
                        }
                        other => failures.lock().unwrap().push(format!("{other:?}")),
                    }
                }
            }));
        }
        Traffic { tasks, ..t }
    }

    async fn stop(self) -> (usize, Vec<String>, BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let failures = self.failures.lock().unwrap().clone();
        let seen = self.seen.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures, seen)
    }
}

async fn story(netns: std::path::PathBuf) -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(
        netns,
        // as `make up NODES=3` runs it: the cloud-controller-manager initialises the nodes
        // and routes their pod networks
        ClusterOptions {
            nodes: 3,
            cloud: true,
            ..Default::default()
        },
    )
    .await?;

    // the README's example, pointed at this cluster's registry
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/web.yaml"
    ))?;
    let registry_host = cluster.image.split('/').next().unwrap().to_string();
    let out = cluster.apply(&example.replace("localhost:5000", &registry_host))?;
    assert!(
        out.contains("deployment.apps/web created") && out.contains("service/web created"),
        "{out}"
    );
    let pods = wait_ready(&cluster, 3, Duration::from_secs(90), "the example app").await?;

    // reach it where `rkubectl service web --url` says
    let urls = cluster.rkubectl(&["service", "web", "--url"])?;
    let url = urls.lines().next().unwrap_or_default().to_string();
    let addr = parse_url(&url)?;
    // pods Ready is not yet Endpoints nor rules: the endpoints controller and the proxies
    // each promise a second, so the URL answers within two
    let answered = eventually(&format!("{url} to answer"), Duration::from_secs(2), || async {
        cluster.http_get(addr, "/").await.ok()
    })
    .await;
    let (status, body) = answered.with_context(|| format!("{url} did not answer within 2 s"))?;
    assert_eq!(status, 200, "{url}: {body}");
    assert!(body.starts_with("hello from web-"), "{url} answered {body:?}");

    // kill a container: the kubelet starts it again in the same pod
    let victim = &pods[0];
    let container_id = victim.status.as_ref().unwrap().container_statuses[0]
        .container_id
        .trim_start_matches("containerd://")
        .to_string();
    let node = cluster
        .nodes
        .iter()
        .find(|n| n.name == victim.spec.as_ref().unwrap().node_name)
        .unwrap();
    let killed = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&node.containerd.socket)
        .args(["-n", "rkube", "tasks", "kill", "-s", "SIGKILL", &container_id])
        .output()?;
    assert!(
        killed.status.success(),
        "ctr tasks kill: {}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let pods_api = cluster.api::<Pod>("default")?;
    let restarted = eventually(
        "the killed container to be restarted and ready",
        Duration::from_secs(30),
        || async {
            let p = pods_api.get(&name(victim)).await.ok()?;
            let s = &p.status.as_ref()?.container_statuses[0];
            (s.restart_count >= 1 && pod_ready(&p)).then_some(s.clone())
        },
    )
    .await;
    let restarted = restarted.expect("the killed container was restarted and is ready again");
    assert_eq!(
        restarted
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code),
        Some(137),
        "lastState says it was killed"
    );

    // delete a pod: the ReplicaSet makes a new one
    cluster.rkubectl(&["delete", "pod", &name(&pods[1])])?;
    let now = wait_ready(&cluster, 3, Duration::from_secs(60), "after deleting a pod").await?;
    assert!(
        !now.iter().any(|p| name(p) == name(&pods[1])),
        "a new pod replaced the deleted one"
    );

    // scale up: the new pods get traffic too
    cluster.rkubectl(&["scale", "deployment/web", "--replicas=5"])?;
    let five = wait_ready(&cluster, 5, Duration::from_secs(60), "scaled to 5").await?;
    let all: BTreeSet<String> = five.iter().map(name).collect();
    let spread = eventually(
        &format!("all 5 pods to answer through {url}"),
        Duration::from_secs(20),
        || async {
            let mut seen = BTreeSet::new();
            for _ in 0..60 {
                let (_, body) = cluster.http_get(addr, "/").await.ok()?;
                seen.insert(body.split_whitespace().last()?.to_string());
            }
            (seen == all).then_some(())
        },
    )
    .await
    .ok();
    assert!(spread.is_some(), "all 5 pods answer through {url}");

    // a new image rolls out while requests flow: none fails
    let (v2, _) = cluster.registry.push_busybox("rkube/busybox-v2").await?;
    let traffic = Traffic::start(&cluster, addr, "/", 2);
    cluster.rkubectl(&["set", "image", "deployment/web", &format!("httpd={v2}")])?;
    let status = cluster.rkubectl(&["rollout", "status", "deployment/web", "--timeout=180s"])?;
    assert!(status.contains("successfully rolled out"), "{status}");
    let updated = wait_ready(&cluster, 5, Duration::from_secs(30), "after the rollout").await?;
    let (ok, failures, _) = traffic.stop().await;
    assert!(updated
        .iter()
        .all(|p| p.spec.as_ref().unwrap().containers[0].image == v2));
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the rollout: {failures:?}",
        failures.len(),
        ok + failures.len()
    );
    assert!(ok > 50, "requests flowed during the rollout ({ok})");

    // the autoscaler follows load
    cluster.rkubectl(&["scale", "deployment/web", "--replicas=2"])?;
    wait_ready(&cluster, 2, Duration::from_secs(60), "scaled to 2").await?;
    cluster.rkubectl(&[
        "autoscale",
        "deployment/web",
        "--min=2",
        "--max=5",
        "--cpu-percent=50",
    ])?;
    let deployments = cluster.api::<Deployment>("default")?;
    let load = Traffic::start(&cluster, addr, "/cgi-bin/work", 3);
    let grew = eventually("the autoscaler to add pods", Duration::from_secs(90), || async {
        let d = deployments.get("web").await.ok()?;
        (d.spec?.replicas.unwrap_or(0) > 2).then_some(())
    })
    .await
    .ok();
    let (worked, failures, _) = load.stop().await;
    assert!(
        grew.is_some(),
        "the autoscaler added pods under load ({worked} requests served)"
    );
    assert!(
        failures.len() * 20 < worked.max(1),
        "the app kept answering under load: {failures:?}"
    );
    let shrank = eventually(
        "the autoscaler to go back to 2",
        Duration::from_secs(90),
        || async {
            let d = deployments.get("web").await.ok()?;
            (d.spec?.replicas == Some(2)).then_some(())
        },
    )
    .await
    .ok();
    assert!(
        shrank.is_some(),
        "the autoscaler went back to 2 after the load stopped"
    );
    cluster.rkubectl(&["delete", "hpa", "web"])?;
    cluster.rkubectl(&["scale", "deployment/web", "--replicas=4"])?;
    let four = wait_ready(&cluster, 4, Duration::from_secs(60), "scaled to 4").await?;

    // a node is lost: its pods run on the others within the grace period and eviction
    let busiest = {
        let mut by_node: std::collections::BTreeMap<String, usize> = Default::default();
        for p in &four {
            *by_node
                .entry(p.spec.as_ref().unwrap().node_name.clone())
                .or_default() += 1;
        }
        by_node.into_iter().max_by_key(|(_, n)| *n).unwrap().0
    };
    let lost = cluster.nodes.iter().position(|n| n.name == busiest).unwrap();
    cluster.nodes[lost].power_off().await?;
    let moved = eventually(
        &format!("4 ready pods off {busiest}"),
        Duration::from_secs(60),
        || async {
            let pods = ready_web_pods(&cluster).await;
            let elsewhere = pods
                .iter()
                .filter(|p| p.spec.as_ref().unwrap().node_name != busiest)
                .count();
            (elsewhere == 4).then_some(())
        },
    )
    .await
    .ok();
    assert!(
        moved.is_some(),
        "4 ready pods on the other nodes after {busiest} was lost"
    );
    let other = cluster.nodes.iter().find(|n| n.name != busiest).unwrap();
    let other_url = SocketAddr::new(other.ip.into(), addr.port());
    let (other_status, body) = cluster.http_get(other_url, "/").await?;
    assert_eq!(other_status, 200, "{other_url} still serves the app: {body}");

    // every control-plane daemon restarted in turn: nothing lost, the cluster still acts
    let before: BTreeSet<String> = ready_web_pods(&cluster).await.iter().map(name).collect();
    cluster.restart_apiserver().await?;
    cluster.stop_scheduler().await?;
    cluster.start_scheduler();
    cluster.stop_controller_manager().await?;
    cluster.start_controller_manager();
    let after: BTreeSet<String> = wait_ready(&cluster, 4, Duration::from_secs(30), "after restarts")
        .await?
        .iter()
        .map(name)
        .collect();
    assert_eq!(
        before, after,
        "the same pods run after every control-plane restart"
    );
    let svc = cluster.rkubectl(&["get", "svc", "web"])?;
    assert!(svc.contains("NodePort"), "{svc}");
    cluster.rkubectl(&["scale", "deployment/web", "--replicas=5"])?;
    wait_ready(&cluster, 5, Duration::from_secs(60), "scaling after the restarts").await?;
    let (status, _) = cluster.http_get(other_url, "/").await?;
    assert_eq!(status, 200);

    cluster.stop().await
}

#[test]
fn the_whole_story_deploy_reach_heal_scale_roll_out_autoscale_lose_a_node_restart() -> anyhow::Result<()> {
    run(story)
}
