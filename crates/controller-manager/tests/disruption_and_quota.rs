//! The disruption and resourcequota loops against a secure apiserver in process, with the
//! replicaset and deployment loops making pods and a hollow kubelet marking every pod
//! Running and Ready: a budget's status follows its pods, evictions spend it and wait for
//! it, and a quota gives back the room of pods that end or are deleted.

use anyhow::Result;
use rkube_api::apps::v1::Deployment;
use rkube_api::core::v1::{Pod, ResourceQuota};
use rkube_api::policy::v1::{Eviction, PodDisruptionBudget};
use rkube_api::Resource;
use rkube_client::{Api, DeleteParams};
use rkube_testing::{eventually, TestApiServer};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(30);

mod common;
use common::{phase, Cluster, Settle};

/// Marks every pending pod Running and Ready, as kubelets would.
async fn start() -> Result<Cluster> {
    let api = TestApiServer::secure(&["n1"]).await?;
    let settle = |p: &Pod| (phase(p) == "Pending").then_some(Settle::Ready);
    Cluster::start(api, "replicaset,deployment,disruption,resourcequota", settle).await
}

/// Holds, or an error showing what was seen (for `eventually`'s last look).
fn seen(holds: bool, what: &impl std::fmt::Debug) -> Result<bool> {
    if holds {
        Ok(true)
    } else {
        Err(anyhow::anyhow!("{what:?}"))
    }
}

fn from_yaml<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str(yaml).expect("valid manifest")
}

#[tokio::test]
async fn a_budget_follows_its_pods_and_evictions_wait_for_it() -> Result<()> {
    let c = start().await?;
    let deploy: Deployment = from_yaml(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: default}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: app, image: busybox}]\n",
    );
    Api::<Deployment>::namespaced(c.client.clone(), "default")
        .create(&deploy)
        .await?;
    // maxUnavailable 1 of the Deployment's 3 replicas: 2 must stay healthy
    let pdb: PodDisruptionBudget = from_yaml(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web, namespace: default}\nspec:\n  maxUnavailable: 1\n  selector: {matchLabels: {app: web}}\n",
    );
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.client.clone(), "default");
    pdbs.create(&pdb).await?;
    let status = || async {
        let s = pdbs.get("web").await?.status.unwrap_or_default();
        anyhow::Ok((
            s.expected_pods,
            s.desired_healthy,
            s.current_healthy,
            s.disruptions_allowed,
            s.observed_generation,
            s.conditions
                .iter()
                .find(|c| c.r#type == "DisruptionAllowed")
                .map(|c| c.reason.clone())
                .unwrap_or_default(),
        ))
    };
    eventually("the budget allows one disruption", PATIENCE, || async {
        let s = status().await?;
        seen(s == (3, 2, 3, 1, 1, "SufficientPods".to_string()), &s)
    })
    .await?;

    // one eviction spends it; the next waits with Kubernetes' answer
    let pods = c.live_pods("app=web").await?;
    c.client
        .evict("default", pods[0].name(), Eviction::default())
        .await?;
    let err = c
        .client
        .evict("default", pods[1].name(), Eviction::default())
        .await
        .expect_err("the budget is spent");
    assert!(err.is_too_many_requests(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Cannot evict pod as it would violate the pod's disruption budget."
    );

    // the ReplicaSet replaces the evicted pod; once it is ready the budget allows one again
    eventually(
        "a replacement is ready and the budget allows one again",
        PATIENCE,
        || async {
            let s = status().await?;
            seen(s.2 == 3 && s.3 == 1, &s)
        },
    )
    .await?;
    c.client
        .evict("default", pods[1].name(), Eviction::default())
        .await?;
    assert!(c.pods().get_opt(pods[1].name()).await?.is_none());

    // scaling the Deployment up is seen as more pods expected
    Api::<Deployment>::namespaced(c.client.clone(), "default")
        .patch_merge("web", &serde_json::json!({"spec": {"replicas": 5}}))
        .await?;
    eventually("the budget expects five pods", PATIENCE, || async {
        let s = status().await?;
        seen(s.0 == 5 && s.1 == 4 && s.3 == 1, &s)
    })
    .await?;
    c.stop().await
}

#[tokio::test]
async fn a_quota_gives_back_the_room_of_pods_that_end_or_go() -> Result<()> {
    let c = start().await?;
    let q: ResourceQuota = from_yaml(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: pods-2, namespace: default}\nspec:\n  hard: {pods: \"2\"}\n",
    );
    let quotas: Api<ResourceQuota> = Api::namespaced(c.client.clone(), "default");
    quotas.create(&q).await?;
    let pod = |name: &str| -> Pod {
        from_yaml(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: web}}}}\nspec:\n  containers: [{{name: app, image: busybox}}]\n"
        ))
    };
    let used = || async {
        let q = quotas.get("pods-2").await?;
        anyhow::Ok(
            q.status
                .and_then(|s| s.used.get("pods").map(|q| q.to_string()))
                .unwrap_or_default(),
        )
    };
    c.pods().create(&pod("a")).await?;
    c.pods().create(&pod("b")).await?;
    let err = c.pods().create(&pod("c")).await.expect_err("over quota");
    assert!(err.to_string().contains("exceeded quota: pods-2"), "{err}");

    // a deleted pod frees its share once the controller recounts
    c.pods().delete("a", &DeleteParams::default()).await?;
    eventually("the quota counts one pod", PATIENCE, || async {
        let u = used().await?;
        seen(u == "1", &u)
    })
    .await?;
    c.pods().create(&pod("c")).await?;

    // so does a pod that ended
    eventually("c runs", PATIENCE, || async {
        let p = c.pods().get("c").await?;
        anyhow::Ok(p.status.is_some_and(|s| s.phase == "Running"))
    })
    .await?;
    let mut b = c.pods().get("b").await?;
    b.status.get_or_insert_with(Default::default).phase = "Succeeded".into();
    c.pods().update_status(&b).await?;
    eventually("the quota counts one pod again", PATIENCE, || async {
        let u = used().await?;
        seen(u == "1", &u)
    })
    .await?;
    c.pods().create(&pod("d")).await?;
    let err = c.pods().create(&pod("e")).await.expect_err("over quota");
    assert!(
        err.to_string()
            .ends_with("exceeded quota: pods-2, requested: pods=1, used: pods=2, limited: pods=2"),
        "{err}"
    );
    c.stop().await
}
