//! A cloud in memory for tests: instances the test adds and removes, load
//! balancers that get addresses `198.51.100.N` in order, routes in a list,
//! and a log of every call so a test can assert what the controllers asked.
//! Public so the crate's integration tests and other crates' tests can use
//! it; the daemon never does.

use crate::cloud::{
    CloudError, CloudProvider, CloudResult, InstanceMetadata, Instances, LoadBalancer, Route, Routes,
};
use async_trait::async_trait;
use rkube_api::core::v1::{LoadBalancerIngress, Node, Service};
use rkube_api::Resource;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Clone, Default)]
pub struct FakeInstance {
    pub metadata: InstanceMetadata,
    pub shutdown: bool,
}

#[derive(Debug, Default)]
pub struct FakeState {
    /// By node name.
    pub instances: BTreeMap<String, FakeInstance>,
    /// By load balancer name: the service key and its address.
    pub load_balancers: BTreeMap<String, (String, String)>,
    pub routes: Vec<Route>,
    /// Every call, e.g. `ensure_load_balancer default/web`.
    pub calls: Vec<String>,
    /// The next load balancer address is 198.51.100.<next_ip>.
    pub next_ip: u8,
    /// When set, every load balancer call fails with this message.
    pub fail_load_balancers: Option<String>,
}

#[derive(Default)]
pub struct FakeCloud {
    state: Mutex<FakeState>,
}

impl FakeCloud {
    pub fn new() -> Self {
        FakeCloud::default()
    }

    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or replaces) the instance behind node `name`, with an
    /// InternalIP, zone `zone-a`, region `region-1`, type `fake.small`.
    pub fn add_instance(&self, name: &str, internal_ip: &str) {
        let metadata = InstanceMetadata {
            provider_id: format!("fake://{name}"),
            instance_type: "fake.small".into(),
            addresses: vec![rkube_api::core::v1::NodeAddress {
                r#type: "InternalIP".into(),
                address: internal_ip.into(),
            }],
            zone: "zone-a".into(),
            region: "region-1".into(),
        };
        self.state().instances.insert(
            name.into(),
            FakeInstance {
                metadata,
                shutdown: false,
            },
        );
    }

    pub fn remove_instance(&self, name: &str) {
        self.state().instances.remove(name);
    }

    pub fn set_shutdown(&self, name: &str, shutdown: bool) {
        if let Some(i) = self.state().instances.get_mut(name) {
            i.shutdown = shutdown;
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    fn record(&self, call: String) -> MutexGuard<'_, FakeState> {
        let mut s = self.state();
        s.calls.push(call);
        s
    }
}

fn key(service: &Service) -> String {
    format!("{}/{}", service.namespace(), service.name())
}

#[async_trait]
impl Instances for FakeCloud {
    async fn instance_exists(&self, node: &Node) -> CloudResult<bool> {
        let s = self.record(format!("instance_exists {}", node.name()));
        Ok(s.instances.contains_key(node.name()))
    }

    async fn instance_shutdown(&self, node: &Node) -> CloudResult<bool> {
        let s = self.record(format!("instance_shutdown {}", node.name()));
        Ok(s.instances.get(node.name()).is_some_and(|i| i.shutdown))
    }

    async fn instance_metadata(&self, node: &Node) -> CloudResult<InstanceMetadata> {
        let s = self.record(format!("instance_metadata {}", node.name()));
        s.instances
            .get(node.name())
            .map(|i| i.metadata.clone())
            .ok_or_else(|| CloudError::InstanceNotFound(node.name().to_string()))
    }
}

#[async_trait]
impl LoadBalancer for FakeCloud {
    async fn get_load_balancer(
        &self,
        _cluster: &str,
        service: &Service,
    ) -> CloudResult<Option<Vec<LoadBalancerIngress>>> {
        let name = self.load_balancer_name(service);
        let s = self.record(format!("get_load_balancer {}", key(service)));
        Ok(s.load_balancers.get(&name).map(|(_, ip)| {
            vec![LoadBalancerIngress {
                ip: ip.clone(),
                ..Default::default()
            }]
        }))
    }

    async fn ensure_load_balancer(
        &self,
        _cluster: &str,
        service: &Service,
        nodes: &[Node],
    ) -> CloudResult<Vec<LoadBalancerIngress>> {
        let name = self.load_balancer_name(service);
        let mut s = self.record(format!(
            "ensure_load_balancer {} nodes={}",
            key(service),
            nodes.len()
        ));
        if let Some(why) = &s.fail_load_balancers {
            return Err(CloudError::Other(why.clone()));
        }
        let ip = match s.load_balancers.get(&name) {
            Some((_, ip)) => ip.clone(),
            None => {
                s.next_ip += 1;
                let ip = format!("198.51.100.{}", s.next_ip);
                s.load_balancers.insert(name, (key(service), ip.clone()));
                ip
            }
        };
        Ok(vec![LoadBalancerIngress {
            ip,
            ..Default::default()
        }])
    }

    async fn update_load_balancer(
        &self,
        _cluster: &str,
        service: &Service,
        nodes: &[Node],
    ) -> CloudResult<()> {
        let s = self.record(format!(
            "update_load_balancer {} nodes={}",
            key(service),
            nodes.len()
        ));
        match &s.fail_load_balancers {
            Some(why) => Err(CloudError::Other(why.clone())),
            None => Ok(()),
        }
    }

    async fn ensure_load_balancer_deleted(&self, _cluster: &str, service: &Service) -> CloudResult<()> {
        let name = self.load_balancer_name(service);
        let mut s = self.record(format!("ensure_load_balancer_deleted {}", key(service)));
        if let Some(why) = &s.fail_load_balancers {
            return Err(CloudError::Other(why.clone()));
        }
        s.load_balancers.remove(&name);
        Ok(())
    }
}

#[async_trait]
impl Routes for FakeCloud {
    async fn list_routes(&self, _cluster: &str) -> CloudResult<Vec<Route>> {
        Ok(self.state().routes.clone())
    }

    async fn create_route(&self, _cluster: &str, route: &Route) -> CloudResult<()> {
        let mut s = self.record(format!(
            "create_route {} -> {}",
            route.destination_cidr, route.target_node
        ));
        s.routes.retain(|r| r.destination_cidr != route.destination_cidr);
        s.routes.push(route.clone());
        Ok(())
    }

    async fn delete_route(&self, _cluster: &str, route: &Route) -> CloudResult<()> {
        let mut s = self.record(format!(
            "delete_route {} -> {}",
            route.destination_cidr, route.target_node
        ));
        s.routes.retain(|r| r.destination_cidr != route.destination_cidr);
        Ok(())
    }
}

impl CloudProvider for FakeCloud {
    fn name(&self) -> &str {
        "fake"
    }

    fn instances(&self) -> Option<&dyn Instances> {
        Some(self)
    }

    fn load_balancer(&self) -> Option<&dyn LoadBalancer> {
        Some(self)
    }

    fn routes(&self) -> Option<&dyn Routes> {
        Some(self)
    }
}
