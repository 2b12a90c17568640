//! Each cloud controller against a real apiserver in-process and the fake
//! cloud (`fake::FakeCloud`), started through the same `run` as the daemon
//! with short periods. The test plays the kubelets (Nodes and their Ready
//! condition) and the cloud (instances appearing, shutting down, vanishing).

use anyhow::Result;
use rkube_api::core::v1::{
    Container, Event, Node, NodeCondition, NodeSpec, NodeStatus, Pod, PodSpec, Service, ServicePort,
    ServiceSpec, Taint,
};
use rkube_api::Resource;
use rkube_client::{Api, Client, DeleteParams, ListParams};
use rkube_cloud_controller_manager::cloud::Route;
use rkube_cloud_controller_manager::fake::FakeCloud;
use rkube_cloud_controller_manager::Config;
use rkube_testing::{eventually, Daemon, TestApiServer};
use std::sync::Arc;
use std::time::Duration;

const UNINITIALIZED: &str = "node.cloudprovider.kubernetes.io/uninitialized";
const SHUTDOWN: &str = "node.cloudprovider.kubernetes.io/shutdown";
const FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";

struct Cluster {
    api: TestApiServer,
    client: Client,
    cloud: Arc<FakeCloud>,
    manager: Option<Daemon>,
}

impl Cluster {
    async fn start(controllers: &str) -> Result<Cluster> {
        let api = TestApiServer::start().await?;
        let mut c = Cluster {
            client: api.client(),
            api,
            cloud: Arc::new(FakeCloud::new()),
            manager: None,
        };
        c.start_manager(controllers);
        Ok(c)
    }

    fn start_manager(&mut self, controllers: &str) {
        let mut config = Config::new(self.api.url().to_string());
        config.controllers = vec![controllers.to_string()];
        config.node_monitor_period = Duration::from_millis(200);
        config.route_reconciliation_period = Duration::from_millis(300);
        config.provider = Some(self.cloud.clone());
        self.manager = Some(Daemon::spawn(|stop| {
            rkube_cloud_controller_manager::run(config, stop)
        }));
    }

    async fn stop_manager(&mut self) -> Result<()> {
        match self.manager.take() {
            Some(manager) => manager.stop().await,
            None => Ok(()),
        }
    }

    async fn stop(mut self) -> Result<()> {
        self.stop_manager().await?;
        self.api.stop().await
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// A Node as a kubelet registers it (`tainted`: with
    /// `--cloud-provider=external`), then its Ready condition.
    async fn add_node(
        &self,
        name: &str,
        tainted: bool,
        ready: &str,
        pod_cidr: &str,
        ip: &str,
    ) -> Result<Node> {
        let mut node = Node {
            spec: Some(NodeSpec {
                pod_cidr: pod_cidr.into(),
                taints: if tainted {
                    vec![Taint {
                        key: UNINITIALIZED.into(),
                        value: "true".into(),
                        effect: "NoSchedule".into(),
                        ..Default::default()
                    }]
                } else {
                    vec![]
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        node.metadata_mut().name = name.into();
        self.nodes().create(&node).await?;
        self.set_node_status(name, ready, ip).await
    }

    async fn set_node_status(&self, name: &str, ready: &str, ip: &str) -> Result<Node> {
        let ip = ip.to_string();
        let ready = ready.to_string();
        Ok(self
            .nodes()
            .replace_status_with(name, |mut n| {
                let status = n.status.get_or_insert_with(NodeStatus::default);
                status.conditions = vec![NodeCondition {
                    r#type: "Ready".into(),
                    status: ready.clone(),
                    ..Default::default()
                }];
                if status.addresses.is_empty() && !ip.is_empty() {
                    status.addresses = vec![rkube_api::core::v1::NodeAddress {
                        r#type: "InternalIP".into(),
                        address: ip.clone(),
                    }];
                }
                n
            })
            .await?)
    }
}

async fn reasons_for(client: &Client, name: &str) -> Result<Vec<String>> {
    let all = Api::<Event>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let mut events: Vec<Event> = all
        .items
        .into_iter()
        .filter(|e| e.involved_object.as_ref().is_some_and(|o| o.name == name))
        .collect();
    events.sort_by(|a, b| a.first_timestamp.cmp(&b.first_timestamp));
    Ok(events.into_iter().map(|e| e.reason).collect())
}

/// Waits (10 s at most) until an Event about `name` has `reason`: the
/// recorder writes Events after the object update they describe.
async fn event_seen(client: &Client, name: &str, reason: &str) -> Result<()> {
    eventually(
        &format!("a {reason} event about {name}"),
        Duration::from_secs(10),
        || async {
            Ok(reasons_for(client, name)
                .await?
                .iter()
                .any(|r| r == reason)
                .then_some(()))
        },
    )
    .await
}

fn taint_keys(n: &Node) -> Vec<String> {
    n.spec
        .as_ref()
        .map(|s| s.taints.iter().map(|t| t.key.clone()).collect())
        .unwrap_or_default()
}

fn ingress_ips(s: &Service) -> Vec<String> {
    s.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .map(|l| l.ingress.iter().map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

fn lb_service(name: &str, kind: &str) -> Service {
    let mut s = Service {
        spec: Some(ServiceSpec {
            r#type: kind.into(),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    s.metadata_mut().name = name.into();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_node_initialises_nodes_from_their_instance() -> Result<()> {
    let c = Cluster::start("cloud-node").await?;
    c.cloud.add_instance("a", "10.0.0.2");
    c.add_node("a", true, "True", "", "").await?;
    // A node whose instance the cloud does not know stays tainted.
    c.add_node("stranger", true, "True", "", "").await?;

    let a = eventually("node a initialised", Duration::from_secs(10), || async {
        let n = c.nodes().get("a").await?;
        Ok(taint_keys(&n).is_empty().then_some(n))
    })
    .await?;
    assert_eq!(a.spec.as_ref().unwrap().provider_id, "fake://a");
    let labels = &a.metadata().labels;
    assert_eq!(labels["node.kubernetes.io/instance-type"], "fake.small");
    assert_eq!(labels["topology.kubernetes.io/zone"], "zone-a");
    assert_eq!(labels["topology.kubernetes.io/region"], "region-1");
    let addresses: Vec<(String, String)> = a
        .status
        .as_ref()
        .unwrap()
        .addresses
        .iter()
        .map(|x| (x.r#type.clone(), x.address.clone()))
        .collect();
    assert_eq!(addresses, [("InternalIP".to_string(), "10.0.0.2".to_string())]);
    event_seen(&c.client, "a", "Synced").await?;

    event_seen(&c.client, "stranger", "FailedToInitialize").await?;
    let stranger = c.nodes().get("stranger").await?;
    assert_eq!(taint_keys(&stranger), [UNINITIALIZED]);
    assert_eq!(stranger.spec.unwrap().provider_id, "");

    // Once its instance appears it is initialised too (retried with backoff).
    c.cloud.add_instance("stranger", "10.0.0.3");
    eventually("stranger initialised", Duration::from_secs(15), || async {
        let n = c.nodes().get("stranger").await?;
        Ok(taint_keys(&n).is_empty().then_some(()))
    })
    .await?;
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_node_lifecycle_deletes_vanished_nodes_and_taints_shut_down_ones() -> Result<()> {
    let c = Cluster::start("cloud-node-lifecycle").await?;
    for name in ["kept", "gone", "off", "ready-but-gone"] {
        c.cloud.add_instance(name, "10.0.0.9");
    }
    c.add_node("kept", false, "False", "", "").await?;
    c.add_node("gone", false, "True", "", "").await?;
    c.add_node("off", false, "Unknown", "", "").await?;
    c.add_node("ready-but-gone", false, "True", "", "").await?;
    // A pod bound to the node that will vanish.
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let mut pod = Pod {
        spec: Some(PodSpec {
            node_name: "gone".into(),
            containers: vec![Container {
                name: "app".into(),
                image: "busybox".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    pod.metadata_mut().name = "on-gone".into();
    pods.create(&pod).await?;

    c.cloud.set_shutdown("off", true);
    c.cloud.remove_instance("gone");
    c.cloud.remove_instance("ready-but-gone");
    // Ready nodes are left alone even without an instance.
    c.set_node_status("gone", "Unknown", "").await?;

    eventually("node gone deleted", Duration::from_secs(10), || async {
        Ok(c.nodes().get_opt("gone").await?.is_none().then_some(()))
    })
    .await?;
    eventually("its pod deleted", Duration::from_secs(10), || async {
        Ok(pods.get_opt("on-gone").await?.is_none().then_some(()))
    })
    .await?;
    let off = eventually("node off tainted", Duration::from_secs(10), || async {
        let n = c.nodes().get("off").await?;
        Ok(taint_keys(&n).contains(&SHUTDOWN.to_string()).then_some(n))
    })
    .await?;
    let t = &off.spec.as_ref().unwrap().taints[0];
    assert_eq!(
        (t.effect.as_str(), off.metadata().name.as_str()),
        ("NoSchedule", "off")
    );
    assert!(
        c.nodes().get_opt("off").await?.is_some(),
        "a shut-down node is kept"
    );
    assert!(c.nodes().get_opt("kept").await?.is_some());
    assert!(c.nodes().get_opt("ready-but-gone").await?.is_some());
    assert!(
        !c.cloud.calls().iter().any(|x| x.contains("ready-but-gone")),
        "{:?}",
        c.cloud.calls()
    );

    // Powered on and Ready again: the taint goes.
    c.cloud.set_shutdown("off", false);
    c.set_node_status("off", "True", "").await?;
    eventually("shutdown taint removed", Duration::from_secs(10), || async {
        let n = c.nodes().get("off").await?;
        Ok(taint_keys(&n).is_empty().then_some(()))
    })
    .await?;
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_load_balancers_are_ensured_and_released() -> Result<()> {
    let mut c = Cluster::start("service").await?;
    c.add_node("a", false, "True", "", "10.0.0.2").await?;
    let svcs = c.services();
    svcs.create(&lb_service("web", "LoadBalancer")).await?;
    svcs.create(&lb_service("plain", "ClusterIP")).await?;

    let web = eventually("web gets an address", Duration::from_secs(10), || async {
        let s = svcs.get("web").await?;
        Ok((!ingress_ips(&s).is_empty()).then_some(s))
    })
    .await?;
    assert_eq!(ingress_ips(&web), ["198.51.100.1"]);
    assert!(web.metadata().finalizers.contains(&FINALIZER.to_string()));
    // Events are recorded asynchronously, after the status update.
    let reasons = eventually("web's load balancer events", Duration::from_secs(10), || async {
        let reasons = reasons_for(&c.client, "web").await?;
        Ok((reasons.len() >= 2).then_some(reasons))
    })
    .await?;
    assert_eq!(
        reasons[..2],
        ["EnsuringLoadBalancer", "EnsuredLoadBalancer"],
        "{reasons:?}"
    );
    assert!(c
        .cloud
        .calls()
        .contains(&"ensure_load_balancer default/web nodes=1".to_string()));
    let plain = svcs.get("plain").await?;
    assert!(plain.metadata().finalizers.is_empty() && ingress_ips(&plain).is_empty());

    // Type change: the address is released and the finalizer removed.
    svcs.replace_with("web", |mut s| {
        let spec = s.spec.as_mut().unwrap();
        spec.r#type = "ClusterIP".into();
        for p in &mut spec.ports {
            p.node_port = 0;
        }
        s
    })
    .await?;
    eventually("web released", Duration::from_secs(10), || async {
        let s = svcs.get("web").await?;
        Ok((ingress_ips(&s).is_empty() && s.metadata().finalizers.is_empty()).then_some(()))
    })
    .await?;
    assert!(c.cloud.state().load_balancers.is_empty());
    event_seen(&c.client, "web", "DeletedLoadBalancer").await?;

    // Back to LoadBalancer: a new address.
    svcs.replace_with("web", |mut s| {
        s.spec.as_mut().unwrap().r#type = "LoadBalancer".into();
        s
    })
    .await?;
    eventually("web gets an address again", Duration::from_secs(10), || async {
        let s = svcs.get("web").await?;
        Ok((ingress_ips(&s) == ["198.51.100.2"]).then_some(()))
    })
    .await?;

    // Deleted while the manager is down: the finalizer holds the Service
    // until the manager is back and has released the address.
    c.stop_manager().await?;
    svcs.delete("web", &DeleteParams::default()).await?;
    let held = svcs.get("web").await?;
    assert!(!held.metadata().deletion_timestamp.is_empty());
    assert_eq!(c.cloud.state().load_balancers.len(), 1);
    c.start_manager("service");
    eventually("web gone", Duration::from_secs(10), || async {
        Ok(svcs.get_opt("web").await?.is_none().then_some(()))
    })
    .await?;
    assert!(c.cloud.state().load_balancers.is_empty());

    // A failing cloud is reported on the Service and retried.
    c.cloud.state().fail_load_balancers = Some("quota exceeded".into());
    svcs.create(&lb_service("unlucky", "LoadBalancer")).await?;
    event_seen(&c.client, "unlucky", "SyncLoadBalancerFailed").await?;
    c.cloud.state().fail_load_balancers = None;
    eventually(
        "unlucky gets an address after the retry",
        Duration::from_secs(15),
        || async {
            let s = svcs.get("unlucky").await?;
            Ok((!ingress_ips(&s).is_empty()).then_some(()))
        },
    )
    .await?;
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_follow_nodes_pod_cidrs() -> Result<()> {
    let c = Cluster::start("route").await?;
    // A leftover route of a node that no longer exists.
    c.cloud.state().routes.push(Route {
        target_node: "old".into(),
        target_node_addresses: vec![],
        destination_cidr: "10.244.9.0/24".into(),
    });
    c.add_node("a", false, "True", "10.244.0.0/24", "10.0.0.2")
        .await?;
    c.add_node("b", false, "True", "10.244.1.0/24", "10.0.0.3")
        .await?;
    c.add_node("no-cidr", false, "True", "", "10.0.0.4").await?;

    let routes = || {
        let mut r: Vec<(String, String)> = c
            .cloud
            .state()
            .routes
            .iter()
            .map(|r| (r.destination_cidr.clone(), r.target_node.clone()))
            .collect();
        r.sort();
        r
    };
    let want = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    eventually("routes for a and b only", Duration::from_secs(10), || async {
        Ok((routes() == want(&[("10.244.0.0/24", "a"), ("10.244.1.0/24", "b")])).then_some(()))
    })
    .await?;

    c.nodes().delete("b", &DeleteParams::default()).await?;
    eventually("b's route removed", Duration::from_secs(10), || async {
        Ok((routes() == want(&[("10.244.0.0/24", "a")])).then_some(()))
    })
    .await?;
    // Removed behind the controller's back: recreated by the periodic pass.
    c.cloud.state().routes.clear();
    eventually("a's route recreated", Duration::from_secs(10), || async {
        Ok((routes() == want(&[("10.244.0.0/24", "a")])).then_some(()))
    })
    .await?;
    c.stop().await
}

/// With the `local` provider built from a cloud-config (as the daemon does),
/// addresses survive a restart of the manager: Services that already show
/// one get it back before a Service created meanwhile is given one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_pool_addresses_survive_a_manager_restart() -> Result<()> {
    let server = TestApiServer::start().await?;
    let client = server.client();
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let cloud_config = server.dir().join("cloud.yaml");
    std::fs::write(
        &cloud_config,
        "loadBalancerPool: 192.0.2.100-192.0.2.102\nroutes: {enabled: false}\n",
    )?;
    let start = || {
        let mut config = Config::new(server.url().to_string());
        config.controllers = vec!["service".into()];
        config.cloud_config = Some(cloud_config.clone());
        // One at a time, in queue order, so the order is not luck.
        config.workers = 1;
        Daemon::spawn(|stop| rkube_cloud_controller_manager::run(config, stop))
    };
    let address = |name: &'static str| {
        let svcs = svcs.clone();
        async move {
            eventually(
                &format!("{name} has an address"),
                Duration::from_secs(10),
                || async {
                    let ips = ingress_ips(&svcs.get(name).await?);
                    Ok(ips.first().cloned())
                },
            )
            .await
        }
    };

    let manager = start();
    svcs.create(&lb_service("keeper", "LoadBalancer")).await?;
    assert_eq!(address("keeper").await?, "192.0.2.100");
    svcs.create(&lb_service("leaver", "LoadBalancer")).await?;
    assert_eq!(address("leaver").await?, "192.0.2.101");
    // leaver's address is released while the manager runs...
    svcs.delete("leaver", &DeleteParams::default()).await?;
    eventually("leaver gone", Duration::from_secs(10), || async {
        Ok(svcs.get_opt("leaver").await?.is_none().then_some(()))
    })
    .await?;
    manager.stop().await?;

    // ...and while it is down a Service arrives that comes first in the
    // queue: it must not take keeper's address, the lowest in the pool.
    // (With the finalizer already, as a Service the manager had seen before
    // it lost its status, so nothing delays its turn.)
    let mut aardvark = lb_service("aardvark", "LoadBalancer");
    aardvark.metadata_mut().finalizers = vec![FINALIZER.into()];
    svcs.create(&aardvark).await?;
    let manager = start();
    assert_eq!(address("aardvark").await?, "192.0.2.101");
    assert_eq!(ingress_ips(&svcs.get("keeper").await?), ["192.0.2.100"]);
    manager.stop().await?;
    server.stop().await
}
