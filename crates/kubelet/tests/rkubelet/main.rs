//! End-to-end tests of the `rkubelet` daemon: an in-process apiserver, the kubelet started
//! through its library entry point, and real containerd/runc/CNI/registry from
//! `rkube_kubelet::testing` (each test its own, inside its own network namespace). Pods are
//! reached only from inside those namespaces; the kubelet's gRPC server on 127.0.0.1.

mod daemon;
mod lifecycle;
mod logs;
mod pod_config;
mod pressure;

use std::time::Duration;

use rkube_api::core::v1::Pod;
use rkube_client::{Api, Client};
use rkube_kubelet::testing::{TestNode, TestRegistry};
use rkube_kubelet::{Config, RunningKubelet};

macro_rules! require_containerd {
    () => {
        if let Some(reason) = rkube_kubelet::testing::skip_reason() {
            eprintln!("SKIPPED {}: {reason}", module_path!());
            return Ok(());
        }
    };
}
pub(crate) use require_containerd;

pub struct Cluster {
    pub kubelet: Option<RunningKubelet>,
    pub config: Config,
    pub client: Client,
    pub image: String,
    pub registry: TestRegistry,
    pub api: Option<rkube_testing::TestApiServer>,
    // Last: its drop kills every container and removes the namespace.
    pub node: TestNode,
}

impl Cluster {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Like [`start`](Self::start), with the kubelet's config adjusted by `tweak` first.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        let node = TestNode::start().await?;
        let registry = TestRegistry::start().await?;
        let (image, _) = registry.push_busybox("rkube/busybox").await?;
        let api = rkube_testing::TestApiServer::start().await?;
        let mut config = rkube_kubelet::Config::for_test_node(
            &node,
            api.url(),
            "node-a",
            [127, 0, 0, 1].into(),
            Some("10.244.9.0/24"),
        );
        config.crashloop_backoff_base = Duration::from_millis(500);
        config.crashloop_backoff_max = Duration::from_secs(1);
        config.node_status_update_frequency = Duration::from_secs(1);
        config.pod_poll_interval = Duration::from_millis(200);
        config.resync_period = Duration::from_secs(2);
        // The binary cargo built for this test run, not whatever `rkubelet` lies around.
        config.log_driver = Some(env!("CARGO_BIN_EXE_rkubelet").into());
        tweak(&mut config);
        let kubelet = rkube_kubelet::start(config.clone()).await?;
        let client = api.client();
        Ok(Cluster {
            kubelet: Some(kubelet),
            config,
            client,
            image,
            registry,
            api: Some(api),
            node,
        })
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub async fn kubelet_client(
        &self,
    ) -> anyhow::Result<rkube_api::kubelet::v1::kubelet_client::KubeletClient<tonic::transport::Channel>>
    {
        let addr = self.kubelet.as_ref().expect("kubelet running").addr;
        Ok(rkube_api::kubelet::v1::kubelet_client::KubeletClient::connect(format!("http://{addr}")).await?)
    }

    /// Creates a pod from YAML (nodeName and image filled in).
    pub async fn create_pod(&self, yaml: &str) -> anyhow::Result<Pod> {
        let yaml = yaml.replace("IMAGE", &self.image);
        let mut pod: Pod = serde_yaml::from_str(&yaml)?;
        pod.spec.get_or_insert_with(Default::default).node_name = self.config.node_name.clone();
        Ok(self.pods().create(&pod).await?)
    }

    /// Polls the pod until `check` returns Some.
    pub async fn wait_pod<T>(
        &self,
        name: &str,
        timeout: Duration,
        mut check: impl FnMut(&Pod) -> Option<T>,
    ) -> anyhow::Result<T> {
        let pods = self.pods();
        let what = format!("pod {name} to reach the expected state");
        // Each look runs `check` on the pod it read; a RefCell lends it to one look at a time.
        let check = std::cell::RefCell::new(&mut check);
        rkube_testing::eventually(&what, timeout, || {
            let found = pods.get_opt(name);
            let check = &check;
            async move {
                let pod = found
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("pod {name} does not exist"))?;
                let status = serde_json::to_string(&pod.status).unwrap_or_default();
                let seen = (check.borrow_mut())(&pod);
                seen.map(Some).ok_or_else(|| anyhow::anyhow!("status {status}"))
            }
        })
        .await
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(k) = self.kubelet.take() {
            k.stop().await;
        }
        if let Some(api) = self.api.take() {
            api.stop().await?;
        }
        Ok(())
    }
}

pub fn phase(p: &Pod) -> String {
    p.status.as_ref().map(|s| s.phase.clone()).unwrap_or_default()
}

pub fn condition(p: &Pod, t: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == t)
        .map(|c| c.status.clone())
}

pub fn container(p: &Pod, name: &str) -> Option<rkube_api::core::v1::ContainerStatus> {
    let s = p.status.as_ref()?;
    s.container_statuses
        .iter()
        .chain(s.init_container_statuses.iter())
        .find(|c| c.name == name)
        .cloned()
}

/// The message of the first event `reason` about `object`, waiting up to 30 s for it.
pub async fn wait_for_event(
    events: &Api<rkube_api::core::v1::Event>,
    object: &str,
    reason: &str,
) -> anyhow::Result<String> {
    let what = format!("a {reason} event for {object}");
    rkube_testing::eventually(&what, Duration::from_secs(30), || async {
        let list = events.list(&rkube_client::ListParams::default()).await?;
        Ok(list
            .items
            .into_iter()
            .find(|e| e.reason == reason && e.involved_object.as_ref().is_some_and(|o| o.name == object))
            .map(|e| e.message))
    })
    .await
}
