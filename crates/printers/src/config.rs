//! `get configmaps` (NAME DATA AGE) and `get secrets` (NAME TYPE DATA AGE).

use super::{age, Column, TableRow};
use chrono::{DateTime, Utc};
use rkube_api::core::v1::{ConfigMap, Secret};

impl TableRow for ConfigMap {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Data", "The number of keys in data and binaryData."),
        Column::AGE,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        vec![
            meta.name,
            (self.data.len() + self.binary_data.len()).to_string(),
            age(&meta.creation_timestamp, now),
        ]
    }
}

impl TableRow for Secret {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Type", "Used to facilitate programmatic handling of secret data."),
        Column::string("Data", "The number of keys in data."),
        Column::AGE,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        vec![
            meta.name,
            self.r#type.clone(),
            self.data.len().to_string(),
            age(&meta.creation_timestamp, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_counts_both_maps() {
        let now = crate::parse_time("2024-05-01T12:00:00Z").unwrap();
        let cm: ConfigMap =
            serde_yaml::from_str("metadata: {name: c}\ndata: {a: '1', b: '2'}\nbinaryData: {c: AA==}\n")
                .unwrap();
        assert_eq!(cm.cells(false, now), vec!["c", "3", "<unknown>"]);
        let s: Secret =
            serde_yaml::from_str("metadata: {name: s}\ntype: Opaque\ndata: {p: aHVudGVyMg==}\n").unwrap();
        assert_eq!(s.cells(false, now), vec!["s", "Opaque", "1", "<unknown>"]);
    }
}
