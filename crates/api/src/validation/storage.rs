//! Storage: PersistentVolumeClaims, the claim templates of StatefulSets,
//! PersistentVolumes and StorageClasses, in Kubernetes' words.

use super::meta::{validate_meta, NameRule};
use super::{Errors, FieldError, Validate};
use crate::core::v1::{PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec};
use crate::storage::v1::StorageClass;

const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

/// A claim's spec at `f`: at least one known access mode, a storage request, and a volume
/// mode rkube can give.
pub(super) fn validate_claim_spec(spec: Option<&PersistentVolumeClaimSpec>, f: &str, e: &mut Errors) {
    let Some(spec) = spec else {
        e.required(format!("{f}.accessModes"), "at least 1 access mode is required");
        e.required(format!("{f}.resources[storage]"), "");
        return;
    };
    if spec.access_modes.is_empty() {
        e.required(format!("{f}.accessModes"), "at least 1 access mode is required");
    }
    for (j, mode) in spec.access_modes.iter().enumerate() {
        e.one_of(format!("{f}.accessModes[{j}]"), mode, ACCESS_MODES);
    }
    match spec.resources.as_ref().and_then(|r| r.requests.get("storage")) {
        None => e.required(format!("{f}.resources[storage]"), ""),
        Some(q) => match q.value() {
            Ok(bytes) if bytes > 0 => {}
            Ok(_) => e.invalid(
                format!("{f}.resources[storage]"),
                q.to_string(),
                "must be greater than zero",
            ),
            Err(err) => e.invalid(format!("{f}.resources[storage]"), q.to_string(), err.to_string()),
        },
    }
    if let Some(mode) = &spec.volume_mode {
        // Block volumes need device plumbing the kubelet does not have (yet).
        e.one_of(format!("{f}.volumeMode"), mode, &["Filesystem"]);
    }
}

impl Validate for PersistentVolumeClaim {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        validate_claim_spec(self.spec.as_ref(), "spec", &mut e);
        e.0
    }

    /// As Kubernetes: a claim's spec is fixed once created, but for its size.
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut e = Errors::default();
        // The binder sets volumeName once, and admission the class once, as Kubernetes
        // allows.
        let without_size = |c: &PersistentVolumeClaim| {
            c.spec.clone().map(|mut s| {
                s.resources = None;
                if old.spec.as_ref().is_some_and(|o| o.volume_name.is_empty()) {
                    s.volume_name.clear();
                }
                if old.spec.as_ref().is_some_and(|o| o.storage_class_name.is_none()) {
                    s.storage_class_name = None;
                }
                s
            })
        };
        if without_size(self) != without_size(old) {
            e.forbidden(
                "spec",
                "spec is immutable after creation except resources.requests",
            );
        }
        e.0
    }
}

const RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];
const BINDING_MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];

impl Validate for PersistentVolume {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        let spec = self.spec.clone().unwrap_or_default();
        if spec.access_modes.is_empty() {
            e.required("spec.accessModes", "");
        }
        for (j, mode) in spec.access_modes.iter().enumerate() {
            e.one_of(format!("spec.accessModes[{j}]"), mode, ACCESS_MODES);
        }
        match spec.capacity.get("storage") {
            None if spec.capacity.is_empty() => e.required("spec.capacity", ""),
            None => e.required("spec.capacity[storage]", ""),
            Some(q) => match q.value() {
                Ok(bytes) if bytes > 0 => {}
                Ok(_) => e.invalid(
                    "spec.capacity[storage]",
                    q.to_string(),
                    "must be greater than zero",
                ),
                Err(err) => e.invalid("spec.capacity[storage]", q.to_string(), err.to_string()),
            },
        }
        for k in spec.capacity.keys().filter(|k| *k != "storage") {
            e.not_supported("spec.capacity", k, &["storage"]);
        }
        e.one_of(
            "spec.persistentVolumeReclaimPolicy".into(),
            &spec.persistent_volume_reclaim_policy,
            RECLAIM_POLICIES,
        );
        if let Some(mode) = &spec.volume_mode {
            e.one_of("spec.volumeMode".into(), mode, &["Filesystem"]);
        }
        match (&spec.host_path, &spec.local) {
            (None, None) => e.required("spec", "must specify a volume type"),
            (Some(_), Some(_)) => e.forbidden("spec.local", "may not specify more than 1 volume type"),
            _ => {}
        }
        if let Some(h) = &spec.host_path {
            if h.path.is_empty() {
                e.required("spec.hostPath.path", "");
            } else if !h.path.starts_with('/') {
                e.invalid("spec.hostPath.path", &h.path, "must be an absolute path");
            }
        }
        if let Some(l) = &spec.local {
            if l.path.is_empty() {
                e.required("spec.local.path", "");
            } else if !l.path.starts_with('/') {
                e.invalid("spec.local.path", &l.path, "must be an absolute path");
            }
            if spec.node_affinity.is_none() {
                e.required("spec.nodeAffinity", "Local volume requires node affinity");
            }
        }
        if let Some(affinity) = &spec.node_affinity {
            match &affinity.required {
                None => e.required("spec.nodeAffinity.required", ""),
                Some(sel) if sel.node_selector_terms.is_empty() => e.required(
                    "spec.nodeAffinity.required.nodeSelectorTerms",
                    "must have at least one node selector term",
                ),
                Some(sel) => {
                    for (i, t) in sel.node_selector_terms.iter().enumerate() {
                        super::pod::validate_node_selector_term(
                            t,
                            &format!("spec.nodeAffinity.required.nodeSelectorTerms[{i}]"),
                            &mut e,
                        );
                    }
                }
            }
        }
        if let Some(c) = &spec.claim_ref {
            if c.name.is_empty() {
                e.required("spec.claimRef.name", "");
            }
            if c.namespace.is_empty() {
                e.required("spec.claimRef.namespace", "");
            }
        }
        e.0
    }

    /// As Kubernetes: the source and the volume mode are fixed, node affinity may not change.
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut e = Errors::default();
        let (new, old) = (
            self.spec.clone().unwrap_or_default(),
            old.spec.clone().unwrap_or_default(),
        );
        if (new.host_path, new.local) != (old.host_path, old.local) {
            e.forbidden(
                "spec.persistentvolumesource",
                "spec.persistentvolumesource is immutable after creation",
            );
        }
        if new.volume_mode != old.volume_mode {
            e.forbidden("spec.volumeMode", "field is immutable");
        }
        if old.node_affinity.is_some() && new.node_affinity != old.node_affinity {
            e.forbidden("spec.nodeAffinity", "field is immutable");
        }
        e.0
    }
}

impl Validate for StorageClass {
    fn validate(&self) -> Vec<FieldError> {
        let mut e = Errors::default();
        validate_meta(self.metadata.as_ref(), NameRule::Subdomain, &mut e);
        if self.provisioner.is_empty() {
            e.required("provisioner", "");
        }
        if let Some(p) = &self.reclaim_policy {
            e.one_of("reclaimPolicy".into(), p, RECLAIM_POLICIES);
        }
        if let Some(m) = &self.volume_binding_mode {
            e.one_of("volumeBindingMode".into(), m, BINDING_MODES);
        }
        e.0
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut e = Errors::default();
        if self.parameters != old.parameters {
            e.forbidden("parameters", "updates to parameters are forbidden.");
        }
        if self.provisioner != old.provisioner {
            e.forbidden("provisioner", "updates to provisioner are forbidden.");
        }
        if self.reclaim_policy != old.reclaim_policy {
            e.forbidden("reclaimPolicy", "updates to reclaimPolicy are forbidden.");
        }
        if self.volume_binding_mode != old.volume_binding_mode {
            e.forbidden("volumeBindingMode", "field is immutable");
        }
        e.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_yaml<T: serde::de::DeserializeOwned>(y: &str) -> serde_yaml::Result<T> {
        serde_yaml::from_str(y)
    }

    fn errors<T: Validate>(v: &T) -> Vec<String> {
        v.validate().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn persistent_volumes_are_validated_in_kubernetes_words() {
        let pv: PersistentVolume = from_yaml(
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: pv1}\nspec:\n  accessModes: [ReadWriteOnce]\n  capacity: {storage: 1Gi}\n  persistentVolumeReclaimPolicy: Recycle\n  local: {path: data}\n",
        )
        .unwrap();
        assert_eq!(
            errors(&pv),
            vec![
                "spec.persistentVolumeReclaimPolicy: Unsupported value: supported values: \"Delete\", \"Retain\": got \"Recycle\"",
                "spec.local.path: Invalid value: \"data\": must be an absolute path",
                "spec.nodeAffinity: Required value: Local volume requires node affinity",
            ]
        );
        let none: PersistentVolume =
            from_yaml("apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: pv1}\nspec: {persistentVolumeReclaimPolicy: Retain}\n").unwrap();
        assert_eq!(
            errors(&none),
            vec![
                "spec.accessModes: Required value",
                "spec.capacity: Required value",
                "spec: Required value: must specify a volume type",
            ]
        );
    }

    #[test]
    fn storage_classes_are_validated_and_fixed_once_made() {
        let sc: StorageClass = from_yaml(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fast}\nprovisioner: rkube.io/local\nvolumeBindingMode: Later\n",
        )
        .unwrap();
        assert_eq!(
            errors(&sc),
            vec!["volumeBindingMode: Unsupported value: supported values: \"Immediate\", \"WaitForFirstConsumer\": got \"Later\""]
        );
        let mut changed = sc.clone();
        changed.provisioner = "other".into();
        let e: Vec<String> = changed
            .validate_update(&sc)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            e,
            vec!["provisioner: Forbidden: updates to provisioner are forbidden."]
        );
    }

    #[test]
    fn a_claim_may_be_bound_once() {
        let old: PersistentVolumeClaim = from_yaml(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data, namespace: default}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
        )
        .unwrap();
        let mut bound = old.clone();
        bound.spec.as_mut().unwrap().volume_name = "pv1".into();
        bound.spec.as_mut().unwrap().storage_class_name = Some("standard".into());
        assert!(bound.validate_update(&old).is_empty());
        let mut rebound = bound.clone();
        rebound.spec.as_mut().unwrap().volume_name = "pv2".into();
        assert_eq!(rebound.validate_update(&bound).len(), 1);
    }
}
