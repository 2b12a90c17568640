//! `get pvc`: NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS
//! VOLUMEATTRIBUTESCLASS AGE (wide adds VOLUMEMODE), as kubectl prints them.

use super::{age, Column, TableRow};
use chrono::{DateTime, Utc};
use rkube_api::core::v1::PersistentVolumeClaim;

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

#[cfg(test)]
mod tests {
    use super::*;

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
