//! The Node object and its heartbeats: registration with what the machine has, status
//! conditions kept current, the `kube-node-lease` Lease renewed, and the pod CIDR picked up
//! from `spec.podCIDR` (or `--pod-cidr`) to configure pod networking.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use rkube_api::coordination::v1::{Lease, LeaseSpec};
use rkube_api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use rkube_api::meta::v1::ObjectMeta;
use rkube_api::quantity::Quantity;
use rkube_api::Resource as _;
use rkube_client::{Api, Client};
use tokio::sync::watch;

use crate::config::Config;
use rkube_node_runtime::network::{CniConfig, CniNetwork, PodNetwork};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_DURATION_SECONDS: i32 = 40;
pub const UNINITIALIZED_TAINT: &str = "node.cloudprovider.kubernetes.io/uninitialized";

/// Pod networking once the node's pod CIDR is known; `None` before.
pub type NetworkSlot = watch::Receiver<Option<Arc<dyn PodNetwork>>>;

pub use rkube_api::time::now as now_rfc3339;

/// Keeps the Node, its Lease and the pod network current. Runs until dropped.
pub struct NodeAgent {
    pub client: Client,
    pub config: Config,
    pub kubelet_port: u16,
    pub runtime_version: String,
    pub network_tx: watch::Sender<Option<Arc<dyn PodNetwork>>>,
    /// MemoryPressure and DiskPressure as the eviction manager sees them.
    pub pressure: crate::node_pressure::PressureSlot,
}

impl NodeAgent {
    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Creates the Node, or updates the one that exists (another run of this kubelet).
    pub async fn register(&self) -> anyhow::Result<Node> {
        let api = self.nodes();
        let name = &self.config.node_name;
        let labels = self.labels();
        match api.get_opt(name).await? {
            Some(_) => {
                let node = api
                    .replace_with(name, |mut n| {
                        let meta = n.metadata.get_or_insert_with(Default::default);
                        meta.labels.extend(labels.clone());
                        meta.annotations.extend(self.annotations());
                        n
                    })
                    .await?;
                Ok(node)
            }
            None => {
                let mut node = Node {
                    metadata: Some(ObjectMeta {
                        name: name.clone(),
                        labels: labels.into_iter().collect(),
                        annotations: self.annotations(),
                        ..Default::default()
                    }),
                    spec: Some(NodeSpec {
                        pod_cidr: String::new(),
                        taints: if self.config.cloud_provider == "external" {
                            vec![Taint {
                                key: UNINITIALIZED_TAINT.into(),
                                value: "true".into(),
                                effect: "NoSchedule".into(),
                                time_added: String::new(),
                            }]
                        } else {
                            vec![]
                        },
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                node.set_type_meta();
                match api.create(&node).await {
                    Ok(n) => Ok(n),
                    Err(e) if e.is_already_exists() => Ok(api.get(name).await?),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Where this node's local volumes go, for the local provider's provisioner.
    fn annotations(&self) -> BTreeMap<String, String> {
        let dir = crate::claims::volume_dir(&self.config.root_dir);
        BTreeMap::from([(
            crate::claims::VOLUME_DIR_ANNOTATION.to_string(),
            dir.display().to_string(),
        )])
    }

    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "kubernetes.io/hostname".to_string(),
                self.config.node_name.clone(),
            ),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), go_arch().to_string()),
        ])
    }

    /// The node's pod CIDR: `spec.podCIDR`, else `--pod-cidr`.
    fn pod_cidr(&self, node: &Node) -> Option<String> {
        node.spec
            .as_ref()
            .map(|s| s.pod_cidr.clone())
            .filter(|c| !c.is_empty())
            .or_else(|| self.config.pod_cidr.clone())
    }

    /// Configures pod networking once a CIDR is known. Returns why the network is not
    /// ready, if it is not.
    fn ensure_network(&self, node: &Node) -> Option<String> {
        if self.network_tx.borrow().is_some() {
            return None;
        }
        let Some(cidr) = self.pod_cidr(node) else {
            return Some(format!(
                "network not ready: node {} has no spec.podCIDR yet (the controller-manager's node-ipam sets it) and no --pod-cidr was given",
                self.config.node_name
            ));
        };
        let cni = CniConfig {
            plugin_dirs: self.config.cni_bin_dirs.clone(),
            run_dir: self.config.run_dir.clone(),
            state_dir: self.config.root_dir.join("cni"),
            pod_cidr: cidr.clone(),
            cluster_cidr: self.config.cluster_cidr.clone(),
            node_netns: self.config.cni_node_netns.clone(),
            ..CniConfig::default()
        };
        match CniNetwork::new(cni) {
            Ok(network) => {
                tracing::info!(pod_cidr = %cidr, "pod network configured");
                let _ = self.network_tx.send(Some(Arc::new(network)));
                None
            }
            Err(e) => Some(format!("network not ready: pod CIDR {cidr}: {e}")),
        }
    }

    /// One status update: conditions with a fresh heartbeat, capacity, addresses.
    pub async fn update_status(&self) -> anyhow::Result<()> {
        let api = self.nodes();
        let name = self.config.node_name.clone();
        let node = api.get(&name).await?;
        let not_ready = self.ensure_network(&node);
        let now = now_rfc3339();
        let status = self.status(node.status.as_ref(), not_ready.as_deref(), &now);
        api.replace_status_with(&name, |mut n| {
            n.status = Some(status.clone());
            n
        })
        .await?;
        Ok(())
    }

    fn status(&self, old: Option<&NodeStatus>, not_ready: Option<&str>, now: &str) -> NodeStatus {
        let capacity = capacity(&self.config.root_dir);
        let pressure = *self.pressure.borrow();
        let condition = |type_: &str, ok: bool, reason: &str, message: &str| {
            let status = if ok { "True" } else { "False" }.to_string();
            let previous = old.and_then(|s| s.conditions.iter().find(|c| c.r#type == type_));
            let last_transition_time = match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => now.to_string(),
            };
            NodeCondition {
                r#type: type_.into(),
                status,
                last_heartbeat_time: now.to_string(),
                last_transition_time,
                reason: reason.into(),
                message: message.into(),
            }
        };
        let ready = match not_ready {
            None => condition("Ready", true, "KubeletReady", "kubelet is posting ready status"),
            Some(why) => condition("Ready", false, "KubeletNotReady", why),
        };
        NodeStatus {
            allocatable: capacity.clone(),
            capacity,
            phase: String::new(),
            conditions: vec![
                if pressure.memory {
                    condition(
                        "MemoryPressure",
                        true,
                        "KubeletHasInsufficientMemory",
                        "kubelet has insufficient memory available",
                    )
                } else {
                    condition(
                        "MemoryPressure",
                        false,
                        "KubeletHasSufficientMemory",
                        "kubelet has sufficient memory available",
                    )
                },
                if pressure.disk {
                    condition(
                        "DiskPressure",
                        true,
                        "KubeletHasDiskPressure",
                        "kubelet has disk pressure",
                    )
                } else {
                    condition(
                        "DiskPressure",
                        false,
                        "KubeletHasNoDiskPressure",
                        "kubelet has no disk pressure",
                    )
                },
                condition(
                    "PIDPressure",
                    false,
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                ready,
            ],
            addresses: match old.map(|s| s.addresses.clone()).filter(|a| !a.is_empty()) {
                // With an external cloud provider the cloud-controller-manager
                // owns the addresses once the node has any (as in Kubernetes).
                Some(kept) if self.config.cloud_provider == "external" => kept,
                _ => vec![
                    NodeAddress {
                        r#type: "InternalIP".into(),
                        address: self.config.node_ip.to_string(),
                    },
                    NodeAddress {
                        r#type: "Hostname".into(),
                        address: crate::config::hostname(),
                    },
                ],
            },
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(self.kubelet_port),
                }),
            }),
            node_info: Some(NodeSystemInfo {
                machine_id: read_trimmed("/etc/machine-id"),
                system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
                boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
                kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
                os_image: os_image(),
                container_runtime_version: format!("containerd://{}", self.runtime_version),
                kubelet_version: format!("v{}", env!("CARGO_PKG_VERSION")),
                kube_proxy_version: String::new(),
                operating_system: "linux".into(),
                architecture: go_arch().into(),
            }),
            images: old.map(|s| s.images.clone()).unwrap_or_default(),
        }
    }

    /// Renews (or creates) the node's Lease.
    pub async fn renew_lease(&self) -> anyhow::Result<()> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let name = self.config.node_name.clone();
        let renew = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let spec = LeaseSpec {
            holder_identity: name.clone(),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            acquire_time: String::new(),
            renew_time: renew.clone(),
            lease_transitions: None,
        };
        match api.get_opt(&name).await? {
            None => {
                let mut lease = Lease {
                    metadata: Some(ObjectMeta {
                        name: name.clone(),
                        namespace: LEASE_NAMESPACE.into(),
                        ..Default::default()
                    }),
                    spec: Some(LeaseSpec {
                        acquire_time: renew,
                        ..spec
                    }),
                    ..Default::default()
                };
                lease.set_type_meta();
                match api.create(&lease).await {
                    Err(e) if !e.is_already_exists() => return Err(e.into()),
                    _ => {}
                }
            }
            Some(_) => {
                api.replace_with(&name, |mut l| {
                    let s = l.spec.get_or_insert_with(Default::default);
                    s.holder_identity = spec.holder_identity.clone();
                    s.lease_duration_seconds = spec.lease_duration_seconds;
                    s.renew_time = spec.renew_time.clone();
                    l
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Heartbeats until the task is dropped: Node status and Lease every
    /// `node_status_update_frequency`, faster (every second at most) while the network waits
    /// for a CIDR so pods start as soon as node-ipam assigns one.
    pub async fn heartbeat_loop(self: Arc<Self>) {
        let mut pressure = self.pressure.clone();
        loop {
            // what this status update posts counts as seen
            let _ = pressure.borrow_and_update();
            if let Err(e) = self.update_status().await {
                tracing::warn!(node = %self.config.node_name, "updating node status: {e:#}");
            }
            if let Err(e) = self.renew_lease().await {
                tracing::warn!(node = %self.config.node_name, "renewing the node lease: {e:#}");
            }
            let mut pause = self.config.node_status_update_frequency;
            if self.network_tx.borrow().is_none() {
                pause = pause.min(Duration::from_secs(1));
            }
            // a pressure condition changing is posted at once, so the scheduler stops
            // (or resumes) sending pods without waiting for the next heartbeat
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                Ok(()) = pressure.changed() => {}
            }
        }
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// Kubernetes names architectures the Go way.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Machine capacity: cpu (cores), memory (MemTotal), pods (110), ephemeral-storage (the
/// file system of the root dir).
pub fn capacity(root_dir: &Path) -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut out = BTreeMap::new();
    out.insert("cpu".to_string(), Quantity::new(cpus.to_string()));
    if let Some(kib) = meminfo_kib("MemTotal") {
        out.insert("memory".to_string(), Quantity::new(format!("{kib}Ki")));
    }
    out.insert("pods".to_string(), Quantity::new("110"));
    let probe = if root_dir.exists() {
        root_dir
    } else {
        Path::new("/")
    };
    if let Ok(st) = nix::sys::statvfs::statvfs(probe) {
        let bytes = st.blocks() as u128 * st.fragment_size() as u128;
        out.insert("ephemeral-storage".to_string(), Quantity::new(bytes.to_string()));
    }
    out
}

/// A field of /proc/meminfo, in KiB.
pub fn meminfo_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod cloud_provider_tests {
    use super::*;

    fn taint_keys(n: &Node) -> Vec<String> {
        n.spec
            .as_ref()
            .map(|s| s.taints.iter().map(|t| t.key.clone()).collect())
            .unwrap_or_default()
    }

    /// `--cloud-provider=external`: the first registration carries the
    /// uninitialized taint, a re-registration never adds it back once the
    /// cloud-controller-manager lifted it, and the addresses it set stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_external_cloud_provider_initialises_the_node() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let server = rkube_testing::TestApiServer::start().await?;
        let client = server.client();
        let mut config = Config::new(server.url(), "cloudy");
        config.cloud_provider = "external".into();
        config.root_dir = dir.path().join("root");
        let (network_tx, _) = watch::channel(None);
        let agent = NodeAgent {
            client: client.clone(),
            config,
            kubelet_port: 10250,
            runtime_version: "test".into(),
            network_tx,
            pressure: watch::channel(Default::default()).1,
        };
        let node = agent.register().await?;
        assert_eq!(taint_keys(&node), [UNINITIALIZED_TAINT]);
        let t = &node.spec.as_ref().unwrap().taints[0];
        assert_eq!((t.value.as_str(), t.effect.as_str()), ("true", "NoSchedule"));
        agent.update_status().await?;

        // What the cloud-controller-manager does.
        let nodes: Api<Node> = Api::all(client.clone());
        nodes
            .replace_with("cloudy", |mut n| {
                n.spec.as_mut().unwrap().taints.clear();
                n
            })
            .await?;
        let cloud_address = NodeAddress {
            r#type: "InternalIP".into(),
            address: "192.0.2.44".into(),
        };
        nodes
            .replace_status_with("cloudy", |mut n| {
                n.status.as_mut().unwrap().addresses = vec![cloud_address.clone()];
                n
            })
            .await?;

        // The kubelet restarts and keeps posting status.
        let node = agent.register().await?;
        assert!(taint_keys(&node).is_empty(), "{:?}", taint_keys(&node));
        agent.update_status().await?;
        let node = nodes.get("cloudy").await?;
        assert_eq!(node.status.unwrap().addresses, [cloud_address]);
        server.stop().await
    }
}
