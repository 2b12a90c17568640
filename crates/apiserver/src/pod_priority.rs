//! Kubernetes' Priority admission and the scheduling-gate condition: what
//! the scheduler reads of a new pod is settled when it is created.
//!
//! * `spec.priorityClassName` resolves to `spec.priority` and
//!   `spec.preemptionPolicy` from the PriorityClass; without a name, from
//!   the class marked `globalDefault` (whose name the pod then carries),
//!   else priority 0. A name that resolves to nothing is refused.
//! * The built-in classes `system-cluster-critical` and
//!   `system-node-critical` exist from the first start and cannot be
//!   deleted.
//! * A pod created with `schedulingGates` starts `PodScheduled=False`,
//!   reason `SchedulingGated`.

use crate::error::{ApiError, ApiResult};
use crate::keys::{storage_key, storage_prefix};
use crate::State;
use anyhow::Context;
use rkube_api::core::v1::{Pod, PodCondition};
use rkube_api::scheduling::v1::PriorityClass;
use rkube_api::{Resource, ResourceInfo};
use rkube_store::{Store, StoreError};
use std::any::Any;

pub const SYSTEM_CLUSTER_CRITICAL: &str = "system-cluster-critical";
pub const SYSTEM_NODE_CRITICAL: &str = "system-node-critical";
/// Kubernetes' values for the built-in classes.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;
pub const SYSTEM_CLASSES: &[(&str, i32, &str)] = &[
    (
        SYSTEM_CLUSTER_CRITICAL,
        SYSTEM_CRITICAL_PRIORITY,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
    (
        SYSTEM_NODE_CRITICAL,
        SYSTEM_CRITICAL_PRIORITY + 1000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
];
pub const DEFAULT_PREEMPTION_POLICY: &str = "PreemptLowerPriority";

/// Creates the built-in PriorityClasses if missing.
pub async fn bootstrap(store: &dyn Store) -> anyhow::Result<()> {
    for (name, value, description) in SYSTEM_CLASSES {
        let key = storage_key(PriorityClass::info(), "", name);
        if store.get(&key).is_some() {
            continue;
        }
        let mut pc = PriorityClass::default();
        pc.set_type_meta();
        let meta = pc.metadata_mut();
        meta.name = name.to_string();
        meta.uid = uuid::Uuid::new_v4().to_string();
        meta.creation_timestamp = crate::handlers::now();
        pc.value = *value;
        pc.description = description.to_string();
        pc.preemption_policy = Some(DEFAULT_PREEMPTION_POLICY.into());
        match store
            .create(&key, prost::Message::encode_to_vec(&pc).into())
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e).with_context(|| format!("creating priority class {name}")),
        }
    }
    Ok(())
}

/// The built-in classes cannot be deleted (Kubernetes' rule: system pods
/// name them).
pub fn check_delete(info: &ResourceInfo, name: &str) -> ApiResult<()> {
    if info.kind == "PriorityClass" && SYSTEM_CLASSES.iter().any(|(n, _, _)| *n == name) {
        return Err(ApiError::forbidden(format!(
            "priorityclasses.scheduling.k8s.io {name:?} is forbidden: deletion of system priority class is not allowed"
        )));
    }
    Ok(())
}

fn priority_class(state: &State, name: &str) -> ApiResult<Option<PriorityClass>> {
    let Some(kv) = state.store.get(&storage_key(PriorityClass::info(), "", name)) else {
        return Ok(None);
    };
    <PriorityClass as prost::Message>::decode(kv.value.as_ref())
        .map(Some)
        .map_err(|e| ApiError::internal(format!("stored priority class {name} cannot be decoded: {e}")))
}

fn global_default(state: &State) -> ApiResult<Option<PriorityClass>> {
    let prefix = storage_prefix(PriorityClass::info(), "");
    let list = state
        .store
        .list(&prefix, None, 0, None)
        .map_err(|e| ApiError::from_store(e, PriorityClass::info(), ""))?;
    // Should there be several (a race between two creates), Kubernetes
    // takes the lowest value.
    let mut best: Option<PriorityClass> = None;
    for kv in &list.items {
        let Ok(pc) = <PriorityClass as prost::Message>::decode(kv.value.as_ref()) else {
            continue;
        };
        if pc.global_default && best.as_ref().is_none_or(|b| pc.value < b.value) {
            best = Some(pc);
        }
    }
    Ok(best)
}

/// Admits a new pod (other kinds pass): resolves its priority and marks a
/// gated pod as such.
pub fn admit_create<K: Resource>(state: &State, obj: &mut K) -> ApiResult<()> {
    let Some(pod) = (obj as &mut dyn Any).downcast_mut::<Pod>() else {
        return Ok(());
    };
    let name = pod.metadata().name.clone();
    let spec = pod.spec.get_or_insert_with(Default::default);
    let class = if spec.priority_class_name.is_empty() {
        global_default(state)?
    } else {
        let found = priority_class(state, &spec.priority_class_name)?;
        if found.is_none() {
            return Err(ApiError::forbidden(format!(
                "pods {name:?} is forbidden: no PriorityClass with name {} was found",
                spec.priority_class_name
            )));
        }
        found
    };
    let (value, policy) = match &class {
        Some(pc) => (
            pc.value,
            pc.preemption_policy
                .clone()
                .unwrap_or_else(|| DEFAULT_PREEMPTION_POLICY.into()),
        ),
        None => (0, DEFAULT_PREEMPTION_POLICY.into()),
    };
    if let Some(pc) = &class {
        spec.priority_class_name = pc.name().to_string();
    }
    // Kubernetes' rule: the numbers come from the class, a pod may not
    // claim its own.
    if let Some(p) = spec.priority {
        if p != value {
            return Err(ApiError::forbidden(format!(
                "pods {name:?} is forbidden: the integer value of priority ({p}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
            )));
        }
    }
    if let Some(p) = &spec.preemption_policy {
        if *p != policy {
            return Err(ApiError::forbidden(format!(
                "pods {name:?} is forbidden: the string value of PreemptionPolicy ({p}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
            )));
        }
    }
    spec.priority = Some(value);
    spec.preemption_policy = Some(policy);
    if !spec.scheduling_gates.is_empty() {
        let status = pod.status.get_or_insert_with(Default::default);
        status.conditions.retain(|c| c.r#type != "PodScheduled");
        status.conditions.push(PodCondition {
            r#type: "PodScheduled".into(),
            status: "False".into(),
            reason: "SchedulingGated".into(),
            message: "Scheduling is blocked due to non-empty scheduling gates".into(),
            last_transition_time: crate::handlers::now(),
            ..Default::default()
        });
    }
    Ok(())
}
