//! VolumeBinding: a pod whose claims are bound to volumes with node affinity (a
//! node's local volume) goes where those volumes are. What the pod's claims say is
//! worked out once per attempt by [`claim_constraints`]: a claim that does not exist,
//! or is unbound in a class that binds immediately, keeps the pod pending (the
//! binder or provisioner will bind it); an unbound WaitForFirstConsumer claim gets
//! the chosen node as `volume.kubernetes.io/selected-node` when the pod is bound, so
//! its volume is provisioned there.

use super::{Cycle, FilterPlugin, Unfit};
use crate::cache::NodeInfo;
use crate::pod_info::PodInfo;
use rkube_api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume, PersistentVolumeClaim, Pod,
};
use rkube_api::storage::v1::StorageClass;
use rkube_api::Resource;
use rkube_client::Store;

pub const REASON: &str = "node(s) had volume node affinity conflict";
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

pub struct VolumeBinding;

impl FilterPlugin for VolumeBinding {
    fn name(&self) -> &'static str {
        "VolumeBinding"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo, _: &Cycle<'_>) -> Result<(), Unfit> {
        let fits = pod.volume_affinity.iter().all(|sel| {
            sel.node_selector_terms
                .iter()
                .any(|t| super::node_affinity::term_matches(t, node))
        });
        if fits {
            Ok(())
        } else {
            Err(Unfit::new(REASON))
        }
    }
}

/// What the pod's claims require: the node selectors of their volumes, and the claims
/// that wait for this pod's node. `Err` says why the pod cannot be placed yet.
pub fn claim_constraints(
    pod: &Pod,
    claims: &Store<PersistentVolumeClaim>,
    volumes: &Store<PersistentVolume>,
    classes: &Store<StorageClass>,
) -> Result<(Vec<NodeSelector>, Vec<String>), String> {
    let mut affinity = Vec::new();
    let mut waiting = Vec::new();
    let names = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str());
    for name in names {
        let Some(claim) = claims.get_namespaced(pod.namespace(), name) else {
            return Err(format!("persistentvolumeclaim {name:?} not found"));
        };
        if !claim.metadata().deletion_timestamp.is_empty() {
            return Err(format!("persistentvolumeclaim {name:?} is being deleted"));
        }
        let spec = claim.spec.clone().unwrap_or_default();
        if !spec.volume_name.is_empty() {
            let Some(pv) = volumes.get(&spec.volume_name) else {
                return Err(format!(
                    "persistentvolume {:?} of claim {name:?} not found",
                    spec.volume_name
                ));
            };
            if let Some(sel) = pv
                .spec
                .as_ref()
                .and_then(|s| s.node_affinity.as_ref())
                .and_then(|a| a.required.clone())
            {
                affinity.push(sel);
            }
            continue;
        }
        let class = classes.get(spec.storage_class_name.as_deref().unwrap_or(""));
        let wait = class.is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
        if !wait {
            return Err("pod has unbound immediate PersistentVolumeClaims".into());
        }
        match claim.metadata().annotations.get(SELECTED_NODE) {
            // chosen for an earlier pod: its volume is being made there
            Some(node) => affinity.push(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_fields: vec![NodeSelectorRequirement {
                        key: "metadata.name".into(),
                        operator: "In".into(),
                        values: vec![node.clone()],
                    }],
                    ..Default::default()
                }],
            }),
            None => waiting.push(name.to_string()),
        }
    }
    Ok((affinity, waiting))
}
