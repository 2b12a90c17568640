//! Volumes whose files the kubelet writes from the API: `configMap` and `secret` sources,
//! `downwardAPI` (the pod's own fields and its containers' resources) and `projected`
//! (any of those together with ServiceAccount tokens for an audience), rewritten on every
//! refresh so label changes and renewed tokens reach the files.

use std::collections::BTreeMap;
use std::path::Path;

use rkube_api::core::v1::{ConfigMap, DownwardApiVolumeFile, Pod, ProjectedVolumeSource, Secret};
use rkube_api::Resource;
use rkube_client::{Api, Client};

use super::{file_mode, key_files, pod_key, secret_data, token_needs_refresh, VolumeError, VolumeFile};

/// A projected token's lifetime when the volume names none (Kubernetes' default).
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// The data of ConfigMap `name`; `None` when it does not exist and is `optional`.
pub(super) async fn config_map_data(
    client: &Client,
    pod: &str,
    namespace: &str,
    volume: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
    let data = |c: ConfigMap| {
        let text = c.data.into_iter().map(|(k, v)| (k, v.into_bytes()));
        text.chain(c.binary_data).collect()
    };
    source_data(client, (pod, namespace, volume), name, optional, data).await
}

/// The data of Secret `name`; `None` when it does not exist and is `optional`.
pub(super) async fn secret_source(
    client: &Client,
    pod: &str,
    namespace: &str,
    volume: &str,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
    source_data(client, (pod, namespace, volume), name, optional, |s: Secret| {
        secret_data(&s)
    })
    .await
}

/// The data (`data` of the object) of the `K` named `name` in the pod's namespace, for
/// volume `volume` of `pod`; `None` when it does not exist and is `optional`.
async fn source_data<K: Resource>(
    client: &Client,
    (pod, namespace, volume): (&str, &str, &str),
    name: &str,
    optional: Option<bool>,
    data: impl FnOnce(K) -> BTreeMap<String, Vec<u8>>,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
    let found = Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| VolumeError::Api {
            pod: pod.into(),
            volume: volume.into(),
            kind: K::INFO.kind,
            name: name.into(),
            source: Box::new(source),
        })?;
    match found {
        Some(object) => Ok(Some(data(object))),
        None if optional == Some(true) => Ok(None),
        None => Err(VolumeError::SourceMissing {
            pod: pod.into(),
            volume: volume.into(),
            kind: K::INFO.kind,
            name: name.into(),
        }),
    }
}

/// The files of a projected volume, source by source; `dir` is where it is written (the
/// current tokens are read back from there, to be renewed only when due).
pub(super) async fn projected_files(
    client: &Client,
    pod: &Pod,
    volume: &str,
    source: &ProjectedVolumeSource,
    dir: &Path,
) -> Result<Vec<VolumeFile>, VolumeError> {
    let key = pod_key(pod);
    let meta = pod.metadata.clone().unwrap_or_default();
    let mode = source.default_mode;
    let mut files = Vec::new();
    for s in &source.sources {
        if let Some(sec) = &s.secret {
            let data = secret_source(client, &key, &meta.namespace, volume, &sec.name, sec.optional).await?;
            if let Some(data) = data {
                files.extend(key_files(&key, volume, &data, &sec.items, mode)?);
            }
        }
        if let Some(cm) = &s.config_map {
            let data = config_map_data(client, &key, &meta.namespace, volume, &cm.name, cm.optional).await?;
            if let Some(data) = data {
                files.extend(key_files(&key, volume, &data, &cm.items, mode)?);
            }
        }
        if let Some(d) = &s.downward_api {
            files.extend(downward_files(pod, volume, &d.items, mode)?);
        }
        if let Some(t) = &s.service_account_token {
            let current = std::fs::read_to_string(dir.join(&t.path)).ok();
            let now = chrono::Utc::now().timestamp();
            let token = match current.filter(|c| !token_needs_refresh(c, now)) {
                Some(c) => c,
                None => {
                    let audiences: Vec<String> = Some(t.audience.clone())
                        .filter(|a| !a.is_empty())
                        .into_iter()
                        .collect();
                    let seconds = t.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS);
                    match super::request_token(
                        client,
                        pod,
                        audiences,
                        seconds.clamp(0, i32::MAX as i64) as i32,
                    )
                    .await?
                    {
                        Some(token) => token,
                        // an apiserver without tokens: the file is left out, as the
                        // ServiceAccount volume is
                        None => continue,
                    }
                }
            };
            files.push((t.path.clone(), token.into_bytes(), file_mode(None, mode)));
        }
    }
    Ok(files)
}

/// The files of downward API `items`: the pod's name, namespace, uid, labels and
/// annotations (all of them, `key="value"` lines in key order, as Kubernetes writes them,
/// or one by key) and its containers' limits and requests.
pub(super) fn downward_files(
    pod: &Pod,
    volume: &str,
    items: &[DownwardApiVolumeFile],
    default_mode: Option<i32>,
) -> Result<Vec<VolumeFile>, VolumeError> {
    let key = pod_key(pod);
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let invalid = |reason: String| VolumeError::Invalid {
        pod: key.clone(),
        volume: volume.into(),
        reason,
    };
    let mut files = Vec::new();
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            let path = f.field_path.as_str();
            let one = |prefix: &str| path.strip_prefix(prefix).and_then(|r| r.strip_suffix("']"));
            match path {
                "metadata.name" => meta.name.clone(),
                "metadata.namespace" => meta.namespace.clone(),
                "metadata.uid" => meta.uid.clone(),
                "metadata.labels" => format_map(&meta.labels),
                "metadata.annotations" => format_map(&meta.annotations),
                _ => match (one("metadata.labels['"), one("metadata.annotations['")) {
                    (Some(k), _) => meta.labels.get(k).cloned().unwrap_or_default(),
                    (_, Some(k)) => meta.annotations.get(k).cloned().unwrap_or_default(),
                    _ => {
                        return Err(invalid(format!(
                            "downward API item {:?}: fieldRef.fieldPath {path:?} is not supported in volumes",
                            item.path
                        )))
                    }
                },
            }
        } else if let Some(r) = &item.resource_field_ref {
            let container = spec
                .containers
                .iter()
                .chain(&spec.init_containers)
                .find(|c| c.name == r.container_name)
                .ok_or_else(|| {
                    invalid(format!(
                        "downward API item {:?}: resourceFieldRef.containerName {:?} is not a container of the pod",
                        item.path, r.container_name
                    ))
                })?;
            crate::container_config::resource_value(container, &r.resource, r.divisor.as_ref()).map_err(
                |e| {
                    invalid(format!(
                        "downward API item {:?}: resourceFieldRef: {e}",
                        item.path
                    ))
                },
            )?
        } else {
            return Err(invalid(format!(
                "downward API item {:?} has neither fieldRef nor resourceFieldRef",
                item.path
            )));
        };
        files.push((
            item.path.clone(),
            value.into_bytes(),
            file_mode(item.mode, default_mode),
        ));
    }
    Ok(files)
}

/// Labels or annotations as Kubernetes' downward API writes them: `key="value"` lines in
/// key order, values quoted with escapes, no newline after the last.
fn format_map<'a>(map: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let sorted: BTreeMap<&String, &String> = map.into_iter().collect();
    sorted
        .into_iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_yaml::from_str(
            r#"
metadata:
  name: web-0
  namespace: shop
  uid: 1234
  labels: {tier: "front", app: web}
  annotations: {note: "say \"hi\"\nbye"}
spec:
  containers:
  - name: app
    image: busybox
    resources:
      limits: {cpu: 1500m, memory: 64Mi}
      requests: {cpu: 250m}
"#,
        )
        .unwrap()
    }

    fn files(yaml: &str) -> Result<Vec<(String, String, u32)>, VolumeError> {
        let items: Vec<DownwardApiVolumeFile> = serde_yaml::from_str(yaml).unwrap();
        Ok(downward_files(&pod(), "info", &items, Some(0o600))?
            .into_iter()
            .map(|(p, c, m)| (p, String::from_utf8(c).unwrap(), m))
            .collect())
    }

    #[test]
    fn pod_fields_are_written_as_kubernetes_writes_them() {
        let got = files(
            r#"
- {path: name, fieldRef: {fieldPath: metadata.name}}
- {path: ns, fieldRef: {fieldPath: metadata.namespace}}
- {path: labels, fieldRef: {fieldPath: metadata.labels}, mode: 0o444}
- {path: tier, fieldRef: {fieldPath: "metadata.labels['tier']"}}
- {path: annotations, fieldRef: {fieldPath: metadata.annotations}}
"#,
        )
        .unwrap();
        let want = [
            ("name", "web-0", 0o600),
            ("ns", "shop", 0o600),
            ("labels", "app=\"web\"\ntier=\"front\"", 0o444),
            ("tier", "front", 0o600),
            ("annotations", "note=\"say \\\"hi\\\"\\nbye\"", 0o600),
        ];
        let got: Vec<(&str, &str, u32)> = got.iter().map(|(p, c, m)| (p.as_str(), c.as_str(), *m)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn resources_are_divided_and_rounded_up_with_node_capacity_for_unset_limits() {
        let got = files(
            r#"
- {path: cpu, resourceFieldRef: {containerName: app, resource: limits.cpu}}
- {path: cpu-m, resourceFieldRef: {containerName: app, resource: limits.cpu, divisor: 1m}}
- {path: req-cpu, resourceFieldRef: {containerName: app, resource: requests.cpu}}
- {path: mem-mi, resourceFieldRef: {containerName: app, resource: limits.memory, divisor: 1Mi}}
- {path: req-mem, resourceFieldRef: {containerName: app, resource: requests.memory}}
"#,
        )
        .unwrap();
        let values: Vec<&str> = got.iter().map(|(_, c, _)| c.as_str()).collect();
        assert_eq!(values, ["2", "1500", "1", "64", "0"]);

        let err = files("- {path: x, resourceFieldRef: {containerName: nope, resource: limits.cpu}}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"nope\" is not a container of the pod"), "{err}");
    }
}
