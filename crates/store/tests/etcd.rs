//! What only the etcd backend has: etcd going away and coming back, and several stores
//! (apiservers) sharing one etcd.

mod common;

use std::time::{Duration, Instant};

use common::{b, next_event, Harness, Kind, Opened};
use rkube_store::{EtcdConfig, EtcdStore, EventKind, Store, StoreError};

async fn etcd_store(h: &Harness, timeout: Duration) -> EtcdStore {
    let etcd = h.etcd.as_ref().expect("an etcd harness");
    let mut config = EtcdConfig::new(vec![etcd.endpoint.clone()]);
    config.request_timeout = timeout;
    config.compaction_interval = Duration::ZERO;
    EtcdStore::connect(config).await.expect("connect to etcd")
}

/// etcd's space quota full (its NOSPACE alarm): writes fail with StorageFull, which names
/// etcd and what to do about it, and reads go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_etcd_quota_is_storage_full_and_reads_go_on() {
    let etcd = rkube_testing::etcd::Etcd::temp_with_flags(&["--quota-backend-bytes", "1048576"])
        .await
        .expect("start etcd (install Debian's etcd-server: apt-get install etcd-server)");
    let mut config = EtcdConfig::new(vec![etcd.endpoint.clone()]);
    config.compaction_interval = Duration::ZERO;
    let store = EtcdStore::connect(config).await.expect("connect to etcd");
    store
        .create("k/first", b("v"))
        .await
        .expect("a write within the quota");
    let value = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let mut refused = None;
    for i in 0..200 {
        if let Err(e) = store.put(&format!("k/{i}"), value.clone(), None).await {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("etcd refused a write past its 1 MiB quota");
    assert!(refused.is_storage_full(), "{refused}");
    let message = refused.to_string();
    assert!(message.contains(&etcd.endpoint), "names etcd: {message}");
    assert!(
        message.contains("etcdctl alarm disarm"),
        "says what to do: {message}"
    );
    assert_eq!(store.get("k/first").map(|kv| kv.value), Some(b("v")));
    assert!(store.list("k/", None, 0, None).unwrap().items.len() > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_writes_fail_fast_and_clearly_reads_go_on_and_the_cache_resumes_without_gaps() {
    let mut h = Harness::new(Kind::Etcd).await;
    let store = etcd_store(&h, Duration::from_secs(2)).await;
    let r0 = store.revision();
    store.create("pods/a", b("1")).await.unwrap();
    let mut watch = store.watch("pods/", r0).unwrap();
    assert_eq!(next_event(&mut watch).await.kv.key, "pods/a");

    h.etcd.as_mut().unwrap().kill();
    let started = Instant::now();
    let err = store.create("pods/b", b("2")).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with("storage unavailable: etcd at http://127.0.0.1:"),
        "{message}"
    );
    assert!(message.contains("majority of etcd members"), "{message}");
    assert!(took < Duration::from_secs(4), "the write hung for {took:?}");
    // Reads are served from the cache meanwhile.
    assert_eq!(store.get("pods/a").unwrap().value, b("1"));
    assert_eq!(store.list("pods/", None, 0, None).unwrap().items.len(), 1);

    h.etcd.as_mut().unwrap().restart().await.unwrap();
    // Written by another apiserver while this store's watch is still reconnecting.
    let other = etcd_store(&h, Duration::from_secs(5)).await;
    for i in 0..20 {
        other.create(&format!("pods/o{i:02}"), b("x")).await.unwrap();
    }
    rkube_testing::eventually(
        "a write through the store after etcd is back",
        Duration::from_secs(20),
        || async { Ok(store.create("pods/c", b("3")).await.map(|_| true)?) },
    )
    .await
    .unwrap();

    // The watch saw every change, in order, none twice.
    let mut seen = Vec::new();
    let mut last = r0 + 1;
    while seen.len() < 21 {
        let event = next_event(&mut watch).await;
        assert!(
            event.revision() > last,
            "revision {} after {last}",
            event.revision()
        );
        last = event.revision();
        seen.push(event.kv.key);
    }
    let mut expected: Vec<String> = (0..20).map(|i| format!("pods/o{i:02}")).collect();
    expected.push("pods/c".into());
    assert_eq!(seen, expected);
    assert!(store.stats().reconnects >= 1, "{:?}", store.stats());
    assert_eq!(store.list("pods/", None, 0, None).unwrap().items.len(), 22);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_etcd_see_each_others_writes_in_order() {
    let h = Harness::new(Kind::Etcd).await;
    let first = h.open().await;
    let second = h.open().await;
    let Opened::Etcd(second_store, _) = &second else {
        unreachable!()
    };
    let r0 = first.revision();
    let mut on_first = first.watch("cm/", r0).unwrap();

    // Writes through both, interleaved and concurrent.
    let writers: Vec<_> = [first.shared(), second.shared()]
        .into_iter()
        .enumerate()
        .map(|(n, store)| {
            tokio::spawn(async move {
                for i in 0..25 {
                    store.create(&format!("cm/s{n}-{i:02}"), b("v")).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let mut last = r0;
    let mut keys = std::collections::BTreeSet::new();
    for _ in 0..50 {
        let event = next_event(&mut on_first).await;
        assert_eq!(event.kind, EventKind::Put);
        assert_eq!(
            event.revision(),
            last + 1,
            "a gap or a reordering at {}",
            event.kv.key
        );
        last = event.revision();
        keys.insert(event.kv.key);
    }
    assert_eq!(keys.len(), 50);

    // A consistent read on the second sees a write just made through the first.
    let written = first.create("cm/fresh", b("v")).await.unwrap();
    let at = second.sync().await.unwrap();
    assert!(at >= written.mod_revision);
    assert_eq!(second.get("cm/fresh").unwrap().mod_revision, written.mod_revision);

    // A stale update through the second is a Conflict, whichever store wrote last.
    let err = second
        .put("cm/fresh", b("w"), Some(written.mod_revision - 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    second_store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_at_start_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = EtcdConfig::new(vec![format!("http://127.0.0.1:{port}")]);
    config.request_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let err = EtcdStore::connect(config).await.err().expect("no etcd there");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiservers_take_turns_compacting_etcd_every_interval() {
    let h = Harness::new(Kind::Etcd).await;
    let endpoint = h.etcd.as_ref().unwrap().endpoint.clone();
    let compacting = || {
        let mut config = EtcdConfig::new(vec![endpoint.clone()]);
        config.compaction_interval = Duration::from_secs(1);
        EtcdStore::connect(config)
    };
    let (first, second) = (compacting().await.unwrap(), compacting().await.unwrap());
    let r0 = first.revision();
    for i in 0..5 {
        first.create(&format!("k{i}"), b("v")).await.unwrap();
    }
    // The first turn only records the revision; the next compacts to it.
    rkube_testing::eventually(
        "etcd compacted by the apiservers",
        Duration::from_secs(15),
        || async {
            let fresh = h.open().await;
            let refused = match fresh.watch("", r0) {
                Err(e) => Some(e),
                Ok(mut watch) => match tokio::time::timeout(Duration::from_secs(2), watch.next()).await {
                    Ok(Some(Err(e))) => Some(e),
                    _ => None,
                },
            };
            Ok(matches!(refused, Some(StoreError::Compacted { .. })))
        },
    )
    .await
    .unwrap();
    let compactions = first.stats().compactions + second.stats().compactions;
    assert!(compactions >= 1, "{:?} {:?}", first.stats(), second.stats());
    // The compactor's bookkeeping key is not an object.
    assert_eq!(first.list("", None, 0, None).unwrap().items.len(), 5);
    assert_eq!(second.list("", None, 0, None).unwrap().items.len(), 5);
}
