//! Security end to end, in process: an apiserver with TLS, client
//! certificates from `rkubectl certs generate`, a static token file, RBAC
//! and an audit log, talked to through the real client. Each test asserts
//! what a user meets: who is refused, with which code and message, and
//! what the audit log records.

use rkube_api::core::v1::{Container, Pod, PodSpec, Secret};
use rkube_api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use rkube_api::Resource;
use rkube_client::{Api, Client, ClientConfig, Error, ListParams};
use rkube_ctl::cmd::certs::{generate, CertificateAuthority, GenerateArgs};
use rkube_testing::TestApiServer;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

const TOKENS: &str = "view-token,alice,1001\nedit-token,bob,1002,\"developers,qa\"\n";

/// The secure apiserver that also knows TOKENS (`--token-auth-file`),
/// where alice may view `default` and bob may edit it.
async fn start() -> TestApiServer {
    let c = TestApiServer::builder()
        .secure(&["node-a"])
        .flag_file("--token-auth-file", "tokens.csv", TOKENS)
        .start()
        .await
        .unwrap();
    bind(&c, "view", "alice").await;
    bind(&c, "edit", "bob").await;
    c
}

/// `rkubectl certs generate --dir DIR --node NODE...`: what it wrote.
fn generate_pki(dir: &Path, nodes: &[&str]) -> Vec<PathBuf> {
    generate(&GenerateArgs {
        dir: dir.to_path_buf(),
        apiserver_sans: vec![],
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        apiserver_url: "https://127.0.0.1:6443".into(),
        validity_days: 30,
    })
    .unwrap()
}

/// Binds `user` to `cluster_role` in `default`.
async fn bind(c: &TestApiServer, cluster_role: &str, user: &str) {
    let mut rb = RoleBinding {
        subjects: vec![Subject {
            kind: "User".into(),
            name: user.into(),
            ..Default::default()
        }],
        role_ref: Some(RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: cluster_role.into(),
        }),
        ..Default::default()
    };
    rb.metadata_mut().name = format!("{user}-{cluster_role}");
    Api::<RoleBinding>::namespaced(c.client(), "default")
        .create(&rb)
        .await
        .unwrap();
}

fn pod(name: &str) -> Pod {
    let mut p = Pod {
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "busybox".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    p.metadata_mut().name = name.into();
    p
}

#[tokio::test]
async fn requests_without_valid_credentials_are_refused() {
    let c = start().await;

    // TLS with the right CA but no certificate and no token
    let anonymous = Client::from_config(&ClientConfig {
        server: c.url().to_string(),
        certificate_authority: Some(c.pki().join("ca.crt")),
        ..Default::default()
    })
    .unwrap();
    let err = anonymous.version().await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unauthenticated), "{err}");
    let err = Api::<Pod>::namespaced(anonymous, "default")
        .create(&pod("p0"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unauthenticated), "{err}");

    // a token the server does not know
    let err = c
        .client_with_token("guessed")
        .unwrap()
        .version()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unauthenticated), "{err}");
    assert!(err.to_string().contains("bearer token is not known"), "{err}");

    // a CA that did not sign the server's certificate: the client refuses
    // the server before sending anything
    let other = c.dir().join("other-pki");
    generate_pki(&other, &["node-a"]);
    let err = c
        .client_from(&other.join("admin.conf"))
        .unwrap()
        .version()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");

    // an expired client certificate from the right CA: the handshake fails
    let (ca, created) = CertificateAuthority::load_or_create(&c.pki()).unwrap();
    assert!(!created, "the existing CA is kept");
    let long_ago = OffsetDateTime::now_utc() - Duration::days(30);
    let (crt, key) = ca
        .issue(
            "admin",
            &["system:masters".into()],
            &[],
            false,
            long_ago,
            long_ago + Duration::days(1),
        )
        .unwrap();
    std::fs::write(c.pki().join("expired.crt"), crt).unwrap();
    std::fs::write(c.pki().join("expired.key"), key).unwrap();
    let expired = Client::from_config(&ClientConfig {
        server: c.url().to_string(),
        certificate_authority: Some(c.pki().join("ca.crt")),
        client_certificate: Some(c.pki().join("expired.crt")),
        client_key: Some(c.pki().join("expired.key")),
        ..Default::default()
    })
    .unwrap();
    let err = expired.version().await.unwrap_err();
    assert!(
        matches!(err, Error::Transport { .. }) || err.code() == Some(tonic::Code::Unavailable),
        "{err:?}"
    );

    // the same certificate, issued valid now, is accepted: the expiry was
    // what the server refused
    let now = OffsetDateTime::now_utc();
    let (crt, key) = ca
        .issue(
            "admin",
            &["system:masters".into()],
            &[],
            false,
            now - Duration::hours(1),
            now + Duration::days(1),
        )
        .unwrap();
    std::fs::write(c.pki().join("expired.crt"), crt).unwrap();
    std::fs::write(c.pki().join("expired.key"), key).unwrap();
    let fresh = Client::from_config(&ClientConfig {
        server: c.url().to_string(),
        certificate_authority: Some(c.pki().join("ca.crt")),
        client_certificate: Some(c.pki().join("expired.crt")),
        client_key: Some(c.pki().join("expired.key")),
        ..Default::default()
    })
    .unwrap();
    fresh.version().await.unwrap();

    // valid credentials work: the admin certificate and a known token
    c.client().version().await.unwrap();
    c.client_with_token("view-token")
        .unwrap()
        .version()
        .await
        .unwrap();

    // the refused create was audited as 401 by system:anonymous
    let audit = c.audit().unwrap();
    assert!(
        audit.iter().any(|e| e["user"]["username"] == "system:anonymous"
            && e["verb"] == "create"
            && e["objectRef"]["resource"] == "pods"
            && e["responseStatus"]["code"] == 401),
        "{audit:#?}"
    );
    c.stop().await.unwrap();
}

#[tokio::test]
async fn rbac_decides_and_forbidden_says_who_what_and_where() {
    let c = start().await;
    let alice = Api::<Pod>::namespaced(c.client_with_token("view-token").unwrap(), "default");
    let bob = Api::<Pod>::namespaced(c.client_with_token("edit-token").unwrap(), "default");

    // view: may list, may not create
    alice.list(&ListParams::default()).await.unwrap();
    let err = alice.create(&pod("a")).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert_eq!(
        err.to_string(),
        r#"pods is forbidden: User "alice" cannot create resource "pods" in API group "" in the namespace "default""#
    );
    // the binding is for `default` only
    let err = Api::<Pod>::namespaced(c.client_with_token("view-token").unwrap(), "kube-system")
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    // view excludes Secrets
    let err = Api::<Secret>::namespaced(c.client_with_token("view-token").unwrap(), "default")
        .get("x")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"secrets "x" is forbidden: User "alice" cannot get resource "secrets" in API group "" in the namespace "default""#
    );

    // edit: may create pods, may not touch RBAC
    bob.create(&pod("b")).await.unwrap();
    let mut role = Role::default();
    role.metadata_mut().name = "escalate".into();
    role.rules = vec![rkube_api::rbac::v1::PolicyRule {
        verbs: vec!["*".into()],
        api_groups: vec!["*".into()],
        resources: vec!["*".into()],
        ..Default::default()
    }];
    let err = Api::<Role>::namespaced(c.client_with_token("edit-token").unwrap(), "default")
        .create(&role)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"roles.rbac.authorization.k8s.io is forbidden: User "bob" cannot create resource "roles" in API group "rbac.authorization.k8s.io" in the namespace "default""#
    );

    // a grant takes effect on the next request, and so does a revocation
    bind(&c, "edit", "alice").await;
    alice.create(&pod("a")).await.unwrap();
    Api::<RoleBinding>::namespaced(c.client(), "default")
        .delete("alice-edit", &Default::default())
        .await
        .unwrap();
    let err = alice.create(&pod("a2")).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");

    // a node certificate acts as system:node:node-a in group system:nodes
    let node = c.client_from(&c.pki().join("node-node-a.conf")).unwrap();
    Api::<Pod>::all(node.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    let err = Api::<rkube_api::rbac::v1::ClusterRole>::all(node)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"User "system:node:node-a" cannot list resource "clusterroles""#),
        "{err}"
    );

    // the audit log has each mutating request with its outcome
    let audit = c.audit().unwrap();
    let has = |user: &str, verb: &str, resource: &str, code: u16| {
        audit.iter().any(|e| {
            e["user"]["username"] == user
                && e["verb"] == verb
                && e["objectRef"]["resource"] == resource
                && e["responseStatus"]["code"] == code
        })
    };
    assert!(has("alice", "create", "pods", 403), "{audit:#?}");
    assert!(has("alice", "create", "pods", 201), "{audit:#?}");
    assert!(has("bob", "create", "roles", 403), "{audit:#?}");
    assert!(has("admin", "create", "rolebindings", 201), "{audit:#?}");
    assert!(has("admin", "delete", "rolebindings", 200), "{audit:#?}");
    // reads are not audited
    assert!(!audit.iter().any(|e| e["verb"] == "list"), "{audit:#?}");
    c.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_k8s_io_is_authorized_as_in_kubernetes() {
    // kubectl top asks for pods and nodes in the metrics.k8s.io group:
    // alice's view in `default` covers that namespace's pods only
    let c = start().await;
    let ca = reqwest::Certificate::from_pem(&std::fs::read(c.pki().join("ca.crt")).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let get = |path: &str| {
        let req = http
            .get(format!("{}/apis/metrics.k8s.io/v1beta1/{path}", c.url()))
            .bearer_auth("view-token");
        async move {
            let resp = req.send().await.unwrap();
            let code = resp.status().as_u16();
            let body: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
            (code, body)
        }
    };
    let (code, list) = get("namespaces/default/pods").await;
    assert_eq!(
        (code, &list["kind"]),
        (200, &serde_json::json!("PodMetricsList")),
        "{list}"
    );
    let (code, status) = get("namespaces/kube-system/pods").await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(
        status["message"],
        r#"pods.metrics.k8s.io is forbidden: User "alice" cannot list resource "pods" in API group "metrics.k8s.io" in the namespace "kube-system""#
    );
    let (code, status) = get("nodes").await;
    assert_eq!(code, 403, "{status}");
    c.stop().await.unwrap();
}

#[tokio::test]
async fn audit_never_contains_secret_data() {
    let c = start().await;
    let mut s = Secret::default();
    s.metadata_mut().name = "db".into();
    s.string_data
        .insert("password".into(), "hunter2-very-secret".into());
    Api::<Secret>::namespaced(c.client(), "default")
        .create(&s)
        .await
        .unwrap();
    let text = std::fs::read_to_string(c.dir().join("audit.log")).unwrap();
    assert!(text.contains(r#""resource":"secrets""#), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    // base64 of the value either
    assert!(!text.contains("aHVudGVyMi"), "{text}");
    c.stop().await.unwrap();
}

#[tokio::test]
async fn certs_generate_keeps_the_ca_and_writes_loadable_configs() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let first = generate_pki(&pki, &["node-a"]);
    assert!(first.contains(&pki.join("ca.crt")));
    let ca = std::fs::read(pki.join("ca.crt")).unwrap();
    let second = generate_pki(&pki, &["node-a"]);
    assert!(
        !second.contains(&pki.join("ca.crt")),
        "an existing CA is not rewritten"
    );
    assert_eq!(std::fs::read(pki.join("ca.crt")).unwrap(), ca);
    for stem in [
        "admin",
        "kube-scheduler",
        "kube-controller-manager",
        "kube-proxy",
        "cloud-controller-manager",
        "node-node-a",
    ] {
        let cfg = ClientConfig::load(&pki.join(format!("{stem}.conf"))).unwrap();
        assert_eq!(cfg.client_certificate, Some(pki.join(format!("{stem}.crt"))));
        assert_eq!(cfg.certificate_authority, Some(pki.join("ca.crt")));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(pki.join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn insecure_serves_plain_text_to_anyone() {
    let server = TestApiServer::start().await.unwrap();
    assert!(server.url().starts_with("http://"));
    let client = Client::connect(server.url()).unwrap();
    Api::<Pod>::namespaced(client, "default")
        .create(&pod("p"))
        .await
        .unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn can_i_answers_for_yourself_and_for_users_you_may_impersonate() {
    let c = start().await;
    let pki = c.pki();
    // alice's client config: the CA and her token
    let alice_conf = c.dir().join("alice.conf");
    ClientConfig {
        server: c.url().to_string(),
        certificate_authority: Some(pki.join("ca.crt")),
        token: Some("view-token".into()),
        ..Default::default()
    }
    .save(&alice_conf)
    .unwrap();

    let (out, res) = c
        .rkubectl_as(&alice_conf, &["auth", "can-i", "list", "pods"])
        .await;
    assert_eq!(out, "yes\n");
    res.unwrap();
    let (out, res) = c
        .rkubectl_as(&alice_conf, &["auth", "can-i", "create", "pods"])
        .await;
    assert_eq!(out, "no\n");
    assert!(matches!(res, Err(rkube_ctl::CtlError::ExitCode(1))));
    let (out, _) = c
        .rkubectl_as(
            &alice_conf,
            &["auth", "can-i", "get", "pods", "--subresource", "log"],
        )
        .await;
    assert_eq!(out, "yes\n");
    let (out, _) = c
        .rkubectl_as(
            &alice_conf,
            &["auth", "can-i", "list", "pods", "-n", "kube-system"],
        )
        .await;
    assert_eq!(out, "no\n");

    // admin (system:masters) may impersonate: bob may create pods, not roles
    let admin_conf = pki.join("admin.conf");
    let (out, _) = c
        .rkubectl_as(&admin_conf, &["auth", "can-i", "create", "pods", "--as", "bob"])
        .await;
    assert_eq!(out, "yes\n");
    let (out, _) = c
        .rkubectl_as(&admin_conf, &["auth", "can-i", "create", "roles", "--as", "bob"])
        .await;
    assert_eq!(out, "no\n");
    let (out, _) = c
        .rkubectl_as(
            &admin_conf,
            &[
                "auth",
                "can-i",
                "update",
                "nodes",
                "--subresource",
                "status",
                "--as",
                "system:node:node-a",
                "--as-group",
                "system:nodes",
            ],
        )
        .await;
    assert_eq!(out, "yes\n");

    // alice may not impersonate anyone
    let (_, res) = c
        .rkubectl_as(&alice_conf, &["auth", "can-i", "create", "pods", "--as", "bob"])
        .await;
    let err = res.unwrap_err().to_string();
    assert!(
        err.contains(
            r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group """#
        ),
        "{err}"
    );
    c.stop().await.unwrap();
}
