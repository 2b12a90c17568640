//! Pod networking with the real CNI plugins, inside the test node's network namespace.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rkube_node_runtime::network::{netns, CniNetwork, PodNetwork, PodNetworkConfig, PortMapping, Protocol};
use rkube_node_runtime::runtime::{ContainerNetwork, ContainerRuntime, ExecRequest};
use rkube_node_runtime::testing::http_get_in_netns;
use rkube_testing::eventually;

use crate::{require_containerd, Fixture};

fn pod(uid: &str) -> PodNetworkConfig {
    PodNetworkConfig {
        pod_uid: uid.to_string(),
        pod_namespace: "default".to_string(),
        pod_name: format!("pod-{uid}"),
        port_mappings: vec![],
    }
}

/// GET from the node's namespace (where the bridge is), retried while the server starts.
async fn get(netns_path: &Path, addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut last = None;
    for _ in 0..100 {
        match http_get_in_netns(netns_path, addr, path, Duration::from_secs(2)) {
            Ok(answer) => return Ok(answer),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_gets_an_ip_and_its_httpd_answers_there_and_on_its_host_port() -> anyhow::Result<()> {
    require_containerd!();
    let f = Fixture::start().await?;
    let network = CniNetwork::new(f.node.cni_config("10.244.7.0/24"))?;
    let mut web = pod("pod-web");
    web.port_mappings = vec![PortMapping {
        host_port: 18080,
        container_port: 80,
        protocol: Protocol::Tcp,
        host_ip: None,
    }];
    let net = network.setup(&web).await?;
    eprintln!("pod network: {net:?}");
    assert!(net.ip.to_string().starts_with("10.244.7."), "{}", net.ip);
    assert_eq!(net.gateway.map(|g| g.to_string()).as_deref(), Some("10.244.7.1"));
    assert_eq!(net.interface, "eth0");
    assert_eq!(net.netns_path, network.netns_path("pod-web"));
    // Setting up again changes nothing.
    assert_eq!(network.setup(&web).await?, net);
    assert_eq!(network.status("pod-web").await?, Some(net.clone()));

    let mut config = f.container("pod-web", "httpd", "hostname; exec httpd -f -p 80 -h /var/www");
    config.network = ContainerNetwork::Namespace(net.netns_path.clone());
    config.hostname = Some("web-0".into());
    let id = f.run(&config).await?;

    let (status, body) = get(&f.node.netns_path, SocketAddr::new(net.ip, 80), "/").await?;
    assert_eq!(status, 200);
    assert_eq!(body, "rkube test image\n");

    // hostPort through portmap, to the node's address on the bridge.
    let gateway = net.gateway.expect("gateway");
    let (status, body) = get(&f.node.netns_path, SocketAddr::new(gateway, 18080), "/").await?;
    assert_eq!((status, body.as_str()), (200, "rkube test image\n"));

    // The container's hostname (the shim copies output asynchronously: poll).
    let log = f.node.log_path(&format!("httpd-{id}"));
    let first_line = eventually(
        "the container's first log line",
        Duration::from_secs(5),
        || async {
            std::fs::read_to_string(&log)
                .ok()?
                .lines()
                .next()
                .map(str::to_string)
        },
    )
    .await?;
    assert_eq!(first_line, "web-0");

    // The bridge was made in the test node's namespace, not in the test process's (the
    // host's). Checked through sysfs: no packet is sent to find out.
    assert!(
        !Path::new("/sys/class/net")
            .join(&network.config().bridge)
            .exists(),
        "the CNI bridge leaked into the host network namespace"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_of_a_pod_share_localhost() -> anyhow::Result<()> {
    require_containerd!();
    let f = Fixture::start().await?;
    let network = CniNetwork::new(f.node.cni_config("10.244.8.0/24"))?;
    let net = network.setup(&pod("pod-shared")).await?;

    let mut server = f.container(
        "pod-shared",
        "server",
        "mkdir -p /srv && echo from-the-server > /srv/index.html && exec httpd -f -p 127.0.0.1:8080 -h /srv",
    );
    server.network = ContainerNetwork::Namespace(net.netns_path.clone());
    let mut client = f.container("pod-shared", "client", "exec sleep 1000");
    client.network = ContainerNetwork::Namespace(net.netns_path.clone());
    f.run(&server).await?;
    let client_id = f.run(&client).await?;

    let fetched = eventually("a page from the server pod", Duration::from_secs(20), || async {
        let out = f
            .runtime
            .exec(
                &client_id,
                &ExecRequest {
                    command: vec![
                        "wget".into(),
                        "-q".into(),
                        "-O".into(),
                        "-".into(),
                        "http://127.0.0.1:8080/".into(),
                    ],
                    timeout: Some(Duration::from_secs(5)),
                    ..Default::default()
                },
            )
            .await
            .ok()?;
        (out.exit_code == 0).then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await?;
    assert_eq!(fetched, "from-the-server\n");

    // A container of another pod does not see that localhost.
    let other_net = network.setup(&pod("pod-other")).await?;
    let mut other = f.container("pod-other", "client", "exec sleep 1000");
    other.network = ContainerNetwork::Namespace(other_net.netns_path.clone());
    let other_id = f.run(&other).await?;
    let out = f
        .runtime
        .exec(
            &other_id,
            &ExecRequest {
                command: vec![
                    "wget".into(),
                    "-q".into(),
                    "-T".into(),
                    "2".into(),
                    "-O".into(),
                    "-".into(),
                    "http://127.0.0.1:8080/".into(),
                ],
                timeout: Some(Duration::from_secs(10)),
                ..Default::default()
            },
        )
        .await?;
    assert_ne!(out.exit_code, 0);
    assert_ne!(other_net.ip, net.ip);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_frees_the_ip_and_is_idempotent() -> anyhow::Result<()> {
    require_containerd!();
    let f = Fixture::start().await?;
    let config = f.node.cni_config("10.244.9.0/24");
    let allocations = config.ipam_dir().join(&config.network_name);
    let network = CniNetwork::new(config)?;

    let net = network.setup(&pod("pod-a")).await?;
    let allocation = allocations.join(net.ip.to_string());
    assert_eq!(
        std::fs::read_to_string(&allocation)?.lines().next(),
        Some("pod-a")
    );
    assert!(netns::is_netns(&net.netns_path));

    network.teardown("pod-a").await?;
    assert!(!allocation.exists(), "{} still allocated", allocation.display());
    assert!(!net.netns_path.exists());
    assert_eq!(network.status("pod-a").await?, None);
    // Again, and for a pod that never existed: nothing to do is success.
    network.teardown("pod-a").await?;
    network.teardown("pod-never").await?;

    // A pod whose namespace vanished (as after a reboot) still gets its IP released.
    let net_b = network.setup(&pod("pod-b")).await?;
    netns::remove(&net_b.netns_path)?;
    network.teardown("pod-b").await?;
    assert!(!allocations.join(net_b.ip.to_string()).exists());

    // A new client (restarted kubelet) finds a live pod's network from the cached result.
    let net_c = network.setup(&pod("pod-c")).await?;
    let restarted = CniNetwork::new(f.node.cni_config("10.244.9.0/24"))?;
    assert_eq!(restarted.status("pod-c").await?, Some(net_c));
    restarted.teardown("pod-c").await?;

    let err = network.setup(&pod("../etc")).await.unwrap_err();
    assert!(err.to_string().contains("pod uid"), "{err}");
    Ok(())
}
