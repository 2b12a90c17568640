//! The list phase: one full list of the loaded objects, timed several times.

use super::{etcd_key, rid, Rkube, LIST_NAMESPACE, LIST_RUNS};
use anyhow::Context;
use etcd_client::{GetOptions, KvClient};
use rkube_api::core::v1::ConfigMap;
use rkube_api::rpc;
use std::time::{Duration, Instant};

pub(super) fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort_unstable();
    runs[runs.len() / 2]
}

/// Median time of a full, unpaginated list of the list namespace.
pub(super) async fn rkube_list(client: &Rkube, expected: u64) -> anyhow::Result<Duration> {
    let mut runs = Vec::new();
    for _ in 0..LIST_RUNS {
        let mut client = client.clone();
        let t = Instant::now();
        let resp = client
            .list(rpc::ListRequest {
                resource: rid::<ConfigMap>(),
                namespace: LIST_NAMESPACE.into(),
                ..Default::default()
            })
            .await
            .context("rkube list")?
            .into_inner();
        runs.push(t.elapsed());
        anyhow::ensure!(
            resp.items.len() as u64 == expected,
            "rkube listed {} objects, not {expected}",
            resp.items.len()
        );
    }
    Ok(median(runs))
}

pub(super) async fn etcd_list(client: &KvClient, expected: u64) -> anyhow::Result<Duration> {
    let prefix = etcd_key(LIST_NAMESPACE, "");
    let mut runs = Vec::new();
    for _ in 0..LIST_RUNS {
        let mut client = client.clone();
        let t = Instant::now();
        let resp = client
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .context("etcd range")?;
        runs.push(t.elapsed());
        anyhow::ensure!(
            resp.kvs().len() as u64 == expected,
            "etcd listed {} keys, not {expected}",
            resp.kvs().len()
        );
    }
    Ok(median(runs))
}
