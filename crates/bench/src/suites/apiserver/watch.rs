//! The watch phase: creates written one by one, each carrying its send time,
//! and the delay until every watcher has seen it.

use super::{config_map, etcd_clients, etcd_key, rid, rkube_clients, Rkube, NAMESPACE, WATCH_GAP};
use crate::stats::Samples;
use anyhow::Context;
use etcd_client::{Compare, CompareOp, EventType, Txn, TxnOp, WatchOptions};
use futures::future::try_join_all;
use rkube_api::core::v1::ConfigMap;
use rkube_api::rpc;
use rkube_api::{from_any, to_any};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(super) fn nanos_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

pub(super) fn since_nanos(sent: u128, now: u128) -> Duration {
    Duration::from_nanos(now.saturating_sub(sent).try_into().unwrap_or(u64::MAX))
}

/// How long the watchers wait for all events at most.
pub(super) fn watch_deadline(events: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + WATCH_GAP * events as u32 + Duration::from_secs(30)
}

/// Merges the watchers' samples and checks every watcher saw every event.
pub(super) async fn collect_watchers(
    who: &str,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Vec<Duration>>>>,
    events: u64,
) -> anyhow::Result<Samples> {
    let mut all = Samples::default();
    for joined in try_join_all(tasks)
        .await
        .with_context(|| format!("a {who} watcher panicked"))?
    {
        let got = joined?;
        anyhow::ensure!(
            got.len() as u64 == events,
            "a {who} watcher received {} of {events} events in time",
            got.len()
        );
        all.extend(got);
    }
    Ok(all)
}

pub(super) async fn rkube_watch(
    url: &str,
    watchers: usize,
    events: u64,
    padding: &str,
) -> anyhow::Result<Samples> {
    let mut clients = rkube_clients(url, watchers + 1).await?;
    let mut writer = clients.pop().context("no writer")?;
    let revision = writer
        .list(rpc::ListRequest {
            resource: rid::<ConfigMap>(),
            namespace: NAMESPACE.into(),
            limit: 1,
            ..Default::default()
        })
        .await
        .context("rkube list for the watch revision")?
        .into_inner()
        .resource_version;
    let mut streams = Vec::new();
    for mut c in clients {
        let stream = c
            .watch(rpc::WatchRequest {
                resource: rid::<ConfigMap>(),
                namespace: NAMESPACE.into(),
                resource_version: revision.clone(),
                ..Default::default()
            })
            .await
            .context("rkube watch")?
            .into_inner();
        streams.push(stream);
    }
    let deadline = watch_deadline(events);
    let tasks = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while (latencies.len() as u64) < events {
                    let Ok(next) = tokio::time::timeout_at(deadline, stream.message()).await else {
                        break;
                    };
                    let Some(event) = next.context("rkube watch stream failed")? else {
                        anyhow::bail!("rkube watch stream ended early");
                    };
                    let now = nanos_now();
                    if event.r#type != "ADDED" {
                        continue;
                    }
                    let cm: ConfigMap =
                        from_any(event.object.as_ref().context("watch event without object")?)?;
                    if let Some(sent) = cm.data.get("sent").and_then(|s| s.parse().ok()) {
                        latencies.push(since_nanos(sent, now));
                    }
                }
                Ok(latencies)
            })
        })
        .collect();
    write_stamped(&writer, "watch", events, padding).await?;
    collect_watchers("rkube", tasks, events).await
}

/// Creates `events` ConfigMaps `PREFIX-i`, `WATCH_GAP` apart, each carrying its send time
/// in `data.sent`.
pub(super) async fn write_stamped(
    writer: &Rkube,
    prefix: &str,
    events: u64,
    padding: &str,
) -> anyhow::Result<()> {
    let mut writer = writer.clone();
    // The watch call returns when the server has registered the watcher;
    // a short pause lets every stream settle before the first write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..events {
        let name = format!("{prefix}-{i}");
        let mut cm = config_map(NAMESPACE, &name, padding);
        cm.data.insert("sent".into(), nanos_now().to_string());
        writer
            .create(rpc::CreateRequest {
                resource: rid::<ConfigMap>(),
                namespace: NAMESPACE.into(),
                object: Some(to_any(&cm)),
                dry_run: false,
            })
            .await
            .with_context(|| format!("rkube create {name}"))?;
        tokio::time::sleep(WATCH_GAP).await;
    }
    Ok(())
}

pub(super) async fn etcd_watch(
    endpoint: &str,
    watchers: usize,
    events: u64,
    value_bytes: usize,
) -> anyhow::Result<Samples> {
    let mut writer = etcd_clients(endpoint, 1).await?.pop().context("no writer")?;
    let prefix = etcd_key(NAMESPACE, "");
    let mut streams = Vec::new();
    for _ in 0..watchers {
        let client = etcd_client::Client::connect([endpoint], None)
            .await
            .with_context(|| format!("cannot connect to etcd at {endpoint}"))?;
        let mut stream = client
            .watch_client()
            .watch(prefix.clone(), Some(WatchOptions::new().with_prefix()))
            .await
            .context("etcd watch")?;
        // The first response confirms the watch is created.
        let created = stream
            .message()
            .await
            .context("etcd watch")?
            .context("etcd watch ended")?;
        anyhow::ensure!(created.created(), "etcd's first watch response is not `created`");
        streams.push((client, stream));
    }
    let deadline = watch_deadline(events);
    let tasks = streams
        .into_iter()
        .map(|(client, mut stream)| {
            tokio::spawn(async move {
                let _client = client;
                let mut latencies = Vec::new();
                while (latencies.len() as u64) < events {
                    let Ok(next) = tokio::time::timeout_at(deadline, stream.message()).await else {
                        break;
                    };
                    let Some(resp) = next.context("etcd watch stream failed")? else {
                        anyhow::bail!("etcd watch stream ended early");
                    };
                    let now = nanos_now();
                    for event in resp.events() {
                        if event.event_type() != EventType::Put {
                            continue;
                        }
                        let sent = event
                            .kv()
                            .and_then(|kv| kv.value().get(..39))
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .and_then(|s| s.parse().ok());
                        if let Some(sent) = sent {
                            latencies.push(since_nanos(sent, now));
                        }
                    }
                }
                Ok(latencies)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..events {
        let key = etcd_key(NAMESPACE, &format!("watch-{i}"));
        // The send time, zero-padded to 39 digits (u128), then filler.
        let mut value = format!("{:039}", nanos_now()).into_bytes();
        value.resize(value_bytes.max(39), b'x');
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), value, None)]);
        let resp = writer
            .txn(txn)
            .await
            .with_context(|| format!("etcd create {key}"))?;
        anyhow::ensure!(resp.succeeded(), "etcd create {key}: it already exists");
        tokio::time::sleep(WATCH_GAP).await;
    }
    collect_watchers("etcd", tasks, events).await
}
