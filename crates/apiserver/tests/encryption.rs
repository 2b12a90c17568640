//! Secrets encrypted at rest (`--encryption-key-file`), in process: what
//! reaches the disk, what clients read back, and what an apiserver started
//! with the wrong key file, or none, answers.

mod common;

use base64::Engine;
use common::{create, get, rid, update};
use rkube_api::core::v1::{ConfigMap, Secret};
use rkube_api::rpc::{self, api_server_client::ApiServerClient};
use rkube_api::Resource;
use rkube_store::{SledStore, Store, StoreConfig};
use rkube_testing::TestApiServer;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

const SECRET_MARKER: &[u8] = b"hunter2-secret-marker-7f3a";
const CONFIG_MARKER: &str = "plain-configmap-marker-9c1e";
const PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:key1:";

fn write_key(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let path = dir.join(name);
    let text = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    path
}

async fn boot(data: &Path, key: Option<&Path>) -> (TestApiServer, ApiServerClient<Channel>) {
    let mut options = TestApiServer::builder().data_dir(data);
    if let Some(key) = key {
        options = options.flags([OsStr::new("--encryption-key-file"), key.as_os_str()]);
    }
    let h = common::Harness::start_with(options).await;
    (h.api, h.client)
}

/// Boots on `dir/data` encrypting with the key file `dir/key` (every byte
/// 7) and creates Secret `db` (holding SECRET_MARKER) and ConfigMap
/// `settings`; returns the data directory, the key file, the server and a
/// client.
async fn boot_with_secret_and_config_map(
    dir: &Path,
) -> (PathBuf, PathBuf, TestApiServer, ApiServerClient<Channel>) {
    let data = dir.join("data");
    let key = write_key(dir, "key", 7);
    let (server, mut c) = boot(&data, Some(&key)).await;
    create(&mut c, &secret("db", SECRET_MARKER)).await.unwrap();
    create(&mut c, &config_map("settings")).await.unwrap();
    (data, key, server, c)
}

fn secret(name: &str, value: &[u8]) -> Secret {
    let mut s = Secret::default();
    s.metadata_mut().name = name.into();
    s.metadata_mut().namespace = "default".into();
    s.data.insert("password".into(), value.to_vec());
    s
}

fn config_map(name: &str) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata_mut().name = name.into();
    c.metadata_mut().namespace = "default".into();
    c.data.insert("note".into(), CONFIG_MARKER.into());
    c
}

/// The raw value of `key` in the store, opened directly (the apiserver
/// must be stopped).
fn raw(data: &Path, key: &str) -> Option<Vec<u8>> {
    let store = SledStore::open(StoreConfig::new(data)).unwrap();
    let value = store.get(key).map(|kv| kv.value.to_vec());
    store.close().unwrap();
    value
}

/// Whether any file under `dir` contains `needle` (sled's pages and the
/// change log alike).
fn on_disk(dir: &Path, needle: &[u8]) -> bool {
    walk(dir).iter().any(|f| {
        std::fs::read(f)
            .map(|b| b.windows(needle.len()).any(|w| w == needle))
            .unwrap_or(false)
    })
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn secrets_are_encrypted_on_disk_and_read_back_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _, server, mut c) = boot_with_secret_and_config_map(dir.path()).await;
    // an update goes through the same encryption as a create
    let mut s: Secret = get(&mut c, "default", "db").await.unwrap();
    s.metadata_mut().labels.insert("tier".into(), "db".into());
    update(&mut c, &s).await.unwrap();

    // get, list and watch give the plaintext back
    let s: Secret = get(&mut c, "default", "db").await.unwrap();
    assert_eq!(s.data["password"], SECRET_MARKER);
    assert_eq!(s.metadata().labels["tier"], "db");
    let list = c
        .list(rpc::ListRequest {
            resource: rid::<Secret>(),
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let listed: Secret = rkube_api::from_any(&list.items[0]).unwrap();
    assert_eq!(listed.data["password"], SECRET_MARKER);
    let mut watch = c
        .watch(rpc::WatchRequest {
            resource: rid::<Secret>(),
            namespace: "default".into(),
            resource_version: "1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ev = watch.message().await.unwrap().unwrap();
    let watched: Secret = rkube_api::from_any(ev.object.as_ref().unwrap()).unwrap();
    assert_eq!(
        (ev.r#type.as_str(), watched.data["password"].as_slice()),
        ("ADDED", SECRET_MARKER)
    );
    drop(watch);
    server.stop().await.unwrap();

    // on disk: the Secret is ciphertext everywhere (pages and change log);
    // the ConfigMap, not encrypted, shows this scan would find plaintext
    let value = raw(&data, "core/secrets/default/db").unwrap();
    assert!(value.starts_with(PREFIX), "stored value is not encrypted");
    assert!(
        !on_disk(&data, SECRET_MARKER),
        "the Secret's value is on disk in the clear"
    );
    assert!(on_disk(&data, CONFIG_MARKER.as_bytes()));
    let cm = raw(&data, "core/configmaps/default/settings").unwrap();
    assert!(!cm.starts_with(b"k8s:enc:"));
}

#[tokio::test]
async fn plain_secrets_stay_readable_and_are_encrypted_when_next_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, mut c) = boot(&data, None).await;
    create(&mut c, &secret("old", b"written-before-encryption"))
        .await
        .unwrap();
    server.stop().await.unwrap();
    assert!(!raw(&data, "core/secrets/default/old")
        .unwrap()
        .starts_with(PREFIX));

    let key = write_key(dir.path(), "key", 7);
    let (server, mut c) = boot(&data, Some(&key)).await;
    let mut s: Secret = get(&mut c, "default", "old").await.unwrap();
    assert_eq!(s.data["password"], b"written-before-encryption");
    s.data.insert("password".into(), b"rotated".to_vec());
    update(&mut c, &s).await.unwrap();
    let s: Secret = get(&mut c, "default", "old").await.unwrap();
    assert_eq!(s.data["password"], b"rotated");
    server.stop().await.unwrap();
    assert!(raw(&data, "core/secrets/default/old")
        .unwrap()
        .starts_with(PREFIX));
}

#[tokio::test]
async fn a_missing_or_wrong_key_file_is_a_clear_error_naming_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (data, key, server, _) = boot_with_secret_and_config_map(dir.path()).await;
    server.stop().await.unwrap();

    // without the key file
    let (server, mut c) = boot(&data, None).await;
    let err = get::<Secret>(&mut c, "default", "db").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal);
    assert!(
        err.message().contains("Secret default/db") && err.message().contains("no --encryption-key-file"),
        "{}",
        err.message()
    );
    let err = c
        .list(rpc::ListRequest {
            resource: rid::<Secret>(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("Secret default/db"), "{}", err.message());
    // other kinds are unaffected
    let cm: ConfigMap = get(&mut c, "default", "settings").await.unwrap();
    assert_eq!(cm.data["note"], CONFIG_MARKER);
    server.stop().await.unwrap();

    // with another key
    let wrong = write_key(dir.path(), "wrong", 8);
    let (server, mut c) = boot(&data, Some(&wrong)).await;
    let err = get::<Secret>(&mut c, "default", "db").await.unwrap_err();
    assert!(
        err.message().contains("Secret default/db") && err.message().contains("does not match"),
        "{}",
        err.message()
    );
    // an update cannot overwrite what it cannot read
    let err = update(&mut c, &secret("db", b"x")).await.unwrap_err();
    assert!(err.message().contains("does not match"), "{}", err.message());
    server.stop().await.unwrap();

    // the right key still reads it
    let (server, mut c) = boot(&data, Some(&key)).await;
    let s: Secret = get(&mut c, "default", "db").await.unwrap();
    assert_eq!(s.data["password"], SECRET_MARKER);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_key_file_is_refused_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("short.key");
    std::fs::write(&key, base64::engine::general_purpose::STANDARD.encode([1u8; 16])).unwrap();
    let err = TestApiServer::builder()
        .flags([OsStr::new("--encryption-key-file"), key.as_os_str()])
        .start()
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("--encryption-key-file")
            && err.contains(&key.display().to_string())
            && err.contains("32"),
        "{err}"
    );
}

#[tokio::test]
async fn rkubectl_get_secret_yaml_shows_data_in_base64() {
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path(), "key", 7);
    let (server, mut c) = boot(&dir.path().join("data"), Some(&key)).await;
    create(&mut c, &secret("db", SECRET_MARKER)).await.unwrap();
    let conf = dir.path().join("client.conf");
    rkube_client::ClientConfig {
        server: server.url().to_string(),
        ..Default::default()
    }
    .save(&conf)
    .unwrap();
    let cli = rkube_ctl::Cli::try_parse_from([
        "rkubectl",
        "--config",
        conf.to_str().unwrap(),
        "get",
        "secret",
        "db",
        "-o",
        "yaml",
    ])
    .unwrap();
    let mut out = Vec::new();
    rkube_ctl::run(cli, &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(SECRET_MARKER);
    assert!(out.contains(&format!("password: {encoded}")), "{out}");
    assert!(
        !out.contains(std::str::from_utf8(SECRET_MARKER).unwrap()),
        "{out}"
    );
    server.stop().await.unwrap();
}

/// Key rotation as the README gives it: the new key first in the file, a
/// restart, every Secret replaced unchanged (as `kubectl replace` does),
/// then the old key dropped.
#[tokio::test]
async fn rotating_the_key_rewrites_every_secret_with_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (data, old_key, server, _) = boot_with_secret_and_config_map(dir.path()).await;
    server.stop().await.unwrap();
    let old = std::fs::read_to_string(&old_key).unwrap();
    let new = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let both = dir.path().join("both");
    std::fs::write(&both, format!("# rotation\nkey2:{new}\nkey1:{}\n", old.trim())).unwrap();

    let (server, mut c) = boot(&data, Some(&both)).await;
    create(&mut c, &secret("fresh", b"after-rotation")).await.unwrap();
    let before: Secret = get(&mut c, "default", "db").await.unwrap();
    assert_eq!(before.data["password"], SECRET_MARKER);
    // an unchanged update of a Secret under the old key writes it again...
    let after: Secret = update(&mut c, &before).await.unwrap();
    assert_ne!(
        after.metadata().resource_version,
        before.metadata().resource_version
    );
    // ... and of one under the new key does not
    let fresh: Secret = get(&mut c, "default", "fresh").await.unwrap();
    let again: Secret = update(&mut c, &fresh).await.unwrap();
    assert_eq!(
        again.metadata().resource_version,
        fresh.metadata().resource_version
    );
    server.stop().await.unwrap();
    for name in ["db", "fresh"] {
        let value = raw(&data, &format!("core/secrets/default/{name}")).unwrap();
        assert!(
            value.starts_with(b"k8s:enc:aesgcm:v1:key2:"),
            "{name} is not under the new key"
        );
    }

    // the old key dropped: everything still reads
    let only_new = dir.path().join("new");
    std::fs::write(&only_new, format!("key2:{new}\n")).unwrap();
    let (server, mut c) = boot(&data, Some(&only_new)).await;
    let s: Secret = get(&mut c, "default", "db").await.unwrap();
    assert_eq!(s.data["password"], SECRET_MARKER);
    server.stop().await.unwrap();
}
