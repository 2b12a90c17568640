//! Defaulting: the values Kubernetes fills in when a manifest leaves a
//! field out (restartPolicy Always, replicas 1, protocol TCP, targetPort =
//! port, imagePullPolicy by tag, RollingUpdate 25%/25%, ...).

use crate::core::v1 as corev1;
use crate::intstr::IntOrString;
use crate::{
    apps, autoscaling, batch, certificates, coordination, networking, policy, rbac, scheduling, storage,
};

pub trait Defaulting {
    /// Fills in every unset field that has a default. Idempotent.
    fn apply_defaults(&mut self);
}

fn set_if_empty(s: &mut String, v: &str) {
    if s.is_empty() {
        *s = v.to_string();
    }
}

/// `Always` for `:latest` or untagged images, else `IfNotPresent`, as
/// Kubernetes decides.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_probe(p: &mut Option<corev1::Probe>) {
    if let Some(p) = p {
        if p.timeout_seconds == 0 {
            p.timeout_seconds = 1;
        }
        if p.period_seconds == 0 {
            p.period_seconds = 10;
        }
        if p.success_threshold == 0 {
            p.success_threshold = 1;
        }
        if p.failure_threshold == 0 {
            p.failure_threshold = 3;
        }
        if let Some(h) = &mut p.http_get {
            set_if_empty(&mut h.scheme, "HTTP");
            set_if_empty(&mut h.path, "/");
        }
    }
}

fn default_container(c: &mut corev1::Container) {
    let policy = default_pull_policy(&c.image);
    set_if_empty(&mut c.image_pull_policy, policy);
    set_if_empty(&mut c.termination_message_path, "/dev/termination-log");
    set_if_empty(&mut c.termination_message_policy, "File");
    for p in &mut c.ports {
        set_if_empty(&mut p.protocol, "TCP");
    }
    // requests default to limits when only limits are given
    if let Some(r) = &mut c.resources {
        for (k, v) in r.limits.clone() {
            r.requests.entry(k).or_insert(v);
        }
    }
    default_probe(&mut c.liveness_probe);
    default_probe(&mut c.readiness_probe);
    default_probe(&mut c.startup_probe);
    if let Some(l) = &mut c.lifecycle {
        for h in [&mut l.post_start, &mut l.pre_stop].into_iter().flatten() {
            if let Some(g) = &mut h.http_get {
                set_if_empty(&mut g.scheme, "HTTP");
                set_if_empty(&mut g.path, "/");
            }
        }
    }
}

pub fn default_pod_spec(spec: &mut corev1::PodSpec) {
    set_if_empty(&mut spec.restart_policy, "Always");
    set_if_empty(&mut spec.dns_policy, "ClusterFirst");
    set_if_empty(&mut spec.scheduler_name, "default-scheduler");
    if spec.termination_grace_period_seconds.is_none() {
        spec.termination_grace_period_seconds = Some(30);
    }
    for c in spec.init_containers.iter_mut().chain(spec.containers.iter_mut()) {
        default_container(c);
    }
    for v in &mut spec.volumes {
        if let Some(c) = &mut v.config_map {
            c.default_mode.get_or_insert(0o644);
        }
        if let Some(s) = &mut v.secret {
            s.default_mode.get_or_insert(0o644);
        }
    }
    for t in &mut spec.tolerations {
        if t.operator.is_empty() {
            t.operator = "Equal".into();
        }
    }
}

impl Defaulting for corev1::Pod {
    fn apply_defaults(&mut self) {
        default_pod_spec(self.spec.get_or_insert_with(Default::default));
    }
}

impl Defaulting for corev1::Namespace {
    fn apply_defaults(&mut self) {}
}

impl Defaulting for corev1::Node {
    fn apply_defaults(&mut self) {}
}

impl Defaulting for corev1::Service {
    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        set_if_empty(&mut spec.r#type, "ClusterIP");
        set_if_empty(&mut spec.session_affinity, "None");
        if spec.session_affinity == "ClientIP" {
            let cfg = spec.session_affinity_config.get_or_insert_with(Default::default);
            let ip = cfg.client_ip.get_or_insert_with(Default::default);
            ip.timeout_seconds.get_or_insert(10800);
        }
        if matches!(spec.r#type.as_str(), "NodePort" | "LoadBalancer") {
            set_if_empty(&mut spec.external_traffic_policy, "Cluster");
        }
        for p in &mut spec.ports {
            set_if_empty(&mut p.protocol, "TCP");
            if p.target_port.is_none()
                || p.target_port
                    .as_ref()
                    .is_some_and(|t| !t.is_string() && t.int_val == 0)
            {
                p.target_port = Some(IntOrString::int(p.port));
            }
        }
    }
}

impl Defaulting for corev1::Endpoints {
    fn apply_defaults(&mut self) {
        for s in &mut self.subsets {
            for p in &mut s.ports {
                set_if_empty(&mut p.protocol, "TCP");
            }
        }
    }
}

impl Defaulting for corev1::Event {
    fn apply_defaults(&mut self) {
        set_if_empty(&mut self.r#type, "Normal");
        if self.count == 0 {
            self.count = 1;
        }
    }
}

impl Defaulting for corev1::ConfigMap {
    fn apply_defaults(&mut self) {}
}

impl Defaulting for corev1::Secret {
    fn apply_defaults(&mut self) {
        set_if_empty(&mut self.r#type, "Opaque");
        // stringData is a write-only convenience, merged into data
        for (k, v) in std::mem::take(&mut self.string_data) {
            self.data.insert(k, v.into_bytes());
        }
    }
}

fn default_template(t: &mut Option<corev1::PodTemplateSpec>) {
    if let Some(t) = t {
        if let Some(s) = &mut t.spec {
            default_pod_spec(s);
        }
    }
}

impl Defaulting for apps::v1::Deployment {
    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        spec.progress_deadline_seconds.get_or_insert(600);
        let strategy = spec.strategy.get_or_insert_with(Default::default);
        set_if_empty(&mut strategy.r#type, "RollingUpdate");
        if strategy.r#type == "RollingUpdate" {
            let ru = strategy.rolling_update.get_or_insert_with(Default::default);
            ru.max_surge.get_or_insert_with(|| IntOrString::string("25%"));
            ru.max_unavailable
                .get_or_insert_with(|| IntOrString::string("25%"));
        }
        default_template(&mut spec.template);
    }
}

impl Defaulting for apps::v1::ReplicaSet {
    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        default_template(&mut spec.template);
    }
}

impl Defaulting for autoscaling::v2::HorizontalPodAutoscaler {
    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.min_replicas.get_or_insert(1);
        if spec.metrics.is_empty() {
            // autoscaling/v2 default: 80% average CPU utilization
            spec.metrics.push(autoscaling::v2::MetricSpec {
                r#type: "Resource".into(),
                resource: Some(autoscaling::v2::ResourceMetricSource {
                    name: "cpu".into(),
                    target: Some(autoscaling::v2::MetricTarget {
                        r#type: "Utilization".into(),
                        average_utilization: Some(80),
                        ..Default::default()
                    }),
                }),
                container_resource: None,
            });
        }
    }
}

impl Defaulting for coordination::v1::Lease {
    fn apply_defaults(&mut self) {}
}

/// Kubernetes fills in `apiGroup: rbac.authorization.k8s.io` for User and
/// Group subjects written without one.
fn default_subjects(subjects: &mut [rbac::v1::Subject]) {
    for s in subjects {
        if s.api_group.is_empty() && (s.kind == "User" || s.kind == "Group") {
            s.api_group = "rbac.authorization.k8s.io".into();
        }
    }
}

impl Defaulting for rbac::v1::Role {
    fn apply_defaults(&mut self) {}
}

impl Defaulting for rbac::v1::ClusterRole {
    fn apply_defaults(&mut self) {}
}

impl Defaulting for rbac::v1::RoleBinding {
    fn apply_defaults(&mut self) {
        default_subjects(&mut self.subjects);
    }
}

impl Defaulting for rbac::v1::ClusterRoleBinding {
    fn apply_defaults(&mut self) {
        default_subjects(&mut self.subjects);
    }
}

impl Defaulting for apps::v1::DaemonSet {
    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.revision_history_limit.get_or_insert(10);
        let strategy = spec.update_strategy.get_or_insert_with(Default::default);
        set_if_empty(&mut strategy.r#type, "RollingUpdate");
        if strategy.r#type == "RollingUpdate" {
            let ru = strategy.rolling_update.get_or_insert_with(Default::default);
            ru.max_unavailable.get_or_insert_with(|| IntOrString::int(1));
            ru.max_surge.get_or_insert_with(|| IntOrString::int(0));
        }
        default_template(&mut spec.template);
    }
}

impl Defaulting for apps::v1::ControllerRevision {
    fn apply_defaults(&mut self) {}
}

impl Defaulting for apps::v1::StatefulSet {
    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        set_if_empty(&mut spec.pod_management_policy, "OrderedReady");
        let strategy = spec.update_strategy.get_or_insert_with(Default::default);
        set_if_empty(&mut strategy.r#type, "RollingUpdate");
        if strategy.r#type == "RollingUpdate" {
            let ru = strategy.rolling_update.get_or_insert_with(Default::default);
            ru.partition.get_or_insert(0);
        }
        let retention = spec
            .persistent_volume_claim_retention_policy
            .get_or_insert_with(Default::default);
        set_if_empty(&mut retention.when_deleted, "Retain");
        set_if_empty(&mut retention.when_scaled, "Retain");
        for claim in &mut spec.volume_claim_templates {
            let claim_spec = claim.spec.get_or_insert_with(Default::default);
            claim_spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
        }
        default_template(&mut spec.template);
    }
}

/// The labels a Job's pods carry and its generated selector matches (Kubernetes' current
/// and legacy names).
pub const JOB_CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
const LEGACY_JOB_NAME_LABEL: &str = "job-name";

fn default_job_spec(spec: &mut batch::v1::JobSpec) {
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    spec.backoff_limit.get_or_insert(6);
    spec.completion_mode.get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    spec.pod_replacement_policy
        .get_or_insert_with(|| "TerminatingOrFailed".into());
    default_template(&mut spec.template);
}

impl Defaulting for batch::v1::Job {
    /// Also, as Kubernetes does at creation: unless `manualSelector` is set, the Job selects
    /// its pods by its own uid, and its template carries that uid and the Job's name.
    fn apply_defaults(&mut self) {
        let (uid, name) = self
            .metadata
            .as_ref()
            .map(|m| (m.uid.clone(), m.name.clone()))
            .unwrap_or_default();
        let spec = self.spec.get_or_insert_with(Default::default);
        default_job_spec(spec);
        if spec.manual_selector != Some(true) && spec.selector.is_none() && !uid.is_empty() {
            spec.selector = Some(crate::meta::v1::LabelSelector {
                match_labels: [(JOB_CONTROLLER_UID_LABEL.to_string(), uid.clone())].into(),
                ..Default::default()
            });
            let template = spec.template.get_or_insert_with(Default::default);
            let labels = &mut template.metadata.get_or_insert_with(Default::default).labels;
            for (key, value) in [
                (JOB_CONTROLLER_UID_LABEL, &uid),
                (LEGACY_CONTROLLER_UID_LABEL, &uid),
                (JOB_NAME_LABEL, &name),
                (LEGACY_JOB_NAME_LABEL, &name),
            ] {
                labels.entry(key.to_string()).or_insert_with(|| value.clone());
            }
        }
    }
}

impl Defaulting for batch::v1::CronJob {
    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        set_if_empty(&mut spec.concurrency_policy, "Allow");
        spec.suspend.get_or_insert(false);
        spec.successful_jobs_history_limit.get_or_insert(3);
        spec.failed_jobs_history_limit.get_or_insert(1);
        let template = spec.job_template.get_or_insert_with(Default::default);
        default_job_spec(template.spec.get_or_insert_with(Default::default));
    }
}

impl Defaulting for corev1::ServiceAccount {
    fn apply_defaults(&mut self) {}
}

impl Defaulting for corev1::PersistentVolumeClaim {
    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
    }
}

/// As Kubernetes: a volume made by hand is kept when its claim goes (Retain), and starts
/// Pending until the binder looks at it.
impl Defaulting for corev1::PersistentVolume {
    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
        if spec.persistent_volume_reclaim_policy.is_empty() {
            spec.persistent_volume_reclaim_policy = "Retain".into();
        }
        let status = self.status.get_or_insert_with(Default::default);
        if status.phase.is_empty() {
            status.phase = "Pending".into();
        }
    }
}

impl Defaulting for storage::v1::StorageClass {
    fn apply_defaults(&mut self) {
        self.reclaim_policy.get_or_insert_with(|| "Delete".into());
        self.volume_binding_mode.get_or_insert_with(|| "Immediate".into());
    }
}

impl Defaulting for corev1::ResourceQuota {
    fn apply_defaults(&mut self) {}
}

impl Defaulting for corev1::LimitRange {
    /// As Kubernetes: a container limit's default is its max, and its default request is
    /// its default.
    fn apply_defaults(&mut self) {
        for item in self.spec.iter_mut().flat_map(|s| s.limits.iter_mut()) {
            if item.r#type != "Container" {
                continue;
            }
            for (k, v) in item.max.clone() {
                item.default.entry(k).or_insert(v);
            }
            for (k, v) in item.default.clone() {
                item.default_request.entry(k).or_insert(v);
            }
        }
    }
}

/// certificates/v1 has no defaults: usages and signerName are required.
impl Defaulting for certificates::v1::CertificateSigningRequest {
    fn apply_defaults(&mut self) {}
}

impl Defaulting for policy::v1::PodDisruptionBudget {
    fn apply_defaults(&mut self) {}
}

impl Defaulting for scheduling::v1::PriorityClass {
    fn apply_defaults(&mut self) {
        self.preemption_policy
            .get_or_insert_with(|| "PreemptLowerPriority".into());
    }
}

/// Kubernetes' defaults: protocol TCP; policyTypes Ingress, plus Egress when there are
/// egress rules; a missing podSelector is the empty one (every pod of the namespace).
impl Defaulting for networking::v1::NetworkPolicy {
    fn apply_defaults(&mut self) {
        let spec = self.spec.get_or_insert_with(Default::default);
        spec.pod_selector.get_or_insert_with(Default::default);
        if spec.policy_types.is_empty() {
            spec.policy_types.push("Ingress".into());
            if !spec.egress.is_empty() {
                spec.policy_types.push("Egress".into());
            }
        }
        let ingress = spec.ingress.iter_mut().flat_map(|r| &mut r.ports);
        for port in ingress.chain(spec.egress.iter_mut().flat_map(|r| &mut r.ports)) {
            port.protocol.get_or_insert_with(|| "TCP".into());
        }
    }
}

impl Defaulting for networking::v1::Ingress {
    fn apply_defaults(&mut self) {}
}

impl Defaulting for networking::v1::IngressClass {
    fn apply_defaults(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::Validate;

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(default_pull_policy("nginx"), "Always");
        assert_eq!(default_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_pull_policy("nginx:1.25"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/x"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/x:v1"), "IfNotPresent");
        assert_eq!(default_pull_policy("x@sha256:abc"), "IfNotPresent");
    }

    fn deployment(yaml: &str) -> apps::v1::Deployment {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn deployment_defaults_then_validates() {
        let mut d = deployment(
            "metadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: c, image: 'busybox:1', ports: [{containerPort: 80}]}]\n",
        );
        d.apply_defaults();
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        let ru = spec.strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
        assert_eq!(ru.max_surge.as_ref().unwrap().as_str(), Some("25%"));
        let c = &spec.template.as_ref().unwrap().spec.as_ref().unwrap().containers[0];
        assert_eq!(c.image_pull_policy, "IfNotPresent");
        assert_eq!(c.ports[0].protocol, "TCP");
        assert_eq!(d.validate(), vec![]);
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let mut d = deployment(
            "metadata: {name: Web_1}\nspec:\n  replicas: -1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: other}}\n    spec:\n      containers:\n      - {name: c, image: x, ports: [{containerPort: 70000}]}\n      - {name: c}\n",
        );
        d.apply_defaults();
        let errs: Vec<String> = d.validate().iter().map(|e| e.to_string()).collect();
        let has = |s: &str| errs.iter().any(|e| e.starts_with(s));
        assert!(has("metadata.name: Invalid value: \"Web_1\""), "{errs:#?}");
        assert!(
            has("spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
            "{errs:#?}"
        );
        assert!(has("spec.template.metadata.labels: Invalid value"), "{errs:#?}");
        assert!(
            has("spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 70000"),
            "{errs:#?}"
        );
        assert!(
            has("spec.template.spec.containers[1].name: Duplicate value: \"c\""),
            "{errs:#?}"
        );
        assert!(
            has("spec.template.spec.containers[1].image: Required value"),
            "{errs:#?}"
        );
        assert_eq!(errs.len(), 6, "{errs:#?}");
    }

    #[test]
    fn service_defaults_target_port_to_port() {
        let mut s: corev1::Service =
            serde_yaml::from_str("metadata: {name: s}\nspec:\n  ports: [{port: 80}]\n").unwrap();
        s.apply_defaults();
        let spec = s.spec.as_ref().unwrap();
        assert_eq!(spec.r#type, "ClusterIP");
        assert_eq!(spec.ports[0].target_port.as_ref().unwrap().as_int(), Some(80));
        assert_eq!(s.validate(), vec![]);
    }

    #[test]
    fn secret_string_data_merges_into_data() {
        let mut s: corev1::Secret =
            serde_yaml::from_str("metadata: {name: s}\nstringData: {password: hunter2}\n").unwrap();
        s.apply_defaults();
        assert_eq!(s.data["password"], b"hunter2");
        assert!(s.string_data.is_empty());
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["data"]["password"], "aHVudGVyMg==");
    }
}
