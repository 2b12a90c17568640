//! End-to-end tests of the node runtime layer against real containerd, runc, CNI plugins and
//! an OCI registry (see `rkube_node_runtime::testing`). Every test owns its containerd, network
//! namespace, registry and cgroups, so they run in parallel. They need root; they are
//! skipped, with a message, only where containerd is not installed.

mod containers;
mod network;
mod pull;

use std::time::{Duration, Instant};

use rkube_node_runtime::runtime::{
    ContainerConfig, ContainerId, ContainerRuntime, ContainerState, ContainerdRuntime, ImageInfo, PullOptions,
};
use rkube_node_runtime::testing::{TestNode, TestRegistry};

/// Returns early (passing) with a message when the machine cannot run these tests.
macro_rules! require_containerd {
    () => {
        if let Some(reason) = rkube_node_runtime::testing::skip_reason() {
            eprintln!("SKIPPED {}: {reason}", module_path!());
            return Ok(());
        }
    };
}
pub(crate) use require_containerd;

/// A node with containerd, a registry holding the busybox image, and that image pulled.
pub struct Fixture {
    pub node: TestNode,
    pub registry: TestRegistry,
    pub runtime: ContainerdRuntime,
    pub image: ImageInfo,
    /// `127.0.0.1:PORT/rkube/busybox:latest`
    pub reference: String,
}

impl Fixture {
    pub async fn start() -> anyhow::Result<Self> {
        let node = TestNode::start().await?;
        let registry = TestRegistry::start().await?;
        let (reference, _digest) = registry.push_busybox("rkube/busybox").await?;
        let runtime = node.runtime();
        let image = runtime.pull_image(&reference, &PullOptions::default()).await?;
        Ok(Self {
            node,
            registry,
            runtime,
            image,
            reference,
        })
    }

    /// A container of pod `pod_uid` running `script` with busybox sh.
    pub fn container(&self, pod_uid: &str, name: &str, script: &str) -> ContainerConfig {
        ContainerConfig {
            pod_uid: pod_uid.to_string(),
            pod_namespace: "default".to_string(),
            pod_name: format!("pod-{pod_uid}"),
            name: name.to_string(),
            image: self.reference.clone(),
            command: vec!["sh".into(), "-c".into(), script.to_string()],
            ..Default::default()
        }
    }

    /// Creates and starts a container; returns its id.
    pub async fn run(&self, config: &ContainerConfig) -> anyhow::Result<ContainerId> {
        let id = self.runtime.create_container(config).await?;
        self.runtime
            .start_container(&id, &self.node.log_path(&format!("{}-{}", config.name, id)))
            .await?;
        Ok(id)
    }

    /// Waits until the container has exited; returns its final state.
    pub async fn wait_exited(&self, id: &ContainerId, timeout: Duration) -> anyhow::Result<ContainerState> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.runtime.container_status(id).await?;
            if matches!(status.state, ContainerState::Exited { .. }) {
                return Ok(status.state);
            }
            if Instant::now() > deadline {
                anyhow::bail!("container {id} still {:?} after {timeout:?}", status.state);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
