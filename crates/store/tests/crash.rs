//! Durability against a process that dies with SIGKILL: every write the store acknowledged
//! must be there after reopening. Also checks the directory lock across processes.
//!
//! The parent test re-runs this test binary as a child that writes as fast as it can and
//! prints each acknowledgement; the parent kills it mid-stream and reopens the directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rkube_store::{SledStore, Store, StoreConfig, StoreError};

const CHILD_DIR_ENV: &str = "RKUBE_STORE_CRASH_CHILD_DIR";

/// Runs only as the child of `acknowledged_writes_survive_kill_9`.
#[test]
#[ignore = "helper process for acknowledged_writes_survive_kill_9"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = Arc::new(SledStore::open(StoreConfig::new(&dir)).unwrap());
        println!("ready");
        let mut writers = Vec::new();
        for w in 0..8 {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                // Bounded, in case the parent dies without killing us.
                let stop = Instant::now() + Duration::from_secs(30);
                let mut i = 0u64;
                while Instant::now() < stop {
                    let key = format!("w{w}/{i}");
                    let value = Bytes::from(format!("value-{w}-{i}"));
                    let kv = store.create(&key, value).await.unwrap();
                    println!("ack {key} {}", kv.mod_revision);
                    i += 1;
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
    });
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_writer", "--ignored", "--nocapture"])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    // Wait until the child holds the directory, then check the lock from this process.
    for line in lines.by_ref() {
        if line.unwrap() == "ready" {
            break;
        }
    }
    match SledStore::open(StoreConfig::new(dir.path())) {
        Err(StoreError::Locked { holder, .. }) => assert_eq!(holder, Some(child.id())),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second process opened a locked directory"),
    }

    let mut acknowledged = BTreeMap::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("ack ") {
            let (key, revision) = rest.split_once(' ').unwrap();
            acknowledged.insert(key.to_string(), revision.parse::<u64>().unwrap());
            if acknowledged.len() >= 2000 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acknowledgements printed before the kill landed still count.
    for line in lines.map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("ack ") {
            let (key, revision) = rest.split_once(' ').unwrap();
            acknowledged.insert(key.to_string(), revision.parse().unwrap());
        }
    }
    assert!(acknowledged.len() >= 2000, "child wrote too little");

    let store = SledStore::open(StoreConfig::new(dir.path())).expect("reopen after kill -9");
    for (key, revision) in &acknowledged {
        let kv = store
            .get(key)
            .unwrap_or_else(|| panic!("acknowledged {key} (revision {revision}) was lost"));
        assert_eq!(kv.mod_revision, *revision, "{key}");
    }
    let max = acknowledged.values().max().copied().unwrap();
    assert!(store.revision() >= max);
    // The change log is as durable as the records.
    let mut watch = store.watch("", 0).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut seen = 0u64;
        while seen < max {
            match watch.next().await {
                Some(Ok(rkube_store::WatchItem::Event(event))) => {
                    seen += 1;
                    assert_eq!(event.revision(), seen, "log has a hole");
                }
                other => panic!("replay stopped at {seen} of {max}: {other:?}"),
            }
        }
    });
}
