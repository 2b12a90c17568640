//! The apiserver against etcd, the store Kubernetes' apiserver sits on.
//!
//! Both run on this machine with their data side by side (same filesystem)
//! and both acknowledge a write only after fsync. rkube's apiserver runs
//! in-process on its own tokio runtime (two worker threads, like a separate
//! process on this 2-core machine); etcd is Debian's `etcd` with default
//! settings. Every client is its own connection (its own HTTP/2 channel), on
//! both sides.
//!
//! Phases, per concurrency level (`--clients`, default 1, 16, 64), each
//! `--seconds` long:
//! * creates: distinct new ConfigMaps of ~1 KiB encoded. etcd does what the
//!   Kubernetes apiserver asks of it on create, a transaction "put if
//!   create_revision == 0"; plain etcd puts are reported for reference;
//! * gets of random objects created in the create phase.
//!
//! Then a full list of `--objects` objects (created first, with 16 clients,
//! in a namespace of their own; median of 5 lists) and the delivery latency
//! of `--watch-events` creates, written one by one 10 ms apart, to
//! `--watchers` watchers, each event carrying its send time.

use crate::etcd::Etcd;
use crate::stats::{Phase, Samples};
use crate::Args;
use anyhow::Context;
use etcd_client::{Compare, CompareOp, EventType, GetOptions, KvClient, Txn, TxnOp, WatchOptions};
use futures::future::{try_join_all, BoxFuture};
use rand::{Rng, SeedableRng};
use rkube_api::core::v1::{ConfigMap, Namespace};
use rkube_api::rpc::{self, api_server_client::ApiServerClient};
use rkube_api::{from_any, to_any, Resource};
use std::fmt::Write as _;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::{Channel, Endpoint};

/// Where the create, get and watch phases write (what the brief's watchers
/// watch).
const NAMESPACE: &str = "default";
/// The list phase's objects live alone here, so the list returns exactly them.
const LIST_NAMESPACE: &str = "bench-list";
/// Encoded size of each object (rkube: the ConfigMap as the client sends
/// it; etcd: the value).
const OBJECT_BYTES: usize = 1024;
/// Clients that load the objects of the list phase.
const LOAD_CLIENTS: usize = 16;
/// Lists timed; the median is reported.
const LIST_RUNS: usize = 5;
/// Pause between the watch phase's writes.
const WATCH_GAP: Duration = Duration::from_millis(10);
/// Upper bound of any count-bounded phase.
const MAX_PHASE: Duration = Duration::from_secs(600);

type Rkube = ApiServerClient<Channel>;
/// One operation number `seq`, on the worker's own connection.
type OpFn = Box<dyn Fn(u64) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

pub fn run(args: &Args) -> anyhow::Result<String> {
    std::fs::create_dir_all(&args.tmp_dir)
        .with_context(|| format!("cannot create {}", args.tmp_dir.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("rkube-bench-")
        .tempdir_in(&args.tmp_dir)
        .with_context(|| format!("cannot create a directory in {}", args.tmp_dir.display()))?;
    let rkube_dir = dir.path().join("rkube");
    let etcd_dir = dir.path().join("etcd");
    for d in [&rkube_dir, &etcd_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let facts = machine_facts(&rkube_dir, &etcd_dir)?;

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("apiserver")
        .enable_all()
        .build()
        .context("cannot build the apiserver's runtime")?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-client")
        .enable_all()
        .build()
        .context("cannot build the clients' runtime")?;
    let server = server_rt
        .block_on(rkube_apiserver::start(rkube_apiserver::Config::local(&rkube_dir)))
        .context("cannot start rkube's apiserver")?;
    let url = server.url();
    eprintln!("rkube apiserver on {url}, data in {}", rkube_dir.display());
    let measured = client_rt.block_on(async {
        let etcd = Etcd::start(&args.etcd_bin, &etcd_dir).await?;
        eprintln!(
            "{} on {}, data in {}",
            etcd.version,
            etcd.endpoint,
            etcd_dir.display()
        );
        let version = etcd.version.clone();
        let results = measure(args, &url, &etcd.endpoint).await;
        drop(etcd);
        results.map(|r| (r, version))
    });
    let stopped = server_rt.block_on(server.stop());
    drop(client_rt);
    drop(server_rt);
    let (results, etcd_version) = measured?;
    stopped.context("stopping rkube's apiserver")?;
    Ok(render(args, &facts, &etcd_version, &results))
}

/// Everything measured, for the table.
struct Results {
    object_bytes: usize,
    stored_bytes: usize,
    levels: Vec<Level>,
    list_rkube: Duration,
    list_etcd: Duration,
    load_rkube: Phase,
    load_etcd: Phase,
    watch_rkube: Samples,
    watch_etcd: Samples,
}

struct Level {
    clients: usize,
    rkube_create: Phase,
    etcd_create: Phase,
    etcd_put: Phase,
    rkube_get: Phase,
    etcd_get: Phase,
}

async fn measure(args: &Args, url: &str, etcd: &str) -> anyhow::Result<Results> {
    let seconds = Duration::from_secs(args.seconds);
    let (padding, object_bytes) = padding_for(OBJECT_BYTES);
    let value = Arc::new(vec![b'x'; object_bytes]);
    let max_clients = args.clients.iter().copied().max().unwrap_or(1);
    let rk = rkube_clients(url, max_clients.max(LOAD_CLIENTS)).await?;
    let et = etcd_clients(etcd, max_clients.max(LOAD_CLIENTS)).await?;

    eprintln!("warm-up");
    let warm = Duration::from_millis(500);
    drive(
        rkube_creates(&rk[..1], NAMESPACE, "warm", &padding),
        u64::MAX,
        warm,
    )
    .await?;
    drive(etcd_creates(&et[..1], NAMESPACE, "warm", &value), u64::MAX, warm).await?;
    let stored_bytes = {
        let mut c = rk[0].clone();
        let got = c
            .get(rpc::GetRequest {
                resource: rid::<ConfigMap>(),
                namespace: NAMESPACE.into(),
                name: "warm-0".into(),
            })
            .await
            .context("rkube get warm-0")?;
        got.into_inner().object.map(|o| o.value.len()).unwrap_or(0)
    };

    let mut levels = Vec::new();
    for &n in &args.clients {
        let tag = format!("c{n}");
        eprintln!("{n} clients: creates");
        let rkube_create = drive(
            rkube_creates(&rk[..n], NAMESPACE, &tag, &padding),
            u64::MAX,
            seconds,
        )
        .await?;
        let etcd_create = drive(etcd_creates(&et[..n], NAMESPACE, &tag, &value), u64::MAX, seconds).await?;
        let etcd_put = drive(
            etcd_puts(&et[..n], NAMESPACE, &format!("p{n}"), &value),
            u64::MAX,
            seconds,
        )
        .await?;
        eprintln!("{n} clients: gets");
        let names = |p: &Phase| -> anyhow::Result<Arc<Vec<String>>> {
            anyhow::ensure!(!p.done.is_empty(), "no object was created with {n} clients");
            Ok(Arc::new(p.done.iter().map(|s| format!("{tag}-{s}")).collect()))
        };
        let rkube_get = drive(rkube_gets(&rk[..n], names(&rkube_create)?), u64::MAX, seconds).await?;
        let etcd_get = drive(etcd_gets(&et[..n], names(&etcd_create)?), u64::MAX, seconds).await?;
        levels.push(Level {
            clients: n,
            rkube_create,
            etcd_create,
            etcd_put,
            rkube_get,
            etcd_get,
        });
    }

    eprintln!("list: loading {} objects into each", args.objects);
    create_namespace(&rk[0], LIST_NAMESPACE).await?;
    let load_rkube = drive(
        rkube_creates(&rk[..LOAD_CLIENTS], LIST_NAMESPACE, "l", &padding),
        args.objects,
        MAX_PHASE,
    )
    .await?;
    let load_etcd = drive(
        etcd_creates(&et[..LOAD_CLIENTS], LIST_NAMESPACE, "l", &value),
        args.objects,
        MAX_PHASE,
    )
    .await?;
    for (who, p) in [("rkube", &load_rkube), ("etcd", &load_etcd)] {
        anyhow::ensure!(
            p.ops == args.objects,
            "{who} loaded only {} of {} objects in {MAX_PHASE:?}",
            p.ops,
            args.objects
        );
    }
    eprintln!("list: timing");
    let list_rkube = rkube_list(&rk[0], args.objects).await?;
    let list_etcd = etcd_list(&et[0], args.objects).await?;
    drop(rk);
    drop(et);

    eprintln!("watch: {} watchers, {} events", args.watchers, args.watch_events);
    let watch_rkube = rkube_watch(url, args.watchers, args.watch_events, &padding).await?;
    let watch_etcd = etcd_watch(etcd, args.watchers, args.watch_events, object_bytes).await?;

    Ok(Results {
        object_bytes,
        stored_bytes,
        levels,
        list_rkube,
        list_etcd,
        load_rkube,
        load_etcd,
        watch_rkube,
        watch_etcd,
    })
}

/// Runs one op closure per worker. Worker `w` of `W` does operations
/// `w, w+W, w+2W, ...` below `limit` until `duration` has passed.
async fn drive(ops: Vec<OpFn>, limit: u64, duration: Duration) -> anyhow::Result<Phase> {
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

fn rid<K: Resource>() -> Option<rpc::ResourceId> {
    Some(rpc::ResourceId {
        group: K::INFO.group.into(),
        resource: K::INFO.plural.into(),
    })
}

fn etcd_key(namespace: &str, name: &str) -> String {
    format!("/registry/configmaps/{namespace}/{name}")
}

fn config_map(namespace: &str, name: &str, padding: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.set_type_meta();
    cm.metadata_mut().name = name.into();
    cm.metadata_mut().namespace = namespace.into();
    cm.data.insert("payload".into(), padding.into());
    cm
}

/// The padding that makes a typical benchmark ConfigMap encode to about
/// `target` bytes, and the size it then has.
fn padding_for(target: usize) -> (Arc<String>, usize) {
    let size =
        |n: usize| prost::Message::encode_to_vec(&config_map(NAMESPACE, "c16-12345", &"x".repeat(n))).len();
    let mut n = target.saturating_sub(size(0));
    while n > 0 && size(n) > target {
        n -= 1;
    }
    (Arc::new("x".repeat(n)), size(n))
}

fn nanos_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn since_nanos(sent: u128, now: u128) -> Duration {
    Duration::from_nanos(now.saturating_sub(sent).try_into().unwrap_or(u64::MAX))
}

async fn rkube_clients(url: &str, n: usize) -> anyhow::Result<Vec<Rkube>> {
    let endpoint = Endpoint::from_shared(url.to_string()).context("bad apiserver url")?;
    try_join_all((0..n).map(|_| {
        let endpoint = endpoint.clone();
        async move {
            let channel = endpoint
                .connect()
                .await
                .with_context(|| format!("cannot connect to rkube's apiserver at {}", endpoint.uri()))?;
            anyhow::Ok(ApiServerClient::new(channel).max_decoding_message_size(usize::MAX))
        }
    }))
    .await
}

async fn etcd_clients(endpoint: &str, n: usize) -> anyhow::Result<Vec<KvClient>> {
    try_join_all((0..n).map(|_| async move {
        let client = etcd_client::Client::connect([endpoint], None)
            .await
            .with_context(|| format!("cannot connect to etcd at {endpoint}"))?;
        anyhow::Ok(client.kv_client().max_decoding_message_size(usize::MAX))
    }))
    .await
}

/// One op closure per client, as `drive` wants them. `make(w)` builds worker
/// `w`'s operation; each call gets its own clone of the worker's connection.
fn per_client<C, Op, Fut>(clients: &[C], make: impl Fn(usize) -> Op) -> Vec<OpFn>
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
fn random_index(w: usize) -> impl Fn(usize) -> usize + Send + Sync {
    let rng = std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(w as u64));
    move |len| rng.lock().map(|mut r| r.gen_range(0..len)).unwrap_or(0)
}

fn rkube_creates(clients: &[Rkube], namespace: &'static str, tag: &str, padding: &Arc<String>) -> Vec<OpFn> {
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

fn rkube_gets(clients: &[Rkube], names: Arc<Vec<String>>) -> Vec<OpFn> {
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
fn etcd_creates(clients: &[KvClient], namespace: &'static str, tag: &str, value: &Arc<Vec<u8>>) -> Vec<OpFn> {
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

fn etcd_puts(clients: &[KvClient], namespace: &'static str, tag: &str, value: &Arc<Vec<u8>>) -> Vec<OpFn> {
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

fn etcd_gets(clients: &[KvClient], names: Arc<Vec<String>>) -> Vec<OpFn> {
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

async fn create_namespace(client: &Rkube, name: &str) -> anyhow::Result<()> {
    let mut ns = Namespace::default();
    ns.set_type_meta();
    ns.metadata_mut().name = name.into();
    client
        .clone()
        .create(rpc::CreateRequest {
            resource: rid::<Namespace>(),
            namespace: String::new(),
            object: Some(to_any(&ns)),
            dry_run: false,
        })
        .await
        .with_context(|| format!("rkube create namespace {name}"))?;
    Ok(())
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort_unstable();
    runs[runs.len() / 2]
}

/// Median time of a full, unpaginated list of the list namespace.
async fn rkube_list(client: &Rkube, expected: u64) -> anyhow::Result<Duration> {
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

async fn etcd_list(client: &KvClient, expected: u64) -> anyhow::Result<Duration> {
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

/// How long the watchers wait for all events at most.
fn watch_deadline(events: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + WATCH_GAP * events as u32 + Duration::from_secs(30)
}

/// Merges the watchers' samples and checks every watcher saw every event.
async fn collect_watchers(
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

async fn rkube_watch(url: &str, watchers: usize, events: u64, padding: &str) -> anyhow::Result<Samples> {
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
    // The watch call returns when the server has registered the watcher;
    // a short pause lets every stream settle before the first write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..events {
        let name = format!("watch-{i}");
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
    collect_watchers("rkube", tasks, events).await
}

async fn etcd_watch(
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

/// What the reader needs to judge the numbers.
struct Facts {
    cpus: usize,
    cpu_model: String,
    kernel: String,
    filesystem: String,
    same_fs: bool,
}

fn machine_facts(rkube_dir: &Path, etcd_dir: &Path) -> anyhow::Result<Facts> {
    let dev = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.dev())
            .with_context(|| format!("cannot stat {}", p.display()))
    };
    let same_fs = dev(rkube_dir)? == dev(etcd_dir)?;
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let dir = rkube_dir
        .parent()
        .unwrap_or(rkube_dir)
        .to_string_lossy()
        .to_string();
    let df = run("df", &["-T", "-h", &dir]);
    let filesystem = df
        .lines()
        .nth(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [dev, fstype, size, .., mount] => {
                    format!("{fstype} on {dev} ({size}), mounted on {mount}; data under {dir}")
                }
                _ => l.to_string(),
            }
        })
        .unwrap_or_else(|| format!("unknown (df failed); data under {dir}"));
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Ok(Facts {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu_model,
        kernel: run("uname", &["-sr"]),
        filesystem,
        same_fs,
    })
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

fn render(args: &Args, facts: &Facts, etcd_version: &str, r: &Results) -> String {
    let mut s = String::new();
    let mut row = |metric: &str, rk: f64, et: f64, digits: usize| {
        let fmt = |v: f64| {
            if v.is_finite() {
                format!("{v:.digits$}")
            } else {
                "-".into()
            }
        };
        let _ = writeln!(s, "| {metric} | {} | {} | {} |", fmt(rk), fmt(et), ratio(rk, et));
    };
    row(
        "object size, bytes (client-encoded ConfigMap / etcd value)",
        r.object_bytes as f64,
        r.object_bytes as f64,
        0,
    );
    for l in &r.levels {
        let n = l.clients;
        let ops = [
            ("creates", "create", &l.rkube_create, &l.etcd_create),
            ("gets", "get", &l.rkube_get, &l.etcd_get),
        ];
        for (plural, singular, rk, et) in ops {
            row(
                &format!("{plural}/s, {n} clients"),
                rk.per_second(),
                et.per_second(),
                0,
            );
            for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
                row(
                    &format!("{singular} {name} ms, {n} clients"),
                    rk.latencies.quantile_ms(q),
                    et.latencies.quantile_ms(q),
                    2,
                );
            }
            // a Kubernetes create is etcd's put-if-absent; plain puts are the reference
            if singular == "create" {
                row(
                    &format!("(ref.) creates/s vs etcd plain put/s, {n} clients"),
                    rk.per_second(),
                    l.etcd_put.per_second(),
                    0,
                );
                row(
                    &format!("(ref.) create p99 ms vs etcd plain put p99, {n} clients"),
                    rk.latencies.quantile_ms(0.99),
                    l.etcd_put.latencies.quantile_ms(0.99),
                    2,
                );
            }
        }
    }
    let o = args.objects;
    row(
        &format!("list of {o} objects, ms (median of {LIST_RUNS})"),
        r.list_rkube.as_secs_f64() * 1e3,
        r.list_etcd.as_secs_f64() * 1e3,
        1,
    );
    row(
        &format!("loading those {o} objects, creates/s ({LOAD_CLIENTS} clients)"),
        r.load_rkube.per_second(),
        r.load_etcd.per_second(),
        0,
    );
    let w = args.watchers;
    row(
        &format!("watch delivery p50 ms, {w} watchers"),
        r.watch_rkube.quantile_ms(0.5),
        r.watch_etcd.quantile_ms(0.5),
        2,
    );
    row(
        &format!("watch delivery p99 ms, {w} watchers"),
        r.watch_rkube.quantile_ms(0.99),
        r.watch_etcd.quantile_ms(0.99),
        2,
    );
    row(
        "watch deliveries measured",
        r.watch_rkube.len() as f64,
        r.watch_etcd.len() as f64,
        0,
    );
    let table = s;

    let mut out = String::new();
    let _ = writeln!(out, "## apiserver: rkube vs etcd\n");
    let _ = writeln!(
        out,
        "Machine: {} CPUs ({}), {}.",
        facts.cpus, facts.cpu_model, facts.kernel
    );
    let _ = writeln!(
        out,
        "Data: {}; rkube's and etcd's data directories are {}.",
        facts.filesystem,
        if facts.same_fs {
            "on the same filesystem"
        } else {
            "on DIFFERENT filesystems"
        }
    );
    let _ = writeln!(
        out,
        "etcd: {etcd_version}, default settings (fsync on every commit). rkube: the apiserver in-process \
         on its own 2-thread runtime, sled store, durable (group-committed fsync) writes. \
         Every client has its own connection; {} s per timed phase.\n",
        args.seconds
    );
    let _ = writeln!(
        out,
        "etcd's create is a transaction (put if create_revision == 0), as the Kubernetes apiserver does; \
         `(ref.)` rows compare with plain etcd puts. rkube objects grow on the server (uid, timestamps, \
         resourceVersion): stored {} bytes. Rates: higher is better; times: lower is better.\n",
        r.stored_bytes
    );
    let _ = writeln!(out, "| metric | rkube | etcd | rkube/etcd |\n|---|---|---|---|");
    out.push_str(&table);
    if let Some(l) = r.levels.iter().find(|l| l.clients == 16) {
        let (rk, et) = (l.rkube_create.per_second(), l.etcd_create.per_second());
        let (rk99, et99) = (
            l.rkube_create.latencies.quantile_ms(0.99),
            l.etcd_create.latencies.quantile_ms(0.99),
        );
        let met = rk >= et && rk99 <= et99;
        let _ = writeln!(
            out,
            "\nTarget (durable creates/s with 16 clients >= etcd's, p99 no worse): **{}** \
             ({rk:.0} vs {et:.0} creates/s; p99 {rk99:.2} vs {et99:.2} ms). Against plain etcd puts: {:.0} puts/s, p99 {:.2} ms.",
            if met { "MET" } else { "NOT MET" },
            l.etcd_put.per_second(),
            l.etcd_put.latencies.quantile_ms(0.99),
        );
    } else {
        let _ = writeln!(
            out,
            "\nTarget not evaluated: it is defined at 16 clients, not measured in this run."
        );
    }
    out
}
