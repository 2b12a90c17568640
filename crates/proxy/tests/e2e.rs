//! End to end, inside network namespaces this test creates (no route out
//! of them, so no packet can leave the machine): a node namespace with a
//! bridge, three "pods" (namespaces with a veth on the bridge, busybox
//! httpd answering its own name), a client pod; the real apiserver and the
//! proxy under test run in a runtime whose threads joined the node
//! namespace. The test plays the kubelet and the endpoints controller by
//! writing Endpoints itself.

use rkube_api::core::v1::{Endpoints, Service};
use rkube_client::Api;
use rkube_testing::{eventually, Daemon, TestApiServer};
use serde_json::json;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const GW: &str = "10.244.7.1";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: String) -> Self {
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }
    fn nsenter(&self) -> Vec<String> {
        vec!["nsenter".into(), format!("--net={}", self.path().display())]
    }
    fn ip(&self, args: &[&str]) {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

struct Pod {
    ns: Netns,
    ip: Ipv4Addr,
    name: String,
    httpd: Option<Child>,
}

impl Pod {
    fn stop(&mut self) {
        if let Some(mut c) = self.httpd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Node, pods and a client, declared in drop order: pods before the node.
struct Cluster {
    pods: Vec<Pod>,
    client: Pod,
    node: Netns,
    _www: tempfile::TempDir,
}

fn cluster() -> Cluster {
    let id: u32 = rand::random::<u32>() & 0xffffff;
    let node = Netns::new(format!("rkube-proxytest-{id:06x}-node"));
    node.ip(&["link", "add", "rkbr0", "type", "bridge"]);
    node.ip(&["addr", "add", &format!("{GW}/24"), "dev", "rkbr0"]);
    node.ip(&["link", "set", "rkbr0", "up"]);
    // ClusterIPs from the node follow this route (nowhere but the bridge)
    node.ip(&["route", "add", "10.96.0.0/12", "dev", "rkbr0"]);
    // a node routes between its pods (the kubelet's or the host's setting)
    let mut fwd = node.nsenter();
    fwd.extend(["sysctl", "-qw", "net.ipv4.ip_forward=1"].map(String::from));
    sh(&fwd.iter().map(String::as_str).collect::<Vec<_>>());
    let www = tempfile::tempdir().unwrap();
    let make = |i: usize, name: &str, serve: bool| {
        let ns = Netns::new(format!("rkube-proxytest-{id:06x}-{name}"));
        let veth = format!("rkp{id:06x}{i}");
        let ip: Ipv4Addr = format!("10.244.7.{}", 10 + i).parse().unwrap();
        node.ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        node.ip(&["link", "set", &veth, "master", "rkbr0", "up"]);
        // hairpin: a pod reaching itself through its Service comes back out its own port
        let mut hairpin = node.nsenter();
        hairpin.extend(["bridge", "link", "set", "dev", &veth, "hairpin", "on"].map(String::from));
        sh(&hairpin.iter().map(String::as_str).collect::<Vec<_>>());
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "10.96.0.0/12", "via", GW]);
        let httpd = serve.then(|| {
            let dir = www.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("index.html"), name).unwrap();
            let mut cmd = ns.nsenter();
            cmd.extend(["/bin/busybox", "httpd", "-f", "-p", "8080", "-h"].map(String::from));
            cmd.push(dir.display().to_string());
            Command::new(&cmd[0])
                .args(&cmd[1..])
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        });
        Pod {
            ns,
            ip,
            name: name.to_string(),
            httpd,
        }
    };
    let pods = (0..3).map(|i| make(i, &format!("web-{i}"), true)).collect();
    let client = make(9, "client", false);
    Cluster {
        pods,
        client,
        node,
        _www: www,
    }
}

/// GET / in the namespace at `ns`, from a thread that joined it.
fn get_in(ns: &std::path::Path, addr: SocketAddrV4) -> std::io::Result<String> {
    get_in_within(ns, addr, Duration::from_secs(2))
}

/// GET / with this long to connect.
fn get_in_within(ns: &std::path::Path, addr: SocketAddrV4, connect: Duration) -> std::io::Result<String> {
    let file = std::fs::File::open(ns)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            get(addr, connect)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("panicked")))
    })
}

fn get(addr: SocketAddrV4, connect: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::V4(addr), connect)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: svc\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    match body.split_once("\r\n\r\n") {
        Some((head, b)) if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") => {
            Ok(b.trim().to_string())
        }
        _ => Err(std::io::Error::other(format!("bad reply: {body:?}"))),
    }
}

/// Runs `body` on a tokio runtime whose threads are all in `ns`.
fn in_runtime<F: std::future::Future<Output = ()>>(ns: &Netns, body: impl FnOnce() -> F + Send) {
    let file = std::fs::File::open(ns.path()).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(body());
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
}

fn endpoints(name: &str, ready: &[&Pod], not_ready: &[&Pod]) -> Endpoints {
    let addr = |p: &&Pod| json!({"ip": p.ip.to_string(), "targetRef": {"kind": "Pod", "name": p.name}});
    let subsets = if ready.is_empty() && not_ready.is_empty() {
        json!([])
    } else {
        json!([{
            "addresses": ready.iter().map(addr).collect::<Vec<_>>(),
            "notReadyAddresses": not_ready.iter().map(addr).collect::<Vec<_>>(),
            "ports": [{"port": 8080, "protocol": "TCP"}],
        }])
    };
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}, "subsets": subsets}))
        .unwrap()
}

async fn put_endpoints(api: &Api<Endpoints>, ep: Endpoints) {
    match api.get_opt(&ep.metadata.as_ref().unwrap().name).await.unwrap() {
        Some(old) => {
            let mut ep = ep;
            ep.metadata = old.metadata;
            api.update(&ep).await.unwrap();
        }
        None => {
            api.create(&ep).await.unwrap();
        }
    }
}

fn service_addr(svc: &Service) -> SocketAddrV4 {
    SocketAddrV4::new(svc.spec.as_ref().unwrap().cluster_ip.parse().unwrap(), 80)
}

/// Polls until a GET from `ns` succeeds (the rules arrived), at most 5 s.
async fn wait_serving(ns: &std::path::Path, addr: SocketAddrV4) {
    eventually(&format!("{addr} to answer"), Duration::from_secs(5), || {
        let ns = ns.to_path_buf();
        async move {
            let answer = tokio::task::spawn_blocking(move || get_in(&ns, addr)).await?;
            Ok(Some(answer?))
        }
    })
    .await
    .unwrap();
}

/// Runs `args` in the network namespace at `ns` and returns its stdout.
fn output_in(ns: &[String], args: &[&str]) -> String {
    let out = Command::new(&ns[0]).args(&ns[1..]).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Conntrack entries without a reply, for failure messages.
fn unreplied_flows(ns: &[String]) -> String {
    output_in(ns, &["conntrack", "-L"])
        .lines()
        .filter(|l| l.contains("[UNREPLIED]"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn suite(mode: rkube_proxy::Mode) {
    if !is_root() {
        eprintln!("skipping: network namespaces need root");
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("rkube_proxy=debug")
        .try_init();
    let mut c = cluster();
    let node_ns = c.node.nsenter();
    let node_path = c.node.path();
    let client_path = c.client.ns.path();
    in_runtime(&c.node, || async {
        let server = TestApiServer::start().await.unwrap();
        let client = server.client();
        let mut config = rkube_proxy::Config::new(server.url(), "node-1");
        config.mode = mode;
        config.nft_command = node_ns.iter().cloned().chain(["nft".to_string()]).collect();
        config.ip_command = node_ns.iter().cloned().chain(["ip".to_string()]).collect();
        config.conntrack_command = node_ns.iter().cloned().chain(["conntrack".to_string()]).collect();
        let proxy = Daemon::spawn(|stop| rkube_proxy::run(config.clone(), stop));

        let svcs = Api::<Service>::namespaced(client.clone(), "default");
        let eps = Api::<Endpoints>::namespaced(client.clone(), "default");
        let pods = &c.pods;
        let client_ns = c.client.ns.nsenter();

        // A client that tries a Service before the proxy programmed it, and
        // later connects from the same source port, is served: its first
        // attempt must not pin that port to "no translation" for the two
        // minutes a SYN_SENT conntrack entry lives. The client gets one
        // source port only, so the second connection reuses it.
        let sysctl = |range: &str| {
            let mut cmd: Vec<&str> = client_ns.iter().map(String::as_str).collect();
            let setting = format!("net.ipv4.ip_local_port_range={range}");
            cmd.extend(["sysctl", "-qw", &setting]);
            sh(&cmd);
        };
        let ports_before = output_in(&client_ns, &["sysctl", "-n", "net.ipv4.ip_local_port_range"]);
        sysctl("40123 40123");
        let early_addr = SocketAddrV4::new("10.96.200.10".parse().unwrap(), 80);
        let cp = client_path.clone();
        let first =
            tokio::task::spawn_blocking(move || get_in_within(&cp, early_addr, Duration::from_millis(300)))
                .await
                .unwrap();
        assert!(
            first.is_err(),
            "{early_addr} answered before its Service existed: {first:?}"
        );
        let early: Service = serde_json::from_value(json!({
            "metadata": {"name": "early"},
            "spec": {"clusterIP": early_addr.ip().to_string(), "ports": [{"port": 80, "targetPort": 8080}]}
        }))
        .unwrap();
        svcs.create(&early).await.unwrap();
        put_endpoints(&eps, endpoints("early", &[&pods[0]], &[])).await;
        // programmed: the node (another source) reaches it
        wait_serving(&node_path, early_addr).await;
        let cp = client_path.clone();
        let again = tokio::task::spawn_blocking(move || get_in(&cp, early_addr))
            .await
            .unwrap();
        assert!(
            again.as_ref().is_ok_and(|b| b == "web-0"),
            "the client's port is still stuck on its attempt from before the Service was programmed \
             (needs the conntrack tool): {again:?}\n{}",
            unreplied_flows(&node_ns)
        );
        sysctl(ports_before.trim());
        let web: Service = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
        }))
        .unwrap();
        let web = svcs.create(&web).await.unwrap();
        let addr = service_addr(&web);
        let node_port = web.spec.as_ref().unwrap().ports[0].node_port as u16;
        assert!((30000..=32767).contains(&node_port));
        put_endpoints(&eps, endpoints("web", &[&pods[0], &pods[1], &pods[2]], &[])).await;
        wait_serving(&client_path, addr).await;

        // 300 requests from a pod: every pod gets at least 20%
        let cp = client_path.clone();
        let counts = tokio::task::spawn_blocking(move || {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in 0..300 {
                *counts
                    .entry(get_in(&cp, addr).expect("request through the ClusterIP"))
                    .or_default() += 1;
            }
            counts
        })
        .await
        .unwrap();
        for p in pods {
            assert!(counts.get(&p.name).copied().unwrap_or(0) >= 60, "{counts:?}");
        }

        // from the node itself, and a NodePort on the node's address
        let np = SocketAddrV4::new(GW.parse().unwrap(), node_port);
        let (np_reply, local_reply) = tokio::task::spawn_blocking({
            let cp = client_path.clone();
            let node_path = node_path.clone();
            move || (get_in(&cp, np), get_in(&node_path, addr))
        })
        .await
        .unwrap();
        assert!(
            np_reply.as_ref().is_ok_and(|b| b.starts_with("web-")),
            "NodePort: {np_reply:?}"
        );
        assert!(
            local_reply.as_ref().is_ok_and(|b| b.starts_with("web-")),
            "from the node: {local_reply:?}"
        );

        // hairpin: a pod reaches itself through its own Service
        let p0 = pods[0].ns.path();
        let seen_self = tokio::task::spawn_blocking(move || {
            (0..30)
                .map(|_| get_in(&p0, addr).expect("hairpin request"))
                .any(|b| b == "web-0")
        })
        .await
        .unwrap();
        assert!(seen_self, "web-0 never answered itself through the Service");

        // an unready pod leaves the rotation within 2 s
        put_endpoints(&eps, endpoints("web", &[&pods[0], &pods[1]], &[&pods[2]])).await;
        let changed = Instant::now();
        let cp = client_path.clone();
        let last_seen = tokio::task::spawn_blocking(move || {
            let mut last = None;
            let mut clean = 0;
            while clean < 40 && changed.elapsed() < Duration::from_secs(5) {
                if get_in(&cp, addr).expect("request while a pod turns unready") == "web-2" {
                    last = Some(changed.elapsed());
                    clean = 0;
                } else {
                    clean += 1;
                }
            }
            (last, clean)
        })
        .await
        .unwrap();
        assert!(
            last_seen.1 >= 40 && last_seen.0.is_none_or(|t| t < Duration::from_secs(2)),
            "{last_seen:?}"
        );

        // no request fails while a pod is deleted: endpoint removed, then the process stops
        put_endpoints(&eps, endpoints("web", &[&pods[0], &pods[1], &pods[2]], &[])).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let cp = client_path.clone();
        let loop_task = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            let mut n = 0;
            while start.elapsed() < Duration::from_secs(3) {
                if let Err(e) = get_in(&cp, addr) {
                    return Err(format!("request {n} failed after {:?}: {e}", start.elapsed()));
                }
                n += 1;
            }
            Ok(n)
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        put_endpoints(&eps, endpoints("web", &[&pods[0], &pods[2]], &[])).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // SAFETY of the test: only the httpd this test started is stopped
        let httpd_pid = pods[1].httpd.as_ref().map(|c| c.id()).unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(httpd_pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let served = loop_task.await.unwrap().unwrap_or_else(|e| {
            panic!(
                "{e}\nunanswered conntrack entries:\n{}",
                unreplied_flows(&node_ns)
            )
        });
        assert!(served > 20, "only {served} requests in the loop");

        // a Service without endpoints refuses at once
        let empty: Service = serde_json::from_value(json!({
            "metadata": {"name": "empty"}, "spec": {"ports": [{"port": 80, "targetPort": 8080}]}
        }))
        .unwrap();
        let empty = svcs.create(&empty).await.unwrap();
        put_endpoints(&eps, endpoints("empty", &[], &[])).await;
        let eaddr = service_addr(&empty);
        // Until the proxy programmed it, the address leads nowhere (a SYN
        // sent then is lost and its retransmission a second later is the
        // first to be refused), so short attempts wait for the first
        // refusal; then a new connection, as a user would make, must be
        // refused at once.
        let cp = client_path.clone();
        let refused = tokio::task::spawn_blocking(move || {
            let start = Instant::now();
            loop {
                let r = get_in_within(&cp, eaddr, Duration::from_millis(200));
                if r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
                {
                    break;
                }
                if start.elapsed() > Duration::from_secs(8) {
                    return Err(format!("never refused: {r:?}"));
                }
            }
            let t = Instant::now();
            let r = get_in(&cp, eaddr);
            match r {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(t.elapsed()),
                other => Err(format!("refused once, then: {other:?}")),
            }
        })
        .await
        .unwrap()
        .unwrap();
        assert!(refused < Duration::from_millis(500), "refusal took {refused:?}");

        // sessionAffinity ClientIP: one client sticks to one pod
        let sticky: Service = serde_json::from_value(json!({
            "metadata": {"name": "sticky"},
            "spec": {"sessionAffinity": "ClientIP", "ports": [{"port": 80, "targetPort": 8080}]}
        }))
        .unwrap();
        let sticky = svcs.create(&sticky).await.unwrap();
        put_endpoints(&eps, endpoints("sticky", &[&pods[0], &pods[2]], &[])).await;
        let saddr = service_addr(&sticky);
        wait_serving(&client_path, saddr).await;
        let cp = client_path.clone();
        let answers: std::collections::HashSet<String> =
            tokio::task::spawn_blocking(move || (0..20).map(|_| get_in(&cp, saddr).unwrap()).collect())
                .await
                .unwrap();
        assert_eq!(answers.len(), 1, "affinity broken: {answers:?}");
        // another Service arriving replaces the whole table; the client stays where it was
        let later: Service = serde_json::from_value(json!({
            "metadata": {"name": "later"},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}]}
        }))
        .unwrap();
        let later = svcs.create(&later).await.unwrap();
        put_endpoints(&eps, endpoints("later", &[&pods[0]], &[])).await;
        wait_serving(&client_path, service_addr(&later)).await;
        let cp = client_path.clone();
        let after: std::collections::HashSet<String> =
            tokio::task::spawn_blocking(move || (0..20).map(|_| get_in(&cp, saddr).unwrap()).collect())
                .await
                .unwrap();
        assert_eq!(after, answers, "affinity forgotten when the rules were replaced");

        // restart: traffic keeps flowing while no proxy runs and after it is back
        proxy.stop().await.unwrap();
        if mode == rkube_proxy::Mode::Nftables {
            let cp = client_path.clone();
            let r = tokio::task::spawn_blocking(move || get_in(&cp, addr))
                .await
                .unwrap();
            assert!(r.is_ok(), "rules gone while the proxy was down: {r:?}");
            let again = Daemon::spawn(|stop| rkube_proxy::run(config.clone(), stop));
            wait_serving(&client_path, addr).await;
            again.stop().await.unwrap();
        }

        // --cleanup removes everything
        let mut cleanup = config.clone();
        cleanup.cleanup = true;
        rkube_proxy::run(cleanup, std::future::pending()).await.unwrap();
        let nft_left = Command::new(&node_ns[0])
            .args(&node_ns[1..])
            .args(["nft", "list", "table", "ip", "rkube"])
            .output()
            .unwrap();
        assert!(
            !nft_left.status.success(),
            "table ip rkube still there after --cleanup"
        );
        let link_left = Command::new(&node_ns[0])
            .args(&node_ns[1..])
            .args(["ip", "link", "show", "rkube-svc"])
            .output()
            .unwrap();
        assert!(
            !link_left.status.success(),
            "rkube-svc still there after --cleanup"
        );
        let lo = Command::new(&node_ns[0])
            .args(&node_ns[1..])
            .args(["ip", "-4", "addr", "show", "dev", "lo"])
            .output()
            .unwrap();
        let lo = String::from_utf8_lossy(&lo.stdout);
        assert!(
            !lo.contains("10.96."),
            "ClusterIPs left on lo after --cleanup: {lo}"
        );
        server.stop().await.unwrap();
    });
    c.pods.clear();
}

#[test]
fn nftables_mode_end_to_end() {
    suite(rkube_proxy::Mode::Nftables);
}

#[test]
fn userspace_mode_end_to_end() {
    suite(rkube_proxy::Mode::Userspace);
}

fn service_port(
    name: &str,
    ip: &str,
    node_port: Option<u16>,
    endpoints: &[&str],
) -> rkube_proxy::model::ServicePort {
    rkube_proxy::model::ServicePort {
        name: name.into(),
        cluster_ip: Some(ip.parse().unwrap()),
        load_balancer_ips: vec![],
        protocol: rkube_proxy::model::Protocol::Tcp,
        port: 80,
        node_port,
        affinity_timeout: None,
        endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
    }
}

/// `nft list table ip rkube` in the namespace, one rule, element or declaration a line,
/// sorted: the kernel lists map elements in its own order.
fn table_lines(nft: &[String]) -> Vec<String> {
    let listed = output_in(nft, &["list", "table", "ip", "rkube"]);
    let mut lines: Vec<String> = listed
        .lines()
        .flat_map(|l| l.split(", "))
        .map(|l| l.trim().trim_end_matches(',').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

/// The nftables dataplane writes only the Services that changed once it has loaded the
/// table, and the kernel ends up with exactly what a full sync of the same Services
/// gives; when the table is not what it last loaded (deleted behind its back) the partial
/// transaction fails and it writes the whole table instead.
#[test]
fn nftables_partial_syncs_end_where_a_full_sync_would() {
    use rkube_proxy::Dataplane as _;
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let ns = Netns::new(format!("rkube-partial-{:06x}", rand::random::<u32>() & 0xffffff));
    let nft: Vec<String> = ns.nsenter().into_iter().chain(["nft".to_string()]).collect();
    let conntrack: Vec<String> = ns
        .nsenter()
        .into_iter()
        .chain(["conntrack".to_string()])
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let before = vec![
        service_port(
            "default/a:",
            "10.96.0.2",
            Some(30080),
            &["10.244.7.10:8080", "10.244.7.11:8080"],
        ),
        service_port("default/b:", "10.96.0.3", None, &["10.244.7.12:8080"]),
        service_port("default/c:", "10.96.0.4", Some(30081), &[]),
        service_port("default/d:", "10.96.0.5", None, &["10.244.7.13:8080"]),
    ];
    let after = vec![
        // endpoints changed
        service_port(
            "default/a:",
            "10.96.0.2",
            Some(30080),
            &["10.244.7.11:8080", "10.244.7.14:8080"],
        ),
        // drained: its address now rejects
        service_port("default/b:", "10.96.0.3", None, &[]),
        // endpoints came
        service_port("default/c:", "10.96.0.4", Some(30081), &["10.244.7.15:8080"]),
        // d deleted, e created on d's address
        service_port("default/e:", "10.96.0.5", Some(30082), &["10.244.7.16:8080"]),
    ];
    let mut dataplane = rkube_proxy::nft::NftDataplane::new(nft.clone(), conntrack);
    rt.block_on(async {
        dataplane.sync(&before).await.unwrap();
        assert!(
            !dataplane.last_sync_partial,
            "the first sync writes the whole table"
        );
        dataplane.sync(&after).await.unwrap();
        assert!(
            dataplane.last_sync_partial,
            "a change to a loaded table is a partial sync"
        );
    });
    let partial = table_lines(&nft);
    assert!(
        partial.iter().any(|l| l.ends_with("dnat to 10.244.7.16:8080")),
        "{partial:#?}"
    );
    rt.block_on(rkube_proxy::nft::apply(&nft, &rkube_proxy::nft::render(&after)))
        .unwrap();
    assert_eq!(
        partial,
        table_lines(&nft),
        "partial sync vs full sync of the same Services"
    );

    // the table removed behind the proxy's back: the partial transaction fails, the
    // dataplane writes everything again
    rt.block_on(rkube_proxy::nft::apply(&nft, &rkube_proxy::nft::render_cleanup()))
        .unwrap();
    rt.block_on(dataplane.sync(&before)).unwrap();
    assert!(!dataplane.last_sync_partial);
    let recovered = table_lines(&nft);
    rt.block_on(rkube_proxy::nft::apply(&nft, &rkube_proxy::nft::render(&before)))
        .unwrap();
    assert_eq!(recovered, table_lines(&nft));
    rt.block_on(rkube_proxy::nft::apply(&nft, &rkube_proxy::nft::render_cleanup()))
        .unwrap();
}
