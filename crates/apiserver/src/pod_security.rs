//! Pod Security admission: the Pod Security Standards (privileged, baseline,
//! restricted) of Kubernetes 1.32, chosen per namespace by the labels
//! `pod-security.kubernetes.io/{enforce,audit,warn}[-version]`. `enforce`
//! refuses pods; `warn` answers with warnings and `audit` annotates the audit
//! event, for pods and for the pod templates of workloads (which are never
//! refused, as in Kubernetes: the pods they create are). The checks, their
//! names, order and wording follow Kubernetes' pod-security-admission policy
//! package so that a refusal reads the same as on any cluster.
//!
//! Not here: exemptions (Kubernetes takes them from an admission
//! configuration file rkube does not have), and the checks newer than 1.32.

use crate::admission;
use crate::error::{ApiError, ApiResult};
use crate::keys::storage_key;
use crate::State;
use rkube_api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use rkube_api::batch::v1::{CronJob, Job};
use rkube_api::core::v1::{Container, Namespace, Pod, PodSpec, PodTemplateSpec};
use rkube_api::meta::v1::ObjectMeta;
use rkube_api::validation::{ErrorType, FieldError};
use rkube_api::Resource;
use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

/// The newest Kubernetes minor whose standards rkube implements: a label
/// naming a later version gets these checks.
const NEWEST_MINOR: u32 = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    fn parse(s: &str) -> Result<Level, &'static str> {
        match s {
            "privileged" => Ok(Level::Privileged),
            "baseline" => Ok(Level::Baseline),
            "restricted" => Ok(Level::Restricted),
            _ => Err("must be one of privileged, baseline, restricted"),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        })
    }
}

/// `latest` or `v1.N`: which release's standards a label asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Latest,
    V1(u32),
}

impl Version {
    fn parse(s: &str) -> Result<Version, &'static str> {
        const WHAT: &str = r#"must be "latest" or "v1.x""#;
        if s == "latest" {
            return Ok(Version::Latest);
        }
        let minor = s.strip_prefix("v1.").ok_or(WHAT)?;
        // Kubernetes' pattern: `0` or a number without leading zeros
        if minor.is_empty() || (minor.len() > 1 && minor.starts_with('0')) {
            return Err(WHAT);
        }
        minor.parse().map(Version::V1).map_err(|_| WHAT)
    }

    /// Whether a check introduced in 1.`minor` applies at this version.
    fn has(self, minor: u32) -> bool {
        match self {
            Version::Latest => true,
            Version::V1(m) => m >= minor,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Latest => f.write_str("latest"),
            Version::V1(m) => write!(f, "v1.{m}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelVersion {
    pub level: Level,
    pub version: Version,
}

impl fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.level, self.version)
    }
}

/// A namespace's three modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub enforce: LevelVersion,
    pub audit: LevelVersion,
    pub warn: LevelVersion,
}

const PRIVILEGED: LevelVersion = LevelVersion {
    level: Level::Privileged,
    version: Version::Latest,
};

/// The policy a namespace's labels give, and what is wrong with them. A bad
/// `enforce` level enforces `restricted` (failing closed); a bad `audit` or
/// `warn` level is `privileged` (failing open), as in Kubernetes. Without a
/// `warn` label, warnings follow a stricter `enforce`.
pub fn policy(labels: &BTreeMap<String, String>) -> (Policy, Vec<FieldError>) {
    let mut p = Policy {
        enforce: PRIVILEGED,
        audit: PRIVILEGED,
        warn: PRIVILEGED,
    };
    let mut errors = Vec::new();
    let mut invalid = |label: &str, value: &str, detail: &str| {
        errors.push(FieldError {
            field: format!("metadata.labels[{LABEL_PREFIX}{label}]"),
            kind: ErrorType::Invalid(format!("{value:?}")),
            detail: detail.into(),
        })
    };
    let label = |name: &str| labels.get(&format!("{LABEL_PREFIX}{name}"));
    let mut enforce_set = false;
    for (mode, lv, fallback) in [
        ("enforce", &mut p.enforce, Level::Restricted),
        ("audit", &mut p.audit, Level::Privileged),
        ("warn", &mut p.warn, Level::Privileged),
    ] {
        if let Some(v) = label(mode) {
            match Level::parse(v) {
                Ok(l) => {
                    lv.level = l;
                    enforce_set |= mode == "enforce";
                }
                Err(e) => {
                    lv.level = fallback;
                    invalid(mode, v, e);
                }
            }
        }
        let version_label = format!("{mode}-version");
        if let Some(v) = label(&version_label) {
            match Version::parse(v) {
                Ok(version) => lv.version = version,
                Err(e) => invalid(&version_label, v, e),
            }
        }
    }
    if label("warn").is_none() && enforce_set && p.enforce.level > p.warn.level {
        p.warn.level = p.enforce.level;
        if label("warn-version").is_none() {
            p.warn.version = p.enforce.version;
        }
    }
    (p, errors)
}

/// One failed check: its reason and what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub reason: String,
    pub detail: String,
}

/// `reason (detail), reason (detail)`: how Kubernetes lists violations.
pub fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            if v.detail.is_empty() {
                v.reason.clone()
            } else {
                format!("{} ({})", v.reason, v.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

type CheckFn = fn(&ObjectMeta, &PodSpec, Version) -> Option<Violation>;

struct Check {
    id: &'static str,
    level: Level,
    /// The minor release that introduced it.
    since: u32,
    /// Baseline checks this one replaces at the restricted level.
    overrides: &'static [&'static str],
    check: CheckFn,
}

/// Kubernetes' order: baseline checks, then restricted ones, each sorted by id.
const CHECKS: &[Check] = &[
    baseline("appArmorProfile", app_armor_profile),
    baseline("capabilities_baseline", capabilities_baseline),
    baseline("hostNamespaces", host_namespaces),
    baseline("hostPathVolumes", host_path_volumes),
    baseline("hostPorts", host_ports),
    baseline("privileged", privileged),
    baseline("procMount", proc_mount),
    baseline("seLinuxOptions", se_linux_options),
    baseline("seccompProfile_baseline", seccomp_baseline),
    baseline("sysctls", sysctls),
    baseline("windowsHostProcess", windows_host_process),
    restricted("allowPrivilegeEscalation", 8, &[], allow_privilege_escalation),
    restricted(
        "capabilities_restricted",
        22,
        &["capabilities_baseline"],
        capabilities_restricted,
    ),
    restricted("restrictedVolumes", 0, &["hostPathVolumes"], restricted_volumes),
    restricted("runAsNonRoot", 0, &[], run_as_non_root),
    restricted("runAsUser", 23, &[], run_as_user),
    restricted(
        "seccompProfile_restricted",
        19,
        &["seccompProfile_baseline"],
        seccomp_restricted,
    ),
];

const fn baseline(id: &'static str, check: CheckFn) -> Check {
    Check {
        id,
        level: Level::Baseline,
        since: 0,
        overrides: &[],
        check,
    }
}

const fn restricted(
    id: &'static str,
    since: u32,
    overrides: &'static [&'static str],
    check: CheckFn,
) -> Check {
    Check {
        id,
        level: Level::Restricted,
        since,
        overrides,
        check,
    }
}

/// What `meta` and `spec` break at `lv`, in Kubernetes' order.
pub fn evaluate(lv: LevelVersion, meta: &ObjectMeta, spec: &PodSpec) -> Vec<Violation> {
    if lv.level == Level::Privileged {
        return Vec::new();
    }
    let version = match lv.version {
        Version::V1(m) if m < NEWEST_MINOR => lv.version,
        _ => Version::V1(NEWEST_MINOR),
    };
    let applies = |c: &Check| c.level <= lv.level && version.has(c.since);
    let overridden: BTreeSet<&str> = CHECKS
        .iter()
        .filter(|c| applies(c))
        .flat_map(|c| c.overrides.iter().copied())
        .collect();
    CHECKS
        .iter()
        .filter(|c| applies(c) && !overridden.contains(c.id))
        .filter_map(|c| (c.check)(meta, spec, version))
        .collect()
}

fn containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers.iter().chain(&spec.containers)
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// `"a", "b"`, as Kubernetes quotes names in its details.
fn join_quote<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let items: Vec<String> = items.into_iter().map(|s| s.as_ref().to_string()).collect();
    if items.is_empty() {
        return String::new();
    }
    format!("\"{}\"", items.join("\", \""))
}

/// `container "a"` or `containers "a", "b"`.
fn containers_phrase(names: &[String]) -> String {
    format!(
        "{} {}",
        plural(names.len(), "container", "containers"),
        join_quote(names)
    )
}

fn violation(reason: &str, detail: String) -> Option<Violation> {
    Some(Violation {
        reason: reason.into(),
        detail,
    })
}

/// Who set a forbidden value: `pod`, `containers "a", "b"`, joined by `and`.
fn setters(pod: bool, containers: &[String]) -> Vec<String> {
    let mut s = Vec::new();
    if pod {
        s.push("pod".to_string());
    }
    if !containers.is_empty() {
        s.push(containers_phrase(containers));
    }
    s
}

fn windows(spec: &PodSpec) -> bool {
    spec.os.as_ref().is_some_and(|os| os.name == "windows")
}

fn app_armor_profile(meta: &ObjectMeta, spec: &PodSpec, _: Version) -> Option<Violation> {
    let allowed = |t: &str| matches!(t, "RuntimeDefault" | "Localhost");
    let mut bad_values = BTreeSet::new();
    let pod_type = spec
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.as_ref())
        .map(|p| p.r#type.as_str());
    let pod_bad = pod_type.is_some_and(|t| !allowed(t));
    if let Some(t) = pod_type.filter(|_| pod_bad) {
        bad_values.insert(t.to_string());
    }
    let mut bad = Vec::new();
    for c in containers(spec) {
        if let Some(p) = c
            .security_context
            .as_ref()
            .and_then(|s| s.app_armor_profile.as_ref())
        {
            if !allowed(&p.r#type) {
                bad.push(c.name.clone());
                bad_values.insert(p.r#type.clone());
            }
        }
    }
    let mut who = setters(pod_bad, &bad);
    let mut values: Vec<String> = bad_values.into_iter().collect();
    let annotations: Vec<String> = meta
        .annotations
        .iter()
        .filter(|(k, v)| {
            k.starts_with("container.apparmor.security.beta.kubernetes.io/")
                && !(v.is_empty() || *v == "runtime/default" || v.starts_with("localhost/"))
        })
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    if !annotations.is_empty() {
        who.push(plural(annotations.len(), "annotation", "annotations").into());
        values.extend(annotations);
    }
    if who.is_empty() {
        return None;
    }
    violation(
        plural(
            values.len(),
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            who.join(" and "),
            join_quote(&values)
        ),
    )
}

const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn capabilities_baseline(_: &ObjectMeta, spec: &PodSpec, _: Version) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut caps = BTreeSet::new();
    for c in containers(spec) {
        let Some(cap) = c.security_context.as_ref().and_then(|s| s.capabilities.as_ref()) else {
            continue;
        };
        let extra: Vec<&String> = cap
            .add
            .iter()
            .filter(|a| !BASELINE_CAPABILITIES.contains(&a.as_str()))
            .collect();
        if !extra.is_empty() {
            bad.push(c.name.clone());
            caps.extend(extra);
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad),
            join_quote(caps)
        ),
    )
}

fn host_namespaces(_: &ObjectMeta, spec: &PodSpec, _: Version) -> Option<Violation> {
    let used: Vec<&str> = [
        (spec.host_network, "hostNetwork=true"),
        (spec.host_pid, "hostPID=true"),
        (spec.host_ipc, "hostIPC=true"),
    ]
    .into_iter()
    .filter_map(|(on, what)| on.then_some(what))
    .collect();
    if used.is_empty() {
        return None;
    }
    violation("host namespaces", used.join(", "))
}

/// The volumes of the node's filesystem.
fn host_path_volume_names(spec: &PodSpec) -> Vec<&String> {
    spec.volumes
        .iter()
        .filter(|v| v.host_path.is_some())
        .map(|v| &v.name)
        .collect()
}

/// The names of the containers (init containers first) for which `bad` holds.
fn containers_where(spec: &PodSpec, mut bad: impl FnMut(&Container) -> bool) -> Vec<String> {
    containers(spec)
        .filter(|c| bad(c))
        .map(|c| c.name.clone())
        .collect()
}

fn host_path_volumes(_: &ObjectMeta, spec: &PodSpec, _: Version) -> Option<Violation> {
    let names = host_path_volume_names(spec);
    if names.is_empty() {
        return None;
    }
    violation(
        "hostPath volumes",
        format!(
            "{} {}",
            plural(names.len(), "volume", "volumes"),
            join_quote(names)
        ),
    )
}

fn host_ports(_: &ObjectMeta, spec: &PodSpec, _: Version) -> Option<Violation> {
    let mut bad = Vec::new();
    // sorted as strings, as Kubernetes lists them
    let mut ports = BTreeSet::new();
    for c in containers(spec) {
        let used: Vec<String> = c
            .ports
            .iter()
            .filter(|p| p.host_port != 0)
            .map(|p| p.host_port.to_string())
            .collect();
        if !used.is_empty() {
            bad.push(c.name.clone());
            ports.extend(used);
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_phrase(&bad),
            plural(bad.len(), "uses", "use"),
            plural(ports.len(), "hostPort", "hostPorts"),
            ports.into_iter().collect::<Vec<_>>().join(", ")
        ),
    )
}

fn privileged(_: &ObjectMeta, spec: &PodSpec, _: Version) -> Option<Violation> {
    let bad = containers_where(spec, |c| {
        c.security_context.as_ref().and_then(|s| s.privileged) == Some(true)
    });
    if bad.is_empty() {
        return None;
    }
    violation(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers_phrase(&bad)
        ),
    )
}

fn proc_mount(_: &ObjectMeta, spec: &PodSpec, _: Version) -> Option<Violation> {
    let mut bad = Vec::new();
    let mut types = BTreeSet::new();
    for c in containers(spec) {
        if let Some(pm) = c.security_context.as_ref().and_then(|s| s.proc_mount.as_ref()) {
            if pm != "Default" {
                bad.push(c.name.clone());
                types.insert(pm.clone());
            }
        }
    }
    if bad.is_empty() {
        return None;
    }
    violation(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad),
            join_quote(types)
        ),
    )
}

fn se_linux_options(_: &ObjectMeta, spec: &PodSpec, v: Version) -> Option<Violation> {
    let allowed = |t: &str| {
        matches!(t, "" | "container_t" | "container_init_t" | "container_kvm_t")
            || (v.has(31) && t == "container_engine_t")
    };
    let mut bad_types = BTreeSet::new();
    let (mut user, mut role) = (false, false);
    let mut valid = |o: &rkube_api::core::v1::SeLinuxOptions| {
        let mut ok = true;
        if !allowed(&o.r#type) {
            ok = false;
            bad_types.insert(o.r#type.clone());
        }
        if !o.user.is_empty() {
            ok = false;
            user = true;
        }
        if !o.role.is_empty() {
            ok = false;
            role = true;
        }
        ok
    };
    let pod_bad = spec
        .security_context
        .as_ref()
        .and_then(|s| s.se_linux_options.as_ref())
        .is_some_and(|o| !valid(o));
    let bad = containers_where(spec, |c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.se_linux_options.as_ref())
            .is_some_and(|o| !valid(o))
    });
    let who = setters(pod_bad, &bad);
    if who.is_empty() {
        return None;
    }
    let mut what = Vec::new();
    if !bad_types.is_empty() {
        what.push(format!(
            "{} {}",
            plural(bad_types.len(), "type", "types"),
            join_quote(&bad_types)
        ));
    }
    if user {
        what.push("user may not be set".into());
    }
    if role {
        what.push("role may not be set".into());
    }
    violation(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            who.join(" and "),
            what.join("; ")
        ),
    )
}

fn valid_seccomp(t: &str) -> bool {
    matches!(t, "RuntimeDefault" | "Localhost")
}

/// The seccomp profile types `spec` sets badly: whether the pod does, and which containers.
fn bad_seccomp(spec: &PodSpec) -> (bool, Vec<String>, BTreeSet<String>) {
    let mut values = BTreeSet::new();
    let pod_type = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.r#type.clone());
    let pod_bad = pod_type.as_deref().is_some_and(|t| !valid_seccomp(t));
    if pod_bad {
        values.extend(pod_type);
    }
    let mut bad = Vec::new();
    for c in containers(spec) {
        if let Some(p) = c
            .security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref())
        {
            if !valid_seccomp(&p.r#type) {
                bad.push(c.name.clone());
                values.insert(p.r#type.clone());
            }
        }
    }
    (pod_bad, bad, values)
}

fn seccomp_baseline(meta: &ObjectMeta, spec: &PodSpec, v: Version) -> Option<Violation> {
    if !v.has(19) {
        // before the field existed: the alpha annotations
        let valid = |v: &str| v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/");
        let mut keys = vec!["seccomp.security.alpha.kubernetes.io/pod".to_string()];
        keys.extend(
            containers(spec).map(|c| format!("container.seccomp.security.alpha.kubernetes.io/{}", c.name)),
        );
        let forbidden: BTreeSet<String> = keys
            .iter()
            .filter_map(|k| {
                meta.annotations
                    .get(k)
                    .filter(|v| !valid(v))
                    .map(|v| format!("{k}={v:?}"))
            })
            .collect();
        if forbidden.is_empty() {
            return None;
        }
        return violation(
            "seccompProfile",
            format!(
                "forbidden {} {}",
                plural(forbidden.len(), "annotation", "annotations"),
                forbidden.into_iter().collect::<Vec<_>>().join(", ")
            ),
        );
    }
    let (pod_bad, bad, values) = bad_seccomp(spec);
    let who = setters(pod_bad, &bad);
    if who.is_empty() {
        return None;
    }
    violation(
        "seccompProfile",
        format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            who.join(" and "),
            join_quote(values)
        ),
    )
}

fn sysctls(_: &ObjectMeta, spec: &PodSpec, v: Version) -> Option<Violation> {
    let safe = |name: &str| {
        matches!(
            name,
            "kernel.shm_rmid_forced"
                | "net.ipv4.ip_local_port_range"
                | "net.ipv4.tcp_syncookies"
                | "net.ipv4.ping_group_range"
                | "net.ipv4.ip_unprivileged_port_start"
        ) || (v.has(27) && name == "net.ipv4.ip_local_reserved_ports")
            || (v.has(29)
                && matches!(
                    name,
                    "net.ipv4.tcp_keepalive_time"
                        | "net.ipv4.tcp_fin_timeout"
                        | "net.ipv4.tcp_keepalive_intvl"
                        | "net.ipv4.tcp_keepalive_probes"
                ))
            || (v.has(32) && matches!(name, "net.ipv4.tcp_rmem" | "net.ipv4.tcp_wmem"))
    };
    let forbidden: Vec<&str> = spec
        .security_context
        .iter()
        .flat_map(|s| &s.sysctls)
        .map(|s| s.name.as_str())
        .filter(|n| !safe(n))
        .collect();
    if forbidden.is_empty() {
        return None;
    }
    violation("forbidden sysctls", forbidden.join(", "))
}

fn windows_host_process(_: &ObjectMeta, spec: &PodSpec, _: Version) -> Option<Violation> {
    let host_process = |o: Option<&rkube_api::core::v1::WindowsSecurityContextOptions>| {
        o.and_then(|o| o.host_process) == Some(true)
    };
    let pod_bad = host_process(
        spec.security_context
            .as_ref()
            .and_then(|s| s.windows_options.as_ref()),
    );
    let bad = containers_where(spec, |c| {
        host_process(
            c.security_context
                .as_ref()
                .and_then(|s| s.windows_options.as_ref()),
        )
    });
    let who = setters(pod_bad, &bad);
    if who.is_empty() {
        return None;
    }
    violation(
        "hostProcess",
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            who.join(" and ")
        ),
    )
}

fn allow_privilege_escalation(_: &ObjectMeta, spec: &PodSpec, v: Version) -> Option<Violation> {
    if v.has(25) && windows(spec) {
        return None;
    }
    let bad = containers_where(spec, |c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.allow_privilege_escalation)
            != Some(false)
    });
    if bad.is_empty() {
        return None;
    }
    violation(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_phrase(&bad)
        ),
    )
}

fn capabilities_restricted(_: &ObjectMeta, spec: &PodSpec, v: Version) -> Option<Violation> {
    if v.has(25) && windows(spec) {
        return None;
    }
    let mut missing_drop = Vec::new();
    let mut adding = Vec::new();
    let mut caps = BTreeSet::new();
    for c in containers(spec) {
        let Some(cap) = c.security_context.as_ref().and_then(|s| s.capabilities.as_ref()) else {
            missing_drop.push(c.name.clone());
            continue;
        };
        if !cap.drop.iter().any(|d| d == "ALL") {
            missing_drop.push(c.name.clone());
        }
        let extra: Vec<&String> = cap.add.iter().filter(|a| *a != "NET_BIND_SERVICE").collect();
        if !extra.is_empty() {
            adding.push(c.name.clone());
            caps.extend(extra);
        }
    }
    let mut details = Vec::new();
    if !missing_drop.is_empty() {
        details.push(format!(
            r#"{} must set securityContext.capabilities.drop=["ALL"]"#,
            containers_phrase(&missing_drop)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(caps)
        ));
    }
    if details.is_empty() {
        return None;
    }
    violation("unrestricted capabilities", details.join("; "))
}

fn restricted_volumes(_: &ObjectMeta, spec: &PodSpec, _: Version) -> Option<Violation> {
    // Of the volume sources rkube has, only hostPath is outside the
    // restricted set (configMap, downwardAPI, emptyDir, projected, secret,
    // csi, persistentVolumeClaim, ephemeral).
    let names = host_path_volume_names(spec);
    if names.is_empty() {
        return None;
    }
    violation(
        "restricted volume types",
        format!(
            "{} {} {} {} \"hostPath\"",
            plural(names.len(), "volume", "volumes"),
            join_quote(&names),
            plural(names.len(), "uses", "use"),
            "restricted volume type"
        ),
    )
}

fn run_as_non_root(_: &ObjectMeta, spec: &PodSpec, _: Version) -> Option<Violation> {
    let pod = spec.security_context.as_ref().and_then(|s| s.run_as_non_root);
    let (mut explicit, mut implicit) = (Vec::new(), Vec::new());
    for c in containers(spec) {
        match c.security_context.as_ref().and_then(|s| s.run_as_non_root) {
            Some(false) => explicit.push(c.name.clone()),
            Some(true) => {}
            None if pod != Some(true) => implicit.push(c.name.clone()),
            None => {}
        }
    }
    let who = setters(pod == Some(false), &explicit);
    if !who.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                who.join(" and ")
            ),
        );
    }
    if implicit.is_empty() {
        return None;
    }
    violation(
        "runAsNonRoot != true",
        format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            containers_phrase(&implicit)
        ),
    )
}

fn run_as_user(_: &ObjectMeta, spec: &PodSpec, _: Version) -> Option<Violation> {
    let pod_bad = spec.security_context.as_ref().and_then(|s| s.run_as_user) == Some(0);
    let bad = containers_where(spec, |c| {
        c.security_context.as_ref().and_then(|s| s.run_as_user) == Some(0)
    });
    let who = setters(pod_bad, &bad);
    if who.is_empty() {
        return None;
    }
    violation(
        "runAsUser=0",
        format!("{} must not set runAsUser=0", who.join(" and ")),
    )
}

fn seccomp_restricted(_: &ObjectMeta, spec: &PodSpec, v: Version) -> Option<Violation> {
    if v.has(25) && windows(spec) {
        return None;
    }
    let (pod_bad, bad, values) = bad_seccomp(spec);
    let who = setters(pod_bad, &bad);
    if !who.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                who.join(" and "),
                join_quote(values)
            ),
        );
    }
    let pod_set = spec
        .security_context
        .as_ref()
        .is_some_and(|s| s.seccomp_profile.is_some());
    let implicit = containers_where(spec, |c| {
        !pod_set
            && c.security_context
                .as_ref()
                .is_none_or(|s| s.seccomp_profile.is_none())
    });
    if implicit.is_empty() {
        return None;
    }
    violation(
        "seccompProfile",
        format!(
            r#"pod or {} must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost""#,
            containers_phrase(&implicit)
        ),
    )
}

/// The pod, or the pod template of a workload, in an object; `true` for a
/// pod (enforced), `false` for a template (only warned and audited).
fn pod_like<K: Resource>(obj: &K) -> Option<(&ObjectMeta, &PodSpec, bool)> {
    let any = obj as &dyn Any;
    fn template(t: Option<&PodTemplateSpec>) -> Option<(&ObjectMeta, &PodSpec, bool)> {
        // a template without metadata is still checked (annotations are all it is read for)
        static NO_METADATA: std::sync::LazyLock<ObjectMeta> = std::sync::LazyLock::new(ObjectMeta::default);
        let t = t?;
        Some((
            t.metadata.as_ref().unwrap_or(&NO_METADATA),
            t.spec.as_ref()?,
            false,
        ))
    }
    if let Some(p) = any.downcast_ref::<Pod>() {
        return Some((p.metadata(), p.spec.as_ref()?, true));
    }
    macro_rules! templated {
        ($($ty:ty),*) => {$(
            if let Some(o) = any.downcast_ref::<$ty>() {
                return template(o.spec.as_ref()?.template.as_ref());
            }
        )*};
    }
    templated!(Deployment, ReplicaSet, DaemonSet, StatefulSet, Job);
    if let Some(cj) = any.downcast_ref::<CronJob>() {
        let job = cj.spec.as_ref()?.job_template.as_ref()?.spec.as_ref()?;
        return template(job.template.as_ref());
    }
    None
}

/// The labels of namespace `name` (none if it does not exist: creation is
/// refused elsewhere).
fn namespace_labels(state: &State, name: &str) -> ApiResult<BTreeMap<String, String>> {
    let key = storage_key(Namespace::info(), "", name);
    let Some(kv) = state.store.get(&key) else {
        return Ok(BTreeMap::new());
    };
    let ns: Namespace = crate::handlers::decode_stored(&kv)?;
    Ok(ns.metadata.map(|m| m.labels).unwrap_or_default())
}

/// Admission of a new object: namespaces' labels are checked; pods are
/// refused if they break the namespace's `enforce` level; pods and workload
/// templates that break `warn` or `audit` get a warning and an audit annotation.
pub fn admit_create<K: Resource>(state: &State, obj: &K) -> ApiResult<()> {
    if let Some(ns) = (obj as &dyn Any).downcast_ref::<Namespace>() {
        let (_, errors) = policy(&ns.metadata().labels);
        if !errors.is_empty() {
            return Err(ApiError::invalid(Namespace::info(), ns.name(), errors));
        }
        return Ok(());
    }
    admit_pod_like(state, obj)
}

/// Admission of an update: a namespace's changed labels must be valid, and
/// tightening its `enforce` level warns about the pods already breaking it;
/// a pod is evaluated again only when its images or containers change (the
/// only pod spec changes Kubernetes allows that matter here).
pub fn admit_update<K: Resource>(state: &State, new: &K, old: &K) -> ApiResult<()> {
    let any = new as &dyn Any;
    if let Some(ns) = any.downcast_ref::<Namespace>() {
        let (new_policy, errors) = policy(&ns.metadata().labels);
        let (old_policy, old_errors) = policy(&old.metadata().labels);
        if !errors.is_empty() && errors != old_errors {
            return Err(ApiError::invalid(Namespace::info(), ns.name(), errors));
        }
        if tightened(&new_policy.enforce, &old_policy.enforce) {
            warn_existing_pods(state, ns.name(), new_policy.enforce)?;
        }
        return Ok(());
    }
    if let (Some(p), Some(o)) = (any.downcast_ref::<Pod>(), (old as &dyn Any).downcast_ref::<Pod>()) {
        if !significant_pod_update(p, o) {
            return Ok(());
        }
    }
    admit_pod_like(state, new)
}

fn tightened(new: &LevelVersion, old: &LevelVersion) -> bool {
    new != old && new.level != Level::Privileged && !(new.version == old.version && new.level <= old.level)
}

fn significant_pod_update(new: &Pod, old: &Pod) -> bool {
    let (Some(n), Some(o)) = (new.spec.as_ref(), old.spec.as_ref()) else {
        return true;
    };
    n.containers.len() != o.containers.len()
        || n.init_containers.len() != o.init_containers.len()
        || containers(n).zip(containers(o)).any(|(a, b)| a.image != b.image)
}

fn admit_pod_like<K: Resource>(state: &State, obj: &K) -> ApiResult<()> {
    let Some((meta, spec, is_pod)) = pod_like(obj) else {
        return Ok(());
    };
    let labels = namespace_labels(state, obj.namespace())?;
    if !labels.keys().any(|k| k.starts_with(LABEL_PREFIX)) {
        return Ok(());
    }
    let (p, errors) = policy(&labels);
    if !errors.is_empty() {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        admission::annotate_audit("error", format!("Failed to parse policy: {}", list.join(", ")));
    }
    if is_pod {
        admission::annotate_audit(&format!("{LABEL_PREFIX}enforce-policy"), p.enforce.to_string());
        let violations = evaluate(p.enforce, meta, spec);
        if !violations.is_empty() {
            let why = format!(
                "violates PodSecurity \"{}\": {}",
                p.enforce,
                describe(&violations)
            );
            audit_violations(p, meta, spec);
            return Err(ApiError::forbidden_object(K::info(), obj.name(), &why));
        }
    }
    audit_violations(p, meta, spec);
    let violations = evaluate(p.warn, meta, spec);
    if !violations.is_empty() {
        admission::warn(format!(
            "would violate PodSecurity \"{}\": {}",
            p.warn,
            describe(&violations)
        ));
    }
    Ok(())
}

fn audit_violations(p: Policy, meta: &ObjectMeta, spec: &PodSpec) {
    let violations = evaluate(p.audit, meta, spec);
    if !violations.is_empty() {
        admission::annotate_audit(
            &format!("{LABEL_PREFIX}audit-violations"),
            format!(
                "would violate PodSecurity \"{}\": {}",
                p.audit,
                describe(&violations)
            ),
        );
    }
}

/// How many existing pods a tightened `enforce` level is checked against,
/// as Kubernetes bounds the work of a namespace update.
const EXISTING_PODS_CHECKED: usize = 3000;

/// Warnings for the pods of namespace `ns` that break `enforce`, one per
/// distinct set of reasons, as Kubernetes words them.
fn warn_existing_pods(state: &State, ns: &str, enforce: LevelVersion) -> ApiResult<()> {
    let info = Pod::info();
    let kvs = state
        .store
        .list(&crate::keys::storage_prefix(info, ns), None, 0, None)
        .map_err(|e| ApiError::from_store(e, info, ""))?
        .items;
    let total = kvs.len();
    // reasons -> (first pod name, count)
    let mut seen: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for kv in kvs.iter().take(EXISTING_PODS_CHECKED) {
        let pod: Pod = crate::handlers::decode_stored(kv)?;
        let Some(spec) = pod.spec.as_ref() else { continue };
        let violations = evaluate(enforce, pod.metadata(), spec);
        if violations.is_empty() {
            continue;
        }
        let reasons: Vec<&str> = violations.iter().map(|v| v.reason.as_str()).collect();
        let entry = seen
            .entry(reasons.join(", "))
            .or_insert_with(|| (pod.name().to_string(), 0));
        if pod.name() < entry.0.as_str() {
            entry.0 = pod.name().to_string();
        }
        entry.1 += 1;
    }
    if total > EXISTING_PODS_CHECKED {
        admission::warn(format!(
            "new PodSecurity enforce level only checked against the first {EXISTING_PODS_CHECKED} of {total} existing pods"
        ));
    }
    if seen.is_empty() {
        return Ok(());
    }
    admission::warn(format!(
        "existing pods in namespace {ns:?} violate the new PodSecurity enforce level \"{enforce}\""
    ));
    let mut lines: Vec<String> = seen
        .into_iter()
        .map(|(reasons, (name, n))| match n {
            1 => format!("{name}: {reasons}"),
            2 => format!("{name} (and 1 other pod): {reasons}"),
            _ => format!("{name} (and {} other pods): {reasons}", n - 1),
        })
        .collect();
    lines.sort();
    for l in lines {
        admission::warn(l);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
