//! Kubernetes' replica calculator, as pure functions: the usage ratio of a
//! metric, the replicas it asks for (with the tolerance and the treatment of
//! unready and missing pods), scale-down stabilization and the min/max limits.

use super::*;

// ------------------------------------------------------------ replica calculation

/// Where a pod stands for the calculation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// Counted.
    Ready,
    /// Pending, or (for CPU) not Ready: set aside, counted as 0 on a
    /// scale-up.
    Unready,
    /// Being deleted or Failed.
    Ignored,
}

/// One pod's part in a metric: its state, usage (None: no metrics) and
/// request of the resource (millicores or bytes; None: no request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSample {
    pub name: String,
    pub state: PodState,
    pub usage: Option<i64>,
    pub request: Option<i64>,
}

/// What a metric aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// Per-pod average in millicores or bytes.
    AverageValue(i64),
}

/// The current value of a metric, as status reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    /// Percent of requests (Utilization targets only).
    pub utilization: Option<i32>,
    /// Per-pod average in millicores or bytes.
    pub average: i64,
}

/// `(ratio, current)` over the pods in `used`: Kubernetes'
/// `GetResourceUtilizationRatio` / `GetMetricUsageRatio`.
pub(super) fn usage_ratio(used: &[(i64, i64)], target: Target) -> Result<(f64, Current), String> {
    let total: i64 = used.iter().map(|(u, _)| u).sum();
    let average = total / used.len().max(1) as i64;
    match target {
        Target::Utilization(percent) => {
            let requests: i64 = used.iter().map(|(_, r)| r).sum();
            if requests == 0 {
                return Err("no metrics returned matched known pods".into());
            }
            // Integer percent first, as Kubernetes does.
            let utilization = (total * 100 / requests) as i32;
            Ok((
                f64::from(utilization) / f64::from(percent),
                Current {
                    utilization: Some(utilization),
                    average,
                },
            ))
        }
        Target::AverageValue(v) => Ok((
            average as f64 / v as f64,
            Current {
                utilization: None,
                average,
            },
        )),
    }
}

/// The replica count one metric proposes for a target at `current`
/// replicas. See the module docs for the rules.
pub fn calc_replicas(
    current: i32,
    pods: &[PodSample],
    target: Target,
    tolerance: f64,
) -> Result<(i32, Current), String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let needs_request = matches!(target, Target::Utilization(_));
    let request = |p: &PodSample| -> Result<i64, String> {
        match p.request {
            Some(r) if r > 0 => Ok(r),
            _ if needs_request => Err(format!("missing request for the resource in pod {}", p.name)),
            _ => Ok(0),
        }
    };
    let mut used = Vec::new();
    let (mut unready, mut missing) = (Vec::new(), Vec::new());
    for p in pods {
        match (p.state, p.usage) {
            (PodState::Ignored, _) => {}
            (PodState::Unready, _) => unready.push(request(p)?),
            (PodState::Ready, None) => missing.push(request(p)?),
            (PodState::Ready, Some(u)) => used.push((u, request(p)?)),
        }
    }
    if used.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let ready_count = used.len() as i32;
    let (ratio, now) = usage_ratio(&used, target)?;
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - ratio).abs() <= tolerance {
            return Ok((current, now));
        }
        return Ok(((ratio * f64::from(ready_count)).ceil() as i32, now));
    }
    // Conservative re-run with assumed values for the pods set aside.
    if !missing.is_empty() {
        if ratio < 1.0 {
            for r in &missing {
                let assumed = match target {
                    Target::Utilization(t) => r * i64::from(t.max(100)) / 100,
                    Target::AverageValue(v) => v,
                };
                used.push((assumed, *r));
            }
        } else if ratio > 1.0 {
            used.extend(missing.iter().map(|r| (0, *r)));
        }
    }
    if scale_up_with_unready {
        used.extend(unready.iter().map(|r| (0, *r)));
    }
    let (new_ratio, _) = usage_ratio(&used, target)?;
    if (1.0 - new_ratio).abs() <= tolerance
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok((current, now));
    }
    let proposed = (new_ratio * used.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && proposed > current) || (new_ratio > 1.0 && proposed < current) {
        return Ok((current, now));
    }
    Ok((proposed, now))
}

/// Applies the stabilization windows to `proposed` given the recent
/// recommendations (Kubernetes' `stabilizeRecommendationWithBehaviors`),
/// records it, and forgets what is older than both windows.
pub fn stabilize(
    history: &mut History,
    now: DateTime<Utc>,
    current: i32,
    proposed: i32,
    up_window: Duration,
    down_window: Duration,
) -> i32 {
    let cutoff = |w: Duration| now - chrono::Duration::from_std(w).unwrap_or(chrono::Duration::zero());
    let (up_cut, down_cut) = (cutoff(up_window), cutoff(down_window));
    let mut up = proposed;
    let mut down = proposed;
    for (at, r) in history.iter() {
        if *at > up_cut {
            up = up.min(*r);
        }
        if *at > down_cut {
            down = down.max(*r);
        }
    }
    let keep = up_cut.min(down_cut);
    history.retain(|(at, _)| *at > keep);
    history.push((now, proposed));
    current.max(up).min(down)
}

/// Why the final count differs from the stabilized one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    WithinRange,
    TooFew,
    TooMany,
    ScaleUpLimit,
}

/// Bounds a recommendation by minReplicas, maxReplicas and the scale-up
/// rate (`max(2 × current, 4)` per step).
pub fn apply_limits(current: i32, desired: i32, min: i32, max: i32) -> (i32, Limit) {
    let scale_up_limit = (2 * current).max(4);
    let max_allowed = max.min(scale_up_limit).max(min);
    if desired < min {
        (min, Limit::TooFew)
    } else if desired > max_allowed {
        let why = if max > scale_up_limit {
            Limit::ScaleUpLimit
        } else {
            Limit::TooMany
        };
        (max_allowed, why)
    } else {
        (desired, Limit::WithinRange)
    }
}
