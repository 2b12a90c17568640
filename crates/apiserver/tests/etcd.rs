//! rkube-apiserver on etcd (`--storage-backend etcd`), end to end: the real apiserver
//! started through its flags over a real etcd started by the test (TLS with client
//! certificates), objects created, listed and watched through the API, Secrets encrypted
//! in etcd, two apiservers sharing one etcd, and etcd going away.

use base64::Engine;
use futures::StreamExt;
use rkube_api::core::v1::{ConfigMap, Secret};
use rkube_api::Resource;
use rkube_client::{Api, ListParams, WatchEvent, WatchParams};
use rkube_testing::etcd::Etcd;
use rkube_testing::{TestApiServer, TestApiServerBuilder};
use std::ffi::OsString;
use std::time::{Duration, Instant};

const SECRET_MARKER: &[u8] = b"hunter2-etcd-secret-marker-41c9";
const CONFIG_MARKER: &str = "plain-etcd-configmap-marker-d2e0";

/// The flags that put an apiserver on `etcd` (with its client certificate when it has
/// TLS).
fn on_etcd(etcd: &Etcd) -> TestApiServerBuilder {
    let mut flags: Vec<OsString> = vec![
        "--storage-backend".into(),
        "etcd".into(),
        "--etcd-servers".into(),
        etcd.endpoint.clone().into(),
    ];
    if let Some(pki) = &etcd.pki {
        flags.extend([
            "--etcd-cafile".into(),
            pki.ca.clone().into(),
            "--etcd-certfile".into(),
            pki.client_cert.clone().into(),
            "--etcd-keyfile".into(),
            pki.client_key.clone().into(),
        ]);
    }
    TestApiServer::builder().flags(flags)
}

fn config_map(name: &str) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata_mut().name = name.into();
    c.metadata_mut().namespace = "default".into();
    c.data.insert("note".into(), CONFIG_MARKER.into());
    c
}

/// The raw value etcd holds for the object (kube-apiserver's layout: `/registry/KEY`).
async fn raw(etcd: &Etcd, info: &rkube_api::ResourceInfo, name: &str) -> Vec<u8> {
    let key = format!(
        "/registry/{}",
        rkube_apiserver::keys::storage_key(info, "default", name)
    );
    let mut client = etcd.client().await.unwrap();
    let response = client.get(key.clone(), None).await.unwrap();
    let kv = response
        .kvs()
        .first()
        .unwrap_or_else(|| panic!("etcd has no {key}"));
    kv.value().to_vec()
}

type Watch<K> = futures::stream::BoxStream<'static, rkube_client::Result<WatchEvent<K>>>;

async fn next<K>(watch: &mut Watch<K>) -> WatchEvent<K> {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a watch event within 10 s")
        .expect("the watch goes on")
        .expect("a watch event, not an error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_on_etcd_over_tls_serves_objects_and_keeps_secrets_encrypted() {
    let etcd = Etcd::start_tls().await.unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let server = on_etcd(&etcd)
        .flag_file("--encryption-key-file", "encryption.key", &key)
        .start()
        .await
        .unwrap();
    let cms: Api<ConfigMap> = server.api("default");

    for name in ["a", "b", "c"] {
        cms.create(&config_map(name)).await.unwrap();
    }
    let list = cms.list(&ListParams::default()).await.unwrap();
    let names: Vec<_> = list.items.iter().map(|c| c.metadata().name.clone()).collect();
    assert_eq!(names, ["a", "b", "c"]);

    let mut watch = cms
        .watch(&WatchParams {
            resource_version: list.resource_version.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let updated = cms
        .replace_with("b", |mut c| {
            c.data.insert("more".into(), "x".into());
            c
        })
        .await
        .unwrap();
    cms.delete("c", &Default::default()).await.unwrap();
    match next(&mut watch).await {
        WatchEvent::Modified(c) => {
            assert_eq!(c.metadata().name, "b");
            assert_eq!(c.metadata().resource_version, updated.metadata().resource_version);
        }
        other => panic!("expected b Modified, got {other:?}"),
    }
    assert!(matches!(next(&mut watch).await, WatchEvent::Deleted(c) if c.metadata().name == "c"));
    // The resourceVersion is etcd's revision.
    let mut client = etcd.client().await.unwrap();
    let status = client.status().await.unwrap();
    let revision = status.header().unwrap().revision();
    let rv: i64 = updated.metadata().resource_version.parse().unwrap();
    assert!(
        rv > 1 && rv < revision,
        "resourceVersion {rv}, etcd at {revision}"
    );

    // A Secret is stored encrypted in etcd and read back in the clear.
    let secrets: Api<Secret> = server.api("default");
    let mut secret = Secret::default();
    secret.metadata_mut().name = "db".into();
    secret.data.insert("password".into(), SECRET_MARKER.to_vec());
    secrets.create(&secret).await.unwrap();
    assert_eq!(
        secrets.get("db").await.unwrap().data["password"],
        SECRET_MARKER.to_vec()
    );
    let stored = raw(&etcd, Secret::info(), "db").await;
    assert!(
        stored.starts_with(b"k8s:enc:aesgcm:v1:key1:"),
        "{:?}",
        &stored[..20.min(stored.len())]
    );
    assert!(
        !stored.windows(SECRET_MARKER.len()).any(|w| w == SECRET_MARKER),
        "the Secret's data is in etcd in the clear"
    );
    // Only Secrets: a ConfigMap's data is where the raw read looks.
    let plain = raw(&etcd, ConfigMap::info(), "a").await;
    assert!(plain
        .windows(CONFIG_MARKER.len())
        .any(|w| w == CONFIG_MARKER.as_bytes()));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apiservers_on_one_etcd_serve_the_same_objects_and_watches_in_order() {
    let etcd = Etcd::temp().await.unwrap();
    let first = on_etcd(&etcd).start().await.unwrap();
    let second = on_etcd(&etcd).start().await.unwrap();
    let (on_first, on_second): (Api<ConfigMap>, Api<ConfigMap>) =
        (first.api("default"), second.api("default"));

    let start = on_first.list(&ListParams::default()).await.unwrap();
    let mut watch = on_first
        .watch(&WatchParams {
            resource_version: start.resource_version,
            ..Default::default()
        })
        .await
        .unwrap();
    // Writes through both apiservers, most through the one not watched.
    let mut created = Vec::new();
    for i in 0..20 {
        let api = if i % 4 == 0 { &on_first } else { &on_second };
        created.push(api.create(&config_map(&format!("cm-{i:02}"))).await.unwrap());
    }
    let mut last = 0u64;
    for expected in &created {
        let event = next(&mut watch).await;
        let WatchEvent::Added(cm) = event else {
            panic!("expected Added, got {event:?}")
        };
        assert_eq!(cm.metadata().name, expected.metadata().name, "out of order");
        let rv: u64 = cm.metadata().resource_version.parse().unwrap();
        assert!(rv > last, "resourceVersion {rv} after {last}");
        last = rv;
    }
    // A list through either is consistent: it has every object written through the other.
    for api in [&on_first, &on_second] {
        assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 20);
    }
    // An update with a resourceVersion made stale through the other apiserver is a Conflict.
    let old = on_first.get("cm-01").await.unwrap();
    on_second
        .replace_with("cm-01", |mut c| {
            c.data.insert("by".into(), "second".into());
            c
        })
        .await
        .unwrap();
    let err = on_first.update(&old).await.unwrap_err();
    assert!(
        matches!(&err, rkube_client::Error::Api { reason, .. } if reason == "Conflict"),
        "{err:?}"
    );
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_writes_fail_with_storage_unavailable_and_work_again_when_it_returns() {
    let mut etcd = Etcd::temp().await.unwrap();
    let server = on_etcd(&etcd).start().await.unwrap();
    let cms: Api<ConfigMap> = server.api("default");
    cms.create(&config_map("before")).await.unwrap();

    etcd.kill();
    let started = Instant::now();
    let err = cms.create(&config_map("during")).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    match &err {
        rkube_client::Error::Api { code, message, .. } => {
            assert_eq!(*code, tonic::Code::Unavailable, "{message}");
            assert!(message.contains("storage unavailable: etcd at"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // Reads go on from the cache.
    assert_eq!(cms.get("before").await.unwrap().metadata().name, "before");
    assert_eq!(cms.list(&ListParams::default()).await.unwrap().items.len(), 1);

    etcd.restart().await.unwrap();
    rkube_testing::eventually("a create once etcd is back", Duration::from_secs(20), || async {
        Ok(cms.create(&config_map("after")).await.map(|_| true)?)
    })
    .await
    .unwrap();
    let names: Vec<_> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.metadata().name.clone())
        .collect();
    assert_eq!(names, ["after", "before"]);
    server.stop().await.unwrap();
}

#[test]
fn etcd_flags_are_checked_before_anything_starts() {
    let parse = |flags: &[&str]| {
        let argv = ["rkube-apiserver", "--health-addr", "off", "--insecure"]
            .iter()
            .chain(flags);
        rkube_daemon::options::parse_from::<rkube_apiserver::Options, _, _>(argv)
            .and_then(rkube_apiserver::Config::from_options)
            .err()
            .map(|e| e.to_string())
    };
    let err = parse(&["--etcd-servers", "http://127.0.0.1:2379"]).unwrap();
    assert!(err.contains("--storage-backend etcd"), "{err}");
    let err = parse(&["--storage-backend", "etcd"]).unwrap();
    assert!(err.contains("needs --etcd-servers"), "{err}");
    let err = parse(&[
        "--storage-backend",
        "etcd",
        "--etcd-servers",
        "https://10.0.0.1:2379",
    ])
    .unwrap();
    assert!(err.contains("--etcd-cafile"), "{err}");
    let err = parse(&[
        "--storage-backend",
        "etcd",
        "--etcd-servers",
        "http://10.0.0.1:2379",
        "--etcd-prefix",
        "registry",
    ])
    .unwrap();
    assert!(err.contains("must start with /"), "{err}");
    assert_eq!(
        parse(&[
            "--storage-backend",
            "etcd",
            "--etcd-servers",
            "http://10.0.0.1:2379,http://10.0.0.2:2379",
            "--etcd-compaction-interval",
            "0",
        ]),
        None
    );
}

/// A one-apiserver cluster on sled moves to etcd: `--import-from-sled` copies every object
/// as it was (uid, creationTimestamp, generation, labels, data, a Secret still readable
/// with the same encryption key), and the apiserver on etcd serves them and takes new
/// writes. Started again with the flag it copies nothing twice; into an etcd that holds
/// other objects it refuses, naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_cluster_moves_to_etcd_keeping_uids_timestamps_and_labels() {
    use rkube_api::apps::v1::Deployment;
    let data = tempfile::tempdir().unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let on_sled = TestApiServer::builder()
        .data_dir(data.path())
        .flag_file("--encryption-key-file", "encryption.key", &key)
        .start()
        .await
        .unwrap();
    let mut cm = config_map("kept");
    cm.metadata_mut().labels.insert("tier".into(), "web".into());
    on_sled.api::<ConfigMap>("default").create(&cm).await.unwrap();
    let mut secret = Secret::default();
    secret.metadata_mut().name = "creds".into();
    secret.data.insert("password".into(), SECRET_MARKER.to_vec());
    on_sled.api::<Secret>("default").create(&secret).await.unwrap();
    let deployments = on_sled.api::<Deployment>("default");
    let manifest = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: busybox}]}
"#;
    let objects = rkube_api::codec::decode_manifests(manifest, "web.yaml").unwrap();
    deployments
        .create(&objects[0].decode::<Deployment>().unwrap())
        .await
        .unwrap();
    deployments
        .patch_merge("web", &serde_json::json!({"spec": {"replicas": 3}}))
        .await
        .unwrap();
    // what a user would compare: identity, age, generation, labels
    let summary = |m: &rkube_api::meta::v1::ObjectMeta| {
        (
            m.uid.clone(),
            m.creation_timestamp.clone(),
            m.generation,
            m.labels.clone(),
        )
    };
    let before = (
        summary(
            on_sled
                .api::<ConfigMap>("default")
                .get("kept")
                .await
                .unwrap()
                .metadata(),
        ),
        summary(
            on_sled
                .api::<Secret>("default")
                .get("creds")
                .await
                .unwrap()
                .metadata(),
        ),
        summary(deployments.get("web").await.unwrap().metadata()),
    );
    assert_eq!(before.2 .2, 2, "the scale made a second generation");
    on_sled.stop().await.unwrap();

    let etcd = Etcd::temp().await.unwrap();
    let import: [OsString; 2] = ["--import-from-sled".into(), data.path().into()];
    let mut moved = on_etcd(&etcd)
        .flag_file("--encryption-key-file", "encryption.key", &key)
        .flags(import.clone())
        .start()
        .await
        .unwrap();
    let check = |server: &TestApiServer| {
        let (cms, secrets, deployments) = (
            server.api::<ConfigMap>("default"),
            server.api::<Secret>("default"),
            server.api::<Deployment>("default"),
        );
        let before = before.clone();
        async move {
            let cm = cms.get("kept").await.unwrap();
            let secret = secrets.get("creds").await.unwrap();
            let deployment = deployments.get("web").await.unwrap();
            assert_eq!(
                (
                    summary(cm.metadata()),
                    summary(secret.metadata()),
                    summary(deployment.metadata())
                ),
                before,
                "uid, creationTimestamp, generation and labels kept"
            );
            assert_eq!(cm.data.get("note").map(String::as_str), Some(CONFIG_MARKER));
            assert_eq!(
                secret.data.get("password").map(Vec::as_slice),
                Some(SECRET_MARKER)
            );
            assert_eq!(deployment.spec.and_then(|s| s.replicas), Some(3));
        }
    };
    check(&moved).await;
    // the Secret is still ciphertext in etcd
    let raw_secret = raw(&etcd, Secret::info(), "creds").await;
    assert!(!raw_secret
        .windows(SECRET_MARKER.len())
        .any(|w| w == SECRET_MARKER));
    moved
        .api::<ConfigMap>("default")
        .create(&config_map("after-the-move"))
        .await
        .unwrap();

    // started again with the flag still given: nothing copied twice, nothing lost
    moved.restart().await.unwrap();
    check(&moved).await;
    let names = moved
        .api::<ConfigMap>("default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.metadata().name.clone())
        .collect::<Vec<_>>();
    assert_eq!(names, ["after-the-move", "kept"]);
    moved.stop().await.unwrap();

    // another cluster's store into this etcd: refused, naming the flag and the fix
    let other = tempfile::tempdir().unwrap();
    let other_sled = TestApiServer::builder()
        .data_dir(other.path())
        .start()
        .await
        .unwrap();
    other_sled
        .api::<ConfigMap>("default")
        .create(&config_map("elsewhere"))
        .await
        .unwrap();
    other_sled.stop().await.unwrap();
    let refused = on_etcd(&etcd)
        .flags(["--import-from-sled".into(), other.path().as_os_str().to_owned()])
        .start()
        .await
        .err()
        .expect("an import into a non-empty etcd is refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains("--import-from-sled") && message.contains("already holds other objects"),
        "{message}"
    );
}
