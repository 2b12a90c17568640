//! Node restriction end to end, in process: an apiserver with TLS, RBAC and
//! an audit log, and kubelets' client certificates for node-a and node-b
//! from `rkubectl certs generate`. Each test does what a compromised or
//! confused kubelet would try and asserts what it meets: its own node's
//! objects work, anything of another node is Forbidden with a message
//! that names who, what, where and why, and the audit log records both.

use rkube_api::apps::v1::Deployment;
use rkube_api::coordination::v1::Lease;
use rkube_api::core::v1::{
    ConfigMap, ConfigMapKeySelector, Container, EnvVar, EnvVarSource, Event, Node, ObjectReference, Pod,
    PodSpec, Secret, SecretVolumeSource, Volume,
};
use rkube_api::Resource;
use rkube_client::{Api, DeleteParams, ListParams};
use rkube_testing::TestApiServer;

/// A pod bound to `node` that uses Secret `secret` as a volume and
/// ConfigMap `config_map` through env.
fn bound_pod(name: &str, node: &str, secret: &str, config_map: &str) -> Pod {
    let mut p = Pod {
        spec: Some(PodSpec {
            node_name: node.into(),
            containers: vec![Container {
                name: "c".into(),
                image: "busybox".into(),
                env: vec![EnvVar {
                    name: "SETTING".into(),
                    value_from: Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: config_map.into(),
                            key: "k".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            volumes: vec![Volume {
                name: "creds".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: secret.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    p.metadata_mut().name = name.into();
    p
}

fn named<K: Resource>(name: &str) -> K {
    let mut k = K::default();
    k.metadata_mut().name = name.into();
    k
}

#[tokio::test]
async fn a_kubelet_reaches_only_its_own_pods_and_what_they_use() {
    let c = TestApiServer::secure(&["node-a", "node-b"]).await.unwrap();
    let admin = c.client();
    let pods = Api::<Pod>::namespaced(admin.clone(), "default");
    pods.create(&bound_pod("on-a", "node-a", "used-by-a", "config-a"))
        .await
        .unwrap();
    pods.create(&bound_pod("on-b", "node-b", "used-by-b", "config-b"))
        .await
        .unwrap();
    for name in ["used-by-a", "used-by-b", "unused"] {
        Api::<Secret>::namespaced(admin.clone(), "default")
            .create(&named(name))
            .await
            .unwrap();
    }
    for name in ["config-a", "config-b"] {
        Api::<ConfigMap>::namespaced(admin.clone(), "default")
            .create(&named(name))
            .await
            .unwrap();
    }

    let node_a = c.client_as("node-node-a").unwrap();
    let a_pods = Api::<Pod>::namespaced(node_a.clone(), "default");
    let a_secrets = Api::<Secret>::namespaced(node_a.clone(), "default");
    let a_config_maps = Api::<ConfigMap>::namespaced(node_a.clone(), "default");

    // reads: what its pods use, not what other nodes' pods use
    a_secrets.get("used-by-a").await.unwrap();
    a_config_maps.get("config-a").await.unwrap();
    let err = a_secrets.get("used-by-b").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert_eq!(
        err.to_string(),
        r#"secrets "used-by-b" is forbidden: User "system:node:node-a" cannot get resource "secrets" in API group "" in the namespace "default": no relationship found between node 'node-a' and this object"#
    );
    let err = a_secrets.get("unused").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    let err = a_config_maps.get("config-b").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    let err = a_secrets.list(&ListParams::default()).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    // as the kubelet watches: pods by spec.nodeName
    let mine = a_pods
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .unwrap();
    assert_eq!(mine.items.len(), 1);

    // status of its own pod, not of node-b's
    let mut own = a_pods.get("on-a").await.unwrap();
    own.status.get_or_insert_with(Default::default).phase = "Running".into();
    a_pods.update_status(&own).await.unwrap();
    let mut other = a_pods.get("on-b").await.unwrap();
    other.status.get_or_insert_with(Default::default).phase = "Failed".into();
    let err = a_pods.update_status(&other).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert_eq!(
        err.to_string(),
        r#"pods "on-b" is forbidden: User "system:node:node-a" cannot update resource "pods/status" in API group "" in the namespace "default": node "node-a" can only update pods bound to it"#
    );
    let err = a_pods
        .patch_status_merge("on-b", &serde_json::json!({"status": {"phase": "Failed"}}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert_eq!(
        pods.get("on-b").await.unwrap().status.unwrap().phase,
        "Pending",
        "node-b's pod is untouched"
    );
    // its spec is no node's business, nor are new pods
    let err = a_pods
        .patch_merge("on-a", &serde_json::json!({"metadata": {"labels": {"x": "y"}}}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    let err = a_pods
        .create(&bound_pod("sneaky", "node-a", "used-by-b", "config-b"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert!(err.to_string().contains("can only create mirror pods"), "{err}");
    // deletes: its own pods only
    let err = a_pods.delete("on-b", &DeleteParams::default()).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert!(
        err.to_string()
            .ends_with(r#"node "node-a" can only delete pods bound to it"#),
        "{err}"
    );
    a_pods.delete("on-a", &DeleteParams::default()).await.unwrap();

    // nothing outside a kubelet's job
    let err = Api::<Deployment>::namespaced(node_a.clone(), "default")
        .create(&named("d"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");

    // the audit log has the refusals and the allowed writes
    let audit = c.audit().unwrap();
    let has = |verb: &str, resource: &str, sub: &str, name: &str, status: u16| {
        audit.iter().any(|e| {
            e["user"]["username"] == "system:node:node-a"
                && e["verb"] == verb
                && e["objectRef"]["resource"] == resource
                && e["objectRef"]["subresource"].as_str().unwrap_or("") == sub
                && e["objectRef"]["name"].as_str().unwrap_or("") == name
                && e["responseStatus"]["code"] == status
        })
    };
    assert!(has("update", "pods", "status", "on-a", 200), "{audit:#?}");
    assert!(has("update", "pods", "status", "on-b", 403), "{audit:#?}");
    assert!(has("delete", "pods", "", "on-b", 403), "{audit:#?}");
    assert!(has("delete", "pods", "", "on-a", 200), "{audit:#?}");
    c.stop().await.unwrap();
}

#[tokio::test]
async fn a_kubelet_modifies_only_its_own_node_and_lease() {
    let c = TestApiServer::secure(&["node-a", "node-b"]).await.unwrap();
    let node_a = c.client_as("node-node-a").unwrap();
    let a_nodes = Api::<Node>::all(node_a.clone());
    // registering itself works, registering another node does not
    a_nodes.create(&named("node-a")).await.unwrap();
    let err = a_nodes.create(&named("node-b")).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert_eq!(
        err.to_string(),
        r#"nodes is forbidden: User "system:node:node-a" cannot create resource "nodes" in API group "" at the cluster scope: node "node-a" is not allowed to modify node "node-b""#
    );
    Api::<Node>::all(c.client_as("node-node-b").unwrap())
        .create(&named("node-b"))
        .await
        .unwrap();

    // its own status, labels and spec; none of node-b's
    a_nodes
        .replace_status_with("node-a", |mut n| {
            n.status.get_or_insert_with(Default::default).phase = "Running".into();
            n
        })
        .await
        .unwrap();
    a_nodes
        .patch_merge(
            "node-a",
            &serde_json::json!({"metadata": {"labels": {"zone": "z1"}}}),
        )
        .await
        .unwrap();
    let err = a_nodes
        .replace_status_with("node-b", |mut n| {
            n.status.get_or_insert_with(Default::default).phase = "Terminated".into();
            n
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert!(
        err.to_string()
            .ends_with(r#"node "node-a" is not allowed to modify node "node-b""#),
        "{err}"
    );
    let err = a_nodes
        .patch_merge("node-b", &serde_json::json!({"spec": {"unschedulable": true}}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    let err = a_nodes
        .delete("node-b", &DeleteParams::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    // it still sees every node (the scheduler's view is no secret)
    assert_eq!(a_nodes.list(&ListParams::default()).await.unwrap().items.len(), 2);

    // leases: its own, in kube-node-lease
    let a_leases = Api::<Lease>::namespaced(node_a.clone(), "kube-node-lease");
    a_leases.create(&named("node-a")).await.unwrap();
    a_leases
        .replace_with("node-a", |mut l| {
            l.metadata_mut().labels.insert("renewed".into(), "yes".into());
            l
        })
        .await
        .unwrap();
    let err = a_leases.create(&named("node-b")).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert!(
        err.to_string()
            .ends_with("can only access node lease with the same name as the requesting node"),
        "{err}"
    );
    Api::<Lease>::namespaced(c.client(), "kube-node-lease")
        .create(&named("node-b"))
        .await
        .unwrap();
    let err = a_leases.get("node-b").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    let err = Api::<Lease>::namespaced(node_a.clone(), "kube-system")
        .create(&named("node-a"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");

    // events, as its recorder writes them
    let mut ev: Event = named("node-a.1");
    ev.involved_object = Some(ObjectReference {
        kind: "Node".into(),
        name: "node-a".into(),
        ..Default::default()
    });
    ev.reason = "Starting".into();
    ev.message = "kubelet started".into();
    Api::<Event>::namespaced(node_a, "default")
        .create(&ev)
        .await
        .unwrap();

    let audit = c.audit().unwrap();
    assert!(
        audit.iter().any(|e| e["user"]["username"] == "system:node:node-a"
            && e["verb"] == "update"
            && e["objectRef"]["resource"] == "nodes"
            && e["objectRef"]["name"] == "node-b"
            && e["responseStatus"]["code"] == 403),
        "{audit:#?}"
    );
    c.stop().await.unwrap();
}
