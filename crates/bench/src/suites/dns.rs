//! The cluster DNS (`rkube-dns`, as rkube-proxy serves it on every node)
//! beside Debian's dnsmasq, on loopback, in the same run:
//! * answers/s and latency for cluster names: 64 concurrent clients, each a
//!   UDP socket sending one A query, waiting for its answer, then the next,
//!   for `--seconds`, over 1,000 Service names. rkube answers from a zone
//!   built from 1,000 Services (in-memory informers); dnsmasq answers the
//!   same names from a hosts file (`--addn-hosts`). The two alternate over
//!   5 rounds (which goes first alternates too); the table shows the median
//!   round's rate with the slowest and fastest round, the p50/p99 of every
//!   answer of that server, and the p99 of each round (median, min–max), so
//!   one unlucky round on a shared machine shows as the spread it is;
//! * time from a Service's creation to its name resolving: the real
//!   apiserver (in-process, 1,000 Services stored) and the DNS server's
//!   informers watching it; per sample a new Service, timed from just
//!   before the create call until a query polled every millisecond answers
//!   its ClusterIP (30 samples).
//!
//! The load generator runs in this process on its own 2 threads; rkube's
//! server gets 1 more, as dnsmasq is one single-threaded process (with 2 server
//! threads, four busy threads on a 2-core machine put the scheduler's time
//! slice into the p99). Needs the `dnsmasq` binary (Debian package
//! dnsmasq-base).

use crate::stats::Samples;
use crate::Args;
use anyhow::Context;
use futures::StreamExt;
use rkube_api::core::v1::{Endpoints, Pod, Service};
use rkube_client::runtime::{Event, WatcherConfig};
use rkube_client::{Api, Client, Informer};
use rkube_dns::proto::rr::RecordType;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NAMES: usize = 1_000;
const CLIENTS: usize = 64;
const ROUNDS: usize = 5;
const CREATE_SAMPLES: usize = 30;

pub fn run(args: &Args) -> anyhow::Result<String> {
    let dir = tempfile::Builder::new()
        .prefix("rkube-bench-dns-")
        .tempdir_in(&args.tmp_dir)
        .with_context(|| format!("cannot create a directory in {}", args.tmp_dir.display()))?;
    let server_rt = runtime(1)?;
    let client_rt = runtime(2)?;

    let names: Vec<String> = (0..NAMES)
        .map(|i| format!("svc-{i:05}.bench.svc.cluster.local"))
        .collect();
    let ip = |i: usize| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 10 + i as u32);
    let rkube = server_rt.block_on(start_rkube(&names, ip))?;
    let hosts = dir.path().join("hosts");
    let lines: String = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{} {n}\n", ip(i)))
        .collect();
    std::fs::write(&hosts, lines)?;
    let dnsmasq = Dnsmasq::start(&hosts)?;

    let mut results: [Rounds; 2] = Default::default();
    let phase = Duration::from_secs(args.seconds);
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let server = [rkube.addr, dnsmasq.addr][k];
            let (rate, lat, errors) = client_rt.block_on(load(server, &names, phase));
            let mut this = Samples::default();
            this.extend(lat.iter().copied());
            eprintln!(
                "round {round} {}: {rate:.0} answers/s, p99 {:.3} ms, {errors} errors",
                ["rkube-dns", "dnsmasq"][k],
                this.quantile_ms(0.99)
            );
            anyhow::ensure!(
                errors * 100 <= lat.len() as u64 + errors,
                "more than 1% of the queries failed"
            );
            results[k].rates.push(rate);
            results[k].p99s.push(this.quantile_ms(0.99));
            results[k].all.extend(lat);
        }
    }
    drop(dnsmasq);
    drop(rkube);
    let create = server_rt.block_on(creation_to_answer(dir.path()))?;
    Ok(render(&results, &create))
}

/// One server's rounds: each round's rate and p99, and every answer's latency.
#[derive(Default)]
struct Rounds {
    rates: Vec<f64>,
    p99s: Vec<f64>,
    all: Samples,
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?)
}

/// An informer over a fixed list of objects.
fn fixed<K: rkube_api::Resource>(items: Vec<K>) -> anyhow::Result<Informer<K>> {
    let inf = Informer::from_events(
        futures::stream::iter([Event::Resync(items)])
            .chain(futures::stream::pending())
            .boxed(),
    );
    inf.start()?;
    Ok(inf)
}

fn loopback_config() -> rkube_dns::Config {
    let mut c = rkube_dns::Config::new();
    c.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.interface = None;
    // never used: every name asked is the cluster's
    c.upstreams = vec![SocketAddr::from(([127, 0, 0, 1], 9))];
    c
}

async fn start_rkube(
    names: &[String],
    ip: impl Fn(usize) -> Ipv4Addr,
) -> anyhow::Result<rkube_dns::DnsServer> {
    let services: Vec<Service> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let name = n.split('.').next().unwrap_or_default();
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "bench"},
                "spec": {"clusterIP": ip(i).to_string(), "ports": [{"name": "http", "port": 80}]}
            }))
        })
        .collect::<Result<_, _>>()?;
    let server = rkube_dns::start(
        loopback_config(),
        fixed(services)?,
        fixed(Vec::<Endpoints>::new())?,
        fixed(Vec::<Pod>::new())?,
    )
    .await?;
    // the zone is built once the caches say they are synced
    let probe = names[0].clone();
    for _ in 0..500 {
        if let Ok(m) =
            rkube_dns::client::udp(server.addr, &probe, RecordType::A, Duration::from_secs(1)).await
        {
            if !m.answers.is_empty() {
                return Ok(server);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("rkube-dns did not answer {probe}")
}

/// dnsmasq on 127.0.0.1 answering from `hosts` only; stopped on drop.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Dnsmasq {
    fn start(hosts: &std::path::Path) -> anyhow::Result<Dnsmasq> {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--user=root",
                "--group=root",
                "--local-ttl=5",
                "--cache-size=10000",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run dnsmasq (install the Debian package dnsmasq-base)")?;
        let d = Dnsmasq {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        for _ in 0..200 {
            let answer = rt.block_on(rkube_dns::client::udp(
                d.addr,
                "svc-00000.bench.svc.cluster.local",
                RecordType::A,
                Duration::from_millis(200),
            ));
            if answer.is_ok_and(|m| !m.answers.is_empty()) {
                return Ok(d);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("dnsmasq did not answer on {}", d.addr)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `CLIENTS` clients asking `server` for `names` in turn for `phase`:
/// answers per second, each answer's latency, and the queries that failed
/// (timed out, or answered without an address).
async fn load(server: SocketAddr, names: &[String], phase: Duration) -> (f64, Vec<Duration>, u64) {
    let queries: Arc<Vec<Vec<u8>>> = Arc::new(
        names
            .iter()
            .map(|n| rkube_dns::client::request(0, n, RecordType::A).unwrap_or_default())
            .collect(),
    );
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + phase;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (queries, errors) = (queries.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let Ok(sock) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
                return lat;
            };
            if sock.connect(server).await.is_err() {
                return lat;
            }
            let mut buf = vec![0u8; 1500];
            let mut i = c * 7;
            let mut id: u16 = (c as u16) << 8;
            while Instant::now() < deadline {
                let mut q = queries[i % queries.len()].clone();
                i += 1;
                id = id.wrapping_add(1);
                q[..2].copy_from_slice(&id.to_be_bytes());
                let t = Instant::now();
                if sock.send(&q).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let ok = tokio::time::timeout(Duration::from_secs(1), async {
                    loop {
                        let n = sock.recv(&mut buf).await.ok()?;
                        if n >= 12 && buf[..2] == id.to_be_bytes() {
                            // NOERROR with at least one answer
                            return Some(buf[3] & 0x0f == 0 && buf[6..8] != [0, 0]);
                        }
                    }
                })
                .await;
                match ok {
                    Ok(Some(true)) => lat.push(t.elapsed()),
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(lat) = t.await {
            all.extend(lat);
        }
    }
    let elapsed = started.elapsed();
    let rate = all.len() as f64 / elapsed.as_secs_f64();
    (rate, all, errors.load(Ordering::Relaxed))
}

/// Creation-to-answer latencies, with the real apiserver and informers.
async fn creation_to_answer(dir: &std::path::Path) -> anyhow::Result<Samples> {
    let server = rkube_apiserver::start(rkube_apiserver::Config::local(dir.join("apiserver")))
        .await
        .context("cannot start rkube's apiserver")?;
    let result = measure_creation(&server.url()).await;
    server.stop().await.context("stopping the apiserver")?;
    result
}

async fn measure_creation(url: &str) -> anyhow::Result<Samples> {
    let client = Client::connect(url)?;
    let svcs = Api::<Service>::namespaced(client.clone(), "default");
    eprintln!("creating {NAMES} Services");
    let bulk = futures::stream::iter(0..NAMES).map(|i| {
        let svcs = svcs.clone();
        async move {
            svcs.create(&service(&format!("svc-{i:05}"))?)
                .await
                .map_err(anyhow::Error::from)
        }
    });
    let results: Vec<anyhow::Result<Service>> = bulk.buffer_unordered(16).collect().await;
    results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;

    let (services, endpoints, pods) = informers(&client)?;
    let dns = rkube_dns::start(loopback_config(), services, endpoints, pods).await?;
    let first = "svc-00000.default.svc.cluster.local";
    let ready = Instant::now();
    while rkube_dns::client::udp(dns.addr, first, RecordType::A, Duration::from_secs(1))
        .await
        .map_or(true, |m| m.answers.is_empty())
    {
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(30),
            "rkube-dns never answered {first}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut samples = Samples::default();
    for i in 0..CREATE_SAMPLES {
        let name = format!("late-{i:03}");
        let fqdn = format!("{name}.default.svc.cluster.local");
        let started = Instant::now();
        let created = svcs.create(&service(&name)?).await?;
        let ip: Ipv4Addr = created
            .spec
            .as_ref()
            .map(|s| s.cluster_ip.clone())
            .unwrap_or_default()
            .parse()
            .context("the apiserver gave the Service no ClusterIP")?;
        loop {
            let answer = rkube_dns::client::udp(dns.addr, &fqdn, RecordType::A, Duration::from_secs(1)).await;
            if answer.is_ok_and(|m| rkube_dns::client::addresses(&m) == [std::net::IpAddr::V4(ip)]) {
                samples.extend([started.elapsed()]);
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "{fqdn} did not resolve within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    drop(dns);
    Ok(samples)
}

/// The three informers rkube-proxy gives the DNS server, over `client`, started.
fn informers(client: &Client) -> anyhow::Result<(Informer<Service>, Informer<Endpoints>, Informer<Pod>)> {
    let config = WatcherConfig::default();
    let s = Informer::new(Api::<Service>::all(client.clone()), config.clone());
    let e = Informer::new(Api::<Endpoints>::all(client.clone()), config.clone());
    let p = Informer::new(Api::<Pod>::all(client.clone()), config);
    s.start()?;
    e.start()?;
    p.start()?;
    Ok((s, e, p))
}

fn service(name: &str) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}]}
    }))?)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `v`'s median with its smallest and largest value: `m (lo–hi)`.
fn spread(v: &[f64], decimals: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.decimals$} ({lo:.decimals$}–{hi:.decimals$})", median(v))
}

fn render(results: &[Rounds; 2], create: &Samples) -> String {
    let mut s = String::from("## dns\n\n");
    let _ = writeln!(
        s,
        "{NAMES} cluster names (A), {CLIENTS} concurrent UDP clients on loopback, {ROUNDS} alternating rounds; the median round (slowest–fastest).\n"
    );
    let _ = writeln!(
        s,
        "| server | answers/s, median round (min–max) | p50 ms | p99 ms, all answers | p99 ms per round, median (min–max) |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: |");
    for (k, name) in ["rkube-dns (1 thread)", "dnsmasq (hosts file)"]
        .iter()
        .enumerate()
    {
        let r = &results[k];
        let _ = writeln!(
            s,
            "| {name} | {} | {:.3} | {:.3} | {} |",
            spread(&r.rates, 0),
            r.all.quantile_ms(0.5),
            r.all.quantile_ms(0.99),
            spread(&r.p99s, 3)
        );
    }
    let (rkube, dnsmasq) = (&results[0], &results[1]);
    let better_rounds = rkube
        .p99s
        .iter()
        .zip(&dnsmasq.p99s)
        .filter(|(r, d)| r <= d)
        .count();
    let _ = writeln!(
        s,
        "\nTarget, at least dnsmasq's rate: {}; p99 no worse (all answers): {}; rkube-dns's p99 no worse than dnsmasq's in the same round in {better_rounds} of {ROUNDS} rounds.",
        if median(&rkube.rates) >= median(&dnsmasq.rates) { "met" } else { "missed" },
        if rkube.all.quantile_ms(0.99) <= dnsmasq.all.quantile_ms(0.99) { "met" } else { "missed" },
    );
    let _ = writeln!(
        s,
        "\nA Service's creation (apiserver write, watch, zone rebuild) to its name answering, {} samples with {NAMES} Services stored: p50 {:.1} ms, p99 {:.1} ms.",
        create.len(),
        create.quantile_ms(0.5),
        create.quantile_ms(0.99)
    );
    s
}
