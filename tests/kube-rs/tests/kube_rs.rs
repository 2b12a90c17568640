//! kube-rs (crates.io `kube` 5 with `k8s-openapi`'s typed objects), as a Rust
//! program would use it, against a secure apiserver: TLS with client
//! certificates from the PKI `rkubectl certs generate` writes, read through
//! kube-rs' own kubeconfig loader, RBAC and a token file user RBAC grants
//! nothing. Everything here goes over the REST face.

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PartialObjectMeta, Patch, PatchParams,
    PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::watcher;
use kube::{Client, Config};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// What a stream has to produce its next item in.
const STREAM_WAIT: Duration = Duration::from_secs(30);

struct Cluster {
    api: rkube_testing::TestApiServer,
    /// kube-rs as the administrator (the PKI's `admin.conf`)
    admin: Client,
}

/// A secure apiserver with a token file user, `carol`, whom RBAC grants
/// nothing, and a kube-rs client for its administrator.
async fn start_cluster() -> Cluster {
    let api = rkube_testing::TestApiServer::builder()
        .secure(&[])
        .flag_file("--token-auth-file", "tokens.csv", "carol-token,carol,1003\n")
        .start()
        .await
        .unwrap();
    assert!(api.url().starts_with("https://"), "{}", api.url());
    let admin = kube_client(&api, &api.pki().join("admin.conf")).await;
    Cluster { api, admin }
}

/// kube-rs from the kubeconfig at `path` (read by kube-rs), pointed at `api`.
async fn kube_client(api: &rkube_testing::TestApiServer, path: &Path) -> Client {
    let mut kubeconfig = Kubeconfig::read_from(path).unwrap();
    for named in &mut kubeconfig.clusters {
        named.cluster.as_mut().unwrap().server = Some(api.url().to_string());
    }
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// A typed object from JSON, as programs write them.
fn object<K: DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).unwrap()
}

fn names<K: kube::Resource>(items: &[K]) -> Vec<String> {
    let mut names: Vec<String> = items.iter().map(|o| o.meta().name.clone().unwrap()).collect();
    names.sort();
    names
}

/// The next item of `stream`, which must come within [`STREAM_WAIT`].
async fn next<S: Stream + Unpin>(stream: &mut S, what: &str) -> S::Item {
    tokio::time::timeout(STREAM_WAIT, stream.next())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {STREAM_WAIT:?}"))
        .unwrap_or_else(|| panic!("the stream ended before {what}"))
}

/// The `kube::Error::Api` status of a call that must fail.
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn configmap(name: &str, labels: serde_json::Value, data: serde_json::Value) -> ConfigMap {
    object(json!({"metadata": {"name": name, "labels": labels}, "data": data}))
}

fn pod(name: &str, app: &str) -> Pod {
    object(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": "busybox:latest"}]},
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_lists_creates_and_patches() {
    let c = start_cluster().await;
    let version = c.admin.apiserver_version().await.unwrap();
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "32"));

    // lists: every ConfigMap, and pods by a label selector
    let cms: Api<ConfigMap> = Api::namespaced(c.admin.clone(), "default");
    let pp = PostParams::default();
    for name in ["alpha", "beta"] {
        cms.create(&pp, &configmap(name, json!({}), json!({"k": name})))
            .await
            .unwrap();
    }
    let list = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&list.items), ["alpha", "beta"]);
    assert_eq!(list.items[0].data.as_ref().unwrap()["k"], "alpha");
    assert!(list.metadata.resource_version.is_some(), "{:?}", list.metadata);

    let pods: Api<Pod> = Api::namespaced(c.admin.clone(), "default");
    for (name, app) in [("web-1", "web"), ("web-2", "web"), ("db-1", "db")] {
        pods.create(&pp, &pod(name, app)).await.unwrap();
    }
    let web = pods.list(&ListParams::default().labels("app=web")).await.unwrap();
    assert_eq!(names(&web.items), ["web-1", "web-2"]);
    let not_web = pods
        .list(&ListParams::default().labels("app!=web"))
        .await
        .unwrap();
    assert_eq!(names(&not_web.items), ["db-1"]);

    // a Deployment: created, read back with the server's defaults
    let deployments: Api<Deployment> = Api::default_namespaced(c.admin.clone());
    let deployment: Deployment = object(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "busybox:v1"}]},
            },
        },
    }));
    let created = deployments.create(&pp, &deployment).await.unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let got = deployments.get("web").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    let spec = got.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("RollingUpdate"),
        "the server's default strategy"
    );
    let image = |d: &Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .clone()
            .unwrap()
    };
    assert_eq!(image(&got), "busybox:v1");

    // a merge patch and a JSON patch
    let merged = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"patched": "merge"}}, "spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(merged.metadata.labels.as_ref().unwrap()["patched"], "merge");
    let json_patch: json_patch::Patch = object(json!([
        {"op": "test", "path": "/spec/replicas", "value": 3},
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "busybox:v2"},
        {"op": "add", "path": "/metadata/annotations", "value": {"patched": "json"}},
    ]));
    let patched = deployments
        .patch::<()>("web", &PatchParams::default(), &Patch::Json(json_patch))
        .await
        .unwrap();
    assert_eq!(image(&patched), "busybox:v2");
    assert_eq!(patched.metadata.annotations.as_ref().unwrap()["patched"], "json");
    let got = deployments.get("web").await.unwrap();
    assert_eq!(
        (image(&got), got.spec.unwrap().replicas),
        ("busybox:v2".into(), Some(3))
    );

    // server-side apply: creates the object, then changes it
    let apply = PatchParams::apply("kube-rs-test");
    let applied = cms
        .patch(
            "applied",
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "applied", "labels": {"via": "apply"}},
                "data": {"mode": "first"},
            })),
        )
        .await
        .unwrap();
    assert!(applied.metadata.uid.is_some());
    assert_eq!(applied.data.as_ref().unwrap()["mode"], "first");
    let reapplied = cms
        .patch(
            "applied",
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "applied", "labels": {"via": "apply"}},
                "data": {"mode": "second", "extra": "yes"},
            })),
        )
        .await
        .unwrap();
    assert_eq!(
        reapplied.metadata.uid, applied.metadata.uid,
        "changed, not recreated"
    );
    assert_ne!(
        reapplied.metadata.resource_version,
        applied.metadata.resource_version
    );
    let data = cms.get("applied").await.unwrap().data.unwrap();
    assert_eq!(
        data,
        BTreeMap::from([("mode".into(), "second".into()), ("extra".into(), "yes".into())])
    );
    c.api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_watches_a_configmap_through_its_life() {
    let c = start_cluster().await;
    let cms: Api<ConfigMap> = Api::namespaced(c.admin.clone(), "default");
    let selected = "test=watch";

    // kube-runtime's watcher: an initial (empty) list, then watch events
    let mut runtime = watcher(cms.clone(), watcher::Config::default().labels(selected)).boxed();
    loop {
        match next(&mut runtime, "the watcher's initial list").await.unwrap() {
            watcher::Event::Init => {}
            watcher::Event::InitDone => break,
            other => panic!("nothing matches {selected} yet: {other:?}"),
        }
    }
    // Api::watch from a list's resourceVersion: the raw event types
    let rv = cms
        .list(&ListParams::default().labels(selected))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut raw = cms
        .watch(&WatchParams::default().labels(selected), &rv)
        .await
        .unwrap()
        .boxed();
    let mut raw_event = async |what: &str| loop {
        match next(&mut raw, what).await.unwrap() {
            WatchEvent::Bookmark(_) => continue,
            event => break event,
        }
    };

    cms.create(
        &PostParams::default(),
        &configmap("watched", json!({"test": "watch"}), json!({"k": "v1"})),
    )
    .await
    .unwrap();
    match raw_event("ADDED").await {
        WatchEvent::Added(cm) => assert_eq!(cm.data.unwrap()["k"], "v1"),
        other => panic!("expected ADDED, got {other:?}"),
    }
    match next(&mut runtime, "the created ConfigMap").await.unwrap() {
        watcher::Event::Apply(cm) => assert_eq!(cm.data.unwrap()["k"], "v1"),
        other => panic!("expected the created ConfigMap, got {other:?}"),
    }

    cms.patch(
        "watched",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v2"}})),
    )
    .await
    .unwrap();
    match raw_event("MODIFIED").await {
        WatchEvent::Modified(cm) => assert_eq!(cm.data.unwrap()["k"], "v2"),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    match next(&mut runtime, "the patched ConfigMap").await.unwrap() {
        watcher::Event::Apply(cm) => assert_eq!(cm.data.unwrap()["k"], "v2"),
        other => panic!("expected the patched ConfigMap, got {other:?}"),
    }

    cms.delete("watched", &DeleteParams::default()).await.unwrap();
    match raw_event("DELETED").await {
        WatchEvent::Deleted(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("watched")),
        other => panic!("expected DELETED, got {other:?}"),
    }
    match next(&mut runtime, "the deleted ConfigMap").await.unwrap() {
        watcher::Event::Delete(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("watched")),
        other => panic!("expected the deleted ConfigMap, got {other:?}"),
    }
    c.api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_errors_carry_kubernetes_status() {
    let c = start_cluster().await;
    let cms: Api<ConfigMap> = Api::namespaced(c.admin.clone(), "default");

    let missing = api_error(cms.get("nope").await);
    assert_eq!(
        (missing.code, missing.reason.as_str()),
        (404, "NotFound"),
        "{missing:?}"
    );
    assert_eq!(missing.message, r#"configmaps "nope" not found"#);
    assert!(
        cms.get_opt("nope").await.unwrap().is_none(),
        "get_opt: None when missing"
    );

    let cm = configmap("once", json!({}), json!({"k": "v"}));
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let duplicate = api_error(cms.create(&PostParams::default(), &cm).await);
    assert_eq!(
        (duplicate.code, duplicate.reason.as_str()),
        (409, "AlreadyExists"),
        "{duplicate:?}"
    );

    // carol, by her token, is known but granted nothing
    let carol_conf = c.api.dir().join("carol.kubeconfig");
    std::fs::write(
        &carol_conf,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: rkube\n  cluster: {{server: '{}', certificate-authority: '{}'}}\n\
             users:\n- name: carol\n  user: {{token: carol-token}}\n\
             contexts:\n- name: carol\n  context: {{cluster: rkube, user: carol}}\n\
             current-context: carol\n",
            c.api.url(),
            c.api.pki().join("ca.crt").display()
        ),
    )
    .unwrap();
    let carol: Api<ConfigMap> = Api::namespaced(kube_client(&c.api, &carol_conf).await, "default");
    let forbidden = api_error(carol.list(&ListParams::default()).await);
    assert_eq!(
        (forbidden.code, forbidden.reason.as_str()),
        (403, "Forbidden"),
        "{forbidden:?}"
    );
    assert!(
        forbidden.message.contains("carol") && forbidden.message.contains("configmaps"),
        "{}",
        forbidden.message
    );
    let forbidden = api_error(carol.create(&PostParams::default(), &cm).await);
    assert_eq!(forbidden.code, 403, "{forbidden:?}");
    c.api.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_discovers_kinds_and_reads_metadata_and_scale() {
    let c = start_cluster().await;

    // discovery, legacy (/api, /apis and their resource lists) and aggregated
    for discovery in [
        Discovery::new(c.admin.clone()).run().await.unwrap(),
        Discovery::new(c.admin.clone()).run_aggregated().await.unwrap(),
    ] {
        let (ar, caps) = discovery
            .get("apps")
            .unwrap()
            .recommended_kind("Deployment")
            .unwrap();
        assert_eq!(
            (ar.plural.as_str(), ar.api_version.as_str()),
            ("deployments", "apps/v1")
        );
        assert_eq!(caps.scope, Scope::Namespaced);
        assert!(caps.supports_operation(verbs::WATCH) && caps.supports_operation(verbs::PATCH));
        let subresources: Vec<&str> = caps.subresources.iter().map(|(r, _)| r.plural.as_str()).collect();
        assert!(subresources.contains(&"scale"), "{subresources:?}");
        let (nodes, caps) = discovery.get("").unwrap().recommended_kind("Node").unwrap();
        assert_eq!((nodes.plural.as_str(), caps.scope), ("nodes", Scope::Cluster));
    }

    // a dynamic object of a kind discovery resolved
    let discovery = Discovery::new(c.admin.clone()).run().await.unwrap();
    let (ar, _) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap"))
        .unwrap();
    let dynamic: Api<DynamicObject> = Api::default_namespaced_with(c.admin.clone(), &ar);
    let mut settings = DynamicObject::new("settings", &ar).data(json!({"data": {"k": "v"}}));
    settings.metadata.labels = Some(BTreeMap::from([("app".into(), "web".into())]));
    dynamic.create(&PostParams::default(), &settings).await.unwrap();
    let got = dynamic.get("settings").await.unwrap();
    assert_eq!(got.data["data"]["k"], "v");

    // metadata only (PartialObjectMetadata): gets, lists and a watcher of
    // metadata (what `metadata_watcher` was)
    let cms: Api<ConfigMap> = Api::default_namespaced(c.admin.clone());
    let metas = cms
        .list_metadata(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(metas.types.kind, "PartialObjectMetadataList");
    assert_eq!(metas.items.len(), 1);
    let types = metas.items[0].types.clone().unwrap();
    assert_eq!(
        (types.api_version.as_str(), types.kind.as_str()),
        ("meta.k8s.io/v1", "PartialObjectMetadata")
    );
    assert_eq!(metas.items[0].metadata.name.as_deref(), Some("settings"));
    let meta = cms.get_metadata("settings").await.unwrap();
    assert_eq!(meta.types.unwrap().kind, "PartialObjectMetadata");
    assert_eq!(meta.metadata.labels.unwrap()["app"], "web");
    let mut metadata_events = watcher(
        Api::<PartialObjectMeta<ConfigMap>>::default_namespaced(c.admin.clone()),
        watcher::Config::default().labels("app=web"),
    )
    .boxed();
    let mut initial = vec![];
    loop {
        match next(&mut metadata_events, "the metadata watcher's list")
            .await
            .unwrap()
        {
            watcher::Event::Init => {}
            watcher::Event::InitApply(meta) => initial.push(meta.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            other => panic!("expected the initial list, got {other:?}"),
        }
    }
    assert_eq!(initial, ["settings"]);
    cms.patch(
        "settings",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"seen": "yes"}}})),
    )
    .await
    .unwrap();
    match next(&mut metadata_events, "the annotated ConfigMap's metadata")
        .await
        .unwrap()
    {
        watcher::Event::Apply(meta) => {
            assert_eq!(meta.types.unwrap().kind, "PartialObjectMetadata");
            assert_eq!(meta.metadata.annotations.unwrap()["seen"], "yes");
        }
        other => panic!("expected the annotated ConfigMap, got {other:?}"),
    }

    // the scale subresource
    let deployments: Api<Deployment> = Api::default_namespaced(c.admin.clone());
    let deployment: Deployment = object(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "busybox:v1"}]},
            },
        },
    }));
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let scale = deployments.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    let scaled = deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.spec.unwrap().replicas, Some(4));
    let got = deployments.get("web").await.unwrap();
    assert_eq!(got.spec.unwrap().replicas, Some(4));
    c.api.stop().await.unwrap();
}
