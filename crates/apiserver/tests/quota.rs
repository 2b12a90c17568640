//! Admission that limits a namespace and evictions that respect budgets, against a
//! secure apiserver as a client sees them: ResourceQuota refuses what passes its hard
//! limits with Kubernetes' message, also under concurrent creates; LimitRange fills in
//! defaults and refuses what is out of range; the eviction subresource deletes a pod only
//! while its PodDisruptionBudget allows a disruption, and never spends one twice.

use rkube_api::core::v1::{ConfigMap, LimitRange, Pod, PodCondition, ResourceQuota};
use rkube_api::policy::v1::{Eviction, PodDisruptionBudget, PodDisruptionBudgetStatus};
use rkube_api::rbac::v1::RoleBinding;
use rkube_api::Resource;
use rkube_client::{Api, Client};
use rkube_testing::TestApiServer;

fn from_yaml<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str(yaml).expect("valid manifest")
}

fn pod(name: &str, resources: &str) -> Pod {
    from_yaml(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: web}}}}\nspec:\n  containers:\n  - name: app\n    image: busybox\n{resources}"
    ))
}

fn quota(name: &str, hard: &str) -> ResourceQuota {
    from_yaml(&format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hard: {{{hard}}}\n"
    ))
}

async fn secure() -> (TestApiServer, Client) {
    let api = TestApiServer::secure(&["n1"]).await.expect("apiserver starts");
    let client = api.client();
    (api, client)
}

fn message(r: Result<impl std::fmt::Debug, rkube_client::Error>) -> String {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(e) => {
            assert!(e.is_forbidden(), "{e:?}");
            e.to_string()
        }
    }
}

#[tokio::test]
async fn the_fourth_pod_is_refused_with_kubernetes_message() {
    let (api, client) = secure().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "default");
    quotas.create(&quota("pods-3", "pods: \"3\"")).await.unwrap();
    for i in 0..3 {
        pods.create(&pod(&format!("p{i}"), "")).await.unwrap();
    }
    assert_eq!(
        message(pods.create(&pod("p3", "")).await),
        "pods \"p3\" is forbidden: exceeded quota: pods-3, requested: pods=1, used: pods=3, limited: pods=3"
    );
    let q = quotas.get("pods-3").await.unwrap();
    let status = q.status.unwrap();
    assert_eq!(status.used["pods"].to_string(), "3");
    assert_eq!(status.hard["pods"].to_string(), "3");
    // the same answer over REST: 403 with the message
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p4"},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    });
    let (status, answer) = rest_post(&api, "/api/v1/namespaces/default/pods", &body).await;
    assert_eq!(
        (status, answer["reason"].as_str()),
        (403, Some("Forbidden")),
        "{answer}"
    );
    assert_eq!(
        answer["message"],
        "pods \"p4\" is forbidden: exceeded quota: pods-3, requested: pods=1, used: pods=3, limited: pods=3"
    );
    api.stop().await.unwrap();
}

#[tokio::test]
async fn ten_concurrent_creates_admit_exactly_the_limit() {
    let (api, client) = secure().await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "default");
    quotas.create(&quota("pods-3", "pods: \"3\"")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        tasks.push(tokio::spawn(async move {
            pods.create(&pod(&format!("c{i}"), "")).await
        }));
    }
    let (mut admitted, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(e) if e.is_forbidden() && e.to_string().contains("exceeded quota: pods-3") => refused += 1,
            Err(e) => panic!("unexpected answer: {e:?}"),
        }
    }
    assert_eq!((admitted, refused), (3, 7));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    assert_eq!(pods.list(&Default::default()).await.unwrap().items.len(), 3);
    let used = quotas.get("pods-3").await.unwrap().status.unwrap().used;
    assert_eq!(used["pods"].to_string(), "3");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn compute_quota_needs_requests_and_counts_them() {
    let (api, client) = secure().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "default");
    quotas
        .create(&quota("compute", "requests.cpu: \"1\", limits.memory: 1Gi"))
        .await
        .unwrap();
    assert_eq!(
        message(pods.create(&pod("bare", "")).await),
        "pods \"bare\" is forbidden: failed quota: compute: must specify limits.memory for: app; requests.cpu for: app"
    );
    let sized = "    resources: {requests: {cpu: 600m}, limits: {memory: 256Mi}}\n";
    pods.create(&pod("a", sized)).await.unwrap();
    assert_eq!(
        message(pods.create(&pod("b", sized)).await),
        "pods \"b\" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"
    );
    let used = quotas.get("compute").await.unwrap().status.unwrap().used;
    assert_eq!(used["requests.cpu"].to_string(), "600m");
    assert_eq!(used["limits.memory"].to_string(), "256Mi");
    api.stop().await.unwrap();
}

#[tokio::test]
async fn object_counts_include_what_existed_before_the_quota() {
    let (api, client) = secure().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = |name: &str| -> ConfigMap {
        from_yaml(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\n"
        ))
    };
    cms.create(&cm("before")).await.unwrap();
    Api::<ResourceQuota>::namespaced(client.clone(), "default")
        .create(&quota("objects", "count/configmaps: \"2\""))
        .await
        .unwrap();
    cms.create(&cm("second")).await.unwrap();
    assert_eq!(
        message(cms.create(&cm("third")).await),
        "configmaps \"third\" is forbidden: exceeded quota: objects, requested: count/configmaps=1, used: count/configmaps=2, limited: count/configmaps=2"
    );
    api.stop().await.unwrap();
}

#[tokio::test]
async fn limit_range_fills_defaults_and_refuses_above_max() {
    let (api, client) = secure().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let lr: LimitRange = from_yaml(
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: limits, namespace: default}\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m, memory: 128Mi}\n    defaultRequest: {cpu: 100m}\n    max: {cpu: \"1\"}\n",
    );
    Api::<LimitRange>::namespaced(client.clone(), "default")
        .create(&lr)
        .await
        .unwrap();
    let made = pods.create(&pod("defaulted", "")).await.unwrap();
    let r = made.spec.unwrap().containers[0].resources.clone().unwrap();
    assert_eq!(r.limits["cpu"].to_string(), "500m");
    assert_eq!(r.limits["memory"].to_string(), "128Mi");
    assert_eq!(r.requests["cpu"].to_string(), "100m");
    // defaultRequest is the default limit when not given, as Kubernetes defaults it
    assert_eq!(r.requests["memory"].to_string(), "128Mi");
    assert_eq!(made.status.unwrap().qos_class, "Burstable");
    assert!(made.metadata.unwrap().annotations["kubernetes.io/limit-ranger"]
        .starts_with("LimitRanger plugin set: "));
    assert_eq!(
        message(
            pods.create(&pod("big", "    resources: {limits: {cpu: \"2\"}}\n"))
                .await
        ),
        "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
    );
    api.stop().await.unwrap();
}

/// Marks `name` Running and, if `ready`, Ready, as its kubelet would.
async fn run(pods: &Api<Pod>, name: &str, ready: bool) {
    let mut p = pods.get(name).await.unwrap();
    let s = p.status.get_or_insert_with(Default::default);
    s.phase = "Running".into();
    if ready {
        s.conditions.push(PodCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        });
    }
    pods.update_status(&p).await.unwrap();
}

/// A budget over `app: web` whose status (the disruption controller's job) allows
/// `allowed` disruptions.
async fn budget(client: &Client, allowed: i32) -> Api<PodDisruptionBudget> {
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let pdb: PodDisruptionBudget = from_yaml(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web, namespace: default}\nspec:\n  minAvailable: 2\n  selector: {matchLabels: {app: web}}\n",
    );
    let mut made = pdbs.create(&pdb).await.unwrap();
    made.status = Some(PodDisruptionBudgetStatus {
        observed_generation: made.metadata().generation,
        disruptions_allowed: allowed,
        current_healthy: 2 + allowed,
        desired_healthy: 2,
        expected_pods: 2 + allowed,
        ..Default::default()
    });
    pdbs.update_status(&made).await.unwrap();
    pdbs
}

#[tokio::test]
async fn evictions_spend_the_budget_once_and_then_wait() {
    let (api, client) = secure().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for name in ["a", "b", "c", "pending"] {
        pods.create(&pod(name, "")).await.unwrap();
    }
    for name in ["a", "b", "c"] {
        run(&pods, name, true).await;
    }
    let pdbs = budget(&client, 1).await;

    // five evictions race for the one allowed disruption
    let mut tasks = Vec::new();
    for name in ["a", "b", "c", "a", "b"] {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client.evict("default", name, Eviction::default()).await
        }));
    }
    let mut evicted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => evicted += 1,
            Err(e) if e.is_too_many_requests() || e.is_not_found() => {}
            Err(e) => panic!("unexpected answer: {e:?}"),
        }
    }
    assert_eq!(
        evicted, 1,
        "exactly one eviction may spend the one allowed disruption"
    );
    let left: Vec<String> = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    assert_eq!(left.len(), 3, "{left:?}");
    let status = pdbs.get("web").await.unwrap().status.unwrap();
    assert_eq!(status.disruptions_allowed, 0);
    assert_eq!(status.disrupted_pods.len(), 1);
    let cond = status
        .conditions
        .iter()
        .find(|c| c.r#type == "DisruptionAllowed")
        .expect("DisruptionAllowed condition");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "InsufficientPods")
    );

    // the next is refused as Kubernetes refuses it, naming the budget
    let running = left.iter().find(|n| *n != "pending").unwrap();
    let err = client
        .evict("default", running, Eviction::default())
        .await
        .unwrap_err();
    assert!(err.is_too_many_requests(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(err.causes()[0].reason, "DisruptionBudget");
    assert_eq!(
        err.causes()[0].message,
        // the eviction does not touch currentHealthy: the disruption controller recounts it
        "The disruption budget web needs 2 healthy pods and has 3 currently"
    );

    // a pod that is not running yet costs no budget
    client
        .evict("default", "pending", Eviction::default())
        .await
        .unwrap();
    assert!(pods.get_opt("pending").await.unwrap().is_none());
    api.stop().await.unwrap();
}

#[tokio::test]
async fn eviction_over_rest_answers_429_and_needs_its_own_right() {
    let api = TestApiServer::builder()
        .secure(&["n1"])
        .flag_file(
            "--token-auth-file",
            "tokens.csv",
            "view-token,alice,1001\nedit-token,bob,1002\n",
        )
        .start()
        .await
        .unwrap();
    let client = api.client();
    for (role, user) in [("view", "alice"), ("edit", "bob")] {
        let rb: RoleBinding = from_yaml(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {user}, namespace: default}}\nsubjects: [{{kind: User, name: {user}}}]\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}\n"
        ));
        Api::<RoleBinding>::namespaced(client.clone(), "default")
            .create(&rb)
            .await
            .unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&pod("a", "")).await.unwrap();
    run(&pods, "a", true).await;
    budget(&client, 0).await;

    // viewers may not evict; editors may, as in Kubernetes (and the budget says no)
    let alice = api.client_with_token("view-token").unwrap();
    let err = alice
        .evict("default", "a", Eviction::default())
        .await
        .unwrap_err();
    assert!(err.is_forbidden(), "{err:?}");
    assert!(err.to_string().contains("pods/eviction"), "{err}");
    let bob = api.client_with_token("edit-token").unwrap();
    let err = bob.evict("default", "a", Eviction::default()).await.unwrap_err();
    assert!(err.is_too_many_requests(), "{err:?}");

    let body = serde_json::json!({
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": "a", "namespace": "default", "creationTimestamp": null},
        "deleteOptions": {"gracePeriodSeconds": 0},
    });
    let path = "/api/v1/namespaces/default/pods/a/eviction";
    let (status, answer) = rest_post(&api, path, &body).await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["reason"], "TooManyRequests");
    assert_eq!(
        answer["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(answer["details"]["causes"][0]["reason"], "DisruptionBudget");

    // once the budget allows it, the pod goes and the answer is Kubernetes' success Status
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let mut pdb = pdbs.get("web").await.unwrap();
    pdb.status.as_mut().unwrap().disruptions_allowed = 1;
    pdbs.update_status(&pdb).await.unwrap();
    let (status, answer) = rest_post(&api, path, &body).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (201, Some("Success")),
        "{answer}"
    );
    assert!(pods.get_opt("a").await.unwrap().is_none());
    api.stop().await.unwrap();
}

/// POSTs `body` as the admin over HTTPS; the status code and the JSON answer.
async fn rest_post(api: &TestApiServer, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let pki = api.pki();
    let identity = reqwest::Identity::from_pem(
        &[
            std::fs::read(pki.join("admin.crt")).unwrap(),
            std::fs::read(pki.join("admin.key")).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.join("ca.crt")).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .identity(identity)
        .build()
        .unwrap();
    let resp = http
        .post(format!("{}{path}", api.url()))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}
