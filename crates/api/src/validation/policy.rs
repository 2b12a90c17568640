//! What limits workloads: PodDisruptionBudgets (policy/v1), ResourceQuotas and LimitRanges
//! (core/v1), PriorityClasses (scheduling.k8s.io/v1).

use std::collections::BTreeMap;

use super::meta::{validate_meta, NameRule};
use super::workloads::validate_label_selector;
use super::{Errors, FieldError, Validate};
use crate::core::v1 as corev1;
use crate::policy::v1::PodDisruptionBudget;
use crate::quantity::Quantity;
use crate::scheduling::v1::PriorityClass;

/// The highest priority a user's class may have; above it is reserved for the system's
/// (`system-node-critical` is 2000001000).
pub const HIGHEST_USER_PRIORITY: i32 = 1_000_000_000;

impl Validate for PodDisruptionBudget {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        let Some(spec) = &self.spec else {
            return e.0;
        };
        if spec.min_available.is_some() && spec.max_unavailable.is_some() {
            e.invalid("spec", "", "minAvailable and maxUnavailable cannot be both set");
        }
        for (field, value) in [
            ("minAvailable", &spec.min_available),
            ("maxUnavailable", &spec.max_unavailable),
        ] {
            let Some(v) = value else { continue };
            match v.scaled_value(100, true) {
                Err(msg) => e.invalid(format!("spec.{field}"), v.to_string(), msg),
                Ok(n) if n < 0 => e.invalid(
                    format!("spec.{field}"),
                    v.to_string(),
                    "must be greater than or equal to 0",
                ),
                Ok(_) => {}
            }
            if v.as_str()
                .and_then(|s| s.strip_suffix('%'))
                .and_then(|p| p.parse::<i32>().ok())
                .is_some_and(|p| p > 100)
            {
                e.invalid(
                    format!("spec.{field}"),
                    v.to_string(),
                    "must not be greater than 100%",
                );
            }
        }
        if let Some(sel) = &spec.selector {
            validate_label_selector(Some(sel), "spec.selector", &mut e);
        }
        if let Some(p) = &spec.unhealthy_pod_eviction_policy {
            e.one_of(
                "spec.unhealthyPodEvictionPolicy".into(),
                p,
                &["IfHealthyBudget", "AlwaysAllow"],
            );
        }
        e.0
    }
}

/// Quantities that must not be negative, under `f[name]`.
fn non_negative_quantities(map: &BTreeMap<String, Quantity>, f: &str, e: &mut Errors) {
    for (name, q) in map {
        match q.millis() {
            Err(err) => e.invalid(format!("{f}[{name}]"), q.to_string(), err.to_string()),
            Ok(m) if m < 0 => e.invalid(
                format!("{f}[{name}]"),
                q.to_string(),
                "must be greater than or equal to 0",
            ),
            Ok(_) => {}
        }
    }
}

impl Validate for corev1::ResourceQuota {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        if let Some(spec) = &self.spec {
            non_negative_quantities(&spec.hard, "spec.hard", &mut e);
            for (i, scope) in spec.scopes.iter().enumerate() {
                e.one_of(
                    format!("spec.scopes[{i}]"),
                    scope,
                    &["Terminating", "NotTerminating", "BestEffort", "NotBestEffort"],
                );
            }
        }
        e.0
    }
}

impl Validate for corev1::LimitRange {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        let limits = self
            .spec
            .as_ref()
            .map(|s| s.limits.as_slice())
            .unwrap_or_default();
        for (i, item) in limits.iter().enumerate() {
            let f = format!("spec.limits[{i}]");
            e.one_of(
                format!("{f}.type"),
                &item.r#type,
                &["Container", "Pod", "PersistentVolumeClaim"],
            );
            for (name, map) in [
                ("max", &item.max),
                ("min", &item.min),
                ("default", &item.default),
                ("defaultRequest", &item.default_request),
                ("maxLimitRequestRatio", &item.max_limit_request_ratio),
            ] {
                non_negative_quantities(map, &format!("{f}.{name}"), &mut e);
            }
            if item.r#type == "Pod" && !(item.default.is_empty() && item.default_request.is_empty()) {
                e.forbidden(
                    format!("{f}.default"),
                    "may not be specified when `type` is 'Pod'",
                );
            }
            let millis = |q: &Quantity| q.millis().ok();
            for (resource, min) in &item.min {
                let min = millis(min);
                let checks = [
                    ("max", item.max.get(resource)),
                    ("default", item.default.get(resource)),
                    ("defaultRequest", item.default_request.get(resource)),
                ];
                for (name, other) in checks {
                    if let (Some(min), Some(v)) = (min, other.and_then(millis)) {
                        if v < min {
                            e.invalid(
                                format!("{f}.{name}[{resource}]"),
                                other.map(|q| q.to_string()).unwrap_or_default(),
                                format!("min value {} is greater than {name} value", item.min[resource]),
                            );
                        }
                    }
                }
            }
            for (resource, max) in &item.max {
                for (name, other) in [
                    ("default", item.default.get(resource)),
                    ("defaultRequest", item.default_request.get(resource)),
                ] {
                    if let (Some(max), Some(v)) = (millis(max), other.and_then(millis)) {
                        if v > max {
                            e.invalid(
                                format!("{f}.{name}[{resource}]"),
                                other.map(|q| q.to_string()).unwrap_or_default(),
                                format!("{name} value is greater than max value {}", item.max[resource]),
                            );
                        }
                    }
                }
            }
        }
        e.0
    }
}

impl Validate for PriorityClass {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        let name = self
            .metadata
            .as_ref()
            .map(|m| m.name.as_str())
            .unwrap_or_default();
        if name.starts_with("system-") {
            e.forbidden(
                "metadata.name",
                "priority class names with 'system-' prefix are reserved for system use",
            );
        }
        if self.value > HIGHEST_USER_PRIORITY {
            e.forbidden(
                "value",
                format!("maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"),
            );
        }
        if let Some(p) = &self.preemption_policy {
            e.one_of("preemptionPolicy".into(), p, &["PreemptLowerPriority", "Never"]);
        }
        e.0
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut e = Errors::default();
        if self.value != old.value {
            e.forbidden("value", "may not be changed in an update.");
        }
        if self.preemption_policy != old.preemption_policy {
            e.invalid("preemptionPolicy", &self.preemption_policy, "field is immutable");
        }
        e.0
    }
}
