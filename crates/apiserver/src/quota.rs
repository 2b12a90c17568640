//! ResourceQuota admission: a new object is charged to every quota of its namespace that
//! limits something it costs (`rkube_api::quota` says what), and refused with Kubernetes'
//! Forbidden (`exceeded quota: NAME, requested: pods=1, used: pods=3, limited: pods=3`)
//! if that would pass `spec.hard`.
//!
//! The charge is the quota's `status.used` written in the same store transaction as the
//! object, conditional on the quota's revision: of concurrent creates, one wins each
//! revision and the others read the quota again and retry, so ten parallel creates
//! against `pods: 3` admit exactly three. A quota whose status does not say yet what is
//! used (just created, before the resourcequota controller ran) is counted from the
//! store. What is freed (a pod that ends or is deleted) is given back by the controller,
//! which recomputes `status.used`, as in Kubernetes.

use crate::error::{ApiError, ApiResult};
use crate::handlers::{self, storage_key, storage_prefix};
use crate::State;
use rkube_api::core::v1::{Pod, ResourceQuota};
use rkube_api::quota::{self, Usage};
use rkube_api::{Resource, ResourceInfo, KINDS};
use rkube_store::Op;

/// The quota writes that charge `obj`, to commit with its creation; empty when no quota
/// limits anything it costs. Forbidden if one would be exceeded.
pub fn charge<K: Resource>(state: &State, obj: &K) -> ApiResult<Vec<Op>> {
    let info = ResourceQuota::info();
    if !K::info().namespaced {
        return Ok(Vec::new());
    }
    let list = state
        .store
        .list(&storage_prefix(info, obj.namespace()), None, 0, None)
        .map_err(|e| ApiError::from_store(e, info, ""))?;
    if list.items.is_empty() {
        return Ok(Vec::new());
    }
    let cost = quota::usage(obj);
    let mut ops = Vec::new();
    for kv in &list.items {
        let mut q: ResourceQuota = handlers::decode_stored(kv)?;
        let hard = q.spec.as_ref().map(|s| s.hard.clone()).unwrap_or_default();
        if !quota::in_scope(&q, obj) || !cost.keys().any(|k| hard.contains_key(k)) {
            continue;
        }
        if let Some(pod) = (obj as &dyn std::any::Any).downcast_ref::<Pod>() {
            if let Some(why) = pod.spec.as_ref().and_then(|s| quota::missing_compute(s, &hard)) {
                return Err(ApiError::forbidden_object(
                    K::info(),
                    obj.name(),
                    &format!("failed quota: {}: {why}", q.name()),
                ));
            }
        }
        let status = q.status.clone().unwrap_or_default();
        let mut used = quota::amounts(&status.used);
        if hard.keys().any(|k| !used.contains_key(k)) {
            let counted = count(state, &q)?;
            for k in hard.keys() {
                used.entry(k.clone())
                    .or_insert_with(|| counted.get(k).copied().unwrap_or(0));
            }
        }
        let limits = quota::amounts(&hard);
        let (mut requested, mut was, mut limited) = (Usage::new(), Usage::new(), Usage::new());
        for (k, amount) in cost.iter().filter(|(k, _)| hard.contains_key(*k)) {
            let now = used.get(k).copied().unwrap_or(0);
            let limit = limits.get(k).copied().unwrap_or(0);
            if now + amount > limit {
                requested.insert(k.clone(), *amount);
                was.insert(k.clone(), now);
                limited.insert(k.clone(), limit);
            }
        }
        if !requested.is_empty() {
            return Err(ApiError::forbidden_object(
                K::info(),
                obj.name(),
                &format!(
                    "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                    q.name(),
                    quota::pretty(&requested),
                    quota::pretty(&was),
                    quota::pretty(&limited)
                ),
            ));
        }
        for (k, amount) in cost.iter().filter(|(k, _)| hard.contains_key(*k)) {
            *used.entry(k.clone()).or_insert(0) += amount;
        }
        let s = q.status.get_or_insert_with(Default::default);
        s.hard = hard.clone();
        s.used = used
            .iter()
            .filter(|(k, _)| hard.contains_key(*k))
            .map(|(k, v)| (k.clone(), quota::quantity(k, *v)))
            .collect();
        ops.push(Op::Put {
            key: storage_key(info, q.namespace(), q.name()),
            value: handlers::encode_for_store(&q)?,
            expected: Some(kv.mod_revision),
        });
    }
    Ok(ops)
}

/// What the namespace holds now under the quota's hard names, read from the store.
fn count(state: &State, q: &ResourceQuota) -> ApiResult<Usage> {
    let hard = q.spec.as_ref().map(|s| s.hard.clone()).unwrap_or_default();
    let mut used = Usage::new();
    let now = rkube_api::time::now();
    for info in KINDS.iter().filter(|i| i.namespaced) {
        let names = quota::count_names(info);
        let is_pods = info.kind == "Pod";
        let wanted = names.iter().any(|n| hard.contains_key(n))
            || is_pods && quota::POD_COMPUTE.iter().any(|n| hard.contains_key(*n));
        if !wanted {
            continue;
        }
        let list = state
            .store
            .list(&storage_prefix(info, q.namespace()), None, 0, None)
            .map_err(|e| ApiError::from_store(e, info, ""))?;
        for kv in &list.items {
            let cost = if is_pods {
                let pod: Pod = handlers::decode_stored(kv)?;
                if !quota::pod_counts(&pod, &now) || !quota::in_scope(q, &pod) {
                    continue;
                }
                quota::usage(&pod)
            } else {
                if !unscoped(q) {
                    continue;
                }
                one_of(info)
            };
            for (k, v) in cost {
                *used.entry(k).or_insert(0) += v;
            }
        }
    }
    Ok(used)
}

fn unscoped(q: &ResourceQuota) -> bool {
    q.spec.as_ref().is_none_or(|s| s.scopes.is_empty())
}

/// What one object of a kind other than Pod costs.
fn one_of(info: &ResourceInfo) -> Usage {
    quota::count_names(info)
        .into_iter()
        .map(|n| (n, 1_000_000_000))
        .collect()
}
