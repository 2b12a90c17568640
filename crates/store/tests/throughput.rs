//! A quick throughput check, not run by default:
//! `cargo test -p rkube-store --release --test throughput -- --ignored --nocapture`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rkube_store::{SledStore, Store, StoreConfig};

async fn run(writers: usize, duration: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(StoreConfig::new(dir.path())).unwrap());
    // A value the size of a small Pod.
    let value = Bytes::from(vec![b'x'; 1024]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while start.elapsed() < duration {
                store
                    .put(&format!("pods/ns/w{w}-{}", i % 100), value.clone(), None)
                    .await
                    .unwrap();
                i += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let stats = store.stats();
    println!(
        "{writers:>3} writers: {:>8.0} txns/s, {:>6.0} fsyncs/s, {:.3} flushes per txn ({} txns)",
        stats.txns as f64 / elapsed,
        stats.flushes as f64 / elapsed,
        stats.flushes as f64 / stats.txns as f64,
        stats.txns,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run by hand"]
async fn throughput() {
    for writers in [1, 16, 64] {
        run(writers, Duration::from_secs(3)).await;
    }
}

/// Durable creates/s and p99 of `create` run by `clients` tasks for `duration`.
async fn creates<F, Fut>(clients: usize, duration: Duration, create: F) -> (f64, Duration)
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let create = create.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while start.elapsed() < duration {
                let began = Instant::now();
                create(format!("pods/n{clients}/c{c}-{i}")).await;
                latencies.push(began.elapsed());
                i += 1;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let rate = latencies.len() as f64 / start.elapsed().as_secs_f64();
    latencies.sort();
    (rate, latencies[latencies.len() * 99 / 100])
}

/// Reads/s of `read` run by `clients` tasks for `duration`.
async fn reads<F, Fut>(clients: usize, duration: Duration, read: F) -> f64
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let read = read.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < duration {
                read(n).await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// The etcd backend against raw etcd with the same clients: put-if-absent transactions,
/// and reads from the store's cache against etcd range reads.
/// `cargo test -p rkube-store --release --test throughput -- --ignored --nocapture etcd`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run by hand"]
async fn etcd_backend_against_raw_etcd() {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    use rkube_store::{EtcdConfig, EtcdStore};
    let etcd = rkube_testing::etcd::Etcd::temp().await.unwrap();
    let value = Bytes::from(vec![b'x'; 1024]);
    let client = etcd.client().await.unwrap();
    let mut config = EtcdConfig::new(vec![etcd.endpoint.clone()]);
    config.compaction_interval = Duration::ZERO;
    let store = Arc::new(EtcdStore::connect(config).await.unwrap());
    println!("{}", etcd.version);
    for clients in [16, 64] {
        let (raw, raw_p99) = {
            let (client, value) = (client.clone(), value.clone());
            creates(clients, Duration::from_secs(5), move |key| {
                let mut kv = client.kv_client();
                let value = value.to_vec();
                async move {
                    let key = format!("/raw/{key}");
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key, value, None)]);
                    assert!(kv.txn(txn).await.unwrap().succeeded());
                }
            })
            .await
        };
        let (rkube, rkube_p99) = {
            let (store, value) = (store.clone(), value.clone());
            creates(clients, Duration::from_secs(5), move |key| {
                let (store, value) = (store.clone(), value.clone());
                async move {
                    store.create(&key, value).await.unwrap();
                }
            })
            .await
        };
        println!(
            "{clients:>3} clients: raw etcd put-if-absent {raw:>7.0}/s p99 {:>5.1} ms; rkube etcd backend create {rkube:>7.0}/s p99 {:>5.1} ms; ratio {:.2}",
            raw_p99.as_secs_f64() * 1000.0,
            rkube_p99.as_secs_f64() * 1000.0,
            rkube / raw
        );
    }
    let keys: Vec<String> = store
        .list("pods/", None, 1000, None)
        .unwrap()
        .items
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    let keys = Arc::new(keys);
    let cache = {
        let (store, keys) = (store.clone(), keys.clone());
        reads(16, Duration::from_secs(3), move |n| {
            let hit = store.get(&keys[n as usize % keys.len()]).is_some();
            assert!(hit);
            async {}
        })
        .await
    };
    let range = {
        let (client, keys) = (client.clone(), keys.clone());
        reads(16, Duration::from_secs(3), move |n| {
            let mut kv = client.kv_client();
            let key = format!("/registry/{}", keys[n as usize % keys.len()]);
            async move {
                assert_eq!(kv.get(key, None).await.unwrap().kvs().len(), 1);
            }
        })
        .await
    };
    println!(
        "16 readers: cache gets {cache:.0}/s, etcd range reads {range:.0}/s, ratio {:.0}",
        cache / range
    );
}
