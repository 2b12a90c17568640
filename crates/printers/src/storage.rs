//! `get pvc`: NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS
//! VOLUMEATTRIBUTESCLASS AGE (wide adds VOLUMEMODE); `get pv`: NAME CAPACITY
//! ACCESS MODES RECLAIM POLICY STATUS CLAIM STORAGECLASS VOLUMEATTRIBUTESCLASS
//! REASON AGE (wide adds VOLUMEMODE); `get sc`: NAME PROVISIONER RECLAIMPOLICY
//! VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE, as kubectl prints them.

use super::{age, Column, TableRow};
use chrono::{DateTime, Utc};
use rkube_api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use rkube_api::storage::v1::StorageClass;

/// `RWO,RWX`: access modes as kubectl abbreviates them.
fn access_modes(modes: &[String]) -> String {
    let mut short: Vec<&str> = Vec::new();
    for (mode, abbreviation) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if modes.iter().any(|m| m == mode) {
            short.push(abbreviation);
        }
    }
    short.join(",")
}

impl TableRow for PersistentVolumeClaim {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Status", "The current phase of the claim."),
        Column::string(
            "Volume",
            "The binding reference to the volume backing this claim.",
        ),
        Column::string("Capacity", "The actual resources of the underlying volume."),
        Column::string(
            "Access Modes",
            "The access modes the volume backing the claim has.",
        ),
        Column::string("StorageClass", "StorageClass of the pvc"),
        Column::string("VolumeAttributesClass", "VolumeAttributesClass of the pvc"),
        Column::AGE,
        Column::string("VolumeMode", "What type of volume is required by the claim.").wide(),
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        // capacity and access modes mean something once a volume is bound
        let (capacity, modes) = if spec.volume_name.is_empty() {
            (String::new(), String::new())
        } else {
            (
                status
                    .capacity
                    .get("storage")
                    .map(|q| q.to_string())
                    .unwrap_or_default(),
                access_modes(&status.access_modes),
            )
        };
        vec![
            meta.name,
            status.phase,
            spec.volume_name,
            capacity,
            modes,
            spec.storage_class_name.unwrap_or_default(),
            "<unset>".into(),
            age(&meta.creation_timestamp, now),
            spec.volume_mode.unwrap_or_else(|| "<unset>".into()),
        ]
    }
}

impl TableRow for PersistentVolume {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Capacity", "The size of the volume."),
        Column::string("Access Modes", "The ways the volume can be mounted."),
        Column::string(
            "Reclaim Policy",
            "What happens to the volume when its claim is deleted.",
        ),
        Column::string("Status", "The current phase of the volume."),
        Column::string("Claim", "The claim bound to the volume."),
        Column::string("StorageClass", "StorageClass of the pv"),
        Column::string("VolumeAttributesClass", "VolumeAttributesClass of the pv"),
        Column::string("Reason", "Reason why the volume is in its phase."),
        Column::AGE,
        Column::string("VolumeMode", "What type of volume it is.").wide(),
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let claim = spec
            .claim_ref
            .as_ref()
            .map(|c| format!("{}/{}", c.namespace, c.name))
            .unwrap_or_default();
        vec![
            meta.name,
            spec.capacity
                .get("storage")
                .map(|q| q.to_string())
                .unwrap_or_default(),
            access_modes(&spec.access_modes),
            spec.persistent_volume_reclaim_policy,
            status.phase,
            claim,
            spec.storage_class_name,
            "<unset>".into(),
            status.reason,
            age(&meta.creation_timestamp, now),
            spec.volume_mode.unwrap_or_else(|| "<unset>".into()),
        ]
    }
}

impl TableRow for StorageClass {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Provisioner", "Indicates the type of the provisioner."),
        Column::string("ReclaimPolicy", "Indicates the type of the reclaim policy."),
        Column::string(
            "VolumeBindingMode",
            "Indicates how PersistentVolumeClaims should be provisioned and bound.",
        ),
        Column::string(
            "AllowVolumeExpansion",
            "Indicates whether the storage class allow volume expand.",
        ),
        Column::AGE,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        // as kubectl: the default class is marked after its name
        let default = meta
            .annotations
            .get("storageclass.kubernetes.io/is-default-class")
            .is_some_and(|v| v == "true");
        vec![
            if default {
                format!("{} (default)", meta.name)
            } else {
                meta.name.clone()
            },
            self.provisioner.clone(),
            self.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            self.volume_binding_mode
                .clone()
                .unwrap_or_else(|| "Immediate".into()),
            self.allow_volume_expansion.unwrap_or(false).to_string(),
            age(&meta.creation_timestamp, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_and_classes_print_as_kubectl_prints_them() {
        let now = crate::parse_time("2024-05-01T12:00:00Z").unwrap();
        let pv: PersistentVolume = serde_yaml::from_str(
            "metadata: {name: pvc-1, creationTimestamp: '2024-05-01T11:00:00Z'}\nspec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], persistentVolumeReclaimPolicy: Delete, storageClassName: local, claimRef: {namespace: default, name: data}}\nstatus: {phase: Bound}\n",
        )
        .unwrap();
        assert_eq!(
            pv.cells(false, now)[..7],
            ["pvc-1", "1Gi", "RWO", "Delete", "Bound", "default/data", "local"]
        );
        let sc: StorageClass = serde_yaml::from_str(
            "metadata: {name: local, creationTimestamp: '2024-05-01T11:00:00Z', annotations: {storageclass.kubernetes.io/is-default-class: 'true'}}\nprovisioner: rkube.io/local\nvolumeBindingMode: WaitForFirstConsumer\n",
        )
        .unwrap();
        assert_eq!(
            sc.cells(false, now),
            [
                "local (default)",
                "rkube.io/local",
                "Delete",
                "WaitForFirstConsumer",
                "false",
                "60m"
            ]
        );
    }

    #[test]
    fn a_pending_claim_shows_no_capacity_yet() {
        let now = crate::parse_time("2024-05-01T12:00:00Z").unwrap();
        let pvc: PersistentVolumeClaim = serde_yaml::from_str(
            "metadata: {name: data, creationTimestamp: '2024-05-01T11:00:00Z'}\nspec: {accessModes: [ReadWriteOnce], storageClassName: local, volumeMode: Filesystem}\nstatus: {phase: Pending}\n",
        )
        .unwrap();
        assert_eq!(
            pvc.cells(true, now),
            [
                "data",
                "Pending",
                "",
                "",
                "",
                "local",
                "<unset>",
                "60m",
                "Filesystem"
            ]
        );
        assert_eq!(
            access_modes(&["ReadWriteMany".into(), "ReadWriteOnce".into()]),
            "RWO,RWX"
        );
    }
}
