//! What the controller-manager's integration tests share: a cluster of a real apiserver
//! and the controller-manager (both started through their `run`), and a hollow kubelet that
//! settles pods through UpdateStatus the way kubelets would.

#![allow(dead_code)] // each test file uses its own part

use anyhow::Result;
use chrono::Utc;
use rkube_api::apps::v1::Deployment;
use rkube_api::core::v1::{Pod, PodCondition};
use rkube_api::Resource;
use rkube_client::{Api, Client, ListParams};
use rkube_testing::{Daemon, TestApiServer};
use std::time::Duration;

pub struct Cluster {
    pub api: TestApiServer,
    pub client: Client,
    manager: Daemon,
    kubelet: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// The controller-manager with `controllers` (comma-separated) against `api` (its
    /// `kube-controller-manager.conf` when the apiserver is secure), and a hollow kubelet
    /// settling pods with `settle`.
    pub async fn start<F>(api: TestApiServer, controllers: &str, settle: F) -> Result<Cluster>
    where
        F: Fn(&Pod) -> Option<Settle> + Send + 'static,
    {
        Self::start_with(api, controllers, |_| {}, settle).await
    }

    /// [`Cluster::start`] with the controller-manager's config changed by `configure`.
    pub async fn start_with<F>(
        api: TestApiServer,
        controllers: &str,
        configure: impl FnOnce(&mut rkube_controller_manager::Config),
        settle: F,
    ) -> Result<Cluster>
    where
        F: Fn(&Pod) -> Option<Settle> + Send + 'static,
    {
        let client = api.client();
        let mut config = rkube_controller_manager::Config::new(api.url().to_string());
        let kubeconfig = api.pki().join("kube-controller-manager.conf");
        if kubeconfig.exists() {
            config.kubeconfig = Some(kubeconfig);
        }
        config.controllers = vec![controllers.into()];
        configure(&mut config);
        let manager = Daemon::spawn(|stop| rkube_controller_manager::run(config, stop));
        let kubelet = tokio::spawn(hollow_kubelet(client.clone(), settle));
        Ok(Cluster {
            api,
            client,
            manager,
            kubelet,
        })
    }

    pub async fn stop(self) -> Result<()> {
        self.kubelet.abort();
        self.manager.stop().await?;
        self.api.stop().await
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// The pods of `default` matching `label` that are not being deleted, by name.
    pub async fn live_pods(&self, label: &str) -> Result<Vec<Pod>> {
        let list = self.pods().list(&ListParams::default().labels(label)).await?;
        let mut pods: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.metadata().deletion_timestamp.is_empty())
            .collect();
        pods.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(pods)
    }
}

/// What the hollow kubelet does with a pod.
pub enum Settle {
    /// Running, with a Ready condition.
    Ready,
    /// Ended in this phase (Succeeded, Failed).
    End(&'static str),
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// The pod's phase ("" before it has a status).
pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("")
}

/// Every 50 ms, settles each live pod `settle` names, as a kubelet would.
async fn hollow_kubelet<F>(client: Client, settle: F)
where
    F: Fn(&Pod) -> Option<Settle>,
{
    let api: Api<Pod> = Api::all(client.clone());
    loop {
        if let Ok(list) = api.list(&ListParams::default()).await {
            for pod in list.items {
                if !pod.metadata().deletion_timestamp.is_empty() {
                    continue;
                }
                let Some(how) = settle(&pod) else { continue };
                let mut p = pod.clone();
                let s = p.status.get_or_insert_with(Default::default);
                match how {
                    Settle::End(phase) => s.phase = phase.into(),
                    Settle::Ready => {
                        s.phase = "Running".into();
                        s.conditions.push(PodCondition {
                            r#type: "Ready".into(),
                            status: "True".into(),
                            last_transition_time: Utc::now()
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            ..Default::default()
                        });
                    }
                }
                let _ = Api::<Pod>::namespaced(client.clone(), pod.namespace())
                    .update_status(&p)
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Deployment of `replicas` pods of `image` labelled `app: NAME`, rolling one at a time.
pub fn deployment(name: &str, replicas: i32, image: &str) -> Deployment {
    let yaml = format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: app, image: "{image}"}}]
"#
    );
    serde_yaml::from_str(&yaml).expect("valid deployment")
}
