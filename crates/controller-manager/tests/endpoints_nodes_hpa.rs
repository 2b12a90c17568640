//! The endpoints, node-ipam, node-lifecycle and horizontal-pod-autoscaler
//! loops against a real apiserver in-process, started through the same
//! `run` as the daemon, with short periods. The test plays the kubelets
//! (Nodes, Lease renewals, pod status) and, for the autoscaler, the
//! ReplicaSet controller and the metrics.

use anyhow::{Context as _, Result};
use rkube_api::apps::v1::{Deployment, DeploymentSpec};
use rkube_api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use rkube_api::coordination::v1::{Lease, LeaseSpec};
use rkube_api::core::v1::{
    Container, ContainerPort, Endpoints, Event, Node, NodeCondition, NodeStatus, Pod, PodCondition, PodSpec,
    PodStatus, PodTemplateSpec, ResourceRequirements, Service, ServicePort, ServiceSpec, Toleration,
};
use rkube_api::intstr::IntOrString;
use rkube_api::meta::v1::LabelSelector;
use rkube_api::quantity::Quantity;
use rkube_api::Resource;
use rkube_client::{Api, Client, DeleteParams, ListParams};
use rkube_controller_manager::metrics::FakeMetricsSource;
use rkube_controller_manager::Config;
use rkube_testing::{eventually, Daemon, TestApiServer};
use std::time::{Duration, Instant};

struct Cluster {
    api: TestApiServer,
    client: Client,
    manager: Option<Daemon>,
}

impl Cluster {
    async fn start_apiserver() -> Result<Cluster> {
        let api = TestApiServer::start().await?;
        Ok(Cluster {
            client: api.client(),
            api,
            manager: None,
        })
    }

    /// Starts the controller-manager with only `controllers`.
    fn start_manager(&mut self, controllers: &str, tweak: impl FnOnce(&mut Config)) {
        let mut config = Config::new(self.api.url().to_string());
        config.controllers = vec![controllers.to_string()];
        tweak(&mut config);
        self.manager = Some(Daemon::spawn(|stop| rkube_controller_manager::run(config, stop)));
    }

    async fn stop(self) -> Result<()> {
        if let Some(manager) = self.manager {
            manager.stop().await?;
        }
        self.api.stop().await
    }

    fn api<K: Resource>(&self, ns: &str) -> Api<K> {
        Api::namespaced(self.client.clone(), ns)
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn pod(name: &str, node: &str, labels: &[(&str, &str)], ports: &[(&str, i32)]) -> Pod {
    let mut p = Pod {
        spec: Some(PodSpec {
            node_name: node.into(),
            containers: vec![Container {
                name: "app".into(),
                image: "nginx:1.25".into(),
                ports: ports
                    .iter()
                    .map(|(n, p)| ContainerPort {
                        name: n.to_string(),
                        container_port: *p,
                        ..Default::default()
                    })
                    .collect(),
                resources: Some(ResourceRequirements {
                    requests: [("cpu".to_string(), Quantity::new("100m"))].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    p.metadata_mut().name = name.into();
    p.metadata_mut().labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    p
}

/// What a kubelet reports for a running pod.
async fn set_pod_status(api: &Api<Pod>, name: &str, ip: &str, ready: bool) -> Result<()> {
    api.replace_status_with(name, |mut p| {
        p.status = Some(PodStatus {
            phase: "Running".into(),
            pod_ip: ip.into(),
            conditions: vec![PodCondition {
                r#type: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        p
    })
    .await?;
    Ok(())
}

async fn events_for(client: &Client, name: &str, reason: &str) -> Result<Vec<Event>> {
    let all = Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(all
        .items
        .into_iter()
        .filter(|e| e.reason == reason && e.involved_object.as_ref().is_some_and(|o| o.name == name))
        .collect())
}

// ---------------------------------------------------------------- endpoints

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_pod_readiness_within_a_second() -> Result<()> {
    let mut c = Cluster::start_apiserver().await?;
    c.start_manager("endpoints", |_| {});
    let pods = c.api::<Pod>("default");
    let services = c.api::<Service>("default");
    let endpoints = c.api::<Endpoints>("default");

    // A Service without selector: its Endpoints are the user's business.
    let mut manual = Service {
        spec: Some(ServiceSpec {
            ports: vec![ServicePort {
                port: 80,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    manual.metadata_mut().name = "manual".into();
    services.create(&manual).await?;

    let mut svc = Service {
        spec: Some(ServiceSpec {
            selector: [("app".to_string(), "web".to_string())].into(),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
                target_port: Some(IntOrString::string("http")),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    svc.metadata_mut().name = "web".into();
    services.create(&svc).await?;
    pods.create(&pod("web-1", "n1", &[("app", "web")], &[("http", 8080)]))
        .await?;
    pods.create(&pod("web-2", "n1", &[("app", "web")], &[("http", 9090)]))
        .await?;
    pods.create(&pod("other", "n1", &[("app", "db")], &[("http", 8080)]))
        .await?;
    set_pod_status(&pods, "web-1", "10.244.0.5", false).await?;
    set_pod_status(&pods, "web-2", "10.244.0.6", true).await?;
    set_pod_status(&pods, "other", "10.244.0.7", true).await?;

    let ep = eventually("endpoints with both pods", Duration::from_secs(10), || async {
        let ep = endpoints.get_opt("web").await?;
        Ok(ep.filter(|e| e.subsets.len() == 2))
    })
    .await?;
    // Grouped by resolved port: web-1 (8080, not ready), web-2 (9090, ready).
    let s8080 = ep
        .subsets
        .iter()
        .find(|s| s.ports[0].port == 8080)
        .context("8080 subset")?;
    assert!(s8080.addresses.is_empty());
    assert_eq!(s8080.not_ready_addresses[0].ip, "10.244.0.5");
    let s9090 = ep
        .subsets
        .iter()
        .find(|s| s.ports[0].port == 9090)
        .context("9090 subset")?;
    let a = &s9090.addresses[0];
    assert_eq!(
        (a.ip.as_str(), a.node_name.as_deref()),
        ("10.244.0.6", Some("n1"))
    );
    let r = a.target_ref.as_ref().context("targetRef")?;
    assert_eq!(
        (r.kind.as_str(), r.name.as_str(), r.namespace.as_str()),
        ("Pod", "web-2", "default")
    );
    assert_eq!(r.uid, pods.get("web-2").await?.metadata().uid);
    assert_eq!(s9090.ports[0].name, "http");
    assert!(
        endpoints.get_opt("manual").await?.is_none(),
        "selectorless service left alone"
    );

    // Readiness flips show up within a second.
    let rv = ep.metadata().resource_version.clone();
    let begin = Instant::now();
    set_pod_status(&pods, "web-1", "10.244.0.5", true).await?;
    eventually("web-1 ready in endpoints", Duration::from_secs(1), || async {
        let ep = endpoints.get("web").await?;
        Ok(ep
            .subsets
            .iter()
            .any(|s| s.addresses.iter().any(|a| a.ip == "10.244.0.5"))
            .then_some(()))
    })
    .await?;
    let became_ready = begin.elapsed();
    let begin = Instant::now();
    set_pod_status(&pods, "web-2", "10.244.0.6", false).await?;
    eventually("web-2 not ready in endpoints", Duration::from_secs(1), || async {
        let ep = endpoints.get("web").await?;
        Ok(ep
            .subsets
            .iter()
            .any(|s| s.not_ready_addresses.iter().any(|a| a.ip == "10.244.0.6"))
            .then_some(()))
    })
    .await?;
    eprintln!(
        "ready after {became_ready:?}, unready after {:?}",
        begin.elapsed()
    );
    assert_ne!(endpoints.get("web").await?.metadata().resource_version, rv);

    // An unrelated pod change does not rewrite the Endpoints.
    let before = endpoints.get("web").await?.metadata().resource_version.clone();
    set_pod_status(&pods, "other", "10.244.0.7", false).await?;
    pods.delete("other", &DeleteParams::default().grace_period(0))
        .await?;
    // A change that does matter, written after, proves the controller caught up.
    pods.delete("web-2", &DeleteParams::default().grace_period(0))
        .await?;
    let after = eventually("web-2 removed", Duration::from_secs(5), || async {
        let ep = endpoints.get("web").await?;
        Ok((ep.subsets.len() == 1).then_some(ep))
    })
    .await?;
    let written: u64 = after.metadata().resource_version.parse()?;
    assert!(written > before.parse::<u64>()?);

    // The Service goes, its Endpoints go.
    services.delete("web", &DeleteParams::default()).await?;
    eventually("endpoints deleted", Duration::from_secs(5), || async {
        Ok(endpoints.get_opt("web").await?.is_none().then_some(()))
    })
    .await?;
    c.stop().await
}

// ---------------------------------------------------------------- node-ipam

fn node(name: &str) -> Node {
    let mut n = Node::default();
    n.metadata_mut().name = name.into();
    n
}

async fn pod_cidr(api: &Api<Node>, name: &str) -> Result<Option<String>> {
    let n = api.get(name).await?;
    let spec = n.spec.unwrap_or_default();
    if spec.pod_cidr.is_empty() {
        return Ok(None);
    }
    assert_eq!(spec.pod_cidrs, vec![spec.pod_cidr.clone()]);
    Ok(Some(spec.pod_cidr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ipam_hands_out_distinct_cidrs_and_reuses_freed_ones() -> Result<()> {
    let mut c = Cluster::start_apiserver().await?;
    let nodes = Api::<Node>::all(c.client.clone());
    // A node from before the controller started keeps its CIDR.
    let mut old = node("old");
    let spec = old.spec.get_or_insert_with(Default::default);
    spec.pod_cidr = "10.200.0.0/24".into();
    spec.pod_cidrs = vec![spec.pod_cidr.clone()];
    nodes.create(&old).await?;
    c.start_manager("node-ipam", |cfg| {
        // Room for two nodes only.
        cfg.cluster_cidr = "10.200.0.0/23".into();
        cfg.node_cidr_mask_size = 24;
    });
    nodes.create(&node("n1")).await?;
    let n1 = eventually("n1 gets a CIDR", Duration::from_secs(10), || {
        pod_cidr(&nodes, "n1")
    })
    .await?;
    assert_eq!(n1, "10.200.1.0/24", "the CIDR in use was not handed out again");
    assert_eq!(pod_cidr(&nodes, "old").await?.as_deref(), Some("10.200.0.0/24"));

    nodes.create(&node("n2")).await?;
    eventually("CIDRNotAvailable on n2", Duration::from_secs(10), || async {
        Ok((!events_for(&c.client, "n2", "CIDRNotAvailable").await?.is_empty()).then_some(()))
    })
    .await?;
    assert_eq!(pod_cidr(&nodes, "n2").await?, None);

    // Deleting n1 frees its CIDR, and the waiting n2 gets it.
    nodes.delete("n1", &DeleteParams::default()).await?;
    let n2 = eventually("n2 gets the freed CIDR", Duration::from_secs(5), || {
        pod_cidr(&nodes, "n2")
    })
    .await?;
    assert_eq!(n2, "10.200.1.0/24");
    c.stop().await
}

// ---------------------------------------------------------------- node-lifecycle

/// A hollow kubelet: renews the node's Lease and posts Ready=True, while
/// `alive` is set.
fn kubelet(
    client: Client,
    node: &'static str,
    alive: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let leases = Api::<Lease>::namespaced(client.clone(), "kube-node-lease");
        let nodes = Api::<Node>::all(client);
        let mut was_alive = false;
        loop {
            let is_alive = alive.load(std::sync::atomic::Ordering::SeqCst);
            if is_alive {
                let renewed = leases.replace_with(node, |mut l| {
                    l.spec.get_or_insert_with(Default::default).renew_time = now();
                    l
                });
                if let Err(e) = renewed.await {
                    if e.is_not_found() {
                        let mut l = Lease {
                            spec: Some(LeaseSpec {
                                holder_identity: node.into(),
                                lease_duration_seconds: Some(40),
                                renew_time: now(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        };
                        l.metadata_mut().name = node.into();
                        let _ = leases.create(&l).await;
                    }
                }
                // Like a kubelet, post Ready=True whenever the node does not show it.
                if !was_alive
                    || nodes
                        .get(node)
                        .await
                        .ok()
                        .is_some_and(|n| condition(&n, "Ready") != "True")
                {
                    let _ = nodes
                        .replace_status_with(node, |mut n| {
                            n.status = Some(NodeStatus {
                                conditions: vec![NodeCondition {
                                    r#type: "Ready".into(),
                                    status: "True".into(),
                                    reason: "KubeletReady".into(),
                                    last_heartbeat_time: now(),
                                    last_transition_time: now(),
                                    ..Default::default()
                                }],
                                ..n.status.unwrap_or_default()
                            });
                            n
                        })
                        .await;
                }
            }
            was_alive = is_alive;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

fn condition(n: &Node, kind: &str) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == kind))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

fn has_taint(n: &Node, key: &str) -> bool {
    n.spec
        .as_ref()
        .is_some_and(|s| s.taints.iter().any(|t| t.key == key && t.effect == "NoExecute"))
}

/// Evicted: deleted, or marked for deletion (no kubelet confirms it).
async fn evicted(pods: &Api<Pod>, name: &str) -> Result<bool> {
    Ok(pods
        .get_opt(name)
        .await?
        .is_none_or(|p| !p.metadata().deletion_timestamp.is_empty()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_marked_unknown_tainted_and_drained_then_recovers() -> Result<()> {
    let mut c = Cluster::start_apiserver().await?;
    let nodes = Api::<Node>::all(c.client.clone());
    let pods = c.api::<Pod>("default");
    nodes.create(&node("n1")).await?;
    let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let kubelet = kubelet(c.client.clone(), "n1", alive.clone());
    eventually("n1 ready", Duration::from_secs(5), || async {
        Ok((condition(&nodes.get("n1").await?, "Ready") == "True").then_some(()))
    })
    .await?;

    let tolerate = |secs: Option<i32>| Toleration {
        key: "node.kubernetes.io/unreachable".into(),
        operator: "Exists".into(),
        effect: "NoExecute".into(),
        toleration_seconds: secs,
        ..Default::default()
    };
    let mut short = pod("short", "n1", &[], &[]);
    short.spec.as_mut().unwrap().tolerations = vec![tolerate(Some(1))];
    let mut forever = pod("forever", "n1", &[], &[]);
    forever.spec.as_mut().unwrap().tolerations = vec![tolerate(None)];
    let default = pod("default", "n1", &[], &[]);
    for p in [&short, &forever, &default] {
        pods.create(p).await?;
        set_pod_status(&pods, p.name(), "10.244.0.9", true).await?;
    }
    c.start_manager("node-lifecycle", |cfg| {
        cfg.node_monitor_grace_period = Duration::from_secs(2);
        cfg.node_monitor_period = Duration::from_millis(500);
        cfg.default_toleration_seconds = 4;
    });
    // Healthy while the heartbeats go on (longer than the grace period).
    let healthy_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < healthy_until {
        let n = nodes.get("n1").await?;
        assert_eq!(condition(&n, "Ready"), "True");
        assert!(!has_taint(&n, "node.kubernetes.io/unreachable"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    alive.store(false, std::sync::atomic::Ordering::SeqCst);
    let silent = Instant::now();
    let n = eventually("n1 unknown and tainted", Duration::from_secs(8), || async {
        let n = nodes.get("n1").await?;
        Ok(
            (condition(&n, "Ready") == "Unknown" && has_taint(&n, "node.kubernetes.io/unreachable"))
                .then_some(n),
        )
    })
    .await?;
    assert!(
        silent.elapsed() >= Duration::from_millis(1500),
        "marked before the grace period: {:?}",
        silent.elapsed()
    );
    let ready = n
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
        .unwrap();
    assert_eq!(
        (ready.reason.as_str(), ready.message.as_str()),
        ("NodeStatusUnknown", "Kubelet stopped posting node status.")
    );
    assert!(n
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .all(|c| c.status == "Unknown"));
    let taint = n
        .spec
        .as_ref()
        .unwrap()
        .taints
        .iter()
        .find(|t| t.key == "node.kubernetes.io/unreachable")
        .unwrap();
    assert!(!taint.time_added.is_empty());
    let tainted = Instant::now();
    // Pods on it no longer count as ready.
    eventually("pods marked not ready", Duration::from_secs(3), || async {
        let p = pods.get("forever").await?;
        Ok(p.status
            .unwrap_or_default()
            .conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "False")
            .then_some(()))
    })
    .await?;

    eventually("short evicted after its 1 s", Duration::from_secs(4), || async {
        Ok(evicted(&pods, "short").await?.then_some(()))
    })
    .await?;
    assert!(!evicted(&pods, "default").await?, "default toleration is 4 s");
    eventually(
        "default evicted after the default 4 s",
        Duration::from_secs(8),
        || async { Ok(evicted(&pods, "default").await?.then_some(())) },
    )
    .await?;
    let waited = tainted.elapsed();
    assert!(waited >= Duration::from_secs(2), "evicted too early: {waited:?}");
    assert!(!evicted(&pods, "forever").await?, "tolerates without limit");
    let ev = eventually("eviction event", Duration::from_secs(3), || async {
        Ok(events_for(&c.client, "short", "TaintManagerEviction")
            .await?
            .into_iter()
            .next())
    })
    .await?;
    assert_eq!(ev.message, "Marking for deletion Pod default/short");
    eventually("NodeNotReady event", Duration::from_secs(3), || async {
        Ok(events_for(&c.client, "n1", "NodeNotReady")
            .await?
            .into_iter()
            .next())
    })
    .await?;

    // Heartbeats return: Ready again, taint gone, the tolerant pod kept.
    alive.store(true, std::sync::atomic::Ordering::SeqCst);
    eventually("n1 recovered", Duration::from_secs(5), || async {
        let n = nodes.get("n1").await?;
        Ok(
            (condition(&n, "Ready") == "True" && !has_taint(&n, "node.kubernetes.io/unreachable"))
                .then_some(()),
        )
    })
    .await?;
    assert!(!evicted(&pods, "forever").await?);
    kubelet.abort();
    c.stop().await
}

// ---------------------------------------------------------------- autoscaler

fn deployment(name: &str, replicas: i32) -> Deployment {
    let labels: std::collections::BTreeMap<String, String> = [("app".to_string(), name.to_string())].into();
    let mut d = Deployment {
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: Some(LabelSelector {
                match_labels: labels.clone(),
                ..Default::default()
            }),
            template: Some(PodTemplateSpec {
                metadata: Some(rkube_api::meta::v1::ObjectMeta {
                    labels,
                    ..Default::default()
                }),
                spec: pod("x", "", &[], &[]).spec,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    d.metadata_mut().name = name.into();
    d
}

fn hpa(name: &str, min: i32, max: i32, cpu_percent: i32) -> HorizontalPodAutoscaler {
    let mut h = HorizontalPodAutoscaler {
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: Some(CrossVersionObjectReference {
                kind: "Deployment".into(),
                name: name.into(),
                api_version: "apps/v1".into(),
            }),
            min_replicas: Some(min),
            max_replicas: max,
            metrics: vec![MetricSpec {
                r#type: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: Some(MetricTarget {
                        r#type: "Utilization".into(),
                        average_utilization: Some(cpu_percent),
                        ..Default::default()
                    }),
                }),
                container_resource: None,
            }],
            behavior: None,
        }),
        ..Default::default()
    };
    h.metadata_mut().name = name.into();
    h
}

/// Plays the ReplicaSet controller and the kubelets for `web`: keeps
/// `spec.replicas` ready pods, and reports `total_millis` of CPU shared
/// evenly between them.
fn workload(
    client: Client,
    metrics: FakeMetricsSource,
    total_millis: std::sync::Arc<std::sync::atomic::AtomicI64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let deployments = Api::<Deployment>::namespaced(client.clone(), "default");
        let pods = Api::<Pod>::namespaced(client, "default");
        loop {
            let want = deployments
                .get("web")
                .await
                .ok()
                .and_then(|d| d.spec.and_then(|s| s.replicas))
                .unwrap_or(0);
            let have = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .map(|l| l.items.len() as i32)
                .unwrap_or(0);
            for i in have..want {
                let name = format!("web-{i}");
                if pods
                    .create(&pod(&name, "n1", &[("app", "web")], &[]))
                    .await
                    .is_ok()
                {
                    let _ = set_pod_status(&pods, &name, &format!("10.244.0.{}", 10 + i), true).await;
                }
            }
            for i in want..have {
                let _ = pods
                    .delete(&format!("web-{i}"), &DeleteParams::default().grace_period(0))
                    .await;
                metrics.remove_pod("default", &format!("web-{i}"));
            }
            let n = want.max(1) as i64;
            let each = total_millis.load(std::sync::atomic::Ordering::SeqCst) / n;
            for i in 0..want {
                metrics.set_pod("default", &format!("web-{i}"), each, 50 << 20);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn hpa_condition(h: &HorizontalPodAutoscaler, kind: &str) -> Option<(String, String, String)> {
    h.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == kind)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_scales_up_on_load_and_down_after_the_window() -> Result<()> {
    let mut c = Cluster::start_apiserver().await?;
    let deployments = c.api::<Deployment>("default");
    let hpas = c.api::<HorizontalPodAutoscaler>("default");
    let metrics = FakeMetricsSource::default();
    // 180m over 100m requests: 180 % against a 50 % target.
    let load = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(180));
    deployments.create(&deployment("web", 1)).await?;
    let workload = workload(c.client.clone(), metrics.clone(), load.clone());
    let window = Duration::from_secs(3);
    c.start_manager("horizontal-pod-autoscaler", |cfg| {
        cfg.hpa_sync_period = Duration::from_millis(500);
        cfg.hpa_downscale_stabilization = window;
        cfg.metrics_source = Some(metrics.shared());
    });
    hpas.create(&hpa("web", 1, 5, 50)).await?;

    // ceil(1 × 180/50) = 4; then 4 pods at 45 % are within tolerance.
    eventually("scaled to 4", Duration::from_secs(10), || async {
        Ok((deployments.get("web").await?.spec.unwrap().replicas == Some(4)).then_some(()))
    })
    .await?;
    let h = eventually("status shows 4 pods at 45 %", Duration::from_secs(10), || async {
        let h = hpas.get("web").await?;
        let s = h.status.clone().unwrap_or_default();
        let util = s
            .current_metrics
            .first()
            .and_then(|m| m.resource.as_ref())
            .and_then(|r| r.current.as_ref())
            .and_then(|c| c.average_utilization);
        Ok((s.current_replicas == 4 && util == Some(45)).then_some(h))
    })
    .await?;
    let s = h.status.clone().unwrap();
    assert_eq!(s.desired_replicas, 4);
    assert!(!s.last_scale_time.is_empty());
    assert_eq!(hpa_condition(&h, "ScalingActive").unwrap().1, "ValidMetricFound");
    assert_eq!(
        hpa_condition(&h, "ScalingLimited").unwrap().1,
        "DesiredWithinRange"
    );
    assert_eq!(hpa_condition(&h, "AbleToScale").unwrap().0, "True");
    eventually("the scale-up event", Duration::from_secs(5), || async {
        let ev = events_for(&c.client, "web", "SuccessfulRescale").await?;
        Ok(ev
            .first()
            .is_some_and(|e| {
                e.message
                    == "New size: 4; reason: cpu resource utilization (percentage of request) above target"
            })
            .then_some(()))
    })
    .await?;

    // Load drops to 5 %: down to 1, but only after the window.
    load.store(20, std::sync::atomic::Ordering::SeqCst);
    let dropped = Instant::now();
    eventually(
        "stabilized while the window holds it",
        Duration::from_secs(5),
        || async {
            let h = hpas.get("web").await?;
            Ok(
                (hpa_condition(&h, "AbleToScale").is_some_and(|c| c.1 == "ScaleDownStabilized"))
                    .then_some(()),
            )
        },
    )
    .await?;
    eventually("scaled down to 1", Duration::from_secs(10), || async {
        Ok((deployments.get("web").await?.spec.unwrap().replicas == Some(1)).then_some(()))
    })
    .await?;
    let held = dropped.elapsed();
    assert!(
        held >= window - Duration::from_secs(1),
        "scaled down after only {held:?}"
    );
    // the event is recorded after the scale, so it may trail it
    eventually("the scale-down event", Duration::from_secs(5), || async {
        let ev = events_for(&c.client, "web", "SuccessfulRescale").await?;
        Ok(ev
            .iter()
            .any(|e| e.message == "New size: 1; reason: All metrics below target")
            .then_some(()))
    })
    .await?;

    // Huge load: capped at maxReplicas... via the scale-up limit first (1 → 4).
    load.store(10_000, std::sync::atomic::Ordering::SeqCst);
    let h = eventually("limited", Duration::from_secs(10), || async {
        let h = hpas.get("web").await?;
        Ok(hpa_condition(&h, "ScalingLimited")
            .filter(|c| c.0 == "True")
            .map(|_| h))
    })
    .await?;
    let reason = hpa_condition(&h, "ScalingLimited").unwrap().1;
    assert!(
        reason == "ScaleUpLimit" || reason == "TooManyReplicas",
        "{reason}"
    );
    eventually("at max 5", Duration::from_secs(10), || async {
        Ok((deployments.get("web").await?.spec.unwrap().replicas == Some(5)).then_some(()))
    })
    .await?;

    // Metrics fail: the autoscaler says so and does not move.
    metrics.fail(Some("metrics backend down"));
    let h = eventually("ScalingActive False", Duration::from_secs(5), || async {
        let h = hpas.get("web").await?;
        Ok(hpa_condition(&h, "ScalingActive")
            .filter(|c| c.0 == "False")
            .map(|_| h))
    })
    .await?;
    let (_, reason, message) = hpa_condition(&h, "ScalingActive").unwrap();
    assert_eq!(reason, "FailedGetResourceMetric");
    assert!(message.contains("metrics backend down"), "{message}");
    assert_eq!(deployments.get("web").await?.spec.unwrap().replicas, Some(5));
    workload.abort();
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_kubelet_metrics_the_real_source_reports_failed_get_resource_metric() -> Result<()> {
    let mut c = Cluster::start_apiserver().await?;
    let deployments = c.api::<Deployment>("default");
    let hpas = c.api::<HorizontalPodAutoscaler>("default");
    let pods = c.api::<Pod>("default");
    Api::<Node>::all(c.client.clone()).create(&node("n1")).await?;
    deployments.create(&deployment("web", 1)).await?;
    pods.create(&pod("web-0", "n1", &[("app", "web")], &[])).await?;
    set_pod_status(&pods, "web-0", "10.244.0.3", true).await?;
    c.start_manager("horizontal-pod-autoscaler", |cfg| {
        cfg.hpa_sync_period = Duration::from_millis(500)
    });
    hpas.create(&hpa("web", 1, 5, 50)).await?;
    let h = eventually("ScalingActive False", Duration::from_secs(10), || async {
        let h = hpas.get("web").await?;
        Ok(hpa_condition(&h, "ScalingActive").map(|_| h))
    })
    .await?;
    let (status, reason, message) = hpa_condition(&h, "ScalingActive").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "FailedGetResourceMetric"),
        "{message}"
    );
    assert!(
        message.contains("n1"),
        "names the node without metrics: {message}"
    );
    assert_eq!(deployments.get("web").await?.spec.unwrap().replicas, Some(1));
    c.stop().await
}
