//! The real one-node setup of the pods and storage suites: a throwaway containerd inside a
//! private network namespace with only loopback (the kubelet's test harness), the busybox
//! test image on a loopback registry, and rkube's apiserver in this process on a sled
//! store in a temporary directory. Nothing leaves the machine.

use anyhow::Context;
use rkube_kubelet::testing::{TestNode, TestRegistry};

pub struct OneNode {
    pub node: TestNode,
    pub registry: TestRegistry,
    /// The busybox image's reference in the registry.
    pub image: String,
    pub api: rkube_apiserver::RunningApiServer,
    /// The apiserver's data directory (also a place for other small files of the run).
    pub api_dir: tempfile::TempDir,
}

/// Runs `body` to its end on a new two-thread runtime whose threads are named `name`.
pub fn block_on<T>(
    name: &str,
    body: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .context("cannot build the runtime")?
        .block_on(body)
}

impl OneNode {
    pub async fn start() -> anyhow::Result<OneNode> {
        let node = TestNode::start().await.context("starting the test node")?;
        let registry = TestRegistry::start().await.context("starting the registry")?;
        let (image, _) = registry
            .push_busybox("rkube/busybox")
            .await
            .context("pushing the busybox image")?;
        let api_dir = tempfile::tempdir()?;
        let api = rkube_apiserver::start(rkube_apiserver::Config::local(api_dir.path()))
            .await
            .context("starting the apiserver")?;
        Ok(OneNode {
            node,
            registry,
            image,
            api,
            api_dir,
        })
    }
}
