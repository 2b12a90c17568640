//! The kinds the cluster keeps about itself: Namespaces, Nodes, Events and
//! Leases.

use super::meta::{validate_meta, NameRule};
use super::{Errors, FieldError, Validate};
use crate::coordination;
use crate::core::v1 as corev1;

impl Validate for corev1::Namespace {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Label, &mut e);
        e.0
    }
}

impl Validate for corev1::Node {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        if let Some(spec) = &self.spec {
            for (i, t) in spec.taints.iter().enumerate() {
                if t.key.is_empty() {
                    e.required(format!("spec.taints[{i}].key"), "");
                }
                e.one_of(
                    format!("spec.taints[{i}].effect"),
                    &t.effect,
                    &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                );
            }
            if !spec.pod_cidr.is_empty() && parse_cidr(&spec.pod_cidr).is_none() {
                e.invalid(
                    "spec.podCIDR",
                    &spec.pod_cidr,
                    "must be a CIDR such as 10.244.1.0/24",
                );
            }
        }
        e.0
    }
}

/// Parses `a.b.c.d/len` into (address, prefix length).
pub fn parse_cidr(s: &str) -> Option<(std::net::Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    (len <= 32).then_some(())?;
    Some((ip.parse().ok()?, len))
}

impl Validate for corev1::Event {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Path, &mut e);
        if self.involved_object.is_none() {
            e.required("involvedObject", "");
        }
        if !self.r#type.is_empty() {
            e.one_of("type".into(), &self.r#type, &["Normal", "Warning"]);
        }
        e.0
    }
}

impl Validate for coordination::v1::Lease {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        if let Some(s) = &self.spec {
            if s.lease_duration_seconds.is_some_and(|d| d <= 0) {
                e.invalid(
                    "spec.leaseDurationSeconds",
                    s.lease_duration_seconds,
                    "must be greater than 0",
                );
            }
        }
        e.0
    }
}
