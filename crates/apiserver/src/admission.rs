//! Admission: the per-kind rules that need more than the object itself —
//! whether its namespace exists, which namespaces are protected, how pods
//! and namespaces are deleted gracefully, the initial status of new
//! objects.

use crate::allocator::{Allocation, ServiceAllocator};
use crate::error::{ApiError, ApiResult};
use crate::keys::storage_key;
use crate::State;
use rkube_api::core::v1::{Namespace, Pod, Service};
use rkube_api::{Resource, ResourceInfo};
use std::any::Any;
use std::sync::{Arc, Mutex};

/// Namespaces that exist from the first start and cannot be deleted.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-node-lease"];

/// Initial status: new pods are Pending, new namespaces Active.
pub fn prepare_create<K: Resource>(obj: &mut K) {
    let any = obj as &mut dyn Any;
    if let Some(pod) = any.downcast_mut::<Pod>() {
        // Kubernetes' ServiceAccount admission: a pod runs as `default` unless it names an
        // account, and the deprecated `serviceAccount` mirrors the name. (Unlike Kubernetes,
        // a pod naming an account that does not exist yet is not refused: nodes without a
        // controller-manager, as in rkube's node tests, still run pods.)
        let spec = pod.spec.get_or_insert_with(Default::default);
        if spec.service_account_name.is_empty() {
            spec.service_account_name = if spec.service_account.is_empty() {
                "default".into()
            } else {
                spec.service_account.clone()
            };
        }
        spec.service_account = spec.service_account_name.clone();
        let status = pod.status.get_or_insert_with(Default::default);
        status.phase = "Pending".into();
        status.qos_class = qos_class(pod.spec.as_ref()).into();
    } else if let Some(ns) = any.downcast_mut::<Namespace>() {
        ns.status.get_or_insert_with(Default::default).phase = "Active".into();
    }
}

/// Guaranteed when every container has equal cpu and memory requests and
/// limits, BestEffort when none has any, Burstable otherwise.
fn qos_class(spec: Option<&rkube_api::core::v1::PodSpec>) -> &'static str {
    let Some(spec) = spec else { return "BestEffort" };
    let containers: Vec<_> = spec.init_containers.iter().chain(&spec.containers).collect();
    let none = containers.iter().all(|c| {
        c.resources
            .as_ref()
            .is_none_or(|r| r.requests.is_empty() && r.limits.is_empty())
    });
    if none {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        c.resources.as_ref().is_some_and(|r| {
            ["cpu", "memory"]
                .iter()
                .all(|k| match (r.limits.get(*k), r.requests.get(*k)) {
                    (Some(l), Some(q)) => l.nanos().ok() == q.nanos().ok(),
                    _ => false,
                })
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A namespaced object can only be created in a namespace that exists and
/// is not being deleted.
pub fn check_namespace(state: &State, info: &ResourceInfo, namespace: &str) -> ApiResult<()> {
    if !info.namespaced {
        return Ok(());
    }
    let ns_info = Namespace::info();
    let kv = state
        .store
        .get(&storage_key(ns_info, "", namespace))
        .ok_or_else(|| ApiError::not_found(ns_info, namespace))?;
    let ns = <Namespace as prost::Message>::decode(kv.value.as_ref())
        .map_err(|e| ApiError::internal(format!("stored namespace {namespace} cannot be decoded: {e}")))?;
    if !ns.metadata().deletion_timestamp.is_empty() {
        return Err(ApiError::forbidden(format!(
            "unable to create new content in namespace {namespace} because it is being terminated"
        )));
    }
    Ok(())
}

pub fn check_delete(_state: &State, info: &ResourceInfo, name: &str) -> ApiResult<()> {
    if info.kind == "Namespace" && SYSTEM_NAMESPACES.contains(&name) {
        return Err(ApiError::forbidden(format!(
            "namespaces {name:?} is forbidden: this namespace may not be deleted"
        )));
    }
    Ok(())
}

/// The grace period of a delete: pods bound to a node get their kubelet
/// time to stop them (the request's, else the pod's
/// terminationGracePeriodSeconds); a pod that never ran goes at once.
pub fn grace_period<K: Resource>(obj: &K, requested: Option<i32>) -> Option<i32> {
    let pod = (obj as &dyn Any).downcast_ref::<Pod>()?;
    let spec = pod.spec.as_ref();
    let bound = spec.is_some_and(|s| !s.node_name.is_empty());
    let phase = pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    if !bound || phase == "Succeeded" || phase == "Failed" {
        return Some(0);
    }
    Some(
        requested
            .or(spec.and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0),
    )
}

/// A namespace being deleted turns Terminating and keeps a finalizer until
/// the namespace controller has deleted everything in it.
pub fn prepare_delete<K: Resource>(obj: &mut K) {
    if let Some(ns) = (obj as &mut dyn Any).downcast_mut::<Namespace>() {
        ns.status.get_or_insert_with(Default::default).phase = "Terminating".into();
        let finalizers = &mut ns.metadata_mut().finalizers;
        if !finalizers.iter().any(|f| f == "kubernetes") {
            finalizers.push("kubernetes".into());
        }
    }
}

/// An update that leaves out what the apiserver allocated (clusterIP,
/// nodePorts) keeps it: users apply the same manifest again and again.
pub fn prepare_update<K: Resource>(new: &mut K, old: &K) {
    let (Some(new), Some(old)) = (
        (new as &mut dyn Any).downcast_mut::<Service>(),
        (old as &dyn Any).downcast_ref::<Service>(),
    ) else {
        return;
    };
    let (Some(n), Some(o)) = (new.spec.as_mut(), old.spec.as_ref()) else {
        return;
    };
    if n.cluster_ip.is_empty() {
        n.cluster_ip = o.cluster_ip.clone();
        n.cluster_ips = o.cluster_ips.clone();
    }
    for p in &mut n.ports {
        if p.node_port == 0 {
            if let Some(op) = o
                .ports
                .iter()
                .find(|op| op.port == p.port && op.protocol == p.protocol)
            {
                if n.r#type == o.r#type {
                    p.node_port = op.node_port;
                }
            }
        }
    }
}

/// Reserves a new Service's ClusterIP and node ports (filling them in);
/// other kinds take nothing. Give the result to `release` if the write fails.
pub fn allocate_create<K: Resource>(state: &State, obj: &mut K) -> ApiResult<Option<Allocation>> {
    match (obj as &mut dyn Any).downcast_mut::<Service>() {
        Some(svc) => state.services.allocate_create(svc).map(Some),
        None => Ok(None),
    }
}

/// For an updated Service: what was newly reserved (release it if the write
/// fails) and what the old one held that the new one does not (release it
/// once the write succeeds).
pub fn allocate_update<K: Resource>(
    state: &State,
    new: &mut K,
    old: &K,
) -> ApiResult<Option<(Allocation, Allocation)>> {
    match (
        (new as &mut dyn Any).downcast_mut::<Service>(),
        (old as &dyn Any).downcast_ref::<Service>(),
    ) {
        (Some(new), Some(old)) => state.services.allocate_update(new, old).map(Some),
        _ => Ok(None),
    }
}

pub fn release(state: &State, allocation: Option<&Allocation>) {
    if let Some(a) = allocation {
        state.services.release(a);
    }
}

/// The store ops reserving what a Service's write took (see `allocator`): empty for other
/// kinds and for writes that took nothing.
pub fn reserve_ops<K: Resource>(obj: &K, taken: Option<&Allocation>) -> Vec<rkube_store::Op> {
    match ((obj as &dyn Any).downcast_ref::<Service>(), taken) {
        (Some(svc), Some(a)) => a.reserve_ops(svc),
        _ => Vec::new(),
    }
}

/// The store ops giving back what an updated Service no longer holds.
pub fn release_ops(state: &State, freed: Option<&Allocation>) -> Vec<rkube_store::Op> {
    freed
        .map(|a| a.release_ops(state.store.as_ref()))
        .unwrap_or_default()
}

/// The store ops giving back everything a Service being removed from the store holds;
/// `None` for other kinds (their removal is a plain delete).
pub fn release_deleted_ops<K: Resource>(state: &State, obj: &K) -> Option<Vec<rkube_store::Op>> {
    (obj as &dyn Any)
        .downcast_ref::<Service>()
        .map(|svc| ServiceAllocator::held_by(svc).release_ops(state.store.as_ref()))
}

/// A write failed with AlreadyExists on `key`. When that is a reservation key, another
/// apiserver took one of the values of `allocation` first: everything else is given back,
/// the value stays marked taken, and the caller allocates again. Returns whether it was.
pub fn lost_reservation(state: &State, allocation: Option<&Allocation>, key: &str) -> bool {
    if !key.starts_with(crate::allocator::RESERVATION_KEYS) {
        return false;
    }
    release(state, allocation);
    state.services.taken_elsewhere(key)
}

/// Gives back what a Service held once it is gone from the store.
pub fn release_deleted<K: Resource>(state: &State, obj: &K) {
    if let Some(svc) = (obj as &dyn Any).downcast_ref::<Service>() {
        state.services.release(&ServiceAllocator::held_by(svc));
    }
}

/// What admission says about a request besides yes or no: warnings for the
/// client (Kubernetes' `Warning` headers; gRPC `warning` metadata) and
/// annotations for the request's audit event.
#[derive(Debug, Default)]
pub struct Notes {
    pub warnings: Vec<String>,
    pub audit_annotations: std::collections::BTreeMap<String, String>,
}

tokio::task_local! {
    static NOTES: Arc<Mutex<Notes>>;
}

/// Runs a request's handler, collecting the notes admission makes on the
/// way (a task-local, so that the generic handlers keep their signatures).
pub async fn collecting<F: std::future::Future>(handler: F) -> (F::Output, Notes) {
    let notes = Arc::new(Mutex::new(Notes::default()));
    let out = NOTES.scope(notes.clone(), handler).await;
    let notes = std::mem::take(&mut *notes.lock().unwrap_or_else(|e| e.into_inner()));
    (out, notes)
}

fn note(f: impl FnOnce(&mut Notes)) {
    // outside `collecting` (internal writes) there is no one to tell
    let _ = NOTES.try_with(|n| f(&mut n.lock().unwrap_or_else(|e| e.into_inner())));
}

/// A warning for the client; the same one twice (a retried write) is sent once.
pub fn warn(message: String) {
    note(|n| {
        if !n.warnings.contains(&message) {
            n.warnings.push(message);
        }
    });
}

/// An annotation on the request's audit event.
pub fn annotate_audit(key: &str, value: String) {
    note(|n| {
        n.audit_annotations.insert(key.to_string(), value);
    });
}
