//! The volume-provisioner controller (Kubernetes' external-provisioner): a claim the
//! persistent-volume binder marked for this provider's provisioner
//! (`volume.kubernetes.io/storage-provisioner`) gets a PersistentVolume named
//! `pvc-<claim uid>`, pre-bound to it by claimRef, made by the provider's
//! [`Volumes`](crate::cloud::Volumes) on the node the scheduler chose
//! (`volume.kubernetes.io/selected-node`, WaitForFirstConsumer) or, for
//! Immediate classes, on the first Ready node by name that the provider can
//! serve. The binder then binds the two; reclaiming is the binder's.

use super::{ready_status, Error};
use crate::{Context, Shutdown};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::core::v1::{Node, ObjectReference, PersistentVolume, PersistentVolumeClaim};
use rkube_api::meta::v1::ObjectMeta;
use rkube_api::storage::v1::StorageClass;
use rkube_api::Resource;
use rkube_client::{Action, Api, Controller, EventType, Store};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "volume-provisioner";
const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

struct State {
    ctx: Arc<Context>,
    claims: Store<PersistentVolumeClaim>,
    classes: Store<StorageClass>,
    nodes: Store<Node>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        if ctx.cloud.volumes().is_none() {
            return super::idle(NAME, "the provider has no volumes", shutdown).await;
        }
        let claims = ctx.informers.get::<PersistentVolumeClaim>();
        let classes = ctx.informers.get::<StorageClass>();
        let nodes = ctx.informers.get::<Node>();
        let state = Arc::new(State {
            ctx: ctx.clone(),
            claims: claims.store(),
            classes: classes.store(),
            nodes: nodes.store(),
        });
        Controller::new(NAME, state, reconcile)
            .primary(&claims)
            .workers(ctx.config.workers)
            .resync(Duration::from_secs(60))
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

fn storage_request(claim: &PersistentVolumeClaim) -> BTreeMap<String, rkube_api::quantity::Quantity> {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.get("storage"))
        .map(|q| BTreeMap::from([("storage".to_string(), q.clone())]))
        .unwrap_or_default()
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let Some(claim) = state.claims.get(&key) else {
        return Ok(Action::await_change());
    };
    let volumes = state.ctx.cloud.volumes().expect("checked at start");
    let meta = claim.metadata();
    let spec = claim.spec.clone().unwrap_or_default();
    if !meta.deletion_timestamp.is_empty()
        || !spec.volume_name.is_empty()
        || meta.annotations.get(STORAGE_PROVISIONER).map(String::as_str) != Some(volumes.provisioner())
    {
        return Ok(Action::await_change());
    }
    let Some(class) = state
        .classes
        .get(spec.storage_class_name.as_deref().unwrap_or(""))
    else {
        return Ok(Action::await_change());
    };
    let node = match meta.annotations.get(SELECTED_NODE) {
        Some(name) => state.nodes.get(name),
        None => {
            let mut ready: Vec<Arc<Node>> = state
                .nodes
                .list()
                .into_iter()
                .filter(|n| ready_status(n) == "True")
                .collect();
            ready.sort_by(|a, b| a.name().cmp(b.name()));
            ready.into_iter().next()
        }
    };
    let Some(node) = node else {
        // no node yet (or the chosen one is gone): try again later
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    let name = format!("pvc-{}", meta.uid);
    let mut pv_spec = match volumes.provision(&name, &claim, &node).await {
        Ok(s) => s,
        Err(e) => {
            let message = format!(
                "failed to provision volume with StorageClass {:?}: {e}",
                class.name()
            );
            crate::record(
                &state.ctx,
                &*claim,
                EventType::Warning,
                "ProvisioningFailed",
                &message,
            )
            .await;
            return Err(e.into());
        }
    };
    pv_spec.capacity = storage_request(&claim);
    pv_spec.access_modes = spec.access_modes.clone();
    pv_spec.storage_class_name = class.name().to_string();
    pv_spec.persistent_volume_reclaim_policy =
        class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into());
    pv_spec.mount_options = class.mount_options.clone();
    pv_spec.volume_mode = spec.volume_mode.clone();
    pv_spec.claim_ref = Some(ObjectReference {
        kind: "PersistentVolumeClaim".into(),
        api_version: "v1".into(),
        namespace: claim.namespace().into(),
        name: claim.name().into(),
        uid: meta.uid.clone(),
        ..Default::default()
    });
    let mut pv = PersistentVolume {
        metadata: Some(ObjectMeta {
            name: name.clone(),
            annotations: BTreeMap::from([(PROVISIONED_BY.to_string(), volumes.provisioner().to_string())]),
            ..Default::default()
        }),
        spec: Some(pv_spec),
        ..Default::default()
    };
    pv.set_type_meta();
    match Api::<PersistentVolume>::all(state.ctx.client.clone())
        .create(&pv)
        .await
    {
        Ok(_) => {
            let message = format!("Successfully provisioned volume {name} on node {}", node.name());
            crate::record(
                &state.ctx,
                &*claim,
                EventType::Normal,
                "ProvisioningSucceeded",
                &message,
            )
            .await;
        }
        Err(e) if e.is_already_exists() => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}
