//! `get hpa`: NAME REFERENCE TARGETS MINPODS MAXPODS REPLICAS AGE, with
//! TARGETS as `current/target` per metric (`35%/50%`, `<unknown>/50%`).

use super::{age, Column, TableRow};
use chrono::{DateTime, Utc};
use rkube_api::autoscaling::v2::{HorizontalPodAutoscaler, MetricStatus, MetricTarget, MetricValueStatus};

/// How many metrics TARGETS lists before `+ N more...`.
const MAX_METRICS: usize = 3;

fn target_pair(target: Option<&MetricTarget>, current: Option<&MetricValueStatus>) -> String {
    let target = target.cloned().unwrap_or_default();
    if let Some(avg) = &target.average_value {
        let cur = current
            .and_then(|c| c.average_value.as_ref())
            .map(|q| q.to_string());
        return format!("{}/{avg}", cur.unwrap_or_else(|| "<unknown>".into()));
    }
    if let Some(value) = &target.value {
        let cur = current.and_then(|c| c.value.as_ref()).map(|q| q.to_string());
        return format!("{}/{value}", cur.unwrap_or_else(|| "<unknown>".into()));
    }
    let cur = current
        .and_then(|c| c.average_utilization)
        .map(|u| format!("{u}%"))
        .unwrap_or_else(|| "<unknown>".into());
    let want = target
        .average_utilization
        .map(|u| format!("{u}%"))
        .unwrap_or_else(|| "<auto>".into());
    format!("{cur}/{want}")
}

/// TARGETS: each spec metric beside the status metric at the same index,
/// as kubectl pairs them.
pub fn hpa_targets(hpa: &HorizontalPodAutoscaler) -> String {
    let metrics = hpa.spec.as_ref().map(|s| s.metrics.clone()).unwrap_or_default();
    if metrics.is_empty() {
        return "<none>".into();
    }
    let statuses: Vec<MetricStatus> = hpa
        .status
        .as_ref()
        .map(|s| s.current_metrics.clone())
        .unwrap_or_default();
    let mut list = Vec::new();
    for (i, m) in metrics.iter().enumerate().take(MAX_METRICS) {
        let status = statuses.get(i);
        let cell = match m.r#type.as_str() {
            "Resource" => target_pair(
                m.resource.as_ref().and_then(|r| r.target.as_ref()),
                status
                    .and_then(|s| s.resource.as_ref())
                    .and_then(|r| r.current.as_ref()),
            ),
            "ContainerResource" => target_pair(
                m.container_resource.as_ref().and_then(|r| r.target.as_ref()),
                status
                    .and_then(|s| s.container_resource.as_ref())
                    .and_then(|r| r.current.as_ref()),
            ),
            _ => "<unknown>/<unknown>".into(),
        };
        list.push(cell);
    }
    let joined = list.join(", ");
    if metrics.len() > MAX_METRICS {
        format!("{joined} + {} more...", metrics.len() - MAX_METRICS)
    } else {
        joined
    }
}

impl TableRow for HorizontalPodAutoscaler {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Reference", "The target resource being scaled."),
        Column::string(
            "Targets",
            "Current and wanted values of the metrics used to calculate the replica count.",
        ),
        Column::string("MinPods", "The lower limit for the number of replicas."),
        Column::string("MaxPods", "The upper limit for the number of replicas."),
        Column::string(
            "Replicas",
            "The current number of replicas of pods managed by this autoscaler.",
        ),
        Column::AGE,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let spec = self.spec.clone().unwrap_or_default();
        let target = spec.scale_target_ref.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        vec![
            meta.name,
            format!("{}/{}", target.kind, target.name),
            hpa_targets(self),
            spec.min_replicas
                .map(|m| m.to_string())
                .unwrap_or_else(|| "<unset>".into()),
            spec.max_replicas.to_string(),
            status.current_replicas.to_string(),
            age(&meta.creation_timestamp, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(status: &str) -> HorizontalPodAutoscaler {
        serde_yaml::from_str(&format!(
            "metadata: {{name: web}}\nspec:\n  scaleTargetRef: {{kind: Deployment, name: web, apiVersion: apps/v1}}\n  minReplicas: 1\n  maxReplicas: 10\n  metrics:\n  - type: Resource\n    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 50}}}}\n{status}"
        ))
        .unwrap()
    }

    #[test]
    fn targets_show_current_over_wanted() {
        assert_eq!(hpa_targets(&hpa("")), "<unknown>/50%");
        let h = hpa("status:\n  currentReplicas: 3\n  currentMetrics:\n  - type: Resource\n    resource: {name: cpu, current: {averageUtilization: 35}}\n");
        assert_eq!(hpa_targets(&h), "35%/50%");
        let now = crate::parse_time("2024-05-01T12:00:00Z").unwrap();
        assert_eq!(
            h.cells(false, now),
            vec!["web", "Deployment/web", "35%/50%", "1", "10", "3", "<unknown>"]
        );
    }

    #[test]
    fn average_value_targets() {
        let h: HorizontalPodAutoscaler = serde_yaml::from_str(
            "metadata: {name: w}\nspec:\n  maxReplicas: 3\n  metrics:\n  - type: Resource\n    resource: {name: memory, target: {type: AverageValue, averageValue: 100Mi}}\nstatus:\n  currentMetrics:\n  - type: Resource\n    resource: {name: memory, current: {averageValue: 64Mi}}\n",
        )
        .unwrap();
        assert_eq!(hpa_targets(&h), "64Mi/100Mi");
    }
}
