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
