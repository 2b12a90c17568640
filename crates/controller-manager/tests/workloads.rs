//! The workload loops (replicaset, deployment, garbage-collector,
//! namespace) against a real apiserver in-process, started through the
//! same `run` as the binary. There are no kubelets: the test is a hollow
//! kubelet that marks pods Running and Ready through UpdateStatus.

use anyhow::Result;
use futures::StreamExt;
use rkube_api::apps::v1::{Deployment, ReplicaSet};
use rkube_api::core::v1::{ConfigMap, Namespace, Pod};
use rkube_api::Resource;
use rkube_client::{Api, Client, DeleteParams, ListParams, WatchEvent, WatchParams};
use rkube_testing::{eventually, TestApiServer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::{deployment, is_ready, Cluster, Settle};

/// The cluster, and the switch of its hollow kubelet: while off it readies nothing.
async fn start() -> Result<(Cluster, Arc<AtomicBool>)> {
    let api = TestApiServer::start().await?;
    let on = Arc::new(AtomicBool::new(true));
    let kubelet_on = on.clone();
    // every live pod turns Running and Ready, as once its readiness probes pass
    let settle = move |p: &Pod| (kubelet_on.load(Ordering::SeqCst) && !is_ready(p)).then_some(Settle::Ready);
    let c = Cluster::start(api, "replicaset,deployment,garbage-collector,namespace", settle).await?;
    Ok((c, on))
}

async fn rkubectl(c: &Cluster, args: &[&str]) -> Result<String> {
    let (out, result) = c.api.rkubectl(args).await;
    result.map_err(|e| anyhow::anyhow!("rkubectl {args:?}: {e}"))?;
    Ok(out)
}

async fn live_pods(client: &Client, ns: &str, app: &str) -> Result<Vec<Pod>> {
    let list = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata().deletion_timestamp.is_empty())
        .collect())
}

fn image(p: &Pod) -> String {
    p.spec
        .as_ref()
        .map(|s| s.containers[0].image.clone())
        .unwrap_or_default()
}

/// Waits until the deployment has rolled out `replicas` ready pods of
/// `image`, and nothing else.
async fn rolled_out(client: &Client, name: &str, replicas: usize, img: &str) -> Result<Vec<Pod>> {
    let api = Api::<Deployment>::namespaced(client.clone(), "default");
    eventually(
        &format!("{name} runs {replicas} pods of {img}"),
        Duration::from_secs(20),
        || async {
            let pods = live_pods(client, "default", name).await?;
            let d = api.get(name).await?;
            let s = d.status.clone().unwrap_or_default();
            let done = pods.len() == replicas
                && pods.iter().all(|p| image(p) == img)
                && s.observed_generation == d.metadata().generation
                && s.updated_replicas as usize == replicas
                && s.available_replicas as usize == replicas
                && s.replicas as usize == replicas;
            Ok(done.then_some(pods))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_scale_replace_roll_and_roll_back() -> Result<()> {
    let (c, kubelet_on) = start().await?;
    let api = Api::<Deployment>::namespaced(c.client.clone(), "default");
    api.create(&deployment("web", 3, "nginx:1")).await?;
    let pods = rolled_out(&c.client, "web", 3, "nginx:1").await?;
    let rs_name = pods[0].metadata().owner_references[0].name.clone();
    assert!(rs_name.starts_with("web-"), "{rs_name}");
    assert!(pods.iter().all(|p| p.name().starts_with(&format!("{rs_name}-"))));
    let rs = Api::<ReplicaSet>::namespaced(c.client.clone(), "default")
        .get(&rs_name)
        .await?;
    let hash = rs
        .metadata()
        .labels
        .get("pod-template-hash")
        .cloned()
        .unwrap_or_default();
    assert_eq!(rs_name, format!("web-{hash}"));
    assert_eq!(
        rs.metadata()
            .annotations
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    let d = api.get("web").await?;
    let conds: Vec<(String, String, String)> = d
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .map(|c| (c.r#type, c.status, c.reason))
        .collect();
    assert!(
        conds.contains(&(
            "Available".into(),
            "True".into(),
            "MinimumReplicasAvailable".into()
        )),
        "{conds:?}"
    );
    eventually(
        "Progressing says NewReplicaSetAvailable",
        Duration::from_secs(10),
        || async {
            let d = api.get("web").await?;
            Ok(d.status
                .unwrap_or_default()
                .conditions
                .iter()
                .any(|c| c.r#type == "Progressing" && c.reason == "NewReplicaSetAvailable")
                .then_some(()))
        },
    )
    .await?;
    let out = rkubectl(&c, &["rollout", "status", "deployment/web", "--timeout=10s"]).await?;
    assert!(
        out.ends_with("deployment \"web\" successfully rolled out\n"),
        "{out}"
    );

    // A deleted pod is replaced.
    let victim = pods[0].name().to_string();
    Api::<Pod>::namespaced(c.client.clone(), "default")
        .delete(&victim, &DeleteParams::default())
        .await?;
    eventually("the deleted pod is replaced", Duration::from_secs(10), || async {
        let pods = live_pods(&c.client, "default", "web").await?;
        Ok((pods.len() == 3 && pods.iter().all(|p| p.name() != victim)).then_some(()))
    })
    .await?;

    // Scale 3 → 5 → 1 → 3.
    for n in [5usize, 1, 3] {
        let out = rkubectl(&c, &["scale", "deployment/web", &format!("--replicas={n}")]).await?;
        assert_eq!(out, "deployment.apps/web scaled\n");
        rolled_out(&c.client, "web", n, "nginx:1").await?;
    }

    // Rolling update: available pods never below replicas - maxUnavailable.
    kubelet_on.store(false, Ordering::SeqCst);
    let min_available = Arc::new(Mutex::new(usize::MAX));
    let watcher = {
        let pods_api = Api::<Pod>::namespaced(c.client.clone(), "default");
        let list = pods_api.list(&ListParams::default()).await?;
        let mut stream = pods_api
            .watch(&WatchParams {
                resource_version: list.resource_version.clone(),
                ..Default::default()
            })
            .await?;
        let min_available = min_available.clone();
        let mut seen: HashMap<String, Pod> = list
            .items
            .into_iter()
            .map(|p| (p.name().to_string(), p))
            .collect();
        tokio::spawn(async move {
            while let Some(Ok(ev)) = stream.next().await {
                match ev {
                    WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                        seen.insert(p.name().to_string(), p);
                    }
                    WatchEvent::Deleted(p) => {
                        seen.remove(p.name());
                    }
                    WatchEvent::Bookmark(_) => continue,
                }
                let available = seen
                    .values()
                    .filter(|p| p.metadata().deletion_timestamp.is_empty())
                    .filter(|p| {
                        p.status.as_ref().is_some_and(|s| {
                            s.conditions
                                .iter()
                                .any(|c| c.r#type == "Ready" && c.status == "True")
                        })
                    })
                    .count();
                let mut m = min_available.lock().unwrap();
                *m = (*m).min(available);
            }
        })
    };
    let out = rkubectl(&c, &["set", "image", "deployment/web", "app=nginx:2"]).await?;
    assert_eq!(out, "deployment.apps/web image updated\n");
    // The surge pod appears and waits for the kubelet; nothing more than
    // maxSurge above replicas is created meanwhile.
    eventually(
        "a surge pod of the new template",
        Duration::from_secs(10),
        || async {
            let pods = live_pods(&c.client, "default", "web").await?;
            Ok(pods.iter().any(|p| image(p) == "nginx:2").then_some(()))
        },
    )
    .await?;
    let pods = live_pods(&c.client, "default", "web").await?;
    assert!(pods.len() <= 4, "replicas 3 + maxSurge 1, got {}", pods.len());
    kubelet_on.store(true, Ordering::SeqCst);
    rolled_out(&c.client, "web", 3, "nginx:2").await?;
    watcher.abort();
    let min = *min_available.lock().unwrap();
    assert_ne!(min, usize::MAX, "the watch saw the rollout");
    assert!(
        min >= 2,
        "available pods dropped to {min} (replicas 3 - maxUnavailable 1 = 2)"
    );
    assert_eq!(
        api.get("web")
            .await?
            .metadata()
            .annotations
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );

    // Roll back to revision 1: the old ReplicaSet comes back as revision 3.
    let out = rkubectl(&c, &["rollout", "undo", "deployment/web"]).await?;
    assert_eq!(out, "deployment.apps/web rolled back\n");
    let pods = rolled_out(&c.client, "web", 3, "nginx:1").await?;
    assert!(
        pods.iter()
            .all(|p| p.metadata().owner_references[0].name == rs_name),
        "the old ReplicaSet is re-used"
    );
    let rs = Api::<ReplicaSet>::namespaced(c.client.clone(), "default")
        .get(&rs_name)
        .await?;
    assert_eq!(
        rs.metadata()
            .annotations
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("3")
    );
    let history = rkubectl(&c, &["rollout", "history", "deployment/web"]).await?;
    assert!(
        history.contains("REVISION  CHANGE-CAUSE\n2         <none>\n3         <none>\n"),
        "{history}"
    );
    c.stop().await
}

/// `rkubectl rollout pause|resume|restart` and `undo --to-revision`, as a user
/// runs them against the real controllers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_pause_resume_restart_and_undo_to_a_revision() -> Result<()> {
    let (c, _) = start().await?;
    let api = Api::<Deployment>::namespaced(c.client.clone(), "default");
    let rss = Api::<ReplicaSet>::namespaced(c.client.clone(), "default");
    api.create(&deployment("web", 2, "nginx:1")).await?;
    rolled_out(&c.client, "web", 2, "nginx:1").await?; // revision 1

    // Paused: a new image is recorded, but nothing rolls until resumed.
    let out = rkubectl(&c, &["rollout", "pause", "deployment/web"]).await?;
    assert_eq!(out, "deployment.apps/web paused\n");
    let err = rkubectl(&c, &["rollout", "pause", "deployment/web"])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"deployments.apps "web" is already paused"#),
        "{err}"
    );
    rkubectl(&c, &["set", "image", "deployment/web", "app=nginx:2"]).await?;
    let paused = eventually(
        "the controller reports the pause",
        Duration::from_secs(20),
        || async {
            let d = api.get("web").await?;
            let s = d.status.clone().unwrap_or_default();
            let progressing = s.conditions.iter().find(|c| c.r#type == "Progressing").cloned();
            Ok((s.observed_generation == d.metadata().generation
                && progressing.is_some_and(|p| p.reason == "DeploymentPaused"))
            .then_some(d))
        },
    )
    .await?;
    assert!(paused.spec.as_ref().is_some_and(|s| s.paused));
    let pods = live_pods(&c.client, "default", "web").await?;
    assert!(
        pods.iter().all(|p| image(p) == "nginx:1"),
        "a paused rollout moved"
    );
    assert_eq!(
        rss.list(&ListParams::default()).await?.items.len(),
        1,
        "no new ReplicaSet while paused"
    );
    let err = rkubectl(&c, &["rollout", "restart", "deployment/web"])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("can't restart paused deployment"),
        "{err}"
    );

    let out = rkubectl(&c, &["rollout", "resume", "deployment/web"]).await?;
    assert_eq!(out, "deployment.apps/web resumed\n");
    rolled_out(&c.client, "web", 2, "nginx:2").await?; // revision 2

    // Restart: the same template with a restartedAt annotation, so every pod is new.
    let before: Vec<String> = live_pods(&c.client, "default", "web")
        .await?
        .iter()
        .map(|p| p.metadata().name.clone())
        .collect();
    let out = rkubectl(&c, &["rollout", "restart", "deployment/web"]).await?;
    assert_eq!(out, "deployment.apps/web restarted\n");
    let restarted = eventually(
        "every pod replaced after the restart",
        Duration::from_secs(20),
        || async {
            let pods = rolled_out(&c.client, "web", 2, "nginx:2").await?;
            Ok(pods
                .iter()
                .all(|p| !before.contains(&p.metadata().name))
                .then_some(pods))
        },
    )
    .await?;
    assert!(restarted.iter().all(|p| p
        .metadata()
        .annotations
        .contains_key("kubectl.kubernetes.io/restartedAt")));

    // Back to revision 1 by number, past the restart (revision 3).
    let out = rkubectl(&c, &["rollout", "undo", "deployment/web", "--to-revision=1"]).await?;
    assert_eq!(out, "deployment.apps/web rolled back\n");
    rolled_out(&c.client, "web", 2, "nginx:1").await?;
    let err = rkubectl(&c, &["rollout", "undo", "deployment/web", "--to-revision=9"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("revision"), "{err}");
    c.stop().await
}

async fn owned_by(client: &Client, uid: &str) -> Result<(Vec<ReplicaSet>, Vec<Pod>)> {
    let rss: Vec<ReplicaSet> = Api::<ReplicaSet>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| r.metadata().owner_references.iter().any(|o| o.uid == uid))
        .collect();
    let rs_uids: Vec<String> = rss.iter().map(|r| r.metadata().uid.clone()).collect();
    let pods = Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.metadata()
                .owner_references
                .iter()
                .any(|o| rs_uids.contains(&o.uid))
        })
        .collect();
    Ok((rss, pods))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_cascades_by_policy() -> Result<()> {
    let (c, _) = start().await?;
    let api = Api::<Deployment>::namespaced(c.client.clone(), "default");
    let rs_api = Api::<ReplicaSet>::namespaced(c.client.clone(), "default");
    let pod_api = Api::<Pod>::namespaced(c.client.clone(), "default");

    for (name, policy) in [
        ("bg", DeleteParams::background()),
        ("fg", DeleteParams::foreground()),
    ] {
        api.create(&deployment(name, 2, "nginx:1")).await?;
        rolled_out(&c.client, name, 2, "nginx:1").await?;
        let uid = api.get(name).await?.metadata().uid.clone();
        api.delete(name, &policy).await?;
        if name == "fg" {
            // Foreground: the owner stays until its dependents are gone.
            let d = api.get_opt(name).await?;
            if let Some(d) = d {
                assert!(d
                    .metadata()
                    .finalizers
                    .contains(&"foregroundDeletion".to_string()));
            }
        }
        eventually(
            &format!("{name}: deployment, replica sets and pods are gone"),
            Duration::from_secs(15),
            || async {
                let gone = api.get_opt(name).await?.is_none();
                let left = live_pods(&c.client, "default", name).await?.len()
                    + rs_api
                        .list(&ListParams::default().labels(&format!("app={name}")))
                        .await?
                        .items
                        .len();
                Ok((gone && left == 0).then_some(()))
            },
        )
        .await?;
        let (rss, pods) = owned_by(&c.client, &uid).await?;
        assert!(rss.is_empty() && pods.is_empty());
    }

    // Orphan: the ReplicaSet and its pods stay, without the reference.
    api.create(&deployment("keep", 2, "nginx:1")).await?;
    rolled_out(&c.client, "keep", 2, "nginx:1").await?;
    let (rss, _) = owned_by(&c.client, &api.get("keep").await?.metadata().uid).await?;
    let rs_name = rss[0].name().to_string();
    api.delete("keep", &DeleteParams::orphan()).await?;
    eventually("the deployment is gone", Duration::from_secs(10), || async {
        Ok(api.get_opt("keep").await?.is_none().then_some(()))
    })
    .await?;
    let rs = rs_api.get(&rs_name).await?;
    assert!(
        rs.metadata().owner_references.is_empty(),
        "{:?}",
        rs.metadata().owner_references
    );
    rs_api.delete(&rs_name, &DeleteParams::orphan()).await?;
    eventually(
        "the replica set is gone, its pods orphaned",
        Duration::from_secs(10),
        || async {
            let gone = rs_api.get_opt(&rs_name).await?.is_none();
            let pods = live_pods(&c.client, "default", "keep").await?;
            Ok(
                (gone && pods.len() == 2 && pods.iter().all(|p| p.metadata().owner_references.is_empty()))
                    .then_some(()),
            )
        },
    )
    .await?;
    // And nothing deletes orphans later.
    assert_eq!(
        pod_api
            .list(&ListParams::default().labels("app=keep"))
            .await?
            .items
            .len(),
        2
    );
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_empties_and_removes_it() -> Result<()> {
    let (c, _) = start().await?;
    let ns_api = Api::<Namespace>::all(c.client.clone());
    let mut ns = Namespace::default();
    ns.metadata_mut().name = "team".into();
    ns_api.create(&ns).await?;
    Api::<Deployment>::namespaced(c.client.clone(), "team")
        .create(&deployment("app", 2, "nginx:1"))
        .await?;
    let mut cm = ConfigMap::default();
    cm.metadata_mut().name = "settings".into();
    Api::<ConfigMap>::namespaced(c.client.clone(), "team")
        .create(&cm)
        .await?;
    eventually("pods run in the namespace", Duration::from_secs(15), || async {
        Ok((live_pods(&c.client, "team", "app").await?.len() == 2).then_some(()))
    })
    .await?;

    ns_api.delete("team", &DeleteParams::default()).await?;
    eventually("the namespace is gone", Duration::from_secs(15), || async {
        Ok(ns_api.get_opt("team").await?.is_none().then_some(()))
    })
    .await?;
    for info in rkube_api::KINDS.iter().filter(|k| k.namespaced) {
        let left = c
            .client
            .list_dyn(info, "team", &ListParams::default())
            .await?
            .items;
        assert!(
            left.is_empty(),
            "{} left in the deleted namespace: {}",
            info.plural,
            left.len()
        );
    }
    c.stop().await
}

/// A Deployment owned by a custom object (a Widget of the README's example
/// CRD) goes when the Widget goes, with its ReplicaSet and pods: the garbage
/// collector finds the custom owner through discovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_owned_by_a_custom_object_goes_with_it() -> Result<()> {
    use rkube_api::crd::CRD_INFO;
    use rkube_api::meta::v1::OwnerReference;
    use rkube_api::ResourceInfo;
    use rkube_client::PostParams;
    static WIDGETS: ResourceInfo = ResourceInfo {
        group: "example.com",
        version: "v1",
        kind: "Widget",
        plural: "widgets",
        singular: "widget",
        short_names: &[],
        namespaced: true,
        has_status: true,
        type_url: "rkube.dev/json/example.com/v1/Widget",
    };
    let json_any = |info: &ResourceInfo, yaml: &str| -> Result<prost_types::Any> {
        let v: serde_json::Value = serde_yaml::from_str(yaml)?;
        Ok(prost_types::Any {
            type_url: info.type_url.to_string(),
            value: serde_json::to_vec(&v)?,
        })
    };
    let (c, _kubelet_on) = start().await?;
    let crd = json_any(
        &CRD_INFO,
        include_str!("../../../deploy/examples/crd-widget.yaml"),
    )?;
    c.client
        .create_any(&CRD_INFO, "", crd, &PostParams::default())
        .await?;
    let widget = json_any(&WIDGETS, include_str!("../../../deploy/examples/widget.yaml"))?;
    let widget = c
        .client
        .create_any(&WIDGETS, "default", widget, &PostParams::default())
        .await?;
    let widget: serde_json::Value = serde_json::from_slice(&widget.value)?;
    let uid = widget["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    assert!(!uid.is_empty());

    let mut owned = deployment("owned", 2, "nginx:1");
    owned.metadata_mut().owner_references.push(OwnerReference {
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        name: "hello".into(),
        uid,
        controller: Some(true),
        ..Default::default()
    });
    let deployments = Api::<Deployment>::namespaced(c.client.clone(), "default");
    deployments.create(&owned).await?;
    rolled_out(&c.client, "owned", 2, "nginx:1").await?;
    // while the Widget lives, the collector leaves its Deployment alone
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        deployments.get("owned").await.is_ok(),
        "a live owner keeps its dependent"
    );

    c.client
        .delete_any(&WIDGETS, "default", "hello", &DeleteParams::default())
        .await?;
    eventually(
        "the Widget's Deployment, ReplicaSet and pods to go",
        Duration::from_secs(30),
        || async {
            let gone = deployments.get("owned").await.is_err_and(|e| e.is_not_found());
            let pods = live_pods(&c.client, "default", "owned").await.ok()?;
            (gone && pods.is_empty()).then_some(())
        },
    )
    .await?;
    c.stop().await
}
