//! The real one-node setup of the pods and storage suites: a throwaway containerd inside a
//! private network namespace with only loopback (the kubelet's test harness), the busybox
//! test image on a loopback registry, and rkube's apiserver in this process on a sled
//! store in a temporary directory. Nothing leaves the machine.

use anyhow::Context;
use rkube_kubelet::testing::{TestNode, TestRegistry};
use std::future::Future;
use std::time::Duration;

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

/// A daemon's `run(config, shutdown)` on this runtime, stopped by [`Daemons::stop`].
pub struct Daemons {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<anyhow::Result<()>>)>,
}

impl Default for Daemons {
    fn default() -> Self {
        Self::new()
    }
}

impl Daemons {
    pub fn new() -> Self {
        Daemons {
            stop: tokio::sync::watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    pub fn spawn<F, Fut>(&mut self, name: &'static str, run: F)
    where
        F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let mut stopped = self.stop.subscribe();
        let shutdown = Box::pin(async move {
            let _ = stopped.wait_for(|s| *s).await;
        });
        self.tasks.push((name, tokio::spawn(run(shutdown))));
    }

    /// Stops every daemon; the first one that failed is the error.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let mut first = Ok(());
        for (name, task) in self.tasks {
            let outcome = match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(Ok(r)) => r.with_context(|| format!("the {name} failed")),
                Ok(Err(e)) => Err(anyhow::anyhow!("the {name} panicked: {e}")),
                Err(_) => Err(anyhow::anyhow!("the {name} did not stop within 10 s")),
            };
            if first.is_ok() {
                first = outcome;
            }
        }
        first
    }
}
