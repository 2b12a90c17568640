//! The control plane and a real node together: pods created without a node
//! are placed by the scheduler, created by the Deployment and ReplicaSet
//! controllers, and run by the kubelet in real containers.

use futures::StreamExt;
use rkube_api::apps::v1::Deployment;
use rkube_api::core::v1::Pod;
use rkube_api::kubelet::v1::{exec_input::Input, exec_output::Output, ExecInput, ExecStart};
use rkube_client::{Api, ListParams};
use rkube_kubelet::testing::{skip_reason, TestNode, TestRegistry};
use rkube_testing::{eventually, Daemon};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deployment_without_nodes_named_is_scheduled_and_runs_on_a_real_kubelet() -> anyhow::Result<()> {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED: {reason}");
        return Ok(());
    }
    let node = TestNode::start().await?;
    let registry = TestRegistry::start().await?;
    let (image, _) = registry.push_busybox("rkube/busybox").await?;
    // secure as users run it: TLS, every daemon with its own certificate, RBAC
    let dir = tempfile::tempdir()?;
    let pki = dir.path().join("pki");
    rkube_e2e::generate_pki(&pki, &[], &["node-a".to_string()])?;
    let api = rkube_e2e::start_apiserver(&pki, "127.0.0.1:0".parse()?).await?;
    let url = api.url().to_string();
    assert!(url.starts_with("https://"), "{url}");
    let conf = |stem: &str| Some(pki.join(format!("{stem}.conf")));

    // the kubelet, as its own tests start it, on the test's node namespace
    let mut kcfg = rkube_kubelet::Config::for_test_node(
        &node,
        url.clone(),
        "node-a",
        [127, 0, 0, 1].into(),
        Some("10.244.9.0/24"),
    );
    kcfg.kubeconfig = conf("node-node-a");
    kcfg.node_status_update_frequency = Duration::from_secs(1);
    let kubelet = rkube_kubelet::start(kcfg).await?;

    // the scheduler and the controller-manager through the same run() as their mains
    let mut scheduler_config = rkube_scheduler::Config::new(url.clone());
    scheduler_config.kubeconfig = conf("kube-scheduler");
    let scheduler = Daemon::spawn(|stop| rkube_scheduler::run(scheduler_config, stop));
    let mut cm_config = rkube_controller_manager::Config::new(url.clone());
    cm_config.kubeconfig = conf("kube-controller-manager");
    cm_config.controllers = vec!["replicaset".into(), "deployment".into()];
    let cm = Daemon::spawn(|stop| rkube_controller_manager::run(cm_config, stop));

    let client = api.client();
    let deployment: Deployment = serde_yaml::from_str(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: httpd
        image: {image}
        command: ["sh", "-c", "echo ready; exec sleep 3600"]
        resources: {{requests: {{cpu: 10m, memory: 8Mi}}}}
"#
    ))?;
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&deployment)
        .await?;

    let pods = Api::<Pod>::namespaced(client.clone(), "default");
    let running = eventually("2 pods Running", Duration::from_secs(60), || async {
        let list = pods
            .list(&ListParams {
                label_selector: "app=web".into(),
                ..Default::default()
            })
            .await?;
        let running: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .is_some_and(|s| s.phase == "Running" && !s.pod_ip.is_empty())
            })
            .collect();
        anyhow::ensure!(running.len() == 2, "{} Running", running.len());
        Ok(Some(running))
    })
    .await?;
    for p in &running {
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(
            spec.node_name, "node-a",
            "the scheduler placed it on the only node"
        );
        let scheduled = p
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.r#type == "PodScheduled" && c.status == "True");
        assert!(scheduled, "PodScheduled=True on {}", rkube_api::Resource::name(p));
        let owner = &p.metadata.as_ref().unwrap().owner_references[0];
        assert_eq!(owner.kind, "ReplicaSet");
    }
    // logs and exec go through the apiserver to the kubelet, as rkubectl's do
    let name = rkube_api::Resource::name(&running[0]).to_string();
    let mut log = Vec::new();
    let mut chunks = client
        .logs(rkube_api::kubelet::v1::LogsRequest {
            namespace: "default".into(),
            pod: name.clone(),
            ..Default::default()
        })
        .await?;
    while let Some(chunk) = chunks.next().await {
        log.extend_from_slice(&chunk?);
    }
    assert_eq!(String::from_utf8_lossy(&log), "ready\n");
    let start = ExecInput {
        input: Some(Input::Start(ExecStart {
            namespace: "default".into(),
            pod: name.clone(),
            command: vec!["sh".into(), "-c".into(), "hostname; exit 5".into()],
            ..Default::default()
        })),
    };
    let mut out = client.exec(futures::stream::iter(vec![start])).await?;
    let (mut stdout, mut code) = (Vec::new(), None);
    while let Some(o) = out.next().await {
        match o? {
            Output::Stdout(b) => stdout.extend(b),
            Output::ExitCode(c) => code = Some(c),
            Output::Stderr(_) => {}
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&stdout).trim(),
        name,
        "the pod's hostname is its name"
    );
    assert_eq!(code, Some(5));

    let d = Api::<Deployment>::namespaced(client.clone(), "default");
    eventually(
        "the Deployment to report 2 ready replicas",
        Duration::from_secs(30),
        || async {
            let status = d.get("web").await?.status.unwrap_or_default();
            anyhow::ensure!(
                status.ready_replicas == 2 && status.available_replicas == 2,
                "{status:?}"
            );
            Ok(true)
        },
    )
    .await?;

    cm.stop().await?;
    scheduler.stop().await?;
    kubelet.stop().await;
    api.stop().await?;
    drop(node);
    Ok(())
}
