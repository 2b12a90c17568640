//! Builders for unit tests.

use crate::cache::Cache;
use crate::plugins::{Cycle, FilterPlugin, ScorePlugin};
use crate::pod_info::PodInfo;
use rkube_api::core::v1::{
    Container, ContainerPort, Node, NodeCondition, NodeStatus, Pod, PodSpec, ResourceRequirements, Taint,
    Toleration, TopologySpreadConstraint,
};
use rkube_api::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use rkube_api::quantity::Quantity;
use std::collections::BTreeMap;
use std::sync::Arc;

pub fn node(name: &str, cpu: &str, memory: &str) -> Node {
    let allocatable = BTreeMap::from([
        ("cpu".to_string(), Quantity::new(cpu)),
        ("memory".to_string(), Quantity::new(memory)),
        ("pods".to_string(), Quantity::new("110")),
    ]);
    Node {
        metadata: Some(ObjectMeta {
            name: name.into(),
            uid: format!("uid-{name}"),
            ..Default::default()
        }),
        spec: Some(Default::default()),
        status: Some(NodeStatus {
            capacity: allocatable.clone(),
            allocatable,
            conditions: vec![NodeCondition {
                r#type: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn labelled(mut n: Node, labels: &[(&str, &str)]) -> Node {
    let m = n.metadata.get_or_insert_with(Default::default);
    for (k, v) in labels {
        m.labels.insert(k.to_string(), v.to_string());
    }
    n
}

pub fn pod(name: &str, cpu: &str, memory: &str) -> Pod {
    let requests = BTreeMap::from([
        ("cpu".to_string(), Quantity::new(cpu)),
        ("memory".to_string(), Quantity::new(memory)),
    ]);
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "busybox".into(),
                resources: Some(ResourceRequirements {
                    requests,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            scheduler_name: "default-scheduler".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn with_host_port(mut p: Pod, port: i32, ip: &str) -> Pod {
    p.spec.as_mut().unwrap().containers[0].ports.push(ContainerPort {
        container_port: port,
        host_port: port,
        host_ip: ip.into(),
        ..Default::default()
    });
    p
}

pub fn with_ephemeral(mut p: Pod, q: &str) -> Pod {
    let c = &mut p.spec.as_mut().unwrap().containers[0];
    c.resources
        .get_or_insert_with(Default::default)
        .requests
        .insert("ephemeral-storage".into(), Quantity::new(q));
    p
}

pub fn with_spread(mut p: Pod, key: &str, max_skew: i32, when: &str) -> Pod {
    let labels = p.metadata.as_ref().unwrap().labels.clone();
    p.spec
        .as_mut()
        .unwrap()
        .topology_spread_constraints
        .push(TopologySpreadConstraint {
            max_skew,
            topology_key: key.into(),
            when_unsatisfiable: when.into(),
            label_selector: Some(LabelSelector {
                match_labels: labels,
                ..Default::default()
            }),
            ..Default::default()
        });
    p
}

pub fn owned(mut p: Pod, owner_uid: &str) -> Pod {
    p.metadata
        .as_mut()
        .unwrap()
        .owner_references
        .push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "rs".into(),
            uid: owner_uid.into(),
            controller: Some(true),
            ..Default::default()
        });
    p
}

pub fn taint(key: &str, value: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        value: value.into(),
        effect: effect.into(),
        ..Default::default()
    }
}

pub fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
    Toleration {
        key: key.into(),
        operator: op.into(),
        value: value.into(),
        effect: effect.into(),
        ..Default::default()
    }
}

/// Runs one filter for `p` on `n` alone.
pub fn check_filter(f: &dyn FilterPlugin, p: &Pod, n: &Node) -> Result<(), Vec<String>> {
    let mut cache = Cache::default();
    cache.set_node(Arc::new(n.clone()));
    let info = PodInfo::new(p).unwrap();
    let cycle = Cycle::new(&info, &cache);
    f.filter(&info, &cache.nodes()[0], &cycle)
        .map_err(|u| u.0.into_iter().map(|r| r.into_owned()).collect())
}

/// One score plugin's normalized scores for `p` over `nodes`, in order.
pub fn score_nodes(s: &dyn ScorePlugin, p: &Pod, nodes: &[Node]) -> Vec<i64> {
    let mut cache = Cache::default();
    for n in nodes {
        cache.set_node(Arc::new(n.clone()));
    }
    let info = PodInfo::new(p).unwrap();
    let cycle = Cycle::new(&info, &cache);
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|n| {
            s.score(
                &info,
                cache.node(&n.metadata.as_ref().unwrap().name).unwrap(),
                &cycle,
            )
        })
        .collect();
    s.normalize(&mut scores);
    scores
}
