//! From a pod's spec to the runtime's [`ContainerConfig`]: environment (values, fieldRef,
//! resourceFieldRef, configMap/secret key refs, envFrom), resources and user.

use std::collections::BTreeMap;

use rkube_api::core::v1::{ConfigMap, Container, Pod, Secret};
use rkube_client::{Api, Client};

use crate::volumes::secret_data;
use rkube_node_runtime::image::credentials::{self, Credential};
use rkube_node_runtime::runtime::{Resources, Security};

/// Why a container's configuration cannot be built: reported as the container's waiting
/// reason `CreateContainerConfigError` with this message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The value of a downward API `resourceFieldRef` (`limits.cpu`, `requests.memory`, ...)
/// of `container`, divided by `divisor` and rounded up, as Kubernetes writes it: a limit
/// the container does not set is the node's capacity (its cores, its memory), a request it
/// does not set is 0.
pub fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&rkube_api::quantity::Quantity>,
) -> Result<String, String> {
    let res = container.resources.clone().unwrap_or_default();
    let (map, name, is_limit) = match resource.split_once('.') {
        Some(("limits", n)) => (&res.limits, n, true),
        Some(("requests", n)) => (&res.requests, n, false),
        _ => {
            return Err(format!(
                "resource {resource:?} is not limits.NAME or requests.NAME"
            ))
        }
    };
    if !matches!(name, "cpu" | "memory" | "ephemeral-storage") {
        return Err(format!(
            "resource {resource:?} is not cpu, memory or ephemeral-storage"
        ));
    }
    let bad =
        |what: &str, q: &rkube_api::quantity::Quantity| format!("{what} {:?} is not a quantity", q.string);
    let divide = |value: i64, by: i64| if by <= 0 { value } else { (value + by - 1) / by };
    if name == "cpu" {
        let milli = match map.get(name) {
            Some(q) => q.millis().map_err(|_| bad("the container's cpu", q))?,
            None if is_limit => {
                std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as i64 * 1000
            }
            None => 0,
        };
        let by = match divisor {
            Some(d) => d.millis().map_err(|_| bad("divisor", d))?,
            None => 1000,
        };
        return Ok(divide(milli, by).to_string());
    }
    let bytes = match map.get(name) {
        Some(q) => q
            .value()
            .map_err(|_| bad(&format!("the container's {name}"), q))?,
        None if is_limit && name == "memory" => crate::node::meminfo_kib("MemTotal")
            .map(|k| k as i64 * 1024)
            .unwrap_or(0),
        None if is_limit => nix::sys::statvfs::statvfs("/")
            .map(|s| (s.blocks() as i64) * (s.fragment_size() as i64))
            .unwrap_or(0),
        None => 0,
    };
    let by = match divisor {
        Some(d) => d.value().map_err(|_| bad("divisor", d))?,
        None => 1,
    };
    Ok(divide(bytes, by).to_string())
}

/// The container's environment, in Kubernetes order: the Service variables
/// (`crate::service_env`), envFrom, then env (later wins).
pub async fn build_env(
    client: &Client,
    pod: &Pod,
    container: &Container,
    (pod_ip, host_ip): (&str, &str),
    service_vars: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = meta.namespace.clone();
    let mut config_maps: BTreeMap<String, Option<ConfigMap>> = BTreeMap::new();
    let mut secrets: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    let mut env: Vec<(String, String)> = service_vars.to_vec();
    let what = |field: String| format!("container {:?}: {field}", container.name);

    for (i, from) in container.env_from.iter().enumerate() {
        if let Some(r) = &from.config_map_ref {
            match get_config_map(client, &ns, &r.name, &mut config_maps).await? {
                Some(cm) => {
                    for (k, v) in &cm.data {
                        env.push((format!("{}{k}", from.prefix), v.clone()));
                    }
                }
                None if r.optional == Some(true) => {}
                None => {
                    return Err(ConfigError(what(format!(
                        "envFrom[{i}]: configmap {:?} not found; create it or set optional: true",
                        r.name
                    ))))
                }
            }
        }
        if let Some(r) = &from.secret_ref {
            match get_secret(client, &ns, &r.name, &mut secrets).await? {
                Some(s) => {
                    for (k, v) in secret_data(s) {
                        env.push((
                            format!("{}{k}", from.prefix),
                            String::from_utf8_lossy(&v).into_owned(),
                        ));
                    }
                }
                None if r.optional == Some(true) => {}
                None => {
                    return Err(ConfigError(what(format!(
                        "envFrom[{i}]: secret {:?} not found; create it or set optional: true",
                        r.name
                    ))))
                }
            }
        }
    }

    for var in &container.env {
        let Some(from) = &var.value_from else {
            // `$(NAME)` refers to variables defined before this one (envFrom included).
            let value = crate::expansion::expand(&var.value, &env);
            env.push((var.name.clone(), value));
            continue;
        };
        let value = if let Some(f) = &from.field_ref {
            let path = f.field_path.as_str();
            let label = |prefix: &str| {
                path.strip_prefix(prefix)
                    .and_then(|r| r.strip_suffix("']"))
                    .map(str::to_string)
            };
            Some(match path {
                "metadata.name" => meta.name.clone(),
                "metadata.namespace" => meta.namespace.clone(),
                "metadata.uid" => meta.uid.clone(),
                "spec.nodeName" => spec.node_name.clone(),
                "spec.serviceAccountName" => spec.service_account_name.clone(),
                "status.podIP" | "status.podIPs" => pod_ip.to_string(),
                "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
                _ => {
                    if let Some(k) = label("metadata.labels['") {
                        meta.labels.get(&k).cloned().unwrap_or_default()
                    } else if let Some(k) = label("metadata.annotations['") {
                        meta.annotations.get(&k).cloned().unwrap_or_default()
                    } else {
                        return Err(ConfigError(what(format!(
                            "env {:?}: fieldRef.fieldPath {path:?} is not supported",
                            var.name
                        ))));
                    }
                }
            })
        } else if let Some(r) = &from.resource_field_ref {
            let target = if r.container_name.is_empty() {
                container.clone()
            } else {
                spec.containers
                    .iter()
                    .find(|c| c.name == r.container_name)
                    .cloned()
                    .ok_or_else(|| {
                        ConfigError(what(format!(
                            "env {:?}: resourceFieldRef.containerName {:?} is not a container of the pod",
                            var.name, r.container_name
                        )))
                    })?
            };
            Some(
                resource_value(&target, &r.resource, r.divisor.as_ref())
                    .map_err(|e| ConfigError(what(format!("env {:?}: resourceFieldRef: {e}", var.name))))?,
            )
        } else if let Some(r) = &from.config_map_key_ref {
            match get_config_map(client, &ns, &r.name, &mut config_maps).await? {
                Some(cm) => match cm.data.get(&r.key) {
                    Some(v) => Some(v.clone()),
                    None if r.optional == Some(true) => None,
                    None => {
                        return Err(ConfigError(what(format!(
                            "env {:?}: key {:?} not found in configmap {:?}",
                            var.name, r.key, r.name
                        ))))
                    }
                },
                None if r.optional == Some(true) => None,
                None => {
                    return Err(ConfigError(what(format!(
                        "env {:?}: configmap {:?} not found; create it or set optional: true",
                        var.name, r.name
                    ))))
                }
            }
        } else if let Some(r) = &from.secret_key_ref {
            match get_secret(client, &ns, &r.name, &mut secrets).await? {
                Some(s) => match secret_data(s).get(&r.key) {
                    Some(v) => Some(String::from_utf8_lossy(v).into_owned()),
                    None if r.optional == Some(true) => None,
                    None => {
                        return Err(ConfigError(what(format!(
                            "env {:?}: key {:?} not found in secret {:?}",
                            var.name, r.key, r.name
                        ))))
                    }
                },
                None if r.optional == Some(true) => None,
                None => {
                    return Err(ConfigError(what(format!(
                        "env {:?}: secret {:?} not found; create it or set optional: true",
                        var.name, r.name
                    ))))
                }
            }
        } else {
            Some(crate::expansion::expand(&var.value, &env))
        };
        if let Some(value) = value {
            env.push((var.name.clone(), value));
        }
    }
    Ok(env)
}

/// Registry credentials for the pod's images: its `imagePullSecrets` in order, then the
/// node-wide `config_json` (`<root-dir>/config.json`, as Kubernetes' kubelet reads it).
/// Secrets that are missing or unusable do not stop the pull (Kubernetes pulls anyway);
/// they come back as warnings for an event.
pub async fn pull_credentials(
    client: &Client,
    pod: &Pod,
    config_json: &std::path::Path,
) -> (Vec<Credential>, Vec<String>) {
    let ns = pod
        .metadata
        .as_ref()
        .map(|m| m.namespace.clone())
        .unwrap_or_default();
    let refs = pod
        .spec
        .as_ref()
        .map(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    let mut credentials = Vec::new();
    let mut warnings = Vec::new();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for r in refs.iter().filter(|r| !r.name.is_empty()) {
        let source = format!("imagePullSecret {ns}/{}", r.name);
        let secret = match api.get_opt(&r.name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                warnings.push(format!("{source} not found; create it in namespace {ns}"));
                continue;
            }
            Err(e) => {
                warnings.push(format!("reading {source}: {e}"));
                continue;
            }
        };
        let data = secret_data(&secret);
        let (legacy, key) = match secret.r#type.as_str() {
            credentials::SECRET_TYPE_DOCKER_CONFIG_JSON => (false, credentials::KEY_DOCKER_CONFIG_JSON),
            credentials::SECRET_TYPE_DOCKERCFG => (true, credentials::KEY_DOCKERCFG),
            other => {
                warnings.push(format!(
                    "{source} has type {other:?}; image pull secrets must be of type {} or {}",
                    credentials::SECRET_TYPE_DOCKER_CONFIG_JSON,
                    credentials::SECRET_TYPE_DOCKERCFG
                ));
                continue;
            }
        };
        let Some(document) = data.get(key) else {
            warnings.push(format!("{source} has no key {key:?}"));
            continue;
        };
        match credentials::parse(document, legacy, &source) {
            Ok(found) => credentials.extend(found),
            Err(e) => warnings.push(e),
        }
    }
    match std::fs::read(config_json) {
        Ok(document) => {
            let source = config_json.display().to_string();
            // config.json has `auths`; an old file may be in .dockercfg shape.
            let legacy = serde_json::from_slice::<serde_json::Value>(&document)
                .is_ok_and(|v| v.get("auths").is_none());
            match credentials::parse(&document, legacy, &source) {
                Ok(found) => credentials.extend(found),
                Err(e) => warnings.push(e),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warnings.push(format!("reading {}: {e}", config_json.display())),
    }
    (credentials, warnings)
}

async fn get_config_map<'a>(
    client: &Client,
    ns: &str,
    name: &str,
    cache: &'a mut BTreeMap<String, Option<ConfigMap>>,
) -> Result<&'a Option<ConfigMap>, ConfigError> {
    if !cache.contains_key(name) {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| ConfigError(format!("reading configmap {ns}/{name}: {e}")))?;
        cache.insert(name.to_string(), found);
    }
    Ok(&cache[name])
}

async fn get_secret<'a>(
    client: &Client,
    ns: &str,
    name: &str,
    cache: &'a mut BTreeMap<String, Option<Secret>>,
) -> Result<&'a Option<Secret>, ConfigError> {
    if !cache.contains_key(name) {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| ConfigError(format!("reading secret {ns}/{name}: {e}")))?;
        cache.insert(name.to_string(), found);
    }
    Ok(&cache[name])
}

/// `resources` of the spec in the runtime's units.
pub fn resources(container: &Container) -> Result<Resources, ConfigError> {
    let res = container.resources.clone().unwrap_or_default();
    let bad = |field: &str, q: &rkube_api::quantity::Quantity| {
        ConfigError(format!(
            "container {:?}: resources.{field} {:?} is not a valid quantity",
            container.name, q.string
        ))
    };
    let mut out = Resources::default();
    if let Some(q) = res.limits.get("memory") {
        out.memory_limit_bytes = Some(q.value().map_err(|_| bad("limits.memory", q))?.max(0) as u64);
    }
    if let Some(q) = res.limits.get("cpu") {
        out.cpu_limit_millis = Some(q.millis().map_err(|_| bad("limits.cpu", q))?.max(0) as u64);
    }
    if let Some(q) = res.requests.get("cpu").or_else(|| res.limits.get("cpu")) {
        out.cpu_request_millis = Some(q.millis().map_err(|_| bad("requests.cpu", q))?.max(0) as u64);
    }
    Ok(out)
}

/// runAsUser/runAsGroup: the container's security context, else the pod's.
pub fn user(pod: &Pod, container: &Container) -> (Option<u32>, Option<u32>) {
    let pod_sc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let c_sc = container.security_context.clone().unwrap_or_default();
    let uid = c_sc.run_as_user.or(pod_sc.run_as_user).map(|u| u.max(0) as u32);
    let gid = c_sc.run_as_group.or(pod_sc.run_as_group).map(|g| g.max(0) as u32);
    (uid, gid)
}

/// Sysctls Kubernetes lets every pod set (its "safe" set); others are refused, as a
/// kubelet without `--allowed-unsafe-sysctls` does.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// The container's `securityContext` over the pod's, as the runtime applies it.
pub fn security(pod: &Pod, container: &Container) -> Result<Security, ConfigError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    let c_sc = container.security_context.clone().unwrap_or_default();
    let caps = c_sc.capabilities.clone().unwrap_or_default();
    let seccomp = c_sc
        .seccomp_profile
        .as_ref()
        .or(pod_sc.seccomp_profile.as_ref())
        .map(|p| p.r#type.as_str())
        .unwrap_or("");
    let mut groups: Vec<u32> = pod_sc
        .supplemental_groups
        .iter()
        .map(|g| (*g).max(0) as u32)
        .collect();
    if let Some(g) = pod_sc.fs_group {
        groups.push(g.max(0) as u32);
    }
    let mut sysctls = Vec::new();
    for s in &pod_sc.sysctls {
        if !SAFE_SYSCTLS.contains(&s.name.as_str()) {
            return Err(ConfigError(format!(
                "forbidden sysctl {:?}: only Kubernetes' safe sysctls are allowed ({})",
                s.name,
                SAFE_SYSCTLS.join(", ")
            )));
        }
        if spec.host_network && s.name.starts_with("net.") {
            return Err(ConfigError(format!(
                "sysctl {:?} is not allowed with hostNetwork: it would change the node's network",
                s.name
            )));
        }
        sysctls.push((s.name.clone(), s.value.clone()));
    }
    Ok(Security {
        privileged: c_sc.privileged == Some(true),
        add_capabilities: caps.add,
        drop_capabilities: caps.drop,
        read_only_root_filesystem: c_sc.read_only_root_filesystem == Some(true),
        no_new_privileges: c_sc.allow_privilege_escalation == Some(false),
        run_as_non_root: c_sc.run_as_non_root.or(pod_sc.run_as_non_root) == Some(true),
        supplemental_groups: groups,
        sysctls,
        seccomp_runtime_default: seccomp == "RuntimeDefault",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn env_values_expand_references_to_earlier_variables_only() {
        // No reference needs the apiserver, so nothing is dialled.
        let client = Client::connect("http://127.0.0.1:9").unwrap();
        let pod: Pod = serde_yaml::from_str(
            r#"
metadata: {name: web, namespace: shop}
spec:
  containers:
  - name: app
    image: busybox
    env:
    - {name: HOST, value: db}
    - {name: URL, value: "http://$(HOST):$(PORT)/$(NAME)"}
    - {name: PORT, value: "5432"}
    - {name: NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: AGAIN, value: "$(URL) $(NAME) $$(HOST) $HOST"}
"#,
        )
        .unwrap();
        let container = pod.spec.as_ref().unwrap().containers[0].clone();
        let env = build_env(&client, &pod, &container, ("10.0.0.1", "192.0.2.1"), &[])
            .await
            .unwrap();
        let get = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        // PORT and NAME come later: left as written.
        assert_eq!(get("URL"), Some("http://db:$(PORT)/$(NAME)"));
        // Not expanded twice; `$$` escapes; `$HOST` is not a reference.
        assert_eq!(get("AGAIN"), Some("http://db:$(PORT)/$(NAME) web $(HOST) $HOST"));
    }
}
