//! The apiserver's two faces side by side: the Kubernetes REST API (JSON over HTTP/1.1,
//! what kubectl and the client libraries speak) against rkube's gRPC API (protobuf over
//! HTTP/2), on one in-process apiserver, in one run.
//!
//! * creates/s and gets/s of 1 KiB ConfigMaps with 16 clients, each on its own connection
//!   (REST: one HTTP/1.1 keep-alive connection per client, as client-go without TLS);
//! * a full list of `--objects` pods (a container with ports, resources, labels and a
//!   running status each), the time until the whole answer has arrived (median of 5, and
//!   REST's first list alone: the apiserver keeps each object version's JSON, so later
//!   lists of unchanged objects only copy it, as a cluster's repeated lists do);
//!   With the apiserver's background JSON encoding (on unless `--no-json-warming`) the
//!   first list comes right after the creates, as a cluster's first `kubectl get pods`
//!   after a scale-up does; the report says how much the cache then holds, how many
//!   versions the encoder dropped, and the bench process's (so the apiserver's) VmRSS;
//! * the delivery latency of `--watch-events` creates to `--watchers` watchers (REST:
//!   `?watch=true` streams of newline-delimited JSON events).
//!
//! Targets (issue 15): REST at least 0.7x gRPC's create and get throughput, and the list
//! as JSON within 1.5x the gRPC list's time.

use super::list::median;
use super::load::{drive, per_client, random_index, rkube_creates, rkube_gets};
use super::watch::{collect_watchers, nanos_now, rkube_watch, since_nanos, watch_deadline};
use super::{
    create_namespace, padding_for, rid, rkube_clients, runtimes, OpFn, Rkube, LIST_RUNS, MAX_PHASE, NAMESPACE,
};
use crate::stats::{Phase, Samples};
use crate::Args;
use anyhow::Context;
use rkube_api::core::v1::Pod;
use rkube_api::rpc;
use rkube_api::to_any;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const LIST_NAMESPACE: &str = "bench-rest-list";

pub fn run(args: &Args) -> anyhow::Result<String> {
    std::fs::create_dir_all(&args.tmp_dir)
        .with_context(|| format!("cannot create {}", args.tmp_dir.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("rkube-bench-rest-")
        .tempdir_in(&args.tmp_dir)
        .with_context(|| format!("cannot create a directory in {}", args.tmp_dir.display()))?;
    let (server_rt, client_rt) = runtimes()?;
    let mut config = rkube_apiserver::Config::local(dir.path());
    config.warm_json = !args.no_json_warming;
    let server = server_rt
        .block_on(rkube_apiserver::start(config))
        .context("cannot start rkube's apiserver")?;
    let url = server.url();
    eprintln!("rkube apiserver on {url} (gRPC and REST)");
    let mut measured = client_rt.block_on(measure(args, &url));
    if let Ok(r) = &mut measured {
        r.warm_dropped = server
            .json_warming()
            .map(|w| w.dropped.load(std::sync::atomic::Ordering::Relaxed));
    }
    let stopped = server_rt.block_on(server.stop());
    drop(client_rt);
    drop(server_rt);
    let results = measured?;
    stopped.context("stopping rkube's apiserver")?;
    Ok(render(args, &results))
}

struct Results {
    grpc_create: Phase,
    rest_create: Phase,
    grpc_get: Phase,
    rest_get: Phase,
    grpc_list: Duration,
    rest_list: Duration,
    rest_list_cold: Duration,
    rest_list_bytes: usize,
    grpc_list_bytes: usize,
    /// Items whose JSON was written (not found cached) while the first REST list ran.
    first_list_written: u64,
    /// The JSON cache's bytes after the lists.
    json_cache_bytes: usize,
    /// VmRSS of this process (apiserver and clients) after the lists, bytes.
    rss_after_lists: Option<u64>,
    /// Versions the background encoder dropped (`None`: it was off).
    warm_dropped: Option<u64>,
    grpc_watch: Samples,
    rest_watch: Samples,
}

/// One HTTP/1.1 client per worker, each keeping its own connection.
fn rest_clients(n: usize) -> anyhow::Result<Vec<reqwest::Client>> {
    (0..n)
        .map(|_| {
            reqwest::Client::builder()
                .http1_only()
                .pool_max_idle_per_host(1)
                .build()
                .context("cannot build an HTTP client")
        })
        .collect()
}

fn config_maps_url(url: &str, namespace: &str) -> String {
    format!("{url}/api/v1/namespaces/{namespace}/configmaps")
}

/// Reads the whole answer; an error unless it is a success.
async fn ok(resp: reqwest::Response, what: &str) -> anyhow::Result<()> {
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .with_context(|| format!("{what}: reading the answer"))?;
    anyhow::ensure!(
        status.is_success(),
        "{what}: {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

fn rest_creates(clients: &[reqwest::Client], url: &str, tag: &str, padding: &Arc<String>) -> Vec<OpFn> {
    let (url, tag, padding) = (config_maps_url(url, NAMESPACE), tag.to_string(), padding.clone());
    per_client(clients, |_| {
        let (url, tag, padding) = (url.clone(), tag.clone(), padding.clone());
        move |c: reqwest::Client, seq| {
            let body = serde_json::to_vec(&serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": format!("{tag}-{seq}"), "namespace": NAMESPACE},
                "data": {"payload": padding.as_str()},
            }))
            .expect("JSON values serialize");
            let req = c
                .post(url.clone())
                .header("content-type", "application/json")
                .body(body);
            async move { ok(req.send().await.context("REST create")?, "REST create").await }
        }
    })
}

/// Gets of random created objects, each worker's picks seeded as the gRPC gets' are.
fn rest_gets(clients: &[reqwest::Client], url: &str, names: Arc<Vec<String>>) -> Vec<OpFn> {
    let url = config_maps_url(url, NAMESPACE);
    per_client(clients, |w| {
        let (url, names, pick) = (url.clone(), names.clone(), random_index(w));
        move |c: reqwest::Client, _| {
            let req = c.get(format!("{url}/{}", names[pick(names.len())]));
            async move { ok(req.send().await.context("REST get")?, "REST get").await }
        }
    })
}

/// A pod as a Deployment's replica looks once running.
fn pod(name: &str) -> Pod {
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {LIST_NAMESPACE}
  labels: {{app: web, pod-template-hash: 5d8f7c9b6}}
spec:
  nodeName: node-17
  containers:
  - name: web
    image: registry.example/web:1.4.2
    ports: [{{containerPort: 8080, name: http, protocol: TCP}}]
    resources: {{requests: {{cpu: 100m, memory: 64Mi}}, limits: {{memory: 128Mi}}}}
    readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 5}}
status:
  phase: Running
  podIP: 10.244.17.23
  hostIP: 172.30.0.27
  startTime: "2026-01-01T00:00:00Z"
  conditions:
  - {{type: Ready, status: "True", lastTransitionTime: "2026-01-01T00:00:05Z"}}
  - {{type: PodScheduled, status: "True", lastTransitionTime: "2026-01-01T00:00:00Z"}}
  containerStatuses:
  - name: web
    ready: true
    restartCount: 0
    image: registry.example/web:1.4.2
    containerID: containerd://0123456789abcdef
    state: {{running: {{startedAt: "2026-01-01T00:00:02Z"}}}}
"#
    );
    serde_yaml::from_str(&yaml).expect("the benchmark's pod is valid YAML")
}

fn pod_creates(clients: &[Rkube]) -> Vec<OpFn> {
    per_client(clients, |_| {
        |mut c: Rkube, seq| async move {
            c.create(rpc::CreateRequest {
                resource: rid::<Pod>(),
                namespace: LIST_NAMESPACE.into(),
                object: Some(to_any(&pod(&format!("web-{seq}")))),
                dry_run: false,
            })
            .await
            .context("create pod")?;
            Ok(())
        }
    })
}

async fn grpc_list(client: &Rkube, expected: u64) -> anyhow::Result<(Duration, usize)> {
    let mut runs = Vec::new();
    let mut bytes = 0;
    for _ in 0..LIST_RUNS {
        let mut client = client.clone();
        let t = Instant::now();
        let resp = client
            .list(rpc::ListRequest {
                resource: rid::<Pod>(),
                namespace: LIST_NAMESPACE.into(),
                ..Default::default()
            })
            .await
            .context("gRPC list")?
            .into_inner();
        runs.push(t.elapsed());
        anyhow::ensure!(
            resp.items.len() as u64 == expected,
            "gRPC listed {} pods",
            resp.items.len()
        );
        bytes = prost::Message::encoded_len(&resp);
    }
    Ok((median(runs), bytes))
}

/// The first list's time (the JSON of the pods not encoded in the background yet made
/// then; later lists read it from the apiserver's cache of object versions), the median
/// of all, the answer's size, and how many items' JSON the apiserver wrote during the
/// first list (by the list or, at the same time, by the background encoding).
async fn rest_list(
    client: &reqwest::Client,
    url: &str,
    expected: u64,
) -> anyhow::Result<(Duration, Duration, usize, u64)> {
    let url = format!("{url}/api/v1/namespaces/{LIST_NAMESPACE}/pods");
    let cache = rkube_apiserver::rest::json::JsonCache::global();
    let (_, written_before) = cache.lookups();
    let mut first_written = 0;
    let mut runs = Vec::new();
    let mut bytes = 0;
    for run in 0..LIST_RUNS {
        let t = Instant::now();
        let body = client
            .get(&url)
            .send()
            .await
            .context("REST list")?
            .bytes()
            .await
            .context("REST list body")?;
        runs.push(t.elapsed());
        if run == 0 {
            // the background encoding may have written some meanwhile: at most this many
            first_written = cache.lookups().1 - written_before;
        }
        bytes = body.len();
        let list: serde_json::Value = serde_json::from_slice(&body).context("the REST list is not JSON")?;
        let items = list["items"].as_array().map(Vec::len).unwrap_or(0);
        anyhow::ensure!(items as u64 == expected, "REST listed {items} pods");
    }
    Ok((runs[0], median(runs), bytes, first_written))
}

async fn rest_watch(url: &str, watchers: usize, events: u64, padding: &str) -> anyhow::Result<Samples> {
    let clients = rest_clients(watchers + 1)?;
    let list_url = config_maps_url(url, NAMESPACE);
    let body = clients[0]
        .get(format!("{list_url}?limit=1"))
        .send()
        .await?
        .bytes()
        .await
        .context("REST list for the watch revision")?;
    let list: serde_json::Value = serde_json::from_slice(&body).context("the REST list is not JSON")?;
    let revision = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let mut responses = Vec::new();
    for c in &clients[1..] {
        let resp = c
            .get(format!("{list_url}?watch=true&resourceVersion={revision}"))
            .send()
            .await
            .context("REST watch")?;
        anyhow::ensure!(resp.status().is_success(), "REST watch: {}", resp.status());
        responses.push(resp);
    }
    let deadline = watch_deadline(events);
    let tasks = responses
        .into_iter()
        .map(|mut resp| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut buf: Vec<u8> = Vec::new();
                while (latencies.len() as u64) < events {
                    let Ok(next) = tokio::time::timeout_at(deadline, resp.chunk()).await else {
                        break;
                    };
                    let Some(chunk) = next.context("REST watch stream failed")? else {
                        anyhow::bail!("REST watch stream ended early");
                    };
                    let now = nanos_now();
                    buf.extend_from_slice(&chunk);
                    while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=end).collect();
                        let event: serde_json::Value = serde_json::from_slice(&line)?;
                        if event["type"] != "ADDED" {
                            continue;
                        }
                        let sent = event["object"]["data"]["sent"]
                            .as_str()
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
    // the writer: gRPC, as in the gRPC phase, so only the watchers' face differs
    let writer = rkube_clients(url, 1).await?.remove(0);
    super::watch::write_stamped(&writer, "rest-w", events, padding).await?;
    collect_watchers("REST", tasks, events).await
}

async fn measure(args: &Args, url: &str) -> anyhow::Result<Results> {
    let seconds = Duration::from_secs(args.seconds);
    let (padding, _) = padding_for(super::OBJECT_BYTES);
    let grpc = rkube_clients(url, CLIENTS).await?;
    let rest = rest_clients(CLIENTS)?;
    eprintln!("warm-up");
    let warm = Duration::from_millis(500);
    drive(
        rkube_creates(&grpc[..1], NAMESPACE, "gwarm", &padding),
        u64::MAX,
        warm,
    )
    .await?;
    drive(rest_creates(&rest[..1], url, "rwarm", &padding), u64::MAX, warm).await?;

    eprintln!("{CLIENTS} clients: creates");
    let grpc_create = drive(rkube_creates(&grpc, NAMESPACE, "g", &padding), u64::MAX, seconds).await?;
    let rest_create = drive(rest_creates(&rest, url, "r", &padding), u64::MAX, seconds).await?;
    let names = |p: &Phase, tag: &str| -> anyhow::Result<Arc<Vec<String>>> {
        anyhow::ensure!(!p.done.is_empty(), "no object was created");
        Ok(Arc::new(p.done.iter().map(|s| format!("{tag}-{s}")).collect()))
    };
    eprintln!("{CLIENTS} clients: gets");
    let grpc_get = drive(rkube_gets(&grpc, names(&grpc_create, "g")?), u64::MAX, seconds).await?;
    let rest_get = drive(
        rest_gets(&rest, url, names(&rest_create, "r")?),
        u64::MAX,
        seconds,
    )
    .await?;

    eprintln!("list: loading {} pods", args.objects);
    create_namespace(&grpc[0], LIST_NAMESPACE).await?;
    let load = drive(pod_creates(&grpc), args.objects, MAX_PHASE).await?;
    anyhow::ensure!(
        load.ops == args.objects,
        "loaded only {} of {} pods",
        load.ops,
        args.objects
    );
    eprintln!("list: timing");
    let (grpc_list, grpc_list_bytes) = grpc_list(&grpc[0], args.objects).await?;
    let (rest_list_cold, rest_list, rest_list_bytes, first_list_written) =
        rest_list(&rest[0], url, args.objects).await?;
    let json_cache_bytes = rkube_apiserver::rest::json::JsonCache::global().bytes();
    let rss_after_lists = vm_rss();
    drop(grpc);
    drop(rest);

    eprintln!(
        "watch: {} watchers, {} events each face",
        args.watchers, args.watch_events
    );
    let grpc_watch = rkube_watch(url, args.watchers, args.watch_events, &padding).await?;
    let rest_watch = rest_watch(url, args.watchers, args.watch_events, &padding).await?;
    Ok(Results {
        grpc_create,
        rest_create,
        grpc_get,
        rest_get,
        grpc_list,
        rest_list,
        rest_list_cold,
        rest_list_bytes,
        grpc_list_bytes,
        first_list_written,
        json_cache_bytes,
        rss_after_lists,
        warm_dropped: None,
        grpc_watch,
        rest_watch,
    })
}

/// This process's resident memory, from /proc/self/status.
fn vm_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn render(args: &Args, r: &Results) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut rows: Vec<(String, f64, f64, u8)> = vec![
        (
            format!("creates/s, {CLIENTS} clients"),
            r.rest_create.per_second(),
            r.grpc_create.per_second(),
            1,
        ),
        (
            format!("create p99 ms, {CLIENTS} clients"),
            r.rest_create.latencies.quantile_ms(0.99),
            r.grpc_create.latencies.quantile_ms(0.99),
            2,
        ),
        (
            format!("gets/s, {CLIENTS} clients"),
            r.rest_get.per_second(),
            r.grpc_get.per_second(),
            1,
        ),
        (
            format!("get p99 ms, {CLIENTS} clients"),
            r.rest_get.latencies.quantile_ms(0.99),
            r.grpc_get.latencies.quantile_ms(0.99),
            2,
        ),
        (
            format!("list of {} pods, ms (median of {LIST_RUNS})", args.objects),
            ms(r.rest_list),
            ms(r.grpc_list),
            1,
        ),
        (
            format!(
                "first list of {} pods, ms (REST: {})",
                args.objects,
                if args.no_json_warming {
                    "no JSON cached yet, background encoding off"
                } else {
                    "right after the creates, background encoding on"
                }
            ),
            ms(r.rest_list_cold),
            ms(r.grpc_list),
            1,
        ),
        (
            format!("list of {} pods, MB sent", args.objects),
            r.rest_list_bytes as f64 / 1e6,
            r.grpc_list_bytes as f64 / 1e6,
            2,
        ),
    ];
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        rows.push((
            format!("watch delivery {name} ms, {} watchers", args.watchers),
            r.rest_watch.quantile_ms(q),
            r.grpc_watch.quantile_ms(q),
            2,
        ));
    }
    let mut out = String::from("| metric | REST (JSON) | gRPC | REST/gRPC |\n|---|---|---|---|\n");
    for (name, rest, grpc, decimals) in rows {
        let d = usize::from(decimals);
        out.push_str(&format!(
            "| {name} | {rest:.d$} | {grpc:.d$} | {:.2} |\n",
            rest / grpc
        ));
    }
    let create = r.rest_create.per_second() / r.grpc_create.per_second();
    let get = r.rest_get.per_second() / r.grpc_get.per_second();
    let list = ms(r.rest_list) / ms(r.grpc_list);
    let cold = ms(r.rest_list_cold) / ms(r.grpc_list);
    out.push_str(&format!(
        "\nTargets: REST creates and gets at least 0.7x gRPC's ({create:.2}x, {get:.2}x: {}), the list as JSON within 1.5x the gRPC list's time ({list:.2}x for the median list: {}; the first list, before any pod's JSON is cached, {cold:.2}x: {}).\n",
        if create >= 0.7 && get >= 0.7 { "met" } else { "not met" },
        if list <= 1.5 { "met" } else { "not met" },
        if cold <= 1.5 { "met" } else { "not met" },
    ));
    out.push_str(&format!(
        "\nDuring the first list, {} of the {} pods' JSON was written then (by the list, or by the background encoding at the same time); the rest was found cached.\n",
        r.first_list_written, args.objects
    ));
    out.push_str(&format!(
        "\nAfter the lists: JSON cache {:.1} MB (limit {:.1} MB per generation, two generations); VmRSS of the bench process (apiserver and clients) {}; background JSON encoding: {}.\n",
        r.json_cache_bytes as f64 / 1e6,
        rkube_apiserver::rest::json::JsonCache::LIMIT as f64 / 1e6,
        r.rss_after_lists
            .map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
            .unwrap_or_else(|| "unknown".into()),
        match r.warm_dropped {
            None => "off".to_string(),
            Some(d) => format!("on, {d} versions dropped from its queue"),
        },
    ));
    format!("### REST vs gRPC\n\n{out}")
}
