//! ServiceAccount tokens end to end, in process: an apiserver with TLS,
//! RBAC and its token signing key (`pki/sa.key`). A token comes from a
//! TokenRequest over REST or gRPC, authenticates as
//! `system:serviceaccount:NS:NAME` on both faces, gets exactly what the
//! Role bound to the ServiceAccount allows, and dies with the account or
//! the pod it is bound to. Kubelets may only request tokens bound to their
//! own pods.

use rkube_api::core::v1::{Container, Namespace, Pod, PodSpec, ServiceAccount};
use rkube_api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use rkube_api::rpc::{BoundObjectReference, CreateTokenRequest};
use rkube_api::Resource;
use rkube_client::{Api, DeleteParams, ListParams};
use rkube_testing::TestApiServer;
use serde_json::{json, Value};

fn named<K: Resource>(ns: &str, name: &str) -> K {
    let mut k = K::default();
    k.metadata_mut().name = name.into();
    k.metadata_mut().namespace = ns.into();
    k
}

fn pod(name: &str, account: &str, node: &str) -> Pod {
    let mut p: Pod = named("shop", name);
    p.spec = Some(PodSpec {
        service_account_name: account.into(),
        node_name: node.into(),
        containers: vec![Container {
            name: "c".into(),
            image: "busybox".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    p
}

/// Namespaces shop and other, ServiceAccount shop/robot, and a Role that
/// lets it read pods in shop only.
async fn setup(c: &TestApiServer) -> ServiceAccount {
    let admin = c.client();
    for ns in ["shop", "other"] {
        Api::<Namespace>::all(admin.clone())
            .create(&named("", ns))
            .await
            .unwrap();
    }
    let sa = Api::<ServiceAccount>::namespaced(admin.clone(), "shop")
        .create(&named("shop", "robot"))
        .await
        .unwrap();
    let mut role: Role = named("shop", "pod-reader");
    role.rules = vec![PolicyRule {
        verbs: vec!["get".into(), "list".into(), "watch".into()],
        api_groups: vec!["".into()],
        resources: vec!["pods".into()],
        ..Default::default()
    }];
    Api::<Role>::namespaced(admin.clone(), "shop")
        .create(&role)
        .await
        .unwrap();
    let mut binding: RoleBinding = named("shop", "robot-reads-pods");
    binding.role_ref = Some(RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: "Role".into(),
        name: "pod-reader".into(),
    });
    // no namespace: the binding's own, as in Kubernetes
    binding.subjects = vec![Subject {
        kind: "ServiceAccount".into(),
        name: "robot".into(),
        ..Default::default()
    }];
    Api::<RoleBinding>::namespaced(admin.clone(), "shop")
        .create(&binding)
        .await
        .unwrap();
    sa
}

/// An HTTPS client that trusts the cluster CA and presents `identity`
/// (`admin`) or nothing.
fn https(c: &TestApiServer, identity: Option<&str>) -> reqwest::Client {
    let read = |f: &str| std::fs::read(c.pki().join(f)).unwrap();
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.crt")).unwrap());
    if let Some(stem) = identity {
        let mut pem = read(&format!("{stem}.crt"));
        pem.extend(read(&format!("{stem}.key")));
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

async fn get_json(http: &reqwest::Client, url: String, token: &str) -> (u16, Value) {
    let resp = http.get(url).bearer_auth(token).send().await.unwrap();
    let code = resp.status().as_u16();
    (code, serde_json::from_str(&resp.text().await.unwrap()).unwrap())
}

#[tokio::test]
async fn a_token_request_over_rest_gives_the_service_account_what_its_role_allows() {
    let c = TestApiServer::secure(&["node-a"]).await.unwrap();
    let sa = setup(&c).await;
    let admin = https(&c, Some("admin"));
    let url = format!("{}/api/v1/namespaces/shop/serviceaccounts/robot/token", c.url());
    let before = chrono::Utc::now();
    let resp = admin
        .post(&url)
        .header("content-type", "application/json")
        .body(
            json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 600},
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let tr: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(
        tr["spec"]["audiences"],
        json!(["https://kubernetes.default.svc.cluster.local"])
    );
    let expires =
        chrono::DateTime::parse_from_rfc3339(tr["status"]["expirationTimestamp"].as_str().unwrap()).unwrap();
    let lifetime = (expires.with_timezone(&chrono::Utc) - before).num_seconds();
    assert!((599..=602).contains(&lifetime), "{lifetime}");
    let token = tr["status"]["token"].as_str().unwrap().to_string();

    // REST: pods in shop yes, elsewhere Forbidden naming the account
    let anonymous = https(&c, None);
    let (code, list) = get_json(
        &anonymous,
        format!("{}/api/v1/namespaces/shop/pods", c.url()),
        &token,
    )
    .await;
    assert_eq!((code, list["kind"].as_str()), (200, Some("PodList")));
    let (code, status) = get_json(
        &anonymous,
        format!("{}/api/v1/namespaces/other/pods", c.url()),
        &token,
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        status["message"],
        r#"pods is forbidden: User "system:serviceaccount:shop:robot" cannot list resource "pods" in API group "" in the namespace "other""#
    );
    let (code, _) = get_json(
        &anonymous,
        format!("{}/api/v1/namespaces/shop/secrets", c.url()),
        &token,
    )
    .await;
    assert_eq!(code, 403);

    // gRPC: the same token, the same answers
    let robot = c.client_with_token(&token).unwrap();
    Api::<Pod>::namespaced(robot.clone(), "shop")
        .list(&ListParams::default())
        .await
        .unwrap();
    let err = Api::<Pod>::namespaced(robot.clone(), "other")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    // who it is, as `auth can-i` sees it
    let review = robot
        .access_review(rkube_api::rpc::AccessReviewRequest {
            verb: "list".into(),
            resource: "pods".into(),
            namespace: "shop".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(review.allowed);
    assert_eq!(review.user, "system:serviceaccount:shop:robot");

    // too short a lifetime is Invalid, as Kubernetes words it
    let resp = admin
        .post(&url)
        .body(json!({"spec": {"expirationSeconds": 60}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let status: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert!(
        status["message"].as_str().unwrap().ends_with(
            "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"
        ),
        "{status}"
    );
    // a token for another audience does not authenticate here
    let resp = admin
        .post(&url)
        .body(json!({"spec": {"audiences": ["vault"]}}).to_string())
        .send()
        .await
        .unwrap();
    let vault: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    let (code, status) = get_json(
        &anonymous,
        format!("{}/api/v1/namespaces/shop/pods", c.url()),
        vault["status"]["token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(code, 401);
    assert!(
        status["message"].as_str().unwrap().contains("audiences"),
        "{status}"
    );
    // the account itself may not mint tokens: create on serviceaccounts/token
    let err = robot
        .create_token(CreateTokenRequest {
            namespace: "shop".into(),
            name: "robot".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");

    // the account deleted: its tokens die, and a new account of the same
    // name does not revive them
    let accounts = Api::<ServiceAccount>::namespaced(c.client(), "shop");
    accounts.delete("robot", &DeleteParams::default()).await.unwrap();
    let (code, status) = get_json(
        &anonymous,
        format!("{}/api/v1/namespaces/shop/pods", c.url()),
        &token,
    )
    .await;
    assert_eq!(code, 401);
    assert!(
        status["message"].as_str().unwrap().contains("has been deleted"),
        "{status}"
    );
    let again = accounts.create(&named("shop", "robot")).await.unwrap();
    assert_ne!(again.metadata().uid, sa.metadata().uid);
    let err = Api::<Pod>::namespaced(robot, "shop")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unauthenticated), "{err}");
    c.stop().await.unwrap();
}

#[tokio::test]
async fn a_pod_bound_token_dies_with_the_pod_and_nodes_get_tokens_only_for_their_pods() {
    let c = TestApiServer::secure(&["node-a", "node-b"]).await.unwrap();
    setup(&c).await;
    let pods = Api::<Pod>::namespaced(c.client(), "shop");
    let worker = pods.create(&pod("worker", "robot", "node-a")).await.unwrap();
    pods.create(&pod("elsewhere", "robot", "node-b")).await.unwrap();
    pods.create(&pod("default-account", "default", "node-a"))
        .await
        .unwrap();
    let bound = |name: &str, uid: &str| CreateTokenRequest {
        namespace: "shop".into(),
        name: "robot".into(),
        bound_object_ref: Some(BoundObjectReference {
            kind: "Pod".into(),
            api_version: "v1".into(),
            name: name.into(),
            uid: uid.into(),
        }),
        ..Default::default()
    };

    // node-a: tokens bound to its own pods only
    let node_a = c.client_as("node-node-a").unwrap();
    let out = node_a
        .create_token(bound("worker", &worker.metadata().uid))
        .await
        .unwrap();
    assert_eq!(out.expiration_seconds, 3600);
    assert_eq!(out.bound_object_ref.unwrap().uid, worker.metadata().uid);
    for (req, why) in [
        (
            bound("elsewhere", ""),
            "bound to a pod scheduled on a different node",
        ),
        (
            CreateTokenRequest {
                namespace: "shop".into(),
                name: "robot".into(),
                ..Default::default()
            },
            "not bound to a pod",
        ),
        (bound("worker", "not-its-uid"), "with another uid"),
    ] {
        let err = node_a.create_token(req).await.unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
        assert!(err.to_string().contains(why), "{err}");
    }
    // an account none of its pods runs as: no relationship
    let mut other = bound("worker", "");
    other.name = "builder".into();
    let err = node_a.create_token(other).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("no relationship found between node 'node-a'"),
        "{err}"
    );

    // the bound token works while the pod exists...
    let robot = c.client_with_token(&out.token).unwrap();
    Api::<Pod>::namespaced(robot.clone(), "shop")
        .get("worker")
        .await
        .unwrap();
    // ...and not after it is gone
    pods.delete(
        "worker",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let err = Api::<Pod>::namespaced(robot, "shop")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unauthenticated), "{err}");
    assert!(
        err.to_string()
            .contains("the pod shop/worker it is bound to has been deleted"),
        "{err}"
    );
    c.stop().await.unwrap();
}

#[tokio::test]
async fn rkubectl_create_token_prints_a_token_the_apiserver_accepts() {
    let c = TestApiServer::secure(&["node-a"]).await.unwrap();
    setup(&c).await;
    let admin_conf = c.pki().join("admin.conf");
    let (out, result) = rkube_testing::rkubectl(
        c.url(),
        &admin_conf,
        &["-n", "shop", "create", "token", "robot", "--duration=15m"],
    )
    .await;
    result.unwrap();
    let token = out.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {out}");
    let http = https(&c, None);
    let (code, list) = get_json(&http, format!("{}/api/v1/namespaces/shop/pods", c.url()), token).await;
    assert_eq!(code, 200, "{list}");
    let (code, _) = get_json(
        &http,
        format!("{}/api/v1/namespaces/default/pods", c.url()),
        token,
    )
    .await;
    assert_eq!(code, 403);
    // too short a lifetime is refused by the apiserver, named
    let (_, result) = rkube_testing::rkubectl(
        c.url(),
        &admin_conf,
        &["-n", "shop", "create", "token", "robot", "--duration=1m"],
    )
    .await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains("expirationSeconds"), "{err}");
    c.stop().await.unwrap();
}
