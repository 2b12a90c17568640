//! The Deployment's pure rollout arithmetic: the pod-template hash, which
//! ReplicaSet is new, maxSurge/maxUnavailable, how many replicas each
//! ReplicaSet gets (rolling, proportional scaling) and which old ones the
//! history limit removes.

use super::*;

// ------------------------------------------------------------------ hashing

/// Kubernetes' alphabet for generated name parts: no vowels (no words),
/// no look-alikes (0/o, 1/l/i, 3/e).
pub(super) const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Kubernetes' `rand.SafeEncodeString`.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

pub(super) fn fnv32a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The `pod-template-hash` of a template: FNV-32a of its protobuf
/// encoding (canonical: fields in tag order, maps sorted, defaults
/// omitted, so adding a proto field does not change existing hashes),
/// plus the collision count, rendered as Kubernetes does.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = prost::Message::encode_to_vec(template);
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

// ------------------------------------------------------- replica set views

pub(super) fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

pub(super) fn rs_status(rs: &ReplicaSet) -> rkube_api::apps::v1::ReplicaSetStatus {
    rs.status.clone().unwrap_or_default()
}

pub fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

pub(super) fn d_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// The template with the hash label removed, for comparison.
pub(super) fn without_hash(t: Option<&PodTemplateSpec>) -> PodTemplateSpec {
    let mut t = t.cloned().unwrap_or_default();
    if let Some(m) = t.metadata.as_mut() {
        m.labels.remove(HASH_LABEL);
    }
    t
}

/// The ReplicaSet running the Deployment's current template: the oldest
/// one whose template equals it but for `pod-template-hash`.
pub fn find_new_rs(d: &Deployment, rss: &[Arc<ReplicaSet>]) -> Option<Arc<ReplicaSet>> {
    let want = without_hash(d.spec.as_ref().and_then(|s| s.template.as_ref()));
    let mut matching: Vec<&Arc<ReplicaSet>> = rss
        .iter()
        .filter(|rs| without_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref())) == want)
        .collect();
    matching.sort_by(|a, b| by_creation(a, b));
    matching.first().map(|rs| (*rs).clone())
}

pub(super) fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let t = |r: &ReplicaSet| workload::parse_time(&r.metadata().creation_timestamp);
    t(a).cmp(&t(b)).then_with(|| a.name().cmp(b.name()))
}

/// maxSurge and maxUnavailable resolved against `replicas` (surge rounds
/// up, unavailable down); both 0 would never progress, so unavailable
/// becomes 1, as in Kubernetes.
pub fn fenceposts(d: &Deployment) -> Result<(i32, i32), String> {
    let replicas = d_replicas(d);
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let surge = ru
        .max_surge
        .map(|v| v.scaled_value(replicas, true))
        .transpose()?
        .unwrap_or(0);
    let unavailable = ru
        .max_unavailable
        .map(|v| v.scaled_value(replicas, false))
        .transpose()?
        .unwrap_or(0);
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

pub(super) fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .is_none_or(|s| s.r#type != "Recreate")
}

pub(super) fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling(d) {
        return 0;
    }
    fenceposts(d).map(|(s, _)| s).unwrap_or(0)
}

/// Kubernetes' `MaxUnavailable`: 0 for Recreate or no replicas, never more
/// than replicas.
pub(super) fn max_unavailable(d: &Deployment) -> i32 {
    let replicas = d_replicas(d);
    if !is_rolling(d) || replicas == 0 {
        return 0;
    }
    fenceposts(d).map(|(_, u)| u.min(replicas)).unwrap_or(0)
}

/// How many replicas the new ReplicaSet should have now (rolling update):
/// grow while the total stays within replicas + maxSurge.
pub fn new_rs_replicas(d: &Deployment, all: &[Arc<ReplicaSet>], new_rs: Option<&ReplicaSet>) -> i32 {
    let replicas = d_replicas(d);
    let current_new = new_rs.map(rs_replicas).unwrap_or(0);
    if !is_rolling(d) {
        return replicas;
    }
    let total: i32 = all.iter().map(|r| rs_replicas(r)).sum();
    let max_total = replicas + max_surge(d);
    if total >= max_total {
        return current_new;
    }
    let up = (max_total - total).min(replicas - current_new).max(0);
    current_new + up
}

/// The rolling-update scale-down of old ReplicaSets: first the replicas
/// that are not available anyway (they cost no availability), then
/// available ones while availability stays at replicas - maxUnavailable.
/// Returns (name, new replicas) for each ReplicaSet to scale.
pub fn scale_down_old(
    d: &Deployment,
    old: &[Arc<ReplicaSet>],
    new_rs: Option<&ReplicaSet>,
) -> Vec<(String, i32)> {
    let old_total: i32 = old.iter().map(|r| rs_replicas(r)).sum();
    if old_total == 0 {
        return Vec::new();
    }
    let mut sizes: Vec<(Arc<ReplicaSet>, i32)> = old.iter().map(|r| (r.clone(), rs_replicas(r))).collect();
    sizes.sort_by(|a, b| by_creation(&a.0, &b.0));
    let new_spec = new_rs.map(rs_replicas).unwrap_or(0);
    let new_available = new_rs.map(|r| rs_status(r).available_replicas).unwrap_or(0);
    let all_total = old_total + new_spec;
    let min_available = d_replicas(d) - max_unavailable(d);
    let new_unavailable = new_spec - new_available;
    let max_scaled_down = all_total - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    // Unhealthy replicas first.
    let mut cleaned = 0;
    for (rs, size) in sizes.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        if *size == 0 {
            continue;
        }
        let unhealthy = (*size - rs_status(rs).available_replicas).max(0);
        let n = unhealthy.min(max_scaled_down - cleaned);
        *size -= n;
        cleaned += n;
    }
    // Then healthy ones, as far as availability allows.
    let available: i32 = old.iter().map(|r| rs_status(r).available_replicas).sum::<i32>() + new_available;
    let mut budget = available - min_available;
    for (_, size) in sizes.iter_mut() {
        if budget <= 0 {
            break;
        }
        if *size == 0 {
            continue;
        }
        let n = (*size).min(budget);
        *size -= n;
        budget -= n;
    }
    sizes
        .into_iter()
        .filter(|(rs, size)| *size != rs_replicas(rs))
        .map(|(rs, size)| (rs.name().to_string(), size))
        .collect()
}

/// Whether the ReplicaSets' sizes disagree with the Deployment's replicas
/// (someone scaled it): then sizes change proportionally, not by rollout.
pub(super) fn is_scaling_event(d: &Deployment, all: &[Arc<ReplicaSet>]) -> bool {
    let want = d_replicas(d).to_string();
    all.iter().filter(|r| rs_replicas(r) > 0).any(|r| {
        r.metadata()
            .annotations
            .get(DESIRED_REPLICAS)
            .is_some_and(|v| *v != want)
    })
}

/// Kubernetes' `scale`: the new sizes of the active ReplicaSets when the
/// Deployment was resized mid-rollout, proportional to their share.
pub fn proportional_sizes(
    d: &Deployment,
    new_rs: Option<&Arc<ReplicaSet>>,
    old: &[Arc<ReplicaSet>],
) -> Vec<(String, i32)> {
    let replicas = d_replicas(d);
    let mut active: Vec<Arc<ReplicaSet>> = old
        .iter()
        .chain(new_rs)
        .filter(|r| rs_replicas(r) > 0)
        .cloned()
        .collect();
    if active.len() <= 1 {
        // One active ReplicaSet (or none): it simply takes the size.
        let target = active.first().cloned().or_else(|| new_rs.cloned());
        return target
            .filter(|r| rs_replicas(r) != replicas)
            .map(|r| vec![(r.name().to_string(), replicas)])
            .unwrap_or_default();
    }
    if let Some(n) = new_rs {
        if rs_replicas(n) == replicas && rs_status(n).available_replicas == replicas {
            // The new one is saturated: the old ones go.
            return old
                .iter()
                .filter(|r| rs_replicas(r) != 0)
                .map(|r| (r.name().to_string(), 0))
                .collect();
        }
    }
    if !is_rolling(d) {
        return Vec::new();
    }
    let total: i32 = active.iter().map(|r| rs_replicas(r)).sum();
    let allowed = if replicas > 0 { replicas + max_surge(d) } else { 0 };
    let to_add = allowed - total;
    match to_add.cmp(&0) {
        // Larger first; among equals, newer first when growing.
        Ordering::Greater => active.sort_by(|a, b| {
            rs_replicas(b)
                .cmp(&rs_replicas(a))
                .then_with(|| by_creation(b, a))
        }),
        Ordering::Less => active.sort_by(|a, b| {
            rs_replicas(b)
                .cmp(&rs_replicas(a))
                .then_with(|| by_creation(a, b))
        }),
        Ordering::Equal => return Vec::new(),
    }
    let mut added = 0;
    let mut sizes: Vec<(Arc<ReplicaSet>, i32)> = Vec::new();
    for rs in &active {
        let size = rs_replicas(rs);
        let proportion = if size == 0 || to_add == added {
            0
        } else {
            let fraction = if replicas == 0 {
                -size
            } else {
                let annotated = rs
                    .metadata()
                    .annotations
                    .get(MAX_REPLICAS)
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or_else(|| d.status.as_ref().map_or(0, |s| s.replicas))
                    .max(1);
                let scaled = f64::from(size) * f64::from(replicas + max_surge(d)) / f64::from(annotated);
                scaled.round() as i32 - size
            };
            let allowed_left = to_add - added;
            if to_add > 0 {
                fraction.min(allowed_left)
            } else {
                fraction.max(allowed_left)
            }
        };
        added += proportion;
        sizes.push((rs.clone(), size + proportion));
    }
    if let Some(first) = sizes.first_mut() {
        first.1 = (first.1 + to_add - added).max(0);
    }
    sizes
        .into_iter()
        .filter(|(rs, size)| *size != rs_replicas(rs))
        .map(|(rs, size)| (rs.name().to_string(), size))
        .collect()
}

/// ReplicaSets beyond revisionHistoryLimit to delete: the oldest revisions
/// among those scaled to 0 with no pods left.
pub fn history_to_delete(d: &Deployment, old: &[Arc<ReplicaSet>]) -> Vec<Arc<ReplicaSet>> {
    let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
        return Vec::new();
    };
    let mut cleanable: Vec<Arc<ReplicaSet>> = old
        .iter()
        .filter(|r| rs_replicas(r) == 0 && rs_status(r).replicas == 0 && !is_deleting(r.metadata()))
        .cloned()
        .collect();
    let excess = cleanable
        .len()
        .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
    cleanable.sort_by(|a, b| {
        revision(a.metadata())
            .cmp(&revision(b.metadata()))
            .then_with(|| by_creation(a, b))
    });
    cleanable.truncate(excess);
    cleanable
}
