//! Pod networking: each pod gets its own network namespace (the "sandbox"; no pause
//! container), wired to the node by CNI plugins. Containers join it through
//! [`ContainerNetwork::Namespace`](crate::runtime::ContainerNetwork::Namespace) with the path
//! [`PodNetwork::setup`] returns.

use std::net::IpAddr;
use std::path::PathBuf;

use async_trait::async_trait;

pub mod cni;
pub mod fake;
pub mod masquerade;
pub mod netns;

pub use cni::{CniConfig, CniNetwork};
pub use fake::FakeNetwork;

/// Transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A `hostPort` of a container port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// `hostIP`; all node addresses when `None`.
    pub host_ip: Option<IpAddr>,
}

/// The pod a network is set up for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodNetworkConfig {
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    /// Every `hostPort` of every container of the pod.
    pub port_mappings: Vec<PortMapping>,
}

/// A pod's network as set up: what goes into `status.podIP` and the namespace path its
/// containers join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetworkStatus {
    pub netns_path: PathBuf,
    pub ip: IpAddr,
    pub gateway: Option<IpAddr>,
    /// Interface inside the pod carrying `ip`.
    pub interface: String,
}

/// Errors of pod networking; each names the pod (by uid) and the plugin or path involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pod uid {uid:?} cannot name a network namespace: use letters, digits, '-', '_' or '.'")]
    InvalidPodUid { uid: String },

    #[error("invalid CNI configuration: {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    #[error("{operation} network namespace {} of pod {pod_uid}: {source}", .path.display())]
    Netns {
        operation: &'static str,
        pod_uid: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("CNI plugin {plugin:?} not found in {}; install containernetworking-plugins or fix the plugin directories", .dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "))]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },

    #[error("running CNI plugin {plugin} ({command}) for pod {pod_uid}: {source}")]
    PluginExec {
        plugin: String,
        command: &'static str,
        pod_uid: String,
        #[source]
        source: std::io::Error,
    },

    /// The plugin ran and reported an error (CNI error object or stderr).
    #[error("CNI plugin {plugin} {command} for pod {pod_uid} failed{}: {message}", .code.map(|c| format!(" (code {c})")).unwrap_or_default())]
    Plugin {
        plugin: String,
        command: &'static str,
        pod_uid: String,
        code: Option<u64>,
        message: String,
    },

    #[error("CNI plugin {plugin} {command} for pod {pod_uid} printed an unreadable result: {source}")]
    BadResult {
        plugin: String,
        command: &'static str,
        pod_uid: String,
        #[source]
        source: serde_json::Error,
    },

    #[error(
        "CNI ADD for pod {pod_uid} returned no IP address; check the IPAM section (pod CIDR {pod_cidr})"
    )]
    NoIp { pod_uid: String, pod_cidr: String },

    /// The node's masquerade table could not be loaded.
    #[error(
        "masquerading pod traffic that leaves the cluster network (table ip {}): {reason}",
        masquerade::TABLE
    )]
    Masquerade { reason: String },

    #[error("{operation} CNI state file {}: {source}", .path.display())]
    State {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The node's pod networking, as the pod worker uses it. Calls for different pods may run
/// concurrently; calls for one pod must not (the pod worker serialises per pod).
#[async_trait]
pub trait PodNetwork: Send + Sync {
    /// Creates the pod's network namespace and connects it; returns its IP. Calling it again
    /// for a pod that is set up returns the same status without touching anything.
    async fn setup(&self, pod: &PodNetworkConfig) -> Result<PodNetworkStatus, Error>;

    /// The pod's network if it is set up (for adoption after a kubelet restart).
    async fn status(&self, pod_uid: &str) -> Result<Option<PodNetworkStatus>, Error>;

    /// Disconnects the pod, releases its IP and removes its namespace. Succeeds when there is
    /// nothing (left) to tear down.
    async fn teardown(&self, pod_uid: &str) -> Result<(), Error>;

    /// Where the pod's network namespace is (or would be) pinned.
    fn netns_path(&self, pod_uid: &str) -> PathBuf;
}

/// [`check_pod_uid`](crate::check_pod_uid), as a network error.
pub(crate) fn validate_pod_uid(uid: &str) -> Result<(), Error> {
    crate::check_pod_uid(uid).map_err(|_| Error::InvalidPodUid { uid: uid.to_string() })
}
