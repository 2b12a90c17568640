//! Tests that need to see inside the store: its files, its log, its subscriptions.

use std::time::Duration;

use bytes::Bytes;

use crate::{SledStore, Store, StoreConfig, StoreError};

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

fn log_entries(store: &SledStore) -> usize {
    store.engine().db.scan_prefix(crate::codec::LOG_PREFIX).count()
}

#[tokio::test]
async fn an_undecodable_record_is_corrupt_and_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(StoreConfig::new(dir.path())).unwrap();
        store.create("good", b("v")).await.unwrap();
    }
    {
        // Damage one record behind the store's back.
        let db = sled::open(dir.path().join("db")).unwrap();
        db.insert(crate::codec::record_key("pods/broken"), &b"short"[..])
            .unwrap();
        db.flush().unwrap();
    }
    let err = SledStore::open(StoreConfig::new(dir.path()))
        .err()
        .expect("corrupt");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("pods/broken"), "{message}");
    assert!(message.contains(&dir.path().display().to_string()), "{message}");
}

#[tokio::test]
async fn compaction_deletes_old_log_entries_and_keeps_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.history = 10;
    config.compaction_interval = Duration::from_secs(3600);
    let store = SledStore::open(config).unwrap();
    // Far more than one deletion chunk, all in one txn-per-revision stream.
    for i in 0..3000 {
        store.put(&format!("k{}", i % 7), b("v"), None).await.unwrap();
    }
    store.compact().await.unwrap();
    rkube_testing::eventually(
        "compaction to leave 10 log entries",
        Duration::from_secs(10),
        || async {
            match log_entries(&store) {
                n if n > 10 => Err(anyhow::anyhow!("the log has {n} entries")),
                _ => Ok(true),
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(log_entries(&store), 10);
    assert_eq!(store.stats().compacted, 2990);
    assert!(store.watch("", 2990).is_ok());
}

#[tokio::test]
async fn dropping_a_watch_releases_its_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(StoreConfig::new(dir.path())).unwrap();
    let mut watch = store.watch("", 0).unwrap();
    store.create("a", b("v")).await.unwrap();
    assert!(watch.next().await.is_some());
    assert_eq!(store.watchers(), 1);
    drop(watch);
    assert_eq!(store.watchers(), 0);
}

#[tokio::test]
async fn a_first_open_that_died_before_writing_the_marker_is_resumed() {
    let dir = tempfile::tempdir().unwrap();
    {
        // What a crash between initialising sled and writing the marker leaves behind.
        let db = sled::open(dir.path().join("db")).unwrap();
        db.insert(crate::codec::META_FORMAT, &1u64.to_be_bytes()[..])
            .unwrap();
        db.flush().unwrap();
        std::fs::write(dir.path().join("LOCK"), "1\n").unwrap();
    }
    let store = SledStore::open(StoreConfig::new(dir.path())).unwrap();
    store.create("a", b("v")).await.unwrap();
    assert!(dir.path().join("rkube-store.json").exists());
}

#[test]
fn a_sled_database_that_rkube_did_not_create_is_foreign() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path().join("db")).unwrap();
        db.insert("someone", "else's data").unwrap();
        db.flush().unwrap();
    }
    let err = SledStore::open(StoreConfig::new(dir.path()))
        .err()
        .expect("foreign");
    assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");
    assert!(!dir.path().join("rkube-store.json").exists());
}
