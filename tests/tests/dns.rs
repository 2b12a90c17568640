//! Cluster DNS end to end: real pods on a real node whose rkube-proxy serves the
//! cluster domain at 169.254.20.10, and a kubelet that writes that address into
//! each pod's resolv.conf. Pods reach Services by name (`http://web` in their own
//! namespace, `http://web.shop` from another), StatefulSet pods by their stable
//! names under a headless Service, the headless Service lists exactly the ready
//! pods, and a new Service's name answers within a second of its creation.

use anyhow::Context;
use rkube_api::core::v1::{Pod, Service};
use rkube_client::ListParams;
use rkube_dns::proto::rr::RecordType;
use rkube_e2e::{pod_ready, run, ClusterOptions, TestCluster, CLUSTER_DNS};
use rkube_testing::eventually;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

fn app(image: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: other}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web, namespace: shop}}
spec:
  serviceName: web-pods
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {image}
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && touch /tmp/ready && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          exec: {{command: ["cat", "/tmp/ready"]}}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {{name: web-pods, namespace: shop}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports: [{{name: http, port: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: shop}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: {image}, command: [sleep, "3600"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: other}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: {image}, command: [sleep, "3600"]}}
"#
    )
}

/// `rkubectl -n NS exec POD -- ARGS...`
fn exec(cluster: &TestCluster, ns: &str, pod: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["-n", ns, "exec", pod, "--"];
    all.extend_from_slice(args);
    cluster.rkubectl(&all)
}

/// busybox's wget of `url`, bounded by `timeout` (its own `-T` crashes the static
/// busybox 1.35 of the test image).
fn wget(url: &str) -> [&str; 5] {
    ["timeout", "5", "wget", "-qO-", url]
}

/// The addresses busybox's nslookup prints for `name`, without the server's own.
fn nslookup(cluster: &TestCluster, name: &str) -> anyhow::Result<BTreeSet<IpAddr>> {
    let out = exec(cluster, "shop", "client", &["nslookup", "-type=a", name])?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Address:"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .filter(|ip| *ip != IpAddr::from(CLUSTER_DNS))
        .collect())
}

async fn web_pod_ips(cluster: &TestCluster) -> anyhow::Result<Vec<(String, IpAddr)>> {
    let pods = cluster
        .api::<Pod>("shop")?
        .list(&ListParams::default().labels("app=web"))
        .await?;
    let mut out = Vec::new();
    for p in pods.items.iter().filter(|p| pod_ready(p)) {
        let name = p.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let ip = p.status.as_ref().map(|s| s.pod_ip.clone()).unwrap_or_default();
        out.push((name, ip.parse()?));
    }
    out.sort();
    Ok(out)
}

async fn checks(cluster: &TestCluster) -> anyhow::Result<()> {
    cluster.apply(&app(&cluster.image))?;
    let pods = eventually("two ready web pods", Duration::from_secs(90), || async {
        let pods = web_pod_ips(cluster).await.ok()?;
        (pods.len() == 2).then_some(pods)
    })
    .await?;
    eventually("the client pods to run", Duration::from_secs(60), || async {
        let mut running = 0;
        for ns in ["shop", "other"] {
            let p = cluster.api::<Pod>(ns).ok()?.get("client").await.ok()?;
            running += usize::from(pod_ready(&p));
        }
        (running == 2).then_some(())
    })
    .await?;

    // The kubelet wrote resolv.conf by dnsPolicy ClusterFirst, and /etc/hosts with
    // the StatefulSet pod's FQDN under its headless Service.
    let resolv = exec(cluster, "shop", "client", &["cat", "/etc/resolv.conf"])?;
    assert!(
        resolv.contains(&format!("nameserver {CLUSTER_DNS}\n")),
        "{resolv}"
    );
    assert!(
        resolv.contains("search shop.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    let hosts = exec(cluster, "shop", "web-0", &["cat", "/etc/hosts"])?;
    assert!(
        hosts.contains("\tweb-0.web-pods.shop.svc.cluster.local\tweb-0\n"),
        "{hosts}"
    );

    let names: BTreeSet<String> = pods.iter().map(|(n, _)| n.clone()).collect();
    // A Service by its short name from its own namespace ...
    let answer = eventually("http://web from shop", Duration::from_secs(30), || async {
        let out = exec(cluster, "shop", "client", &wget("http://web")).ok()?;
        names.contains(out.trim()).then_some(out)
    })
    .await
    .context("wget http://web from a pod in the Service's namespace")?;
    println!("http://web answered by {}", answer.trim());
    // ... and by NAME.NAMESPACE from another.
    let out = exec(cluster, "other", "client", &wget("http://web.shop"))?;
    assert!(names.contains(out.trim()), "http://web.shop answered {out:?}");
    // A StatefulSet pod by its stable name under the headless Service.
    let out = exec(cluster, "shop", "client", &wget("http://web-1.web-pods:8080"))?;
    assert_eq!(out.trim(), "web-1");

    // The headless Service lists every ready pod, and drops one that becomes unready.
    let all: BTreeSet<IpAddr> = pods.iter().map(|(_, ip)| *ip).collect();
    assert_eq!(nslookup(cluster, "web-pods.shop.svc.cluster.local")?, all);
    exec(cluster, "shop", "web-1", &["rm", "/tmp/ready"])?;
    let web0: BTreeSet<IpAddr> = pods
        .iter()
        .filter(|(n, _)| n == "web-0")
        .map(|(_, ip)| *ip)
        .collect();
    eventually(
        "the unready pod leaves the headless Service's answer",
        Duration::from_secs(30),
        || async { (nslookup(cluster, "web-pods.shop.svc.cluster.local").ok()? == web0).then_some(()) },
    )
    .await?;

    // A Service created after its pods answers within a second: asked from the node,
    // as the pods' resolver does, every 20 ms from the moment the create returns.
    let created = Instant::now();
    let late: Service = serde_yaml::from_str(
        "metadata: {name: late, namespace: shop}\nspec: {selector: {app: web}, ports: [{port: 81, targetPort: 8080}]}",
    )?;
    let late = cluster.api::<Service>("shop")?.create(&late).await?;
    let cluster_ip: IpAddr = late
        .spec
        .as_ref()
        .map(|s| s.cluster_ip.clone())
        .unwrap_or_default()
        .parse()?;
    let netns = cluster.nodes[0].netns().to_path_buf();
    let server = SocketAddr::new(CLUSTER_DNS.into(), 53);
    let took = eventually("the new Service's name resolves", Duration::from_secs(5), || {
        let netns = netns.clone();
        async move {
            let answer = tokio::task::spawn_blocking(move || {
                rkube_node_runtime::network::netns::run_in(&netns, || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    rt.block_on(rkube_dns::client::udp(
                        server,
                        "late.shop.svc.cluster.local",
                        RecordType::A,
                        Duration::from_millis(500),
                    ))
                    .ok()
                })
                .ok()
                .flatten()
            })
            .await
            .ok()??;
            if rkube_dns::client::addresses(&answer) == [cluster_ip] {
                return Some(created.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            None
        }
    })
    .await?;
    println!("a new Service resolved {took:?} after its creation");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // and pods see it too
    assert_eq!(
        nslookup(cluster, "late.shop.svc.cluster.local")?,
        BTreeSet::from([cluster_ip])
    );
    Ok(())
}

#[test]
fn pods_find_services_and_each_other_by_name() -> anyhow::Result<()> {
    run(|netns| async move {
        let cluster = TestCluster::start(
            netns,
            ClusterOptions {
                dns: true,
                ..Default::default()
            },
        )
        .await?;
        let result = checks(&cluster).await;
        if result.is_err() {
            eprintln!("{}", cluster.diagnostics().await);
        }
        cluster.stop().await?;
        result
    })
}
