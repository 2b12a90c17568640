//! Volumes of the `local` provider: each volume is its own ext4 filesystem in
//! an image file on the node that uses it, attached through a loop device by
//! that node's kubelet. The provider only places it: the node must offer a
//! volume directory (its kubelet's `--volume-dir`, announced in the Node's
//! `rkube.io/local-volume-dir` annotation); the volume is the `local` source
//! `DIR/NAME` (the mount point; the image is `DIR/NAME.img`) with node
//! affinity to that node. The kubelet makes the filesystem on first mount
//! and reclaims the space once the volume object is gone, so the manager
//! needs no access to the node's disk.

use super::LocalCloud;
use crate::cloud::{CloudError, CloudResult, Volumes};
use async_trait::async_trait;
use rkube_api::core::v1::{
    LocalVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaim,
    PersistentVolumeSpec, VolumeNodeAffinity,
};
use rkube_api::Resource;

/// The provisioner name StorageClasses use for these volumes.
pub const PROVISIONER: &str = "rkube.io/local";
/// Where a node keeps its local volumes (set by its kubelet).
pub const VOLUME_DIR_ANNOTATION: &str = "rkube.io/local-volume-dir";

/// The `local` volume `name` on `node`.
pub fn local_volume(name: &str, node: &Node) -> CloudResult<PersistentVolumeSpec> {
    let Some(dir) = node.metadata().annotations.get(VOLUME_DIR_ANNOTATION) else {
        return Err(CloudError::Other(format!(
            "node {} offers no local volumes: its kubelet sets the {VOLUME_DIR_ANNOTATION} annotation when started with --volume-dir",
            node.name()
        )));
    };
    Ok(PersistentVolumeSpec {
        local: Some(LocalVolumeSource {
            path: format!("{}/{name}", dir.trim_end_matches('/')),
            fs_type: Some("ext4".into()),
        }),
        node_affinity: Some(VolumeNodeAffinity {
            required: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: vec![NodeSelectorRequirement {
                        key: "kubernetes.io/hostname".into(),
                        operator: "In".into(),
                        values: vec![node.name().to_string()],
                    }],
                    ..Default::default()
                }],
            }),
        }),
        ..Default::default()
    })
}

#[async_trait]
impl Volumes for LocalCloud {
    fn provisioner(&self) -> &str {
        PROVISIONER
    }

    async fn provision(
        &self,
        name: &str,
        _claim: &PersistentVolumeClaim,
        node: &Node,
    ) -> CloudResult<PersistentVolumeSpec> {
        local_volume(name, node)
    }
}
