//! Tests of the Deployment controller's decisions.

use super::*;
use rkube_api::apps::v1::{
    DeploymentSpec, DeploymentStrategy, ReplicaSetCondition, ReplicaSetStatus, RollingUpdateDeployment,
};
use rkube_api::core::v1::{Container, PodSpec};
use rkube_api::intstr::IntOrString;
use rkube_api::meta::v1::LabelSelector;

fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: image.into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
    let mut d = Deployment {
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: Some(LabelSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            template: Some(template("nginx:2")),
            strategy: Some(DeploymentStrategy {
                r#type: "RollingUpdate".into(),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(surge),
                    max_unavailable: Some(unavailable),
                }),
            }),
            revision_history_limit: Some(10),
            progress_deadline_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let m = d.metadata_mut();
    m.name = "web".into();
    m.namespace = "ns".into();
    m.uid = "d-uid".into();
    m.generation = 1;
    d
}

fn rs(name: &str, image: &str, rev: i64, replicas: i32, available: i32, created: &str) -> Arc<ReplicaSet> {
    let d = deployment(0, IntOrString::int(1), IntOrString::int(0));
    let mut r = ReplicaSet {
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            template: Some(template(image)),
            ..Default::default()
        }),
        status: Some(ReplicaSetStatus {
            replicas,
            ready_replicas: available,
            available_replicas: available,
            ..Default::default()
        }),
        ..Default::default()
    };
    let m = r.metadata_mut();
    m.name = name.into();
    m.namespace = "ns".into();
    m.uid = format!("uid-{name}");
    m.creation_timestamp = created.into();
    m.annotations.insert(REVISION.into(), rev.to_string());
    m.owner_references.push(controller_reference(&d));
    Arc::new(r)
}

#[test]
fn hash_is_stable_and_follows_the_template() {
    let a = pod_template_hash(&template("nginx:1"), None);
    assert_eq!(a, pod_template_hash(&template("nginx:1"), None));
    assert_ne!(a, pod_template_hash(&template("nginx:2"), None));
    assert_ne!(
        a,
        pod_template_hash(&template("nginx:1"), Some(1)),
        "collisions move the name"
    );
    assert!(a.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{a}");
    // Pinned: a changed hash renames every ReplicaSet of every cluster
    // on upgrade and restarts all their pods.
    assert_eq!(safe_encode("1234567890"), "56789bcdf4");
    assert_eq!(fnv32a(b"hello"), 0x4f9f_2cab);
}

#[test]
fn surge_rounds_up_unavailable_down_and_both_zero_is_impossible() {
    let d = deployment(10, IntOrString::string("25%"), IntOrString::string("25%"));
    assert_eq!(fenceposts(&d), Ok((3, 2)));
    let d = deployment(3, IntOrString::int(0), IntOrString::int(0));
    assert_eq!(fenceposts(&d), Ok((0, 1)));
    let d = deployment(1, IntOrString::string("10%"), IntOrString::string("10%"));
    assert_eq!(fenceposts(&d), Ok((1, 0)));
}

#[test]
fn new_replicas_grow_within_the_surge() {
    let d = deployment(4, IntOrString::int(1), IntOrString::int(1));
    let old = rs("web-old", "nginx:1", 1, 4, 4, "2024-01-01T00:00:00Z");
    let new = rs("web-new", "nginx:2", 2, 0, 0, "2024-01-02T00:00:00Z");
    let all = vec![old.clone(), new.clone()];
    assert_eq!(
        new_rs_replicas(&d, &all, Some(&new)),
        1,
        "4 + 1 surge allows one more"
    );
    let new1 = rs("web-new", "nginx:2", 2, 1, 0, "2024-01-02T00:00:00Z");
    assert_eq!(
        new_rs_replicas(&d, &[old, new1.clone()], Some(&new1)),
        1,
        "at the surge limit"
    );
}

#[test]
fn old_replicas_shrink_only_as_availability_allows() {
    let d = deployment(4, IntOrString::int(1), IntOrString::int(1));
    let old = rs("web-old", "nginx:1", 1, 4, 4, "2024-01-01T00:00:00Z");
    let new = rs("web-new", "nginx:2", 2, 1, 0, "2024-01-02T00:00:00Z");
    // 5 pods, 4 available, min 3 available, 1 new unavailable: 1 may go.
    assert_eq!(
        scale_down_old(&d, std::slice::from_ref(&old), Some(&new)),
        [("web-old".to_string(), 3)]
    );
    // Unavailable old replicas go first and cost nothing.
    let sick = rs("web-old", "nginx:1", 1, 4, 2, "2024-01-01T00:00:00Z");
    let new_ok = rs("web-new", "nginx:2", 2, 1, 1, "2024-01-02T00:00:00Z");
    assert_eq!(
        scale_down_old(&d, &[sick], Some(&new_ok)),
        [("web-old".to_string(), 2)]
    );
    // Nothing may go while the minimum is not met.
    let weak = rs("web-old", "nginx:1", 1, 3, 3, "2024-01-01T00:00:00Z");
    let new_pending = rs("web-new", "nginx:2", 2, 2, 0, "2024-01-02T00:00:00Z");
    assert!(scale_down_old(&d, &[weak], Some(&new_pending)).is_empty());
}

#[test]
fn the_new_replicaset_is_found_by_template_and_rollback_reuses_it() {
    let d = deployment(3, IntOrString::int(1), IntOrString::int(0));
    let mut v1 = (*rs("web-aaa", "nginx:1", 1, 0, 0, "2024-01-01T00:00:00Z")).clone();
    v1.spec
        .as_mut()
        .unwrap()
        .template
        .as_mut()
        .unwrap()
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .insert(HASH_LABEL.into(), "aaa".into());
    let v2 = rs("web-bbb", "nginx:2", 2, 3, 3, "2024-01-02T00:00:00Z");
    let all = vec![Arc::new(v1), v2.clone()];
    assert_eq!(
        find_new_rs(&d, &all).map(|r| r.name().to_string()).as_deref(),
        Some("web-bbb")
    );
    let mut back = d.clone();
    back.spec.as_mut().unwrap().template = Some(template("nginx:1"));
    assert_eq!(
        find_new_rs(&back, &all).map(|r| r.name().to_string()).as_deref(),
        Some("web-aaa")
    );

    let created = new_replicaset(&d, 1, 3);
    let hash = created
        .spec
        .as_ref()
        .unwrap()
        .selector
        .as_ref()
        .unwrap()
        .match_labels[HASH_LABEL]
        .clone();
    assert_eq!(created.name(), format!("web-{hash}"));
    assert_eq!(created.metadata().annotations[REVISION], "3");
    assert_eq!(created.metadata().labels[HASH_LABEL], hash);
}

#[test]
fn history_beyond_the_limit_goes_oldest_first() {
    let mut d = deployment(3, IntOrString::int(1), IntOrString::int(0));
    d.spec.as_mut().unwrap().revision_history_limit = Some(1);
    let old = vec![
        rs("r2", "nginx:b", 2, 0, 0, "2024-01-02T00:00:00Z"),
        rs("r1", "nginx:a", 1, 0, 0, "2024-01-01T00:00:00Z"),
        rs("r3", "nginx:c", 3, 1, 1, "2024-01-03T00:00:00Z"),
    ];
    let names: Vec<String> = history_to_delete(&d, &old)
        .iter()
        .map(|r| r.name().to_string())
        .collect();
    assert_eq!(names, ["r1"], "r3 still runs, r2 is within the limit");
}

#[test]
fn proportional_scaling_splits_by_size() {
    let mut d = deployment(20, IntOrString::int(3), IntOrString::int(0));
    let mut old = (*rs("old", "nginx:1", 1, 8, 8, "2024-01-01T00:00:00Z")).clone();
    old.metadata_mut()
        .annotations
        .insert(MAX_REPLICAS.into(), "13".into());
    let mut new = (*rs("new", "nginx:2", 2, 5, 0, "2024-01-02T00:00:00Z")).clone();
    new.metadata_mut()
        .annotations
        .insert(MAX_REPLICAS.into(), "13".into());
    d.status = Some(DeploymentStatus {
        replicas: 13,
        ..Default::default()
    });
    let mut sizes = proportional_sizes(&d, Some(&Arc::new(new)), &[Arc::new(old)]);
    sizes.sort();
    // 10 → 20 replicas (+3 surge = 23 allowed): 8/13 and 5/13 of 23.
    assert_eq!(sizes, [("new".to_string(), 9), ("old".to_string(), 14)]);
}

#[test]
fn a_replica_set_that_cannot_create_pods_shows_replica_failure_on_the_deployment() {
    let d = deployment(3, IntOrString::int(1), IntOrString::int(0));
    let mut failing = (*rs("web-new", "nginx:2", 2, 3, 1, "2024-01-02T00:00:00Z")).clone();
    failing
        .status
        .as_mut()
        .unwrap()
        .conditions
        .push(ReplicaSetCondition {
            r#type: "ReplicaFailure".into(),
            status: "True".into(),
            reason: "FailedCreate".into(),
            message: "pods \"web-\" is forbidden: exceeded quota".into(),
            ..Default::default()
        });
    let failing = Arc::new(failing);
    let s = calculate_status(
        &d,
        std::slice::from_ref(&failing),
        Some(&failing),
        "2024-01-03T00:00:00Z",
    );
    let c = s
        .conditions
        .iter()
        .find(|c| c.r#type == "ReplicaFailure")
        .expect("ReplicaFailure");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "FailedCreate"));
    assert!(c.message.contains("exceeded quota"));

    let healed = rs("web-new", "nginx:2", 2, 3, 3, "2024-01-02T00:00:00Z");
    let mut d2 = d.clone();
    d2.status = Some(s);
    let s = calculate_status(
        &d2,
        std::slice::from_ref(&healed),
        Some(&healed),
        "2024-01-03T00:01:00Z",
    );
    assert!(
        !s.conditions.iter().any(|c| c.r#type == "ReplicaFailure"),
        "gone once pods are created"
    );
}

#[test]
fn conditions_follow_kubernetes() {
    let d = deployment(3, IntOrString::int(1), IntOrString::int(0));
    let new = rs("web-new", "nginx:2", 2, 3, 3, "2024-01-02T00:00:00Z");
    let now = workload::parse_time("2024-01-03T00:00:00Z").unwrap();
    let (s, requeue) = rollout_status(&d, std::slice::from_ref(&new), Some(&new), now);
    let c: Vec<(&str, &str, &str)> = s
        .conditions
        .iter()
        .map(|c| (c.r#type.as_str(), c.status.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        c,
        [
            ("Available", "True", "MinimumReplicasAvailable"),
            ("Progressing", "True", "NewReplicaSetAvailable")
        ]
    );
    assert_eq!(
        (
            s.replicas,
            s.updated_replicas,
            s.available_replicas,
            s.unavailable_replicas
        ),
        (3, 3, 3, 0)
    );
    assert_eq!(requeue, None);

    // Stuck: no progress since the last update, past the deadline.
    let mut stuck = d.clone();
    let pending = rs("web-new", "nginx:2", 2, 3, 0, "2024-01-02T00:00:00Z");
    let (mut st, _) = rollout_status(&stuck, std::slice::from_ref(&pending), Some(&pending), now);
    st.conditions
        .iter_mut()
        .for_each(|c| c.last_update_time = "2024-01-02T23:00:00Z".into());
    st.conditions.retain(|c| c.r#type != "Progressing");
    st.conditions.push(condition(
        "Progressing",
        "True",
        "ReplicaSetUpdated",
        "x".into(),
        "2024-01-02T23:00:00Z",
    ));
    stuck.status = Some(st);
    let (s, _) = rollout_status(&stuck, std::slice::from_ref(&pending), Some(&pending), now);
    let p = get_condition(&s, "Progressing").unwrap();
    assert_eq!(
        (p.status.as_str(), p.reason.as_str()),
        ("False", "ProgressDeadlineExceeded")
    );
    assert_eq!(p.message, "ReplicaSet \"web-new\" has timed out progressing.");
    let a = get_condition(&s, "Available").unwrap();
    assert_eq!(
        (a.status.as_str(), a.reason.as_str()),
        ("False", "MinimumReplicasUnavailable")
    );
}
