//! `get services` (NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE, wide
//! SELECTOR) and `get endpoints` (NAME ENDPOINTS AGE).

use super::{age, or_none, Column, TableRow};
use chrono::{DateTime, Utc};
use rkube_api::core::v1::{Endpoints, Service};

/// `80/TCP`, or `80:30080/TCP` when a node port is allocated, joined by
/// commas; `<none>` without ports.
pub fn service_ports(svc: &Service) -> String {
    let ports = svc.spec.as_ref().map(|s| s.ports.as_slice()).unwrap_or_default();
    let parts: Vec<String> = ports
        .iter()
        .map(|p| {
            let protocol = if p.protocol.is_empty() {
                "TCP"
            } else {
                p.protocol.as_str()
            };
            if p.node_port > 0 {
                format!("{}:{}/{protocol}", p.port, p.node_port)
            } else {
                format!("{}/{protocol}", p.port)
            }
        })
        .collect();
    or_none(parts.join(","))
}

/// How wide the load balancer addresses may get without `-o wide`
/// (kubectl's `loadBalancerWidth`).
const LOAD_BALANCER_WIDTH: usize = 16;

/// EXTERNAL-IP as kubectl works it out per service type. Without `wide`,
/// a long list of load balancer addresses is cut to 16 characters ending
/// in `...`, as kubectl does.
pub fn service_external_ip(svc: &Service, wide: bool) -> String {
    let spec = svc.spec.clone().unwrap_or_default();
    match spec.r#type.as_str() {
        "" | "ClusterIP" | "NodePort" => or_none(spec.external_ips.join(",")),
        "LoadBalancer" => {
            let ingress = ingress_addresses(svc);
            let mut lb = ingress.join(",");
            if !wide && lb.chars().count() > LOAD_BALANCER_WIDTH {
                lb = lb.chars().take(LOAD_BALANCER_WIDTH - 3).collect::<String>() + "...";
            }
            if lb.is_empty() && spec.external_ips.is_empty() {
                return "<pending>".into();
            }
            let mut all: Vec<String> = lb
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            all.extend(spec.external_ips);
            all.join(",")
        }
        "ExternalName" => spec.external_name,
        _ => "<unknown>".into(),
    }
}

impl TableRow for Service {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Type", "How the Service is exposed: ClusterIP, NodePort, LoadBalancer or ExternalName."),
        Column::string("Cluster-IP", "The IP address of the service, usually assigned randomly."),
        Column::string("External-IP", "IP addresses for which nodes in the cluster also accept traffic for this service, and the load balancer's."),
        Column::string("Port(s)", "The ports exposed by this service."),
        Column::AGE,
        Column::string("Selector", "Route service traffic to pods with label keys and values matching this selector.").wide(),
    ];

    fn cells(&self, wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let spec = self.spec.clone().unwrap_or_default();
        let mut cells = vec![
            meta.name,
            if spec.r#type.is_empty() {
                "ClusterIP".into()
            } else {
                spec.r#type.clone()
            },
            or_none(spec.cluster_ip.clone()),
            service_external_ip(self, wide),
            service_ports(self),
            age(&meta.creation_timestamp, now),
        ];
        let selector: Vec<String> = spec.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        cells.push(or_none(selector.join(",")));
        cells
    }
}

/// How many endpoints ENDPOINTS lists before `+ N more...`.
const MAX_ENDPOINTS: usize = 3;

/// `ip:port`, with brackets around an IPv6 address (Go's JoinHostPort).
fn join_host_port(ip: &str, port: i32) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// `10.244.1.5:80,10.244.2.3:80 + 2 more...` over ready addresses only;
/// `<none>` without subsets, and (as kubectl) an empty cell when subsets
/// hold only addresses that are not ready.
pub fn format_endpoints(ep: &Endpoints) -> String {
    if ep.subsets.is_empty() {
        return "<none>".into();
    }
    let mut list: Vec<String> = Vec::new();
    let mut count = 0;
    for subset in &ep.subsets {
        if subset.ports.is_empty() {
            // headless services may have no ports
            count += subset.addresses.len();
            for a in &subset.addresses {
                if list.len() < MAX_ENDPOINTS {
                    list.push(a.ip.clone());
                }
            }
        } else {
            for port in &subset.ports {
                count += subset.addresses.len();
                for a in &subset.addresses {
                    if list.len() < MAX_ENDPOINTS {
                        list.push(join_host_port(&a.ip, port.port));
                    }
                }
            }
        }
    }
    let joined = list.join(",");
    if count > MAX_ENDPOINTS {
        format!("{joined} + {} more...", count - MAX_ENDPOINTS)
    } else {
        joined
    }
}

impl TableRow for Endpoints {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Endpoints", "The set of addresses and ports of the endpoints."),
        Column::AGE,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        vec![
            meta.name.clone(),
            format_endpoints(self),
            age(&meta.creation_timestamp, now),
        ]
    }
}

/// The addresses a LoadBalancer Service got (`status.loadBalancer.ingress`),
/// IP or else hostname, in order.
pub fn ingress_addresses(svc: &rkube_api::core::v1::Service) -> Vec<String> {
    let Some(lb) = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()) else {
        return Vec::new();
    };
    lb.ingress
        .iter()
        .map(|i| {
            if i.ip.is_empty() {
                i.hostname.clone()
            } else {
                i.ip.clone()
            }
        })
        .filter(|h| !h.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(yaml: &str) -> Service {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn ports_show_node_ports_and_protocols() {
        assert_eq!(
            service_ports(&svc(
                "metadata: {name: s}\nspec: {ports: [{port: 80, protocol: TCP}]}\n"
            )),
            "80/TCP"
        );
        assert_eq!(
            service_ports(&svc("metadata: {name: s}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 30080, protocol: TCP}, {port: 53, protocol: UDP}]}\n")),
            "80:30080/TCP,53/UDP"
        );
        assert_eq!(
            service_ports(&svc("metadata: {name: s}\nspec: {type: ClusterIP}\n")),
            "<none>"
        );
    }

    #[test]
    fn external_ip_by_type() {
        assert_eq!(
            service_external_ip(&svc("spec: {type: ClusterIP}\n"), false),
            "<none>"
        );
        let mut with_external = svc("spec: {type: ClusterIP}\n");
        with_external.spec.as_mut().unwrap().external_ips = vec!["1.2.3.4".into()];
        assert_eq!(service_external_ip(&with_external, false), "1.2.3.4");
        assert_eq!(
            service_external_ip(&svc("spec: {type: LoadBalancer}\n"), false),
            "<pending>"
        );
        assert_eq!(
            service_external_ip(
                &svc("spec: {type: LoadBalancer}\nstatus: {loadBalancer: {ingress: [{ip: 203.0.113.7}]}}\n"),
                false
            ),
            "203.0.113.7"
        );
        // kubectl cuts long load balancer lists to 16 characters unless wide
        let two = svc("spec: {type: LoadBalancer}\nstatus: {loadBalancer: {ingress: [{ip: 203.0.113.7}, {ip: 203.0.113.8}]}}\n");
        assert_eq!(service_external_ip(&two, false), "203.0.113.7,2...");
        assert_eq!(service_external_ip(&two, true), "203.0.113.7,203.0.113.8");
        assert_eq!(
            service_external_ip(
                &svc("spec: {type: ExternalName, externalName: db.example.com}\n"),
                false
            ),
            "db.example.com"
        );
    }

    #[test]
    fn service_row() {
        let now = crate::parse_time("2024-05-01T12:00:00Z").unwrap();
        let mut s = svc("metadata: {name: web, creationTimestamp: '2024-05-01T07:00:00Z'}\nspec: {type: NodePort, selector: {app: web}, ports: [{port: 80, nodePort: 30080, protocol: TCP}]}\n");
        s.spec.as_mut().unwrap().cluster_ip = "10.96.0.10".into();
        assert_eq!(
            s.cells(true, now),
            vec![
                "web",
                "NodePort",
                "10.96.0.10",
                "<none>",
                "80:30080/TCP",
                "5h",
                "app=web"
            ]
        );
    }

    #[test]
    fn endpoints_list_three_then_count_the_rest() {
        let ep: Endpoints = serde_yaml::from_str(
            "metadata: {name: web}\nsubsets:\n- addresses: [{ip: 10.0.0.1}, {ip: 10.0.0.2}, {ip: 10.0.0.3}, {ip: 10.0.0.4}]\n  notReadyAddresses: [{ip: 10.0.0.9}]\n  ports: [{port: 80}]\n",
        )
        .unwrap();
        assert_eq!(
            format_endpoints(&ep),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more..."
        );
        let empty: Endpoints = serde_yaml::from_str("metadata: {name: web}\n").unwrap();
        assert_eq!(format_endpoints(&empty), "<none>");
        // kubectl prints nothing when every address is unready
        let unready: Endpoints = serde_yaml::from_str(
            "metadata: {name: web}\nsubsets:\n- notReadyAddresses: [{ip: 10.0.0.9}]\n  ports: [{port: 80}]\n",
        )
        .unwrap();
        assert_eq!(format_endpoints(&unready), "");
        let v6: Endpoints = serde_yaml::from_str(
            "metadata: {name: web}\nsubsets:\n- addresses: [{ip: 'fd00::5'}]\n  ports: [{port: 8080}]\n",
        )
        .unwrap();
        assert_eq!(format_endpoints(&v6), "[fd00::5]:8080");
    }
}
