//! Pod volumes whose files the kubelet writes from several sources: `projected`
//! (Secrets, ConfigMaps, the downward API, ServiceAccount tokens) and `downwardAPI`.

use super::Errors;
use crate::core::v1 as corev1;
use std::collections::HashSet;

/// The pod fields a downward API volume file may hold (Kubernetes' list; the pod's
/// addresses and node are for env only, as they are not known when volumes are made).
const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
];
/// What a downward API resourceFieldRef may name.
pub const RESOURCE_FIELDS: &[&str] = &[
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
];
/// A projected token lives at least this long (Kubernetes' minimum).
const MIN_TOKEN_SECONDS: i64 = 600;

/// `projected` and `downwardAPI` of volume `v` (at `vf`): each projection names exactly
/// one source, paths stay inside the volume and appear once, modes are file modes.
pub fn validate_projected_sources(v: &corev1::Volume, vf: &str, errs: &mut Errors) {
    if let Some(d) = &v.downward_api {
        let f = format!("{vf}.downwardAPI");
        validate_mode(d.default_mode, &format!("{f}.defaultMode"), errs);
        let mut paths = HashSet::new();
        for (i, item) in d.items.iter().enumerate() {
            validate_downward_file(item, &format!("{f}.items[{i}]"), &mut paths, errs);
        }
    }
    let Some(p) = &v.projected else {
        return;
    };
    let f = format!("{vf}.projected");
    validate_mode(p.default_mode, &format!("{f}.defaultMode"), errs);
    let mut paths = HashSet::new();
    for (i, s) in p.sources.iter().enumerate() {
        let sf = format!("{f}.sources[{i}]");
        let set = [
            s.secret.is_some(),
            s.config_map.is_some(),
            s.downward_api.is_some(),
            s.service_account_token.is_some(),
        ];
        if set.iter().filter(|x| **x).count() != 1 {
            errs.required(
                sf.clone(),
                "exactly one of secret, configMap, downwardAPI or serviceAccountToken must be specified",
            );
        }
        let keyed = [
            s.secret.as_ref().map(|x| ("secret", &x.name, &x.items)),
            s.config_map.as_ref().map(|x| ("configMap", &x.name, &x.items)),
        ];
        for (what, name, items) in keyed.into_iter().flatten() {
            if name.is_empty() {
                errs.required(format!("{sf}.{what}.name"), "");
            }
            for (j, item) in items.iter().enumerate() {
                let itf = format!("{sf}.{what}.items[{j}]");
                if item.key.is_empty() {
                    errs.required(format!("{itf}.key"), "");
                }
                validate_path(&item.path, &format!("{itf}.path"), &mut paths, errs);
                validate_mode(item.mode, &format!("{itf}.mode"), errs);
            }
        }
        if let Some(d) = &s.downward_api {
            for (j, item) in d.items.iter().enumerate() {
                validate_downward_file(item, &format!("{sf}.downwardAPI.items[{j}]"), &mut paths, errs);
            }
        }
        if let Some(t) = &s.service_account_token {
            let tf = format!("{sf}.serviceAccountToken");
            validate_path(&t.path, &format!("{tf}.path"), &mut paths, errs);
            match t.expiration_seconds {
                Some(e) if e < MIN_TOKEN_SECONDS => errs.invalid(
                    format!("{tf}.expirationSeconds"),
                    e,
                    "may not specify a duration less than 10 minutes",
                ),
                Some(e) if e > u32::MAX as i64 => errs.invalid(
                    format!("{tf}.expirationSeconds"),
                    e,
                    "may not specify a duration larger than 2^32 seconds",
                ),
                _ => {}
            }
        }
    }
}

fn validate_downward_file(
    item: &corev1::DownwardApiVolumeFile,
    f: &str,
    paths: &mut HashSet<String>,
    errs: &mut Errors,
) {
    validate_path(&item.path, &format!("{f}.path"), paths, errs);
    validate_mode(item.mode, &format!("{f}.mode"), errs);
    match (&item.field_ref, &item.resource_field_ref) {
        (Some(r), None) => {
            let path = r.field_path.as_str();
            let ok = VOLUME_FIELD_PATHS.contains(&path)
                || (path.starts_with("metadata.labels['") || path.starts_with("metadata.annotations['"))
                    && path.ends_with("']");
            if !ok {
                errs.not_supported(format!("{f}.fieldRef.fieldPath"), path, VOLUME_FIELD_PATHS);
            }
        }
        (None, Some(r)) => {
            if r.container_name.is_empty() {
                errs.required(
                    format!("{f}.resourceFieldRef.containerName"),
                    "must specify container name for volumes",
                );
            }
            if !RESOURCE_FIELDS.contains(&r.resource.as_str()) {
                errs.not_supported(
                    format!("{f}.resourceFieldRef.resource"),
                    &r.resource,
                    RESOURCE_FIELDS,
                );
            }
        }
        _ => errs.invalid(
            f.to_string(),
            "",
            "fieldRef and resourceFieldRef can not be specified simultaneously, and one of them is required",
        ),
    }
}

/// A file's path in a volume: relative, without `..`, and not used twice.
fn validate_path(path: &str, f: &str, paths: &mut HashSet<String>, errs: &mut Errors) {
    if path.is_empty() {
        errs.required(f.to_string(), "");
        return;
    }
    if path.starts_with('/') {
        errs.invalid(f.to_string(), path, "must be a relative path");
    }
    if path.split('/').any(|c| c == "..") {
        errs.invalid(f.to_string(), path, "must not contain '..'");
    }
    if !paths.insert(path.trim_start_matches("./").to_string()) {
        errs.invalid(f.to_string(), path, "conflicting duplicate paths");
    }
}

fn validate_mode(mode: Option<i32>, f: &str, errs: &mut Errors) {
    if let Some(m) = mode {
        if !(0..=0o777).contains(&m) {
            errs.invalid(
                f.to_string(),
                m,
                "must be a number between 0 and 0777 (octal), both inclusive",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(yaml: &str) -> corev1::Volume {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn errors(v: &corev1::Volume) -> Vec<String> {
        let mut errs = Errors::default();
        validate_projected_sources(v, "spec.volumes[0]", &mut errs);
        errs.0.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_well_formed_projection_passes() {
        let v = volume(
            r#"
name: all
projected:
  defaultMode: 288
  sources:
  - serviceAccountToken: {path: token, audience: vault, expirationSeconds: 3600}
  - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
  - downwardAPI: {items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]}
  - secret: {name: creds, optional: true}
"#,
        );
        assert_eq!(errors(&v), Vec::<String>::new());
    }

    #[test]
    fn each_mistake_is_named_by_its_field() {
        let v = volume(
            r#"
name: bad
projected:
  sources:
  - {}
  - serviceAccountToken: {path: ../token, expirationSeconds: 60}
  - downwardAPI:
      items:
      - {path: ip, fieldRef: {fieldPath: status.podIP}}
      - {path: cpu, resourceFieldRef: {resource: limits.cpu}}
      - {path: ip}
"#,
        );
        let got = errors(&v).join("\n");
        for want in [
            "spec.volumes[0].projected.sources[0]: Required value: exactly one of secret",
            "sources[1].serviceAccountToken.path: Invalid value: \"../token\": must not contain '..'",
            "sources[1].serviceAccountToken.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes",
            "sources[2].downwardAPI.items[0].fieldRef.fieldPath: Unsupported value",
            "sources[2].downwardAPI.items[1].resourceFieldRef.containerName: Required value: must specify container name for volumes",
            "sources[2].downwardAPI.items[2].path: Invalid value: \"ip\": conflicting duplicate paths",
            "sources[2].downwardAPI.items[2]: Invalid value: \"\": fieldRef and resourceFieldRef",
        ] {
            assert!(got.contains(want), "missing {want:?} in\n{got}");
        }
    }
}
