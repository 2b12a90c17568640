//! The job, daemonset, statefulset and serviceaccount loops, with the garbage collector,
//! against a real apiserver in process, started through the same `run` as the binary.
//! There are no kubelets: a hollow kubelet plays them, finishing Jobs' pods (failing those
//! whose name says so) and marking every other pod Running and Ready.

use anyhow::Result;
use rkube_api::apps::v1::{DaemonSet, StatefulSet};
use rkube_api::batch::v1::Job;
use rkube_api::core::v1::{Namespace, Node, Pod, ServiceAccount, Taint};
use rkube_api::Resource;
use rkube_client::{Api, DeleteParams, EventType, ListParams};
use rkube_testing::{eventually, TestApiServer};
use std::time::Duration;

mod common;
use common::{phase, Cluster, Settle};

/// Pods of Jobs end: Failed when their name contains `fail`, else Succeeded. Every other
/// pod turns Running and Ready.
fn settle(pod: &Pod) -> Option<Settle> {
    if matches!(phase(pod), "Running" | "Succeeded" | "Failed") {
        return None;
    }
    let of_job = pod.metadata().owner_references.iter().any(|r| r.kind == "Job");
    Some(match (of_job, pod.name().contains("fail")) {
        (true, true) => Settle::End("Failed"),
        (true, false) => Settle::End("Succeeded"),
        (false, _) => Settle::Ready,
    })
}

async fn start() -> Result<Cluster> {
    let api = TestApiServer::start().await?;
    Cluster::start(
        api,
        "job,daemonset,statefulset,serviceaccount,garbage-collector",
        settle,
    )
    .await
}

fn from_yaml<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str(yaml).expect("valid manifest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_runs_its_completions_and_one_past_its_backoff_limit_fails() -> Result<()> {
    let c = start().await?;
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), "default");
    jobs.create(&from_yaml(
        "metadata: {name: pi}\nspec:\n  completions: 3\n  parallelism: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: pi, image: busybox}]\n",
    ))
    .await?;
    let done = eventually("job pi to complete", Duration::from_secs(30), || async {
        let job = jobs.get("pi").await?;
        let s = job.status.clone().unwrap_or_default();
        let complete = s
            .conditions
            .iter()
            .any(|c| c.r#type == "Complete" && c.status == "True");
        anyhow::ensure!(complete && s.succeeded == 3, "status {s:?}");
        Ok(Some(job))
    })
    .await?;
    let s = done.status.unwrap_or_default();
    assert_eq!((s.succeeded, s.failed, s.active), (3, 0, 0));
    assert!(!s.completion_time.is_empty() && !s.start_time.is_empty());
    // Counted pods lose their tracking finalizer, so they can be deleted.
    eventually(
        "the pods to lose their tracking finalizer",
        Duration::from_secs(10),
        || async {
            let pods = c.live_pods("batch.kubernetes.io/job-name=pi").await?;
            anyhow::ensure!(pods.len() == 3, "{} pods", pods.len());
            Ok(pods.iter().all(|p| p.metadata().finalizers.is_empty()))
        },
    )
    .await?;

    jobs.create(&from_yaml(
        "metadata: {name: fail}\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: f, image: busybox}]\n",
    ))
    .await?;
    let failed = eventually("job fail to fail", Duration::from_secs(30), || async {
        let job = jobs.get("fail").await?;
        Ok(job
            .status
            .unwrap_or_default()
            .conditions
            .into_iter()
            .find(|c| c.r#type == "Failed" && c.status == "True"))
    })
    .await?;
    assert_eq!(failed.reason, "BackoffLimitExceeded");

    // Deleting a Job takes its pods with it.
    jobs.delete("pi", &DeleteParams::default()).await?;
    eventually("pi's pods to go with it", Duration::from_secs(30), || async {
        Ok(c.live_pods("batch.kubernetes.io/job-name=pi").await?.is_empty())
    })
    .await?;
    c.stop().await
}

fn node(name: &str, worker: bool) -> Node {
    let mut n = Node::default();
    n.metadata_mut().name = name.into();
    if worker {
        n.metadata_mut().labels.insert("role".into(), "worker".into());
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daemon_set_follows_the_nodes_it_matches() -> Result<()> {
    let c = start().await?;
    let nodes: Api<Node> = Api::all(c.client.clone());
    for (name, worker) in [("n1", true), ("n2", true), ("n3", false)] {
        nodes.create(&node(name, worker)).await?;
    }
    let sets: Api<DaemonSet> = Api::namespaced(c.client.clone(), "default");
    sets.create(&from_yaml(
        "metadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec:\n      nodeSelector: {role: worker}\n      containers: [{name: a, image: busybox}]\n",
    ))
    .await?;
    let on_nodes = |want: &'static [&'static str]| {
        let c = &c;
        async move {
            eventually(
                &format!("agent pods on {want:?}"),
                Duration::from_secs(30),
                || async {
                    let mut got: Vec<String> = c
                        .live_pods("app=agent")
                        .await?
                        .iter()
                        .map(|p| p.spec.as_ref().map(|s| s.node_name.clone()).unwrap_or_default())
                        .collect();
                    got.sort();
                    anyhow::ensure!(got == want, "on {got:?}");
                    Ok(true)
                },
            )
            .await
        }
    };
    on_nodes(&["n1", "n2"]).await?;
    // A node that joins gets its pod.
    nodes.create(&node("n4", true)).await?;
    on_nodes(&["n1", "n2", "n4"]).await?;
    // A node tainted NoExecute loses it.
    let mut n2 = nodes.get("n2").await?;
    n2.spec.get_or_insert_with(Default::default).taints.push(Taint {
        key: "maintenance".into(),
        effect: "NoExecute".into(),
        ..Default::default()
    });
    nodes.update(&n2).await?;
    on_nodes(&["n1", "n4"]).await?;
    let status = eventually("the DaemonSet's status", Duration::from_secs(10), || async {
        let s = sets.get("agent").await?.status.unwrap_or_default();
        // The status may still count n2's pod for a moment after the taint
        // empties it; wait for the one that describes the two nodes left.
        let counts = (s.desired_number_scheduled, s.number_ready, s.number_available);
        anyhow::ensure!(counts == (2, 2, 2), "{s:?}");
        Ok(Some(s))
    })
    .await?;
    assert_eq!(status.current_number_scheduled, 2, "{status:?}");
    // Its pods go with it.
    sets.delete("agent", &DeleteParams::default()).await?;
    eventually("agent pods to go", Duration::from_secs(30), || async {
        Ok(c.live_pods("app=agent").await?.is_empty())
    })
    .await?;
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stateful_set_scales_in_order_and_back_in_reverse() -> Result<()> {
    let c = start().await?;
    let sets: Api<StatefulSet> = Api::namespaced(c.client.clone(), "default");
    sets.create(&from_yaml(
        "metadata: {name: web}\nspec:\n  replicas: 3\n  serviceName: web\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: w, image: busybox}]\n",
    ))
    .await?;
    let names = |n: usize| -> Vec<String> { (0..n).map(|i| format!("web-{i}")).collect() };
    let have = |want: Vec<String>| {
        let c = &c;
        async move {
            eventually(&format!("pods {want:?}"), Duration::from_secs(30), || async {
                let got: Vec<String> = c
                    .live_pods("app=web")
                    .await?
                    .iter()
                    .map(|p| p.name().to_string())
                    .collect();
                anyhow::ensure!(got == want, "pods {got:?}");
                Ok(true)
            })
            .await
        }
    };
    have(names(3)).await?;
    // Created in order: each after the one before it was ready.
    let pods = c.live_pods("app=web").await?;
    let created: Vec<&str> = pods
        .iter()
        .map(|p| p.metadata().creation_timestamp.as_str())
        .collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "{created:?}");
    assert_eq!(
        pods[1]
            .spec
            .as_ref()
            .map(|s| (s.hostname.as_str(), s.subdomain.as_str())),
        Some(("web-1", "web"))
    );

    // As `rkubectl scale` does: retried when the controller's status write came between
    // the read and the update.
    let scale = |n: i32| {
        let sets = sets.clone();
        async move {
            sets.replace_with("web", |mut s: StatefulSet| {
                s.spec.get_or_insert_with(Default::default).replicas = Some(n);
                s
            })
            .await?;
            anyhow::Ok(())
        }
    };
    scale(5).await?;
    have(names(5)).await?;
    scale(2).await?;
    have(names(2)).await?;
    // The scale-down went from the top: a Deleted event per pod, web-4 first.
    let events: Api<rkube_api::core::v1::Event> = Api::namespaced(c.client.clone(), "default");
    let deleted: Vec<String> = eventually("three deletion events", Duration::from_secs(10), || async {
        let mut list: Vec<_> = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.reason == "SuccessfulDelete" && e.r#type == EventType::Normal.as_str())
            .collect();
        list.sort_by(|a, b| {
            a.metadata()
                .resource_version
                .parse::<u64>()
                .ok()
                .cmp(&b.metadata().resource_version.parse::<u64>().ok())
        });
        let msgs: Vec<String> = list.into_iter().map(|e| e.message).collect();
        anyhow::ensure!(msgs.len() >= 3, "{msgs:?}");
        Ok(Some(msgs))
    })
    .await?;
    assert!(
        deleted[0].contains("web-4") && deleted[1].contains("web-3") && deleted[2].contains("web-2"),
        "{deleted:?}"
    );
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_namespace_gets_a_default_service_account() -> Result<()> {
    let c = start().await?;
    let mut ns = Namespace::default();
    ns.metadata_mut().name = "shop".into();
    Api::<Namespace>::all(c.client.clone()).create(&ns).await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "shop");
    eventually(
        "shop's default ServiceAccount",
        Duration::from_secs(10),
        || async { Ok(accounts.get_opt("default").await?.is_some()) },
    )
    .await?;
    // Deleted, it comes back.
    accounts.delete("default", &DeleteParams::default()).await?;
    eventually(
        "shop's default ServiceAccount again",
        Duration::from_secs(10),
        || async { Ok(accounts.get_opt("default").await?.is_some()) },
    )
    .await?;
    // Pods run as it unless they name another.
    let pod: Pod =
        from_yaml("metadata: {name: p, namespace: shop}\nspec:\n  containers: [{name: c, image: busybox}]\n");
    let created = Api::<Pod>::namespaced(c.client.clone(), "shop")
        .create(&pod)
        .await?;
    assert_eq!(created.spec.unwrap_or_default().service_account_name, "default");
    c.stop().await
}
