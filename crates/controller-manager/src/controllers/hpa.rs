//! The horizontal-pod-autoscaler controller: every `--hpa-sync-period`,
//! each autoscaling/v2 HorizontalPodAutoscaler reads the CPU/memory usage
//! of its target's pods from a `MetricsSource` and sets the target's
//! `spec.replicas` (Deployments and ReplicaSets) with Kubernetes' formula.
//!
//! What is implemented, as Kubernetes' replica calculator does it:
//! * `Resource` and `ContainerResource` metrics on `cpu` and `memory`, with
//!   `Utilization` (of the pods' requests) or `AverageValue` targets;
//!   `Value` targets are refused (Kubernetes allows them only for
//!   Object/External metrics, which rkube does not have).
//! * `ratio = current / target`; within 10 % of 1 nothing changes; else
//!   `desired = ceil(ratio × ready pods with metrics)`.
//! * Pods being deleted or Failed are ignored; Pending pods and (for CPU)
//!   pods not Ready are "unready"; pods without metrics are "missing". If
//!   there are any, the ratio is recomputed conservatively: on a scale-down
//!   missing pods count as using 100 % of their request (the target, for
//!   AverageValue); on a scale-up missing and unready pods count as 0; a
//!   recomputed ratio that flips direction or falls within tolerance means
//!   no change. (Kubernetes' CPU initialization period and readiness delay
//!   are not modelled: an unready pod is simply unready.)
//! * Several metrics: the largest proposal wins; if some metrics fail, the
//!   others may scale up but never down.
//! * Stabilization: the highest recommendation within the scale-down window
//!   (`--hpa-downscale-stabilization`, or `behavior.scaleDown.
//!   stabilizationWindowSeconds`) and the lowest within the scale-up window
//!   (`behavior.scaleUp`, default 0). Scaling policies (`behavior.*.
//!   policies`) are not implemented; the classic limit applies instead: at
//!   most `max(2 × current, 4)` per step, between minReplicas and
//!   maxReplicas. Recommendations live in memory, as in Kubernetes.
//! * A target scaled to 0 disables autoscaling (ScalingDisabled).

use super::Error;
use crate::metrics::{ApiserverMetricsSource, MetricsSource, PodMetrics};
use crate::{Context, Shutdown};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::apps::v1::{Deployment, ReplicaSet};
use rkube_api::autoscaling::v2::{
    ContainerResourceMetricStatus, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus, MetricValueStatus, ResourceMetricStatus,
};
use rkube_api::core::v1::Pod;
use rkube_api::meta::v1::LabelSelector;
use rkube_api::quantity::Quantity;
use rkube_api::selector::Selector;
use rkube_api::Resource;
use rkube_client::{Action, Api, Controller, EventType, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const NAME: &str = "horizontal-pod-autoscaler";
/// No change while the ratio is within 10 % of 1.
pub const TOLERANCE: f64 = 0.1;
const BY_NAMESPACE: &str = "namespace";

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let hpas = ctx.informers.get::<HorizontalPodAutoscaler>();
        let pods = ctx.informers.get::<Pod>();
        pods.store()
            .add_index(BY_NAMESPACE, |p: &Pod| vec![p.namespace().to_string()]);
        let metrics: Arc<dyn MetricsSource> = match &ctx.config.metrics_source {
            Some(m) => m.0.clone(),
            None => Arc::new(ApiserverMetricsSource::new(ctx.client.clone())),
        };
        let state = Arc::new(State {
            ctx: ctx.clone(),
            hpas: hpas.store(),
            pods: pods.store(),
            metrics,
            recommendations: Mutex::new(HashMap::new()),
        });
        Controller::new(NAME, state, reconcile)
            .primary(&hpas)
            .workers(ctx.config.workers)
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

/// Recent (time, recommended replicas) of one HPA.
pub type History = Vec<(DateTime<Utc>, i32)>;

struct State {
    ctx: Arc<Context>,
    hpas: Store<HorizontalPodAutoscaler>,
    pods: Store<Pod>,
    metrics: Arc<dyn MetricsSource>,
    /// Per HPA: recent (time, recommended replicas), for stabilization.
    recommendations: Mutex<HashMap<String, History>>,
}

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
fn usage_ratio(used: &[(i64, i64)], target: Target) -> Result<(f64, Current), String> {
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

// ------------------------------------------------------------ the reconcile

/// A metric the spec asks for, as this controller understands it.
struct Wanted {
    resource: String,
    container: Option<String>,
    target: Target,
}

fn wanted(m: &MetricSpec) -> Result<Wanted, String> {
    let (name, target, container) = match (m.r#type.as_str(), &m.resource, &m.container_resource) {
        ("Resource", Some(r), _) => (&r.name, &r.target, None),
        ("ContainerResource", _, Some(r)) => (&r.name, &r.target, Some(r.container.clone())),
        (t, _, _) => {
            return Err(format!(
                "metric type {t:?} is not supported (Resource and ContainerResource are)"
            ));
        }
    };
    if name != "cpu" && name != "memory" {
        return Err(format!("resource {name:?} is not supported (cpu and memory are)"));
    }
    let t = target.clone().unwrap_or_default();
    let quantity = |q: &Quantity| if name == "cpu" { q.millis() } else { q.value() };
    let target = match t.r#type.as_str() {
        "Utilization" => Target::Utilization(
            t.average_utilization
                .filter(|u| *u > 0)
                .ok_or("averageUtilization must be above 0")?,
        ),
        "AverageValue" => {
            let q = t.average_value.as_ref().ok_or("averageValue is required")?;
            let v = quantity(q).map_err(|e| format!("averageValue {q}: {e}"))?;
            if v <= 0 {
                return Err(format!("averageValue {q} must be above 0"));
            }
            Target::AverageValue(v)
        }
        other => {
            return Err(format!(
                "target type {other:?} is not supported for resource metrics (Utilization and AverageValue are)"
            ));
        }
    };
    Ok(Wanted {
        resource: name.clone(),
        container,
        target,
    })
}

impl Wanted {
    /// How Kubernetes names the metric in events and conditions.
    fn describe(&self) -> String {
        let r = match &self.container {
            Some(c) => format!("{} container resource ({c})", self.resource),
            None => format!("{} resource", self.resource),
        };
        match self.target {
            Target::Utilization(_) => format!("{r} utilization (percentage of request)"),
            Target::AverageValue(_) => r,
        }
    }

    fn quantity(&self, v: i64) -> Quantity {
        if self.resource == "cpu" {
            Quantity::from_millis(v)
        } else {
            Quantity::from_bytes(v)
        }
    }

    fn status(&self, current: Current) -> MetricStatus {
        let value = MetricValueStatus {
            value: None,
            average_value: Some(self.quantity(current.average)),
            average_utilization: current.utilization,
        };
        match &self.container {
            None => MetricStatus {
                r#type: "Resource".into(),
                resource: Some(ResourceMetricStatus {
                    name: self.resource.clone(),
                    current: Some(value),
                }),
                container_resource: None,
            },
            Some(c) => MetricStatus {
                r#type: "ContainerResource".into(),
                resource: None,
                container_resource: Some(ContainerResourceMetricStatus {
                    name: self.resource.clone(),
                    current: Some(value),
                    container: c.clone(),
                }),
            },
        }
    }

    /// Each pod's sample for this metric.
    fn samples(
        &self,
        pods: &[Arc<Pod>],
        usage: &HashMap<&str, &PodMetrics>,
    ) -> Result<Vec<PodSample>, String> {
        let mut out = Vec::new();
        for pod in pods {
            let spec = pod.spec.clone().unwrap_or_default();
            let status = pod.status.clone().unwrap_or_default();
            let state = if !pod.metadata().deletion_timestamp.is_empty() || status.phase == "Failed" {
                PodState::Ignored
            } else if status.phase == "Pending"
                || (self.resource == "cpu" && !crate::controllers::endpoints::pod_is_ready(pod))
            {
                PodState::Unready
            } else {
                PodState::Ready
            };
            let mut request = Some(0i64);
            for c in spec
                .containers
                .iter()
                .filter(|c| self.container.as_ref().is_none_or(|n| *n == c.name))
            {
                let q = c.resources.as_ref().and_then(|r| r.requests.get(&self.resource));
                let v = match q {
                    Some(q) => Some(
                        if self.resource == "cpu" {
                            q.millis()
                        } else {
                            q.value()
                        }
                        .map_err(|e| format!("pod {}: request {q}: {e}", pod.name()))?,
                    ),
                    None => None,
                };
                request = match (request, v) {
                    (Some(a), Some(b)) => Some(a + b),
                    _ => None,
                };
                if request.is_none()
                    && matches!(self.target, Target::Utilization(_))
                    && state != PodState::Ignored
                {
                    return Err(format!(
                        "missing request for {} in container {} of Pod {}",
                        self.resource,
                        c.name,
                        pod.name()
                    ));
                }
            }
            let used = usage.get(pod.name()).map(|m| {
                m.containers
                    .iter()
                    .filter(|c| self.container.as_ref().is_none_or(|n| *n == c.name))
                    .map(|c| {
                        if self.resource == "cpu" {
                            c.cpu_millis
                        } else {
                            c.memory_bytes
                        }
                    })
                    .sum::<i64>()
            });
            out.push(PodSample {
                name: pod.name().to_string(),
                state,
                usage: used,
                request,
            });
        }
        Ok(out)
    }
}

/// The scale target, read fresh: its replicas and pod selector.
async fn get_scale(
    ctx: &Context,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Result<(i32, LabelSelector), String> {
    let client = ctx.client.clone();
    let (replicas, selector) = match kind {
        "Deployment" => {
            let d = Api::<Deployment>::namespaced(client, namespace)
                .get(name)
                .await
                .map_err(|e| e.to_string())?;
            let s = d.spec.unwrap_or_default();
            (s.replicas.unwrap_or(1), s.selector)
        }
        "ReplicaSet" => {
            let r = Api::<ReplicaSet>::namespaced(client, namespace)
                .get(name)
                .await
                .map_err(|e| e.to_string())?;
            let s = r.spec.unwrap_or_default();
            (s.replicas.unwrap_or(1), s.selector)
        }
        other => {
            return Err(format!(
                "scaleTargetRef kind {other:?} is not supported (Deployment and ReplicaSet are)"
            ));
        }
    };
    Ok((replicas, selector.unwrap_or_default()))
}

async fn set_replicas(
    ctx: &Context,
    namespace: &str,
    kind: &str,
    name: &str,
    replicas: i32,
) -> Result<(), String> {
    let patch = serde_json::json!({ "spec": { "replicas": replicas } });
    let client = ctx.client.clone();
    let result = match kind {
        "Deployment" => Api::<Deployment>::namespaced(client, namespace)
            .patch_merge(name, &patch)
            .await
            .map(|_| ()),
        _ => Api::<ReplicaSet>::namespaced(client, namespace)
            .patch_merge(name, &patch)
            .await
            .map(|_| ()),
    };
    result.map_err(|e| e.to_string())
}

/// Conditions to set: (type, status, reason, message).
type Cond = (&'static str, &'static str, &'static str, String);

fn set_conditions(status: &mut HorizontalPodAutoscalerStatus, conds: &[Cond], now: &str) {
    for (kind, st, reason, message) in conds {
        match status.conditions.iter_mut().find(|c| c.r#type == *kind) {
            Some(c) => {
                if c.status != *st {
                    c.last_transition_time = now.to_string();
                }
                c.status = st.to_string();
                c.reason = reason.to_string();
                c.message = message.clone();
            }
            None => status.conditions.push(HorizontalPodAutoscalerCondition {
                r#type: kind.to_string(),
                status: st.to_string(),
                last_transition_time: now.to_string(),
                reason: reason.to_string(),
                message: message.clone(),
            }),
        }
    }
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let every = ctx.config.hpa_sync_period;
    let Some(hpa) = state.hpas.get(&key) else {
        state
            .recommendations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        return Ok(Action::await_change());
    };
    let namespace = hpa.namespace().to_string();
    let spec = hpa.spec.clone().unwrap_or_default();
    let target_ref = spec.scale_target_ref.clone().unwrap_or_default();
    let reference = format!("{}/{}", target_ref.kind, target_ref.name);
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let now = Utc::now();
    let now_s = rkube_api::time::format(now);
    let mut conds: Vec<Cond> = Vec::new();
    let mut metric_statuses: Vec<MetricStatus> = Vec::new();

    let (current, selector) = match get_scale(ctx, &namespace, &target_ref.kind, &target_ref.name).await {
        Ok(s) => s,
        Err(e) => {
            let message = format!("the HPA controller was unable to get the target's current scale: {e}");
            record(ctx, hpa.as_ref(), EventType::Warning, "FailedGetScale", &message).await;
            conds.push(("AbleToScale", "False", "FailedGetScale", message));
            write_status(ctx, &hpa, None, None, None, &conds, &now_s).await?;
            return Ok(Action::requeue(every));
        }
    };

    let mut desired = current;
    let mut rescale_reason = String::new();
    let mut stabilized_down = false;
    if current == 0 && min != 0 {
        conds.push((
            "ScalingActive",
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
        ));
    } else if current > max {
        desired = max;
        rescale_reason = "Current number of replicas above Spec.MaxReplicas".into();
    } else if current < min {
        desired = min;
        rescale_reason = "Current number of replicas below Spec.MinReplicas".into();
    } else {
        match propose(&state, &namespace, &spec.metrics, &selector, current).await {
            Err(e) => {
                let (reason, message) = e;
                record(ctx, hpa.as_ref(), EventType::Warning, reason, &message).await;
                conds.push((
                    "ScalingActive",
                    "False",
                    reason,
                    format!("the HPA was unable to compute the replica count: {message}"),
                ));
                metric_statuses = spec.metrics.iter().map(|_| MetricStatus::default()).collect();
                write_status(
                    ctx,
                    &hpa,
                    Some(current),
                    Some(current),
                    Some(metric_statuses),
                    &conds,
                    &now_s,
                )
                .await?;
                return Ok(Action::requeue(every));
            }
            Ok(p) => {
                metric_statuses = p.statuses;
                conds.push((
                    "ScalingActive",
                    "True",
                    "ValidMetricFound",
                    format!(
                        "the HPA was able to successfully calculate a replica count from {}",
                        p.describe
                    ),
                ));
                let behavior = spec.behavior.clone().unwrap_or_default();
                let window = |r: &Option<rkube_api::autoscaling::v2::HpaScalingRules>, d: Duration| {
                    r.as_ref()
                        .and_then(|r| r.stabilization_window_seconds)
                        .map(|s| Duration::from_secs(s.max(0) as u64))
                        .unwrap_or(d)
                };
                let up = window(&behavior.scale_up, Duration::ZERO);
                let down = window(&behavior.scale_down, ctx.config.hpa_downscale_stabilization);
                let stabilized = {
                    let mut all = state.recommendations.lock().unwrap_or_else(|p| p.into_inner());
                    stabilize(
                        all.entry(key.clone()).or_default(),
                        now,
                        current,
                        p.replicas,
                        up,
                        down,
                    )
                };
                stabilized_down = stabilized > p.replicas && p.replicas < current;
                let (limited, why) = apply_limits(current, stabilized, min, max);
                conds.push(match why {
                    Limit::WithinRange => (
                        "ScalingLimited",
                        "False",
                        "DesiredWithinRange",
                        "the desired count is within the acceptable range".into(),
                    ),
                    Limit::TooFew => (
                        "ScalingLimited",
                        "True",
                        "TooFewReplicas",
                        "the desired replica count is less than the minimum replica count".into(),
                    ),
                    Limit::TooMany => (
                        "ScalingLimited",
                        "True",
                        "TooManyReplicas",
                        "the desired replica count is more than the maximum replica count".into(),
                    ),
                    Limit::ScaleUpLimit => (
                        "ScalingLimited",
                        "True",
                        "ScaleUpLimit",
                        "the desired replica count is increasing faster than the maximum scale rate".into(),
                    ),
                });
                desired = limited;
                rescale_reason = if desired > current {
                    format!("{} above target", p.describe)
                } else {
                    "All metrics below target".into()
                };
            }
        }
    }

    let mut last_scale = None;
    if desired != current {
        if let Err(e) = set_replicas(ctx, &namespace, &target_ref.kind, &target_ref.name, desired).await {
            let message = format!("the HPA controller was unable to update the target scale: {e}");
            record(
                ctx,
                hpa.as_ref(),
                EventType::Warning,
                "FailedRescale",
                &format!("New size: {desired}; reason: {rescale_reason}; error: {e}"),
            )
            .await;
            conds.push(("AbleToScale", "False", "FailedUpdateScale", message));
            write_status(
                ctx,
                &hpa,
                Some(current),
                Some(desired),
                Some(metric_statuses),
                &conds,
                &now_s,
            )
            .await?;
            return Ok(Action::requeue(every));
        }
        tracing::info!(hpa = %key, target = %reference, from = current, to = desired, reason = %rescale_reason, "rescaled");
        record(
            ctx,
            hpa.as_ref(),
            EventType::Normal,
            "SuccessfulRescale",
            &format!("New size: {desired}; reason: {rescale_reason}"),
        )
        .await;
        conds.insert(
            0,
            (
                "AbleToScale",
                "True",
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {desired}"),
            ),
        );
        last_scale = Some(now_s.clone());
    } else if stabilized_down {
        conds.insert(0, ("AbleToScale", "True", "ScaleDownStabilized", "recent recommendations were higher than current one, applying the highest recent recommendation".into()));
    } else {
        conds.insert(
            0,
            (
                "AbleToScale",
                "True",
                "ReadyForNewScale",
                "recommended size matches current size".into(),
            ),
        );
    }
    let api = Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), &namespace);
    let generation = hpa.metadata().generation;
    api.replace_status_with(hpa.name(), |mut h| {
        let s = h.status.get_or_insert_with(Default::default);
        s.observed_generation = generation;
        s.current_replicas = current;
        s.desired_replicas = desired;
        s.current_metrics = metric_statuses.clone();
        if let Some(t) = &last_scale {
            s.last_scale_time = t.clone();
        }
        set_conditions(s, &conds, &now_s);
        h
    })
    .await?;
    Ok(Action::requeue(every))
}

/// The replica proposal over every metric, or the first metric error as
/// (event reason, message).
struct Proposal {
    replicas: i32,
    describe: String,
    statuses: Vec<MetricStatus>,
}

async fn propose(
    state: &State,
    namespace: &str,
    metrics: &[MetricSpec],
    selector: &LabelSelector,
    current: i32,
) -> Result<Proposal, (&'static str, String)> {
    let sel = Selector::from_label_selector(selector).map_err(|e| {
        (
            "InvalidSelector",
            format!("the target's selector is invalid: {e}"),
        )
    })?;
    if sel.is_empty() {
        return Err((
            "InvalidSelector",
            "the target has an empty selector; refusing to count every pod of the namespace".into(),
        ));
    }
    let pods: Vec<Arc<Pod>> = state
        .pods
        .by_index(BY_NAMESPACE, namespace)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| sel.matches(&p.metadata().labels))
        .collect();
    let usage = state
        .metrics
        .pod_metrics(namespace, &sel.to_string())
        .await
        .map_err(|e| {
            (
                "FailedGetResourceMetric",
                format!("unable to get metrics for resource: {e}"),
            )
        })?;
    let by_name: HashMap<&str, &PodMetrics> = usage.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut best: Option<(i32, String)> = None;
    let mut first_error: Option<(&'static str, String)> = None;
    let mut statuses = Vec::new();
    let mut invalid = 0;
    for m in metrics {
        let result = wanted(m)
            .map_err(|e| ("FailedGetResourceMetric", e))
            .and_then(|w| {
                let samples = w
                    .samples(&pods, &by_name)
                    .map_err(|e| ("FailedGetResourceMetric", e))?;
                let (r, cur) = calc_replicas(current, &samples, w.target, TOLERANCE).map_err(|e| {
                    (
                        "FailedGetResourceMetric",
                        format!("failed to get {} metric value: {e}", w.resource),
                    )
                })?;
                Ok((r, cur, w))
            });
        match result {
            Ok((r, cur, w)) => {
                statuses.push(w.status(cur));
                if best.as_ref().is_none_or(|(b, _)| r > *b) {
                    best = Some((r, w.describe()));
                }
            }
            Err(e) => {
                invalid += 1;
                statuses.push(MetricStatus::default());
                first_error.get_or_insert(e);
            }
        }
    }
    let Some((mut replicas, describe)) = best else {
        let (reason, message) = first_error.unwrap_or(("FailedGetResourceMetric", "no metrics".into()));
        return Err((
            reason,
            format!(
                "invalid metrics ({invalid} invalid out of {}), first error is: {message}",
                metrics.len()
            ),
        ));
    };
    // A failed metric might have wanted more: never scale down blind.
    if invalid > 0 && replicas < current {
        replicas = current;
    }
    Ok(Proposal {
        replicas,
        describe,
        statuses,
    })
}

async fn write_status(
    ctx: &Context,
    hpa: &HorizontalPodAutoscaler,
    current: Option<i32>,
    desired: Option<i32>,
    metrics: Option<Vec<MetricStatus>>,
    conds: &[Cond],
    now: &str,
) -> Result<(), rkube_client::Error> {
    let api = Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), hpa.namespace());
    let generation = hpa.metadata().generation;
    api.replace_status_with(hpa.name(), |mut h| {
        let s = h.status.get_or_insert_with(Default::default);
        s.observed_generation = generation;
        if let Some(c) = current {
            s.current_replicas = c;
        }
        if let Some(d) = desired {
            s.desired_replicas = d;
        }
        if let Some(m) = &metrics {
            s.current_metrics = m.clone();
        }
        set_conditions(s, conds, now);
        h
    })
    .await?;
    Ok(())
}

async fn record<K: Resource>(ctx: &Context, obj: &K, kind: EventType, reason: &str, message: &str) {
    if let Err(e) = ctx.recorder.publish(obj, kind, reason, message).await {
        tracing::warn!(object = obj.name(), reason, error = %e, "cannot record event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(name: &str, usage: i64, request: i64) -> PodSample {
        PodSample {
            name: name.into(),
            state: PodState::Ready,
            usage: Some(usage),
            request: Some(request),
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn the_formula_scales_by_the_usage_ratio() {
        // 2 pods at 90 % of a 100m request, target 50 %: ceil(2 × 1.8) = 4.
        let pods = [ready("a", 90, 100), ready("b", 90, 100)];
        let (r, cur) = calc_replicas(2, &pods, Target::Utilization(50), TOLERANCE).unwrap();
        assert_eq!((r, cur.utilization, cur.average), (4, Some(90), 90));
        // Far below: scale down.
        let pods = [
            ready("a", 10, 100),
            ready("b", 10, 100),
            ready("c", 10, 100),
            ready("d", 10, 100),
        ];
        assert_eq!(
            calc_replicas(4, &pods, Target::Utilization(50), TOLERANCE)
                .unwrap()
                .0,
            1
        );
    }

    #[test]
    fn within_ten_percent_nothing_changes() {
        let pods = [ready("a", 54, 100), ready("b", 54, 100)];
        assert_eq!(
            calc_replicas(2, &pods, Target::Utilization(50), TOLERANCE)
                .unwrap()
                .0,
            2
        );
        let pods = [ready("a", 56, 100), ready("b", 56, 100)];
        assert_eq!(
            calc_replicas(2, &pods, Target::Utilization(50), TOLERANCE)
                .unwrap()
                .0,
            3
        );
    }

    #[test]
    fn average_value_targets_use_the_per_pod_average() {
        let mi = 1024 * 1024;
        let pods = [ready("a", 300 * mi, 0), ready("b", 100 * mi, 0)];
        let (r, cur) = calc_replicas(2, &pods, Target::AverageValue(100 * mi), TOLERANCE).unwrap();
        assert_eq!((r, cur.utilization, cur.average), (4, None, 200 * mi));
    }

    #[test]
    fn missing_and_unready_pods_are_treated_conservatively() {
        let missing = PodSample {
            name: "m".into(),
            state: PodState::Ready,
            usage: None,
            request: Some(100),
        };
        let unready = PodSample {
            name: "u".into(),
            state: PodState::Unready,
            usage: None,
            request: Some(100),
        };
        // Scale-down: the missing pod counts as 100 % → (10+10+100)/3 = 40 %
        // → ratio 0.8 → ceil(0.8 × 3) = 3: no change from 3.
        let pods = [ready("a", 10, 100), ready("b", 10, 100), missing.clone()];
        assert_eq!(
            calc_replicas(3, &pods, Target::Utilization(50), TOLERANCE)
                .unwrap()
                .0,
            3
        );
        // Scale-up: missing and unready count as 0 → (200+0+0)/3 = 66 %
        // → ceil(1.33 × 3) = 4 instead of ceil(4 × 1) = 4 from one pod.
        let pods = [ready("a", 200, 100), missing, unready.clone()];
        assert_eq!(
            calc_replicas(3, &pods, Target::Utilization(50), TOLERANCE)
                .unwrap()
                .0,
            4
        );
        // A small scale-up that the zeros cancel out: no change.
        let pods = [ready("a", 60, 100), unready];
        assert_eq!(
            calc_replicas(2, &pods, Target::Utilization(50), TOLERANCE)
                .unwrap()
                .0,
            2
        );
    }

    #[test]
    fn ignored_pods_do_not_count_and_no_metrics_is_an_error() {
        let gone = PodSample {
            name: "g".into(),
            state: PodState::Ignored,
            usage: Some(1000),
            request: Some(100),
        };
        let pods = [ready("a", 50, 100), gone];
        assert_eq!(
            calc_replicas(1, &pods, Target::Utilization(50), TOLERANCE)
                .unwrap()
                .0,
            1
        );
        let none = [PodSample {
            name: "a".into(),
            state: PodState::Ready,
            usage: None,
            request: Some(100),
        }];
        let e = calc_replicas(1, &none, Target::Utilization(50), TOLERANCE).unwrap_err();
        assert!(e.contains("did not receive metrics"), "{e}");
        assert!(calc_replicas(1, &[], Target::Utilization(50), TOLERANCE)
            .unwrap_err()
            .contains("no pods"));
        let no_request = [PodSample {
            name: "a".into(),
            state: PodState::Ready,
            usage: Some(5),
            request: None,
        }];
        assert!(calc_replicas(1, &no_request, Target::Utilization(50), TOLERANCE)
            .unwrap_err()
            .contains("missing request"));
    }

    #[test]
    fn scale_down_waits_for_the_highest_recommendation_in_the_window() {
        let w = Duration::from_secs(300);
        let mut h = Vec::new();
        assert_eq!(
            stabilize(&mut h, t(0), 1, 5, Duration::ZERO, w),
            5,
            "scale up at once"
        );
        assert_eq!(
            stabilize(&mut h, t(60), 5, 2, Duration::ZERO, w),
            5,
            "held by the 5 a minute ago"
        );
        assert_eq!(stabilize(&mut h, t(200), 5, 3, Duration::ZERO, w), 5);
        assert_eq!(
            stabilize(&mut h, t(301), 5, 2, Duration::ZERO, w),
            3,
            "the 5 left the window; the 3 has not"
        );
        assert_eq!(stabilize(&mut h, t(501), 3, 2, Duration::ZERO, w), 2);
        assert!(h.len() <= 3, "old recommendations are forgotten: {h:?}");
        // No window: straight to the proposal.
        let mut h = Vec::new();
        stabilize(&mut h, t(0), 1, 5, Duration::ZERO, Duration::ZERO);
        assert_eq!(stabilize(&mut h, t(1), 5, 2, Duration::ZERO, Duration::ZERO), 2);
    }

    #[test]
    fn a_scale_up_window_takes_the_lowest_recent_recommendation() {
        let mut h = Vec::new();
        let up = Duration::from_secs(60);
        assert_eq!(stabilize(&mut h, t(0), 2, 2, up, Duration::ZERO), 2);
        assert_eq!(stabilize(&mut h, t(10), 2, 6, up, Duration::ZERO), 2);
        assert_eq!(stabilize(&mut h, t(61), 2, 6, up, Duration::ZERO), 6);
    }

    #[test]
    fn limits_bound_the_result_and_say_why() {
        assert_eq!(apply_limits(2, 3, 1, 10), (3, Limit::WithinRange));
        assert_eq!(apply_limits(2, 0, 1, 10), (1, Limit::TooFew));
        assert_eq!(apply_limits(3, 12, 1, 5), (5, Limit::TooMany));
        // From 1 replica at most 4, from 5 at most 10.
        assert_eq!(apply_limits(1, 9, 1, 20), (4, Limit::ScaleUpLimit));
        assert_eq!(apply_limits(5, 30, 1, 20), (10, Limit::ScaleUpLimit));
    }
}
