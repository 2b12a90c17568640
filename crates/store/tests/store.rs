//! Behaviour of the store as the apiserver sees it, through the public API only. The
//! tests that hold for any backend run twice, on sled and on a real etcd started for the
//! test (`sled::NAME`, `etcd::NAME`); the rest are about sled's data directory.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{b, next_event, next_non_progress, watch_refusal, Harness};
use rkube_store::{EventKind, Op, SledStore, Store, StoreConfig, StoreError, WatchItem};

on_both_backends!(
    create_get_put_delete_and_list,
    stale_expected_revision_is_a_conflict,
    create_of_existing_key_is_already_exists,
    missing_keys_are_not_found,
    a_transaction_is_all_or_nothing_under_one_revision,
    paginated_list_stays_on_its_snapshot_while_writes_happen,
    continuing_on_a_snapshot_that_is_not_held_is_gone,
    prefixes_are_isolated_in_lists_and_watches,
    watch_replays_history_then_follows_live_in_order,
    revisions_and_watch_history_survive_a_restart,
    watching_from_a_compacted_revision_is_gone,
    a_lagging_watcher_still_receives_every_event,
    a_watcher_that_lags_past_the_compacted_log_is_told_gone,
    idle_watchers_get_progress_with_the_current_revision,
    concurrent_read_modify_write_never_loses_an_update,
    close_finishes_writes_and_ends_watches,
);

fn open(dir: &Path) -> SledStore {
    SledStore::open(StoreConfig::new(dir)).expect("open store")
}

fn open_with(dir: &Path, change: impl FnOnce(&mut StoreConfig)) -> SledStore {
    let mut config = StoreConfig::new(dir);
    change(&mut config);
    SledStore::open(config).expect("open store")
}

fn keys(items: &[rkube_store::KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

#[tokio::test]
async fn the_log_is_compacted_automatically_once_it_outgrows_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), |c| c.history = 10);
    for i in 1..=30 {
        store.create(&format!("k{i}"), b("v")).await.unwrap();
    }
    let stats = store.stats();
    assert!(stats.compactions >= 1, "{stats:?}");
    // The writer compacts to `revision - history` whenever the log passes 11 entries; it
    // may not have run yet for the last group when the caller is answered.
    assert!((18..=20).contains(&stats.compacted), "{stats:?}");
    assert!(store.watch("", 1).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_fsyncs() {
    const WRITERS: usize = 64;
    const EACH: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let before = store.stats();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                store.create(&format!("w{w}/{i}"), b("v")).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = store.stats();
    let txns = stats.txns - before.txns;
    let flushes = stats.flushes - before.flushes;
    assert_eq!(txns, (WRITERS * EACH) as u64);
    // One fsync per txn would be 1280; with 64 writers waiting, each group carries many.
    assert!(
        flushes * 4 <= txns,
        "group commit is not grouping: {flushes} flushes for {txns} txns"
    );
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = SledStore::open(StoreConfig::new(dir.path()))
        .err()
        .expect("locked");
    match &err {
        StoreError::Locked { path, holder } => {
            assert_eq!(path, dir.path());
            assert_eq!(*holder, Some(std::process::id()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&dir.path().display().to_string()), "{message}");
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    assert!(message.contains("--data-dir"), "{message}");

    store.create("x", b("1")).await.unwrap();
    drop(store);
    // Released on drop.
    let store = open(dir.path());
    assert_eq!(store.get("x").unwrap().value, b("1"));
}

#[test]
fn a_directory_holding_something_else_is_foreign() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = SledStore::open(StoreConfig::new(dir.path()))
        .err()
        .expect("foreign");
    assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert!(
        !dir.path().join("LOCK").exists(),
        "a foreign directory is left untouched"
    );

    let file = dir.path().join("notes.txt");
    assert!(matches!(
        SledStore::open(StoreConfig::new(&file)),
        Err(StoreError::Foreign { .. })
    ));
}

#[test]
fn a_marker_with_another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rkube-store.json"), "{\"format\": 7}").unwrap();
    let err = SledStore::open(StoreConfig::new(dir.path()))
        .err()
        .expect("refused");
    assert!(
        matches!(&err, StoreError::UnsupportedFormat { found, supported: 1, .. } if found == "7"),
        "{err:?}"
    );
    std::fs::write(dir.path().join("rkube-store.json"), "not json").unwrap();
    assert!(matches!(
        SledStore::open(StoreConfig::new(dir.path())),
        Err(StoreError::Corrupt { .. })
    ));
}

/// Fills the named files under `db/` (all files if empty) with garbage.
fn damage(dir: &Path, only: &[&str]) {
    for entry in std::fs::read_dir(dir.join("db")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if path.is_file() && (only.is_empty() || only.contains(&name.as_str())) {
            std::fs::write(&path, vec![0xA5u8; 4096]).unwrap();
        }
    }
}

#[tokio::test]
async fn damaged_database_files_are_corrupt_not_a_panic_nor_an_empty_store() {
    // Every file, only sled's config, only its data file (which sled itself would read as
    // an empty database), or the whole database directory removed.
    for case in ["all", "conf", "db", "removed"] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            store.create("pods/a", b("v")).await.unwrap();
        }
        match case {
            "all" => damage(dir.path(), &[]),
            "removed" => std::fs::remove_dir_all(dir.path().join("db")).unwrap(),
            file => damage(dir.path(), &[file]),
        }
        let err = SledStore::open(StoreConfig::new(dir.path()))
            .err()
            .unwrap_or_else(|| panic!("{case}: a damaged store opened"));
        assert!(
            matches!(&err, StoreError::Corrupt { path, .. } if path.starts_with(dir.path())),
            "{case}: {err:?}"
        );
        assert!(err.to_string().contains("--data-dir"), "{err}");
    }
}

async fn create_get_put_delete_and_list(h: Harness) {
    let store = h.open().await;
    // etcd starts at revision 1, sled at 0: every revision below is counted from here
    let r0 = store.revision();

    let created = store.create("pods/default/a", b("one")).await.unwrap();
    assert_eq!(created.create_revision, r0 + 1);
    assert_eq!(created.mod_revision, r0 + 1);
    assert_eq!(store.get("pods/default/a"), Some(created.clone()));
    assert_eq!(store.revision(), r0 + 1);

    store.create("pods/default/b", b("two")).await.unwrap();
    let updated = store.put("pods/default/a", b("uno"), Some(r0 + 1)).await.unwrap();
    assert_eq!(
        updated.create_revision,
        r0 + 1,
        "create_revision survives updates"
    );
    assert_eq!(updated.mod_revision, r0 + 3);
    assert_eq!(store.get("pods/default/a").unwrap().value, b("uno"));

    let list = store.list("pods/default/", None, 0, None).unwrap();
    assert_eq!(keys(&list.items), ["pods/default/a", "pods/default/b"]);
    assert_eq!(list.revision, r0 + 3);
    assert!(!list.more);
    assert_eq!(list.remaining, 0);

    let (revision, deleted) = store.delete("pods/default/b", None).await.unwrap();
    assert_eq!(revision, r0 + 4);
    assert_eq!(deleted.value, b("two"));
    assert_eq!(deleted.mod_revision, r0 + 2);
    assert_eq!(store.get("pods/default/b"), None);
    assert_eq!(
        keys(&store.list("pods/", None, 0, None).unwrap().items),
        ["pods/default/a"]
    );
}

async fn stale_expected_revision_is_a_conflict(h: Harness) {
    let store = h.open().await;
    let r0 = store.revision();
    let first = store.create("cm/x", b("v1")).await.unwrap();
    store
        .put("cm/x", b("v2"), Some(first.mod_revision))
        .await
        .unwrap();

    let err = store
        .put("cm/x", b("v3"), Some(first.mod_revision))
        .await
        .unwrap_err();
    match &err {
        StoreError::Conflict {
            key,
            expected,
            actual,
        } => {
            assert_eq!(key, "cm/x");
            assert_eq!(*expected, r0 + 1);
            assert_eq!(*actual, r0 + 2);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(err.to_string().contains("cm/x"), "{err}");
    assert!(matches!(
        store.delete("cm/x", Some(r0 + 1)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.get("cm/x").unwrap().value, b("v2"));
    assert_eq!(store.revision(), r0 + 2, "refused writes consume no revision");
}

async fn create_of_existing_key_is_already_exists(h: Harness) {
    let store = h.open().await;
    store.create("ns/default", b("a")).await.unwrap();
    let err = store.create("ns/default", b("b")).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyExists { key } if key == "ns/default"),
        "{err:?}"
    );
    assert_eq!(store.get("ns/default").unwrap().value, b("a"));
}

async fn missing_keys_are_not_found(h: Harness) {
    let store = h.open().await;
    let r0 = store.revision();
    assert!(matches!(
        store.put("nope", b("x"), Some(1)).await,
        Err(StoreError::NotFound { key }) if key == "nope"
    ));
    assert!(matches!(
        store.put("nope", b("x"), Some(0)).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete("nope", None).await,
        Err(StoreError::NotFound { .. })
    ));
    // Unconditional put creates.
    let kv = store.put("nope", b("x"), None).await.unwrap();
    assert_eq!(kv.create_revision, r0 + 1);
    assert_eq!(store.get("nope").unwrap().value, b("x"));
}

async fn a_transaction_is_all_or_nothing_under_one_revision(h: Harness) {
    let store = h.open().await;
    let r0 = store.revision();
    store.create("b", b("existing")).await.unwrap();

    // Later ops see earlier ones: the put makes `b` exist... and it already did, so the
    // create of `b` refuses the whole transaction.
    let err = store
        .txn(vec![
            Op::Create {
                key: "a".into(),
                value: b("new"),
            },
            Op::Put {
                key: "b".into(),
                value: b("changed"),
                expected: None,
            },
            Op::Create {
                key: "b".into(),
                value: b("dup"),
            },
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(store.get("a"), None, "first op was rolled back");
    assert_eq!(store.get("b").unwrap().value, b("existing"));
    assert_eq!(store.revision(), r0 + 1, "failed txn consumed no revision");

    let mut watch = store.watch("", r0 + 1).unwrap();
    let result = store
        .txn(vec![
            Op::Create {
                key: "a".into(),
                value: b("new"),
            },
            Op::Delete {
                key: "b".into(),
                expected: Some(r0 + 1),
            },
        ])
        .await
        .unwrap();
    assert_eq!(result.revision, r0 + 2, "one revision for the whole txn");
    assert_eq!(result.prev.len(), 2);
    assert_eq!(result.prev[0], None);
    assert_eq!(result.prev[1].as_ref().unwrap().value, b("existing"));
    assert_eq!(store.revision(), r0 + 2);

    let put = next_event(&mut watch).await;
    let delete = next_event(&mut watch).await;
    assert_eq!((put.kind, put.kv.key.as_str()), (EventKind::Put, "a"));
    assert_eq!((delete.kind, delete.kv.key.as_str()), (EventKind::Delete, "b"));
    assert_eq!(put.revision(), r0 + 2);
    assert_eq!(delete.revision(), r0 + 2);
    assert_eq!(delete.kv.value, b("existing"), "delete carries the value");
    assert_eq!(delete.prev.unwrap().mod_revision, r0 + 1);

    // A transaction writing one key twice ends with the last write, under one revision.
    let result = store
        .txn(vec![
            Op::Put {
                key: "c".into(),
                value: b("1"),
                expected: None,
            },
            Op::Put {
                key: "c".into(),
                value: b("2"),
                expected: None,
            },
            Op::Delete {
                key: "a".into(),
                expected: None,
            },
        ])
        .await
        .unwrap();
    assert_eq!(result.revision, r0 + 3);
    assert_eq!(result.prev[0], None);
    assert_eq!(result.prev[2].as_ref().unwrap().value, b("new"));
    assert_eq!(store.get("c").unwrap().value, b("2"));
    assert_eq!(store.get("a"), None);
}

async fn paginated_list_stays_on_its_snapshot_while_writes_happen(h: Harness) {
    let store = h.open().await;
    for i in 0..10 {
        store.create(&format!("pods/p{i:02}"), b("v1")).await.unwrap();
    }
    store.create("other/x", b("v")).await.unwrap();

    let first = store.list("pods/", None, 4, None).unwrap();
    assert_eq!(
        keys(&first.items),
        ["pods/p00", "pods/p01", "pods/p02", "pods/p03"]
    );
    assert!(first.more);
    assert_eq!(first.remaining, 6);
    let snapshot = first.revision;

    // Change the key space under the paginating client.
    store.delete("pods/p05", None).await.unwrap();
    store.create("pods/p04a", b("new")).await.unwrap();
    store.put("pods/p09", b("v2"), None).await.unwrap();

    let mut seen: Vec<String> = first.items.iter().map(|kv| kv.key.clone()).collect();
    let mut last = seen.last().cloned();
    loop {
        let page = store.list("pods/", last.as_deref(), 4, Some(snapshot)).unwrap();
        assert_eq!(page.revision, snapshot);
        for kv in &page.items {
            assert_eq!(kv.value, b("v1"), "{} read from a later revision", kv.key);
        }
        seen.extend(page.items.iter().map(|kv| kv.key.clone()));
        last = seen.last().cloned();
        if !page.more {
            break;
        }
    }
    let expected: Vec<String> = (0..10).map(|i| format!("pods/p{i:02}")).collect();
    assert_eq!(seen, expected);

    // A fresh list sees the writes.
    let now = store.list("pods/", None, 0, None).unwrap();
    assert!(keys(&now.items).contains(&"pods/p04a"));
    assert!(!keys(&now.items).contains(&"pods/p05"));
}

async fn continuing_on_a_snapshot_that_is_not_held_is_gone(h: Harness) {
    let store = h.open_with(|k| k.list_snapshots = 1).await;
    for i in 0..4 {
        store.create(&format!("k{i}"), b("v")).await.unwrap();
    }
    let old = store.list("", None, 1, None).unwrap();
    store.create("k9", b("v")).await.unwrap();
    // A second paginated list takes the only snapshot slot.
    let newer = store.list("", None, 1, None).unwrap();
    assert_ne!(old.revision, newer.revision);

    let err = store.list("", Some("k0"), 1, Some(old.revision)).unwrap_err();
    assert!(matches!(err, StoreError::Expired { requested, .. } if requested == old.revision));
    assert!(err.is_gone());
    assert!(store.list("", Some("k0"), 1, Some(newer.revision)).is_ok());
    assert!(matches!(
        store.list("", None, 1, Some(1_000)),
        Err(StoreError::Expired { .. })
    ));
}

async fn prefixes_are_isolated_in_lists_and_watches(h: Harness) {
    let store = h.open().await;
    let mut watch = store.watch("a/", store.revision()).unwrap();
    store.create("a/x", b("1")).await.unwrap();
    store.create("ab/y", b("2")).await.unwrap();
    store.create("a", b("3")).await.unwrap();
    store.create("b/z", b("4")).await.unwrap();
    store.create("a/z", b("5")).await.unwrap();

    assert_eq!(
        keys(&store.list("a/", None, 0, None).unwrap().items),
        ["a/x", "a/z"]
    );
    // start_after before the prefix must not leak keys from outside it.
    assert_eq!(
        keys(&store.list("a/", Some("0"), 0, None).unwrap().items),
        ["a/x", "a/z"]
    );
    assert_eq!(
        keys(&store.list("a/", Some("a/x"), 0, None).unwrap().items),
        ["a/z"]
    );
    assert_eq!(next_event(&mut watch).await.kv.key, "a/x");
    assert_eq!(next_event(&mut watch).await.kv.key, "a/z");
}

async fn watch_replays_history_then_follows_live_in_order(h: Harness) {
    let opened = h.open().await;
    let r0 = opened.revision();
    let store = opened.shared();
    for i in 1..=5 {
        store.create(&format!("k/{i}"), b("v")).await.unwrap();
    }
    // From revision 2: replay 3..=5, then live.
    let mut watch = store.watch("k/", r0 + 2).unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 6..=40 {
                store.create(&format!("k/{i}"), b("v")).await.unwrap();
            }
            store.delete("k/3", None).await.unwrap();
        })
    };
    let mut revisions = Vec::new();
    for _ in 3..=40 {
        let event = next_event(&mut watch).await;
        assert_eq!(event.kind, EventKind::Put);
        assert_eq!(event.kv.key, format!("k/{}", event.revision() - r0));
        revisions.push(event.revision() - r0);
    }
    assert_eq!(revisions, (3..=40).collect::<Vec<_>>());
    let delete = next_event(&mut watch).await;
    assert_eq!(delete.kind, EventKind::Delete);
    assert_eq!(delete.kv.key, "k/3");
    assert_eq!(delete.revision(), r0 + 41);
    writer.await.unwrap();
}

async fn revisions_and_watch_history_survive_a_restart(h: Harness) {
    let r0;
    {
        let store = h.open().await;
        r0 = store.revision();
        store.create("a", b("1")).await.unwrap();
        store.create("b", b("2")).await.unwrap();
        store.put("a", b("3"), Some(r0 + 1)).await.unwrap();
        store.delete("b", None).await.unwrap();
        store.close().await;
    }
    let store = h.open().await;
    assert_eq!(store.revision(), r0 + 4);
    let a = store.get("a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (r0 + 1, r0 + 3));
    assert_eq!(a.value, b("3"));
    assert_eq!(store.get("b"), None);

    // Older than this store's start: sled replays its log, etcd's store catches up from
    // etcd's history.
    let mut watch = store.watch("", r0 + 1).unwrap();
    let e2 = next_event(&mut watch).await;
    let e3 = next_event(&mut watch).await;
    let e4 = next_event(&mut watch).await;
    assert_eq!((e2.kv.key.as_str(), e2.revision()), ("b", r0 + 2));
    assert_eq!((e3.kv.key.as_str(), e3.revision()), ("a", r0 + 3));
    assert_eq!(e3.prev.unwrap().value, b("1"));
    assert_eq!((e4.kind, e4.revision()), (EventKind::Delete, r0 + 4));
    assert_eq!(e4.kv.value, b("2"), "a delete carries the deleted value");

    let next = store.create("c", b("x")).await.unwrap();
    assert_eq!(next.mod_revision, r0 + 5, "revisions continue after a restart");
    assert_eq!(next_event(&mut watch).await.revision(), r0 + 5);
}

async fn watching_from_a_compacted_revision_is_gone(h: Harness) {
    // History 5: 20 revisions exceed 5 * 1.1, so sled's writer compacts on its own too;
    // either way the horizon ends at 15.
    let store = h.open_with(|k| k.history = 5).await;
    let r0 = store.revision();
    for i in 1..=20 {
        store.create(&format!("k{i}"), b("v")).await.unwrap();
    }
    assert_eq!(store.compact().await, r0 + 15);

    let err = watch_refusal(&*store, "", r0 + 3).await;
    assert!(
        matches!(err, StoreError::Compacted { requested, compacted } if requested == r0 + 3 && compacted == r0 + 15),
        "{err:?}"
    );
    assert!(err.is_gone());

    let mut watch = store.watch("", r0 + 15).unwrap();
    for expected in 16..=20 {
        assert_eq!(next_event(&mut watch).await.revision(), r0 + expected);
    }

    // The horizon survives a restart.
    drop(watch);
    store.close().await;
    drop(store);
    let store = h.open_with(|k| k.history = 5).await;
    let err = watch_refusal(&*store, "", r0 + 14).await;
    assert!(
        matches!(err, StoreError::Compacted { compacted, .. } if compacted == r0 + 15),
        "{err:?}"
    );
}

async fn a_lagging_watcher_still_receives_every_event(h: Harness) {
    // A one-batch broadcast buffer: any watcher that is not polled between commits lags.
    let opened = h.open_with(|k| k.watch_buffer = 1).await;
    let r0 = opened.revision();
    let store = opened.shared();
    let mut watch = store.watch("k/", r0).unwrap();
    for i in 1..=200 {
        store.create(&format!("k/{i:03}"), b("v")).await.unwrap();
    }
    // Keep writing while it catches up.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 201..=400 {
                store.create(&format!("k/{i:03}"), b("v")).await.unwrap();
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    for expected in 1..=400u64 {
        let event = next_event(&mut watch).await;
        assert_eq!(event.revision(), r0 + expected);
        assert_eq!(event.kv.key, format!("k/{expected:03}"));
        if expected % 7 == 0 {
            // Be slow now and then.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    writer.await.unwrap();
}

async fn a_watcher_that_lags_past_the_compacted_log_is_told_gone(h: Harness) {
    let store = h
        .open_with(|k| {
            k.watch_buffer = 1;
            k.history = 5;
        })
        .await;
    let r0 = store.revision();
    let mut watch = store.watch("", r0).unwrap();
    for i in 1..=30 {
        store.create(&format!("k{i}"), b("v")).await.unwrap();
    }
    store.compact().await;
    match next_non_progress(&mut watch).await {
        Some(Err(StoreError::Compacted { requested, compacted })) => {
            assert_eq!(requested, r0);
            assert_eq!(compacted, r0 + 25);
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(watch.next().await.is_none(), "the stream ends after an error");
}

async fn idle_watchers_get_progress_with_the_current_revision(h: Harness) {
    let store = h
        .open_with(|k| k.progress_interval = Duration::from_millis(50))
        .await;
    let r0 = store.revision();
    store.create("a/1", b("v")).await.unwrap();
    let mut watch = store.watch("a/", r0 + 1).unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap();
    assert!(
        matches!(first, Some(Ok(WatchItem::Progress(r))) if r == r0 + 1),
        "{first:?}"
    );

    // Writes elsewhere are not delivered but move the bookmark.
    store.create("b/1", b("v")).await.unwrap();
    store.create("b/2", b("v")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Some(Ok(WatchItem::Progress(r)))) if r == r0 + 3 => break,
            Ok(Some(Ok(WatchItem::Progress(r)))) if r < r0 + 3 => continue,
            other => panic!("expected progress {}, got {other:?}", r0 + 3),
        }
    }
}

async fn concurrent_read_modify_write_never_loses_an_update(h: Harness) {
    const TASKS: usize = 64;
    const INCREMENTS: usize = 10;
    let opened = h.open().await;
    let r0 = opened.revision();
    let store = opened.shared();
    store.create("counter", b("0")).await.unwrap();

    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            for _ in 0..INCREMENTS {
                loop {
                    let current = store.get("counter").unwrap();
                    let n: u64 = std::str::from_utf8(&current.value).unwrap().parse().unwrap();
                    match store
                        .put("counter", b(&(n + 1).to_string()), Some(current.mod_revision))
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let value = store.get("counter").unwrap().value;
    assert_eq!(value, b(&(TASKS * INCREMENTS).to_string()));
    assert_eq!(store.revision(), r0 + 1 + (TASKS * INCREMENTS) as u64);
    assert!(conflicts > 0, "the test did not exercise contention");
}

async fn close_finishes_writes_and_ends_watches(h: Harness) {
    let store = h.open().await;
    let mut watch = store.watch("", store.revision()).unwrap();
    let pending: Vec<_> = (0..50).map(|i| store.create(&format!("k{i}"), b("v"))).collect();
    store.close().await;
    for write in pending {
        write.await.expect("queued writes finish on close");
    }
    assert!(matches!(
        store.create("late", b("v")).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(store.watch("", 0), Err(StoreError::Closed)));
    let mut events = 0;
    let end = loop {
        match next_non_progress(&mut watch).await {
            Some(Ok(_)) => events += 1,
            other => break other,
        }
    };
    assert_eq!(events, 50, "events committed before close are delivered");
    assert!(matches!(end, Some(Err(StoreError::Closed))), "{end:?}");
    assert!(store.get("k49").is_some(), "reads keep working");

    drop(store);
    let store = h.open().await;
    let all: BTreeSet<_> = store
        .list("", None, 0, None)
        .unwrap()
        .items
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(all.len(), 50);
}
