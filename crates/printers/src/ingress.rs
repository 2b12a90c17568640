//! `get ingresses` (NAME CLASS HOSTS ADDRESS PORTS AGE) and `get
//! ingressclasses` (NAME CONTROLLER PARAMETERS AGE), as kubectl prints them.

use super::{age, or_none, Column, TableRow};
use chrono::{DateTime, Utc};
use rkube_api::networking::v1::{Ingress, IngressClass};

/// How wide the addresses may get without `-o wide` (kubectl's `loadBalancerWidth`).
const LOAD_BALANCER_WIDTH: usize = 16;

/// The first three rule hosts, `+ N more...` after them; `*` when no rule names a host.
pub fn ingress_hosts(ing: &Ingress) -> String {
    let rules = ing.spec.as_ref().map(|s| s.rules.as_slice()).unwrap_or_default();
    const MAX: usize = 3;
    let hosts: Vec<&str> = rules
        .iter()
        .take(MAX)
        .map(|r| r.host.as_str())
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        return "*".into();
    }
    let list = hosts.join(",");
    if rules.len() > MAX {
        format!("{list} + {} more...", rules.len() - MAX)
    } else {
        list
    }
}

/// The status addresses (IPs and host names), cut to 16 characters unless wide.
pub fn ingress_address(ing: &Ingress, wide: bool) -> String {
    let points = ing
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .map(|lb| lb.ingress.as_slice())
        .unwrap_or_default();
    let addresses: Vec<&str> = points
        .iter()
        .flat_map(|p| [p.ip.as_str(), p.hostname.as_str()])
        .filter(|a| !a.is_empty())
        .collect();
    let mut s = addresses.join(",");
    if !wide && s.chars().count() > LOAD_BALANCER_WIDTH {
        s = s.chars().take(LOAD_BALANCER_WIDTH - 3).collect::<String>() + "...";
    }
    s
}

impl TableRow for Ingress {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string(
            "Class",
            "The name of the IngressClass resource that should be used for this Ingress.",
        ),
        Column::string(
            "Hosts",
            "Hosts that incoming requests are matched against before the ingress rule",
        ),
        Column::string(
            "Address",
            "Address is a list containing ingress points for the load-balancer",
        ),
        Column::string("Ports", "Ports of TLS configurations that open"),
        Column::AGE,
    ];

    fn cells(&self, wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let spec = self.spec.clone().unwrap_or_default();
        vec![
            meta.name,
            spec.ingress_class_name.clone().unwrap_or_else(|| "<none>".into()),
            ingress_hosts(self),
            ingress_address(self, wide),
            if spec.tls.is_empty() { "80" } else { "80, 443" }.into(),
            age(&meta.creation_timestamp, now),
        ]
    }
}

impl TableRow for IngressClass {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string(
            "Controller",
            "Controller that is responsible for handling this class",
        ),
        Column::string(
            "Parameters",
            "A reference to a resource with additional parameters",
        ),
        Column::AGE,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let spec = self.spec.clone().unwrap_or_default();
        let parameters = spec.parameters.map(|p| match p.api_group.as_deref() {
            Some(group) if !group.is_empty() => format!("{}.{group}/{}", p.kind, p.name),
            _ => format!("{}/{}", p.kind, p.name),
        });
        vec![
            meta.name,
            spec.controller,
            or_none(parameters.unwrap_or_default()),
            age(&meta.creation_timestamp, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::networking::v1::{
        IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressRule, IngressSpec, IngressStatus,
        IngressTls,
    };
    use rkube_api::Resource;

    #[test]
    fn ingress_row_as_kubectl_prints_it() {
        let mut ing = Ingress::default();
        ing.metadata_mut().name = "web".into();
        let rule = |h: &str| IngressRule {
            host: h.into(),
            http: None,
        };
        ing.spec = Some(IngressSpec {
            ingress_class_name: Some("rkube".into()),
            rules: vec![
                rule("a.example.com"),
                rule(""),
                rule("b.example.com"),
                rule("c.example.com"),
            ],
            tls: vec![IngressTls::default()],
            ..Default::default()
        });
        ing.status = Some(IngressStatus {
            load_balancer: Some(IngressLoadBalancerStatus {
                ingress: vec![IngressLoadBalancerIngress {
                    ip: "10.0.0.5".into(),
                    ..Default::default()
                }],
            }),
        });
        let cells = ing.cells(false, Utc::now());
        assert_eq!(
            cells[..5],
            [
                "web",
                "rkube",
                "a.example.com,b.example.com + 1 more...",
                "10.0.0.5",
                "80, 443"
            ]
        );
        ing.spec.as_mut().unwrap().rules = vec![rule("")];
        ing.spec.as_mut().unwrap().tls.clear();
        ing.spec.as_mut().unwrap().ingress_class_name = None;
        let cells = ing.cells(false, Utc::now());
        assert_eq!(cells[..5], ["web", "<none>", "*", "10.0.0.5", "80"]);
    }
}
