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
//!
//! The phases live in `load.rs` (creates, gets), `list.rs` and `watch.rs`;
//! the table in `report.rs`.

mod list;
mod load;
mod report;
pub mod rest;
mod watch;

use crate::stats::{Phase, Samples};
use crate::Args;
use anyhow::Context;
use etcd_client::KvClient;
use futures::future::{try_join_all, BoxFuture};
use list::{etcd_list, rkube_list};
use load::{drive, etcd_creates, etcd_gets, etcd_puts, rkube_creates, rkube_gets};
use report::{machine_facts, render};
use rkube_api::core::v1::{ConfigMap, Namespace};
use rkube_api::rpc::{self, api_server_client::ApiServerClient};
use rkube_api::{to_any, Resource};
use rkube_testing::etcd::Etcd;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use watch::{etcd_watch, rkube_watch};

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

    let (server_rt, client_rt) = runtimes()?;
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

/// The apiserver's runtime (two worker threads, like a separate process on this 2-core
/// machine) and the clients' (one thread per core).
fn runtimes() -> anyhow::Result<(tokio::runtime::Runtime, tokio::runtime::Runtime)> {
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
    Ok((server_rt, client_rt))
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
