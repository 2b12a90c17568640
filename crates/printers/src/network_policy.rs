//! `get networkpolicies` (NAME POD-SELECTOR AGE), as kubectl prints them.

use super::apps::label_selector;
use super::{age, or_none, Column, TableRow};
use chrono::{DateTime, Utc};
use rkube_api::networking::v1::NetworkPolicy;

impl TableRow for NetworkPolicy {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string(
            "Pod-Selector",
            "podSelector selects the pods to which this NetworkPolicy object applies. An empty selector matches all pods in the policy's namespace.",
        ),
        Column::AGE,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let selector = self.spec.as_ref().and_then(|s| s.pod_selector.as_ref());
        vec![
            meta.name,
            // kubectl's FormatLabelSelector: the empty selector is `<none>`
            or_none(label_selector(selector)),
            age(&meta.creation_timestamp, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_selector_column() {
        let np = |yaml: &str| -> NetworkPolicy { serde_yaml::from_str(yaml).unwrap() };
        let db = np("metadata: {name: db}\nspec: {podSelector: {matchLabels: {app: db, tier: data}}}\n");
        assert_eq!(db.cells(false, Utc::now())[..2], ["db", "app=db,tier=data"]);
        let deny = np("metadata: {name: deny-all}\nspec: {podSelector: {}}\n");
        assert_eq!(deny.cells(false, Utc::now())[..2], ["deny-all", "<none>"]);
    }
}
