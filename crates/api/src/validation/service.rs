//! Services and Endpoints: ports, protocols, types and addresses.

use super::meta::{
    is_dns1123_label, validate_labels, validate_meta, validate_named_port, validate_port, NameRule,
    DNS1123_LABEL_MSG, PROTOCOLS,
};
use super::{Errors, FieldError, Validate};
use crate::core::v1 as corev1;
use std::collections::HashSet;

impl Validate for corev1::Service {
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut e = Errors::default();
        let ip = |o: &Self| o.spec.as_ref().map(|s| s.cluster_ip.clone()).unwrap_or_default();
        // an empty clusterIP in an update keeps the allocated one
        if !ip(self).is_empty() && !ip(old).is_empty() && ip(self) != ip(old) {
            e.invalid("spec.clusterIP", ip(self), "field is immutable");
        }
        e.0
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Label, &mut e);
        let Some(spec) = &self.spec else {
            e.required("spec.ports", "");
            return e.0;
        };
        e.one_of(
            "spec.type".into(),
            &spec.r#type,
            &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"],
        );
        e.one_of(
            "spec.sessionAffinity".into(),
            &spec.session_affinity,
            &["None", "ClientIP"],
        );
        if spec.r#type == "ExternalName" {
            if spec.external_name.is_empty() {
                e.required("spec.externalName", "");
            }
        } else if spec.ports.is_empty() && spec.cluster_ip != "None" {
            e.required("spec.ports", "");
        }
        if spec.cluster_ip == "None" && matches!(spec.r#type.as_str(), "NodePort" | "LoadBalancer") {
            e.invalid(
                "spec.clusterIP",
                "None",
                format!("may not be set to 'None' for {} services", spec.r#type),
            );
        }
        if !spec.cluster_ip.is_empty()
            && spec.cluster_ip != "None"
            && spec.cluster_ip.parse::<std::net::Ipv4Addr>().is_err()
        {
            e.invalid(
                "spec.clusterIP",
                &spec.cluster_ip,
                "must be a valid IPv4 address or \"None\"",
            );
        }
        let mut names = HashSet::new();
        let mut seen = HashSet::new();
        for (i, p) in spec.ports.iter().enumerate() {
            let pf = format!("spec.ports[{i}]");
            if spec.ports.len() > 1 && p.name.is_empty() {
                e.required(
                    format!("{pf}.name"),
                    "when there are multiple ports, each must have a name",
                );
            }
            if !p.name.is_empty() {
                if !is_dns1123_label(&p.name) {
                    e.invalid(format!("{pf}.name"), &p.name, DNS1123_LABEL_MSG);
                }
                if !names.insert(p.name.as_str()) {
                    e.duplicate(format!("{pf}.name"), &p.name);
                }
            }
            validate_port(p.port, format!("{pf}.port"), &mut e);
            e.one_of(format!("{pf}.protocol"), &p.protocol, PROTOCOLS);
            if !seen.insert((p.port, p.protocol.clone())) {
                e.duplicate(pf.clone(), format!("{}/{}", p.port, p.protocol));
            }
            validate_named_port(p.target_port.as_ref(), &format!("{pf}.targetPort"), &mut e);
            if p.node_port != 0 {
                if spec.r#type == "ClusterIP" {
                    e.forbidden(
                        format!("{pf}.nodePort"),
                        "may not be used when `type` is 'ClusterIP'",
                    );
                } else {
                    validate_port(p.node_port, format!("{pf}.nodePort"), &mut e);
                }
            }
        }
        validate_labels(&spec.selector, "spec.selector", &mut e);
        e.0
    }
}

impl Validate for corev1::Endpoints {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Label, &mut e);
        for (i, s) in self.subsets.iter().enumerate() {
            for (j, a) in s.addresses.iter().chain(&s.not_ready_addresses).enumerate() {
                if a.ip.parse::<std::net::IpAddr>().is_err() {
                    e.invalid(
                        format!("subsets[{i}].addresses[{j}].ip"),
                        &a.ip,
                        "must be a valid IP address",
                    );
                }
            }
            for (j, p) in s.ports.iter().enumerate() {
                validate_port(p.port, format!("subsets[{i}].ports[{j}].port"), &mut e);
            }
        }
        e.0
    }
}
