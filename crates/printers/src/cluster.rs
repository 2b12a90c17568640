//! `get nodes` (NAME STATUS ROLES AGE VERSION, wide INTERNAL-IP
//! EXTERNAL-IP OS-IMAGE KERNEL-VERSION CONTAINER-RUNTIME) and `get
//! namespaces` (NAME STATUS AGE).

use super::{age, or_none, Column, TableRow};
use chrono::{DateTime, Utc};
use rkube_api::core::v1::{Namespace, Node};

/// `Ready`, `NotReady`, `Unknown`, with `,SchedulingDisabled` for a
/// cordoned node.
pub fn node_status(node: &Node) -> String {
    let conditions = node
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let mut parts: Vec<&str> = match conditions.iter().find(|c| c.r#type == "Ready") {
        Some(c) if c.status == "True" => vec!["Ready"],
        Some(_) => vec!["NotReady"],
        None => vec!["Unknown"],
    };
    if node.spec.as_ref().is_some_and(|s| s.unschedulable) {
        parts.push("SchedulingDisabled");
    }
    parts.join(",")
}

/// ROLES from `node-role.kubernetes.io/<role>` and `kubernetes.io/role`
/// labels.
pub fn node_roles(node: &Node) -> String {
    let labels = node
        .metadata
        .as_ref()
        .map(|m| m.labels.clone())
        .unwrap_or_default();
    let mut roles: Vec<String> = Vec::new();
    for (k, v) in &labels {
        if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.push(role.to_string());
            }
        } else if k == "kubernetes.io/role" && !v.is_empty() {
            roles.push(v.clone());
        }
    }
    roles.sort();
    roles.dedup();
    or_none(roles.join(","))
}

impl TableRow for Node {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Status", "The status of the node"),
        Column::string("Roles", "The roles of the node"),
        Column::AGE,
        Column::string("Version", "Kubelet Version reported by the node."),
        Column::string("Internal-IP", "The node's internal address.").wide(),
        Column::string("External-IP", "The node's external address.").wide(),
        Column::string("OS-Image", "OS Image reported by the node.").wide(),
        Column::string("Kernel-Version", "Kernel Version reported by the node.").wide(),
        Column::string(
            "Container-Runtime",
            "ContainerRuntime Version reported by the node.",
        )
        .wide(),
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let status = self.status.clone().unwrap_or_default();
        let info = status.node_info.clone().unwrap_or_default();
        let mut cells = vec![
            meta.name,
            node_status(self),
            node_roles(self),
            age(&meta.creation_timestamp, now),
            info.kubelet_version.clone(),
        ];
        let address = |t: &str| {
            or_none(
                status
                    .addresses
                    .iter()
                    .find(|a| a.r#type == t)
                    .map(|a| a.address.clone())
                    .unwrap_or_default(),
            )
        };
        let unknown = |s: String| if s.is_empty() { "<unknown>".to_string() } else { s };
        cells.extend([
            address("InternalIP"),
            address("ExternalIP"),
            unknown(info.os_image),
            unknown(info.kernel_version),
            unknown(info.container_runtime_version),
        ]);
        cells
    }
}

impl TableRow for Namespace {
    const COLUMNS: &'static [Column] = &[
        Column::NAME,
        Column::string("Status", "The status of the namespace"),
        Column::AGE,
    ];

    fn cells(&self, _wide: bool, now: DateTime<Utc>) -> Vec<String> {
        let meta = self.metadata.clone().unwrap_or_default();
        let phase = self.status.as_ref().map(|s| s.phase.clone()).unwrap_or_default();
        vec![
            meta.name,
            if phase.is_empty() { "Active".into() } else { phase },
            age(&meta.creation_timestamp, now),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(yaml: &str) -> Node {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn status_from_ready_condition_and_cordon() {
        assert_eq!(
            node_status(&node("status: {conditions: [{type: Ready, status: 'True'}]}\n")),
            "Ready"
        );
        assert_eq!(
            node_status(&node("status: {conditions: [{type: Ready, status: Unknown}]}\n")),
            "NotReady"
        );
        assert_eq!(node_status(&node("metadata: {name: n}\n")), "Unknown");
        assert_eq!(
            node_status(&node(
                "spec: {unschedulable: true}\nstatus: {conditions: [{type: Ready, status: 'True'}]}\n"
            )),
            "Ready,SchedulingDisabled"
        );
    }

    #[test]
    fn roles_from_labels() {
        assert_eq!(node_roles(&node("metadata: {name: n}\n")), "<none>");
        assert_eq!(
            node_roles(&node("metadata: {name: n, labels: {node-role.kubernetes.io/control-plane: '', kubernetes.io/role: worker}}\n")),
            "control-plane,worker"
        );
    }

    #[test]
    fn wide_node_row() {
        let now = crate::parse_time("2024-05-01T12:00:00Z").unwrap();
        let n = node("metadata: {name: n1, creationTimestamp: '2024-05-01T11:00:00Z'}\nstatus:\n  conditions: [{type: Ready, status: 'True'}]\n  addresses: [{type: InternalIP, address: 192.168.1.10}]\n  nodeInfo: {kubeletVersion: v0.1.0, osImage: Debian GNU/Linux 12, kernelVersion: 6.1.0, containerRuntimeVersion: containerd://1.6.20}\n");
        assert_eq!(
            n.cells(true, now),
            vec![
                "n1",
                "Ready",
                "<none>",
                "60m",
                "v0.1.0",
                "192.168.1.10",
                "<none>",
                "Debian GNU/Linux 12",
                "6.1.0",
                "containerd://1.6.20"
            ]
        );
    }
}
