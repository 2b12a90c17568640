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

mod calc;
#[cfg(test)]
mod tests;

pub use calc::*;

pub const NAME: &str = "horizontal-pod-autoscaler";
/// No change while the ratio is within 10 % of 1.
pub const TOLERANCE: f64 = 0.1;
/// The workload loops' namespace index: one index of the shared pod cache, not two alike.
const BY_NAMESPACE: &str = super::workload::NAMESPACE_INDEX;

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
