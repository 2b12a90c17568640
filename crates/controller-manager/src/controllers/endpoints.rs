//! The endpoints controller: for every Service with a selector, an
//! Endpoints object of the same name listing the pods it selects — ready
//! ones under `addresses`, the others under `notReadyAddresses` — grouped
//! into subsets by the ports they resolve to, as Kubernetes'
//! `EndpointsController` does. Services without a selector are left alone
//! (their Endpoints are the user's); the Endpoints of a deleted Service are
//! deleted (Kubernetes sets no ownerReference on them either).

use super::Error;
use crate::{Context, Shutdown};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service, ServicePort,
};
use rkube_api::selector::Selector;
use rkube_api::Resource;
use rkube_client::{Action, Api, Controller, DeleteParams, Store};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const NAME: &str = "endpoints";
/// The workload loops' namespace index: one index of the shared pod cache, not two alike.
const BY_NAMESPACE: &str = super::workload::NAMESPACE_INDEX;

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let services = ctx.informers.get::<Service>();
        let pods = ctx.informers.get::<Pod>();
        let endpoints = ctx.informers.get::<Endpoints>();
        services
            .store()
            .add_index(BY_NAMESPACE, |s: &Service| vec![s.namespace().to_string()]);
        pods.store()
            .add_index(BY_NAMESPACE, |p: &Pod| vec![p.namespace().to_string()]);
        let state = Arc::new(State {
            ctx: ctx.clone(),
            services: services.store(),
            pods: pods.store(),
            endpoints: endpoints.store(),
        });
        let service_cache = services.store();
        let service_cache2 = services.store();
        Controller::new(NAME, state, reconcile)
            .primary(&services)
            // A pod's change wakes every Service that selects it, before
            // and after (the runner maps both states).
            .watches(&pods, move |p: &Pod| services_selecting(&service_cache, p))
            // An Endpoints edited or deleted by hand is put back; one with
            // no Service is not ours to touch.
            .watches(&endpoints, move |e: &Endpoints| {
                let key = e.key();
                service_cache2.get(&key).map(|_| key).into_iter().collect()
            })
            .workers(ctx.config.workers)
            .resync(std::time::Duration::from_secs(300))
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

struct State {
    ctx: Arc<Context>,
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
}

/// Keys of the Services in the pod's namespace whose selector matches it:
/// the service-selector cache is the Service informer, indexed by
/// namespace.
fn services_selecting(services: &Store<Service>, pod: &Pod) -> Vec<String> {
    let labels = &pod.metadata().labels;
    services
        .by_index(BY_NAMESPACE, pod.namespace())
        .unwrap_or_default()
        .iter()
        .filter(|s| {
            let sel = s.spec.as_ref().map(|sp| &sp.selector);
            sel.is_some_and(|sel| !sel.is_empty() && Selector::from_map(sel).matches(labels))
        })
        .map(|s| s.key())
        .collect()
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let (namespace, name) = key.split_once('/').unwrap_or(("", key.as_str()));
    let api = Api::<Endpoints>::namespaced(state.ctx.client.clone(), namespace);
    let Some(service) = state.services.get(&key) else {
        if state.endpoints.get(&key).is_some() {
            match api.delete(name, &DeleteParams::default()).await {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => tracing::info!(endpoints = %key, "service gone; deleted its endpoints"),
            }
        }
        return Ok(Action::await_change());
    };
    let spec = service.spec.clone().unwrap_or_default();
    if spec.selector.is_empty() {
        return Ok(Action::await_change());
    }
    let selector = Selector::from_map(&spec.selector);
    let pods: Vec<Arc<Pod>> = state
        .pods
        .by_index(BY_NAMESPACE, namespace)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| selector.matches(&p.metadata().labels))
        .collect();
    let subsets = desired_subsets(&service, &pods);
    let existing = state.endpoints.get(&key);
    let labels = service.metadata().labels.clone();
    if let Some(current) = &existing {
        if current.subsets == subsets && current.metadata().labels == labels {
            return Ok(Action::await_change());
        }
    }
    let mut desired = match &existing {
        // A copy of the cached object, so the write carries the
        // resourceVersion it was read at.
        Some(current) => (**current).clone(),
        None => {
            let mut e = Endpoints::default();
            e.metadata_mut().name = name.to_string();
            e.metadata_mut().namespace = namespace.to_string();
            e
        }
    };
    desired.metadata_mut().labels = labels;
    desired.subsets = subsets;
    let result = if existing.is_some() {
        api.update(&desired).await
    } else {
        api.create(&desired).await
    };
    match result {
        Ok(_) => {
            tracing::debug!(endpoints = %key, "endpoints written");
            Ok(Action::await_change())
        }
        // The cache was behind (another write, or a Create racing a
        // cached miss); the watch brings the newer object and a retry.
        Err(e) => Err(e.into()),
    }
}

/// Whether a pod belongs in a Service's Endpoints at all (Kubernetes'
/// `ShouldPodBeInEndpoints` without terminating pods): it has an IP, is not
/// being deleted and has not finished.
fn pod_is_endpoint(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let ip = status.map(|s| s.pod_ip.as_str()).unwrap_or("");
    let phase = status.map(|s| s.phase.as_str()).unwrap_or("");
    !ip.is_empty()
        && pod.metadata().deletion_timestamp.is_empty()
        && phase != "Succeeded"
        && phase != "Failed"
}

pub fn pod_is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// The container port a Service port's targetPort names on this pod: a
/// number is itself; a name is looked up among the pod's container ports
/// of the same protocol (so two pods may resolve one name differently).
pub fn resolve_target_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = if port.protocol.is_empty() {
        "TCP"
    } else {
        port.protocol.as_str()
    };
    match &port.target_port {
        Some(t) if t.is_string() => {
            let want = t.as_str().unwrap_or_default();
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| &c.ports)
                .find_map(|cp| {
                    let cp_proto = if cp.protocol.is_empty() {
                        "TCP"
                    } else {
                        cp.protocol.as_str()
                    };
                    (cp.name == want && cp_proto == protocol).then_some(cp.container_port)
                })
        }
        Some(t) if t.as_int().is_some_and(|v| v > 0) => t.as_int(),
        // Unset (or 0) targetPort means the service port itself.
        _ => Some(port.port),
    }
}

/// The subsets Kubernetes would write: every pod address under the set of
/// ports it resolves to, addresses grouped by identical port sets
/// (`RepackSubsets`), everything sorted so that equal content compares
/// equal and an unchanged Service is never rewritten.
pub fn desired_subsets(service: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let spec = service.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses;
    let headless = spec.cluster_ip == "None";
    // port set → (ready, not ready)
    type Group = (Vec<EndpointAddress>, Vec<EndpointAddress>);
    let mut groups: BTreeMap<Vec<(String, i32, String, String)>, Group> = BTreeMap::new();
    for pod in pods.iter().filter(|p| pod_is_endpoint(p)) {
        let mut ports: Vec<(String, i32, String, String)> = spec
            .ports
            .iter()
            .filter_map(|sp| {
                let n = resolve_target_port(pod, sp)?;
                let proto = if sp.protocol.is_empty() {
                    "TCP".to_string()
                } else {
                    sp.protocol.clone()
                };
                Some((sp.name.clone(), n, proto, sp.app_protocol.clone()))
            })
            .collect();
        // A Service with ports none of which this pod has: not an
        // endpoint. Headless Services may have no ports at all.
        if ports.is_empty() && !(spec.ports.is_empty() && headless) {
            continue;
        }
        ports.sort();
        ports.dedup();
        let address = endpoint_address(service, pod);
        let group = groups.entry(ports).or_default();
        if publish_not_ready || pod_is_ready(pod) {
            group.0.push(address);
        } else {
            group.1.push(address);
        }
    }
    groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            let by_ip = |a: &EndpointAddress, b: &EndpointAddress| {
                (a.ip.as_str(), a.target_ref.as_ref().map(|r| r.name.as_str()))
                    .cmp(&(b.ip.as_str(), b.target_ref.as_ref().map(|r| r.name.as_str())))
            };
            ready.sort_by(by_ip);
            not_ready.sort_by(by_ip);
            EndpointSubset {
                addresses: ready,
                not_ready_addresses: not_ready,
                ports: ports
                    .into_iter()
                    .map(|(name, port, protocol, app_protocol)| EndpointPort {
                        name,
                        port,
                        protocol,
                        app_protocol,
                    })
                    .collect(),
            }
        })
        .collect()
}

fn endpoint_address(service: &Service, pod: &Pod) -> EndpointAddress {
    let spec = pod.spec.clone().unwrap_or_default();
    let m = pod.metadata();
    // A pod with hostname and subdomain = this (headless) Service gets a
    // DNS name under it, as Kubernetes records.
    let hostname = if !spec.hostname.is_empty() && spec.subdomain == service.name() {
        spec.hostname.clone()
    } else {
        String::new()
    };
    EndpointAddress {
        ip: pod.status.as_ref().map(|s| s.pod_ip.clone()).unwrap_or_default(),
        hostname,
        node_name: Some(spec.node_name.clone()).filter(|n| !n.is_empty()),
        target_ref: Some(ObjectReference {
            kind: "Pod".into(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            uid: m.uid.clone(),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::core::v1::{Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServiceSpec};
    use rkube_api::intstr::IntOrString;

    fn pod(name: &str, ip: &str, ready: bool, ports: &[(&str, i32)]) -> Arc<Pod> {
        let mut p = Pod {
            spec: Some(PodSpec {
                node_name: "n1".into(),
                containers: vec![Container {
                    name: "app".into(),
                    ports: ports
                        .iter()
                        .map(|(n, p)| ContainerPort {
                            name: n.to_string(),
                            container_port: *p,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: "Running".into(),
                pod_ip: ip.into(),
                conditions: vec![PodCondition {
                    r#type: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        p.metadata_mut().name = name.into();
        p.metadata_mut().namespace = "default".into();
        p.metadata_mut().uid = format!("uid-{name}");
        Arc::new(p)
    }

    fn service(ports: Vec<ServicePort>) -> Service {
        let mut s = Service {
            spec: Some(ServiceSpec {
                selector: [("app".to_string(), "web".to_string())].into(),
                ports,
                ..Default::default()
            }),
            ..Default::default()
        };
        s.metadata_mut().name = "web".into();
        s.metadata_mut().namespace = "default".into();
        s
    }

    fn sport(name: &str, port: i32, target: IntOrString) -> ServicePort {
        ServicePort {
            name: name.into(),
            port,
            protocol: "TCP".into(),
            target_port: Some(target),
            ..Default::default()
        }
    }

    fn ips(a: &[EndpointAddress]) -> Vec<&str> {
        a.iter().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_unready_pods_are_split_with_node_and_target_ref() {
        let svc = service(vec![sport("", 80, IntOrString::int(8080))]);
        let pods = [
            pod("b", "10.0.0.2", true, &[]),
            pod("a", "10.0.0.1", false, &[]),
            pod("c", "10.0.0.3", true, &[]),
        ];
        let subsets = desired_subsets(&svc, &pods);
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.0.0.1"]);
        assert_eq!(
            subsets[0].ports,
            [EndpointPort {
                name: "".into(),
                port: 8080,
                protocol: "TCP".into(),
                app_protocol: "".into()
            }]
        );
        let a = &subsets[0].addresses[0];
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        let r = a.target_ref.as_ref().unwrap();
        assert_eq!(
            (
                r.kind.as_str(),
                r.name.as_str(),
                r.namespace.as_str(),
                r.uid.as_str()
            ),
            ("Pod", "b", "default", "uid-b")
        );
    }

    #[test]
    fn publish_not_ready_puts_everyone_in_addresses() {
        let mut svc = service(vec![sport("", 80, IntOrString::int(80))]);
        svc.spec.as_mut().unwrap().publish_not_ready_addresses = true;
        let subsets = desired_subsets(&svc, &[pod("a", "10.0.0.1", false, &[])]);
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1"]);
        assert!(subsets[0].not_ready_addresses.is_empty());
    }

    #[test]
    fn pods_without_ip_terminating_or_finished_are_left_out() {
        let svc = service(vec![sport("", 80, IntOrString::int(80))]);
        let no_ip = pod("a", "", true, &[]);
        let mut deleting = (*pod("b", "10.0.0.2", true, &[])).clone();
        deleting.metadata_mut().deletion_timestamp = "2024-01-01T00:00:00Z".into();
        let mut done = (*pod("c", "10.0.0.3", true, &[])).clone();
        done.status.as_mut().unwrap().phase = "Succeeded".into();
        assert!(desired_subsets(&svc, &[no_ip, Arc::new(deleting), Arc::new(done)]).is_empty());
    }

    #[test]
    fn a_named_target_port_resolves_per_pod_and_groups_subsets() {
        let svc = service(vec![
            sport("http", 80, IntOrString::string("web")),
            sport("metrics", 9090, IntOrString::int(9090)),
        ]);
        let pods = [
            pod("a", "10.0.0.1", true, &[("web", 8080)]),
            pod("b", "10.0.0.2", true, &[("web", 8081)]),
            pod("c", "10.0.0.3", false, &[("web", 8080)]),
            // no port named "web": only the numeric port applies
            pod("d", "10.0.0.4", true, &[]),
        ];
        let subsets = desired_subsets(&svc, &pods);
        let shape: Vec<(Vec<i32>, Vec<&str>, Vec<&str>)> = subsets
            .iter()
            .map(|s| {
                (
                    s.ports.iter().map(|p| p.port).collect(),
                    ips(&s.addresses),
                    ips(&s.not_ready_addresses),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                (vec![8080, 9090], vec!["10.0.0.1"], vec!["10.0.0.3"]),
                (vec![8081, 9090], vec!["10.0.0.2"], vec![]),
                (vec![9090], vec!["10.0.0.4"], vec![]),
            ]
        );
        assert_eq!(subsets[0].ports[0].name, "http");
    }

    #[test]
    fn a_pod_with_none_of_the_ports_is_not_an_endpoint() {
        let svc = service(vec![sport("http", 80, IntOrString::string("web"))]);
        assert!(desired_subsets(&svc, &[pod("a", "10.0.0.1", true, &[])]).is_empty());
    }

    #[test]
    fn the_same_pods_give_the_same_subsets_in_any_order() {
        let svc = service(vec![sport("", 80, IntOrString::int(80))]);
        let a = [pod("a", "10.0.0.1", true, &[]), pod("b", "10.0.0.2", false, &[])];
        let b = [a[1].clone(), a[0].clone()];
        assert_eq!(desired_subsets(&svc, &a), desired_subsets(&svc, &b));
    }
}
