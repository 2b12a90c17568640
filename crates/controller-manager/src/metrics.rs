//! Where the horizontal-pod-autoscaler reads pod usage: the
//! `MetricsSource` trait, the real source (the kubelets' usage gathered by
//! the apiserver's `Metrics` RPC) and a fake the tests script.

use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::rpc;
use rkube_client::Client;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// One container's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMetrics {
    pub name: String,
    pub cpu_millis: i64,
    pub memory_bytes: i64,
}

/// One pod's usage, per container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMetrics {
    pub name: String,
    pub containers: Vec<ContainerMetrics>,
}

/// Why usage could not be read; the autoscaler shows it in its
/// ScalingActive condition.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct MetricsError(pub String);

/// Usage of the pods matching a label selector in a namespace. Pods the
/// source knows nothing about are simply absent (the autoscaler treats
/// them as missing metrics).
pub trait MetricsSource: Send + Sync + 'static {
    fn pod_metrics<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PodMetrics>, MetricsError>>;
}

/// A metrics source to put in `Config::metrics_source`.
#[derive(Clone)]
pub struct SharedMetricsSource(pub Arc<dyn MetricsSource>);

impl fmt::Debug for SharedMetricsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedMetricsSource")
    }
}

/// The real source: the apiserver asks every node's kubelet for the usage
/// it samples from cgroups (`Metrics` RPC). A node whose kubelet does not
/// answer is skipped; if none answers, the error says which and why.
pub struct ApiserverMetricsSource {
    client: Client,
}

impl ApiserverMetricsSource {
    pub fn new(client: Client) -> Self {
        ApiserverMetricsSource { client }
    }
}

impl MetricsSource for ApiserverMetricsSource {
    fn pod_metrics<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PodMetrics>, MetricsError>> {
        async move {
            let req = rpc::MetricsRequest {
                namespace: namespace.to_string(),
                label_selector: selector.to_string(),
                nodes: false,
            };
            let resp =
                self.client.metrics(req).await.map_err(|e| {
                    MetricsError(format!("unable to get pod metrics from the apiserver: {e}"))
                })?;
            if resp.pods.is_empty() && !resp.errors.is_empty() {
                return Err(MetricsError(format!(
                    "no kubelet returned metrics: {}",
                    resp.errors.join("; ")
                )));
            }
            if !resp.errors.is_empty() {
                tracing::debug!(errors = ?resp.errors, "some kubelets returned no metrics");
            }
            Ok(resp
                .pods
                .into_iter()
                .filter(|p| p.namespace == namespace || p.namespace.is_empty())
                .map(|p| PodMetrics {
                    name: p.name,
                    containers: p
                        .containers
                        .into_iter()
                        .map(|c| ContainerMetrics {
                            name: c.name,
                            cpu_millis: c.cpu_millis,
                            memory_bytes: c.memory_bytes,
                        })
                        .collect(),
                })
                .collect())
        }
        .boxed()
    }
}

/// A scripted source: usage per `namespace/pod`, or an error for every
/// call. The selector is not applied (the autoscaler matches pods itself).
#[derive(Debug, Default, Clone)]
pub struct FakeMetricsSource {
    state: Arc<Mutex<FakeState>>,
}

#[derive(Debug, Default)]
struct FakeState {
    pods: HashMap<String, Vec<ContainerMetrics>>,
    error: Option<String>,
}

impl FakeMetricsSource {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets one pod's usage: a single container `app`.
    pub fn set_pod(&self, namespace: &str, pod: &str, cpu_millis: i64, memory_bytes: i64) {
        self.set_containers(
            namespace,
            pod,
            vec![ContainerMetrics {
                name: "app".into(),
                cpu_millis,
                memory_bytes,
            }],
        );
    }

    pub fn set_containers(&self, namespace: &str, pod: &str, containers: Vec<ContainerMetrics>) {
        self.state().pods.insert(format!("{namespace}/{pod}"), containers);
    }

    pub fn remove_pod(&self, namespace: &str, pod: &str) {
        self.state().pods.remove(&format!("{namespace}/{pod}"));
    }

    /// Every call fails with `message` (None: works again).
    pub fn fail(&self, message: Option<&str>) {
        self.state().error = message.map(str::to_string);
    }

    pub fn shared(&self) -> SharedMetricsSource {
        SharedMetricsSource(Arc::new(self.clone()))
    }
}

impl MetricsSource for FakeMetricsSource {
    fn pod_metrics<'a>(
        &'a self,
        namespace: &'a str,
        _selector: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PodMetrics>, MetricsError>> {
        let state = self.state();
        let result = match &state.error {
            Some(e) => Err(MetricsError(e.clone())),
            None => {
                let prefix = format!("{namespace}/");
                let mut pods: Vec<PodMetrics> = state
                    .pods
                    .iter()
                    .filter_map(|(k, c)| {
                        k.strip_prefix(&prefix).map(|name| PodMetrics {
                            name: name.to_string(),
                            containers: c.clone(),
                        })
                    })
                    .collect();
                pods.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(pods)
            }
        };
        futures::future::ready(result).boxed()
    }
}
