//! The scheduler against a real apiserver (in-process, free loopback port,
//! temporary data directory) and hollow nodes: Node objects with
//! allocatable resources and a Ready condition, and their Leases renewed by
//! the test. No kubelet runs, so pods stay Pending once bound; what is
//! asserted is where they are bound, and what users see on pods that do
//! not fit (the PodScheduled condition and events).

use anyhow::{Context, Result};
use rkube_api::apps::v1::{Deployment, DeploymentSpec};
use rkube_api::coordination::v1::{Lease, LeaseSpec};
use rkube_api::core::v1::{
    Affinity, Container, Event, Node, NodeAffinity, NodeCondition, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, NodeStatus, Pod, PodAffinityTerm, PodAntiAffinity, PodSchedulingGate, PodSpec,
    PodTemplateSpec, PreferredSchedulingTerm, ResourceRequirements, Taint, Toleration,
    TopologySpreadConstraint,
};
use rkube_api::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use rkube_api::quantity::Quantity;
use rkube_api::scheduling::v1::PriorityClass;
use rkube_api::Resource;
use rkube_client::{Api, Client, DeleteParams, ListParams};
use rkube_testing::{eventually, Daemon, LeaseProbe, TestApiServer};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

struct Cluster {
    api: TestApiServer,
    client: Client,
    scheduler: Option<Daemon>,
    leases: tokio::task::JoinHandle<()>,
}

/// A scheduler whose back-off is far longer than any wait here: a pod that
/// gets placed after a cluster change was retried because of the change.
fn config(url: &str) -> rkube_scheduler::Config {
    let mut c = rkube_scheduler::Config::new(url);
    c.pod_initial_backoff = Duration::from_secs(60);
    c.pod_max_backoff = Duration::from_secs(120);
    // Leader election stays on, as by default, with a short Lease: a scheduler
    // started after one was killed waits for the dead one's Lease to run out.
    c.leader_election.lease_duration = Duration::from_secs(2);
    c.leader_election.renew_deadline = Duration::from_millis(1500);
    c.leader_election.retry_period = Duration::from_millis(250);
    c
}

impl Cluster {
    async fn start() -> Result<Cluster> {
        let api = TestApiServer::start().await?;
        let client = api.client();
        let leases = tokio::spawn(renew_leases(client.clone()));
        let mut c = Cluster {
            api,
            client,
            scheduler: None,
            leases,
        };
        c.start_scheduler();
        Ok(c)
    }

    fn start_scheduler(&mut self) {
        let config = config(self.api.url());
        self.scheduler = Some(Daemon::spawn(|stop| rkube_scheduler::run(config, stop)));
    }

    /// Kills the scheduler without a graceful shutdown (binds in flight are
    /// cut off), as `kill -9` would.
    async fn kill_scheduler(&mut self) {
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.abort().await;
        }
    }

    async fn stop(mut self) -> Result<()> {
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.stop().await?;
        }
        self.leases.abort();
        self.api.stop().await
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// A hollow node: the Node object a kubelet would register, Ready, with
    /// `cpu`/`memory` allocatable and room for 110 pods.
    async fn node(
        &self,
        name: &str,
        cpu: &str,
        memory: &str,
        labels: &[(&str, &str)],
        taints: Vec<Taint>,
    ) -> Result<()> {
        self.node_with(name, cpu, memory, labels, taints, "True").await
    }

    async fn node_with(
        &self,
        name: &str,
        cpu: &str,
        memory: &str,
        labels: &[(&str, &str)],
        taints: Vec<Taint>,
        ready: &str,
    ) -> Result<()> {
        let mut n = Node::default();
        n.metadata_mut().name = name.into();
        n.metadata_mut()
            .labels
            .insert("kubernetes.io/hostname".into(), name.into());
        for (k, v) in labels {
            n.metadata_mut().labels.insert(k.to_string(), v.to_string());
        }
        n.spec.get_or_insert_with(Default::default).taints = taints;
        let created = self
            .nodes()
            .create(&n)
            .await
            .with_context(|| format!("creating node {name}"))?;
        let mut with_status = created.clone();
        let res = BTreeMap::from([
            ("cpu".to_string(), Quantity::new(cpu)),
            ("memory".to_string(), Quantity::new(memory)),
            ("pods".to_string(), Quantity::new("110")),
        ]);
        with_status.status = Some(NodeStatus {
            capacity: res.clone(),
            allocatable: res,
            conditions: vec![NodeCondition {
                r#type: "Ready".into(),
                status: ready.into(),
                reason: "KubeletReady".into(),
                last_heartbeat_time: now(),
                ..Default::default()
            }],
            ..Default::default()
        });
        self.nodes().update_status(&with_status).await?;
        Ok(())
    }

    async fn create(&self, p: Pod) -> Result<Pod> {
        let name = p.name().to_string();
        self.pods()
            .create(&p)
            .await
            .with_context(|| format!("creating pod {name}"))
    }

    /// Waits until the pod is bound; returns its node.
    async fn bound(&self, name: &str) -> Result<String> {
        eventually(&format!("pod {name} to be bound"), WAIT, || async {
            let p = self.pods().get(name).await?;
            let node = p.spec.as_ref().map(|s| s.node_name.clone()).unwrap_or_default();
            if node.is_empty() {
                anyhow::bail!("not bound: {:?}", p.status);
            }
            Ok(Some(node))
        })
        .await
    }

    /// Waits until the pod carries PodScheduled=False; returns its message.
    async fn unschedulable(&self, name: &str) -> Result<String> {
        eventually(&format!("PodScheduled=False on pod {name}"), WAIT, || async {
            let p = self.pods().get(name).await?;
            let Some(c) = p.status.as_ref().and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.r#type == "PodScheduled" && c.status == "False")
            }) else {
                anyhow::bail!("status {:?}", p.status);
            };
            assert_eq!(c.reason, "Unschedulable");
            assert!(p.spec.as_ref().unwrap().node_name.is_empty());
            Ok(Some(c.message.clone()))
        })
        .await
    }

    /// Waits for an event about `pod` with this reason; returns its message.
    async fn event(&self, pod: &str, reason: &str) -> Result<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        eventually(&format!("a {reason} event for pod {pod}"), WAIT, || async {
            let list = events.list(&ListParams::default()).await?;
            Ok(list
                .items
                .iter()
                .find(|e| e.reason == reason && e.involved_object.as_ref().is_some_and(|o| o.name == pod))
                .map(|e| e.message.clone()))
        })
        .await
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Keeps every node's Lease in kube-node-lease fresh, as kubelets do.
async fn renew_leases(client: Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    loop {
        if let Ok(list) = nodes.list(&ListParams::default()).await {
            for n in list.items {
                let mut l = Lease::default();
                l.metadata_mut().name = n.name().to_string();
                l.spec = Some(LeaseSpec {
                    holder_identity: n.name().to_string(),
                    lease_duration_seconds: Some(40),
                    renew_time: now(),
                    ..Default::default()
                });
                match leases.get_opt(n.name()).await {
                    Ok(Some(mut old)) => {
                        old.spec = l.spec;
                        let _ = leases.update(&old).await;
                    }
                    Ok(None) => {
                        let _ = leases.create(&l).await;
                    }
                    Err(_) => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn pod(name: &str, cpu: &str, memory: &str) -> Pod {
    let requests = BTreeMap::from([
        ("cpu".to_string(), Quantity::new(cpu)),
        ("memory".to_string(), Quantity::new(memory)),
    ]);
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: "nginx:1.25".into(),
                resources: Some(ResourceRequirements {
                    requests,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: value.into(),
        effect: effect.into(),
        ..Default::default()
    }
}

fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_are_never_overcommitted_and_the_unschedulable_message_reads_like_kubernetes() -> Result<()>
{
    let c = Cluster::start().await?;
    c.node("node-1", "2", "4Gi", &[], vec![]).await?;
    c.node("node-2", "2", "4Gi", &[], vec![]).await?;
    c.node_with("node-3", "8", "16Gi", &[], vec![], "False").await?;
    // A burst: four 1-cpu pods for four cpus on the Ready nodes.
    for i in 1..=4 {
        c.create(pod(&format!("web-{i}"), "1", "128Mi")).await?;
    }
    let mut per_node: HashMap<String, u32> = HashMap::new();
    let mut on_node_1 = Vec::new();
    for i in 1..=4 {
        let node = c.bound(&format!("web-{i}")).await?;
        if node == "node-1" {
            on_node_1.push(format!("web-{i}"));
        }
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(
        per_node,
        HashMap::from([("node-1".into(), 2), ("node-2".into(), 2)])
    );
    let msg = c.event("web-1", "Scheduled").await?;
    assert!(
        msg.starts_with("Successfully assigned default/web-1 to node-"),
        "{msg}"
    );

    c.create(pod("web-5", "1", "128Mi")).await?;
    let msg = c.unschedulable("web-5").await?;
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 2 Insufficient cpu."
    );
    assert_eq!(c.event("web-5", "FailedScheduling").await?, msg);

    // A new node is a reason to try again at once (back-off here is 60 s).
    c.node("node-4", "2", "4Gi", &[], vec![]).await?;
    assert_eq!(c.bound("web-5").await?, "node-4");

    // Deleting pods frees their node for a waiting one. (Without a
    // kubelet to confirm a graceful deletion, delete at once: a pod that is
    // still terminating keeps its resources, as in Kubernetes.)
    c.create(pod("big", "2", "128Mi")).await?;
    c.unschedulable("big").await?;
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    for name in &on_node_1 {
        c.pods().delete(name, &now).await?;
    }
    assert_eq!(c.bound("big").await?, "node-1");
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selector_and_node_affinity() -> Result<()> {
    let c = Cluster::start().await?;
    c.node("ssd", "4", "8Gi", &[("disk", "ssd"), ("cores", "16")], vec![])
        .await?;
    c.node("hdd", "4", "8Gi", &[("disk", "hdd"), ("cores", "4")], vec![])
        .await?;

    let mut p = pod("by-selector", "100m", "0");
    p.spec
        .as_mut()
        .unwrap()
        .node_selector
        .insert("disk".into(), "ssd".into());
    c.create(p).await?;

    let required = |name: &str, r: NodeSelectorRequirement| {
        let mut p = pod(name, "100m", "0");
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: vec![r],
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    };
    c.create(required("not-in-ssd", req("disk", "NotIn", &["ssd"])))
        .await?;
    c.create(required("many-cores", req("cores", "Gt", &["8"])))
        .await?;
    c.create(required("no-gpu", req("gpu", "Exists", &[]))).await?;

    let mut preferred = pod("prefers-hdd", "100m", "0");
    preferred.spec.as_mut().unwrap().affinity = Some(Affinity {
        node_affinity: Some(NodeAffinity {
            preferred_during_scheduling_ignored_during_execution: vec![PreferredSchedulingTerm {
                weight: 50,
                preference: Some(NodeSelectorTerm {
                    match_expressions: vec![req("disk", "In", &["hdd"])],
                    ..Default::default()
                }),
            }],
            ..Default::default()
        }),
        ..Default::default()
    });
    c.create(preferred).await?;

    assert_eq!(c.bound("by-selector").await?, "ssd");
    assert_eq!(c.bound("not-in-ssd").await?, "hdd");
    assert_eq!(c.bound("many-cores").await?, "ssd");
    assert_eq!(c.bound("prefers-hdd").await?, "hdd");
    assert_eq!(
        c.unschedulable("no-gpu").await?,
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    );
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taints_tolerations_and_cordon() -> Result<()> {
    let c = Cluster::start().await?;
    c.node(
        "gpu",
        "4",
        "8Gi",
        &[],
        vec![taint("dedicated", "gpu", "NoSchedule")],
    )
    .await?;
    c.node(
        "soft",
        "4",
        "8Gi",
        &[],
        vec![taint("spot", "", "PreferNoSchedule")],
    )
    .await?;

    // PreferNoSchedule is avoided while a NoSchedule node is off limits.
    for i in 0..3 {
        assert_eq!(
            c.bound(c.create(pod(&format!("plain-{i}"), "100m", "0")).await?.name())
                .await?,
            "soft"
        );
    }
    let mut tolerant = pod("tolerant", "100m", "0");
    tolerant.spec.as_mut().unwrap().tolerations.push(Toleration {
        key: "dedicated".into(),
        operator: "Equal".into(),
        value: "gpu".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    });
    tolerant
        .spec
        .as_mut()
        .unwrap()
        .node_selector
        .insert("kubernetes.io/hostname".into(), "gpu".into());
    c.create(tolerant).await?;
    assert_eq!(c.bound("tolerant").await?, "gpu");

    // Cordon the only untainted node: plain pods have nowhere to go.
    // The patch returns before the scheduler's watch delivers it. The same
    // patch adds a label that only a canary pod asks for (and the canary
    // tolerates the cordon): once the canary is bound, the scheduler has
    // seen the cordon too, since one node event carries both.
    c.nodes()
        .patch_merge(
            "soft",
            &serde_json::json!({"metadata": {"labels": {"canary": "cordoned"}}, "spec": {"unschedulable": true}}),
        )
        .await?;
    let mut canary = pod("canary", "0", "0");
    let spec = canary.spec.as_mut().unwrap();
    spec.node_selector.insert("canary".into(), "cordoned".into());
    spec.tolerations.push(Toleration {
        key: "node.kubernetes.io/unschedulable".into(),
        operator: "Exists".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    });
    c.create(canary).await?;
    assert_eq!(c.bound("canary").await?, "soft");
    c.create(pod("waits", "100m", "0")).await?;
    assert_eq!(
        c.unschedulable("waits").await?,
        "0/2 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were unschedulable."
    );
    // Pods already bound are never moved.
    assert_eq!(c.bound("plain-0").await?, "soft");
    // Uncordon: the node change retries the pod at once.
    c.nodes()
        .patch_merge("soft", &serde_json::json!({"spec": {"unschedulable": false}}))
        .await?;
    assert_eq!(c.bound("waits").await?, "soft");
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_one_owner_spread_over_nodes_and_zones() -> Result<()> {
    let c = Cluster::start().await?;
    let zone = "topology.kubernetes.io/zone";
    c.node("a-1", "16", "32Gi", &[(zone, "a")], vec![]).await?;
    c.node("a-2", "16", "32Gi", &[(zone, "a")], vec![]).await?;
    c.node("b-1", "16", "32Gi", &[(zone, "b")], vec![]).await?;

    // Default spreading: six replicas of one ReplicaSet, balanced over the
    // zones first (zone a has two nodes, zone b one), then over the nodes.
    for i in 0..6 {
        let mut p = pod(&format!("rs-{i}"), "100m", "0");
        p.metadata_mut().owner_references.push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "web".into(),
            uid: "rs-web-uid".into(),
            controller: Some(true),
            ..Default::default()
        });
        c.create(p).await?;
        // One at a time, so each sees its siblings bound.
        c.bound(&format!("rs-{i}")).await?;
    }
    let mut per_node: HashMap<String, u32> = HashMap::new();
    for i in 0..6 {
        *per_node.entry(c.bound(&format!("rs-{i}")).await?).or_default() += 1;
    }
    let zone_a = per_node.get("a-1").copied().unwrap_or(0) + per_node.get("a-2").copied().unwrap_or(0);
    assert_eq!(
        (zone_a, per_node.get("b-1").copied().unwrap_or(0)),
        (3, 3),
        "{per_node:?}"
    );
    assert_eq!(per_node.len(), 3, "every node got a replica: {per_node:?}");

    // An explicit zone constraint: four pods, two per zone, although zone
    // a has twice the nodes.
    for i in 0..4 {
        let mut p = pod(&format!("zoned-{i}"), "100m", "0");
        p.metadata_mut().labels.insert("app".into(), "zoned".into());
        p.spec
            .as_mut()
            .unwrap()
            .topology_spread_constraints
            .push(TopologySpreadConstraint {
                max_skew: 1,
                topology_key: zone.into(),
                when_unsatisfiable: "DoNotSchedule".into(),
                label_selector: Some(LabelSelector {
                    match_labels: BTreeMap::from([("app".to_string(), "zoned".to_string())]),
                    ..Default::default()
                }),
                ..Default::default()
            });
        c.create(p).await?;
        c.bound(&format!("zoned-{i}")).await?;
    }
    let mut per_zone: HashMap<&str, u32> = HashMap::new();
    for i in 0..4 {
        let node = c.bound(&format!("zoned-{i}")).await?;
        *per_zone
            .entry(if node.starts_with("a-") { "a" } else { "b" })
            .or_default() += 1;
    }
    assert_eq!(per_zone, HashMap::from([("a", 2), ("b", 2)]));
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_scheduler_midway_binds_every_pod_once_and_overcommits_nothing() -> Result<()> {
    let mut c = Cluster::start().await?;
    // 10 nodes × 10 cpu, 100 one-cpu pods: exactly full.
    for i in 0..10 {
        c.node(&format!("n{i}"), "10", "64Gi", &[], vec![]).await?;
    }
    let creates = (0..100).map(|i| c.create(pod(&format!("p{i}"), "1", "0")));
    futures::future::try_join_all(creates).await?;
    // Kill it while binds are in flight.
    tokio::time::sleep(Duration::from_millis(150)).await;
    c.kill_scheduler().await;
    c.start_scheduler();
    let mut per_node: HashMap<String, u32> = HashMap::new();
    for i in 0..100 {
        *per_node.entry(c.bound(&format!("p{i}")).await?).or_default() += 1;
    }
    assert_eq!(per_node.len(), 10);
    assert!(per_node.values().all(|n| *n == 10), "{per_node:?}");
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_for_another_scheduler_are_left_alone() -> Result<()> {
    let c = Cluster::start().await?;
    c.node("n1", "4", "8Gi", &[], vec![]).await?;
    let mut other = pod("other", "100m", "0");
    other.spec.as_mut().unwrap().scheduler_name = "my-scheduler".into();
    c.create(other).await?;
    c.create(pod("mine", "100m", "0")).await?;
    // The scheduler's pod informer delivered "other" before "mine"; once
    // "mine" is bound, "other" has been seen and passed over.
    c.bound("mine").await?;
    let p = c.pods().get("other").await?;
    assert!(p.spec.as_ref().unwrap().node_name.is_empty());
    assert!(p
        .status
        .as_ref()
        .is_none_or(|s| s.conditions.iter().all(|c| c.r#type != "PodScheduled")));
    c.stop().await
}

fn anti_affinity_on_hostname(app: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: BTreeMap::from([("app".to_string(), app.to_string())]),
                    ..Default::default()
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_with_required_anti_affinity_puts_one_replica_per_node() -> Result<()> {
    let c = Cluster::start().await?;
    let mut config = rkube_controller_manager::Config::new(c.api.url().to_string());
    config.controllers = vec!["replicaset,deployment".into()];
    let manager = Daemon::spawn(|stop| rkube_controller_manager::run(config, stop));
    for n in ["node-1", "node-2", "node-3"] {
        c.node(n, "8", "16Gi", &[], vec![]).await?;
    }
    let mut template = pod("", "100m", "64Mi");
    template.metadata.as_mut().unwrap().labels = BTreeMap::from([("app".to_string(), "cache".to_string())]);
    template.spec.as_mut().unwrap().affinity = Some(anti_affinity_on_hostname("cache"));
    let mut d = Deployment::default();
    d.metadata_mut().name = "cache".into();
    d.spec = Some(DeploymentSpec {
        replicas: Some(3),
        selector: Some(LabelSelector {
            match_labels: BTreeMap::from([("app".to_string(), "cache".to_string())]),
            ..Default::default()
        }),
        template: Some(PodTemplateSpec {
            metadata: template.metadata.map(|m| ObjectMeta {
                labels: m.labels,
                ..Default::default()
            }),
            spec: template.spec,
        }),
        ..Default::default()
    });
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "default");
    deployments.create(&d).await?;

    let cache_pods = || async {
        let list = c
            .pods()
            .list(&ListParams {
                label_selector: "app=cache".into(),
                ..Default::default()
            })
            .await?;
        anyhow::Ok(list.items)
    };
    let nodes = eventually("3 cache replicas bound", WAIT, || async {
        let pods = cache_pods().await?;
        let nodes: Vec<String> = pods
            .iter()
            .filter_map(|p| p.spec.as_ref().map(|s| s.node_name.clone()))
            .filter(|n| !n.is_empty())
            .collect();
        Ok((nodes.len() == 3).then_some(nodes))
    })
    .await?;
    let distinct: std::collections::HashSet<&String> = nodes.iter().collect();
    assert_eq!(distinct.len(), 3, "one replica per node: {nodes:?}");

    deployments
        .replace_with("cache", |mut d| {
            d.spec.as_mut().unwrap().replicas = Some(4);
            d
        })
        .await?;
    let fourth = eventually("a 4th cache replica", WAIT, || async {
        let pods = cache_pods().await?;
        Ok(pods
            .into_iter()
            .find(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_empty()))
            .map(|p| p.name().to_string()))
    })
    .await?;
    assert_eq!(
        c.unschedulable(&fourth).await?,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
    );
    // A pod of another app shares the nodes freely.
    c.create(pod("web", "100m", "0")).await?;
    c.bound("web").await?;
    manager.stop().await?;
    c.stop().await
}

fn priority_class(name: &str, value: i32) -> PriorityClass {
    let mut pc = PriorityClass::default();
    pc.metadata_mut().name = name.into();
    pc.value = value;
    pc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_priority_pod_preempts_a_low_priority_one_on_a_full_node() -> Result<()> {
    let c = Cluster::start().await?;
    let classes: Api<PriorityClass> = Api::all(c.client.clone());
    classes.create(&priority_class("low", 100)).await?;
    classes.create(&priority_class("high", 1000)).await?;
    c.node("node-1", "1", "2Gi", &[], vec![]).await?;
    let with_class = |name: &str, class: &str| {
        let mut p = pod(name, "1", "128Mi");
        p.spec.as_mut().unwrap().priority_class_name = class.into();
        p
    };
    c.create(with_class("batch", "low")).await?;
    assert_eq!(c.bound("batch").await?, "node-1");
    // The same priority does not preempt: it waits.
    c.create(with_class("batch-2", "low")).await?;
    c.unschedulable("batch-2").await?;

    c.create(with_class("important", "high")).await?;
    assert_eq!(
        c.event("batch", "Preempted").await?,
        "Preempted by pod default/important on node node-1"
    );
    // The victim goes gracefully, marked as preempted; the preemptor
    // waits for it on its node.
    let victim = eventually("batch terminating", WAIT, || async {
        let p = c.pods().get("batch").await?;
        Ok((!p.metadata().deletion_timestamp.is_empty()).then_some(p))
    })
    .await?;
    let mark = victim
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == "DisruptionTarget"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (mark.status.as_str(), mark.reason.as_str()),
        ("True", "PreemptionByScheduler")
    );
    eventually("important nominated to node-1", WAIT, || async {
        let p = c.pods().get("important").await?;
        let status = p.status.unwrap_or_default();
        Ok((status.nominated_node_name == "node-1").then_some(()))
    })
    .await?;
    assert!(c
        .pods()
        .get("important")
        .await?
        .spec
        .unwrap()
        .node_name
        .is_empty());
    // The kubelet would confirm the victim stopped: do it here.
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    c.pods().delete("batch", &now).await?;
    assert_eq!(c.bound("important").await?, "node-1");
    // The equal-priority pod never preempted anyone and still waits.
    assert!(c.pods().get("batch-2").await?.spec.unwrap().node_name.is_empty());
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_pod_is_scheduled_only_once_its_gates_are_removed() -> Result<()> {
    let c = Cluster::start().await?;
    c.node("node-1", "4", "8Gi", &[], vec![]).await?;
    let mut gated = pod("gated", "100m", "0");
    gated.spec.as_mut().unwrap().scheduling_gates = vec![
        PodSchedulingGate {
            name: "example.com/quota".into(),
        },
        PodSchedulingGate {
            name: "example.com/image".into(),
        },
    ];
    c.create(gated).await?;
    // A pod created after it is placed; the gated one is not.
    c.create(pod("after", "100m", "0")).await?;
    c.bound("after").await?;
    let p = c.pods().get("gated").await?;
    assert!(p.spec.as_ref().unwrap().node_name.is_empty());
    let cond = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.r#type == "PodScheduled"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "SchedulingGated")
    );
    // Adding a gate is refused; removing them one by one is not.
    let err = c
        .pods()
        .replace_with("gated", |mut p| {
            p.spec.as_mut().unwrap().scheduling_gates.push(PodSchedulingGate {
                name: "example.com/more".into(),
            });
            p
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("only deletion is allowed"), "{err}");
    c.pods()
        .replace_with("gated", |mut p| {
            p.spec.as_mut().unwrap().scheduling_gates.remove(0);
            p
        })
        .await?;
    c.create(pod("after-2", "100m", "0")).await?;
    c.bound("after-2").await?;
    assert!(c.pods().get("gated").await?.spec.unwrap().node_name.is_empty());
    c.pods()
        .replace_with("gated", |mut p| {
            p.spec.as_mut().unwrap().scheduling_gates.clear();
            p
        })
        .await?;
    assert_eq!(c.bound("gated").await?, "node-1");
    c.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_pods_are_placed_highest_priority_first() -> Result<()> {
    let c = Cluster::start().await?;
    let classes: Api<PriorityClass> = Api::all(c.client.clone());
    classes.create(&priority_class("low", 100)).await?;
    classes.create(&priority_class("high", 1000)).await?;
    let with_class = |name: &str, class: &str| {
        let mut p = pod(name, "1", "128Mi");
        p.spec.as_mut().unwrap().priority_class_name = class.into();
        p
    };
    // No node yet: both wait, the low one since first.
    for (name, class) in [("low-1", "low"), ("low-2", "low"), ("high-1", "high")] {
        c.create(with_class(name, class)).await?;
        c.unschedulable(name).await?;
    }
    // Room for one: the important pod gets it, so nobody is preempted.
    c.node("node-1", "1", "2Gi", &[], vec![]).await?;
    assert_eq!(c.bound("high-1").await?, "node-1");
    for name in ["low-1", "low-2"] {
        let p = c.pods().get(name).await?;
        assert!(p.metadata().deletion_timestamp.is_empty(), "{name} was preempted");
        assert!(p.spec.unwrap().node_name.is_empty(), "{name} was bound");
    }
    c.stop().await
}

/// Two schedulers: the one holding the Lease kube-system/kube-scheduler binds; killed
/// without a goodbye (its Lease is not released), the standby takes over within the lease
/// duration and binds the pods created meanwhile. The failover time is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_scheduler_takes_over_within_the_lease_when_the_leader_is_killed() -> Result<()> {
    let mut c = Cluster::start().await?;
    let lease_duration = config(c.api.url()).leader_election.lease_duration;
    let lease = LeaseProbe::new(c.client.clone(), "kube-system", "kube-scheduler");
    let leader = lease.new_holder("", WAIT).await?;
    let standby_config = config(c.api.url());
    let standby = Daemon::spawn(|stop| rkube_scheduler::run(standby_config, stop));
    c.node("n1", "8", "16Gi", &[], vec![]).await?;
    c.create(pod("before", "1", "0")).await?;
    c.bound("before").await?;
    lease.renewed_by(&leader, 3, lease_duration).await?;

    let killed = std::time::Instant::now();
    c.kill_scheduler().await;
    c.create(pod("after", "1", "0")).await?;
    let successor = lease.new_holder(&leader, lease_duration * 3).await?;
    let took_over = killed.elapsed();
    c.bound("after").await?;
    println!(
        "scheduler failover: lease {lease_duration:?}: new leader after {took_over:?}, \
         pending pod bound {:?} after the kill",
        killed.elapsed()
    );
    assert!(took_over <= lease_duration * 2, "{took_over:?}");
    assert_ne!(successor, leader);
    standby.stop().await?;
    assert_eq!(lease.holder().await?.0, "", "released on a graceful stop");
    c.stop().await
}
