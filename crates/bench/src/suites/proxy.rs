//! rkube-proxy in nftables mode, inside network namespaces this suite
//! creates (no route out of them, so no packet can leave the machine) and
//! removes:
//! * full sync: the ruleset of 1,000 and 10,000 ClusterIP Services with 2
//!   endpoints each, rendered by the proxy's own generator and loaded with
//!   `nft -f` (the proxy's `apply`), median of 3 loads, each replacing the
//!   table the previous one left;
//! * partial sync, beside it: with those Services loaded, one Service's
//!   endpoints changed (`PARTIAL_SAMPLES` times, a different Service each time),
//!   rendered as the proxy's partial transaction and loaded (p50, p99);
//! * network programming latency: the real proxy (`rkube_proxy::run`)
//!   in-process against the real apiserver holding 10,000 Services; per
//!   sample an Endpoints update, timed from just before the update call to
//!   the moment polling `nft list chain` in the namespace shows the new
//!   endpoint (50 samples, spaced beyond the proxy's 100 ms batching);
//! * HTTP throughput through the ClusterIP against the same two pods
//!   (busybox httpd) addressed directly, in the same run: a fixed number of
//!   HTTP/1.0 requests (a new connection each) from 4 client threads in a
//!   client pod, the two modes alternating over 4 rounds (median).
//!
//! Needs root (network namespaces), nft, nsenter, ip and busybox.

use crate::stats::Samples;
use crate::Args;
use anyhow::Context;
use futures::StreamExt;
use rkube_api::core::v1::{Endpoints, Service};
use rkube_client::{Api, Client};
use rkube_proxy::model::{Protocol, ServicePort};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SYNC_SIZES: [usize; 2] = [1_000, 10_000];
const SYNC_RUNS: usize = 3;
const PARTIAL_SAMPLES: usize = 50;
const LATENCY_SERVICES: usize = 10_000;
const LATENCY_SAMPLES: usize = 50;
const CLIENT_THREADS: usize = 4;
const REQUESTS_PER_ROUND: usize = 1_500;
const ROUNDS: usize = 4;
pub(crate) const GW: Ipv4Addr = Ipv4Addr::new(10, 244, 7, 1);

pub fn run(args: &Args) -> anyhow::Result<String> {
    if !nix_root() {
        return Ok("## proxy\n\nNot run: network namespaces need root.\n".into());
    }
    std::fs::create_dir_all(&args.tmp_dir)
        .with_context(|| format!("cannot create {}", args.tmp_dir.display()))?;
    let id = rand::random::<u32>() & 0xffffff;
    let sync = full_sync(id)?;
    let dir = tempfile::Builder::new()
        .prefix("rkube-bench-proxy-")
        .tempdir_in(&args.tmp_dir)
        .with_context(|| format!("cannot create a directory in {}", args.tmp_dir.display()))?;
    let cluster = Cluster::new(id, dir.path())?;
    let live = live(&cluster, dir.path())?;
    drop(cluster);
    Ok(render(&sync, &live))
}

pub(crate) fn nix_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

pub(crate) fn sh(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    anyhow::ensure!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A network namespace, removed on drop.
pub(crate) struct Netns {
    name: String,
}

impl Netns {
    pub(crate) fn new(name: String) -> anyhow::Result<Self> {
        sh(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }
    pub(crate) fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }
    /// A command prefix that runs a program in this namespace.
    pub(crate) fn nsenter(&self, program: &str) -> Vec<String> {
        vec!["nsenter".into(), format!("--net={}", self.path()), program.into()]
    }
    fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// `count` ClusterIP Services with 2 endpoints each, as the proxy models them.
fn synthetic_ports(count: usize) -> Vec<ServicePort> {
    (0..count)
        .map(|i| {
            let i = i as u32;
            ServicePort {
                name: format!("bench/svc-{i:05}:"),
                cluster_ip: Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i)),
                load_balancer_ips: vec![],
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
                affinity_timeout: None,
                endpoints: (0..2)
                    .map(|j| {
                        SocketAddrV4::new(
                            Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + 2 * i + j),
                            8080,
                        )
                    })
                    .collect(),
            }
        })
        .collect()
}

struct SyncResult {
    services: usize,
    render: Duration,
    bytes: usize,
    /// Each load, in order.
    loads: Vec<Duration>,
    /// Partial syncs of one Service's endpoint change: render and load together.
    partial: Samples,
}

impl SyncResult {
    fn median(&self) -> Duration {
        let mut v = self.loads.clone();
        v.sort();
        v[v.len() / 2]
    }
}

fn full_sync(id: u32) -> anyhow::Result<Vec<SyncResult>> {
    let ns = Netns::new(format!("rkube-bench-{id:06x}-sync"))?;
    let nft = ns.nsenter("nft");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = Vec::new();
    for services in SYNC_SIZES {
        let ports = synthetic_ports(services);
        let started = Instant::now();
        let script = rkube_proxy::nft::render(&ports);
        let render = started.elapsed();
        let mut loads = Vec::new();
        for _ in 0..SYNC_RUNS {
            let started = Instant::now();
            rt.block_on(rkube_proxy::nft::apply(&nft, &script))
                .with_context(|| format!("loading {services} Services"))?;
            loads.push(started.elapsed());
        }
        eprintln!("full sync of {services} Services: {loads:?}");
        let mut partial = Samples::default();
        let mut now = ports;
        for k in 0..PARTIAL_SAMPLES {
            let mut next = now.clone();
            let i = (k * 7919) % services;
            let ep = SocketAddrV4::new(Ipv4Addr::new(10, 245, (k / 250) as u8, (k % 250) as u8 + 1), 8080);
            next[i].endpoints = vec![ep];
            let started = Instant::now();
            let script = rkube_proxy::nft::render_partial(&now, &next).context("no partial sync")?;
            rt.block_on(rkube_proxy::nft::apply(&nft, &script))
                .with_context(|| format!("partial sync among {services} Services"))?;
            partial.extend([started.elapsed()]);
            now = next;
        }
        out.push(SyncResult {
            services,
            render,
            bytes: script.len(),
            loads,
            partial,
        });
    }
    Ok(out)
}

/// A node namespace with a bridge, two pods running busybox httpd on 8080
/// and a client pod, as in the proxy's end-to-end test (the ingress suite
/// uses it too).
pub(crate) struct Cluster {
    pub(crate) pods: Vec<(Netns, Ipv4Addr, Child)>,
    pub(crate) client: Netns,
    pub(crate) node: Netns,
}

impl Cluster {
    pub(crate) fn new(id: u32, dir: &std::path::Path) -> anyhow::Result<Cluster> {
        let node = Netns::new(format!("rkube-bench-{id:06x}-node"))?;
        node.ip(&["link", "add", "rkbr0", "type", "bridge"])?;
        node.ip(&["addr", "add", &format!("{GW}/24"), "dev", "rkbr0"])?;
        node.ip(&["link", "set", "rkbr0", "up"])?;
        let mut fwd: Vec<String> = node.nsenter("sysctl");
        fwd.extend(["-qw", "net.ipv4.ip_forward=1"].map(String::from));
        sh(&fwd.iter().map(String::as_str).collect::<Vec<_>>())?;
        let make = |i: u8, name: &str| -> anyhow::Result<(Netns, Ipv4Addr)> {
            let ns = Netns::new(format!("rkube-bench-{id:06x}-{name}"))?;
            let veth = format!("rkb{id:06x}{i}");
            let ip = Ipv4Addr::new(10, 244, 7, 10 + i);
            node.ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
            ])?;
            node.ip(&["link", "set", &veth, "master", "rkbr0", "up"])?;
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
            ns.ip(&["route", "add", "10.96.0.0/12", "via", &GW.to_string()])?;
            Ok((ns, ip))
        };
        let mut pods = Vec::new();
        for i in 0..2u8 {
            let (ns, ip) = make(i, &format!("web-{i}"))?;
            let www = dir.join(format!("web-{i}"));
            std::fs::create_dir_all(&www)?;
            std::fs::write(www.join("index.html"), format!("web-{i}"))?;
            let mut cmd = ns.nsenter("/bin/busybox");
            cmd.extend(["httpd", "-f", "-p", "8080", "-h"].map(String::from));
            cmd.push(www.display().to_string());
            let child = Command::new(&cmd[0])
                .args(&cmd[1..])
                .stdin(Stdio::null())
                .spawn()
                .context("cannot start busybox httpd (package busybox)")?;
            pods.push((ns, ip, child));
        }
        let (client, _) = make(9, "client")?;
        Ok(Cluster { pods, client, node })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, _, child) in &mut self.pods {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct LiveResult {
    latency: Samples,
    direct: Vec<f64>,
    cluster_ip: Vec<f64>,
    /// Each request's time (connect to the end of the answer), per mode: a
    /// throughput ratio is only as good as the two distributions behind it.
    direct_requests: Samples,
    cluster_ip_requests: Samples,
    failures: usize,
}

fn live(cluster: &Cluster, dir: &std::path::Path) -> anyhow::Result<LiveResult> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server = rt
        .block_on(rkube_apiserver::start(rkube_apiserver::Config::local(
            dir.join("apiserver"),
        )))
        .context("cannot start rkube's apiserver")?;
    let url = server.url();
    let mut config = rkube_proxy::Config::new(url.clone(), "bench-node");
    config.nft_command = cluster.node.nsenter("nft");
    config.conntrack_command = cluster.node.nsenter("conntrack");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let proxy = rt.spawn(rkube_proxy::run(config, async move {
        let _ = stopped.await;
    }));
    let result = rt.block_on(measure_live(&url, cluster));
    let _ = stop.send(());
    let proxy_result = rt.block_on(proxy);
    let stopped = rt.block_on(server.stop());
    let r = result?;
    proxy_result
        .context("the proxy panicked")?
        .context("the proxy failed")?;
    stopped.context("stopping the apiserver")?;
    Ok(r)
}

fn service(name: &str) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}]}
    }))?)
}

fn endpoints(name: &str, ips: &[Ipv4Addr]) -> anyhow::Result<Endpoints> {
    let addresses: Vec<_> = ips
        .iter()
        .map(|ip| serde_json::json!({"ip": ip.to_string()}))
        .collect();
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "subsets": [{"addresses": addresses, "ports": [{"port": 8080, "protocol": "TCP"}]}]
    }))?)
}

fn cluster_ip(svc: &Service) -> anyhow::Result<Ipv4Addr> {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.parse().ok())
        .context("the apiserver gave the Service no ClusterIP")
}

async fn measure_live(url: &str, cluster: &Cluster) -> anyhow::Result<LiveResult> {
    let client = Client::connect(url)?;
    let svcs = Api::<Service>::namespaced(client.clone(), "default");
    let eps = Api::<Endpoints>::namespaced(client.clone(), "default");
    eprintln!("creating {LATENCY_SERVICES} Services with 2 endpoints each");
    let bulk = futures::stream::iter(0..LATENCY_SERVICES).map(|i| {
        let (svcs, eps) = (svcs.clone(), eps.clone());
        async move {
            let name = format!("svc-{i:05}");
            svcs.create(&service(&name)?).await?;
            let base = u32::from(Ipv4Addr::new(10, 244, 100, 0)) + 2 * i as u32;
            eps.create(&endpoints(
                &name,
                &[Ipv4Addr::from(base), Ipv4Addr::from(base + 1)],
            )?)
            .await?;
            anyhow::Ok(())
        }
    });
    let results: Vec<anyhow::Result<()>> = bulk.buffer_unordered(16).collect().await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;

    // the Service measured, and where the proxy puts its rules
    let lat = svcs.create(&service("latency")?).await?;
    let web = svcs.create(&service("web")?).await?;
    let pod_ips: Vec<Ipv4Addr> = cluster.pods.iter().map(|(_, ip, _)| *ip).collect();
    eps.create(&endpoints("web", &pod_ips)?).await?;
    let mut next_ip = u32::from(Ipv4Addr::new(10, 244, 200, 1));
    eps.create(&endpoints("latency", &[Ipv4Addr::from(next_ip)])?)
        .await?;
    let all_svcs: Vec<Arc<Service>> = Api::<Service>::all(client.clone())
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    let all_eps = Api::<Endpoints>::all(client.clone())
        .list(&Default::default())
        .await?
        .items;
    let model = rkube_proxy::model::service_ports(&all_svcs, |ns, name| {
        all_eps
            .iter()
            .find(|e| {
                e.metadata
                    .as_ref()
                    .is_some_and(|m| m.namespace == ns && m.name == name)
            })
            .cloned()
            .map(Arc::new)
    });
    let lat_ip = cluster_ip(&lat)?;
    let index = model
        .iter()
        .position(|p| p.cluster_ip == Some(lat_ip))
        .context("the latency Service is not in the proxy's model")?;
    let chain = rkube_proxy::nft::service_chain(&model[index]);
    let nft = cluster.node.nsenter("nft");
    let shows = |ip: Ipv4Addr| -> bool {
        Command::new(&nft[0])
            .args(&nft[1..])
            .args(["list", "chain", "ip", "rkube", &chain])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("dnat to {ip}:8080")))
    };
    let wait_for = |ip: Ipv4Addr, limit: Duration| -> anyhow::Result<Duration> {
        let started = Instant::now();
        while !shows(ip) {
            anyhow::ensure!(started.elapsed() < limit, "{ip} never reached chain {chain}");
        }
        Ok(started.elapsed())
    };
    tokio::task::block_in_place(|| wait_for(Ipv4Addr::from(next_ip), Duration::from_secs(60)))?;
    eprintln!("initial sync done; measuring network programming latency");
    let mut latency = Samples::default();
    for _ in 0..LATENCY_SAMPLES {
        next_ip += 1;
        let ip = Ipv4Addr::from(next_ip);
        let mut ep = endpoints("latency", &[ip])?;
        let started = Instant::now();
        let old = eps.get("latency").await?;
        ep.metadata = old.metadata;
        eps.update(&ep).await?;
        tokio::task::block_in_place(|| wait_for(ip, Duration::from_secs(10)))?;
        latency.extend([started.elapsed()]);
        // beyond the proxy's batching window, so each change is one sync
        tokio::time::sleep(Duration::from_millis(150)).await;
    }

    eprintln!("HTTP throughput: direct vs ClusterIP");
    let vip = SocketAddrV4::new(cluster_ip(&web)?, 80);
    let direct: Vec<SocketAddrV4> = pod_ips.iter().map(|ip| SocketAddrV4::new(*ip, 8080)).collect();
    let client_ns = cluster.client.path();
    tokio::task::block_in_place(|| {
        // the rules for web are in: one request through the ClusterIP answers
        let started = Instant::now();
        while requests(&client_ns, &[vip], 1, 1).map(|r| r.1).unwrap_or(1) != 0 {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "{vip} never answered"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let (mut d, mut c, mut failures) = (Vec::new(), Vec::new(), 0);
        let (mut d_times, mut c_times) = (Samples::default(), Samples::default());
        // warm both paths (neighbours, httpd pages in cache), then
        // alternate which mode goes first so drift in the machine's load
        // does not favour one
        requests(&client_ns, &direct, 200, CLIENT_THREADS)?;
        requests(&client_ns, &[vip], 200, CLIENT_THREADS)?;
        for round in 0..ROUNDS {
            for via_service in [round % 2 == 1, round % 2 == 0] {
                let targets = if via_service { &[vip][..] } else { &direct[..] };
                let (rate, failed, times) =
                    requests(&client_ns, targets, REQUESTS_PER_ROUND, CLIENT_THREADS)?;
                failures += failed;
                if via_service {
                    c.push(rate);
                    c_times.extend(times);
                } else {
                    d.push(rate);
                    d_times.extend(times);
                }
            }
        }
        Ok(LiveResult {
            latency,
            direct: d,
            cluster_ip: c,
            direct_requests: d_times,
            cluster_ip_requests: c_times,
            failures,
        })
    })
}

/// `total` GETs (a connection each) from `threads` threads in the
/// namespace at `ns`, spread over `targets`: requests/s, failures, and
/// each successful request's time.
fn requests(
    ns: &str,
    targets: &[SocketAddrV4],
    total: usize,
    threads: usize,
) -> anyhow::Result<(f64, usize, Vec<Duration>)> {
    let file = std::fs::File::open(ns).with_context(|| format!("cannot open {ns}"))?;
    let started = Instant::now();
    let per_thread: Vec<(usize, Vec<Duration>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let file = &file;
                s.spawn(move || {
                    if nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                        return (total / threads, Vec::new());
                    }
                    let (mut failed, mut times) = (0, Vec::with_capacity(total / threads));
                    for i in 0..total / threads {
                        let began = Instant::now();
                        match get(targets[(i + t) % targets.len()]) {
                            Ok(()) => times.push(began.elapsed()),
                            Err(_) => failed += 1,
                        }
                    }
                    (failed, times)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((total / threads, Vec::new())))
            .collect()
    });
    let done = total / threads * threads;
    let rate = done as f64 / started.elapsed().as_secs_f64();
    let failed = per_thread.iter().map(|(f, _)| f).sum();
    Ok((
        rate,
        failed,
        per_thread.into_iter().flat_map(|(_, t)| t).collect(),
    ))
}

fn get(addr: SocketAddrV4) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::V4(addr), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    if body.starts_with(b"HTTP/1.0 200") || body.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other("not 200"))
    }
}

fn render(sync: &[SyncResult], live: &LiveResult) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## proxy: nftables mode\n");
    let _ = writeln!(
        s,
        "Inside network namespaces the suite creates, on this machine ({} cores).\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let _ = writeln!(s, "| full sync (2 endpoints per Service) | render | nft -f, median of {SYNC_RUNS} | each load | ruleset | partial sync of one Service, p50 / p99 of {PARTIAL_SAMPLES} |");
    let _ = writeln!(s, "| --- | ---: | ---: | --- | ---: | ---: |");
    for r in sync {
        let loads: Vec<String> = r
            .loads
            .iter()
            .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
            .collect();
        let _ = writeln!(
            s,
            "| {} Services | {:.1} ms | {:.0} ms | {} | {:.1} MB | {:.1} / {:.1} ms |",
            r.services,
            r.render.as_secs_f64() * 1e3,
            r.median().as_secs_f64() * 1e3,
            loads.join(", "),
            r.bytes as f64 / 1e6,
            r.partial.quantile_ms(0.5),
            r.partial.quantile_ms(0.99)
        );
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (direct, via) = (median(&live.direct), median(&live.cluster_ip));
    let rounds = |v: &[f64]| v.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
    let _ = writeln!(s, "\n| live, with the real proxy and apiserver | value |");
    let _ = writeln!(s, "| --- | ---: |");
    let _ = writeln!(
        s,
        "| network programming latency p50 ({LATENCY_SAMPLES} Endpoints updates, {LATENCY_SERVICES} Services) | {:.0} ms |",
        live.latency.quantile_ms(0.5)
    );
    let _ = writeln!(
        s,
        "| network programming latency p99 | {:.0} ms |",
        live.latency.quantile_ms(0.99)
    );
    let _ = writeln!(
        s,
        "| HTTP requests/s, pods directly ({CLIENT_THREADS} threads, new connection each; median of rounds {}) | {direct:.0} |",
        rounds(&live.direct)
    );
    let _ = writeln!(
        s,
        "| HTTP requests/s, through the ClusterIP (rounds {}) | {via:.0} |",
        rounds(&live.cluster_ip)
    );
    let _ = writeln!(s, "| ClusterIP / direct | {:.1} % |", 100.0 * via / direct);
    for (mode, t) in [
        ("pods directly", &live.direct_requests),
        ("through the ClusterIP", &live.cluster_ip_requests),
    ] {
        let _ = writeln!(
            s,
            "| one request {mode}, p50 / p99 / max | {:.2} / {:.2} / {:.1} ms |",
            t.quantile_ms(0.5),
            t.quantile_ms(0.99),
            t.quantile_ms(1.0)
        );
    }
    let _ = writeln!(s, "| failed requests | {} |", live.failures);
    let tenk = sync.iter().find(|r| r.services == 10_000).map(SyncResult::median);
    let _ = writeln!(
        s,
        "\nTargets: 10,000 Services synced in under 1 s ({}); one change among {LATENCY_SERVICES} Services in the \
         kernel within 50 ms p99 ({}); ClusterIP throughput at least 95 % of direct ({}). \
         Latency includes the apiserver write, the watch, the proxy's batching of changes (a change waits at \
         most 100 ms for others), the partial sync (rendering and loading the changed Service's chains), and \
         the polling (one `nft list chain` every few ms).",
        if tenk.is_some_and(|d| d < Duration::from_secs(1)) { "met" } else { "missed" },
        if live.latency.quantile_ms(0.99) <= 50.0 { "met" } else { "missed" },
        if via >= 0.95 * direct { "met" } else { "missed" },
    );
    s
}
