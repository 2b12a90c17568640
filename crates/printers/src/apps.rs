//! `get deployments` (NAME READY UP-TO-DATE AVAILABLE AGE), `get replicasets` (NAME
//! DESIRED CURRENT READY AGE), `get daemonsets` (NAME DESIRED CURRENT READY UP-TO-DATE
//! AVAILABLE NODE SELECTOR AGE) and `get statefulsets` (NAME READY AGE), as kubectl prints
//! them; wide adds CONTAINERS IMAGES (and SELECTOR but for StatefulSets). `get
//! controllerrevisions`: NAME CONTROLLER REVISION AGE.

use super::{age, or_none, Column, TableRow, CONTAINERS, IMAGES, SELECTOR};
use chrono::{DateTime, Utc};
use rkube_api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use rkube_api::core::v1::PodTemplateSpec;
use rkube_api::meta::v1::LabelSelector;
use rkube_api::selector::Selector;

/// CONTAINERS, IMAGES and SELECTOR of a workload.
pub(super) fn workload_wide(
    template: Option<&PodTemplateSpec>,
    selector: Option<&LabelSelector>,
) -> [String; 3] {
    let containers = template
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers.iter().map(|c| c.image.as_str()).collect();
    [
        or_none(names.join(",")),
        or_none(images.join(",")),
        or_none(label_selector(selector)),
    ]
}

/// A structured selector in its string form (`app=web,tier in (fe)`).
pub fn label_selector(selector: Option<&LabelSelector>) -> String {
    match selector.map(Selector::from_label_selector) {
        Some(Ok(s)) => s.to_string(),
        Some(Err(_)) => "<error>".into(),
        None => String::new(),
    }
}

impl TableRow for Deployment {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Ready", "Number of the pod with ready state"),
        Column::string("Up-to-date", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
        Column::string("Available", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
        Column::AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let mut cells = vec![
            meta.name,
            format!("{}/{}", status.ready_replicas, spec.replicas.unwrap_or(1)),
            status.updated_replicas.to_string(),
            status.available_replicas.to_string(),
            age(&meta.creation_timestamp, now),
        ];
        cells.extend(workload_wide(spec.template.as_ref(), spec.selector.as_ref()));
        cells
    }
}

impl TableRow for ReplicaSet {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::integer("Desired", "Replicas is the number of desired replicas."),
        Column::integer(
            "Current",
            "Replicas is the most recently observed number of replicas.",
        ),
        Column::integer("Ready", "The number of ready replicas for this replica set."),
        Column::AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let mut cells = vec![
            meta.name,
            spec.replicas.unwrap_or(1).to_string(),
            status.replicas.to_string(),
            status.ready_replicas.to_string(),
            age(&meta.creation_timestamp, now),
        ];
        cells.extend(workload_wide(spec.template.as_ref(), spec.selector.as_ref()));
        cells
    }
}

impl TableRow for DaemonSet {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::integer("Desired", "The total number of nodes that should be running the daemon pod."),
        Column::integer("Current", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
        Column::integer("Ready", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
        Column::integer("Up-to-date", "The total number of nodes that are running updated daemon pod."),
        Column::integer("Available", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available."),
        Column::string("Node Selector", "The pod template's nodeSelector."),
        Column::AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let node_selector: Vec<String> = spec
            .template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .map(|s| s.node_selector.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        let mut cells = vec![
            meta.name,
            status.desired_number_scheduled.to_string(),
            status.current_number_scheduled.to_string(),
            status.number_ready.to_string(),
            status.updated_number_scheduled.to_string(),
            status.number_available.to_string(),
            or_none(node_selector.join(",")),
            age(&meta.creation_timestamp, now),
        ];
        cells.extend(workload_wide(spec.template.as_ref(), spec.selector.as_ref()));
        cells
    }
}

impl TableRow for StatefulSet {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Ready", "Number of the pod with ready state"),
        Column::AGE,
        CONTAINERS,
        IMAGES,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let spec = self.spec.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let [containers, images, _] = workload_wide(spec.template.as_ref(), None);
        vec![
            meta.name,
            format!("{}/{}", status.ready_replicas, spec.replicas.unwrap_or(1)),
            age(&meta.creation_timestamp, now),
            containers,
            images,
        ]
    }
}

impl TableRow for ControllerRevision {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Controller", "Controller of the object"),
        Column::integer("Revision", "Revision of the ControllerRevision"),
        Column::AGE,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        // as kubectl: `daemonset.apps/agent`
        let controller = meta
            .owner_references
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| {
                let group = o.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
                let kind = o.kind.to_lowercase();
                match group {
                    "" => format!("{kind}/{}", o.name),
                    g => format!("{kind}.{g}/{}", o.name),
                }
            });
        vec![
            meta.name,
            or_none(controller.unwrap_or_default()),
            self.revision.to_string(),
            age(&meta.creation_timestamp, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_time;

    #[test]
    fn controller_revision_row() {
        let now = parse_time("2024-05-01T12:00:00Z").unwrap();
        let r: ControllerRevision = serde_yaml::from_str(
            "metadata: {name: agent-7d9f, creationTimestamp: '2024-05-01T11:59:00Z', ownerReferences: [{apiVersion: apps/v1, kind: DaemonSet, name: agent, uid: u, controller: true}]}\nrevision: 3\n",
        )
        .unwrap();
        assert_eq!(
            r.cells(false, now),
            ["agent-7d9f", "daemonset.apps/agent", "3", "60s"]
        );
    }

    #[test]
    fn deployment_row() {
        let now = parse_time("2024-05-01T12:00:00Z").unwrap();
        let d: Deployment = serde_yaml::from_str(
            "metadata: {name: web, creationTimestamp: '2024-05-01T11:59:15Z'}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template: {spec: {containers: [{name: nginx, image: 'nginx:1.25'}, {name: log, image: busybox}]}}\nstatus: {readyReplicas: 2, updatedReplicas: 3, availableReplicas: 2}\n",
        )
        .unwrap();
        assert_eq!(d.cells(false, now)[..5], ["web", "2/3", "3", "2", "45s"]);
        assert_eq!(
            d.cells(true, now)[5..],
            [
                "nginx,log".to_string(),
                "nginx:1.25,busybox".into(),
                "app=web".into()
            ]
        );
    }

    #[test]
    fn replicaset_row_without_status() {
        let now = parse_time("2024-05-01T12:00:00Z").unwrap();
        let rs: ReplicaSet = serde_yaml::from_str(
            "metadata: {name: web-1, creationTimestamp: '2024-04-29T12:00:00Z'}\nspec: {replicas: 2}\n",
        )
        .unwrap();
        assert_eq!(rs.cells(false, now)[..5], ["web-1", "2", "0", "0", "2d"]);
    }
}
