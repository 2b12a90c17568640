//! `get pdb`: NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE;
//! `get quota`: NAME AGE REQUEST LIMIT (`used/hard` per resource); `get limits`: NAME
//! CREATED AT; `get priorityclasses`: NAME VALUE GLOBAL-DEFAULT AGE PREEMPTIONPOLICY; as
//! kubectl prints them.

use super::{age, Column, TableRow};
use chrono::{DateTime, Utc};
use rkube_api::core::v1::{LimitRange, ResourceQuota};
use rkube_api::policy::v1::PodDisruptionBudget;
use rkube_api::scheduling::v1::PriorityClass;

impl TableRow for PodDisruptionBudget {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string(
            "Min Available",
            "The minimum number of pods that must be available.",
        ),
        Column::string(
            "Max Unavailable",
            "The maximum number of pods that may be unavailable.",
        ),
        Column::integer(
            "Allowed Disruptions",
            "Calculated number of pods that may be disrupted at this time.",
        ),
        Column::AGE,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let spec = self.spec.clone().unwrap_or_default();
        let or_na =
            |v: Option<rkube_api::intstr::IntOrString>| v.map_or("N/A".to_string(), |v| v.to_string());
        vec![
            meta.name,
            or_na(spec.min_available),
            or_na(spec.max_unavailable),
            self.status
                .as_ref()
                .map_or(0, |s| s.disruptions_allowed)
                .to_string(),
            age(&meta.creation_timestamp, now),
        ]
    }
}

impl TableRow for ResourceQuota {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::AGE,
        Column::string("Request", "Request represents a minimum amount of cpu/memory that a container may consume."),
        Column::string("Limit", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let (mut request, mut limit) = (Vec::new(), Vec::new());
        for (name, hard) in &status.hard {
            let used = status.used.get(name).map_or("0".to_string(), |q| q.to_string());
            let cell = format!("{name}: {used}/{hard}");
            if name.starts_with("limits.") {
                limit.push(cell);
            } else {
                request.push(cell);
            }
        }
        vec![
            meta.name,
            age(&meta.creation_timestamp, now),
            request.join(", "),
            limit.join(", "),
        ]
    }
}

impl TableRow for LimitRange {
    const COLUMNS: &'static [Column] = &[Column::NAME, Column::CREATED_AT];

    fn cells(&self, _wide: bool, _now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        vec![meta.name, meta.creation_timestamp]
    }
}

impl TableRow for PriorityClass {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::integer("Value", "The integer value of this priority class."),
        Column::boolean(
            "Global-Default",
            "Whether this priority class is the default for pods without one.",
        ),
        Column::AGE,
        Column::string(
            "PreemptionPolicy",
            "The policy for preempting pods with lower priority.",
        ),
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        vec![
            meta.name,
            self.value.to_string(),
            self.global_default.to_string(),
            age(&meta.creation_timestamp, now),
            self.preemption_policy
                .clone()
                .unwrap_or_else(|| "PreemptLowerPriority".into()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::core::v1::ResourceQuotaStatus;
    use rkube_api::quantity::Quantity;

    #[test]
    fn quotas_show_used_over_hard_split_into_requests_and_limits() {
        let q = |v: &str| Quantity::new(v);
        let quota = ResourceQuota {
            status: Some(ResourceQuotaStatus {
                hard: [("pods", q("3")), ("limits.cpu", q("2"))]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                used: [("pods", q("1"))]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            }),
            ..Default::default()
        };
        let cells = quota.cells(false, Utc::now());
        assert_eq!(cells[2], "pods: 1/3");
        assert_eq!(cells[3], "limits.cpu: 0/2");
    }
}
