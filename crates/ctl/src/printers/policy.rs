//! `get pdb`: NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE;
//! `get quota`: NAME AGE REQUEST LIMIT (`used/hard` per resource), as kubectl prints them.

use super::{age, TableRow};
use chrono::{DateTime, Utc};
use rkube_api::core::v1::ResourceQuota;
use rkube_api::policy::v1::PodDisruptionBudget;

impl TableRow for PodDisruptionBudget {
    fn columns(_wide: bool) -> Vec<&'static str> {
        vec![
            "NAME",
            "MIN AVAILABLE",
            "MAX UNAVAILABLE",
            "ALLOWED DISRUPTIONS",
            "AGE",
        ]
    }

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
    fn columns(_wide: bool) -> Vec<&'static str> {
        vec!["NAME", "AGE", "REQUEST", "LIMIT"]
    }

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
