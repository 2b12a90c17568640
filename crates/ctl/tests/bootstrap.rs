//! Bootstrap tokens end to end, in process: `rkubectl token create`
//! against an apiserver with TLS, RBAC, an audit log and the cluster
//! signing CA; the kubelet's bootstrap (`--bootstrap-token`,
//! `--kubeconfig`) turning the token into the node's own certificate; and
//! what a user would notice about the token: it works once, an expired one
//! is refused, and it is good for nothing but the certificate.

use rkube_api::core::v1::{Node, Pod, Secret};
use rkube_api::Resource;
use rkube_client::{Api, Client, ListParams};
use rkube_testing::TestApiServer;
use std::path::Path;

/// The secure apiserver, signing node certificates with the cluster CA.
async fn start() -> TestApiServer {
    TestApiServer::builder()
        .secure(&[])
        .pki_flag("--cluster-signing-cert-file", "ca.crt")
        .pki_flag("--cluster-signing-key-file", "ca.key")
        .start()
        .await
        .unwrap()
}

/// A kubelet's configuration for bootstrapping `node` with `token` against `c`.
fn kubelet_config(
    c: &TestApiServer,
    node: &str,
    kubeconfig: &Path,
    token: &str,
) -> rkube_kubelet::config::Config {
    let mut config = rkube_kubelet::config::Config::new(c.url().to_string(), node);
    config.kubeconfig = Some(kubeconfig.to_path_buf());
    config.bootstrap_token = Some(rkube_kubelet::bootstrap::BootstrapToken(token.into()));
    config.bootstrap_ca_file = Some(c.pki().join("ca.crt"));
    config
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[tokio::test]
async fn token_create_prints_id_dot_secret_and_stores_the_kubernetes_secret() {
    let c = start().await;
    let (out, res) = c.rkubectl(&["token", "create", "--ttl", "2h"]).await;
    res.unwrap();
    let token = out.strip_suffix('\n').expect("one line");
    let (id, secret) = token.split_once('.').expect("ID.SECRET");
    assert!(is_token_part(id, 6) && is_token_part(secret, 16), "{out:?}");

    let stored = Api::<Secret>::namespaced(c.client(), "kube-system")
        .get(&format!("bootstrap-token-{id}"))
        .await
        .unwrap();
    assert_eq!(stored.r#type, "bootstrap.kubernetes.io/token");
    let field = |k: &str| String::from_utf8(stored.data[k].clone()).unwrap();
    assert_eq!(field("token-id"), id);
    assert_eq!(field("token-secret"), secret);
    assert_eq!(field("usage-bootstrap-authentication"), "true");
    let expires = chrono::DateTime::parse_from_rfc3339(&field("expiration")).unwrap();
    let left = expires.signed_duration_since(chrono::Utc::now());
    assert!(
        left > chrono::Duration::minutes(110) && left <= chrono::Duration::hours(2),
        "{left}"
    );

    use clap::Parser;
    let err = rkube_ctl::Cli::try_parse_from(["rkubectl", "token", "create", "--ttl", "2days"]).unwrap_err();
    assert!(err.to_string().contains(r#""2days" is not a duration"#), "{err}");
    c.stop().await.unwrap();
}

#[tokio::test]
async fn a_bootstrap_token_gets_a_node_its_certificate_once() {
    let c = start().await;
    let (out, res) = c.rkubectl(&["token", "create"]).await;
    res.unwrap();
    let token = out.trim().to_string();
    let id = token.split('.').next().unwrap().to_string();

    // the token is good for nothing but a node certificate
    let bootstrapper = c.client_with_token(&token).unwrap();
    let err = Api::<Pod>::all(bootstrapper.clone())
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert!(
        err.to_string().contains(&format!(
            r#"User "system:bootstrap:{id}" cannot list resource "pods""#
        )) && err
            .to_string()
            .ends_with("may only obtain a node client certificate (IssueNodeCertificate)"),
        "{err}"
    );

    // the kubelet writes its key, certificate, CA and kubeconfig, private
    let kubeconfig = c.dir().join("kubelet").join("kubeconfig");
    let config = kubelet_config(&c, "new-node", &kubeconfig, &token);
    let client_config = rkube_kubelet::bootstrap::client_config(&config).await.unwrap();
    use std::os::unix::fs::PermissionsExt;
    for f in [
        "kubeconfig",
        "kubelet-client.key",
        "kubelet-client.crt",
        "kubelet-ca.crt",
    ] {
        let p = kubeconfig.with_file_name(f);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", p.display());
    }
    assert_eq!(
        client_config.client_certificate,
        Some(kubeconfig.with_file_name("kubelet-client.crt"))
    );

    // the certificate authenticates as system:node:new-node, which the node
    // authorizer lets register itself and nothing else
    let node = Client::from_config(&client_config).unwrap();
    let review = node
        .access_review(rkube_api::rpc::AccessReviewRequest {
            verb: "get".into(),
            resource: "nodes".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(review.user, "system:node:new-node");
    let mut me = Node::default();
    me.metadata_mut().name = "new-node".into();
    Api::<Node>::all(node.clone()).create(&me).await.unwrap();
    me.metadata_mut().name = "other-node".into();
    let err = Api::<Node>::all(node.clone()).create(&me).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");

    // the token is spent: its Secret is gone, and a second use is refused
    let gone = Api::<Secret>::namespaced(c.client(), "kube-system")
        .get_opt(&format!("bootstrap-token-{id}"))
        .await
        .unwrap();
    assert!(gone.is_none());
    let err = bootstrapper
        .issue_node_certificate("new-node", "unused")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unauthenticated), "{err}");
    let again = c.dir().join("again").join("kubeconfig");
    let err = rkube_kubelet::bootstrap::client_config(&kubelet_config(&c, "new-node", &again, &token))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("is not known"), "{err:#}");
    assert!(!again.exists());

    // a restarted kubelet uses the kubeconfig it wrote; the spent token is
    // not needed again
    let restarted = rkube_kubelet::bootstrap::client_config(&config).await.unwrap();
    assert_eq!(restarted, client_config);

    // audited: the issue by the bootstrapper, the refused second use
    let audit = c.audit().unwrap();
    let csr = |user: &str, status: u16| {
        audit.iter().any(|e| {
            e["user"]["username"] == user
                && e["verb"] == "create"
                && e["objectRef"]["resource"] == "certificatesigningrequests"
                && e["objectRef"]["name"] == "system:node:new-node"
                && e["responseStatus"]["code"] == status
        })
    };
    assert!(csr(&format!("system:bootstrap:{id}"), 201), "{audit:#?}");
    assert!(csr("system:anonymous", 401), "{audit:#?}");
    c.stop().await.unwrap();
}

#[tokio::test]
async fn an_expired_bootstrap_token_is_refused() {
    let c = start().await;
    let (id, secret) = rkube_ctl::cmd::token::generate_token();
    let mut s = rkube_ctl::cmd::token::token_secret(&id, &secret, std::time::Duration::from_secs(3600), None);
    let past = chrono::Utc::now() - chrono::Duration::minutes(5);
    s.data.insert(
        "expiration".into(),
        past.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            .into_bytes(),
    );
    Api::<Secret>::namespaced(c.client(), "kube-system")
        .create(&s)
        .await
        .unwrap();
    let token = format!("{id}.{secret}");
    let err = c
        .client_with_token(&token)
        .unwrap()
        .issue_node_certificate("late-node", "unused")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unauthenticated), "{err}");
    assert!(err.to_string().contains("expired at"), "{err}");
    let kubeconfig = c.dir().join("late").join("kubeconfig");
    let err = rkube_kubelet::bootstrap::client_config(&kubelet_config(&c, "late-node", &kubeconfig, &token))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("expired at"), "{err:#}");
    assert!(!kubeconfig.exists());

    // a wrong secret for an existing id is refused too
    let err = c
        .client_with_token(&format!("{id}.0000000000000000"))
        .unwrap()
        .version()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unauthenticated), "{err}");
    c.stop().await.unwrap();
}
