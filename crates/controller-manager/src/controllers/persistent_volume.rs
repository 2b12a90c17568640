//! The persistent-volume controller (Kubernetes' PV binder and protection
//! controllers in one loop): binds each claim to the smallest Available volume
//! that fits it (class, access modes, size, volume mode, selector; a volume
//! pre-bound to the claim by its claimRef first), keeps both phases right
//! (claims Pending/Bound/Lost; volumes Available/Bound/Released/Failed), asks the
//! class's provisioner for a volume when none fits (the
//! `volume.kubernetes.io/storage-provisioner` annotation; with
//! WaitForFirstConsumer only once the scheduler has chosen a node), and
//! reclaims a volume whose claim is gone: Retain leaves it Released with its
//! data, Delete deletes it (its node reclaims the storage) when a provisioner
//! made it; a hand-made Delete volume turns Failed with a message and keeps
//! its data, as in Kubernetes (no plugin could delete it).
//!
//! Protection: claims carry `kubernetes.io/pvc-protection` and volumes
//! `kubernetes.io/pv-protection`; a deleted claim stays until no running pod
//! uses it, a deleted volume until it is no longer bound.
//!
//! Keys: a claim's `namespace/name`, a volume's bare `name` (volumes are
//! cluster-scoped, so a key without `/` is a volume).

use super::Error;
use crate::{Context, Shutdown};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeStatus, Pod,
};
use rkube_api::selector::Selector;
use rkube_api::storage::v1::StorageClass;
use rkube_api::Resource;
use rkube_client::{Action, Api, Controller, DeleteParams, EventType, Store};
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "persistentvolume-binder";

pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// Which provisioner is asked to make a claim's volume.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The node the scheduler chose for a WaitForFirstConsumer claim's first pod.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set by the provisioner that made a volume: only such volumes can be deleted.
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

struct State {
    ctx: Arc<Context>,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    pods: Store<Pod>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let claims = ctx.informers.get::<PersistentVolumeClaim>();
        let volumes = ctx.informers.get::<PersistentVolume>();
        let classes = ctx.informers.get::<StorageClass>();
        let pods = ctx.informers.get::<Pod>();
        let workers = ctx.config.workers;
        let state = Arc::new(State {
            ctx,
            claims: claims.store(),
            volumes: volumes.store(),
            classes: classes.store(),
            pods: pods.store(),
        });
        // A volume wakes itself and the claim it names; a pod the claims it uses (a
        // deleted claim waits for its pods).
        let volume_keys = |pv: &PersistentVolume| {
            let mut keys = vec![pv.name().to_string()];
            if let Some(c) = claim_ref(pv) {
                keys.push(format!("{}/{}", c.namespace, c.name));
            }
            keys
        };
        let pod_keys = |pod: &Pod| {
            claims_of(pod)
                .map(|c| format!("{}/{}", pod.namespace(), c))
                .collect()
        };
        let class_keys = {
            let claims = state.claims.clone();
            move |sc: &StorageClass| {
                claims
                    .list()
                    .iter()
                    .filter(|c| class_of(c) == sc.name())
                    .map(|c| c.key())
                    .collect()
            }
        };
        Controller::new(NAME, state, reconcile)
            .primary(&claims)
            .watches(&volumes, volume_keys)
            .watches(&pods, pod_keys)
            .watches(&classes, class_keys)
            .workers(workers)
            .resync(Duration::from_secs(60))
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

fn claim_ref(pv: &PersistentVolume) -> Option<&ObjectReference> {
    pv.spec.as_ref()?.claim_ref.as_ref()
}

fn claims_of(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
}

fn class_of(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

fn phase(pv: &PersistentVolume) -> &str {
    pv.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("")
}

fn storage(map: &std::collections::BTreeMap<String, rkube_api::quantity::Quantity>) -> i64 {
    map.get("storage").and_then(|q| q.value().ok()).unwrap_or(0)
}

/// Whether `pv` can serve `claim`: same class and volume mode, every access mode the
/// claim asks for, at least its size, its selector's labels, and free (or reserved for
/// this claim).
pub fn fits(claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let (Some(cs), Some(vs)) = (claim.spec.as_ref(), pv.spec.as_ref()) else {
        return false;
    };
    if !pv.metadata().deletion_timestamp.is_empty() || !matches!(phase(pv), "Available" | "Pending" | "") {
        return false;
    }
    if let Some(r) = &vs.claim_ref {
        if r.namespace != claim.namespace()
            || r.name != claim.name()
            || !(r.uid.is_empty() || r.uid == claim.metadata().uid)
        {
            return false;
        }
    }
    let wanted = cs.resources.as_ref().map(|r| storage(&r.requests)).unwrap_or(0);
    let selector_ok = match &cs.selector {
        None => true,
        Some(s) => Selector::from_label_selector(s).is_ok_and(|s| s.matches(&pv.metadata().labels)),
    };
    vs.storage_class_name == class_of(claim)
        && vs.volume_mode.as_deref().unwrap_or("Filesystem")
            == cs.volume_mode.as_deref().unwrap_or("Filesystem")
        && cs.access_modes.iter().all(|m| vs.access_modes.contains(m))
        && storage(&vs.capacity) >= wanted
        && selector_ok
}

/// The volume `claim` should bind to: one reserved for it by claimRef, else the smallest
/// that fits (by name among equals, so two binders agree).
pub fn best_volume(
    claim: &PersistentVolumeClaim,
    volumes: &[Arc<PersistentVolume>],
) -> Option<Arc<PersistentVolume>> {
    let fitting = volumes.iter().filter(|pv| fits(claim, pv));
    let reserved = fitting.clone().find(|pv| claim_ref(pv).is_some());
    reserved.cloned().or_else(|| {
        fitting
            .min_by_key(|pv| {
                (
                    storage(&pv.spec.as_ref().unwrap().capacity),
                    pv.name().to_string(),
                )
            })
            .cloned()
    })
}

/// Events are advisory: a failure is logged, never fails the reconcile.
async fn event<K: Resource>(state: &State, obj: &K, reason: &str, message: &str) {
    publish(state, obj, EventType::Normal, reason, message).await
}

async fn warning<K: Resource>(state: &State, obj: &K, reason: &str, message: &str) {
    publish(state, obj, EventType::Warning, reason, message).await
}

async fn publish<K: Resource>(state: &State, obj: &K, kind: EventType, reason: &str, message: &str) {
    if let Err(e) = state.ctx.recorder.publish(obj, kind, reason, message).await {
        tracing::warn!(object = obj.name(), reason, error = %e, "cannot record event");
    }
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    if key.contains('/') {
        reconcile_claim(&key, &state).await
    } else {
        reconcile_volume(&key, &state).await
    }
}

/// Whether a pod that has not finished uses the claim.
fn in_use(state: &State, claim: &PersistentVolumeClaim) -> bool {
    state.pods.list().iter().any(|p| {
        p.namespace() == claim.namespace()
            && !p
                .status
                .as_ref()
                .is_some_and(|s| matches!(s.phase.as_str(), "Succeeded" | "Failed"))
            && claims_of(p).any(|c| c == claim.name())
    })
}

async fn reconcile_claim(key: &str, state: &State) -> Result<Action, Error> {
    let Some(claim) = state.claims.get(key) else {
        // gone: its volumes are released (or deleted)
        for pv in state.volumes.list() {
            if claim_ref(&pv).is_some_and(|r| format!("{}/{}", r.namespace, r.name) == key) {
                reconcile_volume(pv.name(), state).await?;
            }
        }
        return Ok(Action::await_change());
    };
    let api: Api<PersistentVolumeClaim> = Api::namespaced(state.ctx.client.clone(), claim.namespace());
    let has_finalizer = claim.metadata().finalizers.iter().any(|f| f == PVC_PROTECTION);
    if !claim.metadata().deletion_timestamp.is_empty() {
        if has_finalizer && !in_use(state, &claim) {
            api.replace_with(claim.name(), |mut c| {
                c.metadata_mut().finalizers.retain(|f| f != PVC_PROTECTION);
                c
            })
            .await?;
        }
        return Ok(Action::await_change());
    }
    if !has_finalizer {
        api.replace_with(claim.name(), |mut c| {
            if !c.metadata().finalizers.iter().any(|f| f == PVC_PROTECTION) {
                c.metadata_mut().finalizers.push(PVC_PROTECTION.into());
            }
            c
        })
        .await?;
    }
    let volume_name = claim
        .spec
        .as_ref()
        .map(|s| s.volume_name.clone())
        .unwrap_or_default();
    if !volume_name.is_empty() {
        let Some(pv) = state.volumes.get(&volume_name) else {
            set_claim_phase(&api, &claim, "Lost", None).await?;
            return Ok(Action::await_change());
        };
        match claim_ref(&pv) {
            Some(r) if r.uid == claim.metadata().uid => {}
            Some(_) => {
                set_claim_phase(&api, &claim, "Lost", None).await?;
                return Ok(Action::await_change());
            }
            None => bind_volume(state, &pv, &claim).await?,
        }
        set_claim_phase(&api, &claim, "Bound", Some(&pv)).await?;
        return Ok(Action::await_change());
    }
    if let Some(pv) = best_volume(&claim, &state.volumes.list()) {
        bind_volume(state, &pv, &claim).await?;
        let name = pv.name().to_string();
        let bound = api
            .replace_with(claim.name(), |mut c| {
                c.spec.get_or_insert_with(Default::default).volume_name = name.clone();
                c.metadata_mut()
                    .annotations
                    .insert(BIND_COMPLETED.into(), "yes".into());
                c
            })
            .await?;
        set_claim_phase(&api, &bound, "Bound", Some(&pv)).await?;
        event(state, &*claim, "Bound", &format!("bound to volume {name}")).await;
        return Ok(Action::await_change());
    }
    set_claim_phase(&api, &claim, "Pending", None).await?;
    // Nothing fits: the class's provisioner makes one (once a node is chosen, for
    // WaitForFirstConsumer).
    let Some(class) = state.classes.get(class_of(&claim)) else {
        return Ok(Action::await_change());
    };
    let wait = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
    if wait && !claim.metadata().annotations.contains_key(SELECTED_NODE) {
        return Ok(Action::await_change());
    }
    if claim.metadata().annotations.get(STORAGE_PROVISIONER) != Some(&class.provisioner) {
        let provisioner = class.provisioner.clone();
        api.replace_with(claim.name(), |mut c| {
            c.metadata_mut()
                .annotations
                .insert(STORAGE_PROVISIONER.into(), provisioner.clone());
            c
        })
        .await?;
        event(
            state,
            &*claim,
            "ExternalProvisioning",
            &format!(
                "Waiting for a volume to be created by the external provisioner {:?}",
                class.provisioner
            ),
        )
        .await;
    }
    Ok(Action::await_change())
}

/// Points `pv` at `claim` (claimRef with its uid) and marks it Bound.
async fn bind_volume(
    state: &State,
    pv: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Result<(), Error> {
    let api: Api<PersistentVolume> = Api::all(state.ctx.client.clone());
    let reference = ObjectReference {
        kind: "PersistentVolumeClaim".into(),
        api_version: "v1".into(),
        namespace: claim.namespace().into(),
        name: claim.name().into(),
        uid: claim.metadata().uid.clone(),
        resource_version: claim.metadata().resource_version.clone(),
        ..Default::default()
    };
    api.replace_with(pv.name(), |mut v| {
        let spec = v.spec.get_or_insert_with(Default::default);
        if spec.claim_ref.as_ref().is_none_or(|r| r.uid != reference.uid) {
            spec.claim_ref = Some(reference.clone());
        }
        if !v.metadata().finalizers.iter().any(|f| f == PV_PROTECTION) {
            v.metadata_mut().finalizers.push(PV_PROTECTION.into());
        }
        v
    })
    .await?;
    set_volume_phase(&api, pv.name(), "Bound").await
}

async fn set_volume_phase(api: &Api<PersistentVolume>, name: &str, phase: &str) -> Result<(), Error> {
    api.replace_status_with(name, |mut v| {
        let status = v.status.get_or_insert_with(PersistentVolumeStatus::default);
        if status.phase != phase {
            status.phase = phase.into();
            status.last_phase_transition_time =
                Some(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string());
        }
        v
    })
    .await?;
    Ok(())
}

/// Phase Failed with `message` (a volume whose storage cannot be reclaimed).
async fn set_volume_failed(api: &Api<PersistentVolume>, name: &str, message: &str) -> Result<(), Error> {
    set_volume_phase(api, name, "Failed").await?;
    api.replace_status_with(name, |mut v| {
        v.status
            .get_or_insert_with(PersistentVolumeStatus::default)
            .message = message.into();
        v
    })
    .await?;
    Ok(())
}

async fn set_claim_phase(
    api: &Api<PersistentVolumeClaim>,
    claim: &PersistentVolumeClaim,
    phase: &str,
    pv: Option<&PersistentVolume>,
) -> Result<(), Error> {
    let (capacity, modes) = pv
        .and_then(|v| v.spec.clone())
        .map(|s| (s.capacity, s.access_modes))
        .unwrap_or_default();
    api.replace_status_with(claim.name(), |mut c| {
        let status = c.status.get_or_insert_with(Default::default);
        status.phase = phase.into();
        status.capacity = capacity.clone();
        status.access_modes = modes.clone();
        c
    })
    .await?;
    Ok(())
}

async fn reconcile_volume(name: &str, state: &State) -> Result<Action, Error> {
    let Some(pv) = state.volumes.get(name) else {
        return Ok(Action::await_change());
    };
    let api: Api<PersistentVolume> = Api::all(state.ctx.client.clone());
    let claim = claim_ref(&pv).and_then(|r| {
        state
            .claims
            .get_namespaced(&r.namespace, &r.name)
            .filter(|c| r.uid.is_empty() || c.metadata().uid == r.uid)
    });
    let protected = pv.metadata().finalizers.iter().any(|f| f == PV_PROTECTION);
    if !pv.metadata().deletion_timestamp.is_empty() {
        if protected && (claim.is_none() || phase(&pv) != "Bound") {
            api.replace_with(name, |mut v| {
                v.metadata_mut().finalizers.retain(|f| f != PV_PROTECTION);
                v
            })
            .await?;
        }
        return Ok(Action::await_change());
    }
    if !protected {
        api.replace_with(name, |mut v| {
            if !v.metadata().finalizers.iter().any(|f| f == PV_PROTECTION) {
                v.metadata_mut().finalizers.push(PV_PROTECTION.into());
            }
            v
        })
        .await?;
    }
    match (claim_ref(&pv), claim) {
        (None, _) => set_volume_phase(&api, name, "Available").await?,
        (Some(_), Some(c)) => {
            let bound = c.spec.as_ref().is_some_and(|s| s.volume_name == name);
            // reserved for a claim that has not bound yet: still Available to it
            set_volume_phase(&api, name, if bound { "Bound" } else { "Available" }).await?;
        }
        // A claimRef without a uid reserves the volume for a claim not made yet.
        (Some(r), None) if r.uid.is_empty() => set_volume_phase(&api, name, "Available").await?,
        (Some(_), None) => {
            let policy = pv
                .spec
                .as_ref()
                .map(|s| s.persistent_volume_reclaim_policy.as_str())
                .unwrap_or("Retain");
            let provisioned = pv.metadata().annotations.contains_key(PROVISIONED_BY);
            if policy == "Delete" && !provisioned {
                // Kubernetes: a volume no plugin can delete turns Failed and keeps its
                // data; deleting only the object would leave the data behind unseen.
                if phase(&pv) != "Failed" {
                    let message = format!(
                        "persistentVolume {name} has reclaim policy Delete but no provisioner made it, \
                         so nothing can delete its storage: remove its data and the volume yourself, \
                         or give hand-made volumes persistentVolumeReclaimPolicy: Retain"
                    );
                    set_volume_failed(&api, name, &message).await?;
                    warning(state, &*pv, "VolumeFailedDelete", &message).await;
                }
            } else if policy == "Delete" {
                // The storage goes with the object: its node reclaims it.
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
                event(
                    state,
                    &*pv,
                    "VolumeDelete",
                    "its claim is gone; reclaim policy Delete",
                )
                .await;
            } else if phase(&pv) != "Released" {
                set_volume_phase(&api, name, "Released").await?;
                event(
                    state,
                    &*pv,
                    "VolumeReleased",
                    "its claim is gone; reclaim policy Retain keeps the data",
                )
                .await;
            }
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(yaml: &str) -> PersistentVolumeClaim {
        serde_yaml::from_str(&format!(
            "metadata: {{name: data, namespace: default, uid: u1}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}, storageClassName: local{yaml}}}\n"
        ))
        .unwrap()
    }

    /// `extra` replaces the class and access modes (`storageClassName: local, accessModes:
    /// [ReadWriteOnce, ReadOnlyMany]`) when it names them.
    fn volume(name: &str, size: &str, extra: &str) -> Arc<PersistentVolume> {
        let mut fields = String::new();
        if !extra.contains("storageClassName") {
            fields += ", storageClassName: local";
        }
        if !extra.contains("accessModes") {
            fields += ", accessModes: [ReadWriteOnce, ReadOnlyMany]";
        }
        Arc::new(
            serde_yaml::from_str(&format!(
                "metadata: {{name: {name}, labels: {{disk: ssd}}}}\nspec: {{capacity: {{storage: {size}}}, local: {{path: /v}}{fields}{extra}}}\nstatus: {{phase: Available}}\n"
            ))
            .unwrap(),
        )
    }

    #[test]
    fn a_claim_gets_the_smallest_volume_that_fits() {
        let volumes = vec![
            volume("big", "10Gi", ""),
            volume("small", "512Mi", ""),
            volume("right", "2Gi", ""),
            volume("other-class", "1Gi", ", storageClassName: slow"),
            volume("rwx-only", "1Gi", ", accessModes: [ReadWriteMany]"),
        ];
        assert_eq!(best_volume(&claim(""), &volumes).unwrap().name(), "right");
        // a selector the volumes' labels do not match finds nothing
        assert!(best_volume(&claim(", selector: {matchLabels: {disk: hdd}}"), &volumes).is_none());
        // a volume reserved for this claim wins over a smaller one
        let mut reserved = volumes.clone();
        reserved.push(volume(
            "mine",
            "10Gi",
            ", claimRef: {namespace: default, name: data}",
        ));
        assert_eq!(best_volume(&claim(""), &reserved).unwrap().name(), "mine");
        // one reserved for another claim is not taken
        let other = vec![volume(
            "theirs",
            "1Gi",
            ", claimRef: {namespace: default, name: logs}",
        )];
        assert!(best_volume(&claim(""), &other).is_none());
    }
}
