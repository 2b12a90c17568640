//! The node-lifecycle controller: notices nodes whose kubelet went quiet,
//! and moves their pods away (Kubernetes' node lifecycle controller with
//! its NoExecute taint manager).
//!
//! * A node whose Lease (`kube-node-lease/<node>`, `spec.renewTime`) — or,
//!   without one, its Ready condition's heartbeat — is older than
//!   `--node-monitor-grace-period` gets every condition set to `Unknown`
//!   (`NodeStatusUnknown`, "Kubelet stopped posting node status."), its
//!   pods marked not ready, and the taint `node.kubernetes.io/unreachable:
//!   NoExecute`. A node reporting Ready=False gets
//!   `node.kubernetes.io/not-ready:NoExecute`. Both go once Ready is True.
//! * A pod on a node with NoExecute taints it does not tolerate is deleted
//!   at once; one that tolerates them for `tolerationSeconds` is deleted
//!   when the earliest such toleration runs out, counted from the taint's
//!   `timeAdded`. Pods with no toleration for not-ready/unreachable get one
//!   of `--default-toleration-seconds` (Kubernetes' DefaultTolerationSeconds
//!   admission plugin, applied here because the apiserver has none).
//!
//! The controller does not set Ready back to True: as in Kubernetes that is
//! the kubelet's status post once it is back. Every decision is a pure
//! function of the node, its Lease, its pods and the time, tested with
//! explicit clocks.

use super::Error;
use crate::{Context, Shutdown};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::coordination::v1::Lease;
use rkube_api::core::v1::{Node, NodeCondition, NodeStatus, Pod, Taint, Toleration};
use rkube_api::Resource;
use rkube_client::{Action, Api, Controller, DeleteParams, EventType, Preconditions, Store};
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "node-lifecycle";
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// NoSchedule taints that follow the kubelet's pressure conditions.
pub const PRESSURE_TAINTS: &[(&str, &str)] = &[
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
];
const BY_NODE: &str = "nodeName";
/// The conditions a kubelet reports, all set to Unknown when it goes quiet.
const KUBELET_CONDITIONS: &[&str] = &["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
const UNKNOWN_REASON: &str = "NodeStatusUnknown";
const UNKNOWN_MESSAGE: &str = "Kubelet stopped posting node status.";
const NEVER_REASON: &str = "NodeStatusNeverUpdated";
const NEVER_MESSAGE: &str = "Kubelet never posted node status.";

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let nodes = ctx.informers.get::<Node>();
        let leases = ctx.informers.get::<Lease>();
        let pods = ctx.informers.get::<Pod>();
        pods.store().add_index(BY_NODE, |p: &Pod| {
            p.spec
                .iter()
                .map(|s| s.node_name.clone())
                .filter(|n| !n.is_empty())
                .collect()
        });
        let state = Arc::new(State {
            ctx: ctx.clone(),
            nodes: nodes.store(),
            leases: leases.store(),
            pods: pods.store(),
        });
        Controller::new(NAME, state, reconcile)
            .primary(&nodes)
            .watches(&leases, |l: &Lease| {
                if l.namespace() == LEASE_NAMESPACE {
                    vec![l.name().to_string()]
                } else {
                    vec![]
                }
            })
            // A pod landing on a tainted node is judged too.
            .watches(&pods, |p: &Pod| {
                p.spec
                    .iter()
                    .map(|s| s.node_name.clone())
                    .filter(|n| !n.is_empty())
                    .collect()
            })
            .workers(ctx.config.workers)
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

struct State {
    ctx: Arc<Context>,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn condition<'a>(node: &'a Node, kind: &str) -> Option<&'a NodeCondition> {
    node.status.as_ref()?.conditions.iter().find(|c| c.r#type == kind)
}

/// Ready's status: "True", "False", "Unknown", or "" when never reported.
pub fn ready_status(node: &Node) -> &str {
    condition(node, "Ready").map(|c| c.status.as_str()).unwrap_or("")
}

/// When the kubelet was last heard from: the newest of its Lease renewal
/// and its Ready heartbeat; None if never.
pub fn last_heartbeat(node: &Node, lease: Option<&Lease>) -> Option<DateTime<Utc>> {
    let renew = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| parse_time(&s.renew_time));
    let ready = condition(node, "Ready").and_then(|c| parse_time(&c.last_heartbeat_time));
    renew.max(ready)
}

/// The status to write when the kubelet has been silent longer than
/// `grace` (every kubelet condition Unknown, heartbeat times kept); None
/// when the node is fine or already marked. A node never heard from is
/// given `grace` from its creation.
pub fn unknown_status(
    node: &Node,
    lease: Option<&Lease>,
    now: DateTime<Utc>,
    grace: Duration,
) -> Option<NodeStatus> {
    let heard = last_heartbeat(node, lease);
    let since = heard
        .or_else(|| parse_time(&node.metadata().creation_timestamp))
        .unwrap_or(now);
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    if now.signed_duration_since(since) <= grace {
        return None;
    }
    let (reason, message) = if heard.is_some() {
        (UNKNOWN_REASON, UNKNOWN_MESSAGE)
    } else {
        (NEVER_REASON, NEVER_MESSAGE)
    };
    let mut status = node.status.clone().unwrap_or_default();
    let mut changed = false;
    for kind in KUBELET_CONDITIONS {
        match status.conditions.iter_mut().find(|c| c.r#type == *kind) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = reason.into();
                c.message = message.into();
                c.last_transition_time = rkube_api::time::format(now);
                changed = true;
            }
            None => {
                status.conditions.push(NodeCondition {
                    r#type: kind.to_string(),
                    status: "Unknown".into(),
                    last_heartbeat_time: String::new(),
                    last_transition_time: rkube_api::time::format(now),
                    reason: reason.into(),
                    message: message.into(),
                });
                changed = true;
            }
        }
    }
    changed.then_some(status)
}

/// The node's taints with not-ready/unreachable NoExecute set from its
/// Ready condition: Unknown → unreachable, False → not-ready, True (or
/// never reported) → neither; and a NoSchedule taint for each pressure
/// condition that is True (Kubernetes' TaintNodesByCondition), so the
/// scheduler keeps new pods off a node short of memory, disk or PIDs. A
/// taint already there keeps its timeAdded.
pub fn desired_taints(node: &Node, now: DateTime<Utc>) -> Vec<Taint> {
    let current = node.spec.as_ref().map(|s| s.taints.clone()).unwrap_or_default();
    let want = match ready_status(node) {
        "Unknown" => Some(TAINT_UNREACHABLE),
        "False" => Some(TAINT_NOT_READY),
        _ => None,
    };
    let ours =
        |t: &Taint| t.effect == "NoExecute" && (t.key == TAINT_UNREACHABLE || t.key == TAINT_NOT_READY);
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| !ours(t) || Some(t.key.as_str()) == want)
        .cloned()
        .collect();
    if let Some(key) = want {
        if !taints.iter().any(|t| ours(t) && t.key == key) {
            taints.push(Taint {
                key: key.into(),
                value: String::new(),
                effect: "NoExecute".into(),
                time_added: rkube_api::time::format(now),
            });
        }
    }
    for (kind, key) in PRESSURE_TAINTS {
        let pressure = condition(node, kind).is_some_and(|c| c.status == "True");
        let ours = |t: &Taint| t.key == *key && t.effect == "NoSchedule";
        if !pressure {
            taints.retain(|t| !ours(t));
        } else if !taints.iter().any(ours) {
            // Kubernetes leaves timeAdded unset on NoSchedule taints
            taints.push(Taint {
                key: key.to_string(),
                value: String::new(),
                effect: "NoSchedule".into(),
                time_added: String::new(),
            });
        }
    }
    taints
}

pub use rkube_api::placement::tolerates;

/// The pod's tolerations plus the defaults Kubernetes' admission would
/// have added: not-ready and unreachable for `default_seconds`, unless the
/// pod already says something about them.
pub fn effective_tolerations(pod: &Pod, default_seconds: u64) -> Vec<Toleration> {
    let mut tolerations = pod
        .spec
        .as_ref()
        .map(|s| s.tolerations.clone())
        .unwrap_or_default();
    for key in [TAINT_NOT_READY, TAINT_UNREACHABLE] {
        let covered = tolerations
            .iter()
            .any(|t| (t.key == key || t.key.is_empty()) && (t.effect == "NoExecute" || t.effect.is_empty()));
        if !covered {
            tolerations.push(Toleration {
                key: key.into(),
                operator: "Exists".into(),
                value: String::new(),
                effect: "NoExecute".into(),
                toleration_seconds: Some(i32::try_from(default_seconds).unwrap_or(i32::MAX)),
            });
        }
    }
    tolerations
}

/// What the taint manager does with one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eviction {
    /// Tolerates every NoExecute taint without limit (or there are none).
    Keep,
    /// Does not tolerate a taint, or a toleration has run out.
    Now,
    /// Tolerated until then.
    At(DateTime<Utc>),
}

/// The taint manager's decision for `pod` on a node with `taints` at
/// `now`. A taint without a readable timeAdded counts from `now`, so a
/// limited toleration of it never runs out early.
pub fn eviction(pod: &Pod, taints: &[Taint], now: DateTime<Utc>, default_seconds: u64) -> Eviction {
    let tolerations = effective_tolerations(pod, default_seconds);
    let mut deadline: Option<DateTime<Utc>> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        // The first toleration that matches decides, as Kubernetes'
        // GetMatchingTolerations picks it.
        let Some(t) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Eviction::Now;
        };
        let Some(seconds) = t.toleration_seconds else {
            continue;
        };
        let added = parse_time(&taint.time_added).unwrap_or(now);
        let at = added + chrono::Duration::seconds(i64::from(seconds.max(0)));
        deadline = Some(deadline.map_or(at, |d| d.min(at)));
    }
    match deadline {
        None => Eviction::Keep,
        Some(at) if at <= now => Eviction::Now,
        Some(at) => Eviction::At(at),
    }
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let config = &ctx.config;
    let Some(cached) = state.nodes.get(&key) else {
        return Ok(Action::await_change());
    };
    let node_api = Api::<Node>::all(ctx.client.clone());
    let lease = state.leases.get_namespaced(LEASE_NAMESPACE, &key);
    let now = Utc::now();
    let mut node: Node = (*cached).clone();

    // 1. A quiet kubelet: conditions to Unknown.
    if let Some(status) = unknown_status(&node, lease.as_deref(), now, config.node_monitor_grace_period) {
        let was = ready_status(&node).to_string();
        let mut desired = node.clone();
        desired.status = Some(status);
        node = node_api.update_status(&desired).await?;
        tracing::warn!(node = %key, "kubelet stopped posting node status; conditions set to Unknown");
        if was != "Unknown" {
            record(
                ctx,
                &node,
                EventType::Normal,
                "NodeNotReady",
                &format!("Node {key} status is now: NodeNotReady"),
            )
            .await;
        }
    }

    // 2. Taints follow Ready and the pressure conditions.
    let taints = desired_taints(&node, now);
    let current = node.spec.as_ref().map(|s| s.taints.clone()).unwrap_or_default();
    if taints != current {
        let added_not_ready = taints.iter().any(|t| t.key == TAINT_NOT_READY)
            && !current.iter().any(|t| t.key == TAINT_NOT_READY);
        let mut desired = node.clone();
        desired.spec.get_or_insert_with(Default::default).taints = taints;
        node = node_api.update(&desired).await?;
        tracing::info!(node = %key, ready = ready_status(&node), "taints updated from the node's conditions");
        if added_not_ready {
            record(
                ctx,
                &node,
                EventType::Normal,
                "NodeNotReady",
                &format!("Node {key} status is now: NodeNotReady"),
            )
            .await;
        }
    }

    // 3. Pods on a node that is not Ready do not serve (Kubernetes'
    //    MarkPodsNotReady), so Services stop sending them traffic.
    let pods = state.pods.by_index(BY_NODE, &key).unwrap_or_default();
    if ready_status(&node) == "Unknown" {
        for pod in pods
            .iter()
            .filter(|p| crate::controllers::endpoints::pod_is_ready(p))
        {
            mark_pod_not_ready(ctx, pod, now).await?;
        }
    }

    // 4. The taint manager.
    let taints = node.spec.as_ref().map(|s| s.taints.clone()).unwrap_or_default();
    let mut next: Option<DateTime<Utc>> = None;
    for pod in pods.iter().filter(|p| p.metadata().deletion_timestamp.is_empty()) {
        match eviction(pod, &taints, now, config.default_toleration_seconds) {
            Eviction::Keep => {}
            Eviction::At(at) => next = Some(next.map_or(at, |n| n.min(at))),
            Eviction::Now => evict(ctx, pod).await?,
        }
    }

    // Come back when a toleration runs out or the heartbeat would expire,
    // and at least every monitor period.
    let mut after = config.node_monitor_period;
    if let Some(at) = next {
        after = after.min((at - now).to_std().unwrap_or_default());
    }
    if ready_status(&node) != "Unknown" {
        let since = last_heartbeat(&node, lease.as_deref())
            .or_else(|| parse_time(&node.metadata().creation_timestamp))
            .unwrap_or(now);
        let expires = since
            + chrono::Duration::from_std(config.node_monitor_grace_period).unwrap_or(chrono::Duration::MAX);
        // Just past the expiry, since the check is "older than grace".
        after = after.min((expires - now).to_std().unwrap_or_default() + Duration::from_millis(100));
    }
    Ok(Action::requeue(after.max(Duration::from_millis(100))))
}

async fn mark_pod_not_ready(ctx: &Context, pod: &Pod, now: DateTime<Utc>) -> Result<(), rkube_client::Error> {
    let api = Api::<Pod>::namespaced(ctx.client.clone(), pod.namespace());
    let result = api
        .replace_status_with(pod.name(), |mut p| {
            if let Some(s) = p.status.as_mut() {
                for c in s
                    .conditions
                    .iter_mut()
                    .filter(|c| c.r#type == "Ready" && c.status == "True")
                {
                    c.status = "False".into();
                    c.last_transition_time = rkube_api::time::format(now);
                }
            }
            p
        })
        .await;
    match result {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

async fn evict(ctx: &Context, pod: &Pod) -> Result<(), rkube_client::Error> {
    let who = format!("{}/{}", pod.namespace(), pod.name());
    record(
        ctx,
        pod,
        EventType::Normal,
        "TaintManagerEviction",
        &format!("Marking for deletion Pod {who}"),
    )
    .await;
    let api = Api::<Pod>::namespaced(ctx.client.clone(), pod.namespace());
    // The uid guards against deleting a new pod of the same name.
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(pod.metadata().uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(pod.name(), &dp).await {
        Ok(_) => {
            tracing::info!(pod = %who, node = pod.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or(""), "evicted");
            Ok(())
        }
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Events are advisory: a failure is logged, never fails the reconcile.
async fn record<K: Resource>(ctx: &Context, obj: &K, kind: EventType, reason: &str, message: &str) {
    if let Err(e) = ctx.recorder.publish(obj, kind, reason, message).await {
        tracing::warn!(object = obj.name(), reason, error = %e, "cannot record event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::coordination::v1::LeaseSpec;
    use rkube_api::core::v1::{NodeSpec, PodSpec};

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    fn node(ready: &str, heartbeat: &str) -> Node {
        let mut n = Node {
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: vec![NodeCondition {
                    r#type: "Ready".into(),
                    status: ready.into(),
                    last_heartbeat_time: heartbeat.into(),
                    reason: "KubeletReady".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        n.metadata_mut().name = "n1".into();
        n.metadata_mut().creation_timestamp = "2024-05-01T11:00:00Z".into();
        n
    }

    fn lease(renew: &str) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                renew_time: renew.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        let mut p = Pod {
            spec: Some(PodSpec {
                node_name: "n1".into(),
                tolerations,
                ..Default::default()
            }),
            ..Default::default()
        };
        p.metadata_mut().name = "web-1".into();
        p.metadata_mut().namespace = "default".into();
        p
    }

    fn taint(key: &str, added: &str) -> Taint {
        Taint {
            key: key.into(),
            value: String::new(),
            effect: "NoExecute".into(),
            time_added: added.into(),
        }
    }

    fn toleration(key: &str, seconds: Option<i32>) -> Toleration {
        Toleration {
            key: key.into(),
            operator: "Exists".into(),
            effect: "NoExecute".into(),
            toleration_seconds: seconds,
            ..Default::default()
        }
    }

    const GRACE: Duration = Duration::from_secs(40);

    #[test]
    fn a_renewed_lease_keeps_the_node_known() {
        let n = node("True", "2024-05-01T11:59:00Z");
        let l = lease("2024-05-01T12:00:00.250000Z");
        // 39.75 s after the lease: still fine, though the Ready heartbeat is old.
        assert_eq!(
            unknown_status(&n, Some(&l), t("2024-05-01T12:00:40Z"), GRACE),
            None
        );
        let s = unknown_status(&n, Some(&l), t("2024-05-01T12:00:41Z"), GRACE).expect("marked");
        let ready = s.conditions.iter().find(|c| c.r#type == "Ready").unwrap();
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.message.as_str()
            ),
            (
                "Unknown",
                "NodeStatusUnknown",
                "Kubelet stopped posting node status."
            )
        );
        assert_eq!(
            ready.last_heartbeat_time, "2024-05-01T11:59:00Z",
            "heartbeat kept"
        );
        assert_eq!(ready.last_transition_time, "2024-05-01T12:00:41Z");
        let kinds: Vec<&str> = s.conditions.iter().map(|c| c.r#type.as_str()).collect();
        assert_eq!(kinds, ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]);
        assert!(s.conditions.iter().all(|c| c.status == "Unknown"));
    }

    #[test]
    fn without_a_lease_the_ready_heartbeat_counts_and_marking_is_idempotent() {
        let n = node("True", "2024-05-01T12:00:00Z");
        assert_eq!(unknown_status(&n, None, t("2024-05-01T12:00:30Z"), GRACE), None);
        let s = unknown_status(&n, None, t("2024-05-01T12:01:00Z"), GRACE).unwrap();
        let mut marked = n.clone();
        marked.status = Some(s);
        assert_eq!(
            unknown_status(&marked, None, t("2024-05-01T12:05:00Z"), GRACE),
            None,
            "already Unknown"
        );
    }

    #[test]
    fn a_node_never_heard_from_gets_grace_from_its_creation() {
        let mut n = node("", "");
        n.status = None;
        assert_eq!(unknown_status(&n, None, t("2024-05-01T11:00:30Z"), GRACE), None);
        let s = unknown_status(&n, None, t("2024-05-01T11:00:41Z"), GRACE).unwrap();
        assert_eq!(s.conditions[0].reason, "NodeStatusNeverUpdated");
    }

    #[test]
    fn taints_follow_ready_and_keep_their_time() {
        let now = t("2024-05-01T12:00:00Z");
        let mut n = node("Unknown", "");
        n.spec.as_mut().unwrap().taints = vec![Taint {
            key: "dedicated".into(),
            value: "db".into(),
            effect: "NoSchedule".into(),
            time_added: String::new(),
        }];
        let taints = desired_taints(&n, now);
        assert_eq!(taints.len(), 2);
        assert_eq!(taints[1], taint(TAINT_UNREACHABLE, "2024-05-01T12:00:00Z"));
        n.spec.as_mut().unwrap().taints = taints.clone();
        assert_eq!(
            desired_taints(&n, t("2024-05-01T12:09:00Z")),
            taints,
            "timeAdded kept"
        );

        // Unknown → False swaps unreachable for not-ready.
        n.status.as_mut().unwrap().conditions[0].status = "False".into();
        let swapped = desired_taints(&n, t("2024-05-01T12:10:00Z"));
        assert_eq!(swapped[1], taint(TAINT_NOT_READY, "2024-05-01T12:10:00Z"));
        assert_eq!(swapped.len(), 2);
        // Ready again: only the user's taint is left.
        n.status.as_mut().unwrap().conditions[0].status = "True".into();
        n.spec.as_mut().unwrap().taints = swapped;
        assert_eq!(desired_taints(&n, now).len(), 1);
    }

    #[test]
    fn pressure_conditions_taint_the_node_no_schedule_while_they_last() {
        let now = t("2024-05-01T12:00:00Z");
        let mut n = node("True", "2024-05-01T12:00:00Z");
        let pressure = |kind: &str, status: &str| NodeCondition {
            r#type: kind.into(),
            status: status.into(),
            ..Default::default()
        };
        let conditions = &mut n.status.as_mut().unwrap().conditions;
        conditions.push(pressure("DiskPressure", "True"));
        conditions.push(pressure("MemoryPressure", "False"));
        let taints = desired_taints(&n, now);
        assert_eq!(
            taints,
            [Taint {
                key: "node.kubernetes.io/disk-pressure".into(),
                value: String::new(),
                effect: "NoSchedule".into(),
                time_added: String::new(),
            }]
        );
        n.spec.as_mut().unwrap().taints = taints.clone();
        assert_eq!(desired_taints(&n, now), taints, "already there: no change");

        // memory pressure too, then the disk recovers
        let conditions = &mut n.status.as_mut().unwrap().conditions;
        conditions[2].status = "True".into();
        conditions[1].status = "False".into();
        let keys: Vec<String> = desired_taints(&n, now).into_iter().map(|t| t.key).collect();
        assert_eq!(keys, ["node.kubernetes.io/memory-pressure"]);
        // a kubelet gone quiet (Unknown) is not under pressure: the unreachable taint says enough
        let conditions = &mut n.status.as_mut().unwrap().conditions;
        for c in conditions.iter_mut() {
            c.status = "Unknown".into();
        }
        let keys: Vec<String> = desired_taints(&n, now).into_iter().map(|t| t.key).collect();
        assert_eq!(keys, [TAINT_UNREACHABLE]);
    }

    #[test]
    fn a_pod_that_does_not_tolerate_a_taint_goes_at_once() {
        let now = t("2024-05-01T12:00:00Z");
        let taints = [taint("dedicated", "2024-05-01T12:00:00Z")];
        assert_eq!(eviction(&pod(vec![]), &taints, now, 300), Eviction::Now);
        // NoSchedule taints are not the taint manager's business.
        let mut soft = taint("dedicated", "");
        soft.effect = "NoSchedule".into();
        assert_eq!(eviction(&pod(vec![]), &[soft], now, 300), Eviction::Keep);
        assert_eq!(eviction(&pod(vec![]), &[], now, 300), Eviction::Keep);
    }

    #[test]
    fn pods_without_a_toleration_get_the_default_seconds_from_the_taint_time() {
        let taints = [taint(TAINT_UNREACHABLE, "2024-05-01T12:00:00Z")];
        let p = pod(vec![]);
        assert_eq!(
            eviction(&p, &taints, t("2024-05-01T12:04:59Z"), 300),
            Eviction::At(t("2024-05-01T12:05:00Z"))
        );
        assert_eq!(
            eviction(&p, &taints, t("2024-05-01T12:05:00Z"), 300),
            Eviction::Now
        );
    }

    #[test]
    fn the_pods_own_toleration_seconds_win_and_no_limit_means_stay() {
        let taints = [taint(TAINT_UNREACHABLE, "2024-05-01T12:00:00Z")];
        let now = t("2024-05-01T12:00:01Z");
        let short = pod(vec![toleration(TAINT_UNREACHABLE, Some(2))]);
        assert_eq!(
            eviction(&short, &taints, now, 300),
            Eviction::At(t("2024-05-01T12:00:02Z"))
        );
        let forever = pod(vec![toleration(TAINT_UNREACHABLE, None)]);
        assert_eq!(eviction(&forever, &taints, now, 300), Eviction::Keep);
        // An empty key with Exists tolerates everything (and so no default).
        let everything = pod(vec![toleration("", None)]);
        assert_eq!(
            eviction(&everything, &[taint("x", ""), taint(TAINT_NOT_READY, "")], now, 0),
            Eviction::Keep
        );
        let zero = pod(vec![toleration(TAINT_UNREACHABLE, Some(0))]);
        assert_eq!(eviction(&zero, &taints, now, 300), Eviction::Now);
    }

    #[test]
    fn the_earliest_deadline_over_several_taints_decides() {
        let taints = [
            taint(TAINT_UNREACHABLE, "2024-05-01T12:00:00Z"),
            taint("maintenance", "2024-05-01T12:00:10Z"),
        ];
        let p = pod(vec![toleration("maintenance", Some(5))]);
        assert_eq!(
            eviction(&p, &taints, t("2024-05-01T12:00:11Z"), 300),
            Eviction::At(t("2024-05-01T12:00:15Z"))
        );
    }

    #[test]
    fn toleration_matching_follows_kubernetes() {
        let tn = Taint {
            key: "k".into(),
            value: "v".into(),
            effect: "NoExecute".into(),
            time_added: String::new(),
        };
        let eq = |key: &str, value: &str, effect: &str| Toleration {
            key: key.into(),
            operator: "Equal".into(),
            value: value.into(),
            effect: effect.into(),
            toleration_seconds: None,
        };
        assert!(tolerates(&eq("k", "v", "NoExecute"), &tn));
        assert!(tolerates(&eq("k", "v", ""), &tn), "empty effect matches all");
        assert!(!tolerates(&eq("k", "w", "NoExecute"), &tn));
        assert!(!tolerates(&eq("k", "v", "NoSchedule"), &tn));
        assert!(!tolerates(&eq("j", "v", "NoExecute"), &tn));
    }
}
