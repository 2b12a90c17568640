//! The DaemonSet controller: one pod of each DaemonSet on every node it belongs on, as
//! Kubernetes' DaemonSet controller keeps them.
//!
//! * **Which nodes.** Those whose labels match the template's `nodeSelector` and required
//!   node affinity, and whose NoSchedule and NoExecute taints the pods tolerate, with the
//!   tolerations Kubernetes gives every daemon pod (not-ready and unreachable nodes, memory,
//!   disk and PID pressure, cordoned nodes), so agents keep running where user pods would
//!   not. A pod already running stays until an untolerated NoExecute taint or a label change
//!   says it must go. Nodes that join later get their pod; pods of nodes that are gone, or
//!   that stopped matching, are deleted; a failed pod is replaced.
//! * **Binding.** Unlike Kubernetes (which sets a node affinity and lets the scheduler bind),
//!   rkube's daemon pods name their node in `spec.nodeName`: the scheduler could only ever
//!   pick that node, and binding directly saves a round trip and keeps agents off the
//!   scheduler's resource accounting, which is what daemon pods need.
//! * **Updates.** Pods carry the template's hash (`controller-revision-hash`). RollingUpdate
//!   replaces old pods with at most `maxUnavailable` nodes lacking an available pod at a
//!   time, or, with `maxSurge`, starts the new pod beside the old one and deletes the old
//!   once the new is available. OnDelete replaces a pod only when someone deletes it.
//!   Each template is kept as a ControllerRevision (see `history`), which `rollout history`
//!   and `rollout undo` read.
//! * **Status**: desired, current, misscheduled, ready, updated, available and unavailable
//!   counts, and `observedGeneration`, so `rkubectl rollout status` can follow a rollout.

use super::deployment::pod_template_hash;
use super::expectations::{Expectations, Readiness};
use super::history;
use super::workload::{
    self, availability, controller_ref, controller_reference, is_deleting, write_status, PodControl,
    NAMESPACE_INDEX,
};
use super::Error;
use crate::{Context, Shutdown};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use rkube_api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use rkube_api::core::v1::{Node, Pod, PodTemplateSpec, Toleration};
use rkube_api::meta::v1::ObjectMeta;
use rkube_api::placement::{node_matches, tolerates};
use rkube_api::Resource;
use rkube_client::{Action, Api, Controller, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "daemonset";

/// The label holding the hash of the template a pod was made from.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// Kubernetes' older label with the DaemonSet's generation at the pod's creation.
const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

struct State {
    ctx: Arc<Context>,
    daemonsets: Store<DaemonSet>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    expectations: Arc<Expectations>,
}

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
    async move {
        let ds_informer = ctx.informers.get::<DaemonSet>();
        let pod_informer = ctx.informers.get::<Pod>();
        let node_informer = ctx.informers.get::<Node>();
        let revision_informer = ctx.informers.get::<ControllerRevision>();
        let daemonsets = ds_informer.store();
        let pods = pod_informer.store();
        pods.add_index(NAMESPACE_INDEX, workload::namespace_index::<Pod>);
        let revisions = revision_informer.store();
        revisions.add_index(NAMESPACE_INDEX, workload::namespace_index::<ControllerRevision>);
        let expectations = Arc::new(Expectations::default());
        let pod_mapper = {
            let expectations = expectations.clone();
            move |pod: &Pod| {
                let owners = rkube_client::runtime::controller_owner_keys::<DaemonSet, Pod>(pod);
                for key in &owners {
                    expectations.observed_create(key, pod.name());
                }
                owners
            }
        };
        // A node that joins, leaves or changes its labels, taints or schedulability concerns
        // every DaemonSet; its heartbeats (status only) concern none.
        let node_mapper = {
            let daemonsets = daemonsets.clone();
            move |old: Option<&Node>, new: Option<&Node>| {
                if placement_unchanged(old, new) {
                    return Vec::new();
                }
                daemonsets.list().iter().map(|ds| ds.key()).collect::<Vec<_>>()
            }
        };
        let workers = ctx.config.workers;
        let state = Arc::new(State {
            ctx,
            daemonsets,
            pods,
            nodes: node_informer.store(),
            revisions,
            expectations,
        });
        Controller::new(NAME, state, reconcile)
            .primary(&ds_informer)
            .watches(&pod_informer, pod_mapper)
            .watches_changes(&node_informer, node_mapper)
            .watches(
                &revision_informer,
                rkube_client::runtime::controller_owner_keys::<DaemonSet, ControllerRevision>,
            )
            .workers(workers)
            .resync(Duration::from_secs(300))
            .run(shutdown.wait())
            .await;
        Ok(())
    }
    .boxed()
}

/// The tolerations Kubernetes adds to every daemon pod (`hostNetwork` pods also tolerate
/// a node whose network is not ready yet: they are often what makes it ready).
pub fn default_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: key.into(),
        operator: "Exists".into(),
        effect: effect.into(),
        ..Default::default()
    };
    let mut out = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    out
}

/// The template the DaemonSet's pods are made from: its own, with the default tolerations
/// added (once).
fn pod_template(ds: &DaemonSet) -> PodTemplateSpec {
    let mut template = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let spec = template.spec.get_or_insert_with(Default::default);
    for t in default_tolerations(spec.host_network) {
        if !spec.tolerations.contains(&t) {
            spec.tolerations.push(t);
        }
    }
    template
}

/// Whether a Node change leaves every DaemonSet's placement as it was: the node existed
/// before and after with the same labels, taints and schedulability (what [`placement`]
/// reads). A heartbeat changes only the status.
fn placement_unchanged(old: Option<&Node>, new: Option<&Node>) -> bool {
    let (Some(old), Some(new)) = (old, new) else {
        return false;
    };
    let spec = |n: &Node| {
        let s = n.spec.clone().unwrap_or_default();
        (s.taints, s.unschedulable)
    };
    old.metadata().labels == new.metadata().labels && spec(old) == spec(new)
}

/// Whether the DaemonSet's pods belong on `node`: (may start there, may keep running there).
pub fn placement(template: &PodTemplateSpec, node: &Node) -> (bool, bool) {
    let spec = template.spec.clone().unwrap_or_default();
    let labels = node
        .metadata
        .as_ref()
        .map(|m| m.labels.clone())
        .unwrap_or_default();
    if !node_matches(&spec, node.name(), &labels) {
        return (false, false);
    }
    let taints = node
        .spec
        .as_ref()
        .map(|s| s.taints.as_slice())
        .unwrap_or_default();
    let untolerated = |effect: &str| {
        taints
            .iter()
            .any(|taint| taint.effect == effect && !spec.tolerations.iter().any(|t| tolerates(t, taint)))
    };
    let keep = !untolerated("NoExecute");
    (keep && !untolerated("NoSchedule"), keep)
}

/// What the DaemonSet must do now.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes to start a pod on.
    pub create: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<String>,
    pub status: DaemonSetStatus,
    /// When a pod turns available (min ready seconds), to look again.
    pub requeue: Option<Duration>,
}

/// The plan for `ds` with `template` (its hash `hash`) given every node and the pods it
/// owns.
pub fn plan(
    ds: &DaemonSet,
    template: &PodTemplateSpec,
    hash: &str,
    nodes: &[Arc<Node>],
    owned: &[Arc<Pod>],
    now: DateTime<Utc>,
) -> Plan {
    let spec = ds.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds;
    let mut plan = Plan::default();
    let mut by_node: BTreeMap<&str, Vec<&Arc<Pod>>> = BTreeMap::new();
    for pod in owned {
        let node = pod.spec.as_ref().map(|s| s.node_name.as_str()).unwrap_or("");
        by_node.entry(node).or_default().push(pod);
    }
    let updated = |p: &Pod| p.metadata().labels.get(REVISION_HASH_LABEL).map(String::as_str) == Some(hash);
    let phase = |p: &Pod| p.status.as_ref().map(|s| s.phase.clone()).unwrap_or_default();
    let available = |p: &Pod| availability(p, min_ready, now);

    // Per node: the pods that count, and the nodes whose pod must be replaced on update.
    let mut status = DaemonSetStatus {
        observed_generation: ds.metadata().generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        ..Default::default()
    };
    let node_names: BTreeSet<&str> = nodes.iter().map(|n| n.name()).collect();
    // (node, its old active pod, whether that pod is available) for the rolling update.
    let mut old_on: Vec<(String, Arc<Pod>, bool)> = Vec::new();
    let mut unavailable_nodes = 0i32;
    let mut surging = 0i32;
    for node in nodes {
        let (start, keep) = placement(template, node);
        let pods = by_node.remove(node.name()).unwrap_or_default();
        let mut active: Vec<&Arc<Pod>> = Vec::new();
        for pod in pods {
            if is_deleting(pod.metadata()) {
                continue;
            }
            match phase(pod).as_str() {
                // A failed daemon pod is replaced; one that succeeded too (daemons do not end).
                "Failed" | "Succeeded" => plan.delete.push(pod.name().to_string()),
                _ => active.push(pod),
            }
        }
        if !keep || (!start && active.is_empty()) {
            if !active.is_empty() {
                status.number_misscheduled += 1;
            }
            plan.delete.extend(active.iter().map(|p| p.name().to_string()));
            continue;
        }
        status.desired_number_scheduled += 1;
        if active.is_empty() {
            unavailable_nodes += 1;
            status.number_unavailable += 1;
            if start {
                plan.create.push(node.name().to_string());
            }
            continue;
        }
        status.current_number_scheduled += 1;
        // The newest updated pod stays, else the oldest pod; extras go.
        active.sort_by_key(|p| (!updated(p), p.metadata().creation_timestamp.clone()));
        let (first, extra) = active.split_at(1);
        let new_pod = first.first().filter(|p| updated(p)).copied();
        let old_pods: Vec<&Arc<Pod>> = active.iter().filter(|p| !updated(p)).copied().collect();
        for p in extra {
            // With a surge the old pod may stay beside the new one until the new is available.
            if new_pod.is_none() || updated(p) {
                plan.delete.push(p.name().to_string());
            }
        }
        let shown = new_pod.unwrap_or(first[0]);
        if workload::is_ready(shown) {
            status.number_ready += 1;
        }
        let (is_available, after) = available(shown);
        if is_available {
            status.number_available += 1;
        } else {
            status.number_unavailable += 1;
            unavailable_nodes += 1;
            if let Some(a) = after {
                plan.requeue = Some(plan.requeue.map_or(a, |r| r.min(a)));
            }
        }
        match (new_pod, old_pods.first()) {
            (Some(new_pod), Some(old)) => {
                status.updated_number_scheduled += 1;
                // The old pod goes once the new one is available; until then the node
                // takes one of the surge's places.
                if available(new_pod).0 {
                    plan.delete.push(old.name().to_string());
                } else {
                    surging += 1;
                }
            }
            (Some(_), None) => status.updated_number_scheduled += 1,
            (None, Some(old)) => old_on.push((node.name().to_string(), (*old).clone(), available(old).0)),
            (None, None) => {}
        }
    }
    // Pods on nodes that are gone.
    for (node, pods) in by_node {
        if node.is_empty() || !node_names.contains(node) {
            plan.delete.extend(
                pods.iter()
                    .filter(|p| !is_deleting(p.metadata()))
                    .map(|p| p.name().to_string()),
            );
        }
    }

    // Rolling update of the nodes still on an old pod.
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if strategy.r#type != "OnDelete" && !old_on.is_empty() {
        let ru = strategy.rolling_update.clone().unwrap_or_default();
        let desired = status.desired_number_scheduled.max(1);
        let scaled = |v: Option<&rkube_api::intstr::IntOrString>, round_up: bool| {
            v.and_then(|v| v.scaled_value(desired, round_up).ok())
                .unwrap_or(0)
                .max(0)
        };
        let max_surge = scaled(ru.max_surge.as_ref(), true);
        let max_unavailable = if max_surge == 0 {
            scaled(ru.max_unavailable.as_ref(), true).max(1)
        } else {
            scaled(ru.max_unavailable.as_ref(), true)
        };
        if max_surge > 0 {
            let mut room = (max_surge - surging).max(0);
            for (node, old, old_available) in &old_on {
                // An old pod that is not available anyway is replaced at once.
                if !old_available {
                    plan.delete.push(old.name().to_string());
                } else if room > 0 {
                    plan.create.push(node.clone());
                    room -= 1;
                }
            }
        } else {
            let mut room = (max_unavailable - unavailable_nodes).max(0);
            for (_, old, old_available) in &old_on {
                if !old_available {
                    plan.delete.push(old.name().to_string());
                } else if room > 0 {
                    plan.delete.push(old.name().to_string());
                    room -= 1;
                }
            }
        }
    }
    plan.delete.sort();
    plan.delete.dedup();
    plan.status = status;
    plan
}

/// A pod of `ds` for `node`, from `template` (hash `hash`).
pub fn pod_for(ds: &DaemonSet, template: &PodTemplateSpec, hash: &str, node: &str) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    let mut labels = tm.labels;
    labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    labels.insert(
        TEMPLATE_GENERATION_LABEL.into(),
        ds.metadata().generation.to_string(),
    );
    let mut prefix = format!("{}-", ds.name());
    prefix.truncate(58);
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.node_name = node.into();
    Pod {
        metadata: Some(ObjectMeta {
            generate_name: prefix,
            namespace: ds.namespace().into(),
            labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: vec![controller_reference(ds)],
            ..Default::default()
        }),
        spec: Some(spec),
        ..Default::default()
    }
}

async fn reconcile(key: String, state: Arc<State>) -> Result<Action, Error> {
    let Some(ds) = state.daemonsets.get(&key) else {
        state.expectations.forget(&key);
        return Ok(Action::await_change());
    };
    let ns = ds.namespace().to_string();
    let uid = ds.metadata().uid.clone();
    let owned: Vec<Arc<Pod>> = state
        .pods
        .by_index(NAMESPACE_INDEX, &ns)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| controller_ref(p.metadata()).is_some_and(|r| r.uid == uid))
        .collect();
    let pods_cache = state.pods.clone();
    let readiness = state.expectations.check(
        &key,
        |name| pods_cache.get_namespaced(&ns, name).is_some(),
        |pod_uid| {
            !owned
                .iter()
                .any(|p| p.metadata().uid == pod_uid && !is_deleting(p.metadata()))
        },
    );
    if let Readiness::Waiting(after) = readiness {
        return Ok(Action::requeue(after));
    }
    let template = pod_template(&ds);
    let hash = pod_template_hash(&template, ds.status.as_ref().and_then(|s| s.collision_count));
    // The revision keeps the DaemonSet's own template (what `rollout undo` puts back),
    // named by the hash of the pods' template (with the default tolerations).
    let spec = ds.spec.clone().unwrap_or_default();
    let own = spec.template.unwrap_or_default();
    let limit = spec.revision_history_limit;
    history::sync(
        &state.ctx.client,
        &state.revisions,
        &*ds,
        &own,
        &hash,
        &owned,
        limit,
    )
    .await?;
    let nodes = state.nodes.list();
    let now = Utc::now();
    let plan = plan(&ds, &template, &hash, &nodes, &owned, now);
    let control = PodControl {
        api: Api::namespaced(state.ctx.client.clone(), &ns),
        recorder: &state.ctx.recorder,
        owner: &*ds,
    };
    if !is_deleting(ds.metadata()) {
        let victims: Vec<&Arc<Pod>> = plan
            .delete
            .iter()
            .filter_map(|n| owned.iter().find(|p| p.name() == n))
            .collect();
        state
            .expectations
            .expect_deletes(&key, victims.iter().map(|p| p.metadata().uid.clone()));
        for pod in victims {
            control.delete(pod, |name| format!("Deleted pod: {name}")).await?;
        }
        for node in &plan.create {
            let pod = pod_for(&ds, &template, &hash, node);
            if let Some(created) = control
                .create(&pod, |name| format!("Created pod: {name}"))
                .await?
            {
                state
                    .expectations
                    .expect_creates(&key, [created.name().to_string()]);
            }
        }
    }
    let api = Api::<DaemonSet>::namespaced(state.ctx.client.clone(), &ns);
    write_status(&api, &ds, |d| d.status = Some(plan.status)).await?;
    Ok(plan.requeue.map_or(Action::await_change(), Action::requeue))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_api::core::v1::{NodeSpec, PodCondition, PodStatus, Taint};
    use rkube_api::defaults::Defaulting as _;

    fn ds(extra: &str) -> DaemonSet {
        let yaml = format!(
            "metadata: {{name: agent, namespace: default, uid: ds-uid, generation: 1}}\nspec:\n  selector: {{matchLabels: {{app: agent}}}}\n{extra}  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec:\n      nodeSelector: {{role: worker}}\n      containers: [{{name: a, image: busybox}}]\n"
        );
        let mut d: DaemonSet = serde_yaml::from_str(&yaml).unwrap();
        d.apply_defaults();
        d
    }

    fn node(name: &str, worker: bool, taint: Option<(&str, &str)>) -> Arc<Node> {
        let mut n = Node::default();
        n.metadata_mut().name = name.into();
        if worker {
            n.metadata_mut().labels.insert("role".into(), "worker".into());
        }
        n.spec = Some(NodeSpec {
            taints: taint
                .map(|(key, effect)| {
                    vec![Taint {
                        key: key.into(),
                        effect: effect.into(),
                        ..Default::default()
                    }]
                })
                .unwrap_or_default(),
            ..Default::default()
        });
        Arc::new(n)
    }

    #[test]
    fn heartbeats_concern_no_daemon_set_but_labels_taints_and_membership_do() {
        let n = node("n1", true, None);
        let mut beat = (*n).clone();
        beat.status
            .get_or_insert_with(Default::default)
            .conditions
            .push(Default::default());
        assert!(placement_unchanged(Some(&n), Some(&beat)));
        assert!(!placement_unchanged(None, Some(&n)), "a node that joins");
        assert!(!placement_unchanged(Some(&n), None), "a node that leaves");
        assert!(
            !placement_unchanged(Some(&n), Some(&node("n1", false, None))),
            "labels"
        );
        let tainted = node("n1", true, Some(("maintenance", "NoExecute")));
        assert!(!placement_unchanged(Some(&n), Some(&tainted)), "taints");
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool) -> Arc<Pod> {
        let mut p = Pod::default();
        let m = p.metadata_mut();
        m.name = name.into();
        m.uid = format!("uid-{name}");
        m.labels.insert(REVISION_HASH_LABEL.into(), hash.into());
        m.creation_timestamp = "2026-12-06T12:00:00Z".into();
        p.spec = Some(rkube_api::core::v1::PodSpec {
            node_name: node.into(),
            ..Default::default()
        });
        p.status = Some(PodStatus {
            phase: "Running".into(),
            conditions: if ready {
                vec![PodCondition {
                    r#type: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]
            } else {
                vec![]
            },
            ..Default::default()
        });
        Arc::new(p)
    }

    fn run(d: &DaemonSet, nodes: &[Arc<Node>], pods: &[Arc<Pod>]) -> (Plan, String) {
        let template = pod_template(d);
        let hash = pod_template_hash(&template, None);
        (plan(d, &template, &hash, nodes, pods, Utc::now()), hash)
    }

    #[test]
    fn one_pod_per_matching_node_including_cordoned_ones() {
        let d = ds("");
        let nodes = [
            node("a", true, None),
            node("b", false, None),
            node(
                "c",
                true,
                Some(("node.kubernetes.io/unschedulable", "NoSchedule")),
            ),
            node("d", true, Some(("dedicated", "NoSchedule"))),
        ];
        let (p, _) = run(&d, &nodes, &[]);
        assert_eq!(p.create, vec!["a", "c"]);
        assert_eq!(p.status.desired_number_scheduled, 2);
    }

    #[test]
    fn pods_leave_nodes_that_stop_matching_or_are_gone() {
        let d = ds("");
        let (_, hash) = run(&d, &[], &[]);
        let nodes = [
            node("a", false, None),
            node("b", true, Some(("evict", "NoExecute"))),
        ];
        let pods = [
            pod("p1", "a", &hash, true),
            pod("p2", "b", &hash, true),
            pod("p3", "gone", &hash, true),
        ];
        let (p, _) = run(&d, &nodes, &pods);
        assert_eq!(p.delete, vec!["p1", "p2", "p3"]);
        assert_eq!(p.status.number_misscheduled, 2);
        // A NoSchedule taint added later does not evict a running pod.
        let nodes = [node("a", true, Some(("dedicated", "NoSchedule")))];
        let (p, _) = run(&d, &nodes, &[pod("p1", "a", &hash, true)]);
        assert!(p.delete.is_empty() && p.create.is_empty(), "{p:?}");
        assert_eq!(p.status.number_available, 1);
    }

    #[test]
    fn a_rolling_update_replaces_max_unavailable_nodes_at_a_time() {
        let d = ds("");
        let nodes = [
            node("a", true, None),
            node("b", true, None),
            node("c", true, None),
        ];
        let pods = [
            pod("p1", "a", "old", true),
            pod("p2", "b", "old", true),
            pod("p3", "c", "old", true),
        ];
        let (p, _) = run(&d, &nodes, &pods);
        assert_eq!(p.delete.len(), 1, "maxUnavailable 1: {p:?}");
        assert_eq!(p.status.updated_number_scheduled, 0);
        // While one node has no available pod, nothing more goes.
        let (_, hash) = run(&d, &[], &[]);
        let pods = [
            pod("n1", "a", &hash, false),
            pod("p2", "b", "old", true),
            pod("p3", "c", "old", true),
        ];
        let (p, _) = run(&d, &nodes, &pods);
        assert!(p.delete.is_empty(), "{p:?}");
        assert_eq!(p.status.updated_number_scheduled, 1);
    }

    #[test]
    fn with_a_surge_the_new_pod_starts_before_the_old_one_goes() {
        let d =
            ds("  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}\n");
        let nodes = [node("a", true, None), node("b", true, None)];
        let pods = [pod("p1", "a", "old", true), pod("p2", "b", "old", true)];
        let (p, hash) = run(&d, &nodes, &pods);
        assert_eq!((p.create.len(), p.delete.len()), (1, 0), "{p:?}");
        let pods = [
            pod("p1", "a", "old", true),
            pod("n1", "a", &hash, true),
            pod("p2", "b", "old", true),
        ];
        let (p, _) = run(&d, &nodes, &pods);
        assert_eq!(p.delete, vec!["p1"]);
        assert_eq!(p.create, vec!["b"]);
    }

    #[test]
    fn on_delete_leaves_old_pods_alone() {
        let d = ds("  updateStrategy: {type: OnDelete}\n");
        let nodes = [node("a", true, None)];
        let (p, _) = run(&d, &nodes, &[pod("p1", "a", "old", true)]);
        assert!(p.delete.is_empty() && p.create.is_empty());
    }
}
