//! A pod calls the API with its own identity, on a real node and container: the kubelet
//! mounts the ServiceAccount volume (`token`, `ca.crt`, `namespace`) at
//! `/var/run/secrets/kubernetes.io/serviceaccount`; the token read out of the container
//! lists what the pod's Role allows, over REST and gRPC, and is refused anything else; it
//! dies with the pod. `automountServiceAccountToken: false` means no volume.
//!
//! The calls are made from the test, not from inside the container: the image's busybox
//! wget cannot complete a TLS handshake with the apiserver (see below). busybox's wget
//! cannot verify a server certificate either, so the calls pass `--no-check-certificate`;
//! `ca.crt` is checked against the cluster CA instead.

use anyhow::Context;
use rkube_api::core::v1::Pod;
use rkube_e2e::{pod_ready, run, ClusterOptions, TestCluster};
use rkube_testing::eventually;
use std::time::Duration;

const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn manifests(image: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: robot, namespace: shop}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: pod-reader, namespace: shop}}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: robot-reads-pods, namespace: shop}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}}
subjects:
- {{kind: ServiceAccount, name: robot, namespace: shop}}
---
apiVersion: v1
kind: Pod
metadata: {{name: caller, namespace: shop}}
spec:
  serviceAccountName: robot
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {image}
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: sealed, namespace: shop}}
spec:
  serviceAccountName: robot
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {image}
    command: ["sleep", "3600"]
"#
    )
}

/// `wget` of `path` on the apiserver with `token`, from the test's namespace (the host's
/// busybox, whose wget speaks TLS through the host's openssl).
fn wget(cluster: &TestCluster, path: &str, token: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("busybox")
        .args(["wget", "-q", "-O", "-", "--no-check-certificate", "--header"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{}{path}", cluster.lan_url()))
        .output()
        .context("running busybox wget")?;
    if !out.status.success() {
        anyhow::bail!("wget {path}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `wget` of `path` on the apiserver from inside pod `caller`, with its mounted token.
fn wget_from_pod(cluster: &TestCluster, path: &str) -> anyhow::Result<String> {
    let script = format!(
        "wget -q -O - --no-check-certificate --header \"Authorization: Bearer $(cat {MOUNT}/token)\" {}{path}",
        cluster.lan_url()
    );
    cluster.rkubectl(&["exec", "-n", "shop", "caller", "--", "sh", "-c", &script])
}

async fn identity(netns: std::path::PathBuf) -> anyhow::Result<()> {
    let cluster = TestCluster::start(
        netns,
        ClusterOptions {
            proxy: None,
            ..Default::default()
        },
    )
    .await?;
    cluster.apply(&manifests(&cluster.image))?;
    let pods = cluster.api::<Pod>("shop")?;
    for name in ["caller", "sealed"] {
        let ready = eventually(&format!("pod {name} ready"), Duration::from_secs(90), || async {
            pods.get(name).await.ok().filter(pod_ready)
        })
        .await;
        if ready.is_err() {
            anyhow::bail!(
                "pod {name} did not become ready:\n{}",
                cluster.diagnostics().await
            );
        }
    }

    // the three files, with the pod's namespace and the cluster CA
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", "-n", "shop", "caller", "--"];
        all.extend(args);
        cluster.rkubectl(&all)
    };
    let listing = exec(&["ls", MOUNT])?;
    let mut files: Vec<&str> = listing.split_whitespace().collect();
    files.sort();
    assert_eq!(files, ["ca.crt", "namespace", "token"]);
    assert_eq!(exec(&["cat", &format!("{MOUNT}/namespace")])?, "shop");
    let ca = std::fs::read_to_string(cluster.pki.join("ca.crt"))?;
    assert_eq!(exec(&["cat", &format!("{MOUNT}/ca.crt")])?, ca);
    let token = exec(&["cat", &format!("{MOUNT}/token")])?;
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    // read-only for the container
    let err = exec(&["sh", "-c", &format!("echo x > {MOUNT}/token")]).unwrap_err();
    assert!(format!("{err:#}").contains("Read-only file system"), "{err:#}");

    // What the Role allows, and nothing more, with the token read out of the container:
    // over REST (the host's busybox wget, in the test's namespace) and over gRPC.
    let token = token.trim();
    let list = wget(&cluster, "/api/v1/namespaces/shop/pods", token)?;
    let list: serde_json::Value = serde_json::from_str(&list).with_context(|| list.clone())?;
    assert_eq!(list["kind"], "PodList");
    let mut names: Vec<&str> = list["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["caller", "sealed"]);
    for path in [
        "/api/v1/namespaces/default/pods",
        "/api/v1/namespaces/shop/secrets",
    ] {
        let err = wget(&cluster, path, token).unwrap_err();
        assert!(format!("{err:#}").contains("403 Forbidden"), "{path}: {err:#}");
    }
    let holder = cluster.client_with_token(token)?;
    let in_shop = rkube_client::Api::<Pod>::namespaced(holder.clone(), "shop");
    assert_eq!(in_shop.list(&Default::default()).await?.items.len(), 2);
    let err = rkube_client::Api::<Pod>::namespaced(holder.clone(), "default")
        .list(&Default::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"User "system:serviceaccount:shop:robot" cannot list resource "pods""#),
        "{err}"
    );
    // From inside the container, busybox's wget cannot reach the apiserver: without an
    // openssl binary beside it (the host's wget runs `openssl s_client`) it uses its own
    // TLS, whose hello offers no signature algorithms, so servers with ECDSA certificates
    // (rustls here, OpenSSL too) find no common cipher. The call is made to show it.
    let err = wget_from_pod(&cluster, "/api/v1/namespaces/shop/pods").unwrap_err();
    assert!(format!("{err:#}").contains("handshake failure"), "{err:#}");

    // automountServiceAccountToken: false: nothing mounted
    let err = cluster
        .rkubectl(&["exec", "-n", "shop", "sealed", "--", "ls", MOUNT])
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("No such file or directory"),
        "{err:#}"
    );

    // the token is bound to the pod: deleting the pod ends it, whoever holds a copy
    cluster.rkubectl(&["delete", "pod", "-n", "shop", "caller"])?;
    eventually("the pod's token refused", Duration::from_secs(60), || async {
        let r = rkube_client::Api::<Pod>::namespaced(holder.clone(), "shop")
            .get("sealed")
            .await;
        matches!(r, Err(e) if e.to_string().contains("the ServiceAccount token is not valid")).then_some(())
    })
    .await?;
    cluster.stop().await
}

#[test]
fn a_pod_lists_what_its_role_allows_with_its_mounted_token_and_nothing_more() -> anyhow::Result<()> {
    run(identity)
}
