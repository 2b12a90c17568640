//! The cloud-controller-manager end to end with the `local` provider, as the harness runs
//! it (`ClusterOptions::cloud`): two real nodes whose kubelets run with
//! `--cloud-provider external`, the manager in the cluster namespace (so its kernel routes
//! land there, never in the host's), the cloud-config file the test edits as an operator
//! would, and the cluster namespace as the lab's router sending the LoadBalancer pool to
//! node 0.
//!
//! What a user sees: the nodes are initialised from the file and untainted; a LoadBalancer
//! Service gets the first pool address, shown by `rkubectl get svc`, and answers HTTP there;
//! each node's podCIDR is routed to it; removing a powered-off machine from the file deletes
//! its node, and its pods come back on the other node, still behind the same address.

use anyhow::Context;
use rkube_api::core::v1::{Node, Pod, Service};
use rkube_client::{Api, ListParams};
use rkube_e2e::{pod_ready, run, ClusterOptions, TestCluster};
use rkube_testing::eventually;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// The first address of the harness's pool (`rkube_e2e::LB_POOL`, 172.30.1.0/24).
const POOL_FIRST: &str = "172.30.1.1";

fn app(image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: hello, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: hello}}}}
  template:
    metadata: {{labels: {{app: hello}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {image}
        command: ["sh", "-c", "mkdir -p /www && echo hello from $(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
        resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: hello, namespace: default}}
spec:
  type: LoadBalancer
  selector: {{app: hello}}
  ports: [{{port: 80, targetPort: http}}]
"#
    )
}

/// `ip` in the namespace the test runs in (the cluster namespace).
fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The manager's routes in the cluster namespace, as `(cidr, via)`.
fn cloud_routes() -> Vec<(String, String)> {
    let text = ip(&["route", "show", "proto", "240"]).unwrap_or_default();
    let mut out: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let via = words.iter().position(|w| *w == "via")?;
            Some((words[0].to_string(), words.get(via + 1)?.to_string()))
        })
        .collect();
    out.sort();
    out
}

async fn pod_cidr(nodes: &Api<Node>, name: &str) -> anyhow::Result<String> {
    eventually(
        &format!("{name} to get a podCIDR"),
        Duration::from_secs(30),
        || async {
            let n = nodes.get(name).await.ok()?;
            let cidr = n.spec.map(|s| s.pod_cidr).unwrap_or_default();
            (!cidr.is_empty()).then_some(cidr)
        },
    )
    .await
    .with_context(|| format!("{name} never got a podCIDR"))
}

async fn ready_pods_by_node(pods: &Api<Pod>) -> Vec<String> {
    let Ok(list) = pods.list(&ListParams::default().labels("app=hello")).await else {
        return vec![];
    };
    let mut nodes: Vec<String> = list
        .items
        .iter()
        .filter(|p| {
            pod_ready(p)
                && p.metadata
                    .as_ref()
                    .is_some_and(|m| m.deletion_timestamp.is_empty())
        })
        .map(|p| p.spec.as_ref().map(|s| s.node_name.clone()).unwrap_or_default())
        .collect();
    nodes.sort();
    nodes
}

/// Polls GET / at `lb` from the cluster namespace until a pod answers.
async fn answers(cluster: &TestCluster, lb: SocketAddr) -> anyhow::Result<String> {
    eventually(
        &format!("GET http://{lb}/ to answer"),
        Duration::from_secs(20),
        || async {
            let (status, body) = cluster.http_get(lb, "/").await.ok()?;
            (status == 200 && body.starts_with("hello from")).then_some(body)
        },
    )
    .await
}

async fn scenario(netns: std::path::PathBuf) -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(
        netns,
        ClusterOptions {
            nodes: 2,
            cloud: true,
            ..Default::default()
        },
    )
    .await?;
    let result = checks(&mut cluster).await;
    if result.is_err() {
        eprintln!("{}", cluster.diagnostics().await);
    }
    cluster.stop().await?;
    result
}

async fn checks(cluster: &mut TestCluster) -> anyhow::Result<()> {
    let nodes = Api::<Node>::all(cluster.client()?);

    // 1. Nodes initialised from the file and untainted.
    for node in &cluster.nodes {
        let name = node.name.clone();
        let n = eventually(
            &format!("{name} to be initialised (untainted)"),
            Duration::from_secs(30),
            || async {
                let n = nodes.get(&name).await.ok()?;
                let tainted = n.spec.as_ref().is_some_and(|s| !s.taints.is_empty());
                (!tainted).then_some(n)
            },
        )
        .await
        .with_context(|| format!("{name} was not initialised (still tainted) within 30 s"))?;
        let spec = n.spec.as_ref().unwrap();
        assert_eq!(spec.provider_id, format!("local://{name}"));
        let labels = &n.metadata.as_ref().unwrap().labels;
        assert_eq!(labels["node.kubernetes.io/instance-type"], "netns");
        assert_eq!(labels["topology.kubernetes.io/region"], "test");
        let zone = if name == "node-0" { "zone-a" } else { "zone-b" };
        assert_eq!(labels["topology.kubernetes.io/zone"], zone);
        let addresses = &n.status.as_ref().unwrap().addresses;
        assert!(
            addresses
                .iter()
                .any(|a| a.r#type == "InternalIP" && a.address == node.ip.to_string()),
            "{addresses:?}"
        );
    }

    // 2. A route to each node's podCIDR through its address.
    let mut want = Vec::new();
    for node in &cluster.nodes {
        want.push((pod_cidr(&nodes, &node.name).await?, node.ip.to_string()));
    }
    want.sort();
    eventually(
        "a route to each node's podCIDR",
        Duration::from_secs(20),
        || async { (cloud_routes() == want).then_some(()) },
    )
    .await
    .with_context(|| format!("routes {:?}, want {want:?}", cloud_routes()))?;

    // 3. A LoadBalancer Service gets the first pool address and answers there.
    cluster.apply(&app(&cluster.image))?;
    let services = cluster.api::<Service>("default")?;
    eventually(
        &format!("hello to get {POOL_FIRST}"),
        Duration::from_secs(30),
        || async {
            let s = services.get("hello").await.ok()?;
            let ips: Vec<String> = s
                .status?
                .load_balancer?
                .ingress
                .into_iter()
                .map(|i| i.ip)
                .collect();
            (ips == [POOL_FIRST]).then_some(())
        },
    )
    .await
    .with_context(|| format!("hello did not get {POOL_FIRST}"))?;
    let table = cluster.rkubectl(&["get", "svc", "hello"])?;
    assert!(
        table.contains("EXTERNAL-IP") && table.contains(POOL_FIRST),
        "{table}"
    );
    let url = cluster.rkubectl(&["service", "hello", "--url"])?;
    assert!(url.contains(&format!("http://{POOL_FIRST}:80")), "{url}");

    let pods = cluster.api::<Pod>("default")?;
    eventually("2 ready hello pods", Duration::from_secs(90), || async {
        (ready_pods_by_node(&pods).await.len() == 2).then_some(())
    })
    .await
    .context("2 ready hello pods did not appear within 90 s")?;
    let lb: SocketAddr = format!("{POOL_FIRST}:80").parse()?;
    answers(cluster, lb)
        .await
        .with_context(|| format!("GET http://{lb}/ did not answer"))?;

    // 4. Node 1's machine is powered off and removed from the file: the node goes, its
    //    pods come back on node 0, its route is removed, the address still answers.
    let retired = cluster.nodes[1].name.clone();
    let retired_cidr = want
        .iter()
        .find(|(_, via)| *via == cluster.nodes[1].ip.to_string())
        .cloned();
    cluster.nodes[1].power_off().await?;
    cluster.write_cloud_config(&[cluster.nodes[0].name.clone()])?;
    eventually(
        &format!("{retired} to be deleted"),
        Duration::from_secs(40),
        || async { nodes.get_opt(&retired).await.ok()?.is_none().then_some(()) },
    )
    .await
    .with_context(|| format!("{retired} was not deleted within 40 s"))?;
    let survivor = cluster.nodes[0].name.clone();
    eventually(
        &format!("the pods to come back on {survivor}"),
        Duration::from_secs(60),
        || async {
            let on = ready_pods_by_node(&pods).await;
            (on == [survivor.clone(), survivor.clone()]).then_some(())
        },
    )
    .await
    .with_context(|| format!("the pods did not come back on {survivor} within 60 s"))?;
    eventually(
        &format!("{retired}'s route to go"),
        Duration::from_secs(20),
        || async {
            let routes = cloud_routes();
            (routes.len() == 1 && Some(&routes[0]) != retired_cidr.as_ref()).then_some(())
        },
    )
    .await
    .with_context(|| format!("{retired}'s route stayed: {:?}", cloud_routes()))?;
    answers(cluster, lb)
        .await
        .with_context(|| format!("GET http://{lb}/ did not answer after the pods moved"))?;
    Ok(())
}

#[test]
fn local_cloud_initialises_nodes_serves_load_balancers_routes_and_retires_machines() -> anyhow::Result<()> {
    run(scenario)
}
