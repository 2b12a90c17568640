//! `rkubectl service NAME [--url]`: the addresses a user on the host can
//! open for a Service, as `minikube service` prints them. A NodePort or
//! LoadBalancer Service is reached at `http://<InternalIP>:<nodePort>` of
//! every Ready node, and a LoadBalancer also at `http://<ingress>:<port>`
//! once its load balancer is provisioned. A ClusterIP Service has no
//! address outside the cluster, which is said as an error.

use crate::cmd::Context;
use crate::error::CtlError;
use crate::printers::Table;
use rkube_api::core::v1::{Node, Service};
use rkube_api::Resource;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// The Service, in the current namespace (`-n` for another).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Print only the URLs, one per line (for scripts: `curl $(rkubectl
    /// service web --url)`).
    #[arg(long)]
    pub url: bool,
}

/// One address of the Service: which port of it, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    /// minikube's TARGET PORT: `name/port`, or the port alone.
    pub port: String,
    pub url: String,
}

/// A Ready node's InternalIP, as `(node name, address)`.
pub fn node_addresses(nodes: &[Node]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = nodes
        .iter()
        .filter(|n| {
            n.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.r#type == "Ready" && c.status == "True")
            })
        })
        .filter_map(|n| {
            let ip = n
                .status
                .as_ref()?
                .addresses
                .iter()
                .find(|a| a.r#type == "InternalIP" && !a.address.is_empty())?;
            Some((n.name().to_string(), ip.address.clone()))
        })
        .collect();
    out.sort();
    out
}

/// `host:port`, with brackets around an IPv6 host.
fn host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Every URL of `svc` given the Ready nodes' addresses, or the error that
/// tells the user why there is none.
pub fn service_urls(svc: &Service, nodes: &[(String, String)]) -> Result<Vec<ServiceUrl>, CtlError> {
    let spec = svc.spec.clone().unwrap_or_default();
    let who = format!("service {}/{}", svc.namespace(), svc.name());
    let kind = if spec.r#type.is_empty() {
        "ClusterIP"
    } else {
        spec.r#type.as_str()
    };
    match kind {
        "NodePort" | "LoadBalancer" => {}
        "ExternalName" => {
            return Err(CtlError::usage(format!(
                "{who} is of type ExternalName: it is a DNS name for {:?} inside the cluster and has no address of its own",
                spec.external_name
            )))
        }
        other => {
            let inside: Vec<String> = spec.ports.iter().map(|p| host_port(&spec.cluster_ip, p.port)).collect();
            return Err(CtlError::usage(format!(
                "{who} is of type {other}: it is reachable only inside the cluster (at {}); \
                 use type: NodePort or LoadBalancer to reach it from the host",
                if inside.is_empty() {
                    spec.cluster_ip.clone()
                } else {
                    inside.join(", ")
                }
            )));
        }
    }
    let label = |p: &rkube_api::core::v1::ServicePort| {
        if p.name.is_empty() {
            p.port.to_string()
        } else {
            format!("{}/{}", p.name, p.port)
        }
    };
    let mut urls = Vec::new();
    for p in spec.ports.iter().filter(|p| p.node_port > 0) {
        for (_, ip) in nodes {
            urls.push(ServiceUrl {
                port: label(p),
                url: format!("http://{}", host_port(ip, p.node_port)),
            });
        }
    }
    let ingress = crate::printers::network::ingress_addresses(svc);
    if kind == "LoadBalancer" {
        for p in &spec.ports {
            for host in &ingress {
                urls.push(ServiceUrl {
                    port: label(p),
                    url: format!("http://{}", host_port(host, p.port)),
                });
            }
        }
    }
    if urls.is_empty() {
        let why = if !spec.ports.iter().any(|p| p.node_port > 0) {
            "it has no node port and its load balancer has no ingress address yet (EXTERNAL-IP <pending>)"
                .to_string()
        } else {
            "no node is Ready with an InternalIP address (see rkubectl get nodes)".to_string()
        };
        return Err(CtlError::usage(format!("{who} has no address to open: {why}")));
    }
    Ok(urls)
}

pub async fn run(ctx: &Context, args: &ServiceArgs, out: &mut dyn Write) -> Result<(), CtlError> {
    let server = ctx.connect().await?;
    let svc: Service = server
        .get(Service::info(), &ctx.namespace, &args.name)
        .await?
        .decode()
        .map_err(|e| CtlError::usage(format!("cannot decode service {:?}: {e}", args.name)))?;
    let nodes = server
        .list(Node::info(), "", "", "")
        .await?
        .items
        .iter()
        .map(|o| o.decode::<Node>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CtlError::usage(format!("cannot decode a node: {e}")))?;
    let urls = service_urls(&svc, &node_addresses(&nodes))?;
    if args.url {
        for u in &urls {
            writeln!(out, "{}", u.url)?;
        }
        return Ok(());
    }
    let table = Table {
        header: ["NAMESPACE", "NAME", "TARGET PORT", "URL"]
            .map(String::from)
            .to_vec(),
        rows: urls
            .into_iter()
            .map(|u| vec![ctx.namespace.clone(), args.name.clone(), u.port, u.url])
            .collect(),
    };
    write!(out, "{}", table.render())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(yaml: &str) -> Service {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn nodes() -> Vec<(String, String)> {
        vec![
            ("a".into(), "192.168.1.10".into()),
            ("b".into(), "192.168.1.11".into()),
        ]
    }

    #[test]
    fn node_ports_on_every_node_then_the_load_balancer() {
        let s = svc("metadata: {name: web, namespace: default}\nspec: {type: LoadBalancer, ports: [{name: http, port: 80, nodePort: 30080}]}\nstatus: {loadBalancer: {ingress: [{ip: 203.0.113.7}]}}\n");
        let urls: Vec<String> = service_urls(&s, &nodes())
            .unwrap()
            .into_iter()
            .map(|u| u.url)
            .collect();
        assert_eq!(
            urls,
            [
                "http://192.168.1.10:30080",
                "http://192.168.1.11:30080",
                "http://203.0.113.7:80"
            ]
        );
        assert_eq!(service_urls(&s, &nodes()).unwrap()[0].port, "http/80");
    }

    #[test]
    fn cluster_ip_and_missing_addresses_are_explained() {
        let s = svc("metadata: {name: db, namespace: prod}\nspec: {type: ClusterIP, clusterIP: 10.96.0.9, ports: [{port: 5432}]}\n");
        let err = service_urls(&s, &nodes()).unwrap_err().to_string();
        assert!(err.contains("service prod/db is of type ClusterIP"), "{err}");
        assert!(err.contains("10.96.0.9:5432"), "{err}");
        assert!(err.contains("use type: NodePort or LoadBalancer"), "{err}");
        let np = svc("metadata: {name: web, namespace: default}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 30080}]}\n");
        let err = service_urls(&np, &[]).unwrap_err().to_string();
        assert!(err.contains("no node is Ready"), "{err}");
        let lb = svc("metadata: {name: web, namespace: default}\nspec: {type: LoadBalancer, allocateLoadBalancerNodePorts: false, ports: [{port: 80}]}\n");
        let err = service_urls(&lb, &nodes()).unwrap_err().to_string();
        assert!(err.contains("<pending>"), "{err}");
    }
}
