//! Workloads: Deployments and ReplicaSets (one set of rules for the replicas,
//! selector and template they share) and the HorizontalPodAutoscalers that
//! scale them.

use super::meta::{validate_meta, NameRule};
use super::pod::validate_pod_spec;
use super::{Errors, FieldError, Validate};
use crate::core::v1 as corev1;
use crate::intstr::IntOrString;
use crate::meta::v1::ObjectMeta;
use crate::selector::Selector;
use crate::{apps, autoscaling};

pub(super) fn validate_label_selector(
    sel: Option<&crate::meta::v1::LabelSelector>,
    f: &str,
    errs: &mut Errors,
) -> Option<Selector> {
    match sel {
        None => {
            errs.required(f.to_string(), "");
            None
        }
        Some(s) if s.match_labels.is_empty() && s.match_expressions.is_empty() => {
            errs.invalid(
                f.to_string(),
                "{}",
                "empty selector is invalid for a workload: it would select every pod",
            );
            None
        }
        Some(s) => match Selector::from_label_selector(s) {
            Ok(sel) => Some(sel),
            Err(e) => {
                errs.invalid(f.to_string(), "", e.to_string());
                None
            }
        },
    }
}

/// The pod template of a controller: labels its selector matches, a valid pod spec, and a
/// restartPolicy the controller can honour (`Always` for long-running workloads; Jobs
/// allow `OnFailure` and `Never`).
pub(super) fn validate_template(
    selector: Option<Selector>,
    template: Option<&corev1::PodTemplateSpec>,
    f: &str,
    restart_policies: &[&'static str],
    errs: &mut Errors,
) {
    let Some(t) = template else {
        errs.required(format!("{f}.template"), "");
        return;
    };
    let labels = t.metadata.as_ref().map(|m| m.labels.clone()).unwrap_or_default();
    if let Some(sel) = selector {
        if !sel.matches(&labels) {
            errs.invalid(
                format!("{f}.template.metadata.labels"),
                &labels,
                format!("`selector` does not match template `labels` (selector: {sel})"),
            );
        }
    }
    let tspec = t.spec.as_ref();
    validate_pod_spec(tspec, &format!("{f}.template.spec"), errs);
    if let Some(s) = tspec {
        if !restart_policies.contains(&s.restart_policy.as_str()) {
            errs.not_supported(
                format!("{f}.template.spec.restartPolicy"),
                &s.restart_policy,
                restart_policies,
            );
        }
    }
}

/// The spec fields the workload controllers share, so that one function validates them
/// for every such kind.
trait WorkloadSpec {
    fn replicas(&self) -> Option<i32>;
    fn selector(&self) -> Option<&crate::meta::v1::LabelSelector>;
    fn template(&self) -> Option<&corev1::PodTemplateSpec>;
}

macro_rules! workload_spec {
    ($($ty:ty),*) => {$(
        impl WorkloadSpec for $ty {
            fn replicas(&self) -> Option<i32> {
                self.replicas
            }
            fn selector(&self) -> Option<&crate::meta::v1::LabelSelector> {
                self.selector.as_ref()
            }
            fn template(&self) -> Option<&corev1::PodTemplateSpec> {
                self.template.as_ref()
            }
        }
    )*};
}

workload_spec!(
    apps::v1::DeploymentSpec,
    apps::v1::ReplicaSetSpec,
    apps::v1::StatefulSetSpec
);

/// A DaemonSet runs one pod per node: no replica count.
impl WorkloadSpec for apps::v1::DaemonSetSpec {
    fn replicas(&self) -> Option<i32> {
        None
    }
    fn selector(&self) -> Option<&crate::meta::v1::LabelSelector> {
        self.selector.as_ref()
    }
    fn template(&self) -> Option<&corev1::PodTemplateSpec> {
        self.template.as_ref()
    }
}

/// A workload's selector cannot change: it would orphan
/// the pods it owns.
fn immutable_selector<S: WorkloadSpec>(new: Option<&S>, old: Option<&S>) -> Vec<FieldError> {
    let mut e = Errors::default();
    let new = new.and_then(S::selector);
    if new != old.and_then(S::selector) {
        let shown = new
            .map(|s| {
                Selector::from_label_selector(s)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        e.invalid("spec.selector", shown, "field is immutable");
    }
    e.0
}

/// What Deployments, ReplicaSets, DaemonSets and StatefulSets share: metadata, then a spec with
/// replicas, a selector, and a pod template the selector matches. Returns
/// the spec for the kind's own checks, or None (reported as missing).
fn validate_workload<'a, S: WorkloadSpec>(
    meta: Option<&ObjectMeta>,
    spec: Option<&'a S>,
    e: &mut Errors,
) -> Option<&'a S> {
    validate_meta(meta, NameRule::Subdomain, e);
    let Some(spec) = spec else {
        e.required("spec.selector", "");
        return None;
    };
    if let Some(r) = spec.replicas() {
        if r < 0 {
            e.invalid("spec.replicas", r, "must be greater than or equal to 0");
        }
    }
    let sel = validate_label_selector(spec.selector(), "spec.selector", e);
    validate_template(sel, spec.template(), "spec", &["Always"], e);
    Some(spec)
}

/// maxSurge and maxUnavailable of a rolling update (Deployments and DaemonSets): each a
/// count or a percentage of `replicas`, not negative, maxUnavailable at most 100%, and not
/// both zero (the rollout could never move).
fn validate_rolling_update(
    f: &str,
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    replicas: i32,
    e: &mut Errors,
) {
    let surge = max_surge.map(|v| (v, v.scaled_value(replicas.max(1) * 100, true)));
    let unavail = max_unavailable.map(|v| (v, v.scaled_value(replicas.max(1) * 100, false)));
    for (val, field) in [(surge.clone(), "maxSurge"), (unavail.clone(), "maxUnavailable")] {
        if let Some((v, r)) = val {
            match r {
                Err(msg) => e.invalid(format!("{f}.{field}"), v.to_string(), msg),
                Ok(n) if n < 0 => e.invalid(
                    format!("{f}.{field}"),
                    v.to_string(),
                    "must be greater than or equal to 0",
                ),
                Ok(_) => {}
            }
            if let Some(s) = v.as_str() {
                if s.strip_suffix('%')
                    .and_then(|p| p.parse::<i32>().ok())
                    .is_some_and(|p| p > 100)
                    && field == "maxUnavailable"
                {
                    e.invalid(format!("{f}.{field}"), s, "must not be greater than 100%");
                }
            }
        }
    }
    let zero = |v: &Option<(&IntOrString, Result<i32, String>)>| {
        v.as_ref().is_some_and(|(_, r)| r.as_ref().is_ok_and(|n| *n == 0))
    };
    if zero(&surge) && zero(&unavail) {
        e.invalid(
            format!("{f}.maxUnavailable"),
            0,
            "may not be 0 when `maxSurge` is 0",
        );
    }
}

/// A workload's update strategy: `type` one of `types` (the first is the one that takes no
/// `rollingUpdate`), and `rollingUpdate` only with `RollingUpdate`.
fn validate_strategy_type(
    f: &str,
    kind: &str,
    has_rolling_update: bool,
    types: &[&'static str],
    e: &mut Errors,
) {
    e.one_of(format!("{f}.type"), kind, types);
    if kind == types[0] && has_rolling_update {
        e.forbidden(
            format!("{f}.rollingUpdate"),
            format!("may not be specified when strategy `type` is '{kind}'"),
        );
    }
}

impl Validate for apps::v1::Deployment {
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        immutable_selector(self.spec.as_ref(), old.spec.as_ref())
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        let Some(spec) = validate_workload(self.metadata.as_ref(), self.spec.as_ref(), &mut e) else {
            return e.0;
        };
        if spec.min_ready_seconds < 0 {
            e.invalid(
                "spec.minReadySeconds",
                spec.min_ready_seconds,
                "must be greater than or equal to 0",
            );
        }
        if let Some(r) = spec.revision_history_limit {
            if r < 0 {
                e.invalid(
                    "spec.revisionHistoryLimit",
                    r,
                    "must be greater than or equal to 0",
                );
            }
        }
        if let Some(p) = spec.progress_deadline_seconds {
            if p <= spec.min_ready_seconds {
                e.invalid(
                    "spec.progressDeadlineSeconds",
                    p,
                    "must be greater than minReadySeconds",
                );
            }
        }
        if let Some(s) = &spec.strategy {
            validate_strategy_type(
                "spec.strategy",
                &s.r#type,
                s.rolling_update.is_some(),
                &["Recreate", "RollingUpdate"],
                &mut e,
            );
            if let Some(ru) = &s.rolling_update {
                validate_rolling_update(
                    "spec.strategy.rollingUpdate",
                    ru.max_surge.as_ref(),
                    ru.max_unavailable.as_ref(),
                    spec.replicas.unwrap_or(1),
                    &mut e,
                );
            }
        }
        e.0
    }
}

impl Validate for apps::v1::ReplicaSet {
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        immutable_selector(self.spec.as_ref(), old.spec.as_ref())
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_workload(self.metadata.as_ref(), self.spec.as_ref(), &mut e);
        e.0
    }
}

/// As Kubernetes: a revision's snapshot never changes once written (its
/// number may, when `rollout undo` makes an old snapshot current again).
impl Validate for apps::v1::ControllerRevision {
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut e = Errors::default();
        if self.data != old.data {
            e.forbidden("data", "field is immutable");
        }
        e.0
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        if self.revision < 0 {
            e.invalid("revision", self.revision, "must be greater than or equal to 0");
        }
        e.0
    }
}

fn non_negative(e: &mut Errors, field: &str, value: Option<i32>) {
    if let Some(v) = value.filter(|v| *v < 0) {
        e.invalid(field, v, "must be greater than or equal to 0");
    }
}

impl Validate for apps::v1::DaemonSet {
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        immutable_selector(self.spec.as_ref(), old.spec.as_ref())
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        let Some(spec) = validate_workload(self.metadata.as_ref(), self.spec.as_ref(), &mut e) else {
            return e.0;
        };
        non_negative(&mut e, "spec.minReadySeconds", Some(spec.min_ready_seconds));
        non_negative(&mut e, "spec.revisionHistoryLimit", spec.revision_history_limit);
        if let Some(s) = &spec.update_strategy {
            validate_strategy_type(
                "spec.updateStrategy",
                &s.r#type,
                s.rolling_update.is_some(),
                &["OnDelete", "RollingUpdate"],
                &mut e,
            );
            if let Some(ru) = &s.rolling_update {
                validate_rolling_update(
                    "spec.updateStrategy.rollingUpdate",
                    ru.max_surge.as_ref(),
                    ru.max_unavailable.as_ref(),
                    1,
                    &mut e,
                );
            }
        }
        e.0
    }
}

impl Validate for apps::v1::StatefulSet {
    /// Kubernetes lets only these fields of a StatefulSet's spec change.
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut e = Errors::default();
        let strip = |s: Option<&apps::v1::StatefulSetSpec>| {
            s.cloned().map(|mut s| {
                s.replicas = None;
                s.template = None;
                s.update_strategy = None;
                s.min_ready_seconds = 0;
                s.persistent_volume_claim_retention_policy = None;
                s.ordinals = None;
                s.revision_history_limit = None;
                s
            })
        };
        if strip(self.spec.as_ref()) != strip(old.spec.as_ref()) {
            e.forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', \
                 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and \
                 'minReadySeconds' are forbidden",
            );
        }
        e.0
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        // As Kubernetes: containers may mount the claim templates by name (each pod gets
        // a volume of that name), so the template is checked with them as volumes.
        let mut with_claims = self.spec.clone();
        if let Some(s) = with_claims.as_mut() {
            let names: Vec<String> = s
                .volume_claim_templates
                .iter()
                .filter_map(|c| c.metadata.as_ref().map(|m| m.name.clone()))
                .filter(|n| !n.is_empty())
                .collect();
            if let Some(pod) = s.template.as_mut().and_then(|t| t.spec.as_mut()) {
                for name in names {
                    if !pod.volumes.iter().any(|v| v.name == name) {
                        pod.volumes.push(crate::core::v1::Volume {
                            name: name.clone(),
                            persistent_volume_claim: Some(
                                crate::core::v1::PersistentVolumeClaimVolumeSource {
                                    claim_name: name,
                                    read_only: false,
                                },
                            ),
                            ..Default::default()
                        });
                    }
                }
            }
        }
        let Some(spec) = validate_workload(self.metadata.as_ref(), with_claims.as_ref(), &mut e) else {
            return e.0;
        };
        non_negative(&mut e, "spec.minReadySeconds", Some(spec.min_ready_seconds));
        non_negative(&mut e, "spec.revisionHistoryLimit", spec.revision_history_limit);
        e.one_of(
            "spec.podManagementPolicy".into(),
            &spec.pod_management_policy,
            &["OrderedReady", "Parallel"],
        );
        if let Some(s) = &spec.update_strategy {
            validate_strategy_type(
                "spec.updateStrategy",
                &s.r#type,
                s.rolling_update.is_some(),
                &["OnDelete", "RollingUpdate"],
                &mut e,
            );
            if let Some(ru) = &s.rolling_update {
                non_negative(
                    &mut e,
                    "spec.updateStrategy.rollingUpdate.partition",
                    ru.partition,
                );
            }
        }
        if let Some(p) = &spec.persistent_volume_claim_retention_policy {
            let f = "spec.persistentVolumeClaimRetentionPolicy";
            e.one_of(format!("{f}.whenDeleted"), &p.when_deleted, &["Retain", "Delete"]);
            e.one_of(format!("{f}.whenScaled"), &p.when_scaled, &["Retain", "Delete"]);
        }
        if let Some(o) = &spec.ordinals {
            non_negative(&mut e, "spec.ordinals.start", Some(o.start));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, claim) in spec.volume_claim_templates.iter().enumerate() {
            let f = format!("spec.volumeClaimTemplates[{i}]");
            let name = claim
                .metadata
                .as_ref()
                .map(|m| m.name.as_str())
                .unwrap_or_default();
            if name.is_empty() {
                e.required(format!("{f}.metadata.name"), "");
            } else if !super::is_dns1123_subdomain(name) {
                e.invalid(
                    format!("{f}.metadata.name"),
                    name,
                    "must be a lowercase RFC 1123 subdomain",
                );
            } else if !names.insert(name) {
                e.duplicate(format!("{f}.metadata.name"), name);
            }
            super::storage::validate_claim_spec(claim.spec.as_ref(), &format!("{f}.spec"), &mut e);
        }
        e.0
    }
}

impl Validate for autoscaling::v2::HorizontalPodAutoscaler {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        let Some(spec) = &self.spec else {
            e.required("spec.scaleTargetRef", "");
            return e.0;
        };
        match &spec.scale_target_ref {
            None => e.required("spec.scaleTargetRef", ""),
            Some(r) => {
                if r.kind.is_empty() {
                    e.required("spec.scaleTargetRef.kind", "");
                }
                if r.name.is_empty() {
                    e.required("spec.scaleTargetRef.name", "");
                }
            }
        }
        let min = spec.min_replicas.unwrap_or(1);
        if min < 1 {
            e.invalid("spec.minReplicas", min, "must be greater than or equal to 1");
        }
        if spec.max_replicas < min {
            e.invalid(
                "spec.maxReplicas",
                spec.max_replicas,
                "must be greater than or equal to `minReplicas`",
            );
        }
        for (i, m) in spec.metrics.iter().enumerate() {
            let mf = format!("spec.metrics[{i}]");
            e.one_of(
                format!("{mf}.type"),
                &m.r#type,
                &["Resource", "ContainerResource"],
            );
            let target = match (m.r#type.as_str(), &m.resource, &m.container_resource) {
                ("Resource", Some(r), _) => Some((&r.name, &r.target, "resource")),
                ("ContainerResource", _, Some(r)) => Some((&r.name, &r.target, "containerResource")),
                ("Resource", None, _) => {
                    e.required(
                        format!("{mf}.resource"),
                        "must populate information for the given metric source",
                    );
                    None
                }
                ("ContainerResource", _, None) => {
                    e.required(
                        format!("{mf}.containerResource"),
                        "must populate information for the given metric source",
                    );
                    None
                }
                _ => None,
            };
            if let Some((name, target, field)) = target {
                e.one_of(format!("{mf}.{field}.name"), name, &["cpu", "memory"]);
                match target {
                    None => e.required(format!("{mf}.{field}.target"), ""),
                    Some(t) => {
                        e.one_of(
                            format!("{mf}.{field}.target.type"),
                            &t.r#type,
                            &["Utilization", "Value", "AverageValue"],
                        );
                        match t.r#type.as_str() {
                            "Utilization" => match t.average_utilization {
                                Some(u) if u > 0 => {}
                                _ => e.required(
                                    format!("{mf}.{field}.target.averageUtilization"),
                                    "must be set and greater than 0 when type is Utilization",
                                ),
                            },
                            "AverageValue" if t.average_value.is_none() => {
                                e.required(format!("{mf}.{field}.target.averageValue"), "")
                            }
                            "Value" if t.value.is_none() => {
                                e.required(format!("{mf}.{field}.target.value"), "")
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        e.0
    }
}

#[cfg(test)]
mod workload_tests {
    use super::*;
    use crate::codec::decode_manifests;
    use crate::defaults::Defaulting;

    fn messages(errors: Vec<FieldError>) -> Vec<String> {
        errors.iter().map(|e| e.to_string()).collect()
    }

    fn deployment(yaml: &str) -> apps::v1::Deployment {
        let objects = decode_manifests(yaml, "deployment.yaml").expect("the test manifest decodes");
        let mut d: apps::v1::Deployment = objects[0].decode().expect("the test manifest is a Deployment");
        d.apply_defaults();
        d
    }

    const SPEC: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: -1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: other}
    spec:
      containers:
      - name: web
        image: nginx
"#;

    #[test]
    fn deployments_and_replica_sets_report_the_same_spec_errors() {
        let d = deployment(SPEC);
        let rs = apps::v1::ReplicaSet {
            metadata: d.metadata.clone(),
            spec: d.spec.as_ref().map(|s| apps::v1::ReplicaSetSpec {
                replicas: s.replicas,
                selector: s.selector.clone(),
                template: s.template.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = messages(d.validate());
        assert_eq!(got, messages(rs.validate()));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("spec.replicas: Invalid value: -1"), "{got:?}");
        assert!(got[1].starts_with("spec.template.metadata.labels"), "{got:?}");
    }

    #[test]
    fn a_workload_without_spec_needs_a_selector() {
        let mut d = deployment(SPEC);
        d.spec = None;
        assert_eq!(messages(d.validate()), ["spec.selector: Required value"]);
        let rs = apps::v1::ReplicaSet {
            metadata: d.metadata.clone(),
            ..Default::default()
        };
        assert_eq!(messages(rs.validate()), ["spec.selector: Required value"]);
    }

    #[test]
    fn a_workload_selector_is_immutable() {
        let old = deployment(SPEC);
        let mut new = old.clone();
        assert!(new.validate_update(&old).is_empty());
        if let Some(s) = new.spec.as_mut().and_then(|s| s.selector.as_mut()) {
            s.match_labels.insert("tier".into(), "front".into());
        }
        assert_eq!(
            messages(new.validate_update(&old)),
            [r#"spec.selector: Invalid value: "app=web,tier=front": field is immutable"#]
        );
        let rs = |d: &apps::v1::Deployment| apps::v1::ReplicaSet {
            spec: d.spec.as_ref().map(|s| apps::v1::ReplicaSetSpec {
                selector: s.selector.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(messages(rs(&new).validate_update(&rs(&old))).len(), 1);
        assert!(rs(&old).validate_update(&rs(&old)).is_empty());
    }
}
