//! Services end to end: a Deployment of small HTTP servers that answer with their pod's
//! name, on two real nodes, behind a Service made to work by the real rkube-proxy in each
//! node's namespace; the same suite in nftables and in userspace mode. Then the same for
//! UDP: servers that answer each datagram with their pod's name, behind a `protocol: UDP`
//! Service, in both modes.

use anyhow::Context;
use rkube_api::core::v1::{Endpoints, Pod, Service};
use rkube_client::ListParams;
use rkube_e2e::{pod_ready, run, ClusterOptions, TestCluster};
use rkube_node_runtime::network::netns::run_in;
use rkube_testing::eventually;
use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

fn app(image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: whoami, namespace: default}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: whoami}}}}
  template:
    metadata: {{labels: {{app: whoami}}}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: web
        image: {image}
        # answers with the pod's name; on SIGTERM keeps serving 3 s more (the time the
        # proxies need to take it out of rotation), as well-behaved servers do
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && touch /tmp/ready && httpd -f -p 8080 -h /www & pid=$!; trap 'sleep 3; kill $pid; exit 0' TERM; wait"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          exec: {{command: ["cat", "/tmp/ready"]}}
          periodSeconds: 1
          failureThreshold: 1
        resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: whoami, namespace: default}}
spec:
  type: NodePort
  selector: {{app: whoami}}
  ports: [{{port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: nobody, namespace: default}}
spec:
  selector: {{app: nobody-has-this-label}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    )
}

/// One GET / through `addr` from node 0; the body is the answering pod's name.
/// Waits until, in one round of 30 requests through `ask`, every pod of `all` answered;
/// fails the test with what the last round saw and the cluster's state.
async fn every_pod_answers<F, Fut>(cluster: &TestCluster, what: &str, all: &BTreeSet<String>, ask: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let answered = eventually(what, Duration::from_secs(15), || async {
        let mut seen = BTreeSet::new();
        for _ in 0..30 {
            seen.insert(ask().await?);
        }
        anyhow::ensure!(&seen == all, "answered: {seen:?}");
        Ok(true)
    })
    .await;
    if let Err(e) = answered {
        panic!("{e:#}\n{}", cluster.diagnostics().await);
    }
}

async fn whoami(cluster: &TestCluster, addr: SocketAddr) -> anyhow::Result<String> {
    let (status, body) = cluster.nodes[0].http_get(addr, "/").await?;
    anyhow::ensure!(status == 200, "GET {addr} answered {status}: {body}");
    Ok(body.trim().to_string())
}

async fn ready_pods(cluster: &TestCluster) -> anyhow::Result<Vec<Pod>> {
    let pods = cluster.api::<Pod>("default")?;
    Ok(pods
        .list(&ListParams::default().labels("app=whoami"))
        .await?
        .items
        .into_iter()
        .filter(|p| {
            pod_ready(p)
                && p.metadata
                    .as_ref()
                    .is_some_and(|m| m.deletion_timestamp.is_empty())
        })
        .collect())
}

fn name(p: &Pod) -> String {
    p.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default()
}

/// Sends GETs until `pod` has not answered for `quiet` requests in a row; returns how long
/// after `since` the last answer from it came.
async fn left_rotation_after(cluster: &TestCluster, addr: SocketAddr, pod: &str, since: Instant) -> Duration {
    let mut last_seen = since;
    let mut streak = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while streak < 30 && Instant::now() < deadline {
        match whoami(cluster, addr).await {
            Ok(n) if n == pod => {
                last_seen = Instant::now();
                streak = 0;
            }
            _ => streak += 1,
        }
    }
    last_seen.duration_since(since)
}

async fn suite(netns: std::path::PathBuf, mode: rkube_proxy::Mode) -> anyhow::Result<()> {
    let cluster = TestCluster::start(
        netns,
        ClusterOptions {
            nodes: 2,
            proxy: Some(mode),
            ..Default::default()
        },
    )
    .await?;
    cluster.apply(&app(&cluster.image))?;

    let pods = eventually("3 ready whoami pods", Duration::from_secs(90), || async {
        let ready = ready_pods(&cluster).await.ok()?;
        (ready.len() == 3).then_some(ready)
    })
    .await
    .context("3 ready whoami pods did not appear within 90 s")?;
    let nodes_used: std::collections::BTreeSet<_> = pods
        .iter()
        .map(|p| p.spec.as_ref().unwrap().node_name.clone())
        .collect();
    assert_eq!(
        nodes_used.len(),
        2,
        "the scheduler spreads the replicas over both nodes"
    );

    let services = cluster.api::<Service>("default")?;
    let svc = services.get("whoami").await?;
    let spec = svc.spec.as_ref().unwrap();
    let cluster_ip = SocketAddr::V4(SocketAddrV4::new(spec.cluster_ip.parse()?, 80));
    let node_port = spec.ports[0].node_port as u16;

    // the endpoints controller and the proxies catch up: every pod answers
    let all: std::collections::BTreeSet<String> = pods.iter().map(name).collect();
    every_pod_answers(
        &cluster,
        &format!("all three pods {all:?} to answer through {cluster_ip}"),
        &all,
        || whoami(&cluster, cluster_ip),
    )
    .await;

    // 300 requests: every pod gets at least 20% of them
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        *counts.entry(whoami(&cluster, cluster_ip).await?).or_default() += 1;
    }
    for pod in &all {
        let n = counts.get(pod).copied().unwrap_or(0);
        assert!(n >= 60, "{pod} got {n} of 300 requests (< 20%): {counts:?}");
    }

    // NodePort on each node's address, from the cluster namespace (a machine on the lan)
    for node in &cluster.nodes {
        let addr = SocketAddr::new(node.ip.into(), node_port);
        let body = cluster.http_get(addr, "/").await?;
        assert_eq!(body.0, 200, "NodePort {addr} answers");
        assert!(
            all.contains(body.1.trim()),
            "NodePort {addr} reached a pod: {body:?}"
        );
    }

    // a Service without endpoints refuses at once instead of hanging
    let nobody = services.get("nobody").await?;
    let nobody_ip = SocketAddr::V4(SocketAddrV4::new(nobody.spec.unwrap().cluster_ip.parse()?, 80));
    let started = Instant::now();
    let refused = cluster.nodes[0].http_get(nobody_ip, "/").await;
    assert!(
        refused.is_err(),
        "a Service without endpoints answered: {refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refusing took {:?}, clients would hang",
        started.elapsed()
    );

    // a pod whose readiness probe fails leaves the rotation within 2 s of turning unready
    let unready = name(&pods[0]);
    let out = cluster.rkubectl(&["exec", &unready, "--", "rm", "/tmp/ready"])?;
    assert!(out.is_empty(), "{out}");
    let endpoints = cluster.api::<Endpoints>("default")?;
    let turned = eventually(
        &format!("{unready} in notReadyAddresses"),
        Duration::from_secs(10),
        || async {
            let ep = endpoints.get("whoami").await.ok()?;
            let not_ready = ep
                .subsets
                .iter()
                .flat_map(|s| &s.not_ready_addresses)
                .any(|a| a.target_ref.as_ref().is_some_and(|r| r.name == unready));
            not_ready.then(Instant::now)
        },
    )
    .await
    .expect("the unready pod moves to notReadyAddresses");
    let took = left_rotation_after(&cluster, cluster_ip, &unready, turned).await;
    assert!(
        took < Duration::from_secs(2),
        "the unready pod still answered {took:?} later"
    );

    // ready again: back in rotation
    cluster.rkubectl(&["exec", &unready, "--", "touch", "/tmp/ready"])?;
    let back = eventually(
        &format!("{unready} to answer again"),
        Duration::from_secs(10),
        || async {
            for _ in 0..30 {
                if whoami(&cluster, cluster_ip).await.ok()? == unready {
                    return Some(());
                }
            }
            None
        },
    )
    .await
    .ok();
    assert!(back.is_some(), "{unready} answers again once its probe passes");

    // deleting a pod while requests flow: none fails, and it leaves the rotation
    let victim = name(&pods[1]);
    let loop_addr = cluster_ip;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let node0 = cluster.nodes[0].netns().to_path_buf();
    let load = tokio::spawn(async move {
        let (mut ok, mut failed) = (0usize, Vec::new());
        while stopped.try_recv().is_err() {
            let ns = node0.clone();
            let r = tokio::task::spawn_blocking(move || {
                rkube_e2e::http_get_in_netns(&ns, loop_addr, "/", Duration::from_secs(2))
            })
            .await
            .unwrap();
            match r {
                Ok((200, _)) => ok += 1,
                other => failed.push(format!("{other:?}")),
            }
        }
        (ok, failed)
    });
    let deleted_at = Instant::now();
    cluster.rkubectl(&["delete", "pod", &victim])?;
    let took = left_rotation_after(&cluster, cluster_ip, &victim, deleted_at).await;
    // the ReplicaSet replaces it and the newcomer joins the rotation
    let replaced = eventually(
        &format!("{victim} to be replaced"),
        Duration::from_secs(60),
        || async {
            let ready = ready_pods(&cluster).await.ok()?;
            (ready.len() == 3 && !ready.iter().any(|p| name(p) == victim)).then_some(())
        },
    )
    .await
    .ok();
    let _ = stop.send(());
    let (ok, failed) = load.await?;
    assert!(
        took < Duration::from_secs(2),
        "the deleted pod still answered {took:?} later"
    );
    assert!(replaced.is_some(), "the deleted pod was replaced");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the deletion: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(ok > 20, "the request loop ran ({ok} requests)");

    cluster.stop().await
}

#[test]
fn services_spread_traffic_over_ready_pods_with_nftables() -> anyhow::Result<()> {
    run(|netns| suite(netns, rkube_proxy::Mode::Nftables))
}

#[test]
fn services_spread_traffic_over_ready_pods_in_userspace() -> anyhow::Result<()> {
    run(|netns| suite(netns, rkube_proxy::Mode::Userspace))
}

/// Builds `tests/images/udp-whoami.c` (a UDP server answering with the host name, the
/// pod's name) into `dir`, static because the busybox image has no libc.
fn build_udp_whoami(dir: &Path) -> anyhow::Result<()> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/udp-whoami.c");
    let out = std::process::Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join("udp-whoami"))
        .arg(&source)
        .output()
        .context("running cc to build the UDP test server (apt-get install gcc libc6-dev)")?;
    anyhow::ensure!(
        out.status.success(),
        "cc -static {} failed: {}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn udp_app(image: &str, bin: &Path) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: udp-whoami, namespace: default}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: udp-whoami}}}}
  template:
    metadata: {{labels: {{app: udp-whoami}}}}
    spec:
      terminationGracePeriodSeconds: 1
      volumes: [{{name: bin, hostPath: {{path: {bin}, type: Directory}}}}]
      containers:
      - name: dns
        image: {image}
        command: ["sh", "-c", "touch /tmp/ready && exec /opt/udp/udp-whoami 5353"]
        ports: [{{name: dns, containerPort: 5353, protocol: UDP}}]
        volumeMounts: [{{name: bin, mountPath: /opt/udp, readOnly: true}}]
        readinessProbe:
          exec: {{command: ["cat", "/tmp/ready"]}}
          periodSeconds: 1
          failureThreshold: 1
        resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: udp-whoami, namespace: default}}
spec:
  selector: {{app: udp-whoami}}
  ports: [{{name: dns, port: 53, targetPort: dns, protocol: UDP}}]
"#,
        bin = bin.display()
    )
}

/// A UDP socket in the network namespace at `netns` (a process on that node), connected to
/// `addr`: it takes datagrams from `addr` only, and an ICMP port unreachable in answer
/// shows as ECONNREFUSED.
fn udp_client_in(netns: &Path, addr: SocketAddr) -> anyhow::Result<tokio::net::UdpSocket> {
    let socket = run_in(netns, move || -> std::io::Result<std::net::UdpSocket> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect(addr)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .with_context(|| format!("entering {}", netns.display()))??;
    Ok(tokio::net::UdpSocket::from_std(socket)?)
}

/// One datagram; the answer (a pod's name), or the error (refused, or timed out after
/// `wait`).
async fn udp_ask(client: &tokio::net::UdpSocket, wait: Duration) -> std::io::Result<String> {
    client.send(b"who are you?").await?;
    let mut buf = [0u8; 512];
    match tokio::time::timeout(wait, client.recv(&mut buf)).await {
        Ok(n) => Ok(String::from_utf8_lossy(&buf[..n?]).into_owned()),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// The datagram was refused at once: an ICMP port unreachable came back (ECONNREFUSED:
/// the userspace proxy has no socket there, or a reject rule answered a datagram from a
/// pod), or a reject rule in the node's output path dropped it as it was sent (EPERM).
fn refused(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::PermissionDenied
    )
}

/// One datagram from a new client port on node 0.
async fn udp_whoami(cluster: &TestCluster, addr: SocketAddr) -> std::io::Result<String> {
    let client = udp_client_in(cluster.nodes[0].netns(), addr).map_err(std::io::Error::other)?;
    udp_ask(&client, Duration::from_millis(500)).await
}

async fn udp_suite(netns: std::path::PathBuf, mode: rkube_proxy::Mode) -> anyhow::Result<()> {
    let bin = tempfile::tempdir()?;
    build_udp_whoami(bin.path())?;
    let cluster = TestCluster::start(
        netns,
        ClusterOptions {
            nodes: 2,
            proxy: Some(mode),
            ..Default::default()
        },
    )
    .await?;
    cluster.apply(&udp_app(&cluster.image, bin.path()))?;
    let pods_api = cluster.api::<Pod>("default")?;
    let pods = eventually("3 ready udp-whoami pods", Duration::from_secs(60), || async {
        let list = pods_api
            .list(&ListParams::default().labels("app=udp-whoami"))
            .await
            .ok()?;
        let ready: Vec<Pod> = list.items.into_iter().filter(pod_ready).collect();
        (ready.len() == 3).then_some(ready)
    })
    .await
    .ok();
    let Some(pods) = pods else {
        panic!(
            "3 ready udp-whoami pods did not appear within 60 s\n{}",
            cluster.diagnostics().await
        );
    };
    let all: std::collections::BTreeSet<String> = pods.iter().map(name).collect();
    let svc = cluster.api::<Service>("default")?.get("udp-whoami").await?;
    let cluster_ip = SocketAddr::V4(SocketAddrV4::new(svc.spec.unwrap().cluster_ip.parse()?, 53));

    // every pod answers through the ClusterIP, each datagram from a new client port
    every_pod_answers(
        &cluster,
        &format!("all three pods {all:?} to answer UDP through {cluster_ip}"),
        &all,
        || async { Ok(udp_whoami(&cluster, cluster_ip).await?) },
    )
    .await;

    // one client port keeps talking to one pod, as over a connection
    let client = udp_client_in(cluster.nodes[0].netns(), cluster_ip)?;
    let first = udp_ask(&client, Duration::from_secs(2)).await?;
    assert!(all.contains(&first), "{first:?} is one of {all:?}");
    for _ in 0..10 {
        assert_eq!(udp_ask(&client, Duration::from_secs(2)).await?, first);
    }

    // the pod this client talks to turns unready: within 2 s the same client port is
    // answered by another pod (its session or conntrack entry does not outlive the pod's
    // place in the Service)
    cluster.rkubectl(&["exec", &first, "--", "rm", "/tmp/ready"])?;
    let endpoints = cluster.api::<Endpoints>("default")?;
    let ready_addresses = || async {
        let ep = endpoints.get("udp-whoami").await.ok()?;
        Some(ep.subsets.iter().map(|s| s.addresses.len()).sum::<usize>())
    };
    let left = eventually(
        "the unready pod out of the ready addresses",
        Duration::from_secs(10),
        || async { (ready_addresses().await? == 2).then(Instant::now) },
    )
    .await
    .expect("the endpoints controller takes the unready pod out of the ready addresses");
    let moved = eventually(
        &format!("the established UDP client to leave {first}"),
        Duration::from_secs(5),
        || async {
            let answer = udp_ask(&client, Duration::from_millis(300)).await.ok()?;
            (answer != first).then(|| (answer, left.elapsed()))
        },
    )
    .await
    .ok();
    let Some((second, took)) = moved else {
        panic!(
            "{mode:?}: the established UDP client still reaches {first} (or nothing) after it turned unready\n{}",
            cluster.diagnostics().await
        );
    };
    assert!(all.contains(&second), "{second:?} is one of {all:?}");
    assert!(
        took < Duration::from_secs(2),
        "the client reached {first} for {took:?} after it turned unready"
    );

    // every pod unready: the Service has no ready endpoint, so new clients are refused at
    // once, and the established client too
    for pod in all.iter().filter(|p| **p != first) {
        cluster.rkubectl(&["exec", pod, "--", "rm", "/tmp/ready"])?;
    }
    let turned = eventually(
        "every pod in notReadyAddresses",
        Duration::from_secs(10),
        || async { (ready_addresses().await? == 0).then(Instant::now) },
    )
    .await
    .expect("the endpoints controller moves every unready pod to notReadyAddresses");
    // (an answer, or a timeout, is what a client would have to wait out)
    let last = std::sync::Mutex::new(String::new());
    let refusal = eventually(
        "new UDP clients to be refused",
        Duration::from_secs(5),
        || async {
            let outcome = udp_whoami(&cluster, cluster_ip).await;
            *last.lock().unwrap() = format!("{outcome:?}");
            matches!(outcome, Err(e) if refused(&e)).then(|| turned.elapsed())
        },
    )
    .await
    .ok();
    let Some(took) = refusal else {
        let last = last.lock().unwrap().clone();
        panic!(
            "{mode:?}: a UDP Service without ready endpoints is not refused; last: {last}\n{}",
            cluster.diagnostics().await
        );
    };
    assert!(
        took < Duration::from_secs(2),
        "new clients were refused only {took:?} after the endpoints emptied"
    );
    let established = eventually(
        "the established UDP client to be refused",
        Duration::from_secs(2),
        || async {
            let outcome = udp_ask(&client, Duration::from_millis(300)).await;
            *last.lock().unwrap() = format!("{outcome:?}");
            matches!(outcome, Err(e) if refused(&e)).then_some(())
        },
    )
    .await
    .ok();
    let last = last.lock().unwrap().clone();
    assert!(
        established.is_some(),
        "the established UDP client is refused once its pod left the Service; last: {last}"
    );

    cluster.stop().await
}

#[test]
fn udp_services_reach_ready_pods_with_nftables() -> anyhow::Result<()> {
    run(|netns| udp_suite(netns, rkube_proxy::Mode::Nftables))
}

#[test]
fn udp_services_reach_ready_pods_in_userspace() -> anyhow::Result<()> {
    run(|netns| udp_suite(netns, rkube_proxy::Mode::Userspace))
}
