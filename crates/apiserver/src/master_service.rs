//! The `kubernetes` Service in `default`, where pods reach the API as in Kubernetes: its
//! ClusterIP is the first address of the service range (10.96.0.1 by default; the cluster
//! PKI puts it and the Service's DNS names in the serving certificate), port 443 (`https`)
//! to the apiserver's port, and its Endpoints name the apiserver's advertised address. The
//! kubelet gives every container `KUBERNETES_SERVICE_HOST`/`_PORT` from it, which is what
//! in-cluster clients (client-go, the Python client, kube-rs) read.
//!
//! Written at every start, as Kubernetes' apiserver reconciles it: the Service is created
//! when missing (its ports follow the apiserver's), the Endpoints follow the advertised
//! address. Without an advertised address (listening on every address and no
//! `--advertise-address`) the Service has no Endpoints, and the log says what to set.

use crate::allocator::{self, ServiceAllocator};
use crate::handlers;
use anyhow::Context;
use rkube_api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use rkube_api::defaults::Defaulting;
use rkube_api::intstr::IntOrString;
use rkube_api::Resource;
use rkube_store::{Store, StoreError};
use std::net::{Ipv4Addr, SocketAddr};

pub const NAME: &str = "kubernetes";
pub const NAMESPACE: &str = "default";

/// The first address of `cidr`, which the Service always gets.
pub fn cluster_ip(cidr: &str) -> anyhow::Result<Ipv4Addr> {
    let (net, _) = allocator::parse_cidr(cidr)?;
    Ok(Ipv4Addr::from(u32::from(net) + 1))
}

fn ports(port: u16) -> Vec<ServicePort> {
    vec![ServicePort {
        name: "https".into(),
        protocol: "TCP".into(),
        port: 443,
        target_port: Some(IntOrString::int(i32::from(port))),
        ..Default::default()
    }]
}

/// The Service as it should be, for an apiserver on `port`.
pub fn service(cidr: &str, port: u16) -> anyhow::Result<Service> {
    let mut svc = Service {
        spec: Some(ServiceSpec {
            cluster_ip: cluster_ip(cidr)?.to_string(),
            ports: ports(port),
            ..Default::default()
        }),
        ..Default::default()
    };
    let meta = svc.metadata_mut();
    meta.name = NAME.into();
    meta.namespace = NAMESPACE.into();
    meta.labels = [
        ("component".to_string(), "apiserver".to_string()),
        ("provider".to_string(), "kubernetes".to_string()),
    ]
    .into();
    svc.apply_defaults();
    Ok(svc)
}

/// The Endpoints as they should be, for an apiserver advertised at `at`.
pub fn endpoints(at: SocketAddr) -> Endpoints {
    let mut ep = Endpoints {
        subsets: vec![EndpointSubset {
            addresses: vec![EndpointAddress {
                ip: at.ip().to_string(),
                ..Default::default()
            }],
            ports: vec![EndpointPort {
                name: "https".into(),
                port: i32::from(at.port()),
                protocol: "TCP".into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let meta = ep.metadata_mut();
    meta.name = NAME.into();
    meta.namespace = NAMESPACE.into();
    meta.labels = [(
        "endpointslice.kubernetes.io/skip-mirror".to_string(),
        "true".to_string(),
    )]
    .into();
    ep
}

/// Writes `obj` at its key: created when missing, replaced when `differs` says the stored
/// one is not as it should be (keeping its identity).
async fn ensure<K: Resource>(
    store: &dyn Store,
    mut obj: K,
    differs: impl Fn(&K) -> bool,
) -> anyhow::Result<bool> {
    let key = handlers::storage_key(K::info(), NAMESPACE, NAME);
    obj.set_type_meta();
    let existing = store.try_get(&key)?;
    let expected = match &existing {
        Some(kv) => {
            let old = K::decode(kv.value.as_ref()).with_context(|| format!("decoding {key}"))?;
            if !differs(&old) {
                return Ok(false);
            }
            let meta = obj.metadata_mut();
            let old_meta = old.metadata();
            meta.uid = old_meta.uid.clone();
            meta.creation_timestamp = old_meta.creation_timestamp.clone();
            meta.generation = old_meta.generation + 1;
            Some(kv.mod_revision)
        }
        None => {
            let meta = obj.metadata_mut();
            meta.uid = uuid::Uuid::new_v4().to_string();
            meta.creation_timestamp = handlers::now();
            meta.generation = 1;
            None
        }
    };
    let bytes = prost::Message::encode_to_vec(&obj).into();
    let written = match expected {
        Some(rev) => store.put(&key, bytes, Some(rev)).await,
        None => store.create(&key, bytes).await,
    };
    match written {
        Ok(_) => Ok(true),
        // another apiserver wrote it first: theirs stands
        Err(StoreError::AlreadyExists { .. }) | Err(StoreError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("writing {key}")),
    }
}

/// Creates or corrects the Service and its Endpoints for an apiserver on `port`,
/// advertised at `advertise`.
pub async fn reconcile(
    store: &dyn Store,
    services: &ServiceAllocator,
    cidr: &str,
    port: u16,
    advertise: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let mut svc = service(cidr, port)?;
    let key = handlers::storage_key(Service::info(), NAMESPACE, NAME);
    if store.try_get(&key)?.is_none() {
        // reserve its address as any Service's; taken by another Service, the range's
        // first address cannot be this one's and the operator has to free it
        if let Err(e) = services.allocate_create(&mut svc) {
            tracing::warn!(
                "cannot give the kubernetes Service its address {}: {}; pods cannot reach the API through it",
                cluster_ip(cidr)?,
                e.message
            );
            return Ok(());
        }
    }
    let want_ports = ports(port);
    ensure(store, svc, |old| {
        old.spec.as_ref().map(|s| &s.ports) != Some(&want_ports)
    })
    .await?;
    match advertise {
        Some(at) => {
            if at.ip().is_loopback() {
                tracing::warn!(
                    address = %at,
                    "the kubernetes Service's endpoints are a loopback address, which pods cannot \
                     reach: listen on (or set --advertise-address to) an address the nodes reach"
                );
            }
            let want = endpoints(at);
            let subsets = want.subsets.clone();
            if ensure(store, want, |old| old.subsets != subsets).await? {
                tracing::info!(address = %at, "the kubernetes Service's endpoints point here");
            }
        }
        None => tracing::warn!(
            "the apiserver listens on every address: set --advertise-address to the one nodes \
             reach it at, so pods can call the API through the kubernetes Service"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_takes_the_first_address_and_port_443() {
        let svc = service("10.96.0.0/16", 6443).unwrap();
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip, "10.96.0.1");
        assert_eq!(spec.r#type, "ClusterIP");
        assert_eq!(spec.ports[0].port, 443);
        assert_eq!(spec.ports[0].target_port, Some(IntOrString::int(6443)));
        let ep = endpoints("192.168.1.5:6443".parse().unwrap());
        assert_eq!(ep.subsets[0].addresses[0].ip, "192.168.1.5");
        assert_eq!(ep.subsets[0].ports[0].port, 6443);
        assert!(cluster_ip("nonsense").is_err());
    }
}
