//! A pod calls the API with its own identity, on a real node and container: the kubelet
//! mounts the ServiceAccount volume (`token`, `ca.crt`, `namespace`) at
//! `/var/run/secrets/kubernetes.io/serviceaccount`; from inside the container, with the
//! image's own tools (busybox's wget, which runs the image's `openssl s_client` for
//! https) and at the address it is given (`KUBERNETES_SERVICE_HOST`, the `kubernetes`
//! Service's, through rkube-proxy to the apiserver), the mounted token lists what the
//! pod's Role allows and is refused anything else;
//! the same token works over gRPC; it dies with the pod. `automountServiceAccountToken:
//! false` means no volume. Projected volumes (a token for another audience, a ConfigMap
//! key, pod fields) and downwardAPI volumes hold what the pod asked for, and a label
//! added later reaches the file.
//!
//! busybox's wget cannot verify a server certificate, so the calls pass
//! `--no-check-certificate`; `ca.crt` is checked against the cluster CA instead.

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
kind: ConfigMap
metadata: {{name: settings, namespace: shop}}
data: {{mode: fast, other: ignored}}
---
apiVersion: v1
kind: Pod
metadata: {{name: sealed, namespace: shop, labels: {{app: sealed}}}}
spec:
  serviceAccountName: robot
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {image}
    command: ["sleep", "3600"]
    resources: {{limits: {{memory: 64Mi}}}}
    volumeMounts:
    - {{name: bundle, mountPath: /bundle}}
    - {{name: info, mountPath: /info}}
  volumes:
  - name: bundle
    projected:
      sources:
      - serviceAccountToken: {{path: vault-token, audience: vault, expirationSeconds: 600}}
      - configMap: {{name: settings, items: [{{key: mode, path: config/mode}}]}}
      - downwardAPI: {{items: [{{path: namespace, fieldRef: {{fieldPath: metadata.namespace}}}}]}}
  - name: info
    downwardAPI:
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: memory-mi, resourceFieldRef: {{containerName: c, resource: limits.memory, divisor: 1Mi}}}}
"#
    )
}

/// `wget` of `path` on the apiserver from inside pod `caller`, with its mounted token, at
/// the address every container is given (the `kubernetes` Service), as in-cluster clients
/// find it.
fn wget_from_pod(cluster: &TestCluster, path: &str) -> anyhow::Result<String> {
    let script = format!(
        "wget -q -O - --no-check-certificate --header \"Authorization: Bearer $(cat {MOUNT}/token)\" \
         https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT{path}"
    );
    cluster.rkubectl(&["exec", "-n", "shop", "caller", "--", "sh", "-c", &script])
}

async fn identity(netns: std::path::PathBuf) -> anyhow::Result<()> {
    let cluster = TestCluster::start(netns, ClusterOptions::default()).await?;
    // the caller's image has openssl beside busybox, for wget's https
    let (tls_image, _) = cluster
        .registry
        .push_busybox_with_openssl("rkube/busybox-openssl")
        .await?;
    cluster.apply(&manifests(&tls_image))?;
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

    // the kubernetes Service: its address and port in every container's environment
    let env = exec(&[
        "sh",
        "-c",
        "echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT",
    ])?;
    assert_eq!(env.trim(), "10.96.0.1:443");
    // What the Role allows, and nothing more, from inside the container with its token
    let list = wget_from_pod(&cluster, "/api/v1/namespaces/shop/pods")?;
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
        let err = wget_from_pod(&cluster, path).unwrap_err();
        assert!(format!("{err:#}").contains("403 Forbidden"), "{path}: {err:#}");
    }
    // the same token, read out of the container, over gRPC
    let token = token.trim();
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
    // automountServiceAccountToken: false: nothing mounted
    let err = cluster
        .rkubectl(&["exec", "-n", "shop", "sealed", "--", "ls", MOUNT])
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("No such file or directory"),
        "{err:#}"
    );

    // projected and downwardAPI volumes: a token for another audience (which the
    // apiserver refuses), a ConfigMap key at its path, the pod's own fields
    let sealed = |args: &[&str]| {
        let mut all = vec!["exec", "-n", "shop", "sealed", "--"];
        all.extend(args);
        cluster.rkubectl(&all)
    };
    let listing = sealed(&["find", "/bundle/", "-type", "f"])?;
    let mut files: Vec<&str> = listing.lines().filter(|l| !l.contains("/..")).collect();
    files.sort();
    assert_eq!(
        files,
        ["/bundle/config/mode", "/bundle/namespace", "/bundle/vault-token"]
    );
    assert_eq!(sealed(&["cat", "/bundle/config/mode"])?, "fast");
    assert_eq!(sealed(&["cat", "/bundle/namespace"])?, "shop");
    let vault = sealed(&["cat", "/bundle/vault-token"])?;
    let claims = vault.split('.').nth(1).context("a JWT")?;
    let claims: serde_json::Value = serde_json::from_slice(&base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        claims,
    )?)?;
    assert_eq!(claims["aud"], serde_json::json!(["vault"]), "{claims}");
    assert_eq!(
        claims["exp"]
            .as_i64()
            .zip(claims["iat"].as_i64())
            .map(|(e, i)| e - i),
        Some(600)
    );
    let err = rkube_client::Api::<Pod>::namespaced(cluster.client_with_token(vault.trim())?, "shop")
        .list(&Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not valid"), "{err}");
    assert_eq!(sealed(&["cat", "/info/labels"])?, "app=\"sealed\"");
    assert_eq!(sealed(&["cat", "/info/memory-mi"])?, "64");
    // a label added later reaches the file
    cluster.rkubectl(&["label", "pod", "-n", "shop", "sealed", "tier=gold"])?;
    eventually(
        "the new label in /info/labels",
        Duration::from_secs(90),
        || async {
            let labels = sealed(&["cat", "/info/labels"]).ok()?;
            (labels == "app=\"sealed\"\ntier=\"gold\"").then_some(())
        },
    )
    .await?;

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
