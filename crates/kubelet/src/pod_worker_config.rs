//! From a pod's spec to the runtime's [`ContainerConfig`]: environment (values, fieldRef,
//! resourceFieldRef, configMap/secret key refs, envFrom), resources and user.

use std::collections::BTreeMap;

use rkube_api::core::v1::{ConfigMap, Container, Pod, Secret};
use rkube_client::{Api, Client};

use crate::runtime::Resources;
use crate::volumes::secret_data;

/// Why a container's configuration cannot be built: reported as the container's waiting
/// reason `CreateContainerConfigError` with this message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The container's environment, in Kubernetes order: envFrom first, then env (later wins).
pub async fn build_env(
    client: &Client,
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = meta.namespace.clone();
    let mut config_maps: BTreeMap<String, Option<ConfigMap>> = BTreeMap::new();
    let mut secrets: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    let mut env: Vec<(String, String)> = Vec::new();
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
            env.push((var.name.clone(), var.value.clone()));
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
            let res = target.resources.clone().unwrap_or_default();
            let (map, name) = match r.resource.split_once('.') {
                Some(("limits", n)) => (&res.limits, n),
                Some(("requests", n)) => (&res.requests, n),
                _ => {
                    return Err(ConfigError(what(format!(
                        "env {:?}: resourceFieldRef.resource {:?} is not supported",
                        var.name, r.resource
                    ))))
                }
            };
            Some(match (map.get(name), name) {
                (Some(q), "cpu") => ((q.millis().unwrap_or(0) + 999) / 1000).to_string(),
                (Some(q), _) => q.value().unwrap_or(0).to_string(),
                (None, "cpu") => std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
                    .to_string(),
                (None, _) => crate::node::meminfo_kib("MemTotal")
                    .map(|k| (k * 1024).to_string())
                    .unwrap_or_default(),
            })
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
            Some(var.value.clone())
        };
        if let Some(value) = value {
            env.push((var.name.clone(), value));
        }
    }
    Ok(env)
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
