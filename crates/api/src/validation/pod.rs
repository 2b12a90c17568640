//! Pods: the pod spec (volumes, scheduling constraints, containers, probes),
//! which workloads' templates share.

use super::meta::{
    is_dns1123_label, is_dns1123_subdomain, is_port_name, validate_labels, validate_meta,
    validate_named_port, validate_port, NameRule, DNS1123_LABEL_MSG, DNS1123_SUBDOMAIN_MSG, PROTOCOLS,
};
use super::{Errors, FieldError, Validate};
use crate::core::v1 as corev1;
use std::collections::HashSet;

pub fn validate_pod_spec(spec: Option<&corev1::PodSpec>, f: &str, errs: &mut Errors) {
    let Some(spec) = spec else {
        errs.required(format!("{f}.containers"), "a pod needs at least one container");
        return;
    };
    if let Some(os) = &spec.os {
        match os.name.as_str() {
            "linux" => {}
            "windows" => errs.forbidden(
                format!("{f}.os.name"),
                "rkube nodes run Linux; Windows pods cannot run here",
            ),
            other => errs.not_supported(format!("{f}.os.name"), other, &["linux", "windows"]),
        }
    }
    if let Some(sc) = &spec.security_context {
        let sf = format!("{f}.securityContext");
        validate_seccomp(sc.seccomp_profile.as_ref(), &sf, errs);
        validate_app_armor(sc.app_armor_profile.as_ref(), &sf, errs);
        let mut seen = HashSet::new();
        for (i, s) in sc.sysctls.iter().enumerate() {
            let valid = !s.name.is_empty()
                && s.name.len() <= 253
                && s.name.split(['.', '/']).all(|p| {
                    !p.is_empty()
                        && p.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
                });
            if !valid {
                errs.invalid(
                    format!("{sf}.sysctls[{i}].name"),
                    &s.name,
                    "must have at most 253 characters and match the sysctl name format (e.g. net.ipv4.tcp_syncookies)",
                );
            }
            if !seen.insert(s.name.as_str()) {
                errs.duplicate(format!("{sf}.sysctls[{i}].name"), &s.name);
            }
        }
        if let Some(p) = sc.fs_group_change_policy.as_deref() {
            errs.one_of(
                format!("{sf}.fsGroupChangePolicy"),
                p,
                &["OnRootMismatch", "Always"],
            );
        }
    }
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
            v.persistent_volume_claim.is_some(),
            v.projected.is_some(),
            v.downward_api.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if sources != 1 {
            errs.required(
                vf.clone(),
                "exactly one of emptyDir, hostPath, configMap, secret, persistentVolumeClaim, projected or downwardAPI must be specified",
            );
        }
        super::volume::validate_projected_sources(v, &vf, errs);
        if let Some(c) = &v.persistent_volume_claim {
            if c.claim_name.is_empty() {
                errs.required(format!("{vf}.persistentVolumeClaim.claimName"), "");
            }
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
    super::pod_dns::validate_pod_dns(spec, f, errs);
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
    if let Some(a) = &spec.affinity {
        if let Some(pa) = &a.pod_affinity {
            validate_pod_affinity_terms(
                &pa.required_during_scheduling_ignored_during_execution,
                &pa.preferred_during_scheduling_ignored_during_execution,
                &format!("{f}.affinity.podAffinity"),
                errs,
            );
        }
        if let Some(pa) = &a.pod_anti_affinity {
            validate_pod_affinity_terms(
                &pa.required_during_scheduling_ignored_during_execution,
                &pa.preferred_during_scheduling_ignored_during_execution,
                &format!("{f}.affinity.podAntiAffinity"),
                errs,
            );
        }
    }
    if let Some(p) = &spec.preemption_policy {
        errs.one_of(
            format!("{f}.preemptionPolicy"),
            p,
            &["PreemptLowerPriority", "Never"],
        );
    }
    if !spec.node_name.is_empty() && !spec.scheduling_gates.is_empty() {
        errs.forbidden(
            format!("{f}.nodeName"),
            "cannot be set until all schedulingGates have been cleared",
        );
    }
    let mut gates = HashSet::new();
    for (i, g) in spec.scheduling_gates.iter().enumerate() {
        let gf = format!("{f}.schedulingGates[{i}].name");
        if g.name.is_empty() {
            errs.required(gf, "a scheduling gate needs a name");
        } else if !gates.insert(g.name.as_str()) {
            errs.duplicate(gf, &g.name);
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

/// Kubernetes' rules for podAffinity and podAntiAffinity terms: a topology
/// key, a parsable selector, namespaces that are names, weights 1..100.
fn validate_pod_affinity_terms(
    required: &[corev1::PodAffinityTerm],
    preferred: &[corev1::WeightedPodAffinityTerm],
    f: &str,
    errs: &mut Errors,
) {
    for (i, t) in required.iter().enumerate() {
        validate_pod_affinity_term(
            t,
            &format!("{f}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"),
            errs,
        );
    }
    for (i, w) in preferred.iter().enumerate() {
        let wf = format!("{f}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
        if !(1..=100).contains(&w.weight) {
            errs.invalid(format!("{wf}.weight"), w.weight, "must be in the range 1-100");
        }
        match &w.pod_affinity_term {
            Some(t) => validate_pod_affinity_term(t, &format!("{wf}.podAffinityTerm"), errs),
            None => errs.required(format!("{wf}.podAffinityTerm"), ""),
        }
    }
}

fn validate_pod_affinity_term(t: &corev1::PodAffinityTerm, f: &str, errs: &mut Errors) {
    if t.topology_key.is_empty() {
        errs.required(format!("{f}.topologyKey"), "can not be empty");
    }
    for (sel, name) in [
        (&t.label_selector, "labelSelector"),
        (&t.namespace_selector, "namespaceSelector"),
    ] {
        if let Some(Err(e)) = sel.as_ref().map(crate::selector::Selector::from_label_selector) {
            errs.invalid(format!("{f}.{name}"), "", e.to_string());
        }
    }
    for (i, ns) in t.namespaces.iter().enumerate() {
        if !is_dns1123_label(ns) {
            errs.invalid(format!("{f}.namespaces[{i}]"), ns, DNS1123_LABEL_MSG);
        }
    }
    for (i, k) in t.match_label_keys.iter().enumerate() {
        if t.mismatch_label_keys.contains(k) {
            errs.invalid(
                format!("{f}.matchLabelKeys[{i}]"),
                k,
                "exists in both matchLabelKeys and mismatchLabelKeys",
            );
        }
    }
    if t.label_selector.is_none() && !(t.match_label_keys.is_empty() && t.mismatch_label_keys.is_empty()) {
        errs.forbidden(
            format!("{f}.matchLabelKeys"),
            "must not be specified when labelSelector is not set",
        );
    }
}

pub(super) fn validate_node_selector_term(t: &corev1::NodeSelectorTerm, f: &str, errs: &mut Errors) {
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
    if let Some(sc) = &c.security_context {
        let sf = format!("{cf}.securityContext");
        validate_seccomp(sc.seccomp_profile.as_ref(), &sf, errs);
        validate_app_armor(sc.app_armor_profile.as_ref(), &sf, errs);
        if let Some(pm) = sc.proc_mount.as_deref().filter(|p| *p != "Default") {
            if pm == "Unmasked" {
                errs.forbidden(
                    format!("{sf}.procMount"),
                    "Unmasked is not supported: it needs user namespaces (hostUsers: false), which rkube does not run",
                );
            } else {
                errs.not_supported(format!("{sf}.procMount"), pm, &["Default", "Unmasked"]);
            }
        }
        if sc.privileged == Some(true) && sc.allow_privilege_escalation == Some(false) {
            errs.invalid(
                format!("{sf}.allowPrivilegeEscalation"),
                false,
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            );
        }
    }
    if let Some(l) = &c.lifecycle {
        for (hook, name) in [(&l.post_start, "postStart"), (&l.pre_stop, "preStop")] {
            let Some(h) = hook else { continue };
            let hf = format!("{cf}.lifecycle.{name}");
            let n = [
                h.exec.is_some(),
                h.http_get.is_some(),
                h.tcp_socket.is_some(),
                h.sleep.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if n != 1 {
                errs.required(
                    hf.clone(),
                    "must specify exactly one handler: exec, httpGet or sleep",
                );
            }
            if let Some(e) = &h.exec {
                if e.command.is_empty() {
                    errs.required(format!("{hf}.exec.command"), "");
                }
            }
            if let Some(g) = &h.http_get {
                validate_named_port(g.port.as_ref(), &format!("{hf}.httpGet.port"), errs);
                errs.one_of(format!("{hf}.httpGet.scheme"), &g.scheme, &["HTTP", "HTTPS"]);
            }
            if let Some(sl) = &h.sleep {
                if sl.seconds <= 0 {
                    errs.invalid(
                        format!("{hf}.sleep.seconds"),
                        sl.seconds,
                        "must be greater than 0",
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
            let n = [
                p.exec.is_some(),
                p.http_get.is_some(),
                p.tcp_socket.is_some(),
                p.grpc.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if n != 1 {
                errs.required(
                    pf.clone(),
                    "must specify exactly one handler: exec, httpGet, tcpSocket or grpc",
                );
            }
            if let Some(g) = &p.grpc {
                if !(1..=65535).contains(&g.port) {
                    errs.invalid(
                        format!("{pf}.grpc.port"),
                        g.port,
                        "must be between 1 and 65535, inclusive",
                    );
                }
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
        // Scheduling gates may be removed, never added (Kubernetes' rule),
        // and a pod is bound only once they are all gone.
        for (i, g) in new.scheduling_gates.iter().enumerate() {
            if !old.scheduling_gates.contains(g) {
                e.forbidden(
                    format!("spec.schedulingGates[{i}]"),
                    format!(
                        "only deletion is allowed, but found new scheduling gate '{}'",
                        g.name
                    ),
                );
            }
        }
        comparable.scheduling_gates = old.scheduling_gates.clone();
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
                e.forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations) or `spec.schedulingGates` (only removals); delete and recreate the pod, or change its Deployment");
            }
        }
        e.0
    }
}

/// `seccompProfile`: RuntimeDefault and Unconfined; Localhost profiles are refused (rkube
/// ships no way to place profiles on nodes).
fn validate_seccomp(p: Option<&corev1::SeccompProfile>, f: &str, errs: &mut Errors) {
    let Some(p) = p else { return };
    match p.r#type.as_str() {
        "RuntimeDefault" | "Unconfined" => {}
        "Localhost" => errs.forbidden(
            format!("{f}.seccompProfile.type"),
            "Localhost profiles are not supported by rkube; use RuntimeDefault",
        ),
        other => errs.not_supported(
            format!("{f}.seccompProfile.type"),
            other,
            &["RuntimeDefault", "Unconfined", "Localhost"],
        ),
    }
}

/// `appArmorProfile`: only Unconfined, since rkube loads no AppArmor profiles.
fn validate_app_armor(p: Option<&corev1::AppArmorProfile>, f: &str, errs: &mut Errors) {
    let Some(p) = p else { return };
    match p.r#type.as_str() {
        "Unconfined" => {}
        "RuntimeDefault" | "Localhost" => errs.forbidden(
            format!("{f}.appArmorProfile.type"),
            "rkube does not apply AppArmor profiles; use Unconfined or leave appArmorProfile out",
        ),
        other => errs.not_supported(
            format!("{f}.appArmorProfile.type"),
            other,
            &["RuntimeDefault", "Unconfined", "Localhost"],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> corev1::Pod {
        use crate::defaults::Defaulting as _;
        let mut p: corev1::Pod = serde_yaml::from_str(yaml).unwrap();
        p.apply_defaults();
        p
    }

    fn errors(v: &corev1::Pod) -> Vec<String> {
        v.validate().iter().map(|e| e.to_string()).collect()
    }

    const WEB: &str = "metadata: {name: web}\nspec:\n  containers: [{name: web, image: nginx}]\n";

    #[test]
    fn pod_affinity_terms_need_a_topology_key_and_weights_in_range() {
        let p = pod(&format!(
            "{WEB}  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector: {{matchLabels: {{app: web}}}}\n      preferredDuringSchedulingIgnoredDuringExecution:\n      - weight: 101\n        podAffinityTerm: {{topologyKey: kubernetes.io/hostname}}\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector: {{matchLabels: {{app: db}}}}\n        topologyKey: topology.kubernetes.io/zone\n        namespaces: [Bad_NS]\n"
        ));
        assert_eq!(
            errors(&p),
            vec![
                "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].namespaces[0]: Invalid value: \"Bad_NS\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')".to_string(),
                "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Required value: can not be empty".to_string(),
                "spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: Invalid value: 101: must be in the range 1-100".to_string(),
            ]
        );
    }

    #[test]
    fn scheduling_gates_may_be_removed_but_never_added() {
        let gated = pod(&format!(
            "{WEB}  schedulingGates: [{{name: example.com/quota}}, {{name: example.com/ready}}]\n"
        ));
        assert_eq!(errors(&gated), Vec::<String>::new());
        let mut one_less = gated.clone();
        one_less.spec.as_mut().unwrap().scheduling_gates.remove(0);
        assert_eq!(one_less.validate_update(&gated), vec![]);
        let added = one_less.validate_update(&pod(WEB));
        let added: Vec<String> = added.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            added,
            vec!["spec.schedulingGates[0]: Forbidden: only deletion is allowed, but found new scheduling gate 'example.com/ready'"]
        );
        let mut bound = gated.clone();
        bound.spec.as_mut().unwrap().node_name = "n1".into();
        assert_eq!(
            errors(&bound),
            vec!["spec.nodeName: Forbidden: cannot be set until all schedulingGates have been cleared"]
        );
    }
}
