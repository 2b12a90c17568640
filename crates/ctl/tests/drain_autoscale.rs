//! `rkubectl drain` and `rkubectl autoscale` end to end: the built binary
//! against a real apiserver in-process; the test plays the node's kubelet
//! (it finishes the graceful deletion of pods marked for deletion).

use rkube_api::apps::v1::{Deployment, DeploymentSpec};
use rkube_api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerStatus, MetricStatus, MetricValueStatus,
    ResourceMetricStatus,
};
use rkube_api::core::v1::{Container, Node, Pod, PodSpec, PodStatus};
use rkube_api::meta::v1::LabelSelector;
use rkube_api::Resource;
use rkube_client::{Api, Client, DeleteParams, ListParams};
use rkube_testing::TestApiServer;
use std::process::Command;
use std::time::Duration;

struct Run {
    stdout: String,
    stderr: String,
    code: i32,
}

fn rkubectl(url: &str, home: &std::path::Path, args: &[&str]) -> Run {
    let o = Command::new(env!("CARGO_BIN_EXE_rkubectl"))
        .env("HOME", home)
        .env_remove("RKUBECONFIG")
        .env_remove("RKUBE_SERVER")
        .arg("--server")
        .arg(url)
        .args(args)
        .output()
        .expect("run rkubectl");
    Run {
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        code: o.status.code().unwrap_or(-1),
    }
}

fn running_pod(name: &str, node: &str) -> Pod {
    let mut p = Pod {
        spec: Some(PodSpec {
            node_name: node.into(),
            containers: vec![Container {
                name: "app".into(),
                image: "nginx:1.25".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    p.metadata_mut().name = name.into();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_cordons_evicts_and_waits_for_the_pods() {
    let server = TestApiServer::start().await.unwrap();
    let url = server.url().to_string();
    let client = Client::connect(&url).unwrap();
    let nodes = Api::<Node>::all(client.clone());
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    for n in ["n1", "n2"] {
        let mut node = Node::default();
        node.metadata_mut().name = n.into();
        nodes.create(&node).await.unwrap();
    }
    for (name, node) in [("web-1", "n1"), ("web-2", "n1"), ("elsewhere", "n2")] {
        pods.create(&running_pod(name, node)).await.unwrap();
        pods.replace_status_with(name, |mut p| {
            p.status = Some(PodStatus {
                phase: "Running".into(),
                ..Default::default()
            });
            p
        })
        .await
        .unwrap();
    }
    // The kubelet of n1: stops pods marked for deletion, then removes them.
    let kubelet = tokio::spawn(finish_deletions_on("n1", pods.clone()));

    let home = server.dir().to_path_buf();
    let u = url.clone();
    let run = tokio::task::spawn_blocking(move || rkubectl(&u, &home, &["drain", "n1", "--timeout=20s"]))
        .await
        .unwrap();
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        "node/n1 cordoned\nevicting pod default/web-1\nevicting pod default/web-2\npod/web-1 evicted\npod/web-2 evicted\nnode/n1 drained\n"
    );
    assert!(nodes.get("n1").await.unwrap().spec.unwrap().unschedulable);
    assert!(pods.get_opt("web-1").await.unwrap().is_none());
    assert!(
        pods.get_opt("elsewhere").await.unwrap().is_some(),
        "other nodes untouched"
    );
    kubelet.abort();

    // Without a kubelet to finish the deletion, --timeout says so.
    pods.create(&running_pod("stuck", "n2")).await.unwrap();
    pods.replace_status_with("stuck", |mut p| {
        p.status = Some(PodStatus {
            phase: "Running".into(),
            ..Default::default()
        });
        p
    })
    .await
    .unwrap();
    let home = server.dir().to_path_buf();
    let u = url.clone();
    let run = tokio::task::spawn_blocking(move || rkubectl(&u, &home, &["drain", "n2", "--timeout=1s"]))
        .await
        .unwrap();
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("timed out") && run.stderr.contains("default/stuck"),
        "{}",
        run.stderr
    );
    // A grace period of 0 removes the pods at once.
    let home = server.dir().to_path_buf();
    let u = url.clone();
    let run = tokio::task::spawn_blocking(move || rkubectl(&u, &home, &["drain", "n2", "--grace-period=0"]))
        .await
        .unwrap();
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    assert!(
        run.stdout.starts_with("node/n2 already cordoned\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with("pod/stuck evicted\nnode/n2 drained\n"),
        "{}",
        run.stdout
    );

    let home = server.dir().to_path_buf();
    let run = tokio::task::spawn_blocking(move || rkubectl(&url, &home, &["drain", "nope"]))
        .await
        .unwrap();
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("NotFound"), "{}", run.stderr);
    server.stop().await.unwrap();
}

/// `rkubectl --config CONF ARGS...`, the built binary against a secure server.
fn rkubectl_secure(url: &str, conf: &std::path::Path, args: &[&str]) -> Run {
    let o = Command::new(env!("CARGO_BIN_EXE_rkubectl"))
        .env_remove("RKUBECONFIG")
        .env_remove("RKUBE_SERVER")
        .arg("--config")
        .arg(conf)
        .arg("--server")
        .arg(url)
        .args(args)
        .output()
        .expect("run rkubectl");
    Run {
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        code: o.status.code().unwrap_or(-1),
    }
}

/// The test plays the disruption controller: the budget allows nothing until the test
/// has seen drain refused (in the audit log), then one disruption at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_the_disruption_budget_and_retries() {
    use rkube_api::policy::v1::PodDisruptionBudget;
    let server = TestApiServer::secure(&["n1"]).await.unwrap();
    let client = server.client();
    let nodes = Api::<Node>::all(client.clone());
    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let mut node = Node::default();
    node.metadata_mut().name = "n1".into();
    nodes.create(&node).await.unwrap();
    for name in ["web-1", "web-2"] {
        let mut p = running_pod(name, "n1");
        p.metadata_mut().labels.insert("app".into(), "web".into());
        pods.create(&p).await.unwrap();
        pods.replace_status_with(name, |mut p| {
            p.status = Some(PodStatus {
                phase: "Running".into(),
                conditions: vec![rkube_api::core::v1::PodCondition {
                    r#type: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }],
                ..Default::default()
            });
            p
        })
        .await
        .unwrap();
    }
    let pdbs = Api::<PodDisruptionBudget>::namespaced(client.clone(), "default");
    let pdb: PodDisruptionBudget = serde_yaml::from_str(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec:\n  minAvailable: 2\n  selector: {matchLabels: {app: web}}\n",
    )
    .unwrap();
    let pdb = pdbs.create(&pdb).await.unwrap();
    let allow = |n: i32| {
        let pdbs = pdbs.clone();
        let generation = pdb.metadata().generation;
        async move {
            pdbs.replace_status_with("web", |mut p| {
                let s = p.status.get_or_insert_with(Default::default);
                s.observed_generation = generation;
                s.disruptions_allowed = n;
                s.desired_healthy = 2;
                s.current_healthy = 2 + n;
                s.expected_pods = 2;
                p
            })
            .await
            .unwrap();
        }
    };
    allow(0).await;
    // n1's kubelet: finishes the deletion of pods marked for deletion
    let kubelet = tokio::spawn(finish_deletions_on("n1", pods.clone()));

    // with a short timeout drain gives up, and the pods stay
    let conf = server.admin_conf();
    let url = server.url().to_string();
    let (c, u) = (conf.clone(), url.clone());
    let run = tokio::task::spawn_blocking(move || rkubectl_secure(&u, &c, &["drain", "n1", "--timeout=2s"]))
        .await
        .unwrap();
    assert_eq!(run.code, 1, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(
            "error when evicting pods/\"web-1\" -n \"default\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget."
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("global timeout reached: 2s"),
        "{}",
        run.stderr
    );
    assert_eq!(pods.list(&ListParams::default()).await.unwrap().items.len(), 2);

    // without one it waits, and goes on once the budget allows it
    let refusals = || {
        server
            .audit()
            .unwrap()
            .iter()
            .filter(|e| e["objectRef"]["subresource"] == "eviction" && e["responseStatus"]["code"] == 429)
            .count()
    };
    let before = refusals();
    let drain =
        tokio::task::spawn_blocking(move || rkubectl_secure(&url, &conf, &["drain", "n1", "--timeout=60s"]));
    rkube_testing::eventually("drain is refused by the budget", Duration::from_secs(20), || {
        std::future::ready(refusals() >= before + 2)
    })
    .await
    .unwrap();
    assert_eq!(pods.list(&ListParams::default()).await.unwrap().items.len(), 2);
    allow(1).await;
    // one pod goes; the budget is spent again until "a replacement is ready elsewhere"
    rkube_testing::eventually("one pod is evicted", Duration::from_secs(20), || async {
        anyhow::Ok(pods.list(&ListParams::default()).await?.items.len() == 1)
    })
    .await
    .unwrap();
    allow(1).await;
    let run = drain.await.unwrap();
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("(will retry after 5s)"), "{}", run.stderr);
    assert!(run.stdout.ends_with("node/n1 drained\n"), "{}", run.stdout);
    for name in ["web-1", "web-2"] {
        assert!(
            run.stdout.contains(&format!("pod/{name} evicted\n")),
            "{}",
            run.stdout
        );
    }
    assert!(pods.list(&ListParams::default()).await.unwrap().items.is_empty());
    kubelet.abort();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscale_creates_the_hpa_and_get_shows_its_targets() {
    let server = TestApiServer::start().await.unwrap();
    let url = server.url().to_string();
    let client = Client::connect(&url).unwrap();
    let labels: std::collections::BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
    let mut d = Deployment {
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: Some(LabelSelector {
                match_labels: labels.clone(),
                ..Default::default()
            }),
            template: Some(rkube_api::core::v1::PodTemplateSpec {
                metadata: Some(rkube_api::meta::v1::ObjectMeta {
                    labels,
                    ..Default::default()
                }),
                spec: running_pod("x", "").spec,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    d.metadata_mut().name = "web".into();
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&d)
        .await
        .unwrap();

    let home = server.dir().to_path_buf();
    let u = url.clone();
    let run = tokio::task::spawn_blocking(move || {
        let created = rkubectl(
            &u,
            &home,
            &[
                "autoscale",
                "deployment/web",
                "--min=1",
                "--max=5",
                "--cpu-percent=50",
            ],
        );
        let missing = rkubectl(&u, &home, &["autoscale", "deployment/nope", "--max=5"]);
        let pods = rkubectl(&u, &home, &["autoscale", "pod/x", "--max=5"]);
        (created, missing, pods)
    })
    .await
    .unwrap();
    assert_eq!(run.0.code, 0, "{}", run.0.stderr);
    assert_eq!(
        run.0.stdout,
        "horizontalpodautoscaler.autoscaling/web autoscaled\n"
    );
    assert_eq!(run.1.code, 1);
    assert!(run.1.stderr.contains("NotFound"), "{}", run.1.stderr);
    assert_eq!(run.2.code, 1);
    assert!(
        run.2.stderr.contains("only deployments and replicasets"),
        "{}",
        run.2.stderr
    );

    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), "default");
    let h = hpas.get("web").await.unwrap();
    let spec = h.spec.clone().unwrap();
    let target = spec.scale_target_ref.clone().unwrap();
    assert_eq!(
        (
            target.kind.as_str(),
            target.name.as_str(),
            target.api_version.as_str()
        ),
        ("Deployment", "web", "apps/v1")
    );
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(1), 5));
    let m = &spec.metrics[0].resource.as_ref().unwrap();
    assert_eq!(
        (m.name.as_str(), m.target.as_ref().unwrap().average_utilization),
        ("cpu", Some(50))
    );

    // What the autoscaler writes is what `get hpa` shows.
    hpas.replace_status_with("web", |mut h| {
        h.status = Some(HorizontalPodAutoscalerStatus {
            current_replicas: 2,
            desired_replicas: 2,
            current_metrics: vec![MetricStatus {
                r#type: "Resource".into(),
                resource: Some(ResourceMetricStatus {
                    name: "cpu".into(),
                    current: Some(MetricValueStatus {
                        average_utilization: Some(35),
                        ..Default::default()
                    }),
                }),
                container_resource: None,
            }],
            ..Default::default()
        });
        h
    })
    .await
    .unwrap();
    let home = server.dir().to_path_buf();
    let run = tokio::task::spawn_blocking(move || rkubectl(&url, &home, &["get", "hpa"]))
        .await
        .unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let row = run.stdout.lines().nth(1).unwrap_or_default().to_string();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..6],
        ["web", "Deployment/web", "35%/50%", "1", "5", "2"],
        "{}",
        run.stdout
    );
    server.stop().await.unwrap();
}

/// What the kubelet of `node` does for a drain: pods marked for deletion are stopped, then
/// removed for good.
async fn finish_deletions_on(node: &'static str, pods: Api<Pod>) {
    loop {
        let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
        if let Ok(list) = pods.list(&on_node).await {
            for p in list
                .items
                .iter()
                .filter(|p| !p.metadata().deletion_timestamp.is_empty())
            {
                let _ = pods
                    .delete(p.name(), &DeleteParams::default().grace_period(0))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
