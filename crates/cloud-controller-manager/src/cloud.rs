//! The `CloudProvider` trait: what the controllers need from the
//! infrastructure, split into optional parts as Kubernetes' `cloudprovider`
//! package splits them, so a provider implements only what its machines
//! offer (a provider without load balancers returns `None` and the service
//! controller does not run). Providers hold no Kubernetes state of their
//! own beyond what they can rebuild from the objects they are given.

use async_trait::async_trait;
use rkube_api::core::v1::{
    LoadBalancerIngress, Node, NodeAddress, PersistentVolumeClaim, PersistentVolumeSpec, Service,
};
use rkube_api::Resource;

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The instance behind a node is not known to the provider (Kubernetes'
    /// `cloudprovider.InstanceNotFound`).
    #[error("instance {0:?} not found")]
    InstanceNotFound(String),
    /// Anything else; the message names what failed and what to do.
    #[error("{0}")]
    Other(String),
}

pub type CloudResult<T> = Result<T, CloudError>;

/// What the cloud-node controller writes onto a Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceMetadata {
    /// `spec.providerID`, e.g. `local://node-a`.
    pub provider_id: String,
    /// The `node.kubernetes.io/instance-type` label.
    pub instance_type: String,
    /// `status.addresses`.
    pub addresses: Vec<NodeAddress>,
    /// The `topology.kubernetes.io/zone` label.
    pub zone: String,
    /// The `topology.kubernetes.io/region` label.
    pub region: String,
}

/// The machines (Kubernetes' InstancesV2).
#[async_trait]
pub trait Instances: Send + Sync {
    /// Whether the instance behind `node` still exists.
    async fn instance_exists(&self, node: &Node) -> CloudResult<bool>;
    /// Whether the instance is shut down (exists, but not running).
    async fn instance_shutdown(&self, node: &Node) -> CloudResult<bool>;
    /// Provider ID, instance type, addresses, zone and region;
    /// `CloudError::InstanceNotFound` when there is no such instance.
    async fn instance_metadata(&self, node: &Node) -> CloudResult<InstanceMetadata>;
}

/// External load balancers for `type: LoadBalancer` Services.
#[async_trait]
pub trait LoadBalancer: Send + Sync {
    /// The load balancer's name for `service`: Kubernetes'
    /// `GetLoadBalancerName`, "a" and the uid without dashes, cut to 32.
    fn load_balancer_name(&self, service: &Service) -> String {
        let uid: String = service.metadata().uid.chars().filter(|c| *c != '-').collect();
        let mut name = format!("a{uid}");
        name.truncate(32);
        name
    }
    /// The status of the load balancer if it exists.
    async fn get_load_balancer(
        &self,
        cluster: &str,
        service: &Service,
    ) -> CloudResult<Option<Vec<LoadBalancerIngress>>>;
    /// Creates the load balancer or brings it up to date with `service`
    /// and `nodes`; returns the addresses for `status.loadBalancer.ingress`.
    async fn ensure_load_balancer(
        &self,
        cluster: &str,
        service: &Service,
        nodes: &[Node],
    ) -> CloudResult<Vec<LoadBalancerIngress>>;
    /// Points an existing load balancer at `nodes` (the node set changed).
    async fn update_load_balancer(&self, cluster: &str, service: &Service, nodes: &[Node])
        -> CloudResult<()>;
    /// Deletes the load balancer and releases its addresses; succeeds when
    /// there is none.
    async fn ensure_load_balancer_deleted(&self, cluster: &str, service: &Service) -> CloudResult<()>;
}

/// One route to a node's pod CIDR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// The node the traffic goes to; empty when the provider cannot tell
    /// (the controller then matches by address).
    pub target_node: String,
    /// The node's addresses: where the route points.
    pub target_node_addresses: Vec<NodeAddress>,
    pub destination_cidr: String,
}

/// Routes between nodes' pod networks.
#[async_trait]
pub trait Routes: Send + Sync {
    /// The routes this provider made for `cluster` (and only those).
    async fn list_routes(&self, cluster: &str) -> CloudResult<Vec<Route>>;
    /// Creates `route` (idempotent).
    async fn create_route(&self, cluster: &str, route: &Route) -> CloudResult<()>;
    /// Deletes `route` (idempotent).
    async fn delete_route(&self, cluster: &str, route: &Route) -> CloudResult<()>;
}

/// Volumes for PersistentVolumeClaims: the "file system" resource a cloud
/// supplies (Kubernetes' external provisioners). The volume-provisioner loop
/// asks for one when a claim of a StorageClass naming `provisioner()` finds no
/// volume.
#[async_trait]
pub trait Volumes: Send + Sync {
    /// The `provisioner` of the StorageClasses this provider serves.
    fn provisioner(&self) -> &str;
    /// Makes the volume `name` for `claim` on `node` (the node its first pod was
    /// scheduled to, or one the controller picked) and returns what the
    /// PersistentVolume must say of it: its source and node affinity. The
    /// controller fills in size, access modes, class, reclaim policy and claimRef.
    async fn provision(
        &self,
        name: &str,
        claim: &PersistentVolumeClaim,
        node: &Node,
    ) -> CloudResult<PersistentVolumeSpec>;
}

/// A cloud: a name and the parts it offers.
pub trait CloudProvider: Send + Sync {
    /// The `--cloud-provider` name, also the scheme of provider IDs.
    fn name(&self) -> &str;
    fn instances(&self) -> Option<&dyn Instances>;
    fn load_balancer(&self) -> Option<&dyn LoadBalancer>;
    fn routes(&self) -> Option<&dyn Routes>;
    /// Volumes for claims; none unless the provider has storage.
    fn volumes(&self) -> Option<&dyn Volumes> {
        None
    }
}

/// The address of `kind` (`InternalIP`, ...) first listed in `addresses`.
pub fn address_of<'a>(addresses: &'a [NodeAddress], kind: &str) -> Option<&'a str> {
    addresses
        .iter()
        .find(|a| a.r#type == kind)
        .map(|a| a.address.as_str())
}
