//! Validation of every kind, returning all field errors at once in
//! Kubernetes' wording (`spec.replicas: Invalid value: -1: must be greater
//! than or equal to 0`). The apiserver runs it after defaulting; rkubectl
//! runs it before sending anything, so a bad file writes nothing.

use crate::core::v1 as corev1;
use crate::meta::v1::ObjectMeta;
use crate::selector::Selector;
use crate::{apps, autoscaling, coordination, rbac};
use std::collections::{BTreeMap, HashSet};
use std::fmt;

/// Largest encoded object the apiserver stores (as etcd's default limit).
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorType {
    Required,
    Invalid(String),
    NotSupported(Vec<&'static str>),
    Duplicate(String),
    Forbidden,
    TooLong,
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub kind: ErrorType,
    pub detail: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.field)?;
        match &self.kind {
            ErrorType::Required => write!(f, "Required value")?,
            ErrorType::Invalid(v) => write!(f, "Invalid value: {v}")?,
            ErrorType::NotSupported(vs) => {
                let quoted: Vec<String> = vs.iter().map(|v| format!("{v:?}")).collect();
                write!(f, "Unsupported value: supported values: {}", quoted.join(", "))?
            }
            ErrorType::Duplicate(v) => write!(f, "Duplicate value: {v}")?,
            ErrorType::Forbidden => write!(f, "Forbidden")?,
            ErrorType::TooLong => write!(f, "Too long")?,
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Collects errors under a path.
#[derive(Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    pub fn required(&mut self, field: impl Into<String>, detail: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            kind: ErrorType::Required,
            detail: detail.into(),
        });
    }
    pub fn invalid(&mut self, field: impl Into<String>, value: impl fmt::Debug, detail: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            kind: ErrorType::Invalid(format!("{value:?}")),
            detail: detail.into(),
        });
    }
    pub fn not_supported(&mut self, field: impl Into<String>, value: &str, allowed: &[&'static str]) {
        self.0.push(FieldError {
            field: field.into(),
            kind: ErrorType::NotSupported(allowed.to_vec()),
            detail: format!("got {value:?}"),
        });
    }
    pub fn duplicate(&mut self, field: impl Into<String>, value: impl fmt::Debug) {
        self.0.push(FieldError {
            field: field.into(),
            kind: ErrorType::Duplicate(format!("{value:?}")),
            detail: String::new(),
        });
    }
    pub fn forbidden(&mut self, field: impl Into<String>, detail: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            kind: ErrorType::Forbidden,
            detail: detail.into(),
        });
    }
    fn one_of(&mut self, field: String, value: &str, allowed: &[&'static str]) {
        if !allowed.contains(&value) {
            self.not_supported(field, value, allowed);
        }
    }
}

pub trait Validate {
    /// Every problem with the object; empty when it is valid. Expects
    /// defaults to have been applied.
    fn validate(&self) -> Vec<FieldError>;

    /// Problems with changing `old` into `self` (immutable fields).
    fn validate_update(&self, _old: &Self) -> Vec<FieldError> {
        Vec::new()
    }
}

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')";

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// How a kind's names are checked.
#[derive(Clone, Copy)]
enum NameRule {
    Label,
    Subdomain,
    /// Node names, event names: any subdomain-ish string, as Kubernetes.
    Path,
}

fn validate_meta(meta: Option<&ObjectMeta>, rule: NameRule, errs: &mut Errors) {
    let Some(meta) = meta else {
        errs.required("metadata.name", "name or generateName is required");
        return;
    };
    if meta.name.is_empty() {
        if meta.generate_name.is_empty() {
            errs.required("metadata.name", "name or generateName is required");
        }
    } else {
        let ok = match rule {
            NameRule::Label => is_dns1123_label(&meta.name),
            NameRule::Subdomain => is_dns1123_subdomain(&meta.name),
            NameRule::Path => {
                !meta.name.contains('/') && !meta.name.contains('%') && meta.name != "." && meta.name != ".."
            }
        };
        if !ok {
            let msg = match rule {
                NameRule::Label => DNS1123_LABEL_MSG,
                NameRule::Subdomain => DNS1123_SUBDOMAIN_MSG,
                NameRule::Path => "may not contain '/' or '%' and may not be '.' or '..'",
            };
            errs.invalid("metadata.name", &meta.name, msg);
        }
    }
    if !meta.namespace.is_empty() && !is_dns1123_label(&meta.namespace) {
        errs.invalid("metadata.namespace", &meta.namespace, DNS1123_LABEL_MSG);
    }
    validate_labels(&meta.labels, "metadata.labels", errs);
    for (i, o) in meta.owner_references.iter().enumerate() {
        let f = format!("metadata.ownerReferences[{i}]");
        if o.api_version.is_empty() {
            errs.required(format!("{f}.apiVersion"), "");
        }
        if o.kind.is_empty() {
            errs.required(format!("{f}.kind"), "");
        }
        if o.name.is_empty() {
            errs.required(format!("{f}.name"), "");
        }
        if o.uid.is_empty() {
            errs.required(format!("{f}.uid"), "");
        }
    }
    if meta
        .owner_references
        .iter()
        .filter(|o| o.controller == Some(true))
        .count()
        > 1
    {
        errs.invalid(
            "metadata.ownerReferences",
            "",
            "only one reference can have controller set to true",
        );
    }
}

fn validate_labels(labels: &BTreeMap<String, String>, field: &str, errs: &mut Errors) {
    for (k, v) in labels {
        let name = k.rsplit('/').next().unwrap_or(k);
        let prefix_ok = match k.rsplit_once('/') {
            Some((p, _)) => is_dns1123_subdomain(p),
            None => true,
        };
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
        if !prefix_ok || !name_ok {
            errs.invalid(field, k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, at most 63 characters, with an optional DNS subdomain prefix and '/'");
        }
        let value_ok = v.is_empty()
            || (v.len() <= 63
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                && v.as_bytes()[0].is_ascii_alphanumeric()
                && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric());
        if !value_ok {
            errs.invalid(format!("{field}[{k}]"), v, "a valid label value must be 63 characters or less and must be empty or begin and end with an alphanumeric character, with '-', '_' or '.' between");
        }
    }
}

fn validate_port(port: i32, field: String, errs: &mut Errors) {
    if !(1..=65535).contains(&port) {
        errs.invalid(field, port, "must be between 1 and 65535, inclusive");
    }
}

fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

pub fn validate_pod_spec(spec: Option<&corev1::PodSpec>, f: &str, errs: &mut Errors) {
    let Some(spec) = spec else {
        errs.required(format!("{f}.containers"), "a pod needs at least one container");
        return;
    };
    let mut volumes = HashSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let vf = format!("{f}.volumes[{i}]");
        if !is_dns1123_label(&v.name) {
            errs.invalid(format!("{vf}.name"), &v.name, DNS1123_LABEL_MSG);
        }
        if !volumes.insert(v.name.as_str()) {
            errs.duplicate(format!("{vf}.name"), &v.name);
        }
        let sources = [
            v.empty_dir.is_some(),
            v.host_path.is_some(),
            v.config_map.is_some(),
            v.secret.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if sources != 1 {
            errs.required(
                vf.clone(),
                "exactly one of emptyDir, hostPath, configMap or secret must be specified",
            );
        }
        if let Some(h) = &v.host_path {
            if !h.path.starts_with('/') {
                errs.invalid(format!("{vf}.hostPath.path"), &h.path, "must be an absolute path");
            }
        }
        if let Some(c) = &v.config_map {
            if c.name.is_empty() {
                errs.required(format!("{vf}.configMap.name"), "");
            }
        }
        if let Some(s) = &v.secret {
            if s.secret_name.is_empty() {
                errs.required(format!("{vf}.secret.secretName"), "");
            }
        }
    }
    if spec.containers.is_empty() {
        errs.required(format!("{f}.containers"), "a pod needs at least one container");
    }
    let mut names = HashSet::new();
    let mut host_ports = HashSet::new();
    for (kind, list) in [
        ("initContainers", &spec.init_containers),
        ("containers", &spec.containers),
    ] {
        for (i, c) in list.iter().enumerate() {
            let cf = format!("{f}.{kind}[{i}]");
            validate_container(c, &cf, &volumes, errs);
            if !c.name.is_empty() && !names.insert(c.name.as_str()) {
                errs.duplicate(format!("{cf}.name"), &c.name);
            }
            if kind == "initContainers"
                && (c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some())
            {
                errs.forbidden(cf.clone(), "init containers may not have probes");
            }
            for (j, p) in c.ports.iter().enumerate() {
                if p.host_port != 0 && !host_ports.insert((p.host_port, p.protocol.clone())) {
                    errs.duplicate(
                        format!("{cf}.ports[{j}].hostPort"),
                        format!("{}/{}", p.host_port, p.protocol),
                    );
                }
            }
        }
    }
    errs.one_of(
        format!("{f}.restartPolicy"),
        &spec.restart_policy,
        &["Always", "OnFailure", "Never"],
    );
    errs.one_of(
        format!("{f}.dnsPolicy"),
        &spec.dns_policy,
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
    );
    if let Some(g) = spec.termination_grace_period_seconds {
        if g < 0 {
            errs.invalid(
                format!("{f}.terminationGracePeriodSeconds"),
                g,
                "must be greater than or equal to 0",
            );
        }
    }
    if let Some(d) = spec.active_deadline_seconds {
        if d <= 0 {
            errs.invalid(format!("{f}.activeDeadlineSeconds"), d, "must be greater than 0");
        }
    }
    if !spec.node_name.is_empty() && !is_dns1123_subdomain(&spec.node_name) {
        errs.invalid(format!("{f}.nodeName"), &spec.node_name, DNS1123_SUBDOMAIN_MSG);
    }
    validate_labels(&spec.node_selector, &format!("{f}.nodeSelector"), errs);
    for (i, t) in spec.tolerations.iter().enumerate() {
        let tf = format!("{f}.tolerations[{i}]");
        let op = if t.operator.is_empty() {
            "Equal"
        } else {
            t.operator.as_str()
        };
        errs.one_of(format!("{tf}.operator"), op, &["Equal", "Exists"]);
        if op == "Exists" && !t.value.is_empty() {
            errs.invalid(
                format!("{tf}.operator"),
                op,
                "value must be empty when `operator` is 'Exists'",
            );
        }
        if t.key.is_empty() && op != "Exists" {
            errs.invalid(
                format!("{tf}.operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            );
        }
        if !t.effect.is_empty() {
            errs.one_of(
                format!("{tf}.effect"),
                &t.effect,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            );
        }
        if t.toleration_seconds.is_some() && t.effect != "NoExecute" {
            errs.invalid(
                format!("{tf}.effect"),
                &t.effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            );
        }
    }
    if let Some(na) = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()) {
        let af = format!("{f}.affinity.nodeAffinity");
        if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
            if req.node_selector_terms.is_empty() {
                errs.required(
                    format!("{af}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"),
                    "must have at least one node selector term",
                );
            }
            for (i, t) in req.node_selector_terms.iter().enumerate() {
                validate_node_selector_term(
                    t,
                    &format!("{af}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}]"),
                    errs,
                );
            }
        }
        for (i, p) in na
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .enumerate()
        {
            let pf = format!("{af}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            if !(1..=100).contains(&p.weight) {
                errs.invalid(format!("{pf}.weight"), p.weight, "must be in the range 1-100");
            }
            match &p.preference {
                Some(t) => validate_node_selector_term(t, &format!("{pf}.preference"), errs),
                None => errs.required(format!("{pf}.preference"), ""),
            }
        }
    }
    for (i, c) in spec.topology_spread_constraints.iter().enumerate() {
        let cf = format!("{f}.topologySpreadConstraints[{i}]");
        if c.max_skew <= 0 {
            errs.invalid(format!("{cf}.maxSkew"), c.max_skew, "must be greater than zero");
        }
        if c.topology_key.is_empty() {
            errs.required(format!("{cf}.topologyKey"), "can not be empty");
        }
        errs.one_of(
            format!("{cf}.whenUnsatisfiable"),
            &c.when_unsatisfiable,
            &["DoNotSchedule", "ScheduleAnyway"],
        );
    }
}

fn validate_node_selector_term(t: &corev1::NodeSelectorTerm, f: &str, errs: &mut Errors) {
    for (list, name) in [
        (&t.match_expressions, "matchExpressions"),
        (&t.match_fields, "matchFields"),
    ] {
        for (i, r) in list.iter().enumerate() {
            let rf = format!("{f}.{name}[{i}]");
            if r.key.is_empty() {
                errs.required(format!("{rf}.key"), "");
            }
            match r.operator.as_str() {
                "In" | "NotIn" if r.values.is_empty() => errs.required(
                    format!("{rf}.values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                ),
                "Exists" | "DoesNotExist" if !r.values.is_empty() => errs.forbidden(
                    format!("{rf}.values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ),
                "Gt" | "Lt" if r.values.len() != 1 || r.values[0].parse::<i64>().is_err() => errs.required(
                    format!("{rf}.values"),
                    "must be specified single integer value when `operator` is 'Lt' or 'Gt'",
                ),
                "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => {}
                other => errs.not_supported(
                    format!("{rf}.operator"),
                    other,
                    &["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"],
                ),
            }
        }
    }
}

fn validate_container(c: &corev1::Container, cf: &str, volumes: &HashSet<&str>, errs: &mut Errors) {
    if c.name.is_empty() {
        errs.required(format!("{cf}.name"), "");
    } else if !is_dns1123_label(&c.name) {
        errs.invalid(format!("{cf}.name"), &c.name, DNS1123_LABEL_MSG);
    }
    if c.image.trim().is_empty() {
        errs.required(format!("{cf}.image"), "");
    }
    errs.one_of(
        format!("{cf}.imagePullPolicy"),
        &c.image_pull_policy,
        &["Always", "IfNotPresent", "Never"],
    );
    let mut port_names = HashSet::new();
    for (j, p) in c.ports.iter().enumerate() {
        let pf = format!("{cf}.ports[{j}]");
        validate_port(p.container_port, format!("{pf}.containerPort"), errs);
        if p.host_port != 0 {
            validate_port(p.host_port, format!("{pf}.hostPort"), errs);
        }
        errs.one_of(format!("{pf}.protocol"), &p.protocol, PROTOCOLS);
        if !p.name.is_empty() {
            if !is_port_name(&p.name) {
                errs.invalid(format!("{pf}.name"), &p.name, "must be no more than 15 characters, contain only lowercase letters, digits and '-', and contain at least one letter");
            }
            if !port_names.insert(p.name.as_str()) {
                errs.duplicate(format!("{pf}.name"), &p.name);
            }
        }
    }
    for (j, e) in c.env.iter().enumerate() {
        let ef = format!("{cf}.env[{j}]");
        if e.name.is_empty() {
            errs.required(format!("{ef}.name"), "");
        }
        if let Some(from) = &e.value_from {
            if !e.value.is_empty() {
                errs.invalid(
                    format!("{ef}.valueFrom"),
                    "",
                    "may not be specified when `value` is not empty",
                );
            }
            let n = [
                from.field_ref.is_some(),
                from.config_map_key_ref.is_some(),
                from.secret_key_ref.is_some(),
                from.resource_field_ref.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if n != 1 {
                errs.invalid(
                    format!("{ef}.valueFrom"),
                    "",
                    "must specify exactly one of fieldRef, resourceFieldRef, configMapKeyRef or secretKeyRef",
                );
            }
            if let Some(fr) = &from.field_ref {
                const SUPPORTED: &[&str] = &[
                    "metadata.name",
                    "metadata.namespace",
                    "metadata.uid",
                    "spec.nodeName",
                    "spec.serviceAccountName",
                    "status.hostIP",
                    "status.podIP",
                    "status.podIPs",
                ];
                let ok = SUPPORTED.contains(&fr.field_path.as_str())
                    || fr.field_path.starts_with("metadata.labels['")
                    || fr.field_path.starts_with("metadata.annotations['");
                if !ok {
                    errs.not_supported(
                        format!("{ef}.valueFrom.fieldRef.fieldPath"),
                        &fr.field_path,
                        SUPPORTED,
                    );
                }
            }
            if let Some(r) = &from.config_map_key_ref {
                if r.key.is_empty() {
                    errs.required(format!("{ef}.valueFrom.configMapKeyRef.key"), "");
                }
            }
            if let Some(r) = &from.secret_key_ref {
                if r.key.is_empty() {
                    errs.required(format!("{ef}.valueFrom.secretKeyRef.key"), "");
                }
            }
        }
    }
    for (j, m) in c.volume_mounts.iter().enumerate() {
        let mf = format!("{cf}.volumeMounts[{j}]");
        if !volumes.contains(m.name.as_str()) {
            errs.invalid(format!("{mf}.name"), &m.name, "not found in the pod's volumes");
        }
        if m.mount_path.is_empty() {
            errs.required(format!("{mf}.mountPath"), "");
        }
    }
    if let Some(r) = &c.resources {
        for (map, name) in [(&r.limits, "limits"), (&r.requests, "requests")] {
            for (k, q) in map.iter() {
                match q.nanos() {
                    Ok(n) if n < 0 => errs.invalid(
                        format!("{cf}.resources.{name}[{k}]"),
                        &q.string,
                        "must be greater than or equal to 0",
                    ),
                    Ok(_) => {}
                    Err(e) => errs.invalid(format!("{cf}.resources.{name}[{k}]"), &q.string, e.to_string()),
                }
            }
        }
        for (k, req) in &r.requests {
            if let (Some(lim), Ok(rq)) = (r.limits.get(k), req.nanos()) {
                if lim.nanos().is_ok_and(|l| rq > l) {
                    errs.invalid(
                        format!("{cf}.resources.requests[{k}]"),
                        &req.string,
                        format!("must be less than or equal to {k} limit of {}", lim.string),
                    );
                }
            }
        }
    }
    for (probe, name) in [
        (&c.liveness_probe, "livenessProbe"),
        (&c.readiness_probe, "readinessProbe"),
        (&c.startup_probe, "startupProbe"),
    ] {
        if let Some(p) = probe {
            let pf = format!("{cf}.{name}");
            let n = [p.exec.is_some(), p.http_get.is_some(), p.tcp_socket.is_some()]
                .iter()
                .filter(|x| **x)
                .count();
            if n != 1 {
                errs.required(
                    pf.clone(),
                    "must specify exactly one handler: exec, httpGet or tcpSocket",
                );
            }
            for (v, field) in [
                (p.period_seconds, "periodSeconds"),
                (p.timeout_seconds, "timeoutSeconds"),
                (p.success_threshold, "successThreshold"),
                (p.failure_threshold, "failureThreshold"),
            ] {
                if v < 1 {
                    errs.invalid(format!("{pf}.{field}"), v, "must be greater than or equal to 1");
                }
            }
            if p.initial_delay_seconds < 0 {
                errs.invalid(
                    format!("{pf}.initialDelaySeconds"),
                    p.initial_delay_seconds,
                    "must be greater than or equal to 0",
                );
            }
            if name != "readinessProbe" && p.success_threshold != 1 {
                errs.invalid(format!("{pf}.successThreshold"), p.success_threshold, "must be 1");
            }
            if let Some(h) = &p.http_get {
                validate_named_port(h.port.as_ref(), &format!("{pf}.httpGet.port"), errs);
                errs.one_of(format!("{pf}.httpGet.scheme"), &h.scheme, &["HTTP", "HTTPS"]);
            }
            if let Some(t) = &p.tcp_socket {
                validate_named_port(t.port.as_ref(), &format!("{pf}.tcpSocket.port"), errs);
            }
            if let Some(e) = &p.exec {
                if e.command.is_empty() {
                    errs.required(format!("{pf}.exec.command"), "");
                }
            }
        }
    }
}

fn validate_named_port(port: Option<&crate::intstr::IntOrString>, f: &str, errs: &mut Errors) {
    match port {
        None => errs.required(f.to_string(), ""),
        Some(p) => match p.as_str() {
            Some(name) if !is_port_name(name) => errs.invalid(
                f.to_string(),
                name,
                "must contain only lowercase letters, digits and '-', at most 15 characters",
            ),
            Some(_) => {}
            None => validate_port(p.int_val, f.to_string(), errs),
        },
    }
}

fn validate_label_selector(
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
                "empty selector is invalid for deployment and replicaset",
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

fn validate_template(
    selector: Option<Selector>,
    template: Option<&corev1::PodTemplateSpec>,
    f: &str,
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
        if s.restart_policy != "Always" {
            errs.not_supported(
                format!("{f}.template.spec.restartPolicy"),
                &s.restart_policy,
                &["Always"],
            );
        }
    }
}

impl Validate for corev1::Pod {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        validate_pod_spec(self.spec.as_ref(), "spec", &mut e);
        e.0
    }

    /// As in Kubernetes, a pod's spec is fixed once created except for
    /// container images, activeDeadlineSeconds and added tolerations; the
    /// node is set only by binding.
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut e = Errors::default();
        let (Some(new), Some(old)) = (&self.spec, &old.spec) else {
            return e.0;
        };
        let mut comparable = new.clone();
        for (c, o) in comparable.containers.iter_mut().zip(&old.containers) {
            c.image = o.image.clone();
        }
        for (c, o) in comparable.init_containers.iter_mut().zip(&old.init_containers) {
            c.image = o.image.clone();
        }
        comparable.active_deadline_seconds = old.active_deadline_seconds;
        if new.tolerations.len() >= old.tolerations.len()
            && new.tolerations[..old.tolerations.len()] == old.tolerations[..]
        {
            comparable.tolerations = old.tolerations.clone();
        }
        if comparable != *old {
            if new.node_name != old.node_name {
                e.forbidden(
                    "spec.nodeName",
                    "may not be changed by an update; pods are bound to nodes by the scheduler (Bind)",
                );
            } else {
                e.forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds` or `spec.tolerations` (only additions to existing tolerations); delete and recreate the pod, or change its Deployment");
            }
        }
        e.0
    }
}

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

fn validate_data_keys<'a>(keys: impl Iterator<Item = &'a String>, f: &str, errs: &mut Errors) {
    for k in keys {
        let ok = !k.is_empty()
            && k.len() <= 253
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            errs.invalid(
                format!("{f}[{k}]"),
                k,
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            );
        }
    }
}

impl Validate for corev1::ConfigMap {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        validate_data_keys(self.data.keys(), "data", &mut e);
        validate_data_keys(self.binary_data.keys(), "binaryData", &mut e);
        for k in self.data.keys() {
            if self.binary_data.contains_key(k) {
                e.invalid(format!("data[{k}]"), k, "duplicate of key present in binaryData");
            }
        }
        e.0
    }
}

impl Validate for corev1::Secret {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        validate_data_keys(self.data.keys(), "data", &mut e);
        validate_data_keys(self.string_data.keys(), "stringData", &mut e);
        e.0
    }
}

/// The spec fields Deployments and ReplicaSets share, so that one function
/// validates them for both kinds.
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

workload_spec!(apps::v1::DeploymentSpec, apps::v1::ReplicaSetSpec);

/// A Deployment's or ReplicaSet's selector cannot change: it would orphan
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

/// What Deployments and ReplicaSets share: metadata, then a spec with
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
    validate_template(sel, spec.template(), "spec", e);
    Some(spec)
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
            e.one_of(
                "spec.strategy.type".into(),
                &s.r#type,
                &["Recreate", "RollingUpdate"],
            );
            if s.r#type == "Recreate" && s.rolling_update.is_some() {
                e.forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                );
            }
            if let Some(ru) = &s.rolling_update {
                let replicas = spec.replicas.unwrap_or(1);
                let surge = ru
                    .max_surge
                    .as_ref()
                    .map(|v| (v, v.scaled_value(replicas.max(1) * 100, true)));
                let unavail = ru
                    .max_unavailable
                    .as_ref()
                    .map(|v| (v, v.scaled_value(replicas.max(1) * 100, false)));
                for (val, field) in [(surge.clone(), "maxSurge"), (unavail.clone(), "maxUnavailable")] {
                    if let Some((v, r)) = val {
                        match r {
                            Err(msg) => {
                                e.invalid(format!("spec.strategy.rollingUpdate.{field}"), v.to_string(), msg)
                            }
                            Ok(n) if n < 0 => e.invalid(
                                format!("spec.strategy.rollingUpdate.{field}"),
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
                                e.invalid(
                                    format!("spec.strategy.rollingUpdate.{field}"),
                                    s,
                                    "must not be greater than 100%",
                                );
                            }
                        }
                    }
                }
                let zero = |v: &Option<(&crate::intstr::IntOrString, Result<i32, String>)>| {
                    v.as_ref().is_some_and(|(_, r)| r.as_ref().is_ok_and(|n| *n == 0))
                };
                if zero(&surge) && zero(&unavail) {
                    e.invalid(
                        "spec.strategy.rollingUpdate.maxUnavailable",
                        0,
                        "may not be 0 when `maxSurge` is 0",
                    );
                }
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

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn validate_rules(rules: &[rbac::v1::PolicyRule], namespaced: bool, e: &mut Errors) {
    for (i, r) in rules.iter().enumerate() {
        let f = format!("rules[{i}]");
        if r.verbs.is_empty() {
            e.required(format!("{f}.verbs"), "verbs must contain at least one value");
        }
        if !r.non_resource_urls.is_empty() {
            if namespaced {
                e.invalid(
                    format!("{f}.nonResourceURLs"),
                    &r.non_resource_urls,
                    "namespaced rules cannot apply to non-resource URLs",
                );
            }
            if !r.api_groups.is_empty() || !r.resources.is_empty() {
                e.invalid(
                    format!("{f}.nonResourceURLs"),
                    &r.non_resource_urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                );
            }
            continue;
        }
        if r.api_groups.is_empty() {
            e.required(
                format!("{f}.apiGroups"),
                "resource rules must supply at least one api group",
            );
        }
        if r.resources.is_empty() {
            e.required(
                format!("{f}.resources"),
                "resource rules must supply at least one resource",
            );
        }
    }
}

fn validate_binding(
    subjects: &[rbac::v1::Subject],
    role_ref: Option<&rbac::v1::RoleRef>,
    allowed_ref_kinds: &[&'static str],
    namespaced: bool,
    e: &mut Errors,
) {
    match role_ref {
        None => e.required("roleRef", "a binding must name the role it grants"),
        Some(r) => {
            if r.api_group != RBAC_GROUP {
                e.not_supported("roleRef.apiGroup", &r.api_group, &[RBAC_GROUP]);
            }
            e.one_of("roleRef.kind".into(), &r.kind, allowed_ref_kinds);
            if r.name.is_empty() {
                e.required("roleRef.name", "");
            }
        }
    }
    for (i, s) in subjects.iter().enumerate() {
        let f = format!("subjects[{i}]");
        if s.name.is_empty() {
            e.required(format!("{f}.name"), "");
        }
        match s.kind.as_str() {
            "ServiceAccount" => {
                if !s.api_group.is_empty() {
                    e.not_supported(format!("{f}.apiGroup"), &s.api_group, &[""]);
                }
                if !namespaced && s.namespace.is_empty() {
                    e.required(format!("{f}.namespace"), "");
                }
            }
            "User" | "Group" => {
                if s.api_group != RBAC_GROUP {
                    e.not_supported(format!("{f}.apiGroup"), &s.api_group, &[RBAC_GROUP]);
                }
            }
            other => e.not_supported(format!("{f}.kind"), other, &["ServiceAccount", "User", "Group"]),
        }
    }
}

fn role_ref_unchanged(new: Option<&rbac::v1::RoleRef>, old: Option<&rbac::v1::RoleRef>) -> Vec<FieldError> {
    let mut e = Errors::default();
    if new != old {
        e.invalid("roleRef", new, "cannot change roleRef");
    }
    e.0
}

impl Validate for rbac::v1::Role {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Path, &mut e);
        validate_rules(&self.rules, true, &mut e);
        e.0
    }
}

impl Validate for rbac::v1::ClusterRole {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Path, &mut e);
        validate_rules(&self.rules, false, &mut e);
        e.0
    }
}

impl Validate for rbac::v1::RoleBinding {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Path, &mut e);
        validate_binding(
            &self.subjects,
            self.role_ref.as_ref(),
            &["Role", "ClusterRole"],
            true,
            &mut e,
        );
        e.0
    }
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        role_ref_unchanged(self.role_ref.as_ref(), old.role_ref.as_ref())
    }
}

impl Validate for rbac::v1::ClusterRoleBinding {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Path, &mut e);
        validate_binding(
            &self.subjects,
            self.role_ref.as_ref(),
            &["ClusterRole"],
            false,
            &mut e,
        );
        e.0
    }
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        role_ref_unchanged(self.role_ref.as_ref(), old.role_ref.as_ref())
    }
}

/// Joins field errors the way the apiserver reports them.
pub fn summarize(kind: &str, name: &str, errors: &[FieldError]) -> String {
    let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    format!("{kind} {name:?} is invalid: {}", list.join(", "))
}

#[cfg(test)]
mod rbac_tests {
    use super::*;
    use crate::codec::decode_manifests;
    use crate::defaults::Defaulting;

    const MANIFEST: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:metrics-reader
rules:
- apiGroups: [""]
  resources: ["pods", "pods/log"]
  resourceNames: ["web"]
  verbs: ["get", "list"]
- nonResourceURLs: ["/metrics"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: read-pods
  namespace: default
subjects:
- kind: User
  name: jane
  apiGroup: rbac.authorization.k8s.io
- kind: Group
  name: devs
- kind: ServiceAccount
  name: builder
roleRef:
  kind: ClusterRole
  name: system:metrics-reader
  apiGroup: rbac.authorization.k8s.io
"#;

    #[test]
    fn kubernetes_rbac_manifests_decode_and_validate() {
        let objs = decode_manifests(MANIFEST, "rbac.yaml").unwrap();
        let role: rbac::v1::ClusterRole = objs[0].decode().unwrap();
        assert_eq!(role.rules[0].resource_names, ["web"]);
        assert_eq!(role.rules[1].non_resource_urls, ["/metrics"]);
        assert!(role.validate().is_empty(), "{:?}", role.validate());
        let mut rb: rbac::v1::RoleBinding = objs[1].decode().unwrap();
        rb.apply_defaults();
        assert_eq!(rb.subjects[1].api_group, "rbac.authorization.k8s.io");
        assert!(rb.validate().is_empty(), "{:?}", rb.validate());
    }

    #[test]
    fn bad_rbac_objects_name_the_field() {
        let mut role = rbac::v1::Role::default();
        role.metadata.get_or_insert_with(Default::default).name = "r".into();
        role.rules = vec![rbac::v1::PolicyRule {
            non_resource_urls: vec!["/healthz".into()],
            ..Default::default()
        }];
        let fields: Vec<String> = role.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["rules[0].verbs", "rules[0].nonResourceURLs"]);

        let mut crb = rbac::v1::ClusterRoleBinding::default();
        crb.metadata.get_or_insert_with(Default::default).name = "b".into();
        crb.role_ref = Some(rbac::v1::RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "x".into(),
        });
        crb.subjects = vec![rbac::v1::Subject {
            kind: "ServiceAccount".into(),
            name: "sa".into(),
            ..Default::default()
        }];
        let fields: Vec<String> = crb.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["roleRef.kind", "subjects[0].namespace"]);

        let mut changed = crb.clone();
        changed.role_ref.as_mut().unwrap().name = "y".into();
        assert_eq!(changed.validate_update(&crb)[0].field, "roleRef");
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
