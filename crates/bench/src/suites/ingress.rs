//! rkube-ingress's data path against the pods it proxies to, in the same
//! run: the proxy suite's namespaces (a node with a bridge, two pods, a
//! client), the real apiserver and the real rkube-ingress inside the node
//! namespace (a runtime whose threads joined it), an Ingress routing host
//! `bench.local` to a Service over both pods. From the client namespace, 64
//! connections (hyper-util's pooled client) send GETs for `--seconds` per
//! round, through the Ingress and straight to the pods alternately over 4
//! rounds; requests/s is the median round, latency quantiles over every
//! request of a mode. Two servers in each pod, measured one after the other:
//! busybox httpd (the test image's; a new connection per request, and a
//! listen backlog of 9, so 32 connections per pod overflow it and SYNs wait
//! for their 1 s retransmit), and a keep-alive HTTP/1.1 server (hyper, in the
//! pod's namespace) that shows the Ingress's own cost.
//!
//! Needs root (network namespaces), ip, nsenter and busybox.

use super::proxy::{nix_root, Cluster, GW};
use crate::stats::Samples;
use crate::Args;
use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use rkube_api::core::v1::{Endpoints, Service};
use rkube_api::networking::v1::Ingress;
use rkube_client::{Api, Client};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 64;
const ROUNDS: usize = 4;
/// The Ingress host of each backend port.
fn host_for(port: u16) -> String {
    if port == KEEP_ALIVE_PORT {
        "keepalive.bench.local".into()
    } else {
        "bench.local".into()
    }
}

pub fn run(args: &Args) -> anyhow::Result<String> {
    if !nix_root() {
        return Ok("## ingress\n\nNot run: network namespaces need root.\n".into());
    }
    std::fs::create_dir_all(&args.tmp_dir)
        .with_context(|| format!("cannot create {}", args.tmp_dir.display()))?;
    let id = rand::random::<u32>() & 0xffffff;
    let dir = tempfile::Builder::new()
        .prefix("rkube-bench-ingress-")
        .tempdir_in(&args.tmp_dir)
        .with_context(|| format!("cannot create a directory in {}", args.tmp_dir.display()))?;
    let cluster = Cluster::new(id, dir.path())?;
    let pods: Vec<Ipv4Addr> = cluster.pods.iter().map(|(_, ip, _)| *ip).collect();
    let keep_alive: Vec<PodServer> = cluster
        .pods
        .iter()
        .enumerate()
        .map(|(i, (ns, _, _))| PodServer::start(&ns.path(), format!("web-{i}")))
        .collect::<anyhow::Result<_>>()?;
    let control = ControlPlane::start(&cluster.node.path(), dir.path(), &pods)?;
    let length = Duration::from_secs(args.seconds);
    let results: anyhow::Result<Vec<(&str, Result)>> = [
        ("busybox httpd", BUSYBOX_PORT),
        ("keep-alive server", KEEP_ALIVE_PORT),
    ]
    .into_iter()
    .map(|(backend, port)| Ok((backend, measure(&cluster.client.path(), &pods, port, length)?)))
    .collect();
    control.stop()?;
    for server in keep_alive {
        server.stop();
    }
    drop(cluster);
    Ok(render(&results?, args.seconds))
}

const BUSYBOX_PORT: u16 = 8080;
const KEEP_ALIVE_PORT: u16 = 8081;

/// A keep-alive HTTP/1.1 server answering `body` on :8081 in a pod's namespace.
struct PodServer {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl PodServer {
    fn start(ns: &str, body: String) -> anyhow::Result<PodServer> {
        let file = std::fs::File::open(ns).with_context(|| format!("cannot open {ns}"))?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound, is_bound) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let thread = std::thread::spawn(move || {
            let serve = || -> anyhow::Result<(tokio::runtime::Runtime, tokio::net::TcpListener)> {
                let rt = runtime_in(&file, ROLE_POD)?;
                let listener = rt.block_on(tokio::net::TcpListener::bind(("0.0.0.0", KEEP_ALIVE_PORT)))?;
                Ok((rt, listener))
            };
            let (rt, listener) = match serve() {
                Ok(x) => {
                    let _ = bound.send(Ok(()));
                    x
                }
                Err(e) => {
                    let _ = bound.send(Err(e));
                    return;
                }
            };
            let body = Bytes::from(body);
            rt.block_on(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = &mut stopped => return,
                        a = listener.accept() => a,
                    };
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let body = body.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |_req| {
                            let body = body.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(body),
                                ))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        is_bound.recv().context("the pod server's thread ended")??;
        Ok(PodServer { stop, thread })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Joins the calling thread to the namespace `ns` is open on, then builds a
/// runtime there (its threads, started from this one, are in it too).
/// `role` names its threads, so their CPU time can be told apart.
fn runtime_in(ns: &std::fs::File, role: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(role)
        .enable_all()
        .build()?)
}

/// Thread names of the three parties (at most 15 bytes: the kernel's limit).
const ROLE_CLIENT: &str = "bench-client";
const ROLE_INGRESS: &str = "bench-ingress";
const ROLE_POD: &str = "bench-pod";
const ROLES: [&str; 3] = [ROLE_CLIENT, ROLE_INGRESS, ROLE_POD];

/// CPU time this process's threads have used so far, by role (from
/// /proc/self/task/*/schedstat, in nanoseconds; kernel time included, so the
/// network stack's work lands on the thread whose system call caused it).
fn cpu_by_role() -> [Duration; 3] {
    let mut cpu = [Duration::ZERO; 3];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return cpu;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let Some(role) = ROLES.iter().position(|r| comm.trim() == *r) else {
            continue;
        };
        let ns = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        cpu[role] += Duration::from_nanos(ns);
    }
    cpu
}

/// The apiserver and rkube-ingress on one runtime inside the node namespace
/// (the apiserver on the namespace's loopback, the Ingress on the bridge's
/// address, port 80).
struct ControlPlane {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl ControlPlane {
    fn start(node_ns: &str, dir: &std::path::Path, pods: &[Ipv4Addr]) -> anyhow::Result<ControlPlane> {
        let file = std::fs::File::open(node_ns).with_context(|| format!("cannot open {node_ns}"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, is_ready) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let (dir, pods) = (dir.to_path_buf(), pods.to_vec());
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = runtime_in(&file, ROLE_INGRESS)?;
            rt.block_on(async move {
                let server = rkube_apiserver::start(rkube_apiserver::Config::local(dir.join("apiserver")))
                    .await
                    .context("cannot start rkube's apiserver")?;
                let url = server.url();
                let mut config = rkube_ingress::Config::new(url.clone(), "bench-node");
                config.http_addr = Some(SocketAddr::new(GW.into(), 80));
                config.https_addr = None;
                config.publish_address = Some(GW.into());
                let ingress = tokio::spawn(rkube_ingress::run(config, async move {
                    let _ = stopped.await;
                }));
                let _ = ready.send(objects(&url, &pods).await);
                let result = ingress.await.context("rkube-ingress panicked")?;
                server.stop().await?;
                result
            })
        });
        is_ready
            .recv()
            .context("the control plane's thread ended before it was ready")??;
        Ok(ControlPlane { stop, thread })
    }

    fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the control plane's thread panicked"))?
    }
}

/// The Service `web` over both pods, port 80 to busybox httpd and 81 to the
/// keep-alive server (Endpoints written directly, as no kubelet runs), and
/// the Ingress routing `bench.local` to one and `keepalive.bench.local` to
/// the other.
async fn objects(url: &str, pods: &[Ipv4Addr]) -> anyhow::Result<()> {
    let client = Client::connect(url)?;
    let addresses: Vec<_> = pods
        .iter()
        .map(|ip| serde_json::json!({"ip": ip.to_string()}))
        .collect();
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [
            {"name": "busybox", "port": 80, "targetPort": BUSYBOX_PORT},
            {"name": "keepalive", "port": 81, "targetPort": KEEP_ALIVE_PORT}
        ]}
    }))?;
    let eps: Endpoints = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "default"},
        "subsets": [{"addresses": addresses, "ports": [
            {"name": "busybox", "port": BUSYBOX_PORT, "protocol": "TCP"},
            {"name": "keepalive", "port": KEEP_ALIVE_PORT, "protocol": "TCP"}
        ]}]
    }))?;
    let rule = |host: String, port: u16| {
        format!("  - host: {host}\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: {port}}}}}}}}}]}}\n")
    };
    let ing: Ingress = serde_yaml::from_str(&format!(
        "metadata: {{name: web, namespace: default}}\nspec:\n  ingressClassName: rkube\n  rules:\n{}{}",
        rule(host_for(BUSYBOX_PORT), 80),
        rule(host_for(KEEP_ALIVE_PORT), 81),
    ))?;
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&svc)
        .await?;
    Api::<Endpoints>::namespaced(client.clone(), "default")
        .create(&eps)
        .await?;
    Api::<Ingress>::namespaced(client, "default").create(&ing).await?;
    Ok(())
}

struct Round {
    rate: f64,
    times: Vec<Duration>,
    failures: usize,
}

struct Result {
    direct: Vec<f64>,
    ingress: Vec<f64>,
    direct_times: Samples,
    ingress_times: Samples,
    /// CPU time by role over every round of a mode (direct, through the Ingress).
    cpu: [[Duration; 3]; 2],
    /// The wall time of those rounds.
    wall: [Duration; 2],
    failures: usize,
}

type Load = HttpClient<HttpConnector, Empty<Bytes>>;

/// `CONNECTIONS` workers sending GETs to `urls` (in turn) with `host` for `length`.
async fn round(client: &Load, urls: &[String], host: &str, length: Duration) -> Round {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + length;
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (client, urls, next, host) = (client.clone(), urls.to_vec(), next.clone(), host.to_string());
            tokio::spawn(async move {
                let (mut times, mut failures) = (Vec::new(), 0);
                while Instant::now() < deadline {
                    let url = &urls[next.fetch_add(1, Ordering::Relaxed) % urls.len()];
                    let began = Instant::now();
                    let Ok(req) = hyper::Request::get(url.as_str())
                        .header("host", &host)
                        .body(Empty::new())
                    else {
                        failures += 1;
                        continue;
                    };
                    let ok = match client.request(req).await {
                        Ok(resp) => resp.status() == 200 && resp.into_body().collect().await.is_ok(),
                        Err(_) => false,
                    };
                    if ok {
                        times.push(began.elapsed());
                    } else {
                        failures += 1;
                    }
                }
                (times, failures)
            })
        })
        .collect();
    let mut all = Round {
        rate: 0.0,
        times: Vec::new(),
        failures: 0,
    };
    for w in workers {
        if let Ok((times, failures)) = w.await {
            all.times.extend(times);
            all.failures += failures;
        }
    }
    all.rate = all.times.len() as f64 / started.elapsed().as_secs_f64();
    all
}

/// The load, from a runtime whose threads joined the client namespace.
fn measure(client_ns: &str, pods: &[Ipv4Addr], port: u16, length: Duration) -> anyhow::Result<Result> {
    let file = std::fs::File::open(client_ns).with_context(|| format!("cannot open {client_ns}"))?;
    let pods = pods.to_vec();
    std::thread::scope(|s| {
        s.spawn(move || -> anyhow::Result<Result> {
            let rt = runtime_in(&file, ROLE_CLIENT)?;
            rt.block_on(async move {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                let client: Load = HttpClient::builder(TokioExecutor::new()).build(connector);
                let via = vec![format!("http://{GW}/")];
                let direct: Vec<String> = pods.iter().map(|ip| format!("http://{ip}:{port}/")).collect();
                let host = host_for(port);
                // the Ingress answers once its caches are synced and the route is in
                let started = Instant::now();
                loop {
                    let req = hyper::Request::get(via[0].as_str())
                        .header("host", &host)
                        .body(Empty::new())?;
                    if client.request(req).await.is_ok_and(|r| r.status() == 200) {
                        break;
                    }
                    anyhow::ensure!(
                        started.elapsed() < Duration::from_secs(30),
                        "the Ingress never answered"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                eprintln!(
                    "HTTP throughput to :{port}: through the Ingress vs directly, {CONNECTIONS} connections"
                );
                // warm both paths, then alternate which goes first
                round(&client, &direct, &host, Duration::from_millis(500)).await;
                round(&client, &via, &host, Duration::from_millis(500)).await;
                let mut r = Result {
                    direct: Vec::new(),
                    ingress: Vec::new(),
                    direct_times: Samples::default(),
                    ingress_times: Samples::default(),
                    cpu: Default::default(),
                    wall: Default::default(),
                    failures: 0,
                };
                for i in 0..ROUNDS {
                    for through_ingress in [i % 2 == 1, i % 2 == 0] {
                        let urls = if through_ingress { &via } else { &direct };
                        let (cpu_before, began) = (cpu_by_role(), Instant::now());
                        let got = round(&client, urls, &host, length).await;
                        let (cpu_after, wall) = (cpu_by_role(), began.elapsed());
                        let mode = usize::from(through_ingress);
                        for role in 0..ROLES.len() {
                            r.cpu[mode][role] += cpu_after[role].saturating_sub(cpu_before[role]);
                        }
                        r.wall[mode] += wall;
                        r.failures += got.failures;
                        if through_ingress {
                            r.ingress.push(got.rate);
                            r.ingress_times.extend(got.times);
                        } else {
                            r.direct.push(got.rate);
                            r.direct_times.extend(got.times);
                        }
                    }
                }
                Ok(r)
            })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))?
    })
}

fn render(results: &[(&str, Result)], seconds: u64) -> String {
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let rounds = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
    let mut s = String::new();
    let _ = writeln!(s, "## ingress\n");
    let _ = writeln!(
        s,
        "Inside network namespaces the suite creates, on this machine ({} cores); {CONNECTIONS} connections, {ROUNDS} rounds of {seconds} s per mode, 2 pods.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let _ = writeln!(
        s,
        "| HTTP GET | requests/s (median; rounds) | p50 | p99 | Ingress / direct |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: |");
    let mut verdicts = Vec::new();
    for (backend, r) in results {
        let (direct, via) = (median(&r.direct), median(&r.ingress));
        for (mode, rate, all, times, ratio) in [
            ("directly", direct, &r.direct, &r.direct_times, String::new()),
            (
                "through rkube-ingress",
                via,
                &r.ingress,
                &r.ingress_times,
                format!("{:.1} %", 100.0 * via / direct),
            ),
        ] {
            let _ = writeln!(
                s,
                "| {backend}, {mode} | {rate:.0} ({}) | {:.2} ms | {:.2} ms | {ratio} |",
                rounds(all),
                times.quantile_ms(0.5),
                times.quantile_ms(0.99)
            );
        }
        verdicts.push(format!(
            "{backend}: {} ({} failed requests)",
            if via >= 0.8 * direct { "met" } else { "missed" },
            r.failures
        ));
    }
    let _ = writeln!(
        s,
        "\nTarget, the Ingress at least 80 % of direct: {}.",
        verdicts.join("; ")
    );
    let _ = writeln!(
        s,
        "\nWhere the CPU goes: CPU time (user and kernel) of each party's threads over every round of a mode, per request answered, and the share of both cores the three used (busybox httpd runs as its own processes, not counted):\n"
    );
    let _ = writeln!(
        s,
        "| HTTP GET | client µs/request | rkube-ingress µs/request | pod servers µs/request | cores busy |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: |");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    for (backend, r) in results {
        for (mode, name, times) in [
            (0, "directly", &r.direct_times),
            (1, "through rkube-ingress", &r.ingress_times),
        ] {
            let per = |d: Duration| d.as_secs_f64() * 1e6 / times.len().max(1) as f64;
            let [client, ingress, pods] = r.cpu[mode];
            let busy = (client + ingress + pods).as_secs_f64() / (r.wall[mode].as_secs_f64() * cores);
            let _ = writeln!(
                s,
                "| {backend}, {name} | {:.1} | {:.1} | {:.1} | {:.0} % |",
                per(client),
                per(ingress),
                per(pods),
                100.0 * busy
            );
        }
    }
    s
}
