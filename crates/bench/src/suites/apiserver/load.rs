//! The timed create and get phases: one operation closure per client, driven
//! for a duration or up to a count.

use super::{config_map, etcd_key, rid, OpFn, Rkube, NAMESPACE};
use crate::stats::Phase;
use anyhow::Context;
use etcd_client::{Compare, CompareOp, KvClient, Txn, TxnOp};
use futures::future::{try_join_all, BoxFuture};
use rand::{Rng, SeedableRng};
use rkube_api::core::v1::ConfigMap;
use rkube_api::rpc;
use rkube_api::to_any;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs one op closure per worker. Worker `w` of `W` does operations
/// `w, w+W, w+2W, ...` below `limit` until `duration` has passed.
pub(super) async fn drive(ops: Vec<OpFn>, limit: u64, duration: Duration) -> anyhow::Result<Phase> {
    let workers = ops.len() as u64;
    let start = Instant::now();
    let deadline = start + duration;
    let tasks = ops.into_iter().enumerate().map(|(w, op)| {
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut done = Vec::new();
            let mut seq = w as u64;
            while seq < limit && Instant::now() < deadline {
                let t = Instant::now();
                op(seq).await?;
                latencies.push(t.elapsed());
                done.push(seq);
                seq += workers;
            }
            anyhow::Ok((latencies, done))
        })
    });
    let mut phase = Phase::default();
    for joined in try_join_all(tasks).await.context("a benchmark worker panicked")? {
        let (latencies, done) = joined?;
        phase.ops += done.len() as u64;
        phase.latencies.extend(latencies);
        phase.done.extend(done);
    }
    phase.elapsed = start.elapsed();
    Ok(phase)
}

/// One op closure per client, as `drive` wants them. `make(w)` builds worker
/// `w`'s operation; each call gets its own clone of the worker's connection.
pub(super) fn per_client<C, Op, Fut>(clients: &[C], make: impl Fn(usize) -> Op) -> Vec<OpFn>
where
    C: Clone + Send + Sync + 'static,
    Op: Fn(C, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    clients
        .iter()
        .enumerate()
        .map(|(w, client)| {
            let (client, op) = (client.clone(), make(w));
            Box::new(move |seq: u64| Box::pin(op(client.clone(), seq)) as BoxFuture<'static, _>) as OpFn
        })
        .collect()
}

/// Worker `w`'s random picks in `0..len`, seeded by `w` so that runs repeat.
pub(super) fn random_index(w: usize) -> impl Fn(usize) -> usize + Send + Sync {
    let rng = std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(w as u64));
    move |len| rng.lock().map(|mut r| r.gen_range(0..len)).unwrap_or(0)
}

pub(super) fn rkube_creates(
    clients: &[Rkube],
    namespace: &'static str,
    tag: &str,
    padding: &Arc<String>,
) -> Vec<OpFn> {
    per_client(clients, |_| {
        let (tag, padding) = (tag.to_string(), padding.clone());
        move |mut client: Rkube, seq| {
            let name = format!("{tag}-{seq}");
            let request = rpc::CreateRequest {
                resource: rid::<ConfigMap>(),
                namespace: namespace.into(),
                object: Some(to_any(&config_map(namespace, &name, &padding))),
                dry_run: false,
            };
            async move {
                client
                    .create(request)
                    .await
                    .with_context(|| format!("rkube create {namespace}/{name}"))?;
                Ok(())
            }
        }
    })
}

pub(super) fn rkube_gets(clients: &[Rkube], names: Arc<Vec<String>>) -> Vec<OpFn> {
    per_client(clients, |w| {
        let (names, pick) = (names.clone(), random_index(w));
        move |mut client: Rkube, _| {
            let name = names[pick(names.len())].clone();
            async move {
                let request = rpc::GetRequest {
                    resource: rid::<ConfigMap>(),
                    namespace: NAMESPACE.into(),
                    name: name.clone(),
                };
                client
                    .get(request)
                    .await
                    .with_context(|| format!("rkube get {name}"))?;
                Ok(())
            }
        }
    })
}

/// Create as the Kubernetes apiserver does it on etcd: put if absent.
pub(super) fn etcd_creates(
    clients: &[KvClient],
    namespace: &'static str,
    tag: &str,
    value: &Arc<Vec<u8>>,
) -> Vec<OpFn> {
    per_client(clients, |_| {
        let (tag, value) = (tag.to_string(), value.clone());
        move |mut client: KvClient, seq| {
            let key = etcd_key(namespace, &format!("{tag}-{seq}"));
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), value.as_slice(), None)]);
            async move {
                let resp = client
                    .txn(txn)
                    .await
                    .with_context(|| format!("etcd create {key}"))?;
                anyhow::ensure!(resp.succeeded(), "etcd create {key}: it already exists");
                Ok(())
            }
        }
    })
}

pub(super) fn etcd_puts(
    clients: &[KvClient],
    namespace: &'static str,
    tag: &str,
    value: &Arc<Vec<u8>>,
) -> Vec<OpFn> {
    per_client(clients, |_| {
        let (tag, value) = (tag.to_string(), value.clone());
        move |mut client: KvClient, seq| {
            let key = etcd_key(namespace, &format!("{tag}-{seq}"));
            let value = value.to_vec();
            async move {
                client
                    .put(key.clone(), value, None)
                    .await
                    .with_context(|| format!("etcd put {key}"))?;
                Ok(())
            }
        }
    })
}

pub(super) fn etcd_gets(clients: &[KvClient], names: Arc<Vec<String>>) -> Vec<OpFn> {
    per_client(clients, |w| {
        let (names, pick) = (names.clone(), random_index(w));
        move |mut client: KvClient, _| {
            let key = etcd_key(NAMESPACE, &names[pick(names.len())]);
            async move {
                let resp = client
                    .get(key.clone(), None)
                    .await
                    .with_context(|| format!("etcd get {key}"))?;
                anyhow::ensure!(!resp.kvs().is_empty(), "etcd get {key}: not found");
                Ok(())
            }
        }
    })
}
